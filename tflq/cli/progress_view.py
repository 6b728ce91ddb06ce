"""What a long command shows while it works: the live view on a terminal, one line per event otherwise.

* ``tflq run``: :class:`RunView`, one row per running model (its current phase and variant, the model's elapsed
  time) under an overall bar (variants finished / planned, elapsed, remaining estimated from the variants finished
  so far). Finished and failed variants, warnings and notes print above the view, so they stay in the scrollback.
* ``tflq convert`` and ``tflq eval``: :class:`PhaseStatus`, one transient line per model or file with its phase.

The live view is used when stdout and stderr are both a terminal (not ``TERM=dumb``) and ``--plain`` is not given
(:func:`live_console`); it draws on stderr. rich is imported only when a view is made, so ``tflq --help`` stays
instant.
"""

from __future__ import annotations

import contextlib
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any

import click

from tflq.progress import PhaseEvent

plain_option = click.option(
    "--plain",
    is_flag=True,
    help="No live view: one line per event, as when stdout is not a terminal.",
)


def live_console(plain: bool) -> Any:
    """A rich Console on stderr when a live view can be drawn (stdout and stderr are terminals, not ``--plain``,
    not ``TERM=dumb``), else None."""
    if plain or not (sys.stdout.isatty() and sys.stderr.isatty()):
        return None
    import os

    from rich.console import Console

    probe = Console(stderr=True)
    if not probe.is_terminal or probe.is_dumb_terminal:
        return None
    # Its own descriptor of the terminal: TensorFlow's output is captured by redirecting descriptor 2 while it
    # exports and converts (tflq._tf.imports.quiet), and the view must go on drawing meanwhile.
    terminal = os.fdopen(os.dup(sys.stderr.fileno()), "w", encoding="utf-8", errors="replace", buffering=1)
    return Console(file=terminal, width=probe.width, height=probe.height, force_terminal=True, highlight=False)


def _clock(seconds: float) -> str:
    seconds = int(seconds)
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


class _Row:
    """One running model: its current phase and when things started."""

    def __init__(self, now: float) -> None:
        self.started = now
        self.doing = "waiting"  # "convert int8", "measure int8: latency"
        self.phase_started = now
        self.finished = 0


class RunView:
    """The live view of ``tflq run``. Use as a context manager; :meth:`on_event` is the run's EventCallback (safe
    from any thread). ``planned`` is model -> the number of rows (variants, and ``auto``) it will finish."""

    def __init__(self, console: Any, planned: dict[str, int]) -> None:
        from rich.live import Live

        self.console = console
        self.planned = dict(planned)
        self.total = sum(planned.values())
        self.started = time.monotonic()
        self.finished = 0
        self.measured = 0  # finished variants that were worked on (not up to date): the remaining-time estimate's base
        self.failed = 0
        self.rows: dict[str, _Row] = {}
        self._lock = threading.Lock()
        self._live = Live(self, console=console, refresh_per_second=4, transient=True, redirect_stdout=False)

    def __enter__(self) -> RunView:
        self.started = time.monotonic()
        self._live.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._live.stop()

    def on_event(self, kind: str, model: str, label: str, text: str) -> None:
        """Record one run event; finished and failed variants print above the view."""
        now = time.monotonic()
        with self._lock:
            row = self.rows.get(model)
            if row is None and kind in ("start", "phase"):
                row = self.rows[model] = _Row(now)
            if row is not None and (kind == "phase" or kind == "start" and row.doing == "waiting"):
                phase, _, detail = text.partition(": ")
                row.doing = f"{phase} {label}".strip() + (f": {detail}" if detail else "")
                row.phase_started = now
            elif kind in ("done", "fail"):
                self.finished += 1
                self.failed += kind == "fail"
                self.measured += not text.endswith("(up to date)")
                if row is not None:
                    row.finished += 1
                    if row.finished >= self.planned.get(model, 0):
                        del self.rows[model]
        self._live.refresh()  # every phase is drawn at least once, however short
        if kind == "done":
            self.console.print(f"ok  {model} {label}: {text}", style="green", markup=False)
        elif kind == "fail":
            self.console.print(f"ERR {model} {label}: {text}", style="bold red", markup=False)
        elif kind == "info":
            self.console.print(f"    {model} {label}: {text}", style="dim", markup=False)

    def remaining(self, elapsed: float) -> float | None:
        """Seconds left, estimated from the variants finished so far (None before the first one)."""
        if not self.measured:
            return None
        left = self.total - self.finished
        return elapsed / self.measured * left

    def __rich__(self) -> Any:
        from rich.console import Group
        from rich.progress_bar import ProgressBar
        from rich.spinner import Spinner
        from rich.table import Table

        now = time.monotonic()
        elapsed = now - self.started
        with self._lock:
            rows = [(name, row.doing, row.phase_started, row.started, row.finished) for name, row in self.rows.items()]
            finished, failed, total = self.finished, self.failed, self.total
            remaining = self.remaining(elapsed)
        table = Table.grid(padding=(0, 1))
        for _ in range(5):
            table.add_column()
        for model, doing, phase_started, started, done in rows:
            table.add_row(
                Spinner("dots", style="cyan"),
                model,
                doing,
                f"{now - phase_started:5.1f}s",
                f"[{done}/{self.planned.get(model, 0)}]  {_clock(now - started)}",
            )
        overall = Table.grid(padding=(0, 1))
        overall.add_column()
        overall.add_column(width=30)
        overall.add_column()
        estimate = f"~{_clock(remaining)}" if remaining is not None else "-:--:--"
        failures = f", {failed} failed" if failed else ""
        overall.add_row(
            "total",
            ProgressBar(total=max(total, 1), completed=finished, width=30),
            f"{finished}/{total} variants{failures}  elapsed {_clock(elapsed)}  remaining {estimate}",
        )
        return Group(table, overall)


