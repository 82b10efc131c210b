"""Network Trimming: iterative APoZ pruning with fine-tuning, for compiled Keras models.

Hu et al. 2016, "Network Trimming: A Data-Driven Neuron Pruning Approach towards Efficient
Deep Architectures" (arXiv:1607.03250). Each round measures the APoZ of the chosen layers'
neurons on validation data, deletes the neurons whose APoZ is high (by default above the
layer's mean + 1 standard deviation), fine-tunes the smaller network from its remaining
weights, and evaluates it. Rounds repeat until no neuron qualifies, the tracked metric gets
worse than a tolerance allows (in its own direction: accuracy falls, an error rises), or a
round limit; the smallest model that kept the metric is returned, with the history of every
round.

A run is a long job, built to be trusted as one: every argument and the data are checked
before any work; a status line says what each round is doing and how long it has left; an
interrupt (Ctrl-C) returns the best model so far, another exception carries it
(:class:`TrimError`); and with ``checkpoint_dir`` every accepted round is written to
disk atomically, so that a run killed at any point resumes after its last finished round.

The user's model is only read. Each round reads its model as a graph once (:mod:`.convert`),
measures the APoZ, deletes neurons (:func:`.surgery.pruned_graph`) and counts parameters and
FLOPs on that graph, and builds the new model from it (:mod:`.build`), compiled with a fresh
copy of the user's compile settings.
"""

from __future__ import annotations

import dataclasses
import inspect
import json
import math
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import keras
import numpy as np

from kerasprune.adapters.keras import build, checkpoint, convert, finetune, surgery
from kerasprune.adapters.keras import data as keras_data
from kerasprune.adapters.keras.apoz import measure, site_check
from kerasprune.adapters.keras.progress import KerasHook, RoundProgress
from kerasprune.adapters.keras.record import KerasGraph
from kerasprune.adapters.keras.refs import LayerRef, layer_names
from kerasprune.core import apoz as core_apoz
from kerasprune.core import cost
from kerasprune.core.graph import Graph, PruneError
from kerasprune.core.rules import rule_for

if TYPE_CHECKING:
    import os


__all__ = ["TrimConfig", "TrimError", "TrimResult", "TrimRound", "trim"]

_SLACK = 1e-9
"""Float slack of the tolerance test (metrics are float32 averages)."""

_MODES = ("auto", "max", "min")


class _Default:
    """The default of a :func:`trim` setting: the field of the ``config`` passed, else
    :class:`TrimConfig`'s default (the one place defaults are written)."""

    def __repr__(self) -> str:
        return "<TrimConfig's default>"


_DEFAULT: Any = _Default()


# --------------------------------------------------------------------------------------------
# Settings
# --------------------------------------------------------------------------------------------


def _checked_int(name: str, value: Any, minimum: int = 1, optional: bool = False) -> int | None:
    if value is None and optional:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}"
                         f"{' or None' if optional else ''}, got {value!r}")
    return int(value)


def _checked_real(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.number)):
        raise TypeError(f"{name} must be a number, got {value!r}")
    return float(value)


@dataclass(frozen=True)
class TrimConfig:
    """The settings of a :func:`trim` run: everything that decides its result.

    :func:`trim` builds one from its keyword arguments of the same names, checking every
    one before any work, and returns it as :attr:`TrimResult.config`. A checkpoint records
    it, and resuming from the checkpoint requires the same settings (``max_rounds`` aside,
    so that a finished run can be continued for more rounds).

    Raises
    ------
    ValueError, TypeError
        For an invalid setting (see :func:`trim` for each one's meaning).
    """

    method: str = "std"
    k: float = 1.0
    cutoff: float | None = None
    fraction: float | None = None
    epochs: int = 2
    recover_epochs: int = 0
    max_rounds: int | None = 10
    tolerance: float = 0.001
    metric: str | None = None
    mode: str = "auto"
    batch_size: int = 32
    learning_rate: float | keras.optimizers.schedules.LearningRateSchedule | None = None
    steps_per_epoch: int | None = None
    val_steps: int | None = None
    apoz_steps: int | None = None

    def __post_init__(self) -> None:
        def put(name: str, value: Any) -> None:
            object.__setattr__(self, name, value)

        put("epochs", _checked_int("epochs", self.epochs, 0))
        put("recover_epochs", _checked_int("recover_epochs", self.recover_epochs, 0))
        put("max_rounds", _checked_int("max_rounds", self.max_rounds, 0, optional=True))
        put("batch_size", _checked_int("batch_size", self.batch_size))
        for name in ("steps_per_epoch", "val_steps", "apoz_steps"):
            put(name, _checked_int(name, getattr(self, name), 1, optional=True))
        tolerance = _checked_real("tolerance", self.tolerance)
        if not (math.isfinite(tolerance) and tolerance >= 0):
            raise ValueError(f"tolerance must be a finite number >= 0, got {self.tolerance!r}")
        put("tolerance", tolerance)
        if self.metric is not None and not isinstance(self.metric, str):
            raise TypeError(f"metric must be the name of a metric (a str) or None, got "
                            f"{self.metric!r}")
        if self.mode not in _MODES:
            raise ValueError(f"mode must be 'auto', 'max' (higher is better) or 'min' (lower "
                             f"is better), got {self.mode!r}")
        lr = self.learning_rate
        if lr is not None and not isinstance(lr, keras.optimizers.schedules.LearningRateSchedule):
            if isinstance(lr, bool) or not isinstance(lr, (int, float, np.number)) or not (
                    math.isfinite(float(lr)) and float(lr) > 0):
                raise ValueError(f"learning_rate must be a number > 0 or a "
                                 f"LearningRateSchedule, got {lr!r}")
            put("learning_rate", float(lr))
        # The APoZ rule, checked on a dummy layer.
        core_apoz.select_high_apoz(np.array([0.0, 1.0]), self.method, k=self.k, cutoff=self.cutoff,
                            fraction=self.fraction)

    def settings(self) -> dict[str, Any]:
        """The settings as JSON values (a schedule as its Keras serialization)."""
        out: dict[str, Any] = {}
        for name in self.__dataclass_fields__:
            value = getattr(self, name)
            if isinstance(value, keras.optimizers.schedules.LearningRateSchedule):
                value = keras.optimizers.schedules.serialize(value)
            elif isinstance(value, np.generic):
                value = value.item()
            out[name] = value
        return _jsonable(out)


