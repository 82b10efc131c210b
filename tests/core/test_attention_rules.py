"""Attention, the residual stream and normalizations in the pure core (NumPy only).

A small NumPy forward pass of the graphs here (Dense, MultiHeadAttention as Keras computes
it, Add, LayerNormalization) checks the deletions against the zeroing oracle of the core
itself (:func:`kerasprune.core.surgery.zeroed_graph`): the pruned graph must compute what
the zeroed graph computes, on the kept output channels; and an inexact deletion (through a
LayerNormalization) must not, by a margin.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import pytest

from kerasprune.core.graph import Graph, LayerSpec, Node, PruneError
from kerasprune.core.rules import UnsupportedLayerError
from kerasprune.core.surgery import (
    apply_deletion,
    delete_neurons,
    dependency_group,
    part_name,
    zeroed_graph,
)

SEQ, WIDTH, HEADS, KEY, VALUE = 4, 6, 3, 4, 5
RNG = np.random.default_rng(0)


def w(*shape: int) -> np.ndarray:
    return RNG.standard_normal(shape) * 0.5


def dense(name: str, n_in: int, units: int) -> LayerSpec:
    return LayerSpec(name, "Dense", {"units": units}, {"kernel": w(n_in, units), "bias": w(units)})


def mha(name: str, query: int, value: int, out: int, *, bias: bool = True,
        output_shape: int | None = None, roles: tuple[str, ...] = ("query", "value"),
        heads: int = HEADS, key_dim: int = KEY, value_dim: int = VALUE) -> LayerSpec:
    weights = {"query/kernel": w(query, heads, key_dim), "key/kernel": w(value, heads, key_dim),
               "value/kernel": w(value, heads, value_dim),
               "attention_output/kernel": w(heads, value_dim, out)}
    if bias:
        weights |= {"query/bias": w(heads, key_dim), "key/bias": w(heads, key_dim),
                    "value/bias": w(heads, value_dim), "attention_output/bias": w(out)}
    return LayerSpec(name, "MultiHeadAttention",
                     {"num_heads": heads, "key_dim": key_dim, "value_dim": value_dim,
                      "output_shape": output_shape, "call_inputs": roles}, weights)


def layer_norm(name: str, width: int) -> LayerSpec:
    return LayerSpec(name, "LayerNormalization", {"axis": [-1], "input_rank": 2},
                     {"gamma": w(width) + 1.0, "beta": w(width)})


# --- a NumPy forward pass -----------------------------------------------------------------------


def _attention(spec: LayerSpec, q_in: np.ndarray, v_in: np.ndarray) -> np.ndarray:
    weights = spec.weights
    zero = np.zeros(0)

    def project(name: str, x: np.ndarray) -> np.ndarray:
        out = np.einsum("btd,dhk->bthk", x, weights[f"{name}/kernel"])
        return out + weights.get(f"{name}/bias", zero) if f"{name}/bias" in weights else out

    q = project("query", q_in) / np.sqrt(float(spec.attrs["key_dim"]))  # as Keras scales
    k, v = project("key", v_in), project("value", v_in)
    scores = np.einsum("bshk,bthk->bhts", k, q)
    scores = np.exp(scores - scores.max(-1, keepdims=True))
    scores /= scores.sum(-1, keepdims=True)
    heads = np.einsum("bhts,bshv->bthv", scores, v)
    out = np.einsum("bthv,hvo->bto", heads, weights["attention_output/kernel"])
    return out + weights["attention_output/bias"] if "attention_output/bias" in weights else out


def _layer_norm(spec: LayerSpec, x: np.ndarray) -> np.ndarray:
    mean, var = x.mean(-1, keepdims=True), x.var(-1, keepdims=True)
    return (x - mean) / np.sqrt(var + 1e-3) * spec.weights["gamma"] + spec.weights["beta"]


_FORWARD: dict[str, Callable[..., np.ndarray]] = {
    "Dense": lambda s, x: x @ s.weights["kernel"] + s.weights["bias"],
    "MultiHeadAttention": _attention,
    "Add": lambda s, a, b: a + b,
    "LayerNormalization": _layer_norm,
}


def run(graph: Graph, *inputs: np.ndarray) -> np.ndarray:
    values: dict[int, np.ndarray] = dict(zip(graph.inputs, inputs, strict=True))
    for node in graph.nodes:
        spec = graph.layers[node.layer]
        values[node.outputs[0]] = _FORWARD[spec.kind](spec, *(values[t] for t in node.inputs))
    return values[graph.outputs[0]]


def deviation(graph: Graph, request: Mapping[str, Any], **kwargs: Any) -> float:
    """Largest difference between the pruned graph and its zeroing oracle on random data."""
    deletion = dependency_group(graph, request, **kwargs)
    x = [RNG.standard_normal((2, *graph.shapes[t])) for t in graph.inputs]
    got, want = run(apply_deletion(deletion), *x), run(zeroed_graph(deletion), *x)
    (out,) = graph.outputs
    if out in deletion.tensors:
        want = np.delete(want, deletion.tensors[out][1], axis=-1)
    return float(np.abs(got - want).max())


def graph_of(layers: list[LayerSpec], nodes: list[tuple[str, tuple[int, ...], int]],
             shapes: dict[int, tuple[int, ...]], inputs: tuple[int, ...] = (0,)) -> Graph:
    return Graph({spec.name: spec for spec in layers},
                 tuple(Node(name, ins, (out,)) for name, ins, out in nodes), shapes, inputs,
                 (max(shapes),))


def self_attention(**kwargs: Any) -> Graph:
    """x -> proj -> mha(h, h) -> head."""
    out = kwargs.get("output_shape") or WIDTH
    return graph_of([dense("proj", WIDTH, WIDTH), mha("mha", WIDTH, WIDTH, out, **kwargs),
                     dense("head", out, 3)],
                    [("proj", (0,), 1), ("mha", (1, 1), 2), ("head", (2,), 3)],
                    {0: (SEQ, WIDTH), 1: (SEQ, WIDTH), 2: (SEQ, out), 3: (SEQ, 3)})


def block() -> Graph:
    """A post-norm residual block: x -> proj -> [mha] + -> ln -> ffn_in -> ffn_out + -> ln2."""
    layers = [dense("proj", WIDTH, WIDTH), mha("mha", WIDTH, WIDTH, WIDTH),
              LayerSpec("add", "Add"), layer_norm("ln", WIDTH), dense("ffn_in", WIDTH, 10),
              dense("ffn_out", 10, WIDTH), LayerSpec("add2", "Add"), layer_norm("ln2", WIDTH),
              dense("head", WIDTH, 2)]
    nodes = [("proj", (0,), 1), ("mha", (1, 1), 2), ("add", (1, 2), 3), ("ln", (3,), 4),
             ("ffn_in", (4,), 5), ("ffn_out", (5,), 6), ("add2", (4, 6), 7), ("ln2", (7,), 8),
             ("head", (8,), 9)]
    shapes = {t: (SEQ, WIDTH) for t in range(9)} | {5: (SEQ, 10), 9: (SEQ, 2)}
    return graph_of(layers, nodes, shapes)


# --- heads and dimensions -----------------------------------------------------------------------


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("request_", [
    {"mha:heads": [1]}, {"mha:key_dim": [0, 3]}, {"mha:value_dim": [2]},
    {"mha:heads": [0, 2], "mha:key_dim": [1], "mha:value_dim": [0, 4]}, {"mha": [1, 4]},
    {"proj": [0, 5]}], ids=str)
def test_parts_and_channels_are_exact(bias: bool, request_: dict[str, list[int]]) -> None:
    graph = self_attention(bias=bias)
    assert deviation(graph, request_) < 1e-9
    # and the zeroed oracle is not the original: the deletion does something
    x = RNG.standard_normal((2, SEQ, WIDTH))
    zeroed = run(zeroed_graph(dependency_group(graph, request_)), x)
    assert np.abs(zeroed - run(graph, x)).max() > 1e-3


def test_part_sizes_attributes_and_the_query_rescaling() -> None:
    graph = self_attention()
    new = delete_neurons(graph, {"mha:heads": [1], "mha:key_dim": [0, 3]})
    spec = new.layers["mha"]
    assert (spec.attrs["num_heads"], spec.attrs["key_dim"], spec.attrs["value_dim"]) == (2, 2, 5)
    assert spec.weights["query/kernel"].shape == (WIDTH, 2, 2)
    assert spec.weights["attention_output/kernel"].shape == (2, VALUE, WIDTH)
    kept = graph.layers["mha"].weights["query/kernel"][:, [0, 2]][:, :, [1, 2]]
    np.testing.assert_allclose(spec.weights["query/kernel"], kept * np.sqrt(2 / 4))
    key = graph.layers["mha"].weights["key/kernel"]
    np.testing.assert_array_equal(spec.weights["key/kernel"], key[:, [0, 2]][:, :, [1, 2]])


def test_output_shape_follows_the_output_channels() -> None:
    graph = self_attention()
    assert delete_neurons(graph, "mha", [0]).layers["mha"].attrs["output_shape"] == WIDTH - 1
    assert delete_neurons(graph, "proj", [0]).layers["mha"].attrs["output_shape"] == WIDTH
    set_ = self_attention(output_shape=7)
    assert delete_neurons(set_, "mha", [0, 1]).layers["mha"].attrs["output_shape"] == 5


def test_cross_attention_reads_by_role() -> None:
    """Keyword calls: inputs in sorted order (key, query, value), each read by its kernel."""
    layers = [dense("dq", WIDTH, WIDTH), dense("dk", 3, 5), dense("dv", 3, 7),
              mha("mha", WIDTH, 7, WIDTH, roles=("key", "query", "value")),
              dense("head", WIDTH, 2)]
    layers[3].weights["key/kernel"] = w(5, HEADS, KEY)
    graph = graph_of(layers, [("dq", (0,), 2), ("dk", (1,), 3), ("dv", (1,), 4),
                              ("mha", (3, 2, 4), 5), ("head", (5,), 6)],
                     {0: (SEQ, WIDTH), 1: (SEQ, 3), 2: (SEQ, WIDTH), 3: (SEQ, 5),
                      4: (SEQ, 7), 5: (SEQ, WIDTH), 6: (SEQ, 2)}, inputs=(0, 1))
    new = delete_neurons(graph, {"dk": [1], "dv": [0, 6], "dq": [2]})
    assert new.layers["mha"].weights["key/kernel"].shape == (4, HEADS, KEY)
    assert new.layers["mha"].weights["value/kernel"].shape == (5, HEADS, VALUE)
    assert new.layers["mha"].weights["query/kernel"].shape == (WIDTH - 1, HEADS, KEY)


def test_part_errors() -> None:
    graph = self_attention()
    with pytest.raises(PruneError, match="has no part 'units'; its parts are 'mha:heads'"):
        dependency_group(graph, "mha:units", [0])
    with pytest.raises(PruneError, match="Dense layers have no parts"):
        dependency_group(graph, "proj:heads", [0])
    with pytest.raises(PruneError, match=f"cannot delete all {HEADS} units of 'mha:heads'"):
        dependency_group(graph, "mha:heads", range(HEADS))
    with pytest.raises(PruneError, match="repeat"):
        dependency_group(graph, part_name("mha", "key_dim"), [1, -3])
    scores = graph_of([mha("mha", WIDTH, WIDTH, WIDTH)], [], {0: (SEQ, WIDTH)})
    scores = Graph(scores.layers, (Node("mha", (0, 0), (1, 2)),),
                   {0: (SEQ, WIDTH), 1: (SEQ, WIDTH), 2: (HEADS, SEQ, SEQ)}, (0,), (1, 2))
    with pytest.raises(UnsupportedLayerError, match="attention scores"):
        dependency_group(scores, "mha:heads", [0])
    assert dependency_group(scores, "mha:key_dim", [0]).parts == {"mha": {"key_dim": [0]}}


def test_a_mask_input_is_not_read() -> None:
    layers = [dense("maker", WIDTH, SEQ), mha("mha", WIDTH, WIDTH, WIDTH,
                                             roles=("query", "value", "attention_mask")),
              dense("head", WIDTH, 2)]
    graph = graph_of(layers, [("maker", (0,), 1), ("mha", (0, 0, 1), 2), ("head", (2,), 3)],
                     {0: (SEQ, WIDTH), 1: (SEQ, SEQ), 2: (SEQ, WIDTH), 3: (SEQ, 2)})
    with pytest.raises(UnsupportedLayerError, match="'attention_mask' input"):
        dependency_group(graph, "maker", [0])


# --- the residual stream and LayerNormalization -------------------------------------------------


def test_the_stream_couples_its_producers_and_needs_the_opt_in() -> None:
    graph = block()
    with pytest.raises(UnsupportedLayerError, match=r"'ln' \(LayerNormalization\).*allow_inexact"):
        dependency_group(graph, "proj", [2])
    deletion = dependency_group(graph, "proj", [2, 4], allow_inexact=True)
    assert set(deletion.neurons()) == {"proj", "mha", "ffn_out"}
    assert deletion.inexact == ("ln", "ln2")
    new = apply_deletion(deletion)
    assert new.layers["ln"].weights["gamma"].shape == (WIDTH - 2,)
    assert new.layers["ffn_in"].weights["kernel"].shape == (WIDTH - 2, 10)
    assert deviation(graph, {"proj": [2, 4]}, allow_inexact=True) > 1e-3


def test_heads_and_feed_forward_width_in_the_block_are_exact() -> None:
    assert deviation(block(), {"mha:heads": [2], "ffn_in": [0, 3, 7]}) < 1e-9


def test_type_of_allow_inexact() -> None:
    with pytest.raises(TypeError, match="allow_inexact must be True or False"):
        dependency_group(block(), "ffn_in", [0], allow_inexact="yes")  # type: ignore[arg-type]
