"""Pruning a Keras model to a budget: one call, any criterion, one shot or iterative.

:func:`prune` is the Keras side of the core's planner (:mod:`kerasprune.core.plan`). Each step
measures what the criterion needs on the current model (:mod:`.stats`: nothing, the
weights, activations or gradients), ranks the deletable slots of
every coupled group, deletes the shortest prefix of the ranking that meets the step's target
(:func:`kerasprune.delete_neurons`), and, with training data, fine-tunes the smaller model
with a fresh optimizer from the model's compile settings (:mod:`.finetune`, the step
:func:`kerasprune.trim` uses too). Iterative pruning splits the
target into ``iterative_steps`` geometric steps (:func:`kerasprune.core.targets.schedule`),
measured from the original model, so each step's statistics come from the fine-tuned result
of the step before.

Every argument, the data and the feasibility of the target are checked before anything is
built; the user's model is only read. ``dry_run=True`` returns the :class:`~kerasprune.core.
plan.Plan` (what goes, per layer and per group, and the params and FLOPs after) and builds
nothing.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, Union

import keras
import numpy as np

from kerasprune.adapters.keras import build, convert, finetune, refs, surgery
from kerasprune.adapters.keras import data as keras_data
from kerasprune.adapters.keras.progress import KerasHook, RoundProgress
from kerasprune.adapters.keras.record import KerasGraph
from kerasprune.adapters.keras.refs import LayerRef
from kerasprune.adapters.keras.stats import (
    LossFunction,
    loss_function,
    measure_stats,
    readable_weights,
    stats_kind,
)
from kerasprune.core import cost
from kerasprune.core.checks import as_int, as_real
from kerasprune.core.criteria import CRITERIA, Criterion, Random, criterion_for
from kerasprune.core.graph import Graph, PruneError
from kerasprune.core.groups import ChannelAnalysis, analyze_channels
from kerasprune.core.plan import Plan, plan_pruning
from kerasprune.core.targets import TARGETS, Cost, Flops, Params, Target, schedule

if TYPE_CHECKING:
    from kerasprune.adapters.keras.speed import SpeedupReport

__all__ = ["PruneResult", "PruneStep", "latency_target", "prune"]

TargetLike = Union[Target, Mapping[str, float]]
"""A :class:`~kerasprune.core.targets.Target`, or a shorthand ``{"flops": 0.5}``."""

SHORTHANDS = ("params", "flops", "latency")
"""The target kinds :func:`prune` takes as keywords (``flops=0.5``...)."""

LATENCY_OPTIONS: Mapping[str, Any] = {"runners": ("compiled",), "batch_sizes": (32,),
                                      "tflite": False, "repeats": 5, "warmup": 2}
"""How a ``latency`` target times a model (:func:`kerasprune.measure_latency` arguments): the
backend's compiled call at batch 32; the first runner and batch size are the measure."""


# --------------------------------------------------------------------------------------------
# Results
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class PruneStep:
    """One step of :func:`prune`.

    Attributes
    ----------
    step : int
        1, 2... up to ``iterative_steps``.
    plan : kerasprune.core.plan.Plan
        What the step deleted, planned on the model the step began with.
    metrics_pruned : Mapping[str, float]
        ``model.evaluate`` on ``val_data`` right after the deletion, before fine-tuning
        (empty without ``val_data``).
    metrics : Mapping[str, float]
        The same after fine-tuning (equal to ``metrics_pruned`` without it).
    epochs : int
        Fine-tuning epochs that ran.
    seconds : float
        Wall time of the step.
    """

    step: int
    plan: Plan
    metrics_pruned: Mapping[str, float]
    metrics: Mapping[str, float]
    epochs: int
    seconds: float


