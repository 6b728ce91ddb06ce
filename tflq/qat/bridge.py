"""Rebuild a Keras 3 model in tf_keras (Keras 2), the only Keras that tensorflow-model-optimization accepts.

The bridge walks the Keras 3 functional graph (or the Sequential chain) and recreates every layer from its own
config in tf_keras, translating what Keras 3 writes differently (``DTypePolicy`` dicts, ``module`` /
``registered_name`` wrappers, options tf_keras does not know). Layers of nested Sequential / Functional models are
inlined, so the twin is one flat graph that tfmot can quantize. Weights are then copied layer by layer and the twin
is verified to give the same outputs as the original on sample inputs; any difference is an error that names the
first layer whose outputs differ.

Refused, with the layer name and class: subclassed models, custom layers, ``Lambda`` layers, sparse or ragged inputs.
"""
from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from tflq._tf import imports as _tf
from tflq.errors import ConversionError, QatError

if TYPE_CHECKING:
    import keras
    import tf_keras

POST_TRAINING_HINT = "use post-training quantization instead (mode int8, or 16x8)"

# Keys every tf_keras layer accepts through ``Layer.__init__(**kwargs)``.
_BASE_LAYER_KEYS = frozenset(
    {"name", "dtype", "trainable", "input_shape", "batch_input_shape", "batch_size", "input_dim", "dynamic",
     "autocast", "activity_regularizer"}
)
# Keras 3 options with no tf_keras counterpart that never change the layer's maths, whatever their value.
_HARMLESS_KEYS = frozenset({"use_cudnn", "optional", "build_config", "compile_config"})
# Keras 3 options with no tf_keras counterpart that are harmless only at these values.
_NEUTRAL_VALUES: dict[str, tuple[Any, ...]] = {
    "quantization_config": (None,),
    "lora_rank": (None, 0),
    "lora_alpha": (None,),
    "input_axes": (None,),
    "output_axes": (None,),
    "rms_scaling": (False,),  # LayerNormalization
    "pad_to_aspect_ratio": (False,),  # Resizing: fill_mode / fill_value only matter when padding
    "fill_mode": ("constant",),
    "fill_value": (0.0,),
    "antialias": (False,),
}
# Options Keras 3 renamed, by layer class: Keras 3 name -> tf_keras name.
_RENAMED_KEYS: dict[str, dict[str, str]] = {
    "LeakyReLU": {"negative_slope": "alpha"},
}
# Where tf_keras keeps the objects a serialized Keras 3 object may name, by Keras 3 module.
_NAMESPACES = {
    "keras.initializers": "initializers",
    "keras.regularizers": "regularizers",
    "keras.constraints": "constraints",
    "keras.layers": "layers",
    "keras.activations": "activations",
}


@dataclass(frozen=True)
class LayerPair:
    """A Keras 3 layer and its tf_keras twin (weights are copied from ``source`` to ``twin``)."""

    source: keras.layers.Layer
    twin: tf_keras.layers.Layer


