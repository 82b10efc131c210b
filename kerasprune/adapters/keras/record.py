"""What reading a Keras model records: its core graph, and how to build a model again.

:func:`~kerasprune.adapters.keras.convert.to_graph` fills these records (a :class:`Walk` over
the model and the models nested in it) and
:func:`~kerasprune.adapters.keras.build.from_graph` replays them on a changed graph: each
:class:`Call` of a layer or operation, with its arguments (symbolic tensors as
:class:`TensorRef`), in the order of its :class:`ModelRecord`. Plain data, no Keras calls.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Union

import keras

from kerasprune.core.graph import Graph, LayerSpec, Node, Shape
from kerasprune.core.rules.composite import Expansion

__all__ = ["Call", "KerasGraph", "ModelRecord", "Spec", "TensorRef", "Walk"]

Spec = tuple[tuple[Union[int, None], ...], str]
"""A symbolic tensor's full shape (batch axis and unknown dimensions included) and dtype."""


@dataclass(frozen=True)
class TensorRef:
    """A symbolic tensor in a call's arguments, by its id in the graph."""

    tensor: int


@dataclass
class Call:
    """One call in a model: ``outputs = <path>(*args, **kwargs)``, with tensors as
    :class:`TensorRef`."""

    path: str
    args: list[Any]
    kwargs: dict[str, Any]
    outputs: list[int]
    model: ModelRecord | None = None  # the record of a nested model it calls


@dataclass
class ModelRecord:
    """A (nested) model: how to build it again."""

    path: str
    live: keras.Model
    config: dict[str, Any]
    sequential: bool
    inputs: list[tuple[dict[str, Any] | None, int]]  # (InputLayer entry, tensor)
    input_struct: Any  # the model's inputs, with tensor ids as leaves
    steps: list[Call] = field(default_factory=list)
    output_struct: Any = None


@dataclass
class Walk:
    """What converting one model (and the models nested in it) to a graph records: the core
    layer specs, the live layers and config entries they come from, each (nested) model's
    record by path (``plans``), where each operation's constants sit in its call, and the
    shape (core: without the batch axis) and full spec of every tensor."""

    layers: dict[str, LayerSpec] = field(default_factory=dict)
    live: dict[str, Any] = field(default_factory=dict)
    entries: dict[str, dict[str, Any]] = field(default_factory=dict)
    plans: dict[str, ModelRecord] = field(default_factory=dict)
    constants: dict[str, dict[str, tuple[tuple[Any, ...], tuple[int, ...]]]] = field(
        default_factory=dict)  # path -> constant -> (where in the call, original shape)
    nodes: list[Node] = field(default_factory=list)
    shapes: dict[int, Shape] = field(default_factory=dict)
    specs: dict[int, Spec] = field(default_factory=dict)
    top: ModelRecord | None = None

    def tensor(self, spec: Spec) -> int:
        """A new tensor id, for a symbolic tensor of ``spec``."""
        t = len(self.shapes)
        self.specs[t] = spec
        self.shapes[t] = tuple(1 if d is None else int(d) for d in spec[0][1:])
        return t


@dataclass(frozen=True)
class KerasGraph:
    """A model's graph and what is needed to build a Keras model from a changed copy of it.

    ``graph`` is what the core reads: layers that contain layers (a transformer block with a
    :class:`~kerasprune.core.rules.Composite` rule) replaced by their sublayers;
    ``expansion`` relates it to :attr:`source`, the graph of the model's own layers.
    """

    graph: Graph
    model: keras.Model
    walk: Walk
    expansion: Expansion | None = None

    @property
    def source(self) -> Graph:
        """The graph of the model's own layers (containing layers as one node each)."""
        return self.graph if self.expansion is None else self.expansion.source
