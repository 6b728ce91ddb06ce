"""Quantization-aware training: the Keras 3 -> tf_keras bridge, loss resolution, training, export and conversion.

Real TensorFlow, no mocks; the models are tiny and built in session fixtures.
"""
from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from tflq.errors import ConversionError, DataError, ModelLoadError, QatError, QatTrainingError, UsageError  # noqa: E402
from tflq.qat import quantize_aware as qat  # noqa: E402
from tflq.qat.bridge import bridge_to_tf_keras, sample_inputs_for  # noqa: E402

# ------------------------------------------------------------------------------------------------ fixtures


@pytest.fixture(scope="session")
def digits() -> dict[str, np.ndarray]:
    """sklearn's bundled 8x8 digits, scaled to [0, 1], split 75/25 stratified."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    bunch = load_digits()
    images = (bunch.images / 16.0).astype(np.float32)[..., None]
    x_train, x_test, y_train, y_test = train_test_split(
        images, bunch.target, test_size=0.25, random_state=0, stratify=bunch.target
    )
    return {"x_train": x_train, "y_train": y_train, "x_test": x_test, "y_test": y_test}


@pytest.fixture(scope="session")
def digits_cnn(digits: dict[str, np.ndarray]):
    """A Keras 3 Sequential CNN trained on digits (so BatchNormalization has real moving statistics)."""
    import keras

    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [
            keras.Input((8, 8, 1), name="image"),
            keras.layers.Conv2D(16, 3, padding="same"),
            keras.layers.BatchNormalization(),
            keras.layers.ReLU(),
            keras.layers.DepthwiseConv2D(3, padding="same", activation="relu"),
            keras.layers.MaxPooling2D(),
            keras.layers.Flatten(),
            keras.layers.Dropout(0.1),
            keras.layers.Dense(32, activation="relu"),
            keras.layers.Dense(10, activation="softmax", name="probabilities"),
        ],
        name="digits_cnn",
    )
    model.compile(optimizer=keras.optimizers.Adam(3e-3), loss="sparse_categorical_crossentropy",
                  metrics=["accuracy"])
    model.fit(digits["x_train"], digits["y_train"], epochs=8, batch_size=32, verbose=0)
    return model


def _randomize_batchnorm(model) -> None:
    """Give every BatchNormalization non-trivial statistics, so a wrong weight order would show."""
    import keras

    rng = np.random.default_rng(1)
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            gamma, beta, mean, variance = layer.get_weights()
            layer.set_weights([rng.uniform(0.5, 1.5, gamma.shape), rng.normal(0, 0.3, beta.shape),
                               rng.normal(0, 0.5, mean.shape), rng.uniform(0.5, 2.0, variance.shape)])


@pytest.fixture(scope="session")
def multi_io():
    """A Keras 3 Functional model: two inputs, Concatenate, Add, a shared Dense, two outputs; compiled per output."""
    import keras

    keras.utils.set_random_seed(1)
    image = keras.Input((8, 8, 1), name="image")
    extra = keras.Input((6,), name="extra")
    features = keras.layers.Conv2D(4, 3, padding="same")(image)
    features = keras.layers.BatchNormalization(name="features_bn")(features)  # tfmot folds Conv2D + BN (+ ReLU)
    features = keras.layers.ReLU()(features)
    features = keras.layers.GlobalAveragePooling2D()(features)
    projected = keras.layers.Dense(4, name="project_extra")(extra)
    merged = keras.layers.Concatenate()([features, projected])
    hidden = keras.layers.Dense(8, activation="relu", name="hidden")(merged)
    shared = keras.layers.Dense(8, name="shared")
    summed = keras.layers.Add()([shared(hidden), shared(keras.layers.Dense(8, name="extra_hidden")(extra))])
    digit = keras.layers.Dense(10, name="digit")(summed)
    value = keras.layers.Dense(1, name="value")(summed)
    model = keras.Model([image, extra], [digit, value], name="multi_io")
    _randomize_batchnorm(model)
    model.compile(optimizer="adam",
                  loss={"digit": keras.losses.SparseCategoricalCrossentropy(from_logits=True), "value": "mse"})
    return model


def _max_difference(keras3_model, twin, inputs) -> float:
    import tensorflow as tf

    feed = inputs[0] if len(inputs) == 1 else inputs
    expected = tf.nest.flatten(keras3_model(feed, training=False))
    found = tf.nest.flatten(twin(feed, training=False))
    assert len(expected) == len(found)
    return max(float(np.max(np.abs(np.asarray(e) - np.asarray(f)))) for e, f in zip(expected, found))


# ------------------------------------------------------------------------------------------------ the bridge


def test_bridge_sequential_cnn_gives_same_outputs(digits_cnn, digits):
    import tf_keras

    twin = bridge_to_tf_keras(digits_cnn)
    assert isinstance(twin, tf_keras.Model)
    assert twin.input_names == ["image"] and twin.output_names == ["probabilities"]
    assert [layer.name for layer in twin.layers[1:]] == [layer.name for layer in digits_cnn.layers]
    assert _max_difference(digits_cnn, twin, [digits["x_test"]]) < 1e-5
    assert _max_difference(digits_cnn, twin, sample_inputs_for(digits_cnn, count=16, seed=3)) < 1e-5


def test_bridge_functional_multi_io_gives_same_outputs(multi_io):
    twin = bridge_to_tf_keras(multi_io)
    assert twin.input_names == ["image", "extra"]
    assert twin.output_names == ["digit", "value"]
    shared = twin.get_layer("shared")
    assert len(shared._inbound_nodes) == 2  # still one shared layer, called twice
    assert _max_difference(multi_io, twin, sample_inputs_for(multi_io, count=16, seed=5)) < 1e-5


def test_bridge_inlines_nested_models_and_keeps_training_false():
    import keras

    keras.utils.set_random_seed(2)
    base = keras.Sequential([keras.Input((8, 8, 1)), keras.layers.Conv2D(4, 3, name="base_conv"),
                             keras.layers.BatchNormalization(name="base_bn"), keras.layers.ReLU(name="base_relu")],
                            name="base")
    _randomize_batchnorm(base)
    inputs = keras.Input((8, 8, 1), name="pixels")
    features = base(inputs, training=False)
    outputs = keras.layers.Dense(3, name="head")(keras.layers.GlobalAveragePooling2D()(features))
    model = keras.Model(inputs, outputs)
    twin = bridge_to_tf_keras(model)
    assert "base_bn" in [layer.name for layer in twin.layers]  # flat: tfmot refuses nested models
    bn_node = twin.get_layer("base_bn")._inbound_nodes[0]
    assert bn_node.call_kwargs.get("training") is False
    assert _max_difference(model, twin, sample_inputs_for(model, seed=4)) < 1e-5


def test_bridge_refuses_lambda_layer_by_name():
    import keras

    model = keras.Sequential([keras.Input((4,)), keras.layers.Lambda(lambda t: t * 2.0, name="double"),
                              keras.layers.Dense(2)])
    with pytest.raises(QatError, match=r"layer 'double' \(Lambda\).*int8.*16x8"):
        bridge_to_tf_keras(model)


def test_bridge_refuses_subclassed_model():
    import keras

    class TwoDense(keras.Model):
        def __init__(self):
            super().__init__(name="two_dense")
            self.first = keras.layers.Dense(4)
            self.second = keras.layers.Dense(2)

        def call(self, inputs):
            return self.second(self.first(inputs))

    model = TwoDense()
    model(np.zeros((1, 3), np.float32))
    with pytest.raises(QatError, match=r"'two_dense' is a subclassed model \(class TwoDense\).*int8"):
        bridge_to_tf_keras(model)


def test_bridge_refuses_custom_layer_by_name():
    import keras

    class Scale(keras.layers.Layer):
        def call(self, inputs):
            return inputs * 3.0

    model = keras.Sequential([keras.Input((4,)), Scale(name="triple"), keras.layers.Dense(2)])
    with pytest.raises(QatError, match=r"layer 'triple' \(Scale\) is a custom layer"):
        bridge_to_tf_keras(model)


def test_bridge_reports_first_differing_layer():
    """Keras 3 hard_sigmoid is relu6(x + 3) / 6, tf_keras's is 0.2 x + 0.5: the output check catches it."""
    import keras

    keras.utils.set_random_seed(3)
    model = keras.Sequential([keras.Input((6,)), keras.layers.Dense(6, name="before"),
                              keras.layers.Activation("hard_sigmoid", name="hard_act"),
                              keras.layers.Dense(2, name="after")])
    with pytest.raises(ConversionError, match=r"first differing layer: 'hard_act' \(Activation\)"):
        bridge_to_tf_keras(model)


