"""APoZ: the Average Percentage of Zeros of each channel's activations.

Hu et al. 2016, "Network Trimming: A Data-Driven Neuron Pruning Approach towards Efficient
Deep Architectures" (arXiv:1607.03250). For a channel ``c`` of a layer's output, measured
after its non-linearity (a ReLU, say)::

    APoZ(c) = (number of zero activations of c) / (number of activations of c)

counted over every sample and every spatial position. A channel that is almost always zero
contributes little, and is a candidate for deletion.

Three pieces, all pure functions on immutable values:

- :func:`apoz`: APoZ of one array that holds every activation at once.
- :class:`ApozCounts`: exact integer counts, updated batch by batch (memory ``O(channels)``),
  filled from counts made elsewhere (a GPU, another framework), and merged across shards or
  workers. Merging is exact: it gives the same counts as one pass over all the data.
- :func:`high_apoz`: which channels to delete, by the paper's rule (above mean + k std) or by
  a cutoff or a fraction. It never selects every channel of a layer.
- :func:`measurement_sites`: where in a :class:`~kerasprune.core.graph.Graph` each layer's
  zeros happen. A layer with a linear activation (``Conv -> BatchNorm -> ReLU``) is measured
  at the first zero-producing layer its channels reach one to one.

Zero means exactly zero (``-0.0`` included); NaN activations are always an error, since a NaN
is neither zero nor a measurement.
"""

from __future__ import annotations

import math
import operator
import warnings
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from fractions import Fraction
from typing import Final

import numpy as np
import numpy.typing as npt

from kerasprune.core.graph import Graph, PruneError
from kerasprune.core.rules import Link, rule_for
from kerasprune.core.surgery import _layer, _natural_axes, prunable_layers

__all__ = [
    "METHODS",
    "ApozCounts",
    "ApozWarning",
    "Site",
    "apoz",
    "high_apoz",
    "measurement_site",
    "measurement_sites",
]

METHODS: Final = ("std", "absolute", "both", "top")
"""The selection methods of :func:`high_apoz`."""

_INT64_MAX: Final = int(np.iinfo(np.int64).max)


# --------------------------------------------------------------------------------------------
# Counting
# --------------------------------------------------------------------------------------------


def _channel_axis(ndim: int, channel_axis: int) -> int:
    """Check ``channel_axis`` against an array of ``ndim`` dimensions; return it non-negative."""
    if isinstance(channel_axis, (bool, np.bool_)):
        raise TypeError(f"channel_axis must be an int, got {channel_axis!r}")
    try:
        axis = operator.index(channel_axis)
    except TypeError:
        raise TypeError(f"channel_axis must be an int, got {type(channel_axis).__name__}") from None
    if ndim == 0:
        raise ValueError("activations must have at least one axis (the channel axis), got a scalar")
    if not -ndim <= axis < ndim:
        raise ValueError(
            f"channel_axis {axis} is out of range for activations with {ndim} axes "
            f"(valid: {-ndim}..{ndim - 1})"
        )
    return axis % ndim


def _as_activations(activations: npt.ArrayLike) -> npt.NDArray[np.generic]:
    """Return ``activations`` as a numeric array with no NaN."""
    arr = np.asarray(activations)
    if not (np.issubdtype(arr.dtype, np.number) or arr.dtype == np.bool_):
        raise TypeError(f"activations must be numeric, got dtype {arr.dtype}")
    if np.issubdtype(arr.dtype, np.inexact):
        n_nan = int(np.count_nonzero(np.isnan(arr)))
        if n_nan:
            raise ValueError(
                f"activations contain {n_nan} NaN value{'s' if n_nan != 1 else ''} "
                f"(out of {arr.size}); APoZ is undefined for NaN"
            )
    return arr


def _count_zeros(
    arr: npt.NDArray[np.generic], channel_axis: int
) -> tuple[npt.NDArray[np.int64], int]:
    """Count the zeros of each channel of ``arr`` (already checked by ``_as_activations``).

    Returns the per-channel zero counts (int64, one per channel) and the number of values
    counted per channel (samples x spatial positions, possibly 0).
    """
    axis = _channel_axis(arr.ndim, channel_axis)
    channels = arr.shape[axis]
    if channels == 0:
        raise ValueError(f"activations have no channels (axis {axis} of shape {arr.shape} is 0)")
    others = tuple(i for i in range(arr.ndim) if i != axis)
    zeros = np.sum(arr == 0, axis=others, dtype=np.int64)
    total = math.prod(arr.shape[i] for i in others)
    return np.asarray(zeros, dtype=np.int64).reshape(channels), total


