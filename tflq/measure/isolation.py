"""Run one function in a child process, so that a crash there (segfault, abort) is an error, not the end of the run.

``call_isolated(target, *args)`` calls ``target(*args, report=report)`` in a child and returns its result. The child
may call ``report(*message)`` any number of times (progress); each message reaches ``on_message`` in the parent.
A TflqError raised in the child is raised again in the parent, same class and message. Anything else the child
raises, and a child that dies, becomes :class:`ChildProcessFailed` (an InterpreterError) naming the signal.

The child's ``tflq`` log records (INFO and above; DEBUG too when the parent logs DEBUG) and the Python warnings raised
from tflq's own code travel over the same pipe and are re-emitted in the parent's ``tflq`` logger, in the calling
thread, each with the attribute ``tflq_child`` (the ``description``): the RANDOM CALIBRATION warning or the
float64-cast notice of a child reach the terminal and the batch report. TensorFlow's own output stays in the child's
log file. The child's phase events (:mod:`tflq.progress`) travel the same way and are re-emitted to the listeners of
the calling thread.

A child dies with its parent: on Linux it asks for SIGKILL when its parent dies (``PR_SET_PDEATHSIG``); everywhere it
also watches a pipe whose only writer is the parent, and kills itself when that pipe closes (the parent died, even of
SIGKILL, or the call ended). :func:`stop_children` kills every running child at once (Ctrl-C in a batch); the calls
waiting on them, and any call made afterwards until :func:`allow_children`, raise KeyboardInterrupt.

Start method: ``fork`` when it is safe (Linux, one thread, TensorFlow not imported in the parent): a few
milliseconds per child with numpy and the interpreter already imported. Otherwise ``forkserver`` (one server started
per run with numpy and ai_edge_litert preloaded; each child is then forked from it) or ``spawn`` where neither exists.
"""
from __future__ import annotations

import logging
import multiprocessing
import os
import signal
import sys
import tempfile
import threading
import traceback
import warnings
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, cast

from tflq import progress
from tflq.errors import InterpreterError, TflqError

if TYPE_CHECKING:
    from multiprocessing.context import ForkContext, ForkServerContext, SpawnContext

# Test hook: a child whose description contains this environment variable's value calls os.abort() before its work.
ABORT_HOOK_VARIABLE = "TFLQ_TEST_ABORT_CHILD"

_FORKSERVER_PRELOAD = ["numpy", "ai_edge_litert.interpreter", "tflq.measure.harness"]


class ChildProcessFailed(InterpreterError):
    """The child process died (signal, os._exit) or raised an unexpected exception."""


_running: set[Any] = set()  # the child processes of calls in progress, for stop_children
_running_lock = threading.Lock()
_stopping = threading.Event()


def stop_children() -> None:
    """Kill every running child now; their calls, and later ones until :func:`allow_children`, raise
    KeyboardInterrupt."""
    with _running_lock:
        _stopping.set()
        for process in list(_running):
            try:
                process.kill()
            except (OSError, ValueError, AttributeError):  # already gone, or closed
                pass


def allow_children() -> None:
    """Start children again after :func:`stop_children` (the start of a new batch)."""
    _stopping.clear()


