"""Rebuild every file in ``sample_models/`` from the scikit-learn digits dataset.

Usage::

    python sample_models/build.py [--out DIR] [--seed N] [--epochs-scale F]

The digits dataset ships inside scikit-learn (no download). Every source of randomness is seeded (Python, NumPy,
TensorFlow, Keras's shuffling, the split), TensorFlow op determinism is on, and TensorFlow runs on exactly
``THREADS`` intra-op and inter-op threads whatever the core count: how a float sum is split across threads changes
its last bits, and over 30-40 epochs those grow into different weights (unpinned, 1 or 4 threads gave an ink MAE of
0.0186 or 0.0161 instead of 0.0132). So a rebuild with the same library versions gives bit-identical weights, and
the figures in README.md, on any machine whose CPU takes the same oneDNN kernels (oneDNN picks them by instruction
set: AVX-512, AVX2...); another instruction set or library version may differ in the last bits, and so in the
figures. The ``.keras`` archives also record the save date, so files are not byte-identical between rebuilds even
when the weights are.

Outputs (all small, see README.md):

- ``digits_train.npz`` / ``digits_test.npz``: ``x`` float32 (N, 8, 8, 1) in [0, 1], ``y`` int64 labels 0..9.
- ``digits_cnn.keras``: Keras 3 CNN, input ``image``, output ``logits`` (10 logits, no softmax).
- ``digits_cnn.h5``: the same network and weights, written by tf_keras as a legacy Keras 2 HDF5 file.
- ``digits_cnn_savedmodel/``: the same network exported with ``model.export`` (``serve``/``serving_default``).
- ``digits_multi_io.keras`` + ``digits_multi_io_{train,test}.npz``: inputs ``image`` and ``row_sums``,
  outputs ``digit`` (10 logits) and ``ink`` (mean pixel value, shape (1,)).
- ``digits_gru.keras``: GRU (unrolled, 8 steps) reading the pixel rows as a sequence, input ``image``, output
  ``logits``.
- ``digits_images/<class>/<nn>.png``: the first ``IMAGES_PER_CLASS`` training images of each class as 8x8
  grayscale PNGs (an image-folder calibration set, labelled by folder). ``--images-only`` rewrites just these,
  without retraining anything; they depend only on the split, so they are byte-identical between rebuilds.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import shutil
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

SEED = 20261129
TEST_SIZE = 360  # 1797 digits -> 1437 train / 360 test
BATCH_SIZE = 32
CNN_EPOCHS = 30
MULTI_IO_EPOCHS = 30
GRU_EPOCHS = 40
H5_TOLERANCE = 1e-5
IMAGES_PER_CLASS = 10
# TensorFlow's intra-op and inter-op threads: the shipped files were built on 2 cores with TensorFlow's defaults,
# which are the core count; pinned, a machine with more or fewer cores builds the same weights.
THREADS = 2


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--out",
        type=Path,
        default=Path(__file__).resolve().parent,
        help="output folder (default: the folder holding this script)",
    )
    parser.add_argument("--seed", type=int, default=SEED, help=f"random seed (default: {SEED})")
    parser.add_argument(
        "--images-only", action="store_true", help="only rewrite digits_images/ (no training, nothing else touched)"
    )
    parser.add_argument(
        "--epochs-scale",
        type=float,
        default=1.0,
        help="train every model for this fraction of its epochs (at least 1); for quick checks, not shipped files",
    )
    args = parser.parse_args(argv)
    if args.epochs_scale <= 0:
        parser.error(f"--epochs-scale must be positive, got {args.epochs_scale}")
    return args


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and TensorFlow, turn on op determinism and pin TensorFlow to ``THREADS`` threads.

    Must run before TensorFlow executes anything in this process: the thread pools cannot be resized afterwards
    (RuntimeError), and a build in another pool size would not give the shipped weights.
    """
    import keras
    import tensorflow as tf

    for get, set_ in ((tf.config.threading.get_intra_op_parallelism_threads,
                       tf.config.threading.set_intra_op_parallelism_threads),
                      (tf.config.threading.get_inter_op_parallelism_threads,
                       tf.config.threading.set_inter_op_parallelism_threads)):
        if get() != THREADS:
            set_(THREADS)
    keras.utils.set_random_seed(seed)  # Python, NumPy and TensorFlow generators (and so Keras's shuffling)
    tf.config.experimental.enable_op_determinism()


