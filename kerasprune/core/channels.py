"""Where every tensor's channels lie, computed once per graph and shared.

Deleting a neuron follows its channel through the graph, so every part of the core needs the
same facts: on which axis each tensor holds channels (``None`` where they cannot be followed,
and why), how each node's output channels come from its inputs (its rule's
:class:`~kerasprune.core.rules.Link`, ``None`` for a layer that makes channels of its own, or
why it cannot pass them), and which layers have neurons a user can delete. :func:`channel_axes`
computes them in one pass over the graph (one call of each node's rule) and caches the result
for the graph object, so surgery (:mod:`~kerasprune.core.surgery`), APoZ measurement sites
(:mod:`~kerasprune.core.apoz`), costs (:mod:`~kerasprune.core.cost`) and the coupled groups
(:mod:`~kerasprune.core.groups`) share one analysis: a request naming every layer of a graph
costs time linear in the graph's size.

The cache is keyed by the graph's identity (a :class:`~kerasprune.core.graph.Graph` is frozen,
so its channel layout never changes) and by the :class:`~kerasprune.core.rules.RuleSet` and
its :attr:`~kerasprune.core.rules.RuleSet.version` (a registration recomputes it). An entry
goes when its graph is garbage-collected; the analysis holds no reference to the graph.
"""

from __future__ import annotations

import difflib
import weakref
from collections.abc import Mapping
from dataclasses import dataclass

from kerasprune.core.graph import Graph, LayerSpec, Node, PruneError
from kerasprune.core.rules import RULES, Link, Rule, RuleSet, UnsupportedLayerError

__all__ = ["ChannelAxes", "channel_axes", "compute_channel_axes"]


@dataclass(frozen=True, eq=False)
class ChannelAxes:
    """The channel layout of one graph under one rule set. Build it with :func:`channel_axes`.

    Parameters
    ----------
    rules
        The rules it was computed with.
    axes
        The channel axis (without the batch axis) of every tensor, ``None`` where channels
        cannot be followed: model inputs, outputs of layers that cannot pass channels.
    why_no_axis
        For each tensor without a channel axis, why, as said of the tensor itself (``"it is
        a model input"``, the refusal of the layer that wrote it...).
    origins
        For each tensor without a channel axis, the refusal of the layer that stopped its
        channels, followed back through layers that pass them on; ``None`` when they come
        from a model input.
    links
        For each node with an output: its link, ``None`` for a layer that makes its own
        channels, or the error of a rule that cannot pass them (with the channels on the axis
        its first input holds them, or the last axis for a model input).
    """

    rules: RuleSet
    axes: Mapping[int, int | None]
    why_no_axis: Mapping[int, str]
    origins: Mapping[int, str | None]
    links: Mapping[Node, Link | PruneError | None]

    def link(self, node: Node) -> Link | None:
        """The link of ``node`` (``None`` if its layer makes its own channels).

        Raises
        ------
        PruneError
            The rule's refusal, if the layer cannot pass channels on the axis they lie on.
        """
        found = self.links.get(node)
        if isinstance(found, PruneError):
            raise type(found)(str(found))
        return found

    def refusal(self, node: Node) -> str | None:
        """Why ``node`` cannot pass channels, or ``None`` if it can (or makes its own)."""
        found = self.links.get(node)
        return str(found) if isinstance(found, PruneError) else None

    def makes_channels(self, node: Node) -> bool:
        """Whether ``node``'s layer makes channels of its own (Dense units, Conv filters)."""
        return node in self.links and self.links[node] is None

    def rule(self, spec: LayerSpec) -> Rule:
        """The rule of a layer."""
        return self.rules.rule_for(spec.kind)

    def why_not_targetable(self, graph: Graph, layer: str) -> PruneError | None:
        """Why no neuron of ``layer`` can be named in a request, or ``None`` if they can.

        Parameters
        ----------
        graph
            The graph this analysis is of.
        layer
            A layer name.

        Returns
        -------
        PruneError or None
            The error a request naming ``layer`` raises (an unknown layer, one that is never
            called, one without neurons, one whose channels cannot be followed).
        """
        if layer not in graph.layers:
            close = difflib.get_close_matches(layer, list(graph.layers), n=3)
            hint = f"; did you mean {', '.join(repr(c) for c in close)}?" if close else ""
            return PruneError(f"no layer named '{layer}' in the model{hint}")
        calls = graph.calls(layer)
        if not calls:
            return PruneError(f"layer '{layer}' is never called in the model")
        spec = graph.layers[layer]
        rule = self.rule(spec)
        if not rule.targetable:
            return PruneError(
                f"layer '{layer}' ({spec.kind}) has no neurons to delete; layers that have "
                f"them: {', '.join(self.rules.targetable_kinds())}")
        reason = rule.why_not_targetable(spec)  # a wrapper around a layer without neurons
        if reason is not None:
            return UnsupportedLayerError(reason)
        node = calls[0]
        if self.axes[node.outputs[0]] is not None:
            return None
        origin = self.origins.get(node.inputs[0]) if node.inputs else None
        if origin is None:
            return PruneError(f"{rule.describe(spec)} passes on channels of a model input, "
                              "which cannot change")
        return PruneError(f"{rule.describe(spec)} passes on channels that kerasprune cannot "
                          f"follow further back: {origin}")

    def neuron_count(self, graph: Graph, layer: str) -> int:
        """How many neurons (output channels) ``layer`` has.

        Raises
        ------
        PruneError
            As :meth:`why_not_targetable` says.
        """
        err = self.why_not_targetable(graph, layer)
        if err is not None:
            raise err
        out = graph.calls(layer)[0].outputs[0]
        axis = self.axes[out]
        assert axis is not None
        return int(graph.shapes[out][axis])


