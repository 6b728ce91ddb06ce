"""Broken data files and failing user data code: one line naming the file or function, exit 2."""
from __future__ import annotations

import os
import sys
import threading
from pathlib import Path

import numpy as np
import pytest

from tests.cli_helpers import assert_usage_error, convert
from tests.sample_paths import SAMPLES
from tflq.errors import DataError, UsageError
from tflq.model.data import open_data
from tflq.model.load import TensorSpec

IMAGE = TensorSpec("image", (None, 4, 4, 1), "float32")
LOGITS = TensorSpec("logits", (None, 3), "float32")
USER_MODULE = '''\
import sys
import numpy as np

def raises():
    raise ValueError("boom from user")

def exits():
    sys.exit(3)

def fails_midway():
    yield np.zeros((4, 4, 1), np.float32)
    raise RuntimeError("generator failed")

def interrupted():
    raise KeyboardInterrupt

def string_labels():
    return [{"x": np.zeros((4, 4, 1), np.float32), "y": np.array("cat")}]
'''


@pytest.fixture()
def user_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    name = f"tflq_user_data_{tmp_path.name.replace('-', '_')}"
    (tmp_path / f"{name}.py").write_text(USER_MODULE)
    monkeypatch.chdir(tmp_path)
    yield name
    sys.modules.pop(name, None)


def _load(spec: str, outputs: tuple[TensorSpec, ...] = ()) -> None:
    open_data(spec, [IMAGE], outputs=outputs, role="evaluation").load()


@pytest.mark.parametrize(
    ("function", "fragment", "line"),
    [
        ("raises", "raised ValueError: boom from user", 5),
        ("exits", "called sys.exit(3)", 8),
        ("fails_midway", "raised RuntimeError: generator failed", 12),
    ],
)
def test_a_failing_data_function_is_named_with_the_users_line(user_module: str, function: str, fragment: str, line: int) -> None:
    with pytest.raises(DataError) as caught:
        _load(f"{user_module}:{function}")
    message = str(caught.value)
    assert message.startswith(f"data function '{user_module}:{function}' {fragment}"), message
    assert f"{user_module}.py:{line})" in message, message


def test_keyboard_interrupt_in_a_data_function_still_interrupts(user_module: str) -> None:
    with pytest.raises(KeyboardInterrupt):
        _load(f"{user_module}:interrupted")


def test_string_labels_are_refused(user_module: str, tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"labels for output 'logits', sample 0 have dtype str\d+ \(strings or objects\)"):
        _load(f"{user_module}:string_labels", outputs=(LOGITS,))
    path = tmp_path / "labels.npz"
    np.savez(path, x=np.zeros((3, 4, 4, 1), np.float32), y=np.array(["cat", "dog", "cat"]))
    with pytest.raises(DataError, match=r"labels.npz: labels for output 'logits' have dtype str\d+"):
        _load(str(path), outputs=(LOGITS,))


@pytest.mark.parametrize(
    ("source", "fragment"),
    [("def f(:\n", "raised SyntaxError: invalid syntax (at "), ("raise OSError('no disk')\n", "raised OSError: no disk (at ")],
    ids=["syntax_error", "raises_on_import"],
)
def test_a_data_module_that_fails_on_import_is_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, source: str, fragment: str) -> None:
    name = f"tflq_bad_data_{tmp_path.name.replace('-', '_')}"
    (tmp_path / f"{name}.py").write_text(source)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(UsageError) as caught:
        _load(f"{name}:samples")
    message = str(caught.value)
    assert f"data function '{name}:samples': importing module '{name}' {fragment}" in message, message
    assert f"{name}.py:1)" in message, message


