"""Render measurements (the dicts of ``Measurement.to_dict()``) as a terminal table, Markdown, CSV or JSON.

Plain functions over lists of dicts, so the batch runner can add its own columns (mode, accuracy drop, gate) by
passing ``columns``: a sequence of :class:`Column`.
"""
from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    from rich.table import Table

Row = dict[str, Any]


@dataclass(frozen=True)
class Column:
    """A table column: its header, how to get its text from a row, and its alignment."""

    header: str
    text: Callable[[Row], str]
    justify: Literal["left", "right"] = "right"


def format_bytes(size: int | None) -> str:
    if size is None:
        return ""
    for unit, factor in (("MB", 1024 * 1024), ("KB", 1024)):
        if size >= factor:
            return f"{size / factor:.1f} {unit}"
    return f"{size} B"


def format_ms(value: float | None) -> str:
    if value is None:
        return ""
    if value >= 100:
        return f"{value:.0f}"
    if value >= 10:
        return f"{value:.1f}"
    if value >= 0.1:
        return f"{value:.2f}"
    return f"{value:.3f}"


def _latency(row: Row, key: str) -> str:
    latency = row.get("latency_ms")
    return format_ms(latency.get(key)) if latency else ""


def _cv(row: Row) -> str:
    latency = row.get("latency_ms")
    if not latency:
        return ""
    return f"{latency['cv']:.2f}" + (" !" if latency.get("noisy") else "")


def _ratio(row: Row) -> str:
    ratio = row.get("size_ratio")
    return "" if ratio is None else f"{ratio:.2f}x"


def _xnnpack(row: Row) -> str:
    delegation = row.get("xnnpack")
    if not delegation:
        return ""
    if not delegation["enabled"]:
        return "off"
    text = f"{delegation['delegated_ops']}/{delegation['total_ops']}"
    if delegation["delegated_ops"] == 0:
        text += " (none)"
    return text


def _partitions(row: Row) -> str:
    """XNNPACK's partitions (DELEGATE nodes): 1 when the delegate takes the graph whole; many, with the ops between
    them on the built-in kernels, e.g. for a dynamic batch on some graphs (``--static-batch``)."""
    delegation = row.get("xnnpack")
    if not delegation or not delegation["enabled"]:
        return ""
    return str(delegation.get("partitions", ""))


def _per_output_text(section: dict[str, Any] | None, describe: Callable[[dict[str, Any]], str]) -> str:
    """One output's figure, or ``name: figure`` for each output that has one (empty figures are left out)."""
    if not section:
        return ""
    outputs = {name: value for name, value in section.items() if isinstance(value, dict)}
    if len(outputs) == 1:
        return describe(next(iter(outputs.values())))
    texts = {name: describe(value) for name, value in outputs.items()}
    return ", ".join(f"{name}: {text}" for name, text in texts.items() if text)


def _is_regression(figures: dict[str, Any]) -> bool:
    return figures.get("task") == "regression"


def _accuracy_text(figures: dict[str, Any]) -> str:
    if figures.get("top1") is not None:
        return f"{figures['top1'] * 100:.2f}%"
    if figures.get("mae") is not None:
        return f"MAE {figures['mae']:.4g}"
    return ""


def _agreement_text(figures: dict[str, Any]) -> str:
    """Top-1 agreement of a classifier output; nothing for a regression output (its figures: SQNR, max error)."""
    if figures.get("top1") is not None:
        return f"{figures['top1'] * 100:.2f}%"
    if _is_regression(figures):
        return ""
    return f"cos {figures['cosine']:.4f}"


def _max_error_text(figures: dict[str, Any]) -> str:
    """Max abs error of a regression output (in the output's units)."""
    if not _is_regression(figures) or figures.get("max_abs_error") is None:
        return ""
    return f"{figures['max_abs_error']:.3g}"


def _sqnr_text(figures: dict[str, Any]) -> str:
    value = figures.get("sqnr_db")
    return "inf" if value is None else f"{value:.1f}"


def _status(row: Row) -> str:
    return row.get("status", "")


EVAL_COLUMNS: tuple[Column, ...] = (
    Column("Model", lambda row: row.get("name", ""), justify="left"),
    Column("Size", lambda row: format_bytes(row.get("size_bytes"))),
    Column("Ratio", _ratio),
    Column("p50 ms", lambda row: _latency(row, "p50")),
    Column("p90 ms", lambda row: _latency(row, "p90")),
    Column("CV", _cv),
    Column("XNNPACK ops", _xnnpack),
    Column("Partitions", _partitions),
    Column("Accuracy", lambda row: _per_output_text(row.get("accuracy"), _accuracy_text)),
    Column("Agree top-1", lambda row: _per_output_text(row.get("agreement"), _agreement_text)),
    Column("SQNR dB", lambda row: _per_output_text(row.get("agreement"), _sqnr_text)),
    Column("Status", _status, justify="left"),
)

