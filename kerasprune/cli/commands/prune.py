"""``kerasprune prune``: delete neurons of a saved model: given, selected from APoZ, or to a
target.

Which neurons to delete comes from one *selector*: ``--layer/--neurons`` (given indices),
``--from`` (an APoZ file and a rule), or a target (``--flops 0.5 --criterion l1``, through
:func:`kerasprune.prune`). A selector is a small object in :data:`SELECTORS`.
"""

from __future__ import annotations

import abc
import argparse
from typing import Any, ClassVar

import numpy as np

from kerasprune.cli import apozfile, budget, options
from kerasprune.cli.command import Command
from kerasprune.cli.console import Console
from kerasprune.cli.errors import EXIT_USAGE, CliError
from kerasprune.cli.format import costs_data, human, ratio
from kerasprune.cli.io import check_output, dumps
from kerasprune.cli.models import load_model, save_model
from kerasprune.cli.selection import Rule, add_rule_options

__all__ = ["SELECTORS", "ByIndex", "ByRequest", "FromApoz", "Prune", "Selector", "ToTarget"]

Request = dict[str, list[int]]


class Selector(abc.ABC):
    """One way of saying which neurons to delete."""

    options: ClassVar[str]
    """Its options, for messages (``--layer/--neurons``)."""

    @abc.abstractmethod
    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        """Add its options."""

    @abc.abstractmethod
    def given(self, args: argparse.Namespace) -> bool:
        """Whether its options were given."""

    def stray(self, args: argparse.Namespace) -> list[str]:
        """Its options that were given although another selector was chosen."""
        return []

    def check(self, args: argparse.Namespace) -> None:  # noqa: B027 (optional)
        """Check its options before any work (raise :class:`CliError`)."""

    @abc.abstractmethod
    def run(self, args: argparse.Namespace, model: Any, console: Console) -> None:
        """Delete the neurons from ``model``, save (unless ``--dry-run``) and print."""


class ByRequest(Selector):
    """A selector that names the neurons itself: one deletion, with every coupled one."""

    @abc.abstractmethod
    def select(self, args: argparse.Namespace, model: Any, console: Console) -> Request:
        """``{layer: neuron indices}`` to delete from ``model``."""

    @abc.abstractmethod
    def describe(self, args: argparse.Namespace) -> str:
        """How the neurons were chosen, in words."""

    def run(self, args: argparse.Namespace, model: Any, console: Console) -> None:
        import kerasprune
        from kerasprune.core import apply_deletion, cost

        request = self.select(args, model, console)
        deletion = kerasprune.dependency_group(model, request,
                                               allow_output_change=args.allow_output_change)
        before = kerasprune.costs(model)
        if args.dry_run:  # the pruned graph's costs, without building a Keras model
            after = cost.count(apply_deletion(deletion, take=_host_take))
        else:
            pruned = kerasprune.delete_neurons(model, request,
                                               allow_output_change=args.allow_output_change)
            if getattr(model, "compiled", False) and model.get_compile_config():
                pruned.compile_from_config(model.get_compile_config())
            after = kerasprune.costs(pruned)
            save_model(pruned, args.output)
            console.note(f"wrote {args.output}")
        neurons = {name: [int(i) for i in idx] for name, idx in deletion.neurons().items()}
        (pb, fb), (pa, fa) = cost.total(before), cost.total(after)
        if args.json:
            console.result(dumps({
                "selected_by": self.describe(args), "requested": request,
                "deleted": neurons, "changes": _changes(deletion),
                "before": {"params": pb, "flops": fb}, "after": {"params": pa, "flops": fa},
                "layers": {"before": costs_data(before), "after": costs_data(after)},
                "output": None if args.dry_run else args.output, "dry_run": args.dry_run}))
            return
        lines = _deleted_lines(neurons, before, self.describe(args))
        lines += ["", "every layer that changes:", *(f"  {line}" for line in
                                                     str(deletion).splitlines())]
        lines += ["", cost.compare(before, after), "", _verdict(args, (pb, pa), (fb, fa))]
        console.result("\n".join(lines))


class ByIndex(ByRequest):
    """``--layer L --neurons 0,5,7`` (repeatable: one ``--neurons`` per ``--layer``)."""

    options = "--layer/--neurons"

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        group = parser.add_argument_group(
            "given neurons", "--layer L --neurons 0,5,7 deletes those neurons of layer L; "
            "repeat the pair for more layers (one rebuild for all)")
        group.add_argument("--layer", action="append", default=[], metavar="LAYER",
                           help="a layer by name (a nested model's as outer/inner)")
        group.add_argument("--neurons", action="append", default=[], metavar="I,J,...",
                           type=options.neuron_list,
                           help="indices of its neurons to delete (negative ones count from "
                                "the end: --neurons=-1)")

    def given(self, args: argparse.Namespace) -> bool:
        return bool(args.layer or args.neurons)

    def check(self, args: argparse.Namespace) -> None:
        if len(args.layer) != len(args.neurons):
            raise CliError(f"give one --neurons for each --layer (got {len(args.layer)} "
                           f"--layer and {len(args.neurons)} --neurons)", EXIT_USAGE)

    def select(self, args: argparse.Namespace, model: Any, console: Console) -> Request:
        request: Request = {}
        for layer, neurons in zip(args.layer, args.neurons, strict=True):
            if layer in request:
                raise CliError(f"--layer {layer} is given twice; list all its neurons in one "
                               "--neurons", EXIT_USAGE)
            request[layer] = neurons
        return request

    def describe(self, args: argparse.Namespace) -> str:
        return "given indices"


