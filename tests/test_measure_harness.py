"""The measurement harness: figures checked against independent computations over the same interpreter."""
from __future__ import annotations

import math
import os

import numpy as np
import pytest

from tests.fixtures.tflite import CLASSIFIER_SAMPLES, ClassifierFiles, MultiFiles
from tflq.errors import DataError, InterpreterError, UsageError
from tflq.measure.harness import EvalSettings, Measurement, TfliteRun, evaluate, match_outputs, run_tflite
from tflq.measure.isolation import ABORT_HOOK_VARIABLE, ChildProcessFailed, call_isolated
from tflq.measure.latency import LatencyStats
from tflq.measure.metrics import output_accuracy, output_agreement
from tflq.measure.runner import auto_batch_size, dequantize, quantize
from tflq.measure.tflite_info import (
    TensorInfo,
    allocate,
    delegation_of,
    flatbuffer_tensor_specs,
    inspect_tflite,
    open_interpreter,
    read_flatbuffer,
    read_signature,
    tensor_specs,
)

FAST = EvalSettings(threads=1, runs=3, min_seconds=0.0, warmup_runs=1, warmup_seconds=0.0)
NO_LATENCY = EvalSettings(threads=1, runs=0)


def plain_loop_predictions(tflite_path, x: np.ndarray) -> np.ndarray:
    """The usual per-sample loop, written independently of tflq: float outputs for every sample of ``x``."""
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=str(tflite_path), num_threads=1)
    interpreter.allocate_tensors()
    input_detail = interpreter.get_input_details()[0]
    output_detail = interpreter.get_output_details()[0]
    outputs = []
    for sample in x:
        value = sample[None]
        if input_detail["dtype"] != np.float32:
            scale, zero_point = input_detail["quantization"]
            info = np.iinfo(input_detail["dtype"])
            value = np.clip(np.round(value / scale) + zero_point, info.min, info.max).astype(input_detail["dtype"])
        interpreter.set_tensor(input_detail["index"], value)
        interpreter.invoke()
        result = interpreter.get_tensor(output_detail["index"])[0]
        if output_detail["dtype"] != np.float32:
            scale, zero_point = output_detail["quantization"]
            result = (result.astype(np.float32) - zero_point) * scale
        outputs.append(result)
    return np.array(outputs)


# ---------------------------------------------------------------------------------------------------------------
# Signature, quantization parameters


def test_signature_has_names_dynamic_batch_and_quantization(classifier: ClassifierFiles) -> None:
    interpreter = open_interpreter(str(classifier.int8_io), threads=1)
    allocate(interpreter, "int8_io")
    signature = read_signature(interpreter)
    detail = interpreter.get_input_details()[0]
    (image,) = signature.inputs
    assert signature.key == "serving_default"
    assert image.name == "image"
    assert image.shape == (None, 8, 8, 1)
    assert image.dtype == "int8" and image.quantized
    assert image.scale == pytest.approx(detail["quantization"][0])
    assert image.zero_point == detail["quantization"][1]
    assert [output.name for output in signature.outputs] == ["output_0"]
    (spec,) = tensor_specs(signature.inputs)
    assert (spec.name, spec.shape, spec.dtype) == ("image", (None, 8, 8, 1), "float32")


@pytest.mark.parametrize("variant", ["float32", "int8_io", "uint8_io", "int16x8", "static_batch", "two_outputs"])
def test_specs_read_from_the_flatbuffer_equal_the_interpreters(classifier: ClassifierFiles, variant: str) -> None:
    path = str(getattr(classifier, variant))
    interpreter = open_interpreter(path, threads=1)
    signature = read_signature(interpreter)
    assert flatbuffer_tensor_specs(path) == (tensor_specs(signature.inputs), tensor_specs(signature.outputs))


def test_data_opened_by_the_parent_gives_the_same_run(classifier: ClassifierFiles, broken_files) -> None:
    from tflq.model.data import open_data

    inputs, outputs = flatbuffer_tensor_specs(str(classifier.int8_io))
    opened = open_data(str(classifier.data), inputs, outputs=outputs, role="evaluation")
    shared = run_tflite(str(classifier.int8_io), NO_LATENCY, str(classifier.data), opened=opened)
    own = run_tflite(str(classifier.int8_io), NO_LATENCY, str(classifier.data))
    np.testing.assert_array_equal(shared.predictions["output_0"], own.predictions["output_0"])
    np.testing.assert_array_equal(shared.labels["output_0"], own.labels["output_0"])
    assert flatbuffer_tensor_specs(str(broken_files["truncated"])) is None


