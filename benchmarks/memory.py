"""Does memory stay flat as the data grows? Statistics over data streamed from disk.

Data larger than memory reaches kerasprune as a stream: a ``tf.data`` pipeline that reads files,
or a ``keras.utils.PyDataset`` that reads each batch from disk. This benchmark writes N and
10 N samples (32x32x3 float32 images, int32 labels) as ``.npy`` shards to a temporary
directory and measures the peak memory of each statistic over each stream, at both sizes.

Sources:

- ``tfdata``: ``tf.data.FixedLengthRecordDataset`` over the shards' bytes past their ``.npy``
  header, decoded, zipped with the labels and batched by TensorFlow (no Python per sample);
- ``pydataset``: a ``keras.utils.PyDataset`` whose ``__getitem__`` reads one batch's rows of one
  shard (``np.load(mmap_mode="r")``, copied, the mapping dropped at once).

Methods:

- ``apoz``: ``kerasprune.get_apoz(model, source)``;
- ``activation``: ``kerasprune.get_stats(model, source, "activation")``;
- ``taylor``: ``kerasprune.get_stats(model, source, "taylor")`` (forward and backward pass);
- ``keep`` (the control): APoZ the way Keras-Prune measured it, ``keras.Model(inputs,
  layer.output).predict(source)`` of one layer, then the share of zeros of the returned
  array. It keeps every sample's activations, so its memory grows with the data: it shows the
  measurement sees growth where there is some.

Method: each (source, method, size) runs in fresh Python processes (3, median; 1 with
``--quick``). There the model is built
and the method runs once on the first two batches (compilation and tracing are not charged);
then ``gc.collect()``, the process's resident-set high-water mark is reset (``5`` written to
``/proc/self/clear_refs``, Linux) and the resident set read (``VmRSS``), the method runs over
the whole source, and the high-water mark is read (``VmHWM``): the growth is the call's peak
memory, whatever allocated it (TensorFlow's, XLA's and torch's allocators included). The
workers run with glibc's mmap threshold fixed (``MALLOC_MMAP_THRESHOLD_``, see
:data:`FIXED_MMAP`), so that freed batch buffers leave the resident set; ``--allocator
default`` measures with glibc's dynamic threshold, under which torch's resident set keeps
freed buffers and grows with the number of batches though nothing is held.
``tracemalloc``'s peak above its start is reported beside it (Python objects and NumPy
arrays only). Every call checks that it counted every sample.

The limit, from the same run: one batch's activations (every layer's float32 output for one
batch, from the model's shapes). Target: **the growth at 10 N minus the growth at N is at
most one batch's activations** (``ratio``: that difference over the limit, <= 1) for every
statistic; the control is expected to exceed it (``sees growth``).

Run ``python benchmarks/memory.py`` (``--quick`` for a smoke run; ``--backend jax`` or
several ``--backend``; default: $KERAS_BACKEND, else tensorflow; ``--json PATH`` keeps every
number).
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import statistics
import subprocess
import sys
import tempfile
import tracemalloc
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

IMAGE = (32, 32, 3)
CLASSES = 10
BATCH_SIZE = 32
SHARD = 1024
"""Samples per shard file (a multiple of the batch size: no batch spans two files)."""
SIZES = {"full": 2048, "quick": 256}
"""N, the smaller size; the larger is 10 N."""
GROWTH = 10
SOURCES = ("tfdata", "pydataset")
METHODS = ("apoz", "activation", "taylor", "keep")
CONTROL = "keep"
CONTROL_LAYER = "pool2"
"""The layer whose activations the control keeps (8x8x32 floats per sample)."""


# --------------------------------------------------------------------------------------------
# Data on disk
# --------------------------------------------------------------------------------------------


def write_shards(directory: Path, samples: int, shard: int = SHARD, seed: int = 0) -> None:
    """Write ``samples`` random images and labels to ``directory`` as ``.npy`` shards.

    One shard at a time is held in memory. Files: ``x-00000.npy`` (float32, ``(n, *IMAGE)``)
    and ``y-00000.npy`` (int32, ``(n,)``); every shard holds ``shard`` samples but the last.
    """
    directory.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for i, start in enumerate(range(0, samples, shard)):
        n = min(shard, samples - start)
        # Images with a negative mean, so that the ReLUs make zeros (APoZ is not trivial).
        x = rng.standard_normal((n, *IMAGE), dtype=np.float32) - np.float32(0.2)
        np.save(directory / f"x-{i:05d}.npy", x)
        np.save(directory / f"y-{i:05d}.npy", rng.integers(0, CLASSES, n, dtype=np.int32))


def shard_paths(directory: Path, prefix: str) -> list[Path]:
    """The shards of ``prefix`` (``"x"`` or ``"y"``), in order."""
    return sorted(directory.glob(f"{prefix}-*.npy"))


def _header_bytes(path: Path) -> int:
    """The length of a ``.npy`` file's header: where its data starts."""
    with open(path, "rb") as f:
        version = np.lib.format.read_magic(f)
        if version == (1, 0):
            np.lib.format.read_array_header_1_0(f)
        else:
            np.lib.format.read_array_header_2_0(f)
        return f.tell()


