"""A float32 ``.tflite`` as MODEL (tflq/convert/source.py): every mode that starts from a float .tflite converts, loads
and runs on it; the converter's modes, quantized, corrupt and multi-signature files are refused with one line; the
data layer matches data to the file's signature (or its subgraph inputs without a SignatureDef); tflq run takes it.

The files are made here with plain TensorFlow (``TFLiteConverter.from_keras_model`` in the ``classifier`` fixture,
its SignatureDef stripped for the file without one). Real TensorFlow, LiteRT and LiteRT Quantizer, no mocks.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from tests.cli_helpers import assert_config_error, assert_nothing_written, assert_usage_error, convert, invoke
from tests.fixtures.tflite import ClassifierFiles
from tests.sample_paths import SAMPLES
from tests.tflite_helpers import run_tflite, strip_signatures
from tflq.convert.source import takes_tflite
from tflq.modes import MODES

TFLITE_MODES = [name for name, mode in MODES.items() if takes_tflite(mode)]
CONVERTER_MODES = [name for name in MODES if name not in TFLITE_MODES]
CALIBRATED = [name for name in TFLITE_MODES if MODES[name].calibrated]
UNCALIBRATED = [name for name in TFLITE_MODES if not MODES[name].calibrated and "recipe" not in MODES[name].settings]


def _chooses_engine(name: str) -> bool:
    return len(MODES[name].engines) > 1


def _mode_args(modes: list[str]) -> list[str]:
    """``--mode`` for each of ``modes``, and ``--engine litert-quantizer`` when one of them is the converter's by
    default (a .tflite source needs the other engine for them)."""
    engine = ["--engine", "litert-quantizer"] if any(_chooses_engine(name) for name in modes) else []
    return [arg for mode in modes for arg in ("--mode", mode)] + engine


def _rows(result) -> dict[str, dict]:
    assert result.exit_code == 0, result.output
    return {row["mode"]: row for row in json.loads(result.stdout)}


def _recipe(folder: Path) -> Path:
    """A user's recipe: dynamic int8 weights for every op (no calibration)."""
    from tflq._tf import litert_quantizer as _lq

    path = folder / "recipe.json"
    path.write_text(json.dumps(_lq.named_recipe("dynamic", 8)))
    return path


@pytest.fixture(scope="module")
def source_conversion(classifier: ClassifierFiles, tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict]:
    """Every mode that takes a .tflite, on the classifier's float32 .tflite, through ``tflq convert --json``."""
    out = tmp_path_factory.mktemp("from-tflite")
    args = [*_mode_args(TFLITE_MODES), "--calib", str(classifier.data), "--calib-samples", "16"]
    if any("recipe" in MODES[name].settings for name in TFLITE_MODES):
        args += ["--recipe", str(_recipe(out))]
    return _rows(convert(str(classifier.float32), *args, "--json", out=out / "build"))


def test_the_registry_gives_a_tflite_source_the_baseline_and_the_litert_quantizer_modes() -> None:
    assert "float32" in TFLITE_MODES and CONVERTER_MODES  # both kinds exist, whatever their names
    assert all(MODES[name].baseline or set(MODES[name].engines) - {"converter"} for name in TFLITE_MODES)
    assert all(MODES[name].engines == ("converter",) for name in CONVERTER_MODES)


def test_a_mode_of_both_engines_on_a_tflite_needs_the_quantizer_engine_asked_for(
    classifier: ClassifierFiles, tmp_path: Path
):
    both = [name for name in TFLITE_MODES if _chooses_engine(name)]
    assert both, "no mode is made by both engines"
    result = convert(str(classifier.float32), "--mode", both[0], out=tmp_path / "out")
    assert_usage_error(result, str(classifier.float32), both[0], "--engine litert-quantizer")


