"""Accuracy against labels and agreement with a reference, per model output. Plain numpy, no interpreter.

Predictions and labels carry the batch axis first. Accuracies and agreement rates are fractions in [0, 1]
(as Keras and scikit-learn report them); reports show them as percentages.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from tflq.errors import DataError, UsageError
from tflq.measure.tasks import CLASSIFICATION, REGRESSION


@dataclass(frozen=True)
class OutputAccuracy:
    """Accuracy of one output on labelled data: ``top1``/``top5`` (fractions) for a classifier, ``mae``/``rmse`` for a
    regression output. ``top5`` is None when the output has 5 classes or fewer."""

    output: str
    kind: str  # "classification" or "regression"
    top1: float | None = None
    top5: float | None = None
    mae: float | None = None
    rmse: float | None = None

    def to_dict(self) -> dict[str, Any]:
        if self.kind == CLASSIFICATION:
            return {"task": self.kind, "top1": self.top1, "top5": self.top5}
        return {"task": self.kind, "mae": self.mae, "rmse": self.rmse}


@dataclass(frozen=True)
class OutputAgreement:
    """How closely one output follows the reference's.

    ``task``: classification or regression; ``top1``: fraction of samples with the same arg-max class (None for a
    regression output); ``sqnr_db``:
    10·log10(Σref² / Σ(ref−out)²), None when not finite (identical outputs, or an all-zero reference);
    ``max_abs_error``; ``cosine``:
    mean over samples of the cosine similarity of the flattened outputs.
    """

    output: str
    top1: float | None
    sqnr_db: float | None
    max_abs_error: float
    cosine: float
    task: str = CLASSIFICATION

    def to_dict(self) -> dict[str, Any]:
        return {
            "task": self.task, "top1": self.top1, "sqnr_db": self.sqnr_db, "max_abs_error": self.max_abs_error,
            "cosine": self.cosine,
        }


def is_class_scores(predictions: np.ndarray) -> bool:
    """An output of shape (N, C) with C >= 2 is read as class scores (logits or probabilities)."""
    return predictions.ndim == 2 and predictions.shape[1] >= 2


def decide_task(output: str, predictions: np.ndarray, labels: np.ndarray | None, override: str | None = None) -> str:
    """Classification or regression for one output (the rule in :mod:`tflq.measure.tasks`): ``override`` when given
    (checked: classification needs class scores (N, C), C >= 2), else class scores whose labels (if any) are class
    labels.

    Raises UsageError when ``override`` is classification for an output that gives no class scores.
    """
    if override == CLASSIFICATION and not is_class_scores(predictions):
        raise UsageError(
            f"task classification for output '{output}' needs class scores of shape (N, C) with C >= 2; "
            f"the output gives {tuple(predictions.shape)}"
        )
    if override is not None:
        return override
    if not is_class_scores(predictions):
        return REGRESSION
    if labels is not None and not _looks_like_class_labels(np.asarray(labels), predictions.shape[1]):
        return REGRESSION
    return CLASSIFICATION


def output_accuracy(
    output: str, predictions: np.ndarray, labels: np.ndarray, *, source: str = "data", task: str | None = None
) -> OutputAccuracy:
    """Accuracy of ``predictions`` (N, ...) against ``labels`` for ``task`` (default: :func:`decide_task`).

    Classification (class scores (N, C) with integer labels (N,) / (N, 1) or one-hot labels (N, C)) gives
    top-1/top-5; regression (labels of the output's own shape) gives MAE/RMSE. Raises DataError when the labels do not
    fit the task (wrong length, shape or class index out of range), naming ``source`` and the output.
    """
    labels = np.asarray(labels)
    count = len(predictions)
    if len(labels) != count:
        raise DataError(f"{source}: {len(labels)} labels for output '{output}' but {count} samples")
    task = task or decide_task(output, predictions, labels)
    if task == CLASSIFICATION:
        classes = predictions.shape[1]
        if not _looks_like_class_labels(labels, classes):
            raise DataError(
                f"{source}: output '{output}' is scored as classification, so its labels must be class indices (N,) "
                f"or one-hot rows (N, {classes}); found labels of shape {labels.shape} and dtype {labels.dtype}"
            )
        if labels.ndim == 2 and labels.shape[1] == classes:
            label_classes = labels.argmax(axis=1)
        else:
            label_classes = labels.reshape(count).astype(np.int64)
            if label_classes.min() < 0 or label_classes.max() >= classes:
                raise DataError(
                    f"{source}: labels for output '{output}' range {label_classes.min()}..{label_classes.max()}; "
                    f"the output has {classes} classes"
                )
        top1 = float(np.mean(predictions.argmax(axis=1) == label_classes))
        top5 = None
        if classes > 5:
            top5_classes = np.argpartition(-predictions, 5, axis=1)[:, :5]
            top5 = float(np.mean(np.any(top5_classes == label_classes[:, None], axis=1)))
        return OutputAccuracy(output, "classification", top1=top1, top5=top5)
    target = labels.astype(np.float64)
    values = predictions.astype(np.float64)
    if target.shape != values.shape:
        if target.size == values.size and target.reshape(count, -1).shape == values.reshape(count, -1).shape:
            target = target.reshape(values.shape)
        else:
            raise DataError(
                f"{source}: labels for output '{output}' have shape {labels.shape}; the output gives "
                f"{predictions.shape} (a regression output needs labels of its own shape)"
            )
    errors = values - target
    return OutputAccuracy(
        output,
        "regression",
        mae=float(np.mean(np.abs(errors))),
        rmse=float(math.sqrt(np.mean(errors**2))),
    )


def _looks_like_class_labels(labels: np.ndarray, classes: int) -> bool:
    """Class indices ((N,) or (N, 1), integer values) or one-hot / probability rows ((N, C), values in [0, 1] that
    sum to 1): not, say, box coordinates of the output's shape."""
    if labels.dtype.kind not in "biuf":
        return False
    if labels.ndim == 2 and labels.shape[1] == classes and classes > 1:
        values = labels.astype(np.float64)
        return bool(
            np.all((values >= 0.0) & (values <= 1.0)) and np.allclose(values.sum(axis=1), 1.0, atol=1e-3)
        )
    if labels.ndim == 1 or (labels.ndim == 2 and labels.shape[1] == 1):
        return bool(np.issubdtype(labels.dtype, np.integer) or np.all(np.mod(labels, 1) == 0))
    return False


def output_agreement(
    output: str, predictions: np.ndarray, reference: np.ndarray, *, task: str | None = None
) -> OutputAgreement:
    """Agreement of ``predictions`` with ``reference`` (same shape, (N, ...)); top-1 only for a classification
    output (``task``, default: :func:`decide_task` without labels). Raises DataError on a shape mismatch."""
    if predictions.shape != reference.shape:
        raise DataError(
            f"output '{output}' has shape {predictions.shape}; the reference gives {reference.shape}"
        )
    values = predictions.astype(np.float64).reshape(len(predictions), -1)
    expected = reference.astype(np.float64).reshape(len(reference), -1)
    difference = values - expected
    noise = float(np.sum(difference**2))
    signal = float(np.sum(expected**2))
    sqnr_db = 10.0 * math.log10(signal / noise) if noise > 0.0 and signal > 0.0 else None
    norms = np.linalg.norm(values, axis=1) * np.linalg.norm(expected, axis=1)
    dots = np.sum(values * expected, axis=1)
    both_zero = (np.linalg.norm(values, axis=1) == 0) & (np.linalg.norm(expected, axis=1) == 0)
    cosines = np.where(norms > 0, dots / np.where(norms > 0, norms, 1.0), np.where(both_zero, 1.0, 0.0))
    task = task or decide_task(output, predictions, None)
    top1 = None
    if task == CLASSIFICATION:
        top1 = float(np.mean(predictions.argmax(axis=1) == reference.argmax(axis=1)))
    return OutputAgreement(
        output,
        task=task,
        top1=top1,
        sqnr_db=sqnr_db,
        max_abs_error=float(np.max(np.abs(difference))) if difference.size else 0.0,
        cosine=float(np.mean(cosines)) if len(cosines) else 1.0,
    )
