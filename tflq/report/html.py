"""``report.html``: one self-contained page (no network, no external assets) with the batch's comparison table
(sortable, gates coloured), the Pareto plots per model as inline SVG, the details of every variant, the notes, and
the ``auto:`` search tables; :func:`render_debug_html` renders a ``tflq debug`` report (per-layer SQNR chart).

Every string that comes from the user or a tool (model names, variant labels, layer names, errors) goes through
:func:`html.escape`. A Content-Security-Policy allows nothing but the page's own inline style and its one script (by
hash), so even a mistake here cannot make the browser fetch anything or run injected script.
"""
from __future__ import annotations

import html
import math
import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from tflq import __version__
from tflq.outputs import write_atomically
from tflq.report.plot import ScatterPoint, latency_box_svg, pareto_front, pareto_svg, quality_of

if TYPE_CHECKING:
    from tflq.debug.layer_error import DebugReport

Row = dict[str, Any]


class ColumnLike(Protocol):
    """What :class:`tflq.report.render.Column` offers (render.py imports this module, so not the class itself)."""

    @property
    def header(self) -> str: ...
    @property
    def text(self) -> Callable[[Row], str]: ...
    @property
    def justify(self) -> str: ...


def esc(value: Any) -> str:
    return html.escape("" if value is None else str(value), quote=True)



STYLE = """
body { font-family: system-ui, sans-serif; margin: 1.5em; color: #222; font-size: 14px; }
h1 { font-size: 1.5em; } h2 { font-size: 1.2em; margin-top: 1.6em; } h3 { font-size: 1.05em; }
table { border-collapse: collapse; margin: 0.5em 0; }
th, td { border: 1px solid #ccc; padding: 3px 8px; }
th { background: #eee; }
table.sortable th { cursor: pointer; user-select: none; }
table.sortable th[aria-sort="ascending"]::after { content: " \\25B2"; }
table.sortable th[aria-sort="descending"]::after { content: " \\25BC"; }
td.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
tr.error td { background: #fde0e0; }
td.gate-pass { background: #dff3df; color: #1d5e1d; }
td.gate-fail { background: #f8d0d0; color: #8b1111; font-weight: bold; }
tr.trial-fits td { background: #eef8ee; }
tr.trial-chosen td { background: #cfeccf; font-weight: bold; }
.plots { display: flex; flex-wrap: wrap; gap: 1em; }
svg.plot text { font-family: system-ui, sans-serif; fill: #222; }
svg .tick { font-size: 10px; fill: #555; } svg .axis { font-size: 11px; }
svg .plot-title { font-size: 13px; font-weight: bold; } svg .point-label { font-size: 10px; }
details { margin: 0.3em 0; border: 1px solid #ddd; padding: 0.3em 0.6em; border-radius: 4px; }
details > summary { cursor: pointer; }
.error-text { color: #8b1111; } .muted { color: #666; }
ul.notes li { margin: 0.2em 0; }
"""

# Click a header: sort by it (again: reverse). Cells with data-sort sort as numbers; empty cells go last.
SCRIPT = """
document.querySelectorAll("table.sortable").forEach(function (table) {
  table.querySelectorAll("thead th").forEach(function (header, column) {
    header.addEventListener("click", function () {
      var ascending = header.getAttribute("aria-sort") !== "ascending";
      table.querySelectorAll("thead th").forEach(function (other) { other.removeAttribute("aria-sort"); });
      header.setAttribute("aria-sort", ascending ? "ascending" : "descending");
      var body = table.tBodies[0];
      var rows = Array.prototype.slice.call(body.rows);
      function key(row) {
        var cell = row.cells[column];
        if (cell.hasAttribute("data-sort")) { return parseFloat(cell.getAttribute("data-sort")); }
        return cell.textContent.trim();
      }
      rows.sort(function (a, b) {
        var x = key(a), y = key(b);
        if (x === "" || y === "") { return (x === "") - (y === ""); }
        var order = (typeof x === "number" && typeof y === "number") ? x - y : String(x).localeCompare(String(y));
        return ascending ? order : -order;
      });
      rows.forEach(function (row) { body.appendChild(row); });
    });
  });
});
// A link to a variant opens its details.
function openTarget() {
  var target = document.getElementById(decodeURIComponent(location.hash.slice(1)));
  if (target && target.tagName === "DETAILS") { target.open = true; }
}
window.addEventListener("hashchange", openTarget);
openTarget();
"""


