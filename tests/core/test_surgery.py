"""Tests of kerasprune.core.surgery on hand-built graphs.

Pure NumPy: nothing here imports keras, tensorflow or jax. Each graph is written out by hand
(:class:`LayerSpec`, :class:`Node`, tensor shapes), so every expected deletion, weight shape
and weight value can be stated exactly: pruned weights must equal ``np.delete`` of the
original ones.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from collections.abc import Mapping
from typing import Any

import numpy as np
import pytest
from hypothesis import event, given, settings
from hypothesis import strategies as st

from kerasprune.core import (
    Graph,
    LayerSpec,
    Node,
    PruneError,
    UnsupportedLayerError,
    apply_deletion,
    delete_neurons,
    dependency_group,
    neuron_count,
    prunable_layers,
)

# --------------------------------------------------------------------------------------------
# Builders
# --------------------------------------------------------------------------------------------

_SEED = iter(range(10_000))


def _values(shape: tuple[int, ...]) -> np.ndarray:
    """Distinct, deterministic values, so a wrong slice can never look right."""
    rng = np.random.default_rng(next(_SEED))
    return rng.standard_normal(shape)


def dense(name: str, n_in: int, units: int, **attrs: Any) -> LayerSpec:
    return LayerSpec(name, "Dense", {"units": units, **attrs},
                     {"kernel": _values((n_in, units)), "bias": _values((units,))})


def conv(name: str, c_in: int, filters: int, k: int = 3, data_format: str = "channels_last",
         **attrs: Any) -> LayerSpec:
    return LayerSpec(name, "Conv2D", {"filters": filters, "data_format": data_format, **attrs},
                     {"kernel": _values((k, k, c_in, filters)), "bias": _values((filters,))})


def bn(name: str, channels: int, axis: int = -1) -> LayerSpec:
    weights = {w: _values((channels,)) for w in ("gamma", "beta", "moving_mean")}
    weights["moving_variance"] = np.abs(_values((channels,))) + 0.5
    return LayerSpec(name, "BatchNormalization", {"axis": axis}, weights)


def plain(name: str, kind: str, **attrs: Any) -> LayerSpec:
    return LayerSpec(name, kind, attrs)


def build(layers: list[LayerSpec], nodes: list[tuple[str, tuple[int, ...], int]],
          shapes: Mapping[int, tuple[int, ...]], inputs: tuple[int, ...],
          outputs: tuple[int, ...]) -> Graph:
    """A graph from (layer, input tensor ids, output tensor id) triples."""
    return Graph(layers={spec.name: spec for spec in layers},
                 nodes=tuple(Node(name, ins, (out,)) for name, ins, out in nodes),
                 shapes=dict(shapes), inputs=inputs, outputs=outputs)


def snapshot(graph: Graph) -> dict[str, Any]:
    """Deep copies of everything a deletion could wrongly modify in place."""
    return {
        "weights": {n: {k: np.array(v, copy=True) for k, v in s.weights.items()}
                    for n, s in graph.layers.items()},
        "attrs": {n: dict(s.attrs) for n, s in graph.layers.items()},
        "shapes": dict(graph.shapes),
        "nodes": graph.nodes,
    }


def assert_unchanged(graph: Graph, before: dict[str, Any]) -> None:
    assert dict(graph.shapes) == before["shapes"]
    assert graph.nodes == before["nodes"]
    for name, spec in graph.layers.items():
        assert dict(spec.attrs) == before["attrs"][name]
        assert spec.weights.keys() == before["weights"][name].keys()
        for key, value in spec.weights.items():
            np.testing.assert_array_equal(value, before["weights"][name][key])


def tensors(deletion: Any) -> dict[int, tuple[int, list[int]]]:
    """A deletion's tensors as plain Python values, for exact comparison."""
    return {t: (axis, idx.tolist()) for t, (axis, idx) in deletion.tensors.items()}


def w(graph: Graph, layer: str, weight: str) -> np.ndarray:
    return np.asarray(graph.layers[layer].weights[weight])


# --------------------------------------------------------------------------------------------
# Chains (Graph.chain)
# --------------------------------------------------------------------------------------------


def mlp() -> Graph:
    """x(5) -> d1(6) -> relu -> d2(4) -> d3(3)."""
    return Graph.chain((5,), [dense("d1", 5, 6), plain("relu", "ReLU"), dense("d2", 6, 4),
                              dense("d3", 4, 3)], [(6,), (6,), (4,), (3,)])


def test_chain_builds_a_sequence_of_nodes() -> None:
    g = mlp()
    assert g.inputs == (0,)
    assert g.outputs == (4,)
    assert [n.layer for n in g.nodes] == ["d1", "relu", "d2", "d3"]
    assert g.nodes[2] == Node("d2", (2,), (3,))
    assert g.shapes == {0: (5,), 1: (6,), 2: (6,), 3: (4,), 4: (3,)}
    assert g.producers[3].layer == "d2"
    assert [(n.layer, pos) for n, pos in g.consumers[1]] == [("relu", 0)]
    with pytest.raises(ValueError, match="2 layers but 1 output shapes"):
        Graph.chain((5,), [dense("a", 5, 2), dense("b", 2, 2)], [(2,)])


def test_dense_chain_deletion_exact() -> None:
    g = mlp()
    before = snapshot(g)
    group = dependency_group(g, "d1", [0, 2])
    assert tensors(group) == {1: (0, [0, 2]), 2: (0, [0, 2])}
    layers = group.layers()
    assert list(layers) == ["d1", "relu", "d2"]
    assert layers["d1"].inputs == {}
    assert layers["d1"].outputs is not None
    assert layers["d1"].outputs.tolist() == [0, 2]
    assert layers["relu"].inputs[0].tolist() == [0, 2]
    assert layers["d2"].inputs[0].tolist() == [0, 2]
    assert layers["d2"].outputs is None
    assert {k: v.tolist() for k, v in group.neurons().items()} == {"d1": [0, 2]}

    new = delete_neurons(g, "d1", [0, 2])
    np.testing.assert_array_equal(w(new, "d1", "kernel"),
                                  np.delete(before["weights"]["d1"]["kernel"], [0, 2], axis=1))
    np.testing.assert_array_equal(w(new, "d1", "bias"),
                                  np.delete(before["weights"]["d1"]["bias"], [0, 2]))
    np.testing.assert_array_equal(w(new, "d2", "kernel"),
                                  np.delete(before["weights"]["d2"]["kernel"], [0, 2], axis=0))
    np.testing.assert_array_equal(w(new, "d2", "bias"), before["weights"]["d2"]["bias"])
    assert new.layers["d1"].attrs["units"] == 4
    assert new.layers["d2"].attrs["units"] == 4
    assert new.layers["d3"] is g.layers["d3"]
    assert new.shapes == {0: (5,), 1: (4,), 2: (4,), 3: (4,), 4: (3,)}
    assert new.nodes == g.nodes
    assert_unchanged(g, before)


