"""The conversion session: export once, calibrate once, build each variant, verify, write atomically."""
from __future__ import annotations

from tflq.convert.session import Artifact, ConvertOptions, ConvertResult, convert_model

__all__ = ['Artifact', 'ConvertOptions', 'ConvertResult', 'convert_model']
