"""The one place that imports TensorFlow, quiets it, and hides its native chatter.

TensorFlow prints from C++ straight to the process's file descriptors (``fully_quantize: 0, ...``,
``Saved artifact at ...``, cuda probes). Unless the user asked for ``-v``, :func:`quiet` captures file
descriptors 1 and 2 around the noisy calls; the captured text is kept so that an error can show it.
"""
from __future__ import annotations

import contextlib
import io
import logging
import os
import sys
import tempfile
from collections.abc import Iterator
from typing import Any

_VERBOSE = False
log = logging.getLogger("tflq")


def set_verbose(verbose: bool) -> None:
    """Show TensorFlow's own logging (``-v``) or hide it (default)."""
    global _VERBOSE
    _VERBOSE = verbose
    if not verbose:
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    else:
        os.environ["TF_CPP_MIN_LOG_LEVEL"] = "0"


def tf() -> Any:
    """Import and return ``tensorflow`` with its Python logging quieted unless verbose."""
    if not _VERBOSE:
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    with quiet():
        import tensorflow

    if not _VERBOSE:
        tensorflow.get_logger().setLevel(logging.ERROR)
        with contextlib.suppress(ImportError):
            import absl.logging

            absl.logging.set_verbosity(absl.logging.ERROR)
    return tensorflow


def keras() -> Any:
    """Import and return Keras 3 (after TensorFlow, so both are configured alike)."""
    tf()
    with quiet():
        import keras as keras_module
    return keras_module


@contextlib.contextmanager
def quiet(*, keep_stderr: bool = False) -> Iterator[io.StringIO]:
    """Capture native stdout/stderr (file descriptors 1 and 2) unless verbose.

    ``keep_stderr``: Python-level writes to ``sys.stderr`` (a training progress bar) still reach the real stderr
    while TensorFlow's native output is captured. Yields a buffer that holds the captured text once the block ends
    (empty when verbose).
    """
    captured = io.StringIO()
    if _VERBOSE:
        yield captured
        return
    sys.stdout.flush()
    sys.stderr.flush()
    saved = [os.dup(1), os.dup(2)]
    with tempfile.TemporaryFile(mode="w+b") as sink, contextlib.ExitStack() as streams:
        try:
            os.dup2(sink.fileno(), 1)
            os.dup2(sink.fileno(), 2)
            py_err_target: Any = io.StringIO()
            if keep_stderr:
                py_err_target = sys.stderr
                if _uses_fd(sys.stderr, 2):  # the real stderr now writes to the sink: write to the saved fd instead
                    py_err_target = streams.enter_context(
                        open(os.dup(saved[1]), "w", encoding="utf-8", errors="replace", buffering=1)
                    )
            with contextlib.redirect_stdout(io.StringIO()) as py_out, contextlib.redirect_stderr(
                py_err_target
            ) as py_err:
                yield captured
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            for fd in saved:
                os.close(fd)
            sink.seek(0)
            captured.write(sink.read().decode("utf-8", "replace"))
            with contextlib.suppress(NameError):
                captured.write(py_out.getvalue())
                if isinstance(py_err, io.StringIO):
                    captured.write(py_err.getvalue())


def _uses_fd(stream: Any, fd: int) -> bool:
    try:
        return stream.fileno() == fd
    except (AttributeError, OSError, ValueError):  # io.UnsupportedOperation is an OSError and a ValueError
        return False


def last_error_line(text: str) -> str:
    """The most informative line of a TensorFlow/converter error text, for a one-line message."""
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    for line in lines:
        if "error:" in line.lower():
            return line[line.lower().index("error:") + len("error:"):].strip() or line
    return lines[-1] if lines else text.strip()


def library_errors() -> tuple[type[Exception], ...]:
    """The exception types TensorFlow, Keras, tf_keras, tfmot and the converter raise for a model, file or graph they
    cannot take, for ``except _tf.library_errors() as error:`` around one such call (evaluated only when an exception
    reaches the handler, by which time TensorFlow is imported).

    Python's own types from their Python code; ``RuntimeError`` from pybind11 and LiteRT's error reporter;
    ``tf.errors.OpError`` from TensorFlow's C++ status; ``ConverterError`` from the converter's phases; ``DecodeError``
    from a damaged protobuf; ``zipfile.BadZipFile`` from a damaged ``.keras`` archive. A bug in tflq (``NameError``,
    ``AssertionError``...) is none of these and keeps its traceback.
    """
    import zipfile

    from google.protobuf.message import DecodeError  # type: ignore[import-untyped]  # protobuf ships no type stubs
    from tensorflow.errors import OpError
    from tensorflow.lite.python.convert_phase import ConverterError

    return (
        ValueError, TypeError, KeyError, IndexError, AttributeError, OSError, ImportError, NotImplementedError,
        RuntimeError, zipfile.BadZipFile, OpError, ConverterError, DecodeError,
    )
