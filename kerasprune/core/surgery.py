"""Deleting neurons from a :class:`~kerasprune.core.graph.Graph`, with every coupled deletion.

Deleting channel ``c`` of a tensor deletes, through every pass-through layer around it, the
channels linked to it (see :class:`~kerasprune.core.rules.Link`): forward to the next layers
that make their own channels, and backward through merges (``Add`` needs the same channels
from every branch) to the layers that made them. The closed set of deletions is a
:class:`Deletion`; :func:`dependency_group` computes it without changing anything, and
:func:`apply_deletion` turns it into a new graph.
"""

from __future__ import annotations

import operator
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from kerasprune.core.channels import ChannelAxes, channel_axes
from kerasprune.core.edit import follow, remove_nodes
from kerasprune.core.graph import Graph, LayerSpec, Node, PruneError
from kerasprune.core.rules import OUT, RULES, Rule, RuleSet, Tie, UnsupportedLayerError
from kerasprune.core.rules.merging import Concatenate

__all__ = [
    "Deletion",
    "LayerChange",
    "Prunability",
    "Take",
    "apply_deletion",
    "delete_neurons",
    "dependency_group",
    "neuron_count",
    "part_name",
    "prunability",
    "prunable_layers",
    "zeroed_graph",
]

Take = Callable[[Any, np.ndarray, int], Any]
"""``take(array, indices, axis)``: how to gather weights (``np.take`` by default)."""

Request = Mapping[str, Iterable[int]]


@dataclass(frozen=True)
class LayerChange:
    """What a deletion does to one layer: input channels it loses, per input, outputs, and
    units of its :meth:`~kerasprune.core.rules.Rule.parts` (an attention layer's heads)."""

    inputs: Mapping[int, np.ndarray] = field(default_factory=dict)
    outputs: np.ndarray | None = None
    parts: Mapping[str, np.ndarray] = field(default_factory=dict)


PART_SEPARATOR = ":"
"""Between a layer's name and one of its parts in a request: ``"mha:heads"``."""


def part_name(layer: str, part: str) -> str:
    """The request key of a part of a layer: ``part_name("mha", "heads") == "mha:heads"``."""
    return f"{layer}{PART_SEPARATOR}{part}"


def _split_part(graph: Graph, key: str) -> tuple[str, str | None]:
    """``(layer, part)`` of a request key; ``part`` is ``None`` for a layer's own neurons. A
    layer whose name contains the separator is taken by its whole name."""
    if key in graph.layers or PART_SEPARATOR not in key:
        return key, None
    layer, part = key.rsplit(PART_SEPARATOR, 1)
    return (layer, part) if layer in graph.layers else (key, None)


@dataclass(frozen=True)
class Deletion:
    """The closed set of channels that a request deletes, tensor by tensor.

    Parameters
    ----------
    graph
        The graph it applies to.
    tensors
        For each affected tensor id, its channel axis (without batch) and the sorted deleted
        channel indices.
    rules
        The rules it was computed with (:data:`~kerasprune.core.rules.RULES` if ``None``);
        :func:`apply_deletion` applies it with the same.
    parts
        Units deleted inside layers (:meth:`~kerasprune.core.rules.Rule.parts`): ``{layer:
        {part: sorted indices}}``. They change no tensor.
    inexact
        The layers the deletion passes that make it inexact (a ``LayerNormalization`` over
        the deleted channels), allowed by ``allow_inexact=True``; empty for an exact one.
    """

    graph: Graph
    tensors: Mapping[int, tuple[int, np.ndarray]]
    rules: RuleSet | None = None
    removed: frozenset[Node] = frozenset()
    """Nodes that go with the deletion: the layers of a ``Concatenate`` input whose every
    channel goes, and every layer that only served them (whole-branch removal)."""
    stand_ins: Mapping[int, int] = field(default_factory=dict)
    """Outputs of removed nodes that something still reads, each with the tensor read instead
    (a ``Concatenate`` left with one input is replaced by that input)."""

    def removed_layers(self) -> list[str]:
        """The layers that disappear (every call of them removed), in graph order."""
        gone = {node.layer for node in self.removed}
        whole = [name for name in gone
                 if all(node in self.removed for node in self.graph.calls(name))]
        return sorted(whole, key=self._position)

    def _position(self, layer: str) -> int:
        """Where a layer's first call is in the graph (orders layers in time linear in the
        deletion's size, not the graph's)."""
        return self.graph.order[self.graph.calls(layer)[0]]
    parts: Mapping[str, Mapping[str, np.ndarray]] = field(default_factory=dict)
    inexact: tuple[str, ...] = ()

    def layers(self) -> dict[str, LayerChange]:
        """Each affected layer and the channels it loses, in graph order (the layers that
        disappear are :meth:`removed_layers`)."""
        graph = self.graph
        touching = {graph.producers[t] for t in self.tensors if t in graph.producers}
        touching.update(node for t in self.tensors for node, _ in graph.consumers.get(t, []))
        gone = set(self.removed_layers())
        touching.update(graph.calls(name)[0] for name in self.parts)
        changes: dict[str, LayerChange] = {}
        for node in sorted(touching, key=graph.order.__getitem__):  # in graph order
            if node.layer in changes or node.layer in gone:
                continue
            inputs = {pos: self.tensors[t][1] for pos, t in enumerate(node.inputs)
                      if t in self.tensors}
            out = self.tensors.get(node.outputs[0]) if node.outputs else None
            parts = self.parts.get(node.layer, {})
            if inputs or out is not None or parts:
                changes[node.layer] = LayerChange(inputs, None if out is None else out[1],
                                                  parts)
        return changes

    def neurons(self) -> dict[str, np.ndarray]:
        """The layers that lose neurons of their own (units, filters) and which ones, in
        graph order; a removed layer whose every neuron the request took is listed with all
        of them (the layers removed only because they served it are not)."""
        out: dict[str, np.ndarray] = {}
        analysis = channel_axes(self.graph, self.rules)
        changes = self.layers()
        for name in self.removed_layers():
            t = self.graph.calls(name)[0].outputs[:1]
            if t and t[0] in self.tensors:
                changes[name] = LayerChange(outputs=self.tensors[t[0]][1])
        for name in sorted(changes, key=self._position):
            change = changes[name]
            if change.outputs is not None and analysis.makes_channels(self.graph.calls(name)[0]):
                out[name] = change.outputs
        return out

    def __str__(self) -> str:
        lines = []
        for name, change in self.layers().items():
            parts = [f"input {pos}: {_fmt(idx)}" for pos, idx in change.inputs.items()]
            if change.outputs is not None:
                parts.append(f"output: {_fmt(change.outputs)}")
            parts += [f"{part}: {_fmt(idx)}" for part, idx in change.parts.items()]
            lines.append(f"{name} ({self.graph.layers[name].kind}): " + "; ".join(parts))
        lines += [f"{name} ({self.graph.layers[name].kind}): removed"
                  for name in self.removed_layers()]
        return "\n".join(lines)


