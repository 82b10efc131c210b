"""Network Trimming: iterative APoZ pruning with fine-tuning, for compiled Keras models.

Hu et al. 2016, "Network Trimming: A Data-Driven Neuron Pruning Approach towards Efficient
Deep Architectures" (arXiv:1607.03250). Each round measures the APoZ of the chosen layers'
neurons on validation data, deletes the neurons whose APoZ is high (by default above the
layer's mean + 1 standard deviation), fine-tunes the smaller network from its remaining
weights, and evaluates it. Rounds repeat until no neuron qualifies, the accuracy falls more
than a tolerance below the starting accuracy, or a round limit; the smallest model that kept
the accuracy is returned, with the history of every round.

The user's model is only read: every round works on a new model built by
:func:`kerasprune.delete_neurons`, compiled with a fresh copy of the user's compile settings.
"""

from __future__ import annotations

import copy
import math
import time
import warnings
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import keras
import numpy as np

from kerasprune.core import apoz as core_apoz
from kerasprune.core import cost
from kerasprune.core.graph import Graph, PruneError
from kerasprune.core.rules import rule_for
from kerasprune.core.surgery import prunable_layers

if TYPE_CHECKING:
    from kerasprune.adapters.keras import KerasGraph, LayerRef

__all__ = ["TrimResult", "TrimRound", "trim"]

_SLACK = 1e-9
"""Float slack of the tolerance test (metrics are float32 averages)."""


@dataclass(frozen=True)
class TrimRound:
    """One round of :func:`trim` (round 0 is the starting model, as given).

    Attributes
    ----------
    round : int
        0 for the starting model, then 1, 2...
    deleted : Mapping[str, tuple[int, ...]]
        The neurons deleted in this round, per trimmed layer, as indices into the layer of the
        previous round's model (empty for round 0 and for layers that lost none).
    costs : tuple of kerasprune.core.cost.LayerCost
        Every layer's width, params and FLOPs after this round.
    accuracy : float
        The value of the tracked metric (``accuracy`` by default) on the validation data,
        after fine-tuning.
    metrics : Mapping[str, float]
        Everything ``model.evaluate`` returned (loss and every compiled metric).
    accepted : bool
        Whether ``accuracy`` is within the tolerance of round 0's.
    epochs : int
        Fine-tuning epochs run in this round (recovery epochs included).
    seconds : float
        Wall time of the round: measuring, deleting, fine-tuning and evaluating.
    """

    round: int
    deleted: Mapping[str, tuple[int, ...]]
    costs: tuple[cost.LayerCost, ...]
    accuracy: float
    metrics: Mapping[str, float]
    accepted: bool
    epochs: int
    seconds: float

    @property
    def widths(self) -> dict[str, int]:
        """Width (neurons) of every layer that has neurons, in graph order."""
        return {c.name: c.width for c in self.costs if c.width is not None}

    @property
    def params(self) -> int:
        """Total parameters (non-trainable ones included, as ``count_params``)."""
        return cost.total(self.costs)[0]

    @property
    def flops(self) -> int:
        """Total FLOPs of one sample's forward pass (a multiply-add counts as two)."""
        return cost.total(self.costs)[1]


@dataclass(frozen=True, eq=False)
class TrimResult:
    """What :func:`trim` returns: the trimmed model and the history of every round.

    Attributes
    ----------
    model : keras.Model
        The model of round :attr:`best`: the one with the fewest parameters among the rounds
        whose accuracy stayed within the tolerance (round 0, a copy of the input model, if
        none did). It is compiled with the input model's compile settings (a fresh optimizer).
    history : tuple of TrimRound
        Round 0 (the starting model), then every round run, the rejected last one included.
    best : int
        The round :attr:`model` comes from.
    layers : tuple of str
        The layers that were trimmed.
    metric : str
        The name of the tracked metric.
    tolerance : float
        The accepted drop of the metric below round 0's.
    stopped : str
        Why trimming stopped.
    """

    model: keras.Model
    history: tuple[TrimRound, ...]
    best: int
    layers: tuple[str, ...]
    metric: str
    tolerance: float
    stopped: str

    @property
    def before(self) -> TrimRound:
        """Round 0: the starting model."""
        return self.history[0]

    @property
    def after(self) -> TrimRound:
        """The round of the returned model."""
        return self.history[self.best]

    def table(self, extra: Mapping[str, tuple[str, str]] | None = None) -> str:
        """A before/after table of widths, params, FLOPs and the metric.

        Parameters
        ----------
        extra
            More footer rows, e.g. ``{"test accuracy": ("99.06%", "99.02%")}``.

        Returns
        -------
        str
            The table of :func:`kerasprune.core.cost.compare`, with a row for the tracked
            metric on the validation data.
        """
        rows = {f"val {self.metric}": (_fmt(self.before.accuracy), _fmt(self.after.accuracy)),
                **(extra or {})}
        return cost.compare(self.before.costs, self.after.costs, rows)

    def rounds(self) -> str:
        """One line per round: trimmed layers' widths, params, FLOPs, metric, time."""
        return "\n".join(_round_line(r, self.layers, self.metric) for r in self.history)

    def __str__(self) -> str:
        return (f"{self.table()}\n\nrounds ({self.stopped}; kept round {self.best}):\n"
                f"{self.rounds()}")


