"""tflq: turn trained TensorFlow/Keras models into quantized TensorFlow Lite models and measure them.

Importing this package is cheap: TensorFlow is imported only by the functions that need it.
"""
from __future__ import annotations

__version__ = "0.1.0"
