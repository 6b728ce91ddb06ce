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
import struct
from collections import Counter
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np

from tflq.errors import InterpreterError, ModelLoadError
from tflq.models import TensorSpec

if TYPE_CHECKING:
    from ai_edge_litert.interpreter import Interpreter

QUANTIZED_DTYPES = ("int8", "uint8", "int16")
FLOAT_DTYPES = ("float32", "float16", "float64", "bfloat16")
INDEX_DTYPES = ("int32", "int64", "bool")
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


def open_interpreter(tflite_path: str, *, threads: int, use_xnnpack: bool = True) -> "Interpreter":
    """Load a ``.tflite`` into the LiteRT interpreter (not yet allocated).

    Returns the interpreter. Raises ModelLoadError for a missing file, InterpreterError for a file the interpreter
    refuses (corrupt, truncated, not a TFLite model).
    """
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    if not os.path.isfile(tflite_path):
        raise ModelLoadError(f"{tflite_path}: no such file")
    resolver = OpResolverType.AUTO if use_xnnpack else OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
    try:
        return Interpreter(model_path=tflite_path, num_threads=threads, experimental_op_resolver_type=resolver)
    except ValueError as error:
        raise InterpreterError(f"{tflite_path}: not a loadable TFLite model ({_one_line(error)})") from None


def allocate(interpreter: "Interpreter", tflite_path: str) -> None:
    """``allocate_tensors`` (which also applies XNNPACK) with the interpreter's reason as a one-line error."""
    try:
        interpreter.allocate_tensors()
    except (RuntimeError, ValueError) as error:
        raise InterpreterError(f"{tflite_path}: allocate_tensors failed ({_one_line(error)})") from None


def read_signature(interpreter: "Interpreter", tflite_path: str = "model") -> Signature:
    """The signature tflq runs: ``serving_default`` or the only SignatureDef, else the model's input/output tensors.

    Raises InterpreterError when the chosen signature is not the primary subgraph (not supported).
    """
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
    inputs = tuple(_tensor_info(name, input_details[name]) for name in _ordered(input_details))
    outputs = tuple(_tensor_info(name, output_details[name]) for name in _ordered(output_details))
    return Signature(key, inputs, outputs)


def _ordered(details: dict[str, Any]) -> list[str]:
    """Signature names in an order that is the same for every variant of a model: by name, with numbered names
    (``output_2`` before ``output_10``) in number order. (Tensor indices differ between variants.)"""

    def sort_key(name: str) -> tuple[Any, ...]:
        prefix, _, number = name.rpartition("_")
        if prefix and number.isdigit():
            return (prefix, int(number), name)
        return (name, -1, name)

    return sorted(details, key=sort_key)


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


def delegation_of(interpreter: "Interpreter", *, enabled: bool) -> Delegation:
    """Count the ops the delegate took, from the node list of an allocated interpreter.

    After ``allocate_tensors`` the node list holds the model's own nodes followed by one ``DELEGATE`` node per
    partition; the replaced nodes stay listed but are no longer in the execution plan, which Python cannot read. A
    node belongs to a partition when it produces one of the partition's tensors: walk back from each DELEGATE node's
    outputs through the producing nodes, stopping at the DELEGATE node's inputs. (Checked against
    ``experimental_disable_delegate_node_fusion``, which gives one DELEGATE node per delegated op.)
    """
    nodes = interpreter._get_ops_details()
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


# ---------------------------------------------------------------------------------------------------------------
# Flatbuffer contents (pure Python)

COMPUTE_KINDS = ("float", "integer", "hybrid", "mixed")


@dataclass(frozen=True)
class OpTypeStats:
    """How often an op type occurs (all subgraphs) and how its instances compute.

    ``compute`` counts instances per kind: ``float`` (all tensors float), ``integer`` (all tensors integer),
    ``hybrid`` (float activations, integer constant weights: dynamic-range quantization), ``mixed`` (float and integer
    activations: QUANTIZE, DEQUANTIZE, SHAPE, CAST...).
    """

    op_type: str
    count: int
    compute: tuple[tuple[str, int], ...]

    def to_dict(self) -> dict[str, Any]:
        return {"op_type": self.op_type, "count": self.count, "compute": dict(self.compute)}


@dataclass(frozen=True)
class FlatbufferSummary:
    """What the file says about itself, without running it."""

    schema_version: int
    description: str
    subgraphs: tuple[tuple[str, int], ...]  # (name, op count)
    ops: tuple[OpTypeStats, ...]
    weight_bytes: tuple[tuple[str, int], ...]  # (dtype, bytes of constant tensors)
    metadata: tuple[tuple[str, Any], ...]  # (name, decoded value)

    def compute_totals(self) -> dict[str, int]:
        totals: Counter[str] = Counter()
        for stats in self.ops:
            totals.update(dict(stats.compute))
        return {kind: totals[kind] for kind in COMPUTE_KINDS if totals[kind]}

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema_version": self.schema_version,
            "description": self.description,
            "subgraphs": [{"name": name, "ops": count} for name, count in self.subgraphs],
            "ops": [stats.to_dict() for stats in self.ops],
            "compute": self.compute_totals(),
            "weight_bytes": dict(self.weight_bytes),
            "metadata": dict(self.metadata),
        }


