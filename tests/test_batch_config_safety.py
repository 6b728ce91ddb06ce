"""Hostile and malformed YAML batch files: each is one `Error: file:line: ...` line, exit 2, nothing written, fast.

Every case goes through ``tflq run`` in-process (CliRunner), as a user would meet it.
"""
from __future__ import annotations

import time
from pathlib import Path

import pytest

from tests.cli_helpers import assert_nothing_written, assert_usage_error, invoke
from tests.sample_paths import SAMPLES
from tflq.batch.config import MAX_MODEL_NAME_BYTES, Overrides, load_config

CNN = SAMPLES / "digits_cnn.keras"
TRAIN = SAMPLES / "digits_train.npz"
TEST = SAMPLES / "digits_test.npz"
MODEL = f"models:\n  - name: m\n    path: {CNN}\n    modes: [float32]\n"  # lines 1-4


def write(tmp_path: Path, text: str | bytes, name: str = "batch.yaml") -> Path:
    path = tmp_path / name
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text, encoding="utf-8")
    return path


def run_refused(tmp_path: Path, config: Path, *fragments: str, args: tuple[str, ...] = ()) -> str:
    """``tflq run CONFIG -o OUT``: exit 2, one error line with every fragment, nothing written in or beside OUT."""
    out = tmp_path / "out"
    before = sorted(p.name for p in tmp_path.iterdir())
    result = invoke("run", config, "-o", out, *args)
    assert_usage_error(result, *fragments)
    assert_nothing_written(out)
    assert sorted(p.name for p in tmp_path.iterdir()) == before
    return result.output


# --- bug 4: the YAML document itself ------------------------------------------------------------------------------

BILLION_LAUGHS = 'a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]\n' + "".join(
    f"{chr(98 + i)}: &{chr(98 + i)} [{','.join(['*' + chr(97 + i)] * 9)}]\n" for i in range(8)
) + "models: *i\n"


def test_billion_laughs_is_refused_at_once(tmp_path):
    from tflq.errors import ConfigError

    config = write(tmp_path, BILLION_LAUGHS)
    run_refused(tmp_path, config, f"{config}:5:", "aliases expand to more than 10000 values")
    started = time.perf_counter()  # the reading alone, now that the CLI's modules are imported
    with pytest.raises(ConfigError, match="aliases expand"):
        load_config(config)
    assert time.perf_counter() - started < 0.5  # before: hung, memory growing ~28 MB/s


@pytest.mark.parametrize(
    "text, fragments",
    [
        ("a: &a [*a]\nmodels: []\n", [":1:", "alias *a refers to a value that contains it"]),
        ("a: &a {b: *a}\nmodels: []\n", [":1:", "alias *a refers to a value that contains it"]),
        ("models: " + "[" * 5000 + "]" * 5000 + "\n", [":1:", "nested more than 100 levels deep"]),
        ("".join(" " * i + f"k{i}:\n" for i in range(1000)) + " " * 1000 + "x: 1\n", [":101:", "nested more than 100"]),
        ("models: !!python/name:os.system\n", [":1:", "tag !!python/name:os.system is not allowed"]),
        ("models: !!python/object/apply:os.system [echo hi]\n", [":1:", "tag !!python/object/apply:os.system"]),
        ("models: !include other.yaml\n", [":1:", "tag !include is not allowed"]),
        ("models: !!binary aGVsbG8=\n", [":1:", "tag !!binary is not allowed"]),
        ("models: !!set {a, b}\n", [":1:", "tag !!set is not allowed"]),
        ("base: &b {modes: [float32]}\nmodels:\n  - <<: *b\n    name: m\n", [":3:", "merge keys (<<) are not supported"]),
        ("models: *nowhere\n", [":1:", "YAML syntax error", "undefined alias"]),
        ("models: []\n---\nmodels: []\n", [":2:", "YAML syntax error", "single document"]),
        ("models:\n  - name: m\n\tpath: x\n", [":3:", "YAML syntax error"]),
        ("models: [\x07]\n", [":1:", "not allowed in YAML"]),
        ("- name: m\n  path: x\n", [":1:", "expected a mapping with keys output_dir, defaults, models, found a list"]),
        ("just a string\n", [":1:", "found a string"]),
        ("42\n", [":1:", "found an integer"]),
        ("models: []\noutput_dir: a\noutput_dir: b\n", [":3:", "duplicate key 'output_dir' (first at line 2)"]),
        (MODEL + "    modes: [int8]\n", [":5:", "duplicate key 'modes' (first at line 4)"]),
        ("1: x\nmodels: []\n", [":1:", "keys must be strings, found 1"]),
        ("? [a, b]\n: x\nmodels: []\n", [":1:", "keys must be strings, found a sequence"]),
        ("~: x\nmodels: []\n", [":1:", "keys must be strings, found None"]),
        (MODEL.replace("name: m", "name: 2024-13-45"), [":2:", "cannot read '2024-13-45' as !!timestamp"]),
        (MODEL.replace("name: m", "name: !!int abc"), [":2:", "cannot read 'abc' as !!int"]),
        (MODEL.replace("name: m", "name: !!float x"), [":2:", "cannot read 'x' as !!float"]),
    ],
)
def test_hostile_yaml_is_one_line_with_file_and_line(tmp_path, text: str, fragments: list[str]):
    config = write(tmp_path, text)
    started = time.perf_counter()
    output = run_refused(tmp_path, config, f"{config}", *fragments)
    assert "RecursionError" not in output and "ConstructorError" not in output
    assert time.perf_counter() - started < 5


