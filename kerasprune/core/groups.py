"""Channel analysis: every tensor's channel axis and the coupled groups of neurons, once per graph.

Deleting a neuron deletes, through every layer that passes channels on, the channels linked to
it (:mod:`kerasprune.core.surgery`). Those links are an equivalence relation on the channels
of the graph's tensors: output channel ``j`` of a pass-through layer is the same channel as
channel ``sources[i][j]`` of its input ``i`` (:class:`~kerasprune.core.rules.Link`), and a
layer called several times loses the same channels in every call. :func:`analyze_channels`
computes the classes of that relation in one pass over the graph, with a union-find over
``(tensor, channel)`` pairs, so its cost is linear in the number of channels of all tensors.

A class is one **slot**: the channels that go together when one of them goes. A **group** is
the set of slots reachable from the neurons of some layers: the slots of a plain ``Dense``
layer's units; the slots shared by every convolution writing to a residual ``Add`` (slot ``j``
is channel ``j`` of each); the slots of two convolutions concatenated into a depthwise
convolution (their channels in order, since the depthwise layer ties each of its channels to
one of theirs); the slots of a shared layer, whose calls are tied. Deleting slot ``j`` of a
group through :func:`~kerasprune.core.surgery.dependency_group` deletes exactly the group's
channels in slot ``j``; :meth:`ChannelAnalysis.deletion` builds that deletion directly, without
the closure, for any set of slots at once.

Some slots cannot be deleted: they reach a model input or output, a layer that cannot carry a
deletion (a layer normalization, a softmax over the channels), or a layer whose kernel reads
another axis. Each group says which of its slots are blocked and why.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Final

import numpy as np
import numpy.typing as npt

from kerasprune.core.channels import channel_axes
from kerasprune.core.graph import Graph, Node, PruneError
from kerasprune.core.rules import RULES, Link, Rule, RuleSet
from kerasprune.core.surgery import Deletion

__all__ = [
    "PART_GROUPS",
    "ChainStep",
    "ChannelAnalysis",
    "ChannelGroup",
    "Member",
    "analyze_channels",
    "part_name",
    "split_part",
]

IntArray = npt.NDArray[np.int64]
BoolArray = npt.NDArray[np.bool_]

_FREE: Final = np.iinfo(np.int64).max
"""Block code of a channel that nothing blocks."""


def _frozen(array: npt.ArrayLike) -> IntArray:
    """A read-only int64 copy."""
    out = np.array(array, dtype=np.int64)
    out.flags.writeable = False
    return out


def _slot_list(slots: int | Iterable[int]) -> IntArray:
    if isinstance(slots, (int, np.integer)):
        return np.array([slots], dtype=np.int64)
    return np.asarray(list(slots), dtype=np.int64)


@dataclass(frozen=True, eq=False)
class Member:
    """A layer with neurons in a group, and the slot of each of its neurons.

    Parameters
    ----------
    layer
        The layer's name.
    slots
        ``slots[i]`` is the group slot of the layer's neuron (output channel) ``i``. A
        depthwise convolution with ``depth_multiplier`` m has m neurons in each slot.
    """

    layer: str
    slots: IntArray

    @property
    def width(self) -> int:
        """The layer's number of neurons."""
        return int(self.slots.size)

    def channels(self, slots: int | Iterable[int]) -> IntArray:
        """The layer's neurons in ``slots`` (one slot or several), sorted."""
        return np.flatnonzero(np.isin(self.slots, _slot_list(slots))).astype(np.int64)


