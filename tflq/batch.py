"""Run a validated batch: plan every model's variants, skip the up-to-date ones, convert and measure the rest (each
model in its own child process), apply the gates, and write the reports.

The CLI's ``tflq convert`` and ``tflq eval`` and this runner share one code path: :func:`tflq.convert.convert_model`
and :func:`tflq.harness.evaluate`.

Up to date means: the manifest beside the outputs (``.tflq-manifest.json``) holds, for that variant, the same
*conversion key* (hash of the model files, the variant's settings, the calibration data when the mode uses it, and
the tflq/TensorFlow versions) and the output file still has the recorded sha256. Its figures are reused when the
*measurement key* (conversion key + evaluation data, reference and latency settings) matches too.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

from tflq import __version__
from tflq.config import BatchConfig, ModelJob
from tflq.errors import EXIT_FAILED, EXIT_GATE, EXIT_OK, TflqError, UsageError
from tflq.modes import MODES, Variant

MANIFEST = ".tflq-manifest.json"
MANIFEST_VERSION = 1

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
        )
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


def read_manifest(output_dir: Path) -> dict[str, Any]:
    path = output_dir / MANIFEST
    try:
        manifest = json.loads(path.read_text())
    except (OSError, ValueError):
        return {"version": MANIFEST_VERSION, "jobs": {}}
    if manifest.get("version") != MANIFEST_VERSION or not isinstance(manifest.get("jobs"), dict):
        return {"version": MANIFEST_VERSION, "jobs": {}}
    return manifest


def write_manifest(output_dir: Path, manifest: dict[str, Any]) -> None:
    from tflq.convert import write_atomically

    write_atomically(output_dir / MANIFEST, json.dumps(manifest, indent=1, sort_keys=True).encode())


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
    convert: tuple[Variant, ...]  # variants to (re)convert
    measure: tuple[Variant, ...]  # variants to (re)measure
    force: bool = False  # --force: the auto search reruns too


def _plan(job: ModelJob, output_dir: Path, manifest: dict[str, Any], force: bool) -> _Plan:
    from tflq.convert import output_path
    from tflq.modes import plan_variants

    variants = tuple(plan_variants(list(job.modes), list(job.io_types)))
    model_hash = content_hash(str(job.path)) or ""
    keys = {v.label: conversion_key(job, v, model_hash) for v in variants}
    baseline = keys.get("float32")
    measure_keys = {label: measurement_key(job, key, baseline if label != "float32" else None) for label, key in keys.items()}
    to_convert, to_measure = [], []
    for variant in variants:
        entry = manifest["jobs"].get(f"{job.name}/{variant.label}", {})
        path = output_path(output_dir, job.name, variant)
        fresh = (
            not force
            and entry.get("key") == keys[variant.label]
            and entry.get("artifact", {}).get("status") == "ok"
            and entry.get("artifact", {}).get("sha256") == _file_sha(path)
        )
        if not fresh:
            to_convert.append(variant)
            to_measure.append(variant)
        elif entry.get("measure_key") != measure_keys[variant.label] or entry.get("measurement", {}).get("status") != "ok":
            to_measure.append(variant)
    return _Plan(job, variants, keys, measure_keys, tuple(to_convert), tuple(to_measure), force)


def _convert_in_child(job: ModelJob, variants: Sequence[Variant], output_dir: str, *, report: Callable[..., None]) -> list[dict[str, Any]]:
    """Child-process body: export once, calibrate once, convert ``variants``. Returns Artifact dicts."""
    from tflq import _tf
    from tflq.convert import ConvertOptions, QatOptions, convert_model
    from tflq.data import ImageOptions
    from tflq.models import ModelOptions

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
    from tflq.harness import EvalSettings

    latency = job.latency
    return EvalSettings(
        threads=latency.get("threads"),
        runs=latency.get("runs", 50),
        warmup_runs=latency.get("warmup_runs", 5),
        min_seconds=latency.get("min_seconds") or 0.0,
        use_xnnpack=latency.get("xnnpack", True),
        limit=job.evaluation.get("samples"),
    )


def run_model(
    plan: _Plan, output_dir: Path, manifest: dict[str, Any], on_event: EventCallback
) -> list[JobResult]:
    """Convert and measure one model's stale variants; reuse the rest. Updates ``manifest`` in place."""
    from tflq.convert import output_path
    from tflq.harness import evaluate
    from tflq.isolation import call_isolated

    job = plan.job
    artifacts: dict[str, dict[str, Any]] = {}
    for variant in plan.variants:
        entry = manifest["jobs"].get(f"{job.name}/{variant.label}", {})
        if variant not in plan.convert:
            artifacts[variant.label] = entry["artifact"]
    if plan.convert:
        for variant in plan.convert:
            on_event("start", job.name, variant.label, "converting")
        try:
            produced = call_isolated(
                _convert_in_child, job, list(plan.convert), str(output_dir),
                description=f"{job.name}", on_message=lambda *message: None,
            )
            for artifact in produced:
                artifacts[artifact["label"]] = artifact
        except TflqError as error:
            for variant in plan.convert:
                path = output_path(output_dir, job.name, variant)
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()
                artifacts[variant.label] = {
                    "mode": variant.mode, "io_type": variant.io_type, "path": str(path), "status": "error",
                    "error": f"conversion failed: {error}", "label": variant.label,
                }
    measurements: dict[str, dict[str, Any]] = {}
    to_measure = [v for v in plan.measure if artifacts[v.label].get("status") == "ok"]
    baseline_path = str(output_path(output_dir, job.name, Variant("float32")))
    baseline_ok = "float32" in artifacts and artifacts["float32"].get("status") == "ok"
    if to_measure:
        paths = [str(output_path(output_dir, job.name, v)) for v in to_measure]
        reference = job.evaluation.get("reference")
        if reference is None and baseline_ok and Variant("float32") not in to_measure:
            reference = baseline_path  # agreement with the unchanged float32 model
        for variant in to_measure:
            on_event("start", job.name, variant.label, "measuring")
        try:
            results = evaluate(
                paths, data=job.evaluation.get("data"), reference=reference, settings=_eval_settings(job),
                reference_options=None, tasks=job.evaluation.get("task"),
            )
            for variant, measurement in zip(to_measure, results):
                measurements[variant.label] = measurement.to_dict()
        except TflqError as error:
            for variant in to_measure:
                measurements[variant.label] = {"status": "error", "error": f"measurement: {error}"}
    results_out: list[JobResult] = []
    for variant in plan.variants:
        key = f"{job.name}/{variant.label}"
        artifact = artifacts[variant.label]
        entry = manifest["jobs"].get(key, {})
        if variant.label in measurements:
            measurement = measurements[variant.label]
        else:
            measurement = entry.get("measurement", {}) if artifact.get("status") == "ok" else {}
        ok = artifact.get("status") == "ok" and measurement.get("status", "ok") == "ok"
        error = artifact.get("error") or measurement.get("error")
        up_to_date = variant not in plan.convert and variant not in plan.measure
        if artifact.get("status") == "ok":
            manifest["jobs"][key] = {
                "key": plan.keys[variant.label],
                "measure_key": plan.measure_keys[variant.label] if measurement.get("status") == "ok" else None,
                "artifact": {k: v for k, v in artifact.items() if k != "label"},
                "measurement": measurement,
            }
        else:
            manifest["jobs"].pop(key, None)
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
        gated.append(_run_auto(job, output_dir, manifest, on_event, force=plan.force))
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


