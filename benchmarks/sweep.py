"""Benchmark: the 7 MobileNetV2 variants the naive tutorial way against ``tflq`` (``convert_model``).

Usage::

    python benchmarks/sweep.py [--samples 100] [--repeat 1] [--size 96] [--alpha 0.35] [--json FILE]

What is measured, in one run:

* **naive**: the usual tutorial code. For each variant (float32, float16, dynamic, int8 with float32/int8/uint8
  I/O, 16x8) a new ``tf.lite.TFLiteConverter.from_keras_model(model)`` configured for it (a representative dataset
  for int8/16x8, so every one of them calibrates), ``convert()``, write the file, then the check tflq also makes:
  load in the LiteRT ``Interpreter``, ``allocate_tensors``, one ``invoke``. A variant that fails is recorded and
  the next one runs.
* **tflq**: ``convert_model`` on the same ``.keras`` file and ``.npz`` data, asked for the same 7 variants (the
  CLI equivalent is ``tflq convert MODEL --all-modes --io-type float32 --io-type int8 --io-type uint8
  --calib DATA``).

Each way runs in its own fresh child process (this script with a hidden ``--child``), so both pay the TensorFlow
import and neither profits from the other's warm caches. Both children import tensorflow, keras and LiteRT before
the clock starts; the "convert" time runs from just before the model is loaded to the end, the "process" time
is the whole child as the parent sees it. Peak RSS is the child's ``ru_maxrss`` from ``os.wait4`` (and the
child's own ``VmHWM``, which should agree; ``ru_maxrss`` is that of the largest single process, so a worker process
of tflq's does not add to it); "tree" is the peak of the summed ``VmRSS`` of the child and all its descendants,
sampled every 20 ms (what the machine must hold at once). With ``--repeat N`` the pair runs N times, alternating
which goes first; the ratio uses the median of each way, and the target is a ratio <= 0.20 (issue 11).

The model is ``keras.applications.MobileNetV2(weights=None)`` with a fixed seed and no final softmax
(``classifier_activation=None``): random weights give a near-uniform softmax that quantizes to all zeros, which
would make the numerical check below vacuous; logits make it meaningful. The calibration data is N uniform random
images in [-1, 1] with a fixed seed, saved as ``.npz`` (key ``x``). The BatchNormalization statistics are
re-estimated on one batch so activations keep their scale; with the raw initial statistics 16x8 converts and then
fails at ``allocate_tensors`` (DEPTHWISE_CONV_2D), with the re-estimated ones it runs. Either way the benchmark
records what happened and carries on.

Numerical check: tflq quantizes int8 and 16x8 through a calibrate-once private path (``tflq/_tf/calibrated.py``;
``tests/test_convert_calibrate_once.py`` checks those files are byte-identical to the public converter's), so after
timing, every variant both ways produced is run on the same few samples (integer inputs quantized with the model's
own input parameters, integer outputs dequantized) and compared: the model's input/output dtypes, and the max abs
output difference (for int8 also in output quantization steps). For scale, the naive variant's difference from
the naive float32 model is shown beside it. Exit status 1 when a variant's I/O dtypes differ between the two ways,
or an int8 variant's outputs differ by more than one quantization step (or it was not produced by both).

This file is not a test (pytest collects ``tests/`` only).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))  # benchmark the tflq next to this script, not whatever is installed

WAYS = ("naive", "tflq")
# The 7 variants: (label, mode, I/O type). Labels follow tflq's file names (<mode>[.<io>]).
VARIANTS = (
    ("float32", "float32", "float32"),
    ("float16", "float16", "float32"),
    ("dynamic", "dynamic", "float32"),
    ("int8", "int8", "float32"),
    ("int8.int8", "int8", "int8"),
    ("int8.uint8", "int8", "uint8"),
    ("16x8", "16x8", "float32"),
)
INT8_LABELS = ("int8", "int8.int8", "int8.uint8")
TARGET_RATIO = 0.20  # issue 11: the 7-variant sweep at <= 0.20x of the naive script
CHECK_SAMPLES = 8


# --------------------------------------------------------------------------------------------------- children


def _child_imports() -> Any:
    """Import what both ways need before the clock starts (both children pay the same imports)."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import keras  # noqa: F401
    import tensorflow as tf
    from ai_edge_litert.interpreter import Interpreter  # noqa: F401

    tf.get_logger().setLevel("ERROR")
    return tf