@dataclass(frozen=True, eq=False)
class PruneResult:
    """What :func:`prune` returns.

    Attributes
    ----------
    model : keras.Model
        The pruned model: new, sharing nothing with the input model; compiled with a fresh
        copy of its compile settings if it was compiled.
    steps : tuple of PruneStep
        Every step, with its plan.
    target : kerasprune.core.targets.Target
        The final target.
    criterion : str
        The criterion's name.
    costs_before, costs_after : tuple of kerasprune.core.cost.LayerCost
        Every layer's width, params and FLOPs before and after.
    metric : str or None
        The tracked metric (with ``val_data``).
    metrics_before : Mapping[str, float]
        ``model.evaluate`` of the input model on ``val_data`` (empty without it).
    speedup : kerasprune.SpeedupReport or None
        The measured speed-up (with ``speedup=True``).
    seconds : float
        Wall time of the whole call.
    """

    model: keras.Model
    steps: tuple[PruneStep, ...]
    target: Target
    criterion: str
    costs_before: tuple[cost.LayerCost, ...]
    costs_after: tuple[cost.LayerCost, ...]
    metric: str | None = None
    metrics_before: Mapping[str, float] = field(default_factory=dict)
    speedup: SpeedupReport | None = None
    seconds: float = 0.0

    @property
    def plans(self) -> tuple[Plan, ...]:
        """The plan of every step."""
        return tuple(s.plan for s in self.steps)

    @property
    def params(self) -> tuple[int, int]:
        """Parameters ``(before, after)``."""
        return cost.total(self.costs_before)[0], cost.total(self.costs_after)[0]

    @property
    def flops(self) -> tuple[int, int]:
        """FLOPs of one sample's forward pass ``(before, after)``."""
        return cost.total(self.costs_before)[1], cost.total(self.costs_after)[1]

    @property
    def flop_ratio(self) -> float:
        """``before / after`` FLOPs (2.0: half the FLOPs)."""
        before, after = self.flops
        return before / after if after else math.inf

    @property
    def metrics_after(self) -> Mapping[str, float]:
        """The last step's metrics (empty without ``val_data``)."""
        return self.steps[-1].metrics if self.steps else {}

    def table(self) -> str:
        """Widths, params and FLOPs before and after, the tracked metric, and the measured
        speed-up if taken."""
        extra: dict[str, tuple[str, str]] = {}
        if self.metric is not None and self.metrics_before:
            extra[f"val {self.metric}"] = (f"{self.metrics_before[self.metric]:.4f}",
                                           f"{self.metrics_after[self.metric]:.4f}")
        lines = [cost.compare(self.costs_before, self.costs_after, extra)]
        if self.speedup is not None:
            lines += ["", self.speedup.table()]
        return "\n".join(lines)

    def __str__(self) -> str:
        head = (f"pruned by {self.criterion!r} to {self.target.kind} in {len(self.steps)} "
                f"step{'s' if len(self.steps) != 1 else ''} ({self.seconds:.1f}s)")
        steps = "\n".join(_step_line(s, len(self.steps), self.metric) for s in self.steps)
        return f"{head}\n\n{self.table()}\n\nsteps:\n{steps}"


def _step_line(s: PruneStep, total: int, metric: str | None) -> str:
    p = s.plan
    groups = sum(1 for g in p.groups if g.deleted.size)
    neurons = sum(int(d.size) for d in p.request.values())
    line = (f"step {s.step}/{total}: {p.target.kind} <= {p.target.format(p.limit)}: "
            f"{neurons} neurons in "
            f"{groups} group{'s' if groups != 1 else ''} | params {p.params[0]:,} -> "
            f"{p.params[1]:,} | FLOPs {p.flops[0]:,} -> {p.flops[1]:,}")
    if metric is not None and s.metrics:
        line += f" | {metric} {s.metrics[metric]:.4f}"
        if s.epochs:
            line += f" ({s.metrics_pruned[metric]:.4f} before fine-tuning)"
    line += f" | {s.seconds:.1f}s"
    if s.epochs:
        line += f", {s.epochs} epoch{'s' if s.epochs != 1 else ''}"
    return line


# --------------------------------------------------------------------------------------------
# Targets
# --------------------------------------------------------------------------------------------


def _zero_weights(graph: Graph, like: Graph) -> Graph:
    """``graph`` with every weight a zero array of its shape (the dtype of ``like``'s)."""
    layers = {}
    for name, spec in graph.layers.items():
        old: Mapping[str, Any] = like.layers[name].weights
        weights = {k: np.zeros(tuple(int(d) for d in w.shape),
                               dtype=keras.backend.standardize_dtype(old[k].dtype))
                   for k, w in spec.weights.items()}
        layers[name] = replace(spec, weights=weights)
    return replace(graph, layers=layers)


