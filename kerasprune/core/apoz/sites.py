"""Where the zeros of each layer's neurons are counted: the measurement-site walk.

A layer whose own activation makes zeros (``Dense(activation="relu")``) is measured at its
output; a layer with a linear activation (``Conv -> BatchNorm -> ReLU``) at the first
zero-producing layer its channels reach one to one. The walk reads the graph's shared channel
analysis (:func:`kerasprune.core.channels.channel_axes`), so measuring every layer of a model
costs one pass over it.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import numpy as np

from kerasprune.core.channels import ChannelAxes, channel_axes
from kerasprune.core.graph import Graph, PruneError
from kerasprune.core.rules import Link, RuleSet
from kerasprune.core.surgery import prunable_layers

__all__ = ["ApozWarning", "Site", "SiteCheck", "measurement_site", "measurement_sites"]


class ApozWarning(UserWarning):
    """Some layers were left out of an APoZ measurement; the message says which and why."""


@dataclass(frozen=True)
class Site:
    """Where the zeros of one layer's neurons are counted.

    Parameters
    ----------
    layer
        The layer whose output is counted: the measured layer itself if its own activation
        makes zeros (``Dense(activation="relu")``), else the first zero-producing layer its
        channels reach one to one (the ``ReLU`` of ``Conv -> BatchNorm -> ReLU``).
    tensor
        The id of that layer's output tensor in the graph.
    axis
        The channel axis of that tensor, without the batch axis.
    chain
        The layers from the measured layer to ``layer``, both included.
    """

    layer: str
    tensor: int
    axis: int
    chain: tuple[str, ...]


SiteCheck = Callable[[Graph, Site], str | None]
"""``check(graph, site)``: why an adapter cannot count at ``site`` (``None`` if it can)."""


def _named(graph: Graph, name: str) -> str:
    return f"'{name}' ({graph.layers[name].kind})"


def _is_identity(link: Link, channels: int, out_channels: int) -> bool:
    return (len(link.sources) == 1 and out_channels == channels
            and np.array_equal(link.sources[0], np.arange(channels)))


@dataclass(frozen=True)
class _Stop:
    """Why a channel chain stops: ``category`` names no layer (it groups layers in a summary),
    ``kind`` the kind of the layer where it stops, if one; ``detail`` is the full sentence."""

    category: str
    detail: str
    kind: str | None = None


def _next_step(graph: Graph, analysis: ChannelAxes, t: int, axis: int,
               last: str) -> tuple[str, int, int] | _Stop:
    """One step along a channel chain: the next layer, tensor and axis, or why it stops."""
    consumers = graph.consumers.get(t, [])
    where = f"the output of {_named(graph, last)}"
    if t in graph.outputs:
        return _Stop("a model output", f"{where} is a model output")
    if not consumers:
        return _Stop("an unused tensor", f"{where} is not used by any layer")
    if len(consumers) > 1:
        names = ", ".join(_named(graph, node.layer) for node, _ in consumers)
        return _Stop("a tensor that goes to several layers",
                     f"{where} goes to {len(consumers)} layers ({names}), so zeros after one "
                     "of them would not mean a channel is unused")
    node, _ = consumers[0]
    spec = graph.layers[node.layer]
    rule = analysis.rule(spec)
    nxt = _named(graph, node.layer)
    if rule.targetable:
        return _Stop("a layer with neurons of its own",
                     f"{where} goes to {nxt}, which makes channels of its own", spec.kind)
    if len(node.inputs) != 1 or len(node.outputs) != 1:
        return _Stop("a layer with several inputs or outputs",
                     f"{where} goes to {nxt}, which has several inputs or outputs", spec.kind)
    out = node.outputs[0]
    shape, out_shape = graph.shapes[t], graph.shapes[out]
    link = analysis.links.get(node)  # computed with the channels on ``axis``
    if isinstance(link, PruneError):
        return _Stop("a layer that mixes channels",
                     f"{where} goes to {nxt}, which does not keep its channels apart ({link})",
                     spec.kind)
    if link is None or not _is_identity(link, shape[axis], out_shape[link.out_axis]):
        return _Stop("a layer that moves channels",
                     f"{where} goes to {nxt}, which does not map channels one to one", spec.kind)
    return node.layer, out, link.out_axis


_NO_ZEROS = "no zero-producing non-linearity (a ReLU or a relu/relu6 activation)"


def _locate(graph: Graph, layer: str, analysis: ChannelAxes) -> Site | _Stop:
    """:func:`measurement_site`, with the reason as a :class:`_Stop` instead of an error."""
    if layer not in graph.layers or not graph.calls(layer):
        refused = analysis.why_not_targetable(graph, layer)  # unknown, or never called
        assert refused is not None
        raise refused
    spec = graph.layers[layer]
    rule = analysis.rule(spec)
    who = f"layer {_named(graph, layer)}"
    if not rule.targetable:
        return _Stop("no neurons", f"{who} has no neurons whose APoZ could be measured")
    calls = graph.calls(layer)
    if len(calls) > 1:
        return _Stop("shared layers (called more than once)",
                     f"{who} is shared (called {len(calls)} times); the APoZ of a shared "
                     "layer's neurons is not supported")
    t = calls[0].outputs[0]
    axis = analysis.axes.get(t)
    if axis is None:
        return _Stop("no channel axis kerasprune can follow",
                     f"{who} has no channel axis that kerasprune can follow")
    chain = [layer]
    while True:
        current = graph.layers[chain[-1]]
        if analysis.rule(current).makes_zeros(current):
            return Site(chain[-1], t, axis, tuple(chain))
        step = _next_step(graph, analysis, t, axis, chain[-1])
        if isinstance(step, _Stop):
            path = " -> ".join(chain)
            return _Stop(
                f"no ReLU before {step.category}",
                f"cannot measure the APoZ of {who}: {_NO_ZEROS} follows it on its channel path "
                f"({path}): {step.detail}", step.kind)
        name, t, axis = step
        chain.append(name)


def measurement_site(graph: Graph, layer: str, *, rules: RuleSet | None = None) -> Site:
    """Where the APoZ of ``layer``'s neurons is measured.

    If ``layer``'s own activation makes zeros (``rule.makes_zeros``), there. Otherwise its
    output channels are followed forward through single-input layers that map channels one
    to one (``BatchNormalization``, ``Dropout``, pooling, padding, element-wise activations:
    identity :class:`~kerasprune.core.rules.Link` s) to the first layer that makes zeros. The
    chain stops at a tensor used more than once (zeros on one branch would not mean the
    channel is unused), at a model output, at a merge (``Add``, ``Concatenate``), at a layer
    that reshapes channels (``Flatten``) and at a layer with neurons of its own.

    Parameters
    ----------
    graph
        The network.
    layer
        A layer with neurons (Dense, a convolution...), called once.
    rules
        The rules of the layer kinds; :data:`~kerasprune.core.rules.RULES` by default.

    Returns
    -------
    Site
        The layer and tensor whose zeros are counted, and their channel axis.

    Raises
    ------
    PruneError
        For an unknown layer, a layer without neurons, a shared layer (called more than
        once), or one with no zero-producing non-linearity on its channel chain; the message
        says where the chain stops and why.
    """
    found = _locate(graph, layer, channel_axes(graph, rules))
    if isinstance(found, _Stop):
        raise PruneError(found.detail)
    return found


_WHY = ("APoZ counts zeros after a ReLU (a ReLU layer, or a relu/relu6 activation) on a "
        "layer's channel path; why not here")


def _grouped(stops: dict[str, _Stop], most: int = 3) -> str:
    """One line per reason: how many layers, a few of their names, the reason."""
    groups: dict[str, list[str]] = {}
    kinds: dict[str, list[str]] = {}
    for name, stop in stops.items():
        groups.setdefault(stop.category, []).append(name)
        if stop.kind is not None and stop.kind not in kinds.setdefault(stop.category, []):
            kinds[stop.category].append(stop.kind)
    lines = []
    for category, names in sorted(groups.items(), key=lambda kv: -len(kv[1])):
        shown = ", ".join(repr(n) for n in names[:most])
        more = f", +{len(names) - most} more" if len(names) > most else ""
        which = f" ({', '.join(kinds[category])})" if kinds.get(category) else ""
        lines.append(f"- {shown}{more}: {category}{which}")
    return "\n".join(lines)


def measurement_sites(graph: Graph, layers: Iterable[str] | None = None, *,
                      check: SiteCheck | None = None, stacklevel: int = 2,
                      rules: RuleSet | None = None,
                      leave_out: Iterable[str] = ()) -> dict[str, Site]:
    """Where the APoZ of each layer is measured (see :func:`measurement_site`).

    Parameters
    ----------
    graph
        The network.
    layers
        Layers to measure, or ``None`` for every layer with neurons
        (:func:`~kerasprune.core.surgery.prunable_layers`).
    check
        ``check(graph, site)`` returns why an adapter cannot count zeros at ``site`` (say,
        the site is a layer of a nested model), or ``None`` if it can.
    stacklevel
        Passed to :func:`warnings.warn`, for wrappers that want the warning to point at
        their caller.
    rules
        The rules of the layer kinds; :data:`~kerasprune.core.rules.RULES` by default.
    leave_out
        With ``layers=None``: layers not to consider at all (no site, no warning), such as
        the output layers trimming never deletes from.

    Returns
    -------
    dict of str to Site
        One site per measured layer, in the order of ``layers`` (graph order for ``None``);
        a layer named twice appears once.

    Raises
    ------
    PruneError
        If a named layer cannot be measured. With ``layers=None`` such layers are left out
        instead, with one :class:`ApozWarning` that lists them and why, and the error is
        raised only if no layer at all can be measured.
    """
    explicit = layers is not None
    left_out = set(leave_out)
    names = list(dict.fromkeys(layers if layers is not None
                               else (name for name in prunable_layers(graph, rules=rules)
                                     if name not in left_out)))
    analysis = channel_axes(graph, rules)
    sites: dict[str, Site] = {}
    skipped: dict[str, _Stop] = {}
    for name in names:
        found = _locate(graph, name, analysis)
        if isinstance(found, Site) and check is not None:
            why = check(graph, found)
            if why is not None:
                found = _Stop(f"a site kerasprune cannot read: {why}",
                              f"cannot measure the APoZ of layer {_named(graph, name)} "
                              f"at {_named(graph, found.layer)}: {why}")
        if isinstance(found, _Stop):
            if explicit:
                raise PruneError(found.detail)
            skipped[name] = found
            continue
        sites[name] = found
    if skipped:
        if not sites:
            raise PruneError(f"no layer of the model can be measured (of {len(skipped)} with "
                             f"neurons). {_WHY}:\n" + _grouped(skipped))
        shown = ", ".join(repr(n) for n in list(skipped)[:5])
        more = f", +{len(skipped) - 5} more" if len(skipped) > 5 else ""
        warnings.warn(
            f"APoZ is not measured for {len(skipped)} layer{'s' if len(skipped) > 1 else ''} "
            f"({shown}{more}); name the layers to measure to silence this. {_WHY}:\n"
            + _grouped(skipped), ApozWarning, stacklevel=stacklevel)
    return sites
