"""The backend the Keras tests run on, and the data formats it can run.

A module of its own (not ``conftest``): ``tests/cli`` has a ``conftest`` too, and a test that
imported ``from conftest import ...`` would get whichever of the two pytest loaded first.
"""

from __future__ import annotations

import pytest

keras = pytest.importorskip("keras")

BACKEND = keras.backend.backend()

DATA_FORMATS = [
    "channels_last",
    pytest.param("channels_first", marks=pytest.mark.skipif(
        BACKEND == "tensorflow", reason="TensorFlow on the CPU cannot run channels_first; "
        "tested on the JAX backend")),
]