def latency_target(model: keras.Model, keep: float,
                   options: Mapping[str, Any] | None = None) -> Cost:
    """A target on the measured latency of ``model``: at most ``keep`` of the original's.

    The cost of a graph is the median time of a model built from it with zero weights,
    measured by :func:`kerasprune.measure_latency` (``options``: its arguments; by default
    :data:`LATENCY_OPTIONS`). The planner calls it about ``log2(units)`` times; each call
    builds and times a model, so this target takes seconds to minutes to plan, and its
    result carries the noise of the measurement.

    Parameters
    ----------
    model
        A Sequential or functional model (only read).
    keep
        The fraction of the original latency to keep, in ``(0, 1]``.
    options
        Arguments for :func:`kerasprune.measure_latency`: the first runner and batch size
        are the measure.

    Returns
    -------
    kerasprune.core.targets.Cost
        Named ``latency``, in seconds per call.
    """
    from kerasprune.adapters.keras.speed import measure_latency

    kg = convert.to_graph(model)
    settings = {**LATENCY_OPTIONS, **dict(options or {})}
    runner = settings["runners"][0]
    batch = settings["batch_sizes"][0]
    memo: dict[tuple[Any, ...], float] = {}

    def fn(graph: Graph) -> float:
        key = tuple((name, tuple(tuple(int(d) for d in w.shape) for w in spec.weights.values()))
                    for name, spec in graph.layers.items())
        if key not in memo:
            built = build.from_graph(kg, _zero_weights(graph, kg.graph))
            report = measure_latency(built, **settings)
            memo[key] = report.timing(runner, batch).median
        return memo[key]

    return Cost(keep=keep, fn=fn, name="latency")


def _shorthand(kind: str, value: Any) -> tuple[float | None, float | None]:
    """``(keep, at_most)`` of ``kind=value``: a fraction in (0, 1] or an absolute count."""
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise TypeError(f"{kind} must be a number (a fraction in (0, 1] or an absolute "
                        f"count), got {value!r}")
    number = float(value)
    if not math.isfinite(number) or number <= 0:
        raise ValueError(f"{kind} must be positive, got {value!r}")
    if number <= 1:
        return number, None
    if kind == "latency" or not number.is_integer():
        what = ("a latency target is a fraction of the original's measured time, in (0, 1]"
                if kind == "latency" else f"a fraction keeps at most all of it (0 < {kind} "
                f"<= 1), an absolute count is a whole number ({kind}=2_000_000)")
        raise ValueError(f"{kind}={value!r} is above 100% of the original: {what}")
    return None, number


def _target(target: Any, given: Mapping[str, Any], model: keras.Model,
            latency_options: Mapping[str, Any] | None) -> Target:
    """The one target given, as a core Target."""
    shorthands = {k: v for k, v in given.items() if v is not None}
    if isinstance(target, Mapping):
        if len(target) != 1:
            raise ValueError(f"target as a dict names one kind, e.g. {{'flops': 0.5}}; got "
                             f"{dict(target)!r}")
        kind, value = next(iter(target.items()))
        if kind not in SHORTHANDS:
            raise ValueError(f"unknown target kind {kind!r}; the kinds are "
                             f"{', '.join(map(repr, SHORTHANDS))}, or pass a "
                             "kerasprune.core.targets.Target (Params, Flops, Cost)")
        shorthands = {**shorthands, kind: value}
        target = None
    count = len(shorthands) + (target is not None)
    if count != 1:
        raise ValueError(
            "pass one target: target=Flops(keep=0.5) (a kerasprune.core.targets.Target), or "
            "one of flops=, params=, latency= (a fraction of the original in (0, 1], or an "
            "absolute count)" + (f"; got {count}" if count else ""))
    if target is not None:
        if not isinstance(target, Target):
            raise TypeError(f"target must be a kerasprune.core.targets.Target (Params, Flops, "
                            f"Cost) or a dict such as {{'flops': 0.5}}, got {target!r}; or "
                            "pass flops=, params= or latency=")
        return target
    kind, value = next(iter(shorthands.items()))
    keep, at_most = _shorthand(kind, value)
    if kind == "latency":
        assert keep is not None
        return latency_target(model, keep, latency_options)
    cls = TARGETS[kind]
    return cls(keep=keep, at_most=at_most)


def _check_absolute(target: Target, graph: Graph) -> None:
    """An absolute params/FLOPs target above the original is an error."""
    if target.at_most is None or not isinstance(target, (Params, Flops)):
        return
    original = target.measure(graph, cost.count(graph))
    if target.at_most > original:
        raise ValueError(
            f"the target {target.kind} <= {target.format(target.at_most)} is above 100% of "
            f"the original ({target.format(original)} {target.unit}): there is nothing to "
            "prune; aim lower")


# --------------------------------------------------------------------------------------------
# Settings
# --------------------------------------------------------------------------------------------


def _criterion(criterion: Any, seed: int) -> Criterion:
    if isinstance(criterion, str) and criterion == "random":
        return Random(seed)
    if not isinstance(criterion, (str, Criterion)):
        raise TypeError(f"criterion must be a name ({', '.join(map(repr, sorted(CRITERIA)))}) "
                        f"or a kerasprune.core.criteria.Criterion, got {criterion!r}")
    return criterion_for(criterion)


