"""``kerasprune summary``: what a model is made of, and what of it can be pruned."""

from __future__ import annotations

import argparse
import re
from typing import Any

from kerasprune.cli import options
from kerasprune.cli.command import Command
from kerasprune.cli.console import Console
from kerasprune.cli.errors import one_line
from kerasprune.cli.format import human, table
from kerasprune.cli.io import dumps
from kerasprune.cli.models import describe, load_model

__all__ = ["Summary", "analyse"]

# The probe deletes neuron 0; the library's message starts by naming that request, which
# says nothing about the layer: keep what follows.
_PROBE = re.compile(r"^(deleting neurons \[0\] of '[^']*': |cannot delete the requested "
                    r"neurons of '[^']*': )+")


def analyse(model: Any, console: Console | None = None) -> dict[str, Any]:
    """Per layer its kind, width, params, FLOPs, prunability and dependency group.

    Whether a layer's neurons can be deleted is asked of the library: a dependency group
    (:func:`kerasprune.core.dependency_group`) of its neuron 0 is computed, which changes
    nothing; if the library refuses, its reason is kept. The layers whose own neurons go
    with it form its group (coupled by ``Add``, depthwise convolutions...).

    Parameters
    ----------
    model
        A Sequential or functional Keras model.
    console
        For a progress bar on large models.

    Returns
    -------
    dict
        ``layers`` (one dict per layer, in graph order), ``groups`` and ``totals``, as
        ``summary --json`` prints them.
    """
    import kerasprune
    from kerasprune.core import PruneError, cost, dependency_group, prunable_layers

    graph = kerasprune.to_graph(model).graph
    costs = cost.count(graph)
    with_neurons = prunable_layers(graph)
    groups: dict[tuple[str, ...], int] = {}
    rows: dict[str, dict[str, Any]] = {
        c.name: {"name": c.name, "kind": c.kind, "width": c.width, "params": c.params,
                 "flops": c.flops, "has_neurons": c.name in with_neurons, "prunable": None,
                 "reason": None, "group": None, "changes": []} for c in costs}
    bar = console.bar(len(with_neurons), "layer") if console is not None else None
    for step, name in enumerate(with_neurons, 1):
        row = rows[name]
        try:
            deletion = dependency_group(graph, name, [0])
        except PruneError as err:
            row.update(prunable=False, reason=one_line(type(err)(_PROBE.sub("", str(err)))))
        else:
            members = tuple(deletion.neurons())
            row.update(prunable=True, group=groups.setdefault(members, len(groups) + 1),
                       changes=[n for n in deletion.layers() if n != name])
        if bar is not None:
            bar.update(step)
    params, flops = cost.total(costs)
    prunable = [r for r in rows.values() if r["prunable"]]
    return {
        "model": describe(model),
        "layers": list(rows.values()),
        "groups": [{"id": gid, "layers": list(members)} for members, gid in groups.items()],
        "totals": {"layers": len(rows), "params": params, "flops": flops,
                   "with_neurons": len(with_neurons), "prunable": len(prunable),
                   "neurons": sum(int(r["width"] or 0) for r in rows.values()
                                  if r["has_neurons"]),
                   "prunable_neurons": sum(int(r["width"] or 0) for r in prunable)},
    }


def render(summary: dict[str, Any], backend: str) -> str:
    """The summary as tables for people."""
    model, totals = summary["model"], summary["totals"]
    shapes = " + ".join(str(tuple(s)) for s in model["inputs"])
    outs = " + ".join(str(tuple(s)) for s in model["outputs"])
    head = (f"model '{model['name']}' ({model['class']}): {shapes} -> {outs}; "
            f"backend {backend}")
    reasons: dict[str, list[str]] = {}
    rows = [["layer", "kind", "width", "params", "FLOPs", "prunable", "group"]]
    for r in summary["layers"]:
        if r["prunable"] is None:
            status = ""
        elif r["prunable"]:
            status = "yes"
        else:
            reasons.setdefault(r["reason"], []).append(r["name"])
            status = f"no [{list(reasons).index(r['reason']) + 1}]"
        rows.append([r["name"], r["kind"], "" if r["width"] is None else str(r["width"]),
                     f"{r['params']:,}", human(r["flops"]), status,
                     "" if r["group"] is None else str(r["group"])])
    rows.append(["total", "", f"{totals['neurons']:,}", f"{totals['params']:,}",
                 human(totals["flops"]),
                 f"{totals['prunable']} of {totals['with_neurons']}", ""])
    parts = [head, "", table(rows, right=(2, 3, 4))]
    if reasons:
        parts += ["", "not prunable:"]
        parts += [f"[{i}] {', '.join(names)}: {reason}"
                  for i, (reason, names) in enumerate(reasons.items(), 1)]
    coupled = [g for g in summary["groups"] if len(g["layers"]) > 1]
    if coupled:
        parts += ["", "groups of coupled layers (their neurons are deleted together):"]
        parts += [f"group {g['id']}: {', '.join(g['layers'])}" for g in coupled]
    return "\n".join(parts)


class Summary(Command):
    """``kerasprune summary MODEL.keras``."""

    name = "summary"
    help = "per layer: kind, width, params, FLOPs, whether it can be pruned, its group"
    description = (
        "Describe a model layer by layer: its kind, width (neurons), params and FLOPs (one "
        "sample's forward pass, a multiply-add counted as two), whether its neurons can be "
        "deleted (and, if not, why), and its dependency group: layers whose neurons go "
        "together, as the branches of a residual Add do. Nothing is changed.")

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        options.add_model(parser)
        options.add_json(parser)

    def run(self, args: argparse.Namespace, console: Console) -> None:
        import keras

        model = load_model(args.model, args.custom_objects, unsafe=args.unsafe)
        summary = analyse(model, console)
        summary["model"]["path"] = args.model
        backend = keras.backend.backend()
        if args.json:
            console.result(dumps({"backend": backend, **summary}))
        else:
            console.result(render(summary, backend))
