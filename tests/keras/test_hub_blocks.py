"""KerasHub's transformer blocks and a user's block: deletions reach inside containing layers.

The oracle is the zeroing one (tests/keras/oracle.py), with the consumers' weights found by
their variable paths (a block's sublayers are not layers of the model).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from backends import as_numpy, keras
from oracle import randomize

import kerasprune
from kerasprune.core import PruneError
from kerasprune.core.graph import LayerSpec, Shape
from kerasprune.core.rules import OUT, RULES, Composite, Inner, Step, Wiring, rule_for

keras_hub = pytest.importorskip("keras_hub")

LENGTH, WIDTH, HEADS, UNITS = 5, 8, 2, 12


def encoder_model(normalize_first: bool = False, blocks: int = 1) -> keras.Model:
    x = keras.Input((LENGTH, 3))
    h = keras.layers.Dense(WIDTH, name="embed")(x)
    for i in range(blocks):
        h = keras_hub.layers.TransformerEncoder(UNITS, HEADS, normalize_first=normalize_first,
                                                name=f"encoder{i}")(h)
    y = keras.layers.Dense(2, name="head")(keras.layers.GlobalAveragePooling1D()(h))
    return randomize(keras.Model(x, y))


def decoder_model(cross: bool) -> keras.Model:
    x = keras.Input((LENGTH, 3))
    h = keras.layers.Dense(WIDTH, name="embed")(x)
    context = keras.layers.Dense(WIDTH, name="context")(x)
    block = keras_hub.layers.TransformerDecoder(UNITS, HEADS, name="decoder")
    h = block(h, context) if cross else block(h)
    y = keras.layers.Dense(2, name="head")(keras.layers.GlobalAveragePooling1D()(h))
    return randomize(keras.Model(x, y))


def zeroed(model: keras.Model, layer: Any, neurons: Sequence[int] | None,
           **kwargs: Any) -> keras.Model:
    """A copy of ``model`` whose consumers of the deleted channels read zeros, each weight
    found by its path (``block/sublayer/kernel``)."""
    deletion = kerasprune.dependency_group(model, layer, neurons, **kwargs)
    graph = deletion.graph
    ref = keras.models.clone_model(model)
    ref.set_weights(model.get_weights())
    by_path = {v.path: v for v in ref.weights}
    for name, change in deletion.layers().items():
        spec = graph.layers[name]
        node = graph.calls(name)[0]
        rule = rule_for(spec.kind, kwargs.get("rules"))
        axes = [deletion.tensors[t][0] if t in deletion.tensors else None for t in node.inputs]
        if rule.link(spec, [graph.shapes[t] for t in node.inputs],
                     graph.shapes[node.outputs[0]], next((a for a in axes if a is not None),
                                                         0)) is not None:
            continue  # pass-through layers are not consumers
        gone = {**change.inputs, **change.parts}  # parts: the deleted heads' weights
        for wa in rule.weight_axes(spec, axes):
            if wa.space == OUT or wa.space not in gone or wa.weight not in spec.weights:
                continue
            variable = by_path[f"{name}/{wa.weight}"]
            value = as_numpy(variable).copy()
            index: list[Any] = [slice(None)] * value.ndim
            index[wa.axis] = gone[wa.space]
            value[tuple(index)] = 0
            variable.assign(value)
    return ref


def check(model: keras.Model, layer: Any, neurons: Sequence[int] | None,
          **kwargs: Any) -> keras.Model:
    pruned = kerasprune.delete_neurons(model, layer, neurons, **kwargs)
    x = np.random.default_rng(0).standard_normal((2, LENGTH, 3)).astype("float32")
    want = as_numpy(zeroed(model, layer, neurons, **kwargs)(x))
    np.testing.assert_allclose(as_numpy(pruned(x)), want, atol=1e-5, rtol=1e-4)
    assert not np.allclose(as_numpy(model(x)), want, atol=1e-4)  # the deletion matters
    return pruned


@pytest.mark.parametrize("normalize_first", [False, True])
def test_encoder_ffn_width(normalize_first: bool) -> None:
    model = encoder_model(normalize_first)
    before = [as_numpy(w).copy() for w in model.weights]
    pruned = check(model, "encoder0/feedforward_intermediate_dense", [0, 5, 11])
    block = pruned.get_layer("encoder0")
    assert isinstance(block, keras_hub.layers.TransformerEncoder)
    assert block.intermediate_dim == UNITS - 3 and block.normalize_first == normalize_first
    for w, value in zip(model.weights, before, strict=True):  # the input model is untouched
        np.testing.assert_array_equal(as_numpy(w), value)


@pytest.mark.parametrize("normalize_first", [False, True])
def test_encoder_heads_and_head_dims(normalize_first: bool) -> None:
    model = encoder_model(normalize_first)
    pruned = check(model, "encoder0/self_attention_layer:heads", [1])
    block = pruned.get_layer("encoder0")
    assert (block.num_heads, block.head_dim) == (HEADS - 1, WIDTH // HEADS)
    assert isinstance(block, keras_hub.layers.TransformerEncoder)
    # (as many value as key dimensions: Keras' attention on JAX needs them equal)
    block = check(model, {"encoder0/self_attention_layer:key_dim": [0, 3],
                          "encoder0/self_attention_layer:value_dim": [1, 2]}, None
                  ).get_layer("encoder0")
    assert (block.num_heads, block.head_dim, block.value_dim) == (HEADS, WIDTH // HEADS - 2,
                                                                  WIDTH // HEADS - 2)


def test_decoder_self_and_cross_attention_heads() -> None:
    """KerasHub's decoder has one num_heads: a cross-attention that keeps other heads than
    the self-attention is rebuilt with heads of its own (cross_num_heads)."""
    model = decoder_model(cross=True)
    block = check(model, "decoder/self_attention:heads", [0]).get_layer("decoder")
    assert (block.num_heads, block.cross_num_heads) == (HEADS - 1, HEADS)
    block = check(model, {"decoder/self_attention:heads": [0],
                          "decoder/cross_attention:heads": [1]}, None).get_layer("decoder")
    assert block.num_heads == HEADS - 1 and block.cross_num_heads is None  # the same heads


@pytest.mark.parametrize("cross", [False, True])
def test_decoder_ffn_width(cross: bool) -> None:
    pruned = check(decoder_model(cross), "decoder/feedforward_intermediate_dense", [1, 2])
    assert pruned.get_layer("decoder").intermediate_dim == UNITS - 2


def test_two_blocks_in_one_request_and_the_keras_round_trip(tmp_path: Path) -> None:
    model = encoder_model(blocks=2)
    pruned = kerasprune.delete_neurons(model, {"encoder0/feedforward_intermediate_dense": [0],
                                               "encoder1/feedforward_intermediate_dense": [3, 4]})
    assert [pruned.get_layer(f"encoder{i}").intermediate_dim for i in (0, 1)] == [11, 10]
    path = tmp_path / "pruned.keras"
    pruned.save(path)
    loaded = keras.saving.load_model(path)
    x = np.random.default_rng(1).standard_normal((2, LENGTH, 3)).astype("float32")
    np.testing.assert_allclose(as_numpy(loaded(x)), as_numpy(pruned(x)), atol=1e-6)


def test_costs_and_prunable_layers_see_inside_the_block() -> None:
    model = encoder_model()
    rows = {c.name: c for c in kerasprune.costs(model)}
    assert rows["encoder0/feedforward_intermediate_dense"].params == WIDTH * UNITS + UNITS
    found = {p.layer: p for p in kerasprune.prunable_layers(model)}
    assert found["encoder0/feedforward_intermediate_dense"].prunable
    assert found["encoder0/feedforward_intermediate_dense"].neurons == UNITS


def test_ffn_units_chosen_by_weight_norm() -> None:
    """prune() with a weight criterion reaches the feed-forward units of every block."""
    model = encoder_model(blocks=2)
    result = kerasprune.prune(model, params=0.85, criterion="l2", verbose=0)
    widths = [result.model.get_layer(f"encoder{i}").intermediate_dim for i in (0, 1)]
    assert all(w < UNITS for w in widths) and result.model.count_params() <= \
        0.85 * model.count_params() + 1


class Bottleneck(keras.layers.Layer):
    """A user's residual block: ``x + up(relu(down(x)))``."""

    def __init__(self, units: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.units = units

    def build(self, shape: Any) -> None:
        self.down = keras.layers.Dense(self.units, activation="relu", name="down")
        self.down.build(shape)
        self.up = keras.layers.Dense(shape[-1], name="up")
        self.up.build((*shape[:-1], self.units))

    def call(self, x: Any) -> Any:
        return x + self.up(self.down(x))

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "units": self.units}


