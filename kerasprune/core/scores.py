"""Scores of coupled groups' slots, from the scores of their members' neurons.

A slot of a :class:`~kerasprune.core.groups.ChannelGroup` goes as a whole: every member loses
its neurons in it. Its score combines the members':

1. **Normalise per layer** (:data:`NORMALIZATIONS`), so that scores of different layers can
   be ranked together: a filter of a 3x3x512 kernel has a larger L1 norm than one of a
   3x3x3 kernel, whatever either is worth. The default, ``"mean"``, divides each layer's
   scores by their mean, so the average neuron of every layer scores 1 (Torch-Pruning's
   default too); ``"l2"`` is the normalisation Molchanov et al. 2017 use for Taylor scores.
2. **A member's score of a slot** is the mean of its neurons in the slot (one neuron for most
   layers; a depthwise convolution with ``depth_multiplier`` m has m).
3. **Aggregate over members** (:data:`AGGREGATES`). The default is ``"sum"``: deleting the
   slot deletes every member's neurons, so the importance lost is the total; for the
   first-order Taylor criterion it is the estimate of the whole slot's loss change, as
   Molchanov et al. 2019 ("Importance Estimation for Neural Network Pruning", CVPR) sum the
   contributions of a group's parameters. ``"mean"`` ranks a slot shared by several layers
   like a lone layer's, ``"max"`` keeps a slot that any member needs.

Members the criterion could not score are left out of the aggregate; a slot none of whose
members is scored has score NaN, and a group without any scored member is unscored (the
planner leaves both alone and says why).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from kerasprune.core.criteria import LayerScores
from kerasprune.core.groups import ChannelAnalysis

__all__ = ["AGGREGATES", "NORMALIZATIONS", "GroupScores", "normalize_scores", "score_groups"]

FloatArray = npt.NDArray[np.float64]


def _divide(values: FloatArray, by: float) -> FloatArray:
    return values / by if by > 0 else values.copy()


NORMALIZATIONS: dict[str, Callable[[FloatArray], FloatArray]] = {
    "none": lambda v: v.copy(),
    "mean": lambda v: _divide(v, float(v.mean())),
    "max": lambda v: _divide(v, float(v.max())),
    "l2": lambda v: _divide(v, float(np.sqrt(np.square(v).sum()))),
}
"""Per-layer normalisations, by name: each maps one layer's scores to comparable ones."""

AGGREGATES: dict[str, Callable[[FloatArray], FloatArray]] = {
    "sum": lambda m: np.nansum(m, axis=0),
    "mean": lambda m: np.nanmean(m, axis=0),
    "max": lambda m: np.nanmax(m, axis=0),
}
"""Aggregations over a slot's members, by name: each maps a (members, slots) matrix, NaN
where a member has no neuron in the slot (never a whole column), to one score per slot."""


def _option(value: str, table: Mapping[str, object], what: str) -> str:
    if not isinstance(value, str) or value not in table:
        raise ValueError(f"unknown {what} {value!r}; valid: {', '.join(map(repr, table))}")
    return value


def normalize_scores(values: npt.ArrayLike, how: str = "mean") -> FloatArray:
    """One layer's scores normalised by ``how`` (a key of :data:`NORMALIZATIONS`).

    Raises
    ------
    ValueError
        An unknown ``how``, or scores that are not finite and non-negative (a normalisation
        by a mean or a norm would reorder negative scores).
    """
    _option(how, NORMALIZATIONS, "normalize")
    arr = np.asarray(values, dtype=np.float64)
    if arr.ndim != 1 or not np.isfinite(arr).all() or (arr < 0).any():
        raise ValueError("scores must be a 1-D array of finite, non-negative values")
    return NORMALIZATIONS[how](arr)


@dataclass(frozen=True, eq=False)
class GroupScores:
    """One score per slot of every scored group, higher meaning keep.

    Parameters
    ----------
    scores
        By group index: a float64 array over the group's slots; NaN where no member scored.
    unscored
        Groups with no scored member, with why.
    criterion, aggregate, normalize
        How the scores were made.
    """

    scores: Mapping[int, FloatArray]
    unscored: Mapping[int, str]
    criterion: str
    aggregate: str
    normalize: str


def score_groups(analysis: ChannelAnalysis, layer_scores: LayerScores, *,
                 aggregate: str = "sum", normalize: str = "mean") -> GroupScores:
    """Combine per-neuron scores into per-slot scores of every group.

    Parameters
    ----------
    analysis
        The graph's channel analysis.
    layer_scores
        From :func:`kerasprune.core.criteria.layer_scores` (or built by hand: one score
        per neuron of each scored layer, finite and non-negative).
    aggregate
        How members combine: a key of :data:`AGGREGATES` (``"sum"``, ``"mean"``, ``"max"``).
    normalize
        How each layer's scores are made comparable first: a key of :data:`NORMALIZATIONS`
        (``"none"``, ``"mean"``, ``"max"``, ``"l2"``).

    Returns
    -------
    GroupScores

    Raises
    ------
    ValueError
        An unknown option (the message lists the valid ones), or scores of the wrong length.
    """
    _option(aggregate, AGGREGATES, "aggregate")
    _option(normalize, NORMALIZATIONS, "normalize")
    scores: dict[int, FloatArray] = {}
    unscored: dict[int, str] = {}
    for group in analysis.groups:
        rows = []
        for member in group.members:
            values = layer_scores.scores.get(member.layer)
            if values is None:
                continue
            values = normalize_scores(values, normalize)
            if values.size != member.width:
                raise ValueError(f"{values.size} scores for layer '{member.layer}', which has "
                                 f"{member.width} neurons")
            total = np.bincount(member.slots, weights=values, minlength=group.width)
            count = np.bincount(member.slots, minlength=group.width)
            row = np.full(group.width, np.nan)
            np.divide(total, count, out=row, where=count > 0)
            rows.append(row)
        if not rows:
            why = [f"'{m.layer}': {layer_scores.skipped[m.layer]}" for m in group.members
                   if m.layer in layer_scores.skipped]
            unscored[group.index] = (f"criterion {layer_scores.criterion!r} cannot score it ("
                                     + ("; ".join(why) or "not scored") + ")")
            continue
        matrix = np.vstack(rows)
        seen = ~np.isnan(matrix).all(axis=0)
        slot = np.full(group.width, np.nan)
        slot[seen] = AGGREGATES[aggregate](matrix[:, seen])
        slot.flags.writeable = False
        scores[group.index] = slot
    return GroupScores(scores, unscored, layer_scores.criterion, aggregate, normalize)
