"""Calibrate once, quantize many times: the one wrapper around TensorFlow Lite's private quantization API.

The public converter calibrates on every ``convert()`` call, and calibration dominates full-integer conversion
time. Here the converter calibrates once (``_experimental_calibrate_only``) and each int8 variant (every I/O
type, per-channel or per-tensor, layers left in float) is quantized from that calibrated model with
``tensorflow.lite.python.convert.mlir_quantize``: exactly what the public converter runs after calibrating
(the path TensorFlow's QuantizationDebugger uses too).

16x8 is not done here: the public converter quantizes int16 activations with the older calibration wrapper,
and re-quantizing a calibrated model through that wrapper produced invalid flatbuffers for an unrolled GRU
(measured with TF 2.21), so 16x8 goes through the public path with its own calibration.

It also holds :func:`saved_model_converter`: ``TFLiteConverter.from_saved_model`` loads the whole SavedModel in
Python only to list its signatures (about half of a float conversion on MobileNetV2) and then hands the directory
to the MLIR converter, which reads it again. tflq has read the signatures already, so it builds the same converter
object directly.

``tests/test_convert_calibrate_once.py`` checks both shortcuts against the public path. Nothing else in tflq touches
these private names, so a TensorFlow upgrade that moves them breaks one module and its test.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

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
    model = tf_convert.mlir_quantize(
        calibrated,
        disable_per_channel=per_tensor,
        fully_quantize=False,  # as the public converter calls it
        input_data_type=io_dtype,
        output_data_type=io_dtype,
        denylisted_ops=list(denylisted_ops) or None,
        denylisted_nodes=list(denylisted_nodes) or None,
        disable_per_channel_for_dense_layers=dense_per_tensor,
    )
    return bytes(tf_lite._deduplicate_readonly_buffers(model))


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
