"""Statistics and surgery under tf.distribute strategies and Keras distributions.

Each distributed case runs in subprocesses (a strategy's devices and a worker's cluster are
set once per process): two MultiWorkerMirroredStrategy workers on 127.0.0.1 (TensorFlow), two
logical CPUs under MirroredStrategy (TensorFlow), two host devices under DataParallel (JAX).

The model has small integer weights and the data small integers, and no normalization: every
activation is an integer, exact in float32 whatever order a backend adds in, so the counts
*and* the activation sums of a distributed pass must equal the one-process ones exactly.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import keras
import numpy as np
import pytest
from backends import BACKEND

import kerasprune
from kerasprune.adapters.keras import data as keras_data
from kerasprune.adapters.keras import distribute

L = keras.layers
N = 45  # samples: batches of 7 leave a short last batch, and uneven shares
HERE = Path(__file__).parent


def model(seed: int = 0) -> keras.Model:
    """``conv1 (relu) -> conv2 -> relu -> pool -> flatten -> fc (relu) -> out``: integer
    weights in [-2, 2]."""
    inp = keras.Input((8, 8, 2), name="image")
    x = L.Conv2D(6, 3, activation="relu", name="conv1")(inp)
    x = L.Conv2D(5, 3, name="conv2")(x)
    x = L.ReLU(name="relu")(x)
    x = L.MaxPooling2D(name="pool")(x)
    x = L.Flatten(name="flat")(x)
    x = L.Dense(7, activation="relu", name="fc")(x)
    out = L.Dense(3, name="out")(x)
    built = keras.Model(inp, out, name="small")
    rng = np.random.default_rng(seed)
    built.set_weights([rng.integers(-2, 3, tuple(w.shape)).astype("float32")
                       for w in built.weights])
    return built


def data(n: int = N) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(1)
    return (rng.integers(-3, 4, (n, 8, 8, 2)).astype("float32"),
            rng.integers(0, 3, n).astype("int64"))


LAYERS = ["conv1", "conv2", "fc"]


def summary(stats: Any) -> dict[str, Any]:
    """A report's exact numbers, as JSON: APoZ counts, or activation / Taylor sums."""
    out: dict[str, Any] = {}
    for name in stats:
        value = stats[name] if not hasattr(stats, "counts") else stats.counts[name]
        if hasattr(value, "zeros"):
            out[name] = [value.zeros.tolist(), int(value.total)]
        else:
            out[name] = [value.sums.tolist(), int(value.count)]
    return out


def measure_all(m: keras.Model, x: Any, y: Any = None, **kwargs: Any) -> dict[str, Any]:
    """APoZ, activation and Taylor statistics of ``LAYERS`` on ``x`` (arrays, with labels
    ``y``) or on batches ``x`` of ``(inputs, labels)`` (``y`` None)."""
    labelled = x if y is None else (x, y)
    return {
        "apoz": summary(kerasprune.get_apoz(m, x, LAYERS, **kwargs)),
        "activation": summary(kerasprune.get_stats(m, x, "activation", LAYERS, **kwargs)),
        "taylor": summary(kerasprune.get_stats(
            m, labelled, "taylor", LAYERS,
            loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True), **kwargs)),
    }


def assert_equal_stats(got: dict[str, Any], want: dict[str, Any]) -> None:
    """APoZ counts and activation sums exactly; Taylor sums (float gradients, added in
    another order) to float64 rounding."""
    assert got["apoz"] == want["apoz"]
    assert got["activation"] == want["activation"]
    assert set(got["taylor"]) == set(want["taylor"])
    for name, (sums, count) in want["taylor"].items():
        assert got["taylor"][name][1] == count
        np.testing.assert_allclose(got["taylor"][name][0], sums, rtol=1e-6)


def error(fn: Any) -> list[str]:
    """``[exception type, message]`` of ``fn()``, which must raise."""
    try:
        fn()
    except Exception as err:
        return [type(err).__name__, str(err)]
    return ["no error", ""]


