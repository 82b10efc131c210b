"""Framework-free pruning core: NumPy only, never imports keras or tensorflow.

- :mod:`~kerasprune.core.graph`: typed, frozen descriptions of layers and networks.
- :mod:`~kerasprune.core.rules`: one rule per layer kind (the registry, :class:`RuleSet`).
- :mod:`~kerasprune.core.channels`: every tensor's channel axis, once per graph.
- :mod:`~kerasprune.core.surgery`: deleting neurons with every coupled deletion.
- :mod:`~kerasprune.core.cost`: parameter and FLOP counts.
- :mod:`~kerasprune.core.apoz`: Average Percentage of Zeros: counts, selection, sites.
"""

from kerasprune.core.channels import ChannelAxes, channel_axes
from kerasprune.core.graph import Graph, LayerSpec, Node, PruneError
from kerasprune.core.rules import RULES, RuleSet, UnsupportedLayerError, register, supported_kinds
from kerasprune.core.surgery import (
    Deletion,
    apply_deletion,
    delete_neurons,
    dependency_group,
    neuron_count,
    part_name,
    prunable_layers,
    zeroed_graph,
)

__all__ = [
    "RULES",
    "ChannelAxes",
    "Deletion",
    "Graph",
    "LayerSpec",
    "Node",
    "PruneError",
    "RuleSet",
    "UnsupportedLayerError",
    "apply_deletion",
    "channel_axes",
    "delete_neurons",
    "dependency_group",
    "neuron_count",
    "part_name",
    "prunable_layers",
    "register",
    "supported_kinds",
    "zeroed_graph",
]
