"""Issue 9, QAT slice: labels QAT cannot train on are one clear line; QAT and the sample-model build are
reproducible; QAT's accuracy claims hold with margins meant for any CPU.

What the accuracy margins rest on (measured, see the README's "What is reproducible"): on the fragile model of
``tests/fragile_models.py`` PTQ int8 loses about 8 points and QAT gets most of them back; on the digits CNN, QAT int8
stays within 1 point of float32. Different seeds stand in for different CPUs: both change the training's floating
point rounding, and the margins below hold across the seeds tried.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tests.cli_helpers import assert_nothing_written, assert_usage_error, convert
from tests.sample_paths import SAMPLES
from tflq.errors import DataError
from tflq.qat.losses import LossSpec, check_labels

CNN = str(SAMPLES / "digits_cnn.keras")
TRAIN = SAMPLES / "digits_train.npz"
TEST = SAMPLES / "digits_test.npz"
CLASS_IDS = "integer class ids 0..9 (the model's output has 10 classes)"


# ------------------------------------------------------------------------------------------- labels


def _digits(count: int = 64) -> tuple[np.ndarray, np.ndarray]:
    with np.load(TRAIN) as archive:
        return archive["x"][:count], archive["y"][:count]


def _bad_labels(case: str) -> np.ndarray:
    _, labels = _digits()
    return {
        "above": labels + 10,
        "negative": labels - 1,
        "strings": np.array([str(value) for value in labels]),
        "fractional": labels.astype(np.float32) + 0.5,
        "one_hot": np.eye(10, dtype=np.float32)[labels],
        "nan": np.where(np.arange(len(labels)) == 3, np.nan, labels.astype(np.float32)),
    }[case]


@pytest.mark.slow
@pytest.mark.parametrize(
    "case, role, fragments",
    [
        ("above", "train", ["labels for output 'logits' range 10..19 (64 of 64 outside)", CLASS_IDS]),
        ("negative", "train", ["range -1..8 (", CLASS_IDS]),
        ("strings", "train", ["(strings or objects); expected numbers"]),
        ("fractional", "train", ["are not whole numbers (found ", CLASS_IDS]),
        ("one_hot", "train", ["have shape (64, 10)", "one-hot labels need the loss categorical_crossentropy"]),
        ("nan", "train", ["hold 1 NaN or inf value(s)", CLASS_IDS]),
        ("above", "val", ["labels for output 'logits' range 10..19", CLASS_IDS]),
    ],
)
def test_qat_labels_it_cannot_train_on_are_one_line_exit_2(case, role, fragments, tmp_path):
    """Before the fix: TensorFlow's multi-line 'Received a label value of 19 which is outside the valid range',
    'Cast string to float is not supported' (exit 1), or fractional labels silently truncated to class ids."""
    images, _ = _digits()
    bad = tmp_path / f"{case}.npz"
    np.savez(bad, x=images, y=_bad_labels(case))
    train, val = (str(bad), str(TEST)) if role == "train" else (str(TRAIN), str(bad))
    out = tmp_path / "out"
    result = convert(CNN, "--mode", "int8", "--mode", "qat", "--calib", str(TRAIN), "--calib-samples", "20",
                     "--train-data", train, "--val-data", val, "--epochs", "1", out=out)
    assert_usage_error(result, str(bad), *fragments)
    assert_nothing_written(out)


@pytest.mark.slow
def test_image_folder_with_more_classes_than_the_model_is_one_line_exit_2(tmp_path):
    """12 class subfolders (0..11) for the 10-class CNN: before the fix, TensorFlow's multi-line 'Received a label
    value of 11 which is outside the valid range of [0, 10)', exit 1."""
    import shutil

    folder = tmp_path / "images"
    shutil.copytree(SAMPLES / "digits_images", folder)
    for extra, source in (("10", "9"), ("11", "8")):
        shutil.copytree(folder / source, folder / extra)
    out = tmp_path / "out"
    result = convert(CNN, "--mode", "qat", "--train-data", str(folder), "--epochs", "1", out=out)
    assert_usage_error(result, f"{folder}: labels for output 'logits' range 0..11 (20 of 120 outside)", CLASS_IDS)
    assert_nothing_written(out)


