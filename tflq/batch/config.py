"""YAML batch files -> validated, frozen job settings.

Precedence: built-in defaults < the file's ``defaults:`` < the model entry < CLI flags. Relative paths resolve
against the YAML file's folder. Every problem is reported with ``file:line``, and unknown keys get a
"did you mean". Nothing here imports TensorFlow, so validating a config is instant.

The schema is the :data:`SECTIONS` and :data:`MODEL_FIELDS` tables: adding a setting is one entry.
"""
from __future__ import annotations

import difflib
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from tflq.batch.config_checks import refuse_colliding_outputs, unused_settings
from tflq.batch.config_yaml import Located, read_tree
from tflq.errors import ConfigError, UsageError
from tflq.measure.tasks import check_task_setting
from tflq.modes import MODES, Variant, plan_variants


@dataclass(frozen=True)
class Field:
    """One setting: its check/convert function and default."""

    check: Callable[[Any, str], Any]
    default: Any = None
    path: bool = False  # resolved against the config file's folder


def _type_name(value: Any) -> str:
    return {str: "a string", int: "an integer", float: "a number", bool: "true/false", list: "a list", dict: "a mapping"}.get(
        type(value), type(value).__name__
    )


def _str(value: Any, where: str) -> str:
    if not isinstance(value, str) or not value:
        raise ConfigError(f"{where}: expected a non-empty string, found {_type_name(value)} {value!r}")
    return value


def _opt_str(value: Any, where: str) -> str | None:
    return None if value is None else _str(value, where)


def _bool(value: Any, where: str) -> bool:
    if not isinstance(value, bool):
        raise ConfigError(f"{where}: expected true or false, found {_type_name(value)} {value!r}")
    return value


MAX_INT = 2**31 - 1  # counts reach C ints (threads, runs); anything bigger is a typo


