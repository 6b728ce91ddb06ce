"""Feeding float data through a LiteRT interpreter: quantize inputs, dequantize outputs, batch when the batch
dimension is dynamic, one sample at a time otherwise."""
from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

import numpy as np

from tflq.errors import InterpreterError
from tflq.measure.tflite_info import Signature, TensorInfo, allocate

if TYPE_CHECKING:
    from ai_edge_litert.interpreter import Interpreter

MAX_AUTO_BATCH = 256
AUTO_BATCH_BYTES = 8 * 1024 * 1024  # input bytes per evaluation batch when the batch size is automatic


def quantize(values: np.ndarray, tensor: TensorInfo) -> np.ndarray:
    """Float values to the tensor's storage dtype: round(x / scale) + zero_point (half away from zero, as TFLite's
    QUANTIZE kernel), clipped to the dtype's range. Non-quantized tensors are only cast."""
    dtype = np.dtype(tensor.dtype)
    if not tensor.quantized:
        return np.ascontiguousarray(values, dtype=dtype)
    scaled = np.divide(values, np.float32(tensor.scale), dtype=np.float32).astype(np.float64)
    rounded = np.trunc(scaled + np.copysign(0.5, scaled))  # half away from zero (exact in float64)
    rounded += tensor.zero_point
    limits = np.iinfo(dtype)
    np.clip(rounded, limits.min, limits.max, out=rounded)
    return rounded.astype(dtype)


def dequantize(values: np.ndarray, tensor: TensorInfo) -> np.ndarray:
    """Storage values to float32: (q - zero_point) * scale. Non-quantized outputs are returned as float32."""
    if not tensor.quantized:
        return values.astype(np.float32, copy=False) if values.dtype.kind == "f" else values
    return ((values.astype(np.float32) - np.float32(tensor.zero_point)) * np.float32(tensor.scale)).astype(np.float32)


class TfliteRunner:
    """Runs batches of float inputs through an allocated interpreter and returns float outputs, by signature name.

    When every input has a dynamic batch dimension the whole batch goes through one invoke (the input is resized only
    when the batch shape changes, e.g. for the last, shorter batch); otherwise samples go through one at a time
    (or in chunks of the static batch size, the last chunk padded and the padding dropped).
    """

    def __init__(self, interpreter: Interpreter, signature: Signature, tflite_path: str) -> None:
        self.interpreter = interpreter
        self.signature = signature
        self.tflite_path = tflite_path
        self.batched = all(tensor.dynamic_batch for tensor in signature.inputs)
        self._current_shapes = {
            tensor.index: tuple(detail["shape"])
            for tensor, detail in zip(signature.inputs, self._input_details(), strict=True)
        }

    def _input_details(self) -> list[dict[str, Any]]:
        by_index = {detail["index"]: detail for detail in self.interpreter.get_input_details()}
        return [by_index.get(tensor.index) or self.interpreter._get_tensor_details(tensor.index, 0)
                for tensor in self.signature.inputs]

    def predict(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Outputs (float32, by output name) for a batch of float inputs (by input name, batch axis first)."""
        stored = {tensor.index: quantize(inputs[tensor.name], tensor) for tensor in self.signature.inputs}
        count = len(next(iter(stored.values())))
        if self.batched:
            raw = self._invoke(stored)
        else:
            chunk = self.signature.inputs[0].shape[0] or 1
            pieces: dict[int, list[np.ndarray]] = {tensor.index: [] for tensor in self.signature.outputs}
            for start in range(0, count, chunk):
                part = {index: _padded(array[start:start + chunk], chunk) for index, array in stored.items()}
                for index, value in self._invoke(part).items():
                    pieces[index].append(value[: min(chunk, count - start)] if len(value) == chunk else value)
            raw = {index: np.concatenate(values) for index, values in pieces.items()}
        return {tensor.name: dequantize(raw[tensor.index], tensor) for tensor in self.signature.outputs}

    def _invoke(self, stored: dict[int, np.ndarray]) -> dict[int, np.ndarray]:
        self.ensure_shapes({index: array.shape for index, array in stored.items()})
        for index, array in stored.items():
            self.interpreter.set_tensor(index, array)
        try:
            self.interpreter.invoke()
        except (RuntimeError, ValueError) as error:
            raise InterpreterError(f"{self.tflite_path}: invoke failed ({' '.join(str(error).split())})") from None
        return {tensor.index: self.interpreter.get_tensor(tensor.index) for tensor in self.signature.outputs}

    def ensure_shapes(self, shapes: dict[int, tuple[int, ...]]) -> None:
        """Resize the inputs whose shape differs from ``shapes`` and re-allocate (once for all of them)."""
        changed = {index: shape for index, shape in shapes.items() if self._current_shapes.get(index) != tuple(shape)}
        if not changed:
            return
        for index, shape in changed.items():
            try:
                self.interpreter.resize_tensor_input(index, list(shape))
            except (RuntimeError, ValueError) as error:
                raise InterpreterError(f"{self.tflite_path}: cannot resize input to {tuple(shape)} ({error})") from None
            self._current_shapes[index] = tuple(shape)
        allocate(self.interpreter, self.tflite_path)


def _padded(array: np.ndarray, size: int) -> np.ndarray:
    if len(array) == size:
        return array
    padding = np.repeat(array[-1:], size - len(array), axis=0)
    return np.ascontiguousarray(np.concatenate([array, padding]))


def auto_batch_size(input_shapes: Iterable[tuple[int | None, ...]]) -> int:
    """A batch that keeps the inputs (shapes with the batch axis) near AUTO_BATCH_BYTES of float32, a power of two
    in [1, MAX_AUTO_BATCH]."""
    sample_bytes = 0
    for shape in input_shapes:
        elements = int(np.prod([dim or 1 for dim in shape[1:]])) if len(shape) > 1 else 1
        sample_bytes += elements * 4
    batch = 1
    while batch * 2 <= MAX_AUTO_BATCH and batch * 2 * max(sample_bytes, 1) <= AUTO_BATCH_BYTES:
        batch *= 2
    return batch
