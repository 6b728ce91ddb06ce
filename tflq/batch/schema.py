"""The batch file's schema, read from the settings' declarations (:mod:`tflq.options`): nothing here lists a key.

Each stage declares its options where it reads them; this module only names the option classes a batch file sets:

============================  ============================================================================
section                       options class (declared in)
============================  ============================================================================
plain settings                :class:`~tflq.convert.session.ConvertOptions` (modes, io_types, per_tensor, ...)
model entries only            :class:`~tflq.model.load.ModelOptions` (signature, custom_objects, ...), name, path
``calibration:``              ``ConvertOptions`` (data, samples), :class:`~tflq.model.data.ImageOptions`
``qat:``                      :class:`~tflq.qat.training.QatOptions`
``evaluation:``               :class:`~tflq.measure.harness.EvaluationOptions`, ``EvalSettings`` (samples)
``latency:``                  :class:`~tflq.measure.harness.EvalSettings`
``gates:``                    :class:`~tflq.batch.gates.GateOptions`
``auto:``                     :class:`~tflq.debug.auto.AutoOptions` (max_drop, objective, max_float_layers)
============================  ============================================================================

Importing this module imports those classes' modules, none of which imports TensorFlow at module level.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

from tflq import options as opts
from tflq.batch.gates import GateOptions
from tflq.convert.options import ConvertOptions
from tflq.measure.settings import EvalSettings, EvaluationOptions


@cache
def option_classes() -> tuple[type, ...]:
    """The options classes a batch file sets, in the order their keys are documented."""
    from tflq.batch.gates import GateOptions
    from tflq.convert.options import ConvertOptions
    from tflq.debug.options import AutoOptions
    from tflq.measure.settings import EvalSettings, EvaluationOptions
    from tflq.model.options import ImageOptions, ModelOptions
    from tflq.qat.options import QatOptions

    return (
        ConvertOptions,
        ModelOptions,
        ImageOptions,
        EvaluationOptions,
        EvalSettings,
        GateOptions,
        AutoOptions,
        QatOptions,
    )


@cache
def model_only_classes() -> tuple[type, ...]:
    """Options classes only a model entry may set (never ``defaults:``): how to load that one model."""
    from tflq.model.options import ModelOptions

    return (ModelOptions,)


SECTION_ORDER = ("calibration", "evaluation", "latency", "gates", "auto", "qat")
TOP_LEVEL = ("output_dir", "defaults", "models")
IDENTITY = ("name", "path")  # a model entry's own keys besides its settings


@cache
def schema() -> dict[str | None, dict[str, opts.SchemaEntry]]:
    """Section (None: plain settings) -> YAML key -> where its value goes."""
    found = opts.yaml_schema(option_classes())
    return {section: found[section] for section in (None, *SECTION_ORDER) if section in found}


def sections() -> tuple[str, ...]:
    return tuple(section for section in schema() if section is not None)


def plain_keys(model_entry: bool) -> tuple[str, ...]:
    """The keys allowed outside sections in ``defaults:`` (``model_entry`` False) or in a model entry."""
    keys = [
        key
        for key, entry in schema().get(None, {}).items()
        if model_entry or entry.options_class not in model_only_classes()
    ]
    return (*IDENTITY, *keys) if model_entry else tuple(keys)


def batch_default(section: str | None, key: str) -> Any:
    """The built-in default of a key in a batch file."""
    return schema()[section][key].item.batch_default


def schema_rows() -> list[tuple[str, list[dict[str, str]]]]:
    """(title, rows) for the docs: one table for the plain settings and one per section, from the declarations."""
    tables: list[tuple[str, list[dict[str, str]]]] = []
    identity = [
        {
            "yaml": "name",
            "flag": "",
            "default": "required",
            "type": "string",
            "meaning": "model entries only: unique in the file; the stem of the output files (a plain file name)",
        },
        {
            "yaml": "path",
            "flag": "",
            "default": "required",
            "type": "path",
            "meaning": "model entries only: a .keras or .h5 file, or a SavedModel folder (relative to the file)",
        },
    ]
    for section, keys in schema().items():
        rows = identity if section is None else []
        for key, entry in keys.items():
            item = entry.item
            only = "model entries only: " if entry.options_class in model_only_classes() else ""
            rows.append(
                {
                    "yaml": key if section is None else f"{section}.{key}",
                    "flag": item.setting.flag or "",
                    "default": _default_text(item),
                    "type": item.setting.kind.describe(),
                    "meaning": only + item.setting.help,
                }
            )
        tables.append(("Plain settings" if section is None else f"`{section}:`", rows))
    return tables


def _default_text(item: opts.Declared) -> str:
    if item.setting.has_yaml_default:
        value = item.batch_default
        return ", ".join(value) if isinstance(value, tuple) else str(value)
    return item.default_text


SCHEMA_INTRO = """A batch file has three top-level keys: `output_dir` (default: `build/` beside the file), `defaults`
(settings every model inherits) and `models` (a non-empty list of model entries). A model entry holds `name`,
`path` and any setting; `defaults:` holds any setting except the model-only ones. Precedence: built-in defaults <
`defaults:` < the model entry < `tflq run` flags. Paths are relative to the file. Unknown keys are errors with a
"did you mean" and the file:line. Every key below comes from the declaration of the setting in the code, the same
declaration `tflq convert` and `tflq eval` read their flags from (the flag column)."""


@dataclass(frozen=True)
class ModelJob:
    """Everything needed to process one model of a batch, after precedence and validation: one typed options
    object per stage, as ``tflq convert``, ``tflq eval`` and ``tflq auto`` build them from their flags."""

    name: str
    path: Path
    convert: ConvertOptions = field(default_factory=ConvertOptions)
    evaluation: EvaluationOptions = field(default_factory=EvaluationOptions)
    measure: EvalSettings = field(default_factory=EvalSettings)
    gates: GateOptions = field(default_factory=GateOptions)
    auto: Mapping[str, Any] = field(default_factory=dict)  # the auto: section, AutoOptions field -> value

    @property
    def modes(self) -> tuple[str, ...]:
        return self.convert.modes

    @property
    def io_types(self) -> tuple[str, ...]:
        return self.convert.io_types

    @property
    def searches(self) -> bool:
        """True when the model has an ``auto:`` search (``auto.max_drop`` set)."""
        return self.auto.get("max_drop") is not None
