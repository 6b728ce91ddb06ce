"""Read a YAML batch file safely: bounded in size, nesting and alias expansion, plain YAML values only.

:func:`read_tree` returns the document as mappings of ``dict[str, Located]`` and lists of ``list[Located]`` (every
value with its 1-based line), or raises :class:`~tflq.errors.ConfigError` naming ``file:line``. The bounds are
checked while the document is composed, before anything is expanded, so a hostile file (a "billion laughs" of
aliases, a self-referencing alias, thousands of nested lists, a ``!!python/...`` tag) is refused at once.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tflq.errors import ConfigError

MAX_FILE_BYTES = 10 * 1024 * 1024  # a batch file is a few kB; refuse before reading anything bigger
MAX_DEPTH = 100  # nested lists/mappings
MAX_ALIAS_VALUES = 10_000  # values reached through aliases, counted with everything they contain

_CORE = "tag:yaml.org,2002:"
# the YAML core schema (and timestamp, which PyYAML's safe resolver gives plain dates): nothing that builds objects
ALLOWED_TAGS = frozenset(_CORE + name for name in ("null", "bool", "int", "float", "str", "seq", "map", "timestamp"))


@dataclass(frozen=True)
class Located:
    """A value read from YAML with the line it came from (1-based; 0 when not from a file)."""

    value: Any
    line: int


def plain(value: Any) -> Any:
    """The value without its Located wrappers (for values checked as a whole, e.g. lists)."""
    if isinstance(value, Located):
        return plain(value.value)
    if isinstance(value, dict):
        return {key: plain(item) for key, item in value.items()}
    if isinstance(value, list):
        return [plain(item) for item in value]
    return value


def _short_tag(tag: str) -> str:
    return "!!" + tag[len(_CORE) :] if tag.startswith(_CORE) else tag


def _bounded_loader(source: Path) -> type:
    """A SafeLoader subclass that refuses deep nesting, alias blow-ups, self-referencing aliases and tags outside
    the core schema while composing (raising ConfigError with ``source:line``)."""
    import yaml

    class BoundedLoader(yaml.SafeLoader):
        def __init__(self, stream: str) -> None:
            super().__init__(stream)
            self.depth = 0
            self.alias_values = 0
            self.sizes: dict[int, int] = {}  # id(node) -> number of values it holds once aliases are expanded

        def compose_node(self, parent: Any, index: Any) -> Any:
            if self.check_event(yaml.AliasEvent):
                event = self.peek_event()
                target = self.anchors.get(event.anchor)
                if target is not None:
                    line = event.start_mark.line + 1
                    if id(target) not in self.sizes:
                        raise ConfigError(
                            f"{source}:{line}: YAML alias *{event.anchor} refers to a value that contains it"
                        )
                    self.alias_values += self.sizes[id(target)]
                    if self.alias_values > MAX_ALIAS_VALUES:
                        raise ConfigError(
                            f"{source}:{line}: YAML aliases expand to more than {MAX_ALIAS_VALUES} values; "
                            "write the settings out or put shared ones under defaults:"
                        )
                return super().compose_node(parent, index)  # an undefined alias: PyYAML's own error
            event = self.peek_event()
            if isinstance(event, (yaml.SequenceStartEvent, yaml.MappingStartEvent)):
                self.depth += 1
                if self.depth > MAX_DEPTH:
                    raise ConfigError(
                        f"{source}:{event.start_mark.line + 1}: YAML nested more than {MAX_DEPTH} levels deep"
                    )
            try:
                node = super().compose_node(parent, index)
            finally:
                if isinstance(event, (yaml.SequenceStartEvent, yaml.MappingStartEvent)):
                    self.depth -= 1
            line = node.start_mark.line + 1
            if node.tag == _CORE + "merge":
                raise ConfigError(
                    f"{source}:{line}: YAML merge keys (<<) are not supported; put shared settings under defaults:"
                )
            if node.tag not in ALLOWED_TAGS:
                raise ConfigError(
                    f"{source}:{line}: YAML tag {_short_tag(node.tag)} is not allowed; a batch file holds plain "
                    "strings, numbers, true/false, null, lists and mappings"
                )
            if isinstance(node, yaml.SequenceNode):
                children = node.value
            elif isinstance(node, yaml.MappingNode):
                children = [item for pair in node.value for item in pair]
            else:
                children = []
            self.sizes[id(node)] = 1 + sum(self.sizes[id(child)] for child in children)
            return node

    return BoundedLoader


def _read_text(path: Path) -> str:
    if path.is_dir():
        raise ConfigError(f"{path}: is a directory; expected a YAML batch file")
    if not path.exists():
        raise ConfigError(f"{path}: no such config file")
    if not path.is_file():
        raise ConfigError(f"{path}: not a regular file; expected a YAML batch file")
    try:
        size = path.stat().st_size
        if size > MAX_FILE_BYTES:
            raise ConfigError(f"{path}: {size} bytes; a batch file may hold at most {MAX_FILE_BYTES} bytes")
        with path.open("rb") as stream:
            data = stream.read(MAX_FILE_BYTES + 1)
    except OSError as error:
        raise ConfigError(f"{path}: cannot read: {error.strerror or error}") from None
    if len(data) > MAX_FILE_BYTES:
        raise ConfigError(f"{path}: a batch file may hold at most {MAX_FILE_BYTES} bytes")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as error:
        line = data[: error.start].count(b"\n") + 1
        raise ConfigError(
            f"{path}:{line}: not UTF-8 text (byte 0x{data[error.start]:02x} at offset {error.start})"
        ) from None


def _yaml_error(error: Any, text: str, source: Path) -> ConfigError:
    """One line for any yaml.YAMLError: where (file:line) and what."""
    import yaml

    mark = getattr(error, "problem_mark", None) or getattr(error, "context_mark", None)
    if mark is not None:
        line = mark.line + 1
    elif isinstance(error, yaml.reader.ReaderError):
        line = text[: error.position].count("\n") + 1
    else:
        line = 0
    if isinstance(error, yaml.reader.ReaderError):
        problem = f"character {error.character!r} is not allowed in YAML ({error.reason})"
    else:
        problem = getattr(error, "problem", None) or str(error).splitlines()[0]
        context = getattr(error, "context", None)
        if context:
            problem = f"{context}, {problem}"
    return ConfigError(f"{source}{f':{line}' if line else ''}: YAML syntax error: {problem}")


def read_tree(path: Path) -> Any:
    """The document at ``path`` with line numbers (see the module doc). Raises ConfigError."""
    import yaml

    text = _read_text(path)
    try:
        loader = _bounded_loader(path)(text)  # the reader refuses non-printable characters here
    except yaml.YAMLError as error:
        raise _yaml_error(error, text, path) from None
    try:
        node = loader.get_single_node()
    except yaml.YAMLError as error:
        raise _yaml_error(error, text, path) from None
    finally:
        loader.dispose()
    if node is None:
        raise ConfigError(f"{path}: the file is empty")
    constructor = yaml.SafeLoader("")

    def scalar(current: Any) -> Any:
        try:
            return constructor.construct_object(current, deep=True)
        except (yaml.YAMLError, ValueError, TypeError, AttributeError, OverflowError):
            raise ConfigError(
                f"{path}:{current.start_mark.line + 1}: cannot read {current.value!r} as {_short_tag(current.tag)}"
            ) from None

    def convert(current: Any) -> Any:
        if isinstance(current, yaml.MappingNode):
            result: dict[str, Located] = {}
            for key_node, value_node in current.value:
                line = key_node.start_mark.line + 1
                if not isinstance(key_node, yaml.ScalarNode) or key_node.tag != _CORE + "str":
                    shown = repr(scalar(key_node)) if isinstance(key_node, yaml.ScalarNode) else f"a {key_node.id}"
                    raise ConfigError(f"{path}:{line}: keys must be strings, found {shown}")
                key = key_node.value
                if key in result:
                    raise ConfigError(f"{path}:{line}: duplicate key {key!r} (first at line {result[key].line})")
                result[key] = Located(convert(value_node), line)
            return result
        if isinstance(current, yaml.SequenceNode):
            return [Located(convert(item), item.start_mark.line + 1) for item in current.value]
        return scalar(current)

    return convert(node)