class FromApoz(ByRequest):
    """``--from apoz.json`` with a selection rule (and optionally ``--layers``)."""

    options = "--from"

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        group = parser.add_argument_group(
            "neurons from an APoZ file", "--from apoz.json (from 'kerasprune apoz -o') "
            "deletes the neurons the selection rule picks in each layer of the file")
        group.add_argument("--from", dest="apoz_file", metavar="APOZ.json",
                           help="an APoZ file of this model")
        options.add_layers(parser, "with --from: only these layers of the file (default: all)")
        add_rule_options(parser)

    def given(self, args: argparse.Namespace) -> bool:
        return args.apoz_file is not None

    def stray(self, args: argparse.Namespace) -> list[str]:
        return [option for option, given in (
            ("--layers", args.layers is not None), ("--rule", args.rule != "std"),
            ("--k", args.k != 1.0), ("--cutoff", args.cutoff is not None),
            ("--fraction", args.fraction is not None)) if given]

    def check(self, args: argparse.Namespace) -> None:
        Rule.from_args(args)

    def select(self, args: argparse.Namespace, model: Any, console: Console) -> Request:
        import kerasprune

        rule = Rule.from_args(args)
        apoz = apozfile.read(args.apoz_file)
        if args.layers:
            unknown = [n for n in args.layers if n not in apoz]
            if unknown:
                raise CliError(f"--layers: {', '.join(unknown)} not in {args.apoz_file} "
                               f"(it has {', '.join(apoz)})")
            apoz = {n: apoz[n] for n in args.layers}
        widths = {c.name: c.width for c in kerasprune.costs(model)}
        request: Request = {}
        for name, values in apoz.items():
            if name not in widths:
                raise CliError(f"--from {args.apoz_file}: layer '{name}' is not in model "
                               f"'{model.name}'; the file was measured on another model")
            if widths[name] != len(values):
                raise CliError(
                    f"--from {args.apoz_file}: layer '{name}' has {widths[name]} neurons in "
                    f"model '{model.name}' but {len(values)} in the file; measure this model "
                    "again")
            chosen = rule.select(values)
            if len(chosen):
                request[name] = [int(i) for i in chosen]
        if not request:
            raise CliError(f"the rule ({rule.describe()}) selects no neuron in "
                           f"{', '.join(apoz)}; nothing to delete")
        return request

    def describe(self, args: argparse.Namespace) -> str:
        return f"{Rule.from_args(args).describe()}, from {args.apoz_file}"


class ToTarget(Selector):
    """``--flops 0.5`` (or ``--params``, ``--latency``) with a criterion, limits, steps...:
    :func:`kerasprune.prune` chooses the neurons (see :mod:`kerasprune.cli.budget`)."""

    options = "--flops/--params/--latency"

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        budget.add_arguments(parser)

    def given(self, args: argparse.Namespace) -> bool:
        return bool(budget.given(args))

    def stray(self, args: argparse.Namespace) -> list[str]:
        return budget.stray(args)

    def check(self, args: argparse.Namespace) -> None:
        budget.check(args)

    def run(self, args: argparse.Namespace, model: Any, console: Console) -> None:
        import kerasprune

        result = kerasprune.prune(model, **budget.prune_kwargs(args, model, console))
        doc = budget.outcome(result)
        if not args.dry_run:
            save_model(result.model, args.output)
            console.note(f"wrote {args.output}")
        before, after = doc["before"], doc["after"]
        if args.json:
            console.result(dumps({"selected_by": budget.describe(args), **doc,
                                  "output": None if args.dry_run else args.output,
                                  "dry_run": args.dry_run}))
            return
        lines = _deleted_lines(doc["deleted"], result.costs_before, budget.describe(args))
        lines += ["", str(result), "",
                  _verdict(args, (before["params"], after["params"]),
                           (before["flops"], after["flops"]))]
        speed = doc.get("speedup")
        if speed and speed["rows"]:
            lines[-1] += "; measured speed-up " + ", ".join(
                f"{r['speedup']:.2f}x ({r['runner']}, batch {r['batch_size']})"
                for r in speed["rows"]) + f" for {speed['flop_ratio']:.2f}x fewer FLOPs"
        console.result("\n".join(lines))


SELECTORS: tuple[Selector, ...] = (ByIndex(), FromApoz(), ToTarget())
"""The ways of choosing neurons; exactly one is given per run."""


