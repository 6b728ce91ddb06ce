"""One score per ``.tflite`` for ``tflq debug`` and ``tflq auto``: top-1 on evaluation data, in percent.

With labels the score is top-1 accuracy. Without labels it is top-1 agreement with a reference, which is either the
model the user named with ``--reference`` or the model's own float32 conversion. So an "accuracy drop" is measured
against the float32 model either way. The score is the mean over the model's classifier outputs, those whose
predictions are class scores of shape (N, C) with C >= 2. An output that is not a classifier cannot give points
of accuracy.
"""
from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from tflq import _tf
from tflq.data import Batch, ImageOptions, open_data
from tflq.errors import DataError, InterpreterError, UsageError
from tflq.models import ExportedModel, ModelOptions

EVAL_BATCH = 64


@dataclass(frozen=True)
class Score:
    """What scoring one model gave: ``value`` in percent (0-100), on ``samples`` samples."""

    value: float
    samples: int


class Evaluator:
    """Scores ``.tflite`` files of one model on one evaluation set.

    ``float_model`` gives the path of the model's float32 ``.tflite``. It is called only when the data has no labels
    and no ``reference`` is given, because the float32 model is then the reference.
    """

    def __init__(
        self,
        data: str,
        exported: ExportedModel,
        *,
        float_model: Callable[[], Path],
        reference: str | None = None,
        limit: int | None = None,
        images: ImageOptions | None = None,
        model_options: ModelOptions | None = None,
    ) -> None:
        self.data = data
        self.exported = exported
        self.limit = limit
        self.images = images
        probe = open_data(data, exported.inputs, outputs=exported.outputs, limit=1, role="evaluation", images=images)
        next(probe.batches(1))  # bad data fails here, before any conversion
        self.labelled = probe.has_labels and reference is None
        self._reference_predictions: dict[str, np.ndarray] | None = None
        if self.labelled:
            self.metric = "top-1 accuracy"
        elif reference is not None:
            self.metric = f"top-1 agreement with {reference}"
            self._reference_predictions = _reference_predictions(reference, self, model_options)
        else:
            self.metric = "top-1 agreement with the float32 model"
            self._reference_predictions = predict(float_model(), self.batches())

    def batches(self) -> Iterator[Batch]:
        """The evaluation data, batch by batch (read again on every call)."""
        dataset = open_data(
            self.data, self.exported.inputs, outputs=self.exported.outputs, limit=self.limit, role="evaluation",
            images=self.images,
        )
        return dataset.batches(EVAL_BATCH)

    def score(self, tflite_path: Path) -> Score:
        """Top-1 (%) of the model at ``tflite_path``. Raises InterpreterError, DataError or UsageError."""
        predictions, labels = predict_with_labels(tflite_path, self.batches())
        samples = len(next(iter(predictions.values())))
        if self.labelled:
            targets = {name: _label_classes(name, value, predictions[name]) for name, value in labels.items() if name in predictions}
        else:
            targets = {
                name: np.asarray(value).argmax(axis=-1)
                for name, value in (self._reference_predictions or {}).items()
                if name in predictions and _is_class_scores(predictions[name])
            }
        scores = [
            float(np.mean(predictions[name].argmax(axis=-1) == target) * 100.0)
            for name, target in targets.items()
            if _is_class_scores(predictions[name])
        ]
        if not scores:
            outputs = ", ".join(f"{name} {tuple(value.shape[1:])}" for name, value in predictions.items())
            raise UsageError(
                f"{self.data}: accuracy needs a classifier output (class scores of shape (N, C)) with labels or a "
                f"reference; the model's outputs are {outputs}"
            )
        return Score(value=float(np.mean(scores)), samples=samples)


def _is_class_scores(values: np.ndarray) -> bool:
    return values.ndim == 2 and values.shape[1] >= 2


def _label_classes(output: str, labels: np.ndarray, predictions: np.ndarray) -> np.ndarray:
    labels = np.asarray(labels)
    if labels.ndim == 2 and labels.shape[1] == predictions.shape[-1] and labels.shape[1] > 1:
        return labels.argmax(axis=1)
    classes = labels.reshape(len(labels)).astype(np.int64)
    if _is_class_scores(predictions) and (classes.min() < 0 or classes.max() >= predictions.shape[1]):
        raise DataError(
            f"labels for output {output!r} range {classes.min()}..{classes.max()}; the output has "
            f"{predictions.shape[1]} classes"
        )
    return classes


