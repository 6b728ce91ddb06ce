"""The Pareto plot of a batch: accuracy (or agreement) against size, latency in colour, one panel per model."""
from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tflq.outputs import write_atomically

Row = dict[str, Any]


def quality_of(row: Row) -> tuple[float | None, str]:
    """The figure to plot upwards: top-1 accuracy % when labelled, else top-1 agreement % with the reference."""
    accuracy = row.get("accuracy") or {}
    if isinstance(accuracy.get("top1"), (int, float)):
        return float(accuracy["top1"]) * 100.0, "top-1 accuracy (%)"
    for value in accuracy.values():
        if isinstance(value, dict) and isinstance(value.get("top1"), (int, float)):
            return float(value["top1"]) * 100.0, "top-1 accuracy (%)"
    agreement = row.get("agreement") or {}
    if isinstance(agreement.get("top1"), (int, float)):
        return float(agreement["top1"]) * 100.0, "top-1 agreement with float32 (%)"
    return None, ""


def pareto_front(points: Sequence[tuple[float, float]]) -> list[int]:
    """Indices of the points no other point beats on both axes (smaller x, larger y), sorted by x."""
    front = []
    for index, (size, quality) in enumerate(points):
        dominated = any(
            (other_size <= size and other_quality >= quality) and (other_size < size or other_quality > quality)
            for other_index, (other_size, other_quality) in enumerate(points)
            if other_index != index
        )
        if not dominated:
            front.append(index)
    return sorted(front, key=lambda i: points[i][0])