def test_negative_indices_count_from_the_end() -> None:
    g = mlp()
    assert tensors(dependency_group(g, "d2", [-1, 0])) == {3: (0, [0, 3])}
    new = delete_neurons(g, "d2", [-1])
    np.testing.assert_array_equal(w(new, "d3", "kernel"), np.delete(w(g, "d3", "kernel"), 3, 0))


def test_request_mapping_deletes_from_several_layers() -> None:
    g = mlp()
    before = snapshot(g)
    group = dependency_group(g, {"d1": [5], "d2": np.array([1, 2])})
    assert tensors(group) == {1: (0, [5]), 2: (0, [5]), 3: (0, [1, 2])}
    assert {k: v.tolist() for k, v in group.neurons().items()} == {"d1": [5], "d2": [1, 2]}
    new = apply_deletion(group)
    kernel = np.delete(np.delete(before["weights"]["d2"]["kernel"], [5], 0), [1, 2], 1)
    np.testing.assert_array_equal(w(new, "d2", "kernel"), kernel)
    np.testing.assert_array_equal(w(new, "d3", "kernel"),
                                  np.delete(before["weights"]["d3"]["kernel"], [1, 2], 0))
    assert new.layers["d1"].attrs["units"] == 5
    assert new.layers["d2"].attrs["units"] == 2
    assert_unchanged(g, before)
    # The same request, one layer at a time, gives the same weights.
    step = delete_neurons(delete_neurons(g, "d1", [5]), "d2", [1, 2])
    for name in new.layers:
        for key in new.layers[name].weights:
            np.testing.assert_array_equal(w(new, name, key), w(step, name, key))


def test_apply_deletion_uses_the_given_take() -> None:
    g = mlp()
    calls: list[tuple[tuple[int, ...], list[int], int]] = []

    def take(array: Any, idx: np.ndarray, axis: int) -> Any:
        calls.append((tuple(array.shape), idx.tolist(), axis))
        return np.take(array, idx, axis)

    delete_neurons(g, "d2", [0], take=take)
    assert sorted(calls) == sorted([((6, 4), [1, 2, 3], 1), ((4,), [1, 2, 3], 0),
                                    ((4, 3), [1, 2, 3], 0)])


def test_prunable_layers_and_neuron_count() -> None:
    g = mlp()
    assert prunable_layers(g) == ["d1", "d2", "d3"]
    assert neuron_count(g, "d1") == 6
    assert neuron_count(g, "d3") == 3
    with pytest.raises(PruneError, match="has no neurons"):
        neuron_count(g, "relu")


def test_str_lists_every_affected_layer() -> None:
    text = str(dependency_group(mlp(), "d1", [1]))
    lines = text.splitlines()
    assert len(lines) == 3
    assert lines[0].startswith("d1 (Dense): output: [1] (1)")
    assert lines[1].startswith("relu (ReLU)")
    assert lines[2] == "d2 (Dense): input 0: [1] (1)"


# --------------------------------------------------------------------------------------------
# Convolutions, BN, pooling, depthwise, separable, transposed
# --------------------------------------------------------------------------------------------


def test_conv_bn_pool_gap_dense() -> None:
    layers = [conv("c1", 3, 4), bn("bn", 4), plain("pool", "MaxPooling2D", pool_size=2,
                                                  data_format="channels_last"),
              conv("c2", 4, 5), plain("gap", "GlobalAveragePooling2D",
                                      data_format="channels_last"), dense("fc", 5, 2)]
    g = Graph.chain((8, 8, 3), layers, [(8, 8, 4), (8, 8, 4), (4, 4, 4), (4, 4, 5), (5,), (2,)])
    before = snapshot(g)
    group = dependency_group(g, "c1", [1, 3])
    assert tensors(group) == {1: (2, [1, 3]), 2: (2, [1, 3]), 3: (2, [1, 3])}
    new = apply_deletion(group)
    k1 = before["weights"]["c1"]["kernel"]
    np.testing.assert_array_equal(w(new, "c1", "kernel"), np.delete(k1, [1, 3], axis=3))
    for name in ("gamma", "beta", "moving_mean", "moving_variance"):
        np.testing.assert_array_equal(w(new, "bn", name),
                                      np.delete(before["weights"]["bn"][name], [1, 3]))
    np.testing.assert_array_equal(w(new, "c2", "kernel"),
                                  np.delete(before["weights"]["c2"]["kernel"], [1, 3], axis=2))
    assert new.layers["c1"].attrs["filters"] == 2
    assert new.layers["c2"].attrs["filters"] == 5
    assert new.shapes[3] == (4, 4, 2)
    assert new.shapes[4] == (4, 4, 5)

    # Deleting c2's filters passes the GAP into the dense kernel's rows.
    group = dependency_group(g, "c2", [0, 4])
    assert tensors(group) == {4: (2, [0, 4]), 5: (0, [0, 4])}
    new = apply_deletion(group)
    np.testing.assert_array_equal(w(new, "fc", "kernel"),
                                  np.delete(before["weights"]["fc"]["kernel"], [0, 4], axis=0))
    assert_unchanged(g, before)


