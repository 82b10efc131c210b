"""Sequential models: random stacks against the oracle, and what pruning must preserve.

- a Hypothesis test builds random Sequential stacks of the supported layer kinds and deletes
  random neurons of a random layer, checking the oracle (see ``oracle.py``);
- the pruned model keeps every layer's configuration except the changed count, its names,
  trainable flags and dtype policies, stays Sequential and is uncompiled;
- the pruned model and the original share nothing: pruning does not change the original,
  and training either does not change the other;
- a pruned model survives a ``.keras`` round trip.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import keras
import numpy as np
import pytest
from backends import BACKEND, as_numpy
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from oracle import randomize
from test_layer_kinds import equivalent, sequential

import kerasprune
from kerasprune.core.graph import PruneError
from kerasprune.core.surgery import neuron_count

L = keras.layers

FORMATS = ["channels_last"] if BACKEND == "tensorflow" else ["channels_last", "channels_first"]
"""Data formats the backend can run (TensorFlow on the CPU has no channels_first convs)."""

# --- random stacks ---------------------------------------------------------------------------


Spec = tuple[str, dict[str, Any]]
"""A layer to build: its class name in ``keras.layers`` and its arguments.

Strategies draw specs, not layers: Keras seeds new layers from the global ``random`` module,
which Hypothesis forbids inside strategies; specs also print readably in a failing example.
"""


class Stack:
    """A stack being drawn: its layers, and the layers whose neurons may be deleted."""

    def __init__(self, rank: int, data_format: str) -> None:
        self.rank = rank
        self.data_format = data_format
        self.specs: list[Spec] = []
        self.spatial = {0: 0, 1: 8, 2: 6}[rank]
        self.channels = 2
        # (position, neuron count, depthwise multiplier or 0 for a layer making its own neurons)
        self.targets: list[tuple[int, int, int]] = []

    @property
    def first(self) -> bool:
        return self.data_format == "channels_first"

    def input_shape(self) -> tuple[int, ...]:
        if self.rank == 0:
            return (4,)
        spatial = (self.spatial,) * self.rank
        return (2, *spatial) if self.first else (*spatial, 2)

    def add(self, kind: str, channels: int | None = None, target: int | None = None,
            **kwargs: Any) -> None:
        if channels is not None:
            self.channels = channels
        if target is not None:
            self.targets.append((len(self.specs), self.channels, target))
        self.specs.append((kind, kwargs))


def _producer(draw: Any, stack: Stack) -> None:
    width = draw(st.integers(2, 5))
    r, fmt = stack.rank, stack.data_format
    if r == 0:
        kind = "Dense"
    else:
        kinds = ["Conv", "Conv", "SeparableConv", "Transpose"] + ([] if stack.first else
                                                                   ["Dense"])
        kind = draw(st.sampled_from(kinds))
    common = {"activation": draw(st.sampled_from([None, "relu", "tanh"])),
              "use_bias": draw(st.booleans())}
    if kind == "Dense":
        stack.add("Dense", width, 0, units=width, **common)
        return
    common.update(filters=width, kernel_size=draw(st.integers(1, 3)), padding="same",
                  data_format=fmt)
    if kind == "Conv":
        stack.add(f"Conv{r}D", width, 0, **common)
    elif kind == "SeparableConv":
        stack.add(f"SeparableConv{r}D", width, 0, depth_multiplier=draw(st.integers(1, 2)),
                  **common)
    else:
        stack.add(f"Conv{r}DTranspose", width, 0, **common)


_ELEMENTWISE = ["Activation", "ReLU", "LeakyReLU", "ELU", "PReLU", "Dropout", "GaussianNoise",
                "GaussianDropout", "AlphaDropout", "ActivityRegularization",
                "BatchNormalization"]


def _elementwise(draw: Any, stack: Stack) -> None:
    kind = draw(st.sampled_from(_ELEMENTWISE))
    if kind == "Activation":
        stack.add(kind, activation=draw(st.sampled_from(["relu", "tanh", "sigmoid", "swish"])))
    elif kind == "PReLU" and stack.rank and draw(st.booleans()):
        start = 2 if stack.first else 1
        stack.add(kind, shared_axes=list(range(start, start + stack.rank)))
    elif kind == "BatchNormalization":
        stack.add(kind, axis=1 if stack.first else -1, center=draw(st.booleans()),
                  scale=draw(st.booleans()))
    elif kind == "GaussianNoise":
        stack.add(kind, stddev=0.3, seed=1)
    elif kind in ("Dropout", "GaussianDropout", "AlphaDropout"):
        stack.add(kind, rate=0.3, seed=1)
    elif kind == "ActivityRegularization":
        stack.add(kind, l2=0.01)
    else:
        stack.add(kind)


def _spatial(draw: Any, stack: Stack) -> None:
    r, s = stack.rank, stack.spatial
    options = ["SpatialDropout", "ZeroPadding", "DepthwiseConv"]
    if s >= 4:
        options += ["MaxPooling", "AveragePooling"]
    if s >= 5:
        options.append("Cropping")
    if s <= 6:
        options.append("UpSampling")
    channels_last_only = ("SpatialDropout", "Cropping", "UpSampling")
    if r == 1 and stack.first:  # these 1D layers have no data_format
        options = [o for o in options if o not in channels_last_only]
    choice = draw(st.sampled_from(options))
    kind = f"{choice}{r}D"
    fmt = {} if r == 1 and choice in channels_last_only else {"data_format": stack.data_format}
    if choice == "SpatialDropout":
        stack.add(kind, rate=0.3, seed=1, **fmt)
    elif choice == "ZeroPadding":
        stack.add(kind, padding=1, **fmt)
        stack.spatial = s + 2
    elif choice in ("MaxPooling", "AveragePooling"):
        stack.add(kind, pool_size=2, **fmt)
        stack.spatial = s // 2
    elif choice == "Cropping":
        stack.add(kind, cropping=1, **fmt)
        stack.spatial = s - 2
    elif choice == "UpSampling":
        stack.add(kind, size=2, **fmt)
        stack.spatial = s * 2
    else:
        m = draw(st.integers(1, 2))
        stack.add(kind, stack.channels * m, m, kernel_size=draw(st.integers(1, 3)),
                  padding="same", depth_multiplier=m, **fmt)


def _pass_through(draw: Any, stack: Stack, spatial: bool) -> None:
    for _ in range(draw(st.integers(0, 2))):
        if spatial and draw(st.booleans()):
            _spatial(draw, stack)
        else:
            _elementwise(draw, stack)


Plan = tuple[tuple[int, ...], list[Spec], int, list[int]]
"""A random model and request: input shape, layers, target position, neurons to delete."""


@st.composite
def plans(draw: Any) -> Plan:
    """A random Sequential stack, one of its layers, and neurons of that layer to delete."""
    rank = draw(st.sampled_from([0, 1, 2]))
    stack = Stack(rank, draw(st.sampled_from(FORMATS)) if rank else "channels_last")
    input_shape = stack.input_shape()
    for _ in range(draw(st.integers(1, 3))):
        _producer(draw, stack)
        _pass_through(draw, stack, spatial=rank > 0)
    if rank:
        head = draw(st.sampled_from(["Flatten", "GlobalAveragePooling", "GlobalMaxPooling"]))
        if head == "Flatten":
            stack.add("Flatten", data_format=draw(st.sampled_from(FORMATS)))
        else:
            stack.add(f"{head}{rank}D", data_format=stack.data_format)
        stack.rank = 0
        if draw(st.booleans()):
            _producer(draw, stack)
            _pass_through(draw, stack, spatial=False)
    stack.add("Dense", units=2)

    position, n, multiplier = draw(st.sampled_from(stack.targets))
    if multiplier:  # a depthwise layer: outputs c*m .. c*m+m-1 all go with input channel c
        groups = draw(st.lists(st.integers(0, n // multiplier - 1), min_size=1,
                               max_size=n // multiplier - 1, unique=True))
        neurons = [g * multiplier + draw(st.integers(0, multiplier - 1)) for g in groups]
    else:
        neurons = draw(st.lists(st.integers(0, n - 1), min_size=1, max_size=n - 1, unique=True))
    if draw(st.booleans()):  # negative indices count from the end
        neurons = [i - n if k % 2 else i for k, i in enumerate(neurons)]
    return input_shape, stack.specs, position, neurons


@settings(max_examples=25 if BACKEND == "tensorflow" else 20, deadline=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(plan=plans(), seed=st.integers(0, 2**16))
def test_random_sequential_stacks(plan: Plan, seed: int) -> None:
    input_shape, specs, position, neurons = plan
    model = sequential(input_shape, *(getattr(L, kind)(**kwargs) for kind, kwargs in specs),
                       seed=seed)
    layer = model.layers[position]
    try:
        deletion = kerasprune.dependency_group(model, layer, neurons)
    except PruneError as err:
        # depthwise layers in a row can widen a request to every channel of a layer
        assume("would delete all" not in str(err))
        raise
    pruned = equivalent(model, layer, neurons, nonvacuous=False)
    assert isinstance(pruned, keras.Sequential)
    assert [type(x) for x in pruned.layers] == [type(x) for x in model.layers]
    after = kerasprune.to_graph(pruned).graph
    for name, gone in deletion.neurons().items():
        assert neuron_count(after, name) == neuron_count(deletion.graph, name) - len(gone)


# --- what is preserved -----------------------------------------------------------------------


@functools.cache
def rich_model(dtype: str = "float32") -> keras.Sequential:
    """Layers with non-default activations, initializers, regularizers, constraints, flags.

    Built once per dtype (random initializers are slow to compile on JAX) and shared: the
    tests only prune it, which must not change it (``test_pruning_does_not_change...``).
    """
    model = keras.Sequential([
        keras.Input((8, 8, 3)),
        L.Conv2D(6, 3, padding="same", activation="relu", use_bias=False,
                 kernel_initializer=keras.initializers.HeNormal(seed=1),
                 kernel_regularizer=keras.regularizers.L2(1e-3),
                 kernel_constraint=keras.constraints.MaxNorm(2.0), name="conv2d_1", dtype=dtype),
        L.BatchNormalization(momentum=0.9, epsilon=1e-2,
                             gamma_initializer=keras.initializers.Constant(0.9),
                             beta_regularizer=keras.regularizers.L1(1e-4), name="bn",
                             dtype=dtype),
        L.Conv2D(4, 3, activation="elu", name="conv2d_2", trainable=False,
                 bias_initializer=keras.initializers.Constant(0.1),
                 bias_regularizer=keras.regularizers.L1(1e-2),
                 bias_constraint=keras.constraints.NonNeg(),
                 activity_regularizer=keras.regularizers.L2(1e-4), dtype=dtype),
        L.MaxPooling2D(name="pool", dtype=dtype),
        L.Flatten(name="flatten", dtype=dtype),
        L.Dense(5, activation="tanh", kernel_initializer=keras.initializers.Constant(0.05),
                name="dense_1", dtype=dtype),
        L.Dropout(0.25, seed=3, name="dropout", dtype=dtype),
        L.Dense(2, name="out", dtype=dtype),
    ], name="rich")
    return randomize(model)


CHANGED = {"conv2d_1": "filters", "dense_1": "units"}


@pytest.mark.parametrize("dtype", ["float32", "mixed_float16"])
@pytest.mark.parametrize("target", list(CHANGED))
def test_configs_are_preserved(target: str, dtype: str) -> None:
    model = rich_model(dtype)
    count = getattr(model.get_layer(target), CHANGED[target])
    atol = 1e-5 if dtype == "float32" else 5e-2
    pruned = equivalent(model, target, [0, 2, -1], atol=atol)
    assert type(pruned) is keras.Sequential
    assert pruned.name == model.name
    assert [x.name for x in pruned.layers] == [x.name for x in model.layers]
    assert pruned.get_layer("conv2d_1") is not None
    for old, new in zip(model.layers, pruned.layers, strict=True):
        want, got = old.get_config(), new.get_config()
        if old.name == target:
            assert got[CHANGED[target]] == count - 3
            got[CHANGED[target]] = count
        assert got == want, old.name
        assert new.trainable == old.trainable, old.name
        assert new.dtype_policy.name == old.dtype_policy.name == dtype
        assert [w.dtype for w in new.weights] == [w.dtype for w in old.weights]
        assert [w.trainable for w in new.weights] == [w.trainable for w in old.weights]
        for attr in ("kernel_constraint", "bias_constraint", "kernel_regularizer"):
            assert type(getattr(new, attr, None)) is type(getattr(old, attr, None))
    assert len(pruned.trainable_weights) == len(model.trainable_weights)
    assert len(pruned.non_trainable_weights) == len(model.non_trainable_weights)
    assert pruned.get_layer("conv2d_1").bias is None  # use_bias=False: still no bias
    x = np.zeros((2, 8, 8, 3), "float32")
    assert pruned(x).dtype == model(x).dtype
    # the regularizers still contribute their losses
    pruned(x)
    model(x)
    assert len(pruned.losses) == len(model.losses) > 0


def test_initializers_are_the_originals_not_the_rebuild_zeros() -> None:
    model = rich_model()
    pruned = kerasprune.delete_neurons(model, "conv2d_1", [1])
    for name in ("conv2d_1", "conv2d_2", "dense_1", "bn"):
        old, new = model.get_layer(name), pruned.get_layer(name)
        for attr in ("kernel_initializer", "bias_initializer", "gamma_initializer"):
            if hasattr(old, attr):
                assert type(getattr(new, attr)) is type(getattr(old, attr)), (name, attr)
                assert getattr(new, attr).get_config() == getattr(old, attr).get_config()
    assert isinstance(pruned.get_layer("conv2d_1").kernel_initializer,
                      keras.initializers.HeNormal)


def test_result_is_a_new_uncompiled_sequential() -> None:
    model = small_model()
    model.compile(optimizer="adam", loss="mse")
    pruned = kerasprune.delete_neurons(model, "dense", [3])
    assert type(pruned) is keras.Sequential
    assert pruned is not model
    assert not pruned.compiled
    assert getattr(pruned, "optimizer", None) is None
    assert model.compiled  # the original keeps its compilation


def test_several_layers_at_once_and_pruning_twice() -> None:
    model = rich_model()
    both = equivalent(model, {"conv2d_1": [0, 4], "dense_1": [1]}, None)
    assert both.get_layer("conv2d_1").filters == 4
    assert both.get_layer("dense_1").units == 4
    first = kerasprune.delete_neurons(model, "conv2d_1", [0, 4])
    twice = equivalent(first, "dense_1", [1])
    x = np.random.default_rng(5).standard_normal((3, 8, 8, 3)).astype("float32")
    np.testing.assert_allclose(as_numpy(twice(x)), as_numpy(both(x)), atol=1e-5)


# --- independence ---------------------------------------------------------------------------


def _values(model: keras.Model) -> list[np.ndarray]:
    return [keras.ops.convert_to_numpy(w) for w in model.weights]


def _assert_same(a: list[np.ndarray], b: list[np.ndarray]) -> None:
    assert len(a) == len(b)
    for x, y in zip(a, b, strict=True):
        np.testing.assert_array_equal(x, y)


def _changed(a: list[np.ndarray], b: list[np.ndarray]) -> bool:
    return any(x.shape != y.shape or not np.array_equal(x, y) for x, y in zip(a, b, strict=True))


def small_model() -> keras.Sequential:
    return sequential((6, 6, 2), L.Conv2D(4, 3, activation="relu", name="conv"),
                      L.BatchNormalization(name="bn"), L.Flatten(),
                      L.Dense(5, activation="relu", name="dense"), L.Dense(2, name="out"))


def _data(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return (rng.standard_normal((8, 6, 6, 2)).astype("float32"),
            rng.standard_normal((8, 2)).astype("float32"))


def _train_one_step(model: keras.Model, x: np.ndarray, y: np.ndarray) -> None:
    model.compile(optimizer=keras.optimizers.SGD(0.1), loss="mse")
    model.fit(x, y, epochs=1, batch_size=8, verbose=0)


def test_pruning_does_not_change_the_input_model() -> None:
    model = rich_model()
    x = np.random.default_rng(1).standard_normal((3, 8, 8, 3)).astype("float32")
    before, prediction, config = _values(model), as_numpy(model(x)), model.get_config()
    kerasprune.delete_neurons(model, "conv2d_1", [1, 3])
    kerasprune.delete_neurons(model, {"conv2d_2": [0], "dense_1": [4]})
    _assert_same(_values(model), before)
    np.testing.assert_array_equal(as_numpy(model(x)), prediction)
    assert model.get_config() == config
    assert model.get_layer("conv2d_1").filters == 6


def test_no_variable_is_shared() -> None:
    model = small_model()
    pruned = kerasprune.delete_neurons(model, "conv", [0])
    assert not {id(v) for v in model.weights} & {id(v) for v in pruned.weights}
    assert not {id(x) for x in model.layers} & {id(x) for x in pruned.layers}


def test_training_the_pruned_model_leaves_the_original_alone() -> None:
    model = small_model()
    x, y = _data()
    before, prediction = _values(model), as_numpy(model(x))
    pruned = kerasprune.delete_neurons(model, "conv", [1])
    pruned_before = _values(pruned)
    _train_one_step(pruned, x, y)
    assert _changed(pruned_before, _values(pruned))  # training did something
    _assert_same(_values(model), before)
    np.testing.assert_array_equal(as_numpy(model(x)), prediction)


def test_training_the_original_leaves_the_pruned_model_alone() -> None:
    model = small_model()
    x, y = _data(1)
    pruned = kerasprune.delete_neurons(model, "dense", [0, 2])
    pruned_before, pruned_prediction = _values(pruned), as_numpy(pruned(x))
    before = _values(model)
    _train_one_step(model, x, y)
    assert _changed(before, _values(model))
    _assert_same(_values(pruned), pruned_before)
    np.testing.assert_array_equal(as_numpy(pruned(x)), pruned_prediction)


# --- saving ---------------------------------------------------------------------------------


@pytest.mark.parametrize("target", ["conv2d_1", "dense_1"])
def test_keras_file_round_trip(tmp_path: Path, target: str) -> None:
    pruned = kerasprune.delete_neurons(rich_model(), target, [1, 2])
    path = tmp_path / "pruned.keras"
    pruned.save(path)
    loaded = keras.models.load_model(path)
    assert type(loaded) is keras.Sequential
    x = np.random.default_rng(3).standard_normal((4, 8, 8, 3)).astype("float32")
    np.testing.assert_array_equal(as_numpy(loaded(x)), as_numpy(pruned(x)))
    assert getattr(loaded.get_layer(target), CHANGED[target]) == \
        getattr(pruned.get_layer(target), CHANGED[target])
    for a, b in zip(loaded.layers, pruned.layers, strict=True):
        assert a.get_config() == b.get_config()