def _ratio(zeros: npt.NDArray[np.int64], total: int) -> npt.NDArray[np.float64]:
    """``zeros / total`` as a new float64 array (``total > 0``)."""
    out = zeros.astype(np.float64)
    out /= float(total)
    return out


def apoz(activations: npt.ArrayLike, channel_axis: int = -1) -> npt.NDArray[np.float64]:
    """Per-channel APoZ of activations that all fit in one array.

    Parameters
    ----------
    activations
        Activations after the non-linearity, of any shape, e.g. ``(N, H, W, C)`` for
        channels_last or ``(N, C, H, W)`` for channels_first. Every axis other than the
        channel axis is counted over (samples and spatial positions alike).
    channel_axis
        The axis that indexes channels (``-1`` for channels_last, ``1`` for channels_first).

    Returns
    -------
    numpy.ndarray
        float64 array of length ``C``: the share of zeros of each channel, in ``[0, 1]``.

    Raises
    ------
    ValueError
        If ``activations`` is empty, contains NaN, or ``channel_axis`` is out of range.
    TypeError
        If ``activations`` is not numeric or ``channel_axis`` is not an int.

    Notes
    -----
    For data that does not fit in memory, use :class:`ApozCounts` batch by batch.
    """
    arr = _as_activations(activations)
    _channel_axis(arr.ndim, channel_axis)
    if arr.size == 0:
        raise ValueError(f"activations are empty (shape {arr.shape}); APoZ is undefined")
    zeros, total = _count_zeros(arr, channel_axis)
    return _ratio(zeros, total)


# --------------------------------------------------------------------------------------------
# Streaming counts
# --------------------------------------------------------------------------------------------


def _as_total(total: int) -> int:
    """Check that ``total`` is a non-negative integer that fits in int64; return it as int."""
    if isinstance(total, (bool, np.bool_)):
        raise TypeError(f"total must be an int, got {total!r}")
    try:
        value = operator.index(total)
    except TypeError:
        raise TypeError(f"total must be an int, got {type(total).__name__}") from None
    if value < 0:
        raise ValueError(f"total must be >= 0, got {value}")
    if value > _INT64_MAX:
        raise OverflowError(f"total {value} exceeds the int64 maximum {_INT64_MAX}")
    return value


def _as_zero_counts(zeros: npt.ArrayLike, total: int) -> npt.NDArray[np.int64]:
    """Check per-channel zero counts against ``total``; return a fresh read-only int64 copy."""
    arr = np.asarray(zeros)
    if not np.issubdtype(arr.dtype, np.integer):
        raise TypeError(
            f"zeros must be an array of integers, got dtype {arr.dtype} "
            "(counts in floats may have lost precision; count in an integer type)"
        )
    if arr.ndim != 1:
        raise ValueError(f"zeros must be 1-D (one count per channel), got shape {arr.shape}")
    if arr.size:
        low, high = int(arr.min()), int(arr.max())
        if low < 0:
            raise ValueError(f"zeros must be >= 0, got {low} at channel {int(arr.argmin())}")
        if high > total:
            raise ValueError(
                f"zeros cannot exceed total: channel {int(arr.argmax())} has {high} zeros "
                f"out of {total} values"
            )
    out = arr.astype(np.int64, copy=True)
    out.flags.writeable = False
    return out


