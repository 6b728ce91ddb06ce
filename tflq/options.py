"""Settings declared once: a stage's options are a frozen dataclass whose fields carry a :class:`Setting`.

A stage (conversion, calibration, measurement, gates, auto search, QAT) declares its options next to the code
that reads them::

    @dataclass(frozen=True)
    class CalibrationOptions:
        samples: int = setting(200, PositiveInt(), "calibration samples to use", flag="--calib-samples")

That one declaration is read by everything else:

* the CLI: :func:`tflq.cli.flags.click_options` turns the fields that have a ``flag`` into click options (type,
  range, choices, help with the default) and :func:`tflq.cli.flags.from_flags` builds the dataclass from the parsed
  values, so a flag the user did not give keeps the declared default;
* the YAML schema: :func:`read_section` validates one YAML mapping against the fields (unknown keys get a "did
  you mean", every value its kind's check, with ``file:line``);
* the docs: :func:`describe` gives one row per setting (YAML key, flag, default, meaning);
* cache keys: :func:`values` gives the plain values of the fields a consumer names.

Nothing here imports TensorFlow. A kind's ``check(value, where)`` raises :class:`tflq.errors.ConfigError` whose
message starts with ``where``.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

from tflq.errors import ConfigError

T = TypeVar("T")

_SETTING = "tflq.setting"


def type_name(value: Any) -> str:
    """How an error message calls the type of a value read from YAML."""
    names = {
        str: "a string",
        int: "an integer",
        float: "a number",
        bool: "true/false",
        list: "a list",
        dict: "a mapping",
    }
    if value is None:
        return "null"
    return names.get(type(value), type(value).__name__)


def did_you_mean(word: str, choices: Iterable[str]) -> str:
    """`` (did you mean 'x'?)`` for the closest choice, or an empty string."""
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


# --- kinds: what a value may be, for YAML, click and the docs ---------------------------------------------------


class Kind:
    """What values a setting takes. Subclasses implement :meth:`check` and :meth:`click_type`."""

    metavar: str | None = None

    def check(self, value: Any, where: str) -> Any:
        raise NotImplementedError

    def click_type(self) -> Any:
        return None

    def describe(self) -> str:
        return ""


@dataclass(frozen=True)
class Text(Kind):
    """A non-empty string (``optional``: or null). ``path``: resolved against the YAML file's folder."""

    optional: bool = False
    path: bool = False
    metavar: str | None = None

    def check(self, value: Any, where: str) -> str | None:
        if value is None and self.optional:
            return None
        if not isinstance(value, str) or not value:
            expected = "a non-empty string or null" if self.optional else "a non-empty string"
            raise ConfigError(f"{where}: expected {expected}, found {type_name(value)} {value!r}")
        return value

    def describe(self) -> str:
        return "path" if self.path else "string"


@dataclass(frozen=True)
class Flag(Kind):
    """true or false (``optional``: or null, meaning "not said")."""

    optional: bool = False

    def check(self, value: Any, where: str) -> bool | None:
        if value is None and self.optional:
            return None
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: expected true or false, found {type_name(value)} {value!r}")
        return value

    def describe(self) -> str:
        return "true/false" + (" or null" if self.optional else "")


@dataclass(frozen=True)
class Integer(Kind):
    """An integer in [minimum, maximum] (``optional``: or null)."""

    minimum: int | None = None
    maximum: int | None = None
    optional: bool = False
    metavar: str | None = "N"

    def check(self, value: Any, where: str) -> int | None:
        if value is None and self.optional:
            return None
        if isinstance(value, bool) or not isinstance(value, int) or not self._in_range(value):
            raise ConfigError(f"{where}: expected {self.describe()}, found {type_name(value)} {value!r}")
        return value

    def _in_range(self, value: int) -> bool:
        return (self.minimum is None or value >= self.minimum) and (self.maximum is None or value <= self.maximum)

    def click_type(self) -> Any:
        import click

        return click.IntRange(min=self.minimum, max=self.maximum)

    def describe(self) -> str:
        if self.minimum == 1:
            text = "a positive integer"
        elif self.minimum == 0:
            text = "a non-negative integer"
        elif self.minimum is not None:
            text = f"an integer >= {self.minimum}"
        else:
            text = "an integer"
        if self.maximum is not None:
            text += f" (at most {self.maximum})"
        return text + (" or null" if self.optional else "")


def PositiveInt(optional: bool = False) -> Integer:  # noqa: N802 -- reads as a kind
    return Integer(minimum=1, optional=optional)


def NonNegativeInt(optional: bool = False) -> Integer:  # noqa: N802
    return Integer(minimum=0, optional=optional)


