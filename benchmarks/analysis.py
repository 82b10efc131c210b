"""Does a request naming every layer cost time linear in the graph's size?

NumPy only by default: graphs are built in the core's own terms (weights are shape-only
stand-ins). Rows:

- ``chain{N}``: ``N`` Dense layers of 16 units with a ReLU activation in a chain, then a
  10-unit head (``N`` = 100, 200, 400, 800);
- ``densenet121``: DenseNet121's graph (428 layers, 120 convolutions, 58 concatenations), as
  ``benchmarks/planning.py`` builds it layer by layer the way Keras does;
- ``densenet121_keras`` (with ``--keras``): ``keras.applications.DenseNet121(weights=None)``
  converted with ``kerasprune.to_graph`` (needs Keras and a backend).

For each graph and each round, these run one after another (so a busy machine slows them
alike), each after ``gc.collect()`` and each on a fresh copy of the graph (a new object, so the
channel analysis cached per graph is computed inside the timer, as a first request computes it):

(r) ``dependency_group(graph, {layer: [0] for every layer that can lose a neuron})``: one
    request naming every layer;
(n) ``neuron_count(graph, layer)`` for each of those layers;
(p) ``prunability(graph)``: every layer put through the surgery, as ``kerasprune.prunable_layers``
    does;
(m) ``measurement_sites(graph)``: where APoZ is counted for every layer.

Each is reported as the minimum over the rounds, divided by the number of requested layers,
and as a ratio to that per-layer time of ``chain100``. A cross-check that no load on the
machine can disturb follows: the Python function calls of each step (one run under
``cProfile``) per requested layer, and their ratio to ``chain100``'s. The target, from the
issue: at most **1.5** at 800 layers (linear cost; the per-layer channel walk of the old surgery
made it about 7). DenseNet121's layers hold many more channels each, so its ratio says how much
more a layer of a real network costs than a Dense layer of 16 units. Nothing here is a timed
test.

Run ``python benchmarks/analysis.py`` (``--quick``: one round, chains of 100 and 800 and
DenseNet121; ``--json PATH`` writes every number).
"""

from __future__ import annotations

import argparse
import cProfile
import gc
import io
import json
import pstats
import runpy
import sys
import time
import warnings
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

from kerasprune.core.apoz import measurement_sites
from kerasprune.core.graph import Graph, LayerSpec
from kerasprune.core.plan import ShapeOnly
from kerasprune.core.surgery import dependency_group, neuron_count, prunability

TARGET_RATIO = 1.5
"""Time per requested layer at 800 layers over that at 100, at most."""

STEPS = ("r", "n", "p", "m")
_PLANNING = Path(__file__).resolve().parent / "planning.py"


def relu_chain(n: int, width: int = 16) -> Graph:
    """``n`` Dense layers of ``width`` units with a ReLU activation, then a 10-unit head."""
    layers = [LayerSpec(f"d{i}", "Dense", {"units": width, "activation": "relu"},
                        {"kernel": ShapeOnly((width, width)), "bias": ShapeOnly((width,))})
              for i in range(n)]
    layers.append(LayerSpec("head", "Dense", {"units": 10},
                            {"kernel": ShapeOnly((width, 10)), "bias": ShapeOnly((10,))}))
    return Graph.chain((width,), layers, [(width,)] * n + [(10,)])


def densenet121() -> Graph:
    """DenseNet121's core graph, from ``benchmarks/planning.py``."""
    builder: Callable[[], Graph] = runpy.run_path(str(_PLANNING))["densenet121"]
    return builder()


def densenet121_keras() -> Graph:
    """``keras.applications.DenseNet121(weights=None)`` through the Keras adapter."""
    import keras

    import kerasprune

    return kerasprune.to_graph(keras.applications.DenseNet121(weights=None)).graph


def _fresh(graph: Graph) -> Graph:
    """A new graph object with the same contents: nothing cached for it yet."""
    return replace(graph)


def _timed(fn: Callable[[Graph], Any], graph: Graph) -> float:
    fresh = _fresh(graph)
    gc.collect()
    start = time.perf_counter()
    fn(fresh)
    return time.perf_counter() - start


def _sites(graph: Graph) -> Any:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # layers without a ReLU are left out, with a warning
        return measurement_sites(graph)


