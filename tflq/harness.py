"""Measure ``.tflite`` files with the LiteRT interpreter: size, latency, XNNPACK delegation, accuracy, agreement.

Public API:

* :func:`evaluate` measures several files, each in its own child process, and returns one :class:`Measurement`
  per file (a file that fails or crashes the interpreter gives a Measurement with ``error`` set);
* :func:`run_tflite` does the work for one file in the current process and returns the raw :class:`TfliteRun`;
* :class:`TfliteRunner` feeds float data through an allocated interpreter (quantizing inputs, dequantizing outputs,
  batching when the batch dimension is dynamic).

The latency protocol follows TFLite's ``benchmark_model``: init (interpreter creation + ``allocate_tensors``, which
applies XNNPACK), the first inference alone, a warm-up of at least ``warmup_runs`` runs and ``warmup_seconds``, then
at least ``runs`` timed runs and ``min_seconds`` (at most ``max_seconds``), batch of one.
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterable, Sequence

import numpy as np

from tflq.data import Dataset, open_data
from tflq.errors import DataError, InterpreterError, ModelLoadError, UsageError
from tflq.metrics import OutputAccuracy, OutputAgreement, output_accuracy, output_agreement
from tflq.models import ModelOptions
from tflq.tflite_info import (
    Delegation,
    Signature,
    TensorInfo,
    allocate,
    delegation_of,
    is_float_model,
    open_interpreter,
    read_flatbuffer,
    read_signature,
    tensor_specs,
)

if TYPE_CHECKING:
    from ai_edge_litert.interpreter import Interpreter

NOISY_CV = 0.15  # latency coefficient of variation above which the machine is called noisy
MAX_AUTO_BATCH = 256
AUTO_BATCH_BYTES = 8 * 1024 * 1024  # input bytes per evaluation batch when the batch size is automatic
PROGRESS_INTERVAL_SECONDS = 0.2
REFERENCE_BATCH = 256  # batch for a Keras / SavedModel reference

ProgressCallback = Callable[[str, int, "int | None"], None]


def machine_threads() -> int:
    """The cores this process may run on (the default ``threads``)."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return max(1, os.cpu_count() or 1)


@dataclass(frozen=True)
class EvalSettings:
    """How to measure. ``threads`` None means :func:`machine_threads`; ``runs`` 0 skips latency; ``batch_size``
    None picks one from the input size (dynamic-batch models only); ``limit`` caps the evaluation samples."""

    threads: int | None = None
    runs: int = 50
    min_seconds: float = 1.0
    warmup_runs: int = 1
    warmup_seconds: float = 0.5
    max_seconds: float = 150.0
    use_xnnpack: bool = True
    batch_size: int | None = None
    limit: int | None = None

    def __post_init__(self) -> None:
        checks = [
            (self.threads is None or self.threads >= 1, f"threads must be at least 1 (got {self.threads})"),
            (self.runs >= 0, f"runs must be 0 or more (got {self.runs})"),
            (self.warmup_runs >= 0, f"warm-up runs must be 0 or more (got {self.warmup_runs})"),
            (self.min_seconds >= 0 and self.warmup_seconds >= 0, "seconds must be 0 or more"),
            (self.max_seconds > 0, f"max seconds must be positive (got {self.max_seconds})"),
            (self.batch_size is None or self.batch_size >= 1, f"batch size must be at least 1 (got {self.batch_size})"),
            (self.limit is None or self.limit >= 1, f"sample limit must be at least 1 (got {self.limit})"),
        ]
        for ok, message in checks:
            if not ok:
                raise UsageError(message)

    @property
    def resolved_threads(self) -> int:
        return self.threads if self.threads is not None else machine_threads()


