"""Tests of kerasprune.core.groups: channel axes, slots and coupled groups, once per graph.

Pure NumPy. The property test checks the analysis against the surgery's own closure
(:func:`~kerasprune.core.surgery.dependency_group`) on random graphs: deleting slot ``j`` of a
group deletes exactly the group's channels in slot ``j``, and is refused exactly when the
analysis says the slot is blocked or the deletion would empty a tensor.
"""

from __future__ import annotations

import numpy as np
import pytest
from core_graphs import (
    bn,
    build,
    concat_depthwise,
    conv,
    dense,
    depthwise,
    layer_norm,
    plain,
    random_graphs,
    residual,
)
from hypothesis import event, given, settings
from hypothesis import strategies as st

from kerasprune.core.graph import Graph, PruneError
from kerasprune.core.groups import ChainStep, ChannelAnalysis, ChannelGroup, analyze_channels
from kerasprune.core.surgery import Deletion, dependency_group, neuron_count, prunable_layers


def as_lists(deletion: Deletion) -> dict[int, tuple[int, list[int]]]:
    return {t: (axis, idx.tolist()) for t, (axis, idx) in deletion.tensors.items()}


def slots_of(group: ChannelGroup) -> dict[str, list[int]]:
    return {m.layer: m.slots.tolist() for m in group.members}


# --------------------------------------------------------------------------------------------
# Hand-built graphs
# --------------------------------------------------------------------------------------------


def mlp() -> Graph:
    return Graph.chain((5,), [dense("d1", 5, 6), plain("relu", "ReLU"), dense("d2", 6, 4),
                              dense("d3", 4, 3)], [(6,), (6,), (4,), (3,)])


def test_chain_has_one_group_per_layer_and_the_output_is_blocked() -> None:
    analysis = analyze_channels(mlp())
    assert [g.layers for g in analysis.groups] == [("d1",), ("d2",), ("d3",)]
    assert [g.width for g in analysis.groups] == [6, 4, 3]
    assert [g.offset for g in analysis.groups] == [0, 6, 10]
    assert analysis.slots == 13
    d1, _, d3 = analysis.groups
    assert slots_of(d1) == {"d1": list(range(6))}
    assert d1.prunable and d1.why_not is None and not d1.reasons
    assert {t: (c.tolist(), s.tolist()) for t, (c, s) in d1.elements.items()} == {
        1: (list(range(6)), list(range(6))), 2: (list(range(6)), list(range(6)))}
    assert not d3.prunable
    assert d3.why_not is not None and "model output" in d3.why_not
    assert "'d3' (Dense)" in d3.why_not and "allow_output_change" in d3.why_not
    assert d3.blocked.tolist() == [True] * 3
    opened = analyze_channels(mlp(), allow_output_change=True)
    assert opened.groups[2].prunable
    assert analysis.axes == {0: None, 1: 0, 2: 0, 3: 0, 4: 0}
    assert analysis.why_no_axis == {0: "it is a model input"}


def test_residual_add_puts_both_convolutions_in_one_group() -> None:
    g = residual()
    analysis = analyze_channels(g)
    assert [grp.layers for grp in analysis.groups] == [("c1", "c2"), ("c3",), ("out",)]
    stream = analysis.group_of("c2")
    assert stream is analysis.group_of("c1")
    assert slots_of(stream) == {"c1": [0, 1, 2, 3], "c2": [0, 1, 2, 3]}
    assert {k: v.tolist() for k, v in stream.channels(2).items()} == {"c1": [2], "c2": [2]}
    assert sorted(stream.elements) == [1, 2, 3, 4, 5]
    assert as_lists(analysis.deletion({stream.index: [2]})) == as_lists(
        dependency_group(g, "c2", [2]))
    assert {k: v.tolist() for k, v in stream.request([0, 3]).items()} == {
        "c1": [0, 3], "c2": [0, 3]}


