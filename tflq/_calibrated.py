"""Calibrate once, quantize many times: the one wrapper around TensorFlow Lite's private quantization API.

The public converter calibrates on every ``convert()`` call, and calibration dominates full-integer conversion
time. Here the converter calibrates once (``_experimental_calibrate_only``) and each int8 variant (every I/O
type, per-channel or per-tensor, layers left in float) is quantized from that calibrated model with
``tensorflow.lite.python.convert.mlir_quantize``: exactly what the public converter runs after calibrating
(the path TensorFlow's QuantizationDebugger uses too).

16x8 is not done here: the public converter quantizes int16 activations with the older calibration wrapper,
and re-quantizing a calibrated model through that wrapper produced invalid flatbuffers for an unrolled GRU
(measured with TF 2.21), so 16x8 goes through the public path with its own calibration.

``tests/test_calibrated.py`` checks the output against the public path numerically. Nothing else in tflq touches
these private names, so a TensorFlow upgrade that moves them breaks one module and its test.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from tflq import _tf


def calibrate(converter: Any, samples: Sequence[dict[str, np.ndarray]]) -> bytes:
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
) -> bytes:
    """Quantize a calibrated model to int8 activations; ``io_type`` is the model I/O dtype name.

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
    )
    return bytes(tf_lite._deduplicate_readonly_buffers(model))
