"""Quantization-aware training (QAT) with tensorflow-model-optimization (tfmot), and its full-integer conversion.

The flow: :func:`load_for_qat` (from :mod:`tflq.qat.loading`; or :func:`tflq.qat.bridge.bridge_to_tf_keras` for a
Keras 3 model in memory) gives a tf_keras model; :func:`resolve_loss` says what to train it with; :func:`train_qat`
wraps it with tfmot's fake quantization and fine-tunes it; :func:`export_qat_saved_model` writes one SavedModel with
a dynamic batch dimension and the Keras input/output names; :func:`convert_qat` turns that into a full-integer
``.tflite`` that is known to load, allocate and run in the LiteRT interpreter.

Everything here raises :class:`tflq.errors.TflqError` children; nothing prints except tf_keras's own per-epoch
progress bar, on stderr, when ``progress=True``.
"""
from __future__ import annotations

import contextlib
import os
import re
import shutil
import sys
import tempfile
import time
import warnings
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from tflq._tf import imports as _tf
from tflq.errors import ConversionError, DataError, QatError, QatTrainingError, UsageError
from tflq.qat.bridge import POST_TRAINING_HINT, bridge_to_tf_keras
from tflq.qat.loading import _checked_graph_model, load_for_qat
from tflq.qat.losses import LossSpec, build_loss, check_labels, resolve_loss, saved_loss_specs

if TYPE_CHECKING:
    import tf_keras

__all__ = [
    "IO_TYPES",
    "LossSpec",
    "QatExport",
    "QatResult",
    "bridge_to_tf_keras",
    "build_loss",
    "check_qat_support",
    "check_training_labels",
    "convert_qat",
    "export_qat_saved_model",
    "load_for_qat",
    "prepare_qat",
    "resolve_loss",
    "saved_loss_specs",
    "train_qat",
]

IO_TYPES = ("float32", "int8", "uint8")
QUANT_PREFIX = "quant_"


# ------------------------------------------------------------------------------------------- quantizability


_UNSUPPORTED = re.compile(r"Layer (?P<name>.+?):<class '(?P<path>[\w.]+)'> is not supported")


def prepare_qat(model: tf_keras.Model) -> tf_keras.Model:
    """Wrap a tf_keras model with tfmot's fake quantization (``quantize_model``); return the new model.

    Raises :class:`QatError` naming the first layer tfmot cannot quantize (GRU, LSTM, Lambda, nested models...).
    """
    import tensorflow_model_optimization as tfmot

    model = _checked_graph_model(model, "model")
    _check_before_tfmot(model)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return tfmot.quantization.keras.quantize_model(model)
    except RuntimeError as error:
        match = _UNSUPPORTED.search(str(error))
        if match is None:
            raise QatError(f"tfmot cannot quantize model '{model.name}': {_one_line(error)}; "
                           f"{POST_TRAINING_HINT}") from error
        class_name = match["path"].rsplit(".", 1)[-1]
        raise QatError(f"layer '{match['name']}' ({class_name}) cannot be quantization-aware trained: tfmot has no "
                       f"quantization for {class_name}; {POST_TRAINING_HINT}") from error
    except (ValueError, TypeError) as error:
        raise QatError(f"tfmot cannot quantize model '{model.name}': {_one_line(error)}; "
                       f"{POST_TRAINING_HINT}") from error


# Activations tfmot can quantize: inside Dense/Conv layers (QuantizeAwareActivation), and as Activation layers.
_FUSED_ACTIVATIONS = frozenset({"linear", "relu", "swish", "gelu", "softmax", "sigmoid", "tanh"})
_ACTIVATION_LAYER_ACTIVATIONS = frozenset({"linear", "relu", "swish", "gelu", "relu6", "softmax", "sigmoid", "tanh"})