def test_not_utf8_names_the_line(tmp_path):
    config = write(tmp_path, MODEL.encode() + b"    signature: caf\xe9\n")
    run_refused(tmp_path, config, f"{config}:5:", "not UTF-8", "0xe9")


@pytest.mark.parametrize("output_dir", ["afile", "afile/sub"])
def test_an_output_dir_that_is_a_file(tmp_path, output_dir: str):
    """Before: FileExistsError traceback from mkdir."""
    (tmp_path / "afile").write_text("not a folder")
    config = write(tmp_path, f"output_dir: {output_dir}\n" + MODEL)
    result = invoke("run", config)
    assert_usage_error(result, f"{config}:1: output_dir:", "cannot be a folder", f"{tmp_path / 'afile'} is a file")
    result = invoke("run", write(tmp_path, MODEL, name="plain.yaml"), "-o", tmp_path / output_dir)
    assert_usage_error(result, "--output-dir:", "is a file")
    assert (tmp_path / "afile").read_text() == "not a folder"


def test_a_directory_as_the_config(tmp_path):
    folder = tmp_path / "configs.yaml"
    folder.mkdir()
    run_refused(tmp_path, folder, f"{folder}: is a directory")


def test_a_config_over_10_mb_is_refused_before_reading(tmp_path):
    config = write(tmp_path, MODEL + "#" + "x" * (10 * 1024 * 1024) + "\n")
    run_refused(tmp_path, config, f"{config}:", "at most 10485760 bytes")


