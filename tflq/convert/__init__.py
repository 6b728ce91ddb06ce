"""The conversion session: export once, calibrate once, build each variant, verify, write atomically."""

from __future__ import annotations

import importlib
from typing import Any

# The names the docs import from this package, loaded on first use (importing the package stays cheap).
_EXPORTS = {
    "Artifact": "tflq.convert.session",
    "ConvertOptions": "tflq.convert.options",
    "ConvertResult": "tflq.convert.session",
    "convert_model": "tflq.convert.session",
}
__all__ = list(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
