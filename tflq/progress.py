"""Phase events: what a long conversion or measurement is doing now (export, calibrate, train, convert, verify,
measure), for a live view to show.

The library marks each phase with ``with phase("export", model=name):``; a listener registered with
:func:`listening` receives a :class:`PhaseEvent` when the phase starts and when it ends. Listeners live in a context
variable: each thread (each batch worker) has its own, and with no listener a phase costs one context-variable read.

An event is plain data (:meth:`PhaseEvent.to_data` / :meth:`PhaseEvent.from_data`: a tuple of str and float), so it
crosses a process boundary: :mod:`tflq.measure.isolation` forwards a child's events over its pipe and re-emits them in
the parent, in the calling thread. Nothing heavy is imported here (this module is below every stage).
"""

from __future__ import annotations

import contextlib
import contextvars
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

# The phases, in pipeline order. "measure" carries a detail: "reference", "latency" or "accuracy".
PHASES = ("export", "calibrate", "train", "convert", "verify", "measure")


@dataclass(frozen=True)
class PhaseEvent:
    """One phase starting (``state`` "start") or ending ("end", with ``seconds``, also when the phase failed).

    ``model`` is the model's name in a conversion (the output stem) and the ``.tflite`` path in a measurement;
    ``variant`` is the variant's label when the phase belongs to one variant ("" for the model's shared phases:
    export, calibrate, train); ``detail`` refines the phase (``measure``: "latency", "accuracy", "reference").
    """

    phase: str
    model: str
    variant: str = ""
    detail: str = ""
    state: str = "start"
    seconds: float = 0.0

    def to_data(self) -> tuple[str, str, str, str, str, float]:
        """The event as a tuple of plain values (for a pipe, a queue or a Ray object)."""
        return (self.phase, self.model, self.variant, self.detail, self.state, self.seconds)

    @classmethod
    def from_data(cls, data: Sequence[Any]) -> PhaseEvent:
        """The event :meth:`to_data` made."""
        phase, model, variant, detail, state, seconds = data
        return cls(str(phase), str(model), str(variant), str(detail), str(state), float(seconds))

    @property
    def text(self) -> str:
        """``convert``, ``measure: latency``: the phase and its detail (the variant is said elsewhere)."""
        return f"{self.phase}: {self.detail}" if self.detail else self.phase


Listener = Callable[[PhaseEvent], None]

_listeners: contextvars.ContextVar[tuple[Listener, ...]] = contextvars.ContextVar("tflq_progress", default=())


@contextlib.contextmanager
def listening(listener: Listener) -> Iterator[None]:
    """Send this thread's phase events to ``listener`` (besides the listeners already there) inside the block."""
    token = _listeners.set(_listeners.get() + (listener,))
    try:
        yield
    finally:
        _listeners.reset(token)


def only(listener: Listener) -> None:
    """Make ``listener`` this thread's only listener from now on (a child process forwarding to its parent: the
    listeners it inherited through ``fork`` belong to the parent)."""
    _listeners.set((listener,))


def emit(event: PhaseEvent) -> None:
    """Give ``event`` to this thread's listeners (a child's events re-emitted in the parent come through here)."""
    for listener in _listeners.get():
        listener(event)


@contextlib.contextmanager
def phase(name: str, *, model: str, variant: str = "", detail: str = "") -> Iterator[None]:
    """Mark the block as phase ``name`` of ``model`` (and ``variant``): a start event, then an end event."""
    listeners = _listeners.get()
    if not listeners:
        yield
        return
    started = time.perf_counter()
    emit(PhaseEvent(name, model, variant, detail))
    try:
        yield
    finally:
        emit(PhaseEvent(name, model, variant, detail, "end", time.perf_counter() - started))
