"""``kerasprune trim``: Network Trimming of a saved model, with a report and pictures."""

from __future__ import annotations

import argparse
import shlex
import warnings
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np

from kerasprune import __version__
from kerasprune.cli import options, plots
from kerasprune.cli.command import Command
from kerasprune.cli.console import Console
from kerasprune.cli.data import Data, load_data
from kerasprune.cli.errors import EXIT_ERROR, EXIT_INTERRUPTED, CliError
from kerasprune.cli.format import costs_data
from kerasprune.cli.io import check_output, check_report_dir, dumps, write_json, write_text
from kerasprune.cli.models import compile_model, load_model, save_model
from kerasprune.cli.report import RoundRecord, TrimRecord, markdown
from kerasprune.cli.selection import Rule, add_rule_options

__all__ = ["REPORT_FILES", "Trim"]

REPORT_FILES = ("report.md", "history.json", "widths.png", "accuracy.png", "apoz_first.png",
                "apoz_last.png")
"""What ``--report DIR`` writes."""


class _Watch:
    """A :func:`kerasprune.trim` callback that measures each round's APoZ for the report.

    With ``apoz_data`` (only with ``--report``) it measures each round's model once more,
    keeping the first and the latest round's APoZ (for histograms) and every round's mean
    per layer. (The best model so far is trim's own business: an interrupted run returns it.)
    """

    def __init__(self, apoz_data: Any, batch_size: int) -> None:
        self.apoz_data = apoz_data
        self.batch_size = batch_size
        self.first: tuple[int, dict[str, np.ndarray], dict[str, str]] | None = None
        self.last: tuple[int, dict[str, np.ndarray], dict[str, str]] | None = None
        self.means: dict[int, dict[str, float]] = {}

    def __call__(self, trim_round: Any, model: Any) -> bool:
        if self.apoz_data is not None:
            self._measure(trim_round.round, model)
        return False

    def _measure(self, round_: int, model: Any) -> None:
        import kerasprune
        from kerasprune.core.apoz import ApozWarning

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ApozWarning)  # layers trim leaves out too
            report = kerasprune.get_apoz(model, self.apoz_data, batch_size=self.batch_size,
                                         verbose=0)
        values = {name: np.asarray(v, dtype=np.float64) for name, v in report.items()}
        entry = (round_, values, dict(report.measured_at))
        if self.first is None:
            self.first = entry
        self.last = entry
        self.means[round_] = {n: float(v.mean()) for n, v in values.items()}


def _exit_code(error: BaseException) -> int:
    return EXIT_INTERRUPTED if isinstance(error, KeyboardInterrupt) else EXIT_ERROR


