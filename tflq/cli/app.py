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


MAX_CALIB_SAMPLES = 10_000_000  # a sane upper bound for --calib-samples (the data decides below it)


def echo_err(message: str) -> None:
    click.echo(message, err=True)


# ---------------------------------------------------------------------------------------------------------------
# tflq eval / tflq inspect

_FORMAT_BY_SUFFIX = {".json": "json", ".csv": "csv", ".md": "md"}


def _output_format(output_format: str | None, as_json: bool, output: str | None) -> str:
    from tflq.errors import UsageError

    if as_json:
        if output_format not in (None, "json"):
            raise UsageError(f"--json conflicts with --format {output_format}")
        return "json"
    if output_format:
        return output_format
    if output:
        import os

        return _FORMAT_BY_SUFFIX.get(os.path.splitext(output)[1].lower(), "table")
    return "table"


def _progress_reporter(quiet: bool) -> tuple[Any, Callable[[str, int, int | None], None] | None]:
    """A rich progress display on a terminal (refreshed by hand: no thread, so children can be forked), else None."""
    if quiet or not sys.stderr.isatty():
        return None, None
    import os

    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    progress = Progress(
        TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
        console=Console(stderr=True), auto_refresh=False, transient=True,
    )
    tasks: dict[str, Any] = {}

    def on_progress(label: str, done: int, total: int | None) -> None:
        if label not in tasks:
            tasks[label] = progress.add_task(os.path.basename(label), total=total)
        progress.update(tasks[label], completed=done, total=total)
        progress.refresh()

    return progress, on_progress


def _emit(text: str, output: str | None, quiet: bool) -> None:
    if output:
        from tflq.convert.session import write_atomically

        write_atomically(Path(output), text.encode("utf-8"))  # complete or absent, like every tflq output
        if not quiet:
            echo_err(f"wrote {output}")
    else:
        click.echo(text, nl=False)


def setup_logging(verbose: bool) -> None:
    """Route tflq's notices to stderr; ``-v`` also shows TensorFlow's own output."""
    import logging

    from tflq._tf import imports as _tf

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
@click.option("--calib-samples", type=click.IntRange(min=1, max=MAX_CALIB_SAMPLES), default=200, show_default=True,
              help="Calibration samples to use.")
@click.option("--image-scale", type=click.Choice(["unit", "symmetric", "raw", "imagenet"]), default="unit", show_default=True,
              help="How image-folder pixels are scaled: unit [0,1], symmetric [-1,1], raw [0,255], imagenet mean/std.")
@click.option("--per-tensor", is_flag=True, help="Per-tensor instead of per-channel weight quantization.")
@click.option("--allow-float-fallback", is_flag=True, help="Integer modes: keep ops without an integer kernel in float (and say which).")
@click.option("--skip-layers", "skip_layers", multiple=True, metavar="NAME,...",
              help="int8: keep these Keras layers in float, quantize the rest (comma-separated or repeated; see tflq debug).")
@click.option("--skip-ops", "skip_ops", multiple=True, metavar="OP,...",
              help="int8: keep every op of these TFLite types in float, e.g. FULLY_CONNECTED (comma-separated or repeated).")
@click.option("-o", "--output-dir", type=click.Path(), default="build", show_default=True)
@click.option("--name", help="Output file-name stem (default: the model's name).")
@click.option("--signature", help="SavedModel signature to convert (default: serving_default or the only one).")
@click.option("--custom-objects", multiple=True, metavar="MODULE:ATTR", help="Custom Keras layer/object to load the model with (repeatable).")
@click.option("--unsafe-deserialization", is_flag=True, help="Allow Lambda layers (runs Python code stored in the model file).")
@click.option("--train-data", metavar="DATA", help="Mode qat: labelled training data (.npz with x and y, image folder with class subfolders, module:function).")
@click.option("--val-data", metavar="DATA", help="Mode qat: labelled validation data, reported after each epoch.")
@click.option("--epochs", type=click.IntRange(min=1), help="Mode qat: training epochs.  [default: 2]")
@click.option("--batch-size", type=click.IntRange(min=1), help="Mode qat: training batch size.  [default: 32]")
@click.option("--learning-rate", type=click.FloatRange(min=0, max=1, min_open=True, max_open=True),
              help="Mode qat: Adam learning rate.  [default: 0.001, the tfmot guide's Adam default]")