def test_quantize_and_dequantize_use_the_tensor_scale_and_zero_point() -> None:
    tensor = TensorInfo("x", "x", 0, (None, 3), "int8", scales=(0.5,), zero_points=(-3,))
    values = np.array([[-100.0, 0.26, 1.25], [0.75, 63.0, 70.0]], dtype=np.float32)
    stored = quantize(values, tensor)
    # round(x / 0.5) + (-3), half away from zero, clipped to [-128, 127]
    assert stored.dtype == np.int8
    assert stored.tolist() == [[-128, -2, 0], [-1, 123, 127]]
    assert dequantize(stored, tensor).tolist() == [[-62.5, 0.5, 1.5], [1.0, 63.0, 65.0]]
    plain = TensorInfo("y", "y", 0, (None, 3), "float32")
    assert quantize(values, plain).dtype == np.float32


def test_int8_io_through_the_harness_matches_the_model_with_its_own_quantize_op(classifier: ClassifierFiles) -> None:
    """The int8-I/O model, fed by tflq's quantization, gives what the float-I/O variant (same calibration, with
    QUANTIZE/DEQUANTIZE ops inside) gives."""
    with_io = run_tflite(str(classifier.int8_io), NO_LATENCY, str(classifier.data))
    float_io = run_tflite(str(classifier.int8), NO_LATENCY, str(classifier.data))
    output = with_io.signature.outputs[0]
    np.testing.assert_allclose(
        with_io.predictions["output_0"], float_io.predictions["output_0"], atol=output.scale * 1.01, rtol=0
    )
    assert (with_io.predictions["output_0"].argmax(1) == float_io.predictions["output_0"].argmax(1)).mean() > 0.95


# ---------------------------------------------------------------------------------------------------------------
# Accuracy and agreement against independent computations


@pytest.mark.parametrize("variant", ["float32", "int8_io", "uint8_io", "int16x8"])
def test_accuracy_matches_a_plain_per_sample_loop(classifier: ClassifierFiles, variant: str) -> None:
    path = getattr(classifier, variant)
    (measurement,) = evaluate([str(path)], data=str(classifier.data), settings=NO_LATENCY)
    expected = plain_loop_predictions(path, classifier.x)
    expected_top1 = float(np.mean(expected.argmax(axis=1) == classifier.y))
    (accuracy,) = measurement.accuracy
    assert measurement.status == "ok", measurement.error
    assert measurement.samples == CLASSIFIER_SAMPLES
    assert accuracy.top1 == pytest.approx(expected_top1)
    top5 = np.argsort(-expected, axis=1)[:, :5]
    assert accuracy.top5 == pytest.approx(float(np.mean((top5 == classifier.y[:, None]).any(axis=1))))


def test_agreement_with_the_float32_variant_matches_numpy(classifier: ClassifierFiles) -> None:
    paths = [str(classifier.int8), str(classifier.float32)]
    int8, float32 = evaluate(paths, data=str(classifier.data), settings=NO_LATENCY)
    assert float32.agreement == () and float32.size_ratio == 1.0
    assert int8.reference == str(classifier.float32)
    reference = plain_loop_predictions(classifier.float32, classifier.x)
    quantized = plain_loop_predictions(classifier.int8, classifier.x)
    (agreement,) = int8.agreement
    noise = np.sum((reference - quantized) ** 2)
    assert agreement.sqnr_db == pytest.approx(10 * math.log10(np.sum(reference**2) / noise), rel=1e-4)
    assert agreement.max_abs_error == pytest.approx(np.abs(reference - quantized).max(), rel=1e-4)
    assert agreement.top1 == pytest.approx(np.mean(reference.argmax(1) == quantized.argmax(1)))
    cosines = [np.dot(a, b) / np.linalg.norm(a) / np.linalg.norm(b) for a, b in zip(reference, quantized)]
    assert agreement.cosine == pytest.approx(np.mean(cosines), rel=1e-5)


