"""get_apoz / high_apoz on Keras models: correctness against NumPy, data sources, one pass.

Models whose results must agree bit for bit across batch sizes, data sources and devices use
small integer weights and inputs: every sum in a Dense or a convolution is then exact in
float32, whatever order a backend adds in, so activations (and their zeros) do not depend on
how the data is batched.
"""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys
import textwrap
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import keras
import numpy as np
import pytest
from backends import BACKEND, DATA_FORMATS

import kerasprune
import kerasprune.identify
from kerasprune.adapters import keras as adapter
from kerasprune.adapters.keras import apoz as keras_apoz
from kerasprune.adapters.keras.apoz import ApozReport, get_apoz, high_apoz
from kerasprune.core.apoz import ApozCounts, ApozWarning
from kerasprune.core.graph import PruneError

L = keras.layers
ops = keras.ops
N = 40  # samples


class SampleCounter(L.Layer):
    """Identity that counts, at run time (in a variable), the samples that pass through it.

    Under a tf.distribute strategy, each call adds the *mean* of the replicas' batch sizes:
    half a batch with two replicas if the batch is split between them, a whole one if each
    replica runs the whole batch.
    """

    def build(self, input_shape: Any) -> None:
        self.seen = self.add_weight(shape=(), initializer="zeros", trainable=False,
                                    dtype="float32", aggregation="mean", name="seen")

    def call(self, x: Any) -> Any:
        self.seen.assign_add(ops.cast(ops.shape(x)[0], "float32"))
        return x

    def compute_output_shape(self, input_shape: Any) -> Any:
        return input_shape


def integer_weights(model: keras.Model, seed: int = 0) -> keras.Model:
    """Small integer weights (positive BN variances), so every activation is exact."""
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        values = []
        for w in layer.weights:
            shape = tuple(w.shape)
            if "variance" in w.name:
                values.append(rng.integers(1, 3, shape).astype("float32"))
            elif "gamma" in w.name:
                values.append(rng.choice([-1.0, 1.0, 2.0], shape).astype("float32"))
            elif w.name == "seen":
                values.append(np.zeros(shape, "float32"))
            else:
                values.append(rng.integers(-2, 3, shape).astype("float32"))
        if values:
            layer.set_weights(values)
    return model


def integer_data(shape: tuple[int, ...], n: int = N, seed: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).integers(-3, 4, (n, *shape)).astype("float32")


def cnn(data_format: str = "channels_last", counter: bool = False) -> keras.Model:
    """``conv1 (relu) -> conv2 -> bn -> relu -> pool -> conv3 -> dropout -> act (relu) ->
    flatten -> fc (relu) -> out (softmax)``."""
    cf = data_format == "channels_first"
    shape = (3, 10, 10) if cf else (10, 10, 3)
    inp = keras.Input(shape, name="image")
    x = SampleCounter(name="counter")(inp) if counter else inp
    x = L.Conv2D(6, 3, activation="relu", data_format=data_format, name="conv1")(x)
    x = L.Conv2D(5, 3, data_format=data_format, name="conv2")(x)
    x = L.BatchNormalization(axis=1 if cf else -1, name="bn")(x)
    x = L.ReLU(name="relu")(x)
    x = L.MaxPooling2D(data_format=data_format, name="pool")(x)
    x = L.Conv2D(4, 1, data_format=data_format, name="conv3")(x)
    x = L.Dropout(0.5, name="drop")(x)
    x = L.Activation("relu", name="act")(x)
    x = L.Flatten(name="flat")(x)
    x = L.Dense(7, activation="relu", name="fc")(x)
    out = L.Dense(3, activation="softmax", name="out")(x)
    return integer_weights(keras.Model(inp, out))


MEASURED = {"conv1": "conv1", "conv2": "relu", "conv3": "act", "fc": "fc"}