def _rows(path: Path) -> int:
    return int(np.load(path, mmap_mode="r").shape[0])


def tf_dataset(directory: Path, batch_size: int = BATCH_SIZE, labels: bool = True) -> Any:
    """A ``tf.data`` pipeline reading the shards of ``directory`` from disk, batched."""
    import tensorflow as tf

    def records(prefix: str, shape: tuple[int, ...], dtype: Any) -> Any:
        paths = shard_paths(directory, prefix)
        headers = {_header_bytes(p) for p in paths}
        if len(headers) != 1:
            raise ValueError(f"the {prefix} shards have headers of different lengths")
        size = int(np.prod(shape, dtype=np.int64)) * dtype.size
        data = tf.data.FixedLengthRecordDataset([str(p) for p in paths], size,
                                                header_bytes=headers.pop())
        return data.map(lambda r: tf.reshape(tf.io.decode_raw(r, dtype), shape))

    x = records("x", IMAGE, tf.float32)
    data = tf.data.Dataset.zip((x, records("y", (), tf.int32))) if labels else x
    return data.batch(batch_size).prefetch(1)


def pydataset(directory: Path, batch_size: int = BATCH_SIZE, labels: bool = True) -> Any:
    """A ``keras.utils.PyDataset`` reading one batch at a time from the shards of
    ``directory``."""
    import keras

    class Shards(keras.utils.PyDataset):  # type: ignore[misc]
        def __init__(self) -> None:
            super().__init__()
            self.x = shard_paths(directory, "x")
            self.y = shard_paths(directory, "y")
            self.index: list[tuple[int, int, int]] = []  # (shard, start, stop) per batch
            for i, path in enumerate(self.x):
                n = _rows(path)
                self.index += [(i, s, min(s + batch_size, n)) for s in range(0, n, batch_size)]

        def __len__(self) -> int:
            return len(self.index)

        def __getitem__(self, i: int) -> Any:
            shard, start, stop = self.index[i]
            x = np.array(np.load(self.x[shard], mmap_mode="r")[start:stop])
            if not labels:
                return x
            return x, np.array(np.load(self.y[shard], mmap_mode="r")[start:stop])

    return Shards()


def source(kind: str, directory: Path, labels: bool = True) -> Any:
    """The source ``kind`` (``"tfdata"`` or ``"pydataset"``) over ``directory``."""
    return {"tfdata": tf_dataset, "pydataset": pydataset}[kind](directory, labels=labels)


# --------------------------------------------------------------------------------------------
# The model and the methods
# --------------------------------------------------------------------------------------------


def build_model() -> Any:
    """A small CNN on 32x32x3 images (Conv-BN-ReLU, Conv-ReLU blocks, two Dense), compiled."""
    import keras

    L = keras.layers  # noqa: N806
    keras.utils.set_random_seed(0)
    model = keras.Sequential([
        keras.Input(IMAGE),
        L.Conv2D(16, 3, padding="same", use_bias=False, name="conv1"),
        L.BatchNormalization(name="bn1"),
        L.ReLU(name="relu1"),
        L.Conv2D(16, 3, padding="same", activation="relu", name="conv2"),
        L.MaxPooling2D(name="pool1"),
        L.Conv2D(32, 3, padding="same", activation="relu", name="conv3"),
        L.MaxPooling2D(name=CONTROL_LAYER),
        L.Flatten(name="flatten"),
        L.Dense(64, activation="relu", name="fc1"),
        L.Dense(CLASSES, activation="softmax", name="out"),
    ], name="cnn32")
    model.compile(loss="sparse_categorical_crossentropy")
    return model


def activation_bytes(model: Any, batch: int = BATCH_SIZE) -> int:
    """Bytes of every layer's float32 output for one batch: the limit."""
    return sum(4 * batch * int(np.prod([int(d) for d in layer.output.shape[1:]]))
               for layer in model.layers)


