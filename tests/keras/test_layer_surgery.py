"""Layer surgery: delete_layer, insert_layer, replace_layer on Sequential and functional
models, shared layers, nested models and several outputs. Output equivalence where the edit is
an identity; shapes, weights and layer counts elsewhere; the errors."""

from __future__ import annotations

from typing import Any

import keras
import numpy as np
import pytest
from backends import as_numpy
from oracle import random_inputs, randomize

import kerasprune
from kerasprune import PruneError

L = keras.layers


def outputs(model: keras.Model, x: Any) -> list[np.ndarray]:
    out = model(x, training=False)
    return [as_numpy(o) for o in (out if isinstance(out, (list, tuple)) else [out])]


def assert_same_function(a: keras.Model, b: keras.Model) -> None:
    x = random_inputs(a)
    for got, want in zip(outputs(a, x), outputs(b, x), strict=True):
        np.testing.assert_allclose(got, want, atol=1e-5, rtol=1e-5)


def mlp() -> keras.Model:
    return randomize(keras.Sequential([keras.Input((6,)), L.Dense(8, name="d1"),
                                       L.Dropout(0.5, name="drop"), L.Dense(8, name="d2"),
                                       L.Dense(3, name="out")], name="mlp"))


def names(model: keras.Model) -> list[str]:
    return [layer.name for layer in model.layers]


def shared_two_outputs() -> keras.Model:
    """``s`` is called on the input and on ``pre(x)``; two outputs read it."""
    x = keras.Input((5,), name="x")
    s = L.Dense(5, activation="tanh", name="s")
    a, b = s(x), s(L.Dense(5, name="pre")(x))
    out1 = L.Dense(2, name="o1")(a)
    out2 = L.Add(name="add")([a, b])
    return randomize(keras.Model(x, [out1, out2]))


def nested() -> keras.Model:
    inner = keras.Sequential([keras.Input((6,)), L.Dense(6, name="i1"),
                              L.Dropout(0.2, name="idrop"), L.Dense(4, name="i2")], name="inner")
    x = keras.Input((6,), name="x")
    h = L.Dense(6, name="stem")(x)
    return randomize(keras.Model(x, L.Dense(2, name="head")(inner(h))))


# -- identities: the function is unchanged ---------------------------------------------------


def test_delete_a_dropout_from_a_sequential_model() -> None:
    model = mlp()
    slim = kerasprune.delete_layer(model, "drop")
    assert isinstance(slim, keras.Sequential) and names(slim) == ["d1", "d2", "out"]
    assert_same_function(slim, model)
    assert names(model) == ["d1", "drop", "d2", "out"]


@pytest.mark.parametrize("where", [{"after": "d1"}, {"before": 0}, {"after": "out"},
                                   {"before": "drop"}])
def test_insert_a_linear_activation(where: dict[str, Any]) -> None:
    model = mlp()
    new = L.Activation("linear", name="lin")
    grown = kerasprune.insert_layer(model, new, **where)
    assert len(grown.layers) == 5 and "lin" in names(grown)
    assert_same_function(grown, model)
    assert all(layer is not new for layer in grown.layers)  # the model gets a copy


def test_replace_by_an_equal_layer_with_the_same_weights() -> None:
    model = mlp()
    twin = L.Dense(8, name="twin")
    twin.build((None, 8))
    twin.set_weights(model.get_layer("d2").get_weights())
    swapped = kerasprune.replace_layer(model, "d2", twin)
    assert names(swapped) == ["d1", "drop", "twin", "out"]
    assert_same_function(swapped, model)
    swapped.get_layer("twin").kernel.assign(np.zeros((8, 8), "float32"))
    assert np.abs(as_numpy(twin.kernel)).sum() > 0  # independent of the object given