class PhaseStatus:
    """One transient line per model or file with its current phase (``tflq convert``, ``tflq eval``).

    It draws when a phase starts or ends and, with ``refresh``, 4 times a second too (a thread: not for ``tflq eval``,
    so that its children can be forked). A ``train`` phase pauses the view when ``pause_training`` (tf_keras prints
    its own epoch bars then).
    """

    def __init__(self, console: Any, *, refresh: bool, pause_training: bool = False) -> None:
        from rich.live import Live

        self.console = console
        self.pause_training = pause_training
        self.current: dict[str, tuple[str, float]] = {}  # model -> (what it does, since)
        self.counts: dict[str, tuple[int, int | None]] = {}  # file -> samples done, total
        self._refresh = refresh
        self._live = Live(
            self, console=console, auto_refresh=refresh, refresh_per_second=4, transient=True, redirect_stdout=False
        )
        self._paused = False

    def __enter__(self) -> PhaseStatus:
        self._live.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._live.stop()

    def on_phase(self, event: PhaseEvent) -> None:
        """A :mod:`tflq.progress` listener."""
        import os

        name = os.path.basename(event.model) if event.model.endswith(".tflite") else event.model
        if event.state == "start":
            what = f"{event.phase} {event.variant}".strip() + (f": {event.detail}" if event.detail else "")
            self.current[name] = (what, time.monotonic())
            if event.phase == "train" and self.pause_training:
                self._live.stop()
                self._paused = True
        elif event.phase == "train" and self._paused:
            self._paused = False
            self._live.start()
        elif event.phase == "measure" and event.detail in ("", "reference"):  # this file is measured
            self.current.pop(name, None)
        if not self._paused:
            self._live.refresh()  # every phase is drawn at least once, however short

    def on_progress(self, label: str, done: int, total: int | None) -> None:
        """``tflq.measure.harness.evaluate``'s on_progress: samples predicted so far."""
        import os

        self.counts[os.path.basename(label)] = (done, total)
        if not self._refresh and not self._paused:
            self._live.refresh()

    def __rich__(self) -> Any:
        from rich.spinner import Spinner
        from rich.table import Table

        now = time.monotonic()
        table = Table.grid(padding=(0, 1))
        for name, (what, since) in list(self.current.items()):
            count = self.counts.get(name)
            samples = ""
            if count is not None and what.endswith("accuracy"):
                samples = f"{count[0]}/{count[1]} samples" if count[1] is not None else f"{count[0]} samples"
            table.add_row(Spinner("dots", style="cyan"), name, what, f"{now - since:5.1f}s", samples)
        return table



@contextlib.contextmanager
def phase_status(console: Any, *, refresh: bool, pause_training: bool = False) -> Iterator[PhaseStatus | None]:
    """A :class:`PhaseStatus` listening to this thread's phase events inside the block when ``console`` is given
    (see :func:`live_console`), else nothing (yields None)."""
    if console is None:
        yield None
        return
    from tflq import progress

    with PhaseStatus(console, refresh=refresh, pause_training=pause_training) as status, progress.listening(
        status.on_phase
    ):
        yield status
