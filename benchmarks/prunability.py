"""The prunability matrix: what kerasprune can prune in every ``keras.applications`` model.

Run ``python benchmarks/prunability.py [--models NAME ...] [--no-apoz]`` (the backend comes
from ``KERAS_BACKEND``; the models are built offline, with random weights, at a small input
size, with 10 classes and logits out: ``classifier_activation=None``). For each model it
prints one row:

- **layers with neurons**: Dense, convolutions... (``kerasprune.prunable_layers``);
- **prunable**: how many of them can lose neurons (a ``dependency_group`` of each one's first
  neuron goes through), and how many of those are **coupled** to other layers (their group
  deletes neurons of other layers too: residual ``Add`` groups, squeeze-and-excite);
- **not prunable, why**: the kinds of layer that block the others, with counts (``output``:
  the classifier, which needs ``allow_output_change=True``);
- **get_apoz**: how many layers ``kerasprune.get_apoz`` measures on two random images (0 when
  the model has no ReLU-like non-linearity: then get_apoz explains why, in a few lines).

``tests/keras/test_prunability_matrix.py`` checks that the README's matrix is what this
prints, and checks deletions in every model against the zeroing oracle.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import re
import sys
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import keras
import numpy as np

import kerasprune

A = keras.applications


@dataclass(frozen=True)
class App:
    """A ``keras.applications`` model at a small input size."""

    name: str
    build: Callable[[], keras.Model]
    size: int
    slow: bool = False  # tested on one backend only (CI time)


def _app(name: str, size: int, slow: bool = False, **kwargs: Any) -> App:
    def build() -> keras.Model:
        return getattr(A, name)(weights=None, input_shape=(size, size, 3), classes=10,
                                classifier_activation=None, **kwargs)

    return App(name, build, size, slow)


APPS: dict[str, App] = {app.name: app for app in (
    _app("VGG16", 32),
    _app("VGG19", 32),
    _app("ResNet50", 32),
    _app("ResNet50V2", 32),
    _app("ResNet101", 32, slow=True),
    _app("MobileNet", 32),
    _app("MobileNetV2", 32),
    _app("MobileNetV3Small", 32),
    _app("MobileNetV3Large", 32, slow=True),
    _app("EfficientNetB0", 32),
    _app("EfficientNetV2B0", 32, slow=True),
    _app("DenseNet121", 32, slow=True),
    _app("Xception", 71, slow=True),
    _app("InceptionV3", 75, slow=True),
    _app("InceptionResNetV2", 75, slow=True),
    _app("NASNetMobile", 32, slow=True),
    _app("ConvNeXtTiny", 32),
)}
"""Every ``keras.applications`` family that builds offline (one model of the bigger
families: their members differ in depth and width only)."""


@dataclass(frozen=True)
class Row:
    """One model's line of the matrix."""

    model: str
    neurons: int
    prunable: int
    coupled: int
    blockers: dict[str, int]
    apoz: int | None

    def cells(self) -> list[str]:
        blocked = ", ".join(f"{kind} {n}" for kind, n in sorted(
            self.blockers.items(), key=lambda kv: (-kv[1], kv[0])))
        apoz = "-" if self.apoz is None else str(self.apoz)
        return [self.model, str(self.neurons), str(self.prunable), str(self.coupled),
                blocked or "-", apoz]


HEADER = ["model", "layers with neurons", "prunable", "of which coupled",
          "not prunable: blocked by", "get_apoz measures"]

_BLOCKER = re.compile(r"layer '[^']*' \(([^)]+)\)")


def blocker(reason: str, output: bool) -> str:
    """The kind of layer that blocks a deletion, from the error's message."""
    if output:
        return "output"
    if "single neuron" in reason:
        return "one neuron"
    if "model input" in reason:
        return "model input"
    if "would delete all" in reason:
        return "empties a layer"
    if "unbalance its groups" in reason:
        return "grouped convolution"
    found = _BLOCKER.findall(reason)  # the last layer named is the one that refuses
    return found[-1] if found else "other"


