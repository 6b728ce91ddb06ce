"""``tflq auto``: the most compressed (or the fastest) variant whose accuracy drop stays within a budget.

Candidates run from the most to the least compressed:

1. ``int8``;
2. ``int8`` with the 1, 2, ... ``max_float_layers`` most sensitive layers left in float. The ranking comes from
   ``tflq debug`` (:func:`tflq.debug.measure_ops`) and is computed only when plain int8 misses the budget;
3. ``16x8``, ``dynamic``, ``float16``.

Each candidate is converted, checked to run, and scored on the evaluation data. The score is top-1 accuracy with
labels, and top-1 agreement with the reference (or with the float32 model) without labels. A candidate fits when
float32's score minus its own is at most ``max_drop`` points. With ``objective="size"`` the search stops at the
first fit. With ``objective="latency"`` every candidate is scored, the ones that fit are timed, and the fastest
wins. The winner is written atomically to ``<output_dir>/<name>.auto.tflite``.

The model is exported once and calibrated once. Every int8 candidate is re-quantized from that calibrated model
(``_calibrated.quantize`` with a node denylist). 16x8 is the exception: it goes through the public converter,
which calibrates again (see ``_calibrated``), and the result counts it in ``calibrations``.
"""
from __future__ import annotations

import contextlib
import math
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from tflq import _calibrated, _tf
from tflq.convert import ConvertOptions, ModelSession, float_ops, output_name, verify_runs, write_atomically
from tflq.errors import ConversionError, GateError, InterpreterError, UsageError
from tflq.modes import Variant
from tflq.scoring import points

OBJECTIVES = ("size", "latency")
DEFAULT_MAX_FLOAT_LAYERS = 3
RANKING_SAMPLES = 100

FITS = "fits"
REJECTED = "rejected"
FAILED = "error"
NOT_TRIED = "not tried"


@dataclass(frozen=True)
class AutoOptions:
    """What ``auto_search`` looks for. ``max_drop`` and ``objective`` are the ``auto:`` block of a batch file.

    ``data``: evaluation data (required), labelled, or compared with ``reference`` (default: the float32 model).
    ``convert`` carries calibration, model loading and ``per_tensor``. Its modes and I/O types are ignored,
    because every candidate has float32 I/O. Raises UsageError when built with invalid values.
    """

    max_drop: float
    objective: str = "size"
    data: str | None = None
    reference: str | None = None
    eval_samples: int | None = None
    max_float_layers: int = DEFAULT_MAX_FLOAT_LAYERS
    convert: ConvertOptions = field(default_factory=ConvertOptions)
    output_dir: Path = Path("build")
    name: str | None = None

    def __post_init__(self) -> None:
        if isinstance(self.max_drop, bool) or not isinstance(self.max_drop, (int, float)) or not math.isfinite(self.max_drop) or self.max_drop < 0:
            raise UsageError(f"--max-drop must be a number of accuracy points >= 0, got {self.max_drop!r}")
        if self.objective not in OBJECTIVES:
            raise UsageError(f"--objective {self.objective!r}: expected one of {', '.join(OBJECTIVES)}")
        if not self.data:
            raise UsageError(
                "tflq auto needs evaluation data to measure the accuracy drop: pass --data EVAL "
                "(with labels, or unlabelled to compare with --reference or the float32 model)"
            )
        if self.max_float_layers < 0:
            raise UsageError(f"--max-float-layers must be 0 or more, got {self.max_float_layers}")
        if self.eval_samples is not None and self.eval_samples < 1:
            raise UsageError(f"--eval-samples must be at least 1, got {self.eval_samples}")


@dataclass(frozen=True)
class Candidate:
    """One variant the search may pick."""

    label: str  # "int8", "int8+float(logits)", "16x8", "dynamic", "float16"
    mode: str
    float_layers: tuple[str, ...] = ()  # ranking entries (layer labels) left in float
    float_nodes: tuple[str, ...] = ()  # their ops' output tensors: the quantizer's node denylist
    unavailable: str | None = None  # why the candidate could not be built (the ranking failed)


@dataclass(frozen=True)
class Trial:
    """What became of one candidate. ``score`` is its top-1 (a fraction in [0, 1]); ``drop`` is float32's top-1 minus
    its own in percentage points (negative: better than float32)."""

    candidate: Candidate
    status: str  # fits, rejected, error, not tried
    reason: str
    score: float | None = None
    drop: float | None = None
    size_bytes: int | None = None
    latency_ms: float | None = None
    float_ops: int = 0
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "candidate": self.candidate.label,
            "mode": self.candidate.mode,
            "float_layers": list(self.candidate.float_layers),
            "status": self.status,
            "reason": self.reason,
            "top1": _rounded(self.score, 4),
            "drop_points": _rounded(self.drop),
            "size_bytes": self.size_bytes,
            "latency_ms": _rounded(self.latency_ms, 4),
            "float_ops": self.float_ops,
            "seconds": _rounded(self.seconds, 3),
        }


