"""Run a validated batch: plan every model's variants, skip the up-to-date ones, convert and measure the rest (each
model in its own child process), apply the gates, and write the reports.

The CLI's ``tflq convert`` and ``tflq eval`` and this runner share one code path: :func:`tflq.convert.session.convert_model`
and :func:`tflq.measure.harness.evaluate`.

Up to date means: the manifest beside the outputs (``.tflq-manifest.json``) holds, for that variant, the same
*conversion key* (hash of the model files, the variant's settings, the calibration data when the mode uses it, and
the tflq/TensorFlow versions) and the output file still has the recorded sha256. Its figures are reused when the
*measurement key* (conversion key + evaluation data, reference and latency settings) matches too.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

from tflq import __version__
from tflq.batch.config import BatchConfig, ModelJob
from tflq.batch.manifest import MANIFEST, MANIFEST_VERSION, Manifest, output_folder_lock  # noqa: F401 (MANIFEST*: API)
from tflq.errors import EXIT_FAILED, EXIT_GATE, EXIT_OK, TflqError, UsageError
from tflq.modes import MODES, Variant

# on_event(kind, model, label, text): kind is "start", "done", "fail" or "info"
EventCallback = Callable[[str, str, str, str], None]


@dataclass(frozen=True)
class JobResult:
    """One variant of one model after the run: its row of the report."""

    model: str
    label: str
    mode: str
    io_type: str
    path: str
    status: str  # "ok" | "error"
    up_to_date: bool = False
    error: str | None = None
    artifact: dict[str, Any] = field(default_factory=dict)
    measurement: dict[str, Any] = field(default_factory=dict)
    accuracy_drop: float | None = None
    gate_failures: tuple[str, ...] = ()

    @property
    def gate(self) -> str:
        return "fail" if self.gate_failures else "pass"

    def to_row(self) -> dict[str, Any]:
        """A report row: the measurement's stable keys plus the batch's own."""
        row = dict(self.measurement)
        auto = self.measurement.get("auto")
        row.update(
            model=self.model,
            variant=f"auto: {auto.get('chosen') or 'none'}" if auto else self.label,
            mode=self.mode,
            io_type=self.io_type,
            path=self.path,
            status=self.status,
            error=self.error or row.get("error"),
            up_to_date=self.up_to_date,
            accuracy_drop=self.accuracy_drop,
            gate=self.gate,
            gate_failures=list(self.gate_failures),
            size_bytes=self.artifact.get("size_bytes", row.get("size_bytes")),
            sha256=self.artifact.get("sha256"),
            convert_seconds=self.artifact.get("seconds"),
            float_ops=self.artifact.get("float_ops", []),
            float_layers=self.artifact.get("float_layers", []),
            training=self.artifact.get("training"),
            # the measurement's warnings, then the notices tflq logged while converting and measuring (the child
            # processes' too: random calibration data, float64 cast, tf_keras fallback)
            warnings=list(dict.fromkeys(
                [*(row.get("warnings") or []), *(self.artifact.get("notes") or []), *(self.measurement.get("notes") or [])]
            )),
        )
        row.pop("notes", None)
        return row


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


def _hash_path(path: Path, digest: Any) -> None:
    if path.is_dir():
        for child in sorted(p for p in path.rglob("*") if p.is_file()):
            digest.update(str(child.relative_to(path)).encode())
            _hash_file(child, digest)
    elif path.is_file():
        _hash_file(path, digest)
    else:
        digest.update(f"not a file: {path}".encode())


def _hash_file(path: Path, digest: Any) -> None:
    with open(path, "rb") as stream:
        for block in iter(lambda: stream.read(1 << 20), b""):
            digest.update(block)


_file_hashes: dict[tuple[str, float, int], str] = {}


def content_hash(spec: str | None) -> str | None:
    """sha256 of a data/model path (files and folders), or of the spec itself for module:function and random."""
    if spec is None:
        return None
    path = Path(spec)
    if not path.exists():
        return hashlib.sha256(f"spec:{spec}".encode()).hexdigest()
    stat = path.stat()
    cache_key = (str(path.resolve()), stat.st_mtime, stat.st_size)
    if path.is_file() and cache_key in _file_hashes:
        return _file_hashes[cache_key]
    digest = hashlib.sha256()
    _hash_path(path, digest)
    value = digest.hexdigest()
    if path.is_file():
        _file_hashes[cache_key] = value
    return value


def _versions() -> dict[str, str]:
    found = {"tflq": __version__}
    for package in ("tensorflow", "ai-edge-litert", "keras"):
        with contextlib.suppress(metadata.PackageNotFoundError):
            found[package] = metadata.version(package)
    return found


def conversion_key(job: ModelJob, variant: Variant, model_hash: str) -> str:
    """What the variant's .tflite depends on. Calibration counts only for calibrated modes."""
    mode = MODES[variant.mode]
    settings: dict[str, Any] = {
        "model": model_hash,
        "mode": variant.mode,
        "io_type": variant.io_type,
        "settings": {name: getattr(job, name) for name in mode.settings},
        "signature": job.signature,
        "custom_objects": list(job.custom_objects),
        "unsafe": job.unsafe_deserialization,
        "versions": _versions(),
    }
    if mode.calibrated:
        settings["calibration"] = {
            "data": content_hash(job.calibration.get("data")),
            "samples": job.calibration.get("samples"),
            "image_scale": job.calibration.get("image_scale"),
        }
    if mode.needs_training:  # the fine-tune: its data, its settings; training samples double as representative data
        settings["qat"] = dict(job.qat) | {
            "train_data": content_hash(job.qat.get("train_data")),
            "val_data": content_hash(job.qat.get("val_data")),
            "samples": job.calibration.get("samples"),
            "image_scale": job.calibration.get("image_scale"),
        }
    return _digest(settings)


