"""kerasprune.trim as a long job: any metric (its direction), what ran, data checked before
any work, interrupts, checkpoints and resuming, progress. Issue 16, items A-F and 1-5."""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import keras
import numpy as np
import pytest
from backends import BACKEND

import kerasprune
from kerasprune.adapters.keras import checkpoint as keras_checkpoint
from kerasprune.adapters.keras import metrics as keras_metrics
from kerasprune.adapters.keras import progress as keras_progress
from kerasprune.adapters.keras.trimming import TrimConfig, TrimError, TrimResult

pytestmark = pytest.mark.heavy  # long runs: TensorFlow and JAX in CI, not again on torch

ROOT = Path(__file__).resolve().parents[2]
Data = tuple[np.ndarray, np.ndarray]
QUICK = {"method": "top", "fraction": 0.25, "epochs": 1, "tolerance": 1.0, "verbose": 0}
"""Rounds that always delete a quarter of the hidden units and are always accepted: widths
16 -> 12 -> 9 -> 7."""
FAST = {**QUICK, "epochs": 0}
"""As QUICK, without fine-tuning."""


def _data(n: int = 256, seed: int = 0, regression: bool = False) -> tuple[Data, Data]:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 8)).astype("float32")
    w = rng.normal(size=(8, 3))
    y = ((x @ w)[:, :1].astype("float32") if regression
         else np.argmax(x @ w, axis=1).astype("int64"))
    cut = 3 * n // 4
    return (x[:cut], y[:cut]), (x[cut:], y[cut:])


def _mlp(outputs: int = 3) -> keras.Model:
    return keras.Sequential([keras.Input((8,)),
                             keras.layers.Dense(16, activation="relu", name="hidden"),
                             keras.layers.Dense(outputs, name="out")], name="mlp")


@pytest.fixture(scope="module")
def classifier() -> tuple[keras.Model, Data, Data]:
    keras.utils.set_random_seed(0)
    train, val = _data()
    model = _mlp()
    model.compile(keras.optimizers.Adam(0.01),
                  keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  metrics=["accuracy"])
    model.fit(*train, epochs=10, verbose=0)
    return model, train, val


@pytest.fixture(scope="module")
def regressor() -> tuple[keras.Model, Data, Data]:
    keras.utils.set_random_seed(0)
    train, val = _data(regression=True)
    model = _mlp(1)
    model.compile(keras.optimizers.Adam(0.01), "mse", metrics=["mae"])
    model.fit(*train, epochs=30, verbose=0)
    return model, train, val


