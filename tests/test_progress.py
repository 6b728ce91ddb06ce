"""Live progress (issue 12): the library's phase events (from a real conversion in a child process, and from the
measurements), ``tflq run``'s plain lines when stdout is not a terminal and with ``--plain``, and its live view on a
real pseudo-terminal (bars, phases, failures, the final table after the view; Ctrl-C)."""
from __future__ import annotations

import json
import os
import pty
import re
import select
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from tests.sample_paths import REPOSITORY, SAMPLES
from tflq import progress
from tflq.cli.app import main
from tflq.measure.isolation import ABORT_HOOK_VARIABLE, call_isolated

_ESCAPES = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


# ---------------------------------------------------------------------------------------------------------------
# The events


def test_an_event_is_plain_data_and_a_phase_costs_nothing_without_a_listener() -> None:
    event = progress.PhaseEvent("measure", "a.tflite", "", "latency", "end", 1.5)
    assert progress.PhaseEvent.from_data(json.loads(json.dumps(event.to_data()))) == event  # a queue, a Ray object
    assert event.text == "measure: latency"
    heard: list[progress.PhaseEvent] = []
    with progress.phase("export", model="m"):  # nobody listens: nothing is made
        pass

    def elsewhere() -> None:
        with progress.phase("export", model="elsewhere"):
            pass

    with progress.listening(heard.append):
        other = threading.Thread(target=elsewhere)
        other.start()
        other.join()  # another thread's phase does not reach this thread's listener
        with pytest.raises(ValueError), progress.phase("convert", model="m", variant="int8"):
            raise ValueError("a failing phase still ends")
    assert [(e.phase, e.model, e.variant, e.state) for e in heard] == [
        ("convert", "m", "int8", "start"),
        ("convert", "m", "int8", "end"),
    ]


def _convert_in_child(model: str, output_dir: str, *, report) -> list[str]:
    from tflq.convert.options import ConvertOptions
    from tflq.convert.session import convert_model

    options = ConvertOptions(modes=("float32", "dynamic", "int8"), calibration="random", calibration_samples=4)
    result = convert_model(Path(model), Path(output_dir), options, name="tiny")
    return [artifact.status for artifact in result.artifacts]


@pytest.mark.slow
def test_the_phases_of_a_conversion_in_a_child_reach_the_parent_in_order(tiny_models, tmp_path: Path) -> None:
    heard: list[progress.PhaseEvent] = []
    with progress.listening(heard.append):
        statuses = call_isolated(
            _convert_in_child, str(tiny_models["sequential"]), str(tmp_path), description="tiny", on_message=None
        )
    assert statuses == ["ok", "ok", "ok"]
    expected = [("export", "")] + [("calibrate", "")] + [
        (phase, variant) for variant in ("float32", "dynamic", "int8") for phase in ("convert", "verify")
    ]
    pairs = [(e.phase, e.variant, e.state) for e in heard]
    assert pairs == [(phase, variant, state) for phase, variant in expected for state in ("start", "end")], pairs
    assert {e.model for e in heard} == {"tiny"}
    assert all(e.seconds == 0.0 for e in heard if e.state == "start")
    assert all(e.seconds > 0.0 for e in heard if e.state == "end")


# ---------------------------------------------------------------------------------------------------------------
# tflq run: plain lines


def _batch(folder: Path, model: Path, *, names: tuple[str, ...] = ("tiny",), quantized: str = "dynamic") -> Path:
    entries = "".join(f"  - name: {name}\n    path: {model}\n" for name in names)
    config = folder / "batch.yaml"
    calibration = "  calibration: {data: random, samples: 4}\n" if quantized == "int8" else ""
    config.write_text(
        "output_dir: out\n"
        "defaults:\n"
        f"  modes: [float32, {quantized}]\n"
        f"{calibration}"
        "  latency: {runs: 2, warmup_runs: 1}\n"
        f"models:\n{entries}"
    )
    return config


_LINE = re.compile(r"^\[ *\d+\.\ds\] (\.\.\.|ok |ERR|   | > ) (\S+)( \S+)?: (.*)$")


def _events(stderr: str) -> list[tuple[str, str, str, str]]:
    found = []
    for line in stderr.splitlines():
        match = _LINE.match(line)
        if match:
            found.append((match[1], match[2], (match[3] or "").strip(), match[4]))
    return found


