"""Benchmark: the two engines (TFLite converter, LiteRT Quantizer) on the modes both make, in one run.

Usage::

    python benchmarks/engines.py [--samples 100] [--eval-samples 64] [--size 96] [--alpha 0.35] [--json FILE]

What is measured, in one run, on two models: the digits CNN (``sample_models/digits_cnn.keras``, calibrated on
``digits_train.npz``, evaluated on the 360 labelled images of ``digits_test.npz``) and MobileNetV2 (alpha 0.35,
96x96, ``weights=None``, seed 0, logits, BatchNormalization statistics re-estimated on one batch exactly as
``benchmarks/sweep.py`` makes it; calibrated on N uniform random images in [-1, 1], seed 0, evaluated on other
random images: agreement with its float32 variant, since random weights have no accuracy):

* **engines**: modes float16, dynamic, int8 and 16x8, with ``--engine converter`` and with ``--engine
  litert-quantizer``: conversion time, size, top-1 accuracy (digits) and agreement with float32 (top-1 agreement,
  SQNR, max abs difference of the outputs), p50 latency.
* **qconfig**: int8 on LiteRT Quantizer with one setting changed at a time from tflq's defaults (asymmetric
  activations, weight range estimator min-max, activation ranges min-max): ``--activation-range moving-average``
  (LiteRT Quantizer's own default), ``--symmetric``, ``--range-estimator mse``, ``--range-estimator octav``: the
  same figures.
* **int4**: modes int8-weights and int4-weights (LiteRT Quantizer weight-only): size ratio int4/int8 (the issue asks
  for at most 0.75x on MobileNetV2), accuracy on the digits CNN, and which weight tensors stay 8-bit or float.

Each configuration runs in its own fresh child process (this script with a hidden ``--child``), through tflq's own
library calls (``convert_model`` then ``evaluate_artifacts``, what ``tflq convert --eval`` does), so no child
profits from another's warm caches. Conversion time of a variant: its build (``Artifact.seconds``), plus the
share it needs of what the session makes once per model: the one calibration (converter int8 calibrates once in the
session; converter 16x8 and every LiteRT Quantizer static mode calibrate inside their build) and, for LiteRT
Quantizer, the float32 conversion it starts from (the float32 variant's build). The SavedModel export (both
engines) is left out of every variant. Latency: tflq's protocol (``EvalSettings``: 1 thread, XNNPACK, at least 50
runs and 1 s, p50). Latency on a shared machine is noisy: compare the engines' p50 within one run only.

Exit status 1 when a variant fails, or the int4/int8 weight-only size ratio on MobileNetV2 is above 0.75, or the
int4 weight-only accuracy on the digits CNN is more than 1 point below float32.

This file is not a test (pytest collects ``tests/`` only).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))  # benchmark the tflq next to this script, not whatever is installed
sys.path.insert(0, str(Path(__file__).resolve().parent))
import sweep  # noqa: E402  (benchmarks/sweep.py: the MobileNetV2 preparation and the child runner)

SAMPLES = REPO / "sample_models"
BOTH = ("float16", "dynamic", "int8", "16x8")
ENGINES = ("converter", "litert-quantizer")
# int8 on LiteRT Quantizer, each setting changed alone from tflq's defaults (asymmetric, min-max, min-max)
QCONFIGS = (
    {"activation_range": "moving-average"},
    {"symmetric": True},
    {"range_estimator": "mse"},
    {"range_estimator": "octav"},
)
QCONFIG_KEYS = ("symmetric", "range_estimator", "activation_range")
MAX_INT4_RATIO = 0.75
MAX_INT4_DROP = 0.01


# --------------------------------------------------------------------------------------------------- children


def child_run(config: dict[str, Any]) -> dict[str, Any]:
    """Convert and measure one configuration (``tflq convert --eval`` as library calls)."""
    sweep._child_imports()
    from tflq.convert.session import ConvertOptions, convert_model
    from tflq.measure.harness import evaluate_artifacts
    from tflq.measure.settings import EvalSettings
    from tflq.modes import MODES

    options = ConvertOptions(
        modes=tuple(config["modes"]),
        calibration=config["calibration"],
        calibration_samples=config["samples"],
        engine=config.get("engine"),
        symmetric=config.get("symmetric", False),
        range_estimator=config.get("range_estimator", "min-max"),
        activation_range=config.get("activation_range", "min-max"),
    )
    out = Path(config["out"])
    result = convert_model(Path(config["model"]), out, options, name="model")
    float_seconds = next((a.seconds for a in result.artifacts if a.mode == "float32"), 0.0)
    paths = [str(artifact.path) for artifact in result.artifacts if artifact.ok]
    settings = EvalSettings(threads=1, runs=50, min_seconds=1.0, warmup_runs=5)
    measured = {m.tflite_path: m for m in evaluate_artifacts(paths, config["model"], data=config["eval"],
                                                             settings=settings)}
    rows = []
    for artifact in result.artifacts:
        mode = MODES[artifact.mode]
        engine = mode.engine_for(options)
        seconds = artifact.seconds
        if engine == "litert-quantizer" and artifact.mode != "float32":
            seconds += float_seconds  # the float32 conversion it starts from
        if engine == "converter" and artifact.mode == "int8":
            seconds += result.calibration_seconds  # the session's one calibration
        row: dict[str, Any] = {
            "mode": artifact.mode, "engine": engine, "status": artifact.status, "error": artifact.error,
            "build_seconds": artifact.seconds, "convert_seconds": seconds, "size_bytes": artifact.size_bytes,
            "float_ops": list(artifact.float_ops),
        }
        measurement = measured.get(str(artifact.path))
        if measurement is not None:
            data = measurement.to_dict()
            row["p50_ms"] = (data.get("latency_ms") or {}).get("p50")
            row["accuracy"] = next(iter((data.get("accuracy") or {}).values()), None)
            row["agreement"] = next(iter((data.get("agreement") or {}).values()), None)
            row["measure_error"] = measurement.error
        if artifact.ok and artifact.mode in ("int8-weights", "int4-weights"):
            row["weights"] = weight_tensors(str(artifact.path))
        rows.append(row)
    return {"export_seconds": result.export_seconds, "calibration_seconds": result.calibration_seconds,
            "variants": rows}


def weight_tensors(tflite_path: str) -> dict[str, Any]:
    """Bytes of constant tensors by dtype, and which op types consume each dtype's tensors."""
    from ai_edge_litert import schema_py_generated as schema

    model = schema.ModelT.InitFromPackedBuf(Path(tflite_path).read_bytes(), 0)
    names = {value: name for name, value in vars(schema.TensorType).items() if not name.startswith("_")}
    ops = {value: name for name, value in vars(schema.BuiltinOperator).items() if not name.startswith("_")}
    by_dtype: dict[str, dict[str, Any]] = {}
    for subgraph in model.subgraphs:
        consumers: dict[int, set[str]] = {}
        for op in subgraph.operators:
            code = model.operatorCodes[op.opcodeIndex]
            op_name = ops.get(max(code.builtinCode, code.deprecatedBuiltinCode), "?")
            for index in op.inputs:
                if index >= 0:
                    consumers.setdefault(index, set()).add(op_name)
        for index, tensor in enumerate(subgraph.tensors):
            buffer = model.buffers[tensor.buffer] if tensor.buffer < len(model.buffers) else None
            data = buffer.data if buffer is not None else None
            size = len(data) if data is not None else int(getattr(buffer, "size", 0) or 0)
            if not size:
                continue
            entry = by_dtype.setdefault(names.get(tensor.type, str(tensor.type)).lower(),
                                        {"tensors": 0, "bytes": 0, "consumers": {}})
            entry["tensors"] += 1
            entry["bytes"] += size
            for op_name in consumers.get(index, {"(none)"}):
                entry["consumers"][op_name] = entry["consumers"].get(op_name, 0) + 1
    return by_dtype


