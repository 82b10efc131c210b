"""The command line's parts, in-process: files, data sources, rules, pictures, messages."""

from __future__ import annotations

import importlib
import json
import os
import stat
from pathlib import Path
from typing import Any

import keras
import numpy as np
import pytest
from cli_helpers import assert_picture, residual_model

from kerasprune.cli import data as cli_data
from kerasprune.cli import io, plots
from kerasprune.cli.errors import CliError, one_line
from kerasprune.cli.main import build_parser
from kerasprune.cli.report import RoundRecord, TrimRecord, markdown
from kerasprune.cli.selection import Rule
from kerasprune.core import PruneError
from kerasprune.core import apoz as core_apoz

# --------------------------------------------------------------------------------------------
# Files
# --------------------------------------------------------------------------------------------


def test_atomic_write_replaces_whole_files_only(tmp_path: Path) -> None:
    target = tmp_path / "out.json"
    io.write_json(target, {"a": [1, 2]})
    assert json.loads(target.read_text()) == {"a": [1, 2]}

    def fail(tmp: str) -> None:
        Path(tmp).write_text("half")
        raise OSError(28, "No space left on device")

    with pytest.raises(OSError, match="No space"):
        io.atomic_write(target, fail)
    assert json.loads(target.read_text()) == {"a": [1, 2]}  # the old file, whole
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.json"]  # no temporary left
    with pytest.raises(KeyboardInterrupt):
        io.atomic_write(tmp_path / "new.json", lambda tmp: (_ for _ in ()).throw(
            KeyboardInterrupt()))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.json"]


@pytest.mark.skipif(os.name != "posix", reason="POSIX permission bits")
def test_atomic_write_keeps_usual_permissions(tmp_path: Path) -> None:
    fresh = io.write_text(tmp_path / "fresh.txt", "x")
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(fresh.stat().st_mode) == 0o666 & ~umask  # not mkstemp's 0600
    kept = tmp_path / "kept.txt"
    kept.write_text("old")
    kept.chmod(0o640)
    io.write_text(kept, "new")
    assert stat.S_IMODE(kept.stat().st_mode) == 0o640 and kept.read_text() == "new"


def test_check_output(tmp_path: Path) -> None:
    src = tmp_path / "in.keras"
    src.write_bytes(b"m")
    link = tmp_path / "link.keras"
    link.symlink_to(src)
    with pytest.raises(CliError, match="is an input of this command"):
        io.check_output(link, force=True, inputs=[src])  # the same file by another name
    with pytest.raises(CliError, match="is a directory"):
        io.check_output(tmp_path, force=True)
    assert io.check_output(tmp_path / "new.keras", force=False, suffixes=(".keras",)) == (
        tmp_path / "new.keras")
    with pytest.raises(CliError, match=r"--report .* is a file"):
        io.check_report_dir(src, ["report.md"], force=True)
    made = io.check_report_dir(tmp_path / "a" / "b", ["report.md"], force=False)
    assert made.is_dir()


def test_dumps_keeps_number_lists_on_one_line() -> None:
    data = {"layers": {"fc": {"apoz": [0.5, 1.0], "n": 2}}, "empty": [], "rows": [{"a": 1}]}
    text = io.dumps(data)
    assert json.loads(text) == data
    assert '"apoz": [0.5, 1.0]' in text and '"empty": []' in text
    with pytest.raises(ValueError):
        io.dumps({"x": float("nan")})  # not valid JSON: refused, never written


# --------------------------------------------------------------------------------------------
# Messages and options
# --------------------------------------------------------------------------------------------


def test_one_line() -> None:
    err = PruneError("no layer can be measured:\n- 'a': no ReLU\n- 'b': shared")
    assert one_line(err) == "no layer can be measured: 'a': no ReLU; 'b': shared"
    assert one_line(KeyError("x")) == "KeyError: 'x'"  # unexpected: its type is named
    assert one_line(ValueError("pass allow_output_change=True")) == (
        "pass --allow-output-change")
    long = one_line(ValueError("x" * 5000))
    assert len(long) < 700 and long.endswith("(--debug shows the whole message)")


