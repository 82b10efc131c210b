"""Output equivalence, via the oracle, for every layer kind kerasprune supports.

Each model is ``Input -> target -> [pass-through layers] -> consumer`` with random weights: the
target loses some neurons, and the pruned model must predict exactly what the original predicts
once the consumer's weights that read those neurons are zeroed (see ``oracle.py``).

:func:`equivalent` is ``oracle.assert_equivalent`` with the models called directly instead of
through ``predict`` (which compiles a new function per model and dominated the runtime), and with
a check that the zeroed reference differs from the original, so a deletion that changes nothing
cannot pass vacuously. Layers are built with NumPy zeros (``randomize`` overwrites them): JAX
compiles a random (or even a ``Zeros``) initializer for every new weight shape.

On JAX, some channels_last cases that TensorFlow runs are skipped to keep the runtime down
(see :func:`param`); every channels_first case runs there.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import keras
import numpy as np
import pytest
from backends import BACKEND, DATA_FORMATS, as_numpy
from oracle import ATOL, random_inputs, randomize, zeroed_reference

import kerasprune

L = keras.layers

SPATIAL = {1: (8,), 2: (6, 6), 3: (4, 4, 4)}
IN_CHANNELS = 2
CONV = {1: L.Conv1D, 2: L.Conv2D, 3: L.Conv3D}
TRANSPOSE = {1: L.Conv1DTranspose, 2: L.Conv2DTranspose, 3: L.Conv3DTranspose}

FORMAT_NAMES = ("channels_last", "channels_first")
_CHANNELS_FIRST_MARKS = DATA_FORMATS[1].marks
_TENSORFLOW_ONLY = pytest.mark.skipif(
    BACKEND != "tensorflow", reason="a channels_last case run on TensorFlow; on JAX (slow to "
    "compile every new shape) and torch the rank-2 and channels_first cases of its family run")


def param(*values: Any, jax: bool = True) -> Any:
    """A parameter set, skipped on TensorFlow if it uses channels_first (as DATA_FORMATS),
    and on other backends if ``jax`` is False (for channels_last cases TensorFlow runs)."""
    if "channels_first" in values:
        marks = _CHANNELS_FIRST_MARKS
    else:
        marks = () if jax else (_TENSORFLOW_ONLY,)
    return pytest.param(*values, marks=marks, id="-".join(map(str, values)))


def image_shape(rank: int, data_format: str, channels: int = IN_CHANNELS) -> tuple[int, ...]:
    spatial = SPATIAL[rank]
    if data_format == "channels_first":
        return (channels, *spatial)
    return (*spatial, channels)


_INITIALIZERS = ("kernel", "bias", "depthwise", "pointwise", "embeddings", "alpha", "gamma",
                 "beta", "moving_mean", "moving_variance")


@keras.saving.register_keras_serializable(package="kerasprune_tests")
class NumpyZeros(keras.initializers.Initializer):
    """Zeros made by NumPy: JAX compiles even ``Zeros`` anew for every weight shape."""

    def __call__(self, shape: Any, dtype: Any = None) -> Any:
        return np.zeros(shape, dtype=keras.backend.standardize_dtype(dtype or "float32"))

    def get_config(self) -> dict[str, Any]:
        return {}


def zero_init(layer: L.Layer) -> L.Layer:
    """Make an unbuilt layer build with zeros (cheap on every backend); randomize later."""
    for name in _INITIALIZERS:
        if hasattr(layer, f"{name}_initializer"):
            setattr(layer, f"{name}_initializer", NumpyZeros())
    return layer


def sequential(input_shape: tuple[int, ...], *layers: L.Layer, dtype: str = "float32",
               seed: int = 0) -> keras.Sequential:
    """A Sequential model on ``keras.Input(input_shape)`` with random weights."""
    model = keras.Sequential([keras.Input(input_shape, dtype=dtype),
                              *(zero_init(layer) for layer in layers)])
    return randomize(model, seed=seed)


def equivalent(model: keras.Model, layer: Any, neurons: Any, x: Any = None, *,
               atol: float = ATOL, nonvacuous: bool = True, **kwargs: Any) -> keras.Model:
    """Prune and check the oracle; return the pruned model.

    With ``nonvacuous``, also check that zeroing the consumers' weights changes the output
    (random models may have neurons a ReLU silences on every sample: pass False for those).
    """
    pruned = kerasprune.delete_neurons(model, layer, neurons, **kwargs)
    reference = zeroed_reference(model, layer, neurons, **kwargs)
    if x is None:
        x = random_inputs(model)
    got = as_numpy(pruned(x, training=False), dtype="float32")
    want = as_numpy(reference(x, training=False), dtype="float32")
    deletion = kerasprune.dependency_group(model, layer, neurons, **kwargs)
    (out,) = deletion.graph.outputs
    if out in deletion.tensors:
        axis, gone = deletion.tensors[out]
        want = np.delete(want, gone, axis=axis + 1)
    elif nonvacuous:
        original = as_numpy(model(x, training=False), dtype="float32")
        assert not np.allclose(want, original, atol=atol), "the deleted neurons changed nothing"
    assert got.shape == want.shape, (got.shape, want.shape)
    np.testing.assert_allclose(got, want, atol=atol, rtol=1e-4)
    return pruned


def target_conv(rank: int, data_format: str, filters: int = 5) -> L.Layer:
    return CONV[rank](filters, 3, padding="same", data_format=data_format, name="target")


def consumer_conv(rank: int, data_format: str) -> L.Layer:
    return CONV[rank](3, 2, padding="same", data_format=data_format, name="consumer")


def check_shrunk(pruned: keras.Model, name: str, attr: str, expected: int) -> None:
    assert getattr(pruned.get_layer(name), attr) == expected


# --- producers and consumers --------------------------------------------------------------


def test_dense_target_and_dense_consumer() -> None:
    model = sequential((6,), L.Dense(5, activation="tanh", name="target"),
                       L.Dense(4, name="consumer"))
    pruned = equivalent(model, "target", [0, 3])
    check_shrunk(pruned, "target", "units", 3)
    assert tuple(pruned.get_layer("consumer").kernel.shape) == (3, 4)
    assert pruned.output_shape == (None, 4)


def test_dense_on_images_feeds_conv() -> None:
    model = sequential(image_shape(2, "channels_last"), L.Dense(5, name="target"),
                       consumer_conv(2, "channels_last"))
    pruned = equivalent(model, "target", [1, 4])
    assert tuple(pruned.get_layer("consumer").kernel.shape) == (2, 2, 3, 3)


def test_conv_channels_last_feeds_dense() -> None:
    model = sequential(image_shape(2, "channels_last"), target_conv(2, "channels_last"),
                       L.Dense(3, name="consumer"))
    pruned = equivalent(model, "target", [2])
    assert tuple(pruned.get_layer("consumer").kernel.shape) == (4, 3)


_RANKS_AND_FORMATS = [param(rank, fmt, jax=rank == 2) for rank in (1, 2, 3)
                      for fmt in FORMAT_NAMES]


@pytest.mark.parametrize(("rank", "data_format"), _RANKS_AND_FORMATS)
def test_conv_target_and_conv_consumer(rank: int, data_format: str) -> None:
    model = sequential(image_shape(rank, data_format), target_conv(rank, data_format),
                       consumer_conv(rank, data_format))
    pruned = equivalent(model, "target", [1, 2])
    check_shrunk(pruned, "target", "filters", 3)
    assert tuple(pruned.get_layer("consumer").kernel.shape)[-2:] == (3, 3)


@pytest.mark.parametrize(("rank", "data_format"), _RANKS_AND_FORMATS)
def test_conv_transpose_as_target_and_consumer(rank: int, data_format: str) -> None:
    model = sequential(
        image_shape(rank, data_format),
        TRANSPOSE[rank](4, 2, strides=2, data_format=data_format, name="target"),
        TRANSPOSE[rank](3, 2, padding="same", data_format=data_format, name="consumer"),
        CONV[rank](2, 1, data_format=data_format, name="head"),
    )
    pruned = equivalent(model, "target", [0, 2])
    check_shrunk(pruned, "target", "filters", 2)
    # a transposed kernel is (*k, out, in): the consumer loses input rows on its last axis
    assert tuple(pruned.get_layer("consumer").kernel.shape)[-2:] == (3, 2)
    pruned = equivalent(model, "consumer", [1])
    assert tuple(pruned.get_layer("head").kernel.shape)[-2:] == (2, 2)


@pytest.mark.parametrize("data_format", DATA_FORMATS)
@pytest.mark.parametrize("rank", [1, 2])
def test_separable_conv_as_target_and_consumer(rank: int, data_format: str) -> None:
    separable = {1: L.SeparableConv1D, 2: L.SeparableConv2D}[rank]
    model = sequential(
        image_shape(rank, data_format),
        target_conv(rank, data_format, filters=4),
        separable(5, 3, padding="same", depth_multiplier=2, data_format=data_format,
                  name="separable"),
        consumer_conv(rank, data_format),
    )
    pruned = equivalent(model, "target", [0, 3])
    sep = pruned.get_layer("separable")
    assert tuple(sep.depthwise_kernel.shape)[-2:] == (2, 2)
    assert tuple(sep.pointwise_kernel.shape)[-2:] == (4, 5)
    pruned = equivalent(model, "separable", [1, 2, 4])
    check_shrunk(pruned, "separable", "filters", 2)
    assert tuple(pruned.get_layer("consumer").kernel.shape)[-2:] == (2, 3)


@pytest.mark.parametrize("multiplier", [1, 2])
@pytest.mark.parametrize("data_format", DATA_FORMATS)
@pytest.mark.parametrize("rank", [1, 2])
def test_depthwise_conv_passes_channels(rank: int, data_format: str, multiplier: int) -> None:
    depthwise = {1: L.DepthwiseConv1D, 2: L.DepthwiseConv2D}[rank]
    model = sequential(
        image_shape(rank, data_format),
        target_conv(rank, data_format, filters=4),
        depthwise(3, padding="same", depth_multiplier=multiplier, data_format=data_format,
                  name="depthwise"),
        consumer_conv(rank, data_format),
    )
    pruned = equivalent(model, "target", [1, 3])
    assert tuple(pruned.get_layer("depthwise").kernel.shape)[-2:] == (2, multiplier)
    assert tuple(pruned.get_layer("consumer").kernel.shape)[-2:] == (2 * multiplier, 3)


@pytest.mark.parametrize("multiplier", [1, 2])
@pytest.mark.parametrize("data_format", DATA_FORMATS)
@pytest.mark.parametrize("rank", [1, 2])
def test_depthwise_conv_as_target_deletes_its_inputs(rank: int, data_format: str,
                                                     multiplier: int) -> None:
    depthwise = {1: L.DepthwiseConv1D, 2: L.DepthwiseConv2D}[rank]
    model = sequential(
        image_shape(rank, data_format),
        target_conv(rank, data_format, filters=4),
        depthwise(3, padding="same", depth_multiplier=multiplier, data_format=data_format,
                  name="depthwise"),
        consumer_conv(rank, data_format),
    )
    # output channel `multiplier` belongs to input channel 1: all of channel 1's outputs go
    pruned = equivalent(model, "depthwise", [multiplier])
    check_shrunk(pruned, "target", "filters", 3)
    assert tuple(pruned.get_layer("depthwise").kernel.shape)[-2:] == (3, multiplier)
    assert tuple(pruned.get_layer("consumer").kernel.shape)[-2:] == (3 * multiplier, 3)


def test_embedding_output_dim_feeds_dense() -> None:
    model = sequential((5,), L.Embedding(20, 6, name="target"), L.Dense(3, name="consumer"),
                       dtype="int32")
    x = np.random.default_rng(0).integers(0, 20, (4, 5)).astype("int32")
    pruned = equivalent(model, "target", [0, 5], x=x)
    check_shrunk(pruned, "target", "output_dim", 4)
    assert tuple(pruned.get_layer("target").embeddings.shape) == (20, 4)
    assert tuple(pruned.get_layer("consumer").kernel.shape) == (4, 3)


def test_embedding_through_flatten() -> None:
    model = sequential((5,), L.Embedding(20, 6, name="target"), L.Flatten(),
                       L.Dense(3, name="consumer"), dtype="int32")
    x = np.random.default_rng(1).integers(0, 20, (4, 5)).astype("int32")
    pruned = equivalent(model, "target", [2], x=x)
    assert tuple(pruned.get_layer("consumer").kernel.shape) == (25, 3)


# --- channel-preserving layers between a pruned conv and its consumer ------------------------


def _batchnorm(**kwargs: Any) -> Callable[[int, str], L.Layer]:
    def make(rank: int, data_format: str) -> L.Layer:
        axis = 1 if data_format == "channels_first" else -1
        return L.BatchNormalization(axis=axis, name="between", **kwargs)
    return make


def _prelu(shared: bool) -> Callable[[int, str], L.Layer]:
    def make(rank: int, data_format: str) -> L.Layer:
        if not shared:
            return L.PReLU(name="between")
        start = 2 if data_format == "channels_first" else 1
        return L.PReLU(shared_axes=list(range(start, start + rank)), name="between")
    return make


def _formatted(cls: type[L.Layer], **kwargs: Any) -> Callable[[int, str], L.Layer]:
    def make(rank: int, data_format: str) -> L.Layer:
        return cls(data_format=data_format, name="between", **kwargs)
    return make


def _plain(cls: type[L.Layer], *args: Any, **kwargs: Any) -> Callable[[int, str], L.Layer]:
    def make(rank: int, data_format: str) -> L.Layer:
        return cls(*args, name="between", **kwargs)
    return make


ELEMENTWISE: dict[str, Callable[[int, str], L.Layer]] = {
    "Activation_relu": _plain(L.Activation, "relu"),
    "ReLU": _plain(L.ReLU),
    "LeakyReLU": _plain(L.LeakyReLU, negative_slope=0.3),
    "ELU": _plain(L.ELU),
    "PReLU": _prelu(shared=False),
    "PReLU_shared_axes": _prelu(shared=True),
    "Dropout": _plain(L.Dropout, 0.5),
    "GaussianNoise": _plain(L.GaussianNoise, 0.5),
    "GaussianDropout": _plain(L.GaussianDropout, 0.5),
    "AlphaDropout": _plain(L.AlphaDropout, 0.5),
    "ActivityRegularization": _plain(L.ActivityRegularization, l1=0.1),
    "BatchNormalization": _batchnorm(),
    "BatchNormalization_no_center": _batchnorm(center=False),
    "BatchNormalization_no_scale": _batchnorm(scale=False),
    "BatchNormalization_neither": _batchnorm(center=False, scale=False),
}


# Element-wise layers ignore the data format: channels_first only for those with weights.
_WITH_WEIGHTS = ("BatchNormalization", "PReLU")
_ELEMENTWISE_CASES = [param(kind, "channels_last", jax=kind.startswith(_WITH_WEIGHTS))
                      for kind in ELEMENTWISE] + [
    param(kind, "channels_first") for kind in ELEMENTWISE if kind.startswith(_WITH_WEIGHTS)]


@pytest.mark.parametrize(("kind", "data_format"), _ELEMENTWISE_CASES)
def test_channel_preserving_layer(kind: str, data_format: str) -> None:
    rank = 2
    model = sequential(image_shape(rank, data_format), target_conv(rank, data_format),
                       ELEMENTWISE[kind](rank, data_format), consumer_conv(rank, data_format))
    pruned = equivalent(model, "target", [0, 4])
    before = {w.path.split("/")[-1]: tuple(w.shape) for w in model.get_layer("between").weights}
    after = {w.path.split("/")[-1]: tuple(w.shape) for w in pruned.get_layer("between").weights}
    assert before.keys() == after.keys()
    for name, shape in before.items():
        # per-channel weights (BN statistics, unshared PReLU alpha) lose the two channels
        channel_axis = 0 if len(shape) == 1 else (0 if data_format == "channels_first" else -1)
        expected = list(shape)
        if shape[channel_axis] == 5:
            expected[channel_axis] = 3
        assert after[name] == tuple(expected), name


def test_prelu_on_dense_units() -> None:
    model = sequential((6,), L.Dense(5, name="target"), L.PReLU(name="between"),
                       L.Dense(3, name="consumer"))
    pruned = equivalent(model, "target", [1])
    assert tuple(pruned.get_layer("between").alpha.shape) == (4,)


PER_CHANNEL: dict[str, tuple[tuple[int, ...], Callable[[int, str], L.Layer]]] = {
    "SpatialDropout": ((1, 2, 3), lambda r, df: (
        L.SpatialDropout1D(0.5, name="between") if r == 1 else
        (L.SpatialDropout2D if r == 2 else L.SpatialDropout3D)(
            0.5, data_format=df, name="between"))),
    "MaxPooling": ((1, 2, 3), lambda r, df: getattr(L, f"MaxPooling{r}D")(
        2, data_format=df, name="between")),
    "AveragePooling": ((1, 2, 3), lambda r, df: getattr(L, f"AveragePooling{r}D")(
        2, data_format=df, name="between")),
    "ZeroPadding": ((1, 2, 3), lambda r, df: getattr(L, f"ZeroPadding{r}D")(
        1, data_format=df, name="between")),
    "Cropping": ((1, 2, 3), lambda r, df: (
        L.Cropping1D(1, name="between") if r == 1 else
        getattr(L, f"Cropping{r}D")(1, data_format=df, name="between"))),
    "UpSampling": ((1, 2, 3), lambda r, df: (
        L.UpSampling1D(2, name="between") if r == 1 else
        getattr(L, f"UpSampling{r}D")(2, data_format=df, name="between"))),
}
CHANNELS_LAST_ONLY_1D = {"SpatialDropout", "Cropping", "UpSampling"}


def _per_channel_cases() -> list[Any]:
    return [param(kind, rank, fmt, jax=rank == 2) for kind, (ranks, _) in PER_CHANNEL.items()
            for rank in ranks for fmt in FORMAT_NAMES
            # these 1D layers have no data_format: always channels_last
            if not (rank == 1 and kind in CHANNELS_LAST_ONLY_1D and fmt == "channels_first")]


@pytest.mark.parametrize(("kind", "rank", "data_format"), _per_channel_cases())
def test_per_channel_layer(kind: str, rank: int, data_format: str) -> None:
    make = PER_CHANNEL[kind][1]
    model = sequential(image_shape(rank, data_format), target_conv(rank, data_format),
                       make(rank, data_format), consumer_conv(rank, data_format))
    pruned = equivalent(model, "target", [1, 2, 4])
    check_shrunk(pruned, "target", "filters", 2)
    channel_axis = 1 if data_format == "channels_first" else -1
    assert pruned.get_layer("between").output.shape[channel_axis] == 2


# --- layers that move the channel axis -----------------------------------------------------


@pytest.mark.parametrize(("rank", "conv_format", "flatten_format"), [
    *(param(2, conv, flat) for conv in FORMAT_NAMES for flat in FORMAT_NAMES),
    *(param(rank, fmt, fmt, jax=False) for rank in (1, 3) for fmt in FORMAT_NAMES),
    param(1, "channels_last", "channels_first"), param(3, "channels_first", "channels_last"),
])
def test_flatten(rank: int, conv_format: str, flatten_format: str) -> None:
    model = sequential(image_shape(rank, conv_format), target_conv(rank, conv_format, 4),
                       L.Flatten(data_format=flatten_format), L.Dense(3, name="consumer"))
    pruned = equivalent(model, "target", [0, 2])
    positions = int(np.prod(SPATIAL[rank]))
    assert tuple(pruned.get_layer("consumer").kernel.shape) == (2 * positions, 3)


def test_flatten_of_dense_on_sequence() -> None:
    model = sequential((4, 3), L.Dense(5, name="target"), L.Flatten(),
                       L.Dense(2, name="consumer"))
    pruned = equivalent(model, "target", [0, 1, 4])
    assert tuple(pruned.get_layer("consumer").kernel.shape) == (8, 2)


@pytest.mark.parametrize(("rank", "op", "data_format", "keepdims"), [
    *(param(2, op, fmt, keep) for op in ("Max", "Average") for fmt in FORMAT_NAMES
      for keep in (False, True)),
    *(param(rank, op, fmt, keep, jax=False) for rank in (1, 3) for fmt in FORMAT_NAMES
      for op, keep in (("Max", False), ("Average", True))),
])
def test_global_pooling(rank: int, op: str, data_format: str, keepdims: bool) -> None:
    pool = getattr(L, f"Global{op}Pooling{rank}D")(data_format=data_format, keepdims=keepdims)
    consumer = (CONV[rank](3, 1, data_format=data_format, name="consumer") if keepdims
                else L.Dense(3, name="consumer"))
    model = sequential(image_shape(rank, data_format), target_conv(rank, data_format), pool,
                       consumer)
    pruned = equivalent(model, "target", [3])
    assert tuple(pruned.get_layer("consumer").kernel.shape)[-2:] == (4, 3)


def test_reshape_keeping_channel_axis() -> None:
    model = sequential((4, 4, 2), L.Conv2D(5, 3, padding="same", name="target"),
                       L.Reshape((16, 5), name="reshape"), L.Dense(3, name="consumer"))
    pruned = equivalent(model, "target", [1, 3])
    assert tuple(pruned.get_layer("reshape").target_shape) == (16, 3)
    assert tuple(pruned.get_layer("consumer").kernel.shape) == (3, 3)


def test_reshape_splitting_spatial_axes() -> None:
    model = sequential((8, 2), L.Conv1D(4, 3, padding="same", name="target"),
                       L.Reshape((2, 4, 4), name="reshape"),
                       L.Conv2D(3, 2, padding="same", name="consumer"))
    pruned = equivalent(model, "target", [0])
    assert tuple(pruned.get_layer("reshape").target_shape) == (2, 4, 3)


@pytest.mark.parametrize("data_format", DATA_FORMATS)
def test_reshape_channels_first(data_format: str) -> None:
    if data_format == "channels_first":
        reshape, consumer = L.Reshape((5, 16), name="reshape"), L.Conv1D(
            3, 1, data_format="channels_first", name="consumer")
    else:
        reshape, consumer = L.Reshape((16, 5), name="reshape"), L.Conv1D(3, 1, name="consumer")
    shape = (2, 4, 4) if data_format == "channels_first" else (4, 4, 2)
    model = sequential(shape, L.Conv2D(5, 3, padding="same", data_format=data_format,
                                       name="target"), reshape, consumer)
    pruned = equivalent(model, "target", [4])
    assert tuple(pruned.get_layer("consumer").kernel.shape)[-2:] == (4, 3)


# --- longer chains --------------------------------------------------------------------------


@pytest.mark.parametrize("data_format", DATA_FORMATS)
def test_chain_of_pass_through_layers(data_format: str) -> None:
    axis = 1 if data_format == "channels_first" else -1
    model = sequential(
        image_shape(2, data_format),
        target_conv(2, data_format, filters=6),
        L.BatchNormalization(axis=axis),
        L.ReLU(),
        L.ZeroPadding2D(1, data_format=data_format),
        L.MaxPooling2D(2, data_format=data_format),
        L.SpatialDropout2D(0.2, data_format=data_format),
        L.DepthwiseConv2D(2, depth_multiplier=2, data_format=data_format),
        L.Dropout(0.1),
        L.GlobalAveragePooling2D(data_format=data_format),
        L.Dense(3, name="consumer"),
    )
    pruned = equivalent(model, "target", [0, 2, 5])
    assert tuple(pruned.get_layer("consumer").kernel.shape) == (6, 3)