# ----------------------------------------------------------------------------------------------------- parent


def plan(models: dict[str, dict[str, str]], samples: int, work: Path) -> list[dict[str, Any]]:
    """Every configuration: both engines, the qconfig grid on int8, the weight-only pair."""
    configs = []
    for model_name, files in models.items():
        base = {"model": files["model"], "calibration": files["calibration"], "eval": files["eval"],
                "samples": samples, "model_name": model_name}
        for engine in ENGINES:
            extra = ("int8-weights", "int4-weights") if engine == "litert-quantizer" else ()
            configs.append({**base, "kind": "engines", "engine": engine, "modes": ["float32", *BOTH, *extra]})
        for qconfig in QCONFIGS:  # the defaults are the litert-quantizer engine run above
            configs.append({**base, "kind": "qconfig", "engine": "litert-quantizer", "modes": ["float32", "int8"],
                            **qconfig})
    for number, config in enumerate(configs):
        config["out"] = str(work / f"run{number}")
    return configs


def prepare(work: Path, size: int, alpha: float, samples: int, eval_samples: int) -> dict[str, dict[str, str]]:
    mobilenet = work / "mobilenet.keras"
    log = work / "prepare.log"
    run = _run_child(["--child", "prepare", str(mobilenet), str(size), str(alpha)], log)
    if run["returncode"] != 0:
        sweep._fail_child("prepare", log, run["returncode"])
    rng = np.random.default_rng(0)
    np.savez(work / "calib.npz", x=rng.uniform(-1, 1, (samples, size, size, 3)).astype(np.float32))
    np.savez(work / "eval.npz", x=rng.uniform(-1, 1, (eval_samples, size, size, 3)).astype(np.float32))
    return {
        "digits_cnn": {"model": str(SAMPLES / "digits_cnn.keras"), "calibration": str(SAMPLES / "digits_train.npz"),
                       "eval": str(SAMPLES / "digits_test.npz")},
        "mobilenet_v2": {"model": str(mobilenet), "calibration": str(work / "calib.npz"),
                         "eval": str(work / "eval.npz")},
    }


