"""``tflq modes``: the registry, one line per mode (or JSON)."""

from __future__ import annotations

import json

import click

from tflq.cli.common import handle_errors


@click.command("modes")
@click.option(
    "--json", "as_json", is_flag=True, help="Machine-readable: name, weights, activations, I/O types, settings."
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
                "weights": mode.weights,
                "activations": mode.activations or "float32",
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
    width = max(len(name) for name in MODES)
    for mode in MODES.values():
        io = "/".join(mode.io_types)
        click.echo(f"{mode.name:<{width}}  {mode.summary}  [I/O: {io}]")
