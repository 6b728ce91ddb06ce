"""YAML batch files: precedence, path resolution, and every validation error with file:line."""
from __future__ import annotations

from pathlib import Path

import pytest

from tests.cli_helpers import assert_config_error
from tests.sample_paths import SAMPLES
from tflq.batch.config import Overrides, load_config
from tflq.batch.gates import GateOptions
from tflq.errors import ConfigError

HEADER = f"""\
output_dir: out
defaults:
  modes: [float32, int8]
  io_types: [float32, int8]
  calibration: {{data: {SAMPLES}/digits_train.npz, samples: 50}}
  evaluation: {{data: {SAMPLES}/digits_test.npz}}
  gates: {{max_accuracy_drop: 1.0}}
models:
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "batch.yaml"
    path.write_text(text)
    return path


def test_precedence_builtin_file_model_cli(tmp_path):
    path = write(
        tmp_path,
        HEADER
        + f"""\
  - name: cnn
    path: {SAMPLES}/digits_cnn.keras
  - name: gru
    path: {SAMPLES}/digits_gru.keras
    modes: [float32, dynamic]
    calibration: {{samples: 10}}
    gates: {{max_size_bytes: 100000}}
""",
    )
    config = load_config(path)
    cnn, gru = config.models
    assert cnn.modes == ("float32", "int8")  # file defaults
    assert gru.modes == ("float32", "dynamic")  # model entry
    assert cnn.convert.calibration_samples == 50 and gru.convert.calibration_samples == 10
    assert gru.convert.calibration == str(SAMPLES / "digits_train.npz")  # merged per field
    assert gru.gates == GateOptions(max_accuracy_drop=1.0, max_size_bytes=100000.0, max_latency_ms=None)
    assert cnn.measure.runs == 50  # built-in default
    assert config.output_dir == tmp_path / "out"  # relative to the file
    overridden = load_config(path, Overrides(modes=("float16",), output_dir=tmp_path / "cli", only=("gru",)))
    assert [m.name for m in overridden.models] == ["gru"]
    assert overridden.models[0].modes == ("float16",)
    assert overridden.output_dir == tmp_path / "cli"


def test_relative_paths_resolve_against_the_config_folder(tmp_path):
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "m.keras").write_bytes((SAMPLES / "digits_cnn.keras").read_bytes())
    path = write(tmp_path, "models:\n  - name: m\n    path: sub/m.keras\n    modes: [float32]\n")
    assert load_config(path).models[0].path == (tmp_path / "sub" / "m.keras").resolve()


@pytest.mark.parametrize(
    "body, fragments",
    [
        ("models:\n  - name: a\n    path: {cnn}\n    modez: [float32]\n", [":4:", "unknown key 'modez'", "did you mean 'modes'"]),
        ("models:\n  - name: a\n    path: {cnn}\n    modes: [int9]\n", [":4:", "unknown mode 'int9'", "did you mean 'int8'"]),
        ("models:\n  - name: a\n    path: {cnn}\n    io_types: [int4]\n", [":4:", "unknown I/O type 'int4'"]),
        ("defaults:\n  calibration: {{dat: x}}\nmodels: []\n", [":2:", "unknown key 'dat'", "did you mean 'data'"]),
        ("outptu_dir: x\nmodels: []\n", [":1:", "unknown key 'outptu_dir'", "did you mean 'output_dir'"]),
        ("models:\n  - name: a\n    path: missing.keras\n", [":3:", "missing.keras does not exist"]),
        ("models:\n  - name: a\n    path: {cnn}\n    modes: [int8]\n", ["need calibration.data"]),
        ("models:\n  - name: a\n    path: {cnn}\n    modes: [float32]\n    calibration: {{samples: 0}}\n", [":5:", "positive integer"]),
        ("models:\n  - name: a\n    path: {cnn}\n    modes: [float32]\n    per_tensor: yes please\n", [":5:", "true or false"]),
        ("models:\n  - name: a\n    path: {cnn}\n    modes: float32: x\n", ["YAML syntax error"]),
        ("models:\n  - name: a\n    path: {cnn}\n    modes: [float32]\n  - name: a\n    path: {cnn}\n", [":5:", "'a' already used at line 2"]),
        ("models:\n  - path: {cnn}\n", [":2:", "without 'name'"]),
        ("models:\n  - name: a\n    path: {cnn}\n    modes: [float32]\n    skip_layers: [logits]\n", [":5:", "skip_layers applies to mode int8"]),
        ("models:\n  - name: a\n    path: {cnn}\n    modes: [float32]\n    auto: {{max_drop: 1}}\n", [":5:", "auto needs calibration.data and evaluation.data"]),
        ("models:\n  - name: a\n    path: {cnn}\n    modes: [float32]\n    auto: {{max_dorp: 1}}\n", [":5:", "unknown key 'max_dorp'", "did you mean 'max_drop'"]),
        ("models:\n  - name: a\n    path: {cnn}\n    modes: [float16]\n    io_types: [int8]\n", [":5:", "'int8' does not apply"]),
        ("models: []\n", ["non-empty list"]),
        ("defaults:\n  modes: [float32]\n", ["missing 'models:'"]),
        ("", ["empty"]),
        ("models:\n  - name: a\n    path: {cnn}\n    modes: [float32]\n    gates: {{max_accuracy_drop: 1}}\n", ["needs evaluation.data"]),
        ("models:\n  - name: a\n    path: {cnn}\n    modes: [float32]\n    evaluation: {{data: nope.npz}}\n", [":5:", "evaluation.data", "nope.npz does not exist"]),
        ("models:\n  - name: a\n    path: {cnn}\n    modes: [float32]\n    gates: {{max_size_bytes: -3}}\n", [":5:", "non-negative"]),
    ],
)
def test_invalid_configs_name_file_and_line(tmp_path, body: str, fragments: list[str]):
    path = write(tmp_path, body.format(cnn=SAMPLES / "digits_cnn.keras"))
    assert_config_error(path, *fragments)


def test_only_with_unknown_model_suggests(tmp_path):
    path = write(tmp_path, f"models:\n  - name: digits\n    path: {SAMPLES}/digits_cnn.keras\n    modes: [float32]\n")
    with pytest.raises(ConfigError, match="no such model.*did you mean 'digits'"):
        load_config(path, Overrides(only=("digit",)))


def test_shipped_configs_are_valid():
    configs = sorted((SAMPLES.parent / "configs").glob("*.yaml"))
    assert configs
    for path in configs:
        assert load_config(path).models


@pytest.mark.slow
@pytest.mark.parametrize(
    "name", [path.stem for path in sorted((SAMPLES.parent / "configs").glob("*.yaml")) if path.stem != "demo"]
)
def test_shipped_example_configs_run_green(tmp_path, name):
    """Every example in configs/ converts, measures and passes its gates (demo.yaml is `make demo`'s)."""
    import json

    from click.testing import CliRunner

    from tflq.cli.app import main

    result = CliRunner().invoke(
        main, ["run", str(SAMPLES.parent / "configs" / f"{name}.yaml"), "-o", str(tmp_path), "--json"], catch_exceptions=False
    )
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)
    assert rows and all(row["status"] == "ok" and row["gate"] == "pass" for row in rows)
    assert (tmp_path / "report.md").is_file() and (tmp_path / "pareto.png").is_file()