# --- bug 1: model names are file-name stems -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name, fragment",
    [
        ("../evil", "contains '/'"),
        ("..", "found '..'"),
        (".", "found '.'"),
        (str(Path("/tmp/abs").resolve()), "contains '/'"),
        ("a/b", "contains '/'"),
        ("'a\\\\b'", "contains '\\\\'"),
        ('"a\\0b"', "control character"),
        ('"a\\tb"', "control character"),
        ('"a\\nb"', "control character"),
        ("-rf", "starts with '-'"),
        (".hidden", "starts with '.'"),
        ('""', "expected a non-empty string"),
        ('" m"', "leading or trailing space"),
        ("x" * (MAX_MODEL_NAME_BYTES + 1), f"at most {MAX_MODEL_NAME_BYTES} bytes"),
        ("é" * (MAX_MODEL_NAME_BYTES // 2 + 1), f"at most {MAX_MODEL_NAME_BYTES} bytes"),
        ("5", "expected a non-empty string, found an integer"),
        ("null", "expected a non-empty string"),
        ("[a]", "expected a non-empty string, found a list"),
    ],
)
def test_model_names_that_are_not_plain_stems(tmp_path, name: str, fragment: str):
    config = write(tmp_path, MODEL.replace("name: m", f"name: {name}"))
    run_refused(tmp_path, config, f"{config}:2: name:", fragment)


def test_dot_dot_name_never_deletes_beside_the_output_folder(tmp_path):
    """Before: a failing conversion of model `../evil` unlinked <out>/../evil.float32.tflite."""
    victim = tmp_path / "evil.float32.tflite"
    victim.write_bytes(b"someone else's file")
    broken = write(tmp_path, b"not a model", name="broken.keras")
    config = write(tmp_path, f"models:\n  - name: ../evil\n    path: {broken}\n    modes: [float32]\n")
    run_refused(tmp_path, config, f"{config}:2:", "contains '/'")
    assert victim.read_bytes() == b"someone else's file"


def test_the_longest_allowed_name_fits_name_max(tmp_path):
    from tflq.batch.config_checks import planned_outputs

    name = "x" * MAX_MODEL_NAME_BYTES
    config = write(
        tmp_path,
        f"defaults:\n  calibration: {{data: {TRAIN}, samples: 10}}\n"
        f"models:\n  - name: {name}\n    path: {CNN}\n    modes: [float32, int8, 16x8]\n    io_types: [uint8, int16]\n",
    )
    (job,) = load_config(config).models
    longest = max(len(path.name) for path in planned_outputs(job, tmp_path))
    assert longest + len("..XXXXXXXX.tmp") <= 255  # the temporary twin convert.write_atomically makes


# --- bug 2: colliding output files --------------------------------------------------------------------------------


def test_models_whose_outputs_collide_are_refused_naming_both(tmp_path):
    config = write(
        tmp_path,
        f"defaults:\n  calibration: {{data: {TRAIN}, samples: 10}}\nmodels:\n"
        f"  - name: x\n    path: {CNN}\n    modes: [int8]\n    io_types: [int8]\n"
        f"  - name: x.int8\n    path: {CNN}\n    modes: [int8]\n",
    )
    run_refused(tmp_path, config, f"{config}:8: model 'x.int8' would write x.int8.int8.tflite", f"model 'x' ({config}:4)")


def test_similar_names_that_do_not_collide_are_accepted(tmp_path):
    config = write(
        tmp_path,
        f"defaults:\n  calibration: {{data: {TRAIN}, samples: 10}}\nmodels:\n"
        f"  - name: x\n    path: {CNN}\n    modes: [int8]\n"
        f"  - name: x.int8\n    path: {CNN}\n    modes: [float32]\n",
    )
    assert [job.name for job in load_config(config).models] == ["x", "x.int8"]


# --- bug 3: empty lists -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "args, fragments",
    [
        (("--modes", ","), ["--modes ','", "expected a comma-separated list of modes"]),
        (("--modes", ""), ["--modes ''", "expected a comma-separated list of modes"]),
        (("--modes", " , "), ["expected a comma-separated list of modes"]),
        (("--modes", "float32,,int8"), ["empty mode name between commas"]),
        (("--modes", "float32,int9"), ["unknown mode 'int9'", "did you mean 'int8'"]),
        (("--only", ","), ["--only ','", "no such model"]),
        (("--only", ""), ["--only ''", "no such model"]),
    ],
)
def test_empty_or_bad_cli_lists(tmp_path, args: tuple[str, ...], fragments: list[str]):
    run_refused(tmp_path, write(tmp_path, MODEL), *fragments, args=args)


def test_empty_modes_list_in_the_file(tmp_path):
    config = write(tmp_path, MODEL.replace("modes: [float32]", "modes: []"))
    run_refused(tmp_path, config, f"{config}:4: modes: expected at least one mode")


# --- bug 5: settings no requested mode reads ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "text, fragments",
    [
        (MODEL + "    per_tensor: true\n", [":5:", "per_tensor is read by mode(s) dynamic, int8, 16x8 only", "float32"]),
        (MODEL.replace("[float32]", "[qat]") + f"    qat: {{train_data: {TRAIN}}}\n    per_tensor: true\n",
         [":6:", "per_tensor is read by"]),
        (MODEL + "    allow_float_fallback: true\n", [":5:", "allow_float_fallback is read by mode(s) int8, qat, 16x8"]),
        (MODEL + f"    calibration: {{data: {TRAIN}}}\n", [":5:", "calibration.data is read by the calibrated mode(s)"]),
        (MODEL + "    qat: {epochs: 3}\n", [":5:", "qat is read by mode qat only"]),
        (MODEL + "    auto: {objective: latency}\n", [":5:", "auto.objective is read by auto.max_drop"]),
        (MODEL + "    auto: {max_float_layers: 1}\n", [":5:", "auto.max_float_layers is read by auto.max_drop"]),
        ("defaults:\n  per_tensor: true\n" + MODEL, [":2:", "defaults: per_tensor", "no model asks for one"]),
        (f"defaults:\n  qat: {{train_data: {TRAIN}}}\n" + MODEL, [":2:", "defaults: qat is read by mode qat only"]),
        (f"defaults:\n  calibration: {{data: {TRAIN}}}\n" + MODEL, [":2:", "defaults: calibration.data"]),
    ],
)
def test_settings_no_requested_mode_reads_are_errors(tmp_path, text: str, fragments: list[str]):
    config = write(tmp_path, text)
    run_refused(tmp_path, config, f"{config}", *fragments)


