"""Benchmark: ``tflq auto``'s search against re-converting every candidate from scratch.

Usage::

    python benchmarks/auto_search.py [--size 96] [--alpha 0.35] [--calib-samples 100] [--eval-samples 200]
                                     [--max-drop 0] [--max-float-layers 3] [--repeat 2] [--json FILE]

What is measured, in one process (TensorFlow, Keras and LiteRT are imported before either clock starts). With
``--repeat N`` (default 2) both ways run N times, alternating which goes first, and the ratio uses the medians:

* **tflq**: ``auto_search`` on a ``.keras`` file. It exports once, calibrates once, and re-quantizes every int8
  candidate from the calibrated model. The layer ranking comes from the same calibrated model. Every candidate is
  scored on the evaluation data.
* **naive**: the same candidates, the same order, the same scoring, but every candidate comes from a fresh public
  ``TFLiteConverter`` that calibrates again. For ``int8``: ``optimizations=[DEFAULT]`` and a representative dataset.
  For ``int8`` with layers in float, TensorFlow's public selective-quantization path: a
  ``tf.lite.experimental.QuantizationDebugger`` with ``denylisted_nodes``, then ``get_nondebug_quantized_model()``.
  The layer ranking comes from one ``QuantizationDebugger`` run. ``16x8``: tflq quantizes it from its one
  calibration (as ``tflq convert`` does), the naive way with a fresh public converter that calibrates again.
  ``dynamic`` and ``float16`` take the public converter both ways, so they cost the same. The naive way converts from the same SavedModel export
  (exported once, timed). The tutorial way, ``from_keras_model`` on every call, would re-export each time and be
  slower still.

The model is ``keras.applications.MobileNetV2(weights=None, classes=10, classifier_activation=None)`` with a fixed
seed and BatchNormalization statistics re-estimated on one batch (as in ``benchmarks/sweep.py``). The data is
uniform random images in [-1, 1]. Labels are the float model's own predictions, so top-1 is agreement with float32
and float32 scores 100. ``--max-drop 0`` (default) makes the search try every candidate until one is exactly as
good as float32, which is usually float16.

Check: each naive candidate must score the same as tflq's (same calibration data, deterministic quantizer).
Exit 1 otherwise.

This file is not a test (pytest collects ``tests/`` only).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))  # benchmark the tflq next to this script, not whatever is installed

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def prepare(folder: Path, size: int, alpha: float, calib_samples: int, eval_samples: int) -> tuple[Path, Path, Path]:
    """The model (.keras), calibration data and labelled evaluation data."""
    import keras

    keras.utils.set_random_seed(0)
    model = keras.applications.MobileNetV2(
        weights=None, input_shape=(size, size, 3), alpha=alpha, classes=10, classifier_activation=None
    )
    batch_norms = [layer for layer in model.layers if isinstance(layer, keras.layers.BatchNormalization)]
    momenta = [layer.momentum for layer in batch_norms]
    for layer in batch_norms:
        layer.momentum = 0.0
    rng = np.random.default_rng(1)
    model(rng.uniform(-1.0, 1.0, size=(32, size, size, 3)).astype(np.float32), training=True)
    for layer, momentum in zip(batch_norms, momenta):
        layer.momentum = momentum
    model_path = folder / "mobilenet_v2.keras"
    model.save(model_path)
    calibration = rng.uniform(-1.0, 1.0, size=(calib_samples, size, size, 3)).astype(np.float32)
    evaluation = rng.uniform(-1.0, 1.0, size=(eval_samples, size, size, 3)).astype(np.float32)
    labels = np.asarray(model.predict(evaluation, verbose=0, batch_size=50)).argmax(axis=1)
    np.savez(folder / "calib.npz", x=calibration)
    np.savez(folder / "eval.npz", x=evaluation, y=labels)
    return model_path, folder / "calib.npz", folder / "eval.npz"


def run_tflq(model_path: Path, calib: Path, data: Path, args: argparse.Namespace, out: Path) -> tuple[Any, float]:
    from tflq.convert.session import ConvertOptions
    from tflq.debug.auto import AutoOptions, NoCandidateFits, auto_search

    options = AutoOptions(
        max_drop=args.max_drop, data=str(data), max_float_layers=args.max_float_layers, output_dir=out,
        engines=("converter",),  # the public-converter comparison covers the converter's candidates only
        convert=ConvertOptions(calibration=str(calib), calibration_samples=args.calib_samples),
    )
    started = time.perf_counter()
    try:
        result = auto_search(model_path, options)
    except NoCandidateFits as error:
        result = error.result
    return result, time.perf_counter() - started


def run_naive(model_path: Path, calib: Path, data: Path, tried: list[Any], workdir: Path) -> dict[str, Any]:
    """Every tried candidate from a fresh public converter, calibrating each time; scored like tflq scores."""
    import tensorflow as tf

    from tflq.debug.scoring import Evaluator
    from tflq.model.load import export_model
    from tflq.modes import MODES, ModeSettings

    timings: dict[str, float] = {}
    started = time.perf_counter()
    exported = export_model(model_path, workdir / "saved_model")
    timings["export"] = time.perf_counter() - started
    with np.load(calib) as archive:
        images = archive["x"]
    input_name = exported.inputs[0].name
    samples = [{input_name: images[index : index + 1]} for index in range(len(images))]

    def converter() -> Any:
        return tf.lite.TFLiteConverter.from_saved_model(str(exported.saved_model_dir), signature_keys=[exported.signature_key])

    def write(name: str, content: bytes) -> Path:
        path = workdir / f"naive.{name}.tflite"
        path.write_bytes(content)
        return path

    float_path = workdir / "naive.float32.tflite"
    phase = time.perf_counter()
    float_path.write_bytes(converter().convert())
    timings["float32"] = time.perf_counter() - phase
    evaluator = Evaluator(str(data), exported, float_model=lambda: float_path)
    phase = time.perf_counter()
    baseline = evaluator.score(float_path).value
    timings["float32"] += time.perf_counter() - phase

    if any(trial.candidate.float_nodes for trial in tried):
        phase = time.perf_counter()
        ranking_converter = converter()
        ranking_converter.optimizations = [tf.lite.Optimize.DEFAULT]
        ranking_converter.representative_dataset = lambda: iter(samples)
        debugger = tf.lite.experimental.QuantizationDebugger(
            converter=ranking_converter, debug_dataset=lambda: ([sample[input_name]] for sample in samples)
        )
        debugger.run()
        timings["ranking (QuantizationDebugger)"] = time.perf_counter() - phase

    scores: dict[str, float | None] = {}
    for trial in tried:
        candidate = trial.candidate
        phase = time.perf_counter()
        try:
            fresh = converter()
            if candidate.mode == "int8":
                fresh.optimizations = [tf.lite.Optimize.DEFAULT]
                fresh.representative_dataset = lambda: iter(samples)
                if candidate.float_nodes:
                    debugger = tf.lite.experimental.QuantizationDebugger(
                        converter=fresh, debug_dataset=lambda: iter(()),
                        debug_options=tf.lite.experimental.QuantizationDebugOptions(denylisted_nodes=list(candidate.float_nodes)),
                    )
                    content = bytes(debugger.get_nondebug_quantized_model())
                else:
                    content = bytes(fresh.convert())
            else:
                MODES[candidate.mode].configure(fresh, tf, ModeSettings())
                if MODES[candidate.mode].calibrated:
                    fresh.representative_dataset = lambda: iter(samples)
                content = bytes(fresh.convert())
            scores[candidate.label] = evaluator.score(write(str(len(scores)), content)).value
        except Exception as error:  # a candidate that fails the naive way is recorded, like tflq records it
            scores[candidate.label] = None
            print(f"naive {candidate.label}: {type(error).__name__}: {str(error).splitlines()[0][:200]}", file=sys.stderr)
        timings[candidate.label] = time.perf_counter() - phase
    return {"seconds": time.perf_counter() - started, "timings": timings, "scores": scores, "float32": baseline}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, default=96)
    parser.add_argument("--alpha", type=float, default=0.35)
    parser.add_argument("--calib-samples", type=int, default=100)
    parser.add_argument("--eval-samples", type=int, default=200)
    parser.add_argument("--max-drop", type=float, default=0.0)
    parser.add_argument("--max-float-layers", type=int, default=3)
    parser.add_argument("--repeat", type=int, default=2, help="runs, alternating which way goes first (median)")
    parser.add_argument("--json", type=Path, help="also write the figures as JSON")
    args = parser.parse_args(argv)

    from tflq._tf import imports as _tf

    _tf.tf()  # tensorflow, keras and LiteRT imported before any clock starts
    _tf.keras()
    import ai_edge_litert.interpreter  # noqa: F401

    tflq_times: list[float] = []
    naive_times: list[float] = []
    with tempfile.TemporaryDirectory(prefix="tflq-bench-auto-") as folder_name:
        folder = Path(folder_name)
        with _tf.quiet():
            model_path, calib, data = prepare(folder, args.size, args.alpha, args.calib_samples, args.eval_samples)
        tried: list[Any] = []
        for repetition in range(args.repeat):
            run_dir = folder / f"run{repetition}"
            run_dir.mkdir()
            order = ("tflq", "naive") if repetition % 2 == 0 else ("naive", "tflq")
            for way in order:
                if way == "tflq":
                    result, seconds = run_tflq(model_path, calib, data, args, run_dir / "out")
                    tflq_times.append(seconds)
                    tried = tried or [trial for trial in result.trials if trial.status != "not tried"]
                else:
                    naive_dir = run_dir / "naive"
                    naive_dir.mkdir()
                    with _tf.quiet():
                        naive = run_naive(model_path, calib, data, tried, naive_dir)
                    naive_times.append(naive["seconds"])

    print(f"MobileNetV2 alpha {args.alpha}, {args.size}x{args.size}, {args.calib_samples} calibration / "
          f"{args.eval_samples} evaluation samples, --max-drop {args.max_drop:g}; {platform.processor() or platform.machine()}, "
          f"{len(os.sched_getaffinity(0)) if hasattr(os, 'sched_getaffinity') else os.cpu_count()} core(s)")
    print(f"{'candidate':<40} {'status':<10} {'tflq top-1':>10} {'naive top-1':>11} {'tflq s':>8} {'naive s':>8}")
    mismatches = []
    for trial in tried:
        label = trial.candidate.label
        naive_score = naive["scores"].get(label)
        same = (trial.score is None and naive_score is None) or (
            trial.score is not None and naive_score is not None and abs(trial.score - naive_score) < 1e-9
        )
        if not same:
            mismatches.append(label)
        show = lambda value: "-" if value is None else f"{value:.2%}"  # noqa: E731
        print(f"{label:<40} {trial.status:<10} {show(trial.score):>10} {show(naive_score):>11} "
              f"{trial.seconds:>8.2f} {naive['timings'][label]:>8.2f}")
    tflq_seconds, naive_seconds = statistics.median(tflq_times), statistics.median(naive_times)
    ratio = naive_seconds / tflq_seconds
    print(f"tflq auto: {tflq_seconds:.2f} s in all, median of {[round(t, 2) for t in tflq_times]} "
          f"(calibrations: {result.calibrations}, layer ranking {result.ranking_seconds:.2f} s)")
    fixed = {key: round(value, 2) for key, value in naive["timings"].items() if key in ("export", "float32", "ranking (QuantizationDebugger)")}
    print(f"naive:     {naive_seconds:.2f} s in all, median of {[round(t, 2) for t in naive_times]} (calibrations: {sum(1 for t in tried if t.candidate.mode in ('int8', '16x8')) + (1 if any(t.candidate.float_nodes for t in tried) else 0)}; {fixed})")
    print(f"ratio naive / tflq: {ratio:.2f}x")
    int8_labels = [trial.candidate.label for trial in tried if trial.candidate.mode == "int8"]
    tflq_int8 = sum(trial.seconds for trial in tried if trial.candidate.mode == "int8") + result.ranking_seconds
    naive_int8 = sum(naive["timings"][label] for label in int8_labels) + naive["timings"].get("ranking (QuantizationDebugger)", 0.0)
    print(f"int8 candidates + layer ranking only (last run): tflq {tflq_int8:.2f} s, naive {naive_int8:.2f} s, "
          f"ratio {naive_int8 / tflq_int8:.2f}x ({len(int8_labels)} int8 candidate(s); dynamic and float16 take "
          "the public converter both ways)")
    if mismatches:
        print(f"MISMATCH: the naive way scored differently for {', '.join(mismatches)}")
    if args.json:
        args.json.write_text(json.dumps({
            "tflq_seconds": tflq_times, "naive_seconds": naive_times, "ratio": ratio,
            "tflq": result.to_dict(), "naive": naive, "mismatches": mismatches,
        }, indent=2, default=str))
    return 1 if mismatches else 0


if __name__ == "__main__":
    sys.exit(main())
