"""How a batch scales: N models sequentially, on 2 local threads, and on a 2-CPU local Ray cluster, in one run.

    python benchmarks/batch_scale.py [--copies 3] [--cpus 2] [--keep]

The config (written to a temporary folder) lists ``2 * --copies`` models: copies of the shipped digits_cnn and
digits_gru under different names (``cnn_1``, ``gru_1``, ...), each with float32, dynamic and int8 (calibration:
100 samples of digits_train.npz; evaluation: 120 of digits_test.npz; latency: 20 runs). Every run starts from an
empty output folder, in a fresh process of this script (``--child``), so each pays the same imports:

1. sequential: ``run_batch(jobs=1)``, the local executor;
2. local --jobs 2: the local executor on 2 threads (each model job in its own child processes);
3. ray: a local Ray cluster on 127.0.0.1 only (``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0``, ``num_cpus=--cpus``, no
   dashboard; the script checks every node's address is 127.0.0.1), then ``run_batch`` with the Ray executor,
   one task per model job (1 CPU each). The cluster's start is timed apart from the run;
4. ray, one task per variant: the same variants, each its own model entry (``cnn_1_int8`` with modes [int8]), so
   each task exports and calibrates for one variant; this is what a per-variant unit would cost.

Reported: each run's wall time and its ratio to the sequential one. Rows are checked to be the same (sizes) in
runs 1-3. On a machine with more free cores the parallel ratios should approach 1 / cores; the load average
printed says how busy the machine was. This file is not a test (pytest collects ``tests/`` only).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPOSITORY = Path(__file__).resolve().parent.parent
if str(REPOSITORY) not in sys.path:
    sys.path.insert(0, str(REPOSITORY))  # benchmark the tflq next to this script, not whatever is installed
SAMPLES = REPOSITORY / "sample_models"
MODES = ("float32", "dynamic", "int8")

HEADER = f"""\
output_dir: out
defaults:
  calibration: {{data: {SAMPLES}/digits_train.npz, samples: 100}}
  evaluation: {{data: {SAMPLES}/digits_test.npz, samples: 120}}
  latency: {{runs: 20, warmup_runs: 2}}
models:
"""


def write_config(folder: Path, copies: int, per_variant: bool) -> Path:
    entries = []
    for copy in range(1, copies + 1):
        for model in ("cnn", "gru"):
            path = SAMPLES / f"digits_{model}.keras"
            if per_variant:
                for mode in MODES:
                    entries.append(f"  - name: {model}_{copy}_{mode}\n    path: {path}\n    modes: [{mode}]\n")
            else:
                entries.append(f"  - name: {model}_{copy}\n    path: {path}\n    modes: [{', '.join(MODES)}]\n")
    config = folder / ("per_variant.yaml" if per_variant else "batch.yaml")
    config.write_text(HEADER + "".join(entries))
    return config


def child(config: Path, output_dir: Path, how: str, cpus: int) -> dict[str, Any]:
    """One run in this (fresh) process: ``how`` is sequential, local2 or ray."""
    from tflq.batch.config import Overrides, load_config
    from tflq.batch.executors import ExecutorOptions
    from tflq.batch.run import run_batch

    loaded = load_config(config, Overrides(output_dir=output_dir))
    start_seconds = None
    if how == "ray":
        os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
        import ray

        from tflq.batch.ray_executor import loopback_nodes, timed_start

        start_seconds = timed_start(cpus)
        nodes = loopback_nodes()
        if nodes != ["127.0.0.1"]:
            raise SystemExit(f"the Ray node is not on loopback only: {nodes}")
    started = time.perf_counter()
    if how == "ray":
        result = run_batch(loaded, executor=ExecutorOptions(executor="ray"))
    else:
        result = run_batch(loaded, jobs=1 if how == "sequential" else 2)
    seconds = time.perf_counter() - started
    if how == "ray":
        ray.shutdown()
    if result.exit_code:
        raise SystemExit(f"{how}: exit {result.exit_code}: {[r.error for r in result.results if r.error][:3]}")
    sizes = {f"{r.model}/{r.label}": r.artifact.get("size_bytes") for r in result.results}
    return {"seconds": seconds, "start_seconds": start_seconds, "sizes": sizes, "variants": len(result.results)}


def measure(config: Path, output_dir: Path, how: str, cpus: int) -> dict[str, Any]:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(REPOSITORY), os.environ.get("PYTHONPATH")])))
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    started = time.perf_counter()
    command = [sys.executable, __file__, "--child", how, "--config", str(config), "--out", str(output_dir)]
    done = subprocess.run([*command, "--cpus", str(cpus)], capture_output=True, text=True, env=env)
    process_seconds = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"{how} exited {done.returncode}:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1]) | {"process_seconds": process_seconds}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--copies", type=int, default=3, help="copies of each sample model (2 models each)")
    parser.add_argument("--cpus", type=int, default=2, help="CPUs of the local Ray cluster")
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder and print its path")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--config", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(child(args.config, args.out, args.child, args.cpus)))
        return 0

    workdir = Path(tempfile.mkdtemp(prefix="tflq-batch-scale-"))
    try:
        config = write_config(workdir, args.copies, per_variant=False)
        per_variant = write_config(workdir, args.copies, per_variant=True)
        load_before = os.getloadavg()
        runs = {
            "sequential (--jobs 1)": measure(config, workdir / "sequential", "sequential", args.cpus),
            "local --jobs 2": measure(config, workdir / "local2", "local2", args.cpus),
            f"ray, {args.cpus} CPUs, a task per model": measure(config, workdir / "ray", "ray", args.cpus),
            f"ray, {args.cpus} CPUs, a task per variant": measure(per_variant, workdir / "ray_v", "ray", args.cpus),
        }
        load_after = os.getloadavg()
        first = list(runs.values())
        if not first[0]["sizes"] == first[1]["sizes"] == first[2]["sizes"]:
            raise SystemExit("the runs made different files (sizes differ)")
        sequential = first[0]["seconds"]
        print(
            f"machine: {platform.machine()}, {os.cpu_count()} cores, load average {load_before[0]:.2f} before, "
            f"{load_after[0]:.2f} after; Python {platform.python_version()}"
        )
        print(f"batch: {2 * args.copies} models ({args.copies} copies of digits_cnn and digits_gru), "
              f"{first[0]['variants']} variants ({', '.join(MODES)} each)")
        for name, run in runs.items():
            start = f"; cluster start {run['start_seconds']:.1f} s (not in the run)" if run["start_seconds"] else ""
            print(
                f"{name:34s} {run['seconds']:7.1f} s  ratio {run['seconds'] / sequential:.2f}  "
                f"(process {run['process_seconds']:.1f} s{start})"
            )
        if args.keep:
            print(f"kept: {workdir}")
        return 0
    finally:
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
