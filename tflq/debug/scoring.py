"""One top-1 figure per ``.tflite`` for ``tflq debug`` and ``tflq auto``, measured by the harness.

With labels the figure is top-1 accuracy. Without labels it is top-1 agreement with a reference, which is either
the model the user named with ``--reference`` or the model's own float32 conversion. So an "accuracy drop" is
measured against the float32 model either way. The figure is a fraction in [0, 1], as in the harness and the
batch runner, and drops are in percentage points. It is the mean over the model's classifier outputs, the ones the
harness scores with a top-1. An output that is not a classifier cannot give points of accuracy.

Running the model, the metrics and the latency protocol are :mod:`tflq.measure.harness`'s (``run_tflite``, ``score``,
``run_reference``), in this process. This module only picks the figure and keeps the reference predictions.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tflq._tf import imports as _tf
from tflq.errors import UsageError
from tflq.model.data import Dataset, ImageOptions, open_data
from tflq.model.load import ExportedModel, ModelOptions

LATENCY_RUNS = 50


@dataclass(frozen=True)
class Score:
    """What scoring one model gave: ``value`` is a top-1 fraction in [0, 1], on ``samples`` samples."""

    value: float
    samples: int


class NoClassifierOutput(UsageError):
    """The model has no output a top-1 can be computed on (regression or coordinate outputs only). ``outputs``
    names the model's outputs and their shapes."""

    def __init__(self, message: str, outputs: str) -> None:
        super().__init__(message)
        self.outputs = outputs


def points(better: float, worse: float) -> float:
    """The drop from ``better`` to ``worse`` (fractions) in percentage points."""
    return (better - worse) * 100.0


class Evaluator:
    """Scores ``.tflite`` files of one model on one evaluation set.

    ``float_model`` gives the path of the model's float32 ``.tflite``. It is called only when the data has no labels
    and no ``reference`` is given, because the float32 model is then the reference. Raises DataError (data that
    does not fit the model) or ModelLoadError/InterpreterError (a bad reference) when built.
    """

    def __init__(
        self,
        data: str,
        exported: ExportedModel,
        *,
        float_model: Callable[[], Path],
        reference: str | None = None,
        limit: int | None = None,
        images: ImageOptions | None = None,
        model_options: ModelOptions | None = None,
    ) -> None:
        from tflq.measure.harness import EvalSettings, ReferenceRun, run_reference, run_tflite

        self.data = data
        self.settings = EvalSettings(runs=0, limit=limit)
        self.dataset: Dataset = open_data(
            data, exported.inputs, outputs=exported.outputs, limit=limit, role="evaluation", images=images
        )
        next(self.dataset.batches(1))  # bad data fails here, before any conversion
        self.labelled = self.dataset.has_labels and reference is None
        self.reference: ReferenceRun | None = None
        if self.labelled:
            self.metric = "top-1 accuracy"
        elif reference is not None:
            self.metric = f"top-1 agreement with {reference}"
            with _tf.quiet():
                self.reference = run_reference(reference, data, self.settings, model_options)
        else:
            self.metric = "top-1 agreement with the float32 model"
            path = str(float_model())
            with _tf.quiet():
                run = run_tflite(path, self.settings, data, opened=self.dataset, measure_latency=False)
            self.reference = ReferenceRun(path, tuple(t.name for t in run.signature.outputs), run.predictions or {})

    def score(self, tflite_path: Path) -> Score:
        """Top-1 (fraction) of the model at ``tflite_path``. Raises NoClassifierOutput when no output is a classifier
        the harness scores, InterpreterError, DataError or UsageError."""
        from tflq.measure.harness import run_tflite, score

        with _tf.quiet():  # the interpreter announces its delegate when it allocates
            run = run_tflite(str(tflite_path), self.settings, self.data, opened=self.dataset, measure_latency=False)
        measurement = score(run, tflite_path.stat().st_size, None, reference=self.reference, data=self.data)
        if self.labelled:
            values = [result.top1 for result in measurement.accuracy if result.top1 is not None]
        else:
            values = [result.top1 for result in measurement.agreement if result.top1 is not None]
        if not values:
            outputs = ", ".join(f"{t.name} {t.shape[1:]}" for t in run.signature.outputs)
            raise NoClassifierOutput(
                f"{self.data}: accuracy needs a classifier output (class scores of shape (N, C)) with labels or a "
                f"reference; the model's outputs are {outputs}",
                outputs,
            )
        return Score(value=float(np.mean(values)), samples=measurement.samples)

    def latency_ms(self, tflite_path: Path, *, runs: int = LATENCY_RUNS) -> float:
        """Median latency (ms, batch of one, first evaluation sample) by the harness's latency protocol."""
        from dataclasses import replace

        from tflq.measure.harness import run_tflite

        settings = replace(self.settings, runs=runs, limit=1)
        with _tf.quiet():
            run = run_tflite(str(tflite_path), settings, self.data, measure_latency=True)
        if run.latency is None:
            raise UsageError(f"{tflite_path}: no latency measured")
        return run.latency.p50_ms