@dataclass(frozen=True)
class Number(Kind):
    """A finite number in a range; ``open_min``/``open_max`` exclude the bound (``optional``: or null)."""

    minimum: float | None = None
    maximum: float | None = None
    open_min: bool = False
    open_max: bool = False
    optional: bool = False
    metavar: str | None = "X"

    def check(self, value: Any, where: str) -> float | None:
        if value is None and self.optional:
            return None
        number = isinstance(value, (int, float)) and not isinstance(value, bool)
        if not number or not math.isfinite(value) or not self._in_range(value):
            raise ConfigError(f"{where}: expected {self.describe()}, found {type_name(value)} {value!r}")
        return float(value)

    def _in_range(self, value: float) -> bool:
        low_ok = self.minimum is None or (value > self.minimum if self.open_min else value >= self.minimum)
        high_ok = self.maximum is None or (value < self.maximum if self.open_max else value <= self.maximum)
        return low_ok and high_ok

    def click_type(self) -> Any:
        import click

        return click.FloatRange(min=self.minimum, max=self.maximum, min_open=self.open_min, max_open=self.open_max)

    def describe(self) -> str:
        if self.minimum is not None and self.maximum is not None and self.open_min and self.open_max:
            text = f"a number between {self.minimum:g} and {self.maximum:g} (exclusive)"
            return text + (" or null" if self.optional else "")
        if self.minimum == 0 and not self.open_min:
            text = "a finite non-negative number"
        elif self.minimum == 0:
            text = "a finite positive number"
        elif self.minimum is not None:
            text = f"a finite number {'>' if self.open_min else '>='} {self.minimum:g}"
        else:
            text = "a finite number"
        if self.maximum is not None and (self.open_max or self.maximum < 1e15):
            text += f" ({'below' if self.open_max else 'at most'} {self.maximum:g})"
        return text + (" or null" if self.optional else "")


@dataclass(frozen=True)
class Choice(Kind):
    """One of ``choices``."""

    choices: tuple[str, ...] = ()

    def check(self, value: Any, where: str) -> str:
        if value not in self.choices:
            hint = did_you_mean(str(value), self.choices)
            raise ConfigError(f"{where}: expected one of {', '.join(self.choices)}, found {value!r}{hint}")
        return str(value)

    def click_type(self) -> Any:
        import click

        return click.Choice(list(self.choices))

    def describe(self) -> str:
        return " | ".join(self.choices)


@dataclass(frozen=True)
class Names(Kind):
    """A list of non-empty strings (a single string is a one-item list). ``allowed``: each must be one of them.
    ``non_empty``: an empty list is an error (it would silently mean "nothing")."""

    allowed: tuple[str, ...] | None = None
    non_empty: bool = False
    what: str = "name"
    metavar: str | None = "NAME"

    def check(self, value: Any, where: str) -> tuple[str, ...]:
        items = [value] if isinstance(value, str) else value
        if not isinstance(items, (list, tuple)) or not all(isinstance(item, str) and item for item in items):
            raise ConfigError(f"{where}: expected a list of strings ({self.what}s), found {type_name(value)} {value!r}")
        if self.non_empty and not items:
            raise ConfigError(f"{where}: expected at least one {self.what}, found an empty list")
        if self.allowed is not None:
            for item in items:
                if item not in self.allowed:
                    hint = did_you_mean(item, self.allowed)
                    raise ConfigError(f"{where}: unknown {self.what} {item!r}{hint}; valid: {', '.join(self.allowed)}")
        return tuple(items)

    def describe(self) -> str:
        return f"list of {self.what}s" + (f" ({', '.join(self.allowed)})" if self.allowed else "")


@dataclass(frozen=True)
class Checked(Kind):
    """A value checked by a function of its own (``check(value, where)`` raising ConfigError), e.g. a mapping."""

    function: Callable[[Any, str], Any] = lambda value, where: value
    text: str = ""

    def check(self, value: Any, where: str) -> Any:
        return self.function(value, where)

    def describe(self) -> str:
        return self.text


# --- declaring and reading settings --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Setting:
    """The declaration of one option: its kind, meaning, CLI flag (None: not on the command line), YAML key (None:
    not in YAML; default: the field name) and whether it is only for the docs' "default" column (``shown``)."""

    kind: Kind
    help: str
    flag: str | None = None
    yaml: str | None = ""
    shown_default: str | None = None
    multiple: bool = False
    section: str | None = None  # the YAML section (``calibration``, ``latency``...); None: a plain model setting
    yaml_default: Any = (
        None  # a batch file's default when it differs from the library's (see ``Declared.batch_default``)
    )
    has_yaml_default: bool = False


def setting(
    default: Any,
    kind: Kind,
    help: str,  # noqa: A002 -- the word click and argparse use
    *,
    flag: str | None = None,
    yaml: str | None = "",
    shown_default: str | None = None,
    multiple: bool = False,
    section: str | None = None,
    **batch: Any,
) -> Any:
    """A dataclass field declaring one setting (see the module docstring). Returns a ``dataclasses.field``.

    ``batch_default=...`` declares, in the same place, a different default for batch files (``modes``: every
    non-training mode in a batch, float32 on the command line)."""
    unknown = set(batch) - {"batch_default"}
    if unknown:
        raise TypeError(f"unknown setting() argument(s): {', '.join(sorted(unknown))}")
    declaration = Setting(
        kind, help, flag, yaml, shown_default, multiple, section, batch.get("batch_default"), "batch_default" in batch
    )
    if isinstance(default, (list, dict, set)):
        raise TypeError("use a tuple or a frozen value as a setting's default")
    return dataclasses.field(default=default, metadata={_SETTING: declaration})