def measurement_key(job: ModelJob, key: str, baseline_key: str | None) -> str:
    """What the variant's figures depend on: its .tflite, the evaluation set-up and the float32 baseline."""
    return _digest(
        {
            "conversion": key,
            "evaluation": {
                "data": content_hash(job.evaluation.get("data")),
                "samples": job.evaluation.get("samples"),
                "reference": content_hash(job.evaluation.get("reference")),
                **({"task": job.evaluation["task"].to_setting()} if job.evaluation.get("task") else {}),
            },
            "latency": dict(job.latency),
            "baseline": baseline_key,
        }
    )


def _digest(value: Any) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()


def _file_sha(path: Path) -> str | None:
    if not path.is_file():
        return None
    digest = hashlib.sha256()
    _hash_file(path, digest)
    return digest.hexdigest()


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


def owned_output(output_dir: Path, model: str, path: Path) -> Path:
    """``path`` when it is a file directly inside ``output_dir``; else UsageError, before anything is written.

    The runner writes and deletes only such paths: a model name like ``../x`` or ``/tmp/x`` cannot make it touch a
    file outside the output folder. (Symbolic links are not followed for the file itself: unlinking one removes the
    link, not its target.)
    """
    absolute = Path(os.path.abspath(path))
    if absolute.parent.resolve() != output_dir.resolve() or not absolute.name.endswith(".tflite"):
        raise UsageError(
            f"model {model!r}: its output {path} is not inside the output folder {output_dir}; expected a plain name "
            "(nothing was written or deleted)"
        )
    return path


def _plan(job: ModelJob, output_dir: Path, manifest: Manifest, force: bool) -> _Plan:
    from tflq.convert.session import output_path
    from tflq.modes import plan_variants

    variants = tuple(plan_variants(list(job.modes), list(job.io_types)))
    paths = {v.label: owned_output(output_dir, job.name, output_path(output_dir, job.name, v)) for v in variants}
    if job.auto.get("max_drop") is not None:
        from tflq.debug.auto import output_path as auto_output_path

        owned_output(output_dir, job.name, auto_output_path(output_dir, job.name))
    model_hash = content_hash(str(job.path)) or ""
    keys = {v.label: conversion_key(job, v, model_hash) for v in variants}
    baseline = keys.get("float32")
    measure_keys = {label: measurement_key(job, key, baseline if label != "float32" else None) for label, key in keys.items()}
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
        elif entry.get("measure_key") != measure_keys[variant.label] or entry.get("measurement", {}).get("status") != "ok":
            to_measure.append(variant)
    return _Plan(job, variants, keys, measure_keys, paths, tuple(to_convert), tuple(to_measure), force)


