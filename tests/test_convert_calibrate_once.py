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