@contextlib.contextmanager
def cheap_initializers() -> Iterator[None]:
    """Keras' random initializers give NumPy zeros/ones while models are built: every weight
    is overwritten anyway, and on JAX the real ones compile a program per weight shape."""
    init = keras.initializers
    saved = {cls: cls.__call__ for cls in (init.VarianceScaling, init.RandomNormal,
                                           init.RandomUniform, init.TruncatedNormal,
                                           init.Zeros, init.Ones, init.Constant)}

    def zeros(self: Any, shape: Any, dtype: Any = None) -> np.ndarray:
        return np.zeros(shape, dtype=keras.backend.standardize_dtype(dtype or "float32"))

    for cls in saved:
        cls.__call__ = zeros  # type: ignore[method-assign]
    try:
        yield
    finally:
        for cls, call in saved.items():
            cls.__call__ = call  # type: ignore[method-assign]


def _layers(model: keras.Model) -> Iterator[keras.layers.Layer]:
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            yield from _layers(layer)
        else:
            yield layer


def randomize(model: keras.Model, seed: int = 0) -> keras.Model:
    """He-scaled random weights (a depthwise kernel by its own fan-in) and batch-norm
    statistics near the identity, in place: activations keep their scale through the model."""
    rng = np.random.default_rng(seed)
    depthwise = (keras.layers.DepthwiseConv1D, keras.layers.DepthwiseConv2D)
    for layer in _layers(model):
        for var in layer.weights:
            shape = tuple(var.shape)
            if var.name in ("kernel", "depthwise_kernel", "pointwise_kernel") and len(shape) > 1:
                own = var.name == "depthwise_kernel" or isinstance(layer, depthwise)
                fan_in = int(np.prod(shape[:-2] if own else shape[:-1])) or 1
                value = rng.standard_normal(shape) * np.sqrt(2.0 / fan_in)
            elif "variance" in var.name or var.name == "gamma":
                value = rng.uniform(0.5, 1.5, shape)
            else:
                value = rng.standard_normal(shape) * 0.1
            var.assign(value.astype(keras.backend.standardize_dtype(var.dtype)))
        if callable(getattr(layer, "finalize_state", None)):
            layer.finalize_state()  # Normalization derives its statistics from its variables
    return model


def build(app: App, seed: int = 0) -> keras.Model:
    with cheap_initializers():
        model = app.build()
    return randomize(model, seed)


def images(model: keras.Model, n: int = 2, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.uniform(-1.0, 1.0, (n, *model.inputs[0].shape[1:])).astype("float32")


def apoz_count(model: keras.Model) -> int:
    """How many layers ``get_apoz`` measures (0 if none can be)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", kerasprune.core.apoz.ApozWarning)
        try:
            return len(kerasprune.get_apoz(model, images(model), verbose=0))
        except kerasprune.PruneError:
            return 0


def row(name: str, model: keras.Model, apoz: bool = True) -> Row:
    found = kerasprune.prunable_layers(model)
    prunable = [p for p in found if p.prunable]
    blockers = collections.Counter(blocker(p.reason, p.output) for p in found
                                   if p.reason is not None)
    return Row(name, len(found), len(prunable), sum(len(p.group) > 1 for p in prunable),
               dict(blockers), apoz_count(model) if apoz else None)


def markdown(rows: list[Row]) -> str:
    lines = ["| " + " | ".join(HEADER) + " |",
             "| " + " | ".join(["---"] + ["---:"] * 3 + ["---", "---:"]) + " |"]
    lines += ["| " + " | ".join(r.cells()) + " |" for r in rows]
    return "\n".join(lines)


def parse_markdown(text: str) -> dict[str, list[str]]:
    """The rows of a matrix printed by :func:`markdown` (from the README), by model."""
    out = {}
    for line in text.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == len(HEADER) and cells[0] in APPS:
            out[cells[0]] = cells
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="*", choices=list(APPS), default=list(APPS))
    parser.add_argument("--no-apoz", action="store_true", help="skip the get_apoz column")
    args = parser.parse_args(argv)
    rows = []
    for name in args.models:
        start = time.monotonic()
        model = build(APPS[name])
        rows.append(row(name, model, apoz=not args.no_apoz))
        print(f"{name}: {time.monotonic() - start:.1f} s", file=sys.stderr, flush=True)
        keras.backend.clear_session()
    print(markdown(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