def _fmt(idx: np.ndarray, most: int = 12) -> str:
    shown = ", ".join(str(int(i)) for i in idx[:most])
    return f"[{shown}{', ...' if len(idx) > most else ''}] ({len(idx)})"


def _describe(graph: Graph, name: str) -> str:
    return f"layer '{name}' ({graph.layers[name].kind})"


def prunable_layers(graph: Graph, *, rules: RuleSet | None = None) -> list[str]:
    """Layers whose kind has neurons a user can target, in graph order (``rules``:
    :data:`~kerasprune.core.rules.RULES` by default)."""
    rules = RULES if rules is None else rules
    return [name for name, spec in graph.layers.items() if rules.rule_for(spec.kind).targetable]


@dataclass(frozen=True)
class Prunability:
    """Whether neurons of one layer can be deleted, and if not, why.

    Parameters
    ----------
    layer
        The layer's name in the graph.
    kind
        Its kind.
    neurons
        How many neurons it has (``None`` if it has no channel axis kerasprune can follow).
    reason
        Why no neuron of it can be deleted, or ``None`` if they can.
    group
        The layers that lose neurons with one of its own (itself included), in graph order;
        empty if it cannot be pruned.
    output
        Whether deleting its neurons changes a model output (then it is prunable only with
        ``allow_output_change=True``, and ``reason`` says so).
    """

    layer: str
    kind: str
    neurons: int | None
    reason: str | None
    group: tuple[str, ...] = ()
    output: bool = False

    @property
    def prunable(self) -> bool:
        """Whether its neurons can be deleted (without ``allow_output_change``)."""
        return self.reason is None


def prunability(graph: Graph, *, rules: RuleSet | None = None) -> list[Prunability]:
    """For every layer with neurons, whether they can be deleted and why not.

    Each layer's first neuron (of each block, for a grouped convolution:
    :meth:`~kerasprune.core.rules.Rule.neuron_blocks`) is put through
    :func:`dependency_group` (which neurons is immaterial: a deletion passes the same layers
    whichever channels it takes), so the reason is the error that deleting from it would
    raise.

    Parameters
    ----------
    graph
        The network.
    rules
        The rules; :data:`~kerasprune.core.rules.RULES` by default.

    Returns
    -------
    list of Prunability
        One entry per layer with neurons (:func:`prunable_layers`), in graph order.
    """
    analysis = channel_axes(graph, rules)
    out = []
    for name in prunable_layers(graph, rules=rules):
        spec = graph.layers[name]
        refused = analysis.why_not_targetable(graph, name)
        if refused is not None:
            out.append(Prunability(name, spec.kind, None, str(refused)))
            continue
        n = analysis.neuron_count(graph, name)
        if n < 2:
            out.append(Prunability(name, spec.kind, n, f"layer '{name}' has a single neuron"))
            continue
        reason: str | None = None
        group: tuple[str, ...] = ()
        output = False
        per = n // analysis.rule(spec).neuron_blocks(spec)  # one neuron of every block,
        first = np.arange(0, n, per) if per > 1 else np.array([0])  # or a whole block of 1
        try:
            deletion = _closed(graph, {name: first}, False, analysis)
            group = tuple(deletion.neurons())
        except PruneError as err:
            reason = str(err)
            try:
                deletion = _closed(graph, {name: first}, True, analysis)
                output = any(t in deletion.tensors for t in graph.outputs)
            except PruneError:
                pass
        out.append(Prunability(name, spec.kind, n, reason, group, output))
    return out