def test_gru_model_bridges_but_qat_names_the_layer():
    import keras

    model = keras.Sequential([keras.Input((8, 8), name="rows"), keras.layers.GRU(6, name="row_reader"),
                              keras.layers.Dense(10, name="logits")])
    twin = bridge_to_tf_keras(model)  # the bridge itself handles GRU (reset_after weights included)
    assert _max_difference(model, twin, sample_inputs_for(model, seed=6)) < 1e-5
    with pytest.raises(QatError, match=r"layer 'row_reader' \(GRU\) cannot be quantization-aware trained.*int8.*16x8"):
        qat.check_qat_support(model)


def test_bridge_translates_renamed_options():
    import keras

    model = keras.Sequential([keras.Input((6,)), keras.layers.Dense(6), keras.layers.LeakyReLU(negative_slope=0.05),
                              keras.layers.LayerNormalization(), keras.layers.Dense(2)])
    twin = bridge_to_tf_keras(model)
    assert twin.layers[2].alpha == pytest.approx(0.05)


def test_bridge_rebuild_failure_names_layer_and_reason():
    import keras

    model = keras.Sequential([keras.Input((6,)), keras.layers.Dense(3, activation="hard_silu", name="hard")])
    with pytest.raises(QatError, match=r"layer 'hard' \(Dense\) cannot be rebuilt in tf_keras for QAT "
                                       r"\(Unknown activation function 'hard_silu'.*16x8"):
        bridge_to_tf_keras(model)