def test_concatenate_into_a_depthwise_conv_couples_offset_channels() -> None:
    g = concat_depthwise()
    analysis = analyze_channels(g)
    group = analysis.group_of("dw")
    assert group.layers == ("a", "b", "dw")
    assert group.width == 5
    assert slots_of(group) == {"a": [0, 1], "b": [2, 3, 4], "dw": [0, 0, 1, 1, 2, 2, 3, 3, 4, 4]}
    assert {k: v.tolist() for k, v in group.channels(3).items()} == {"b": [1], "dw": [6, 7]}
    assert analysis.group_of("c").layers == ("c",)
    # Slot 3 is b's channel 1: the concat's channel 3 and the depthwise outputs 6 and 7.
    expected = as_lists(dependency_group(g, "b", [1]))
    assert expected == {2: (2, [1]), 3: (2, [3]), 4: (2, [6, 7])}
    assert as_lists(analysis.deletion({group.index: [3]})) == expected
    assert as_lists(dependency_group(g, "dw", [7])) == expected


def test_concatenate_into_a_dense_layer_keeps_producers_apart() -> None:
    layers = [dense("a", 3, 2), dense("b", 3, 3), plain("cat", "Concatenate", axis=-1),
              dense("out", 5, 2)]
    nodes = [("a", (0,), 1), ("b", (0,), 2), ("cat", (1, 2), 3), ("out", (3,), 4)]
    g = build(layers, nodes, {0: (3,), 1: (2,), 2: (3,), 3: (5,), 4: (2,)})
    analysis = analyze_channels(g)
    assert [grp.layers for grp in analysis.groups] == [("a",), ("b",), ("out",)]
    b = analysis.group_of("b")
    assert {t: (c.tolist(), s.tolist()) for t, (c, s) in b.elements.items()} == {
        2: ([0, 1, 2], [0, 1, 2]), 3: ([2, 3, 4], [0, 1, 2])}


def test_shared_layer_ties_its_callers() -> None:
    layers = [dense("a", 3, 4), dense("b", 3, 4), dense("shared", 4, 2),
              plain("add", "Add"), dense("out", 2, 2)]
    nodes = [("a", (0,), 1), ("b", (0,), 2), ("shared", (1,), 3), ("shared", (2,), 4),
             ("add", (3, 4), 5), ("out", (5,), 6)]
    g = build(layers, nodes, {0: (3,), 1: (4,), 2: (4,), 3: (2,), 4: (2,), 5: (2,), 6: (2,)})
    analysis = analyze_channels(g)
    assert [grp.layers for grp in analysis.groups] == [("a", "b"), ("shared",), ("out",)]
    assert slots_of(analysis.group_of("a")) == {"a": [0, 1, 2, 3], "b": [0, 1, 2, 3]}
    assert as_lists(analysis.deletion({0: [1]})) == as_lists(dependency_group(g, "a", [1]))
    shared = analysis.group_of("shared")
    assert sorted(shared.elements) == [3, 4, 5]


def test_model_input_in_an_add_blocks_the_stream() -> None:
    layers = [conv("c1", 3, 3), plain("add", "Add"), conv("c2", 3, 2),
              plain("gap", "GlobalAveragePooling2D"), dense("out", 2, 2)]
    nodes = [("c1", (0,), 1), ("add", (0, 1), 2), ("c2", (2,), 3), ("gap", (3,), 4),
             ("out", (4,), 5)]
    g = build(layers, nodes, {0: (4, 4, 3), 1: (4, 4, 3), 2: (4, 4, 3), 3: (4, 4, 2),
                              4: (2,), 5: (2,)})
    analysis = analyze_channels(g)
    c1 = analysis.group_of("c1")
    assert not c1.prunable
    assert c1.why_not is not None and "model input" in c1.why_not and "'add'" in c1.why_not
    with pytest.raises(PruneError, match="model input"):
        dependency_group(g, "c1", [0])
    assert analysis.group_of("c2").prunable


def test_concatenate_with_a_model_input_blocks_only_its_part() -> None:
    layers = [conv("c1", 2, 3), plain("cat", "Concatenate", axis=-1), depthwise("dw", 5, 1),
              plain("gap", "GlobalAveragePooling2D"), dense("out", 5, 2)]
    nodes = [("c1", (0,), 1), ("cat", (0, 1), 2), ("dw", (2,), 3), ("gap", (3,), 4),
             ("out", (4,), 5)]
    g = build(layers, nodes, {0: (4, 4, 2), 1: (4, 4, 3), 2: (4, 4, 5), 3: (4, 4, 5),
                              4: (5,), 5: (2,)})
    analysis = analyze_channels(g)
    group = analysis.group_of("dw")
    assert group.layers == ("c1", "dw")
    assert slots_of(group) == {"c1": [0, 1, 2], "dw": [3, 4, 0, 1, 2]}
    assert group.blocked.tolist() == [False, False, False, True, True]
    assert len(group.reasons) == 1
    ((reason, blocked),) = group.reasons.items()
    assert "model input" in reason and blocked.tolist() == [3, 4]
    with pytest.raises(PruneError, match="model input"):
        dependency_group(g, "dw", [0])
    assert as_lists(dependency_group(g, "dw", [2])) == as_lists(analysis.deletion({0: [0]}))


