"""How to measure: the latency protocol and the evaluation set-up, declared once (no numpy, no LiteRT: the CLI
builds its flags from these at start-up). ``tflq.measure.harness`` re-exports every name."""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

from tflq import options as opts
from tflq.errors import UsageError
from tflq.measure.tasks import check_task_setting


def machine_threads() -> int:
    """The cores this process may run on (the default ``threads``)."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return max(1, os.cpu_count() or 1)


def idle_threads() -> int:
    """The cores not busy with other work: cores minus the 1-minute load average, rounded, at least 1."""
    cores = machine_threads()
    busy = os.getloadavg()[0] if hasattr(os, "getloadavg") else 0.0
    return max(1, min(cores, int(cores - busy + 0.5)))


MAX_COUNT = 2**31 - 1  # counts reach C ints; anything bigger is a typo


@dataclass(frozen=True)
class EvaluationOptions:
    """What to measure against: the ``evaluation:`` section of a batch file and ``tflq eval``'s data flags."""

    data: str | None = opts.setting(
        None, opts.Text(optional=True, path=True, metavar="DATA"),
        "evaluation data (.npz, .npy, image folder, module:function); labels give accuracy", flag="--data",
        section="evaluation",
    )
    reference: str | None = opts.setting(
        None, opts.Text(optional=True, path=True, metavar="MODEL"),
        "model to compare outputs with: .keras, .h5, SavedModel dir or float32 .tflite", flag="--reference",
        section="evaluation", shown_default="the float32 variant",
    )
    task: Any = opts.setting(
        None, opts.Checked(check_task_setting, "classification | regression, or a mapping output -> task"),
        "per-output task: classification or regression (one value, or a mapping output -> task, '*' for the rest)",
        section="evaluation", shown_default="from each output's shape and labels",
    )


@dataclass(frozen=True)
class EvalSettings:
    """How to measure. ``threads`` None means :func:`machine_threads` for latency and :func:`idle_threads` for the
    evaluation pass (a thread pool on cores that other processes keep busy is slower than one thread); ``runs`` 0
    skips latency; ``batch_size`` None picks one from the input size (dynamic-batch models only); ``limit`` caps the
    evaluation samples."""

    threads: int | None = opts.setting(
        None, opts.Integer(minimum=1, maximum=4096, optional=True), "interpreter threads", flag="--threads",
        section="latency", shown_default="every core for latency, the idle cores for evaluation",
    )
    runs: int = opts.setting(50, opts.Integer(minimum=0, maximum=MAX_COUNT), "timed runs at least (0: no latency)",
                             flag="--runs", section="latency")
    # A batch file favours speed over many variants: no minimum timed duration, more warm-up runs instead.
    min_seconds: float = opts.setting(1.0, opts.Number(0, 3600), "timed runs last at least this long, in seconds",
                                      flag="--min-seconds", section="latency", shown_default="1.0 (a batch file: 0)",
                                      batch_default=0.0)
    warmup_runs: int = opts.setting(1, opts.Integer(minimum=0, maximum=MAX_COUNT), "warm-up runs at least",
                                    flag="--warmup-runs", section="latency", shown_default="1 (a batch file: 5)",
                                    batch_default=5)
    warmup_seconds: float = opts.setting(0.5, opts.Number(0, 3600), "warm-up lasts at least this long, in seconds",
                                         flag="--warmup-seconds", section="latency")
    max_seconds: float = opts.setting(150.0, opts.Number(0, 86400, open_min=True),
                                      "timed runs stop after this long, in seconds, even if fewer than `runs`",
                                      section="latency")
    use_xnnpack: bool = opts.setting(True, opts.Flag(), "measure with LiteRT's default XNNPACK delegate",
                                     flag="--xnnpack", section="latency", yaml="xnnpack")
    batch_size: int | None = opts.setting(
        None, opts.Integer(minimum=1, maximum=MAX_COUNT, optional=True),
        "evaluation batch for dynamic-batch models", flag="--batch-size", section="latency",
        shown_default="from the input size",
    )
    limit: int | None = opts.setting(
        None, opts.Integer(minimum=1, maximum=MAX_COUNT, optional=True), "evaluate only the first N samples",
        flag="--samples", section="evaluation", yaml="samples", shown_default="all",
    )

    def __post_init__(self) -> None:
        checks = [
            (self.threads is None or self.threads >= 1, f"threads must be at least 1 (got {self.threads})"),
            (self.runs >= 0, f"runs must be 0 or more (got {self.runs})"),
            (self.warmup_runs >= 0, f"warm-up runs must be 0 or more (got {self.warmup_runs})"),
            (self.min_seconds >= 0 and self.warmup_seconds >= 0, "seconds must be 0 or more"),
            (self.max_seconds > 0, f"max seconds must be positive (got {self.max_seconds})"),
            (self.batch_size is None or self.batch_size >= 1, f"batch size must be at least 1 (got {self.batch_size})"),
            (self.limit is None or self.limit >= 1, f"sample limit must be at least 1 (got {self.limit})"),
        ]
        for ok, message in checks:
            if not ok:
                raise UsageError(message)

    @property
    def resolved_threads(self) -> int:
        """Threads for latency."""
        return self.threads if self.threads is not None else machine_threads()

    def evaluation_threads(self) -> int:
        """Threads for the evaluation pass (reads the load average when ``threads`` is not set)."""
        return self.threads if self.threads is not None else idle_threads()
