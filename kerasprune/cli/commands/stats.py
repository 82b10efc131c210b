"""``kerasprune stats``: what any criterion says of every neuron: table, JSON, histograms."""

from __future__ import annotations

import argparse
import math
from dataclasses import replace
from typing import Any

import numpy as np

from kerasprune.cli import options, plots, scoring
from kerasprune.cli.command import Command
from kerasprune.cli.console import Console
from kerasprune.cli.data import load_data
from kerasprune.cli.errors import EXIT_USAGE, CliError
from kerasprune.cli.format import table
from kerasprune.cli.io import check_output, dumps, write_json
from kerasprune.cli.models import compile_model, describe, load_model

__all__ = ["FORMAT", "VERSION", "Stats", "scores"]

FORMAT = "kerasprune.stats"
VERSION = 1

_STATISTIC = {"apoz": "APoZ", "activation": "mean |activation|",
              "taylor": "Taylor importance |a dL/da|", "l1": "L1 norm", "l2": "L2 norm",
              "bn_scale": "|BatchNormalization gamma|", "random": "random score"}
"""What a criterion's per-neuron value is called (another criterion: its name)."""


def scores(model: Any, criterion: str, seed: int, stats: Any = None,
           layers: list[str] | None = None) -> Any:
    """The criterion's score of every neuron (higher: keep), by the core's
    :func:`~kerasprune.core.criteria.layer_scores` on the model's graph, its weights read
    on the host.

    Returns
    -------
    kerasprune.core.criteria.LayerScores
        Scores of the layers the criterion applies to, and why not for the others.
    """
    import keras

    import kerasprune
    from kerasprune.core.criteria import Random, layer_scores
    from kerasprune.core.groups import analyze_channels

    graph = kerasprune.to_graph(model).graph
    host = {name: replace(spec, weights={k: keras.ops.convert_to_numpy(w)
                                         for k, w in spec.weights.items()})
            for name, spec in graph.layers.items()}
    analysis = analyze_channels(replace(graph, layers=host))
    chosen = Random(seed) if criterion == "random" else criterion
    return layer_scores(analysis, chosen, stats, layers)


def _lowest(score: np.ndarray, fraction: float | None) -> np.ndarray:
    """The ``floor(fraction * n)`` neurons with the lowest scores (ties: lower index)."""
    if fraction is None:
        return np.zeros((0,), dtype=np.int64)
    n = math.floor(fraction * len(score) + 1e-9)
    return np.sort(np.argsort(score, kind="stable")[:n]).astype(np.int64)


def render(doc: dict[str, Any]) -> str:
    """The statistics as a table for people."""
    measured = bool(doc["data"])  # weight criteria are not measured anywhere
    rows = [["layer", *(["measured at"] if measured else []), "neurons", "mean", "std", "min",
             "max", "selected"]]
    for name, layer in doc["layers"].items():
        rows.append([name, *([layer["measured_at"]] if measured else []),
                     str(layer["neurons"]),
                     *(f"{layer[k]:.4g}" for k in ("mean", "std", "min", "max")),
                     str(len(layer["selected"]))])
    data = doc["data"]
    head = (f"{doc['statistic']} ({doc['criterion']}) of model '{doc['model']['name']}'"
            + (f" on {data['description']}" if data else "")
            + (f"; selected: the {doc['fraction']:g} of each layer with the lowest scores"
               if doc["fraction"] is not None else ""))
    first = 2 if measured else 1
    parts = [head, "", table(rows, right=tuple(range(first, first + 6)))]
    if doc["skipped"]:
        parts += ["", "not scored:", *(f"  {n}: {why}" for n, why in doc["skipped"].items())]
    return "\n".join(parts)


