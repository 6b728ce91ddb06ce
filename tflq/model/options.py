"""How a model is loaded and how image files become inputs: the model stage's options, declared once (no numpy,
no TensorFlow: the CLI builds its flags from these at start-up)."""
from __future__ import annotations

from dataclasses import dataclass

from tflq import options as opts
from tflq.errors import UsageError

MAX_STATIC_BATCH = 65_536  # beyond this a typo, not a batch
IMAGE_SCALES = {
    "unit": "pixels / 255, in [0, 1] (default)",
    "symmetric": "pixels / 127.5 - 1, in [-1, 1] (MobileNet, EfficientNet-lite style)",
    "raw": "pixels as float32 in [0, 255]",
    "imagenet": "(pixels / 255 - mean) / std with the ImageNet mean and std",
}


@dataclass(frozen=True)
class ImageOptions:
    """How image files become model inputs."""

    scale: str = opts.setting(
        "unit", opts.Choice(tuple(IMAGE_SCALES)),
        "how image-folder pixels are scaled: unit [0,1], symmetric [-1,1], raw [0,255], imagenet mean/std",
        flag="--image-scale", section="calibration", yaml="image_scale",
    )

    def __post_init__(self) -> None:
        if self.scale not in IMAGE_SCALES:
            raise UsageError(f"image scale {self.scale!r}: expected one of {', '.join(IMAGE_SCALES)}")


@dataclass(frozen=True)
class ModelOptions:
    """How to load a model: signature choice for SavedModels, custom objects, safe mode, and the export's batch."""

    signature: str | None = opts.setting(
        None, opts.Text(optional=True, metavar="KEY"), "SavedModel signature to convert", flag="--signature",
        shown_default="serving_default, or the only one",
    )
    custom_objects: tuple[str, ...] = opts.setting(
        (), opts.Names(what="MODULE:ATTR", metavar="MODULE:ATTR"),
        "custom Keras classes needed to load the model (the current directory is importable)", flag="--custom-objects",
    )
    unsafe_deserialization: bool = opts.setting(
        False, opts.Flag(), "allow Lambda layers, whose Python code runs while loading (refused by default)",
        flag="--unsafe-deserialization",
    )
    static_batch: int | None = opts.setting(
        None, opts.Integer(minimum=1, maximum=MAX_STATIC_BATCH, optional=True),
        "export with this fixed batch size instead of a dynamic batch (fewer XNNPACK partitions on some graphs; "
        "Keras model files only)",
        flag="--static-batch", shown_default="none (dynamic batch)",
    )