def quiet_apoz(*args: Any, **kwargs: Any) -> ApozReport:
    """get_apoz without the warning about the output layer."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ApozWarning)
        return get_apoz(*args, **kwargs)


def reference_counts(model: keras.Model, x: Any, channel_axis: int) -> dict[str, ApozCounts]:
    """Zero counts from the intermediate activations themselves, computed with NumPy."""
    inputs = model.inputs if len(model.inputs) > 1 else model.inputs[0]
    sub = keras.Model(inputs, [model.get_layer(name).output for name in MEASURED.values()])
    acts = sub.predict(x, batch_size=len(x) if not isinstance(x, list) else len(x[0]),
                       verbose=0)
    out = {}
    for (layer, _), a in zip(MEASURED.items(), acts, strict=True):
        axis = channel_axis % a.ndim if a.ndim > 2 else 1
        others = tuple(i for i in range(a.ndim) if i != axis)
        zeros = np.count_nonzero(a == 0, axis=others).astype(np.int64)
        out[layer] = ApozCounts(zeros, a.size // a.shape[axis])
    return out


def assert_same(a: ApozReport, b: ApozReport) -> None:
    assert list(a) == list(b)
    for name in a:
        assert a.counts[name] == b.counts[name], name
        np.testing.assert_array_equal(a[name], b[name])


# --------------------------------------------------------------------------------------------
# Correctness
# --------------------------------------------------------------------------------------------


X_PLANTED = np.random.default_rng(4).normal(size=(200, 8, 8, 2)).astype("float32")


def planted_model() -> tuple[keras.Model, dict[str, list[int]]]:
    """A model with units that are zero after their ReLU for every input."""
    rng = np.random.default_rng(3)
    inp = keras.Input((8, 8, 2))
    x = L.Conv2D(8, 3, padding="same", activation="relu", name="conv1")(inp)
    x = L.Conv2D(6, 3, padding="same", name="conv2")(x)
    x = L.BatchNormalization(name="bn")(x)
    x = L.ReLU(name="relu")(x)
    x = L.GlobalAveragePooling2D(name="gap")(x)
    x = L.Dense(12, activation="relu", name="fc")(x)
    out = L.Dense(3, activation="softmax", name="out")(x)
    model = keras.Model(inp, out)
    dead = {"conv1": [2, 5], "conv2": [1], "fc": [0, 7, 11]}
    for name, units in dead.items():
        layer = model.get_layer(name)
        kernel, bias = layer.get_weights()
        kernel = rng.normal(0, 0.5, kernel.shape).astype("float32")
        bias = np.zeros_like(bias)
        if name != "conv2":
            bias[units] = -1e4  # far below anything the kernel can reach
        layer.set_weights([kernel, bias])
    bn = model.get_layer("bn")
    gamma, beta, mean, var = bn.get_weights()
    beta[dead["conv2"]] = -1e4  # conv2's channel dies after the BatchNormalization
    bn.set_weights([gamma, beta, mean, var])
    # The live units of fc, which reads non-negative features, are centred to be zero about
    # half of the time.
    fc = model.get_layer("fc")
    kernel, bias = fc.get_weights()
    features = keras.Model(inp, model.get_layer("gap").output).predict(
        X_PLANTED, batch_size=len(X_PLANTED), verbose=0)
    bias = -np.median(features @ kernel, axis=0)
    bias[dead["fc"]] = -1e4
    fc.set_weights([kernel, bias])
    return model, dead


def test_planted_dead_units_are_found_exactly() -> None:
    model, dead = planted_model()
    x = X_PLANTED
    with pytest.warns(ApozWarning, match=r"'out'"):
        found = high_apoz(model, x)
    assert list(found) == ["conv1", "conv2", "fc"]
    for name, units in dead.items():
        assert found[name].tolist() == units, name
        assert found[name].dtype == np.int64
    report = get_apoz(model, x, ["conv1", "conv2", "fc"], batch_size=100)
    for name, units in dead.items():
        assert (report[name][units] == 1.0).all()
        alive = np.setdiff1d(np.arange(len(report[name])), units)
        assert (report[name][alive] < 0.9).all()
    # The dead units carry nothing: deleting them leaves the predictions unchanged.
    smaller = kerasprune.delete_neurons(model, found)
    np.testing.assert_allclose(smaller.predict(x, batch_size=len(x), verbose=0),
                               model.predict(x, batch_size=len(x), verbose=0), atol=1e-6)


@pytest.mark.parametrize("data_format", DATA_FORMATS)
def test_apoz_equals_numpy_on_intermediate_activations(data_format: str) -> None:
    model = cnn(data_format)
    shape = tuple(model.inputs[0].shape[1:])
    x = integer_data(shape)
    report = quiet_apoz(model, x, batch_size=16)
    assert dict(report.measured_at) == MEASURED
    expected = reference_counts(model, x, 1 if data_format == "channels_first" else -1)
    for name, counts in expected.items():
        assert report.counts[name] == counts, name
        np.testing.assert_array_equal(report[name], counts.zeros / counts.total)
    assert report.counts["conv2"].total == N * 6 * 6  # samples x positions
    assert report.counts["fc"].total == N
    assert report["conv1"].min() > 0 and report["conv1"].max() < 1  # not trivially all/none


@pytest.mark.parametrize("length", [200, 300, 70_000, None])
def test_long_and_unknown_axes_are_counted_exactly(length: int | None) -> None:
    """The zeros along the last spatial axis are summed in uint8 (<= 255 values), uint16
    (<= 65535) or int32 (longer, or unknown until run time)."""
    inp = keras.Input((length, 2))
    x = L.Conv1D(3, 1, name="conv")(inp)
    x = L.ReLU(name="relu")(x)
    model = integer_weights(keras.Model(inp, L.Conv1D(1, 1, name="out")(x)))
    kernel, bias = model.get_layer("conv").get_weights()
    bias[0] = -100.0  # channel 0 is zero everywhere: a sample has `length` zeros in it
    model.get_layer("conv").set_weights([kernel, bias])
    batches = [integer_data((length or n, 2), n=3, seed=n) for n in (40, 300)]
    if length is not None:
        batches = batches[:1]
    report = get_apoz(model, iter(batches), ["conv"])
    sub = keras.Model(inp, model.get_layer("relu").output)
    acts = [sub.predict(b, verbose=0) for b in batches]
    zeros = sum((a == 0).sum(axis=(0, 1)) for a in acts)
    np.testing.assert_array_equal(report.counts["conv"].zeros, zeros)
    assert report.counts["conv"].total == sum(a.shape[0] * a.shape[1] for a in acts)
    assert zeros[0] == report.counts["conv"].total  # no overflow in the narrow sums
    assert zeros[1:].min() > 0


def test_measured_at_conv_bn_relu_and_nested_linear_layer() -> None:
    inner = keras.Sequential([keras.Input((6,)), L.Dense(5, name="lin")], name="inner")
    inp = keras.Input((6,))
    x = L.BatchNormalization(name="bn")(inner(inp))
    x = L.ReLU(name="top_relu")(x)
    model = integer_weights(keras.Model(inp, L.Dense(2, name="head")(x)))
    x_data = integer_data((6,))
    report = get_apoz(model, x_data, ["lin"])
    assert list(report) == ["inner/lin"]
    assert report.measured_at == {"inner/lin": "top_relu"}
    acts = keras.Model(inp, model.get_layer("top_relu").output).predict(x_data, verbose=0)
    np.testing.assert_array_equal(report.counts["inner/lin"].zeros, (acts == 0).sum(axis=0))


def test_report_is_read_only() -> None:
    report = quiet_apoz(cnn(), integer_data((10, 10, 3)))
    assert isinstance(report, ApozReport)
    assert len(report) == 4 and "conv2" in report and "out" not in report
    with pytest.raises(ValueError, match=r"read-only"):
        report["conv1"][0] = 0.5
    with pytest.raises(TypeError):
        report["conv1"] = np.zeros(6)  # type: ignore[index]
    with pytest.raises(TypeError):
        report.measured_at["conv1"] = "x"  # type: ignore[index]
    with pytest.raises(TypeError):
        report.counts["conv1"] = ApozCounts.empty(6)  # type: ignore[index]
    assert "'conv2': 5 neurons" in repr(report) and "(at 'relu')" in repr(report)


# --------------------------------------------------------------------------------------------
# One forward pass, and the same result however the data comes
# --------------------------------------------------------------------------------------------


def test_one_forward_pass_however_many_layers() -> None:
    model = cnn(counter=True)
    counter = model.get_layer("counter")
    x = integer_data((10, 10, 3))
    model.predict(x, batch_size=8, verbose=0)
    assert float(counter.seen.numpy()) == N  # the counter counts on this backend
    quiet_apoz(model, x, batch_size=8)  # four layers at four sites
    assert float(counter.seen.numpy()) == 2 * N
    get_apoz(model, x, ["conv1"], batch_size=8)
    assert float(counter.seen.numpy()) == 3 * N
    # A short last batch is padded to the batch size (one compiled shape); the padding is
    # computed once too, and left out of the counts.
    report = get_apoz(model, x, ["conv1"], batch_size=16)
    assert float(counter.seen.numpy()) == 3 * N + 48
    assert report.counts["conv1"].total == N * 8 * 8


def test_batch_sizes_agree() -> None:
    model = cnn()
    x = integer_data((10, 10, 3), n=130)
    reports = [quiet_apoz(model, x, batch_size=b) for b in (1, 7, 128)]
    for other in reports[1:]:
        assert_same(reports[0], other)
    assert reports[0].counts["fc"].total == 130


class Batches(keras.utils.PyDataset):  # type: ignore[misc]
    def __init__(self, x: np.ndarray, y: np.ndarray, batch_size: int) -> None:
        super().__init__()
        self.x, self.y, self.batch_size = x, y, batch_size

    def __len__(self) -> int:
        return -(-len(self.x) // self.batch_size)

    def __getitem__(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        part = slice(i * self.batch_size, (i + 1) * self.batch_size)
        return self.x[part], self.y[part]


def test_data_sources_agree() -> None:
    model = cnn()
    x = integer_data((10, 10, 3), n=45)
    y = np.arange(45) % 3

    def generator(labels: bool) -> Iterator[Any]:
        for i in range(0, 45, 10):
            yield (x[i:i + 10], y[i:i + 10]) if labels else x[i:i + 10]

    expected = quiet_apoz(model, x)
    sources: list[Any] = [
        (x, y), (x, y, np.ones(45)), [x], generator(True), generator(False),
        Batches(x, y, 11), [x[:20], x[20:]], [(x[:20], y[:20]), (x[20:], y[20:])],
    ]
    for data in sources:
        assert_same(expected, quiet_apoz(model, data))


def test_tf_data_agrees() -> None:
    tf = pytest.importorskip("tensorflow")
    model = cnn()
    x = integer_data((10, 10, 3), n=45)
    y = np.arange(45) % 3
    expected = quiet_apoz(model, x)
    for ds in (tf.data.Dataset.from_tensor_slices((x, y)).batch(8),
               tf.data.Dataset.from_tensor_slices(x).batch(45),
               tf.data.Dataset.from_tensor_slices(x).batch(16).filter(lambda b: True)):
        assert_same(expected, quiet_apoz(model, ds))
    forever = tf.data.Dataset.from_tensor_slices(x).batch(9).repeat()
    with pytest.raises(ValueError, match=r"repeats forever.*steps"):
        quiet_apoz(model, forever)
    assert_same(expected, quiet_apoz(model, forever, steps=5))


def test_steps_limits_the_batches() -> None:
    model = cnn()
    x = integer_data((10, 10, 3))
    expected = quiet_apoz(model, x[:20])
    assert_same(expected, quiet_apoz(model, x, batch_size=10, steps=2))
    endless = (x[i % 4 * 10:(i % 4 + 1) * 10] for i in itertools.count())
    assert_same(expected, quiet_apoz(model, endless, steps=2))


def test_multi_input_models() -> None:
    a, b = keras.Input((4,), name="a"), keras.Input((3,), name="b")
    hidden = L.Dense(6, activation="relu", name="fc")(L.Concatenate()([a, b]))
    out = L.Dense(2, name="out")(hidden)
    listed = integer_weights(keras.Model([a, b], out))
    keyed = keras.Model({"a": a, "b": b}, out)
    xa, xb = integer_data((4,)), integer_data((3,), seed=2)
    acts = keras.Model([a, b], hidden).predict([xa, xb], verbose=0)
    zeros = (acts == 0).sum(axis=0)
    y = np.zeros(N)
    for model, data in [(listed, [xa, xb]), (listed, ([xa, xb], y)), (listed, (xa, xb)),
                        (listed, [([xa[:15], xb[:15]], y[:15]), ([xa[15:], xb[15:]], y[15:])]),
                        (keyed, {"a": xa, "b": xb}), (keyed, ({"a": xa, "b": xb}, y))]:
        report = get_apoz(model, data, ["fc"], batch_size=16)
        np.testing.assert_array_equal(report.counts["fc"].zeros, zeros)
        assert report.counts["fc"].total == N


# --------------------------------------------------------------------------------------------
# Errors, warnings, arguments
# --------------------------------------------------------------------------------------------


def test_layer_without_relu_downstream() -> None:
    model = cnn()
    x = integer_data((10, 10, 3))
    with pytest.raises(PruneError, match=r"'out' \(Dense\).*model output"):
        get_apoz(model, x, ["conv1", "out"])
    with pytest.warns(ApozWarning, match=r"1 layer \('out'\)") as record:
        report = get_apoz(model, x)
    assert record[0].filename == __file__  # points at the caller
    assert "out" not in report and list(report) == list(MEASURED)


def test_branching_and_merging_chains_are_refused() -> None:
    inp = keras.Input((5,))
    lin = L.Dense(4, name="lin")(inp)
    branch = L.Dense(4, activation="relu", name="branch")(inp)
    merged = L.ReLU(name="merged_relu")(L.Add(name="add")([lin, branch]))
    model = keras.Model(inp, L.Dense(2, name="out")(merged))
    with pytest.raises(PruneError, match=r"'add' \(Add\), which has several inputs"):
        get_apoz(model, integer_data((5,)), ["lin"])


def test_nested_and_shared_sites_are_refused() -> None:
    inner = keras.Sequential([keras.Input((6,)), L.Dense(5, activation="relu", name="fc")],
                             name="inner")
    inp = keras.Input((6,))
    outer = keras.Model(inp, L.Dense(2, name="head")(inner(inp)))
    x = integer_data((6,))
    with pytest.raises(PruneError, match=r"'inner/fc'.*nested model"):
        get_apoz(outer, x, ["fc"])
    with pytest.raises(PruneError, match=r"no layer of the model can be measured"):
        get_apoz(outer, x)
    # Measuring the nested model itself works.
    assert list(get_apoz(inner, x, ["fc"])) == ["fc"]

    relu = L.ReLU(name="shared_relu")
    a = relu(L.Dense(4, name="d1")(inp))
    b = relu(L.Dense(4, name="d2")(inp))
    shared = keras.Model(inp, L.Dense(2, name="out")(L.Add()([a, b])))
    with pytest.raises(PruneError, match=r"'d1'.*'shared_relu'.*shared \(called 2 times\)"):
        get_apoz(shared, x, ["d1"])
    dense = L.Dense(6, activation="relu", name="twice")
    twice = keras.Model(inp, L.Dense(2, name="out")(dense(dense(inp))))
    with pytest.raises(PruneError, match=r"'twice'.*shared"):
        get_apoz(twice, x, ["twice"])


def test_layer_references() -> None:
    model = cnn()
    x = integer_data((10, 10, 3))
    by_name = get_apoz(model, x, "conv2")
    assert_same(by_name, get_apoz(model, x, [model.get_layer("conv2")]))
    assert_same(by_name, get_apoz(model, x, [2]))  # model.layers[0] is the InputLayer
    with pytest.raises(PruneError, match=r"no layer named 'conv9'"):
        get_apoz(model, x, ["conv9"])
    with pytest.raises(PruneError, match=r"'bn' \(BatchNormalization\) has no neurons"):
        get_apoz(model, x, ["bn"])


def test_nan_in_the_data_is_found_on_the_host() -> None:
    """TensorFlow's graph mode fuses conv1's Conv2D + bias + ReLU (oneDNN), and the fused ReLU
    turns NaN into 0: the data are checked on the host, before each batch runs."""
    model = cnn()
    x = integer_data((10, 10, 3))
    x[17, 4, 4, 0] = np.nan
    with pytest.raises(ValueError, match=r"^data holds NaN: 1 of the 16 samples of batch 2 "):
        quiet_apoz(model, x, batch_size=16)
    batches = [x[:16], (x[16:32], np.zeros(16))]
    with pytest.raises(ValueError, match=r"^data holds NaN: 1 of the 16 samples of batch 2 "):
        quiet_apoz(model, iter(batches))


def test_nan_in_the_weights_is_found_before_the_pass() -> None:
    model = cnn()
    kernel, bias = model.get_layer("conv3").get_weights()
    bias[2] = np.nan
    model.get_layer("conv3").set_weights([kernel, bias])
    read: list[int] = []

    def batches() -> Iterator[np.ndarray]:
        for i in range(3):
            read.append(i)
            yield integer_data((10, 10, 3), n=8, seed=i)

    with pytest.raises(ValueError, match=r"weights of model .* hold NaN: 'conv3/bias' has 1 "
                                         r"NaN of its 4 values"):
        quiet_apoz(model, batches())
    assert read == [0]  # only the first batch was read (and checked), none was run


def test_nan_made_inside_the_network_is_found_in_the_pass() -> None:
    """Finite weights, data with an inf: the convolution makes inf - inf = NaN, which the
    ReLU after the padding passes on (no backend fuses the two), so the in-graph check sees
    it. (A NaN made inside a Conv/Dense whose ReLU TensorFlow fuses into it becomes 0 there,
    and cannot be seen from outside: documented in get_apoz.)"""
    inp = keras.Input((4, 1))
    conv = L.Conv1D(2, 2, name="conv")(inp)
    relu = L.ReLU(name="relu")(L.ZeroPadding1D(1, name="pad")(conv))
    model = keras.Model(inp, L.Dense(1, name="out")(L.Flatten()(relu)))
    kernel = np.ones((2, 1, 2), "float32")
    kernel[1, 0, 0] = -1.0
    model.get_layer("conv").set_weights([kernel, np.zeros(2, "float32")])
    x = integer_data((4, 1), n=6)
    np.testing.assert_array_equal(get_apoz(model, x, ["conv"]).counts["conv"].total, 6 * 5)
    x[4, 1:3, 0] = np.inf  # channel 0 computes x[t] - x[t + 1]: inf - inf at t = 1
    with pytest.raises(ValueError, match=r"layer 'relu' \(measuring 'conv'\) contain NaN in 1 "
                                         r"of the 6 samples of batch 1 of data, with no NaN in "
                                         r"the data or the weights"):
        get_apoz(model, x, ["conv"])


def test_argument_checks() -> None:
    model = cnn()
    x = integer_data((10, 10, 3))
    for kwargs, match in [({"batch_size": 0}, "batch_size"), ({"steps": 0}, "steps"),
                          ({"verbose": 3}, "verbose"), ({"layers": []}, "layers is empty")]:
        with pytest.raises(ValueError, match=match):
            get_apoz(model, x, **kwargs)
    with pytest.raises(ValueError, match=r"empty"):
        quiet_apoz(model, x[:0])
    with pytest.raises(ValueError, match=r"empty"):
        quiet_apoz(model, iter([]))
    with pytest.raises(TypeError, match=r"cannot read data of type int"):
        quiet_apoz(model, 3)

    def never() -> Iterator[Any]:
        raise AssertionError("the data was read before the parameters were checked")
        yield x

    with pytest.raises(ValueError, match=r"requires cutoff"):
        high_apoz(model, never(), method="absolute")


def test_bad_data_gives_one_clear_error_before_the_pass() -> None:
    """Issue 9, item 10: each error names the argument and the fix, never a model of ours,
    and comes before any batch runs (the counter layer counts every sample that runs)."""
    model = cnn(counter=True)
    counter = model.get_layer("counter")
    x = integer_data((10, 10, 3))
    y = np.arange(N) % 3
    cases: list[tuple[Any, type[Exception], str]] = [
        (x.tolist(), TypeError, r"^data is a Python list of numbers: pass it as a NumPy "
                                r"array"),
        ("images.npz", TypeError, r"^data is a str"),
        (x[:, :8], ValueError, r"^data: the input has shape \(40, 8, 10, 3\), but the model "
                               r"takes data of shape \(None, 10, 10, 3\)"),
        (x[..., 0], ValueError, r"^data: the input has shape \(40, 10, 10\).*lacks an axis"),
        (x[0], ValueError, r"^data: the input has shape \(10, 10, 3\).*the sample axis is "
                           r"missing"),
        ([x, y], ValueError, r"^data, batch 2: the input has shape \(40,\).*are these labels\? "
                             r"pass labels as the second item of a tuple \(x, y\)"),
        ({"images": x}, ValueError, r"^data: the inputs are a dict with keys \['images'\], but "
                                    r"the model's inputs are \['image'\]: missing 'image', "
                                    r"unknown 'images' \(did you mean 'image'\?\)"),
        (x.astype(str), TypeError, r"^data: the input holds <U\d+ values, but the model "
                                   r"takes float32"),
        (iter([x[:20], x[20:, :9]]), ValueError, r"^data, batch 2: the input has shape "
                                                 r"\(20, 9, 10, 3\)"),
    ]
    for data, error, match in cases:
        with pytest.raises(error, match=match):
            quiet_apoz(model, data)
    # The last case ran its first batch; nothing else ran.
    assert float(counter.seen.numpy()) == 20
    assert list(quiet_apoz(model, {"image": x})) == list(MEASURED)


def test_multi_input_data_is_checked() -> None:
    a, b = keras.Input((4,), name="a"), keras.Input((3,), name="b")
    out = L.Dense(2, name="out")(L.Dense(6, activation="relu", name="fc")(
        L.Concatenate()([a, b])))
    keyed = keras.Model({"a": a, "b": b}, out)
    xa, xb = integer_data((4,)), integer_data((3,), seed=2)
    with pytest.raises(ValueError, match=r"^data: the inputs are a dict with keys \['a', 'c'\], "
                                         r"but the model's inputs are \['a', 'b'\]: missing "
                                         r"'b', unknown 'c'"):
        get_apoz(keyed, {"a": xa, "c": xb}, ["fc"])
    with pytest.raises(ValueError, match=r"^data: input 'b' has shape \(40, 4\), but the "
                                         r"model takes data of shape \(None, 3\)"):
        get_apoz(keyed, {"a": xa, "b": xa}, ["fc"])
    with pytest.raises(ValueError, match=r"^data: one array for a model with 2 inputs"):
        get_apoz(keyed, xa, ["fc"])
    with pytest.raises(ValueError, match=r"^data: the arrays have different numbers of samples "
                                         r"\(inputs \[30, 40\]\)"):
        get_apoz(keyed, [xa[:30], xb], ["fc"])
    expected = get_apoz(keyed, {"a": xa, "b": xb}, ["fc"])
    with pytest.warns(UserWarning, match=r"no input named 'extra'"):
        extra = get_apoz(keyed, {"a": xa, "b": xb, "extra": xa}, ["fc"])
    assert extra.counts["fc"] == expected.counts["fc"]


def test_high_apoz_methods() -> None:
    model = cnn()
    x = integer_data((10, 10, 3))
    report = quiet_apoz(model, x)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ApozWarning)
        top = high_apoz(model, x, method="top", fraction=0.5)
        cut = high_apoz(model, x, ["conv1", "fc"], method="absolute", cutoff=0.3)
    assert list(top) == list(report)
    for name, values in report.items():
        assert len(top[name]) == len(values) // 2
        assert values[top[name]].min() >= np.delete(values, top[name]).max()
    assert list(cut) == ["conv1", "fc"]
    for name, idx in cut.items():
        expected = np.flatnonzero(report[name] > 0.3)
        if len(expected) == len(report[name]):
            expected = np.delete(expected, np.argmin(report[name]))
        np.testing.assert_array_equal(idx, expected)


def test_verbose(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    model = cnn()
    x = integer_data((10, 10, 3))
    quiet_apoz(model, x, verbose=0)
    monkeypatch.setattr(keras_apoz, "_AUTO_DELAY", 1e6)
    quiet_apoz(model, x)  # "auto": a short run is silent
    assert capsys.readouterr().out == ""
    monkeypatch.setattr(keras_apoz, "_AUTO_DELAY", 0.0)
    quiet_apoz(model, x, batch_size=10)  # "auto": a long one shows the bar
    assert "4/4" in capsys.readouterr().out
    quiet_apoz(model, x, batch_size=10, verbose=1)
    out = capsys.readouterr().out
    assert "4/4" in out and "batch" in out
    assert out.count("4/4") == 1


def test_the_model_is_not_changed() -> None:
    model = cnn()
    x = integer_data((10, 10, 3))
    config = model.get_config()
    weights = [w.copy() for w in model.get_weights()]
    before = model.predict(x, verbose=0)
    found = high_apoz(model, x, ["conv1", "conv2", "fc"], method="top", fraction=0.25)
    assert model.get_config() == config
    for old, new in zip(weights, model.get_weights(), strict=True):
        np.testing.assert_array_equal(old, new)
    np.testing.assert_array_equal(model.predict(x, verbose=0), before)
    assert len(model.layers) == 12
    assert kerasprune.delete_neurons(model, found).get_layer("conv1").filters == 5


def test_public_spellings() -> None:
    assert kerasprune.get_apoz is get_apoz
    assert kerasprune.high_apoz is high_apoz
    assert kerasprune.identify.high_apoz is high_apoz
    assert kerasprune.identify.get_apoz is get_apoz
    for name in ("ApozReport", "get_apoz", "high_apoz"):
        assert name in adapter.__all__ and hasattr(adapter, name)


# --------------------------------------------------------------------------------------------
# tf.distribute
# --------------------------------------------------------------------------------------------

MIRRORED = textwrap.dedent("""
    import json, sys, warnings
    import tensorflow as tf
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    sys.path.insert(0, sys.argv[1])
    import numpy as np
    import test_apoz_keras as t
    from kerasprune import get_apoz
    warnings.simplefilter("ignore")
    x = t.integer_data((10, 10, 3), n=45)
    single = t.cnn(counter=True)
    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    with strategy.scope():
        mirrored = t.cnn(counter=True)
    mirrored.set_weights(single.get_weights())
    out = {"replicas": strategy.num_replicas_in_sync}
    for name, model in [("single", single), ("mirrored", mirrored)]:
        report = get_apoz(model, x, batch_size=9)  # 45 = 5 * 9, shards of 4 and 5 samples
        out[name + "/seen"] = float(model.get_layer("counter").seen.numpy())
        dataset = tf.data.Dataset.from_tensor_slices(x).batch(7)
        for label, data in [("arrays", x), ("dataset", dataset)]:
            report = get_apoz(model, data, batch_size=7)  # 45 = 6 * 7 + 3: a padded last batch
            counts = {k: [c.zeros.tolist(), c.total] for k, c in report.counts.items()}
            out[name + "/" + label] = counts
    print("RESULT" + json.dumps(out))
