"""Quality gates of a batch: the ``gates:`` section, declared once, and how a variant passes or fails them.

A gate failure is not an error: the variant was built and measured, it just is not good enough. ``tflq run`` exits
3 when a gate fails and nothing else did (see docs/exit-codes.md).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, TypeVar

from tflq import options as opts
from tflq.modes import BASELINE_VARIANT

Result = TypeVar("Result")  # a tflq.batch.run.JobResult (typed loosely: run imports this module)


@dataclass(frozen=True)
class GateOptions:
    """The limits a variant must stay within; None: no such gate."""

    max_accuracy_drop: float | None = opts.setting(
        None,
        opts.Number(0, 100, optional=True),
        "top-1 drop against the float32 variant, in percentage points (needs evaluation.data with labels)",
        section="gates",
    )
    max_size_bytes: float | None = opts.setting(
        None,
        opts.Number(0, 2**63, optional=True),
        "file size in bytes",
        section="gates",
    )
    max_latency_ms: float | None = opts.setting(
        None,
        opts.Number(0, 10**9, optional=True),
        "p50 latency in milliseconds",
        section="gates",
    )

    @property
    def any(self) -> bool:
        return any(value is not None for value in opts.values(self).values())


def top1(measurement: Mapping[str, Any]) -> float | None:
    """The top-1 accuracy: the single classifier output's, or the first classifier output's of several."""
    accuracy = measurement.get("accuracy") or {}
    if isinstance(accuracy.get("top1"), (int, float)):
        return float(accuracy["top1"])
    for value in accuracy.values():
        if isinstance(value, dict) and isinstance(value.get("top1"), (int, float)):
            return float(value["top1"])
    return None


def apply_gates(gates: GateOptions, results: Sequence[Result]) -> list[Result]:
    """Each result with its accuracy drop against the baseline variant and the gates it fails."""
    rows: list[Any] = list(results)
    baseline = next((r for r in rows if r.label == BASELINE_VARIANT.label and r.status == "ok"), None)
    baseline_top1 = top1(baseline.measurement) if baseline else None
    gated = []
    for result in rows:
        drop = None
        result_top1 = top1(result.measurement)
        if baseline_top1 is not None and result_top1 is not None:
            drop = round((baseline_top1 - result_top1) * 100.0, 4)
        failures = []
        if result.status == "ok":
            if gates.max_accuracy_drop is not None:
                if drop is None:
                    failures.append(f"no accuracy to compare with {BASELINE_VARIANT.label}")
                elif drop > gates.max_accuracy_drop:
                    failures.append(f"accuracy drop {drop:.2f} pts > {gates.max_accuracy_drop:g}")
            size = result.artifact.get("size_bytes")
            if gates.max_size_bytes is not None and size is not None and size > gates.max_size_bytes:
                failures.append(f"size {size:,} B > {gates.max_size_bytes:,.0f}")
            p50 = (result.measurement.get("latency_ms") or {}).get("p50")
            if gates.max_latency_ms is not None and p50 is not None and p50 > gates.max_latency_ms:
                failures.append(f"latency p50 {p50:.3f} ms > {gates.max_latency_ms:g}")
        gated.append(replace(result, accuracy_drop=drop, gate_failures=tuple(failures)))
    return gated
