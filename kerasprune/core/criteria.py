"""Importance criteria: how much each neuron of a layer matters, one small object per criterion.

Every criterion is a :class:`Criterion` registered under its name in :data:`CRITERIA`. It
says what it needs (:attr:`Criterion.needs`: nothing, the weights, activation statistics or
gradient statistics) and scores the neurons of one layer, higher meaning more important (keep
it). Scores of layers are then combined per coupled group by
:func:`kerasprune.core.scores.score_groups`.

=============  ===========  ============================================================
name           needs        score of neuron ``c``
=============  ===========  ============================================================
``random``     nothing      uniform in [0, 1), seeded per layer: the baseline
``l1``         weights      ``sum |w|`` over the neuron's own kernel slice (Li et al. 2017)
``l2``         weights      ``sqrt(sum w**2)`` over the same slice
``bn_scale``   weights      ``|gamma[c]|`` of the BatchNormalization its channels reach one
                            to one (Liu et al. 2017, Network Slimming)
``apoz``       activations  ``1 - APoZ(c)`` (Hu et al. 2016), from
                            :class:`~kerasprune.core.apoz.ApozCounts`
``activation`` activations  ``mean |a_c|``, from :class:`~kerasprune.core.stats.ActivationStats`
``taylor``     gradients    ``mean over samples of |mean over positions of a_c dL/da_c|``
                            (Molchanov et al. 2017), from
                            :class:`~kerasprune.core.stats.TaylorStats`
=============  ===========  ============================================================

References
----------
- Li, Kadav, Durdanovic, Samet, Graf 2017, "Pruning Filters for Efficient ConvNets", ICLR
  (arXiv:1608.08710).
- Liu, Li, Shen, Huang, Yan, Zhang 2017, "Learning Efficient Convolutional Networks through
  Network Slimming", ICCV (arXiv:1708.06519).
- Hu, Peng, Tai, Tang 2016, "Network Trimming" (arXiv:1607.03250).
- Molchanov, Tyree, Karras, Aila, Kautz 2017, "Pruning Convolutional Neural Networks for
  Resource Efficient Inference", ICLR (arXiv:1611.06440).

Statistics are passed as ``stats={layer name: statistics}``, measured where
:meth:`Criterion.site` says (the end of the layer's one-to-one channel chain, after its batch
normalization and activation; for APoZ, :func:`kerasprune.core.apoz.measurement_site`).
"""

from __future__ import annotations

import zlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import numpy as np
import numpy.typing as npt

from kerasprune.core.apoz import ApozCounts
from kerasprune.core.checks import as_int
from kerasprune.core.graph import PruneError
from kerasprune.core.groups import ChainStep, ChannelAnalysis, split_part
from kerasprune.core.rules import OUT, WeightAxis
from kerasprune.core.stats import ActivationStats, TaylorStats

__all__ = [
    "CRITERIA",
    "ApozCriterion",
    "BatchNormScale",
    "Criterion",
    "LayerScores",
    "MeanActivation",
    "Need",
    "Random",
    "Taylor",
    "WeightNorm",
    "check_stats",
    "criterion_for",
    "layer_scores",
    "register_criterion",
]

FloatArray = npt.NDArray[np.float64]
Need = Literal["nothing", "weights", "activations", "gradients"]
"""What a criterion reads besides the graph's structure."""

Stats = Mapping[str, Any]
"""Statistics by layer name."""


