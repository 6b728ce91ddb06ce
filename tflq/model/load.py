"""Load a model the user gave (.keras, .h5/.hdf5, SavedModel directory) and export it once to a SavedModel.

Every conversion mode converts from that one export (``from_keras_model`` would re-export on every call). A Keras 3
model is exported with its variables folded into constants (:mod:`tflq._tf.frozen`: the same converted models, made
several times faster), or with variables when that cannot apply.
The export has a dynamic batch dimension (a fixed one with ``static_batch``) and a ``serving_default`` signature
whose input and output names are the Keras input and output names, so every .tflite carries readable tensor names.
A float ``.tflite`` MODEL is not exported: :mod:`tflq.convert.source` reads its interface.
"""
from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tflq._tf import frozen as _frozen
from tflq._tf import imports as _tf
from tflq.errors import ModelLoadError, UsageError
from tflq.model import file_checks as model_files
from tflq.model import user_code
from tflq.model.options import ModelOptions  # noqa: F401 (re-exported)

if TYPE_CHECKING:
    import keras
    import tf_keras

KERAS_SUFFIXES = (".keras",)
H5_SUFFIXES = (".h5", ".hdf5")
TFLITE_SUFFIXES = (".tflite",)
MODEL_FORMATS = "a .keras or .h5/.hdf5 file, a SavedModel directory or a float32 .tflite"
SERVING_KEY = "serving_default"
log = logging.getLogger("tflq")


@dataclass(frozen=True)
class TensorSpec:
    """One model input or output as the user sees it."""

    name: str  # signature name (= Keras input/output name)
    shape: tuple[int | None, ...]  # including the batch axis; None = dynamic
    dtype: str  # numpy dtype name of the logical tensor, e.g. "float32"

    def describe(self) -> str:
        dims = ", ".join("?" if dim is None else str(dim) for dim in self.shape)
        return f"{self.name} ({dims}) {self.dtype}"


@dataclass(frozen=True)
class KerasLayer:
    """One Keras layer of the source model: ``path`` is its name, prefixed by the enclosing model's name for layers
    of a nested model (``block/dense``); ``container`` is True for a nested model (a layer with layers)."""

    path: str
    class_name: str
    container: bool = False


@dataclass(frozen=True)
class ExportedModel:
    """The SavedModel every mode converts from, and the model's interface."""

    source: Path
    saved_model_dir: Path
    signature_key: str
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    keras_layer_names: tuple[str, ...] = ()
    keras_layers: tuple[KerasLayer, ...] = ()  # model order, containers before their layers; () for a SavedModel
    tflite: bool = False  # a float .tflite MODEL: no SavedModel (saved_model_dir is the .tflite file itself)
    frozen: bool = False  # variables folded into constants (tflq/_tf/frozen.py): an op's name may carry other layers

    @property
    def static_batch(self) -> int | None:
        """The fixed batch size every input shares, or None (a dynamic batch, or no inputs)."""
        batches = {spec.shape[0] for spec in self.inputs if spec.shape}
        return next(iter(batches)) if len(batches) == 1 and None not in batches else None


def model_kind(path: Path) -> str:
    """Return ``"keras"``, ``"h5"``, ``"savedmodel"`` or ``"tflite"`` for a model path. Raises ModelLoadError."""
    if not path.exists():
        raise ModelLoadError(f"{path}: no such file or directory")
    kind = model_files.non_regular_kind(path)
    if kind:
        raise ModelLoadError(
            f"{path}: is {kind}, not a model file; give {MODEL_FORMATS}"
        )
    suffix = path.suffix.lower()
    if path.is_dir():
        for graph in (path / "saved_model.pb", path / "saved_model.pbtxt"):
            if graph.exists():
                model_files.require_regular_file(graph, "a SavedModel graph file")
                if graph.stat().st_size == 0:
                    raise ModelLoadError(f"{path}: not a SavedModel: {graph.name} is an empty file (0 bytes)")
                return "savedmodel"
        if suffix in KERAS_SUFFIXES + H5_SUFFIXES + TFLITE_SUFFIXES:
            raise ModelLoadError(f"{path}: is a directory, expected a {suffix} file")
        raise ModelLoadError(f"{path}: a directory without saved_model.pb is not a SavedModel")
    if suffix in KERAS_SUFFIXES:
        return "keras"
    if suffix in H5_SUFFIXES:
        return "h5"
    if suffix in TFLITE_SUFFIXES:
        return "tflite"
    raise ModelLoadError(f"{path}: unknown model format {suffix or '(no suffix)'!r}; expected {MODEL_FORMATS}")