@dataclass(frozen=True, eq=False)
class ApozCounts:
    """Exact zero counts per channel, accumulated over batches, shards or workers.

    Every method returns a new ``ApozCounts``; none changes the one it is called on, and the
    ``zeros`` array is read-only. Memory is ``O(channels)`` however many samples are counted.
    Counts are exact integers (int64 per channel, a Python ``int`` total), so merging shards
    gives exactly the counts of one pass over all the data.

    The channel count may be left open: ``ApozCounts.empty()`` (or ``empty(None)``) holds no
    channels (``zeros`` has length 0, :attr:`channels` is ``None``) and takes its channel count
    from the first batch, counts or counts object it is combined with. After that, every
    batch must have the same number of channels.

    Parameters
    ----------
    zeros
        Number of zero activations of each channel (non-negative integers, 1-D). Length 0
        means the channel count is not known yet (then ``total`` must be 0).
    total
        Number of values counted per channel (samples x spatial positions), the same for every
        channel; ``zeros[c] <= total`` for every ``c``.

    Raises
    ------
    ValueError
        If a count is negative, ``zeros`` is not 1-D, a zero count exceeds ``total``, or
        ``total`` is positive with no channels.
    TypeError
        If ``zeros`` is not an integer array or ``total`` not an integer.
    OverflowError
        If ``total`` exceeds the int64 maximum (about 9.2e18 values per channel).

    Examples
    --------
    >>> counts = ApozCounts.empty(2)
    >>> counts = counts.update([[0.0, 1.0], [0.0, 0.0]])
    >>> counts.zeros.tolist(), counts.total
    ([2, 1], 2)
    >>> counts.result().tolist()
    [1.0, 0.5]
    """

    zeros: npt.NDArray[np.int64]
    total: int

    def __post_init__(self) -> None:
        total = _as_total(self.total)
        zeros = _as_zero_counts(self.zeros, total)
        if zeros.size == 0 and total != 0:
            raise ValueError(f"total is {total} but there are no channels")
        object.__setattr__(self, "total", total)
        object.__setattr__(self, "zeros", zeros)

    # -- constructors ------------------------------------------------------------------------

    @classmethod
    def empty(cls, channels: int | None = None) -> ApozCounts:
        """Counts of nothing yet.

        Parameters
        ----------
        channels
            Number of channels, or ``None`` to take it from the first update or merge.

        Returns
        -------
        ApozCounts
            Zero counts with ``total == 0``.

        Raises
        ------
        ValueError
            If ``channels`` is not positive.
        TypeError
            If ``channels`` is not an int or ``None``.
        """
        if channels is None:
            return cls(np.zeros(0, dtype=np.int64), 0)
        if isinstance(channels, (bool, np.bool_)):
            raise TypeError(f"channels must be an int or None, got {channels!r}")
        try:
            n = operator.index(channels)
        except TypeError:
            raise TypeError(
                f"channels must be an int or None, got {type(channels).__name__}"
            ) from None
        if n <= 0:
            raise ValueError(f"channels must be positive, got {n}")
        return cls(np.zeros(n, dtype=np.int64), 0)

    # -- properties --------------------------------------------------------------------------

    @property
    def channels(self) -> int | None:
        """Number of channels, or ``None`` while not known yet."""
        return int(self.zeros.size) if self.zeros.size else None

    # -- combining ---------------------------------------------------------------------------

    def _add(self, zeros: npt.NDArray[np.int64], total: int, what: str) -> ApozCounts:
        """New counts: these plus ``zeros``/``total`` (already checked), channels matched."""
        if self.channels is not None and zeros.size != self.channels:
            raise ValueError(
                f"channel count mismatch: these counts have {self.channels} channels, "
                f"{what} has {zeros.size}"
            )
        new_total = self.total + total
        if new_total > _INT64_MAX:
            raise OverflowError(f"total {new_total} would exceed the int64 maximum {_INT64_MAX}")
        if self.channels is None:
            return ApozCounts(zeros, new_total)
        return ApozCounts(self.zeros + zeros, new_total)

    def update(self, batch_activations: npt.ArrayLike, channel_axis: int = -1) -> ApozCounts:
        """Add the zeros of one batch of activations.

        Parameters
        ----------
        batch_activations
            Activations after the non-linearity, any shape with a channel axis; every other
            axis is counted over. A batch with no samples (size 0 along another axis) adds
            nothing but still has its channel count checked.
        channel_axis
            The axis that indexes channels (``-1`` for channels_last, ``1`` for
            channels_first).

        Returns
        -------
        ApozCounts
            New counts including this batch.

        Raises
        ------
        ValueError
            If the batch contains NaN (the message gives how many), ``channel_axis`` is out of
            range, the batch has no channels, or its channel count differs from these counts'.
        TypeError
            If the batch is not numeric or ``channel_axis`` is not an int.
        OverflowError
            If the total would exceed the int64 maximum.
        """
        zeros, total = _count_zeros(_as_activations(batch_activations), channel_axis)
        return self._add(zeros, total, "the batch")

    def update_counts(self, zeros: npt.ArrayLike, total: int) -> ApozCounts:
        """Add zero counts made elsewhere (on a GPU, in another framework, by another tool).

        Parameters
        ----------
        zeros
            1-D integer array: the number of zero activations of each channel.
        total
            The number of values counted per channel (samples x spatial positions).

        Returns
        -------
        ApozCounts
            New counts including these.

        Raises
        ------
        ValueError
            If a count is negative, ``zeros`` is not 1-D or is empty, a count exceeds
            ``total``, or the channel count differs from these counts'.
        TypeError
            If ``zeros`` is not an integer array (float counts are refused: they may have
            lost precision) or ``total`` is not an integer.
        OverflowError
            If ``total`` or the new total exceeds the int64 maximum.
        """
        checked_total = _as_total(total)
        checked = _as_zero_counts(zeros, checked_total)
        if checked.size == 0:
            raise ValueError("zeros is empty: counts must have at least one channel")
        return self._add(checked, checked_total, "the given counts")

    def merge(self, other: ApozCounts) -> ApozCounts:
        """Combine with counts from another shard or worker.

        Exact and order-free: ``a.merge(b)`` equals ``b.merge(a)`` and equals the counts of one
        pass over both shards' data.

        Parameters
        ----------
        other
            Counts of the same channels over other data.

        Returns
        -------
        ApozCounts
            New counts of both.

        Raises
        ------
        ValueError
            If both have a known channel count and they differ.
        TypeError
            If ``other`` is not an ``ApozCounts``.
        OverflowError
            If the merged total exceeds the int64 maximum.
        """
        if not isinstance(other, ApozCounts):
            raise TypeError(f"can only merge ApozCounts, got {type(other).__name__}")
        if other.channels is None:
            return ApozCounts(self.zeros, self.total)
        return self._add(other.zeros, other.total, "the other counts")

    # -- result ------------------------------------------------------------------------------

    def result(self) -> npt.NDArray[np.float64]:
        """The APoZ of each channel.

        Returns
        -------
        numpy.ndarray
            float64 array of length ``channels``: ``zeros / total``.

        Raises
        ------
        ValueError
            If nothing has been counted (``total == 0``).
        """
        if self.total == 0:
            raise ValueError("no activations counted yet (total is 0); APoZ is undefined")
        return _ratio(self.zeros, self.total)

    # -- value semantics ---------------------------------------------------------------------

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, ApozCounts):
            return NotImplemented
        return self.total == other.total and np.array_equal(self.zeros, other.zeros)

    def __hash__(self) -> int:
        return hash((self.total, self.zeros.tobytes()))


