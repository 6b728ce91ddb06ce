"""Helpers the CLI tests share: invoke a command in-process, and check the one-line error contract."""
from __future__ import annotations

from pathlib import Path

from click.testing import CliRunner

from tflq.cli.app import main


def invoke(*args: object):
    """Run ``tflq ARGS...`` in-process with click's CliRunner. ``catch_exceptions=False``: an exception the CLI does
    not turn into an exit (a bug) raises in the test with its traceback instead of hiding in ``result.exception``."""
    return CliRunner().invoke(main, [str(arg) for arg in args], catch_exceptions=False)


def convert(*args: str, out: Path):
    """``tflq convert ARGS... -o OUT``, in-process, with ``catch_exceptions=False`` as ``invoke``."""
    return CliRunner().invoke(main, ["convert", *args, "-o", str(out)], catch_exceptions=False)


def error_line(result) -> str:
    """The last line of the output, which must be the one ``Error: ...`` line (and no traceback)."""
    lines = result.output.strip().splitlines()
    assert lines and lines[-1].startswith("Error: "), result.output
    assert "Traceback" not in result.output
    return lines[-1]


def assert_usage_error(result, *fragments: str) -> None:
    """Exit code 2 and an error line holding every fragment."""
    assert result.exit_code == 2, result.output
    message = error_line(result)
    for fragment in fragments:
        assert fragment in message, (fragment, message)


def assert_nothing_written(out: Path) -> None:
    assert not out.exists() or not any(out.iterdir()), list(out.iterdir())


def assert_config_error(path: Path, *fragments: str) -> None:
    """Loading the batch file at ``path`` fails with a ConfigError that starts with the path and holds every
    fragment."""
    import pytest

    from tflq.batch.config import load_config
    from tflq.errors import ConfigError

    with pytest.raises(ConfigError) as caught:
        load_config(path)
    message = str(caught.value)
    assert message.startswith(str(path)), message
    for fragment in fragments:
        assert fragment in message, (fragment, message)