def _peak_rss_mb_self() -> float | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def _last_line(error: BaseException) -> str:
    lines = [line.strip() for line in str(error).strip().splitlines() if line.strip()]
    for line in lines:
        if "error:" in line.lower():
            return line[:300]
    return (lines[-1] if lines else type(error).__name__)[:300]


def _run_once(tflite: bytes, sample: np.ndarray) -> None:
    """The tutorial's "does it run" check: load, allocate, one invoke."""
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_content=tflite)
    interpreter.allocate_tensors()
    detail = interpreter.get_input_details()[0]
    interpreter.set_tensor(detail["index"], _quantize_input(sample, detail))
    interpreter.invoke()


def _quantize_input(sample: np.ndarray, detail: dict[str, Any]) -> np.ndarray:
    dtype = np.dtype(detail["dtype"])
    if dtype.kind in "iu":
        scale, zero_point = detail["quantization"]
        info = np.iinfo(dtype)
        return np.clip(np.round(sample / scale + zero_point), info.min, info.max).astype(dtype)
    return sample.astype(dtype)


def child_naive(model_path: Path, data_path: Path, out_dir: Path) -> dict[str, Any]:
    """The tutorial way: one from_keras_model converter per variant, each calibrating on its own."""
    tf = _child_imports()
    import keras

    start = time.perf_counter()
    model = keras.models.load_model(model_path)
    images = np.load(data_path)["x"]
    load_seconds = time.perf_counter() - start

    def representative_dataset() -> Any:
        for image in images:
            yield [image[np.newaxis].astype(np.float32)]

    io_dtypes = {"float32": tf.float32, "int8": tf.int8, "uint8": tf.uint8}
    variants = []
    for label, mode, io_type in VARIANTS:
        begin = time.perf_counter()
        record: dict[str, Any] = {"label": label, "status": "ok", "error": None}
        converted = None
        try:
            converter = tf.lite.TFLiteConverter.from_keras_model(model)
            if mode != "float32":
                converter.optimizations = [tf.lite.Optimize.DEFAULT]
            if mode == "float16":
                converter.target_spec.supported_types = [tf.float16]
            if mode == "int8":
                converter.representative_dataset = representative_dataset
                converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
                converter.inference_input_type = io_dtypes[io_type]
                converter.inference_output_type = io_dtypes[io_type]
            if mode == "16x8":
                converter.representative_dataset = representative_dataset
                converter.target_spec.supported_ops = [
                    tf.lite.OpsSet.EXPERIMENTAL_TFLITE_BUILTINS_ACTIVATIONS_INT16_WEIGHTS_INT8
                ]
            converted = converter.convert()
            (out_dir / f"model.{label}.tflite").write_bytes(converted)
        except Exception as error:  # keep going: the next variant still runs
            record.update(status="error", error=f"convert: {_last_line(error)}")
        converted_at = time.perf_counter()
        if converted is not None:
            try:
                _run_once(converted, images[0][np.newaxis])
            except Exception as error:  # e.g. 16x8 DEPTHWISE_CONV_2D at allocate_tensors
                record.update(status="error", error=f"run: {_last_line(error)}")
                (out_dir / f"model.{label}.tflite").unlink(missing_ok=True)
        end = time.perf_counter()
        record.update(
            seconds=end - begin,
            convert_seconds=converted_at - begin,
            verify_seconds=end - converted_at,
            size_bytes=len(converted) if converted is not None and record["status"] == "ok" else None,
        )
        variants.append(record)
    return {
        "way": "naive",
        "convert_seconds": time.perf_counter() - start,
        "phases": {"load_model_and_data": load_seconds},
        "variants": variants,
        "peak_rss_mb_vmhwm": _peak_rss_mb_self(),
    }


