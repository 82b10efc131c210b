"""Planning a pruning to a target: which slots of which groups go, with exact costs.

:func:`plan_pruning` ranks the deletable slots of every coupled group
(:mod:`kerasprune.core.groups`) by their scores (:mod:`kerasprune.core.scores`), within the
limits the caller sets, and finds the shortest prefix of that ranking that meets the target
(:mod:`kerasprune.core.targets`). Nothing is built: the result, a :class:`Plan`, says what would
go (per layer and per group), the params and FLOPs before and after, and holds the request
``{layer: indices}`` that :func:`~kerasprune.core.surgery.delete_neurons` takes.

How the ranking is made:

- **Units.** A group's deletable slots are taken lowest score first. A slot is skipped when
  taking it would break a limit of a member (``min_width``, ``max_fraction``, never every
  neuron), when it is blocked (reaching a model input or output, a layer normalization...), or
  when it has no score. With ``round_to=r`` a group keeps a multiple of ``r`` slots: its first
  unit takes ``width % r`` slots and each next unit ``r``; a group narrower than ``r`` is left
  alone. Otherwise each slot is a unit. A group of a grouped convolution's filters, whose
  groups keep one size, loses one filter of every group at a time (the lowest-scored left in
  each: :meth:`~kerasprune.core.rules.Rule.neuron_blocks`), and its units are multiples of
  that many slots (of ``lcm(groups, r)`` with ``round_to``).
- **Order.** ``scope="global"`` (default) ranks the units of all groups together by their
  mean score; ``scope="uniform"`` takes the same fraction of every group (units ordered by the
  fraction of their group deleted once they go). Either way each group's units stay in order,
  so every prefix of the ranking is a valid plan.
- **Search.** Costs are exact: a candidate prefix is applied (:func:`~kerasprune.core.
  surgery.apply_deletion`) to a shape-only copy of the graph (:func:`shapes_only`: weights
  replaced by :class:`ShapeOnly` stand-ins, so nothing is copied) and counted
  (:func:`~kerasprune.core.cost.count`). Deleting more never costs more, so a binary search
  over the prefix length finds the shortest prefix that meets the target, in about
  ``log2(units)`` evaluations: the plan's cost is at most the target, and would be above it
  without its last unit (one neuron's worth, or ``round_to`` slots').
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import numpy.typing as npt

from kerasprune.core.checks import as_int, as_real
from kerasprune.core.cost import LayerCost, compare, count, total
from kerasprune.core.criteria import Criterion, Stats, check_stats, criterion_for, layer_scores
from kerasprune.core.graph import Graph, PruneError
from kerasprune.core.groups import ChannelAnalysis, ChannelGroup, analyze_channels, split_part
from kerasprune.core.rules import RuleSet
from kerasprune.core.scores import AGGREGATES, NORMALIZATIONS, GroupScores, score_groups
from kerasprune.core.surgery import Deletion, apply_deletion
from kerasprune.core.targets import Target

__all__ = [
    "SCOPES",
    "GroupPlan",
    "LayerPlan",
    "Plan",
    "PlanError",
    "ShapeOnly",
    "cut_group",
    "plan_pruning",
    "shape_take",
    "shapes_only",
]

IntArray = npt.NDArray[np.int64]
FloatArray = npt.NDArray[np.float64]

SCOPES = ("global", "uniform")
"""How units are ranked: across all groups by score, or the same fraction of every group."""


# --------------------------------------------------------------------------------------------
# Shape-only graphs
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ShapeOnly:
    """A weight's stand-in that has only a shape: costs need nothing else."""

    shape: tuple[int, ...]

    @property
    def ndim(self) -> int:
        return len(self.shape)


def shape_take(array: Any, indices: np.ndarray, axis: int) -> ShapeOnly:
    """:data:`~kerasprune.core.surgery.Take` for shape-only weights: the shape after taking
    ``indices`` along ``axis``."""
    shape = [int(d) for d in array.shape]
    shape[axis] = len(indices)
    return ShapeOnly(tuple(shape))


def shapes_only(graph: Graph) -> Graph:
    """``graph`` with every weight replaced by a :class:`ShapeOnly` (nothing is copied)."""
    layers = {name: replace(spec, weights={k: ShapeOnly(tuple(int(d) for d in w.shape))
                                          for k, w in spec.weights.items()})
              for name, spec in graph.layers.items()}
    return replace(graph, layers=layers)