def resolve_object(reference: str, what: str) -> Any:
    """Import ``module:attr`` (the current directory is importable). Raises UsageError."""
    module_name, sep, attr = reference.partition(":")
    if not sep or not module_name or not attr:
        raise UsageError(f"{what} {reference!r}: expected the form module:attribute")
    module = user_code.import_module(module_name, f"{what} {reference!r}")
    target: Any = module
    for part in attr.split("."):
        if not hasattr(target, part):
            raise UsageError(f"{what} {reference!r}: module {module_name!r} has no attribute {attr!r}")
        target = getattr(target, part)
    return target


def custom_objects_dict(references: Sequence[str]) -> dict[str, Any]:
    """Map each ``module:attr`` to its object, registered under the attribute's and the class's name."""
    objects: dict[str, Any] = {}
    for reference in references:
        obj = resolve_object(reference, "custom object")
        objects[reference.rpartition(":")[2].split(".")[-1]] = obj
        objects[getattr(obj, "__name__", reference)] = obj
    return objects


def _unsafe_hint(path: Path, error: Exception) -> str | None:
    text = str(error)
    if "safe_mode" in text or "Lambda" in text and "unsafe" in text.lower():
        return (
            f"{path}: the model contains a Lambda layer (Python code that would run while loading); "
            "tflq refuses it by default. If you trust this file, pass --unsafe-deserialization"
        )
    return None


def load_keras_model(path: Path, options: ModelOptions = ModelOptions()) -> keras.Model | tf_keras.Model:
    """Load a .keras or .h5 model with Keras 3 (safe mode unless asked). Raises ModelLoadError."""
    kind = model_kind(path)
    if kind in ("savedmodel", "tflite"):
        raise ModelLoadError(f"{path}: a {'SavedModel directory' if kind == 'savedmodel' else '.tflite'} is not a "
                             "Keras model file")
    # Check the file before Keras opens it: Keras says "File not found" for a .keras file that is not a zip.
    config = model_files.read_keras_config(path) if kind == "keras" else model_files.read_h5_config(path)
    keras = _tf.keras()
    custom = custom_objects_dict(options.custom_objects)
    try:
        # Scoped, never keras.config.enable_unsafe_deserialization(): that switch is process-wide, so after one
        # opted-in load every later load in the process would run Lambda code without being asked.
        from keras.src.saving.serialization_lib import SafeModeScope

        with _tf.quiet() as chatter, SafeModeScope(not options.unsafe_deserialization):
            model = keras.models.load_model(
                str(path), compile=False, safe_mode=not options.unsafe_deserialization, custom_objects=custom
            )
    except _tf.library_errors() as error:  # Keras raises many types for bad files; each becomes one message
        hint = _unsafe_hint(path, error)
        if hint:
            raise ModelLoadError(hint) from None
        if kind == "h5":
            return _load_h5_with_tf_keras(path, options, custom, error)
        text = " ".join(str(error).split())
        unresolved = model_files.unresolved_class(config, custom)
        if unresolved:
            raise ModelLoadError(f"{path}: the model uses {unresolved}") from None
        if "Unknown layer" in text or "Could not locate class" in text or "custom_objects" in text:
            raise ModelLoadError(
                f"{path}: the model uses a class Keras does not know ({_first_sentence(text)}); "
                "pass it with --custom-objects module:Class"
            ) from None
        reason = _first_sentence(text) or type(error).__name__
        raise ModelLoadError(f"{path}: cannot load the model: {reason}") from None
    del chatter
    if getattr(model, "_tflq_tf_keras", False):
        return model
    if not getattr(model, "inputs", None):
        raise ModelLoadError(
            f"{path}: the model has no defined inputs (a subclassed model saved before it was built?); "
            "save a Functional or Sequential model, or a SavedModel"
        )
    return model


def _h5_layer_classes(path: Path) -> list[str]:
    """Class names of every layer in a legacy .h5 file's model config (read without deserializing)."""
    config = model_files.read_h5_config(path)
    found: list[str] = []

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            if "class_name" in node and isinstance(node.get("config"), dict):
                found.append(str(node["class_name"]))
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(config)
    return found