class BottleneckRule(Composite):
    def wiring(self, spec: LayerSpec, in_shapes: Sequence[Shape],
               out_shapes: Sequence[Shape]) -> Wiring:
        units = int(spec.weights["down/kernel"].shape[-1])
        layers = (Inner("down", "Dense", {"units": units, "activation": "relu"}),
                  Inner("up", "Dense", {"units": in_shapes[0][-1]}), Inner("sum", "Add"))
        steps = (Step("down", ("x",), "h"), Step("up", ("h",), "y"), Step("sum", ("x", "y"), "z"))
        shapes = {"h": (*in_shapes[0][:-1], units), "y": in_shapes[0], "z": in_shapes[0]}
        return Wiring(layers, steps, ("x",), ("z",), shapes)

    def block_updates(self, spec: LayerSpec, inner: Any, before: Any) -> dict[str, Any]:
        return {"units": int(inner["down"].weights["kernel"].shape[-1])}


def user_model() -> keras.Model:
    x = keras.Input((LENGTH, 3))
    h = keras.layers.Dense(WIDTH, name="embed")(x)
    h = Bottleneck(6, name="block")(h)
    return randomize(keras.Model(x, keras.layers.Dense(2, name="head")(h)))


def test_a_users_block_without_a_rule_is_refused_with_what_to_register() -> None:
    with pytest.raises(PruneError, match=r"'block' \(Bottleneck\) contains other layers "
                                         r"\(down, up\).*register a "
                                         r"kerasprune.core.rules.Composite"):
        kerasprune.delete_neurons(user_model(), "embed", [0])


