# mydata.py
import numpy as np


def calib():
    """100 calibration samples, one at a time."""
    x = np.load("sample_models/digits_train.npz")["x"]
    for i in range(100):
        yield x[i]


def test():
    """Labelled samples: dicts keyed by input name, plus y."""
    data = np.load("sample_models/digits_test.npz")
    for x, y in zip(data["x"], data["y"]):
        yield {"image": x, "y": y}
