"""kerasprune.sensitivity: per group and share, the metric of the pruned model (checked
against an independent evaluation), the limits it suggests, the table and the plot; and the
criteria experiment's smoke mode (kerasprune.examples.criteria_mnist --tiny)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import keras
import numpy as np
import pytest

import kerasprune
from kerasprune.adapters.keras.sensitivity import SensitivityReport, sensitivity
from kerasprune.core.graph import PruneError

L = keras.layers


def trained(seed: int = 0) -> tuple[keras.Model, tuple[np.ndarray, np.ndarray]]:
    """A small CNN fitted a little on a learnable task; conv filter 0 is dead (zero kernel,
    negative bias, ReLU): deleting it changes nothing."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((96, 6, 6, 1)).astype("float32")
    y = (x[:, :3].mean(axis=(1, 2, 3)) > x[:, 3:].mean(axis=(1, 2, 3))).astype("int64")
    keras.utils.set_random_seed(seed)
    model = keras.Sequential([
        keras.Input((6, 6, 1)), L.Conv2D(8, 3, activation="relu", name="conv"),
        L.Flatten(name="flatten"), L.Dense(10, activation="relu", name="fc"),
        L.Dense(2, name="out")], name="small")
    model.compile(keras.optimizers.Adam(0.01),
                  keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  metrics=["accuracy"])
    model.fit(x, y, epochs=5, batch_size=32, verbose=0)
    kernel, bias = model.get_layer("conv").get_weights()
    kernel[..., 0] = 0.0
    bias[0] = -1.0
    model.get_layer("conv").set_weights([kernel, bias])
    return model, (x, y)


@pytest.fixture(scope="module")
def small() -> tuple[keras.Model, tuple[np.ndarray, np.ndarray]]:
    """One trained model for the module (sensitivity only reads it)."""
    return trained()


def test_each_cell_is_the_metric_of_the_pruned_model(small: Any) -> None:
    model, (x, y) = small
    before = [np.array(w) for w in model.get_weights()]
    report = sensitivity(model, (x, y), criterion="l1", fractions=(0.125, 0.5), verbose=0)
    assert report.groups == (("conv",), ("fc",)) and report.widths == (8, 10)
    assert report.metric == "accuracy" and report.mode == "max"
    baseline = model.evaluate(x, y, verbose=0, return_dict=True)["accuracy"]
    assert report.baseline == pytest.approx(baseline)
    assert report.deleted.tolist() == [[1, 4], [1, 5]]
    # 1/8 of conv by L1 is the dead filter: the pruned model predicts the same.
    assert report.values[0, 0] == pytest.approx(baseline)
    # An independent evaluation of one cell: the 5 fc neurons with the smallest L1 norm.
    kernel = model.get_layer("fc").get_weights()[0]
    smallest = np.argsort(np.abs(kernel).sum(axis=0), kind="stable")[:5]
    pruned = kerasprune.delete_neurons(model, "fc", smallest)
    pruned.compile(loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                   metrics=["accuracy"])
    value = pruned.evaluate(x, y, verbose=0, return_dict=True)["accuracy"]
    assert report.values[1, 1] == pytest.approx(value)
    for a, b in zip(model.get_weights(), before, strict=True):
        np.testing.assert_array_equal(a, b)


def test_limits_table_and_plot(small: Any, tmp_path: Path) -> None:
    model, (x, y) = small
    report = sensitivity(model, (x, y), criterion="activation", verbose=0)
    assert len(report.fractions) == 9 and report.values.shape == (2, 9)
    text = report.table()
    assert "conv" in text and "fc" in text and "baseline" in text and "90%" in text
    limits = report.limits(1.0)  # any loss is tolerated: everything can go as far as tested
    assert limits["protect"] == ["out"]
    assert limits["max_fraction"] == {"conv": 7 / 8, "fc": 0.9}
    smaller = kerasprune.prune(model, flops=0.6, **report.limits(0.05), dry_run=True,
                               strict=False, verbose=0)
    allowed = report.max_fractions(0.05)
    for layer in smaller.layers:
        if layer.name in allowed and layer.width_before:
            assert layer.width_before - layer.width_after <= allowed[layer.name] * \
                layer.width_before + 1e-9
    path = tmp_path / "sensitivity.png"
    figure = report.plot(str(path))
    assert path.stat().st_size > 1000 and figure.axes[0].get_xlabel().startswith("neurons")


def test_max_fractions_stop_at_the_first_share_out_of_tolerance() -> None:
    report = SensitivityReport(
        metric="loss", mode="min", baseline=1.0, fractions=(0.25, 0.5, 0.75),
        groups=(("a",), ("b", "c"), ("d",)), widths=(4, 4, 4),
        deleted=np.array([[1, 2, 3], [1, 2, 3], [0, 2, 3]]),
        values=np.array([[1.0, 1.05, 1.01], [1.2, 1.0, 1.0], [np.nan, 1.0, 2.0]]),
        criterion="l1")
    assert report.max_fractions(0.02) == {"a": 0.25, "d": 0.5}
    assert report.limits(0.02) == {"max_fraction": {"a": 0.25, "d": 0.5},
                                   "protect": ["b", "c"]}
    assert report.max_fractions(0.2) == {"a": 0.75, "b": 0.75, "c": 0.75, "d": 0.5}
    with pytest.raises(ValueError, match="tolerance"):
        report.max_fractions(-1)


@pytest.mark.parametrize("kwargs, error, match", [
    ({"fractions": (0.5, 0.2)}, ValueError, "fractions must be increasing"),
    ({"fractions": (0.0, 0.5)}, ValueError, "fractions must be increasing"),
    ({"criterion": "nope"}, ValueError, "unknown criterion"),
    ({"criterion": "taylor", "stats_data": "x"}, ValueError, "stats_data has no labels"),
    ({"layers": "nope"}, PruneError, "no layer named 'nope'"),
    ({"metric": "auc"}, ValueError, "metric 'auc'"),
    ({"data": "x"}, ValueError, "data has no labels"),
])
def test_bad_input(small: Any, kwargs: dict[str, Any], error: type, match: str) -> None:
    model, (x, y) = small
    values = {"x": x}
    kwargs = {k: values.get(v, v) if isinstance(v, str) else v for k, v in kwargs.items()}
    data = kwargs.pop("data", (x, y))
    with pytest.raises(error, match=match):
        sensitivity(model, data, verbose=0, **kwargs)
    uncompiled = keras.Sequential([keras.Input((3,)), L.Dense(2)])
    with pytest.raises(ValueError, match="not compiled: sensitivity"):
        sensitivity(uncompiled, (np.ones((2, 3)), np.zeros(2)), verbose=0)


def test_the_criteria_experiment_runs_end_to_end(tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    from test_examples import _fake_mnist

    from kerasprune.examples import criteria_mnist

    png, out_json = tmp_path / "criteria.png", tmp_path / "criteria.json"
    out = criteria_mnist.main(["--tiny", "--criteria", "random", "taylor", "--plot",
                               str(png), "--json", str(out_json), "--verbose", "0"],
                              data=_fake_mnist(n_train=256, n_eval=128))
    assert [r["criterion"] for r in out["runs"]] == ["random", "taylor"]
    for run in out["runs"]:
        assert run["flops_kept"] <= 0.5 and 0 <= run["accuracy"] <= 1
    assert png.stat().st_size > 1000 and out_json.is_file()
    printed = capsys.readouterr().out
    assert "| random |" in printed and "against random" in printed and "taylor:" in printed