@click.option("--loss", metavar="NAME", help="Mode qat: loss to train with (default: the model's saved compile config), e.g. sparse_categorical_crossentropy.")
@click.option("--from-logits/--no-from-logits", default=None,
              help="Mode qat: whether the model outputs logits (default: as the saved loss says).")
@click.option("--seed", type=click.IntRange(min=0), help="Mode qat: random seed.  [default: 0]")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON list of the outputs.")
@click.option("--eval", "eval_data", metavar="DATA", help="Then measure every output on DATA (size, latency, accuracy, agreement) and print the comparison table.")
@click.option("-v", "--verbose", is_flag=True, help="Show TensorFlow's own logging.")
@handle_errors
def convert_command(
    model: Path, modes: tuple[str, ...], all_modes: bool, io_types: tuple[str, ...], calibration: str | None,
    calib_samples: int, image_scale: str, per_tensor: bool, allow_float_fallback: bool,
    skip_layers: tuple[str, ...], skip_ops: tuple[str, ...], output_dir: str,
    name: str | None, signature: str | None, custom_objects: tuple[str, ...], unsafe_deserialization: bool,
    train_data: str | None, val_data: str | None, epochs: int | None, batch_size: int | None,
    learning_rate: float | None, loss: str | None, from_logits: bool | None, seed: int | None,
    as_json: bool, eval_data: str | None, verbose: bool,
) -> None:
    """Convert MODEL (.keras, .h5 or SavedModel directory) into one .tflite per mode and I/O type.

    Mode qat fine-tunes the model with quantization-aware training on --train-data first (never part of
    --all-modes).
    """
    from tflq.convert.session import ConvertOptions, QatOptions, check_data_file, convert_model
    from tflq.errors import EXIT_FAILED, UsageError
    from tflq.model.data import ImageOptions
    from tflq.model.load import ModelOptions
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
    for flag, setting, given in (("--per-tensor", "per_tensor", per_tensor),
                                 ("--allow-float-fallback", "allow_float_fallback", allow_float_fallback)):
        if given and not any(setting in MODES[name_].settings for name_ in chosen):
            takers = [mode.name for mode in MODES.values() if setting in mode.settings]
            raise UsageError(f"{flag} does not apply to mode(s) {', '.join(chosen)}; it applies to {', '.join(takers)}")
    if not str(output_dir):
        raise UsageError("-o/--output-dir is empty: expected a folder")
    for flag, values in (("--skip-layers", skip_layers), ("--skip-ops", skip_ops)):
        if values and not split_names(values):
            raise UsageError(f"{flag} {','.join(values)!r}: expected one or more comma-separated names")
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
        skip_layers=split_names(skip_layers),
        skip_ops=split_names(skip_ops),
        images=ImageOptions(scale=image_scale),
        model=ModelOptions(signature=signature, custom_objects=custom_objects, unsafe_deserialization=unsafe_deserialization),
        qat=qat_options,
    )
    check_data_file(eval_data)  # before the conversion, not after it
    result = convert_model(model, Path(output_dir), options, name=name)
    measurements = _evaluate_conversion(result, model, eval_data, options.model, quiet=as_json) if eval_data else {}
    if as_json:
        rows = []
        for artifact in result.artifacts:
            row = artifact.to_dict()
            if eval_data:
                measured = measurements.get(str(artifact.path))
                row["eval"] = measured.to_dict() if measured is not None else None
            rows.append(row)
        from tflq.report.render import to_json

        click.echo(to_json(rows), nl=False)
    else:
        print_artifacts(result)
        if measurements:
            _print_rows([measurement.to_dict() for measurement in measurements.values()])
    failed_measurements = [measurement for measurement in measurements.values() if measurement.error]
    for measurement in failed_measurements:
        echo_err(f"Error: {measurement.error}")
    if not result.ok:
        failed = [a.label for a in result.artifacts if not a.ok]
        raise TflqClickException(f"{len(failed)} of {len(result.artifacts)} variant(s) failed: {', '.join(failed)}", EXIT_FAILED)
    if failed_measurements:
        raise click.exceptions.Exit(EXIT_FAILED)