def test_settings_that_some_model_reads_are_fine(tmp_path):
    config = write(
        tmp_path,
        f"defaults:\n  per_tensor: true\n  io_types: [float32, int8]\n  calibration: {{data: {TRAIN}, samples: 10}}\n"
        f"models:\n  - name: a\n    path: {CNN}\n    modes: [float32]\n"
        f"  - name: b\n    path: {CNN}\n    modes: [int8]\n",
    )
    a, b = load_config(config).models
    assert a.io_types == ("float32",) and b.io_types == ("float32", "int8") and b.convert.per_tensor


def test_a_default_io_type_no_model_takes_is_a_note(tmp_path):
    """defaults: io_types apply to the modes that take them (README); one that applies to no model is said, not silent."""
    config = write(tmp_path, "defaults:\n  io_types: [float32, int16]\n" + MODEL)
    (note,) = load_config(config).notes
    assert note.startswith(f"{config}:2: defaults: io_types int16 applies to mode(s) 16x8 only") and note.endswith("(ignored)")


def test_modes_from_the_cli_make_unread_settings_notes(tmp_path):
    config = write(tmp_path, f"defaults:\n  calibration: {{data: {TRAIN}, samples: 10}}\n  per_tensor: true\n"
                   + MODEL.replace("[float32]", "[int8]"))
    loaded = load_config(config, Overrides(modes=("float32", "float16")))
    assert loaded.models[0].modes == ("float32", "float16")
    assert len(loaded.notes) == 2, loaded.notes
    assert all(note.endswith("(ignored: --modes float32,float16)") for note in loaded.notes)
    assert "per_tensor" in loaded.notes[0] and "calibration.data" in loaded.notes[1]
    assert load_config(config).notes == ()