def write_pareto_plot(rows: Sequence[Row], path: Path) -> Path | None:
    """Draw the plot to ``path`` (PNG). Returns the path, or None when no row has a size and a quality figure."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib import cm, colors, ticker

    usable = [
        row for row in rows if row.get("status") == "ok" and row.get("size_bytes") and quality_of(row)[0] is not None
    ]
    if not usable:
        return None
    models = list(dict.fromkeys(row["model"] for row in usable))
    latencies = [((row.get("latency_ms") or {}).get("p50")) for row in usable]
    known = [value for value in latencies if value]
    norm = colors.LogNorm(vmin=min(known), vmax=max(known) * 1.0001) if known else None
    cmap = plt.get_cmap("viridis")
    columns = min(len(models), 3)
    rows_count = (len(models) + columns - 1) // columns
    figure, axes = plt.subplots(
        rows_count, columns, figsize=(5.6 * columns, 4.4 * rows_count), squeeze=False, layout="constrained"
    )
    ylabel = ""
    for panel, model in zip(axes.flat, models, strict=False):
        model_rows = [row for row in usable if row["model"] == model]
        # Every usable row has a quality figure; the filter only tells mypy so.
        points = [
            (row["size_bytes"] / 1024.0, quality) for row in model_rows if (quality := quality_of(row)[0]) is not None
        ]
        ylabel = quality_of(model_rows[0])[1]
        front = pareto_front(points)
        offsets = _label_offsets(points)
        front_x = [points[i][0] for i in front]
        front_y = [points[i][1] for i in front]
        panel.plot(front_x, front_y, "-", color="#d62728", linewidth=1.5, alpha=0.6, zorder=1, label="Pareto front")
        for index, (row, (size_kb, quality)) in enumerate(zip(model_rows, points, strict=True)):
            p50 = (row.get("latency_ms") or {}).get("p50")
            color = cmap(norm(p50)) if (norm and p50) else "#888888"
            on_front = index in front
            panel.scatter(
                [size_kb], [quality], s=110 if on_front else 60, color=color, zorder=3,
                edgecolors="#d62728" if on_front else "black", linewidths=2.0 if on_front else 0.6,
                marker="o" if row.get("gate") != "fail" else "X",
            )
            label = row["variant"] + ("" if p50 is None else f" ({_latency_text(p50)})")
            panel.annotate(
                label, (size_kb, quality), textcoords="offset points", xytext=(12, offsets[index]), fontsize=7.5,
                va="center",
                arrowprops={"arrowstyle": "-", "color": "#888888", "linewidth": 0.6, "shrinkA": 0, "shrinkB": 4},
            )
        panel.set_title(model, fontsize=11, fontweight="bold")
        panel.set_xscale("log")
        panel.xaxis.set_major_formatter(ticker.FuncFormatter(lambda value, _: f"{value:g}"))
        panel.xaxis.set_minor_formatter(
            ticker.FuncFormatter(lambda value, _: f"{value:g}" if str(f"{value:g}")[0] in "25" else "")
        )
        panel.tick_params(axis="x", which="minor", labelsize=7)
        panel.set_xlabel("size (KB, log scale)")
        panel.set_ylabel(ylabel)
        panel.grid(True, which="both", alpha=0.25)
        low = min(q for _, q in points)
        high = max(q for _, q in points)
        margin = max(0.5, (high - low) * 0.15)
        panel.set_ylim(low - margin, min(100.5, high + margin))
        xs = [x for x, _ in points]
        panel.set_xlim(min(xs) / 1.35, max(xs) * 2.4)
    for panel in list(axes.flat)[len(models):]:
        panel.axis("off")
    if norm is not None:
        mappable = cm.ScalarMappable(norm=norm, cmap=cmap)
        bar = figure.colorbar(mappable, ax=axes.ravel().tolist(), shrink=0.85)
        bar.set_label("latency p50 (ms, batch 1)")
        bar.ax.yaxis.set_major_formatter(ticker.FuncFormatter(lambda value, _: f"{value:g}"))
        bar.ax.yaxis.set_minor_formatter(ticker.FuncFormatter(lambda value, _: f"{value:g}"))
        bar.ax.tick_params(which="minor", labelsize=7)
    figure.suptitle("tflq: accuracy vs size (red edge: on the Pareto front; X: failed a gate)", fontsize=11)
    image = io.BytesIO()
    try:
        figure.savefig(image, format="png", dpi=130, bbox_inches="tight")
    finally:
        plt.close(figure)
    write_atomically(path, image.getvalue())  # a unique temporary name, the umask's mode: whole or absent
    return path


def _latency_text(milliseconds: float) -> str:
    return f"{milliseconds * 1000:.3g} µs" if milliseconds < 1 else f"{milliseconds:.3g} ms"


def _label_offsets(points: Sequence[tuple[float, float]]) -> list[float]:
    """Vertical label offsets (points) that keep labels of nearby markers from overlapping."""
    import math

    offsets = [0.0] * len(points)
    placed: list[tuple[float, float, float]] = []  # (log x, y, offset)
    ys = [y for _, y in points]
    y_span = (max(ys) - min(ys)) or 1.0
    for index in sorted(range(len(points)), key=lambda i: (-points[i][1], points[i][0])):
        x, y = math.log10(points[index][0]), points[index][1]
        offset = 0.0
        while any(abs(px - x) < 0.25 and abs((py - y) / y_span * 200 + (po - offset)) < 11 for px, py, po in placed):
            offset -= 11.0
        offsets[index] = offset
        placed.append((x, y, offset))
    return offsets


# ---------------------------------------------------------------------------------------------------------------
# Hand-written SVG for report.html: no matplotlib, no fonts, no external assets; every text is escaped.


def _esc(text: Any) -> str:
    import html

    return html.escape(str(text), quote=True)


def _nice_ticks(low: float, high: float, count: int = 5) -> list[float]:
    """Round linear ticks inside [low, high]."""
    import math

    span = high - low
    if span <= 0:
        return [low]
    step = 10 ** math.floor(math.log10(span / count))
    for factor in (1, 2, 2.5, 5, 10):
        if span / (step * factor) <= count:
            step *= factor
            break
    first = math.ceil(low / step - 1e-9) * step
    ticks = []
    value = first
    while value <= high + step * 1e-9:
        ticks.append(round(value, 10))
        value += step
    return ticks


def _log_ticks(low: float, high: float) -> list[float]:
    """1-2-5 ticks inside [low, high] (both > 0), 1-2-3-5-7 in a narrow range, else the two ends."""
    import math

    ticks = [
        factor * 10.0**exponent
        for exponent in range(math.floor(math.log10(low)), math.ceil(math.log10(high)) + 1)
        for factor in (1, 2, 3, 5, 7)
        if low <= factor * 10.0**exponent <= high
    ]
    if len(ticks) > 6:
        ticks = [tick for tick in ticks if f"{tick:e}"[0] in "125"]  # the leading digit
    return ticks if len(ticks) >= 2 else [float(f"{low:.2g}"), float(f"{high:.2g}")]


def _number(value: float) -> str:
    return f"{value:g}" if abs(value) >= 0.01 or value == 0 else f"{value:.2g}"


@dataclass(frozen=True)
class ScatterPoint:
    """One variant in an SVG Pareto plot."""

    x: float
    y: float
    label: str
    on_front: bool = False
    failed_gate: bool = False


def pareto_svg(
    points: Sequence[ScatterPoint], *, title: str, xlabel: str, ylabel: str, width: int = 520, height: int = 340
) -> str:
    """An inline SVG scatter plot, x on a log scale: the Pareto front as a red line through red-edged markers,
    a cross for a variant that failed a gate, each point labelled. ``points`` must be non-empty, x > 0."""
    import math

    left, right, top, bottom = 58, 150, 30, 46
    xs = [point.x for point in points]
    ys = [point.y for point in points]
    x_low, x_high = min(xs) / 1.25, max(xs) * 1.25
    y_margin = max(0.5, (max(ys) - min(ys)) * 0.15)
    y_low, y_high = min(ys) - y_margin, max(ys) + y_margin
    plot_w, plot_h = width - left - right, height - top - bottom

    def px(x: float) -> float:
        return left + (math.log10(x) - math.log10(x_low)) / (math.log10(x_high) - math.log10(x_low)) * plot_w

    def py(y: float) -> float:
        return top + (y_high - y) / (y_high - y_low) * plot_h

    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="plot pareto" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" role="img" aria-label="{_esc(title)}">',
        f"<title>{_esc(title)}</title>",
        f'<rect x="{left}" y="{top}" width="{plot_w}" height="{plot_h}" fill="#fbfbfb" stroke="#999"/>',
        f'<text x="{left + plot_w / 2:.1f}" y="18" text-anchor="middle" class="plot-title">{_esc(title)}</text>',
    ]
    for tick in _log_ticks(x_low, x_high):
        x = px(tick)
        parts.append(f'<line x1="{x:.1f}" y1="{top}" x2="{x:.1f}" y2="{top + plot_h}" stroke="#e4e4e4"/>')
        parts.append(
            f'<text x="{x:.1f}" y="{top + plot_h + 14}" text-anchor="middle" class="tick">{_number(tick)}</text>'
        )
    for tick in _nice_ticks(y_low, y_high):
        y = py(tick)
        parts.append(f'<line x1="{left}" y1="{y:.1f}" x2="{left + plot_w}" y2="{y:.1f}" stroke="#e4e4e4"/>')
        parts.append(f'<text x="{left - 5}" y="{y + 3:.1f}" text-anchor="end" class="tick">{_number(tick)}</text>')
    parts.append(
        f'<text x="{left + plot_w / 2:.1f}" y="{height - 8}" text-anchor="middle" class="axis">{_esc(xlabel)}</text>'
    )
    parts.append(
        f'<text transform="translate(14 {top + plot_h / 2:.1f}) rotate(-90)" text-anchor="middle" class="axis">'
        f"{_esc(ylabel)}</text>"
    )
    front = sorted((point for point in points if point.on_front), key=lambda point: point.x)
    if len(front) > 1:
        path = " ".join(f"{px(point.x):.1f},{py(point.y):.1f}" for point in front)
        parts.append(f'<polyline points="{path}" fill="none" stroke="#d62728" stroke-width="1.5" opacity="0.6"/>')
    placed: list[tuple[float, float]] = []
    for point in sorted(points, key=lambda point: (-point.y, point.x)):
        x, y = px(point.x), py(point.y)
        edge = "#d62728" if point.on_front else "#333"
        if point.failed_gate:
            parts.append(
                f'<path d="M{x - 5:.1f},{y - 5:.1f}L{x + 5:.1f},{y + 5:.1f}M{x - 5:.1f},{y + 5:.1f}L{x + 5:.1f},'
                f'{y - 5:.1f}" stroke="{edge}" stroke-width="2.5"/>'
            )
        else:
            radius, stroke = (6, 2) if point.on_front else (4.5, 1)
            parts.append(
                f'<circle cx="{x:.1f}" cy="{y:.1f}" r="{radius}" fill="#3b75af" stroke="{edge}" '
                f'stroke-width="{stroke}"/>'
            )
        label_y = y + 3
        while any(abs(other_x - x) < 60 and abs(other_y - label_y) < 11 for other_x, other_y in placed):
            label_y += 11
        placed.append((x, label_y))
        if label_y != y + 3:  # pushed down by another label: a leader line to its marker
            parts.append(
                f'<line x1="{x + 3:.1f}" y1="{y + 3:.1f}" x2="{x + 8:.1f}" y2="{label_y - 3:.1f}" stroke="#999" '
                'stroke-width="0.6"/>'
            )
        parts.append(f'<text x="{x + 9:.1f}" y="{label_y:.1f}" class="point-label">{_esc(point.label)}</text>')
    parts.append("</svg>")
    return "".join(parts)


def latency_box_svg(latency: Row, *, width: int = 360, height: int = 54) -> str | None:
    """A horizontal box of one latency distribution (ms): whiskers min to max, box p50 to p90, a tick at p99, a dot
    at the mean. None when the row lacks those figures."""
    keys = ("min", "p50", "p90", "p99", "max")
    if not all(isinstance(latency.get(key), (int, float)) for key in keys):
        return None
    low, p50, p90, p99, high = (float(latency[key]) for key in keys)
    span = (high - low) or max(high, 1e-6)
    left, right = 10, width - 10

    def px(value: float) -> float:
        return left + (value - low) / span * (right - left)

    mid = 20
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="plot latency" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" role="img" aria-label="latency distribution">',
        "<title>latency: whiskers min to max, box p50 to p90, tick p99, dot mean</title>",
        f'<line x1="{px(low):.1f}" y1="{mid}" x2="{px(high):.1f}" y2="{mid}" stroke="#555"/>',
        f'<line x1="{px(low):.1f}" y1="{mid - 7}" x2="{px(low):.1f}" y2="{mid + 7}" stroke="#555"/>',
        f'<line x1="{px(high):.1f}" y1="{mid - 7}" x2="{px(high):.1f}" y2="{mid + 7}" stroke="#555"/>',
        f'<rect x="{px(p50):.1f}" y="{mid - 9}" width="{max(px(p90) - px(p50), 1.5):.1f}" height="18" '
        'fill="#9ecae1" stroke="#3182bd"/>',
        f'<line x1="{px(p50):.1f}" y1="{mid - 9}" x2="{px(p50):.1f}" y2="{mid + 9}" stroke="#08519c" '
        'stroke-width="2.5"/>',
        f'<line x1="{px(p99):.1f}" y1="{mid - 11}" x2="{px(p99):.1f}" y2="{mid + 11}" stroke="#d62728" '
        'stroke-width="2"/>',
    ]
    if isinstance(latency.get("mean"), (int, float)):
        parts.append(f'<circle cx="{px(float(latency["mean"])):.1f}" cy="{mid}" r="3" fill="#333"/>')
    parts.append(f'<text x="{left}" y="{height - 6}" class="tick">{_esc(_latency_text(low))}</text>')
    parts.append(
        f'<text x="{right}" y="{height - 6}" text-anchor="end" class="tick">{_esc(_latency_text(high))}</text>'
    )
    parts.append("</svg>")
    return "".join(parts)


@dataclass(frozen=True)
class Bar:
    """One op in the SVG SQNR chart: its label, its score in dB (None: exact, drawn at the top) and its rank."""

    label: str
    value: float | None
    rank: int | None = None


def sqnr_bars_svg(bars: Sequence[Bar], *, title: str, highlighted: int = 3, height: int = 300) -> str:
    """An inline SVG bar chart of SQNR (dB) per op in model order: the ``highlighted`` most sensitive in red."""
    import math

    left, top, bottom = 50, 30, 90
    step = 26
    width = max(420, left + 20 + step * max(len(bars), 1))
    finite = [bar.value for bar in bars if bar.value is not None and math.isfinite(bar.value)]
    y_high = (max(finite) if finite else 50.0) + 10.0
    y_low = min(0.0, min(finite) - 3.0) if finite else 0.0
    plot_h = height - top - bottom

    def py(value: float) -> float:
        return top + (y_high - min(max(value, y_low), y_high)) / (y_high - y_low) * plot_h

    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="plot sqnr" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" role="img" aria-label="{_esc(title)}">',
        f"<title>{_esc(title)}</title>",
        f'<text x="{left}" y="18" class="plot-title">{_esc(title)}</text>',
    ]
    for tick in _nice_ticks(y_low, y_high):
        y = py(tick)
        parts.append(f'<line x1="{left}" y1="{y:.1f}" x2="{width - 10}" y2="{y:.1f}" stroke="#e4e4e4"/>')
        parts.append(f'<text x="{left - 5}" y="{y + 3:.1f}" text-anchor="end" class="tick">{_number(tick)}</text>')
    parts.append(
        f'<text transform="translate(14 {top + plot_h / 2:.1f}) rotate(-90)" text-anchor="middle" class="axis">'
        "SQNR (dB)</text>"
    )
    for index, bar in enumerate(bars):
        x = left + 10 + index * step
        exact = bar.value is None
        value = y_high if bar.value is None else bar.value if math.isfinite(bar.value) else y_low
        color = "#d62728" if bar.rank == 1 else "#f4a582" if bar.rank and bar.rank <= highlighted else "#8da0cb"
        y = py(value)
        parts.append(
            f'<rect x="{x:.1f}" y="{y:.1f}" width="{step - 8}" height="{max(py(y_low) - y, 0.5):.1f}" fill="{color}">'
            f"<title>{_esc(bar.label)}: {'exact' if exact else f'{value:.1f} dB'}</title></rect>"
        )
        if exact:
            parts.append(
                f'<text x="{x + (step - 8) / 2:.1f}" y="{y - 3:.1f}" text-anchor="middle" class="tick">exact</text>'
            )
        elif bar.rank and bar.rank <= highlighted:
            parts.append(
                f'<text x="{x + (step - 8) / 2:.1f}" y="{y - 3:.1f}" text-anchor="middle" class="tick">'
                f"#{bar.rank}</text>"
            )
        label_x, label_y = x + (step - 8) / 2, top + plot_h + 10
        parts.append(
            f'<text transform="translate({label_x:.1f} {label_y:.1f}) rotate(45)" class="point-label">'
            f"{_esc(bar.label)}</text>"
        )
    parts.append("</svg>")
    return "".join(parts)
