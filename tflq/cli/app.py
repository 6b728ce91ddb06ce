"""The ``tflq`` command group: one module per command under :mod:`tflq.cli`, added here.

``tflq = "tflq.cli.app:main"`` is the console script; ``python -m tflq`` and ``python -m tflq.cli.app`` run it too.
Every command's module imports only :mod:`tflq.cli.common` and the library, never this module, so the CLI has no
import cycle. Nothing heavy is imported at module level: ``tflq --help`` stays instant.
"""

from __future__ import annotations

import click

from tflq import __version__
from tflq.cli.auto import auto_command
from tflq.cli.common import TflqGroup
from tflq.cli.convert import convert_command
from tflq.cli.debug import debug_command
from tflq.cli.evaluate import eval_command
from tflq.cli.inspection import inspect_command
from tflq.cli.modes import modes_command
from tflq.cli.run import run_command


@click.group("tflq", cls=TflqGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="tflq")
def main() -> None:
    """Convert TensorFlow/Keras models to quantized TensorFlow Lite models and measure which one to ship."""


for command in (
    convert_command,
    modes_command,
    run_command,
    eval_command,
    inspect_command,
    debug_command,
    auto_command,
):
    main.add_command(command)

if __name__ == "__main__":  # pragma: no cover
    main()