def child_tflq(model_path: Path, data_path: Path, out_dir: Path, samples: int) -> dict[str, Any]:
    """tflq: export once, calibrate once, convert the 7 variants (library call = ``tflq convert``)."""
    _child_imports()
    from tflq.convert import session as tflq_convert
    from tflq.convert.session import ConvertOptions, convert_model

    phase_timer = _PhaseTimer(tflq_convert)
    options = ConvertOptions(
        modes=("float32", "float16", "dynamic", "int8", "16x8"),
        io_types=("float32", "int8", "uint8"),
        calibration=str(data_path),
        calibration_samples=samples,
    )
    planned = [variant.label for variant in options.variants()]
    expected = [label for label, _, _ in VARIANTS]
    if planned != expected:
        raise RuntimeError(f"tflq plans {planned}, the benchmark expects {expected}")
    from tflq.convert.parallel import worker_count

    workers = worker_count()  # what convert_model decides just below
    start = time.perf_counter()
    result = convert_model(model_path, out_dir, options, name="model")
    total = time.perf_counter() - start
    variants = []
    for artifact in result.artifacts:
        record = {
            "label": artifact.label,
            "status": artifact.status,
            "error": artifact.error,
            "seconds": artifact.seconds,
            "size_bytes": artifact.size_bytes,
        }
        record.update(phase_timer.per_variant.get(artifact.label, {}))
        variants.append(record)
    variant_total = sum(record["seconds"] for record in variants)
    # float32 is converted once, on first use (the calibration starts from it): its time is its own phase, taken
    # out of whichever step asked for it first
    float_seconds = phase_timer.float_seconds or 0.0
    outside_variants = float_seconds if variants and (variants[0].get("convert_seconds") or 0) < float_seconds else 0.0
    phases = {
        "export (load + SavedModel)": result.export_seconds,
        "float32 conversion (once)": float_seconds,
        "calibration (once: int8 and 16x8)": result.calibration_seconds,
        "variants (float32 excluded)": variant_total - (float_seconds - outside_variants),
    }
    if workers == 1:
        phases["other (data read/check)"] = total - sum(phases.values())
    else:  # the worker's float16/dynamic seconds overlap the parent's phases: no remainder to show
        phases["variants (float32 excluded; the worker's overlap the rest)"] = phases.pop("variants (float32 excluded)")
    return {
        "way": "tflq",
        "workers": workers,
        "convert_seconds": total,
        "phases": phases,
        "variants": variants,
        "peak_rss_mb_vmhwm": _peak_rss_mb_self(),
    }


class _PhaseTimer:
    """Times tflq's per-variant steps (convert / run check / float-op scan) by wrapping them; measurement only.

    If tflq renames these functions the breakdown is simply absent; the totals do not depend on it.
    """

    def __init__(self, module: Any) -> None:
        self.per_variant: dict[str, dict[str, float]] = {}
        self._current: str | None = None
        self.float_seconds: float | None = None
        session_class = getattr(module, "ModelSession", None)
        if session_class is None or not all(hasattr(module, name) for name in ("verify_runs", "float_ops")):
            return
        original_convert = session_class.convert_variant
        original_float = session_class.float_model
        timer = self
        self.float_seconds = 0.0

        def float_model(session: Any) -> bytes:
            begin = time.perf_counter()
            try:
                return original_float(session)
            finally:
                timer.float_seconds += time.perf_counter() - begin

        session_class.float_model = float_model

        def convert_variant(session: Any, variant: Any) -> bytes:
            timer._current = variant.label
            with timer.phase("convert_seconds"):
                return original_convert(session, variant)

        session_class.convert_variant = convert_variant
        for name, key in (("verify_runs", "verify_seconds"), ("float_ops", "float_op_scan_seconds")):
            setattr(module, name, self._wrap(getattr(module, name), key))

    def _wrap(self, function: Any, key: str) -> Any:
        def wrapped(*args: Any, **kwargs: Any) -> Any:
            with self.phase(key):
                return function(*args, **kwargs)

        return wrapped

    def phase(self, key: str) -> Any:
        timer = self

        class _Phase:
            def __enter__(self) -> None:
                self.start = time.perf_counter()

            def __exit__(self, *exc: Any) -> None:
                if timer._current is not None:
                    bucket = timer.per_variant.setdefault(timer._current, {})
                    bucket[key] = bucket.get(key, 0.0) + time.perf_counter() - self.start

        return _Phase()


# ----------------------------------------------------------------------------------------------------- parent