def _jsonable(value: Mapping[str, Any]) -> dict[str, Any]:
    """``value`` as it comes back from JSON (tuples become lists...)."""
    out: dict[str, Any] = json.loads(json.dumps(value, sort_keys=True, default=repr))
    return out


# --------------------------------------------------------------------------------------------
# Results
# --------------------------------------------------------------------------------------------


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
        The value of the tracked metric (``accuracy`` by default, whatever the metric is) on
        the validation data, after fine-tuning.
    metrics : Mapping[str, float]
        Everything ``model.evaluate`` returned (loss and every compiled metric).
    accepted : bool
        Whether ``accuracy`` is within the tolerance of round 0's, in the metric's direction.
    epochs : int
        Fine-tuning epochs that ran in this round, recovery epochs included (counted as they
        ran: a callback that stops training early gives fewer).
    seconds : float
        Wall time of the round: measuring, deleting, fine-tuning and evaluating.
    recovery_epochs : int
        Of ``epochs``, those run to recover a metric out of tolerance (``recover_epochs``).
    steps : int
        Training steps (batches) that ran in this round.
    """

    round: int
    deleted: Mapping[str, tuple[int, ...]]
    costs: tuple[cost.LayerCost, ...]
    accuracy: float
    metrics: Mapping[str, float]
    accepted: bool
    epochs: int
    seconds: float
    recovery_epochs: int = 0
    steps: int = 0

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

    def to_json(self) -> dict[str, Any]:
        """The round as JSON values (for a checkpoint)."""
        return {
            "round": self.round, "deleted": {k: list(v) for k, v in self.deleted.items()},
            "costs": [[c.name, c.kind, c.width, c.params, c.flops] for c in self.costs],
            "accuracy": self.accuracy, "metrics": dict(self.metrics),
            "accepted": self.accepted, "epochs": self.epochs, "seconds": self.seconds,
            "recovery_epochs": self.recovery_epochs, "steps": self.steps,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> TrimRound:
        """The round :meth:`to_json` wrote."""
        return cls(
            int(data["round"]),
            {str(k): tuple(int(i) for i in v) for k, v in data["deleted"].items()},
            tuple(cost.LayerCost(str(n), str(kind), None if w is None else int(w), int(p),
                                 int(f)) for n, kind, w, p, f in data["costs"]),
            float(data["accuracy"]), {str(k): float(v) for k, v in data["metrics"].items()},
            bool(data["accepted"]), int(data["epochs"]), float(data["seconds"]),
            int(data.get("recovery_epochs", 0)), int(data.get("steps", 0)))


@dataclass(frozen=True, eq=False)
class TrimResult:
    """What :func:`trim` returns: the trimmed model and the history of every round.

    Attributes
    ----------
    model : keras.Model
        The model of round :attr:`best`: the one with the fewest parameters among the rounds
        whose metric stayed within the tolerance (round 0, a copy of the input model, if
        none did). It is compiled with the input model's compile settings (a fresh optimizer).
    history : tuple of TrimRound
        Round 0 (the starting model), then every round that finished, the rejected last one
        included (a round cut short by an interrupt is not in it).
    best : int
        The round :attr:`model` comes from.
    layers : tuple of str
        The layers that were trimmed.
    metric : str
        The name of the tracked metric.
    tolerance : float
        The accepted change of the metric for the worse, in its units.
    stopped : str
        Why trimming stopped.
    mode : str
        ``"max"`` if a higher metric is better, ``"min"`` if a lower one is.
    config : TrimConfig
        The run's settings.
    resumed_from : int or None
        The last round a checkpoint held when this call resumed it (``None``: not resumed).
    error : BaseException or None
        The interrupt or exception that ended the run early, if one did.
    checkpoint_dir : str or None
        The checkpoint directory, if the run wrote one.
    """

    model: keras.Model
    history: tuple[TrimRound, ...]
    best: int
    layers: tuple[str, ...]
    metric: str
    tolerance: float
    stopped: str
    mode: str = "max"
    config: TrimConfig = field(default_factory=TrimConfig)
    resumed_from: int | None = None
    error: BaseException | None = None
    checkpoint_dir: str | None = None

    @property
    def before(self) -> TrimRound:
        """Round 0: the starting model."""
        return self.history[0]

    @property
    def after(self) -> TrimRound:
        """The round of the returned model."""
        return self.history[self.best]

    @property
    def interrupted(self) -> bool:
        """Whether an interrupt or an exception ended the run before its own rules did."""
        return self.error is not None

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
        rows = {f"val {self.metric}": (_metric_text(self.before.accuracy),
                                       _metric_text(self.after.accuracy)),
                **(extra or {})}
        return cost.compare(self.before.costs, self.after.costs, rows)

    def rounds(self) -> str:
        """One line per round: trimmed layers' widths, params, FLOPs, metric, time."""
        return "\n".join(_round_line(r, self.layers, self.metric, self.mode)
                         for r in self.history)

    def __str__(self) -> str:
        return (f"{self.table()}\n\nrounds ({self.stopped}; kept round {self.best}):\n"
                f"{self.rounds()}")