def test_sizes_and_ratio_come_from_the_files(classifier: ClassifierFiles) -> None:
    paths = [str(classifier.float32), str(classifier.dynamic)]
    float32, dynamic = evaluate(paths, settings=NO_LATENCY)
    assert float32.size_bytes == os.path.getsize(classifier.float32)
    assert dynamic.size_bytes == os.path.getsize(classifier.dynamic)
    assert dynamic.size_ratio == pytest.approx(dynamic.size_bytes / float32.size_bytes)


def test_metrics_classification_regression_and_bad_labels() -> None:
    logits = np.array([[0.1, 0.9, 0.0], [0.8, 0.1, 0.1], [0.2, 0.3, 0.5], [0.0, 0.0, 1.0]])
    labels = np.array([1, 0, 0, 2])
    result = output_accuracy("out", logits, labels)
    assert (result.kind, result.top1, result.top5) == ("classification", 0.75, None)
    one_hot = np.eye(3)[labels]
    assert output_accuracy("out", logits, one_hot).top1 == 0.75
    regression = output_accuracy("value", np.array([[1.0], [2.0]]), np.array([1.5, 2.0]))
    assert regression.kind == "regression"
    assert regression.mae == pytest.approx(0.25) and regression.rmse == pytest.approx(math.sqrt(0.125))
    with pytest.raises(DataError, match="3 labels for output 'out' but 4 samples"):
        output_accuracy("out", logits, labels[:3])
    with pytest.raises(DataError, match="range 0..7"):
        output_accuracy("out", logits, np.array([1, 0, 7, 2]))
    same = output_agreement("out", logits, logits)
    assert same.sqnr_db is None and same.cosine == pytest.approx(1.0) and same.top1 == 1.0


def test_multi_output_accuracy_is_per_output(multi: MultiFiles) -> None:
    (measurement,) = evaluate([str(multi.float32)], data=str(multi.data), settings=NO_LATENCY)
    assert measurement.status == "ok", measurement.error
    by_output = {result.output: result for result in measurement.accuracy}
    assert by_output["output_0"].kind == "classification" and by_output["output_0"].top1 == pytest.approx(1.0)
    assert by_output["output_1"].kind == "regression" and by_output["output_1"].mae == pytest.approx(0.5, abs=1e-4)
    accuracy = measurement.to_dict()["accuracy"]
    assert set(accuracy) == {"output_0", "output_1"}  # no unnested shortcut for several outputs


def test_reference_with_other_outputs_is_refused(classifier: ClassifierFiles) -> None:
    with pytest.raises(UsageError, match=r"has outputs \['output_0'\]; .*two_outputs.float32.tflite has outputs \['output_0', 'output_1'\]"):
        evaluate(
            [str(classifier.two_outputs)], data=str(classifier.unlabelled), reference=str(classifier.float32),
            settings=NO_LATENCY,
        )


def test_data_that_does_not_fit_the_reference_names_the_reference(classifier: ClassifierFiles, multi: MultiFiles) -> None:
    with pytest.raises(DataError, match=r"^reference .*classifier.float32.tflite: .*multi.npz: expected key 'x'"):
        evaluate([str(multi.float32)], data=str(multi.data), reference=str(classifier.float32), settings=NO_LATENCY)


def test_match_outputs_pairs_generic_names_by_position() -> None:
    from tflq.measure.harness import ReferenceRun
    from tflq.measure.tflite_info import Signature

    outputs = tuple(TensorInfo(f"output_{i}", "t", i, (None, 2), "float32") for i in range(2))
    run = TfliteRun("m.tflite", Signature("s", (), outputs), None, 1, None, {}, {}, 0, None, True)  # type: ignore[arg-type]
    assert match_outputs(run, ReferenceRun("r.keras", ("scores", "value"), {})) == {"output_0": "scores", "output_1": "value"}


# ---------------------------------------------------------------------------------------------------------------
# Batched and per-sample evaluation


