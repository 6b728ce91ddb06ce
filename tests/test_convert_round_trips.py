"""Round trips: convert with tflq, run in LiteRT, compare with the source model."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from tests.sample_paths import SAMPLES
from tests.tflite_helpers import run_tflite
from tflq.cli.app import main
from tflq.convert.session import ConvertOptions, convert_model
from tflq.modes import MODES, Variant, plan_variants

ALL_IO = ("float32", "int8", "uint8", "int16")
CNN_VARIANTS = plan_variants([m for m in MODES if MODES[m].in_all_modes], list(ALL_IO))


@pytest.fixture(scope="session")
def cnn_conversion(tmp_path_factory: pytest.TempPathFactory):
    """digits_cnn.keras in every mode and every I/O type, converted once."""
    out = tmp_path_factory.mktemp("cnn")
    options = ConvertOptions(
        modes=tuple(m for m in MODES if MODES[m].in_all_modes),
        io_types=ALL_IO,
        calibration=str(SAMPLES / "digits_train.npz"),
    )
    return convert_model(SAMPLES / "digits_cnn.keras", out, options)


@pytest.fixture(scope="session")
def cnn_reference(digits_test):
    import keras

    model = keras.models.load_model(SAMPLES / "digits_cnn.keras", compile=False)
    return np.asarray(model(digits_test["x"], training=False))


def test_every_variant_is_written_with_deterministic_names(cnn_conversion):
    assert cnn_conversion.ok, [a.error for a in cnn_conversion.artifacts if not a.ok]
    names = sorted(a.path.name for a in cnn_conversion.artifacts)
    expected = sorted(f"digits_cnn.{v.label}.tflite" for v in CNN_VARIANTS)
    assert names == expected
    for artifact in cnn_conversion.artifacts:
        assert artifact.path.stat().st_size == artifact.size_bytes
        assert not list(artifact.path.parent.glob(".*.tmp"))


@pytest.mark.parametrize("variant", CNN_VARIANTS, ids=lambda v: v.label)
def test_round_trip_matches_keras(variant: Variant, cnn_conversion, cnn_reference, digits_test):
    artifact = next(a for a in cnn_conversion.artifacts if a.label == variant.label)
    outputs = run_tflite(artifact.path, {"image": digits_test["x"]})
    logits = outputs["logits"]
    assert logits.shape == cnn_reference.shape
    if variant.mode == "float32":
        np.testing.assert_allclose(logits, cnn_reference, atol=1e-4)
    elif variant.mode == "float16":
        np.testing.assert_allclose(logits, cnn_reference, atol=0.05)
    else:
        # quantized: top-1 agreement with Keras on the 360 test digits within 2 % (7 images)
        agreement = np.mean(logits.argmax(1) == cnn_reference.argmax(1))
        assert agreement >= 0.98, f"{variant.label}: top-1 agreement {agreement:.3f}"
        accuracy = np.mean(logits.argmax(1) == digits_test["y"])
        assert accuracy >= 0.96


@pytest.mark.parametrize("io_type", ["int8", "uint8", "int16", "float32"])
def test_integer_io_types_are_as_asked(io_type: str, cnn_conversion):
    from ai_edge_litert.interpreter import Interpreter

    mode = "16x8" if io_type == "int16" else "int8"
    artifact = next(a for a in cnn_conversion.artifacts if a.mode == mode and a.io_type == io_type)
    runner = Interpreter(model_path=str(artifact.path)).get_signature_runner()
    for detail in [*runner.get_input_details().values(), *runner.get_output_details().values()]:
        assert np.dtype(detail["dtype"]).name == io_type
        scale, zero_point = detail["quantization"]
        if io_type == "float32":
            assert scale == 0.0
        else:
            assert scale > 0
            if io_type == "int16":
                assert zero_point == 0  # 16x8 activations are symmetric
    # the input range covers the calibration data range [0, 1]
    if io_type in ("int8", "uint8"):
        scale, zero_point = runner.get_input_details()["image"]["quantization"]
        info = np.iinfo(io_type)
        assert (info.min - zero_point) * scale <= 0.0 + 1e-6
        assert (info.max - zero_point) * scale >= 0.99


def test_quantized_models_are_smaller(cnn_conversion):
    sizes = {a.label: a.size_bytes for a in cnn_conversion.artifacts}
    assert sizes["int8"] < sizes["float16"] < sizes["float32"]
    assert sizes["dynamic"] < sizes["float32"]


def test_per_tensor_differs_from_per_channel(tmp_path):
    calib = str(SAMPLES / "digits_train.npz")
    per_channel = convert_model(SAMPLES / "digits_cnn.keras", tmp_path / "a", ConvertOptions(modes=("int8",), calibration=calib, calibration_samples=50))
    per_tensor = convert_model(
        SAMPLES / "digits_cnn.keras", tmp_path / "b", ConvertOptions(modes=("int8",), calibration=calib, calibration_samples=50, per_tensor=True)
    )
    from ai_edge_litert.interpreter import Interpreter

    def max_scales(path: Path) -> int:
        interpreter = Interpreter(model_path=str(path))
        return max(len(t["quantization_parameters"]["scales"]) for t in interpreter.get_tensor_details())

    assert max_scales(per_channel.artifacts[0].path) > 1
    assert max_scales(per_tensor.artifacts[0].path) == 1


@pytest.mark.parametrize("model_file", ["digits_cnn.keras", "digits_cnn.h5", "digits_cnn_savedmodel"])
def test_every_model_format_round_trips(model_file: str, tmp_path, cnn_reference, digits_test):
    options = ConvertOptions(modes=("float32", "int8"), calibration=str(SAMPLES / "digits_train.npz"), calibration_samples=100)
    result = convert_model(SAMPLES / model_file, tmp_path, options)
    assert result.ok, [a.error for a in result.artifacts]
    float_out, int8_out = (run_tflite(a.path, {"image": digits_test["x"]}) for a in result.artifacts)
    (float_logits,) = float_out.values()  # the SavedModel names its output output_0
    np.testing.assert_allclose(float_logits, cnn_reference, atol=1e-4)
    (int8_logits,) = int8_out.values()
    assert np.mean(int8_logits.argmax(1) == cnn_reference.argmax(1)) >= 0.98


def test_multi_io_model_keeps_names_in_every_mode(tmp_path):
    import keras

    options = ConvertOptions(
        modes=tuple(m for m in MODES if MODES[m].in_all_modes),
        io_types=("float32", "int8"),
        calibration=str(SAMPLES / "digits_multi_io_train.npz"),
        calibration_samples=100,
    )
    result = convert_model(SAMPLES / "digits_multi_io.keras", tmp_path, options)
    assert result.ok, [a.error for a in result.artifacts]
    with np.load(SAMPLES / "digits_multi_io_test.npz") as archive:
        data = {k: archive[k] for k in archive.files}
    model = keras.models.load_model(SAMPLES / "digits_multi_io.keras", compile=False)
    digit_ref, ink_ref = (np.asarray(t) for t in model([data["image"], data["row_sums"]]))
    for artifact in result.artifacts:
        outputs = run_tflite(artifact.path, {"image": data["image"], "row_sums": data["row_sums"]})
        assert set(outputs) == {"digit", "ink"}
        agreement = np.mean(outputs["digit"].argmax(1) == digit_ref.argmax(1))
        assert agreement >= 0.97, artifact.label
        ink_error = np.abs(outputs["ink"] - ink_ref)  # ink is in [0, 1]
        assert ink_error.mean() < 0.03 and ink_error.max() < 0.1, (artifact.label, ink_error.mean(), ink_error.max())


def test_gru_model_converts_in_every_mode(tmp_path, digits_test):
    options = ConvertOptions(
        modes=tuple(m for m in MODES if MODES[m].in_all_modes),
        calibration=str(SAMPLES / "digits_train.npz"),
        calibration_samples=100,
    )
    result = convert_model(SAMPLES / "digits_gru.keras", tmp_path, options)
    assert result.ok, [a.error for a in result.artifacts]
    accuracy = {
        a.label: np.mean(run_tflite(a.path, {"image": digits_test["x"]})["logits"].argmax(1) == digits_test["y"])
        for a in result.artifacts
    }
    for label in ("float32", "float16", "dynamic", "int8"):
        assert accuracy[label] >= 0.95, (label, accuracy)
    # 16x8 runs, but collapses on this GRU: 87 of the 360 test digits right (0.242), every answer one of 4 classes;
    # the same 87 with 50 to 300 calibration samples. Pinned, so a fix (or a worse collapse) fails here and is seen.
    assert accuracy["16x8"] == pytest.approx(87 / 360, abs=0.05), accuracy


def test_gru_16x8_on_litert_quantizer_keeps_its_accuracy(tmp_path, digits_test):
    # where the converter's 16x8 collapses (above), LiteRT Quantizer's keeps float32's top-1: measured 98.06 %
    # (float32 98.06 %), with the GRU's initial-state FILL left in float by its op policy
    options = ConvertOptions(
        modes=("16x8",), engine="litert-quantizer", allow_float_fallback=True,
        calibration=str(SAMPLES / "digits_train.npz"), calibration_samples=100,
    )
    (artifact,) = convert_model(SAMPLES / "digits_gru.keras", tmp_path, options).artifacts
    assert artifact.ok, artifact.error
    assert artifact.float_ops and all(op.startswith("FILL(") for op in artifact.float_ops), artifact.float_ops
    outputs = run_tflite(artifact.path, {"image": digits_test["x"]})["logits"]
    assert np.mean(outputs.argmax(1) == digits_test["y"]) >= 0.95


def test_while_loop_gru_is_unrolled_and_converts(tiny_models, tmp_path, digits_test):
    import keras

    result = convert_model(tiny_models["gru_loop"], tmp_path, ConvertOptions(modes=("float32", "int8"), calibration=str(SAMPLES / "digits_train.npz"), calibration_samples=50))
    assert result.ok, [a.error for a in result.artifacts]
    model = keras.models.load_model(tiny_models["gru_loop"], compile=False)
    reference = np.asarray(model(digits_test["x"][:20]))
    outputs = run_tflite(result.artifacts[0].path, {"image": digits_test["x"][:20]})
    np.testing.assert_allclose(outputs["logits"], reference, atol=1e-4)


def test_cli_convert_json_lists_every_output(tmp_path):
    runner = CliRunner()
    result = runner.invoke(
        main,
        ["convert", str(SAMPLES / "digits_cnn.keras"), "--mode", "float32", "--mode", "int8", "--io-type", "float32",
         "--io-type", "uint8", "--calib", str(SAMPLES / "digits_train.npz"), "--calib-samples", "50",
         "-o", str(tmp_path), "--json"], catch_exceptions=False,
    )
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)
    assert [(r["mode"], r["io_type"]) for r in rows] == [("float32", "float32"), ("int8", "float32"), ("int8", "uint8")]
    for row in rows:
        assert set(row) >= {"mode", "io_type", "path", "size_bytes", "sha256", "seconds", "status", "error"}
        assert row["status"] == "ok" and row["error"] is None
        assert Path(row["path"]).stat().st_size == row["size_bytes"]
        import hashlib

        assert hashlib.sha256(Path(row["path"]).read_bytes()).hexdigest() == row["sha256"]


def test_cli_convert_hides_tensorflow_noise(tmp_path):
    import subprocess
    import sys

    completed = subprocess.run(
        [sys.executable, "-m", "tflq.cli.app", "convert", str(SAMPLES / "digits_cnn.keras"), "--mode", "int8",
         "--calib", str(SAMPLES / "digits_train.npz"), "--calib-samples", "20", "-o", str(tmp_path)],
        capture_output=True, text=True, timeout=300,
    )
    assert completed.returncode == 0, completed.stderr
    noise = ("Saved artifact", "fully_quantize", "absl", "W0000", "I0000", "cuda")
    assert not [line for line in (completed.stdout + completed.stderr).splitlines() if any(n in line for n in noise)]
    assert "digits_cnn.int8.tflite" in completed.stdout


def test_all_modes_flag_matches_registry(tmp_path):
    result = CliRunner().invoke(
        main, ["convert", str(SAMPLES / "digits_cnn.keras"), "--all-modes", "--calib", str(SAMPLES / "digits_train.npz"),
               "--calib-samples", "30", "-o", str(tmp_path), "--json"], catch_exceptions=False,
    )
    assert result.exit_code == 0, result.output
    produced = {row["mode"] for row in json.loads(result.stdout)}
    assert produced == {m for m in MODES if MODES[m].in_all_modes}


def test_modes_command_lists_the_registry():
    result = CliRunner().invoke(main, ["modes"], catch_exceptions=False)
    assert result.exit_code == 0
    listed = [line.split()[0] for line in result.output.splitlines()]
    assert listed == list(MODES)


def test_sequential_model_round_trips(tiny_models, tmp_path, digits_test):
    import keras

    result = convert_model(
        tiny_models["sequential"], tmp_path,
        ConvertOptions(modes=("float32", "int8"), io_types=("int8",), calibration=str(SAMPLES / "digits_train.npz"), calibration_samples=50),
    )
    assert result.ok, [a.error for a in result.artifacts]
    reference = np.asarray(keras.models.load_model(tiny_models["sequential"], compile=False)(digits_test["x"][:50]))
    (float_out,) = run_tflite(result.artifacts[0].path, {n: digits_test["x"][:50] for n in _input_names(result.artifacts[0].path)}).values()
    np.testing.assert_allclose(float_out, reference, atol=1e-4)


def _input_names(path: Path) -> list[str]:
    from ai_edge_litert.interpreter import Interpreter

    return list(Interpreter(model_path=str(path)).get_signature_runner().get_input_details())
