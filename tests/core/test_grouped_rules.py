"""Grouped convolutions in the core (NumPy only): the rule's answers, the couplings it adds to
the surgery and to the channel analysis, the weights it slices, its costs by hand, its
refusals, and the planner's balanced units."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from core_graphs import build, conv, dense, plain
from hypothesis import event, given, settings
from hypothesis import strategies as st

from kerasprune.core.cost import count
from kerasprune.core.criteria import criterion_for, layer_scores
from kerasprune.core.graph import Graph, LayerSpec, PruneError
from kerasprune.core.groups import analyze_channels
from kerasprune.core.plan import cut_group, plan_pruning
from kerasprune.core.rules import OUT, WeightAxis, rule_for
from kerasprune.core.scores import score_groups
from kerasprune.core.surgery import delete_neurons, dependency_group, prunability
from kerasprune.core.targets import Flops

RULE = rule_for("Conv2D")


def grouped(name: str, c_in: int, filters: int, groups: int, k: int = 3,
            **attrs: Any) -> LayerSpec:
    """A grouped Conv2D: kernel ``(k, k, c_in/groups, filters)``."""
    spec = conv(name, c_in // groups, filters, k, **attrs)
    return spec.with_changes({"groups": groups}, {})


def chain(groups: int = 2, rows: int = 2, per: int = 3) -> Graph:
    """``prod`` (groups*rows) -> ``g`` (groups x per filters, 3x3 valid) -> ``relu`` ->
    ``cons`` -> gap -> ``out``, on 6x6x3 inputs."""
    c = groups * rows
    return Graph.chain((6, 6, 3), [conv("prod", 3, c), grouped("g", c, groups * per, groups),
                                   plain("relu", "ReLU"), conv("cons", groups * per, 5),
                                   plain("gap", "GlobalAveragePooling2D"), dense("out", 5, 2)],
                       [(6, 6, c), (4, 4, groups * per), (4, 4, groups * per), (4, 4, 5),
                        (5,), (2,)])


def neurons(graph: Graph, request: Any) -> dict[str, list[int]]:
    return {k: v.tolist() for k, v in dependency_group(graph, request).neurons().items()}


def masks(size: int, *idx: int) -> np.ndarray:
    out = np.zeros(size, dtype=bool)
    out[list(idx)] = True
    return out


# -- the rule ------------------------------------------------------------------------------


def test_rule_answers() -> None:
    spec = grouped("g", 6, 8, 2)  # rows 3, 4 filters per group
    assert RULE.link(spec, [(8, 8, 6)], (6, 6, 8), 2) is None
    assert RULE.why_not_targetable(spec) is None and RULE.neuron_blocks(spec) == 2
    assert RULE.weight_axes(spec, [2]) == [
        WeightAxis("kernel", -2, 0, fold=3), WeightAxis("kernel", -1, OUT),
        WeightAxis("bias", 0, OUT), WeightAxis("lora_kernel_a", -2, 0, fold=3),
        WeightAxis("lora_kernel_b", -1, OUT)]
    (ties,) = RULE.input_ties(spec, [(8, 8, 6)])
    assert ties is not None and ties.tolist() == [0, 1, 2, 0, 1, 2]
    assert "a grouped convolution (groups=2)" in RULE.describe(spec)
    # An ordinary convolution and a depthwise one written with groups are unchanged.
    plain_conv = conv("c", 6, 8)
    assert RULE.neuron_blocks(plain_conv) == 1 and RULE.input_ties(plain_conv, [(8, 8, 6)]) == [
        None]
    depthwise = grouped("dw", 4, 8, 4)  # one row per group
    link = RULE.link(depthwise, [(8, 8, 4)], (6, 6, 8), 2)
    assert link is not None and link.sources[0].tolist() == [0, 0, 1, 1, 2, 2, 3, 3]
    assert RULE.neuron_blocks(depthwise) == 1


def test_grow_couples_rows_and_whole_groups() -> None:
    spec = grouped("g", 6, 6, 3)  # 3 groups: rows 2, filters 2 each
    # A row of one group: the same row of every group.
    (rows,), cols = RULE.grow(spec, [masks(6, 1)], None)
    assert rows is not None and np.flatnonzero(rows).tolist() == [1, 3, 5] and cols is None
    # A whole group of filters: its input block.
    (rows,), cols = RULE.grow(spec, [None], masks(6, 2, 3))
    assert rows is not None and np.flatnonzero(rows).tolist() == [2, 3]
    assert cols is not None and np.flatnonzero(cols).tolist() == [2, 3]
    # A whole input block: its filters; no row of the other groups.
    (rows,), cols = RULE.grow(spec, [masks(6, 4, 5)], None)
    assert rows is not None and np.flatnonzero(rows).tolist() == [4, 5]
    assert cols is not None and np.flatnonzero(cols).tolist() == [4, 5]
    # A whole group and a row of another: the row goes from the groups that stay.
    (rows,), cols = RULE.grow(spec, [masks(6, 0, 1, 2)], None)
    assert rows is not None and np.flatnonzero(rows).tolist() == [0, 1, 2, 4]
    assert cols is not None and np.flatnonzero(cols).tolist() == [0, 1]
    # Balanced filters alone change nothing.
    (rows,), cols = RULE.grow(spec, [None], masks(6, 0, 2, 4))
    assert rows is None and cols is not None and np.flatnonzero(cols).tolist() == [0, 2, 4]


def test_why_not_deleted_names_the_counts_and_what_would_do() -> None:
    spec = grouped("g", 4, 8, 2)
    assert RULE.why_not_deleted(spec, [None], masks(8, 0, 4)) is None
    assert RULE.why_not_deleted(spec, [None], masks(8, 0, 1, 2, 3, 5)) is None  # 0 whole
    reason = RULE.why_not_deleted(spec, [None], masks(8, 0, 1, 4))
    assert reason is not None
    for fragment in ("layer 'g' (Conv2D), a grouped convolution (groups=2)",
                     "4 filters per group", "group 0: 2, group 1: 1", "filters [0, 1, 4]",
                     "here 2 from each: 1 more from group 1", "all 4 filters of a group"):
        assert fragment in reason, (fragment, reason)


def test_attr_updates_read_the_sliced_kernel() -> None:
    spec = grouped("g", 6, 8, 2)
    rows_gone = spec.with_changes({}, {"kernel": np.zeros((3, 3, 2, 8))})
    assert RULE.attr_updates(rows_gone, [(8, 8, 4)], (6, 6, 8), [2]) == {"filters": 8,
                                                                       "groups": 2}
    group_gone = spec.with_changes({}, {"kernel": np.zeros((3, 3, 3, 4))})
    assert RULE.attr_updates(group_gone, [(8, 8, 3)], (6, 6, 4), [2]) == {"filters": 4,
                                                                        "groups": 1}


# -- surgery -------------------------------------------------------------------------------


def test_filters_from_every_group_slice_the_kernel_columns() -> None:
    g = chain(groups=2, rows=2, per=3)
    assert neurons(g, {"g": [1, 4]}) == {"g": [1, 4]}
    new = delete_neurons(g, "g", [1, 4])
    kernel = np.asarray(g.layers["g"].weights["kernel"])
    np.testing.assert_array_equal(new.layers["g"].weights["kernel"],
                                  np.delete(kernel, [1, 4], axis=3))
    np.testing.assert_array_equal(new.layers["g"].weights["bias"],
                                  np.delete(np.asarray(g.layers["g"].weights["bias"]), [1, 4]))
    assert new.layers["g"].attrs["filters"] == 4 and new.layers["g"].attrs["groups"] == 2
    np.testing.assert_array_equal(
        new.layers["cons"].weights["kernel"],
        np.delete(np.asarray(g.layers["cons"].weights["kernel"]), [1, 4], axis=2))
    assert new.layers["prod"] is g.layers["prod"]


def test_a_producer_channel_takes_its_row_in_every_group() -> None:
    g = chain(groups=3, rows=2, per=2)
    assert neurons(g, {"prod": [1]}) == {"prod": [1, 3, 5]}
    new = delete_neurons(g, "prod", [3])
    kernel = np.asarray(g.layers["g"].weights["kernel"])
    np.testing.assert_array_equal(new.layers["g"].weights["kernel"], kernel[:, :, :1, :])
    assert (new.layers["g"].attrs["groups"], new.layers["g"].attrs["filters"]) == (3, 6)
    assert new.shapes[1] == (6, 6, 3)


def test_a_whole_group_goes_with_its_input_block() -> None:
    g = chain(groups=3, rows=2, per=2)
    assert neurons(g, {"g": [2, 3]}) == {"prod": [2, 3], "g": [2, 3]}
    assert neurons(g, {"prod": [4, 5]}) == {"prod": [4, 5], "g": [4, 5]}
    new = delete_neurons(g, "g", [2, 3])
    kernel = np.asarray(g.layers["g"].weights["kernel"])
    np.testing.assert_array_equal(new.layers["g"].weights["kernel"], kernel[..., [0, 1, 4, 5]])
    assert (new.layers["g"].attrs["groups"], new.layers["g"].attrs["filters"]) == (2, 4)
    np.testing.assert_array_equal(
        new.layers["prod"].weights["kernel"],
        np.asarray(g.layers["prod"].weights["kernel"])[..., [0, 1, 4, 5]])


def test_params_and_flops_by_hand() -> None:
    g = chain(groups=2, rows=2, per=3)  # g: kernel 3x3x2x6 + 6 biases on a 4x4 output
    costs = {c.name: c for c in count(g)}
    assert costs["g"].params == 3 * 3 * 2 * 6 + 6
    assert costs["g"].flops == 2 * (3 * 3 * 2 * 6) * 16 + 6 * 16
    new = {c.name: c for c in count(delete_neurons(g, {"g": [0, 3], "prod": [1]}))}
    assert new["g"].params == 3 * 3 * 1 * 4 + 4  # one row, two filters per group
    assert new["g"].flops == 2 * (3 * 3 * 1 * 4) * 16 + 4 * 16
    whole = {c.name: c for c in count(delete_neurons(g, "g", [3, 4, 5]))}
    assert whole["g"].params == 3 * 3 * 2 * 3 + 3 and whole["prod"].params == 3 * 2 + 2


def test_refusals() -> None:
    g = chain(groups=2, rows=2, per=3)
    with pytest.raises(PruneError, match=r"group 0: 2, group 1: 1 \(filters \[0, 1, 3\]\)"):
        dependency_group(g, "g", [0, 1, 3])
    with pytest.raises(PruneError, match="all 4 channels"):  # row 0 and row 1: every row
        dependency_group(g, "prod", [0, 3])
    on_input = Graph.chain((6, 6, 4), [grouped("g", 4, 4, 2), conv("c", 4, 2)],
                           [(4, 4, 4), (4, 4, 2)])
    assert neurons(on_input, {"g": [0, 2]}) == {"g": [0, 2]}
    with pytest.raises(PruneError, match="model input"):
        dependency_group(on_input, "g", [0, 1])


def test_coupled_through_an_add() -> None:
    """A grouped convolution and a plain one into an Add: the plain one's deletions must be
    balanced for the grouped one too."""
    layers = [conv("prod", 3, 4), grouped("g", 4, 4, 2, k=1), conv("p", 3, 4),
              plain("add", "Add"), conv("cons", 4, 2)]
    nodes = [("prod", (0,), 1), ("g", (1,), 2), ("p", (0,), 3), ("add", (2, 3), 4),
             ("cons", (4,), 5)]
    g = build(layers, nodes, {0: (5, 5, 3), 1: (5, 5, 4), 2: (5, 5, 4), 3: (5, 5, 4),
                              4: (5, 5, 4), 5: (5, 5, 2)})
    assert neurons(g, {"p": [0, 2]}) == {"g": [0, 2], "p": [0, 2]}
    with pytest.raises(PruneError, match="group 0: 1, group 1: 0"):
        dependency_group(g, "p", [1])
    found = {p.layer: p for p in prunability(g)}
    assert found["g"].prunable and found["g"].group == ("g", "p")


# -- channel analysis and planner ------------------------------------------------------------


def test_analysis_ties_rows_and_matches_the_surgery() -> None:
    g = chain(groups=3, rows=2, per=2)
    analysis = analyze_channels(g)
    prod = analysis.group_of("prod")
    assert prod.width == 2 and prod.member("prod").slots.tolist() == [0, 1, 0, 1, 0, 1]
    assert analysis.group_of("g").width == 6
    by_slot = analysis.deletion({prod.index: [1]})
    expected = dependency_group(g, "prod", [1])
    assert {t: i.tolist() for t, (_, i) in by_slot.tensors.items()} == {
        t: i.tolist() for t, (_, i) in expected.tensors.items()}
    assert {p.layer: p.prunable for p in prunability(g)} == {
        "prod": True, "g": True, "cons": True, "out": False}


@pytest.mark.parametrize("round_to", [1, 3])
def test_planner_takes_a_filter_of_every_group_at_a_time(round_to: int) -> None:
    g = chain(groups=3, rows=2, per=4)  # g: 12 filters in 3 groups
    plan = plan_pruning(g, Flops(keep=0.5), "l1", round_to=round_to, strict=False)
    gone = plan.request.get("g", np.zeros(0, dtype=np.int64))
    per_group = np.bincount(gone // 4, minlength=3)
    assert per_group.min() == per_group.max(), gone.tolist()
    assert (12 - gone.size) % round_to == 0
    assert gone.size, plan.table()
    unit_sizes = {u.size for gi, u in plan.ranking
                  if analyze_channels(g).groups[gi].layers == ("g",)}
    assert unit_sizes <= {3} if round_to == 1 else unit_sizes <= {3, 6}
    pruned = delete_neurons(g, dict(plan.request))  # the plan is a valid request
    assert pruned.layers["g"].attrs["groups"] == 3
    analysis = analyze_channels(g)
    scores = score_groups(analysis, layer_scores(analysis, criterion_for("l1"), None))
    cut = cut_group(analysis, "g", 0.5, scores)
    assert np.bincount(cut["g"] // 4, minlength=3).tolist() == [2, 2, 2]


def test_planner_balances_nested_groups_and_refuses_others() -> None:
    """Two grouped convolutions into an Add: groups 2 and 4 nest (one filter of every one of
    the 4 groups balances both); groups 2 and 3 do not, and the group is left alone."""
    def add_of(g1: int, g2: int) -> Graph:
        f = 12
        layers = [conv("prod", 3, f), grouped("a", f, f, g1, k=1), grouped("b", f, f, g2, k=1),
                  plain("add", "Add"), plain("gap", "GlobalAveragePooling2D"), dense("out", f, 2)]
        nodes = [("prod", (0,), 1), ("a", (1,), 2), ("b", (1,), 3), ("add", (2, 3), 4),
                 ("gap", (4,), 5), ("out", (5,), 6)]
        return build(layers, nodes, {0: (4, 4, 3), 1: (4, 4, f), 2: (4, 4, f), 3: (4, 4, f),
                                     4: (4, 4, f), 5: (f,), 6: (2,)})
    nested = add_of(2, 4)
    plan = plan_pruning(nested, Flops(keep=0.6), "l1", protect=["prod", "out"], strict=False)
    gone = plan.request["a"]
    assert gone.tolist() == plan.request["b"].tolist()
    assert np.bincount(gone // 3, minlength=4).min() == np.bincount(gone // 3).max() > 0
    delete_neurons(nested, dict(plan.request))
    odd = plan_pruning(add_of(2, 3), Flops(keep=0.9), "l1", protect=["prod", "out"],
                       strict=False)
    stopped = next(gp for gp in odd.groups if "a" in gp.layers)
    assert not stopped.deleted.size and "do not nest" in stopped.limit


# -- random requests against a NumPy forward pass ------------------------------------------------


def _forward(graph: Graph, x: np.ndarray, zero: dict[int, np.ndarray] | None = None) -> np.ndarray:
    """Run a chain of 1x1 convolutions (grouped or not) and ReLUs; ``zero`` zeroes channels
    of tensors (the oracle: what reads them reads zeros)."""
    for i, node in enumerate(graph.nodes, start=1):
        spec = graph.layers[node.layer]
        if spec.kind == "ReLU":
            x = np.maximum(x, 0.0)
        else:
            kernel = np.asarray(spec.weights["kernel"])[0, 0]
            groups = int(spec.attrs.get("groups", 1))
            rows, per = kernel.shape[0], kernel.shape[1] // groups
            x = np.concatenate([x[..., g * rows:(g + 1) * rows] @ kernel[:, g * per:(g + 1) * per]
                                for g in range(groups)], axis=-1) + np.asarray(spec.weights["bias"])
        if zero and i in zero:
            x[..., zero[i]] = 0.0
    return x


def new_groups(graph: Graph, request: Any) -> bool:
    return bool(delete_neurons(graph, request).layers["g"].attrs["groups"]
                < graph.layers["g"].attrs["groups"])


@settings(max_examples=40, deadline=None)
@given(st.data())
def test_random_requests_match_the_zeroing_oracle(data: st.DataObject) -> None:
    groups = data.draw(st.integers(2, 4), label="groups")
    rows = data.draw(st.integers(1, 3), label="rows")
    per = data.draw(st.integers(1, 3), label="per")
    c, f = groups * rows, groups * per
    g = Graph.chain((3, 3, 2), [conv("prod", 2, c), grouped("g", c, f, groups, k=1),
                                plain("relu", "ReLU"), conv("cons", f, 3)],
                    [(3, 3, c), (3, 3, f), (3, 3, f), (3, 3, 3)])
    balanced = data.draw(st.booleans(), label="balanced")
    if balanced:  # k filters of every group, and some whole groups
        k = data.draw(st.integers(0, per - 1), label="k")
        whole = data.draw(st.lists(st.integers(0, groups - 1), unique=True,
                                   max_size=groups - 1), label="whole")
        filters = [grp * per + i for grp in range(groups)
                   for i in (range(per) if grp in whole
                             else data.draw(st.permutations(range(per)))[:k])]
    else:
        filters = data.draw(st.lists(st.integers(0, f - 1), unique=True, max_size=f - 1))
    request = {"prod": data.draw(st.lists(st.integers(0, c - 1), unique=True, max_size=c - 1)),
               "g": filters}
    try:
        deletion = dependency_group(g, request)
    except PruneError as err:
        assert "would delete all" in str(err) or (
            not balanced and "the same number from every group" in str(err)), str(err)
        event("refused")
        return
    event("whole groups" if new_groups(g, request) else "kept groups")
    new = delete_neurons(g, request)
    spec = new.layers["g"]
    kernel = np.asarray(spec.weights["kernel"])
    assert spec.attrs["filters"] == kernel.shape[-1]
    assert kernel.shape[-1] % spec.attrs["groups"] == 0
    assert new.shapes[1][-1] == spec.attrs["groups"] * kernel.shape[-2]
    x = np.random.default_rng(0).standard_normal((3, 3, 2))
    zero = {t: idx for t, (_, idx) in deletion.tensors.items()}
    np.testing.assert_allclose(_forward(new, x), _forward(g, x, zero), atol=1e-9)
