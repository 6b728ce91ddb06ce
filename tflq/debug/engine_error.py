"""``tflq debug --mode MODE`` for a mode other than int8: per-layer error of any mode that can keep layers apart
(the LiteRT Quantizer modes), measured on the mode's own build.

The converter's int8 has quantization debug models (:mod:`tflq.debug.layer_error`); other modes do not, so this
module compares ``.tflite`` files side by side instead: the float32 model and a quantized one run on the same
samples in two LiteRT interpreters that keep every tensor (``experimental_preserve_all_tensors``, reference
kernels: a delegate would not keep the tensors it computes), and same-named tensors are compared.

* **Own error** (``sqnr_db``, the ranking): for each op the mode quantizes, the model built by the mode with only
  that op quantized (every other op kept in float by ``skip_layers`` rules), so the op reads exact float inputs.
  One build per quantized op (with calibration, for a calibrated mode).
* **Accumulated error** (``accumulated_sqnr_db``): the mode's full model, from the model input up to each op.
* **With evaluation data**: the top-1 of float32, of the mode, and of the mode with each of the ``top`` most
  sensitive layers kept at a higher precision: int8 weights where the mode's are int4, float otherwise.

It needs only the session's ``float_model()``, ``calibration_samples()`` and ``model_ops()``, so a float
``.tflite`` source works the same way (ops are then named by their tensors).
"""
from __future__ import annotations

import contextlib
import tempfile
import warnings
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from tflq._tf import imports as _tf
from tflq._tf import litert_rules as _rules
from tflq.convert.layer_map import ModelOp
from tflq.convert.session import ModelSession
from tflq.debug.debug_models import _Accumulator
from tflq.debug.layer_error import (
    AccuracyCheck,
    DebugOptions,
    DebugReport,
    LayerGroup,
    OpError,
    Recovery,
    _write,
    debug_inputs,
    layer_groups,
    rank,
)
from tflq.debug.scoring import Evaluator, Score
from tflq.errors import TflqError, UsageError
from tflq.modes import MODES, Mode, ModeSettings, Variant

_FLOAT = {"float32", "float16", "float64"}


def kept_precision(mode: Mode) -> str:
    """What a layer is kept at to recover accuracy: int8 weights where the mode's are narrower, else float."""
    return "int8" if "layer_precision" in mode.settings and (mode.weight_bits or 8) < 8 else "float"


def check_mode(name: str) -> Mode:
    """The mode ``tflq debug --mode`` ranks layers for. Raises UsageError (one line) for a mode without layers to
    rank (float32, float16) or that cannot keep a layer apart (no ``skip_layers``)."""
    if name not in MODES:
        raise UsageError(f"--mode {name!r}: unknown mode; expected one of {', '.join(MODES)}")
    mode = MODES[name]
    if not mode.selective or mode.needs_training:
        takers = ", ".join(n for n, m in MODES.items() if m.selective and not m.needs_training)
        raise UsageError(
            f"--mode {name}: tflq debug ranks the layers of a mode that can keep a layer apart ({takers}); "
            f"mode {name} cannot"
        )
    return mode


def debug_for_mode(model_path: Path, options: DebugOptions, *, workdir: Path | None = None) -> DebugReport:
    """``tflq debug``: the converter's quantization debug models for its mode (int8), the side-by-side comparison
    of this module for the others. Raises as :func:`debug_engine_mode`."""
    from tflq.debug.layer_error import debug_quantization

    if check_mode(options.mode).engine == "converter":
        return debug_quantization(model_path, options, workdir=workdir)
    return debug_engine_mode(model_path, options, workdir=workdir)


