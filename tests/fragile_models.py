"""Models made fragile on purpose for ``tflq debug`` and ``tflq auto`` (the ``fragile_models`` session fixture of
tests/fixtures/models.py builds both).

Both read the digits images (``image``, 8x8x1) and are built without training, so they are the same on every run:
a fixed random 3x3 convolution (``conv``), a fixed random projection to 128 ReLU units (``hidden``), and a
``logits`` layer fitted in closed form (ridge regression on the hidden features, one-hot targets).

* ``fragile``: ``logits`` has an 11th, masked class whose logit is always -300. Masked logits like this are
  common, for example padding or invalid actions. The float model never picks that class, but int8 quantizes the
  logits tensor per-tensor over [-300, ~2], which crushes the ten real logits into two or three levels. Plain int8
  loses about 8 points of accuracy (95.28 % -> 87.22 %), and keeping ``logits`` in float gets them back.
* ``hopeless``: the same with ``hidden``'s weights scaled by 1e-8 (and ``logits``' by 1e8, so the float model
  computes the same function), plus a 129th hidden unit whose input weights are 1e-3 and whose outgoing weights
  are 0. The float model ignores that unit. Its activation, about 1e5 times the others, crushes the hidden tensor
  in int8, 16x8 and dynamic range, and float16 flushes the 1e-8 weights to zero. No candidate keeps the accuracy
  unless both ``hidden`` and ``logits`` stay in float.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

# not tests.sample_paths: docs/debug.md imports this file with only tests/ on sys.path
SAMPLES = Path(__file__).resolve().parent.parent / "sample_models"

MASKED_LOGIT = -300.0
HIDDEN_UNITS = 128


def build_fragile(path: Path, *, spike: float | None = None, hidden_scale: float = 1.0) -> Path:
    """Build and save one fragile model (see the module docstring); returns ``path``."""
    import keras

    rng = np.random.default_rng(20261129)
    with np.load(SAMPLES / "digits_train.npz") as archive:
        images, labels = archive["x"], archive["y"]
    units = HIDDEN_UNITS + (1 if spike is not None else 0)
    image = keras.Input((8, 8, 1), name="image")
    hidden = keras.layers.Conv2D(8, 3, padding="same", activation="relu", name="conv")(image)
    hidden = keras.layers.Flatten(name="flatten")(hidden)
    hidden = keras.layers.Dense(units, activation="relu", name="hidden")(hidden)
    logits = keras.layers.Dense(11, name="logits")(hidden)
    model = keras.Model(image, logits, name="fragile")
    model.get_layer("conv").set_weights([rng.normal(0, 0.5, (3, 3, 1, 8)).astype("float32"), np.zeros(8, "float32")])
    projection = rng.normal(0, 1 / np.sqrt(512), (512, units)) * hidden_scale
    if spike is not None:
        projection[:, -1] = spike
    model.get_layer("hidden").set_weights([projection.astype("float32"), np.zeros(units, "float32")])
    features = keras.Model(image, hidden).predict(images, verbose=0).astype(np.float64)[:, :HIDDEN_UNITS] / hidden_scale
    design = np.concatenate([features, np.ones((len(features), 1))], axis=1)
    targets = np.eye(10)[labels]
    solution = np.linalg.solve(design.T @ design + 1e-2 * np.eye(design.shape[1]), design.T @ targets)
    weights = np.zeros((units, 11))
    weights[:HIDDEN_UNITS, :10] = solution[:-1] / hidden_scale
    bias = np.zeros(11)
    bias[:10] = solution[-1]
    bias[10] = MASKED_LOGIT
    model.get_layer("logits").set_weights([weights.astype("float32"), bias.astype("float32")])
    model.save(path)
    return path
