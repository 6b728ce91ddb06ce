"""What a ``.tflite`` flatbuffer says about itself, read with the schema that ships with ``ai_edge_litert`` (pure
Python, TensorFlow is not imported, nothing can crash the process): op histogram, float/integer compute per op,
weight bytes by dtype, the converter's metadata, and the tensor specs of the signature tflq runs.

A corrupt file gives InterpreterError (or None from :func:`flatbuffer_tensor_specs`), never another exception: every
walk over the flatbuffer goes through :func:`_guarded`, which turns what the generated reader raises on bad offsets
into one error naming the file.
"""
from __future__ import annotations

import os
import struct
from collections import Counter
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from tflq.errors import InterpreterError, ModelLoadError
from tflq.model.load import TensorSpec

if TYPE_CHECKING:
    from types import ModuleType

    from ai_edge_litert.schema_py_generated import Model

QUANTIZED_DTYPES = ("int8", "uint8", "int16")
FLOAT_DTYPES = ("float32", "float16", "float64", "bfloat16")
INDEX_DTYPES = ("int32", "int64", "bool")

def signature_order(details: dict[str, Any]) -> list[str]:
    """Signature names in an order that is the same for every variant of a model: by name, with numbered names
    (``output_2`` before ``output_10``) in number order. (Tensor indices differ between variants.)"""

    def sort_key(name: str) -> tuple[Any, ...]:
        prefix, _, number = name.rpartition("_")
        if prefix and number.isdigit():
            return (prefix, int(number), name)
        return (name, -1, name)

    return sorted(details, key=sort_key)



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


# What the generated flatbuffer reader raises on bad offsets and lengths: struct.error / IndexError (read past the
# end), TypeError (an offset outside uint32, from flatbuffers' enforce_number), AttributeError (a missing table read
# as None), ValueError / OverflowError (a negative or huge length for numpy), UnicodeDecodeError (a name).
FLATBUFFER_READ_ERRORS = (
    struct.error, IndexError, TypeError, AttributeError, ValueError, OverflowError, UnicodeDecodeError,
)


def check_model_file(tflite_path: str) -> None:
    """Raise ModelLoadError unless ``tflite_path`` is an existing regular file (not a directory, FIFO or device)."""
    import stat

    try:
        mode = os.stat(tflite_path).st_mode
    except FileNotFoundError:
        raise ModelLoadError(f"{tflite_path}: no such file") from None
    except OSError as error:
        raise ModelLoadError(f"{tflite_path}: cannot read ({error.strerror})") from None
    if stat.S_ISDIR(mode):
        raise ModelLoadError(f"{tflite_path}: is a directory, not a .tflite file")
    if not stat.S_ISREG(mode):
        raise ModelLoadError(
            f"{tflite_path}: is not a regular file (a FIFO, socket or device); expected a .tflite file"
        )


def read_model_bytes(tflite_path: str) -> bytes:
    """The bytes of a ``.tflite`` file, with one-line errors for what is not a readable, non-empty regular file.

    Never opens a FIFO or device (which could block). Raises ModelLoadError (missing, a directory, not a regular
    file, unreadable) or InterpreterError (empty, or no TFLite identifier).
    """
    check_model_file(tflite_path)
    try:
        with open(tflite_path, "rb") as stream:
            content = stream.read()
    except OSError as error:
        raise ModelLoadError(f"{tflite_path}: cannot read ({error.strerror})") from None
    if not content:
        raise InterpreterError(f"{tflite_path}: empty file (0 bytes); expected a TFLite flatbuffer")
    from ai_edge_litert import schema_py_generated as schema

    if len(content) < 8 or not schema.Model.ModelBufferHasIdentifier(content, 0):
        raise InterpreterError(f"{tflite_path}: not a TFLite flatbuffer (no 'TFL3' identifier)")
    return content


def read_flatbuffer(tflite_path: str) -> FlatbufferSummary:
    """Parse a ``.tflite`` flatbuffer with the schema shipped in ``ai_edge_litert``.

    Returns a FlatbufferSummary. Raises ModelLoadError for a missing file or one that is not a regular file,
    InterpreterError for a file that is empty, not a TFLite flatbuffer, truncated or corrupt.
    """
    content = read_model_bytes(tflite_path)
    from ai_edge_litert import schema_py_generated as schema

    try:
        return _summarize(schema, schema.Model.GetRootAs(content, 0), content)
    except FLATBUFFER_READ_ERRORS as error:
        raise InterpreterError(corrupt_message(tflite_path, content, error)) from None


def corrupt_message(tflite_path: str, content: bytes, error: BaseException) -> str:
    if isinstance(error, (struct.error, IndexError)):
        reason = "a read past the end of the file"
    elif isinstance(error, UnicodeDecodeError):
        reason = "a name that is not UTF-8"
    elif isinstance(error, AttributeError):
        reason = "a required table is missing"
    else:
        reason = "an offset or length out of range"
    return f"{tflite_path}: corrupt or truncated TFLite flatbuffer ({len(content)} bytes; {reason})"


def _summarize(schema: ModuleType, model: Model, content: bytes) -> FlatbufferSummary:
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
        for tensor, tensor_type, is_constant in zip(tensors, tensor_types, constant, strict=True):
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
        except FLATBUFFER_READ_ERRORS:
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
        version = environment.String(version_offset + environment.Pos).decode() if version_offset else None
        result["tensorflow_version"] = version
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


