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


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
