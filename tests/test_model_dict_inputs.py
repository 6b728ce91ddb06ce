"""Functional models built with a dict of inputs (every keras_hub model) export, convert and match Keras;
int64 token ids are cast to int32 when they fit."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tests.cli_helpers import assert_usage_error, convert
from tests.tflite_helpers import run_tflite

SAMPLES = 64


@pytest.fixture(scope="module", params=["flat", "nested"])
def dict_model(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> tuple[Path, Path, dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Inputs given as a dict whose keys are not in sorted order ('zeta' then 'alpha'), two outputs; "nested" puts
    them inside {"outer": {...}, "mid": ...} with a third input."""
    import keras

    keras.utils.set_random_seed(0)
    zeta = keras.Input((6,), name="zeta")
    alpha = keras.Input((3,), name="alpha")
    hidden = keras.layers.Dense(8, activation="relu", name="hidden")(
        keras.layers.Concatenate(name="join")([keras.layers.Dense(4, name="z_proj")(zeta), alpha])
    )
    structure: dict = {"zeta": zeta, "alpha": alpha}
    rng = np.random.default_rng(0)
    data = {"zeta": rng.normal(size=(SAMPLES, 6)).astype(np.float32), "alpha": rng.normal(size=(SAMPLES, 3)).astype(np.float32)}
    if request.param == "nested":
        mid = keras.Input((2,), name="mid")
        hidden = keras.layers.Concatenate(name="join_mid")([hidden, mid])
        structure = {"outer": structure, "mid": mid}
        data["mid"] = rng.normal(size=(SAMPLES, 2)).astype(np.float32)
    model = keras.Model(
        structure,
        {"score": keras.layers.Dense(2, name="score")(hidden), "value": keras.layers.Dense(1, name="value")(hidden)},
    )
    folder = tmp_path_factory.mktemp("dict_inputs")
    model.save(folder / "dict_in.keras")
    np.savez(folder / "calib.npz", **data)
    feed = {"outer": {"zeta": data["zeta"], "alpha": data["alpha"]}, "mid": data["mid"]} if request.param == "nested" else data
    expected = {name: np.asarray(value) for name, value in model(feed).items()}
    return folder / "dict_in.keras", folder / "calib.npz", data, expected


@pytest.mark.slow
def test_dict_input_model_converts_and_matches_keras(dict_model, tmp_path: Path) -> None:
    model_path, calib, data, expected = dict_model
    result = convert(str(model_path), "--mode", "float32", "--mode", "int8", "--calib", str(calib), out=tmp_path)
    assert result.exit_code == 0, result.output
    float_out = run_tflite(tmp_path / "dict_in.float32.tflite", data)
    int8_out = run_tflite(tmp_path / "dict_in.int8.tflite", data)
    assert set(float_out) == set(int8_out) == {"score", "value"}
    for name in ("score", "value"):
        np.testing.assert_allclose(float_out[name], expected[name], atol=1e-4)
        spread = float(np.ptp(expected[name]))
        # int8 error: a few quantization steps of the output range; 10% of the range holds on any CPU
        assert float(np.max(np.abs(int8_out[name] - expected[name]))) < 0.1 * spread, name


@pytest.fixture(scope="module")
def token_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    import keras

    ids = keras.Input((5,), dtype="int32", name="token_ids")
    pooled = keras.layers.GlobalAveragePooling1D(name="pool")(keras.layers.Embedding(50, 4, name="embed")(ids))
    path = tmp_path_factory.mktemp("tokens") / "tokens.keras"
    keras.Model(ids, keras.layers.Dense(2, name="out")(pooled)).save(path)
    return path


@pytest.mark.slow
def test_int64_token_ids_are_cast_to_int32_with_a_notice(token_model: Path, tmp_path: Path) -> None:
    data = tmp_path / "ids.npz"
    np.savez(data, x=np.random.default_rng(0).integers(0, 50, size=(20, 5), dtype=np.int64))
    result = convert(str(token_model), "--mode", "int8", "--calib", str(data), out=tmp_path / "out")
    assert result.exit_code == 0, result.output
    assert "input 'token_ids' is int64; cast to int32" in result.output
    assert (tmp_path / "out" / "tokens.int8.tflite").is_file()


@pytest.mark.slow
def test_int64_ids_outside_int32_name_the_input_and_range(token_model: Path, tmp_path: Path) -> None:
    data = tmp_path / "ids.npz"
    ids = np.zeros((20, 5), dtype=np.int64)
    ids[7, 2] = 2**40
    np.savez(data, x=ids)
    result = convert(str(token_model), "--mode", "int8", "--calib", str(data), out=tmp_path / "out")
    assert_usage_error(result, "input 'token_ids', sample 7", "int64", "outside the int32 range -2147483648..2147483647")


def test_a_keras_call_error_keeps_its_reason() -> None:
    """Keras puts the reason below "Exception encountered when calling ..."; the one line keeps it."""
    import keras

    from tflq.model.load import keras_reason

    class Refuses(keras.layers.Layer):
        def call(self, x):
            raise ValueError("inputs must be a dict keyed by 'zeta' and 'alpha'")

    with pytest.raises(Exception) as caught:  # the real error Keras raises, whatever its type
        Refuses(name="refuses")(np.zeros((1, 3), np.float32))
    text = str(caught.value)
    assert "Exception encountered when calling" in text.splitlines()[0]
    line = keras_reason(text)
    assert "\n" not in line and "Arguments received" not in line and "\x1b" not in line
    assert "Exception encountered when calling" in line and "inputs must be a dict keyed by 'zeta' and 'alpha'" in line