def test_channels_first_conv_chain() -> None:
    layers = [conv("c1", 3, 4, data_format="channels_first"), bn("bn", 4, axis=1),
              conv("c2", 4, 2, data_format="channels_first")]
    g = Graph.chain((3, 8, 8), layers, [(4, 8, 8), (4, 8, 8), (2, 8, 8)])
    group = dependency_group(g, "c1", [2])
    assert tensors(group) == {1: (0, [2]), 2: (0, [2])}
    new = apply_deletion(group)
    assert new.shapes[1] == (3, 8, 8)
    np.testing.assert_array_equal(w(new, "c1", "kernel"), np.delete(w(g, "c1", "kernel"), 2, 3))
    np.testing.assert_array_equal(w(new, "bn", "gamma"), np.delete(w(g, "bn", "gamma"), 2))
    np.testing.assert_array_equal(w(new, "c2", "kernel"), np.delete(w(g, "c2", "kernel"), 2, 2))


def test_bn_on_the_wrong_axis_is_refused() -> None:
    g = Graph.chain((8, 8, 3), [conv("c1", 3, 4), bn("bn", 8, axis=1), conv("c2", 4, 2)],
                    [(8, 8, 4), (8, 8, 4), (8, 8, 2)])
    with pytest.raises(UnsupportedLayerError, match="'bn'"):
        dependency_group(g, "c1", [0])


def test_channels_first_pooling_after_channels_last_conv_is_refused() -> None:
    g = Graph.chain((8, 8, 3), [conv("c1", 3, 4),
                                plain("pool", "MaxPooling2D", data_format="channels_first"),
                                conv("c2", 4, 2)], [(8, 8, 4), (8, 4, 2), (8, 4, 2)])
    with pytest.raises(UnsupportedLayerError, match=r"'pool'.*axis"):
        dependency_group(g, "c1", [0])


def depthwise_graph(m: int) -> Graph:
    """x -> a(3) -> DepthwiseConv2D(multiplier m) -> c(2)."""
    dw = LayerSpec("dw", "DepthwiseConv2D", {"depth_multiplier": m,
                                             "data_format": "channels_last"},
                   {"kernel": _values((3, 3, 3, m)), "bias": _values((3 * m,))})
    return Graph.chain((6, 6, 2), [conv("a", 2, 3), dw, conv("c", 3 * m, 2)],
                       [(6, 6, 3), (6, 6, 3 * m), (6, 6, 2)])


def test_depthwise_passes_multiplier_groups() -> None:
    g = depthwise_graph(2)
    before = snapshot(g)
    group = dependency_group(g, "a", [1])
    assert tensors(group) == {1: (2, [1]), 2: (2, [2, 3])}
    assert list(group.neurons()) == ["a"]
    new = apply_deletion(group)
    np.testing.assert_array_equal(w(new, "dw", "kernel"), np.delete(w(g, "dw", "kernel"), 1, 2))
    np.testing.assert_array_equal(w(new, "dw", "bias"), np.delete(w(g, "dw", "bias"), [2, 3]))
    np.testing.assert_array_equal(w(new, "c", "kernel"),
                                  np.delete(w(g, "c", "kernel"), [2, 3], axis=2))
    assert new.layers["dw"].attrs["depth_multiplier"] == 2
    assert new.shapes[2] == (6, 6, 4)
    assert_unchanged(g, before)


def test_deleting_one_depthwise_output_deletes_its_whole_group_and_input() -> None:
    g = depthwise_graph(2)
    group = dependency_group(g, "dw", [3])
    # Output 3 is channel 1's second copy: channel 1 of 'a' goes, and so does output 2.
    assert tensors(group) == {1: (2, [1]), 2: (2, [2, 3])}
    assert {k: v.tolist() for k, v in group.neurons().items()} == {"a": [1]}
    assert neuron_count(g, "dw") == 6
    assert "dw" in prunable_layers(g)


def test_depthwise_on_a_model_input_is_refused() -> None:
    dw = LayerSpec("dw", "DepthwiseConv2D", {"depth_multiplier": 1,
                                             "data_format": "channels_last"},
                   {"kernel": _values((3, 3, 2, 1)), "bias": _values((2,))})
    g = Graph.chain((6, 6, 2), [dw, conv("c", 2, 2)], [(6, 6, 2), (6, 6, 2)])
    with pytest.raises(PruneError, match="model input"):
        dependency_group(g, "dw", [0])


def test_separable_conv_input_deletion_repeats_over_the_multiplier() -> None:
    sep = LayerSpec("sep", "SeparableConv2D", {"filters": 4, "depth_multiplier": 2,
                                               "data_format": "channels_last"},
                    {"depthwise_kernel": _values((3, 3, 3, 2)),
                     "pointwise_kernel": _values((1, 1, 6, 4)), "bias": _values((4,))})
    g = Graph.chain((6, 6, 2), [conv("a", 2, 3), sep, conv("c", 4, 2)],
                    [(6, 6, 3), (6, 6, 4), (6, 6, 2)])
    new = delete_neurons(g, "a", [1])
    np.testing.assert_array_equal(w(new, "sep", "depthwise_kernel"),
                                  np.delete(w(g, "sep", "depthwise_kernel"), 1, axis=2))
    np.testing.assert_array_equal(w(new, "sep", "pointwise_kernel"),
                                  np.delete(w(g, "sep", "pointwise_kernel"), [2, 3], axis=2))
    np.testing.assert_array_equal(w(new, "sep", "bias"), w(g, "sep", "bias"))
    assert new.layers["sep"].attrs["filters"] == 4

    new = delete_neurons(g, "sep", [0, 3])
    np.testing.assert_array_equal(w(new, "sep", "pointwise_kernel"),
                                  np.delete(w(g, "sep", "pointwise_kernel"), [0, 3], axis=3))
    np.testing.assert_array_equal(w(new, "sep", "depthwise_kernel"),
                                  w(g, "sep", "depthwise_kernel"))
    np.testing.assert_array_equal(w(new, "sep", "bias"), np.delete(w(g, "sep", "bias"), [0, 3]))
    np.testing.assert_array_equal(w(new, "c", "kernel"),
                                  np.delete(w(g, "c", "kernel"), [0, 3], axis=2))
    assert new.layers["sep"].attrs["filters"] == 2