def _interrupted() -> KeyboardInterrupt:
    return KeyboardInterrupt("interrupted: child processes stopped")


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
    if _stopping.is_set():
        raise _interrupted()
    # get_context(str) is typed BaseContext, which has no Process; each of the three concrete contexts has one.
    method = start_method or choose_start_method()
    context = cast("ForkContext | ForkServerContext | SpawnContext", multiprocessing.get_context(method))
    if context.get_start_method() == "forkserver":
        context.set_forkserver_preload(_FORKSERVER_PRELOAD)
        _start_forkserver()
    # The child's native stderr (LiteRT's "INFO: Created TensorFlow Lite XNNPACK delegate", TensorFlow's logs) goes
    # to a file; its last ERROR line is quoted when the child dies.
    log_descriptor, log_path = tempfile.mkstemp(prefix="tflq-child-", suffix=".log")
    os.close(log_descriptor)
    receiver, sender = context.Pipe(duplex=False)
    watch_reader, watch_writer = context.Pipe(duplex=False)  # the parent holds the only writer: EOF = parent gone
    hook = os.environ.get(ABORT_HOOK_VARIABLE)  # read here: a forkserver child has the server's environment
    abort = bool(hook and hook in description)
    tflq_logger = logging.getLogger("tflq")
    level = logging.DEBUG if tflq_logger.isEnabledFor(logging.DEBUG) else logging.INFO
    parent_pid = os.getpid() if context.get_start_method() == "fork" else None
    process = context.Process(
        target=_child_main,
        args=(sender, target, args, keywords or {}, log_path, abort, (watch_reader, watch_writer), level, parent_pid),
        daemon=True,
    )
    answered = False
    try:
        process.start()
        with _running_lock:
            _running.add(process)
            if _stopping.is_set():
                process.kill()
        sender.close()
        watch_reader.close()
        while True:
            try:
                kind, payload = receiver.recv()
            except EOFError:
                process.join()
                if _stopping.is_set():
                    raise _interrupted() from None
                reason = _death_reason(process.exitcode) + _last_error_line(log_path)
                raise ChildProcessFailed(f"{description}: {reason}") from None
            if kind == "message":
                if on_message is not None:
                    on_message(*payload)
                continue
            if kind == "log":
                _relog(payload, description)
                continue
            if kind == "phase":
                progress.emit(progress.PhaseEvent.from_data(payload))
                continue
            answered = True
            if kind == "result":
                return payload
            if kind == "error":
                raise payload
            raise ChildProcessFailed(f"{description}: {payload}")  # "unexpected"
    finally:
        with _running_lock:
            _running.discard(process)
        receiver.close()
        watch_writer.close()  # the child's pipe watch sees EOF: an answered child still tearing down ends now
        # Not waiting for an answered child saves its teardown time (multiprocessing reaps it at the next start or
        # at exit). Otherwise (interrupted, or the parent failed) it is stopped.
        if not answered and process.is_alive():
            process.kill()
            process.join()
        try:
            os.unlink(log_path)
        except OSError:
            pass


def _start_forkserver() -> None:
    """Start the forkserver with SIGINT blocked, if it is not running yet.

    A terminal's Ctrl-C reaches the whole process group; the forkserver ignores SIGINT only once its preload is
    imported, so a Ctrl-C in its first second printed a KeyboardInterrupt traceback from it. The blocked mask is
    inherited (fork, exec); the children then ignore SIGINT anyway (:func:`_child_main`). In this thread SIGINT is
    blocked only while the server is launched (milliseconds: the launch does not wait for the preload), and a Ctrl-C
    arriving meanwhile is delivered when it is unblocked.
    """
    from multiprocessing import forkserver, resource_tracker

    if not hasattr(signal, "pthread_sigmask"):
        forkserver.ensure_running()
        return
    resource_tracker.ensure_running()  # first: it blocks SIGINT for its own launch and then unblocks it
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    try:
        forkserver.ensure_running()
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