@dataclass(frozen=True)
class Declared:
    """One field of an options class with its declaration."""

    name: str
    default: Any
    setting: Setting

    @property
    def batch_default(self) -> Any:
        """The default of this setting in a batch file."""
        return self.setting.yaml_default if self.setting.has_yaml_default else self.default

    @property
    def yaml_key(self) -> str | None:
        return self.name if self.setting.yaml == "" else self.setting.yaml

    @property
    def default_text(self) -> str:
        if self.setting.shown_default is not None:
            return self.setting.shown_default
        if self.default is None:
            return "none"
        if isinstance(self.default, bool):
            return "true" if self.default else "false"
        if isinstance(self.default, tuple):
            return ", ".join(map(str, self.default)) if self.default else "none"
        return f"{self.default:g}" if isinstance(self.default, float) else str(self.default)


def declared(options_class: type) -> list[Declared]:
    """The declared settings of a dataclass, in field order (fields without a Setting are left out)."""
    rows = []
    for item in dataclasses.fields(options_class):
        declaration = item.metadata.get(_SETTING)
        if declaration is not None:
            rows.append(Declared(item.name, item.default, declaration))
    return rows


def defaults(options_class: type) -> dict[str, Any]:
    """Field name -> declared default."""
    return {item.name: item.default for item in declared(options_class)}


def values(options: Any, names: Iterable[str] | None = None) -> dict[str, Any]:
    """Field name -> value for the declared settings of ``options`` (only ``names`` when given): for cache keys."""
    wanted = None if names is None else set(names)
    result = {}
    for item in declared(type(options)):
        if wanted is None or item.name in wanted:
            value = getattr(options, item.name)
            result[item.name] = list(value) if isinstance(value, tuple) else value
    return result


def yaml_keys(options_class: type) -> dict[str, Declared]:
    """YAML key -> declaration, for the settings that YAML may set."""
    return {item.yaml_key: item for item in declared(options_class) if item.yaml_key is not None}


@dataclass(frozen=True)
class SchemaEntry:
    """Where one YAML key's value goes: the options class and the field."""

    options_class: type
    item: Declared


def yaml_schema(classes: Iterable[type]) -> dict[str | None, dict[str, SchemaEntry]]:
    """Section (None: the plain settings) -> YAML key -> where the value goes, over the declarations of ``classes``.

    Raises TypeError when two declarations claim one key (a programming error, caught by the tests).
    """
    schema: dict[str | None, dict[str, SchemaEntry]] = {}
    for options_class in classes:
        for item in declared(options_class):
            key = item.yaml_key
            if key is None:
                continue
            keys = schema.setdefault(item.setting.section, {})
            if key in keys:
                other = keys[key].options_class.__name__
                raise TypeError(
                    f"YAML key {item.setting.section}.{key} declared by {other} and {options_class.__name__}"
                )
            keys[key] = SchemaEntry(options_class, item)
    return schema


def read_section(
    options_class: type,
    mapping: Mapping[str, Any],
    where: Callable[[str], str],
    resolve_path: Callable[[str], str] | None = None,
    section: str = "",
) -> dict[str, Any]:
    """Validate a YAML mapping (key -> plain value) against the declared settings.

    ``where(key)`` gives the message prefix for a key (``file:line: section.key``). Returns field name -> checked
    value for the keys given (defaults are not filled in, so precedence can merge layers). Raises ConfigError for
    an unknown key (with a "did you mean" and the allowed keys) or a bad value.
    """
    keys = yaml_keys(options_class)
    result: dict[str, Any] = {}
    for key, raw in mapping.items():
        if key not in keys:
            label = f"{section}." if section else ""
            raise ConfigError(
                f"{where(key)}: unknown key {label + key!r}{did_you_mean(key, keys)}; allowed: {', '.join(keys)}"
            )
        item = keys[key]
        value = item.setting.kind.check(raw, where(key))
        if resolve_path is not None and isinstance(item.setting.kind, Text) and item.setting.kind.path and value:
            value = resolve_path(value)
        result[item.name] = value
    return result


def build(options_class: type[T], *layers: Mapping[str, Any], **fixed: Any) -> T:
    """The options from layered field values, later layers winning (defaults < file defaults < entry < CLI)."""
    merged: dict[str, Any] = {}
    for layer in layers:
        merged.update({key: value for key, value in layer.items()})
    merged.update(fixed)
    return options_class(**merged)


# --- the docs ---------------------------------------------------------------------------------------------------------


def describe(options_class: type, section: str = "") -> list[dict[str, str]]:
    """One row per declared setting: ``yaml`` (``section.key``), ``flag``, ``default``, ``type`` and ``meaning``."""
    rows = []
    for item in declared(options_class):
        key = item.yaml_key
        rows.append(
            {
                "yaml": "" if key is None else (f"{section}.{key}" if section else key),
                "flag": item.setting.flag or "",
                "default": item.default_text,
                "type": item.setting.kind.describe(),
                "meaning": item.setting.help,
            }
        )
    return rows
