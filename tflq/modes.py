"""THE registry of conversion modes: the only list of modes in tflq.

The CLI choices, YAML validation, ``tflq modes``, the docs and the parametrized tests all read :data:`MODES`.
Adding a mode is one :class:`Mode` entry here. Each mode configures a *fresh* converter (settings never leak
from one mode to the next).
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from tflq.errors import UsageError

FLOAT_IO = "float32"


@dataclass(frozen=True)
class ModeSettings:
    """What one variant of a mode asks of the converter."""

    io_type: str = FLOAT_IO
    per_tensor: bool = False
    allow_float_fallback: bool = False


@dataclass(frozen=True)
class Mode:
    """One conversion mode.

    ``io_types``: the model input/output types the mode supports, default first.
    ``activations``: for calibrated modes, the activation type ("int8" or "int16"); None otherwise.
    ``configure``: sets up a fresh ``TFLiteConverter`` (and its ``tensorflow`` module) for one variant.
    ``needs_training``: the mode trains (QAT) and needs training data; its quantization ranges come from training,
    so it needs no calibration data (its representative samples come from the training data).
    ``settings``: the conversion options (besides ``io_type``) this mode reads; the batch runner's cache keys
    include only these, so changing ``per_tensor`` does not rebuild a float32 model.
    """

    name: str
    summary: str
    io_types: tuple[str, ...]
    activations: str | None
    configure: Callable[[Any, Any, ModeSettings], None]
    needs_training: bool = False
    settings: tuple[str, ...] = ()

    @property
    def calibrated(self) -> bool:
        """True when the mode needs a representative (calibration) dataset."""
        return self.activations is not None and not self.needs_training

    @property
    def integer(self) -> bool:
        """True when the mode quantizes activations, so every op should have an integer kernel."""
        return self.activations is not None


def _float32(converter: Any, tf: Any, settings: ModeSettings) -> None:
    del converter, tf, settings  # the baseline: no optimization


def _dynamic(converter: Any, tf: Any, settings: ModeSettings) -> None:
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter._experimental_disable_per_channel = settings.per_tensor


def _float16(converter: Any, tf: Any, settings: ModeSettings) -> None:
    del settings
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.target_spec.supported_types = [tf.float16]


def _full_integer(ops_set: str) -> Callable[[Any, Any, ModeSettings], None]:
    """A configure function for a calibrated integer mode whose builtin op set is ``tf.lite.OpsSet.<ops_set>``."""

    def configure(converter: Any, tf: Any, settings: ModeSettings) -> None:
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        ops = [getattr(tf.lite.OpsSet, ops_set)]
        if settings.allow_float_fallback:
            ops.append(tf.lite.OpsSet.TFLITE_BUILTINS)
        converter.target_spec.supported_ops = ops
        converter.inference_input_type = getattr(tf, settings.io_type)
        converter.inference_output_type = getattr(tf, settings.io_type)
        converter._experimental_disable_per_channel = settings.per_tensor

    return configure


_int8 = _full_integer("TFLITE_BUILTINS_INT8")
_int16x8 = _full_integer("EXPERIMENTAL_TFLITE_BUILTINS_ACTIVATIONS_INT16_WEIGHTS_INT8")


def _qat(converter: Any, tf: Any, settings: ModeSettings) -> None:
    """Full integer from a quantization-aware-trained export: the ranges come from training (fake quantization);
    the representative samples only fill in tensors training left without a range. Weight granularity is what
    tfmot trained (per-channel convolutions), so ``per_tensor`` does not apply."""
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    if settings.allow_float_fallback:
        ops.append(tf.lite.OpsSet.TFLITE_BUILTINS)
    converter.target_spec.supported_ops = ops
    if settings.io_type != FLOAT_IO:
        converter.inference_input_type = getattr(tf, settings.io_type)
        converter.inference_output_type = getattr(tf, settings.io_type)


MODES: dict[str, Mode] = {
    mode.name: mode
    for mode in (
        Mode("float32", "float32 baseline: no quantization", (FLOAT_IO,), None, _float32),
        Mode("float16", "float16 weights, float32 compute (half the size, GPU-friendly)", (FLOAT_IO,), None, _float16),
        Mode("dynamic", "dynamic range: int8 weights, activations quantized on the fly", (FLOAT_IO,), None, _dynamic,
             settings=("per_tensor",)),
        Mode(
            "int8",
            "full integer: int8 weights and activations, calibrated (I/O float32, int8 or uint8)",
            (FLOAT_IO, "int8", "uint8"),
            "int8",
            _int8,
            settings=("per_tensor", "allow_float_fallback", "skip_layers", "skip_ops"),
        ),
        Mode(
            "qat",
            "quantization-aware training: fine-tune with fake quantization, then full integer (needs training data; "
            "I/O float32, int8 or uint8)",
            (FLOAT_IO, "int8", "uint8"),
            "int8",
            _qat,
            needs_training=True,
            settings=("allow_float_fallback",),
        ),
        Mode(
            "16x8",
            "int16 activations, int8 weights, calibrated (more accurate than int8; reference kernels on CPU)",
            (FLOAT_IO, "int16"),
            "int16",
            _int16x8,
            settings=("per_tensor", "allow_float_fallback"),
        ),
    )
}


def get_mode(name: str) -> Mode:
    """The mode called ``name``. Raises UsageError listing the valid names."""
    try:
        return MODES[name]
    except KeyError:
        raise UsageError(f"unknown mode {name!r}; expected one of {', '.join(MODES)}") from None


@dataclass(frozen=True)
class Variant:
    """One output file: a mode with one model I/O type."""

    mode: str
    io_type: str = FLOAT_IO

    @property
    def label(self) -> str:
        """``int8`` for float I/O, ``int8.uint8`` otherwise: the file-name part and the report id."""
        return self.mode if self.io_type == FLOAT_IO else f"{self.mode}.{self.io_type}"


def plan_variants(modes: list[str], io_types: list[str]) -> list[Variant]:
    """Expand modes x I/O types into variants, in registry order without duplicates.

    An I/O type applies to every requested mode that supports it; a mode that supports none of the requested
    I/O types gets its default. An I/O type no requested mode supports is an error (never silently dropped).
    Raises UsageError.
    """
    if not modes:
        raise UsageError("no mode requested; use --mode MODE or --all-modes")
    for name in modes:
        get_mode(name)
    all_io = sorted({io for mode in MODES.values() for io in mode.io_types})
    for io_type in io_types:
        if io_type not in all_io:
            raise UsageError(f"unknown I/O type {io_type!r}; expected one of {', '.join(all_io)}")
        if not any(io_type in MODES[name].io_types for name in modes):
            supporting = [m.name for m in MODES.values() if io_type in m.io_types]
            raise UsageError(
                f"I/O type {io_type!r} does not apply to mode(s) {', '.join(modes)}; it applies to {', '.join(supporting)}"
            )
    variants: list[Variant] = []
    for name in [m for m in MODES if m in modes]:
        mode = MODES[name]
        chosen = [io for io in io_types if io in mode.io_types] or [mode.io_types[0]]
        for io_type in chosen:
            variant = Variant(name, io_type)
            if variant not in variants:
                variants.append(variant)
    return variants