@dataclass(frozen=True, eq=False)
class ChannelGroup:
    """Neurons of one or more layers that are deleted slot by slot together.

    Parameters
    ----------
    index
        Position of the group in :attr:`ChannelAnalysis.groups`.
    offset
        Index of the group's slot 0 among the slots of all groups (the order of
        :attr:`ChannelAnalysis.groups`), for arrays over every slot of a graph.
    width
        Number of slots.
    members
        The layers with neurons in the group, in graph order, each with the slot of each
        neuron. Slots are numbered in that order: the first member's neurons first.
    blocked
        ``blocked[s]`` is true when slot ``s`` cannot be deleted.
    reasons
        Why: each reason with the slots it blocks.
    elements
        Every tensor holding channels of the group: its id, then the channel indices in that
        tensor and their slots. A tensor may hold channels of several groups (a
        ``Concatenate`` output).
    """

    index: int
    offset: int
    width: int
    members: tuple[Member, ...]
    blocked: BoolArray
    reasons: Mapping[str, IntArray]
    elements: Mapping[int, tuple[IntArray, IntArray]]

    @property
    def layers(self) -> tuple[str, ...]:
        """Names of the members."""
        return tuple(m.layer for m in self.members)

    @property
    def prunable(self) -> bool:
        """Whether at least one slot can be deleted."""
        return not bool(self.blocked.all())

    @property
    def why_not(self) -> str | None:
        """Why no slot can be deleted (every reason, ``; ``-joined), or ``None``."""
        return None if self.prunable else "; ".join(self.reasons)

    def member(self, layer: str) -> Member:
        """The member named ``layer``."""
        for m in self.members:
            if m.layer == layer:
                return m
        raise PruneError(f"layer '{layer}' is not in the group of {', '.join(self.layers)}")

    def channels(self, slots: int | Iterable[int]) -> dict[str, IntArray]:
        """Each member's neurons in ``slots``, for members that have some."""
        chosen = _slot_list(slots)
        out = {m.layer: m.channels(chosen) for m in self.members}
        return {name: idx for name, idx in out.items() if idx.size}

    def request(self, slots: Iterable[int]) -> dict[str, IntArray]:
        """The request ``{layer: neuron indices}`` that deletes ``slots``, for
        :func:`~kerasprune.core.surgery.delete_neurons` (every member named)."""
        return self.channels(slots)

    def __repr__(self) -> str:
        state = "prunable" if self.prunable else f"blocked: {self.why_not}"
        return f"ChannelGroup({self.index}, {list(self.layers)}, width={self.width}, {state})"


@dataclass(frozen=True)
class ChainStep:
    """One tensor on a layer's one-to-one channel chain: the layer writing it, its id and its
    channel axis (without the batch axis)."""

    layer: str
    tensor: int
    axis: int


