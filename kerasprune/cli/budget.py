"""``kerasprune prune --flops 0.5``: pruning a saved model to a target.

The options of :func:`kerasprune.prune` as a command line: the target (``--flops``,
``--params``, ``--latency``), the criterion and the data it is measured on, the ranking, the
limits (``--min-width``, ``--max-fraction``, ``--protect`` and a ``--limits`` file from
``kerasprune sensitivity``), iterative steps with fine-tuning, and the measured speed-up.
Everything that can be checked without Keras is checked in :func:`check`, before any work;
:func:`prune_kwargs` turns the options into the library's arguments, and :func:`outcome`
turns what the library returned (a :class:`~kerasprune.core.plan.Plan` for a dry run, a
:class:`kerasprune.PruneResult` otherwise) into JSON data.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from kerasprune.cli import limitsfile, options, scoring
from kerasprune.cli.console import Console
from kerasprune.cli.data import load_data
from kerasprune.cli.errors import EXIT_USAGE, CliError
from kerasprune.cli.format import costs_data
from kerasprune.cli.models import compile_model
from kerasprune.core.plan import SCOPES
from kerasprune.core.scores import AGGREGATES, NORMALIZATIONS

__all__ = ["KINDS", "add_arguments", "check", "describe", "given", "outcome", "prune_kwargs"]

KINDS = ("flops", "params", "latency")
"""The target kinds, one option each (``--flops``...)."""

_UNITS = {"flops": "FLOPs", "params": "parameters"}
_TFLITE = {"auto": "auto", "yes": True, "no": False}


def _amount(kind: str) -> Callable[[str], Any]:
    """The argparse type of ``--KIND``: a share in (0, 1], or a whole count (not latency)."""

    def parse(text: str) -> float:
        try:
            value = float(int(text)) if text.strip().lstrip("+").isdigit() else float(text)
        except ValueError:
            raise ValueError(f"expected a number such as 0.5, got {text!r}") from None
        if not (math.isfinite(value) and value > 0):
            raise ValueError(f"must be positive, got {text!r}")
        if value > 1 and (kind == "latency" or not value.is_integer()):
            what = ("a share of the original's measured time, in (0, 1]" if kind == "latency"
                    else f"a share in (0, 1] (0.5 keeps half) or a whole number of "
                         f"{_UNITS[kind]}")
            raise ValueError(f"{text} is above 100% of the original; give {what}")
        return value

    return options.typed(f"{kind} target", parse)


# Options only a target uses: (dest, option) pairs, for "--criterion needs a target".
_OWN: tuple[tuple[str, str], ...] = (
    ("criterion", "--criterion"), ("data", "--data"), ("scope", "--scope"),
    ("aggregate", "--aggregate"), ("normalize", "--normalize"), ("round_to", "--round-to"),
    ("min_width", "--min-width"), ("max_fraction", "--max-fraction"),
    ("protect", "--protect"), ("limits", "--limits"), ("iterative_steps", "--iterative-steps"),
    ("best_effort", "--best-effort"), ("train", "--train"), ("epochs", "--epochs"),
    ("learning_rate", "--learning-rate"), ("val", "--val"), ("speedup", "--speedup"),
    ("loss", "--loss"), ("optimizer", "--optimizer"), ("metrics", "--metrics"))
_SPEED: tuple[tuple[str, str], ...] = (
    ("speedup_runners", "--speedup-runners"), ("speedup_batch_sizes", "--speedup-batch-sizes"),
    ("tflite", "--tflite"), ("repeats", "--repeats"))


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of pruning to a target."""
    group = parser.add_argument_group(
        "pruning to a target", "--flops, --params or --latency: what to keep, as a share of "
        "the original in (0, 1] or (params, FLOPs) a whole number; the neurons with the "
        "lowest scores by --criterion go first, coupled neurons (a residual Add...) together")
    for kind, what in (("flops", "FLOPs"), ("params", "parameters")):
        group.add_argument(f"--{kind}", type=_amount(kind), metavar="F|N",
                           help=f"{what} to keep: a share (0.5) or a count (1000000)")
    group.add_argument("--latency", type=_amount("latency"), metavar="F",
                       help="measured time to keep, a share of the original's (each "
                            "candidate is built and timed: slow)")
    scoring.add_criterion(group, None, "how neurons are scored (default: l1)")
    group.add_argument("--data", metavar="DATA",
                       help="data to measure the criterion on (labels too for taylor)")
    group.add_argument("--scope", choices=SCOPES, default=None,
                       help="rank the neurons of all layers together (global, the default) "
                            "or take the same share of every layer (uniform)")
    group.add_argument("--aggregate", choices=list(AGGREGATES), default=None,
                       help="how coupled neurons' scores combine (default: sum)")
    group.add_argument("--normalize", choices=list(NORMALIZATIONS), default=None,
                       help="how each layer's scores are made comparable (default: mean)")
    group.add_argument("--round-to", type=options.positive_int, default=None, metavar="N",
                       help="keep a multiple of N neurons in every layer that loses any "
                            "(8 for vector units)")
    group.add_argument("--iterative-steps", type=options.positive_int, default=None,
                       metavar="N", help="reach the target in N steps, fine-tuning on --train "
                                         "after each")
    group.add_argument("--best-effort", action="store_true", default=None,
                       help="if the limits forbid the target, prune as far as they allow "
                            "(default: an error saying how close they allow)")
    limits = parser.add_argument_group(
        "limits", "VALUE sets every layer, LAYER=VALUE one layer (repeatable); output layers "
        "are protected unless --allow-output-change")
    limits.add_argument("--min-width", action="append", default=None, metavar="N|LAYER=N",
                        type=options.per_layer(lambda t: options.parse_int(t, 1), "conv1=8"),
                        help="the fewest neurons a layer keeps (default: 1)")
    limits.add_argument("--max-fraction", action="append", default=None,
                        metavar="F|LAYER=F",
                        type=options.per_layer(options.parse_share, "conv1=0.3"),
                        help="the largest share of a layer's neurons that may go")
    limits.add_argument("--protect", nargs="+", default=None, metavar="LAYER",
                        help="layers none of whose neurons may go")
    limits.add_argument("--limits", metavar="LIMITS.json",
                        help="per-layer shares and protected layers from 'kerasprune "
                             "sensitivity --limits-out' (the stricter limit wins)")
    tune = parser.add_argument_group("fine-tuning and evaluation")
    tune.add_argument("--train", metavar="DATA",
                      help="fine-tune after each step on this (with labels)")
    tune.add_argument("--epochs", type=options.non_negative_int, default=None, metavar="N",
                      help="fine-tuning epochs per step (default with --train: 1)")
    tune.add_argument("--learning-rate", type=float, default=None, metavar="LR",
                      help="fine-tune at this learning rate (default: the compiled one)")
    tune.add_argument("--val", metavar="DATA",
                      help="evaluate on this (with labels) before and after each step")
    options.add_compile_options(parser, "--train, --val and --criterion taylor use the "
                                        "model's compile settings (optimizer, loss, metrics)")
    speed = parser.add_argument_group("measured speed-up")
    speed.add_argument("--speedup", action="store_true", default=None,
                       help="time the original and the pruned model (interleaved) and print "
                            "the measured speed-up beside the FLOP ratio")
    speed.add_argument("--speedup-runners", nargs="+", default=None, metavar="RUNNER",
                       help="how to run them: predict, predict_on_batch, compiled, xla "
                            "(TensorFlow), torch_compile (default: the first three)")
    speed.add_argument("--speedup-batch-sizes", type=options.int_list, default=None,
                       metavar="N,M", help="batch sizes to time (default: 1,32)")
    speed.add_argument("--tflite", choices=list(_TFLITE), default=None,
                       help="also time TFLite exports (default: auto, when they convert)")
    speed.add_argument("--repeats", type=options.positive_int, default=None, metavar="N",
                       help="timed blocks per runner and batch size (default: 10)")


