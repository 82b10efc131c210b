"""The Keras 3 adapter: Keras models to core graphs and back, and the public Keras entry points.

Re-exports only; the modules are layered one way (each imports only those below it)::

    trimming, pruning, sensitivity     workflows: rounds of measuring, pruning, fine-tuning
    stats, speed                       activation/Taylor statistics; measured latency, TFLite
    apoz                               APoZ counted in the forward pass
    surgery, finetune                  delete_neurons, dependency_group, costs...; fit/evaluate
    refs, data, metrics, progress, checkpoint
                                       layer references; the user's data; run bookkeeping
    convert, build                     model -> core graph; core graph -> new model
    record                             what reading a model records (KerasGraph)

``kerasprune.delete_neurons``, ``kerasprune.get_apoz``... are these same functions.
"""

from kerasprune.adapters.keras import convert
from kerasprune.adapters.keras.apoz import ApozReport, get_apoz, high_apoz
from kerasprune.adapters.keras.build import from_graph
from kerasprune.adapters.keras.convert import layer_kind, to_graph
from kerasprune.adapters.keras.record import KerasGraph
from kerasprune.adapters.keras.refs import LayerRef
from kerasprune.adapters.keras.surgery import (
    Deviation,
    costs,
    count,
    delete_neurons,
    dependency_group,
    deviation,
    prunable_layers,
)
from kerasprune.adapters.keras.trimming import TrimConfig, TrimError, TrimResult, TrimRound, trim
from kerasprune.core.surgery import Prunability

__all__ = [
    "ApozReport",
    "Deviation",
    "KerasGraph",
    "LayerRef",
    "Prunability",
    "TrimConfig",
    "TrimError",
    "TrimResult",
    "TrimRound",
    "costs",
    "count",
    "delete_neurons",
    "dependency_group",
    "deviation",
    "from_graph",
    "get_apoz",
    "high_apoz",
    "layer_kind",
    "prunable_layers",
    "to_graph",
    "trim",
]


def __getattr__(name: str) -> object:
    if name == "LAYER_KINDS":  # deprecated: convert's own __getattr__ warns
        return getattr(convert, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