def run_case(name: str, graph: Graph, repeats: int) -> dict[str, Any]:
    """Time every step on fresh copies of ``graph``; minima over ``repeats`` rounds."""
    names = [p.layer for p in prunability(_fresh(graph)) if p.prunable]
    request = {layer: [0] for layer in names}
    steps: dict[str, Callable[[Graph], Any]] = {
        "r": lambda g: dependency_group(g, request),
        "n": lambda g: [neuron_count(g, layer) for layer in names],
        "p": prunability,
        "m": _sites,
    }
    times: dict[str, list[float]] = {k: [] for k in STEPS}
    for _ in range(repeats):
        for key in STEPS:
            times[key].append(_timed(steps[key], graph))
    seconds = {k: min(v) for k, v in times.items()}
    calls = {}
    for key in STEPS:
        fresh = _fresh(graph)
        profile = cProfile.Profile()
        profile.enable()
        steps[key](fresh)
        profile.disable()
        stats: Any = pstats.Stats(profile, stream=io.StringIO())
        calls[key] = stats.total_calls
    return {"case": name, "graph_layers": len(graph.layers), "requested": len(names),
            "seconds": seconds, "per_layer": {k: v / len(names) for k, v in seconds.items()},
            "calls_per_layer": {k: v / len(names) for k, v in calls.items()}}


def add_ratios(rows: list[dict[str, Any]]) -> None:
    """Each row's per-layer times over those of the first row (the 100-layer chain)."""
    base = rows[0]["per_layer"]
    base_calls = rows[0]["calls_per_layer"]
    for row in rows:
        row["ratio"] = {k: v / base[k] for k, v in row["per_layer"].items()}
        row["calls_ratio"] = {k: v / base_calls[k] for k, v in row["calls_per_layer"].items()}


def format_table(rows: list[dict[str, Any]]) -> str:
    head = ["case", "layers", "requested"] + [f"{k} ms/layer" for k in STEPS] + [
        f"{k} ratio" for k in STEPS]
    lines = [head]
    for row in rows:
        lines.append([row["case"], str(row["graph_layers"]), str(row["requested"])]
                     + [f"{row['per_layer'][k] * 1e3:.3f}" for k in STEPS]
                     + [f"{row['ratio'][k]:.2f}" for k in STEPS])
    calls = [["case"] + [f"{k} calls/layer" for k in STEPS] + [f"{k} ratio" for k in STEPS]]
    for row in rows:
        calls.append([row["case"]] + [f"{row['calls_per_layer'][k]:.0f}" for k in STEPS]
                     + [f"{row['calls_ratio'][k]:.2f}" for k in STEPS])
    return _aligned(lines) + "\n\nPython function calls (cProfile), per requested layer:\n" + \
        _aligned(calls)


def _aligned(lines: list[list[str]]) -> str:
    widths = [max(len(line[i]) for line in lines) for i in range(len(lines[0]))]
    return "\n".join("  ".join(c.rjust(w) for c, w in zip(line, widths, strict=True))
                     for line in lines)


def verdict(rows: list[dict[str, Any]]) -> str:
    """Whether the 800-layer chain meets the target, step by step."""
    chain = [r for r in rows if r["case"] == "chain800"]
    if not chain:
        return "no chain800 row: no verdict"
    ratios, calls = chain[0]["ratio"], chain[0]["calls_ratio"]
    parts = [f"{k}: {ratios[k]:.2f} {'pass' if ratios[k] <= TARGET_RATIO else 'FAIL'} "
             f"(calls {calls[k]:.2f})" for k in STEPS]
    return f"chain800 per-layer time ratio (target <= {TARGET_RATIO}): " + ", ".join(parts)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true",
                        help="one round; chains of 100 and 800 and DenseNet121")
    parser.add_argument("--repeats", type=int, default=None, help="rounds (default 5, quick 1)")
    parser.add_argument("--keras", action="store_true",
                        help="also convert keras.applications.DenseNet121 (needs Keras)")
    parser.add_argument("--json", metavar="PATH", help="also write the results as JSON")
    args = parser.parse_args(argv)
    repeats = args.repeats or (1 if args.quick else 5)
    sizes = (100, 800) if args.quick else (100, 200, 400, 800)
    cases: list[tuple[str, Callable[[], Graph]]] = [
        (f"chain{n}", lambda n=n: relu_chain(n)) for n in sizes]  # type: ignore[misc]
    cases.append(("densenet121", densenet121))
    if args.keras:
        cases.append(("densenet121_keras", densenet121_keras))
    rows = []
    for name, build in cases:
        rows.append(run_case(name, build(), repeats))
        print(f"  {name}: done", file=sys.stderr)
    add_ratios(rows)
    print(format_table(rows))
    print(verdict(rows))
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
