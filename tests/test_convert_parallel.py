"""The worker process for export-only builds (tflq/convert/parallel.py): same files as the sequential path, real
processes, and no worker left behind when the run fails early."""
from __future__ import annotations

import threading
import time

import pytest

from tests.sample_paths import SAMPLES
from tflq.convert.parallel import WORKERS_VARIABLE, start_worker, worker_count
from tflq.convert.session import ConvertOptions, convert_model
from tflq.errors import ModelLoadError, UsageError
from tflq.modes import Variant

CNN = SAMPLES / "digits_cnn.keras"
TRAIN = SAMPLES / "digits_train.npz"


def _worker_threads() -> list[threading.Thread]:
    return [thread for thread in threading.enumerate() if thread.name == "tflq-export-worker"]


def test_worker_builds_the_same_files_as_the_sequential_path(tmp_path, monkeypatch):
    options = ConvertOptions(modes=("float32", "float16", "dynamic", "16x8"), calibration=str(TRAIN))
    results = {}
    for workers in ("1", "2"):
        monkeypatch.setenv(WORKERS_VARIABLE, workers)
        results[workers] = convert_model(CNN, tmp_path / workers, options)
    sequential, parallel = results["1"], results["2"]
    assert [a.label for a in parallel.artifacts] == [a.label for a in sequential.artifacts]
    for ours, reference in zip(parallel.artifacts, sequential.artifacts, strict=True):
        assert ours.ok and reference.ok, (ours.error, reference.error)
        assert ours.sha256 == reference.sha256, ours.label
        assert ours.path.read_bytes() == reference.path.read_bytes()
    assert not _worker_threads()


def test_only_export_only_builds_go_to_the_worker(tmp_path, monkeypatch):
    monkeypatch.setenv(WORKERS_VARIABLE, "2")
    options = ConvertOptions(modes=("float32", "float16", "dynamic", "int8"), calibration=str(TRAIN))
    worker = start_worker(options, options.variants(), tmp_path)
    assert worker is not None
    try:
        assert [label for label, _, _ in worker.jobs] == [Variant("float16").label, Variant("dynamic").label]
    finally:
        worker.cancel()
    # nothing to share, or the parent would have nothing to do meanwhile: no worker
    alone = ConvertOptions(modes=("float32",))
    assert start_worker(alone, alone.variants(), tmp_path) is None
    monkeypatch.setenv(WORKERS_VARIABLE, "1")
    assert start_worker(options, options.variants(), tmp_path) is None
    _wait_for_no_worker()


def test_a_failed_export_leaves_no_worker_behind(tmp_path, monkeypatch):
    monkeypatch.setenv(WORKERS_VARIABLE, "2")
    broken = tmp_path / "broken.keras"
    broken.write_bytes(b"not a zip archive")
    options = ConvertOptions(modes=("float32", "float16", "dynamic"))
    with pytest.raises(ModelLoadError):
        convert_model(broken, tmp_path / "out", options)
    _wait_for_no_worker()
    assert not list((tmp_path / "out").glob("*.tflite")) if (tmp_path / "out").exists() else True


@pytest.mark.parametrize("value", ["0", "-1", "two", "1.5"])
def test_workers_variable_must_be_a_positive_integer(monkeypatch, value):
    monkeypatch.setenv(WORKERS_VARIABLE, value)
    with pytest.raises(UsageError, match=f"{WORKERS_VARIABLE}='{value}': expected auto or a positive integer"):
        worker_count()


def test_workers_variable_caps_the_processes(monkeypatch):
    from tflq.convert.parallel import free_core

    monkeypatch.delenv(WORKERS_VARIABLE, raising=False)
    assert worker_count() == (2 if free_core() else 1)  # auto: a worker only when a core is free
    monkeypatch.setenv(WORKERS_VARIABLE, "auto")
    assert worker_count() == (2 if free_core() else 1)
    monkeypatch.setenv(WORKERS_VARIABLE, "1")
    assert worker_count() == 1
    monkeypatch.setenv(WORKERS_VARIABLE, "8")
    assert worker_count() == 2  # one worker beside the parent: the only independent work is float16/dynamic


def _wait_for_no_worker() -> None:
    """A cancelled worker thread ends once its child has imported TensorFlow and read the cancel (seconds)."""
    deadline = time.monotonic() + 120
    while _worker_threads() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not _worker_threads()
