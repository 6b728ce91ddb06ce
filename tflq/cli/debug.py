"""``tflq debug`` and ``tflq auto``: thin shells over tflq.debug.layer_error and tflq.debug.auto, registered on the ``tflq`` group by importing this module."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from tflq.cli.app import (
    _output_format,
    calibration_options,
    echo_err,
    handle_errors,
    main,
    model_loading_options,
    model_options,
    setup_logging,
)
from tflq.errors import UsageError


def check_writable(flag: str, path: Path, what: str) -> None:
    """Refuse an output path that cannot be a file before any work is done. Raises UsageError."""
    if path.is_dir():
        raise UsageError(f"{flag} {path}: cannot write {what}: it is a folder; expected a file name")
    for parent in path.parents:
        if parent.exists():
            if not parent.is_dir():
                raise UsageError(f"{flag} {path}: cannot write {what}: {parent} is a file, not a folder")
            break


@main.command("debug")
@click.argument("model", type=click.Path(path_type=Path))
@calibration_options
@click.option("--data", metavar="EVAL", help="Evaluation data: feeds the layer errors and the accuracy checks (against the labels, --reference or the float32 model; they need a classifier output).")
@click.option("--reference", metavar="MODEL", help="Without labels: compare top-1 with this model (.keras/.h5/SavedModel/.tflite; default: the float32 model).")
@click.option("--top", type=int, default=3, show_default=True, help="With --data: try the N most sensitive layers in float (0 to skip).")
@click.option("--layer-samples", type=int, default=100, show_default=True, help="Samples the layer errors are measured on.")
@click.option("--eval-samples", type=int, help="Evaluation samples for the accuracy checks (default: all).")
@click.option("--format", "output_format", type=click.Choice(["table", "json", "csv", "md"]), help="Output format. Default: table (or from -o's extension).")
@click.option("-o", "--output", type=click.Path(path_type=Path), help="Write the report to FILE instead of the terminal.")
@click.option("--json", "as_json", is_flag=True, help="Same as --format json.")
@click.option("--plot", type=click.Path(path_type=Path), metavar="PNG", help="Write a plot of SQNR per layer, in model order.")
@model_loading_options
@click.option("-v", "--verbose", is_flag=True, help="Show TensorFlow's own logging.")
@handle_errors
def debug_command(
    model: Path, calibration: str | None, calib_samples: int, image_scale: str, per_tensor: bool, data: str | None,
    reference: str | None, top: int, layer_samples: int, eval_samples: int | None, output_format: str | None,
    output: Path | None, as_json: bool, plot: Path | None, signature: str | None, custom_objects: tuple[str, ...],
    unsafe_deserialization: bool, verbose: bool,
) -> None:
    """Per-layer int8 quantization error of MODEL, named by its Keras layers, most sensitive first.

    With --data, also the top-1 of float32, int8, and int8 with each of the --top most sensitive layers left in
    float (keep one with: tflq convert --mode int8 --skip-layers NAME).
    """
    from tflq.convert.session import ConvertOptions
    from tflq.debug.layer_error import DebugOptions, debug_quantization
    from tflq.debug.report import plot_sqnr, render
    from tflq.model.data import ImageOptions

    setup_logging(verbose)
    chosen_format = _output_format(output_format, as_json, str(output) if output is not None else None)
    for flag, path, what in (("-o", output, "the report"), ("--plot", plot, "the PNG")):
        if path is not None:
            check_writable(flag, path, what)
    options = DebugOptions(
        convert=ConvertOptions(
            modes=("int8",), calibration=calibration, calibration_samples=calib_samples, per_tensor=per_tensor,
            images=ImageOptions(scale=image_scale), model=model_options(signature, custom_objects, unsafe_deserialization),
        ),
        data=data, reference=reference, layer_samples=layer_samples, eval_samples=eval_samples, top=top,
    )
    report = debug_quantization(model, options)
    if plot is not None:
        plot_sqnr(report, plot)
    text = render_text(report) if chosen_format == "table" else render(report, chosen_format)
    if output is not None:
        from tflq.convert.session import write_atomically

        try:
            write_atomically(output, text.encode("utf-8"))
        except OSError as error:
            raise UsageError(f"-o {output}: cannot write: {error.strerror or error}") from None
        echo_err(f"wrote {output}")
    elif chosen_format == "table":
        print_rich_report(report)
    else:
        click.echo(text)
    if plot is not None:
        echo_err(f"wrote {plot}")
    if chosen_format in ("json", "csv"):  # the table and Markdown carry their notes
        for note in report.notes:
            echo_err(f"Note: {note}")


@main.command("auto")
@click.argument("model", type=click.Path(path_type=Path))
@calibration_options
@click.option("--data", metavar="EVAL", help="Evaluation data (required): labelled, or compared with --reference / the float32 model.")
@click.option("--max-drop", type=float, required=True, metavar="POINTS", help="Largest accepted top-1 drop against float32, in percentage points.")
@click.option("--objective", type=click.Choice(["size", "latency"]), default="size", show_default=True,
              help="size: the smallest candidate that fits; latency: time every fitting candidate, keep the fastest.")
@click.option("--max-float-layers", type=int, default=3, show_default=True,
              help="Try int8 with up to N of the most sensitive layers left in float.")
@click.option("--reference", metavar="MODEL", help="Without labels: compare top-1 with this model (default: the float32 model).")
@click.option("--eval-samples", type=int, help="Evaluation samples to use (default: all).")
@click.option("-o", "--output-dir", type=click.Path(path_type=Path), default=Path("build"), show_default=True)
@click.option("--name", help="Output file-name stem (default: the model's name): writes <name>.auto.tflite.")
@click.option("--json", "as_json", is_flag=True, help="Print the search as JSON.")
@model_loading_options
@click.option("-v", "--verbose", is_flag=True, help="Show TensorFlow's own logging.")
@handle_errors
def auto_command(
    model: Path, calibration: str | None, calib_samples: int, image_scale: str, per_tensor: bool, data: str | None,
    max_drop: float, objective: str, max_float_layers: int, reference: str | None, eval_samples: int | None,
    output_dir: Path, name: str | None, as_json: bool, signature: str | None, custom_objects: tuple[str, ...],
    unsafe_deserialization: bool, verbose: bool,
) -> None:
    """Write the smallest (or fastest) variant of MODEL whose top-1 drop against float32 stays within --max-drop.

    Tries int8, int8 with the most sensitive layers in float, 16x8, dynamic, float16, and prints everything it
    tried and why each was rejected. Exit 3 when nothing fits.
    """
    import json

    from tflq.convert.session import ConvertOptions
    from tflq.debug.auto import AutoOptions, NoCandidateFits, auto_search
    from tflq.model.data import ImageOptions

    setup_logging(verbose)
    options = AutoOptions(
        max_drop=max_drop, objective=objective, data=data, reference=reference, eval_samples=eval_samples,
        max_float_layers=max_float_layers, output_dir=output_dir, name=name,
        convert=ConvertOptions(
            modes=("int8",), calibration=calibration, calibration_samples=calib_samples, per_tensor=per_tensor,
            images=ImageOptions(scale=image_scale), model=model_options(signature, custom_objects, unsafe_deserialization),
        ),
    )
    try:
        result = auto_search(model, options)
    except NoCandidateFits as error:
        if as_json:
            click.echo(json.dumps(error.result.to_dict(), indent=2))
        else:
            print_auto(error.result)
        raise
    if as_json:
        click.echo(json.dumps(result.to_dict(), indent=2))
    else:
        print_auto(result)


def print_auto(result: Any) -> None:
    """The search table: every candidate, its figures, and why it was kept or rejected."""
    from rich import box
    from rich.console import Console
    from rich.table import Table

    console = Console(soft_wrap=False)
    if not console.is_terminal:
        console = Console(soft_wrap=False, width=160)
    console.print(
        f"{result.model}: float32 {result.metric} {result.float32_score:.2%} on {result.samples} sample(s), "
        f"{result.float32_size:,d} B; budget: drop <= {result.max_drop:g} points; objective: {result.objective}",
        highlight=False, markup=False, soft_wrap=True,
    )
    table = Table(box=box.SIMPLE_HEAD, pad_edge=False)
    for header in ("candidate", "status", "top-1", "drop", "size B", "vs float32", "latency ms", "reason"):
        table.add_column(header, justify="left" if header in ("candidate", "status", "reason") else "right",
                         no_wrap=header in ("candidate", "status"))
    for trial in result.trials:
        chosen = result.chosen is trial
        table.add_row(
            trial.candidate.label,
            "chosen" if chosen else trial.status,
            "" if trial.score is None else f"{trial.score:.2%}",
            "" if trial.drop is None else f"{trial.drop:+.2f}",
            "" if trial.size_bytes is None else f"{trial.size_bytes:,d}",
            "" if trial.size_bytes is None else f"{trial.size_bytes / result.float32_size:.2f}x",
            "" if trial.latency_ms is None else f"{trial.latency_ms:.3f}",
            trial.reason,
            style="bold" if chosen else None,
        )
    console.print(table)
    calibrated = "one calibration shared by every int8 candidate" + (
        ", one more for 16x8 (public converter)" if result.calibrations > 1 else ""
    )
    console.print(
        f"{calibrated}; layer ranking {result.ranking_seconds:.2f} s; search {result.seconds:.2f} s",
        highlight=False, markup=False, soft_wrap=True,
    )
    if result.chosen is not None:
        console.print(f"chosen: {result.chosen.candidate.label} -> {result.path}", highlight=False, markup=False, soft_wrap=True)


def print_rich_report(report: Any) -> None:
    from rich.console import Console

    from tflq.debug.report import LEGEND, rich_table, summary_lines

    console = Console(soft_wrap=False)
    if not console.is_terminal:
        console = Console(soft_wrap=False, width=160)
    for line in summary_lines(report):
        console.print(line, highlight=False, markup=False, soft_wrap=True)
    console.print(rich_table(report))
    console.print(LEGEND, style="dim", highlight=False, markup=False, soft_wrap=True)


def render_text(report: Any) -> str:
    """The terminal table as plain text, for ``--format table -o FILE``."""
    from rich.console import Console

    from tflq.debug.report import LEGEND, rich_table, summary_lines

    console = Console(record=True, width=200, file=__import__("io").StringIO(), color_system=None)
    for line in summary_lines(report):
        console.print(line, highlight=False, markup=False, soft_wrap=True)
    console.print(rich_table(report))
    console.print(LEGEND, highlight=False, markup=False, soft_wrap=True)
    return console.export_text()