def _layer_map(kg: KerasGraph, value: Any, name: str) -> Any:
    """A per-layer setting with its keys (layer refs) resolved to graph names."""
    if not isinstance(value, Mapping):
        return value
    out = {}
    for ref, v in value.items():
        try:
            (path,) = refs.layer_names(kg, [ref]) or []
        except PruneError as err:
            raise PruneError(f"{name}[{ref!r}]: {err}") from None
        out[path] = v
    return out


def _int(name: str, value: Any, minimum: int, optional: bool = False) -> int | None:
    return None if value is None and optional else as_int(name, value, minimum)


def _share(name: str, value: Any) -> float:
    out = as_real(name, value)
    if not 0 < out <= 1:
        raise ValueError(f"{name} must be in (0, 1] (the share of a layer's neurons that may "
                         f"go), got {value!r}")
    return out


def _check_limits(min_width: Any, max_fraction: Any) -> None:
    """``min_width`` (ints >= 1) and ``max_fraction`` (shares in (0, 1]), for every layer or
    per layer, checked before anything runs (iterative steps turn them into widths)."""
    for name, value, check in (("min_width", min_width, lambda n, v: as_int(n, v, 1)),
                               ("max_fraction", max_fraction, _share)):
        items = value.items() if isinstance(value, Mapping) else [(None, value)]
        for layer, v in items:
            check(name if layer is None else f"{name}[{layer!r}]", v)


def _step_limits(analysis: ChannelAnalysis, min_width: Any, max_fraction: Any
                 ) -> dict[str, int]:
    """Per layer, the fewest neurons it may keep by ``min_width`` and ``max_fraction`` of its
    original width: the limits of every iterative step (whose widths are not the original's).
    """
    out: dict[str, int] = {}
    for group in analysis.groups:
        for m in group.members:
            low = min_width.get(m.layer, 1) if isinstance(min_width, Mapping) else min_width
            share = (max_fraction.get(m.layer, 1.0) if isinstance(max_fraction, Mapping)
                     else max_fraction)
            out[m.layer] = max(int(low), m.width - math.floor(float(share) * m.width + 1e-9))
    return out


# --------------------------------------------------------------------------------------------
# The run
# --------------------------------------------------------------------------------------------


@dataclass
class _Settings:
    """Everything a run reads, checked."""

    model: keras.Model
    kg: KerasGraph
    analysis: ChannelAnalysis
    target: Target
    criterion: Criterion
    kind: str | None
    plan_kwargs: dict[str, Any]
    steps: int
    stats: Mapping[str, Any] | None
    data: keras_data.Source | None
    loss: LossFunction | None
    train: keras_data.Source | None
    val: keras_data.Source | None
    compiled: dict[str, Any] | None
    epochs: int
    steps_per_epoch: int | None
    val_steps: int | None
    fit_kwargs: dict[str, Any]
    metric: str | None
    mode: str
    verbose: int
    speedup: Mapping[str, Any] | None
    latency_options: Mapping[str, Any] | None


def _candidates(analysis: ChannelAnalysis, protect: Sequence[str] | None) -> list[str]:
    """The layers whose statistics a plan may read: members of groups that can lose slots
    and have no protected member."""
    guarded = set(protect or ())
    return [m.layer for g in analysis.groups if g.prunable and not guarded & set(g.layers)
            for m in g.members]


