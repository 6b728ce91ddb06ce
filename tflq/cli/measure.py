"""``tflq eval`` and ``tflq inspect``: thin shells over the harness (tflq.measure.harness, tflq.measure.tflite_info), registered on the ``tflq`` group by importing this module."""
from __future__ import annotations

import os
import sys
from pathlib import Path

import click

from tflq.cli.app import (
    _emit,
    _output_format,
    _print_rows,
    _progress_reporter,
    echo_err,
    handle_errors,
    main,
)
from tflq.errors import EXIT_FAILED, TflqError, UsageError


def check_output_file(output: str) -> None:
    """Raise UsageError unless ``-o output`` can be written as a regular file: it is absent or a writable regular
    file, and its nearest existing folder is a writable folder. Checked before anything is measured. (A device such
    as /dev/null would be replaced by the atomic rename, so it is refused.)"""
    import tempfile

    path = Path(output)
    if path.is_dir():
        raise UsageError(f"-o {output}: is a directory; expected a file name")
    if path.exists() and not path.is_file():
        raise UsageError(f"-o {output}: is not a regular file (a device, FIFO or socket); leave out -o to print to stdout")
    folder = path.absolute().parent
    while not folder.exists():
        folder = folder.parent
    if not folder.is_dir():
        raise UsageError(f"-o {output}: {folder} is a file, not a folder")
    if not os.access(folder, os.W_OK | os.X_OK) or (path.exists() and not os.access(path, os.W_OK)):
        raise UsageError(f"-o {output}: not writable (permission denied in {folder})")
    if folder == path.absolute().parent:  # the folder the result goes to: create (and remove) the temporary file there
        try:
            handle, probe = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=folder)
        except OSError as error:
            raise UsageError(f"-o {output}: cannot write in {folder} ({error.strerror})") from None
        os.close(handle)
        os.unlink(probe)


def write_output(text: str, output: str, quiet: bool) -> None:
    """Write the report to ``output`` (complete or absent), or raise TflqError naming it."""
    from tflq.convert.session import write_atomically

    try:
        write_atomically(Path(output), text.encode("utf-8"))
    except OSError as error:
        raise TflqError(f"-o {output}: cannot write ({error.strerror or error})") from None
    if not quiet:
        echo_err(f"wrote {output}")


@main.command("eval")
@click.argument("models", nargs=-1, required=True, type=click.Path())
@click.option("--data", metavar="DATA", help="Evaluation data (.npz, .npy, image folder, module:function); labels give accuracy.")
@click.option("--reference", metavar="MODEL", help="Model to compare outputs with: .keras, .h5, SavedModel dir or float32 .tflite. Default: the float32 .tflite among MODELS.")
@click.option("--signature", help="Signature of a SavedModel --reference (default: serving_default or the only one).")
@click.option("--custom-objects", multiple=True, metavar="MODULE:ATTR", help="Custom Keras object to load a Keras --reference with (repeatable).")
@click.option("--unsafe-deserialization", is_flag=True, help="Allow Lambda layers in a Keras --reference (runs Python code stored in the model file).")
@click.option("--threads", type=click.IntRange(min=1), help="Interpreter threads. Default: every core for latency, the idle cores for evaluation.")
@click.option("--runs", type=click.IntRange(min=0), default=50, show_default=True, help="Timed runs at least (0: no latency).")
@click.option("--min-seconds", type=click.FloatRange(min=0), default=1.0, show_default=True, help="Timed runs last at least this long.")
@click.option("--warmup-runs", type=click.IntRange(min=0), default=1, show_default=True, help="Warm-up runs at least.")
@click.option("--warmup-seconds", type=click.FloatRange(min=0), default=0.5, show_default=True, help="Warm-up lasts at least this long.")
@click.option("--batch-size", type=click.IntRange(min=1), help="Evaluation batch for dynamic-batch models. Default: from the input size.")
@click.option("--task", "task_options", multiple=True, metavar="[NAME=]TASK", help="classification or regression, for output NAME or every output (repeatable). Default: classification for (N, C) scores with class labels, else regression.")
@click.option("--samples", "limit", type=click.IntRange(min=1), help="Evaluate only the first N samples.")
@click.option("--no-xnnpack", is_flag=True, help="Measure without the default XNNPACK delegate.")
@click.option("--format", "output_format", type=click.Choice(["table", "json", "csv", "md"]), help="Output format. Default: table (or from -o's extension).")
@click.option("-o", "--output", type=click.Path(dir_okay=False), help="Write the results to this file.")
@click.option("--json", "as_json", is_flag=True, help="Same as --format json.")
@click.option("-q", "--quiet", is_flag=True, help="No progress bar, no notes.")
@handle_errors
def eval_command(
    models: tuple[str, ...], data: str | None, reference: str | None, signature: str | None,
    custom_objects: tuple[str, ...], unsafe_deserialization: bool, threads: int | None, runs: int,
    min_seconds: float, warmup_runs: int, warmup_seconds: float, batch_size: int | None, task_options: tuple[str, ...],
    limit: int | None, no_xnnpack: bool, output_format: str | None, output: str | None, as_json: bool, quiet: bool,
) -> None:
    """Measure .tflite models: size, latency, XNNPACK delegation, accuracy and agreement, one row per model."""
    from tflq.measure.harness import EvalSettings, evaluate, paths_in
    from tflq.measure.tasks import parse_task_options
    from tflq.model.load import ModelOptions
    from tflq.report.render import notes_of, render_text

    tasks = parse_task_options(task_options)
    if tasks is not None and not data:
        raise UsageError("--task needs --data: the task says how an output's predictions are scored")
    chosen_format = _output_format(output_format, as_json, output)
    if output:
        check_output_file(output)
    settings = EvalSettings(
        threads=threads, runs=runs, min_seconds=min_seconds, warmup_runs=warmup_runs, warmup_seconds=warmup_seconds,
        use_xnnpack=not no_xnnpack, batch_size=batch_size, limit=limit,
    )
    progress, on_progress = _progress_reporter(quiet)
    if progress is not None:
        progress.start()
    try:
        measurements = evaluate(
            paths_in(models), data=data, reference=reference, settings=settings, on_progress=on_progress, tasks=tasks,
            reference_options=ModelOptions(
                signature=signature, custom_objects=custom_objects, unsafe_deserialization=unsafe_deserialization
            ),
        )
    finally:
        if progress is not None:
            progress.stop()
    rows = [measurement.to_dict() for measurement in measurements]
    if chosen_format == "table" and not output:
        _print_rows(rows)
    elif output:
        write_output(render_text(rows, chosen_format), output, quiet)
    else:
        _emit(render_text(rows, chosen_format), None, quiet)
    if not quiet:
        for note in notes_of(rows, errors=False):
            echo_err(f"Note: {note}")
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
    from tflq.measure.harness import machine_threads
    from tflq.measure.tflite_info import inspect_tflite
    from tflq.report.render import render_inspection, to_json

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
