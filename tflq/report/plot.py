"""The Pareto plot of a batch: accuracy (or agreement) against size, latency in colour, one panel per model."""
from __future__ import annotations

import io
from collections.abc import Sequence
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
