"""tflq debug: per-op error named by Keras layers, the ranking, recovery in float, and selective quantization."""
from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import numpy as np
import pytest

from tests.cli_helpers import error_line, invoke
from tests.sample_paths import SAMPLES
from tests.tflite_helpers import run_tflite
from tflq.convert.session import ConvertOptions, ModelSession
from tflq.debug.layer_error import DebugOptions, debug_quantization
from tflq.debug.scoring import points

TRAIN = str(SAMPLES / "digits_train.npz")
TEST = str(SAMPLES / "digits_test.npz")
CNN = SAMPLES / "digits_cnn.keras"
BUDGET = 2.0  # accuracy points


def top1(tflite: Path | bytes, data: dict[str, np.ndarray]) -> float:
    """Top-1 accuracy (%) of a .tflite on the digits test set, with the per-sample loop of tests/tflite_helpers.py."""
    logits = next(iter(run_tflite(tflite, {"image": data["x"]}).values()))
    return float(np.mean(logits.argmax(axis=1) == data["y"]) * 100.0)


@pytest.fixture(scope="module")
def fragile_report(fragile_models):
    options = DebugOptions(convert=ConvertOptions(calibration=TRAIN), data=TEST)
    return debug_quantization(fragile_models["fragile"], options)


def test_debug_ranks_the_fragile_layer_first_and_leaving_it_in_float_recovers(fragile_report, digits_test):
    report = fragile_report
    assert report.groups[0].label == "logits"
    worst = report.ops[0]
    assert worst.layers == ("logits",) and worst.op_type == "FULLY_CONNECTED"
    # the masked logit hides the damage from the whole-tensor SQNR; the per-channel median shows it
    assert worst.channel_sqnr_db is not None and worst.channel_sqnr_db < 20.0
    assert worst.sqnr_db is not None and worst.sqnr_db > 40.0
    others = [op for op in report.ops if op.layers != ("logits",)]
    assert all(op.sensitivity > worst.sensitivity + 15.0 for op in others)

    check = report.accuracy
    assert check is not None and check.metric == "top-1 accuracy" and check.samples == 360
    assert check.drop > BUDGET  # plain int8 misses the budget...
    logits_in_float = check.recoveries[0]
    assert logits_in_float.group.label == "logits"
    assert points(check.float32, logits_in_float.score) <= BUDGET  # ...and the first-ranked layer in float fits it
    assert check.recovered_fraction(logits_in_float) > 0.9
    assert all(check.recovered_points(recovery) < 1.0 for recovery in check.recoveries[1:])
    # figures against an independent loop over the same data
    assert check.float32 * 100.0 == pytest.approx(top1(_convert(report.model, "float32"), digits_test), abs=1e-9)


def _convert(model: str, mode: str, **options) -> bytes:
    import tempfile

    from tflq.modes import Variant

    with tempfile.TemporaryDirectory() as folder:
        session = ModelSession(Path(model), ConvertOptions(modes=(mode,), calibration=TRAIN, **options), Path(folder))
        return session.convert_variant(Variant(mode))


def test_skip_layers_keeps_the_ranked_layer_in_float_and_brings_int8_within_budget(fragile_models, digits_test, tmp_path):
    model = fragile_models["fragile"]
    float_accuracy = top1(_convert(str(model), "float32"), digits_test)
    assert float_accuracy - top1(_convert(str(model), "int8"), digits_test) > BUDGET

    result = invoke("convert", model, "--mode", "int8", "--calib", TRAIN, "--skip-layers", "logits", "-o", tmp_path, "--json")
    assert result.exit_code == 0, result.output
    row = json.loads(result.stdout)[0]
    assert row["status"] == "ok"
    assert row["float_layers"] == ["logits"] and row["float_ops"][0].startswith("FULLY_CONNECTED(")
    assert float_accuracy - top1(Path(row["path"]), digits_test) <= BUDGET

    result = invoke("convert", model, "--mode", "int8", "--calib", TRAIN, "--skip-layers", "logits", "-o", tmp_path)
    assert result.exit_code == 0, result.output
    assert "1 op(s) left in float: logits" in result.output


