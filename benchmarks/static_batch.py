"""Benchmark: a dynamic batch dimension against ``--static-batch 1``: XNNPACK partitions and p50 latency.

Usage::

    python benchmarks/static_batch.py [--size 64] [--threads 1] [--repeat 3] [--json FILE]

What is measured, in one process: ``keras.applications.ConvNeXtTiny(weights=None, input_shape=(size, size, 3))``
(random weights, fixed seed) is saved once as ``.keras`` and converted to float32 twice by ``convert_model``: with
the default dynamic batch and with ``ModelOptions(static_batch=1)``. Both files are measured by the harness
(``tflq eval``'s code: each file in a child process, the latency protocol of ``benchmark_model``, batch of one,
``--threads`` threads), ``--repeat`` times alternating which goes first; the p50 ratio uses the median of each.
Reported: XNNPACK's delegated ops and partitions for each file, each p50, and static / dynamic.

The partition counts are a property of the file and the delegate (deterministic); the latency ratio depends on the
machine and how busy it is.

This file is not a test (pytest collects ``tests/`` only).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()

    import keras

    from tflq.convert.options import ConvertOptions
    from tflq.convert.session import convert_model
    from tflq.measure.harness import EvalSettings, evaluate
    from tflq.model.options import ModelOptions

    with tempfile.TemporaryDirectory(prefix="tflq-static-batch-") as folder:
        work = Path(folder)
        keras.utils.set_random_seed(0)
        model = keras.applications.ConvNeXtTiny(weights=None, input_shape=(args.size, args.size, 3))
        source = work / "convnext_tiny.keras"
        model.save(source)
        paths = {}
        for label, batch in (("dynamic", None), ("static", 1)):
            options = ConvertOptions(model=ModelOptions(static_batch=batch))
            result = convert_model(source, work / label, options)
            assert result.ok, result
            paths[label] = str(result.artifacts[0].path)
        settings = EvalSettings(threads=args.threads)
        p50: dict[str, list[float]] = {label: [] for label in paths}
        delegation: dict[str, dict] = {}
        for round_ in range(args.repeat):
            order = list(paths) if round_ % 2 == 0 else list(reversed(paths))
            for label in order:
                (measurement,) = evaluate([paths[label]], settings=settings)
                row = measurement.to_dict()
                assert not row.get("error"), row
                p50[label].append(row["latency_ms"]["p50"])
                delegation[label] = row["xnnpack"]
    medians = {label: statistics.median(values) for label, values in p50.items()}
    figures = {
        "machine": f"{platform.machine()} {platform.processor() or ''}".strip(),
        "cpus": os.cpu_count(),
        "load_average": os.getloadavg()[0],
        "model": f"ConvNeXtTiny(weights=None, input_shape=({args.size}, {args.size}, 3))",
        "threads": args.threads,
        "repeat": args.repeat,
        "partitions": {label: delegation[label]["partitions"] for label in paths},
        "delegated_ops": {label: f"{d['delegated_ops']}/{d['total_ops']}" for label, d in delegation.items()},
        "p50_ms": {label: round(value, 2) for label, value in medians.items()},
        "p50_runs_ms": {label: [round(v, 2) for v in values] for label, values in p50.items()},
        "static_over_dynamic": round(medians["static"] / medians["dynamic"], 3),
    }
    text = json.dumps(figures, indent=2)
    print(text)
    if args.json:
        args.json.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
