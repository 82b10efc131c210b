"""Keras tests: every test here needs Keras 3; the backend comes from KERAS_BACKEND."""

from __future__ import annotations

import os

import pytest
from backends import BACKEND


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/keras" in str(item.fspath).replace(os.sep, "/"):
            item.add_marker(pytest.mark.keras)


@pytest.fixture
def channels_first_ok() -> None:
    """Skip on TensorFlow's CPU backend, which cannot run channels_first convolutions."""
    if BACKEND == "tensorflow":
        pytest.skip("TensorFlow on the CPU cannot run channels_first convolutions; run on JAX")