def test_a_users_block_with_its_rule() -> None:
    rules = RULES.copy()
    rules.register(BottleneckRule(), "Bottleneck")
    model = user_model()
    pruned = check(model, "block/down", [1, 4], rules=rules)
    assert pruned.get_layer("block").units == 4
    # the residual couples the embedding's units to the block's 'up' units
    deletion = kerasprune.dependency_group(model, "embed", [2], rules=rules)
    assert set(deletion.neurons()) == {"embed", "block/up"}
    check(model, "embed", [2, 7], rules=rules)


@pytest.mark.parametrize("kind", ["encoder", "decoder"])
def test_unrolled_blocks_compute_the_same_function(kind: str) -> None:
    from kerasprune.adapters.keras import build, convert

    model = encoder_model(normalize_first=True) if kind == "encoder" else decoder_model(True)
    flat, names = build.unrolled(convert.to_graph(model))
    block = "encoder0" if kind == "encoder" else "decoder"
    assert names[f"{block}/feedforward_intermediate_dense"] == \
        f"{block}__feedforward_intermediate_dense"
    x = np.random.default_rng(2).standard_normal((2, LENGTH, 3)).astype("float32")
    np.testing.assert_allclose(as_numpy(flat(x)), as_numpy(model(x)), atol=1e-5)


