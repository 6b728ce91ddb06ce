"""examples/Makefile: a model repository's recipe. Its rules follow the mode registry, a second make does nothing,
touching one input rebuilds only what depends on it, and a failed conversion leaves no target.

The fast tests use ``make -n`` and empty stand-in files (no TensorFlow); the slow ones run the real tflq, as
``sys.executable -m tflq.cli.app`` behind a wrapper script that logs every call.
"""
from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.sample_paths import SAMPLES
from tflq.modes import MODES, plan_variants

ROOT = SAMPLES.parent
EXAMPLES = ROOT / "examples"
MODEL_NAMES = ("digits_cnn", "digits_gru")

pytestmark = pytest.mark.skipif(shutil.which("make") is None, reason="GNU make is not installed")

REGISTRY_VARIANTS = [
    variant
    for mode in MODES.values()
    if not mode.needs_training and "recipe" not in mode.settings  # mode recipe needs the user's recipe file
    for variant in plan_variants([mode.name], list(mode.io_types))
]


def make_repo(root: Path) -> Path:
    """A model repository: the example Makefile and tflq.yaml, two sample models, calibration and test data."""
    (root / "models").mkdir(parents=True)
    (root / "data").mkdir()
    for name in ("Makefile", "tflq.yaml"):
        shutil.copy(EXAMPLES / name, root / name)
    for name in MODEL_NAMES:
        shutil.copy(SAMPLES / f"{name}.keras", root / "models" / f"{name}.keras")
    shutil.copy(SAMPLES / "digits_train.npz", root / "data" / "calib.npz")
    shutil.copy(SAMPLES / "digits_test.npz", root / "data" / "test.npz")
    wrapper = root / "bin" / "tflq"
    wrapper.parent.mkdir()
    wrapper.write_text(
        "#!/bin/sh\n"
        f"printf '%s\\n' \"$*\" >> {shlex.quote(str(root / 'tflq-calls.log'))}\n"
        f"PYTHONPATH={shlex.quote(str(ROOT))}${{PYTHONPATH:+:$PYTHONPATH}} "
        f"exec {shlex.quote(sys.executable)} -m tflq.cli.app \"$@\"\n"
    )
    wrapper.chmod(0o755)
    return root


