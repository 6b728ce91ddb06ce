"""Writing output files: check the output folder before any work, write each file atomically, name OS faults.

:func:`check_output_folder` runs before a model is loaded: an output folder that is a file (or lies under one), that
cannot be created, that is read-only or full, an output name longer than the file system allows, or an output path
that is a directory, is a UsageError naming the path, not a traceback after a long export.
:func:`write_atomically` writes beside the target and renames (the target is complete or absent), with the
permissions any tool gives a new file (``0666`` minus the umask). :func:`os_error_text` turns an OSError into the
words the user needs ("disk full", "read-only file system").
"""
from __future__ import annotations

import contextlib
import errno
import os
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path

from tflq.errors import UsageError

_REASONS = {
    errno.ENOSPC: "disk full",
    errno.EDQUOT: "disk quota exceeded",
    errno.EROFS: "read-only file system",
    errno.EACCES: "permission denied",
    errno.EPERM: "permission denied",
    errno.ENAMETOOLONG: "name too long",
    errno.ENOTDIR: "a parent is a file, not a folder",
    errno.EISDIR: "is a directory",
    errno.EEXIST: "exists and is not a folder",
}


def os_error_text(error: OSError) -> str:
    """``disk full`` / ``read-only file system`` / ...: the reason of an OSError in plain words."""
    reason = _REASONS.get(error.errno or -1)
    if reason:
        return reason
    return error.strerror or type(error).__name__


def current_umask() -> int:
    """The process umask, read without changing it where the system allows (Linux: /proc/self/status)."""
    with contextlib.suppress(OSError, ValueError), open("/proc/self/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def write_atomically(path: Path, content: bytes) -> None:
    """Write to a temporary file beside ``path`` and rename: ``path`` is either complete or absent.

    The file gets ``0666`` minus the umask, like a file ``open()`` creates. Raises OSError (the temporary file is
    removed).
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    # A short temporary name: a target name near the file system's limit must not fail only because of it.
    handle, temp_name = tempfile.mkstemp(prefix=f".{path.name[:64]}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(handle, "wb") as stream:
            os.fchmod(stream.fileno(), 0o666 & ~current_umask())
            stream.write(content)
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(temp_name, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temp_name)
        raise


def _name_max(folder: Path) -> int:
    try:
        return os.pathconf(folder, "PC_NAME_MAX")
    except (OSError, ValueError):  # no pathconf for this folder or system: the common limit
        return 255


@contextlib.contextmanager
def output_folder(folder: Path, targets: Sequence[Path] = ()) -> Iterator[Path]:
    """Check (and create) ``folder`` before any work; remove the folders it created if the block fails with
    nothing written in them.

    Raises UsageError when the folder cannot hold the outputs: it is a file or under one, cannot be created, is
    read-only or full (a probe file is created there and removed), a target name is longer than the file system
    allows, or a target exists as a directory.
    """
    created = _create_folder(folder)
    try:
        _probe_writable(folder)
        limit = _name_max(folder)
        for target in targets:
            if len(os.fsencode(target.name)) > limit:
                shown = target.name if len(target.name) <= 60 else f"{target.name[:40]}...{target.name[-16:]}"
                raise UsageError(
                    f"output file name {shown!r} is {len(os.fsencode(target.name))} bytes, the file system of "
                    f"{folder} allows {limit}; pass a shorter --name"
                )
            if target.is_dir():
                raise UsageError(f"{target}: output path exists as a directory; remove it or choose another -o/--name")
        yield folder
    except BaseException:
        for made in reversed(created):
            with contextlib.suppress(OSError):
                made.rmdir()  # only empty folders: nothing this run wrote is removed
        raise


def _create_folder(folder: Path) -> list[Path]:
    """mkdir -p ``folder``; returns the folders it created, outermost first. Raises UsageError."""
    missing = []
    parent = folder
    while not parent.exists() and not parent.is_symlink():
        missing.append(parent)
        if parent.parent == parent:
            break
        parent = parent.parent
    if parent.is_symlink() and not parent.exists():
        raise UsageError(f"output folder {folder}: {parent} is a symbolic link to {os.readlink(parent)}, which does "
                         "not exist")
    if parent.exists() and not parent.is_dir():
        if parent == folder:
            raise UsageError(f"output folder {folder} exists and is not a folder")
        raise UsageError(f"output folder {folder}: its parent {parent} is a file, not a folder")
    created: list[Path] = []
    for path in reversed(missing):
        try:
            path.mkdir()
        except FileExistsError:  # made meanwhile by someone else: fine if it is a folder
            if not path.is_dir():
                raise UsageError(f"output folder {folder}: {path} exists and is not a folder") from None
            continue
        except OSError as error:
            for made in reversed(created):
                with contextlib.suppress(OSError):
                    made.rmdir()
            raise UsageError(f"cannot create output folder {folder}: {os_error_text(error)} ({path})") from None
        created.append(path)
    return created


def _probe_writable(folder: Path) -> None:
    """Create and remove a small file in ``folder``. Raises UsageError naming the reason."""
    try:
        handle, probe = tempfile.mkstemp(prefix=".tflq-probe-", dir=folder)
    except OSError as error:
        raise UsageError(f"cannot write in output folder {folder}: {os_error_text(error)}") from None
    try:
        try:
            os.write(handle, b"\0" * 512)
            os.fsync(handle)
        except OSError as error:
            raise UsageError(f"cannot write in output folder {folder}: {os_error_text(error)}") from None
    finally:
        os.close(handle)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(probe)