def _check_before_tfmot(model: tf_keras.Model) -> None:
    """Refuse, naming the layer, what tfmot would reject with a message that does not name it (or accept wrongly)."""
    import tf_keras

    for tensor, name in zip(model.inputs, model.input_names, strict=True):
        if not tensor.dtype.is_floating:
            raise QatError(f"input '{name}' is {tensor.dtype.name}: QAT quantizes float inputs only (an Embedding "
                           f"model cannot be quantization-aware trained); {POST_TRAINING_HINT}")
    for layer in model.layers:
        label = f"layer '{layer.name}' ({type(layer).__name__})"
        if isinstance(layer, tf_keras.Model):
            raise QatError(f"{label} is a model nested in the model, which tfmot cannot quantize; save the model "
                           f"as .keras so tflq can inline it, or {POST_TRAINING_HINT}")
        if isinstance(layer, tf_keras.layers.Lambda):
            raise QatError(f"{label} runs arbitrary Python code that QAT cannot quantize; {POST_TRAINING_HINT}")
        compute_dtype = getattr(layer, "compute_dtype", "float32")
        if not isinstance(layer, tf_keras.layers.InputLayer) and compute_dtype != "float32":
            raise QatError(f"{label} computes in {compute_dtype} (mixed precision): QAT needs a float32 model; "
                           f"{POST_TRAINING_HINT}")
        activation = getattr(getattr(layer, "activation", None), "__name__", None)
        if activation is None or isinstance(layer, tf_keras.layers.RNN):
            continue
        if isinstance(layer, tf_keras.layers.Activation):
            if activation not in _ACTIVATION_LAYER_ACTIVATIONS:
                raise QatError(f"{label}: tfmot cannot quantize activation {activation}; {POST_TRAINING_HINT}")
        elif activation not in _FUSED_ACTIVATIONS:
            raise QatError(
                f"{label}: tfmot cannot quantize activation {activation} inside a {type(layer).__name__}"
                + (" (a separate ReLU(max_value=6) layer would do)" if activation == "relu6" else "")
                + f"; {POST_TRAINING_HINT}"
            )


def check_qat_support(model: tf_keras.Model) -> None:
    """Raise :class:`QatError` if tfmot cannot quantize ``model`` (a tf_keras or Keras 3 model); cheap, no training."""
    prepare_qat(bridge_to_tf_keras(model))


# ------------------------------------------------------------------------------------------------- training


@dataclass(frozen=True)
class QatResult:
    """A trained QAT model (tf_keras, with fake-quant wrappers), its per-epoch history and the training time.

    ``history`` maps ``loss``, ``accuracy`` (classification losses), ``val_loss``, ``val_accuracy``... (multi-output:
    prefixed with the output name) to one value per epoch.
    """

    model: tf_keras.Model
    history: dict[str, tuple[float, ...]]
    seconds: float
    losses: tuple[LossSpec, ...]
    output_names: tuple[str, ...]


def train_qat(
    model: tf_keras.Model,
    train: tuple[Any, Any],
    *,
    epochs: int = 2,
    batch_size: int = 32,
    learning_rate: float = 1e-3,
    loss: str | Sequence[LossSpec] | None = None,
    from_logits: bool | None = None,
    val: tuple[Any, Any] | None = None,
    seed: int = 0,
    progress: bool = False,
) -> QatResult:
    """Fine-tune ``model`` (tf_keras, or Keras 3: bridged first) with fake quantization on ``train = (x, y)``.

    ``x`` is an array (one input), a list in input order or a dict by input name; ``y`` likewise by output.
    ``loss`` is a loss name (with ``from_logits``), already resolved :class:`LossSpec` s, or None for the model's
    saved loss. Adam at ``learning_rate``; Python, NumPy and TensorFlow seeded by ``seed`` (so is the per-epoch
    shuffling) and TensorFlow op determinism on while training (:func:`op_determinism`), so the same seed, data and
    settings give the same model on one machine; tf_keras's per-epoch progress bar (on stderr) when ``progress``.

    Returns a :class:`QatResult`. Raises :class:`UsageError` for bad settings or no loss, :class:`DataError` for data
    that does not fit the model, :class:`QatError` when tfmot cannot quantize the model, and
    :class:`QatTrainingError` when the loss becomes NaN or infinite.
    """
    import tf_keras

    for label, value in (("epochs", epochs), ("batch_size", batch_size)):
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise UsageError(f"{label} must be a positive integer, got {value!r}")
    if not (isinstance(learning_rate, (int, float)) and 0 < learning_rate < 1):
        raise UsageError(f"learning_rate must be in (0, 1), got {learning_rate!r}")
    model = bridge_to_tf_keras(model)
    if isinstance(loss, str) or loss is None:
        specs = resolve_loss(model, loss=loss, from_logits=from_logits)
    else:
        specs = tuple(loss)
        if len(specs) != len(model.outputs):
            raise UsageError(f"{len(specs)} losses for {len(model.outputs)} outputs")
    output_names = tuple(model.output_names)
    x, y = _arrays_for(model, train, "training data")
    check_training_labels(model, specs, y, "training data")
    validation = _arrays_for(model, val, "validation data") if val is not None else None
    if validation is not None:
        check_training_labels(model, specs, validation[1], "validation data")
    tf_keras.utils.set_random_seed(seed)
    qat_model = prepare_qat(model)
    losses = [build_loss(spec) for spec in specs]
    metrics = [_metrics_for(spec) for spec in specs]
    qat_model.compile(
        optimizer=tf_keras.optimizers.Adam(learning_rate=learning_rate),
        loss=losses[0] if len(losses) == 1 else losses,
        metrics=metrics[0] if len(metrics) == 1 else metrics,
    )
    started = time.perf_counter()
    # The progress bar goes to stderr, so that stdout stays clean for machine-readable output (--json).
    with contextlib.redirect_stdout(sys.stderr), op_determinism():
        fitted = qat_model.fit(
            _single_or_list(x),
            _single_or_list(y),
            epochs=epochs,
            batch_size=batch_size,
            validation_data=None if validation is None else tuple(_single_or_list(part) for part in validation),
            shuffle=True,
            verbose=1 if progress else 0,
            callbacks=[tf_keras.callbacks.TerminateOnNaN()],
        )
    losses_seen = fitted.history.get("loss", [])
    if len(losses_seen) < epochs or not np.all(np.isfinite(losses_seen)):
        last = losses_seen[-1] if losses_seen else float("nan")
        raise QatTrainingError(f"QAT training diverged in epoch {len(losses_seen)} of {epochs} (loss {last}); "
                               f"try a lower learning rate than {learning_rate:g}")
    seconds = time.perf_counter() - started
    renames = [
        (quantized + "_", original + "_")
        for quantized, original in zip(qat_model.output_names, output_names, strict=True)
    ]
    history = {}
    for key, values in fitted.history.items():
        for quantized, original in renames:
            key = key.replace(quantized, original)
        history[key] = tuple(float(value) for value in values)
    return QatResult(qat_model, history, seconds, tuple(specs), output_names)


