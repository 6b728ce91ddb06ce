"""Per-layer quantization error: which layers int8 hurts, and how much accuracy each one costs.

``debug_quantization`` quantizes the model to int8 from the session's calibrated model and measures three things:

* **Each quantized op's output error.** Two debug models are built by TFLite's quantization debug mode
  (``_calibrated.debug_model``), and both run on the samples. In the first, every quantized op is paired with its
  float twin reading the same dequantized inputs, which gives the op's **own** error (``sqnr_db``,
  ``channel_sqnr_db``, ``rmse_per_scale``, ``mean_error``, ``max_abs_error``). In the second, a whole float model
  runs beside the int8 one, which gives the error **accumulated** from the model input up to that op
  (``accumulated_sqnr_db``).
* **Each quantized op's weight error**: the int8 weights, dequantized, against the float weights.
* **With evaluation data**: the float32 and int8 top-1, and for the ``top`` most sensitive layers the top-1 of
  int8 with that layer left in float (``_calibrated.quantize`` with a node denylist).

Ops are ranked by ``sensitivity``, the lower of ``sqnr_db`` and ``channel_sqnr_db``. The whole-tensor SQNR is
dominated by the largest values. When a few channels (or one masked logit) set a per-tensor activation scale that
crushes every other channel, the whole-tensor SQNR stays high. The median of the per-channel SQNRs shows it. Ops
are named by their Keras layers (``tflq.convert.layer_map``).
"""
from __future__ import annotations

import contextlib
import logging
import math
import re
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from tflq._tf import calibrated as _calibrated
from tflq._tf import imports as _tf
from tflq.convert.layer_map import ModelOp, read_ops
from tflq.convert.session import ConvertOptions, ModelSession
from tflq.debug.debug_models import WeightError, _DebugRun, _rounded, _run_debug_models
from tflq.debug.scoring import Evaluator, NoClassifierOutput, Score, points
from tflq.errors import ConversionError, TflqError, UsageError
from tflq.modes import Variant

DEFAULT_TOP = 3
DEFAULT_LAYER_SAMPLES = 100
_TRAILING_DIGITS = re.compile(r"\d+$")
log = logging.getLogger("tflq")


@dataclass(frozen=True)
class DebugOptions:
    """What ``debug_quantization`` measures. ``convert`` carries calibration, model loading and ``per_tensor``.

    ``data``: evaluation data; its first ``layer_samples`` samples feed the layer statistics (the calibration samples
    do when there is no data), and all of it (up to ``eval_samples``) the accuracy checks. ``reference``: a model
    whose top-1 the int8 variants are compared with when the data has no labels (default: the float32 model).
    ``top``: how many of the most sensitive layers to try in float.
    """

    convert: ConvertOptions = field(default_factory=ConvertOptions)
    data: str | None = None
    reference: str | None = None
    layer_samples: int = DEFAULT_LAYER_SAMPLES
    eval_samples: int | None = None
    top: int = DEFAULT_TOP
    mode: str = "int8"  # the mode whose layers are ranked (tflq.debug.engine_error for the LiteRT Quantizer modes)

    def __post_init__(self) -> None:
        if self.layer_samples < 1:
            raise UsageError(f"--layer-samples must be at least 1, got {self.layer_samples}")
        if self.eval_samples is not None and self.eval_samples < 1:
            raise UsageError(f"--eval-samples must be at least 1, got {self.eval_samples}")
        if self.top < 0:
            raise UsageError(f"--top must be 0 or more, got {self.top}")
        if self.reference and not self.data:
            raise UsageError("--reference needs --data: the reference is compared with on the evaluation data")


@dataclass(frozen=True)
class OpError:
    """The quantization error of one quantized op's output, on the debug samples. SQNRs are None when exact."""

    position: int  # execution order in the model
    op_type: str
    layers: tuple[str, ...]
    tensor: str  # output tensor name in the float model
    sqnr_db: float | None
    channel_sqnr_db: float | None  # median over the output channels (last axis)
    accumulated_sqnr_db: float | None
    rmse_per_scale: float | None
    mean_error: float
    max_abs_error: float
    scale: float | None
    zero_point: int | None
    weights: WeightError | None = None

    @property
    def label(self) -> str:
        return "+".join(self.layers) if self.layers else self.tensor

    @property
    def sensitivity(self) -> float:
        """The lower of the whole-tensor and median per-channel SQNR (inf when exact): lower is worse."""
        values = [value for value in (self.sqnr_db, self.channel_sqnr_db) if value is not None]
        return min(values) if values else math.inf

    def to_dict(self) -> dict[str, Any]:
        return {
            "position": self.position,
            "layers": list(self.layers),
            "label": self.label,
            "op": self.op_type,
            "tensor": self.tensor,
            "sqnr_db": _rounded(self.sqnr_db),
            "channel_sqnr_db": _rounded(self.channel_sqnr_db),
            "accumulated_sqnr_db": _rounded(self.accumulated_sqnr_db),
            "rmse_per_scale": _rounded(self.rmse_per_scale, 4),
            "mean_error": _rounded(self.mean_error, 6),
            "max_abs_error": _rounded(self.max_abs_error, 6),
            "scale": self.scale,
            "zero_point": self.zero_point,
            "weights": self.weights.to_dict() if self.weights else None,
        }