def _script_hash(script: str) -> str:
    import base64
    import hashlib

    return "sha256-" + base64.b64encode(hashlib.sha256(script.encode("utf-8")).digest()).decode("ascii")


# Only the page's own style and its one script (by hash: no other inline script or event handler runs), images only
# from data: URIs, nothing fetched.
CSP = f"default-src 'none'; style-src 'unsafe-inline'; script-src '{_script_hash(SCRIPT)}'; img-src data:"


def page(title: str, body: str) -> str:
    """A whole HTML document around ``body`` (already escaped HTML)."""
    return (
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
        f'<meta http-equiv="Content-Security-Policy" content="{CSP}">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>{esc(title)}</title>\n<style>{STYLE}</style>\n</head>\n<body>\n{body}\n"
        f"<script>{SCRIPT}</script>\n</body>\n</html>\n"
    )


# ---------------------------------------------------------------------------------------------------------------
# Sort keys: the figure behind a column's text (1.2 KB and 3 MB sort by bytes)


def _xnnpack_key(row: Row) -> float | None:
    delegation = row.get("xnnpack")
    if not delegation:
        return None
    if not delegation.get("enabled") or not delegation.get("total_ops"):
        return -1.0
    return float(delegation["delegated_ops"]) / float(delegation["total_ops"])


def _latency_key(name: str) -> Callable[[Row], float | None]:
    return lambda row: (row.get("latency_ms") or {}).get(name)


SORT_KEYS: dict[str, Callable[[Row], float | None]] = {
    "Size": lambda row: row.get("size_bytes"),
    "Ratio": lambda row: row.get("size_ratio"),
    "p50 ms": _latency_key("p50"),
    "p90 ms": _latency_key("p90"),
    "Drop": lambda row: row.get("accuracy_drop"),
    "XNNPACK ops": _xnnpack_key,
}
_NUMBER = re.compile(r"[-+]?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?")


def sort_key(header: str, row: Row, text: str) -> float | None:
    """The number a cell sorts by: the row's figure for the columns of :data:`SORT_KEYS`, else the first number in
    its text (``99.17%``, ``MAE 0.12``); None: sort as text."""
    if header in SORT_KEYS:
        value = SORT_KEYS[header](row)
        return float(value) if isinstance(value, (int, float)) and math.isfinite(value) else None
    if header in ("Model", "Variant", "Status", "Gate"):
        return None
    match = _NUMBER.search(text)
    return float(match.group()) if match else None


def _cell_class(header: str, row: Row, justify: str) -> str:
    classes = ["num"] if justify == "right" else []
    if header == "Gate" and row.get("status") == "ok":
        classes.append("gate-fail" if row.get("gate_failures") else "gate-pass")
    return " ".join(classes)


def comparison_table(rows: Sequence[Row], columns: Sequence[ColumnLike]) -> str:
    """The batch table: every column of report.md, sortable, failed rows red, gates green or red; the Model cell
    links to the variant's details."""
    head = "".join(f'<th scope="col" data-col="{esc(column.header)}">{esc(column.header)}</th>' for column in columns)
    lines = [f'<table class="sortable" id="comparison"><thead><tr>{head}</tr></thead><tbody>']
    for index, row in enumerate(rows):
        cells = []
        for column in columns:
            text = column.text(row)
            key = sort_key(column.header, row, text)
            attributes = f' data-sort="{key!r}"' if key is not None else ""
            classes = _cell_class(column.header, row, column.justify)
            attributes += f' class="{classes}"' if classes else ""
            content = esc(text)
            if column.header == "Model":
                content = f'<a href="#variant-{index}">{content}</a>'
            cells.append(f"<td{attributes}>{content}</td>")
        status = ' class="error"' if row.get("status") == "error" else ""
        lines.append(f"<tr{status}>{''.join(cells)}</tr>")
    lines.append("</tbody></table>")
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------------------------
# Pareto plots


def _usable(rows: Sequence[Row]) -> list[Row]:
    return [row for row in rows if row.get("status") == "ok" and quality_of(row)[0] is not None]


