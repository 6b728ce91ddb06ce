"""Run the user's own code (data functions, custom-object modules) and turn its failures into one line.

A bug in the user's code is reported as its exception type, message and the user's ``file:line`` where it was
raised, never as tflq's traceback. ``sys.exit()`` inside user code becomes an error naming the code (it must not
pass for tflq's own exit codes); KeyboardInterrupt still interrupts.
"""
from __future__ import annotations

import importlib
import os
import sys
import sysconfig
import traceback
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType, TracebackType
from typing import Any, TypeVar

from tflq.errors import UsageError

_TFLQ_DIR = str(Path(__file__).resolve().parent) + os.sep
_STDLIB_DIR = str(Path(sysconfig.get_paths()["stdlib"]).resolve()) + os.sep
T = TypeVar("T")


def _library_file(filename: str) -> bool:
    """True for tflq's own files, installed packages and the standard library (not the user's code)."""
    if not filename or filename.startswith("<"):
        return True
    resolved = str(Path(filename).resolve())
    if resolved.startswith((_TFLQ_DIR, _STDLIB_DIR)):
        return True
    return "site-packages" in resolved or "dist-packages" in resolved


def raise_site(tb: TracebackType | None) -> str | None:
    """``file:line`` of the deepest frame in the user's own code (not tflq, not an installed package)."""
    frames = traceback.extract_tb(tb)
    for frame in reversed(frames):
        if not _library_file(frame.filename):
            return f"{frame.filename}:{frame.lineno}"
    return f"{frames[-1].filename}:{frames[-1].lineno}" if frames else None


def describe(error: BaseException) -> str:
    """``raised ValueError: message (at file.py:12)`` or ``called sys.exit(3) (at ...)`` for user code's failure."""
    if isinstance(error, SystemExit):
        site = raise_site(error.__traceback__)
        return f"called sys.exit({error.code!r})" + (f" (at {site})" if site else "")
    if isinstance(error, SyntaxError) and error.filename:
        return f"raised SyntaxError: {error.msg} (at {error.filename}:{error.lineno})"
    message = " ".join(str(error).split())
    site = raise_site(error.__traceback__)
    text = f"raised {type(error).__name__}: {message}" if message else f"raised {type(error).__name__}"
    return text + (f" (at {site})" if site else "")


def call(what: str, function: Callable[..., T], *args: Any, error_class: type[UsageError] = UsageError) -> T:
    """Call user code; any exception or sys.exit becomes ``error_class`` (a UsageError) starting with ``what``."""
    try:
        return function(*args)
    except UsageError:
        raise
    except (Exception, SystemExit) as error:  # the user's code: any failure is theirs to see, in one line
        raise error_class(f"{what} {describe(error)}") from None


def iterate(what: str, iterable: Any, *, error_class: type[UsageError] = UsageError) -> Iterator[Any]:
    """Iterate a user's iterable (a generator runs user code at every step) with :func:`call`'s reporting."""
    iterator = call(what, iter, iterable, error_class=error_class)
    while True:
        try:
            item = next(iterator)
        except StopIteration:
            return
        except UsageError:
            raise
        except (Exception, SystemExit) as error:  # the user's generator failed: report it in one line
            raise error_class(f"{what} {describe(error)}") from None
        yield item


def import_module(module_name: str, what: str) -> ModuleType:
    """Import a user's module (the current directory is importable). Raises UsageError naming ``what``."""
    cwd = os.getcwd()
    if cwd not in sys.path:
        sys.path.insert(0, cwd)
    try:
        return importlib.import_module(module_name)
    except ModuleNotFoundError as error:
        raise UsageError(f"{what}: cannot import module {module_name!r}: {error}") from None
    except (Exception, SystemExit) as error:  # the module's own code failed while importing
        raise UsageError(f"{what}: importing module {module_name!r} {describe(error)}") from None