def neuron_count(graph: Graph, layer: str, *, rules: RuleSet | None = None) -> int:
    """How many neurons (output channels) ``layer`` has.

    Raises
    ------
    PruneError
        For an unknown layer, one without neurons, or one whose channels cannot be followed
        (:meth:`~kerasprune.core.channels.ChannelAxes.why_not_targetable`).
    """
    return channel_axes(graph, rules).neuron_count(graph, layer)


def _indices(graph: Graph, layer: str, neurons: Iterable[int],
             analysis: ChannelAxes) -> np.ndarray:
    """Validate and normalise neuron indices (negatives count from the end)."""
    return _checked(layer, neurons, analysis.neuron_count(graph, layer))


def _checked(layer: str, neurons: Iterable[int], n: int, what: str = "neurons",
             whole: bool = True) -> np.ndarray:
    """Indices among ``n`` units, checked and normalised (negatives count from the end);
    all ``n`` only if ``whole`` (a layer's neurons may all go, with its branch: see
    :func:`_branches`; an attention layer keeps at least one head)."""
    if not isinstance(neurons, (np.ndarray, list, tuple, range)) and hasattr(
            neurons, "__array__"):  # a tensor of any framework
        neurons = np.asarray(neurons)
    if isinstance(neurons, np.ndarray):
        if neurons.ndim != 1 or not (np.issubdtype(neurons.dtype, np.integer)
                                     or neurons.size == 0):
            raise PruneError(f"neurons of '{layer}' are given as a 1-D array of integer "
                             f"indices, not one of shape {neurons.shape} and dtype "
                             f"{neurons.dtype}")
    elif isinstance(neurons, (str, bytes)) or not isinstance(neurons, Iterable):
        raise PruneError(f"neurons of '{layer}' are given as a sequence of integer indices, "
                         f"not {neurons!r} ({type(neurons).__name__})")
    values = list(neurons) if not isinstance(neurons, np.ndarray) else neurons.tolist()
    checked: list[int] = []
    for value in values:
        if not isinstance(value, (int, np.generic)) and hasattr(value, "__array__"):
            scalar = np.asarray(value)  # a 0-d tensor of any framework
            if scalar.ndim == 0 and np.issubdtype(scalar.dtype, np.integer):
                value = scalar.item()
        if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
            raise PruneError(
                f"neuron indices of '{layer}' must be integers, got {value!r} "
                f"({type(value).__name__})")
        index = operator.index(value)
        if not -n <= index < n:
            raise PruneError(
                f"neuron index {index} is out of range for '{layer}', which has {n} {what} "
                f"(valid: {-n} to {n - 1})")
        checked.append(index % n)
    unique, counts = np.unique(np.asarray(checked, dtype=np.int64), return_counts=True)
    if (counts > 1).any():
        raise PruneError(
            f"neuron indices of '{layer}' repeat: {unique[counts > 1].tolist()} "
            "(negative indices count from the end, so -1 and n-1 are the same neuron)")
    if len(unique) == n and not whole:
        raise PruneError(
            f"cannot delete all {n} {what} of '{layer}': the layer would have none left")
    return unique