def test_console_script_is_the_command_line() -> None:
    tomllib = pytest.importorskip("tomllib")
    from cli_helpers import ROOT

    from kerasprune.cli.main import run

    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    module, _, name = scripts["kerasprune"].partition(":")
    assert getattr(importlib.import_module(module), name) is run
    assert importlib.import_module("kerasprune.__main__").run is run


def test_options_parse() -> None:
    parser = build_parser()
    args = parser.parse_args(["prune", "m.keras", "--layer", "a", "--neurons", "0, 5,7",
                              "--layer", "b", "--neurons=-1", "--dry-run", "-q"])
    assert args.layer == ["a", "b"] and args.neurons == [[0, 5, 7], [-1]] and args.quiet
    args = parser.parse_args(["-q", "apoz", "m.keras", "--data", "d", "--rescale", "1/255"])
    assert args.quiet and args.rescale == pytest.approx(1 / 255)  # -q before the command
    for bad in (["--batch-size", "0"], ["--rescale", "-1"], ["--rescale", "a/b"]):
        with pytest.raises(SystemExit):
            parser.parse_args(["apoz", "m.keras", "--data", "d", *bad])


@pytest.mark.parametrize("rule", [Rule("std", k=1.0), Rule("std", k=0.0),
                                  Rule("absolute", cutoff=0.5), Rule("both", k=0.5, cutoff=0.6),
                                  Rule("top", fraction=0.3)])
def test_threshold_separates_what_the_rule_selects(rule: Rule) -> None:
    rng = np.random.default_rng(1)
    for _ in range(20):
        values = rng.random(rng.integers(3, 40))
        chosen = np.zeros(len(values), dtype=bool)
        chosen[rule.select(values)] = True
        threshold = rule.threshold(values)
        if threshold is None:
            assert not chosen.any()
            continue
        if rule.method == "top":
            assert values[chosen].min() == threshold and (values[~chosen] <= threshold).all()
        else:  # everything selected is above it; anything kept that is above it is the
            assert (values[chosen] > threshold).all()  # one neuron high_apoz always keeps
            assert (values[~chosen] > threshold).sum() <= (1 if rule.method == "absolute" else 0)
        np.testing.assert_array_equal(np.flatnonzero(chosen), core_apoz.select_high_apoz(
            values, rule.method, k=rule.k, cutoff=rule.cutoff, fraction=rule.fraction))


# --------------------------------------------------------------------------------------------
# Data
# --------------------------------------------------------------------------------------------


def test_npz_for_one_and_several_inputs(tmp_path: Path) -> None:
    model = residual_model(compiled=False)
    x = np.arange(5 * 64, dtype=np.uint8).reshape(5, 8, 8, 1)
    np.savez(tmp_path / "d.npz", x=x, y=np.arange(5))
    d = cli_data.load_data(str(tmp_path / "d.npz"), model, option="--data", limit=3,
                           rescale=0.5)
    assert d.samples == 3 and d.labeled and d.description == "d.npz (3 samples)"
    np.testing.assert_array_equal(d.inputs(), x[:3].astype(np.float32) * 0.5)
    np.testing.assert_array_equal(d.with_labels()[1], [0, 1, 2])

    a, b = keras.Input((3,), name="a"), keras.Input((2,), name="b")
    two = keras.Model([a, b], keras.layers.Dense(1)(keras.layers.Concatenate()([a, b])))
    np.savez(tmp_path / "two.npz", a=np.zeros((4, 3)), b=np.ones((4, 2)))
    d = cli_data.load_data(str(tmp_path / "two.npz"), two, option="--data")
    assert set(d.inputs()) == {"a", "b"} and not d.labeled
    with pytest.raises(CliError, match="has no labels"):
        d.with_labels()
    np.savez(tmp_path / "one.npz", x=np.zeros((4, 3)))
    with pytest.raises(CliError, match=r"2 inputs, so the file needs one array per input, "
                                       r"named after it \(a, b\); missing: a, b"):
        cli_data.load_data(str(tmp_path / "one.npz"), two, option="--data")


