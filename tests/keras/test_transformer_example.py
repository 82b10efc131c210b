"""The transformer example end to end on tiny settings (in-process, through its main())."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import keras
import numpy as np
import pytest

pytest.importorskip("keras_hub")

from kerasprune.examples import transformer_mnist


def _fake_mnist(n_train: int = 640, n_eval: int = 256, seed: int = 0) -> Any:
    """MNIST-shaped data with a learnable signal: class c lights a band of rows of its own."""
    rng = np.random.default_rng(seed)

    def split(n: int) -> tuple[np.ndarray, np.ndarray]:
        y = rng.integers(0, 10, size=n).astype(np.int64)
        x = (rng.random((n, 28, 28)) * 0.3).astype(np.float32)
        for i, c in enumerate(y):
            x[i, 2 * c:2 * c + 3, 4:24] += 0.6
        return x, y

    return split(n_train), split(n_eval), split(n_eval)


def test_quick_run_prunes_the_blocks_and_reloads(tmp_path: Path) -> None:
    path = tmp_path / "pruned.keras"
    out = transformer_mnist.main(["--quick", "--limit", "256", "--eval-limit", "128",
                                  "--width", "32", "--intermediate", "64", "--repeats", "2",
                                  "--save", str(path)], data=_fake_mnist(256, 128))
    before, after = out["flops"]
    assert after <= 0.5 * before
    assert out["params"][1] < out["params"][0]
    assert len(out["intermediate"]) == len(out["heads"]) == 2
    assert min(out["intermediate"]) < 64 or min(out["heads"]) < 4
    assert 0.0 <= out["test_after"] <= 1.0 and 0.0 <= out["test_before"] <= 1.0
    assert out["reload_max_abs_diff"] <= 1e-6 and path.is_file()
    loaded = keras.saving.load_model(path)
    assert loaded.get_layer("encoder0").intermediate_dim == out["intermediate"][0]
    assert loaded.get_layer("encoder0").num_heads == out["heads"][0]
    assert out["speedup"] is not None and out["speedup"].rows