def given(args: argparse.Namespace) -> list[str]:
    """The target options given (``["--flops"]``...)."""
    return [f"--{k}" for k in KINDS if getattr(args, k) is not None]


def stray(args: argparse.Namespace) -> list[str]:
    """Options given that only a target uses."""
    return [opt for dest, opt in (*_OWN, *_SPEED) if getattr(args, dest) not in (None, [])]


def check(args: argparse.Namespace) -> None:
    """Check the target's options before any work (no Keras).

    Raises
    ------
    CliError
        Two targets, an unknown criterion, a criterion measured on data without ``--data``
        (or data for one that reads none), steps or epochs without ``--train``, speed-up
        settings without ``--speedup``, or a bad ``--limits`` file.
    """
    targets = given(args)
    if len(targets) != 1:
        raise CliError(f"give one target, not {' and '.join(targets)}", EXIT_USAGE)
    criterion = args.criterion or "l1"
    scoring.check_criterion(argparse.Namespace(**{**vars(args), "criterion": criterion}),
                            args.data)
    steps = args.iterative_steps or 1
    if args.train is None:
        if args.epochs:
            raise CliError(f"--epochs {args.epochs} fine-tunes, which needs --train DATA",
                           EXIT_USAGE)
        if steps > 1 and not args.dry_run:
            raise CliError(f"--iterative-steps {steps} fine-tunes between steps: give --train "
                           "DATA (or prune in one step)", EXIT_USAGE)
    if args.speedup is None:
        extra = [opt for dest, opt in _SPEED if getattr(args, dest) is not None]
        if extra:
            raise CliError(f"{', '.join(extra)} set how --speedup times the models: add "
                           "--speedup", EXIT_USAGE)
    if args.limits is not None:
        limitsfile.read(args.limits)
    for option, values in (("--min-width", args.min_width),
                           ("--max-fraction", args.max_fraction)):
        every = [v for layer, v in values or () if not layer]
        if len(every) > 1:
            raise CliError(f"{option} is given {len(every)} times for every layer; give it "
                           "once (and LAYER=VALUE for single layers)", EXIT_USAGE)


