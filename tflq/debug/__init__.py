"""Quantization debugging: per-layer error, selective and mixed precision, and the auto search."""
from __future__ import annotations

from tflq.debug.layer_error import DebugOptions, DebugReport, debug_quantization

__all__ = ['DebugOptions', 'DebugReport', 'debug_quantization']
