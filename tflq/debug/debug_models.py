"""The quantization debug models of ``tflq debug`` in a LiteRT interpreter, and the error statistics they give.

:mod:`tflq.debug.layer_error` builds the models (``_calibrated.debug_model``) and names their ops; this module runs
them on the samples and accumulates each NumericVerify op's signal and noise, and compares the int8 weights with the
float ones.
"""
from __future__ import annotations

import math
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from tflq._tf import imports as _tf
from tflq.errors import ConversionError

DEBUG_BATCH = 32  # samples per interpreter call


@dataclass(frozen=True)
class WeightError:
    """The int8 weights of one op against its float weights."""

    sqnr_db: float | None  # None: exact
    min_channel_sqnr_db: float | None  # the worst output channel (per-channel quantization axis)
    channels: int

    def to_dict(self) -> dict[str, Any]:
        return {
            "sqnr_db": _rounded(self.sqnr_db),
            "min_channel_sqnr_db": _rounded(self.min_channel_sqnr_db),
            "channels": self.channels,
        }


def _rounded(value: float | None, digits: int = 2) -> float | None:
    if value is None or not math.isfinite(value):
        return None
    return round(float(value), digits)


class _Accumulator:
    """Running sums of the float values and the differences of one verified tensor."""

    def __init__(self) -> None:
        self.signal = 0.0
        self.noise = 0.0
        self.error_sum = 0.0
        self.count = 0
        self.max_abs = 0.0
        self.channel_signal: np.ndarray | None = None
        self.channel_noise: np.ndarray | None = None

    def add(self, reference: np.ndarray, difference: np.ndarray) -> None:
        reference = reference.astype(np.float64)
        difference = difference.astype(np.float64)
        self.signal += float(np.sum(reference**2))
        self.noise += float(np.sum(difference**2))
        self.error_sum += float(np.sum(difference))
        self.count += difference.size
        if difference.size:
            self.max_abs = max(self.max_abs, float(np.max(np.abs(difference))))
        channels = reference.shape[-1] if reference.ndim else 1
        signal = (reference**2).reshape(-1, channels).sum(axis=0)
        noise = (difference**2).reshape(-1, channels).sum(axis=0)
        if self.channel_signal is None or self.channel_signal.shape != signal.shape:
            self.channel_signal, self.channel_noise = signal, noise
        else:
            self.channel_signal = self.channel_signal + signal
            self.channel_noise = self.channel_noise + noise

    def sqnr_db(self) -> float | None:
        return _sqnr_db(self.signal, self.noise)

    def channel_sqnr_db(self) -> float | None:
        if self.channel_signal is None or self.channel_noise is None:
            return None
        live = self.channel_signal > 0
        if not np.any(live):
            return None
        values = [_sqnr_db(s, n) for s, n in zip(self.channel_signal[live], self.channel_noise[live], strict=True)]
        median = float(np.median([math.inf if v is None else v for v in values]))
        return None if math.isinf(median) else median


def _sqnr_db(signal: float, noise: float) -> float | None:
    """10·log10(signal/noise); None when the noise is zero (exact); -inf guarded to a floor when signal is zero."""
    if noise <= 0.0:
        return None
    if signal <= 0.0:
        return -math.inf
    return 10.0 * math.log10(signal / noise)


