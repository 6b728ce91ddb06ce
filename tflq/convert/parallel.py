"""Independent converter builds of one model in a worker process, beside the session's own work.

float16 and dynamic (every build that needs only the SavedModel export: a fresh converter, no calibration, no
training, no float32 model) do not depend on anything else the session makes, so while the parent process converts
float32, calibrates and quantizes int8/16x8, one worker process converts them. The worker is started *before* the
export (so its TensorFlow import overlaps the export) through :func:`tflq.measure.isolation.call_isolated` (fork
only while TensorFlow is not imported, else forkserver; the child dies with its parent: ``PR_SET_PDEATHSIG`` and a
pipe watch), waits for the export to be announced, converts its variants and returns their bytes. The parent then
verifies and writes them exactly as it does its own, so files and results are those of the sequential path.

How many processes: ``TFLQ_CONVERT_WORKERS``: ``2`` starts one worker whenever there is work to share; ``1``, none
(sequential); unset or ``auto``, one when a core is free (:func:`free_core`): on 2 cores shared with other jobs
at load average 2-3, MobileNetV2's 7-variant sweep took 24-29 s with the worker against 20-23 s without (with the
export with variables); on a quiet machine, with the frozen export, 6.8 s against 7.7 s (medians of 3). The worker
holds ~870 MB more (see ``docs/convert.md``). Never inside a daemonic process (a batch job's child cannot have
children; the batch runner decides the parallelism there).
"""

from __future__ import annotations

import contextlib
import os
import pickle
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tflq.errors import ConversionError, UsageError
from tflq.modes import MODES, ConverterBuild, Variant

if TYPE_CHECKING:
    from tflq.convert.options import ConvertOptions

WORKERS_VARIABLE = "TFLQ_CONVERT_WORKERS"
_POLL_SECONDS = 0.02


def worker_count() -> int:
    """How many processes may convert one model at once (1 or 2): ``TFLQ_CONVERT_WORKERS`` (``1``: sequential;
    ``2`` or more: one worker), or, unset or ``auto``, 2 when a core is free (:func:`free_core`). Never in a
    daemonic process (a batch job's child). Raises UsageError for a value that is not auto or a positive integer."""
    import multiprocessing

    if multiprocessing.current_process().daemon:
        return 1
    value = os.environ.get(WORKERS_VARIABLE, "").strip()
    if not value or value == "auto":
        return 2 if free_core() else 1
    if not value.isdigit() or int(value) < 1:
        raise UsageError(f"{WORKERS_VARIABLE}={value!r}: expected auto or a positive integer (1 = no worker process)")
    return min(int(value), 2)