def _convert_in_child(job: ModelJob, variants: Sequence[Variant], output_dir: str, *, report: Callable[..., None]) -> list[dict[str, Any]]:
    """Child-process body: export once, calibrate once, convert ``variants``. Returns Artifact dicts."""
    from tflq._tf import imports as _tf
    from tflq.convert.session import ConvertOptions, QatOptions, convert_model
    from tflq.model.data import ImageOptions
    from tflq.model.load import ModelOptions

    _tf.set_verbose(False)
    modes = tuple(dict.fromkeys(v.mode for v in variants))
    io_types = tuple(dict.fromkeys(v.io_type for v in variants))
    options = ConvertOptions(
        modes=modes,
        io_types=io_types,
        calibration=job.calibration.get("data") if any(MODES[m].calibrated for m in modes) else None,
        calibration_samples=job.calibration.get("samples") or 200,
        per_tensor=job.per_tensor,
        allow_float_fallback=job.allow_float_fallback,
        images=ImageOptions(scale=job.calibration.get("image_scale") or "unit"),
        model=ModelOptions(signature=job.signature, custom_objects=job.custom_objects, unsafe_deserialization=job.unsafe_deserialization),
        qat=QatOptions(**job.qat) if any(MODES[m].needs_training for m in modes) else QatOptions(),
        skip_layers=job.skip_layers if "int8" in modes else (),
        skip_ops=job.skip_ops if "int8" in modes else (),
    )
    report("info", f"converting {len(variants)} variant(s)")
    result = convert_model(job.path, Path(output_dir), options, name=job.name)
    wanted = {v.label for v in variants}
    return [artifact.to_dict() | {"label": artifact.label} for artifact in result.artifacts if artifact.label in wanted]


def _eval_settings(job: ModelJob) -> Any:
    from tflq.measure.harness import EvalSettings

    latency = job.latency
    return EvalSettings(
        threads=latency.get("threads"),
        runs=latency.get("runs", 50),
        warmup_runs=latency.get("warmup_runs", 5),
        min_seconds=latency.get("min_seconds") or 0.0,
        use_xnnpack=latency.get("xnnpack", True),
        limit=job.evaluation.get("samples"),
    )


class _NoteCollector(logging.Handler):
    """Collects, per thread, the ``tflq`` log records at INFO and above -- the runner's own and those forwarded from
    its child processes (:mod:`tflq.measure.isolation` re-emits them in the calling thread) -- for the report's notes."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self._by_thread: dict[int, list[tuple[str | None, str]]] = {}

    def emit(self, record: logging.LogRecord) -> None:
        notes = self._by_thread.get(threading.get_ident())
        if notes is not None:
            notes.append((getattr(record, "tflq_child", None), record.getMessage()))

    @contextlib.contextmanager
    def collecting(self) -> Any:
        """Yields the list that receives ``(child description or None, message)`` for this thread's records."""
        notes: list[tuple[str | None, str]] = []
        self._by_thread[threading.get_ident()] = notes
        try:
            yield notes
        finally:
            self._by_thread.pop(threading.get_ident(), None)


_notes = _NoteCollector()
log = logging.getLogger("tflq")


def _messages(notes: Sequence[tuple[str | None, str]], *, child: str | None = None) -> list[str]:
    """The messages (each once, in order), all of them or those of one child plus those of no particular child."""
    return list(dict.fromkeys(text for source, text in notes if child is None or source in (child, None)))


def _concerns(note: str, variant: Variant) -> bool:
    """Whether a notice logged while converting a model's variants together concerns ``variant``: the calibration
    data's notices concern the calibrated modes only; every other notice concerns them all."""
    calibrated = MODES[variant.mode].calibrated or MODES[variant.mode].needs_training
    return calibrated or not note.startswith("RANDOM CALIBRATION")


