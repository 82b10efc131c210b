"""The backend the Keras tests run on, and the data formats it can run.

A module of its own (not ``conftest``): ``tests/cli`` has a ``conftest`` too, and a test that
imported ``from conftest import ...`` would get whichever of the two pytest loaded first.
"""

from __future__ import annotations

import numpy as np
import pytest

keras = pytest.importorskip("keras")

BACKEND = keras.backend.backend()

DATA_FORMATS = [
    "channels_last",
    pytest.param("channels_first", marks=pytest.mark.skipif(
        BACKEND == "tensorflow", reason="TensorFlow on the CPU cannot run channels_first; "
        "tested on the JAX backend")),
]


def as_numpy(x: object, dtype: str | None = None) -> np.ndarray:
    """``x`` (a tensor, a variable or an array) as a NumPy array on every backend.

    ``np.asarray`` fails on torch on an output that requires grad; Keras' own conversion
    detaches it first.
    """
    return np.asarray(keras.ops.convert_to_numpy(x), dtype=dtype)