class _Closure:
    """Grows per-tensor deletion masks until every layer's constraints hold."""

    def __init__(self, graph: Graph, allow_output_change: bool, analysis: ChannelAxes,
                 allow_inexact: bool = False) -> None:
        self.graph = graph
        self.allow_output_change = allow_output_change
        self.allow_inexact = allow_inexact
        self.inexact: list[str] = []
        self.producer = graph.producers
        self.consumers = graph.consumers
        self.analysis = analysis
        self.axes = analysis.axes
        self.masks: dict[int, np.ndarray] = {}
        self.todo: deque[int] = deque()

    def mark(self, t: int, mask_or_idx: np.ndarray, why: str) -> None:
        axis = self.axes.get(t)
        if axis is None:
            origin = self.analysis.origins.get(t)
            if origin is None:
                raise PruneError(f"{why} would delete channels of a model input")
            raise PruneError(f"{why} reaches channels kerasprune cannot follow: {origin}")
        size = self.graph.shapes[t][axis]
        new = np.zeros(size, dtype=bool)
        new[mask_or_idx] = True
        mask = self.masks.get(t)
        if mask is None:
            mask = np.zeros(size, dtype=bool)
        if (new & ~mask).any():  # an empty request leaves no (empty) entry behind
            self.masks[t] = mask | new
            self.todo.append(t)

    def run(self) -> None:
        while self.todo:
            t = self.todo.popleft()
            node = self.producer.get(t)
            if node is None:
                raise PruneError("the deletion would delete channels of a model input")
            self.visit(node)
            for consumer, _ in self.consumers.get(t, []):
                self.visit(consumer)

    def visit(self, node: Node) -> None:
        graph = self.graph
        spec = graph.layers[node.layer]
        rule = self.analysis.rule(spec)
        axis = next((a for a in (self.axes.get(t) for t in node.inputs) if a is not None), None)
        where = _describe(graph, node.layer)
        link = self.analysis.link(node)
        if link is not None and axis is None:
            origin = self.analysis.origins.get(node.inputs[0]) if node.inputs else None
            if origin is None:
                raise PruneError(f"the deletion reaches {where}, whose channels come from a "
                                 "model input and cannot change")
            raise PruneError(f"the deletion reaches {where}, whose channels kerasprune cannot "
                             f"follow further back: {origin}")
        if rule.slices is not None:
            unknown = [w for w in spec.weights if w not in rule.slices]
            if unknown:
                raise UnsupportedLayerError(
                    f"the deletion reaches {where}, which holds weights kerasprune does not "
                    f"know how to slice ({', '.join(unknown)}); if it is quantized, prune "
                    "it before quantizing")
        if link is None:
            self._producer(node, rule, spec)
        else:
            self._inexact(node, rule, spec, axis, where)
            self._linked(node, link, where)
        self._share(node)

    def _inexact(self, node: Node, rule: Rule, spec: LayerSpec, axis: int | None,
                 where: str) -> None:
        if axis is None or node.layer in self.inexact:
            return
        reason = rule.inexact(spec, [self.graph.shapes[t] for t in node.inputs], axis)
        if reason is None:
            return
        if not self.allow_inexact:
            raise UnsupportedLayerError(
                f"the deletion passes {where}, which it cannot keep exact: {reason}. Pass "
                "allow_inexact=True to delete the channels anyway (its weights are sliced to "
                "the kept channels) and measure what it changes with kerasprune.deviation")
        self.inexact.append(node.layer)

    def _producer(self, node: Node, rule: Rule, spec: LayerSpec) -> None:
        graph = self.graph
        ties = rule.ties(spec, [graph.shapes[t] for t in node.inputs],
                         [graph.shapes[t] for t in node.outputs])
        if ties:
            self._tied(node, rule, spec, ties)
        tied_inputs = {node.inputs[tie.position] for tie in ties if not tie.output}
        for pos, t in enumerate(node.inputs):
            if t in self.masks and t not in tied_inputs:
                refused = rule.why_not_read_at(spec, pos)
                if refused is not None:
                    raise UnsupportedLayerError(refused)
                expected = rule.in_axis(spec, graph.shapes[t])
                if expected != self.axes[t]:
                    raise UnsupportedLayerError(
                        f"{_describe(graph, node.layer)} reads channels on axis {expected + 1} "
                        f"but the deleted channels lie on axis {(self.axes[t] or 0) + 1} "
                        "(counting the batch axis as 0)")
        out = node.outputs[0]
        if out in self.masks:
            reason = rule.output_coupling(spec)
            if reason and not self.allow_output_change:
                raise UnsupportedLayerError(
                    f"cannot delete outputs of {_describe(graph, node.layer)}: {reason}")
        inputs, output = rule.grow(spec, [self.masks.get(t) for t in node.inputs],
                                   self.masks.get(out))  # a grouped convolution's couplings
        why = f"the deletion through {_describe(graph, node.layer)}"
        for t, mask in zip((*node.inputs, out), (*inputs, output), strict=True):
            if mask is not None:
                self.mark(t, mask, why)

    def check(self) -> None:
        """Ask every layer that makes channels whether it can lose what reaches it."""
        seen: set[Node] = set()
        for t in list(self.masks):
            for node in [self.producer[t], *(c for c, _ in self.consumers.get(t, []))]:
                if node in seen or not self.analysis.makes_channels(node):
                    continue
                seen.add(node)
                spec = self.graph.layers[node.layer]
                reason = self.analysis.rule(spec).why_not_deleted(
                    spec, [self.masks.get(i) for i in node.inputs],
                    self.masks.get(node.outputs[0]))
                if reason:
                    raise PruneError(reason)

    def _tied(self, node: Node, rule: Rule, spec: LayerSpec, ties: list[Tie]) -> None:
        """A layer's own channels and the tensors tied to them (its states) go together."""
        graph = self.graph
        out = node.outputs[0]
        mask = self.masks.get(out, np.zeros(graph.shapes[out][self.axes[out] or 0],
                                            dtype=bool)).copy()
        tensors = [(node.outputs if tie.output else node.inputs)[tie.position] for tie in ties]
        where = f"the states of {_describe(graph, node.layer)}"
        for tie, t in zip(ties, tensors, strict=True):
            axis = self.axes.get(t)
            if axis is not None and axis != rule.out_axis(spec, graph.shapes[t]):
                raise UnsupportedLayerError(
                    f"{where}: a state holds its channels on axis {axis + 1}, not on axis "
                    f"{rule.out_axis(spec, graph.shapes[t]) + 1} (counting the batch axis as 0)")
            if t in self.masks:
                mask[tie.channels[self.masks[t]]] = True
        for tie, t in zip(ties, tensors, strict=True):
            if mask[tie.channels].any():
                self.mark(t, mask[tie.channels], where)
        if mask.any():
            self.mark(out, mask, where)

    def _linked(self, node: Node, link: Any, where: str) -> None:
        graph = self.graph
        out = node.outputs[0]
        size = graph.shapes[out][link.out_axis]
        out_mask = self.masks.get(out, np.zeros(size, dtype=bool)).copy()
        in_masks = [self.masks.get(t, np.zeros(graph.shapes[t][self.axes[t] or 0], dtype=bool))
                    .copy() if self.axes.get(t) is not None else None for t in node.inputs]
        for _ in range(len(node.inputs) + 2):
            before = out_mask.sum() + sum(int(m.sum()) for m in in_masks if m is not None)
            for src, mask in zip(link.sources, in_masks, strict=True):
                if mask is None:
                    continue
                valid = src >= 0
                out_mask[valid] |= mask[src[valid]]
            for src, mask, t in zip(link.sources, in_masks, node.inputs, strict=True):
                valid = src >= 0
                hit = src[valid][out_mask[valid]]
                if mask is None:
                    if len(hit):
                        origin = self.analysis.origins.get(t)
                        if origin is None:
                            raise PruneError(f"the deletion reaches {where}, which reads a "
                                             "model input whose channels cannot change")
                        raise PruneError(f"the deletion reaches {where}, which also reads "
                                         f"channels kerasprune cannot follow: {origin}")
                    continue
                mask[hit] = True
            after = out_mask.sum() + sum(int(m.sum()) for m in in_masks if m is not None)
            if after == before:
                break
        if out_mask.any():
            self.mark(out, out_mask, f"the deletion through {where}")
        for t, mask in zip(node.inputs, in_masks, strict=True):
            if mask is not None and mask.any():
                self.mark(t, mask, f"the deletion through {where}")

    def _share(self, node: Node) -> None:
        """A layer called more than once loses the same channels in every call."""
        calls = self.graph.calls(node.layer)
        if len(calls) < 2:
            return
        slots: list[tuple[int, ...]] = [c.inputs + c.outputs[:1] for c in calls]
        for position in range(len(slots[0])):
            tensors = [s[position] for s in slots]
            marked = [self.masks[t] for t in tensors if t in self.masks]
            if not marked:
                continue
            union = np.logical_or.reduce(marked)
            for t in tensors:
                self.mark(t, union, f"the shared {_describe(self.graph, node.layer)}")


