"""Stand-ins for ``tflq.models`` and ``tflq.data`` until they land on main.

DELETE THIS MODULE when main's ``models.py`` / ``data.py`` are merged: ``harness.py`` imports those first and
falls back to this file only on ImportError. Only what the harness needs is here: ``TensorSpec``, ``Batch``, an
``.npz`` evaluation dataset, and a Keras / SavedModel reference loader.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Iterator, Sequence

import numpy as np

from tflq.errors import DataError, ModelLoadError


@dataclass(frozen=True)
class TensorSpec:
    name: str
    shape: tuple[int | None, ...]
    dtype: str


@dataclass(frozen=True)
class Batch:
    inputs: dict[str, np.ndarray]
    labels: dict[str, np.ndarray]


class NpzDataset:
    """An ``.npz`` file checked against the model's inputs: key ``x`` (single input) or one key per input name;
    labels ``y`` (single output) or ``y_<output name>``."""

    def __init__(self, path: str, inputs: Sequence[Any], outputs: Sequence[Any], limit: int | None) -> None:
        self.source = path
        if not os.path.exists(path):
            raise DataError(f"{path}: no such file")
        if not path.endswith(".npz"):
            raise DataError(f"{path}: only .npz evaluation data is supported until the data layer lands")
        try:
            archive = np.load(path, allow_pickle=False)
            arrays = {key: archive[key] for key in archive.files}
        except Exception as error:  # numpy raises many types for a corrupt archive
            raise DataError(f"{path}: cannot read .npz ({error})") from None
        self.inputs: dict[str, np.ndarray] = {}
        for spec in inputs:
            key = "x" if len(inputs) == 1 and "x" in arrays else spec.name
            if key not in arrays:
                raise DataError(f"{path}: no array for input '{spec.name}' (expected key '{key}'; found {sorted(arrays)})")
            self.inputs[spec.name] = _checked_input(path, key, arrays[key], spec)
        counts = {len(array) for array in self.inputs.values()}
        if len(counts) != 1:
            raise DataError(f"{path}: inputs have different sample counts {sorted(counts)}")
        self.count = counts.pop()
        if self.count == 0:
            raise DataError(f"{path}: no samples")
        self.labels: dict[str, np.ndarray] = {}
        for spec in outputs:
            key = "y" if len(outputs) == 1 else f"y_{spec.name}"
            if key in arrays:
                labels = arrays[key]
                if len(labels) != self.count:
                    raise DataError(f"{path}: '{key}' has {len(labels)} labels for {self.count} samples")
                self.labels[spec.name] = labels
        if limit is not None:
            self.count = min(self.count, limit)

    def __len__(self) -> int:
        return self.count

    def batches(self, batch_size: int) -> Iterator[Batch]:
        for start in range(0, self.count, batch_size):
            stop = min(start + batch_size, self.count)
            yield Batch(
                inputs={name: array[start:stop] for name, array in self.inputs.items()},
                labels={name: array[start:stop] for name, array in self.labels.items()},
            )

    def samples(self) -> Iterator[dict[str, np.ndarray]]:
        for batch in self.batches(1):
            yield batch.inputs


def _checked_input(path: str, key: str, array: np.ndarray, spec: Any) -> np.ndarray:
    if not np.issubdtype(array.dtype, np.number):
        raise DataError(f"{path}: '{key}' has dtype {array.dtype}; input '{spec.name}' needs numbers")
    expected = tuple(spec.shape)
    if array.ndim != len(expected) or any(
        want is not None and want != got for want, got in zip(expected[1:], array.shape[1:])
    ):
        shown = tuple("?" if dim is None else dim for dim in expected)
        raise DataError(
            f"{path}: '{key}' has shape {array.shape}; input '{spec.name}' expects {shown} (? = any)"
        )
    array = array.astype(np.float32, copy=False)
    if not np.all(np.isfinite(array)):
        raise DataError(f"{path}: '{key}' contains NaN or inf")
    return array


def open_data(spec: str, inputs: Sequence[Any], *, outputs: Sequence[Any] = (), limit: int | None = None,
              role: str = "evaluation") -> NpzDataset:
    return NpzDataset(spec, inputs, outputs, limit)


class KerasReference:
    """A Keras model or SavedModel signature with ``.inputs``, ``.outputs`` and ``.predict(dict) -> dict``."""

    def __init__(self, path: str) -> None:
        if not os.path.exists(path):
            raise ModelLoadError(f"{path}: no such file or directory")
        if os.path.isdir(path):
            import tensorflow as tf

            loaded = tf.saved_model.load(path)
            self._function = loaded.signatures["serving_default"]
            input_specs = self._function.structured_input_signature[1]
            self.inputs = tuple(
                TensorSpec(name, tuple(spec.shape.as_list()), "float32") for name, spec in sorted(input_specs.items())
            )
            self.outputs = tuple(
                TensorSpec(name, tuple(spec.shape.as_list()), "float32")
                for name, spec in sorted(self._function.structured_outputs.items())
            )
            self._keras = None
            return
        import keras

        try:
            model = keras.models.load_model(path, compile=False)
        except Exception as error:  # keras raises many types for unreadable files
            raise ModelLoadError(f"{path}: cannot load Keras model ({error})") from None
        self._keras = model
        self.inputs = tuple(
            TensorSpec(tensor.name.split(":")[0], tuple(tensor.shape), "float32") for tensor in model.inputs
        )
        self.outputs = tuple(
            TensorSpec(f"output_{position}", tuple(tensor.shape), "float32")
            for position, tensor in enumerate(model.outputs)
        )

    def predict(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        if self._keras is None:
            results = self._function(**inputs)
            return {name: value.numpy() for name, value in results.items()}
        arrays = [inputs[spec.name] for spec in self.inputs]
        results = self._keras(arrays if len(arrays) > 1 else arrays[0], training=False)
        if not isinstance(results, (list, tuple)):
            results = [results]
        return {spec.name: np.asarray(result) for spec, result in zip(self.outputs, results)}


def load_reference(path: str, *, signature: str | None = None, custom_objects: Sequence[str] = (),
                   unsafe: bool = False) -> KerasReference:
    return KerasReference(path)