def describe(args: argparse.Namespace) -> str:
    """The target and the ranking in words."""
    (kind,) = [k for k in KINDS if getattr(args, k) is not None]
    value = getattr(args, kind)
    amount = f"{value:g} of the original" if value <= 1 else f"{int(value):,}"
    return (f"lowest {args.criterion or 'l1'} scores, {args.scope or 'global'} ranking, to "
            f"{kind} {amount}")


def _per_layer(option: str, values: Sequence[tuple[str, Any]] | None, default: Any,
               names: Sequence[str], file: Mapping[str, float] | None = None) -> Any:
    """A per-layer setting: one value for every layer, or ``{layer: value}`` for all layers
    (``file``: more per-layer values, from a limits file; the smaller value wins)."""
    every = [v for layer, v in values or () if not layer]
    base = every[0] if every else default
    own = {layer: v for layer, v in values or () if layer}
    for layer in own:
        if layer not in names:
            raise CliError(f"{option} {layer}=...: the model has no layer '{layer}' with "
                           f"neurons (it has {', '.join(names)})")
    if not own and not file:
        return base
    out = {}
    for name in names:
        candidates = [own.get(name, base), *([file[name]] if file and name in file else [])]
        out[name] = min(candidates)
    return out


def prune_kwargs(args: argparse.Namespace, model: Any, console: Console) -> dict[str, Any]:
    """The arguments of :func:`kerasprune.prune` for the options, with the data loaded and
    checked against ``model``.

    Raises
    ------
    CliError
        Data that does not fit, a missing loss, a limits file of another model, an unknown
        layer.
    """
    import kerasprune

    criterion = args.criterion or "l1"
    scoring.known_criterion(criterion)
    (kind,) = [k for k in KINDS if getattr(args, k) is not None]
    value = getattr(args, kind)
    kwargs: dict[str, Any] = {kind: value, "criterion": criterion, "seed": args.seed,
                              "batch_size": args.batch_size, "dry_run": args.dry_run,
                              "strict": not args.best_effort,
                              "allow_output_change": args.allow_output_change,
                              "verbose": console.level}
    for dest in ("scope", "aggregate", "normalize", "round_to", "iterative_steps", "epochs",
                 "learning_rate"):
        if getattr(args, dest) is not None:
            kwargs[dest] = getattr(args, dest)
    labels = scoring.needs_labels(criterion)
    common = {"batch_size": args.batch_size, "limit": args.limit, "rescale": args.rescale}
    if labels or args.train or (args.val and not args.dry_run):
        compile_model(model, args, args.model,
                      "--criterion taylor differentiates its loss" if labels else
                      "--train and --val fine-tune and evaluate it")
    if args.data is not None:
        data = load_data(args.data, model, option="--data", labels=labels, **common)
        kwargs["data"] = data.with_labels() if labels else data.inputs()
        console.note(f"measuring {criterion} on {data.description}")
    if not args.dry_run:  # a dry run plans the whole target in one shot: no training
        if args.train is not None:
            train = load_data(args.train, model, option="--train", split="train",
                              shuffle=True, labels=True, **common)
            kwargs["train_data"] = train.with_labels()
        if args.val is not None:
            val = load_data(args.val, model, option="--val", labels=True, **common)
            kwargs["val_data"] = val.with_labels()
    names = [c.name for c in kerasprune.costs(model) if c.width is not None]
    file = limitsfile.read(args.limits) if args.limits is not None else None
    protect = list(args.protect or [])
    if file is not None:
        known = {c.name for c in kerasprune.costs(model)}
        foreign = [n for n in (*file.max_fraction, *file.protect) if n not in known]
        if foreign:
            raise CliError(f"--limits {args.limits}: layer '{foreign[0]}' is not in model "
                           f"'{model.name}'; the limits were measured on model "
                           f"'{file.model}'")
        protect += [n for n in file.protect if n not in protect]
    kwargs["min_width"] = _per_layer("--min-width", args.min_width, 1, names)
    kwargs["max_fraction"] = _per_layer("--max-fraction", args.max_fraction, 1.0, names,
                                        file.max_fraction if file is not None else None)
    if protect:
        kwargs["protect"] = protect
    if args.speedup:
        speed: dict[str, Any] = {}
        if args.speedup_runners is not None:
            speed["runners"] = tuple(args.speedup_runners)
        if args.speedup_batch_sizes is not None:
            speed["batch_sizes"] = tuple(args.speedup_batch_sizes)
        if args.tflite is not None:
            speed["tflite"] = _TFLITE[args.tflite]
        if args.repeats is not None:
            speed["repeats"] = args.repeats
        kwargs["speedup"] = speed or True
    return kwargs


