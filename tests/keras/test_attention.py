"""Attention, the residual stream and normalizations, checked with the zeroing oracle.

A head deleted from a ``MultiHeadAttention`` must give the original model with that head's
rows of the output projection set to zero; deleted key dimensions the original with those
dimensions of the query projection zeroed (the pruned layer rescales its queries, so that its
``1/sqrt(key_dim)`` keeps the old scores); deleted value dimensions the original with those
rows of the output projection zeroed. ``oracle.zeroed_reference`` zeroes every weight of the
deleted parts, which is equivalent. Models are called directly (not through ``predict``).
"""

from __future__ import annotations

from typing import Any

import keras
import numpy as np
import pytest
from backends import BACKEND, as_numpy
from oracle import ATOL, randomize, zeroed_reference

import kerasprune
from kerasprune import PruneError

L = keras.layers
SEQ, WIDTH = 5, 8


@keras.saving.register_keras_serializable(package="kerasprune_attention_tests")
class NumpyZeros(keras.initializers.Initializer):
    """Zeros made by NumPy: JAX compiles a random (even a ``Zeros``) initializer anew for
    every weight shape, seconds per MultiHeadAttention build. ``randomize`` sets the values."""

    def __call__(self, shape: Any, dtype: Any = None) -> Any:
        return np.zeros(shape, dtype=keras.backend.standardize_dtype(dtype or "float32"))

    def get_config(self) -> dict[str, Any]:
        return {}


def model_of(inputs: Any, outputs: Any, name: str | None = None) -> keras.Model:
    """A functional model with random weights; its layers' (and rebuilt copies') initializers
    are NumPy zeros."""
    return randomize(keras.Model(inputs, outputs, name=name))


def cheap(layer: Any) -> Any:
    """An unbuilt layer that builds with NumPy zeros."""
    for name in ("kernel", "bias", "embeddings", "gamma", "beta"):
        if hasattr(layer, f"{name}_initializer"):
            setattr(layer, f"{name}_initializer", NumpyZeros())
    return layer


def attention(*args: Any, **kwargs: Any) -> L.MultiHeadAttention:
    return L.MultiHeadAttention(*args, kernel_initializer=NumpyZeros(),
                                bias_initializer=NumpyZeros(), **kwargs)


