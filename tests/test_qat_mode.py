"""Mode ``qat`` end to end: the registry entry, ``tflq convert --mode qat``, the YAML ``qat:`` section, the batch
key, every error path (one line, exit 2, nothing written) and the accuracy it buys on the digits CNN.

The accuracy bar (issue 9): QAT int8 stays within 1 point of float32 on the 360 test digits (one digit is 0.28
points). QAT is deterministic on one machine but not across CPUs: seeds 0-4 gave -0.28 to 0.00 points here (seeds
0-5 before op determinism: -0.28 to +0.28), and another machine -0.55, so the bar leaves room for that. The defaults, 2 epochs at learning rate 1e-3, pass it (2
epochs at 1e-4 lose 6 digits: see README). What QAT buys where PTQ loses is in tests/test_qat_reproducible.py.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from tests.cli_helpers import assert_config_error, assert_nothing_written, assert_usage_error, convert
from tests.sample_paths import SAMPLES
from tests.tflite_helpers import run_tflite
from tflq.batch.config import load_config
from tflq.cli.app import main
from tflq.convert.session import ConvertOptions, QatOptions, convert_model
from tflq.errors import UsageError
from tflq.modes import MODES, plan_variants

CNN = str(SAMPLES / "digits_cnn.keras")
TRAIN = str(SAMPLES / "digits_train.npz")
TEST = str(SAMPLES / "digits_test.npz")
QAT_IO_TYPES = MODES["qat"].io_types
# the smallest fine-tune that makes the accuracy assertions meaningful on the sample CNN (see the module docstring)
TEST_EPOCHS = 2
TEST_LEARNING_RATE = 1e-3


def accuracy(tflite_path: Path, digits_test: dict[str, np.ndarray]) -> float:
    (scores,) = run_tflite(tflite_path, {"image": digits_test["x"]}).values()
    return float(np.mean(np.argmax(scores, axis=-1) == digits_test["y"]))


# ------------------------------------------------------------------------------------------------ registry


def test_registry_entry():
    mode = MODES["qat"]
    assert mode.needs_training and mode.integer and not mode.calibrated
    assert mode.io_types == ("float32", "int8", "uint8")
    assert [v.label for v in plan_variants(["int8", "qat"], ["int8"])] == ["int8.int8", "qat.int8"]  # side by side


def test_modes_command_lists_qat():
    result = CliRunner().invoke(main, ["modes"], catch_exceptions=False)
    assert result.exit_code == 0
    (line,) = [line for line in result.output.splitlines() if line.startswith("qat ")]
    assert "training" in line and "float32/int8/uint8" in line


def test_qat_options_are_validated():
    assert QatOptions().epochs == 2 and QatOptions().learning_rate == 1e-3 and QatOptions().from_logits is None
    for bad, message in [
        (dict(epochs=0), "epochs must be a positive integer"),
        (dict(batch_size=True), "batch size must be a positive integer"),
        (dict(learning_rate=1.5), r"learning rate must be in \(0, 1\)"),
        (dict(seed=-1), "seed must be a non-negative integer"),
    ]:
        with pytest.raises(UsageError, match=message):
            QatOptions(**bad)
    with pytest.raises(UsageError, match="qat needs labelled training data: pass --train-data"):
        ConvertOptions(modes=("qat",)).variants()
    with pytest.raises(UsageError, match="apply to mode qat only"):
        ConvertOptions(modes=("float32",), qat=QatOptions(train_data=TRAIN)).variants()


# ------------------------------------------------------------------------------------------------ CLI errors


@pytest.mark.parametrize(
    "args, fragments",
    [
        ([CNN, "--mode", "qat"], ["qat needs labelled training data", "--train-data"]),
        ([CNN, "--mode", "int8", "--calib", TRAIN, "--epochs", "3"], ["--epochs apply to mode qat only"]),
        ([CNN, "--train-data", TRAIN, "--from-logits"], ["--train-data, --from-logits/--no-from-logits apply to mode qat"]),
        ([CNN, "--all-modes", "--calib", TRAIN, "--train-data", TRAIN], ["--train-data apply to mode qat only"]),
        ([CNN, "--mode", "qat", "--train-data", TRAIN, "--per-tensor"], ["--per-tensor does not apply to mode qat"]),
        ([CNN, "--mode", "qat", "--train-data", TRAIN, "--epochs", "0"], ["--epochs", "0"]),
        ([CNN, "--mode", "qat", "--train-data", TRAIN, "--learning-rate", "2"], ["--learning-rate", "2"]),
        ([CNN, "--mode", "qat", "--train-data", TRAIN, "--io-type", "int16"], ["'int16' does not apply", "16x8"]),
    ],
    ids=["no-train-data", "epochs-without-qat", "train-data-without-qat", "all-modes-excludes-qat", "per-tensor",
         "epochs-0", "learning-rate-2", "int16"],
)
def test_cli_usage_errors(args: list[str], fragments: list[str], tmp_path):
    out = tmp_path / "out"
    assert_usage_error(convert(*args, out=out), *fragments)
    assert_nothing_written(out)


@pytest.fixture(scope="module")
def unlabelled_data(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("data") / "x_only.npz"
    with np.load(TRAIN) as archive:
        np.savez(path, x=archive["x"][:64])
    return path


@pytest.mark.slow
@pytest.mark.parametrize(
    "case, fragments",
    [
        ("gru", ["layer 'gru' (GRU) cannot be quantization-aware trained", "post-training quantization"]),
        ("lambda", ["lambda.keras", "Lambda layer", "--unsafe-deserialization"]),
        ("lambda_unsafe", ["layer 'double' (Lambda)", "runs arbitrary Python code", "post-training quantization"]),
        ("no_loss", ["no loss to train with", "--loss NAME [--from-logits]", "qat: {loss: NAME"]),
        ("unknown_loss", ["unknown loss 'sparse_categorical_crossentropie'", "did you mean sparse_categorical_crossentropy"]),
        ("contradicting_logits", ["from_logits=False contradicts the model's saved loss", "--loss sparse_categorical_crossentropy"]),
        ("no_labels", ["x_only.npz", "the training data has no labels", "key 'y'"]),
        ("savedmodel", ["digits_cnn_savedmodel", "no Keras metadata", "give QAT the .keras or .h5 file"]),
    ],
)
def test_cli_refusals_are_one_line_exit_2_nothing_written(case, fragments, tiny_models, unlabelled_data, tmp_path):
    model, extra, data = CNN, [], TRAIN
    if case == "gru":
        model = str(SAMPLES / "digits_gru.keras")
    elif case.startswith("lambda"):
        model = str(tiny_models["lambda"])
        data = str(tmp_path / "four.npz")
        np.savez(data, x=np.ones((8, 4), np.float32), y=np.ones((8, 2), np.float32))
        extra = ["--unsafe-deserialization"] if case == "lambda_unsafe" else []
    elif case == "no_loss":
        model = str(tiny_models["sequential"])
    elif case == "unknown_loss":
        extra = ["--loss", "sparse_categorical_crossentropie"]
    elif case == "contradicting_logits":
        extra = ["--no-from-logits"]
    elif case == "no_labels":
        data = str(unlabelled_data)
    elif case == "savedmodel":
        model = str(SAMPLES / "digits_cnn_savedmodel")
    out = tmp_path / "out"
    result = convert(model, "--mode", "int8", "--mode", "qat", "--calib", data, "--calib-samples", "20",
                     "--train-data", data, *extra, out=out)
    assert_usage_error(result, *fragments)
    assert_nothing_written(out)


# ------------------------------------------------------------------------------------------------ YAML


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "batch.yaml"
    path.write_text(text)
    return path


def test_yaml_qat_section_merges_and_resolves_paths(tmp_path):
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "train.npz").write_bytes(Path(TRAIN).read_bytes())
    path = write(
        tmp_path,
        f"""\
