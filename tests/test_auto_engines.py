"""``tflq auto`` across engines: the LiteRT Quantizer modes, blockwise sizes and int4 with the most sensitive layers
at int8 are candidates; a candidate that fails is an error row; the table marks the Pareto front, checked here
against the measured numbers.

Real TensorFlow, LiteRT, LiteRT Quantizer on the digits CNN. Measured here (`--score-all`, 360 test images):
dynamic-int4 10,072 B 98.33 %, int4-weights+int8(logits) 10,608 B 98.61 %, dynamic-int4(block=32) 10,612 B
98.61 %; blocks of 64 and more fail (the last Dense layer has 32 inputs).
"""
from __future__ import annotations

import json

import pytest

from tests.cli_helpers import invoke
from tests.sample_paths import SAMPLES
from tflq.debug.pareto import front

CNN = str(SAMPLES / "digits_cnn.keras")
TRAIN = str(SAMPLES / "digits_train.npz")
TEST = str(SAMPLES / "digits_test.npz")


def _auto(tmp_path, *args: str) -> dict:
    result = invoke(
        "auto", CNN, "--calib", TRAIN, "--calib-samples", "30", "--data", TEST, "-o", str(tmp_path), "--json", *args
    )
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def _dominated(trial: dict, trials: list[dict], cost: str) -> bool:
    return any(
        other is not trial and other[cost] is not None and other["top1"] is not None
        and other["top1"] >= trial["top1"] and other[cost] <= trial[cost]
        and (other["top1"] > trial["top1"] or other[cost] < trial[cost])
        for other in trials
    )


def _check_front(trials: list[dict], cost: str, marker: str) -> None:
    measured = [trial for trial in trials if trial["top1"] is not None and trial[cost] is not None]
    assert measured
    for trial in trials:
        expected = trial in measured and not _dominated(trial, measured, cost)
        assert (marker in trial["pareto"]) == expected, (trial["candidate"], cost, trial)


@pytest.fixture(scope="module")
def engine_search(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """Both engines (the default), every candidate scored."""
    return _auto(tmp_path_factory.mktemp("auto"), "--max-float-layers", "1", "--max-drop", "1", "--score-all")


@pytest.mark.slow
def test_engine_candidates_are_tried_and_failures_are_rows(engine_search: dict) -> None:
    trials = {trial["candidate"]: trial for trial in engine_search["trials"]}
    expected = {"int8-weights", "int4-weights", "dynamic-int4", "int4x8", "dynamic-int4(block=32)",
                "dynamic-int4(block=64)", "dynamic-int4(block=128)", "dynamic-int4(block=256)"}
    assert expected <= set(trials), sorted(trials)
    engines = {name: trial["engine"] for name, trial in trials.items()}
    assert {"int8", "16x8", "dynamic", "float16"} <= set(trials) and engines["int8"] == "converter", engines
    assert all(engines[name] == "litert-quantizer" for name in expected), engines
    mixed = [name for name in trials if name.startswith("int4-weights+int8(")]
    assert len(mixed) == 1 and trials[mixed[0]]["int8_layers"], mixed
    for size in (64, 128, 256):  # the CNN's last Dense layer has 32 inputs: an error row, not dropped
        trial = trials[f"dynamic-int4(block={size})"]
        assert trial["status"] == "error" and f"block size {size}" in trial["reason"], trial
    assert trials["dynamic-int4(block=32)"]["block_size"] == 32 and trials["dynamic-int4(block=32)"]["size_bytes"]
    fitting = [trial for trial in engine_search["trials"] if trial["status"] in ("fits", "chosen")]
    chosen = trials[engine_search["chosen"]]
    assert chosen["size_bytes"] == min(trial["size_bytes"] for trial in fitting)  # across both engines


@pytest.mark.slow
def test_pareto_front_matches_the_measured_numbers(engine_search: dict) -> None:
    trials = engine_search["trials"]
    assert all(trial["top1"] is not None for trial in trials if trial["status"] != "error")  # --score-all
    _check_front(trials, "size_bytes", "size")
    assert engine_search["chosen"] in [t["candidate"] for t in trials if "size" in t["pareto"]]


@pytest.mark.slow
def test_latency_objective_marks_the_latency_front(tmp_path) -> None:
    search = _auto(tmp_path, "--engines", "litert-quantizer", "--max-float-layers", "0", "--max-drop", "1",
                   "--objective", "latency", "--eval-samples", "120")
    trials = search["trials"]
    timed = [trial for trial in trials if trial["latency_ms"] is not None]
    assert timed and search["chosen"] in [trial["candidate"] for trial in timed]
    _check_front(trials, "latency_ms", "latency")
    _check_front(trials, "size_bytes", "size")


def test_front_of_points() -> None:
    # (score, cost): higher score and lower cost are better; unmeasured points are never on the front
    points = [(0.9, 10.0), (0.95, 12.0), (0.9, 11.0), (0.95, 12.0), (None, 1.0), (0.99, None), (0.8, 9.0)]
    assert front(points) == {0, 1, 3, 6}


def test_unknown_engine_is_a_usage_error(tmp_path) -> None:
    result = invoke("auto", CNN, "--data", TEST, "--max-drop", "1", "--engines", "tpu", "-o", str(tmp_path))
    assert result.exit_code == 2 and "tpu" in result.output


def test_batch_auto_block_reads_engines_and_score_all(tmp_path) -> None:
    from tests.cli_helpers import assert_config_error
    from tflq.batch.config import load_config

    entry = f"models:\n  - name: cnn\n    path: {CNN}\n    calibration: {{data: {TRAIN}}}\n    evaluation: {{data: {TEST}}}\n"
    good = tmp_path / "good.yaml"
    good.write_text(entry + "    auto: {max_drop: 1, engines: [litert-quantizer], score_all: true}\n")
    (job,) = load_config(good).models
    assert job.auto["engines"] == ("litert-quantizer",) and job.auto["score_all"] is True
    bad = tmp_path / "bad.yaml"
    bad.write_text(entry + "    auto: {max_drop: 1, engines: [tpu]}\n")
    assert_config_error(bad, ":6:", "engines", "'tpu'")
