"""Tiny models, data files, and ways to run the command line, for the command-line tests."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import keras
import numpy as np
import pytest

import kerasprune
from kerasprune.cli.main import main

ROOT = Path(__file__).resolve().parents[2]
BACKEND = keras.backend.backend()

process_test = pytest.mark.skipif(
    BACKEND != "tensorflow",
    reason="the command run as a process (each start imports TensorFlow: seconds) is tested "
           "once, on the TensorFlow backend; the in-process tests run on every backend")


def residual_model(compiled: bool = True) -> keras.Model:
    """8x8x1 images -> conv1 (ReLU) -> conv2a + conv2b (an Add group) -> ReLU -> fc -> out."""
    # Zeros, then seeded NumPy weights: random initializers compile one JAX program per shape
    # (seconds), and keras.utils.set_random_seed imports TensorFlow to seed it too.
    zeros = {"kernel_initializer": "zeros", "bias_initializer": "zeros"}
    inp = keras.Input((8, 8, 1))
    x = keras.layers.Conv2D(6, 3, activation="relu", name="conv1", **zeros)(inp)
    x = keras.layers.Conv2D(8, 3, name="conv2a", **zeros)(x)
    y = keras.layers.Conv2D(8, 1, name="conv2b", **zeros)(inp)
    y = keras.layers.Cropping2D(2, name="crop")(y)
    x = keras.layers.Add(name="add")([x, y])
    x = keras.layers.ReLU(name="relu")(x)
    x = keras.layers.Flatten(name="flatten")(x)
    x = keras.layers.Dense(12, activation="relu", name="fc", **zeros)(x)
    out = keras.layers.Dense(3, name="out", **zeros)(x)
    model = keras.Model(inp, out, name="tiny")
    rng = np.random.default_rng(0)
    model.set_weights([rng.normal(0.0, 1.0 / np.sqrt(np.prod(w.shape[:-1])) if w.ndim > 1
                                  else 0.1, w.shape).astype("float32")
                       for w in model.get_weights()])
    if compiled:
        model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                      metrics=["accuracy"])
    return model


def arrays(n: int = 64, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Inputs for :func:`residual_model` and labels that depend on them."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 8, 8, 1)).astype("float32")
    y = (x[:, :4].mean(axis=(1, 2, 3)) > 0).astype("int64") + (
        x[:, 4:].mean(axis=(1, 2, 3)) > 0.1)
    return x, y


@dataclass(frozen=True)
class Files:
    """A saved tiny model and data for it, in one directory."""

    dir: Path
    model: Path
    data: Path


def make_files(directory: Path) -> Files:
    model = residual_model()
    x, y = arrays()
    model.save(directory / "tiny.keras")
    np.savez(directory / "data.npz", x=x, y=y)
    return Files(directory, directory / "tiny.keras", directory / "data.npz")


@dataclass(frozen=True)
class Run:
    """The outcome of one command."""

    code: int
    out: str
    err: str

    def json(self) -> Any:
        return json.loads(self.out)

    @property
    def error_line(self) -> str:
        """The one line of an error on stderr (asserting that there is exactly one)."""
        lines = self.err.splitlines()
        errors = [line for line in lines if line.startswith("kerasprune: error: ")]
        assert len(errors) == 1, self.err
        assert "Traceback" not in self.err, self.err
        return errors[0].removeprefix("kerasprune: error: ")


def run_in_process(capsys: pytest.CaptureFixture[str], *args: Any) -> Run:
    """``kerasprune ARGS`` through :func:`main`, in this process."""
    capsys.readouterr()
    code = main([str(a) for a in args])
    captured = capsys.readouterr()
    return Run(code, captured.out, captured.err)


def env() -> dict[str, str]:
    """The environment of a command run as a process: this checkout's kerasprune."""
    out = dict(os.environ)
    out["PYTHONPATH"] = os.pathsep.join([str(ROOT), *filter(None, [out.get("PYTHONPATH")])])
    return out


def run_process(*args: Any, cwd: Path, timeout: float = 300) -> Run:
    """``python -m kerasprune ARGS`` as a process."""
    proc = subprocess.run([sys.executable, "-m", "kerasprune", *(str(a) for a in args)],
                          cwd=cwd, env=env(), capture_output=True, text=True, timeout=timeout)
    return Run(proc.returncode, proc.stdout, proc.stderr)


def image(path: Path) -> np.ndarray:
    """A PNG as an (H, W, 3) float array in [0, 1]."""
    import matplotlib.image

    return np.asarray(matplotlib.image.imread(path))[..., :3]


def colour_share(picture: np.ndarray, box: list[int], colour: str, tol: float = 0.06) -> float:
    """The share of the pixels in ``box`` (left, top, right, bottom) that are ``colour``."""
    import matplotlib.colors

    left, top, right, bottom = box
    region = picture[top:bottom, left:right]
    target = np.asarray(matplotlib.colors.to_rgb(colour))
    close = np.all(np.abs(region - target) <= tol, axis=-1)
    return float(close.mean()) if close.size else 0.0


def assert_picture(doc: dict[str, Any], panels: int, colours: list[str],
                   least: float = 0.002) -> None:
    """The picture ``doc`` (a Picture's JSON) exists, has ``panels`` panels, matches the PNG's
    size, and each panel shows each of ``colours`` (it is not blank)."""
    path = Path(doc["path"])
    assert path.is_file()
    assert doc["panels"] == panels == len(doc["boxes"])
    picture = image(path)
    assert list(picture.shape[1::-1]) == doc["size"]
    assert picture.std() > 0.05  # not a flat image
    for box in doc["boxes"]:
        for colour in colours:
            assert colour_share(picture, box, colour) >= least, (path, box, colour)


def assert_oracle(original: Path, saved: Path, deleted: dict[str, list[int]],
                  atol: float = 1e-5) -> None:
    """The saved model computes what the original does with the weights that read the
    deleted neurons set to zero (tests/keras/oracle.py, built without kerasprune's rebuild)."""
    oracle_dir = str(ROOT / "tests" / "keras")
    if oracle_dir not in sys.path:
        sys.path.append(oracle_dir)
    import oracle

    model = keras.saving.load_model(original)
    pruned = keras.saving.load_model(saved)
    reference = oracle.zeroed_reference(model, deleted)
    x, _ = arrays(16, seed=7)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(pruned(x)),
                               keras.ops.convert_to_numpy(reference(x)), atol=atol, rtol=1e-4)
    widths = {c.name: c.width for c in kerasprune.costs(model) if c.width is not None}
    after = {c.name: c.width for c in kerasprune.costs(pruned) if c.width is not None}
    assert after == {n: w - len(deleted.get(n, ())) for n, w in widths.items()}
