"""What every ``tflq`` command shares: the one place errors become exits, logging, output helpers.

Library code raises :class:`tflq.errors.TflqError`; :func:`handle_errors` turns it into one ``Error: ...`` line and
the documented exit code, and :class:`TflqGroup` does the same for click's own usage errors (a bad flag or value).
The commands' options come from the settings' declarations (:func:`tflq.options.click_options`). Nothing heavy is
imported here, so ``tflq --help`` stays instant.
"""

from __future__ import annotations

import functools
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from tflq.errors import EXIT_FAILED, EXIT_USAGE, TflqError, UsageError


class TflqClickException(click.ClickException):
    """A ClickException that carries tflq's exit code."""

    def __init__(self, message: str, exit_code: int) -> None:
        super().__init__(message)
        self.exit_code = exit_code  # type: ignore[misc]  # click declares it on the class; tflq's varies


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


class TflqGroup(click.Group):
    """The ``tflq`` group: click's usage errors (unknown option, bad value, missing argument) are one line too."""

    def main(self, *args: Any, **kwargs: Any) -> Any:
        standalone = kwargs.pop("standalone_mode", True)
        kwargs.setdefault("prog_name", "tflq")
        try:
            code = super().main(*args, standalone_mode=False, **kwargs)  # type: ignore[call-overload]
        except click.exceptions.UsageError as error:
            if not standalone:
                raise
            where = error.ctx.command_path if error.ctx is not None else "tflq"
            click.echo(f"Error: {error.format_message()} (see '{where} -h')", err=True)
            sys.exit(EXIT_USAGE)
        except click.exceptions.ClickException as error:
            if not standalone:
                raise
            error.show()
            sys.exit(error.exit_code)
        except click.exceptions.Abort:
            if not standalone:
                raise
            click.echo("Error: interrupted", err=True)
            sys.exit(EXIT_FAILED)
        if standalone:
            sys.exit(code or 0)
        return code


def echo_err(message: str) -> None:
    click.echo(message, err=True)


def setup_logging(verbose: bool) -> None:
    """Route tflq's notices to stderr; ``-v`` also shows TensorFlow's own output."""
    import logging

    from tflq._tf import imports as _tf

    _tf.set_verbose(verbose)
    logger = logging.getLogger("tflq")

    class ClickHandler(logging.Handler):
        """Writes through click at emit time, so it follows whatever stderr is current."""

        def emit(self, record: logging.LogRecord) -> None:
            click.echo(self.format(record), err=True)

    for handler in [h for h in logger.handlers if getattr(h, "_tflq", False)]:
        logger.removeHandler(handler)
    handler = ClickHandler()
    handler.setFormatter(logging.Formatter("%(levelname)s: %(message)s"))
    handler._tflq = True  # type: ignore[attr-defined]
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG if verbose else logging.INFO)
    logger.propagate = False


verbose_option = click.option("-v", "--verbose", is_flag=True, help="Show TensorFlow's own logging.")

_FORMAT_BY_SUFFIX = {".json": "json", ".csv": "csv", ".md": "md"}


def output_format(chosen: str | None, as_json: bool, output: str | None) -> str:
    """The report format from ``--format``, ``--json`` and ``-o``'s extension. Raises UsageError on a conflict."""
    if as_json:
        if chosen not in (None, "json"):
            raise UsageError(f"--json conflicts with --format {chosen}")
        return "json"
    if chosen:
        return chosen
    if output:
        return _FORMAT_BY_SUFFIX.get(os.path.splitext(output)[1].lower(), "table")
    return "table"


def progress_reporter(quiet: bool) -> tuple[Any, Callable[[str, int, int | None], None] | None]:
    """A rich progress display on a terminal (refreshed by hand: no thread, so children can be forked), else None."""
    if quiet or not sys.stderr.isatty():
        return None, None
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    progress = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        console=Console(stderr=True),
        auto_refresh=False,
        transient=True,
    )
    tasks: dict[str, Any] = {}

    def on_progress(label: str, done: int, total: int | None) -> None:
        if label not in tasks:
            tasks[label] = progress.add_task(os.path.basename(label), total=total)
        progress.update(tasks[label], completed=done, total=total)
        progress.refresh()

    return progress, on_progress


def print_rows(rows: list[dict[str, Any]]) -> None:
    """The comparison table on stdout (rich on a terminal, plain text otherwise)."""
    from tflq.report.render import render_table, render_text

    if sys.stdout.isatty():
        from rich.console import Console

        Console().print(render_table(rows))
    else:
        click.echo(render_text(rows, "table"), nl=False)


def check_output_file(output: str) -> None:
    """Raise UsageError unless ``-o output`` can be written as a regular file: it is absent or a writable regular
    file, and its nearest existing folder is a writable folder. Checked before anything is measured. (A device such
    as /dev/null would be replaced by the atomic rename, so it is refused.)"""
    import tempfile

    path = Path(output)
    if path.is_dir():
        raise UsageError(f"-o {output}: is a directory; expected a file name")
    if path.exists() and not path.is_file():
        raise UsageError(
            f"-o {output}: is not a regular file (a device, FIFO or socket); leave out -o to print to stdout"
        )
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
    """Write a report to ``output`` (complete or absent), or raise TflqError naming it."""
    from tflq.outputs import write_atomically

    try:
        write_atomically(Path(output), text.encode("utf-8"))
    except OSError as error:
        raise TflqError(f"-o {output}: cannot write ({error.strerror or error})") from None
    if not quiet:
        echo_err(f"wrote {output}")


def check_writable(flag: str, path: Path, what: str) -> None:
    """Refuse an output path that cannot be a file before any work is done. Raises UsageError."""
    if path.is_dir():
        raise UsageError(f"{flag} {path}: cannot write {what}: it is a folder; expected a file name")
    for parent in path.parents:
        if parent.exists():
            if not parent.is_dir():
                raise UsageError(f"{flag} {path}: cannot write {what}: {parent} is a file, not a folder")
            break
