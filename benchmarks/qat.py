"""Benchmark: post-training int8 (PTQ) against quantization-aware training (QAT) on the digits CNN.

Usage::

    python benchmarks/qat.py [--qat EPOCHS:LEARNING_RATE]... [--repeat 3] [--calib-samples 200] [--json FILE]

In one process, after importing TensorFlow, Keras, tf_keras and tensorflow-model-optimization (so no way pays the
imports inside its clock), three kinds of ``convert_model`` call run on ``sample_models/digits_cnn.keras``:

* **PTQ**: ``--mode float32 --mode int8 --io-type float32 --io-type int8 --calib digits_train.npz``: the float32
  baseline and post-training int8.
* **QAT**, once per ``--qat EPOCHS:LEARNING_RATE`` (default: ``2:1e-4``, and ``2:1e-3`` -- the defaults --, the smallest
  setting that keeps the digits accuracy in ``tests/test_qat_mode.py``): ``--mode qat --io-type float32
  --io-type int8 --train-data digits_train.npz --val-data digits_test.npz``.

Every ``.tflite`` is then run on the 360 ``digits_test.npz`` images in the LiteRT interpreter (integer inputs
quantized with the model's own parameters) for top-1 accuracy. The time table splits each call into what it costs:
the export of the source model, calibration, QAT preparation (load and bridge the model to tf_keras, read the data,
export the trained model), QAT training (``fit``), and the conversions; "wall" is the whole call. The sequence runs
``--repeat`` times (the first run pays one-off warm-ups: graph tracing, tfmot's first use); times are the median
over the runs, and the accuracies and final training figures must be identical in every run (the seed is fixed),
else the exit status is 1.

This file is not a test (pytest collects ``tests/`` only).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))  # benchmark the tflq next to this script, not whatever is installed

MODEL = REPO / "sample_models" / "digits_cnn.keras"
TRAIN = REPO / "sample_models" / "digits_train.npz"
TEST = REPO / "sample_models" / "digits_test.npz"
DEFAULT_QAT = ("2:1e-4", "2:1e-3")
IO_TYPES = ("float32", "int8")


def _import_everything() -> None:
    from tflq._tf import imports as _tf

    _tf.set_verbose(False)
    _tf.tf()
    _tf.keras()
    with _tf.quiet():
        import ai_edge_litert.interpreter  # noqa: F401
        import tensorflow_model_optimization  # noqa: F401
        import tf_keras  # noqa: F401


def accuracy(path: Path, x: np.ndarray, y: np.ndarray) -> float:
    """Top-1 accuracy of a single-input classifier ``.tflite`` on (x, y), one sample at a time."""
    from ai_edge_litert.interpreter import Interpreter

    runner = Interpreter(model_path=str(path)).get_signature_runner()
    ((in_name, in_detail),) = runner.get_input_details().items()
    ((out_name, _),) = runner.get_output_details().items()
    dtype = np.dtype(in_detail["dtype"])
    correct = 0
    for sample, label in zip(x, y):
        feed = sample[np.newaxis]
        if dtype.kind in "iu":
            scale, zero_point = in_detail["quantization"]
            info = np.iinfo(dtype)
            feed = np.clip(np.round(feed / scale + zero_point), info.min, info.max)
        scores = runner(**{in_name: feed.astype(dtype)})[out_name]
        correct += int(np.argmax(scores) == label)
    return correct / len(y)


def _parse_qat(text: str) -> tuple[int, float]:
    try:
        epochs, rate = text.split(":")
        return int(epochs), float(rate)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected EPOCHS:LEARNING_RATE, e.g. 2:1e-3; got {text!r}") from None


def run(qat_settings: list[tuple[int, float]], calib_samples: int, out_dir: Path) -> dict[str, Any]:
    from tflq.convert.session import ConvertOptions, QatOptions, convert_model

    with np.load(TEST) as archive:
        x_test, y_test = archive["x"], archive["y"]
    calls: list[dict[str, Any]] = []

    def measure(name: str, options: ConvertOptions) -> None:
        started = time.perf_counter()
        result = convert_model(MODEL, out_dir, options, name=name)
        wall = time.perf_counter() - started
        failed = [f"{a.label}: {a.error}" for a in result.artifacts if not a.ok]
        if failed:
            raise SystemExit(f"{name}: {'; '.join(failed)}")
        training = next((a.training for a in result.artifacts if a.training), None)
        calls.append(
            {
                "call": name,
                "wall_seconds": wall,
                "export_seconds": result.export_seconds,
                "calibration_seconds": result.calibration_seconds,
                "qat_prepare_seconds": training["prepare_seconds"] if training else 0.0,
                "qat_fit_seconds": training["seconds"] if training else 0.0,
                "conversion_seconds": sum(a.seconds for a in result.artifacts),
                "training": training,
                "variants": [
                    {
                        "label": a.label,
                        "size_bytes": a.size_bytes,
                        "seconds": a.seconds,
                        "accuracy": accuracy(a.path, x_test, y_test),
                    }
                    for a in result.artifacts
                ],
            }
        )

    measure("ptq", ConvertOptions(modes=("float32", "int8"), io_types=IO_TYPES, calibration=str(TRAIN),
                                  calibration_samples=calib_samples))
    for epochs, rate in qat_settings:
        measure(
            f"qat_e{epochs}_lr{rate:g}",
            ConvertOptions(
                modes=("qat",), io_types=IO_TYPES, calibration_samples=calib_samples,
                qat=QatOptions(train_data=str(TRAIN), val_data=str(TEST), epochs=epochs, learning_rate=rate),
            ),
        )
    return {"machine": _machine(), "test_samples": int(len(y_test)), "calls": calls}


def _machine() -> dict[str, Any]:
    import tensorflow as tf

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "tensorflow": tf.__version__,
        "platform": platform.platform(),
    }


def print_report(result: dict[str, Any]) -> None:
    machine = result["machine"]
    print(f"digits CNN, {result['test_samples']} test images; {machine['cpu']}, {machine['cores']} cores, "
          f"TensorFlow {machine['tensorflow']}, Python {machine['python']}; times: median of {result['repeat']} run(s)")
    print()
    baseline = next(v["accuracy"] for v in result["calls"][0]["variants"] if v["label"] == "float32")
    print(f"{'call':<18} {'variant':<12} {'top-1':>8} {'vs float32':>11} {'size B':>8} {'convert s':>10}  training")
    for call in result["calls"]:
        training = call["training"]
        note = ""
        if training:
            note = (f"{training['epochs']} epochs, lr {training['learning_rate']:g}, "
                    f"{training['val_metric']} {training['val_value']:.4f}")
        for variant in call["variants"]:
            drop = (variant["accuracy"] - baseline) * 100
            print(f"{call['call']:<18} {variant['label']:<12} {variant['accuracy'] * 100:7.2f}% {drop:+10.2f}p "
                  f"{variant['size_bytes']:>8,d} {variant['seconds']:>10.3f}  {note}")
            note = ""
    print()
    print(f"{'call':<18} {'wall s':>8} {'export':>8} {'calib':>8} {'qat prep':>9} {'qat fit':>8} {'convert':>8}")
    for call in result["calls"]:
        print(f"{call['call']:<18} {call['wall_seconds']:8.2f} {call['export_seconds']:8.2f} "
              f"{call['calibration_seconds']:8.2f} {call['qat_prepare_seconds']:9.2f} {call['qat_fit_seconds']:8.2f} "
              f"{call['conversion_seconds']:8.2f}")
    ptq = result["calls"][0]["wall_seconds"]
    for call in result["calls"][1:]:
        print(f"{call['call']}: {call['wall_seconds'] / ptq:.1f}x the PTQ call's wall time")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--qat", action="append", type=_parse_qat, metavar="EPOCHS:LR",
                        help=f"a QAT setting to run (repeatable; default {' and '.join(DEFAULT_QAT)})")
    parser.add_argument("--repeat", type=int, default=3, help="runs of the whole sequence; times are medians (3)")
    parser.add_argument("--calib-samples", type=int, default=200, help="calibration/representative samples (200)")
    parser.add_argument("--json", type=Path, help="also write the figures to this JSON file")
    args = parser.parse_args(argv)
    settings = args.qat or [_parse_qat(text) for text in DEFAULT_QAT]
    _import_everything()
    runs = []
    for index in range(max(1, args.repeat)):
        with tempfile.TemporaryDirectory(prefix="tflq-qat-bench-") as folder:
            runs.append(run(settings, args.calib_samples, Path(folder)))
        print(f"run {index + 1}/{max(1, args.repeat)} done", file=sys.stderr)
    result, reproducible = summarize(runs)
    print_report(result)
    if args.json:
        args.json.write_text(json.dumps(result | {"runs": runs}, indent=2))
    if not reproducible:
        print("accuracies differ between runs: the fixed seed did not reproduce the models", file=sys.stderr)
        return 1
    return 0


def summarize(runs: list[dict[str, Any]]) -> tuple[dict[str, Any], bool]:
    """The first run's figures with every time replaced by its median over the runs; and whether the accuracies and
    the final training figures were identical in every run. (Sizes may differ by a few bytes within one process:
    TensorFlow numbers the traced functions it names in the graph.)"""
    import copy
    import statistics

    result = copy.deepcopy(runs[0])
    reproducible = True
    for position, call in enumerate(result["calls"]):
        same = [run["calls"][position] for run in runs]
        for key in ("wall_seconds", "export_seconds", "calibration_seconds", "qat_prepare_seconds", "qat_fit_seconds",
                    "conversion_seconds"):
            call[key] = statistics.median(other[key] for other in same)
        for index, variant in enumerate(call["variants"]):
            variant["seconds"] = statistics.median(other["variants"][index]["seconds"] for other in same)
            reproducible &= len({other["variants"][index]["accuracy"] for other in same}) == 1
        if call["training"]:
            reproducible &= len({json.dumps(other["training"]["final"]) for other in same}) == 1
    result["repeat"] = len(runs)
    return result, reproducible


if __name__ == "__main__":
    sys.exit(main())