# --------------------------------------------------------------------------------------------- data


def load_digit_splits(seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Return x_train, y_train, x_test, y_test: images float32 (N, 8, 8, 1) in [0, 1], labels int64."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    images = (digits.images.astype(np.float32) / np.float32(16.0)).reshape(-1, 8, 8, 1)
    labels = digits.target.astype(np.int64)
    x_train, x_test, y_train, y_test = train_test_split(
        images, labels, test_size=TEST_SIZE, stratify=labels, random_state=seed
    )
    return x_train, y_train, x_test, y_test


def multi_io_arrays(images: np.ndarray, labels: np.ndarray) -> dict[str, np.ndarray]:
    """The multi-input / multi-output arrays: inputs by input name, labels as ``y_<output name>``."""
    row_sums = images[..., 0].mean(axis=2).astype(np.float32)  # (N, 8): mean of each pixel row
    ink = images.reshape(len(images), -1).mean(axis=1, keepdims=True).astype(np.float32)  # (N, 1)
    return {"image": images, "row_sums": row_sums, "y_digit": labels, "y_ink": ink}


def write_digit_images(images: np.ndarray, labels: np.ndarray, folder: Path, per_class: int = IMAGES_PER_CLASS) -> int:
    """Write the first ``per_class`` images of each label as ``folder/<label>/<nn>.png``. Returns the file count.

    Pixels in [0, 1] become 8-bit grayscale (``round(x * 255)``), which an image folder read with the default
    ``unit`` scale turns back into [0, 1] (within 1/510). The folder is replaced as a whole, and the PNGs carry no
    timestamp, so the same arrays always give the same bytes.
    """
    from PIL import Image

    if folder.exists():
        shutil.rmtree(folder)
    written = 0
    for label in sorted(int(value) for value in np.unique(labels)):
        class_dir = folder / str(label)
        class_dir.mkdir(parents=True)
        chosen = np.flatnonzero(labels == label)[:per_class]
        for number, index in enumerate(chosen):
            pixels = np.clip(np.round(images[index, ..., 0] * 255.0), 0, 255).astype(np.uint8)
            Image.fromarray(pixels, mode="L").save(class_dir / f"{number:02d}.png", optimize=True)
            written += 1
    return written


# ------------------------------------------------------------------------------------------- models


def build_cnn(keras_module):
    """The digits CNN, (8, 8, 1) image -> 10 logits, in ``keras`` (Keras 3) or ``tf_keras`` (Keras 2): the two share
    this API, so the .h5 file is the same network layer for layer."""
    layers = keras_module.layers
    image = keras_module.Input(shape=(8, 8, 1), name="image")
    x = layers.Conv2D(16, 3, padding="same", name="conv1")(image)
    x = layers.ReLU(name="relu1")(x)
    x = layers.DepthwiseConv2D(3, padding="same", use_bias=False, name="dwconv2")(x)
    x = layers.BatchNormalization(name="bn2")(x)
    x = layers.ReLU(name="relu2")(x)
    x = layers.MaxPooling2D(2, name="pool2")(x)
    x = layers.Flatten(name="flatten")(x)
    x = layers.Dense(32, activation="relu", name="dense1")(x)
    logits = layers.Dense(10, name="logits")(x)
    model = keras_module.Model(image, logits, name="digits_cnn")
    model.compile(
        optimizer=keras_module.optimizers.Adam(3e-3),
        loss=keras_module.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    return model


def build_cnn_keras3():
    """Keras 3 functional CNN: (8, 8, 1) image -> 10 logits."""
    import keras

    return build_cnn(keras)


def build_cnn_tf_keras():
    """The same architecture as :func:`build_cnn_keras3`, layer for layer, in tf_keras (Keras 2)."""
    import tf_keras

    return build_cnn(tf_keras)


def build_multi_io():
    """Two inputs (``image``, ``row_sums``) -> two outputs (``digit`` logits, ``ink`` regression)."""
    import keras
    from keras import layers

    image = keras.Input(shape=(8, 8, 1), name="image")
    row_sums = keras.Input(shape=(8,), name="row_sums")
    x = layers.Conv2D(16, 3, padding="same", activation="relu", name="conv1")(image)
    x = layers.MaxPooling2D(2, name="pool1")(x)
    x = layers.Flatten(name="flatten")(x)
    x = layers.Dense(32, activation="relu", name="image_features")(x)
    r = layers.Dense(16, activation="relu", name="row_features")(row_sums)
    shared = layers.Concatenate(name="concat")([x, r])
    shared = layers.Dense(32, activation="relu", name="shared")(shared)
    digit = layers.Dense(10, name="digit")(shared)
    ink = layers.Dense(1, name="ink")(layers.Concatenate(name="ink_features")([shared, row_sums]))
    model = keras.Model([image, row_sums], [digit, ink], name="digits_multi_io")
    model.compile(
        optimizer=keras.optimizers.Adam(3e-3),
        loss={"digit": keras.losses.SparseCategoricalCrossentropy(from_logits=True), "ink": "mse"},
        loss_weights={"digit": 1.0, "ink": 10.0},
        metrics={"digit": ["accuracy"], "ink": ["mae"]},
    )
    return model


def build_gru():
    """GRU over the 8 pixel rows: (8, 8, 1) image -> Reshape (8, 8) -> GRU(32) -> 10 logits.

    ``unroll=True`` (8 steps) makes the recurrence plain ops. The default while-loop GRU cannot be converted to
    TFLite from a dynamic-batch SavedModel ("tf.TensorListReserve op requires element_shape to be static"), and
    with a fixed batch of 1 the int8 calibrator segfaults on it (TF 2.21).
    """
    import keras
    from keras import layers

    image = keras.Input(shape=(8, 8, 1), name="image")
    rows = layers.Reshape((8, 8), name="rows")(image)
    state = layers.GRU(32, unroll=True, name="gru")(rows)
    logits = layers.Dense(10, name="logits")(state)
    model = keras.Model(image, logits, name="digits_gru")
    model.compile(
        optimizer=keras.optimizers.Adam(1e-2),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    return model


# -------------------------------------------------------------------------------------------- steps


def accuracy(logits: np.ndarray, labels: np.ndarray) -> float:
    return float(np.mean(np.argmax(logits, axis=-1) == labels))


def check_names(model, inputs: list[str], outputs: list[str]) -> None:
    found_inputs = [tensor.name for tensor in model.inputs]
    found_outputs = list(model.output_names)
    if found_inputs != inputs or found_outputs != outputs:
        raise RuntimeError(
            f"{model.name}: expected inputs {inputs} / outputs {outputs}, "
            f"found inputs {found_inputs} / outputs {found_outputs}"
        )


def save_cnn_h5(cnn, x_test: np.ndarray, path: Path) -> float:
    """Copy the Keras 3 CNN's weights into a tf_keras twin and save it as legacy HDF5. Returns max |diff|."""
    legacy = build_cnn_tf_keras()
    legacy.set_weights(cnn.get_weights())
    expected = cnn.predict(x_test, verbose=0)
    found = legacy.predict(x_test, verbose=0)
    max_diff = float(np.max(np.abs(expected - found)))
    # Absolute + relative: the logits reach ~20, and oneDNN kernels differ from plain TF in the last bits.
    if not np.allclose(found, expected, rtol=H5_TOLERANCE, atol=H5_TOLERANCE):
        raise RuntimeError(f"tf_keras copy of the CNN differs from the Keras 3 model by {max_diff:.2e}")
    path.unlink(missing_ok=True)
    legacy.save(path)  # the .h5 suffix selects the legacy HDF5 format, with the training (compile) config
    return max_diff


def export_savedmodel(model, path: Path) -> None:
    if path.exists():
        shutil.rmtree(path)
    with contextlib.redirect_stdout(io.StringIO()):  # silence "Saved artifact at ..." chatter
        model.export(str(path))


def scaled(epochs: int, scale: float) -> int:
    return max(1, round(epochs * scale))


def build(out_dir: Path, seed: int, epochs_scale: float = 1.0) -> dict[str, str]:
    """Rebuild every sample file into ``out_dir`` (training ``epochs_scale`` of each model's epochs). Returns the
    measured figures, by name."""
    seed_everything(seed)
    out_dir.mkdir(parents=True, exist_ok=True)
    figures: dict[str, str] = {}

    x_train, y_train, x_test, y_test = load_digit_splits(seed)
    np.savez_compressed(out_dir / "digits_train.npz", x=x_train, y=y_train)
    np.savez_compressed(out_dir / "digits_test.npz", x=x_test, y=y_test)
    figures["split"] = f"{len(x_train)} train / {len(x_test)} test"
    count = write_digit_images(x_train, y_train, out_dir / "digits_images")
    figures["digits_images"] = f"{count} PNGs"

    # CNN: .keras, .h5 (tf_keras) and SavedModel, all the same weights.
    cnn = build_cnn_keras3()
    check_names(cnn, ["image"], ["logits"])
    cnn.fit(x_train, y_train, batch_size=BATCH_SIZE, epochs=scaled(CNN_EPOCHS, epochs_scale), shuffle=True, verbose=0)
    figures["digits_cnn accuracy"] = f"{accuracy(cnn.predict(x_test, verbose=0), y_test):.4f}"
    cnn.save(out_dir / "digits_cnn.keras")
    max_diff = save_cnn_h5(cnn, x_test, out_dir / "digits_cnn.h5")
    figures["digits_cnn.h5 max |diff| vs .keras"] = f"{max_diff:.1e}"
    export_savedmodel(cnn, out_dir / "digits_cnn_savedmodel")

    # Two inputs, two outputs.
    train_io = multi_io_arrays(x_train, y_train)
    test_io = multi_io_arrays(x_test, y_test)
    np.savez_compressed(out_dir / "digits_multi_io_train.npz", **train_io)
    np.savez_compressed(out_dir / "digits_multi_io_test.npz", **test_io)
    multi_io = build_multi_io()
    check_names(multi_io, ["image", "row_sums"], ["digit", "ink"])
    multi_io.fit(
        {"image": train_io["image"], "row_sums": train_io["row_sums"]},
        {"digit": train_io["y_digit"], "ink": train_io["y_ink"]},
        batch_size=BATCH_SIZE,
        epochs=scaled(MULTI_IO_EPOCHS, epochs_scale),
        shuffle=True,
        verbose=0,
    )
    digit_logits, ink = multi_io.predict(
        {"image": test_io["image"], "row_sums": test_io["row_sums"]}, verbose=0
    )
    figures["digits_multi_io digit accuracy"] = f"{accuracy(digit_logits, y_test):.4f}"
    figures["digits_multi_io ink MAE"] = f"{float(np.mean(np.abs(ink - test_io['y_ink']))):.4f}"
    multi_io.save(out_dir / "digits_multi_io.keras")

    # GRU sequence classifier.
    gru = build_gru()
    check_names(gru, ["image"], ["logits"])
    gru.fit(x_train, y_train, batch_size=BATCH_SIZE, epochs=scaled(GRU_EPOCHS, epochs_scale), shuffle=True, verbose=0)
    figures["digits_gru accuracy"] = f"{accuracy(gru.predict(x_test, verbose=0), y_test):.4f}"
    gru.save(out_dir / "digits_gru.keras")

    return figures


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    started = time.perf_counter()
    if args.images_only:
        x_train, y_train, _, _ = load_digit_splits(args.seed)
        count = write_digit_images(x_train, y_train, args.out / "digits_images")
        print(f"{count} PNGs -> {args.out / 'digits_images'}")
        return 0
    figures = build(args.out, args.seed, args.epochs_scale)
    width = max(len(name) for name in figures)
    for name, value in figures.items():
        print(f"{name:<{width}}  {value}")
    print(f"{'built in':<{width}}  {time.perf_counter() - started:.1f} s -> {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
