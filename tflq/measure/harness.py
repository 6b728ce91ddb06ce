"""Measure ``.tflite`` files with the LiteRT interpreter: size, latency, XNNPACK delegation, accuracy, agreement.

Public API:

* :func:`evaluate` measures several files, each in its own child process, and returns one :class:`Measurement`
  per file (a file that fails or crashes the interpreter gives a Measurement with ``error`` set);
* :func:`run_tflite` does the work for one file in the current process and returns the raw :class:`TfliteRun`;
* :func:`score` turns a TfliteRun into a Measurement (accuracy against labels, agreement with a reference), in
  :mod:`tflq.measure.measurement` with the result types (re-exported here).

Feeding data through the interpreter lives in :mod:`tflq.measure.runner`, the latency protocol in
:mod:`tflq.measure.latency`, the metrics in :mod:`tflq.measure.metrics`, what a file holds in
:mod:`tflq.measure.tflite_info`, the child processes in :mod:`tflq.measure.isolation`.
"""
from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from tflq import progress
from tflq.errors import DataError, InterpreterError, ModelLoadError, TflqError, UsageError
from tflq.measure.latency import time_invocations
from tflq.measure.measurement import (  # noqa: F401 (re-exported: the results and their scoring)
    Measurement,
    ReferenceRun,
    TfliteRun,
    check_label_keys,
    check_task_names,
    decide_tasks,
    match_outputs,
    reference_of,
    score,
)
from tflq.measure.runner import TfliteRunner, auto_batch_size
from tflq.measure.settings import (  # noqa: F401 (re-exported)
    MAX_COUNT,
    EvalSettings,
    EvaluationOptions,
    idle_threads,
    machine_threads,
)
from tflq.measure.tasks import TaskOverrides
from tflq.measure.tflite_info import (
    Signature,
    allocate,
    check_model_file,
    delegation_of,
    flatbuffer_tensor_specs,
    is_float_model,
    open_interpreter,
    read_flatbuffer,
    read_signature,
    tensor_specs,
)
from tflq.model.data import Dataset, open_data
from tflq.model.load import ModelOptions

PROGRESS_INTERVAL_SECONDS = 0.2

ProgressCallback = Callable[[str, int, "int | None"], None]


# ---------------------------------------------------------------------------------------------------------------
# One file, in the current process (the child process of evaluate())