def free_core() -> bool:
    """True when this process may use at least 2 CPUs and the 1-minute load average leaves more than half a core
    idle (load < CPUs - 0.5): the worker pays only on a core nobody else uses (measured: on 2 cores at load 2.3-3.3
    the sweep was slower with it, at load 1.3 it went from 0.27x to 0.20x of the naive script)."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cpus = os.cpu_count() or 1
    if cpus < 2:
        return False
    try:
        load = os.getloadavg()[0]
    except OSError:
        return False
    return load < cpus - 0.5


def start_worker(options: ConvertOptions, variants: Sequence[Variant], workdir: Path) -> ExportWorker | None:
    """A worker process for the variants whose build needs only the export (:mod:`tflq.convert.parallel`), when
    cores are free and the parent keeps work of its own; else None (everything sequential)."""
    shareable = [
        variant
        for variant in variants
        if _export_only(MODES[variant.mode].build_for(options.settings(variant).engine))
    ]
    if not shareable or len(variants) < 2:
        return None
    if len(shareable) == len(variants):
        shareable = shareable[1:]  # the parent converts one of them meanwhile
    if worker_count() < 2:
        return None
    jobs = [(variant.label, variant.mode, options.settings(variant)) for variant in shareable]
    return ExportWorker(jobs, workdir)


def _export_only(build: Any) -> bool:
    """True for a build that needs nothing but the export: a fresh converter, no calibration, no float32 model
    (the variant's engine decides its build: a LiteRT Quantizer build starts from the float32 model)."""
    return isinstance(build, ConverterBuild) and build.needs is None


class ExportWorker:
    """One worker process converting ``jobs`` (variant label, mode name, ModeSettings) from the export, once it is
    announced (:meth:`start_converting`); :meth:`results` waits for their bytes (or errors)."""

    def __init__(self, jobs: Sequence[tuple[str, str, Any]], announce_dir: Path) -> None:
        self.jobs = list(jobs)
        self._announce = announce_dir / "export-for-worker.pickle"
        self._results: dict[str, tuple[str, Any, float]] | None = None
        self._failure: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="tflq-export-worker", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        from tflq.measure.isolation import call_isolated

        try:
            self._results = call_isolated(
                _convert_jobs, str(self._announce), self.jobs, description="tflq convert worker"
            )
        except BaseException as error:  # noqa: BLE001 - handed to the parent thread in results()
            self._failure = error

    def start_converting(self, exported: Any) -> None:
        """Announce the export: the worker starts converting."""
        self._write(("export", exported))

    def cancel(self) -> None:
        """Tell a waiting worker to exit (the export failed, or the run ended early)."""
        if self._thread.is_alive():
            with contextlib.suppress(OSError):
                self._write(("cancel", None))

    def results(self) -> dict[str, tuple[str, Any, float]]:
        """label -> ("ok", bytes, seconds) or ("error", ConversionError, seconds), waiting for the worker (a worker
        that died: each of its variants has the error). Raises KeyboardInterrupt when children were stopped."""
        while self._thread.is_alive():
            self._thread.join(0.1)  # short waits: Ctrl-C reaches this thread within a second
        if isinstance(self._failure, KeyboardInterrupt):
            raise self._failure
        if self._results is None:  # the process died: each of its variants fails with the reason
            failure = ConversionError(f"the worker process converting it failed: {self._failure}")
            return {label: ("error", failure, 0.0) for label, _, _ in self.jobs}
        return self._results

    def _write(self, message: tuple[str, Any]) -> None:
        partial = self._announce.with_suffix(".partial")
        partial.write_bytes(pickle.dumps(message))
        os.replace(partial, self._announce)  # the worker never reads half a message


def _convert_jobs(
    announce: str, jobs: Sequence[tuple[str, str, Any]], *, report: Any
) -> dict[str, tuple[str, Any, float]]:
    """Worker body: import TensorFlow, wait for the export, convert each job with its mode's build."""
    del report
    from tflq._tf import imports as _tf

    _tf.tf()  # while the parent exports
    path = Path(announce)
    while not path.exists():
        if not path.parent.exists():  # the run ended (its work folder is gone) before the export was announced
            return {}
        time.sleep(_POLL_SECONDS)
    kind, exported = pickle.loads(path.read_bytes())
    if kind != "export":
        return {}
    from tflq.convert.conversion_errors import explain_converter_error
    from tflq.errors import TflqError

    session = _ExportOnly(exported)
    results: dict[str, tuple[str, Any, float]] = {}
    for label, mode, settings in jobs:
        start = time.perf_counter()
        with _tf.quiet():
            try:
                build = MODES[mode].build_for(settings.engine)
                content = build.build(session, settings)  # type: ignore[arg-type]  # export only
                results[label] = ("ok", bytes(content), time.perf_counter() - start)
            except TflqError as error:
                results[label] = ("error", error, time.perf_counter() - start)
            except Exception as error:  # the converter raises many types: one ConversionError, as in the session
                detail = _tf.last_error_line(str(error)) or type(error).__name__
                failure = ConversionError(explain_converter_error(label, detail, exported))
                results[label] = ("error", failure, time.perf_counter() - start)
    return results


class _ExportOnly:
    """The part of a session a build that needs only the export uses: a fresh converter on it."""

    def __init__(self, exported: Any) -> None:
        self.exported = exported

    def new_converter(self) -> Any:
        from tflq._tf import calibrated as _calibrated

        return _calibrated.saved_model_converter(str(self.exported.saved_model_dir), self.exported.signature_key)
