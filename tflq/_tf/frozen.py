"""The fast export: a Keras model's serving function with its variables folded into constants, saved as a SavedModel
that holds no variables.

Every conversion starts from the export. A SavedModel *with* variables (Keras' ``ExportArchive``, what
``from_keras_model`` writes on each call) is slow twice: writing it traces the checkpoint save/restore functions of
every variable, and every conversion from it restores and freezes those variables again inside the MLIR importer.
Measured on MobileNetV2 (alpha 0.35, 96x96; 2-core x86 machine, one run): ``ExportArchive.write_out`` 4.4 s and each
conversion 3.4-3.9 s; trace + freeze + save 1.3 s and each conversion 1.0-1.4 s. The converted models compute the
same: the same ops, tensors, buffers and signature (max |difference| 0 in float32, float16 and dynamic range), the
output tensors named as from an export with variables (:func:`_name_call_as_stateful`). Tensor names can differ:
identical constants of two layers are merged by the converter and a fused op's name then carries both layers'
scopes, so :meth:`tflq.convert.session.ModelSession.relabel` names ops from an export with variables whenever
layer names are needed. The public converter's own ``from_concrete_functions`` freezes with the same function
(``convert_variables_to_constants_v2``).

:func:`save_frozen` returns False when freezing does not apply, and the caller exports with variables: a resource
other than variables is left (a lookup table), or the weights exceed :data:`FROZEN_LIMIT_BYTES`: the gain shrinks
and the memory grows with the weights (measured on 2 cores: MobileNetV2 1.0, 14 MB of weights, export 1.9 s against
5.6 s for 0.2 GB more peak memory; DenseNet121, 32 MB, 5.5 s against 11.3 s for 0.3 GB more; ResNet50, 102 MB, the
same export time, conversions 30 % faster, but a peak of 3.5-3.8 GB against 1.8 GB), and a frozen graph is one
protocol buffer, whose limit is 2 GiB.
"""
from __future__ import annotations

import logging
import shutil
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from tflq._tf import imports as _tf

FROZEN_LIMIT_BYTES = 64 << 20  # 64 MiB of weights (see above)
log = logging.getLogger("tflq")


def weight_bytes(model: Any) -> int:
    """Bytes held by the model's weights (every variable, trainable or not)."""
    total = 0
    for weight in model.weights:
        count = 1
        for dim in weight.shape:
            count *= int(dim)
        total += count * _tf.tf().as_dtype(weight.dtype).size
    return total


def save_frozen(
    model: Any, serve: Callable[..., Any], input_specs: Sequence[Any], export_dir: Path, signature_key: str
) -> bool:
    """Trace ``serve`` (``*inputs -> {output name: tensor}``) with ``input_specs``, fold the variables it reads into
    constants and save it as the ``signature_key`` signature of a variable-free SavedModel in ``export_dir``.

    A tracing error (the model cannot be called on these inputs) propagates, as it would from any export. Returns
    False, leaving ``export_dir`` absent, when the function cannot be frozen (see the module doc); True when saved."""
    tf = _tf.tf()
    size = weight_bytes(model)
    if size > FROZEN_LIMIT_BYTES:
        log.debug("export with variables: %d bytes of weights is above the frozen-graph limit", size)
        return False
    from tensorflow.python.framework import convert_to_constants

    concrete = tf.function(serve, input_signature=list(input_specs)).get_concrete_function()
    try:
        frozen = convert_to_constants.convert_variables_to_constants_v2(concrete, lower_control_flow=False)
    except (ValueError, TypeError, NotImplementedError, tf.errors.OpError) as error:
        log.debug("export with variables: the serving function cannot be frozen: %s", _tf.last_error_line(str(error)))
        return False
    if any(tensor.dtype == tf.resource for tensor in frozen.inputs):  # e.g. a lookup table: not a variable
        log.debug("export with variables: the serving function holds a resource that is not a variable")
        return False
    structure = concrete.structured_outputs

    def signature(*inputs: Any) -> Any:
        return tf.nest.pack_sequence_as(structure, frozen(*inputs))

    function = tf.function(signature, input_signature=list(input_specs)).get_concrete_function()
    try:
        # no checkpoint save/restore functions (there is nothing to checkpoint) and no gradient functions (nothing
        # trains on this export; tracing those of a custom-gradient op such as Keras' swish fails on a frozen graph)
        options = tf.saved_model.SaveOptions(experimental_skip_saver=True, experimental_custom_gradients=False)
        tf.saved_model.save(tf.Module(), str(export_dir), signatures={signature_key: function}, options=options)
        _name_call_as_stateful(export_dir / "saved_model.pb")
    except (ValueError, TypeError, OSError, tf.errors.OpError) as error:
        shutil.rmtree(export_dir, ignore_errors=True)
        log.debug("export with variables: the frozen function cannot be saved: %s", _tf.last_error_line(str(error)))
        return False
    return True


def _name_call_as_stateful(saved_model_pb: Path) -> None:
    """Rename the signature's call op ``PartitionedCall`` (a stateless function's) to ``StatefulPartitionedCall``,
    the op and name an export with variables has. The converter names the model's output tensors after it
    (``StatefulPartitionedCall:0``), so the converted files are byte-identical to those of an export with variables
    (``tests/test_export_frozen.py``). The two ops take the same attributes; the call is run the same way."""
    from tensorflow.core.protobuf import saved_model_pb2

    saved_model = saved_model_pb2.SavedModel()
    saved_model.ParseFromString(saved_model_pb.read_bytes())
    for meta_graph in saved_model.meta_graphs:
        nodes = meta_graph.graph_def.node
        if any(node.name == "StatefulPartitionedCall" for node in nodes):
            continue  # not the graph save_frozen writes: leave it as it is
        calls = [node for node in nodes if node.name == "PartitionedCall" and node.op == "PartitionedCall"]
        if len(calls) != 1 or any("PartitionedCall" in name for node in nodes for name in node.input):
            continue
        calls[0].name = calls[0].op = "StatefulPartitionedCall"
        for signature in meta_graph.signature_def.values():
            for tensor in signature.outputs.values():
                if tensor.name.startswith("PartitionedCall:"):
                    tensor.name = "Stateful" + tensor.name
    saved_model_pb.write_bytes(saved_model.SerializeToString())
