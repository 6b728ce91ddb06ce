"""Batch runs: YAML batch files -> typed job settings; plan, convert, measure, gate and report every job."""

from __future__ import annotations

from tflq.exports import lazy_exports

# The names the docs import from this package, loaded on first use (importing the package stays cheap).
_EXPORTS = {"BatchResult": "tflq.batch.run", "JobResult": "tflq.batch.jobs", "run_batch": "tflq.batch.run"}
__all__ = list(_EXPORTS)

__getattr__ = lazy_exports(__name__, _EXPORTS)
