"""``tflq debug --mode MODE`` for the LiteRT Quantizer modes: layers ranked by the mode's own error (each op
quantized alone, compared with float32 side by side), named by Keras layers; the accuracy checks keep a layer at
int8 weights (int4 modes).

Real TensorFlow, LiteRT and LiteRT Quantizer on the digits CNN. Measured here (100 test samples for the errors):
int4-weights own SQNR 23.2 dB (logits), 25.5 (conv1+relu1), 26.3 (dense1); the bounds below (10 to 60 dB) fail a
broken comparison (a wrong tensor, an unquantized model: "exact") without depending on the CPU's rounding.
"""
from __future__ import annotations

import json

import pytest

from tests.cli_helpers import assert_usage_error, invoke
from tests.sample_paths import SAMPLES

CNN = str(SAMPLES / "digits_cnn.keras")
TRAIN = str(SAMPLES / "digits_train.npz")
TEST = str(SAMPLES / "digits_test.npz")
LAYERS = {"conv1+relu1", "dwconv2+bn2+relu2", "pool2", "flatten", "dense1", "logits"}


def _debug(*args: str) -> dict:
    result = invoke("debug", CNN, "--layer-samples", "20", "--json", *args)
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


@pytest.mark.slow
def test_int4_weights_ranking_names_keras_layers_and_recovers_at_int8() -> None:
    report = _debug("--mode", "int4-weights", "--data", TEST, "--eval-samples", "120", "--top", "2")
    assert report["mode"] == "int4-weights" and report["kept_at"] == "int8"
    assert set(report["ranking"]) <= LAYERS and {"dense1", "logits"} <= set(report["ranking"]), report["ranking"]
    sensitivities = [min(op["sqnr_db"], op["channel_sqnr_db"]) for op in report["ops"]]
    assert sensitivities == sorted(sensitivities), "most sensitive first"
    for op in report["ops"]:
        assert 10 < op["sqnr_db"] < 60, op
        assert op["accumulated_sqnr_db"] is not None, op
    check = report["accuracy"]
    assert check["mode"] == "int4-weights" and "int8" not in check
    assert 0.9 < check["quantized"] <= 1.0 and 0.9 < check["float32"] <= 1.0
    assert [entry["label"] for entry in check["in_float"]] == report["ranking"][:2]
    assert all(entry["accuracy"] is not None and entry["error"] is None for entry in check["in_float"])


@pytest.mark.slow
def test_int4x8_calibrated_ranking_and_markdown(tmp_path) -> None:
    out = tmp_path / "report.md"
    result = invoke("debug", CNN, "--mode", "int4x8", "--calib", TRAIN, "--calib-samples", "30",
                    "--layer-samples", "20", "-o", str(out))
    assert result.exit_code == 0, result.output
    text = out.read_text()
    assert "mode int4x8, layer errors on 20 sample(s)" in text
    rows = [line for line in text.splitlines() if line.startswith("| ") and line[2].isdigit()]
    assert rows and all(any(f"| {layer} |" in row for layer in LAYERS) for row in rows), rows


def test_debug_mode_refusals_are_one_line() -> None:
    result = invoke("debug", CNN, "--mode", "float16")
    assert result.exit_code == 2 and "float16" in result.output
    assert_usage_error(invoke("debug", CNN, "--mode", "int4-weights"), "needs samples", "--data", "--calib")


@pytest.mark.slow
def test_kept_layers_really_change_precision(tmp_path) -> None:
    """The recovery variants are the mode's build with the group's ops at int8 weights (checked in the file)."""
    from pathlib import Path

    from tflq._tf.litert_rules import op_precisions
    from tflq.convert.options import ConvertOptions
    from tflq.convert.session import ModelSession
    from tflq.debug.engine_error import build, with_layers
    from tflq.modes import MODES, Variant

    options = ConvertOptions(modes=("int4-weights",))
    session = ModelSession(Path(CNN), options, tmp_path)
    base = options.settings(Variant("int4-weights"))
    logits = next(op.tensor for op in session.model_ops() if op.layers == ("logits",))
    dense1 = next(op.tensor for op in session.model_ops() if op.layers == ("dense1",))
    mode = MODES["int4-weights"]
    kept = op_precisions(build(session, mode, with_layers(base, precise=[logits], precision="int8")))
    assert kept[logits].weights == "int8" and kept[dense1].weights == "int4", kept
    alone = op_precisions(build(session, mode, with_layers(base, float_nodes=[dense1])))
    assert alone[dense1].weights == "float32" and alone[logits].weights == "int4", alone
