"""Plain-text formatting shared by the subcommands: numbers and aligned tables."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

__all__ = ["costs_data", "human", "ratio", "table"]


def human(n: float) -> str:
    """``1234567`` as ``1.23M``; small numbers as they are."""
    for unit, size in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(n) >= size:
            return f"{n / size:.2f}{unit}"
    return f"{n:.0f}"


def ratio(before: float, after: float) -> str:
    """How many times smaller ``after`` is, such as ``8.28x smaller``."""
    return f"{before / after:.2f}x smaller" if after else "n/a"


def table(rows: Sequence[Sequence[str]], right: Sequence[int] = ()) -> str:
    """Rows as aligned columns under a header rule; columns in ``right`` right-aligned.

    Parameters
    ----------
    rows
        The header row first, then the body; every row has the same number of cells.
    right
        Indices of right-aligned columns (numbers).

    Returns
    -------
    str
        The table, without trailing spaces.
    """
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]

    def line(row: Sequence[str]) -> str:
        cells = [c.rjust(w) if i in right else c.ljust(w)
                 for i, (c, w) in enumerate(zip(row, widths, strict=True))]
        return "  ".join(cells).rstrip()

    return "\n".join([line(rows[0]), "  ".join("-" * w for w in widths),
                      *(line(r) for r in rows[1:])])


def costs_data(costs: Iterable[Any]) -> list[dict[str, Any]]:
    """:class:`kerasprune.core.cost.LayerCost` entries as JSON data."""
    return [{"name": c.name, "kind": c.kind, "width": c.width, "params": c.params,
             "flops": c.flops} for c in costs]
