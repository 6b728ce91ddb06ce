"""tflq run: caching, isolation, gates, exit codes and reports, on the shipped sample models."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from tests.sample_paths import SAMPLES
from tflq.cli.app import main

pytestmark = pytest.mark.slow


def write_config(folder: Path, *, calib: Path, models: str, gates: str = "{max_accuracy_drop: 2.0}") -> Path:
    path = folder / "batch.yaml"
    path.write_text(
        f"""\
output_dir: out
defaults:
  modes: [float32, dynamic, int8]
  io_types: [float32, int8]
  calibration: {{data: {calib}, samples: 40}}
  evaluation: {{data: {SAMPLES}/digits_test.npz, samples: 120}}
  latency: {{runs: 5, warmup_runs: 1}}
  gates: {gates}
models:
{models}"""
    )
    return path


CNN = f"  - name: cnn\n    path: {SAMPLES}/digits_cnn.keras\n"
GRU = f"  - name: gru\n    path: {SAMPLES}/digits_gru.keras\n    modes: [float32, int8]\n"


def run(config: Path, *args: str, env: dict[str, str] | None = None):
    return CliRunner().invoke(main, ["run", str(config), "--json", *args], env=env, catch_exceptions=False)


def rows_of(result) -> dict[str, dict]:
    return {f"{row['model']}/{row['variant']}": row for row in json.loads(result.stdout)}


@pytest.fixture()
def calib(tmp_path: Path) -> Path:
    path = tmp_path / "calib.npz"
    with np.load(SAMPLES / "digits_train.npz") as archive:
        np.savez(path, x=archive["x"][:60])
    return path


def mtimes(folder: Path) -> dict[str, int]:
    return {p.name: p.stat().st_mtime_ns for p in folder.glob("*.tflite")}


def test_first_run_builds_second_run_skips_and_changes_rerun_only_what_they_affect(tmp_path, calib):
    config = write_config(tmp_path, calib=calib, models=CNN + GRU)
    first = run(config)
    assert first.exit_code == 0, first.output
    rows = rows_of(first)
    assert set(rows) == {"cnn/float32", "cnn/dynamic", "cnn/int8", "cnn/int8.int8", "gru/float32", "gru/int8", "gru/int8.int8"}
    assert not any(row["up_to_date"] for row in rows.values())
    for row in rows.values():
        assert row["status"] == "ok" and row["gate"] == "pass"
        assert Path(row["path"]).stat().st_size == row["size_bytes"]
        assert 0.9 < row["accuracy"]["top1"] <= 1.0
        assert row["latency_ms"]["p50"] > 0
    assert rows["cnn/float32"]["accuracy_drop"] == 0.0
    out = tmp_path / "out"
    for report in ("report.md", "report.json", "report.csv", "report.html", "pareto.png", ".tflq-manifest.json"):
        assert (out / report).stat().st_size > 0
    markdown = (out / "report.md").read_text()
    assert "| cnn | int8.int8 |" in markdown and "| gru | float32 |" in markdown
    assert json.loads((out / "report.json").read_text())[0]["model"] == "cnn"
    before = mtimes(out)

    second = run(config)
    assert second.exit_code == 0, second.output
    assert all(row["up_to_date"] for row in rows_of(second).values())
    assert mtimes(out) == before
    # previous figures are reused, not re-measured
    assert rows_of(second)["cnn/int8"]["latency_ms"] == rows["cnn/int8"]["latency_ms"]

    # touching a file without changing it is not a change; changing the calibration data reruns the int8 jobs only
    calib.touch()
    assert all(row["up_to_date"] for row in rows_of(run(config)).values())
    with np.load(SAMPLES / "digits_train.npz") as archive:
        np.savez(calib, x=archive["x"][60:120])
    third = rows_of(run(config))
    rebuilt = {key for key, row in third.items() if not row["up_to_date"]}
    assert {"cnn/int8", "cnn/int8.int8", "gru/int8", "gru/int8.int8"} <= rebuilt
    assert not {"cnn/float32", "cnn/dynamic", "gru/float32"} & {k for k in rebuilt if mtimes(out)[Path(third[k]["path"]).name] != before[Path(third[k]["path"]).name]}

    # a changed setting reruns the jobs it touches; --force reruns everything
    config.write_text(config.read_text().replace("modes: [float32, int8]", "modes: [float32, int8]\n    per_tensor: true"))
    fourth = rows_of(run(config, "--only", "gru"))
    assert set(fourth) == {"gru/float32", "gru/int8", "gru/int8.int8"}
    assert fourth["gru/float32"]["up_to_date"] and not fourth["gru/int8"]["up_to_date"]
    forced = rows_of(run(config, "--force", "--only", "cnn"))
    assert not any(row["up_to_date"] for row in forced.values())


def test_a_crashing_model_fails_its_jobs_and_the_batch_goes_on(tmp_path, calib):
    config = write_config(tmp_path, calib=calib, models=CNN + GRU)
    result = run(config, "--jobs", "2", env={"TFLQ_TEST_ABORT_CHILD": "gru"})
    assert result.exit_code == 1, result.output
    rows = rows_of(result)
    assert all(rows[key]["status"] == "ok" for key in rows if key.startswith("cnn/"))
    for key in ("gru/float32", "gru/int8", "gru/int8.int8"):
        assert rows[key]["status"] == "error"
        assert rows[key]["error"] == "conversion failed: gru: the child process running it died (SIGABRT)"
        assert not Path(rows[key]["path"]).exists()
    assert "3 job(s) failed: gru float32, gru int8, gru int8.int8" in result.output


def test_gates_fail_with_exit_3_and_are_marked(tmp_path, calib):
    config = write_config(tmp_path, calib=calib, models=CNN, gates="{max_accuracy_drop: 2.0, max_size_bytes: 20000}")
    result = run(config)
    assert result.exit_code == 3, result.output
    rows = rows_of(result)
    assert rows["cnn/float32"]["gate"] == "fail"
    assert any("size 39," in failure for failure in rows["cnn/float32"]["gate_failures"])
    assert rows["cnn/int8"]["gate"] == "pass"
    assert "failed a gate: cnn float32" in result.output
    markdown = (tmp_path / "out" / "report.md").read_text()
    assert "FAIL: size" in markdown


def test_accuracy_drop_gate_catches_a_collapsed_variant(tmp_path, calib):
    # the GRU loses most of its accuracy in 16x8 (measured 0.24 top-1): the gate must catch it
    models = f"  - name: gru\n    path: {SAMPLES}/digits_gru.keras\n    modes: [float32, 16x8]\n"
    result = run(write_config(tmp_path, calib=calib, models=models))
    assert result.exit_code == 3, result.output
    row = rows_of(result)["gru/16x8"]
    assert row["accuracy_drop"] > 2.0
    assert any("accuracy drop" in failure for failure in row["gate_failures"])


def test_invalid_config_converts_nothing(tmp_path, calib):
    config = write_config(tmp_path, calib=calib, models=CNN.replace("path:", "pth:"))
    result = CliRunner().invoke(main, ["run", str(config)], catch_exceptions=False)
    assert result.exit_code == 2
    assert "unknown key 'pth'" in result.output and "did you mean 'path'" in result.output
    assert not (tmp_path / "out").exists()


def test_modes_override_and_unknown_only(tmp_path, calib):
    config = write_config(tmp_path, calib=calib, models=CNN)
    result = run(config, "--modes", "float32,float16")
    assert result.exit_code == 0, result.output
    assert set(rows_of(result)) == {"cnn/float32", "cnn/float16"}
    bad = CliRunner().invoke(main, ["run", str(config), "--only", "cnm"], catch_exceptions=False)
    assert bad.exit_code == 2 and "did you mean 'cnn'" in bad.output


def test_auto_and_skip_layers_in_a_batch(tmp_path, calib):
    models = CNN + "    auto: {max_drop: 1.0}\n    skip_layers: [logits]\n"
    config = write_config(tmp_path, calib=calib, models=models)
    result = run(config)
    assert result.exit_code == 0, result.output
    rows = rows_of(result)
    assert rows["cnn/int8"]["float_layers"] == ["logits"]
    assert rows["cnn/int8.int8"]["float_layers"] == ["logits"]
    auto = next(row for key, row in rows.items() if key.startswith("cnn/auto"))
    assert auto["variant"].startswith("auto: ") and auto["gate"] == "pass"
    assert Path(auto["path"]).name == "cnn.auto.tflite" and Path(auto["path"]).exists()
    assert auto["accuracy_drop"] <= 1.0
    again = rows_of(run(config))
    assert all(row["up_to_date"] for row in again.values())
    forced = rows_of(run(config, "--force"))
    assert not any(row["up_to_date"] for row in forced.values())