@dataclass(frozen=True)
class LayerGroup:
    """The ops one ranking entry leaves in float: every op named by the same layers."""

    layers: tuple[str, ...]
    label: str
    tensors: tuple[str, ...]  # float-model output tensors: the quantizer's node denylist
    sensitivity: float


@dataclass(frozen=True)
class Recovery:
    """Top-1 of int8 with one layer group left in float."""

    group: LayerGroup
    score: float | None
    error: str | None = None


@dataclass(frozen=True)
class AccuracyCheck:
    """Top-1 (fractions in [0, 1]) of float32, int8, and int8 with each of the most sensitive layers in float.
    Drops and recoveries are in percentage points."""

    metric: str
    samples: int
    float32: float
    int8: float  # the ranked mode's top-1 (named for int8, the first mode tflq debug ranked)
    recoveries: tuple[Recovery, ...]
    mode: str = "int8"

    @property
    def drop(self) -> float:
        """float32's top-1 minus int8's, in percentage points."""
        return points(self.float32, self.int8)

    def recovered_points(self, recovery: Recovery) -> float | None:
        return None if recovery.score is None else points(recovery.score, self.int8)

    def recovered_fraction(self, recovery: Recovery) -> float | None:
        points = self.recovered_points(recovery)
        return None if points is None or self.drop <= 0 else points / self.drop

    def to_dict(self) -> dict[str, Any]:
        return {
            "metric": self.metric,
            "samples": self.samples,
            "float32": _rounded(self.float32, 4),
            "mode": self.mode,
            "quantized": _rounded(self.int8, 4),
            **({"int8": _rounded(self.int8, 4)} if self.mode == "int8" else {}),
            "drop_points": _rounded(self.drop),
            "in_float": [
                {
                    "layers": list(recovery.group.layers),
                    "label": recovery.group.label,
                    "ops": len(recovery.group.tensors),
                    "accuracy": _rounded(recovery.score, 4),
                    "recovered_points": _rounded(self.recovered_points(recovery)),
                    "recovered_fraction": _rounded(self.recovered_fraction(recovery), 3),
                    "error": recovery.error,
                }
                for recovery in self.recoveries
            ],
        }


@dataclass(frozen=True)
class DebugReport:
    """Everything ``tflq debug`` found. ``ops`` is sorted from most to least sensitive."""

    model: str
    samples: int
    sample_source: str
    per_tensor: bool
    ops: tuple[OpError, ...]
    groups: tuple[LayerGroup, ...]
    accuracy: AccuracyCheck | None = None
    notes: tuple[str, ...] = ()  # what was not measured, and why
    mode: str = "int8"  # the mode whose layers are ranked
    kept_at: str = "float"  # what the accuracy checks keep a layer at: float, or int8 (weights) for the int4 modes

    def in_model_order(self) -> list[OpError]:
        return sorted(self.ops, key=lambda op: op.position)

    def recovery_of(self, op: OpError) -> Recovery | None:
        """The accuracy check of the group this op belongs to, when it was measured."""
        if self.accuracy is None:
            return None
        for recovery in self.accuracy.recoveries:
            if op.tensor in recovery.group.tensors:
                return recovery
        return None

    def to_dict(self) -> dict[str, Any]:
        """The stable JSON form (``tflq debug --format json``; keys documented in the README section "Debug, selective
        quantization and auto search")."""
        return {
            "model": self.model,
            "mode": self.mode,
            "kept_at": self.kept_at,
            "samples": self.samples,
            "sample_source": self.sample_source,
            "per_tensor": self.per_tensor,
            "ranking": [group.label for group in self.groups],
            "ops": [{"rank": rank, **op.to_dict()} for rank, op in enumerate(self.ops, start=1)],
            "accuracy": self.accuracy.to_dict() if self.accuracy else None,
            "notes": list(self.notes),
        }


# ---------------------------------------------------------------------------------------------------------------
# Naming, measuring and ranking the ops


