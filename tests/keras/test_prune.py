"""kerasprune.prune on Keras models: every criterion, group scores, targets, limits, the
oracle, iterative pruning with fine-tuning, dry runs, latency targets and bad input.

Every pruned model is checked against the zeroing oracle (tests/keras/oracle.py): its outputs
equal those of the original with the weights that read the deleted neurons set to zero.
"""

from __future__ import annotations

from typing import Any

import keras
import numpy as np
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from oracle import assert_equivalent, random_inputs
from test_functional import build_plan, dag_plans

import kerasprune
import kerasprune.prune as prune_module
from kerasprune.adapters import keras as adapter
from kerasprune.adapters.keras import build as keras_build
from kerasprune.adapters.keras import surgery as keras_surgery
from kerasprune.adapters.keras.pruning import PruneResult, prune
from kerasprune.core.graph import PruneError
from kerasprune.core.groups import analyze_channels
from kerasprune.core.plan import Plan, PlanError
from kerasprune.core.targets import Flops, Params

L = keras.layers
DATA_CRITERIA = ("apoz", "activation", "taylor")


def _weights(model: keras.Model) -> list[np.ndarray]:
    return [np.array(w) for w in model.get_weights()]


def _assert_unchanged(model: keras.Model, before: list[np.ndarray],
                      config: dict[str, Any]) -> None:
    assert model.get_config() == config
    for a, b in zip(_weights(model), before, strict=True):
        np.testing.assert_array_equal(a, b)


def check_oracle(model: keras.Model, result: PruneResult | Plan, x: np.ndarray) -> None:
    """The pruned model (or the plan's deletion) equals the zeroing oracle on ``x``."""
    plan = result if isinstance(result, Plan) else result.plans[-1]
    assert plan.request, "nothing was pruned"
    reference = assert_equivalent(model, dict(plan.request), x=x)
    if isinstance(result, PruneResult):
        got, want = (keras.ops.convert_to_numpy(m(x, training=False))
                     for m in (result.model, reference))
        np.testing.assert_allclose(got, want, atol=1e-5, rtol=1e-4)


def planted(dead: int = 5, seed: int = 0) -> keras.Model:
    """Dense(8) -> BN -> ReLU -> Dense(3); neuron ``dead`` has a zero kernel column and a zero
    batch-norm scale and shift: it never fires, by every criterion's measure."""
    model = keras.Sequential([keras.Input((6,)), L.Dense(8, name="d1"),
                              L.BatchNormalization(name="bn"), L.ReLU(name="relu"),
                              L.Dense(3, name="out")], name="planted")
    rng = np.random.default_rng(seed)
    kernel = rng.standard_normal((6, 8)).astype("float32")
    bias = rng.uniform(0.5, 1.0, 8).astype("float32")
    kernel[:, dead] = 0.0
    model.get_layer("d1").set_weights([kernel, bias])
    gamma = rng.uniform(0.5, 1.5, 8).astype("float32")
    beta = rng.uniform(0.5, 1.0, 8).astype("float32")
    gamma[dead] = beta[dead] = 0.0
    model.get_layer("bn").set_weights([gamma, beta, np.zeros(8, "float32"),
                                       np.ones(8, "float32")])
    model.compile("sgd", keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  metrics=["accuracy"])
    return model


def xy(n: int = 32, shape: tuple[int, ...] = (6,), classes: int = 3,
       seed: int = 1) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return (rng.standard_normal((n, *shape)).astype("float32"),
            rng.integers(0, classes, n).astype("int64"))


def one_neuron_less(model: keras.Model) -> Params:
    """A target one parameter below the model: met by deleting exactly one neuron."""
    return Params(at_most=model.count_params() - 1)


@pytest.mark.parametrize("criterion", ["l1", "l2", "bn_scale", *DATA_CRITERIA])
def test_each_criterion_deletes_the_planted_neuron_first(criterion: str) -> None:
    model = planted()
    x, y = xy()
    before, config = _weights(model), model.get_config()
    result = prune(model, one_neuron_less(model), criterion=criterion,
                   data=(x, y) if criterion in DATA_CRITERIA else None, verbose=0)
    assert isinstance(result, PruneResult)
    assert {k: v.tolist() for k, v in result.plans[0].request.items()} == {"d1": [5]}
    assert result.model.get_layer("d1").units == 7
    check_oracle(model, result, x)
    _assert_unchanged(model, before, config)
    assert result.model.compiled  # compiled as the input was, with a fresh optimizer
    assert result.model.optimizer is not model.optimizer