def read_flatbuffer(tflite_path: str) -> FlatbufferSummary:
    """Parse a ``.tflite`` flatbuffer with the schema shipped in ``ai_edge_litert``.

    Returns a FlatbufferSummary. Raises ModelLoadError for a missing file, InterpreterError for a file that is not a
    TFLite flatbuffer or is truncated.
    """
    if not os.path.isfile(tflite_path):
        raise ModelLoadError(f"{tflite_path}: no such file")
    with open(tflite_path, "rb") as stream:
        content = stream.read()
    from ai_edge_litert import schema_py_generated as schema

    if len(content) < 8 or not schema.Model.ModelBufferHasIdentifier(content, 0):
        raise InterpreterError(f"{tflite_path}: not a TFLite flatbuffer (no 'TFL3' identifier)")
    try:
        return _summarize(schema, schema.Model.GetRootAs(content, 0), content)
    except (struct.error, IndexError, ValueError, UnicodeDecodeError) as error:
        raise InterpreterError(
            f"{tflite_path}: corrupt or truncated TFLite flatbuffer ({len(content)} bytes; {type(error).__name__})"
        ) from None


def _summarize(schema: Any, model: Any, content: bytes) -> FlatbufferSummary:
    type_names = {value: name.lower() for name, value in vars(schema.TensorType).items() if not name.startswith("_")}
    op_names = {value: name for name, value in vars(schema.BuiltinOperator).items() if not name.startswith("_")}
    buffer_sizes = [_buffer_size(model.Buffers(position)) for position in range(model.BuffersLength())]

    def op_type_of(opcode_index: int) -> str:
        opcode = model.OperatorCodes(opcode_index)
        code = max(opcode.BuiltinCode(), opcode.DeprecatedBuiltinCode())
        if code == schema.BuiltinOperator.CUSTOM:
            return "CUSTOM:" + (opcode.CustomCode() or b"?").decode()
        return op_names.get(code, f"OP_{code}")

    op_counts: Counter[str] = Counter()
    compute_counts: dict[str, Counter[str]] = {}
    subgraphs = []
    weight_bytes: Counter[str] = Counter()
    counted_buffers: set[int] = set()
    for subgraph_position in range(model.SubgraphsLength()):
        subgraph = model.Subgraphs(subgraph_position)
        tensors = [subgraph.Tensors(position) for position in range(subgraph.TensorsLength())]
        tensor_types = [type_names.get(tensor.Type(), f"type_{tensor.Type()}") for tensor in tensors]
        constant = [0 < tensor.Buffer() < len(buffer_sizes) and buffer_sizes[tensor.Buffer()] > 0 for tensor in tensors]
        for tensor, tensor_type, is_constant in zip(tensors, tensor_types, constant):
            if is_constant and tensor.Buffer() not in counted_buffers:
                counted_buffers.add(tensor.Buffer())
                weight_bytes[tensor_type] += buffer_sizes[tensor.Buffer()]
        for position in range(subgraph.OperatorsLength()):
            operator = subgraph.Operators(position)
            op_type = op_type_of(operator.OpcodeIndex())
            op_counts[op_type] += 1
            used = [int(index) for index in operator.InputsAsNumpy()] if operator.InputsLength() else []
            produced = [int(index) for index in operator.OutputsAsNumpy()] if operator.OutputsLength() else []
            kind = _compute_kind(
                activations=[tensor_types[index] for index in used + produced if index >= 0 and not constant[index]],
                weights=[tensor_types[index] for index in used if index >= 0 and constant[index]],
            )
            compute_counts.setdefault(op_type, Counter())[kind] += 1
        name = (subgraph.Name() or b"").decode() or f"subgraph_{subgraph_position}"
        subgraphs.append((name, subgraph.OperatorsLength()))
    ops = tuple(
        OpTypeStats(
            op_type,
            count,
            tuple((kind, compute_counts[op_type][kind]) for kind in COMPUTE_KINDS if compute_counts[op_type][kind]),
        )
        for op_type, count in sorted(op_counts.items(), key=lambda item: (-item[1], item[0]))
    )
    metadata = []
    for position in range(model.MetadataLength()):
        entry = model.Metadata(position)
        name = (entry.Name() or b"").decode()
        buffer = model.Buffers(entry.Buffer())
        raw = buffer.DataAsNumpy().tobytes() if buffer.DataLength() else b""
        metadata.append((name, _decode_metadata(name, raw)))
    return FlatbufferSummary(
        schema_version=model.Version(),
        description=(model.Description() or b"").decode(errors="replace"),
        subgraphs=tuple(subgraphs),
        ops=ops,
        weight_bytes=tuple(sorted(weight_bytes.items(), key=lambda item: -item[1])),
        metadata=tuple(metadata),
    )


