"""``--engine``: the modes both engines make (float16, dynamic, int8, 16x8) on the TFLite converter and on LiteRT
Quantizer; the quantizer's static I/O types; the qconfig settings (``symmetric``, ``range_estimator``); the
combinations refused. Real TensorFlow, LiteRT and LiteRT Quantizer on the digits CNN (360 test images) and on a
float ``.tflite`` made here with plain TensorFlow.

Agreement of the two engines, measured on the development machine (x86_64, 2 shared cores) on the 360 test images,
as the largest absolute difference of the logits (they span about 49) and the top-1 agreement: float16 0.0026 /
100 %, dynamic 0.32 / 100 %, int8 0.0000076 / 100 % (with tflq's default ``activation_range: min-max`` the two
engines make the same int8 model up to rounding; with LiteRT Quantizer's own moving-average ranges it was 11.6),
16x8 0.00078 / 100 %. The tolerances below (0.05, 2.0, 1.0 = about five int8 output steps of 0.19, 0.05) leave
room for other CPUs' kernels and rounding, and stay far below what a broken quantization gives (top-1 agreement
near chance; LiteRT Quantizer's tensorwise dynamic int8, refused, gives 35 % top-1).

On the plain-TensorFlow ``.tflite`` (a random conv net whose outputs span 0.17), the largest difference from the
float model was measured at 0.00003 (float16), 0.0014 (dynamic, int8 with every I/O type), 0.0006 (16x8): the test
allows a tenth of the output span (0.017).
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from tests.cli_helpers import assert_usage_error, convert, invoke
from tests.sample_paths import SAMPLES
from tests.tflite_helpers import run_tflite

CNN = str(SAMPLES / "digits_cnn.keras")
TRAIN = str(SAMPLES / "digits_train.npz")
TEST = SAMPLES / "digits_test.npz"


def _both_engine_modes() -> list[str]:
    from tflq.modes import MODES

    return [name for name, mode in MODES.items() if len(mode.engines) == 2]


BOTH = _both_engine_modes()
# largest |logit difference| between the engines, per activation kind (see the module docstring for the measurement)
TOLERANCE = {"float32": 0.05, "dynamic": 2.0, "int8": 1.0, "int16": 0.05}


def _test_images() -> tuple[np.ndarray, np.ndarray]:
    with np.load(TEST) as archive:
        return archive["x"].astype("float32"), archive["y"]


def _logits(path: Path) -> np.ndarray:
    (scores,) = run_tflite(path, {"image": _test_images()[0]}).values()
    return scores


@pytest.fixture(scope="module")
def by_engine(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, Path]]:
    """engine -> variant label -> .tflite: every mode both engines make, with every I/O type, on the digits CNN."""
    import os

    from tflq.convert.parallel import WORKERS_VARIABLE
    from tflq.modes import MODES

    made: dict[str, dict[str, Path]] = {}
    io_types = sorted({io for name in BOTH for io in MODES[name].io_types})
    saved = os.environ.get(WORKERS_VARIABLE)
    os.environ[WORKERS_VARIABLE] = "2"  # with the float16/dynamic worker, which must build on the engine asked for
    try:
        made = _by_engine(tmp_path_factory, io_types)
    finally:
        if saved is None:
            os.environ.pop(WORKERS_VARIABLE, None)
        else:
            os.environ[WORKERS_VARIABLE] = saved
    return made


def _by_engine(tmp_path_factory: pytest.TempPathFactory, io_types: list[str]) -> dict[str, dict[str, Path]]:
    made: dict[str, dict[str, Path]] = {}
    for engine in ("converter", "litert-quantizer"):
        out = tmp_path_factory.mktemp(engine)
        args = [arg for name in ("float32", *BOTH) for arg in ("--mode", name)]
        args += [arg for io in io_types for arg in ("--io-type", io)]
        result = convert(CNN, *args, "--engine", engine, "--calib", TRAIN, "--calib-samples", "100", "--json", out=out)
        assert result.exit_code == 0, result.output
        made[engine] = {}
        for row in json.loads(result.stdout):
            assert row["status"] == "ok", row
            label = row["mode"] if row["io_type"] == "float32" else f"{row['mode']}.{row['io_type']}"
            made[engine][label] = Path(row["path"])
    return made


def test_the_registry_offers_both_engines_for_the_converter_modes_the_quantizer_can_make() -> None:
    from tflq.modes import MODES

    assert set(BOTH) == {"float16", "dynamic", "int8", "16x8"}
    for name in BOTH:
        mode = MODES[name]
        assert mode.litert is not None and mode.engines[0] == mode.engine and "engine" in mode.settings
        # the session prepares the same once-per-model work whichever engine builds the variant
        assert mode.litert.needs == mode.build.needs, name
    result = invoke("modes", "--json")
    assert result.exit_code == 0, result.output
    rows = {row["name"]: row for row in json.loads(result.output)}
    for name, row in rows.items():
        assert row["engine"] == row["engines"][0], name
        assert len(row["engines"]) == (2 if name in BOTH else 1), name


@pytest.mark.slow
def test_every_mode_converts_loads_and_runs_on_both_engines(by_engine: dict[str, dict[str, Path]]) -> None:
    x, y = _test_images()
    baseline = float(np.mean(_logits(by_engine["converter"]["float32"]).argmax(-1) == y))
    assert baseline > 0.95
    for engine, files in by_engine.items():
        for label, path in files.items():
            top1 = float(np.mean(_logits(path).argmax(-1) == y))
            assert top1 >= baseline - 0.01, (engine, label, top1)  # measured: every one 98.61 %, as float32


@pytest.mark.slow
def test_the_two_engines_agree_numerically(by_engine: dict[str, dict[str, Path]]) -> None:
    from tflq.modes import MODES

    for name in BOTH:
        converter, litert = (_logits(by_engine[engine][name]) for engine in ("converter", "litert-quantizer"))
        difference = float(np.max(np.abs(converter - litert)))
        assert difference <= TOLERANCE[MODES[name].activation_kind or "float32"], (name, difference)
        assert np.mean(converter.argmax(-1) == litert.argmax(-1)) >= 0.98, name


@pytest.mark.slow
def test_the_engines_give_different_files(by_engine: dict[str, dict[str, Path]]) -> None:
    """--engine is honoured: the quantizer's files are not the converter's (a silent fallback would match)."""
    for label, path in by_engine["converter"].items():
        if label != "float32":
            assert path.read_bytes() != by_engine["litert-quantizer"][label].read_bytes(), label


@pytest.mark.slow
def test_litert_quantizer_static_io_types(by_engine: dict[str, dict[str, Path]]) -> None:
    """int8 takes float32/int8/uint8 and 16x8 takes float32/int16 on LiteRT Quantizer as on the converter: the
    quantized interface, its parameters (uint8 = int8 with the zero point moved by 128), the same predictions."""
    from ai_edge_litert.interpreter import Interpreter

    files = by_engine["litert-quantizer"]
    expected = {"int8": "float32", "int8.int8": "int8", "int8.uint8": "uint8", "16x8": "float32", "16x8.int16": "int16"}
    details = {}
    for label, dtype in expected.items():
        interpreter = Interpreter(model_path=str(files[label]))
        (inp,), (out,) = interpreter.get_input_details(), interpreter.get_output_details()
        assert (np.dtype(inp["dtype"]).name, np.dtype(out["dtype"]).name) == (dtype, dtype), label
        details[label] = (inp["quantization"], out["quantization"])
    (int8_in, int8_out), (uint8_in, uint8_out) = details["int8.int8"], details["int8.uint8"]
    for int8_params, uint8_params in ((int8_in, uint8_in), (int8_out, uint8_out)):
        assert uint8_params[0] == pytest.approx(int8_params[0]) and uint8_params[1] == int8_params[1] + 128
    assert details["16x8.int16"][0][1] == 0 and details["16x8.int16"][1][1] == 0  # int16: symmetric
    reference = _logits(files["int8"]).argmax(-1)
    for label in ("int8.int8", "int8.uint8"):
        assert np.mean(_logits(files[label]).argmax(-1) == reference) >= 0.99, label


def _float_tflite(tmp_path: Path) -> tuple[bytes, np.ndarray]:
    """A float .tflite made with plain TensorFlow (no tflq): a small conv net on 8x8x1 inputs."""
    import tensorflow as tf

    tf.keras.utils.set_random_seed(0)
    inputs = tf.keras.Input((8, 8, 1), name="image")
    hidden = tf.keras.layers.Conv2D(8, 3, activation="relu")(inputs)
    hidden = tf.keras.layers.DepthwiseConv2D(3, activation="relu")(hidden)
    outputs = tf.keras.layers.Dense(10)(tf.keras.layers.Flatten()(hidden))
    model = tf.keras.Model(inputs, outputs)
    float_model = tf.lite.TFLiteConverter.from_keras_model(model).convert()
    (tmp_path / "plain.tflite").write_bytes(float_model)
    return float_model, np.random.default_rng(0).uniform(0, 1, (20, 8, 8, 1)).astype("float32")


@pytest.mark.slow
@pytest.mark.parametrize("name", BOTH)
def test_the_quantizer_build_of_each_mode_on_a_plain_tensorflow_tflite(tmp_path: Path, name: str) -> None:
    """Each mode's LiteRT Quantizer build, on a float .tflite TensorFlow made (the recipe the registry entry names,
    every I/O type it takes): loads, runs, stays close to the float model."""
    from tflq._tf import litert_quantizer as _lq
    from tflq.modes import MODES

    build = MODES[name].litert
    assert build is not None
    float_model, images = _float_tflite(tmp_path)
    (reference,) = run_tflite(float_model, {"image": images}).values()
    samples = [{"image": images[i : i + 1]} for i in range(len(images))]
    recipe = _lq.named_recipe(build.recipe, build.weight_bits, activation_bits=build.activation_bits)
    quantized = _lq.quantize(float_model, recipe, lambda: samples, activation_range="min-max")
    assert quantized != float_model
    for io_type in MODES[name].io_types:
        content = _lq.set_io_type(quantized, io_type) if build.recipe == "static" else quantized
        (output,) = run_tflite(content, {"image": images}).values()
        difference = float(np.max(np.abs(output - reference)))
        assert difference <= 0.1 * float(np.ptp(reference)), (name, io_type, difference)


@pytest.mark.slow
def test_qconfig_settings_change_the_output(tmp_path: Path) -> None:
    """--symmetric gives zero points of 0 on the int8 activations; --range-estimator mse other weight scales."""
    from ai_edge_litert.interpreter import Interpreter

    def int8_io(*args: str) -> Path:
        out = tmp_path / "-".join(args or ("default",))
        result = convert(CNN, "--mode", "int8", "--io-type", "int8", "--engine", "litert-quantizer", *args,
                         "--calib", TRAIN, "--calib-samples", "50", "--json", out=out)
        assert result.exit_code == 0, result.output
        return Path(json.loads(result.stdout)[0]["path"])

    default, symmetric, mse = int8_io(), int8_io("--symmetric"), int8_io("--range-estimator", "mse")
    moving = int8_io("--activation-range", "moving-average")
    zero_points = {}
    for label, path in (("default", default), ("symmetric", symmetric)):
        interpreter = Interpreter(model_path=str(path))
        zero_points[label] = {int(d["quantization"][1]) for d in interpreter.get_output_details()}
    assert zero_points["symmetric"] == {0} and zero_points["default"] != {0}, zero_points
    assert mse.read_bytes() != default.read_bytes()
    # moving-average ranges are narrower than min/max: the largest logits clip (measured on the 360 test images:
    # output scale 0.115 against 0.190 with min-max)
    scales = {label: Interpreter(model_path=str(path)).get_output_details()[0]["quantization"][0]
              for label, path in (("min-max", default), ("moving-average", moving))}
    assert scales["moving-average"] < scales["min-max"], scales
    y = _test_images()[1]
    for path in (symmetric, mse, moving):
        assert np.mean(_logits(path).argmax(-1) == y) > 0.95, path  # measured: 98.61 % each


def test_engine_and_qconfig_settings_are_in_the_cache_key_of_the_modes_that_read_them(tmp_path: Path) -> None:
    from tflq.batch.config import load_config
    from tflq.batch.jobs import conversion_key
    from tflq.modes import Variant

    config = tmp_path / "batch.yaml"
    config.write_text(
        f"models:\n  - name: cnn\n    path: {CNN}\n    modes: [float32, int8, 16x8]\n"
        f"    engine: litert-quantizer\n    symmetric: true\n    calibration: {{data: {TRAIN}}}\n"
    )
    (job,) = load_config(config).models
    assert job.convert.engine == "litert-quantizer" and job.convert.symmetric is True

    def key(convert_options, mode: str) -> str:
        return conversion_key(replace(job, convert=convert_options), Variant(mode), "m")

    asymmetric = replace(job.convert, symmetric=False)
    assert key(job.convert, "int8") != key(asymmetric, "int8")
    assert key(job.convert, "16x8") == key(asymmetric, "16x8")  # 16x8 does not read symmetric
    mse = replace(job.convert, range_estimator="mse")
    moving = replace(job.convert, activation_range="moving-average")
    assert key(job.convert, "int8") != key(moving, "int8") and key(job.convert, "16x8") != key(moving, "16x8")
    assert key(job.convert, "int8") != key(mse, "int8") and key(job.convert, "16x8") != key(mse, "16x8")
    converter = replace(asymmetric, engine="converter")
    assert key(asymmetric, "16x8") != key(converter, "16x8")
    assert key(job.convert, "float32") == key(converter, "float32")


@pytest.mark.parametrize(
    ("args", "fragments"),
    [
        (["--mode", "int8", "--symmetric"], ["--symmetric", "mode int8 on engine converter", "litert-quantizer"]),
        (["--mode", "16x8", "--range-estimator", "octav"], ["--range-estimator", "engine converter"]),
        (["--mode", "int8", "--activation-range", "moving-average"], ["--activation-range", "engine converter"]),
        (["--mode", "int8", "--engine", "litert-quantizer", "--dense-per-tensor"], ["--dense-per-tensor"]),
        (["--mode", "dynamic", "--engine", "litert-quantizer", "--per-tensor"], ["--per-tensor", "mode dynamic"]),
        (["--mode", "int4x8", "--engine", "litert-quantizer"], ["--engine", "float16, dynamic, int8, 16x8"]),
        (["--mode", "16x8", "--engine", "litert-quantizer", "--symmetric"], ["--symmetric", "int8, int4x8"]),
        # LiteRT Quantizer 0.11 has no MSE/OCTAV policy for int4 weights with int8 activations
        (["--mode", "int4x8", "--range-estimator", "mse"], ["--range-estimator", "applies to int8, 16x8"]),
    ],
)
def test_settings_an_engine_cannot_honour_are_refused(tmp_path: Path, args: list[str], fragments: list[str]) -> None:
    assert_usage_error(convert(CNN, *args, "--calib", TRAIN, out=tmp_path / "out"), *fragments)
    assert not (tmp_path / "out").exists()


def test_a_batch_file_refuses_them_naming_the_file_and_line(tmp_path: Path) -> None:
    from tflq.batch.config import load_config
    from tflq.errors import ConfigError

    config = tmp_path / "batch.yaml"
    config.write_text(f"models:\n  - name: cnn\n    path: {CNN}\n    modes: [int8]\n    range_estimator: mse\n")
    with pytest.raises(ConfigError, match=r"batch.yaml:2: .*--range-estimator .*engine converter"):
        load_config(config)
    config.write_text(config.read_text().replace("mse", "percentile"))
    with pytest.raises(ConfigError, match=r"batch.yaml:5: range_estimator: expected one of min-max, mse, octav"):
        load_config(config)


@pytest.mark.slow
def test_per_tensor_gives_litert_quantizer_int8_one_scale_per_weight_tensor(tmp_path: Path) -> None:
    """--per-tensor on LiteRT Quantizer's int8: tensorwise weights (measured: 98.61 % top-1, as channelwise)."""
    from ai_edge_litert.interpreter import Interpreter

    scales = {}
    for label, extra in (("channelwise", []), ("tensorwise", ["--per-tensor"])):
        result = convert(CNN, "--mode", "int8", "--engine", "litert-quantizer", *extra, "--calib", TRAIN,
                         "--calib-samples", "50", "--json", out=tmp_path / label)
        assert result.exit_code == 0, result.output
        path = Path(json.loads(result.stdout)[0]["path"])
        details = Interpreter(model_path=str(path)).get_tensor_details()
        scales[label] = [len(d["quantization_parameters"]["scales"]) for d in details if d["dtype"] == np.int8
                         and len(d["shape"]) == 4]  # the convolution kernels
        if label == "tensorwise":
            assert np.mean(_logits(path).argmax(-1) == _test_images()[1]) > 0.95
    assert scales["tensorwise"] and all(count == 1 for count in scales["tensorwise"]), scales
    assert any(count > 1 for count in scales["channelwise"]), scales