def dependency_group(graph: Graph, layer: str | Request, neurons: Iterable[int] | None = None,
                     *, allow_output_change: bool = False, allow_inexact: bool = False,
                     rules: RuleSet | None = None) -> Deletion:
    """Everything that goes if ``neurons`` of ``layer`` are deleted, without deleting it.

    Parameters
    ----------
    graph
        The network.
    layer
        A layer name, or a mapping ``{layer name: neuron indices}`` to delete from several
        layers at once. ``"layer:part"`` (:func:`part_name`) names units inside a layer
        instead of its output channels: an attention layer's ``heads``, ``key_dim`` or
        ``value_dim`` (:meth:`~kerasprune.core.rules.Rule.parts`).
    neurons
        Indices of the neurons (output channels) to delete; negative indices count from the
        end, as in Python. Repeated indices are an error.
    allow_output_change
        Allow deletions that reach a model output (deleting an output layer's units changes
        what the model predicts).
    allow_inexact
        Allow deletions that pass a layer which cannot keep them exact: a
        ``LayerNormalization`` or ``RMSNormalization`` over the deleted channels (they count
        in its mean and variance). Its weights are sliced to the kept channels; the result
        is listed in :attr:`Deletion.inexact`.
    rules
        The rules of the layer kinds; :data:`~kerasprune.core.rules.RULES` by default (pass a
        :meth:`~kerasprune.core.rules.RuleSet.copy` with rules of your own layers).

    Returns
    -------
    Deletion
        Every tensor whose channels go, and so every layer that changes.

    Raises
    ------
    PruneError
        For an unknown layer, a layer without neurons, bad indices, a deletion that would
        empty a tensor, reach a model input or output, or pass a layer that cannot carry it.
    """
    for flag, value in (("allow_output_change", allow_output_change),
                        ("allow_inexact", allow_inexact)):
        if not isinstance(value, (bool, np.bool_)):
            raise TypeError(f"{flag} must be True or False, not {value!r} "
                            f"({type(value).__name__})")
    analysis = channel_axes(graph, rules)
    checked: dict[str, np.ndarray] = {}
    parts: dict[str, dict[str, np.ndarray]] = {}
    for key, raw in _request(layer, neurons).items():
        name, part = _split_part(graph, key)
        if part is None:
            checked[name] = _indices(graph, name, raw, analysis)
        else:
            parts.setdefault(name, {})[part] = _part_indices(graph, name, part, raw, analysis)
    found = _closed(graph, checked, bool(allow_output_change), analysis, bool(allow_inexact))
    return replace(found, parts=parts) if parts else found


