"""The reference outputs of an export: its SavedModel signature run in TensorFlow (what every variant is compared
with)."""
from __future__ import annotations

from typing import Any

from tflq._tf import imports as _tf
from tflq.model.load import ExportedModel


class Reference:
    """A model that computes reference outputs: the SavedModel signature of an export (any format)."""

    def __init__(self, exported: ExportedModel) -> None:
        tf = _tf.tf()
        self.exported = exported
        self.inputs = exported.inputs
        self.outputs = exported.outputs
        with _tf.quiet():
            self._loaded = tf.saved_model.load(str(exported.saved_model_dir))
        self._function = self._loaded.signatures[exported.signature_key]

    def predict(self, inputs: dict[str, Any]) -> dict[str, Any]:
        """Run one batch: input name -> array (with batch axis); returns output name -> numpy array. An export with a
        static batch runs in chunks of that size (the last one padded, the padding dropped)."""
        import numpy as np

        batch = self.exported.static_batch
        count = len(next(iter(inputs.values())))
        if batch is None or batch == count:
            return self._run(inputs)
        pieces: dict[str, list[Any]] = {}
        for start in range(0, count, batch):
            part = {}
            for name, values in inputs.items():
                chunk = np.asarray(values[start : start + batch])
                if len(chunk) < batch:
                    chunk = np.concatenate([chunk, np.repeat(chunk[-1:], batch - len(chunk), axis=0)])
                part[name] = chunk
            for name, value in self._run(part).items():
                pieces.setdefault(name, []).append(value[: min(batch, count - start)])
        return {name: np.concatenate(values) for name, values in pieces.items()}

    def _run(self, inputs: dict[str, Any]) -> dict[str, Any]:
        tf = _tf.tf()
        feeds = {spec.name: tf.constant(inputs[spec.name], dtype=spec.dtype) for spec in self.inputs}
        results = self._function(**feeds)
        return {name: value.numpy() for name, value in results.items()}
