"""Data sources of the command line: ``.npz`` files, image directories and MNIST.

One argument (``--data``, ``--train``, ``--val``...) names one source:

- ``FILE.npz``: arrays ``x`` (inputs) and ``y`` (labels, needed to train or evaluate); a
  model with several inputs takes one array per input, named after the model's inputs.
- ``DIRECTORY``: images in one subdirectory per class, read by
  ``keras.utils.image_dataset_from_directory`` at the model's input size and channels.
- ``mnist`` or ``mnist:train|val|test``: the built-in MNIST (:func:`kerasprune.load_mnist`;
  50k/10k/10k images), shaped as the model's input. Plain ``mnist`` is the split of the
  argument's role: ``train`` for ``--train``, ``val`` elsewhere.

Every source is checked against the model's inputs before any work: a sample shape that
does not fit is one error naming the source, the input and both shapes.
"""

from __future__ import annotations

import math
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np

from kerasprune.cli.errors import CliError, one_line

__all__ = ["MNIST_SPLITS", "Data", "load_data", "parse_rescale"]

MNIST_SPLITS = ("train", "val", "test")
_COLOR_MODES = {1: "grayscale", 3: "rgb", 4: "rgba"}


@dataclass(frozen=True)
class Data:
    """Data for a model, read from one command-line argument.

    Attributes
    ----------
    spec : str
        The argument as given.
    option : str
        The option it was given to (``--data``, ``--train``...), for messages.
    x : Any
        In-memory inputs (an array, or a dict of arrays for several inputs), or ``None``.
    y : numpy.ndarray or None
        In-memory labels, if any.
    dataset : Any
        A batched ``tf.data.Dataset`` of ``(x, y)`` or ``x`` (image directories), or ``None``.
    samples : int or None
        How many samples (``None`` if unknown).
    description : str
        A short description for notes and reports.
    labeled : bool
        Whether it has labels.
    """

    spec: str
    option: str
    x: Any
    y: np.ndarray | None
    dataset: Any
    samples: int | None
    description: str
    labeled: bool

    def inputs(self) -> Any:
        """The data as :func:`kerasprune.get_apoz` takes it (labels are ignored)."""
        return self.dataset if self.dataset is not None else self.x

    def with_labels(self) -> Any:
        """The data as :func:`kerasprune.trim` takes it: ``(x, y)`` or a dataset of them.

        Raises
        ------
        CliError
            If the source has no labels.
        """
        if not self.labeled:
            raise CliError(f"{self.option} {self.spec}: has no labels, and it is used to "
                           "train or evaluate; give a .npz with 'y', a directory with one "
                           "subdirectory per class, or mnist")
        if self.dataset is not None:
            return self.dataset
        return (self.x, self.y)


def parse_rescale(text: str) -> float:
    """``--rescale``: a number or a fraction such as ``1/255``."""
    try:
        value = float(Fraction(text.strip()))
    except (ValueError, ZeroDivisionError):
        raise ValueError(f"expected a number such as 0.5 or 1/255, got {text!r}") from None
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"must be a positive number, got {text!r}")
    return value


def _input_specs(model: Any) -> list[tuple[str, tuple[int | None, ...]]]:
    specs = []
    for i, t in enumerate(model.inputs):
        name = str(getattr(t, "name", "") or f"input_{i}")
        specs.append((name, tuple(None if d is None else int(d) for d in t.shape[1:])))
    return specs


def _fits(shape: Sequence[int], expected: Sequence[int | None]) -> bool:
    return len(shape) == len(expected) and all(
        e is None or int(s) == e for s, e in zip(shape, expected, strict=True))


def _shape_text(shape: Sequence[int | None]) -> str:
    return "(" + ", ".join("None" if d is None else str(d) for d in shape) + ")"