class Batches(keras.utils.PyDataset):  # type: ignore[misc]
    """(x, y) batches of 64; ``forever``: no length, batch i is batch i % n."""

    def __init__(self, x: np.ndarray, y: np.ndarray | None, forever: bool = False) -> None:
        super().__init__()
        self.x, self.y, self.forever = x, y, forever
        self.n = -(-len(x) // 64)

    @property
    def num_batches(self) -> int | None:
        return None if self.forever else self.n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> Any:
        part = slice(i % self.n * 64, (i % self.n + 1) * 64)
        return self.x[part] if self.y is None else (self.x[part], self.y[part])


# --------------------------------------------------------------------------------------------
# A, 1: the metric's direction
# --------------------------------------------------------------------------------------------


def test_a_regression_trimmed_by_mae_keeps_the_error_within_tolerance(regressor: Any) -> None:
    """Issue A: with metric='mae' every round was accepted while the error grew fourfold."""
    model, train, val = regressor
    result = kerasprune.trim(model, train, val, metric="mae", tolerance=0.05, method="top",
                             fraction=0.5, epochs=0, verbose=0)
    base = result.before.accuracy
    assert result.mode == "min" and result.metric == "mae"
    assert result.after.accuracy <= base + 0.05 + 1e-9
    last = result.history[-1]
    # Halving the hidden layer without fine-tuning makes the error grow past the tolerance.
    assert not last.accepted and last.accuracy > base + 0.05
    assert result.best == last.round - 1 and "mae rose more than 0.05 above" in result.stopped
    for r in result.history[1:-1]:
        assert r.accepted and r.accuracy <= base + 0.05 + 1e-9
    assert "above tolerance" in result.rounds()
    # The premise: an MAE measured independently on the returned and the rejected models.
    rejected = kerasprune.delete_neurons(result.model, last.deleted)
    rejected.compile(loss="mse", metrics=["mae"])
    assert rejected.evaluate(*val, verbose=0, return_dict=True)["mae"] == pytest.approx(
        last.accuracy, rel=1e-5)


def test_a_loss_is_lower_is_better(regressor: Any) -> None:
    model, train, val = regressor
    result = kerasprune.trim(model, train, val, metric="loss", tolerance=0.0, method="top",
                             fraction=0.5, epochs=0, max_rounds=1, verbose=0)
    assert result.mode == "min"
    assert not result.history[1].accepted  # the loss rose: rejected, not a success
    assert result.history[1].accuracy > result.before.accuracy and result.best == 0


def test_1_directions_come_from_keras(regressor: Any) -> None:
    _, _, val = regressor
    probe = _mlp(1)
    probe.compile("sgd", "mse", metrics=[
        "mae", "mse", keras.metrics.RootMeanSquaredError(), keras.metrics.R2Score(),
        keras.metrics.CosineSimilarity(name="cos"),
        keras.metrics.MeanMetricWrapper(lambda t, p: keras.ops.abs(t - p), name="plain")])
    results = probe.evaluate(*val, verbose=0, return_dict=True)
    expected = {"loss": "min", "mae": "min", "mse": "min", "root_mean_squared_error": "min",
                "r2_score": "max", "cos": "max", "plain": None}
    assert set(results) == set(expected)
    assert {name: keras_metrics.direction(probe, name) for name in results} == expected
    for class_name in keras_metrics.DIRECTIONS:
        assert hasattr(keras.metrics, class_name) or class_name in (
            "PearsonCorrelation", "ConcordanceCorrelation"), class_name


@keras.saving.register_keras_serializable(package="kerasprune_tests")
def worst(y_true: Any, y_pred: Any) -> Any:
    """A metric Keras knows no direction for."""
    return keras.ops.max(keras.ops.abs(y_true - y_pred), axis=-1)


def test_1_unknown_or_contradicted_direction_is_an_error(regressor: Any) -> None:
    model, train, val = regressor
    custom = keras.models.clone_model(model)
    custom.set_weights(model.get_weights())
    custom.compile("adam", "mse", metrics=[worst])
    with pytest.raises(ValueError, match=r"cannot tell whether a higher or a lower 'worst' is "
                                         r"better.*mode='max'.*mode='min'"):
        kerasprune.trim(custom, train, val, metric="worst", verbose=0)
    result = kerasprune.trim(custom, train, val, metric="worst", mode="min", max_rounds=1,
                             **{**QUICK, "tolerance": 10.0})
    assert result.mode == "min" and len(result.history) == 2
    with pytest.raises(ValueError, match=r"mode='max' contradicts 'mae', for which lower"):
        kerasprune.trim(model, train, val, metric="mae", mode="max", verbose=0)
    with pytest.raises(ValueError, match=r"no accuracy metric among .*metric='mae'"):
        kerasprune.trim(model, train, val, verbose=0)
    with pytest.raises(ValueError, match=r"mode must be 'auto', 'max'"):
        kerasprune.trim(model, train, val, metric="mae", mode="lower", verbose=0)


# --------------------------------------------------------------------------------------------
# B, 2: the history says what ran
# --------------------------------------------------------------------------------------------


class EpochLog(keras.callbacks.Callback):  # type: ignore[misc]
    """Records the epoch indices fit runs; stops training after ``stop_after`` epochs."""

    def __init__(self, stop_after: int | None = None) -> None:
        super().__init__()
        self.epochs: list[int] = []
        self.stop_after = stop_after

    def on_epoch_end(self, epoch: int, logs: Any = None) -> None:
        self.epochs.append(epoch)
        if self.stop_after is not None and len(self.epochs) % self.stop_after == 0:
            self.model.stop_training = True


def test_b_fit_kwargs_cannot_override_what_trim_sets(classifier: Any) -> None:
    model, train, val = classifier
    for key, hint in [("epochs", "pass epochs to trim"), ("batch_size", "pass batch_size"),
                      ("steps_per_epoch", "pass steps_per_epoch"), ("verbose", "pass verbose"),
                      ("initial_epoch", "numbered from 0"), ("x", "pass train_data")]:
        with pytest.raises(ValueError, match=rf"fit_kwargs\['{key}'\]: trim sets {key} itself"
                                             rf".*{hint}"):
            kerasprune.trim(model, train, val, fit_kwargs={key: 3}, verbose=0)
    with pytest.raises(TypeError, match=r"'epoch'\] is not an argument of model.fit \(did you "
                                        r"mean 'epochs'\?\)"):
        kerasprune.trim(model, train, val, fit_kwargs={"epoch": 3}, verbose=0)
    with pytest.raises(TypeError, match=r"callbacks'\] must be a list"):
        kerasprune.trim(model, train, val, fit_kwargs={"callbacks": print}, verbose=0)


def test_2_history_counts_the_epochs_and_steps_that_ran(classifier: Any) -> None:
    model, train, val = classifier
    steps = -(-len(train[0]) // 32)
    log = EpochLog(stop_after=1)  # stops every fit after its first epoch
    result = kerasprune.trim(model, train, val, max_rounds=1, fit_kwargs={"callbacks": [log]},
                             **{**QUICK, "epochs": 3})
    r = result.history[1]
    assert log.epochs == [0]
    assert (r.epochs, r.recovery_epochs, r.steps) == (1, 0, steps)
    assert int(result.model.optimizer.iterations.numpy()) == steps


def test_2_recovery_epochs_run_one_at_a_time_and_are_counted(classifier: Any) -> None:
    model, train, val = classifier
    steps = -(-len(train[0]) // 32)
    log = EpochLog()
    result = kerasprune.trim(model, train, val, method="top", fraction=0.9, epochs=1,
                             recover_epochs=2, max_rounds=1, tolerance=0.0, verbose=0,
                             fit_kwargs={"callbacks": [log]})
    r = result.history[1]
    # The premise: one epoch after deleting 14 of 16 units does not recover the accuracy.
    assert r.recovery_epochs >= 1
    assert r.epochs == 1 + r.recovery_epochs and r.steps == r.epochs * steps
    assert log.epochs == list(range(r.epochs))  # numbered on: 0, then recovery 1, 2
    assert f"{r.epochs} epochs ({r.recovery_epochs} recovery)" in result.rounds()


# --------------------------------------------------------------------------------------------
# C, 3: interrupts end the run with the best model so far
# --------------------------------------------------------------------------------------------


class RaiseIn(keras.callbacks.Callback):  # type: ignore[misc]
    """Raises ``error`` at the first training batch of the ``fit_call``-th fit."""

    def __init__(self, error: BaseException, fit_call: int) -> None:
        super().__init__()
        self.error, self.fit_call, self.calls = error, fit_call, 0

    def on_train_begin(self, logs: Any = None) -> None:
        self.calls += 1

    def on_train_batch_end(self, batch: int, logs: Any = None) -> None:
        if self.calls == self.fit_call:
            raise self.error


def _check_partial(result: TrimResult, model: keras.Model, val: Data) -> None:
    assert [r.round for r in result.history] == [0, 1] and result.best == 1
    assert result.model.count_params() == result.history[1].params < model.count_params()
    assert result.model.get_layer("hidden").units == 12
    accuracy = result.model.evaluate(*val, verbose=0, return_dict=True)["accuracy"]
    assert accuracy == pytest.approx(result.history[1].accuracy)


def test_c_keyboard_interrupt_returns_the_best_model_so_far(classifier: Any) -> None:
    model, train, val = classifier
    stop = KeyboardInterrupt()
    result = kerasprune.trim(model, train, val, max_rounds=5,
                             fit_kwargs={"callbacks": [RaiseIn(stop, 2)]}, **QUICK)
    _check_partial(result, model, val)
    assert result.error is stop and result.interrupted
    assert result.stopped == ("interrupted by KeyboardInterrupt in round 2 (fine-tuning epoch "
                              "1/1)")


def test_c_an_exception_carries_the_best_result_so_far(classifier: Any) -> None:
    model, train, val = classifier
    boom = RuntimeError("disk full")
    with pytest.raises(TrimError, match=r"RuntimeError in round 2 \(fine-tuning epoch 1/1\): "
                                        r"disk full; the best model so far \(round 1") as info:
        kerasprune.trim(model, train, val, max_rounds=5,
                        fit_kwargs={"callbacks": [RaiseIn(boom, 2)]}, **QUICK)
    assert info.value.__cause__ is boom and info.value.result.error is boom
    _check_partial(info.value.result, model, val)

    def callback(r: Any, m: keras.Model) -> None:
        if r.round == 1:
            raise ValueError("log server down")

    with pytest.raises(TrimError, match=r"in round 1 \(in the callback\)") as info:
        kerasprune.trim(model, train, val, max_rounds=5, callback=callback, **FAST)
    # Round 1 finished before its callback ran: it is kept.
    assert [r.round for r in info.value.result.history] == [0, 1]


def test_c_an_interrupt_before_round_0_is_finished_is_not_caught(classifier: Any) -> None:
    model, train, val = classifier

    class Raising(Batches):
        """Its first batch can be read once (by the checks), then Ctrl-C."""

        calls = 0

        def __getitem__(self, i: int) -> Any:
            self.calls += 1
            if self.calls > 1:
                raise KeyboardInterrupt
            return super().__getitem__(i)

    with pytest.raises(KeyboardInterrupt):
        kerasprune.trim(model, train, Raising(*val), **QUICK)


# --------------------------------------------------------------------------------------------
# 3: checkpoints and resuming
# --------------------------------------------------------------------------------------------


KILLED = textwrap.dedent("""
    import os, signal, sys, warnings
    warnings.simplefilter("ignore")
    import numpy as np, keras, kerasprune
    model_path, data_path, directory = sys.argv[1:4]
    model = keras.saving.load_model(model_path)
    d = np.load(data_path)

    class Kill(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            # round 2's fine-tuning, after round 1's checkpoint was written
            if batch == 2 and os.path.exists(os.path.join(directory, "round_001.keras")):
                os.kill(os.getpid(), signal.SIGKILL)

    kerasprune.trim(model, (d["xt"], d["yt"]), (d["xv"], d["yv"]), method="top",
                    fraction=0.25, epochs=1, tolerance=1.0, max_rounds=3, verbose=1,
                    checkpoint_dir=directory, fit_kwargs={"callbacks": [Kill()]})
    print("NOT KILLED")
""")


def _state(directory: Path) -> dict[str, Any]:
    return dict(json.loads((directory / keras_checkpoint.STATE).read_text()))


@pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs POSIX signals")
def test_3_a_run_killed_mid_round_resumes_after_its_last_finished_round(
        classifier: Any, tmp_path: Path) -> None:
    model, train, val = classifier
    model_path, data_path = tmp_path / "model.keras", tmp_path / "data.npz"
    model.save(model_path)
    np.savez(data_path, xt=train[0], yt=train[1], xv=val[0], yv=val[1])
    directory = tmp_path / "run"
    env = {**os.environ, "KERAS_BACKEND": BACKEND,
           "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run([sys.executable, "-c", KILLED, str(model_path), str(data_path),
                           str(directory)], capture_output=True, text=True, env=env,
                          cwd=ROOT, timeout=600, check=False)
    assert proc.returncode == -signal.SIGKILL, proc.stdout[-2000:] + proc.stderr[-3000:]
    assert "NOT KILLED" not in proc.stdout and "round 1: hidden 12 (-4)" in proc.stdout
    state = _state(directory)
    assert [r["round"] for r in state["history"]] == [0, 1]
    assert state["best"] == 1 and not state["final"]
    assert sorted(p.name for p in directory.iterdir()) == ["round_001.keras", "trim_state.json"]

    loaded = keras.saving.load_model(model_path)  # the same model, as a new process has it
    result = kerasprune.trim(loaded, train, val, max_rounds=2, checkpoint_dir=directory,
                             **QUICK)
    assert result.resumed_from == 1
    assert [r.round for r in result.history] == [0, 1, 2]
    assert [r.widths["hidden"] for r in result.history] == [16, 12, 9]
    assert [r.to_json() for r in result.history[:2]] == state["history"]
    assert result.best == 2 and result.model.get_layer("hidden").units == 9
    assert result.stopped == "max_rounds reached"
    # Round 2 started from round 1's saved model: its deletions index that model's units.
    round1 = keras.saving.load_model(directory / "round_001.keras")
    assert round1.get_layer("hidden").units == 12
    assert max(result.history[2].deleted["hidden"]) < 12
    assert sorted(p.name for p in directory.iterdir()) == [
        "round_001.keras", "round_002.keras", "trim_state.json"]
    saved = keras.saving.load_model(directory / "round_002.keras")
    np.testing.assert_allclose(saved.predict(val[0], verbose=0),
                               result.model.predict(val[0], verbose=0), atol=1e-6)


def test_3_a_finished_run_returns_at_once_and_can_be_continued(classifier: Any,
                                                                tmp_path: Path) -> None:
    model, train, val = classifier
    first = kerasprune.trim(model, train, val, max_rounds=1, checkpoint_dir=tmp_path, **QUICK)
    assert first.resumed_from is None and first.checkpoint_dir == str(tmp_path)
    never = RaiseIn(AssertionError("trained again"), 1)
    again = kerasprune.trim(model, train, val, max_rounds=1, checkpoint_dir=tmp_path,
                            fit_kwargs={"callbacks": [never]}, **QUICK)
    assert never.calls == 0 and again.resumed_from == 1
    assert [r.to_json() for r in again.history] == [r.to_json() for r in first.history]
    np.testing.assert_allclose(again.model.predict(val[0], verbose=0),
                               first.model.predict(val[0], verbose=0), atol=1e-6)
    more = kerasprune.trim(model, train, val, max_rounds=2, checkpoint_dir=tmp_path, **QUICK)
    assert more.resumed_from == 1 and [r.round for r in more.history] == [0, 1, 2]
    assert more.model.get_layer("hidden").units == 9


def test_3_a_run_that_ended_by_its_rules_is_not_run_again(classifier: Any,
                                                          tmp_path: Path) -> None:
    model, train, val = classifier
    kwargs = {"method": "top", "fraction": 0.9, "epochs": 0, "tolerance": 0.0, "verbose": 0}
    first = kerasprune.trim(model, train, val, checkpoint_dir=tmp_path, **kwargs)
    assert "fell" in first.stopped and first.best == 0
    again = kerasprune.trim(model, train, val, checkpoint_dir=tmp_path, max_rounds=20,
                            **kwargs)
    assert again.stopped == first.stopped and len(again.history) == 2
    assert again.model.count_params() == model.count_params()


def test_3_a_checkpoint_of_another_run_is_refused(classifier: Any, tmp_path: Path) -> None:
    model, train, val = classifier
    kerasprune.trim(model, train, val, max_rounds=1, checkpoint_dir=tmp_path, **FAST)
    with pytest.raises(ValueError, match=r"holds a trim run of another tolerance \(1.0, now "
                                         r"0.5\)"):
        kerasprune.trim(model, train, val, max_rounds=1, checkpoint_dir=tmp_path,
                        **{**FAST, "tolerance": 0.5})
    other = keras.models.clone_model(model)
    other.set_weights([w + 1.0 for w in model.get_weights()])
    other.compile_from_config(model.get_compile_config())
    with pytest.raises(ValueError, match=r"another model \(its config or weights differ\)"):
        kerasprune.trim(other, train, val, max_rounds=1, checkpoint_dir=tmp_path, **FAST)
    with pytest.raises(ValueError, match=r"another train_data"):
        kerasprune.trim(model, (train[0][::-1], train[1][::-1]), val, max_rounds=1,
                        checkpoint_dir=tmp_path, **FAST)
    (tmp_path / "x").mkdir()
    (tmp_path / "x" / "notes.txt").write_text("mine")
    with pytest.raises(ValueError, match=r"holds files \(notes.txt\) but no trim_state.json"):
        kerasprune.trim(model, train, val, checkpoint_dir=tmp_path / "x", **FAST)


def test_3_state_writes_are_atomic(classifier: Any, tmp_path: Path,
                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """A crash between writing a temporary file and renaming it leaves the last state whole;
    resuming then runs the lost round again."""
    model, train, val = classifier
    real = os.replace
    calls: list[str] = []

    def crashing(src: Any, dst: Any) -> None:
        calls.append(Path(dst).name)
        if Path(dst).name == keras_checkpoint.STATE and len(calls) == 5:
            raise OSError("crash before the rename")
        real(src, dst)

    monkeypatch.setattr(keras_checkpoint.os, "replace", crashing)
    with pytest.raises(TrimError, match=r"round 2 \(saving the checkpoint\)") as info:
        kerasprune.trim(model, train, val, max_rounds=2, checkpoint_dir=tmp_path, **FAST)
    # state (round 0), round_001.keras, state, round_002.keras, state: crashed
    assert calls == ["trim_state.json", "round_001.keras", "trim_state.json",
                     "round_002.keras", "trim_state.json"][:len(calls)]
    assert [r.round for r in info.value.result.history] == [0, 1, 2]
    state = _state(tmp_path)  # whole, and as it was after round 1
    assert [r["round"] for r in state["history"]] == [0, 1]
    monkeypatch.setattr(keras_checkpoint.os, "replace", real)
    result = kerasprune.trim(model, train, val, max_rounds=2, checkpoint_dir=tmp_path,
                             **FAST)
    assert result.resumed_from == 1 and [r.round for r in result.history] == [0, 1, 2]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".tmp-")]


# --------------------------------------------------------------------------------------------
# D, E, F, 4: data checked before any work; steps for data that repeats forever
# --------------------------------------------------------------------------------------------


@pytest.fixture
def no_work(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make any model run fail: the errors must come before any."""
    def boom(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("the model ran before the data were checked")

    for name in ("fit", "evaluate", "predict", "predict_on_batch", "test_on_batch"):
        monkeypatch.setattr(keras.Model, name, boom)


def _generator(data: Data) -> Iterator[Data]:
    for i in range(0, len(data[0]), 64):
        yield data[0][i:i + 64], data[1][i:i + 64]


@pytest.mark.parametrize("case, error, match", [
    ("train generator", ValueError, r"^train_data is a one-shot iterator \(generator\): it is "
                                    r"read more than once .*from_generator"),
    ("val generator", ValueError, r"^val_data is a one-shot iterator"),
    ("x alone", ValueError, r"^val_data has no labels \(given the inputs alone\): pass \(x, "
                            r"y\)"),
    ("(x,)", ValueError, r"^val_data has no labels \(given \(x,\)\)"),
    ("(x, None)", ValueError, r"^val_data has no labels \(given \(x, None\)\)"),
    ("[x, y]", ValueError, r"^val_data is a list: pass \(x, y\) as a tuple"),
    ("wrong shape", ValueError, r"^val_data: the input has shape \(64, 5\), but the model takes "
                                r"data of shape \(None, 8\)"),
    ("labels count", ValueError, r"^train_data: the arrays have different numbers of samples "
                                 r"\(inputs \[192\], labels \[100\]\)"),
    ("nested lists", TypeError, r"^train_data: the input is a Python list of numbers: pass "
                                r"it as a NumPy array"),
    ("string", TypeError, r"^val_data is a str"),
    ("pydataset without labels", ValueError, r"^val_data\[0\] yields inputs without labels"),
    ("infinite pydataset", ValueError, r"^val_data is a PyDataset without a length .*pass "
                                       r"val_steps"),
    ("apoz generator", ValueError, r"^apoz_data is a one-shot iterator"),
    ("apoz wrong shape", ValueError, r"^apoz_data: the input has shape \(64, 4\)"),
])
def test_d_e_bad_data_is_refused_before_any_work(classifier: Any, no_work: None, case: str,
                                                 error: type[Exception], match: str) -> None:
    model, train, val = classifier
    x, y = val
    kwargs: dict[str, Any] = {"train_data": train, "val_data": val}
    kwargs.update({
        "train generator": {"train_data": _generator(train)},
        "val generator": {"val_data": _generator(val)},
        "x alone": {"val_data": x},
        "(x,)": {"val_data": (x,)},
        "(x, None)": {"val_data": (x, None)},
        "[x, y]": {"val_data": [x, y]},
        "wrong shape": {"val_data": (x[:, :5], y)},
        "labels count": {"train_data": (train[0], train[1][:100])},
        "nested lists": {"train_data": (train[0].tolist(), train[1])},
        "string": {"val_data": "val.npz"},
        "pydataset without labels": {"val_data": Batches(x, None)},
        "infinite pydataset": {"val_data": Batches(x, y, forever=True)},
        "apoz generator": {"apoz_data": iter([x])},
        "apoz wrong shape": {"apoz_data": x[:, :4]},
    }[case])
    with pytest.raises(error, match=match):
        kerasprune.trim(model, verbose=0, **kwargs)


@pytest.mark.filterwarnings("ignore:`shuffle=True` was passed:UserWarning")  # Keras, on any dataset
def test_4_tf_data_checked_and_repeated_datasets_run_with_steps(classifier: Any) -> None:
    tf = pytest.importorskip("tensorflow")
    model, train, val = classifier
    ds = tf.data.Dataset.from_tensor_slices
    with pytest.raises(ValueError, match=r"^val_data repeats forever .*pass val_steps"):
        kerasprune.trim(model, train, ds(val).batch(32).repeat(), verbose=0)
    with pytest.raises(ValueError, match=r"^train_data repeats forever .*steps_per_epoch"):
        kerasprune.trim(model, ds(train).batch(32).repeat(), val, verbose=0)
    with pytest.raises(ValueError, match=r"val_data \(its element_spec\) yields inputs "
                                         r"without labels"):
        kerasprune.trim(model, train, ds(val[0]).batch(32), verbose=0)
    with pytest.raises(ValueError, match=r"shape \(8,\), but the model takes a batch of shape "
                                         r"\(None, 8\).*batch the dataset"):
        kerasprune.trim(model, train, ds(val), verbose=0)
    log = EpochLog()
    result = kerasprune.trim(model, ds(train).shuffle(64, seed=0).batch(32).repeat(),
                             ds(val).batch(16).repeat(), steps_per_epoch=4, val_steps=3,
                             max_rounds=1, fit_kwargs={"callbacks": [log]}, **QUICK)
    r = result.history[1]
    assert (r.epochs, r.steps) == (1, 4)
    # every evaluation reads the same 3 batches: the first 48 validation samples
    first = result.model.evaluate(*(a[:48] for a in val), verbose=0, return_dict=True)
    assert r.accuracy == pytest.approx(first["accuracy"])


def test_4_fraction_messages_agree(classifier: Any) -> None:
    model, train, val = classifier
    for fraction in (1.0, 1.5, 0.0):
        with pytest.raises(ValueError, match=r"fraction must satisfy 0 < fraction < 1, got"):
            kerasprune.trim(model, train, val, method="top", fraction=fraction, verbose=0)


def test_4_pydataset_that_repeats_forever_runs_with_steps(classifier: Any) -> None:
    model, train, val = classifier
    result = kerasprune.trim(model, Batches(*train), Batches(*val, forever=True),
                             val_steps=1, max_rounds=1, **FAST)
    first = result.model.evaluate(*(a[:64] for a in val), verbose=0, return_dict=True)
    assert result.history[1].accuracy == pytest.approx(first["accuracy"])


def test_config_holds_the_settings(classifier: Any) -> None:
    model, train, val = classifier
    result = kerasprune.trim(model, train, val, max_rounds=1, **FAST)
    assert result.config == TrimConfig(method="top", fraction=0.25, epochs=0, tolerance=1.0,
                                       max_rounds=1)
    with pytest.raises(ValueError, match=r"val_steps must be an integer >= 1 or None"):
        TrimConfig(val_steps=0)
    settings = result.config.settings()
    assert settings["fraction"] == 0.25 and json.loads(json.dumps(settings)) == settings


# --------------------------------------------------------------------------------------------
# 5: progress
# --------------------------------------------------------------------------------------------


def test_5_verbose_0_is_silent_and_1_shows_each_phase(classifier: Any,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    model, train, val = classifier
    kerasprune.trim(model, train, val, max_rounds=1, **FAST)
    assert capsys.readouterr().out == ""
    kerasprune.trim(model, train, val, max_rounds=1, **{**QUICK, "epochs": 2, "verbose": 1})
    lines = capsys.readouterr().out.splitlines()
    phases = [line.split(": ", 1)[1].split(" (")[0] for line in lines
              if line.startswith("  round 1/1: ")]
    assert phases == ["measuring APoZ", "fine-tuning epoch 1/2", "fine-tuning epoch 2/2",
                      "evaluating"]
    assert all(" into the round, " in line for line in lines if line.startswith("  round"))
    assert [line for line in lines if line.startswith("round")][1].startswith(
        "round 1: hidden 12 (-4)")


def test_5_verbose_2_adds_keras_epoch_lines(classifier: Any,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    model, train, val = classifier
    kerasprune.trim(model, train, val, max_rounds=1, **{**QUICK, "epochs": 2, "verbose": 2})
    out = capsys.readouterr().out
    assert "Epoch 2/2" in out and "round 1: hidden 12" in out
    assert "  round 1/1: fine-tuning epoch 2/2 (" in out


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_5_status_line_and_estimate(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = FakeClock()
    monkeypatch.setattr(keras_progress.time, "monotonic", clock)
    out = Terminal()
    p = keras_progress.RoundProgress(1, max_rounds=3, stream=out)
    # round 1: every phase is timed
    p.begin_round(1, {"apoz": 4, "fit": 20, "evaluate": 2})
    assert p.left() is None  # nothing timed yet
    p.begin_phase("apoz", "measuring APoZ", 4)
    for step in range(1, 5):
        clock.now += 0.5
        p.update(step)
    p.begin_phase("fit", "fine-tuning epoch 1/2", 10)
    clock.now += 1.0
    p.step(1)
    # 9 steps left of this epoch and 10 of the next at 1 s, 2 evaluation steps untimed
    assert p.left() is None
    for step in range(2, 11):
        clock.now += 1.0
        p.step(step)
    p.begin_phase("fit", "fine-tuning epoch 2/2", 10)
    p.begin_phase("evaluate", "evaluating", 2)
    clock.now += 0.2
    p.step(1)
    assert p.left() == pytest.approx(0.2)
    p.end_round()
    assert p.rates == pytest.approx({"apoz": 0.5, "fit": 1.0, "evaluate": 0.2})
    # round 2: estimated from round 1's rates, then from this round's own
    p.begin_round(2, {"apoz": 4, "fit": 20, "evaluate": 2})
    assert p.left() == pytest.approx(4 * 0.5 + 20 * 1.0 + 2 * 0.2)
    p.begin_phase("apoz", "measuring APoZ", 4)
    clock.now += 0.25
    p.update(1)  # this round's APoZ is twice as fast
    assert p.left() == pytest.approx(3 * 0.25 + 20 * 1.0 + 2 * 0.2)
    p.begin_phase("fit", "fine-tuning epoch 1/2", 10)
    clock.now += 5.0
    p.step(5)
    text = out.getvalue()
    last = text.rsplit("\r", 1)[1]
    assert last.startswith("round 2/3 | fine-tuning epoch 1/2 [==========..........] 5/10 | ")
    # 0.25 s of APoZ and 5 of fine-tuning; 5 + 10 fit steps at 1 s and 2 x 0.2 s left
    assert "0:05 elapsed, about 0:15 left" in last
    clock.now += 0.5
    p.step(6)  # the steps up to the first report (compiling) are left out once more are done
    assert p.left() == pytest.approx(4 * 0.5 + 10 * 0.5 + 2 * 0.2)
    p.end_round()
    assert p.rates["fit"] == pytest.approx(5.5 / 6)  # the next round compiles too
    *_, drawn, erased, after = out.getvalue().split("\r")
    assert drawn.startswith("round 2/3 | fine-tuning epoch 1/2 [============........] 6/10")
    assert (erased, after) == (" " * len(drawn), "")  # the status line is wiped clean
    assert keras_progress.clock(3725) == "1:02:05" and keras_progress.clock(None) == "?"