def test_batched_evaluation_equals_per_sample(classifier: ClassifierFiles) -> None:
    one_by_one = run_tflite(str(classifier.float32), EvalSettings(threads=1, runs=0, batch_size=1), str(classifier.data))
    batched = run_tflite(str(classifier.float32), EvalSettings(threads=1, runs=0, batch_size=20), str(classifier.data))
    static = run_tflite(str(classifier.static_batch), EvalSettings(threads=1, runs=0, batch_size=20), str(classifier.data))
    assert batched.batched and batched.batch_size == 20  # 48 samples: batches of 20, 20 and a short 8
    assert not static.batched and static.batch_size == 1
    for run in (batched, static):
        assert run.samples == CLASSIFIER_SAMPLES
        np.testing.assert_allclose(run.predictions["output_0"], one_by_one.predictions["output_0"], rtol=1e-5, atol=1e-6)
        assert (run.predictions["output_0"].argmax(1) == one_by_one.predictions["output_0"].argmax(1)).all()


def test_int8_batched_evaluation_is_exact(classifier: ClassifierFiles) -> None:
    one_by_one = run_tflite(str(classifier.int8_io), EvalSettings(threads=1, runs=0, batch_size=1), str(classifier.data))
    batched = run_tflite(str(classifier.int8_io), EvalSettings(threads=1, runs=0, batch_size=16), str(classifier.data))
    np.testing.assert_array_equal(batched.predictions["output_0"], one_by_one.predictions["output_0"])


def test_predictions_do_not_depend_on_threads(classifier: ClassifierFiles) -> None:
    one = run_tflite(str(classifier.float32), EvalSettings(threads=1, runs=0), str(classifier.data))
    two = run_tflite(str(classifier.float32), EvalSettings(threads=2, runs=0), str(classifier.data))
    assert (one.evaluation_threads, two.evaluation_threads) == (1, 2)
    np.testing.assert_array_equal(one.predictions["output_0"], two.predictions["output_0"])


def test_evaluation_threads_default_to_the_idle_cores(monkeypatch: pytest.MonkeyPatch) -> None:
    import tflq.measure.settings as harness

    monkeypatch.setattr(harness, "machine_threads", lambda: 8)
    monkeypatch.setattr(harness.os, "getloadavg", lambda: (2.6, 2.0, 2.0))
    assert EvalSettings().evaluation_threads() == 5 and EvalSettings().resolved_threads == 8
    monkeypatch.setattr(harness.os, "getloadavg", lambda: (11.0, 2.0, 2.0))
    assert EvalSettings().evaluation_threads() == 1
    assert EvalSettings(threads=3).evaluation_threads() == 3


def test_sample_limit(classifier: ClassifierFiles) -> None:
    run = run_tflite(str(classifier.float32), EvalSettings(threads=1, runs=0, limit=10), str(classifier.data))
    assert run.samples == 10 and len(run.labels["output_0"]) == 10


def test_auto_batch_size_shrinks_for_large_inputs() -> None:
    assert auto_batch_size([(None, 8, 8, 1)]) == 256
    assert auto_batch_size([(None, 224, 224, 3)]) == 8
    assert auto_batch_size([(None, 224, 224, 3), (None, 224, 224, 3)]) == 4


def test_data_that_does_not_fit_names_input_expected_and_found(classifier: ClassifierFiles, tmp_path) -> None:
    wrong = tmp_path / "wrong.npz"
    np.savez(wrong, x=np.zeros((4, 9, 9, 1), np.float32))
    with pytest.raises(DataError, match=r"wrong\.npz: input 'image', sample 0: expected shape \(8, 8, 1\) per sample, found \(9, 9, 1\)"):
        run_tflite(str(classifier.float32), NO_LATENCY, str(wrong))


# ---------------------------------------------------------------------------------------------------------------
# Latency protocol


def test_latency_figures_are_consistent_and_runs_counted(classifier: ClassifierFiles) -> None:
    settings = EvalSettings(threads=1, runs=25, min_seconds=0.0, warmup_runs=4, warmup_seconds=0.0)
    latency = run_tflite(str(classifier.float32), settings).latency
    assert latency is not None
    assert latency.runs == 25 and latency.warmup_runs == 4
    assert 0 < latency.min_ms <= latency.p50_ms <= latency.p90_ms <= latency.p99_ms <= latency.max_ms
    assert latency.min_ms <= latency.mean_ms <= latency.max_ms
    assert latency.init_ms > 0 and latency.first_ms > 0
    assert latency.cv == pytest.approx(latency.std_ms / latency.mean_ms)


