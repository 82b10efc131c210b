"""get_stats on Keras models: activation and Taylor statistics against NumPy references.

The activation statistics are checked against a NumPy forward pass (a Dense model) and
against the site's activations reduced in NumPy (a convolution behind a batch norm, both data
formats). The Taylor statistics are checked against an analytic gradient (a linear Dense
model with a mean squared error) and against central finite differences of the loss through
the rest of the network, in float64 (a convolutional model with a smooth tail).
"""

from __future__ import annotations

from typing import Any

import keras
import numpy as np
import pytest
from backends import DATA_FORMATS

import kerasprune
from kerasprune.adapters.keras.stats import StatsReport, get_stats
from kerasprune.core.graph import PruneError
from kerasprune.core.stats import ActivationStats, TaylorStats

L = keras.layers


def _weights(model: keras.Model) -> list[np.ndarray]:
    return [np.array(w) for w in model.get_weights()]


def _unchanged(model: keras.Model, before: list[np.ndarray], config: dict[str, Any]) -> None:
    assert model.get_config() == config
    for a, b in zip(_weights(model), before, strict=True):
        np.testing.assert_array_equal(a, b)


def dense_model(seed: int = 0, dead: int = 2) -> keras.Model:
    """Input(5) -> Dense(6, relu) -> Dense(3); neuron ``dead`` of ``d1`` never fires."""
    model = keras.Sequential([keras.Input((5,)), L.Dense(6, activation="relu", name="d1"),
                              L.Dense(3, name="out")])
    rng = np.random.default_rng(seed)
    kernel = rng.standard_normal((5, 6)).astype("float32")
    bias = rng.uniform(0.1, 0.5, 6).astype("float32")
    kernel[:, dead] = 0.0
    bias[dead] = -1.0
    model.get_layer("d1").set_weights([kernel, bias])
    return model


def test_activation_stats_match_a_numpy_forward_pass() -> None:
    model = dense_model()
    x = np.random.default_rng(1).standard_normal((37, 5)).astype("float32")
    before, config = _weights(model), model.get_config()
    report = get_stats(model, x, "activation", batch_size=8, verbose=0)  # a short last batch
    kernel, bias = model.get_layer("d1").get_weights()
    expected = np.maximum(x.astype(np.float64) @ kernel + bias, 0).mean(axis=0)
    assert isinstance(report, StatsReport) and report.kind == "activation"
    assert list(report) == ["d1"] and report.measured_at == {"d1": "d1"}
    stats = report["d1"]
    assert isinstance(stats, ActivationStats) and stats.count == 37
    np.testing.assert_allclose(report.results()["d1"], expected, rtol=1e-5, atol=1e-7)
    assert int(np.argmin(report.results()["d1"])) == 2 and report.results()["d1"][2] == 0
    _unchanged(model, before, config)


@pytest.mark.parametrize("data_format", DATA_FORMATS)
def test_activation_stats_at_the_end_of_the_channel_chain(data_format: str) -> None:
    """Conv -> BatchNorm -> ReLU is measured after the ReLU, in either data format."""
    shape = (6, 6, 2) if data_format == "channels_last" else (2, 6, 6)
    inputs = keras.Input(shape)
    h = L.Conv2D(4, 3, padding="same", data_format=data_format, name="conv")(inputs)
    h = L.BatchNormalization(axis=-1 if data_format == "channels_last" else 1, name="bn")(h)
    h = L.ReLU(name="relu")(h)
    h = L.GlobalAveragePooling2D(data_format=data_format, name="gap")(h)
    model = keras.Model(inputs, L.Dense(3, name="out")(h))
    x = np.random.default_rng(2).standard_normal((21, *shape)).astype("float32")
    report = get_stats(model, x, "activation", batch_size=10, verbose=0)
    assert report.measured_at == {"conv": "relu"}
    site = keras.Model(model.input, model.get_layer("relu").output)(x, training=False)
    a = np.abs(keras.ops.convert_to_numpy(site).astype(np.float64))
    axis = 3 if data_format == "channels_last" else 1
    expected = np.moveaxis(a, axis, -1).reshape(-1, 4).mean(axis=0)
    np.testing.assert_allclose(report.results()["conv"], expected, rtol=1e-5)
    assert report["conv"].count == 21 * 36


