"""The ``tflq`` command line: a thin shell over the library.

Each command parses its options, calls one library function, and prints. Library code raises
:class:`tflq.errors.TflqError`; this module is the one place that turns it into a message and an exit code.
Nothing heavy is imported at module level, so ``tflq --help`` stays instant.
"""
from __future__ import annotations

import functools
import sys
from pathlib import Path
from typing import Any, Callable

import click

from tflq import __version__
from tflq.errors import EXIT_FAILED, TflqError


class TflqClickException(click.ClickException):
    """A ClickException that carries tflq's exit code."""

    def __init__(self, message: str, exit_code: int) -> None:
        super().__init__(message)
        self.exit_code = exit_code


def handle_errors(command: Callable[..., Any]) -> Callable[..., Any]:
    """Turn TflqError into a one-line ``Error: ...`` message and the documented exit code."""

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return command(*args, **kwargs)
        except TflqError as error:
            raise TflqClickException(str(error), error.exit_code) from None
        except KeyboardInterrupt:
            raise TflqClickException("interrupted", EXIT_FAILED) from None

    return wrapper


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="tflq")
def main() -> None:
    """Convert TensorFlow/Keras models to quantized TensorFlow Lite models and measure which one to ship."""


def echo_err(message: str) -> None:
    click.echo(message, err=True)


def setup_logging(verbose: bool) -> None:
    """Route tflq's notices to stderr; ``-v`` also shows TensorFlow's own output."""
    import logging

    from tflq import _tf

    _tf.set_verbose(verbose)
    logger = logging.getLogger("tflq")
    class ClickHandler(logging.Handler):
        """Writes through click at emit time, so it follows whatever stderr is current."""

        def emit(self, record: logging.LogRecord) -> None:
            click.echo(self.format(record), err=True)

    for handler in [h for h in logger.handlers if getattr(h, "_tflq", False)]:
        logger.removeHandler(handler)
    handler = ClickHandler()
    handler.setFormatter(logging.Formatter("%(levelname)s: %(message)s"))
    handler._tflq = True  # type: ignore[attr-defined]
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG if verbose else logging.INFO)
    logger.propagate = False


def mode_names() -> list[str]:
    from tflq.modes import MODES

    return list(MODES)


def io_type_names() -> list[str]:
    from tflq.modes import MODES

    return sorted({io for mode in MODES.values() for io in mode.io_types})


@main.command("modes")
@handle_errors
def modes_command() -> None:
    """List the conversion modes, one line each."""
    from tflq.modes import MODES

    width = max(len(name) for name in MODES)
    for mode in MODES.values():
        io = "/".join(mode.io_types)
        click.echo(f"{mode.name:<{width}}  {mode.summary}  [I/O: {io}]")


@main.command("convert")
@click.argument("model", type=click.Path(path_type=Path))
@click.option("--mode", "modes", multiple=True, type=click.Choice(mode_names()), help="Mode to produce (repeatable).")
@click.option("--all-modes", is_flag=True, help="Produce every mode in the registry.")
@click.option(
    "--io-type", "io_types", multiple=True, type=click.Choice(io_type_names()),
    help="Model input/output type for the integer modes (repeatable): int8 takes float32/int8/uint8, 16x8 float32/int16.",
)
@click.option("--calib", "calibration", metavar="DATA", help="Calibration data: .npz, .npy, image folder, module:function, or 'random'.")
@click.option("--calib-samples", type=click.IntRange(min=1), default=200, show_default=True, help="Calibration samples to use.")
@click.option("--image-scale", type=click.Choice(["unit", "symmetric", "raw", "imagenet"]), default="unit", show_default=True,
              help="How image-folder pixels are scaled: unit [0,1], symmetric [-1,1], raw [0,255], imagenet mean/std.")
@click.option("--per-tensor", is_flag=True, help="Per-tensor instead of per-channel weight quantization.")
@click.option("--allow-float-fallback", is_flag=True, help="Integer modes: keep ops without an integer kernel in float (and say which).")
@click.option("-o", "--output-dir", type=click.Path(path_type=Path), default=Path("build"), show_default=True)
@click.option("--name", help="Output file-name stem (default: the model's name).")
@click.option("--signature", help="SavedModel signature to convert (default: serving_default or the only one).")
@click.option("--custom-objects", multiple=True, metavar="MODULE:ATTR", help="Custom Keras layer/object to load the model with (repeatable).")
@click.option("--unsafe-deserialization", is_flag=True, help="Allow Lambda layers (runs Python code stored in the model file).")
@click.option("--train-data", metavar="DATA", help="Mode qat: labelled training data (.npz with x and y, image folder with class subfolders, module:function).")
@click.option("--val-data", metavar="DATA", help="Mode qat: labelled validation data, reported after each epoch.")
@click.option("--epochs", type=click.IntRange(min=1), help="Mode qat: training epochs.  [default: 2]")
@click.option("--batch-size", type=click.IntRange(min=1), help="Mode qat: training batch size.  [default: 32]")
@click.option("--learning-rate", type=click.FloatRange(min=0, max=1, min_open=True, max_open=True),
              help="Mode qat: Adam learning rate.  [default: 0.0001]")
