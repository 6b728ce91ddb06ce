"""Batch runs: YAML batch files -> typed job settings; plan, convert, measure, gate and report every job."""

from __future__ import annotations

from tflq.batch.run import BatchResult, JobResult, run_batch

__all__ = ["BatchResult", "JobResult", "run_batch"]
