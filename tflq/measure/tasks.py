"""What each model output is: a classifier (top-1 / top-5, agreement of the arg-max) or a regression output (error
figures: MAE / RMSE against labels, SQNR and max abs error against the reference).

The rule (:func:`tflq.measure.metrics.decide_task`): an output of shape (N, C) with C >= 2 is a classifier, unless its
labels are neither class indices ((N,) or (N, 1) integers) nor one-hot / probability rows ((N, C), values in [0, 1]
summing to 1); anything else is a regression output. A box (N, 4) without labels looks like 4 class scores: say so with
``tflq eval --task NAME=regression`` or ``task:`` in the batch YAML.

This module only parses those overrides (no numpy, no TensorFlow: config validation stays instant).
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from tflq.errors import ConfigError, UsageError

CLASSIFICATION = "classification"
REGRESSION = "regression"
TASKS = (CLASSIFICATION, REGRESSION)


@dataclass(frozen=True)
class TaskOverrides:
    """Tasks the user set: ``every_output`` for all outputs, ``by_output`` ((output name, task), ...) for some.
    A named output wins over ``every_output``."""

    every_output: str | None = None
    by_output: tuple[tuple[str, str], ...] = ()

    def for_output(self, *names: str) -> str | None:
        """The task set for an output known by ``names`` (signature name, tensor name), else ``every_output``."""
        by_output = dict(self.by_output)
        for name in names:
            if name in by_output:
                return by_output[name]
        return self.every_output

    def to_setting(self) -> str | dict[str, str] | None:
        """The YAML form (a task, a mapping output -> task, or None): stable for the batch's cache keys."""
        if not self.by_output:
            return self.every_output
        setting = dict(self.by_output)
        if self.every_output:
            setting["*"] = self.every_output
        return setting


def _task(value: Any, where: str, error: type[UsageError]) -> str:
    if value not in TASKS:
        raise error(f"{where}: expected {' or '.join(TASKS)}, found {value!r}")
    return str(value)


def parse_task_options(values: Sequence[str]) -> TaskOverrides | None:
    """``--task`` values: ``TASK`` (every output) or ``NAME=TASK`` (one output), repeatable. Raises UsageError."""
    every_output = None
    by_output: dict[str, str] = {}
    for value in values:
        name, equals, task = value.rpartition("=")
        if not equals:
            every_output = _task(value, "--task", UsageError)
        elif not name:
            raise UsageError(f"--task {value}: expected NAME=TASK or TASK ({' or '.join(TASKS)})")
        else:
            by_output[name] = _task(task, f"--task {value}", UsageError)
    if every_output is None and not by_output:
        return None
    return TaskOverrides(every_output, tuple(sorted(by_output.items())))


def check_task_setting(value: Any, where: str) -> TaskOverrides | None:
    """YAML ``task:``: null, one task for every output, or a mapping output name -> task (``"*"``: the others).
    Raises ConfigError naming ``where``."""
    if value is None:
        return None
    if isinstance(value, str):
        return TaskOverrides(_task(value, where, ConfigError))
    if not isinstance(value, Mapping) or not value:
        raise ConfigError(
            f"{where}: expected {' or '.join(TASKS)}, or a mapping output name -> task, found {value!r}"
        )
    every_output = None
    by_output: dict[str, str] = {}
    for name, task in value.items():
        if not isinstance(name, str) or not name:
            raise ConfigError(f"{where}: output names must be non-empty strings, found {name!r}")
        checked = _task(task, f"{where}.{name}", ConfigError)
        if name == "*":
            every_output = checked
        else:
            by_output[name] = checked
    return TaskOverrides(every_output, tuple(sorted(by_output.items())))