# --------------------------------------------------------------------------------------------
# Results
# --------------------------------------------------------------------------------------------


class PlanError(PruneError):
    """A target that cannot be met within the limits; :attr:`plan` is the closest plan."""

    def __init__(self, message: str, plan: Plan) -> None:
        super().__init__(message)
        self.plan = plan


@dataclass(frozen=True, eq=False)
class LayerPlan:
    """What a plan does to one layer."""

    name: str
    kind: str
    width_before: int | None
    width_after: int | None
    deleted: IntArray
    params_before: int
    params_after: int
    flops_before: int
    flops_after: int


@dataclass(frozen=True, eq=False)
class GroupPlan:
    """What a plan does to one group: the slots that go, and what stopped it (if anything)."""

    index: int
    layers: tuple[str, ...]
    width_before: int
    width_after: int
    deleted: IntArray
    limit: str


@dataclass(frozen=True, eq=False)
class Plan:
    """A dry run: what pruning to a target deletes, and the costs before and after.

    Parameters
    ----------
    target
        The target planned for.
    original, limit, achieved
        The target's measure of the original graph, the most it allows, and the plan's.
    met
        ``achieved <= limit``.
    params, flops
        ``(before, after)`` totals.
    layers
        Every layer with neurons or weights whose size changes, in graph order.
    groups
        Every group, with the slots that go and what stopped it.
    request
        ``{layer: neuron indices}`` for :func:`~kerasprune.core.surgery.delete_neurons`
        (every member of every group that loses slots).
    deletion
        The same deletion on the original graph, for
        :func:`~kerasprune.core.surgery.apply_deletion`.
    costs_before, costs_after
        :func:`~kerasprune.core.cost.count` of the graph before and after.
    why
        What bound the plan: the limits that stopped groups, when the target is not met.
    settings
        The planner's settings, for the record.
    ranking
        Every unit the limits let go, in the order they go: ``(group index, slots)``.
    taken
        How many units of the ranking the plan deletes (a prefix).
    """

    target: Target
    original: float
    limit: float
    achieved: float
    met: bool
    params: tuple[int, int]
    flops: tuple[int, int]
    layers: tuple[LayerPlan, ...]
    groups: tuple[GroupPlan, ...]
    request: Mapping[str, IntArray]
    deletion: Deletion
    costs_before: tuple[LayerCost, ...]
    costs_after: tuple[LayerCost, ...]
    why: str
    settings: Mapping[str, Any]
    ranking: tuple[tuple[int, IntArray], ...]
    taken: int

    def table(self) -> str:
        """The plan as text: a header, the per-layer table, and the groups."""
        share = _share(self.achieved, self.original)
        head = [f"target: {self.target.describe(self.original)}: "
                + (f"met ({share} of the original)" if self.met else f"NOT met, reached {share}")]
        head.append("settings: " + ", ".join(f"{k}={v}" for k, v in self.settings.items()))
        lines = [*head, "", compare(self.costs_before, self.costs_after)]
        cut = [g for g in self.groups if g.deleted.size and len(g.layers) > 1]
        if cut:
            lines += ["", "coupled groups cut together:"]
            lines += [f"  {', '.join(g.layers)}: {g.width_before} -> {g.width_after}"
                      for g in cut]
        stopped = [g for g in self.groups if g.limit]
        if stopped:
            lines += ["", "limits:"]
            lines += [f"  {', '.join(g.layers)} ({g.width_before} -> {g.width_after}): "
                      f"{g.limit}" for g in stopped]
        if self.why:
            lines += ["", self.why]
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.table()


# --------------------------------------------------------------------------------------------
# Checking the arguments
# --------------------------------------------------------------------------------------------


def _positive_int(name: str, value: Any) -> int:
    return as_int(name, value, minimum=1)


def _fraction(name: str, value: Any) -> float:
    out = as_real(name, value)
    if not 0 < out <= 1:
        raise ValueError(f"{name} must be in (0, 1] (the share of a layer's neurons that may "
                         f"go), got {value!r}")
    return out


def _per_layer(name: str, value: Any, check: Any, default: Any,
               graph: Graph) -> tuple[Any, dict[str, Any]]:
    """A setting given for every layer or as ``{layer: value}`` (others get ``default``)."""
    if isinstance(value, Mapping):
        for layer in value:
            _known_layer(graph, layer, name)
        return default, {layer: check(f"{name}[{layer!r}]", v) for layer, v in value.items()}
    return check(name, value), {}


