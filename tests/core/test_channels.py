"""The channel analysis shared by surgery, APoZ sites and groups: computed once per graph,
recomputed after a registration, forgotten with its graph; and rule sets passed as ``rules=``.
"""

from __future__ import annotations

import gc
import warnings
import weakref
from collections.abc import Sequence

import numpy as np
import pytest
from core_graphs import conv, dense, plain, residual

from kerasprune.core import channels
from kerasprune.core.apoz import measurement_sites
from kerasprune.core.cost import count
from kerasprune.core.graph import Graph, LayerSpec, PruneError, Shape
from kerasprune.core.groups import analyze_channels
from kerasprune.core.rules import (
    RULES,
    Elementwise,
    Link,
    Rule,
    RuleSet,
    UnsupportedLayerError,
    default_rules,
    rule_for,
)
from kerasprune.core.surgery import (
    apply_deletion,
    delete_neurons,
    dependency_group,
    neuron_count,
    prunability,
    prunable_layers,
)


def relu_chain(n: int, width: int = 4) -> Graph:
    layers = [dense(f"d{i}", width, width, activation="relu") for i in range(n)]
    layers.append(dense("head", width, 2))
    return Graph.chain((width,), layers, [(width,)] * n + [(2,)])


@pytest.fixture
def computed(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Counts the analyses computed (the uncached function, wrapped)."""
    calls: list[int] = []
    real = channels.compute_channel_axes

    def counting(graph: Graph, rules: RuleSet | None = None) -> channels.ChannelAxes:
        calls.append(id(graph))
        return real(graph, rules)

    monkeypatch.setattr(channels, "compute_channel_axes", counting)
    return calls


def test_a_request_naming_every_layer_analyses_the_graph_once(computed: list[int]) -> None:
    graph = relu_chain(12)
    names = [f"d{i}" for i in range(12)]
    deletion = dependency_group(graph, {name: [0, 1] for name in names})
    assert sorted(deletion.neurons()) == sorted(names)
    assert [neuron_count(graph, name) for name in names] == [4] * 12
    assert all(p.prunable for p in prunability(graph) if p.layer != "head")
    assert list(measurement_sites(graph, names)) == names
    assert analyze_channels(graph).group_of("d3").width == 4
    pruned = apply_deletion(deletion)
    assert computed == [id(graph)]  # every call above shared one analysis
    neuron_count(pruned, "d0")  # a new graph gets its own
    assert computed == [id(graph), id(pruned)]


def test_an_equal_copy_is_analysed_again(computed: list[int]) -> None:
    graph = relu_chain(3)
    copy = Graph(dict(graph.layers), graph.nodes, dict(graph.shapes), graph.inputs,
                 graph.outputs)
    neuron_count(graph, "d0")
    neuron_count(copy, "d0")
    assert computed == [id(graph), id(copy)]


def test_a_registration_recomputes_the_analysis(computed: list[int]) -> None:
    graph = Graph.chain((4,), [dense("a", 4, 4), plain("scale", "MyScale"), dense("b", 4, 2)],
                        [(4,), (4,), (2,)])
    rules = RULES.copy()
    with pytest.raises(PruneError, match="no rule for MyScale"):
        dependency_group(graph, "a", [0], rules=rules)
    rules.register(Elementwise(), "MyScale")
    assert sorted(dependency_group(graph, "a", [0], rules=rules).layers()) == ["a", "b", "scale"]
    assert len(computed) == 2


def test_the_cache_does_not_keep_a_graph_alive() -> None:
    graph = relu_chain(3)
    neuron_count(graph, "d1")
    ref = weakref.ref(graph)
    del graph
    gc.collect()
    assert ref() is None


def test_analysis_axes_links_and_reasons() -> None:
    graph = residual()
    found = channels.channel_axes(graph)
    assert found is channels.channel_axes(graph)
    assert found.axes[0] is None and found.why_no_axis[0] == "it is a model input"
    assert all(found.axes[t] == 2 for t in range(1, 7)) and found.axes[7] == 0
    c1 = graph.calls("c1")[0]
    add = graph.calls("add")[0]
    assert found.makes_channels(c1) and not found.makes_channels(add)
    link = found.link(add)
    assert link is not None and len(link.sources) == 2
    assert found.why_not_targetable(graph, "c1") is None
    assert "has no neurons" in str(found.why_not_targetable(graph, "bn"))
    assert "did you mean 'c1'" in str(found.why_not_targetable(graph, "c11"))


def test_a_group_normalization_stops_channels_and_says_why() -> None:
    graph = Graph.chain((4,), [dense("a", 4, 4),
                               LayerSpec("ln", "GroupNormalization", {"axis": -1}),
                               plain("dw_free", "ReLU"), dense("b", 4, 2)],
                        [(4,), (4,), (4,), (2,)])
    found = channels.channel_axes(graph)
    ln_out = graph.calls("ln")[0].outputs[0]
    relu_out = graph.calls("dw_free")[0].outputs[0]
    assert found.axes[ln_out] is None and found.axes[relu_out] is None
    assert "normalises over the channels" in (found.refusal(graph.calls("ln")[0]) or "")
    assert found.origins[relu_out] == found.origins[ln_out]  # followed back to the norm
    with pytest.raises(UnsupportedLayerError, match="normalises over the channels"):
        dependency_group(graph, "a", [0])


# --- rule sets ------------------------------------------------------------------------------


class _Half(Rule):
    """A test rule for a kind of one's own: passes channels one to one (like Elementwise),
    written from the base class."""

    def link(self, spec: LayerSpec, in_shapes: Sequence[Shape], out_shape: Shape,
             axis: int) -> Link | None:
        return Link(axis, (np.arange(in_shapes[0][axis]),))


def test_a_rule_set_copy_is_independent_and_checked() -> None:
    mine = RULES.copy()
    mine.register(_Half(), "Half")
    assert "Half" in mine and "Half" not in RULES
    assert isinstance(rule_for("Half", mine), _Half)
    assert "Half" in mine.supported_kinds()
    assert "Half" not in default_rules()
    with pytest.raises(TypeError, match=r"must be a kerasprune\.core\.rules\.Rule"):
        mine.register("not a rule", "X")  # type: ignore[arg-type]
    version = mine.version
    del mine["Half"]
    assert mine.version == version + 1 and "Half" not in mine


def test_rules_are_passed_through_surgery_cost_and_sites() -> None:
    graph = Graph.chain((4, 4, 3), [conv("c1", 3, 4, activation="relu"), plain("h", "Half"),
                                    conv("c2", 4, 5), plain("gap", "GlobalAveragePooling2D"),
                                    dense("out", 5, 2)],
                        [(4, 4, 4), (4, 4, 4), (4, 4, 5), (5,), (2,)])
    mine = RULES.copy()
    mine.register(_Half(), "Half")
    with pytest.raises(PruneError, match="no rule for Half"):
        delete_neurons(graph, "c1", [1])
    pruned = delete_neurons(graph, "c1", [1], rules=mine)
    assert pruned.layers["c2"].weights["kernel"].shape == (1, 1, 3, 5)
    np.testing.assert_array_equal(pruned.layers["c2"].weights["kernel"],
                                  np.delete(graph.layers["c2"].weights["kernel"], 1, axis=2))
    assert prunable_layers(graph, rules=mine) == ["c1", "c2", "out"]
    assert [c.width for c in count(graph, rules=mine)] == [4, None, 5, None, 2]
    assert measurement_sites(graph, ["c1"], rules=mine)["c1"].layer == "c1"
    assert analyze_channels(graph, rules=mine).group_of("c1").prunable
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert prunability(graph, rules=mine)[0].prunable
