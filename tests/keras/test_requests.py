"""Requests that name layers oddly, models kerasprune cannot read, and the public list of
prunable layers (issue 9, items 8-10): each refusal is a short, specific error raised before
anything is built, and the model is left as it was."""

from __future__ import annotations

from typing import Any

import keras
import numpy as np
import pytest
from backends import BACKEND
from oracle import assert_equivalent, randomize
from test_errors import snapshot as config_and_weights

import kerasprune
from kerasprune.core.graph import PruneError

L = keras.layers


def two_layers() -> keras.Model:
    inp = keras.Input((4,), name="x")
    h = L.Dense(6, activation="relu", name="fc")(inp)
    h = L.Dense(5, name="fc2")(h)
    return randomize(keras.Model(inp, L.Dense(2, name="out")(h)))


def snapshot(model: keras.Model) -> tuple[list[np.ndarray], dict[str, Any]]:
    if "layers" in model.get_config():
        return config_and_weights(model)
    return [np.array(w) for w in model.get_weights()], model.get_config()  # subclassed


def assert_unchanged(model: keras.Model, before: tuple[list[np.ndarray], dict[str, Any]]) -> None:
    weights, config = snapshot(model)
    assert config == before[1]
    for got, want in zip(weights, before[0], strict=True):
        np.testing.assert_array_equal(got, want)


def refused(model: keras.Model, call: Any, error: type, *fragments: str) -> str:
    before = snapshot(model)
    with pytest.raises(error) as info:
        call()
    message = str(info.value)
    for fragment in fragments:
        assert fragment in message, f"{fragment!r} not in {message!r}"
    assert_unchanged(model, before)
    return message


def test_a_layer_named_twice_in_a_request_is_refused() -> None:
    model = two_layers()
    fc = model.get_layer("fc")
    for request in ({"fc": [0], fc: [1]}, {fc: [0], 1: [2]}):
        message = refused(model, lambda r=request: kerasprune.delete_neurons(model, r),
                          PruneError, "layer 'fc' is requested twice", "the layer object 'fc'")
        assert message.count("\n") == 0


def test_a_subclassed_model_gets_a_prune_error_that_says_what_to_do() -> None:
    class Sub(keras.Model):
        def __init__(self) -> None:
            super().__init__(name="sub")
            self.body = keras.Sequential([L.Dense(5), L.Dense(2)], name="body")

        def call(self, x: Any) -> Any:
            return self.body(x)

    model = Sub()
    model(np.zeros((1, 4), "float32"))
    message = refused(model, lambda: kerasprune.delete_neurons(model, "dense", [0]),
                      PruneError, "'sub' (Sub) is a subclassed keras.Model",
                      "Sequential and functional", "keras.Model(inputs, outputs)", "'body'")
    assert message.count("\n") <= 2
    for call in (kerasprune.prunable_layers, kerasprune.costs, kerasprune.to_graph):
        with pytest.raises(PruneError, match="subclassed"):
            call(model)
    # what the message suggests works: the Sequential it holds can be pruned
    pruned = kerasprune.delete_neurons(model.body, 0, [1])
    assert pruned.layers[0].units == 4


def test_an_index_or_name_of_an_input_layer_or_a_nested_model_says_what_it_is() -> None:
    sub_in = keras.Input((6,))
    sub = keras.Model(sub_in, L.Dense(3, name="inner")(sub_in), name="sub")
    inp = keras.Input((4,), name="x")
    model = randomize(keras.Model(inp, L.Dense(2, name="out")(sub(L.Dense(6, name="fc")(inp)))))
    names = [layer.name for layer in model.layers]
    refused(model, lambda: kerasprune.delete_neurons(model, names.index("x"), [0]),
            PruneError, "'x' is an InputLayer (a model input)")
    refused(model, lambda: kerasprune.delete_neurons(model, "x", [0]),
            PruneError, "'x' is an InputLayer")
    for ref in (names.index("sub"), "sub", model.get_layer("sub")):
        refused(model, lambda r=ref: kerasprune.delete_neurons(model, r, [0]),
                PruneError, "'sub' is a nested model, not a layer", "'sub/inner'")


def test_a_failing_request_of_several_layers_names_the_blocked_one() -> None:
    inp = keras.Input((4,))
    a = L.Dense(6, name="a")(inp)
    b = L.Dense(5, name="b")(a)
    c = L.LayerNormalization(name="ln")(b)
    model = randomize(keras.Model(inp, L.Dense(2, name="out")(c)))
    message = refused(model, lambda: kerasprune.delete_neurons(model, {"a": [0], "b": [1]}),
                      PruneError, "of 'b' (of the 2 requested layers 'a', 'b')",
                      "'ln' (LayerNormalization)")
    assert "'a' (" not in message.split(":")[0]


def backend_tensor(values: list[int], dtype: str = "int32") -> Any:
    return keras.ops.convert_to_tensor(np.array(values), dtype=dtype)


def test_backend_integer_tensors_are_neuron_indices() -> None:
    model = two_layers()
    wide = "int64" if BACKEND != "jax" else "uint8"  # (JAX has no int64 without x64)
    for neurons in (backend_tensor([1, 4]), backend_tensor([1, 4], wide),
                    [backend_tensor([1])[0], 4]):
        pruned = assert_equivalent(model, "fc", neurons)
        assert pruned.get_layer("fc").units == 4
    pruned = kerasprune.delete_neurons(model, {"fc": backend_tensor([0])})
    assert pruned.get_layer("fc").units == 5
    refused(model, lambda: kerasprune.delete_neurons(model, "fc", backend_tensor([1], "float32")),
            PruneError, "integer indices")