def _match_ops(names: Sequence[tuple[str, str]], model_ops: Sequence[ModelOp]) -> list[ModelOp | None]:
    """Pair (op type, tensor name) of the debug model's quantized ops with the float model's ops.

    The quantizer renames tensors by appending digits (``MaxPool2d`` -> ``MaxPool2d1``), so names are compared
    without trailing digits, then the first unused op of the same type in model order wins.
    """
    candidates = [op for op in model_ops if op.float_output]
    used: set[int] = set()
    found: list[ModelOp | None] = []
    for op_type, name in names:
        key = _TRAILING_DIGITS.sub("", name)
        match = next(
            (op for op in candidates if op.index not in used and op.op_type == op_type and op.tensor == name), None
        ) or next(
            (op for op in candidates
             if op.index not in used and op.op_type == op_type and _TRAILING_DIGITS.sub("", op.tensor) == key),
            None,
        )
        if match is not None:
            used.add(match.index)
        found.append(match)
    return found


def measure_ops(
    calibrated: bytes, model_ops: Sequence[ModelOp], samples: Sequence[dict[str, np.ndarray]], *, per_tensor: bool
) -> tuple[OpError, ...]:
    """The error of every quantized op on ``samples`` (each with a batch axis of 1), in model order.

    Raises ConversionError when the debug models cannot be built or run.
    """
    try:
        with _tf.quiet():
            own_model = _calibrated.debug_model(calibrated, per_tensor=per_tensor, whole_model=False)
            whole_model = _calibrated.debug_model(calibrated, per_tensor=per_tensor, whole_model=True)
    except _tf.library_errors() as error:  # the quantizer's types; each becomes one message
        raise ConversionError(f"cannot build the quantization debug model: {_tf.last_error_line(str(error))}") from None
    try:
        own, whole = _run_debug_models(own_model, whole_model, samples, delegate=True)
    except ConversionError as error:
        # XNNPACK refuses some int8 models (extreme scale ratios); the reference kernels still run them
        log.debug("quantization debug model: XNNPACK failed (%s); measuring with the reference kernels", error)
        own, whole = _run_debug_models(own_model, whole_model, samples, delegate=False)

    def names(run: _DebugRun) -> list[tuple[str, str]]:
        return [
            (run.quantized_op(op)["op_name"], run.tensors[op["inputs"][0]]["name"]) for op in run.verify
        ]

    whole_by_op = {
        model_op.index: whole.stats[op["index"]]
        for op, model_op in zip(whole.verify, _match_ops(names(whole), model_ops), strict=True)
        if model_op is not None
    }
    errors = []
    for op, model_op in zip(own.verify, _match_ops(names(own), model_ops), strict=True):
        stats = own.stats[op["index"]]
        quantized = own.tensors[op["inputs"][0]]
        scale, zero_point = quantized["quantization"]
        rmse = math.sqrt(stats.noise / stats.count) if stats.count else 0.0
        accumulated = whole_by_op.get(model_op.index) if model_op is not None else None
        errors.append(
            OpError(
                position=model_op.index if model_op is not None else 10_000 + op["index"],
                op_type=own.quantized_op(op)["op_name"],
                layers=model_op.layers if model_op is not None else (),
                tensor=model_op.tensor if model_op is not None else quantized["name"],
                sqnr_db=stats.sqnr_db(),
                channel_sqnr_db=stats.channel_sqnr_db(),
                accumulated_sqnr_db=accumulated.sqnr_db() if accumulated is not None else None,
                rmse_per_scale=rmse / scale if scale else None,
                mean_error=stats.error_sum / stats.count if stats.count else 0.0,
                max_abs_error=stats.max_abs,
                scale=float(scale) if scale else None,
                zero_point=int(zero_point) if scale else None,
                weights=own.weight_error(op),
            )
        )
    return tuple(sorted(errors, key=lambda error: error.position))


def rank(errors: Sequence[OpError]) -> list[OpError]:
    """Most sensitive first (lowest ``sensitivity``), model order among equals."""
    return sorted(errors, key=lambda error: (error.sensitivity, error.position))


def layer_groups(ranked: Sequence[OpError], model_ops: Sequence[ModelOp]) -> list[LayerGroup]:
    """The ranking by layer: each entry leaves in float every op named by the same layers (all of a
    Normalization layer's SUB and MUL, say), in the order of their most sensitive op."""
    groups: dict[tuple[str, ...], LayerGroup] = {}
    for error in ranked:
        key = error.layers or (error.tensor,)
        if key in groups:
            continue
        if error.layers:
            tensors = tuple(op.tensor for op in model_ops if op.float_output and op.layers == error.layers)
        else:
            tensors = (error.tensor,)
        groups[key] = LayerGroup(error.layers, error.label, tensors or (error.tensor,), error.sensitivity)
    return list(groups.values())


# ---------------------------------------------------------------------------------------------------------------
# The command's function


