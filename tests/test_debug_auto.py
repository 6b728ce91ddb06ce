"""tflq auto: the budget search, its table, calibrate-once, and its error paths."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from tests.cli_helpers import error_line, invoke
from tests.sample_paths import SAMPLES
from tests.tflite_helpers import run_tflite
from tflq.convert.session import ConvertOptions
from tflq.debug.auto import AutoOptions, NoCandidateFits, auto_search
from tflq.debug.scoring import points
from tflq.errors import EXIT_GATE, EXIT_USAGE, UsageError

TRAIN = str(SAMPLES / "digits_train.npz")
TEST = str(SAMPLES / "digits_test.npz")


def top1(path: Path, data: dict[str, np.ndarray]) -> float:
    logits = next(iter(run_tflite(path, {"image": data["x"]}).values()))
    return float(np.mean(logits.argmax(axis=1) == data["y"]) * 100.0)


def test_auto_size_objective_writes_the_smallest_candidate_that_fits(fragile_models, digits_test, tmp_path):
    options = AutoOptions(engines=("converter",), max_drop=2.0, data=TEST, convert=ConvertOptions(calibration=TRAIN), output_dir=tmp_path)
    result = auto_search(fragile_models["fragile"], options)

    labels = [trial.candidate.label for trial in result.trials]
    assert labels[:2] == ["int8", "int8+float(logits)"]  # the masked logit ranks first
    assert labels[-3:] == ["16x8", "dynamic", "float16"]
    chosen = result.trials[labels.index("dynamic")]  # dynamic range keeps float activations: no crushed logits
    assert result.chosen is chosen and chosen.status == "fits" and chosen.drop <= 2.0
    assert chosen.reason == f"drop {chosen.drop:.2f} <= 2 points; the smallest that fits"
    others = [trial for trial in result.trials if trial is not chosen]
    assert all(trial.size_bytes > chosen.size_bytes and trial.status == "not tried" for trial in others)
    assert result.calibrations == 1  # every int8 candidate and 16x8 quantized from one calibrated model
    assert result.path == tmp_path / "fragile.auto.tflite" and result.path.exists()
    assert chosen.size_bytes == result.path.stat().st_size
    # the written model, measured independently, is within budget
    assert result.float32_score * 100.0 - top1(result.path, digits_test) <= 2.0
    assert points(result.float32_score, chosen.score) == pytest.approx(chosen.drop)
    assert chosen.score * 100.0 == pytest.approx(top1(result.path, digits_test), abs=1e-9)  # the written model's top-1
    assert json.loads(json.dumps(result.to_dict()))["chosen"] == "dynamic"


def test_auto_latency_objective_times_every_fitting_candidate_and_keeps_the_fastest(fragile_models, tmp_path):
    options = AutoOptions(
        engines=("converter",), max_drop=2.0, objective="latency", data=TEST, eval_samples=120, max_float_layers=1,
        convert=ConvertOptions(calibration=TRAIN, calibration_samples=100), output_dir=tmp_path, name="fast",
    )
    result = auto_search(fragile_models["fragile"], options)
    fitting = [trial for trial in result.trials if trial.status == "fits"]
    assert len(fitting) >= 2 and all(trial.latency_ms is not None and trial.latency_ms > 0 for trial in fitting)
    assert all(trial.latency_ms is None for trial in result.trials if trial.status != "fits")
    assert result.chosen.latency_ms == min(trial.latency_ms for trial in fitting)
    assert all(
        "slower than" in trial.reason for trial in fitting if trial is not result.chosen and trial.latency_ms > result.chosen.latency_ms
    )
    assert not any(trial.status == "not tried" for trial in result.trials)
    assert (tmp_path / "fast.auto.tflite").exists()


def test_auto_cli_prints_the_table_and_the_chosen_file(fragile_models, tmp_path):
    result = invoke(
        "auto", "--engines", "converter", fragile_models["fragile"], "--calib", TRAIN, "--data", TEST, "--max-drop", "2", "-o", tmp_path,
        "--max-float-layers", "1",
    )
    assert result.exit_code == 0, result.output
    assert "budget: drop <= 2 points; objective: size" in result.output
    for fragment in ("int8 ", "drop ", "<= 2 points; the smallest that fits", "int8+float(logits)", "chosen", "not tried",
                     "not scored: larger than dynamic (", f"chosen: dynamic -> {tmp_path / 'fragile.auto.tflite'}"):
        assert fragment in result.output, fragment
    assert "more compressed" not in result.output


def test_auto_nothing_fits_exits_3_with_the_table_and_the_best_found(fragile_models, tmp_path):
    stale = tmp_path / "hopeless.auto.tflite"
    stale.write_bytes(b"from an earlier run")
    result = invoke(
        "auto", "--engines", "converter", fragile_models["hopeless"], "--calib", TRAIN, "--data", TEST, "--max-drop", "2", "-o", tmp_path,
        "--max-float-layers", "1", "--calib-samples", "100", "--eval-samples", "180",
    )
    assert result.exit_code == EXIT_GATE, result.output
    message = error_line(result)
    assert message.startswith("Error: no candidate stays within --max-drop 2 points of float32 (top-1 accuracy")
    assert "the best was " in message and "Nothing written" in message
    for candidate in ("int8", "int8+float(", "16x8", "dynamic", "float16"):
        assert candidate in result.output
    assert "not tried" not in result.output and "chosen" not in result.output
    assert not stale.exists()

    with pytest.raises(NoCandidateFits) as raised:
        auto_search(
            fragile_models["hopeless"],
            AutoOptions(engines=("converter",), max_drop=2.0, data=TEST, eval_samples=180, max_float_layers=1,
                        convert=ConvertOptions(calibration=TRAIN, calibration_samples=100), output_dir=tmp_path),
        )
    found = raised.value.result
    assert raised.value.exit_code == EXIT_GATE
    assert found.chosen is None and found.path is None
    assert found.best is not None and found.best.drop == min(t.drop for t in found.trials if t.drop is not None)
    assert all(trial.status in ("rejected", "error") for trial in found.trials)


def test_auto_without_eval_data_is_a_usage_error(tmp_path):
    result = invoke("auto", "--engines", "converter", SAMPLES / "digits_cnn.keras", "--calib", TRAIN, "--max-drop", "1", "-o", tmp_path)
    assert result.exit_code == EXIT_USAGE, result.output
    assert "tflq auto needs evaluation data to measure the accuracy drop: pass --data EVAL" in error_line(result)
    assert not any(tmp_path.iterdir())


@pytest.mark.parametrize(
    "args, fragment",
    [
        (["--max-drop", "-1"], "Invalid value for '--max-drop': -1.0 is not in the range 0<=x<=100"),
        (["--max-drop", "nan"], "--max-drop must be a number of accuracy points >= 0, got nan"),
        (["--max-drop", "1", "--objective", "speed"], "Invalid value for '--objective'"),
    ],
    ids=["negative", "nan", "objective"],
)
def test_auto_bad_options_are_usage_errors(args, fragment, tmp_path):
    result = invoke("auto", "--engines", "converter", SAMPLES / "digits_cnn.keras", "--calib", TRAIN, "--data", TEST, "-o", tmp_path, *args)
    assert result.exit_code == EXIT_USAGE, result.output
    assert fragment in result.output


def test_auto_options_validate_when_built():
    with pytest.raises(UsageError, match="--objective 'speed': expected one of size, latency"):
        AutoOptions(max_drop=1.0, objective="speed", data=TEST)
    with pytest.raises(UsageError, match="needs evaluation data"):
        AutoOptions(max_drop=1.0)
