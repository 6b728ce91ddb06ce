"""The one exception family of tflq. Libraries raise these; only ``cli/app.py`` turns them into exits.

Exit codes (documented in the README):
  0  everything asked for was done
  1  a job failed (conversion, interpreter, evaluation)
  2  usage or configuration error (bad flag, bad file, bad data, bad config)
  3  a quality gate failed (accuracy drop, size, latency) or nothing fitted an accuracy budget
"""
from __future__ import annotations

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_GATE = 3


class TflqError(Exception):
    """Base of every error tflq raises on purpose. ``str(error)`` is a one-line message for the user."""

    exit_code = EXIT_FAILED


class UsageError(TflqError):
    """The user asked for something impossible or gave a bad file, flag, or value."""

    exit_code = EXIT_USAGE


class ModelLoadError(UsageError):
    """A model file or directory cannot be loaded (missing, corrupt, unsafe, unsupported)."""


class DataError(UsageError):
    """Calibration, evaluation or training data does not fit the model (shape, dtype, NaN, empty...)."""


class ConfigError(UsageError):
    """A YAML batch configuration is invalid."""


class ConversionError(TflqError):
    """The TFLite converter failed, or its result does not load and run in the LiteRT interpreter."""


class InterpreterError(TflqError):
    """A .tflite file cannot be loaded, allocated or run by the LiteRT interpreter."""


class GateError(TflqError):
    """A quality gate failed or nothing fits the accuracy budget."""

    exit_code = EXIT_GATE


class QatError(UsageError):
    """Quantization-aware training cannot take this model (subclassed, custom, Lambda or unquantizable layers)."""


class QatTrainingError(TflqError):
    """Quantization-aware training failed while running (the loss became NaN or infinite)."""
