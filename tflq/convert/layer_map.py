"""Name the ops of a converted model after the Keras layers they compute, and turn layer/op names into node lists.

TensorFlow names every graph op after the name scopes it was built in, and a Keras layer opens a scope named after
itself, so the SavedModel export's op names carry the layer path (``digits_cnn_1/conv1_1/convolution``). The TFLite
converter keeps those names as tensor names. When it fuses ops (Conv2D + BiasAdd + BatchNorm + ReLU into one
CONV_2D), the output tensor's name joins the fused ops' names with ``;``. This module reads those names back:

* each ``;``-separated part is a scope path. Its components are matched against the model's layers, outermost
  first, and a nested model's layers are looked up under its name;
* TensorFlow makes scope names unique with a ``_<n>`` suffix (``conv1_1``). Keras 3 exports carry a suffix on every
  scope, tf_keras exports carry none. Which style a model uses is decided once per model: if some scope matches a
  layer only after its suffix is dropped, the model uses the suffixed style. A scope ``dense_1`` is then the layer
  ``dense`` in the suffixed style, and the layer ``dense_1`` in the plain style;
* an op whose output tensor carries no layer scope is named by its constant inputs (weights, bias). A model output
  is named ``StatefulPartitionedCall:0``, for example. Failing that, the op is named by the signature output name,
  when that name is a layer's name.

A fused op is named by all its layers, in model order (``dwconv2+bn2+relu2``). Layers with no op of their own
(InputLayer, Dropout, an activation fused into the previous op) never name an op alone.

Without a Keras layer list (a SavedModel directory), layers are named by their TF name scope without the ``_<n>``
suffix, on a best-effort basis.
"""
from __future__ import annotations

import difflib
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from tflq._tf import imports as _tf
from tflq.errors import ConversionError, UsageError
from tflq.model.load import ExportedModel, KerasLayer

BOUNDARY_OPS = frozenset({"QUANTIZE", "DEQUANTIZE", "DELEGATE"})
_SUFFIX = re.compile(r"_\d+$")
_FLOAT_DTYPES = {"float32", "float16", "float64"}


@dataclass(frozen=True)
class ModelOp:
    """One op of the float (calibrated) TFLite model, in execution order."""

    index: int
    op_type: str
    tensor: str  # output tensor name: what the quantizer's node denylist matches
    layers: tuple[str, ...]  # Keras layer paths in model order; () when no layer could be told
    float_output: bool  # computes a float tensor, so the quantizer may quantize it

    @property
    def label(self) -> str:
        """The layers joined with ``+`` (a fused op), or the tensor name when no layer is known."""
        return "+".join(self.layers) if self.layers else self.tensor


class _ScopeNamer:
    """Maps one scope path (``model_1/block_1/dense_1/MatMul``) to a Keras layer path (``block/dense``)."""

    def __init__(self, layers: Sequence[KerasLayer], names: Iterable[str]) -> None:
        self.children: dict[str, dict[str, KerasLayer]] = {}
        for layer in layers:
            parent, _, name = layer.path.rpartition("/")
            self.children.setdefault(parent, {})[name] = layer
        self.order = {layer.path: position for position, layer in enumerate(layers)}
        self.keras = bool(layers)
        short_names = {layer.path.rpartition("/")[2] for layer in layers}
        self.suffixed = any(
            component not in short_names and _SUFFIX.sub("", component) in short_names
            for name in names
            for part in name.split(";")
            for component in part.split("/")[:-1]
        )

    def _match(self, component: str, parent: str) -> KerasLayer | None:
        names = self.children.get(parent, {})
        base = _SUFFIX.sub("", component)
        for candidate in (base, component) if self.suffixed else (component, base):
            if candidate in names:
                return names[candidate]
        return None

    def layer_of(self, part: str) -> str | None:
        """The Keras layer path one ``;``-part of a tensor name belongs to, or None."""
        components = part.split("/")[:-1]  # the last component is the op's own name
        if not self.keras:
            scopes = components[1:] if len(components) >= 2 else []
            return _SUFFIX.sub("", scopes[0]) if scopes else None
        parent, found = "", None
        for component in components:
            layer = self._match(component, parent)
            if layer is None:
                if found is None:
                    continue  # scopes above the layers: the model's own scope
                break
            found = layer
            if not layer.container:
                break
            parent = layer.path
        return found.path if found else None

    def layers_of(self, names: Iterable[str]) -> tuple[str, ...]:
        found: dict[str, int] = {}
        for name in names:
            for part in name.split(";"):
                layer = self.layer_of(part)
                if layer is not None:
                    found.setdefault(layer, len(found))
        if self.keras:
            return tuple(sorted(found, key=lambda path: (self.order.get(path, len(self.order)), path)))
        return tuple(sorted(found, key=lambda path: -found[path]))  # fused names list the last op first