def test_conv_transpose_kernel_is_out_in() -> None:
    tr = LayerSpec("up", "Conv2DTranspose", {"filters": 5, "data_format": "channels_last"},
                   {"kernel": _values((2, 2, 5, 3)), "bias": _values((5,))})
    g = Graph.chain((4, 4, 2), [conv("a", 2, 3), tr, conv("c", 5, 2)],
                    [(4, 4, 3), (8, 8, 5), (8, 8, 2)])
    new = delete_neurons(g, "a", [0, 2])
    np.testing.assert_array_equal(w(new, "up", "kernel"),
                                  np.delete(w(g, "up", "kernel"), [0, 2], axis=3))
    new = delete_neurons(g, "up", [4])
    np.testing.assert_array_equal(w(new, "up", "kernel"), np.delete(w(g, "up", "kernel"), 4, 2))
    np.testing.assert_array_equal(w(new, "up", "bias"), np.delete(w(g, "up", "bias"), 4))
    np.testing.assert_array_equal(w(new, "c", "kernel"), np.delete(w(g, "c", "kernel"), 4, 2))
    assert new.layers["up"].attrs["filters"] == 4
    assert new.shapes[2] == (8, 8, 4)


def test_grouped_conv_is_refused() -> None:
    g = Graph.chain((6, 6, 4), [conv("a", 4, 4), conv("g", 2, 4, groups=2)],
                    [(6, 6, 4), (6, 6, 4)])
    with pytest.raises(UnsupportedLayerError, match="grouped"):
        dependency_group(g, "a", [0])


def test_prelu_alpha_is_sliced_unless_shared() -> None:
    prelu = LayerSpec("act", "PReLU", {}, {"alpha": _values((6, 6, 3))})
    g = Graph.chain((6, 6, 2), [conv("a", 2, 3), prelu, conv("c", 3, 2)],
                    [(6, 6, 3), (6, 6, 3), (6, 6, 2)])
    new = delete_neurons(g, "a", [2])
    np.testing.assert_array_equal(w(new, "act", "alpha"), np.delete(w(g, "act", "alpha"), 2, 2))
    shared = LayerSpec("act", "PReLU", {}, {"alpha": _values((1, 1, 1))})
    g = Graph.chain((6, 6, 2), [conv("a", 2, 3), shared, conv("c", 3, 2)],
                    [(6, 6, 3), (6, 6, 3), (6, 6, 2)])
    new = delete_neurons(g, "a", [2])
    np.testing.assert_array_equal(w(new, "act", "alpha"), w(g, "act", "alpha"))


# --------------------------------------------------------------------------------------------
# Flatten and Reshape
# --------------------------------------------------------------------------------------------


def test_flatten_channels_last() -> None:
    g = Graph.chain((2, 2, 2), [conv("a", 2, 3), plain("flat", "Flatten",
                                                       data_format="channels_last"),
                                dense("fc", 12, 2)], [(2, 2, 3), (12,), (2,)])
    group = dependency_group(g, "a", [1])
    # Flat index of (h, w, c) is (h*2 + w)*3 + c.
    assert tensors(group) == {1: (2, [1]), 2: (0, [1, 4, 7, 10])}
    new = apply_deletion(group)
    np.testing.assert_array_equal(w(new, "fc", "kernel"),
                                  np.delete(w(g, "fc", "kernel"), [1, 4, 7, 10], axis=0))
    assert new.shapes[2] == (8,)


def test_flatten_channels_first_transposes_first() -> None:
    # Keras's Flatten(data_format="channels_first") moves channels last before flattening.
    g = Graph.chain((2, 2, 2), [conv("a", 2, 3, data_format="channels_first"),
                                plain("flat", "Flatten", data_format="channels_first"),
                                dense("fc", 12, 2)], [(3, 2, 2), (12,), (2,)])
    assert tensors(dependency_group(g, "a", [1])) == {1: (0, [1]), 2: (0, [1, 4, 7, 10])}
    # A channels_first tensor flattened as it lies: channel c is positions 4c .. 4c+3.
    g = Graph.chain((2, 2, 2), [conv("a", 2, 3, data_format="channels_first"),
                                plain("flat", "Flatten", data_format="channels_last"),
                                dense("fc", 12, 2)], [(3, 2, 2), (12,), (2,)])
    group = dependency_group(g, "a", [1, 2])
    assert tensors(group) == {1: (0, [1, 2]), 2: (0, list(range(4, 12)))}
    new = apply_deletion(group)
    np.testing.assert_array_equal(w(new, "fc", "kernel"), w(g, "fc", "kernel")[:4])


def test_reshape_keeps_channels_on_an_axis_and_updates_target_shape() -> None:
    g = Graph.chain((2, 2, 2), [conv("a", 2, 3), plain("rs", "Reshape", target_shape=(4, 3)),
                                dense("fc", 3, 2)], [(2, 2, 3), (4, 3), (4, 2)])
    group = dependency_group(g, "a", [0])
    assert tensors(group) == {1: (2, [0]), 2: (1, [0])}
    new = apply_deletion(group)
    assert new.layers["rs"].attrs["target_shape"] == (4, 2)
    assert new.shapes[2] == (4, 2)
    np.testing.assert_array_equal(w(new, "fc", "kernel"), np.delete(w(g, "fc", "kernel"), 0, 0))


def test_reshape_to_a_vector_acts_like_flatten() -> None:
    g = Graph.chain((2, 2, 2), [conv("a", 2, 3), plain("rs", "Reshape", target_shape=(12,)),
                                dense("fc", 12, 2)], [(2, 2, 3), (12,), (2,)])
    group = dependency_group(g, "a", [2])
    assert tensors(group) == {1: (2, [2]), 2: (0, [2, 5, 8, 11])}
    assert apply_deletion(group).layers["rs"].attrs["target_shape"] == (8,)


def test_reshape_that_mixes_channels_is_refused() -> None:
    g = Graph.chain((2, 2, 2), [conv("a", 2, 3), plain("rs", "Reshape", target_shape=(3, 4)),
                                dense("fc", 4, 2)], [(2, 2, 3), (3, 4), (3, 2)])
    with pytest.raises(UnsupportedLayerError, match=r"'rs'.*mixing"):
        dependency_group(g, "a", [0])


