"""Calibrate once, quantize many times: the one wrapper around TensorFlow Lite's private quantization API.

The public converter calibrates on every ``convert()`` call, and calibration dominates full-integer conversion
time. Here the converter calibrates once (``_experimental_calibrate_only``) and each int8 variant (every I/O
type, per-channel or per-tensor, layers left in float) is quantized from that calibrated model with
``tensorflow.lite.python.convert.mlir_quantize``: exactly what the public converter runs after calibrating
(the path TensorFlow's QuantizationDebugger uses too).

The calibration itself starts from the float32 conversion tflq makes anyway (:func:`calibrate_float`): the
converter's calibrate-only path converts the SavedModel again to the very same graph (measured on MobileNetV2: the
same ops, tensors and buffers; only its conversion metadata differs), so converting once saves a whole conversion.

16x8 is quantized from the same calibration: the public converter quantizes int16 activations with the older
calibration wrapper (``QuantizeModel`` after feeding the samples), not ``mlir_quantize``. :func:`calibrate_float`
keeps the wrapper that measured the samples, and :func:`quantize_int16` asks it for the int16 model, exactly the
call the public converter makes after its own (identical) calibration. A *new* wrapper built on the calibrated
bytes is not used: re-quantizing through it produced invalid flatbuffers for an unrolled GRU (TF 2.21).

Every model quantized from a :func:`calibrate_float` calibration gets the conversion metadata the public converter
writes (its optimization mode and the hash of the final model), so those models are byte-identical to the public
converter's (``tests/test_convert_calibrate_once.py`` checks it).

It also holds :func:`saved_model_converter`: ``TFLiteConverter.from_saved_model`` loads the whole SavedModel in
Python only to list its signatures (about half of a float conversion on MobileNetV2) and then hands the directory
to the MLIR converter, which reads it again. tflq has read the signatures already, so it builds the same converter
object directly.

``tests/test_convert_calibrate_once.py`` checks both shortcuts against the public path. Nothing else in tflq touches
these private names, so a TensorFlow upgrade that moves them breaks one module and its test.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from tflq._tf import imports as _tf

if TYPE_CHECKING:
    from tensorflow.lite.python.lite import TFLiteConverterBaseV2


def saved_model_converter(saved_model_dir: str, signature_key: str) -> TFLiteConverterBaseV2:
    """The converter ``from_saved_model(dir, signature_keys=[key])`` returns, without its Python SavedModel load."""
    _tf.tf()
    from tensorflow.lite.python import conversion_metadata_schema_py_generated as metadata_schema
    from tensorflow.lite.python import lite as tf_lite

    tf_lite.TFLiteConverterBase._set_original_model_type(metadata_schema.ModelType.TF_SAVED_MODEL)
    converter = tf_lite.TFLiteSavedModelConverterV2(saved_model_dir, {"serve"}, [signature_key])
    if not converter.saved_model_dir:  # the MLIR path could not take the directory: use the public constructor
        import tensorflow as tf

        return tf.lite.TFLiteConverter.from_saved_model(saved_model_dir, signature_keys=[signature_key])
    return converter


def calibrate(converter: TFLiteConverterBaseV2, samples: Sequence[dict[str, np.ndarray]]) -> bytes:
    """Run the converter's calibration only. ``converter`` is fresh and float (no optimization set yet)."""
    tf = _tf.tf()
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = lambda: iter(samples)
    converter._experimental_calibrate_only = True
    return bytes(converter.convert())


class FloatModel(bytes):
    """A float32 conversion (the bytes the public converter returns), holding ``raw``: the converter's model before
    its last steps (read-only buffer deduplication, conversion metadata), which is what its quantizer starts from."""

    raw: bytes | None = None


def convert_float(converter: TFLiteConverterBaseV2) -> FloatModel:
    """``converter.convert()`` for a float32 conversion, keeping the model before deduplication (``FloatModel.raw``):
    the converter's calibration works on that one. Deduplicated constants shared by several tensors would be
    quantized once per tensor in one buffer (an invalid flatbuffer: measured on the unrolled GRU sample)."""
    _tf.tf()
    from tensorflow.lite.python import lite as tf_lite

    deduplicate = tf_lite._deduplicate_readonly_buffers
    seen: list[bytes] = []

    def recording(model: bytes) -> bytes:
        seen.append(bytes(model))
        return deduplicate(model)

    tf_lite._deduplicate_readonly_buffers = recording
    try:
        converted = FloatModel(converter.convert())
    finally:
        tf_lite._deduplicate_readonly_buffers = deduplicate
    converted.raw = seen[0] if len(seen) == 1 else None
    return converted


