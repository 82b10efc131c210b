"""Layer surgery on Keras models: delete, insert or replace a whole layer.

Each function reads the model (:mod:`.convert`), resolves the layers named (:mod:`.refs`:
name, ``outer/inner`` path, index or object, as everywhere), asks Keras for the shapes a new
layer gives, leaves the graph editing to the pure core (:mod:`kerasprune.core.edit`) and
builds a new model (:mod:`.build`). The input model is only read; the result shares no
variable with it, nor with the layer object given (the new layer is a copy made from its
config and weights, as every other layer of the result).

Rules kept by all three:

- A layer called several times (a shared layer) is edited in every call: deleted from each,
  a new layer inserted at each (one new layer, shared like the old one), replaced in each.
- A layer inside a nested model is named ``outer/inner`` (or by its own name if unique); the
  nested model is rebuilt with the change. What a nested model takes and returns is never
  changed: an edit that would need that is refused.
- Shapes are checked before anything is built: a deleted layer's input must have its output's
  shape, an inserted layer must give the shape its readers read (any shape after a layer
  whose output only is a model output), a replacing layer the old one's.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import keras

from kerasprune.adapters.keras import build, convert, refs
from kerasprune.adapters.keras.record import Call, KerasGraph, TensorRef
from kerasprune.adapters.keras.refs import LayerRef
from kerasprune.core import edit as core_edit
from kerasprune.core.graph import Graph, LayerSpec, Node, PruneError, Shape

__all__ = ["delete_layer", "insert_layer", "replace_layer"]


def delete_layer(model: keras.Model, layer: LayerRef) -> keras.Model:
    """Delete a layer: its input takes the place of its output.

    Parameters
    ----------
    model
        A built Sequential or functional Keras model. It is not modified.
    layer
        The layer: name (``"outer/inner"`` inside a nested model), index in ``model.layers``
        or the layer object. It must have one input and one output of the same shape
        (``Dropout``, ``BatchNormalization``, an activation, a same-width ``Dense``...). A
        shared layer is deleted from every call.

    Returns
    -------
    keras.Model
        A new, uncompiled model without the layer, sharing no variable with ``model``.

    Raises
    ------
    PruneError
        Before anything is built: an unknown layer, a layer with several inputs or outputs,
        one whose output shape differs from its input's (both shapes named), one whose
        deletion would leave a model (or nested model) output without a layer before it.

    Examples
    --------
    >>> slim = kerasprune.delete_layer(model, "dropout")  # doctest: +SKIP
    """
    kg = convert.to_graph(model)
    path = _layer(kg, layer, "delete")
    graph = core_edit.delete_layer(kg.graph, path)
    _check_nested_outputs(kg, graph)
    return build.from_graph(kg, graph)


def insert_layer(model: keras.Model, new_layer: keras.layers.Layer, *,
                 after: LayerRef | None = None, before: LayerRef | None = None) -> keras.Model:
    """Insert a layer after or before another one.

    Parameters
    ----------
    model
        A built Sequential or functional Keras model. It is not modified.
    new_layer
        The layer to insert: a Keras layer whose name is not in the (nested) model it goes
        in. Not put in the model itself: the model gets a copy (``from_config`` of its
        config), with the layer's weights if it is built (they must fit the input it gets
        here), else built on that input by its own initializers.
    after, before
        Exactly one: the layer (name, ``outer/inner`` path, index or object) whose output the
        new layer reads, every reader of that output then reading the new layer's output
        (the model output too, if it was one); or the layer whose input the new layer reads
        (that layer, a one-input layer, then reads the new layer's output; other readers of
        the same input are left as they are). A shared layer gets the new layer at every
        call (the new layer is then shared too).

    Returns
    -------
    keras.Model
        A new, uncompiled model with the layer, sharing no variable with ``model`` or
        ``new_layer``.

    Raises
    ------
    PruneError
        Before anything is built: an unknown layer, a name already taken, a new layer that
        cannot take the input or gives another shape than its readers read (both shapes
        named), a multi-output layer for ``after`` or a multi-input one for ``before``, an
        insertion that would change what a nested model takes or returns.
    TypeError
        If ``new_layer`` is not a Keras layer, or not exactly one of ``after`` and ``before``
        is given.

    Examples
    --------
    >>> wider = kerasprune.insert_layer(model, keras.layers.Dropout(0.2, name="drop"),
    ...                                 after="dense")  # doctest: +SKIP
    """
    if (after is None) == (before is None):
        raise TypeError("insert_layer takes exactly one of after= and before=")
    _check_new(new_layer)
    kg = convert.to_graph(model)
    ref = after if after is not None else before
    assert ref is not None
    path = _layer(kg, ref, "insert after" if after is not None else "insert before")
    calls = kg.graph.calls(path)
    if not calls:
        raise PruneError(f"no layer named '{path}' in model '{model.name}'")
    if after is not None:
        scope = _after_scope(kg, path, calls)
        inputs = [_one(kg, node.outputs, path, "outputs", "after") for node in calls]
    else:
        scope = _scope(path)
        inputs = [_one(kg, node.inputs, path, "inputs", "before") for node in calls]
    new_path = _free(kg, scope, new_layer)
    template, weights = _made(new_layer, [kg.walk.specs[t] for t in inputs[:1]])
    out_shapes = [_out_specs(template, [_symbolic(kg, [TensorRef(t)])[0]], new_path)
                  for t in inputs]
    spec = LayerSpec(new_path, convert.layer_kind(template), dict(template.get_config()),
                     weights)
    shapes = [_core_shape(s[0][0]) for s in out_shapes]
    if after is not None:
        for t, shape in zip(inputs, shapes, strict=True):
            if kg.graph.consumers.get(t) and shape != kg.graph.shapes[t]:
                raise PruneError(
                    f"cannot insert '{new_layer.name}' ({type(new_layer).__name__}) after "
                    f"'{path}': it gives shape {_shown(out_shapes[0][0][0])} where the "
                    f"layers reading '{path}' read {_shown(kg.walk.specs[t][0])}")
        graph = core_edit.insert_after(kg.graph, spec, path, shapes)
    else:
        graph = core_edit.insert_before(kg.graph, spec, path, shapes)
    return build.from_graph(kg, graph, {new_path: template})


def replace_layer(model: keras.Model, old: LayerRef, new: keras.layers.Layer) -> keras.Model:
    """Replace a layer by another that gives the same output shapes.

    Parameters
    ----------
    model
        A built Sequential or functional Keras model. It is not modified.
    old
        The layer to replace: name (``outer/inner`` path), index or object. A shared layer is
        replaced in every call (the new layer is then shared).
    new
        The new layer, called with ``old``'s arguments. Its name may be ``old``'s or one not
        in the (nested) model. Nothing is copied from ``old``: if ``new`` is built, its own
        weights are used (they must fit the input); if not, it is built on the input by its
        own initializers. The model gets a copy of it, never the object itself.

    Returns
    -------
    keras.Model
        A new, uncompiled model, sharing no variable with ``model`` or ``new``.

    Raises
    ------
    PruneError
        Before anything is built: an unknown layer, a new layer that cannot take the input,
        whose weights do not fit it, or whose output shapes differ from the old layer's
        (both named), a name already taken.
    TypeError
        If ``new`` is not a Keras layer.

    Examples
    --------
    >>> swapped = kerasprune.replace_layer(model, "relu", keras.layers.ELU(name="elu"))
    ... # doctest: +SKIP
    """
    _check_new(new)
    kg = convert.to_graph(model)
    path = _layer(kg, old, "replace")
    calls = kg.graph.calls(path)
    if not calls:
        raise PruneError(f"no layer named '{path}' in model '{model.name}'")
    scope = _scope(path)
    new_path = _free(kg, scope, new, path)
    steps = [_step(kg, node) for node in calls]
    template, weights = _made(new, [], first=lambda layer: _call_specs(kg, layer, steps[0],
                                                                         new_path))
    out_shapes = [[_core_shape(s[0]) for s in _call_specs(kg, template, step, new_path)]
                  for step in steps]
    spec = LayerSpec(new_path, convert.layer_kind(template), dict(template.get_config()),
                     weights)
    graph = core_edit.replace_layer(kg.graph, path, spec, out_shapes)
    return build.from_graph(kg, graph, {new_path: template})


# -- helpers -------------------------------------------------------------------------------


def _check_new(layer: Any) -> None:
    if not isinstance(layer, keras.layers.Layer) or isinstance(layer, keras.Model):
        raise TypeError(f"the new layer must be a keras.layers.Layer (not a model), not "
                        f"{type(layer).__name__}")


def _free(kg: KerasGraph, scope: str, layer: keras.layers.Layer, old: str = "") -> str:
    """The graph path of a new layer, refused if its name is taken in its (nested) model."""
    path = f"{scope}/{layer.name}" if scope else layer.name
    if path != old and path in kg.graph.layers:
        where = f"nested model '{scope}'" if scope else f"model '{kg.model.name}'"
        raise PruneError(f"{where} already has a layer named '{layer.name}': give the new "
                         f"layer ({type(layer).__name__}) another name")
    return path


def _scope(path: str) -> str:
    return path.rsplit("/", 1)[0] if "/" in path else ""


def _layer(kg: KerasGraph, ref: LayerRef, what: str) -> str:
    """The graph path of a layer reference, with an InputLayer explained for surgery."""
    name = ref.name if isinstance(ref, keras.layers.InputLayer) else ref
    if isinstance(name, str):
        for plan in kg.walk.plans.values():
            for entry, _ in plan.inputs:
                if entry is not None and entry["config"].get("name") == name \
                        and name not in kg.graph.layers:
                    hint = (" (insert before the layers that read it)"
                            if what == "insert after" else "")
                    raise PruneError(f"cannot {what} '{name}': it is an InputLayer (a model "
                                     f"input), not a layer{hint}")
    path = refs.layer_path(kg, ref)
    if path not in kg.graph.layers:
        raise PruneError(f"cannot {what} '{path}': no layer of that name in model "
                         f"'{kg.model.name}'")
    if not isinstance(kg.walk.live.get(path), keras.layers.Layer):
        raise PruneError(f"cannot {what} '{path}': it is an operation "
                         f"({kg.graph.layers[path].kind}), not a layer")
    return path


def _one(kg: KerasGraph, tensors: tuple[int, ...], path: str, what: str, where: str) -> int:
    if len(tensors) != 1:
        spec = kg.graph.layers[path]
        other = "after the layer that makes the one you mean" if where == "before" else \
            "before the layer that reads the one you mean"
        raise PruneError(f"cannot insert {where} layer '{path}' ({spec.kind}): it has "
                         f"{len(tensors)} {what}; insert {other}")
    return tensors[0]


def _boundaries(kg: KerasGraph) -> dict[int, str]:
    """Tensors a nested model returns, with the path of the model it returns them to."""
    out: dict[int, str] = {}
    for plan in kg.walk.plans.values():
        for step in plan.steps:
            if step.model is not None:
                out.update((t, plan.path) for t in step.outputs)
    return out


def _after_scope(kg: KerasGraph, path: str, calls: list[Node]) -> str:
    """Where a layer inserted after ``path`` goes: in its (nested) model, or in the model a
    nested model returns its output to; refused if its readers are in several."""
    boundaries = _boundaries(kg)
    scopes = set()
    for node in calls:
        for t in node.outputs:
            scope = boundaries.get(t, _scope(path))
            scopes.add(scope)
            readers = {_scope(r.layer) for r, _ in kg.graph.consumers.get(t, [])}
            if t in kg.graph.outputs:
                readers.add("")
            if readers - {scope}:
                raise PruneError(
                    f"cannot insert after '{path}': its output is read in another (nested) "
                    "model than the one it would go in, and kerasprune does not change what "
                    "a nested model takes or returns; insert before the layer that reads it")
    if len(scopes) != 1:
        raise PruneError(f"cannot insert after '{path}': its calls are in different models")
    return scopes.pop()


def _check_nested_outputs(kg: KerasGraph, graph: Graph) -> None:
    """A nested model must keep a layer between its inputs and each output."""
    for path, plan in kg.walk.plans.items():
        if not path:
            continue
        ins = {t for _, t in plan.inputs}
        for t in keras.tree.flatten(plan.output_struct):
            if t not in graph.shapes:
                node = kg.graph.producers[t]
                while node.inputs and node.inputs[0] not in graph.shapes \
                        and node.inputs[0] in kg.graph.producers:
                    node = kg.graph.producers[node.inputs[0]]
                if node.inputs and node.inputs[0] in ins:
                    raise PruneError(f"cannot delete the last layer between the input and an "
                                     f"output of nested model '{path}'")


def _step(kg: KerasGraph, node: Node) -> Call:
    for plan in kg.walk.plans.values():
        for step in plan.steps:
            if step.model is None and list(step.outputs) == list(node.outputs):
                return step
    raise PruneError(f"no recorded call of '{node.layer}'")  # pragma: no cover


def _symbolic(kg: KerasGraph, value: Any) -> Any:
    return keras.tree.map_structure(
        lambda v: keras.KerasTensor(kg.walk.specs[v.tensor][0],
                                    dtype=kg.walk.specs[v.tensor][1])
        if isinstance(v, TensorRef) else v, value)


def _call_specs(kg: KerasGraph, layer: keras.layers.Layer, step: Call,
                path: str) -> list[tuple[tuple[int | None, ...], str]]:
    """The output specs of calling ``layer`` with a recorded call's arguments."""
    args = _symbolic(kg, list(step.args))
    kwargs = _symbolic(kg, dict(step.kwargs))
    return _out_specs(layer, args, path, kwargs)


