"""``tflq run``: a YAML batch file, converted, measured, gated and reported (a thin shell over tflq.batch.run)."""

from __future__ import annotations

import contextlib
import sys
from pathlib import Path
from typing import Any

import click

from tflq.batch.executors import ExecutorOptions
from tflq.cli import flags as cli_flags
from tflq.cli.common import TflqClickException, handle_errors, setup_logging, verbose_option
from tflq.cli.progress_view import live_console, plain_option


@click.command("run")
@click.argument("config_path", metavar="CONFIG.yaml", type=click.Path(path_type=Path))
@click.option("--only", multiple=True, metavar="NAME", help="Run only this model of the file (repeatable).")
@click.option("--modes", "modes", metavar="MODE[,MODE...]", help="Override every model's modes (comma-separated).")
@click.option("--force", is_flag=True, help="Rebuild and re-measure even what is up to date.")
@click.option("-o", "--output-dir", type=click.Path(path_type=Path), help="Override the file's output_dir.")
@click.option(
    "--jobs",
    type=click.IntRange(min=1),
    default=None,
    help="Models processed in parallel.  [default: 1; with --executor ray: as many as the cluster's CPUs allow]",
)
@cli_flags.click_options(ExecutorOptions)
@click.option("--json", "as_json", is_flag=True, help="Print report.json to stdout instead of the table.")
@plain_option
@verbose_option
@handle_errors
def run_command(
    config_path: Path,
    only: tuple[str, ...],
    modes: str | None,
    force: bool,
    output_dir: Path | None,
    jobs: int | None,
    as_json: bool,
    plain: bool,
    verbose: bool,
    **flags: Any,
) -> None:
    """Run a YAML batch file: convert, measure, gate and report every model it lists.

    Exit codes: 0 all good, 1 a job failed, 2 usage or config error, 3 a gate failed. On a terminal a live view
    shows each running model's phase; --plain (or stdout not a terminal) prints one line per event instead.
    """
    import json
    import time

    from tflq.batch.config import Overrides, load_config, parse_modes_option
    from tflq.batch.run import run_batch

    setup_logging(verbose)
    executor = ExecutorOptions(**cli_flags.from_flags(ExecutorOptions, flags))
    override_modes = parse_modes_option(modes) if modes is not None else ()
    config = load_config(config_path, Overrides(modes=override_modes, output_dir=output_dir, only=only))
    started = time.perf_counter()
    total = sum(1 for _ in config.models)
    click.echo(f"tflq run {config_path}: {total} model(s) -> {config.output_dir}", err=True)
    for note in config.notes:
        click.echo(f"note: {note}", err=True)

    live = live_console(plain)
    on_terminal = sys.stderr.isatty()
    console = None
    if on_terminal and live is None:
        from rich.console import Console

        console = Console(stderr=True, highlight=False)
    styles = {"start": "dim", "done": "green", "fail": "bold red", "info": "dim", "phase": "dim"}

    def on_event(kind: str, model: str, label: str, text: str) -> None:
        if kind == "phase" and not verbose:  # a phase line per step is noise in a log; -v shows them
            return
        marker = {"start": "...", "done": "ok ", "fail": "ERR", "info": "   ", "phase": " > "}[kind]
        line = f"[{time.perf_counter() - started:7.1f}s] {marker} {model}{' ' + label if label else ''}: {text}"
        if console is not None:
            console.print(line, style=styles[kind], markup=False)
        else:
            click.echo(line, err=True)

    view = None
    if live is not None:
        from tflq.cli.progress_view import RunView
        from tflq.modes import plan_variants

        view = RunView(live, {
            job.name: len(plan_variants(list(job.modes), list(job.io_types))) + (1 if job.searches else 0)
            for job in config.models
        })
    try:
        with view if view is not None else contextlib.nullcontext():
            result = run_batch(
                config, force=force, jobs=jobs, on_event=view.on_event if view else on_event, executor=executor
            )
    except KeyboardInterrupt:
        from tflq.batch.manifest import MANIFEST
        from tflq.errors import EXIT_FAILED

        raise TflqClickException(
            f"interrupted: the variants finished before are recorded in {config.output_dir / MANIFEST}; "
            "run again to do the rest",
            EXIT_FAILED,
        ) from None
    rows = [r.to_row() for r in result.results]
    if as_json:
        click.echo(json.dumps(rows, indent=2, default=str))
    else:
        from tflq.report.render import batch_columns, batch_notes, render_text

        named = [dict(row, name=f"{row['model']} {row['variant']}") for row in rows]
        click.echo(render_text(named, "table", columns=batch_columns(rows)).rstrip())
        for note in batch_notes(rows):
            click.echo(f"- {note}")
        click.echo("reports: " + ", ".join(str(p) for p in result.report_paths))
    if result.exit_code:
        from tflq.errors import EXIT_GATE

        failed = [f"{r.model} {r.label}" for r in result.results if r.status != "ok"]
        gated = [f"{r.model} {r.label}" for r in result.results if r.gate_failures]
        message = (
            f"{len(failed)} job(s) failed: {', '.join(failed)}"
            if failed
            else f"{len(gated)} variant(s) failed a gate: {', '.join(gated)}"
        )
        raise TflqClickException(
            message, result.exit_code if result.exit_code != EXIT_GATE or not failed else EXIT_FAILED
        )
