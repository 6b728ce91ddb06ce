"""Accuracy on 10,000 samples: the usual per-sample ``set_tensor/invoke/get_tensor`` loop against tflq's evaluation.

    python benchmarks/eval_throughput.py [--samples 10000] [--repeats 3] [--modes float32 int8 16x8]

Models: the shipped sample models (``sample_models/digits_cnn.keras``, ``digits_gru.keras``,
``digits_multi_io.keras``) when present, else a small digits CNN built here. Each is converted with ``tflq convert``
(in a subprocess, so this process never imports TensorFlow, like the ``tflq`` command line). The evaluation data is
10,000 samples drawn with replacement from the digits train and test sets.

For each .tflite, best of ``--repeats`` wall-clock times, each from the file path and the .npz to the accuracy:

* naive: ``Interpreter(model_path)``, ``allocate_tensors``, then one ``set_tensor/invoke/get_tensor`` per sample
  (quantizing int8 inputs by hand), as tutorials and most model repositories do;
* tflq: ``tflq.measure.harness.evaluate([path], data=npz, settings=EvalSettings(runs=0))``: the ``tflq eval`` code path,
  with its child process, the data layer's checks, batching, and the default threads (for the evaluation pass: the
  cores other processes leave idle);
* tflq, 1 thread: the same with ``threads=1``, so the gain from batching alone shows;
* engine: ``run_tflite`` in this process, 1 thread (no child process): the isolation's cost is the difference.

The ways take turns within each repeat, so a busy spell on a shared machine hits all of them alike.

Predictions are compared with the naive loop's (arg-max agreement, max |difference|), and both accuracies printed.
Target (issue 3): tflq at least 1.5x faster on the digits CNN, never slower on any sample model.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

REPOSITORY = Path(__file__).resolve().parent.parent
SAMPLE_MODELS = REPOSITORY / "sample_models"
sys.path.insert(0, str(REPOSITORY))

from tflq.measure.harness import EvalSettings, evaluate, idle_threads, machine_threads, run_tflite  # noqa: E402


def tflq_command(*arguments: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(REPOSITORY), os.environ.get("PYTHONPATH")])))
    return subprocess.run([sys.executable, "-m", "tflq.cli.app", *arguments], capture_output=True, text=True, env=env)


# ---------------------------------------------------------------------------------------------------------------
# Models and data


def sample_model_sets(workdir: Path, samples: int) -> list[tuple[str, Path, Path, Path]]:
    """(name, model file, calibration .npz, 10k evaluation .npz) per sample model present."""
    sets = []
    plain = [("digits_cnn", "digits"), ("digits_gru", "digits"), ("digits_multi_io", "digits_multi_io")]
    for name, data_stem in plain:
        model = SAMPLE_MODELS / f"{name}.keras"
        train, test = SAMPLE_MODELS / f"{data_stem}_train.npz", SAMPLE_MODELS / f"{data_stem}_test.npz"
        if model.exists() and train.exists() and test.exists():
            sets.append((name, model, train, resample(train, test, workdir / f"{data_stem}_{samples}.npz", samples)))
    return sets


def resample(train: Path, test: Path, target: Path, samples: int) -> Path:
    """``samples`` samples drawn with replacement (fixed seed) from train + test, every key alike."""
    if target.exists():
        return target
    with np.load(train) as first, np.load(test) as second:
        arrays = {key: np.concatenate([first[key], second[key]]) for key in first.files}
    count = len(next(iter(arrays.values())))
    picks = np.random.default_rng(0).integers(0, count, samples)
    np.savez(target, **{key: value[picks] for key, value in arrays.items()})
    return target


FALLBACK_BUILDER = r'''
import sys, numpy as np, keras
from sklearn.datasets import load_digits
folder = sys.argv[1]
digits = load_digits()
x = (digits.images / 16.0).astype(np.float32)[..., None]; y = digits.target.astype(np.int64)
keras.utils.set_random_seed(0)
inputs = keras.Input((8, 8, 1), name="image")
h = keras.layers.Conv2D(16, 3, activation="relu", padding="same")(inputs)
h = keras.layers.Conv2D(32, 3, activation="relu")(h)
h = keras.layers.MaxPooling2D()(h)
h = keras.layers.Flatten()(h)
h = keras.layers.Dense(64, activation="relu")(h)
model = keras.Model(inputs, keras.layers.Dense(10, name="logits")(h))
model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
model.fit(x[:1400], y[:1400], epochs=10, verbose=0)
model.save(f"{folder}/small_cnn.keras")
np.savez(f"{folder}/small_train.npz", x=x[:1400], y=y[:1400])
np.savez(f"{folder}/small_test.npz", x=x[1400:], y=y[1400:])
'''


def fallback_set(workdir: Path, samples: int) -> list[tuple[str, Path, Path, Path]]:
    subprocess.run([sys.executable, "-c", FALLBACK_BUILDER, str(workdir)], check=True, capture_output=True)
    train, test = workdir / "small_train.npz", workdir / "small_test.npz"
    return [("small_cnn", workdir / "small_cnn.keras", train, resample(train, test, workdir / f"small_{samples}.npz", samples))]


def convert(model: Path, calibration: Path, modes: list[str], output_dir: Path) -> list[tuple[str, Path]]:
    arguments = ["convert", str(model), "--calib", str(calibration), "-o", str(output_dir), "--json"]
    for mode in modes:
        arguments += ["--mode", mode]
    completed = tflq_command(*arguments)
    artifacts = json.loads(completed.stdout) if completed.stdout.strip().startswith("[") else []
    produced = [(artifact["mode"], Path(artifact["path"])) for artifact in artifacts if artifact["status"] == "ok"]
    for artifact in artifacts:
        if artifact["status"] != "ok":
            print(f"  {model.name} {artifact['mode']}: not converted ({artifact['error']})")
    if not artifacts:
        print(f"  {model.name}: tflq convert failed: {completed.stderr.strip()[-300:]}")
    return produced


# ---------------------------------------------------------------------------------------------------------------
# The two ways


def naive_accuracy(tflite_path: Path, data_path: Path) -> tuple[dict[str, np.ndarray], dict[str, float]]:
    """The usual loop: one set_tensor/invoke/get_tensor per sample, details looked up once."""
    from ai_edge_litert.interpreter import Interpreter

    with np.load(data_path) as archive:
        arrays = {key: archive[key] for key in archive.files}
    interpreter = Interpreter(model_path=str(tflite_path))
    interpreter.allocate_tensors()
    runner = interpreter.get_signature_runner()
    input_details, output_details = runner.get_input_details(), runner.get_output_details()
    del runner  # it holds a reference to the interpreter's internals, which invoke() refuses
    single_input = len(input_details) == 1
    feeds = []
    for name, detail in input_details.items():
        values = arrays["x"] if single_input and "x" in arrays else arrays[name]
        feeds.append((detail["index"], values, detail))
    count = len(feeds[0][1])
    outputs: dict[str, list[np.ndarray]] = {name: [] for name in output_details}
    for position in range(count):
        for index, values, detail in feeds:
            sample = values[position : position + 1]
            if detail["dtype"] != np.float32:
                scale, zero_point = detail["quantization"]
                info = np.iinfo(detail["dtype"])
                sample = np.clip(np.round(sample / scale) + zero_point, info.min, info.max).astype(detail["dtype"])
            interpreter.set_tensor(index, sample)
        interpreter.invoke()
        for name, detail in output_details.items():
            value = interpreter.get_tensor(detail["index"])
            if detail["dtype"] != np.float32:
                scale, zero_point = detail["quantization"]
                value = (value.astype(np.float32) - zero_point) * scale
            outputs[name].append(value)
    predictions = {name: np.concatenate(values) for name, values in outputs.items()}
    accuracy = {}
    for name, values in predictions.items():
        key = "y" if len(predictions) == 1 else f"y_{name}"
        if key in arrays and values.ndim == 2 and values.shape[1] > 1:
            accuracy[name] = float(np.mean(values.argmax(axis=1) == arrays[key]) * 100)
    return predictions, accuracy


def tflq_accuracy(tflite_path: Path, data_path: Path, threads: int | None) -> dict[str, float]:
    (measurement,) = evaluate([str(tflite_path)], data=str(data_path), settings=EvalSettings(runs=0, threads=threads))
    if measurement.error:
        raise RuntimeError(measurement.error)
    return {result.output: result.top1 * 100 for result in measurement.accuracy if result.top1 is not None}


def best_times(functions: list[Callable[[], Any]], repeats: int) -> list[tuple[float, Any]]:
    """Best wall-clock time of each function, the functions taking turns so a busy spell hits all of them alike."""
    times: list[list[float]] = [[] for _ in functions]
    results: list[Any] = [None] * len(functions)
    for _ in range(repeats):
        for position, function in enumerate(functions):
            started = time.perf_counter()
            results[position] = function()
            times[position].append(time.perf_counter() - started)
    return [(min(spent), result) for spent, result in zip(times, results)]


# ---------------------------------------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--samples", type=int, default=10_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--modes", nargs="+", default=["float32", "int8", "16x8"])
    parser.add_argument("--workdir", type=Path, help="Keep converted models and data here (default: a temp dir).")
    arguments = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="tflq-eval-bench-") as temporary:
        workdir = arguments.workdir or Path(temporary)
        workdir.mkdir(parents=True, exist_ok=True)
        sets = sample_model_sets(workdir, arguments.samples) or fallback_set(workdir, arguments.samples)
        print(
            f"eval_throughput: {arguments.samples} samples, best of {arguments.repeats}; {platform.processor() or platform.machine()}, "
            f"{machine_threads()} cores, load {os.getloadavg()[0]:.2f}; tflq: default threads (the idle cores, now "
            f"{idle_threads()}), naive: the interpreter's default (1)"
        )
        header = (
            f"{'model':<16} {'mode':<8} {'naive s':>8} {'tflq s':>8} {'ratio':>6} {'1-thr s':>8} {'ratio':>6} "
            f"{'engine s':>8}  {'same argmax':>11} {'max |diff|':>10}  accuracy naive / tflq"
        )
        print(header)
        print("-" * len(header))
        ratios: dict[tuple[str, str], float] = {}
        for name, model, calibration, data in sets:
            for mode, tflite_path in convert(model, calibration, arguments.modes, workdir / name):
                (naive_seconds, (naive_predictions, naive_top1)), (tflq_seconds, tflq_top1), (single_seconds, _), (
                    engine_seconds, engine
                ) = best_times(
                    [
                        lambda: naive_accuracy(tflite_path, data),
                        lambda: tflq_accuracy(tflite_path, data, None),
                        lambda: tflq_accuracy(tflite_path, data, 1),
                        lambda: run_tflite(str(tflite_path), EvalSettings(runs=0, threads=1), str(data)),
                    ],
                    arguments.repeats,
                )
                agreement, difference = [], 0.0
                for output, expected in naive_predictions.items():
                    got = engine.predictions[output]
                    difference = max(difference, float(np.max(np.abs(got - expected))))
                    if expected.ndim == 2 and expected.shape[1] > 1:
                        agreement.append(float(np.mean(got.argmax(1) == expected.argmax(1)) * 100))
                ratio = naive_seconds / tflq_seconds
                ratios[(name, mode)] = ratio
                accuracy = ", ".join(
                    f"{naive_top1[key]:.2f} / {tflq_top1.get(key, float('nan')):.2f}" for key in naive_top1
                )
                print(
                    f"{name:<16} {mode:<8} {naive_seconds:8.3f} {tflq_seconds:8.3f} {ratio:5.2f}x "
                    f"{single_seconds:8.3f} {naive_seconds / single_seconds:5.2f}x {engine_seconds:8.3f}  "
                    f"{min(agreement) if agreement else float('nan'):10.2f}% {difference:10.2e}  {accuracy}"
                )
        print(f"load average after: {os.getloadavg()[0]:.2f}")
        print()
        cnn = [ratio for (name, mode), ratio in ratios.items() if name in ("digits_cnn", "small_cnn") and mode == "float32"]
        slowest = min(ratios.values()) if ratios else float("nan")
        if cnn:
            print(f"digits CNN float32: tflq {cnn[0]:.2f}x the naive loop (target >= 1.5x): {'ok' if cnn[0] >= 1.5 else 'MISSED'}")
        print(f"slowest ratio over every model and mode: {slowest:.2f}x (target: never below 1.0x): {'ok' if slowest >= 1.0 else 'MISSED'}")


if __name__ == "__main__":
    main()