def test_a_layer_normalization_blocks_what_reaches_it() -> None:
    g = Graph.chain((4, 4, 3), [conv("c1", 3, 4), layer_norm("ln", 4), conv("c2", 4, 2),
                                plain("gap", "GlobalAveragePooling2D"), dense("out", 2, 2)],
                    [(4, 4, 4), (4, 4, 4), (4, 4, 2), (2,), (2,)])
    analysis = analyze_channels(g)
    c1 = analysis.group_of("c1")
    assert c1.why_not is not None and "'ln' (LayerNormalization)" in c1.why_not
    assert "allow_inexact" in c1.why_not  # an explicit request may delete through it
    # The next producer starts afresh.
    assert analysis.group_of("c2").prunable


def test_softmax_units_are_blocked_unless_outputs_may_change() -> None:
    g = Graph.chain((3,), [dense("d", 3, 4, activation="softmax"), dense("out", 4, 2)],
                    [(4,), (2,)])
    d = analyze_channels(g).group_of("d")
    assert d.why_not is not None and "softmax" in d.why_not
    assert analyze_channels(g, allow_output_change=True).group_of("d").prunable


def test_grouped_convolution_and_depthwise_on_an_input_are_unprunable() -> None:
    grouped = conv("g", 4, 4, groups=2)
    g = Graph.chain((4, 4, 4), [grouped, plain("gap", "GlobalAveragePooling2D"),
                                dense("out", 4, 2)], [(4, 4, 4), (4,), (2,)])
    analysis = analyze_channels(g)
    assert "grouped" in analysis.unprunable["g"]
    with pytest.raises(PruneError, match="grouped"):
        analysis.group_of("g")
    g2 = Graph.chain((4, 4, 2), [depthwise("dw", 2), conv("c", 2, 3)],
                     [(4, 4, 2), (4, 4, 3)])
    analysis2 = analyze_channels(g2)
    assert "model input" in analysis2.unprunable["dw"]
    with pytest.raises(PruneError):
        neuron_count(g2, "dw")


def test_group_of_explains_unknown_layers() -> None:
    analysis = analyze_channels(mlp())
    with pytest.raises(PruneError, match=r"no layer named 'd1x'.*did you mean 'd1'"):
        analysis.group_of("d1x")
    with pytest.raises(PruneError, match=r"'relu' \(ReLU\) has no neurons"):
        analysis.group_of("relu")
    with pytest.raises(PruneError, match="not in the group"):
        analysis.group_of("d1").member("d2")


def test_chain_follows_channels_one_to_one() -> None:
    g = Graph.chain((4, 4, 3), [conv("c", 3, 4), bn("bn", 4), plain("relu", "ReLU"),
                                plain("pool", "MaxPooling2D", pool_size=2),
                                plain("gap", "GlobalAveragePooling2D"), dense("out", 4, 2)],
                    [(4, 4, 4), (4, 4, 4), (4, 4, 4), (2, 2, 4), (4,), (2,)])
    analysis = analyze_channels(g)
    assert analysis.chain("c") == (ChainStep("c", 1, 2), ChainStep("bn", 2, 2),
                                   ChainStep("relu", 3, 2))
    assert analysis.chain("out") == (ChainStep("out", 6, 0),)
    # A tensor read twice ends the chain at once.
    r = residual()
    assert analyze_channels(r).chain("c1") == (ChainStep("c1", 1, 2),)
    assert analyze_channels(r).chain("c2") == (ChainStep("c2", 2, 2),)


