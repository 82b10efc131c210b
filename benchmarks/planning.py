"""How does the channel analysis (and the planner on it) scale with the graph's size?

NumPy only: graphs are built in the core's own terms, weights are shape-only stand-ins, nothing
imports keras. Rows:

- ``chain{N}``: ``N`` Dense layers of 64 units in a chain (``N`` = 100, 200, 400, 800);
- ``densenet121``: DenseNet121's graph (428 layers: 120 convolutions, 58 concatenations
  feeding batch norms, 224x224x3 input) built layer by layer as Keras builds it.

For each, one after another in every round (so a busy machine slows them alike), after
``gc.collect()``, reported as the minimum over the rounds (the least disturbed, as
``timeit`` advises for code whose cost does not vary):

(g) ``analyze_channels(graph)``: the channel analysis, once per graph;
(d) ``analysis.deletion(...)`` of one slot of every group: a request naming every layer,
    built from the analysis;
(p) ``plan_pruning(analysis, Flops(keep=0.5), "random")``: the whole planner on the analysis
    (ranking, about ``log2(slots)`` exact cost evaluations on a shape-only copy);
(s) ``surgery.dependency_group`` of the same request as (d): the surgery's closure, for
    reference (on the graph's cached channel analysis, :mod:`kerasprune.core.channels`;
    ``--closure-max`` skips it above that many layers).

Each is divided by the number of layers with neurons, and by that per-layer time of the
100-layer chain: the issue's target is a ratio of at most 1.5 at 800 layers (linear cost).
DenseNet121's layers hold many more channels each (its concatenations grow to 1024), so its
per-layer ratio is larger; the ``pairs`` column (``(tensor, channel)`` pairs, the analysis's
unit of work) says by how much.
Nothing here is a timed test: only ratios measured in the same run are reported.

Run ``python benchmarks/planning.py`` (``--quick``: one round, chains of 100 and 800 and
DenseNet121; ``--json PATH`` writes every number).
"""

from __future__ import annotations

import argparse
import gc
import json
import sys
import time
from collections.abc import Callable
from functools import partial
from typing import Any

from kerasprune.core.graph import Graph, LayerSpec, Node
from kerasprune.core.groups import ChannelAnalysis, analyze_channels
from kerasprune.core.plan import ShapeOnly, plan_pruning
from kerasprune.core.surgery import dependency_group, prunable_layers
from kerasprune.core.targets import Flops

TARGET_RATIO = 1.5
"""Time per layer at 800 layers over time per layer at 100, at most."""

STEPS = ("g", "d", "p", "s")


def _w(*shape: int) -> ShapeOnly:
    return ShapeOnly(tuple(shape))


def dense_chain(n: int, width: int = 64) -> Graph:
    """``n`` Dense layers of ``width`` units, then a 10-unit head (the model output)."""
    layers = [LayerSpec(f"d{i}", "Dense", {"units": width},
                        {"kernel": _w(width, width), "bias": _w(width)}) for i in range(n)]
    layers.append(LayerSpec("head", "Dense", {"units": 10},
                            {"kernel": _w(width, 10), "bias": _w(10)}))
    return Graph.chain((width,), layers, [(width,)] * n + [(10,)])