def run_model(plan: _Plan, output_dir: Path, manifest: Manifest, on_event: EventCallback) -> list[JobResult]:
    """Convert and measure one model's stale variants; reuse the rest. Records each step in ``manifest`` at once:
    the converted variants as soon as they exist (so an interrupt does not reconvert them), then their figures."""
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
                    _convert_in_child, job, list(plan.convert), str(output_dir),
                    description=f"{job.name}", on_message=lambda *message: None,
                )
            except TflqError as error:
                produced = []
                for variant in plan.convert:
                    path = plan.paths[variant.label]  # checked by owned_output: inside the output folder, in the plan
                    with contextlib.suppress(FileNotFoundError):
                        path.unlink()
                    artifacts[variant.label] = {
                        "mode": variant.mode, "io_type": variant.io_type, "path": str(path), "status": "error",
                        "error": f"conversion failed: {error}", "label": variant.label,
                    }
        conversion_notes = _messages(notes)
        by_label = {v.label: v for v in plan.convert}
        for artifact in produced:
            own = [note for note in conversion_notes if _concerns(note, by_label[artifact["label"]])]
            artifacts[artifact["label"]] = artifact | ({"notes": own} if own else {})
        for variant in plan.convert:
            key, artifact = f"{job.name}/{variant.label}", artifacts[variant.label]
            if artifact.get("status") == "ok":  # converted, not measured yet
                manifest.record(key, {
                    "key": plan.keys[variant.label], "measure_key": None,
                    "artifact": {k: v for k, v in artifact.items() if k != "label"}, "measurement": {},
                })
            else:
                manifest.drop(key)
    measurements: dict[str, dict[str, Any]] = {}
    to_measure = [v for v in plan.measure if artifacts[v.label].get("status") == "ok"]
    baseline_path = str(plan.paths["float32"]) if "float32" in plan.paths else ""
    baseline_ok = "float32" in artifacts and artifacts["float32"].get("status") == "ok"
    if to_measure:
        paths = [str(plan.paths[v.label]) for v in to_measure]
        reference = job.evaluation.get("reference")
        if reference is None and baseline_ok and Variant("float32") not in to_measure:
            reference = baseline_path  # agreement with the unchanged float32 model
        for variant in to_measure:
            on_event("start", job.name, variant.label, "measuring")
        with _notes.collecting() as notes:
            try:
                results = evaluate(
                    paths, data=job.evaluation.get("data"), reference=reference, settings=_eval_settings(job),
                    reference_options=None, tasks=job.evaluation.get("task"),
                )
                for variant, path, measurement in zip(to_measure, paths, results):
                    measured = measurement.to_dict()
                    own_notes = _messages(notes, child=path)
                    measurements[variant.label] = measured | ({"notes": own_notes} if own_notes else {})
            except TflqError as error:
                for variant in to_measure:
                    measurements[variant.label] = {"status": "error", "error": f"measurement: {error}"}
    results_out: list[JobResult] = []
    for variant in plan.variants:
        key = f"{job.name}/{variant.label}"
        artifact = artifacts[variant.label]
        entry = manifest.entry(key)
        if variant.label in measurements:
            measurement = measurements[variant.label]
        else:
            measurement = entry.get("measurement", {}) if artifact.get("status") == "ok" else {}
        ok = artifact.get("status") == "ok" and measurement.get("status", "ok") == "ok"
        error = artifact.get("error") or measurement.get("error")
        up_to_date = variant not in plan.convert and variant not in plan.measure
        if artifact.get("status") == "ok":
            if variant in plan.convert or variant in plan.measure:
                manifest.record(key, {
                    "key": plan.keys[variant.label],
                    "measure_key": plan.measure_keys[variant.label] if measurement.get("status") == "ok" else None,
                    "artifact": {k: v for k, v in artifact.items() if k != "label"},
                    "measurement": measurement,
                })
        else:
            manifest.drop(key)
        results_out.append(
            JobResult(
                model=job.name, label=variant.label, mode=variant.mode, io_type=variant.io_type,
                path=artifact.get("path", ""), status="ok" if ok else "error", up_to_date=up_to_date, error=error,
                artifact=artifact, measurement=measurement,
            )
        )
        if ok:
            on_event("done", job.name, variant.label, _summary(artifact, measurement, up_to_date))
        else:
            on_event("fail", job.name, variant.label, error or "failed")
    gated = _apply_gates(job, results_out)
    if job.auto.get("max_drop") is not None:
        from tflq.batch.auto_job import run_auto

        gated.append(run_auto(job, output_dir, manifest, on_event, force=plan.force))
    return gated


def auto_key(job: ModelJob) -> str:
    """What the ``auto`` search result depends on: model, calibration, evaluation, search settings, versions."""
    return _digest(
        {
            "model": content_hash(str(job.path)),
            "calibration": {
                "data": content_hash(job.calibration.get("data")),
                "samples": job.calibration.get("samples"),
                "image_scale": job.calibration.get("image_scale"),
            },
            "evaluation": {
                "data": content_hash(job.evaluation.get("data")),
                "samples": job.evaluation.get("samples"),
                "reference": content_hash(job.evaluation.get("reference")),
            },
            "auto": dict(job.auto),
            "latency": dict(job.latency) if job.auto.get("objective") == "latency" else None,
            "per_tensor": job.per_tensor,
            "model_options": [job.signature, list(job.custom_objects), job.unsafe_deserialization],
            "versions": _versions(),
        }
    )


