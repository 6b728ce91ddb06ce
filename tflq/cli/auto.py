"""``tflq auto``: the smallest or fastest variant within an accuracy budget (a thin shell over tflq.debug.auto)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from tflq.cli import flags as cli_flags
from tflq.cli.common import handle_errors, setup_logging, verbose_option
from tflq.cli.debug import selective_flags, selective_options
from tflq.debug.options import AutoOptions
from tflq.model.options import ModelOptions


@click.command("auto")
@click.argument("model", type=click.Path(path_type=Path))
@selective_flags
@click.option(
    "--data",
    metavar="EVAL",
    help="Evaluation data (required): labelled, or compared with --reference / the float32 model.",
)
@cli_flags.click_options(AutoOptions)
@click.option(
    "--reference", metavar="MODEL", help="Without labels: compare top-1 with this model (default: the float32 model)."
)
@click.option("--eval-samples", type=int, help="Evaluation samples to use (default: all).")
@click.option(
    "-o",
    "--output-dir",
    type=click.Path(path_type=Path),
    default=Path("build"),
    show_default=True,
    help="Where the chosen model goes.",
)
@click.option("--name", help="Output file-name stem (default: the model's name): writes <name>.auto.tflite.")
@click.option("--json", "as_json", is_flag=True, help="Print the search as JSON.")
@cli_flags.click_options(ModelOptions, exclude=["static_batch"])  # --static-batch: tflq convert and tflq run
@verbose_option
@handle_errors
def auto_command(
    model: Path,
    data: str | None,
    reference: str | None,
    eval_samples: int | None,
    output_dir: Path,
    name: str | None,
    as_json: bool,
    verbose: bool,
    **flags: Any,
) -> None:
    """Write the smallest (or fastest) variant of MODEL whose top-1 drop against float32 stays within --max-drop.

    Tries int8, int8 with the most sensitive layers in float, 16x8, dynamic, float16 (converter) and int8-weights,
    int4-weights, dynamic-int4 (channelwise and blockwise), int4x8, int4 with the most sensitive layers at int8
    (litert-quantizer), and prints everything it tried, why each was rejected and the Pareto front (accuracy vs
    size, and vs latency when timed). Exit 3 when nothing fits.
    """
    import json

    from tflq.debug.auto import NoCandidateFits, auto_search

    setup_logging(verbose)
    search = cli_flags.from_flags(AutoOptions, flags)
    options = AutoOptions(
        **search,
        data=data,
        reference=reference,
        eval_samples=eval_samples,
        output_dir=output_dir,
        name=name,
        convert=selective_options(flags),
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
        highlight=False,
        markup=False,
        soft_wrap=True,
    )
    table = Table(box=box.SIMPLE_HEAD, pad_edge=False)
    for header in ("candidate", "status", "top-1", "drop", "size B", "vs float32", "latency ms", "front", "reason"):
        table.add_column(
            header,
            justify="left" if header in ("candidate", "status", "front", "reason") else "right",
            no_wrap=header in ("candidate", "status"),
        )
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
            "+".join(trial.pareto),
            trial.reason,
            style="bold" if chosen else None,
        )
    console.print(table)
    console.print(
        "front: on the Pareto front of the scored candidates (no other has a top-1 at least as high and a size, or a "
        "latency when timed, at least as low)",
        style="dim", highlight=False, markup=False, soft_wrap=True,
    )
    calibrated = f"{result.calibrations} calibration(s): one shared by every int8 and 16x8 candidate, one more " \
        "for each LiteRT Quantizer candidate with int8 activations (int4x8)"
    if all(trial.candidate.engine == "converter" for trial in result.trials):
        calibrated = "one calibration shared by every int8 and 16x8 candidate"
    console.print(
        f"{calibrated}; layer ranking {result.ranking_seconds:.2f} s; search {result.seconds:.2f} s",
        highlight=False,
        markup=False,
        soft_wrap=True,
    )
    if result.chosen is not None:
        console.print(
            f"chosen: {result.chosen.candidate.label} -> {result.path}", highlight=False, markup=False, soft_wrap=True
        )
