"""Every subcommand, run in-process through main() (on every backend in CI)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import keras
import numpy as np
import pytest
from cli_helpers import (
    Files,
    arrays,
    assert_picture,
    run_in_process,
)

import kerasprune
from kerasprune.cli import plots
from kerasprune.core import apoz as core_apoz
from kerasprune.core import cost


def _widths(model: keras.Model) -> dict[str, int]:
    return {c.name: c.width for c in kerasprune.costs(model) if c.width is not None}


def test_summary_reports_each_layer_as_the_library_sees_it(
        files: Files, capsys: pytest.CaptureFixture[str]) -> None:
    run = run_in_process(capsys, "summary", files.model, "--json")
    assert run.code == 0 and run.err == ""
    doc = run.json()
    model = keras.saving.load_model(files.model)
    costs = kerasprune.costs(model)
    layers = {r["name"]: r for r in doc["layers"]}
    assert list(layers) == [c.name for c in costs]
    for c in costs:
        assert (layers[c.name]["params"], layers[c.name]["flops"], layers[c.name]["width"]) == (
            c.params, c.flops, c.width)
    assert doc["totals"]["params"] == model.count_params() == cost.total(costs)[0]
    # conv2a and conv2b feed one Add: one group; the output layer is refused, with why
    assert layers["conv2a"]["group"] == layers["conv2b"]["group"] != layers["conv1"]["group"]
    assert {g["id"]: g["layers"] for g in doc["groups"]}[layers["conv2a"]["group"]] == [
        "conv2b", "conv2a"]
    assert layers["out"]["prunable"] is False
    assert "--allow-output-change" in layers["out"]["reason"]
    assert [n for n, r in layers.items() if r["prunable"]] == ["conv1", "conv2b", "conv2a", "fc"]
    assert layers["flatten"]["prunable"] is None and layers["flatten"]["width"] is None
    # every layer a deletion of conv1 changes: conv1 itself and the conv reading it
    assert layers["conv1"]["changes"] == ["conv2a"]
    assert doc["totals"]["prunable"] == 4 and doc["totals"]["with_neurons"] == 5

    table = run_in_process(capsys, "summary", files.model)
    assert table.code == 0
    lines = table.out.splitlines()
    assert lines[0].startswith("model 'tiny' (Functional): (8, 8, 1) -> (3,)")
    row = next(line.split() for line in lines if line.startswith("conv2a "))
    assert row[:6] == ["conv2a", "Conv2D", "8", "440", "13.95k", "yes"]
    assert any(line.startswith("total") and "2,103" in line for line in lines)
    assert "[1] out: " in table.out and "group 2: conv2b, conv2a" in table.out


def test_apoz_json_and_plot(files: Files, tmp_path: Path,
                           capsys: pytest.CaptureFixture[str]) -> None:
    out, png = tmp_path / "apoz.json", tmp_path / "apoz.png"
    run = run_in_process(capsys, "apoz", files.model, "--data", files.data, "-o", out,
                         "--plot", png, "--json", "--rule", "top", "--fraction", "0.25")
    assert run.code == 0, run.err
    doc = run.json()
    assert json.loads(out.read_text()) == {k: v for k, v in doc.items() if k != "plot"}
    model = keras.saving.load_model(files.model)
    x, _ = arrays()
    expected = kerasprune.get_apoz(model, x, verbose=0)
    assert list(doc["layers"]) == list(expected) == ["conv1", "fc"]
    for name, layer in doc["layers"].items():
        np.testing.assert_array_equal(layer["apoz"], expected[name])
        np.testing.assert_array_equal(np.asarray(layer["zeros"]) / layer["total"],
                                      expected[name])
        assert layer["selected"] == core_apoz.select_high_apoz(expected[name], "top",
                                                        fraction=0.25).tolist()
        assert len(layer["selected"]) == int(0.25 * layer["neurons"]) > 0
    assert doc["data"]["samples"] == 64
    assert_picture(doc["plot"], 2, [plots.KEPT, plots.SELECTED, plots.THRESHOLD])
    assert "measuring APoZ" in run.err and "wrote" in run.err


def test_prune_given_neurons_saves_the_library_result(
        files: Files, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "small.keras"
    dry = run_in_process(capsys, "prune", files.model, "--layer", "conv2a", "--neurons", "0,5",
                         "--layer", "fc", "--neurons=-1", "--dry-run", "--json", "-o", out)
    assert dry.code == 0 and not out.exists()  # a dry run writes nothing, even with -o
    run = run_in_process(capsys, "prune", files.model, "--layer", "conv2a", "--neurons", "0,5",
                         "--layer", "fc", "--neurons=-1", "-o", out, "--json")
    assert run.code == 0, run.err
    doc, plan = run.json(), dry.json()
    assert plan["deleted"] == doc["deleted"] == {"conv2b": [0, 5], "conv2a": [0, 5],
                                                 "fc": [11]}
    assert plan["after"] == doc["after"] and plan["layers"] == doc["layers"]
    model = keras.saving.load_model(files.model)
    saved = keras.saving.load_model(out)
    expected = kerasprune.delete_neurons(model, {"conv2a": [0, 5], "fc": [-1]})
    assert _widths(saved) == {**_widths(model), "conv2a": 6, "conv2b": 6, "fc": 11}
    assert doc["after"]["params"] == saved.count_params() == expected.count_params()
    x, _ = arrays(8, seed=3)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(saved(x)),
                               keras.ops.convert_to_numpy(expected(x)), atol=1e-6)
    assert saved.get_compile_config()["loss"] == model.get_compile_config()["loss"]

    table = run_in_process(capsys, "prune", files.model, "--layer", "conv1", "--neurons", "2",
                           "--dry-run")
    assert table.code == 0
    assert "conv1: 1 of 6 [2]" in table.out
    assert "conv2a (Conv2D): input 0: [2] (1)" in table.out
    assert "dry run: nothing written" in table.out


@pytest.mark.parametrize("rule", [["--rule", "std", "--k", "0.5"],
                                  ["--rule", "absolute", "--cutoff", "0.6"],
                                  ["--rule", "both", "--k", "0", "--cutoff", "0.3"],
                                  ["--rule", "top", "--fraction", "0.5"]])
def test_prune_from_an_apoz_file(rule: list[str], files: Files, tmp_path: Path,
                                 capsys: pytest.CaptureFixture[str]) -> None:
    apoz = tmp_path / "apoz.json"
    assert run_in_process(capsys, "apoz", files.model, "--data", files.data, "-o", apoz,
                          "-q").code == 0
    values = {n: np.asarray(v["apoz"]) for n, v in json.loads(apoz.read_text())["layers"].items()}
    method = rule[1]
    kwargs = {"k": float(rule[3])} if method == "std" else {}
    if "--cutoff" in rule:
        kwargs["cutoff"] = float(rule[rule.index("--cutoff") + 1])
    if "--k" in rule and method == "both":
        kwargs["k"] = float(rule[rule.index("--k") + 1])
    if method == "top":
        kwargs["fraction"] = 0.5
    expected = {n: core_apoz.select_high_apoz(v, method, **kwargs).tolist()
                for n, v in values.items()}
    expected = {n: idx for n, idx in expected.items() if idx}
    run = run_in_process(capsys, "prune", files.model, "--from", apoz, *rule, "--dry-run",
                         "--json")
    if not expected:
        assert run.code == 1 and "selects no neuron" in run.error_line
        return
    assert run.code == 0, run.err
    assert run.json()["requested"] == expected
    only = run_in_process(capsys, "prune", files.model, "--from", apoz, *rule, "--layers",
                          "fc", "--dry-run", "--json")
    if "fc" in expected:
        assert only.json()["requested"] == {"fc": expected["fc"]}


def test_trim_with_report(files: Files, tmp_path: Path,
                          capsys: pytest.CaptureFixture[str]) -> None:
    out, report = tmp_path / "trimmed.keras", tmp_path / "report"
    run = run_in_process(capsys, "trim", files.model, "--train", files.data, "--val",
                         files.data, "-o", out, "--report", report, "--rounds", "1",
                         "--epochs", "1", "--tolerance", "1", "--rule", "top",
                         "--fraction", "0.25", "--json", "-q")
    assert run.code == 0, run.err
    assert run.err == ""  # -q: no progress, no per-round lines, no warnings
    doc = run.json()
    assert [r["round"] for r in doc["rounds"]] == [0, 1] and doc["best"] == 1
    assert doc["layers"] == ["conv1", "fc"]
    saved = keras.saving.load_model(out)
    kept = doc["rounds"][doc["best"]]
    assert saved.count_params() == kept["params"]
    assert {n: w for n, w in _widths(saved).items() if n in doc["layers"]} == kept["widths"]
    widths = {"conv1": [6], "fc": [12]}  # "top" deletes floor(0.25 * width) per round
    for w in widths.values():
        w.append(w[-1] - int(0.25 * w[-1]))
    assert kept["widths"] == {n: w[-1] for n, w in widths.items()}
    assert json.loads((report / "history.json").read_text()) == doc
    text = (report / "report.md").read_text()
    for name in ("widths.png", "accuracy.png", "apoz_first.png", "apoz_last.png"):
        assert f"]({name})" in text
    row = " | ".join(f"{w[1]} (-{w[0] - w[1]})" for w in widths.values())
    assert f"| 1 | {row} | {kept['params']:,} |" in text
    pictures = doc["pictures"]
    assert_picture(pictures["widths"], 1, ["C0", "C1"])
    assert_picture(pictures["accuracy"], 2, [plots.KEPT, plots.SELECTED, plots.THRESHOLD],
                   least=0.0003)  # a few markers and a line
    assert_picture(pictures["apoz_first"], 2, [plots.KEPT, plots.SELECTED])
    assert_picture(pictures["apoz_last"], 2, [plots.KEPT])
    assert [sorted(r["apoz_mean"]) for r in doc["rounds"]] == [["conv1", "fc"]] * 2


def test_interrupted_trim_saves_the_best_round_so_far(
        files: Files, tmp_path: Path, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    # kerasprune.trim returns its best result on Ctrl-C after round 0 (it does not raise):
    # the command saves that model and its report, and exits with 130.
    from kerasprune.cli.commands import trim as trim_command

    watch = trim_command._Watch.__call__

    def interrupted_after_round_1(self: Any, trim_round: Any, model: Any) -> bool:
        watch(self, trim_round, model)
        if trim_round.round == 1:
            raise KeyboardInterrupt  # as Ctrl-C at the end of round 1
        return False

    monkeypatch.setattr(trim_command._Watch, "__call__", interrupted_after_round_1)
    out, report = tmp_path / "trimmed.keras", tmp_path / "report"
    args = ["trim", files.model, "--train", files.data, "--val", files.data, "-o", out,
            "--rounds", "3", "--epochs", "0", "--tolerance", "1", "--rule", "top",
            "--fraction", "0.25", "-q"]
    run = run_in_process(capsys, *args, "--report", report)
    assert run.code == 130 and run.out == ""
    saved = keras.saving.load_model(out)
    assert run.error_line == (
        f"interrupted by KeyboardInterrupt in round 1 (in the callback); saved the best model "
        f"so far, round 1 ({saved.count_params():,} params), as {out}; report: "
        f"{report / 'report.md'}")
    assert {n: w for n, w in _widths(saved).items() if n in ("conv1", "fc")} == {
        "conv1": 6 - int(0.25 * 6), "fc": 12 - int(0.25 * 12)}
    history = json.loads((report / "history.json").read_text())
    assert [r["round"] for r in history["rounds"]] == [0, 1] and history["best"] == 1
    assert history["stopped"].startswith("interrupted by KeyboardInterrupt")

    def interrupted_in_round_0(self: Any, trim_round: Any, model: Any) -> bool:
        raise KeyboardInterrupt  # round 0 is not a result: nothing to save

    monkeypatch.setattr(trim_command._Watch, "__call__", interrupted_in_round_0)
    again = tmp_path / "again.keras"
    run = run_in_process(capsys, *[again if a == out else a for a in args])
    assert run.code == 130 and not again.exists()
    assert run.error_line.endswith("no round was accepted before it, so nothing was written")
