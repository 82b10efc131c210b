"""Tests of the planner (kerasprune.core.plan), group scores (scores) and targets (targets).

Pure NumPy. A plan's costs are checked independently: its request is run through the
surgery's own closure (:func:`~kerasprune.core.surgery.delete_neurons`, real weights), and the
result counted; the same for the plan without its last unit, which must miss the target.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest
from core_graphs import (
    bn,
    concat_depthwise,
    conv,
    dense,
    depthwise,
    plain,
    random_graphs,
    residual,
)
from hypothesis import event, given, settings
from hypothesis import strategies as st

from kerasprune.core.cost import count, total
from kerasprune.core.criteria import LayerScores
from kerasprune.core.graph import Graph, PruneError
from kerasprune.core.groups import ChannelAnalysis, analyze_channels
from kerasprune.core.plan import (
    Plan,
    PlanError,
    ShapeOnly,
    cut_group,
    plan_pruning,
    shapes_only,
)
from kerasprune.core.scores import GroupScores, normalize_scores, score_groups
from kerasprune.core.surgery import delete_neurons, dependency_group
from kerasprune.core.targets import Cost, Flops, Params, Target, make_target, schedule

# --------------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------------


def prefix_graph(analysis: ChannelAnalysis, plan: Plan, k: int) -> Graph:
    """The graph after the first ``k`` units of the plan's ranking, by the surgery itself."""
    mask = np.zeros(analysis.slots, dtype=bool)
    for index, slots in plan.ranking[:k]:
        mask[analysis.groups[index].offset + slots] = True
    request = analysis.request(mask)
    if not request:
        return analysis.graph
    return delete_neurons(analysis.graph, request,
                          allow_output_change=analysis.allow_output_change)


def measure(target: Target, graph: Graph) -> float:
    return target.measure(graph, count(graph))


def assert_tight(analysis: ChannelAnalysis, plan: Plan) -> None:
    """The plan's costs are exact, it meets its target, and one unit fewer would not."""
    after = prefix_graph(analysis, plan, plan.taken)
    costs = count(after)
    assert total(costs) == (plan.params[1], plan.flops[1])
    assert [(c.name, c.params, c.flops, c.width) for c in costs] == [
        (c.name, c.params, c.flops, c.width) for c in plan.costs_after]
    assert measure(plan.target, after) == plan.achieved
    assert plan.met == (plan.achieved <= plan.limit)
    if plan.met and plan.taken:
        assert measure(plan.target, prefix_graph(analysis, plan, plan.taken - 1)) > plan.limit
    if not plan.met:
        assert plan.taken == len(plan.ranking)


def widths(graph: Graph) -> dict[str, int]:
    """The neurons of every layer that has some (depthwise ones too), from tensor shapes."""
    axes = analyze_channels(graph, allow_output_change=True).axes
    out = {}
    for name in graph.layers:
        calls = graph.calls(name)
        axis = axes.get(calls[0].outputs[0]) if calls else None
        if axis is not None:
            out[name] = int(graph.shapes[calls[0].outputs[0]][axis])
    return out


def vgg() -> Graph:
    """conv(8) -> bn -> relu -> conv(16) -> relu -> pool -> conv(12) -> gap -> d(20) -> out."""
    return Graph.chain((8, 8, 3), [
        conv("c1", 3, 8, k=3), bn("bn1", 8), plain("r1", "ReLU"), conv("c2", 8, 16, k=3),
        plain("r2", "ReLU"), plain("pool", "MaxPooling2D", pool_size=2),
        conv("c3", 16, 12, k=3), plain("gap", "GlobalAveragePooling2D"),
        dense("d", 12, 20, activation="relu"), dense("out", 20, 10)],
        [(8, 8, 8), (8, 8, 8), (8, 8, 8), (8, 8, 16), (8, 8, 16), (4, 4, 16), (4, 4, 12),
         (12,), (20,), (10,)])


