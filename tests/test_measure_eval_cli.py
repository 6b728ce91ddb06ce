"""``tflq eval`` and ``tflq inspect`` through click's CliRunner: exit codes AND messages."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from tests.fixtures.tflite import ClassifierFiles
from tests.tflite_helpers import run_tflite
from tflq.cli.app import main
from tflq.measure.isolation import ABORT_HOOK_VARIABLE

QUICK = ["--threads", "1", "--runs", "3", "--min-seconds", "0", "--warmup-seconds", "0"]
REPOSITORY = Path(__file__).resolve().parent.parent


def invoke(*arguments: str, env: dict[str, str] | None = None):
    return CliRunner().invoke(main, [str(argument) for argument in arguments], env=env, catch_exceptions=False)


def test_eval_json_carries_every_figure_under_stable_keys(classifier: ClassifierFiles) -> None:
    result = invoke("eval", classifier.float32, classifier.int8_io, "--data", classifier.data, "--json", *QUICK)
    assert result.exit_code == 0, result.output
    float32, int8 = json.loads(result.stdout)
    assert float32["name"] == "classifier.float32.tflite" and float32["size_ratio"] == 1.0
    assert int8["size_bytes"] == os.path.getsize(classifier.int8_io)
    assert int8["size_ratio"] == pytest.approx(int8["size_bytes"] / float32["size_bytes"])
    assert int8["latency_ms"]["runs"] == 3 and int8["latency_ms"]["p50"] > 0
    assert int8["threads"] == 1
    assert int8["xnnpack"]["enabled"] and int8["xnnpack"]["delegated_ops"] > 0
    (logits,) = run_tflite(classifier.int8_io, {"image": classifier.x}).values()  # an independent per-sample loop
    assert int8["accuracy"]["top1"] == pytest.approx(float(np.mean(logits.argmax(axis=1) == classifier.y)), abs=1e-9)
    assert int8["accuracy"]["output_0"]["top5"] is not None
    assert 0.8 < int8["agreement"]["top1"] <= 1 and int8["agreement"]["sqnr_db"] > 10
    assert int8["reference"] == str(classifier.float32)
    assert int8["inputs"][0]["dtype"] == "int8" and int8["inputs"][0]["scale"] > 0
    assert int8["status"] == "ok" and int8["error"] is None


def test_eval_table_is_the_default(classifier: ClassifierFiles) -> None:
    result = invoke("eval", classifier.float32, classifier.int16x8, "--data", classifier.data, *QUICK)
    assert result.exit_code == 0, result.output
    for text in ("Model", "p50 ms", "XNNPACK ops", "classifier.float32.tflite", "classifier.16x8.tflite", "(none)"):
        assert text in result.stdout
    assert "XNNPACK took no op" in result.stderr  # the 16x8 model


@pytest.mark.parametrize("suffix", ["csv", "md", "json"])
def test_eval_writes_the_format_of_the_output_suffix(classifier: ClassifierFiles, tmp_path: Path, suffix: str) -> None:
    output = tmp_path / f"results.{suffix}"
    result = invoke("eval", classifier.float32, classifier.dynamic, "-o", output, *QUICK)
    assert result.exit_code == 0, result.output
    assert f"wrote {output}" in result.stderr
    text = output.read_text()
    if suffix == "csv":
        header = text.splitlines()[0].split(",")
        assert {"size_bytes", "latency_ms.p50", "xnnpack.delegated_ops", "status"} <= set(header)
        assert len(text.splitlines()) == 3
    elif suffix == "md":
        assert text.startswith("| Model |") and "classifier.dynamic.tflite" in text
    else:
        assert [row["name"] for row in json.loads(text)] == ["classifier.float32.tflite", "classifier.dynamic.tflite"]


def test_no_xnnpack_and_quiet(classifier: ClassifierFiles) -> None:
    result = invoke("eval", classifier.int16x8, "--no-xnnpack", "--quiet", "--json", *QUICK)
    assert result.exit_code == 0, result.output
    (row,) = json.loads(result.stdout)
    assert row["xnnpack"] == {
        "enabled": False, "delegated_ops": 0, "total_ops": row["xnnpack"]["total_ops"], "partitions": 0,
        "undelegated_op_types": row["xnnpack"]["undelegated_op_types"],
    }
    assert result.stderr == ""


# ---------------------------------------------------------------------------------------------------------------
# Bad input: one clear line each, non-zero exit


def test_missing_model_file(tmp_path: Path) -> None:
    missing = tmp_path / "nope.tflite"
    result = invoke("eval", missing)
    assert result.exit_code == 2
    assert result.stderr == f"Error: {missing}: no such file or directory\n"


@pytest.mark.parametrize("kind", ["random", "truncated", "empty"])
def test_corrupt_model_file_is_that_rows_error(broken_files, classifier: ClassifierFiles, kind: str) -> None:
    broken = broken_files[kind]
    result = invoke("eval", broken, classifier.float32, "--json", *QUICK)
    assert result.exit_code == 1
    error_lines = [line for line in result.stderr.splitlines() if line.startswith("Error:")]
    assert len(error_lines) == 1
    assert error_lines[0].startswith(f"Error: {broken}: not a loadable TFLite model (")
    broken_row, good_row = json.loads(result.stdout)
    assert broken_row["status"] == "error" and good_row["status"] == "ok"


def test_interpreter_crash_is_that_rows_error(classifier: ClassifierFiles) -> None:
    env = {ABORT_HOOK_VARIABLE: "classifier.dynamic.tflite"}
    result = invoke("eval", classifier.float32, classifier.dynamic, *QUICK, env=env)
    assert result.exit_code == 1
    assert f"Error: {classifier.dynamic}: the child process running it died (SIGABRT)\n" in result.stderr
    assert "classifier.float32.tflite" in result.stdout and "error" in result.stdout


def test_data_of_the_wrong_shape(classifier: ClassifierFiles, tmp_path: Path) -> None:
    wrong = tmp_path / "wrong.npz"
    np.savez(wrong, x=np.zeros((4, 9, 9, 1), np.float32))
    result = invoke("eval", classifier.float32, "--data", wrong, *QUICK)
    assert result.exit_code == 2
    assert result.stderr.strip() == (
        f"Error: {wrong}: input 'image', sample 0: expected shape (8, 8, 1) per sample, found (9, 9, 1)"
    )


def test_data_of_the_wrong_dtype(classifier: ClassifierFiles, tmp_path: Path) -> None:
    wrong = tmp_path / "strings.npz"
    np.savez(wrong, x=np.full((2, 8, 8, 1), "a"))
    result = invoke("eval", classifier.float32, "--data", wrong, *QUICK)
    assert result.exit_code == 2
    assert result.stderr.strip() == f"Error: {wrong}: input 'image', sample 0: expected dtype float32, found str32"


def test_labels_of_the_wrong_length(classifier: ClassifierFiles, tmp_path: Path) -> None:
    wrong = tmp_path / "short_labels.npz"
    np.savez(wrong, x=classifier.x, y=classifier.y[:40])
    result = invoke("eval", classifier.float32, "--data", wrong, *QUICK)
    assert result.exit_code == 2
    assert result.stderr.strip() == (
        f"Error: {wrong}: labels for output 'output_0' have 40 rows, expected 48 (one per sample)"
    )


def test_labels_out_of_the_class_range(classifier: ClassifierFiles, tmp_path: Path) -> None:
    wrong = tmp_path / "bad_classes.npz"
    np.savez(wrong, x=classifier.x, y=classifier.y + 20)
    result = invoke("eval", classifier.float32, "--data", wrong, *QUICK)
    assert result.exit_code == 2
    assert result.stderr.startswith(f"Error: {wrong}: labels for output 'output_0' range ")
    assert result.stderr.strip().endswith("the output has 10 classes")


def test_reference_with_other_outputs(classifier: ClassifierFiles) -> None:
    result = invoke(
        "eval", classifier.two_outputs, "--data", classifier.unlabelled, "--reference", classifier.float32, *QUICK
    )
    assert result.exit_code == 2
    assert result.stderr.strip() == (
        f"Error: reference {classifier.float32} has outputs ['output_0']; "
        f"{classifier.two_outputs} has outputs ['output_0', 'output_1']"
    )


def test_missing_reference(classifier: ClassifierFiles, tmp_path: Path) -> None:
    result = invoke("eval", classifier.float32, "--reference", tmp_path / "gone.keras")
    assert result.exit_code == 2
    assert result.stderr.strip() == f"Error: {tmp_path / 'gone.keras'}: no such file or directory"


def test_json_conflicts_with_another_format(classifier: ClassifierFiles) -> None:
    result = invoke("eval", classifier.float32, "--json", "--format", "csv")
    assert result.exit_code == 2
    assert result.stderr.strip() == "Error: --json conflicts with --format csv"


def test_bad_option_values_are_usage_errors(classifier: ClassifierFiles) -> None:
    result = invoke("eval", classifier.float32, "--threads", "0")
    assert result.exit_code == 2 and "--threads" in result.stderr


# ---------------------------------------------------------------------------------------------------------------
# Reference models


@pytest.mark.slow
def test_keras_reference_agrees_with_its_float32_conversion(classifier: ClassifierFiles) -> None:
    result = invoke(
        "eval", classifier.float32, classifier.int8, "--data", classifier.data, "--reference", classifier.keras,
        "--json", *QUICK,
    )
    assert result.exit_code == 0, result.output
    float32, int8 = json.loads(result.stdout)
    assert float32["reference"] == str(classifier.keras)
    assert float32["agreement"]["top1"] == 1.0 and float32["agreement"]["sqnr_db"] > 80
    assert float32["agreement"]["max_abs_error"] < 1e-4
    assert int8["agreement"]["sqnr_db"] < float32["agreement"]["sqnr_db"]


def test_float32_tflite_reference(classifier: ClassifierFiles) -> None:
    result = invoke(
        "eval", classifier.int8, "--data", classifier.data, "--reference", classifier.float32, "--json", *QUICK
    )
    assert result.exit_code == 0, result.output
    (row,) = json.loads(result.stdout)
    assert row["size_ratio"] == pytest.approx(os.path.getsize(classifier.int8) / os.path.getsize(classifier.float32))
    assert row["agreement"]["top1"] > 0.8


# ---------------------------------------------------------------------------------------------------------------
# inspect


def test_inspect_text(classifier: ClassifierFiles) -> None:
    result = invoke("inspect", classifier.int8_io, "--threads", "1")
    assert result.exit_code == 0, result.output
    for text in ("image", "int8", "CONV_2D", "integer", "XNNPACK", "min_runtime_version", "PTQ_FULL_INTEGER"):
        assert text in result.stdout


def test_inspect_json(classifier: ClassifierFiles) -> None:
    result = invoke("inspect", classifier.int16x8, "--json")
    assert result.exit_code == 0, result.output
    info = json.loads(result.stdout)
    assert info["xnnpack"]["delegated_ops"] == 0
    assert info["inputs"][0]["shape"] == [None, 8, 8, 1]
    assert info["metadata"]["CONVERSION_METADATA"]["optimization_modes"] == ["PTQ_INT16"]


def test_inspect_corrupt_and_missing(broken_files, tmp_path: Path) -> None:
    result = invoke("inspect", broken_files["random"])
    assert result.exit_code == 1
    assert result.stderr.strip() == f"Error: {broken_files['random']}: not a TFLite flatbuffer (no 'TFL3' identifier)"
    result = invoke("inspect", broken_files["truncated"])
    assert result.exit_code == 1
    assert result.stderr.startswith(f"Error: {broken_files['truncated']}: corrupt or truncated TFLite flatbuffer (1500 bytes; ")
    missing = tmp_path / "missing.tflite"
    result = invoke("inspect", missing)
    assert result.exit_code == 2
    assert result.stderr.strip() == f"Error: {missing}: no such file"


# ---------------------------------------------------------------------------------------------------------------
# The real command line: no TensorFlow in the parent, fork start method


def test_cli_modules_do_not_import_tensorflow() -> None:
    code = (
        "import sys, tflq.cli.app, tflq.measure.harness, tflq.report.render, tflq.measure.tflite_info, tflq.measure.isolation, tflq.measure.metrics,"
        " tflq.measure.runner, tflq.measure.latency;"
        "print('tensorflow' in sys.modules, 'keras' in sys.modules)"
    )
    output = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=_env()).stdout
    assert output.strip() == "False False"


def test_command_line_in_a_fresh_process_matches_in_process(classifier: ClassifierFiles) -> None:
    arguments = ["eval", str(classifier.float32), str(classifier.int8), "--data", str(classifier.data), "--json", "--runs", "0"]
    completed = subprocess.run(
        [sys.executable, "-m", "tflq.cli.app", *arguments], capture_output=True, text=True, env=_env(), timeout=120
    )
    assert completed.returncode == 0, completed.stderr
    assert "INFO: Created TensorFlow Lite XNNPACK delegate" not in completed.stderr
    in_process = invoke(*arguments)
    fresh_rows, in_process_rows = json.loads(completed.stdout), json.loads(in_process.stdout)
    for fresh, same in zip(fresh_rows, in_process_rows, strict=True):
        assert fresh["accuracy"] == same["accuracy"] and fresh["agreement"] == same["agreement"]
        assert fresh["latency_ms"] is None


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPOSITORY), env.get("PYTHONPATH")]))
    return env



@pytest.mark.slow
def test_convert_eval_measures_what_it_produced(samples_dir: Path, tmp_path: Path) -> None:
    result = invoke(
        "convert", samples_dir / "digits_cnn.keras", "--mode", "float32", "--mode", "int8", "--calib",
        samples_dir / "digits_train.npz", "--calib-samples", "50", "-o", tmp_path, "--eval",
        samples_dir / "digits_test.npz", "--json",
    )
    assert result.exit_code == 0, result.output
    float32, int8 = json.loads(result.stdout)
    assert float32["eval"]["path"] == float32["path"] and float32["eval"]["size_bytes"] == float32["size_bytes"]
    assert float32["eval"]["accuracy"]["top1"] > 0.9 and float32["eval"]["size_ratio"] == 1.0
    assert int8["eval"]["reference"] == float32["path"]
    assert int8["eval"]["agreement"]["top1"] > 0.95 and int8["eval"]["latency_ms"]["p50"] > 0


def test_progress_bar_only_on_a_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    import io

    from tflq.cli.common import progress_reporter as _progress_reporter

    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    monkeypatch.setattr(sys, "stderr", io.StringIO())
    assert _progress_reporter(quiet=False) == (None, None)
    monkeypatch.setattr(sys, "stderr", Terminal())
    assert _progress_reporter(quiet=True) == (None, None)
    progress, on_progress = _progress_reporter(quiet=False)
    assert progress is not None
    on_progress("model.tflite", 5, 10)
    assert progress.tasks[0].completed == 5 and progress.tasks[0].total == 10


@pytest.fixture(scope="session")
def samples_dir() -> Path:
    return REPOSITORY / "sample_models"


def test_unlabelled_npy_gives_agreement_without_accuracy(classifier: ClassifierFiles, tmp_path: Path) -> None:
    samples = tmp_path / "samples.npy"
    np.save(samples, classifier.x)
    result = invoke("eval", classifier.float32, classifier.dynamic, "--data", samples, "--json", "--runs", "0")
    assert result.exit_code == 0, result.output
    float32, dynamic = json.loads(result.stdout)
    assert float32["accuracy"] is None and dynamic["accuracy"] is None
    assert dynamic["agreement"]["top1"] > 0.9 and dynamic["samples"] == len(classifier.x)
    assert float32["latency_ms"] is None


def test_a_folder_means_every_tflite_in_it(classifier: ClassifierFiles, tmp_path: Path) -> None:
    import shutil

    folder = tmp_path / "variants"
    folder.mkdir()
    for path in (classifier.float32, classifier.int8):
        shutil.copy(path, folder / path.name)
    (folder / "notes.txt").write_text("not a model")
    result = invoke("eval", folder, "--json", "--runs", "0")
    assert result.exit_code == 0, result.output
    assert [row["name"] for row in json.loads(result.stdout)] == ["classifier.float32.tflite", "classifier.int8.tflite"]
    empty = tmp_path / "empty"
    empty.mkdir()
    result = invoke("eval", empty)
    assert result.exit_code == 2
    assert result.stderr.strip() == f"Error: {empty}: no .tflite file in this folder"


# ---------------------------------------------------------------------------------------------------------------
# Issue 9: -o that cannot be written, the Ratio of a lone float32 file


@pytest.mark.parametrize("case", ["parent is a file", "device", "unwritable folder"])
def test_eval_output_that_cannot_be_written_fails_before_measuring(classifier: ClassifierFiles, tmp_path: Path, case: str) -> None:
    a_file = tmp_path / "a_file"
    a_file.write_text("x")
    if case == "parent is a file":
        output, message = a_file / "report.json", f"{a_file} is a file, not a folder"
    elif case == "device":
        output, message = Path(os.devnull), "is not a regular file (a device, FIFO or socket); leave out -o to print to stdout"
    else:
        if not os.path.isdir("/proc/self"):
            pytest.skip("needs Linux /proc (a folder no one can create files in, even root)")
        output, message = Path("/proc/report.json"), "cannot write in /proc ("
    # Missing data would fail the measurement: the -o error coming first shows it is checked before measuring.
    result = invoke("eval", classifier.float32, "--data", tmp_path / "missing.npz", "-o", output, *QUICK)
    assert result.exit_code == 2, result.output
    assert result.stderr.startswith(f"Error: -o {output}: {message}"), result.stderr
    assert len(result.stderr.splitlines()) == 1 and "Traceback" not in result.output
    assert os.path.exists(os.devnull) and not os.path.isfile(os.devnull)  # the device was not replaced
    assert sorted(path.name for path in tmp_path.iterdir()) == ["a_file"]


def test_a_lone_float32_file_is_its_own_size_baseline(classifier: ClassifierFiles) -> None:
    result = invoke("eval", classifier.float32, "--json", *QUICK)
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)[0]["size_ratio"] == 1.0
    table = invoke("eval", classifier.float32, *QUICK)
    assert " 1.00x " in table.stdout, table.stdout
    lone_int8 = json.loads(invoke("eval", classifier.int8, "--json", *QUICK).stdout)[0]
    assert lone_int8["size_ratio"] is None  # no float32 file to compare with: no ratio rather than a made-up one


# ---------------------------------------------------------------------------------------------------------------
# Issue 9: .tflite files without SignatureDef (inputs/outputs declared only by the subgraph)


def test_no_signaturedef_is_measured_by_subgraph_inputs_and_outputs(classifier: ClassifierFiles, tmp_path: Path) -> None:
    from tests.tflite_helpers import strip_signatures

    bare = strip_signatures(classifier.float32, tmp_path / "bare.tflite")
    result = invoke("eval", classifier.float32, bare, "--data", classifier.data, "--json", *QUICK)
    assert result.exit_code == 0, result.output
    float32, row = json.loads(result.stdout)
    assert [tensor["shape"] for tensor in row["inputs"]] == [[None, 8, 8, 1]]
    assert row["outputs"][0]["name"] == row["outputs"][0]["tensor"]  # named by tensor: there is no SignatureDef
    assert row["accuracy"]["top1"] == float32["accuracy"]["top1"]
    assert row["agreement"]["top1"] == 1.0 and row["agreement"]["max_abs_error"] == 0.0


def test_no_signaturedef_with_two_outputs_pairs_them_by_tensor(classifier: ClassifierFiles, tmp_path: Path) -> None:
    from tests.tflite_helpers import strip_signatures

    bare = strip_signatures(classifier.two_outputs, tmp_path / "bare_two.tflite")
    result = invoke("eval", classifier.two_outputs, bare, "--data", classifier.unlabelled, "--json", *QUICK)
    assert result.exit_code == 0, result.output
    _, row = json.loads(result.stdout)
    figures = [value for value in row["agreement"].values() if isinstance(value, dict)]
    assert len(figures) == 2 and all(value["max_abs_error"] == 0.0 for value in figures), row["agreement"]


def test_inspect_without_signaturedef_shows_the_subgraph_tensors(classifier: ClassifierFiles, tmp_path: Path) -> None:
    from tests.tflite_helpers import strip_signatures

    bare = strip_signatures(classifier.int8_io, tmp_path / "bare.tflite")
    info = json.loads(invoke("inspect", bare, "--json").stdout)
    assert info["signature"] is None and info["signature_source"] == "interpreter"
    assert [(t["shape"], t["dtype"]) for t in info["inputs"]] == [([None, 8, 8, 1], "int8")]
    assert [(t["shape"], t["dtype"]) for t in info["outputs"]] == [([None, 10], "int8")]
    text = invoke("inspect", bare)
    assert "no SignatureDef" in text.stdout and "[?, 8, 8, 1]" in text.stdout

    # The interpreter refuses the file (unknown custom op): the table still shows what the file declares.
    refused = strip_signatures(classifier.int8_io, tmp_path / "refused.tflite", unknown_custom_op=True)
    result = invoke("inspect", refused, "--json")
    assert result.exit_code == 1 and result.stderr.startswith(f"Error: {refused}: ")
    info = json.loads(result.stdout)
    assert info["signature_source"] == "file" and info["xnnpack"] is None
    assert [(t["shape"], t["dtype"]) for t in info["inputs"]] == [([None, 8, 8, 1], "int8")]
    assert info["inputs"][0]["scale"] > 0 and info["outputs"][0]["zero_point"] is not None