def child_prepare(model_path: Path, size: int, alpha: float) -> None:
    _child_imports()
    import keras

    keras.utils.set_random_seed(0)
    model = keras.applications.MobileNetV2(
        weights=None, input_shape=(size, size, 3), alpha=alpha, classifier_activation=None
    )
    # Re-estimate the BatchNormalization statistics on one batch (momentum 0: moving stats = batch stats). With
    # the initial statistics (mean 0, variance 1) the random network's activations vanish layer by layer and the
    # logits span ~1e-10, so every int8 output would be the same value and the numerical check would be vacuous.
    batch_norms = [layer for layer in model.layers if isinstance(layer, keras.layers.BatchNormalization)]
    momenta = [layer.momentum for layer in batch_norms]
    for layer in batch_norms:
        layer.momentum = 0.0
    batch = np.random.default_rng(1).uniform(-1.0, 1.0, size=(32, size, size, 3)).astype(np.float32)
    model(batch, training=True)
    for layer, momentum in zip(batch_norms, momenta):
        layer.momentum = momentum
    model.save(model_path)


def run_child(argv: list[str], log_path: Path, workers: str = "auto") -> dict[str, Any]:
    """Run this script as a child; return its wall time, exit code and peak RSS (its own rusage)."""
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", PYTHONPATH=os.pathsep.join(
        [str(REPO)] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    ))
    env.pop("TFLQ_CONVERT_WORKERS", None)
    if workers != "auto":
        env["TFLQ_CONVERT_WORKERS"] = workers
    start = time.perf_counter()
    with open(log_path, "wb") as log:
        process = subprocess.Popen([sys.executable, __file__, *argv], stdout=log, stderr=subprocess.STDOUT, env=env)
        sampler = _TreeRss(process.pid)
        sampler.start()
        _, status, usage = os.wait4(process.pid, 0)
        sampler.stop()
        process.returncode = os.waitstatus_to_exitcode(status)
    return {
        "process_seconds": time.perf_counter() - start,
        "returncode": process.returncode,
        # the largest single process of the child's tree (ru_maxrss of wait4: the child, or a waited-for worker)
        "peak_rss_mb": usage.ru_maxrss / 1024,  # KiB on Linux
        "peak_rss_mb_tree": sampler.peak_mb,  # the child and all its descendants together, sampled every 20 ms
    }


class _TreeRss(threading.Thread):
    """Samples the summed resident memory (VmRSS) of a process and its descendants; ``peak_mb`` is the largest sum."""

    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.pid = pid
        self.peak_mb = 0.0
        self._done = threading.Event()

    def stop(self) -> None:
        self._done.set()
        self.join()

    def run(self) -> None:
        while not self._done.wait(0.02):
            self.peak_mb = max(self.peak_mb, sum(_rss_mb(pid) for pid in self._tree()))

    def _tree(self) -> list[int]:
        parents: dict[int, int] = {}
        for entry in os.listdir("/proc"):
            if entry.isdigit():
                try:
                    stat = Path(f"/proc/{entry}/stat").read_text()
                except OSError:
                    continue
                parents[int(entry)] = int(stat.rsplit(")", 1)[1].split()[1])
        tree, frontier = [self.pid], [self.pid]
        while frontier:
            frontier = [pid for pid, parent in parents.items() if parent in frontier]
            tree.extend(frontier)
        return tree


