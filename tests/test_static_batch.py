"""``--static-batch N`` (ModelOptions.static_batch, YAML ``static_batch``): the export has a fixed batch of N, every
mode converts from it, calibration and evaluation feed batches the model takes, and the tables show XNNPACK's
partition count, which a dynamic batch raises on some graphs.

Real TensorFlow and LiteRT on the classifier fixture (8x8x1 CNN: Conv2D, DepthwiseConv2D, Flatten, Dense).
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from tests.cli_helpers import assert_config_error, assert_usage_error, convert, invoke
from tests.fixtures.tflite import CLASSIFIER_SAMPLES, ClassifierFiles
from tests.tflite_helpers import run_tflite
from tflq.model.data import batched_samples
from tflq.modes import MODES

BATCH = 3
# one mode of each build the export feeds: the baseline, the converter's calibrated int8, a LiteRT Quantizer mode
STATIC_MODES = [
    next(name for name, mode in MODES.items() if mode.baseline),
    next(name for name, mode in MODES.items() if mode.calibrated and mode.engine == "converter"),
    next(name for name, mode in MODES.items() if mode.calibrated and mode.engine != "converter"),
]


@pytest.fixture(scope="module")
def static_conversion(classifier: ClassifierFiles, tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict]:
    """The classifier with a static batch of 3, converted and then measured on its data (``convert --eval``)."""
    out = tmp_path_factory.mktemp("static")
    modes = [arg for mode in STATIC_MODES for arg in ("--mode", mode)]
    result = convert(
        str(classifier.keras), "--static-batch", str(BATCH), *modes, "--calib", str(classifier.data),
        "--calib-samples", "7", "--eval", str(classifier.data), "--json", out=out,
    )
    assert result.exit_code == 0, result.output
    return {row["mode"]: row for row in json.loads(result.stdout)}


def test_batched_samples_stack_to_the_static_batch_and_cycle_the_last() -> None:
    samples = [{"x": np.full((1, 2), index, np.float32)} for index in range(7)]
    batches = batched_samples(samples, 3)
    assert [batch["x"].shape for batch in batches] == [(3, 2)] * 3
    assert batches[2]["x"][:, 0].tolist() == [6.0, 0.0, 1.0]  # the last batch is completed with the first samples
    assert batched_samples(samples, 1) is samples and batched_samples(samples, None) is samples


@pytest.mark.slow
def test_every_variant_has_the_static_batch_and_is_measured(static_conversion: dict[str, dict]) -> None:
    from ai_edge_litert.interpreter import Interpreter

    for mode, row in static_conversion.items():
        assert row["status"] == "ok", row
        details = Interpreter(model_path=row["path"]).get_input_details()
        assert [list(detail["shape_signature"]) for detail in details] == [[BATCH, 8, 8, 1]], mode
        measured = row["eval"]
        assert measured and not measured.get("error"), measured
        assert measured["samples"] == CLASSIFIER_SAMPLES  # 16 chunks of 3, every sample scored
        assert measured["xnnpack"]["partitions"] >= 1


@pytest.mark.slow
def test_the_static_float32_computes_what_the_dynamic_one_does(
    static_conversion: dict[str, dict], classifier: ClassifierFiles
) -> None:
    from ai_edge_litert.interpreter import Interpreter

    path = static_conversion[STATIC_MODES[0]]["path"]
    runner = Interpreter(model_path=path).get_signature_runner()
    (static,) = runner(image=classifier.x[:BATCH]).values()
    (dynamic,) = run_tflite(classifier.float32, {"image": classifier.x[:BATCH]}).values()
    # same weights and graph: measured max difference 0 to 1e-6; 1e-4 leaves room for other kernels
    assert np.max(np.abs(static - dynamic)) < 1e-4


@pytest.mark.slow
def test_a_static_batch_takes_fewer_xnnpack_partitions(static_conversion: dict[str, dict], classifier: ClassifierFiles):
    """Measured here: the dynamic-batch classifier has 3 of 7 ops in 2 partitions (Flatten computes the batch at run
    time: SHAPE, STRIDED_SLICE, PACK and RESHAPE stay on the built-in kernels and split the graph); the static one
    has 1 partition. Asserted: static at most dynamic, and 1 (a file and delegate property, not a timing)."""
    result = invoke("eval", classifier.float32, static_conversion[STATIC_MODES[0]]["path"], "--runs", "1",
                    "--min-seconds", "0", "--json")
    assert result.exit_code == 0, result.output
    dynamic, static = (row["xnnpack"]["partitions"] for row in json.loads(result.stdout))
    assert static <= dynamic and static == 1, (static, dynamic)
    table = invoke("eval", static_conversion[STATIC_MODES[0]]["path"], "--runs", "1", "--min-seconds", "0")
    assert table.exit_code == 0 and "Partitions" in table.output, table.output


def test_static_batch_is_refused_for_a_savedmodel(tmp_path: Path) -> None:
    folder = tmp_path / "exported"
    folder.mkdir()
    (folder / "saved_model.pb").write_bytes(b"not read: the flag is refused first")
    assert_usage_error(convert(str(folder), "--static-batch", "1", out=tmp_path / "out"), "--static-batch",
                       "SavedModel")


def test_static_batch_must_be_positive(classifier: ClassifierFiles, tmp_path: Path) -> None:
    result = convert(str(classifier.keras), "--static-batch", "0", out=tmp_path / "out")
    assert result.exit_code == 2 and "--static-batch" in result.output, result.output


def test_static_batch_is_a_model_entry_key(classifier: ClassifierFiles, tmp_path: Path) -> None:
    from tflq.batch.config import load_config

    good = tmp_path / "good.yaml"
    good.write_text(
        f"models:\n  - name: net\n    path: {classifier.keras}\n    modes: [float32]\n    static_batch: 4\n"
    )
    (job,) = load_config(good).models
    assert job.convert.model.static_batch == 4
    bad = tmp_path / "bad.yaml"
    bad.write_text(f"models:\n  - name: net\n    path: {classifier.keras}\n    static_batch: 0\n")
    assert_config_error(bad, ":4:", "static_batch", "positive")
    tflite = tmp_path / "tflite.yaml"
    tflite.write_text(
        f"models:\n  - name: net\n    path: {classifier.float32}\n    modes: [float32]\n    static_batch: 1\n"
    )
    assert_config_error(tflite, ":5:", "static_batch", ".tflite")


def test_static_batch_is_refused_for_a_training_mode(classifier: ClassifierFiles, tmp_path: Path) -> None:
    training = [name for name, mode in MODES.items() if mode.needs_training]
    args = [arg for name in training for arg in ("--mode", name)]
    result = convert(
        str(classifier.keras), *args, "--train-data", str(classifier.data), "--static-batch", "2", out=tmp_path / "out"
    )
    assert_usage_error(result, "--static-batch", *training, "dynamic batch")


def test_static_batch_with_auto_is_refused_at_load(classifier: ClassifierFiles, tmp_path: Path) -> None:
    config = tmp_path / "auto.yaml"
    config.write_text(
        f"models:\n  - name: net\n    path: {classifier.keras}\n    modes: [float32]\n    static_batch: 2\n"
        "    auto: {max_drop: 1}\n"
    )
    assert_config_error(config, ":5:", "auto:", "static_batch")
