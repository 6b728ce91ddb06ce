"""Calibrate once, quantize many times: the one wrapper around TensorFlow Lite's private quantization API.

The public converter calibrates on every ``convert()`` call, and calibration dominates full-integer conversion
time. Here the converter calibrates once (``_experimental_calibrate_only``) and each variant is quantized from
that calibrated model:

* int8 activations: ``tensorflow.lite.python.convert.mlir_quantize`` -- exactly what the public converter runs
  after calibrating (the path TensorFlow's QuantizationDebugger uses too);
* int16 activations (16x8): the calibration wrapper's ``QuantizeModel``, the quantizer the public converter uses
  for 16x8, applied to the calibrated model instead of re-feeding the data.

``tests/test_calibrated.py`` checks both against the public path numerically. Nothing else in tflq touches these
private names, so a TensorFlow upgrade that moves them breaks one module and its test.
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
    activations: str,
    io_type: str,
    per_tensor: bool,
    allow_float_fallback: bool,
    denylisted_nodes: Sequence[str] = (),
    denylisted_ops: Sequence[str] = (),
) -> bytes:
    """Quantize a calibrated model. ``activations``: "int8" or "int16"; ``io_type``: model I/O dtype name.

    ``denylisted_nodes``/``denylisted_ops`` (int8 only) stay in float: selective quantization.
    """
    tf = _tf.tf()
    from tensorflow.lite.python import convert as tf_convert
    from tensorflow.lite.python import lite as tf_lite

    io_dtype = getattr(tf, io_type)
    if activations == "int8":
        model = tf_convert.mlir_quantize(
            calibrated,
            disable_per_channel=per_tensor,
            fully_quantize=True,
            input_data_type=io_dtype,
            output_data_type=io_dtype,
            denylisted_ops=list(denylisted_ops) or None,
            denylisted_nodes=list(denylisted_nodes) or None,
        )
    elif activations == "int16":
        if denylisted_nodes or denylisted_ops:
            raise ValueError("selective quantization applies to int8 activations only")
        from tensorflow.lite.python.optimize import calibrator

        wrapper = calibrator.Calibrator(calibrated)._calibrator
        model = wrapper.QuantizeModel(
            np.dtype(io_dtype.as_numpy_dtype).num,
            np.dtype(io_dtype.as_numpy_dtype).num,
            allow_float_fallback,
            np.dtype(np.int16).num,
            np.dtype(np.int64).num,
            per_tensor,
            False,
        )
    else:
        raise ValueError(f"unknown activation type {activations!r}")
    return bytes(tf_lite._deduplicate_readonly_buffers(model))