def run_tflite(
    tflite_path: str,
    settings: EvalSettings,
    data: str | None = None,
    *,
    opened: Dataset | None = None,
    measure_latency: bool = True,
    report: Callable[..., None] | None = None,
) -> TfliteRun:
    """Load, time and evaluate one ``.tflite`` in this process.

    ``opened`` is ``data`` already opened (by the parent, for a model with the same specs): it is used when its specs
    are this model's, else ``data`` is opened here. Returns the TfliteRun. Raises ModelLoadError (missing file),
    InterpreterError (file the interpreter refuses or fails to run), DataError (data that does not fit the model).
    """
    timing = measure_latency and settings.runs > 0
    evaluation_threads = settings.evaluation_threads() if data else None
    threads = settings.resolved_threads if timing else (evaluation_threads or settings.resolved_threads)
    started = time.perf_counter()
    interpreter = open_interpreter(tflite_path, threads=threads, use_xnnpack=settings.use_xnnpack)
    allocate(interpreter, tflite_path)
    init_ms = (time.perf_counter() - started) * 1000.0
    signature = read_signature(interpreter, tflite_path)
    delegation = delegation_of(interpreter, enabled=settings.use_xnnpack, tflite_path=tflite_path)
    runner = TfliteRunner(interpreter, signature, tflite_path)
    dataset = None
    if data:
        fits = opened is not None and (opened.inputs, opened.outputs) == (
            tensor_specs(signature.inputs), tensor_specs(signature.outputs)
        )
        dataset = opened if fits else open_dataset(data, signature, limit=settings.limit)

    latency = None
    if timing:
        sample = _first_sample(dataset) if dataset is not None else _synthetic_sample(signature)
        with progress.phase("measure", model=tflite_path, detail="latency"):
            latency = time_invocations(runner, sample, settings, init_ms=init_ms)
    if dataset is not None and evaluation_threads != threads:
        interpreter = open_interpreter(tflite_path, threads=evaluation_threads or 1, use_xnnpack=settings.use_xnnpack)
        allocate(interpreter, tflite_path)
        runner = TfliteRunner(interpreter, signature, tflite_path)

    predictions = None
    labels: dict[str, np.ndarray] = {}
    samples = 0
    batch_size = None
    if dataset is not None:
        batch_size = 1
        if runner.batched:
            batch_size = settings.batch_size or auto_batch_size(tensor.shape for tensor in signature.inputs)
        with progress.phase("measure", model=tflite_path, detail="accuracy"):
            predictions, labels, samples = predict_dataset(runner.predict, dataset, batch_size, report=report)
    return TfliteRun(
        tflite_path=tflite_path,
        signature=signature,
        delegation=delegation,
        threads=threads,
        evaluation_threads=evaluation_threads,
        latency=latency,
        predictions=predictions,
        labels=labels,
        samples=samples,
        batch_size=batch_size,
        batched=runner.batched,
    )


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
        return reference_of(run)
    import tempfile

    from tflq.model.load import export_model
    from tflq.model.reference import Reference

    with tempfile.TemporaryDirectory(prefix="tflq-reference-") as export_dir:
        exported = export_model(Path(reference), Path(export_dir) / "saved_model", model_options or ModelOptions())
        model = Reference(exported)
        dataset = open_data(data, model.inputs, outputs=model.outputs, limit=settings.limit, role="evaluation")
        batch_size = settings.batch_size or auto_batch_size(spec.shape for spec in model.inputs)
        predictions, _, _ = predict_dataset(model.predict, dataset, batch_size, report=report)
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
    tasks: TaskOverrides | None = None,
) -> list[Measurement]:
    """Measure every ``.tflite`` (each in a child process) and return one Measurement per file, in input order.

    Agreement is computed against ``reference`` (Keras model, SavedModel or ``.tflite``) or, without one, against the
    plain float32 model among ``tflite_paths``; sizes are compared with the same file when it is a ``.tflite``.
    ``reference_options`` say how to load a Keras / SavedModel reference (signature, custom objects, unsafe mode);
    ``tasks`` override the classification / regression rule per output.
    A file that cannot be measured (corrupt, crashes the interpreter, data, labels or reference that do not fit it)
    gives a Measurement with ``error`` set; the other files are measured as usual.

    Raises ModelLoadError for a missing file or one that is not a regular file (checked before measuring anything),
    DataError / UsageError when no file could be measured and the data, labels or reference are at fault (the first
    such error), InterpreterError when a ``--reference`` itself fails.
    """
    from tflq.measure.isolation import call_isolated, choose_start_method

    settings = settings or EvalSettings()
    if not tflite_paths:
        raise UsageError("no .tflite file given")
    for path in list(tflite_paths) + ([reference] if reference else []):
        if not os.path.exists(path):
            raise ModelLoadError(f"{path}: no such file or directory")
        if path in tflite_paths or path.endswith(".tflite"):
            check_model_file(path)  # a directory, FIFO or device is refused before anything is measured

    def progress_for(label: str) -> Callable[..., None]:
        def on_message(kind: str, done: int, total: int | None) -> None:
            if on_progress is not None and kind == "progress":
                on_progress(label, done, total)

        return on_message

    # Imported once here, so that children forked from this process do not import it again.
    import ai_edge_litert.interpreter  # noqa: F401 (imported for its side effect: loaded before the children fork)

    baseline: str | None
    if reference and reference.endswith(".tflite"):
        baseline = reference
    else:  # a lone float32 file is its own baseline (ratio 1.00x)
        baseline = _float_baseline(tflite_paths)
    baseline_size = os.path.getsize(baseline) if baseline else None

    check_task_names(tflite_paths, tasks)
    start_method = start_method or choose_start_method()
    reference_run: ReferenceRun | None = None
    if reference and data:
        try:
            with progress.phase("measure", model=reference, detail="reference"):
                reference_run = call_isolated(
                    run_reference, reference, data, replace(settings, runs=0), reference_options,
                    description=reference, on_message=progress_for(reference), start_method=start_method,
                )
        except DataError as error:
            raise DataError(f"reference {reference}: {error}") from None

    order = sorted(range(len(tflite_paths)), key=lambda position: tflite_paths[position] != baseline)
    measurements: dict[int, Measurement] = {}
    failures: dict[int, TflqError] = {}
    opened_by_specs: dict[Any, Dataset | None] = {}
    for position in order:
        path = tflite_paths[position]
        size = os.path.getsize(path)
        ratio = size / baseline_size if baseline_size else None
        try:
            opened = None
            if data and start_method == "fork":
                opened = _opened_in_parent(path, data, settings, opened_by_specs)
            with progress.phase("measure", model=path):
                run: TfliteRun = call_isolated(
                    run_tflite, path, settings, data, keywords={"opened": opened},
                    description=path, on_message=progress_for(path), start_method=start_method,
                )
            if reference_run is None and reference is None and path == baseline and run.predictions is not None:
                reference_run = reference_of(run)
                measurements[position] = score(run, size, ratio, reference=None, data=data, tasks=tasks)
                continue
            measurements[position] = score(run, size, ratio, reference=reference_run, data=data, tasks=tasks)
        except (InterpreterError, UsageError) as error:
            # One file's failure (corrupt, crashing, data or reference that do not fit it) is its own row's error.
            message = str(error) if str(error).startswith(path) else f"{path}: {error}"
            measurements[position] = Measurement(path, size, ratio, threads=settings.resolved_threads, error=message)
            failures[position] = error
    if len(failures) == len(tflite_paths):
        usage = [
            failures[position] for position in sorted(failures) if not isinstance(failures[position], InterpreterError)
        ]
        if usage:  # nothing measured and the data / reference / labels are at fault: a usage error (exit 2)
            raise usage[0]
    return [measurements[position] for position in range(len(tflite_paths))]


def _opened_in_parent(
    tflite_path: str, data: str, settings: EvalSettings, opened_by_specs: dict[Any, Dataset | None]
) -> Dataset | None:
    """With ``fork``, the data is opened (and an .npz loaded) once here, for every model with the same specs; the
    children read it from the memory they share with this process. The specs come from the flatbuffer, so nothing
    here can crash; a file whose specs cannot be read opens the data in its child."""
    specs = flatbuffer_tensor_specs(tflite_path)
    if specs is None:
        return None
    if specs not in opened_by_specs:
        opened_by_specs[specs] = open_data(data, specs[0], outputs=specs[1], limit=settings.limit, role="evaluation")
    return opened_by_specs[specs]


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
