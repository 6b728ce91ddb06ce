"""Checking a converted model: it loads, allocates and runs in the LiteRT interpreter (``verify_runs``), and which
of its ops compute in float (``float_op_details``, ``float_ops``): what ``tflq convert`` checks of every variant
before it is written."""

from __future__ import annotations

from typing import Any

import numpy as np

from tflq._tf import imports as _tf
from tflq.errors import ConversionError

_BOUNDARY_OPS = {"QUANTIZE", "DEQUANTIZE"}
_FLOAT_DTYPES = {"float32", "float16", "float64"}


def verify_runs(content: bytes, inputs: dict[str, np.ndarray]) -> None:
    """Load, allocate and run ``content`` once in the LiteRT interpreter. Raises ConversionError."""
    from ai_edge_litert.interpreter import Interpreter

    with _tf.quiet():
        try:
            interpreter = Interpreter(model_content=content)
            if not interpreter.get_signature_list():  # a .tflite MODEL without SignatureDef: inputs by tensor name
                _run_by_tensor_names(interpreter, inputs)
                return
            runner = interpreter.get_signature_runner()
            details = runner.get_input_details()
            feeds = {name: _to_input(inputs[name], detail) for name, detail in details.items() if name in inputs}
            missing = sorted(set(details) - set(feeds))
            if missing:
                raise ConversionError(f"the converted model has inputs {missing} the source model does not have")
            runner(**feeds)
        except ConversionError:
            raise
        except Exception as error:  # the interpreter raises RuntimeError/ValueError with its reason
            raise ConversionError(
                f"the converted model does not run in the LiteRT interpreter: {' '.join(str(error).split())}"
            ) from None


def _run_by_tensor_names(interpreter: Any, inputs: dict[str, np.ndarray]) -> None:
    details = interpreter.get_input_details()
    missing = sorted(detail["name"] for detail in details if detail["name"] not in inputs)
    if missing:
        raise ConversionError(f"the converted model has inputs {missing} the source model does not have")
    for detail in details:
        interpreter.resize_tensor_input(detail["index"], list(np.shape(inputs[detail["name"]])))
    interpreter.allocate_tensors()
    for detail in details:
        interpreter.set_tensor(detail["index"], _to_input(inputs[detail["name"]], detail))
    interpreter.invoke()


def _to_input(value: np.ndarray, detail: dict[str, Any]) -> np.ndarray:
    dtype = np.dtype(detail["dtype"])
    if dtype.kind in "iu" and np.asarray(value).dtype.kind == "f":
        scale, zero_point = detail["quantization"]
        info = np.iinfo(dtype)
        return np.clip(np.round(value / (scale or 1.0) + zero_point), info.min, info.max).astype(dtype)
    return np.asarray(value, dtype=dtype)


def float_op_details(content: bytes) -> tuple[tuple[str, str], ...]:
    """Ops of a quantized model that still compute in float: (op type, output tensor name), in model order."""
    from ai_edge_litert.interpreter import Interpreter

    with _tf.quiet():
        interpreter = Interpreter(model_content=content)
    tensors = {detail["index"]: detail for detail in interpreter.get_tensor_details()}
    found = []
    for op in interpreter._get_ops_details():
        if op["op_name"] in _BOUNDARY_OPS or op["op_name"] == "DELEGATE":
            continue
        outputs = [tensors[index] for index in op["outputs"] if index in tensors]
        if any(np.dtype(t["dtype"]).name in _FLOAT_DTYPES for t in outputs):
            found.append((op["op_name"], outputs[0]["name"] if outputs else "?"))
    return tuple(found)


def float_ops(content: bytes) -> tuple[str, ...]:
    """Ops of a quantized model that still compute in float: ``OP_TYPE(output tensor)``, in model order."""
    return tuple(f"{op_type}({name})" for op_type, name in float_op_details(content))


def _same_tensor(name: str, asked: set[str]) -> bool:
    """Whether ``name`` is one of the ``asked`` tensors; the quantizer may append digits (``MaxPool2d1``)."""
    return name in asked or any(
        (name.startswith(other) and name[len(other) :].isdigit())
        or (other.startswith(name) and other[len(name) :].isdigit())
        for other in asked
    )