@dataclass(frozen=True, eq=False)
class ChannelAnalysis:
    """The channel analysis of a graph: computed once, read by planners and criteria.

    Build it with :func:`analyze_channels`.

    Parameters
    ----------
    graph
        The analysed graph.
    allow_output_change
        Whether slots reaching a model output (or a softmax's units) count as deletable.
    axes
        The channel axis (without the batch axis) of every tensor, ``None`` where channels
        cannot be followed (model inputs, outputs of layers that cannot pass a deletion).
    why_no_axis
        For each tensor without a channel axis, why.
    groups
        Every group, ordered by its first member in graph order.
    unprunable
        Layers that have neurons by kind but whose neurons cannot be followed (a grouped
        convolution, a depthwise convolution on a model input), with the reason.
    links
        For each node, its :class:`~kerasprune.core.rules.Link`, ``None`` for a layer that
        makes its own channels, or the error message of a layer that cannot pass them.
    group_index
        The index of the group of every member layer.
    element_tensor, element_channel, element_slot
        Every ``(tensor, channel)`` pair of the graph (tensors with a channel axis, in id
        order), with its global slot (``group.offset + slot``; -1 for channels no neuron
        request can reach, such as the part of a ``Concatenate`` that comes from a model
        input).
    tensor_start
        Where each tensor's channels begin in the element arrays.
    rules
        The rules it was computed with.
    """

    graph: Graph
    allow_output_change: bool
    axes: Mapping[int, int | None]
    why_no_axis: Mapping[int, str]
    groups: tuple[ChannelGroup, ...]
    unprunable: Mapping[str, str]
    links: Mapping[Node, Link | str | None]
    group_index: Mapping[str, int]
    element_tensor: IntArray
    element_channel: IntArray
    element_slot: IntArray
    tensor_start: Mapping[int, int]
    rules: RuleSet = field(default_factory=lambda: RULES)

    # -- lookups ---------------------------------------------------------------------------

    @property
    def slots(self) -> int:
        """Number of slots of all groups together."""
        last = self.groups[-1] if self.groups else None
        return 0 if last is None else last.offset + last.width

    def group_of(self, layer: str) -> ChannelGroup:
        """The group holding ``layer``'s neurons.

        Raises
        ------
        PruneError
            For an unknown layer (with close matches), a layer without neurons, or one whose
            neurons cannot be followed (with the reason).
        """
        index = self.group_index.get(layer)
        if index is not None:
            return self.groups[index]
        if layer in self.unprunable:
            raise PruneError(f"layer '{layer}' cannot lose neurons: {self.unprunable[layer]}")
        if layer in self.graph.layers:
            spec = self.graph.layers[layer]
            raise PruneError(f"layer '{layer}' ({spec.kind}) has no neurons to delete")
        close = difflib.get_close_matches(layer, list(self.graph.layers), n=3)
        hint = f"; did you mean {', '.join(repr(c) for c in close)}?" if close else ""
        raise PruneError(f"no layer named '{layer}' in the model{hint}")

    def link(self, node: Node) -> Link | None:
        """The link of ``node`` (``None`` if its layer makes its own channels).

        Raises
        ------
        PruneError
            If the layer cannot pass channels (the rule's message).
        """
        found = self.links[node]
        if isinstance(found, str):
            raise PruneError(found)
        return found

    def chain(self, layer: str) -> tuple[ChainStep, ...]:
        """The tensors ``layer``'s channels reach one to one, starting with its own output.

        The chain follows the layer's (first call's) output through layers that keep every
        channel where it is and the tensor's shape as it is (``BatchNormalization``,
        activations, ``Dropout``...), while the tensor has a single reader and is not a model
        output. It stops before a merge, a layer with neurons, a shared layer and anything
        that moves, mixes or resamples channels (pooling, ``Flatten``). Activation statistics
        are measured at its end; the ``BatchNormalization`` a layer's channels reach one to
        one is on it.

        Raises
        ------
        PruneError
            As :meth:`group_of`.
        """
        self.group_of(layer)
        graph = self.graph
        t = graph.calls(layer)[0].outputs[0]
        axis = self.axes[t]
        assert axis is not None  # a member's output has a channel axis
        steps = [ChainStep(layer, t, axis)]
        while t not in graph.outputs:
            readers = graph.consumers.get(t, [])
            if len(readers) != 1:
                break
            node = readers[0][0]
            found = self.links.get(node)
            out = node.outputs[0] if len(node.outputs) == 1 else None
            if (not isinstance(found, Link)
                    or self.rules.rule_for(graph.layers[node.layer].kind).targetable
                    or len(node.inputs) != 1 or out is None
                    or len(graph.calls(node.layer)) > 1
                    or graph.shapes[out] != graph.shapes[t] or found.out_axis != axis
                    or not np.array_equal(found.sources[0], np.arange(graph.shapes[t][axis]))):
                break
            t = out
            steps.append(ChainStep(node.layer, t, axis))
        return tuple(steps)

    # -- deletions -------------------------------------------------------------------------

    def slot_mask(self, slots: Mapping[int, Iterable[int]]) -> BoolArray:
        """A mask over every slot of the graph from ``{group index: slots}``."""
        mask = np.zeros(self.slots, dtype=bool)
        for index, chosen in slots.items():
            group = self.groups[index]
            idx = np.asarray(list(chosen), dtype=np.int64)
            if idx.size and (idx.min() < 0 or idx.max() >= group.width):
                raise PruneError(f"slot out of range for group {index} of width {group.width}")
            mask[group.offset + idx] = True
        return mask

    def deletion(self, deleted: BoolArray | Mapping[int, Iterable[int]],
                 graph: Graph | None = None) -> Deletion:
        """The deletion of some slots, built directly from the analysis.

        It equals :func:`~kerasprune.core.surgery.dependency_group` of the same neurons, without
        checking them: deleting blocked slots, or every channel of a tensor, is the caller's
        to avoid (the planner does).

        Parameters
        ----------
        deleted
            A boolean mask over every slot (:attr:`slots` long), or ``{group index: slots}``.
        graph
            The graph the deletion applies to, if not :attr:`graph`: a copy with the same
            nodes and shapes (see :func:`kerasprune.core.plan.shapes_only`).
        """
        mask = self.slot_mask(deleted) if isinstance(deleted, Mapping) else np.asarray(deleted)
        if mask.shape != (self.slots,):
            raise ValueError(f"deleted must be a mask over {self.slots} slots, got {mask.shape}")
        reachable = self.element_slot >= 0
        gone = np.zeros(self.element_slot.size, dtype=bool)
        gone[reachable] = mask[self.element_slot[reachable]]
        tensors: dict[int, tuple[int, np.ndarray]] = {}
        hit = self.element_tensor[gone]
        channels = self.element_channel[gone]
        if hit.size:
            cuts = np.flatnonzero(np.diff(hit)) + 1
            for part, idx in zip(np.split(hit, cuts), np.split(channels, cuts), strict=True):
                t = int(part[0])
                axis = self.axes[t]
                assert axis is not None
                tensors[t] = (axis, idx.astype(np.int64))
        parts: dict[str, dict[str, np.ndarray]] = {}
        for group in self.groups:
            if group.elements:
                continue
            chosen = np.flatnonzero(mask[group.offset:group.offset + group.width])
            if chosen.size:  # a part group (heads): one member, ``layer:part``
                owner, name = split_part(group.members[0].layer)
                assert name is not None
                parts.setdefault(owner, {})[name] = chosen.astype(np.int64)
        return Deletion(self.graph if graph is None else graph, tensors, self.rules,
                        parts=parts)

    def request(self, deleted: BoolArray) -> dict[str, IntArray]:
        """The request ``{layer: neuron indices}`` deleting the slots of a mask over every
        slot: every member of every touched group named, in graph order."""
        out: dict[str, IntArray] = {}
        for group in self.groups:
            chosen = np.flatnonzero(deleted[group.offset:group.offset + group.width])
            if chosen.size:
                out.update(group.request(chosen.tolist()))
        order = {name: i for i, name in enumerate(self.graph.layers)}
        return dict(sorted(out.items(), key=lambda item: order[split_part(item[0])[0]]))