def test_mnist_takes_the_models_input_shape(monkeypatch: pytest.MonkeyPatch) -> None:
    def split(n: int, label: int) -> tuple[np.ndarray, np.ndarray]:
        return np.full((n, 28, 28), label / 10, np.float32), np.full(n, label, np.int64)

    fake = (split(6, 1), split(4, 2), split(2, 3))
    monkeypatch.setattr("kerasprune.datasets.load_mnist", lambda *a, **k: fake)
    for shape in ((28, 28, 1), (784,), (1, 28, 28)):
        model = keras.Sequential([keras.Input(shape), keras.layers.Flatten(),
                                  keras.layers.Dense(2)])
        train = cli_data.load_data("mnist", model, option="--train", split="train")
        assert train.inputs().shape == (6, *shape) and train.description == (
            "MNIST train (6 images)")
        test = cli_data.load_data("mnist:test", model, option="--val", limit=1)
        assert test.inputs().shape == (1, *shape) and list(test.with_labels()[1]) == [3]
    assert cli_data.load_data("mnist", model, option="--data").samples == 4  # val split


def test_image_directory(tmp_path: Path) -> None:
    import matplotlib.image

    rng = np.random.default_rng(0)
    for label in ("cat", "dog"):
        (tmp_path / label).mkdir()
        for i in range(3):
            matplotlib.image.imsave(tmp_path / label / f"{i}.png", rng.random((10, 12, 3)))
    inputs = keras.Input((8, 8, 1))
    model = keras.Model(inputs, keras.layers.Dense(2)(keras.layers.Flatten()(
        keras.layers.Conv2D(4, 3, activation="relu")(inputs))))
    d = cli_data.load_data(str(tmp_path), model, option="--val", batch_size=4, labels=True,
                           rescale=1 / 255)
    assert d.description == f"{tmp_path.name}/ (6 images, 2 classes)" and d.labeled
    batches = list(d.with_labels().as_numpy_iterator())
    assert [b[0].shape for b in batches] == [(4, 8, 8, 1), (2, 8, 8, 1)]  # grayscale, resized
    assert min(b[0].min() for b in batches) >= 0.0 and max(b[0].max() for b in batches) <= 1.0
    assert sorted(np.concatenate([b[1] for b in batches]).tolist()) == [0, 0, 0, 1, 1, 1]
    limited = cli_data.load_data(str(tmp_path), model, option="--data", batch_size=4, limit=5)
    assert sum(len(b[0]) for b in limited.inputs().as_numpy_iterator()) == 5
    flat = keras.Sequential([keras.Input((64,)), keras.layers.Dense(2)])
    with pytest.raises(CliError, match="needs a model with one image input"):
        cli_data.load_data(str(tmp_path), flat, option="--data")
    empty = tmp_path / "cat" / "none"
    empty.mkdir()
    with pytest.raises(CliError, match="has no subdirectories"):
        cli_data.load_data(str(empty), model, option="--train", labels=True)


