"""``tflq convert``: one .tflite per mode and I/O type, from the options the conversion stage declares."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click

from tflq import options as opts
from tflq.cli import flags as cli_flags
from tflq.cli.common import (
    TflqClickException,
    echo_err,
    handle_errors,
    print_rows,
    setup_logging,
    verbose_option,
)
from tflq.cli.progress_view import live_console, phase_status, plain_option
from tflq.convert.options import ConvertOptions
from tflq.errors import EXIT_FAILED, UsageError
from tflq.model.options import ImageOptions, ModelOptions
from tflq.qat.options import QatOptions


@click.command("convert")
@click.argument("model", type=click.Path(path_type=Path))
@cli_flags.click_options(ConvertOptions, names=["modes"])
@click.option(
    "--all-modes",
    is_flag=True,
    help="Every converter mode except the training ones (they need data); the litert-quantizer modes are opt-in.",
)
@cli_flags.click_options(ConvertOptions, names=["io_types", "calibration", "calibration_samples"])
@cli_flags.click_options(ImageOptions)
@cli_flags.click_options(ConvertOptions, exclude=["modes", "io_types", "calibration", "calibration_samples"])
@click.option("-o", "--output-dir", type=click.Path(), default="build", show_default=True, help="Where outputs go.")
@click.option("--name", help="Output file-name stem (default: the model's name).")
@cli_flags.click_options(ModelOptions)
@cli_flags.click_options(QatOptions)
@click.option("--json", "as_json", is_flag=True, help="Print a JSON list of the outputs.")
@click.option(
    "--eval",
    "eval_data",
    metavar="DATA",
    help="Then measure every output on DATA (size, latency, accuracy, agreement) and print the comparison table.",
)
@plain_option
@verbose_option
@handle_errors
def convert_command(
    model: Path,
    all_modes: bool,
    output_dir: str,
    name: str | None,
    as_json: bool,
    eval_data: str | None,
    plain: bool,
    verbose: bool,
    **flags: Any,
) -> None:
    """Convert MODEL (.keras, .h5, SavedModel directory or float32 .tflite) into one .tflite per mode and I/O type.

    A float32 .tflite (from any converter) takes the modes that start from a float .tflite: float32 (the file
    itself) and the litert-quantizer modes.

    Mode qat fine-tunes the model with quantization-aware training on --train-data first (never part of
    --all-modes).
    """
    from tflq.convert.session import check_data_file, convert_model
    from tflq.modes import MODES

    setup_logging(verbose)
    qat_flags = cli_flags.flags_given(QatOptions, flags)
    convert_flags = cli_flags.flags_given(ConvertOptions, flags)
    given = cli_flags.from_flags(ConvertOptions, flags)
    if all_modes and "modes" in given:
        raise UsageError("--all-modes and --mode are exclusive: use one")
    if all_modes:
        given["modes"] = tuple(name_ for name_, mode in MODES.items() if mode.in_all_modes)
    chosen = given.get("modes", opts.defaults(ConvertOptions)["modes"])
    qat = cli_flags.from_flags(QatOptions, flags)
    if not any(MODES[name_].needs_training for name_ in chosen):
        if qat_flags:
            raise UsageError(f"{', '.join(qat_flags)} apply to mode qat only; add --mode qat or drop them")
    elif not qat.get("train_data"):
        raise UsageError(
            "mode qat needs labelled training data: pass --train-data DATA (.npz with x and y, "
            "an image folder with class subfolders, or module:function)"
        )
    _refuse_unread(given, chosen, convert_flags)
    if not str(output_dir):
        raise UsageError("-o/--output-dir is empty: expected a folder")
    options = ConvertOptions(
        **given,
        images=ImageOptions(**cli_flags.from_flags(ImageOptions, flags)),
        model=ModelOptions(**cli_flags.from_flags(ModelOptions, flags)),
        qat=QatOptions(**qat, progress=verbose or sys.stderr.isatty()),
    )
    check_data_file(eval_data)  # before the conversion, not after it
    live = live_console(plain or verbose)  # -v: TensorFlow's own output would tear a live view
    with phase_status(live, refresh=True, pause_training=options.qat.progress):  # the phases on a terminal
        result = convert_model(model, Path(output_dir), options, name=name)
    measurements = (
        _evaluate_conversion(result, model, eval_data, options.model, quiet=as_json, live=live) if eval_data else {}
    )
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
            print_rows([measurement.to_dict() for measurement in measurements.values()])
    failed_measurements = [measurement for measurement in measurements.values() if measurement.error]
    for measurement in failed_measurements:
        echo_err(f"Error: {measurement.error}")
    if not result.ok:
        failed = [a.label for a in result.artifacts if not a.ok]
        raise TflqClickException(
            f"{len(failed)} of {len(result.artifacts)} variant(s) failed: {', '.join(failed)}", EXIT_FAILED
        )
    if failed_measurements:
        raise click.exceptions.Exit(EXIT_FAILED)


def _refuse_unread(given: dict[str, Any], chosen: tuple[str, ...], flags: list[str]) -> None:
    """A flag of a setting that no requested mode reads is an error, never silently ignored."""
    from tflq.modes import MODES, modes_reading

    read_by_modes = {name for mode in MODES.values() for name in mode.settings}
    flag_of = {item.name: item.setting.flag for item in opts.declared(ConvertOptions)}
    for name in given:
        if name in ("skip_layers", "skip_ops"):
            continue  # ConvertOptions says which mode selective quantization needs
        if name in read_by_modes and not any(name in MODES[mode].settings for mode in chosen):
            flag = flag_of[name]
            if flag not in flags:
                continue
            if name == "per_tensor" and all(MODES[mode].needs_training for mode in chosen):
                raise UsageError(
                    f"{flag} does not apply to mode {', '.join(chosen)}: "
                    "the trained model decides the weight granularity"
                )
            raise UsageError(
                f"{flag} does not apply to mode(s) {', '.join(chosen)}; it applies to {', '.join(modes_reading(name))}"
            )


def _evaluate_conversion(
    result: Any, model: Path, eval_data: str, model_options: Any, *, quiet: bool, live: Any = None
) -> dict[str, Any]:
    """``convert --eval``: measure the variants that were written. Returns path -> Measurement."""
    from tflq.measure.harness import evaluate_artifacts

    paths = [str(artifact.path) for artifact in result.artifacts if artifact.ok]
    if not paths:
        return {}
    with phase_status(live if not quiet else None, refresh=False) as status:
        measurements = evaluate_artifacts(
            paths, str(model), data=eval_data, reference_options=model_options,
            on_progress=status.on_progress if status is not None else None,
        )
    if not quiet:
        from tflq.report.render import notes_of

        for note in notes_of([measurement.to_dict() for measurement in measurements], errors=False):
            echo_err(f"Note: {note}")
    return {measurement.tflite_path: measurement for measurement in measurements}


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
                f"ok     {artifact.label:<16} {artifact.size_bytes:>10,d} B  {artifact.seconds:6.2f} s  "
                f"{artifact.path}{note}"
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