class Criterion:
    """Scores the neurons of one layer; higher means more important.

    A subclass sets :attr:`name`, :attr:`needs` and (for data-driven criteria)
    :attr:`stats_type`, and implements :meth:`scores`; :meth:`why_not` says when a layer
    cannot be scored (the planner then leaves its group alone and says why).
    """

    name: str = ""
    needs: Need = "nothing"
    stats_type: ClassVar[type | None] = None

    def why_not(self, analysis: ChannelAnalysis, layer: str, stats: Stats | None) -> str | None:
        """Why ``layer`` cannot be scored, or ``None`` if it can."""
        if self.stats_type is None:
            return None
        if stats is None or layer not in stats:
            return f"no {self.stats_type.__name__} measured for it"
        return None

    def scores(self, analysis: ChannelAnalysis, layer: str,
               stats: Stats | None) -> FloatArray:
        """One float64 score per neuron of ``layer`` (its first call's output channels)."""
        raise NotImplementedError

    def site(self, analysis: ChannelAnalysis, layer: str) -> ChainStep | None:
        """Where to measure this criterion's statistics for ``layer`` (``None``: it needs
        none): the end of the layer's one-to-one channel chain
        (:meth:`~kerasprune.core.groups.ChannelAnalysis.chain`)."""
        return None if self.stats_type is None else analysis.chain(layer)[-1]

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r})"


def _width(analysis: ChannelAnalysis, layer: str) -> int:
    return analysis.group_of(layer).member(layer).width


class Random(Criterion):
    """Uniform random scores in [0, 1): the baseline every other criterion must beat.

    Parameters
    ----------
    seed
        With the layer's name, fixes the scores: the same seed gives the same scores for the
        same layer in any graph and any process.
    """

    name = "random"
    needs = "nothing"

    def __init__(self, seed: int = 0) -> None:
        self.seed = as_int("seed", seed, minimum=0)

    def scores(self, analysis: ChannelAnalysis, layer: str,
               stats: Stats | None) -> FloatArray:
        rng = np.random.default_rng([self.seed, zlib.crc32(layer.encode())])
        return rng.random(_width(analysis, layer))

    def __repr__(self) -> str:
        return f"Random(seed={self.seed})"


def _norms(weight: Any, wa: WeightAxis, groups: int, order: int) -> FloatArray:
    """The L1 or squared-L2 mass of each of ``groups`` channels along axis ``wa.axis`` of
    ``weight``, its entries found by ``wa`` (repeats, gate blocks, a span)."""
    arr = np.moveaxis(np.asarray(weight, dtype=np.float64), wa.axis, 0)
    expected = groups * wa.repeat * wa.blocks if wa.span is None else arr.shape[0]
    if arr.shape[0] != expected or arr.shape[0] % wa.blocks:
        raise PruneError(f"a weight of shape {np.shape(weight)} has {arr.shape[0]} entries on "
                         f"axis {wa.axis}, not {groups} x {wa.repeat} x {wa.blocks}")
    rows = arr.reshape(arr.shape[0], -1)
    per_entry = np.abs(rows).sum(axis=1) if order == 1 else np.square(rows).sum(axis=1)
    owner = wa.owners(groups, arr.shape[0])
    mass: FloatArray = np.bincount(owner[owner >= 0], weights=per_entry[owner >= 0],
                                   minlength=groups).astype(np.float64)
    return mass