class CalibratedModel(bytes):
    """The calibrated model (a float model with the min/max statistics of the calibration samples) as the converter's
    calibrate-only path returns it (deduplicated, with its conversion metadata), holding ``raw``: the calibration's
    own output, which the converter quantizes to int8; ``calibrator``: the calibration wrapper that measured the
    samples (for :func:`quantize_int16`); ``metadata``: the float model's conversion metadata (for the quantized
    models' own)."""

    raw: bytes | None = None
    calibrator: Any = None
    metadata: Any = None


def calibrate_float(float_model: bytes, samples: Sequence[dict[str, np.ndarray]]) -> CalibratedModel:
    """Calibrate the float32 conversion ``float_model`` on ``samples``: the model the public converter's calibration
    gives (its calibrate-only path converts the export to the same float model first). A :class:`FloatModel` is
    calibrated from its ``raw`` model, exactly as the converter does; other float bytes (a float ``.tflite``) with
    their shared constant buffers given back to each tensor."""
    _tf.tf()
    from tensorflow.lite.python import lite as tf_lite
    from tensorflow.lite.python.optimize import calibrator as tf_calibrator

    stripped, metadata = _without_conversion_metadata(float_model)
    raw = getattr(float_model, "raw", None)
    source = raw if raw is not None else _unshared_buffers(stripped)
    calibrator = tf_calibrator.Calibrator(tf_calibrator.add_intermediate_tensors(source))
    raw_calibrated = bytes(calibrator.calibrate(lambda: iter(samples)))
    deduplicated = bytes(tf_lite._deduplicate_readonly_buffers(raw_calibrated))
    calibrated = CalibratedModel(_with_conversion_metadata(deduplicated, metadata, "PTQ_FULL_INTEGER"))
    calibrated.raw = raw_calibrated
    calibrated.calibrator = calibrator
    calibrated.metadata = metadata
    return calibrated


def quantize_int16(
    calibrated: bytes, *, io_type: str, per_tensor: bool, allow_float: bool, dense_per_tensor: bool = False
) -> bytes:
    """Quantize a calibrated model to int16 activations and int8 weights (16x8), as the public converter does after
    calibrating: the wrapper that calibrated ``calibrated`` (a :class:`CalibratedModel`) quantizes it, with
    int64 biases; ``io_type`` is float32 or int16. Raises ValueError for plain bytes, RuntimeError from the
    quantizer (an op without a 16x8 kernel: its message names it)."""
    tf = _tf.tf()
    from tensorflow.lite.python import lite as tf_lite

    calibrator = getattr(calibrated, "calibrator", None)
    if calibrator is None:
        raise ValueError("16x8 needs the calibration that measured the model (a CalibratedModel), got plain bytes")
    io_dtype = getattr(tf, io_type)
    io_number = np.dtype(io_dtype.as_numpy_dtype()).num
    model = calibrator._calibrator.QuantizeModel(
        io_number,
        io_number,
        allow_float,
        np.dtype(np.int16).num,
        np.dtype(np.int64).num,  # the converter's bias type for int16 activations
        per_tensor,
        dense_per_tensor,
    )
    model = tf_lite._modify_model_io_type(model, io_dtype, io_dtype)
    model = tf_lite._deduplicate_readonly_buffers(model)
    return _with_conversion_metadata(bytes(model), getattr(calibrated, "metadata", None), "PTQ_INT16")


def quantize(
    calibrated: bytes,
    *,
    io_type: str,
    per_tensor: bool,
    denylisted_nodes: Sequence[str] = (),
    denylisted_ops: Sequence[str] = (),
    dense_per_tensor: bool = False,
) -> bytes:
    """Quantize a calibrated model to int8 activations; ``io_type`` is the model I/O dtype name; ``dense_per_tensor``
    gives FULLY_CONNECTED weights one scale (the public converter's
    ``_experimental_disable_per_channel_quantization_for_dense_layers``).

    ``denylisted_nodes``/``denylisted_ops`` stay in float: selective quantization.
    """
    tf = _tf.tf()
    from tensorflow.lite.python import convert as tf_convert
    from tensorflow.lite.python import lite as tf_lite

    io_dtype = getattr(tf, io_type)
    raw = getattr(calibrated, "raw", None)  # a CalibratedModel: what the converter quantizes right after calibrating
    model = tf_convert.mlir_quantize(
        raw if raw is not None else calibrated,
        disable_per_channel=per_tensor,
        fully_quantize=False,  # as the public converter calls it
        input_data_type=io_dtype,
        output_data_type=io_dtype,
        denylisted_ops=list(denylisted_ops) or None,
        denylisted_nodes=list(denylisted_nodes) or None,
        disable_per_channel_for_dense_layers=dense_per_tensor,
    )
    model = bytes(tf_lite._deduplicate_readonly_buffers(model))
    # a converter-calibrated model (qat) carries its converter's metadata through; a CalibratedModel gets it here
    return _with_conversion_metadata(model, getattr(calibrated, "metadata", None), "PTQ_FULL_INTEGER")


