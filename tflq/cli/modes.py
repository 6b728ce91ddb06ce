"""``tflq modes``: the registry, one line per mode (or JSON)."""

from __future__ import annotations

import json

import click

from tflq.cli.common import handle_errors


@click.command("modes")
@click.option(
    "--json",
    "as_json",
    is_flag=True,
    help="Machine-readable: name, engine (the default), engines, weight bits, activations, granularities, I/O types, "
    "settings.",
)
@handle_errors
def modes_command(as_json: bool) -> None:
    """List the conversion modes, one line each."""
    from tflq.modes import MODES

    if as_json:
        rows = [
            {
                "name": mode.name,
                "summary": mode.summary,
                "engine": mode.engine,
                "engines": list(mode.engines),
                "weights": mode.weight_bits,
                "activations": mode.activation_kind,
                "granularities": list(mode.granularities),
                "io_types": list(mode.io_types),
                "settings": list(mode.settings),
                "baseline": mode.baseline,
                "calibrated": mode.calibrated,
                "needs_training": mode.needs_training,
            }
            for mode in MODES.values()
        ]
        click.echo(json.dumps(rows, indent=2))
        return
    widths: dict[str, int] = {}  # names aligned per engine: the converter's lines stay as they were
    for mode in MODES.values():
        widths[mode.engine] = max(widths.get(mode.engine, 0), len(mode.name))
    for mode in MODES.values():
        io = "/".join(mode.io_types)
        engines = f"  [--engine {'|'.join(mode.engines)}, default {mode.engine}]" if len(mode.engines) > 1 else ""
        click.echo(f"{mode.name:<{widths[mode.engine]}}  {mode.summary}  [I/O: {io}]{engines}")