defaults:
  modes: [float32, qat]
  io_types: [int8]
  qat: {{train_data: data/train.npz, epochs: 3, from_logits: true}}
models:
  - name: cnn
    path: {CNN}
    qat: {{learning_rate: 0.001, loss: sparse_categorical_crossentropy, val_data: {TEST}}}
  - name: plain
    path: {CNN}
    modes: [float32]
""",
    )
    cnn, plain = load_config(path).models
    assert cnn.convert.qat == QatOptions(
        train_data=str(tmp_path / "data" / "train.npz"), val_data=TEST, epochs=3, batch_size=32,
        learning_rate=0.001, loss="sparse_categorical_crossentropy", from_logits=True, seed=0,
    )  # what the batch child converts with
    assert plain.modes == ("float32",)


@pytest.mark.parametrize(
    "body, fragments",
    [
        ("    qat: {{train_dat: {train}}}\n", [":5:", "unknown key 'train_dat' in a model entry.qat", "did you mean 'train_data'"]),
        ("    qat: {{train_data: {train}, epoch: 2}}\n", [":5:", "unknown key 'epoch'", "did you mean 'epochs'"]),
        ("    qat:\n      train_data: {train}\n      learning_rat: 0.1\n", [":7:", "unknown key 'learning_rat'", "did you mean 'learning_rate'"]),
        ("    qat: {{train_data: {train}, epochs: 0}}\n", [":5:", "qat.epochs", "positive integer"]),
        ("    qat: {{train_data: {train}, learning_rate: 1.5}}\n", [":5:", "qat.learning_rate", "between 0 and 1"]),
        ("    qat: {{train_data: {train}, from_logits: maybe}}\n", [":5:", "qat.from_logits", "true or false"]),
        ("    qat: {{train_data: {train}, loss: 3}}\n", [":5:", "qat.loss", "non-empty string"]),
        ("    qat: {{train_data: nowhere.npz}}\n", [":5:", "qat.train_data", "nowhere.npz does not exist"]),
        ("    qat: {{train_data: {train}, val_data: nowhere.npz}}\n", [":5:", "qat.val_data", "nowhere.npz does not exist"]),
        ("    qat: {{epochs: 3}}\n", [":2:", "mode(s) qat need qat.train_data"]),
        ("    qat: [1, 2]\n", [":5:", "qat: expected a mapping of train_data, val_data, epochs"]),
    ],
    ids=["train_dat", "epoch", "learning_rat", "epochs-0", "learning-rate-1.5", "from-logits-maybe", "loss-3",
         "train-data-missing", "val-data-missing", "no-train-data", "not-a-mapping"],
)
def test_yaml_qat_errors_name_file_and_line(tmp_path, body: str, fragments: list[str]):
    text = f"models:\n  - name: a\n    path: {CNN}\n    modes: [qat]\n" + body.format(train=TRAIN)
    path = write(tmp_path, text)
    assert_config_error(path, *fragments)


def test_yaml_loss_is_checked_as_a_string_only_so_validation_stays_instant(tmp_path):
    import subprocess
    import sys

    path = write(tmp_path, f"models:\n  - name: a\n    path: {CNN}\n    modes: [qat]\n"
                           f"    qat: {{train_data: {TRAIN}, loss: not_a_loss}}\n")
    code = (f"import sys; from pathlib import Path; from tflq.batch.config import load_config; "
            f"load_config(Path({str(path)!r})); print(sorted(m for m in ('tensorflow', 'tf_keras', 'keras') if m in sys.modules))")
    completed = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert completed.returncode == 0, completed.stderr
    assert completed.stdout.strip() == "[]"


def test_batch_key_covers_the_qat_settings(tmp_path):
    from dataclasses import replace

    from tflq.batch.run import conversion_key
    from tflq.modes import Variant

    path = write(tmp_path, f"models:\n  - name: a\n    path: {CNN}\n    modes: [int8, qat]\n"
                           f"    calibration: {{data: {TRAIN}}}\n    qat: {{train_data: {TRAIN}}}\n")
    (job,) = load_config(path).models
    qat_variant, int8_variant = Variant("qat", "int8"), Variant("int8", "int8")
    changed = replace(job, convert=replace(job.convert, qat=replace(job.convert.qat, epochs=5)))
    assert conversion_key(job, qat_variant, "m") != conversion_key(changed, qat_variant, "m")
    assert conversion_key(job, int8_variant, "m") == conversion_key(changed, int8_variant, "m")


# ------------------------------------------------------------------------------------------------ the fine-tune


@pytest.fixture(scope="module")
def digits_run(tmp_path_factory):
    """float32, PTQ int8 and QAT on the digits CNN, every I/O type, in one convert_model call (one training run)."""
    out = tmp_path_factory.mktemp("qat_out")
    workdir = tmp_path_factory.mktemp("qat_work")
    options = ConvertOptions(
        modes=("float32", "int8", "qat"),
        io_types=QAT_IO_TYPES,
        calibration=TRAIN,
        qat=QatOptions(train_data=TRAIN, val_data=TEST, epochs=TEST_EPOCHS, learning_rate=TEST_LEARNING_RATE),
    )
    result = convert_model(Path(CNN), out, options, workdir=workdir)
    assert result.ok, [a.error for a in result.artifacts]
    return result, workdir


@pytest.mark.slow
def test_qat_int8_stays_within_a_point_of_float32(digits_run, digits_test):
    result, _ = digits_run
    by_label = {artifact.label: artifact for artifact in result.artifacts}
    float_accuracy = accuracy(by_label["float32"].path, digits_test)
    ptq = accuracy(by_label["int8.int8"].path, digits_test)
    qat = accuracy(by_label["qat.int8"].path, digits_test)
    print(f"\nfloat32 {float_accuracy:.4f}  PTQ int8 {ptq:.4f}  QAT int8 {qat:.4f}")
    assert float_accuracy > 0.95  # the bar below means something
    assert ptq >= float_accuracy - 0.01  # PTQ int8 is fine on this model too
    assert qat >= float_accuracy - 0.01


@pytest.mark.slow
@pytest.mark.parametrize("io_type", QAT_IO_TYPES)
def test_qat_variant_in_every_io_type(io_type, digits_run, digits_test):
    from ai_edge_litert.interpreter import Interpreter

    result, _ = digits_run
    (artifact,) = [a for a in result.artifacts if a.mode == "qat" and a.io_type == io_type]
    assert artifact.ok and artifact.float_ops == ()
    assert artifact.path.name == ("digits_cnn.qat.tflite" if io_type == "float32" else f"digits_cnn.qat.{io_type}.tflite")
    runner = Interpreter(model_path=str(artifact.path)).get_signature_runner()
    assert {name: d["dtype"] for name, d in runner.get_input_details().items()} == {"image": np.dtype(io_type)}
    assert {name: d["dtype"] for name, d in runner.get_output_details().items()} == {"logits": np.dtype(io_type)}
    assert accuracy(artifact.path, digits_test) > 0.97


@pytest.mark.slow
def test_one_training_run_feeds_every_io_type_and_is_reported(digits_run):
    result, _ = digits_run
    trainings = [a.to_dict()["training"] for a in result.artifacts if a.mode == "qat"]
    assert len(trainings) == len(QAT_IO_TYPES) and all(t == trainings[0] for t in trainings)  # one run, shared
    training = trainings[0]
    assert training["epochs"] == TEST_EPOCHS and training["learning_rate"] == TEST_LEARNING_RATE
    assert training["loss"] == "sparse_categorical_crossentropy(from_logits=True)"
    assert training["loss_source"] == "compile config"
    assert training["train_samples"] == 1437 and training["val_samples"] == 360
    assert training["val_metric"] == "val_accuracy" and 0.9 < training["val_value"] <= 1.0
    assert training["seconds"] > 0 and result.training_seconds >= training["seconds"]
    assert all(a.to_dict()["training"] is None for a in result.artifacts if a.mode != "qat")


@pytest.mark.slow
def test_calibrated_qat_path_matches_the_public_converter(digits_run, digits_test):
    """The session calibrates the QAT export once and quantizes per I/O type; the public converter configured by the
    registry (what ``qat.convert_qat`` does) gives the same outputs."""
    from tflq.qat import quantize_aware as qat

    result, workdir = digits_run
    export = qat.QatExport(workdir / "qat_saved_model", ("image",), ("logits",))
    with np.load(TRAIN) as archive:
        representative = archive["x"][:200]  # the session's representative samples: the first --calib-samples
    for artifact in (a for a in result.artifacts if a.mode == "qat"):
        public = qat.convert_qat(export, io_type=artifact.io_type, representative_inputs=representative, samples=200)
        ours = run_tflite(artifact.path, {"image": digits_test["x"]})["logits"]
        theirs = run_tflite(public, {"image": digits_test["x"]})["logits"]
        np.testing.assert_array_equal(ours, theirs)


@pytest.mark.slow
def test_cli_json_shows_training_and_the_seed_reproduces_the_model(tmp_path):
    args = [CNN, "--mode", "qat", "--io-type", "int8", "--train-data", TRAIN, "--epochs", "1", "--batch-size", "64",
            "--calib-samples", "50", "--json"]
    first = convert(*args, out=tmp_path / "a")
    second = convert(*args, out=tmp_path / "b")
    assert first.exit_code == 0 and second.exit_code == 0, first.output + second.output
    (row_a,), (row_b,) = json.loads(first.stdout), json.loads(second.stdout)
    assert row_a["status"] == "ok" and row_a["training"]["epochs"] == 1 and row_a["training"]["batch_size"] == 64
    assert row_a["training"]["val_metric"] is None  # no --val-data
    assert row_a["training"]["final"] == row_b["training"]["final"]
    with np.load(TEST) as archive:
        x_test = archive["x"]
    # the same model; not compared by sha256: TensorFlow numbers the functions it traces in one process, so the
    # flatbuffer's names may differ by a few bytes between runs in one process
    outputs_a = run_tflite(Path(row_a["path"]), {"image": x_test})
    outputs_b = run_tflite(Path(row_b["path"]), {"image": x_test})
    np.testing.assert_array_equal(outputs_a["logits"], outputs_b["logits"])
    assert "23/23" not in first.output  # no progress bar when stderr is not a terminal and no -v


@pytest.fixture()
def reset_verbosity():
    from tflq._tf import imports as _tf

    yield
    _tf.set_verbose(False)  # -v is process-wide; later tests expect the quiet default


@pytest.mark.slow
@pytest.mark.usefixtures("reset_verbosity")
def test_explicit_loss_and_progress_with_verbose(tmp_path):
    result = convert(CNN, "--mode", "qat", "--train-data", TRAIN, "--epochs", "1", "--calib-samples", "20",
                     "--loss", "sparse_categorical_crossentropy", "--from-logits", "-v", out=tmp_path)
    assert result.exit_code == 0, result.output
    assert "45/45 [====" in result.stderr and "45/45" not in result.stdout  # the bar (tf_keras names epochs only when > 1)
    assert "qat: 1 epoch(s) of sparse_categorical_crossentropy(from_logits=True) (explicit)" in result.stdout
    assert (tmp_path / "digits_cnn.qat.tflite").exists()


@pytest.mark.slow
def test_batch_child_trains_from_the_yaml_qat_section(tmp_path):
    """What ``tflq run`` does per model (in a child process there; in-process here): the qat: section reaches the
    fine-tune and each qat artifact carries its training figures into the report row."""
    from tflq.batch.run import JobResult, _convert_in_child

    path = write(tmp_path, f"output_dir: out\nmodels:\n  - name: cnn\n    path: {CNN}\n    modes: [int8, qat]\n"
                           f"    io_types: [int8]\n    calibration: {{data: {TRAIN}, samples: 20}}\n"
                           f"    qat: {{train_data: {TRAIN}, epochs: 1, batch_size: 64, seed: 3}}\n")
    config = load_config(path)
    (job,) = config.models
    variants = plan_variants(list(job.modes), list(job.io_types))
    artifacts = _convert_in_child(job, variants, str(config.output_dir), report=lambda *message: None)
    assert [a["label"] for a in artifacts] == ["int8.int8", "qat.int8"]
    assert all(a["status"] == "ok" for a in artifacts), artifacts
    training = artifacts[1]["training"]
    assert (training["epochs"], training["batch_size"], training["seed"]) == (1, 64, 3)
    row = JobResult(model="cnn", label="qat.int8", mode="qat", io_type="int8", path=artifacts[1]["path"],
                    status="ok", artifact=artifacts[1]).to_row()
    assert row["training"] == training and row["variant"] == "qat.int8"
    assert artifacts[0]["training"] is None


def test_readme_yaml_example_is_valid(tmp_path):
    import re

    section = (SAMPLES.parent / "docs" / "qat.md").read_text()  # the README's QAT section, moved to docs/
    (example,) = re.findall(r"```yaml\n(.*?)```", section, re.S)
    example = example.replace("../sample_models/", f"{SAMPLES}/")
    config = load_config(write(tmp_path, example + f"models:\n  - name: cnn\n    path: {CNN}\n"))
    assert config.models[0].convert.qat.learning_rate == 0.001 and config.models[0].modes == ("float32", "int8", "qat")


@pytest.mark.slow
def test_multi_io_model_trains_on_named_data_and_keeps_names(tmp_path):
    from ai_edge_litert.interpreter import Interpreter

    result = convert_model(
        SAMPLES / "digits_multi_io.keras", tmp_path,
        ConvertOptions(modes=("qat",), io_types=("int8",), calibration_samples=20,
                       qat=QatOptions(train_data=str(SAMPLES / "digits_multi_io_train.npz"), epochs=1, batch_size=64)),
    )
    (artifact,) = result.artifacts
    assert artifact.ok, artifact.error
    assert artifact.training["loss"] == "sparse_categorical_crossentropy(from_logits=True), mean_squared_error()"
    assert {"digit_loss", "ink_loss", "digit_accuracy"} <= set(artifact.training["final"])
    runner = Interpreter(model_path=str(artifact.path)).get_signature_runner()
    assert sorted(runner.get_input_details()) == ["image", "row_sums"]
    assert sorted(runner.get_output_details()) == ["digit", "ink"]


@pytest.fixture(scope="module")
def diverging(tmp_path_factory) -> tuple[Path, Path]:
    """A regression model compiled with MSE and labels so large that the squared error overflows float32."""
    import keras

    folder = tmp_path_factory.mktemp("diverging")
    inputs = keras.Input((3,), name="features")
    model = keras.Model(inputs, keras.layers.Dense(1, name="value")(inputs))
    model.compile(optimizer="adam", loss="mse")
    model.save(folder / "regression.keras")
    np.savez(folder / "huge.npz", x=np.ones((16, 3), np.float32), y=np.full((16, 1), 1e30, np.float32))
    return folder / "regression.keras", folder / "huge.npz"


@pytest.mark.slow
def test_diverging_training_fails_the_qat_variants_only(diverging, tmp_path):
    model, data = diverging
    result = convert(str(model), "--mode", "float32", "--mode", "qat", "--io-type", "float32", "--io-type", "int8",
                     "--train-data", str(data), out=tmp_path)
    assert result.exit_code == 1, result.output
    assert "ok     float32" in result.stdout
    assert result.stdout.count("QAT training diverged in epoch 1 of 2") == 2  # both qat variants, one training run
    assert result.output.strip().splitlines()[-1] == "Error: 2 of 3 variant(s) failed: qat, qat.int8"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["regression.float32.tflite"]


def test_batch_report_shows_training_beside_the_int8_rows():
    from tflq.report.render import BATCH_COLUMNS, batch_columns, to_csv, to_markdown

    training = {"epochs": 2, "seconds": 1.43, "val_metric": "val_accuracy", "val_value": 0.988889, "final": {"loss": 0.01}}
    rows = [
        {"model": "cnn", "variant": "int8.int8", "name": "cnn int8.int8", "status": "ok", "training": None},
        {"model": "cnn", "variant": "qat.int8", "name": "cnn qat.int8", "status": "ok", "training": training},
    ]
    assert batch_columns(rows[:1]) == BATCH_COLUMNS  # no empty column in reports without training modes
    markdown = to_markdown(rows, columns=batch_columns(rows))
    assert markdown.splitlines()[0].endswith("| Training |")
    assert "| 2 ep, fit 1.4 s, val_accuracy 98.89% |" in markdown.splitlines()[-1]
    header = to_csv(rows).splitlines()[0].split(",")
    assert {"training.epochs", "training.val_value", "training.final.loss"} <= set(header) and "training" not in header