def run_config(config: dict[str, Any]) -> dict[str, Any]:
    out = Path(config["out"])
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.json").write_text(json.dumps(config))
    log = out / "child.log"
    run = _run_child(["--child", "run", str(out / "config.json")], log)
    if run["returncode"] != 0:
        sweep._fail_child(f"{config['model_name']} {config['kind']}", log, run["returncode"])
    return {**config, **json.loads((out / "result.json").read_text()), "process_seconds": run["process_seconds"]}


def _run_child(argv: list[str], log_path: Path) -> dict[str, Any]:
    """sweep.run_child, but running this script."""
    import subprocess
    import time

    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", PYTHONPATH=os.pathsep.join(
        [str(REPO)] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    ))
    start = time.perf_counter()
    with open(log_path, "wb") as log:
        process = subprocess.run([sys.executable, __file__, *argv], stdout=log, stderr=subprocess.STDOUT, env=env,
                                 check=False)
    return {"process_seconds": time.perf_counter() - start, "returncode": process.returncode}


def _fmt(value: Any, spec: str, missing: str = "-") -> str:
    return format(value, spec) if isinstance(value, (int, float)) else missing


def print_report(result: dict[str, Any]) -> list[str]:
    """Print the tables; return the problems (exit 1 when any)."""
    problems = []
    setup = result["setup"]
    print(f"\n{setup['machine']}; {setup['versions']}; {setup['samples']} calibration samples")
    header = (f"  {'mode':<14}{'engine':<18}{'qconfig':<24}{'convert s':>10}{'size B':>10}"
              f"{'top-1':>8}{'agree':>8}{'SQNR dB':>9}{'max|d|':>9}{'p50 ms':>9}")
    for model_name in ("digits_cnn", "mobilenet_v2"):
        print(f"\n{model_name}\n{header}")
        for config in result["configs"]:
            if config["model_name"] != model_name:
                continue
            for row in config["variants"]:
                if row["mode"] == "float32" and config["kind"] != "engines":
                    continue
                if row["status"] != "ok":
                    problems.append(f"{model_name} {row['mode']} on {row['engine']}: {row['error']}")
                agreement = row.get("agreement") or {}
                accuracy = row.get("accuracy") or {}
                qconfig = ", ".join(f"{key}={config[key]}" for key in QCONFIG_KEYS if key in config)
                engine = row["engine"] if row["mode"] != "float32" else f"{row['engine']} run"
                print(f"  {row['mode']:<14}{engine:<18}{qconfig or '-':<24}"
                      f"{_fmt(row['convert_seconds'], '10.2f')}{_fmt(row['size_bytes'], '10,d')}"
                      f"{_fmt(accuracy.get('top1'), '8.2%') if accuracy else '-':>8}"
                      f"{_fmt(agreement.get('top1'), '8.2%') if agreement else '-':>8}"
                      f"{_fmt(agreement.get('sqnr_db'), '9.1f'):>9}{_fmt(agreement.get('max_abs_error'), '9.4f'):>9}"
                      f"{_fmt(row.get('p50_ms'), '9.3f'):>9}")
    for model_name, pair in result["int4"].items():
        print(f"\n{model_name}: int4-weights {pair['int4_bytes']:,} B / int8-weights {pair['int8_bytes']:,} B "
              f"= {pair['ratio']:.3f}x; top-1 float32 {_fmt(pair['float32_top1'], '.2%')}, "
              f"int8-weights {_fmt(pair['int8_top1'], '.2%')}, "
              f"int4-weights {_fmt(pair['int4_top1'], '.2%')}")
        for mode in ("int8-weights", "int4-weights"):
            for dtype, entry in sorted(pair["weights"][mode].items()):
                consumers = ", ".join(f"{op} {count}" for op, count in sorted(entry["consumers"].items()))
                tensors = f"{entry['tensors']:>4} tensors {entry['bytes']:>9,} B"
                print(f"  {mode:<13} {dtype:<8} {tensors}  read by {consumers}")
        if model_name == "mobilenet_v2" and pair["ratio"] > MAX_INT4_RATIO:
            problems.append(f"int4/int8 weight-only size ratio {pair['ratio']:.3f} > {MAX_INT4_RATIO}")
        if model_name == "digits_cnn" and pair["float32_top1"] - pair["int4_top1"] > MAX_INT4_DROP:
            problems.append(f"int4 weight-only drops {pair['float32_top1'] - pair['int4_top1']:.2%} from float32")
    return problems