def residual(seed: int = 0) -> keras.Model:
    """conv a -> relu -> {conv b -> bn b, conv c -> bn c} -> Add -> relu -> GAP -> out. Slot 1
    of the group {b, c} (coupled by the Add) is dead in both branches."""
    inputs = keras.Input((6, 6, 2))
    h = L.ReLU(name="relu_a")(L.Conv2D(4, 3, padding="same", name="a")(inputs))
    b = L.BatchNormalization(name="bn_b")(L.Conv2D(4, 3, padding="same", name="b")(h))
    c = L.BatchNormalization(name="bn_c")(L.Conv2D(4, 1, name="c")(h))
    s = L.ReLU(name="relu")(L.Add(name="add")([b, c]))
    out = L.Dense(3, name="out")(L.GlobalAveragePooling2D(name="gap")(s))
    model = keras.Model(inputs, out, name="residual")
    rng = np.random.default_rng(seed)
    for name in ("a", "b", "c", "out"):
        layer = model.get_layer(name)
        layer.set_weights([rng.standard_normal(w.shape).astype("float32") * 0.5
                           for w in layer.get_weights()])
    for conv, bn in (("b", "bn_b"), ("c", "bn_c")):
        kernel, bias = model.get_layer(conv).get_weights()
        kernel[..., 1] = 0.0
        bias[1] = 0.0
        model.get_layer(conv).set_weights([kernel, bias])
        gamma = rng.uniform(0.5, 1.5, 4).astype("float32")
        beta = rng.uniform(0.1, 0.5, 4).astype("float32")
        gamma[1] = beta[1] = 0.0
        model.get_layer(bn).set_weights([gamma, beta, np.zeros(4, "float32"),
                                         np.ones(4, "float32")])
    model.compile("sgd", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    return model


@pytest.mark.parametrize("criterion", ["l1", "bn_scale", "activation", "taylor"])
def test_group_scores_on_a_residual_model(criterion: str) -> None:
    """The slot that is dead in both branches of the Add goes first, from both convolutions,
    whatever the aggregate; the pruned model satisfies the oracle."""
    model = residual()
    x, y = xy(16, (6, 6, 2))
    analysis = analyze_channels(adapter.to_graph(model).graph)
    assert set(analysis.group_of("b").layers) == {"b", "c"}
    for aggregate in ("sum", "mean", "max"):
        plan = prune(model, flops=0.99, criterion=criterion, aggregate=aggregate,
                     protect=["a"], data=(x, y) if criterion in DATA_CRITERIA else None,
                     dry_run=True, verbose=0)
        assert isinstance(plan, Plan)
        assert {k: v.tolist() for k, v in plan.request.items()} == {"b": [1], "c": [1]}
    result = prune(model, flops=0.99, criterion=criterion, protect=["a"],
                   data=(x, y) if criterion in DATA_CRITERIA else None, verbose=0)
    check_oracle(model, result, x)


def vgg_like(seed: int = 0) -> keras.Model:
    model = keras.Sequential([
        keras.Input((8, 8, 1)),
        L.Conv2D(12, 3, padding="same", use_bias=False, name="conv1"),
        L.BatchNormalization(name="bn1"), L.ReLU(name="relu1"),
        L.MaxPooling2D(2, name="pool"),
        L.Conv2D(16, 3, padding="same", activation="relu", name="conv2"),
        L.Flatten(name="flatten"), L.Dense(10, activation="relu", name="fc"),
        L.Dense(3, name="out")], name="vgg_like")
    rng = np.random.default_rng(seed)
    model.set_weights([rng.standard_normal(w.shape).astype("float32") * 0.3 + (
        1.0 if "variance" in v.name else 0.0) for w, v in zip(model.get_weights(),
                                                              model.weights, strict=True)])
    model.compile("sgd", keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  metrics=["accuracy"])
    return model


def _prefix_cost(model: keras.Model, plan: Plan, k: int) -> tuple[int, int]:
    """Params and FLOPs after the first ``k`` units of the plan's ranking, built in Keras."""
    analysis = analyze_channels(adapter.to_graph(model).graph)
    mask = np.zeros(analysis.slots, dtype=bool)
    for index, slots in plan.ranking[:k]:
        mask[analysis.groups[index].offset + slots] = True
    request = analysis.request(mask)
    smaller = kerasprune.delete_neurons(model, request) if request else model
    costs = kerasprune.costs(smaller)
    return sum(c.params for c in costs), sum(c.flops for c in costs)


@pytest.mark.parametrize("target, column", [(Flops(keep=0.5), 1), (Params(keep=0.4), 0),
                                            (Params(at_most=1500), 0)])
@pytest.mark.parametrize("scope", ["global", "uniform"])
def test_targets_are_met_within_one_neuron(target: Any, column: int, scope: str) -> None:
    model = vgg_like()
    x, _ = xy(4, (8, 8, 1))
    result = prune(model, target, scope=scope, verbose=0)
    plan = result.plans[0]
    after = (result.params[1], result.flops[1])
    limit = target.limit((result.params[0], result.flops[0])[column])
    assert after[column] <= limit
    assert after == (plan.params[1], plan.flops[1]) == _prefix_cost(model, plan, plan.taken)
    assert _prefix_cost(model, plan, plan.taken - 1)[column] > limit  # one unit fewer misses
    check_oracle(model, result, x)


@pytest.mark.parametrize("scope", ["global", "uniform"])
def test_round_to_is_honoured(scope: str) -> None:
    model = vgg_like()
    x, _ = xy(4, (8, 8, 1))
    result = prune(model, flops=0.5, round_to=4, scope=scope, verbose=0)
    for name in ("conv1", "conv2", "fc"):
        before = model.get_layer(name)
        after = result.model.get_layer(name)
        width = getattr(after, "filters", None) or after.units
        original = getattr(before, "filters", None) or before.units
        assert width == original or width % 4 == 0, (name, width)
    assert result.flops[1] <= 0.5 * result.flops[0]
    check_oracle(model, result, x)


def test_limits_hold_and_a_target_they_forbid_says_how_close_it_gets() -> None:
    model = vgg_like()
    result = prune(model, flops=0.7, min_width={"conv1": 10}, max_fraction={"conv2": 0.25},
                   protect=["fc"], verbose=0)
    widths = {c.name: c.width for c in result.costs_after}
    assert widths["conv1"] >= 10 and widths["conv2"] >= 12 and widths["fc"] == 10
    with pytest.raises(PlanError, match="cannot meet the target") as caught:
        prune(model, flops=0.1, min_width=8, verbose=0)
    assert caught.value.plan.achieved > caught.value.plan.limit
    loose = prune(model, flops=0.1, min_width=8, strict=False, verbose=0)
    assert not loose.plans[0].met and loose.flops[1] == caught.value.plan.flops[1]


def test_iterative_pruning_fine_tunes_between_steps() -> None:
    model = vgg_like()
    x, y = xy(48, (8, 8, 1))
    before, config = _weights(model), model.get_config()
    result = prune(model, flops=0.4, criterion="taylor", data=(x, y), train_data=(x, y),
                   val_data=(x, y), iterative_steps=2, epochs=1, batch_size=16,
                   max_fraction=0.5, verbose=0)
    assert len(result.steps) == 2 and [s.epochs for s in result.steps] == [1, 1]
    assert result.flops[1] <= 0.4 * result.flops[0]
    assert result.metric == "accuracy" and set(result.metrics_before) >= {"accuracy", "loss"}
    assert all("accuracy" in s.metrics_pruned and "accuracy" in s.metrics for s in result.steps)
    widths = {c.name: c.width for c in result.costs_after}
    assert widths["conv1"] >= 6 and widths["conv2"] >= 8 and widths["fc"] >= 5  # vs originals
    assert result.steps[0].plan.flops[0] == result.flops[0]
    assert result.steps[1].plan.flops[1] == result.flops[1]
    steps = int(keras.ops.convert_to_numpy(result.model.optimizer.iterations))
    assert steps == 3  # the last step's fine-tuning: one epoch of 48 / 16 batches
    _assert_unchanged(model, before, config)
    text = str(result)
    assert "step 2/2" in text and "val accuracy" in text


def test_dry_run_builds_nothing_and_plans_what_prune_does(monkeypatch: Any) -> None:
    model = vgg_like()
    real = prune(model, flops=0.5, criterion="l2", verbose=0)

    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("a dry run built a model")

    monkeypatch.setattr(keras_build, "from_graph", refuse)
    monkeypatch.setattr(keras_surgery, "delete_neurons", refuse)
    plan = prune(model, flops=0.5, criterion="l2", dry_run=True, verbose=0)
    assert isinstance(plan, Plan) and plan.met
    assert {k: v.tolist() for k, v in plan.request.items()} == {
        k: v.tolist() for k, v in real.plans[0].request.items()}
    assert plan.flops == real.flops and plan.params == real.params
    assert "FLOPs" in plan.table() and "target: flops <=" in plan.table()


def test_target_spellings_and_the_callable_module() -> None:
    model = vgg_like()
    plans = [prune(model, **kw, dry_run=True, verbose=0) for kw in (
        {"flops": 0.5}, {"target": Flops(keep=0.5)}, {"target": {"flops": 0.5}})]
    assert len({p.taken for p in plans}) == 1
    absolute = prune(model, params=1500, dry_run=True, verbose=0)
    assert absolute.params[1] <= 1500
    assert prune_module.delete_neurons is kerasprune.delete_neurons  # Keras-Prune's spelling
    assert isinstance(kerasprune.prune(model, flops=0.5, dry_run=True, verbose=0), Plan)
    assert kerasprune.prune is prune_module


def test_a_latency_target_times_models_built_from_the_candidate_graphs(
        monkeypatch: Any) -> None:
    """With a stand-in clock whose time is a model's FLOPs, latency=0.5 is flops=0.5: the
    target builds each candidate (zero weights, the candidate's widths) and times it."""
    from kerasprune.adapters.keras import speed as keras_speed

    timed: list[int] = []

    class Report:
        def __init__(self, seconds: float) -> None:
            self.seconds = seconds

        def timing(self, runner: str, batch_size: int) -> Any:
            assert (runner, batch_size) == ("compiled", 32)
            return type("Timing", (), {"median": self.seconds})()

    def fake(model: keras.Model, **options: Any) -> Report:
        assert options["runners"] == ("compiled",) and options["tflite"] is False
        assert all(not np.any(np.asarray(w)) for w in model.get_weights())  # zero weights
        flops = sum(c.flops for c in kerasprune.costs(model))
        timed.append(flops)
        return Report(flops * 1e-9)

    monkeypatch.setattr(keras_speed, "measure_latency", fake)
    model = vgg_like()
    by_latency = prune(model, latency=0.5, dry_run=True, verbose=0)
    by_flops = prune(model, flops=0.5, dry_run=True, verbose=0)
    assert by_latency.target.kind == "cost" and "latency" in by_latency.table()
    assert {k: v.tolist() for k, v in by_latency.request.items()} == {
        k: v.tolist() for k, v in by_flops.request.items()}
    assert len(timed) == len(set(timed))  # each candidate timed once (memoised)


def test_a_latency_target_on_a_real_clock_and_the_measured_speedup() -> None:
    """Structure only (times depend on the machine): the planner reads real timings."""
    model = vgg_like()
    options = {"repeats": 2, "warmup": 1, "min_time": 0.0, "batch_sizes": (4,)}
    plan = prune(model, latency=0.9, latency_options=options, dry_run=True, strict=False,
                 verbose=0)
    assert plan.target.kind == "cost" and plan.original > 0
    assert plan.limit == pytest.approx(0.9 * plan.original)
    assert plan.met == (plan.achieved <= plan.limit)
    result = prune(model, flops=0.5, verbose=0, speedup={
        "runners": ("predict_on_batch",), "batch_sizes": (2,), "repeats": 2, "warmup": 1,
        "min_time": 0.0, "tflite": False})
    assert result.speedup is not None
    assert result.speedup.flop_ratio == pytest.approx(result.flop_ratio)
    assert "speed-up" in result.table()


@pytest.mark.parametrize("kwargs, error, match", [
    ({"flops": 0.5, "criterion": "nope"}, ValueError, "unknown criterion 'nope'"),
    ({"target": {"flop": 0.5}}, ValueError, "unknown target kind 'flop'"),
    ({"flops": 1.5}, ValueError, r"flops=1.5 is above 100%"),
    ({"params": 10**9}, ValueError, "above 100% of the original"),
    ({"latency": 2}, ValueError, "above 100%"),
    ({}, ValueError, "pass one target"),
    ({"flops": 0.5, "params": 0.5}, ValueError, "pass one target.*got 2"),
    ({"target": 0.5}, TypeError, "target must be"),
    ({"flops": 0.5, "criterion": "activation"}, ValueError,
     "criterion 'activation' needs activations measured on data"),
    ({"flops": 0.5, "criterion": "taylor"}, ValueError,
     "criterion 'taylor' needs gradients of the loss"),
    ({"flops": 0.5, "criterion": "taylor", "data": "x"}, ValueError, "no labels"),
    ({"flops": 0.5, "criterion": "activation", "data": "bad shape"}, ValueError,
     r"data: the input has shape"),
    ({"flops": 0.5, "criterion": "l1", "data": "x"}, ValueError, "reads no data"),
    ({"flops": 0.05, "min_width": 4}, PlanError, "cannot meet the target"),
    ({"flops": 0.05, "min_width": 4, "criterion": "taylor", "data": "xy"}, PlanError,
     "cannot meet the target"),
    ({"flops": 0.5, "protect": ["nope"]}, PruneError, "protect names 'nope'"),
    ({"flops": 0.5, "min_width": {"nope": 2}}, PruneError, "min_width names 'nope'"),
    ({"flops": 0.5, "max_fraction": 1.5}, ValueError, "max_fraction must be in"),
    ({"flops": 0.5, "max_fraction": {"fc": 0}, "iterative_steps": 2, "train_data": "xy"},
     ValueError, r"max_fraction\['fc'\] must be in"),
    ({"flops": 0.05, "min_width": 4, "iterative_steps": 2, "train_data": "xy"}, PlanError,
     "cannot meet the target"),
    ({"flops": 0.5, "round_to": 0}, ValueError, "round_to"),
    ({"flops": 0.5, "scope": "local"}, ValueError, "unknown scope"),
    ({"flops": 0.5, "iterative_steps": 2}, ValueError, "iterative_steps=2 fine-tunes"),
    ({"flops": 0.5, "epochs": 2}, ValueError, "fine-tuning needs train_data"),
    ({"flops": 0.5, "train_data": "x"}, ValueError, "train_data has no labels"),
    ({"flops": 0.5, "val_data": "xy", "metric": "auc"}, ValueError, "metric 'auc'"),
    ({"flops": 0.5, "verbose": 3}, ValueError, "verbose"),
])
def test_bad_input_is_refused_before_anything_is_built(kwargs: dict[str, Any], error: type,
                                                       match: str, monkeypatch: Any) -> None:
    model = vgg_like()
    x, y = xy(8, (8, 8, 1))
    values = {"x": x, "xy": (x, y), "bad shape": x[:, :4]}
    kwargs = {k: values.get(v, v) if isinstance(v, str) and k != "criterion" else v
              for k, v in kwargs.items()}
    before, config = _weights(model), model.get_config()

    def refuse(*args: Any, **kw: Any) -> Any:
        raise AssertionError("a model was built before the error")

    monkeypatch.setattr(keras_surgery, "delete_neurons", refuse)
    with pytest.raises(error, match=match):
        prune(model, **{"verbose": 0, **kwargs})
    _assert_unchanged(model, before, config)


def test_a_model_that_is_not_compiled() -> None:
    model = keras.Sequential([keras.Input((6,)), L.Dense(8, activation="relu", name="h"),
                              L.Dense(3, name="out")])
    x, y = xy()
    with pytest.raises(ValueError, match="not compiled: prune fine-tunes"):
        prune(model, flops=0.5, train_data=(x, y), verbose=0)
    with pytest.raises(ValueError, match="not compiled"):
        prune(model, flops=0.5, criterion="taylor", data=(x, y), verbose=0)
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    result = prune(model, flops=0.5, criterion="taylor", data=(x, y), loss=loss, verbose=0)
    assert not result.model.compiled
    check_oracle(model, result, x)


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(plan=dag_plans(), data=st.data())
def test_random_architectures_prune_to_the_target_and_match_the_oracle(
        plan: list[Any], data: st.DataObject) -> None:
    """Random DAGs (convolutions, residual adds, concatenations, batch norms, pools, several
    outputs): whatever the criterion, scope and round_to, the plan's costs are the pruned
    model's, the target is met when the plan says so, every group that lost slots keeps a
    multiple of round_to, and the oracle holds."""
    model = build_plan(plan, seed=len(plan))
    criterion = data.draw(st.sampled_from(["l1", "l2", "bn_scale", "random", "activation"]),
                          label="criterion")
    keep = data.draw(st.sampled_from([0.5, 0.7, 0.9]), label="keep")
    round_to = data.draw(st.sampled_from([1, 2]), label="round_to")
    scope = data.draw(st.sampled_from(["global", "uniform"]), label="scope")
    x = random_inputs(model, n=4)
    result = prune(model, flops=keep, criterion=criterion, scope=scope, round_to=round_to,
                   data=x if criterion == "activation" else None, strict=False, verbose=0)
    step = result.plans[0]
    assert (result.params[1], result.flops[1]) == (step.params[1], step.flops[1])
    assert not step.met or result.flops[1] <= keep * result.flops[0]
    for group in step.groups:
        if group.deleted.size:
            assert group.width_after % round_to == 0, group
    if not step.request:
        event("nothing could go")
        return
    event(f"{len(step.request)} layers lose neurons")
    check_oracle(model, result, x)