@dataclass(frozen=True)
class LatencyStats:
    """Latency in milliseconds, batch of one. ``cv`` = std / mean; ``noisy`` when cv > NOISY_CV."""

    init_ms: float
    first_ms: float
    mean_ms: float
    std_ms: float
    min_ms: float
    max_ms: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    runs: int
    warmup_runs: int

    @classmethod
    def from_timings(cls, *, init_ms: float, first_ms: float, timings_ms: Sequence[float], warmup_runs: int) -> LatencyStats:
        values = np.asarray(timings_ms, dtype=np.float64)
        p50, p90, p99 = np.percentile(values, [50, 90, 99])
        return cls(
            init_ms=init_ms,
            first_ms=first_ms,
            mean_ms=float(values.mean()),
            std_ms=float(values.std()),
            min_ms=float(values.min()),
            max_ms=float(values.max()),
            p50_ms=float(p50),
            p90_ms=float(p90),
            p99_ms=float(p99),
            runs=len(values),
            warmup_runs=warmup_runs,
        )

    @property
    def cv(self) -> float:
        return self.std_ms / self.mean_ms if self.mean_ms > 0 else 0.0

    @property
    def noisy(self) -> bool:
        return self.cv > NOISY_CV

    def to_dict(self) -> dict[str, Any]:
        return {
            "mean": self.mean_ms,
            "std": self.std_ms,
            "min": self.min_ms,
            "max": self.max_ms,
            "p50": self.p50_ms,
            "p90": self.p90_ms,
            "p99": self.p99_ms,
            "cv": self.cv,
            "init": self.init_ms,
            "first": self.first_ms,
            "runs": self.runs,
            "warmup_runs": self.warmup_runs,
            "noisy": self.noisy,
        }


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


