"""What a ``.tflite`` file holds: its signature, the ops XNNPACK takes, and the flatbuffer's contents.

Two sources, kept apart:

* the LiteRT interpreter (``ai_edge_litert``): the signature with dynamic dims and quantization parameters, and after
  ``allocate_tensors`` the delegation of ops to XNNPACK. Loading a file into the interpreter can crash the process on
  a malformed model, so the harness calls these functions in a child process;
* the flatbuffer itself, read with the schema that ships with ``ai_edge_litert`` (pure Python, TensorFlow is not
  imported): op histogram, float/integer compute per op, weight bytes by dtype, and the converter's metadata.
"""
from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from tflq.errors import InterpreterError
from tflq.measure.tflite_contents import (  # noqa: F401 (re-exported: the flatbuffer's contents)
    COMPUTE_KINDS,
    FLOAT_DTYPES,
    INDEX_DTYPES,
    QUANTIZED_DTYPES,
    FlatbufferSummary,
    OpTypeStats,
    check_model_file,
    flatbuffer_signature,
    flatbuffer_tensor_specs,
    is_float_model,
    read_flatbuffer,
    signature_order,
)
from tflq.model.load import TensorSpec

if TYPE_CHECKING:
    from ai_edge_litert.interpreter import Interpreter

DELEGATE_NODE = "DELEGATE"


# ---------------------------------------------------------------------------------------------------------------
# Signature (from the interpreter)


@dataclass(frozen=True)
class TensorInfo:
    """One input or output of a model, as the interpreter sees it.

    ``name`` is the SignatureDef name when the model has one (for Keras models: the Keras input name, ``output_0``...),
    else the tensor name. ``shape`` includes the batch axis; ``None`` marks a dynamic dimension. ``dtype`` is the
    storage dtype (``int8`` for a quantized tensor); ``logical_dtype`` the float dtype the data layer produces.
    """

    name: str
    tensor_name: str
    index: int
    shape: tuple[int | None, ...]
    dtype: str
    scales: tuple[float, ...] = ()
    zero_points: tuple[int, ...] = ()

    @property
    def quantized(self) -> bool:
        return self.dtype in QUANTIZED_DTYPES and len(self.scales) > 0 and self.scales[0] != 0.0

    @property
    def scale(self) -> float | None:
        return self.scales[0] if self.quantized else None

    @property
    def zero_point(self) -> int | None:
        return self.zero_points[0] if self.quantized else None

    @property
    def logical_dtype(self) -> str:
        return "float32" if self.quantized else self.dtype

    @property
    def dynamic_batch(self) -> bool:
        return len(self.shape) > 0 and self.shape[0] is None

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "tensor": self.tensor_name,
            "shape": list(self.shape),
            "dtype": self.dtype,
            "scale": self.scale,
            "zero_point": self.zero_point,
        }


@dataclass(frozen=True)
class Signature:
    """Inputs and outputs of the signature tflq runs (``key`` is None for a model without SignatureDef)."""

    key: str | None
    inputs: tuple[TensorInfo, ...]
    outputs: tuple[TensorInfo, ...]

    def to_dict(self) -> dict[str, Any]:
        return {
            "signature": self.key,
            "inputs": [tensor.to_dict() for tensor in self.inputs],
            "outputs": [tensor.to_dict() for tensor in self.outputs],
        }


def open_interpreter(tflite_path: str, *, threads: int, use_xnnpack: bool = True) -> Interpreter:
    """Load a ``.tflite`` into the LiteRT interpreter (not yet allocated).

    Returns the interpreter. Raises ModelLoadError for a missing file, InterpreterError for a file the interpreter
    refuses (corrupt, truncated, not a TFLite model).
    """
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    check_model_file(tflite_path)
    resolver = OpResolverType.AUTO if use_xnnpack else OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
    try:
        return Interpreter(model_path=tflite_path, num_threads=threads, experimental_op_resolver_type=resolver)
    except ValueError as error:
        raise InterpreterError(f"{tflite_path}: not a loadable TFLite model ({_one_line(error)})") from None


def allocate(interpreter: Interpreter, tflite_path: str) -> None:
    """``allocate_tensors`` (which also applies XNNPACK) with the interpreter's reason as a one-line error."""
    try:
        interpreter.allocate_tensors()
    except (RuntimeError, ValueError) as error:
        raise InterpreterError(f"{tflite_path}: allocate_tensors failed ({_one_line(error)})") from None