def _part_indices(graph: Graph, layer: str, part: str, raw: Iterable[int],
                  analysis: ChannelAxes) -> np.ndarray:
    """Validate and normalise the indices of units of a part of ``layer``."""
    spec = graph.layers[layer]
    rule = analysis.rule(spec)
    sizes = rule.parts(spec)
    key = part_name(layer, part)
    if part not in sizes:
        has = (f"its parts are {', '.join(repr(part_name(layer, p)) for p in sizes)}" if sizes
               else f"{spec.kind} layers have no parts, only neurons (name the layer alone)")
        raise PruneError(f"'{key}': {rule.describe(spec)} has no part '{part}'; {has}")
    for node in graph.calls(layer):
        refused = rule.why_not_part(spec, part, [graph.shapes[t] for t in node.outputs])
        if refused is not None:
            raise UnsupportedLayerError(f"cannot delete '{key}': {refused}")
    return _checked(key, raw, sizes[part], "units", whole=False)


def _closed(graph: Graph, request: Mapping[str, np.ndarray], allow_output_change: bool,
            analysis: ChannelAxes, allow_inexact: bool = False) -> Deletion:
    """The deletion of already checked indices."""
    closure = _Closure(graph, allow_output_change, analysis, allow_inexact)
    for name, idx in request.items():
        try:
            for node in graph.calls(name):
                closure.mark(node.outputs[0], idx, f"deleting neurons of '{name}'")
        except PruneError as err:
            raise type(err)(f"deleting neurons {idx.tolist()} of '{name}': {err}") from None
    try:
        closure.run()
        closure.check()
    except PruneError as err:
        who = _blamed(graph, request, analysis, allow_output_change)
        raise type(err)(f"cannot delete the requested neurons of {who}: {err}") from None
    targets = ", ".join(f"'{n}'" for n in request)
    producer = graph.producers
    for t, mask in closure.masks.items():
        if t in graph.outputs and not allow_output_change:
            maker = producer[t].layer
            raise PruneError(
                f"deleting the requested neurons of {targets} changes the model output "
                f"made by {_describe(graph, maker)} (channels {_fmt(np.flatnonzero(mask))}); "
                "pass allow_output_change=True if that is what you want")
    removed, stand_ins = _branches(graph, closure.masks, request, analysis)
    tensors = {t: (int(closure.axes[t] or 0), np.flatnonzero(mask))
               for t, mask in sorted(closure.masks.items())}
    return Deletion(graph, tensors, analysis.rules, removed, stand_ins,
                    inexact=tuple(closure.inexact))


def _branches(graph: Graph, masks: Mapping[int, np.ndarray], request: Mapping[str, np.ndarray],
              analysis: ChannelAxes) -> tuple[frozenset[Node], dict[int, int]]:
    """The nodes a deletion removes, and the stand-ins of their outputs still read.

    A tensor that loses every channel goes with the node that writes it (which must lose
    all its outputs); its readers go too when they lose all theirs, and a ``Concatenate``
    (on the channel axis) that keeps other inputs only drops it, or is itself replaced by
    its one remaining input. Then every node whose outputs nothing reads any more goes
    (the layers that only served the branch). Anything else is refused: a tensor that
    empties and is read by a layer that would keep its output, or is a model output.
    """
    vanish = {t for t, mask in masks.items() if mask.all()}
    if not vanish:
        return frozenset(), {}
    targets = ", ".join(f"'{n}'" for n in request)
    removed: set[Node] = set()
    for t in sorted(vanish):
        node = graph.producers[t]
        if all(o in vanish for o in node.outputs):
            removed.add(node)
    own_outputs = [c.outputs[0] for n in request for c in graph.calls(n) if c.outputs]
    for t in sorted(vanish, key=lambda t: (t not in own_outputs, t)):  # requested ones first
        node = graph.producers[t]
        why = None
        if node not in removed:
            why = "which has other outputs that stay"
        elif t in graph.outputs:
            why = "a model output, which cannot disappear"
        else:
            for reader, _ in graph.consumers.get(t, []):
                if reader not in removed and not _drops_input(graph, reader, analysis):
                    why = (f"read by {_describe(graph, reader.layer)}, which would keep its "
                           "output (only a Concatenate input can go whole)")
                    break
        if why is None:
            continue
        mask = masks[t]
        if len(request) == 1:
            (name, idx), = request.items()
            n = int(analysis.neuron_count(graph, name))
            if len(idx) == n:
                raise PruneError(
                    f"cannot delete all {n} neurons of '{name}': the model would have no "
                    f"path through it (all {mask.size} channels of the output of "
                    f"{_describe(graph, node.layer)} would go, {why})")
        raise PruneError(
            f"deleting the requested neurons of {targets} would delete all {mask.size} "
            f"channels of the output of {_describe(graph, node.layer)}, {why}")
    stand_ins: dict[int, int] = {}
    for node in graph.nodes:  # Concatenates left with one input are replaced by it
        if node in removed or not any(t in vanish for t in node.inputs):
            continue
        left = [t for t in node.inputs if t not in vanish]
        if len(left) == 1 and len(node.outputs) == 1:
            removed.add(node)
            stand_ins[node.outputs[0]] = left[0]
    read = {t: 0 for t in graph.shapes}
    for node in graph.nodes:
        if node not in removed:
            for t in node.inputs:
                read[follow(t, stand_ins)] += 1
    for t in graph.outputs:
        read[follow(t, stand_ins)] += 1
    for node in reversed(graph.nodes):  # what only served removed nodes goes too
        if node in removed or any(read[t] for t in node.outputs) \
                or not any(graph.consumers.get(t) for t in node.outputs):
            continue
        removed.add(node)
        for t in node.inputs:
            read[follow(t, stand_ins)] -= 1
    unread = [i for i, t in enumerate(graph.inputs) if not read[t]]
    if unread:
        raise PruneError(f"deleting the requested neurons of {targets} would remove every "
                         f"layer that reads model input {unread[0]}, which cannot disappear")
    return frozenset(removed), _needed(graph, removed, stand_ins)


