"""The messages of ``tflq convert``: a strict integer failure is one short line that groups the ops by type, names
their Keras layers and the fix; an integer model input that cannot be calibrated is named as the cause; options that
would be silently ignored are errors."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from tests.cli_helpers import assert_nothing_written, assert_usage_error, convert
from tests.sample_paths import SAMPLES

CNN = str(SAMPLES / "digits_cnn.keras")
TRAIN = str(SAMPLES / "digits_train.npz")


@pytest.fixture(scope="module")
def message_models(tmp_path_factory) -> dict[str, Path]:
    """sines: two custom layers computing two SIN each (no integer kernel); ids: int32 ids cast to float before a
    Dense (a CAST of a model input); tokens: an Embedding on int32 token ids. Each with a calibration .npz."""
    import keras

    @keras.saving.register_keras_serializable(package="tflq_message_tests")
    class TwoSines(keras.layers.Layer):
        def call(self, x):
            return keras.ops.sin(x) + keras.ops.sin(2.0 * x)

    folder = tmp_path_factory.mktemp("message_models")
    rng = np.random.default_rng(0)
    x = keras.Input((16,), name="x")
    hidden = TwoSines(name="sine_a")(keras.layers.Dense(16, name="d1")(x))
    hidden = TwoSines(name="sine_b")(keras.layers.Dense(16, name="d2")(hidden))
    keras.Model(x, keras.layers.Dense(4, name="out")(hidden)).save(folder / "sines.keras")
    np.savez(folder / "sines.npz", x=rng.random((16, 16), dtype=np.float32))

    ids = keras.Input((6,), dtype="int32", name="ids")
    keras.Model(ids, keras.layers.Dense(4, name="dense")(keras.ops.cast(ids, "float32"))).save(folder / "ids.keras")
    np.savez(folder / "ids.npz", ids=rng.integers(0, 50, (16, 6)).astype(np.int32))

    tokens = keras.Input((12,), dtype="int32", name="tokens")
    pooled = keras.layers.GlobalAveragePooling1D(name="pool")(keras.layers.Embedding(50, 8, name="embedding")(tokens))
    keras.Model(tokens, keras.layers.Dense(3, name="head")(pooled)).save(folder / "tokens.keras")
    np.savez(folder / "tokens.npz", tokens=rng.integers(0, 50, (16, 12)).astype(np.int32))
    # dead: a ReLU6 depthwise convolution whose output is ~0, so 16x8's int16 output scale is so small that
    # quantizing the ReLU6 bound overflows int32: the 16x8 model converts but fails to prepare (verification fails)
    image = keras.Input((8, 8, 2), name="image")
    depthwise = keras.layers.DepthwiseConv2D(3, padding="same", activation="relu6", name="dw")
    dead = keras.Model(image, keras.layers.Flatten(name="flat")(depthwise(image)))
    kernel, bias = depthwise.get_weights()
    depthwise.set_weights([np.full_like(kernel, 1e-12), np.zeros_like(bias)])
    dead.save(folder / "dead.keras")
    np.savez(folder / "dead.npz", image=rng.random((8, 8, 8, 2), dtype=np.float32))
    models = {path.stem: path for path in folder.glob("*.keras")}
    return models | {f"{path.stem}_calib": path for path in folder.glob("*.npz")}


def _error_of(result, mode: str) -> str:
    rows = {row["mode"]: row for row in json.loads(result.stdout)}
    assert rows[mode]["status"] == "error", rows
    return rows[mode]["error"]


@pytest.mark.slow
def test_strict_int8_groups_ops_by_type_and_names_their_layers(message_models, tmp_path):
    model, calib = str(message_models["sines"]), str(message_models["sines_calib"])
    result = convert(model, "--mode", "int8", "--calib", calib, "--json", out=tmp_path / "a")
    assert result.exit_code == 1, result.output
    assert _error_of(result, "int8") == (
        "int8: 4 op(s) have no int8 kernel: SIN x4 (layers: sine_a, sine_b) -- pass --allow-float-fallback to keep "
        "them in float, or --skip-layers sine_a,sine_b to keep just those layers in float"
    )
    # the fix it suggests works
    result = convert(model, "--mode", "int8", "--calib", calib, "--skip-layers", "sine_a,sine_b", out=tmp_path / "b")
    assert result.exit_code == 0, result.output


@pytest.mark.slow
def test_16x8_unsupported_op_suggests_allow_float_fallback(message_models, tmp_path):
    model, calib = str(message_models["sines"]), str(message_models["sines_calib"])
    result = convert(model, "--mode", "16x8", "--calib", calib, "--json", out=tmp_path / "a")
    assert result.exit_code == 1, result.output
    error = _error_of(result, "16x8")
    assert error.startswith("16x8: op SIN has no 16x8 kernel (Quantization to 16x8-bit not yet supported"), error
    assert error.endswith("-- pass --allow-float-fallback to keep such ops in float"), error
    result = convert(model, "--mode", "16x8", "--calib", calib, "--allow-float-fallback", out=tmp_path / "b")
    assert result.exit_code == 0, result.output


def test_int8_names_the_integer_input_that_feeds_a_float_op(message_models, tmp_path):
    result = convert(str(message_models["ids"]), "--mode", "int8", "--calib", str(message_models["ids_calib"]),
                     "--json", out=tmp_path / "a")
    assert result.exit_code == 1, result.output
    error = _error_of(result, "int8")
    assert error.startswith("int8: 1 op(s) have no int8 kernel: CAST x1; the integer model input(s) 'ids'"), error
    assert "cannot be calibrated -- pass --allow-float-fallback" in error


def test_16x8_names_the_integer_input_it_cannot_calibrate(message_models, tmp_path):
    result = convert(str(message_models["tokens"]), "--mode", "16x8", "--calib", str(message_models["tokens_calib"]),
                     "--json", out=tmp_path / "a")
    assert result.exit_code == 1, result.output
    error = _error_of(result, "16x8")
    assert error.startswith("16x8: model input 'tokens' is int32 (token ids or indices?) and cannot be calibrated"), error
    assert error.endswith("-- use mode int8 or dynamic for this model"), error


@pytest.mark.parametrize(
    "args, fragments",
    [
        (["--per-tensor"], ["--per-tensor does not apply to mode(s) float32", "dynamic, int8, 16x8"]),
        (["--mode", "float16", "--per-tensor"], ["--per-tensor does not apply to mode(s) float16"]),
        (["--allow-float-fallback"], ["--allow-float-fallback does not apply to mode(s) float32", "int8, qat, 16x8"]),
        (["--name", ""], ["--name ''", "it is empty"]),
        (["--name", "   "], ["--name '   '", "blank"]),
        (["--name", ".."], ["--name '..'", "starts with a dot"]),
        (["--name", ".hidden"], ["starts with a dot"]),
        (["--name", "a/b"], ["path separator"]),
        (["--name", "a\\b"], ["path separator"]),
        (["--name", "a\nb"], ["control character"]),
        (["--name", " padded"], ["starts or ends with a space"]),
        (["--calib-samples", "99999999999999999999", "--mode", "int8", "--calib", TRAIN], ["--calib-samples"]),
        (["--mode", "int8", "--calib", TRAIN, "--skip-layers", ","], ["--skip-layers ','", "comma-separated names"]),
        (["--mode", "int8", "--calib", TRAIN, "--skip-ops", " "], ["--skip-ops ' '"]),
    ],
)
def test_options_that_would_be_ignored_or_misused_are_errors(args, fragments, tmp_path):
    out = tmp_path / "out"
    assert_usage_error(convert(CNN, *args, out=out), *fragments)
    assert_nothing_written(out)


@pytest.mark.parametrize(
    "args",
    [["--eval", "nowhere.npz"], ["--mode", "int8", "--calib", "nowhere.npz"], ["--mode", "int8", "--calib", "nowhere.npy"]],
    ids=["eval", "calib-npz", "calib-npy"],
)
def test_a_missing_data_file_fails_before_the_export(args, tmp_path):
    out = tmp_path / "out"
    result = convert(CNN, *args, out=out)
    assert_usage_error(result, f"{args[-1]}: no such file")
    assert "export" not in result.output  # no summary line: nothing was converted
    assert_nothing_written(out)


@pytest.mark.slow
def test_a_variant_that_fails_verification_leaks_no_tensorflow_chatter(message_models, tmp_path):
    """The real CLI in a fresh process, without TF_CPP_MIN_LOG_LEVEL in its environment (as a user runs it): 16x8
    fails verification, dynamic is converted and measured against the Keras model (a child process imports
    TensorFlow); stderr holds tflq's own lines only."""
    import os
    import subprocess
    import sys

    env = {key: value for key, value in os.environ.items() if key != "TF_CPP_MIN_LOG_LEVEL"}
    env["PYTHONPATH"] = str(Path(__file__).resolve().parent.parent)
    calib = str(message_models["dead_calib"])
    done = subprocess.run(
        [sys.executable, "-m", "tflq.cli.app", "convert", str(message_models["dead"]), "--mode", "dynamic", "--mode", "16x8",
         "--calib", calib, "--eval", calib, "-o", str(tmp_path / "out")],
        capture_output=True, text=True, env=env, timeout=600, check=False,
    )
    assert done.returncode == 1, done.stderr
    assert "16x8             the converted model does not run in the LiteRT interpreter" in done.stdout, done.stdout
    assert "dead.dynamic.tflite" in done.stdout  # measured: the table
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert lines[-1] == "Error: 1 of 2 variant(s) failed: 16x8", done.stderr
    for line in lines:
        assert line.startswith(("Note: ", "WARNING: ", "Error: ")), done.stderr
    for chatter in ("absl::InitializeLog", "cudart_stub", "cpu_feature_guard", "cuInit", "oneDNN"):
        assert chatter not in done.stderr, done.stderr