@pytest.mark.parametrize(
    "case, message",
    [
        ("relu6_in_dense", r"layer 'squash' \(Dense\): tfmot cannot quantize activation relu6 inside a Dense "
                           r"\(a separate ReLU\(max_value=6\) layer would do\)"),
        ("integer_input", r"input 'tokens' is int32: QAT quantizes float inputs only"),
    ],
)
def test_qat_refusals_name_the_cause(case, message):
    import keras

    if case == "relu6_in_dense":
        model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3, activation="relu6", name="squash")])
    else:
        model = keras.Sequential([keras.Input((5,), dtype="int32", name="tokens"), keras.layers.Embedding(10, 4),
                                  keras.layers.Flatten(), keras.layers.Dense(2)])
    with pytest.raises(QatError, match=message):
        qat.check_qat_support(model)


def test_check_qat_support_accepts_the_cnn(digits_cnn):
    qat.check_qat_support(digits_cnn)


# ------------------------------------------------------------------------------------------------ the loss


def test_loss_from_keras3_compile_config(digits_cnn):
    (spec,) = qat.resolve_loss(digits_cnn)
    assert spec == qat.LossSpec("sparse_categorical_crossentropy", False, source="compile config")


def test_loss_carried_through_the_bridge_per_output(multi_io):
    specs = qat.resolve_loss(bridge_to_tf_keras(multi_io))
    assert [spec.describe() for spec in specs] == [
        "sparse_categorical_crossentropy(from_logits=True)", "mean_squared_error()"]
    assert {spec.source for spec in specs} == {"compile config"}


def test_explicit_loss_applies_to_every_output_and_overrides(multi_io):
    specs = qat.resolve_loss(multi_io, loss="mse")
    assert specs == (qat.LossSpec("mean_squared_error"),) * 2
    (spec,) = qat.resolve_loss(_uncompiled(), loss="SparseCategoricalCrossentropy", from_logits=True)
    assert spec.describe() == "sparse_categorical_crossentropy(from_logits=True)"


def test_one_label_array_for_two_outputs_is_refused(multi_io, digits):
    twin = bridge_to_tf_keras(multi_io)
    specs = qat.resolve_loss(twin)
    with pytest.raises(DataError) as caught:
        qat.check_training_labels(twin, specs, [digits["y_train"]], "labels.npz")
    assert str(caught.value) == "labels.npz: 1 label arrays for the model's 2 outputs ['digit', 'value']"


def _uncompiled():
    import keras

    return keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)])


def test_missing_loss_says_how_to_give_it():
    with pytest.raises(UsageError, match=r"no loss to train with.*--loss NAME \[--from-logits\].*qat: \{loss: NAME"):
        qat.resolve_loss(_uncompiled())


