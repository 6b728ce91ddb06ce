"""tflq debug on models without a classifier output, --json and the output checks, and tflq debug/auto bad input (issue 9)."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from tests.cli_helpers import assert_usage_error, invoke
from tests.sample_paths import SAMPLES

TRAIN = str(SAMPLES / "digits_train.npz")
TEST = str(SAMPLES / "digits_test.npz")
CNN = SAMPLES / "digits_cnn.keras"


@pytest.fixture(scope="module")
def regression(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A regression model (one value per sample, output shape (N, 1)) and its data, labelled and not."""
    import keras

    folder = tmp_path_factory.mktemp("regression")
    keras.utils.set_random_seed(3)
    rng = np.random.default_rng(3)
    features = rng.random((120, 6), dtype=np.float32)
    inputs = keras.Input((6,), name="x")
    hidden = keras.layers.Dense(8, activation="relu", name="hidden")(inputs)
    keras.Model(inputs, keras.layers.Dense(1, name="value")(hidden)).save(folder / "value.keras")
    np.savez(folder / "calib.npz", x=features)
    np.savez(folder / "labelled.npz", x=features[:60], y=rng.random((60, 1), dtype=np.float32))
    return {"model": folder / "value.keras", "calib": folder / "calib.npz", "labelled": folder / "labelled.npz"}


@pytest.mark.slow
@pytest.mark.parametrize("data", ["labelled", "calib"], ids=["labelled", "unlabelled"])
def test_debug_data_on_a_regression_model_gives_layer_errors_and_skips_accuracy_with_a_note(regression, data):
    result = invoke(
        "debug", regression["model"], "--calib", regression["calib"], "--data", regression[data],
        "--layer-samples", "40", "--json",
    )
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["accuracy"] is None
    assert report["samples"] == 40 and report["sample_source"] == str(regression[data])
    assert sorted(report["ranking"]) == ["hidden", "value"]
    assert all(op["sqnr_db"] is not None and op["sqnr_db"] > 10.0 for op in report["ops"])
    note = ("no accuracy checks: they need a classifier output (class scores of shape (N, C)) and the model's "
            f"outputs are value (1,); the layer errors are measured on {regression[data]} all the same")
    assert report["notes"] == [note]
    assert f"Note: {note}" in result.stderr


@pytest.mark.slow
def test_debug_table_on_a_regression_model_shows_the_note(regression, tmp_path):
    out = tmp_path / "report.md"
    result = invoke("debug", regression["model"], "--calib", regression["calib"], "--data", regression["labelled"],
                    "--layer-samples", "20", "-o", out)
    assert result.exit_code == 0, result.output
    text = out.read_text()  # -o FILE.md: Markdown, from the extension, as in tflq eval
    assert text.startswith(f"{regression['model']}: int8") and "| 1 | " in text
    assert "Note: no accuracy checks: they need a classifier output" in text


@pytest.mark.slow
def test_debug_json_flag_is_format_json(tmp_path):
    common = ["debug", CNN, "--calib", TRAIN, "--calib-samples", "30", "--layer-samples", "10"]
    flag = invoke(*common, "--json")
    assert flag.exit_code == 0, flag.output
    report = json.loads(flag.stdout)
    assert report["ranking"] and report["samples"] == 10 and report["notes"] == []
    written = invoke(*common, "-o", tmp_path / "report.json")
    assert written.exit_code == 0, written.output
    assert json.loads((tmp_path / "report.json").read_text())["ranking"] == report["ranking"]


@pytest.mark.parametrize(
    "args, fragments",
    [
        (["--json", "--format", "csv"], ["--json conflicts with --format csv"]),
        (["--top", "-1"], ["--top must be 0 or more, got -1"]),
        (["--layer-samples", "0"], ["--layer-samples must be at least 1, got 0"]),
        (["--data", TEST, "--eval-samples", "0"], ["--eval-samples must be at least 1, got 0"]),
        (["-o", "{folder}"], ["cannot write the report: it is a folder; expected a file name"]),
        (["-o", "{blocker}/report.json"], ["cannot write the report:", "is a file, not a folder"]),
        (["--plot", "{blocker}/sqnr.png"], ["--plot", "cannot write the PNG:", "is a file, not a folder"]),
    ],
    ids=["json-and-csv", "top-negative", "layer-samples-0", "eval-samples-0", "output-folder", "output-under-file",
         "plot-under-file"],
)
def test_debug_bad_options_are_one_line_usage_errors_before_any_work(args, fragments, tmp_path):
    blocker = tmp_path / "blocker"
    blocker.write_text("a file")
    folder = tmp_path / "folder"
    folder.mkdir()
    args = [arg.format(folder=folder, blocker=blocker) for arg in args]
    result = invoke("debug", CNN, "--calib", TRAIN, *args)
    assert_usage_error(result, *fragments)
    assert not any(folder.iterdir()) and blocker.read_text() == "a file"


@pytest.mark.parametrize(
    "args, fragment",
    [
        (["--max-float-layers", "-1"], "Invalid value for '--max-float-layers': -1 is not in the range 0<=x<=64"),
        (["--eval-samples", "0"], "--eval-samples must be at least 1, got 0"),
        (["--name", ""], "--name '': expected a plain file-name stem (omit --name for the model's name)"),
    ],
    ids=["max-float-layers-negative", "eval-samples-0", "empty-name"],
)
def test_auto_bad_counts_are_tflq_usage_errors(args, fragment, tmp_path):
    result = invoke("auto", CNN, "--calib", TRAIN, "--data", TEST, "--max-drop", "1", "-o", tmp_path, *args)
    assert_usage_error(result, fragment)
    assert not any(tmp_path.iterdir())


@pytest.mark.parametrize("where", ["file", "under-file", "target-is-folder"])
def test_auto_output_folder_that_cannot_hold_the_file_is_refused_before_any_work(where, tmp_path):
    blocker = tmp_path / "blocker"
    blocker.write_text("a file")
    out = {"file": blocker, "under-file": blocker / "sub", "target-is-folder": tmp_path / "out"}[where]
    if where == "target-is-folder":
        (out / "digits_cnn.auto.tflite").mkdir(parents=True)
    result = invoke("auto", CNN, "--calib", TRAIN, "--data", TEST, "--max-drop", "1", "-o", out)
    expected = "it is a folder" if where == "target-is-folder" else f"{blocker} is a file, not a folder"
    assert_usage_error(result, f"-o {out}: cannot write ", expected)
    assert blocker.read_text() == "a file"
