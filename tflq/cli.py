"""The ``tflq`` command line: a thin shell over the library.

Each command parses its options, calls one library function, and prints. Library code raises
:class:`tflq.errors.TflqError`; this module is the one place that turns it into a message and an exit code.
Nothing heavy is imported at module level, so ``tflq --help`` stays instant.
"""
from __future__ import annotations

import functools
import sys
from typing import Any, Callable

import click

from tflq import __version__
from tflq.errors import EXIT_FAILED, TflqError


class TflqClickException(click.ClickException):
    """A ClickException that carries tflq's exit code."""

    def __init__(self, message: str, exit_code: int) -> None:
        super().__init__(message)
        self.exit_code = exit_code


def handle_errors(command: Callable[..., Any]) -> Callable[..., Any]:
    """Turn TflqError into a one-line ``Error: ...`` message and the documented exit code."""

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return command(*args, **kwargs)
        except TflqError as error:
            raise TflqClickException(str(error), error.exit_code) from None
        except KeyboardInterrupt:
            raise TflqClickException("interrupted", EXIT_FAILED) from None

    return wrapper


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="tflq")
def main() -> None:
    """Convert TensorFlow/Keras models to quantized TensorFlow Lite models and measure which one to ship."""


def echo_err(message: str) -> None:
    click.echo(message, err=True)


# ---------------------------------------------------------------------------------------------------------------
# tflq eval / tflq inspect

_FORMAT_BY_SUFFIX = {".json": "json", ".csv": "csv", ".md": "md"}


def _output_format(output_format: str | None, as_json: bool, output: str | None) -> str:
    from tflq.errors import UsageError

    if as_json:
        if output_format not in (None, "json"):
            raise UsageError(f"--json conflicts with --format {output_format}")
        return "json"
    if output_format:
        return output_format
    if output:
        import os

        return _FORMAT_BY_SUFFIX.get(os.path.splitext(output)[1].lower(), "table")
    return "table"


def _progress_reporter(quiet: bool) -> tuple[Any, Callable[[str, int, int | None], None] | None]:
    """A rich progress display on a terminal (refreshed by hand: no thread, so children can be forked), else None."""
    if quiet or not sys.stderr.isatty():
        return None, None
    import os

    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    progress = Progress(
        TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
        console=Console(stderr=True), auto_refresh=False, transient=True,
    )
    tasks: dict[str, Any] = {}

    def on_progress(label: str, done: int, total: int | None) -> None:
        if label not in tasks:
            tasks[label] = progress.add_task(os.path.basename(label), total=total)
        progress.update(tasks[label], completed=done, total=total)
        progress.refresh()

    return progress, on_progress


def _emit(text: str, output: str | None, quiet: bool) -> None:
    if output:
        with open(output, "w", encoding="utf-8") as stream:
            stream.write(text)
        if not quiet:
            echo_err(f"wrote {output}")
    else:
        click.echo(text, nl=False)


@main.command("eval")
@click.argument("models", nargs=-1, required=True, type=click.Path())
@click.option("--data", metavar="DATA", help="Evaluation data (.npz, .npy, image folder, module:function); labels give accuracy.")
@click.option("--reference", metavar="MODEL", help="Model to compare outputs with: .keras, .h5, SavedModel dir or float32 .tflite. Default: the float32 .tflite among MODELS.")
@click.option("--threads", type=click.IntRange(min=1), help="Interpreter threads. Default: the machine's cores.")
@click.option("--runs", type=click.IntRange(min=0), default=50, show_default=True, help="Timed runs at least (0: no latency).")
@click.option("--min-seconds", type=click.FloatRange(min=0), default=1.0, show_default=True, help="Timed runs last at least this long.")
@click.option("--warmup-runs", type=click.IntRange(min=0), default=1, show_default=True, help="Warm-up runs at least.")
@click.option("--warmup-seconds", type=click.FloatRange(min=0), default=0.5, show_default=True, help="Warm-up lasts at least this long.")
@click.option("--batch-size", type=click.IntRange(min=1), help="Evaluation batch for dynamic-batch models. Default: from the input size.")
@click.option("--samples", "limit", type=click.IntRange(min=1), help="Evaluate only the first N samples.")
@click.option("--no-xnnpack", is_flag=True, help="Measure without the default XNNPACK delegate.")
@click.option("--format", "output_format", type=click.Choice(["table", "json", "csv", "md"]), help="Output format. Default: table (or from -o's extension).")
@click.option("-o", "--output", type=click.Path(dir_okay=False), help="Write the results to this file.")
@click.option("--json", "as_json", is_flag=True, help="Same as --format json.")
@click.option("-q", "--quiet", is_flag=True, help="No progress bar, no notes.")
@handle_errors
def eval_command(
    models: tuple[str, ...], data: str | None, reference: str | None, threads: int | None, runs: int,
    min_seconds: float, warmup_runs: int, warmup_seconds: float, batch_size: int | None, limit: int | None,
    no_xnnpack: bool, output_format: str | None, output: str | None, as_json: bool, quiet: bool,
) -> None:
    """Measure .tflite models: size, latency, XNNPACK delegation, accuracy and agreement, one row per model."""
    from tflq.harness import EvalSettings, evaluate, paths_in
    from tflq.report import notes_of, render_table, render_text

    chosen_format = _output_format(output_format, as_json, output)
    settings = EvalSettings(
        threads=threads, runs=runs, min_seconds=min_seconds, warmup_runs=warmup_runs, warmup_seconds=warmup_seconds,
        use_xnnpack=not no_xnnpack, batch_size=batch_size, limit=limit,
    )
    progress, on_progress = _progress_reporter(quiet)
    if progress is not None:
        progress.start()
    try:
        measurements = evaluate(paths_in(models), data=data, reference=reference, settings=settings, on_progress=on_progress)
    finally:
        if progress is not None:
            progress.stop()
    rows = [measurement.to_dict() for measurement in measurements]
    if chosen_format == "table" and not output and sys.stdout.isatty():
        from rich.console import Console

        Console().print(render_table(rows))
    else:
        _emit(render_text(rows, chosen_format), output, quiet)
    if not quiet:
        for row in rows:
            for warning in row["warnings"]:
                echo_err(f"Note: {row['name']}: {warning}")
    failed = [measurement for measurement in measurements if measurement.error]
    for measurement in failed:
        echo_err(f"Error: {measurement.error}")
    if failed:
        raise click.exceptions.Exit(EXIT_FAILED)


@main.command("inspect")
@click.argument("model", type=click.Path())
@click.option("--threads", type=click.IntRange(min=1), help="Interpreter threads for the delegation check.")
@click.option("--no-xnnpack", is_flag=True, help="Load without the default XNNPACK delegate.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@handle_errors
def inspect_command(model: str, threads: int | None, no_xnnpack: bool, as_json: bool) -> None:
    """Show a .tflite's inputs/outputs with quantization, op histogram, float/integer ops, weights, delegation, metadata."""
    from tflq.harness import machine_threads
    from tflq.report import render_inspection, to_json
    from tflq.tflite_info import inspect_tflite

    inspection = inspect_tflite(model, threads=threads or machine_threads(), use_xnnpack=not no_xnnpack)
    info = inspection.to_dict()
    if as_json:
        click.echo(to_json(info), nl=False)
    else:
        from rich.console import Console

        console = Console(width=None if sys.stdout.isatty() else 160)
        for part in render_inspection(info):
            console.print(part)
    if inspection.interpreter_error:
        echo_err(f"Error: {inspection.interpreter_error}")
        raise click.exceptions.Exit(EXIT_FAILED)



if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