def bridge_to_tf_keras(
    model: keras.Model | tf_keras.Model, *, sample_inputs: Any = None, atol: float = 1e-5
) -> tf_keras.Model:
    """Rebuild a Keras 3 Sequential or Functional model in tf_keras, copy its weights and check the outputs agree.

    ``sample_inputs`` (an array, a list in input order, or a dict by input name) is what the two models are
    compared on; by default 8 seeded random samples. Outputs must agree within ``atol`` (scaled by the output's
    magnitude when it is above 1). When the Keras 3 model is compiled with a built-in loss, the twin is compiled
    with the same loss, so :func:`tflq.qat.quantize_aware.resolve_loss` finds it.

    Returns the tf_keras ``Model`` (functional; one flat graph). Raises :class:`QatError` for a model the bridge
    refuses (subclassed, unbuilt, custom or Lambda layers, a layer config tf_keras cannot rebuild, sparse inputs)
    and :class:`ConversionError` when weights do not fit or the twin's outputs differ (a bridge bug).
    """
    import keras
    import tf_keras

    if isinstance(model, tf_keras.Model):
        return model
    if not isinstance(model, keras.Model):
        raise QatError(f"expected a Keras model, got {type(model).__name__}")
    _check_graph_model(model)
    builder = _Builder()
    inputs = builder.make_inputs(model)
    outputs = builder.walk(model, inputs)
    try:
        twin = tf_keras.Model(inputs, outputs, name=model.name)
    except _tf.library_errors() as error:  # tf_keras rejects the graph: say which model, keep its reason
        raise ConversionError(f"could not rebuild model '{model.name}' in tf_keras: {_one_line(error)}") from error
    for pair in builder.pairs:
        _copy_weights(pair)
    _carry_loss(model, twin)
    verify_twin(model, twin, builder.pairs, sample_inputs=sample_inputs, atol=atol)
    return twin


def _check_graph_model(model: Any) -> None:
    """Refuse what has no graph to walk: subclassed models (including subclasses of Functional) and unbuilt ones."""
    kind = type(model)
    if not (kind.__name__ in ("Functional", "Sequential") and kind.__module__.startswith("keras.")):
        raise QatError(
            f"model '{model.name}' is a subclassed model (class {kind.__name__}): QAT needs a Sequential or Functional "
            f"model whose graph can be rebuilt layer by layer; {POST_TRAINING_HINT}"
        )
    if not model.built or not getattr(model, "inputs", None):
        raise QatError(f"model '{model.name}' is not built (it has no inputs yet); build or save it with an Input")


class _Builder:
    """Walks Keras 3 graphs and creates their tf_keras twins, remembering (source, twin) layer pairs."""

    def __init__(self) -> None:
        self.pairs: list[LayerPair] = []
        self._twins: dict[int, Any] = {}
        self._names: set[str] = set()

    def make_inputs(self, model: Any) -> list[Any]:
        import tf_keras

        inputs = []
        for tensor, input_layer in zip(model.inputs, _input_layers(model), strict=True):
            config = input_layer.get_config()
            if config.get("sparse") or config.get("ragged"):
                raise QatError(f"input '{input_layer.name}' is sparse or ragged: QAT supports dense inputs only")
            self._claim_name(input_layer.name)
            inputs.append(
                tf_keras.Input(batch_shape=tuple(tensor.shape), dtype=str(tensor.dtype), name=input_layer.name)
            )
        return inputs

    def walk(self, model: Any, inputs: list[Any], training: bool | None = None) -> list[Any]:
        """Call the twins of ``model``'s layers on tf_keras ``inputs``; return the flat list of outputs.

        ``training`` is the value a nested model was called with (``base(x, training=False)``), passed on to
        every inlined layer that takes it, so that the inlined graph behaves as the nested call did.
        """
        if type(model).__name__ == "Sequential":
            (tensor,) = inputs
            for layer in model.layers:
                (tensor,) = self._call(layer, [tensor], {}, training)
            return [tensor]
        return self._walk_functional(model, inputs, training)

    def _walk_functional(self, model: Any, inputs: list[Any], training: bool | None) -> list[Any]:
        config = model.get_config()
        tensors: dict[tuple[str, int, int], Any] = {}
        for ref, tensor in zip(_refs(config["input_layers"]), inputs, strict=True):
            tensors[ref] = tensor
        pending = [
            (entry, node_index, node)
            for entry in config["layers"]
            if entry["class_name"] != "InputLayer"
            for node_index, node in enumerate(entry["inbound_nodes"])
        ]
        while pending:
            waiting = []
            for entry, node_index, node in pending:
                if not all(ref in tensors for ref in _history_refs(node)):
                    waiting.append((entry, node_index, node))
                    continue
                args = _resolve(node.get("args", []), tensors)
                kwargs = {key: value for key, value in _resolve(node.get("kwargs", {}), tensors).items()
                          if value is not None}
                layer = model.get_layer(entry["name"])
                for tensor_index, tensor in enumerate(self._call(layer, args, kwargs, training)):
                    tensors[(entry["name"], node_index, tensor_index)] = tensor
            if len(waiting) == len(pending):
                names = ", ".join(sorted({entry["name"] for entry, _, _ in waiting}))
                raise ConversionError(f"could not order the graph of model '{model.name}': {names} never got inputs")
            pending = waiting
        return [tensors[ref] for ref in _refs(config["output_layers"])]

    def _call(self, layer: Any, args: list[Any], kwargs: dict[str, Any], training: bool | None) -> list[Any]:
        import keras
        import tensorflow as tf

        if isinstance(layer, keras.Model):
            _check_graph_model(layer)
            return self.walk(layer, tf.nest.flatten(args), kwargs.get("training", training))
        twin = self._twin(layer)
        if training is not None and "training" not in kwargs and getattr(twin, "_expects_training_arg", False):
            kwargs = {**kwargs, "training": training}
        try:
            outputs = twin(*args, **kwargs)
        except _tf.library_errors() as error:
            raise ConversionError(
                f"layer '{layer.name}' ({type(layer).__name__}): its tf_keras twin cannot be called: {_one_line(error)}"
            ) from error
        return tf.nest.flatten(outputs)

    def _twin(self, layer: Any) -> Any:
        """The tf_keras layer for Keras 3 ``layer``, created once (shared layers are called again)."""
        if id(layer) in self._twins:
            return self._twins[id(layer)]
        twin = make_twin_layer(layer)
        self._claim_name(layer.name)
        self._twins[id(layer)] = twin
        self.pairs.append(LayerPair(layer, twin))
        return twin

    def _claim_name(self, name: str) -> None:
        if name in self._names:
            raise ConversionError(
                f"two layers are named '{name}' once nested models are inlined; rename one before QAT"
            )
        self._names.add(name)


