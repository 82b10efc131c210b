"""Keras 3 adapter: Keras models to core graphs and back, and the public Keras entry points.

It reads a model through its public serialization format (``get_config``, the same format
``.keras`` files use, so Keras keeps it stable) and its variables, hands a
:class:`~kerasprune.core.graph.Graph` to the core, and builds the result with
``from_config``. Weights stay backend tensors throughout (``keras.ops.take`` slices them), and
new layers are built with cheap zero initializers before their final values are assigned: the
random initialization that makes ``clone_model`` slow never runs. The user's model is only
read.

The only per-kind knowledge here is :data:`LAYER_KINDS`, mapping Keras classes to core kinds.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Union

import keras
import numpy as np

from kerasprune.core import cost, surgery
from kerasprune.core import rules as core_rules
from kerasprune.core.graph import Graph, LayerSpec, Node, PruneError, Shape

__all__ = [
    "ApozReport",
    "LayerRef",
    "TrimConfig",
    "TrimError",
    "TrimResult",
    "TrimRound",
    "count",
    "delete_neurons",
    "dependency_group",
    "from_graph",
    "get_apoz",
    "high_apoz",
    "to_graph",
    "trim",
]

LayerRef = Union[str, int, keras.layers.Layer]
"""A layer given by name, by index in ``model.layers``, or as the layer object."""

LAYER_KINDS: dict[str, str] = {name: name for name in core_rules.RULES}
"""Core kind of each Keras layer class, by class name. Keras names are the core's names;
add an entry here (and a rule in :mod:`kerasprune.core.rules`) to support a new kind."""

_MODEL_CLASSES = ("Functional", "Sequential", "Model")


@dataclass
class _Walk:
    """State of converting one model (and the models nested in it) to a graph."""

    config: dict[str, Any]
    layers: dict[str, LayerSpec] = field(default_factory=dict)
    live: dict[str, keras.layers.Layer] = field(default_factory=dict)
    entries: dict[str, dict[str, Any]] = field(default_factory=dict)
    inputs_of: dict[int, list[dict[str, Any]]] = field(default_factory=dict)
    nodes: list[Node] = field(default_factory=list)
    shapes: dict[int, Shape] = field(default_factory=dict)

    def tensor(self, shape: Any) -> int:
        t = len(self.shapes)
        self.shapes[t] = tuple(1 if d is None else int(d) for d in tuple(shape)[1:])
        return t


@dataclass(frozen=True)
class KerasGraph:
    """A model's graph and what is needed to build a Keras model from a changed copy of it."""

    graph: Graph
    model: keras.Model
    walk: _Walk


def _is_model(entry: Mapping[str, Any]) -> bool:
    return entry.get("class_name") in _MODEL_CLASSES and "layers" in entry.get("config", {})


def _attrs(entry: Mapping[str, Any]) -> dict[str, Any]:
    attrs = dict(entry["config"])
    if "data_format" in attrs and attrs["data_format"] is None:
        attrs["data_format"] = keras.config.image_data_format()
    return attrs


def _weights(layer: keras.layers.Layer) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for i, var in enumerate(layer.weights):
        key = var.name if var.name not in out else f"{var.name}#{i}"
        out[key] = var.value
    return out


def _keras_tensors(obj: Any) -> list[dict[str, Any]]:
    """The ``__keras_tensor__`` entries of a node's (nested) args, in order."""
    if isinstance(obj, dict):
        if obj.get("class_name") == "__keras_tensor__":
            return [obj]
        return [t for v in obj.values() for t in _keras_tensors(v)]
    if isinstance(obj, (list, tuple)):
        return [t for v in obj for t in _keras_tensors(v)]
    return []