class WeightNorm(Criterion):
    """L1 (``order=1``) or L2 (``order=2``) norm of each neuron's own kernel slice.

    Li et al. 2017 rank a convolution's filters by the sum of their absolute kernel weights.
    The slice is found from the layer's rule (its :class:`~kerasprune.core.rules.WeightAxis`
    entries with space ``OUT``), so every kind with neurons is scored the same way: a Dense
    unit's column, a filter, a transposed convolution's filter, a separable convolution's
    pointwise column, an embedding dimension. Biases and other vectors are not part of the
    slice, as in the paper. A depthwise convolution has no weights of its own output space:
    each neuron gets the norm of its input channel's kernel (all its multiplier outputs,
    which are always deleted together).
    """

    needs = "weights"

    def __init__(self, name: str, order: Literal[1, 2]) -> None:
        if order not in (1, 2):
            raise ValueError(f"order must be 1 or 2, got {order!r}")
        self.name = name
        self.order = order

    def _part_axes(self, analysis: ChannelAnalysis, layer: str) -> list[WeightAxis] | None:
        """For a part group's member (``"mha:heads"``): the kernel axes of the part (every
        projection's slice of a head, biases left out as for neurons); ``None`` for a
        layer."""
        name, part = split_part(layer)
        if part is None:
            return None
        spec = analysis.graph.layers[name]
        node = analysis.graph.calls(name)[0]
        axes = [analysis.axes.get(t) for t in node.inputs]
        return [wa for wa in analysis.rules.rule_for(spec.kind).weight_axes(spec, axes)
                if wa.space == part and wa.weight in spec.weights
                and not wa.weight.rsplit("/", 1)[-1].startswith("bias")]

    def _axes(self, analysis: ChannelAnalysis, layer: str) -> tuple[list[WeightAxis], int]:
        spec = analysis.graph.layers[layer]
        node = analysis.graph.calls(layer)[0]
        axes = [analysis.axes.get(t) for t in node.inputs]
        kernel = [wa for wa in analysis.rules.rule_for(spec.kind).weight_axes(spec, axes)
                  if wa.weight in spec.weights and len(spec.weights[wa.weight].shape) >= 2]
        own = [wa for wa in kernel if wa.space == OUT]
        return (own, OUT) if own else ([wa for wa in kernel if wa.space == 0], 0)

    def why_not(self, analysis: ChannelAnalysis, layer: str, stats: Stats | None) -> str | None:
        parts = self._part_axes(analysis, layer)
        if parts is not None:
            return None if parts else "it has no kernel indexed by its parts"
        found, space = self._axes(analysis, layer)
        if not found:
            return "it has no kernel indexed by its neurons"
        if space == 0 and analysis.link(analysis.graph.calls(layer)[0]) is None:
            return "its kernel does not index its neurons"
        return None

    def scores(self, analysis: ChannelAnalysis, layer: str,
               stats: Stats | None) -> FloatArray:
        n = _width(analysis, layer)
        parts = self._part_axes(analysis, layer)
        if parts is not None:  # a head: its slices of every projection together
            spec = analysis.graph.layers[split_part(layer)[0]]
            total = sum((_norms(spec.weights[wa.weight], wa, n, self.order)
                         for wa in parts), np.zeros(n))
            return total if self.order == 1 else np.sqrt(total)
        found, space = self._axes(analysis, layer)
        spec = analysis.graph.layers[layer]
        node = analysis.graph.calls(layer)[0]
        link = analysis.link(node) if space == 0 else None
        channels = n if link is None else int(analysis.graph.shapes[node.inputs[0]][
            analysis.axes[node.inputs[0]] or 0])
        mass = np.zeros(channels)
        for wa in found:
            mass += _norms(spec.weights[wa.weight], wa, channels, self.order)
        out = mass if self.order == 1 else np.sqrt(mass)
        return out if link is None else out[np.asarray(link.sources[0])]

    def __repr__(self) -> str:
        return f"WeightNorm({self.name!r}, order={self.order})"


