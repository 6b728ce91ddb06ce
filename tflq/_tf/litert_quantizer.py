"""The one wrapper around LiteRT Quantizer (``litert_quantizer``): recipes, calibration, quantization.

LiteRT Quantizer quantizes a float ``.tflite`` (not a SavedModel) by a *recipe*: a JSON list of entries, each
naming the ops it matches (``regex``, ``operation``), an algorithm and an ``op_config`` (weight bits, granularity,
whether activations are quantized). :func:`named_recipe` builds the recipes tflq's engine modes use;
:func:`recipe_from_file` reads and checks a user's recipe file; :func:`quantize` calibrates when the recipe needs
it and returns the quantized model's bytes.

Nothing else in tflq imports ``litert_quantizer``, and this module imports it only inside its functions, so
``import tflq`` and the modes that do not use it never load it.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from tflq.errors import ConfigError, ConversionError, TflqError

Recipe = list[dict[str, Any]]

#: the block sizes LiteRT Quantizer's blockwise granularity takes (``QuantGranularity.BLOCKWISE_<n>``)
BLOCK_SIZES: tuple[int, ...] = (32, 64, 128, 256)
KINDS: tuple[str, ...] = ("weight_only", "dynamic", "static")
_ENTRY_KEYS = ("regex", "operation", "algorithm_key", "op_config")


def named_recipe(
    kind: str,
    weight_bits: int,
    *,
    activation_bits: int = 8,
    block_size: int | None = None,
    hadamard: bool = False,
    float_io: bool = True,
) -> Recipe:
    """A recipe quantizing every supported op: ``kind`` ``weight_only`` (weights dequantized, float compute),
    ``dynamic`` (activations quantized on the fly) or ``static`` (``activation_bits`` activations, calibrated).

    ``block_size``: None for one scale per output channel, else blockwise with that block size. ``hadamard``:
    Hadamard rotation before quantizing the weights (channelwise only). ``float_io``: a static recipe keeps the
    model's inputs and outputs float32 (the quantizer would quantize them otherwise).
    """
    from litert_quantizer import qtyping
    from litert_quantizer.algorithm_manager import AlgorithmName
    from litert_quantizer.recipe_manager import RecipeManager

    if kind not in KINDS:
        raise ValueError(f"unknown recipe kind {kind!r}")
    if block_size is not None and block_size not in BLOCK_SIZES:
        raise ValueError(f"block size {block_size}: expected one of {BLOCK_SIZES}")
    if hadamard and block_size is not None:
        raise ValueError("the Hadamard rotation takes channelwise weights only")
    granularity = (
        qtyping.QuantGranularity.CHANNELWISE
        if block_size is None
        else qtyping.QuantGranularity(f"BLOCKWISE_{block_size}")
    )
    algorithm = AlgorithmName.DECOMPOSED_HADAMARD_ROTATION if hadamard else AlgorithmName.MIN_MAX_UNIFORM_QUANT
    every = qtyping.TFLOperationName.ALL_SUPPORTED
    manager = RecipeManager()
    if kind == "weight_only":
        manager.add_weight_only_config(".*", every, weight_bits, granularity, algorithm)
    elif kind == "dynamic":
        manager.add_dynamic_config(".*", every, weight_bits, granularity, algorithm)
    else:
        manager.add_static_config(".*", every, activation_bits, weight_bits, granularity, algorithm)
        if float_io:
            for boundary in (qtyping.TFLOperationName.INPUT, qtyping.TFLOperationName.OUTPUT):
                manager.add_quantization_config(".*", boundary, None, AlgorithmName.NO_QUANTIZE)
    return list(manager.get_quantization_recipe())


def recipe_from_file(path: str | Path) -> Recipe:
    """The recipe in the JSON file ``path``, checked by LiteRT Quantizer's own loader.

    Raises ConfigError (one line, starting with the path) for a missing or unreadable file, invalid JSON, or a
    value that is not a list of recipe entries the quantizer accepts."""
    where = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{where}: no such recipe file") from None
    except (OSError, UnicodeDecodeError) as error:
        raise ConfigError(f"{where}: cannot read the recipe: {error}") from None
    try:
        recipe = json.loads(text)
    except json.JSONDecodeError as error:
        raise ConfigError(f"{where}:{error.lineno}: not valid JSON: {error.msg}") from None
    if not isinstance(recipe, list) or not recipe:
        raise ConfigError(f"{where}: expected a non-empty JSON list of recipe entries, found {type(recipe).__name__}")
    for number, entry in enumerate(recipe, start=1):
        missing = [key for key in _ENTRY_KEYS if not isinstance(entry, dict) or key not in entry]
        if missing:
            raise ConfigError(f"{where}: entry {number}: expected an object with {', '.join(missing)}")
    try:
        _manager(recipe)
    except Exception as error:  # the quantizer's loader raises KeyError/ValueError/TypeError with its reason
        detail = f"missing key {error}" if isinstance(error, KeyError) else " ".join(str(error).split())
        raise ConfigError(f"{where}: not a LiteRT Quantizer recipe: {detail}") from None
    return recipe


def needs_calibration(recipe: Sequence[dict[str, Any]]) -> bool:
    """True when the recipe quantizes activations statically (the quantizer needs representative samples)."""
    return bool(_manager(list(recipe)).need_calibration())


def quantize(
    float_model: bytes,
    recipe: Sequence[dict[str, Any]],
    samples: Callable[[], list[dict[str, Any]]],
    signature_key: str | None = None,
) -> bytes:
    """``float_model`` quantized by ``recipe``: calibrated on ``samples()`` (input name -> batch of one) first
    when the recipe needs it, for ``signature_key`` (None: the model's first signature). A model without
    SignatureDef is calibrated through one made from its subgraph's inputs and outputs (named after their tensors,
    as tflq names them), removed again from the result. Raises ConversionError with the quantizer's reason."""
    from ai_edge_litert.interpreter import Interpreter
    from litert_quantizer import Quantizer

    unsigned = signature_key is None and needs_calibration(recipe) and not _signatures(float_model)
    try:
        with warnings.catch_warnings():  # its interpreters keep every tensor on purpose, and say so each time
            warnings.filterwarnings("ignore", message=".*experimental_preserve_all_tensors", category=UserWarning)
            if unsigned:
                float_model = _with_signature(float_model, UNSIGNED_KEY)
            quantizer = Quantizer(bytearray(float_model))
            quantizer.load_quantization_recipe(list(recipe))
            calibration = None
            if quantizer.need_calibration:
                key = signature_key or next(iter(Interpreter(model_content=float_model).get_signature_list()))
                calibration = quantizer.calibrate({key: samples()})
            result = quantizer.quantize(calibration, enable_progress_bar=False, enable_progress_report=False)
    except TflqError:  # from samples(): the data layer's own errors
        raise
    except Exception as error:  # the quantizer raises ValueError/RuntimeError/KeyError with its reason
        detail = " ".join(str(error).split()) or type(error).__name__
        raise ConversionError(f"LiteRT Quantizer: {detail}") from error
    if result.quantized_model is None:
        raise ConversionError("LiteRT Quantizer returned no model")
    return _without_signatures(bytes(result.quantized_model)) if unsigned else bytes(result.quantized_model)