def _add_layer(walk: _Walk, path: str, entry: dict[str, Any], live: keras.layers.Layer,
               inputs: list[int]) -> list[int]:
    """Add one call of a (non-model) layer; return its output tensor ids."""
    if path not in walk.layers:
        kind = LAYER_KINDS.get(entry["class_name"], entry["class_name"])
        walk.layers[path] = LayerSpec(path, kind, _attrs(entry), _weights(live))
        walk.live[path] = live
        walk.entries[path] = entry
    in_shapes = [(None, *walk.shapes[t]) for t in inputs]
    arg = in_shapes[0] if len(in_shapes) == 1 else in_shapes
    try:
        out_shape = live.compute_output_shape(arg)
    except NotImplementedError:  # a custom layer without it: trace its call symbolically
        spec_in = [keras.KerasTensor(s) for s in in_shapes]
        spec_out = live.compute_output_spec(spec_in[0] if len(spec_in) == 1 else spec_in)
        out_shape = keras.tree.map_structure(lambda t: tuple(t.shape), spec_out)
    outs = out_shape if isinstance(out_shape, list) else [out_shape]
    if outs and not isinstance(outs[0], (tuple, list)):
        outs = [out_shape]
    out_ids = [walk.tensor(s) for s in outs]
    walk.nodes.append(Node(path, tuple(inputs), tuple(out_ids)))
    return out_ids


def _add_model(walk: _Walk, prefix: str, entry: dict[str, Any], model: keras.Model,
               inputs: list[int] | None) -> list[int]:
    """Add one call of a (nested) model; return its output tensor ids."""
    config = entry["config"]
    is_sequential = entry.get("class_name") == "Sequential"
    entries = config["layers"]
    if is_sequential:
        input_entries = [e for e in entries if e["class_name"] == "InputLayer"]
        body = [e for e in entries if e["class_name"] != "InputLayer"]
        if inputs is None:
            shape = model.inputs[0].shape
            inputs = [walk.tensor(shape)]
        for e in input_entries:
            walk.inputs_of.setdefault(inputs[0], []).append(e)
        current = inputs
        for e, live in zip(body, model.layers, strict=True):
            current = _call(walk, prefix, e, live, current)
        return current
    made: dict[tuple[str, int], list[int]] = {}
    input_refs = _refs(config["input_layers"])
    for pos, (name, _, _) in enumerate(input_refs):
        e = next(e for e in entries if e["name"] == name)
        t = walk.tensor(model.get_layer(name).output.shape) if inputs is None else inputs[pos]
        walk.inputs_of.setdefault(t, []).append(e)
        made[(name, 0)] = [t]
    for e in entries:
        if e["class_name"] == "InputLayer":
            continue
        live = model.get_layer(e["name"])
        for index, node in enumerate(e.get("inbound_nodes", [])):
            args = [made[(h[0], h[1])][h[2]] for h in
                    (k["config"]["keras_history"] for k in _keras_tensors(node["args"]))]
            made[(e["name"], index)] = _call(walk, prefix, e, live, args)
    return [made[(name, index)][t] for name, index, t in _refs(config["output_layers"])]


def _refs(value: Any) -> list[tuple[str, int, int]]:
    if isinstance(value, Mapping):  # a model with dict inputs or outputs
        value = list(value.values())
    if value and isinstance(value[0], str):
        value = [value]
    return [(str(v[0]), int(v[1]), int(v[2])) for v in value]


def _call(walk: _Walk, prefix: str, entry: dict[str, Any], live: keras.layers.Layer,
          inputs: list[int]) -> list[int]:
    path = f"{prefix}{entry['config'].get('name', entry.get('name'))}"
    if _is_model(entry):
        return _add_model(walk, f"{path}/", entry, live, inputs)
    return _add_layer(walk, path, entry, live, inputs)


def to_graph(model: keras.Model) -> KerasGraph:
    """Describe a Sequential or functional Keras model as a core graph.

    Parameters
    ----------
    model
        A built ``keras.Sequential`` or functional ``keras.Model``; nested models are
        described layer by layer (their layers are named ``outer/inner``).

    Returns
    -------
    KerasGraph
        The graph, with what :func:`from_graph` needs to build a model from it.

    Raises
    ------
    PruneError
        For a subclassed model or one that is not built.
    """
    if not isinstance(model, keras.Model):
        raise PruneError(f"expected a keras.Model, got {type(model).__name__}")
    if not model.built or not model.inputs:
        raise PruneError(f"model '{model.name}' is not built: call it on data or build it")
    config = model.get_config()  # already a deep copy; only read here, copied by from_graph
    if "layers" not in config:
        raise PruneError(
            f"model '{model.name}' ({type(model).__name__}) is a subclassed model; kerasprune "
            "prunes Sequential and functional models, whose layer graph it can read")
    class_name = "Sequential" if isinstance(model, keras.Sequential) else "Functional"
    walk = _Walk(config)
    outputs = _add_model(walk, "", {"class_name": class_name, "config": config}, model, None)
    graph = Graph(layers=dict(walk.layers), nodes=tuple(walk.nodes), shapes=dict(walk.shapes),
                  inputs=tuple(_model_inputs(walk)), outputs=tuple(outputs))
    return KerasGraph(graph, model, walk)


