"""``tflq auto``: the smallest (or the fastest) variant whose accuracy drop stays within a budget.

The candidates are:

1. ``int8``;
2. ``int8`` with the 1, 2, ... ``max_float_layers`` most sensitive layers left in float. The ranking comes from
   ``tflq debug`` (:func:`tflq.debug.layer_error.measure_ops`) and is computed whenever ``max_float_layers`` is above 0,
   because the choice needs every candidate's size;
3. ``16x8``, ``dynamic``, ``float16``;
4. with the ``litert-quantizer`` engine (``engines``): ``int8-weights``, ``int4-weights``, ``dynamic-int4``
   channelwise and with each block size LiteRT Quantizer takes, ``int4x8``, and ``int4-weights`` with the 1, 2, ...
   ``max_float_layers`` most sensitive layers at int8 weights, from ``tflq debug --mode int4-weights``'s ranking
   (:mod:`tflq.debug.engine_error`). A block size a model's layers do not divide fails: an error row, not dropped.

The trials on the Pareto front (no other scored candidate has a top-1 at least as high and a size, or a latency
when timed, at least as low, one of them strictly) are marked (``Trial.pareto``).

Every candidate is converted and checked to run first, so its size is known. Candidates are scored on the
evaluation data: top-1 accuracy with labels, and top-1 agreement with the reference (or with the float32 model)
without labels. A candidate fits when float32's score minus its own is at most ``max_drop`` points.
With ``objective="size"`` candidates are scored from the smallest up, and the search stops at the first that fits:
every candidate left unscored is at least as large (the candidate order breaks ties). With
``objective="latency"`` every candidate is scored, the ones that fit are timed, and the fastest wins (the smaller
one among equal latencies). The winner is written atomically to ``<output_dir>/<name>.auto.tflite``.

The model is exported once and calibrated once. Every int8 candidate is re-quantized from that calibrated model
(``_calibrated.quantize`` with a node denylist), and 16x8 from the same calibration (``_calibrated.quantize_int16``,
as ``tflq convert`` does). A LiteRT Quantizer candidate with int8 activations calibrates on its own; the result
counts every calibration in ``calibrations``.
"""

from __future__ import annotations

import contextlib
import math
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from tflq._tf import calibrated as _calibrated
from tflq._tf import imports as _tf
from tflq.convert.session import ModelSession, float_ops, output_name, verify_runs, write_atomically
from tflq.debug.options import (  # noqa: F401 (re-exported)
    DEFAULT_MAX_FLOAT_LAYERS,
    OBJECTIVES,
    AutoOptions,
    output_path,
)
from tflq.debug.scoring import points
from tflq.errors import ConversionError, GateError, InterpreterError, UsageError
from tflq.modes import MODES, Variant

RANKING_SAMPLES = 100

FITS = "fits"
REJECTED = "rejected"
FAILED = "error"
NOT_TRIED = "not tried"
LATENCY_DIGITS = 4  # decimals of a millisecond, as reported and as compared on the latency front


