"""The conversion session: export once, calibrate once, build each variant, verify, write atomically."""

from __future__ import annotations

from tflq.exports import lazy_exports

# The names the docs import from this package, loaded on first use (importing the package stays cheap).
_EXPORTS = {
    "Artifact": "tflq.convert.session",
    "ConvertOptions": "tflq.convert.options",
    "ConvertResult": "tflq.convert.session",
    "convert_model": "tflq.convert.session",
}
__all__ = list(_EXPORTS)

__getattr__ = lazy_exports(__name__, _EXPORTS)
