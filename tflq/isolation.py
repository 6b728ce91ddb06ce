"""Run one function in a child process, so that a crash there (segfault, abort) is an error, not the end of the run.

``call_isolated(target, *args)`` calls ``target(*args, report=report)`` in a child and returns its result. The child
may call ``report(*message)`` any number of times (progress); each message reaches ``on_message`` in the parent.
A TflqError raised in the child is raised again in the parent, same class and message. Anything else the child
raises, and a child that dies, becomes :class:`ChildProcessFailed` (an InterpreterError) naming the signal.

Start method: ``fork`` when it is safe (Linux, one thread, TensorFlow not imported in the parent): a few
milliseconds per child with numpy and the interpreter already imported. Otherwise ``forkserver`` (one server started
per run with numpy and ai_edge_litert preloaded; each child is then forked from it) or ``spawn`` where neither exists.
"""
from __future__ import annotations

import multiprocessing
import os
import signal
import sys
import tempfile
import threading
import traceback
from typing import Any, Callable

from tflq.errors import InterpreterError, TflqError

# Test hook: a child whose description contains this environment variable's value calls os.abort() before its work.
ABORT_HOOK_VARIABLE = "TFLQ_TEST_ABORT_CHILD"

_FORKSERVER_PRELOAD = ["numpy", "ai_edge_litert.interpreter", "tflq.harness"]


class ChildProcessFailed(InterpreterError):
    """The child process died (signal, os._exit) or raised an unexpected exception."""


def call_isolated(
    target: Callable[..., Any],
    *args: Any,
    description: str,
    keywords: dict[str, Any] | None = None,
    on_message: Callable[..., None] | None = None,
    start_method: str | None = None,
) -> Any:
    """Call ``target(*args, **keywords, report=...)`` in a child process and return its result.

    ``description`` (usually the file being measured) starts every error message. Raises the child's TflqError, or
    ChildProcessFailed when the child dies or fails unexpectedly.
    """
    context = multiprocessing.get_context(start_method or choose_start_method())
    if context.get_start_method() == "forkserver":
        context.set_forkserver_preload(_FORKSERVER_PRELOAD)
    # The child's native stderr (LiteRT's "INFO: Created TensorFlow Lite XNNPACK delegate", TensorFlow's logs) goes
    # to a file; its last ERROR line is quoted when the child dies.
    log_descriptor, log_path = tempfile.mkstemp(prefix="tflq-child-", suffix=".log")
    os.close(log_descriptor)
    receiver, sender = context.Pipe(duplex=False)
    hook = os.environ.get(ABORT_HOOK_VARIABLE)  # read here: a forkserver child has the server's environment
    abort = bool(hook) and hook in description
    process = context.Process(
        target=_child_main, args=(sender, target, args, keywords or {}, log_path, abort), daemon=True
    )
    process.start()
    sender.close()
    answered = False
    try:
        while True:
            try:
                kind, payload = receiver.recv()
            except EOFError:
                process.join()
                reason = _death_reason(process.exitcode) + _last_error_line(log_path)
                raise ChildProcessFailed(f"{description}: {reason}") from None
            if kind == "message":
                if on_message is not None:
                    on_message(*payload)
                continue
            answered = True
            if kind == "result":
                return payload
            if kind == "error":
                raise payload
            raise ChildProcessFailed(f"{description}: {payload}")  # "unexpected"
    finally:
        receiver.close()
        # A child that answered exits on its own: not waiting for it saves its teardown time (multiprocessing
        # reaps it at the next start or at exit). Otherwise (interrupted, or the parent failed) it is stopped.
        if not answered and process.is_alive():
            process.kill()
            process.join()
        try:
            os.unlink(log_path)
        except OSError:
            pass


def choose_start_method() -> str:
    """``fork`` when safe and available, else ``forkserver``, else ``spawn``."""
    methods = multiprocessing.get_all_start_methods()
    fork_is_safe = (
        sys.platform.startswith("linux")
        and threading.active_count() == 1
        and "tensorflow" not in sys.modules
        and "keras" not in sys.modules
    )
    if fork_is_safe and "fork" in methods:
        return "fork"
    if "forkserver" in methods:
        return "forkserver"
    return "spawn"


def _child_main(
    sender: Any, target: Callable[..., Any], args: tuple[Any, ...], keywords: dict[str, Any], log_path: str, abort: bool
) -> None:
    # A terminal Ctrl-C reaches the whole process group; the parent decides what to do with it.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    log_descriptor = os.open(log_path, os.O_WRONLY | os.O_APPEND)
    os.dup2(log_descriptor, 2)
    os.close(log_descriptor)
    if abort:
        os.abort()

    def report(*message: Any) -> None:
        sender.send(("message", message))

    try:
        result = target(*args, **keywords, report=report)
    except TflqError as error:
        sender.send(("error", error))
    except BaseException as error:  # noqa: BLE001 - crossing a process boundary: becomes the row's error
        detail = traceback.format_exc(limit=-3).strip().splitlines()
        where = detail[-3].strip() if len(detail) >= 3 else ""
        sender.send(("unexpected", f"unexpected {type(error).__name__}: {error} ({where})"))
    else:
        sender.send(("result", result))
    finally:
        sender.close()


def _last_error_line(log_path: str) -> str:
    try:
        with open(log_path, encoding="utf-8", errors="replace") as stream:
            lines = [line.strip() for line in stream if line.strip()]
    except OSError:
        return ""
    errors = [line for line in lines if "ERROR" in line or "Check failed" in line or "Fatal" in line]
    return f"; last message: {errors[-1][:300]}" if errors else ""


def _death_reason(exit_code: int | None) -> str:
    if exit_code is not None and exit_code < 0:
        try:
            name = signal.Signals(-exit_code).name
        except ValueError:
            name = f"signal {-exit_code}"
        return f"the child process running it died ({name})"
    return f"the child process running it exited unexpectedly (exit code {exit_code})"
