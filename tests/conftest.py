"""Shared fixtures: the shipped sample models, tiny models built once per session, LiteRT helpers."""
from __future__ import annotations

import os
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np
import pytest

SAMPLES = Path(__file__).resolve().parent.parent / "sample_models"


@pytest.fixture(scope="session")
def samples() -> Path:
    return SAMPLES


@pytest.fixture(scope="session")
def digits_test() -> dict[str, np.ndarray]:
    with np.load(SAMPLES / "digits_test.npz") as archive:
        return {key: archive[key] for key in archive.files}


def run_tflite(path: Path | bytes, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Run a .tflite on float inputs (quantizing/dequantizing integer I/O), one sample at a time, by name."""
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=str(path)) if not isinstance(path, bytes) else Interpreter(model_content=path)
    runner = interpreter.get_signature_runner()
    in_details = runner.get_input_details()
    out_details = runner.get_output_details()
    count = len(next(iter(inputs.values())))
    results: dict[str, list[np.ndarray]] = {name: [] for name in out_details}
    for index in range(count):
        feeds = {}
        for name, detail in in_details.items():
            value = inputs[name][index : index + 1]
            dtype = np.dtype(detail["dtype"])
            if dtype.kind in "iu":
                scale, zero = detail["quantization"]
                info = np.iinfo(dtype)
                value = np.clip(np.round(value / scale + zero), info.min, info.max)
            feeds[name] = value.astype(dtype)
        outputs = runner(**feeds)
        for name, value in outputs.items():
            detail = out_details[name]
            if np.dtype(detail["dtype"]).kind in "iu":
                scale, zero = detail["quantization"]
                value = (value.astype(np.float32) - zero) * scale
            results[name].append(value[0])
    return {name: np.stack(values) for name, values in results.items()}


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Small models built once: a Lambda model, a while-loop GRU, a custom-layer model, a 2-signature SavedModel."""
    import keras
    import tensorflow as tf

    folder = tmp_path_factory.mktemp("tiny_models")
    paths: dict[str, Path] = {}
    keras.utils.set_random_seed(0)

    inputs = keras.Input((4,), name="x")
    doubled = keras.layers.Lambda(lambda t: t * 2.0, name="double")(inputs)
    keras.Model(inputs, keras.layers.Dense(2, name="out")(doubled)).save(folder / "lambda.keras")
    paths["lambda"] = folder / "lambda.keras"

    sequential = keras.Sequential(
        [keras.layers.Input((8, 8, 1)), keras.layers.Conv2D(4, 3, activation="relu"), keras.layers.Flatten(), keras.layers.Dense(10)]
    )
    sequential.save(folder / "sequential.keras")
    paths["sequential"] = folder / "sequential.keras"

    image = keras.Input((8, 8, 1), name="image")
    rows = keras.layers.Reshape((8, 8), name="rows")(image)
    logits = keras.layers.Dense(10, name="logits")(keras.layers.GRU(8, name="gru")(rows))
    keras.Model(image, logits).save(folder / "gru_loop.keras")
    paths["gru_loop"] = folder / "gru_loop.keras"

    module = folder / "tflq_test_custom_layers.py"
    module.write_text(
        "import keras\n\n"
        "@keras.saving.register_keras_serializable(package='tflq_test')\n"
        "class Scale(keras.layers.Layer):\n"
        "    def __init__(self, factor=2.0, **kwargs):\n"
        "        super().__init__(**kwargs)\n"
        "        self.factor = factor\n"
        "    def call(self, x):\n"
        "        return x * self.factor\n"
        "    def get_config(self):\n"
        "        return {**super().get_config(), 'factor': self.factor}\n"
    )
    import importlib.util
    import sys

    spec = importlib.util.spec_from_file_location("tflq_test_custom_layers", module)
    custom = importlib.util.module_from_spec(spec)
    assert spec.loader is not None
    spec.loader.exec_module(custom)
    x = keras.Input((4,), name="x")
    keras.Model(x, keras.layers.Dense(2, name="out")(custom.Scale(3.0, name="scale")(x))).save(folder / "custom.keras")
    sys.modules.pop("tflq_test_custom_layers", None)
    keras.saving.get_custom_objects().pop("tflq_test>Scale", None)
    paths["custom"] = folder / "custom.keras"
    paths["custom_module_dir"] = folder

    class TwoSignatures(tf.Module):
        def __init__(self) -> None:
            super().__init__()
            self.weight = tf.Variable(tf.ones([4, 2]))

        @tf.function(input_signature=[tf.TensorSpec([None, 4], tf.float32, name="x")])
        def first(self, x):
            return {"y": tf.matmul(x, self.weight)}

        @tf.function(input_signature=[tf.TensorSpec([None, 4], tf.float32, name="x")])
        def second(self, x):
            return {"y": tf.matmul(x, self.weight) * 2.0}

    module_obj = TwoSignatures()
    tf.saved_model.save(
        module_obj, str(folder / "two_signatures"), signatures={"first": module_obj.first, "second": module_obj.second}
    )
    paths["two_signatures"] = folder / "two_signatures"
    return paths