def test_deletion_and_slot_mask_check_their_arguments() -> None:
    analysis = analyze_channels(mlp())
    with pytest.raises(PruneError, match="out of range"):
        analysis.slot_mask({0: [6]})
    with pytest.raises(ValueError, match="mask over 13 slots"):
        analysis.deletion(np.zeros(3, dtype=bool))
    mask = analysis.slot_mask({0: [1], 1: [0, 3]})
    assert {k: v.tolist() for k, v in analysis.request(mask).items()} == {"d1": [1],
                                                                         "d2": [0, 3]}
    assert as_lists(analysis.deletion(mask)) == as_lists(
        dependency_group(analysis.graph, analysis.request(mask)))


def test_analysis_is_frozen() -> None:
    analysis = analyze_channels(mlp())
    with pytest.raises(AttributeError):
        analysis.graph = mlp()  # type: ignore[misc]
    with pytest.raises(ValueError, match="read-only"):
        analysis.groups[0].members[0].slots[0] = 3
    with pytest.raises(ValueError, match="read-only"):
        analysis.element_slot[0] = 3


# --------------------------------------------------------------------------------------------
# Property: the analysis agrees with dependency_group on random graphs
# --------------------------------------------------------------------------------------------


def _expected(analysis: ChannelAnalysis, group: ChannelGroup,
              slot: int) -> tuple[dict[int, tuple[int, list[int]]], bool]:
    """The group's channels in ``slot`` per tensor, and whether deleting them empties one."""
    out: dict[int, tuple[int, list[int]]] = {}
    empties = False
    for t, (channels, slots) in group.elements.items():
        hit = channels[slots == slot]
        if hit.size:
            axis = analysis.axes[t]
            assert axis is not None
            out[t] = (axis, hit.tolist())
            empties |= hit.size == analysis.graph.shapes[t][axis]
    return out, empties


@settings(max_examples=100, deadline=None)
@given(graph=random_graphs(), allow=st.booleans(), data=st.data())
def test_groups_agree_with_dependency_group(graph: Graph, allow: bool,
                                            data: st.DataObject) -> None:
    analysis = analyze_channels(graph, allow_output_change=allow)
    # Every layer with neurons is a member of exactly one group, or unprunable.
    members = [m.layer for g in analysis.groups for m in g.members]
    assert len(members) == len(set(members))
    for name in prunable_layers(graph):
        if name in analysis.unprunable:
            with pytest.raises(PruneError):
                neuron_count(graph, name)
        else:
            assert analysis.group_of(name).member(name).width == neuron_count(graph, name)
    event(f"{len(analysis.groups)} groups")
    for group in analysis.groups:
        assert sorted(set(np.concatenate([m.slots for m in group.members]).tolist())) == list(
            range(group.width))
        for slot in range(group.width):
            expected, empties = _expected(analysis, group, slot)
            holders = [m for m in group.members if m.channels(slot).size]
            member = data.draw(st.sampled_from(holders)) if len(holders) > 1 else holders[0]
            request = {member.layer: member.channels(slot)}
            if group.blocked[slot] or empties:
                event("refused")
                with pytest.raises(PruneError):
                    dependency_group(graph, request, allow_output_change=allow)
                continue
            event("deleted")
            deletion = dependency_group(graph, request, allow_output_change=allow)
            assert as_lists(deletion) == expected
            assert as_lists(analysis.deletion({group.index: [slot]})) == expected
            changes = deletion.layers()
            for m in group.members:
                outputs = changes[m.layer].outputs if m.layer in changes else None
                mine = m.channels(slot).tolist()
                assert (outputs.tolist() if outputs is not None else []) == mine
    # Several slots of several groups at once.
    free = [(g.index, s) for g in analysis.groups for s in range(g.width) if not g.blocked[s]]
    if not free:
        return
    chosen = data.draw(st.lists(st.sampled_from(free), min_size=1, max_size=6, unique=True))
    mask = np.zeros(analysis.slots, dtype=bool)
    for index, s in chosen:
        mask[analysis.groups[index].offset + s] = True
    deletion = analysis.deletion(mask)
    emptied = any(len(idx) == graph.shapes[t][axis] for t, (axis, idx) in
                  deletion.tensors.items())
    if emptied:
        with pytest.raises(PruneError):
            dependency_group(graph, analysis.request(mask), allow_output_change=allow)
        return
    assert as_lists(dependency_group(graph, analysis.request(mask),
                                     allow_output_change=allow)) == as_lists(deletion)