def read_ops(
    content: bytes, exported: ExportedModel, relabel: Mapping[str, tuple[str, ...]] | None = None
) -> tuple[ModelOp, ...]:
    """Every op of a float, calibrated or quantized ``.tflite`` (delegation off), named after its Keras layers;
    ``relabel`` (output tensor -> layers, :func:`relabel_map`) overrides the layers its names would give."""
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    with _tf.quiet():
        interpreter = Interpreter(
            model_content=content, experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
        )
    tensors = {detail["index"]: detail for detail in interpreter.get_tensor_details()}
    ops = [op for op in interpreter._get_ops_details() if op["op_name"] not in BOUNDARY_OPS]
    produced = {index for op in ops for index in op["outputs"]}
    graph_inputs = {detail["index"] for detail in interpreter.get_input_details()}
    signature_outputs: dict[int, str] = {}
    signatures = interpreter.get_signature_list()
    if signatures:
        runner = interpreter.get_signature_runner(next(iter(signatures)))
        signature_outputs = {detail["index"]: name for name, detail in runner.get_output_details().items()}
    namer = _ScopeNamer(exported.keras_layers, [detail["name"] for detail in tensors.values()])
    top_level = {layer.path for layer in exported.keras_layers if "/" not in layer.path}
    found = []
    for op in ops:
        outputs = [tensors[index] for index in op["outputs"] if index in tensors]
        name = outputs[0]["name"] if outputs else ""
        layers = namer.layers_of([name])
        if not layers:
            constants = [
                tensors[index]["name"] for index in op["inputs"]
                if index in tensors and index not in produced and index not in graph_inputs
            ]
            layers = namer.layers_of(constants)
        if not layers and outputs and outputs[0]["index"] in signature_outputs:
            output_name = signature_outputs[outputs[0]["index"]]
            if output_name in top_level:
                layers = (output_name,)
        if relabel is not None and name in relabel:
            layers = relabel[name]
        found.append(
            ModelOp(
                index=op["index"],
                op_type=op["op_name"],
                tensor=name,
                layers=layers,
                float_output=any(np.dtype(t["dtype"]).name in _FLOAT_DTYPES for t in outputs),
            )
        )
    return tuple(found)


def relabel_map(
    frozen_float: bytes, exported: ExportedModel, variables_float: bytes, variables_export: ExportedModel
) -> dict[str, tuple[str, ...]]:
    """Output tensor of each op of the float32 model converted from a frozen export -> the Keras layers the same op
    is named after in the float32 model converted from an export with variables.

    Both conversions give the same ops in the same order (``tests/test_export_frozen.py``), but when two layers
    hold identical constants (an untrained model's BatchNormalization statistics, weights copied between layers) the
    converter merges the frozen constants and an op's name then also carries the other layer's scope (measured:
    MobileNetV2 with its initial statistics names a depthwise convolution after ``block_3_project_BN`` too). The
    export with variables names each op after its own layers only. Raises ConversionError when the two models'
    op types differ (then neither naming can be trusted for the other)."""
    frozen_ops = read_ops(frozen_float, exported)
    variable_ops = read_ops(variables_float, variables_export)
    if [op.op_type for op in frozen_ops] != [op.op_type for op in variable_ops]:
        raise ConversionError(
            f"{exported.source}: the frozen and the variable export convert to different ops; the layer names of "
            "the ops cannot be told"
        )
    return {mine.tensor: theirs.layers for mine, theirs in zip(frozen_ops, variable_ops, strict=True)}


def layers_with_ops(ops: Sequence[ModelOp]) -> list[str]:
    """The layer paths that name at least one op, in model order, without duplicates."""
    seen: dict[str, None] = {}
    for op in ops:
        for layer in op.layers:
            seen.setdefault(layer, None)
    return list(seen)


def _did_you_mean(name: str, choices: Sequence[str]) -> str:
    close = difflib.get_close_matches(name, list(choices), n=1, cutoff=0.6)
    return f"did you mean {close[0]!r}? " if close else ""


def nodes_for_layers(ops: Sequence[ModelOp], names: Sequence[str], exported: ExportedModel) -> tuple[str, ...]:
    """The output tensors of every float op that computes one of the layers called ``names``.

    A name is a layer path (``dense1``, ``block/dense``), the last part of a nested layer's path when no other
    layer has it, or a nested model (all its layers). Raises UsageError for a name that is no layer (listing the
    layers and a close match) and for a layer that has no op of its own in the TFLite model.
    """
    candidates = [op for op in ops if op.float_output]
    with_ops = layers_with_ops(candidates)
    known = [layer.path for layer in exported.keras_layers] or with_ops
    nodes: dict[str, None] = {}
    for name in names:
        path = _resolve_layer_name(name, known)
        if path is None:
            raise UsageError(
                f"--skip-layers: unknown layer {name!r}; {_did_you_mean(name, with_ops)}"
                f"layers with ops: {', '.join(with_ops)}"
            )
        matched = [op for op in candidates if any(layer == path or layer.startswith(path + "/") for layer in op.layers)]
        if not matched:
            raise UsageError(
                f"--skip-layers: layer {path!r} has no op of its own in the TFLite model (removed, or folded into "
                f"another op, at conversion); layers with ops: {', '.join(with_ops)}"
            )
        for op in matched:
            nodes.setdefault(op.tensor, None)
    return tuple(nodes)


def _resolve_layer_name(name: str, known: Sequence[str]) -> str | None:
    if name in known:
        return name
    by_last_part = [path for path in known if path.rpartition("/")[2] == name]
    return by_last_part[0] if len(by_last_part) == 1 else None


def nodes_for_op_types(ops: Sequence[ModelOp], op_types: Sequence[str]) -> tuple[str, ...]:
    """The output tensors of every float op of the given TFLite op types (``FULLY_CONNECTED``; case-insensitive).

    Raises UsageError for an op type the model does not have, listing the ones it has and a close match.
    """
    candidates = [op for op in ops if op.float_output]
    present = list(dict.fromkeys(op.op_type for op in candidates))
    nodes: dict[str, None] = {}
    for op_type in op_types:
        wanted = op_type.strip().upper()
        if wanted not in present:
            raise UsageError(
                f"--skip-ops: the model has no {op_type!r} op; {_did_you_mean(wanted, present)}"
                f"its ops: {', '.join(present)}"
            )
        for op in candidates:
            if op.op_type == wanted:
                nodes.setdefault(op.tensor, None)
    return tuple(nodes)
