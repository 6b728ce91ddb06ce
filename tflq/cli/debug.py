"""``tflq debug``: per-layer quantization error, named after the Keras layers (a thin shell over tflq.debug)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from tflq.cli import flags as cli_flags
from tflq.cli.common import check_writable, echo_err, handle_errors, setup_logging, verbose_option
from tflq.cli.common import output_format as output_format_of
from tflq.convert.options import ConvertOptions
from tflq.errors import UsageError
from tflq.model.options import ImageOptions, ModelOptions
from tflq.modes import MODES

#: the modes ``tflq debug --mode`` ranks: those that can keep a layer apart (skip_layers), but training ones
DEBUG_MODES = tuple(name for name, mode in MODES.items() if mode.selective and not mode.needs_training)


def selective_flags(command: Callable[..., Any]) -> Callable[..., Any]:
    """The calibration, image-scale and --per-tensor flags ``tflq debug`` and ``tflq auto`` share."""
    for decorator in reversed([
        cli_flags.click_options(ConvertOptions, names=["calibration", "calibration_samples"]),
        cli_flags.click_options(ImageOptions),
        cli_flags.click_options(ConvertOptions, names=["per_tensor"]),
    ]):
        command = decorator(command)
    return command


def selective_options(flags: dict[str, Any]) -> ConvertOptions:
    """The int8 conversion ``tflq debug`` and ``tflq auto`` start from: calibration, image and loading flags."""
    return ConvertOptions(
        modes=("int8",),
        **cli_flags.from_flags(ConvertOptions, flags),
        images=ImageOptions(**cli_flags.from_flags(ImageOptions, flags)),
        model=ModelOptions(**cli_flags.from_flags(ModelOptions, flags)),
    )


@click.command("debug")
@click.argument("model", type=click.Path(path_type=Path))
@click.option(
    "--mode",
    type=click.Choice(DEBUG_MODES),
    default="int8",
    show_default=True,
    help="The mode whose layers are ranked (int8: the converter's debug models; the others: side by side).",
)
@selective_flags
@click.option(
    "--data",
    metavar="EVAL",
    help="Evaluation data: feeds the layer errors and the accuracy checks (against the labels, --reference or the "
    "float32 model; they need a classifier output).",
)
@click.option(
    "--reference",
    metavar="MODEL",
    help="Without labels: compare top-1 with this model (.keras/.h5/SavedModel/.tflite; default: the float32 model).",
)
@click.option(
    "--top",
    type=int,
    default=3,
    show_default=True,
    help="With --data: try the N most sensitive layers in float (0 to skip).",
)
@click.option(
    "--layer-samples", type=int, default=100, show_default=True, help="Samples the layer errors are measured on."
)
@click.option("--eval-samples", type=int, help="Evaluation samples for the accuracy checks (default: all).")
@click.option(
    "--format",
    "output_format",
    type=click.Choice(["table", "json", "csv", "md", "html"]),
    help="Output format. Default: table (or from -o's extension; html: one self-contained page with the SQNR chart).",
)
@click.option(
    "-o", "--output", type=click.Path(path_type=Path), help="Write the report to FILE instead of the terminal."
)
@click.option("--json", "as_json", is_flag=True, help="Same as --format json.")
@click.option(
    "--plot", type=click.Path(path_type=Path), metavar="PNG", help="Write a plot of SQNR per layer, in model order."
)
@cli_flags.click_options(ModelOptions, exclude=["static_batch"])  # --static-batch: tflq convert and tflq run
@verbose_option
@handle_errors
def debug_command(
    model: Path,
    mode: str,
    data: str | None,
    reference: str | None,
    top: int,
    layer_samples: int,
    eval_samples: int | None,
    output_format: str | None,
    output: Path | None,
    as_json: bool,
    plot: Path | None,
    verbose: bool,
    **flags: Any,
) -> None:
    """Per-layer quantization error of MODEL in --mode (int8), named by its Keras layers, most sensitive first.

    With --data, also the top-1 of float32, the mode, and the mode with each of the --top most sensitive layers
    kept in float, or at int8 weights for the int4 modes (keep one with: tflq convert --mode int8 --skip-layers
    NAME, or --mode int4-weights --precision NAME=int8).
    """
    from tflq.debug.engine_error import debug_for_mode
    from tflq.debug.layer_error import DebugOptions
    from tflq.debug.report import plot_sqnr, render

    setup_logging(verbose)
    chosen_format = output_format_of(output_format, as_json, str(output) if output is not None else None)
    if output_format is None and not as_json and output is not None and output.suffix.lower() == ".html":
        chosen_format = "html"
    for flag, path, what in (("-o", output, "the report"), ("--plot", plot, "the PNG")):
        if path is not None:
            check_writable(flag, path, what)
    options = DebugOptions(
        convert=selective_options(flags),
        data=data,
        reference=reference,
        layer_samples=layer_samples,
        eval_samples=eval_samples,
        top=top,
        mode=mode,
    )
    report = debug_for_mode(model, options)
    if plot is not None:
        plot_sqnr(report, plot)
    if chosen_format == "html":
        from tflq.report.html import render_debug_html

        text = render_debug_html(report)
    else:
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