@click.option("--loss", metavar="NAME", help="Mode qat: loss to train with (default: the model's saved compile config), e.g. sparse_categorical_crossentropy.")
@click.option("--from-logits/--no-from-logits", default=None,
              help="Mode qat: whether the model outputs logits (default: as the saved loss says).")
@click.option("--seed", type=click.IntRange(min=0), help="Mode qat: random seed.  [default: 0]")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON list of the outputs.")
@click.option("-v", "--verbose", is_flag=True, help="Show TensorFlow's own logging.")
@handle_errors
def convert_command(
    model: Path, modes: tuple[str, ...], all_modes: bool, io_types: tuple[str, ...], calibration: str | None,
    calib_samples: int, image_scale: str, per_tensor: bool, allow_float_fallback: bool, output_dir: Path,
    name: str | None, signature: str | None, custom_objects: tuple[str, ...], unsafe_deserialization: bool,
    train_data: str | None, val_data: str | None, epochs: int | None, batch_size: int | None,
    learning_rate: float | None, loss: str | None, from_logits: bool | None, seed: int | None,
    as_json: bool, verbose: bool,
) -> None:
    """Convert MODEL (.keras, .h5 or SavedModel directory) into one .tflite per mode and I/O type.

    Mode qat fine-tunes the model with quantization-aware training on --train-data first (never part of
    --all-modes).
    """
    import json

    from tflq.convert import ConvertOptions, QatOptions, convert_model
    from tflq.data import ImageOptions
    from tflq.errors import EXIT_FAILED, UsageError
    from tflq.models import ModelOptions
    from tflq.modes import MODES

    setup_logging(verbose)
    if all_modes and modes:
        raise UsageError("--all-modes and --mode are exclusive: use one")
    chosen = tuple(MODES) if all_modes else (modes or ("float32",))
    if all_modes:
        chosen = tuple(name_ for name_ in chosen if not MODES[name_].needs_training)
    training_flags = {
        "--train-data": train_data, "--val-data": val_data, "--epochs": epochs, "--batch-size": batch_size,
        "--learning-rate": learning_rate, "--loss": loss, "--from-logits/--no-from-logits": from_logits,
        "--seed": seed,
    }
    if not any(MODES[name_].needs_training for name_ in chosen):
        given = [flag for flag, value in training_flags.items() if value is not None]
        if given:
            raise UsageError(f"{', '.join(given)} apply to mode qat only; add --mode qat or drop them")
    elif not train_data:
        raise UsageError("mode qat needs labelled training data: pass --train-data DATA (.npz with x and y, "
                         "an image folder with class subfolders, or module:function)")
    if per_tensor and all(MODES[name_].needs_training for name_ in chosen):
        raise UsageError("--per-tensor does not apply to mode qat: the trained model decides the weight granularity")
    defaults = QatOptions()
    qat_options = QatOptions(
        train_data=train_data,
        val_data=val_data,
        epochs=defaults.epochs if epochs is None else epochs,
        batch_size=defaults.batch_size if batch_size is None else batch_size,
        learning_rate=defaults.learning_rate if learning_rate is None else learning_rate,
        loss=loss,
        from_logits=from_logits,
        seed=defaults.seed if seed is None else seed,
        progress=verbose or sys.stderr.isatty(),
    )
    options = ConvertOptions(
        modes=chosen,
        io_types=io_types,
        calibration=calibration,
        calibration_samples=calib_samples,
        per_tensor=per_tensor,
        allow_float_fallback=allow_float_fallback,
        images=ImageOptions(scale=image_scale),
        model=ModelOptions(signature=signature, custom_objects=custom_objects, unsafe_deserialization=unsafe_deserialization),
        qat=qat_options,
    )
    result = convert_model(model, output_dir, options, name=name)
    if as_json:
        click.echo(json.dumps([artifact.to_dict() for artifact in result.artifacts], indent=2))
    else:
        print_artifacts(result)
    if not result.ok:
        failed = [a.label for a in result.artifacts if not a.ok]
        raise TflqClickException(f"{len(failed)} of {len(result.artifacts)} variant(s) failed: {', '.join(failed)}", EXIT_FAILED)


def print_artifacts(result: Any) -> None:
    """The human summary of a conversion: one line per variant, then the shared costs."""
    for artifact in result.artifacts:
        if artifact.ok:
            note = f"  ({len(artifact.float_ops)} op(s) left in float)" if artifact.float_ops else ""
            click.echo(
                f"ok     {artifact.label:<16} {artifact.size_bytes:>10,d} B  {artifact.seconds:6.2f} s  {artifact.path}{note}"
            )
        else:
            click.echo(f"error  {artifact.label:<16} {artifact.error}")
    trained = next((a.training for a in result.artifacts if a.training), None)
    if trained:
        metric = f", {trained['val_metric']} {trained['val_value']:.4f}" if trained.get("val_metric") else ""
        click.echo(
            f"qat: {trained['epochs']} epoch(s) of {trained['loss']} ({trained['loss_source']}), "
            f"fit {trained['seconds']:.2f} s{metric}"
        )
    training = f"training {result.training_seconds:.2f} s, " if result.training_seconds else ""
    click.echo(
        f"{result.name}: export {result.export_seconds:.2f} s, calibration {result.calibration_seconds:.2f} s, "
        f"{training}{sum(a.ok for a in result.artifacts)}/{len(result.artifacts)} variant(s) written"
    )


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