def _scatter(rows: Sequence[Row], x_of: Callable[[Row], float | None]) -> list[ScatterPoint]:
    pairs = [(row, x, quality) for row in rows if (x := x_of(row)) and (quality := quality_of(row)[0]) is not None]
    front = set(pareto_front([(x, quality) for _, x, quality in pairs]))
    return [
        ScatterPoint(
            x, quality, str(row.get("variant", "")), on_front=index in front, failed_gate=row.get("gate") == "fail"
        )
        for index, (row, x, quality) in enumerate(pairs)
    ]


def pareto_section(rows: Sequence[Row]) -> str:
    """Per model, accuracy (or agreement) against size and against p50 latency, the Pareto front in red."""
    usable = _usable(rows)
    if not usable:
        return "<p class=\"muted\">No variant has both a size and an accuracy or agreement figure: no plot.</p>"
    parts = [
        '<p class="muted">Up and left is better. Red line and red edges: the Pareto front (no other variant is both '
        "smaller or faster and more accurate); a cross: the variant failed a gate. Latency: p50, batch 1.</p>"
    ]
    for model in dict.fromkeys(str(row.get("model", "")) for row in usable):
        model_rows = [row for row in usable if str(row.get("model", "")) == model]
        ylabel = quality_of(model_rows[0])[1]
        plots = []
        by_size = _scatter(model_rows, lambda row: (row.get("size_bytes") or 0) / 1024.0)
        if by_size:
            plots.append(pareto_svg(by_size, title=f"{model}: accuracy vs size", xlabel="size (KB, log scale)",
                                    ylabel=ylabel))
        by_latency = _scatter(model_rows, lambda row: (row.get("latency_ms") or {}).get("p50"))
        if by_latency:
            plots.append(pareto_svg(by_latency, title=f"{model}: accuracy vs latency",
                                    xlabel="latency p50 (ms, log scale)", ylabel=ylabel))
        parts.append(f'<h3>{esc(model)}</h3>\n<div class="plots">{"".join(plots)}</div>')
    return "\n".join(parts)


# ---------------------------------------------------------------------------------------------------------------
# Per-variant details


def _bytes(size: Any) -> str:
    return "" if not isinstance(size, int) else f"{size:,d} B"


def _ms(value: Any) -> str:
    if not isinstance(value, (int, float)):
        return ""
    return f"{value * 1000:.3g} µs" if value < 1 else f"{value:.4g} ms"


def _pairs_table(pairs: Sequence[tuple[str, str]]) -> str:
    body = "".join(f"<tr><th scope=\"row\">{esc(name)}</th><td>{esc(value)}</td></tr>" for name, value in pairs)
    return f'<table class="facts">{body}</table>'


def _latency_block(latency: Row | None) -> str:
    if not latency:
        return "<p class=\"muted\">No latency measured.</p>"
    keys = [("min", "min"), ("p50", "p50"), ("p90", "p90"), ("p99", "p99"), ("max", "max"), ("mean", "mean"),
            ("std", "std"), ("first", "first run"), ("init", "interpreter init")]
    figures = [(label, _ms(latency.get(key))) for key, label in keys if latency.get(key) is not None]
    head = "".join(f"<th>{esc(label)}</th>" for label, _ in figures)
    cells = "".join(f'<td class="num">{esc(value)}</td>' for _, value in figures)
    runs = latency.get("runs")
    note = f"{runs} timed runs after {latency.get('warmup_runs')} warm-up runs" if runs else ""
    if latency.get("noisy"):
        note += f"; noisy (cv {latency.get('cv', 0.0):.2f}): p50 is the robust figure"
    box = latency_box_svg(latency)
    legend = "whiskers: min to max; box: p50 to p90; red tick: p99; dot: mean" if box else ""
    return (
        f'<table class="latency"><thead><tr>{head}</tr></thead><tbody><tr>{cells}</tr></tbody></table>'
        f'<p class="muted">{esc(note)}</p>' + (f"{box}<p class=\"muted\">{legend}</p>" if box else "")
    )


def _xnnpack_block(delegation: Row | None) -> str:
    if not delegation:
        return "<p class=\"muted\">XNNPACK delegation unknown.</p>"
    if not delegation.get("enabled"):
        return f"<p>XNNPACK disabled (0/{esc(delegation.get('total_ops'))} ops).</p>"
    text = (f"{delegation.get('delegated_ops')}/{delegation.get('total_ops')} ops delegated in "
            f"{delegation.get('partitions')} partition(s)")
    left = delegation.get("undelegated_op_types") or []
    text += "; on the built-in kernels: " + ", ".join(left) if left else "; every op delegated"
    return f"<p>XNNPACK: {esc(text)}</p>"


