"""tflq run --executor ray on one local Ray cluster, started by this module on 127.0.0.1 only: the same rows, gates,
exit codes, notices, manifest and reports as the local executor; an unchanged rerun does nothing; a worker that dies
is retried, and one that always dies becomes its model's error rows while the other model finishes (issue 12)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from tests.batch_files import write_notices_batch
from tflq.batch.manifest import MANIFEST
from tflq.cli.app import main

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parent.parent
# Timings differ from run to run; everything else in a row must be the same on both executors (the output folder
# written as OUT).
TIMINGS = {"latency_ms", "convert_seconds"}


@pytest.fixture(scope="module")
def ray_cluster():
    os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"  # before Ray starts: its node binds to 127.0.0.1 only
    import ray

    from tflq.batch.ray_executor import start_local_cluster

    start_local_cluster(num_cpus=2)  # ray.init(num_cpus=2, include_dashboard=False) + the driver's sys.path
    try:
        nodes = ray.nodes()
        assert nodes and all(node["NodeManagerAddress"] == "127.0.0.1" for node in nodes), nodes
        assert ray.cluster_resources().get("CPU") == 2
        yield ray
    finally:
        ray.shutdown()


def write_config(folder: Path) -> Path:
    # Every float32 variant (39,688 B) fails the size gate: exit 3 on both executors.
    return write_notices_batch(folder, gates="{max_accuracy_drop: 5.0, max_size_bytes: 20000}")


def run(config: Path, *args: str, env: dict[str, str] | None = None):
    return CliRunner().invoke(main, ["run", str(config), "--json", *args], env=env, catch_exceptions=False)


def rows_of(result) -> dict[str, dict]:
    return {f"{row['model']}/{row['variant']}": row for row in json.loads(result.stdout)}


def stable(rows: dict[str, dict], output_dir: Path) -> dict[str, dict]:
    text = json.dumps({key: {k: v for k, v in row.items() if k not in TIMINGS} for key, row in rows.items()})
    return json.loads(text.replace(str(output_dir), "OUT"))


def mtimes(folder: Path) -> dict[str, int]:
    return {p.name: p.stat().st_mtime_ns for p in folder.iterdir()}


def test_ray_gives_the_local_rows_gates_notices_and_manifest_and_an_unchanged_rerun_does_nothing(tmp_path, ray_cluster):
    config = write_config(tmp_path)
    local = run(config, "-o", str(tmp_path / "local"), "--jobs", "2")
    on_ray = run(config, "-o", str(tmp_path / "ray"), "--executor", "ray")
    for result in (local, on_ray):
        assert result.exit_code == 3, result.output
        assert "2 variant(s) failed a gate: legacy float32, cnn float32" in result.output
    local_rows, ray_rows = rows_of(local), rows_of(on_ray)
    assert set(ray_rows) == {"legacy/float32", "legacy/int8", "cnn/float32", "cnn/int8"}
    # sizes, sha256, accuracy, agreement, gates, notices, delegation, paths in the output folder
    assert stable(ray_rows, tmp_path / "ray") == stable(local_rows, tmp_path / "local")
    for row in ray_rows.values():
        assert row["status"] == "ok" and not row["up_to_date"]
        assert Path(row["path"]).parent == tmp_path / "ray"
        assert Path(row["path"]).stat().st_size == row["size_bytes"]
        assert row["latency_ms"]["p50"] > 0
    random_warning = "RANDOM CALIBRATION DATA: 8 uniform random samples"
    assert any(random_warning in warning for warning in ray_rows["legacy/int8"]["warnings"])
    assert f"WARNING: {random_warning}" in on_ray.stderr, on_ray.stderr  # the worker's records reach the terminal
    assert "digits_cnn.h5: legacy Keras 2 file loaded with tf_keras" in on_ray.stderr

    local_manifest = json.loads((tmp_path / "local" / MANIFEST).read_text())["jobs"]
    ray_manifest = json.loads((tmp_path / "ray" / MANIFEST).read_text())["jobs"]
    assert set(ray_manifest) == set(local_manifest) == set(ray_rows)
    for key, entry in ray_manifest.items():
        assert (entry["key"], entry["measure_key"]) == (local_manifest[key]["key"], local_manifest[key]["measure_key"])
        assert entry["artifact"]["sha256"] == ray_rows[key]["sha256"]
    for name in ("report.md", "report.json", "report.csv", "report.html", "pareto.png"):
        assert (tmp_path / "ray" / name).stat().st_size > 0
    assert "| cnn | int8 |" in (tmp_path / "ray" / "report.md").read_text()

    before, manifest_bytes = mtimes(tmp_path / "ray"), (tmp_path / "ray" / MANIFEST).read_bytes()
    again = run(config, "-o", str(tmp_path / "ray"), "--executor", "ray")
    assert again.exit_code == 3, again.output
    assert all(row["up_to_date"] for row in rows_of(again).values())
    assert rows_of(again)["cnn/int8"]["latency_ms"] == ray_rows["cnn/int8"]["latency_ms"]  # reused, not re-measured
    changed = {name for name, stamp in mtimes(tmp_path / "ray").items() if before.get(name) != stamp}
    assert changed <= {"report.md", "report.json", "report.csv", "report.html", "pareto.png", ".tflq.lock"}, changed
    assert (tmp_path / "ray" / MANIFEST).read_bytes() == manifest_bytes


def test_progress_events_reach_the_driver_while_the_job_runs(tmp_path, ray_cluster):
    """The live view follows a Ray job as it goes: its phase events arrive while it runs, not replayed when it ends
    (replayed, a model's first phase and its last result arrive within milliseconds of each other)."""
    from tflq.batch.config import load_config
    from tflq.batch.executors import ExecutorOptions
    from tflq.batch.run import run_batch

    arrivals: list[tuple[float, str, str]] = []

    def record(kind: str, model: str, label: str, text: str) -> None:
        arrivals.append((time.monotonic(), kind, model))

    result = run_batch(load_config(write_config(tmp_path)), on_event=record, executor=ExecutorOptions(executor="ray"))
    assert {row.status for row in result.results} == {"ok"}
    for model in ("legacy", "cnn"):
        phases = [at for at, kind, name in arrivals if kind == "phase" and name == model]
        results = [at for at, kind, name in arrivals if kind == "done" and name == model]
        assert phases and len(results) == 2, arrivals
        # a digits CNN job (export, calibrate, convert, verify, measure two variants) takes seconds
        assert max(results) - min(phases) > 0.5, (model, max(results) - min(phases))


def test_a_worker_killed_once_is_retried_and_one_that_always_dies_is_its_models_error_rows(tmp_path, ray_cluster):
    config = write_config(tmp_path)
    marker = tmp_path / "killed-once"
    hooks = {"TFLQ_TEST_KILL_RAY_WORKER": f"cnn:{marker},legacy"}
    result = run(config, "--executor", "ray", "--modes", "float32", "--ray-retries", "1", env=hooks)
    assert result.exit_code == 1, result.output
    rows = rows_of(result)
    assert marker.exists()  # cnn's first worker died (SIGKILL) ...
    assert rows["cnn/float32"]["status"] == "ok" and rows["cnn/float32"]["size_bytes"] == 39688  # ... its retry ran
    error = rows["legacy/float32"]["error"]
    assert rows["legacy/float32"]["status"] == "error"
    assert error.startswith("the Ray worker running legacy died (WorkerCrashedError, 2 attempt(s)): "), error
    assert not Path(rows["legacy/float32"]["path"]).exists()
    assert "1 job(s) failed: legacy float32" in result.output
    assert set(json.loads((tmp_path / "out" / MANIFEST).read_text())["jobs"]) == {"cnn/float32"}


def test_a_crashing_conversion_child_fails_its_models_rows_on_ray_as_locally(tmp_path, ray_cluster):
    config = write_config(tmp_path)
    hook = {"TFLQ_TEST_ABORT_CHILD": "legacy"}
    result = run(config, "--executor", "ray", "--jobs", "1", "--modes", "float32,dynamic", env=hook)  # 1 in flight
    assert result.exit_code == 1, result.output
    rows = rows_of(result)
    assert rows["cnn/float32"]["status"] == rows["cnn/dynamic"]["status"] == "ok"
    for key in ("legacy/float32", "legacy/dynamic"):
        assert rows[key]["error"] == "conversion failed: legacy: the child process running it died (SIGABRT)"
        assert not Path(rows[key]["path"]).exists()
    assert "2 job(s) failed: legacy float32, legacy dynamic" in result.output


def test_ray_only_flags_without_ray_and_a_second_address_are_usage_errors(tmp_path, ray_cluster):
    config = write_config(tmp_path)
    local = CliRunner().invoke(main, ["run", str(config), "--address", "10.0.0.1:6379"], catch_exceptions=False)
    assert local.exit_code == 2, local.output
    assert "Error: --address: only with --executor ray (the run is local)" in local.output
    other = run(config, "--executor", "ray", "--address", "10.0.0.1:6379")  # never contacted: already connected
    assert other.exit_code == 2, other.output
    assert "--address 10.0.0.1:6379: this process is already connected to Ray at 127.0.0.1:" in other.output
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").glob("*.tflite"))


def test_help_and_a_local_run_do_not_import_ray(tmp_path):
    config = write_config(tmp_path)
    script = (
        "import sys\n"
        "from tflq.cli.app import main\n"
        "for args in (['--help'], ['run', '--help'], ['run', sys.argv[1], '--modes', 'float32', '--only', 'cnn']):\n"
        "    try:\n"
        "        main(args)\n"
        "    except SystemExit as stop:\n"
        "        assert stop.code in (0, 3), (args, stop.code)\n"
        "    assert 'ray' not in sys.modules, args\n"
        "print('no ray')\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script, str(config)], cwd=REPO, capture_output=True, text=True, timeout=300,
        env=os.environ | {"PYTHONPATH": str(REPO)},
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().endswith("no ray")


def test_a_job_bigger_than_the_local_cluster_is_a_usage_error_not_a_wait(ray_cluster):
    from tflq.batch.executors import ExecutorOptions
    from tflq.batch.ray_executor import _check_fits
    from tflq.errors import UsageError

    resources = ray_cluster.cluster_resources()  # 2 CPUs, no GPU
    _check_fits(ExecutorOptions(executor="ray", cpus=2), resources, training=False)
    _check_fits(ExecutorOptions(executor="ray", training_gpus=1), resources, training=False)  # no job trains
    with pytest.raises(UsageError, match=r"^--ray-cpus 3: the local Ray cluster has 2 CPU\(s\)$"):
        _check_fits(ExecutorOptions(executor="ray", cpus=3), resources, training=False)
    with pytest.raises(UsageError, match=r"^--ray-training-gpus 1: the local Ray cluster has 0 GPU\(s\)$"):
        _check_fits(ExecutorOptions(executor="ray", training_gpus=1), resources, training=True)