def _known_layer(graph: Graph, layer: Any, argument: str) -> None:
    if not isinstance(layer, str) or layer not in graph.layers:
        close = difflib.get_close_matches(str(layer), list(graph.layers), n=3)
        hint = f"; did you mean {', '.join(repr(c) for c in close)}?" if close else ""
        raise PruneError(f"{argument} names {layer!r}, which is not a layer of the model{hint}")


@dataclass(frozen=True)
class _Limits:
    round_to: int
    min_width: int
    min_widths: Mapping[str, int]
    max_fraction: float
    max_fractions: Mapping[str, float]
    protect: frozenset[str]

    def cap(self, layer: str, width: int) -> tuple[int, str]:
        """How many of ``layer``'s ``width`` neurons may go, and which limit says so."""
        low = self.min_widths.get(layer, self.min_width)
        share = self.max_fractions.get(layer, self.max_fraction)
        by_share = math.floor(share * width + 1e-9)
        options = [(width - 1, "never every neuron"), (width - low, f"min_width={low}"),
                   (by_share, f"max_fraction={share:g}")]
        most, why = min(options, key=lambda o: o[0])
        return max(most, 0), why


# --------------------------------------------------------------------------------------------
# Units
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _GroupUnits:
    units: list[IntArray]
    limit: str