def _model_inputs(walk: _Walk) -> list[int]:
    made = {t for node in walk.nodes for t in node.outputs}
    used = {t for node in walk.nodes for t in node.inputs}
    return sorted((used | set(walk.inputs_of)) - made)


def _layer_entries(config: Mapping[str, Any]) -> Iterable[dict[str, Any]]:
    """Every layer entry of a model config, nested models' included (and themselves)."""
    for entry in config.get("layers", []):
        yield entry
        if _is_model(entry):
            yield from _layer_entries(entry["config"])


def _resolve(model: keras.Model, path: str) -> keras.layers.Layer:
    layer: Any = model
    for part in path.split("/"):
        layer = layer.get_layer(part)
    return layer


def from_graph(source: KerasGraph, graph: Graph) -> keras.Model:
    """Build a new Keras model for ``graph``, a changed copy of ``source.graph``.

    Parameters
    ----------
    source
        From :func:`to_graph`.
    graph
        The same layers and nodes as ``source.graph``, with changed attributes, weights and
        shapes (as :func:`kerasprune.core.apply_deletion` returns).

    Returns
    -------
    keras.Model
        A new, uncompiled model of the same class (Sequential or functional) that shares no
        variable with the source model.
    """
    walk = source.walk
    memo: dict[int, Any] = {}
    config = copy.deepcopy(walk.config, memo)
    for path, spec in graph.layers.items():
        old = walk.layers[path]
        entry_config = memo[id(walk.entries[path])]["config"]
        for key, value in spec.attrs.items():
            if key in entry_config and _differs(value, old.attrs.get(key)):
                entry_config[key] = list(value) if isinstance(value, tuple) else value
    for t, entries in walk.inputs_of.items():
        if graph.shapes[t] != source.graph.shapes[t]:
            for entry in entries:
                memo[id(entry)]["config"]["batch_shape"] = [None, *graph.shapes[t]]
    for entry in _layer_entries(config):
        entry.pop("build_config", None)
        entry.get("config", {}).pop("build_input_shape", None)
        if not _is_model(entry):
            for key, value in entry.get("config", {}).items():
                if key.endswith("_initializer") and value is not None:
                    entry["config"][key] = "zeros"
    # A Keras layer builds its weight ``kernel`` with ``kernel_initializer``: hand it the final
    # value there, and the variable is made from it (no fill, no assign, no copy on TF).
    given = {path: _given(walk, path, spec, memo[id(walk.entries[path])]["config"])
             for path, spec in graph.layers.items()}
    if isinstance(source.model, keras.Sequential):
        model = _sequential_from_config(config)
    else:
        model = keras.Model.from_config(config)
    top: dict[str, Any] = {}
    for layer in model.layers:
        top.setdefault(layer.name, layer)
    for path, spec in graph.layers.items():
        head, _, rest = path.partition("/")
        layer = _resolve(top[head], rest) if rest else top[head]
        variables = layer.weights
        if len(variables) != len(spec.weights):
            raise PruneError(f"rebuilt layer '{path}' has {len(variables)} weights, "
                             f"expected {len(spec.weights)}")
        fed = given[path]
        built = all(g.calls == 1 and g.fits for g in fed.values())
        for variable, (key, value) in zip(variables, spec.weights.items(), strict=True):
            if tuple(variable.shape) != tuple(value.shape):
                raise PruneError(f"rebuilt weight '{variable.path}' has shape "
                                 f"{tuple(variable.shape)}, expected {tuple(value.shape)}")
            if not (built and key in fed):
                variable.assign(_unaliased(value))
        for key, value in walk.entries[path]["config"].items():
            if key.endswith("_initializer") and value is not None:
                setattr(layer, key, keras.initializers.get(copy.deepcopy(value)))
        for g in fed.values():
            g.value = None
    return model


