"""Per-output tasks: a classifier gets top-1 / top-5, a regression output (coordinates, values) gets error figures
(MAE / RMSE, SQNR, max abs error) and no top-1. The rule, the ``--task`` override, YAML ``task:``, label keys that
match no output."""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from tests.fixtures.tflite import ClassifierFiles
from tests.tflite_helpers import convert_keras
from tflq.cli.app import main
from tflq.errors import ConfigError, DataError, UsageError
from tflq.measure.metrics import decide_task, output_accuracy, output_agreement
from tflq.measure.tasks import TaskOverrides, check_task_setting, parse_task_options

FAST = ["--threads", "1", "--runs", "0", "-q"]
SAMPLES = 40


def invoke(*arguments: object):
    return CliRunner().invoke(main, [str(argument) for argument in arguments], catch_exceptions=False)


@dataclass(frozen=True)
class BoxFiles:
    """One model, outputs ``output_0`` (10 class scores) and ``output_1`` (a box: 4 sigmoid coordinates)."""

    float32: Path
    dynamic: Path
    labelled: Path  # x, y_output_0 (class indices), y_output_1 (boxes in [0, 1])
    unlabelled: Path


@pytest.fixture(scope="module")
def boxes(tmp_path_factory: pytest.TempPathFactory) -> BoxFiles:
    import keras

    folder = tmp_path_factory.mktemp("boxes")
    keras.utils.set_random_seed(5)
    image = keras.Input((8, 8, 1), name="image")
    hidden = keras.layers.Dense(16, activation="relu")(keras.layers.Flatten()(image))
    model = keras.Model(image, [keras.layers.Dense(10)(hidden), keras.layers.Dense(4, activation="sigmoid")(hidden)])
    generator = np.random.default_rng(9)
    x = generator.random((SAMPLES, 8, 8, 1), dtype=np.float32)
    scores, box = model.predict(x, verbose=0)
    np.savez(folder / "labelled.npz", x=x, y_output_0=scores.argmax(axis=1), y_output_1=np.clip(box + 0.05, 0, 1))
    np.savez(folder / "unlabelled.npz", x=x)
    return BoxFiles(
        float32=convert_keras(model, folder / "boxes.float32.tflite"),
        dynamic=convert_keras(model, folder / "boxes.dynamic.tflite", mode="dynamic"),
        labelled=folder / "labelled.npz",
        unlabelled=folder / "unlabelled.npz",
    )


# ---------------------------------------------------------------------------------------------------------------
# The rule and the metrics (numpy only)


def test_the_rule_from_shape_and_labels() -> None:
    scores = np.random.default_rng(0).random((6, 4)).astype(np.float32)
    assert decide_task("o", scores, None) == "classification"  # (N, C), C >= 2, nothing says otherwise
    assert decide_task("o", scores, np.array([0, 1, 2, 3, 0, 1])) == "classification"  # class indices
    assert decide_task("o", scores, np.eye(4)[[0, 1, 2, 3, 0, 1]]) == "classification"  # one-hot
    assert decide_task("o", scores, np.full((6, 4), 0.25)) == "classification"  # probabilities
    assert decide_task("o", scores, scores + 0.1) == "regression"  # box coordinates of the output's shape
    assert decide_task("o", scores[:, :1], None) == "regression"  # (N, 1): a value
    assert decide_task("o", scores[:, 0], None) == "regression"  # (N,)
    assert decide_task("o", scores.reshape(6, 2, 2), None) == "regression"  # rank 3
    assert decide_task("o", scores, None, "regression") == "regression"  # the override wins
    with pytest.raises(UsageError, match=r"task classification for output 'o' needs class scores of shape \(N, C\)"):
        decide_task("o", scores[:, :1], None, "classification")


def test_box_labels_give_error_figures_not_top1() -> None:
    boxes = np.random.default_rng(1).random((8, 4)).astype(np.float32)
    accuracy = output_accuracy("box", boxes, boxes + 0.5)
    assert accuracy.kind == "regression" and accuracy.top1 is None and accuracy.mae == pytest.approx(0.5)
    assert accuracy.to_dict() == {"task": "regression", "mae": pytest.approx(0.5), "rmse": pytest.approx(0.5)}
    agreement = output_agreement("box", boxes, boxes + 0.01, task="regression")
    assert agreement.top1 is None and agreement.max_abs_error == pytest.approx(0.01, rel=1e-3)
    assert agreement.sqnr_db is not None and agreement.to_dict()["task"] == "regression"
    with pytest.raises(DataError, match=r"output 'box' is scored as classification, so its labels must be class indices"):
        output_accuracy("box", boxes, boxes + 0.5, task="classification")