@pytest.mark.slow
def test_every_tflite_mode_converts_loads_and_runs(source_conversion: dict[str, dict], classifier: ClassifierFiles):
    assert set(source_conversion) == set(TFLITE_MODES)
    (reference,) = run_tflite(classifier.float32, {"image": classifier.x[:8]}).values()
    for mode, row in source_conversion.items():
        assert row["status"] == "ok", row
        path = Path(row["path"])
        assert path.name == f"classifier.float32.{mode}.tflite"  # the default name is the file's stem
        (scores,) = run_tflite(path, {"image": classifier.x[:8]}).values()
        assert scores.shape == reference.shape and np.isfinite(scores).all()
        # Measured: the 4-bit variants agree with float32 on 7-8 of these 8 samples, int8 weights on 8; a broken
        # quantization (chance is 1 in 10) agrees on about one. The bar is 5 of 8.
        agree = int(np.sum(scores.argmax(axis=1) == reference.argmax(axis=1)))
        assert agree >= 5, (mode, agree)


@pytest.mark.slow
def test_the_float32_variant_is_the_file_itself(source_conversion: dict[str, dict], classifier: ClassifierFiles):
    baseline = next(name for name, mode in MODES.items() if mode.baseline)
    assert Path(source_conversion[baseline]["path"]).read_bytes() == classifier.float32.read_bytes()


def test_converter_modes_are_refused_with_the_modes_that_work(classifier: ClassifierFiles, tmp_path: Path):
    out = tmp_path / "out"
    on_converter = [name for name in TFLITE_MODES if _chooses_engine(name)][:2]  # their default engine
    result = convert(str(classifier.float32), *[arg for name in on_converter for arg in ("--mode", name)], out=out)
    assert_usage_error(result, str(classifier.float32), *on_converter, "converter", *TFLITE_MODES)
    assert_nothing_written(out)


@pytest.mark.slow
def test_a_file_without_signaturedef_converts_by_its_subgraph_inputs(
    classifier: ClassifierFiles, source_conversion: dict[str, dict], tmp_path: Path
):
    """Every mode, calibrated ones too (LiteRT Quantizer calibrates through a signature tflq adds and removes): the
    outputs have no SignatureDef either, take the input by its tensor name, and compute what the same modes give
    on the file with its signature (same calibration data: measured difference 0)."""
    from ai_edge_litert.interpreter import Interpreter

    bare = strip_signatures(classifier.float32, tmp_path / "bare.tflite")
    modes = ["float32", *UNCALIBRATED, *CALIBRATED]
    result = convert(
        str(bare), *_mode_args(modes), "--calib", str(classifier.data), "--calib-samples", "16", "--json",
        out=tmp_path / "out",
    )
    rows = _rows(result)
    assert all(row["status"] == "ok" for row in rows.values()), rows
    for mode, row in rows.items():
        interpreter = Interpreter(model_path=row["path"])
        assert interpreter.get_signature_list() == {}, mode
        interpreter.allocate_tensors()
        (detail,) = interpreter.get_input_details()
        assert detail["name"] == Interpreter(model_path=str(bare)).get_input_details()[0]["name"]
        interpreter.set_tensor(detail["index"], classifier.x[:1])
        interpreter.invoke()
        (output,) = interpreter.get_output_details()
        bare_scores = interpreter.get_tensor(output["index"])
        (signed_scores,) = run_tflite(Path(source_conversion[mode]["path"]), {"image": classifier.x[:1]}).values()
        assert np.max(np.abs(bare_scores - signed_scores)) < 1e-5, mode


def test_calibration_data_is_matched_to_the_signature(classifier: ClassifierFiles, tmp_path: Path):
    wrong = tmp_path / "wrong.npz"
    np.savez(wrong, x=np.zeros((4, 6, 6, 1), np.float32))
    result = convert(str(classifier.float32), *_mode_args(CALIBRATED), "--calib", str(wrong), out=tmp_path / "out")
    assert_usage_error(result, str(wrong), "image", "(8, 8, 1)", "(6, 6, 1)")


@pytest.mark.parametrize("variant", ["int8", "dynamic", "int8_io"])
def test_an_already_quantized_file_is_refused(classifier: ClassifierFiles, tmp_path: Path, variant: str):
    quantized = getattr(classifier, variant)
    out = tmp_path / "out"
    result = convert(str(quantized), *_mode_args(UNCALIBRATED), out=out)
    assert_usage_error(result, str(quantized), "already int8-quantized", "quantized tensors", "float32 .tflite")
    assert_nothing_written(out)