def test_taylor_reaches_the_feed_forward_units() -> None:
    model = encoder_model(blocks=2)
    model.compile(loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    rng = np.random.default_rng(3)
    data = (rng.standard_normal((16, LENGTH, 3)).astype("float32"), rng.integers(0, 2, 16))
    stats = kerasprune.get_stats(model, data, criterion="taylor", verbose=0,
                                 layers=["encoder1/feedforward_intermediate_dense"])
    scores = stats["encoder1/feedforward_intermediate_dense"]
    values = np.asarray(scores.result())
    assert values.shape == (UNITS,) and values.max() > 0
    result = kerasprune.prune(model, flops=0.9, criterion="taylor", data=data, verbose=0)
    widths = [result.model.get_layer(f"encoder{i}").intermediate_dim for i in (0, 1)]
    assert min(widths) < UNITS


def _without_head(spec: LayerSpec, head: int) -> LayerSpec:
    """An attention sublayer's spec without one head (as a head deletion leaves it)."""
    weights = {}
    for key, value in spec.weights.items():
        axis = 0 if key == "attention_output/kernel" else -2 if key != "attention_output/bias" \
            else None
        weights[key] = value if axis is None else np.delete(as_numpy(value), head, axis=axis)
    return spec.with_changes({"num_heads": int(spec.attrs["num_heads"]) - 1}, weights)


@pytest.mark.parametrize("kind", ["encoder", "decoder"])
def test_blocks_that_lost_heads_are_rebuilt_with_their_head_size(kind: str,
                                                                 tmp_path: Path) -> None:
    """KerasHub derives the heads' size from the width: a block with fewer heads of the same
    size is rebuilt as kerasprune's subclass that takes ``head_dim`` (and saved/loaded)."""
    from dataclasses import replace

    from kerasprune.adapters.keras import build, convert

    model = encoder_model() if kind == "encoder" else decoder_model(True)
    block = "encoder0" if kind == "encoder" else "decoder"
    attentions = ["self_attention_layer"] if kind == "encoder" else ["self_attention",
                                                                      "cross_attention"]
    kg = convert.to_graph(model)
    layers = dict(kg.graph.layers)
    for name in attentions:
        layers[f"{block}/{name}"] = _without_head(layers[f"{block}/{name}"], 0)
    pruned = build.from_graph(kg, replace(kg.graph, layers=layers))
    rebuilt = pruned.get_layer(block)
    assert type(rebuilt).__name__.startswith("Sized")
    assert isinstance(rebuilt, type(model.get_layer(block)))
    assert (rebuilt.num_heads, rebuilt.head_dim) == (HEADS - 1, WIDTH // HEADS)
    reference = keras.models.clone_model(model)
    reference.set_weights(model.get_weights())
    key_dim = WIDTH // HEADS
    for variable in reference.weights:
        if any(variable.path == f"{block}/{n}/attention_output/kernel" for n in attentions):
            value = as_numpy(variable).copy()
            value[0] = 0  # the deleted head's rows of the output projection
            variable.assign(value)
    x = np.random.default_rng(4).standard_normal((2, LENGTH, 3)).astype("float32")
    np.testing.assert_allclose(as_numpy(pruned(x)), as_numpy(reference(x)), atol=1e-5)
    assert key_dim == rebuilt.head_dim
    path = tmp_path / "heads.keras"
    pruned.save(path)
    loaded = keras.saving.load_model(path)
    np.testing.assert_allclose(as_numpy(loaded(x)), as_numpy(pruned(x)), atol=1e-6)
    # a block rebuilt that way is read (and pruned) again by the same rule
    again = check(pruned, f"{block}/feedforward_intermediate_dense", [0, 3, 7])
    assert again.get_layer(block).head_dim == key_dim


def test_taylor_scores_heads_as_groups_and_prunes_heads_and_units() -> None:
    """Each head's Taylor score is read on its own output (the block unrolled, the attention
    split into its projections); prune() then deletes heads and feed-forward units."""
    model = encoder_model(blocks=2)
    model.compile(loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    rng = np.random.default_rng(5)
    data = (rng.standard_normal((16, LENGTH, 3)).astype("float32"), rng.integers(0, 2, 16))
    stats = kerasprune.get_stats(model, data, criterion="taylor", verbose=0,
                                 layers=["encoder0/self_attention_layer:heads"])
    heads = np.asarray(stats["encoder0/self_attention_layer:heads"].result())
    assert heads.shape == (HEADS,) and (heads > 0).all()
    result = kerasprune.prune(model, flops=0.5, criterion="taylor", data=data, verbose=0)
    blocks = [result.model.get_layer(f"encoder{i}") for i in (0, 1)]
    assert sum(b.num_heads for b in blocks) < 2 * HEADS
    assert sum(b.intermediate_dim for b in blocks) < 2 * UNITS
    assert result.flops[1] <= 0.5 * result.flops[0]
    x = data[0][:2]
    assert as_numpy(result.model(x)).shape == (2, 2)


def test_a_block_called_with_a_padding_mask() -> None:
    """The mask carries no channels: the deletion is exact and the mask reaches the rebuilt
    block; the data criteria cannot measure inside it, and say so."""
    x = keras.Input((LENGTH, 3))
    mask = keras.Input((LENGTH,), dtype="bool")
    h = keras.layers.Dense(WIDTH, name="embed")(x)
    h = keras_hub.layers.TransformerEncoder(UNITS, HEADS, name="encoder0")(h, padding_mask=mask)
    y = keras.layers.Dense(2, name="head")(keras.layers.GlobalAveragePooling1D()(h))
    model = randomize(keras.Model([x, mask], y))
    rng = np.random.default_rng(6)
    xs = [rng.standard_normal((2, LENGTH, 3)).astype("float32"),
          np.array([[True] * LENGTH, [True, True, False, False, False]])]
    layer = "encoder0/self_attention_layer:heads"
    pruned = kerasprune.delete_neurons(model, layer, [0])
    want = as_numpy(zeroed(model, layer, [0])(xs))
    np.testing.assert_allclose(as_numpy(pruned(xs)), want, atol=1e-5, rtol=1e-4)
    unmasked = [xs[0], np.ones((2, LENGTH), dtype=bool)]
    assert not np.allclose(as_numpy(pruned(unmasked)), as_numpy(pruned(xs)), atol=1e-4)
    model.compile(loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    with pytest.raises(PruneError, match=r"cannot measure inside layer 'encoder0': it is "
                                         r"called with a mask"):
        kerasprune.get_stats(model, (xs, np.array([0, 1])), criterion="taylor", verbose=0,
                             layers=["encoder0/feedforward_intermediate_dense"])


def test_the_model_width_through_the_residual_stream_with_the_opt_in() -> None:
    """Deleting a channel of the stream reaches every block's projections and layer norms:
    refused without ``allow_inexact``; with it, the blocks are rebuilt on the narrower width
    (their heads keep their size: ``head_dim``) and the deviation is measured."""
    model = encoder_model(normalize_first=True, blocks=2)
    with pytest.raises(PruneError, match=r"LayerNormalization.*allow_inexact=True"):
        kerasprune.delete_neurons(model, "embed", [1])
    pruned = kerasprune.delete_neurons(model, "embed", [1, 6], allow_inexact=True)
    for i in (0, 1):
        block = pruned.get_layer(f"encoder{i}")
        assert (block.num_heads, block.head_dim) == (HEADS, WIDTH // HEADS)
        assert {tuple(w.shape) for w in block.weights if w.path.endswith("gamma")} == {
            (WIDTH - 2,)}
    x = np.random.default_rng(7).standard_normal((4, LENGTH, 3)).astype("float32")
    found = kerasprune.deviation(model, "embed", [1, 6], x, pruned=pruned)
    assert found.inexact and np.isfinite(found.max_abs) and found.max_abs > 0


def test_a_keras_hub_backbone_through_its_functional_graph(tmp_path: Path) -> None:
    """A KerasHub backbone is a functional model with a config of its own (its constructor's
    arguments), so it is refused with what to do; the plain functional model of its graph
    prunes: feed-forward units and heads, exact, and round-trips as ``.keras``."""
    backbone = keras_hub.models.BertBackbone(
        vocabulary_size=30, num_layers=2, num_heads=2, hidden_dim=8, intermediate_dim=12,
        max_sequence_length=LENGTH)
    with pytest.raises(PruneError, match=r"keras\.Model\(model\.inputs, model\.outputs\)"):
        kerasprune.prunable_layers(backbone)
    model = randomize(keras.Model(backbone.inputs, backbone.outputs))
    rng = np.random.default_rng(0)
    x = {"token_ids": rng.integers(0, 30, (2, LENGTH)).astype("int32"),
         "segment_ids": np.zeros((2, LENGTH), "int32"),
         "padding_mask": np.ones((2, LENGTH), "int32")}
    request = {"transformer_layer_0/feedforward_intermediate_dense": [1, 7],
               "transformer_layer_1/self_attention_layer:heads": [0]}
    pruned = kerasprune.delete_neurons(model, request)
    assert pruned.get_layer("transformer_layer_0").intermediate_dim == 10
    report = kerasprune.deviation(model, request, data=x, pruned=pruned)
    assert report.inexact == () and report.max_abs < 1e-5, report
    before, after = (keras.tree.flatten(m(x))[0] for m in (model, pruned))
    assert not np.allclose(as_numpy(before), as_numpy(after), atol=1e-4)  # it matters
    path = tmp_path / "bert.keras"
    pruned.save(path)
    loaded = keras.saving.load_model(path)
    for got, want in zip(keras.tree.flatten(loaded(x)), keras.tree.flatten(pruned(x)),
                         strict=True):
        np.testing.assert_allclose(as_numpy(got), as_numpy(want), atol=1e-6)