def run_method(method: str, model: Any, data: Any, steps: int | None = None) -> int:
    """Run ``method`` over ``data``; the number of samples it counted."""
    import keras

    import kerasprune

    positions = int(np.prod(IMAGE[:2]))  # conv1's values per channel and sample
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the output layer has no ReLU; predict stops early
        if method == "apoz":
            report = kerasprune.get_apoz(model, data, verbose=0, steps=steps)
            return int(report.counts["conv1"].total) // positions
        if method == "activation":
            stats = kerasprune.get_stats(model, data, "activation", verbose=0, steps=steps)
            return int(stats["conv1"].count) // positions
        if method == "taylor":
            stats = kerasprune.get_stats(model, data, "taylor", verbose=0, steps=steps)
            return int(stats["conv1"].count)
        if method == CONTROL:
            layer = model.get_layer(CONTROL_LAYER)
            features = keras.Model(model.inputs, layer.output)
            kept = features.predict(data, verbose=0, steps=steps)
            apoz = (kept == 0).mean(axis=(0, 1, 2))
            assert apoz.shape == (layer.output.shape[-1],)
            return len(kept)
    raise ValueError(f"unknown method {method!r}; valid: {', '.join(METHODS)}")


# --------------------------------------------------------------------------------------------
# Measuring one cell (in a fresh process)
# --------------------------------------------------------------------------------------------


def _status_kib(field: str) -> int:
    with open("/proc/self/status", encoding="ascii") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"/proc/self/status has no {field}")


def reset_peak() -> None:
    """Reset the resident-set high-water mark (VmHWM) to the current resident set."""
    with open("/proc/self/clear_refs", "w", encoding="ascii") as f:
        f.write("5")