@contextlib.contextmanager
def op_determinism() -> Iterator[None]:
    """TensorFlow op determinism (``tf.config.experimental.enable_op_determinism``) while the block runs.

    The switch is process-wide: when it was off before, it is switched off again afterwards (through TensorFlow's
    non-public ``disable_op_determinism``, when this TensorFlow has it; otherwise it stays on for the process).
    """
    import tensorflow as tf
    from tensorflow.python.framework import config as tf_config

    was_enabled = getattr(tf_config, "is_op_determinism_enabled", lambda: False)()
    tf.config.experimental.enable_op_determinism()
    try:
        yield
    finally:
        disable = getattr(tf_config, "disable_op_determinism", None)
        if not was_enabled and disable is not None:
            disable()


def check_training_labels(model: tf_keras.Model, specs: Sequence[LossSpec], labels: Any, source: str) -> None:
    """Refuse labels the losses cannot train on (strings, class ids outside the model's classes, wrong shapes...).

    ``labels`` is one array per output, in output order (a list), or a dict by output name. ``source`` names the data
    in the message (its file, or "training data"). Raises :class:`DataError`.
    """
    names = list(model.output_names)
    arrays = [labels[name] for name in names] if isinstance(labels, Mapping) else list(labels)
    if len(arrays) != len(names):
        raise DataError(f"{source}: {len(arrays)} label arrays for the model's {len(names)} outputs {names}")
    for spec, array, tensor, name in zip(specs, arrays, model.outputs, names, strict=True):
        check_labels(spec, array, tuple(tensor.shape)[1:], source=source, output=name)


def _single_or_list(arrays: list[np.ndarray]) -> np.ndarray | list[np.ndarray]:
    return arrays[0] if len(arrays) == 1 else arrays


def _metrics_for(spec: LossSpec) -> list[Any]:
    """Accuracy to report next to a classification loss (by the loss's label format); nothing for the others."""
    import tf_keras

    if spec.name == "sparse_categorical_crossentropy":
        return [tf_keras.metrics.SparseCategoricalAccuracy(name="accuracy")]
    if spec.name == "categorical_crossentropy":
        return [tf_keras.metrics.CategoricalAccuracy(name="accuracy")]
    if spec.name == "binary_crossentropy":
        return [tf_keras.metrics.BinaryAccuracy(name="accuracy", threshold=0.0 if spec.from_logits else 0.5)]
    return []