# --------------------------------------------------------------------------------------------
# Building the analysis
# --------------------------------------------------------------------------------------------


def _describe(graph: Graph, name: str) -> str:
    return f"layer '{name}' ({graph.layers[name].kind})"


class _Builder:
    """Collects the equivalences and blocks over (tensor, channel) elements."""

    def __init__(self, graph: Graph, allow_output_change: bool, rules: RuleSet) -> None:
        self.graph = graph
        self.allow = allow_output_change
        self.rules = rules
        shared = channel_axes(graph, rules)
        self.axes = shared.axes
        self.why_no_axis = shared.why_no_axis
        self.links: dict[Node, Link | str | None] = {
            node: str(link) if isinstance(link, PruneError) else link
            for node, link in shared.links.items()}
        self.start: dict[int, int] = {}
        self.size: dict[int, int] = {}
        n = 0
        for t in sorted(graph.shapes):
            axis = self.axes.get(t)
            if axis is not None:
                self.start[t] = n
                self.size[t] = int(graph.shapes[t][axis])
                n += self.size[t]
        self.n = n
        self.u: list[IntArray] = []
        self.v: list[IntArray] = []
        self.block = np.full(n, _FREE, dtype=np.int64)
        self.reasons: dict[str, int] = {}

    def ids(self, t: int) -> IntArray:
        return np.arange(self.start[t], self.start[t] + self.size[t], dtype=np.int64)

    def tie(self, a: IntArray, b: IntArray) -> None:
        self.u.append(a)
        self.v.append(b)

    def stop(self, elements: IntArray, reason: str) -> None:
        if elements.size:
            code = self.reasons.setdefault(reason, len(self.reasons))
            np.minimum.at(self.block, elements, code)

    def stop_tensor(self, t: int, reason: str) -> None:
        if t in self.start:
            self.stop(self.ids(t), reason)

    def run(self) -> None:
        graph = self.graph
        for node in graph.nodes:
            found = self.links.get(node)
            where = _describe(graph, node.layer)
            if len(node.outputs) > 1 and found is not None:
                for t in (*node.inputs, *node.outputs):
                    self.stop_tensor(t, f"{where} has several outputs, which kerasprune does "
                                        "not follow")
            elif isinstance(found, str):
                for t in node.inputs:
                    self.stop_tensor(t, found)
            elif found is None:
                self.producer(node, where)
            elif node.outputs and node.outputs[0] in self.start:
                inexact = self.inexact(node, where)
                if inexact is None:
                    self.linked(node, found, where)
                else:  # groups are exact deletions: allow_inexact is for explicit requests
                    for t in (*node.inputs, node.outputs[0]):
                        self.stop_tensor(t, inexact)
        self.shared()
        if not self.allow:
            for t in graph.outputs:
                if t in self.start and t in graph.producers:
                    maker = _describe(graph, graph.producers[t].layer)
                    self.stop_tensor(t, f"it changes the model output made by {maker} (pass "
                                        "allow_output_change=True to allow it)")

    def inexact(self, node: Node, where: str) -> str | None:
        """Why deleting channels through a linked node is not exact (a normalization over
        them), or ``None``."""
        spec = self.graph.layers[node.layer]
        axis = next((self.axes[t] for t in node.inputs if self.axes.get(t) is not None), None)
        reason = None if axis is None else self.rules.rule_for(spec.kind).inexact(
            spec, [self.graph.shapes[t] for t in node.inputs], axis)
        return None if reason is None else (
            f"the deletion passes {where}, which it cannot keep exact: {reason} (only an "
            "explicit request with allow_inexact=True deletes through it)")

    def producer(self, node: Node, where: str) -> None:
        graph = self.graph
        spec = graph.layers[node.layer]
        rule = self.rules.rule_for(spec.kind)
        tied = self.tied(node, rule, where)
        for pos, t in enumerate(node.inputs):
            if t not in self.start or t in tied:
                continue
            reason = rule.why_not_read(spec) or rule.why_not_read_at(spec, pos) or ""
            expected = None if reason else rule.in_axis(spec, graph.shapes[t])
            axis = self.axes[t]
            assert axis is not None
            if expected != axis:
                self.stop_tensor(t, reason or (
                    f"{where} reads channels on axis {(expected or 0) + 1} but they lie on "
                    f"axis {axis + 1} (counting the batch axis as 0)"))
        ties = rule.input_ties(spec, [graph.shapes[t] for t in node.inputs])
        for t, labels in zip(node.inputs, ties, strict=True):
            if labels is not None and t in self.start:  # one label, one slot
                _, first, which = np.unique(labels, return_index=True, return_inverse=True)
                self.tie(self.ids(t), self.start[t] + first[which].astype(np.int64))
        coupling = rule.output_coupling(spec)
        if coupling and not self.allow and node.outputs:
            self.stop_tensor(node.outputs[0], f"cannot delete outputs of {where}: {coupling}")

    def tied(self, node: Node, rule: Rule, where: str) -> set[int]:
        """Tie a layer's own channels to the tensors that hold them too (a recurrent layer's
        states: :meth:`~kerasprune.core.rules.Rule.ties`); a layer with other outputs is not
        followed. Returns the tied tensors."""
        graph = self.graph
        spec = graph.layers[node.layer]
        ties = rule.ties(spec, [graph.shapes[t] for t in node.inputs],
                         [graph.shapes[t] for t in node.outputs]) if node.outputs else []
        out = node.outputs[0] if node.outputs else None
        found = set()
        for tie in ties:
            t = (node.outputs if tie.output else node.inputs)[tie.position]
            found.add(t)
            if out not in self.start:
                continue
            own = self.start[out] + np.asarray(tie.channels, dtype=np.int64)
            axis = rule.out_axis(spec, graph.shapes[t])
            if t not in self.start or self.axes[t] != axis:
                what = self.why_no_axis.get(t, f"its channels are not on axis {axis + 1}")
                self.stop(own, f"{where} is tied to a state whose channels cannot change "
                               f"({what})")
            else:
                self.tie(self.ids(t), own)
        if any(t not in found for t in node.outputs[1:]):  # outputs no rule says hold what
            for t in (*node.inputs, *node.outputs):
                self.stop_tensor(t, f"{where} has several outputs, which kerasprune does not "
                                    "follow")
        return found

    def linked(self, node: Node, link: Link, where: str) -> None:
        out = node.outputs[0]
        out_ids = self.ids(out)
        for t, src in zip(node.inputs, link.sources, strict=True):
            src = np.asarray(src, dtype=np.int64)
            valid = src >= 0
            if t not in self.start:
                what = self.why_no_axis.get(t, "it has no channel axis")
                self.stop(out_ids[valid], f"{where} merges the channels with a tensor whose "
                                          f"channels cannot change ({what})")
                continue
            fits = valid & (src < self.size[t])
            self.stop(out_ids[valid & ~fits], f"{where} maps channels out of range")
            self.tie(out_ids[fits], self.start[t] + src[fits])

    def shared(self) -> None:
        graph = self.graph
        for name in graph.layers:
            calls = graph.calls(name)
            if len(calls) < 2:
                continue
            where = _describe(graph, name)
            slots = [c.inputs + c.outputs[:1] for c in calls]
            for position in range(len(slots[0])):
                tensors = [s[position] for s in slots if position < len(s)]
                known = [t for t in tensors if t in self.start]
                sizes = {self.size[t] for t in known}
                if len(known) < len(tensors) or len(sizes) > 1:
                    for t in known:
                        self.stop_tensor(t, f"the shared {where} is also called on a tensor "
                                            "whose channels cannot follow")
                    continue
                for t in known[1:]:
                    self.tie(self.ids(known[0]), self.ids(t))


