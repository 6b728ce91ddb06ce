"""Broken model files, non-regular files and missing classes: one line naming the file and what it is, exit 2."""
from __future__ import annotations

import json
import os
import threading
import zipfile
from pathlib import Path

import numpy as np
import pytest

from tests.cli_helpers import assert_nothing_written, assert_usage_error, convert
from tests.sample_paths import SAMPLES

KERAS_FILE = SAMPLES / "digits_cnn.keras"
H5_FILE = SAMPLES / "digits_cnn.h5"


def _zip(path: Path, members: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w") as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return path


def _broken_keras(tmp_path: Path, case: str) -> Path:
    path = tmp_path / f"{case}.keras"
    good = KERAS_FILE.read_bytes()
    if case == "empty":
        path.write_bytes(b"")
    elif case == "random":
        path.write_bytes(np.random.default_rng(0).bytes(4096))
    elif case == "truncated":
        path.write_bytes(good[: len(good) // 2])
    elif case == "no_config":
        _zip(path, {"hello.txt": b"hi"})
    elif case == "bad_json":
        _zip(path, {"config.json": b"{not json"})
    elif case == "hdf5":
        path.write_bytes(H5_FILE.read_bytes())
    return path


@pytest.mark.parametrize(
    ("case", "fragment"),
    [
        ("empty", "not a Keras archive (a .keras file is a zip archive); found an empty file"),
        ("random", "not a Keras archive (a .keras file is a zip archive); found unrecognised bytes"),
        ("truncated", "a truncated or damaged zip archive"),
        ("no_config", "the zip has no config.json"),
        ("bad_json", "config.json in the Keras archive is not valid JSON"),
        ("hdf5", "found an HDF5 file"),
    ],
)
def test_broken_keras_file_says_what_it_is(tmp_path: Path, case: str, fragment: str) -> None:
    path = _broken_keras(tmp_path, case)
    result = convert(str(path), out=tmp_path / "out")
    assert_usage_error(result, f"{path}:", fragment)
    assert "File not found" not in result.output
    assert_nothing_written(tmp_path / "out")


@pytest.mark.parametrize(
    ("case", "fragment"),
    [
        ("empty", "not an HDF5 file (a .h5 model is HDF5); found an empty file"),
        ("random", "not an HDF5 file (a .h5 model is HDF5); found unrecognised bytes"),
        ("truncated", "a truncated HDF5 file"),
        ("zip", "not an HDF5 file (a .h5 model is HDF5); found a zip archive"),
        ("config_not_json", "the HDF5 attribute model_config is not valid JSON"),
    ],
)
def test_broken_h5_file_says_what_it_is(tmp_path: Path, case: str, fragment: str) -> None:
    path = tmp_path / f"{case}.h5"
    good = H5_FILE.read_bytes()
    if case == "empty":
        path.write_bytes(b"")
    elif case == "random":
        path.write_bytes(np.random.default_rng(1).bytes(4096))
    elif case == "truncated":
        path.write_bytes(good[: len(good) // 2])
    elif case == "zip":
        path.write_bytes(KERAS_FILE.read_bytes())
    else:
        import h5py

        with h5py.File(path, "w") as archive:
            archive.attrs["model_config"] = "{this is not json"
    assert_usage_error(convert(str(path), out=tmp_path / "out"), f"{path}:", fragment)


def test_a_fifo_as_model_is_refused_without_blocking(tmp_path: Path) -> None:
    fifo = tmp_path / "model.keras"
    os.mkfifo(fifo)
    outcome: list = []
    worker = threading.Thread(target=lambda: outcome.append(convert(str(fifo), out=tmp_path / "out")), daemon=True)
    worker.start()
    worker.join(timeout=60)
    if worker.is_alive():  # unblock the reader so the test process can end, then fail
        with open(fifo, "wb"):
            pass
        pytest.fail("tflq blocked reading a FIFO")
    assert_usage_error(outcome[0], f"{fifo}: is a FIFO (named pipe), not a model file")


def test_a_character_device_and_a_keras_directory_are_refused(tmp_path: Path) -> None:
    assert_usage_error(convert("/dev/null", out=tmp_path / "out"), "/dev/null: is a character device, not a model file")
    folder = tmp_path / "model.keras"
    folder.mkdir()
    assert_usage_error(convert(str(folder), out=tmp_path / "out"), f"{folder}: is a directory, expected a .keras file")


def _with_layer_class(tmp_path: Path, module: str, class_name: str, registered: str | None = None) -> Path:
    """digits_cnn.keras with layer 'conv1' claiming to be ``module.class_name`` (a class this process lacks)."""
    with zipfile.ZipFile(KERAS_FILE) as source:
        members = {name: source.read(name) for name in source.namelist()}
    config = json.loads(members["config.json"])
    (conv,) = [layer for layer in config["config"]["layers"] if layer["config"]["name"] == "conv1"]
    conv.update(module=module, class_name=class_name, registered_name=registered)
    members["config.json"] = json.dumps(config).encode()
    return _zip(tmp_path / "odd.keras", members)


def test_a_class_from_a_package_that_is_not_installed_is_named(tmp_path: Path) -> None:
    pytest.importorskip("keras")
    if __import__("importlib").util.find_spec("keras_hub") is not None:
        pytest.skip("keras_hub is installed here")
    path = _with_layer_class(tmp_path, "keras_hub.src.layers.modeling.conv_block", "ConvBlock")
    result = convert(str(path), out=tmp_path / "out")
    assert_usage_error(
        result,
        "class 'ConvBlock' from module 'keras_hub.src.layers.modeling.conv_block'",
        "package 'keras_hub' is not installed",
        "pip install keras-hub",
        "--custom-objects",
    )
    assert "config={" not in result.output


@pytest.mark.slow
def test_an_unregistered_custom_class_is_named_with_its_module(tiny_models, tmp_path: Path) -> None:
    """In a fresh interpreter: Keras's class registry is process-wide, and another test of the session may have
    imported the custom-layer module (registering the class) already."""
    import subprocess
    import sys

    completed = subprocess.run(
        [sys.executable, "-m", "tflq", "convert", str(tiny_models["custom"]), "-o", str(tmp_path / "out")],
        capture_output=True, text=True, timeout=300, cwd=tmp_path,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"},
    )
    assert completed.returncode == 2, completed.stdout + completed.stderr
    message = completed.stderr.strip().splitlines()[-1]
    assert "custom class 'Scale' (registered as 'tflq_test>Scale', defined in module 'tflq_test_custom_layers')" in message
    assert "--custom-objects tflq_test_custom_layers:Scale" in message
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


@pytest.mark.parametrize(
    ("source", "fragment"),
    [
        ("def broken(:\n    pass\n", "raised SyntaxError: invalid syntax (at "),
        ("raise RuntimeError('import boom')\n", "raised RuntimeError: import boom (at "),
        ("import sys\nsys.exit(3)\n", "called sys.exit(3)"),
    ],
    ids=["syntax_error", "raises", "sys_exit"],
)
def test_a_custom_objects_module_that_fails_on_import_is_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, source: str, fragment: str
) -> None:
    module_name = f"tflq_broken_custom_{tmp_path.name.replace('-', '_')}"
    (tmp_path / f"{module_name}.py").write_text(source)
    monkeypatch.chdir(tmp_path)
    result = convert(str(KERAS_FILE), "--custom-objects", f"{module_name}:Layer", out=tmp_path / "out")
    assert_usage_error(result, f"importing module {module_name!r}", fragment)
    if "sys.exit" not in fragment:
        assert f"{module_name}.py:1" in result.output


def test_a_savedmodel_with_an_empty_random_or_fifo_graph_is_refused(tmp_path: Path) -> None:
    cases = {"empty": b"", "random": np.random.default_rng(2).bytes(3000), "fifo": None}
    fragments = {
        "empty": "not a SavedModel: saved_model.pb is an empty file (0 bytes)",
        "random": "cannot load the SavedModel",
        "fifo": "saved_model.pb: is a FIFO (named pipe), not a regular file",
    }
    for case, data in cases.items():
        folder = tmp_path / case
        folder.mkdir()
        if data is None:
            os.mkfifo(folder / "saved_model.pb")
        else:
            (folder / "saved_model.pb").write_bytes(data)
        assert_usage_error(convert(str(folder), out=tmp_path / "out"), str(folder), fragments[case])


def test_a_class_defined_in_the_saving_script_is_named(tmp_path: Path) -> None:
    path = _with_layer_class(tmp_path, "__main__", "MyConv", registered="Custom>MyConv")
    assert_usage_error(
        convert(str(path), out=tmp_path / "out"),
        "custom class 'MyConv' (registered as 'Custom>MyConv'), defined in the script that saved the model",
        "--custom-objects module:MyConv",
    )