class _Run:
    def __init__(self, s: _Settings) -> None:
        self.s = s
        self.progress = RoundProgress(s.verbose, s.steps, unit="step")

    def plan(self, model: keras.Model, kg: KerasGraph, analysis: ChannelAnalysis,
             target: Target, step: int, limits: Mapping[str, Any]) -> Plan:
        """Measure what the criterion needs on ``model`` and plan ``target``."""
        s = self.s
        stats = s.stats if step == 1 else None
        if s.kind is not None and stats is None:
            assert s.data is not None
            self.progress.begin_phase("stats", f"measuring {s.kind} statistics",
                                      s.data.batches)
            stats = measure_stats(model, s.data, s.criterion,
                                  _candidates(analysis, s.plan_kwargs.get("protect")),
                                  kg=kg, analysis=analysis, loss=s.loss,
                                  progress=self.progress, strict=False)
        self.progress.note("planning")
        return plan_pruning(readable_weights(analysis, s.criterion), target, s.criterion,
                            stats, **{**s.plan_kwargs, **limits})

    def step_target(self, target: Target, kg: KerasGraph) -> Target:
        """A latency target re-bound to the current model's graph (its cost function builds
        models from that graph)."""
        if kg is not self.s.kg and isinstance(target, Cost) and target.name == "latency":
            fresh = latency_target(kg.model, 1.0, self.s.latency_options)
            return replace(fresh, keep=target.keep, at_most=target.at_most)
        return target

    def run(self) -> PruneResult | Plan:
        s = self.s
        start = time.monotonic()
        original = s.kg.graph
        costs_before = tuple(cost.count(original))
        if s.steps == 1:
            targets = [s.target]
            limits: dict[str, Any] = {}
        else:
            targets = schedule(s.target, s.steps, original)
            limits = {"min_width": _step_limits(s.analysis, s.plan_kwargs["min_width"],
                                                s.plan_kwargs["max_fraction"]),
                      "max_fraction": 1.0}
        metrics_before: dict[str, float] = {}
        if s.val is not None:
            metrics_before = self.evaluate(self.copy())
        current, kg, analysis = s.model, s.kg, s.analysis
        done: list[PruneStep] = []
        for k, target in enumerate(targets, 1):
            t0 = time.monotonic()
            self.progress.begin_round(k, {"stats": s.data.batches if s.data else None,
                                          "fit": self.fit_steps(), "evaluate":
                                          s.val.batches if s.val else None})
            plan = self.plan(current, kg, analysis, self.step_target(target, kg), k, limits)
            self.progress.note("deleting neurons")
            pruned = self.build(current, kg, plan)
            metrics_pruned = metrics = {}
            hook = KerasHook(self.progress, s.epochs, 0, self.fit_steps(),
                             s.val.batches if s.val else None)
            if s.val is not None:
                metrics_pruned = metrics = self.evaluate(pruned, hook)
            if s.train is not None and s.epochs:
                finetune.fit(pruned, s.train, s.fit_kwargs, initial_epoch=0, epochs=s.epochs,
                             steps_per_epoch=s.steps_per_epoch, verbose=s.verbose,
                             callbacks=[hook])
                if s.val is not None:
                    metrics = self.evaluate(pruned, hook)
            self.progress.end_round()
            done.append(PruneStep(k, plan, metrics_pruned, metrics, hook.epochs_run,
                                  time.monotonic() - t0))
            if s.verbose:
                print(_step_line(done[-1], len(targets), s.metric), flush=True)
            current = pruned
            if k < len(targets):
                kg = convert.to_graph(current)
                analysis = analyze_channels(
                    kg.graph, allow_output_change=s.plan_kwargs["allow_output_change"])
        report = None
        if s.speedup is not None:
            from kerasprune.adapters.keras.speed import speedup

            if s.verbose:
                print("measuring the speed-up...", flush=True)
            report = speedup(s.model, current, **dict(s.speedup))
        return PruneResult(current, tuple(done), s.target, s.criterion.name, costs_before,
                           tuple(surgery.costs(current)), s.metric, metrics_before,
                           report, time.monotonic() - start)

    def fit_steps(self) -> int | None:
        s = self.s
        if s.train is None or not s.epochs:
            return None
        per_epoch = s.steps_per_epoch or s.train.batches
        return None if per_epoch is None else per_epoch * s.epochs

    def copy(self) -> keras.Model:
        """A compiled copy of the input model."""
        model = build.from_graph(self.s.kg, self.s.kg.graph)
        if self.s.compiled is not None:
            finetune.compile_fresh(model, self.s.compiled)
        return model

    def build(self, model: keras.Model, kg: KerasGraph, plan: Plan) -> keras.Model:
        s = self.s
        if plan.request:
            pruned = surgery.delete_neurons(
                model, dict(plan.request),
                allow_output_change=s.plan_kwargs["allow_output_change"])
        else:
            pruned = build.from_graph(kg, kg.graph)
        if s.compiled is not None:
            finetune.compile_fresh(pruned, s.compiled)
        return pruned

    def evaluate(self, model: keras.Model, hook: KerasHook | None = None) -> dict[str, float]:
        assert self.s.val is not None
        return finetune.evaluate(model, self.s.val, self.s.val_steps,
                                 [hook] if hook is not None else [])


# --------------------------------------------------------------------------------------------
# The entry point
# --------------------------------------------------------------------------------------------


