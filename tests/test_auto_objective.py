"""tflq auto: scoring without labels, and the choice by objective among every fitting candidate (issue 9)."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from tests.cli_helpers import error_line, invoke
from tests.conftest import SAMPLES, run_tflite

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
        "auto", CNN, "--calib", TRAIN, "--calib-samples", "100", "--data", unlabelled, "--max-drop", "1",
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

    from tflq.convert import ConvertOptions, ModelSession
    from tflq.modes import Variant

    with np.load(unlabelled) as archive:
        images = archive["image"]
    with tempfile.TemporaryDirectory() as folder:
        float32 = ModelSession(CNN, ConvertOptions(), Path(folder)).convert_variant(Variant("float32"))
    agreement = float(np.mean(_argmax(written, images) == _argmax(float32, images)))
    assert agreement == pytest.approx(chosen["top1"], abs=1e-4)
    assert (1.0 - agreement) * 100.0 <= 1.0
