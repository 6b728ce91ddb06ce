"""Batch runs: YAML batch files -> typed job settings; plan, convert, measure, gate and report every job."""

from __future__ import annotations

import importlib
from typing import Any

# The names the docs import from this package, loaded on first use (importing the package stays cheap).
_EXPORTS = {"BatchResult": "tflq.batch.run", "JobResult": "tflq.batch.jobs", "run_batch": "tflq.batch.run"}
__all__ = list(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
