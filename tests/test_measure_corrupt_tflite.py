"""Corrupt and odd model files given to ``tflq eval`` and ``tflq inspect``: each is its own row's error (eval) or one
error line (inspect), never a traceback, never the loss of the good files' rows."""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from tests.fixtures.tflite import ClassifierFiles
from tflq.cli.app import main
from tflq.errors import InterpreterError
from tflq.measure.tflite_contents import flatbuffer_tensor_specs, read_flatbuffer

CORRUPTIONS = 200
SEED = 20261201
FAST = ["--threads", "1", "--runs", "0", "-q"]


def invoke(*arguments: object):
    return CliRunner().invoke(main, [str(argument) for argument in arguments], catch_exceptions=False)


def corruptions(good: bytes, count: int, *, seed: int = SEED) -> list[bytes]:
    """``count`` copies of ``good`` with 1-16 random bytes overwritten past the 8-byte header (identifier intact)."""
    generator = np.random.default_rng(seed)
    copies = []
    for _ in range(count):
        data = bytearray(good)
        length = int(generator.integers(1, 17))
        start = int(generator.integers(8, len(good) - length + 1))
        data[start:start + length] = generator.integers(0, 256, length, dtype=np.uint8).tobytes()
        copies.append(bytes(data))
    return copies


def test_flatbuffer_reader_never_raises_anything_but_its_error(classifier: ClassifierFiles, tmp_path: Path) -> None:
    """The pure-Python reader (used by inspect, the float32 baseline pick and the parent's data opening) gives a
    summary or InterpreterError for every corruption; before the fix about 2-7 % raised TypeError."""
    corrupt = tmp_path / "corrupt.tflite"
    outcomes = {"ok": 0, "error": 0}
    for data in corruptions(classifier.float32.read_bytes(), 1000):
        corrupt.write_bytes(data)
        try:
            read_flatbuffer(str(corrupt))
            outcomes["ok"] += 1
        except InterpreterError as error:
            assert str(error).startswith(f"{corrupt}: corrupt or truncated TFLite flatbuffer"), error
            outcomes["error"] += 1
        specs = flatbuffer_tensor_specs(str(corrupt))  # None or specs, never an exception
        assert specs is None or len(specs) == 2
    assert outcomes["error"] > 0 and outcomes["ok"] > 0, outcomes


@pytest.mark.slow
def test_eval_keeps_the_good_row_whatever_the_corruption(classifier: ClassifierFiles, tmp_path: Path) -> None:
    good_row = json.loads(invoke("eval", classifier.float32, "--data", classifier.data, "--json", *FAST).stdout)[0]
    expected_top1 = good_row["accuracy"]["top1"]
    outcomes = {"ok": 0, "error": 0}
    for number, data in enumerate(corruptions(classifier.float32.read_bytes(), CORRUPTIONS)):
        corrupt = tmp_path / f"corrupt_{number:03d}.tflite"
        corrupt.write_bytes(data)
        result = invoke("eval", classifier.float32, corrupt, "--data", classifier.data, "--json", *FAST)
        context = f"corruption {number}: exit {result.exit_code}\n{result.output}"
        assert "Traceback" not in result.output, context
        assert result.exit_code in (0, 1), context
        good, bad = json.loads(result.stdout)
        assert good["status"] == "ok" and good["accuracy"]["top1"] == expected_top1, context
        errors = [line for line in result.stderr.splitlines() if line.startswith("Error:")]
        if bad["status"] == "error":
            assert result.exit_code == 1 and errors == [f"Error: {bad['error']}"], context
            assert bad["error"].startswith(str(corrupt)) and "\n" not in bad["error"], context
            assert ": unexpected " not in bad["error"], context  # every failure named (no stray Python exception)
            outcomes["error"] += 1
        else:
            assert result.exit_code == 0 and not errors, context
            outcomes["ok"] += 1
        corrupt.unlink()
    assert outcomes["error"] > 0, outcomes


