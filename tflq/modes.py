"""THE registry of conversion modes: the only list of modes in tflq.

A mode is a strategy: its :class:`Mode` entry says how a variant is built (its :class:`Build`), which conversion
settings it reads, which model I/O types it takes, what its weights and activations become, and whether it is the
baseline the others are compared with. The CLI choices, YAML validation, ``tflq modes``, the docs, the cache keys
and the parametrized tests all read :data:`MODES`; nothing else in tflq names a mode. Adding a mode is one entry
here (and its build, if it is built a new way). Every converter a build configures is *fresh*, so settings never
leak from one variant to the next.

The builds (:mod:`tflq.builds`, re-exported here) only describe the work: they call back into the conversion
session (:class:`Session`: the export, the one calibration, the one training run), which lives in
:mod:`tflq.convert.session` above this module.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

from tflq.builds import (  # noqa: F401 (Build, Configure, Session, the builds, FLOAT_IO: re-exported, the registry's API)
    ENGINES,
    FLOAT_IO,
    QUANTIZER_ONLY,
    Build,
    Configure,
    ConverterBuild,
    FloatBuild,
    ModeSettings,
    QuantizerBuild,
    RequantizeBuild,
    Session,
    TrainThenRequantizeBuild,
    _dynamic,
    _float16,
    _float32,
    _full_integer,
    _qat,
)
from tflq.errors import UsageError


@dataclass(frozen=True)
class Mode:
    """One conversion mode.

    ``io_types``: the model input/output types the mode takes, default first. ``weights``/``activations``: what
    they become (``activations`` None: float compute). ``build``: how a variant is made. ``settings``: the
    conversion options (besides ``io_type``) the mode reads; a variant sees only these (the others keep their
    defaults), and the batch runner's cache keys include only these, so changing ``per_tensor`` does not rebuild
    a float32 model. ``baseline``: the mode every other is compared with (exactly one). ``engine``: what
    quantizes: ``converter`` (TFLiteConverter, from the SavedModel export) or ``litert-quantizer`` (LiteRT
    Quantizer, from the float32 .tflite); for a mode both engines make, the default of its ``engine`` setting.
    ``litert``: the LiteRT Quantizer build of a converter mode it can also make (``--engine``), or None.
    ``dynamic``: activations are quantized on the fly at run time.
    """

    name: str
    summary: str
    io_types: tuple[str, ...]
    weights: str
    activations: str | None
    build: Build
    settings: tuple[str, ...] = ()
    baseline: bool = False
    engine: str = "converter"
    dynamic: bool = False
    litert: QuantizerBuild | None = None

    @property
    def engines(self) -> tuple[str, ...]:
        """The engines that can make this mode, its default first."""
        if self.litert is None:
            return (self.engine,)
        return tuple(sorted(ENGINES, key=lambda engine: engine != self.engine))

    def engine_for(self, options: Any) -> str:
        """The engine a variant of this mode uses under ``options`` (a ``ConvertOptions``): its ``engine`` setting
        when the mode reads it and it is given, else the mode's default."""
        chosen = getattr(options, "engine", None) if "engine" in self.settings else None
        return chosen or self.engine

    def build_for(self, engine: str) -> Build:
        """The build of this mode on ``engine`` (one of :attr:`engines`)."""
        if engine == "litert-quantizer" and self.litert is not None:
            return self.litert
        return self.build

    def make(self, session: Session, settings: ModeSettings) -> bytes:
        """One variant's bytes, built by the engine its settings name."""
        return self.build_for(settings.engine).build(session, settings)

    def refusal(self, options: Any) -> str | None:
        """Why this mode cannot honour ``options`` on the engine they choose (one line), or None: a setting of
        the mode that engine does not read, given a value other than its default (never silently ignored)."""
        if self.litert is None:
            return None  # one engine: the mode reads only the settings it honours
        engine = self.engine_for(options)
        refused, other = QUANTIZER_ONLY, "litert-quantizer"
        if engine == "litert-quantizer":
            refused, other = self.litert.refuses, "converter"
        from tflq.options import declared

        defaults = type(options)()
        flags = {item.name: item.setting.flag for item in declared(type(options))}
        for name in refused:
            if name in self.settings and getattr(options, name) != getattr(defaults, name):
                flag = flags.get(name) or f"--{name.replace('_', '-')}"
                return (
                    f"{flag} ({name}) does not apply to mode {self.name} on engine {engine}; "
                    f"it applies to engine {other} (--engine {other})"
                )
        return None

    @property
    def configure(self) -> Configure:
        """Configures a fresh public TFLiteConverter for this mode (what the faster builds are checked against)."""
        return self.build.public_configure

    @property
    def calibrated(self) -> bool:
        """True when the mode needs a representative (calibration) dataset."""
        return self.build.needs == "calibration"

    @property
    def needs_training(self) -> bool:
        """True when the mode trains (QAT) and needs labelled training data (no calibration data: its
        representative samples come from the training data)."""
        return self.build.needs == "training"

    @property
    def integer(self) -> bool:
        """True when the mode quantizes activations, so every op should have an integer kernel."""
        return self.activations is not None

    @property
    def selective(self) -> bool:
        """True when layers or op types can be left in float (``skip_layers`` / ``skip_ops``)."""
        return "skip_layers" in self.settings

    @property
    def in_all_modes(self) -> bool:
        """Part of ``--all-modes`` and of a batch's default modes: every converter mode but the training ones (a
        training mode needs training data). The litert-quantizer engine's modes are opt-in (``--mode NAME``):
        they are a second engine, not more variants of the converter's, and ``--all-modes`` keeps the set of
        variants (and the docs and reports that count them) it had before the engine came."""
        return not self.needs_training and "converter" in self.engines

    @property
    def weight_bits(self) -> int | None:
        """The bits of a weight (32, 16, 8, 4), or None when a recipe file decides."""
        digits = self.weights.removeprefix("float").removeprefix("int")
        return int(digits) if digits.isdigit() else None

    @property
    def activation_kind(self) -> str | None:
        """``float32``, ``dynamic`` (quantized on the fly), ``int8`` or ``int16``; None when a recipe file decides."""
        if self.weight_bits is None:
            return None
        return self.activations or ("dynamic" if self.dynamic else FLOAT_IO)

    @property
    def granularities(self) -> tuple[str, ...]:
        """The weight granularities the mode can give: channelwise, and blockwise when it reads ``block_size``."""
        return ("channelwise", "blockwise") if "block_size" in self.settings else ("channelwise",)

    def settings_for(self, options: Any, io_type: str, float_nodes: Sequence[str] = ()) -> ModeSettings:
        """What one variant of this mode reads of ``options`` (a ``ConvertOptions``): its declared settings only.

        The settings the mode does not declare keep their defaults in the view a build gets, so a build cannot
        depend on a setting its cache key leaves out."""
        view = replace(type(options)(), modes=options.modes, **{name: getattr(options, name) for name in self.settings})
        return ModeSettings(
            io_type=io_type,
            per_tensor=view.per_tensor,
            allow_float_fallback=view.allow_float_fallback,
            float_nodes=tuple(float_nodes) if self.selective else (),
            options=view,
            engine=self.engine_for(options),
        )