class TrimError(RuntimeError):
    """An exception ended a :func:`trim` run after round 0; it carries the best result so far.

    Raised from the exception (its ``__cause__``): one from a Keras callback, from
    :func:`trim`'s ``callback``, or from the backend. A ``KeyboardInterrupt`` is not turned
    into this: :func:`trim` returns its result instead.

    Attributes
    ----------
    result : TrimResult
        The rounds that finished and the best model among them (``result.error`` is the
        exception, ``result.stopped`` says where it happened).
    """

    def __init__(self, result: TrimResult) -> None:
        resume = (f"; call trim again with checkpoint_dir={result.checkpoint_dir!r} to resume"
                  if result.checkpoint_dir else "")
        super().__init__(f"trim {result.stopped}; the best model so far (round {result.best}, "
                         f"{result.after.params:,} params) is in this exception's .result"
                         f"{resume}")
        self.result = result


def _metric_text(value: float) -> str:
    return f"{value:.4f}"


def _round_line(r: TrimRound, layers: Iterable[str], metric: str, mode: str = "max") -> str:
    widths = r.widths
    parts = []
    for name in layers:
        lost = len(r.deleted.get(name, ()))
        parts.append(f"{name} {widths.get(name)}" + (f" (-{lost})" if lost else ""))
    worse = "below tolerance" if mode == "max" else "above tolerance"
    verdict = "" if r.round == 0 else ("  ok" if r.accepted else f"  {worse}")
    epochs = ""
    if r.round:
        epochs = f", {r.epochs} epoch{'s' if r.epochs != 1 else ''}"
        if r.recovery_epochs:
            epochs += f" ({r.recovery_epochs} recovery)"
    return (f"round {r.round}: {', '.join(parts)} | params {r.params:,} | FLOPs {r.flops:,} | "
            f"{metric} {_metric_text(r.accuracy)}{verdict} | {r.seconds:.1f}s{epochs}")


def _settings(config: TrimConfig | None, given: Mapping[str, Any]) -> TrimConfig:
    """:func:`trim`'s settings: ``config`` (or the defaults), with the keyword arguments
    given replacing its fields (checked again)."""
    if config is None:
        return TrimConfig(**given)
    if not isinstance(config, TrimConfig):
        raise TypeError(f"config must be a TrimConfig, got {type(config).__name__}")
    return dataclasses.replace(config, **given) if given else config


# --------------------------------------------------------------------------------------------
# Layers, compiling, metric, fit arguments
# --------------------------------------------------------------------------------------------


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


def _blocks(graph: Graph, name: str) -> int:
    """How many equal blocks a layer's neurons form (a grouped convolution's groups)."""
    spec = graph.layers[name]
    return rule_for(spec.kind).neuron_blocks(spec)


def _trim_layers(kg: KerasGraph, layers: LayerRef | Iterable[LayerRef] | None) -> list[str]:
    """The graph names of the layers to trim, checked to be measurable."""
    graph = kg.graph
    check = site_check(kg)
    names = layer_names(kg, layers, what="trim")
    if names is not None:
        return list(core_apoz.measurement_sites(graph, names, check=check))
    sites = core_apoz.measurement_sites(graph, check=check, leave_out=_output_layers(graph),
                                        stacklevel=4)
    if not sites:
        raise PruneError("no layer of the model can be trimmed (the output layer is never "
                         "trimmed)")
    return list(sites)


_compile = finetune.compile_fresh