def prune(
    model: keras.Model,
    target: TargetLike | None = None,
    *,
    flops: float | None = None,
    params: float | None = None,
    latency: float | None = None,
    criterion: str | Criterion = "l1",
    data: Any = None,
    stats: Mapping[str, Any] | None = None,
    loss: Any = None,
    scope: str = "global",
    aggregate: str = "sum",
    normalize: str = "mean",
    round_to: int = 1,
    min_width: int | Mapping[LayerRef, int] = 1,
    max_fraction: float | Mapping[LayerRef, float] = 1.0,
    protect: LayerRef | Iterable[LayerRef] | None = None,
    allow_output_change: bool = False,
    iterative_steps: int = 1,
    train_data: Any = None,
    epochs: int | None = None,
    learning_rate: float | keras.optimizers.schedules.LearningRateSchedule | None = None,
    val_data: Any = None,
    metric: str | None = None,
    mode: str = "auto",
    batch_size: int = 32,
    data_steps: int | None = None,
    steps_per_epoch: int | None = None,
    val_steps: int | None = None,
    fit_kwargs: Mapping[str, Any] | None = None,
    seed: int = 0,
    dry_run: bool = False,
    speedup: bool | Mapping[str, Any] = False,
    latency_options: Mapping[str, Any] | None = None,
    strict: bool = True,
    verbose: int = 1,
) -> PruneResult | Plan:
    """Prune a model to a target (half the FLOPs, a parameter budget, a measured speed-up).

    Each of ``iterative_steps`` steps scores every neuron by ``criterion``, combines the
    scores of coupled neurons (a residual ``Add``, a ``Concatenate`` into a depthwise
    convolution) per group, ranks the groups' slots (across all layers, or the same fraction
    of each), deletes the fewest that meet the step's target within the limits, and
    fine-tunes the smaller model on ``train_data`` if given.

    Parameters
    ----------
    model
        A built Sequential or functional Keras 3 model. It is not modified.
    target
        A :class:`~kerasprune.core.targets.Target` (``Flops(keep=0.5)``,
        ``Params(at_most=1_000_000)``, ``Cost(fn=..., keep=0.5)``) or a dict
        ``{"flops": 0.5}``. Or use one of the next three instead.
    flops, params
        FLOPs or parameters to keep: a fraction of the original in ``(0, 1]``
        (``flops=0.5``), or an absolute count (``params=1_000_000``).
    latency
        The measured latency to keep, as a fraction of the original's in ``(0, 1]``: each
        candidate model is built and timed (:func:`latency_target`; ``latency_options``).
    criterion
        How neurons are scored: ``"l1"`` (default), ``"l2"``, ``"bn_scale"``, ``"random"``
        (seeded by ``seed``), ``"apoz"``, ``"activation"``, ``"taylor"`` (the last three
        measure ``data``), or a :class:`~kerasprune.core.criteria.Criterion`.
    data
        Data to measure a data-driven criterion on (as :func:`kerasprune.get_stats` takes
        it; ``"taylor"`` needs labels). Read once per step.
    stats
        Statistics measured beforehand (:func:`kerasprune.get_stats`), instead of ``data``
        (one-shot pruning only).
    loss
        For ``"taylor"``: the loss to differentiate; ``None``: the model's compiled loss.
    scope
        ``"global"``: rank the slots of all groups together (default); ``"uniform"``: take
        the same fraction of every group.
    aggregate, normalize
        How coupled neurons' scores combine (``"sum"``, ``"mean"``, ``"max"``) and how each
        layer's scores are made comparable first (``"mean"``, ``"max"``, ``"l2"``,
        ``"none"``); see :func:`kerasprune.core.scores.score_groups`.
    round_to
        Keep a multiple of this many neurons in every group that loses any (8 for vector
        units); groups narrower than it are left alone.
    min_width
        The fewest neurons a layer keeps: for every layer, or ``{layer: width}``.
    max_fraction
        The largest share of a layer's original neurons that may go, in ``(0, 1]``: for
        every layer, or ``{layer: share}`` (e.g. from :meth:`kerasprune.SensitivityReport.
        limits`). No layer ever loses every neuron.
    protect
        Layers none of whose neurons may go (nor any coupled to them). ``None``: the layers
        that write a model output.
    allow_output_change
        Let the neurons of a model output go (changes what the model predicts).
    iterative_steps
        Prune in this many steps, each to a geometric share of the way (the FLOPs of step
        ``k`` are ``keep ** (k / steps)`` of the original's), with fine-tuning between
        steps (needs ``train_data``). The limits hold against the original widths.
    train_data
        Fine-tuning data ``(x, y)``, a ``tf.data.Dataset``... as :func:`kerasprune.trim`
        takes it. With it, each step fine-tunes for ``epochs`` with a fresh optimizer from
        the model's compile settings (the model must be compiled).
    epochs
        Fine-tuning epochs per step (default 1 with ``train_data``, else 0).
    learning_rate
        Fine-tune with this learning rate (or schedule) instead of the compiled optimizer's.
    val_data
        Data ``(x, y)`` to evaluate on before pruning, after each deletion and after each
        fine-tuning (the model must be compiled).
    metric, mode
        The metric the step lines show (default: accuracy), as in :func:`kerasprune.trim`.
    batch_size
        Batch size for in-memory arrays.
    data_steps, steps_per_epoch, val_steps
        Batches per pass over ``data``, per training epoch, per evaluation (needed for data
        that repeats forever).
    fit_kwargs
        More ``model.fit`` arguments (callbacks...); those prune sets itself are refused.
    seed
        Seed of the ``"random"`` criterion.
    dry_run
        Return the :class:`~kerasprune.core.plan.Plan` of the whole target in one shot
        (per layer and group: what goes, params and FLOPs after) and build nothing
        (statistics are measured if the criterion needs them; a latency target builds the
        models it times).
    speedup
        Also measure the speed-up of the pruned model over the original
        (:func:`kerasprune.speedup`): ``True``, or a dict of its arguments.
    latency_options
        For ``latency``: :func:`kerasprune.measure_latency` arguments.
    strict
        Raise :class:`~kerasprune.core.plan.PlanError` when a target cannot be met; if
        False, prune as far as the limits allow.
    verbose
        0: silent; 1: a line per step and a status line while a step runs; 2: also Keras'
        per-epoch lines.

    Returns
    -------
    PruneResult or Plan
        ``.model`` (new, compiled if the input was), ``.steps`` (each with its plan and
        metrics), ``.costs_before``/``.costs_after``, ``.speedup``; ``str()`` is a table. With
        ``dry_run``, the :class:`~kerasprune.core.plan.Plan`.

    Raises
    ------
    ValueError, TypeError
        Before anything is built, naming the argument: an unknown criterion or target kind,
        no target or two, a target above 100%, a criterion that needs data or gradients
        without ``data`` (or labels, or a loss), data that does not fit the model, an
        invalid setting.
    PruneError
        A setting names a layer the model does not have.
    kerasprune.core.plan.PlanError
        The target cannot be met within the limits (``min_width``, ``max_fraction``,
        ``protect``, ``round_to``...): the message says how close it gets and what binds;
        ``err.plan`` is the closest plan. Raised before anything is built.

    Examples
    --------
    >>> result = kerasprune.prune(model, flops=0.5)  # doctest: +SKIP
    >>> result = kerasprune.prune(model, flops=0.3, criterion="taylor", data=(x_val, y_val),
    ...                           train_data=(x, y), epochs=2, iterative_steps=3,
    ...                           round_to=8)  # doctest: +SKIP
    >>> print(kerasprune.prune(model, params=1_000_000, dry_run=True))  # doctest: +SKIP
    """
    start = time.monotonic()
    if verbose not in (0, 1, 2) or isinstance(verbose, bool):
        raise ValueError(f"verbose must be 0, 1 or 2, got {verbose!r}")
    for name, flag in (("dry_run", dry_run), ("strict", strict),
                       ("allow_output_change", allow_output_change)):
        if not isinstance(flag, bool):
            raise TypeError(f"{name} must be True or False, got {flag!r}")
    steps = _int("iterative_steps", iterative_steps, 1)
    assert steps is not None
    seed_ = _int("seed", seed, 0)
    assert seed_ is not None
    _int("batch_size", batch_size, 1)
    for name, value in (("data_steps", data_steps), ("steps_per_epoch", steps_per_epoch),
                        ("val_steps", val_steps)):
        _int(name, value, 1, optional=True)
    if speedup is not False and not (speedup is True or isinstance(speedup, Mapping)):
        raise TypeError(f"speedup must be True, False or a dict of kerasprune.speedup "
                        f"arguments, got {speedup!r}")
    chosen = _criterion(criterion, seed_)
    kind = stats_kind(chosen)
    kg = convert.to_graph(model)
    analysis = analyze_channels(kg.graph, allow_output_change=allow_output_change)
    resolved = _target(target, {"flops": flops, "params": params, "latency": latency},
                       model, latency_options)
    _check_absolute(resolved, kg.graph)
    protected = None if protect is None else refs.layer_names(kg, protect, "protect")
    _check_limits(min_width, max_fraction)
    plan_kwargs: dict[str, Any] = {
        "scope": scope, "aggregate": aggregate, "normalize": normalize, "round_to": round_to,
        "min_width": _layer_map(kg, min_width, "min_width"),
        "max_fraction": _layer_map(kg, max_fraction, "max_fraction"),
        "protect": protected, "allow_output_change": allow_output_change, "strict": strict}

    # The data a criterion reads.
    if stats is not None:
        if kind is None:
            raise ValueError(f"criterion {chosen.name!r} reads no statistics; leave stats "
                             "out")
        if steps > 1:
            raise ValueError("stats are measured on the original model, but iterative "
                             "pruning measures every step's model anew: pass data instead")
        if data is not None:
            raise ValueError("pass either stats (measured beforehand) or data, not both")
    elif kind is not None and data is None:
        what = "gradients of the loss" if chosen.needs == "gradients" else "activations"
        raise ValueError(
            f"criterion {chosen.name!r} needs {what} measured on data: pass data="
            + ("(x, y) (labels are needed for the loss)" if kind == "taylor" else "x_val")
            + " or stats= from kerasprune.get_stats")
    elif kind is None and data is not None:
        raise ValueError(f"criterion {chosen.name!r} reads no data (it needs {chosen.needs}): "
                         "leave data out, or choose 'apoz', 'activation' or 'taylor'")
    fn = loss_function(model, loss) if kind == "taylor" and stats is None else None
    source = None if data is None else keras_data.read(
        data, model, name="data", labels=kind == "taylor", reiterable=steps > 1,
        batch_size=batch_size, steps=data_steps, steps_name="data_steps")

    # Fine-tuning and evaluation.
    if epochs is not None:
        _int("epochs", epochs, 0)
    n_epochs = int(epochs) if epochs is not None else (1 if train_data is not None else 0)
    if train_data is None and n_epochs:
        raise ValueError(f"epochs={n_epochs}: fine-tuning needs train_data=(x, y)")
    if train_data is None and steps > 1 and not dry_run:
        raise ValueError(f"iterative_steps={steps} fine-tunes between steps: pass "
                         "train_data=(x, y) (or prune in one step)")
    train = val = None
    compiled = None
    checked_fit_kwargs: dict[str, Any] = {}
    chosen_metric, chosen_mode = None, "max"
    if not dry_run:
        compiled_already = bool(getattr(model, "compiled", False) and
                                model.get_compile_config())
        if train_data is not None or val_data is not None or compiled_already:
            # raises for a model that is not compiled but must be fine-tuned or evaluated
            compiled = finetune.compile_config(model, learning_rate, who="prune")
        if train_data is not None:
            train = keras_data.read(train_data, model, name="train_data", labels=True,
                                    reiterable=True, batch_size=batch_size,
                                    steps=steps_per_epoch, steps_name="steps_per_epoch")
        if val_data is not None:
            val = keras_data.read(val_data, model, name="val_data", labels=True,
                                  reiterable=True, batch_size=batch_size, steps=val_steps,
                                  steps_name="val_steps")
        checked_fit_kwargs = finetune.check_fit_kwargs(fit_kwargs, train, who="prune")
        probe_source = train if train is not None else val
        if probe_source is not None and compiled is not None:
            probe_model = build.from_graph(kg, kg.graph)
            finetune.compile_fresh(probe_model, compiled)
            results = finetune.probe(probe_model, probe_source)
            if val is not None:
                chosen_metric, chosen_mode = finetune.pick_metric(metric, mode, results,
                                                                  probe_model)
    speed = None if speedup is False else ({} if speedup is True else dict(speedup))

    settings = _Settings(model, kg, analysis, resolved, chosen, kind, plan_kwargs, steps,
                         stats, source, fn, train, val, compiled, n_epochs, steps_per_epoch,
                         val_steps, checked_fit_kwargs, chosen_metric, chosen_mode, verbose,
                         speed, latency_options)
    # The final target's feasibility, from the limits alone, before any data is read and
    # before an iterative run's first step (a plan is cheap; a latency target's is not).
    if strict and not isinstance(resolved, Cost) and (
            (kind is not None and stats is None) or steps > 1):
        plan_pruning(analysis, resolved, Random(seed_), **plan_kwargs)
    run = _Run(settings)
    if dry_run:
        plan = run.plan(model, kg, analysis, resolved, 1, {})
        run.progress.clear()
        return plan
    result = run.run()
    assert isinstance(result, PruneResult)
    return replace(result, seconds=time.monotonic() - start)

