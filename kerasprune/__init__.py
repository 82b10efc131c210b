"""kerasprune: make trained Keras models smaller by deleting whole neurons.

The Keras entry points (:func:`delete_neurons`, :func:`get_apoz`, :func:`prune`,
:func:`get_stats`, :func:`sensitivity`...) are loaded lazily, so ``import kerasprune.core``
never imports keras or tensorflow.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_ADAPTER = "kerasprune.adapters.keras"
_SPEED = "kerasprune.adapters.keras.speed"
_PRUNE = "kerasprune.adapters.keras.pruning"
_STATS = "kerasprune.adapters.keras.stats"
_SENSITIVITY = "kerasprune.adapters.keras.sensitivity"
_LAZY = {
    "delete_neurons": _ADAPTER,
    "dependency_group": _ADAPTER,
    "get_apoz": _ADAPTER,
    "high_apoz": _ADAPTER,
    "trim": _ADAPTER,
    "TrimConfig": _ADAPTER,
    "TrimError": _ADAPTER,
    "TrimResult": _ADAPTER,
    "costs": _ADAPTER,
    "count": _ADAPTER,
    "prunable_layers": _ADAPTER,
    "to_graph": _ADAPTER,
    "from_graph": _ADAPTER,
    "PruneError": "kerasprune.core.graph",
    "UnsupportedLayerError": "kerasprune.core.rules",
    "load_mnist": "kerasprune.datasets",
    "measure_latency": _SPEED,
    "speedup": _SPEED,
    "LatencyReport": _SPEED,
    "SpeedupReport": _SPEED,
    "TfliteError": _SPEED,
    "prune": "kerasprune.prune",
    "PruneResult": _PRUNE,
    "PruneStep": _PRUNE,
    "latency_target": _PRUNE,
    "get_stats": _STATS,
    "StatsReport": _STATS,
    "sensitivity": _SENSITIVITY,
    "SensitivityReport": _SENSITIVITY,
    "Params": "kerasprune.core.targets",
    "Flops": "kerasprune.core.targets",
    "Cost": "kerasprune.core.targets",
    "Plan": "kerasprune.core.plan",
    "PlanError": "kerasprune.core.plan",
    "deviation": _ADAPTER,
    "Deviation": _ADAPTER,
}

__all__ = ["__version__", *_LAZY]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        module = importlib.import_module(_LAZY[name])
        # kerasprune.prune is a callable module (the function and Keras-Prune's namespace)
        return module if _LAZY[name] == f"{__name__}.{name}" else getattr(module, name)
    raise AttributeError(f"module 'kerasprune' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