def int4_story(configs: list[dict[str, Any]]) -> dict[str, Any]:
    story = {}
    for config in configs:
        if config["kind"] != "engines" or config["engine"] != "litert-quantizer":
            continue
        rows = {row["mode"]: row for row in config["variants"]}
        int8, int4, float32 = rows["int8-weights"], rows["int4-weights"], rows["float32"]
        story[config["model_name"]] = {
            "int8_bytes": int8["size_bytes"], "int4_bytes": int4["size_bytes"],
            "ratio": int4["size_bytes"] / int8["size_bytes"],
            "int8_top1": (int8.get("accuracy") or {}).get("top1"),
            "int4_top1": (int4.get("accuracy") or {}).get("top1"),
            "float32_top1": (float32.get("accuracy") or {}).get("top1"),
            "weights": {"int8-weights": int8.get("weights", {}), "int4-weights": int4.get("weights", {})},
        }
    return story


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=100, help="calibration samples")
    parser.add_argument("--eval-samples", type=int, default=64, help="MobileNetV2 random evaluation images")
    parser.add_argument("--size", type=int, default=96)
    parser.add_argument("--alpha", type=float, default=0.35)
    parser.add_argument("--json", type=Path, help="write the raw results here")
    parser.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        kind, *rest = args.child
        if kind == "prepare":
            sweep.child_prepare(Path(rest[0]), int(rest[1]), float(rest[2]))
            return 0
        config_path = Path(rest[0])
        result = child_run(json.loads(config_path.read_text()))
        (config_path.parent / "result.json").write_text(json.dumps(result))
        return 0
    with tempfile.TemporaryDirectory(prefix="tflq-engines-") as temp:
        work = Path(temp)
        models = prepare(work, args.size, args.alpha, args.samples, args.eval_samples)
        configs = []
        for config in plan(models, args.samples, work):
            qconfig = {key: config[key] for key in QCONFIG_KEYS if key in config}
            print(f"{config['model_name']}: {config['kind']} {config.get('engine')} {qconfig or ''}", flush=True)
            configs.append(run_config(config))
        result = {
            "setup": {"samples": args.samples, "eval_samples": args.eval_samples, "size": args.size,
                      "alpha": args.alpha, "machine": f"{platform.machine()} {platform.processor() or ''} "
                      f"{os.cpu_count()} CPUs, Python {platform.python_version()}".replace("  ", " "),
                      "versions": sweep._tf_version()},
            "configs": configs,
        }
        result["int4"] = int4_story(configs)
        problems = print_report(result)
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
    for problem in problems:
        print(f"FAIL: {problem}")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
