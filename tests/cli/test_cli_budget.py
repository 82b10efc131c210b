"""prune to a target, stats and sensitivity, run in-process through main() (every backend).

What the command writes is checked against the library called directly and against the
zeroing oracle (tests/keras/oracle.py); test_cli_process.py runs one chain as a process.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import keras
import numpy as np
import pytest
from cli_helpers import Files, arrays, assert_oracle, assert_picture, run_in_process

import kerasprune
from kerasprune.cli import plots
from kerasprune.cli.errors import EXIT_ERROR, EXIT_USAGE


def _model(files: Files) -> keras.Model:
    return keras.saving.load_model(files.model)


def _request(plan: Any) -> dict[str, list[int]]:
    return {n: sorted(int(i) for i in idx) for n, idx in plan.request.items() if len(idx)}


def _widths(model: keras.Model) -> dict[str, int]:
    return {c.name: c.width for c in kerasprune.costs(model) if c.width is not None}


# --------------------------------------------------------------------------------------------
# prune to a target
# --------------------------------------------------------------------------------------------


def test_flops_target_saves_the_librarys_plan(files: Files, tmp_path: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "half.keras"
    dry = run_in_process(capsys, "prune", files.model, "--flops", "0.5", "--dry-run", "--json",
                         "-o", out)
    assert dry.code == 0, dry.err
    assert not out.exists()  # a dry run writes nothing
    run = run_in_process(capsys, "prune", files.model, "--flops", "0.5", "-o", out, "--json",
                         "-q")
    assert run.code == 0 and run.err == ""
    doc, plan_doc = run.json(), dry.json()
    expected = kerasprune.prune(_model(files), flops=0.5, dry_run=True, verbose=0)
    assert doc["deleted"] == plan_doc["deleted"] == _request(expected) != {}
    assert plan_doc["plan"]["met"] and plan_doc["after"] == doc["after"]
    assert doc["after"]["flops"] <= 0.5 * doc["before"]["flops"]
    assert doc["output"] == str(out) and doc["steps"][0]["deleted"] == doc["deleted"]
    assert_oracle(files.model, out, doc["deleted"])
    saved = keras.saving.load_model(out)
    assert saved.get_compile_config()["loss"] == _model(files).get_compile_config()["loss"]

    table = run_in_process(capsys, "prune", files.model, "--flops", "0.5", "--dry-run")
    assert table.code == 0
    lines = table.out.splitlines()
    assert lines[0] == ("deleting neurons of 1 layer (lowest l1 scores, global ranking, to "
                        "flops 0.5 of the original):")
    assert lines[1] == f"  conv1: {len(doc['deleted']['conv1'])} of 6 {doc['deleted']['conv1']}"
    assert "target: flops <= 11.5k (50.0% of 23k): met" in table.out
    assert lines[-1].startswith("dry run: nothing written; params 2.10k -> ")


def test_data_criterion_scope_and_limits(files: Files, tmp_path: Path,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "taylor.keras"
    run = run_in_process(
        capsys, "prune", files.model, "--params", "0.85", "--criterion", "taylor", "--data",
        files.data, "--scope", "uniform", "--round-to", "2", "--min-width", "conv1=4",
        "--max-fraction", "0.5", "--max-fraction", "fc=0.25", "--protect", "conv2a", "out",
        "--aggregate", "max", "--normalize", "max", "-o", out, "--json", "-q")
    assert run.code == 0, run.err
    doc = run.json()
    model = _model(files)
    x, y = arrays()
    expected = kerasprune.prune(
        model, params=0.85, criterion="taylor", data=(x, y), scope="uniform", round_to=2,
        min_width={"conv1": 4}, max_fraction={"fc": 0.25, "conv1": 0.5, "conv2a": 0.5,
                                              "conv2b": 0.5, "out": 0.5},
        protect=["conv2a", "out"], aggregate="max", normalize="max", dry_run=True, verbose=0)
    assert doc["deleted"] == _request(expected)
    widths = _widths(model)
    left = {n: widths[n] - len(doc["deleted"].get(n, [])) for n in widths}
    assert left["conv2a"] == left["conv2b"] == 8  # protected, with its coupled conv2b
    assert left["conv1"] >= 4 and left["conv1"] % 2 == 0 and left["fc"] >= 9
    assert doc["after"]["params"] <= 0.85 * doc["before"]["params"]
    assert_oracle(files.model, out, doc["deleted"])


@pytest.mark.parametrize("criterion", ["l2", "bn_scale", "random", "apoz", "activation"])
def test_every_criterion_prunes_by_the_oracle(criterion: str, files: Files, tmp_path: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / f"{criterion}.keras"
    data = ["--data", files.data] if criterion in ("apoz", "activation") else []
    run = run_in_process(capsys, "prune", files.model, "--params", "1500", "--criterion",
                         criterion, *data, "--best-effort", "-o", out, "--json", "-q")
    assert run.code == 0, run.err
    doc = run.json()
    x, _ = arrays()
    expected = kerasprune.prune(_model(files), params=1500, criterion=criterion,
                                data=x if data else None, strict=False, dry_run=True,
                                verbose=0)
    assert doc["deleted"] == _request(expected)
    if doc["deleted"]:
        assert_oracle(files.model, out, doc["deleted"])
    else:  # bn_scale: no BatchNormalization in the model, nothing scored, nothing deleted
        assert criterion == "bn_scale" and doc["after"] == doc["before"]


def test_iterative_steps_fine_tune_and_evaluate(files: Files, tmp_path: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "steps.keras"
    run = run_in_process(capsys, "prune", files.model, "--flops", "0.6", "--iterative-steps",
                         "2", "--train", files.data, "--epochs", "1", "--learning-rate",
                         "0.001", "--val", files.data, "--batch-size", "16", "-o", out,
                         "--json", "-q")
    assert run.code == 0, run.err
    doc = run.json()
    assert [s["step"] for s in doc["steps"]] == [1, 2]
    assert all(s["epochs"] == 1 for s in doc["steps"])
    assert doc["metric"] == "accuracy"
    assert set(doc["metrics"]["before"]) >= {"accuracy", "loss"}
    assert doc["metrics"]["after"] == doc["steps"][-1]["metrics"]
    saved = keras.saving.load_model(out)
    widths, after = _widths(_model(files)), _widths(saved)
    # "deleted" numbers the original's neurons across both steps
    assert after == {n: w - len(doc["deleted"].get(n, [])) for n, w in widths.items()}
    for name, idx in doc["deleted"].items():
        assert idx == sorted(set(idx)) and all(0 <= i < widths[name] for i in idx)
    step_counts: dict[str, int] = {}
    for s in doc["steps"]:
        for name, idx in s["deleted"].items():
            step_counts[name] = step_counts.get(name, 0) + len(idx)
    assert step_counts == {n: len(idx) for n, idx in doc["deleted"].items()}
    assert doc["after"]["flops"] <= 0.6 * doc["before"]["flops"]
    assert doc["after"]["params"] == saved.count_params()


def test_measured_speedup(files: Files, tmp_path: Path,
                          capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "fast.keras"
    run = run_in_process(capsys, "prune", files.model, "--flops", "0.5", "--speedup",
                         "--speedup-runners", "compiled", "--speedup-batch-sizes", "2,4",
                         "--repeats", "2", "--tflite", "no", "-o", out, "-q")
    assert run.code == 0, run.err
    assert "speed-up of pruned 'tiny' over original 'tiny'" in run.out
    last = run.out.splitlines()[-1]
    assert last.startswith(f"saved {out}: params ")
    assert "measured speed-up " in last and "(compiled, batch 2)" in last
    assert "(compiled, batch 4)" in last and "x fewer FLOPs" in last
    doc = run_in_process(capsys, "prune", files.model, "--flops", "0.5", "--speedup",
                         "--speedup-runners", "compiled", "--speedup-batch-sizes", "2",
                         "--repeats", "2", "--tflite", "no", "--dry-run", "--json")
    assert doc.code == 0 and "speedup" not in doc.json()  # a dry run times nothing


def test_options_reach_the_library(files: Files, tmp_path: Path,
                                   capsys: pytest.CaptureFixture[str],
                                   monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[dict[str, Any]] = []

    class StopError(Exception):
        pass

    def fake(model: Any, **kwargs: Any) -> Any:
        calls.append(kwargs)
        raise StopError

    monkeypatch.setattr(kerasprune, "prune", fake)
    run = run_in_process(capsys, "prune", files.model, "--latency", "0.8", "--train",
                         files.data, "--epochs", "3", "--iterative-steps", "2",
                         "--learning-rate", "0.01", "--speedup", "--speedup-batch-sizes",
                         "1,8", "--speedup-runners", "predict", "compiled", "--tflite", "yes",
                         "--repeats", "3", "--seed", "5", "--criterion", "random",
                         "--min-width", "2", "--min-width", "fc=6", "-o", tmp_path / "o.keras")
    assert run.code == EXIT_ERROR and "StopError" in run.error_line
    (kwargs,) = calls
    assert kwargs["latency"] == 0.8 and kwargs["criterion"] == "random" and kwargs["seed"] == 5
    assert kwargs["epochs"] == 3 and kwargs["iterative_steps"] == 2
    assert kwargs["learning_rate"] == 0.01 and kwargs["strict"] is True
    assert kwargs["speedup"] == {"batch_sizes": (1, 8), "runners": ("predict", "compiled"),
                                 "tflite": True, "repeats": 3}
    assert kwargs["min_width"] == {"conv1": 2, "conv2b": 2, "conv2a": 2, "fc": 6, "out": 2}
    assert kwargs["max_fraction"] == 1.0 and "protect" not in kwargs
    x, _ = kwargs["train_data"]
    np.testing.assert_array_equal(x, arrays()[0])
    assert "data" not in kwargs and "val_data" not in kwargs


def test_prune_errors(files: Files, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    def error(*args: Any, code: int = EXIT_ERROR) -> str:
        run = run_in_process(capsys, "prune", files.model, *args)
        assert run.code == code, run
        assert run.out == ""
        return run.error_line

    dry = "--dry-run"
    assert error("--flops", "0.5", "--criterion", "nope", dry, code=EXIT_USAGE) == (
        "--criterion nope: unknown criterion; the criteria are random, l1, l2, bn_scale, "
        "apoz, activation, taylor")
    assert error("--flops", "0.5", "--criterion", "taylor", dry, code=EXIT_USAGE).startswith(
        "--criterion taylor is measured from gradients of the loss, on data with labels: "
        "give --data DATA")
    assert error("--flops", "0.5", "--criterion", "activation", dry,
                 code=EXIT_USAGE).startswith("--criterion activation is measured from "
                                             "activations, on data: give --data DATA")
    assert error("--flops", "0.5", "--data", files.data, dry, code=EXIT_USAGE).startswith(
        "--criterion l1 reads weights, not data: leave --data out")
    assert error("--flops", "0.5", "--params", "0.5", dry, code=EXIT_USAGE) == (
        "give one target, not --flops and --params")
    assert error("--layer", "fc", "--neurons", "0", "--criterion", "l2", dry,
                 code=EXIT_USAGE) == ("--criterion chooses neurons by "
                                      "--flops/--params/--latency, not by --layer/--neurons")
    assert error("--flops", "0.5", "--rule", "top", "--fraction", "0.3", dry,
                 code=EXIT_USAGE) == ("--rule, --fraction choose neurons by --from, not by "
                                      "--flops/--params/--latency")
    assert error("--flops", "0.5", "--iterative-steps", "2", "-o", tmp_path / "o.keras",
                 code=EXIT_USAGE).startswith("--iterative-steps 2 fine-tunes between steps")
    assert error("--flops", "0.5", "--epochs", "2", dry, code=EXIT_USAGE) == (
        "--epochs 2 fine-tunes, which needs --train DATA")
    assert error("--flops", "0.5", "--tflite", "no", dry, code=EXIT_USAGE) == (
        "--tflite set how --speedup times the models: add --speedup")
    assert error("--flops", "0.5", "--min-width", "2", "--min-width", "3", dry,
                 code=EXIT_USAGE).startswith("--min-width is given 2 times for every layer")
    assert error("--flops", "0.5", "--min-width", "conv9=3", dry).startswith(
        "--min-width conv9=...: the model has no layer 'conv9' with neurons (it has conv1, ")
    assert error("--flops", "0.5", "--protect", "conv9", dry).startswith(
        "--protect names 'conv9', which is not a layer of the model; did you mean 'conv1'")
    assert error("--params", "5000000", dry) == (
        "the target params <= 5M is above 100% of the original (2.1k parameters): there is "
        "nothing to prune; aim lower")
    planned = error("--flops", "0.01", dry)
    assert planned.startswith("cannot meet the target flops <= 230.1 (1.0% of 23k): the most "
                              "these limits allow leaves ")
    assert planned.endswith("Loosen --min-width, --max-fraction, --protect, --round-to or a "
                            "--limits file, aim higher, or pass --best-effort.")
    for args, message in (
            (["--flops", "1.5"], "argument --flops: 1.5 is above 100% of the original; give "
                                 "a share in (0, 1] (0.5 keeps half) or a whole number of "
                                 "FLOPs"),
            (["--latency", "2"], "argument --latency: 2 is above 100% of the original; give "
                                 "a share of the original's measured time, in (0, 1]"),
            (["--params", "-3"], "argument --params: must be positive, got '-3'"),
            (["--max-fraction", "conv1=0"], "argument --max-fraction: must be a share in "
                                            "(0, 1], got '0'"),
            (["--scope", "local"], "argument --scope: invalid choice: 'local'")):
        with pytest.raises(SystemExit) as exit_:  # argparse's own: usage and one error line
            run_in_process(capsys, "prune", files.model, *args, dry)
        assert exit_.value.code == EXIT_USAGE
        assert message in capsys.readouterr().err
    raw = tmp_path / "raw.keras"
    from cli_helpers import residual_model

    residual_model(compiled=False).save(raw)
    run = run_in_process(capsys, "prune", raw, "--flops", "0.5", "--criterion", "taylor",
                         "--data", files.data, dry)
    assert run.code == EXIT_ERROR and run.error_line == (
        f"{raw} was saved without compile settings, and --criterion taylor differentiates "
        "its loss: pass --loss (and --optimizer, --metrics), or save it compiled")
    labels = tmp_path / "x_only.npz"
    np.savez(labels, x=arrays()[0])
    assert error("--flops", "0.5", "--criterion", "taylor", "--data", labels, dry).startswith(
        f"--data {labels}: has no labels")
    assert not (tmp_path / "o.keras").exists()


# --------------------------------------------------------------------------------------------
# stats
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("criterion", ["activation", "taylor", "apoz"])
def test_stats_of_measured_criteria(criterion: str, files: Files, tmp_path: Path,
                                    capsys: pytest.CaptureFixture[str]) -> None:
    out, png = tmp_path / "stats.json", tmp_path / "stats.png"
    run = run_in_process(capsys, "stats", files.model, "--criterion", criterion, "--data",
                         files.data, "-o", out, "--plot", png, "--fraction", "0.25", "--json")
    assert run.code == 0, run.err
    doc = run.json()
    assert json.loads(out.read_text()) == {k: v for k, v in doc.items() if k != "plot"}
    x, y = arrays()
    expected = kerasprune.get_stats(_model(files), (x, y) if criterion == "taylor" else x,
                                    criterion, verbose=0)
    assert list(doc["layers"]) == list(expected) != []
    for name, values in expected.results().items():
        layer = doc["layers"][name]
        np.testing.assert_allclose(layer["values"], values, rtol=1e-6, atol=1e-9)
        # scores: higher keeps; apoz's is 1 - APoZ, the others' the statistic itself
        want = 1 - np.asarray(values) if criterion == "apoz" else values
        np.testing.assert_allclose(layer["scores"], want, rtol=1e-6, atol=1e-9)
        n = math.floor(0.25 * len(values))
        assert layer["selected"] == sorted(np.argsort(want, kind="stable")[:n].tolist())
        assert layer["measured_at"] == expected.measured_at[name]
    if criterion == "apoz":  # layers without a ReLU after them: said why
        assert set(doc["skipped"]) == {"conv2a", "conv2b"}
    assert_picture(doc["plot"], len(doc["layers"]), [plots.KEPT, plots.SELECTED,
                                                     plots.THRESHOLD])


def test_stats_of_weight_criteria(files: Files, capsys: pytest.CaptureFixture[str]) -> None:
    model = _model(files)
    for criterion, norm in (("l1", lambda k: np.abs(k).sum(axis=0)),
                            ("l2", lambda k: np.sqrt((k ** 2).sum(axis=0)))):
        run = run_in_process(capsys, "stats", files.model, "--criterion", criterion, "--json")
        assert run.code == 0, run.err
        doc = run.json()
        assert doc["data"] == {} and list(doc["layers"]) == ["conv1", "conv2b", "conv2a", "fc"]
        for name, layer in doc["layers"].items():
            kernel = keras.ops.convert_to_numpy(model.get_layer(name).kernel)
            want = norm(kernel.reshape(-1, kernel.shape[-1]))
            np.testing.assert_allclose(layer["values"], want, rtol=1e-5)
            assert layer["values"] == layer["scores"] and layer["selected"] == []
    table = run_in_process(capsys, "stats", files.model, "--criterion", "l1")
    assert table.out.splitlines()[0] == "L1 norm (l1) of model 'tiny'"
    assert "measured at" not in table.out
    random = [run_in_process(capsys, "stats", files.model, "--criterion", "random", "--seed",
                             str(seed), "--json").json()["layers"]["fc"]["scores"]
              for seed in (1, 1, 2)]
    assert random[0] == random[1] != random[2]


def test_stats_errors(files: Files, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    def error(*args: Any, code: int = EXIT_USAGE) -> str:
        run = run_in_process(capsys, "stats", files.model, *args)
        assert run.code == code, run
        return run.error_line

    assert error("--criterion", "taylor").startswith(
        "--criterion taylor is measured from gradients of the loss")
    assert error("--criterion", "l2", "--data", files.data).startswith(
        "--criterion l2 reads weights, not data")
    assert error("--criterion", "magnitude").startswith("--criterion magnitude: unknown "
                                                        "criterion; the criteria are random, ")
    assert error("--criterion", "l1", "--fraction", "1") == (
        "--fraction 1 would mark every neuron; give a share below 1")
    assert error("--criterion", "l1", "--plot", tmp_path / "s.gif", code=EXIT_ERROR).endswith(
        "the file name must end in .png, .svg, .pdf")
    assert error("--criterion", "apoz", "--data", files.data, "--layers", "conv2a",
                 code=EXIT_ERROR).startswith("cannot measure the APoZ of layer 'conv2a'")


# --------------------------------------------------------------------------------------------
# sensitivity, and prune --limits
# --------------------------------------------------------------------------------------------


def test_sensitivity_table_file_and_limits(files: Files, tmp_path: Path,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    # (the plot is checked in test_cli_process.py, where --json reports its panels)
    limits, out = tmp_path / "limits.json", tmp_path / "sens.json"
    run = run_in_process(capsys, "sensitivity", files.model, "--data", files.data,
                         "--criterion", "l1", "--fractions", "0.25,0.75", "--limits-out",
                         limits, "--tolerance", "0.02", "-o", out, "-q")
    assert run.code == 0, run.err
    doc = json.loads(out.read_text())
    model = _model(files)
    x, y = arrays()
    # the library on one group (each cell is a model built and evaluated: seconds on TF)
    report = kerasprune.sensitivity(model, (x, y), criterion="l1", fractions=[0.25, 0.75],
                                    layers=["fc"], verbose=0)
    groups = {g["layers"][0]: g for g in doc["groups"]}
    assert list(groups) == ["conv1", "conv2b", "fc"] and report.groups == (("fc",),)
    np.testing.assert_allclose(groups["fc"]["values"], report.values[0], atol=1e-6)
    assert groups["fc"]["deleted"] == report.deleted[0].tolist() == [3, 9]
    assert doc["baseline"] == pytest.approx(report.baseline)
    # the limits: per group, the largest share whose loss (and every smaller one's) is
    # within the tolerance; groups that cannot lose their first share are protected
    written = json.loads(limits.read_text())
    assert written["format"] == "kerasprune.limits" and written["tolerance"] == 0.02
    shares: dict[str, float] = {}
    protect = ["out"]
    for g in doc["groups"]:
        best = 0.0
        for deleted, value in zip(g["deleted"], g["values"], strict=True):
            if value is None:
                continue
            if doc["baseline"] - value > 0.02 + 1e-12:
                break
            best = deleted / g["width"]
        for layer in g["layers"]:
            if best > 0:
                shares[layer] = best
            else:
                protect.append(layer)
    assert written["max_fraction"] == shares == doc["limits"]["max_fraction"]
    assert written["protect"] == protect == doc["limits"]["protect"]
    lines = run.out.splitlines()
    assert lines[0] == ("sensitivity of accuracy to deleting a share of each group by 'l1', "
                        f"without fine-tuning (baseline {report.baseline:.4f})")
    fc = next(line.split() for line in lines if line.startswith("fc "))
    assert fc == ["fc", "12", *(f"{v:.4f}" for v in report.values[0])]
    for name, share in shares.items():
        assert f"  {name}: at most {share:.0%} of its neurons" in run.out
    assert f"  protected (may lose none): {', '.join(protect)}" in run.out

    # prune --limits reads them back: no layer loses more than its share, protected ones none
    pruned = run_in_process(capsys, "prune", files.model, "--flops", "0.7", "--limits", limits,
                            "--best-effort", "--dry-run", "--json")
    assert pruned.code == 0, pruned.err
    expected = kerasprune.prune(model, flops=0.7, max_fraction=written["max_fraction"],
                                protect=written["protect"], strict=False, dry_run=True,
                                verbose=0)
    deleted = pruned.json()["deleted"]
    assert deleted == _request(expected)
    widths = _widths(model)
    for name, idx in deleted.items():
        assert name not in written["protect"]
        assert len(idx) <= math.floor(written["max_fraction"][name] * widths[name] + 1e-9)
    # a stricter --max-fraction wins over the file's
    stricter = run_in_process(capsys, "prune", files.model, "--flops", "0.7", "--limits",
                              limits, "--max-fraction", "0.2", "--best-effort", "--dry-run",
                              "--json")
    for name, idx in stricter.json()["deleted"].items():
        assert len(idx) <= math.floor(0.2 * widths[name] + 1e-9)


def test_sensitivity_and_limits_errors(files: Files, tmp_path: Path,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    def error(command: str, *args: Any, code: int = EXIT_ERROR) -> str:
        run = run_in_process(capsys, command, files.model, *args)
        assert run.code == code, run
        return run.error_line

    data = ["--data", files.data]
    assert error("sensitivity", *data, "--criterion", "l1", "--stats-data", files.data,
                 code=EXIT_USAGE).startswith("--criterion l1 reads weights, not data: leave "
                                             "--stats-data out")
    assert error("sensitivity", *data, "--criterion", "nope", code=EXIT_USAGE).startswith(
        "--criterion nope: unknown criterion")
    assert error("sensitivity", *data, "--tolerance", "-1", code=EXIT_USAGE).startswith(
        "--tolerance -1.0: must be a number >= 0")
    same = tmp_path / "same.json"
    assert error("sensitivity", *data, "-o", same, "--limits-out", same,
                 code=EXIT_USAGE) == "-o, --limits-out and --plot name the same file"
    assert error("sensitivity", *data, "--limits-out", tmp_path / "l.txt").endswith(
        "the file name must end in .json")
    no_y = tmp_path / "no_y.npz"
    np.savez(no_y, x=arrays()[0])
    assert error("sensitivity", "--data", no_y).startswith(f"--data {no_y}: has no labels")
    with pytest.raises(SystemExit):
        run_in_process(capsys, "sensitivity", *data, "--fractions", "0.5,0.2")
    assert "expected increasing shares in (0, 1]" in capsys.readouterr().err

    def limits_file(name: str, content: Any) -> Path:
        path = tmp_path / name
        path.write_text(content if isinstance(content, str) else json.dumps(content))
        return path

    head = {"format": "kerasprune.limits", "version": 1, "model": {"name": "other"}}
    prune = ["prune", "--flops", "0.5", "--dry-run", "--limits"]
    for content, message in (
            ("{", "not a JSON file (Expecting property name enclosed in double quotes: line "
                  "1 column 2 (char 1))"),
            ({"format": "kerasprune.apoz"}, "not a limits file (write one with kerasprune "
                                            "sensitivity MODEL.keras --data DATA --limits-out "
                                            "limits.json)"),
            ({**head, "version": 9}, "limits file version 9; this kerasprune reads version 1"),
            ({**head, "max_fraction": [0.5], "protect": []},
             "'max_fraction' must map layer names to shares in (0, 1]"),
            ({**head, "max_fraction": {"conv1": 1.5}, "protect": []},
             "'max_fraction' of layer 'conv1' is 1.5; a share in (0, 1] is expected"),
            ({**head, "max_fraction": {}, "protect": "out"},
             "'protect' must be a list of layer names")):
        path = limits_file("bad.json", content)
        assert error(*prune, path) == f"--limits {path}: {message}"
    foreign = limits_file("foreign.json", {**head, "max_fraction": {"conv7": 0.5},
                                           "protect": []})
    assert error(*prune, foreign) == (f"--limits {foreign}: layer 'conv7' is not in model "
                                      "'tiny'; the limits were measured on model 'other'")
    none = tmp_path / "none.json"
    assert error(*prune, none) == f"--limits {none}: no such file"
