"""Checks across the settings of a batch file, after each value was validated on its own (see tflq.batch.config).

* :func:`refuse_colliding_outputs`: two models must never plan the same output file.
* :func:`unused_settings`: a setting that none of the modes asked for reads (``per_tensor`` with float modes only,
  ``qat:`` without mode qat...) is an error, as the same flag is for ``tflq convert``; when ``tflq run --modes``
  replaced the file's modes, it is a note instead (the user asked for other modes on purpose).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tflq.batch.config_yaml import Located, plain
from tflq.errors import ConfigError
from tflq.modes import MODES, modes_reading, plan_variants

if TYPE_CHECKING:
    from tflq.batch.schema import ModelJob


def planned_outputs(job: ModelJob, output_dir: Path) -> list[Path]:
    """Every .tflite file a batch run writes for ``job``: one per variant (convert.output_path) and the auto winner."""
    from tflq.convert.session import output_path
    from tflq.debug.options import output_path as auto_output_path

    paths = [
        output_path(output_dir, job.name, variant) for variant in plan_variants(list(job.modes), list(job.io_types))
    ]
    if job.searches:
        paths.append(auto_output_path(output_dir, job.name))
    return paths


def refuse_colliding_outputs(
    jobs: Sequence[ModelJob], entries: Sequence[Located], output_dir: Path, source: Path
) -> None:
    """Raise ConfigError naming both entries when two models plan one output file (model ``x`` with int8 I/O and model
    ``x.int8`` both write ``x.int8.int8.tflite``). ``entries[i]`` is the YAML mapping of ``jobs[i]``."""
    owners: dict[str, int] = {}
    for index, job in enumerate(jobs):
        for planned in planned_outputs(job, output_dir):
            other = owners.setdefault(planned.name, index)
            if other != index:
                first, second = entries[other].value["name"].line, entries[index].value["name"].line
                raise ConfigError(
                    f"{source}:{second}: model {job.name!r} would write {planned.name}, which model "
                    f"{jobs[other].name!r} ({source}:{first}) writes too; rename one of them"
                )


@dataclass(frozen=True)
class _Use:
    """A setting (``key`` or ``section.key``, or a whole ``section``) and which jobs read it."""

    key: str
    reads: Callable[[ModelJob], bool]
    readers: str  # what reads it, for the message


def _modes_with(setting: str) -> list[str]:
    return modes_reading(setting)


def _takes(setting: str) -> Callable[[ModelJob], bool]:
    return lambda job: any(setting in MODES[mode].settings for mode in job.modes)


def _calibrates(job: ModelJob) -> bool:
    return any(MODES[mode].calibrated for mode in job.modes) or job.searches


def _searches(job: ModelJob) -> bool:
    return job.searches


def _mode_settings() -> list[str]:
    """The plain settings modes declare they read (skip_layers/skip_ops have their own check in config.py)."""
    names = dict.fromkeys(name for mode in MODES.values() for name in mode.settings)
    return [name for name in names if name not in ("skip_layers", "skip_ops")]


USES = (
    *(_Use(name, _takes(name), f"mode(s) {', '.join(_modes_with(name))}") for name in _mode_settings()),
    _Use(
        "calibration.data",
        _calibrates,
        f"the calibrated mode(s) {', '.join(m.name for m in MODES.values() if m.calibrated)} and auto (auto.max_drop)",
    ),
    _Use("qat", lambda job: any(MODES[mode].needs_training for mode in job.modes), "mode qat"),
    _Use("auto.objective", _searches, "auto.max_drop (the auto search)"),
    _Use("auto.max_float_layers", _searches, "auto.max_drop (the auto search)"),
)


def _is_set(key: str, located: Located) -> bool:
    """True when the value asks for something: differs from the built-in default (the README's example file spells
    out every default, and writing a default down changes nothing)."""
    from tflq.batch import schema

    value = plain(located)
    section, _, name = key.partition(".")
    table = schema.schema()
    if section in table and section is not None and not name:
        return isinstance(value, dict) and any(
            item != _plain_default(schema.batch_default(section, field))
            for field, item in value.items()
            if field in table[section]
        )
    default = schema.batch_default(section, name) if name else schema.batch_default(None, key)
    return value != _plain_default(default)


def _plain_default(default: Any) -> Any:
    return list(default) if isinstance(default, tuple) else default


def _lookup(mapping: dict[str, Located] | None, key: str) -> Located | None:
    """The located value at ``key`` or ``section.key`` of a YAML mapping, when given and not the built-in default."""
    current: Any = mapping
    located: Located | None = None
    for part in key.split("."):
        if not isinstance(current, dict) or part not in current:
            return None
        located = current[part]
        current = located.value
    return located if located is not None and _is_set(key, located) else None


def unused_settings(
    jobs: Sequence[ModelJob],
    entries: Sequence[Located],
    defaults: dict[str, Located] | None,
    source: Path,
    modes_from_cli: str | None,
) -> tuple[str, ...]:
    """Settings given for modes nobody asked for. Raises ConfigError for the first one when the modes come from the
    file; returns them as notes when ``tflq run --modes`` (``modes_from_cli``) replaced the file's modes. A default
    I/O type that no inheriting model takes is always a note."""
    problems: list[str] = []
    for use in USES:
        read_by_any = False
        for job, entry in zip(jobs, entries, strict=False):
            located = _lookup(entry.value, use.key)
            if located is None:
                read_by_any = read_by_any or use.reads(job)
                continue
            if not use.reads(job):
                problems.append(
                    f"{source}:{located.line}: model {job.name!r}: {use.key} is read by {use.readers} only, "
                    "and its modes "
                    f"are {', '.join(job.modes)}: add one of them or drop {use.key}"
                )
        located = _lookup(defaults, use.key)
        if located is not None and not read_by_any and not any(_lookup(e.value, use.key) for e in entries):
            problems.append(
                f"{source}:{located.line}: defaults: {use.key} is read by {use.readers} only, and no model asks for one"
            )
    if problems and modes_from_cli is None:
        raise ConfigError(problems[0])
    notes = [f"{problem} (ignored: --modes {modes_from_cli})" for problem in problems]
    # default I/O types are documented to apply to the modes that take them: one no model takes is a note, not an error
    io_types = _lookup(defaults, "io_types")
    if io_types is not None:
        inherited = [job for job, entry in zip(jobs, entries, strict=False) if "io_types" not in entry.value]
        for item in io_types.value if isinstance(io_types.value, list) else [io_types]:
            io_type = item.value
            if inherited and not any(io_type in MODES[mode].io_types for job in inherited for mode in job.modes):
                takers = [mode.name for mode in MODES.values() if io_type in mode.io_types]
                notes.append(
                    f"{source}:{item.line}: defaults: io_types {io_type} applies to mode(s) {', '.join(takers)} only, "
                    "and no model taking the default io_types asks for one (ignored)"
                )
    return tuple(notes)
