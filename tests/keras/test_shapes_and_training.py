"""A pruned model accepts every input the original accepts and trains (issue 9): every
attribute that holds a channel count or a shape follows the deletion (``Reshape`` keeps its
``-1``, ``Dropout``'s ``noise_shape``, LoRA factors, ``EinsumDense``'s ``output_shape``...),
and unknown input dimensions stay unknown.

Hand-written cases first, then random models (hypothesis) of these layers on inputs of unknown
length or size: each is pruned at a random layer, checked with the oracle, run on an input of
another size, and trained one step.
"""

from __future__ import annotations

from typing import Any

import keras
import numpy as np
import pytest
from backends import BACKEND, DATA_FORMATS
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from oracle import assert_equivalent, randomize

import kerasprune
from kerasprune.core.graph import PruneError

L = keras.layers


def rand(*shape: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(shape).astype("float32")


def fit_one_step(model: keras.Model, x: np.ndarray) -> None:
    y = model.predict(x, verbose=0)
    model.compile(optimizer=keras.optimizers.SGD(0.01), loss="mse")
    history = model.fit(x, np.zeros_like(y), epochs=1, batch_size=len(x), verbose=0)
    assert np.isfinite(history.history["loss"][0])


def input_shapes(model: keras.Model) -> list[tuple[Any, ...]]:
    return [tuple(t.shape) for t in model.inputs]


# --------------------------------------------------------------------------------------------
# Shapes held in attributes
# --------------------------------------------------------------------------------------------


def test_reshape_keeps_minus_one_on_inputs_of_any_length() -> None:
    inp = keras.Input((None, 6))
    h = L.Dense(6, name="d")(inp)
    h = L.Reshape((-1, 2, 3), name="split")(h)  # splits the time axis, keeps channels apart
    h = L.Reshape((-1, 6), name="rs")(L.Dense(6, name="e")(h))
    out = L.Dense(2, name="out")(h)
    model = randomize(keras.Model(inp, out))
    with pytest.raises(PruneError, match=r"'split' \(Reshape\)"):
        kerasprune.delete_neurons(model, "d", [0])  # channels 0-5 split into 2 x 3: mixed
    pruned = assert_equivalent(model, "e", [0, 5], rand(2, 4, 6))
    assert pruned.get_layer("rs").target_shape == (-1, 4)
    assert input_shapes(pruned) == [(None, None, 6)]
    with pytest.raises(PruneError, match=r"FLOPs .* depend on the size of its inputs"):
        kerasprune.costs(pruned)  # (params and FLOPs need a fixed input shape)
    assert pruned.predict(rand(3, 10, 6), verbose=0).shape == (3, 20, 2)
    fit_one_step(pruned, rand(3, 8, 6))


@pytest.mark.parametrize("layer", [L.Dropout, L.AlphaDropout])
def test_noise_shape_follows_the_channels(layer: type) -> None:
    inp = keras.Input((5, 4))
    h = L.Dense(6, activation="relu", name="d")(inp)
    h = layer(0.3, noise_shape=(None, 1, 6), seed=1, name="drop")(h)
    out = L.Dense(2, name="out")(h)
    model = randomize(keras.Model(inp, out))
    pruned = assert_equivalent(model, "d", [1, 2], rand(2, 5, 4))
    assert tuple(pruned.get_layer("drop").noise_shape) == (None, 1, 4)
    fit_one_step(pruned, rand(4, 5, 4))  # training applies the noise: its shape must fit


def test_lora_factors_of_dense_conv_and_embedding() -> None:
    tokens = keras.Input((6,), dtype="int32")
    h = L.Embedding(12, 8, lora_rank=2, name="emb")(tokens)
    h = L.Conv1D(6, 3, padding="same", lora_rank=2, name="conv")(h)
    h = L.Dense(5, lora_rank=2, name="dense")(h)
    out = L.Dense(2, lora_rank=2, name="out")(L.Flatten(name="flat")(h))
    model = randomize(keras.Model(tokens, out))
    x = np.random.default_rng(1).integers(0, 12, (3, 6)).astype("int32")
    pruned = assert_equivalent(model, {"emb": [0, 7], "conv": [2], "dense": [4]}, None, x)
    assert pruned.get_layer("emb").lora_embeddings_b.shape == (2, 6)
    assert pruned.get_layer("conv").lora_kernel_a.shape == (3, 6, 2)
    assert pruned.get_layer("conv").lora_kernel_b.shape == (2, 5)
    assert pruned.get_layer("dense").lora_kernel_a.shape == (5, 2)
    assert pruned.get_layer("out").lora_kernel_a.shape == (24, 2)
    fit_one_step(pruned, x)


def test_einsum_dense_as_producer_and_consumer() -> None:
    inp = keras.Input((None, 4))
    h = L.EinsumDense("abc,cd->abd", output_shape=(None, 6), bias_axes="d", name="up")(inp)
    h = L.Activation("relu", name="act")(h)
    h = L.EinsumDense("...b,bc->...c", output_shape=3, name="down")(h)
    model = randomize(keras.Model(inp, h))
    pruned = assert_equivalent(model, "up", [0, 3], rand(2, 5, 4))
    assert pruned.get_layer("up").kernel.shape == (4, 4)
    assert pruned.get_layer("down").kernel.shape == (4, 3)
    assert input_shapes(pruned) == [(None, None, 4)]
    fit_one_step(pruned, rand(2, 9, 4))


@pytest.mark.parametrize("df", DATA_FORMATS)
@pytest.mark.parametrize("multiplier", [1, 2])
def test_grouped_convolution_with_one_channel_per_group_is_depthwise(df: str,
                                                                    multiplier: int) -> None:
    """ConvNeXt's depthwise convolution is a ``Conv2D(groups=channels)``: it passes channels,
    and its ``groups`` and ``filters`` follow them."""
    shape = (6, 6, 3) if df == "channels_last" else (3, 6, 6)
    inp = keras.Input(shape)
    x = L.Conv2D(4, 3, padding="same", data_format=df, name="target")(inp)
    x = L.Conv2D(4 * multiplier, 3, padding="same", groups=4, data_format=df, name="dw")(x)
    x = L.Conv2D(2, 1, data_format=df, name="consumer")(x)
    model = randomize(keras.Model(inp, L.GlobalAveragePooling2D(data_format=df)(x)))
    deletion = kerasprune.dependency_group(model, "dw", [multiplier])  # group 1's first
    assert {k: v.tolist() for k, v in deletion.neurons().items()} == {"target": [1]}
    pruned = assert_equivalent(model, "target", [1, 3])
    dw = pruned.get_layer("dw")
    assert (dw.groups, dw.filters) == (2, 2 * multiplier)
    assert dw.kernel.shape == (3, 3, 1, 2 * multiplier)
    assert pruned.get_layer("consumer").kernel.shape == (1, 1, 2 * multiplier, 2)
    fit_one_step(pruned, rand(2, *shape))


def test_input_dimensions_stay_unknown_in_nested_models() -> None:
    inner_in = keras.Input((None, None, 4))
    inner = keras.Model(inner_in, L.Conv2D(5, 3, padding="same", name="c")(inner_in),
                        name="inner")
    inp = keras.Input((None, None, 3))
    x = L.Conv2D(4, 3, padding="same", name="stem")(inp)
    x = L.GlobalAveragePooling2D(name="gap")(inner(x))
    model = randomize(keras.Model(inp, L.Dense(2, name="out")(x)))
    pruned = assert_equivalent(model, "stem", [1], rand(2, 6, 6, 3))
    assert input_shapes(pruned) == [(None, None, None, 3)]
    assert tuple(pruned.get_layer("inner").inputs[0].shape) == (None, None, None, 3)
    assert pruned.predict(rand(2, 9, 7, 3), verbose=0).shape == (2, 2)


# --------------------------------------------------------------------------------------------
# Random models on inputs of unknown length
# --------------------------------------------------------------------------------------------

Spec = tuple[str, dict[str, Any]]


@st.composite
def sequence_plans(draw: st.DrawFn) -> list[Spec]:
    """Layers for a ``(None, 4)`` sequence input: what each does to the channels is fixed
    by its kind, so a plan is a list of (kind, arguments)."""
    plan: list[Spec] = []
    channels = 4
    for _ in range(draw(st.integers(2, 6))):
        kind = draw(st.sampled_from(["dense", "dense", "conv", "einsum", "dropout", "reshape",
                                     "scale", "relu_op", "bn", "spatial"]))
        if kind in ("dense", "conv", "einsum"):
            channels = draw(st.integers(3, 6))
            lora = draw(st.sampled_from([None, None, 2])) if kind != "einsum" else None
            plan.append((kind, {"units": channels, "lora": lora}))
        elif kind == "dropout":
            plan.append((kind, {"noise": draw(st.sampled_from(["channels", "steps", None])),
                                "channels": channels}))
        else:
            plan.append((kind, {"channels": channels}))
    return plan


def build_sequence(plan: list[Spec], seed: int) -> tuple[keras.Model, list[str]]:
    inp = keras.Input((None, 4))
    x: Any = inp
    targets = []
    for i, (kind, a) in enumerate(plan):
        name = f"{kind}{i}"
        if kind == "dense":
            x = L.Dense(a["units"], activation="tanh", lora_rank=a["lora"], name=name)(x)
            targets.append(name)
        elif kind == "conv":
            x = L.Conv1D(a["units"], 3, padding="same", lora_rank=a["lora"], name=name)(x)
            targets.append(name)
        elif kind == "einsum":
            x = L.EinsumDense("abc,cd->abd", output_shape=(None, a["units"]), bias_axes="d",
                              name=name)(x)
            targets.append(name)
        elif kind == "dropout":
            noise = {"channels": (None, 1, a["channels"]), "steps": None, None: None}[
                a["noise"]]
            x = L.Dropout(0.2, noise_shape=noise, seed=i, name=name)(x)
        elif kind == "reshape":
            x = L.Reshape((-1, a["channels"]), name=name)(x)
        elif kind == "scale":
            x = x * 1.5 + np.linspace(-1.0, 1.0, a["channels"]).astype("float32")
        elif kind == "relu_op":
            x = keras.ops.relu(x)
        elif kind == "bn":
            x = L.BatchNormalization(name=name)(x)
        else:
            x = L.SpatialDropout1D(0.2, seed=i, name=name)(x)
    x = L.GlobalAveragePooling1D(name="gap")(x)
    model = keras.Model(inp, L.Dense(2, name="head")(x))
    return randomize(model, seed=seed), targets


@settings(max_examples=12 if BACKEND == "tensorflow" else 6, deadline=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(plan=sequence_plans(), data=st.data())
def test_random_models_accept_new_lengths_and_train(plan: list[Spec],
                                                    data: st.DataObject) -> None:
    model, targets = build_sequence(plan, seed=len(plan))
    if not targets:
        return
    layer = data.draw(st.sampled_from(targets), label="layer")
    n = model.get_layer(layer).output.shape[-1]
    neurons = data.draw(st.lists(st.integers(0, n - 1), min_size=1, max_size=n - 1,
                                 unique=True), label="neurons")
    pruned = assert_equivalent(model, layer, neurons, rand(2, 5, 4))
    assert input_shapes(pruned) == [(None, None, 4)]
    assert pruned.predict(rand(3, 11, 4, seed=1), verbose=0).shape == (3, 2)
    fit_one_step(pruned, rand(3, 7, 4, seed=2))
