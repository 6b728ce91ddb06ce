"""The training step of a training mode (``qat``) inside a conversion: its options, the labelled data read through
the one data layer, one fine-tune per model, and the summary every ``qat`` artifact carries.

:mod:`tflq.qat.quantize_aware` does the work (bridge, loss, tfmot training, export).
:class:`tflq.convert.session.ModelSession` calls :func:`train_for_conversion` once per model and converts every I/O
type from its one export.
"""
from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from tflq._tf import imports as _tf
from tflq.errors import DataError, UsageError
from tflq.model.data import Batch, ImageOptions, open_data
from tflq.model.load import ExportedModel, ModelOptions, custom_objects_dict
from tflq.qat.options import MAX_COUNT, QatOptions  # noqa: F401 (re-exported)


@dataclass(frozen=True)
class TrainingSummary:
    """What the fine-tuning of a training mode (``qat``) did; in ``Artifact.training``, ``--json`` and reports.

    ``seconds`` is the time in ``fit``; ``prepare_seconds`` the rest of what QAT costs before conversion (load and
    bridge the model, read the data, export the trained model). ``final`` holds the last epoch's figures
    (``loss``, ``accuracy``, ``val_loss``, ``val_accuracy``...).
    """

    epochs: int
    batch_size: int
    learning_rate: float
    seed: int
    loss: str
    loss_source: str
    train_samples: int
    val_samples: int | None
    seconds: float
    prepare_seconds: float
    final: Mapping[str, float]

    @property
    def val_metric(self) -> tuple[str, float] | None:
        """The final validation figure to show: an accuracy if there is one, else the validation loss."""
        names = sorted(name for name in self.final if name.startswith("val_"))
        chosen = [name for name in names if name.endswith("accuracy")] or [name for name in names if name == "val_loss"]
        return (chosen[0], self.final[chosen[0]]) if chosen else None

    def to_dict(self) -> dict[str, Any]:
        metric = self.val_metric
        return {
            "epochs": self.epochs,
            "batch_size": self.batch_size,
            "learning_rate": self.learning_rate,
            "seed": self.seed,
            "loss": self.loss,
            "loss_source": self.loss_source,
            "train_samples": self.train_samples,
            "val_samples": self.val_samples,
            "seconds": round(self.seconds, 3),
            "prepare_seconds": round(self.prepare_seconds, 3),
            "final": {name: round(value, 6) for name, value in self.final.items()},
            "val_metric": metric[0] if metric else None,
            "val_value": round(metric[1], 6) if metric else None,
        }


@dataclass(frozen=True)
class TrainedModel:
    """A training mode's product: the trained export every I/O type converts from, and its representative samples."""

    saved_model_dir: Path
    signature_key: str
    samples: list[dict[str, np.ndarray]]
    summary: TrainingSummary


def train_for_conversion(
    model_path: Path,
    exported: ExportedModel,
    settings: QatOptions,
    *,
    model_options: ModelOptions,
    images: ImageOptions,
    representative_samples: int,
    workdir: Path,
) -> TrainedModel:
    """Fine-tune the model at ``model_path`` with QAT as ``settings`` say; export it under ``workdir``.

    ``exported`` is the model's interface: the data layer checks the data against it. The first
    ``representative_samples`` training samples become the conversion's representative samples.

    Returns a :class:`TrainedModel`. Raises QatError/UsageError/DataError when the model, its loss or the data cannot
    be used (all checked before training starts), QatTrainingError when training diverges, and ConversionError when
    the trained model cannot be exported.
    """
    from tflq.qat import quantize_aware as qat

    if not settings.train_data:
        raise UsageError("mode qat needs labelled training data: pass --train-data DATA")
    start = time.perf_counter()
    custom = custom_objects_dict(model_options.custom_objects) or None
    with _tf.quiet():
        model = qat.load_for_qat(model_path, custom_objects=custom, unsafe=model_options.unsafe_deserialization)
        qat.check_qat_support(model)  # a layer tfmot cannot take fails here, before any data is read
        losses = qat.resolve_loss(model, loss=settings.loss, from_logits=settings.from_logits)
    train = _labelled(exported, images, settings.train_data, "training", model)
    qat.check_training_labels(model, losses, train[1], settings.train_data)
    val = None
    if settings.val_data:
        val = _labelled(exported, images, settings.val_data, "validation", model)
        qat.check_training_labels(model, losses, val[1], settings.val_data)
    prepare = time.perf_counter() - start
    with _tf.quiet(keep_stderr=settings.progress):
        result = qat.train_qat(
            model, train, epochs=settings.epochs, batch_size=settings.batch_size,
            learning_rate=settings.learning_rate, loss=losses, val=val, seed=settings.seed,
            progress=settings.progress,
        )
    start = time.perf_counter()
    with _tf.quiet():
        export = qat.export_qat_saved_model(result, workdir / "qat_saved_model")
    prepare += time.perf_counter() - start
    inputs = train[0]
    count = min(representative_samples, len(next(iter(inputs.values()))))
    names = list(zip(export.input_names, model.input_names, strict=True))  # the export keeps the model's input order
    samples = [
        {exported_name: inputs[name][index:index + 1] for exported_name, name in names} for index in range(count)
    ]
    summary = TrainingSummary(
        epochs=settings.epochs,
        batch_size=settings.batch_size,
        learning_rate=settings.learning_rate,
        seed=settings.seed,
        loss=", ".join(dict.fromkeys(spec.describe() for spec in result.losses)),
        loss_source=result.losses[0].source,
        train_samples=len(next(iter(inputs.values()))),
        val_samples=len(next(iter(val[0].values()))) if val is not None else None,
        seconds=result.seconds,
        prepare_seconds=prepare,
        final={name: values[-1] for name, values in result.history.items() if values},
    )
    return TrainedModel(export.path, "serving_default", samples, summary)


def _labelled(
    exported: ExportedModel, images: ImageOptions, spec: str, role: str, model: Any
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Read training/validation data through the data layer; returns (x, y) keyed by the tf_keras model's input and
    output names. Raises DataError when the data has no labels (or does not fit the model)."""
    outputs = exported.outputs
    batch: Batch = open_data(spec, exported.inputs, outputs=outputs, role=role, images=images).load()
    missing = [output.name for output in outputs if output.name not in batch.labels]
    if missing:
        which = "" if not batch.labels else f" for output(s) {', '.join(missing)}"
        raise DataError(
            f"{spec}: the {role} data has no labels{which}; QAT trains on labelled data: a .npz with key 'y' "
            "(y_<output> per output), an image folder with class subfolders, or module:function yielding dicts with 'y'"
        )
    return (
        _by_names(batch.inputs, list(model.input_names), spec, "input"),
        _by_names(batch.labels, list(model.output_names), spec, "output"),
    )


def _by_names(arrays: dict[str, np.ndarray], names: list[str], spec: str, kind: str) -> dict[str, np.ndarray]:
    """Key data arrays by the training model's names (one array for one tensor goes whatever its key)."""
    if len(arrays) == 1 and len(names) == 1:
        return {names[0]: next(iter(arrays.values()))}
    missing = [name for name in names if name not in arrays]
    if missing:
        raise DataError(f"{spec}: the model being trained has {kind}s {names}; the data has {sorted(arrays)}")
    return {name: arrays[name] for name in names}