def _relog(payload: tuple[str, int, str], description: str) -> None:
    """Re-emit a child's log record in the parent's logger of the same name, in this thread."""
    name, level, message = payload
    logger = logging.getLogger(name)
    if logger.isEnabledFor(level):
        logger.handle(logging.makeLogRecord(
            {"name": name, "levelno": level, "levelname": logging.getLevelName(level), "msg": message, "args": None,
             "tflq_child": description}
        ))


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
    sender: Any, target: Callable[..., Any], args: tuple[Any, ...], keywords: dict[str, Any], log_path: str,
    abort: bool,
    watch: tuple[Any, Any], level: int, parent_pid: int | None,
) -> None:
    _die_with_parent(watch, parent_pid)
    # A terminal Ctrl-C reaches the whole process group; the parent decides what to do with it.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    log_descriptor = os.open(log_path, os.O_WRONLY | os.O_APPEND)
    os.dup2(log_descriptor, 2)
    os.close(log_descriptor)
    if abort:
        os.abort()
    sending = threading.Lock()

    def send(message: tuple[str, Any]) -> None:
        with sending:
            sender.send(message)

    def report(*message: Any) -> None:
        send(("message", message))

    _forward_logs(send, level)
    _forward_phases(send)
    try:
        result = target(*args, **keywords, report=report)
    except TflqError as error:
        send(("error", error))
    except BaseException as error:  # noqa: BLE001 - crossing a process boundary: becomes the row's error
        detail = traceback.format_exc(limit=-3).strip().splitlines()
        where = detail[-3].strip() if len(detail) >= 3 else ""
        send(("unexpected", f"unexpected {type(error).__name__}: {error} ({where})"))
    else:
        send(("result", result))
    finally:
        sender.close()


def _die_with_parent(watch: tuple[Any, Any], parent_pid: int | None) -> None:
    """SIGKILL this child when its parent dies: PR_SET_PDEATHSIG on Linux, and a thread watching the parent's pipe."""
    reader, writer = watch
    writer.close()  # this process's copy (fork); the parent's is then the only one
    if sys.platform.startswith("linux"):
        import ctypes

        try:
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(1, signal.SIGKILL, 0, 0, 0)  # PR_SET_PDEATHSIG
        except (OSError, AttributeError):  # no prctl: the pipe watch below still works
            pass
        if parent_pid is not None and os.getppid() != parent_pid:  # the parent died before prctl
            os.kill(os.getpid(), signal.SIGKILL)

    def watch_parent() -> None:
        try:
            reader.recv_bytes()
        except (EOFError, OSError):
            pass
        os.kill(os.getpid(), signal.SIGKILL)

    threading.Thread(target=watch_parent, name="tflq-parent-watch", daemon=True).start()


class _ForwardingHandler(logging.Handler):
    def __init__(self, send: Callable[[tuple[str, Any]], None], level: int) -> None:
        super().__init__(level)
        self._send = send

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self._send(("log", (record.name, record.levelno, record.getMessage())))
        except (OSError, ValueError, TypeError):  # the parent is gone or the message cannot be formatted
            self.handleError(record)


def _forward_phases(send: Callable[[tuple[str, Any]], None]) -> None:
    """Send this child's phase events to the parent (and to no listener inherited through fork)."""

    def forward(event: progress.PhaseEvent) -> None:
        try:
            send(("phase", event.to_data()))
        except (OSError, ValueError):  # the parent is gone: the pipe watch ends this child
            pass

    progress.only(forward)


_TFLQ_SOURCE = os.path.dirname(os.path.abspath(__file__))


def _forward_logs(send: Callable[[tuple[str, Any]], None], level: int) -> None:
    """Send this child's ``tflq`` log records, and the warnings raised from tflq's own code, to the parent."""
    logger = logging.getLogger("tflq")
    for handler in list(logger.handlers):  # inherited through fork: they would write to the child's log file
        logger.removeHandler(handler)
    logger.addHandler(_ForwardingHandler(send, level))
    logger.setLevel(level)
    logger.propagate = False
    show_original = warnings.showwarning

    def show(
        message: Any, category: type[Warning], filename: str, lineno: int, file: Any = None, line: Any = None
    ) -> None:
        if os.path.abspath(filename).startswith(_TFLQ_SOURCE + os.sep):
            logger.warning("%s", f"{category.__name__}: {message}")
        else:  # TensorFlow's, Keras's...: to the child's log file, like the rest of their output
            show_original(message, category, filename, lineno, file, line)

    warnings.showwarning = show


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
