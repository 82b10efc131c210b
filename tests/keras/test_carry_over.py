"""Whatever a model holds off the path of a deletion is carried over, unchanged and
independent (issue 9): recurrent layers, attention, ``Lambda``, custom and preprocessing
layers, raw operations, layers with several outputs or called with keyword tensors, masks.

Each model is pruned somewhere else and checked three ways: the oracle (``oracle.py``), the
carried-over layers (same config, same weights, new variables), and the pruned model's
contract: it accepts what the original accepts (same input specs, unknown dimensions
included, a new sequence length) and trains (one ``fit`` step) without touching the original.
"""

from __future__ import annotations

from typing import Any

import keras
import numpy as np
import pytest
from backends import BACKEND, as_numpy
from oracle import assert_equivalent, randomize

import kerasprune

L = keras.layers


def rand(*shape: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(shape).astype("float32")


def values(model: keras.Model) -> list[np.ndarray]:
    return [keras.ops.convert_to_numpy(w) for w in model.weights]


def specs(model: keras.Model) -> list[tuple[Any, str]]:
    return [(tuple(t.shape), keras.backend.standardize_dtype(t.dtype)) for t in model.inputs]


def check_contract(model: keras.Model, pruned: keras.Model, x: Any, carried: list[str]) -> None:
    """Same inputs, carried layers equal and independent, predicts on ``x``, trains, and the
    original is untouched."""
    assert specs(pruned) == specs(model)
    before = values(model)
    for name in carried:
        old, new = model.get_layer(name), pruned.get_layer(name)
        assert new is not old
        assert type(new) is type(old)
        assert new.get_config() == old.get_config(), name
        assert len(new.weights) == len(old.weights)
        for a, b in zip(old.weights, new.weights, strict=True):
            assert a is not b
            np.testing.assert_array_equal(keras.ops.convert_to_numpy(a),
                                          keras.ops.convert_to_numpy(b))
    y = pruned.predict(x, verbose=0)
    targets = keras.tree.map_structure(np.zeros_like, y)
    pruned.compile(optimizer=keras.optimizers.SGD(0.01), loss="mse")
    pruned.fit(x, targets, epochs=1, batch_size=len(keras.tree.flatten(x)[0]), verbose=0)
    for a, b in zip(before, values(model), strict=True):
        np.testing.assert_array_equal(a, b)


# --------------------------------------------------------------------------------------------
# Layers kerasprune has no rule for, off the path
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("rnn", [L.LSTM, L.GRU, L.SimpleRNN])
def test_recurrent_layers_off_the_path(rnn: type) -> None:
    inp = keras.Input((None, 4))
    h = L.Dense(6, activation="relu", name="d")(inp)
    h = L.Dense(5, name="d2")(h)
    seq = rnn(4, return_sequences=True, name="rnn")(h)
    out = L.Dense(2, name="out")(L.GlobalAveragePooling1D(name="gap")(seq))
    model = randomize(keras.Model(inp, out))
    x = rand(3, 5, 4)
    pruned = assert_equivalent(model, "d", [0, 4], x)
    assert pruned.get_layer("d2").kernel.shape == (4, 5)
    # a new sequence length: the input's unknown time axis stays unknown
    check_contract(model, pruned, rand(3, 9, 4, seed=1), ["rnn", "out"])


def test_attention_off_the_path() -> None:
    inp = keras.Input((None, 4))
    h = L.Dense(6, activation="relu", name="d")(inp)
    h = L.Dense(4, name="d2")(h)
    att = L.MultiHeadAttention(2, 3, name="mha")(h, h)
    att = L.LayerNormalization(name="ln")(att + h)
    out = L.Dense(2, name="out")(att)
    model = randomize(keras.Model(inp, out))
    pruned = assert_equivalent(model, "d", [1, 2], rand(2, 5, 4))
    check_contract(model, pruned, rand(2, 7, 4, seed=1), ["mha", "ln"])


def test_lambda_off_the_path_keeps_its_function() -> None:
    scale = 3.0  # a closure: the rebuilt Lambda calls the user's own function

    inp = keras.Input((4,))
    h = L.Lambda(lambda t: t * scale, name="lam")(inp)
    h = L.Dense(6, activation="relu", name="d")(h)
    out = L.Dense(2, name="out")(h)
    model = randomize(keras.Model(inp, out))
    pruned = assert_equivalent(model, "d", [0], rand(3, 4))
    assert pruned.get_layer("lam").function is model.get_layer("lam").function
    check_contract(model, pruned, rand(3, 4), [])


def test_lambda_with_output_shape_function_in_a_sequential() -> None:
    model = randomize(keras.Sequential([
        keras.Input((3, 4)),
        L.Lambda(lambda t: keras.ops.reshape(t, (-1, 12)), output_shape=lambda s: (s[0], 12),
                 name="flat"),
        L.Dense(5, name="d"), L.Dense(2, name="out")]))
    pruned = assert_equivalent(model, "d", [1], rand(2, 3, 4))
    assert type(pruned) is keras.Sequential
    assert pruned.get_layer("flat").function is model.get_layer("flat").function
    check_contract(model, pruned, rand(2, 3, 4), [])


class Scale(L.Layer):
    """A custom layer that is not registered for serialization, with a weight of its own."""

    def __init__(self, factor: float = 2.0, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.factor = factor

    def build(self, input_shape: Any) -> None:
        self.w = self.add_weight(shape=(input_shape[-1],), initializer="ones", name="w")

    def call(self, x: Any) -> Any:
        return x * self.w * self.factor

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "factor": self.factor}


def test_unregistered_custom_layer_off_the_path() -> None:
    inp = keras.Input((4,))
    h = Scale(0.5, name="scale")(inp)
    h = L.Dense(6, activation="relu", name="d")(h)
    out = L.Dense(2, name="out")(h)
    model = randomize(keras.Model(inp, out))
    pruned = assert_equivalent(model, "d", [2, 3], rand(3, 4))
    check_contract(model, pruned, rand(3, 4), ["scale"])


def test_custom_layer_on_the_path_is_refused_before_anything_is_built() -> None:
    inp = keras.Input((4,))
    h = L.Dense(6, name="d")(inp)
    out = L.Dense(2, name="out")(Scale(name="scale")(h))
    model = randomize(keras.Model(inp, out))
    with pytest.raises(kerasprune.UnsupportedLayerError, match=r"'scale' \(Scale\).*no rule"):
        kerasprune.delete_neurons(model, "d", [0])


def test_preprocessing_layers_off_the_path() -> None:
    norm = L.Normalization(name="norm")
    norm.adapt(rand(20, 4) * 3.0 + 1.0)
    inp = keras.Input((4,))
    h = L.Rescaling(0.5, offset=0.1, name="rescale")(norm(inp))
    h = L.Dense(6, activation="relu", name="d")(h)
    out = L.Dense(2, name="out")(h)
    model = randomize(keras.Model(inp, out))
    for w in model.get_layer("norm").weights:  # randomize overwrote the adapted statistics
        if w.name == "variance":
            w.assign(np.abs(keras.ops.convert_to_numpy(w)) + 0.5)
    model.get_layer("norm").finalize_state()  # what adapt() does after setting them
    pruned = assert_equivalent(model, "d", [5], rand(3, 4))
    # the statistics it derives from its variables, not only the variables, are carried
    x = rand(3, 4, seed=1)
    np.testing.assert_allclose(as_numpy(pruned.get_layer("norm")(x)),
                               as_numpy(model.get_layer("norm")(x)), rtol=1e-6)
    check_contract(model, pruned, rand(3, 4), ["norm", "rescale"])


@pytest.mark.skipif(BACKEND != "tensorflow", reason="string tensors need TensorFlow")
def test_adapted_string_lookup_keeps_its_vocabulary() -> None:
    lookup = L.StringLookup(name="lookup")
    lookup.adapt(np.array(["a", "b", "c", "b"]))
    inp = keras.Input((3,), dtype="string")
    h = L.Embedding(lookup.vocabulary_size(), 5, name="emb")(lookup(inp))
    h = L.Dense(4, name="d")(L.Flatten(name="flat")(h))
    model = randomize(keras.Model(inp, L.Dense(2, name="out")(h)))
    import tensorflow as tf

    x = tf.constant([["a", "c", "z"], ["b", "b", "a"]])
    pruned = kerasprune.delete_neurons(model, "emb", [1, 3])
    # (the oracle's clone_model reference would lose the vocabulary: checked directly)
    assert pruned.get_layer("lookup").get_vocabulary() == lookup.get_vocabulary()
    np.testing.assert_array_equal(as_numpy(pruned.get_layer("lookup")(x)),
                                  as_numpy(lookup(x)))
    assert pruned.predict(x, verbose=0).shape == (2, 2)
    assert pruned.get_layer("d").kernel.shape == (9, 4)


# --------------------------------------------------------------------------------------------
# Calls: several outputs, keyword tensors, masks, training flags, shared layers
# --------------------------------------------------------------------------------------------


def test_layer_with_several_outputs_and_a_keyword_call() -> None:
    inp = keras.Input((None, 4))
    masked = L.Masking(0.0, name="mask")(inp)
    h = L.Dense(6, name="d")(inputs=masked)  # a keyword tensor
    seq, state_h, _ = L.LSTM(5, return_sequences=True, return_state=True, name="lstm")(h)
    out = L.Dense(3, name="out")(state_h)
    model = randomize(keras.Model(inp, [out, seq]))
    x = rand(2, 6, 4)
    x[0, 4:] = 0.0  # masked steps: the LSTM's mask must survive the rebuild
    pruned = assert_equivalent(model, "out", [0], x, allow_output_change=True)
    assert pruned.outputs[0].shape[-1] == 2
    check_contract(model, pruned, x, ["lstm", "d", "mask"])


def test_masks_from_an_embedding_and_an_explicit_not_equal() -> None:
    tokens = keras.Input((None,), dtype="int32")
    emb = L.Embedding(10, 6, mask_zero=True, name="emb")(tokens)
    h = L.Dense(5, activation="relu", name="d")(emb)
    mask = keras.ops.not_equal(tokens, 0)
    seq = L.GRU(4, name="gru")(h, mask=mask)
    model = randomize(keras.Model(tokens, L.Dense(2, name="out")(seq)))
    x = np.array([[3, 4, 0, 0], [1, 2, 5, 9]], dtype="int32")
    pruned = assert_equivalent(model, "emb", [0, 1], x)
    assert pruned.get_layer("d").kernel.shape == (4, 5)
    check_contract(model, pruned, np.array([[3, 0, 0], [1, 2, 5]], dtype="int32"),
                   ["gru", "out"])


def test_training_flags_and_a_shared_layer_are_kept() -> None:
    inp = keras.Input((4,))
    h = L.Dense(6, name="d")(inp)
    h = L.Dropout(0.5, name="drop")(h, training=False)  # an explicit training flag
    h = L.BatchNormalization(name="bn")(h, training=False)
    shared = L.Dense(3, name="shared")
    out = L.Add(name="add")([shared(h), shared(keras.ops.tanh(h))])
    model = randomize(keras.Model(inp, out))
    pruned = assert_equivalent(model, "d", [1, 4], rand(4, 4))
    assert len(pruned.get_layer("shared").weights) == 2  # one layer, called twice
    assert pruned.get_layer("shared").kernel.shape == (4, 3)
    check_contract(model, pruned, rand(4, 4), [])


def test_operations_off_the_path() -> None:
    inp = keras.Input((None, 4))
    h = keras.ops.transpose(inp, (0, 2, 1))  # no rule, but not on the path
    h = keras.ops.mean(h, axis=-1)
    h = L.Dense(6, activation="relu", name="d")(h)
    out = L.Dense(2, name="out")(h)
    model = randomize(keras.Model(inp, out))
    pruned = assert_equivalent(model, "d", [0, 5], rand(2, 3, 4))
    check_contract(model, pruned, rand(2, 8, 4), [])


def test_nested_model_with_a_recurrent_layer() -> None:
    sub_in = keras.Input((None, 5))
    sub = keras.Model(sub_in, L.SimpleRNN(3, name="rnn")(L.Dense(5, name="sd")(sub_in)),
                      name="sub")
    inp = keras.Input((None, 4))
    h = L.Dense(5, name="d")(inp)
    out = L.Dense(2, name="out")(sub(h))
    model = randomize(keras.Model(inp, out))
    pruned = assert_equivalent(model, "d", [2], rand(2, 6, 4))
    assert pruned.get_layer("sub").get_layer("sd").kernel.shape == (4, 5)
    assert pruned.get_layer("sub").inputs[0].shape == (None, None, 4)
    check_contract(model, pruned, rand(2, 3, 4), ["out"])