MODES: dict[str, Mode] = {
    mode.name: mode
    for mode in (
        Mode(
            "float32",
            "float32 baseline: no quantization",
            (FLOAT_IO,),
            "float32",
            None,
            FloatBuild(),
            baseline=True,
        ),
        Mode(
            "float16",
            "float16 weights, float32 compute (half the size, GPU-friendly)",
            (FLOAT_IO,),
            "float16",
            None,
            ConverterBuild(_float16),
            settings=("engine",),
            litert=QuantizerBuild("float16", 16),
        ),
        Mode(
            "dynamic",
            "dynamic range: int8 weights, activations quantized on the fly",
            (FLOAT_IO,),
            "int8",
            None,
            ConverterBuild(_dynamic),
            settings=("per_tensor", "dense_per_tensor", "engine"),
            dynamic=True,
            # its tensorwise dynamic int8 is not usable: 35.3 % vs 98.6 % top-1 on the digits CNN (docs/engines.md)
            litert=QuantizerBuild("dynamic", 8, refuses=("per_tensor", "dense_per_tensor")),
        ),
        Mode(
            "int8",
            "full integer: int8 weights and activations, calibrated (I/O float32, int8 or uint8)",
            (FLOAT_IO, "int8", "uint8"),
            "int8",
            "int8",
            RequantizeBuild(_full_integer("TFLITE_BUILTINS_INT8")),
            settings=(
                "per_tensor",
                "allow_float_fallback",
                "dense_per_tensor",
                "skip_layers",
                "skip_ops",
                "engine",
                "symmetric",
                "range_estimator",
                "activation_range",
                "layer_precision",
            ),
            litert=QuantizerBuild("static", 8, refuses=("dense_per_tensor",)),
        ),
        Mode(
            "qat",
            "quantization-aware training: fine-tune with fake quantization, then full integer (needs training data; "
            "I/O float32, int8 or uint8)",
            (FLOAT_IO, "int8", "uint8"),
            "int8",
            "int8",
            TrainThenRequantizeBuild(_qat),
            settings=("allow_float_fallback",),
        ),
        Mode(
            "16x8",
            "int16 activations, int8 weights, calibrated (more accurate than int8; reference kernels on CPU)",
            (FLOAT_IO, "int16"),
            "int8",
            "int16",
            RequantizeBuild(
                _full_integer("EXPERIMENTAL_TFLITE_BUILTINS_ACTIVATIONS_INT16_WEIGHTS_INT8"), activations="int16"
            ),
            settings=(
                "per_tensor",
                "allow_float_fallback",
                "dense_per_tensor",
                "engine",
                "range_estimator",
                "activation_range",
            ),
            litert=QuantizerBuild("static", 8, activation_bits=16, refuses=("dense_per_tensor",)),
        ),
        Mode(
            "int8-weights",
            "LiteRT Quantizer: int8 weights dequantized at load, float32 compute",
            (FLOAT_IO,),
            "int8",
            None,
            QuantizerBuild("weight_only", 8),
            settings=("skip_layers", "skip_ops"),
            engine="litert-quantizer",
        ),
        Mode(
            "int4-weights",
            "LiteRT Quantizer: int4 weights dequantized at load, float32 compute",
            (FLOAT_IO,),
            "int4",
            None,
            QuantizerBuild("weight_only", 4),
            settings=("skip_layers", "skip_ops", "layer_precision"),
            engine="litert-quantizer",
        ),
        Mode(
            "dynamic-int4",
            "LiteRT Quantizer: int4 weights (channelwise or blockwise), activations quantized on the fly",
            (FLOAT_IO,),
            "int4",
            None,
            QuantizerBuild("dynamic", 4),
            settings=("block_size", "hadamard", "skip_layers", "skip_ops", "layer_precision"),
            engine="litert-quantizer",
            dynamic=True,
        ),
        Mode(
            "int4x8",
            "LiteRT Quantizer: int4 weights, int8 activations, calibrated (I/O float32, int8 or uint8)",
            (FLOAT_IO, "int8", "uint8"),
            "int4",
            "int8",
            QuantizerBuild("static", 4),
            # no range_estimator: LiteRT Quantizer 0.11's policy has no MSE/OCTAV for int4 weights + int8 activations
            settings=("symmetric", "activation_range", "skip_layers", "skip_ops", "layer_precision"),
            engine="litert-quantizer",
        ),
        Mode(
            "recipe",
            "LiteRT Quantizer: the recipe in --recipe FILE (calibrated when it asks for it)",
            (FLOAT_IO,),
            "recipe",
            None,
            QuantizerBuild("file"),
            settings=("recipe",),
            engine="litert-quantizer",
        ),
    )
}


