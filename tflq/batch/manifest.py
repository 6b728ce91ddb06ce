"""The batch's bookkeeping in its output folder: the manifest of finished variants and the folder's lock.

The manifest (``.tflq-manifest.json``) is rewritten, atomically, each time a variant is recorded, so that a crash or an
interrupt loses nothing already done. Entries a run does not touch stay as they were (``--only``, ``--modes``).
A manifest that is not JSON, or whose entries have the wrong shape (hand-edited, truncated), is rebuilt: each bad
entry is dropped with a note, and that variant is redone. A manifest path that is a directory is a UsageError.

The lock (``.tflq.lock``, ``flock``) keeps two ``tflq run`` from writing one folder at the same time: the second one
refuses at once, naming the folder, rather than waiting behind a run that may take an hour.
"""

from __future__ import annotations

import contextlib
import json
import os
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from tflq.errors import UsageError

MANIFEST = ".tflq-manifest.json"
MANIFEST_VERSION = 1
LOCK = ".tflq.lock"

Entry = dict[str, Any]


class Manifest:
    """The recorded variants of an output folder. Thread-safe: ``record`` and ``drop`` write the file each time."""

    def __init__(self, output_dir: Path, jobs: dict[str, Entry], notes: tuple[str, ...] = ()) -> None:
        self.path = output_dir / MANIFEST
        self._jobs = jobs
        self.notes = notes  # what was wrong with the file read, one line each (already rebuilt)
        self._lock = threading.Lock()

    @classmethod
    def read(cls, output_dir: Path) -> Manifest:
        """The manifest of ``output_dir`` (empty when there is none). Raises UsageError when it cannot be used at
        all."""
        path = output_dir / MANIFEST
        if path.is_dir():
            raise UsageError(f"{path}: is a directory; expected the JSON manifest tflq writes there (remove it)")
        try:
            text = path.read_bytes().decode("utf-8")
        except FileNotFoundError:
            return cls(output_dir, {})
        except UnicodeDecodeError:
            return cls(output_dir, {}, (f"{path}: not UTF-8 text; rebuilding the manifest (every variant is redone)",))
        except OSError as error:
            raise UsageError(f"{path}: cannot read the manifest: {error.strerror or error}") from None
        try:
            loaded = json.loads(text)
        except ValueError as error:
            return cls(
                output_dir, {}, (f"{path}: not JSON ({error}); rebuilding the manifest (every variant is redone)",)
            )
        if not isinstance(loaded, dict) or not isinstance(loaded.get("jobs"), dict):
            found = type(loaded.get("jobs") if isinstance(loaded, dict) else loaded).__name__
            return cls(
                output_dir, {}, (f"{path}: expected an object with a 'jobs' object, found {found}; rebuilding it",)
            )
        if loaded.get("version") != MANIFEST_VERSION:
            return cls(
                output_dir,
                {},
                (f"{path}: manifest version {loaded.get('version')!r}, expected {MANIFEST_VERSION}; rebuilding it",),
            )
        jobs: dict[str, Entry] = {}
        notes = []
        for key, entry in loaded["jobs"].items():
            problem = entry_problem(key, entry)
            if problem is None:
                jobs[key] = entry
            else:
                notes.append(f"{path}: entry {key!r}: {problem}; that variant is redone")
        return cls(output_dir, jobs, tuple(notes))

    def entry(self, key: str) -> Entry:
        """The recorded entry of ``model/label`` or ``{}``."""
        with self._lock:
            return self._jobs.get(key, {})

    def record(self, key: str, entry: Entry) -> None:
        with self._lock:
            self._jobs[key] = entry
            self._write()

    def drop(self, key: str) -> None:
        with self._lock:
            if self._jobs.pop(key, None) is not None:
                self._write()

    def keys(self) -> list[str]:
        with self._lock:
            return list(self._jobs)

    def write(self) -> None:
        with self._lock:
            self._write()

    def _write(self) -> None:
        from tflq.convert.session import (
            write_atomically,  # unique temporary name beside the file, then os.replace
        )

        content = json.dumps({"version": MANIFEST_VERSION, "jobs": self._jobs}, indent=1, sort_keys=True, default=str)
        write_atomically(self.path, content.encode())