@pytest.mark.slow
def test_run_prints_one_line_per_event_when_not_a_terminal_and_phases_with_plain_verbose(
    tiny_models, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = _batch(tmp_path, tiny_models["sequential"])
    monkeypatch.setenv("TF_CPP_MIN_LOG_LEVEL", os.environ.get("TF_CPP_MIN_LOG_LEVEL", "3"))  # -v changes it
    first = CliRunner().invoke(main, ["run", str(config), "--plain", "-v"], catch_exceptions=False)
    assert first.exit_code == 0, first.output
    events = _events(first.stderr)
    marks = {(mark, label, text) for mark, _, label, text in events}
    for label in ("float32", "dynamic"):
        order = [
            events.index(("...", "tiny", label, "converting")),
            events.index((" > ", "tiny", label, "convert")),
            events.index((" > ", "tiny", label, "verify")),
            events.index(("...", "tiny", label, "measuring")),
            events.index((" > ", "tiny", label, "measure")),
            events.index((" > ", "tiny", label, "measure: latency")),
            next(i for i, event in enumerate(events) if event[:3] == ("ok ", "tiny", label)),
        ]
        assert order == sorted(order), events
    assert (" > ", "", "export") in marks and events.index((" > ", "tiny", "", "export")) < events.index(
        (" > ", "tiny", "float32", "convert")
    )
    assert "reports: " in first.stdout and "total" not in first.stderr  # no live view

    # Not a terminal (CliRunner), no --plain, no -v: today's lines, no phase line
    second = CliRunner().invoke(main, ["run", str(config), "--force"], catch_exceptions=False)
    assert second.exit_code == 0, second.output
    kinds = [mark for mark, *_ in _events(second.stderr)]
    assert kinds.count("...") == 4 and kinds.count("ok ") == 2 and " > " not in kinds, second.stderr


# ---------------------------------------------------------------------------------------------------------------
# tflq run: the live view on a pseudo-terminal


class Terminal:
    """``python -m tflq ARGS`` on a real pseudo-terminal (stdout and stderr are the terminal), read as it goes."""

    def __init__(self, *args: str, cwd: Path, env: dict[str, str] | None = None) -> None:
        pid, self.fd = pty.fork()
        if pid == 0:  # the child: a new session whose controlling terminal is the pty
            try:
                os.chdir(cwd)
                os.environ.update(TERM="xterm-256color", COLUMNS="120", LINES="40", PYTHONPATH=str(REPOSITORY))
                os.environ.update(env or {})
                os.execv(sys.executable, [sys.executable, "-m", "tflq", *args])
            finally:
                os._exit(127)
        self.pid = pid
        self.raw = b""
        self.exit_code: int | None = None

    @property
    def text(self) -> str:
        return _ESCAPES.sub("", self.raw.decode("utf-8", "replace")).replace("\r", "\n")

    def _read(self, timeout: float) -> bool:
        ready, _, _ = select.select([self.fd], [], [], timeout)
        if ready:
            try:
                data = os.read(self.fd, 65536)
            except OSError:  # EIO: the child closed the terminal
                return False
            if not data:
                return False
            self.raw += data
        return True

    def wait_for(self, pattern: str, timeout: float = 240.0) -> None:
        deadline = time.monotonic() + timeout
        while not re.search(pattern, self.text):
            if time.monotonic() > deadline or not self._read(0.1):
                raise AssertionError(f"{pattern!r} never came; terminal so far:\n{self.text[-3000:]}")

    def finish(self, timeout: float) -> int:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and self._read(0.1):
            pass
        if time.monotonic() >= deadline:
            os.killpg(self.pid, 9)
        _, status = os.waitpid(self.pid, 0)
        os.close(self.fd)
        self.exit_code = os.waitstatus_to_exitcode(status)
        return self.exit_code


@pytest.mark.slow
def test_live_view_on_a_terminal_shows_phases_failures_and_then_the_table(tiny_models, tmp_path: Path) -> None:
    config = _batch(tmp_path, tiny_models["sequential"], names=("tiny", "doomed"), quantized="int8")
    terminal = Terminal("run", str(config), cwd=tmp_path, env={ABORT_HOOK_VARIABLE: "doomed"})
    code = terminal.finish(timeout=300)
    text = terminal.text
    assert code == 1, text  # doomed's conversion child aborts: its variants fail
    assert re.search(r"tiny +convert float32", text) and re.search(r"tiny +measure int8: latency", text), text
    assert re.search(r"tiny +export", text) and re.search(r"tiny +calibrate", text), text  # the model's own phases
    assert re.search(r"total .* \d/4 variants.*elapsed \d:\d\d:\d\d  remaining", text), text
    assert "ERR doomed float32: conversion failed" in text and "ERR doomed int8: conversion failed" in text, text
    assert re.search(r"\d/4 variants, 2 failed", text), text
    assert re.search(r"ok  tiny int8: [\d,]+ B, p50", text), text
    # the child's warning is printed above the view while it runs; the table and the summary after it stopped
    last_view = text.rindex("variants")
    assert text.index("WARNING: RANDOM CALIBRATION DATA") < last_view, text
    assert text.index("reports: ", last_view) > last_view, text
    assert "Error: 2 job(s) failed: doomed float32, doomed int8" in text
    assert "Traceback" not in text


@pytest.mark.slow
@pytest.mark.parametrize(
    ("moment", "pause"),
    [
        # the forkserver is still importing its preload: before the fix it printed a KeyboardInterrupt traceback
        (r"gru +converting float32", 0.2),
        (r"gru +(export|convert )", 0.5),  # the conversion child is at work
    ],
    ids=["while-the-forkserver-starts", "while-converting"],
)
def test_ctrl_c_in_the_live_view_stops_at_once(tmp_path: Path, moment: str, pause: float) -> None:
    config = _batch(tmp_path, SAMPLES / "digits_gru.keras", names=("gru",))
    terminal = Terminal("run", str(config), cwd=tmp_path)
    terminal.wait_for(moment)
    time.sleep(pause)
    os.write(terminal.fd, b"\x03")  # Ctrl-C typed on the terminal: SIGINT to its foreground process group
    interrupted = time.monotonic()
    code = terminal.finish(timeout=30)
    took = time.monotonic() - interrupted
    assert code == 1, terminal.text
    assert took < 5.0, f"took {took:.1f} s to stop"  # the limit of tests/test_batch_interrupts.py
    assert "Error: interrupted: the variants finished before are recorded in" in terminal.text
    assert "Traceback" not in terminal.text


# ---------------------------------------------------------------------------------------------------------------
# tflq eval and tflq convert: their phases on a terminal, nothing of it with --plain


@pytest.mark.slow
@pytest.mark.parametrize("plain", [False, True], ids=["terminal", "plain"])
def test_eval_shows_each_files_phases_on_a_terminal(classifier, tmp_path: Path, plain: bool) -> None:
    arguments = ["eval", str(classifier.float32), str(classifier.int8), "--data", str(classifier.data), "--runs", "3"]
    terminal = Terminal(*arguments, *(["--plain"] if plain else []), cwd=tmp_path)
    assert terminal.finish(timeout=120) == 0, terminal.text
    text = terminal.text
    shown = [
        re.search(rf"{re.escape(path.name)} +measure: (latency|accuracy)", text)
        for path in (classifier.float32, classifier.int8)
    ]
    assert all(match is None for match in shown) if plain else all(shown), text
    assert (f"{len(classifier.x)}/{len(classifier.x)} samples" in text) is not plain, text
    assert "Accuracy" in text and text.rindex("Accuracy") > max(text.rfind("measure: "), 0), text  # table after


@pytest.mark.slow
def test_convert_shows_its_phases_on_a_terminal(tiny_models, tmp_path: Path) -> None:
    terminal = Terminal(
        "convert", str(tiny_models["sequential"]), "--mode", "float32", "--mode", "int8", "--calib", "random",
        "--calib-samples", "4", "-o", str(tmp_path / "out"), cwd=tmp_path,
    )
    assert terminal.finish(timeout=180) == 0, terminal.text
    text = terminal.text
    for phase in ("export", "calibrate", "convert float32", "verify float32", "convert int8", "verify int8"):
        assert re.search(rf"sequential +{phase}", text), (phase, text)
    assert "sequential: export" in text and text.rindex("sequential: export") > text.rindex("verify int8"), text


# ---------------------------------------------------------------------------------------------------------------
# tflq --help stays instant


def test_the_cli_does_not_import_rich_until_a_view_is_drawn() -> None:
    code = "import sys, tflq.cli.app; print(sorted(m for m in sys.modules if m == 'rich' or m.startswith('rich.')))"
    env = dict(os.environ, PYTHONPATH=str(REPOSITORY))
    output = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env).stdout
    assert output.strip() == "[]"