# --------------------------------------------------------------------------------------------
# Targets
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", [Params, Flops])
@pytest.mark.parametrize("keep", [0.9, 0.5, 0.3])
@pytest.mark.parametrize("criterion", ["l1", "l2", "random"])
def test_targets_are_met_within_one_unit(kind: type[Target], keep: float,
                                         criterion: str) -> None:
    g = vgg()
    analysis = analyze_channels(g)
    plan = plan_pruning(analysis, kind(keep=keep), criterion)
    assert plan.met and plan.achieved <= keep * plan.original
    assert_tight(analysis, plan)
    assert plan.request and all(idx.size for idx in plan.request.values())
    assert "out" not in plan.request  # an output layer is protected by default


def test_absolute_targets_and_already_met_targets() -> None:
    g = vgg()
    analysis = analyze_channels(g)
    params = total(count(g))[0]
    plan = plan_pruning(analysis, Params(at_most=params // 2), "l1")
    assert plan.params[1] <= params // 2
    assert_tight(analysis, plan)
    easy = plan_pruning(analysis, Params(at_most=params * 10), "l1")
    assert easy.met and easy.taken == 0 and dict(easy.request) == {}
    assert easy.params == (params, params)


def test_planted_unimportant_neurons_go_first() -> None:
    d1, d2 = dense("d1", 5, 8), dense("d2", 8, 6)
    k1, k2 = np.array(d1.weights["kernel"]), np.array(d2.weights["kernel"])
    k1[:, [1, 4]] = 0.0
    k2[:, 0] = 0.0
    g = Graph.chain((5,), [d1.with_changes({}, {"kernel": k1}), plain("relu", "ReLU"),
                           d2.with_changes({}, {"kernel": k2}), dense("out", 6, 3)],
                    [(8,), (8,), (6,), (3,)])
    goal = total(count(delete_neurons(g, {"d1": [1, 4], "d2": [0]})))[0]
    plan = plan_pruning(g, Params(at_most=goal), "l1", normalize="none")
    assert {k: v.tolist() for k, v in plan.request.items()} == {"d1": [1, 4], "d2": [0]}
    assert plan.taken == 3 and plan.achieved == goal


def test_the_planned_request_is_what_the_surgery_deletes() -> None:
    g = residual()
    analysis = analyze_channels(g)
    plan = plan_pruning(analysis, Flops(keep=0.7), "l2")
    pruned = delete_neurons(g, dict(plan.request))
    assert total(count(pruned)) == (plan.params[1], plan.flops[1])
    # The plan's deletion on the original graph is the surgery's, tensor by tensor.
    expected = dependency_group(g, dict(plan.request)).tensors
    assert {t: idx.tolist() for t, (_, idx) in plan.deletion.tensors.items()} == {
        t: idx.tolist() for t, (_, idx) in expected.items()}
    # A residual group loses the same slots in both convolutions.
    stream = next(gp for gp in plan.groups if gp.layers == ("c1", "c2"))
    if stream.deleted.size:
        assert plan.request["c1"].tolist() == plan.request["c2"].tolist()


def test_cost_target_takes_any_function_of_shape_only_graphs() -> None:
    seen: list[Graph] = []

    def conv_params(graph: Graph) -> float:
        seen.append(graph)
        return float(sum(math.prod(w.shape) for spec in graph.layers.values()
                         if spec.kind == "Conv2D" for w in spec.weights.values()))

    g = vgg()
    analysis = analyze_channels(g)
    plan = plan_pruning(analysis, Cost(fn=conv_params, keep=0.5, name="conv params"), "l1")
    planner_calls = list(seen)
    assert len(planner_calls) <= 3 + math.ceil(math.log2(len(plan.ranking) + 1))
    assert all(isinstance(w, ShapeOnly) for graph in planner_calls
               for spec in graph.layers.values() for w in spec.weights.values())
    assert plan.met and plan.achieved <= 0.5 * conv_params(g)
    assert_tight(analysis, plan)
    assert "conv params <=" in plan.table()


def test_target_arguments_are_checked() -> None:
    with pytest.raises(ValueError, match="above 100%"):
        Flops(keep=1.5)
    with pytest.raises(ValueError, match=r"keep must be in \(0, 1\]"):
        Params(keep=0)
    with pytest.raises(ValueError, match=r"keep must be in \(0, 1\]"):
        Params(keep=-0.5)
    with pytest.raises(ValueError, match="at_most must be positive"):
        Params(at_most=-10)
    with pytest.raises(ValueError, match="exactly one of keep"):
        Flops()
    with pytest.raises(ValueError, match="exactly one of keep"):
        Flops(keep=0.5, at_most=10)
    with pytest.raises(TypeError, match="real number"):
        Flops(keep=True)
    with pytest.raises(ValueError, match="finite"):
        Flops(at_most=math.inf)
    with pytest.raises(ValueError, match=r"unknown target kind 'latency'.*'params', 'flops'"):
        make_target("latency", keep=0.5)
    with pytest.raises(TypeError, match="needs fn"):
        make_target("cost", keep=0.5)
    with pytest.raises(ValueError, match="only for cost"):
        make_target("flops", keep=0.5, fn=lambda g: 1.0)
    assert make_target("flops", keep=0.25) == Flops(keep=0.25)
    assert Params(keep=0.5).describe(2_000_000) == "params <= 1M (50.0% of 2M)"


def test_schedule_splits_a_target_into_steps() -> None:
    g = vgg()
    flops = measure(Flops(keep=1), g)
    steps = schedule(Flops(keep=0.25), 2, g)
    assert [s.at_most for s in steps] == pytest.approx([0.5 * flops, 0.25 * flops])
    linear = schedule(Params(at_most=100), 4, 1000.0, spacing="linear")
    assert [s.at_most for s in linear] == pytest.approx([775, 550, 325, 100])
    assert all(isinstance(s, Params) for s in linear)
    # Step k is planned on what step k - 1 left; each meets its absolute target.
    current = g
    for step in steps:
        plan = plan_pruning(current, step, "l1")
        assert plan.met
        current = delete_neurons(current, dict(plan.request)) if plan.request else current
    assert measure(Flops(keep=1), current) <= 0.25 * flops
    with pytest.raises(ValueError, match="steps"):
        schedule(Flops(keep=0.5), 0, g)
    with pytest.raises(ValueError, match="spacing"):
        schedule(Flops(keep=0.5), 2, g, spacing="cosine")  # type: ignore[arg-type]


# --------------------------------------------------------------------------------------------
# Limits
# --------------------------------------------------------------------------------------------


def test_round_to_keeps_multiples_and_leaves_narrow_groups_alone() -> None:
    g = Graph.chain((10,), [dense("a", 10, 20), dense("b", 20, 12), dense("c", 12, 6),
                            dense("out", 6, 3)], [(20,), (12,), (6,), (3,)])
    analysis = analyze_channels(g)
    plan = plan_pruning(analysis, Params(keep=0.5), "l1", round_to=8, strict=False)
    after = widths(prefix_graph(analysis, plan, plan.taken))
    assert after["a"] in (8, 16, 20) and after["b"] in (8, 12)
    assert after["c"] == 6  # narrower than 8: left alone
    note = next(gp.limit for gp in plan.groups if gp.layers == ("c",))
    assert "narrower than round_to=8" in note
    assert_tight(analysis, plan)


def test_min_width_and_max_fraction_per_layer() -> None:
    g = vgg()
    analysis = analyze_channels(g)
    plan = plan_pruning(analysis, Flops(keep=0.1), "l1", min_width={"c2": 10},
                        max_fraction=0.5, strict=False)
    after = widths(prefix_graph(analysis, plan, plan.taken))
    before = widths(g)
    assert after["c2"] >= 10
    for name in ("c1", "c3", "d"):
        assert before[name] - after[name] <= before[name] // 2
    assert_tight(analysis, plan)
    capped = plan_pruning(analysis, Flops(keep=0.1), "l1", max_fraction={"c1": 0.25},
                          strict=False)
    assert widths(prefix_graph(analysis, capped, capped.taken))["c1"] >= 6


def test_protected_layers_keep_every_neuron() -> None:
    g = residual()
    plan = plan_pruning(g, Params(keep=0.6), "l1", protect=["c2"], strict=False)
    assert "c1" not in plan.request and "c2" not in plan.request  # c1 is coupled to c2
    assert any("protected (c2)" in gp.limit for gp in plan.groups)
    opened = plan_pruning(g, Params(keep=0.3), "l1", allow_output_change=True, protect=[],
                          strict=False)
    assert "out" in opened.request
    assert plan_pruning(g, Params(keep=0.3), "l1", allow_output_change=True,
                        strict=False).request.get("out") is None  # outputs protected by default


def test_uniform_scope_takes_the_same_fraction_of_every_group() -> None:
    g = vgg()
    analysis = analyze_channels(g)
    plan = plan_pruning(analysis, Flops(keep=0.5), "l1", scope="uniform")
    assert_tight(analysis, plan)
    shares = {gp.layers: (gp.width_before - gp.width_after) / gp.width_before
              for gp in plan.groups if gp.layers != ("out",)}
    sizes = {gp.layers: gp.width_before for gp in plan.groups}
    for a, fa in shares.items():
        for fb in shares.values():
            assert fb <= fa + 1 / sizes[a] + 1e-12


def test_an_unreachable_target_says_how_close_and_why() -> None:
    g = vgg()
    with pytest.raises(PlanError) as info:
        plan_pruning(g, Params(keep=0.05), "l1", min_width=4)
    err = info.value
    message = str(err)
    assert "cannot meet the target params <=" in message and "min_width=4" in message
    assert "protected (out)" in message and "of the original" in message
    assert not err.plan.met and err.plan.achieved > err.plan.limit
    assert isinstance(err, PruneError)
    plan = plan_pruning(g, Params(keep=0.05), "l1", min_width=4, strict=False)
    assert not plan.met and plan.why == message
    assert_tight(analyze_channels(g), plan)
    assert "NOT met" in plan.table()


def test_nothing_to_prune_is_said_plainly() -> None:
    g = Graph.chain((3,), [plain("relu", "ReLU")], [(3,)])
    with pytest.raises(PlanError, match="no layer whose neurons can be deleted"):
        plan_pruning(g, Flops(keep=0.5), "l1")
    on_input = Graph.chain((4, 4, 2), [depthwise("dw", 2), plain("gap", "GlobalAveragePooling2D")],
                           [(4, 4, 2), (2,)])
    with pytest.raises(PlanError, match=r"cannot lose neurons: .*model input.*: dw"):
        plan_pruning(on_input, Flops(keep=0.5), "l1")
    weightless = Graph.chain((3,), [plain("relu", "ReLU")], [(3,)])
    assert "n/a" in plan_pruning(weightless, Params(keep=0.5), "l1").table()


def test_never_every_neuron_even_with_everything_allowed() -> None:
    g = Graph.chain((4,), [dense("a", 4, 3), dense("b", 3, 2), dense("out", 2, 2)],
                    [(3,), (2,), (2,)])
    plan = plan_pruning(g, Params(keep=0.01), "random", allow_output_change=True, protect=[],
                        strict=False)
    assert widths(delete_neurons(g, dict(plan.request), allow_output_change=True)) == {
        "a": 1, "b": 1, "out": 1}
    assert any("never every neuron" in gp.limit for gp in plan.groups)


BAD: list[tuple[dict[str, Any], type[Exception], str]] = [
    ({"criterion": "l3"}, ValueError, "unknown criterion 'l3'"),
    ({"scope": "local"}, ValueError, r"unknown scope 'local'; valid: 'global', 'uniform'"),
    ({"aggregate": "median"}, ValueError, "unknown aggregate 'median'; valid: 'sum'"),
    ({"normalize": "z"}, ValueError, "unknown normalize 'z'; valid: 'none'"),
    ({"round_to": 0}, ValueError, "round_to must be >= 1"),
    ({"round_to": 2.5}, TypeError, "round_to must be an int"),
    ({"min_width": 0}, ValueError, "min_width must be >= 1"),
    ({"min_width": {"c11": 2}}, PruneError, r"min_width names 'c11'.*did you mean 'c1'"),
    ({"max_fraction": 0.0}, ValueError, r"max_fraction must be in \(0, 1\]"),
    ({"max_fraction": {"c1": 1.5}}, ValueError, r"max_fraction\['c1'\] must be in"),
    ({"protect": "c1"}, TypeError, "not one string"),
    ({"protect": ["nope"]}, PruneError, "protect names 'nope'"),
    ({"protect": ["bn1"]}, PruneError, r"protect names 'bn1' \(BatchNormalization\), which has no"),
    ({"criterion": "taylor"}, ValueError, "pass stats="),
    ({"allow_output_change": True}, ValueError, "analysis was made with"),
]


@pytest.mark.parametrize(("options", "error", "match"), BAD)
def test_bad_arguments_are_refused_before_any_work(options: dict[str, Any],
                                                   error: type[Exception], match: str) -> None:
    analysis = analyze_channels(vgg())
    with pytest.raises(error, match=match):
        plan_pruning(analysis, Flops(keep=0.5), **options)


def test_target_must_be_a_target() -> None:
    with pytest.raises(TypeError, match="target must be a Target"):
        plan_pruning(vgg(), 0.5, "l1")  # type: ignore[arg-type]


def test_the_table_shows_layers_groups_and_limits() -> None:
    plan = plan_pruning(residual(), Flops(keep=0.5), "l1")
    text = str(plan)
    assert text.startswith("target: flops <= ")
    assert "met (" in text and "c3" in text and "protected (out)" in text
    assert "settings: criterion=l1, scope=global, aggregate=sum, normalize=mean" in text
    if any(gp.deleted.size and len(gp.layers) > 1 for gp in plan.groups):
        assert "coupled groups cut together" in text


def test_shapes_only_replaces_every_weight() -> None:
    g = vgg()
    light = shapes_only(g)
    assert all(isinstance(w, ShapeOnly) for s in light.layers.values() for w in s.weights.values())
    assert total(count(light)) == total(count(g))
    assert light.nodes is g.nodes


def test_cut_group_deletes_a_share_of_one_group_for_sensitivity_runs() -> None:
    g = vgg()
    analysis = analyze_channels(g)
    scores = score_groups(analysis, fixed(c2=list(range(16, 0, -1))), normalize="none")
    half = cut_group(analysis, "c2", 0.5, scores)
    assert {k: v.tolist() for k, v in half.items()} == {"c2": list(range(8, 16))}
    assert widths(delete_neurons(g, half))["c2"] == 8
    assert cut_group(analysis, "c2", 1.0, scores)["c2"].size == 15  # never every neuron
    assert cut_group(analysis, "c2", 0.05, scores) == {}  # less than one slot
    assert cut_group(analysis, "c2", 0.3, scores, round_to=4)["c2"].size == 4
    assert cut_group(analysis, "c1", 0.5, scores) == {}  # c1 is not scored
    assert cut_group(analysis, "out", 0.5, scores) == {}  # blocked: a model output
    with pytest.raises(ValueError, match="fraction"):
        cut_group(analysis, "c2", 1.5, scores)
    with pytest.raises(PruneError, match="no group 99"):
        cut_group(analysis, 99, 0.5, scores)


# --------------------------------------------------------------------------------------------
# Group scores
# --------------------------------------------------------------------------------------------


def fixed(**scores: list[float]) -> LayerScores:
    return LayerScores("fixed", {k: np.asarray(v, dtype=float) for k, v in scores.items()}, {})


def test_residual_slot_scores_aggregate_both_members() -> None:
    analysis = analyze_channels(residual())
    given_scores = fixed(c1=[1, 2, 3, 4], c2=[4, 0, 2, 2])
    index = analysis.group_of("c1").index
    for how, expected in (("sum", [5, 2, 5, 6]), ("mean", [2.5, 1, 2.5, 3]),
                          ("max", [4, 2, 3, 4])):
        result = score_groups(analysis, given_scores, aggregate=how, normalize="none")
        np.testing.assert_allclose(result.scores[index], expected)
    normalized = score_groups(analysis, given_scores, normalize="mean")
    np.testing.assert_allclose(normalized.scores[index],
                               np.array([1, 2, 3, 4]) / 2.5 + np.array([4, 0, 2, 2]) / 2)
    assert set(normalized.unscored) == {analysis.group_of("c3").index,
                                        analysis.group_of("out").index}
    assert "not scored" in normalized.unscored[analysis.group_of("c3").index]


def test_concat_depthwise_slot_scores_average_the_multiplier() -> None:
    analysis = analyze_channels(concat_depthwise())
    given_scores = fixed(a=[1, 1], dw=[0, 2, 4, 4, 1, 1, 3, 5, 6, 6])
    result = score_groups(analysis, given_scores, normalize="none")
    # Slots 0-1 are a's channels with dw's pairs; slots 2-4 are b's (unscored) with dw's.
    np.testing.assert_allclose(result.scores[analysis.group_of("dw").index], [2, 5, 1, 4, 6])
    partial = score_groups(analysis, fixed(a=[3, 1]), normalize="none")
    got = partial.scores[analysis.group_of("a").index]
    np.testing.assert_allclose(got[:2], [3, 1])
    assert np.isnan(got[2:]).all()  # b's slots: no member scored


def test_slots_without_scores_stay() -> None:
    g = concat_depthwise()
    analysis = analyze_channels(g)
    index = analysis.group_of("a").index
    scores = GroupScores({index: np.array([0.0, 0.1, np.nan, np.nan, np.nan])}, {}, "fixed",
                         "sum", "none")
    plan = plan_pruning(analysis, Params(keep=0.01), scores=scores, strict=False)
    assert {k: v.tolist() for k, v in plan.request.items()} == {"a": [0], "dw": [0, 1]}
    assert "slots without a score" in plan.groups[index].limit


def test_normalizations() -> None:
    v = np.array([1.0, 3.0])
    np.testing.assert_allclose(normalize_scores(v, "mean"), [0.5, 1.5])
    np.testing.assert_allclose(normalize_scores(v, "max"), [1 / 3, 1])
    np.testing.assert_allclose(normalize_scores(v, "l2"), v / np.sqrt(10))
    np.testing.assert_allclose(normalize_scores(np.zeros(2), "mean"), [0, 0])
    with pytest.raises(ValueError, match="non-negative"):
        normalize_scores([-1.0, 1.0])
    with pytest.raises(ValueError, match="unknown normalize"):
        normalize_scores(v, "zscore")
    with pytest.raises(ValueError, match="3 scores for layer 'c1'"):
        score_groups(analyze_channels(residual()), LayerScores("x", {"c1": np.ones(3)}, {}))


# --------------------------------------------------------------------------------------------
# Property: plans on random graphs are exact and honour their limits
# --------------------------------------------------------------------------------------------


@settings(max_examples=60, deadline=None)
@given(graph=random_graphs(), data=st.data())
def test_random_plans_are_exact_and_within_limits(graph: Graph, data: st.DataObject) -> None:
    allow = data.draw(st.booleans())
    analysis = analyze_channels(graph, allow_output_change=allow)
    kind = data.draw(st.sampled_from([Params, Flops]))
    keep = data.draw(st.sampled_from([0.97, 0.9, 0.75]) | st.floats(0.05, 1.0))
    r = data.draw(st.sampled_from([1, 1, 2, 4]))
    low = data.draw(st.integers(1, 2))
    share = data.draw(st.sampled_from([1.0, 0.5]))
    plan = plan_pruning(analysis, kind(keep=keep), data.draw(st.sampled_from(
        ["random", "l1", "l2"])), scope=data.draw(st.sampled_from(["global", "uniform"])),
        round_to=r, min_width=low, max_fraction=share, allow_output_change=allow,
        protect=None if data.draw(st.booleans()) else [], strict=False)
    event("met" if plan.met else "not met")
    assert_tight(analysis, plan)
    before, after = widths(graph), widths(prefix_graph(analysis, plan, plan.taken))
    for gp in plan.groups:
        group = analysis.groups[gp.index]
        if gp.deleted.size:
            assert not group.blocked[gp.deleted].any()
            assert gp.width_after % r == 0
        for member in group.members:
            b, a = member.width, after[member.layer]
            assert b == before[member.layer]
            if a < b:
                assert a >= low and b - a <= math.floor(share * b + 1e-9)