def _evaluate_conversion(result: Any, model: Path, eval_data: str, model_options: Any, *, quiet: bool) -> dict[str, Any]:
    """``convert --eval``: measure the variants that were written. Returns path -> Measurement."""
    from tflq.measure.harness import evaluate_artifacts

    paths = [str(artifact.path) for artifact in result.artifacts if artifact.ok]
    if not paths:
        return {}
    progress, on_progress = _progress_reporter(quiet)
    if progress is not None:
        progress.start()
    try:
        measurements = evaluate_artifacts(
            paths, str(model), data=eval_data, reference_options=model_options, on_progress=on_progress
        )
    finally:
        if progress is not None:
            progress.stop()
    if not quiet:
        from tflq.report.render import notes_of

        for note in notes_of([measurement.to_dict() for measurement in measurements], errors=False):
            echo_err(f"Note: {note}")
    return {measurement.tflite_path: measurement for measurement in measurements}


def _print_rows(rows: list[dict[str, Any]]) -> None:
    """The comparison table on stdout (rich on a terminal, plain text otherwise)."""
    from tflq.report.render import render_table, render_text

    if sys.stdout.isatty():
        from rich.console import Console

        Console().print(render_table(rows))
    else:
        click.echo(render_text(rows, "table"), nl=False)


def split_names(values: tuple[str, ...]) -> tuple[str, ...]:
    """``("a,b", "c")`` -> ``("a", "b", "c")``: options that take comma-separated lists and may be repeated."""
    return tuple(part.strip() for value in values for part in value.split(",") if part.strip())


def print_artifacts(result: Any) -> None:
    """The human summary of a conversion: one line per variant, then the shared costs."""
    for artifact in result.artifacts:
        if artifact.ok:
            note = ""
            if artifact.float_ops:
                layers = list(dict.fromkeys(artifact.float_layers))
                shown = ", ".join(layers[:6]) + (" ..." if len(layers) > 6 else "")
                note = f"  ({len(artifact.float_ops)} op(s) left in float: {shown})"
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


def model_options(signature: str | None, custom_objects: tuple[str, ...], unsafe_deserialization: bool) -> Any:
    from tflq.model.load import ModelOptions

    return ModelOptions(signature=signature, custom_objects=custom_objects, unsafe_deserialization=unsafe_deserialization)


def model_loading_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """The options every command that loads a Keras model or SavedModel shares."""
    for decorator in reversed([
        click.option("--signature", help="SavedModel signature (default: serving_default or the only one)."),
        click.option("--custom-objects", multiple=True, metavar="MODULE:ATTR", help="Custom Keras layer/object to load the model with (repeatable)."),
        click.option("--unsafe-deserialization", is_flag=True, help="Allow Lambda layers (runs Python code stored in the model file)."),
    ]):
        command = decorator(command)
    return command


def calibration_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """--calib, --calib-samples, --image-scale, --per-tensor, as ``tflq convert`` has them."""
    for decorator in reversed([
        click.option("--calib", "calibration", metavar="DATA", help="Calibration data: .npz, .npy, image folder, module:function, or 'random'."),
        click.option("--calib-samples", type=click.IntRange(min=1, max=MAX_CALIB_SAMPLES), default=200, show_default=True,
              help="Calibration samples to use."),
        click.option("--image-scale", type=click.Choice(["unit", "symmetric", "raw", "imagenet"]), default="unit", show_default=True,
                     help="How image-folder pixels are scaled: unit [0,1], symmetric [-1,1], raw [0,255], imagenet mean/std."),
        click.option("--per-tensor", is_flag=True, help="Per-tensor instead of per-channel weight quantization."),
    ]):
        command = decorator(command)
    return command