@pytest.mark.parametrize("value", ["yes", 1, None, np.array([True])])
def test_allow_output_change_must_be_a_bool(value: Any) -> None:
    model = two_layers()
    for call in (kerasprune.delete_neurons, kerasprune.dependency_group):
        refused(model, lambda c=call: c(model, "out", [0], allow_output_change=value),
                TypeError, "allow_output_change must be True or False")
    assert kerasprune.delete_neurons(model, "out", [0],
                                     allow_output_change=np.bool_(True)).output_shape == (None, 1)


def test_prunable_layers_lists_every_layer_with_neurons_and_why_not() -> None:
    sub_in = keras.Input((5,))
    sub = keras.Model(sub_in, L.Dense(3, name="inner")(sub_in), name="sub")
    inp = keras.Input((4,))
    a = L.Dense(6, activation="relu", name="a")(inp)
    b = L.Dense(5, name="b")(a)
    c = L.Dense(5, name="c")(L.LayerNormalization(name="ln")(b))
    one = L.Dense(1, name="one")(c)
    out = L.Dense(2, name="out")(L.Concatenate(name="cat")([sub(c), one]))
    model = randomize(keras.Model(inp, out))
    before = snapshot(model)
    found = {p.layer: p for p in kerasprune.prunable_layers(model)}
    assert_unchanged(model, before)
    assert list(found) == ["a", "b", "c", "sub/inner", "one", "out"]
    assert [p.layer for p in found.values() if p.prunable] == ["a", "c", "sub/inner"]
    assert found["a"].kind == "Dense" and found["a"].neurons == 6
    assert found["a"].group == ("a",)
    assert "LayerNormalization" in (found["b"].reason or "")
    assert found["one"].reason == "layer 'one' has a single neuron"
    assert found["out"].output and "allow_output_change" in (found["out"].reason or "")
    # every layer it calls prunable can be pruned, and every reason is the real error
    for p in found.values():
        if p.prunable:
            kerasprune.delete_neurons(model, p.layer, [0])
        elif p.neurons and p.neurons > 1:
            with pytest.raises(PruneError) as info:
                kerasprune.delete_neurons(model, p.layer, [0])
            assert str(info.value) == p.reason


def test_prunable_layers_is_exported() -> None:
    assert "prunable_layers" in kerasprune.__all__
    assert kerasprune.prunable_layers is kerasprune.adapters.keras.prunable_layers


@pytest.mark.skipif(BACKEND != "tensorflow", reason="one backend suffices: no backend code")
def test_a_custom_class_with_a_keras_name_does_not_borrow_its_rule() -> None:
    class Dense(L.Layer):  # a user's class that happens to be called Dense
        def __init__(self, units: int = 3, **kwargs: Any) -> None:
            super().__init__(**kwargs)
            self.units = units

        def call(self, x: Any) -> Any:
            return keras.ops.tile(x, (1, 2))[:, : self.units]

        def get_config(self) -> dict[str, Any]:
            return {**super().get_config(), "units": self.units}

    inp = keras.Input((4,))
    h = L.Dense(6, name="real")(inp)
    model = randomize(keras.Model(inp, L.Dense(2, name="out")(Dense(5, name="mine")(h))))
    kinds = {s.name: s.kind for s in kerasprune.to_graph(model).graph.layers.values()}
    assert kinds["real"] == "Dense"
    assert kinds["mine"].endswith(".Dense") and kinds["mine"] != "Dense"
    with pytest.raises(kerasprune.UnsupportedLayerError, match="'mine'"):
        kerasprune.delete_neurons(model, "real", [0])


def test_a_functional_subclass_with_its_own_config_says_how_to_prune_it() -> None:
    class Head(keras.Model):
        """Like keras-hub's backbones: a functional graph, a config of its own."""

        def __init__(self, units: int = 6, **kwargs: Any) -> None:
            inp = keras.Input((4,))
            out = L.Dense(2, name="out")(L.Dense(units, name="fc")(inp))
            super().__init__(inp, out, **kwargs)
            self.units = units

        def get_config(self) -> dict[str, Any]:
            return {"units": self.units, "name": self.name}

    model = randomize(Head(name="head"))
    refused(model, lambda: kerasprune.delete_neurons(model, "fc", [0]), PruneError,
            "'head' (Head) is a functional model with a config of its own",
            "keras.Model(model.inputs, model.outputs)")
    plain = keras.Model(model.inputs, model.outputs)
    pruned = assert_equivalent(plain, "fc", [0, 3])
    assert pruned.get_layer("fc").units == 4


def test_get_apoz_without_any_relu_explains_briefly() -> None:
    inp = keras.Input((8, 8, 3))
    x = inp
    for i in range(12):  # an EfficientNet-like stack: swish everywhere, residual adds
        y = L.Conv2D(4, 1, activation="swish", name=f"conv{i}")(x)
        x = L.Add(name=f"add{i}")([x, L.Conv2D(3, 1, name=f"proj{i}")(y)])
    model = randomize(keras.Model(inp, L.Dense(2, name="out")(L.Flatten()(x))))
    x_data = np.random.default_rng(0).standard_normal((2, 8, 8, 3)).astype("float32")
    with pytest.raises(PruneError) as info:
        kerasprune.get_apoz(model, x_data, verbose=0)
    message = str(info.value)
    assert "no layer of the model can be measured" in message
    assert "no ReLU before" in message and "+" in message  # grouped, names elided
    assert message.count("\n") <= 6 and len(message) < 1000


def test_count_is_the_deprecated_name_of_costs() -> None:
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3, name="h"),
                              keras.layers.Dense(2, name="out")])
    with pytest.warns(DeprecationWarning, match=r"kerasprune\.costs"):
        old = kerasprune.count(model)
    assert old == kerasprune.costs(model)
    assert [(c.name, c.params) for c in old] == [("h", 15), ("out", 8)]
