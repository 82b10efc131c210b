"""Which way a Keras metric improves: higher (``"max"``) or lower (``"min"``) is better.

:func:`kerasprune.trim` keeps a model only while its metric stays within a tolerance of the
start, so it must know which way is worse. The answer comes from the metric objects the
model was compiled with (``model.metrics``): each public ``keras.metrics`` class has one entry
in :data:`DIRECTIONS`. A string Keras compiles to one of them (``"mae"`` is a
``MeanAbsoluteError``) is found through its object; losses are lower-is-better; a metric
Keras cannot tell about (a plain function, ``Mean``, ``Sum``, counts of true/false
positives) has no direction, and the caller must be told which.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

import keras

__all__ = ["DIRECTIONS", "NAMES", "direction"]

DIRECTIONS: dict[str, str] = {
    **dict.fromkeys((
        "Accuracy", "BinaryAccuracy", "CategoricalAccuracy", "SparseCategoricalAccuracy",
        "TopKCategoricalAccuracy", "SparseTopKCategoricalAccuracy", "AUC", "Precision",
        "Recall", "PrecisionAtRecall", "RecallAtPrecision", "SensitivityAtSpecificity",
        "SpecificityAtSensitivity", "F1Score", "FBetaScore", "IoU", "BinaryIoU", "MeanIoU",
        "OneHotIoU", "OneHotMeanIoU", "R2Score", "CosineSimilarity", "PearsonCorrelation",
        "ConcordanceCorrelation"), "max"),
    **dict.fromkeys((
        "MeanSquaredError", "MeanAbsoluteError", "MeanAbsolutePercentageError",
        "MeanSquaredLogarithmicError", "RootMeanSquaredError", "LogCoshError", "Hinge",
        "SquaredHinge", "CategoricalHinge", "KLDivergence", "Poisson", "BinaryCrossentropy",
        "CategoricalCrossentropy", "SparseCategoricalCrossentropy"), "min"),
}
"""Direction of each public ``keras.metrics`` class, by class name (as Keras' own
``EarlyStopping`` would infer it); classes missing from an older Keras are skipped."""

NAMES: dict[str, str] = {
    "loss": "min", "accuracy": "max", "acc": "max", "mae": "min", "mse": "min", "mape": "min",
    "msle": "min", "rmse": "min", "mean_absolute_error": "min", "mean_squared_error": "min",
    "root_mean_squared_error": "min", "mean_absolute_percentage_error": "min",
    "mean_squared_logarithmic_error": "min", "auc": "max", "precision": "max",
    "recall": "max",
}
"""Directions by name, for results whose metric object cannot be found (a name is matched
exactly or as the end of a multi-output name, ``"out_mae"``)."""


def _metric_objects(metrics: Iterable[Any], depth: int = 0) -> Iterator[Any]:
    """Every metric object, those inside containers (``CompileMetrics``) included."""
    for m in metrics:
        inner = getattr(m, "metrics", None)
        if depth < 3 and isinstance(inner, (list, tuple)) and inner and inner is not metrics:
            yield from _metric_objects(inner, depth + 1)
        yield m


def _class_direction(metric: Any) -> str | None:
    for class_name, way in DIRECTIONS.items():
        cls = getattr(keras.metrics, class_name, None)
        if cls is not None and isinstance(metric, cls):
            return way
    return None


def direction(model: keras.Model, name: str) -> str | None:
    """``"max"`` or ``"min"`` for one key of ``model.evaluate``'s results, or ``None``.

    Parameters
    ----------
    model
        A compiled model that has been evaluated (so its metrics are built).
    name
        A key of what ``model.evaluate(..., return_dict=True)`` returned.

    Returns
    -------
    str or None
        ``"max"`` if higher is better, ``"min"`` if lower is, ``None`` if Keras cannot tell.
    """
    if name == "loss" or name.endswith("_loss"):
        return "min"
    for metric in _metric_objects(getattr(model, "metrics", ())):
        if getattr(metric, "name", None) == name:
            found = _class_direction(metric)
            if found is not None:
                return found
    for alias, way in NAMES.items():
        if name == alias or name.endswith("_" + alias):
            return way
    return None
