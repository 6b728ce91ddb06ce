"""Tiny models and data for the harness tests, built once per session.

Imported by tests/test_harness.py and tests/test_cli_eval.py (``from harness_fixtures import *``) rather than put in
conftest.py, so the fixtures stay next to the tests that use them.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

SAMPLES = 48
CLASSES = 10


@dataclass(frozen=True)
class ClassifierFiles:
    """One small CNN (8x8x1 -> 10 logits) in several .tflite variants, its .keras file and labelled data."""

    keras: Path
    float32: Path
    dynamic: Path
    int8: Path  # float32 I/O
    int8_io: Path  # int8 I/O
    uint8_io: Path
    int16x8: Path
    static_batch: Path  # same weights, batch fixed to 1 (per-sample path)
    two_outputs: Path  # same input 'image', outputs logits (10) and a value (1)
    data: Path  # x (48, 8, 8, 1) float32, y int labels
    unlabelled: Path  # the same x, no labels
    x: np.ndarray
    y: np.ndarray


@dataclass(frozen=True)
class MultiFiles:
    """Two inputs ('pixels' 8x8x1, 'extra' 4) and two outputs (class scores over 6, a regression value)."""

    float32: Path
    data: Path


def _convert(model, path: Path, *, mode: str = "float32", calibration: np.ndarray | None = None, io: str = "float32") -> Path:
    import tensorflow as tf

    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    if mode != "float32":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    if mode in ("int8", "16x8"):
        def representative():
            for position in range(len(calibration)):
                yield [calibration[position:position + 1]]

        converter.representative_dataset = representative
        converter.target_spec.supported_ops = [
            tf.lite.OpsSet.TFLITE_BUILTINS_INT8 if mode == "int8"
            else tf.lite.OpsSet.EXPERIMENTAL_TFLITE_BUILTINS_ACTIVATIONS_INT16_WEIGHTS_INT8
        ]
        if io != "float32":
            converter.inference_input_type = {"int8": tf.int8, "uint8": tf.uint8, "int16": tf.int16}[io]
            converter.inference_output_type = converter.inference_input_type
    path.write_bytes(converter.convert())
    return path


def _classifier_layers(keras, inputs):
    hidden = keras.layers.Conv2D(8, 3, activation="relu", name="conv")(inputs)
    hidden = keras.layers.DepthwiseConv2D(3, activation="relu", name="depthwise")(hidden)
    hidden = keras.layers.Flatten(name="flatten")(hidden)
    return keras.layers.Dense(CLASSES, name="logits")(hidden)


# Each test module that imports these fixtures gets its own copy of them; the builds are shared through this cache.
_BUILT: dict[str, object] = {}


@pytest.fixture(scope="session")
def classifier(tmp_path_factory: pytest.TempPathFactory) -> ClassifierFiles:
    if "classifier" not in _BUILT:
        _BUILT["classifier"] = _build_classifier(tmp_path_factory.mktemp("classifier"))
    return _BUILT["classifier"]  # type: ignore[return-value]


def _build_classifier(folder: Path) -> ClassifierFiles:
    import keras

    keras.utils.set_random_seed(7)
    inputs = keras.Input((8, 8, 1), name="image")
    model = keras.Model(inputs, _classifier_layers(keras, inputs))
    generator = np.random.default_rng(3)
    x = generator.random((SAMPLES, 8, 8, 1), dtype=np.float32)
    logits = model.predict(x, verbose=0)
    # Labels: the float model's answer for most samples, a wrong one for a few, so accuracy is neither 0 nor 100.
    y = logits.argmax(axis=1).astype(np.int64)
    y[::5] = (y[::5] + 1) % CLASSES
    data = folder / "data.npz"
    np.savez(data, x=x, y=y)
    keras_path = folder / "classifier.keras"
    model.save(keras_path)

    static_inputs = keras.Input((8, 8, 1), batch_size=1, name="image")
    static_model = keras.Model(static_inputs, _classifier_layers(keras, static_inputs))
    static_model.set_weights(model.get_weights())

    two_inputs = keras.Input((8, 8, 1), name="image")
    two_hidden = keras.layers.Flatten()(two_inputs)
    two_headed = keras.Model(two_inputs, [keras.layers.Dense(CLASSES)(two_hidden), keras.layers.Dense(1)(two_hidden)])
    unlabelled = folder / "unlabelled.npz"
    np.savez(unlabelled, x=x)

    calibration = x[:24]
    return ClassifierFiles(
        keras=keras_path,
        float32=_convert(model, folder / "classifier.float32.tflite"),
        dynamic=_convert(model, folder / "classifier.dynamic.tflite", mode="dynamic"),
        int8=_convert(model, folder / "classifier.int8.tflite", mode="int8", calibration=calibration),
        int8_io=_convert(model, folder / "classifier.int8.int8.tflite", mode="int8", calibration=calibration, io="int8"),
        uint8_io=_convert(model, folder / "classifier.int8.uint8.tflite", mode="int8", calibration=calibration, io="uint8"),
        int16x8=_convert(model, folder / "classifier.16x8.tflite", mode="16x8", calibration=calibration),
        static_batch=_convert(static_model, folder / "classifier.static.tflite"),
        two_outputs=_convert(two_headed, folder / "two_outputs.float32.tflite"),
        data=data,
        unlabelled=unlabelled,
        x=x,
        y=y,
    )


@pytest.fixture(scope="session")
def multi(tmp_path_factory: pytest.TempPathFactory) -> MultiFiles:
    if "multi" not in _BUILT:
        _BUILT["multi"] = _build_multi(tmp_path_factory.mktemp("multi"))
    return _BUILT["multi"]  # type: ignore[return-value]


def _build_multi(folder: Path) -> MultiFiles:
    import keras

    keras.utils.set_random_seed(11)
    pixels = keras.Input((8, 8, 1), name="pixels")
    extra = keras.Input((4,), name="extra")
    joined = keras.layers.Concatenate()([keras.layers.Flatten()(pixels), extra])
    hidden = keras.layers.Dense(16, activation="relu")(joined)
    scores = keras.layers.Dense(6, name="scores")(hidden)
    value = keras.layers.Dense(1, name="value")(hidden)
    model = keras.Model([pixels, extra], [scores, value])
    generator = np.random.default_rng(5)
    count = 30
    arrays = {
        "pixels": generator.random((count, 8, 8, 1), dtype=np.float32),
        "extra": generator.random((count, 4), dtype=np.float32),
    }
    scores_out, value_out = model.predict([arrays["pixels"], arrays["extra"]], verbose=0)
    data = folder / "multi.npz"
    np.savez(
        data,
        **arrays,
        y_output_0=scores_out.argmax(axis=1),
        y_output_1=(value_out + 0.5).astype(np.float32),
    )
    return MultiFiles(float32=_convert(model, folder / "multi.float32.tflite"), data=data)


@pytest.fixture()
def broken_files(tmp_path: Path, classifier: ClassifierFiles) -> dict[str, Path]:
    """Files the interpreter must refuse: random bytes, a truncated model, an empty file."""
    random_bytes = tmp_path / "random.tflite"
    random_bytes.write_bytes(np.random.default_rng(0).integers(0, 256, 2000, dtype=np.uint8).tobytes())
    truncated = tmp_path / "truncated.tflite"
    truncated.write_bytes(classifier.float32.read_bytes()[:1500])
    empty = tmp_path / "empty.tflite"
    empty.write_bytes(b"")
    return {"random": random_bytes, "truncated": truncated, "empty": empty}


def strip_signatures(source: Path, target: Path, *, unknown_custom_op: bool = False) -> Path:
    """Rewrite a .tflite without its SignatureDefs (as some third-party files come), with the flatbuffer schema that
    ships with ai_edge_litert. ``unknown_custom_op`` also turns the first op into a custom op no resolver knows, so
    the interpreter refuses the file while its flatbuffer stays readable."""
    import flatbuffers
    from ai_edge_litert import schema_py_generated as schema

    content = source.read_bytes()
    model = schema.ModelT.InitFromObj(schema.Model.GetRootAs(content, 0))
    model.signatureDefs = []
    if unknown_custom_op:
        model.operatorCodes[0].builtinCode = schema.BuiltinOperator.CUSTOM
        model.operatorCodes[0].deprecatedBuiltinCode = schema.BuiltinOperator.CUSTOM
        model.operatorCodes[0].customCode = b"TflqNoSuchOp"
    builder = flatbuffers.Builder(len(content) + 1024)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    target.write_bytes(bytes(builder.Output()))
    return target


__all__ = ["strip_signatures", "ClassifierFiles", "MultiFiles", "classifier", "multi", "broken_files", "SAMPLES", "CLASSES"]