def _auto_in_child(job: ModelJob, output_dir: str, *, report: Callable[..., None]) -> dict[str, Any]:
    """Child-process body of a batch's ``auto:`` search. Returns the AutoResult dict plus ``fits``/``message``."""
    from tflq import _tf
    from tflq.auto import AutoOptions, NoCandidateFits, auto_search
    from tflq.convert import ConvertOptions
    from tflq.data import ImageOptions
    from tflq.models import ModelOptions

    _tf.set_verbose(False)
    report("info", "auto search")
    options = AutoOptions(
        max_drop=float(job.auto["max_drop"]),
        objective=job.auto.get("objective") or "size",
        data=job.evaluation.get("data"),
        reference=job.evaluation.get("reference"),
        eval_samples=job.evaluation.get("samples"),
        max_float_layers=job.auto.get("max_float_layers", 3),
        convert=ConvertOptions(
            calibration=job.calibration.get("data"),
            calibration_samples=job.calibration.get("samples") or 200,
            per_tensor=job.per_tensor,
            images=ImageOptions(scale=job.calibration.get("image_scale") or "unit"),
            model=ModelOptions(
                signature=job.signature, custom_objects=job.custom_objects, unsafe_deserialization=job.unsafe_deserialization
            ),
        ),
        output_dir=Path(output_dir),
        name=job.name,
    )
    try:
        return auto_search(job.path, options).to_dict() | {"fits": True, "message": None}
    except NoCandidateFits as error:
        return error.result.to_dict() | {"fits": False, "message": str(error)}