def _load_h5_with_tf_keras(path: Path, options: ModelOptions, custom: dict[str, Any], keras3_error: Exception) -> Any:
    """Legacy Keras 2 .h5 files that Keras 3 rejects (e.g. DepthwiseConv2D ``groups``) load in tf_keras."""
    if "Lambda" in _h5_layer_classes(path) and not options.unsafe_deserialization:
        raise ModelLoadError(
            f"{path}: the model contains a Lambda layer (Python code that would run while loading); "
            "tflq refuses it by default. If you trust this file, pass --unsafe-deserialization"
        )
    _tf.tf()
    try:
        with _tf.quiet():
            import tf_keras

            model = tf_keras.models.load_model(str(path), compile=False, custom_objects=custom)
    except _tf.library_errors() as error:
        text = _first_sentence(" ".join(str(error).split()))
        if "Unknown layer" in text or "custom_objects" in text:
            raise ModelLoadError(
                f"{path}: the model uses a class Keras does not know ({text}); pass it with --custom-objects "
                "module:Class"
            ) from None
        raise ModelLoadError(
            f"{path}: cannot load the model with Keras 3 ({_first_sentence(str(keras3_error))}) "
            f"nor with tf_keras ({text})"
        ) from None
    log.info("%s: legacy Keras 2 file loaded with tf_keras (Keras 3 could not read it)", path)
    model._tflq_tf_keras = True
    return model


def _first_sentence(text: str, limit: int = 300) -> str:
    text = text.strip().split("\n")[0]
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _spec_from_tf(name: str, tensor_spec: Any) -> TensorSpec:
    shape = tuple(None if dim is None else int(dim) for dim in tensor_spec.shape.as_list())
    return TensorSpec(name=name, shape=shape, dtype=tensor_spec.dtype.as_numpy_dtype.__name__)


def keras_io_names(model: Any) -> tuple[list[str], list[str]]:
    """The Keras model's input names and output names, in model order."""
    input_names = [getattr(tensor, "name", f"input_{index}").split(":")[0] for index, tensor in enumerate(model.inputs)]
    output_names = list(getattr(model, "output_names", None) or [f"output_{i}" for i in range(len(model.outputs))])
    return input_names, output_names


RECURRENT_CLASSES = ("GRU", "LSTM", "SimpleRNN")


def unroll_recurrent(model: Any, source: Path) -> Any:
    """Rebuild a model whose GRU/LSTM/SimpleRNN layers loop over a fixed number of steps with ``unroll=True``.

    TFLite cannot lower Keras 3's recurrent ``while`` loop with a dynamic batch dimension, and calibrating the
    loop crashes the converter; the unrolled graph is the same function (checked here) made of plain ops, which
    every mode quantizes. Returns the model unchanged when there is nothing to unroll.
    """
    keras = _tf.keras()
    targets = [
        layer for layer in model.layers
        if type(layer).__name__ in RECURRENT_CLASSES and not layer.get_config().get("unroll")
    ]
    if not targets:
        return model
    dynamic = [layer.name for layer in targets if layer.input.shape[1] is None]
    if dynamic:
        raise ModelLoadError(
            f"{source}: recurrent layer(s) {', '.join(dynamic)} run over a dynamic number of time steps, which "
            "TFLite cannot convert with a dynamic batch; give the sequence input a fixed length"
        )
    config = model.get_config()
    names = {layer.name for layer in targets}
    for layer_config in config.get("layers", []):
        if layer_config.get("config", {}).get("name") in names:
            layer_config["config"]["unroll"] = True
    try:
        rebuilt = model.__class__.from_config(config)
        rebuilt.set_weights(model.get_weights())
    except _tf.library_errors() as error:
        raise ModelLoadError(
            f"{source}: cannot unroll recurrent layer(s) {', '.join(sorted(names))}: {error}"
        ) from None
    import numpy as np

    rng = np.random.default_rng(0)
    probe = [rng.random((2, *t.shape[1:]), dtype=np.float32).astype(t.dtype) for t in model.inputs]
    probe_arg = _inputs_as_built(model, probe)
    before, after = model(probe_arg, training=False), rebuilt(probe_arg, training=False)
    flat_before, flat_after = keras.tree.flatten(before), keras.tree.flatten(after)
    if len(flat_before) != len(flat_after) or any(
        float(np.max(np.abs(np.asarray(a) - np.asarray(b)))) > 1e-5
        for a, b in zip(flat_before, flat_after, strict=True)
    ):
        raise ModelLoadError(f"{source}: unrolling recurrent layer(s) {', '.join(sorted(names))} changed the outputs")
    log.info("%s: recurrent layer(s) %s unrolled for TFLite (same outputs, plain ops)",
             source, ", ".join(sorted(names)))
    return rebuilt


