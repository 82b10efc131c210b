"""``kerasprune apoz``: APoZ of every neuron, as a table, a JSON file and histograms."""

from __future__ import annotations

import argparse
from typing import Any

from kerasprune.cli import apozfile, options, plots
from kerasprune.cli.command import Command
from kerasprune.cli.console import Console
from kerasprune.cli.data import load_data
from kerasprune.cli.format import table
from kerasprune.cli.io import check_output, dumps, write_json
from kerasprune.cli.models import describe, load_model
from kerasprune.cli.selection import Rule, add_rule_options

__all__ = ["Apoz"]


def render(doc: dict[str, Any], rule: Rule) -> str:
    """The APoZ statistics as a table for people."""
    rows = [["layer", "measured at", "neurons", "mean", "std", "min", "max", "threshold",
             "selected"]]
    for name, layer in doc["layers"].items():
        t = layer["threshold"]
        rows.append([name, layer["measured_at"], str(layer["neurons"]),
                     *(f"{layer[k]:.3f}" for k in ("mean", "std", "min", "max")),
                     "" if t is None else f"{t:.3f}", str(len(layer["selected"]))])
    head = (f"APoZ of model '{doc['model']['name']}' on {doc['data']['description']}; "
            f"selected: {rule.describe()}")
    return f"{head}\n\n{table(rows, right=(2, 3, 4, 5, 6, 7, 8))}"


class Apoz(Command):
    """``kerasprune apoz MODEL.keras --data DATA``."""

    name = "apoz"
    help = "APoZ (share of zero activations) of each neuron: table, JSON, histograms"
    description = (
        "Measure the APoZ (Average Percentage of Zeros, Hu et al. 2016) of the neurons of "
        "every layer that has a ReLU on its channel path, in one pass over the data. Prints "
        "per-layer statistics and how many neurons the selection rule picks; -o writes "
        "every neuron's APoZ as JSON, for 'kerasprune prune --from'; --plot draws one "
        "histogram per layer with the rule's threshold.")

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        options.add_model(parser)
        parser.add_argument("--data", required=True, metavar="DATA",
                            help="inputs to measure on (plain mnist: its val split)")
        options.add_layers(parser, "the layers to measure (default: every layer that can "
                                   "be measured)")
        options.add_files(parser, ("APOZ.json", "write the APoZ of every neuron here (JSON)"),
                          ("APOZ.png", "draw one histogram per layer (.png, .svg or .pdf)"))
        options.add_json(parser)
        add_rule_options(parser)
        options.add_data_options(parser)

    def check(self, args: argparse.Namespace) -> None:
        Rule.from_args(args)
        if args.output:
            check_output(args.output, force=args.force, inputs=[args.model, args.data],
                         suffixes=(".json",), what="-o")
        if args.plot:
            plots.check_picture(args.plot, "--plot", force=args.force,
                                inputs=[args.model, args.data])

    def run(self, args: argparse.Namespace, console: Console) -> None:
        import kerasprune

        rule = Rule.from_args(args)
        model = load_model(args.model, args.custom_objects, unsafe=args.unsafe)
        data = load_data(args.data, model, option="--data", batch_size=args.batch_size,
                         limit=args.limit, rescale=args.rescale)
        console.note(f"measuring APoZ on {data.description}")
        report = kerasprune.get_apoz(model, data.inputs(), args.layers,
                                     batch_size=args.batch_size, verbose=console.progress)
        doc = apozfile.document(report, rule, {**describe(model), "path": args.model},
                                {"source": args.data, "description": data.description,
                                 "samples": data.samples})
        if args.output:
            write_json(args.output, doc)
            console.note(f"wrote {args.output}")
        if args.plot:
            picture = plots.apoz_histograms(
                {name: layer["apoz"] for name, layer in doc["layers"].items()}, rule,
                args.plot, f"APoZ of '{model.name}' on {data.description}",
                measured_at=report.measured_at)
            doc["plot"] = picture.as_dict()
            console.note(f"wrote {args.plot} ({picture.panels} panels)")
        console.result(dumps(doc) if args.json else render(doc, rule))
