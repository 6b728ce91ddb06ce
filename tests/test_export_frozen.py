"""The frozen export (``tflq/_tf/frozen.py``): a Keras model's serving function saved with its variables folded into
constants, which every conversion then starts from.

The claim checked here: the converter's float32, float16 and dynamic range files from the frozen export are the same
models as those from an export with variables (Keras' ``ExportArchive``, what tflq wrote before and what
``from_keras_model`` writes): the same ops (types in the same order), reading and writing the same tensors (name, shape,
type, constant data), the same signature, the same size, and outputs equal to the last bit on test images. The
order of tensors in the file, the numbers in the converter's own names for unnamed tensors (``arith.constantN``)
and the order of independent ops of one type may differ (on the digits CNN two constants change places; in the
float16 GRU two constant DEQUANTIZE ops), so the bytes can. Checked for
the shipped Keras 3 models (a CNN, an unrolled GRU, a two-input two-output model). The export with variables is
made by the same ``export_keras_model`` with the frozen path ruled out (its weight limit set below the model's
size), so the fallback is exercised too. A tf_keras model (the ``.h5``) keeps the export with variables: frozen, its
fused ops would be named after the constants (``conv1/BiasAdd/ReadVariableOp/resource``), a different file.
A model holding a lookup table, which cannot be frozen, still exports (with variables) and converts; a custom-gradient
activation (silu) is frozen. When two layers hold identical constants (BatchNormalization at its initial
statistics), the frozen names merge and the session names ops from an export with variables instead.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tests.sample_paths import SAMPLES
from tflq._tf import frozen
from tflq._tf.calibrated import saved_model_converter
from tflq.model.load import ModelOptions, export_keras_model, load_keras_model
from tflq.model.reference import Reference

UNNAMED = ("arith.constant", "tfl.")  # the converter's names for tensors without a TensorFlow name
MODELS = ("digits_cnn.keras", "digits_gru.keras", "digits_multi_io.keras")


def _convert(export_dir: Path, mode: str) -> bytes:
    import tensorflow as tf

    converter = saved_model_converter(str(export_dir), "serving_default")
    if mode != "float32":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    if mode == "float16":
        converter.target_spec.supported_types = [tf.float16]
    return bytes(converter.convert())


def _summary(content: bytes) -> dict[str, object]:
    """What a converted model computes, independent of the order its tensors are stored in: per subgraph the op
    types in order, and each op with its inputs and outputs (a constant by shape, type and data; any other tensor by
    name, shape and type, the converter's own numbered names such as ``tfl.dequantize3`` as "unnamed"), the names
    of the named constants, the subgraph's inputs and outputs, and the signatures. Ops of one type with no data
    dependency may change places (the float16 GRU's constant DEQUANTIZE ops do)."""
    from tensorflow.lite.tools import flatbuffer_utils

    model = flatbuffer_utils.read_model_from_bytearray(bytearray(content))
    summary: dict[str, object] = {"size": len(content), "subgraphs": len(model.subgraphs)}
    for number, graph in enumerate(model.subgraphs):
        def describe(index: int, graph: object = graph) -> object:
            if index < 0:
                return None
            tensor = graph.tensors[index]  # type: ignore[attr-defined]
            data = model.buffers[tensor.buffer].data
            if data is not None:
                return ("constant", tuple(tensor.shape), tensor.type, bytes(np.asarray(data, np.uint8)))
            name = tensor.name.decode()
            return ("unnamed" if name.startswith(UNNAMED) else name, tuple(tensor.shape), tensor.type)

        codes = [code.builtinCode for code in model.operatorCodes]
        ops = [
            (codes[op.opcodeIndex], [describe(i) for i in op.inputs], [describe(i) for i in op.outputs])
            for op in graph.operators
        ]
        summary[f"op types{number}"] = [op[0] for op in ops]
        summary[f"ops{number}"] = sorted(ops, key=repr)
        summary[f"named constants{number}"] = sorted(
            tensor.name.decode()
            for tensor in graph.tensors
            if model.buffers[tensor.buffer].data is not None and not tensor.name.decode().startswith(UNNAMED)
        )
        summary[f"io{number}"] = ([describe(i) for i in graph.inputs], [describe(i) for i in graph.outputs])
    summary["signatures"] = [
        (
            signature.signatureKey,
            sorted(tensor.name for tensor in signature.inputs or []),
            sorted(tensor.name for tensor in signature.outputs or []),
        )
        for signature in model.signatureDefs or []
    ]
    return summary


def _outputs(content: bytes, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    from ai_edge_litert.interpreter import Interpreter

    runner = Interpreter(model_content=content).get_signature_runner("serving_default")
    return {key: np.concatenate([runner(**{k: v[i : i + 1] for k, v in batch.items()})[key] for i in range(3)])
            for key in runner.get_output_details()}


def _has_variables(export_dir: Path) -> bool:
    """The export's checkpoint holds weights (an empty one, written for a SavedModel without variables, is 54 B;
    the smallest model here has 10 KB of weights)."""
    return sum(path.stat().st_size for path in (export_dir / "variables").glob("variables.data-*")) > 1000


@pytest.mark.parametrize("name", MODELS)
def test_the_frozen_export_converts_to_the_same_bytes_as_an_export_with_variables(name, tmp_path, monkeypatch):
    source = SAMPLES / name
    model = load_keras_model(source, ModelOptions())
    fast = export_keras_model(model, source, tmp_path / "frozen")
    assert fast.frozen and not _has_variables(tmp_path / "frozen")  # the frozen path was taken

    monkeypatch.setattr(frozen, "FROZEN_LIMIT_BYTES", -1)  # every model is "too large": the export with variables
    slow = export_keras_model(model, source, tmp_path / "variables")
    assert _has_variables(tmp_path / "variables")
    assert (fast.inputs, fast.outputs, fast.signature_key) == (slow.inputs, slow.outputs, slow.signature_key)

    rng = np.random.default_rng(0)
    batch = {
        spec.name: rng.uniform(0.0, 1.0, (3, *spec.shape[1:])).astype(spec.dtype) for spec in fast.inputs
    }
    for mode in ("float32", "float16", "dynamic"):
        with_variables = _convert(tmp_path / "variables", mode)
        content = _convert(tmp_path / "frozen", mode)
        assert _summary(content) == _summary(with_variables), f"{name} {mode}"
        expected = _outputs(with_variables, batch)
        for key, value in _outputs(content, batch).items():
            np.testing.assert_array_equal(value, expected[key], err_msg=f"{name} {mode} {key}")
    # the reference outputs (the SavedModel run in TensorFlow) agree too
    for key, value in Reference(fast).predict(batch).items():
        np.testing.assert_allclose(value, Reference(slow).predict(batch)[key], rtol=1e-5, atol=1e-5)


def test_a_tf_keras_model_keeps_the_export_with_variables(tmp_path):
    source = SAMPLES / "digits_cnn.h5"
    model = load_keras_model(source, ModelOptions())
    assert getattr(model, "_tflq_tf_keras", False)  # loaded with tf_keras
    exported = export_keras_model(model, source, tmp_path / "export")
    assert not exported.frozen and _has_variables(tmp_path / "export")


def test_a_model_with_a_lookup_table_is_exported_with_variables_and_converts(tmp_path):
    import keras
    import tensorflow as tf

    ids = keras.Input((3,), dtype="int64", name="ids")
    index = keras.layers.IntegerLookup(vocabulary=[7, 11, 13], name="lookup")(ids)
    embedded = keras.layers.Flatten()(keras.layers.Embedding(5, 2, name="embed")(index))
    model = keras.Model(ids, keras.layers.Dense(2, name="out")(embedded))
    model.save(tmp_path / "lookup.keras")
    source = tmp_path / "lookup.keras"
    loaded = load_keras_model(source, ModelOptions())

    specs = [tf.TensorSpec([None, 3], tf.int64, name="ids")]
    assert not frozen.save_frozen(
        loaded, lambda x: {"out": loaded(x, training=False)}, specs, tmp_path / "try", "serving_default"
    )
    assert not (tmp_path / "try").exists()

    exported = export_keras_model(loaded, source, tmp_path / "export")
    assert not exported.frozen and _has_variables(tmp_path / "export")
    out = Reference(exported).predict({"ids": np.array([[7, 11, 99]], dtype=np.int64)})["out"]
    np.testing.assert_allclose(out, loaded(np.array([[7, 11, 99]]), training=False).numpy(), rtol=1e-5, atol=1e-6)


def test_weight_bytes_counts_every_variable():
    import keras

    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3), keras.layers.BatchNormalization()])
    # Dense 4x3 + 3, BatchNormalization gamma, beta, moving mean, moving variance: 27 float32 values
    assert frozen.weight_bytes(model) == 27 * 4


