"""Checks of scalar arguments, with messages that name the argument.

Booleans are refused where a number is expected (``True`` is an ``int`` to Python, never to a
user), and NumPy scalars are accepted like Python ones.
"""

from __future__ import annotations

import math
import operator

import numpy as np

__all__ = ["as_int", "as_real"]


def as_int(name: str, value: object, minimum: int | None = None) -> int:
    """``value`` as an ``int``, at least ``minimum`` if given.

    Raises
    ------
    TypeError
        ``value`` is not an integer (or is a bool).
    ValueError
        ``value`` is below ``minimum``.
    """
    if isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name} must be an int, got {value!r}")
    try:
        out = operator.index(value)  # type: ignore[arg-type]
    except TypeError:
        raise TypeError(f"{name} must be an int, got {value!r}") from None
    if minimum is not None and out < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {out}")
    return out


def as_real(name: str, value: object) -> float:
    """``value`` as a finite ``float``.

    Raises
    ------
    TypeError
        ``value`` is not a real number (or is a bool).
    ValueError
        ``value`` is NaN or infinite.
    """
    if isinstance(value, (bool, np.bool_)) or not isinstance(
            value, (int, float, np.integer, np.floating)):
        raise TypeError(f"{name} must be a real number, got {value!r}")
    out = float(value)
    if not math.isfinite(out):
        raise ValueError(f"{name} must be finite, got {value!r}")
    return out
