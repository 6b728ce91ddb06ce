"""Reports: terminal tables, Markdown, JSON, CSV and plots."""

from __future__ import annotations

import importlib
from typing import Any

# The names the docs import from this package, loaded on first use (importing the package stays cheap).
_EXPORTS = {
    "render_table": "tflq.report.render",
    "to_csv": "tflq.report.render",
    "to_json": "tflq.report.render",
    "to_markdown": "tflq.report.render",
}
__all__ = list(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
