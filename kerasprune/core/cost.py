"""Parameter and FLOP counts of a graph, per layer and in total, and a readable comparison.

Conventions:

- **FLOPs** are floating-point operations of one sample's forward pass (no batch axis): a
  multiply-add counts as **two** (so FLOPs = 2 x MACs for the products), a bias add as one per
  output value, an element-wise activation or merge as one per value (a softmax three, a
  batch normalization at inference two: a scale and a shift). This is TensorFlow's profiler's
  convention (``float_ops``), and kerasprune's counts of Dense, Conv1D/2D/3D, depthwise and
  separable convolutions equal the profiler's (``tests/keras/test_flops_profiler.py``).
- Transposed convolutions count the multiply-adds they do: every input position times the
  kernel, ``2 * in_positions * prod(kernel)``; TensorFlow's profiler counts the equivalent
  convolution over the padded input instead (more, with products by padding zeros).
- Pooling counts one operation per window element and output value; reshaping, padding,
  cropping and dropout (inference) count none; Embedding counts none (a lookup).
- Unknown spatial sizes count as 1. Each layer kind's rule says how it counts
  (:meth:`kerasprune.core.rules.Rule.flops`).

**Parameters** are every weight a layer holds, non-trainable ones (batch-norm statistics)
included, as Keras' ``count_params`` counts them; a shared layer's once. Constants of
operations (:attr:`~kerasprune.core.graph.LayerSpec.constants`) are not parameters.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from kerasprune.core.graph import Graph, LayerSpec
from kerasprune.core.rules import RULES, RuleSet

__all__ = ["LayerCost", "compare", "count", "total"]


@dataclass(frozen=True)
class LayerCost:
    """One layer's size: its kind, its width (neurons, if it has any), params and FLOPs."""

    name: str
    kind: str
    width: int | None
    params: int
    flops: int


def count(graph: Graph, *, rules: RuleSet | None = None) -> list[LayerCost]:
    """Params and FLOPs of every layer of ``graph``, in graph order.

    Parameters
    ----------
    graph
        The network.
    rules
        The rules of the layer kinds; :data:`~kerasprune.core.rules.RULES` by default.

    Returns
    -------
    list of LayerCost
        One entry per layer; a layer called several times counts its FLOPs for each call
        and its params once.
    """
    rules = RULES if rules is None else rules
    flops: dict[str, int] = {name: 0 for name in graph.layers}
    width: dict[str, int | None] = {}
    for node in graph.nodes:
        spec = graph.layers[node.layer]
        rule = rules.rule_for(spec.kind)
        in_shapes = [graph.shapes[t] for t in node.inputs]
        out_shape = graph.shapes[node.outputs[0]] if node.outputs else ()
        flops[node.layer] += rule.flops(spec, in_shapes, out_shape)
        if node.layer not in width:
            width[node.layer] = _width(rules, spec, out_shape)
    return [
        LayerCost(name, spec.kind, width.get(name),
                  sum(math.prod(int(d) for d in w.shape) for w in spec.weights.values()),
                  flops[name])
        for name, spec in graph.layers.items()
    ]


def _width(rules: RuleSet, spec: LayerSpec, out_shape: tuple[int, ...]) -> int | None:
    """The number of neurons the layer makes itself, if it makes some."""
    axis = rules.rule_for(spec.kind).own_neuron_axis(spec, out_shape)
    return None if axis is None else int(out_shape[axis])


def total(costs: Iterable[LayerCost]) -> tuple[int, int]:
    """Total ``(params, flops)``."""
    costs = list(costs)
    return sum(c.params for c in costs), sum(c.flops for c in costs)


def _human(n: float) -> str:
    for unit, size in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(n) >= size:
            return f"{n / size:.2f}{unit}"
    return f"{n:.0f}"


def compare(before: Iterable[LayerCost], after: Iterable[LayerCost],
            extra: Mapping[str, tuple[str, str]] | None = None) -> str:
    """A before/after table of widths, params and FLOPs for layers with weights.

    Parameters
    ----------
    before, after
        :func:`count` of the original and of the pruned graph.
    extra
        More rows for the footer, e.g. ``{"accuracy": ("99.1%", "99.0%")}``.

    Returns
    -------
    str
        A plain-text table.
    """
    after_by_name = {c.name: c for c in after}
    before = list(before)
    rows = [("layer", "kind", "width", "params", "FLOPs")]
    for c in before:
        if not c.params:
            continue
        a = after_by_name.get(c.name, c)
        width = "" if c.width is None else f"{c.width} -> {a.width}"
        rows.append((c.name, c.kind, width, f"{_human(c.params)} -> {_human(a.params)}",
                     f"{_human(c.flops)} -> {_human(a.flops)}"))
    (pb, fb), (pa, fa) = total(before), total(after_by_name.values())
    rows.append(("total", "", "", f"{_human(pb)} -> {_human(pa)} ({_ratio(pb, pa)})",
                 f"{_human(fb)} -> {_human(fa)} ({_ratio(fb, fa)})"))
    for key, (old, new) in (extra or {}).items():
        rows.append((key, "", "", f"{old} -> {new}", ""))
    widths = [max(len(r[i]) for r in rows) for i in range(5)]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
             for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _ratio(before: int, after: int) -> str:
    return f"{before / after:.2f}x smaller" if after else "n/a"
