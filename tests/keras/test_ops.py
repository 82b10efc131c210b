"""Operations of functional graphs (``x * 2.0``, ``keras.ops.relu(h)``, ``a + b``) on the path
of a deletion: element-wise ones pass channels, constants that span the channel axis are
sliced, tensors combined by an operation are coupled like the inputs of ``Add``, and an
operation without a rule is refused before anything is built. Every case is checked with the
oracle, in both data formats where there is one (channels_first on JAX)."""

from __future__ import annotations

from typing import Any

import keras
import numpy as np
import pytest
from backends import DATA_FORMATS, as_numpy
from oracle import assert_equivalent, random_inputs, randomize

import kerasprune
from kerasprune.core.graph import PruneError

L = keras.layers
ops = keras.ops


def caxis(df: str) -> int:
    return -1 if df == "channels_last" else 1


def image(df: str, c: int = 3) -> tuple[int, int, int]:
    return (6, 6, c) if df == "channels_last" else (c, 6, 6)


def per_channel(df: str, c: int) -> np.ndarray:
    """A constant with one value per channel, shaped to broadcast in ``df``."""
    values = np.linspace(0.5, 2.0, c).astype("float32")
    return values if df == "channels_last" else values.reshape(c, 1, 1)


def conv_model(df: str, middle: Any, filters: int = 5) -> keras.Model:
    inp = keras.Input(image(df))
    x = L.Conv2D(filters, 3, padding="same", data_format=df, name="target")(inp)
    x = middle(x)
    x = L.Conv2D(3, 1, data_format=df, name="consumer")(x)
    out = L.GlobalAveragePooling2D(data_format=df, name="gap")(x)
    return randomize(keras.Model(inp, out))


def groups(model: keras.Model, layer: str, neurons: list[int]) -> dict[str, list[int]]:
    deletion = kerasprune.dependency_group(model, layer, neurons)
    return {k: v.tolist() for k, v in deletion.neurons().items()}


MIDDLES = {
    "scalar multiply": lambda df: lambda x: x * 2.0,
    "scalar first": lambda df: lambda x: 1.5 - x,
    "hard swish": lambda df: lambda x: x * (L.ReLU(6.0)(x + 3.0) * (1.0 / 6.0)),
    "relu op": lambda df: lambda x: ops.relu(x),
    "unary chain": lambda df: lambda x: ops.tanh(ops.hard_sigmoid(ops.abs(x))),
    "clip and cast": lambda df: lambda x: ops.cast(ops.clip(x, -1.0, 1.0), "float32"),
    "per-channel constant": lambda df: lambda x: x * per_channel(df, 5) + per_channel(df, 5),
    "where with a mask": lambda df: lambda x: ops.where(ops.greater(x, 0.0), x, 0.1 * x),
}


@pytest.mark.parametrize("df", DATA_FORMATS)
@pytest.mark.parametrize("middle", list(MIDDLES))
def test_elementwise_operations_pass_channels(middle: str, df: str) -> None:
    model = conv_model(df, MIDDLES[middle](df))
    assert groups(model, "target", [0, 3]) == {"target": [0, 3]}
    pruned = assert_equivalent(model, "target", [0, 3])
    assert pruned.get_layer("consumer").kernel.shape == (1, 1, 3, 3)
    x = random_inputs(model, seed=1)
    assert pruned.predict(x, verbose=0).shape == (3, 3)


@pytest.mark.parametrize("df", DATA_FORMATS)
def test_per_channel_constant_is_sliced(df: str) -> None:
    scale = per_channel(df, 5)
    model = conv_model(df, lambda x: x * scale)
    pruned = assert_equivalent(model, "target", [1, 4])
    (op,) = [o for o in pruned.operations if o.name.startswith("multiply")]
    # the operation reads the kept entries of the constant, in its own rank
    kept = kerasprune.to_graph(pruned).graph.layers[op.name].constants
    (value,) = kept.values()
    np.testing.assert_array_equal(as_numpy(value).reshape(-1), scale.reshape(-1)[[0, 2, 3]])


