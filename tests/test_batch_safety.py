"""tflq run stays inside its output folder, locks it, keeps its manifest through filtered runs and hand edits, and
shows every notice its child processes log (issue 9)."""
from __future__ import annotations

import dataclasses
import fcntl
import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from tests.cli_helpers import assert_usage_error
from tests.batch_files import write_notices_batch
from tests.sample_paths import SAMPLES
from tflq.batch.config import load_config
from tflq.batch.manifest import LOCK, MANIFEST, Manifest
from tflq.batch.run import run_batch
from tflq.cli.app import main
from tflq.errors import UsageError

REPO = Path(__file__).resolve().parent.parent


def write_config(folder: Path, models: str, *, modes: str = "[float32, dynamic]", calibration: str = "") -> Path:
    path = folder / "batch.yaml"
    path.write_text(
        f"""\
output_dir: out
defaults:
  modes: {modes}
  {calibration}
  evaluation: {{data: {SAMPLES}/digits_test.npz, samples: 40}}
  latency: {{runs: 3, warmup_runs: 1}}
models:
{models}"""
    )
    return path


CNN = f"  - name: cnn\n    path: {SAMPLES}/digits_cnn.keras\n"


def run(config: Path, *args: str):
    return CliRunner().invoke(main, ["run", str(config), "--json", *args], catch_exceptions=False)


def rows_of(result) -> dict[str, dict]:
    return {f"{row['model']}/{row['variant']}": row for row in json.loads(result.stdout)}


# ---------------------------------------------------------------------------------------------------------------
# Bug 1: the runner itself never writes or deletes outside the output folder


@pytest.mark.parametrize("name", ["../victim", "sub/../../victim"])
def test_runner_refuses_a_model_name_that_leads_outside_the_output_folder(tmp_path, name, monkeypatch):
    # The config file's own name check is another layer; the runner must be safe without it (a BatchConfig built in
    # code, an older config check). Before the fix the failed conversion unlinked <out>/../victim.float32.tflite.
    victim = tmp_path / "victim.float32.tflite"
    victim.write_bytes(b"not yours")
    config = load_config(write_config(tmp_path, CNN, modes="[float32]"))
    config = dataclasses.replace(config, models=(dataclasses.replace(config.models[0], name=name),))
    monkeypatch.setenv("TFLQ_TEST_ABORT_CHILD", "victim")  # were a child started, it would fail and clean up
    with pytest.raises(UsageError) as caught:
        run_batch(config)
    message = str(caught.value)
    assert f"model {name!r}" in message and "not inside the output folder" in message, message
    assert victim.read_bytes() == b"not yours"
    assert not (tmp_path / "out").exists()  # refused before anything was created


def test_runner_refuses_an_absolute_model_name(tmp_path):
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    config = load_config(write_config(tmp_path, CNN, modes="[float32]"))
    config = dataclasses.replace(config, models=(dataclasses.replace(config.models[0], name=str(outside / "x")),))
    with pytest.raises(UsageError, match="not inside the output folder"):
        run_batch(config)
    assert list(outside.iterdir()) == []


# ---------------------------------------------------------------------------------------------------------------
# Bug 3: one run at a time per output folder; pareto.png through a unique temporary name