def run_script(script: str, *args: str, env: dict[str, str] | None = None,
               ) -> subprocess.Popen[str]:
    """Start ``script`` in a new Python process (the tests' folder on its path)."""
    full = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "TF_CPP_MIN_LOG_LEVEL": "2",
            "PYTHONPATH": os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")]),
            **(env or {})}
    return subprocess.Popen([sys.executable, "-c", script, *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=full)


def result(proc: subprocess.Popen[str], timeout: float = 300) -> dict[str, Any]:
    """The JSON a script printed after ``RESULT``."""
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
        pytest.fail(f"the process hung: {err[-3000:]}")
    lines = [ln for ln in out.splitlines() if ln.startswith("RESULT")]
    assert proc.returncode == 0 and lines, err[-3000:]
    return dict(json.loads(lines[-1][len("RESULT"):]))


def free_ports(n: int) -> list[int]:
    """``n`` ports free on 127.0.0.1 now (held open together, so they differ)."""
    sockets = [socket.socket() for _ in range(n)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


# --------------------------------------------------------------------------------------------
# Any backend: the count check
# --------------------------------------------------------------------------------------------


def test_a_pass_that_loses_samples_is_an_error() -> None:
    m = model()
    x, _ = data()
    source = keras_data.read(x, m, name="data", labels=False, reiterable=False, batch_size=7)
    run = distribute.runner(m)
    assert run.gather(source, lambda share: ([np.ones(2)], N))[1] == N
    with pytest.raises(ValueError, match="count 38 samples of the 45 given"):
        run.gather(source, lambda share: ([np.ones(2)], N - 7))


def test_public_errors() -> None:
    from kerasprune.adapters.keras.placement import PlacementError

    assert kerasprune.PlacementError is PlacementError and issubclass(PlacementError, ValueError)
    assert kerasprune.WorkerError is distribute.WorkerError


def test_local_counts_are_numpy_counts() -> None:
    """The reference the distributed tests compare with: APoZ counts (a short last batch
    padded) equal to NumPy's on the activations themselves."""
    m = model()
    x, _ = data()
    counts = summary(kerasprune.get_apoz(m, x, LAYERS, batch_size=7))
    acts = keras.Model(m.inputs, [m.get_layer(n).output for n in ("conv1", "relu", "fc")])([x])
    for name, a in zip(LAYERS, acts, strict=True):
        a = keras.ops.convert_to_numpy(a)
        zeros = np.count_nonzero(a == 0, axis=tuple(range(a.ndim - 1)))
        assert counts[name] == [zeros.tolist(), a.size // a.shape[-1]]


# --------------------------------------------------------------------------------------------
# TensorFlow: MultiWorkerMirroredStrategy, two workers
# --------------------------------------------------------------------------------------------

WORKER = textwrap.dedent("""
    import json, os, sys, time, warnings
    index, ports = int(sys.argv[1]), sys.argv[2].split(",")
    os.environ["TF_CONFIG"] = json.dumps({
        "cluster": {"worker": [f"127.0.0.1:{p}" for p in ports]},
        "task": {"type": "worker", "index": index}})
    import numpy as np
    import tensorflow as tf
    import keras
    import test_distributed as t
    import kerasprune
    warnings.simplefilter("ignore")
    strategy = tf.distribute.MultiWorkerMirroredStrategy()
    with strategy.scope():
        model = t.model()
    x, y = t.data()
    out = {"replicas": strategy.num_replicas_in_sync}
    start = time.perf_counter()
    out["arrays"] = t.measure_all(model, x, y, batch_size=7)
    out["seconds"] = time.perf_counter() - start
    dataset = tf.data.Dataset.from_tensor_slices((x, y)).batch(7)
    out["dataset"] = t.measure_all(model, dataset)

    class Failing(keras.utils.PyDataset):
        # batch 3 cannot be read: batches 1, 3, 5 are worker 1's, so worker 1 fails mid-pass
        def __len__(self):
            return 7
        def __getitem__(self, i):
            if i == 3:
                raise OSError("batch 3: disk read failed")
            return x[7 * i:7 * i + 7]

    bad_shape = x if index == 0 else x[..., :1]
    fewer = x if index == 0 else x[:40]
    nan = x.copy()
    nan[8] = np.nan  # in batch 1: worker 1's
    out["errors"] = {
        "shape": t.error(lambda: kerasprune.get_apoz(model, bad_shape, batch_size=7)),
        "fewer": t.error(lambda: kerasprune.get_apoz(model, fewer, batch_size=7)),
        "nan": t.error(lambda: kerasprune.get_stats(model, nan, "activation", batch_size=7)),
        "mid-pass": t.error(lambda: kerasprune.get_apoz(model, Failing(), t.LAYERS)),
    }
    # the workers are still in step after the failures; steps=3 of 9 samples: the first 27
    out["again"] = t.summary(kerasprune.get_apoz(model, x, t.LAYERS, batch_size=9, steps=3))
    print("RESULT" + json.dumps(out))
""")

@pytest.mark.tensorflow
@pytest.mark.skipif(BACKEND != "tensorflow", reason="tf.distribute needs TensorFlow")
def test_two_workers_merge_exactly_and_fail_together() -> None:
    ports = ",".join(map(str, free_ports(2)))
    workers = [run_script(WORKER, str(i), ports) for i in range(2)]
    outs = [result(w) for w in workers]
    x, y = data()
    whole = measure_all(model(), x, y, batch_size=N)  # one process, the whole data
    first_27 = summary(kerasprune.get_apoz(model(), x[:27], LAYERS, batch_size=27))
    for out in outs:
        assert out["replicas"] == 2
        assert_equal_stats(out["arrays"], whole)
        assert_equal_stats(out["dataset"], whole)
        assert out["again"] == first_27
    zero, one = (out["errors"] for out in outs)
    # worker 1's data does not fit the model: it says why, worker 0 that worker 1 failed
    assert one["shape"][0] == "ValueError" and "has shape (45, 8, 8, 1)" in one["shape"][1]
    assert zero["shape"][0] == "WorkerError" and "worker(s) [1] of 2" in zero["shape"][1]
    for errors in (zero, one):
        assert errors["fewer"][0] == "ValueError"
        assert "the workers were given different data" in errors["fewer"][1]
    assert one["nan"][0] == "ValueError" and "holds NaN" in one["nan"][1]
    assert zero["nan"][0] == "WorkerError"
    assert one["mid-pass"] == ["OSError", "batch 3: disk read failed"]
    assert zero["mid-pass"][0] == "WorkerError"


# --------------------------------------------------------------------------------------------
# TensorFlow: MirroredStrategy on two logical CPUs, through surgery and fine-tuning
# --------------------------------------------------------------------------------------------

MIRRORED = textwrap.dedent("""
    import json, warnings
    import numpy as np
    import tensorflow as tf
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    import keras
    import test_distributed as t
    import kerasprune
    warnings.simplefilter("ignore")
    x, y = t.data()
    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    with strategy.scope():
        model = t.model()
    local = t.model()
    out = {"stats": t.measure_all(model, x, y, batch_size=7)}

    def mirrored(m):
        return all(isinstance(v.value, tf.distribute.DistributedValues)
                   and strategy.extended.variable_created_in_scope(v.value) for v in m.weights)

    pruned = kerasprune.delete_neurons(model, {"conv1": [0, 2], "fc": [1]})
    out["pruned mirrored"] = mirrored(pruned)
    out["pruned strategy"] = pruned.distribute_strategy is strategy
    # the pruned model equals the original with the deleted neurons' weights zeroed
    zeroed = t.model()
    kernel, bias = zeroed.get_layer("conv1").get_weights()
    kernel[..., [0, 2]] = 0
    bias[[0, 2]] = 0
    zeroed.get_layer("conv1").set_weights([kernel, bias])
    kernel, bias = zeroed.get_layer("fc").get_weights()
    kernel[:, 1] = 0
    bias[1] = 0
    zeroed.get_layer("fc").set_weights([kernel, bias])
    out["equivalent"] = bool(np.array_equal(pruned.predict(x, verbose=0),
                                            zeroed.predict(x, verbose=0)))
    before = [w.numpy().copy() for w in pruned.weights]
    pruned.compile(optimizer=keras.optimizers.SGD(0.001),
                   loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    loss = pruned.fit(x, y, batch_size=8, epochs=1, verbose=0).history["loss"][-1]
    out["fit"] = bool(np.isfinite(loss)) and any(
        not np.array_equal(b, w.numpy()) for b, w in zip(before, pruned.weights))
    out["still mirrored"] = mirrored(pruned)

    with strategy.scope():  # momentum: the optimizer has a variable per weight
        model.compile(optimizer=keras.optimizers.SGD(0.001, momentum=0.9),
                      loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                      metrics=["accuracy"])
    trimmed = kerasprune.trim(model, (x, y), (x, y), method="top", fraction=0.25, epochs=1,
                              max_rounds=1, tolerance=1.0, batch_size=8, verbose=0)
    out["trim rounds"] = len(trimmed.history)
    slots = [v for v in trimmed.model.optimizer.variables if len(v.shape)]
    out["trimmed mirrored"] = mirrored(trimmed.model)
    out["optimizer mirrored"] = len(slots) == len(trimmed.model.weights) and all(
        isinstance(v.value, tf.distribute.DistributedValues) for v in slots)
    out["trimmed smaller"] = trimmed.model.count_params() < model.count_params()

    other = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    with other.scope():
        out["other apoz"] = t.error(lambda: kerasprune.get_apoz(model, x, t.LAYERS))
        out["other delete"] = t.error(lambda: kerasprune.delete_neurons(model, {"fc": [0]}))
    with strategy.scope():
        out["local under strategy"] = t.error(lambda: kerasprune.get_apoz(local, x, t.LAYERS))
    print("RESULT" + json.dumps(out))
""")


@pytest.mark.tensorflow
@pytest.mark.skipif(BACKEND != "tensorflow", reason="tf.distribute needs TensorFlow")
def test_mirrored_model_stays_mirrored_through_surgery_and_trim() -> None:
    out = result(run_script(MIRRORED))
    x, y = data()
    assert_equal_stats(out["stats"], measure_all(model(), x, y, batch_size=N))
    assert out["pruned mirrored"] and out["pruned strategy"]
    assert out["equivalent"]
    assert out["fit"] and out["still mirrored"]
    assert out["trim rounds"] == 2
    assert out["trimmed mirrored"] and out["optimizer mirrored"] and out["trimmed smaller"]
    for key in ("other apoz", "other delete"):
        kind, message = out[key]
        assert kind == "PlacementError", out[key]
        assert "built under a MirroredStrategy, but is used under another strategy" in message
    kind, message = out["local under strategy"]
    assert kind == "PlacementError" and "built outside any tf.distribute strategy" in message


# --------------------------------------------------------------------------------------------
# JAX: DataParallel over two host devices
# --------------------------------------------------------------------------------------------

DATA_PARALLEL = textwrap.dedent("""
    import json, os, warnings
    os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=2"
    import jax
    import numpy as np
    import keras
    import test_distributed as t
    import kerasprune
    warnings.simplefilter("ignore")
    x, y = t.data()
    local = t.model()
    out = {"devices": len(jax.devices())}
    parallel = keras.distribution.DataParallel(devices=jax.devices())

    def layout(m):
        return [[sorted(d.id for d in v.value.sharding.device_set),
                 bool(v.value.sharding.is_fully_replicated)] for v in m.weights]

    with parallel.scope():
        model = t.model()
        out["stats"] = t.measure_all(model, x, y, batch_size=7)
        pruned = kerasprune.delete_neurons(model, {"conv1": [0, 2], "fc": [1]})
        out["layouts"] = [layout(model), layout(pruned)]
        pruned.compile(optimizer=keras.optimizers.SGD(0.001),
                       loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
        before = [np.array(w.value) for w in pruned.weights]
        # Keras's fit under DataParallel needs batches that split evenly: 40 = 5 * 8
        loss = pruned.fit(x[:40], y[:40], batch_size=8, epochs=1,
                          verbose=0).history["loss"][-1]
        out["fit"] = bool(np.isfinite(loss)) and any(
            not np.array_equal(b, np.array(w.value)) for b, w in zip(before, pruned.weights))
        out["after fit"] = layout(pruned)
        out["local under distribution"] = t.error(lambda: kerasprune.get_apoz(local, x))
    out["outside"] = t.error(lambda: kerasprune.get_apoz(model, x, t.LAYERS))
    print("RESULT" + json.dumps(out))
""")


@pytest.mark.jax
@pytest.mark.skipif(BACKEND != "jax", reason="keras.distribution runs on JAX")
def test_data_parallel_counts_and_layouts() -> None:
    out = result(run_script(DATA_PARALLEL))
    assert out["devices"] == 2
    x, y = data()
    assert_equal_stats(out["stats"], measure_all(model(), x, y, batch_size=N))  # one device
    replicated = [[0, 1], True]
    original, pruned = out["layouts"]
    assert original == [replicated] * len(model().weights)
    assert pruned == original
    assert out["fit"] and out["after fit"] == original
    kind, message = out["local under distribution"]
    assert kind == "PlacementError" and "built outside this distribution" in message
    kind, message = out["outside"]
    assert kind == "PlacementError" and "no distribution is in effect" in message
