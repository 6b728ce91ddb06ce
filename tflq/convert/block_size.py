"""The kind of the ``block_size`` setting (:class:`tflq.convert.options.ConvertOptions`): None or a block size
LiteRT Quantizer takes, checked the same way in YAML and on the command line."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from tflq import options as opts
from tflq._tf import litert_quantizer as _lq
from tflq.errors import ConfigError


@dataclass(frozen=True)
class BlockSize(opts.Kind):
    """None (channelwise: one scale per output channel) or a LiteRT Quantizer block size (blockwise)."""

    metavar: str | None = "N"

    def check(self, value: Any, where: str) -> int | None:
        if value is None:
            return None
        if isinstance(value, bool) or value not in _lq.BLOCK_SIZES:
            sizes = ", ".join(map(str, _lq.BLOCK_SIZES))
            raise ConfigError(f"{where}: expected one of {sizes} or null, found {opts.type_name(value)} {value!r}")
        return int(value)

    def click_type(self) -> Any:
        import click

        class _Sizes(click.ParamType):
            name = "|".join(map(str, _lq.BLOCK_SIZES))

            def convert(self, value: Any, param: Any, ctx: Any) -> int:
                if isinstance(value, int) and value in _lq.BLOCK_SIZES:
                    return value
                if str(value).strip() in {str(size) for size in _lq.BLOCK_SIZES}:
                    return int(value)
                self.fail(f"{value!r} is not one of {', '.join(map(str, _lq.BLOCK_SIZES))}", param, ctx)

        return _Sizes()

    def describe(self) -> str:
        return " | ".join(map(str, _lq.BLOCK_SIZES)) + " or null"
