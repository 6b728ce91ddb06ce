"""What a conversion produces: one :class:`Artifact` per variant, the :class:`ConvertResult` of a model, and the
output file names (``<out>/<name>.<mode>[.<io>].tflite``)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tflq.errors import UsageError
from tflq.modes import Variant


@dataclass(frozen=True)
class Artifact:
    """One produced (or failed) variant."""

    mode: str
    io_type: str
    path: Path
    status: str  # "ok" or "error"
    size_bytes: int | None = None
    sha256: str | None = None
    seconds: float = 0.0
    error: str | None = None
    float_ops: tuple[str, ...] = ()
    float_layers: tuple[str, ...] = ()  # the Keras layers of float_ops, same order
    training: Mapping[str, Any] | None = None  # training modes: see TrainingSummary.to_dict

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    @property
    def label(self) -> str:
        return Variant(self.mode, self.io_type).label

    def to_dict(self) -> dict[str, Any]:
        """The stable JSON form (``tflq convert --json``)."""
        return {
            "mode": self.mode,
            "io_type": self.io_type,
            "path": str(self.path),
            "size_bytes": self.size_bytes,
            "sha256": self.sha256,
            "seconds": round(self.seconds, 3),
            "status": self.status,
            "error": self.error,
            "float_ops": list(self.float_ops),
            "float_layers": list(self.float_layers),
            "training": dict(self.training) if self.training is not None else None,
        }


@dataclass(frozen=True)
class ConvertResult:
    """Everything one ``convert_model`` call produced."""

    model: Path
    name: str
    artifacts: tuple[Artifact, ...]
    export_seconds: float
    calibration_seconds: float
    training_seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return all(artifact.ok for artifact in self.artifacts)


def output_path(output_dir: Path, name: str, variant: Variant) -> Path:
    """``<out>/<name>.<mode>[.<io>].tflite``: the I/O part only when it is not float32."""
    return output_dir / f"{name}.{variant.label}.tflite"


def default_name(model_path: Path) -> str:
    """The model's file name without suffix (a SavedModel: its directory name)."""
    return model_path.name if model_path.is_dir() else model_path.stem


def output_name(model_path: Path, name: str | None) -> str:
    """The output file-name stem: ``name`` or the model's. Raises UsageError for a stem that is not a plain name
    (empty, blank, with a path separator, starting with a dot, or with control characters)."""
    if name is None:
        return default_name(model_path)
    problem = (
        "it is empty"
        if not name
        else "it is blank"
        if not name.strip()
        else "it holds a path separator"
        if any(sep in name for sep in ("/", "\\", os.sep))
        else "it starts with a dot"
        if name.startswith(".")
        else "it holds a control character"
        if any(ord(char) < 32 or ord(char) == 127 for char in name)
        else "it starts or ends with a space"
        if name != name.strip()
        else None
    )
    if problem:
        raise UsageError(f"--name {name!r}: expected a plain file-name stem, but {problem}")
    return name
