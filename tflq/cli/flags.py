"""The command line's side of the declared settings (:mod:`tflq.options`): click options made from the declarations,
and the options objects built back from the parsed values.

``click_options(SomeOptions)`` adds one click option per declared setting with a ``flag`` (type, range, choices,
help with the declared default); ``from_flags(SomeOptions, parsed)`` pops those values again, keeping only the
flags the user gave, so a left-out flag keeps the declared default (or a value below the CLI in precedence).
"""
from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from tflq.errors import UsageError
from tflq.options import Declared, Flag, Names, declared


def _help_with_default(item: Declared) -> str:
    text = item.setting.help
    if isinstance(item.setting.kind, Flag) and not item.setting.kind.optional:
        return text if item.default is False else f"{text}  [default: on]"
    if item.default in (None, ()) and item.setting.shown_default is None:
        return text
    return f"{text}  [default: {item.default_text}]"


def click_options(
    options_class: type, *, names: Sequence[str] | None = None, exclude: Sequence[str] = ()
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """A decorator adding one click option per declared setting with a flag (only ``names`` when given, none of
    ``exclude``: a command that takes "every other setting" picks up a new declaration by itself).

    Every option's click default is None, so :func:`from_flags` can tell a flag the user gave from one left at
    its declared default (the help text shows the declared default).
    """
    import click

    items = [
        item
        for item in declared(options_class)
        if item.setting.flag and (names is None or item.name in names) and item.name not in exclude
    ]

    def decorate(command: Callable[..., Any]) -> Callable[..., Any]:
        for item in reversed(items):
            flag = item.setting.flag
            assert flag is not None
            kind = item.setting.kind
            parameter = f"{options_class.__name__.lower()}__{item.name}"
            if isinstance(kind, Flag) and kind.optional:
                negative = flag.replace("--", "--no-", 1)
                decorator = click.option(f"{flag}/{negative}", parameter, default=None, help=_help_with_default(item))
            elif isinstance(kind, Flag) and item.default is True:
                negative = flag.replace("--", "--no-", 1)
                decorator = click.option(f"{flag}/{negative}", parameter, default=None, help=_help_with_default(item))
            elif isinstance(kind, Flag):
                decorator = click.option(flag, parameter, is_flag=True, default=None, help=_help_with_default(item))
            elif isinstance(kind, Names) and kind.allowed is not None:
                decorator = click.option(
                    flag, parameter, multiple=True, type=click.Choice(list(kind.allowed)), help=_help_with_default(item)
                )
            elif isinstance(kind, Names):
                decorator = click.option(
                    flag, parameter, multiple=True, metavar=f"{kind.metavar},...", help=_help_with_default(item)
                )
            else:
                decorator = click.option(
                    flag,
                    parameter,
                    type=kind.click_type(),
                    default=None,
                    metavar=kind.metavar,
                    help=_help_with_default(item),
                )
            command = decorator(command)
        return command

    return decorate


def from_flags(options_class: type, parsed: dict[str, Any]) -> dict[str, Any]:
    """Pop the parameters :func:`click_options` added for ``options_class`` from click's keyword arguments.

    Returns field name -> value for the flags the user gave (left-out flags are absent, so the declared default,
    or a YAML value below the CLI in precedence, stays). Comma-separated lists are split.
    """
    prefix = f"{options_class.__name__.lower()}__"
    flags = {item.name: item.setting.flag for item in declared(options_class)}
    given: dict[str, Any] = {}
    for key in [key for key in parsed if key.startswith(prefix)]:
        value = parsed.pop(key)
        name = key[len(prefix) :]
        if isinstance(value, tuple):
            if not value:
                continue
            raw = value
            value = tuple(part.strip() for item in value for part in item.split(",") if part.strip())
            if not value:
                raise UsageError(f"{flags.get(name)} {','.join(raw)!r}: expected one or more comma-separated names")
        if value is None:
            continue
        given[name] = value
    return given


def flags_given(options_class: type, parsed: Mapping[str, Any]) -> list[str]:
    """The flags of ``options_class`` the user gave, as written on the command line (for "applies only to" errors)."""
    prefix = f"{options_class.__name__.lower()}__"
    flags = {item.name: item.setting.flag for item in declared(options_class)}
    kinds = {item.name: item.setting.kind for item in declared(options_class)}
    defaults_of = {item.name: item.default for item in declared(options_class)}
    given = []
    for key, value in parsed.items():
        if key.startswith(prefix) and value not in (None, ()):
            flag = flags.get(key[len(prefix) :])
            kind = kinds.get(key[len(prefix) :])
            if flag and isinstance(kind, Flag) and (kind.optional or defaults_of.get(key[len(prefix) :]) is True):
                flag = f"{flag}/{flag.replace('--', '--no-', 1)}"
            if flag:
                given.append(flag)
    return given
