"""Load a model file for quantization-aware training: a tf_keras Sequential or Functional model, bridged from Keras 3
when the file was written by Keras 3, with Lambda and custom layers refused from the saved config before any of the
file's code runs. :mod:`tflq.qat.quantize_aware` re-exports :func:`load_for_qat`.
"""
from __future__ import annotations

import json
import os
import warnings
import zipfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tflq._tf import imports as _tf
from tflq.errors import ModelLoadError, QatError
from tflq.qat.bridge import POST_TRAINING_HINT, _one_line, bridge_to_tf_keras

if TYPE_CHECKING:
    import keras
    import tf_keras

__all__ = ["load_for_qat"]


def load_for_qat(path: str | os.PathLike[str], *, custom_objects: dict[str, Any] | None = None,
                 unsafe: bool = False) -> tf_keras.Model:
    """Load a model file as a tf_keras model ready for :func:`train_qat`.

    ``.keras`` loads in Keras 3 (``safe_mode`` unless ``unsafe``) and is bridged; ``.h5``/``.hdf5`` written by Keras 2
    loads straight into tf_keras (one written by Keras 3 is bridged); a SavedModel directory loads only when it
    carries tf_keras metadata. A saved loss is kept (see :func:`resolve_loss`).

    Raises :class:`ModelLoadError` for a missing or unreadable file and :class:`QatError` for a model QAT cannot take
    (Lambda or custom layers are refused before any code in the file runs).
    """
    source = Path(path)
    if not source.exists():
        raise ModelLoadError(f"{source}: no such file or directory")
    if source.is_dir():
        return _load_saved_model_dir(source, custom_objects)
    suffix = source.suffix.lower()
    if suffix == ".keras":
        _scan_layers(_keras_zip_config(source), source)
        return bridge_to_tf_keras(_load_keras3(source, custom_objects, unsafe))
    if suffix in (".h5", ".hdf5"):
        version, config = _h5_config(source)
        _scan_layers(config, source)
        if version.startswith("3."):
            return bridge_to_tf_keras(_load_keras3(source, custom_objects, unsafe))
        return _checked_graph_model(_load_tf_keras(source, custom_objects), source)
    raise ModelLoadError(f"{source}: not a model tflq can train (expected .keras, .h5, .hdf5 or a SavedModel dir)")


def _load_keras3(source: Path, custom_objects: dict[str, Any] | None, unsafe: bool) -> keras.Model:
    import keras

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return keras.saving.load_model(source, custom_objects=custom_objects, safe_mode=not unsafe)
    except _tf.library_errors() as error:
        raise ModelLoadError(f"{source}: cannot load with Keras 3: {_one_line(error)}") from error


def _load_tf_keras(source: Path, custom_objects: dict[str, Any] | None) -> tf_keras.Model:
    import tf_keras

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return tf_keras.models.load_model(source, custom_objects=custom_objects)
    except _tf.library_errors() as error:
        raise ModelLoadError(f"{source}: cannot load with tf_keras: {_one_line(error)}") from error


def _load_saved_model_dir(source: Path, custom_objects: dict[str, Any] | None) -> tf_keras.Model:
    if not (source / "saved_model.pb").exists():
        raise ModelLoadError(f"{source}: a directory without saved_model.pb is not a SavedModel")
    if not (source / "keras_metadata.pb").exists():
        raise QatError(
            f"{source}: this SavedModel has no Keras metadata (it was written by tf.saved_model.save or "
            f"model.export), so there is no Keras model to fine-tune; give QAT the .keras or .h5 file, or "
            f"{POST_TRAINING_HINT}"
        )
    return _checked_graph_model(_load_tf_keras(source, custom_objects), source)


def _keras_zip_config(source: Path) -> dict[str, Any]:
    try:
        with zipfile.ZipFile(source) as archive:
            return json.loads(archive.read("config.json"))
    except (zipfile.BadZipFile, KeyError, ValueError, OSError) as error:
        raise ModelLoadError(f"{source}: not a readable .keras archive ({_one_line(error)})") from error


def _h5_config(source: Path) -> tuple[str, dict[str, Any]]:
    """(keras_version, model config) of an HDF5 model file."""
    import h5py

    try:
        with h5py.File(source, "r") as h5:
            version = h5.attrs.get("keras_version", "")
            config = h5.attrs.get("model_config")
    except OSError as error:
        raise ModelLoadError(f"{source}: not a readable HDF5 file ({_one_line(error)})") from error
    if config is None:
        raise ModelLoadError(f"{source}: HDF5 file without a model config (weights only?); QAT needs a whole model")
    return _decoded(version), json.loads(_decoded(config))


def _decoded(value: Any) -> str:
    """An HDF5 attribute as text (h5py returns bytes or str depending on how the file was written)."""
    return value.decode() if isinstance(value, bytes) else str(value)


def _scan_layers(config: Any, source: Path) -> None:
    """Refuse Lambda and custom layers from the saved config alone, before loading runs any of the file's code."""
    import tf_keras

    if isinstance(config, list):
        for item in config:
            _scan_layers(item, source)
        return
    if not isinstance(config, dict):
        return
    inner = config.get("config")
    class_name = config.get("class_name")
    if isinstance(inner, dict) and isinstance(inner.get("layers"), list):  # a model: look at its layers
        _scan_layers(inner["layers"], source)
        return
    if isinstance(class_name, str) and isinstance(inner, dict) and "name" in inner:
        label = f"layer '{inner['name']}' ({class_name})"
        if class_name == "Lambda":
            raise QatError(f"{source}: {label} runs arbitrary Python code that QAT can neither rebuild nor quantize; "
                           f"{POST_TRAINING_HINT}")
        module = config.get("module")
        if (module is not None and not str(module).startswith("keras")) or ">" in class_name:
            raise QatError(f"{source}: {label} is a custom layer: QAT supports built-in Keras layers only; "
                           f"{POST_TRAINING_HINT}")
        if not hasattr(tf_keras.layers, class_name):
            raise QatError(f"{source}: {label} is not a layer tf_keras has (custom, or new in Keras 3), so QAT "
                           f"cannot take it; {POST_TRAINING_HINT}")
        for key in ("layer", "backward_layer"):  # wrappers such as Bidirectional or TimeDistributed
            _scan_layers(inner.get(key), source)


def _checked_graph_model(model: tf_keras.Model, source: Path | str) -> tf_keras.Model:
    import tf_keras

    if not isinstance(model, tf_keras.Sequential) and not getattr(model, "_is_graph_network", False):
        raise QatError(f"{source}: model '{model.name}' is a subclassed model ({type(model).__name__}); QAT needs a "
                       f"Sequential or Functional model; {POST_TRAINING_HINT}")
    return model