class BatchNormScale(Criterion):
    """``|gamma|`` of the BatchNormalization a layer's channels reach one to one.

    Network Slimming (Liu et al. 2017) trains with an L1 penalty on the batch-norm scales and
    then deletes the channels whose scale is smallest. The scale is the first weight named
    ``gamma`` that the layer's rule indexes by channel, on the layer's one-to-one chain
    (:meth:`~kerasprune.core.groups.ChannelAnalysis.chain`: ``Conv -> BatchNormalization``,
    through activations or dropout); a layer without one cannot be scored.
    """

    name = "bn_scale"
    needs = "weights"

    def _gamma(self, analysis: ChannelAnalysis, layer: str) -> Any | None:
        graph = analysis.graph
        for step in analysis.chain(layer)[1:]:
            spec = graph.layers[step.layer]
            for wa in analysis.rules.rule_for(spec.kind).weight_axes(spec, [step.axis]):
                if wa.weight == "gamma" and wa.space == 0 and "gamma" in spec.weights:
                    return spec.weights["gamma"]
        return None

    def why_not(self, analysis: ChannelAnalysis, layer: str, stats: Stats | None) -> str | None:
        if self._gamma(analysis, layer) is None:
            return ("no BatchNormalization with a scale (gamma) follows it one to one; "
                    f"its chain is {' -> '.join(s.layer for s in analysis.chain(layer))}")
        return None

    def scores(self, analysis: ChannelAnalysis, layer: str,
               stats: Stats | None) -> FloatArray:
        gamma = self._gamma(analysis, layer)
        if gamma is None:
            raise PruneError(f"layer '{layer}': {self.why_not(analysis, layer, stats)}")
        return np.abs(np.asarray(gamma, dtype=np.float64)).reshape(-1)


class ApozCriterion(Criterion):
    """``1 - APoZ``: the share of non-zero activations (Hu et al. 2016).

    Statistics: :class:`~kerasprune.core.apoz.ApozCounts` per layer, counted where
    :func:`kerasprune.core.apoz.measurement_site` says (after the first zero-producing
    non-linearity); :meth:`site` is left to that function.
    """

    name = "apoz"
    needs = "activations"
    stats_type = ApozCounts

    def scores(self, analysis: ChannelAnalysis, layer: str,
               stats: Stats | None) -> FloatArray:
        assert stats is not None
        result: FloatArray = 1.0 - stats[layer].result()
        return result

    def site(self, analysis: ChannelAnalysis, layer: str) -> ChainStep | None:
        return None  # measured at kerasprune.core.apoz.measurement_site(graph, layer)


class _Measured(Criterion):
    """A criterion whose score is its statistics' :meth:`result`."""

    def scores(self, analysis: ChannelAnalysis, layer: str,
               stats: Stats | None) -> FloatArray:
        assert stats is not None
        result: FloatArray = stats[layer].result()
        return result


class MeanActivation(_Measured):
    """Mean activation magnitude ``mean |a_c|`` over samples and positions.

    Statistics: :class:`~kerasprune.core.stats.ActivationStats` per layer, measured at
    :meth:`site`.
    """

    name = "activation"
    needs = "activations"
    stats_type = ActivationStats


class Taylor(_Measured):
    """First-order Taylor expansion of the loss change when a channel is zeroed.

    Molchanov et al. 2017 (eq. 8): per sample, ``|(1/M) sum over the M positions of
    a * dL/da|``, averaged over samples; they normalise each layer by its L2 norm
    (``normalize="l2"``). Statistics: :class:`~kerasprune.core.stats.TaylorStats` per layer,
    measured at :meth:`site`, with per-sample gradients of the summed loss.
    """

    name = "taylor"
    needs = "gradients"
    stats_type = TaylorStats


CRITERIA: dict[str, Criterion] = {}
"""Every criterion by name."""


def register_criterion(criterion: Criterion) -> None:
    """Register ``criterion`` under its name (replacing any earlier one)."""
    if not isinstance(criterion, Criterion) or not criterion.name:
        raise TypeError(f"expected a Criterion with a name, got {criterion!r}")
    CRITERIA[criterion.name] = criterion


def criterion_for(criterion: str | Criterion) -> Criterion:
    """The criterion named ``criterion`` (a :class:`Criterion` is returned as it is).

    Raises
    ------
    ValueError
        For an unknown name; the message lists the registered ones.
    """
    if isinstance(criterion, Criterion):
        return criterion
    if isinstance(criterion, str) and criterion in CRITERIA:
        return CRITERIA[criterion]
    raise ValueError(f"unknown criterion {criterion!r}; the criteria are "
                     f"{', '.join(repr(name) for name in sorted(CRITERIA))}")


