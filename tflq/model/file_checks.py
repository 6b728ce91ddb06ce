"""Check a model or data file before a third-party library opens it, and say what is wrong with it.

Keras says "File not found" for a .keras file that exists but is not a zip, numpy says "pickled data" for random
bytes, and opening a FIFO blocks forever. These checks read only a file's first bytes (or its zip directory /
HDF5 attributes) and raise one line naming the file, what was expected and what was found.
"""
from __future__ import annotations

import json
import os
import stat
import tokenize
import zipfile
import zlib
from pathlib import Path
from typing import Any

from tflq.errors import ModelLoadError, UsageError

HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"
NPY_MAGIC = b"\x93NUMPY"
ZIP_MAGIC = b"PK\x03\x04"
EMPTY_ZIP_MAGIC = b"PK\x05\x06"
# What np.load raises for a damaged .npy/.npz besides ValueError (found by truncating and corrupting files, headers
# included): the zip layer (BadZipFile, zlib.error, NotImplementedError for an unknown compression, OSError,
# EOFError), the header parser (SyntaxError, tokenize.TokenError, KeyError, OverflowError) and a header claiming an
# array too large to allocate (MemoryError).
NUMPY_READ_ERRORS = (
    OSError, EOFError, zipfile.BadZipFile, zlib.error, NotImplementedError, SyntaxError, tokenize.TokenError, KeyError,
    OverflowError, MemoryError,
)
_KINDS = (
    (stat.S_ISFIFO, "a FIFO (named pipe)"),
    (stat.S_ISSOCK, "a socket"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
)


def non_regular_kind(path: Path) -> str | None:
    """What ``path`` is when it exists and is neither a regular file nor a directory (FIFO, socket, device)."""
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return None
    for test, kind in _KINDS:
        if test(mode):
            return kind
    return None


def require_regular_file(path: Path, what: str, error_class: type[UsageError] = ModelLoadError) -> None:
    """Refuse a FIFO, socket or device (reading it would block or never end) and a directory, before opening."""
    kind = non_regular_kind(path)
    if kind:
        raise error_class(f"{path}: is {kind}, not a regular file; give {what}")
    if path.is_dir():
        raise error_class(f"{path}: is a directory, expected {what}")


def _head(path: Path, size: int = 8) -> bytes:
    try:
        with open(path, "rb") as handle:
            return handle.read(size)
    except OSError as error:
        raise ModelLoadError(f"{path}: cannot read the file: {error.strerror or error}") from None


def _found(head: bytes) -> str:
    """A word for what a file's first bytes look like."""
    if not head:
        return "an empty file (0 bytes)"
    if head.startswith(HDF5_SIGNATURE):
        return "an HDF5 file (a legacy .h5 model? name it .h5)"
    if head.startswith((ZIP_MAGIC, EMPTY_ZIP_MAGIC)):
        return "a zip archive"
    if head.startswith(NPY_MAGIC):
        return "a numpy .npy file"
    return "unrecognised bytes (the file starts with " + head[:4].hex(" ") + ")"


def read_keras_config(path: Path) -> dict[str, Any]:
    """The model config inside a .keras archive, after checking it is a complete zip with a JSON config.json."""
    require_regular_file(path, "a .keras file (a zip archive)")
    head = _head(path)
    if not head.startswith((ZIP_MAGIC, EMPTY_ZIP_MAGIC)):
        raise ModelLoadError(f"{path}: not a Keras archive (a .keras file is a zip archive); found {_found(head)}")
    try:
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
            if "config.json" not in names:
                listed = ", ".join(sorted(names)[:5]) or "nothing"
                raise ModelLoadError(f"{path}: not a Keras archive: the zip has no config.json (it holds {listed})")
            raw = archive.read("config.json")
    except (zipfile.BadZipFile, OSError, EOFError, zlib.error) as error:
        raise ModelLoadError(
            f"{path}: a truncated or damaged zip archive, not a loadable Keras archive ({error})"
        ) from None
    try:
        config = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ModelLoadError(f"{path}: config.json in the Keras archive is not valid JSON ({error})") from None
    if not isinstance(config, dict) or "class_name" not in config:
        raise ModelLoadError(f"{path}: config.json in the Keras archive holds no model config (no 'class_name')")
    return config


def read_h5_config(path: Path) -> dict[str, Any]:
    """The model config of a legacy .h5 file, after checking it is a complete HDF5 file with a JSON model_config."""
    require_regular_file(path, "an .h5 file (HDF5)")
    head = _head(path)
    if not head.startswith(HDF5_SIGNATURE):
        raise ModelLoadError(f"{path}: not an HDF5 file (a .h5 model is HDF5); found {_found(head)}")
    import h5py

    try:
        with h5py.File(path, "r") as archive:
            raw = archive.attrs.get("model_config")
    except OSError as error:
        reason = " ".join(str(error).split())
        word = "truncated" if "truncated" in reason else "damaged"
        raise ModelLoadError(f"{path}: a {word} HDF5 file ({reason})") from None
    if raw is None:
        raise ModelLoadError(f"{path}: the HDF5 file holds no model config (weights only?); save the whole model")
    try:
        config = json.loads(raw.decode() if isinstance(raw, bytes) else raw)
    except (UnicodeDecodeError, json.JSONDecodeError, TypeError) as error:
        raise ModelLoadError(f"{path}: the HDF5 attribute model_config is not valid JSON ({error})") from None
    if not isinstance(config, dict) or "class_name" not in config:
        raise ModelLoadError(f"{path}: the HDF5 attribute model_config holds no model config (no 'class_name')")
    return config


_KERAS_PACKAGES = {"keras", "keras_hub", "keras_cv", "keras_nlp"}
_PIP_NAMES = {"keras_hub": "keras-hub", "keras_cv": "keras-cv", "keras_nlp": "keras-nlp"}


def unresolved_class(config: Any, custom_objects: dict[str, Any]) -> str | None:
    """Describe the first class in a Keras 3 config that Keras cannot find, or None when every class resolves.

    Reads the config without deserializing anything: a class resolves when it is registered (or passed with
    --custom-objects) under its registered name, or when its module is a Keras package that imports and has it.
    """
    import importlib

    import keras

    for node in _class_nodes(config):
        name, module = str(node["class_name"]), node.get("module")
        registered = node.get("registered_name") or name
        if registered in custom_objects or name in custom_objects:
            continue
        if keras.saving.get_registered_object(registered, custom_objects=custom_objects) is not None:
            continue
        if not isinstance(module, str) or not module:
            continue
        package = module.split(".", 1)[0]
        if package in _KERAS_PACKAGES:
            try:
                imported = importlib.import_module(module)
            except ModuleNotFoundError:
                pip_name = _PIP_NAMES.get(package, package)
                return (
                    f"class {name!r} from module {module!r}, whose package {package!r} is not installed; "
                    f"install it (pip install {pip_name}) or pass the class with --custom-objects module:{name}"
                )
            except ImportError as error:
                return f"class {name!r} from module {module!r}, which fails to import ({error})"
            if hasattr(imported, name) or _keras_api_symbol(module, name):
                continue
            return f"class {name!r}, which module {module!r} does not have (saved with another version of {package}?)"
        if module == "__main__":
            return (
                f"custom class {name!r} (registered as {registered!r}), defined in the script that saved the model; "
                f"put it in a module and pass it with --custom-objects module:{name}"
            )
        return (
            f"custom class {name!r} (registered as {registered!r}, defined in module {module!r}), which is not "
            f"registered; pass it with --custom-objects {module}:{name}"
        )
    return None


def _keras_api_symbol(module: str, name: str) -> bool:
    from keras.src import api_export

    return api_export.get_symbol_from_name(f"{module}.{name}") is not None


def _class_nodes(node: Any) -> list[dict[str, Any]]:
    """Every serialized object (a dict with class_name and module) in a Keras 3 config, outermost first."""
    found: list[dict[str, Any]] = []
    stack = [node]
    while stack:
        current = stack.pop(0)
        if isinstance(current, dict):
            name = current.get("class_name")
            if (
                isinstance(name, str)
                and "module" in current
                and not name.startswith("__")
                and name != "function"
                and current.get("module") != "builtins"
            ):
                found.append(current)
            stack.extend(current.values())
        elif isinstance(current, list):
            stack.extend(current)
    return found


def check_numpy_file(path: Path, suffix: str, error_class: type[UsageError]) -> None:
    """Refuse a non-regular file, a directory, an empty file, and a file whose bytes are not a .npz/.npy."""
    expected = "a .npz file (a zip of .npy arrays)" if suffix == ".npz" else "a .npy file"
    require_regular_file(path, expected, error_class)
    try:
        with open(path, "rb") as handle:
            head = handle.read(8)
    except OSError as error:
        raise error_class(f"{path}: cannot read the file: {error.strerror or error}") from None
    magic = (ZIP_MAGIC, EMPTY_ZIP_MAGIC) if suffix == ".npz" else (NPY_MAGIC,)
    if not head.startswith(magic):
        raise error_class(f"{path}: not {expected}; found {_found(head)}")