@pytest.mark.parametrize("df", DATA_FORMATS)
def test_operation_between_tensors_couples_them(df: str) -> None:
    inp = keras.Input(image(df))
    a = L.Conv2D(4, 3, padding="same", data_format=df, name="a")(inp)
    b = L.Conv2D(4, 1, data_format=df, name="b")(inp)
    x = ops.maximum(a, b) - b * 0.5  # maximum and subtract: both couple a and b
    out = L.Conv2D(2, 1, data_format=df, name="consumer")(x)
    model = randomize(keras.Model(inp, L.GlobalAveragePooling2D(data_format=df)(out)))
    assert groups(model, "a", [2]) == {"a": [2], "b": [2]}
    assert_equivalent(model, "b", [0, 3])


@pytest.mark.parametrize("df", DATA_FORMATS)
def test_squeeze_excite_and_spatial_gate_broadcast(df: str) -> None:
    inp = keras.Input(image(df))
    x = L.Conv2D(6, 3, padding="same", data_format=df, name="target")(inp)
    s = L.GlobalAveragePooling2D(data_format=df, keepdims=True, name="squeeze")(x)
    s = L.Conv2D(6, 1, activation="sigmoid", data_format=df, name="excite")(s)
    x = x * s  # (N,1,1,C) * (N,H,W,C): coupled channels
    gate = L.Conv2D(1, 1, activation="sigmoid", data_format=df, name="gate")(x)
    x = ops.multiply(x, gate)  # (N,H,W,1): broadcast over the channels, takes no part
    out = L.Conv2D(3, 1, data_format=df, name="consumer")(x)
    model = randomize(keras.Model(inp, L.GlobalAveragePooling2D(data_format=df)(out)))
    assert groups(model, "target", [1]) == {"target": [1], "excite": [1]}
    pruned = assert_equivalent(model, "target", [1, 5])
    assert pruned.get_layer("gate").kernel.shape == (1, 1, 4, 1)


def test_dense_with_broadcast_bias_constant() -> None:
    inp = keras.Input((5, 4))
    h = L.Dense(6, name="target")(inp)
    h = ops.add(np.ones((1, 1, 6), "float32") * 0.3, h)  # rank 3 with the batch axis
    h = ops.softmax(h, axis=1)  # over another axis: passes the channels
    out = L.Dense(2, name="consumer")(h)
    model = randomize(keras.Model(inp, out))
    assert_equivalent(model, "target", [0, 5])


def test_concatenate_operation() -> None:
    inp = keras.Input((4,))
    a = L.Dense(3, name="a")(inp)
    b = L.Dense(5, name="b")(inp)
    out = L.Dense(2, name="consumer")(ops.concatenate([a, b], axis=-1))
    model = randomize(keras.Model(inp, out))
    deletion = kerasprune.dependency_group(model, "b", [1])
    assert deletion.layers()["consumer"].inputs[0].tolist() == [4]
    assert_equivalent(model, "b", [1, 2])


@pytest.mark.parametrize(("middle", "fragment"), [
    (lambda x: ops.transpose(x, (0, 2, 1)), "op:transpose"),
    (lambda x: ops.sum(x, axis=-1, keepdims=True), "op:sum"),
    (lambda x: ops.softmax(x), "normalises over the channel axis"),
    (lambda x: x[..., :3], "op:get_item"),
])
def test_operations_that_cannot_carry_a_deletion_are_refused(middle: Any, fragment: str) -> None:
    inp = keras.Input((5, 6))
    h = L.Dense(6, name="target")(inp)
    out = L.Dense(2, name="consumer")(middle(h))
    model = randomize(keras.Model(inp, out))
    before = [np.array(w) for w in model.get_weights()]
    with pytest.raises(PruneError, match="'target'") as info:
        kerasprune.delete_neurons(model, "target", [0])
    assert fragment in str(info.value)
    for a, b in zip(before, model.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)
    # the operation has no neurons of its own either
    name = next(o.name for o in model.operations if not isinstance(o, L.Layer))
    with pytest.raises(PruneError, match="has no neurons"):
        kerasprune.delete_neurons(model, name, [0])


def test_operation_kinds_do_not_collide_with_layer_kinds() -> None:
    inp = keras.Input((4,))
    a = L.Dense(3, name="a")(inp)
    out = L.Add(name="add_layer")([a, a + 1.0])
    model = keras.Model(inp, out)
    kinds = {s.name: s.kind for s in kerasprune.to_graph(model).graph.layers.values()}
    assert kinds["add_layer"] == "Add"
    assert [k for n, k in kinds.items() if n not in ("a", "add_layer")] == ["op:add"]