def make_twin_layer(layer: keras.layers.Layer) -> tf_keras.layers.Layer:
    """Create the tf_keras layer equivalent to Keras 3 ``layer`` from its config (weights not copied).

    Raises :class:`QatError` for Lambda and custom layers, and for a config tf_keras cannot rebuild.
    """
    import tf_keras

    kind = type(layer)
    label = f"layer '{layer.name}' ({kind.__name__})"
    if kind.__name__ == "Lambda":
        raise QatError(
            f"{label} runs arbitrary Python code that QAT can neither rebuild nor quantize; {POST_TRAINING_HINT}"
        )
    if not kind.__module__.startswith("keras.") or layer.get_config() is None:
        raise QatError(
            f"{label} is a custom layer (from module {kind.__module__}): QAT supports built-in Keras layers only; "
            f"{POST_TRAINING_HINT}"
        )
    twin_class = getattr(tf_keras.layers, kind.__name__, None)
    if twin_class is None:
        raise QatError(f"{label} has no tf_keras equivalent, so QAT cannot take it; {POST_TRAINING_HINT}")
    config = layer.get_config()
    for old_key, new_key in _RENAMED_KEYS.get(kind.__name__, {}).items():
        if old_key in config:
            config[new_key] = config.pop(old_key)
    config = translate_config(config, twin_class, label)
    try:
        return twin_class.from_config(config)
    except _tf.library_errors() as error:
        reason = str(error).split("Exception encountered:")[-1]  # tf_keras prefixes the whole config
        raise QatError(f"{label} cannot be rebuilt in tf_keras for QAT ({_one_line(reason)}); "
                       f"{POST_TRAINING_HINT}") from error


