"""How the ``qat`` mode fine-tunes a model: the training stage's options, declared once (no TensorFlow)."""
from __future__ import annotations

from dataclasses import dataclass

from tflq import options as opts
from tflq.errors import UsageError

MAX_COUNT = 2**31 - 1  # counts reach C ints; anything bigger is a typo


@dataclass(frozen=True)
class QatOptions:
    """How the ``qat`` mode fine-tunes a model before converting it (see :mod:`tflq.qat.quantize_aware`).

    ``train_data``/``val_data`` are data-layer specs (.npz with labels, image folder with class subfolders,
    ``module:function`` yielding dicts with ``y``). ``loss`` None and ``from_logits`` None mean "as the model's
    saved compile configuration says". ``progress`` shows tf_keras's per-epoch bar on stderr.
    """

    train_data: str | None = opts.setting(
        None, opts.Text(optional=True, path=True, metavar="DATA"),
        "mode qat, and required by it: labelled training data (.npz with x and y, an image folder with class "
        "subfolders, or module:function)", flag="--train-data", section="qat",
    )
    val_data: str | None = opts.setting(
        None, opts.Text(optional=True, path=True, metavar="DATA"),
        "mode qat: labelled validation data, reported after each epoch", flag="--val-data", section="qat",
    )
    epochs: int = opts.setting(2, opts.Integer(minimum=1, maximum=MAX_COUNT), "mode qat: training epochs",
                               flag="--epochs", section="qat")
    batch_size: int = opts.setting(32, opts.Integer(minimum=1, maximum=MAX_COUNT), "mode qat: training batch size",
                                   flag="--batch-size", section="qat")
    learning_rate: float = opts.setting(
        1e-3, opts.Number(0, 1, open_min=True, open_max=True),
        "mode qat: Adam learning rate (1e-3 is the Adam default the tfmot QAT guide fine-tunes with)",
        flag="--learning-rate", section="qat",
    )
    loss: str | None = opts.setting(
        None, opts.Text(optional=True, metavar="NAME"),
        "mode qat: the loss to train with, a built-in Keras loss name such as sparse_categorical_crossentropy",
        flag="--loss", section="qat", shown_default="the model's saved compile configuration",
    )
    from_logits: bool | None = opts.setting(
        None, opts.Flag(optional=True), "mode qat: whether the model outputs logits", flag="--from-logits",
        section="qat", shown_default="as the saved loss says",
    )
    seed: int = opts.setting(0, opts.Integer(minimum=0, maximum=MAX_COUNT),
                             "mode qat: random seed; the same seed, data and settings give the same model",
                             flag="--seed", section="qat")
    progress: bool = False

    def __post_init__(self) -> None:
        for label, value in (("epochs", self.epochs), ("batch size", self.batch_size)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise UsageError(f"QAT {label} must be a positive integer, got {value!r}")
        rate = self.learning_rate
        if isinstance(rate, bool) or not isinstance(rate, (int, float)) or not 0 < rate < 1:
            raise UsageError(f"QAT learning rate must be in (0, 1), got {rate!r}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            raise UsageError(f"QAT seed must be a non-negative integer, got {self.seed!r}")
        if self.loss is not None and (not isinstance(self.loss, str) or not self.loss):
            raise UsageError(f"QAT loss must be a loss name, got {self.loss!r}")
