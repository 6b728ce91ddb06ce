"""The kind of the ``engine`` setting (:class:`tflq.convert.options.ConvertOptions`): None (each mode's default
engine) or one of the registry's engines, checked the same way in YAML and on the command line."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from tflq import options as opts
from tflq.errors import ConfigError
from tflq.modes import ENGINES


@dataclass(frozen=True)
class Engine(opts.Kind):
    """None (each mode's default, ``tflq modes``) or an engine name."""

    metavar: str | None = "ENGINE"

    def check(self, value: Any, where: str) -> str | None:
        if value is None:
            return None
        if value not in ENGINES:
            hint = opts.did_you_mean(str(value), ENGINES)
            raise ConfigError(f"{where}: expected one of {', '.join(ENGINES)} or null, found {value!r}{hint}")
        return str(value)

    def click_type(self) -> Any:
        import click

        return click.Choice(list(ENGINES))

    def describe(self) -> str:
        return " | ".join(ENGINES) + " or null"