def _slot_blocks(group: ChannelGroup, analysis: ChannelAnalysis) -> IntArray | str | None:
    """The block of each slot of a group whose member's neurons come in equal blocks (a
    grouped convolution's groups, :meth:`~kerasprune.core.rules.Rule.neuron_blocks`): a
    unit takes one slot of every block. ``None`` when no slot is bound (no such member, or
    each slot takes evenly from every block); why the group cannot be balanced otherwise."""
    found: IntArray | None = None
    for m in group.members:
        if split_part(m.layer)[1] is not None:  # an attention layer's heads: no blocks
            continue
        spec = analysis.graph.layers[m.layer]
        n = analysis.rules.rule_for(spec.kind).neuron_blocks(spec)
        if n <= 1:
            continue
        counts = np.zeros((group.width, n), dtype=np.int64)
        np.add.at(counts, (m.slots, np.arange(m.width) // (m.width // n)), 1)
        if (counts == counts[:, :1]).all():
            continue
        if not (counts.sum(axis=1) == 1).all():
            return f"the groups of '{m.layer}' cannot be balanced slot by slot"
        blocks = counts.argmax(axis=1).astype(np.int64)
        if found is not None:  # keep the finer blocks, if they split the coarser evenly
            pairs = np.unique(found * n + blocks).size
            if pairs != max(np.unique(found).size, n):
                return f"the groups of '{m.layer}' and of another member do not nest"
            blocks = blocks if n >= np.unique(found).size else found
        found = blocks
    return found


def _group_units(group: ChannelGroup, scores: FloatArray | None, unscored: str | None,
                 limits: _Limits, graph: Graph, axes: Mapping[int, int | None],
                 blocks: IntArray | str | None = None) -> _GroupUnits:
    """The units a group can lose, lowest score first, and what stops it going further;
    with ``blocks`` (:func:`_slot_blocks`) each unit takes as many slots from every block."""
    protected = [m.layer for m in group.members if m.layer in limits.protect]
    if protected:
        return _GroupUnits([], f"protected ({', '.join(protected)})")
    if not group.prunable:
        return _GroupUnits([], f"blocked: {group.why_not}")
    if scores is None:
        return _GroupUnits([], f"not scored: {unscored}")
    if isinstance(blocks, str):
        return _GroupUnits([], blocks)
    r = limits.round_to
    if group.width < r:
        return _GroupUnits([], f"narrower than round_to={r}")
    candidates = np.flatnonzero(~group.blocked & ~np.isnan(scores))
    order = candidates[np.argsort(scores[candidates], kind="stable")]
    if blocks is None:  # atoms: what goes at once (one slot, or one of every block)
        atoms = order[:, None]
    else:
        per_block = [order[blocks[order] == b] for b in range(int(blocks.max()) + 1)]
        depth = min(p.size for p in per_block)
        atoms = np.stack([p[:depth] for p in per_block], axis=1)
    # Rows: members, then tensors held wholly by this group (never emptied).
    rows, caps, whys = [], [], []
    for m in group.members:
        most, why = limits.cap(m.layer, m.width)
        rows.append(np.bincount(m.slots, minlength=group.width))
        caps.append(most)
        whys.append(f"'{m.layer}' at {why}")
    for t, (channels, slots) in group.elements.items():
        axis = axes[t]
        size = graph.shapes[t][axis] if axis is not None else 0
        if channels.size == size:
            rows.append(np.bincount(slots, minlength=group.width))
            caps.append(size - 1)
            maker = graph.producers[t].layer if t in graph.producers else f"tensor {t}"
            whys.append(f"the output of '{maker}' would be empty")
    counts = np.vstack(rows)[:, atoms].sum(axis=2)
    cap = np.asarray(caps)
    fits = (np.cumsum(counts, axis=1) <= cap[:, None]).all(axis=0)
    stop = ""
    if fits.all():
        taken = atoms
    else:  # take greedily, skipping atoms that would break a limit
        used = np.zeros_like(cap)
        keep: list[int] = []
        for position in range(len(atoms)):
            after = used + counts[:, position]
            over = np.flatnonzero(after > cap)
            if over.size:
                stop = stop or whys[int(over[0])]
                continue
            used = after
            keep.append(position)
        taken = atoms[np.asarray(keep, dtype=np.int64)]
    if not stop:  # every candidate fits: say which limit the last one reaches, if any
        used = counts.sum(axis=1)
        at = np.flatnonzero(used == cap)
        stop = whys[int(at[0])] if at.size else ""
    size = atoms.shape[1]  # slots per atom; a unit keeps the width a multiple of round_to
    step = math.lcm(size, r) // size
    first = group.width % (step * size) // size
    if len(taken) < first:
        return _GroupUnits([], stop or f"round_to={r} needs {first * size} slots to go first")
    units = [taken[:first].reshape(-1)] if first else []
    whole = (len(taken) - first) // step
    units += [taken[first + i * step:first + (i + 1) * step].reshape(-1) for i in range(whole)]
    notes = [stop] if stop else []
    spare = (len(taken) - first - whole * step) * size
    if spare:
        notes.append(f"round_to={r} keeps {spare} more")
    blocked = int(group.blocked.sum())
    if blocked:
        notes.append(f"{blocked} slot{'s' if blocked > 1 else ''} blocked: "
                     + "; ".join(group.reasons))
    if candidates.size < group.width - blocked:
        notes.append("slots without a score")
    return _GroupUnits(units, "; ".join(notes))


# --------------------------------------------------------------------------------------------
# The planner
# --------------------------------------------------------------------------------------------


def plan_pruning(
    graph: Graph | ChannelAnalysis,
    target: Target,
    criterion: str | Criterion = "l1",
    stats: Stats | None = None,
    *,
    scores: GroupScores | None = None,
    scope: str = "global",
    aggregate: str = "sum",
    normalize: str = "mean",
    round_to: int = 1,
    min_width: int | Mapping[str, int] = 1,
    max_fraction: float | Mapping[str, float] = 1.0,
    protect: Iterable[str] | None = None,
    allow_output_change: bool = False,
    strict: bool = True,
    rules: RuleSet | None = None,
) -> Plan:
    """Plan the pruning of ``graph`` down to ``target``, without building anything.

    Parameters
    ----------
    graph
        The network, or its :func:`~kerasprune.core.groups.analyze_channels` (reused).
    target
        A :class:`~kerasprune.core.targets.Target`: ``Flops(keep=0.5)``,
        ``Params(at_most=1e6)``, ``Cost(fn=..., keep=0.5)``...
    criterion
        A name in :data:`~kerasprune.core.criteria.CRITERIA` or a
        :class:`~kerasprune.core.criteria.Criterion`; ignored when ``scores`` is given.
    stats
        ``{layer: statistics}`` for criteria that need data.
    scores
        Group scores made beforehand (:func:`~kerasprune.core.scores.score_groups`).
    scope
        ``"global"``: rank every group's slots together (default); ``"uniform"``: take the
        same fraction of every group.
    aggregate, normalize
        How members' scores combine and are made comparable
        (:func:`~kerasprune.core.scores.score_groups`).
    round_to
        Keep a multiple of this many slots in every group that loses any (8 suits vector
        units); groups narrower than it are left alone.
    min_width
        The fewest neurons a layer keeps, for every layer or ``{layer: width}`` (others 1).
    max_fraction
        The largest share of a layer's neurons that may go, in (0, 1], for every layer or
        ``{layer: share}`` (others 1). A layer never loses every neuron.
    protect
        Layers none of whose neurons may go (nor any slot coupled to them). ``None``: the
        layers that write a model output.
    allow_output_change
        Let slots reaching a model output go (only if not protected).
    strict
        Raise :class:`PlanError` when the target cannot be met; otherwise return the closest
        plan with ``met=False``.
    rules
        The rules of the layer kinds, for a graph (an analysis carries its own);
        :data:`~kerasprune.core.rules.RULES` by default.

    Returns
    -------
    Plan
        Meets the target with the fewest units of the ranking.

    Raises
    ------
    ValueError, TypeError
        Bad arguments: an unknown criterion, scope, aggregate or normalize (the valid ones
        listed), a target that is not a Target, ``round_to`` or ``min_width`` below 1,
        ``max_fraction`` outside (0, 1], missing statistics; all before any work.
    PruneError
        A setting names a layer the model does not have.
    PlanError
        The target cannot be met within the limits; the message says how close the plan
        got and which limits bind, and ``err.plan`` is that plan.
    """
    if not isinstance(target, Target):
        raise TypeError(f"target must be a Target (Params, Flops, Cost: see "
                        f"kerasprune.core.targets), got {target!r}")
    chosen = criterion_for(criterion) if scores is None else None
    if scope not in SCOPES:
        raise ValueError(f"unknown scope {scope!r}; valid: {', '.join(map(repr, SCOPES))}")
    if aggregate not in AGGREGATES:
        raise ValueError(f"unknown aggregate {aggregate!r}; valid: "
                         f"{', '.join(map(repr, AGGREGATES))}")
    if normalize not in NORMALIZATIONS:
        raise ValueError(f"unknown normalize {normalize!r}; valid: "
                         f"{', '.join(map(repr, NORMALIZATIONS))}")
    r = _positive_int("round_to", round_to)
    base = graph.graph if isinstance(graph, ChannelAnalysis) else graph
    low, lows = _per_layer("min_width", min_width, _positive_int, 1, base)
    share, shares = _per_layer("max_fraction", max_fraction, _fraction, 1.0, base)
    if isinstance(protect, str):
        raise TypeError("protect takes layer names (a list), not one string")
    for layer in protect or ():
        _known_layer(base, layer, "protect")
    if isinstance(graph, ChannelAnalysis):
        if graph.allow_output_change != allow_output_change:
            raise ValueError(f"the analysis was made with allow_output_change="
                             f"{graph.allow_output_change}, but allow_output_change="
                             f"{allow_output_change} was passed")
        analysis = graph
    else:
        analysis = analyze_channels(graph, allow_output_change=allow_output_change, rules=rules)
    if chosen is not None:
        check_stats(chosen, stats, analysis)
    for layer in protect or ():
        if layer not in analysis.group_index and layer not in analysis.unprunable:
            raise PruneError(f"protect names '{layer}' ({base.layers[layer].kind}), which has "
                             "no neurons; name the layers whose neurons must stay")
    outputs = set(base.outputs)
    protected = frozenset(protect) if protect is not None else frozenset(
        m.layer for g in analysis.groups if outputs.intersection(g.elements) for m in g.members)
    limits = _Limits(r, low, lows, share, shares, protected)

    if scores is None:
        assert chosen is not None
        scores = score_groups(analysis, layer_scores(analysis, chosen, stats),
                              aggregate=aggregate, normalize=normalize)
    units = [_group_units(g, scores.scores.get(g.index), scores.unscored.get(g.index), limits,
                          base, analysis.axes, _slot_blocks(g, analysis))
             for g in analysis.groups]
    rank, ranking = _rank(analysis, units, scores, scope)
    search = _Search(analysis, target, rank)
    total_units = len(ranking)
    original = search.measure(0)[0]
    limit = target.limit(original)
    most = search.measure(total_units)[0]
    if most > limit:
        k = total_units
    else:
        lo, hi = 0, total_units  # measure(hi) <= limit; find the smallest such prefix
        while lo < hi:
            mid = (lo + hi) // 2
            if search.measure(mid)[0] <= limit:
                hi = mid
            else:
                lo = mid + 1
        k = hi
    settings = {"criterion": scores.criterion, "scope": scope, "aggregate": scores.aggregate,
                "normalize": scores.normalize, "round_to": r, "min_width": min_width,
                "max_fraction": max_fraction, "protect": sorted(protected)}
    result = _plan(analysis, search, target, ranking, k, units, original, limit, settings)
    if not result.met and strict:
        raise PlanError(result.why, result)
    return result


def cut_group(analysis: ChannelAnalysis, group: int | str, fraction: float,
              scores: GroupScores, *, round_to: int = 1) -> dict[str, IntArray]:
    """The request deleting about ``fraction`` of one group's slots, lowest scores first.

    For sensitivity analysis: how much does a model lose when 10%, 20%... of one group goes?
    Blocked and unscored slots stay, the group never loses every slot, and with ``round_to``
    the group keeps a multiple of it (as in :func:`plan_pruning`); so the request may delete
    fewer slots than asked, never more.

    Parameters
    ----------
    analysis
        The graph's channel analysis.
    group
        A group index, or the name of one of its members.
    fraction
        Share of the group's slots to delete, in ``[0, 1]`` (rounded down).
    scores
        Group scores (:func:`~kerasprune.core.scores.score_groups`).
    round_to
        As in :func:`plan_pruning`.

    Returns
    -------
    dict
        ``{layer: neuron indices}`` for :func:`~kerasprune.core.surgery.delete_neurons`;
        empty when nothing can go.

    Raises
    ------
    ValueError, TypeError
        A ``fraction`` outside ``[0, 1]`` or a bad ``round_to``.
    PruneError
        An unknown layer or group index.
    """
    if not 0 <= as_real("fraction", fraction) <= 1:
        raise ValueError(f"fraction must be in [0, 1], got {fraction!r}")
    r = _positive_int("round_to", round_to)
    if isinstance(group, str):
        chosen = analysis.group_of(group)
    elif not 0 <= group < len(analysis.groups):
        raise PruneError(f"no group {group!r}: the graph has {len(analysis.groups)}")
    else:
        chosen = analysis.groups[group]
    limits = _Limits(r, 1, {}, 1.0, {}, frozenset())
    found = _group_units(chosen, scores.scores.get(chosen.index),
                         scores.unscored.get(chosen.index), limits, analysis.graph,
                         analysis.axes, _slot_blocks(chosen, analysis))
    wanted = math.floor(fraction * chosen.width + 1e-9)
    taken: list[IntArray] = []
    for unit in found.units:
        if sum(u.size for u in taken) + unit.size > wanted:
            break
        taken.append(unit)
    return chosen.request(np.concatenate(taken).tolist()) if taken else {}


def _rank(analysis: ChannelAnalysis, units: Sequence[_GroupUnits], scores: GroupScores,
          scope: str) -> tuple[IntArray, tuple[tuple[int, IntArray], ...]]:
    """The position in the ranking of each slot's unit (int64 max for slots that stay), and
    the ranking: ``(group index, slots)`` of each unit in order."""
    keys, groups, positions, chunks, sizes = [], [], [], [], []
    for g, found in zip(analysis.groups, units, strict=True):
        if not found.units:
            continue
        taken = np.concatenate(found.units)
        size = np.array([u.size for u in found.units], dtype=np.int64)
        if scope == "global":
            values = scores.scores[g.index]
            starts = np.concatenate([[0], np.cumsum(size)[:-1]])
            keys.append(np.add.reduceat(values[taken], starts) / size)
        else:
            keys.append(np.cumsum(size) / g.width)
        groups.append(np.full(size.size, g.index, dtype=np.int64))
        positions.append(np.arange(size.size))
        chunks.append(g.offset + taken)
        sizes.append(size)
    rank = np.full(analysis.slots, np.iinfo(np.int64).max, dtype=np.int64)
    if not keys:
        return rank, ()
    group_of = np.concatenate(groups)
    order = np.lexsort((np.concatenate(positions), group_of, np.concatenate(keys)))
    place = np.empty(order.size, dtype=np.int64)
    place[order] = np.arange(order.size)
    unit_size = np.concatenate(sizes)
    slots = np.concatenate(chunks)
    rank[slots] = np.repeat(place, unit_size)
    offsets = np.array([g.offset for g in analysis.groups], dtype=np.int64)
    local = np.split(slots - np.repeat(offsets[group_of], unit_size), np.cumsum(unit_size)[:-1])
    ranking = []
    for unit in order.tolist():
        local[unit].flags.writeable = False
        ranking.append((int(group_of[unit]), local[unit]))
    return rank, tuple(ranking)


class _Search:
    """Measures prefixes of the ranking on a shape-only copy of the graph, memoised."""

    def __init__(self, analysis: ChannelAnalysis, target: Target, rank: IntArray) -> None:
        self.analysis = analysis
        self.target = target
        self.rank = rank
        self.shapes = shapes_only(analysis.graph)
        self.memo: dict[int, tuple[float, list[LayerCost]]] = {}

    def measure(self, k: int) -> tuple[float, list[LayerCost]]:
        if k not in self.memo:
            deletion = self.analysis.deletion(self.rank < k, graph=self.shapes)
            graph = apply_deletion(deletion, take=shape_take)
            costs = count(graph, rules=self.analysis.rules)
            self.memo[k] = (self.target.measure(graph, costs), costs)
        return self.memo[k]


def _plan(analysis: ChannelAnalysis, search: _Search, target: Target,
          ranking: tuple[tuple[int, IntArray], ...], k: int, units: Sequence[_GroupUnits],
          original: float, limit: float, settings: Mapping[str, Any]) -> Plan:
    rank = search.rank
    mask = rank < k
    achieved, after = search.measure(k)
    before = search.measure(0)[1]
    met = achieved <= limit
    groups = []
    for g, found in zip(analysis.groups, units, strict=True):
        gone = np.flatnonzero(mask[g.offset:g.offset + g.width])
        gone.flags.writeable = False
        # A limit binds when the group lost every unit it could (or had none to lose).
        spent = not found.units or int(rank[g.offset + found.units[-1][0]]) < k
        groups.append(GroupPlan(g.index, g.layers, g.width, g.width - gone.size, gone,
                                found.limit if spent else ""))
    request = analysis.request(mask)
    after_by = {c.name: c for c in after}
    layers = []
    for c in before:
        a = after_by[c.name]
        deleted = request.get(c.name, np.zeros(0, dtype=np.int64))
        if deleted.size or (c.params, c.flops, c.width) != (a.params, a.flops, a.width):
            layers.append(LayerPlan(c.name, c.kind, c.width, a.width, deleted, c.params,
                                    a.params, c.flops, a.flops))
    why = "" if met else _why(target, original, achieved, groups, analysis.unprunable)
    (pb, fb), (pa, fa) = total(before), total(after)
    return Plan(target=target, original=original, limit=limit, achieved=achieved, met=met,
                params=(pb, pa), flops=(fb, fa), layers=tuple(layers), groups=tuple(groups),
                request=request, deletion=analysis.deletion(mask),
                costs_before=tuple(before), costs_after=tuple(after), why=why,
                settings=dict(settings), ranking=ranking, taken=k)


def _share(part: float, whole: float) -> str:
    return f"{part / whole:.1%}" if whole else "n/a"


def _why(target: Target, original: float, achieved: float, groups: Sequence[GroupPlan],
         unprunable: Mapping[str, str]) -> str:
    by_reason: dict[str, list[str]] = {}
    for g in groups:
        if g.limit:
            by_reason.setdefault(g.limit, []).append(
                f"{'+'.join(g.layers)} ({g.width_before} -> {g.width_after})")
    for layer, reason in unprunable.items():
        by_reason.setdefault(f"cannot lose neurons: {reason}", []).append(layer)
    if not by_reason:
        by_reason["the model has no layer whose neurons can be deleted"] = []
    lines = [f"cannot meet the target {target.describe(original)}: the most these limits "
             f"allow leaves {target.format(achieved)} ({_share(achieved, original)} of the "
             "original). "
             "What binds:"]
    for reason, names in sorted(by_reason.items(), key=lambda item: -len(item[1])):
        shown = ", ".join(names[:6]) + (f" and {len(names) - 6} more" if len(names) > 6 else "")
        lines.append(f"- {reason}: {shown}" if shown else f"- {reason}")
    lines.append("Loosen min_width, max_fraction, protect or round_to, or aim higher.")
    return "\n".join(lines)
