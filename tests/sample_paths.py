"""Where the shipped sample models and their data live (``sample_models/`` at the repository root)."""
from __future__ import annotations

from pathlib import Path

REPOSITORY = Path(__file__).resolve().parent.parent
SAMPLES = REPOSITORY / "sample_models"
