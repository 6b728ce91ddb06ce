"""What a batch run's pieces share: the result rows, the cache keys, the output-folder rule, and the notes collected
from the children (used by :mod:`tflq.batch.run` and :mod:`tflq.batch.auto_job`).

Cache keys read the settings' declarations (:func:`tflq.options.values`): a mode's conversion key holds exactly
the settings its registry entry says it reads, plus how the model is loaded, its calibration when it calibrates
and its training when it trains. Data files count by content.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

from tflq import __version__
from tflq import options as opts
from tflq.batch.schema import ModelJob
from tflq.errors import UsageError
from tflq.modes import MODES, Variant

# on_event(kind, model, label, text): kind is "start", "done", "fail", "info" or "phase" (a phase starts: text is the
# phase, label "" for the model's shared phases; see tflq.progress). Plain strings: an executor may carry them as data.
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
            warnings=list(
                dict.fromkeys(
                    [
                        *(row.get("warnings") or []),
                        *(self.artifact.get("notes") or []),
                        *(self.measurement.get("notes") or []),
                    ]
                )
            ),
        )
        row.pop("notes", None)
        return row


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
    for package in ("tensorflow", "ai-edge-litert", "keras", "litert-quantizer"):
        with contextlib.suppress(metadata.PackageNotFoundError):
            found[package] = metadata.version(package)
    return found


def _keyed(options: Any, names: Sequence[str] | None = None) -> dict[str, Any]:
    """The declared settings of ``options`` (only ``names`` when given) for a cache key: data files by content."""
    values = opts.values(options, names)
    for item in opts.declared(type(options)):
        kind = item.setting.kind
        if item.name in values and isinstance(kind, opts.Text) and kind.path:
            values[item.name] = content_hash(values[item.name])
    return values


def _calibration_fields() -> tuple[str, ...]:
    from tflq.convert.session import ConvertOptions

    return tuple(item.name for item in opts.declared(ConvertOptions) if item.setting.section == "calibration")


def conversion_key(job: ModelJob, variant: Variant, model_hash: str) -> str:
    """What the variant's .tflite depends on: the model, the settings its mode declares it reads, how the model is
    loaded, the calibration (calibrated and training modes), the training (training modes), the versions."""
    mode = MODES[variant.mode]
    convert = job.convert
    settings: dict[str, Any] = {
        "model": model_hash,
        "mode": variant.mode,
        "io_type": variant.io_type,
        "settings": _keyed(convert, mode.settings),
        "model_options": _keyed(convert.model),
        "versions": _versions(),
    }
    # training samples double as representative data; a user's recipe may ask for calibration
    if mode.calibrated or mode.needs_training or "recipe" in mode.settings:
        settings["calibration"] = _keyed(convert, _calibration_fields()) | {"images": _keyed(convert.images)}
    if mode.needs_training:
        settings["qat"] = _keyed(convert.qat)
    return _digest(settings)


def measurement_key(job: ModelJob, key: str, baseline_key: str | None) -> str:
    """What the variant's figures depend on: its .tflite, the evaluation set-up and the float32 baseline."""
    evaluation = _keyed(job.evaluation)
    if job.evaluation.task is not None:
        evaluation["task"] = job.evaluation.task.to_setting()
    return _digest(
        {"conversion": key, "evaluation": evaluation, "measure": _keyed(job.measure), "baseline": baseline_key}
    )


def _digest(value: Any) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()


def _file_sha(path: Path) -> str | None:
    if not path.is_file():
        return None
    digest = hashlib.sha256()
    _hash_file(path, digest)
    return digest.hexdigest()


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


class _NoteCollector(logging.Handler):
    """Collects, per thread, the ``tflq`` log records at INFO and above -- the runner's own and those forwarded from
    its child processes (:mod:`tflq.measure.isolation` re-emits them in the calling thread) -- for the report's
    notes."""

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


def auto_key(job: ModelJob) -> str:
    """What the ``auto`` search result depends on: model, calibration, evaluation, search settings, versions."""
    convert = job.convert
    return _digest(
        {
            "model": content_hash(str(job.path)),
            "calibration": _keyed(convert, _calibration_fields()) | {"images": _keyed(convert.images)},
            "evaluation": _keyed(job.evaluation),
            "auto": dict(job.auto),
            "measure": _keyed(job.measure) if job.auto.get("objective") == "latency" else None,
            "per_tensor": convert.per_tensor,
            "model_options": _keyed(convert.model),
            "versions": _versions(),
        }
    )
