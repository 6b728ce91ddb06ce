"""Per-op rules added to a LiteRT Quantizer recipe: ops kept in float, ops kept at a higher precision, and the check
that the quantized model really has them so.

How LiteRT Quantizer 0.11 reads a recipe (``recipe_manager.RecipeManager.get_quantization_configs``): the entries
are grouped by their ``regex`` in the order they were added, an op matches an entry when ``re.search(regex,
scope)`` finds its *scope* (its output tensor names joined with ``;``, plus a trailing ``;``) and the entry's
``operation`` is ``*`` or the op's type, and when several entries match **the last one wins**. Entries with the
same ``regex`` replace each other (``*``) or are merged per operation, so every rule here has a regex of its own:
``^<escaped output tensor name>;``, which matches exactly one op. The rules are appended after the recipe's own
entries, precision rules first and float rules last, so "keep in float" beats everything.

Nothing outside ``tflq/_tf/`` imports ``litert_quantizer``, and this module imports it only inside its functions.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from tflq.errors import ConversionError

Recipe = list[dict[str, Any]]

#: the precisions a layer can be kept at: float (no quantization), int8 weights (where the rest is int4), int16
#: activations with int8 weights (where the rest has int8 activations)
PRECISIONS: tuple[str, ...] = ("float", "int8", "16x8")
_BOUNDARY = {"QUANTIZE", "DEQUANTIZE"}


def scope_regex(tensor: str) -> str:
    """The regex matching exactly the op whose (first) output tensor is ``tensor``."""
    return "^" + re.escape(tensor) + ";"


def with_rules(
    recipe: Sequence[dict[str, Any]],
    float_tensors: Iterable[str] = (),
    precisions: Iterable[tuple[str, str]] = (),
) -> Recipe:
    """``recipe`` with one entry per op: ``precisions`` (output tensor, precision) first, then ``float_tensors``
    kept in float (``no_quantize``), so a float rule wins over a precision rule for the same op.

    A precision rule copies the recipe's first entry (the ``.*`` rule tflq's named recipes start with) and raises
    its weights to 8 bits (channelwise: int8 weights take no blocks) or its activations to 16 bits (symmetric, as
    int16 requires) with 8-bit weights. Raises ValueError for a precision the recipe cannot express (int16
    activations in a recipe without quantized activations)."""
    rules = [dict(entry) for entry in recipe]
    base = recipe[0] if recipe else None
    for tensor, precision in precisions:
        if precision == "float":
            rules.append(_no_quantize(tensor))
            continue
        if base is None or "op_config" not in base:
            raise ValueError("a precision rule needs a recipe with a quantizing first entry")
        rules.append(_raised(base, tensor, precision))
    rules.extend(_no_quantize(tensor) for tensor in float_tensors)
    return rules


def _no_quantize(tensor: str) -> dict[str, Any]:
    return {"regex": scope_regex(tensor), "operation": "*", "algorithm_key": "no_quantize"}


def _raised(base: dict[str, Any], tensor: str, precision: str) -> dict[str, Any]:
    config = copy.deepcopy(dict(base["op_config"]))
    weights = dict(config.get("weight_tensor_config") or {})
    weights.update(num_bits=8, granularity="CHANNELWISE")
    config["weight_tensor_config"] = weights
    if precision == "16x8":
        activations = config.get("activation_tensor_config")
        if not activations:
            raise ValueError("int16 activations need a recipe that quantizes activations (a calibrated mode)")
        config["activation_tensor_config"] = dict(activations, num_bits=16, symmetric=True)
    elif precision != "int8":
        raise ValueError(f"unknown precision {precision!r}; expected one of {', '.join(PRECISIONS)}")
    algorithm = base.get("algorithm_key", "min_max_uniform_quantize")
    if str(getattr(algorithm, "value", algorithm)) == "decomposed_hadamard_rotation":
        algorithm = "min_max_uniform_quantize"  # the rotation is for low-bit weights; int8 needs none
    return {"regex": scope_regex(tensor), "operation": "*", "algorithm_key": algorithm, "op_config": config}


@dataclass(frozen=True)
class OpPrecision:
    """What one op of a quantized model computes with: its weights' type (None: no constant weights) and the type
    of its output."""

    op_type: str
    tensor: str
    weights: str | None  # "float32", "int8", "int4", ...
    output: str


def op_precisions(content: bytes) -> dict[str, OpPrecision]:
    """Every op of ``content`` but QUANTIZE/DEQUANTIZE, by its first output tensor's name.

    The weights are the op's largest constant input, or the constant a DEQUANTIZE op turns into that input (how a
    weight-only model keeps its int8/int4 weights); their type is the flatbuffer's (the interpreter reports int4
    tensors as int8)."""
    from ai_edge_litert import schema_py_generated as schema
    from litert_quantizer.utils import tfl_flatbuffer_utils as fb

    type_names = {value: name.lower() for name, value in vars(schema.TensorType).items() if name.isupper()}
    op_names = {value: name for name, value in vars(schema.BuiltinOperator).items() if name.isupper()}
    model = fb.read_model(bytearray(content))
    found: dict[str, OpPrecision] = {}
    for subgraph in model.subgraphs:
        tensors = subgraph.tensors
        producer: dict[int, Any] = {}
        codes: list[str] = []
        for op in subgraph.operators:
            code = model.operatorCodes[op.opcodeIndex]
            codes.append(op_names.get(max(code.builtinCode, code.deprecatedBuiltinCode), "CUSTOM"))
            for index in op.outputs:
                producer[index] = (op, codes[-1])

        for op, op_type in zip(subgraph.operators, codes, strict=True):
            if op_type in _BOUNDARY or not len(op.outputs):
                continue
            output = tensors[op.outputs[0]]
            constants = (_constant(model, tensors, producer, index) for index in op.inputs)
            weights = [tensor for tensor in constants if tensor is not None]
            largest = max(weights, key=lambda tensor: int(_size(tensor.shape)), default=None)
            name = _name(output.name)
            found.setdefault(
                name,
                OpPrecision(
                    op_type=op_type,
                    tensor=name,
                    weights=type_names.get(largest.type, str(largest.type)) if largest is not None else None,
                    output=type_names.get(output.type, str(output.type)),
                ),
            )
    return found


def _constant(model: Any, tensors: Any, producer: dict[int, Any], index: int) -> Any:
    """The constant tensor at ``index``, or the constant a DEQUANTIZE op turns into it; None for an activation."""
    if index < 0:
        return None
    tensor = tensors[index]
    data = model.buffers[tensor.buffer].data if tensor.buffer < len(model.buffers) else None
    if data is not None and len(data):
        return tensor
    made = producer.get(index)
    if made is not None and made[1] == "DEQUANTIZE" and len(made[0].inputs):
        return _constant(model, tensors, producer, made[0].inputs[0])
    return None


def _size(shape: Any) -> int:
    total = 1
    for dim in list(shape) if shape is not None else []:
        total *= max(int(dim), 1)
    return total


def _name(raw: Any) -> str:
    return raw.decode("utf-8") if isinstance(raw, bytes) else str(raw)


def check_applied(
    content: bytes,
    float_tensors: Sequence[str] = (),
    precisions: Sequence[tuple[str, str]] = (),
    labels: dict[str, str] | None = None,
) -> None:
    """Raise ConversionError (one line, naming the ops) unless every op of ``float_tensors`` kept float weights and
    a float output, and every op of ``precisions`` got what was asked: ``int8`` weights, or ``16x8`` (int16
    output, int8 weights). ``labels``: how to name an op (its Keras layers) by its tensor."""
    ops = op_precisions(content)
    wrong: list[str] = []
    asked = [(tensor, "float") for tensor in float_tensors] + [pair for pair in precisions]
    for tensor, precision in asked:
        op = ops.get(tensor)
        name = (labels or {}).get(tensor, tensor)
        if op is None:
            wrong.append(f"{name}: no such op in the quantized model")
            continue
        got = _describe(op)
        if precision == "float":
            ok = op.weights in (None, "float32") and op.output == "float32"
        elif precision == "int8":
            ok = op.weights in (None, "int8")
        else:
            ok = op.output == "int16" and op.weights in (None, "int8")
        if not ok:
            wrong.append(f"{op.op_type}({name}) has {got}, {precision} was asked")
    if wrong:
        raise ConversionError(f"LiteRT Quantizer did not apply the per-layer precision: {'; '.join(wrong)}")


def _describe(op: OpPrecision) -> str:
    weights = f"{op.weights} weights" if op.weights else "no weights"
    return f"{weights} and a {op.output} output"