class _Given:
    """An initializer that hands the final value of one weight to the build of a new layer.

    Asked more than once, for another shape or dtype, it gives zeros and says it did not fit:
    the weight is then assigned after the build, as any other.
    """

    def __init__(self, value: Any) -> None:
        self.value = value
        self.calls = 0
        self.fits = True

    def __call__(self, shape: Any, dtype: Any = None) -> Any:
        self.calls += 1
        value = self.value
        if (self.calls > 1 or value is None or tuple(shape) != tuple(value.shape)
                or (dtype is not None and keras.backend.standardize_dtype(dtype)
                    != keras.backend.standardize_dtype(value.dtype))):
            self.fits = False
            return keras.ops.zeros(shape, dtype=dtype)
        return value


def _given(walk: _Walk, path: str, spec: LayerSpec, entry_config: dict[str, Any],
           ) -> dict[str, _Given]:
    """Put a :class:`_Given` in ``entry_config`` for each weight of ``path`` that its
    ``<weight name>_initializer`` builds, by the convention of Keras' own layers (kept to
    them: a custom layer's weights are assigned after the build)."""
    if (type(walk.live[path]).__module__.split(".")[0] != "keras"
            or any("#" in key for key in spec.weights)):
        return {}
    fed: dict[str, _Given] = {}
    source = walk.layers[path].weights
    for key, value in spec.weights.items():
        init = f"{key}_initializer"
        if entry_config.get(init) is not None:  # a sliced weight is a new array already
            own = _unaliased(value) if value is source.get(key) else value
            entry_config[init] = fed[key] = _Given(own)
    return fed


def _sequential_from_config(config: dict[str, Any]) -> keras.Sequential:
    """``keras.Sequential.from_config``, without its rebuild of the whole model after each
    layer it adds (quadratic in depth: half a minute for a 160-layer stack)."""
    layers = [keras.saving.deserialize_keras_object(entry) for entry in config["layers"]]
    model = keras.Sequential(layers, trainable=config.get("trainable", True),
                             name=config["name"])
    shape = config.get("build_input_shape")
    if not model.built and shape:
        model.build(tuple(shape))
    return model


def _unaliased(value: Any) -> Any:
    """``value`` in a buffer of its own: a JAX variable would otherwise share the source's
    array, which jit-compiled predict/fit donate (delete) when they run on the new model.
    Other backends copy on assignment."""
    if keras.backend.backend() != "jax":
        return value
    import jax

    try:  # a transfer-level copy: no per-shape compilation, unlike jnp.copy
        return jax.device_put(value, may_alias=False)
    except TypeError:  # jax without may_alias
        return keras.ops.copy(value)


def _differs(a: Any, b: Any) -> bool:
    if isinstance(a, (tuple, list)) and isinstance(b, (tuple, list)):
        return list(a) != list(b)
    return bool(a != b)


def _layer_path(kg: KerasGraph, ref: LayerRef) -> str:
    """The graph path of a layer given by name, index or object."""
    model, layers = kg.model, kg.graph.layers
    if isinstance(ref, keras.layers.Layer):
        for path, live in kg.walk.live.items():
            if live is ref:
                return path
        raise PruneError(f"layer '{ref.name}' ({type(ref).__name__}) is not in model "
                         f"'{model.name}'")
    if isinstance(ref, (int, np.integer)) and not isinstance(ref, bool):
        n = len(model.layers)
        if not -n <= int(ref) < n:
            raise PruneError(f"layer index {ref} is out of range: model '{model.name}' has "
                             f"{n} layers (model.layers)")
        return _layer_path(kg, model.layers[int(ref)])
    if not isinstance(ref, str):
        raise PruneError(f"a layer is given by name, index or object, not {type(ref).__name__}")
    if ref in layers:
        return ref
    matches = [p for p in layers if p.rsplit("/", 1)[-1] == ref]
    if len(matches) == 1:
        return matches[0]
    if len(matches) > 1:
        raise PruneError(f"layer name '{ref}' is ambiguous: {matches}")
    return ref  # the core explains unknown names


def _request(kg: KerasGraph, layer: LayerRef | Mapping[LayerRef, Iterable[int]],
             neurons: Iterable[int] | None) -> dict[str, Iterable[int]]:
    if isinstance(layer, Mapping):
        if neurons is not None:
            raise PruneError("pass neuron indices either in the mapping or as `neurons`")
        return {_layer_path(kg, ref): idx for ref, idx in layer.items()}
    if neurons is None:
        raise PruneError("which neurons? pass their indices as `neurons`")
    return {_layer_path(kg, layer): neurons}