def test_unknown_loss_suggests_close_names():
    with pytest.raises(UsageError, match=r"unknown loss 'sparse_categorical_crossentropi'.*did you mean "
                                         r"sparse_categorical_crossentropy"):
        qat.resolve_loss(_uncompiled(), loss="sparse_categorical_crossentropi")


def test_from_logits_contradicting_saved_loss_is_refused(digits_cnn):
    with pytest.raises(UsageError, match=r"from_logits=True contradicts the model's saved loss.*--loss "
                                         r"sparse_categorical_crossentropy --from-logits"):
        qat.resolve_loss(digits_cnn, from_logits=True)
    with pytest.raises(UsageError, match="from_logits does not apply to loss 'mean_squared_error'"):
        qat.resolve_loss(_uncompiled(), loss="mse", from_logits=True)


def test_custom_saved_loss_is_refused_with_the_way_out():
    import keras

    def my_loss(y_true, y_pred):
        return keras.ops.mean(keras.ops.abs(y_true - y_pred))

    model = _uncompiled()
    model.compile(optimizer="adam", loss=my_loss)
    with pytest.raises(QatError, match=r"'my_loss', which is not a built-in loss.*--loss NAME"):
        qat.resolve_loss(model)
    assert qat.resolve_loss(model, loss="mae")[0].name == "mean_absolute_error"


# ------------------------------------------------------------------------------------------------ loading


def test_load_keras_file_bridges_and_keeps_loss(digits_cnn, digits, tmp_path):
    path = tmp_path / "cnn.keras"
    digits_cnn.save(path)
    twin = qat.load_for_qat(path)
    assert _max_difference(digits_cnn, twin, [digits["x_test"][:64]]) < 1e-5
    assert qat.resolve_loss(twin)[0].name == "sparse_categorical_crossentropy"


@pytest.mark.filterwarnings("ignore:You are saving your model as an HDF5 file")
def test_load_legacy_h5_goes_straight_to_tf_keras(tmp_path):
    import tf_keras

    model = tf_keras.Sequential([tf_keras.Input((4,), name="features"), tf_keras.layers.Dense(3, name="out")])
    model.compile(optimizer="adam", loss=tf_keras.losses.CategoricalCrossentropy(from_logits=True))
    path = tmp_path / "legacy.h5"
    model.save(path)
    loaded = qat.load_for_qat(path)
    assert isinstance(loaded, tf_keras.Model)
    np.testing.assert_allclose(loaded.get_layer("out").get_weights()[0], model.get_layer("out").get_weights()[0])
    assert qat.resolve_loss(loaded)[0].describe() == "categorical_crossentropy(from_logits=True)"


def test_load_keras3_h5_is_bridged(digits_cnn, digits, tmp_path):
    path = tmp_path / "keras3.h5"
    digits_cnn.save(path)
    twin = qat.load_for_qat(path)
    assert _max_difference(digits_cnn, twin, [digits["x_test"][:64]]) < 1e-5


def test_load_refuses_lambda_before_running_it(tmp_path):
    import keras

    model = keras.Sequential([keras.Input((4,)), keras.layers.Lambda(lambda t: t + 1.0, name="shift"),
                              keras.layers.Dense(2)])
    path = tmp_path / "lambda.keras"
    model.save(path)
    with pytest.raises(QatError, match=r"layer 'shift' \(Lambda\).*16x8"):
        qat.load_for_qat(path, unsafe=True)


def test_load_refuses_savedmodel_without_keras_metadata(digits_cnn, tmp_path):
    digits_cnn.export(tmp_path / "exported", verbose=False)
    with pytest.raises(QatError, match=r"no Keras metadata.*\.keras or \.h5"):
        qat.load_for_qat(tmp_path / "exported")


def test_load_tf_keras_savedmodel_with_metadata(tmp_path):
    import tf_keras

    model = tf_keras.Sequential([tf_keras.Input((4,), name="features"), tf_keras.layers.Dense(3, name="out")])
    model.save(tmp_path / "tf_keras_savedmodel", save_format="tf")
    loaded = qat.load_for_qat(tmp_path / "tf_keras_savedmodel")
    np.testing.assert_allclose(loaded.get_layer("out").get_weights()[0], model.get_layer("out").get_weights()[0])


