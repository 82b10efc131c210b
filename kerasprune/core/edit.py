"""Editing a :class:`~kerasprune.core.graph.Graph`'s structure: remove nodes, insert a layer,
replace one. Pure functions: each returns a new graph and leaves its input as it was.

These are the core of whole-branch removal (:func:`kerasprune.core.surgery.apply_deletion`
drops the layers that only served a deleted ``Concatenate`` input) and of layer surgery
(``kerasprune.delete_layer``, ``insert_layer``, ``replace_layer``). The rules are not
consulted: a node's output shape is given by the caller (the adapter asks its framework), and
the functions check that the tensors they connect fit.

Tensors keep their ids. A removed node's output either goes (its readers drop it: only a
``Concatenate``-like reader can) or is replaced by a **stand-in**, a tensor its readers and the
model outputs read instead (a deleted layer's input). An inserted node writes a new tensor,
numbered after every existing one.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import replace

from kerasprune.core.graph import Graph, LayerSpec, Node, PruneError, Shape

__all__ = ["delete_layer", "follow", "insert_after", "insert_before", "remove_nodes",
           "replace_layer"]


def _describe(graph: Graph, name: str) -> str:
    return f"layer '{name}' ({graph.layers[name].kind})"


def follow(t: int, stand_ins: Mapping[int, int]) -> int:
    """The tensor read in place of ``t``: its stand-in's stand-in..., or ``t`` itself."""
    seen = set()
    while t in stand_ins:
        if t in seen:
            raise PruneError(f"the stand-ins of tensor {t} form a cycle")
        seen.add(t)
        t = stand_ins[t]
    return t


def remove_nodes(graph: Graph, removed: Collection[Node],
                 stand_ins: Mapping[int, int] | None = None) -> Graph:
    """The graph without ``removed`` nodes; layers no longer called go too.

    Parameters
    ----------
    graph
        The network.
    removed
        Nodes of ``graph`` to remove.
    stand_ins
        ``{removed tensor: tensor read instead}`` for outputs of removed nodes that are still
        read (chains are followed). A kept node that reads a removed tensor without a
        stand-in loses that input (a ``Concatenate`` concatenates the rest).

    Returns
    -------
    Graph
        A new graph: the kept nodes in their order, read tensors rewired, tensors nothing
        writes any more dropped from ``shapes``.

    Raises
    ------
    PruneError
        If a model output would disappear (a removed tensor without a stand-in), a kept node
        would lose every input, or a model input would no longer be read.
    """
    stand_ins = dict(stand_ins or {})
    gone_nodes = set(removed)
    gone = {t for node in gone_nodes for t in node.outputs}
    for t in stand_ins:
        if t not in gone:
            raise PruneError(f"tensor {t} has a stand-in but no removed node writes it")
    alive = {t: follow(t, stand_ins) for t in gone if t in stand_ins}
    if any(t in gone and t not in alive for t in alive.values()):
        raise PruneError("a stand-in is itself a removed tensor")
    outputs = []
    for t in graph.outputs:
        if t in gone and t not in alive:
            maker = graph.producers[t].layer
            raise PruneError(f"the model output made by {_describe(graph, maker)} would "
                             "disappear")
        outputs.append(alive.get(t, t))
    nodes = []
    for node in graph.nodes:
        if node in gone_nodes:
            continue
        inputs = tuple(alive.get(t, t) for t in node.inputs if t not in gone or t in alive)
        if node.inputs and not inputs:
            raise PruneError(f"{_describe(graph, node.layer)} would lose every input")
        nodes.append(node if inputs == node.inputs else replace(node, inputs=inputs))
    read = {t for node in nodes for t in node.inputs} | set(outputs)
    unread = [t for t in graph.inputs if t not in read]
    if unread:
        raise PruneError(f"model input {graph.inputs.index(unread[0])} would no longer be "
                         "read by any layer (kerasprune never removes a model input)")
    called = {node.layer for node in nodes}
    kept = {t for node in nodes for t in node.outputs} | set(graph.inputs)
    return replace(graph, layers={n: s for n, s in graph.layers.items() if n in called},
                   nodes=tuple(nodes), shapes={t: s for t, s in graph.shapes.items() if t in kept},
                   outputs=tuple(outputs))


