"""Export once, calibrate once, convert every requested variant, verify it runs, write it atomically."""

from __future__ import annotations

import contextlib
import hashlib
import logging
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from tflq import progress
from tflq._tf import calibrated as _calibrated
from tflq._tf import imports as _tf
from tflq._tf import litert_quantizer as _lq
from tflq.convert import source as _source
from tflq.convert.artifacts import (  # noqa: F401 (re-exported)
    Artifact,
    ConvertResult,
    default_name,
    output_name,
    output_path,
)
from tflq.convert.conversion_errors import explain_converter_error, no_kernel_message
from tflq.convert.layer_map import ModelOp, nodes_for_layers, nodes_for_op_types, read_ops
from tflq.convert.options import DEFAULT_CALIB_SAMPLES, MAX_CALIB_SAMPLES, ConvertOptions  # noqa: F401 (re-exported)
from tflq.convert.parallel import start_worker
from tflq.convert.verify import _same_tensor, float_op_details, float_ops, verify_runs  # noqa: F401 (re-exported)
from tflq.errors import ConversionError, DataError, QatTrainingError, TflqError, UsageError
from tflq.model.data import batched_samples, open_data
from tflq.model.load import ExportedModel, export_model, model_kind
from tflq.modes import MODES, Variant
from tflq.outputs import os_error_text, output_folder, write_atomically
from tflq.qat.training import QatOptions, TrainedModel, TrainingSummary, train_for_conversion  # noqa: F401 (re-exported)

log = logging.getLogger("tflq")