@dataclass(frozen=True)
class FlatbufferTensor:
    """An input or output as the flatbuffer declares it (the fields of ``tflite_info.TensorInfo``)."""

    name: str  # SignatureDef name, or the tensor name when the model has no SignatureDef
    tensor_name: str
    index: int
    shape: tuple[int | None, ...]
    dtype: str
    scales: tuple[float, ...]
    zero_points: tuple[int, ...]

    @property
    def logical_dtype(self) -> str:
        quantized = self.dtype in QUANTIZED_DTYPES and len(self.scales) > 0 and self.scales[0] != 0.0
        return "float32" if quantized else self.dtype


@dataclass(frozen=True)
class FlatbufferSignature:
    """The inputs and outputs tflq runs, from the file: ``serving_default`` or the only SignatureDef, else (``key``
    None) the primary subgraph's inputs and outputs in their declared order."""

    key: str | None
    inputs: tuple[FlatbufferTensor, ...]
    outputs: tuple[FlatbufferTensor, ...]


def flatbuffer_signature(tflite_path: str) -> FlatbufferSignature | None:
    """The signature :func:`tflite_info.read_signature` picks, read from the file without loading it in the
    interpreter (pure Python, so it cannot crash). None when the file cannot be read, is corrupt, or its signature
    is not on the primary subgraph."""
    try:
        content = read_model_bytes(tflite_path)
    except (ModelLoadError, InterpreterError):
        return None
    from ai_edge_litert import schema_py_generated as schema

    try:
        return _signature_of(schema, schema.Model.GetRootAs(content, 0))
    except FLATBUFFER_READ_ERRORS + (KeyError,):
        return None


def _signature_of(schema: ModuleType, model: Model) -> FlatbufferSignature | None:
    type_names = {value: name.lower() for name, value in vars(schema.TensorType).items() if not name.startswith("_")}
    subgraph = model.Subgraphs(0)

    def tensor_of(name: str | None, index: int) -> FlatbufferTensor:
        tensor = subgraph.Tensors(index)
        if tensor.ShapeSignatureLength():
            dims = tensor.ShapeSignatureAsNumpy()
        else:
            dims = tensor.ShapeAsNumpy() if tensor.ShapeLength() else []
        quantization = tensor.Quantization()
        scales: tuple[float, ...] = ()
        zero_points: tuple[int, ...] = ()
        if quantization is not None and quantization.ScaleLength():
            scales = tuple(float(value) for value in quantization.ScaleAsNumpy())
            if quantization.ZeroPointLength():
                zero_points = tuple(int(value) for value in quantization.ZeroPointAsNumpy())
        tensor_name = (tensor.Name() or b"").decode()
        return FlatbufferTensor(
            name=name if name is not None else tensor_name,
            tensor_name=tensor_name,
            index=int(index),
            shape=tuple(None if int(dim) < 0 else int(dim) for dim in dims),
            dtype=type_names.get(tensor.Type(), "unknown"),
            scales=scales,
            zero_points=zero_points or tuple(0 for _ in scales),
        )

    signatures = {
        (model.SignatureDefs(position).SignatureKey() or b"").decode(): model.SignatureDefs(position)
        for position in range(model.SignatureDefsLength())
    }
    if not signatures:
        inputs = subgraph.InputsAsNumpy() if subgraph.InputsLength() else []
        outputs = subgraph.OutputsAsNumpy() if subgraph.OutputsLength() else []
        return FlatbufferSignature(
            None, tuple(tensor_of(None, int(i)) for i in inputs), tuple(tensor_of(None, int(i)) for i in outputs)
        )
    key = "serving_default" if "serving_default" in signatures else sorted(signatures)[0]
    signature = signatures[key]
    if signature.SubgraphIndex() != 0:
        return None
    inputs_by_name = {
        signature.Inputs(j).Name().decode(): signature.Inputs(j).TensorIndex() for j in range(signature.InputsLength())
    }
    outputs_by_name = {
        signature.Outputs(j).Name().decode(): signature.Outputs(j).TensorIndex()
        for j in range(signature.OutputsLength())
    }
    return FlatbufferSignature(
        key,
        tuple(tensor_of(name, inputs_by_name[name]) for name in signature_order(inputs_by_name)),
        tuple(tensor_of(name, outputs_by_name[name]) for name in signature_order(outputs_by_name)),
    )


def flatbuffer_tensor_specs(tflite_path: str) -> tuple[tuple[TensorSpec, ...], tuple[TensorSpec, ...]] | None:
    """The data layer's specs (inputs, outputs) of :func:`flatbuffer_signature`, or None."""
    signature = flatbuffer_signature(tflite_path)
    if signature is None:
        return None
    return (
        tuple(TensorSpec(tensor.name, tensor.shape, tensor.logical_dtype) for tensor in signature.inputs),
        tuple(TensorSpec(tensor.name, tensor.shape, tensor.logical_dtype) for tensor in signature.outputs),
    )


def is_float_model(summary: FlatbufferSummary) -> bool:
    """True for a plain float32 model: every constant tensor is float32 (or int32/int64 shape data), no quantized
    or float16 weights. Such a model is the natural baseline of the others."""
    return all(dtype not in QUANTIZED_DTYPES + ("float16", "int4", "int2") for dtype, _ in summary.weight_bytes)