def test_taylor_stats_match_the_analytic_gradient() -> None:
    """Linear h = x W1 + b1, y = h W2 + b2, loss mse = mean_k (y_k - t_k)^2 per sample:
    dL/dh = 2 (y - t) W2^T / K."""
    model = keras.Sequential([keras.Input((4,)), L.Dense(5, name="h"), L.Dense(2, name="out")])
    rng = np.random.default_rng(3)
    model.set_weights([rng.standard_normal(w.shape).astype("float32")
                       for w in model.get_weights()])
    model.compile("sgd", "mse")
    x = rng.standard_normal((19, 4)).astype("float32")
    t = rng.standard_normal((19, 2)).astype("float32")
    report = get_stats(model, (x, t), "taylor", batch_size=8, verbose=0)
    w1, b1 = (w.astype(np.float64) for w in model.get_layer("h").get_weights())
    w2, b2 = (w.astype(np.float64) for w in model.get_layer("out").get_weights())
    h = x @ w1 + b1
    y = h @ w2 + b2
    grad = 2 * (y - t) @ w2.T / 2
    expected = np.abs(h * grad).mean(axis=0)
    assert isinstance(report["h"], TaylorStats) and report["h"].count == 19
    np.testing.assert_allclose(report.results()["h"], expected, rtol=1e-4, atol=1e-7)


def _conv_same(x: np.ndarray, kernel: np.ndarray, bias: np.ndarray) -> np.ndarray:
    """A 3x3 'same' convolution in float64 NumPy: (batch, h, w, cin) -> (batch, h, w, cout)."""
    padded = np.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
    h, w = x.shape[1:3]
    out = np.zeros((x.shape[0], h, w, kernel.shape[3]))
    for i in range(3):
        for j in range(3):
            out += np.einsum("bhwc,cd->bhwd", padded[:, i:i + h, j:j + w], kernel[i, j])
    return out + bias


def test_taylor_stats_match_finite_differences() -> None:
    """A convolution's Taylor terms, |mean over positions of a * dL/da| per sample, with
    dL/da by central differences of the loss through the rest of the network (conv, tanh,
    pooling, dense), computed in float64 NumPy."""
    inputs = keras.Input((5, 5, 2))
    a = L.Conv2D(3, 3, padding="same", activation="tanh", name="c1")(inputs)
    h = L.Conv2D(2, 3, padding="same", activation="tanh", name="c2")(a)
    h = L.GlobalAveragePooling2D(name="gap")(h)
    model = keras.Model(inputs, L.Dense(2, name="out")(h))
    model.compile("sgd", keras.losses.MeanSquaredError())
    rng = np.random.default_rng(4)
    x = rng.standard_normal((3, 5, 5, 2)).astype("float32")
    t = rng.standard_normal((3, 2))
    report = get_stats(model, (x, t), "taylor", layers="c1", verbose=0)

    site = keras.ops.convert_to_numpy(keras.Model(inputs, a)(x, training=False))
    site = site.astype(np.float64)
    k2, b2 = (w.astype(np.float64) for w in model.get_layer("c2").get_weights())
    w3, b3 = (w.astype(np.float64) for w in model.get_layer("out").get_weights())

    def loss(acts: np.ndarray) -> float:
        y = np.tanh(_conv_same(acts, k2, b2)).mean(axis=(1, 2)) @ w3 + b3
        return float(((y - t) ** 2).mean(axis=1).sum())

    grad = np.zeros_like(site)
    step = 1e-6
    for index in np.ndindex(site.shape):
        up, down = site.copy(), site.copy()
        up[index] += step
        down[index] -= step
        grad[index] = (loss(up) - loss(down)) / (2 * step)
    expected = np.abs((site * grad).mean(axis=(1, 2))).mean(axis=0)
    np.testing.assert_allclose(report.results()["c1"], expected, rtol=1e-4, atol=1e-8)