def _write(path: Path, case: str) -> Path:
    good = path.with_name("good" + path.suffix)
    if path.suffix == ".npz":
        np.savez(good, x=np.zeros((50, 4, 4, 1), np.float32))
    else:
        np.save(good, np.zeros((50, 4, 4, 1), np.float32))
    data = good.read_bytes()
    path.write_bytes({"empty": b"", "random": np.random.default_rng(0).bytes(600), "truncated": data[: len(data) // 2]}[case])
    return path


@pytest.mark.parametrize(
    ("name", "case", "fragment"),
    [
        ("d.npz", "empty", "not a .npz file (a zip of .npy arrays); found an empty file (0 bytes)"),
        ("d.npz", "random", "not a .npz file (a zip of .npy arrays); found unrecognised bytes"),
        ("d.npz", "truncated", "a truncated or damaged .npz file"),
        ("d.npy", "empty", "not a .npy file; found an empty file (0 bytes)"),
        ("d.npy", "random", "not a .npy file; found unrecognised bytes"),
        ("d.npy", "truncated", "the file is truncated"),
    ],
)
def test_a_broken_numpy_file_says_what_it_is(tmp_path: Path, name: str, case: str, fragment: str) -> None:
    path = _write(tmp_path / name, case)
    with pytest.raises(DataError) as caught:
        _load(str(path))
    assert str(caught.value).startswith(f"{path}: "), caught.value
    assert fragment in str(caught.value)
    assert "pickle" not in str(caught.value)


def _damaged(path: Path, case: str) -> Path:
    """Damage that np.load reports with neither ValueError nor OSError (tokenize.TokenError, zlib.error)."""
    rng = np.random.default_rng(0)
    if case == "unclosed header":
        np.save(path, np.zeros((50, 4, 4, 1), np.float32))
        data = path.read_bytes()
        path.write_bytes(data.replace(b"(50, 4, 4, 1)", b"(50, 4, 4, 1 ", 1))
    else:
        np.savez_compressed(path, x=rng.random((50, 4, 4, 1)).astype(np.float32))
        data = bytearray(path.read_bytes())
        data[200] ^= 0xFF  # inside the deflate stream of x.npy
        path.write_bytes(bytes(data))
    return path


@pytest.mark.parametrize(
    ("name", "case", "kind"),
    [("d.npy", "unclosed header", "TokenError"), ("d.npz", "corrupt deflate stream", "error")],
)
def test_numpy_damage_outside_valueerror_is_a_data_error(tmp_path: Path, name: str, case: str, kind: str) -> None:
    path = _damaged(tmp_path / name, case)
    with pytest.raises(DataError) as caught:
        _load(str(path))
    assert str(caught.value).startswith(f"{path}: a truncated or damaged {path.suffix} file ({kind}: "), caught.value


def test_a_fifo_or_directory_as_data_is_refused_without_blocking(tmp_path: Path) -> None:
    fifo = tmp_path / "calib.npz"
    os.mkfifo(fifo)
    outcome: list[BaseException | None] = []

    def attempt() -> None:
        try:
            _load(str(fifo))
            outcome.append(None)
        except DataError as error:
            outcome.append(error)

    worker = threading.Thread(target=attempt, daemon=True)
    worker.start()
    worker.join(timeout=30)
    if worker.is_alive():
        with open(fifo, "wb"):
            pass
        pytest.fail("tflq blocked reading a FIFO")
    assert f"{fifo}: is a FIFO (named pipe), not a regular file" in str(outcome[0])
    folder = tmp_path / "data.npy"
    folder.mkdir()
    with pytest.raises(DataError, match=r"data.npy: is a directory, expected a .npy file"):
        _load(str(folder))


def test_an_image_over_the_decompression_bomb_limit_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from PIL import Image

    Image.new("L", (100, 100)).save(tmp_path / "big.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # PIL's own limit, lowered so the image can stay small
    with pytest.raises(DataError, match=r"big.png: image refused, over PIL's decompression-bomb limit"):
        _load(str(tmp_path))


@pytest.mark.slow
def test_sys_exit_3_in_a_data_function_is_exit_2_with_a_message(user_module: str, tmp_path: Path) -> None:
    result = convert(str(SAMPLES / "digits_cnn.keras"), "--mode", "int8", "--calib", f"{user_module}:exits", out=tmp_path / "out")
    assert_usage_error(result, f"data function '{user_module}:exits' called sys.exit(3)")
