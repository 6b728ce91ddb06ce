"""Test configuration: quiet TensorFlow, and the shared fixtures, loaded as plugins from tests/fixtures/.

Fixtures are shared through ``pytest_plugins`` (never imported by a test module); plain helpers are imported from the
module named for what it holds: tests/sample_paths.py, tests/tflite_helpers.py, tests/cli_helpers.py,
tests/fragile_models.py.
"""
from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

pytest_plugins = [
    "tests.fixtures.data",
    "tests.fixtures.models",
    "tests.fixtures.tflite",
]
