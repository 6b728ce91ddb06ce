"""Render a :class:`tflq.debug.layer_error.DebugReport`: rich table, JSON, CSV, Markdown, and the SQNR-per-layer plot.

Nothing here prints: the functions return text or rich renderables, and ``cli/app.py`` prints them.
"""
from __future__ import annotations

import csv
import io
import json
import math
from pathlib import Path
from typing import TYPE_CHECKING

from tflq.debug.layer_error import DebugReport, OpError

if TYPE_CHECKING:
    from rich.table import Table
from tflq.errors import UsageError

FORMATS = ("table", "json", "csv", "md")
CSV_COLUMNS = (
    "rank", "position", "label", "op", "sqnr_db", "channel_sqnr_db", "accumulated_sqnr_db", "rmse_per_scale",
    "mean_error", "max_abs_error", "scale", "zero_point", "weight_sqnr_db", "weight_min_channel_sqnr_db",
    "in_float_accuracy", "recovered_points", "tensor",
)


def _db(value: float | None) -> str:
    if value is None:
        return "exact"
    if not math.isfinite(value):
        return "-inf"
    return f"{value:.1f}"


def _number(value: float | None, digits: int = 3) -> str:
    return "" if value is None else f"{value:.{digits}f}"


def summary_lines(report: DebugReport) -> list[str]:
    """The lines above the table: what was measured, and the accuracy of float32 and int8."""
    quantization = "per-tensor" if report.per_tensor else "per-channel"
    what = f"int8 ({quantization} weights)" if report.mode == "int8" else f"mode {report.mode}"
    lines = [f"{report.model}: {what}, layer errors on {report.samples} sample(s) of {report.sample_source}"]
    check = report.accuracy
    if check is not None:
        lines.append(
            f"{check.metric} on {check.samples} sample(s): float32 {check.float32:.2%}, {check.mode} {check.int8:.2%} "
            f"(drop {check.drop:.2f} points)"
        )
    if report.mode != "int8":
        lines.append(
            f"SQNR: each op quantized alone by mode {report.mode} (the rest float), compared with the float32 model "
            f"side by side; the accuracy checks keep a layer at {report.kept_at}"
        )
    lines += [f"Note: {note}" for note in report.notes]
    return lines


def _in_float(report: DebugReport, op: OpError) -> tuple[str, float | None, float | None]:
    recovery = report.recovery_of(op)
    if recovery is None or report.accuracy is None:
        return "", None, None
    if recovery.score is None:
        return f"error: {recovery.error}", None, None
    points = report.accuracy.recovered_points(recovery)
    return f"{recovery.score:.2%} ({points:+.2f})", recovery.score, points


def _table_rows(report: DebugReport) -> list[list[str]]:
    rows = []
    for rank, op in enumerate(report.ops, start=1):
        weights = op.weights
        rows.append([
            str(rank),
            op.label,
            op.op_type,
            _db(op.sqnr_db),
            _db(op.channel_sqnr_db),
            _db(op.accumulated_sqnr_db),
            _number(op.rmse_per_scale, 2),
            f"{op.mean_error:.2g}",
            _db(weights.sqnr_db) if weights else "",
            _in_float(report, op)[0],
        ])
    return rows


HEADERS = (
    "#", "layer", "op", "SQNR dB", "channel SQNR dB", "accum. SQNR dB", "RMSE/scale", "mean err", "weights SQNR dB",
    "top-1 with layer in float",
)
SHORT_HEADERS = (
    "#", "layer", "op", "SQNR", "chan. SQNR", "accum. SQNR", "RMSE/scale", "mean err", "weights SQNR", "in float",
)
LEGEND = (
    "SQNR: the op's own error (float twin on the same inputs); channel SQNR: median over output channels, low when "
    "a few large channels or values crush the rest; accum. SQNR: error from the model input to this op; ranked by "
    "the lower of SQNR and channel SQNR; in float: top-1 with that layer left in float (percentage points recovered)."
)


def rich_table(report: DebugReport) -> Table:
    """The ranking as a rich Table."""
    from rich import box
    from rich.table import Table

    table = Table(title=f"{report.mode} quantization error per op (SQNR in dB), most sensitive first",
                  title_justify="left", box=box.SIMPLE_HEAD, pad_edge=False)
    for header, short in zip(HEADERS, SHORT_HEADERS, strict=True):
        text_column = header in ("layer", "op", "top-1 with layer in float")
        if short == "in float" and report.kept_at != "float":
            short = f"at {report.kept_at}"
        table.add_column(short, justify="left" if text_column else "right", no_wrap=header in ("layer", "op"))
    for row in _table_rows(report):
        table.add_row(*row)
    return table


def render(report: DebugReport, output_format: str) -> str:
    """The report as ``json``, ``csv`` or ``md`` text (``table`` is :func:`rich_table`). Raises UsageError."""
    if output_format == "json":
        return json.dumps(report.to_dict(), indent=2)
    if output_format == "csv":
        return _csv(report)
    if output_format == "md":
        return _markdown(report)
    raise UsageError(f"unknown format {output_format!r}; expected one of {', '.join(FORMATS)}")


def _csv(report: DebugReport) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for rank, op in enumerate(report.ops, start=1):
        row = op.to_dict()
        weights = row["weights"] or {}
        _, accuracy, points = _in_float(report, op)
        values = {
            **row,
            "rank": rank,
            "weight_sqnr_db": weights.get("sqnr_db"),
            "weight_min_channel_sqnr_db": weights.get("min_channel_sqnr_db"),
            "in_float_accuracy": None if accuracy is None else round(accuracy, 4),
            "recovered_points": None if points is None else round(points, 2),
        }
        writer.writerow(["" if values[column] is None else values[column] for column in CSV_COLUMNS])
    return buffer.getvalue()