def _fmt(value: float) -> str:
    return f"{value:.4f}"


def _round_line(r: TrimRound, layers: Iterable[str], metric: str) -> str:
    widths = r.widths
    parts = []
    for name in layers:
        lost = len(r.deleted.get(name, ()))
        parts.append(f"{name} {widths.get(name)}" + (f" (-{lost})" if lost else ""))
    verdict = "" if r.round == 0 else ("  ok" if r.accepted else "  below tolerance")
    epochs = f", {r.epochs} epoch{'s' if r.epochs != 1 else ''}" if r.round else ""
    return (f"round {r.round}: {', '.join(parts)} | params {r.params:,} | FLOPs {r.flops:,} | "
            f"{metric} {_fmt(r.accuracy)}{verdict} | {r.seconds:.1f}s{epochs}")


# --------------------------------------------------------------------------------------------
# Layers, data, compiling
# --------------------------------------------------------------------------------------------


def _adapter() -> Any:
    # Imported here: kerasprune.adapters.keras imports this module at its end.
    from kerasprune.adapters import keras as adapter

    return adapter


def _output_layers(graph: Graph) -> set[str]:
    """The last layers with neurons before each model output (through layers without)."""
    producer = {t: node for node in graph.nodes for t in node.outputs}
    found: set[str] = set()
    stack, seen = list(graph.outputs), set()
    while stack:
        t = stack.pop()
        if t in seen or t not in producer:
            continue
        seen.add(t)
        node = producer[t]
        if rule_for(graph.layers[node.layer].kind).targetable:
            found.add(node.layer)
        else:
            stack.extend(node.inputs)
    return found


def _trim_layers(kg: KerasGraph, layers: LayerRef | Iterable[LayerRef] | None) -> list[str]:
    """The graph names of the layers to trim, checked to be measurable."""
    from kerasprune.adapters.keras_apoz import site_check

    graph = kg.graph
    check = site_check(kg)
    if layers is not None:
        single = (str, int, np.integer, keras.layers.Layer)
        refs = [layers] if isinstance(layers, single) else list(layers)
        if not refs:
            raise ValueError("layers is empty: name the layers to trim, or pass None for all")
        names = [_adapter()._layer_path(kg, ref) for ref in refs]
        return list(core_apoz.measurement_sites(graph, names, check=check))
    outputs = _output_layers(graph)
    names, skipped = [], {}
    for name in prunable_layers(graph):
        if name in outputs:
            continue
        try:
            site = core_apoz.measurement_site(graph, name)
            why = check(graph, site)
            if why is not None:
                raise PruneError(f"cannot measure the APoZ of '{name}': {why}")
        except PruneError as err:
            skipped[name] = str(err)
            continue
        names.append(name)
    if not names:
        raise PruneError(
            "no layer of the model can be trimmed (the output layer is never trimmed)"
            + "".join(f"\n- {why}" for why in skipped.values()))
    if skipped:
        warnings.warn(
            f"trim leaves out {len(skipped)} layer{'s' if len(skipped) > 1 else ''} whose APoZ "
            f"cannot be measured ({', '.join(map(repr, skipped))}); pass `layers` to silence "
            "this:\n" + "\n".join(f"- {why}" for why in skipped.values()),
            core_apoz.ApozWarning, stacklevel=3)
    return names