def test_squeeze_excite_reshape_to_1x1xc() -> None:
    """conv -> GAP -> d1 -> d2 -> Reshape(1, 1, C) -> Multiply(conv, scale) -> conv."""
    layers = [conv("c", 2, 4), plain("gap", "GlobalAveragePooling2D",
                                     data_format="channels_last"),
              dense("d1", 4, 2), dense("d2", 2, 4), plain("rs", "Reshape", target_shape=(1, 1, 4)),
              plain("mul", "Multiply"), conv("out", 4, 2)]
    g = build(layers, [("c", (0,), 1), ("gap", (1,), 2), ("d1", (2,), 3), ("d2", (3,), 4),
                       ("rs", (4,), 5), ("mul", (1, 5), 6), ("out", (6,), 7)],
              {0: (4, 4, 2), 1: (4, 4, 4), 2: (4,), 3: (2,), 4: (4,), 5: (1, 1, 4),
               6: (4, 4, 4), 7: (4, 4, 2)}, (0,), (7,))
    group = dependency_group(g, "c", [3])
    assert tensors(group) == {1: (2, [3]), 2: (0, [3]), 4: (0, [3]), 5: (2, [3]), 6: (2, [3])}
    assert {k: v.tolist() for k, v in group.neurons().items()} == {"c": [3], "d2": [3]}
    new = apply_deletion(group)
    np.testing.assert_array_equal(w(new, "d1", "kernel"), np.delete(w(g, "d1", "kernel"), 3, 0))
    np.testing.assert_array_equal(w(new, "d2", "kernel"), np.delete(w(g, "d2", "kernel"), 3, 1))
    assert new.layers["rs"].attrs["target_shape"] == (1, 1, 3)
    assert new.layers["d2"].attrs["units"] == 3
    # Deleting d1's units stays inside the excitation.
    assert tensors(dependency_group(g, "d1", [0])) == {3: (0, [0])}


# --------------------------------------------------------------------------------------------
# Merges: Add (residual), Concatenate
# --------------------------------------------------------------------------------------------


def residual(shortcut_conv: bool) -> Graph:
    """stem(4) -> a -> b, Add(stem or short(stem), b) -> head(2); output is head."""
    layers = [conv("stem", 3, 4), conv("a", 4, 4), conv("b", 4, 4), plain("add", "Add"),
              plain("relu", "ReLU"), conv("head", 4, 2)]
    nodes: list[tuple[str, tuple[int, ...], int]] = [("stem", (0,), 1), ("a", (1,), 2),
                                                     ("b", (2,), 3)]
    shapes = {0: (6, 6, 3), 1: (6, 6, 4), 2: (6, 6, 4), 3: (6, 6, 4), 4: (6, 6, 4),
              5: (6, 6, 4), 6: (6, 6, 2)}
    if shortcut_conv:
        layers.append(conv("short", 4, 4, k=1))
        nodes += [("short", (1,), 7), ("add", (3, 7), 4)]
        shapes[7] = (6, 6, 4)
    else:
        nodes.append(("add", (1, 3), 4))
    nodes += [("relu", (4,), 5), ("head", (5,), 6)]
    return build(layers, nodes, shapes, (0,), (6,))


def test_identity_residual_couples_both_producers() -> None:
    g = residual(shortcut_conv=False)
    before = snapshot(g)
    group = dependency_group(g, "b", [1, 2])
    # stem's output feeds the Add directly, so it loses the same channels as b.
    assert tensors(group) == {1: (2, [1, 2]), 3: (2, [1, 2]), 4: (2, [1, 2]),
                              5: (2, [1, 2])}
    assert {k: v.tolist() for k, v in group.neurons().items()} == {"stem": [1, 2],
                                                                    "b": [1, 2]}
    assert set(group.layers()) == {"stem", "a", "b", "add", "relu", "head"}
    new = apply_deletion(group)
    for name, axis in (("stem", 3), ("b", 3), ("a", 2), ("head", 2)):
        np.testing.assert_array_equal(
            w(new, name, "kernel"), np.delete(before["weights"][name]["kernel"], [1, 2], axis))
    np.testing.assert_array_equal(w(new, "a", "bias"), before["weights"]["a"]["bias"])
    assert new.layers["a"].attrs["filters"] == 4
    assert new.layers["stem"].attrs["filters"] == 2
    # Deleting from stem itself is the same group.
    assert tensors(dependency_group(g, "stem", [1, 2])) == tensors(group)
    # a is outside the group: only b's kernel rows go.
    assert tensors(dependency_group(g, "a", [0])) == {2: (2, [0])}
    assert_unchanged(g, before)


def test_conv_shortcut_residual_couples_shortcut_not_stem() -> None:
    g = residual(shortcut_conv=True)
    group = dependency_group(g, "short", [0])
    assert {k: v.tolist() for k, v in group.neurons().items()} == {"b": [0], "short": [0]}
    assert tensors(group) == {3: (2, [0]), 4: (2, [0]), 5: (2, [0]), 7: (2, [0])}
    new = apply_deletion(group)
    np.testing.assert_array_equal(w(new, "short", "kernel"),
                                  np.delete(w(g, "short", "kernel"), 0, 3))
    np.testing.assert_array_equal(w(new, "b", "kernel"), np.delete(w(g, "b", "kernel"), 0, 3))
    np.testing.assert_array_equal(w(new, "stem", "kernel"), w(g, "stem", "kernel"))


def test_residual_on_a_model_input_is_refused() -> None:
    layers = [conv("a", 4, 4), plain("add", "Add"), conv("head", 4, 2)]
    g = build(layers, [("a", (0,), 1), ("add", (0, 1), 2), ("head", (2,), 3)],
              {0: (6, 6, 4), 1: (6, 6, 4), 2: (6, 6, 4), 3: (6, 6, 2)}, (0,), (3,))
    before = snapshot(g)
    with pytest.raises(PruneError, match="model input"):
        dependency_group(g, "a", [0])
    with pytest.raises(PruneError, match="model input"):
        delete_neurons(g, "a", [0])
    assert_unchanged(g, before)