class ModelSession:
    """One model prepared for conversion: exported once, calibrated once, trained once (training modes), shared by
    all its variants."""

    def __init__(self, model_path: Path, options: ConvertOptions, workdir: Path) -> None:
        self.model_path = model_path
        self.options = options
        self.workdir = workdir
        self._exported: ExportedModel | None = None
        self._samples: list[dict[str, np.ndarray]] | None = None
        self._calibrated: bytes | None = None
        self._calibration_error: ConversionError | None = None
        self._model_ops: tuple[ModelOp, ...] | None = None
        self._float_nodes: tuple[str, ...] | None = None
        self._trained: TrainedModel | None = None
        self._training_error: TflqError | None = None
        self._trained_calibrated: bytes | None = None
        self._trained_calibration_error: ConversionError | None = None
        self._float_model: bytes | None = None
        self._relabel: dict[str, tuple[str, ...]] | None = None
        self._tflite: _source.TfliteSource | None = None  # a float .tflite MODEL, read on first use
        self.export_seconds = 0.0
        self.calibration_seconds = 0.0
        self.training_seconds = 0.0

    @property
    def exported(self) -> ExportedModel:
        """The SavedModel export (made on first use); for a float ``.tflite`` MODEL, its interface (read once, no
        export: see :mod:`tflq.convert.source`)."""
        if self._exported is None:
            start = time.perf_counter()
            if _source.is_tflite(self.model_path):
                self._tflite = _source.read_tflite_source(self.model_path, self.options.model)
                self._exported = self._tflite.interface
            else:
                self._exported = export_model(self.model_path, self.workdir / "saved_model", self.options.model)
            self.export_seconds = time.perf_counter() - start
        return self._exported

    @property
    def tflite_source(self) -> _source.TfliteSource | None:
        """The float ``.tflite`` MODEL (read on first use), or None for a Keras model or SavedModel."""
        self.exported  # noqa: B018 -- reads the source
        return self._tflite

    def require_converter(self, what: str) -> None:
        """Raise UsageError when the model is a ``.tflite`` (``what`` needs the converter)."""
        _source.require_converter(self.model_path, what)

    def calibration_samples(self) -> list[dict[str, np.ndarray]]:
        """The validated calibration samples (read once). Raises UsageError/DataError."""
        if self._samples is None:
            if not self.options.calibration:
                calibrated = [
                    name for name in self.options.modes if MODES[name].calibrated or "recipe" in MODES[name].settings
                ]
                raise UsageError(
                    f"mode(s) {', '.join(calibrated)} need calibration data: pass --calib DATA "
                    "(.npz, .npy, image folder or module:function), or --calib random for a smoke test"
                )
            dataset = open_data(
                self.options.calibration,
                self.exported.inputs,
                limit=self.options.calibration_samples,
                role="calibration",
                images=self.options.images,
            )
            self._samples = batched_samples(list(dataset.samples()), self.exported.static_batch)
        return self._samples

    def new_converter(self) -> Any:
        """A fresh TFLiteConverter on the export (never shared between variants). Raises UsageError for a
        ``.tflite`` MODEL (it has no export)."""
        self.require_converter("a converter mode")
        return _calibrated.saved_model_converter(str(self.exported.saved_model_dir), self.exported.signature_key)

    def calibrated_model(self) -> bytes:
        """The float32 model with calibration statistics (computed once; a ``CalibratedModel``, which 16x8 quantizes
        from). Raises ConversionError (also when the float32 conversion fails)."""
        if self._calibration_error is not None:
            raise self._calibration_error
        if self._calibrated is None:
            samples = self.calibration_samples()
            start = time.perf_counter()
            try:
                float_model = self.float_model()  # calibrated as converted once (the converter's own graph)
                start = time.perf_counter()  # calibration_seconds: the calibration, not the float32 conversion
                with _converter_errors("calibration", self.exported):
                    self._calibrated = _calibrated.calibrate_float(float_model, samples)
                with contextlib.suppress(AttributeError):
                    float_model.raw = None  # type: ignore[attr-defined]  # calibrated: its undeduplicated copy goes
            except ConversionError as error:
                self._calibration_error = error
                raise
            finally:
                self.calibration_seconds = time.perf_counter() - start
        return self._calibrated

    def float_model(self) -> bytes:
        """The float32 conversion of the export (converted once): the float32 variant, and what the litert-quantizer
        engine quantizes."""
        if self._float_model is None and self.tflite_source is not None:
            self._float_model = self.tflite_source.content  # the file itself, byte-identical
        if self._float_model is None:
            with _converter_errors("float32", self.exported):
                self._float_model = _calibrated.convert_float(self.new_converter())
            if not self.options.calibration:
                self._float_model.raw = None  # never calibrated: no second copy
        return self._float_model

    def relabel(self) -> dict[str, tuple[str, ...]] | None:
        """The Keras layers of each op (by output tensor) when the export is frozen, taken from a second export with
        variables and its float32 conversion, made once on first use (:func:`tflq.convert.layer_map.relabel_map`:
        frozen constants can give an op a second layer's name); None for any other export. Only runs that name ops
        after layers pay for it: ``--skip-layers``/``--skip-ops``/``--precision``, ops left in float, debug."""
        if not self.exported.frozen:
            return None
        if self._relabel is None:
            from tflq.convert.layer_map import relabel_map

            variables = export_model(self.model_path, self.workdir / "saved_model_variables", self.options.model,
                                     freeze=False)
            with _converter_errors("float32 (export with variables, for the layer names)", variables):
                content = bytes(_calibrated.saved_model_converter(
                    str(variables.saved_model_dir), variables.signature_key
                ).convert())
            self._relabel = relabel_map(self.float_model(), self.exported, content, variables)
        return self._relabel

    def converter_calibrates(self) -> bool:
        """True when a requested mode is quantized from the session's one converter calibration: a calibrated mode
        on the converter engine (on LiteRT Quantizer the static modes calibrate inside their build)."""
        return self.tflite_source is None and any(
            MODES[name].calibrated and MODES[name].engine_for(self.options) == "converter"
            for name in self.options.modes
        )

    def model_ops(self) -> tuple[ModelOp, ...]:
        """The ops of the calibrated (float) model, named after their Keras layers (read once); of the float32
        model when no converter mode calibrates (the same tensor names; the LiteRT Quantizer starts from it)."""
        if self._model_ops is None:
            source = self.calibrated_model() if self.converter_calibrates() else self.float_model()
            self._model_ops = read_ops(source, self.exported, self.relabel())
        return self._model_ops

    def precision_nodes(self, items: Sequence[str] | None = None) -> tuple[tuple[str, str], ...]:
        """(output tensor, precision) of the ops ``items`` (default: the options' ``layer_precision``) name
        (tflq/convert/precision.py). Raises UsageError for a layer the model does not have."""
        from tflq.convert.precision import resolve

        items = self.options.layer_precision if items is None else items
        return resolve(self.model_ops(), items) if items else ()

    def float_nodes(self) -> tuple[str, ...]:
        """The output tensors of the ops ``skip_layers``/``skip_ops`` keep in float (the quantizer's node denylist).

        Raises UsageError for a layer or op type the model does not have (listing the valid ones).
        """
        if self._float_nodes is None:
            nodes: dict[str, None] = {}
            if self.options.skip_layers or self.options.skip_ops:
                ops = self.model_ops()
                nodes.update(dict.fromkeys(nodes_for_layers(ops, self.options.skip_layers, self.exported)))
                nodes.update(dict.fromkeys(nodes_for_op_types(ops, self.options.skip_ops)))
            self._float_nodes = tuple(nodes)
        return self._float_nodes

    def trained(self) -> TrainedModel:
        """The ``qat`` fine-tune (done once, on first use; every I/O type converts from its one export).

        Raises QatError/UsageError/DataError when the model, loss or data cannot be used (before training), and
        QatTrainingError/ConversionError when training or its export fails (cached: each variant reports it).
        """
        if self._training_error is not None:
            raise self._training_error
        if self._trained is None:
            start = time.perf_counter()
            try:
                self._trained = train_for_conversion(
                    self.model_path,
                    self.exported,
                    self.options.qat,
                    model_options=self.options.model,
                    images=self.options.images,
                    representative_samples=self.options.calibration_samples,
                    workdir=self.workdir,
                )
            except (QatTrainingError, ConversionError) as error:
                self._training_error = error
                raise
            finally:
                self.training_seconds = time.perf_counter() - start
        return self._trained

    def trained_calibrated_model(self) -> bytes:
        """The trained export with calibration statistics for the tensors training left without a range (once).

        Quantizing it per I/O type gives the same models as the public converter configured by the ``qat`` mode
        (``tests/test_qat_mode.py`` checks it), at a fraction of the cost.
        """
        if self._trained_calibration_error is not None:
            raise self._trained_calibration_error
        if self._trained_calibrated is None:
            trained = self.trained()
            start = time.perf_counter()
            try:
                with _converter_errors("qat calibration"):
                    converter = _calibrated.saved_model_converter(str(trained.saved_model_dir), trained.signature_key)
                    self._trained_calibrated = _calibrated.calibrate(converter, trained.samples)
            except ConversionError as error:
                self._trained_calibration_error = error
                raise
            finally:
                self.calibration_seconds += time.perf_counter() - start
        return self._trained_calibrated

    def convert_variant(self, variant: Variant) -> bytes:
        """Convert one variant to TFLite bytes, the way its mode's build says. Raises ConversionError
        (QatTrainingError for a failed fine-tune)."""
        mode = MODES[variant.mode]
        float_nodes = self.float_nodes() if mode.selective else ()
        settings = self.options.settings(variant, float_nodes)
        with _converter_errors(variant.label, self.exported):
            return mode.make(self, settings)

    def verification_inputs(self, variant: Variant | None = None) -> dict[str, np.ndarray]:
        """One sample to run each converted model on: training data for a training mode, calibration data when
        given, else zeros."""
        if variant is not None and MODES[variant.mode].needs_training:
            return self.trained().samples[0]
        if self.options.calibration:
            return self.calibration_samples()[0]
        return {
            spec.name: np.zeros([1 if dim is None else dim for dim in spec.shape], dtype=spec.dtype)
            for spec in self.exported.inputs
        }


