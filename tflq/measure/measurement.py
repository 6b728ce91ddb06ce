"""What measuring one ``.tflite`` gives and how it is scored: :class:`TfliteRun` (raw predictions),
:class:`ReferenceRun`, :class:`Measurement` (every figure, ``to_dict`` for the reports) and :func:`score` (accuracy
against labels and agreement with a reference, per output and by its task). Re-exported by :mod:`tflq.measure.harness`.
"""
from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from tflq.errors import DataError, UsageError
from tflq.measure.latency import LatencyStats
from tflq.measure.metrics import OutputAccuracy, OutputAgreement, decide_task, output_accuracy, output_agreement
from tflq.measure.tasks import TaskOverrides
from tflq.measure.tflite_info import Delegation, Signature, flatbuffer_signature


@dataclass(frozen=True)
class TfliteRun:
    """What running one ``.tflite`` gives before scoring: predictions (dequantized float32, by output name) and the
    data's labels (by output name) when data was given."""

    tflite_path: str
    signature: Signature
    delegation: Delegation
    threads: int
    latency: LatencyStats | None
    predictions: dict[str, np.ndarray] | None
    labels: dict[str, np.ndarray]
    samples: int
    batch_size: int | None
    batched: bool
    evaluation_threads: int | None = None


@dataclass(frozen=True)
class ReferenceRun:
    """Predictions of a reference model (Keras, SavedModel or ``.tflite``) on the evaluation data."""

    source: str
    output_names: tuple[str, ...]
    predictions: dict[str, np.ndarray]
    tensor_names: tuple[str, ...] = ()  # the outputs' tensor names, for a .tflite reference (same order)


@dataclass(frozen=True)
class Measurement:
    """Everything measured about one ``.tflite``. ``error`` is set (and ``status`` is ``"error"``) when the file could
    not be measured; the other figures are then mostly None."""

    tflite_path: str
    size_bytes: int | None
    size_ratio: float | None = None
    threads: int | None = None
    latency: LatencyStats | None = None
    delegation: Delegation | None = None
    signature: Signature | None = None
    accuracy: tuple[OutputAccuracy, ...] = ()
    agreement: tuple[OutputAgreement, ...] = ()
    samples: int = 0
    batch_size: int | None = None
    evaluation_threads: int | None = None
    reference: str | None = None
    warnings: tuple[str, ...] = ()
    error: str | None = None
    tasks: tuple[tuple[str, str], ...] = ()  # (output name, classification / regression) when data was given

    @property
    def status(self) -> str:
        return "ok" if self.error is None else "error"

    def to_dict(self) -> dict[str, Any]:
        """Every figure under stable JSON keys (documented in README.md, "The columns and JSON keys")."""
        return {
            "path": self.tflite_path,
            "name": os.path.basename(self.tflite_path),
            "size_bytes": self.size_bytes,
            "size_ratio": self.size_ratio,
            "threads": self.threads,
            "latency_ms": self.latency.to_dict() if self.latency else None,
            "xnnpack": self.delegation.to_dict() if self.delegation else None,
            "tasks": dict(self.tasks) or None,
            "accuracy": _per_output(self.accuracy),
            "agreement": _per_output(self.agreement),
            "reference": self.reference,
            "samples": self.samples,
            "batch_size": self.batch_size,
            "evaluation_threads": self.evaluation_threads,
            "inputs": [tensor.to_dict() for tensor in self.signature.inputs] if self.signature else None,
            "outputs": [tensor.to_dict() for tensor in self.signature.outputs] if self.signature else None,
            "status": self.status,
            "error": self.error,
            "warnings": list(self.warnings),
        }


def _per_output(results: Sequence[OutputAccuracy] | Sequence[OutputAgreement]) -> dict[str, Any] | None:
    """``{<output>: {...}}``, plus the figures unnested when there is a single output (``accuracy.top1``)."""
    if not results:
        return None
    nested: dict[str, Any] = {result.output: result.to_dict() for result in results}
    if len(results) == 1:
        nested.update(results[0].to_dict())
    return nested


def reference_of(run: TfliteRun) -> ReferenceRun:
    """A measured ``.tflite`` as the reference of the others."""
    outputs = run.signature.outputs
    return ReferenceRun(
        run.tflite_path, tuple(t.name for t in outputs), run.predictions or {}, tuple(t.tensor_name for t in outputs)
    )


def score(
    run: TfliteRun,
    size_bytes: int,
    size_ratio: float | None,
    *,
    reference: ReferenceRun | None,
    data: str | None,
    tasks: TaskOverrides | None = None,
) -> Measurement:
    """Turn a TfliteRun into a Measurement: accuracy against the data's labels, agreement with ``reference``, each
    output scored by its task (``tasks`` overrides :func:`tflq.measure.metrics.decide_task`).

    Raises DataError for labels that do not fit an output or label keys that match no output, UsageError for a
    reference with other outputs or a task naming no output.
    """
    source = data or "data"
    accuracy: list[OutputAccuracy] = []
    agreement: list[OutputAgreement] = []
    warnings: list[str] = []
    output_tasks: dict[str, str] = {}
    if run.predictions is not None:
        output_tasks = decide_tasks(run, tasks)
        warnings.extend(check_label_keys(data, run))
        for name, labels in run.labels.items():
            if name in run.predictions:
                accuracy.append(
                    output_accuracy(name, run.predictions[name], labels, source=source, task=output_tasks[name])
                )
        if reference is not None:
            for name, reference_name in match_outputs(run, reference).items():
                predictions, expected = run.predictions[name], reference.predictions[reference_name]
                if len(expected) != len(predictions):
                    raise DataError(
                        f"{reference.source} gave {len(expected)} predictions, {run.tflite_path} {len(predictions)}"
                    )
                if predictions.shape[1:] != expected.shape[1:]:
                    raise UsageError(
                        f"reference {reference.source} output '{reference_name}' has shape {expected.shape[1:]} per "
                        f"sample; {run.tflite_path} output '{name}' has {predictions.shape[1:]}"
                    )
                agreement.append(output_agreement(name, predictions, expected, task=output_tasks[name]))
    # a noisy latency is not repeated in the warnings: ``latency_ms.noisy`` says it, reports sum it up
    if run.delegation.enabled and run.delegation.delegated_ops == 0:
        warnings.append("XNNPACK took no op: everything runs on the built-in kernels")
    return Measurement(
        tflite_path=run.tflite_path,
        size_bytes=size_bytes,
        size_ratio=size_ratio,
        threads=run.threads,
        latency=run.latency,
        delegation=run.delegation,
        signature=run.signature,
        accuracy=tuple(accuracy),
        agreement=tuple(agreement),
        samples=run.samples,
        batch_size=run.batch_size,
        evaluation_threads=run.evaluation_threads,
        reference=reference.source if reference is not None else None,
        warnings=tuple(warnings),
        tasks=tuple(output_tasks.items()),
    )


