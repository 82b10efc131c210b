"""The planning benchmark's graphs and functions (NumPy only), and a plan on DenseNet121.

No speed is asserted: the benchmark is run on a tiny chain, one round, and its DenseNet121
graph is checked for what the channel analysis must find in it.
"""

from __future__ import annotations

import runpy
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from kerasprune.core.cost import count, total
from kerasprune.core.groups import analyze_channels
from kerasprune.core.plan import plan_pruning, shape_take
from kerasprune.core.surgery import apply_deletion, dependency_group, prunable_layers
from kerasprune.core.targets import Flops

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "planning.py"


@pytest.fixture(scope="module")
def bench() -> SimpleNamespace:
    """The benchmark script's functions (it is not a package module)."""
    return SimpleNamespace(**runpy.run_path(str(SCRIPT), run_name="kerasprune_bench_planning"))


def test_run_case_reports_every_step(bench: SimpleNamespace) -> None:
    rows = [bench.run_case("chain100", bench.dense_chain(12), 1, 100),
            bench.run_case("chain800", bench.dense_chain(24), 1, 0)]
    bench.add_ratios(rows)
    first, second = rows
    assert first["layers"] == 13 and first["slots"] == 12 * 64 + 10
    assert set(first["seconds"]) == {"g", "d", "p", "s"}
    assert set(second["seconds"]) == {"g", "d", "p"}  # the closure skipped above 0 layers
    assert all(v > 0 for row in rows for v in row["seconds"].values())
    assert first["ratio"] == pytest.approx({k: 1.0 for k in "gdps"})
    assert second["pass"] == (second["ratio"]["g"] <= bench.TARGET_RATIO
                              and second["ratio"]["d"] <= bench.TARGET_RATIO)
    table = bench.format_table(rows)
    assert "chain800" in table and "g ms/layer" in table and "target ratio" in table


def test_densenet121_groups_and_an_exact_plan(bench: SimpleNamespace) -> None:
    graph = bench.densenet121()
    convs = [n for n, s in graph.layers.items() if s.kind == "Conv2D"]
    assert len(graph.layers) == 428 and len(convs) == 120  # as Keras builds it
    assert total(count(graph))[0] == 8_062_504  # keras.applications.DenseNet121's params
    analysis = analyze_channels(graph)
    # No layer is coupled to another: every convolution is its own group.
    assert [g.layers for g in analysis.groups] == [(n,) for n in prunable_layers(graph)]
    # A block's new channels reach every later concatenation of the block (and its readers).
    concat_of = {n.outputs[0]: n.layer for n in graph.nodes if n.layer.endswith("concat")}
    reached = [concat_of[t] for t in analysis.group_of("conv2_block4_2_conv").elements
               if t in concat_of]
    assert reached == [f"conv2_block{i}_concat" for i in (4, 5, 6)]
    # A plan to half the FLOPs is exact: the surgery's own closure deletes the same channels.
    plan = plan_pruning(analysis, Flops(keep=0.5), "random")
    assert plan.met and plan.flops[1] <= plan.flops[0] / 2
    deletion = dependency_group(graph, dict(plan.request))
    assert {t: idx.tolist() for t, (_, idx) in deletion.tensors.items()} == {
        t: idx.tolist() for t, (_, idx) in plan.deletion.tensors.items()}
    after = total(count(apply_deletion(deletion, take=shape_take)))
    assert after == (plan.params[1], plan.flops[1])
    kept = {g.layers[0]: g.width_after for g in plan.groups}
    assert min(kept.values()) >= 1 and np.mean(list(kept.values())) < np.mean(
        [g.width_before for g in plan.groups])