def _natural_link_axis(in_shapes: list[tuple[int, ...]]) -> int:
    """The axis a node's channels are assumed on when its inputs have none: the last."""
    return len(in_shapes[0]) - 1 if in_shapes else 0


def compute_channel_axes(graph: Graph, rules: RuleSet | None = None) -> ChannelAxes:
    """Compute the channel layout of ``graph`` (without the cache: see :func:`channel_axes`).

    Parameters
    ----------
    graph
        The network.
    rules
        The rules to use; :data:`~kerasprune.core.rules.RULES` by default.

    Returns
    -------
    ChannelAxes
        One call of each node's rule, in graph order.
    """
    rules = RULES if rules is None else rules
    axes: dict[int, int | None] = {t: None for t in graph.inputs}
    why: dict[int, str] = {t: "it is a model input" for t in graph.inputs}
    origins: dict[int, str | None] = {t: None for t in graph.inputs}
    links: dict[Node, Link | PruneError | None] = {}
    for node in graph.nodes:
        if not node.outputs:
            continue
        spec = graph.layers[node.layer]
        rule = rules.rule_for(spec.kind)
        in_shapes = [graph.shapes[t] for t in node.inputs]
        known = [axes[t] for t in node.inputs if axes.get(t) is not None]
        axis = known[0] if known else None
        out_shape = graph.shapes[node.outputs[0]]
        found: Link | PruneError | None
        try:  # a rule says it cannot pass channels by raising: recorded here, once per node
            found = rule.link(spec, in_shapes, out_shape,
                              _natural_link_axis(in_shapes) if axis is None else axis)
        except PruneError as err:
            found = err
        if found is None:
            reason = rule.why_not_targetable(spec)
            if reason is not None:
                found = UnsupportedLayerError(reason)
        links[node] = found
        result: int | None = None
        why_here = origin = ""
        if isinstance(found, PruneError):
            why_here = origin = str(found)
        elif found is None:
            result = rule.out_axis(spec, out_shape)
        elif axis is not None:
            result = found.out_axis
        else:
            why_here = (f"layer '{node.layer}' ({spec.kind}) passes on channels of a model "
                        "input, which cannot change")
        own = {}  # a recurrent layer's states: its own channels, on their own axes
        if found is None and len(node.outputs) > 1:
            own = {node.outputs[tie.position]: rule.out_axis(spec, graph.shapes[
                node.outputs[tie.position]]) for tie in rule.ties(
                    spec, in_shapes, [graph.shapes[t] for t in node.outputs]) if tie.output}
        for t in node.outputs:
            axes[t] = own.get(t, result)
            if result is None:
                why[t] = why_here
                if known or not node.inputs:  # this node stops the channels
                    origins[t] = origin or (f"layer '{node.layer}' ({spec.kind}) does not "
                                            "keep its channels on an axis")
                else:  # it passes on channels that had no axis already
                    origins[t] = origins.get(node.inputs[0])
    return ChannelAxes(rules, axes, why, origins, links)


_CACHE: dict[int, dict[tuple[int, int], ChannelAxes]] = {}
"""Analyses by ``id(graph)``, then by ``(id(rules), rules.version)``; an entry is dropped
when its graph is collected (each analysis holds its rule set, so the ids stay unique)."""


def channel_axes(graph: Graph, rules: RuleSet | None = None) -> ChannelAxes:
    """The channel layout of ``graph``: computed on the first call, then shared.

    Parameters
    ----------
    graph
        The network. The result is cached for this object (not for an equal copy) until it
        is garbage-collected.
    rules
        The rules to use; :data:`~kerasprune.core.rules.RULES` by default. A change to the
        set (a registration) recomputes the analysis.

    Returns
    -------
    ChannelAxes
        Shared: do not modify its mappings.
    """
    rules = RULES if rules is None else rules
    key = id(graph)
    per_graph = _CACHE.get(key)
    if per_graph is None:
        per_graph = _CACHE[key] = {}
        weakref.finalize(graph, _CACHE.pop, key, None)
    found = per_graph.get((id(rules), rules.version))
    if found is None:
        for old in [k for k in per_graph if k[0] == id(rules)]:
            del per_graph[old]  # an analysis of an earlier version of this rule set
        found = per_graph[(id(rules), rules.version)] = compute_channel_axes(graph, rules)
    return found