def _rss_mb(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def _fail_child(what: str, log_path: Path, returncode: int) -> None:
    tail = "\n".join(log_path.read_text(errors="replace").splitlines()[-25:])
    raise SystemExit(f"sweep: the {what} child failed (exit {returncode}); last lines of {log_path}:\n{tail}")


def compare_outputs(naive_dir: Path, tflq_dir: Path, images: np.ndarray) -> list[dict[str, Any]]:
    """Run both ways' variants on the same images; max abs output difference per variant."""
    from ai_edge_litert.interpreter import Interpreter

    def outputs(path: Path) -> tuple[np.ndarray, float, str]:
        interpreter = Interpreter(model_path=str(path))
        interpreter.allocate_tensors()
        input_detail = interpreter.get_input_details()[0]
        output_detail = interpreter.get_output_details()[0]
        io_types = f"{np.dtype(input_detail['dtype']).name}/{np.dtype(output_detail['dtype']).name}"
        results = []
        for image in images:
            interpreter.set_tensor(input_detail["index"], _quantize_input(image[np.newaxis], input_detail))
            interpreter.invoke()
            value = interpreter.get_tensor(output_detail["index"])
            scale, zero_point = output_detail["quantization"]
            if np.dtype(output_detail["dtype"]).kind in "iu":
                value = (value.astype(np.float64) - zero_point) * scale
            results.append(value.astype(np.float64))
        return np.concatenate(results), float(scale), io_types

    rows = []
    reference_path = naive_dir / "model.float32.tflite"
    reference = outputs(reference_path)[0] if reference_path.exists() else None
    for label, mode, _ in VARIANTS:
        naive_path, tflq_path = naive_dir / f"model.{label}.tflite", tflq_dir / f"model.{label}.tflite"
        if not (naive_path.exists() and tflq_path.exists()):
            continue
        naive_out, _, naive_io = outputs(naive_path)
        tflq_out, tflq_scale, tflq_io = outputs(tflq_path)
        diff = float(np.max(np.abs(naive_out - tflq_out)))
        row: dict[str, Any] = {
            "label": label,
            "io_naive": naive_io,  # input/output dtypes: tflq must honour the same I/O contract
            "io_tflq": tflq_io,
            "max_abs_diff": diff,
            "output_range": float(np.ptp(naive_out)),
        }
        if label in INT8_LABELS:
            # int8 activations everywhere: the output tensor (or its last int8 step, for float I/O) has a scale.
            scale = tflq_scale or _int8_output_scale(tflq_path)
            row["output_scale"] = scale
            row["diff_in_steps"] = diff / scale if scale else None
        if reference is not None and label != "float32":
            row["naive_vs_float32"] = float(np.max(np.abs(naive_out - reference)))
        rows.append(row)
    return rows


def _int8_output_scale(path: Path) -> float | None:
    """The scale of the int8 tensor a DEQUANTIZE turns into the float output (float-I/O int8 models)."""
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=str(path))
    tensors = {detail["index"]: detail for detail in interpreter.get_tensor_details()}
    output_index = interpreter.get_output_details()[0]["index"]
    for op in interpreter._get_ops_details():
        if op["op_name"] == "DEQUANTIZE" and output_index in op["outputs"]:
            scale = tensors[op["inputs"][0]]["quantization"][0]
            return float(scale) or None
    return None


def _tf_version() -> str:
    out = subprocess.run(
        [sys.executable, "-c", "import importlib.metadata as m; print(m.version('tensorflow'), m.version('keras'), "
         "m.version('ai-edge-litert'))"],
        capture_output=True, text=True, check=False,
    ).stdout.split()
    return "tensorflow {} / keras {} / ai-edge-litert {}".format(*out) if len(out) == 3 else "unknown"


def summarize(runs: list[dict[str, Any]]) -> dict[str, Any]:
    summary: dict[str, Any] = {}
    for way in WAYS:
        mine = [run[way] for run in runs]
        summary[way] = {
            "convert_seconds_median": statistics.median(r["convert_seconds"] for r in mine),
            "process_seconds_median": statistics.median(r["process_seconds"] for r in mine),
            "peak_rss_mb_max": max(r["peak_rss_mb"] for r in mine),
            "peak_rss_mb_tree_max": max(r.get("peak_rss_mb_tree") or 0.0 for r in mine),
        }
    naive, tflq = summary["naive"], summary["tflq"]
    summary["ratio_convert"] = tflq["convert_seconds_median"] / naive["convert_seconds_median"]
    summary["ratio_process"] = tflq["process_seconds_median"] / naive["process_seconds_median"]
    summary["target_ratio"] = TARGET_RATIO
    summary["target_met"] = summary["ratio_convert"] <= TARGET_RATIO
    return summary