def _indices(request: Mapping[str, Any]) -> dict[str, list[int]]:
    return {name: sorted(int(i) for i in idx) for name, idx in request.items() if len(idx)}


def original_indices(costs_before: Sequence[Any], plans: Sequence[Any]) -> dict[str, list[int]]:
    """The neurons of the original model that a run's steps deleted.

    Each step's plan numbers the neurons of the model it began with, which keeps the
    original's surviving neurons in order; mapping each step back gives original indices.
    """
    alive = {c.name: list(range(c.width)) for c in costs_before if c.width is not None}
    deleted: dict[str, list[int]] = {}
    for plan in plans:
        for name, idx in _indices(plan.request).items():
            gone = set(idx)
            deleted.setdefault(name, []).extend(alive[name][i] for i in idx)
            alive[name] = [n for i, n in enumerate(alive[name]) if i not in gone]
    return {name: sorted(idx) for name, idx in deleted.items()}


def _plan_data(plan: Any) -> dict[str, Any]:
    return {"target": plan.target.describe(plan.original), "met": bool(plan.met),
            "original": float(plan.original), "limit": float(plan.limit),
            "achieved": float(plan.achieved), "why": plan.why,
            "groups": [{"layers": list(g.layers), "width_before": int(g.width_before),
                        "width_after": int(g.width_after), "limit": g.limit}
                       for g in plan.groups if g.deleted.size or g.limit],
            "settings": {str(k): v if isinstance(v, (int, float, str, bool)) or v is None
                         else str(v) for k, v in plan.settings.items()}}


def _speedup_data(report: Any) -> dict[str, Any]:
    return {"flop_ratio": report.flop_ratio, "params_ratio": report.params_ratio,
            "rows": [{"runner": r.runner, "batch_size": r.batch_size,
                      "original_ms": r.original.median * 1e3,
                      "pruned_ms": r.pruned.median * 1e3, "speedup": r.speedup,
                      "efficiency": r.efficiency} for r in report.rows],
            "skipped": dict(report.skipped)}


def outcome(result: Any) -> dict[str, Any]:
    """What a target run did, as JSON data: a dry run's plan, or a run's steps, metrics and
    measured speed-up; ``deleted`` numbers the original model's neurons either way."""
    from kerasprune.core import cost

    if not hasattr(result, "steps"):  # a dry run: the Plan
        (pb, pa), (fb, fa) = result.params, result.flops
        return {"deleted": _indices(result.request), "plan": _plan_data(result),
                "before": {"params": pb, "flops": fb}, "after": {"params": pa, "flops": fa},
                "layers": {"before": costs_data(result.costs_before),
                           "after": costs_data(result.costs_after)}}
    (pb, fb), (pa, fa) = cost.total(result.costs_before), cost.total(result.costs_after)
    return {
        "deleted": original_indices(result.costs_before, result.plans),
        "criterion": result.criterion, "target": result.target.describe(
            result.steps[0].plan.original) if result.steps else result.target.kind,
        "steps": [{"step": s.step, "deleted": _indices(s.plan.request),
                   "plan": _plan_data(s.plan), "metrics_pruned": dict(s.metrics_pruned),
                   "metrics": dict(s.metrics), "epochs": s.epochs, "seconds": s.seconds}
                  for s in result.steps],
        "metric": result.metric,
        "metrics": {"before": dict(result.metrics_before),
                    "after": dict(result.metrics_after)},
        "before": {"params": pb, "flops": fb}, "after": {"params": pa, "flops": fa},
        "layers": {"before": costs_data(result.costs_before),
                   "after": costs_data(result.costs_after)},
        "speedup": None if result.speedup is None else _speedup_data(result.speedup),
        "seconds": result.seconds}