def test_a_shared_layer_is_edited_at_every_call() -> None:
    model = shared_two_outputs()
    grown = kerasprune.insert_layer(model, L.Activation("linear", name="lin"), after="s")
    assert_same_function(grown, model)
    assert len(grown.layers) == len(model.layers) + 1
    assert len(kerasprune.to_graph(grown).graph.calls("lin")) == 2  # one layer, shared
    before = kerasprune.insert_layer(model, L.Activation("linear", name="lin"), before="s")
    assert_same_function(before, model)
    swapped = kerasprune.replace_layer(model, "s", L.Dense(5, activation="tanh", name="t"))
    assert len(swapped.layers) == len(model.layers)
    assert swapped.get_layer("t").kernel.shape == (5, 5)


def test_surgery_inside_a_nested_model() -> None:
    model = nested()
    slim = kerasprune.delete_layer(model, "inner/idrop")
    assert names(slim.get_layer("inner")) == ["i1", "i2"]
    assert_same_function(slim, model)
    grown = kerasprune.insert_layer(model, L.Activation("linear", name="lin"), after="i1")
    assert names(grown.get_layer("inner")) == ["i1", "lin", "idrop", "i2"]
    assert_same_function(grown, model)
    # after a nested model's output layer: the new layer goes in the outer model
    outer = kerasprune.insert_layer(model, L.Activation("linear", name="lin"), after="inner/i2")
    assert "lin" in names(outer) and "lin" not in names(outer.get_layer("inner"))
    assert_same_function(outer, model)
    twin = L.Dense(4, name="i2")
    twin.build((None, 6))
    twin.set_weights(model.get_layer("inner").get_layer("i2").get_weights())
    assert_same_function(kerasprune.replace_layer(model, "inner/i2", twin), model)


def test_a_sequential_nested_in_a_sequential() -> None:
    model = randomize(keras.Sequential([
        keras.Input((6,)), L.Dense(6, name="s1"),
        keras.Sequential([L.Dense(6, name="n1"), L.Dropout(0.1, name="nd")], name="sub"),
        L.Dense(2, name="s2")]))
    slim = kerasprune.delete_layer(model, "sub/nd")
    assert isinstance(slim, keras.Sequential) and names(slim.get_layer("sub")) == ["n1"]
    assert_same_function(slim, model)
    grown = kerasprune.insert_layer(model, L.Activation("linear", name="lin"), before="n1")
    assert names(grown.get_layer("sub")) == ["lin", "n1", "nd"]
    assert_same_function(grown, model)


# -- by construction ---------------------------------------------------------------------------


def test_delete_a_layer_feeding_several_outputs() -> None:
    model = shared_two_outputs()
    slim = kerasprune.delete_layer(model, "pre")
    assert "pre" not in names(slim)
    x = random_inputs(model)
    s = model.get_layer("s")
    a = as_numpy(s(x))
    np.testing.assert_allclose(outputs(slim, x)[1], a + a, atol=1e-5)  # add(s(x), s(x))


def test_an_unbuilt_new_layer_is_built_on_its_input() -> None:
    model = mlp()
    swapped = kerasprune.replace_layer(model, "d2", L.Dense(8, name="fresh"))
    kernel = as_numpy(swapped.get_layer("fresh").kernel)
    assert kernel.shape == (8, 8)
    assert not np.allclose(kernel, as_numpy(model.get_layer("d2").kernel))  # nothing copied
    head = kerasprune.insert_layer(model, L.Dense(5, name="head"), after="out")
    assert outputs(head, random_inputs(model))[0].shape == (3, 5) and len(head.layers) == 5


def test_the_result_is_independent_and_round_trips(tmp_path: Any) -> None:
    model = mlp()
    before = [as_numpy(w).copy() for w in model.weights]
    grown = kerasprune.insert_layer(model, L.Dense(8, name="extra"), after="d1")
    for w in grown.weights:
        w.assign(np.zeros(w.shape, "float32"))  # on torch, shared storage would show here
    for w, want in zip(model.weights, before, strict=True):
        np.testing.assert_array_equal(as_numpy(w), want)
    grown = kerasprune.insert_layer(model, L.Dense(8, name="extra"), after="d1")
    path = tmp_path / "grown.keras"
    grown.save(path)
    loaded = keras.models.load_model(path)
    assert names(loaded) == ["d1", "extra", "drop", "d2", "out"]
    x = random_inputs(model)
    np.testing.assert_allclose(outputs(loaded, x)[0], outputs(grown, x)[0], atol=1e-6)