def test_add_with_broadcast_is_refused() -> None:
    layers = [conv("a", 2, 4), conv("b", 2, 1), plain("add", "Add"), conv("head", 4, 2)]
    g = build(layers, [("a", (0,), 1), ("b", (0,), 2), ("add", (1, 2), 3), ("head", (3,), 4)],
              {0: (6, 6, 2), 1: (6, 6, 4), 2: (6, 6, 1), 3: (6, 6, 4), 4: (6, 6, 2)},
              (0,), (4,))
    with pytest.raises(UnsupportedLayerError, match="broadcasts"):
        dependency_group(g, "a", [0])


def test_coupled_requests_that_empty_a_tensor_are_refused() -> None:
    g = residual(shortcut_conv=True)
    with pytest.raises(PruneError, match="all 4 channels"):
        dependency_group(g, {"b": [0, 1], "short": [2, 3]})
    with pytest.raises(PruneError, match="cannot delete all 4 neurons of 'b'"):
        dependency_group(g, "b", [0, 1, 2, 3])


def inception(axis: int = -1) -> Graph:
    """a(3) and b(5) from x, Concatenate(axis) -> c(2)."""
    layers = [conv("a", 2, 3), conv("b", 2, 5), plain("cat", "Concatenate", axis=axis),
              conv("c", 8, 2), plain("gap", "GlobalMaxPooling2D", data_format="channels_last"),
              dense("fc", 2, 3)]
    nodes = [("a", (0,), 1), ("b", (0,), 2), ("cat", (1, 2), 3), ("c", (3,), 4), ("gap", (4,), 5),
             ("fc", (5,), 6)]
    shapes = {0: (4, 4, 2), 1: (4, 4, 3), 2: (4, 4, 5), 3: (4, 4, 8), 4: (4, 4, 2), 5: (2,),
              6: (3,)}
    return build(layers, nodes, shapes, (0,), (6,))


def test_concatenate_offsets_channels() -> None:
    g = inception()
    before = snapshot(g)
    group = dependency_group(g, "b", [0, 4])
    assert tensors(group) == {2: (2, [0, 4]), 3: (2, [3, 7])}
    assert {k: v.tolist() for k, v in group.neurons().items()} == {"b": [0, 4]}
    new = apply_deletion(group)
    np.testing.assert_array_equal(w(new, "c", "kernel"),
                                  np.delete(before["weights"]["c"]["kernel"], [3, 7], axis=2))
    np.testing.assert_array_equal(w(new, "a", "kernel"), before["weights"]["a"]["kernel"])
    assert new.shapes[3] == (4, 4, 6)
    assert new.layers["b"].attrs["filters"] == 3
    group = dependency_group(g, {"a": [1], "b": [1]})
    assert tensors(group) == {1: (2, [1]), 2: (2, [1]), 3: (2, [1, 4])}
    # The consumer after the concatenation: its own filters, then the GAP, then fc's rows.
    group = dependency_group(g, "c", [1])
    assert tensors(group) == {4: (2, [1]), 5: (0, [1])}
    np.testing.assert_array_equal(w(apply_deletion(group), "fc", "kernel"),
                                  w(g, "fc", "kernel")[:1])
    assert_unchanged(g, before)


def test_concatenate_on_another_axis_merges_like_add() -> None:
    layers = [conv("a", 2, 3), conv("b", 2, 3), plain("cat", "Concatenate", axis=1),
              conv("c", 3, 2)]
    g = build(layers, [("a", (0,), 1), ("b", (0,), 2), ("cat", (1, 2), 3), ("c", (3,), 4)],
              {0: (4, 4, 2), 1: (4, 4, 3), 2: (4, 4, 3), 3: (8, 4, 3), 4: (8, 4, 2)},
              (0,), (4,))
    group = dependency_group(g, "a", [2])
    assert tensors(group) == {1: (2, [2]), 2: (2, [2]), 3: (2, [2])}
    assert {k: v.tolist() for k, v in group.neurons().items()} == {"a": [2], "b": [2]}
    new = apply_deletion(group)
    assert new.shapes[3] == (8, 4, 2)
    np.testing.assert_array_equal(w(new, "c", "kernel"), np.delete(w(g, "c", "kernel"), 2, 2))


def test_concatenate_with_a_model_input_keeps_the_input() -> None:
    layers = [conv("a", 2, 3), plain("cat", "Concatenate", axis=-1), conv("c", 5, 2)]
    g = build(layers, [("a", (0,), 1), ("cat", (0, 1), 2), ("c", (2,), 3)],
              {0: (4, 4, 2), 1: (4, 4, 3), 2: (4, 4, 5), 3: (4, 4, 2)}, (0,), (3,))
    group = dependency_group(g, "a", [0])
    assert tensors(group) == {1: (2, [0]), 2: (2, [2])}
    np.testing.assert_array_equal(w(apply_deletion(group), "c", "kernel"),
                                  np.delete(w(g, "c", "kernel"), 2, 2))


# --------------------------------------------------------------------------------------------
# Shared layers
# --------------------------------------------------------------------------------------------


def shared_graph() -> Graph:
    """x -> a(6), b(6); shared s(6->5) on both; Add -> out(2)."""
    layers = [dense("a", 4, 6), dense("b", 4, 6), dense("s", 6, 5), plain("add", "Add"),
              dense("out", 5, 2)]
    nodes = [("a", (0,), 1), ("b", (0,), 2), ("s", (1,), 3), ("s", (2,), 4), ("add", (3, 4), 5),
             ("out", (5,), 6)]
    shapes = {0: (4,), 1: (6,), 2: (6,), 3: (5,), 4: (5,), 5: (5,), 6: (2,)}
    return build(layers, nodes, shapes, (0,), (6,))