def _arrays_for(model: tf_keras.Model, data: tuple[Any, Any], what: str) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Check ``(x, y)`` against the model's inputs and outputs; return them as lists in model order."""
    if not isinstance(data, (tuple, list)) or len(data) != 2:
        raise DataError(f"{what} must be a pair (x, y)")
    x = _ordered(data[0], list(model.input_names), f"{what} x", "input")
    y = _ordered(data[1], list(model.output_names), f"{what} y", "output")
    counts = {len(array) for array in x + y}
    if len(counts) != 1:
        raise DataError(f"{what}: x and y have different numbers of samples ({sorted(counts)})")
    if counts == {0}:
        raise DataError(f"{what} is empty")
    for array, tensor, name in zip(x, model.inputs, model.input_names, strict=True):
        expected = tuple(tensor.shape)[1:]
        found = array.shape[1:]
        if len(found) != len(expected) or any(e is not None and e != f for e, f in zip(expected, found, strict=True)):
            raise DataError(f"{what} x for input '{name}': expected samples of shape {expected}, found {found}")
        if np.issubdtype(array.dtype, np.floating) and not np.all(np.isfinite(array)):
            raise DataError(f"{what} x for input '{name}' contains NaN or inf")
    return x, y


def _ordered(data: Any, names: list[str], what: str, kind: str) -> list[np.ndarray]:
    if isinstance(data, dict):
        missing = [name for name in names if name not in data]
        if missing:
            raise DataError(f"{what}: no array for {kind} {missing}; the model's {kind}s are {names}")
        arrays = [data[name] for name in names]
    elif isinstance(data, (list, tuple)):
        arrays = list(data)
    else:
        arrays = [data]
    if len(arrays) != len(names):
        raise DataError(f"{what}: {len(arrays)} arrays for {len(names)} {kind}s {names}")
    out = []
    for array in arrays:
        array = np.asarray(array)
        out.append(array.astype(np.float32) if array.dtype == np.float64 else array)
    return out


# ---------------------------------------------------------------------------------------- export and convert


@dataclass(frozen=True)
class QatExport:
    """A SavedModel of a QAT model: ``serving_default`` takes ``input_names`` and returns ``output_names``."""

    path: Path
    input_names: tuple[str, ...]
    output_names: tuple[str, ...]


def export_qat_saved_model(qat_model: Any, out_dir: str | os.PathLike[str], *,
                           output_names: Sequence[str] | None = None) -> QatExport:
    """Write ``qat_model`` (a :class:`QatResult` or its tf_keras model) as a SavedModel whose ``serving_default``
    signature has a dynamic batch dimension and takes/returns tensors named after the Keras inputs/outputs (the
    pre-QAT output names; ``quant_`` prefixes dropped unless ``output_names`` is given).

    The directory is written next to ``out_dir`` and renamed into place. Returns a :class:`QatExport`; raises
    :class:`ConversionError` when TensorFlow cannot save it.
    """
    import tensorflow as tf

    if isinstance(qat_model, QatResult):
        output_names = output_names or qat_model.output_names
        qat_model = qat_model.model
    input_names = tuple(qat_model.input_names)
    if output_names is None:
        output_names = tuple(name[len(QUANT_PREFIX):] if name.startswith(QUANT_PREFIX) else name
                             for name in qat_model.output_names)
    output_names = tuple(output_names)
    if len(output_names) != len(qat_model.outputs) or len(set(output_names)) != len(output_names):
        raise UsageError(f"output names {list(output_names)} do not fit the model's {len(qat_model.outputs)} outputs")
    specs = [tf.TensorSpec((None, *tuple(tensor.shape)[1:]), tensor.dtype, name=name)
             for tensor, name in zip(qat_model.inputs, input_names, strict=True)]

    def serve(*inputs: Any) -> dict[str, Any]:
        outputs = tf.nest.flatten(qat_model(list(inputs) if len(inputs) > 1 else inputs[0], training=False))
        return {name: output for name, output in zip(output_names, outputs, strict=True)}

    module = tf.Module()
    module.model = qat_model
    module.serve = tf.function(serve, input_signature=specs)
    target = Path(out_dir)
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        tf.saved_model.save(module, str(staging), signatures={"serving_default": module.serve.get_concrete_function()})
        if target.exists():
            shutil.rmtree(target)
        os.replace(staging, target)
    except _tf.library_errors() as error:
        raise ConversionError(f"cannot export the QAT model to {target}: {_one_line(error)}") from error
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return QatExport(target, input_names, output_names)