def decide_tasks(run: TfliteRun, tasks: TaskOverrides | None) -> dict[str, str]:
    """Output name -> classification / regression for a run with predictions. An override names an output by its
    signature name or tensor name (names no output of this model: not this model's; :func:`check_task_names` checks
    that each names some model's output). Raises UsageError for classification of an output without class scores."""
    predictions = run.predictions or {}
    return {
        tensor.name: decide_task(
            tensor.name, predictions[tensor.name], run.labels.get(tensor.name),
            tasks.for_output(tensor.name, tensor.tensor_name) if tasks else None,
        )
        for tensor in run.signature.outputs
        if tensor.name in predictions
    }


def check_task_names(tflite_paths: Sequence[str], tasks: TaskOverrides | None) -> None:
    """Raise UsageError, before measuring, for a task naming no output of any of the files (read from the files
    themselves; a file that cannot be read is left out; none readable: no check)."""
    if tasks is None or not tasks.by_output:
        return
    known: list[str] = []
    for path in tflite_paths:
        declared = flatbuffer_signature(path)
        for tensor in declared.outputs if declared else ():
            known.extend(name for name in (tensor.name, tensor.tensor_name) if name not in known)
    if not known:
        return
    for name, _ in tasks.by_output:
        if name not in known:
            raise UsageError(f"task for output '{name}': no such output; the models' outputs are {known}")


def check_label_keys(data: str | None, run: TfliteRun) -> list[str]:
    """Label keys of an ``.npz`` (``y``, ``y_<name>``) that match no output of the model.

    None matching while some exist: DataError naming the keys and the outputs (there would be no accuracy and no
    reason). Some matching: the others are returned as warnings (one data file can hold the labels of several
    models' heads).
    """
    if not data or not data.endswith(".npz") or not os.path.isfile(data):
        return []
    try:
        with np.load(data, allow_pickle=False) as archive:
            keys = list(archive.files)
    except (OSError, ValueError):  # the data layer has read it already; a file changed since is the data layer's
        return []
    names = [tensor.name for tensor in run.signature.outputs]
    inputs = {tensor.name for tensor in run.signature.inputs}
    accepted = {"y", f"y_{names[0]}"} if len(names) == 1 else {f"y_{name}" for name in names}
    label_keys = [key for key in keys if (key == "y" or key.startswith("y_")) and key not in inputs]
    unmatched = [key for key in label_keys if key not in accepted]
    if not unmatched:
        return []
    expected = "'y' or " + repr(f"y_{names[0]}") if len(names) == 1 else ", ".join(repr(f"y_{name}") for name in names)
    if len(unmatched) == len(label_keys):
        raise DataError(
            f"{data}: label key(s) {unmatched} match no output of {run.tflite_path}; its outputs are {names} "
            f"(expected label keys: {expected})"
        )
    return [f"label key(s) {unmatched} in {data} match no output (outputs: {names}): ignored"]


def match_outputs(run: TfliteRun, reference: ReferenceRun) -> dict[str, str]:
    """Pair the model's outputs with the reference's: by name, or by position when the names differ only because one
    side uses generic names (``output_0``...) or both have a single output.

    Raises UsageError naming both output lists when they cannot be paired.
    """
    names = [tensor.name for tensor in run.signature.outputs]
    reference_names = list(reference.output_names)
    if set(names) == set(reference_names):
        return {name: name for name in names}
    tensor_names = [tensor.tensor_name for tensor in run.signature.outputs]
    if len(set(tensor_names)) == len(names) and set(tensor_names) == set(reference.tensor_names):
        # A variant without SignatureDef (outputs named by tensor) next to one with: the same tensors.
        by_tensor = dict(zip(reference.tensor_names, reference_names, strict=True))
        return {name: by_tensor[tensor] for name, tensor in zip(names, tensor_names, strict=True)}
    generic = all(_is_generic(name) for name in names) or all(_is_generic(name) for name in reference_names)
    if len(names) == len(reference_names) and (len(names) == 1 or generic):
        return dict(zip(names, reference_names, strict=True))
    raise UsageError(
        f"reference {reference.source} has outputs {reference_names}; {run.tflite_path} has outputs {names}"
    )


def _is_generic(name: str) -> bool:
    name = name[:-2] if name.endswith(":0") else name  # tensor names of a model without SignatureDef
    prefix, _, number = name.rpartition("_")
    return prefix in ("output", "Identity", "StatefulPartitionedCall") and number.isdigit() or name == "Identity"