def test_apoz_command_on_images(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import matplotlib.image
    from cli_helpers import run_in_process

    rng = np.random.default_rng(0)
    images = tmp_path / "images"
    for label in ("a", "b"):
        (images / label).mkdir(parents=True)
        for i in range(4):
            matplotlib.image.imsave(images / label / f"{i}.png", rng.random((8, 8, 3)))
    residual_model().save(tmp_path / "m.keras")
    run = run_in_process(capsys, "apoz", tmp_path / "m.keras", "--data", images, "--rescale",
                         "1/255", "--json", "-q")
    assert run.code == 0, run.err
    doc = run.json()
    assert doc["data"]["samples"] == 8 and list(doc["layers"]) == ["conv1", "fc"]
    assert all(layer["total"] > 0 for layer in doc["layers"].values())


# --------------------------------------------------------------------------------------------
# Pictures and the report
# --------------------------------------------------------------------------------------------


def test_apoz_histograms_one_panel_per_layer(tmp_path: Path) -> None:
    rng = np.random.default_rng(2)
    layers = {f"layer{i}": rng.random(10 + 5 * i) for i in range(5)}
    picture = plots.apoz_histograms(layers, Rule("absolute", cutoff=0.5), tmp_path / "a.png",
                                    "five layers")
    assert_picture(picture.as_dict(), 5, [plots.KEPT, plots.SELECTED, plots.THRESHOLD])
    boxes = picture.boxes  # a grid of 3 columns: two rows
    assert len({b[1] for b in boxes}) == 2 and len({b[0] for b in boxes}) == 3
    svg = plots.apoz_histograms(layers, Rule(), tmp_path / "a.svg", "svg")
    assert Path(svg.path).read_text().startswith("<?xml") and svg.panels == 5


def _record(pictures: dict[str, Any] | None = None) -> TrimRecord:
    def row(r: int, w: int, score: float, accepted: bool = True) -> RoundRecord:
        return RoundRecord(r, {"fc": w}, {"fc": 0 if r == 0 else 2}, 100 * w, 300 * w, score,
                           {"accuracy": score, "loss": 1 - score}, accepted, r and 1,
                           1.5, {"fc": 0.3})

    return TrimRecord(
        model="m.keras", output="o.keras", command="kerasprune trim m.keras", date="today",
        version="0", backend="jax", data={"train": "t", "val": "v"}, settings={"k": 1},
        metric="accuracy", floor=0.89, best=1, stopped="accuracy fell", layers=["fc"],
        rounds=[row(0, 10, 0.9), row(1, 8, 0.9), row(2, 6, 0.8, accepted=False)],
        before=[{"name": "fc", "kind": "Dense", "width": 10, "params": 1000, "flops": 3000},
                {"name": "flatten", "kind": "Flatten", "width": None, "params": 0,
                 "flops": 0}],
        after=[{"name": "fc", "kind": "Dense", "width": 8, "params": 800, "flops": 2400},
               {"name": "flatten", "kind": "Flatten", "width": None, "params": 0,
                "flops": 0}],
        pictures=pictures or {})


def test_report_markdown() -> None:
    text = markdown(_record({"w": {"file": "widths.png", "caption": "Widths | per round"}}))
    assert "- **params 1,000 → 800** (1.25x smaller), FLOPs 3.00k → 2.40k (1.25x fewer)" in text
    assert "| `fc` | Dense | 10 → 8 | 1,000 → 800 | 3.00k → 2.40k |" in text
    assert "`flatten`" not in text  # layers without weights are left out of the table
    assert "| 1 | 8 (-2) | 800 | 2.40k | 0.9000 | accepted, **kept** | 1 | 1.5 s |" in text
    assert "| 2 | 6 (-2) | 600 | 1.80k | 0.8000 | rejected | 1 | 1.5 s |" in text
    assert "![Widths | per round](widths.png)" in text
    assert "kept round 1 of 2 run; stopped: accuracy fell" in text


def test_round_pictures(tmp_path: Path) -> None:
    record = _record()
    rounds = [r.round for r in record.rounds]
    accepted = [r.accepted for r in record.rounds]
    widths = plots.widths_per_round(rounds, {"fc": [10, 8, 6], "conv": [4, 4, 3]}, accepted,
                                    1, tmp_path / "w.png", "widths")
    assert_picture(widths.as_dict(), 1, ["C0", "C1"])
    accuracy = plots.accuracy_vs_cost(rounds, [1000, 800, 600], [3000, 2400, 1800],
                                      [0.9, 0.9, 0.8], accepted, 1, "accuracy", 0.89,
                                      tmp_path / "a.png", "accuracy")
    assert_picture(accuracy.as_dict(), 2, [plots.KEPT, plots.SELECTED, plots.THRESHOLD],
                   least=0.0003)