def test_load_refuses_custom_layer_from_config_alone(tmp_path):
    import keras

    @keras.saving.register_keras_serializable(package="tests")
    class Twice(keras.layers.Layer):
        def call(self, inputs):
            return inputs * 2.0

    model = keras.Sequential([keras.Input((4,)), Twice(name="twice"), keras.layers.Dense(2)])
    path = tmp_path / "custom.keras"
    model.save(path)
    with pytest.raises(QatError, match=r"layer 'twice' \(Twice\) is a custom layer"):
        qat.load_for_qat(path)


def test_load_missing_or_unknown_file(tmp_path):
    with pytest.raises(ModelLoadError, match="no such file"):
        qat.load_for_qat(tmp_path / "nothing.keras")
    (tmp_path / "model.onnx").write_bytes(b"x")
    with pytest.raises(ModelLoadError, match=r"expected \.keras, \.h5"):
        qat.load_for_qat(tmp_path / "model.onnx")


# ------------------------------------------------------------------------------------------------ training


def test_train_rejects_bad_settings_and_data(digits_cnn, digits):
    with pytest.raises(UsageError, match="epochs must be a positive integer"):
        qat.train_qat(digits_cnn, (digits["x_train"], digits["y_train"]), epochs=0)
    with pytest.raises(DataError, match=r"input 'image': expected samples of shape \(8, 8, 1\), found \(8, 8\)"):
        qat.train_qat(digits_cnn, (digits["x_train"][..., 0], digits["y_train"]))
    with pytest.raises(DataError, match="different numbers of samples"):
        qat.train_qat(digits_cnn, (digits["x_train"], digits["y_train"][:10]))


def test_training_is_reproducible_with_a_seed():
    import keras

    keras.utils.set_random_seed(4)
    model = keras.Sequential([keras.Input((6,), name="features"), keras.layers.Dense(8, activation="relu"),
                              keras.layers.Dense(3)])
    rng = np.random.default_rng(0)
    data = (rng.random((48, 6), np.float32), rng.integers(0, 3, 48))
    settings = dict(epochs=2, batch_size=8, loss="sparse_categorical_crossentropy", from_logits=True, seed=7)
    first = qat.train_qat(model, data, **settings)
    second = qat.train_qat(model, data, **settings)
    assert first.history == second.history
    assert set(first.history) == {"loss", "accuracy"}
    assert first.losses[0].source == "explicit"


def test_diverging_training_is_an_error():
    import keras

    model = keras.Sequential([keras.Input((3,), name="features"), keras.layers.Dense(1, name="value")])
    x = np.ones((16, 3), np.float32)
    y = np.full((16, 1), 1e30, np.float32)  # squared error overflows float32
    with pytest.raises(QatTrainingError, match=r"QAT training diverged in epoch 1 of 2.*lower learning rate"):
        qat.train_qat(model, (x, y), epochs=2, loss="mse")


def test_progress_bar_goes_to_stderr(capfd):
    import keras

    model = keras.Sequential([keras.Input((3,), name="features"), keras.layers.Dense(2, name="scores")])
    data = (np.ones((8, 3), np.float32), np.zeros(8, np.int64))
    qat.train_qat(model, data, epochs=1, loss="sparse_categorical_crossentropy", from_logits=True, progress=True)
    captured = capfd.readouterr()
    assert "accuracy" in captured.err and "accuracy" not in captured.out


@pytest.mark.slow
def test_multi_io_trains_exports_and_converts(multi_io, tmp_path):
    rng = np.random.default_rng(0)
    x = {"image": rng.random((64, 8, 8, 1), np.float32), "extra": rng.random((64, 6), np.float32)}
    y = {"digit": rng.integers(0, 10, 64), "value": rng.random((64, 1), np.float32)}
    result = qat.train_qat(multi_io, (x, y), epochs=1, batch_size=16, val=(x, y))
    assert {"digit_loss", "value_loss", "digit_accuracy", "val_digit_accuracy"} <= set(result.history)
    export = qat.export_qat_saved_model(result, tmp_path / "multi_io_qat")
    assert export.input_names == ("image", "extra") and export.output_names == ("digit", "value")
    tflite_model = qat.convert_qat(export, io_type="int8", representative_inputs=x)
    interpreter = _interpreter(tflite_model)
    assert interpreter.get_signature_list()["serving_default"] == {"inputs": ["extra", "image"],
                                                                   "outputs": ["digit", "value"]}
    runner = interpreter.get_signature_runner()
    assert {detail["dtype"] for detail in runner.get_input_details().values()} == {np.int8}
    assert {detail["dtype"] for detail in runner.get_output_details().values()} == {np.int8}