def _components(n: int, u: IntArray, v: IntArray) -> IntArray:
    """Connected components of ``n`` elements joined by edges ``u[k] -- v[k]``.

    Each element's label is the smallest element of its component. Vectorised union-find:
    hook every edge's larger root under the smaller one, then compress every path fully;
    repeat until no edge joins two roots. Each round is linear in ``n`` and the edges, and the
    labels only decrease, so it ends.
    """
    parent = np.arange(n, dtype=np.int64)
    while u.size:
        pu, pv = parent[u], parent[v]
        differ = pu != pv
        if not differ.any():
            break
        u, v, pu, pv = u[differ], v[differ], pu[differ], pv[differ]
        np.minimum.at(parent, np.maximum(pu, pv), np.minimum(pu, pv))
        while True:
            up = parent[parent]
            if np.array_equal(up, parent):
                break
            parent = up
    return parent


def analyze_channels(graph: Graph, *, allow_output_change: bool = False,
                     rules: RuleSet | None = None) -> ChannelAnalysis:
    """Compute the channel analysis of ``graph``: axes, slots and coupled groups.

    Parameters
    ----------
    graph
        The network.
    allow_output_change
        Count slots that reach a model output (or couple a softmax's units) as deletable,
        as :func:`~kerasprune.core.surgery.dependency_group` does with the same flag.
    rules
        The rules of the layer kinds; :data:`~kerasprune.core.rules.RULES` by default.

    Returns
    -------
    ChannelAnalysis
        Frozen; compute it once per graph and share it.

    Notes
    -----
    Cost: one call of each node's rule, then array work linear in the number of
    ``(tensor, channel)`` pairs (the union-find takes a few rounds, each linear).
    """
    rules = RULES if rules is None else rules
    builder = _Builder(graph, allow_output_change, rules)
    builder.run()
    n = builder.n
    u = np.concatenate(builder.u) if builder.u else np.zeros(0, dtype=np.int64)
    v = np.concatenate(builder.v) if builder.v else np.zeros(0, dtype=np.int64)
    root = _components(n, u, v)
    comp_block = np.full(n, _FREE, dtype=np.int64)
    np.minimum.at(comp_block, root, builder.block)

    # Anchors: the output channels of every layer with neurons that can be followed.
    members: list[tuple[str, IntArray]] = []
    unprunable: dict[str, str] = {}
    for name, spec in graph.layers.items():
        calls = graph.calls(name)
        if not rules.rule_for(spec.kind).targetable:
            continue
        if not calls:
            unprunable[name] = "it is never called"
            continue
        t = calls[0].outputs[0] if calls[0].outputs else None
        if t is None or t not in builder.start:
            unprunable[name] = "it has no output" if t is None else builder.why_no_axis.get(
                t, "its output has no channel axis")
            continue
        members.append((name, root[builder.ids(t)]))
    # Groups: components tied by a member (all of a member's neurons are in one group).
    if members:
        comps = np.concatenate([r for _, r in members])
        firsts = np.concatenate([np.full(r.size, r[0]) for _, r in members])
    else:
        comps = firsts = np.zeros(0, dtype=np.int64)
    label = _components(n, comps, firsts)[root]  # per element: its group's label
    by_label: dict[int, list[tuple[str, IntArray]]] = {}
    for name, comp in members:
        by_label.setdefault(int(label[comp[0]]), []).append((name, comp))
    label_group = np.full(n, -1, dtype=np.int64)
    label_group[list(by_label)] = np.arange(len(by_label))
    element_group = label_group[label] if n else np.zeros(0, dtype=np.int64)
    order = np.argsort(element_group, kind="stable")
    counts = np.bincount(element_group + 1, minlength=len(by_label) + 1)
    per_group = np.split(order, np.cumsum(counts)[:-1])[1:]  # sorted element ids per group

    tensor_of = np.zeros(n, dtype=np.int64)
    channel_of = np.zeros(n, dtype=np.int64)
    for t, s in builder.start.items():
        tensor_of[s:s + builder.size[t]] = t
        channel_of[s:s + builder.size[t]] = np.arange(builder.size[t])
    reason_text = {code: text for text, code in builder.reasons.items()}
    groups: list[ChannelGroup] = []
    element_slot = np.full(n, -1, dtype=np.int64)
    comp_slot = np.full(n, -1, dtype=np.int64)
    offset = 0
    for group_members, mine in zip(by_label.values(), per_group, strict=True):
        all_comps = np.concatenate([c for _, c in group_members])
        unique, first = np.unique(all_comps, return_index=True)
        ordered = unique[np.argsort(first, kind="stable")]
        width = int(ordered.size)
        comp_slot[ordered] = np.arange(width) + offset
        codes = comp_block[ordered]
        blocked = codes != _FREE
        reasons = {reason_text[int(c)]: _frozen(np.flatnonzero(codes == c))
                   for c in np.unique(codes[blocked])}
        element_slot[mine] = comp_slot[root[mine]]
        groups.append(ChannelGroup(
            index=len(groups), offset=offset, width=width,
            members=tuple(Member(name, _frozen(comp_slot[c] - offset))
                          for name, c in group_members),
            blocked=_read_only(blocked), reasons=reasons,
            elements=_by_tensor(tensor_of[mine], channel_of[mine], element_slot[mine] - offset)))
        offset += width
    for group in _part_groups(graph, rules, len(groups), offset):  # attention heads
        groups.append(group)
    return ChannelAnalysis(
        graph=graph, allow_output_change=allow_output_change, axes=builder.axes,
        why_no_axis={t: w for t, w in builder.why_no_axis.items() if builder.axes.get(t) is None},
        groups=tuple(groups), unprunable=unprunable, links=builder.links,
        group_index={m.layer: g.index for g in groups for m in g.members},
        element_tensor=_frozen(tensor_of), element_channel=_frozen(channel_of),
        element_slot=_frozen(element_slot), tensor_start=dict(builder.start), rules=rules)