def delete_layer(graph: Graph, layer: str) -> Graph:
    """Remove every call of ``layer``: each call's input is read where its output was.

    Parameters
    ----------
    graph
        The network.
    layer
        The layer's name.

    Returns
    -------
    Graph
        A new graph without the layer.

    Raises
    ------
    PruneError
        For an unknown layer, one with several inputs or outputs, one whose output shape
        differs from its input's (naming both), or one whose removal would make a model
        output a model input.
    """
    calls = _calls(graph, layer)
    stand_ins = {}
    where = _describe(graph, layer)
    for node in calls:
        if len(node.inputs) != 1:
            raise PruneError(f"cannot delete {where}: it has {len(node.inputs)} inputs, and "
                             "delete_layer puts a layer's single input in place of its output")
        if len(node.outputs) != 1:
            raise PruneError(f"cannot delete {where}: it has {len(node.outputs)} outputs, and "
                             "delete_layer puts a layer's single input in place of its output")
        (t_in,), (t_out,) = node.inputs, node.outputs
        if graph.shapes[t_in] != graph.shapes[t_out]:
            raise PruneError(
                f"cannot delete {where}: its input has shape {_full(graph.shapes[t_in])} but "
                f"its output {_full(graph.shapes[t_out])}, so the input cannot take the "
                "output's place")
        stand_ins[t_out] = t_in
    new = remove_nodes(graph, calls, stand_ins)
    if any(t in graph.inputs for t in new.outputs if t not in graph.outputs):
        raise PruneError(f"cannot delete {where}: a model output would be a model input, "
                         "with no layer between them")
    return new


def _full(shape: Shape) -> tuple[int | None, ...]:
    """A shape as Keras shows it, with the batch axis."""
    return (None, *shape)


def _calls(graph: Graph, layer: str) -> list[Node]:
    if layer not in graph.layers:
        raise PruneError(f"no layer named '{layer}' in the model")
    calls = graph.calls(layer)
    if not calls:
        raise PruneError(f"layer '{layer}' is never called in the model")
    return calls


def _new_layer(graph: Graph, spec: LayerSpec, n: int, out_shapes: Sequence[Shape]) -> None:
    if spec.name in graph.layers:
        raise PruneError(f"the model already has a layer named '{spec.name}': give the new "
                         "layer another name")
    if len(out_shapes) != n:
        raise PruneError(f"{n} calls but {len(out_shapes)} output shapes")


def _with_layer(graph: Graph, spec: LayerSpec, anchor: str, after: bool) -> dict[str, LayerSpec]:
    layers: dict[str, LayerSpec] = {}
    for name, s in graph.layers.items():
        if name == anchor and not after:
            layers[spec.name] = spec
        layers[name] = s
        if name == anchor and after:
            layers[spec.name] = spec
    return layers


def insert_after(graph: Graph, spec: LayerSpec, layer: str,
                 out_shapes: Sequence[Shape]) -> Graph:
    """Insert a new layer after every call of ``layer``: it reads the call's output, and every
    reader of that output (and the model output it is) reads the new layer's instead.

    Parameters
    ----------
    graph
        The network.
    spec
        The new layer (a name not in the graph).
    layer
        The layer after which it goes (one output per call).
    out_shapes
        The new layer's output shape on each call of ``layer``, in graph order.

    Returns
    -------
    Graph
        A new graph; the new layer is called once per call of ``layer`` (shared if more).
    """
    calls = _calls(graph, layer)
    _new_layer(graph, spec, len(calls), out_shapes)
    where = _describe(graph, layer)
    next_id = max(graph.shapes, default=-1) + 1
    shapes = dict(graph.shapes)
    redirect: dict[int, int] = {}
    added: dict[Node, Node] = {}
    for node, shape in zip(calls, out_shapes, strict=True):
        if len(node.outputs) != 1:
            raise PruneError(f"cannot insert after {where}: it has {len(node.outputs)} "
                             "outputs; insert before the layer that reads the one you mean")
        t = node.outputs[0]
        redirect[t] = next_id
        shapes[next_id] = tuple(shape)
        added[node] = Node(spec.name, (t,), (next_id,))
        next_id += 1
    nodes: list[Node] = []
    for node in graph.nodes:
        nodes.append(_reading(node, redirect))
        if node in added:
            nodes.append(added[node])
    return replace(graph, layers=_with_layer(graph, spec, layer, True),
                   nodes=tuple(nodes), shapes=shapes,
                   outputs=tuple(redirect.get(t, t) for t in graph.outputs))