def test_task_options_and_yaml_settings() -> None:
    assert parse_task_options(()) is None
    assert parse_task_options(("regression",)) == TaskOverrides("regression")
    parsed = parse_task_options(("box=regression", "StatefulPartitionedCall:1=classification"))
    assert parsed.for_output("box") == "regression" and parsed.for_output("x", "StatefulPartitionedCall:1") == "classification"
    assert parsed.for_output("other") is None
    for bad, message in (
        ("box=boxes", "--task box=boxes: expected classification or regression, found 'boxes'"),
        ("=regression", "--task =regression: expected NAME=TASK or TASK"),
        ("detection", "--task: expected classification or regression, found 'detection'"),
    ):
        with pytest.raises(UsageError) as caught:
            parse_task_options((bad,))
        assert str(caught.value).startswith(message), caught.value
    assert check_task_setting("regression", "f:3: evaluation.task") == TaskOverrides("regression")
    mapping = check_task_setting({"output_1": "regression", "*": "classification"}, "f:3: evaluation.task")
    assert mapping == TaskOverrides("classification", (("output_1", "regression"),))
    assert mapping.to_setting() == {"output_1": "regression", "*": "classification"}
    for bad in ("boxes", {"output_1": "boxes"}, [1], {}):
        with pytest.raises(ConfigError, match=r"^f:3: evaluation\.task"):
            check_task_setting(bad, "f:3: evaluation.task")


def test_yaml_task_is_read_per_model(tmp_path: Path, classifier: ClassifierFiles) -> None:
    from tflq.batch.config import load_config

    config = tmp_path / "batch.yaml"
    config.write_text(
        "output_dir: out\n"
        "defaults:\n"
        "  modes: [float32, dynamic]\n"
        f"  evaluation: {{data: {classifier.data}, task: classification}}\n"
        "models:\n"
        f"  - {{name: a, path: {classifier.keras}}}\n"
        f"  - name: b\n    path: {classifier.keras}\n    evaluation: {{task: {{output_1: regression}}}}\n"
    )
    first, second = load_config(config).models
    assert first.evaluation.task == TaskOverrides("classification")
    assert second.evaluation.task == TaskOverrides(None, (("output_1", "regression"),))
    config.write_text(config.read_text().replace("output_1: regression", "output_1: boxes"))
    with pytest.raises(ConfigError, match=r"batch.yaml:9: evaluation.task.output_1: expected classification or regression, found 'boxes'"):
        load_config(config)


# ---------------------------------------------------------------------------------------------------------------
# tflq eval


def test_eval_scores_each_output_by_its_task(boxes: BoxFiles) -> None:
    result = invoke("eval", boxes.float32, boxes.dynamic, "--data", boxes.labelled, "--json", *FAST)
    assert result.exit_code == 0, result.output
    _, dynamic = json.loads(result.stdout)
    assert dynamic["tasks"] == {"output_0": "classification", "output_1": "regression"}
    assert dynamic["accuracy"]["output_0"]["top1"] is not None
    assert set(dynamic["accuracy"]["output_1"]) == {"task", "mae", "rmse"}
    box = dynamic["agreement"]["output_1"]
    assert box["top1"] is None and box["max_abs_error"] > 0 and box["sqnr_db"] > 10
    assert dynamic["agreement"]["output_0"]["top1"] is not None

    # Markdown: one line per row (the terminal table wraps long cells)
    table = invoke("eval", boxes.float32, boxes.dynamic, "--data", boxes.labelled, *FAST, "--format", "md").stdout
    header = next(line for line in table.splitlines() if "Model" in line)
    assert "Max err" in header and "SQNR dB" in header, table
    row = next(line for line in table.splitlines() if "boxes.dynamic" in line)
    cells = dict(zip(header.split("|"), row.split("|"), strict=True))
    accuracy = next(cell for name, cell in cells.items() if "Accuracy" in name)
    assert "output_1: MAE" in accuracy and "output_1: 1" not in accuracy, table


