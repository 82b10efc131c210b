"""Command-line tests: they need Keras 3 (the backend comes from KERAS_BACKEND)."""

from __future__ import annotations

import os

import pytest

pytest.importorskip("keras")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/cli" in str(item.fspath).replace(os.sep, "/"):
            item.add_marker(pytest.mark.keras)