@contextlib.contextmanager
def _converter_errors(what: str, exported: ExportedModel | None = None) -> Iterator[None]:
    """Turn the converter's exceptions (and its captured native output) into one ConversionError line (naming the
    cause and the fix when known: see :mod:`tflq.convert.conversion_errors`)."""
    with _tf.quiet() as chatter:
        try:
            yield
        except TflqError:
            raise
        except Exception as error:  # the converter raises many types; each becomes a ConversionError
            detail = _tf.last_error_line(str(error)) or type(error).__name__
            raise ConversionError(explain_converter_error(what, detail, exported)) from error
    del chatter


def check_data_file(spec: str | None) -> None:
    """A missing ``.npz``/``.npy`` data file is a DataError now, not after a long export (the data layer reads it
    later; other kinds of data are checked there)."""
    if spec and Path(spec).suffix.lower() in (".npz", ".npy") and not Path(spec).exists():
        raise DataError(f"{spec}: no such file")


def convert_model(
    model_path: Path,
    output_dir: Path,
    options: ConvertOptions,
    *,
    name: str | None = None,
    workdir: Path | None = None,
) -> ConvertResult:
    """Convert ``model_path`` into every variant ``options`` ask for, under ``output_dir``.

    Returns a ConvertResult whose artifacts carry each variant's status; a variant that fails to convert or
    to run does not stop the others. Raises UsageError/ModelLoadError/DataError for bad input (before any
    conversion starts).
    """
    variants = options.variants()
    model_kind(model_path)
    _source.refuse_for_source(model_path, options, [variant.mode for variant in variants])
    name = output_name(model_path, name)
    for data in (options.calibration, options.qat.train_data, options.qat.val_data):
        check_data_file(data)
    if options.recipe and any("recipe" in MODES[v.mode].settings for v in variants):
        _lq.recipe_from_file(options.recipe)  # a bad recipe file fails before the export (ConfigError)
    targets = [output_path(output_dir, name, variant) for variant in variants]
    _source.refuse_overwriting(model_path, targets)
    with contextlib.ExitStack() as stack:
        stack.enter_context(output_folder(output_dir, targets))  # before the export: a bad -o fails first
        if workdir is None:
            workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="tflq-")))
        session = ModelSession(model_path, options, workdir)
        worker = start_worker(options, variants, workdir)
        if worker is not None:
            stack.callback(worker.cancel)
        with progress.phase("export", model=name):
            session.exported  # noqa: B018 -- load and export before anything else: bad models fail first
        if worker is not None:
            worker.start_converting(session.exported)
        if any(MODES[v.mode].calibrated for v in variants):
            with progress.phase("calibrate", model=name):
                session.calibration_samples()
                with contextlib.suppress(ConversionError):  # reported by each calibrated variant
                    if session.converter_calibrates():  # LiteRT Quantizer's static modes calibrate on their own
                        session.calibrated_model()
                    session.float_nodes()  # unknown --skip-layers/--skip-ops names fail before any output
        if any(MODES[v.mode].selective or "layer_precision" in MODES[v.mode].settings for v in variants):
            with contextlib.suppress(ConversionError):  # unknown layer names fail before any output
                session.float_nodes()
                session.precision_nodes()
        if any(MODES[v.mode].needs_training for v in variants):
            with progress.phase("train", model=name), contextlib.suppress(QatTrainingError, ConversionError):
                session.trained_calibrated_model()  # a failure is reported by each training variant
        probe = session.verification_inputs()
        in_worker = {label for label, _, _ in worker.jobs} if worker is not None else set()
        produced = {
            variant.label: _produce(session, variant, target, probe, name=name)
            for variant, target in zip(variants, targets, strict=False)
            if variant.label not in in_worker
        }
        if worker is not None:
            converted = worker.results()
            for variant, target in zip(variants, targets, strict=False):
                if variant.label in in_worker:
                    produced[variant.label] = _produce(
                        session, variant, target, probe, converted[variant.label], name=name
                    )
        artifacts = [produced[variant.label] for variant in variants]
        return ConvertResult(
            model=model_path,
            name=name,
            artifacts=tuple(artifacts),
            export_seconds=session.export_seconds,
            calibration_seconds=session.calibration_seconds,
            training_seconds=session.training_seconds,
        )