def test_skip_ops_leaves_every_op_of_that_type_in_float(tmp_path):
    result = invoke("convert", CNN, "--mode", "int8", "--calib", TRAIN, "--skip-ops", "fully_connected", "-o", tmp_path, "--json")
    assert result.exit_code == 0, result.output
    row = json.loads(result.stdout)[0]
    assert row["float_layers"] == ["dense1", "logits"]
    assert len(row["float_ops"]) == 2 and all(op.startswith("FULLY_CONNECTED(") for op in row["float_ops"])


def test_debug_cli_formats_and_plot(fragile_models, tmp_path):
    model = fragile_models["fragile"]
    common = [model, "--calib", TRAIN, "--data", TEST, "--layer-samples", "50"]
    result = invoke("debug", *common, "--format", "json", "--plot", tmp_path / "sqnr.png")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["ranking"][0] == "logits"
    first = report["ops"][0]
    assert first["rank"] == 1 and first["layers"] == ["logits"] and first["op"] == "FULLY_CONNECTED"
    for key in ("sqnr_db", "channel_sqnr_db", "accumulated_sqnr_db", "rmse_per_scale", "mean_error", "max_abs_error",
                "scale", "zero_point", "tensor", "position", "weights"):
        assert key in first
    assert set(first["weights"]) == {"sqnr_db", "min_channel_sqnr_db", "channels"}
    assert report["accuracy"]["in_float"][0]["label"] == "logits"
    assert (tmp_path / "sqnr.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    result = invoke("debug", *common, "--format", "csv", "-o", tmp_path / "report.csv")
    assert result.exit_code == 0, result.output
    rows = list(csv.DictReader(io.StringIO((tmp_path / "report.csv").read_text())))
    assert rows[0]["label"] == "logits" and rows[0]["rank"] == "1" and float(rows[0]["recovered_points"]) > BUDGET

    result = invoke("debug", *common, "--format", "md", "--top", "1")
    assert result.exit_code == 0, result.output
    assert "| 1 | logits | FULLY_CONNECTED |" in result.output

    result = invoke("debug", *common, "--top", "1")
    assert result.exit_code == 0, result.output
    assert "most sensitive first" in result.output and "logits" in result.output


def test_debug_without_data_uses_calibration_samples(tmp_path):
    result = invoke("debug", CNN, "--calib", TRAIN, "--calib-samples", "40", "--layer-samples", "20", "--format", "json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["samples"] == 20 and report["accuracy"] is None
    assert "(calibration)" in report["sample_source"]


def test_layer_errors_match_tensorflows_quantization_debugger():
    """Our debug model and statistics give the numbers tf.lite.experimental.QuantizationDebugger gives."""
    import tensorflow as tf

    from tflq._tf import calibrated as _calibrated
    from tflq.debug.layer_error import _DebugRun

    options = ConvertOptions(modes=("int8",), calibration=TRAIN, calibration_samples=50)
    import tempfile

    with tempfile.TemporaryDirectory() as folder:
        session = ModelSession(CNN, options, Path(folder))
        samples = session.calibration_samples()
        converter = session.new_converter()
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = lambda: iter(samples)
        public = tf.lite.experimental.QuantizationDebugger(
            converter=converter, debug_dataset=lambda: ([sample["image"]] for sample in samples[:20])
        )
        public.run()
        assert bytes(public.calibrated_model) == session.calibrated_model()
        ours = _DebugRun(_calibrated.debug_model(session.calibrated_model(), per_tensor=False, whole_model=False))
        for sample in samples[:20]:
            ours.feed(sample)
    assert len(ours.verify) == len(public.layer_statistics) == 6
    for op in ours.verify:
        name = ours.tensors[op["outputs"][0]]["name"]
        stats = ours.stats[op["index"]]
        expected = public.layer_statistics[name]
        assert stats.noise / stats.count == pytest.approx(expected["mean_squared_error"], rel=1e-5, abs=1e-12)
        assert stats.error_sum / stats.count == pytest.approx(expected["mean_error"], rel=1e-4, abs=1e-9)
        assert stats.max_abs >= expected["max_abs_error"] * (1 - 1e-5)


@pytest.mark.parametrize(
    "model, expected",
    [
        ("digits_cnn.keras", ["conv1+relu1", "dwconv2+bn2+relu2", "pool2", "flatten", "dense1", "logits"]),
        ("digits_cnn.h5", ["conv1+relu1", "dwconv2+bn2+relu2", "pool2", "flatten", "dense1", "logits"]),
        ("digits_cnn_savedmodel", ["conv1+relu1", "dwconv2+bn2+relu2", "pool2", "flatten", "dense1", "logits"]),
        ("digits_multi_io.keras", ["conv1", "pool1", "flatten", "image_features", "row_features", "concat", "shared",
                                   "digit", "ink_features", "ink"]),
    ],
    ids=["keras3-fused", "tf_keras-h5", "savedmodel-no-keras", "multi-io"],
)
def test_ops_are_named_after_their_keras_layers(model: str, expected: list[str], tmp_path):
    from tflq.convert.layer_map import read_ops
    from tflq.modes import Variant

    session = ModelSession(SAMPLES / model, ConvertOptions(), tmp_path)
    ops = read_ops(session.convert_variant(Variant("float32")), session.exported)
    labels = [op.label for op in ops if op.float_output]
    assert sorted(labels) == sorted(expected)
    if model != "digits_multi_io.keras":
        assert labels == expected


@pytest.mark.filterwarnings("ignore:.*experimental_preserve_all_tensors")
def test_layer_names_that_collide_with_tensorflow_scope_suffixes_map_back_numerically(tmp_path):
    """Layers named dense, dense_1, dense_1_1 (TF makes scopes dense_1, dense_1_2, dense_1_1_2) and a nested
    model: every FULLY_CONNECTED op's output equals the Keras output of the layer it is named after."""
    import keras
    from ai_edge_litert.interpreter import Interpreter

    from tflq.convert.layer_map import read_ops
    from tflq.modes import Variant

    keras.utils.set_random_seed(1)
    inner_input = keras.Input((6,), name="inner_in")
    block = keras.Model(inner_input, keras.layers.Dense(6, name="dense")(inner_input), name="block")
    x = keras.Input((6,), name="x")
    outputs = {"dense": keras.layers.Dense(6, name="dense")(x)}
    outputs["dense_1"] = keras.layers.Dense(6, name="dense_1")(outputs["dense"])
    outputs["block/dense"] = block(outputs["dense_1"])
    outputs["dense_1_1"] = keras.layers.Dense(6, name="dense_1_1")(outputs["block/dense"])
    outputs["head"] = keras.layers.Dense(3, name="head")(outputs["dense_1_1"])
    model = keras.Model(x, outputs["head"])
    path = tmp_path / "collide.keras"
    model.save(path)

    session = ModelSession(path, ConvertOptions(), tmp_path / "work")
    content = session.convert_variant(Variant("float32"))
    ops = [op for op in read_ops(content, session.exported) if op.op_type == "FULLY_CONNECTED"]
    assert [op.label for op in ops] == ["dense", "dense_1", "block/dense", "dense_1_1", "head"]

    probe = np.random.default_rng(0).random((1, 6), dtype=np.float32)
    interpreter = Interpreter(model_content=content, experimental_preserve_all_tensors=True)
    interpreter.allocate_tensors()
    interpreter.set_tensor(interpreter.get_input_details()[0]["index"], probe)
    interpreter.invoke()
    by_name = {detail["name"]: detail["index"] for detail in interpreter.get_tensor_details()}
    for op in ops:
        keras_output = keras.Model(x, outputs[op.label])(probe)
        found = interpreter.get_tensor(by_name[op.tensor])
        np.testing.assert_allclose(found, np.asarray(keras_output), rtol=1e-5, atol=1e-6)


# ---------------------------------------------------------------------------------------------------------------
# Error paths


@pytest.mark.parametrize(
    "args, fragments",
    [
        (["--skip-layers", "logit"], ["--skip-layers: unknown layer 'logit'", "did you mean 'logits'?",
                                      "layers with ops: conv1, relu1, dwconv2, bn2, relu2, pool2, flatten, dense1, logits"]),
        (["--skip-layers", "dense1,nothing_like_it"], ["unknown layer 'nothing_like_it'; layers with ops: conv1"]),
        (["--skip-layers", "image"], ["layer 'image' has no op of its own in the TFLite model", "layers with ops: conv1"]),
        (["--skip-ops", "CONV2D"], ["--skip-ops: the model has no 'CONV2D' op", "did you mean 'CONV_2D'?",
                                    "its ops: CONV_2D, DEPTHWISE_CONV_2D, MAX_POOL_2D, RESHAPE, FULLY_CONNECTED"]),
        (["--skip-ops", "SOFTMAX"], ["the model has no 'SOFTMAX' op; its ops: CONV_2D"]),
    ],
    ids=["unknown-layer", "unknown-layer-no-match", "layer-without-ops", "unknown-op", "op-not-in-model"],
)
def test_unknown_skip_names_are_usage_errors_listing_the_valid_ones(args, fragments, tmp_path):
    out = tmp_path / "out"
    result = invoke("convert", CNN, "--mode", "int8", "--calib", TRAIN, "-o", out, *args)
    assert result.exit_code == 2, result.output
    message = error_line(result)
    for fragment in fragments:
        assert fragment in message, (fragment, message)
    assert not out.exists() or not any(out.iterdir())


def test_skip_layers_without_int8_is_a_usage_error(tmp_path):
    result = invoke("convert", CNN, "--mode", "float16", "--skip-layers", "dense1", "-o", tmp_path)
    assert result.exit_code == 2, result.output
    assert error_line(result) == (
        "Error: --skip-layers applies to mode int8, int8-weights, int4-weights, dynamic-int4, int4x8 (selective "
        "quantization); add one of them with --mode"
    )


def test_strict_mode_still_catches_other_float_ops_when_layers_are_skipped(tmp_path):
    """A model with SIN (no int8 kernel): skipping another layer does not excuse SIN; skipping SIN's layer does."""
    import keras

    @keras.saving.register_keras_serializable(package="tflq_debug_tests")
    class Sine(keras.layers.Layer):
        def call(self, x):
            return keras.ops.sin(x)

    inputs = keras.Input((16,), name="x")
    hidden = Sine(name="sine")(keras.layers.Dense(16, name="d1")(inputs))
    path = tmp_path / "sine.keras"
    keras.Model(inputs, keras.layers.Dense(4, name="out")(hidden)).save(path)
    calib = tmp_path / "calib.npz"
    np.savez(calib, x=np.random.default_rng(0).random((20, 16), dtype=np.float32))

    result = invoke("convert", path, "--mode", "int8", "--calib", calib, "--skip-layers", "d1", "-o", tmp_path / "a", "--json")
    assert result.exit_code == 1, result.output
    row = json.loads(result.stdout)[0]
    assert row["status"] == "error"
    assert "1 op(s) besides the ones asked for have no int8 kernel: SIN x1 (layers: sine)" in row["error"]
    assert "--skip-layers d1,sine" in row["error"]
    assert "FULLY_CONNECTED" not in row["error"]

    result = invoke("convert", path, "--mode", "int8", "--calib", calib, "--skip-layers", "sine", "-o", tmp_path / "b", "--json")
    assert result.exit_code == 0, result.output
    row = json.loads(result.stdout)[0]
    assert row["float_layers"] == ["sine"]


def test_debug_reference_without_data_is_a_usage_error():
    result = invoke("debug", CNN, "--calib", TRAIN, "--reference", CNN)
    assert result.exit_code == 2, result.output
    assert "--reference needs --data" in error_line(result)


def test_debug_without_calibration_data_is_a_usage_error():
    result = invoke("debug", CNN)
    assert result.exit_code == 2, result.output
    assert "need calibration data: pass --calib DATA" in error_line(result)


def test_debug_plot_to_an_unwritable_path_is_a_usage_error(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    result = invoke("debug", CNN, "--calib", TRAIN, "--calib-samples", "20", "--layer-samples", "10", "--plot", blocker / "x.png")
    assert result.exit_code == 2, result.output
    assert "--plot" in error_line(result) and "cannot write the PNG" in error_line(result)
