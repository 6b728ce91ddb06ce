"""The ``auto:`` row of a batch model: the accuracy-budget search (:func:`tflq.debug.auto.auto_search`) in a child
process,
reused while nothing it depends on changes."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

from tflq.batch.jobs import (
    EventCallback,
    JobResult,
    _file_sha,
    _messages,
    _notes,
    auto_key,
    owned_output,
)
from tflq.batch.manifest import Manifest
from tflq.batch.schema import ModelJob
from tflq.errors import TflqError


def _auto_in_child(job: ModelJob, output_dir: str, *, report: Callable[..., None]) -> dict[str, Any]:
    """Child-process body of a batch's ``auto:`` search. Returns the AutoResult dict plus ``fits``/``message``."""
    from tflq._tf import imports as _tf
    from tflq.debug.auto import NoCandidateFits, auto_search
    from tflq.debug.options import AutoOptions
    from tflq.qat.training import QatOptions

    _tf.set_verbose(False)
    report("info", "auto search")
    options = AutoOptions(
        **job.auto,
        data=job.evaluation.data,
        reference=job.evaluation.reference,
        eval_samples=job.measure.limit,
        convert=replace(
            job.convert, modes=(), io_types=(), skip_layers=(), skip_ops=(), layer_precision=(), qat=QatOptions()
        ),
        output_dir=Path(output_dir),
        name=job.name,
    )
    try:
        return auto_search(job.path, options).to_dict() | {"fits": True, "message": None}
    except NoCandidateFits as error:
        return error.result.to_dict() | {"fits": False, "message": str(error)}


def run_auto(
    job: ModelJob, output_dir: Path, manifest: Manifest, on_event: EventCallback, *, force: bool = False
) -> JobResult:
    """The ``auto`` row of a model: reused when nothing it depends on changed, else searched in a child process."""
    from tflq.debug.options import output_path as auto_output_path
    from tflq.measure.isolation import call_isolated

    key = auto_key(job)
    entry = manifest.entry(f"{job.name}/auto")
    path = owned_output(output_dir, job.name, auto_output_path(output_dir, job.name))
    search_notes: list[str] = list(entry.get("measurement", {}).get("notes") or [])
    recorded = entry.get("artifact", {})
    fresh = not force and entry.get("key") == key and recorded.get("sha256") == _file_sha(path)
    if fresh:
        found = entry["measurement"]["auto"]
    else:
        on_event("start", job.name, "auto", f"searching within {job.auto['max_drop']:g} points")
        try:
            with _notes.collecting() as notes:
                found = call_isolated(
                    _auto_in_child, job, str(output_dir), description=f"{job.name} auto", on_message=lambda *m: None
                )
            search_notes = _messages(notes)
        except TflqError as error:
            manifest.drop(f"{job.name}/auto")
            on_event("fail", job.name, "auto", str(error))
            return JobResult(
                job.name, "auto", "auto", "float32", str(path), "error", error=f"auto search failed: {error}"
            )
    chosen = next((t for t in found["trials"] if t["candidate"] == found.get("chosen")), None)
    best = chosen or next((t for t in found["trials"] if t["candidate"] == found.get("best")), None) or {}
    measurement: dict[str, Any] = {
        "status": "ok",
        "size_bytes": best.get("size_bytes"),
        "accuracy": {"top1": best.get("top1"), "auto": {"top1": best.get("top1")}}
        if best.get("top1") is not None
        else None,
        "latency_ms": {"p50": best.get("latency_ms")} if best.get("latency_ms") is not None else None,
        "auto": found,
    } | ({"notes": search_notes} if search_notes else {})
    artifact = {
        "path": str(path),
        "status": "ok",
        "sha256": _file_sha(path),
        "size_bytes": best.get("size_bytes") if chosen else None,
    }
    manifest.record(f"{job.name}/auto", {"key": key, "artifact": artifact, "measurement": measurement})
    failures: tuple[str, ...] = ()
    if not found["fits"]:
        failures = (f"nothing within max_drop {job.auto['max_drop']:g} pts (best: {found.get('best')})",)
    text = f"chose {found['chosen']}" if found["fits"] else failures[0]
    on_event("done" if found["fits"] else "fail", job.name, "auto", text + (" (up to date)" if fresh else ""))
    return JobResult(
        job.name,
        "auto",
        "auto",
        "float32",
        str(path) if found["fits"] else "",
        "ok",
        up_to_date=fresh,
        artifact=artifact,
        measurement=measurement,
        accuracy_drop=best.get("drop_points"),
        gate_failures=failures,
    )
