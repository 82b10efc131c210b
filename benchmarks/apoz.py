"""Benchmark: get_apoz for every layer against a plain ``model.predict`` over the same data.

Two models: a LeNet-like CNN on MNIST-sized images (28x28x1) and a VGG-style CNN
(Conv-BN-ReLU blocks, so most layers are measured after a BatchNormalization) on 224x224x3
images, both with random weights and random data. For each, the time and the peak memory of
``get_apoz(model, x)`` (all layers) are compared with ``model.predict(x)`` at the same batch
size. Targets: time ratio <= 1.25, and peak memory at most one batch's activations above
predict's.

Method. Every measurement runs in a fresh Python process (``sys.executable``), so neither
call profits from the other's compiled functions or warmed allocator. In that process the
backend is first warmed up on an unrelated tiny model (runtime and thread-pool start-up are
not charged to either call), the model and data are built, and then one call is timed
(wall clock, including its tracing / compilation, as a user pays it). Peak memory is read
with ``resource.getrusage(RUSAGE_SELF).ru_maxrss`` (the process's resident-set high-water
mark, which sees TensorFlow's and XLA's allocators, unlike ``tracemalloc``) just before and
just after the call; the growth is the call's peak memory. Time is both wall clock and the
process's CPU time (user + system, all threads, from ``getrusage``); the pass/fail ratio uses
CPU time, which other jobs on a shared machine disturb far less than the wall clock (on an
idle machine the two ratios agree). Each cell is the median of the repetitions.

Run ``python benchmarks/apoz.py`` (``--quick`` for a short run; ``--backend jax`` or
``--backend tensorflow --backend jax`` to choose backends; default: $KERAS_BACKEND, else
tensorflow).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
import warnings
from typing import Any

TIME_TARGET = 1.25
SIZES = {  # model: (full run images, quick run images)
    "lenet": (10_000, 2_000),
    "vgg": (256, 32),
}
BATCH_SIZE = 32


# --------------------------------------------------------------------------------------------
# Worker: one measurement in this (fresh) process
# --------------------------------------------------------------------------------------------


def build(name: str) -> Any:
    import keras

    L = keras.layers  # noqa: N806
    keras.utils.set_random_seed(0)
    if name == "lenet":
        return keras.Sequential([
            keras.Input((28, 28, 1)),
            L.Conv2D(6, 5, padding="same", activation="relu", name="conv1"),
            L.MaxPooling2D(),
            L.Conv2D(16, 5, activation="relu", name="conv2"),
            L.MaxPooling2D(),
            L.Flatten(),
            L.Dense(120, activation="relu", name="fc1"),
            L.Dense(84, activation="relu", name="fc2"),
            L.Dense(10, activation="softmax", name="out"),
        ], name="lenet")
    layers: list[Any] = [keras.Input((224, 224, 3))]
    for block, (width, convs) in enumerate([(16, 2), (32, 2), (64, 3), (128, 3), (128, 3)], 1):
        for i in range(1, convs + 1):
            layers += [L.Conv2D(width, 3, padding="same", use_bias=False,
                                name=f"block{block}_conv{i}"),
                       L.BatchNormalization(name=f"block{block}_bn{i}"),
                       L.ReLU(name=f"block{block}_relu{i}")]
        layers.append(L.MaxPooling2D(name=f"block{block}_pool"))
    layers += [L.Flatten(), L.Dense(256, activation="relu", name="fc1"), L.Dropout(0.5),
               L.Dense(256, activation="relu", name="fc2"), L.Dense(10, activation="softmax",
                                                                   name="out")]
    return keras.Sequential(layers, name="vgg_style")


def activation_bytes(model: Any, batch: int) -> int:
    """Bytes of every layer's output for one batch (float32)."""
    total = 0
    for layer in model.layers:
        shape = layer.output.shape[1:]
        size = 1
        for d in shape:
            size *= int(d)
        total += 4 * size * batch
    return total


def worker(name: str, method: str, n: int) -> dict[str, Any]:
    import keras
    import numpy as np

    import kerasprune

    # Warm up the backend on something unrelated (runtime and thread pools start here).
    tiny = keras.Sequential([keras.Input((6, 6, 1)), keras.layers.Conv2D(2, 3),
                             keras.layers.Flatten(), keras.layers.Dense(2)])
    tiny.predict(np.zeros((2, 6, 6, 1), "float32"), verbose=0)

    model = build(name)
    shape = tuple(int(d) for d in model.inputs[0].shape[1:])
    x = np.random.default_rng(0).random((n, *shape), dtype=np.float32)
    usage = resource.getrusage(resource.RUSAGE_SELF)
    before, cpu = usage.ru_maxrss, usage.ru_utime + usage.ru_stime
    start = time.perf_counter()
    if method == "predict":
        model.predict(x, batch_size=BATCH_SIZE, verbose=0)
        measured = 0
    else:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the output layer has no ReLU: left out
            report = kerasprune.get_apoz(model, x, batch_size=BATCH_SIZE, verbose=0)
        measured = len(report)
    seconds = time.perf_counter() - start
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return {"seconds": seconds, "cpu": usage.ru_utime + usage.ru_stime - cpu,
            "peak_kib": usage.ru_maxrss - before, "measured": measured,
            "batch_activations": activation_bytes(model, BATCH_SIZE)}


