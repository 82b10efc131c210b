"""Typed, immutable descriptions of a network: layers, the calls that use them, and tensors.

A network is a directed graph. Tensors are its edges, identified by integers; a :class:`Node`
is one call of a layer, reading some tensors and writing one. A layer called twice (a shared
layer) has two nodes and one :class:`LayerSpec`, so its weights are changed once for both.
A Sequential model is the simplest case: a chain of nodes.

Nothing here knows about any framework. Weights are any array type with ``shape`` (NumPy in
tests; an adapter may keep its backend's tensors to avoid copies), and layer attributes are a
plain mapping of the values the rules read (``data_format``, ``axis``, ``units``...).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from functools import cached_property
from typing import Any, Protocol

__all__ = ["Array", "Graph", "LayerSpec", "Node", "PruneError", "Shape"]

Shape = tuple[int, ...]
"""A tensor's shape without the batch axis."""


class Array(Protocol):
    """Anything with a ``shape``: a NumPy array or a backend tensor."""

    @property
    def shape(self) -> Any: ...


@dataclass(frozen=True)
class LayerSpec:
    """One layer: its kind, the attributes the pruning rules read, and its weights.

    Parameters
    ----------
    name
        Unique name of the layer in the graph (a nested model's layers are ``outer/inner``).
    kind
        The key of the rule that knows this kind of layer (see :mod:`kerasprune.core.rules`);
        the framework's class name, e.g. ``"Dense"``, ``"Conv2D"``, ``"BatchNormalization"``.
    attrs
        Layer attributes, named as in Keras configs: ``units``, ``filters``, ``data_format``,
        ``axis``, ``depth_multiplier``, ``target_shape``... Unknown keys are carried along.
    weights
        Weights by name, in the framework's order (``kernel``, ``bias``, ``gamma``...).
    constants
        Arrays the layer's call reads that are not weights: the constant operands of an
        operation (``x * scale`` with a per-channel ``scale``), by the name the adapter gives
        them. Rules slice them like weights (:class:`~kerasprune.core.rules.WeightAxis`
        names either); they are not parameters, so :mod:`~kerasprune.core.cost` does not
        count them.
    """

    name: str
    kind: str
    attrs: Mapping[str, Any] = field(default_factory=dict)
    weights: Mapping[str, Array] = field(default_factory=dict)
    constants: Mapping[str, Array] = field(default_factory=dict)

    def with_changes(self, attrs: Mapping[str, Any], weights: Mapping[str, Array],
                     constants: Mapping[str, Array] | None = None) -> LayerSpec:
        """Return a copy with some attributes, weights and constants replaced."""
        return replace(self, attrs={**self.attrs, **attrs}, weights={**self.weights, **weights},
                       constants={**self.constants, **(constants or {})})


@dataclass(frozen=True)
class Node:
    """One call of a layer: ``outputs = layer(*inputs)``, tensors given by their ids.

    A layer with several outputs (an RNN's states) lists them all; the rules read the first
    as the layer's output.
    """

    layer: str
    inputs: tuple[int, ...]
    outputs: tuple[int, ...]


@dataclass(frozen=True)
class Graph:
    """A network: layers, the nodes that call them, tensor shapes, and model inputs/outputs.

    Parameters
    ----------
    layers
        Every layer by name, in a topological order.
    nodes
        Every call, in a topological order (each node's inputs are written by earlier nodes
        or are model inputs).
    shapes
        Shape of each tensor id, without the batch axis.
    inputs, outputs
        The model's input and output tensor ids.
    """

    layers: Mapping[str, LayerSpec]
    nodes: tuple[Node, ...]
    shapes: Mapping[int, Shape]
    inputs: tuple[int, ...]
    outputs: tuple[int, ...]

    @staticmethod
    def chain(input_shape: Shape, layers: list[LayerSpec], shapes: list[Shape]) -> Graph:
        """Build the graph of a Sequential model.

        Parameters
        ----------
        input_shape
            Shape of the model input, without the batch axis.
        layers
            The layers in order.
        shapes
            Output shape of each layer, without the batch axis.
        """
        if len(layers) != len(shapes):
            raise ValueError(f"{len(layers)} layers but {len(shapes)} output shapes")
        nodes = tuple(Node(spec.name, (i,), (i + 1,)) for i, spec in enumerate(layers))
        return Graph(
            layers={spec.name: spec for spec in layers},
            nodes=nodes,
            shapes=dict(enumerate([tuple(input_shape), *map(tuple, shapes)])),
            inputs=(0,),
            outputs=(len(layers),),
        )

    @cached_property
    def producers(self) -> dict[int, Node]:
        """Map each tensor id to the node that writes it (model inputs have none)."""
        return {t: node for node in self.nodes for t in node.outputs}

    @cached_property
    def consumers(self) -> dict[int, list[tuple[Node, int]]]:
        """Map each tensor id to the (node, input position) pairs that read it."""
        out: dict[int, list[tuple[Node, int]]] = {}
        for node in self.nodes:
            for pos, t in enumerate(node.inputs):
                out.setdefault(t, []).append((node, pos))
        return out

    @cached_property
    def order(self) -> dict[Node, int]:
        """Map each node to its position in :attr:`nodes`."""
        return {node: i for i, node in enumerate(self.nodes)}

    @cached_property
    def _calls(self) -> dict[str, list[Node]]:
        out: dict[str, list[Node]] = {name: [] for name in self.layers}
        for node in self.nodes:
            out.setdefault(node.layer, []).append(node)
        return out

    def calls(self, layer: str) -> list[Node]:
        """Every node that calls ``layer``, in graph order."""
        return self._calls.get(layer, [])


class PruneError(ValueError):
    """A deletion that cannot be done, with the layer, index and reason in the message.

    Raised before anything is built: a failed request changes nothing.
    """
