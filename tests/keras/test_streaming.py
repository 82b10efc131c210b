"""Statistics over data streamed from disk: a tf.data pipeline and a keras.utils.PyDataset.

The streams are benchmarks/memory.py's (``.npy`` shards read batch by batch); their results
must equal those over the same samples in memory, every sample counted, and a stream must be
read batch by batch without keeping what it gave. The benchmark itself runs (one cell, and
its table); it asserts no memory figure.
"""

from __future__ import annotations

import gc
import importlib.util
import sys
import tracemalloc
import weakref
from pathlib import Path
from types import ModuleType
from typing import Any

import keras
import numpy as np
import pytest
from backends import BACKEND

import kerasprune

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "memory.py"
SAMPLES = 80  # shards of 32: 32, 32, 16 (a short last batch, padded and its rows dropped)


@pytest.fixture(scope="module")
def bench() -> ModuleType:
    spec = importlib.util.spec_from_file_location("kerasprune_bench_memory", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def shards(bench: ModuleType, tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("shards")
    bench.write_shards(directory, SAMPLES, shard=32)
    return directory


@pytest.fixture(scope="module")
def in_memory(bench: ModuleType, shards: Path) -> tuple[np.ndarray, np.ndarray]:
    x = np.concatenate([np.load(p) for p in bench.shard_paths(shards, "x")])
    y = np.concatenate([np.load(p) for p in bench.shard_paths(shards, "y")])
    return x, y


@pytest.fixture(scope="module")
def model(bench: ModuleType) -> keras.Model:
    return bench.build_model()


def _stream(bench: ModuleType, kind: str, shards: Path, labels: bool) -> Any:
    if kind == "tfdata":
        pytest.importorskip("tensorflow")
    return bench.source(kind, shards, labels=labels)


@pytest.mark.parametrize("kind", ["tfdata", "pydataset"])
def test_apoz_and_activation_stats_over_a_stream_equal_in_memory(
        bench: ModuleType, shards: Path, in_memory: tuple[np.ndarray, np.ndarray],
        model: keras.Model, kind: str) -> None:
    x, _ = in_memory
    streamed = kerasprune.get_apoz(model, _stream(bench, kind, shards, labels=False),
                                   ["conv1", "conv3", "fc1"], verbose=0)
    direct = kerasprune.get_apoz(model, x, ["conv1", "conv3", "fc1"], verbose=0)
    for name in direct:
        np.testing.assert_array_equal(streamed.counts[name].zeros, direct.counts[name].zeros)
        assert streamed.counts[name].total == direct.counts[name].total
    assert direct.counts["conv1"].total == SAMPLES * 32 * 32  # every sample counted
    assert 0 < float(direct["conv1"].mean()) < 1  # zeros made, not all zeros

    streamed_act = kerasprune.get_stats(model, _stream(bench, kind, shards, labels=True),
                                        "activation", ["conv2", "fc1"], verbose=0)
    direct_act = kerasprune.get_stats(model, x, "activation", ["conv2", "fc1"], verbose=0)
    for name in direct_act:
        assert streamed_act[name].count == direct_act[name].count
        np.testing.assert_allclose(streamed_act[name].sums, direct_act[name].sums, rtol=1e-6)


@pytest.mark.parametrize("kind", ["tfdata", "pydataset"])
def test_taylor_over_a_stream_with_labels_equals_in_memory(
        bench: ModuleType, shards: Path, in_memory: tuple[np.ndarray, np.ndarray],
        model: keras.Model, kind: str) -> None:
    x, y = in_memory
    streamed = kerasprune.get_stats(model, _stream(bench, kind, shards, labels=True),
                                    "taylor", ["conv3", "fc1"], verbose=0)
    direct = kerasprune.get_stats(model, (x, y), "taylor", ["conv3", "fc1"], verbose=0)
    for name in direct:
        assert streamed[name].count == direct[name].count == SAMPLES
        np.testing.assert_allclose(streamed[name].sums, direct[name].sums, rtol=1e-5)
        assert float(direct[name].sums.max()) > 0


class _Watched(keras.utils.PyDataset):  # type: ignore[misc]
    """Batches made on demand. Records how many of those it gave are alive at each read,
    and, if ``traced``, the Python memory alive (garbage collected) as it gives the last."""

    def __init__(self, batches: int, rows: int = 8, traced: bool = False) -> None:
        super().__init__()
        self.batches, self.rows, self.traced = batches, rows, traced
        self.alive = self.most_alive = self.reads = 0
        self.at_last: int | None = None

    def __len__(self) -> int:
        return self.batches

    def _gone(self) -> None:
        self.alive -= 1

    def __getitem__(self, i: int) -> Any:
        self.reads += 1
        if self.traced and i == self.batches - 1:
            gc.collect()  # cycles the backend leaves behind are not kept data
            self.at_last = tracemalloc.get_traced_memory()[0]
        x = np.random.default_rng(i).standard_normal((self.rows, 8, 8, 1)).astype("float32")
        self.alive += 1
        self.most_alive = max(self.most_alive, self.alive)
        weakref.finalize(x, self._gone)
        return x


def _small_cnn(width: int = 8) -> keras.Model:
    keras.utils.set_random_seed(1)
    L = keras.layers  # noqa: N806
    return keras.Sequential([
        keras.Input((8, 8, 1)), L.Conv2D(width, 3, activation="relu", name="c1"),
        L.Flatten(), L.Dense(width, activation="relu", name="d1"), L.Dense(2, name="out")])


@pytest.mark.parametrize("statistic", ["apoz", "activation"])
def test_a_stream_is_read_once_and_not_kept(statistic: str) -> None:
    """Each of 60 batches is read once (the first once more, by the check before the pass)
    and let go: a few are alive at a time, not the 60. On torch Keras' layer call leaves each
    batch's tensors in reference cycles (keras-team/keras#23110) that Python's cyclic garbage
    collector frees a few batches later: up to 4 batches were seen alive there, 2 elsewhere."""
    model = _small_cnn()
    data = _Watched(batches=60)
    if statistic == "apoz":
        kerasprune.get_apoz(model, data, ["c1", "d1"], verbose=0)
    else:
        kerasprune.get_stats(model, data, "activation", ["c1", "d1"], verbose=0)
    assert data.reads == 60 + 1
    assert data.most_alive <= (6 if BACKEND == "torch" else 3), data.most_alive


def _held_at_last_batch(model: keras.Model, batches: int) -> int:
    """Python memory (NumPy arrays included) alive when the last batch is read, above that
    before get_apoz started: what the pass holds after reading the others."""
    data = _Watched(batches=batches, rows=64, traced=True)
    kerasprune.get_apoz(model, data, ["c1", "d1"], steps=2, verbose=0)  # warm up: compile
    tracemalloc.start()
    try:
        gc.collect()
        before = tracemalloc.get_traced_memory()[0]
        kerasprune.get_apoz(model, data, ["c1", "d1"], verbose=0)
        assert data.at_last is not None
        return data.at_last - before
    finally:
        tracemalloc.stop()


def test_python_memory_does_not_grow_with_the_batches() -> None:
    """What get_apoz holds as it reads the 60th batch is what it holds at the 6th, within
    128 KiB. Keeping the 54 batches between would add 864 KiB of inputs (64 x 8 x 8
    float32 each) or per site 900 KiB of per-sample counts (64 x (64 + 2) int32 each). The
    allowance covers Keras' torch backend, which itself keeps about 0.5 KiB of Python objects
    per call of a model (after garbage collection; about 50 B per batch on TensorFlow and
    JAX)."""
    model = _small_cnn(width=64)
    held = [_held_at_last_batch(model, n) for n in (6, 60)]
    assert held[1] - held[0] < 128 * 1024, held


def test_memory_benchmark_cell_and_table(bench: ModuleType, shards: Path) -> None:
    cells = [bench.measure("pydataset", method, shards) for method in ("apoz", "keep")]
    for cell in cells:
        assert cell["samples"] == SAMPLES and cell["backend"] == keras.backend.backend()
        assert cell["rss_growth_kib"] >= 0 and cell["python_peak_kib"] >= 0
        assert cell["batch_activations_kib"] == bench.activation_bytes(bench.build_model()) // 1024
    # keep holds the pooled activations of every sample: 80 x 8 x 8 x 32 float32 = 640 KiB
    assert cells[1]["python_peak_kib"] >= 640
    rows = [bench.compare(c, c) for c in cells]
    assert rows[0]["flat"] and rows[0]["ratio"] == 0 and not rows[1]["sees_growth"]
    table = bench.format_table(rows)
    assert "pydataset" in table and "keep" in table and "MISSED growth" in table
