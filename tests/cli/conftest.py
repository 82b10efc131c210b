"""Command-line tests: they need Keras 3 (the backend comes from KERAS_BACKEND)."""

from __future__ import annotations

import os

import pytest

pytest.importorskip("keras")

from cli_helpers import Files, make_files


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/cli" in str(item.fspath).replace(os.sep, "/"):
            item.add_marker(pytest.mark.keras)


@pytest.fixture(scope="session")
def files(tmp_path_factory: pytest.TempPathFactory) -> Files:
    """A saved tiny model and data for it, shared by the tests (which only read them)."""
    return make_files(tmp_path_factory.mktemp("cli"))