def _out_specs(layer: keras.layers.Layer, args: list[Any], path: str,
               kwargs: Mapping[str, Any] | None = None
               ) -> list[tuple[tuple[int | None, ...], str]]:
    try:
        if layer.built:
            out = layer.compute_output_spec(*args, **dict(kwargs or {}))
        else:
            out = layer(*args, **dict(kwargs or {}))  # builds it: only ever our copy
    except Exception as err:  # the layer's own failure, with its name
        shapes = ", ".join(_shown(a.shape) for a in keras.tree.flatten(args)
                           if isinstance(a, keras.KerasTensor))
        raise PruneError(f"layer '{path}' ({type(layer).__name__}) cannot take inputs of "
                         f"shape {shapes}: {type(err).__name__}: {err}") from err
    return [(tuple(t.shape), str(t.dtype)) for t in keras.tree.flatten(out)]


def _made(layer: keras.layers.Layer, specs: list[tuple[tuple[int | None, ...], str]],
          first: Any = None) -> tuple[keras.layers.Layer, dict[str, Any]]:
    """A built copy of ``layer`` (from its config) on its first input, and the weights the
    new layer gets: ``layer``'s own if it is built (checked against the copy's), else the
    copy's."""
    try:
        copy = type(layer).from_config(layer.get_config())
    except Exception as err:  # the class's own failure, with its name
        raise PruneError(f"cannot copy layer '{layer.name}' ({type(layer).__name__}) from "
                         f"its config: {type(err).__name__}: {err}") from err
    if first is not None:
        first(copy)
    else:
        _out_specs(copy, [keras.KerasTensor(s[0], dtype=s[1]) for s in specs], layer.name)
    if not layer.built:
        return copy, _weights(copy)
    mine, fresh = _weights(layer), _weights(copy)
    for (key, value), (_, want) in zip(mine.items(), fresh.items(), strict=False):
        if tuple(value.shape) != tuple(want.shape):
            raise PruneError(
                f"the weights of layer '{layer.name}' ({type(layer).__name__}) do not fit "
                f"the input it gets here: its '{key}' has shape {tuple(value.shape)}, the "
                f"input needs {tuple(want.shape)}; pass an unbuilt layer to build it there")
    if len(mine) != len(fresh):
        raise PruneError(f"layer '{layer.name}' has {len(mine)} weights, but built on the "
                         f"input it gets here {len(fresh)}")
    for variable, value in zip(copy.weights, mine.values(), strict=True):
        variable.assign(value)
    _carry(layer, copy)
    return copy, _weights(copy)


def _carry(layer: keras.layers.Layer, copy: keras.layers.Layer) -> None:
    """A built stateful preprocessing layer's state beyond its variables (a vocabulary)."""
    if callable(getattr(layer, "finalize_state", None)):
        copy.finalize_state()


def _weights(layer: keras.layers.Layer) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for i, var in enumerate(layer.weights):
        out[var.name if var.name not in out else f"{var.name}#{i}"] = var.value
    return out


def _core_shape(shape: tuple[int | None, ...]) -> Shape:
    """A Keras shape as the core keeps it: without the batch axis, unknown sizes as 1."""
    return tuple(1 if d is None else int(d) for d in shape[1:])


def _shown(shape: Any) -> str:
    return str(tuple(shape))
