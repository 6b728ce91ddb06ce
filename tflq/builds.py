"""How the variants of a mode are built: the build strategies the registry (:mod:`tflq.modes`) names, and the
functions that configure a fresh TFLiteConverter for each converter mode.

A build only describes the work: it calls back into the conversion session (:class:`Session`: the export, the one
calibration, the one training run, the one float32 conversion), which lives in :mod:`tflq.convert.session` above.
Every converter a build configures is *fresh*, so settings never leak from one variant to the next. TensorFlow,
LiteRT Quantizer and the private conversion paths are imported inside the builds (``tflq._tf``), never at import.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

FLOAT_IO = "float32"
ENGINES: tuple[str, ...] = ("converter", "litert-quantizer")
#: the qconfig settings only LiteRT Quantizer honours: a converter-engine variant given one is refused
QUANTIZER_ONLY: tuple[str, ...] = ("symmetric", "range_estimator", "activation_range", "layer_precision")


@dataclass(frozen=True)
class ModeSettings:
    """What one variant of a mode asks of the converter: its I/O type and the settings its mode reads."""

    io_type: str = FLOAT_IO
    per_tensor: bool = False
    allow_float_fallback: bool = False
    float_nodes: tuple[str, ...] = ()  # tensors to keep in float (skip_layers / skip_ops, resolved by the session)
    options: Any = None  # the variant's view of the ConvertOptions: its mode's settings, every other at its default
    engine: str = "converter"  # what quantizes this variant (one of its mode's ``engines``)


class Session(Protocol):
    """What a build needs from the conversion session (see :class:`tflq.convert.session.ModelSession`)."""

    def new_converter(self) -> Any: ...
    def calibration_samples(self) -> list[dict[str, Any]]: ...
    def calibrated_model(self) -> bytes: ...
    def trained_calibrated_model(self) -> bytes: ...
    def float_nodes(self) -> tuple[str, ...]: ...
    def float_model(self) -> bytes: ...
    def precision_nodes(self, items: Sequence[str]) -> tuple[tuple[str, str], ...]: ...


class Build(Protocol):
    """How the variants of a mode are made."""

    #: what the session must prepare for this build once per model: "calibration", "training" or nothing
    @property
    def needs(self) -> str | None: ...

    #: configures the public converter for the same result (the reference the tests compare a build with)
    @property
    def public_configure(self) -> Configure: ...

    def build(self, session: Session, settings: ModeSettings) -> bytes: ...


Configure = Callable[[Any, Any, ModeSettings], None]


@dataclass(frozen=True)
class FloatBuild:
    """The float32 conversion of the export, made once per model by the session (``float_model``) and shared with
    every build that starts from it (the LiteRT Quantizer modes), so a model is never converted to float32 twice."""

    needs: str | None = None

    @property
    def public_configure(self) -> Configure:
        return _float32

    def build(self, session: Session, settings: ModeSettings) -> bytes:
        del settings  # the baseline reads no setting
        return session.float_model()


@dataclass(frozen=True)
class ConverterBuild:
    """A fresh TFLiteConverter on the model's one export, configured by the mode (``calibrated``: fed the
    calibration samples as its representative dataset)."""

    configure: Configure
    calibrated: bool = False

    @property
    def needs(self) -> str | None:
        return "calibration" if self.calibrated else None

    @property
    def public_configure(self) -> Configure:
        return self.configure

    def build(self, session: Session, settings: ModeSettings) -> bytes:
        from tflq._tf import imports as _tf

        converter = session.new_converter()
        self.configure(converter, _tf.tf(), settings)
        if self.calibrated:
            samples = session.calibration_samples()
            converter.representative_dataset = lambda: iter(samples)
        return bytes(converter.convert())


@dataclass(frozen=True)
class RequantizeBuild:
    """Quantized from the model's one calibration (``_tf.calibrated.quantize``), as the public converter would
    after calibrating: every I/O type, per-channel or per-tensor, layers left in float. ``public_configure``
    configures the public converter for the same result (what ``tests/test_convert_calibrate_once.py`` compares
    with)."""

    public_configure: Configure
    needs: str | None = "calibration"
    activations: str = "int8"  # "int16": 16x8, quantized by the calibration wrapper that measured the model

    def build(self, session: Session, settings: ModeSettings) -> bytes:
        from tflq._tf import calibrated as _calibrated

        if self.activations == "int16":
            return _calibrated.quantize_int16(
                session.calibrated_model(),
                io_type=settings.io_type,
                per_tensor=settings.per_tensor,
                allow_float=settings.allow_float_fallback,
                dense_per_tensor=settings.options is not None and settings.options.dense_per_tensor,
            )
        return _calibrated.quantize(
            session.calibrated_model(),
            io_type=settings.io_type,
            per_tensor=settings.per_tensor,
            denylisted_nodes=settings.float_nodes,
            dense_per_tensor=settings.options is not None and settings.options.dense_per_tensor,
        )


@dataclass(frozen=True)
class TrainThenRequantizeBuild:
    """Fine-tuned once per model (QAT), its export calibrated once for the tensors training left without a range,
    then quantized per I/O type. ``public_configure`` configures the public converter the same way (the slower
    path the tests compare with)."""

    public_configure: Configure
    needs: str | None = "training"

    def build(self, session: Session, settings: ModeSettings) -> bytes:
        from tflq._tf import calibrated as _calibrated

        return _calibrated.quantize(session.trained_calibrated_model(), io_type=settings.io_type, per_tensor=False)


@dataclass(frozen=True)
class QuantizerBuild:
    """LiteRT Quantizer (:mod:`tflq._tf.litert_quantizer`) on the session's one float32 conversion, by a recipe:
    ``weight_only``, ``float16``, ``dynamic`` or ``static`` (``activation_bits`` activations, calibrated on the
    session's samples; integer I/O rewritten after quantization) with ``weight_bits`` weights, channelwise,
    tensorwise (``per_tensor``) or blockwise (``block_size``), with or without the Hadamard rotation, with the
    activation symmetry and weight range estimator the variant's settings say; or ``file``: the user's recipe file
    (``recipe``), calibrated when it asks for it. ``public_configure`` is the float32 conversion it starts from.

    ``refuses``: the settings of the mode this build cannot honour (a variant given one is refused, never quietly
    built without it). Hook for selective quantization on this engine (branch i11-mixed): drop ``skip_layers`` /
    ``skip_ops`` from a build's ``refuses`` once the build applies them."""

    recipe: str
    weight_bits: int = 8
    activation_bits: int = 8
    refuses: tuple[str, ...] = ()

    @property
    def needs(self) -> str | None:
        return "calibration" if self.recipe == "static" else None

    @property
    def public_configure(self) -> Configure:
        return _float32

    def build(self, session: Session, settings: ModeSettings) -> bytes:
        from tflq._tf import litert_quantizer as _lq
        from tflq._tf import litert_rules as _rules

        options = settings.options
        if self.recipe == "file":
            recipe = _lq.recipe_from_file(options.recipe)
        else:
            recipe = _lq.named_recipe(
                self.recipe,
                self.weight_bits,
                activation_bits=self.activation_bits,
                block_size=getattr(options, "block_size", None),
                hadamard=bool(getattr(options, "hadamard", False)),
                per_tensor=settings.per_tensor,
                symmetric=True if getattr(options, "symmetric", False) else None,
                estimator=getattr(options, "range_estimator", "min-max"),
            )
        # skip_layers/skip_ops and layer_precision: one rule per op, checked in the output (tflq/_tf/litert_rules.py)
        precisions = session.precision_nodes(getattr(options, "layer_precision", ()))
        recipe = _rules.with_rules(recipe, settings.float_nodes, precisions)
        # a user's recipe file calibrates as LiteRT Quantizer does by default; tflq's static recipes by the setting
        activation_range = options.activation_range if self.recipe == "static" else "moving-average"
        quantized = _lq.quantize(
            session.float_model(), recipe, session.calibration_samples, activation_range=activation_range
        )
        if settings.float_nodes or precisions:
            _rules.check_applied(quantized, settings.float_nodes, precisions)
        return _lq.set_io_type(quantized, settings.io_type) if self.recipe == "static" else quantized


def _float32(converter: Any, tf: Any, settings: ModeSettings) -> None:
    del converter, tf, settings  # the baseline: no optimization


def _dense_per_tensor(converter: Any, settings: ModeSettings) -> None:
    if settings.options is not None and settings.options.dense_per_tensor:
        converter._experimental_disable_per_channel_quantization_for_dense_layers = True


def _dynamic(converter: Any, tf: Any, settings: ModeSettings) -> None:
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter._experimental_disable_per_channel = settings.per_tensor
    _dense_per_tensor(converter, settings)


def _float16(converter: Any, tf: Any, settings: ModeSettings) -> None:
    del settings
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.target_spec.supported_types = [tf.float16]


def _full_integer(ops_set: str) -> Configure:
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
        _dense_per_tensor(converter, settings)

    return configure


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


# The default engine of the modes both engines make (float16, dynamic, int8, 16x8) is the converter: the rule in
# docs/engines.md ("When to pick which engine": accuracy first, then p50 latency, then size, ties keep the converter)
# applied to benchmarks/engines.py's figures quoted there.