def translate_config(config: dict[str, Any], target_class: type, label: str) -> dict[str, Any]:
    """Translate a Keras 3 object config to what ``target_class.from_config`` in tf_keras accepts.

    A key the tf_keras constructor does not name is dropped when its value cannot change the maths (``None``, or a
    known neutral value); any other is kept, for tf_keras to accept (some constructors pop extra keywords) or
    reject, which :func:`make_twin_layer` reports with the layer's name.
    """
    accepted = _accepted_keys(target_class)
    translated: dict[str, Any] = {}
    for key, value in config.items():
        if key not in accepted and (key in _HARMLESS_KEYS or value is None or value in _NEUTRAL_VALUES.get(key, ())):
            continue
        translated[key] = _translate_value(value, label)
    return translated


def _translate_value(value: Any, label: str) -> Any:
    """Turn Keras 3 serialized objects inside a config into the tf_keras ``{"class_name", "config"}`` form."""
    import tf_keras

    if isinstance(value, list):
        return [_translate_value(item, label) for item in value]
    if not isinstance(value, dict):
        return value
    if "class_name" not in value or "config" not in value:
        return {key: _translate_value(item, label) for key, item in value.items()}
    class_name, inner = value["class_name"], value["config"]
    if class_name.endswith("DTypePolicy"):
        if class_name != "DTypePolicy" and class_name != "FloatDTypePolicy":
            raise ConversionError(f"{label} uses dtype policy {class_name}, which tf_keras cannot rebuild")
        return inner["name"]
    if class_name == "function":  # a serialized built-in function, e.g. an activation
        return inner
    namespace = getattr(tf_keras, _NAMESPACES.get(str(value.get("module")), "layers"), None)
    target = getattr(namespace, class_name, None) if namespace is not None else None
    if isinstance(inner, dict):
        inner = translate_config(inner, target, label) if isinstance(target, type) else _translate_value(inner, label)
    return {"class_name": class_name, "config": inner}


def _accepted_keys(target_class: type) -> frozenset[str]:
    """Constructor parameters of ``target_class`` and its bases, plus the base layer keywords."""
    keys = set(_BASE_LAYER_KEYS)
    for klass in inspect.getmro(target_class):
        init = klass.__dict__.get("__init__")
        if init is None:
            continue
        try:
            parameters = inspect.signature(init).parameters.values()
        except (TypeError, ValueError):
            continue
        keys.update(p.name for p in parameters if p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL) and p.name != "self")
    return frozenset(keys)


def _input_layers(model: Any) -> list[Any]:
    """The InputLayer objects of a Keras 3 model, in ``model.inputs`` order."""
    return [tensor._keras_history[0] for tensor in model.inputs]


def _refs(structure: Any) -> list[tuple[str, int, int]]:
    """Flatten a Keras 3 ``input_layers`` / ``output_layers`` structure to ``(layer, node, tensor)`` refs.

    Dicts flatten in sorted-key order, as ``keras.tree.flatten`` (and so ``model.outputs``) does.
    """
    if isinstance(structure, (list, tuple)) and len(structure) == 3 and isinstance(structure[0], str):
        return [(structure[0], int(structure[1]), int(structure[2]))]
    if isinstance(structure, dict):
        return [ref for key in sorted(structure) for ref in _refs(structure[key])]
    return [ref for item in structure for ref in _refs(item)]


def _is_tensor_ref(value: Any) -> bool:
    return isinstance(value, dict) and value.get("class_name") == "__keras_tensor__"


def _tensor_key(value: dict[str, Any]) -> tuple[str, int, int]:
    name, node_index, tensor_index = value["config"]["keras_history"]
    return (name, int(node_index), int(tensor_index))


def _history_refs(node: Any) -> list[tuple[str, int, int]]:
    if _is_tensor_ref(node):
        return [_tensor_key(node)]
    if isinstance(node, dict):
        return [ref for item in node.values() for ref in _history_refs(item)]
    if isinstance(node, (list, tuple)):
        return [ref for item in node for ref in _history_refs(item)]
    return []