def test_a_batch_file_refuses_an_engine_no_mode_of_its_model_reads(tmp_path: Path) -> None:
    from tflq.batch.config import load_config
    from tflq.errors import ConfigError

    config = tmp_path / "batch.yaml"
    config.write_text(f"models:\n  - name: cnn\n    path: {CNN}\n    modes: [int4-weights]\n    engine: converter\n")
    with pytest.raises(ConfigError, match=r"batch.yaml:5: .*engine is read by mode\(s\) float16, dynamic, int8, 16x8"):
        load_config(config)


def test_skip_layers_on_litert_quantizer_int8_keep_the_layer_float(tmp_path: Path) -> None:
    """--skip-layers on int8 works on both engines: on LiteRT Quantizer through one no_quantize rule per op."""
    result = convert(
        CNN, "--mode", "int8", "--engine", "litert-quantizer", "--skip-layers", "logits", "--calib", TRAIN,
        "--calib-samples", "16", "--json", out=tmp_path / "out",
    )
    assert result.exit_code == 0, result.output
    (row,) = json.loads(result.stdout)
    assert row["status"] == "ok", row
    assert [op.split("(")[0] for op in row["float_ops"]] == ["FULLY_CONNECTED"], row["float_ops"]
    assert any("logits" in layers for layers in row["float_layers"]), row["float_layers"]