@dataclass(frozen=True)
class ReferenceRun:
    """Predictions of a reference model (Keras, SavedModel or ``.tflite``) on the evaluation data."""

    source: str
    output_names: tuple[str, ...]
    predictions: dict[str, np.ndarray]


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
    reference: str | None = None
    warnings: tuple[str, ...] = ()
    error: str | None = None

    @property
    def status(self) -> str:
        return "ok" if self.error is None else "error"

    def to_dict(self) -> dict[str, Any]:
        """Every figure under stable JSON keys (documented in docs/eval.md)."""
        return {
            "path": self.tflite_path,
            "name": os.path.basename(self.tflite_path),
            "size_bytes": self.size_bytes,
            "size_ratio": self.size_ratio,
            "threads": self.threads,
            "latency_ms": self.latency.to_dict() if self.latency else None,
            "xnnpack": self.delegation.to_dict() if self.delegation else None,
            "accuracy": _per_output(self.accuracy),
            "agreement": _per_output(self.agreement),
            "reference": self.reference,
            "samples": self.samples,
            "batch_size": self.batch_size,
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


# ---------------------------------------------------------------------------------------------------------------
# Feeding data through an interpreter


def quantize(values: np.ndarray, tensor: TensorInfo) -> np.ndarray:
    """Float values to the tensor's storage dtype: round(x / scale) + zero_point (half away from zero, as TFLite's
    QUANTIZE kernel), clipped to the dtype's range. Non-quantized tensors are only cast."""
    dtype = np.dtype(tensor.dtype)
    if not tensor.quantized:
        return np.ascontiguousarray(values, dtype=dtype)
    scaled = np.divide(values, np.float32(tensor.scale), dtype=np.float32).astype(np.float64)
    rounded = np.trunc(scaled + np.copysign(0.5, scaled))  # half away from zero (exact in float64)
    rounded += tensor.zero_point
    limits = np.iinfo(dtype)
    np.clip(rounded, limits.min, limits.max, out=rounded)
    return rounded.astype(dtype)


def dequantize(values: np.ndarray, tensor: TensorInfo) -> np.ndarray:
    """Storage values to float32: (q - zero_point) * scale. Non-quantized outputs are returned as float32."""
    if not tensor.quantized:
        return values.astype(np.float32, copy=False) if values.dtype.kind == "f" else values
    return ((values.astype(np.float32) - np.float32(tensor.zero_point)) * np.float32(tensor.scale)).astype(np.float32)


class TfliteRunner:
    """Runs batches of float inputs through an allocated interpreter and returns float outputs, by signature name.

    When every input has a dynamic batch dimension the whole batch goes through one invoke (the input is resized only
    when the batch shape changes, e.g. for the last, shorter batch); otherwise samples go through one at a time
    (or in chunks of the static batch size, the last chunk padded and the padding dropped).
    """

    def __init__(self, interpreter: "Interpreter", signature: Signature, tflite_path: str) -> None:
        self.interpreter = interpreter
        self.signature = signature
        self.tflite_path = tflite_path
        self.batched = all(tensor.dynamic_batch for tensor in signature.inputs)
        self._current_shapes = {
            tensor.index: tuple(detail["shape"]) for tensor, detail in zip(signature.inputs, self._input_details())
        }

    def _input_details(self) -> list[dict[str, Any]]:
        by_index = {detail["index"]: detail for detail in self.interpreter.get_input_details()}
        return [by_index.get(tensor.index) or self.interpreter._get_tensor_details(tensor.index, 0)
                for tensor in self.signature.inputs]

    def predict(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Outputs (float32, by output name) for a batch of float inputs (by input name, batch axis first)."""
        stored = {tensor.index: quantize(inputs[tensor.name], tensor) for tensor in self.signature.inputs}
        count = len(next(iter(stored.values())))
        if self.batched:
            raw = self._invoke(stored)
        else:
            chunk = self.signature.inputs[0].shape[0] or 1
            pieces: dict[int, list[np.ndarray]] = {tensor.index: [] for tensor in self.signature.outputs}
            for start in range(0, count, chunk):
                part = {index: _padded(array[start:start + chunk], chunk) for index, array in stored.items()}
                for index, value in self._invoke(part).items():
                    pieces[index].append(value[: min(chunk, count - start)] if len(value) == chunk else value)
            raw = {index: np.concatenate(values) for index, values in pieces.items()}
        return {tensor.name: dequantize(raw[tensor.index], tensor) for tensor in self.signature.outputs}

    def _invoke(self, stored: dict[int, np.ndarray]) -> dict[int, np.ndarray]:
        self.ensure_shapes({index: array.shape for index, array in stored.items()})
        for index, array in stored.items():
            self.interpreter.set_tensor(index, array)
        try:
            self.interpreter.invoke()
        except (RuntimeError, ValueError) as error:
            raise InterpreterError(f"{self.tflite_path}: invoke failed ({' '.join(str(error).split())})") from None
        return {tensor.index: self.interpreter.get_tensor(tensor.index) for tensor in self.signature.outputs}

    def ensure_shapes(self, shapes: dict[int, tuple[int, ...]]) -> None:
        """Resize the inputs whose shape differs from ``shapes`` and re-allocate (once for all of them)."""
        changed = {index: shape for index, shape in shapes.items() if self._current_shapes.get(index) != tuple(shape)}
        if not changed:
            return
        for index, shape in changed.items():
            try:
                self.interpreter.resize_tensor_input(index, list(shape))
            except (RuntimeError, ValueError) as error:
                raise InterpreterError(f"{self.tflite_path}: cannot resize input to {tuple(shape)} ({error})") from None
            self._current_shapes[index] = tuple(shape)
        allocate(self.interpreter, self.tflite_path)


def _padded(array: np.ndarray, size: int) -> np.ndarray:
    if len(array) == size:
        return array
    padding = np.repeat(array[-1:], size - len(array), axis=0)
    return np.ascontiguousarray(np.concatenate([array, padding]))


def auto_batch_size(signature: Signature) -> int:
    """A batch that keeps the inputs near AUTO_BATCH_BYTES, a power of two in [1, MAX_AUTO_BATCH]."""
    sample_bytes = 0
    for tensor in signature.inputs:
        elements = int(np.prod([dim or 1 for dim in tensor.shape[1:]])) if len(tensor.shape) > 1 else 1
        sample_bytes += elements * 4
    batch = 1
    while batch * 2 <= MAX_AUTO_BATCH and batch * 2 * max(sample_bytes, 1) <= AUTO_BATCH_BYTES:
        batch *= 2
    return batch


# ---------------------------------------------------------------------------------------------------------------
# One file, in the current process (the child process of evaluate())


def run_tflite(
    tflite_path: str,
    settings: EvalSettings,
    data: str | None = None,
    *,
    measure_latency: bool = True,
    report: Callable[..., None] | None = None,
) -> TfliteRun:
    """Load, time and evaluate one ``.tflite`` in this process.

    Returns the TfliteRun. Raises ModelLoadError (missing file), InterpreterError (file the interpreter refuses or
    fails to run), DataError (data that does not fit the model).
    """
    threads = settings.resolved_threads
    started = time.perf_counter()
    interpreter = open_interpreter(tflite_path, threads=threads, use_xnnpack=settings.use_xnnpack)
    allocate(interpreter, tflite_path)
    init_ms = (time.perf_counter() - started) * 1000.0
    signature = read_signature(interpreter, tflite_path)
    delegation = delegation_of(interpreter, enabled=settings.use_xnnpack)
    runner = TfliteRunner(interpreter, signature, tflite_path)
    dataset = open_dataset(data, signature, limit=settings.limit) if data else None

    latency = None
    if measure_latency and settings.runs > 0:
        sample = _first_sample(dataset) if dataset is not None else _synthetic_sample(signature)
        latency = time_invocations(runner, sample, settings, init_ms=init_ms)

    predictions = None
    labels: dict[str, np.ndarray] = {}
    samples = 0
    batch_size = None
    if dataset is not None:
        batch_size = (settings.batch_size or auto_batch_size(signature)) if runner.batched else 1
        predictions, labels, samples = predict_dataset(
            lambda inputs: runner.predict(inputs), dataset, batch_size, report=report
        )
    return TfliteRun(
        tflite_path=tflite_path,
        signature=signature,
        delegation=delegation,
        threads=threads,
        latency=latency,
        predictions=predictions,
        labels=labels,
        samples=samples,
        batch_size=batch_size,
        batched=runner.batched,
    )


def time_invocations(
    runner: TfliteRunner, sample: dict[str, np.ndarray], settings: EvalSettings, *, init_ms: float
) -> LatencyStats:
    """The latency protocol on one sample (batch of one): first run, warm-up, timed runs."""
    interpreter = runner.interpreter
    stored = {tensor.index: quantize(sample[tensor.name], tensor) for tensor in runner.signature.inputs}
    runner.ensure_shapes({index: array.shape for index, array in stored.items()})
    for index, array in stored.items():
        interpreter.set_tensor(index, array)
    clock = time.perf_counter
    try:
        started = clock()
        interpreter.invoke()
        first_ms = (clock() - started) * 1000.0
        warmup_runs = 0
        warmup_started = clock()
        while warmup_runs < settings.warmup_runs or clock() - warmup_started < settings.warmup_seconds:
            interpreter.invoke()
            warmup_runs += 1
            if clock() - warmup_started > settings.max_seconds:
                break
        timings_ms = []
        timed_started = clock()
        while len(timings_ms) < settings.runs or clock() - timed_started < settings.min_seconds:
            started = clock()
            interpreter.invoke()
            timings_ms.append((clock() - started) * 1000.0)
            if clock() - timed_started > settings.max_seconds:
                break
    except (RuntimeError, ValueError) as error:
        raise InterpreterError(f"{runner.tflite_path}: invoke failed ({' '.join(str(error).split())})") from None
    return LatencyStats.from_timings(init_ms=init_ms, first_ms=first_ms, timings_ms=timings_ms, warmup_runs=warmup_runs)


def predict_dataset(
    predict: Callable[[dict[str, np.ndarray]], dict[str, np.ndarray]],
    dataset: Dataset,
    batch_size: int,
    *,
    report: Callable[..., None] | None = None,
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray], int]:
    """Run ``predict`` over every batch. Returns (predictions by output, labels by output, sample count)."""
    total = dataset.count
    outputs: dict[str, list[np.ndarray]] = {}
    labels: dict[str, list[np.ndarray]] = {}
    done = 0
    last_report = time.monotonic()
    if report is not None:
        report("progress", 0, total)
    for batch in dataset.batches(batch_size):
        for name, values in predict(batch.inputs).items():
            outputs.setdefault(name, []).append(values)
        for name, values in batch.labels.items():
            labels.setdefault(name, []).append(np.asarray(values))
        done += len(next(iter(batch.inputs.values())))
        if report is not None and time.monotonic() - last_report > PROGRESS_INTERVAL_SECONDS:
            report("progress", done, total)
            last_report = time.monotonic()
    if done == 0:
        raise DataError(f"{dataset.source}: no samples")
    if report is not None:
        report("progress", done, total if total is not None else done)
    return (
        {name: np.concatenate(values) for name, values in outputs.items()},
        {name: np.concatenate(values) for name, values in labels.items()},
        done,
    )


def open_dataset(data: str, signature: Signature, *, limit: int | None) -> Dataset:
    """The data layer's dataset for this model's inputs and outputs (logical float specs)."""
    return open_data(
        data, tensor_specs(signature.inputs), outputs=tensor_specs(signature.outputs), limit=limit, role="evaluation"
    )


def _first_sample(dataset: Dataset) -> dict[str, np.ndarray]:
    for batch in dataset.batches(1):
        return batch.inputs
    raise DataError(f"{dataset.source}: no samples")


def _synthetic_sample(signature: Signature) -> dict[str, np.ndarray]:
    """Random inputs of batch one, as benchmark_model uses when no data is given."""
    generator = np.random.default_rng(0)
    sample = {}
    for tensor in signature.inputs:
        shape = tuple(1 if dim is None else dim for dim in tensor.shape)
        if len(shape) > 0:
            shape = (1,) + shape[1:]
        if np.dtype(tensor.logical_dtype).kind == "f":
            sample[tensor.name] = generator.random(shape, dtype=np.float32)
        else:
            sample[tensor.name] = generator.integers(0, 2, shape).astype(tensor.dtype)
    return sample


def run_reference(
    reference: str,
    data: str,
    settings: EvalSettings,
    model_options: ModelOptions | None = None,
    *,
    report: Callable[..., None] | None = None,
) -> ReferenceRun:
    """Predictions of a Keras model, SavedModel or ``.tflite`` on ``data``, in this process.

    Raises ModelLoadError, InterpreterError or DataError.
    """
    if reference.endswith(".tflite"):
        run = run_tflite(reference, settings, data, measure_latency=False, report=report)
        return ReferenceRun(reference, tuple(tensor.name for tensor in run.signature.outputs), run.predictions or {})
    import tempfile

    from tflq.models import Reference, export_model

    with tempfile.TemporaryDirectory(prefix="tflq-reference-") as export_dir:
        model = Reference(export_model(Path(reference), Path(export_dir) / "saved_model", model_options or ModelOptions()))
        dataset = open_data(data, model.inputs, outputs=model.outputs, limit=settings.limit, role="evaluation")
        predictions, _, _ = predict_dataset(model.predict, dataset, settings.batch_size or REFERENCE_BATCH, report=report)
    return ReferenceRun(reference, tuple(spec.name for spec in model.outputs), predictions)


# ---------------------------------------------------------------------------------------------------------------
# Several files, each in its own process


def evaluate(
    tflite_paths: Sequence[str],
    *,
    data: str | None = None,
    reference: str | None = None,
    settings: EvalSettings | None = None,
    reference_options: ModelOptions | None = None,
    on_progress: ProgressCallback | None = None,
    start_method: str | None = None,
) -> list[Measurement]:
    """Measure every ``.tflite`` (each in a child process) and return one Measurement per file, in input order.

    Agreement is computed against ``reference`` (Keras model, SavedModel or ``.tflite``) or, without one, against the
    plain float32 model among ``tflite_paths``; sizes are compared with the same file when it is a ``.tflite``.
    ``reference_options`` say how to load a Keras / SavedModel reference (signature, custom objects, unsafe mode).
    A file that cannot be measured, or crashes the interpreter, gives a Measurement with ``error`` set.

    Raises ModelLoadError for a missing file, DataError for data that does not fit, UsageError for a reference whose
    outputs differ from the models', InterpreterError when the reference itself fails.
    """
    from tflq.isolation import call_isolated

    settings = settings or EvalSettings()
    if not tflite_paths:
        raise UsageError("no .tflite file given")
    for path in list(tflite_paths) + ([reference] if reference else []):
        if not os.path.exists(path):
            raise ModelLoadError(f"{path}: no such file or directory")
        if path.endswith(".tflite") and not os.path.isfile(path):
            raise ModelLoadError(f"{path}: is not a file")

    def progress_for(label: str) -> Callable[..., None]:
        def on_message(kind: str, done: int, total: int | None) -> None:
            if on_progress is not None and kind == "progress":
                on_progress(label, done, total)

        return on_message

    # Imported once here, so that children forked from this process do not import it again.
    import ai_edge_litert.interpreter  # noqa: F401

    if reference and reference.endswith(".tflite"):
        baseline = reference
    else:
        baseline = _float_baseline(tflite_paths) if len(tflite_paths) > 1 or reference else None
    baseline_size = os.path.getsize(baseline) if baseline else None

    reference_run: ReferenceRun | None = None
    if reference and data:
        try:
            reference_run = call_isolated(
                run_reference, reference, data, replace(settings, runs=0), reference_options,
                description=reference, on_message=progress_for(reference), start_method=start_method,
            )
        except DataError as error:
            raise DataError(f"reference {reference}: {error}") from None

    order = sorted(range(len(tflite_paths)), key=lambda position: tflite_paths[position] != baseline)
    measurements: dict[int, Measurement] = {}
    for position in order:
        path = tflite_paths[position]
        size = os.path.getsize(path)
        ratio = size / baseline_size if baseline_size else None
        try:
            run: TfliteRun = call_isolated(
                run_tflite, path, settings, data,
                description=path, on_message=progress_for(path), start_method=start_method,
            )
        except InterpreterError as error:
            measurements[position] = Measurement(path, size, ratio, threads=settings.resolved_threads, error=str(error))
            continue
        if reference_run is None and reference is None and path == baseline and run.predictions is not None:
            reference_run = ReferenceRun(path, tuple(t.name for t in run.signature.outputs), run.predictions)
            measurements[position] = score(run, size, ratio, reference=None, data=data)
            continue
        measurements[position] = score(run, size, ratio, reference=reference_run, data=data)
    return [measurements[position] for position in range(len(tflite_paths))]


def _float_baseline(tflite_paths: Sequence[str]) -> str | None:
    """The plain float32 model among the files (one named ``float32`` first), or None."""
    candidates = []
    for path in tflite_paths:
        try:
            if is_float_model(read_flatbuffer(path)):
                candidates.append(path)
        except (InterpreterError, ModelLoadError):
            continue
    candidates.sort(key=lambda path: "float32" not in os.path.basename(path))
    return candidates[0] if candidates else None


def score(
    run: TfliteRun, size_bytes: int, size_ratio: float | None, *, reference: ReferenceRun | None, data: str | None
) -> Measurement:
    """Turn a TfliteRun into a Measurement: accuracy against the data's labels, agreement with ``reference``.

    Raises DataError for labels that do not fit an output, UsageError for a reference with other outputs.
    """
    source = data or "data"
    accuracy: list[OutputAccuracy] = []
    agreement: list[OutputAgreement] = []
    if run.predictions is not None:
        for name, labels in run.labels.items():
            if name in run.predictions:
                accuracy.append(output_accuracy(name, run.predictions[name], labels, source=source))
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
                agreement.append(output_agreement(name, predictions, expected))
    warnings = []
    if run.latency is not None and run.latency.noisy:
        warnings.append(
            f"latency varies a lot (cv {run.latency.cv:.2f} > {NOISY_CV}): the machine was busy; "
            "close other work or raise --runs / --min-seconds"
        )
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
        reference=reference.source if reference is not None else None,
        warnings=tuple(warnings),
    )


def match_outputs(run: TfliteRun, reference: ReferenceRun) -> dict[str, str]:
    """Pair the model's outputs with the reference's: by name, or by position when the names differ only because one
    side uses generic names (``output_0``...) or both have a single output.

    Raises UsageError naming both output lists when they cannot be paired.
    """
    names = [tensor.name for tensor in run.signature.outputs]
    reference_names = list(reference.output_names)
    if set(names) == set(reference_names):
        return {name: name for name in names}
    generic = all(_is_generic(name) for name in names) or all(_is_generic(name) for name in reference_names)
    if len(names) == len(reference_names) and (len(names) == 1 or generic):
        return dict(zip(names, reference_names))
    raise UsageError(
        f"reference {reference.source} has outputs {reference_names}; {run.tflite_path} has outputs {names}"
    )


def _is_generic(name: str) -> bool:
    prefix, _, number = name.rpartition("_")
    return prefix in ("output", "Identity", "StatefulPartitionedCall") and number.isdigit() or name == "Identity"


def paths_in(arguments: Iterable[str]) -> list[str]:
    """Expand directories among ``arguments`` to the ``.tflite`` files they hold (sorted)."""
    paths: list[str] = []
    for argument in arguments:
        if os.path.isdir(argument):
            found = sorted(
                os.path.join(argument, name) for name in os.listdir(argument) if name.endswith(".tflite")
            )
            if not found:
                raise UsageError(f"{argument}: no .tflite file in this folder")
            paths.extend(found)
        else:
            paths.append(argument)
    return paths


def evaluate_artifacts(
    tflite_paths: Sequence[str],
    source_model: str,
    *,
    data: str,
    settings: EvalSettings | None = None,
    reference_options: ModelOptions | None = None,
    on_progress: ProgressCallback | None = None,
) -> list[Measurement]:
    """Measure the ``.tflite`` files one conversion produced (``tflq convert --eval``).

    Agreement is against the float32 variant when it is among them, else against ``source_model`` (the Keras model
    or SavedModel they came from). Returns one Measurement per file; raises like :func:`evaluate`.
    """
    has_float_baseline = _float_baseline(tflite_paths) is not None
    return evaluate(
        tflite_paths,
        data=data,
        reference=None if has_float_baseline else source_model,
        settings=settings,
        reference_options=reference_options,
        on_progress=on_progress,
    )
