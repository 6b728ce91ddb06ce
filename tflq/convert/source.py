"""A float32 ``.tflite`` as MODEL: read and checked once, its interface for the data layer, the modes it takes.

A ``.tflite`` from any converter (litert-torch, onnx2tf, Keras 3 ``model.export(format="litert")``, a vendor's
file) has no SavedModel for the converter to start from, so only the modes that start from the float32
``.tflite`` build on it: the baseline (``float32``: the file itself, byte-identical) and the modes of the other
engines (LiteRT Quantizer). Its interface is the file's signature (``serving_default`` or the only SignatureDef),
or the primary subgraph's inputs and outputs, by tensor name, when it has no SignatureDef (LiteRT Quantizer then
calibrates through a signature tflq adds and removes again, see :func:`tflq._tf.litert_quantizer.quantize`); the
data layer checks calibration and evaluation data against it as it does for a Keras model.

Everything here reads the flatbuffer with the guarded reader of :mod:`tflq.measure.tflite_contents` first (pure
Python: a corrupt file is one error line, never a crash), then loads the file once in the LiteRT interpreter.
"""
from __future__ import annotations

import os
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tflq.errors import InterpreterError, ModelLoadError, UsageError
from tflq.measure.tflite_contents import (
    FLATBUFFER_READ_ERRORS,
    QUANTIZED_DTYPES,
    corrupt_message,
    flatbuffer_signature,
    read_model_bytes,
)
from tflq.model.load import ExportedModel, TensorSpec
from tflq.model.options import ModelOptions
from tflq.modes import MODES, Mode

TFLITE_SUFFIX = ".tflite"
_LOW_BIT_DTYPES = ("int4", "int2")


def is_tflite(path: Path | str) -> bool:
    """True when ``path`` names a ``.tflite`` file (by its suffix; a directory is never one)."""
    path = Path(path)
    return path.suffix.lower() == TFLITE_SUFFIX and not path.is_dir()


def takes_tflite(mode: Mode) -> bool:
    """Whether ``mode`` can build from a float ``.tflite``: the baseline (the file itself) and every mode an engine
    other than the converter builds (the converter starts from a SavedModel export)."""
    engines = getattr(mode, "engines", None) or (mode.engine,)
    return mode.baseline or any(engine != "converter" for engine in engines)


def tflite_modes() -> list[str]:
    """The modes that take a ``.tflite`` MODEL, in registry order."""
    return [name for name, mode in MODES.items() if takes_tflite(mode)]


def require_converter(path: Path, what: str) -> None:
    """Raise UsageError when ``path`` is a ``.tflite`` (``what`` needs the converter, which starts from a Keras
    model or SavedModel)."""
    if is_tflite(path):
        raise UsageError(
            f"{path}: {what} needs the converter, which starts from a Keras model or SavedModel; a .tflite MODEL "
            f"takes mode(s) {', '.join(tflite_modes())}"
        )


def refuse_overwriting(model_path: Path, targets: Sequence[Path]) -> None:
    """Raise UsageError when an output would replace the model file itself (a ``.tflite`` MODEL in the output
    folder under an output's name)."""
    if not model_path.is_file():
        return
    for target in targets:
        if target.exists() and os.path.samefile(target, model_path):
            raise UsageError(
                f"{target}: this output would overwrite the model itself; choose another -o/--output-dir or --name"
            )


def refuse_for_source(path: Path, options: Any, modes: Sequence[str]) -> None:
    """Raise UsageError for what ``path`` cannot give under ``options`` (a ``ConvertOptions``): a mode the converter
    makes when it is a ``.tflite``; ``static_batch`` with a training mode (its fine-tuned export has a dynamic
    batch)."""
    if is_tflite(path):
        refuse_converter_modes(path, modes, options)
    training = [name for name in dict.fromkeys(modes) if name in MODES and MODES[name].needs_training]
    if training and options.model.static_batch is not None:
        raise UsageError(
            f"--static-batch does not apply to mode(s) {', '.join(training)}: the fine-tuned model is exported with "
            "a dynamic batch; convert it without --static-batch"
        )


def refuse_converter_modes(path: Path, modes: Sequence[str], options: Any = None) -> None:
    """Raise UsageError when one of ``modes`` is made by the converter (under ``options``, a ``ConvertOptions``, when
    a mode can be made by several engines), which a ``.tflite`` MODEL cannot feed: it starts from a SavedModel."""
    refused = [name for name in dict.fromkeys(modes) if name in MODES and _on_converter(MODES[name], options)]
    if refused:
        other = [name for name in refused if takes_tflite(MODES[name])]
        hint = f" (pass --engine litert-quantizer for {', '.join(other)})" if other else ""
        native = [name for name in tflite_modes() if not _chooses_engine(MODES[name])]
        choosing = [name for name in tflite_modes() if _chooses_engine(MODES[name])]
        takes = ", ".join(native) + (f", and {', '.join(choosing)} with --engine litert-quantizer" if choosing else "")
        raise UsageError(
            f"{path}: mode(s) {', '.join(refused)} are built by the converter engine from a Keras model or "
            f"SavedModel, which a .tflite MODEL is not{hint}; a float .tflite takes {takes}"
        )


def _chooses_engine(mode: Mode) -> bool:
    """True when ``mode`` can be made by more than one engine (``--engine``)."""
    return len(getattr(mode, "engines", None) or (mode.engine,)) > 1


def _on_converter(mode: Mode, options: Any) -> bool:
    """True when a variant of ``mode`` would be made by the converter (the baseline never: it is the file itself)."""
    if mode.baseline:
        return False
    engine_for = getattr(mode, "engine_for", None)
    engine = engine_for(options) if engine_for is not None and options is not None else mode.engine
    return bool(engine == "converter")