def _summary(artifact: dict[str, Any], measurement: dict[str, Any], up_to_date: bool) -> str:
    parts = [f"{artifact.get('size_bytes', 0):,} B"]
    latency = measurement.get("latency_ms") or {}
    if latency.get("p50") is not None:
        parts.append(f"p50 {latency['p50']:.3f} ms")
    top1 = _top1(measurement)
    if top1 is not None:
        parts.append(f"top-1 {top1 * 100:.2f} %")
    if up_to_date:
        parts.append("(up to date)")
    return ", ".join(parts)


def _top1(measurement: dict[str, Any]) -> float | None:
    """The top-1 accuracy: the single classifier output's, or the first classifier output's of several."""
    accuracy = measurement.get("accuracy") or {}
    if isinstance(accuracy.get("top1"), (int, float)):
        return float(accuracy["top1"])
    for value in accuracy.values():
        if isinstance(value, dict) and isinstance(value.get("top1"), (int, float)):
            return float(value["top1"])
    return None


def _apply_gates(job: ModelJob, results: list[JobResult]) -> list[JobResult]:
    from dataclasses import replace

    baseline = next((r for r in results if r.label == "float32" and r.status == "ok"), None)
    baseline_top1 = _top1(baseline.measurement) if baseline else None
    gated = []
    for result in results:
        drop = None
        top1 = _top1(result.measurement)
        if baseline_top1 is not None and top1 is not None:
            drop = round((baseline_top1 - top1) * 100.0, 4)
        failures = []
        if result.status == "ok":
            limit = job.gates.get("max_accuracy_drop")
            if limit is not None:
                if drop is None:
                    failures.append("no accuracy to compare with float32")
                elif drop > limit:
                    failures.append(f"accuracy drop {drop:.2f} pts > {limit:g}")
            limit = job.gates.get("max_size_bytes")
            size = result.artifact.get("size_bytes")
            if limit is not None and size is not None and size > limit:
                failures.append(f"size {size:,} B > {limit:,.0f}")
            limit = job.gates.get("max_latency_ms")
            p50 = (result.measurement.get("latency_ms") or {}).get("p50")
            if limit is not None and p50 is not None and p50 > limit:
                failures.append(f"latency p50 {p50:.3f} ms > {limit:g}")
        gated.append(replace(result, accuracy_drop=drop, gate_failures=tuple(failures)))
    return gated


# ---------------------------------------------------------------------------------------------------------------
# The batch


def run_batch(
    config: BatchConfig,
    *,
    force: bool = False,
    jobs: int = 1,
    on_event: EventCallback | None = None,
) -> BatchResult:
    """Run every model of ``config``; returns the BatchResult (rows, report paths, exit code).

    A model whose conversion crashes its child process fails its own variants; the others go on. Raises
    UsageError for a bad ``jobs`` value; config problems were raised by :func:`tflq.batch.config.load_config`.
    """
    if jobs < 1:
        raise UsageError(f"--jobs must be at least 1, got {jobs}")
    from tflq.convert.session import output_path
    from tflq.measure import isolation
    from tflq.modes import plan_variants

    events = on_event or (lambda *event: None)
    output_dir = config.output_dir
    for job in config.models:
        if job.gates.get("max_accuracy_drop") is not None and "float32" not in job.modes:
            raise UsageError(
                f"{config.source}: model {job.name!r}: gates.max_accuracy_drop compares with float32; add float32 to its modes"
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
            per_model = _run_plans(plans, jobs, lambda plan: run_model(plan, output_dir, manifest, events))
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


def _run_plans(plans: Sequence[_Plan], jobs: int, run: Callable[[_Plan], list[JobResult]]) -> list[list[JobResult]]:
    """``run`` each plan on ``jobs`` threads; results in plan order.

    Ctrl-C (KeyboardInterrupt in this, the main thread) is acted on at once: every child process is killed, the
    worker threads stop at their next step (their child calls raise KeyboardInterrupt), and KeyboardInterrupt goes
    on up. What finished before is already in the manifest.
    """
    from tflq.measure import isolation

    pool = ThreadPoolExecutor(max_workers=jobs)
    futures = [pool.submit(run, plan) for plan in plans]
    try:
        while True:  # short waits: the main thread stays responsive to SIGINT
            done, running = wait(futures, timeout=0.25, return_when=FIRST_EXCEPTION)
            if not running or any(future.exception() is not None for future in done):
                break
        return [future.result() for future in futures]
    except BaseException:
        isolation.stop_children()
        raise
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
        isolation.allow_children()