def export_keras_model(
    model: keras.Model | tf_keras.Model,
    source: Path,
    export_dir: Path,
    static_batch: int | None = None,
    *,
    freeze: bool = True,
) -> ExportedModel:
    """Export a Keras 3 model to ``export_dir`` as a SavedModel with named inputs/outputs and a dynamic batch
    (``static_batch``: that fixed batch size instead); frozen (:mod:`tflq._tf.frozen`) when it can be and ``freeze``,
    else with its variables."""
    tf = _tf.tf()
    keras = _tf.keras()
    tf_keras_model = getattr(model, "_tflq_tf_keras", False)
    if not tf_keras_model:
        model = unroll_recurrent(model, source)
    input_names, output_names = keras_io_names(model)
    if len(set(input_names)) != len(input_names) or len(set(output_names)) != len(output_names):
        raise ModelLoadError(
            f"{source}: the model's input or output names are not unique: {input_names} {output_names}"
        )
    input_specs = [
        tf.TensorSpec([static_batch, *tensor.shape[1:]], tensor.dtype, name=name)
        for name, tensor in zip(input_names, model.inputs, strict=True)
    ]
    def serve(*args: Any) -> dict[str, Any]:
        outputs = model(_inputs_as_built(model, list(args)), training=False)
        if isinstance(outputs, dict):
            return {name: outputs[name] for name in output_names}
        if isinstance(outputs, (list, tuple)):
            return dict(zip(output_names, outputs, strict=True))
        return {output_names[0]: outputs}

    try:
        with _tf.quiet():
            # Keras 3: variables folded into constants, the same converted models several times faster
            # (tflq/_tf/frozen.py); tf_keras graphs would name some fused ops after the frozen constants instead
            frozen = freeze and not tf_keras_model and _frozen.save_frozen(
                model, serve, input_specs, export_dir, SERVING_KEY
            )
            if not frozen:
                if tf_keras_model:
                    function = tf.function(serve, input_signature=input_specs)
                    signatures = {SERVING_KEY: function.get_concrete_function()}
                    tf.saved_model.save(model, str(export_dir), signatures=signatures)
                else:
                    archive = keras.export.ExportArchive()
                    archive.track(model)
                    archive.add_endpoint(SERVING_KEY, serve, input_signature=input_specs)
                    archive.write_out(str(export_dir), verbose=False)
    except _tf.library_errors() as error:
        raise ModelLoadError(f"{source}: cannot export the model to a SavedModel: {keras_reason(str(error))}") from None
    layer_names = tuple(layer.name for layer in _all_layers(model))
    # The interface is known from the specs the export was made with: no need to load the SavedModel back.
    outputs = tuple(
        TensorSpec(
            name=name,
            shape=(static_batch, *(None if d is None else int(d) for d in tensor.shape[1:])),
            dtype=_dtype_name(tensor.dtype),
        )
        for name, tensor in zip(output_names, model.outputs, strict=True)
    )
    inputs = tuple(_spec_from_tf(spec.name, spec) for spec in input_specs)
    return ExportedModel(
        source=source,
        saved_model_dir=export_dir,
        signature_key=SERVING_KEY,
        inputs=tuple(sorted(inputs, key=lambda spec: spec.name)),
        outputs=outputs,
        keras_layer_names=layer_names,
        keras_layers=tuple(keras_layer_list(model)),
        frozen=frozen,
    )


def _inputs_as_built(model: Any, flat_inputs: list[Any]) -> Any:
    """The inputs (in ``model.inputs`` order) in the structure the model was built with: one tensor, a list, or
    a dict keyed by input name (every keras_hub model), so a dict-input model is called with a dict."""
    structure = getattr(model, "_inputs_struct", None)  # Keras 3 Functional
    if structure is not None:
        return _tf.keras().tree.pack_sequence_as(structure, flat_inputs)
    structure = getattr(model, "_nested_inputs", None)  # tf_keras Functional
    if isinstance(structure, dict):
        return _tf.tf().nest.pack_sequence_as(structure, flat_inputs)
    return flat_inputs[0] if len(flat_inputs) == 1 else flat_inputs