@dataclass(frozen=True)
class TfliteSource:
    """A float32 ``.tflite`` MODEL: its bytes and its interface. ``signature_key`` is None when the file has no
    SignatureDef (inputs and outputs are then the primary subgraph's, by tensor name)."""

    path: Path
    content: bytes
    signature_key: str | None
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]

    @property
    def interface(self) -> ExportedModel:
        """The model's interface as the session and the data layer use it (there is no SavedModel)."""
        return ExportedModel(
            source=self.path,
            saved_model_dir=self.path,
            signature_key=self.signature_key or "",
            inputs=self.inputs,
            outputs=self.outputs,
            tflite=True,
        )


def read_tflite_source(path: Path, options: ModelOptions = ModelOptions()) -> TfliteSource:
    """Read and check a float32 ``.tflite`` MODEL.

    Raises UsageError for loading ``options`` that apply to Keras models or SavedModels only, ModelLoadError (one
    line naming the file) for a file that is missing, not a regular file, empty, not a TFLite flatbuffer, corrupt,
    already quantized (quantized or float16 tensors, integer model I/O), with several signatures, with a signature
    off the primary subgraph, or that the LiteRT interpreter cannot load.
    """
    given = [
        flag
        for flag, value in (
            ("--signature", options.signature),
            ("--custom-objects", options.custom_objects),
            ("--unsafe-deserialization", options.unsafe_deserialization),
        )
        if value
    ]
    if given:
        raise UsageError(f"{', '.join(given)} apply to Keras model files and SavedModels; {path} is a .tflite")
    if options.static_batch is not None:
        raise UsageError(
            f"--static-batch applies to Keras model files; {path} is a .tflite, whose input shapes are fixed in "
            "the file: convert it with the batch size you want"
        )
    try:
        content = read_model_bytes(str(path))
    except InterpreterError as error:
        raise ModelLoadError(str(error)) from None
    from ai_edge_litert import schema_py_generated as schema

    try:
        model = schema.Model.GetRootAs(content, 0)
        keys = [(model.SignatureDefs(i).SignatureKey() or b"").decode() for i in range(model.SignatureDefsLength())]
        quantized = _quantized_tensors(schema, model)
    except FLATBUFFER_READ_ERRORS as error:
        raise ModelLoadError(corrupt_message(str(path), content, error)) from None
    if len(keys) > 1:
        raise ModelLoadError(
            f"{path}: the .tflite has {len(keys)} signatures ({', '.join(sorted(keys))}); tflq quantizes a .tflite "
            "with one signature (or none): export the one to quantize on its own"
        )
    if quantized:
        found = ", ".join(f"{count} {dtype}" for dtype, count in quantized.most_common())
        kinds = [dtype for dtype, _ in quantized.most_common() if dtype not in ("int32", "float16")]
        kind = "/".join(kinds) or next(iter(quantized))
        raise ModelLoadError(
            f"{path}: already {kind}-quantized ({found} quantized tensors); give the float32 .tflite it came from"
        )
    declared = flatbuffer_signature(str(path))
    if declared is None:
        raise ModelLoadError(f"{path}: its signature runs another subgraph than the first; tflq reads the primary one")
    for role, tensors in (("input", declared.inputs), ("output", declared.outputs)):
        for tensor in tensors:
            if tensor.scales:
                raise ModelLoadError(
                    f"{path}: {role} {tensor.name!r} is {tensor.dtype} (quantized I/O); expected a float32 model"
                )
    _check_loads(path, content)
    return TfliteSource(
        path=path,
        content=content,
        signature_key=declared.key,
        inputs=tuple(TensorSpec(t.name, t.shape, t.dtype) for t in declared.inputs),
        outputs=tuple(TensorSpec(t.name, t.shape, t.dtype) for t in declared.outputs),
    )


def _quantized_tensors(schema: Any, model: Any) -> Counter[str]:
    """Tensors of every subgraph that are quantized (they carry quantization scales) or constant weights of an
    8/16/4/2-bit integer or float16 type, counted by type. A plain uint8 or int32 input (raw pixels, token ids
    cast inside the model) is not counted."""
    type_names = {value: name.lower() for name, value in vars(schema.TensorType).items() if not name.startswith("_")}
    found: Counter[str] = Counter()
    for position in range(model.SubgraphsLength()):
        subgraph = model.Subgraphs(position)
        for index in range(subgraph.TensorsLength()):
            tensor = subgraph.Tensors(index)
            dtype = type_names.get(tensor.Type(), f"type_{tensor.Type()}")
            quantization = tensor.Quantization()
            scaled = quantization is not None and quantization.ScaleLength() > 0
            buffer = tensor.Buffer()
            constant = 0 < buffer < model.BuffersLength() and (
                model.Buffers(buffer).DataLength() > 0 or model.Buffers(buffer).Offset() > 1
            )
            if scaled or (constant and dtype in QUANTIZED_DTYPES + _LOW_BIT_DTYPES + ("float16",)):
                found[dtype] += 1
    return found


def _check_loads(path: Path, content: bytes) -> None:
    """Load and allocate the file in the LiteRT interpreter once (an unsupported or custom op fails here, before
    any work). Raises ModelLoadError."""
    from ai_edge_litert.interpreter import Interpreter

    from tflq._tf import imports as _tf

    try:
        with _tf.quiet():
            Interpreter(model_content=content).allocate_tensors()
    except (RuntimeError, ValueError) as error:
        raise ModelLoadError(
            f"{path}: the LiteRT interpreter cannot load it: {' '.join(str(error).split())[:300]}"
        ) from None