def test_shared_layer_outputs_go_in_every_call() -> None:
    g = shared_graph()
    before = snapshot(g)
    assert [n.outputs for n in g.calls("s")] == [(3,), (4,)]
    group = dependency_group(g, "s", [2])
    assert tensors(group) == {3: (0, [2]), 4: (0, [2]), 5: (0, [2])}
    new = apply_deletion(group)
    np.testing.assert_array_equal(w(new, "s", "kernel"), np.delete(w(g, "s", "kernel"), 2, 1))
    np.testing.assert_array_equal(w(new, "out", "kernel"),
                                  np.delete(w(g, "out", "kernel"), 2, 0))
    assert new.shapes[3] == new.shapes[4] == (4,)
    assert new.layers["s"].attrs["units"] == 4
    assert_unchanged(g, before)


def test_shared_layer_inputs_couple_its_callers() -> None:
    g = shared_graph()
    group = dependency_group(g, "a", [1])
    # s's kernel row 1 goes for both calls, so b must lose its unit 1 as well.
    assert tensors(group) == {1: (0, [1]), 2: (0, [1])}
    assert {k: v.tolist() for k, v in group.neurons().items()} == {"a": [1], "b": [1]}
    text = str(group)
    for name in ("a (Dense)", "b (Dense)", "s (Dense)"):
        assert name in text
    new = apply_deletion(group)
    np.testing.assert_array_equal(w(new, "s", "kernel"), np.delete(w(g, "s", "kernel"), 1, 0))
    np.testing.assert_array_equal(w(new, "b", "kernel"), np.delete(w(g, "b", "kernel"), 1, 1))


# --------------------------------------------------------------------------------------------
# Outputs, inputs, errors
# --------------------------------------------------------------------------------------------


def test_model_output_needs_allow_output_change() -> None:
    g = mlp()
    before = snapshot(g)
    with pytest.raises(PruneError, match="allow_output_change"):
        dependency_group(g, "d3", [0])
    with pytest.raises(PruneError, match="allow_output_change"):
        delete_neurons(g, "d3", [0])
    new = delete_neurons(g, "d3", [0], allow_output_change=True)
    assert new.shapes[4] == (2,)
    np.testing.assert_array_equal(w(new, "d3", "kernel"), np.delete(w(g, "d3", "kernel"), 0, 1))
    assert_unchanged(g, before)


def test_output_through_pass_through_layers_needs_allow_output_change() -> None:
    g = Graph.chain((4,), [dense("d", 4, 3), plain("act", "ReLU")], [(3,), (3,)])
    with pytest.raises(PruneError, match="model output"):
        dependency_group(g, "d", [1])
    group = dependency_group(g, "d", [1], allow_output_change=True)
    assert tensors(group) == {1: (0, [1]), 2: (0, [1])}


def test_softmax_output_units_are_coupled() -> None:
    # A softmax Dense inside the model: deleting a unit renormalises the others.
    g = Graph.chain((4,), [dense("d", 4, 3, activation="softmax"), dense("e", 3, 2)],
                    [(3,), (2,)])
    with pytest.raises(UnsupportedLayerError, match=r"'d'.*softmax"):
        dependency_group(g, "d", [1])
    g = Graph.chain((4,), [dense("d", 4, 3), plain("sm", "Softmax", axis=-1)], [(3,), (3,)])
    with pytest.raises(UnsupportedLayerError, match="'sm'"):
        dependency_group(g, "d", [1], allow_output_change=True)
    g = Graph.chain((4,), [dense("d", 4, 3), plain("sm", "Activation", activation="softmax")],
                    [(3,), (3,)])
    with pytest.raises(UnsupportedLayerError, match="'sm'"):
        dependency_group(g, "d", [1], allow_output_change=True)


@pytest.mark.parametrize("kind", ["LayerNormalization", "GroupedQueryAttention", "MyCustomLayer"])
def test_unsupported_kinds_are_refused(kind: str) -> None:
    g = Graph.chain((4,), [dense("d1", 4, 3), plain("x", kind), dense("d2", 3, 2)],
                    [(3,), (3,), (2,)])
    before = snapshot(g)
    with pytest.raises(UnsupportedLayerError, match=f"'x' \\({kind}\\)"):
        dependency_group(g, "d1", [0])
    with pytest.raises(UnsupportedLayerError):
        delete_neurons(g, "d1", [0])
    assert_unchanged(g, before)
    # Deletions that do not reach the unsupported layer still work.
    assert tensors(dependency_group(g, "d2", [0], allow_output_change=True)) == {3: (0, [0])}


def test_bad_requests() -> None:
    g = mlp()
    with pytest.raises(PruneError, match=r"no layer named 'd1x'.*did you mean 'd1'"):
        dependency_group(g, "d1x", [0])
    with pytest.raises(PruneError, match=r"'relu'.*no neurons"):
        dependency_group(g, "relu", [0])
    with pytest.raises(PruneError, match=r"out of range.*6 neurons"):
        dependency_group(g, "d1", [6])
    with pytest.raises(PruneError, match="out of range"):
        dependency_group(g, "d1", [-7])
    with pytest.raises(PruneError, match="repeat"):
        dependency_group(g, "d1", [1, 1])
    with pytest.raises(PruneError, match="repeat"):
        dependency_group(g, "d1", [5, -1])
    with pytest.raises(PruneError, match="integers"):
        dependency_group(g, "d1", [1.0])  # type: ignore[list-item]
    with pytest.raises(PruneError, match="integers"):
        dependency_group(g, "d1", [True])
    with pytest.raises(PruneError, match="which neurons"):
        dependency_group(g, "d1")
    with pytest.raises(PruneError, match="not both"):
        dependency_group(g, {"d1": [0]}, [1])
    with pytest.raises(PruneError, match="all 6 neurons"):
        dependency_group(g, "d1", range(6))


def test_empty_request_changes_nothing() -> None:
    g = mlp()
    group = dependency_group(g, "d1", [])
    assert tensors(group) == {}
    assert str(group) == ""
    new = apply_deletion(group)
    assert new.shapes == g.shapes
    assert dict(new.layers) == dict(g.layers)
    # Nothing deleted from an output layer changes no output.
    assert tensors(dependency_group(g, "d3", [])) == {}