BASELINE: Mode = next(mode for mode in MODES.values() if mode.baseline)
IO_TYPES: tuple[str, ...] = tuple(sorted({io for mode in MODES.values() for io in mode.io_types}))
DEFAULT_MODES: tuple[str, ...] = tuple(name for name, mode in MODES.items() if mode.in_all_modes)


def get_mode(name: str) -> Mode:
    """The mode called ``name``. Raises UsageError listing the valid names."""
    try:
        return MODES[name]
    except KeyError:
        raise UsageError(f"unknown mode {name!r}; expected one of {', '.join(MODES)}") from None


def modes_reading(setting: str) -> list[str]:
    """The names of the modes that read ``setting``."""
    return [mode.name for mode in MODES.values() if setting in mode.settings]


@dataclass(frozen=True)
class Variant:
    """One output file: a mode with one model I/O type."""

    mode: str
    io_type: str = FLOAT_IO

    @property
    def label(self) -> str:
        """``int8`` for float I/O, ``int8.uint8`` otherwise: the file-name part and the report id."""
        return self.mode if self.io_type == FLOAT_IO else f"{self.mode}.{self.io_type}"


BASELINE_VARIANT = Variant(BASELINE.name)


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
    for io_type in io_types:
        if io_type not in IO_TYPES:
            raise UsageError(f"unknown I/O type {io_type!r}; expected one of {', '.join(IO_TYPES)}")
        if not any(io_type in MODES[name].io_types for name in modes):
            supporting = [m.name for m in MODES.values() if io_type in m.io_types]
            raise UsageError(
                f"I/O type {io_type!r} does not apply to mode(s) {', '.join(modes)}; "
                f"it applies to {', '.join(supporting)}"
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
