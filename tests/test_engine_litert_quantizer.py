"""The litert-quantizer engine under the one registry: modes int8-weights, int4-weights, dynamic-int4, int4x8 and
recipe, with the settings block_size, hadamard and recipe.

Real TensorFlow, LiteRT and LiteRT Quantizer on the digits CNN. Measured on the development machine (360 test
images): float32 98.61 %, int8-weights 98.61 %, int4-weights, dynamic-int4 and int4x8 98.33 %, dynamic-int4 with
blocks of 32 98.61 %; the margins below (1.5 points for the 4-bit modes, 0.5 for int8 weights) leave room for
other CPUs' kernels without letting a broken quantization (near 10 %, chance) through.
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
ENGINE_MODES = ("int8-weights", "int4-weights", "dynamic-int4", "int4x8")


def _top1(path: Path) -> float:
    with np.load(TEST) as archive:
        x, y = archive["x"].astype("float32"), archive["y"]
    (scores,) = run_tflite(path, {"image": x}).values()
    return float(np.mean(scores.argmax(axis=-1) == y))


def _rows(result) -> dict[str, dict]:
    assert result.exit_code == 0, result.output
    return {row["mode"]: row for row in json.loads(result.stdout)}


@pytest.fixture(scope="module")
def engine_conversion(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict]:
    """float32 and every named engine mode of the digits CNN, through ``tflq convert --json``."""
    out = tmp_path_factory.mktemp("engine")
    modes = [arg for mode in ("float32", *ENGINE_MODES) for arg in ("--mode", mode)]
    return _rows(convert(CNN, *modes, "--calib", TRAIN, "--calib-samples", "50", "--json", out=out))


@pytest.mark.slow
def test_every_engine_mode_converts_loads_and_runs(engine_conversion: dict[str, dict]) -> None:
    for mode in ENGINE_MODES:
        row = engine_conversion[mode]
        assert row["status"] == "ok", row
        assert Path(row["path"]).name == f"digits_cnn.{mode}.tflite"
        (scores,) = run_tflite(Path(row["path"]), {"image": np.zeros((1, 8, 8, 1), "float32")}).values()
        assert scores.shape == (1, 10) and np.isfinite(scores).all()


@pytest.mark.slow
def test_engine_sizes_are_smaller_than_float32_in_the_expected_order(engine_conversion: dict[str, dict]) -> None:
    size = {mode: row["size_bytes"] for mode, row in engine_conversion.items()}
    assert size["int8-weights"] < size["float32"] / 2
    for int4 in ("int4-weights", "dynamic-int4", "int4x8"):
        assert size[int4] < size["int8-weights"], size
    assert size["dynamic-int4"] <= size["int4-weights"], size  # no dequantize ops in front of the weights


@pytest.mark.slow
def test_engine_accuracy_stays_near_float32(engine_conversion: dict[str, dict]) -> None:
    top1 = {mode: _top1(Path(row["path"])) for mode, row in engine_conversion.items()}
    assert top1["float32"] > 0.95, top1
    assert abs(top1["int8-weights"] - top1["float32"]) <= 0.005, top1
    for int4 in ("int4-weights", "dynamic-int4", "int4x8"):
        assert top1[int4] >= top1["float32"] - 0.015, top1


@pytest.mark.slow
def test_int4x8_keeps_float_io_and_lists_the_ops_left_in_float(engine_conversion: dict[str, dict]) -> None:
    from ai_edge_litert.interpreter import Interpreter

    row = engine_conversion["int4x8"]
    runner = Interpreter(model_path=row["path"]).get_signature_runner()
    assert {np.dtype(d["dtype"]).name for d in runner.get_input_details().values()} == {"float32"}
    assert {np.dtype(d["dtype"]).name for d in runner.get_output_details().values()} == {"float32"}
    # LiteRT Quantizer's static int4 policy covers CONV_2D and FULLY_CONNECTED: the depthwise convolution stays float
    assert [op.split("(")[0] for op in row["float_ops"]] == ["DEPTHWISE_CONV_2D"], row["float_ops"]


@pytest.mark.slow
def test_blockwise_and_hadamard_give_other_models_than_channelwise(
    engine_conversion: dict[str, dict], tmp_path: Path
) -> None:
    channelwise = engine_conversion["dynamic-int4"]
    blockwise = _rows(convert(CNN, "--mode", "dynamic-int4", "--block-size", "32", "--json", out=tmp_path / "b"))
    hadamard = _rows(convert(CNN, "--mode", "dynamic-int4", "--hadamard", "--json", out=tmp_path / "h"))
    for other in (blockwise["dynamic-int4"], hadamard["dynamic-int4"]):
        assert other["status"] == "ok", other
        assert other["size_bytes"] != channelwise["size_bytes"]
    assert _top1(Path(blockwise["dynamic-int4"]["path"])) >= _top1(Path(channelwise["path"])) - 0.015


@pytest.mark.slow
def test_a_block_size_the_model_cannot_take_fails_that_variant_naming_the_tensor(tmp_path: Path) -> None:
    result = convert(CNN, "--mode", "dynamic-int4", "--block-size", "64", out=tmp_path)
    assert result.exit_code == 1, result.output
    assert "not divisible by block size 64" in result.output
    assert not (tmp_path / "digits_cnn.dynamic-int4.tflite").exists()


@pytest.mark.slow
def test_mode_recipe_runs_a_recipe_file(engine_conversion: dict[str, dict], tmp_path: Path) -> None:
    from tflq._tf import litert_quantizer as _lq

    recipe = tmp_path / "recipe.json"
    recipe.write_text(json.dumps(_lq.named_recipe("dynamic", 4)))
    rows = _rows(convert(CNN, "--mode", "recipe", "--recipe", str(recipe), "--json", out=tmp_path / "out"))
    assert rows["recipe"]["status"] == "ok"
    assert rows["recipe"]["sha256"] == engine_conversion["dynamic-int4"]["sha256"]  # the same recipe, the same model


@pytest.mark.slow
def test_engine_modes_through_a_batch_file(tmp_path: Path) -> None:
    config = tmp_path / "batch.yaml"
    config.write_text(
        f"output_dir: {tmp_path / 'build'}\n"
        "models:\n"
        f"  - name: cnn\n    path: {CNN}\n    modes: [float32, int8-weights, dynamic-int4, int4x8]\n"
        f"    block_size: 32\n    calibration: {{data: {TRAIN}, samples: 50}}\n"
        f"    evaluation: {{data: {TEST}}}\n"
    )
    result = invoke("run", config)
    assert result.exit_code == 0, result.output
    rows = {row["mode"]: row for row in json.loads((tmp_path / "build" / "report.json").read_text())}
    assert set(rows) == {"float32", "int8-weights", "dynamic-int4", "int4x8"}
    assert all(row["status"] == "ok" for row in rows.values()), rows
    for mode in ("int8-weights", "dynamic-int4", "int4x8"):
        assert rows[mode]["size_bytes"] < rows["float32"]["size_bytes"]
        top1, baseline = rows[mode]["accuracy"]["top1"], rows["float32"]["accuracy"]["top1"]
        assert top1 >= baseline - 0.015, (mode, top1, baseline)


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ('[{"regex": ".*",', "recipe.json:1: not valid JSON"),
        ('{"regex": ".*"}', "expected a non-empty JSON list of recipe entries"),
        ('[{"regex": ".*"}]', "entry 1: expected an object with operation, algorithm_key, op_config"),
        ('[{"regex": ".*", "operation": "*", "algorithm_key": "min_max_uniform_quantize", "op_config": {}}]',
         "not a LiteRT Quantizer recipe: missing key 'weight_tensor_config'"),
    ],
    ids=["invalid-json", "not-a-list", "missing-keys", "rejected-by-the-quantizer"],
)
def test_a_bad_recipe_file_is_one_error_line_before_the_export(tmp_path: Path, text: str, fragment: str) -> None:
    recipe = tmp_path / "recipe.json"
    recipe.write_text(text)
    result = convert(CNN, "--mode", "recipe", "--recipe", str(recipe), out=tmp_path / "out")
    assert_usage_error(result, str(recipe), fragment)
    assert not (tmp_path / "out").exists()  # refused before the output folder and the export


def test_mode_recipe_without_a_recipe_file_is_refused(tmp_path: Path) -> None:
    missing = tmp_path / "missing.json"
    assert_usage_error(convert(CNN, "--mode", "recipe", out=tmp_path / "a"), "mode recipe needs a recipe")
    assert_usage_error(
        convert(CNN, "--mode", "recipe", "--recipe", str(missing), out=tmp_path / "b"), "no such recipe file"
    )


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["--mode", "int4-weights", "--block-size", "32"],
         "--block-size does not apply to mode(s) int4-weights; it applies to dynamic-int4"),
        (["--mode", "int8", "--hadamard"], "--hadamard does not apply to mode(s) int8; it applies to dynamic-int4"),
        (["--mode", "dynamic-int4", "--recipe", "r.json"], "--recipe does not apply to mode(s) dynamic-int4"),
        (["--mode", "dynamic-int4", "--block-size", "48"], "'48' is not one of 32, 64, 128, 256"),
        (["--mode", "dynamic-int4", "--block-size", "32", "--hadamard"], "--hadamard takes channelwise weights only"),
    ],
    ids=["block-size-unread", "hadamard-unread", "recipe-unread", "block-size-value", "hadamard-blockwise"],
)
def test_engine_settings_are_refused_where_they_do_not_apply(tmp_path: Path, args: list[str], fragment: str) -> None:
    assert_usage_error(convert(CNN, *args, out=tmp_path / "out"), fragment)


def test_block_size_is_in_the_cache_key_of_dynamic_int4_only(tmp_path: Path) -> None:
    from tflq.batch.config import load_config
    from tflq.batch.jobs import conversion_key
    from tflq.errors import ConfigError
    from tflq.modes import Variant

    config = tmp_path / "batch.yaml"
    config.write_text(
        f"models:\n  - name: cnn\n    path: {CNN}\n    modes: [int8, int8-weights, dynamic-int4]\n"
        f"    block_size: 32\n    calibration: {{data: {TRAIN}}}\n"
    )
    (job,) = load_config(config).models
    assert job.convert.block_size == 32
    other = replace(job, convert=replace(job.convert, block_size=None))
    assert conversion_key(job, Variant("dynamic-int4"), "m") != conversion_key(other, Variant("dynamic-int4"), "m")
    for unread in ("int8", "int8-weights"):
        assert conversion_key(job, Variant(unread), "m") == conversion_key(other, Variant(unread), "m")
    config.write_text(config.read_text().replace("block_size: 32", "block_size: 48"))
    with pytest.raises(ConfigError, match=r"batch.yaml:5: block_size: expected one of 32, 64, 128, 256 or null"):
        load_config(config)


def test_recipe_content_is_in_the_cache_key_of_mode_recipe(tmp_path: Path) -> None:
    from tflq.batch.config import load_config
    from tflq.batch.jobs import conversion_key
    from tflq.modes import Variant

    (tmp_path / "r.json").write_text("[]")
    config = tmp_path / "batch.yaml"
    config.write_text(f"models:\n  - name: cnn\n    path: {CNN}\n    modes: [float32, recipe]\n    recipe: r.json\n")
    (job,) = load_config(config).models
    assert job.convert.recipe == str(tmp_path / "r.json")  # resolved against the batch file's folder
    before = conversion_key(job, Variant("recipe"), "m")
    (tmp_path / "r.json").write_text("[ ]")
    assert conversion_key(job, Variant("recipe"), "m") != before
    assert conversion_key(job, Variant("float32"), "m") == conversion_key(job, Variant("float32"), "m")
    other_samples = replace(job, convert=replace(job.convert, calibration_samples=7))  # a recipe may calibrate
    assert conversion_key(other_samples, Variant("recipe"), "m") != conversion_key(job, Variant("recipe"), "m")
    assert conversion_key(other_samples, Variant("float32"), "m") == conversion_key(job, Variant("float32"), "m")


def test_modes_json_names_engine_weight_bits_activations_and_granularities() -> None:
    result = invoke("modes", "--json")
    assert result.exit_code == 0, result.output
    rows = {row["name"]: row for row in json.loads(result.output)}
    expected = {
        "float32": ("converter", 32, "float32", ["channelwise"]),
        "float16": ("converter", 16, "float32", ["channelwise"]),
        "dynamic": ("converter", 8, "dynamic", ["channelwise"]),
        "int8": ("converter", 8, "int8", ["channelwise"]),
        "16x8": ("converter", 8, "int16", ["channelwise"]),
        "int8-weights": ("litert-quantizer", 8, "float32", ["channelwise"]),
        "int4-weights": ("litert-quantizer", 4, "float32", ["channelwise"]),
        "dynamic-int4": ("litert-quantizer", 4, "dynamic", ["channelwise", "blockwise"]),
        "int4x8": ("litert-quantizer", 4, "int8", ["channelwise"]),
        "recipe": ("litert-quantizer", None, None, ["channelwise"]),
    }
    for name, (engine, bits, activations, granularities) in expected.items():
        row = rows[name]
        assert (row["engine"], row["weights"], row["activations"], row["granularities"]) == (
            engine, bits, activations, granularities
        ), name
        assert row["io_types"] == ["float32"] or name in ("int8", "16x8", "int4x8")
    assert rows["int4x8"]["calibrated"] is True and rows["dynamic-int4"]["calibrated"] is False


def test_engine_modes_are_opt_in() -> None:
    from tflq.modes import DEFAULT_MODES, MODES

    assert set(DEFAULT_MODES) == {"float32", "float16", "dynamic", "int8", "16x8"}
    assert all(MODES[name].engine == "converter" for name in DEFAULT_MODES)
