"""The latency protocol of TFLite's ``benchmark_model``, on an allocated interpreter.

init (interpreter creation + ``allocate_tensors``, which applies XNNPACK and packs its weights), the first inference
alone, a warm-up of at least ``warmup_runs`` runs and ``warmup_seconds``, then at least ``runs`` timed runs and
``min_seconds`` (at most ``max_seconds``), batch of one, the input set once.
"""
from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from tflq.errors import InterpreterError
from tflq.measure.runner import TfliteRunner, quantize


class LatencySettings(Protocol):
    """What the latency protocol reads from the measurement settings (:class:`tflq.measure.harness.EvalSettings`
    has these fields); a protocol, so this module does not import the harness that imports it."""

    @property
    def runs(self) -> int: ...
    @property
    def min_seconds(self) -> float: ...
    @property
    def warmup_runs(self) -> int: ...
    @property
    def warmup_seconds(self) -> float: ...
    @property
    def max_seconds(self) -> float: ...


NOISY_CV = 0.15  # latency coefficient of variation above which the machine is called noisy


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
    def from_timings(
        cls, *, init_ms: float, first_ms: float, timings_ms: Sequence[float], warmup_runs: int
    ) -> LatencyStats:
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


def time_invocations(
    runner: TfliteRunner, sample: dict[str, np.ndarray], settings: LatencySettings, *, init_ms: float
) -> LatencyStats:
    """The latency protocol on one sample (batch of one; a model with a static batch of N: the sample repeated N
    times, the one input it takes): first run, warm-up, timed runs."""
    interpreter = runner.interpreter
    stored = {
        tensor.index: quantize(_static_batch(sample[tensor.name], tensor.shape), tensor)
        for tensor in runner.signature.inputs
    }
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
        timings_ms: list[float] = []
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


def _static_batch(value: np.ndarray, shape: tuple[int | None, ...]) -> np.ndarray:
    """``value`` (batch of one) repeated to the static batch of ``shape`` when it has one above 1."""
    batch = shape[0] if shape else None
    if batch is None or batch <= 1 or len(value) == batch:
        return value
    return np.ascontiguousarray(np.repeat(value[:1], batch, axis=0))