def _markdown(report: DebugReport) -> str:
    lines = [f"{line}  " for line in summary_lines(report)] + [""]
    kept = "in float" if report.kept_at == "float" else f"at {report.kept_at}"
    lines.append("| " + " | ".join(HEADERS).replace("in float", kept) + " |")
    lines.append("|" + "|".join("---" if header in ("layer", "op") else "---:" for header in HEADERS) + "|")
    for row in _table_rows(report):
        lines.append("| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |")
    lines += ["", LEGEND, ""]
    return "\n".join(lines)


EXACT_DB = 70.0  # above this an error is float rounding: drawn at the top of the axis as "exact"
HIGHLIGHTED = 3  # the most sensitive ops drawn in red, with their rank


def plot_sqnr(report: DebugReport, path: Path) -> None:
    """Write a PNG of SQNR per op in model order. Bars: the ranking score (the lower of own and median channel
    SQNR), red with their rank for the most sensitive; markers: own and median channel SQNR; line: accumulated
    SQNR. With accuracy checks, the points recovered by leaving a layer in float are written above its bar.
    Raises UsageError when the file cannot be written."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ops = report.in_model_order()
    ranks = {op.tensor: rank for rank, op in enumerate(report.ops, start=1)}
    finite = [
        value for op in ops for value in (op.sqnr_db, op.channel_sqnr_db, op.accumulated_sqnr_db)
        if value is not None and math.isfinite(value) and value < EXACT_DB
    ]
    top = min(EXACT_DB, (max(finite) if finite else 50.0) + 12.0)
    bottom = min(0.0, min(finite) - 3.0) if finite else 0.0

    def shown(value: float | None) -> float:
        if value is None or value >= top:
            return top
        return max(value, bottom) if math.isfinite(value) else bottom

    positions = list(range(len(ops)))
    long_labels = any(len(op.label) > 10 or len(op.op_type) > 12 for op in ops) or len(ops) > 8
    labels = [f"{op.label}\n{op.op_type}" if len(ops) <= 30 else op.label for op in ops]
    width = min(40.0, max(7.0, (0.62 if long_labels else 0.5) * len(ops) + 3.0))
    figure, axes = plt.subplots(figsize=(width, 5.6), dpi=110)
    highlighted = [ranks.get(op.tensor, 10**6) <= HIGHLIGHTED for op in ops]
    colors = [
        "#d62728" if ranks.get(op.tensor) == 1 else "#f4a582" if flag else "#8da0cb"
        for op, flag in zip(ops, highlighted, strict=True)
    ]
    axes.bar(
        positions, [shown(op.sensitivity if math.isfinite(op.sensitivity) else None) - bottom for op in ops],
        bottom=bottom, width=0.62, color=colors,
        label=f"ranking score: lower of own and channel SQNR (red: most sensitive, pink: next {HIGHLIGHTED - 1})",
    )
    axes.plot(positions, [shown(op.sqnr_db) for op in ops], "x", color="black", markersize=7,
              label="own SQNR (whole tensor)")
    axes.plot(positions, [shown(op.channel_sqnr_db) for op in ops], "D", color="#ff7f0e", markersize=5,
              label="median channel SQNR")
    axes.plot(positions, [shown(op.accumulated_sqnr_db) for op in ops], "o-", color="#2ca02c", markersize=4,
              linewidth=1.2, label="accumulated SQNR (from the model input)")
    for position, op, flag in zip(positions, ops, highlighted, strict=True):
        height = max(shown(value) for value in (op.sqnr_db, op.channel_sqnr_db, op.accumulated_sqnr_db))
        note = []
        if flag:
            note.append(f"#{ranks[op.tensor]}")
            recovery = report.recovery_of(op)
            if recovery is not None and report.accuracy is not None and recovery.score is not None:
                note.append(f"{report.accuracy.recovered_points(recovery):+.1f} pts in float")
        if height >= top:
            note.append("exact")
        if note:
            axes.annotate("\n".join(note), (position, min(height, top)), xytext=(0, 5), textcoords="offset points",
                          ha="center", va="bottom", fontsize=8, color="#b2182b" if flag else "#555555")
    axes.set_ylim(bottom, top + (top - bottom) * 0.18)
    axes.set_xlim(-0.6, len(ops) - 0.4)
    axes.set_xticks(positions)
    axes.set_xticklabels(labels, rotation=30 if long_labels else 0, ha="right" if long_labels else "center", fontsize=8)
    axes.set_ylabel("SQNR (dB), higher is better")
    subtitle = ""
    if report.accuracy is not None:
        check = report.accuracy
        subtitle = f"\n{check.metric}: float32 {check.float32:.2%}, {check.mode} {check.int8:.2%}"
    axes.set_title(
        f"{report.mode} quantization error per op, in model order: {Path(report.model).name}{subtitle}", fontsize=10
    )
    axes.grid(axis="y", alpha=0.3)
    figure.legend(loc="upper center", ncol=2, fontsize=8, frameon=False, bbox_to_anchor=(0.5, 0.995))
    figure.tight_layout(rect=(0, 0, 1, 0.9))
    from tflq.convert.session import write_atomically

    png = io.BytesIO()
    try:
        figure.savefig(png, format="png")
        write_atomically(path, png.getvalue())  # complete or absent, like every tflq output
    except OSError as error:
        raise UsageError(f"--plot {path}: cannot write the PNG: {error.strerror or error}") from None
    finally:
        plt.close(figure)