def _run_auto(
    job: ModelJob, output_dir: Path, manifest: dict[str, Any], on_event: EventCallback, *, force: bool = False
) -> JobResult:
    """The ``auto`` row of a model: reused when nothing it depends on changed, else searched in a child process."""
    from tflq.auto import output_path as auto_output_path
    from tflq.isolation import call_isolated

    key = auto_key(job)
    entry = manifest["jobs"].get(f"{job.name}/auto", {})
    path = auto_output_path(output_dir, job.name)
    recorded = entry.get("artifact", {})
    fresh = not force and entry.get("key") == key and recorded.get("sha256") == _file_sha(path)
    if fresh:
        found = entry["measurement"]["auto"]
    else:
        on_event("start", job.name, "auto", f"searching within {job.auto['max_drop']:g} points")
        try:
            found = call_isolated(_auto_in_child, job, str(output_dir), description=f"{job.name} auto", on_message=lambda *m: None)
        except TflqError as error:
            manifest["jobs"].pop(f"{job.name}/auto", None)
            on_event("fail", job.name, "auto", str(error))
            return JobResult(job.name, "auto", "auto", "float32", str(path), "error", error=f"auto search failed: {error}")
    chosen = next((t for t in found["trials"] if t["candidate"] == found.get("chosen")), None)
    best = chosen or next((t for t in found["trials"] if t["candidate"] == found.get("best")), None) or {}
    measurement: dict[str, Any] = {
        "status": "ok",
        "size_bytes": best.get("size_bytes"),
        "accuracy": {"top1": best.get("top1"), "auto": {"top1": best.get("top1")}} if best.get("top1") is not None else None,
        "latency_ms": {"p50": best.get("latency_ms")} if best.get("latency_ms") is not None else None,
        "auto": found,
    }
    artifact = {"path": str(path), "status": "ok", "sha256": _file_sha(path), "size_bytes": best.get("size_bytes") if chosen else None}
    manifest["jobs"][f"{job.name}/auto"] = {"key": key, "artifact": artifact, "measurement": measurement}
    failures = () if found["fits"] else (f"nothing within max_drop {job.auto['max_drop']:g} pts (best: {found.get('best')})",)
    text = f"chose {found['chosen']}" if found["fits"] else failures[0]
    on_event("done" if found["fits"] else "fail", job.name, "auto", text + (" (up to date)" if fresh else ""))
    return JobResult(
        job.name, "auto", "auto", "float32", str(path) if found["fits"] else "", "ok", up_to_date=fresh,
        artifact=artifact, measurement=measurement, accuracy_drop=best.get("drop_points"), gate_failures=failures,
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
    UsageError for a bad ``jobs`` value; config problems were raised by :func:`tflq.config.load_config`.
    """
    if jobs < 1:
        raise UsageError(f"--jobs must be at least 1, got {jobs}")
    events = on_event or (lambda *event: None)
    output_dir = config.output_dir
    output_dir.mkdir(parents=True, exist_ok=True)
    manifest = read_manifest(output_dir)
    for job in config.models:
        if job.gates.get("max_accuracy_drop") is not None and "float32" not in job.modes:
            raise UsageError(
                f"{config.source}: model {job.name!r}: gates.max_accuracy_drop compares with float32; add float32 to its modes"
            )
    plans = [_plan(job, output_dir, manifest, force) for job in config.models]

    def one(plan: _Plan) -> list[JobResult]:
        return run_model(plan, output_dir, manifest, events)

    with ThreadPoolExecutor(max_workers=jobs) as pool:
        per_model = list(pool.map(one, plans))
    results = tuple(result for model_results in per_model for result in model_results)
    known = {f"{r.model}/{r.label}" for r in results}
    # keep entries of models not run this time (--only), drop variants no longer asked for
    names_run = {job.name for job in config.models}
    manifest["jobs"] = {
        key: value for key, value in manifest["jobs"].items() if key in known or key.split("/")[0] not in names_run
    }
    write_manifest(output_dir, manifest)
    from tflq.report import write_batch_reports

    report_paths = write_batch_reports(output_dir, [result.to_row() for result in results])
    return BatchResult(config=config, results=results, report_paths=tuple(report_paths))

