"""Quantization debugging: per-layer error, selective and mixed precision, and the auto search."""

from __future__ import annotations

import importlib
from typing import Any

# The names the docs import from this package, loaded on first use (importing the package stays cheap).
_EXPORTS = {
    "DebugOptions": "tflq.debug.layer_error",
    "DebugReport": "tflq.debug.layer_error",
    "debug_quantization": "tflq.debug.layer_error",
}
__all__ = list(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