# --------------------------------------------------------------------------------------------
# Selection
# --------------------------------------------------------------------------------------------


def _as_real(name: str, value: float, low: float, high: float) -> float:
    """Check that ``value`` is a real number in ``[low, high]``; return it as a float."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(
        value, (int, float, np.integer, np.floating)
    ):
        raise TypeError(f"{name} must be a real number, got {value!r}")
    out = float(value)
    if not low <= out <= high:
        raise ValueError(f"{name} must be in [{low}, {high}], got {value!r}")
    return out


def high_apoz(
    apoz: npt.ArrayLike,
    method: str = "std",
    *,
    k: float = 1.0,
    cutoff: float | None = None,
    fraction: float | None = None,
) -> npt.NDArray[np.int64]:
    """Indices of the channels (neurons) of one layer whose APoZ is high enough to delete.

    Parameters
    ----------
    apoz
        1-D APoZ values of one layer's channels, each in ``[0, 1]``.
    method
        - ``"std"``: the paper's rule, ``APoZ > mean + k * std`` of this layer's values
          (population std, ``ddof=0``).
        - ``"absolute"``: ``APoZ > cutoff``.
        - ``"both"``: both of the above must hold.
        - ``"top"``: the ``floor(fraction * C)`` channels with the highest APoZ.
    k
        Number of standard deviations above the mean, finite and ``>= 0``; used by ``"std"``
        and ``"both"`` (checked, but unused, by the others).
    cutoff
        APoZ threshold in ``[0, 1]``; required by ``"absolute"`` and ``"both"``, refused by
        the others.
    fraction
        Share of channels to delete, ``0 < fraction < 1``; required by ``"top"``, refused by
        the others. Rounded down, so a small layer may lose none. The product is taken on
        the decimal value of ``fraction`` (``0.29 * 100`` gives 29, not 28).

    Returns
    -------
    numpy.ndarray
        Sorted int64 indices of the channels to delete; at most ``C - 1`` of them.

    Raises
    ------
    ValueError
        If ``method`` is unknown (the message lists the valid ones), a parameter the method
        needs is missing, one it does not use is given, a parameter is out of range, or
        ``apoz`` is empty, not 1-D, contains NaN or values outside ``[0, 1]``.
    TypeError
        If ``apoz`` is not numeric or a parameter is not a real number.

    Notes
    -----
    Never every channel. Channels are ranked by a stable ascending sort of APoZ, so among
    equal APoZ the lower index ranks first:

    - ``"std"`` and ``"both"`` cannot select every channel: with ``k >= 0`` the lowest APoZ
      is never above the mean. A constant APoZ vector (std 0) selects none, whatever
      rounding does to the mean.
    - ``"absolute"`` with every APoZ above ``cutoff`` keeps exactly one channel, the one
      ranked first (the lowest APoZ; among ties, the lowest index), and returns the other
      ``C - 1``. The same guard applies to every method.
    - ``"top"`` deletes the last ``floor(fraction * C)`` channels of the ranking (the highest
      APoZ; among ties, the highest indices go first), never more than ``C - 1``.

    Examples
    --------
    >>> high_apoz([0.1, 0.2, 0.1, 0.9]).tolist()
    [3]
    >>> high_apoz([0.6, 0.7, 0.8], "absolute", cutoff=0.5).tolist()
    [1, 2]
    >>> high_apoz([0.5, 0.9, 0.1, 0.9], "top", fraction=0.5).tolist()
    [1, 3]
    """
    if not isinstance(method, str) or method not in METHODS:
        raise ValueError(
            f"unknown method {method!r}; valid methods are {', '.join(map(repr, METHODS))}"
        )
    values = np.asarray(apoz)
    if not (np.issubdtype(values.dtype, np.number) or values.dtype == np.bool_):
        raise TypeError(f"apoz must be numeric, got dtype {values.dtype}")
    if np.issubdtype(values.dtype, np.complexfloating):
        raise TypeError("apoz must be real, got complex values")
    if values.ndim != 1:
        raise ValueError(f"apoz must be 1-D (one value per channel), got shape {values.shape}")
    if values.size == 0:
        raise ValueError("apoz is empty: there are no channels to select from")
    values = values.astype(np.float64)
    n_nan = int(np.count_nonzero(np.isnan(values)))
    if n_nan:
        raise ValueError(f"apoz contains {n_nan} NaN value{'s' if n_nan != 1 else ''}")
    if values.min() < 0.0 or values.max() > 1.0:
        raise ValueError(
            f"apoz values must be in [0, 1], got min {values.min()!r} and max {values.max()!r}"
        )

    k_value = _as_real("k", k, 0.0, math.inf)
    if not math.isfinite(k_value):
        raise ValueError(f"k must be finite, got {k!r}")
    uses_cutoff = method in ("absolute", "both")
    cutoff_value = 0.0
    if cutoff is None:
        if uses_cutoff:
            raise ValueError(f"method {method!r} requires cutoff (an APoZ in [0, 1])")
    elif not uses_cutoff:
        raise ValueError(f"method {method!r} does not use cutoff; got cutoff={cutoff!r}")
    else:
        cutoff_value = _as_real("cutoff", cutoff, 0.0, 1.0)
    fraction_value = 0.0
    if fraction is None:
        if method == "top":
            raise ValueError("method 'top' requires fraction (0 < fraction < 1)")
    elif method != "top":
        raise ValueError(f"method {method!r} does not use fraction; got fraction={fraction!r}")
    else:
        try:  # one message for every value out of the open interval (0 and 1 included)
            fraction_value = _as_real("fraction", fraction, 0.0, 1.0)
        except ValueError:
            fraction_value = math.nan
        if not 0.0 < fraction_value < 1.0:
            raise ValueError(f"fraction must satisfy 0 < fraction < 1, got {fraction!r}")

    size = values.size
    order = np.argsort(values, kind="stable")  # the ranking: lowest APoZ first
    selected = np.zeros(size, dtype=bool)
    if method == "top":
        count = min(math.floor(Fraction(repr(fraction_value)) * size), size - 1)
        selected[order[size - count :]] = True
    else:
        selected[:] = True
        if method in ("std", "both"):
            if values.min() == values.max():
                selected[:] = False
            else:
                selected &= values > values.mean() + k_value * values.std()
        if uses_cutoff:
            selected &= values > cutoff_value
    if selected.all():
        selected[order[0]] = False
    return np.flatnonzero(selected).astype(np.int64)


# --------------------------------------------------------------------------------------------
# Where to measure
# --------------------------------------------------------------------------------------------


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


def _describe(graph: Graph, name: str) -> str:
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


def _why_not(graph: Graph, t: int, axis: int, last: str) -> tuple[str, int, int] | _Stop:
    """One step along a channel chain: the next layer, tensor and axis, or why it stops."""
    consumers = graph.consumers.get(t, [])
    where = f"the output of {_describe(graph, last)}"
    if t in graph.outputs:
        return _Stop("a model output", f"{where} is a model output")
    if not consumers:
        return _Stop("an unused tensor", f"{where} is not used by any layer")
    if len(consumers) > 1:
        names = ", ".join(_describe(graph, node.layer) for node, _ in consumers)
        return _Stop("a tensor that goes to several layers",
                     f"{where} goes to {len(consumers)} layers ({names}), so zeros after one "
                     "of them would not mean a channel is unused")
    node, _ = consumers[0]
    spec = graph.layers[node.layer]
    rule = rule_for(spec.kind)
    nxt = _describe(graph, node.layer)
    if rule.targetable:
        return _Stop("a layer with neurons of its own",
                     f"{where} goes to {nxt}, which makes channels of its own", spec.kind)
    if len(node.inputs) != 1 or len(node.outputs) != 1:
        return _Stop("a layer with several inputs or outputs",
                     f"{where} goes to {nxt}, which has several inputs or outputs", spec.kind)
    out = node.outputs[0]
    shape, out_shape = graph.shapes[t], graph.shapes[out]
    try:
        link = rule.link(spec, [shape], out_shape, axis)
    except PruneError as err:
        return _Stop("a layer that mixes channels",
                     f"{where} goes to {nxt}, which does not keep its channels apart ({err})",
                     spec.kind)
    if link is None or not _is_identity(link, shape[axis], out_shape[link.out_axis]):
        return _Stop("a layer that moves channels",
                     f"{where} goes to {nxt}, which does not map channels one to one", spec.kind)
    return node.layer, out, link.out_axis


_NO_ZEROS = "no zero-producing non-linearity (a ReLU or a relu/relu6 activation)"


def _locate(graph: Graph, layer: str, axes: dict[int, int | None] | None = None
            ) -> Site | _Stop:
    """:func:`measurement_site`, with the reason as a :class:`_Stop` instead of an error
    (``axes``: the graph's natural channel axes, if already computed)."""
    spec = _layer(graph, layer)
    rule = rule_for(spec.kind)
    who = f"layer {_describe(graph, layer)}"
    if not rule.targetable:
        return _Stop("no neurons", f"{who} has no neurons whose APoZ could be measured")
    calls = graph.calls(layer)
    if len(calls) > 1:
        return _Stop("shared layers (called more than once)",
                     f"{who} is shared (called {len(calls)} times); the APoZ of a shared "
                     "layer's neurons is not supported")
    t = calls[0].outputs[0]
    axis = (_natural_axes(graph) if axes is None else axes).get(t)
    if axis is None:
        return _Stop("no channel axis kerasprune can follow",
                     f"{who} has no channel axis that kerasprune can follow")
    chain = [layer]
    while True:
        current = graph.layers[chain[-1]]
        if rule_for(current.kind).makes_zeros(current):
            return Site(chain[-1], t, axis, tuple(chain))
        step = _why_not(graph, t, axis, chain[-1])
        if isinstance(step, _Stop):
            path = " -> ".join(chain)
            return _Stop(
                f"no ReLU before {step.category}",
                f"cannot measure the APoZ of {who}: {_NO_ZEROS} follows it on its channel path "
                f"({path}): {step.detail}", step.kind)
        name, t, axis = step
        chain.append(name)


def measurement_site(graph: Graph, layer: str) -> Site:
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
    found = _locate(graph, layer)
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
                      check: SiteCheck | None = None, stacklevel: int = 2) -> dict[str, Site]:
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
    names = list(dict.fromkeys(layers if layers is not None else prunable_layers(graph)))
    axes = _natural_axes(graph)
    sites: dict[str, Site] = {}
    skipped: dict[str, _Stop] = {}
    for name in names:
        found = _locate(graph, name, axes)
        if isinstance(found, Site) and check is not None:
            why = check(graph, found)
            if why is not None:
                found = _Stop(f"a site kerasprune cannot read: {why}",
                              f"cannot measure the APoZ of layer {_describe(graph, name)} "
                              f"at {_describe(graph, found.layer)}: {why}")
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
