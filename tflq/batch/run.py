"""Run a validated batch: plan every model's variants, skip the up-to-date ones, convert and measure the rest (each
model in its own child process), apply the gates, and write the reports.

The CLI's ``tflq convert`` and ``tflq eval`` and this runner share one code path:
:func:`tflq.convert.session.convert_model`
and :func:`tflq.measure.harness.evaluate`.

Up to date means: the manifest beside the outputs (``.tflq-manifest.json``) holds, for that variant, the same
*conversion key* (hash of the model files, the variant's settings, the calibration data when the mode uses it, and
the tflq/TensorFlow versions) and the output file still has the recorded sha256. Its figures are reused when the
*measurement key* (conversion key + evaluation data, reference and latency settings) matches too.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from tflq import progress
from tflq.batch.config import BatchConfig, ModelJob
from tflq.batch.executors import ExecutorOptions, run_local
from tflq.batch.gates import apply_gates
from tflq.batch.gates import top1 as gate_top1
from tflq.batch.jobs import (  # noqa: F401 (content_hash, conversion_key, measurement_key, auto_key: API)
    EventCallback,
    JobResult,
    _concerns,
    _file_sha,
    _messages,
    _notes,
    auto_key,
    content_hash,
    conversion_key,
    measurement_key,
    owned_output,
)
from tflq.batch.manifest import MANIFEST, MANIFEST_VERSION, Manifest, output_folder_lock  # noqa: F401 (MANIFEST*: API)
from tflq.errors import EXIT_FAILED, EXIT_GATE, EXIT_OK, TflqError, UsageError
from tflq.modes import BASELINE_VARIANT, Variant

log = logging.getLogger("tflq")


@dataclass(frozen=True)
class BatchResult:
    """The whole run: every row, and the exit code it earns (0 ok, 1 a job failed, 3 a gate failed)."""

    config: BatchConfig
    results: tuple[JobResult, ...]
    report_paths: tuple[Path, ...] = ()

    @property
    def exit_code(self) -> int:
        if any(result.status != "ok" for result in self.results):
            return EXIT_FAILED
        if any(result.gate_failures for result in self.results):
            return EXIT_GATE
        return EXIT_OK


# ---------------------------------------------------------------------------------------------------------------
# Keys and the manifest


# ---------------------------------------------------------------------------------------------------------------
# One model


@dataclass(frozen=True)
class _Plan:
    job: ModelJob
    variants: tuple[Variant, ...]
    keys: dict[str, str]  # label -> conversion key
    measure_keys: dict[str, str]  # label -> measurement key
    paths: dict[str, Path]  # label -> its .tflite, checked to be directly inside the output folder
    convert: tuple[Variant, ...]  # variants to (re)convert
    measure: tuple[Variant, ...]  # variants to (re)measure
    force: bool = False  # --force: the auto search reruns too


def _plan(job: ModelJob, output_dir: Path, manifest: Manifest, force: bool) -> _Plan:
    from tflq.convert.session import output_path
    from tflq.modes import plan_variants

    variants = tuple(plan_variants(list(job.modes), list(job.io_types)))
    paths = {v.label: owned_output(output_dir, job.name, output_path(output_dir, job.name, v)) for v in variants}
    if job.searches:
        from tflq.debug.options import output_path as auto_output_path

        owned_output(output_dir, job.name, auto_output_path(output_dir, job.name))
    model_hash = content_hash(str(job.path)) or ""
    keys = {v.label: conversion_key(job, v, model_hash) for v in variants}
    baseline_label = BASELINE_VARIANT.label
    baseline = keys.get(baseline_label)
    measure_keys = {
        label: measurement_key(job, key, baseline if label != baseline_label else None) for label, key in keys.items()
    }
    to_convert, to_measure = [], []
    for variant in variants:
        entry = manifest.entry(f"{job.name}/{variant.label}")
        fresh = (
            not force
            and entry.get("key") == keys[variant.label]
            and entry.get("artifact", {}).get("status") == "ok"
            and entry.get("artifact", {}).get("sha256") == _file_sha(paths[variant.label])
        )
        if not fresh:
            to_convert.append(variant)
            to_measure.append(variant)
        elif (
            entry.get("measure_key") != measure_keys[variant.label]
            or entry.get("measurement", {}).get("status") != "ok"
        ):
            to_measure.append(variant)
    return _Plan(job, variants, keys, measure_keys, paths, tuple(to_convert), tuple(to_measure), force)


def _convert_in_child(
    job: ModelJob, variants: Sequence[Variant], output_dir: str, *, report: Callable[..., None]
) -> list[dict[str, Any]]:
    """Child-process body: export once, calibrate once, convert ``variants``. Returns Artifact dicts."""
    from tflq._tf import imports as _tf
    from tflq.convert.session import convert_model

    _tf.set_verbose(False)
    modes = tuple(dict.fromkeys(v.mode for v in variants))
    options = replace(job.convert, modes=modes, io_types=tuple(dict.fromkeys(v.io_type for v in variants)))
    report("info", f"converting {len(variants)} variant(s)")
    result = convert_model(job.path, Path(output_dir), options, name=job.name)
    wanted = {v.label for v in variants}
    return [artifact.to_dict() | {"label": artifact.label} for artifact in result.artifacts if artifact.label in wanted]


def phase_relay(plan: _Plan, on_event: EventCallback) -> progress.Listener:
    """A listener turning the library's phase events for ``plan``'s model (its conversion child's, and the
    measurements of its files) into ``on_event("phase", model, label, text)``: ``label`` is "" for the model's
    shared phases (export, calibrate, train), ``text`` the phase ("convert", "measure: latency"). Only starts."""
    name = plan.job.name
    label_of = {str(path): label for label, path in plan.paths.items()}

    def relay(event: progress.PhaseEvent) -> None:
        if event.state != "start":
            return
        label = event.variant if event.model == name else label_of.get(event.model)
        if label is not None:
            on_event("phase", name, label, event.text)

    return relay


def run_model(plan: _Plan, output_dir: Path, manifest: Manifest, on_event: EventCallback) -> list[JobResult]:
    """Convert and measure one model's stale variants; reuse the rest. Records each step in ``manifest`` at once:
    the converted variants as soon as they exist (so an interrupt does not reconvert them), then their figures.
    The phases of its conversion and measurement reach ``on_event`` as "phase" events (:func:`phase_relay`)."""
    with progress.listening(phase_relay(plan, on_event)):
        return _run_model(plan, output_dir, manifest, on_event)


def _run_model(plan: _Plan, output_dir: Path, manifest: Manifest, on_event: EventCallback) -> list[JobResult]:
    from tflq.measure.harness import evaluate
    from tflq.measure.isolation import call_isolated

    job = plan.job
    artifacts: dict[str, dict[str, Any]] = {}
    for variant in plan.variants:
        if variant not in plan.convert:
            artifacts[variant.label] = manifest.entry(f"{job.name}/{variant.label}")["artifact"]
    if plan.convert:
        for variant in plan.convert:
            on_event("start", job.name, variant.label, "converting")
        with _notes.collecting() as notes:
            try:
                produced = call_isolated(
                    _convert_in_child,
                    job,
                    list(plan.convert),
                    str(output_dir),
                    description=f"{job.name}",
                    on_message=lambda *message: None,
                )
            except TflqError as error:
                produced = []
                for variant in plan.convert:
                    path = plan.paths[variant.label]  # checked by owned_output: inside the output folder, in the plan
                    with contextlib.suppress(FileNotFoundError):
                        path.unlink()
                    artifacts[variant.label] = {
                        "mode": variant.mode,
                        "io_type": variant.io_type,
                        "path": str(path),
                        "status": "error",
                        "error": f"conversion failed: {error}",
                        "label": variant.label,
                    }
        conversion_notes = _messages(notes)
        by_label = {v.label: v for v in plan.convert}
        for artifact in produced:
            own = [note for note in conversion_notes if _concerns(note, by_label[artifact["label"]])]
            artifacts[artifact["label"]] = artifact | ({"notes": own} if own else {})
        for variant in plan.convert:
            key, artifact = f"{job.name}/{variant.label}", artifacts[variant.label]
            if artifact.get("status") == "ok":  # converted, not measured yet
                manifest.record(
                    key,
                    {
                        "key": plan.keys[variant.label],
                        "measure_key": None,
                        "artifact": {k: v for k, v in artifact.items() if k != "label"},
                        "measurement": {},
                    },
                )
            else:
                manifest.drop(key)
    measurements: dict[str, dict[str, Any]] = {}
    to_measure = [v for v in plan.measure if artifacts[v.label].get("status") == "ok"]
    baseline_label = BASELINE_VARIANT.label
    baseline_path = str(plan.paths[baseline_label]) if baseline_label in plan.paths else ""
    baseline_ok = baseline_label in artifacts and artifacts[baseline_label].get("status") == "ok"
    if to_measure:
        paths = [str(plan.paths[v.label]) for v in to_measure]
        reference = job.evaluation.reference
        if reference is None and baseline_ok and BASELINE_VARIANT not in to_measure:
            reference = baseline_path  # agreement with the unchanged baseline model
        for variant in to_measure:
            on_event("start", job.name, variant.label, "measuring")
        with _notes.collecting() as notes:
            try:
                results = evaluate(
                    paths,
                    data=job.evaluation.data,
                    reference=reference,
                    settings=job.measure,
                    reference_options=None,
                    tasks=job.evaluation.task,
                )
                for variant, measured_path, result in zip(to_measure, paths, results, strict=True):
                    measured = result.to_dict()
                    own_notes = _messages(notes, child=measured_path)
                    measurements[variant.label] = measured | ({"notes": own_notes} if own_notes else {})
            except TflqError as error:
                for variant in to_measure:
                    measurements[variant.label] = {"status": "error", "error": f"measurement: {error}"}
    results_out: list[JobResult] = []
    for variant in plan.variants:
        key = f"{job.name}/{variant.label}"
        artifact = artifacts[variant.label]
        entry = manifest.entry(key)
        measurement: dict[str, Any]
        if variant.label in measurements:
            measurement = measurements[variant.label]
        else:
            measurement = entry.get("measurement", {}) if artifact.get("status") == "ok" else {}
        ok = artifact.get("status") == "ok" and measurement.get("status", "ok") == "ok"
        failure = artifact.get("error") or measurement.get("error")
        up_to_date = variant not in plan.convert and variant not in plan.measure
        if artifact.get("status") == "ok":
            if variant in plan.convert or variant in plan.measure:
                manifest.record(
                    key,
                    {
                        "key": plan.keys[variant.label],
                        "measure_key": plan.measure_keys[variant.label] if measurement.get("status") == "ok" else None,
                        "artifact": {k: v for k, v in artifact.items() if k != "label"},
                        "measurement": measurement,
                    },
                )
        else:
            manifest.drop(key)
        results_out.append(
            JobResult(
                model=job.name,
                label=variant.label,
                mode=variant.mode,
                io_type=variant.io_type,
                path=artifact.get("path", ""),
                status="ok" if ok else "error",
                up_to_date=up_to_date,
                error=failure,
                artifact=artifact,
                measurement=measurement,
            )
        )
        if ok:
            on_event("done", job.name, variant.label, _summary(artifact, measurement, up_to_date))
        else:
            on_event("fail", job.name, variant.label, failure or "failed")
    gated = apply_gates(job.gates, results_out)
    if job.searches:
        from tflq.batch.auto_job import run_auto

        gated.append(run_auto(job, output_dir, manifest, on_event, force=plan.force))
    return gated


def _summary(artifact: dict[str, Any], measurement: dict[str, Any], up_to_date: bool) -> str:
    parts = [f"{artifact.get('size_bytes', 0):,} B"]
    latency = measurement.get("latency_ms") or {}
    if latency.get("p50") is not None:
        parts.append(f"p50 {latency['p50']:.3f} ms")
    top1 = gate_top1(measurement)
    if top1 is not None:
        parts.append(f"top-1 {top1 * 100:.2f} %")
    if up_to_date:
        parts.append("(up to date)")
    return ", ".join(parts)


# ---------------------------------------------------------------------------------------------------------------
# The batch


def run_batch(
    config: BatchConfig,
    *,
    force: bool = False,
    jobs: int | None = None,
    on_event: EventCallback | None = None,
    executor: ExecutorOptions | None = None,
) -> BatchResult:
    """Run every model of ``config``; returns the BatchResult (rows, report paths, exit code).

    ``executor`` says where the model jobs run (default: here, ``jobs`` at a time, 1 when None); with Ray, ``jobs``
    caps the tasks in flight (None: as many as the cluster's CPUs allow). A model whose conversion crashes its child
    process (or, on Ray, whose worker dies past its retries) fails its own variants; the others go on. Raises
    UsageError for a bad ``jobs`` value or an unreachable Ray cluster; config problems were raised by
    :func:`tflq.batch.config.load_config`.
    """
    if jobs is not None and jobs < 1:
        raise UsageError(f"--jobs must be at least 1, got {jobs}")
    executor = executor or ExecutorOptions()
    from tflq.convert.session import output_path
    from tflq.measure import isolation
    from tflq.modes import plan_variants

    events = on_event or (lambda *event: None)
    output_dir = config.output_dir
    for job in config.models:
        if job.gates.max_accuracy_drop is not None and BASELINE_VARIANT.mode not in job.modes:
            raise UsageError(
                f"{config.source}: model {job.name!r}: gates.max_accuracy_drop compares with "
                f"{BASELINE_VARIANT.mode}; add {BASELINE_VARIANT.mode} to its modes"
            )
        for variant in plan_variants(list(job.modes), list(job.io_types)):  # before anything is created
            owned_output(output_dir, job.name, output_path(output_dir, job.name, variant))
    output_dir.mkdir(parents=True, exist_ok=True)
    logger = logging.getLogger("tflq")
    with output_folder_lock(output_dir):
        manifest = Manifest.read(output_dir)
        for note in manifest.notes:
            log.warning("%s", note)
        plans = [_plan(job, output_dir, manifest, force) for job in config.models]
        isolation.allow_children()
        saved_level = logger.level
        if not logger.isEnabledFor(logging.INFO):  # the INFO notices (float64 cast, tf_keras) belong in the report
            logger.setLevel(logging.INFO)
        logger.addHandler(_notes)
        try:
            if executor.executor == "ray":
                from tflq.batch.ray_executor import run_on_ray

                per_model = run_on_ray(run_model, plans, executor, jobs, output_dir, manifest, events)
            else:
                per_model = run_local(plans, jobs or 1, lambda plan: run_model(plan, output_dir, manifest, events))
        finally:
            logger.removeHandler(_notes)
            logger.setLevel(saved_level)
        if manifest.notes:
            manifest.write()  # the rebuilt manifest, even when nothing was redone
        results = tuple(result for model_results in per_model for result in model_results)
        # entries of variants not run this time (--only, --modes) stay as they were: nothing is pruned
        from tflq.report.render import write_batch_reports

        report_paths = write_batch_reports(output_dir, [result.to_row() for result in results])
    return BatchResult(config=config, results=results, report_paths=tuple(report_paths))