def debug_engine_mode(model_path: Path, options: DebugOptions, *, workdir: Path | None = None) -> DebugReport:
    """Per-layer error of ``model_path`` in ``options.mode`` (see the module docstring), most sensitive first.

    Raises UsageError/ModelLoadError/DataError for bad input, ConversionError when the mode's model cannot be built.
    """
    mode = check_mode(options.mode)
    convert_options = replace(options.convert, modes=(mode.name,), io_types=(), skip_layers=(), skip_ops=(),
                              layer_precision=())
    if not options.data and not convert_options.calibration:
        raise UsageError(f"tflq debug --mode {mode.name} needs samples: pass --data EVAL or --calib DATA")
    with contextlib.ExitStack() as stack:
        if workdir is None:
            workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="tflq-debug-")))
        session = ModelSession(model_path, convert_options, workdir)
        if mode.calibrated:
            session.calibration_samples()
        inputs = debug_inputs(options, session, workdir)
        evaluator, float_score, samples = inputs.evaluator, inputs.float_score, inputs.samples
        model_ops = session.model_ops()
        variant = Variant(mode.name)
        base = convert_options.settings(variant)
        full = session.convert_variant(variant)
        errors = rank(_measure(session, mode, base, full, model_ops, samples))
        if not errors:
            raise UsageError(f"mode {mode.name} quantizes no op of {model_path}: there is nothing to rank")
        groups = layer_groups(errors, model_ops)
        accuracy = None
        if evaluator is not None and float_score is not None:
            accuracy = _check_accuracy(
                session, mode, base, full, evaluator, float_score, groups[: options.top], workdir
            )
        return DebugReport(
            model=str(model_path),
            samples=len(samples),
            sample_source=inputs.source,
            per_tensor=convert_options.per_tensor,
            ops=tuple(errors),
            groups=tuple(groups),
            accuracy=accuracy,
            notes=inputs.notes,
            mode=mode.name,
            kept_at=kept_precision(mode),
        )


def quantized_ops(content: bytes, model_ops: Sequence[ModelOp]) -> list[ModelOp]:
    """The float model's ops that ``content`` quantizes (integer weights or an integer output), in model order."""
    found = _rules.op_precisions(content)
    chosen = []
    for op in model_ops:
        precision = found.get(op.tensor)
        if not op.float_output or precision is None:
            continue
        if (precision.weights is not None and precision.weights not in _FLOAT) or precision.output not in _FLOAT:
            chosen.append(op)
    return chosen


def mode_settings(options: Any, mode: Mode, *, block_size: int | None = None) -> ModeSettings:
    """What a variant of ``mode`` reads of ``options`` (a ConvertOptions) as if it were the only mode asked for,
    without its own selective settings, blockwise with ``block_size`` when given."""
    alone = replace(options, modes=(mode.name,), io_types=(), skip_layers=(), skip_ops=(), layer_precision=(),
                    block_size=block_size if "block_size" in mode.settings else None)
    return alone.settings(Variant(mode.name))


def with_layers(base: ModeSettings, *, float_nodes: Sequence[str] = (), precise: Sequence[str] = (),
                precision: str = "int8") -> ModeSettings:
    """``base`` with these ops kept in float and ``precise`` ops at ``precision`` (by their tensor names)."""
    options = base.options
    if precise:
        options = replace(options, layer_precision=tuple(f"{tensor}={precision}" for tensor in precise))
    return replace(base, float_nodes=tuple(float_nodes), options=options)


def build(session: ModelSession, mode: Mode, settings: ModeSettings) -> bytes:
    """The mode's model with these settings (ConversionError with the builder's reason)."""
    from tflq.convert.session import _converter_errors

    with _converter_errors(mode.name, session.exported):
        return mode.build.build(session, settings)