def _check_array(where: str, what: str, array: np.ndarray, model: Any,
                 expected: tuple[int | None, ...], input_name: str) -> None:
    if array.dtype.kind not in "biuf":
        raise CliError(f"{where}: {what} has dtype {array.dtype}; expected numbers")
    if array.ndim == 0 or not _fits(array.shape[1:], expected):
        got = _shape_text(array.shape[1:]) if array.ndim else "a scalar"
        raise CliError(
            f"{where}: {what} holds samples of shape {got}, but model '{model.name}' takes "
            f"{_shape_text(expected)} at input '{input_name}'")


def _prepare(x: np.ndarray, limit: int | None, rescale: float | None) -> np.ndarray:
    x = x[:limit] if limit is not None else x
    if rescale is not None:
        x = x.astype(np.float32) * np.float32(rescale)
    return x


def _npz(path: Path, model: Any, option: str, limit: int | None,
         rescale: float | None) -> Data:
    where = f"{option} {path}"
    try:
        with np.load(path, allow_pickle=False) as archive:
            arrays = {name: archive[name] for name in archive.files}
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as err:
        raise CliError(f"{where}: cannot read it as a .npz file: {one_line(err)}") from err
    specs = _input_specs(model)
    if len(specs) == 1:
        if "x" not in arrays:
            raise CliError(f"{where}: has no array 'x' (it has {sorted(arrays) or 'none'}); "
                           "save inputs as x and labels as y: np.savez(path, x=x, y=y)")
        names = {"x": specs[0]}
    else:
        missing = [name for name, _ in specs if name not in arrays]
        if missing:
            raise CliError(
                f"{where}: model '{model.name}' has {len(specs)} inputs, so the file needs "
                f"one array per input, named after it ({', '.join(n for n, _ in specs)}); "
                f"missing: {', '.join(missing)}")
        names = {name: (name, shape) for name, shape in specs}
    xs = {}
    for key, (input_name, expected) in names.items():
        _check_array(where, f"array '{key}'", arrays[key], model, expected, input_name)
        xs[key] = _prepare(arrays[key], limit, rescale)
    counts = {len(a) for a in xs.values()}
    y = arrays.get("y")
    if y is not None:
        if y.ndim == 0:
            raise CliError(f"{where}: 'y' is a scalar; expected one label per sample")
        y = y[:limit] if limit is not None else y
        counts.add(len(y))
    if len(counts) > 1:
        raise CliError(f"{where}: the arrays hold different numbers of samples: "
                       f"{sorted(counts)}")
    n = counts.pop()
    if n == 0:
        raise CliError(f"{where}: holds no samples")
    x = xs["x"] if len(specs) == 1 else xs
    return Data(str(path), option, x, y, None, n,
                f"{path.name} ({n:,} samples{'' if y is not None else ', no labels'})",
                y is not None)


def _mnist(spec: str, model: Any, option: str, split: str, limit: int | None,
           rescale: float | None) -> Data:
    _, _, named = spec.partition(":")
    split = named or split
    if split not in MNIST_SPLITS:
        raise CliError(f"{option} {spec}: unknown MNIST split '{split}'; use mnist:train, "
                       "mnist:val or mnist:test")
    specs = _input_specs(model)
    expected = specs[0][1]
    if len(specs) != 1 or None in expected or math.prod(expected) != 28 * 28:  # type: ignore[arg-type]
        raise CliError(f"{option} {spec}: MNIST images are 28x28 with one channel, but model "
                       f"'{model.name}' takes {', '.join(_shape_text(s) for _, s in specs)}")
    from kerasprune.datasets import load_mnist

    x, y = dict(zip(MNIST_SPLITS, load_mnist(), strict=True))[split]
    x = x.reshape((len(x), *expected))
    x, y = _prepare(x, limit, rescale), (y[:limit] if limit is not None else y)
    return Data(spec, option, x, y, None, len(x), f"MNIST {split} ({len(x):,} images)", True)