def make(repo: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {key: value for key, value in os.environ.items() if key not in ("MAKEFLAGS", "MFLAGS", "MAKELEVEL", "MAKEOVERRIDES")}
    env["TF_CPP_MIN_LOG_LEVEL"] = "3"
    return subprocess.run(
        ["make", f"TFLQ={repo / 'bin' / 'tflq'}", *args], cwd=repo, env=env, capture_output=True, text=True, timeout=900
    )


def calls(repo: Path) -> list[str]:
    log = repo / "tflq-calls.log"
    return log.read_text().splitlines() if log.exists() else []


def mtimes(folder: Path) -> dict[str, int]:
    return {path.name: path.stat().st_mtime_ns for path in sorted(folder.glob("*.tflite"))}


def convert_commands(output: str) -> dict[str, list[str]]:
    """``make -n`` output -> {model file: [argv after 'convert', ...]} of the tflq convert lines."""
    found: dict[str, list[str]] = {}
    for line in output.splitlines():
        words = shlex.split(line)
        if len(words) > 2 and words[0].endswith("tflq") and words[1] == "convert":
            found.setdefault(words[2], []).append(" ".join(words[3:]))
    return found


def fake_build(repo: Path, variants: list[str]) -> None:
    """Empty stand-ins for every output, newer than every input: the state after a successful make."""
    (repo / "build").mkdir(exist_ok=True)
    inputs = [*repo.glob("models/*.keras"), *repo.glob("data/*.npz")]
    past = time.time() - 100
    for path in inputs:
        os.utime(path, (past, past))
    for model in MODEL_NAMES:
        for variant in variants:
            output = repo / "build" / f"{model}.{variant}.tflite"
            output.write_bytes(b"")
            os.utime(output, (past + 50, past + 50))


# ---------------------------------------------------------------------------------------------------------------
# Fast: make -n, no TensorFlow


@pytest.mark.parametrize("variant", REGISTRY_VARIANTS, ids=lambda variant: variant.label)
def test_every_registry_variant_has_a_rule_with_matching_flags(tmp_path, variant):
    repo = make_repo(tmp_path / "repo")
    result = make(repo, "-n", f"MODELS={MODEL_NAMES[0]}", f"VARIANTS={variant.label}")
    assert result.returncode == 0, result.stderr
    (command,) = convert_commands(result.stdout)[f"models/{MODEL_NAMES[0]}.keras"]
    words = command.split()
    modes = [words[i + 1] for i, word in enumerate(words) if word == "--mode"]
    io_types = [words[i + 1] for i, word in enumerate(words) if word == "--io-type"]
    assert [v.label for v in plan_variants(modes, io_types)] == [variant.label]  # tflq writes exactly the target
    assert ("--calib data/calib.npz" in command) == MODES[variant.mode].calibrated
    assert "-o build" in command


def test_a_variant_without_a_rule_is_an_error(tmp_path):
    repo = make_repo(tmp_path / "repo")
    result = make(repo, "-n", "VARIANTS=int4")
    assert result.returncode != 0
    assert "No rule to make target 'build/digits_cnn.int4.tflite'" in result.stderr


def test_dependencies_touching_an_input_rebuilds_only_its_dependants(tmp_path):
    repo = make_repo(tmp_path / "repo")
    labels = [variant.label for variant in REGISTRY_VARIANTS]
    variants = f"VARIANTS={' '.join(labels)}"
    fake_build(repo, labels)
    assert make(repo, "-q", variants).returncode == 0  # everything up to date
    assert "Nothing to be done for 'all'" in make(repo, variants).stdout
    assert not calls(repo)

    os.utime(repo / "models" / "digits_gru.keras")  # now: newer than the outputs
    rebuilt = convert_commands(make(repo, "-n", variants).stdout)
    assert list(rebuilt) == ["models/digits_gru.keras"] and len(rebuilt["models/digits_gru.keras"]) == len(labels)

    fake_build(repo, labels)
    os.utime(repo / "data" / "calib.npz")
    rebuilt = convert_commands(make(repo, "-n", variants).stdout)
    calibrated = [v for v in REGISTRY_VARIANTS if MODES[v.mode].calibrated]
    for model in MODEL_NAMES:
        assert len(rebuilt[f"models/{model}.keras"]) == len(calibrated)
        assert all("--calib" in command for command in rebuilt[f"models/{model}.keras"])


def test_no_models_warns(tmp_path):
    repo = make_repo(tmp_path / "repo")
    result = make(repo, "-n", "MODELS_DIR=nowhere")
    assert result.returncode == 0
    assert "no models: nowhere/*.keras matches nothing" in result.stderr
    batch_only = make(repo, "-n", "batch", "MODELS_DIR=nowhere")
    assert batch_only.returncode == 0 and "no models" not in batch_only.stderr
    assert "run tflq.yaml -o build/batch" in batch_only.stdout


# ---------------------------------------------------------------------------------------------------------------
# Slow: the real tflq


@pytest.mark.slow
def test_make_builds_then_does_nothing_then_rebuilds_only_the_touched_model(tmp_path):
    repo = make_repo(tmp_path / "repo")
    variants = "VARIANTS=float32 int8.int8"  # one plain and one calibrated variant with integer I/O
    first = make(repo, variants)
    assert first.returncode == 0, first.stderr
    built = mtimes(repo / "build")
    assert sorted(built) == sorted(f"{m}.{v}.tflite" for m in MODEL_NAMES for v in ("float32", "int8.int8"))
    assert all((repo / "build" / name).stat().st_size > 1000 for name in built)
    assert len(calls(repo)) == 4
    assert not list((repo / "build").glob(".*.tmp"))  # no temporary files left beside the outputs

    second = make(repo, variants)
    assert second.returncode == 0 and "Nothing to be done for 'all'" in second.stdout
    assert make(repo, "-q", variants).returncode == 0
    assert mtimes(repo / "build") == built and len(calls(repo)) == 4  # no tflq call, nothing rewritten

    time.sleep(0.05)  # a clear step past the outputs' timestamps
    os.utime(repo / "models" / "digits_cnn.keras")
    third = make(repo, variants)
    assert third.returncode == 0, third.stderr
    after = mtimes(repo / "build")
    changed = sorted(name for name in built if after[name] != built[name])
    assert changed == ["digits_cnn.float32.tflite", "digits_cnn.int8.int8.tflite"]
    new_calls = calls(repo)[4:]
    assert len(new_calls) == 2 and all(call.startswith("convert models/digits_cnn.keras") for call in new_calls)
    assert make(repo, "-q", variants).returncode == 0


@pytest.mark.slow
def test_a_failed_conversion_leaves_no_target_and_fails_make(tmp_path):
    repo = make_repo(tmp_path / "repo")
    args = ("MODELS=digits_cnn", "VARIANTS=float32")
    assert make(repo, *args).returncode == 0
    target = repo / "build" / "digits_cnn.float32.tflite"
    assert target.is_file()

    time.sleep(0.05)
    (repo / "models" / "digits_cnn.keras").write_bytes(b"not a keras archive")
    failed = make(repo, *args)
    assert failed.returncode != 0
    assert "Error:" in failed.stderr and "digits_cnn.keras" in failed.stderr
    assert not target.exists()  # the old output went with the failed rebuild: nothing stale passes for it
    assert not list((repo / "build").glob(".*.tmp"))
    assert make(repo, "-q", *args).returncode != 0  # still out of date


@pytest.mark.slow
def test_batch_target_runs_tflq_run_and_skips_when_unchanged(tmp_path):
    repo = make_repo(tmp_path / "repo")
    flags = "RUN_FLAGS=--only digits_cnn --modes float32,int8"
    first = make(repo, "batch", flags)
    assert first.returncode == 0, first.stderr
    report = (repo / "build" / "batch" / "report.md").read_text()
    assert "digits_cnn" in report and "int8" in report
    assert (repo / "build" / "batch" / "digits_cnn.int8.tflite").is_file()
    second = make(repo, "batch", flags)
    assert second.returncode == 0, second.stderr
    assert second.stderr.count("(up to date)") == 3  # float32, int8, int8.int8 (tflq.yaml's io_types)
    assert "converting" not in second.stderr and "measuring" not in second.stderr
    assert calls(repo) == ["run tflq.yaml -o build/batch --only digits_cnn --modes float32,int8"] * 2
