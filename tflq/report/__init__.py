"""Reports: terminal tables, Markdown, JSON, CSV and plots."""
from __future__ import annotations

from tflq.report.render import render_table, to_csv, to_json, to_markdown

__all__ = ['render_table', 'to_csv', 'to_json', 'to_markdown']
