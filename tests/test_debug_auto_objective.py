"""tflq auto: scoring without labels, and the choice by objective among every fitting candidate (issue 9)."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from tests.cli_helpers import invoke
from tests.sample_paths import SAMPLES
from tests.tflite_helpers import run_tflite

TRAIN = str(SAMPLES / "digits_train.npz")
TEST = str(SAMPLES / "digits_test.npz")
CNN = SAMPLES / "digits_cnn.keras"


@pytest.fixture(scope="module")
def unlabelled(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The digits test images without their labels."""
    path = tmp_path_factory.mktemp("unlabelled") / "images.npz"
    with np.load(TEST) as archive:
        np.savez(path, image=archive["x"])
    return path


def _argmax(path: Path | bytes, images: np.ndarray) -> np.ndarray:
    return next(iter(run_tflite(path, {"image": images}).values())).argmax(axis=1)


@pytest.mark.slow
def test_auto_without_labels_or_reference_compares_with_the_float32_conversion(unlabelled, tmp_path):
    result = invoke(
        "auto", "--engines", "converter", CNN, "--calib", TRAIN, "--calib-samples", "100", "--data", unlabelled, "--max-drop", "1",
        "--max-float-layers", "1", "-o", tmp_path, "--json",
    )
    assert result.exit_code == 0, result.output
    found = json.loads(result.stdout)
    assert found["metric"] == "top-1 agreement with the float32 model"
    assert found["float32"]["top1"] == 1.0 and found["samples"] == 360
    chosen = next(trial for trial in found["trials"] if trial["candidate"] == found["chosen"])
    assert chosen["status"] == "fits" and chosen["drop_points"] <= 1.0
    written = Path(found["path"])
    assert written == tmp_path / "digits_cnn.auto.tflite" and written.stat().st_size == chosen["size_bytes"]
    # the written model, checked independently against the model's own float32 conversion
    import tempfile

    from tflq.convert.session import ConvertOptions, ModelSession
    from tflq.modes import Variant

    with np.load(unlabelled) as archive:
        images = archive["image"]
    with tempfile.TemporaryDirectory() as folder:
        float32 = ModelSession(CNN, ConvertOptions(), Path(folder)).convert_variant(Variant("float32"))
    agreement = float(np.mean(_argmax(written, images) == _argmax(float32, images)))
    assert agreement == pytest.approx(chosen["top1"], abs=1e-4)
    assert (1.0 - agreement) * 100.0 <= 1.0


def _assert_every_reason_holds(found: dict) -> None:
    """Each verdict's words follow from the figures in the same result."""
    import re

    by_label = {trial["candidate"]: trial for trial in found["trials"]}
    for trial in found["trials"]:
        reason = trial["reason"]
        assert "more compressed" not in reason, reason
        if trial["drop_points"] is not None:
            relation = "<=" if trial["drop_points"] <= found["max_drop_points"] else ">"
            assert reason.startswith(f"drop {trial['drop_points']:.2f} {relation} {found['max_drop_points']:g} points"), reason
        for relation, other in re.findall(r"(larger than|the same size as|slower than|as fast as) (\S+) \(", reason):
            other_trial = by_label[other]
            if relation == "larger than":
                assert trial["size_bytes"] > other_trial["size_bytes"], (trial, other_trial)
            elif relation == "the same size as":
                assert trial["size_bytes"] == other_trial["size_bytes"], (trial, other_trial)
            elif relation == "slower than":
                assert trial["latency_ms"] > other_trial["latency_ms"], (trial, other_trial)
            else:
                assert trial["latency_ms"] == other_trial["latency_ms"], (trial, other_trial)


@pytest.mark.slow
def test_auto_size_objective_chooses_the_smallest_fitting_candidate_not_the_first(fragile_models, digits_test, tmp_path):
    """fragile: int8+float(logits) fits, but dynamic also fits and is smaller; the size objective must write dynamic."""
    result = invoke(
        "auto", "--engines", "converter", fragile_models["fragile"], "--calib", TRAIN, "--calib-samples", "100", "--data", TEST,
        "--max-drop", "2", "--max-float-layers", "1", "-o", tmp_path, "--json",
    )
    assert result.exit_code == 0, result.output
    found = json.loads(result.stdout)
    trials = {trial["candidate"]: trial for trial in found["trials"]}
    assert list(trials) == ["int8", "int8+float(logits)", "16x8", "dynamic", "float16"]
    assert all(trial["size_bytes"] is not None for trial in trials.values())  # every candidate's size is known
    chosen = trials[found["chosen"]]
    assert chosen["status"] == "fits" and chosen["size_bytes"] == min(t["size_bytes"] for t in trials.values())
    assert trials["dynamic"]["size_bytes"] < trials["int8+float(logits)"]["size_bytes"]
    assert found["chosen"] == "dynamic"
    for trial in trials.values():
        if trial["size_bytes"] < chosen["size_bytes"]:
            assert trial["status"] in ("rejected", "error"), trial  # nothing smaller fits
        elif trial is not chosen:
            assert trial["status"] == "not tried" and trial["reason"].startswith("not scored: "), trial
    _assert_every_reason_holds(found)
    written = Path(found["path"])
    assert written.stat().st_size == chosen["size_bytes"]
    accuracy = float(np.mean(_argmax(written, digits_test["x"]) == digits_test["y"]))
    assert (found["float32"]["top1"] - accuracy) * 100.0 <= 2.0


@pytest.mark.slow
def test_auto_latency_objective_claims_follow_from_the_timings(fragile_models, tmp_path):
    result = invoke(
        "auto", "--engines", "converter", fragile_models["fragile"], "--calib", TRAIN, "--calib-samples", "100", "--data", TEST,
        "--eval-samples", "120", "--max-drop", "2", "--max-float-layers", "0", "--objective", "latency",
        "-o", tmp_path, "--json",
    )
    assert result.exit_code == 0, result.output
    found = json.loads(result.stdout)
    fitting = [trial for trial in found["trials"] if trial["status"] == "fits"]
    assert len(fitting) >= 2
    chosen = next(trial for trial in fitting if trial["candidate"] == found["chosen"])
    assert chosen["latency_ms"] == min(trial["latency_ms"] for trial in fitting)
    assert chosen["reason"].endswith("; the fastest that fits")
    _assert_every_reason_holds(found)