def _produce(
    session: ModelSession,
    variant: Variant,
    path: Path,
    probe: dict[str, np.ndarray],
    converted: tuple[str, Any, float] | None = None,
    name: str = "",
) -> Artifact:
    """Verify, inspect and write one variant: converted here, or by the worker (``converted``: its status, bytes
    or error, and seconds)."""
    start = time.perf_counter() - (converted[2] if converted is not None else 0.0)
    mode = MODES[variant.mode]
    training: Mapping[str, Any] | None = None
    try:
        with progress.phase("convert", model=name, variant=variant.label):
            if converted is None:
                content = session.convert_variant(variant)
            elif converted[0] == "ok":
                content = converted[1]
            else:
                raise converted[1]
        if mode.needs_training:
            training = session.trained().summary.to_dict()
            probe = session.verification_inputs(variant)
        with progress.phase("verify", model=name, variant=variant.label):
            verify_runs(content, probe)
        remaining_float: tuple[str, ...] = ()
        float_layers: tuple[str, ...] = ()
        if mode.integer:
            details = float_op_details(content)
            asked = set(session.float_nodes()) if mode.selective else set()
            unexpected = [(op_type, name) for op_type, name in details if not _same_tensor(name, asked)]
            # LiteRT Quantizer's own op policy decides which ops it leaves in float: they are listed, not refused
            strict = mode.engine == "converter"
            if unexpected and strict and not session.options.allow_float_fallback:
                raise ConversionError(
                    no_kernel_message(
                        variant.label,
                        mode.activations or "integer",
                        content,
                        session.exported,
                        unexpected,
                        besides_asked=bool(asked),
                        skip_layers_applies=mode.selective,
                        skipped_layers=session.options.skip_layers,
                        relabel=_naming(session, mode),
                    )
                )
            remaining_float = tuple(f"{op_type}({name})" for op_type, name in details)
            if details:
                float_layers = _float_layers(content, session, {name for _, name in details}, _naming(session, mode))
            _note_quantized_anyway(session, variant, asked, details)
        try:
            write_atomically(path, content)
        except OSError as error:  # disk full, folder gone read-only...: this variant fails, the next ones still try
            raise ConversionError(f"cannot write {path}: {os_error_text(error)}") from error
    except (ConversionError, QatTrainingError) as error:
        with contextlib.suppress(OSError):
            path.unlink()  # a stale file from an earlier run must not pass for this run's output
        log.debug("%s failed", variant.label, exc_info=error)
        return Artifact(
            variant.mode,
            variant.io_type,
            path,
            "error",
            seconds=time.perf_counter() - start,
            error=str(error),
            training=training,
        )
    return Artifact(
        mode=variant.mode,
        io_type=variant.io_type,
        path=path,
        status="ok",
        size_bytes=len(content),
        sha256=hashlib.sha256(content).hexdigest(),
        seconds=time.perf_counter() - start,
        float_ops=remaining_float,
        float_layers=float_layers,
        training=training,
    )