def test_class_ids_beyond_the_model_classes_message(tmp_path):
    """An image folder with 12 class subfolders for a 10-class model gives labels 0..11."""
    spec = LossSpec("sparse_categorical_crossentropy", from_logits=True)
    with pytest.raises(DataError) as caught:
        check_labels(spec, np.arange(12), (10,), source=str(tmp_path), output="logits")
    assert str(caught.value) == (f"{tmp_path}: labels for output 'logits' range 0..11 (2 of 12 outside); "
                                 f"sparse_categorical_crossentropy needs {CLASS_IDS}")


@pytest.mark.parametrize(
    "name, labels, shape, fragment",
    [
        ("categorical_crossentropy", np.arange(8), (10,), ("have shape (8,); categorical_crossentropy needs one-hot "
         "labels of 10 columns (the model's output has 10 classes) (class ids need the loss "
         "sparse_categorical_crossentropy)")),
        ("binary_crossentropy", np.array([0.0, 1.0, 2.0]), (1,), "range 0..2; binary_crossentropy needs numbers in [0, 1]"),
        ("mean_squared_error", np.array(["a", "b"]), (1,), "are strings (first: 'a'); mean_squared_error needs finite numbers"),
        ("mean_squared_error", np.array([[0.5], [np.inf]]), (1,), "hold 1 NaN or inf value(s)"),
    ],
)
def test_label_checks_per_loss(name, labels, shape, fragment):
    spec = LossSpec(name, from_logits=None if name == "mean_squared_error" else False)
    with pytest.raises(DataError) as caught:
        check_labels(spec, labels, shape, source="data.npz", output="out")
    message = str(caught.value)
    assert message.startswith("data.npz: labels for output 'out' ") and fragment in message, message
    assert "\n" not in message


@pytest.mark.parametrize(
    "name, labels, shape",
    [
        ("sparse_categorical_crossentropy", np.array([0, 9, 3]), (10,)),
        ("sparse_categorical_crossentropy", np.array([[0.0], [9.0]]), (10,)),
        ("categorical_crossentropy", np.eye(10)[[1, 2]], (10,)),
        ("binary_crossentropy", np.array([0, 1, 1]), (1,)),
        ("mean_squared_error", np.array([[-3.5], [200.0]]), (1,)),
    ],
)
def test_labels_that_fit_pass(name, labels, shape):
    spec = LossSpec(name, from_logits=None if name == "mean_squared_error" else False)
    check_labels(spec, labels, shape, source="data.npz", output="out")


# ------------------------------------------------------------------------------------ sample-model build

BUILD = SAMPLES / "build.py"
BUILT_MODELS = ("digits_cnn.keras", "digits_multi_io.keras", "digits_gru.keras")