def test_corrupt_and_unloadable_files_are_refused(classifier: ClassifierFiles, tmp_path: Path):
    truncated = tmp_path / "truncated.tflite"
    truncated.write_bytes(classifier.float32.read_bytes()[:2000])
    assert_usage_error(convert(str(truncated), out=tmp_path / "a"), str(truncated), "corrupt or truncated")
    empty = tmp_path / "empty.tflite"
    empty.write_bytes(b"")
    assert_usage_error(convert(str(empty), out=tmp_path / "b"), str(empty), "empty file")
    custom = strip_signatures(classifier.float32, tmp_path / "custom.tflite", unknown_custom_op=True)
    assert_usage_error(convert(str(custom), out=tmp_path / "c"), str(custom), "LiteRT interpreter cannot load it")
    for folder in ("a", "b", "c"):
        assert_nothing_written(tmp_path / folder)


def test_a_file_with_several_signatures_is_refused(tmp_path: Path):
    import tensorflow as tf

    class TwoWays(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([None, 4], tf.float32)])
        def double(self, x):
            return {"y": x * 2.0}

        @tf.function(input_signature=[tf.TensorSpec([None, 4], tf.float32)])
        def halve(self, x):
            return {"y": x * 0.5}

    module = TwoWays()
    converter = tf.lite.TFLiteConverter.from_concrete_functions(
        [module.double.get_concrete_function(), module.halve.get_concrete_function()], module
    )
    path = tmp_path / "two.tflite"
    path.write_bytes(converter.convert())
    result = convert(str(path), out=tmp_path / "out")
    assert_usage_error(result, str(path), "2 signatures", "one signature")


def test_an_output_never_overwrites_the_model(classifier: ClassifierFiles, tmp_path: Path):
    source = tmp_path / "net.float32.tflite"
    source.write_bytes(classifier.float32.read_bytes())
    result = convert(str(source), "--name", "net", out=tmp_path)
    assert_usage_error(result, str(source), "overwrite the model itself")
    assert source.read_bytes() == classifier.float32.read_bytes()


def test_loading_options_for_keras_models_are_refused(classifier: ClassifierFiles, tmp_path: Path):
    assert_usage_error(
        convert(str(classifier.float32), "--signature", "serving_default", out=tmp_path / "a"), "--signature", ".tflite"
    )
    assert_usage_error(
        convert(str(classifier.float32), "--static-batch", "1", out=tmp_path / "b"), "--static-batch", ".tflite"
    )


def test_debug_and_auto_refuse_the_converter_for_a_tflite_model_with_one_line(classifier: ClassifierFiles):
    data = str(classifier.data)
    assert_usage_error(invoke("debug", classifier.float32, "--calib", data), "tflq debug", "converter")
    assert_usage_error(
        invoke("auto", classifier.float32, "--calib", data, "--data", data, "--max-drop", "1"), "tflq auto", "converter"
    )