@dataclass(frozen=True)
class AutoResult:
    """Everything ``auto_search`` tried. ``chosen`` is None when nothing fits (then ``best`` is the smallest drop)."""

    model: str
    objective: str
    max_drop: float
    metric: str
    samples: int
    float32_score: float
    float32_size: int
    trials: tuple[Trial, ...]
    chosen: Trial | None
    best: Trial | None
    path: Path | None
    calibrations: int
    seconds: float
    ranking_seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        """The stable JSON form (``tflq auto --json``, keys documented in the README section "Debug, selective quantization and auto search")."""
        return {
            "model": self.model,
            "objective": self.objective,
            "max_drop_points": self.max_drop,
            "metric": self.metric,
            "samples": self.samples,
            "float32": {"top1": _rounded(self.float32_score, 4), "size_bytes": self.float32_size},
            "trials": [trial.to_dict() for trial in self.trials],
            "chosen": self.chosen.candidate.label if self.chosen else None,
            "best": self.best.candidate.label if self.best else None,
            "path": str(self.path) if self.path else None,
            "calibrations": self.calibrations,
            "ranking_seconds": _rounded(self.ranking_seconds, 3),
            "seconds": _rounded(self.seconds, 3),
        }


class NoCandidateFits(GateError):
    """No candidate stays within the budget. ``result`` holds every trial and the best one found."""

    def __init__(self, result: AutoResult) -> None:
        best = result.best
        if best is not None and best.drop is not None:
            detail = f"the best was {best.candidate.label} with a drop of {best.drop:.2f} points"
        else:
            detail = "no candidate could be measured"
        super().__init__(
            f"no candidate stays within --max-drop {result.max_drop:g} points of float32 ({result.metric} "
            f"{result.float32_score:.2%}); {detail}. Nothing written. Raise --max-drop, try more layers in float "
            "(--max-float-layers), or use quantization-aware training"
        )
        self.result = result


def _rounded(value: float | None, digits: int = 2) -> float | None:
    return None if value is None or not math.isfinite(value) else round(float(value), digits)


def output_path(output_dir: Path, name: str) -> Path:
    """``<out>/<name>.auto.tflite``."""
    return output_dir / f"{name}.auto.tflite"


class _Search:
    """One search: the session (export and calibration, once), the evaluator, and the trials so far."""

    def __init__(self, model_path: Path, options: AutoOptions, workdir: Path) -> None:
        from tflq.scoring import Evaluator

        self.options = options
        self.workdir = workdir
        convert_options = replace(options.convert, modes=("int8",), io_types=(), skip_layers=(), skip_ops=())
        self.session = ModelSession(model_path, convert_options, workdir)
        exported = self.session.exported
        self.session.calibration_samples()
        self.calibrations = 0
        self.ranking_seconds = 0.0
        self._float_path: Path | None = None  # set before the Evaluator, which converts float32 without labels
        self.evaluator = Evaluator(
            options.data or "", exported, float_model=self.float_model, reference=options.reference,
            limit=options.eval_samples, images=convert_options.images, model_options=convert_options.model,
        )

    def float_model(self) -> Path:
        if self._float_path is None:
            content = self.session.convert_variant(Variant("float32"))
            self._float_path = self.workdir / "float32.tflite"
            self._float_path.write_bytes(content)
        return self._float_path

    def calibrated(self) -> bytes:
        if self.session._calibrated is None:
            self.calibrations += 1
        return self.session.calibrated_model()

    def ranking(self) -> list[Any]:
        """The layer groups, most sensitive first (``tflq debug``'s ranking)."""
        from tflq.data import open_data
        from tflq.debug import layer_groups, measure_ops, rank

        calibrated = self.calibrated()
        samples = list(
            open_data(self.options.data or "", self.session.exported.inputs, limit=RANKING_SAMPLES, role="evaluation",
                      images=self.session.options.images).samples()
        )
        model_ops = self.session.model_ops()
        started = time.perf_counter()
        errors = rank(measure_ops(calibrated, model_ops, samples, per_tensor=self.session.options.per_tensor))
        self.ranking_seconds = time.perf_counter() - started
        return layer_groups(errors, model_ops)

    def candidates(self) -> Iterator[Candidate]:
        yield Candidate("int8", "int8")
        if self.options.max_float_layers:
            try:
                groups = self.ranking()
            except ConversionError as error:
                yield Candidate("int8+float(most sensitive layers)", "int8", unavailable=f"no layer ranking: {error}")
                groups = []
            for count in range(1, min(self.options.max_float_layers, len(groups)) + 1):
                chosen = groups[:count]
                labels = tuple(group.label for group in chosen)
                nodes = tuple(dict.fromkeys(node for group in chosen for node in group.tensors))
                yield Candidate(f"int8+float({','.join(labels)})", "int8", labels, nodes)
        for mode in ("16x8", "dynamic", "float16"):
            yield Candidate(mode, mode)

    def convert(self, candidate: Candidate) -> bytes:
        """The candidate's ``.tflite`` bytes, checked to run. Raises ConversionError."""
        if candidate.mode == "int8":
            calibrated = self.calibrated()
            try:
                with _tf.quiet():
                    content = _calibrated.quantize(
                        calibrated, io_type="float32", per_tensor=self.session.options.per_tensor,
                        denylisted_nodes=candidate.float_nodes,
                    )
            except Exception as error:  # the quantizer raises several types; each becomes one message
                raise ConversionError(f"the quantizer failed: {_tf.last_error_line(str(error))}") from None
        else:
            if candidate.mode == "16x8":
                self.calibrations += 1
            content = self.session.convert_variant(Variant(candidate.mode))
        verify_runs(content, self.session.verification_inputs())
        return content

    def measure(self, candidate: Candidate, number: int, baseline: float) -> tuple[Trial, Path | None]:
        """Convert and score one candidate; a candidate that fails to convert or run is a failed trial."""
        started = time.perf_counter()
        if candidate.unavailable:
            return Trial(candidate, FAILED, candidate.unavailable), None
        try:
            content = self.convert(candidate)
            path = self.workdir / f"candidate.{number}.tflite"
            path.write_bytes(content)
            score = self.evaluator.score(path)
        except (ConversionError, InterpreterError) as error:
            return Trial(candidate, FAILED, str(error), seconds=time.perf_counter() - started), None
        drop = points(baseline, score.value)
        floats = len(float_ops(content)) if candidate.mode == "int8" else 0
        common = dict(score=score.value, drop=drop, size_bytes=len(content), float_ops=floats)
        if drop <= self.options.max_drop:
            trial = Trial(candidate, FITS, f"drop {drop:.2f} <= {self.options.max_drop:g} points", **common)
        else:
            trial = Trial(candidate, REJECTED, f"drop {drop:.2f} > {self.options.max_drop:g} points", **common)
        return replace(trial, seconds=time.perf_counter() - started), path