def test_min_seconds_keeps_timing_past_the_run_count(classifier: ClassifierFiles) -> None:
    import time

    settings = EvalSettings(threads=1, runs=2, min_seconds=0.15, warmup_runs=0, warmup_seconds=0.0)
    started = time.perf_counter()
    latency = run_tflite(str(classifier.float32), settings).latency
    assert time.perf_counter() - started >= 0.15
    assert latency.runs > 2 and latency.warmup_runs == 0


def test_latency_stats_from_known_timings() -> None:
    stats = LatencyStats.from_timings(init_ms=1.0, first_ms=2.0, timings_ms=[1.0, 2.0, 3.0, 4.0, 10.0], warmup_runs=1)
    assert (stats.min_ms, stats.p50_ms, stats.max_ms, stats.mean_ms) == (1.0, 3.0, 10.0, 4.0)
    assert stats.p90_ms == pytest.approx(7.6)
    assert stats.noisy  # std 3.16 / mean 4


def test_settings_are_validated() -> None:
    with pytest.raises(UsageError, match="threads must be at least 1"):
        EvalSettings(threads=0)
    with pytest.raises(UsageError, match="runs must be 0 or more"):
        EvalSettings(runs=-1)


# ---------------------------------------------------------------------------------------------------------------
# Delegation


def _delegate_nodes_without_fusion(path) -> int:
    """Independent count: with node fusion disabled every delegated op gets its own DELEGATE node."""
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=str(path), num_threads=1, experimental_disable_delegate_node_fusion=True)
    interpreter.allocate_tensors()
    return sum(node["op_name"] == "DELEGATE" for node in interpreter._get_ops_details())


@pytest.mark.parametrize("variant", ["float32", "dynamic", "int8", "int8_io", "uint8_io", "int16x8"])
def test_delegated_op_count_matches_unfused_delegation(classifier: ClassifierFiles, variant: str) -> None:
    path = str(getattr(classifier, variant))
    interpreter = open_interpreter(path, threads=1)
    allocate(interpreter, path)
    delegation = delegation_of(interpreter, enabled=True)
    assert delegation.delegated_ops == _delegate_nodes_without_fusion(path)
    assert delegation.total_ops == read_flatbuffer(path).subgraphs[0][1]
    if variant == "int16x8":
        assert delegation.delegated_ops == 0 and delegation.partitions == 0
        assert "CONV_2D" in delegation.undelegated_op_types
    else:
        assert delegation.delegated_ops >= 3  # conv, depthwise, fully connected
        assert "CONV_2D" not in delegation.undelegated_op_types


def test_no_xnnpack_delegates_nothing(classifier: ClassifierFiles) -> None:
    run = run_tflite(str(classifier.float32), EvalSettings(threads=1, runs=1, min_seconds=0, warmup_seconds=0, use_xnnpack=False))
    assert not run.delegation.enabled
    assert run.delegation.delegated_ops == 0 and run.delegation.partitions == 0


# ---------------------------------------------------------------------------------------------------------------
# Isolation and bad files


def test_a_crashing_child_becomes_that_rows_error(classifier: ClassifierFiles, monkeypatch) -> None:
    monkeypatch.setenv(ABORT_HOOK_VARIABLE, "classifier.int8.tflite")
    paths = [str(classifier.float32), str(classifier.int8), str(classifier.dynamic)]
    float32, int8, dynamic = evaluate(paths, data=str(classifier.data), settings=NO_LATENCY)
    assert int8.status == "error"
    assert int8.error == f"{classifier.int8}: the child process running it died (SIGABRT)"
    assert int8.size_bytes == os.path.getsize(classifier.int8)
    assert float32.status == "ok" and dynamic.status == "ok" and dynamic.agreement


def test_a_segfault_in_the_child_is_reported_with_its_signal() -> None:
    with pytest.raises(ChildProcessFailed, match="SIGSEGV"):
        call_isolated(_segfault, description="segfault")