def _compile_config(model: keras.Model, learning_rate: Any) -> dict[str, Any]:
    config = model.get_compile_config() if getattr(model, "compiled", False) else {}
    if not config:
        raise ValueError(
            f"model '{model.name}' is not compiled: trim fine-tunes and evaluates it with its "
            "compile settings; call model.compile(optimizer=..., loss=..., "
            "metrics=['accuracy']) first")
    config = copy.deepcopy(config)
    if learning_rate is not None:
        optimizer = keras.optimizers.get(copy.deepcopy(config["optimizer"]))
        settings = optimizer.get_config()
        settings["learning_rate"] = copy.deepcopy(learning_rate)
        config["optimizer"] = keras.optimizers.serialize(type(optimizer).from_config(settings))
    return config


def _compile(model: keras.Model, config: Mapping[str, Any]) -> None:
    """Compile with a fresh copy of ``config`` (new optimizer, loss and metric objects)."""
    model.compile_from_config(copy.deepcopy(dict(config)))


def _split(data: Any) -> tuple[tuple[Any, ...], bool]:
    """``(x, y[, sample_weight])`` as a tuple of arrays, and whether ``data`` is one."""
    if isinstance(data, tuple) and 2 <= len(data) <= 3:
        return data, True
    return (data,), False


def _evaluate(model: keras.Model, data: Any, batch_size: int) -> dict[str, float]:
    parts, arrays = _split(data)
    if arrays:
        x, y, *rest = parts
        result = model.evaluate(x, y, sample_weight=rest[0] if rest else None,
                                batch_size=batch_size, verbose=0, return_dict=True)
    else:
        result = model.evaluate(data, verbose=0, return_dict=True)
    return {str(k): float(v) for k, v in result.items()}


def _fit(model: keras.Model, data: Any, epochs: int, batch_size: int, verbose: int,
         fit_kwargs: Mapping[str, Any]) -> None:
    parts, arrays = _split(data)
    kwargs: dict[str, Any] = {"epochs": epochs, "verbose": 2 if verbose >= 2 else 0}
    if arrays:
        x, y, *rest = parts
        kwargs.update(x=x, y=y, batch_size=batch_size)
        if rest:
            kwargs["sample_weight"] = rest[0]
    else:
        kwargs["x"] = data
    kwargs.update(fit_kwargs)
    model.fit(**kwargs)


def _pick_metric(metric: str | None, results: Mapping[str, float]) -> str:
    if metric is not None:
        if metric not in results:
            raise ValueError(f"metric {metric!r} is not among what model.evaluate returns: "
                             f"{sorted(results)}; compile the model with it")
        return metric
    if "accuracy" in results:
        return "accuracy"
    found = [k for k in results if k.endswith(("accuracy", "acc"))]
    if not found:
        raise ValueError(
            f"no accuracy metric among what model.evaluate returns ({sorted(results)}): "
            "compile the model with metrics=['accuracy'], or name a metric (higher is better) "
            "as `metric`")
    return found[0]