def _merging_model(path: Path) -> Path:
    """Four convolutions with BatchNormalization at its initial statistics: bn_a..bn_d hold identical constants."""
    import keras

    layers = keras.layers
    keras.utils.set_random_seed(0)
    image = keras.Input((8, 8, 3), name="image")
    x = layers.ReLU(6.0, name="relu_a")(layers.BatchNormalization(name="bn_a")(
        layers.Conv2D(8, 3, padding="same", use_bias=False, name="conv_a")(image)))
    x = layers.ReLU(6.0, name="relu_b")(layers.BatchNormalization(name="bn_b")(
        layers.DepthwiseConv2D(3, padding="same", use_bias=False, name="dw_b")(x)))
    x = layers.BatchNormalization(name="bn_c")(layers.Conv2D(8, 1, use_bias=False, name="conv_c")(x))
    x = layers.ReLU(6.0, name="relu_d")(layers.BatchNormalization(name="bn_d")(
        layers.DepthwiseConv2D(3, padding="same", use_bias=False, name="dw_d")(x)))
    logits = layers.Dense(4, name="logits")(layers.GlobalAveragePooling2D(name="pool")(x))
    keras.Model(image, logits).save(path)
    return path


def test_layer_names_come_from_an_export_with_variables_when_frozen_constants_merge(tmp_path):
    from tflq.convert.layer_map import read_ops
    from tflq.convert.session import ConvertOptions, ModelSession

    source = _merging_model(tmp_path / "merging.keras")
    options = ConvertOptions(modes=("int8",), calibration="random", calibration_samples=8, skip_layers=("dw_b",))
    session = ModelSession(source, options, tmp_path / "work")
    assert session.exported.frozen
    # the frozen export's own names: the merged BatchNormalization constant names bn_a in both depthwise ops
    merged = [op.layers for op in read_ops(session.float_model(), session.exported)]
    assert [layers for layers in merged if "bn_a" in layers and ("dw_b" in layers or "dw_d" in layers)]

    variables = export_keras_model(load_keras_model(source, ModelOptions()), source, tmp_path / "variables",
                                   freeze=False)
    assert not variables.frozen and _has_variables(tmp_path / "variables")
    expected = [op.layers for op in read_ops(_convert(tmp_path / "variables", "float32"), variables)]
    assert [op.layers for op in session.model_ops()] == expected  # each op after its own layers only
    assert not any("bn_a" in layers for layers in expected)
    (node,) = session.float_nodes()  # --skip-layers dw_b: its one op, not dw_d's too
    assert [op.layers for op in session.model_ops() if op.tensor == node] == [("dw_b", "bn_b", "relu_b")]


def test_a_custom_gradient_activation_is_frozen_too(tmp_path):
    """Keras' silu has a custom gradient (EfficientNet's swish): saving its gradient functions fails on a frozen
    graph (an invalid capture), so the frozen export saves none; the model must not fall back to variables."""
    import keras

    inputs = keras.Input((4,), name="x")
    keras.Model(inputs, keras.layers.Dense(3, activation="silu", name="d")(inputs)).save(tmp_path / "silu.keras")
    source = tmp_path / "silu.keras"
    model = load_keras_model(source, ModelOptions())
    exported = export_keras_model(model, source, tmp_path / "export")
    assert exported.frozen and not _has_variables(tmp_path / "export")
    x = np.linspace(-3.0, 3.0, 8, dtype=np.float32).reshape(2, 4)
    out = Reference(exported).predict({"x": x})["d"]
    np.testing.assert_allclose(out, model(x, training=False).numpy(), rtol=1e-5, atol=1e-6)