def test_a_second_run_on_a_locked_output_folder_refuses_at_once(tmp_path):
    config = write_config(tmp_path, CNN, modes="[float32]")
    out = tmp_path / "out"
    out.mkdir()
    with open(out / LOCK, "a") as held:  # what a first, running `tflq run` holds
        fcntl.flock(held.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        result = CliRunner().invoke(main, ["run", str(config)], catch_exceptions=False)
    assert_usage_error(result, str(out), "another tflq run is writing to this output folder", LOCK)
    assert sorted(p.name for p in out.iterdir()) == [LOCK]  # nothing converted, no manifest, no report


def test_a_lock_file_planted_as_a_symbolic_link_is_not_followed(tmp_path):
    config = write_config(tmp_path, CNN, modes="[float32]")
    out = tmp_path / "out"
    out.mkdir()
    (out / LOCK).symlink_to(tmp_path / "elsewhere.txt")
    result = CliRunner().invoke(main, ["run", str(config)], catch_exceptions=False)
    assert_usage_error(result, str(out / LOCK), "cannot create the output folder's lock file")
    assert not (tmp_path / "elsewhere.txt").exists()
    assert not list(out.glob("*.tflite"))


PLOT_WRITER = """
import os
import sys
import time
from pathlib import Path
from tflq.report.plot import write_pareto_plot
rows = [{"model": "m", "variant": v, "status": "ok", "size_bytes": s, "accuracy": {"top1": a},
         "latency_ms": {"p50": l}} for v, s, a, l in (("float32", 40000, 0.98, 0.1), ("int8", 16000, 0.97, 0.02))]
write_pareto_plot(rows, Path(sys.argv[1] + ".warm.png"))  # imports done: both processes then start together
Path(sys.argv[1] + f".ready{os.getpid()}").touch()
deadline = time.monotonic() + 120  # bounded: a writer whose twin died must not spin forever
while len(list(Path(sys.argv[1]).parent.glob("*.ready*"))) < 2:
    if time.monotonic() > deadline:
        sys.exit("the other writer never started")
    time.sleep(0.01)
for _ in range(12):
    write_pareto_plot(rows, Path(sys.argv[1]))
"""


@pytest.mark.slow
def test_two_processes_writing_pareto_png_at_once_both_succeed_with_the_umask_mode(tmp_path):
    # Before the fix both went through ".pareto.png.tmp.png": one renamed the other's half-written file away and the
    # other's rename then failed (FileNotFoundError).
    target = tmp_path / "pareto.png"
    env = dict(os.environ, PYTHONPATH=str(REPO))
    writers = [
        subprocess.Popen(
            [sys.executable, "-c", f"import os; os.umask(0o027)\n{PLOT_WRITER}", str(target)],
            env=env, stderr=subprocess.PIPE, text=True,
        )
        for _ in range(2)
    ]
    for writer in writers:
        _, errors = writer.communicate(timeout=120)
        assert writer.returncode == 0, errors
    assert target.read_bytes().startswith(b"\x89PNG")
    assert stat.S_IMODE(target.stat().st_mode) == 0o640  # 0666 & ~umask, as a plain open() gives; not mkstemp's 0600
    assert not [p.name for p in tmp_path.iterdir() if ".tmp" in p.name]  # no temporary file left


# ---------------------------------------------------------------------------------------------------------------
# Bug 8: a manifest that is a directory, not JSON, or has entries of the wrong type


def test_a_manifest_path_that_is_a_directory_is_a_usage_error_before_any_work(tmp_path):
    config = write_config(tmp_path, CNN, modes="[float32]")
    (tmp_path / "out" / MANIFEST).mkdir(parents=True)
    result = CliRunner().invoke(main, ["run", str(config)], catch_exceptions=False)
    assert_usage_error(result, str(tmp_path / "out" / MANIFEST), "is a directory", "expected the JSON manifest")
    assert not list((tmp_path / "out").glob("*.tflite"))


@pytest.mark.parametrize(
    ("content", "fragment"),
    [
        (b"{not json", "not JSON"),
        (b"\xff\xfe\x00", "not UTF-8"),
        (b"[1, 2]", "expected an object with a 'jobs' object, found list"),
        (b'{"version": 1, "jobs": []}', "found list"),
        (b'{"version": 7, "jobs": {}}', "manifest version 7"),
    ],
)
def test_an_unreadable_manifest_is_rebuilt_with_a_note(tmp_path, content, fragment):
    (tmp_path / MANIFEST).write_bytes(content)
    manifest = Manifest.read(tmp_path)
    assert manifest.keys() == []
    assert len(manifest.notes) == 1 and fragment in manifest.notes[0] and str(tmp_path / MANIFEST) in manifest.notes[0]


def test_manifest_entries_of_the_wrong_type_are_dropped_each_with_a_note(tmp_path):
    good = {"key": "k", "measure_key": None, "artifact": {"status": "ok", "sha256": "s", "size_bytes": 3}, "measurement": {}}
    jobs = {
        "m/float32": good,
        "m/int8": "garbage",
        "m/dynamic": dict(good, artifact="not a dict"),
        "m/float16": dict(good, artifact={"status": "ok", "size_bytes": "12"}),
        "m/16x8": dict(good, measurement={"latency_ms": {"p50": "fast"}}),
        "m/auto": dict(good, measurement={"auto": {"trials": "none"}}),
        "no-slash": good,
    }
    (tmp_path / MANIFEST).write_text(json.dumps({"version": 1, "jobs": jobs}))
    manifest = Manifest.read(tmp_path)
    assert manifest.keys() == ["m/float32"]
    notes = "\n".join(manifest.notes)
    assert len(manifest.notes) == 6, notes
    for fragment in (
        "'m/int8': expected an object, found str",
        "'m/dynamic': 'artifact' should be an object, found str",
        "'m/float16': artifact 'size_bytes' should be an integer or null, found str",
        "'m/16x8': measurement latency_ms.p50 should be a number, found str",
        "'m/auto': measurement 'auto' should be an object",
        "'no-slash': the key is not 'model/variant'",
    ):
        assert fragment in notes, (fragment, notes)


# ---------------------------------------------------------------------------------------------------------------
# Bugs 2, 6, 7, 8 on real runs


@pytest.mark.slow
def test_filtered_runs_keep_the_manifest_and_hand_edited_entries_are_rebuilt(tmp_path):
    config = write_config(tmp_path, CNN)
    out = tmp_path / "out"
    first = run(config)
    assert first.exit_code == 0, first.output
    recorded = json.loads((out / MANIFEST).read_text())["jobs"]
    assert set(recorded) == {"cnn/float32", "cnn/dynamic"}
    assert all(entry["measure_key"] for entry in recorded.values())  # written as the variants completed, with figures

    # Bug 7: a filtered run leaves the other variants' entries as they were; the next plain run reconverts nothing
    filtered = run(config, "--modes", "float32")
    assert filtered.exit_code == 0, filtered.output
    assert set(rows_of(filtered)) == {"cnn/float32"}
    assert json.loads((out / MANIFEST).read_text())["jobs"]["cnn/dynamic"] == recorded["cnn/dynamic"]
    plain = run(config)
    assert plain.exit_code == 0, plain.output
    assert all(row["up_to_date"] for row in rows_of(plain).values()), rows_of(plain)

    # Bug 8: an entry of the wrong type is rebuilt with a visible note (no traceback); the other one is reused
    document = json.loads((out / MANIFEST).read_text())
    document["jobs"]["cnn/dynamic"]["artifact"] = ["hand", "edited"]
    (out / MANIFEST).write_text(json.dumps(document))
    edited = run(config)
    assert edited.exit_code == 0, edited.output
    assert f"{out / MANIFEST}: entry 'cnn/dynamic': 'artifact' should be an object, found list" in edited.stderr
    rows = rows_of(edited)
    assert rows["cnn/float32"]["up_to_date"] and not rows["cnn/dynamic"]["up_to_date"]
    assert isinstance(json.loads((out / MANIFEST).read_text())["jobs"]["cnn/dynamic"]["artifact"], dict)

    (out / MANIFEST).write_text("{truncated")
    broken = run(config)
    assert broken.exit_code == 0, broken.output
    assert f"{out / MANIFEST}: not JSON" in broken.stderr and "Traceback" not in broken.output
    assert not any(row["up_to_date"] for row in rows_of(broken).values())


@pytest.mark.slow
def test_notices_logged_in_the_children_reach_the_terminal_and_the_reports(tmp_path):
    # Two models on two threads, so that each notice must land on its own model's rows: a legacy Keras 2 file loaded
    # with tf_keras (notice) calibrated on random data (warning), and a model calibrated on float64 data (notice),
    # all three logged in the conversion children. Before the fix the children's stderr went to a temporary file and
    # all three were lost.
    config = write_notices_batch(tmp_path)
    result = run(config, "--jobs", "2")
    assert result.exit_code == 0, result.output
    random_warning = "RANDOM CALIBRATION DATA: 8 uniform random samples"
    cast_notice = f"{tmp_path}/calib64.npz: input 'image' is float64; cast to float32"
    legacy_notice = "digits_cnn.h5: legacy Keras 2 file loaded with tf_keras"
    assert f"WARNING: {random_warning}" in result.stderr, result.stderr
    assert f"INFO: {cast_notice}" in result.stderr and legacy_notice in result.stderr, result.stderr
    rows = rows_of(result)

    def has(key: str, text: str) -> bool:
        return any(text in warning for warning in rows[key]["warnings"])

    assert has("legacy/int8", random_warning) and not has("legacy/float32", random_warning)  # float32 is not calibrated
    assert has("legacy/float32", legacy_notice) and has("legacy/int8", legacy_notice)
    assert has("cnn/int8", cast_notice)
    assert not any(has(f"cnn/{label}", text) for label in ("float32", "int8") for text in (random_warning, legacy_notice))
    markdown = (tmp_path / "out" / "report.md").read_text()
    assert f"- legacy int8: {random_warning}" in markdown and f"- cnn int8: {cast_notice}" in markdown
    reported = {f"{row['model']}/{row['variant']}": row for row in json.loads((tmp_path / "out" / "report.json").read_text())}
    assert any(legacy_notice in warning for warning in reported["legacy/float32"]["warnings"])
    # TensorFlow's own chatter stays hidden without -v
    assert "XNNPACK delegate" not in result.stderr and "fully_quantize" not in result.stderr

    again = run(config)  # reused rows keep their notices
    assert all(row["up_to_date"] for row in rows_of(again).values())
    assert any(random_warning in warning for warning in rows_of(again)["legacy/int8"]["warnings"])