def debug_quantization(model_path: Path, options: DebugOptions, *, workdir: Path | None = None) -> DebugReport:
    """Measure per-layer int8 quantization error of ``model_path`` (and, with data, the accuracy each layer costs).

    Returns a DebugReport whose ops are sorted from most to least sensitive. Raises UsageError/ModelLoadError/
    DataError for bad input, ConversionError when calibration or quantization fails.
    """

    convert_options = replace(options.convert, modes=("int8",), io_types=())
    with contextlib.ExitStack() as stack:
        if workdir is None:
            workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="tflq-debug-")))
        session = ModelSession(model_path, convert_options, workdir)
        session.require_converter("tflq debug's int8 per-layer ranking")  # a .tflite MODEL: one line, before any work
        exported = session.exported
        session.calibration_samples()
        inputs = debug_inputs(options, session, workdir)
        evaluator, float_score, samples = inputs.evaluator, inputs.float_score, inputs.samples
        calibrated = session.calibrated_model()
        model_ops = read_ops(calibrated, exported, session.relabel())
        errors = rank(measure_ops(calibrated, model_ops, samples, per_tensor=convert_options.per_tensor))
        groups = layer_groups(errors, model_ops)
        accuracy = None
        if evaluator is not None and float_score is not None:
            accuracy = _check_accuracy(session, calibrated, evaluator, float_score, groups[: options.top], workdir)
        return DebugReport(
            model=str(model_path),
            samples=len(samples),
            sample_source=inputs.source,
            per_tensor=convert_options.per_tensor,
            ops=tuple(errors),
            groups=tuple(groups),
            accuracy=accuracy,
            notes=inputs.notes,
        )


@dataclass(frozen=True)
class DebugInputs:
    """What a debug run measures on: the samples of the layer errors (``source``: where they come from) and, with
    evaluation data, the evaluator and float32's score (None, with a note, for a model without a classifier
    output)."""

    samples: list[dict[str, np.ndarray]]
    source: str
    evaluator: Evaluator | None = None
    float_score: Score | None = None
    notes: tuple[str, ...] = ()


def debug_inputs(options: DebugOptions, session: ModelSession, workdir: Path) -> DebugInputs:
    """The samples and scoring of one debug run (any mode): ``options.data``'s first ``layer_samples`` samples and
    its evaluator, or the calibration samples without data. float32 is written to ``workdir`` on first use."""
    if not options.data:
        samples = session.calibration_samples()[: options.layer_samples]
        return DebugInputs(samples, f"{options.convert.calibration} (calibration)")
    float_path = workdir / "float32.tflite"
    evaluator = Evaluator(
        options.data, session.exported, float_model=lambda: _float32(session, float_path),
        reference=options.reference, limit=options.eval_samples, images=options.convert.images,
        model_options=options.convert.model,
    )
    float_score: Score | None = None
    notes: tuple[str, ...] = ()
    try:  # before the layer errors: a model without a classifier output still gets them
        float_score = evaluator.score(_float32(session, float_path))
    except NoClassifierOutput as error:
        notes = (
            f"no accuracy checks: they need a classifier output (class scores of shape (N, C)) and the "
            f"model's outputs are {error.outputs}; the layer errors are measured on {options.data} all the same",
        )
    return DebugInputs(_data_samples(options, session), options.data, evaluator, float_score, notes)


def _data_samples(options: DebugOptions, session: ModelSession) -> list[dict[str, np.ndarray]]:
    from tflq.model.data import open_data

    dataset = open_data(
        options.data or "", session.exported.inputs, limit=options.layer_samples, role="evaluation",
        images=options.convert.images,
    )
    return list(dataset.samples())


def _write(path: Path, content: bytes) -> Path:
    path.write_bytes(content)
    return path


def _float32(session: ModelSession, path: Path) -> Path:
    """The model's float32 ``.tflite`` at ``path``, converted on first use."""
    if not path.exists():
        _write(path, session.convert_variant(Variant("float32")))
    return path


def _check_accuracy(
    session: ModelSession, calibrated: bytes, evaluator: Evaluator, float_score: Score, groups: Sequence[LayerGroup],
    workdir: Path,
) -> AccuracyCheck:
    int8_score = evaluator.score(_write(workdir / "int8.tflite", session.convert_variant(Variant("int8"))))
    recoveries = []
    for number, group in enumerate(groups):
        try:
            with _tf.quiet():
                content = _calibrated.quantize(
                    calibrated, io_type="float32", per_tensor=session.options.per_tensor, denylisted_nodes=group.tensors
                )
        except _tf.library_errors() as error:  # the quantizer failed on this group: report it, keep the others
            recoveries.append(Recovery(group, None, _tf.last_error_line(str(error)) or type(error).__name__))
            continue
        try:
            score = evaluator.score(_write(workdir / f"int8_float_{number}.tflite", content))
        except TflqError as error:
            recoveries.append(Recovery(group, None, str(error)))
            continue
        recoveries.append(Recovery(group, score.value))
    return AccuracyCheck(
        metric=evaluator.metric,
        samples=float_score.samples,
        float32=float_score.value,
        int8=int8_score.value,
        recoveries=tuple(recoveries),
    )