def _positive_int(name: str, value: Any, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


# --------------------------------------------------------------------------------------------
# The loop
# --------------------------------------------------------------------------------------------


def trim(model: keras.Model, train_data: Any, val_data: Any,
         layers: LayerRef | Iterable[LayerRef] | None = None, *,
         method: str = "std", k: float = 1.0, cutoff: float | None = None,
         fraction: float | None = None, epochs: int = 2, recover_epochs: int = 0,
         max_rounds: int | None = 10,
         tolerance: float = 0.001, metric: str | None = None, batch_size: int = 32,
         learning_rate: float | keras.optimizers.schedules.LearningRateSchedule | None = None,
         apoz_data: Any = None,
         fit_kwargs: Mapping[str, Any] | None = None, verbose: int = 1,
         callback: Callable[[TrimRound, keras.Model], Any] | None = None) -> TrimResult:
    """Network Trimming: delete high-APoZ neurons and fine-tune, round after round.

    Each round (Hu et al. 2016, arXiv:1607.03250):

    1. measure the APoZ (share of zero activations) of each trimmed layer's neurons on the
       validation data (:func:`kerasprune.get_apoz`);
    2. delete the neurons the APoZ rule selects, in every trimmed layer at once
       (:func:`kerasprune.delete_neurons`), keeping every other weight;
    3. fine-tune the smaller model for ``epochs`` on the training data, with a fresh
       optimizer built from the model's compile settings;
    4. evaluate it on the validation data.

    It stops when no neuron qualifies, when the metric falls more than ``tolerance`` below
    the starting model's (that round's model is discarded), after ``max_rounds`` rounds, or
    when ``callback`` asks to.

    Parameters
    ----------
    model
        A built, compiled Sequential or functional Keras model, trained. It is not modified.
        Its compile settings (``model.get_compile_config()``: optimizer class and config,
        loss, metrics...) are used for every round's model.
    train_data
        Fine-tuning data: a tuple ``(x, y)`` or ``(x, y, sample_weight)`` of arrays, split
        into batches of ``batch_size``; or anything ``model.fit`` takes as ``x`` alone (a
        ``tf.data.Dataset``, a ``keras.utils.PyDataset``...). It is read every round, so
        it must be re-iterable (not a one-shot generator).
    val_data
        Data to evaluate on (and to measure APoZ on, unless ``apoz_data`` is given): as
        ``train_data``, with labels.
    layers
        The layers to trim (by name, index in ``model.layers`` or object; one or a list).
        ``None``: every layer with neurons except the model's output layer(s), leaving out
        (with one :class:`kerasprune.core.apoz.ApozWarning`) those whose APoZ cannot be
        measured, such as a layer without a ReLU after it.
    method, k, cutoff, fraction
        The APoZ rule, as in :func:`kerasprune.core.apoz.high_apoz`. The default is the
        paper's: delete the neurons whose APoZ is above their layer's mean + ``k`` standard
        deviations, with ``k = 1``. ``"absolute"`` with a ``cutoff``, ``"both"``, and
        ``"top"`` with a ``fraction`` per round are the alternatives.
    epochs
        Fine-tuning epochs per round (``0`` for none).
    recover_epochs
        If a round's metric is below the tolerance after ``epochs``, fine-tune it for up to
        this many more epochs, one at a time, before rejecting it (the metric of a freshly
        trimmed network often needs longer to recover than a fixed budget gives it).
    max_rounds
        At most this many rounds (``None``: until the metric or the APoZ rule stops it).
    tolerance
        The accepted drop of the metric below the starting model's, in the metric's units:
        for accuracy, ``0.001`` is 0.1 points. ``0`` accepts no drop at all.
    metric
        The name of a metric ``model.evaluate`` returns, higher is better. ``None``:
        ``"accuracy"`` or the first metric whose name ends in ``accuracy``/``acc``.
    batch_size
        Batch size for in-memory arrays (fit, evaluate and APoZ).
    learning_rate
        Fine-tune with this learning rate instead of the compiled optimizer's (the rest of
        the optimizer's config is kept): a number, or a
        ``keras.optimizers.schedules.LearningRateSchedule``. A schedule (the compiled one or
        this one) restarts every round, since every round gets a fresh optimizer: a decay
        over one round's steps gives each round a warm restart.
    apoz_data
        Data to measure APoZ on (inputs, or ``(x, y)``); defaults to ``val_data``, as in the
        paper.
    fit_kwargs
        More keyword arguments for ``model.fit`` (``callbacks``, ``shuffle``,
        ``validation_data``...); they override trim's own (``epochs``, ``batch_size``).
    verbose
        0: silent; 1: one line per round; 2: also Keras's per-epoch lines while fine-tuning.
    callback
        Called after each round, round 0 included, as ``callback(trim_round, round_model)``;
        return ``True`` to stop after this round. It may save the model, log, etc., but
        should not change it.

    Returns
    -------
    TrimResult
        ``.model`` (the smallest model within the tolerance, compiled), ``.history`` (one
        :class:`TrimRound` per round) and ``.table()`` (a before/after table); ``str()`` of it
        gives the table and one line per round.

    Raises
    ------
    ValueError
        If the model is not compiled, the metric is not found, or an argument is invalid.
    PruneError
        If a named layer cannot be trimmed, or no layer can.

    Examples
    --------
    >>> model.compile("adam", "sparse_categorical_crossentropy", metrics=["accuracy"])
    ... # doctest: +SKIP
    >>> model.fit(x_train, y_train, epochs=10)  # doctest: +SKIP
    >>> result = kerasprune.trim(model, (x_train, y_train), (x_val, y_val))  # doctest: +SKIP
    >>> print(result.table())  # doctest: +SKIP
    >>> smaller = result.model  # doctest: +SKIP
    """
    adapter = _adapter()
    epochs = _positive_int("epochs", epochs, 0)
    recover_epochs = _positive_int("recover_epochs", recover_epochs, 0)
    batch_size = _positive_int("batch_size", batch_size)
    if max_rounds is not None:
        max_rounds = _positive_int("max_rounds", max_rounds, 0)
    if verbose not in (0, 1, 2) or isinstance(verbose, bool):
        raise ValueError(f"verbose must be 0, 1 or 2, got {verbose!r}")
    if isinstance(tolerance, bool) or not isinstance(tolerance, (int, float, np.number)) or not (
            math.isfinite(float(tolerance)) and float(tolerance) >= 0):
        raise ValueError(f"tolerance must be a finite number >= 0, got {tolerance!r}")
    tolerance = float(tolerance)
    if learning_rate is not None and not isinstance(
            learning_rate, keras.optimizers.schedules.LearningRateSchedule):
        if isinstance(learning_rate, bool) or not isinstance(
                learning_rate, (int, float, np.number)) or not float(learning_rate) > 0:
            raise ValueError(f"learning_rate must be a number > 0 or a LearningRateSchedule, "
                             f"got {learning_rate!r}")
        learning_rate = float(learning_rate)
    # Check the APoZ rule before anything slow runs.
    core_apoz.high_apoz(np.array([0.0, 1.0]), method, k=k, cutoff=cutoff, fraction=fraction)
    config = _compile_config(model, learning_rate)
    fit_kwargs = dict(fit_kwargs or {})
    apoz_source = val_data if apoz_data is None else apoz_data

    start = time.monotonic()
    kg = adapter.to_graph(model)
    names = _trim_layers(kg, layers)
    current = adapter.from_graph(kg, kg.graph)  # a copy: the user's model is never touched
    _compile(current, config)
    results = _evaluate(current, val_data, batch_size)
    metric = _pick_metric(metric, results)
    base = results[metric]
    floor = base - tolerance - _SLACK
    history = [TrimRound(0, {}, tuple(adapter.count(current)), base, results, True, 0,
                         time.monotonic() - start)]
    best, best_model = 0, current
    stopped = "max_rounds reached"

    def report(r: TrimRound, m: keras.Model) -> bool:
        if verbose:
            print(_round_line(r, names, metric), flush=True)
        return bool(callback(r, m)) if callback is not None else False

    if report(history[0], current):
        stopped = "stopped by callback"
    else:
        r = 0
        while max_rounds is None or r < max_rounds:
            r += 1
            t0 = time.monotonic()
            dead = adapter.high_apoz(current, apoz_source, names, method=method, k=k,
                                     cutoff=cutoff, fraction=fraction, batch_size=batch_size,
                                     verbose=0)
            dead = {name: idx for name, idx in dead.items() if len(idx)}
            if not dead:
                stopped = f"no neuron qualifies for deletion in round {r}"
                break
            current = adapter.delete_neurons(current, dead)
            _compile(current, config)
            if epochs:
                _fit(current, train_data, epochs, batch_size, verbose, fit_kwargs)
            results = _evaluate(current, val_data, batch_size)
            ran = epochs
            while results[metric] < floor and ran < epochs + recover_epochs:
                _fit(current, train_data, 1, batch_size, verbose, fit_kwargs)
                results = _evaluate(current, val_data, batch_size)
                ran += 1
            score = results[metric]
            accepted = score >= floor
            round_ = TrimRound(
                r, {name: tuple(int(i) for i in idx) for name, idx in dead.items()},
                tuple(adapter.count(current)), score, results, accepted, ran,
                time.monotonic() - t0)
            history.append(round_)
            if accepted and round_.params <= history[best].params:
                best, best_model = r, current
            if report(round_, current):
                stopped = f"stopped by callback in round {r}"
                break
            if not accepted:
                stopped = (f"{metric} fell more than {tolerance:g} below the start in round "
                           f"{r} ({_fmt(score)} < {_fmt(base)})")
                break
    return TrimResult(best_model, tuple(history), best, tuple(names), metric, tolerance,
                      stopped)