def _list(items: Sequence[Any]) -> str:
    return "<ul>" + "".join(f"<li>{esc(item)}</li>" for item in items) + "</ul>"


def variant_details(index: int, row: Row) -> str:
    """One collapsible block: the file, ops left in float, XNNPACK, the latency distribution, warnings, error."""
    name = f"{row.get('model', '')} {row.get('variant', '')}"
    status = row.get("status", "")
    summary = f"{esc(name)} <span class=\"muted\">({esc(status)}"
    summary += f", gate {esc(row.get('gate'))})</span>" if status == "ok" else ")</span>"
    facts = [("mode", row.get("mode", "")), ("I/O type", row.get("io_type", "")), ("file", row.get("path", "")),
             ("size", _bytes(row.get("size_bytes"))), ("sha256", row.get("sha256") or "")]
    if row.get("convert_seconds") is not None:
        facts.append(("conversion", f"{row['convert_seconds']:.3g} s"))
    parts = [
        f'<details id="variant-{index}"><summary>{summary}</summary>',
        _pairs_table([(name, str(value)) for name, value in facts if value]),
    ]
    if row.get("error"):
        parts.append(f'<p class="error-text">error: {esc(row["error"])}</p>')
    for failure in row.get("gate_failures") or ():
        parts.append(f'<p class="error-text">gate: {esc(failure)}</p>')
    float_ops = row.get("float_ops") or []
    layers = row.get("float_layers") or []
    if float_ops:
        parts.append(f"<p>{len(float_ops)} op(s) left in float:</p>{_list(float_ops)}")
        if layers:
            parts.append(f"<p>their Keras layers:</p>{_list(layers)}")
    elif status == "ok" and not row.get("auto"):
        parts.append("<p>Ops left in float: none.</p>")
    if status == "ok" and not row.get("auto"):
        parts.append(_xnnpack_block(row.get("xnnpack")))
        parts.append(_latency_block(row.get("latency_ms")))
    if row.get("auto"):
        parts.append(auto_table(row["auto"]))
    warnings = row.get("warnings") or []
    if warnings:
        parts.append(f"<p>Warnings:</p>{_list(warnings)}")
    parts.append("</details>")
    return "\n".join(parts)


# ---------------------------------------------------------------------------------------------------------------
# The auto search table


AUTO_HEADERS = ("candidate", "status", "top-1", "drop (pts)", "size", "latency", "float ops", "reason")


def auto_table(found: Row) -> str:
    """The search table of an ``auto:`` search (``AutoResult.to_dict()``): every candidate, the chosen one bold."""
    float32 = found.get("float32") or {}
    top1 = float32.get("top1")
    intro = (
        f"auto search ({esc(found.get('objective'))}, within {esc(found.get('max_drop_points'))} points of float32's "
        f"{esc(found.get('metric'))}"
        + (f" {top1 * 100:.2f}%" if isinstance(top1, (int, float)) else "")
        + f" on {esc(found.get('samples'))} samples): chosen <b>{esc(found.get('chosen') or 'none')}</b>"
    )
    head = "".join(f"<th>{esc(header)}</th>" for header in AUTO_HEADERS)
    lines = [f"<p>{intro}</p>", f'<table class="auto sortable"><thead><tr>{head}</tr></thead><tbody>']
    for trial in found.get("trials") or []:
        score, drop = trial.get("top1"), trial.get("drop_points")
        cells = [
            (trial.get("candidate"), None),
            (trial.get("status"), None),
            ("" if score is None else f"{score * 100:.2f}%", score),
            ("" if drop is None else f"{drop:+.2f}", drop),
            (_bytes(trial.get("size_bytes")), trial.get("size_bytes")),
            (_ms(trial.get("latency_ms")), trial.get("latency_ms")),
            (trial.get("float_ops"), trial.get("float_ops")),
            (trial.get("reason"), None),
        ]
        row_class = (
            "trial-chosen" if trial.get("candidate") == found.get("chosen")
            else "trial-fits" if trial.get("status") == "fits" else ""
        )
        cell_html = "".join(
            f'<td class="num" data-sort="{key!r}">{esc(text)}</td>' if isinstance(key, (int, float))
            else f"<td>{esc(text)}</td>"
            for text, key in cells
        )
        lines.append(f'<tr class="{row_class}">{cell_html}</tr>' if row_class else f"<tr>{cell_html}</tr>")
    lines.append("</tbody></table>")
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------------------------
# The batch page