PART_GROUPS: Final = ("heads",)
"""The parts of layers (:meth:`~kerasprune.core.rules.Rule.parts`) that are groups of their
own: an attention layer's heads, each a slot, scored and planned like neurons."""


def part_name(layer: str, part: str) -> str:
    """How a request and a group member name a part: ``"layer:part"``."""
    return f"{layer}:{part}"


def split_part(name: str) -> tuple[str, str | None]:
    """``"layer:part"`` -> ``(layer, part)``; a plain layer name -> ``(name, None)``."""
    layer, sep, part = name.rpartition(":")
    return (layer, part) if sep and part in PART_GROUPS else (name, None)


def _part_groups(graph: Graph, rules: RuleSet, index: int,
                 offset: int) -> list[ChannelGroup]:
    """A group of each layer's :data:`PART_GROUPS` (its heads): one member, ``layer:heads``,
    a slot per head, no tensor (a head deletion changes weights only)."""
    out: list[ChannelGroup] = []
    for name, spec in graph.layers.items():
        calls = graph.calls(name)
        rule = rules.rule_for(spec.kind)
        if not calls:
            continue
        for part, count in rule.parts(spec).items():
            if part not in PART_GROUPS or count < 2:
                continue
            why = rule.why_not_part(spec, part, [graph.shapes[t] for t in calls[0].outputs])
            slots = np.arange(count)
            out.append(ChannelGroup(
                index=index + len(out), offset=offset, width=count,
                members=(Member(part_name(name, part), _frozen(slots)),),
                blocked=_read_only(np.full(count, why is not None)),
                reasons={why: _frozen(slots)} if why else {}, elements={}))
            offset += count
    return out


def _read_only(mask: BoolArray) -> BoolArray:
    out: BoolArray = mask.copy()
    out.flags.writeable = False
    return out


def _by_tensor(tensors: IntArray, channels: IntArray,
               slots: IntArray) -> dict[int, tuple[IntArray, IntArray]]:
    """Elements (sorted by tensor) split by tensor: ``{tensor: (channels, slots)}``."""
    cuts = np.flatnonzero(np.diff(tensors)) + 1
    return {int(t[0]): (_frozen(c), _frozen(s)) for t, c, s in
            zip(np.split(tensors, cuts), np.split(channels, cuts), np.split(slots, cuts),
                strict=True) if t.size}