def _interpreter(tflite_model: bytes):
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_content=tflite_model)
    interpreter.allocate_tensors()
    return interpreter


def _tflite_accuracy(tflite_model: bytes, x: np.ndarray, y: np.ndarray) -> float:
    interpreter = _interpreter(tflite_model)
    runner = interpreter.get_signature_runner()
    (name, detail), = runner.get_input_details().items()
    (out_name, out_detail), = runner.get_output_details().items()
    correct = 0
    for sample, label in zip(x, y):
        feed = sample[None]
        if detail["dtype"] != np.float32:
            scale, zero_point = detail["quantization"]
            info = np.iinfo(detail["dtype"])
            feed = np.clip(np.round(feed / scale + zero_point), info.min, info.max).astype(detail["dtype"])
        scores = runner(**{name: feed})[out_name]
        correct += int(np.argmax(scores) == label)
    return correct / len(y)


@pytest.fixture(scope="session")
def digits_qat(digits_cnn, digits, tmp_path_factory):
    """The digits CNN fine-tuned with QAT for 2 epochs and exported; with the seconds each step took."""
    started = time.perf_counter()
    result = qat.train_qat(digits_cnn, (digits["x_train"], digits["y_train"]), epochs=2, batch_size=32,
                           learning_rate=1e-4, val=(digits["x_test"], digits["y_test"]), seed=0)
    trained = time.perf_counter()
    export = qat.export_qat_saved_model(result, tmp_path_factory.mktemp("qat") / "digits_qat")
    return result, export, {"train_qat": trained - started, "export": time.perf_counter() - trained}


@pytest.mark.slow
def test_digits_end_to_end_qat_int8_matches_float(digits_cnn, digits, digits_qat):
    result, export, seconds = digits_qat
    _, float_accuracy = digits_cnn.evaluate(digits["x_test"], digits["y_test"], verbose=0)
    started = time.perf_counter()
    tflite_model = qat.convert_qat(export, io_type="int8", representative_inputs=digits["x_train"])
    seconds["convert"] = time.perf_counter() - started
    int8_accuracy = _tflite_accuracy(tflite_model, digits["x_test"], digits["y_test"])
    print(f"\nfloat32 {float_accuracy:.4f}  qat int8 {int8_accuracy:.4f}  val {result.history['val_accuracy']}  "
          f"fit {result.seconds:.1f}s  " + "  ".join(f"{step} {value:.1f}s" for step, value in seconds.items()))
    assert float_accuracy > 0.9
    assert len(result.history["val_accuracy"]) == 2
    assert int8_accuracy >= float_accuracy - 0.01
    interpreter = _interpreter(tflite_model)
    (detail,) = interpreter.get_input_details()
    assert detail["name"] == "serving_default_image:0" and list(detail["shape_signature"]) == [-1, 8, 8, 1]
    assert detail["dtype"] == np.int8 and interpreter.get_output_details()[0]["dtype"] == np.int8


@pytest.mark.slow
@pytest.mark.parametrize("io_type", ["float32", "int8", "uint8"])
def test_io_types_without_representative_data(digits_cnn, digits, digits_qat, io_type):
    """QAT ranges alone give full-integer models (the converter needs no representative data when not strict)."""
    _, export, _ = digits_qat
    tflite_model = qat.convert_qat(export, io_type=io_type)
    interpreter = _interpreter(tflite_model)
    (detail,) = interpreter.get_input_details()
    assert detail["dtype"] == np.dtype(io_type)
    assert interpreter.get_output_details()[0]["dtype"] == np.dtype(io_type)
    _, float_accuracy = digits_cnn.evaluate(digits["x_test"], digits["y_test"], verbose=0)
    assert _tflite_accuracy(tflite_model, digits["x_test"], digits["y_test"]) >= float_accuracy - 0.01


def test_convert_rejects_unknown_io_type(tmp_path):
    export = qat.QatExport(Path(tmp_path), ("x",), ("y",))
    with pytest.raises(UsageError, match="io_type must be one of float32, int8, uint8"):
        qat.convert_qat(export, io_type="int16")