@dataclass(frozen=True)
class Candidate:
    """One variant the search may pick."""

    label: str  # "int8", "int8+float(logits)", "16x8", "dynamic", "float16"
    mode: str
    float_layers: tuple[str, ...] = ()  # ranking entries (layer labels) left in float
    float_nodes: tuple[str, ...] = ()  # their ops' output tensors: the quantizer's node denylist
    unavailable: str | None = None  # why the candidate could not be built (the ranking failed)
    block_size: int | None = None  # LiteRT Quantizer blockwise weights
    int8_layers: tuple[str, ...] = ()  # ranking entries kept at int8 weights (an int4 mode)
    int8_nodes: tuple[str, ...] = ()  # their ops' output tensors

    @property
    def engine(self) -> str:
        return MODES[self.mode].engine


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
    pareto: tuple[str, ...] = ()  # "size", "latency": on the Pareto front of top-1 against that cost

    def to_dict(self) -> dict[str, Any]:
        return {
            "candidate": self.candidate.label,
            "mode": self.candidate.mode,
            "engine": self.candidate.engine,
            "block_size": self.candidate.block_size,
            "float_layers": list(self.candidate.float_layers),
            "int8_layers": list(self.candidate.int8_layers),
            "pareto": list(self.pareto),
            "status": self.status,
            "reason": self.reason,
            "top1": _rounded(self.score, 4),
            "drop_points": _rounded(self.drop),
            "size_bytes": self.size_bytes,
            "latency_ms": _rounded(self.latency_ms, LATENCY_DIGITS),
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
        """The stable JSON form (``tflq auto --json``; keys documented in the README section "Debug, selective
        quantization and auto search")."""
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


class _Search:
    """One search: the session (export and calibration, once), the evaluator, and the trials so far."""

    def __init__(self, model_path: Path, options: AutoOptions, workdir: Path) -> None:
        from tflq.debug.scoring import Evaluator

        self.options = options
        self.workdir = workdir
        convert_options = replace(
            options.convert, modes=("int8",), io_types=(), skip_layers=(), skip_ops=(), layer_precision=()
        )
        self.session = ModelSession(model_path, convert_options, workdir)
        if "converter" in options.engines:  # a .tflite MODEL: one line, before any work
            self.session.require_converter("tflq auto's converter candidates (pass --engines litert-quantizer)")
        exported = self.session.exported
        self.session.calibration_samples()
        self.calibrations = 0
        self.ranking_seconds = 0.0
        self._float_path: Path | None = None  # set before the Evaluator, which converts float32 without labels
        self._ranking_samples: list[dict[str, Any]] | None = None
        self.evaluator = Evaluator(
            options.data or "",
            exported,
            float_model=self.float_model,
            reference=options.reference,
            limit=options.eval_samples,
            images=convert_options.images,
            model_options=convert_options.model,
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

    def ranking_samples(self) -> list[dict[str, Any]]:
        """The first evaluation samples, which the layer rankings are measured on (read once)."""
        from tflq.model.data import open_data

        if self._ranking_samples is None:
            self._ranking_samples = list(
                open_data(
                    self.options.data or "",
                    self.session.exported.inputs,
                    limit=RANKING_SAMPLES,
                    role="evaluation",
                    images=self.session.options.images,
                ).samples()
            )
        return self._ranking_samples

    def ranking(self) -> list[Any]:
        """The layer groups, most sensitive first (``tflq debug``'s ranking)."""
        from tflq.debug.layer_error import layer_groups, measure_ops, rank

        calibrated = self.calibrated()
        samples = self.ranking_samples()
        model_ops = self.session.model_ops()
        started = time.perf_counter()
        errors = rank(measure_ops(calibrated, model_ops, samples, per_tensor=self.session.options.per_tensor))
        self.ranking_seconds += time.perf_counter() - started
        return layer_groups(errors, model_ops)

    def engine_ranking(self, mode_name: str) -> list[Any]:
        """The layer groups of a LiteRT Quantizer mode, most sensitive first (``tflq debug --mode``'s ranking)."""
        from tflq.debug import engine_error
        from tflq.debug.layer_error import layer_groups, rank

        mode = MODES[mode_name]
        model_ops = self.session.model_ops()
        started = time.perf_counter()
        base = engine_error.mode_settings(self.session.options, mode)
        full = engine_error.build(self.session, mode, base)
        errors = rank(engine_error._measure(self.session, mode, base, full, model_ops, self.ranking_samples()))
        self.ranking_seconds += time.perf_counter() - started
        return layer_groups(errors, model_ops)

    def candidates(self) -> Iterator[Candidate]:
        if "converter" in self.options.engines:
            yield from self.converter_candidates()
        if "litert-quantizer" in self.options.engines:
            yield from self.engine_candidates()

    def engine_candidates(self) -> Iterator[Candidate]:
        from tflq._tf.litert_quantizer import BLOCK_SIZES

        for name in ("int8-weights", "int4-weights", "dynamic-int4"):
            yield Candidate(name, name)
        for size in BLOCK_SIZES:
            yield Candidate(f"dynamic-int4(block={size})", "dynamic-int4", block_size=size)
        yield Candidate("int4x8", "int4x8")
        if self.options.max_float_layers:
            try:
                groups = self.engine_ranking("int4-weights")
            except ConversionError as error:
                yield Candidate("int4-weights+int8(most sensitive layers)", "int4-weights",
                                unavailable=f"no layer ranking: {error}")
                groups = []
            for count in range(1, min(self.options.max_float_layers, len(groups)) + 1):
                chosen = groups[:count]
                labels = tuple(group.label for group in chosen)
                nodes = tuple(dict.fromkeys(node for group in chosen for node in group.tensors))
                yield Candidate(
                    f"int4-weights+int8({','.join(labels)})", "int4-weights", int8_layers=labels, int8_nodes=nodes
                )

    def converter_candidates(self) -> Iterator[Candidate]:
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
        if candidate.engine != "converter":
            from tflq.debug import engine_error

            mode = MODES[candidate.mode]
            settings = engine_error.with_layers(
                engine_error.mode_settings(self.session.options, mode, block_size=candidate.block_size),
                precise=candidate.int8_nodes,
            )
            if mode.calibrated:
                self.calibrations += 1  # LiteRT Quantizer calibrates on the session's samples itself
            content = engine_error.build(self.session, mode, settings)
        elif candidate.mode == "int8":
            calibrated = self.calibrated()
            try:
                with _tf.quiet():
                    content = _calibrated.quantize(
                        calibrated,
                        io_type="float32",
                        per_tensor=self.session.options.per_tensor,
                        denylisted_nodes=candidate.float_nodes,
                    )
            except _tf.library_errors() as error:  # the quantizer's types; each becomes one message
                raise ConversionError(f"the quantizer failed: {_tf.last_error_line(str(error))}") from None
        else:
            if MODES[candidate.mode].calibrated:
                self.calibrated()  # 16x8 is quantized from the same calibration as the int8 candidates
            content = self.session.convert_variant(Variant(candidate.mode))
        verify_runs(content, self.session.verification_inputs())
        return content

    def build(self, candidate: Candidate, number: int) -> Trial:
        """Convert one candidate and check it runs. Returns a NOT_TRIED trial with its size (its ``.tflite`` is
        ``self.path(number)``), or a FAILED trial when it cannot be built or run."""
        started = time.perf_counter()
        if candidate.unavailable:
            return Trial(candidate, FAILED, candidate.unavailable)
        try:
            content = self.convert(candidate)
        except (ConversionError, InterpreterError) as error:
            return Trial(candidate, FAILED, str(error), seconds=time.perf_counter() - started)
        self.path(number).write_bytes(content)
        floats = len(float_ops(content)) if candidate.mode == "int8" else 0
        return Trial(
            candidate, NOT_TRIED, "", size_bytes=len(content), float_ops=floats, seconds=time.perf_counter() - started
        )

    def path(self, number: int) -> Path:
        return self.workdir / f"candidate.{number}.tflite"

    def score(self, built: Trial, number: int, baseline: float) -> Trial:
        """Score a built candidate: it fits or is rejected, or fails when the interpreter cannot run it."""
        started = time.perf_counter()
        try:
            score = self.evaluator.score(self.path(number))
        except InterpreterError as error:
            seconds = built.seconds + time.perf_counter() - started
            return replace(built, status=FAILED, reason=str(error), seconds=seconds)
        drop = points(baseline, score.value)
        fits = drop <= self.options.max_drop
        reason = f"drop {drop:.2f} {'<=' if fits else '>'} {self.options.max_drop:g} points"
        return replace(
            built,
            status=FITS if fits else REJECTED,
            reason=reason,
            score=score.value,
            drop=drop,
            seconds=built.seconds + time.perf_counter() - started,
        )


def _by_size(trials: list[Trial]) -> list[int]:
    """The built candidates, smallest first (candidate order among equal sizes)."""
    built = [index for index, trial in enumerate(trials) if trial.size_bytes is not None]
    return sorted(built, key=lambda index: (trials[index].size_bytes, index))


def _distinct(first: float, second: float, unit: str) -> str:
    """``"a vs b unit"`` with enough digits that unequal values do not print alike."""
    for digits in (3, 4, 5, 6):
        a, b = f"{first:.{digits}f}", f"{second:.{digits}f}"
        if a != b:
            break
    return f"{a} vs {b} {unit}"


def _search_size(search: _Search, trials: list[Trial], baseline: float) -> int | None:
    """Score the built candidates from the smallest up and stop at the first that fits: every candidate not
    scored is at least as large. Returns the index of the chosen trial."""
    chosen: int | None = None
    for index in _by_size(trials):
        if chosen is None:
            trials[index] = search.score(trials[index], index, baseline)
            if trials[index].status == FITS:
                chosen = index
                trials[index] = replace(trials[index], reason=f"{trials[index].reason}; the smallest that fits")
            continue
        winner, trial = trials[chosen], trials[index]
        assert trial.size_bytes is not None and winner.size_bytes is not None
        relation = "larger than" if trial.size_bytes > winner.size_bytes else "the same size as"
        trials[index] = replace(
            trial,
            reason=f"not scored: {relation} {winner.candidate.label} ({winner.size_bytes:,d} B), which fits"
            + ("" if relation == "larger than" else " and comes first"),
        )
    return chosen


def _search_latency(search: _Search, trials: list[Trial], baseline: float) -> int | None:
    """Score every built candidate, time the ones that fit, keep the fastest (the smaller among equals)."""
    for index in range(len(trials)):
        if trials[index].size_bytes is not None:
            trials[index] = search.score(trials[index], index, baseline)
    fitting = [index for index, trial in enumerate(trials) if trial.status == FITS]
    if not fitting:
        return None
    for index in fitting:
        trials[index] = replace(trials[index], latency_ms=search.evaluator.latency_ms(search.path(index)))
    chosen = min(fitting, key=lambda index: (trials[index].latency_ms, trials[index].size_bytes, index))
    fastest = trials[chosen]
    assert fastest.latency_ms is not None
    trials[chosen] = replace(fastest, reason=f"{fastest.reason}; the fastest that fits")
    for index in fitting:
        trial = trials[index]
        if index == chosen or trial.latency_ms is None:
            continue
        relation = "slower than" if trial.latency_ms > fastest.latency_ms else "as fast as"
        trials[index] = replace(
            trial,
            reason=f"{trial.reason}; {relation} {fastest.candidate.label} "
            f"({_distinct(trial.latency_ms, fastest.latency_ms, 'ms')})"
            + (
                ""
                if relation == "slower than"
                else f" and not smaller ({trial.size_bytes:,d} vs {fastest.size_bytes:,d} B)"
            ),
        )
    return chosen


def _score_the_rest(search: _Search, trials: list[Trial], baseline: float, chosen: int | None) -> None:
    """Score the built candidates the objective left unscored (``score_all``), saying why they were not chosen."""
    for index, trial in enumerate(trials):
        if trial.size_bytes is None or trial.score is not None:
            continue
        scored = search.score(trial, index, baseline)
        if chosen is not None and scored.status == FITS:
            winner = trials[chosen]
            scored = replace(scored, reason=f"{scored.reason}; not smaller than {winner.candidate.label}")
        trials[index] = scored


def _mark_pareto(trials: list[Trial]) -> list[Trial]:
    """The trials with ``pareto`` set: the Pareto front of top-1 against size, and against latency when timed.

    Latencies are compared as reported (``to_dict``: 4 decimals of a millisecond), so two candidates whose reported
    latencies are equal tie, and the marks agree with the figures beside them: the digits CNN's candidates run in
    ~0.003 ms, where the unrounded values differ by scheduling noise alone (a latency front test flipped on it)."""
    from tflq.debug.pareto import front

    by_size = front([(trial.score, trial.size_bytes) for trial in trials])
    by_latency = front([(trial.score, _rounded(trial.latency_ms, LATENCY_DIGITS)) for trial in trials])
    return [
        replace(trial, pareto=tuple(cost for cost, on in (("size", index in by_size), ("latency", index in by_latency))
                                    if on))
        for index, trial in enumerate(trials)
    ]


def _check_output(output_dir: Path, target: Path) -> None:
    """Refuse, before any work, an output folder that is a file (or lies under one) and a target that is a folder."""
    for folder in (output_dir, *output_dir.parents):
        if folder.exists():
            if not folder.is_dir():
                raise UsageError(f"-o {output_dir}: cannot write {target.name}: {folder} is a file, not a folder")
            break
    if target.is_dir():
        raise UsageError(f"-o {output_dir}: cannot write {target}: it is a folder")


def auto_search(model_path: Path, options: AutoOptions, *, workdir: Path | None = None) -> AutoResult:
    """Find the smallest (``objective="size"``) or fastest (``"latency"``) variant of ``model_path`` whose
    accuracy drop against float32 stays within ``options.max_drop`` points, and write it to
    ``<output_dir>/<name>.auto.tflite``.

    Returns the AutoResult with every trial. Raises NoCandidateFits (a GateError, exit 3) when no candidate fits,
    carrying the result and the best candidate found. Raises UsageError/ModelLoadError/DataError for bad input
    before converting anything.
    """
    started = time.perf_counter()
    name = output_name(model_path, options.name)
    target = output_path(options.output_dir, name)
    _check_output(options.output_dir, target)
    with contextlib.ExitStack() as stack:
        if workdir is None:
            workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="tflq-auto-")))
        search = _Search(model_path, options, workdir)
        float_path = search.float_model()
        baseline = search.evaluator.score(float_path)
        trials = [search.build(candidate, number) for number, candidate in enumerate(search.candidates())]
        if options.objective == "size":
            chosen_index = _search_size(search, trials, baseline.value)
        else:
            chosen_index = _search_latency(search, trials, baseline.value)
        if options.score_all:
            _score_the_rest(search, trials, baseline.value, chosen_index)
        trials = _mark_pareto(trials)
        written = None
        if chosen_index is not None:
            try:
                write_atomically(target, search.path(chosen_index).read_bytes())
            except OSError as error:
                raise UsageError(f"-o {options.output_dir}: cannot write {target}: {error.strerror or error}") from None
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