def measure(kind: str, method: str, directory: Path) -> dict[str, Any]:
    """Peak memory of ``method`` over source ``kind`` reading ``directory``: one cell."""
    if not os.path.exists("/proc/self/clear_refs"):
        raise RuntimeError("this benchmark reads and resets the peak resident set through "
                           "/proc/self (Linux)")
    model = build_model()
    samples = sum(_rows(p) for p in shard_paths(directory, "x"))
    data = source(kind, directory, labels=method == "taylor")
    run_method(method, model, data, steps=2)  # warm-up: compilation, tracing, threads
    gc.collect()
    reset_peak()
    before = _status_kib("VmRSS")
    tracemalloc.start()
    start = tracemalloc.get_traced_memory()[0]
    counted = run_method(method, model, data)
    python_peak = tracemalloc.get_traced_memory()[1] - start
    tracemalloc.stop()
    peak = _status_kib("VmHWM")
    if counted != samples:
        raise RuntimeError(f"{method} over {kind} counted {counted} samples of {samples}")
    import keras

    return {"backend": keras.backend.backend(), "source": kind, "method": method,
            "samples": samples, "rss_growth_kib": peak - before,
            "python_peak_kib": python_peak // 1024,
            "batch_activations_kib": activation_bytes(model) // 1024}


def run(backend: str, kind: str, method: str, directory: Path,
        repeat: int = 1, allocator: str = "fixed") -> dict[str, Any]:
    """:func:`measure` in ``repeat`` fresh processes on ``backend``: the median growth
    (``allocator``: ``"fixed"``, glibc's mmap threshold fixed, :data:`FIXED_MMAP`, or
    ``"default"``)."""
    cells = [_run_once(backend, kind, method, directory, allocator) for _ in range(repeat)]
    cell = dict(cells[0])
    for key in ("rss_growth_kib", "python_peak_kib"):
        cell[key] = int(statistics.median(c[key] for c in cells))
    cell["repeats"] = [c["rss_growth_kib"] for c in cells]
    return cell


FIXED_MMAP = {"MALLOC_MMAP_THRESHOLD_": "131072"}
"""glibc's allocator with its mmap threshold fixed at its initial 128 KiB: every buffer that
large is its own mapping, returned to the system when freed. By default glibc raises the
threshold each time such a buffer is freed, after which large buffers come from heaps that it
keeps (fragmented) after they are freed: the resident set then grows with the number of
batches (torch: about 20-30 MiB more at 10 N in the quick run) while nothing is held, and
the high-water mark measures the allocator, not the data kept. ``--allocator default``
measures with glibc's default."""


def _run_once(backend: str, kind: str, method: str, directory: Path,
              allocator: str = "fixed") -> dict[str, Any]:
    env = {**os.environ, "KERAS_BACKEND": backend, "TF_CPP_MIN_LOG_LEVEL": "3",
           **(FIXED_MMAP if allocator == "fixed" else {})}
    proc = subprocess.run(
        [sys.executable, os.path.abspath(__file__), "--worker", kind, method, str(directory)],
        capture_output=True, text=True, env=env, check=False)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
    if proc.returncode != 0 or not lines:
        raise RuntimeError(f"{backend} {kind} {method} failed:\n{proc.stderr[-4000:]}")
    result: dict[str, Any] = json.loads(lines[-1][len("RESULT "):])
    return result


# --------------------------------------------------------------------------------------------
# The table
# --------------------------------------------------------------------------------------------


def compare(small: dict[str, Any], large: dict[str, Any]) -> dict[str, Any]:
    """One row: the growth from N to 10 N samples against one batch's activations."""
    limit = small["batch_activations_kib"]
    extra = large["rss_growth_kib"] - small["rss_growth_kib"]
    row = {key: small[key] for key in ("backend", "source", "method")}
    row.update(samples=(small["samples"], large["samples"]),
               rss_growth_kib=(small["rss_growth_kib"], large["rss_growth_kib"]),
               python_peak_kib=(small["python_peak_kib"], large["python_peak_kib"]),
               limit_kib=limit, extra_kib=extra, ratio=extra / limit)
    if small["method"] == CONTROL:
        row["sees_growth"] = row["ratio"] > 1
    else:
        row["flat"] = row["ratio"] <= 1
    return row


def format_table(rows: Sequence[dict[str, Any]]) -> str:
    """The rows as a text table."""
    head = (f"{'backend':<11}{'source':<10}{'method':<11}{'samples':>14}  "
            f"{'RSS growth MiB':>16}{'Python peak MiB':>17}{'10N-N MiB':>11}{'limit MiB':>10}"
            f"{'ratio':>7}  verdict")
    lines = [head, "-" * len(head)]
    for r in rows:
        mib = [v / 1024 for v in (*r["rss_growth_kib"], *r["python_peak_kib"])]
        verdict = ("sees growth" if r.get("sees_growth") else "MISSED growth") if (
            "sees_growth" in r) else ("flat" if r["flat"] else "GROWS")
        lines.append(
            f"{r['backend']:<11}{r['source']:<10}{r['method']:<11}"
            f"{r['samples'][0]:>6} / {r['samples'][1]:>5}  {mib[0]:>7.1f} / {mib[1]:>6.1f}"
            f"{mib[2]:>8.2f} / {mib[3]:>6.2f}{r['extra_kib'] / 1024:>+11.1f}"
            f"{r['limit_kib'] / 1024:>10.1f}{r['ratio']:>7.2f}  {verdict}")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true",
                        help=f"N = {SIZES['quick']} samples (else {SIZES['full']})")
    parser.add_argument("--samples", type=int, default=None, help="N (overrides --quick)")
    parser.add_argument("--backend", action="append", choices=["tensorflow", "jax", "torch"],
                        help="backend(s) (repeatable; default: $KERAS_BACKEND or tensorflow)")
    parser.add_argument("--sources", nargs="+", choices=SOURCES, default=list(SOURCES))
    parser.add_argument("--methods", nargs="+", choices=METHODS, default=list(METHODS))
    parser.add_argument("--repeat", type=int, default=None,
                        help="fresh processes per cell, median (default 3, 1 with --quick)")
    parser.add_argument("--allocator", choices=["fixed", "default"], default="fixed",
                        help="glibc's mmap threshold fixed at 128 KiB (default; see FIXED_MMAP) "
                             "or glibc's own dynamic one")
    parser.add_argument("--json", metavar="PATH", help="also write every number as JSON")
    parser.add_argument("--worker", nargs=3, metavar=("SOURCE", "METHOD", "DIR"),
                        help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        kind, method, directory = args.worker
        print("RESULT " + json.dumps(measure(kind, method, Path(directory))), flush=True)
        return 0
    n = args.samples or SIZES["quick" if args.quick else "full"]
    repeat = args.repeat or (1 if args.quick else 3)
    backends = args.backend or [os.environ.get("KERAS_BACKEND", "tensorflow")]
    print(f"kerasprune memory benchmark: N = {n} and {GROWTH * n} samples of {IMAGE} float32 "
          f"on disk, batch {BATCH_SIZE}; {repeat} process(es) per cell, median; backends "
          f"{', '.join(backends)}; glibc mmap threshold {args.allocator}\n", flush=True)
    rows = []
    with tempfile.TemporaryDirectory(prefix="kerasprune-memory-") as tmp:
        dirs = {size: Path(tmp) / str(size) for size in (n, GROWTH * n)}
        for size, directory in dirs.items():
            write_shards(directory, size)
        for backend in backends:
            for kind in args.sources:
                for method in args.methods:
                    small, large = (run(backend, kind, method, d, repeat, args.allocator)
                                    for d in dirs.values())
                    rows.append(compare(small, large))
                    print(format_table(rows[-1:]).splitlines()[-1], flush=True)
    print()
    print(format_table(rows))
    print(f"\nflat: the peak resident-set growth at {GROWTH} N minus that at N is at most one "
          "batch's activations (every layer's float32 output, the limit); the control "
          f"('{CONTROL}': one layer's activations kept by predict) should exceed it.")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump({"samples": n, "growth": GROWTH, "batch_size": BATCH_SIZE,
                       "rows": rows}, f, indent=2)
        print(f"wrote {os.path.abspath(args.json)}")
    ok = all(r.get("flat", True) and r.get("sees_growth", True) for r in rows)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