""")


@pytest.mark.tensorflow
@pytest.mark.skipif(BACKEND != "tensorflow", reason="tf.distribute needs the TensorFlow backend")
def test_mirrored_strategy_equals_single_device() -> None:
    env = {**os.environ, "KERAS_BACKEND": "tensorflow", "CUDA_VISIBLE_DEVICES": ""}
    proc = subprocess.run([sys.executable, "-c", MIRRORED, str(Path(__file__).parent)],
                          capture_output=True, text=True, env=env, timeout=600, check=False)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT")]
    assert proc.returncode == 0 and lines, proc.stderr[-3000:]
    out = json.loads(lines[-1][len("RESULT"):])
    assert out["replicas"] == 2
    single = out["single/arrays"]
    assert set(single) == set(MEASURED)
    assert out["single/dataset"] == single
    assert out["mirrored/arrays"] == single
    assert out["mirrored/dataset"] == single
    # One call on 45 samples; with two replicas, each sample ran on one of them only (the
    # counter adds the replicas' mean batch size: 45 / 2 in all; 45 if both ran every sample).
    assert out["single/seen"] == 45
    assert out["mirrored/seen"] == 22.5


# --------------------------------------------------------------------------------------------
# The benchmark's worker runs (no speed is asserted)
# --------------------------------------------------------------------------------------------


def test_benchmark_worker_runs() -> None:
    import importlib.util

    script = Path(__file__).resolve().parents[2] / "benchmarks" / "apoz.py"
    spec = importlib.util.spec_from_file_location("kerasprune_bench_apoz", script)
    assert spec is not None and spec.loader is not None
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    apoz_row = bench.worker("lenet", "apoz", 70)
    predict_row = bench.worker("lenet", "predict", 70)
    assert apoz_row["measured"] == 4 and predict_row["measured"] == 0  # conv1-2, fc1-2
    for row in (apoz_row, predict_row):
        assert row["seconds"] > 0 and row["cpu"] >= 0 and row["peak_kib"] >= 0
        assert row["batch_activations"] == apoz_row["batch_activations"] > 0
