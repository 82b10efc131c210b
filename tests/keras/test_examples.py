"""The MNIST examples, end to end on tiny settings (in-process, through their main())."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import keras
import numpy as np
import pytest

from kerasprune.examples import lenet_mnist, vgg_mnist

pytestmark = pytest.mark.heavy  # long runs: TensorFlow and JAX in CI, not again on torch


def _fake_mnist(n_train: int = 640, n_eval: int = 256, seed: int = 0) -> Any:
    """MNIST-shaped data with a learnable signal: class c lights a 6x6 patch of its own.

    Sizes are multiples of the batch sizes, so JAX compiles no extra step for a last batch.
    """
    rng = np.random.default_rng(seed)

    def split(n: int) -> tuple[np.ndarray, np.ndarray]:
        y = rng.integers(0, 10, size=n).astype(np.int64)
        x = (rng.random((n, 28, 28)) * 0.3).astype(np.float32)
        for i, c in enumerate(y):
            r, col = 3 + 13 * (c // 5), 1 + 5 * (c % 5)
            x[i, r:r + 6, col:col + 6] += 0.6
        return x, y

    return split(n_train), split(n_eval), split(n_eval)


def _check(out: dict[str, Any], path: Path, trimmed: tuple[str, ...]) -> None:
    result = out["result"]
    assert path.is_file() and out["path"] == str(path)
    assert out["reload_max_abs_diff"] <= 1e-6
    assert result.layers == trimmed
    assert [r.round for r in result.history][:1] == [0] and len(result.history) <= 2
    assert 0.0 <= out["test_before"] <= 1.0 and 0.0 <= out["test_after"] <= 1.0
    loaded = keras.saving.load_model(path)
    assert loaded.count_params() == result.model.count_params()


@pytest.mark.parametrize("example, options, trimmed", [
    (lenet_mnist, [], ("conv2", "ip1")),
    (vgg_mnist, ["--widths", "4", "8", "--dense", "16"],
     ("block1_conv1", "block1_conv2", "block2_conv1", "block2_conv2", "fc")),
])
def test_example_runs_end_to_end(example: Any, options: list[str], trimmed: tuple[str, ...],
                                 tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "trimmed.keras"
    out = example.main(["--tiny", "--save", str(path), "--verbose", "0", *options],
                       data=_fake_mnist())
    _check(out, path, trimmed)
    printed = capsys.readouterr().out
    for needle in ("test accuracy", "val accuracy", "total", "smaller", "reloaded"):
        assert needle in printed


def test_lenet_as_caffe_trims_only_ip1(tmp_path: Path) -> None:
    path = tmp_path / "caffe.keras"
    out = lenet_mnist.main(["--tiny", "--no-conv-relu", "--save", str(path), "--verbose", "0",
                            "--control"], data=_fake_mnist(seed=1))
    _check(out, path, ("ip1",))
    assert out["result"].model.get_layer("conv2").activation.__name__ == "linear"
    assert 0.0 <= out["test_control"] <= 1.0


def test_a_checkpointed_run_resumes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """With --checkpoint-dir, running the same command again loads the trained model and
    resumes trimming after its last finished round (here: the run had finished)."""
    options = ["--tiny", "--save", "", "--verbose", "0", "--checkpoint-dir", str(tmp_path)]
    first = lenet_mnist.main(options, data=_fake_mnist())
    assert (tmp_path / "base.keras").is_file() and (tmp_path / "trim" / "round_001.keras")
    assert first["result"].resumed_from is None and first["train_seconds"] > 0
    capsys.readouterr()
    again = lenet_mnist.main(options, data=_fake_mnist())
    assert "loaded the trained model from" in capsys.readouterr().out
    assert again["train_seconds"] == 0.0 and again["result"].resumed_from == 1
    assert again["test_before"] == first["test_before"]
    assert [r.to_json() for r in again["result"].history] == [
        r.to_json() for r in first["result"].history]
    assert again["test_after"] == first["test_after"]


def test_options_and_presets() -> None:
    assert lenet_mnist.DEFAULTS.layers == ("conv2", "ip1")
    model = lenet_mnist.build_lenet()
    assert model.count_params() == 431_080  # Caffe's LeNet: 520 + 25 050 + 400 500 + 5 010
    assert tuple(vgg_mnist.build_vgg()(np.zeros((2, 28, 28, 1), "float32")).shape) == (2, 10)
    with pytest.raises(SystemExit):
        lenet_mnist.main(["--help"])


@pytest.mark.network
@pytest.mark.slow
def test_lenet_on_real_mnist_tiny(tmp_path: Path) -> None:
    path = tmp_path / "lenet.keras"
    out = lenet_mnist.main(["--tiny", "--save", str(path), "--verbose", "0"])
    _check(out, path, ("conv2", "ip1"))
    assert out["test_before"] > 0.2  # 16 SGD steps on real images: above chance (0.1)
