"""Streaming per-channel statistics of activations and gradients, for importance criteria.

Like :class:`~kerasprune.core.apoz.ApozCounts`, each statistic is a frozen value updated batch
by batch in ``O(channels)`` memory and merged across batches, shards and replicas. Counts are
exact integers; sums are float64 (merging is exact up to float64 rounding, and in any order).

- :class:`ActivationStats`: the mean magnitude ``mean |a|`` of each channel's activations.
- :class:`TaylorStats`: the first-order Taylor importance of each channel, Molchanov et al.
  2017, "Pruning Convolutional Neural Networks for Resource Efficient Inference" (ICLR 2017,
  arXiv:1611.06440), eq. 8: for each sample, ``|mean over positions of a * dL/da|``, averaged
  over samples.

Arrays may be anything :func:`numpy.asarray` accepts. NaN and infinity are errors: they are
no measurement.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np
import numpy.typing as npt

from kerasprune.core.checks import as_int

__all__ = ["ActivationStats", "ChannelMeans", "TaylorStats"]

FloatArray = npt.NDArray[np.float64]
_S = TypeVar("_S", bound="ChannelMeans")


def _axis(channel_axis: Any, ndim: int, what: str) -> int:
    """``channel_axis`` checked against an array of ``ndim`` axes, made non-negative."""
    axis = as_int("channel_axis", channel_axis)
    if not -ndim <= axis < ndim:
        raise ValueError(f"channel_axis {axis} is out of range for {what} with {ndim} axes")
    return axis % ndim


def _finite(values: npt.ArrayLike, what: str) -> FloatArray:
    """``values`` as a float64 array with at least one axis and only finite values."""
    arr = np.asarray(values)
    if not (np.issubdtype(arr.dtype, np.number) or arr.dtype == np.bool_) or np.issubdtype(
            arr.dtype, np.complexfloating):
        raise TypeError(f"{what} must be real numbers, got dtype {arr.dtype}")
    if arr.ndim == 0:
        raise ValueError(f"{what} must have a channel axis, got a scalar")
    out = arr.astype(np.float64, copy=False)
    bad = int(np.count_nonzero(~np.isfinite(out)))
    if bad:
        raise ValueError(f"{what} contain {bad} NaN or infinite value{'s' if bad > 1 else ''}")
    return out


@dataclass(frozen=True, eq=False)
class ChannelMeans:
    """Per-channel sums and the count they are divided by, streamed and mergeable.

    The base of :class:`ActivationStats` and :class:`TaylorStats`, which differ only in what
    one batch adds. Every method returns a new object; :attr:`sums` is read-only.

    Parameters
    ----------
    sums
        The per-channel sum (float64, 1-D). Length 0 means the channel count is not known yet
        (then ``count`` must be 0); the first batch or merge sets it.
    count
        How many terms each sum holds.
    """

    sums: FloatArray
    count: int

    def __post_init__(self) -> None:
        sums = _finite(self.sums, "sums") if np.size(self.sums) else np.zeros(0)
        if sums.ndim != 1:
            raise ValueError(f"sums must be 1-D (one per channel), got shape {sums.shape}")
        count = as_int("count", self.count, minimum=0)
        if sums.size == 0 and count:
            raise ValueError(f"count is {count} but there are no channels")
        frozen = np.array(sums, dtype=np.float64)
        frozen.flags.writeable = False
        object.__setattr__(self, "sums", frozen)
        object.__setattr__(self, "count", count)

    @classmethod
    def empty(cls: type[_S], channels: int | None = None) -> _S:
        """Nothing measured yet; ``channels`` ``None`` takes the count from the first batch."""
        if channels is None:
            return cls(np.zeros(0), 0)
        return cls(np.zeros(as_int("channels", channels, minimum=1)), 0)

    @property
    def channels(self) -> int | None:
        """Number of channels, or ``None`` while not known yet."""
        return int(self.sums.size) if self.sums.size else None

    def _plus(self: _S, sums: FloatArray, count: int, what: str) -> _S:
        if self.channels is not None and sums.size != self.channels:
            raise ValueError(f"channel count mismatch: these statistics have {self.channels} "
                             f"channels, {what} has {sums.size}")
        if self.channels is None:
            return type(self)(sums, count)
        return type(self)(self.sums + sums, self.count + count)

    def merge(self: _S, other: _S) -> _S:
        """Combine with the same statistics of other data (another shard or replica).

        Raises
        ------
        TypeError
            If ``other`` is not of the same class.
        ValueError
            If both know their channel count and the counts differ.
        """
        if type(other) is not type(self):
            raise TypeError(f"can only merge {type(self).__name__} with its own kind, got "
                            f"{type(other).__name__}")
        if other.channels is None:
            return self
        return self._plus(other.sums, other.count, "the other statistics")

    def result(self) -> FloatArray:
        """The per-channel mean ``sums / count`` (a new float64 array).

        Raises
        ------
        ValueError
            If nothing has been measured yet.
        """
        if self.count == 0:
            raise ValueError(f"no data measured yet: {type(self).__name__} is empty")
        return self.sums / float(self.count)

    def __eq__(self, other: object) -> bool:
        if type(other) is not type(self):
            return NotImplemented
        assert isinstance(other, ChannelMeans)
        return self.count == other.count and np.array_equal(self.sums, other.sums)

    def __hash__(self) -> int:
        return hash((type(self).__name__, self.count, self.sums.tobytes()))


class ActivationStats(ChannelMeans):
    """Mean activation magnitude of each channel: ``sums[c]`` is the sum of ``|a|`` over
    every sample and position of channel ``c``; ``count`` is the number of values per channel.

    Examples
    --------
    >>> stats = ActivationStats.empty().update([[1.0, -2.0], [3.0, 0.0]])
    >>> stats.result().tolist()
    [2.0, 1.0]
    """

    def update(self, activations: npt.ArrayLike, channel_axis: int = -1) -> ActivationStats:
        """Add one batch.

        Parameters
        ----------
        activations
            Any shape with a channel axis; every other axis (samples, positions) is summed.
        channel_axis
            The axis of channels (-1 for channels_last, 1 for channels_first).

        Raises
        ------
        ValueError
            NaN or infinite values, a bad axis, or a channel count unlike the previous ones.
        TypeError
            Non-numeric activations or a non-integer axis.
        """
        arr = _finite(activations, "activations")
        axis = _axis(channel_axis, arr.ndim, "activations")
        if arr.shape[axis] == 0:
            raise ValueError(f"activations have no channels (axis {axis} of {arr.shape})")
        others = tuple(i for i in range(arr.ndim) if i != axis)
        sums = np.abs(arr).sum(axis=others) if others else np.abs(arr)
        count = math.prod(arr.shape[i] for i in others)
        return self._plus(np.asarray(sums, dtype=np.float64), count, "the batch")


class TaylorStats(ChannelMeans):
    """First-order Taylor importance of each channel (Molchanov et al. 2017, eq. 8).

    For one sample and channel ``c`` with activations ``a`` and gradients ``g = dL/da`` over
    ``M`` positions, the term is ``|(1/M) sum_m a_m g_m|``: the first-order estimate of how
    much the loss changes if the channel is set to zero. ``sums[c]`` adds these terms over
    samples; ``count`` is the number of samples; :meth:`result` is their mean. The paper then
    divides each layer's values by their L2 norm (``normalize="l2"`` in
    :func:`kerasprune.core.scores.score_groups`).

    Gradients must be per sample: those of the *sum* of the per-sample losses (the gradient
    of a batch's mean loss is that divided by the batch size, which would weigh batches of
    different sizes differently).

    Examples
    --------
    >>> a = [[[1.0, 2.0], [3.0, 0.0]]]          # one sample, two positions, two channels
    >>> g = [[[1.0, 1.0], [-1.0, 5.0]]]
    >>> TaylorStats.empty().update(a, g).result().tolist()
    [1.0, 1.0]
    """

    def update(self, activations: npt.ArrayLike, gradients: npt.ArrayLike,
               channel_axis: int = -1) -> TaylorStats:
        """Add one batch of activations and the loss gradients with respect to them.

        Parameters
        ----------
        activations, gradients
            The same shape, samples on axis 0, channels on ``channel_axis``.
        channel_axis
            The axis of channels (-1 for channels_last, 1 for channels_first); not 0.

        Raises
        ------
        ValueError
            Shapes that differ, a channel axis that is the sample axis or out of range, NaN or
            infinite values, or a channel count unlike the previous ones.
        TypeError
            Non-numeric arrays or a non-integer axis.
        """
        a = _finite(activations, "activations")
        g = _finite(gradients, "gradients")
        if a.shape != g.shape:
            raise ValueError(f"activations {a.shape} and gradients {g.shape} differ in shape")
        if a.ndim < 2:
            raise ValueError(f"activations need a sample axis and a channel axis, got {a.shape}")
        axis = _axis(channel_axis, a.ndim, "activations")
        if axis == 0:
            raise ValueError("channel_axis is the sample axis (0); channels must be another")
        positions = tuple(i for i in range(1, a.ndim) if i != axis)
        per_sample = (a * g).mean(axis=positions) if positions else a * g  # (samples, channels)
        return self._plus(np.abs(per_sample).sum(axis=0), int(a.shape[0]), "the batch")