def _needed(graph: Graph, removed: set[Node], stand_ins: Mapping[int, int]) -> dict[int, int]:
    """The stand-ins something still reads (a kept node or a model output), with the chains
    they follow; a removed concatenation whose output nothing reads needs none (its one
    remaining input may have gone too)."""
    read = {t for node in graph.nodes if node not in removed for t in node.inputs}
    read.update(graph.outputs)
    kept: dict[int, int] = {}
    for t in stand_ins:
        while t in read and t in stand_ins and t not in kept:
            kept[t] = stand_ins[t]
            read.add(kept[t])
            t = kept[t]
    return kept


def _drops_input(graph: Graph, node: Node, analysis: ChannelAxes) -> bool:
    """Whether ``node`` can lose an input whose every channel goes: a concatenation along
    the channel axis."""
    spec = graph.layers[node.layer]
    rule = analysis.rule(spec)
    if not isinstance(rule, Concatenate) or len(node.outputs) != 1:
        return False
    link = analysis.links.get(node)
    return (not isinstance(link, PruneError) and link is not None
            and any((src < 0).any() for src in link.sources))


def _blamed(graph: Graph, request: Mapping[str, np.ndarray], analysis: ChannelAxes,
            allow_output_change: bool) -> str:
    """The requested layers, naming the ones whose deletion alone fails, when several are
    requested and not all of them fail."""
    names = list(request)
    if len(names) == 1:
        return f"'{names[0]}'"
    failing = []
    for name in names:
        closure = _Closure(graph, allow_output_change, analysis)
        try:
            for node in graph.calls(name):
                closure.mark(node.outputs[0], request[name], "")
            closure.run()
            closure.check()
        except PruneError:
            failing.append(name)
    listed = ", ".join(f"'{n}'" for n in names)
    if not failing or len(failing) == len(names):
        return listed
    return (f"{', '.join(repr(n) for n in failing)} (of the {len(names)} requested layers "
            f"{listed})")


def _request(layer: str | Request, neurons: Iterable[int] | None) -> dict[str, Iterable[int]]:
    if isinstance(layer, str):
        if neurons is None:
            raise PruneError(f"which neurons of '{layer}'? pass their indices")
        return {layer: neurons}
    if neurons is not None:
        raise PruneError("pass neuron indices either in the mapping or as `neurons`, not both")
    return dict(layer)


