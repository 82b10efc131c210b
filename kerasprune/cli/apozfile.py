"""The APoZ file that ``kerasprune apoz -o`` writes and ``kerasprune prune --from`` reads.

JSON: ``{"format": "kerasprune.apoz", "version": 1, "model": {...}, "data": {...},
"rule": {...}, "layers": {name: {...}}}``; each layer holds its ``apoz`` per neuron, the
exact ``zeros`` per neuron and ``total`` values counted per neuron (to merge files measured
on shards of the data), summary statistics, and the neurons the rule selected.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np

from kerasprune.cli.errors import CliError
from kerasprune.cli.io import read_document
from kerasprune.cli.selection import Rule

__all__ = ["FORMAT", "VERSION", "document", "read"]

FORMAT = "kerasprune.apoz"
VERSION = 1


def document(report: Any, rule: Rule, model: Mapping[str, Any],
             data: Mapping[str, Any]) -> dict[str, Any]:
    """The APoZ file's content for a :class:`kerasprune.ApozReport`.

    Parameters
    ----------
    report
        What :func:`kerasprune.get_apoz` returned.
    rule
        The selection rule (its selection and threshold are recorded per layer).
    model, data
        Descriptions of the model and the data.

    Returns
    -------
    dict
        JSON data.
    """
    layers: dict[str, Any] = {}
    for name, values in report.items():
        values = np.asarray(values, dtype=np.float64)
        counts = report.counts[name]
        threshold = rule.threshold(values)
        layers[name] = {
            "measured_at": report.measured_at[name], "neurons": len(values),
            "mean": float(values.mean()), "std": float(values.std()),
            "min": float(values.min()), "max": float(values.max()),
            "threshold": threshold if threshold is None or math.isfinite(threshold) else None,
            "selected": [int(i) for i in rule.select(values)],
            "apoz": [float(v) for v in values],
            "zeros": [int(z) for z in counts.zeros], "total": int(counts.total),
        }
    return {"format": FORMAT, "version": VERSION, "model": dict(model), "data": dict(data),
            "rule": rule.as_dict(), "layers": layers}


def read(path: str) -> dict[str, np.ndarray]:
    """The APoZ per neuron of each layer in an APoZ file.

    Raises
    ------
    CliError
        If the file is missing, not JSON, or not an APoZ file of a known version, or a
        layer's values are not APoZ values.
    """
    where = f"--from {path}"
    doc = read_document(path, where, FORMAT, VERSION, "an APoZ file",
                        "kerasprune apoz MODEL.keras --data DATA -o apoz.json")
    layers = doc.get("layers")
    if not isinstance(layers, dict) or not layers:
        raise CliError(f"{where}: the file has no layers")
    out: dict[str, np.ndarray] = {}
    for name, entry in layers.items():
        values = entry.get("apoz") if isinstance(entry, dict) else None
        try:
            array = np.asarray(values, dtype=np.float64)
        except (TypeError, ValueError):
            array = np.zeros((0,))
        if array.ndim != 1 or not len(array) or not np.all((array >= 0) & (array <= 1)):
            raise CliError(f"{where}: layer '{name}' has no valid 'apoz' list (numbers in "
                           "[0, 1], one per neuron)")
        out[str(name)] = array
    return out
