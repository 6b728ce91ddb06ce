"""Batch files more than one test module runs."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from tests.sample_paths import SAMPLES


def write_notices_batch(folder: Path, gates: str | None = None) -> Path:
    """Two models whose conversions log a notice or a warning: ``legacy``, a Keras 2 file loaded with tf_keras (a
    notice) calibrated on random data (a warning), and ``cnn``, calibrated on float64 data (a notice, the cast).
    Modes float32 and int8, evaluated on 40 test images, 3 latency runs; ``gates`` is a YAML mapping for
    ``defaults.gates`` (none by default). Returns the path of ``folder/batch.yaml``; outputs go to ``folder/out``."""
    with np.load(SAMPLES / "digits_train.npz") as archive:
        np.savez(folder / "calib64.npz", x=archive["x"][:16].astype(np.float64))
    gates_line = f"  gates: {gates}\n" if gates else ""
    path = folder / "batch.yaml"
    path.write_text(
        f"""\
output_dir: out
defaults:
  modes: [float32, int8]
  evaluation: {{data: {SAMPLES}/digits_test.npz, samples: 40}}
  latency: {{runs: 3, warmup_runs: 1}}
{gates_line}models:
  - name: legacy
    path: {SAMPLES}/digits_cnn.h5
    calibration: {{data: random, samples: 8}}
  - name: cnn
    path: {SAMPLES}/digits_cnn.keras
    calibration: {{data: {folder}/calib64.npz, samples: 16}}
"""
    )
    return path