# --------------------------------------------------------------------------------------------
# The run
# --------------------------------------------------------------------------------------------


@dataclass
class _Inputs:
    """What a run reads: the checked data, settings and hooks."""

    model: keras.Model
    kg: KerasGraph
    names: list[str]
    config: TrimConfig
    compiled: dict[str, Any]
    train: keras_data.Source
    val: keras_data.Source
    apoz: keras_data.Source
    apoz_given: bool
    fit_kwargs: dict[str, Any]
    verbose: int
    callback: Callable[[TrimRound, keras.Model], Any] | None
    directory: Path | None


class _Run:
    """One call of :func:`trim`: its state between rounds."""

    def __init__(self, inputs: _Inputs) -> None:
        self.i = inputs
        self.config = inputs.config
        self.progress = RoundProgress(inputs.verbose, inputs.config.max_rounds)
        self.history: list[TrimRound] = []
        self.models: dict[int, str] = {}  # checkpoint files of accepted rounds
        self.current: keras.Model | None = None
        self.current_kg: KerasGraph | None = None  # its graph, read when a round needs it
        self.best = 0
        self.best_model: keras.Model | None = None
        self.metric = ""
        self.mode = "max"
        self.base = math.nan
        self.stopped = "running"
        self.final = False  # ended by its own rules: resuming runs no more rounds
        self.resumed_from: int | None = None
        self.r = 0
        self.doing = "starting"
        self.fingerprint: dict[str, Any] = {}

    # ---- the whole run -----------------------------------------------------------------

    def run(self) -> TrimResult:
        i = self.i
        state = None
        if i.directory is not None:
            state = checkpoint.read_state(i.directory)
            self.fingerprint = self._fingerprint()
        if state is not None:
            self._resume(state)
        else:
            self._round_zero()
        try:
            if self.resumed_from is None:
                self._save_state()
                self.doing = "in the callback"
                if self._report(self.history[0], self._current()):
                    self.stopped = "stopped by callback"
                    return self._result()
            if not self.final:
                self._rounds()
        except KeyboardInterrupt as err:
            self.progress.clear()
            self.stopped = f"interrupted by KeyboardInterrupt in round {self.r} ({self._doing()})"
            if i.verbose:
                print(f"{self.stopped}: returning round {self.best}", flush=True)
            return self._result(err)
        except Exception as err:
            self.progress.clear()
            self.stopped = (f"stopped by {type(err).__name__} in round {self.r} "
                            f"({self._doing()}): {err}")
            raise TrimError(self._result(err)) from err
        return self._result()

    def _doing(self) -> str:
        return self.progress.phase or self.doing

    def _current(self) -> keras.Model:
        assert self.current is not None
        return self.current

    def _current_graph(self) -> KerasGraph:
        """The current model's graph: read once, when a round starts (after the model's
        fine-tuning and the callback), and used for all of the round's measuring, deleting
        and counting."""
        if self.current_kg is None:
            self.current_kg = convert.to_graph(self._current())
        return self.current_kg

    def _hold(self, model: keras.Model) -> None:
        """Make ``model`` the current one (its graph is read when the next round starts)."""
        self.current, self.current_kg = model, None

    def _result(self, error: BaseException | None = None) -> TrimResult:
        model = self.best_model if self.best_model is not None else self._copy()
        i = self.i
        return TrimResult(model, tuple(self.history), self.best, tuple(i.names), self.metric,
                          self.config.tolerance, self.stopped, self.mode, self.config,
                          self.resumed_from, error,
                          None if i.directory is None else str(i.directory))

    def _copy(self) -> keras.Model:
        """A compiled copy of the input model (round 0's model)."""
        model = build.from_graph(self.i.kg, self.i.kg.graph)
        _compile(model, self.i.compiled)
        return model

    def _report(self, r: TrimRound, model: keras.Model) -> bool:
        self.progress.clear()
        if self.i.verbose:
            print(_round_line(r, self.i.names, self.metric, self.mode), flush=True)
        return bool(self.i.callback(r, model)) if self.i.callback is not None else False

    # ---- round 0 -----------------------------------------------------------------------

    def _round_zero(self) -> None:
        i = self.i
        start = time.monotonic()
        self.doing = "building round 0's model"
        current = self._copy()
        self.doing = "checking train_data"
        probe = self._probe(current)
        self.metric, self.mode = finetune.pick_metric(self.config.metric, self.config.mode, probe,
                                              current)
        self.progress.begin_round(0, {"evaluate": i.val.batches})
        hook = KerasHook(self.progress, 0, 0, None, i.val.batches)
        try:
            results = self._evaluate(current, hook)
        except Exception as err:
            raise ValueError(f"val_data: model.evaluate failed on it: {type(err).__name__}: "
                             f"{err}") from err
        self.progress.end_round()
        rates = self.progress.rates
        if "evaluate" in rates:  # until timed, a batch of APoZ is guessed to cost one of evaluate
            rates.setdefault("apoz", rates["evaluate"])
        self.base = results[self.metric]
        if not math.isfinite(self.base):
            raise ValueError(f"the model's {self.metric} on val_data is {self.base}: trim "
                             "keeps it within a tolerance of this, so it must be a number")
        # the copy is built from the input model's graph, whose costs it has
        self.history = [TrimRound(0, {}, tuple(surgery.graph_costs(i.kg)), self.base,
                                  results, True, 0, time.monotonic() - start)]
        self._hold(current)
        self.best_model = current

    def _probe(self, model: keras.Model) -> dict[str, float]:
        return finetune.probe(model, self.i.train)

    # ---- rounds ------------------------------------------------------------------------

    def _rounds(self) -> None:
        max_rounds = self.config.max_rounds
        r = self.history[-1].round
        while max_rounds is None or r < max_rounds:
            r += 1
            if self._round(r):
                return
        self.stopped = "max_rounds reached"
        self._save_state()

    def _train_steps(self) -> int | None:
        return self.config.steps_per_epoch or self.i.train.batches

    def _round(self, r: int) -> bool:
        """Run round ``r``; whether the run stops after it."""
        i, config = self.i, self.config
        self.r = r
        start = time.monotonic()
        current, kg = self._current(), self._current_graph()
        spe = self._train_steps()
        epochs_steps = None if spe is None else config.epochs * spe
        self.progress.begin_round(r, {"apoz": i.apoz.batches, "fit": epochs_steps,
                                      "evaluate": i.val.batches})
        self.doing = "measuring APoZ"
        self.progress.begin_phase("apoz", "measuring APoZ", i.apoz.batches)
        report = measure(current, i.apoz, i.names, self.progress, kg=kg)
        dead = {name: core_apoz.balance_blocks(  # a grouped convolution: even groups
                    core_apoz.select_high_apoz(values, config.method, k=config.k,
                                               cutoff=config.cutoff, fraction=config.fraction),
                    values, _blocks(kg.graph, name))
                for name, values in report.items()}
        dead = {name: idx for name, idx in dead.items() if len(idx)}
        if not dead:
            self.progress.end_round()
            self.stopped = f"no neuron qualifies for deletion in round {r}"
            self.final = True
            self._save_state()
            return True
        self.doing = "deleting neurons"
        self.progress.note(self.doing)
        kg = convert.with_current_weights(kg)  # measuring ran the model (JAX donates)
        pruned = surgery.pruned_graph(kg, dead)
        model = build.from_graph(kg, pruned)
        _compile(model, i.compiled)
        hook = KerasHook(self.progress, config.epochs, config.recover_epochs, spe,
                         i.val.batches)
        self.doing = "fine-tuning"
        if config.epochs:
            self._fit(model, 0, config.epochs, hook)
        self.doing = "evaluating"
        results = self._evaluate(model, hook)
        tries = 0
        while not self._within(results[self.metric]) and tries < config.recover_epochs:
            self.doing = "fine-tuning to recover"
            self._fit(model, config.epochs + tries, 1, hook)
            tries += 1
            self.doing = "evaluating"
            results = self._evaluate(model, hook)
        self.progress.end_round()
        score = results[self.metric]
        accepted = self._within(score)
        steps = int(keras.ops.convert_to_numpy(model.optimizer.iterations))
        round_ = TrimRound(
            r, {name: tuple(int(j) for j in idx) for name, idx in dead.items()},
            tuple(surgery.graph_costs(kg, pruned)), score, results, accepted,
            hook.epochs_run + hook.recovery_run, time.monotonic() - start,
            hook.recovery_run, steps)
        self.history.append(round_)
        if accepted and round_.params <= self.history[self.best].params:
            self.best, self.best_model = r, model
        if accepted:
            self._hold(model)
        else:
            self.final = True
            self.stopped = self._verdict(r, score)
        self.doing = "saving the checkpoint"
        if accepted and i.directory is not None:
            self.models[r] = checkpoint.save_model(model, i.directory, r)
        self._save_state()
        self.doing = "in the callback"
        if self._report(round_, model):
            self.stopped = f"stopped by callback in round {r}"
            return True
        return not accepted

    def _within(self, score: float) -> bool:
        tolerance = self.config.tolerance + _SLACK
        if math.isnan(score):
            return False
        if self.mode == "max":
            return score >= self.base - tolerance
        return score <= self.base + tolerance

    def _verdict(self, r: int, score: float) -> str:
        tolerance = f"{self.config.tolerance:g}"
        if math.isnan(score):
            return f"{self.metric} is NaN in round {r}"
        if self.mode == "max":
            return (f"{self.metric} fell more than {tolerance} below the start in round {r} "
                    f"({_metric_text(score)} < {_metric_text(self.base)})")
        return (f"{self.metric} rose more than {tolerance} above the start in round {r} "
                f"({_metric_text(score)} > {_metric_text(self.base)})")

    def _fit(self, model: keras.Model, initial: int, epochs: int, hook: KerasHook) -> None:
        finetune.fit(model, self.i.train, self.i.fit_kwargs, initial_epoch=initial,
                     epochs=epochs, steps_per_epoch=self.config.steps_per_epoch,
                     verbose=self.i.verbose, callbacks=[hook])

    def _evaluate(self, model: keras.Model, hook: KerasHook) -> dict[str, float]:
        return finetune.evaluate(model, self.i.val, self.config.val_steps, [hook])

    # ---- checkpoints -------------------------------------------------------------------

    def _fingerprint(self) -> dict[str, Any]:
        i = self.i
        settings = self.config.settings()
        del settings["max_rounds"]
        return _jsonable({
            "model": checkpoint.model_digest(i.model),
            "compile": i.compiled,
            "layers": i.names,
            "settings": settings,
            "train_data": i.train.describe(),
            "val_data": i.val.describe(),
            "apoz_data": i.apoz.describe() if i.apoz_given else "val_data",
        })

    def _save_state(self) -> None:
        if self.i.directory is None:
            return
        checkpoint.write_state(self.i.directory, {
            "fingerprint": self.fingerprint, "metric": self.metric, "mode": self.mode,
            "history": [r.to_json() for r in self.history], "best": self.best,
            "models": {str(k): v for k, v in self.models.items()},
            "stopped": self.stopped, "final": self.final,
        })

    def _resume(self, state: Mapping[str, Any]) -> None:
        i = self.i
        directory = i.directory
        assert directory is not None
        old = state.get("fingerprint", {})
        diffs = _differences(old, self.fingerprint)
        if diffs:
            raise ValueError(
                f"checkpoint_dir {str(directory)!r} holds a trim run of another "
                f"{'; '.join(diffs)}: pass another checkpoint_dir for a new run, or delete "
                "this one to start over")
        self.history = [TrimRound.from_json(r) for r in state["history"]]
        self.metric, self.mode = str(state["metric"]), str(state["mode"])
        self.base = self.history[0].accuracy
        self.best = int(state["best"])
        self.models = {int(k): str(v) for k, v in state["models"].items()}
        self.final = bool(state["final"])
        self.stopped = str(state["stopped"])
        last = self.history[-1].round
        self.resumed_from = self.r = last

        def load(r: int) -> keras.Model:
            if r == 0:
                return self._copy()
            model = checkpoint.load_model(directory, self.models[r])
            _compile(model, i.compiled)
            return model

        self.best_model = load(self.best)
        latest = max([0, *self.models])
        self._hold(self.best_model if latest == self.best else load(latest))
        if i.verbose:
            done = "the run had ended: " + self.stopped if self.final else (
                f"continuing with round {last + 1}")
            print(f"resuming from {directory}: rounds 0-{last} are done; {done}")
            for r in self.history:
                print(_round_line(r, i.names, self.metric, self.mode))


