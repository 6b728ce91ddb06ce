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
KINDS: tuple[str, ...] = ("weight_only", "float16", "dynamic", "static")
#: the weight range estimators LiteRT Quantizer 0.11 offers for uniform quantization (MSE and OCTAV choose the
#: weights' clipping range; both fall back to min/max for activations, and take symmetric channelwise or
#: tensorwise weights only). It has no percentile estimator.
ESTIMATORS: tuple[str, ...] = ("min-max", "mse", "octav")
#: how a static recipe's calibration merges the samples' activation ranges (see :func:`quantize`)
ACTIVATION_RANGES: tuple[str, ...] = ("moving-average", "min-max")
_WEIGHT_OPS = ("FULLY_CONNECTED", "CONV_2D", "DEPTHWISE_CONV_2D", "CONV_2D_TRANSPOSE")
_ESTIMATOR_KEYS = {"min-max": "min_max_uniform_quantize", "mse": "MSE", "octav": "OCTAV"}
_ENTRY_KEYS = ("regex", "operation", "algorithm_key", "op_config")


def named_recipe(
    kind: str,
    weight_bits: int,
    *,
    activation_bits: int = 8,
    block_size: int | None = None,
    hadamard: bool = False,
    float_io: bool = True,
    per_tensor: bool = False,
    symmetric: bool | None = None,
    estimator: str = "min-max",
) -> Recipe:
    """A recipe quantizing every supported op: ``kind`` ``weight_only`` (weights dequantized, float compute),
    ``float16`` (float16 weights, float compute: ``weight_bits`` is ignored), ``dynamic`` (activations quantized on
    the fly) or ``static`` (``activation_bits`` activations, calibrated).

    ``block_size``: None for one scale per output channel (``per_tensor``: one per tensor), else blockwise with that
    block size. ``hadamard``: Hadamard rotation before quantizing the weights (channelwise only). ``float_io``: a
    static recipe keeps the model's inputs and outputs float32 (the quantizer would quantize them otherwise).
    ``symmetric``: static activations with zero point 0 (True) or not (False); None: the quantizer's default
    (asymmetric int8, symmetric int16, the only int16 its kernels take). ``estimator``: how the weights' ranges
    are chosen, one of :data:`ESTIMATORS` (activations' ranges are always the calibration's min/max).
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
    if estimator not in ESTIMATORS:
        raise ValueError(f"range estimator {estimator!r}: expected one of {ESTIMATORS}")
    if symmetric is False and activation_bits == 16:
        raise ValueError("int16 activations are symmetric only (LiteRT kernels)")
    if block_size is not None:
        granularity = qtyping.QuantGranularity(f"BLOCKWISE_{block_size}")
    else:
        granularity = qtyping.QuantGranularity.TENSORWISE if per_tensor else qtyping.QuantGranularity.CHANNELWISE
    algorithm = AlgorithmName(_ESTIMATOR_KEYS[estimator])
    if hadamard:
        algorithm = AlgorithmName.DECOMPOSED_HADAMARD_ROTATION
    every = qtyping.TFLOperationName.ALL_SUPPORTED
    manager = RecipeManager()
    if kind == "float16":
        manager.add_weight_only_config(".*", every, 16, granularity, AlgorithmName.FLOAT_CASTING)
    elif kind == "weight_only":
        manager.add_weight_only_config(".*", every, weight_bits, granularity, algorithm)
    elif kind == "dynamic":
        manager.add_dynamic_config(".*", every, weight_bits, granularity, algorithm)
    else:
        if activation_bits not in (8, 16):
            raise ValueError("static activations are 8 or 16 bits")
        activation_config = qtyping.TensorQuantizationConfig(
            num_bits=activation_bits, symmetric=activation_bits == 16 if symmetric is None else symmetric
        )
        weight_config = qtyping.TensorQuantizationConfig(num_bits=weight_bits, symmetric=True, granularity=granularity)
        op_config = qtyping.OpQuantizationConfig(
            activation_tensor_config=activation_config,
            weight_tensor_config=weight_config,
            compute_precision=qtyping.ComputePrecision.INTEGER,
            explicit_dequantize=False,
        )
        manager.add_quantization_config(".*", every, op_config, AlgorithmName.MIN_MAX_UNIFORM_QUANT)
        if estimator != "min-max":  # on the ops with weights: MSE and OCTAV leave other ops unquantized
            for operation in _WEIGHT_OPS:
                manager.add_quantization_config(".*", qtyping.TFLOperationName(operation), op_config, algorithm)
        if float_io:
            for boundary in (qtyping.TFLOperationName.INPUT, qtyping.TFLOperationName.OUTPUT):
                manager.add_quantization_config(".*", boundary, None, AlgorithmName.NO_QUANTIZE)
    return list(manager.get_quantization_recipe())


def set_io_type(model: bytes, io_type: str) -> bytes:
    """``model`` (a static recipe's result, float32 I/O with a QUANTIZE after each input and a DEQUANTIZE before
    each output) with ``io_type`` (``int8``, ``uint8`` or ``int16``) inputs and outputs instead: the boundary ops
    removed (int8, int16) or turned into int8 <-> uint8 requantizations (uint8), as TensorFlow's own converter does
    (``tensorflow.lite.python.util.modify_model_io_type``). Raises ConversionError when an input or output could
    not be given that type (the TensorFlow helper only warns and leaves it float)."""
    from ai_edge_litert.interpreter import Interpreter

    from tflq._tf import imports as _tf

    if io_type == "float32":
        return model
    tf = _tf.tf()
    from tensorflow.lite.python import util as _util  # private: TFLiteConverter's own I/O rewrite

    try:
        rewritten = bytes(_util.modify_model_io_type(bytearray(model), getattr(tf, io_type), getattr(tf, io_type)))
    except (ValueError, RuntimeError) as error:
        raise ConversionError(f"cannot give the LiteRT Quantizer model {io_type} I/O: {error}") from None
    interpreter = Interpreter(model_content=rewritten)
    for detail in (*interpreter.get_input_details(), *interpreter.get_output_details()):
        found = getattr(detail["dtype"], "__name__", str(detail["dtype"]))
        if found != io_type:
            raise ConversionError(
                f"cannot give the LiteRT Quantizer model {io_type} I/O: tensor {detail['name']!r} stays {found} "
                "(no quantize/dequantize op at that boundary)"
            )
    return rewritten


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
    activation_range: str = "moving-average",
) -> bytes:
    """``float_model`` quantized by ``recipe``: calibrated on ``samples()`` (input name -> batch of one) first
    when the recipe needs it, for ``signature_key`` (None: the model's first signature). A model without
    SignatureDef is calibrated through one made from its subgraph's inputs and outputs (named after their tensors,
    as tflq names them), removed again from the result. ``activation_range``: how the calibration merges each
    sample's min/max, one of :data:`ACTIVATION_RANGES`: ``moving-average`` (the quantizer's default: an exponential
    moving average, smoothing 0.95) or ``min-max`` (the smallest min and largest max over all samples, as the TFLite
    converter does). Raises ConversionError with the quantizer's reason."""
    from ai_edge_litert.interpreter import Interpreter
    from litert_quantizer import Quantizer, calibrator
    from litert_quantizer.utils import qsv_utils

    if activation_range not in ACTIVATION_RANGES:
        raise ValueError(f"activation range {activation_range!r}: expected one of {ACTIVATION_RANGES}")

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
                if activation_range == "moving-average":
                    calibration = quantizer.calibrate({key: samples()})
                else:  # the same calibration as Quantizer.calibrate, with the plain min/max merge
                    calibrating = calibrator.Calibrator(
                        bytearray(float_model), num_threads=16, qsv_update_func=qsv_utils.min_max_update
                    )
                    calibrating.calibrate({key: samples()}, _manager(list(recipe)))
                    calibration = calibrating.get_model_qsvs()
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
