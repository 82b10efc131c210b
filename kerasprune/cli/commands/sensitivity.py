"""``kerasprune sensitivity``: how much each layer can lose before the metric drops."""

from __future__ import annotations

import argparse
import math
from typing import Any

from kerasprune.cli import limitsfile, options, plots, scoring
from kerasprune.cli.command import Command
from kerasprune.cli.console import Console
from kerasprune.cli.data import load_data
from kerasprune.cli.errors import EXIT_USAGE, CliError
from kerasprune.cli.io import check_output, dumps, write_json
from kerasprune.cli.models import compile_model, describe, load_model

__all__ = ["FORMAT", "VERSION", "Sensitivity", "document"]

FORMAT = "kerasprune.sensitivity"
VERSION = 1


def _fractions(text: str) -> list[float]:
    try:
        values = [float(p) for p in text.split(",")]
    except ValueError:
        raise ValueError(f"expected comma-separated shares such as 0.25,0.5,0.75, got "
                         f"{text!r}") from None
    if any(not 0 < v <= 1 for v in values) or values != sorted(set(values)):
        raise ValueError(f"expected increasing shares in (0, 1], got {text!r}")
    return values


def document(report: Any, tolerance: float, model: dict[str, Any],
             data: dict[str, Any]) -> dict[str, Any]:
    """A :class:`kerasprune.SensitivityReport` as JSON data (``-o``, ``--json``)."""
    groups = []
    for g, layers in enumerate(report.groups):
        groups.append({
            "layers": list(layers), "width": int(report.widths[g]),
            "deleted": [int(d) for d in report.deleted[g]],
            "values": [None if math.isnan(v) else float(v) for v in report.values[g]]})
    limits = report.limits(tolerance)
    return {"format": FORMAT, "version": VERSION, "model": model, "data": data,
            "criterion": report.criterion, "metric": report.metric, "mode": report.mode,
            "baseline": float(report.baseline), "fractions": list(report.fractions),
            "groups": groups, "skipped": dict(report.skipped),
            "protected": list(report.protected), "tolerance": tolerance,
            "limits": {"max_fraction": limits["max_fraction"], "protect": limits["protect"]},
            "seconds": float(report.seconds)}


