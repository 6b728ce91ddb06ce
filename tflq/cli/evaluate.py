"""``tflq eval``: measure .tflite files (a thin shell over tflq.measure.harness).

Its latency and evaluation flags are the measurement stage's declared settings (``EvalSettings``,
``EvaluationOptions``), the same a batch file's ``latency:`` and ``evaluation:`` sections set.
"""

from __future__ import annotations

from typing import Any

import click

from tflq.cli import flags as cli_flags
from tflq.cli.common import (
    check_output_file,
    echo_err,
    handle_errors,
    print_rows,
    write_output,
)
from tflq.cli.common import output_format as output_format_of
from tflq.cli.progress_view import live_console, phase_status, plain_option
from tflq.errors import EXIT_FAILED, UsageError
from tflq.measure.settings import EvalSettings, EvaluationOptions
from tflq.model.options import ModelOptions


@click.command("eval")
@click.argument("models", nargs=-1, required=True, type=click.Path())
@cli_flags.click_options(EvaluationOptions, names=["data", "reference"])
@cli_flags.click_options(ModelOptions, exclude=["static_batch"])  # --static-batch: tflq convert and tflq run
@cli_flags.click_options(EvalSettings)
@click.option(
    "--task",
    "task_options",
    multiple=True,
    metavar="[NAME=]TASK",
    help="classification or regression, for output NAME or every output (repeatable). Default: classification for "
    "(N, C) scores with class labels, else regression.",
)
@click.option(
    "--format",
    "output_format",
    type=click.Choice(["table", "json", "csv", "md"]),
    help="Output format. Default: table (or from -o's extension).",
)
@click.option("-o", "--output", type=click.Path(dir_okay=False), help="Write the results to this file.")
@click.option("--json", "as_json", is_flag=True, help="Same as --format json.")
@click.option("-q", "--quiet", is_flag=True, help="No progress bar, no notes.")
@plain_option
@handle_errors
def eval_command(
    models: tuple[str, ...],
    task_options: tuple[str, ...],
    output_format: str | None,
    output: str | None,
    as_json: bool,
    quiet: bool,
    plain: bool,
    **flags: Any,
) -> None:
    """Measure .tflite models: size, latency, XNNPACK delegation, accuracy and agreement, one row per model.

    --reference defaults to the float32 .tflite among MODELS; the model-loading flags apply to a Keras or
    SavedModel --reference.
    """
    from tflq.measure.harness import evaluate, paths_in
    from tflq.measure.tasks import parse_task_options
    from tflq.report.render import notes_of, render_text

    evaluation = EvaluationOptions(**cli_flags.from_flags(EvaluationOptions, flags))
    settings = EvalSettings(**cli_flags.from_flags(EvalSettings, flags))
    reference_options = ModelOptions(**cli_flags.from_flags(ModelOptions, flags))
    tasks = parse_task_options(task_options)
    if tasks is not None and not evaluation.data:
        raise UsageError("--task needs --data: the task says how an output's predictions are scored")
    chosen_format = output_format_of(output_format, as_json, output)
    if output:
        check_output_file(output)
    # on a terminal: each file's phase (latency, accuracy with its sample count); drawn only when an event comes, so
    # no thread runs and the children can be forked
    with phase_status(live_console(plain or quiet), refresh=False) as status:
        measurements = evaluate(
            paths_in(models),
            data=evaluation.data,
            reference=evaluation.reference,
            settings=settings,
            on_progress=status.on_progress if status is not None else None,
            tasks=tasks,
            reference_options=reference_options,
        )
    rows = [measurement.to_dict() for measurement in measurements]
    if chosen_format == "table" and not output:
        print_rows(rows)
    elif output:
        write_output(render_text(rows, chosen_format), output, quiet)
    else:
        click.echo(render_text(rows, chosen_format), nl=False)
    if not quiet:
        for note in notes_of(rows, errors=False):
            echo_err(f"Note: {note}")
    failed = [measurement for measurement in measurements if measurement.error]
    for measurement in failed:
        echo_err(f"Error: {measurement.error}")
    if failed:
        raise click.exceptions.Exit(EXIT_FAILED)