def test_without_labels_the_override_makes_a_box_a_regression_output(boxes: BoxFiles) -> None:
    result = invoke("eval", boxes.float32, boxes.dynamic, "--data", boxes.unlabelled, "--json", *FAST)
    by_shape = json.loads(result.stdout)[1]
    assert by_shape["tasks"]["output_1"] == "classification"  # (N, 4) and no labels: looks like 4 class scores
    result = invoke(
        "eval", boxes.float32, boxes.dynamic, "--data", boxes.unlabelled, "--task", "output_1=regression", "--json", *FAST
    )
    assert result.exit_code == 0, result.output
    overridden = json.loads(result.stdout)[1]
    assert overridden["tasks"] == {"output_0": "classification", "output_1": "regression"}
    assert overridden["agreement"]["output_1"]["top1"] is None
    assert overridden["agreement"]["output_1"]["max_abs_error"] == by_shape["agreement"]["output_1"]["max_abs_error"]
    every = json.loads(
        invoke("eval", boxes.float32, boxes.dynamic, "--data", boxes.unlabelled, "--task", "regression", "--json", *FAST).stdout
    )[1]
    assert every["tasks"] == {"output_0": "regression", "output_1": "regression"}


def test_task_errors_are_usage_errors(boxes: BoxFiles, classifier: ClassifierFiles) -> None:
    for arguments, message in (
        ((boxes.float32, "--data", boxes.unlabelled, "--task", "box=regression"),
         "Error: task for output 'box': no such output; the models' outputs are ['output_0', "),
        ((boxes.float32, "--task", "regression"), "Error: --task needs --data"),
        ((boxes.float32, "--data", boxes.unlabelled, "--task", "output_1=boxes"),
         "Error: --task output_1=boxes: expected classification or regression, found 'boxes'"),
        ((classifier.two_outputs, "--data", classifier.unlabelled, "--task", "output_1=classification"),
         "needs class scores of shape (N, C) with C >= 2; the output gives (48, 1)"),
    ):
        result = invoke("eval", *arguments, *FAST)
        assert result.exit_code == 2, result.output
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and message in lines[0] and "Traceback" not in result.output, result.output


def test_label_keys_that_match_no_output(boxes: BoxFiles, tmp_path: Path) -> None:
    with np.load(boxes.labelled) as archive:
        arrays = {key: archive[key] for key in archive.files}
    none_match = tmp_path / "none_match.npz"
    np.savez(none_match, x=arrays["x"], y_scores=arrays["y_output_0"])
    result = invoke("eval", boxes.float32, "--data", none_match, *FAST)
    assert result.exit_code == 2, result.output
    assert result.stderr == (
        f"Error: {none_match}: label key(s) ['y_scores'] match no output of {boxes.float32}; its outputs are "
        "['output_0', 'output_1'] (expected label keys: 'y_output_0', 'y_output_1')\n"
    )
    some_match = tmp_path / "some_match.npz"
    np.savez(some_match, x=arrays["x"], y_output_0=arrays["y_output_0"], y_box=arrays["y_output_1"])
    result = invoke("eval", boxes.float32, "--data", some_match, "--threads", "1", "--runs", "0", "--json")
    assert result.exit_code == 0, result.output
    row = json.loads(result.stdout)[0]
    note = f"label key(s) ['y_box'] in {some_match} match no output (outputs: ['output_0', 'output_1']): ignored"
    assert row["warnings"] == [note] and row["accuracy"]["top1"] is not None
    assert f"Note: boxes.float32.tflite: {note}" in result.stderr


def test_single_output_label_key_with_another_name(classifier: ClassifierFiles, tmp_path: Path) -> None:
    wrong = tmp_path / "wrong.npz"
    np.savez(wrong, x=classifier.x, y_logits=classifier.y)
    result = invoke("eval", classifier.float32, "--data", wrong, *FAST)
    assert result.exit_code == 2, result.output
    assert "label key(s) ['y_logits'] match no output" in result.stderr
    assert "(expected label keys: 'y' or 'y_output_0')" in result.stderr


def test_debug_and_auto_scoring_reads_only_classifier_outputs(boxes: BoxFiles) -> None:
    """tflq.debug.scoring averages the top-1 of the outputs the harness gives a top-1: the regression output has none."""
    from tflq.measure.harness import EvalSettings, run_tflite, score

    run = run_tflite(str(boxes.dynamic), EvalSettings(threads=1, runs=0), str(boxes.labelled))
    measurement = score(run, 1, None, reference=None, data=str(boxes.labelled))
    assert [result.output for result in measurement.accuracy if result.top1 is not None] == ["output_0"]