@pytest.mark.slow
def test_inspect_on_a_corrupt_file_is_one_line(classifier: ClassifierFiles, tmp_path: Path) -> None:
    outcomes = {0: 0, 1: 0}
    for number, data in enumerate(corruptions(classifier.float32.read_bytes(), CORRUPTIONS)):
        corrupt = tmp_path / f"corrupt_{number:03d}.tflite"
        corrupt.write_bytes(data)
        result = invoke("inspect", corrupt, "--json")
        context = f"corruption {number}: exit {result.exit_code}\n{result.output}"
        assert "Traceback" not in result.output and result.exit_code in (0, 1), context
        errors = [line for line in result.stderr.splitlines() if line.startswith("Error:")]
        assert len(errors) == result.exit_code, context  # exit 1 with exactly one error line, or a clean inspection
        outcomes[result.exit_code] += 1
        corrupt.unlink()
    assert outcomes[1] > 0, outcomes


def _odd_files(tmp_path: Path, good: bytes) -> dict[str, Path]:
    files = {
        "empty": b"",
        "one byte": b"\0",
        "header only": good[:8],
        "truncated half": good[: len(good) // 2],
        "truncated by one byte": good[:-1],
        "text": b"this is not a model\n" * 50,
        "zip": b"PK\x03\x04" + bytes(200),
        "identifier only": b"\0\0\0\0TFL3",
        "zeros after header": good[:8] + bytes(len(good) - 8),
        "ones after header": good[:8] + b"\xff" * (len(good) - 8),
        "root offset past the end": (len(good) + 100).to_bytes(4, "little") + good[4:],
    }
    paths = {}
    for name, data in files.items():
        path = tmp_path / (name.replace(" ", "_") + ".tflite")
        path.write_bytes(data)
        paths[name] = path
    return paths


def test_eval_odd_files_are_their_rows_errors(classifier: ClassifierFiles, tmp_path: Path) -> None:
    for name, path in _odd_files(tmp_path, classifier.float32.read_bytes()).items():
        result = invoke("eval", classifier.float32, path, "--json", *FAST)
        context = f"{name}: exit {result.exit_code}\n{result.output}"
        assert result.exit_code == 1 and "Traceback" not in result.output, context
        good, bad = json.loads(result.stdout)
        assert good["status"] == "ok" and good["size_ratio"] == 1.0, context
        assert bad["status"] == "error" and bad["error"].startswith(str(path)), context
        assert result.stderr.splitlines()[-1] == f"Error: {bad['error']}", context


def test_inspect_odd_files_are_one_line_exit_1(classifier: ClassifierFiles, tmp_path: Path) -> None:
    for name, path in _odd_files(tmp_path, classifier.float32.read_bytes()).items():
        result = invoke("inspect", path)
        context = f"{name}: exit {result.exit_code}\n{result.output}"
        assert result.exit_code == 1 and "Traceback" not in result.output, context
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith(f"Error: {path}: "), context


def test_a_directory_or_fifo_is_a_usage_error_before_measuring(classifier: ClassifierFiles, tmp_path: Path) -> None:
    folder = tmp_path / "folder.tflite"
    (folder / "inner").mkdir(parents=True)
    fifo = tmp_path / "pipe.tflite"
    os.mkfifo(fifo)
    other_fifo = tmp_path / "pipe.bin"
    os.mkfifo(other_fifo)
    for path, message in (
        (folder, "no .tflite file in this folder"),
        (fifo, "is not a regular file (a FIFO, socket or device); expected a .tflite file"),
        (other_fifo, "is not a regular file (a FIFO, socket or device); expected a .tflite file"),
    ):
        result = invoke("eval", classifier.float32, path, *FAST)
        assert result.exit_code == 2, result.output
        assert result.stderr == f"Error: {path}: {message}\n", result.output
    for path, message in (
        (folder, "is a directory, not a .tflite file"),
        (fifo, "is not a regular file (a FIFO, socket or device); expected a .tflite file"),
    ):
        result = invoke("inspect", path)
        assert result.exit_code == 2, result.output
        assert result.stderr == f"Error: {path}: {message}\n", result.output


def test_a_fifo_reference_is_a_usage_error(classifier: ClassifierFiles, tmp_path: Path) -> None:
    fifo = tmp_path / "reference.tflite"
    os.mkfifo(fifo)
    result = invoke("eval", classifier.int8, "--reference", fifo, "--data", classifier.data, *FAST)
    assert result.exit_code == 2, result.output
    assert result.stderr == f"Error: {fifo}: is not a regular file (a FIFO, socket or device); expected a .tflite file\n"
