"""What the batch manifest saves: an unchanged second ``tflq run`` against the first (cold) one.

    python benchmarks/batch_cache.py [--warm-repeats 3] [--keep]

The config (written to a temporary folder, printed with ``--keep``) lists the shipped sample models: digits_cnn
(every mode, int8 with float32 and int8 I/O), digits_gru (float32, dynamic, int8) and digits_multi_io (every mode),
with calibration and evaluation data. The calibration files are copies in the temporary folder, so the script can
change one. Each run is a fresh ``python -m tflq.cli.app run CONFIG`` process, timed from start to exit, so the figures
include the interpreter start-up, imports, config validation, hashing, and the reports (pareto.png included).

1. cold: an empty output folder: every variant is converted and measured;
2. warm: the same command again, unchanged (``--warm-repeats`` times, the median is the figure): every variant is up
   to date, nothing is converted or measured;
3. calibration changed: ``calib_digits.npz`` (shared by digits_cnn and digits_gru) rewritten with other samples:
   only the calibrated variants (int8, 16x8) of those two models may rerun; the float variants and digits_multi_io
   stay up to date. The script checks which rows were rebuilt.

Target (issue 4): warm / cold at most 0.1.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

REPOSITORY = Path(__file__).resolve().parent.parent
SAMPLE_MODELS = REPOSITORY / "sample_models"
TARGET_RATIO = 0.1

CONFIG = """\
output_dir: out
defaults:
  modes: [float32, float16, dynamic, int8, 16x8]
  io_types: [float32, int8]
  calibration: {{data: calib_digits.npz, samples: 200}}
  evaluation: {{data: {samples}/digits_test.npz}}
models:
  - name: digits_cnn
    path: {samples}/digits_cnn.keras
  - name: digits_gru
    path: {samples}/digits_gru.keras
    modes: [float32, dynamic, int8]
  - name: digits_multi_io
    path: {samples}/digits_multi_io.keras
    calibration: {{data: calib_multi_io.npz}}
    evaluation: {{data: {samples}/digits_multi_io_test.npz}}
"""


def run(config: Path) -> tuple[float, list[dict[str, Any]]]:
    """One ``tflq run --json`` in a fresh process: (wall seconds, report rows). Raises on a non-zero exit."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(REPOSITORY), os.environ.get("PYTHONPATH")])))
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "tflq.cli.app", "run", str(config), "--json"], capture_output=True, text=True, env=env
    )
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"tflq run exited {done.returncode}:\n{done.stderr[-3000:]}")
    return seconds, json.loads(done.stdout)


def rebuilt(rows: list[dict[str, Any]]) -> list[str]:
    return [f"{row['model']} {row['variant']}" for row in rows if not row["up_to_date"]]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--warm-repeats", type=int, default=3, help="unchanged runs after the cold one (median)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder and print its path")
    args = parser.parse_args(argv)

    workdir = Path(tempfile.mkdtemp(prefix="tflq-batch-cache-"))
    try:
        shutil.copy(SAMPLE_MODELS / "digits_train.npz", workdir / "calib_digits.npz")
        shutil.copy(SAMPLE_MODELS / "digits_multi_io_train.npz", workdir / "calib_multi_io.npz")
        config = workdir / "batch.yaml"
        config.write_text(CONFIG.format(samples=SAMPLE_MODELS))

        cold, rows = run(config)
        if rebuilt(rows) != [f"{row['model']} {row['variant']}" for row in rows]:
            raise SystemExit("the cold run reused results: the output folder was not empty")
        warm_runs = []
        for _ in range(args.warm_repeats):
            seconds, warm_rows = run(config)
            if rebuilt(warm_rows):
                raise SystemExit(f"an unchanged run rebuilt {rebuilt(warm_rows)}")
            warm_runs.append(seconds)
        warm = statistics.median(warm_runs)

        with np.load(workdir / "calib_digits.npz") as archive:
            arrays = {key: archive[key][::-1].copy() for key in archive.files}  # other samples come first
        np.savez(workdir / "calib_digits.npz", **arrays)
        changed, changed_rows = run(config)
        expected = [
            f"{row['model']} {row['variant']}"
            for row in rows
            if row["model"] in ("digits_cnn", "digits_gru") and row["mode"] in ("int8", "16x8")
        ]
        if rebuilt(changed_rows) != expected:
            raise SystemExit(f"after the calibration change, rebuilt {rebuilt(changed_rows)}; expected {expected}")

        print(f"machine: {platform.machine()}, {os.cpu_count()} cores, load {os.getloadavg()[0]:.2f}; "
              f"Python {platform.python_version()}")
        print(f"config: {len(rows)} variants of 3 sample models (digits_cnn, digits_gru, digits_multi_io)")
        print(f"cold run (everything converted and measured): {cold:7.2f} s")
        print(f"unchanged second run (median of {len(warm_runs)}):     {warm:7.2f} s   "
              f"(runs: {', '.join(f'{s:.2f}' for s in warm_runs)})")
        ratio = warm / cold
        verdict = "meets" if ratio <= TARGET_RATIO else "MISSES"
        print(f"warm / cold: {ratio:.3f}  ({verdict} the target of at most {TARGET_RATIO})")
        print(f"calibration file changed: {changed:7.2f} s, {len(expected)} of {len(rows)} variants rebuilt "
              f"({', '.join(expected)}); the other {len(rows) - len(expected)} up to date")
        print(f"changed / cold: {changed / cold:.3f}")
        if args.keep:
            print(f"kept: {workdir}")
        return 0 if ratio <= TARGET_RATIO else 1
    finally:
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