def _segfault(*, report) -> None:
    import ctypes

    ctypes.string_at(0)


def test_child_errors_keep_their_class_and_message(classifier: ClassifierFiles) -> None:
    with pytest.raises(DataError, match="no such file"):
        call_isolated(run_tflite, str(classifier.float32), NO_LATENCY, "/nonexistent.npz", description="x")


@pytest.mark.parametrize("kind", ["random", "truncated", "empty"])
def test_broken_files_are_row_errors(broken_files, classifier: ClassifierFiles, kind: str) -> None:
    path = str(broken_files[kind])
    broken, good = evaluate([path, str(classifier.float32)], settings=NO_LATENCY)
    assert broken.status == "error" and broken.error.startswith(f"{path}: not a loadable TFLite model (")
    assert good.status == "ok"
    with pytest.raises(InterpreterError, match=f"{path}: "):
        read_flatbuffer(path)


def test_missing_file_is_a_usage_error(tmp_path) -> None:
    with pytest.raises(UsageError, match="nope.tflite: no such file"):
        evaluate([str(tmp_path / "nope.tflite")])


def test_measurement_to_dict_has_the_documented_keys(classifier: ClassifierFiles) -> None:
    measurement, _ = evaluate([str(classifier.int8), str(classifier.float32)], data=str(classifier.data), settings=FAST)
    row = measurement.to_dict()
    for key in ("size_bytes", "size_ratio", "threads", "status", "error", "latency_ms", "xnnpack", "accuracy", "agreement"):
        assert key in row
    assert set(row["latency_ms"]) >= {"mean", "std", "min", "p50", "p90", "p99", "cv", "init", "first"}
    assert set(row["xnnpack"]) >= {"enabled", "delegated_ops", "total_ops", "undelegated_op_types"}
    assert row["accuracy"]["top1"] == row["accuracy"]["output_0"]["top1"]
    assert set(row["agreement"]) >= {"top1", "sqnr_db", "max_abs_error", "cosine", "output_0"}
    error_row = Measurement("x.tflite", 10, error="x.tflite: boom").to_dict()
    assert error_row["status"] == "error" and error_row["latency_ms"] is None


# ---------------------------------------------------------------------------------------------------------------
# inspect


def test_inspect_reports_compute_kinds_weights_metadata_and_delegation(classifier: ClassifierFiles) -> None:
    int8 = inspect_tflite(str(classifier.int8_io), threads=1).to_dict()
    assert int8["inputs"][0]["dtype"] == "int8" and int8["inputs"][0]["zero_point"] is not None
    conv = next(stats for stats in int8["ops"] if stats["op_type"] == "CONV_2D")
    assert conv["compute"] == {"integer": 1}
    assert set(int8["weight_bytes"]) <= {"int8", "int32"} and int8["weight_bytes"]["int8"] > 0
    assert int8["metadata"]["CONVERSION_METADATA"]["optimization_modes"] == ["PTQ_FULL_INTEGER"]
    assert int8["metadata"]["min_runtime_version"].count(".") == 2
    assert int8["xnnpack"]["delegated_ops"] >= 3

    dynamic = inspect_tflite(str(classifier.dynamic), threads=1).to_dict()
    fully_connected = next(stats for stats in dynamic["ops"] if stats["op_type"] == "FULLY_CONNECTED")
    assert fully_connected["compute"] == {"hybrid": 1}
    assert dynamic["metadata"]["CONVERSION_METADATA"]["optimization_modes"] == ["PTQ_DYNAMIC_RANGE"]

    float32 = inspect_tflite(str(classifier.float32), threads=1).to_dict()
    assert float32["compute"].get("integer", 0) + float32["compute"].get("mixed", 0) <= 3  # shape ops only
    assert "float32" in float32["weight_bytes"] and "int8" not in float32["weight_bytes"]
    int16x8 = inspect_tflite(str(classifier.int16x8), threads=1).to_dict()
    assert int16x8["xnnpack"]["delegated_ops"] == 0
    quantize_op = next(stats for stats in int16x8["ops"] if stats["op_type"] == "QUANTIZE")
    assert quantize_op["compute"] == {"mixed": 1}