def _resolve(node: Any, tensors: dict[tuple[str, int, int], Any]) -> Any:
    """Replace Keras 3 ``__keras_tensor__`` references in call arguments by the tf_keras tensors built so far."""
    if _is_tensor_ref(node):
        return tensors[_tensor_key(node)]
    if isinstance(node, dict):
        return {key: _resolve(item, tensors) for key, item in node.items()}
    if isinstance(node, (list, tuple)):
        return [_resolve(item, tensors) for item in node]
    return node


def _short_name(variable: Any) -> str:
    """``kernel`` for a Keras 3 variable ``kernel`` and for a tf_keras variable ``dense/kernel:0``."""
    return str(variable.name).split(":")[0].rsplit("/", 1)[-1]


def _copy_weights(pair: LayerPair) -> None:
    """Copy ``pair.source``'s weights into ``pair.twin``, matched by name when names are unique, else by order."""
    sources, twins = list(pair.source.weights), list(pair.twin.weights)
    label = f"layer '{pair.source.name}' ({type(pair.source).__name__})"
    if len(sources) != len(twins):
        raise ConversionError(
            f"{label}: {len(sources)} weights in Keras 3 but {len(twins)} in its tf_keras twin "
            f"({[_short_name(v) for v in sources]} vs {[_short_name(v) for v in twins]})"
        )
    source_names = [_short_name(v) for v in sources]
    twin_names = [_short_name(v) for v in twins]
    if len(set(source_names)) == len(source_names) and sorted(source_names) == sorted(twin_names):
        by_name = {name: variable for name, variable in zip(source_names, sources, strict=True)}
        sources = [by_name[name] for name in twin_names]
    for source, twin in zip(sources, twins, strict=True):
        value = np.asarray(source)
        if tuple(value.shape) != tuple(twin.shape):
            raise ConversionError(
                f"{label}: weight '{_short_name(source)}' has shape {tuple(value.shape)} in Keras 3 but "
                f"{tuple(twin.shape)} in tf_keras"
            )
        twin.assign(value)
    if sources and hasattr(pair.twin, "finalize_state"):  # adapted preprocessing layers (Normalization...)
        pair.twin.finalize_state()


def _carry_loss(model: Any, twin: Any) -> None:
    """Compile ``twin`` with ``model``'s built-in loss(es), if it has any; a loss tflq cannot translate is left out."""
    from tflq.qat.losses import build_loss, saved_loss_specs

    try:
        specs = saved_loss_specs(model)
    except QatError:
        return
    if specs is None:
        return
    losses = [build_loss(spec) for spec in specs]
    twin.compile(optimizer="adam", loss=losses[0] if len(losses) == 1 else losses)


def sample_inputs_for(model: Any, count: int = 8, seed: int = 0) -> list[np.ndarray]:
    """Seeded random inputs for every input of ``model`` (any Keras), undefined dimensions set to 4."""
    rng = np.random.default_rng(seed)
    samples = []
    for tensor in model.inputs:
        shape = [count] + [dim if dim is not None else 4 for dim in tuple(tensor.shape)[1:]]
        dtype = np.dtype(str(getattr(tensor.dtype, "name", tensor.dtype)))
        if np.issubdtype(dtype, np.integer):
            samples.append(rng.integers(0, 2, size=shape).astype(dtype))
        elif dtype == np.bool_:
            samples.append(rng.integers(0, 2, size=shape).astype(bool))
        else:
            samples.append(rng.standard_normal(shape).astype(dtype))
    return samples


def _as_input_list(model: Any, sample_inputs: Any) -> list[np.ndarray]:
    if isinstance(sample_inputs, dict):
        names = [layer.name for layer in _input_layers(model)]
        missing = [name for name in names if name not in sample_inputs]
        if missing:
            raise QatError(f"sample inputs lack {missing}; the model's inputs are {names}")
        return [np.asarray(sample_inputs[name]) for name in names]
    if isinstance(sample_inputs, (list, tuple)):
        return [np.asarray(item) for item in sample_inputs]
    return [np.asarray(sample_inputs)]