def _reference_predictions(reference: str, evaluator: Evaluator, model_options: ModelOptions | None) -> dict[str, np.ndarray]:
    if reference.endswith(".tflite"):
        return predict(Path(reference), evaluator.batches())
    import tempfile

    from tflq.models import Reference, export_model

    with tempfile.TemporaryDirectory(prefix="tflq-reference-") as folder:
        model = Reference(export_model(Path(reference), Path(folder) / "saved_model", model_options or ModelOptions()))
        found: dict[str, list[np.ndarray]] = {}
        for batch in evaluator.batches():
            for name, value in model.predict(batch.inputs).items():
                found.setdefault(name, []).append(value)
    predictions = {name: np.concatenate(values) for name, values in found.items()}
    if len(predictions) == 1 and len(evaluator.exported.outputs) == 1:
        return {evaluator.exported.outputs[0].name: next(iter(predictions.values()))}
    missing = [spec.name for spec in evaluator.exported.outputs if spec.name not in predictions]
    if missing:
        raise UsageError(f"reference {reference} has outputs {sorted(predictions)}; the model has {[s.name for s in evaluator.exported.outputs]}")
    return predictions


class _Runner:
    """A LiteRT signature runner that takes float inputs and gives float outputs, batch by batch."""

    def __init__(self, tflite_path: Path) -> None:
        from ai_edge_litert.interpreter import Interpreter

        try:
            with _tf.quiet():
                self.interpreter = Interpreter(model_path=str(tflite_path))
                self.runner = self.interpreter.get_signature_runner()
        except (RuntimeError, ValueError) as error:
            raise InterpreterError(f"{tflite_path}: cannot load: {' '.join(str(error).split())}") from None
        self.path = tflite_path
        self.inputs = self.runner.get_input_details()
        self.outputs = self.runner.get_output_details()

    def __call__(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        feeds = {name: _quantize(inputs[name], detail) for name, detail in self.inputs.items()}
        try:
            results = self.runner(**feeds)
        except (RuntimeError, ValueError) as error:
            raise InterpreterError(f"{self.path}: invoke failed: {' '.join(str(error).split())}") from None
        return {name: _dequantize(value, self.outputs[name]) for name, value in results.items()}


def _quantize(value: np.ndarray, detail: dict[str, Any]) -> np.ndarray:
    dtype = np.dtype(detail["dtype"])
    if dtype.kind in "iu" and np.asarray(value).dtype.kind == "f":
        scale, zero_point = detail["quantization"]
        info = np.iinfo(dtype)
        return np.clip(np.round(value / (scale or 1.0) + zero_point), info.min, info.max).astype(dtype)
    return np.asarray(value, dtype=dtype)


def _dequantize(value: np.ndarray, detail: dict[str, Any]) -> np.ndarray:
    if np.dtype(detail["dtype"]).kind in "iu" and detail["quantization"][0]:
        scale, zero_point = detail["quantization"]
        return (value.astype(np.float32) - zero_point) * np.float32(scale)
    return np.asarray(value)


def predict_with_labels(tflite_path: Path, batches: Iterator[Batch]) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Run a ``.tflite`` over every batch; returns (predictions by output, labels by output)."""
    runner = _Runner(tflite_path)
    outputs: dict[str, list[np.ndarray]] = {}
    labels: dict[str, list[np.ndarray]] = {}
    for batch in batches:
        with _tf.quiet():  # the interpreter announces its delegate when it allocates
            predictions = runner(batch.inputs)
        for name, value in predictions.items():
            outputs.setdefault(name, []).append(value)
        for name, value in batch.labels.items():
            labels.setdefault(name, []).append(np.asarray(value))
    if not outputs:
        raise DataError("no evaluation samples")
    return (
        {name: np.concatenate(values) for name, values in outputs.items()},
        {name: np.concatenate(values) for name, values in labels.items()},
    )


def predict(tflite_path: Path, batches: Iterator[Batch]) -> dict[str, np.ndarray]:
    """Run a ``.tflite`` over every batch; returns the predictions by output name."""
    return predict_with_labels(tflite_path, batches)[0]


def latency_ms(tflite_path: Path, sample: dict[str, np.ndarray], *, runs: int = 50, warmup: int = 5) -> float:
    """Median latency (ms) of one inference on ``sample`` (batch of one), after ``warmup`` runs."""
    runner = _Runner(tflite_path)
    feeds = {name: _quantize(sample[name], detail) for name, detail in runner.inputs.items()}
    with _tf.quiet():
        runner.runner(**feeds)
    for _ in range(warmup):
        runner.runner(**feeds)
    timings = []
    for _ in range(runs):
        started = time.perf_counter()
        runner.runner(**feeds)
        timings.append((time.perf_counter() - started) * 1000.0)
    return statistics.median(timings)