MAX_ERROR_COLUMN = Column("Max err", lambda row: _per_output_text(row.get("agreement"), _max_error_text))


def _has_regression_agreement(rows: Sequence[Row]) -> bool:
    return any(
        isinstance(figures, dict) and _is_regression(figures)
        for row in rows
        for figures in (row.get("agreement") or {}).values()
    )


def eval_columns(rows: Sequence[Row]) -> tuple[Column, ...]:
    """:data:`EVAL_COLUMNS`, plus "Max err" (after "SQNR dB") when a row has a regression output compared with a
    reference."""
    if not _has_regression_agreement(rows):
        return EVAL_COLUMNS
    position = [column.header for column in EVAL_COLUMNS].index("SQNR dB") + 1
    return EVAL_COLUMNS[:position] + (MAX_ERROR_COLUMN,) + EVAL_COLUMNS[position:]


def render_table(rows: Sequence[Row], *, columns: Sequence[Column] | None = None, title: str | None = None) -> Table:
    """A ``rich.table.Table`` of the rows (errors in red, noisy latency marked ``!``); columns default to
    :func:`eval_columns`."""
    from rich.table import Table

    columns = eval_columns(rows) if columns is None else columns
    table = Table(title=title, header_style="bold")
    for column in columns:
        table.add_column(column.header, justify=column.justify)
    for row in rows:
        style = "red" if row.get("status") == "error" else None
        table.add_row(*(column.text(row) for column in columns), style=style)
    return table


def to_markdown(rows: Sequence[Row], *, columns: Sequence[Column] | None = None) -> str:
    """A GitHub Markdown table, followed by one line per failed row and per warning."""
    columns = eval_columns(rows) if columns is None else columns
    def cell(text: str) -> str:
        return text.replace("|", "\\|").replace("\n", " ")

    lines = [
        "| " + " | ".join(column.header for column in columns) + " |",
        "|" + "|".join("---:" if column.justify == "right" else ":---" for column in columns) + "|",
    ]
    for row in rows:
        lines.append("| " + " | ".join(cell(column.text(row)) for column in columns) + " |")
    notes = list(notes_of(rows))
    if notes:
        lines.append("")
        lines.extend(f"- {note}" for note in notes)
    return "\n".join(lines) + "\n"


def notes_of(rows: Sequence[Row], *, errors: bool = True) -> Iterable[str]:
    """One line per error and per warning, naming the model, and one line for all the noisy latencies."""
    for row in rows:
        if errors and row.get("error"):
            yield f"{row.get('name', '')}: error: {row['error']}"
        for warning in row.get("warnings") or ():
            yield f"{row.get('name', '')}: {warning}"
    noisy = [row for row in rows if (row.get("latency_ms") or {}).get("noisy")]
    if noisy:
        worst = max(row["latency_ms"]["cv"] for row in noisy)
        which = noisy[0]["name"] if len(noisy) == 1 else f"{len(noisy)} of {len(rows)} models"
        yield (
            f"latency varies a lot for {which} (cv up to {worst:.3f}, marked !): the machine was busy or the model "
            "is so fast that scheduling jitter dominates; p50 is the robust figure; close other work or raise "
            "--runs / --min-seconds"
        )


def flatten(row: Row, prefix: str = "") -> dict[str, Any]:
    """Nested dicts to dotted keys (``latency_ms.p50``); lists of scalars joined with ``;``, other lists as JSON."""
    flat: dict[str, Any] = {}
    for key, value in row.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(flatten(value, prefix=f"{name}."))
        elif isinstance(value, (list, tuple)):
            if all(not isinstance(item, (dict, list, tuple)) for item in value):
                flat[name] = ";".join(str(item) for item in value)
            else:
                flat[name] = json.dumps(value)
        else:
            flat[name] = value
    return flat


def to_csv(rows: Sequence[Row]) -> str:
    """CSV with one column per dotted key, in the order keys first appear."""
    flat_rows = [flatten(row) for row in rows]
    header: list[str] = []
    for flat in flat_rows:
        header.extend(key for key in flat if key not in header)
    # A section that is null in one row (``latency_ms`` of a failed model) and nested in another keeps the nested
    # columns only.
    nested_sections = {key.split(".", 1)[0] for key in header if "." in key}
    header = [key for key in header if key not in nested_sections]
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=header, lineterminator="\n")
    writer.writeheader()
    for flat in flat_rows:
        writer.writerow({key: "" if value is None else value for key, value in flat.items() if key in header})
    return buffer.getvalue()


