"""Every bad input: one clear line, the documented exit code, no traceback, no output file left behind."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from tests.cli_helpers import assert_nothing_written, assert_usage_error, convert
from tests.sample_paths import SAMPLES
from tflq.cli.app import main

CNN = str(SAMPLES / "digits_cnn.keras")
TRAIN = str(SAMPLES / "digits_train.npz")


@pytest.fixture()
def bad_data(tmp_path: Path) -> dict[str, Path]:
    rng = np.random.default_rng(0)
    files = {
        "channels": dict(x=rng.random((5, 8, 8, 3), dtype=np.float32)),
        "shape": dict(x=rng.random((5, 7, 8, 1), dtype=np.float32)),
        "empty": dict(x=np.zeros((0, 8, 8, 1), np.float32)),
        "strings": dict(x=np.full((5, 8, 8, 1), "a")),
        "wrong_key": dict(pixels=rng.random((5, 8, 8, 1), dtype=np.float32), labels=np.zeros(5)),
    }
    nan = rng.random((5, 8, 8, 1)).astype(np.float32)
    nan[3, 1, 1, 0] = np.inf
    files["nan"] = dict(x=nan)
    paths = {}
    for name, arrays in files.items():
        paths[name] = tmp_path / f"{name}.npz"
        np.savez(paths[name], **arrays)
    (tmp_path / "corrupt.npz").write_bytes(b"not a zip file")
    paths["corrupt"] = tmp_path / "corrupt.npz"
    return paths


@pytest.mark.parametrize(
    "case, fragments",
    [
        ("channels", ["channels.npz", "input 'image'", "expected 1 channels", "found 3"]),
        ("shape", ["shape.npz", "input 'image'", "expected shape (8, 8, 1)", "found (7, 8, 1)"]),
        ("empty", ["empty.npz", "no samples"]),
        ("nan", ["nan.npz", "input 'image'", "sample 3", "NaN or infinite"]),
        ("strings", ["strings.npz", "expected dtype float32", "found str"]),
        ("wrong_key", ["wrong_key.npz", "expected key 'x'", "found keys ['labels', 'pixels']"]),
        ("corrupt", ["corrupt.npz", "not a .npz file"]),
    ],
)
def test_bad_calibration_data(case: str, fragments: list[str], bad_data, tmp_path):
    out = tmp_path / "out"
    assert_usage_error(convert(CNN, "--mode", "int8", "--calib", str(bad_data[case]), out=out), *fragments)
    assert_nothing_written(out)


def test_float64_calibration_is_cast_with_a_notice(tmp_path):
    data = tmp_path / "f64.npz"
    with np.load(TRAIN) as archive:
        np.savez(data, x=archive["x"][:20].astype(np.float64))
    result = convert(CNN, "--mode", "int8", "--calib", str(data), out=tmp_path / "out")
    assert result.exit_code == 0, result.output
    assert "float64" in result.output and "float32" in result.output
    assert (tmp_path / "out" / "digits_cnn.int8.tflite").exists()


@pytest.mark.parametrize(
    "args, fragments",
    [
        (["missing.keras"], ["missing.keras", "no such file"]),
        ([__file__], [Path(__file__).name, "unknown model format '.py'"]),
        ([str(SAMPLES)], ["sample_models", "without saved_model.pb"]),
        ([CNN, "--mode", "int8"], ["int8 need calibration data", "--calib"]),
        ([CNN, "--mode", "16x8"], ["16x8 need calibration data"]),
        ([CNN, "--mode", "float16", "--io-type", "int8"], ["I/O type 'int8' does not apply", "float16"]),
        ([CNN, "--mode", "int8", "--io-type", "int16", "--calib", TRAIN], ["'int16' does not apply", "16x8"]),
        ([CNN, "--all-modes", "--mode", "int8"], ["--all-modes and --mode"]),
        ([CNN, "--signature", "serve"], ["--signature applies to SavedModel"]),
        ([CNN, "--mode", "int8", "--calib", "nowhere.npz"], ["nowhere.npz"]),
        ([CNN, "--mode", "int8", "--calib", "data.csv"], ["data.csv", "not found"]),
        ([CNN, "--mode", "int8", "--calib", "no_such_module_xyz:samples"], ["cannot import module 'no_such_module_xyz'"]),
        ([CNN, "--name", "../escape"], ["--name"]),
        ([str(SAMPLES / "digits_multi_io.keras"), "--mode", "int8", "--calib", TRAIN], ["missing key(s) ['image', 'row_sums']"]),
    ],
    ids=lambda value: "-".join(value) if isinstance(value, list) and len(value) < 3 else None,
)
def test_usage_errors(args: list[str], fragments: list[str], tmp_path):
    out = tmp_path / "out"
    assert_usage_error(convert(*args, out=out), *fragments)
    assert_nothing_written(out)


def test_unknown_mode_is_rejected_by_the_registry_choice(tmp_path):
    result = convert(CNN, "--mode", "int4", out=tmp_path / "out")
    assert result.exit_code == 2
    assert "int4" in result.output and "float32" in result.output and "16x8" in result.output


def test_lambda_layer_refused_unless_opted_in(tiny_models, tmp_path):
    out = tmp_path / "out"
    assert_usage_error(convert(str(tiny_models["lambda"]), out=out), "lambda.keras", "Lambda layer")
    assert_nothing_written(out)
    result = convert(str(tiny_models["lambda"]), "--unsafe-deserialization", out=out)
    assert result.exit_code == 0, result.output
    assert (out / "lambda.float32.tflite").exists()
    # the opt-in applied to that load only: the next one in the same process refuses again
    assert_usage_error(convert(str(tiny_models["lambda"]), out=tmp_path / "again"), "lambda.keras", "Lambda layer")


def test_custom_objects(tiny_models, tmp_path, monkeypatch):
    out = tmp_path / "out"
    assert_usage_error(convert(str(tiny_models["custom"]), out=out), "custom.keras", "--custom-objects")
    monkeypatch.chdir(tiny_models["custom_module_dir"])
    result = convert(str(tiny_models["custom"]), "--custom-objects", "tflq_test_custom_layers:Scale", out=out)
    assert result.exit_code == 0, result.output
    assert_usage_error(
        convert(str(tiny_models["custom"]), "--custom-objects", "tflq_test_custom_layers:Nope", out=tmp_path / "o2"),
        "has no attribute 'Nope'",
    )


def test_savedmodel_signatures(tiny_models, tmp_path):
    model = str(tiny_models["two_signatures"])
    assert_usage_error(convert(model, out=tmp_path / "a"), "several signatures (first, second)", "--signature")
    assert_usage_error(convert(model, "--signature", "third", out=tmp_path / "b"), "no signature 'third'", "first, second")
    result = convert(model, "--signature", "second", out=tmp_path / "c")
    assert result.exit_code == 0, result.output
    from tests.tflite_helpers import run_tflite

    outputs = run_tflite(tmp_path / "c" / "two_signatures.float32.tflite", {"x": np.ones((1, 4), np.float32)})
    np.testing.assert_allclose(outputs["y"], [[8.0, 8.0]])  # second signature doubles


@pytest.fixture(scope="module")
def float_op_model(tmp_path_factory) -> Path:
    """A model with a SIN op, which has no int8 kernel."""
    import keras

    @keras.saving.register_keras_serializable(package="tflq_tests")
    class Sine(keras.layers.Layer):
        def call(self, x):
            return keras.ops.sin(x)

    inputs = keras.Input((16,), name="x")
    hidden = keras.layers.Dense(16, name="d1")(inputs)
    hidden = Sine(name="sine")(hidden)
    path = tmp_path_factory.mktemp("float_op") / "sine.keras"
    keras.Model(inputs, keras.layers.Dense(4, name="out")(hidden)).save(path)
    return path


def test_strict_int8_names_the_float_ops_and_other_modes_finish(float_op_model, tmp_path):
    calib = tmp_path / "calib.npz"
    np.savez(calib, x=np.random.default_rng(0).random((20, 16), dtype=np.float32))
    out = tmp_path / "out"
    result = CliRunner().invoke(
        main,
        ["convert", str(float_op_model), "--mode", "float32", "--mode", "int8",
         "--calib", str(calib), "-o", str(out), "--json"], catch_exceptions=False,
    )
    assert result.exit_code == 1, result.output
    rows = {row["mode"]: row for row in json.loads(result.stdout)}
    assert rows["float32"]["status"] == "ok"
    assert rows["int8"]["status"] == "error"
    assert "SIN" in rows["int8"]["error"] and "--allow-float-fallback" in rows["int8"]["error"]
    assert "1 of 2 variant(s) failed: int8" in result.output
    assert (out / "sine.float32.tflite").exists()
    assert not (out / "sine.int8.tflite").exists()

    result = CliRunner().invoke(
        main,
        ["convert", str(float_op_model), "--mode", "int8", "--allow-float-fallback",
         "--calib", str(calib), "-o", str(out)], catch_exceptions=False,
    )
    assert result.exit_code == 0, result.output
    assert "left in float" in result.output
    assert (out / "sine.int8.tflite").exists()


def test_failed_variant_removes_a_stale_output(float_op_model, tmp_path):
    calib = tmp_path / "calib.npz"
    np.savez(calib, x=np.random.default_rng(0).random((20, 16), dtype=np.float32))
    out = tmp_path / "out"
    out.mkdir()
    stale = out / "sine.int8.tflite"
    stale.write_bytes(b"from an earlier run")
    result = convert(str(float_op_model), "--mode", "int8", "--calib", str(calib), out=out)
    assert result.exit_code == 1
    assert not stale.exists()


def test_random_calibration_warns_loudly(tmp_path):
    result = convert(CNN, "--mode", "int8", "--calib", "random", "--calib-samples", "10", out=tmp_path)
    assert result.exit_code == 0, result.output
    assert "RANDOM CALIBRATION DATA" in result.output


def test_calibration_from_module_function(tmp_path, monkeypatch):
    (tmp_path / "my_calib.py").write_text(
        "import numpy as np\n"
        "def samples():\n"
        "    data = np.load(%r)['x'][:30]\n"
        "    for row in data:\n"
        "        yield [row[None]]\n" % TRAIN
    )
    monkeypatch.chdir(tmp_path)
    result = convert(CNN, "--mode", "int8", "--calib", "my_calib:samples", out=tmp_path / "out")
    assert result.exit_code == 0, result.output
    assert (tmp_path / "out" / "digits_cnn.int8.tflite").exists()


def test_calibration_from_image_folder(tmp_path):
    from PIL import Image

    with np.load(TRAIN) as archive:
        images, labels = archive["x"][:20], archive["y"][:20]
    for index, (image, label) in enumerate(zip(images, labels)):
        folder = tmp_path / "images" / str(label)
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray((image[..., 0] * 255).astype(np.uint8)).resize((32, 32)).save(folder / f"{index}.png")
    result = convert(CNN, "--mode", "int8", "--calib", str(tmp_path / "images"), out=tmp_path / "out")
    assert result.exit_code == 0, result.output
    (tmp_path / "rgb").mkdir()
    Image.new("RGB", (8, 8)).save(tmp_path / "rgb" / "a.png")
    empty = tmp_path / "empty_images"
    empty.mkdir()
    assert_usage_error(convert(CNN, "--mode", "int8", "--calib", str(empty), out=tmp_path / "o2"), "no images found")
