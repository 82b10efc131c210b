"""The limits file that ``kerasprune sensitivity --limits-out`` writes and ``kerasprune prune
--limits`` reads.

JSON: ``{"format": "kerasprune.limits", "version": 1, "model": {...}, "data": {...},
"criterion": ..., "metric": ..., "tolerance": ..., "max_fraction": {layer: share},
"protect": [layer, ...]}``: what :meth:`kerasprune.SensitivityReport.limits` gives for the
tolerance, which :func:`kerasprune.prune` takes as ``max_fraction`` and ``protect``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from kerasprune.cli.errors import CliError
from kerasprune.cli.io import read_document

__all__ = ["FORMAT", "VERSION", "Limits", "document", "read"]

FORMAT = "kerasprune.limits"
VERSION = 1


@dataclass(frozen=True)
class Limits:
    """Per-layer limits read from a file.

    Attributes
    ----------
    max_fraction : dict
        ``{layer: largest share of its neurons that may go}``.
    protect : list of str
        Layers none of whose neurons may go.
    model : str
        The name of the model they were measured on.
    """

    max_fraction: dict[str, float]
    protect: list[str]
    model: str


def document(report: Any, tolerance: float, model: Mapping[str, Any],
             data: Mapping[str, Any]) -> dict[str, Any]:
    """The limits file's content for a :class:`kerasprune.SensitivityReport`.

    Parameters
    ----------
    report
        What :func:`kerasprune.sensitivity` returned.
    tolerance
        The accepted loss of the metric, in its units.
    model, data
        Descriptions of the model and the data.

    Returns
    -------
    dict
        JSON data.
    """
    limits = report.limits(tolerance)
    return {"format": FORMAT, "version": VERSION, "model": dict(model), "data": dict(data),
            "criterion": report.criterion, "metric": report.metric, "mode": report.mode,
            "baseline": float(report.baseline), "tolerance": float(tolerance),
            "max_fraction": {k: float(v) for k, v in limits["max_fraction"].items()},
            "protect": [str(n) for n in limits["protect"]]}


def read(path: str, option: str = "--limits") -> Limits:
    """The limits in a limits file.

    Raises
    ------
    CliError
        If the file is missing, not JSON, not a limits file of a known version, or its
        limits are not of the right shape (shares in (0, 1] by layer name, a list of names).
    """
    where = f"{option} {path}"
    doc = read_document(path, where, FORMAT, VERSION, "a limits file",
                        "kerasprune sensitivity MODEL.keras --data DATA --limits-out "
                        "limits.json")
    shares, protect = doc.get("max_fraction"), doc.get("protect")
    if not isinstance(shares, dict):
        raise CliError(f"{where}: 'max_fraction' must map layer names to shares in (0, 1]")
    for name, value in shares.items():
        if (isinstance(value, bool) or not isinstance(value, (int, float))
                or not math.isfinite(value) or not 0 < value <= 1):
            raise CliError(f"{where}: 'max_fraction' of layer '{name}' is {value!r}; a share "
                           "in (0, 1] is expected")
    if not isinstance(protect, list) or not all(isinstance(n, str) for n in protect):
        raise CliError(f"{where}: 'protect' must be a list of layer names")
    model = doc.get("model")
    name = model.get("name") if isinstance(model, dict) else None
    return Limits({str(k): float(v) for k, v in shares.items()}, list(protect),
                  str(name) if name is not None else "?")
