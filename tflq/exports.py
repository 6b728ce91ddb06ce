"""Names a package re-exports from its modules, loaded on first use (PEP 562), so importing the package is cheap."""
from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from typing import Any


def lazy_exports(package: str, exports: Mapping[str, str]) -> Callable[[str], Any]:
    """A module ``__getattr__`` for ``package`` that imports ``exports[name]`` (a module path) when ``name`` is read."""

    def __getattr__(name: str) -> Any:  # noqa: N807 -- the module hook's own name
        if name in exports:
            return getattr(importlib.import_module(exports[name]), name)
        raise AttributeError(f"module {package!r} has no attribute {name!r}")

    return __getattr__