for _criterion in (Random(), WeightNorm("l1", 1), WeightNorm("l2", 2), BatchNormScale(),
                   ApozCriterion(), MeanActivation(), Taylor()):
    register_criterion(_criterion)


_WHAT: dict[Need, str] = {"activations": "activation statistics",
                          "gradients": "gradient statistics"}


@dataclass(frozen=True, eq=False)
class LayerScores:
    """Scores of each scored layer's neurons, and why the other layers have none.

    Parameters
    ----------
    criterion
        The criterion's name.
    scores
        One float64 array per layer, one score per neuron (read-only).
    skipped
        Layers that could not be scored, with the reason.
    """

    criterion: str
    scores: Mapping[str, FloatArray]
    skipped: Mapping[str, str]


def check_stats(criterion: Criterion, stats: Stats | None, analysis: ChannelAnalysis) -> None:
    """Check ``stats`` for ``criterion`` before anything is scored.

    Raises
    ------
    ValueError
        If the criterion needs statistics and none are given (naming the ``stats`` argument),
        a layer of ``stats`` has no neurons, or a statistic's channel count differs from the
        layer's neurons.
    TypeError
        If a statistic is of the wrong type.
    """
    kind = criterion.stats_type
    if kind is None:
        return
    if stats is None:
        raise ValueError(
            f"criterion {criterion.name!r} needs {_WHAT.get(criterion.needs, 'statistics')}: "
            f"pass stats={{layer name: {kind.__name__}}}, measured on data")
    members = analysis.group_index
    for layer, value in stats.items():
        if layer not in members:
            raise ValueError(f"stats has an entry for {layer!r}, which is not a layer whose "
                             "neurons can be deleted")
        if not isinstance(value, kind):
            raise TypeError(f"stats[{layer!r}] must be {kind.__name__} for criterion "
                            f"{criterion.name!r}, got {type(value).__name__}")
        width = _width(analysis, layer)
        channels = getattr(value, "channels", None)
        if channels != width:
            raise ValueError(f"stats[{layer!r}] has {channels} channels but layer "
                             f"{layer!r} has {width} neurons")
        if 0 in (getattr(value, "count", None), getattr(value, "total", None)):
            raise ValueError(f"stats[{layer!r}] holds no measurement yet")


def layer_scores(analysis: ChannelAnalysis, criterion: str | Criterion,
                 stats: Stats | None = None, layers: Iterable[str] | None = None) -> LayerScores:
    """Score every neuron of ``layers`` by ``criterion``.

    Parameters
    ----------
    analysis
        The graph's channel analysis.
    criterion
        A name in :data:`CRITERIA` or a :class:`Criterion`.
    stats
        Statistics by layer name, for criteria that need them.
    layers
        Layers to score; by default every member of every group with a deletable slot.

    Returns
    -------
    LayerScores
        Scores of the layers the criterion applies to, and why not for the others.

    Raises
    ------
    ValueError, TypeError
        As :func:`criterion_for` and :func:`check_stats`, before anything is scored.
    PruneError
        If a named layer has no neurons.
    """
    chosen = criterion_for(criterion)
    check_stats(chosen, stats, analysis)
    names = list(layers) if layers is not None else [
        m.layer for g in analysis.groups if g.prunable for m in g.members]
    scores: dict[str, FloatArray] = {}
    skipped: dict[str, str] = {}
    for name in names:
        width = _width(analysis, name)
        why = chosen.why_not(analysis, name, stats)
        if why is not None:
            skipped[name] = why
            continue
        values = np.array(chosen.scores(analysis, name, stats), dtype=np.float64)
        if values.shape != (width,) or not np.isfinite(values).all():
            raise PruneError(f"criterion {chosen.name!r} gave {values.shape} scores for layer "
                             f"'{name}' with {width} neurons, or non-finite ones")
        values.flags.writeable = False
        scores[name] = values
    return LayerScores(chosen.name, scores, skipped)
