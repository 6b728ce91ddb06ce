"""Reports: terminal tables, Markdown, JSON, CSV and plots."""

from __future__ import annotations

from tflq.exports import lazy_exports

# The names the docs import from this package, loaded on first use (importing the package stays cheap).
_EXPORTS = {
    "render_table": "tflq.report.render",
    "to_csv": "tflq.report.render",
    "to_json": "tflq.report.render",
    "to_markdown": "tflq.report.render",
}
__all__ = list(_EXPORTS)

__getattr__ = lazy_exports(__name__, _EXPORTS)