def read_signature(interpreter: Interpreter, tflite_path: str = "model") -> Signature:
    """The signature tflq runs: ``serving_default`` or the only SignatureDef, else the model's input/output tensors.

    Raises InterpreterError when the chosen signature is not the primary subgraph (not supported), or a name in the
    file is not UTF-8 (a corrupt file the interpreter loaded).
    """
    try:
        return _read_signature(interpreter, tflite_path)
    except UnicodeDecodeError:
        raise InterpreterError(f"{tflite_path}: a tensor or signature name is not UTF-8 (corrupt file?)") from None


def _read_signature(interpreter: Interpreter, tflite_path: str) -> Signature:
    signatures = interpreter._get_full_signature_list()  # name -> {"inputs": {name: index}, "outputs": {...}}
    if not signatures:
        inputs = tuple(_tensor_info(detail["name"], detail) for detail in interpreter.get_input_details())
        outputs = tuple(_tensor_info(detail["name"], detail) for detail in interpreter.get_output_details())
        return Signature(None, inputs, outputs)
    key = "serving_default" if "serving_default" in signatures else sorted(signatures)[0]
    subgraph = interpreter._interpreter.GetSubgraphIndexFromSignature(key)
    if subgraph != 0:
        raise InterpreterError(
            f"{tflite_path}: signature '{key}' runs subgraph {subgraph}; only signatures of the primary subgraph "
            "are supported"
        )
    runner = interpreter.get_signature_runner(key)
    input_details = runner.get_input_details()
    output_details = runner.get_output_details()
    inputs = tuple(_tensor_info(name, input_details[name]) for name in signature_order(input_details))
    outputs = tuple(_tensor_info(name, output_details[name]) for name in signature_order(output_details))
    return Signature(key, inputs, outputs)


def _tensor_info(name: str, detail: dict[str, Any]) -> TensorInfo:
    shape_signature = detail.get("shape_signature")
    if shape_signature is None or len(shape_signature) != len(detail["shape"]):
        shape_signature = detail["shape"]
    quantization = detail["quantization_parameters"]
    return TensorInfo(
        name=name,
        tensor_name=detail["name"],
        index=int(detail["index"]),
        shape=tuple(None if int(dim) < 0 else int(dim) for dim in shape_signature),
        dtype=np.dtype(detail["dtype"]).name,
        scales=tuple(float(scale) for scale in quantization["scales"]),
        zero_points=tuple(int(zero_point) for zero_point in quantization["zero_points"]),
    )


def tensor_specs(tensors: Sequence[TensorInfo]) -> tuple[TensorSpec, ...]:
    """``TensorSpec``s (logical float dtype) for the data layer, one per tensor."""
    return tuple(TensorSpec(tensor.name, tensor.shape, tensor.logical_dtype) for tensor in tensors)


# ---------------------------------------------------------------------------------------------------------------
# Delegation (from the interpreter, after allocate_tensors)


@dataclass(frozen=True)
class Delegation:
    """Which ops the XNNPACK delegate took.

    ``delegated_ops`` of ``total_ops`` (the model's own ops, primary subgraph) run inside ``partitions`` DELEGATE
    nodes; ``undelegated_op_types`` are the op types left on the built-in kernels.
    """

    enabled: bool
    delegated_ops: int
    total_ops: int
    partitions: int
    undelegated_op_types: tuple[str, ...]

    @property
    def fully_delegated(self) -> bool:
        return self.total_ops > 0 and self.delegated_ops == self.total_ops

    def to_dict(self) -> dict[str, Any]:
        return {
            "enabled": self.enabled,
            "delegated_ops": self.delegated_ops,
            "total_ops": self.total_ops,
            "partitions": self.partitions,
            "undelegated_op_types": list(self.undelegated_op_types),
        }

    def summary(self) -> str:
        if not self.enabled:
            return f"off (0/{self.total_ops})"
        text = f"{self.delegated_ops}/{self.total_ops}"
        if self.undelegated_op_types:
            text += " (not: " + ", ".join(self.undelegated_op_types) + ")"
        return text


