"""Framework-free pruning core: NumPy only, never imports keras or tensorflow.

- :mod:`~kerasprune.core.graph`: typed, frozen descriptions of layers and networks.
- :mod:`~kerasprune.core.rules`: one rule per layer kind (the registry).
- :mod:`~kerasprune.core.surgery`: deleting neurons with every coupled deletion.
- :mod:`~kerasprune.core.cost`: parameter and FLOP counts.
- :mod:`~kerasprune.core.apoz`: Average Percentage of Zeros, streaming.
"""

from kerasprune.core.graph import Graph, LayerSpec, Node, PruneError
from kerasprune.core.rules import RULES, UnsupportedLayerError, register, supported_kinds
from kerasprune.core.surgery import (
    Deletion,
    apply_deletion,
    delete_neurons,
    dependency_group,
    neuron_count,
    prunable_layers,
)

__all__ = [
    "RULES",
    "Deletion",
    "Graph",
    "LayerSpec",
    "Node",
    "PruneError",
    "UnsupportedLayerError",
    "apply_deletion",
    "delete_neurons",
    "dependency_group",
    "neuron_count",
    "prunable_layers",
    "register",
    "supported_kinds",
]