@main.command("run")
@click.argument("config_path", metavar="CONFIG.yaml", type=click.Path(path_type=Path))
@click.option("--only", multiple=True, metavar="NAME", help="Run only this model of the file (repeatable).")
@click.option("--modes", "modes", metavar="MODE[,MODE...]", help="Override every model's modes (comma-separated).")
@click.option("--force", is_flag=True, help="Rebuild and re-measure even what is up to date.")
@click.option("-o", "--output-dir", type=click.Path(path_type=Path), help="Override the file's output_dir.")
@click.option("--jobs", type=click.IntRange(min=1), default=1, show_default=True, help="Models processed in parallel.")
@click.option("--json", "as_json", is_flag=True, help="Print report.json to stdout instead of the table.")
@click.option("-v", "--verbose", is_flag=True, help="Show TensorFlow's own logging.")
@handle_errors
def run_command(
    config_path: Path, only: tuple[str, ...], modes: str | None, force: bool, output_dir: Path | None, jobs: int,
    as_json: bool, verbose: bool,
) -> None:
    """Run a YAML batch file: convert, measure, gate and report every model it lists.

    Exit codes: 0 all good, 1 a job failed, 2 usage or config error, 3 a gate failed.
    """
    import json
    import time

    from tflq.batch.config import Overrides, load_config, parse_modes_option
    from tflq.batch.run import run_batch

    setup_logging(verbose)
    override_modes = parse_modes_option(modes) if modes is not None else ()
    config = load_config(config_path, Overrides(modes=override_modes, output_dir=output_dir, only=only))
    started = time.perf_counter()
    total = sum(1 for _ in config.models)
    click.echo(f"tflq run {config_path}: {total} model(s) -> {config.output_dir}", err=True)
    for note in config.notes:
        click.echo(f"note: {note}", err=True)

    on_terminal = sys.stderr.isatty()
    console = None
    if on_terminal:
        from rich.console import Console

        console = Console(stderr=True, highlight=False)
    styles = {"start": "dim", "done": "green", "fail": "bold red", "info": "dim"}

    def on_event(kind: str, model: str, label: str, text: str) -> None:
        marker = {"start": "...", "done": "ok ", "fail": "ERR", "info": "   "}[kind]
        line = f"[{time.perf_counter() - started:7.1f}s] {marker} {model} {label}: {text}"
        if console is not None:
            console.print(line, style=styles[kind], markup=False)
        else:
            click.echo(line, err=True)

    try:
        result = run_batch(config, force=force, jobs=jobs, on_event=on_event)
    except KeyboardInterrupt:
        from tflq.batch.manifest import MANIFEST
        from tflq.errors import EXIT_FAILED

        raise TflqClickException(
            f"interrupted: the variants finished before are recorded in {config.output_dir / MANIFEST}; "
            "run again to do the rest", EXIT_FAILED,
        ) from None
    rows = [r.to_row() for r in result.results]
    if as_json:
        click.echo(json.dumps(rows, indent=2, default=str))
    else:
        from tflq.report.render import batch_columns, batch_notes, render_text

        named = [dict(row, name=f"{row['model']} {row['variant']}") for row in rows]
        click.echo(render_text(named, "table", columns=batch_columns(rows)).rstrip())
        for note in batch_notes(rows):
            click.echo(f"- {note}")
        click.echo("reports: " + ", ".join(str(p) for p in result.report_paths))
    if result.exit_code:
        from tflq.errors import EXIT_GATE

        failed = [f"{r.model} {r.label}" for r in result.results if r.status != "ok"]
        gated = [f"{r.model} {r.label}" for r in result.results if r.gate_failures]
        message = (
            f"{len(failed)} job(s) failed: {', '.join(failed)}" if failed
            else f"{len(gated)} variant(s) failed a gate: {', '.join(gated)}"
        )
        raise TflqClickException(message, result.exit_code if result.exit_code != EXIT_GATE or not failed else EXIT_FAILED)



# The measuring and debugging commands live in their own modules; importing them registers them on ``main``.
from tflq.cli import debug as cli_debug  # noqa: E402,F401  (pyflakes: used for their side effect)
from tflq.cli import measure as cli_measure

if __name__ == "__main__":  # pragma: no cover -- python -m tflq.cli.app: run the group the imports above filled
    from tflq.cli.app import main as registered_main

    sys.exit(registered_main())