def render_html(rows: Sequence[Row], *, columns: Sequence[ColumnLike], notes: Sequence[str] = ()) -> str:
    """The whole report.html of a batch: rows as ``JobResult.to_row()`` gives them, the columns of report.md."""
    models = list(dict.fromkeys(str(row.get("model", "")) for row in rows))
    failed = sum(1 for row in rows if row.get("status") == "error")
    gated = sum(1 for row in rows if row.get("status") == "ok" and row.get("gate_failures"))
    summary = f"{len(rows)} variant(s) of {len(models)} model(s); {failed} failed; {gated} failed a gate."
    body = [
        "<h1>tflq report</h1>",
        f'<p>{esc(summary)} <span class="muted">tflq {esc(__version__)}. Click a column header to sort.</span></p>',
        "<h2>Comparison</h2>",
        comparison_table(rows, columns),
    ]
    if notes:
        items = "".join(f"<li>{esc(note)}</li>" for note in notes)
        body += ["<h2>Notes and warnings</h2>", f'<ul class="notes">{items}</ul>']
    body += ["<h2>Pareto plots</h2>", pareto_section(rows)]
    searches = [row for row in rows if row.get("auto")]
    if searches:
        body.append("<h2>Auto search</h2>")
        for row in searches:
            body += [f"<h3>{esc(row.get('model'))}</h3>", auto_table(row["auto"])]
    body += ["<h2>Variants</h2>", *(variant_details(index, row) for index, row in enumerate(rows))]
    return page("tflq report", "\n".join(body))


def write_html_report(
    path: Path, rows: Sequence[Row], *, columns: Sequence[ColumnLike], notes: Sequence[str] = ()
) -> Path:
    """Write :func:`render_html` to ``path`` atomically (whole or absent). Returns the path."""
    write_atomically(path, render_html(rows, columns=columns, notes=notes).encode("utf-8"))
    return path


# ---------------------------------------------------------------------------------------------------------------
# tflq debug


def render_debug_html(report: DebugReport) -> str:
    """A ``tflq debug`` report as one page: the summary, the per-layer SQNR chart (model order) and the ranking."""
    from tflq.debug.report import EXACT_DB, HEADERS, HIGHLIGHTED, LEGEND, _table_rows, summary_lines
    from tflq.report.plot import Bar, sqnr_bars_svg

    ranks = {op.tensor: rank for rank, op in enumerate(report.ops, start=1)}
    bars = [
        Bar(op.label, None if op.sensitivity >= EXACT_DB else op.sensitivity, ranks.get(op.tensor))
        for op in report.in_model_order()
    ]
    chart = sqnr_bars_svg(
        bars, title=f"SQNR per op, model order: {Path(report.model).name}", highlighted=HIGHLIGHTED
    )
    head = "".join(f"<th>{esc(header)}</th>" for header in HEADERS)
    table = [f'<table class="sortable" id="ranking"><thead><tr>{head}</tr></thead><tbody>']
    for row in _table_rows(report):
        cells = []
        for header, text in zip(HEADERS, row, strict=True):
            match = _NUMBER.search(text) if header not in ("layer", "op") else None
            key = f' data-sort="{float(match.group())!r}" class="num"' if match else ""
            cells.append(f"<td{key}>{esc(text)}</td>")
        table.append(f"<tr>{''.join(cells)}</tr>")
    table.append("</tbody></table>")
    body = [
        "<h1>tflq debug</h1>",
        *(f"<p>{esc(line)}</p>" for line in summary_lines(report)),
        "<h2>Per-layer SQNR</h2>",
        f'<div class="plots">{chart}</div>',
        f'<p class="muted">Bars: the ranking score (the lower of own and median channel SQNR); red: the most '
        f"sensitive, pink: the next {HIGHLIGHTED - 1}; 'exact': {EXACT_DB:g} dB or more (float rounding).</p>",
        "<h2>Ranking</h2>",
        "\n".join(table),
        f'<p class="muted">{esc(LEGEND)}</p>',
    ]
    return page(f"tflq debug: {Path(report.model).name}", "\n".join(body))