def test_graph_and_specs_are_frozen() -> None:
    g = mlp()
    with pytest.raises(AttributeError):
        g.inputs = (1,)  # type: ignore[misc]
    spec = g.layers["d1"]
    with pytest.raises(AttributeError):
        spec.name = "x"  # type: ignore[misc]
    changed = spec.with_changes({"units": 2}, {"bias": np.zeros(2)})
    assert changed.attrs["units"] == 2
    assert spec.attrs["units"] == 6
    assert changed.weights["kernel"] is spec.weights["kernel"]


# --------------------------------------------------------------------------------------------
# Property: a NumPy forward pass of random Dense DAGs matches the zeroed-weights oracle
# --------------------------------------------------------------------------------------------


def forward(g: Graph, x: np.ndarray) -> list[np.ndarray]:
    values = {g.inputs[0]: x}
    for node in g.nodes:
        spec = g.layers[node.layer]
        args = [values[t] for t in node.inputs]
        if spec.kind == "Dense":
            out = args[0] @ spec.weights["kernel"] + spec.weights["bias"]
        elif spec.kind == "ReLU":
            out = np.maximum(args[0], 0)
        elif spec.kind == "Add":
            out = sum(args[1:], args[0])
        elif spec.kind == "Concatenate":
            out = np.concatenate(args, axis=-1)
        else:  # pragma: no cover
            raise AssertionError(spec.kind)
        values[node.outputs[0]] = out
    return [values[t] for t in g.outputs]


@st.composite
def dense_dags(draw: st.DrawFn) -> Graph:
    """Random DAGs of Dense, ReLU, Add (same widths) and Concatenate on vectors."""
    layers: list[LayerSpec] = []
    nodes: list[tuple[str, tuple[int, ...], int]] = []
    shapes: dict[int, tuple[int, ...]] = {0: (draw(st.integers(2, 3)),)}
    for i in range(draw(st.integers(2, 7))):
        t = len(shapes)
        op = draw(st.sampled_from(["dense", "dense", "relu", "add", "add", "cat"]))
        # Mostly read the newest tensors, so that chains get deep and Adds join layers.
        src = draw(st.integers(max(0, t - 3), t - 1) | st.integers(0, t - 1))
        width = shapes[src][0]
        same = [s for s in shapes if s not in (0, src) and shapes[s] == (width,)]
        if op == "add" and same:
            other = draw(st.sampled_from(same))
            layers.append(plain(f"add{i}", "Add"))
            nodes.append((f"add{i}", (src, other), t))
            shapes[t] = (width,)
        elif op == "cat" and t > 1:
            other = draw(st.integers(0, t - 1))
            layers.append(plain(f"cat{i}", "Concatenate", axis=-1))
            nodes.append((f"cat{i}", (src, other), t))
            shapes[t] = (width + shapes[other][0],)
        elif op == "relu":
            layers.append(plain(f"relu{i}", "ReLU"))
            nodes.append((f"relu{i}", (src,), t))
            shapes[t] = (width,)
        else:
            units = draw(st.integers(2, 3))
            layers.append(dense(f"d{i}", width, units))
            nodes.append((f"d{i}", (src,), t))
            shapes[t] = (units,)
    t = len(shapes)
    last = t - 1
    layers.append(dense("head", shapes[last][0], 2))
    nodes.append(("head", (last,), t))
    shapes[t] = (2,)
    return build(layers, nodes, shapes, (0,), (t,))


@settings(max_examples=60, deadline=None)
@given(data=st.data())
def test_random_dense_dags_match_zeroed_oracle(data: st.DataObject) -> None:
    g = data.draw(dense_dags())
    targets = [n for n in prunable_layers(g) if n != "head"]
    if not targets:
        return
    layer = data.draw(st.sampled_from(targets))
    n = neuron_count(g, layer)
    idx = data.draw(st.lists(st.integers(0, n - 1), min_size=1, max_size=n - 1, unique=True))
    before = snapshot(g)
    try:
        group = dependency_group(g, layer, idx)
    except PruneError as err:
        # The only refusals possible here: a coupled input or an emptied tensor.
        assert "model input" in str(err) or "would delete all" in str(err), err
        event("refused")
        return
    event(f"{len(group.neurons())} layers lose neurons")
    new = apply_deletion(group)
    # Reference: the original weights with the rows that read deleted channels zeroed.
    ref_layers = dict(g.layers)
    for name, change in group.layers().items():
        spec = g.layers[name]
        if spec.kind == "Dense" and 0 in change.inputs:
            kernel = np.array(spec.weights["kernel"], copy=True)
            kernel[change.inputs[0]] = 0
            ref_layers[name] = spec.with_changes({}, {"kernel": kernel})
    ref = Graph(ref_layers, g.nodes, g.shapes, g.inputs, g.outputs)
    x = np.random.default_rng(0).standard_normal((3, *g.shapes[0]))
    np.testing.assert_allclose(forward(new, x)[0], forward(ref, x)[0], rtol=1e-10, atol=1e-10)
    # Every weight agrees with the new tensor shapes.
    for node in new.nodes:
        spec = new.layers[node.layer]
        if spec.kind == "Dense":
            assert spec.weights["kernel"].shape == (new.shapes[node.inputs[0]][0],
                                                    new.shapes[node.outputs[0]][0])
            assert spec.attrs["units"] == new.shapes[node.outputs[0]][0]
    assert_unchanged(g, before)


# --------------------------------------------------------------------------------------------
# Import hygiene
# --------------------------------------------------------------------------------------------


def test_core_imports_no_framework() -> None:
    code = textwrap.dedent("""
        import sys
        import kerasprune
        import kerasprune.core
        import kerasprune.core.apoz
        import kerasprune.core.cost
        import kerasprune.core.graph
        import kerasprune.core.rules
        import kerasprune.core.surgery
        import kerasprune.datasets
        kerasprune.PruneError, kerasprune.UnsupportedLayerError, kerasprune.__version__
        heavy = sorted(m for m in sys.modules
                       if m.split(".")[0] in ("keras", "tensorflow", "jax", "jaxlib", "torch"))
        print(repr(heavy))
    """)
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            check=False, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"