def _float_layers(
    content: bytes, session: ModelSession, names: set[str], relabel: Mapping[str, tuple[str, ...]] | None
) -> tuple[str, ...]:
    """The layer label of each float op of a converted model (its tensor name when no layer is known)."""
    return tuple(op.label for op in read_ops(content, session.exported, relabel) if op.tensor in names)


def _naming(session: ModelSession, mode: Any) -> Mapping[str, tuple[str, ...]] | None:
    """The session's layer names for reporting a variant's float ops (:meth:`ModelSession.relabel`); None for a
    trained variant (its own export names its ops). Reporting only: when the names cannot be told, a warning, and
    the ops are named as the variant's own tensor names say."""
    if mode.needs_training:
        return None
    try:
        return session.relabel()
    except ConversionError as error:
        log.warning("%s; the layers of ops left in float are named from the frozen export and may include "
                    "layers holding the same constants", error)
        return None


def _note_quantized_anyway(
    session: ModelSession, variant: Variant, asked: set[str], details: tuple[tuple[str, str], ...]
) -> None:
    """Say so when an op asked to stay in float was quantized all the same (MAX_POOL_2D follows its input's type)."""
    if not asked:
        return
    floated = {name for _, name in details}
    kept = [
        f"{op.op_type}({op.label})"
        for op in session.model_ops()
        if op.tensor in asked and not _same_tensor(op.tensor, floated)
    ]
    if kept:
        log.warning(
            "%s: %d op(s) asked to stay in float were quantized anyway (ops that only move or select values, "
            "such as MAX_POOL_2D or RESHAPE next to integer ops, take their input's type): %s",
            variant.label,
            len(kept),
            ", ".join(kept),
        )
