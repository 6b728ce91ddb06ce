"""Array-backed data (.npz, .npy) is batched a batch at a time: same batches, checks and messages as sample by sample."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tflq.errors import DataError
from tflq.model.data import Dataset, open_data
from tflq.model.load import TensorSpec

IMAGE = TensorSpec("image", (None, 4, 4, 1), "float32")
LOGITS = TensorSpec("logits", (None, 3), "float32")


def sample_by_sample(dataset: Dataset) -> Dataset:
    """The same source without its arrays: the per-sample path."""
    return Dataset(dataset.source, dataset.inputs, dataset.outputs, dataset._reader, dataset.limit, dataset.has_labels)


def collect(dataset: Dataset, batch_size: int) -> list[tuple[dict[str, np.ndarray], dict[str, np.ndarray]]]:
    return [(batch.inputs, batch.labels) for batch in dataset.batches(batch_size)]


@pytest.mark.parametrize("limit", [None, 7])
def test_npz_batches_equal_the_per_sample_path(tmp_path: Path, limit: int | None) -> None:
    path = tmp_path / "data.npz"
    x = np.random.default_rng(0).random((10, 4, 4, 1))  # float64: cast to float32 on both paths
    np.savez(path, x=x, y=np.arange(10) % 3)
    dataset = open_data(str(path), [IMAGE], outputs=[LOGITS], limit=limit, role="evaluation")
    assert dataset.count == (limit or 10)
    fast, slow = collect(dataset, 4), collect(sample_by_sample(dataset), 4)
    assert len(fast) == len(slow)
    for (fast_inputs, fast_labels), (slow_inputs, slow_labels) in zip(fast, slow):
        assert fast_inputs["image"].dtype == slow_inputs["image"].dtype == np.float32
        np.testing.assert_array_equal(fast_inputs["image"], slow_inputs["image"])
        np.testing.assert_array_equal(fast_labels["logits"], slow_labels["logits"])


def test_npy_batches_equal_the_per_sample_path(tmp_path: Path) -> None:
    path = tmp_path / "data.npy"
    np.save(path, np.random.default_rng(1).random((5, 4, 4, 1), dtype=np.float32))
    dataset = open_data(str(path), [IMAGE], role="evaluation")
    fast, slow = collect(dataset, 2), collect(sample_by_sample(dataset), 2)
    for (fast_inputs, _), (slow_inputs, _) in zip(fast, slow, strict=True):
        np.testing.assert_array_equal(fast_inputs["image"], slow_inputs["image"])


def test_nan_is_reported_for_the_same_sample_with_the_same_message(tmp_path: Path) -> None:
    path = tmp_path / "nan.npz"
    x = np.zeros((9, 4, 4, 1), np.float32)
    x[6, 1, 2, 0] = np.nan
    np.savez(path, x=x)
    dataset = open_data(str(path), [IMAGE], role="evaluation")
    with pytest.raises(DataError) as fast:
        collect(dataset, 4)
    with pytest.raises(DataError) as slow:
        collect(sample_by_sample(dataset), 4)
    assert str(fast.value) == str(slow.value)
    assert "sample 6" in str(fast.value)


def test_shape_errors_match_the_per_sample_message(tmp_path: Path) -> None:
    path = tmp_path / "shape.npz"
    np.savez(path, x=np.zeros((3, 5, 5, 1), np.float32))
    dataset = open_data(str(path), [IMAGE], role="evaluation")
    with pytest.raises(DataError) as fast:
        collect(dataset, 2)
    with pytest.raises(DataError) as slow:
        collect(sample_by_sample(dataset), 2)
    assert str(fast.value) == str(slow.value)


def test_int64_out_of_int32_range_is_reported_for_the_same_sample_on_both_paths(tmp_path: Path) -> None:
    ids_spec = TensorSpec("ids", (None, 5), "int32")
    path = tmp_path / "ids.npz"
    ids = np.zeros((9, 5), np.int64)
    ids[6, 3] = -(2**33)  # sample 6 does not fit int32; samples 0-5 do, so the batch path must search the batch
    np.savez(path, x=ids)
    dataset = open_data(str(path), [ids_spec], role="evaluation")
    with pytest.raises(DataError) as fast:
        collect(dataset, 4)
    with pytest.raises(DataError) as slow:
        collect(sample_by_sample(dataset), 4)
    assert str(fast.value) == str(slow.value)
    assert "input 'ids', sample 6: expected dtype int32, found int64 with values -8589934592..0" in str(fast.value)


def test_int64_that_fits_is_cast_to_int32_on_both_paths(tmp_path: Path) -> None:
    ids_spec = TensorSpec("ids", (None, 5), "int32")
    path = tmp_path / "ids.npz"
    np.savez(path, x=np.arange(45, dtype=np.int64).reshape(9, 5))
    dataset = open_data(str(path), [ids_spec], role="evaluation")
    for (fast_inputs, _), (slow_inputs, _) in zip(collect(dataset, 4), collect(sample_by_sample(dataset), 4), strict=True):
        assert fast_inputs["ids"].dtype == slow_inputs["ids"].dtype == np.int32
        np.testing.assert_array_equal(fast_inputs["ids"], slow_inputs["ids"])
