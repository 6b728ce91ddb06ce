"""The conversion stage's options, declared once (:mod:`tflq.options`): what to produce from one model."""
from __future__ import annotations

from dataclasses import dataclass, field

from tflq import options as opts
from tflq._tf import litert_quantizer as _lq
from tflq.convert.block_size import BlockSize
from tflq.convert.engine import Engine
from tflq.convert.precision import LayerPrecision, check_modes
from tflq.errors import UsageError
from tflq.model.options import ImageOptions, ModelOptions
from tflq.modes import DEFAULT_MODES, IO_TYPES, MODES, ModeSettings, Variant, modes_reading, plan_variants
from tflq.qat.options import QatOptions

MAX_CALIB_SAMPLES = 10_000_000  # beyond this a typo, not a dataset (samples are held in memory)


@dataclass(frozen=True)
class ConvertOptions:
    """What to produce from one model: the conversion stage's settings, declared once (:mod:`tflq.options`).

    Read by ``tflq convert``'s flags, the batch file's plain settings and ``calibration:`` section, the docs and
    the cache keys. ``images``, ``model`` and ``qat`` are the option groups of the stages below (image scaling,
    model loading, training). Raises UsageError when the options contradict each other.
    """

    modes: tuple[str, ...] = opts.setting(
        ("float32",),
        opts.Names(allowed=tuple(MODES), non_empty=True, what="mode"),
        "the modes to produce (`tflq modes` lists them)",
        flag="--mode",
        shown_default="float32 (a batch file: every mode but the training ones)",
        batch_default=DEFAULT_MODES,
    )
    io_types: tuple[str, ...] = opts.setting(
        (),
        opts.Names(allowed=IO_TYPES, what="I/O type"),
        "model input/output types for the integer modes; a type applies to every requested mode that takes it",
        flag="--io-type",
        shown_default="each mode's float32 I/O",
    )
    calibration: str | None = opts.setting(
        None,
        opts.Text(optional=True, path=True, metavar="DATA"),
        "calibration (representative) data: .npz, .npy, image folder, module:function, or 'random' (smoke tests "
        "only: warns loudly)",
        flag="--calib",
        section="calibration",
        yaml="data",
    )
    calibration_samples: int = opts.setting(
        200,
        opts.Integer(minimum=1, maximum=MAX_CALIB_SAMPLES),
        "calibration samples to use (read lazily)",
        flag="--calib-samples",
        section="calibration",
        yaml="samples",
    )
    per_tensor: bool = opts.setting(
        False,
        opts.Flag(),
        "per-tensor instead of per-channel weight quantization",
        flag="--per-tensor",
    )
    allow_float_fallback: bool = opts.setting(
        False,
        opts.Flag(),
        "integer modes: keep ops without an integer kernel in float, and say which",
        flag="--allow-float-fallback",
    )
    dense_per_tensor: bool = opts.setting(
        False,
        opts.Flag(),
        "per-tensor weights for Dense (FULLY_CONNECTED) layers only; convolutions stay per-channel",
        flag="--dense-per-tensor",
    )
    skip_layers: tuple[str, ...] = opts.setting(
        (),
        opts.Names(what="layer name"),
        "selective quantization: keep these Keras layers in float",
        flag="--skip-layers",
    )
    skip_ops: tuple[str, ...] = opts.setting(
        (),
        opts.Names(what="op type", metavar="OP"),
        "selective quantization: keep every op of these TFLite types (e.g. FULLY_CONNECTED) in float",
        flag="--skip-ops",
    )
    layer_precision: tuple[str, ...] = opts.setting(
        (),
        LayerPrecision(),  # tflq/convert/precision.py
        "LiteRT Quantizer int4 modes: keep these layers at a higher precision, LAYER=float, LAYER=int8 (int8 "
        "weights) or LAYER=16x8 (int16 activations, mode int4x8); LAYER: a Keras layer, a regex or an op name",
        flag="--precision",
    )
    block_size: int | None = opts.setting(
        None,
        BlockSize(),  # tflq/convert/block_size.py
        "LiteRT Quantizer int4 weights: blockwise with this many weights per scale instead of one scale per channel",
        flag="--block-size",
        shown_default="none (channelwise)",
    )
    hadamard: bool = opts.setting(
        False,
        opts.Flag(),
        "LiteRT Quantizer: Hadamard-rotate the weights before quantizing them (channelwise only)",
        flag="--hadamard",
    )
    recipe: str | None = opts.setting(
        None,
        opts.Text(optional=True, path=True, metavar="FILE"),
        "the LiteRT Quantizer recipe (JSON) mode recipe runs",
        flag="--recipe",
    )
    engine: str | None = opts.setting(
        None,
        Engine(),  # tflq/convert/engine.py
        "what quantizes the modes both engines make (float16, dynamic, int8, 16x8): the TFLite converter or "
        "LiteRT Quantizer (docs/engines.md)",
        flag="--engine",
        shown_default="each mode's default (`tflq modes`)",
    )
    symmetric: bool = opts.setting(
        False,
        opts.Flag(),
        "LiteRT Quantizer int8 activations: symmetric (zero point 0) instead of asymmetric",
        flag="--symmetric",
    )
    range_estimator: str = opts.setting(
        "min-max",
        opts.Choice(choices=_lq.ESTIMATORS),
        "LiteRT Quantizer static modes: how the weights' ranges are chosen",
        flag="--range-estimator",
    )
    activation_range: str = opts.setting(
        "min-max",
        opts.Choice(choices=_lq.ACTIVATION_RANGES),
        "LiteRT Quantizer static modes: how calibration merges the samples' activation ranges: min-max (all "
        "samples, as the converter) or moving-average (LiteRT Quantizer's own default)",
        flag="--activation-range",
    )
    images: ImageOptions = field(default_factory=ImageOptions)
    model: ModelOptions = field(default_factory=ModelOptions)
    qat: QatOptions = field(default_factory=QatOptions)

    def __post_init__(self) -> None:
        if (self.skip_layers or self.skip_ops) and not any(
            MODES[name].selective for name in self.modes if name in MODES
        ):
            flag = "--skip-layers" if self.skip_layers else "--skip-ops"
            takers = ", ".join(modes_reading("skip_layers"))
            raise UsageError(f"{flag} applies to mode {takers} (selective quantization); add one of them with --mode")
        check_modes(self.layer_precision, self.modes)
        if self.hadamard and self.block_size is not None:
            raise UsageError("--hadamard takes channelwise weights only: drop --block-size or --hadamard")
        for name in self.modes:
            refusal = MODES[name].refusal(self) if name in MODES else None
            if refusal:
                raise UsageError(refusal)

    def variants(self) -> list[Variant]:
        """The variants these options ask for. Raises UsageError (also for training modes without training data)."""
        variants = plan_variants(list(self.modes), list(self.io_types))
        needing = [name for name in self.modes if "recipe" in MODES[name].settings]
        if needing and not self.recipe:
            raise UsageError(f"mode {', '.join(needing)} needs a recipe: pass --recipe FILE (LiteRT Quantizer JSON)")
        training = [name for name in self.modes if MODES[name].needs_training]
        if training and not self.qat.train_data:
            raise UsageError(
                f"mode {', '.join(training)} needs labelled training data: pass --train-data DATA "
                "(.npz with x and y, an image folder with class subfolders, or module:function)"
            )
        if not training and (self.qat.train_data or self.qat.val_data):
            raise UsageError("--train-data/--val-data apply to mode qat only; add --mode qat or drop them")
        return variants

    def settings(self, variant: Variant, float_nodes: tuple[str, ...] = ()) -> ModeSettings:
        """What ``variant`` reads of these options: its I/O type and its mode's declared settings only."""
        return MODES[variant.mode].settings_for(self, variant.io_type, float_nodes)


DEFAULT_CALIB_SAMPLES: int = opts.defaults(ConvertOptions)["calibration_samples"]