def apply_deletion(deletion: Deletion, take: Take = np.take, *,
                   rules: RuleSet | None = None) -> Graph:
    """Build the graph that results from a deletion.

    Parameters
    ----------
    deletion
        From :func:`dependency_group`.
    take
        ``take(array, indices, axis)`` gathering a weight's kept entries; NumPy's by default.
        An adapter passes its backend's to keep weights where they are.
    rules
        The rules of the layer kinds: the deletion's own (:attr:`Deletion.rules`) by default.

    Returns
    -------
    Graph
        A new graph; the input graph and its weights are not modified.
    """
    graph = deletion.graph
    rules = deletion.rules if rules is None else rules
    rules = RULES if rules is None else rules
    shapes = dict(graph.shapes)
    keep: dict[int, np.ndarray] = {}
    for t, (axis, gone) in deletion.tensors.items():
        size = graph.shapes[t][axis]
        keep[t] = np.setdiff1d(np.arange(size), gone)
        shape = list(graph.shapes[t])
        shape[axis] = len(keep[t])
        shapes[t] = tuple(shape)
    layers = dict(graph.layers)
    for name in deletion.layers():
        node = graph.calls(name)[0]
        spec = graph.layers[name]
        rule = rules.rule_for(spec.kind)
        spaces: dict[int | str, np.ndarray] = {
            pos: keep[t] for pos, t in enumerate(node.inputs) if t in keep}
        if node.outputs and node.outputs[0] in keep:
            spaces[OUT] = keep[node.outputs[0]]
        gone_parts = deletion.parts.get(name, {})
        sizes = rule.parts(spec) if gone_parts else {}
        for part, gone in gone_parts.items():
            spaces[part] = np.setdiff1d(np.arange(sizes[part]), gone)
        axes = [deletion.tensors[t][0] if t in deletion.tensors else None for t in node.inputs]
        weights, constants = dict(spec.weights), dict(spec.constants)
        for wa in rule.weight_axes(spec, axes):
            arrays = weights if wa.weight in weights else constants
            if wa.weight not in arrays or wa.space not in spaces:
                continue
            array = arrays[wa.weight]
            idx = wa.entries(spaces[wa.space], int(array.shape[wa.axis]))
            arrays[wa.weight] = take(array, idx, wa.axis)
        sliced = spec.with_changes({}, weights, constants)
        attrs = rule.attr_updates(sliced, [shapes[t] for t in node.inputs],
                                  shapes[node.outputs[0]], axes)
        if gone_parts:
            kept = {part: size - len(gone_parts.get(part, ())) for part, size in sizes.items()}
            part_attrs, factors = rule.part_updates(spec, kept)
            attrs.update(part_attrs)
            for weight, factor in factors.items():
                arrays = weights if weight in weights else constants
                if weight in arrays and factor != 1.0:
                    scaled: Any = arrays[weight]  # any backend's array scales by a float
                    arrays[weight] = scaled * factor
        layers[name] = spec.with_changes(attrs, weights, constants)
    changed = replace(graph, layers=layers, shapes=shapes)
    if not deletion.removed:
        return changed
    return remove_nodes(changed, deletion.removed, deletion.stand_ins)


def _zeroed(array: np.ndarray, indices: np.ndarray, axis: int) -> np.ndarray:
    out = np.array(array, copy=True)
    index: list[Any] = [slice(None)] * out.ndim
    index[axis] = indices
    out[tuple(index)] = 0
    return out


def zeroed_graph(deletion: Deletion,
                 to_numpy: Callable[[Any], np.ndarray] = np.asarray) -> Graph:
    """The graph of the zeroing oracle of a deletion: the same layers and shapes, with the
    weights that read the deleted channels (and the deleted parts' weights) set to zero.

    For an exact deletion, this graph's outputs equal the pruned graph's on the kept output
    channels; where the deletion is inexact (:attr:`Deletion.inexact`), the difference
    between the two is what the deletion changed.

    Parameters
    ----------
    deletion
        From :func:`dependency_group`.
    to_numpy
        How to read a weight as a NumPy array (an adapter passes its backend's).

    Returns
    -------
    Graph
        A new graph with NumPy copies of the zeroed weights; the others are shared.
    """
    graph = deletion.graph
    analysis = channel_axes(graph, deletion.rules)
    layers = dict(graph.layers)
    for name, change in deletion.layers().items():
        node = graph.calls(name)[0]
        spec = graph.layers[name]
        rule = analysis.rule(spec)
        reads = analysis.makes_channels(node)
        gone: dict[int | str, np.ndarray] = {part: idx for part, idx in change.parts.items()}
        if reads:
            gone.update({pos: idx for pos, idx in change.inputs.items()})
        axes = [deletion.tensors[t][0] if t in deletion.tensors else None for t in node.inputs]
        zero = [(wa, gone[wa.space]) for wa in rule.weight_axes(spec, axes)
                if wa.space != OUT and wa.space in gone]
        if reads and change.outputs is not None:  # its own rows of a recurrent kernel
            zero += [(wa, change.outputs) for wa in rule.feedback_axes(spec)]
        weights = dict(spec.weights)
        for wa, channels in zero:
            if wa.weight in weights:
                array = to_numpy(weights[wa.weight])
                idx = wa.entries(channels, int(array.shape[wa.axis]))
                weights[wa.weight] = _zeroed(array, idx, wa.axis)
        layers[name] = spec.with_changes({}, weights)
    return replace(graph, layers=layers)


def delete_neurons(graph: Graph, layer: str | Request, neurons: Iterable[int] | None = None,
                   *, allow_output_change: bool = False, allow_inexact: bool = False,
                   take: Take = np.take, rules: RuleSet | None = None) -> Graph:
    """Delete neurons and everything connected to them; return a new graph.

    Parameters
    ----------
    graph
        The network.
    layer, neurons, allow_output_change, allow_inexact, rules
        As in :func:`dependency_group`.
    take
        As in :func:`apply_deletion`.

    Returns
    -------
    Graph
        A new graph: the layer loses those neurons, the layers that read them lose the
        matching weights, and coupled layers lose what they must.

    Raises
    ------
    PruneError
        As :func:`dependency_group`, before anything is built.
    """
    deletion = dependency_group(graph, layer, neurons, allow_output_change=allow_output_change,
                                allow_inexact=allow_inexact, rules=rules)
    return apply_deletion(deletion, take)