# --------------------------------------------------------------------------------------------
# Driver
# --------------------------------------------------------------------------------------------


def run(backend: str, name: str, method: str, n: int) -> dict[str, Any]:
    env = {**os.environ, "KERAS_BACKEND": backend, "TF_CPP_MIN_LOG_LEVEL": "3"}
    proc = subprocess.run(
        [sys.executable, os.path.abspath(__file__), "--worker", name, method, str(n)],
        capture_output=True, text=True, env=env, check=False)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
    if proc.returncode != 0 or not lines:
        raise RuntimeError(f"{backend} {name} {method} failed:\n{proc.stderr[-4000:]}")
    result: dict[str, Any] = json.loads(lines[-1][len("RESULT "):])
    return result


def median(cells: dict[str, list[dict[str, Any]]], key: str) -> tuple[float, float]:
    """Median of ``key`` for predict and for get_apoz."""
    pred, apoz = (float(statistics.median(r[key] for r in cells[m])) for m in ("predict", "apoz"))
    return pred, apoz


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer images, one repetition")
    parser.add_argument("--backend", action="append", choices=["tensorflow", "jax", "torch"],
                        help="backend(s) to run (repeatable)")
    parser.add_argument("--repeat", type=int, default=None,
                        help="repetitions per cell (default: 3, 1 with --quick)")
    parser.add_argument("--worker", nargs=3, metavar=("MODEL", "METHOD", "N"),
                        help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        name, method, n = args.worker
        print("RESULT " + json.dumps(worker(name, method, int(n))), flush=True)
        return 0

    backends = args.backend or [os.environ.get("KERAS_BACKEND", "tensorflow")]
    repeat = args.repeat or (1 if args.quick else 3)
    print(__doc__.split("\n\n")[2].replace("\n", " "))
    print(f"\nBatch size {BATCH_SIZE}; {repeat} repetition(s) per cell, median shown.\n")
    header = (f"{'backend':<10} {'model':<6} {'images':>6} {'layers':>6} "
              f"{'wall s (pred/apoz)':>18} {'ratio':>6} {'cpu s (pred/apoz)':>17} {'ratio':>6} "
              f"{'time':>5} {'peak MiB (pred/apoz)':>20} {'extra':>7} {'1 batch':>7} "
              f"{'memory':>6}")
    print(header)
    print("-" * len(header))
    ok = True
    for backend in backends:
        for name, (full, quick) in SIZES.items():
            n = quick if args.quick else full
            cells: dict[str, list[dict[str, Any]]] = {"predict": [], "apoz": []}
            for _ in range(repeat):
                for method in cells:  # alternate, so drifts hit both alike
                    cells[method].append(run(backend, name, method, n))
            t_pred, t_apoz = median(cells, "seconds")
            c_pred, c_apoz = median(cells, "cpu")
            m_pred, m_apoz = (v / 1024 for v in median(cells, "peak_kib"))
            batch = cells["apoz"][0]["batch_activations"] / 2**20
            ratio = c_apoz / c_pred
            time_ok = ratio <= TIME_TARGET
            mem_ok = m_apoz - m_pred <= batch
            ok = ok and time_ok and mem_ok
            print(f"{backend:<10} {name:<6} {n:>6} {cells['apoz'][0]['measured']:>6} "
                  f"{t_pred:>8.2f} / {t_apoz:>7.2f} {t_apoz / t_pred:>5.2f}x "
                  f"{c_pred:>7.2f} / {c_apoz:>7.2f} {ratio:>5.2f}x "
                  f"{'pass' if time_ok else 'FAIL':>5} {m_pred:>9.1f} / {m_apoz:>8.1f} "
                  f"{m_apoz - m_pred:>+7.1f} {batch:>7.1f} {'pass' if mem_ok else 'FAIL':>6}",
                  flush=True)
    print(f"\ntime: get_apoz / predict CPU time <= {TIME_TARGET}; memory: get_apoz's peak "
          "growth minus predict's ('extra', MiB) <= one batch's activations ('1 batch': every "
          "layer's output, float32, MiB).")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
