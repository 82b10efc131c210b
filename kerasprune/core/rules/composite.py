"""Layers that contain other layers: a rule that says how the sublayers are wired.

A Keras layer may hold layers of its own and wire them in its ``call`` (KerasHub's
``TransformerEncoder``: attention, residual adds, layer norms, a feed-forward pair of
``Dense``). The graph of the model shows it as one node, which no deletion can pass. A
:class:`Composite` rule, registered for the containing class, describes its inside as a small
graph (:class:`Wiring`): the sublayers (:class:`Inner`, each of a kind that has a rule of its
own), the calls between them (:class:`Step`) and which tensors are the block's inputs and
outputs. :func:`expand_composites` replaces every node of such a layer by its inside, so
every analysis (deletions, costs, criteria) reaches the sublayers, named ``block/sublayer``;
:func:`collapse_composites` turns a changed expanded graph back into the model's own graph,
each containing layer with the attributes its sublayers' changes imply
(:meth:`Composite.block_updates`, e.g. ``intermediate_dim``) and its sublayers' new weights.

The containing layer's weights are named by the path inside it, ``sublayer/weight``
(``"feedforward_intermediate_dense/kernel"``); each sublayer gets those under its name.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from kerasprune.core.graph import Graph, LayerSpec, Node, PruneError, Shape
from kerasprune.core.rules.base import Link, Rule, RuleSet, UnsupportedLayerError

__all__ = [
    "Composite",
    "Expansion",
    "Inner",
    "Step",
    "Wiring",
    "collapse_composites",
    "expand_composites",
]

@dataclass(frozen=True)
class Inner:
    """A sublayer: its name inside the containing layer, its kind and the attributes its rule
    reads (``units``, ``num_heads``...)."""

    name: str
    kind: str
    attrs: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Step:
    """One call inside a containing layer: ``output = layer(*inputs)``, tensors by local
    names."""

    layer: str
    inputs: tuple[str, ...]
    output: str


@dataclass(frozen=True)
class Wiring:
    """The inside of one containing layer.

    Parameters
    ----------
    layers
        The sublayers; a sublayer called by several steps is shared (one set of weights).
    steps
        The calls, in an order in which each step's inputs are already made.
    inputs
        The local name of each input of the containing layer's node, in the node's order;
        ``None`` for an input no sublayer reads as channels (a padding mask).
    outputs
        The local names of the containing layer's outputs, in the node's order.
    shapes
        The shape (without the batch axis) of every tensor made inside.
    """

    layers: tuple[Inner, ...]
    steps: tuple[Step, ...]
    inputs: tuple[str | None, ...]
    outputs: tuple[str, ...]
    shapes: Mapping[str, Shape]


class Composite(Rule):
    """The rule of a layer that contains other layers: how they are wired.

    Subclasses give :meth:`wiring` (the inside of one layer, from its attributes and its
    input shapes) and :meth:`block_updates` (the containing layer's attributes once its
    sublayers changed). Everything else is the sublayers' own rules: nothing passes the
    containing layer as one node (:func:`expand_composites` replaces it first).
    """

    def wiring(self, spec: LayerSpec, in_shapes: Sequence[Shape],
               out_shapes: Sequence[Shape]) -> Wiring:
        """The inside of ``spec``, called on inputs of ``in_shapes``.

        Raises
        ------
        PruneError
            If this layer is built in a way the rule does not describe.
        """
        raise NotImplementedError

    def block_updates(self, spec: LayerSpec, inner: Mapping[str, LayerSpec],
                      before: Mapping[str, LayerSpec]) -> dict[str, Any]:
        """The attributes of the containing layer (``intermediate_dim``...) once its
        sublayers are ``inner`` (by local name; ``before``: as they were).

        Raises
        ------
        PruneError
            If the layer cannot be made again with those sublayers from its attributes.
        """
        return {}

    def link(self, spec: LayerSpec, in_shapes: Sequence[Shape], out_shape: Shape,
             axis: int) -> Link | None:
        raise UnsupportedLayerError(
            f"{self.describe(spec)} contains other layers: read the graph through "
            "kerasprune.core.expand_composites to reach them")


@dataclass(frozen=True)
class Expansion:
    """A graph whose containing layers are replaced by their insides.

    Parameters
    ----------
    graph
        The expanded graph: each containing layer's node replaced by its sublayers' nodes
        (layers ``block/sublayer``; tensors of the original graph keep their ids).
    source
        The graph as given.
    blocks
        For each containing layer (by name in ``source``): its sublayers' names in ``graph``,
        by local name.
    rules
        The rules it was expanded with.
    """

    graph: Graph
    source: Graph
    blocks: Mapping[str, Mapping[str, str]]
    rules: RuleSet


def _inner_weights(spec: LayerSpec, name: str) -> dict[str, Any]:
    prefix = f"{name}/"
    return {k[len(prefix):]: v for k, v in spec.weights.items() if k.startswith(prefix)}


def _expand_once(graph: Graph, rules: RuleSet
                 ) -> tuple[Graph, dict[str, dict[str, str]]] | None:
    """Replace the nodes of every containing layer of ``graph`` by their insides; ``None`` if
    there is none."""
    wired: dict[Node, Wiring] = {}
    for node in graph.nodes:
        spec = graph.layers[node.layer]
        rule = rules.rule_for(spec.kind)
        if isinstance(rule, Composite):
            wiring = wired[node] = rule.wiring(spec, [graph.shapes[t] for t in node.inputs],
                                               [graph.shapes[t] for t in node.outputs])
            if len(wiring.inputs) != len(node.inputs) or len(wiring.outputs) != len(
                    node.outputs):
                raise PruneError(
                    f"{rule.describe(spec)} is called with {len(node.inputs)} inputs and "
                    f"{len(node.outputs)} outputs, but its rule wires {len(wiring.inputs)} "
                    f"and {len(wiring.outputs)}")
    if not wired:
        return None
    first: dict[str, Wiring] = {}
    for node, wiring in wired.items():
        first.setdefault(node.layer, wiring)
    layers: dict[str, LayerSpec] = {}
    blocks: dict[str, dict[str, str]] = {}
    for name, spec in graph.layers.items():  # inner layers where their block was
        if name in first:
            blocks[name] = _add_inner(spec, first[name], layers)
        else:
            layers[name] = spec
    fresh = itertools.count(max([*graph.shapes, -1]) + 1)
    nodes: list[Node] = []
    shapes = dict(graph.shapes)
    for node in graph.nodes:
        inside = wired.get(node)
        if inside is None:
            nodes.append(node)
            continue
        wiring = inside
        where = rules.rule_for(graph.layers[node.layer].kind).describe(graph.layers[node.layer])
        local: dict[str, int] = {n: t for n, t in zip(wiring.inputs, node.inputs, strict=True)
                                 if n is not None}
        for out_name, t in zip(wiring.outputs, node.outputs, strict=True):
            if out_name in local:
                raise PruneError(f"{where}: its rule returns input '{out_name}' unchanged, "
                                 "which kerasprune does not support")
            local[out_name] = t
        made: set[str] = set()
        for step in wiring.steps:
            missing = [i for i in step.inputs if i not in local or (
                i not in made and i not in wiring.inputs)]
            if missing:
                raise PruneError(f"{where}: its rule's step '{step.layer}' reads "
                                 f"{', '.join(missing)}, which no earlier step makes")
            if step.output in made or step.output in wiring.inputs:
                raise PruneError(f"{where}: its rule writes '{step.output}' twice")
            made.add(step.output)
            if step.output not in local:
                local[step.output] = next(fresh)
                shapes[local[step.output]] = tuple(wiring.shapes[step.output])
            nodes.append(Node(f"{node.layer}/{step.layer}", tuple(local[i] for i in step.inputs),
                              (local[step.output],)))
    return Graph(layers=layers, nodes=tuple(nodes), shapes=shapes, inputs=graph.inputs,
                 outputs=graph.outputs), blocks


def _add_inner(spec: LayerSpec, wiring: Wiring, layers: dict[str, LayerSpec]
               ) -> dict[str, str]:
    """Add the sublayers of ``spec`` to ``layers``; their full names by local name."""
    claimed: set[str] = set()
    members: dict[str, str] = {}
    for inner in wiring.layers:
        full = f"{spec.name}/{inner.name}"
        weights = _inner_weights(spec, inner.name)
        claimed.update(f"{inner.name}/{k}" for k in weights)
        layers[full] = LayerSpec(full, inner.kind, dict(inner.attrs), weights)
        members[inner.name] = full
    unclaimed = [k for k in spec.weights if k not in claimed]
    if unclaimed:
        raise PruneError(
            f"layer '{spec.name}' ({spec.kind}) holds weights its rule gives to no sublayer "
            f"({', '.join(unclaimed[:4])}); the rule's wiring must name every sublayer "
            "(weights are named 'sublayer/weight')")
    return members


def expand_composites(graph: Graph, rules: RuleSet | None = None) -> Expansion:
    """Replace every layer that contains layers (a :class:`Composite` rule) by its inside.

    Parameters
    ----------
    graph
        The network, with containing layers as single nodes whose weights are named
        ``sublayer/weight``.
    rules
        The rules; :data:`~kerasprune.core.rules.RULES` by default.

    Returns
    -------
    Expansion
        The expanded graph and what :func:`collapse_composites` needs. A graph without
        containing layers is its own expansion.

    Raises
    ------
    PruneError
        If a containing layer is called or built in a way its rule does not describe.
    """
    from kerasprune.core.rules import RULES

    rules = RULES if rules is None else rules
    found = _expand_once(graph, rules)
    if found is None:
        return Expansion(graph, graph, {}, rules)
    expanded, blocks = found
    nested = [name for name in expanded.layers
              if isinstance(rules.rule_for(expanded.layers[name].kind), Composite)]
    if nested:
        raise PruneError(f"layer '{nested[0]}' ({expanded.layers[nested[0]].kind}) contains "
                         "layers and is itself inside a containing layer: kerasprune expands "
                         "one level")
    return Expansion(expanded, graph, blocks, rules)


def collapse_composites(expansion: Expansion, changed: Graph) -> Graph:
    """The source graph of ``expansion`` with the changes made to its expanded graph.

    Parameters
    ----------
    expansion
        From :func:`expand_composites`.
    changed
        A changed copy of ``expansion.graph`` (as :func:`~kerasprune.core.apply_deletion`
        returns): the same layers and nodes, other attributes, weights and shapes.

    Returns
    -------
    Graph
        ``expansion.source``'s layers and nodes: each containing layer with its new
        attributes (:meth:`Composite.block_updates`) and its sublayers' new weights, the
        other layers as ``changed`` has them, and the tensors' new shapes.

    Raises
    ------
    PruneError
        If a containing layer cannot be made again with its changed sublayers.
    """
    source = expansion.source
    layers: dict[str, LayerSpec] = {}
    for name, spec in source.layers.items():
        members = expansion.blocks.get(name)
        if members is None:
            layers[name] = changed.layers[name]
            continue
        inner = {local: changed.layers[full] for local, full in members.items()}
        before = {local: expansion.graph.layers[full] for local, full in members.items()}
        if all(inner[k] is before[k] for k in inner):
            layers[name] = spec
            continue
        rule = expansion.rules.rule_for(spec.kind)
        assert isinstance(rule, Composite)
        weights = {}
        for key in spec.weights:  # in the layer's own order
            local, _, weight = _split(key, inner)
            weights[key] = inner[local].weights[weight]
        layers[name] = replace(spec, attrs={**spec.attrs,
                                            **rule.block_updates(spec, inner, before)},
                               weights=weights)
    shapes = {t: changed.shapes[t] for t in source.shapes}
    return replace(source, layers=layers, shapes=shapes)


def _split(key: str, inner: Mapping[str, LayerSpec]) -> tuple[str, str, str]:
    """``sublayer/weight`` -> (sublayer, '/', weight), the longest sublayer name first."""
    for local in sorted(inner, key=len, reverse=True):
        if key.startswith(f"{local}/") and key[len(local) + 1:] in inner[local].weights:
            return local, "/", key[len(local) + 1:]
    raise PruneError(f"weight '{key}' belongs to no sublayer")