class _DebugRun:
    """One debug model in a LiteRT interpreter, every tensor kept.

    The interpreter keeps its default XNNPACK delegate, as a deployed model and TensorFlow's QuantizationDebugger
    do. Every compared tensor feeds a NumericVerify op, which is not delegated, so it is written out. With
    reference kernels instead, the int8 rounding differs slightly from what ships (measured: up to 30% in mean
    error on the digits CNN).
    """

    def __init__(self, content: bytes, *, delegate: bool = True) -> None:
        from ai_edge_litert.interpreter import Interpreter, OpResolverType

        resolver = OpResolverType.AUTO if delegate else OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
        with _tf.quiet(), warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*experimental_preserve_all_tensors.*")
            self.interpreter = Interpreter(
                model_content=content, experimental_preserve_all_tensors=True, experimental_op_resolver_type=resolver
            )
        self.tensors = {detail["index"]: detail for detail in self.interpreter.get_tensor_details()}
        self.ops = [op for op in self.interpreter._get_ops_details() if op["op_name"] != "DELEGATE"]
        self.defining = {index: op for op in self.ops for index in op["outputs"]}
        self.verify = [op for op in self.ops if op["op_name"] == "NumericVerify"]
        runner = self.interpreter.get_signature_runner()
        self.input_index = {name: detail["index"] for name, detail in runner.get_input_details().items()}
        self.graph_inputs = set(self.input_index.values())
        self.stats = {op["index"]: _Accumulator() for op in self.verify}
        self._shapes: dict[int, tuple[int, ...]] = {}

    def quantized_op(self, verify: dict[str, Any]) -> dict[str, Any]:
        return self.defining[verify["inputs"][0]]

    def feed(self, inputs: dict[str, np.ndarray]) -> None:
        interpreter = self.interpreter
        shapes = {index: inputs[name].shape for name, index in self.input_index.items()}
        if shapes != self._shapes:
            for index, shape in shapes.items():
                interpreter.resize_tensor_input(index, shape)
            interpreter.allocate_tensors()
            self._shapes = shapes
        for name, index in self.input_index.items():
            interpreter.set_tensor(index, inputs[name])
        try:
            interpreter.invoke()
        except (RuntimeError, ValueError) as error:
            message = " ".join(str(error).split())
            raise ConversionError(f"the quantization debug model does not run: {message}") from None
        for op in self.verify:
            quantized, reference = op["inputs"][:2]
            self.stats[op["index"]].add(interpreter.get_tensor(reference), interpreter.get_tensor(op["outputs"][0]))

    def is_constant(self, index: int) -> bool:
        return index not in self.defining and index not in self.graph_inputs

    def weight_error(self, verify: dict[str, Any]) -> WeightError | None:
        """The int8 constant inputs of the quantized op against the float twin's same inputs."""
        quantized_op = self.defining[verify["inputs"][0]]
        float_op = self.defining.get(verify["inputs"][1])
        if float_op is None or float_op is quantized_op:
            return None
        for quantized_index, float_index in zip(quantized_op["inputs"], float_op["inputs"], strict=False):
            if quantized_index < 0 or float_index < 0:
                continue
            detail = self.tensors.get(quantized_index)
            if detail is None or not self.is_constant(quantized_index) or np.dtype(detail["dtype"]) != np.int8:
                continue
            if not self.is_constant(float_index):
                continue
            values = self.interpreter.get_tensor(quantized_index)
            reference = self.interpreter.get_tensor(float_index).astype(np.float64)
            if values.shape != reference.shape:
                continue
            params = detail["quantization_parameters"]
            scales, zero_points = np.asarray(params["scales"]), np.asarray(params["zero_points"])
            if scales.size == 0:
                continue
            axis = int(params.get("quantized_dimension", 0)) if scales.size > 1 else 0
            shape = [1] * values.ndim
            if scales.size > 1:
                shape[axis] = scales.size
            dequantized = (values.astype(np.float64) - zero_points.reshape(shape)) * scales.reshape(shape)
            difference = dequantized - reference
            per_channel = [
                _sqnr_db(float(np.sum(np.take(reference, c, axis=axis) ** 2)),
                         float(np.sum(np.take(difference, c, axis=axis) ** 2)))
                for c in range(values.shape[axis])
            ] if values.ndim else []
            finite = [value for value in per_channel if value is not None]
            return WeightError(
                sqnr_db=_sqnr_db(float(np.sum(reference**2)), float(np.sum(difference**2))),
                min_channel_sqnr_db=min(finite) if finite else None,
                channels=values.shape[axis] if values.ndim else 1,
            )
        return None


def _batches(samples: Sequence[dict[str, np.ndarray]], size: int) -> Iterator[dict[str, np.ndarray]]:
    for start in range(0, len(samples), size):
        chunk = samples[start : start + size]
        yield {name: np.concatenate([sample[name] for sample in chunk]) for name in chunk[0]}


def _run_debug_models(
    own_model: bytes, whole_model: bytes, samples: Sequence[dict[str, np.ndarray]], *, delegate: bool
) -> tuple[_DebugRun, _DebugRun]:
    with _tf.quiet():  # the interpreter announces its delegate when it allocates
        own, whole = _DebugRun(own_model, delegate=delegate), _DebugRun(whole_model, delegate=delegate)
        for batch in _batches(samples, DEBUG_BATCH):
            own.feed(batch)
            whole.feed(batch)
    return own, whole
