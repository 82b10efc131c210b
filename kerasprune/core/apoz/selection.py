"""Selecting channels to delete from their APoZ values: the paper's rule (above mean + k std),
a cutoff, both, or a top fraction (:func:`select_high_apoz`). It never selects every channel
of a layer."""

from __future__ import annotations

import math
import warnings
from fractions import Fraction
from typing import Any, Final

import numpy as np
import numpy.typing as npt

__all__ = ["METHODS", "balance_blocks", "high_apoz", "select_high_apoz"]

METHODS: Final = ("std", "absolute", "both", "top")
"""The selection methods of :func:`select_high_apoz`."""



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


def select_high_apoz(
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
    >>> select_high_apoz([0.1, 0.2, 0.1, 0.9]).tolist()
    [3]
    >>> select_high_apoz([0.6, 0.7, 0.8], "absolute", cutoff=0.5).tolist()
    [1, 2]
    >>> select_high_apoz([0.5, 0.9, 0.1, 0.9], "top", fraction=0.5).tolist()
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


def high_apoz(apoz: npt.ArrayLike, method: str = "std", **kwargs: Any) -> npt.NDArray[np.int64]:
    """Deprecated name of :func:`select_high_apoz` in the core.

    It collided with the Keras adapter's :func:`kerasprune.high_apoz`, which measures a model
    and then selects; this one only selects from values already measured. It warns and calls
    :func:`select_high_apoz` with the same arguments.
    """
    warnings.warn("kerasprune.core.apoz.high_apoz is deprecated: it is now "
                  "kerasprune.core.apoz.select_high_apoz (kerasprune.high_apoz is the Keras "
                  "function that measures a model first)", DeprecationWarning, stacklevel=2)
    return select_high_apoz(apoz, method, **kwargs)


def balance_blocks(selected: npt.ArrayLike, apoz: npt.ArrayLike,
                   blocks: int) -> npt.NDArray[np.int64]:
    """A selection cut to the same number of channels in each of ``blocks`` equal, contiguous
    blocks (a grouped convolution's groups, which must keep one size).

    Every block keeps as many selected channels as the block with the fewest, its highest
    APoZ ones (among ties, the higher indices). ``blocks=1`` returns the selection sorted.

    Examples
    --------
    >>> balance_blocks([0, 1, 5], [0.9, 0.8, 0.1, 0.1, 0.2, 0.7], 2).tolist()
    [0, 5]
    """
    chosen = np.asarray(selected, dtype=np.int64)
    values = np.asarray(apoz, dtype=np.float64)
    if blocks <= 1 or chosen.size == 0:
        return np.sort(chosen)
    per = values.size // blocks
    block_of = chosen // per
    keep = min(int(np.count_nonzero(block_of == b)) for b in range(blocks))
    out = []
    for b in range(blocks):
        mine = chosen[block_of == b]
        ranked = mine[np.argsort(values[mine], kind="stable")]
        out.append(ranked[ranked.size - keep:])
    return np.sort(np.concatenate(out)).astype(np.int64)