class _Net:
    """A functional graph under construction, Keras' way: one node per layer."""

    def __init__(self, shape: tuple[int, ...]) -> None:
        self.layers: dict[str, LayerSpec] = {}
        self.nodes: list[Node] = []
        self.shapes: dict[int, tuple[int, ...]] = {0: shape}

    def add(self, name: str, kind: str, ins: tuple[int, ...], shape: tuple[int, ...],
            weights: dict[str, ShapeOnly] | None = None, **attrs: Any) -> int:
        t = len(self.shapes)
        self.shapes[t] = shape
        self.layers[name] = LayerSpec(name, kind, {"data_format": "channels_last", **attrs},
                                      weights or {})
        self.nodes.append(Node(name, ins, (t,)))
        return t

    def bn_relu(self, name: str, x: int) -> int:
        c = self.shapes[x][-1]
        x = self.add(f"{name}_bn", "BatchNormalization", (x,), self.shapes[x], axis=-1,
                     weights={k: _w(c) for k in ("gamma", "beta", "moving_mean",
                                                 "moving_variance")})
        return self.add(f"{name}_relu", "Activation", (x,), self.shapes[x], activation="relu")

    def conv(self, name: str, x: int, filters: int, k: int, stride: int = 1) -> int:
        h, w, c = self.shapes[x]
        shape = (h // stride, w // stride, filters)
        return self.add(name, "Conv2D", (x,), shape, filters=filters,
                        weights={"kernel": _w(k, k, c, filters)})

    def graph(self, output: int) -> Graph:
        return Graph(self.layers, tuple(self.nodes), self.shapes, (0,), (output,))


def densenet121(blocks: tuple[int, ...] = (6, 12, 24, 16), growth: int = 32) -> Graph:
    """DenseNet121's graph as ``keras.applications.DenseNet121`` lays it out."""
    net = _Net((224, 224, 3))
    x = net.add("zero_padding2d", "ZeroPadding2D", (0,), (230, 230, 3))
    x = net.conv("conv1_conv", x, 64, 7, stride=2)
    x = net.bn_relu("conv1", x)
    x = net.add("zero_padding2d_1", "ZeroPadding2D", (x,), (114, 114, 64))
    x = net.add("pool1", "MaxPooling2D", (x,), (56, 56, 64), pool_size=3)
    for b, n in enumerate(blocks, start=2):
        for i in range(1, n + 1):
            name = f"conv{b}_block{i}"
            y = net.bn_relu(f"{name}_0", x)
            y = net.conv(f"{name}_1_conv", y, 4 * growth, 1)
            y = net.bn_relu(f"{name}_1", y)
            y = net.conv(f"{name}_2_conv", y, growth, 3)
            h, w, c = net.shapes[x]
            x = net.add(f"{name}_concat", "Concatenate", (x, y), (h, w, c + growth), axis=-1)
        if b < len(blocks) + 1:
            y = net.bn_relu(f"pool{b}", x)
            y = net.conv(f"pool{b}_conv", y, net.shapes[y][-1] // 2, 1)
            h, w, c = net.shapes[y]
            x = net.add(f"pool{b}_pool", "AveragePooling2D", (y,), (h // 2, w // 2, c),
                        pool_size=2)
    c = net.shapes[x][-1]
    x = net.add("bn", "BatchNormalization", (x,), net.shapes[x], axis=-1,
                weights={k: _w(c) for k in ("gamma", "beta", "moving_mean", "moving_variance")})
    x = net.add("relu", "Activation", (x,), net.shapes[x], activation="relu")
    x = net.add("avg_pool", "GlobalAveragePooling2D", (x,), (c,))
    x = net.add("predictions", "Dense", (x,), (1000,), units=1000, activation="softmax",
                weights={"kernel": _w(c, 1000), "bias": _w(1000)})
    return net.graph(x)


CASES: dict[str, Callable[[], Graph]] = {
    **{f"chain{n}": (lambda n=n: dense_chain(n)) for n in (100, 200, 400, 800)},  # type: ignore[misc]
    "densenet121": densenet121,
}


def _one_slot_each(analysis: ChannelAnalysis) -> dict[int, list[int]]:
    return {g.index: [0] for g in analysis.groups if g.prunable and not g.blocked[0]}


def _timed(fn: Callable[[], Any], calls: int = 1) -> tuple[float, Any]:
    """Seconds per call of ``fn`` over ``calls`` calls, and its last result."""
    gc.collect()
    start = time.perf_counter()
    for _ in range(calls):
        out = fn()
    return (time.perf_counter() - start) / calls, out


def run_case(name: str, graph: Graph, repeats: int, closure_max: int) -> dict[str, Any]:
    """Time every step on ``graph``; seconds per step are minima over ``repeats`` rounds
    (the deletion, which takes about a millisecond, is timed over 20 calls each round)."""
    layers = len(prunable_layers(graph))
    times: dict[str, list[float]] = {k: [] for k in STEPS}
    analysis = analyze_channels(graph)
    chosen = _one_slot_each(analysis)
    request = analysis.request(analysis.slot_mask(chosen))
    for _ in range(repeats):
        times["g"].append(_timed(partial(analyze_channels, graph))[0])
        times["d"].append(_timed(partial(analysis.deletion, chosen), calls=20)[0])
        times["p"].append(_timed(partial(plan_pruning, analysis, Flops(keep=0.5), "random",
                                         strict=False))[0])
        if layers <= closure_max:
            times["s"].append(_timed(partial(dependency_group, graph, request))[0])
    seconds = {k: min(v) for k, v in times.items() if v}
    return {"case": name, "layers": layers, "slots": analysis.slots,
            "pairs": int(analysis.element_tensor.size),
            "groups": len(analysis.groups), "seconds": seconds,
            "per_layer": {k: v / layers for k, v in seconds.items()}}


def add_ratios(rows: list[dict[str, Any]]) -> None:
    """Per-layer time over that of the 100-layer chain (the first row if it is missing)."""
    base = next((r for r in rows if r["case"] == "chain100"), rows[0])
    for row in rows:
        row["ratio"] = {k: v / base["per_layer"][k] for k, v in row["per_layer"].items()
                        if k in base["per_layer"]}
        if row["case"] == "chain800":
            row["pass"] = row["ratio"]["g"] <= TARGET_RATIO and row["ratio"]["d"] <= TARGET_RATIO


def format_table(rows: list[dict[str, Any]]) -> str:
    head = ["case", "layers", "pairs", *(f"{k} ms/layer" for k in STEPS),
            *(f"{k} ratio" for k in STEPS)]
    lines = [head]
    for row in rows:
        per, ratio = row["per_layer"], row.get("ratio", {})
        lines.append([row["case"], str(row["layers"]), str(row["pairs"]),
                      *(f"{per[k] * 1e3:.3f}" if k in per else "-" for k in STEPS),
                      *(f"{ratio[k]:.2f}" if k in ratio else "-" for k in STEPS)])
    widths = [max(len(line[i]) for line in lines) for i in range(len(head))]
    out = ["  ".join(c.rjust(w) for c, w in zip(line, widths, strict=True)) for line in lines]
    verdicts = [f"{r['case']}: target ratio <= {TARGET_RATIO} for g and d: "
                f"{'pass' if r['pass'] else 'FAIL'}" for r in rows if "pass" in r]
    legend = ("g = analyze_channels, d = deletion of one slot per group, p = plan_pruning "
              "(Flops keep=0.5, random), s = dependency_group of the same request (reference)")
    return "\n".join([*out, "", legend, *verdicts])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="one round, three cases")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--cases", nargs="*", choices=sorted(CASES), default=None)
    parser.add_argument("--closure-max", type=int, default=1000,
                        help="skip dependency_group above this many layers (default 1000)")
    parser.add_argument("--json", help="write every number to this file")
    args = parser.parse_args(argv)
    names = args.cases or (["chain100", "chain800", "densenet121"] if args.quick
                           else list(CASES))
    repeats = 1 if args.quick else args.repeats
    rows = []
    for name in names:
        graph = CASES[name]()
        run_case(name, graph, 1, 0)  # warm-up, not counted
        rows.append(run_case(name, graph, repeats, args.closure_max))
    add_ratios(rows)
    print(format_table(rows))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