def _buffer_size(buffer: Any) -> int:
    if buffer.Offset() > 1:  # models over 2 GB keep buffers after the flatbuffer
        return int(buffer.Size())
    return int(buffer.DataLength())


def _compute_kind(*, activations: list[str], weights: list[str]) -> str:
    # int32/int64/bool tensors next to data tensors are shapes, indices or masks: they do not make an op "integer".
    activations = [dtype for dtype in activations if dtype not in INDEX_DTYPES] or activations
    float_activations = any(dtype in FLOAT_DTYPES for dtype in activations)
    integer_activations = any(dtype not in FLOAT_DTYPES for dtype in activations)
    if float_activations and integer_activations:
        return "mixed"
    if float_activations or (not activations and any(dtype in FLOAT_DTYPES for dtype in weights)):
        if any(dtype in QUANTIZED_DTYPES or dtype in ("int4", "int2") for dtype in weights):
            return "hybrid"
        return "float"
    return "integer"


def _decode_metadata(name: str, raw: bytes) -> Any:
    if name == "min_runtime_version":
        return raw.split(b"\0", 1)[0].decode(errors="replace")
    if name == "CONVERSION_METADATA":
        try:
            return _decode_conversion_metadata(raw)
        except (struct.error, IndexError, UnicodeDecodeError):
            return {"bytes": len(raw)}
    printable = raw.rstrip(b"\0")
    if printable and all(32 <= byte < 127 for byte in printable) and len(printable) <= 200:
        return printable.decode()
    return {"bytes": len(raw)}


_MODEL_TYPES = {0: "NONE", 1: "TF_SAVED_MODEL", 2: "KERAS_MODEL", 3: "TF_CONCRETE_FUNCTIONS", 4: "TF_GRAPH_DEF",
                5: "TF_SESSION", 6: "JAX", 7: "PYTORCH"}
_OPTIMIZATION_MODES = {1001: "PTQ_FLOAT16", 1002: "PTQ_DYNAMIC_RANGE", 1003: "PTQ_FULL_INTEGER", 1004: "PTQ_INT16",
                       2000: "QUANTIZATION_AWARE_TRAINING", 3001: "RANDOM_SPARSITY", 3002: "BLOCK_SPARSITY",
                       3003: "STRUCTURED_SPARSITY"}


def _decode_conversion_metadata(raw: bytes) -> dict[str, Any]:
    """Decode TensorFlow's ``conversion_metadata.fbs`` (the generated reader lives inside the tensorflow package,
    whose import would load all of TensorFlow; the table is small enough to read directly)."""
    from flatbuffers import number_types, table
    from flatbuffers.encode import Get

    def root(buffer: bytes) -> table.Table:
        return table.Table(buffer, Get(number_types.UOffsetTFlags.packer_type, buffer, 0))

    def field(tab: table.Table, slot: int) -> int:
        return int(number_types.UOffsetTFlags.py_type(tab.Offset(4 + 2 * slot)))

    def subtable(tab: table.Table, slot: int) -> table.Table | None:
        offset = field(tab, slot)
        return table.Table(tab.Bytes, tab.Indirect(offset + tab.Pos)) if offset else None

    def scalar(tab: table.Table, slot: int, flags: Any, default: Any) -> Any:
        offset = field(tab, slot)
        return tab.Get(flags, offset + tab.Pos) if offset else default

    result: dict[str, Any] = {}
    metadata = root(raw)
    environment = subtable(metadata, 0)
    if environment is not None:
        version_offset = field(environment, 0)
        result["tensorflow_version"] = environment.String(version_offset + environment.Pos).decode() if version_offset else None
        result["api_version"] = scalar(environment, 1, number_types.Uint32Flags, 0)
        result["model_type"] = _MODEL_TYPES.get(scalar(environment, 2, number_types.Int32Flags, 0), "UNKNOWN")
    options = subtable(metadata, 1)
    if options is not None:
        modes_offset = field(options, 0)
        modes = []
        if modes_offset:
            start = options.Vector(modes_offset)
            for position in range(options.VectorLen(modes_offset)):
                code = options.Get(number_types.Int32Flags, start + 4 * position)
                modes.append(_OPTIMIZATION_MODES.get(code, str(code)))
        result["optimization_modes"] = modes
        result["allow_custom_ops"] = bool(scalar(options, 1, number_types.BoolFlags, False))
        result["enable_select_tf_ops"] = bool(scalar(options, 2, number_types.BoolFlags, False))
        result["force_select_tf_ops"] = bool(scalar(options, 3, number_types.BoolFlags, False))
    return result