class Stats(Command):
    """``kerasprune stats MODEL.keras --criterion NAME [--data DATA]``."""

    name = "stats"
    help = "any criterion's statistics and scores of each neuron: table, JSON, histograms"
    description = (
        "Score every neuron that can be deleted by a criterion: activation (mean |a|), "
        "taylor (|a dL/da|, Molchanov et al. 2017) or apoz, measured in one pass over --data; "
        "or l1, l2, bn_scale or random, read from the weights. Prints per-layer statistics; "
        "-o writes every neuron's value and score (higher: keep) as JSON; --plot draws one "
        "histogram per layer, with --fraction's lowest-scoring neurons coloured. 'kerasprune "
        "apoz' is the APoZ view with the paper's selection rules.")
    epilog = ("examples:\n"
              "  kerasprune stats lenet.keras --criterion taylor --data mnist -o taylor.json "
              "--plot taylor.png\n"
              "  kerasprune stats lenet.keras --criterion l1 --fraction 0.3")

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        options.add_model(parser)
        group = parser.add_argument_group("what to measure")
        scoring.add_criterion(group, "activation", "the criterion")
        group.add_argument("--data", metavar="DATA",
                           help="data to measure on (labels too for taylor; plain mnist: "
                                "its val split)")
        options.add_layers(parser, "the layers to score (default: every layer whose neurons "
                                   "can be deleted and can be scored)")
        group.add_argument("--fraction", type=options.share, default=None, metavar="F",
                           help="mark the F of each layer with the lowest scores (what a "
                                "uniform prune would delete first)")
        options.add_files(parser, ("STATS.json", "write every neuron's value and score here "
                                                 "(JSON)"),
                          ("STATS.png", "draw one histogram per layer (.png, .svg or .pdf)"))
        options.add_json(parser)
        options.add_data_options(parser)
        options.add_compile_options(parser, "--criterion taylor differentiates the model's "
                                             "compiled loss")

    def check(self, args: argparse.Namespace) -> None:
        scoring.check_criterion(args, args.data)
        if args.fraction is not None and args.fraction >= 1:
            raise CliError(f"--fraction {args.fraction:g} would mark every neuron; give a "
                           "share below 1", EXIT_USAGE)
        inputs = [args.model] + ([args.data] if args.data else [])
        if args.output:
            check_output(args.output, force=args.force, inputs=inputs, suffixes=(".json",),
                         what="-o")
        if args.plot:
            plots.check_picture(args.plot, "--plot", force=args.force, inputs=inputs)

    def run(self, args: argparse.Namespace, console: Console) -> None:
        import kerasprune

        name = args.criterion
        model = load_model(args.model, args.custom_objects, unsafe=args.unsafe)
        scoring.known_criterion(name)
        labels = scoring.needs_labels(name)
        if labels:
            compile_model(model, args, args.model,
                          "--criterion taylor differentiates its loss")
        report, data_doc = None, {}
        if scoring.needs_data(name):
            data = load_data(args.data, model, option="--data", batch_size=args.batch_size,
                             limit=args.limit, rescale=args.rescale, labels=labels)
            console.note(f"measuring {name} on {data.description}")
            report = kerasprune.get_stats(model, data.with_labels() if labels else
                                          data.inputs(), name, layers=args.layers,
                                          batch_size=args.batch_size, verbose=console.progress)
            data_doc = {"source": args.data, "description": data.description,
                        "samples": data.samples}
        scored = scores(model, name, args.seed, report,
                        list(report) if report is not None else args.layers)
        values = report.results() if report is not None else scored.scores
        layers: dict[str, Any] = {}
        for layer, score in scored.scores.items():
            v = np.asarray(values[layer], dtype=np.float64)
            chosen = _lowest(np.asarray(score), args.fraction)
            layers[layer] = {
                "measured_at": report.measured_at[layer] if report is not None else None,
                "neurons": len(v), "mean": float(v.mean()), "std": float(v.std()),
                "min": float(v.min()), "max": float(v.max()),
                "selected": [int(i) for i in chosen],
                "values": [float(x) for x in v], "scores": [float(x) for x in score]}
        skipped = {**(dict(report.skipped) if report is not None else {}),
                   **dict(scored.skipped)}
        if not layers:
            raise CliError(f"--criterion {name}: no layer could be scored: "
                           + "; ".join(f"{n}: {why}" for n, why in skipped.items()))
        doc: dict[str, Any] = {
            "format": FORMAT, "version": VERSION, "criterion": name,
            "statistic": _STATISTIC.get(name, name),
            "model": {**describe(model), "path": args.model}, "data": data_doc,
            "fraction": args.fraction, "layers": layers, "skipped": skipped}
        if args.output:
            write_json(args.output, doc)
            console.note(f"wrote {args.output}")
        if args.plot:
            picture = plots.histograms(
                {n: np.asarray(entry["values"]) for n, entry in layers.items()}, args.plot,
                f"{doc['statistic']} of '{model.name}'"
                + (f" on {data_doc['description']}" if data_doc else ""),
                xlabel=doc["statistic"], xlim=(0.0, 1.0) if name == "apoz" else None,
                selected={n: entry["selected"] for n, entry in layers.items()},
                thresholds={n: _boundary(entry) for n, entry in layers.items()},
                threshold_label=f"lowest {args.fraction:g} by score"
                if args.fraction is not None else "",
                measured_at={n: e["measured_at"] or n for n, e in layers.items()})
            doc["plot"] = picture.as_dict()
            console.note(f"wrote {args.plot} ({picture.panels} panels)")
        console.result(dumps(doc) if args.json else render(doc))


def _boundary(entry: dict[str, Any]) -> float | None:
    """Where the selection ends, in values: halfway between the highest-scoring selected
    neuron and the lowest-scoring kept one (values rise with scores, or fall, as APoZ)."""
    chosen = set(entry["selected"])
    if not chosen:
        return None
    scores, values = entry["scores"], entry["values"]
    last = max(chosen, key=lambda i: scores[i])
    kept = [i for i in range(len(scores)) if i not in chosen]
    first = min(kept, key=lambda i: scores[i])
    return (float(values[last]) + float(values[first])) / 2
