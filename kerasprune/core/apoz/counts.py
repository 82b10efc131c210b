"""Counting zeros: APoZ of one array (:func:`apoz`) and exact streaming counts
(:class:`ApozCounts`), updated batch by batch, filled from counts made elsewhere and merged
across shards. Zero means exactly zero (``-0.0`` included); NaN activations are an error."""

from __future__ import annotations

import math
import operator
from dataclasses import dataclass
from typing import Final

import numpy as np
import numpy.typing as npt

__all__ = ["ApozCounts", "apoz"]

_INT64_MAX: Final = int(np.iinfo(np.int64).max)


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