def flatbuffer_tensor_specs(tflite_path: str) -> tuple[tuple[TensorSpec, ...], tuple[TensorSpec, ...]] | None:
    """The data layer's specs (inputs, outputs) of the signature :func:`read_signature` picks, read from the file
    without loading it in the interpreter (pure Python, so it cannot crash). None when the file cannot be read or
    its signature is not on the primary subgraph; the interpreter's view is then the only one."""
    try:
        with open(tflite_path, "rb") as stream:
            content = stream.read()
        from ai_edge_litert import schema_py_generated as schema

        if len(content) < 8 or not schema.Model.ModelBufferHasIdentifier(content, 0):
            return None
        model = schema.Model.GetRootAs(content, 0)
        type_names = {value: name.lower() for name, value in vars(schema.TensorType).items() if not name.startswith("_")}
        subgraph = model.Subgraphs(0)

        def spec(name: str, index: int) -> TensorSpec:
            tensor = subgraph.Tensors(index)
            if tensor.ShapeSignatureLength():
                dims = tensor.ShapeSignatureAsNumpy()
            else:
                dims = tensor.ShapeAsNumpy() if tensor.ShapeLength() else []
            shape = tuple(None if int(dim) < 0 else int(dim) for dim in dims)
            dtype = type_names.get(tensor.Type(), "unknown")
            quantization = tensor.Quantization()
            quantized = (
                dtype in QUANTIZED_DTYPES and quantization is not None and quantization.ScaleLength() > 0
                and quantization.Scale(0) != 0.0
            )
            return TensorSpec(name, shape, "float32" if quantized else dtype)

        signatures = {
            (model.SignatureDefs(position).SignatureKey() or b"").decode(): model.SignatureDefs(position)
            for position in range(model.SignatureDefsLength())
        }
        if not signatures:
            inputs = [(subgraph.Tensors(int(i)).Name().decode(), int(i)) for i in subgraph.InputsAsNumpy()]
            outputs = [(subgraph.Tensors(int(i)).Name().decode(), int(i)) for i in subgraph.OutputsAsNumpy()]
            return tuple(spec(*pair) for pair in inputs), tuple(spec(*pair) for pair in outputs)
        key = "serving_default" if "serving_default" in signatures else sorted(signatures)[0]
        signature = signatures[key]
        if signature.SubgraphIndex() != 0:
            return None
        inputs_by_name = {
            signature.Inputs(j).Name().decode(): signature.Inputs(j).TensorIndex() for j in range(signature.InputsLength())
        }
        outputs_by_name = {
            signature.Outputs(j).Name().decode(): signature.Outputs(j).TensorIndex() for j in range(signature.OutputsLength())
        }
        return (
            tuple(spec(name, inputs_by_name[name]) for name in _ordered(inputs_by_name)),
            tuple(spec(name, outputs_by_name[name]) for name in _ordered(outputs_by_name)),
        )
    except (OSError, struct.error, IndexError, ValueError, UnicodeDecodeError, AttributeError):
        return None


def is_float_model(summary: FlatbufferSummary) -> bool:
    """True for a plain float32 model: every constant tensor is float32 (or int32/int64 shape data), no quantized
    or float16 weights. Such a model is the natural baseline of the others."""
    return all(dtype not in QUANTIZED_DTYPES + ("float16", "int4", "int2") for dtype, _ in summary.weight_bytes)


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
        return {
            "path": self.tflite_path,
            "name": os.path.basename(self.tflite_path),
            "size_bytes": self.size_bytes,
            **signature,
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
    from tflq.isolation import call_isolated

    contents = read_flatbuffer(tflite_path)
    signature = delegation = error = None
    try:
        signature, delegation = call_isolated(
            interpreter_view, tflite_path, threads, use_xnnpack, description=tflite_path, start_method=start_method
        )
    except InterpreterError as failure:
        error = str(failure)
    return Inspection(tflite_path, os.path.getsize(tflite_path), contents, signature, delegation, error)


def interpreter_view(tflite_path: str, threads: int, use_xnnpack: bool, *, report: Any = None) -> tuple[Signature, Delegation]:
    """Signature and delegation of a ``.tflite`` (loads and allocates it in this process)."""
    interpreter = open_interpreter(tflite_path, threads=threads, use_xnnpack=use_xnnpack)
    allocate(interpreter, tflite_path)
    return read_signature(interpreter, tflite_path), delegation_of(interpreter, enabled=use_xnnpack)