def print_report(result: dict[str, Any]) -> None:
    runs, summary = result["runs"], result["summary"]
    setup = result["setup"]
    print(
        f"\nMobileNetV2 alpha={setup['alpha']} input {setup['size']}x{setup['size']}x3 (weights=None, seed 0), "
        f"{setup['samples']} calibration samples, {len(runs)} repeat(s)"
    )
    for index, run in enumerate(runs, 1):
        print(f"\nrun {index} (order: {' then '.join(run['order'])})")
        header = f"  {'variant':<12}" + "".join(f"{way + ' s':>10}  {way + ' status':<14}" for way in WAYS)
        print(header)
        by_way = {way: {v["label"]: v for v in run[way]["variants"]} for way in WAYS}
        for label, _, _ in VARIANTS:
            cells = ""
            for way in WAYS:
                variant = by_way[way].get(label)
                cells += f"{variant['seconds']:>10.2f}  {variant['status']:<14}" if variant else f"{'-':>10}  {'missing':<14}"
            print(f"  {label:<12}{cells}")
        for way in WAYS:
            data = run[way]
            print(
                f"  {way:<6} convert {data['convert_seconds']:7.2f} s   process {data['process_seconds']:7.2f} s   "
                f"peak RSS {data['peak_rss_mb']:7.0f} MB (child VmHWM {data.get('peak_rss_mb_vmhwm') or 0:.0f} MB; "
                f"child and its workers together {data.get('peak_rss_mb_tree') or 0:.0f} MB)"
            )
            print("         phases: " + ", ".join(f"{name} {seconds:.2f} s" for name, seconds in data["phases"].items()))
            if "workers" in data:
                print(f"         processes converting: {data['workers']} (TFLQ_CONVERT_WORKERS {setup['workers']})")
        for way in WAYS:
            splits = [
                f"{v['label']} {v.get('convert_seconds', 0):.2f}+{v.get('verify_seconds', 0):.2f}"
                + (f"+{v['float_op_scan_seconds']:.2f}" if "float_op_scan_seconds" in v else "")
                for v in run[way]["variants"]
            ]
            legend = "convert+run check" + ("+float-op scan" if way == "tflq" else "")
            print(f"  {way} per variant ({legend}): " + ", ".join(splits))
        errors = [(way, v["label"], v["error"]) for way in WAYS for v in run[way]["variants"] if v["error"]]
        for way, label, error in errors:
            print(f"  {way} {label} failed: {error[:160]}")
        print(f"  ratio tflq/naive this run: {run['tflq']['convert_seconds'] / run['naive']['convert_seconds']:.3f}")
    print("\nnumerical check, tflq vs naive (same inputs, first run's files):")
    for row in result["numeric"]:
        steps = f" = {row['diff_in_steps']:.2f} output steps (scale {row['output_scale']:.4g})" if row.get("output_scale") else ""
        scale_note = f"; naive vs float32: {row['naive_vs_float32']:.4g}" if "naive_vs_float32" in row else ""
        io_note = row["io_tflq"] if row["io_tflq"] == row["io_naive"] else (
            f"I/O MISMATCH: tflq {row['io_tflq']}, naive {row['io_naive']}"
        )
        print(f"  {row['label']:<12} {io_note:<12} max |tflq - naive| {row['max_abs_diff']:.4g}{steps}"
              f"  (output range {row['output_range']:.3g}{scale_note})")
    print("\nsummary (median over repeats)")
    for way in WAYS:
        s = summary[way]
        print(f"  {way:<6} convert {s['convert_seconds_median']:7.2f} s   process {s['process_seconds_median']:7.2f} s   "
              f"peak RSS {s['peak_rss_mb_max']:7.0f} MB (process tree {s['peak_rss_mb_tree_max']:.0f} MB)")
    verdict = "target met" if summary["target_met"] else "TARGET MISSED"
    print(f"  ratio tflq/naive: {summary['ratio_convert']:.3f} (convert time; target <= {TARGET_RATIO}: {verdict}), "
          f"{summary['ratio_process']:.3f} (whole process)")
    machine = result["machine"]
    print(f"  machine: {machine['platform']}, {machine['cpu_count']} CPUs, {machine['versions']}, "
          f"Python {machine['python']}, load average {machine['loadavg_start']} -> {machine['loadavg_end']}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--samples", type=int, default=100, help="calibration samples (default 100)")
    parser.add_argument("--repeat", type=int, default=1, help="naive/tflq pairs to run, alternating order (default 1)")
    parser.add_argument("--size", type=int, default=96, help="input height and width (default 96)")
    parser.add_argument("--alpha", type=float, default=0.35, help="MobileNetV2 width multiplier (default 0.35)")
    parser.add_argument("--workers", choices=("auto", "1", "2"), default="auto",
                        help="tflq's TFLQ_CONVERT_WORKERS: 1 = sequential, 2 = float16/dynamic in a worker process, "
                        "auto = tflq's default (sequential; default)")
    parser.add_argument("--json", type=Path, help="also write the figures to this JSON file")
    parser.add_argument("--workdir", type=Path, help="keep model, data, logs and .tflite files here (default: temp)")
    parser.add_argument("--child", choices=("naive", "tflq", "prepare"), help=argparse.SUPPRESS)
    parser.add_argument("--child-args", nargs=3, metavar=("MODEL", "DATA", "OUT"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.child:
        model_path, data_path, out = (Path(p) for p in args.child_args)
        if args.child == "prepare":
            child_prepare(model_path, args.size, args.alpha)
            return 0
        out.mkdir(parents=True, exist_ok=True)
        if args.child == "naive":
            record = child_naive(model_path, data_path, out)
        else:
            record = child_tflq(model_path, data_path, out, args.samples)
        (out / "result.json").write_text(json.dumps(record))
        return 0

    if args.samples < 1 or args.repeat < 1:
        parser.error("--samples and --repeat must be at least 1")
    with tempfile.TemporaryDirectory(prefix="tflq-sweep-") as temp:
        workdir = args.workdir or Path(temp)
        workdir.mkdir(parents=True, exist_ok=True)
        return _run(args, workdir)


def _run(args: argparse.Namespace, workdir: Path) -> int:
    loadavg_start = " ".join(f"{x:.2f}" for x in os.getloadavg())
    model_path, data_path = workdir / "mobilenet_v2.keras", workdir / "calibration.npz"
    rng = np.random.default_rng(0)
    images = rng.uniform(-1.0, 1.0, size=(args.samples, args.size, args.size, 3)).astype(np.float32)
    np.savez(data_path, x=images)
    common = ["--samples", str(args.samples), "--size", str(args.size), "--alpha", str(args.alpha)]
    print(f"building MobileNetV2 ({args.size}x{args.size}, alpha {args.alpha}) in {workdir} ...", flush=True)
    prepared = run_child([*common, "--child", "prepare", "--child-args", str(model_path), str(data_path), "-"],
                         workdir / "prepare.log")
    if prepared["returncode"] != 0:
        _fail_child("prepare", workdir / "prepare.log", prepared["returncode"])

    runs = []
    for repeat in range(args.repeat):
        order = WAYS if repeat % 2 == 0 else WAYS[::-1]
        run: dict[str, Any] = {"order": list(order)}
        for way in order:
            out_dir = workdir / f"run{repeat + 1}" / way
            log_path = workdir / f"run{repeat + 1}-{way}.log"
            print(f"run {repeat + 1}/{args.repeat}: {way} ...", flush=True)
            figures = run_child(
                [*common, "--child", way, "--child-args", str(model_path), str(data_path), str(out_dir)], log_path,
                workers=args.workers,
            )
            if figures["returncode"] != 0 or not (out_dir / "result.json").exists():
                _fail_child(way, log_path, figures["returncode"])
            run[way] = {**json.loads((out_dir / "result.json").read_text()), **figures}
            print(f"  {way}: {run[way]['convert_seconds']:.1f} s converting, {figures['process_seconds']:.1f} s "
                  f"process, peak RSS {figures['peak_rss_mb']:.0f} MB (tree {figures['peak_rss_mb_tree']:.0f} MB)",
                  flush=True)
        runs.append(run)

    numeric = compare_outputs(workdir / "run1" / "naive", workdir / "run1" / "tflq", images[:CHECK_SAMPLES])
    result = {
        "setup": {"model": "MobileNetV2", "size": args.size, "alpha": args.alpha, "samples": args.samples,
                  "repeat": args.repeat, "check_samples": min(CHECK_SAMPLES, args.samples), "workers": args.workers},
        "machine": {
            "platform": platform.platform(),
            "processor": platform.processor() or platform.machine(),
            "cpu_count": os.cpu_count(),
            "python": platform.python_version(),
            "versions": _tf_version(),
            "loadavg_start": loadavg_start,
            "loadavg_end": " ".join(f"{x:.2f}" for x in os.getloadavg()),
        },
        "runs": runs,
        "summary": summarize(runs),
        "numeric": numeric,
    }
    print_report(result)
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
        print(f"  figures written to {args.json}")
    problems = [
        f"{row['label']}: I/O dtypes {row['io_tflq']} (tflq) vs {row['io_naive']} (naive)"
        for row in numeric if row["io_tflq"] != row["io_naive"]
    ] + [
        f"{row['label']}: outputs differ by {row['diff_in_steps']:.1f} quantization steps"
        for row in numeric
        if row["label"] in INT8_LABELS
        and row["io_tflq"] == row["io_naive"]  # with different I/O the host-side quantization differs too
        and (row.get("diff_in_steps") is None or row["diff_in_steps"] > 1.0)
    ] + [
        f"{label}: not produced by both ways, not compared"
        for label in INT8_LABELS if label not in {row["label"] for row in numeric}
    ]
    for problem in problems:
        print(f"sweep: tflq does not match the public converter: {problem}", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
