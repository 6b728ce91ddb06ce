"""Helpers (not fixtures) that make and run .tflite files: the public converter, a LiteRT runner, a signature
stripper."""
from __future__ import annotations

from pathlib import Path

import numpy as np


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


def convert_keras(
    model, path: Path, *, mode: str = "float32", calibration: np.ndarray | None = None, io: str = "float32"
) -> Path:
    """Convert a Keras model with the public TFLiteConverter (mode float32, dynamic, int8 or 16x8; ``io`` the int8 /
    uint8 / int16 model I/O type), write it to ``path`` and return ``path``."""
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