def keras_reason(text: str) -> str:
    """One line from a Keras error: its first line plus the reason Keras puts below "Exception encountered when
    calling ..." (which alone says nothing), without terminal colour codes or the "Arguments received" dump."""
    import re

    text = re.sub(r"\x1b\[[0-9;]*m", "", text)
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    if not lines:
        return text.strip()
    reason: list[str] = []
    for line in lines[1:]:
        if line.startswith("Arguments received"):
            break
        reason.append(line)
    joined = " ".join([lines[0], *reason]) if "Exception encountered" in lines[0] else lines[0]
    return _first_sentence(joined, limit=600)


def keras_layer_list(model: Any, prefix: str = "") -> list[KerasLayer]:
    """Every layer of ``model`` in model order, nested models' layers under ``<model name>/``."""
    found: list[KerasLayer] = []
    for layer in getattr(model, "layers", []):
        path = f"{prefix}{layer.name}"
        children = getattr(layer, "layers", None)
        found.append(KerasLayer(path, type(layer).__name__, container=bool(children)))
        if children:
            found.extend(keras_layer_list(layer, path + "/"))
    return found


def _dtype_name(dtype: Any) -> str:
    import numpy as np

    name = getattr(dtype, "name", None) or str(dtype)
    return np.dtype(name.replace("tf.", "")).name


def _all_layers(model: Any) -> list[Any]:
    layers = []
    for layer in getattr(model, "layers", []):
        if hasattr(layer, "layers") and layer.layers:
            layers.extend(_all_layers(layer))
        layers.append(layer)
    return layers


def read_saved_model(path: Path, signature: str | None, *, source: Path | None = None) -> ExportedModel:
    """Read a SavedModel's signature (``signature`` or the default one). Raises ModelLoadError."""
    tf = _tf.tf()
    try:
        with _tf.quiet():
            loaded = tf.saved_model.load(str(path))
    except _tf.library_errors() as error:
        raise ModelLoadError(f"{path}: cannot load the SavedModel: {_first_sentence(str(error))}") from None
    keys = sorted(loaded.signatures.keys())
    if not keys:
        raise ModelLoadError(f"{path}: the SavedModel has no signatures; export it with a serving signature")
    if signature is None:
        if SERVING_KEY in keys:
            signature = SERVING_KEY
        elif len(keys) == 1:
            signature = keys[0]
        else:
            raise ModelLoadError(f"{path}: the SavedModel has several signatures ({', '.join(keys)}); choose one with "
                                 "--signature")
    elif signature not in keys:
        raise ModelLoadError(f"{path}: no signature {signature!r}; the SavedModel has {', '.join(keys)}")
    function = loaded.signatures[signature]
    _, input_kwargs = function.structured_input_signature
    inputs = tuple(_spec_from_tf(name, spec) for name, spec in sorted(input_kwargs.items()))
    outputs_struct = function.structured_outputs
    if not isinstance(outputs_struct, dict):
        outputs_struct = {"output_0": outputs_struct}
    outputs = tuple(
        TensorSpec(
            name=name,
            shape=tuple(None if d is None else int(d) for d in tensor.shape.as_list()),
            dtype=tensor.dtype.as_numpy_dtype.__name__,
        )
        for name, tensor in outputs_struct.items()
    )
    return ExportedModel(
        source=source or path, saved_model_dir=path, signature_key=signature, inputs=inputs, outputs=outputs
    )


def export_model(
    path: Path, export_dir: Path, options: ModelOptions = ModelOptions(), *, freeze: bool = True
) -> ExportedModel:
    """Prepare any supported model for conversion: load, and export once unless it is already a SavedModel
    (``freeze``: a Keras 3 model frozen when it can be, see :func:`export_keras_model`).

    Returns the ExportedModel every mode converts from. Raises ModelLoadError (or UsageError for options).
    """
    kind = model_kind(path)
    if kind == "tflite":
        raise ModelLoadError(f"{path}: a .tflite has no SavedModel export (tflq.convert.source reads it as it is)")
    if kind == "savedmodel":
        if options.custom_objects:
            raise UsageError("--custom-objects applies to Keras model files, not to a SavedModel directory")
        if options.static_batch is not None:
            raise UsageError(
                f"--static-batch applies to Keras model files (.keras, .h5); {path} is a SavedModel directory, whose "
                "signature fixes its shapes: export it with the batch size you want"
            )
        return read_saved_model(path, options.signature, source=path)
    if options.signature:
        raise UsageError(f"--signature applies to SavedModel directories; {path} is a Keras {kind} file")
    model = load_keras_model(path, options)
    return export_keras_model(model, path, export_dir, options.static_batch, freeze=freeze)