def debug_model(calibrated: bytes, *, per_tensor: bool, whole_model: bool) -> bytes:
    """The int8 model of ``calibrated`` instrumented with ``NumericVerify`` ops (TFLite's quantization debug mode).

    Each quantized op is followed by its float twin and a NumericVerify op whose inputs are (quantized output, float
    output) and whose output is their difference, dequantized minus float. With ``whole_model=False`` the float
    twin reads the same (dequantized) inputs as the quantized op: the op's own error. With ``whole_model=True`` the
    float ops form the whole float model alongside the quantized one: the error accumulated up to that op. Exactly
    what ``tf.lite.experimental.QuantizationDebugger`` builds and reads (``tests/test_debug.py`` compares them).
    Read the tensors with ``experimental_preserve_all_tensors=True``.
    """
    _tf.tf()
    from tensorflow.lite.python import convert as tf_convert

    return bytes(
        tf_convert.mlir_quantize(
            calibrated,
            disable_per_channel=per_tensor,
            fully_quantize=False,
            enable_numeric_verify=True,
            enable_whole_model_verify=whole_model,
        )
    )


_METADATA_NAME = "CONVERSION_METADATA"


def _without_conversion_metadata(content: bytes) -> tuple[bytes, Any]:
    """``content`` without its conversion metadata entry (as the converter hands a model to its quantizer), and that
    metadata (None when it has none)."""
    from tensorflow.lite.python import conversion_metadata_schema_py_generated as metadata_schema
    from tensorflow.lite.tools import flatbuffer_utils

    model = flatbuffer_utils.convert_bytearray_to_object(content)
    entries = [entry for entry in model.metadata or [] if entry.name.decode("utf-8", "replace") == _METADATA_NAME]
    if not entries:
        return bytes(content), None
    entry = entries[0]
    metadata = metadata_schema.ConversionMetadataT.InitFromPackedBuf(bytes(model.buffers[entry.buffer].data), 0)
    model.metadata = [other for other in model.metadata if other is not entry]
    if entry.buffer == len(model.buffers) - 1 and not any(other.buffer == entry.buffer for other in model.metadata):
        model.buffers.pop()
    else:
        model.buffers[entry.buffer].data = None
    return bytes(flatbuffer_utils.convert_object_to_bytearray(model)), metadata


def _with_conversion_metadata(content: bytes, metadata: Any, optimization: str) -> bytes:
    """``content`` with the conversion metadata the public converter writes last: ``metadata``'s environment,
    ``optimization`` (a ``ModelOptimizationMode`` name) and the final model's hash. Unchanged when ``metadata`` is
    None (the float model had none)."""
    if metadata is None:
        return content
    import copy

    from tensorflow.lite.python import conversion_metadata_schema_py_generated as metadata_schema
    from tensorflow.lite.python import lite as tf_lite
    from tensorflow.lite.python import util as tf_util
    from tensorflow.lite.tools import flatbuffer_utils

    metadata = copy.deepcopy(metadata)
    model = flatbuffer_utils.convert_bytearray_to_object(content)
    if metadata.options is None:
        metadata.options = metadata_schema.ConversionOptionsT()
    metadata.options.modelOptimizationModes = [
        getattr(metadata_schema.ModelOptimizationMode, optimization),
        *tf_lite._get_sparsity_modes(model),
    ]
    metadata.environment.modelHash = tf_lite._get_model_hash(model)
    model = tf_util.populate_conversion_metadata(model, metadata)
    return bytes(flatbuffer_utils.convert_object_to_bytearray(model))


def _unshared_buffers(content: bytes) -> bytes:
    """``content`` with every constant buffer that several tensors share copied, one per tensor (undoing the
    converter's read-only buffer deduplication, which its quantizer does not expect)."""
    from tensorflow.lite.tools import flatbuffer_utils

    model = flatbuffer_utils.convert_bytearray_to_object(content)
    owners: dict[int, int] = {}
    changed = False
    for subgraph in model.subgraphs:
        for tensor in subgraph.tensors:
            buffer = model.buffers[tensor.buffer] if 0 < tensor.buffer < len(model.buffers) else None
            if buffer is None or buffer.data is None or len(buffer.data) == 0:
                continue
            if tensor.buffer in owners:
                copy = type(buffer)()
                copy.data = np.array(buffer.data, copy=True)
                model.buffers.append(copy)
                tensor.buffer = len(model.buffers) - 1
                changed = True
            else:
                owners[tensor.buffer] = 1
    return bytes(flatbuffer_utils.convert_object_to_bytearray(model)) if changed else content
