"""The one-line messages of a failed integer conversion: what failed, where it comes from in the Keras model, the fix.

* strict int8/16x8: ops left without an integer kernel are grouped by op type, with their count and the Keras layers
  they compute (``SIN x4 (layers: sine_a, sine_b)``), never the TensorFlow scope name of each;
* an op fed directly by an integer model input (token ids cast to float) names that input as the cause;
* 16x8 "not yet supported for op" suggests ``--allow-float-fallback``;
* "Empty min/max" for an integer model input says the input cannot be calibrated.
"""
from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

import numpy as np

from tflq._tf import imports as _tf
from tflq.convert.layer_map import read_ops
from tflq.model.load import ExportedModel

_SHOWN_LAYERS = 4
_EMPTY_RANGE = re.compile(r"Empty min/max for tensor (\S+?)(?::\d+)?$")
_NOT_SUPPORTED = re.compile(r"not yet supported for op: '([A-Z0-9_]+)'")


def _shown(names: Sequence[str]) -> str:
    return ", ".join(names[:_SHOWN_LAYERS]) + (", ..." if len(names) > _SHOWN_LAYERS else "")


def no_kernel_message(
    label: str,
    activations: str,
    content: bytes,
    exported: ExportedModel,
    unexpected: Sequence[tuple[str, str]],
    *,
    besides_asked: bool,
    skip_layers_applies: bool,
    skipped_layers: Sequence[str] = (),
    relabel: Mapping[str, tuple[str, ...]] | None = None,
) -> str:
    """``int8: 4 op(s) have no int8 kernel: SIN x4 (layers: sine_a, sine_b) -- pass ...``.

    ``unexpected``: (op type, output tensor name) of each op left in float that nobody asked for, in model order.
    ``skipped_layers``: the ``--skip-layers`` already given (kept in the suggested ``--skip-layers``).
    """
    by_tensor = {op.tensor: op for op in read_ops(content, exported, relabel)}
    counts: dict[str, int] = {}
    layers: dict[str, dict[str, None]] = {}
    all_layers: dict[str, None] = {}
    for op_type, tensor in unexpected:
        counts[op_type] = counts.get(op_type, 0) + 1
        op = by_tensor.get(tensor)
        for layer in op.layers if op is not None else ():
            layers.setdefault(op_type, {})[layer] = None
            all_layers[layer] = None
    groups = ", ".join(
        f"{op_type} x{count}" + (f" (layers: {_shown(list(layers[op_type]))})" if layers.get(op_type) else "")
        for op_type, count in counts.items()
    )
    causes = _integer_inputs_feeding(content, {tensor for _, tensor in unexpected}, exported)
    cause = (
        f"; the integer model input(s) {', '.join(causes)} (token ids or indices?) feed them and cannot be "
        "calibrated"
        if causes else ""
    )
    also = " besides the ones asked for" if besides_asked else ""
    fix = "pass --allow-float-fallback to keep them in float"
    if skip_layers_applies and all_layers:
        suggested = list(dict.fromkeys([*skipped_layers, *all_layers]))  # the ones already asked for stay asked
        fix += f", or --skip-layers {','.join(suggested[:_SHOWN_LAYERS * 2])} to keep just those layers in float"
    return f"{label}: {len(unexpected)} op(s){also} have no {activations} kernel: {groups}{cause} -- {fix}"


def _integer_inputs_feeding(content: bytes, tensors: set[str], exported: ExportedModel) -> list[str]:
    """The integer model inputs that feed one of the ops whose output tensor is in ``tensors``, by signature name."""
    from ai_edge_litert.interpreter import Interpreter

    with _tf.quiet():
        interpreter = Interpreter(model_content=content)
    signatures = interpreter.get_signature_list()
    if not signatures:
        return []
    runner = interpreter.get_signature_runner(next(iter(signatures)))
    by_index = {
        detail["index"]: name for name, detail in runner.get_input_details().items()
        if np.dtype(detail["dtype"]).kind in "iu" and _declared_integer(name, exported)
    }
    details = {detail["index"]: detail for detail in interpreter.get_tensor_details()}
    found: dict[str, None] = {}
    for op in interpreter._get_ops_details():
        outputs = [details[index]["name"] for index in op["outputs"] if index in details]
        if outputs and outputs[0] in tensors:
            for index in op["inputs"]:
                if index in by_index:
                    found[repr(by_index[index])] = None
    return list(found)


def _declared_integer(name: str, exported: ExportedModel) -> bool:
    """Whether the source model declares input ``name`` as an integer (not an int8 I/O type of a float input)."""
    return any(spec.name == name and np.dtype(spec.dtype).kind in "iub" for spec in exported.inputs)


def explain_converter_error(label: str, detail: str, exported: ExportedModel | None) -> str:
    """The one line for a converter failure ``detail``, with the cause and fix when tflq knows them."""
    empty = _EMPTY_RANGE.search(detail)
    if empty and exported is not None:
        tensor = empty.group(1)
        for spec in exported.inputs:
            if tensor in (spec.name, f"serving_default_{spec.name}") and np.dtype(spec.dtype).kind in "iub":
                mode = label.split(".")[0]
                others = "mode int8 or dynamic" if mode == "16x8" else "mode dynamic"
                return (
                    f"{label}: model input {spec.name!r} is {spec.dtype} (token ids or indices?) and cannot be "
                    f"calibrated: the {mode} quantizer needs a float range for it ({detail}) -- use {others} for "
                    "this model"
                )
    unsupported = _NOT_SUPPORTED.search(detail)
    if unsupported:
        return (
            f"{label}: op {unsupported.group(1)} has no {label.split('.')[0]} kernel ({detail}) "
            "-- pass --allow-float-fallback to keep such ops in float"
        )
    return f"{label}: the converter failed: {detail}"
