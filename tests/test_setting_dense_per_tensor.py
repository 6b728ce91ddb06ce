"""Adding a setting is one declaration: ``ConvertOptions.dense_per_tensor`` (per-tensor Dense weights only).

It took the field in tflq/convert/options.py, its name in the ``settings`` of the modes that read it (dynamic, int8,
16x8) and its use in their builds. These tests check that the flag, the YAML key and its check, the generated docs
row and the cache key followed from that declaration, and that the setting does what it says: FULLY_CONNECTED
weights get one scale while convolutions keep one per channel, and the outputs match the public converter's.
"""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from tests.cli_helpers import assert_usage_error, convert
from tests.sample_paths import SAMPLES
from tflq.errors import ConfigError

CNN = str(SAMPLES / "digits_cnn.keras")
TRAIN = str(SAMPLES / "digits_train.npz")


def _weight_scales(path: Path) -> dict[str, int]:
    """Op type -> the number of scales of its weight tensor, for the CONV_2D and FULLY_CONNECTED ops."""
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=str(path))
    tensors = {detail["index"]: detail for detail in interpreter.get_tensor_details()}
    scales: dict[str, int] = {}
    for op in interpreter._get_ops_details():
        if op["op_name"] in ("CONV_2D", "FULLY_CONNECTED"):
            weights = tensors[op["inputs"][1]]
            count = len(weights["quantization_parameters"]["scales"])
            scales[op["op_name"]] = max(scales.get(op["op_name"], 0), count)
    return scales


@pytest.mark.slow
def test_dense_per_tensor_gives_dense_weights_one_scale_and_keeps_convolutions_per_channel(tmp_path: Path) -> None:
    plain = convert(CNN, "--mode", "int8", "--calib", TRAIN, "--calib-samples", "20", out=tmp_path / "a")
    assert plain.exit_code == 0, plain.output
    dense = convert(CNN, "--mode", "int8", "--dense-per-tensor", "--calib", TRAIN, "--calib-samples", "20",
                    out=tmp_path / "b")
    assert dense.exit_code == 0, dense.output
    before, after = (_weight_scales(tmp_path / folder / "digits_cnn.int8.tflite") for folder in ("a", "b"))
    assert before["FULLY_CONNECTED"] > 1 and after["FULLY_CONNECTED"] == 1
    assert after["CONV_2D"] == before["CONV_2D"] > 1


@pytest.mark.slow
def test_dense_per_tensor_matches_the_public_converter(tmp_path: Path) -> None:
    """The requantized int8 model equals what the public converter makes with the same private flag."""
    import keras
    import tensorflow as tf

    from tests.tflite_helpers import run_tflite

    result = convert(CNN, "--mode", "int8", "--dense-per-tensor", "--calib", TRAIN, "--calib-samples", "20",
                     out=tmp_path)
    assert result.exit_code == 0, result.output
    with np.load(TRAIN) as archive:
        samples = archive["x"][:20].astype("float32")
    converter = tf.lite.TFLiteConverter.from_keras_model(keras.models.load_model(CNN))
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    converter.representative_dataset = lambda: ([sample[None]] for sample in samples)
    converter._experimental_disable_per_channel_quantization_for_dense_layers = True
    public = bytes(converter.convert())
    inputs = {"image": samples}
    ours = run_tflite(tmp_path / "digits_cnn.int8.tflite", inputs)
    theirs = run_tflite(public, inputs)
    (ours_scores,), (their_scores,) = ours.values(), theirs.values()  # one output each (named differently)
    np.testing.assert_allclose(ours_scores, their_scores, atol=1e-6)


def test_dense_per_tensor_is_refused_where_no_mode_reads_it(tmp_path: Path) -> None:
    result = convert(CNN, "--mode", "float16", "--dense-per-tensor", out=tmp_path / "out")
    assert_usage_error(result, "--dense-per-tensor does not apply to mode(s) float16; it applies to dynamic, int8, 16x8")


def test_dense_per_tensor_is_a_checked_yaml_key_and_part_of_the_keys_of_its_modes_only(tmp_path: Path) -> None:
    from tflq.batch.config import load_config
    from tflq.batch.jobs import conversion_key
    from tflq.modes import Variant

    config = tmp_path / "batch.yaml"
    config.write_text(
        f"models:\n  - name: cnn\n    path: {CNN}\n    modes: [float32, int8]\n    dense_per_tensor: true\n"
        f"    calibration: {{data: {TRAIN}}}\n"
    )
    (job,) = load_config(config).models
    assert job.convert.dense_per_tensor is True
    other = replace(job, convert=replace(job.convert, dense_per_tensor=False))
    assert conversion_key(job, Variant("int8"), "m") != conversion_key(other, Variant("int8"), "m")
    assert conversion_key(job, Variant("float32"), "m") == conversion_key(other, Variant("float32"), "m")
    config.write_text(config.read_text().replace("dense_per_tensor: true", "dense_per_tensor: yes please"))
    with pytest.raises(ConfigError, match=r"batch.yaml:5: dense_per_tensor: expected true or false"):
        load_config(config)


def test_dense_per_tensor_is_in_the_generated_yaml_reference() -> None:
    from tflq.batch.schema import schema_rows

    rows = {row["yaml"]: row for _, table in schema_rows() for row in table}
    assert rows["dense_per_tensor"]["flag"] == "--dense-per-tensor" and rows["dense_per_tensor"]["default"] == "false"


def test_dense_per_tensor_in_yaml_for_modes_that_do_not_read_it_is_refused(tmp_path: Path) -> None:
    """The batch file's unread-setting check reads the registry: a new mode setting is covered without a list."""
    from tflq.batch.config import load_config

    config = tmp_path / "batch.yaml"
    config.write_text(f"models:\n  - name: m\n    path: {CNN}\n    modes: [float32]\n    dense_per_tensor: true\n")
    with pytest.raises(ConfigError, match=r"batch.yaml:5: model 'm': dense_per_tensor is read by mode\(s\) dynamic, "
                                          r"int8, 16x8 only, and its modes are float32"):
        load_config(config)
