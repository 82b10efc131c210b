"""The surgery benchmark runs: its functions on a tiny model, one repeat. No speed is asserted."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from types import ModuleType

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "surgery.py"


@pytest.fixture(scope="module")
def bench() -> ModuleType:
    spec = importlib.util.spec_from_file_location("kerasprune_bench_surgery", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def test_run_case_reports_every_limit_ratio_and_phase(bench: ModuleType) -> None:
    model = bench.CASES["tiny"].build()
    row = bench.run_case(model, "conv1", repeats=1, warmup=0, name="tiny")
    assert row["model"] == "tiny" and row["layer"] == "conv1"
    assert row["deleted"] == 4  # half of conv1's 8 filters
    assert row["pruned_params"] < row["params"] == model.count_params()
    for key in ("seconds", "cpu_seconds", "first_seconds"):
        assert set(row[key]) == {"a", "b", "c", "s"}
        assert all(v >= 0 for v in row[key].values())
    assert all(row["seconds"][k] > 0 for k in "abcs")
    for key in ("s_over_a", "s_over_b", "s_over_c", "cpu_s_over_a", "first_s_over_a"):
        assert row[key] > 0
    assert row["s_over_a"] == pytest.approx(row["seconds"]["s"] / row["seconds"]["a"])
    assert row["pass_a"] == (row["s_over_a"] <= bench.TARGET_S_OVER_A)
    assert row["pass_b"] == (row["s_over_b"] <= bench.TARGET_S_OVER_B)
    assert set(row["breakdown"]) == {*bench.PHASES, "other"}
    assert all(v >= 0 for v in row["breakdown"].values())
    assert row["breakdown"]["from_graph"] > 0  # the phase timers saw delete_neurons' steps
    table = bench.format_table([row])
    assert "tiny" in table and "s/a" in table and "from_graph" in table


def test_phase_timers_are_removed_afterwards(bench: ModuleType) -> None:
    from kerasprune.adapters.keras import build, convert
    from kerasprune.core import surgery

    before = (convert.to_graph, build.from_graph, surgery.dependency_group,
              surgery.apply_deletion)
    spent: dict[str, float] = {}
    with bench._phase_timer(spent):
        assert convert.to_graph is not before[0]
    assert (convert.to_graph, build.from_graph, surgery.dependency_group,
            surgery.apply_deletion) == before


def test_main_writes_json(bench: ModuleType, tmp_path: Path,
                          capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "surgery.json"
    assert bench.main(["--models", "tiny", "--repeats", "1", "--warmup", "0",
                       "--json", str(out)]) == 0
    data = json.loads(out.read_text())
    assert data["targets"] == {"s_over_a": 0.35, "s_over_b": 5.0}
    assert [r["model"] for r in data["rows"]] == ["tiny"]
    assert "tiny" in capsys.readouterr().out