class Sensitivity(Command):
    """``kerasprune sensitivity MODEL.keras --data DATA``."""

    name = "sensitivity"
    help = "the metric after deleting 10..90%% of each layer, without fine-tuning; limits"
    description = (
        "For every group of layers that can lose neurons, delete 10%, 20%... 90% of it (the "
        "lowest scores by --criterion, as prune would take them), evaluate the smaller model "
        "on --data without fine-tuning, and tabulate the metric (kerasprune.sensitivity). "
        "--plot draws a line per group; --limits-out writes, for --tolerance, the largest "
        "share each layer may lose and the layers that may lose none, which 'kerasprune "
        "prune --limits' reads.")
    epilog = ("example:\n"
              "  kerasprune sensitivity lenet.keras --data mnist --criterion l1 --plot "
              "sens.png --limits-out limits.json --tolerance 0.01\n"
              "  kerasprune prune lenet.keras --flops 0.5 --limits limits.json -o small.keras")

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        options.add_model(parser)
        group = parser.add_argument_group("the analysis")
        group.add_argument("--data", required=True, metavar="DATA",
                           help="evaluation data, with labels (plain mnist: its val split)")
        scoring.add_criterion(group, "l1", "which neurons of a group go first")
        group.add_argument("--stats-data", metavar="DATA",
                           help="measure a data-driven criterion on this (default: --data)")
        options.add_layers(parser, "analyse the groups of these layers (default: every group "
                                   "that can lose neurons, but the outputs')")
        group.add_argument("--fractions", type=options.typed("shares", _fractions),
                           default=None, metavar="F,G,...",
                           help="shares of each group to delete (default: 0.1,0.2,...,0.9)")
        group.add_argument("--metric", default=None,
                           help="the compiled metric to track (default: accuracy)")
        group.add_argument("--round-to", type=options.positive_int, default=1, metavar="N",
                           help="delete in units that keep a multiple of N neurons")
        out = parser.add_argument_group("output")
        options.add_files(out, ("SENS.json", "write the table, per group and share, as JSON"),
                          ("SENS.png", "draw the metric against the share deleted, a line "
                                       "per group"))
        out.add_argument("--limits-out", metavar="LIMITS.json",
                         help="write per-layer limits for 'kerasprune prune --limits'")
        out.add_argument("--tolerance", type=float, default=0.01, metavar="T",
                         help="the accepted loss of the metric, in its units, for the limits "
                              "(default: %(default)s, one point of accuracy)")
        options.add_json(parser)
        options.add_data_options(parser)
        options.add_compile_options(parser, "sensitivity evaluates the model with its "
                                             "compiled metrics")

    def check(self, args: argparse.Namespace) -> None:
        measured = scoring.needs_data(args.criterion)  # on --stats-data, else on --data
        scoring.check_criterion(args, (args.stats_data or args.data) if measured
                                else args.stats_data, "--stats-data")
        if not (math.isfinite(args.tolerance) and args.tolerance >= 0):
            raise CliError(f"--tolerance {args.tolerance}: must be a number >= 0 (the "
                           "accepted loss of the metric, in its units)", EXIT_USAGE)
        inputs = [args.model, args.data, *([args.stats_data] if args.stats_data else [])]
        for option, path in (("-o", args.output), ("--limits-out", args.limits_out)):
            if path:
                check_output(path, force=args.force, inputs=inputs, suffixes=(".json",),
                             what=option)
        if args.plot:
            plots.check_picture(args.plot, "--plot", force=args.force, inputs=inputs)
        paths = [p for p in (args.output, args.limits_out, args.plot) if p]
        if len(set(paths)) != len(paths):
            raise CliError("-o, --limits-out and --plot name the same file", EXIT_USAGE)

    def run(self, args: argparse.Namespace, console: Console) -> None:
        import kerasprune

        model = load_model(args.model, args.custom_objects, unsafe=args.unsafe)
        scoring.known_criterion(args.criterion)
        compile_model(model, args, args.model, "sensitivity evaluates it")
        common = {"batch_size": args.batch_size, "limit": args.limit, "rescale": args.rescale}
        data = load_data(args.data, model, option="--data", labels=True, **common)
        kwargs: dict[str, Any] = {}
        if args.stats_data is not None:
            labels = scoring.needs_labels(args.criterion)
            stats = load_data(args.stats_data, model, option="--stats-data", labels=labels,
                              **common)
            kwargs["stats_data"] = stats.with_labels() if labels else stats.inputs()
        if args.fractions is not None:
            kwargs["fractions"] = args.fractions
        console.note(f"deleting shares of each group by {args.criterion} and evaluating on "
                     f"{data.description}")
        report = kerasprune.sensitivity(
            model, data.with_labels(), criterion=args.criterion, layers=args.layers,
            metric=args.metric, round_to=args.round_to, batch_size=args.batch_size,
            seed=args.seed, verbose=console.level, **kwargs)
        model_doc = {**describe(model), "path": args.model}
        data_doc = {"source": args.data, "description": data.description,
                    "samples": data.samples}
        doc = document(report, args.tolerance, model_doc, data_doc)
        if args.output:
            write_json(args.output, doc)
            console.note(f"wrote {args.output}")
        if args.limits_out:
            write_json(args.limits_out,
                       limitsfile.document(report, args.tolerance, model_doc, data_doc))
            console.note(f"wrote {args.limits_out}")
        if args.plot:
            picture = plots.sensitivity(report, args.plot,
                                        f"'{model.name}' on {data.description}")
            doc["plot"] = picture.as_dict()
            console.note(f"wrote {args.plot}")
        if args.json:
            console.result(dumps(doc))
            return
        limits = doc["limits"]
        lines = [report.table(), "",
                 f"limits for a loss of {report.metric} within {args.tolerance:g} of the "
                 "baseline (prune --limits):"]
        lines += [f"  {layer}: at most {share:.0%} of its neurons"
                  for layer, share in limits["max_fraction"].items()]
        if limits["protect"]:
            lines.append(f"  protected (may lose none): {', '.join(limits['protect'])}")
        console.result("\n".join(lines))
