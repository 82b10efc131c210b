"""The analysis benchmark runs, and its load-independent half holds: the Python function calls
per requested layer do not grow with the graph (a request over every layer is linear).

No time is asserted: calls are counted (``cProfile``), which no load on the machine changes.
"""

from __future__ import annotations

import runpy
from pathlib import Path
from types import SimpleNamespace

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "analysis.py"


@pytest.fixture(scope="module")
def bench() -> SimpleNamespace:
    """The benchmark script's functions (it is not a package module)."""
    return SimpleNamespace(**runpy.run_path(str(SCRIPT), run_name="kerasprune_bench_analysis"))


def test_calls_per_requested_layer_do_not_grow_with_the_chain(bench: SimpleNamespace) -> None:
    rows = [bench.run_case(f"chain{n}", bench.relu_chain(n), 1) for n in (20, 160)]
    bench.add_ratios(rows)
    small, large = rows
    assert small["requested"] == 20 and large["requested"] == 160
    assert set(large["calls_ratio"]) == set(bench.STEPS)
    for step, ratio in large["calls_ratio"].items():
        assert ratio <= 1.1, (step, small["calls_per_layer"][step], large["calls_per_layer"][step])
    table = bench.format_table(rows)
    assert "chain160" in table and "calls/layer" in table