# -- errors ------------------------------------------------------------------------------------


def test_errors_before_anything_is_built() -> None:
    model = mlp()
    with pytest.raises(PruneError, match=r"cannot delete layer 'out' \(Dense\): its input has "
                                         r"shape \(None, 8\) but its output \(None, 3\)"):
        kerasprune.delete_layer(model, "out")
    with pytest.raises(PruneError, match=r"'add' \(Add\): it has 2 inputs"):
        kerasprune.delete_layer(shared_two_outputs(), "add")
    with pytest.raises(PruneError, match=r"cannot replace layer 'd2' \(Dense\) by 'z' \(Dense\): "
                                         r"it gives output shape \(None, 7\)"):
        kerasprune.replace_layer(model, "d2", L.Dense(7, name="z"))
    with pytest.raises(PruneError, match=r"'q' \(Dense\) after 'd1': it gives shape "
                                         r"\(None, 5\) where the layers reading 'd1' read "
                                         r"\(None, 8\)"):
        kerasprune.insert_layer(model, L.Dense(5, name="q"), after="d1")
    with pytest.raises(PruneError, match="already has a layer named 'd2'"):
        kerasprune.insert_layer(model, L.Dense(8, name="d2"), after="d1")
    built = L.Dense(8, name="w")
    built.build((None, 3))
    with pytest.raises(PruneError, match=r"weights of layer 'w' \(Dense\) do not fit"):
        kerasprune.insert_layer(model, built, after="d1")
    with pytest.raises(PruneError, match=r"layer 'c' \(Conv2D\) cannot take inputs of shape "
                                         r"\(None, 8\)"):
        kerasprune.insert_layer(model, L.Conv2D(8, 1, name="c"), after="d1")
    with pytest.raises(TypeError, match="exactly one of after= and before="):
        kerasprune.insert_layer(model, L.ReLU(), after="d1", before="d2")
    with pytest.raises(TypeError, match="exactly one"):
        kerasprune.insert_layer(model, L.ReLU())
    with pytest.raises(TypeError, match=r"keras\.layers\.Layer"):
        kerasprune.insert_layer(model, "relu", after="d1")  # type: ignore[arg-type]
    with pytest.raises(PruneError, match="'nope': no layer of that name"):
        kerasprune.delete_layer(model, "nope")


def test_errors_at_inputs_and_nested_boundaries() -> None:
    model = nested()
    with pytest.raises(PruneError, match="'x': it is an InputLayer"):
        kerasprune.insert_layer(model, L.ReLU(name="r"), after="x")
    with pytest.raises(PruneError, match="read in another \\(nested\\) model"):
        kerasprune.insert_layer(model, L.ReLU(name="r"), after="stem")
    inner = keras.Sequential([keras.Input((6,)), L.Dense(6, name="only")], name="inner")
    x = keras.Input((6,))
    lone = keras.Model(x, L.Dense(2, name="head")(inner(x)))
    with pytest.raises(PruneError, match="last layer between the input and an output of "
                                         "nested model 'inner'"):
        kerasprune.delete_layer(lone, "inner/only")
    with pytest.raises(PruneError, match="'inner' is a nested model, not a layer"):
        kerasprune.delete_layer(lone, "inner")
    with pytest.raises(PruneError, match="it has 2 outputs"):
        x = keras.Input((3, 2))
        seq, h, _ = L.LSTM(4, return_state=True, return_sequences=True, name="lstm")(x)
        kerasprune.insert_layer(keras.Model(x, [seq, h]), L.ReLU(name="r"), after="lstm")
