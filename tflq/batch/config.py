"""YAML batch files -> validated, frozen job settings.

Precedence: built-in defaults < the file's ``defaults:`` < the model entry < CLI flags. Relative paths resolve
against the YAML file's folder. Every problem is reported with ``file:line``, and unknown keys get a
"did you mean". Nothing here imports TensorFlow, so validating a config is instant.

The schema is read from the settings' declarations (:mod:`tflq.batch.schema`): adding a setting to a stage's
options class adds its YAML key, its check, its default, its docs row and its part of the cache keys.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from tflq import options as opts
from tflq.batch import schema
from tflq.batch.config_checks import refuse_colliding_outputs, unused_settings
from tflq.batch.config_yaml import Located, plain, read_tree
from tflq.batch.gates import GateOptions
from tflq.batch.schema import ModelJob
from tflq.convert.options import ConvertOptions
from tflq.errors import ConfigError, UsageError
from tflq.measure.settings import EvalSettings, EvaluationOptions
from tflq.model.options import ImageOptions, ModelOptions
from tflq.modes import MODES, Variant, plan_variants
from tflq.qat.options import QatOptions


def _str(value: Any, where: str) -> str:
    if not isinstance(value, str) or not value:
        raise ConfigError(f"{where}: expected a non-empty string, found {opts.type_name(value)} {value!r}")
    return value


# `<name>.<label>.tflite` and its temporary twin `.<file>.XXXXXXXX.tmp` (convert.write_atomically) must fit NAME_MAX
_NAME_MAX_BYTES = 255
_LONGEST_SUFFIX = max(
    [len(f".{Variant(mode.name, io).label}.tflite") for mode in MODES.values() for io in mode.io_types]
    + [len(".auto.tflite")]
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
    kind = next(item for item in opts.declared(ConvertOptions) if item.name == "modes").setting.kind
    return tuple(kind.check(value, where))


def parse_modes_option(text: str) -> tuple[str, ...]:
    """``tflq run --modes MODE[,MODE...]``: at least one mode, no empty item, each a known mode. Raises UsageError."""
    names = tuple(item.strip() for item in text.split(","))
    if not any(names):
        raise UsageError(
            f"--modes {text!r}: expected a comma-separated list of modes, e.g. float32,int8; "
            f"valid modes: {', '.join(MODES)}"
        )
    if not all(names):
        raise UsageError(f"--modes {text!r}: empty mode name between commas; expected MODE[,MODE...]")
    try:
        return _modes(list(names), "--modes")
    except ConfigError as error:
        raise UsageError(str(error)) from None


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


def _check_keys(mapping: dict[str, Located], allowed: Any, where: str, source: Path) -> None:
    for key, located in mapping.items():
        if key not in allowed:
            raise ConfigError(
                f"{source}:{located.line}: unknown key {key!r} in {where}{_did_you_mean(key, allowed)}; "
                f"allowed: {', '.join(allowed)}"
            )


Given = dict[tuple[type, str], Any]  # (options class, field name) -> validated value, for the keys a mapping gives


def _read_settings(mapping: dict[str, Located], model_entry: bool, where: str, source: Path, base: Path) -> Given:
    """Validate one ``defaults:`` or model mapping against the declarations: only the keys given."""
    table = schema.schema()
    plain_allowed = schema.plain_keys(model_entry)
    _check_keys(mapping, [*plain_allowed, *schema.sections()], where, source)
    values: Given = {}

    def take(section: str | None, key: str, located: Located) -> None:
        entry = table[section][key]
        label = key if section is None else f"{section}.{key}"
        value = entry.item.setting.kind.check(plain(located), f"{source}:{located.line}: {label}")
        kind = entry.item.setting.kind
        if isinstance(kind, opts.Text) and kind.path and value:
            value = _resolve(value, base)
        values[(entry.options_class, entry.item.name)] = value

    for key, located in mapping.items():
        if key in schema.IDENTITY:
            continue
        if key not in table:  # a plain setting
            take(None, key, located)
            continue
        if located.value is None:
            continue
        if not isinstance(located.value, dict):
            raise ConfigError(
                f"{source}:{located.line}: {key}: expected a mapping of {', '.join(table[key])}, "
                f"found {opts.type_name(plain(located.value))}"
            )
        _check_keys(located.value, table[key], f"{where}.{key}", source)
        for sub_key, sub_located in located.value.items():
            take(key, sub_key, sub_located)
    return values


def _resolve(value: Any, base: Path) -> Any:
    """Resolve a path setting against the config folder; ``module:function`` and ``random`` stay as they are."""
    if not isinstance(value, str) or value == "random":
        return value
    if (
        ":" in value
        and not Path(value).is_absolute()
        and not (base / value).exists()
        and "/" not in value.split(":")[0]
    ):
        return value  # module:function
    return str((base / value).resolve()) if not Path(value).is_absolute() else value


def load_config(path: Path, overrides: Overrides = Overrides()) -> BatchConfig:
    """Read and validate a batch file. Returns a BatchConfig; raises ConfigError naming file:line."""
    tree = read_tree(path)
    if not isinstance(tree, dict):
        raise ConfigError(
            f"{path}:1: expected a mapping with keys {', '.join(schema.TOP_LEVEL)}, found {opts.type_name(plain(tree))}"
        )
    _check_keys(tree, schema.TOP_LEVEL, "the top level", path)
    base = path.resolve().parent

    output_dir = base / "build"
    if "output_dir" in tree:
        output_dir = Path(
            _resolve(_str(plain(tree["output_dir"]), f"{path}:{tree['output_dir'].line}: output_dir"), base)
        )
    where = f"{path}: output_dir (default: build/ beside the file)"
    if "output_dir" in tree:
        where = f"{path}:{tree['output_dir'].line}: output_dir"
    if overrides.output_dir is not None:
        output_dir = overrides.output_dir
        where = "--output-dir"
    blocker = next((ancestor for ancestor in (output_dir, *output_dir.parents) if ancestor.exists()), None)
    if blocker is not None and not blocker.is_dir():
        raise ConfigError(f"{where}: {output_dir} cannot be a folder: {blocker} is a file")

    defaults: Given = {}
    if "defaults" in tree and tree["defaults"].value is not None:
        located = tree["defaults"]
        if not isinstance(located.value, dict):
            raise ConfigError(f"{path}:{located.line}: defaults: expected a mapping")
        defaults = _read_settings(located.value, False, "defaults", path, base)

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
        given = _read_settings(entry.value, True, "a model entry", path, base)
        for required in schema.IDENTITY:
            if required not in entry.value:
                raise ConfigError(f"{path}:{entry.line}: model entry without {required!r}")
        name = _model_name(plain(entry.value["name"]), f"{path}:{entry.value['name'].line}: name")
        if name in seen:
            raise ConfigError(
                f"{path}:{entry.value['name'].line}: model name {name!r} already used at line {seen[name]}"
            )
        seen[name] = entry.value["name"].line
        model_path = Path(_resolve(_str(plain(entry.value["path"]), f"{path}:{entry.value['path'].line}: path"), base))
        if not model_path.exists():
            raise ConfigError(f"{path}:{entry.value['path'].line}: path: model {model_path} does not exist")
        if overrides.modes:
            given[(ConvertOptions, "modes")] = _modes(list(overrides.modes), "--modes")
        modes = given.get((ConvertOptions, "modes"), defaults.get((ConvertOptions, "modes"), _batch_default_modes()))
        for key in ("skip_layers", "skip_ops"):
            value = given.get((ConvertOptions, key), defaults.get((ConvertOptions, key)))
            if value and not any(MODES[mode].selective for mode in modes or ()):
                takers = ", ".join(name_ for name_, mode in MODES.items() if mode.selective)
                line = entry.value[key].line if key in entry.value else entry.line
                raise ConfigError(f"{path}:{line}: model {name!r}: {key} applies to mode {takers}; add it to its modes")
        job = _merge(name, model_path, defaults, given, f"{path}:{entry.line}: model {name!r}")
        for section, key, data in (
            ("calibration", "data", job.convert.calibration),
            ("evaluation", "data", job.evaluation.data),
            ("qat", "train_data", job.convert.qat.train_data),
            ("qat", "val_data", job.convert.qat.val_data),
            ("evaluation", "reference", job.evaluation.reference),
        ):
            if data and data != "random" and ":" not in data and not Path(data).exists():
                line = _line_of(entry.value, section, tree)
                raise ConfigError(f"{path}:{line}: {section}.{key}: {data} does not exist (model {name!r})")
        if (ConvertOptions, "io_types") not in given:  # inherited I/O types apply to the modes that take them
            applicable = {io for m in job.modes for io in MODES[m].io_types}
            job = replace(
                job, convert=replace(job.convert, io_types=tuple(io for io in job.io_types if io in applicable))
            )
        try:
            plan_variants(list(job.modes), list(job.io_types))
        except UsageError as error:
            line = entry.value["io_types"].line if "io_types" in entry.value else entry.line
            raise ConfigError(f"{path}:{line}: model {name!r}: {error}") from None
        _check_tflite_model(job, entry.value, path, entry.line)
        calibrated = [m for m in job.modes if MODES[m].calibrated]
        if calibrated and not job.convert.calibration:
            raise ConfigError(
                f"{path}:{entry.line}: model {name!r}: mode(s) {', '.join(calibrated)} need calibration.data"
            )
        training = [m for m in job.modes if MODES[m].needs_training]
        if training and not job.convert.qat.train_data:
            raise ConfigError(
                f"{path}:{entry.line}: model {name!r}: mode(s) {', '.join(training)} need qat.train_data "
                "(labelled training data)"
            )
        if job.searches:
            missing = [
                f"{section}.data"
                for section, data in (("calibration", job.convert.calibration), ("evaluation", job.evaluation.data))
                if not data
            ]
            if missing:
                raise ConfigError(
                    f"{path}:{_line_of(entry.value, 'auto', tree) or entry.line}: model {name!r}: "
                    f"auto needs {' and '.join(missing)}"
                )
        if job.gates.max_accuracy_drop is not None and not job.evaluation.data:
            raise ConfigError(
                f"{path}:{entry.line}: model {name!r}: gates.max_accuracy_drop needs evaluation.data with labels"
            )
        jobs.append(job)

    refuse_colliding_outputs(jobs, models_node.value, output_dir, path)
    defaults_node = tree["defaults"].value if "defaults" in tree and isinstance(tree["defaults"].value, dict) else None
    notes = unused_settings(
        jobs, models_node.value, defaults_node, path, ",".join(overrides.modes) if overrides.modes else None
    )
    if overrides.only:
        unknown = [n for n in overrides.only if n not in seen]
        if unknown:
            raise ConfigError(
                f"--only {unknown[0]!r}: no such model in {path}{_did_you_mean(unknown[0], seen)}; "
                f"models: {', '.join(seen)}"
            )
        jobs = [job for job in jobs if job.name in overrides.only]
    return BatchConfig(source=path, output_dir=output_dir, models=tuple(jobs), notes=notes)


def _batch_default_modes() -> tuple[str, ...]:
    return schema.batch_default(None, "modes")


def _line_of(entry: dict[str, Located], section: str, tree: dict[str, Located]) -> int:
    if section in entry:
        return entry[section].line
    if "defaults" in tree:
        defaults_node = tree["defaults"].value
        if isinstance(defaults_node, dict) and section in defaults_node:
            return defaults_node[section].line
    return 0


def _check_tflite_model(job: ModelJob, entry: dict[str, Any], config: Path, line: int) -> None:
    """A ``.tflite`` model takes the modes that start from a float .tflite, no static_batch, and an auto: search on
    the litert-quantizer engine only; auto: and
    the training modes take no static_batch (debug models run one sample at a time; the fine-tuned export has a
    dynamic batch). Raises ConfigError."""
    from tflq.convert.source import is_tflite, refuse_converter_modes

    training = [mode for mode in job.modes if MODES[mode].needs_training]
    if training and job.convert.model.static_batch is not None:
        at = entry["static_batch"].line if "static_batch" in entry else line
        raise ConfigError(
            f"{config}:{at}: model {job.name!r}: static_batch does not apply to mode(s) {', '.join(training)} (the "
            "fine-tuned model is exported with a dynamic batch)"
        )
    if job.searches and job.convert.model.static_batch is not None and not is_tflite(job.path):
        at = entry["static_batch"].line if "static_batch" in entry else line
        raise ConfigError(
            f"{config}:{at}: model {job.name!r}: auto: does not take static_batch (its per-layer debug models run "
            "one sample at a time); drop one of them"
        )
    if not is_tflite(job.path):
        return
    try:
        refuse_converter_modes(job.path, job.modes, job.convert)
    except UsageError as error:
        at = entry["modes"].line if "modes" in entry else line
        raise ConfigError(f"{config}:{at}: model {job.name!r}: {error} (list them in its modes)") from None
    if job.searches and "converter" in job.auto.get("engines", ("converter",)):
        at = entry["auto"].line if "auto" in entry else line
        raise ConfigError(
            f"{config}:{at}: model {job.name!r}: auto: searches the converter's candidates too, which start from a "
            "Keras model or SavedModel; a .tflite model takes auto.engines: [litert-quantizer]"
        )
    if job.convert.model.static_batch is not None:
        at = entry["static_batch"].line if "static_batch" in entry else line
        raise ConfigError(
            f"{config}:{at}: model {job.name!r}: static_batch applies to Keras model files; a .tflite's input shapes "
            "are fixed in the file"
        )


def _merge(name: str, model_path: Path, defaults: Given, given: Given, where: str) -> ModelJob:
    """built-in < defaults < model entry, per setting; then one options object per stage."""

    def build(options_class: type, **fixed: Any) -> Any:
        values = {item.name: item.batch_default for item in opts.declared(options_class)}
        for layer in (defaults, given):
            values.update({name: value for (cls, name), value in layer.items() if cls is options_class})
        try:
            return options_class(**values, **fixed)
        except UsageError as error:
            raise ConfigError(f"{where}: {error}") from None

    from tflq.debug.options import AutoOptions

    convert = build(
        ConvertOptions,
        images=build(ImageOptions),
        model=build(ModelOptions),
        qat=build(QatOptions),
    )
    auto_values = {item.name: item.batch_default for item in opts.declared(AutoOptions)}
    for layer in (defaults, given):
        auto_values.update({name: value for (cls, name), value in layer.items() if cls is AutoOptions})
    return ModelJob(
        name=name,
        path=model_path,
        convert=convert,
        evaluation=build(EvaluationOptions),
        measure=build(EvalSettings),
        gates=build(GateOptions),
        auto=auto_values,
    )