def auto_search(model_path: Path, options: AutoOptions, *, workdir: Path | None = None) -> AutoResult:
    """Find the most compressed (``objective="size"``) or fastest (``"latency"``) variant of ``model_path`` whose
    accuracy drop against float32 stays within ``options.max_drop`` points, and write it to
    ``<output_dir>/<name>.auto.tflite``.

    Returns the AutoResult with every trial. Raises NoCandidateFits (a GateError, exit 3) when no candidate fits,
    carrying the result and the best candidate found. Raises UsageError/ModelLoadError/DataError for bad input
    before converting anything.
    """
    started = time.perf_counter()
    name = output_name(model_path, options.name)
    with contextlib.ExitStack() as stack:
        if workdir is None:
            workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="tflq-auto-")))
        search = _Search(model_path, options, workdir)
        float_path = search.float_model()
        baseline = search.evaluator.score(float_path)
        trials: list[Trial] = []
        paths: dict[int, Path] = {}
        stopped = False
        for candidate in search.candidates():
            if stopped:
                first_fit = next(trial for trial in trials if trial.status == FITS)
                trials.append(Trial(candidate, NOT_TRIED, f"{first_fit.candidate.label} fits and is more compressed"))
                continue
            trial, path = search.measure(candidate, len(trials), baseline.value)
            if path is not None:
                paths[len(trials)] = path
            trials.append(trial)
            if trial.status == FITS and options.objective == "size":
                stopped = True
        chosen_index: int | None = None
        fitting = [index for index, trial in enumerate(trials) if trial.status == FITS]
        if options.objective == "size" and fitting:
            chosen_index = fitting[0]
        elif options.objective == "latency" and fitting:
            for index in fitting:
                trials[index] = replace(trials[index], latency_ms=search.evaluator.latency_ms(paths[index]))
            chosen_index = min(fitting, key=lambda index: trials[index].latency_ms or math.inf)
            fastest = trials[chosen_index]
            for index in fitting:
                if index != chosen_index:
                    trials[index] = replace(
                        trials[index],
                        reason=f"{trials[index].reason}; slower than {fastest.candidate.label} "
                        f"({trials[index].latency_ms:.3f} vs {fastest.latency_ms:.3f} ms)",
                    )
        written = None
        target = output_path(options.output_dir, name)
        if chosen_index is not None:
            write_atomically(target, paths[chosen_index].read_bytes())
            written = target
        else:
            with contextlib.suppress(FileNotFoundError):
                target.unlink()  # a file from an earlier run must not pass for this run's answer
        measured = [trial for trial in trials if trial.drop is not None]
        best = min(measured, key=lambda trial: (trial.drop, trial.size_bytes or 0)) if measured else None
        result = AutoResult(
            model=str(model_path),
            objective=options.objective,
            max_drop=float(options.max_drop),
            metric=search.evaluator.metric,
            samples=baseline.samples,
            float32_score=baseline.value,
            float32_size=float_path.stat().st_size,
            trials=tuple(trials),
            chosen=trials[chosen_index] if chosen_index is not None else None,
            best=best,
            path=written,
            calibrations=search.calibrations,
            seconds=time.perf_counter() - started,
            ranking_seconds=search.ranking_seconds,
        )
    if result.chosen is None:
        raise NoCandidateFits(result)
    return result