def _flat_numpy(outputs: Any) -> list[np.ndarray]:
    import tensorflow as tf

    return [np.asarray(output) for output in tf.nest.flatten(outputs)]


def verify_twin(model: keras.Model, twin: tf_keras.Model, pairs: list[LayerPair], *, sample_inputs: Any = None,
                atol: float = 1e-5) -> float:
    """Check that ``twin`` reproduces ``model`` on sample inputs; return the largest absolute difference.

    Raises :class:`ConversionError` naming the first layer whose outputs differ (or the output, when the
    difference cannot be traced to one top-level layer).
    """
    inputs = sample_inputs_for(model) if sample_inputs is None else _as_input_list(model, sample_inputs)
    feed = inputs[0] if len(inputs) == 1 else inputs
    expected = _flat_numpy(model(_structured(model, inputs), training=False))
    found = _flat_numpy(twin(feed, training=False))
    if len(expected) != len(found):
        raise ConversionError(f"the model has {len(expected)} outputs in Keras 3 but {len(found)} in tf_keras")
    worst = 0.0
    for index, (want, got) in enumerate(zip(expected, found, strict=True)):
        if want.shape != got.shape:
            raise ConversionError(f"output {index} has shape {want.shape} in Keras 3 but {got.shape} in tf_keras")
        difference = float(np.max(np.abs(want.astype(np.float64) - got))) if want.size else 0.0
        worst = max(worst, difference)
        if not difference <= atol * max(1.0, float(np.max(np.abs(want))) if want.size else 1.0):
            culprit = _first_differing_layer(model, twin, pairs, feed, atol)
            where = f"first differing layer: {culprit}" if culprit else f"output {twin.output_names[index]}"
            raise ConversionError(
                f"the tf_keras twin of '{model.name}' differs from the Keras 3 model by {difference:.3g} "
                f"(tolerance {atol:g}); {where}"
            )
    return worst


def _structured(model: Any, inputs: list[np.ndarray]) -> Any:
    """``inputs`` (in ``model.inputs`` order) in the structure a Keras 3 model was built with (dict inputs...)."""
    import keras

    structure = getattr(model, "_inputs_struct", None)
    if structure is None or len(inputs) == 1 and not isinstance(structure, (dict, list, tuple)):
        return inputs[0] if len(inputs) == 1 else inputs
    return keras.tree.pack_sequence_as(structure, inputs)


def _first_differing_layer(model: Any, twin: Any, pairs: list[LayerPair], feed: Any, atol: float) -> str | None:
    """Probe the outputs of every top-level, single-use layer in graph order; name the first one that differs."""
    import keras
    import tf_keras

    top_level = {layer.name for layer in model.layers}
    for pair in pairs:
        source = pair.source
        if source.name not in top_level or len(getattr(source, "_inbound_nodes", [])) != 1:
            continue
        try:
            inputs = model.inputs[0] if len(model.inputs) == 1 else model.inputs
            want = _flat_numpy(keras.Model(inputs, source.output)(feed, training=False))
            got = _flat_numpy(tf_keras.Model(twin.inputs, pair.twin.output)(feed, training=False))
        except _tf.library_errors():  # a layer we cannot probe on its own: try the next one
            continue
        if len(want) != len(got):
            return f"'{source.name}' ({type(source).__name__})"
        for expected, found in zip(want, got, strict=True):
            scale = max(1.0, float(np.max(np.abs(expected)))) if expected.size else 1.0
            if expected.shape != found.shape or float(np.max(np.abs(expected - found))) > atol * scale:
                return f"'{source.name}' ({type(source).__name__})"
    return None


def _one_line(error: BaseException | str) -> str:
    text = " ".join(str(error).split())
    return text if len(text) <= 300 else text[:297] + "..."
