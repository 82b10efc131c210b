"""Benchmark: get_apoz over two MultiWorkerMirroredStrategy workers against one process.

A LeNet-like CNN (integer weights, integer images: every activation exact, so counts can be
compared bit for bit) measures ``get_apoz`` on the same images (a) in one process without a
strategy and (b) in two worker processes on 127.0.0.1 under
``tf.distribute.MultiWorkerMirroredStrategy`` (``TF_CONFIG`` with two free ports), each
measuring its share and the counts all-reduced at the end.

Each process is limited to one TensorFlow thread (intra- and inter-op), standing for one
machine each: on one shared machine two workers would otherwise only split the same cores.
In every process a warm-up call (a few images) first compiles the measuring function and, for
the workers, sets up the collectives; then one ``get_apoz`` over all the images is timed (wall
clock). Reported: whether the merged counts equal the one-process counts exactly, and the
time of the two-worker pass (the slower worker) as a ratio to the one-process pass, as wall
clock and as process CPU time (which other jobs on a shared machine disturb less); the ideal
is 0.5 plus the final all-reduce.

Run ``python benchmarks/distributed.py`` (``--quick`` for fewer images). TensorFlow only.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import time
from typing import Any

SIZES = (20_000, 2_000)  # images: full run, quick run
BATCH_SIZE = 64


def build() -> Any:
    import keras
    import numpy as np

    L = keras.layers  # noqa: N806
    model = keras.Sequential([
        keras.Input((28, 28, 1)),
        L.Conv2D(6, 5, activation="relu", name="conv1"),
        L.MaxPooling2D(),
        L.Conv2D(16, 5, activation="relu", name="conv2"),
        L.MaxPooling2D(),
        L.Flatten(),
        L.Dense(120, activation="relu", name="fc1"),
        L.Dense(84, activation="relu", name="fc2"),
        L.Dense(10, name="out"),
    ])
    rng = np.random.default_rng(0)
    model.set_weights([rng.integers(-1, 2, tuple(w.shape)).astype("float32")
                       for w in model.weights])
    return model


def images(n: int) -> Any:
    import numpy as np

    return np.random.default_rng(1).integers(0, 3, (n, 28, 28, 1)).astype("float32")


def worker(n: int, index: int, ports: list[int]) -> dict[str, Any]:
    """One process: ``get_apoz`` over ``n`` images, alone (no ports) or as worker ``index``."""
    if ports:
        os.environ["TF_CONFIG"] = json.dumps({
            "cluster": {"worker": [f"127.0.0.1:{p}" for p in ports]},
            "task": {"type": "worker", "index": index}})
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(1)
    tf.config.threading.set_inter_op_parallelism_threads(1)
    import kerasprune

    layers = ["conv1", "conv2", "fc1", "fc2"]
    if ports:
        strategy = tf.distribute.MultiWorkerMirroredStrategy()
        with strategy.scope():
            model = build()
    else:
        model = build()
    x = images(n)
    kerasprune.get_apoz(model, x[:4 * BATCH_SIZE], layers, batch_size=BATCH_SIZE, verbose=0)
    start, cpu = time.perf_counter(), time.process_time()
    report = kerasprune.get_apoz(model, x, layers, batch_size=BATCH_SIZE, verbose=0)
    seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
    counts = {k: [c.zeros.tolist(), c.total] for k, c in report.counts.items()}
    return {"seconds": seconds, "cpu": cpu, "counts": counts}


def _free_ports(n: int) -> list[int]:
    sockets = [socket.socket() for _ in range(n)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def _spawn(n: int, index: int, ports: list[int]) -> subprocess.Popen[str]:
    env = {**os.environ, "KERAS_BACKEND": "tensorflow", "CUDA_VISIBLE_DEVICES": "",
           "TF_CPP_MIN_LOG_LEVEL": "2"}
    return subprocess.Popen(
        [sys.executable, __file__, "--worker", str(n), str(index), ",".join(map(str, ports))],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)


def _read(proc: subprocess.Popen[str]) -> dict[str, Any]:
    out, err = proc.communicate(timeout=1800)
    lines = [ln for ln in out.splitlines() if ln.startswith("RESULT")]
    if proc.returncode != 0 or not lines:
        raise RuntimeError(f"a benchmark process failed:\n{err[-3000:]}")
    return dict(json.loads(lines[-1][len("RESULT"):]))


def run(n: int) -> dict[str, Any]:
    """One process, then two workers at once: equality of the counts and the time ratio."""
    alone = _read(_spawn(n, 0, []))
    ports = _free_ports(2)
    workers = [_read(p) for p in [_spawn(n, i, ports) for i in range(2)]]
    return {"images": n, "equal": all(w["counts"] == alone["counts"] for w in workers),
            "ratio": max(w["seconds"] for w in workers) / alone["seconds"],
            "cpu_ratio": max(w["cpu"] for w in workers) / alone["cpu"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer images")
    parser.add_argument("--worker", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        n, index, ports = args.worker
        out = worker(int(n), int(index), [int(p) for p in ports.split(",") if p])
        print("RESULT" + json.dumps(out))
        return
    row = run(SIZES[1] if args.quick else SIZES[0])
    print(f"get_apoz on {row['images']} images, 2 MultiWorkerMirroredStrategy workers vs one "
          f"process (one thread each): counts equal: {row['equal']}; time ratio "
          f"{row['ratio']:.2f}, CPU-time ratio {row['cpu_ratio']:.2f} (the slower worker's; "
          "ideal 0.5)")


if __name__ == "__main__":
    main()