def _run_build(out: Path, threads: int) -> str:
    """``build.py --epochs-scale 0.1`` (3, 3 and 4 epochs) in a fresh process whose TensorFlow would default to
    ``threads`` threads (TF_NUM_INTRAOP_THREADS / TF_NUM_INTEROP_THREADS, as on a machine with that many cores)."""
    import os
    import subprocess
    import sys

    env = {**os.environ, "TF_NUM_INTRAOP_THREADS": str(threads), "TF_NUM_INTEROP_THREADS": str(threads),
           "TF_CPP_MIN_LOG_LEVEL": "3"}
    done = subprocess.run([sys.executable, str(BUILD), "--out", str(out), "--epochs-scale", "0.1"], env=env,
                          capture_output=True, text=True, timeout=600, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


@pytest.mark.slow
def test_sample_build_gives_identical_weights_whatever_the_thread_count(tmp_path):
    """Two short builds (every step of build.py, a tenth of the epochs) in processes whose TensorFlow would use 1 and
    4 threads give bit-identical data and weights, and print the same figures. Before build.py pinned its threads,
    they differed (the CNN's weights by 2.9e-6, the multi-IO model's by 3.1e-7 after 3 epochs)."""
    import keras

    first = _run_build(tmp_path / "a", threads=1)
    second = _run_build(tmp_path / "b", threads=4)
    figures = [line for line in first.splitlines() if not line.startswith("built in")]
    assert figures == [line for line in second.splitlines() if not line.startswith("built in")]
    for name in BUILT_MODELS:
        weights_a = keras.saving.load_model(tmp_path / "a" / name).get_weights()
        weights_b = keras.saving.load_model(tmp_path / "b" / name).get_weights()
        assert len(weights_a) == len(weights_b)
        for a, b in zip(weights_a, weights_b):
            np.testing.assert_array_equal(a, b, err_msg=name)
    for name in ("digits_train.npz", "digits_test.npz", "digits_multi_io_train.npz"):
        with np.load(tmp_path / "a" / name) as a, np.load(tmp_path / "b" / name) as b:
            assert a.files == b.files and all(np.array_equal(a[key], b[key]) for key in a.files), name


# ----------------------------------------------------------------------------------------------- QAT


def test_op_determinism_is_on_while_training_and_restored_after():
    from tensorflow.python.framework import config as tf_config

    from tflq.qat.quantize_aware import op_determinism

    before = tf_config.is_op_determinism_enabled()
    with op_determinism():
        assert tf_config.is_op_determinism_enabled()
    assert tf_config.is_op_determinism_enabled() == before


def _top1(path: Path, images: np.ndarray, labels: np.ndarray) -> float:
    from tests.tflite_helpers import run_tflite

    (scores,) = run_tflite(path, {"image": images}).values()
    return float(np.mean(np.argmax(scores, axis=-1) == labels))


@pytest.mark.slow
def test_qat_recovers_most_of_what_ptq_int8_loses(fragile_models, tmp_path):
    """On the fragile model (a masked 11th logit at -300 crushes the logits tensor in int8) PTQ int8 loses ~8 points
    (95.28 % -> 87.22 %). QAT (2 epochs, lr 1e-3, the defaults) must win back at least three quarters of that loss.
    Measured with seeds 0-6 (1-6 before op determinism was on; seed 0 gives 98.33 % either way): 95.28 % to
    98.33 %, at or above float32 (QAT trains every layer; the float model's
    logits were fitted in closed form), so the bar (~93.3 %) holds with a 2-point margin."""
    from tflq.convert import ConvertOptions, convert_model
    from tflq.qat.training import QatOptions

    with np.load(TEST) as archive:
        images, labels = archive["x"], archive["y"]
    options = ConvertOptions(
        modes=("float32", "int8", "qat"), io_types=("int8",), calibration=str(TRAIN),
        qat=QatOptions(train_data=str(TRAIN), loss="sparse_categorical_crossentropy", from_logits=True),
    )
    result = convert_model(fragile_models["fragile"], tmp_path / "out", options, workdir=tmp_path / "work")
    assert result.ok, [artifact.error for artifact in result.artifacts]
    by_label = {artifact.label: artifact.path for artifact in result.artifacts}
    float32, ptq, qat = (_top1(by_label[label], images, labels) for label in ("float32", "int8.int8", "qat.int8"))
    print(f"\nfloat32 {float32:.4f}  PTQ int8 {ptq:.4f}  QAT int8 {qat:.4f}")
    assert float32 - ptq > 0.04  # PTQ loses clearly, so recovering means something
    assert qat >= float32 - 0.25 * (float32 - ptq)


def test_train_qat_refuses_bad_labels_before_training():
    """The library path names the data by its role ("training data", "validation data")."""
    import keras

    from tflq.qat import quantize_aware as qat

    model = keras.saving.load_model(CNN)
    images, labels = _digits(32)
    with pytest.raises(DataError, match=r"^training data: labels for output 'logits' are strings"):
        qat.train_qat(model, (images, labels.astype(str)), epochs=1)
    with pytest.raises(DataError, match=r"^validation data: labels for output 'logits' range 0\.\.10 "):
        qat.train_qat(model, (images, labels), val=(images[:11], np.arange(11)), epochs=1)
