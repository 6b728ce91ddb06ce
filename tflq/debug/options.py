"""What ``tflq auto`` looks for: the search's options, declared once (no numpy, no TensorFlow)."""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

from tflq import options as opts
from tflq.convert.options import ConvertOptions
from tflq.errors import UsageError
from tflq.modes import ENGINES

OBJECTIVES = ("size", "latency")
DEFAULT_MAX_FLOAT_LAYERS = 3


@dataclass(frozen=True)
class AutoOptions:
    """What ``auto_search`` looks for. ``max_drop`` and ``objective`` are the ``auto:`` block of a batch file.

    ``data``: evaluation data (required), labelled, or compared with ``reference`` (default: the float32 model).
    ``convert`` carries calibration, model loading and ``per_tensor``. Its modes and I/O types are ignored,
    because every candidate has float32 I/O. Raises UsageError when built with invalid values.
    """

    max_drop: float = opts.setting(
        None,
        opts.Number(0, 100, optional=True),
        "the largest accepted top-1 drop against float32, in percentage "
        "points (in a batch file: when set, the search runs for this model)",
        flag="--max-drop",
        section="auto",
        shown_default="required by tflq auto; none in a batch file: no search",
    )
    objective: str = opts.setting(
        "size",
        opts.Choice(OBJECTIVES),
        "size: the smallest candidate that fits; latency: time every fitting candidate, keep the fastest",
        flag="--objective",
        section="auto",
    )
    data: str | None = None
    reference: str | None = None
    eval_samples: int | None = None
    max_float_layers: int = opts.setting(
        DEFAULT_MAX_FLOAT_LAYERS,
        opts.Integer(minimum=0, maximum=64),
        "try int8 with up to N of the most sensitive layers left in float, and int4 weights with up to N at int8",
        flag="--max-float-layers",
        section="auto",
    )
    engines: tuple[str, ...] = opts.setting(
        ENGINES,
        opts.Names(allowed=ENGINES, non_empty=True, what="engine"),
        "the engines whose modes are candidates: converter (int8, 16x8, dynamic, float16) and litert-quantizer "
        "(int8-weights, int4-weights, dynamic-int4 with each block size, int4x8, int4 with layers at int8)",
        flag="--engines",
        section="auto",
        shown_default="converter, litert-quantizer",
    )
    score_all: bool = opts.setting(
        False,
        opts.Flag(),
        "score every candidate, so that the Pareto front covers all of them (objective size scores from the smallest "
        "up and stops at the first that fits)",
        flag="--score-all",
        section="auto",
    )
    convert: ConvertOptions = field(default_factory=ConvertOptions)
    output_dir: Path = Path("build")
    name: str | None = None

    def __post_init__(self) -> None:
        if self.max_drop is None:
            raise UsageError("tflq auto needs an accuracy budget: pass --max-drop POINTS (e.g. 1.0)")
        if (
            isinstance(self.max_drop, bool)
            or not isinstance(self.max_drop, (int, float))
            or not math.isfinite(self.max_drop)
            or self.max_drop < 0
        ):
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
        if self.name is not None and not self.name.strip():
            raise UsageError(
                f"--name {self.name!r}: expected a plain file-name stem (omit --name for the model's name)"
            )


def output_path(output_dir: Path, name: str) -> Path:
    """``<out>/<name>.auto.tflite``: where ``tflq auto`` writes the model it chose."""
    return output_dir / f"{name}.auto.tflite"