def _reading(node: Node, redirect: Mapping[int, int]) -> Node:
    inputs = tuple(redirect.get(t, t) for t in node.inputs)
    return node if inputs == node.inputs else replace(node, inputs=inputs)


def insert_before(graph: Graph, spec: LayerSpec, layer: str,
                  out_shapes: Sequence[Shape]) -> Graph:
    """Insert a new layer before every call of ``layer`` (a layer with one input): it reads
    the call's input, and that call (only) reads its output.

    Parameters
    ----------
    graph
        The network.
    spec
        The new layer (a name not in the graph).
    layer
        The layer before which it goes.
    out_shapes
        The new layer's output shape on each call, in graph order; each must be the shape
        the call read so far.

    Returns
    -------
    Graph
        A new graph; the new layer is called once per call of ``layer`` (shared if more).
    """
    calls = _calls(graph, layer)
    _new_layer(graph, spec, len(calls), out_shapes)
    where = _describe(graph, layer)
    next_id = max(graph.shapes, default=-1) + 1
    shapes = dict(graph.shapes)
    added: dict[Node, tuple[Node, Node]] = {}
    for node, shape in zip(calls, out_shapes, strict=True):
        if len(node.inputs) != 1:
            raise PruneError(f"cannot insert before {where}: it has {len(node.inputs)} "
                             "inputs; insert after the layer that makes the one you mean")
        t = node.inputs[0]
        if tuple(shape) != graph.shapes[t]:
            raise PruneError(
                f"cannot insert '{spec.name}' before {where}: it would give shape "
                f"{_full(tuple(shape))} where {where} reads {_full(graph.shapes[t])}")
        shapes[next_id] = tuple(shape)
        added[node] = (Node(spec.name, (t,), (next_id,)), replace(node, inputs=(next_id,)))
        next_id += 1
    nodes: list[Node] = []
    for node in graph.nodes:
        nodes.extend(added.get(node, (node,)))
    return replace(graph, layers=_with_layer(graph, spec, layer, False),
                   nodes=tuple(nodes), shapes=shapes)


def replace_layer(graph: Graph, layer: str, spec: LayerSpec,
                  out_shapes: Sequence[Sequence[Shape]]) -> Graph:
    """Put ``spec`` in place of ``layer`` in every call.

    Parameters
    ----------
    graph
        The network.
    layer
        The layer to replace.
    spec
        The new layer; its name may be ``layer``'s or one not in the graph.
    out_shapes
        The new layer's output shapes on each call, in graph order: they must be the old
        layer's.

    Returns
    -------
    Graph
        A new graph; the nodes keep their tensors.
    """
    calls = _calls(graph, layer)
    if spec.name != layer and spec.name in graph.layers:
        raise PruneError(f"the model already has a layer named '{spec.name}': give the new "
                         "layer another name")
    if len(out_shapes) != len(calls):
        raise PruneError(f"{len(calls)} calls but {len(out_shapes)} sets of output shapes")
    where = _describe(graph, layer)
    for node, shapes in zip(calls, out_shapes, strict=True):
        old = [graph.shapes[t] for t in node.outputs]
        new = [tuple(s) for s in shapes]
        if old != new:
            shown = ", ".join(str(_full(s)) for s in new)
            raise PruneError(
                f"cannot replace {where} by '{spec.name}' ({spec.kind}): it gives output "
                f"shape {shown} where {where} gives "
                f"{', '.join(str(_full(s)) for s in old)}")
    layers = {(spec.name if name == layer else name): (spec if name == layer else s)
              for name, s in graph.layers.items()}
    nodes = tuple(replace(node, layer=spec.name) if node.layer == layer else node
                  for node in graph.nodes)
    return replace(graph, layers=layers, nodes=nodes)