def test_taylor_ranks_a_dead_neuron_last_and_a_loss_can_be_given() -> None:
    model = dense_model(dead=4)  # not compiled: the loss is an argument
    rng = np.random.default_rng(5)
    x = rng.standard_normal((24, 5)).astype("float32")
    y = rng.integers(0, 3, 24)
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    report = get_stats(model, (x, y), "taylor", loss=loss, verbose=0)
    values = report.results()["d1"]
    assert values[4] == 0 and (np.delete(values, 4) > 0).all()


def test_statistics_stream_and_merge_exactly() -> None:
    """Two shards merged give the statistics of one pass: exact counts, sums to float64
    rounding."""
    model = dense_model()
    model.compile("sgd", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    rng = np.random.default_rng(6)
    x = rng.standard_normal((30, 5)).astype("float32")
    y = rng.integers(0, 3, 30)
    for kind in ("activation", "taylor"):
        whole = get_stats(model, (x, y), kind, batch_size=30, verbose=0)
        parts = [get_stats(model, (x[s], y[s]), kind, batch_size=7, verbose=0)
                 for s in (slice(0, 11), slice(11, 30))]
        merged = parts[0].merge(parts[1])
        assert merged["d1"].count == whole["d1"].count
        np.testing.assert_allclose(merged["d1"].sums, whole["d1"].sums, rtol=1e-6)


def test_data_sources_and_apoz_through_get_stats() -> None:
    model = dense_model()
    x = np.random.default_rng(7).standard_normal((20, 5)).astype("float32")
    arrays = get_stats(model, x, "activation", verbose=0)
    batches = get_stats(model, (b for b in (x[:9], x[9:])), "activation", verbose=0)
    np.testing.assert_allclose(arrays["d1"].sums, batches["d1"].sums, rtol=1e-6)
    apoz = get_stats(model, x, "apoz", layers="d1", verbose=0)
    assert apoz.kind == "apoz" and apoz.results()["d1"][2] == 1.0
    np.testing.assert_allclose(apoz.results()["d1"], kerasprune.get_apoz(model, x, "d1")["d1"])


def test_layers_that_cannot_be_measured_are_skipped_or_named() -> None:
    """A shared layer's output is ambiguous: left out by default, an error when named."""
    inputs = keras.Input((4,))
    shared = L.Dense(4, activation="relu", name="shared")
    h = L.Dense(4, activation="relu", name="first")(inputs)
    h2 = L.Dense(4, activation="relu", name="second")(inputs)
    out = L.Dense(2, name="out")(L.Add(name="add")([shared(h), shared(h2)]))
    model = keras.Model(inputs, out)
    x = np.ones((3, 4), "float32")
    report = get_stats(model, x, "activation", verbose=0)
    assert "first" in report and "shared" not in report and "shared" in report.skipped
    with pytest.raises(PruneError, match="shared"):
        get_stats(model, x, "activation", layers="shared", verbose=0)


@pytest.mark.parametrize("call, error, match", [
    (lambda m, x, y: get_stats(m, x, "l1"), ValueError, "reads no data"),
    (lambda m, x, y: get_stats(m, x, "nope"), ValueError, "unknown criterion 'nope'"),
    (lambda m, x, y: get_stats(m, x, "taylor", loss="mse"), ValueError, "no labels"),
    (lambda m, x, y: get_stats(m, (x, y), "taylor"), ValueError, "not compiled"),
    (lambda m, x, y: get_stats(m, (x, y), "taylor", loss="no_such_loss"), ValueError,
     "unknown loss"),
    (lambda m, x, y: get_stats(m, x[:, :3], "activation"), ValueError,
     r"data: the input has shape \(8, 3\)"),
    (lambda m, x, y: get_stats(m, np.full_like(x, np.nan), "activation"), ValueError,
     "data holds NaN"),
    (lambda m, x, y: get_stats(m, x, "activation", layers="nope"), PruneError, "no layer"),
    (lambda m, x, y: get_stats(m, x, "activation", batch_size=0), ValueError, "batch_size"),
])
def test_bad_input_is_refused_before_anything_runs(call: Any, error: type, match: str) -> None:
    model = dense_model()
    before, config = _weights(model), model.get_config()
    x = np.ones((8, 5), "float32")
    with pytest.raises(error, match=match):
        call(model, x, np.zeros(8, "int64"))
    _unchanged(model, before, config)