def to_json(value: Sequence[Row] | Row) -> str:
    """Strict JSON of a list of rows or one row (non-finite numbers become null)."""
    return json.dumps(_finite(value if isinstance(value, dict) else list(value)), indent=2) + "\n"


def _finite(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {key: _finite(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(item) for item in value]
    return value


FORMATS = ("table", "json", "csv", "md")


def render_text(rows: Sequence[Row], output_format: str, *, columns: Sequence[Column] | None = None) -> str:
    """The rows as text in ``output_format`` (``table`` gives the rich table rendered without colours)."""
    if output_format == "json":
        return to_json(rows)
    if output_format == "csv":
        return to_csv(rows)
    if output_format == "md":
        return to_markdown(rows, columns=columns)
    from rich.console import Console

    text = io.StringIO()
    Console(file=text, width=200, color_system=None).print(render_table(rows, columns=columns))
    return text.getvalue()


# ---------------------------------------------------------------------------------------------------------------
# tflq inspect


def render_inspection(info: Row) -> list[Any]:
    """Rich renderables for one ``inspect`` result (the dict of ``Inspection.to_dict()``)."""
    from rich.table import Table
    from rich.text import Text

    parts: list[Any] = []
    header = Text()
    header.append(f"{info['name']}", style="bold")
    header.append(f"  {format_bytes(info['size_bytes'])}  schema v{info['schema_version']}")
    if info.get("description"):
        header.append(f"  {info['description']}")
    parts.append(header)

    if info.get("signature"):
        title = f"Signature '{info['signature']}'"
    else:
        title = "Inputs and outputs (no SignatureDef: the primary subgraph's, in order)"
    if info.get("signature_source") == "file":
        title += ", as the file declares them (the interpreter could not load it)"
    tensors = Table(title=title, title_justify="left")
    for column in ("", "name", "shape", "dtype", "scale", "zero point"):
        tensors.add_column(column)
    for role in ("inputs", "outputs"):
        for tensor in info[role]:
            shape = "[" + ", ".join("?" if dim is None else str(dim) for dim in tensor["shape"]) + "]"
            tensors.add_row(
                role[:-1], tensor["name"], shape, tensor["dtype"],
                "" if tensor["scale"] is None else f"{tensor['scale']:.6g}",
                "" if tensor["zero_point"] is None else str(tensor["zero_point"]),
            )
    parts.append(tensors)

    ops = Table(title="Ops (all subgraphs)", title_justify="left")
    ops.add_column("op")
    ops.add_column("count", justify="right")
    for kind in ("float", "integer", "hybrid", "mixed"):
        ops.add_column(kind, justify="right")
    for stats in info["ops"]:
        compute = stats["compute"]
        by_kind = (str(compute.get(kind, "")) for kind in ("float", "integer", "hybrid", "mixed"))
        ops.add_row(stats["op_type"], str(stats["count"]), *by_kind)
    parts.append(ops)

    summary = Table(show_header=False, box=None)
    summary.add_column(style="bold")
    summary.add_column()
    summary.add_row("compute", ", ".join(f"{kind} {count}" for kind, count in info["compute"].items()))
    weights = ", ".join(f"{dtype} {format_bytes(size)}" for dtype, size in info["weight_bytes"].items())
    summary.add_row("weights", weights or "none")
    if len(info["subgraphs"]) > 1:
        summary.add_row("subgraphs", ", ".join(f"{graph['name']} ({graph['ops']} ops)" for graph in info["subgraphs"]))
    delegation = info.get("xnnpack")
    if delegation:
        text = f"{delegation['delegated_ops']}/{delegation['total_ops']} ops in {delegation['partitions']} partition(s)"
        if not delegation["enabled"]:
            text = "disabled (--no-xnnpack)"
        elif delegation["undelegated_op_types"]:
            text += "; on built-in kernels: " + ", ".join(delegation["undelegated_op_types"])
        summary.add_row("XNNPACK", text)
    elif info.get("xnnpack_error"):
        summary.add_row("XNNPACK", f"unknown ({info['xnnpack_error']})")
    for name, value in info["metadata"].items():
        if isinstance(value, dict):
            value = ", ".join(f"{key}={item}" for key, item in value.items())
        summary.add_row(name, str(value))
    parts.append(summary)
    return parts


# ---------------------------------------------------------------------------------------------------------------
# Batch reports (``tflq run``): the eval columns plus the batch's own


def _drop(row: Row) -> str:
    drop = row.get("accuracy_drop")
    return "" if drop is None else f"{drop:+.2f} pts"


def _gate(row: Row) -> str:
    if row.get("status") != "ok":
        return ""
    failures = row.get("gate_failures") or []
    return "FAIL: " + "; ".join(failures) if failures else "pass"


def _batch_status(row: Row) -> str:
    status = row.get("status", "")
    if status == "ok" and row.get("up_to_date"):
        return "ok (up to date)"
    if status == "ok" and row.get("float_ops"):
        return f"ok ({len(row['float_ops'])} float ops)"
    return status


BATCH_COLUMNS: tuple[Column, ...] = (
    Column("Model", lambda row: row.get("model", ""), justify="left"),
    Column("Variant", lambda row: row.get("variant", ""), justify="left"),
    Column("Size", lambda row: format_bytes(row.get("size_bytes"))),
    Column("Ratio", _ratio),
    Column("p50 ms", lambda row: _latency(row, "p50")),
    Column("p90 ms", lambda row: _latency(row, "p90")),
    Column("Accuracy", lambda row: _per_output_text(row.get("accuracy"), _accuracy_text)),
    Column("Drop", _drop),
    Column("Agree top-1", lambda row: _per_output_text(row.get("agreement"), _agreement_text)),
    Column("XNNPACK ops", _xnnpack),
    Column("Partitions", _partitions),
    Column("Status", _batch_status, justify="left"),
    Column("Gate", _gate, justify="left"),
)


def _training(row: Row) -> str:
    """``2 ep, fit 1.4 s, val_accuracy 98.89%`` for a variant made by a training mode (qat); empty otherwise."""
    training = row.get("training")
    if not isinstance(training, dict):
        return ""
    text = f"{training.get('epochs')} ep, fit {training.get('seconds', 0.0):.1f} s"
    metric, value = training.get("val_metric"), training.get("val_value")
    if metric and value is not None:
        text += f", {metric} " + (f"{value * 100:.2f}%" if metric.endswith("accuracy") else f"{value:.4g}")
    return text


TRAINING_COLUMN = Column("Training", _training, justify="left")


def batch_columns(rows: Sequence[Row]) -> tuple[Column, ...]:
    """The batch table's columns: :data:`BATCH_COLUMNS`, plus "SQNR dB" and "Max err" (after "Agree top-1") when a
    row has a regression output compared with a reference, plus "Training" when a row comes from a training mode."""
    columns = BATCH_COLUMNS
    if _has_regression_agreement(rows):
        position = [column.header for column in columns].index("Agree top-1") + 1
        sqnr = Column("SQNR dB", lambda row: _per_output_text(row.get("agreement"), _sqnr_text))
        columns = columns[:position] + (sqnr, MAX_ERROR_COLUMN) + columns[position:]
    return columns + (TRAINING_COLUMN,) if any(isinstance(row.get("training"), dict) for row in rows) else columns


def batch_notes(rows: Sequence[Row]) -> list[str]:
    """Errors and warnings of a batch, each naming model and variant."""
    named = [dict(row, name=f"{row.get('model', '')} {row.get('variant', '')}") for row in rows]
    return list(notes_of(named))


def write_batch_reports(output_dir: Any, rows: Sequence[Row]) -> list[Any]:
    """Write report.md, report.json, report.csv, report.html and pareto.png into ``output_dir``; returns the paths
    written."""
    from pathlib import Path

    from tflq.convert.session import write_atomically
    from tflq.report.html import write_html_report
    from tflq.report.plot import write_pareto_plot

    folder = Path(output_dir)
    named = [dict(row, name=f"{row.get('model', '')} {row.get('variant', '')}") for row in rows]
    markdown = "# tflq report\n\n" + to_markdown(named, columns=batch_columns(rows))
    written = []
    files = (("report.md", markdown), ("report.json", to_json(list(rows))), ("report.csv", to_csv(list(rows))))
    for name, text in files:
        write_atomically(folder / name, text.encode())
        written.append(folder / name)
    html = write_html_report(folder / "report.html", rows, columns=batch_columns(rows), notes=batch_notes(rows))
    written.append(html)
    plot = write_pareto_plot(rows, folder / "pareto.png")
    if plot is not None:
        written.append(plot)
    return written