def dependency_group(model: keras.Model, layer: LayerRef | Mapping[LayerRef, Iterable[int]],
                     neurons: Iterable[int] | None = None, *,
                     allow_output_change: bool = False) -> surgery.Deletion:
    """Everything that would go with ``neurons`` of ``layer``, without changing anything.

    Parameters
    ----------
    model
        A Sequential or functional Keras model.
    layer, neurons, allow_output_change
        As in :func:`delete_neurons`.

    Returns
    -------
    kerasprune.core.Deletion
        The deleted channels of every affected tensor; ``str()`` of it lists every layer
        that changes, ``.layers()`` and ``.neurons()`` give them as arrays.

    Raises
    ------
    PruneError
        As :func:`delete_neurons`.
    """
    kg = to_graph(model)
    return surgery.dependency_group(kg.graph, _request(kg, layer, neurons),
                                    allow_output_change=allow_output_change)


def delete_neurons(model: keras.Model, layer: LayerRef | Mapping[LayerRef, Iterable[int]],
                   neurons: Iterable[int] | None = None, *,
                   allow_output_change: bool = False) -> keras.Model:
    """Delete neurons (units, filters) of a layer and every weight connected to them.

    Parameters
    ----------
    model
        A built Sequential or functional Keras 3 model. It is not modified.
    layer
        The layer: its name (``"conv2d_1"``; a layer inside a nested model as
        ``"inner/conv"`` or by its own name if unique), its index in ``model.layers``, or the
        layer object. Or a mapping ``{layer: neurons}`` to delete from several layers in one
        rebuild.
    neurons
        Indices of the neurons to delete. Negative indices count from the end, as in Python
        (``-1`` is the last). Repeated indices, out-of-range indices and non-integers are
        errors; deleting every neuron of a layer is refused.
    allow_output_change
        Deleting units of a model output changes what the model predicts, so it is refused
        unless this is True.

    Returns
    -------
    keras.Model
        A new, uncompiled model of the same class, sharing no variable with ``model``. The
        layer loses those neurons; layers reading them lose the matching weights; layers
        coupled to them (through ``Add``, ``Concatenate``, depthwise convolutions...) lose
        theirs. Names, activations, initializers, regularizers, constraints, dtype policies
        and trainable flags are kept.

    Raises
    ------
    PruneError
        Before anything is built, naming the layer and index: unknown layer, a layer without
        neurons, bad indices, a deletion that passes a layer that cannot carry it (naming its
        class and what is supported) or reaches a model input or output.

    Examples
    --------
    >>> pruned = kerasprune.delete_neurons(model, "conv2d_1", [0, 5, 7])  # doctest: +SKIP
    """
    kg = to_graph(model)
    deletion = surgery.dependency_group(kg.graph, _request(kg, layer, neurons),
                                        allow_output_change=allow_output_change)
    return from_graph(kg, surgery.apply_deletion(deletion, take=_take))


def _take(array: Any, indices: np.ndarray, axis: int) -> Any:
    if keras.backend.backend() == "jax":
        import jax

        if isinstance(array, jax.Array) and all(d.platform == "cpu" for d in array.devices()):
            # NumPy gathers in place on the host (np.asarray is a view), and device_put
            # compiles nothing: jnp.take compiles anew for every shape, the first call's cost.
            return jax.device_put(np.take(np.asarray(array), indices, axis=axis))
    return keras.ops.take(array, keras.ops.convert_to_tensor(indices, dtype="int32"), axis=axis)


def count(model: keras.Model) -> list[cost.LayerCost]:
    """Params and FLOPs per layer of a Keras model (see :func:`kerasprune.core.cost.count`).

    Parameters
    ----------
    model
        A built Sequential or functional model.

    Returns
    -------
    list of kerasprune.core.cost.LayerCost
        One entry per layer, in graph order; ``kerasprune.core.cost.total`` sums them and
        ``kerasprune.core.cost.compare`` tabulates two of them.
    """
    return cost.count(to_graph(model).graph)


from kerasprune.adapters.keras_apoz import ApozReport, get_apoz, high_apoz  # noqa: E402
from kerasprune.adapters.keras_trim import (  # noqa: E402
    TrimConfig,
    TrimError,
    TrimResult,
    TrimRound,
    trim,
)