class Trim(Command):
    """``kerasprune trim MODEL.keras --train DATA --val DATA -o OUT.keras``."""

    name = "trim"
    help = "Network Trimming: delete high-APoZ neurons and fine-tune, round after round"
    description = (
        "Network Trimming (Hu et al. 2016): each round measures the APoZ of the trimmed "
        "layers on the validation data (or --apoz-data), deletes the neurons the selection "
        "rule picks, fine-tunes with the model's compile settings, and evaluates. It stops "
        "when no neuron qualifies, when the metric falls more than --tolerance below the "
        "start, or after --rounds; the smallest model within the tolerance is saved. "
        "--report DIR writes report.md with the per-round widths, accuracy vs params and "
        "FLOPs, and the APoZ histograms of the first and last round.")
    epilog = ("example:\n"
              "  kerasprune trim lenet.keras --train mnist --val mnist -o lenet_trimmed.keras "
              "--report trim_report")

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        options.add_model(parser)
        options.add_output(parser, required=True, help="where to save the trimmed model")
        parser.add_argument("--report", metavar="DIR",
                            help=f"write a report and pictures there ({', '.join(REPORT_FILES)}); "
                                 "measures each round's APoZ once more for them")
        options.add_json(parser)
        data = options.add_data_options(parser)
        data.add_argument("--train", required=True, metavar="DATA",
                          help="fine-tuning data, with labels (plain mnist: its train split)")
        data.add_argument("--val", required=True, metavar="DATA",
                          help="validation data, with labels: evaluated every round, and "
                               "APoZ is measured on it (plain mnist: its val split)")
        data.add_argument("--apoz-data", metavar="DATA",
                          help="measure APoZ on this instead of the validation data")
        options.add_layers(parser, "the layers to trim (default: every layer with neurons "
                                   "whose APoZ can be measured, but the output)")
        add_rule_options(parser)
        loop = parser.add_argument_group("the loop")
        loop.add_argument("--rounds", type=options.non_negative_int, default=10, metavar="N",
                          help="at most N rounds (default: %(default)s)")
        loop.add_argument("--epochs", type=options.non_negative_int, default=2, metavar="N",
                          help="fine-tuning epochs per round (default: %(default)s)")
        loop.add_argument("--recover-epochs", type=options.non_negative_int, default=0,
                          metavar="N", help="up to N more epochs, one at a time, for a round "
                                            "below the tolerance (default: %(default)s)")
        loop.add_argument("--tolerance", type=float, default=0.001,
                          help="accepted drop of the metric below the start, in its units "
                               "(default: %(default)s, 0.1 points of accuracy)")
        loop.add_argument("--metric", default=None,
                          help="the metric to track, higher is better (default: accuracy)")
        loop.add_argument("--learning-rate", type=float, default=None, metavar="LR",
                          help="fine-tune at this learning rate (default: the compiled one)")
        options.add_compile_options(parser, "trim fine-tunes and evaluates the model with its "
                                            "compile settings")

    def check(self, args: argparse.Namespace) -> None:
        Rule.from_args(args)
        inputs = [args.model, args.train, args.val] + ([args.apoz_data] if args.apoz_data
                                                       else [])
        check_output(args.output, force=args.force, inputs=inputs, suffixes=(".keras",),
                     what="-o")
        if args.report:
            plots.require("--report")
            check_report_dir(args.report, REPORT_FILES, force=args.force,
                             inputs=[*inputs, args.output])

    def run(self, args: argparse.Namespace, console: Console) -> None:
        import keras

        import kerasprune

        rule = Rule.from_args(args)
        model = load_model(args.model, args.custom_objects, unsafe=args.unsafe)
        compile_model(model, args, args.model, "trim fine-tunes and evaluates it")
        common = {"batch_size": args.batch_size, "limit": args.limit, "rescale": args.rescale,
                  "labels": True}
        train = load_data(args.train, model, option="--train", split="train", shuffle=True,
                          **common)
        val = load_data(args.val, model, option="--val", split="val", **common)
        apoz: Data | None = None
        if args.apoz_data:
            apoz = load_data(args.apoz_data, model, option="--apoz-data", split="val",
                             **{**common, "labels": False})
        console.note(f"trimming '{model.name}': fine-tuning on {train.description}, "
                     f"validating on {val.description}")
        log = _Watch((apoz or val).inputs() if args.report else None, args.batch_size)
        # An image directory's dataset shuffles itself; Keras says fit's shuffle is unused.
        warnings.filterwarnings("ignore", message="`shuffle=True` was passed")
        try:
            result = kerasprune.trim(
                model, train.with_labels(), val.with_labels(), args.layers, **rule.kwargs(),
                epochs=args.epochs, recover_epochs=args.recover_epochs,
                max_rounds=args.rounds, tolerance=args.tolerance, metric=args.metric,
                batch_size=args.batch_size, learning_rate=args.learning_rate,
                apoz_data=apoz.inputs() if apoz is not None else None,
                verbose=console.level, callback=log)
        except kerasprune.TrimError as err:  # an exception after round 0: the best so far
            result = err.result
        if result.error is not None and result.best == 0:
            raise CliError(f"{result.stopped}; no round was accepted before it, so nothing "
                           "was written", _exit_code(result.error)) from result.error
        save_model(result.model, args.output)
        console.note(f"wrote {args.output}")
        data = {"train": train.description, "val": val.description}
        if apoz is not None:
            data["apoz"] = apoz.description
        record = self._record(args, result, rule, data, log, keras.backend.backend())
        report = Path(args.report) / "report.md" if args.report else None
        if args.report:
            record = self._report(Path(args.report), record, result, rule, log)
            console.note(f"wrote {report}")
        if result.error is not None:  # Ctrl-C (trim returned) or an exception, after round 0
            raise CliError(
                f"{result.stopped}; saved the best model so far, round {result.best} "
                f"({result.after.params:,} params), as {args.output}"
                + (f"; report: {report}" if report else ""),
                _exit_code(result.error)) from result.error
        if args.json:
            console.result(dumps(record.as_dict()))
        else:
            console.result(f"{result}\n\nsaved {args.output}" + (
                f"; report: {report}" if report else ""))

    @staticmethod
    def _record(args: argparse.Namespace, result: Any, rule: Rule, data: dict[str, str],
                log: _Watch, backend: str) -> TrimRecord:
        layers = list(result.layers)
        rounds = []
        for r in result.history:
            means = log.means.get(r.round, {})
            rounds.append(RoundRecord(
                r.round, {n: r.widths.get(n) for n in layers},
                {n: len(r.deleted.get(n, ())) for n in layers}, r.params, r.flops,
                float(r.accuracy), {k: float(v) for k, v in r.metrics.items()},
                bool(r.accepted), int(r.epochs), float(r.seconds),
                {n: means[n] for n in layers if n in means}))
        settings = {"layers": args.layers or "all that can be measured", "rule": rule.describe(),
                    "rounds": args.rounds, "epochs": args.epochs,
                    "recover epochs": args.recover_epochs, "tolerance": args.tolerance,
                    "batch size": args.batch_size, "learning rate":
                    args.learning_rate if args.learning_rate is not None else "compiled"}
        return TrimRecord(
            model=args.model, output=args.output,
            command="kerasprune " + shlex.join(args.argv),
            date=datetime.now().astimezone().isoformat(timespec="seconds"),
            version=__version__, backend=backend, data=data, settings=settings,
            metric=result.metric, floor=float(result.before.accuracy - result.tolerance),
            best=int(result.best), stopped=result.stopped, layers=layers, rounds=rounds,
            before=costs_data(result.before.costs), after=costs_data(result.after.costs))

    @staticmethod
    def _report(directory: Path, record: TrimRecord, result: Any, rule: Rule,
                log: _Watch) -> TrimRecord:
        rounds = [r.round for r in record.rounds]
        accepted = [r.accepted or r.round == 0 for r in record.rounds]
        name = Path(record.model).name
        pictures: dict[str, dict[str, Any]] = {}

        def add(key: str, picture: plots.Picture, caption: str) -> None:
            pictures[key] = {"file": Path(picture.path).name, "caption": caption,
                             **picture.as_dict()}

        add("widths", plots.widths_per_round(
            rounds, {n: [r.widths[n] for r in record.rounds] for n in record.layers},
            accepted, record.best, directory / "widths.png",
            f"Width of each trimmed layer per round: {name}"),
            "Width of each trimmed layer per round, as a share of its starting width "
            "(hollow: a rejected round).")
        add("accuracy", plots.accuracy_vs_cost(
            rounds, [r.params for r in record.rounds], [r.flops for r in record.rounds],
            [r.score for r in record.rounds], accepted, record.best, record.metric,
            record.floor, directory / "accuracy.png",
            f"Validation {record.metric} per round: {name}"),
            f"Validation {record.metric} of each round against its params and its FLOPs.")
        if log.first is not None and log.last is not None:
            for key, (r, values, at) in (("apoz_first", log.first), ("apoz_last", log.last)):
                shown = {n: values[n] for n in record.layers if n in values}
                add(key, plots.apoz_histograms(
                    shown, rule, directory / f"{key}.png",
                    f"APoZ of the round {r} model ({rule.describe()})", measured_at=at),
                    f"APoZ of the trimmed layers' neurons in the model of round {r}, with "
                    "the selection rule's threshold" + (
                        " (what round 1 deleted from)" if r == 0 else
                        " (the last round's model)"))
        record = TrimRecord(**{**record.__dict__, "pictures": pictures})
        write_json(directory / "history.json", record.as_dict())
        write_text(directory / "report.md", markdown(record))
        return record