def delegation_of(interpreter: Interpreter, *, enabled: bool, tflite_path: str = "model") -> Delegation:
    """Count the ops the delegate took, from the node list of an allocated interpreter.

    After ``allocate_tensors`` the node list holds the model's own nodes followed by one ``DELEGATE`` node per
    partition; the replaced nodes stay listed but are no longer in the execution plan, which Python cannot read. A
    node belongs to a partition when it produces one of the partition's tensors: walk back from each DELEGATE node's
    outputs through the producing nodes, stopping at the DELEGATE node's inputs. (Checked against
    ``experimental_disable_delegate_node_fusion``, which gives one DELEGATE node per delegated op.)
    """
    try:
        nodes = interpreter._get_ops_details()
    except UnicodeDecodeError:
        raise InterpreterError(f"{tflite_path}: an op name is not UTF-8 (corrupt file?)") from None
    delegate_nodes = [node for node in nodes if node["op_name"] == DELEGATE_NODE]
    model_nodes = [node for node in nodes if node["op_name"] != DELEGATE_NODE]
    producer_by_tensor = {int(tensor): node for node in model_nodes for tensor in node["outputs"]}
    delegated: set[int] = set()
    for delegate_node in delegate_nodes:
        boundary = {int(tensor) for tensor in delegate_node["inputs"]}
        pending = [int(tensor) for tensor in delegate_node["outputs"]]
        visited: set[int] = set()
        while pending:
            tensor = pending.pop()
            if tensor in visited or tensor in boundary:
                continue
            visited.add(tensor)
            producer = producer_by_tensor.get(tensor)
            if producer is None or producer["index"] in delegated:
                continue
            delegated.add(producer["index"])
            pending.extend(int(source) for source in producer["inputs"] if source >= 0)
    undelegated = sorted({node["op_name"] for node in model_nodes if node["index"] not in delegated})
    return Delegation(
        enabled=enabled,
        delegated_ops=len(delegated),
        total_ops=len(model_nodes),
        partitions=len(delegate_nodes),
        undelegated_op_types=tuple(undelegated),
    )


def _one_line(error: BaseException) -> str:
    return " ".join(str(error).split()) or type(error).__name__


# ---------------------------------------------------------------------------------------------------------------
# tflq inspect


@dataclass(frozen=True)
class Inspection:
    """``tflq inspect``: the file's contents, its signature, and what XNNPACK takes of it.

    ``delegation`` is None (and ``interpreter_error`` says why) when the interpreter cannot load or allocate the file.
    """

    tflite_path: str
    size_bytes: int
    contents: FlatbufferSummary
    signature: Signature | None
    delegation: Delegation | None
    interpreter_error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        signature = self.signature.to_dict() if self.signature else {"signature": None, "inputs": [], "outputs": []}
        source = None if self.signature is None else ("file" if self.interpreter_error else "interpreter")
        return {
            "path": self.tflite_path,
            "name": os.path.basename(self.tflite_path),
            "size_bytes": self.size_bytes,
            **signature,
            "signature_source": source,
            **self.contents.to_dict(),
            "xnnpack": self.delegation.to_dict() if self.delegation else None,
            "xnnpack_error": self.interpreter_error,
        }


def inspect_tflite(
    tflite_path: str, *, threads: int, use_xnnpack: bool = True, start_method: str | None = None
) -> Inspection:
    """Read a ``.tflite`` file and load it (in a child process) to see its signature and delegation.

    Returns the Inspection. Raises ModelLoadError for a missing file, InterpreterError for a file that is not a TFLite
    flatbuffer. A file that parses but does not load or allocate still gives an Inspection, with the interpreter's
    reason in ``interpreter_error``.
    """
    from tflq.measure.isolation import call_isolated

    contents = read_flatbuffer(tflite_path)
    signature = delegation = error = None
    try:
        signature, delegation = call_isolated(
            interpreter_view, tflite_path, threads, use_xnnpack, description=tflite_path, start_method=start_method
        )
    except InterpreterError as failure:
        error = str(failure)
        signature = signature_from_flatbuffer(tflite_path)  # the file's own declaration, when it cannot be loaded
    return Inspection(tflite_path, os.path.getsize(tflite_path), contents, signature, delegation, error)


def interpreter_view(
    tflite_path: str, threads: int, use_xnnpack: bool, *, report: Any = None
) -> tuple[Signature, Delegation]:
    """Signature and delegation of a ``.tflite`` (loads and allocates it in this process)."""
    interpreter = open_interpreter(tflite_path, threads=threads, use_xnnpack=use_xnnpack)
    allocate(interpreter, tflite_path)
    delegation = delegation_of(interpreter, enabled=use_xnnpack, tflite_path=tflite_path)
    return read_signature(interpreter, tflite_path), delegation


def signature_from_flatbuffer(tflite_path: str) -> Signature | None:
    """The signature as the file declares it (SignatureDef, else the primary subgraph's inputs and outputs), without
    the interpreter. None when the flatbuffer cannot be read."""
    declared = flatbuffer_signature(tflite_path)
    if declared is None:
        return None

    def info(tensor: Any) -> TensorInfo:
        return TensorInfo(
            tensor.name, tensor.tensor_name, tensor.index, tensor.shape, tensor.dtype, tensor.scales, tensor.zero_points
        )

    return Signature(declared.key, tuple(map(info, declared.inputs)), tuple(map(info, declared.outputs)))
