"""The calibrate-once path (private TF API) gives the same models as the public converter."""
from __future__ import annotations

import numpy as np
import pytest

from tests.sample_paths import SAMPLES
from tests.tflite_helpers import run_tflite
from tflq.convert.session import ConvertOptions, ModelSession
from tflq.modes import MODES, Variant


@pytest.fixture(scope="module")
def session(tmp_path_factory):
    options = ConvertOptions(modes=("int8",), calibration=str(SAMPLES / "digits_multi_io_train.npz"), calibration_samples=100)
    return ModelSession(SAMPLES / "digits_multi_io.keras", options, tmp_path_factory.mktemp("session"))


@pytest.fixture(scope="module")
def gru_session(tmp_path_factory):
    """The unrolled GRU (LSTM/GRU-style ops get intermediate tensors for calibration: the case that once broke)."""
    options = ConvertOptions(modes=("16x8",), calibration=str(SAMPLES / "digits_train.npz"), calibration_samples=100)
    return ModelSession(SAMPLES / "digits_gru.keras", options, tmp_path_factory.mktemp("gru"))


def _public(session, mode: str, settings) -> bytes:
    """The public converter on the session's export, configured by ``mode``, calibrating on the session's samples."""
    import tensorflow as tf

    samples = session.calibration_samples()
    public = session.new_converter()
    MODES[mode].configure(public, tf, settings)
    public.representative_dataset = lambda: iter(samples)
    return bytes(public.convert())


@pytest.mark.parametrize("io_type", MODES["int8"].io_types)
@pytest.mark.parametrize("per_tensor", [False, True], ids=["per_channel", "per_tensor"])
def test_requantized_int8_matches_public_converter(session, io_type: str, per_tensor: bool):
    import tensorflow as tf

    from tflq.modes import ModeSettings

    samples = session.calibration_samples()
    public = session.new_converter()
    MODES["int8"].configure(public, tf, ModeSettings(io_type=io_type, per_tensor=per_tensor))
    public.representative_dataset = lambda: iter(samples)
    public_model = public.convert()

    from tflq._tf import calibrated as _calibrated

    ours = _calibrated.quantize(session.calibrated_model(), io_type=io_type, per_tensor=per_tensor)
    with np.load(SAMPLES / "digits_multi_io_test.npz") as archive:
        data = {"image": archive["image"][:64], "row_sums": archive["row_sums"][:64]}
    expected = run_tflite(bytes(public_model), data)
    found = run_tflite(ours, data)
    for name in expected:
        np.testing.assert_array_equal(found[name], expected[name])
    # calibrated from the float32 conversion, with the converter's metadata: the very file the converter writes
    assert ours == bytes(public_model)


@pytest.mark.parametrize("which", ["multi_io", "gru"])
@pytest.mark.parametrize("io_type", MODES["16x8"].io_types)
@pytest.mark.parametrize("per_tensor", [False, True], ids=["per_channel", "per_tensor"])
def test_requantized_16x8_matches_public_converter(session, gru_session, which: str, io_type: str, per_tensor: bool):
    """16x8 from the one calibration (the wrapper that calibrated it quantizes to int16) is byte for byte the public
    converter's 16x8 model, which calibrates on its own."""
    from tflq.modes import ModeSettings

    chosen = session if which == "multi_io" else gru_session
    settings = ModeSettings(io_type=io_type, per_tensor=per_tensor)
    public_model = _public(chosen, "16x8", settings)
    ours = chosen.convert_variant(Variant("16x8", io_type)) if not per_tensor else MODES["16x8"].build.build(chosen, settings)
    assert ours == public_model


def test_float_tflite_bytes_calibrate_like_the_converter(gru_session):
    """Plain float bytes (a float .tflite: deduplicated constants, no undeduplicated copy) calibrate to a valid 16x8
    model with the public converter's outputs (the GRU shares constant buffers between tensors)."""
    from tflq._tf import calibrated as _calibrated
    from tflq.modes import ModeSettings

    float_bytes = bytes(gru_session.float_model())
    calibrated = _calibrated.calibrate_float(float_bytes, gru_session.calibration_samples())
    ours = _calibrated.quantize_int16(calibrated, io_type="float32", per_tensor=False, allow_float=False)
    public_model = _public(gru_session, "16x8", ModeSettings())
    with np.load(SAMPLES / "digits_test.npz") as archive:
        data = {"image": archive["x"][:64]}
    expected, found = run_tflite(public_model, data), run_tflite(ours, data)
    for name in expected:
        np.testing.assert_array_equal(found[name], expected[name])


def test_16x8_and_int8_share_the_one_calibration(session):
    first = session.calibrated_model()
    session.convert_variant(Variant("16x8", "float32"))
    session.convert_variant(Variant("int8", "float32"))
    assert session.calibrated_model() is first


def test_16x8_needs_the_calibration_that_measured_the_model(session):
    """Plain calibrated bytes (no calibration wrapper) are refused, never re-calibrated silently."""
    from tflq._tf import calibrated as _calibrated

    with pytest.raises(ValueError, match="needs the calibration that measured the model"):
        _calibrated.quantize_int16(bytes(session.calibrated_model()), io_type="float32", per_tensor=False, allow_float=False)


def test_calibration_happens_once_for_all_int8_variants(session):
    first = session.calibrated_model()
    for io_type in MODES["int8"].io_types:
        session.convert_variant(Variant("int8", io_type))
    assert session.calibrated_model() is first


@pytest.mark.parametrize("mode", ["float32", "float16", "dynamic"])
def test_direct_saved_model_converter_matches_public_constructor(session, mode: str):
    import tensorflow as tf

    from tflq.modes import ModeSettings

    exported = session.exported
    public = tf.lite.TFLiteConverter.from_saved_model(str(exported.saved_model_dir), signature_keys=[exported.signature_key])
    ours = session.new_converter()
    for converter in (public, ours):
        MODES[mode].configure(converter, tf, ModeSettings())
    public_model, our_model = bytes(public.convert()), bytes(ours.convert())
    with np.load(SAMPLES / "digits_multi_io_test.npz") as archive:
        data = {"image": archive["image"][:32], "row_sums": archive["row_sums"][:32]}
    expected, found = run_tflite(public_model, data), run_tflite(our_model, data)
    for name in expected:
        np.testing.assert_array_equal(found[name], expected[name])
    assert len(our_model) == len(public_model)