def convert_qat(export: QatExport, *, io_type: str = "int8", representative_inputs: Any = None,
                samples: int = 64, allow_float_fallback: bool = False) -> bytes:
    """Convert a QAT SavedModel to a full-integer TFLite model with ``io_type`` inputs/outputs; return its bytes.

    The quantization ranges come from QAT. ``representative_inputs`` (x as for :func:`train_qat`; its first
    ``samples`` samples are used) lets the converter run strictly on the int8 op set and calibrate any tensor QAT
    left without a range; without it the result is checked afterwards to compute in integers only. Unless
    ``allow_float_fallback``, an op left in float is an error. The result is loaded, allocated and run once.

    Raises :class:`UsageError` for a bad ``io_type``, :class:`ConversionError` when conversion fails, the model is
    not full-integer, or the interpreter cannot load or run it.
    """
    import tensorflow as tf

    if io_type not in IO_TYPES:
        raise UsageError(f"io_type must be one of {', '.join(IO_TYPES)}, got {io_type!r}")
    feeds = None
    if representative_inputs is not None:
        arrays = _ordered(representative_inputs, list(export.input_names), "representative inputs", "input")
        count = min(samples, min(len(array) for array in arrays))
        if count < 1:
            raise DataError("representative inputs are empty")
        feeds = [{name: array[index:index + 1] for name, array in zip(export.input_names, arrays, strict=True)}
                 for index in range(count)]
    converter = tf.lite.TFLiteConverter.from_saved_model(str(export.path))
    if feeds is not None:  # strict on the int8 op set: the registry's qat mode, as `tflq convert --mode qat` does
        from tflq.modes import MODES, ModeSettings

        MODES["qat"].configure(converter, tf, ModeSettings(io_type=io_type, allow_float_fallback=allow_float_fallback))
        converter.representative_dataset = lambda: iter(feeds)
    else:
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        if io_type != "float32":
            converter.inference_input_type = getattr(tf, io_type)
            converter.inference_output_type = getattr(tf, io_type)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the converter's own use of the deprecated tf.lite.Interpreter
            tflite_model = converter.convert()
    except _tf.library_errors() as error:
        raise ConversionError(f"qat ({io_type} I/O): the converter failed: {_one_line(error)}") from error
    float_ops = _check_runs(tflite_model, feeds[0] if feeds else None, io_type)
    if float_ops and not allow_float_fallback:
        raise ConversionError(f"qat ({io_type} I/O) is not full-integer: {', '.join(float_ops)} compute in float; "
                              f"give representative inputs, or allow float fallback")
    return tflite_model


def _check_runs(tflite_model: bytes, feed: dict[str, np.ndarray] | None, io_type: str) -> list[str]:
    """Load, allocate and run ``tflite_model`` once; return the ops that compute in float (empty when full-integer)."""
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    def cannot_run(error: Exception) -> ConversionError:
        return ConversionError(f"qat ({io_type} I/O): the LiteRT interpreter cannot run the result: {_one_line(error)}")

    try:  # LiteRT raises ValueError for a model it cannot read, RuntimeError from its kernels
        interpreter = Interpreter(model_content=tflite_model)
        interpreter.allocate_tensors()
        runner = interpreter.get_signature_runner()
        input_details = runner.get_input_details()
    except (ValueError, RuntimeError) as error:
        raise cannot_run(error) from error
    arguments = {}
    for name, detail in input_details.items():
        shape = [1, *detail["shape_signature"][1:]]
        sample = feed[name] if feed is not None else np.zeros([max(1, d) for d in shape], np.float32)
        arguments[name] = _quantize_input(sample, detail)
    try:
        runner(**arguments)
    except (ValueError, RuntimeError) as error:
        raise cannot_run(error) from error
    # Inspect the ops without the default delegate, which would hide them behind one DELEGATE op.
    plain = Interpreter(model_content=tflite_model,
                        experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
    tensors = {detail["index"]: detail for detail in plain.get_tensor_details()}
    float_ops = []
    for op in plain._get_ops_details():
        if op["op_name"] in ("QUANTIZE", "DEQUANTIZE"):
            continue
        if any(tensors[index]["dtype"] == np.float32 for index in op["outputs"] if index in tensors):
            float_ops.append(op["op_name"])
    return sorted(set(float_ops))


def _quantize_input(sample: np.ndarray, detail: dict[str, Any]) -> np.ndarray:
    dtype = np.dtype(detail["dtype"])
    if not np.issubdtype(dtype, np.integer) or np.issubdtype(np.asarray(sample).dtype, np.integer):
        return np.asarray(sample).astype(dtype)
    scale, zero_point = detail["quantization"]
    info = np.iinfo(dtype)
    return np.clip(np.round(np.asarray(sample) / scale + zero_point), info.min, info.max).astype(dtype)


def _one_line(error: BaseException) -> str:
    text = " ".join(str(error).split())
    return text if len(text) <= 300 else text[:297] + "..."