def _chosen(args: argparse.Namespace) -> Selector:
    given = [s for s in SELECTORS if s.given(args)]
    if len(given) != 1:
        names = [s.options for s in SELECTORS]
        choices = f"{', '.join(names[:-1])} or {names[-1]}"
        what = "which neurons to delete?" if not given else "choose one way of selecting:"
        raise CliError(f"{what} give {choices}", EXIT_USAGE)
    for other in SELECTORS:
        extra = other.stray(args) if other is not given[0] else []
        if extra:
            raise CliError(f"{', '.join(extra)} choose{'s' if len(extra) == 1 else ''} "
                           f"neurons by {other.options}, not by {given[0].options}",
                           EXIT_USAGE)
    return given[0]


def _changes(deletion: Any) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, change in deletion.layers().items():
        entry: dict[str, Any] = {"kind": deletion.graph.layers[name].kind}
        if change.inputs:
            entry["inputs"] = {str(k): [int(i) for i in v] for k, v in change.inputs.items()}
        if change.outputs is not None:
            entry["outputs"] = [int(i) for i in change.outputs]
        out[name] = entry
    return out


class Prune(Command):
    """``kerasprune prune MODEL.keras -o OUT.keras``."""

    name = "prune"
    help = ("delete neurons (given, selected from an APoZ file, or to a target such as half the "
            "FLOPs) and save the smaller model")
    description = (
        "Delete neurons of a model and every weight connected to them, with every coupled "
        "deletion (the other branches of a residual Add...), and save the smaller model. "
        "Which neurons: --layer L --neurons 0,5,7 (repeatable); --from apoz.json and a "
        "selection rule; or a target, --flops/--params/--latency, reached by deleting the "
        "neurons with the lowest --criterion scores within the limits (kerasprune.prune), "
        "in one shot or in --iterative-steps with fine-tuning on --train. Prints what was "
        "deleted and a before/after table; --dry-run prints them and writes nothing. The "
        "saved model keeps the input's compile settings (with a fresh optimizer).")
    epilog = ("examples:\n"
              "  kerasprune prune lenet.keras --layer conv2 --neurons 0,5,7 -o small.keras\n"
              "  kerasprune apoz lenet.keras --data mnist -o apoz.json\n"
              "  kerasprune prune lenet.keras --from apoz.json --rule top --fraction 0.3 "
              "-o small.keras\n"
              "  kerasprune prune lenet.keras --flops 0.5 --criterion taylor --data mnist "
              "--round-to 8 --dry-run\n"
              "  kerasprune prune lenet.keras --params 0.3 --limits limits.json --train mnist "
              "--iterative-steps 3 --epochs 1 --val mnist --speedup -o small.keras")

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        options.add_model(parser)
        options.add_output(parser, required=False, help="where to save the pruned model "
                                                        "(.keras); required unless --dry-run")
        parser.add_argument("--dry-run", action="store_true",
                            help="print what would be deleted and the table; write nothing")
        parser.add_argument("--allow-output-change", action="store_true",
                            help="allow deleting units of a model output (changes what the "
                                 "model predicts)")
        options.add_json(parser)
        for selector in SELECTORS:
            selector.add_arguments(parser)
        options.add_data_options(parser)

    def check(self, args: argparse.Namespace) -> None:
        selector = _chosen(args)
        selector.check(args)
        if args.output is None and not args.dry_run:
            raise CliError("where to? give -o OUT.keras, or --dry-run to write nothing",
                           EXIT_USAGE)
        if args.output is not None and not args.dry_run:
            check_output(args.output, force=args.force, inputs=[args.model],
                         suffixes=(".keras",), what="-o")

    def run(self, args: argparse.Namespace, console: Console) -> None:
        selector = _chosen(args)
        model = load_model(args.model, args.custom_objects, unsafe=args.unsafe)
        selector.run(args, model, console)


def _deleted_lines(neurons: dict[str, list[int]], before: Any, how: str) -> list[str]:
    """``deleting neurons of 2 layers (how):`` and a line per layer."""
    widths = {c.name: c.width for c in before}
    lines = [f"deleting neurons of {len(neurons)} layer{'s' if len(neurons) != 1 else ''} "
             f"({how}):"]
    lines += [f"  {name}: {len(idx)} of {widths[name]} {_listed(idx)}"
              for name, idx in neurons.items()]
    return lines


def _verdict(args: argparse.Namespace, params: tuple[int, int], flops: tuple[int, int]) -> str:
    """The last line: what was written, and how much smaller."""
    (pb, pa), (fb, fa) = params, flops
    verdict = (f"params {human(pb)} -> {human(pa)} ({ratio(pb, pa)}), FLOPs {human(fb)} -> "
               f"{human(fa)} ({ratio(fb, fa)})")
    return (f"dry run: nothing written; {verdict}" if args.dry_run
            else f"saved {args.output}: {verdict}")


def _host_take(array: Any, indices: np.ndarray, axis: int) -> np.ndarray:
    """Slice a backend tensor on the host (``np.take`` would call a JAX array's own
    ``take``, which refuses NumPy's default mode)."""
    import keras

    return np.take(keras.ops.convert_to_numpy(array), indices, axis=axis)


def _listed(indices: list[int], most: int = 16) -> str:
    shown = ", ".join(str(i) for i in indices[:most])
    return f"[{shown}{', ...' if len(indices) > most else ''}]"

