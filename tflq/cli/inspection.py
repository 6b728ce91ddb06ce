"""``tflq inspect``: what a .tflite holds (a thin shell over tflq.measure.tflite_info)."""

from __future__ import annotations

import sys
from typing import Any

import click

from tflq.cli import flags as cli_flags
from tflq.cli.common import echo_err, handle_errors
from tflq.errors import EXIT_FAILED
from tflq.measure.settings import EvalSettings


@click.command("inspect")
@click.argument("model", type=click.Path())
@cli_flags.click_options(EvalSettings, names=["threads", "use_xnnpack"])
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@handle_errors
def inspect_command(model: str, as_json: bool, **flags: Any) -> None:
    """Show a .tflite's inputs/outputs with quantization, op histogram, float/integer ops, weights, delegation and
    metadata."""
    from tflq.measure.harness import machine_threads
    from tflq.measure.tflite_info import inspect_tflite
    from tflq.report.render import render_inspection, to_json

    settings = EvalSettings(**cli_flags.from_flags(EvalSettings, flags))
    inspection = inspect_tflite(model, threads=settings.threads or machine_threads(), use_xnnpack=settings.use_xnnpack)
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