def _measure(
    session: ModelSession, mode: Mode, base: ModeSettings, full: bytes, model_ops: Sequence[ModelOp],
    samples: Sequence[dict[str, np.ndarray]],
) -> list[OpError]:
    targets = quantized_ops(full, model_ops)
    if not targets:
        return []
    reference = _Tensors(session.float_model())
    accumulated = _compare(reference, _Tensors(full), samples, [op.tensor for op in targets])
    floating = [op.tensor for op in model_ops if op.float_output]
    errors = []
    for op in targets:
        others = [tensor for tensor in floating if tensor != op.tensor]
        only = build(session, mode, with_layers(base, float_nodes=others))
        own = _compare(reference, _Tensors(only), samples, [op.tensor])[op.tensor]
        whole = accumulated[op.tensor]
        errors.append(
            OpError(
                position=op.index, op_type=op.op_type, layers=op.layers, tensor=op.tensor,
                sqnr_db=own.sqnr_db(), channel_sqnr_db=own.channel_sqnr_db(),
                accumulated_sqnr_db=whole.sqnr_db(), rmse_per_scale=None,
                mean_error=own.error_sum / own.count if own.count else 0.0,
                max_abs_error=own.max_abs, scale=None, zero_point=None,
            )
        )
    return errors


class _Tensors:
    """One ``.tflite`` in a LiteRT interpreter (reference kernels) that keeps every tensor, read by name."""

    def __init__(self, content: bytes) -> None:
        from ai_edge_litert.interpreter import Interpreter, OpResolverType

        with _tf.quiet(), warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*experimental_preserve_all_tensors.*")
            self.interpreter = Interpreter(
                model_content=content, experimental_preserve_all_tensors=True,
                experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES,
            )
        self.runner = self.interpreter.get_signature_runner()
        self.inputs = self.runner.get_input_details()
        self.by_name: dict[str, dict[str, Any]] = {}
        for detail in self.interpreter.get_tensor_details():
            self.by_name.setdefault(detail["name"], detail)

    def run(self, sample: dict[str, np.ndarray]) -> None:
        self.runner(**{name: np.asarray(sample[name], dtype=detail["dtype"]) for name, detail in self.inputs.items()})

    def value(self, name: str) -> np.ndarray | None:
        """The tensor's value, dequantized when it is an integer tensor with a scale (None: no such tensor)."""
        detail = self.by_name.get(name)
        if detail is None:
            return None
        value = self.interpreter.get_tensor(detail["index"])
        scale, zero_point = detail["quantization"]
        if np.dtype(detail["dtype"]).kind in "iu" and scale:
            return (value.astype(np.float64) - zero_point) * scale
        return value.astype(np.float64)


def _compare(
    reference: _Tensors, target: _Tensors, samples: Sequence[dict[str, np.ndarray]], names: Sequence[str]
) -> dict[str, _Accumulator]:
    found = {name: _Accumulator() for name in names}
    with _tf.quiet():
        for sample in samples:
            reference.run(sample)
            target.run(sample)
            for name in names:
                expected, got = reference.value(name), target.value(name)
                if expected is not None and got is not None and expected.shape == got.shape:
                    found[name].add(expected, got - expected)
    return found


def _check_accuracy(
    session: ModelSession, mode: Mode, base: ModeSettings, full: bytes, evaluator: Evaluator, float_score: Score,
    groups: Sequence[LayerGroup], workdir: Path,
) -> AccuracyCheck:
    score = evaluator.score(_write(workdir / f"{mode.name}.tflite", full))
    kept = kept_precision(mode)
    recoveries = []
    for number, group in enumerate(groups):
        settings = (
            with_layers(base, precise=group.tensors, precision=kept) if kept != "float"
            else with_layers(base, float_nodes=group.tensors)
        )
        try:
            content = build(session, mode, settings)
            recovered = evaluator.score(_write(workdir / f"{mode.name}_kept_{number}.tflite", content))
        except TflqError as error:  # this group failed: report it, keep the others
            recoveries.append(Recovery(group, None, str(error)))
            continue
        recoveries.append(Recovery(group, recovered.value))
    return AccuracyCheck(
        metric=evaluator.metric,
        samples=float_score.samples,
        float32=float_score.value,
        int8=score.value,
        recoveries=tuple(recoveries),
        mode=mode.name,
    )