def _images(path: Path, model: Any, option: str, batch_size: int, shuffle: bool,
            limit: int | None, rescale: float | None, labels: bool) -> Data:
    where = f"{option} {path}"
    specs = _input_specs(model)
    if len(specs) != 1 or len(specs[0][1]) != 3:
        raise CliError(f"{where}: a directory of images needs a model with one image input "
                       f"(height, width, channels); model '{model.name}' takes "
                       f"{', '.join(_shape_text(s) for _, s in specs)}")
    shape = specs[0][1]
    if shape[-1] in _COLOR_MODES:
        data_format, (height, width, channels) = "channels_last", shape
    elif shape[0] in _COLOR_MODES:
        data_format, (channels, height, width) = "channels_first", shape
    else:
        raise CliError(f"{where}: model '{model.name}' takes {_shape_text(shape)}, which has "
                       "no channel axis of 1 (grayscale), 3 (RGB) or 4 (RGBA) images")
    if height is None or width is None:
        raise CliError(f"{where}: model '{model.name}' takes images of any size "
                       f"{_shape_text(shape)}; save it with a fixed input size to read a "
                       "directory of images")
    classes = sorted(p.name for p in path.iterdir() if p.is_dir())
    if labels and not classes:
        raise CliError(f"{where}: has no subdirectories; the labels of a directory of images "
                       "come from one subdirectory per class")
    import keras

    try:
        dataset = keras.utils.image_dataset_from_directory(
            path, labels="inferred" if classes else None, label_mode="int",
            color_mode=_COLOR_MODES[channels], batch_size=batch_size,  # type: ignore[index]
            image_size=(height, width), shuffle=shuffle, seed=0, data_format=data_format,
            verbose=False)
    except ValueError as err:
        raise CliError(f"{where}: {one_line(err)}") from err
    files = len(getattr(dataset, "file_paths", ()) or ()) or None
    if rescale is not None:
        factor = float(rescale)
        dataset = dataset.map((lambda x, y: (x * factor, y)) if classes
                              else (lambda x: x * factor))
    if limit is not None:
        dataset = dataset.unbatch().take(limit).batch(batch_size)
        files = min(files, limit) if files is not None else None
    count = f"{files:,} images" if files is not None else "images"
    described = f"{path.name}/ ({count}, {len(classes)} classes)" if classes else (
        f"{path.name}/ ({count}, no labels)")
    return Data(str(path), option, None, None, dataset, files, described, bool(classes))


def load_data(spec: str, model: Any, *, option: str, split: str = "val", batch_size: int = 32,
              shuffle: bool = False, limit: int | None = None, rescale: float | None = None,
              labels: bool = False) -> Data:
    """Read one data source for ``model`` and check it fits the model's inputs.

    Parameters
    ----------
    spec
        ``FILE.npz``, a directory of images, or ``mnist[:train|val|test]``.
    model
        The model the data is for (its input shapes are checked).
    option
        The option the source was given to, for messages.
    split
        The MNIST split plain ``mnist`` means.
    batch_size
        Batch size of an image directory's dataset.
    shuffle
        Shuffle an image directory's files (for training data).
    limit
        Use only the first ``limit`` samples.
    rescale
        Multiply the inputs by this (``1/255`` for 8-bit images).
    labels
        Whether labels are needed (checked for directories before reading).

    Returns
    -------
    Data
        The data and a description of it.

    Raises
    ------
    CliError
        If the source does not exist, cannot be read, or does not fit the model.
    """
    if spec == "mnist" or spec.startswith("mnist:"):
        return _mnist(spec, model, option, split, limit, rescale)
    path = Path(spec)
    if path.is_dir():
        return _images(path, model, option, batch_size, shuffle, limit, rescale, labels)
    if not path.exists():
        raise CliError(f"{option} {spec}: no such file or directory; data is a .npz file "
                       "(x and y), a directory of images (one subdirectory per class) or "
                       "mnist[:train|val|test]")
    if path.suffix.lower() != ".npz":
        raise CliError(f"{option} {spec}: not a .npz file; data is a .npz file (x and y), a "
                       "directory of images (one subdirectory per class) or "
                       "mnist[:train|val|test]")
    return _npz(path, model, option, limit, rescale)