def entry_problem(key: Any, entry: Any) -> str | None:
    """What is wrong with one manifest entry (a hand edit, a bad merge), or None when the runner can use it."""
    if not isinstance(key, str) or key.count("/") != 1:
        return "the key is not 'model/variant'"
    if not isinstance(entry, dict):
        return f"expected an object, found {type(entry).__name__}"
    expected: dict[str, tuple[type, ...]] = {
        "key": (str,),
        "measure_key": (str, type(None)),
        "artifact": (dict,),
        "measurement": (dict,),
    }
    for name, types in expected.items():
        if name in entry and not isinstance(entry[name], types):
            return f"{name!r} should be {_names(types)}, found {type(entry[name]).__name__}"
    if not isinstance(entry.get("key"), str) or not isinstance(entry.get("artifact"), dict):
        return "'key' or 'artifact' is missing"
    artifact = entry["artifact"]
    for name, types in {
        "status": (str,),
        "sha256": (str, type(None)),
        "path": (str,),
        "size_bytes": (int, type(None)),
        "float_ops": (list,),
        "float_layers": (list,),
        "seconds": (int, float, type(None)),
        "notes": (list,),
    }.items():
        if name in artifact and (not isinstance(artifact[name], types) or isinstance(artifact[name], bool)):
            return f"artifact {name!r} should be {_names(types)}, found {type(artifact[name]).__name__}"
    measurement = entry.get("measurement", {})
    for name, types in {
        "status": (str,),
        "latency_ms": (dict, type(None)),
        "accuracy": (dict, type(None)),
        "warnings": (list,),
        "notes": (list,),
        "auto": (dict,),
    }.items():
        if name in measurement and not isinstance(measurement[name], types):
            return f"measurement {name!r} should be {_names(types)}, found {type(measurement[name]).__name__}"
    p50 = (measurement.get("latency_ms") or {}).get("p50")
    if p50 is not None and (not isinstance(p50, (int, float)) or isinstance(p50, bool)):
        return f"measurement latency_ms.p50 should be a number, found {type(p50).__name__}"
    if key.endswith("/auto"):
        auto = measurement.get("auto")
        if (
            not isinstance(auto, dict)
            or not isinstance(auto.get("trials"), list)
            or not isinstance(auto.get("fits"), bool)
        ):
            return "measurement 'auto' should be an object with a 'trials' list and a 'fits' flag"
        if not all(isinstance(trial, dict) for trial in auto["trials"]):
            return "measurement auto.trials should hold objects"
    return None


def _names(types: tuple[type, ...]) -> str:
    words = {
        str: "a string",
        dict: "an object",
        list: "a list",
        int: "an integer",
        float: "a number",
        type(None): "null",
    }
    return " or ".join(dict.fromkeys(words[t] for t in types))


@contextlib.contextmanager
def output_folder_lock(output_dir: Path) -> Iterator[None]:
    """Hold ``<output_dir>/.tflq.lock`` for the block. Raises UsageError at once when another run holds it."""
    try:
        import fcntl
    except ImportError:  # not POSIX: no lock (documented)
        yield
        return
    path = output_dir / LOCK
    try:  # O_NOFOLLOW: a symbolic link planted there cannot make the run create or touch a file elsewhere
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | getattr(os, "O_NOFOLLOW", 0), 0o666)
        stream = os.fdopen(descriptor, "a")
    except OSError as error:
        raise UsageError(f"{path}: cannot create the output folder's lock file: {error.strerror or error}") from None
    with stream:
        try:
            fcntl.flock(stream.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise UsageError(
                f"{output_dir}: another tflq run is writing to this output folder (it holds {path}); "
                "wait for it to finish, or give this run another output_dir"
            ) from None
        try:
            yield
        finally:
            fcntl.flock(stream.fileno(), fcntl.LOCK_UN)
