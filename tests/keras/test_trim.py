"""kerasprune.trim: the Network Trimming loop (measure APoZ, delete, fine-tune, evaluate)."""

from __future__ import annotations

import dataclasses
import inspect
from typing import Any

import keras
import numpy as np
import pytest

import kerasprune
from kerasprune.adapters.keras import TrimResult, TrimRound
from kerasprune.core.apoz import ApozWarning

DEAD = [3, 7, 11]
"""The hidden units planted dead (bias -100: their ReLU is always zero)."""

Data = tuple[np.ndarray, np.ndarray]


def _problem(n: int = 1024, seed: int = 0) -> tuple[Data, Data]:
    """A linearly separable 3-class problem in 8 dimensions: (train, val)."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 8)).astype("float32")
    y = np.argmax(x @ rng.normal(size=(8, 3)), axis=1).astype("int64")
    cut = 3 * n // 4
    return (x[:cut], y[:cut]), (x[cut:], y[cut:])


def _compile(model: keras.Model, optimizer: Any = None, metrics: Any = ("accuracy",)) -> None:
    model.compile(optimizer=optimizer or keras.optimizers.Adam(0.01),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  metrics=list(metrics))


def _mlp(*hidden: tuple[str, int, str | None]) -> keras.Model:
    layers: list[Any] = [keras.Input((8,))]
    layers += [keras.layers.Dense(units, activation=act, name=name) for name, units, act in hidden]
    layers.append(keras.layers.Dense(3, name="out"))
    return keras.Sequential(layers, name="mlp")


@pytest.fixture(scope="module")
def planted() -> tuple[keras.Model, Data, Data]:
    """A trained 8-16-3 MLP whose hidden units DEAD never fire, and its data."""
    keras.utils.set_random_seed(0)
    train, val = _problem()
    model = _mlp(("hidden", 16, "relu"))
    _compile(model)
    model.fit(*train, epochs=20, verbose=0)
    kernel, bias = model.get_layer("hidden").get_weights()
    bias[DEAD] = -100.0
    model.get_layer("hidden").set_weights([kernel, bias])
    return model, train, val


def _predict(model: keras.Model, x: np.ndarray) -> np.ndarray:
    return np.asarray(model.predict(x, verbose=0))


def test_deletes_exactly_the_planted_dead_units(planted: Any) -> None:
    model, train, val = planted
    result = kerasprune.trim(model, train, val, method="absolute", cutoff=0.99, epochs=1,
                             verbose=0)
    assert isinstance(result, TrimResult)
    assert [r.round for r in result.history] == [0, 1]
    assert result.history[1].deleted == {"hidden": tuple(DEAD)}
    assert "no neuron qualifies" in result.stopped
    assert result.best == 1
    assert result.model.get_layer("hidden").units == 16 - len(DEAD)
    assert result.after.accuracy >= result.before.accuracy - 0.001


def test_without_fine_tuning_the_predictions_do_not_change(planted: Any) -> None:
    model, train, val = planted
    result = kerasprune.trim(model, train, val, method="absolute", cutoff=0.99, epochs=0,
                             verbose=0)
    np.testing.assert_allclose(_predict(result.model, val[0]), _predict(model, val[0]),
                               atol=1e-5)
    assert result.after.accuracy == pytest.approx(result.before.accuracy)


def test_paper_rule_deletes_the_dead_units_first_and_keeps_accuracy(planted: Any) -> None:
    model, train, val = planted
    result = kerasprune.trim(model, train, val, epochs=2, max_rounds=2, tolerance=0.01,
                             verbose=0)
    assert set(DEAD) <= set(result.history[1].deleted["hidden"])
    assert result.best >= 1
    assert result.after.accuracy >= result.before.accuracy - 0.01
    assert result.model.count_params() < model.count_params()


def test_history_structure(planted: Any) -> None:
    model, train, val = planted
    result = kerasprune.trim(model, train, val, method="top", fraction=0.25, epochs=1,
                             max_rounds=2, tolerance=1.0, verbose=0)
    history = result.history
    assert all(isinstance(r, TrimRound) for r in history)
    assert [r.round for r in history] == [0, 1, 2]
    assert [r.widths["hidden"] for r in history] == [16, 12, 9]
    assert [r.widths["out"] for r in history] == [3, 3, 3]
    assert [len(r.deleted.get("hidden", ())) for r in history] == [0, 4, 3]
    assert all(r.accepted for r in history)
    params = [r.params for r in history]
    flops = [r.flops for r in history]
    assert params[0] == model.count_params()
    assert params == sorted(params, reverse=True) and flops == sorted(flops, reverse=True)
    assert params[-1] == result.model.count_params() == 8 * 9 + 9 + 9 * 3 + 3
    for r in history:
        assert {"loss", "accuracy"} <= set(r.metrics)
        assert r.accuracy == r.metrics["accuracy"]
        assert r.seconds >= 0
        assert {c.name for c in r.costs} == {"hidden", "out"}
    assert (result.best, result.layers, result.metric) == (2, ("hidden",), "accuracy")
    assert result.before is history[0] and result.after is history[2]
    assert result.stopped == "max_rounds reached"
    with pytest.raises(dataclasses.FrozenInstanceError):
        history[1].accuracy = 0.0  # type: ignore[misc]
    table = result.table()
    assert "16 -> 9" in table and "val accuracy" in table and "smaller" in table
    text = str(result)
    assert table in text and "round 2: hidden 9 (-3)" in text


def test_compile_settings_are_kept_with_a_fresh_optimizer(planted: Any) -> None:
    _, train, val = planted
    keras.utils.set_random_seed(1)
    model = _mlp(("hidden", 16, "relu"))
    optimizer = keras.optimizers.SGD(learning_rate=0.02, momentum=0.5, nesterov=True)
    top2 = keras.metrics.SparseTopKCategoricalAccuracy(k=2, name="top2")
    _compile(model, optimizer, metrics=["accuracy", top2])
    model.fit(*train, epochs=2, verbose=0)
    original = model.get_compile_config()
    result = kerasprune.trim(model, train, val, method="top", fraction=0.25, epochs=1,
                             max_rounds=2, tolerance=1.0, verbose=0)
    new = result.model
    assert type(new.optimizer) is type(optimizer)  # on torch, a subclass of SGD
    assert new.optimizer is not model.optimizer
    config = new.get_compile_config()
    assert config["optimizer"] == original["optimizer"]
    assert config["loss"] == original["loss"]
    assert config["metrics"] == original["metrics"]
    assert "top2" in result.after.metrics
    # a fresh optimizer each round: it has seen one round of fine-tuning, not two
    steps = -(-len(train[0]) // 32)
    assert int(new.optimizer.iterations.numpy()) == steps

    slower = kerasprune.trim(model, train, val, method="top", fraction=0.25, epochs=1,
                             max_rounds=1, tolerance=1.0, learning_rate=0.005, verbose=0)
    opt = slower.model.optimizer.get_config()
    assert opt["learning_rate"] == pytest.approx(0.005)
    assert (opt["momentum"], opt["nesterov"]) == (0.5, True)


def test_the_input_model_is_not_changed(planted: Any) -> None:
    model, train, val = planted
    weights = [w.copy() for w in model.get_weights()]
    config = model.get_config()
    compile_config = model.get_compile_config()
    iterations = int(model.optimizer.iterations.numpy())
    before = _predict(model, val[0])
    result = kerasprune.trim(model, train, val, method="top", fraction=0.25, epochs=1,
                             max_rounds=1, tolerance=1.0, verbose=0)
    assert result.model is not model
    assert model.get_config() == config
    assert model.get_compile_config() == compile_config
    assert int(model.optimizer.iterations.numpy()) == iterations
    for old, new in zip(weights, model.get_weights(), strict=True):
        np.testing.assert_array_equal(old, new)
    np.testing.assert_array_equal(_predict(model, val[0]), before)


def test_the_trimmed_model_saves_and_reloads(planted: Any, tmp_path: Any) -> None:
    model, train, val = planted
    result = kerasprune.trim(model, train, val, method="top", fraction=0.25, epochs=1,
                             max_rounds=1, tolerance=1.0, verbose=0)
    path = tmp_path / "trimmed.keras"
    result.model.save(path)
    loaded = keras.saving.load_model(path)
    assert loaded.get_layer("hidden").units == 12
    np.testing.assert_allclose(_predict(loaded, val[0]), _predict(result.model, val[0]),
                               atol=1e-6)
    assert loaded.evaluate(*val, verbose=0, return_dict=True)["accuracy"] == pytest.approx(
        result.after.accuracy)


def test_refuses_an_uncompiled_model() -> None:
    train, val = _problem(64)
    model = _mlp(("hidden", 4, "relu"))
    with pytest.raises(ValueError, match="not compiled"):
        kerasprune.trim(model, train, val, verbose=0)


def test_stops_when_accuracy_falls_and_returns_the_last_good_model(planted: Any) -> None:
    model, train, val = planted
    result = kerasprune.trim(model, train, val, method="top", fraction=0.9, epochs=0,
                             tolerance=0.0, verbose=0)
    assert len(result.history) == 2
    assert not result.history[1].accepted
    assert result.history[1].accuracy < result.before.accuracy
    assert result.best == 0 and "fell" in result.stopped
    assert result.model is not model
    assert result.model.count_params() == model.count_params()
    np.testing.assert_allclose(_predict(result.model, val[0]), _predict(model, val[0]),
                               atol=1e-6)


def test_default_layers_leave_out_the_output_and_unmeasurable_layers() -> None:
    keras.utils.set_random_seed(2)
    train, val = _problem(256)
    model = _mlp(("h1", 8, "relu"), ("h2", 6, None), ("h3", 6, "relu"))
    _compile(model)
    with pytest.warns(ApozWarning, match="h2"):
        result = kerasprune.trim(model, train, val, method="top", fraction=0.25, epochs=0,
                                 max_rounds=1, tolerance=1.0, verbose=0)
    assert result.layers == ("h1", "h3")
    assert set(result.history[1].deleted) == {"h1", "h3"}
    assert result.after.widths == {"h1": 6, "h2": 6, "h3": 5, "out": 3}


def test_named_layers_and_callback(planted: Any) -> None:
    model, train, val = planted
    seen: list[tuple[int, int]] = []

    def callback(r: TrimRound, m: keras.Model) -> bool:
        seen.append((r.round, m.count_params()))
        return r.round >= 1

    result = kerasprune.trim(model, train, val, [model.get_layer("hidden")], method="top",
                             fraction=0.25, epochs=0, tolerance=1.0, verbose=0,
                             callback=callback)
    assert result.layers == ("hidden",)
    assert seen == [(0, model.count_params()), (1, result.history[1].params)]
    assert len(result.history) == 2 and "callback" in result.stopped


def test_verbose_prints_one_line_per_round(planted: Any,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    model, train, val = planted
    kerasprune.trim(model, train, val, method="top", fraction=0.25, epochs=0, max_rounds=1,
                    tolerance=1.0, verbose=1)
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("round")]
    assert len(lines) == 2 and lines[1].startswith("round 1: hidden 12 (-4)")


def test_invalid_arguments(planted: Any) -> None:
    model, train, val = planted
    with pytest.raises(ValueError, match="metric 'auc'"):
        kerasprune.trim(model, train, val, metric="auc", verbose=0)
    with pytest.raises(ValueError, match="unknown method"):
        kerasprune.trim(model, train, val, method="median", verbose=0)
    with pytest.raises(ValueError, match="tolerance"):
        kerasprune.trim(model, train, val, tolerance=-0.1, verbose=0)
    with pytest.raises(ValueError, match="epochs"):
        kerasprune.trim(model, train, val, epochs=-1, verbose=0)
    with pytest.raises(kerasprune.PruneError):
        kerasprune.trim(model, train, val, ["nope"], verbose=0)


def test_takes_a_dataset_of_batches(planted: Any) -> None:
    model, train, val = planted

    class Batches(keras.utils.PyDataset):  # type: ignore[misc]
        def __init__(self, x: np.ndarray, y: np.ndarray) -> None:
            super().__init__()
            self.x, self.y = x, y

        def __len__(self) -> int:
            return -(-len(self.x) // 64)

        def __getitem__(self, i: int) -> tuple[np.ndarray, np.ndarray]:
            return self.x[i * 64:(i + 1) * 64], self.y[i * 64:(i + 1) * 64]

    result = kerasprune.trim(model, Batches(*train), Batches(*val), method="absolute",
                             cutoff=0.99, epochs=1, verbose=0)
    assert result.history[1].deleted == {"hidden": tuple(DEAD)}


def test_recover_epochs_fine_tune_a_round_that_fell(planted: Any) -> None:
    model, train, val = planted
    result = kerasprune.trim(model, train, val, method="top", fraction=0.9, epochs=0,
                             recover_epochs=2, max_rounds=1, tolerance=0.0, verbose=0)
    r = result.history[1]
    # The premise: without fine-tuning, the round's deletion (16 units -> 2) costs accuracy.
    fell = kerasprune.delete_neurons(model, r.deleted)
    fell.compile(loss=model.loss, metrics=["accuracy"])
    assert fell.evaluate(*val, verbose=0, return_dict=True)["accuracy"] < result.before.accuracy
    assert result.history[0].epochs == 0
    assert 1 <= r.epochs <= 2  # so it had to try to recover
    assert r.accepted or r.epochs == 2


def test_learning_rate_can_be_a_schedule_restarted_every_round(planted: Any) -> None:
    model, train, val = planted
    schedule = keras.optimizers.schedules.CosineDecay(0.01, decay_steps=24, alpha=0.1)
    result = kerasprune.trim(model, train, val, method="top", fraction=0.25, epochs=1,
                             max_rounds=2, tolerance=1.0, learning_rate=schedule, verbose=0)
    config = result.model.optimizer.get_config()
    assert config["learning_rate"]["class_name"] == "CosineDecay"
    assert config["learning_rate"]["config"]["decay_steps"] == 24
    assert type(result.model.optimizer) is type(model.optimizer)
    with pytest.raises(ValueError, match="learning_rate"):
        kerasprune.trim(model, train, val, learning_rate=-1.0, verbose=0)


def test_settings_in_a_config_object_or_as_keyword_arguments(planted: Any) -> None:
    model, train, val = planted
    config = kerasprune.TrimConfig(method="absolute", cutoff=0.99, epochs=0)
    given = kerasprune.trim(model, train, val, config=config, verbose=0)
    spelled = kerasprune.trim(model, train, val, method="absolute", cutoff=0.99, epochs=0,
                              verbose=0)
    assert given.config == spelled.config == config
    assert [r.deleted for r in given.history] == [r.deleted for r in spelled.history]
    # a keyword argument given beside the config replaces its field, checked again
    zero = kerasprune.trim(model, train, val, config=config, max_rounds=0, verbose=0)
    assert zero.config == dataclasses.replace(config, max_rounds=0)
    assert [r.round for r in zero.history] == [0]
    with pytest.raises(ValueError, match="epochs must be an integer >= 0"):
        kerasprune.trim(model, train, val, config=config, epochs=-1, verbose=0)
    with pytest.raises(TypeError, match="config must be a TrimConfig, got dict"):
        kerasprune.trim(model, train, val, config={"epochs": 0}, verbose=0)  # type: ignore[arg-type]
    # the defaults are written once, in TrimConfig, and trim's signature shows them
    parameters = inspect.signature(kerasprune.trim).parameters
    fields = dataclasses.fields(kerasprune.TrimConfig)
    assert {f.name: f.default for f in fields} == {
        f.name: parameters[f.name].default for f in fields}


def test_each_round_reads_its_model_once(planted: Any, monkeypatch: Any) -> None:
    from kerasprune.adapters.keras import convert

    model, train, val = planted
    read: list[str] = []
    to_graph = convert.to_graph

    def counting(m: keras.Model, *args: Any, **kwargs: Any) -> Any:
        read.append(m.name)
        return to_graph(m, *args, **kwargs)

    monkeypatch.setattr(convert, "to_graph", counting)
    result = kerasprune.trim(model, train, val, method="top", fraction=0.25, epochs=0,
                             tolerance=1.0, max_rounds=2, verbose=0)
    assert [r.round for r in result.history] == [0, 1, 2] and result.best == 2
    assert len(read) == 1 + 2  # the input model, then one reading per round
    # the costs counted on the pruned graphs are those of the models built from them
    assert result.history[0].costs == tuple(kerasprune.costs(model))
    assert result.history[2].costs == tuple(kerasprune.costs(result.model))