# --- a sweep of malformed values ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text, fragments",
    [
        ("models: {a: b}\n", [":1:", "expected a non-empty list of models"]),
        ("models: null\n", [":1:", "expected a non-empty list of models"]),
        ("models: [1]\n", [":1:", "each model must be a mapping"]),
        ("models: [null]\n", [":1:", "each model must be a mapping"]),
        ("defaults: [a]\n" + MODEL, [":1:", "defaults: expected a mapping"]),
        ("output_dir: 5\n" + MODEL, [":1:", "output_dir: expected a non-empty string"]),
        ("output_dir: ''\n" + MODEL, [":1:", "output_dir: expected a non-empty string"]),
        (MODEL.replace(f"path: {CNN}", "path: null"), [":3:", "path: expected a non-empty string"]),
        (MODEL.replace(f"path: {CNN}", "path: [a]"), [":3:", "path: expected a non-empty string, found a list"]),
        (MODEL.replace(f"path: {CNN}", "path: nowhere/m.keras"), [":3:", "m.keras does not exist"]),
        (MODEL.replace("modes: [float32]", "modes: null"), [":4:", "expected a list of strings"]),
        (MODEL.replace("modes: [float32]", "modes: [[float32]]"), [":4:", "expected a list of strings"]),
        (MODEL.replace("modes: [float32]", "modes: [float32, 5]"), [":4:", "expected a list of strings"]),
        (MODEL + "    calibration: 5\n", [":5:", "calibration: expected a mapping"]),
        (MODEL + "    calibration: {samples: -1}\n", [":5:", "calibration.samples", "positive integer"]),
        (MODEL + "    calibration: {samples: 1.5}\n", [":5:", "positive integer"]),
        (MODEL + "    calibration: {samples: '10'}\n", [":5:", "positive integer", "'10'"]),
        (MODEL + "    calibration: {samples: true}\n", [":5:", "positive integer"]),
        (MODEL + "    calibration: {samples: 100000000000000000000000}\n", [":5:", "at most 10000000"]),
        (MODEL + "    calibration: {image_scale: huge}\n", [":5:", "expected one of unit, symmetric, raw, imagenet"]),
        (MODEL + "    evaluation: {data: nope.npz}\n", [":5:", "nope.npz does not exist"]),
        (MODEL + "    evaluation: {reference: nope.tflite}\n", [":5:", "nope.tflite does not exist"]),
        (MODEL + "    evaluation: {samples: 0}\n", [":5:", "evaluation.samples", "positive integer"]),
        (MODEL + f"    evaluation: {{data: {TEST}}}\n    gates: {{max_accuracy_drop: .nan}}\n", [":6:", "finite non-negative", "nan"]),
        (MODEL + "    gates: {max_size_bytes: .inf}\n", [":5:", "finite non-negative number", "inf"]),
        (MODEL + "    gates: {max_latency_ms: -1}\n", [":5:", "finite non-negative number"]),
        (MODEL + "    gates: {max_latency_ms: '5'}\n", [":5:", "finite non-negative number"]),
        (MODEL + "    gates: {max_size: 5}\n", [":5:", "unknown key 'max_size'", "did you mean 'max_size_bytes'"]),
        (MODEL + "    latency: {runs: -1}\n", [":5:", "latency.runs", "non-negative integer"]),
        (MODEL + "    latency: {threads: 99999999999}\n", [":5:", "latency.threads", "at most 4096"]),
        (MODEL + "    latency: {min_seconds: .inf}\n", [":5:", "latency.min_seconds", "finite"]),
        (MODEL + "    latency: {xnnpack: 'no'}\n", [":5:", "latency.xnnpack", "true or false"]),
        (MODEL + "    auto: {max_drop: -1}\n", [":5:", "auto.max_drop", "non-negative"]),
        (MODEL + "    auto: {objective: speed}\n", [":5:", "expected one of size, latency"]),
        (MODEL.replace("[float32]", "[qat]") + "    qat: {train_data: nope.npz}\n", [":5:", "qat.train_data", "does not exist"]),
        (MODEL.replace("[float32]", "[qat]"), [":2:", "need qat.train_data"]),
        (MODEL.replace("[float32]", "[qat]") + f"    qat: {{train_data: {TRAIN}, learning_rate: 2}}\n", [":5:", "between 0 and 1"]),
        (MODEL.replace("[float32]", "[qat]") + f"    qat: {{train_data: {TRAIN}, learning_rate: .nan}}\n", [":5:", "between 0 and 1"]),
        (MODEL.replace("[float32]", "[qat]") + f"    qat: {{train_data: {TRAIN}, seed: -1}}\n", [":5:", "qat.seed", "non-negative integer"]),
        (MODEL.replace("[float32]", "[qat]") + f"    qat: {{train_data: {TRAIN}, loss: 5}}\n", [":5:", "qat.loss", "non-empty string"]),
        (MODEL + "    signature: ''\n", [":5:", "signature: expected a non-empty string"]),
        (MODEL + "    custom_objects: [5]\n", [":5:", "custom_objects: expected a list of strings"]),
        (MODEL + "    unsafe_deserialization: 1\n", [":5:", "true or false"]),
        (MODEL + "    skip_ops: [FULLY_CONNECTED]\n", [":5:", "skip_ops applies to mode int8"]),
        (MODEL + "    io_types: [int8]\n", [":5:", "'int8' does not apply"]),
        (MODEL + "    io_types: int4\n", [":5:", "unknown I/O type 'int4'"]),
        (MODEL + "    name2: x\n", [":5:", "unknown key 'name2'"]),
        ("defaults:\n  name: x\n" + MODEL, [":2:", "unknown key 'name' in defaults"]),
    ],
)
def test_malformed_values_are_one_line_with_file_and_line(tmp_path, text: str, fragments: list[str]):
    config = write(tmp_path, text)
    run_refused(tmp_path, config, f"{config}", *fragments)


def test_the_readme_batch_file_example_is_valid(tmp_path):
    """The README's example spells out every default (qat:, auto: ...): a default written down is not an unread setting."""
    import re

    readme = (SAMPLES.parent / "docs" / "batch.md").read_text()
    section = readme[readme.index("## The batch file"):readme.index("## What a run does")]
    (example,) = re.findall(r"```yaml\n(.*?)```", section, re.DOTALL)
    config = load_config(write(tmp_path, example.replace("../sample_models/", f"{SAMPLES}/")))
    assert [job.name for job in config.models] == ["digits_cnn", "digits_gru"] and config.notes == ()


@pytest.mark.slow
def test_tflq_run_prints_the_notes_and_runs_the_modes_asked_for(tmp_path):
    """`tflq run --modes float32` over a file whose int8 settings it does not read: notes, then the run."""
    config = write(
        tmp_path,
        f"defaults:\n  calibration: {{data: {TRAIN}, samples: 10}}\n  per_tensor: true\n"
        f"  latency: {{runs: 2, warmup_runs: 1}}\n" + MODEL.replace("[float32]", "[int8]"),
    )
    result = invoke("run", config, "--modes", "float32", "-o", tmp_path / "out")
    assert result.exit_code == 0, result.output
    assert f"note: {config}:3: defaults: per_tensor is read by" in result.output
    assert "(ignored: --modes float32)" in result.output
    assert sorted(p.name for p in (tmp_path / "out").glob("*.tflite")) == ["m.float32.tflite"]