def test_debug_ranks_a_tflite_model_for_a_litert_quantizer_mode(classifier: ClassifierFiles):
    data = str(classifier.data)
    result = invoke("debug", classifier.float32, "--mode", "int4-weights", "--calib", data, "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["mode"] == "int4-weights"
    assert report["ops"], "no op ranked"
    assert {op["op"] for op in report["ops"]} <= {"CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED"}


def test_auto_searches_a_tflite_model_on_the_litert_quantizer_engine(classifier: ClassifierFiles, tmp_path: Path):
    data = str(classifier.data)
    result = invoke(
        "auto", classifier.float32, "--engines", "litert-quantizer", "--calib", data, "--data", data,
        "--max-drop", "100", "--max-float-layers", "0", "-o", str(tmp_path), "--json",
    )
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    tried = {trial["candidate"]: trial for trial in report["trials"]}
    assert report["chosen"] in tried, report
    assert MODES[tried[report["chosen"]]["mode"]].engine == "litert-quantizer", tried[report["chosen"]]
    assert not any(MODES[trial["mode"]].engine == "converter" for trial in tried.values() if trial["mode"] != "float32")
    assert run_tflite(Path(report["path"]).read_bytes(), {"image": np.load(data)["x"][:2]})


def _batch_file(folder: Path, classifier: ClassifierFiles, modes: list[str] | None) -> Path:
    lines = [
        f"output_dir: {folder / 'run'}",
        "models:",
        "  - name: net",
        f"    path: {classifier.float32}",
    ]
    if modes is not None:
        lines.append(f"    modes: [{', '.join(modes)}]")
        if any(_chooses_engine(name) for name in modes):
            lines.append("    engine: litert-quantizer")
    lines += [
        f"    calibration: {{data: {classifier.data}, samples: 16}}",
        f"    evaluation: {{data: {classifier.data}}}",
    ]
    path = folder / "batch.yaml"
    path.write_text("\n".join(lines) + "\n")
    return path


def test_a_batch_entry_with_converter_modes_is_refused_at_load(classifier: ClassifierFiles, tmp_path: Path):
    defaults = [name for name, mode in MODES.items() if mode.in_all_modes and not mode.baseline]
    assert_config_error(_batch_file(tmp_path, classifier, None), ":3:", "net", *defaults, *TFLITE_MODES)


@pytest.mark.slow
def test_tflq_run_takes_a_tflite_model(classifier: ClassifierFiles, tmp_path: Path):
    modes = ["float32", *UNCALIBRATED[:1], *CALIBRATED[:1]]
    result = invoke("run", _batch_file(tmp_path, classifier, modes), "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    rows = {row["variant"]: row for row in report["rows"]} if isinstance(report, dict) else {
        row["variant"]: row for row in report
    }
    assert set(rows) == set(modes), rows
    assert all(row["status"] == "ok" for row in rows.values()), rows
    markdown = (tmp_path / "run" / "report.md").read_text()
    assert "Partitions" in markdown


def test_a_batch_entry_with_auto_on_the_converter_is_refused_at_load(classifier: ClassifierFiles, tmp_path: Path):
    config = _batch_file(tmp_path, classifier, ["float32"])
    config.write_text(config.read_text() + "    auto: {max_drop: 1}\n")
    assert_config_error(config, ":8:", "net", "auto:", ".tflite", "litert-quantizer")
    config.write_text(config.read_text().replace("max_drop: 1}", "max_drop: 1, engines: [converter]}"))
    assert_config_error(config, ":8:", "net", "auto:", ".tflite")


@pytest.mark.slow
def test_a_batch_entry_searches_a_tflite_model_on_the_litert_quantizer_engine(
    classifier: ClassifierFiles, tmp_path: Path
):
    config = _batch_file(tmp_path, classifier, ["float32"])
    config.write_text(
        config.read_text() + "    auto: {max_drop: 100, engines: [litert-quantizer], max_float_layers: 0}\n"
    )
    result = invoke("run", config, "--json")
    assert result.exit_code == 0, result.output
    winner = tmp_path / "run" / "net.auto.tflite"
    assert winner.is_file()
    assert run_tflite(winner.read_bytes(), {"image": np.load(classifier.data)["x"][:2]})


@pytest.mark.slow
def test_the_sample_cnn_through_its_float32_tflite_gives_the_same_variants(tmp_path: Path):
    """The digits CNN converted from its .keras file, and from the float32 .tflite that conversion wrote: every
    mode gives the same bytes (LiteRT Quantizer starts from the same float32 model, calibrated on the same samples),
    and the .tflite's variants are measured on the test digits."""
    modes = _mode_args([name for name in TFLITE_MODES if "recipe" not in MODES[name].settings])
    calib = ["--calib", str(SAMPLES / "digits_train.npz"), "--calib-samples", "50"]
    from_keras = _rows(convert(str(SAMPLES / "digits_cnn.keras"), *modes, *calib, "--json", out=tmp_path / "keras"))
    source = from_keras["float32"]["path"]
    result = convert(
        source, *modes, *calib, "--name", "digits", "--eval", str(SAMPLES / "digits_test.npz"), "--json",
        out=tmp_path / "tflite",
    )
    from_tflite = _rows(result)
    assert set(from_tflite) == set(from_keras)
    for mode, row in from_tflite.items():
        assert row["status"] == "ok" and row["sha256"] == from_keras[mode]["sha256"], (mode, row)
        measured = row["eval"]
        assert measured is not None and not measured["error"], measured
        assert measured["samples"] > 0
    # measured: float32 98.61 % on the 360 test digits (tests/test_engine_litert_quantizer.py checks the others)
    assert from_tflite["float32"]["eval"]["accuracy"]["top1"] > 0.95
