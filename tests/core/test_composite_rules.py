"""Layers that contain layers: Composite rules expand into their sublayers (NumPy only)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pytest
from core_graphs import dense, values

from kerasprune.core import cost
from kerasprune.core.graph import Graph, LayerSpec, Node, PruneError, Shape
from kerasprune.core.rules import (
    CONTAINS,
    RULES,
    Composite,
    Inner,
    Step,
    Wiring,
    collapse_composites,
    expand_composites,
)
from kerasprune.core.surgery import apply_deletion, delete_neurons, dependency_group

WIDTH, HEADS, KEY, UNITS, LENGTH = 8, 2, 4, 12, 5


def attention_weights(prefix: str, width: int = WIDTH, heads: int = HEADS,
                      key: int = KEY) -> dict[str, np.ndarray]:
    out = {}
    for part in ("query", "key", "value"):
        out[f"{prefix}/{part}/kernel"] = values((width, heads, key))
        out[f"{prefix}/{part}/bias"] = values((heads, key))
    out[f"{prefix}/attention_output/kernel"] = values((heads, key, width))
    out[f"{prefix}/attention_output/bias"] = values((width,))
    return out


def block_weights(cross: bool, self_name: str) -> dict[str, np.ndarray]:
    out = attention_weights(self_name)
    norms = ["self_attention_layer_norm", "feedforward_layer_norm"]
    if cross:
        out.update(attention_weights("cross_attention"))
        norms.append("cross_attention_layer_norm")
    for name in norms:
        out[f"{name}/gamma"] = values((WIDTH,))
        out[f"{name}/beta"] = values((WIDTH,))
    out["feedforward_intermediate_dense/kernel"] = values((WIDTH, UNITS))
    out["feedforward_intermediate_dense/bias"] = values((UNITS,))
    out["feedforward_output_dense/kernel"] = values((UNITS, WIDTH))
    out["feedforward_output_dense/bias"] = values((WIDTH,))
    return out


def encoder_graph(normalize_first: bool = False, kind: str = "TransformerEncoder",
                  cross: bool = False) -> Graph:
    """``dense -> block -> head`` on sequences of LENGTH x WIDTH (a decoder also reads the
    first dense's output as its encoder sequence)."""
    self_name = "self_attention" if kind == "TransformerDecoder" else "self_attention_layer"
    block = LayerSpec("block", kind, {"intermediate_dim": UNITS, "num_heads": HEADS,
                                      "activation": "relu", "dropout": 0.0,
                                      "normalize_first": normalize_first},
                      block_weights(cross, self_name))
    layers = [dense("embed", 3, WIDTH), block, dense("head", WIDTH, 2)]
    nodes = (Node("embed", (0,), (1,)), Node("block", (1, 1) if cross else (1,), (2,)),
             Node("head", (2,), (3,)))
    shapes = {0: (LENGTH, 3), 1: (LENGTH, WIDTH), 2: (LENGTH, WIDTH), 3: (LENGTH, 2)}
    return Graph({s.name: s for s in layers}, nodes, shapes, (0,), (3,))


@pytest.mark.parametrize("normalize_first", [False, True])
def test_encoder_expands_into_its_residual_stream(normalize_first: bool) -> None:
    expansion = expand_composites(encoder_graph(normalize_first))
    graph = expansion.graph
    assert "block" not in graph.layers
    assert graph.layers["block/feedforward_intermediate_dense"].kind == "Dense"
    kinds = [graph.layers[n.layer].kind for n in graph.nodes]
    norm, attention = "LayerNormalization", "MultiHeadAttention"
    if normalize_first:
        expected = [norm, attention, "Dropout", "Add", norm, "Dense", "Dense", "Dropout", "Add"]
    else:
        expected = [attention, "Dropout", "Add", norm, "Dense", "Dense", "Dropout", "Add", norm]
    assert kinds == ["Dense", *expected, "Dense"]
    # the block's input and output keep their ids; each residual add reads the stream
    adds = [n for n in graph.nodes if graph.layers[n.layer].kind == "Add"]
    assert adds[0].inputs[1] == 1
    assert graph.nodes[-2].outputs == (2,)
    ffn = graph.calls("block/feedforward_intermediate_dense")[0]
    assert graph.shapes[ffn.outputs[0]] == (LENGTH, UNITS)
    weights = graph.layers["block/self_attention_layer"].weights
    assert set(weights) == {f"{p}/{w}" for p in ("query", "key", "value", "attention_output")
                            for w in ("kernel", "bias")}
    assert graph.layers["block/self_attention_layer"].attrs["num_heads"] == HEADS


def test_ffn_units_deleted_and_collapsed_into_the_block() -> None:
    expansion = expand_composites(encoder_graph())
    deletion = dependency_group(expansion.graph, "block/feedforward_intermediate_dense", [1, 4])
    assert set(deletion.layers()) == {"block/feedforward_intermediate_dense",
                                      "block/feedforward_output_dense"}
    collapsed = collapse_composites(expansion, apply_deletion(deletion))
    block = collapsed.layers["block"]
    assert block.attrs["intermediate_dim"] == UNITS - 2
    assert list(block.weights) == list(expansion.source.layers["block"].weights)  # same order
    before = expansion.source.layers["block"].weights
    keep = [i for i in range(UNITS) if i not in (1, 4)]
    np.testing.assert_array_equal(block.weights["feedforward_intermediate_dense/kernel"],
                                  before["feedforward_intermediate_dense/kernel"][:, keep])
    np.testing.assert_array_equal(block.weights["feedforward_output_dense/kernel"],
                                  before["feedforward_output_dense/kernel"][keep])
    assert block.weights["self_attention_layer/query/kernel"] is before[
        "self_attention_layer/query/kernel"]
    assert collapsed.layers["head"] is expansion.source.layers["head"]
    assert collapsed.nodes == expansion.source.nodes


def test_costs_of_the_expanded_block_count_its_sublayers() -> None:
    expansion = expand_composites(encoder_graph())
    rows = {c.name: c for c in cost.count(expansion.graph)}
    ffn = rows["block/feedforward_intermediate_dense"]
    assert ffn.params == WIDTH * UNITS + UNITS
    assert ffn.flops == 2 * WIDTH * UNITS * LENGTH + UNITS * LENGTH
    smaller = delete_neurons(expansion.graph, "block/feedforward_intermediate_dense", [0, 1, 2])
    after = {c.name: c for c in cost.count(smaller)}
    assert after["block/feedforward_output_dense"].params == (UNITS - 3) * WIDTH + WIDTH


def test_the_residual_stream_couples_the_block_to_what_writes_it() -> None:
    """The embedding's units are the stream's channels: the block's layer norms (not exact
    without an opt-in) refuse them, naming the normalization; with the opt-in every writer
    of the stream loses them and every reader the matching rows."""
    expansion = expand_composites(encoder_graph())
    with pytest.raises(PruneError, match=r"'block/self_attention_layer_norm' "
                                         r"\(LayerNormalization\).*allow_inexact=True"):
        dependency_group(expansion.graph, "embed", [0])
    deletion = dependency_group(expansion.graph, "embed", [0], allow_inexact=True)
    assert set(deletion.neurons()) == {"embed", "block/self_attention_layer",
                                       "block/feedforward_output_dense"}
    assert "block/feedforward_intermediate_dense" in deletion.layers()
    collapsed = collapse_composites(expansion, apply_deletion(deletion)).layers["block"]
    assert collapsed.weights["self_attention_layer/query/kernel"].shape == (WIDTH - 1, HEADS,
                                                                          KEY)
    assert collapsed.attrs["head_dim"] == KEY  # (WIDTH - 1) // HEADS is no longer KEY


def test_decoder_with_cross_attention_reads_the_encoder_sequence() -> None:
    expansion = expand_composites(encoder_graph(kind="TransformerDecoder", cross=True))
    graph = expansion.graph
    cross = graph.calls("block/cross_attention")[0]
    assert cross.inputs[1] == 1  # the value is the encoder's sequence
    assert graph.layers["block/self_attention"].kind == "MultiHeadAttention"
    assert [n.layer.split("/")[1] for n in graph.nodes[1:-1]].count("cross_residual") == 1
    deletion = dependency_group(graph, "block/feedforward_intermediate_dense", [0])
    collapsed = collapse_composites(expansion, apply_deletion(deletion))
    assert collapsed.layers["block"].attrs["intermediate_dim"] == UNITS - 1


def test_decoder_without_cross_attention_ignores_its_masks() -> None:
    graph = encoder_graph(kind="TransformerDecoder")
    block = graph.calls("block")[0]
    masked = Graph(graph.layers, (graph.nodes[0], Node("block", (1, 4), (2,)), graph.nodes[2]),
                   {**graph.shapes, 4: (LENGTH,)}, (0, 4), graph.outputs)
    expansion = expand_composites(masked)
    readers = {n.layer for n in expansion.graph.nodes if 4 in n.inputs}
    assert not readers and block.inputs == (1,)


def test_heads_that_no_longer_follow_the_width_give_their_size() -> None:
    expansion = expand_composites(encoder_graph())
    name = "block/self_attention_layer"
    spec = expansion.graph.layers[name]
    fewer = {k: v[:, :1] if k.endswith("kernel") and v.ndim == 3 and k != "attention_output/kernel"
             else v for k, v in spec.weights.items()}
    changed = Graph({**expansion.graph.layers, name: spec.with_changes({"num_heads": 1}, fewer)},
                    expansion.graph.nodes, expansion.graph.shapes, expansion.graph.inputs,
                    expansion.graph.outputs)
    block = collapse_composites(expansion, changed).layers["block"]
    assert (block.attrs["num_heads"], block.attrs["head_dim"], block.attrs["value_dim"]) == (
        1, KEY, KEY)
    assert block.weights["self_attention_layer/query/kernel"].shape == (WIDTH, 1, KEY)


class Residual(Composite):
    """A user's block: ``x + up(down(x))`` with a ReLU bottleneck."""

    def wiring(self, spec: LayerSpec, in_shapes: Sequence[Shape],
               out_shapes: Sequence[Shape]) -> Wiring:
        units = int(spec.weights["down/kernel"].shape[-1])
        width = in_shapes[0][-1]
        layers = (Inner("down", "Dense", {"units": units, "activation": "relu"}),
                  Inner("up", "Dense", {"units": width}), Inner("sum", "Add"))
        steps = (Step("down", ("x",), "h"), Step("up", ("h",), "y"), Step("sum", ("y", "x"), "z"))
        shapes = {"h": (*in_shapes[0][:-1], units), "y": in_shapes[0], "z": in_shapes[0]}
        return Wiring(layers, steps, ("x",), ("z",), shapes)

    def block_updates(self, spec: LayerSpec, inner: Mapping[str, LayerSpec],
                      before: Mapping[str, LayerSpec]) -> dict[str, Any]:
        return {"bottleneck": int(inner["down"].weights["kernel"].shape[-1])}


def user_graph(weights: dict[str, np.ndarray] | None = None) -> Graph:
    block = LayerSpec("res", "MyBlock", {"bottleneck": 6},
                      weights if weights is not None else {
                          "down/kernel": values((4, 6)), "down/bias": values((6,)),
                          "up/kernel": values((6, 4)), "up/bias": values((4,))})
    layers = [dense("a", 3, 4), block, dense("b", 4, 2)]
    nodes = (Node("a", (0,), (1,)), Node("res", (1,), (2,)), Node("b", (2,), (3,)))
    return Graph({s.name: s for s in layers}, nodes, {0: (3,), 1: (4,), 2: (4,), 3: (2,)},
                 (0,), (3,))


def test_a_users_block_with_a_registered_rule() -> None:
    rules = RULES.copy()
    rules.register(Residual(), "MyBlock")
    expansion = expand_composites(user_graph(), rules)
    assert [n.layer for n in expansion.graph.nodes] == ["a", "res/down", "res/up", "res/sum", "b"]
    # the residual couples the block's output to its input: 'a' loses units with 'res/up'
    deletion = dependency_group(expansion.graph, "a", [2], rules=rules)
    assert set(deletion.neurons()) == {"a", "res/up"}
    collapsed = collapse_composites(expansion, apply_deletion(deletion))
    assert collapsed.layers["res"].weights["down/kernel"].shape == (3, 6)
    assert collapsed.layers["res"].attrs["bottleneck"] == 6
    small = apply_deletion(dependency_group(expansion.graph, "res/down", [0, 5], rules=rules))
    assert collapse_composites(expansion, small).layers["res"].attrs["bottleneck"] == 4


def test_a_rule_must_place_every_weight() -> None:
    rules = RULES.copy()
    rules.register(Residual(), "MyBlock")
    weights = {"down/kernel": values((4, 6)), "down/bias": values((6,)),
               "up/kernel": values((6, 4)), "up/bias": values((4,)), "scale": values((4,))}
    with pytest.raises(PruneError, match=r"'res' \(MyBlock\) holds weights its rule gives to "
                                         r"no sublayer \(scale\)"):
        expand_composites(user_graph(weights), rules)


def test_a_containing_layer_without_a_rule_says_what_to_register() -> None:
    graph = user_graph()
    spec = graph.layers["res"]
    marked = Graph({**graph.layers, "res": spec.with_changes({CONTAINS: ("down", "up")}, {})},
                   graph.nodes, graph.shapes, graph.inputs, graph.outputs)
    expansion = expand_composites(marked)
    assert expansion.graph is marked and not expansion.blocks
    with pytest.raises(PruneError, match=r"'res' \(MyBlock\) contains other layers \(down, up\)"
                                         r".*register a kerasprune.core.rules.Composite"):
        dependency_group(marked, "a", [0])


def test_a_call_the_rule_does_not_describe_is_refused() -> None:
    graph = encoder_graph()
    flat = Graph(graph.layers, graph.nodes, {**graph.shapes, 1: (WIDTH,), 2: (WIDTH,)},
                 graph.inputs, graph.outputs)
    with pytest.raises(PruneError, match=r"expects a sequence \(batch, length, width\)"):
        expand_composites(flat)


def test_heads_are_groups_scored_by_weight_norm_and_planned() -> None:
    from kerasprune.core.criteria import criterion_for, layer_scores
    from kerasprune.core.groups import analyze_channels
    from kerasprune.core.plan import plan_pruning
    from kerasprune.core.targets import Flops

    graph = expand_composites(encoder_graph()).graph
    analysis = analyze_channels(graph)
    name = "block/self_attention_layer:heads"
    group = analysis.group_of(name)
    assert group.width == HEADS and group.prunable and not group.elements
    # l2 of a head: its slices of the query, key, value and output kernels together
    spec = graph.layers["block/self_attention_layer"]
    want = np.sqrt(sum(np.square(np.moveaxis(spec.weights[f"{p}/kernel"], axis, 0)).reshape(
        HEADS, -1).sum(axis=1) for p, axis in (("query", 1), ("key", 1), ("value", 1),
                                               ("attention_output", 0))))
    got = layer_scores(analysis, criterion_for("l2"), layers=[name]).scores[name]
    np.testing.assert_allclose(got, want)
    deletion = analysis.deletion({group.index: [1]})
    assert {k: {p: v.tolist() for p, v in parts.items()} for k, parts in
            deletion.parts.items()} == {"block/self_attention_layer": {"heads": [1]}}
    assert analysis.request(analysis.slot_mask({group.index: [1]})) == {name: [1]}
    plan = plan_pruning(graph, Flops(keep=0.6), criterion="l2")
    assert any(layer.endswith(":heads") for layer in plan.request)


class Broken(Residual):
    """A rule whose wiring reads a tensor before it is made, or writes one twice."""

    def __init__(self, steps: tuple[Step, ...]) -> None:
        self.steps = steps

    def wiring(self, spec: LayerSpec, in_shapes: Sequence[Shape],
               out_shapes: Sequence[Shape]) -> Wiring:
        found = super().wiring(spec, in_shapes, out_shapes)
        return Wiring(found.layers, self.steps, found.inputs, found.outputs, found.shapes)


@pytest.mark.parametrize("steps, message", [
    ((Step("up", ("h",), "y"), Step("down", ("x",), "h"), Step("sum", ("y", "x"), "z")),
     "step 'up' reads h, which no earlier step makes"),
    ((Step("down", ("x",), "h"), Step("up", ("h",), "h"), Step("sum", ("h", "x"), "z")),
     "writes 'h' twice"),
])
def test_a_wiring_out_of_order_is_refused(steps: tuple[Step, ...], message: str) -> None:
    rules = RULES.copy()
    rules.register(Broken(steps), "MyBlock")
    with pytest.raises(PruneError, match=rf"'res' \(MyBlock\): its rule.*{message}"):
        expand_composites(user_graph(), rules)
