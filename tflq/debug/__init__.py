"""Quantization debugging: per-layer error, selective and mixed precision, and the auto search."""

from __future__ import annotations

from tflq.exports import lazy_exports

# The names the docs import from this package, loaded on first use (importing the package stays cheap).
_EXPORTS = {
    "DebugOptions": "tflq.debug.layer_error",
    "DebugReport": "tflq.debug.layer_error",
    "debug_quantization": "tflq.debug.layer_error",
    "debug_for_mode": "tflq.debug.engine_error",
}
__all__ = list(_EXPORTS)

__getattr__ = lazy_exports(__name__, _EXPORTS)