#: the signature key a model without SignatureDef is calibrated through (removed from the quantized model)
UNSIGNED_KEY = "tflq_calibration"


def _signatures(model: bytes) -> int:
    from ai_edge_litert import schema_py_generated as schema

    return int(schema.Model.GetRootAs(model, 0).SignatureDefsLength())


def _with_signature(model: bytes, key: str) -> bytes:
    """``model`` with one SignatureDef ``key`` on its first subgraph: its inputs and outputs under their tensor
    names (the flatbuffer rewritten with the schema's object API, the way ``tests/tflite_helpers.py`` strips one)."""
    from ai_edge_litert import schema_py_generated as schema

    tree = schema.ModelT.InitFromObj(schema.Model.GetRootAs(model, 0))
    subgraph = tree.subgraphs[0]

    def tensor_map(index: int) -> Any:
        entry = schema.TensorMapT()
        entry.name = subgraph.tensors[index].name
        entry.tensorIndex = int(index)
        return entry

    signature = schema.SignatureDefT()
    signature.signatureKey = key
    signature.subgraphIndex = 0
    signature.inputs = [tensor_map(index) for index in subgraph.inputs]
    signature.outputs = [tensor_map(index) for index in subgraph.outputs]
    tree.signatureDefs = [signature]
    return _packed(tree, len(model))


def _without_signatures(model: bytes) -> bytes:
    from ai_edge_litert import schema_py_generated as schema

    tree = schema.ModelT.InitFromObj(schema.Model.GetRootAs(model, 0))
    tree.signatureDefs = []
    return _packed(tree, len(model))


def _packed(tree: Any, size: int) -> bytes:
    import flatbuffers

    builder = flatbuffers.Builder(size + 1024)
    builder.Finish(tree.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())


def _manager(recipe: Recipe) -> Any:
    from litert_quantizer.recipe_manager import RecipeManager

    manager = RecipeManager()
    manager.load_quantization_recipe(recipe)
    return manager