def _positive_int(value: Any, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_INT:
        raise ConfigError(f"{where}: expected a positive integer (at most {MAX_INT}), found {value!r}")
    return value


def _opt_positive_int(value: Any, where: str) -> int | None:
    return None if value is None else _positive_int(value, where)


def _opt_bool(value: Any, where: str) -> bool | None:
    return None if value is None else _bool(value, where)


def _non_negative_int(value: Any, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_INT:
        raise ConfigError(f"{where}: expected a non-negative integer (at most {MAX_INT}), found {value!r}")
    return value


def _learning_rate(value: Any, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < 1:
        raise ConfigError(f"{where}: expected a number between 0 and 1 (exclusive), found {value!r}")
    return float(value)


def _opt_number(value: Any, where: str) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < math.inf:
        raise ConfigError(f"{where}: expected a finite non-negative number or null, found {value!r}")
    return float(value)


def _str_list(value: Any, where: str) -> tuple[str, ...]:
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(item, str) and item for item in value):
        raise ConfigError(f"{where}: expected a list of strings, found {value!r}")
    return tuple(value)


# `<name>.<label>.tflite` and its temporary twin `.<file>.XXXXXXXX.tmp` (convert.write_atomically) must fit NAME_MAX
_NAME_MAX_BYTES = 255
_LONGEST_SUFFIX = max(
    [len(f".{Variant(mode.name, io).label}.tflite") for mode in MODES.values() for io in mode.io_types] + [len(".auto.tflite")]
)
MAX_MODEL_NAME_BYTES = _NAME_MAX_BYTES - _LONGEST_SUFFIX - len("..XXXXXXXX.tmp")


def _model_name(value: Any, where: str) -> str:
    """A model name is the stem of its output files: a plain file name, never a path."""
    name = _str(value, where)
    expected = "a plain file-name stem (not a path)"
    if name in (".", ".."):
        raise ConfigError(f"{where}: expected {expected}, found {name!r}")
    for bad in ("/", "\\"):
        if bad in name:
            raise ConfigError(f"{where}: expected {expected}, found {name!r} (contains {bad!r})")
    control = next((char for char in name if ord(char) < 32 or ord(char) == 127), None)
    if control is not None:
        raise ConfigError(f"{where}: expected {expected}, found {name!r} (contains the control character {control!r})")
    if name[0] in ".-":
        raise ConfigError(f"{where}: expected {expected}, found {name!r} (starts with {name[0]!r})")
    if name != name.strip():
        raise ConfigError(f"{where}: expected {expected}, found {name!r} (leading or trailing space)")
    size = len(name.encode("utf-8", "surrogatepass"))
    if size > MAX_MODEL_NAME_BYTES:
        raise ConfigError(
            f"{where}: a model name may hold at most {MAX_MODEL_NAME_BYTES} bytes (its output file names must fit "
            f"the file system's {_NAME_MAX_BYTES}), found {size}"
        )
    return name


def _modes(value: Any, where: str) -> tuple[str, ...]:
    names = _str_list(value, where)
    for name in names:
        if name not in MODES:
            raise ConfigError(f"{where}: unknown mode {name!r}{_did_you_mean(name, MODES)}; valid modes: {', '.join(MODES)}")
    if not names:
        raise ConfigError(f"{where}: expected at least one mode")
    return names


def parse_modes_option(text: str) -> tuple[str, ...]:
    """``tflq run --modes MODE[,MODE...]``: at least one mode, no empty item, each a known mode. Raises UsageError."""
    names = tuple(item.strip() for item in text.split(","))
    if not any(names):
        raise UsageError(f"--modes {text!r}: expected a comma-separated list of modes, e.g. float32,int8; valid modes: {', '.join(MODES)}")
    if not all(names):
        raise UsageError(f"--modes {text!r}: empty mode name between commas; expected MODE[,MODE...]")
    try:
        return _modes(list(names), "--modes")
    except ConfigError as error:
        raise UsageError(str(error)) from None


def _io_types(value: Any, where: str) -> tuple[str, ...]:
    names = _str_list(value, where)
    valid = sorted({io for mode in MODES.values() for io in mode.io_types})
    for name in names:
        if name not in valid:
            raise ConfigError(f"{where}: unknown I/O type {name!r}{_did_you_mean(name, valid)}; valid: {', '.join(valid)}")
    return names


def _choice(*choices: str) -> Callable[[Any, str], str]:
    def check(value: Any, where: str) -> str:
        if value not in choices:
            raise ConfigError(f"{where}: expected one of {', '.join(choices)}, found {value!r}{_did_you_mean(str(value), choices)}")
        return value

    return check


# section name -> field name -> Field. A section is a mapping in `defaults:` and in each model entry.
SECTIONS: dict[str, dict[str, Field]] = {
    "calibration": {
        "data": Field(_opt_str, None, path=True),
        "samples": Field(_positive_int, 200),
        "image_scale": Field(_choice("unit", "symmetric", "raw", "imagenet"), "unit"),
    },
    "evaluation": {
        "data": Field(_opt_str, None, path=True),
        "samples": Field(_opt_positive_int, None),
        "reference": Field(_opt_str, None, path=True),
        "task": Field(check_task_setting, None),  # classification|regression, or {output: task} (tflq.measure.tasks)
    },
    "gates": {
        "max_accuracy_drop": Field(_opt_number, None),
        "max_size_bytes": Field(_opt_number, None),
        "max_latency_ms": Field(_opt_number, None),
    },
    "auto": {  # tflq auto inside a batch: the smallest/fastest variant within max_drop points of float32
        "max_drop": Field(_opt_number, None),
        "objective": Field(_choice("size", "latency"), "size"),
        "max_float_layers": Field(_non_negative_int, 3),
    },
    "qat": {  # mode qat: quantization-aware training (the loss name is checked when training starts)
        "train_data": Field(_opt_str, None, path=True),
        "val_data": Field(_opt_str, None, path=True),
        "epochs": Field(_positive_int, 2),
        "batch_size": Field(_positive_int, 32),
        "learning_rate": Field(_learning_rate, 1e-3),
        "loss": Field(_opt_str, None),
        "from_logits": Field(_opt_bool, None),
        "seed": Field(_non_negative_int, 0),
    },
    "latency": {
        "threads": Field(_opt_positive_int, None),
        "runs": Field(_positive_int, 50),
        "warmup_runs": Field(_positive_int, 5),
        "min_seconds": Field(_opt_number, 0.0),
        "xnnpack": Field(_bool, True),
    },
}

# plain (non-section) settings allowed in `defaults:` and model entries
SETTINGS: dict[str, Field] = {
    "modes": Field(_modes, ("float32", "float16", "dynamic", "int8", "16x8")),
    "io_types": Field(_io_types, ()),
    "per_tensor": Field(_bool, False),
    "allow_float_fallback": Field(_bool, False),
    "skip_layers": Field(_str_list, ()),  # int8: Keras layers left in float (names checked against the model)
    "skip_ops": Field(_str_list, ()),  # int8: TFLite op types left in float
}

# settings only a model entry may have
MODEL_FIELDS: dict[str, Field] = {
    "name": Field(_model_name),
    "path": Field(_str, path=True),
    "signature": Field(_opt_str, None),
    "custom_objects": Field(_str_list, ()),
    "unsafe_deserialization": Field(_bool, False),
}

TOP_LEVEL = ("output_dir", "defaults", "models")


@dataclass(frozen=True)
class ModelJob:
    """Everything needed to process one model of a batch, after precedence and validation."""

    name: str
    path: Path
    modes: tuple[str, ...]
    io_types: tuple[str, ...] = ()
    per_tensor: bool = False
    allow_float_fallback: bool = False
    signature: str | None = None
    custom_objects: tuple[str, ...] = ()
    unsafe_deserialization: bool = False
    calibration: Mapping[str, Any] = field(default_factory=dict)
    evaluation: Mapping[str, Any] = field(default_factory=dict)
    gates: Mapping[str, Any] = field(default_factory=dict)
    latency: Mapping[str, Any] = field(default_factory=dict)
    qat: Mapping[str, Any] = field(default_factory=dict)
    auto: Mapping[str, Any] = field(default_factory=dict)
    skip_layers: tuple[str, ...] = ()
    skip_ops: tuple[str, ...] = ()

    def section(self, name: str) -> Mapping[str, Any]:
        return getattr(self, name)


@dataclass(frozen=True)
class BatchConfig:
    """A validated batch file."""

    source: Path
    output_dir: Path
    models: tuple[ModelJob, ...]
    notes: tuple[str, ...] = ()  # settings the modes asked with `tflq run --modes` do not read (ignored)


@dataclass(frozen=True)
class Overrides:
    """CLI flags, the highest precedence."""

    modes: tuple[str, ...] = ()
    output_dir: Path | None = None
    only: tuple[str, ...] = ()


def _did_you_mean(word: str, choices: Any) -> str:
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _plain(value: Any) -> Any:
    """Strip Located wrappers (for values checked as a whole, e.g. lists)."""
    if isinstance(value, Located):
        return _plain(value.value)
    if isinstance(value, dict):
        return {key: _plain(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_plain(item) for item in value]
    return value


def _check_keys(mapping: dict[str, Located], allowed: Any, where: str, source: Path) -> None:
    for key, located in mapping.items():
        if key not in allowed:
            raise ConfigError(
                f"{source}:{located.line}: unknown key {key!r} in {where}{_did_you_mean(key, allowed)}; "
                f"allowed: {', '.join(allowed)}"
            )


def _read_settings(
    mapping: dict[str, Located], allowed_plain: dict[str, Field], where: str, source: Path, base: Path
) -> dict[str, Any]:
    """Validate one `defaults:` or model mapping into {setting: value, section: {field: value}} (only keys given)."""
    _check_keys(mapping, [*allowed_plain, *SECTIONS], where, source)
    values: dict[str, Any] = {}
    for key, located in mapping.items():
        at = f"{source}:{located.line}: {key}"
        if key in SECTIONS:
            if located.value is None:
                values[key] = {}
                continue
            if not isinstance(located.value, dict):
                raise ConfigError(f"{at}: expected a mapping of {', '.join(SECTIONS[key])}, found {_type_name(_plain(located.value))}")
            _check_keys(located.value, SECTIONS[key], f"{where}.{key}", source)
            section = {}
            for sub_key, sub_located in located.value.items():
                spec = SECTIONS[key][sub_key]
                value = spec.check(_plain(sub_located), f"{source}:{sub_located.line}: {key}.{sub_key}")
                section[sub_key] = _resolve(value, base) if spec.path else value
            values[key] = section
        else:
            spec = allowed_plain[key]
            value = spec.check(_plain(located), at)
            values[key] = _resolve(value, base) if spec.path else value
    return values


def _resolve(value: Any, base: Path) -> Any:
    """Resolve a path setting against the config folder; ``module:function`` and ``random`` stay as they are."""
    if not isinstance(value, str) or value == "random":
        return value
    if ":" in value and not Path(value).is_absolute() and not (base / value).exists() and "/" not in value.split(":")[0]:
        return value  # module:function
    return str((base / value).resolve()) if not Path(value).is_absolute() else value


def load_config(path: Path, overrides: Overrides = Overrides()) -> BatchConfig:
    """Read and validate a batch file. Returns a BatchConfig; raises ConfigError naming file:line."""
    tree = read_tree(path)
    if not isinstance(tree, dict):
        raise ConfigError(
            f"{path}:1: expected a mapping with keys {', '.join(TOP_LEVEL)}, found {_type_name(_plain(tree))}"
        )
    _check_keys(tree, TOP_LEVEL, "the top level", path)
    base = path.resolve().parent

    output_dir = base / "build"
    if "output_dir" in tree:
        output_dir = Path(_resolve(_str(_plain(tree["output_dir"]), f"{path}:{tree['output_dir'].line}: output_dir"), base))
    where = f"{path}: output_dir (default: build/ beside the file)"
    if "output_dir" in tree:
        where = f"{path}:{tree['output_dir'].line}: output_dir"
    if overrides.output_dir is not None:
        output_dir = overrides.output_dir
        where = "--output-dir"
    blocker = next((ancestor for ancestor in (output_dir, *output_dir.parents) if ancestor.exists()), None)
    if blocker is not None and not blocker.is_dir():
        raise ConfigError(f"{where}: {output_dir} cannot be a folder: {blocker} is a file")

    defaults: dict[str, Any] = {}
    if "defaults" in tree and tree["defaults"].value is not None:
        located = tree["defaults"]
        if not isinstance(located.value, dict):
            raise ConfigError(f"{path}:{located.line}: defaults: expected a mapping")
        defaults = _read_settings(located.value, SETTINGS, "defaults", path, base)

    if "models" not in tree:
        raise ConfigError(f"{path}: missing 'models:' (a list of models, each with name and path)")
    models_node = tree["models"]
    if not isinstance(models_node.value, list) or not models_node.value:
        raise ConfigError(f"{path}:{models_node.line}: models: expected a non-empty list of models")

    jobs: list[ModelJob] = []
    seen: dict[str, int] = {}
    for entry in models_node.value:
        if not isinstance(entry.value, dict):
            raise ConfigError(f"{path}:{entry.line}: each model must be a mapping with name and path")
        given = _read_settings(entry.value, {**SETTINGS, **MODEL_FIELDS}, "a model entry", path, base)
        for required in ("name", "path"):
            if required not in given:
                raise ConfigError(f"{path}:{entry.line}: model entry without {required!r}")
        name = given["name"]
        if name in seen:
            raise ConfigError(f"{path}:{entry.value['name'].line}: model name {name!r} already used at line {seen[name]}")
        seen[name] = entry.value["name"].line
        model_path = Path(given["path"])
        if not model_path.exists():
            raise ConfigError(f"{path}:{entry.value['path'].line}: path: model {model_path} does not exist")
        job = _merge(name, model_path, defaults, given)
        for section, key in (("calibration", "data"), ("evaluation", "data"), ("qat", "train_data"), ("qat", "val_data")):
            data = job.section(section).get(key)
            line = _line_of(entry.value, defaults, section, tree)
            if data and data != "random" and ":" not in data and not Path(data).exists():
                raise ConfigError(f"{path}:{line}: {section}.{key}: {data} does not exist (model {name!r})")
        reference = job.evaluation.get("reference")
        if reference and not Path(reference).exists():
            raise ConfigError(f"{path}:{_line_of(entry.value, defaults, 'evaluation', tree)}: evaluation.reference: {reference} does not exist")
        if overrides.modes:
            job = replace(job, modes=_modes(list(overrides.modes), "--modes"))
        if "io_types" not in given:  # inherited I/O types apply to the modes that take them
            applicable = {io for m in job.modes for io in MODES[m].io_types}
            job = replace(job, io_types=tuple(io for io in job.io_types if io in applicable))
        try:
            plan_variants(list(job.modes), list(job.io_types))
        except UsageError as error:
            line = entry.value["io_types"].line if "io_types" in entry.value else entry.line
            raise ConfigError(f"{path}:{line}: model {name!r}: {error}") from None
        if any(MODES[m].calibrated for m in job.modes) and not job.calibration.get("data"):
            calibrated = [m for m in job.modes if MODES[m].calibrated]
            raise ConfigError(
                f"{path}:{entry.line}: model {name!r}: mode(s) {', '.join(calibrated)} need calibration.data"
            )
        training = [m for m in job.modes if MODES[m].needs_training]
        if training and not job.qat.get("train_data"):
            raise ConfigError(
                f"{path}:{entry.line}: model {name!r}: mode(s) {', '.join(training)} need qat.train_data "
                "(labelled training data)"
            )
        if (job.skip_layers or job.skip_ops) and "int8" not in job.modes:
            key = "skip_layers" if job.skip_layers else "skip_ops"
            line = entry.value[key].line if key in entry.value else entry.line
            raise ConfigError(f"{path}:{line}: model {name!r}: {key} applies to mode int8; add int8 to its modes")
        if job.auto.get("max_drop") is not None:
            missing = [s for s in ("calibration", "evaluation") if not job.section(s).get("data")]
            if missing:
                raise ConfigError(
                    f"{path}:{_line_of(entry.value, defaults, 'auto', tree) or entry.line}: model {name!r}: "
                    f"auto needs {' and '.join(m + '.data' for m in missing)}"
                )
        gates = job.gates
        if gates.get("max_accuracy_drop") is not None and not job.evaluation.get("data"):
            raise ConfigError(
                f"{path}:{entry.line}: model {name!r}: gates.max_accuracy_drop needs evaluation.data with labels"
            )
        jobs.append(job)

    refuse_colliding_outputs(jobs, models_node.value, output_dir, path)
    defaults_node = tree["defaults"].value if "defaults" in tree and isinstance(tree["defaults"].value, dict) else None
    notes = unused_settings(jobs, models_node.value, defaults_node, path, ",".join(overrides.modes) if overrides.modes else None)
    if overrides.only:
        unknown = [n for n in overrides.only if n not in seen]
        if unknown:
            raise ConfigError(f"--only {unknown[0]!r}: no such model in {path}{_did_you_mean(unknown[0], seen)}; models: {', '.join(seen)}")
        jobs = [job for job in jobs if job.name in overrides.only]
    return BatchConfig(source=path, output_dir=output_dir, models=tuple(jobs), notes=notes)


def _line_of(entry: dict[str, Located], defaults: dict[str, Any], section: str, tree: dict[str, Located]) -> int:
    if section in entry:
        return entry[section].line
    if "defaults" in tree:
        defaults_node = tree["defaults"].value
        if isinstance(defaults_node, dict) and section in defaults_node:
            return defaults_node[section].line
    return 0


def _merge(name: str, model_path: Path, defaults: dict[str, Any], given: dict[str, Any]) -> ModelJob:
    """built-in < defaults < model entry, per setting and per section field."""
    plain: dict[str, Any] = {}
    for key, spec in {**SETTINGS, **MODEL_FIELDS}.items():
        plain[key] = given.get(key, defaults.get(key, spec.default))
    sections = {
        section: {key: given.get(section, {}).get(key, defaults.get(section, {}).get(key, spec.default)) for key, spec in fields.items()}
        for section, fields in SECTIONS.items()
    }
    plain.update(name=name, path=model_path)
    return ModelJob(**plain, **sections)