def _inputs(model: keras.Model, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    out = []
    for t in model.inputs:
        shape = (2, *t.shape[1:])
        if "int" in str(t.dtype):
            out.append(rng.integers(0, 11, shape).astype("int32"))
        elif t.name.startswith("mask"):
            out.append((rng.random(shape) > 0.3).astype("float32"))
        else:
            out.append(rng.standard_normal(shape).astype("float32"))
    return out


def _out(model: keras.Model, x: list[np.ndarray]) -> np.ndarray:
    return as_numpy(model(x if len(x) > 1 else x[0], training=False), dtype="float32")


def equivalent(model: keras.Model, request: Any, **kwargs: Any) -> keras.Model:
    """Prune ``request`` (a mapping) and check the zeroing oracle; the oracle must differ
    from the original, so that a deletion that changes nothing cannot pass."""
    pruned = kerasprune.delete_neurons(model, request, **kwargs)
    reference = zeroed_reference(model, request, **kwargs)
    x = _inputs(model)
    got, want = _out(pruned, x), _out(reference, x)
    assert not np.allclose(want, _out(model, x), atol=ATOL), "the deletion changed nothing"
    assert got.shape == want.shape, (got.shape, want.shape)
    np.testing.assert_allclose(got, want, atol=ATOL, rtol=1e-4)
    return pruned


def self_attention(use_bias: bool = True, output_shape: int | None = None,
                   causal: bool = False, gate: bool = False, name: str | None = None
                   ) -> keras.Model:
    inp = L.Input((SEQ, WIDTH), name="x")
    h = cheap(L.Dense(WIDTH, name="proj"))(inp)
    mha = attention(3, 4, use_bias=use_bias,
                               output_shape=output_shape, use_gate=gate, name="mha")
    a = mha(h, h, use_causal_mask=causal)
    out = cheap(L.Dense(3, name="head"))(a)
    return model_of(inp, out, name)


def cross_attention(keyword: bool = True) -> keras.Model:
    q_in, kv_in = L.Input((SEQ, WIDTH), name="q"), L.Input((6, 4), name="kv")
    mask = L.Input((SEQ, 6), name="mask")
    q = cheap(L.Dense(WIDTH, name="dq"))(q_in)
    k, v = cheap(L.Dense(6, name="dk"))(kv_in), cheap(L.Dense(7, name="dv"))(kv_in)
    mha = attention(2, 3, name="mha")
    if keyword:
        a = mha(query=q, value=v, key=k, attention_mask=mask)
    else:
        a = mha(q, v, k, attention_mask=mask)
    out = cheap(L.Dense(3, name="head"))(a)
    return model_of([q_in, kv_in, mask], out)


_TENSORFLOW_ONLY = pytest.mark.skipif(
    BACKEND != "tensorflow", reason="JAX compiles the attention anew for every shape: the "
    "other combinations run there")


@pytest.mark.parametrize(("use_bias", "output_shape"), [
    (True, None), (False, WIDTH), pytest.param(False, None, marks=_TENSORFLOW_ONLY),
    pytest.param(True, WIDTH, marks=_TENSORFLOW_ONLY)])
def test_heads_and_dims_self_attention(use_bias: bool, output_shape: int | None) -> None:
    model = self_attention(use_bias, output_shape)
    pruned = equivalent(model, {"mha:heads": [1]})
    config = pruned.get_layer("mha").get_config()
    assert config["num_heads"] == 2
    pruned = equivalent(model, {"mha:heads": [0], "mha:key_dim": [2], "mha:value_dim": [0]})
    config = pruned.get_layer("mha").get_config()
    assert (config["num_heads"], config["key_dim"], config["value_dim"]) == (2, 3, 3)


@pytest.mark.parametrize("part", ["key_dim", "value_dim"])
def test_key_or_value_dim_alone(part: str) -> None:
    """Keras' MultiHeadAttention runs with value_dim != key_dim on TensorFlow (and torch),
    not on JAX (jax.nn.dot_product_attention): there kerasprune refuses it before building.
    Deleting key dimensions alone checks the query's rescaling (1/sqrt(key_dim))."""
    model = self_attention()
    if BACKEND == "jax":
        with pytest.raises(PruneError, match=r"would leave key_dim=.*JAX"):
            kerasprune.delete_neurons(model, {f"mha:{part}": [1]})
        return
    pruned = equivalent(model, {f"mha:{part}": [1]})
    assert pruned.get_layer("mha").get_config()[part] == 3


def test_output_channels_and_input_reads() -> None:
    model = self_attention()
    pruned = equivalent(model, {"mha": [2, 5]})  # its own neurons: the output projection
    assert pruned.get_layer("mha").get_config()["output_shape"] == (WIDTH - 2,)
    pruned = equivalent(model, {"proj": [1]})  # read by query, key and value
    assert pruned.get_layer("mha").get_config()["output_shape"] == (WIDTH,)
    assert kerasprune.dependency_group(model, "mha", [0]).neurons().keys() == {"mha"}


@pytest.mark.parametrize("keyword", [True, False])
def test_cross_attention_with_key_and_mask(keyword: bool) -> None:
    model = cross_attention(keyword)
    for request in ({"dq": [0]}, {"dk": [1, 4]}, {"dv": [6]}, {"mha:heads": [1]},
                    {"mha:key_dim": [1], "mha:value_dim": [0]}):
        equivalent(model, request)
    deletion = kerasprune.dependency_group(model, "dk", [0])
    assert set(deletion.layers()) == {"dk", "mha"}


def test_causal_mask_and_gate() -> None:
    equivalent(self_attention(causal=True), {"mha:heads": [2], "mha:key_dim": [1],
                                             "mha:value_dim": [3]})
    equivalent(self_attention(gate=True), {"mha:heads": [0], "mha:value_dim": [3],
                                           "mha:key_dim": [0], "proj": [2]})


def test_attention_scores_refuse_heads_only() -> None:
    inp = L.Input((SEQ, WIDTH))
    a, scores = attention(2, 4, name="mha")(inp, inp, return_attention_scores=True)
    model = model_of(inp, [cheap(L.Dense(2, name="head"))(a), scores])
    with pytest.raises(PruneError, match="attention scores"):
        kerasprune.dependency_group(model, "mha:heads", [0])
    pruned = kerasprune.delete_neurons(model, {"mha:key_dim": [1], "mha:value_dim": [1]})
    assert tuple(pruned.outputs[1].shape) == tuple(model.outputs[1].shape)


def test_part_request_errors() -> None:
    model = self_attention()
    with pytest.raises(PruneError, match=r"has no part 'units'.*'mha:heads'"):
        kerasprune.dependency_group(model, "mha:units", [0])
    with pytest.raises(PruneError, match="no parts"):
        kerasprune.dependency_group(model, "proj:heads", [0])
    with pytest.raises(PruneError, match="all 3 units"):
        kerasprune.dependency_group(model, "mha:heads", [0, 1, 2])
    with pytest.raises(PruneError, match="out of range"):
        kerasprune.dependency_group(model, "mha:value_dim", [4])


def test_channels_of_a_mask_are_refused() -> None:
    inp = L.Input((SEQ, WIDTH))
    mask = cheap(L.Dense(SEQ, name="maker"))(inp)  # a mask made by a layer with neurons
    a = attention(2, 4, name="mha")(inp, inp, attention_mask=mask)
    model = keras.Model(inp, cheap(L.Dense(2))(a))
    with pytest.raises(PruneError, match="'attention_mask' input"):
        kerasprune.dependency_group(model, "maker", [0])


def transformer(vocab: int = 11) -> keras.Model:
    """Embedding, a post-norm encoder block (attention and a ReLU feed-forward, each added to
    the stream and normalised) and a classifier."""
    ids = L.Input((SEQ,), dtype="int32", name="ids")
    x = cheap(L.Embedding(vocab, WIDTH, name="embed"))(ids)
    a = attention(2, 4, name="mha")(x, x)
    x = cheap(L.LayerNormalization(name="ln1"))(L.Add(name="add1")([x, a]))
    f = cheap(L.Dense(16, activation="relu", name="ffn_in"))(x)
    f = cheap(L.Dense(WIDTH, name="ffn_out"))(f)
    x = cheap(L.LayerNormalization(name="ln2"))(L.Add(name="add2")([x, f]))
    x = L.GlobalAveragePooling1D(name="pool")(x)
    return model_of(ids, cheap(L.Dense(2, name="classes"))(x))


def test_transformer_heads_and_ffn_are_exact() -> None:
    model = transformer()
    equivalent(model, {"mha:heads": [1]})
    equivalent(model, {"ffn_in": [0, 5, 9]})
    equivalent(model, {"mha:heads": [0], "mha:value_dim": [2], "mha:key_dim": [1],
                       "ffn_in": [3]})


def test_model_width_needs_the_opt_in_and_reports_deviation() -> None:
    model = transformer()
    with pytest.raises(PruneError, match="allow_inexact=True"):
        kerasprune.dependency_group(model, "embed", [1, 6])
    deletion = kerasprune.dependency_group(model, "embed", [1, 6], allow_inexact=True)
    assert set(deletion.neurons()) == {"embed", "mha", "ffn_out"}  # the stream's producers
    assert deletion.inexact == ("ln1", "ln2")
    pruned = kerasprune.delete_neurons(model, "embed", [1, 6], allow_inexact=True)
    assert pruned.get_layer("ln1").get_weights()[0].shape == (WIDTH - 2,)
    assert pruned.get_layer("mha").get_config()["output_shape"] is None
    x = _inputs(model)
    report = kerasprune.deviation(model, "embed", [1, 6], x[0], pruned=pruned)
    assert report.inexact == ("ln1", "ln2")
    want = _out(zeroed_oracle(model, {"embed": [1, 6]}), x)
    worst = float(np.abs(_out(pruned, x) - want).max())
    assert report.max_abs == pytest.approx(worst, rel=1e-4, abs=1e-6)
    assert report.max_abs > 1e-3  # the normalization's statistics changed
    exact = kerasprune.deviation(model, "mha:heads", [0], x[0])
    assert exact.inexact == () and exact.max_abs < ATOL


def zeroed_oracle(model: keras.Model, request: Any) -> keras.Model:
    return zeroed_reference(model, request, allow_inexact=True)


def test_rms_normalization_opt_in() -> None:
    inp = L.Input((SEQ, WIDTH))
    h = cheap(L.Dense(WIDTH, name="proj"))(inp)
    h = L.RMSNormalization(name="rms")(h)
    model = model_of(inp, cheap(L.Dense(2, name="head"))(h))
    with pytest.raises(PruneError, match=r"'rms' \(RMSNormalization\).*allow_inexact"):
        kerasprune.delete_neurons(model, "proj", [3])
    pruned = kerasprune.delete_neurons(model, "proj", [3], allow_inexact=True)
    assert pruned.get_layer("rms").get_weights()[0].shape == (WIDTH - 1,)
    assert kerasprune.deviation(model, "proj", [3], _inputs(model)[0]).max_abs > 1e-4


def test_layer_norm_over_another_axis_is_exact() -> None:
    inp = L.Input((SEQ, WIDTH))
    h = cheap(L.Dense(WIDTH, name="proj"))(inp)
    h = cheap(L.LayerNormalization(axis=1, name="ln"))(h)  # over positions: channels apart
    model = model_of(inp, cheap(L.Dense(2, name="head"))(h))
    equivalent(model, {"proj": [0, 4]})


def test_einsum_dense_feed_forward_and_heads() -> None:
    """EinsumDense read from its equation: a feed-forward block's hidden units, a projection
    to (heads, dims) that loses dims in every head, and the merge that reads them."""
    inp = L.Input((SEQ, WIDTH))
    h = cheap(L.EinsumDense("btd,df->btf", output_shape=(None, 12), bias_axes="f",
                      activation="relu", name="ffn_in"))(inp)
    h = cheap(L.EinsumDense("btf,fd->btd", output_shape=(None, WIDTH), bias_axes="d",
                      name="ffn_out"))(h)
    q = cheap(L.EinsumDense("abc,cde->abde", output_shape=(None, 2, 3), bias_axes="de",
                      name="heads"))(h)
    out = cheap(L.EinsumDense("abde,def->abf", output_shape=(None, 4), name="merge"))(q)
    model = model_of(inp, out)
    pruned = equivalent(model, {"ffn_in": [0, 7], "heads": [1]})
    assert tuple(pruned.get_layer("ffn_in").get_config()["output_shape"]) == (None, 10)
    assert tuple(pruned.get_layer("heads").get_config()["output_shape"]) == (None, 2, 2)
    assert pruned.get_layer("merge").get_weights()[0].shape == (2, 2, 4)
    equivalent(model, {"ffn_out": [2]})


def test_einsum_dense_equations_it_cannot_read() -> None:
    inp = L.Input((3, 5))
    h = cheap(L.Dense(3, name="maker"))(L.Permute((2, 1))(inp))
    h = L.Permute((2, 1))(h)
    h = cheap(L.EinsumDense("ab...,bc->ac...", output_shape=(4, 5), name="right"))(h)
    model = keras.Model(inp, L.Flatten()(h))
    with pytest.raises(PruneError, match=r"'right' \(EinsumDense\).*'\.\.\.' on the left"):
        kerasprune.dependency_group(model, "right", [0])


def test_keras_hub_embeddings_carry_the_model_width() -> None:
    """KerasHub's embeddings as layers of a functional model: TokenAndPositionEmbedding makes
    the stream's channels, PositionEmbedding follows Embedding's; without a normalization the
    model width is deleted exactly."""
    hub = pytest.importorskip("keras_hub")
    ids = L.Input((SEQ,), dtype="int32", name="ids")
    x = cheap(hub.layers.TokenAndPositionEmbedding(11, SEQ, WIDTH, tie_weights=False,
                                                   embeddings_initializer=NumpyZeros(),
                                                   name="tpe"))(ids)
    x = L.Add(name="add")([x, attention(2, 4, name="mha")(x, x)])
    e = cheap(L.Embedding(11, WIDTH, name="embed"))(ids)
    e = L.Add(name="add_pos")([e, hub.layers.PositionEmbedding(
        SEQ, initializer=NumpyZeros(), name="pos")(e)])
    x = L.Concatenate(name="both")([x, e])
    model = model_of(ids, cheap(L.Dense(2, name="classes"))(L.GlobalAveragePooling1D()(x)))
    pruned = equivalent(model, {"tpe": [0, 5], "embed": [3]})
    assert pruned.get_layer("tpe").get_config()["embedding_dim"] == WIDTH - 2
    assert pruned.get_layer("pos").get_weights()[0].shape == (SEQ, WIDTH - 1)
    assert set(kerasprune.dependency_group(model, "tpe", [1]).neurons()) == {"tpe", "mha"}


def test_pruned_attention_round_trips_through_a_keras_file(tmp_path: Any) -> None:
    model = self_attention(output_shape=WIDTH)
    pruned = kerasprune.delete_neurons(model, {"mha:heads": [0], "mha": [1]})
    path = tmp_path / "pruned.keras"
    pruned.save(path)
    loaded = keras.models.load_model(path)
    x = _inputs(model)
    np.testing.assert_allclose(_out(loaded, x), _out(pruned, x), atol=1e-6)
    assert loaded.get_layer("mha").get_config()["num_heads"] == 2


def test_parts_of_a_layer_in_a_nested_model() -> None:
    inner = self_attention(name="inner")
    inp = L.Input((SEQ, WIDTH))
    x = inner(cheap(L.Dense(WIDTH, name="pre"))(inp))
    model = model_of(inp, cheap(L.Dense(2, name="post"))(x), "outer")
    deletion = kerasprune.dependency_group(model, "mha:heads", [2])
    assert {name: dict(parts) for name, parts in deletion.parts.items()}.keys() == {
        f"{inner.name}/mha"}
    equivalent(model, {"mha:heads": [2]})
