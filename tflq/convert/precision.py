"""Per-layer precision (``layer_precision``, ``--precision LAYER=PRECISION``): its kind, which modes can honour
which precision, and the layers -> output tensors resolution the LiteRT Quantizer rules need.

A precision is ``float`` (the layer is not quantized), ``int8`` (int8 weights where the mode's are int4) or
``16x8`` (int16 activations and int8 weights where the mode's activations are int8). A LAYER is a Keras layer
path (or the last part of a nested layer's path), a regular expression matched in full against the layer paths,
or, for a model without Keras layers, an op's output tensor name.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from tflq import options as opts
from tflq.errors import ConfigError, UsageError
from tflq.modes import MODES, Mode

if TYPE_CHECKING:
    from tflq.convert.layer_map import ModelOp

PRECISIONS: tuple[str, ...] = ("float", "int8", "16x8")


@dataclass(frozen=True)
class LayerPrecision(opts.Names):
    """``LAYER=PRECISION`` items; in YAML also a mapping ``{LAYER: PRECISION}``."""

    what: str = "LAYER=PRECISION item"
    metavar: str | None = "LAYER=PRECISION"

    def check(self, value: Any, where: str) -> tuple[str, ...]:
        if isinstance(value, Mapping):
            value = [f"{key}={precision}" for key, precision in value.items()]
        items = super().check(value, where)
        for item in items:
            parse_item(item, where)
        return tuple(items)

    def describe(self) -> str:
        return f"list of LAYER=PRECISION ({', '.join(PRECISIONS)}), or a mapping LAYER: PRECISION"


def parse_item(item: str, where: str = "--precision") -> tuple[str, str]:
    """``(layer, precision)`` of one ``LAYER=PRECISION`` item. Raises ConfigError naming ``where``."""
    layer, sign, precision = item.rpartition("=")
    layer, precision = layer.strip(), precision.strip().lower()
    if precision == "int16":
        precision = "16x8"
    if not sign or not layer:
        raise ConfigError(f"{where}: expected LAYER=PRECISION, found {item!r}")
    if precision not in PRECISIONS:
        raise ConfigError(f"{where}: {item!r}: expected a precision in {', '.join(PRECISIONS)}, found {precision!r}")
    return layer, precision


def parsed(items: Sequence[str]) -> tuple[tuple[str, str], ...]:
    """Every item of a ``layer_precision`` value as ``(layer, precision)``."""
    return tuple(parse_item(item) for item in items)


def refusal(mode: Mode, precision: str) -> str | None:
    """Why ``mode`` cannot keep a layer at ``precision`` (None: it can)."""
    if "layer_precision" not in mode.settings:
        takers = ", ".join(name for name, other in MODES.items() if "layer_precision" in other.settings)
        return f"mode {mode.name} takes no per-layer precision (modes that do: {takers})"
    if precision == "int8" and not (mode.weight_bits or 8) < 8:
        return f"mode {mode.name} already has int8 weights"
    if precision == "16x8" and mode.activations != "int8":
        return (
            "int16 activations need int8 activations elsewhere (int8 on --engine litert-quantizer, int4x8); "
            f"mode {mode.name} has none"
        )
    return None


def check_modes(items: Sequence[str], modes: Sequence[str]) -> None:
    """Raise UsageError (one line) unless every requested mode that reads ``layer_precision`` can honour every item,
    and at least one requested mode reads it."""
    if not items:
        return
    readers = [MODES[name] for name in modes if name in MODES and "layer_precision" in MODES[name].settings]
    if not readers:
        takers = ", ".join(name for name, mode in MODES.items() if "layer_precision" in mode.settings)
        raise UsageError(f"--precision applies to mode {takers} (LiteRT Quantizer); add --mode with one of them")
    for layer, precision in parsed(items):
        for mode in readers:
            reason = refusal(mode, precision)
            if reason:
                raise UsageError(f"--precision {layer}={precision}: {reason}")


def resolve(ops: Sequence[ModelOp], items: Sequence[str]) -> tuple[tuple[str, str], ...]:
    """``(output tensor, precision)`` of every float op the items name, later items winning.

    Raises UsageError for a layer (or pattern) that names no op, listing the layers that have ops."""
    from tflq.convert.layer_map import layers_with_ops  # numpy: not at import time (``tflq --help``)

    candidates = [op for op in ops if op.float_output]
    with_ops = layers_with_ops(candidates) or [op.tensor for op in candidates]
    chosen: dict[str, str] = {}
    for layer, precision in parsed(items):
        matched = [op for op in candidates if _names(op, layer)]
        if not matched:
            close = difflib.get_close_matches(layer, with_ops, n=1, cutoff=0.6)
            hint = f"did you mean {close[0]!r}? " if close else ""
            raise UsageError(
                f"--precision {layer}={precision}: no layer or op {layer!r} in the model; {hint}"
                f"layers with ops: {', '.join(with_ops)}"
            )
        for op in matched:
            chosen[op.tensor] = precision
    return tuple(chosen.items())


def _names(op: ModelOp, layer: str) -> bool:
    if op.tensor == layer:
        return True
    for path in op.layers:
        if path == layer or path.startswith(layer + "/") or path.rpartition("/")[2] == layer:
            return True
    try:
        pattern = re.compile(layer)
    except re.error:
        return False
    return any(pattern.fullmatch(path) for path in op.layers)