def _differences(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[str]:
    """What differs between two fingerprints, in words."""
    out = []
    for key in sorted(set(old) | set(new)):
        a, b = old.get(key), new.get(key)
        if a == b:
            continue
        if key == "settings" and isinstance(a, dict) and isinstance(b, dict):
            out += [f"{name} ({a.get(name)!r}, now {b.get(name)!r})"
                    for name in sorted(set(a) | set(b)) if a.get(name) != b.get(name)]
        elif key == "model":
            out.append("model (its config or weights differ)")
        elif key == "compile":
            out.append("compile config (optimizer, loss or metrics)")
        elif key == "layers":
            out.append(f"set of layers ({a!r}, now {b!r})")
        else:
            out.append(f"{key}")
    return out


# --------------------------------------------------------------------------------------------
# The entry point
# --------------------------------------------------------------------------------------------


def trim(model: keras.Model, train_data: Any, val_data: Any,
         layers: LayerRef | Iterable[LayerRef] | None = None, *,
         config: TrimConfig | None = None,
         method: str = _DEFAULT, k: float = _DEFAULT, cutoff: float | None = _DEFAULT,
         fraction: float | None = _DEFAULT, epochs: int = _DEFAULT,
         recover_epochs: int = _DEFAULT, max_rounds: int | None = _DEFAULT,
         tolerance: float = _DEFAULT, metric: str | None = _DEFAULT, mode: str = _DEFAULT,
         batch_size: int = _DEFAULT,
         learning_rate: float | keras.optimizers.schedules.LearningRateSchedule | None = _DEFAULT,
         steps_per_epoch: int | None = _DEFAULT, val_steps: int | None = _DEFAULT,
         apoz_steps: int | None = _DEFAULT, apoz_data: Any = None,
         fit_kwargs: Mapping[str, Any] | None = None,
         checkpoint_dir: str | os.PathLike[str] | None = None, verbose: int = 1,
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

    It stops when no neuron qualifies, when the metric gets worse than the starting model's
    by more than ``tolerance`` (that round's model is discarded), after ``max_rounds``
    rounds, or when ``callback`` asks to.

    Every argument and the data are checked before any work. A ``KeyboardInterrupt``
    (Ctrl-C) after round 0 ends the run and returns the best model so far, with
    ``result.stopped`` saying where it stopped and ``result.error`` the interrupt; any other
    exception after round 0 (from a Keras callback, ``callback``, the backend) is raised as a
    :class:`TrimError` that carries the same result, from the exception. The round
    that was running is discarded in both cases.

    The settings (``method`` to ``apoz_steps``) are the fields of a :class:`TrimConfig`:
    pass them as keyword arguments, or as ``config=TrimConfig(...)`` (then a keyword
    argument given as well replaces that field). Their defaults are :class:`TrimConfig`'s.

    Parameters
    ----------
    model
        A built, compiled Sequential or functional Keras model, trained. It is not modified.
        Its compile settings (``model.get_compile_config()``: optimizer class and config,
        loss, metrics...) are used for every round's model.
    train_data
        Fine-tuning data: a tuple ``(x, y)`` or ``(x, y, sample_weight)`` of arrays, split
        into batches of ``batch_size``; or a ``tf.data.Dataset`` or ``keras.utils.PyDataset``
        of such batches. It is read every round, so it must be re-iterable (not a generator:
        wrap one with ``tf.data.Dataset.from_generator``).
    val_data
        Data to evaluate on (and to measure APoZ on, unless ``apoz_data`` is given): as
        ``train_data``, with labels.
    layers
        The layers to trim (by name, index in ``model.layers`` or object; one or a list).
        ``None``: every layer with neurons except the model's output layer(s), leaving out
        (with one :class:`kerasprune.core.apoz.ApozWarning`) those whose APoZ cannot be
        measured, such as a layer without a ReLU after it.
    config
        All the settings below in one object (``None``: the defaults, with the keyword
        arguments given).
    method, k, cutoff, fraction
        The APoZ rule, as in :func:`kerasprune.core.apoz.select_high_apoz`. The default is the
        paper's: delete the neurons whose APoZ is above their layer's mean + ``k`` standard
        deviations, with ``k = 1``. ``"absolute"`` with a ``cutoff``, ``"both"``, and
        ``"top"`` with a ``fraction`` (``0 < fraction < 1``) per round are the alternatives.
    epochs
        Fine-tuning epochs per round (``0`` for none).
    recover_epochs
        If a round's metric is out of tolerance after ``epochs``, fine-tune it for up to
        this many more epochs, one at a time, before rejecting it (the metric of a freshly
        trimmed network often needs longer to recover than a fixed budget gives it).
    max_rounds
        At most this many rounds (``None``: until the metric or the APoZ rule stops it).
    tolerance
        How much worse than the starting model's the metric may get, in the metric's units
        and direction: for accuracy, ``0.001`` is 0.1 points below; for an error such as
        ``"mae"``, ``0.05`` is 0.05 above. ``0`` accepts no change for the worse.
    metric
        The name of a metric ``model.evaluate`` returns (``"loss"`` included). ``None``:
        ``"accuracy"`` or the first metric whose name ends in ``accuracy``/``acc``.
    mode
        Whether a higher (``"max"``) or a lower (``"min"``) metric is better. ``"auto"``
        asks Keras: accuracies, AUC, precision, recall, IoU, R² and the like are
        higher-is-better; losses and errors (MAE, MSE, RMSE, crossentropies, hinge...) are
        lower-is-better; for another metric (a plain function, a ``Mean``) pass ``"max"``
        or ``"min"``. A mode that contradicts Keras is refused.
    batch_size
        Batch size for in-memory arrays (fit, evaluate and APoZ).
    learning_rate
        Fine-tune with this learning rate instead of the compiled optimizer's (the rest of
        the optimizer's config is kept): a number, or a
        ``keras.optimizers.schedules.LearningRateSchedule``. A schedule (the compiled one or
        this one) restarts every round, since every round gets a fresh optimizer: a decay
        over one round's steps gives each round a warm restart.
    steps_per_epoch
        Training batches per epoch (``model.fit``'s ``steps_per_epoch``); needed for
        ``train_data`` that repeats forever.
    val_steps
        Evaluate on at most this many batches of ``val_data`` (needed for data that repeats
        forever; each evaluation starts the dataset anew, so every round sees the same
        batches).
    apoz_steps
        Measure APoZ on at most this many batches (of ``apoz_data``, else of ``val_data``;
        defaults to ``val_steps`` there).
    apoz_data
        Data to measure APoZ on (inputs, or ``(x, y)``); defaults to ``val_data``, as in the
        paper.
    fit_kwargs
        More keyword arguments for ``model.fit`` (``callbacks``, ``shuffle``,
        ``class_weight``, ``validation_data``...). Those trim sets itself (``epochs``,
        ``batch_size``, ``steps_per_epoch``, ``initial_epoch``, ``verbose``, ``x``, ``y``,
        ``sample_weight``) are refused: pass trim's own argument.
    checkpoint_dir
        A directory to keep the run in: every accepted round's model (``round_NNN.keras``)
        and the history (``trim_state.json``), each written atomically (a temporary file
        renamed over the final one). Calling ``trim`` again with the same directory, model,
        data and settings resumes after the last finished round instead of starting over
        (``max_rounds`` may differ, to run more rounds); a directory of another run is
        refused, naming what differs. A run that had ended by its own rules returns at once.
        A resumed run is not bit-identical to an uninterrupted one: random state (shuffling,
        dropout) is not restored.
    verbose
        0: silent; 1: one line per round, and while a round runs a status line of its phase
        (measuring APoZ, fine-tuning epoch k of n, evaluating), its progress, the time spent
        and an estimate of the time left in the round (redrawn in place on a terminal, one
        line per phase in a log); 2: also Keras's per-epoch lines while fine-tuning.
    callback
        Called after each round, round 0 included, as ``callback(trim_round, round_model)``;
        return ``True`` to stop after this round. It may save the model, log, etc., but
        should not change it. A resumed run calls it for its new rounds only.

    Returns
    -------
    TrimResult
        ``.model`` (the smallest model within the tolerance, compiled), ``.history`` (one
        :class:`TrimRound` per round) and ``.table()`` (a before/after table); ``str()`` of it
        gives the table and one line per round.

    Raises
    ------
    ValueError, TypeError
        If the model is not compiled, the metric is not found or its direction unknown, an
        argument is invalid, or the data do not fit (each error names the argument).
    PruneError
        If a named layer cannot be trimmed, or no layer can.
    TrimError
        If an exception ends the run after round 0; it carries the result so far.

    Examples
    --------
    >>> model.compile("adam", "sparse_categorical_crossentropy", metrics=["accuracy"])
    ... # doctest: +SKIP
    >>> model.fit(x_train, y_train, epochs=10)  # doctest: +SKIP
    >>> result = kerasprune.trim(model, (x_train, y_train), (x_val, y_val))  # doctest: +SKIP
    >>> print(result.table())  # doctest: +SKIP
    >>> smaller = result.model  # doctest: +SKIP

    A regression model, kept within 0.05 of its mean absolute error, in a directory it can
    be resumed from:

    >>> result = kerasprune.trim(model, (x, y), (x_val, y_val), metric="mae", tolerance=0.05,
    ...                          checkpoint_dir="trim-run")  # doctest: +SKIP
    """
    given = {name: value for name, value in (
        ("method", method), ("k", k), ("cutoff", cutoff), ("fraction", fraction),
        ("epochs", epochs), ("recover_epochs", recover_epochs), ("max_rounds", max_rounds),
        ("tolerance", tolerance), ("metric", metric), ("mode", mode),
        ("batch_size", batch_size), ("learning_rate", learning_rate),
        ("steps_per_epoch", steps_per_epoch), ("val_steps", val_steps),
        ("apoz_steps", apoz_steps)) if value is not _DEFAULT}
    config = _settings(config, given)
    if verbose not in (0, 1, 2) or isinstance(verbose, bool):
        raise ValueError(f"verbose must be 0, 1 or 2, got {verbose!r}")
    if callback is not None and not callable(callback):
        raise TypeError(f"callback must be callable, got {callback!r}")
    compiled = finetune.compile_config(model, config.learning_rate)
    read = keras_data.read
    train = read(train_data, model, name="train_data", labels=True, reiterable=True,
                 batch_size=config.batch_size, steps=config.steps_per_epoch,
                 steps_name="steps_per_epoch")
    val = read(val_data, model, name="val_data", labels=True, reiterable=True,
               batch_size=config.batch_size, steps=config.val_steps, steps_name="val_steps")
    if apoz_data is None:
        apoz = val if config.apoz_steps is None else read(
            val_data, model, name="val_data", labels=False, reiterable=True,
            batch_size=config.batch_size, steps=config.apoz_steps, steps_name="apoz_steps")
    else:
        apoz = read(apoz_data, model, name="apoz_data", labels=False, reiterable=True,
                    batch_size=config.batch_size, steps=config.apoz_steps,
                    steps_name="apoz_steps")
    checked_fit_kwargs = finetune.check_fit_kwargs(fit_kwargs, train)
    kg = convert.to_graph(model)
    names = _trim_layers(kg, layers)
    directory = None if checkpoint_dir is None else checkpoint.prepare(checkpoint_dir)
    return _Run(_Inputs(model, kg, names, config, compiled, train, val, apoz,
                        apoz_data is not None, checked_fit_kwargs, verbose, callback,
                        directory)).run()


def _signature_with_defaults() -> inspect.Signature:
    """:func:`trim`'s signature showing :class:`TrimConfig`'s defaults (for ``help``)."""
    signature = inspect.signature(trim)
    defaults = {f.name: f.default for f in dataclasses.fields(TrimConfig)}
    return signature.replace(parameters=[
        p.replace(default=defaults[p.name]) if p.name in defaults else p
        for p in signature.parameters.values()])


trim.__signature__ = _signature_with_defaults()  # type: ignore[attr-defined]
