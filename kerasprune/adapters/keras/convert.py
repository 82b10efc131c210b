"""Keras 3 adapter: Keras models to core graphs and back, and the public Keras entry points.

Reading. A Sequential or functional model is read through its public serialization format
(``get_config``, the format of ``.keras`` files, which Keras keeps stable): every call of a
layer or of an operation (``x * 2.0``, ``keras.ops.relu(h)``) in the functional graph becomes a
core :class:`~kerasprune.core.graph.Node`, with the shapes of the model's own symbolic tensors
(``None`` dimensions count as 1 in the core; the adapter keeps them). Nested models are read
layer by layer (``outer/inner``).

Building. :func:`from_graph` replays the graph through Keras' public API: each layer is
recreated from its (possibly changed) config by its own class, each operation from its config,
and called on the new symbolic tensors with the original call's arguments (keyword tensors,
``training``, masks, constants; a shared layer is called again, a nested model is rebuilt and
called); a ``Lambda`` keeps its live Python function. New layers of Keras' own kinds are built
with their final weights as initializers (no random fill, no copy on TensorFlow); any other
weight is assigned after the build. The user's model is only read.

The only per-kind knowledge here is :func:`layer_kind`: which core kind a Keras class has.
"""

from __future__ import annotations

import copy
import tempfile
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Union

import keras
import numpy as np

from kerasprune.core import cost, surgery
from kerasprune.core import rules as core_rules
from kerasprune.core.graph import Graph, LayerSpec, Node, PruneError, Shape
from kerasprune.core.surgery import Prunability

__all__ = [
    "ApozReport",
    "LayerRef",
    "Prunability",
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
    "layer_kind",
    "prunable_layers",
    "to_graph",
    "trim",
]

LayerRef = Union[str, int, keras.layers.Layer]
"""A layer given by name, by index in ``model.layers``, or as the layer object."""

LAYER_KINDS: dict[str, str] = {}
"""Core kinds of Keras classes whose class name is not their kind, by qualified class name
(``"my_package.layers.Scale"``) or by class name. Keras' own layers need no entry: a layer's
kind is its class name, an operation's ``"op:"`` and its name in snake case. Add an entry here
(and a rule in :mod:`kerasprune.core.rules`) to support a kind under another name."""

_BUILTIN_KINDS = frozenset(core_rules.RULES)
"""The kinds kerasprune gives rules for Keras' own classes: a class of another package with
one of these names is not taken for Keras' (its kind is its qualified name)."""

_TENSOR = "__keras_tensor__"
Spec = tuple[tuple[Union[int, None], ...], str]
"""A symbolic tensor's full shape (batch axis and unknown dimensions included) and dtype."""


def layer_kind(obj: Any) -> str:
    """The core kind of a Keras layer or operation (the key of its rule).

    Parameters
    ----------
    obj
        A layer, or an operation of a functional graph.

    Returns
    -------
    str
        ``LAYER_KINDS``' entry for its class if there is one; else the class name for a layer
        and ``"op:<snake_case name>"`` for an operation. A class outside Keras that bears the
        name of a Keras kind gets its qualified name, so it never borrows Keras' rule.
    """
    cls = type(obj)
    qualified = f"{cls.__module__}.{cls.__qualname__}"
    if qualified in LAYER_KINDS:
        return LAYER_KINDS[qualified]
    if cls.__name__ in LAYER_KINDS:
        return LAYER_KINDS[cls.__name__]
    kind = cls.__name__ if isinstance(obj, keras.layers.Layer) else core_rules.op_kind(
        cls.__name__)
    if kind in _BUILTIN_KINDS and cls.__module__.split(".")[0] != "keras":
        return f"op:{qualified}" if kind.startswith("op:") else qualified
    return kind


# --------------------------------------------------------------------------------------------
# Reading a model
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Ref:
    """A symbolic tensor in a call's arguments, by its id in the graph."""

    tensor: int


@dataclass
class _Step:
    """One call in a model: ``outputs = <path>(*args, **kwargs)``, tensors as :class:`_Ref`."""

    path: str
    args: list[Any]
    kwargs: dict[str, Any]
    outputs: list[int]
    model: _Plan | None = None  # the plan of a nested model


@dataclass
class _Plan:
    """A (nested) model: how to build it again."""

    path: str
    live: keras.Model
    config: dict[str, Any]
    sequential: bool
    inputs: list[tuple[dict[str, Any] | None, int]]  # (InputLayer entry, tensor)
    input_struct: Any  # the model's inputs, with tensor ids as leaves
    steps: list[_Step] = field(default_factory=list)
    output_struct: Any = None


@dataclass
class _Walk:
    """State of converting one model (and the models nested in it) to a graph."""

    layers: dict[str, LayerSpec] = field(default_factory=dict)
    live: dict[str, Any] = field(default_factory=dict)
    entries: dict[str, dict[str, Any]] = field(default_factory=dict)
    plans: dict[str, _Plan] = field(default_factory=dict)
    constants: dict[str, dict[str, tuple[tuple[Any, ...], tuple[int, ...]]]] = field(
        default_factory=dict)  # path -> constant -> (where in the call, original shape)
    nodes: list[Node] = field(default_factory=list)
    shapes: dict[int, Shape] = field(default_factory=dict)
    specs: dict[int, Spec] = field(default_factory=dict)
    top: _Plan | None = None

    def tensor(self, spec: Spec) -> int:
        t = len(self.shapes)
        self.specs[t] = spec
        self.shapes[t] = tuple(1 if d is None else int(d) for d in spec[0][1:])
        return t


@dataclass(frozen=True)
class KerasGraph:
    """A model's graph and what is needed to build a Keras model from a changed copy of it."""

    graph: Graph
    model: keras.Model
    walk: _Walk


class _Leaf:
    """A ``[layer, node, tensor]`` reference of a model config, opaque to ``keras.tree``."""

    def __init__(self, ref: list[Any]) -> None:
        self.key = (str(ref[0]), int(ref[1]))
        self.index = int(ref[2])


def _ref_struct(value: Any) -> Any:
    """A config's ``input_layers``/``output_layers`` with :class:`_Leaf` leaves."""
    if isinstance(value, (list, tuple)) and len(value) == 3 and isinstance(value[0], str) \
            and isinstance(value[1], int) and isinstance(value[2], int):
        return _Leaf(list(value))
    if isinstance(value, Mapping):
        return {k: _ref_struct(v) for k, v in value.items()}
    if isinstance(value, tuple):
        return tuple(_ref_struct(v) for v in value)
    return [_ref_struct(v) for v in value]


def _spec_of(tensor: Any) -> Spec:
    return tuple(tensor.shape), keras.backend.standardize_dtype(tensor.dtype)


def _history(entry: Mapping[str, Any]) -> tuple[str, int, int]:
    h = entry["config"]["keras_history"]
    return str(h[0]), int(h[1]), int(h[2])


def _decode(value: Any, made: Mapping[tuple[str, int], list[int]]) -> Any:
    """A call argument from its config: symbolic tensors become :class:`_Ref`, serialized
    objects (NumPy arrays, tensors, dtypes...) are deserialized."""
    if isinstance(value, Mapping):
        if value.get("class_name") == _TENSOR:
            name, node, index = _history(value)
            return _Ref(made[(name, node)][index])
        if "class_name" in value and "config" in value:
            return keras.saving.deserialize_keras_object(value)
        return {k: _decode(v, made) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_decode(v, made) for v in value)
    return value


def _tensor_refs(value: Any) -> list[Mapping[str, Any]]:
    """The ``__keras_tensor__`` entries of a node's (nested) arguments, in order."""
    if isinstance(value, Mapping):
        if value.get("class_name") == _TENSOR:
            return [value]
        return [t for v in value.values() for t in _tensor_refs(v)]
    if isinstance(value, (list, tuple)):
        return [t for v in value for t in _tensor_refs(v)]
    return []


def _refs(value: Any) -> list[_Ref]:
    return [leaf for leaf in keras.tree.flatten(value) if isinstance(leaf, _Ref)]


def _symbolic(value: Any, specs: Mapping[int, Spec]) -> Any:
    return keras.tree.map_structure(
        lambda v: keras.KerasTensor(specs[v.tensor][0], dtype=specs[v.tensor][1])
        if isinstance(v, _Ref) else v, value)


def _traced(live: Any, args: list[Any], kwargs: dict[str, Any], specs: Mapping[int, Spec],
            path: str) -> list[Spec]:
    """The output specs of calling ``live`` on symbolic tensors of the given specs (Keras'
    own shape inference for the call, with its real arguments; nothing is added to ``live``)."""
    try:
        out = live.compute_output_spec(*_symbolic(args, specs), **_symbolic(kwargs, specs))
    except Exception as err:  # any layer's own failure, with its name
        raise PruneError(f"cannot infer the output shape of '{path}' ({type(live).__name__}): "
                         f"{type(err).__name__}: {err}") from err
    return [_spec_of(t) for t in keras.tree.flatten(out)]


def _is_model(live: Any, entry: Mapping[str, Any]) -> bool:
    return isinstance(live, keras.Model) and "layers" in entry.get("config", {})


def _attrs(entry: Mapping[str, Any]) -> dict[str, Any]:
    attrs = dict(entry.get("config") or {})
    if "data_format" in attrs and attrs["data_format"] is None:
        attrs["data_format"] = keras.config.image_data_format()
    return attrs


def _weights(layer: Any) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for i, var in enumerate(getattr(layer, "weights", [])):
        key = var.name if var.name not in out else f"{var.name}#{i}"
        out[key] = var.value
    return out


def _constants(args: list[Any], kwargs: dict[str, Any], rank: int
               ) -> tuple[dict[str, Any], dict[str, tuple[tuple[Any, ...], tuple[int, ...]]], bool]:
    """The array operands of an operation's call, aligned to its output (``rank`` axes
    without the batch axis, leading axes of size 1); where each is in the call and its shape;
    and whether some array could not be aligned."""
    found: dict[str, Any] = {}
    where: dict[str, tuple[tuple[Any, ...], tuple[int, ...]]] = {}
    unaligned = False
    places: list[tuple[tuple[str, Any], Any]] = [(("args", i), v) for i, v in enumerate(args)]
    places += [(("kwargs", k), v) for k, v in kwargs.items()]
    for place, value in places:
        if isinstance(value, _Ref) or not hasattr(value, "shape") or not hasattr(value, "dtype"):
            continue
        shape = tuple(int(d) for d in value.shape)
        if not shape:
            continue
        if len(shape) <= rank:
            aligned = (1,) * (rank - len(shape)) + shape
        elif len(shape) == rank + 1 and shape[0] == 1:
            aligned = shape[1:]
        else:
            unaligned = True
            continue
        name = f"{place[0]}[{place[1]}]"
        found[name] = np.reshape(keras.ops.convert_to_numpy(value), aligned)
        where[name] = (place, shape)
    return found, where, unaligned


class _Reader:
    """Reads a model (and the models nested in it) into a :class:`_Walk`."""

    def __init__(self) -> None:
        self.walk = _Walk()

    def model(self, path: str, model: keras.Model, config: dict[str, Any],
              inputs: list[int] | None) -> _Plan:
        if isinstance(model, keras.Sequential):
            plan = self.sequential(path, model, config, inputs)
        else:
            plan = self.functional(path, model, config, inputs)
        self.walk.plans.setdefault(path, plan)
        return plan

    def call(self, path: str, entry: dict[str, Any], live: Any, args: list[Any],
             kwargs: dict[str, Any], declared: Callable[[int], Spec | None],
             count: int, trace: bool = False) -> _Step:
        """Add one call of a layer, an operation or a nested model. Output specs are the
        ``declared`` ones (the model's own symbolic tensors), or inferred by Keras for this
        call if ``trace`` (a nested model called on other shapes than it was built for) or if
        one is missing."""
        walk = self.walk
        if _is_model(live, entry):
            sub_inputs = args[0] if args else kwargs.get("inputs")
            first = walk.plans.get(path)
            sub = self.model(path, live, entry["config"], [r.tensor for r in _refs(sub_inputs)])
            outs = keras.tree.flatten(sub.output_struct)
            return _Step(path, args, kwargs, outs, first or sub)
        in_ids = [r.tensor for r in _refs((args, kwargs))]
        specs = [declared(i) for i in range(count)]
        if trace or any(s is None for s in specs):
            try:
                traced = _traced(live, args, kwargs, walk.specs, path)
            except PruneError:
                if any(s is None for s in specs[:1]):
                    raise
                traced = []
            specs = [traced[i] if trace and i < len(traced) else s if s is not None
                     else traced[i] if i < len(traced) else ((None,), "float32")
                     for i, s in enumerate(specs)]
        out_ids = [walk.tensor(s) for s in specs if s is not None]
        if path not in walk.layers:
            attrs = _attrs(entry)
            constants: dict[str, Any] = {}
            if not isinstance(live, keras.layers.Layer):
                rank = len(walk.shapes[out_ids[0]]) if out_ids else 0
                constants, where, unaligned = _constants(args, kwargs, rank)
                walk.constants[path] = where
                if unaligned:
                    attrs["unaligned_constants"] = True
            walk.layers[path] = LayerSpec(path, layer_kind(live), attrs, _weights(live),
                                          constants)
            walk.live[path] = live
            walk.entries[path] = entry
        walk.nodes.append(Node(path, tuple(in_ids), tuple(out_ids)))
        return _Step(path, args, kwargs, out_ids)

    def sequential(self, path: str, model: keras.Sequential, config: dict[str, Any],
                   inputs: list[int] | None) -> _Plan:
        walk = self.walk
        prefix = f"{path}/" if path else ""
        entries = list(config["layers"])
        first = entries[0] if entries and entries[0]["class_name"] == "InputLayer" else None
        body = entries[1:] if first is not None else entries
        t = walk.tensor(_spec_of(model.inputs[0])) if inputs is None else inputs[0]
        declared = inputs is None or (first is not None and _same(
            walk.specs[t], _input_spec(first)))
        plan = _Plan(path, model, config, True, [(first, t)], t)
        current = t
        for entry, live in zip(body, model.layers, strict=True):
            def spec(i: int, live: Any = live) -> Spec | None:
                try:
                    return None if i else _spec_of(live.output)
                except (AttributeError, ValueError):  # called in several models
                    return None

            step = self.call(prefix + entry["config"].get("name", entry.get("name", "")),
                             entry, live, [_Ref(current)], {}, spec, 1, trace=not declared)
            plan.steps.append(step)
            current = step.outputs[0]
        plan.output_struct = current
        return plan

    def functional(self, path: str, model: keras.Model, config: dict[str, Any],
                   inputs: list[int] | None) -> _Plan:
        walk = self.walk
        prefix = f"{path}/" if path else ""
        entries = config["layers"]
        by_name = {e["name"]: e for e in entries}
        live_ops = {op.name: op for op in model.operations}
        input_struct = _ref_struct(config["input_layers"])
        made: dict[tuple[str, int], list[int]] = {}
        plan_inputs: list[tuple[dict[str, Any] | None, int]] = []
        declared_ok = True
        for pos, leaf in enumerate(keras.tree.flatten(input_struct)):
            entry = by_name[leaf.key[0]]
            given = _input_spec(entry)
            if inputs is None:
                t = walk.tensor(given)
            else:
                t = inputs[pos]
                declared_ok = declared_ok and _same(walk.specs[t], given)
            made[leaf.key] = [t]
            plan_inputs.append((entry, t))
        plan = _Plan(path, model, config, False, plan_inputs,
                     keras.tree.map_structure(lambda leaf: made[leaf.key][0], input_struct))
        declared: dict[tuple[str, int, int], Spec] = {}
        for entry in entries:
            for node in entry.get("inbound_nodes", []):
                for ref in _tensor_refs(node):
                    name, index, k = _history(ref)
                    declared[(name, index, k)] = (tuple(ref["config"]["shape"]),
                                                  str(ref["config"]["dtype"]))
        outputs = keras.tree.flatten(_ref_struct(config["output_layers"]))
        for leaf, tensor in zip(outputs, model.outputs, strict=False):
            declared[(leaf.key[0], leaf.key[1], leaf.index)] = _spec_of(tensor)
        counts: dict[tuple[str, int], int] = {}
        for name, index, k in declared:
            counts[(name, index)] = max(counts.get((name, index), 0), k + 1)
        pending = [(e, i, n) for e in entries if e["class_name"] != "InputLayer" or
                   e.get("inbound_nodes") for i, n in enumerate(e.get("inbound_nodes", []))]
        while pending:
            waiting = []
            for entry, index, node in pending:
                keys = {_history(r)[:2] for r in _tensor_refs(node)}
                if not keys <= made.keys():
                    waiting.append((entry, index, node))
                    continue
                name = entry["name"]
                live = live_ops[name]
                args = list(_decode(node.get("args", []), made))
                kwargs = dict(_decode(node.get("kwargs", {}), made))

                def spec(k: int, key: tuple[str, int] = (name, index)) -> Spec | None:
                    return declared.get((key[0], key[1], k))

                step = self.call(prefix + name, entry, live, args, kwargs, spec,
                                 counts.get((name, index), 1), trace=not declared_ok)
                made[(name, index)] = step.outputs
                plan.steps.append(step)
            if len(waiting) == len(pending):
                raise PruneError(f"cannot read the graph of model '{model.name}': "
                                 f"{len(waiting)} calls never get their inputs")
            pending = waiting
        plan.output_struct = keras.tree.map_structure(
            lambda leaf: made[leaf.key][leaf.index], _ref_struct(config["output_layers"]))
        return plan


def _input_spec(entry: Mapping[str, Any]) -> Spec:
    config = entry["config"]
    shape = config.get("batch_shape") or config.get("batch_input_shape")
    return tuple(shape), str(config.get("dtype") or keras.config.floatx())


def _same(a: Spec, b: Spec) -> bool:
    return tuple(a[0]) == tuple(b[0]) and keras.backend.standardize_dtype(a[1]) == \
        keras.backend.standardize_dtype(b[1])


def _check_model(model: Any) -> dict[str, Any]:
    """The config of a model kerasprune can read, or a :class:`PruneError` saying why not."""
    if not isinstance(model, keras.Model):
        raise PruneError(f"expected a keras.Model, got {type(model).__name__}")
    config: Any = None
    failure: Exception | None = None
    try:
        config = model.get_config()
    except (NotImplementedError, TypeError, AttributeError, ValueError) as err:
        failure = err
    functional = isinstance(getattr(model, "inputs", None), list) and isinstance(
        getattr(model, "operations", None), list)
    if functional and failure is not None:
        raise PruneError(
            f"cannot read the graph of model '{model.name}': its get_config() fails "
            f"({type(failure).__name__}: {failure}); a layer or operation in it cannot be "
            "serialized")
    if functional and (not isinstance(config, dict) or "layers" not in config):
        raise PruneError(
            f"model '{model.name}' ({type(model).__name__}) is a functional model with a "
            "config of its own, without its graph; prune the plain functional model of the "
            "same graph: keras.Model(model.inputs, model.outputs)")
    if not isinstance(config, dict) or "layers" not in config:
        inner = [layer.name for layer in model.layers if isinstance(layer, keras.Model)]
        hint = (f"; the Sequential/functional models it holds can be pruned one by one "
                f"({', '.join(repr(n) for n in inner[:4])})" if inner else "")
        raise PruneError(
            f"model '{model.name}' ({type(model).__name__}) is a subclassed keras.Model: its "
            "layers are wired in Python by its call(), which kerasprune cannot read.\n"
            "kerasprune prunes Sequential and functional models: build the same network with "
            "keras.Sequential or keras.Model(inputs, outputs) and copy the weights "
            f"(set_weights){hint}")
    if not model.built or not model.inputs:
        raise PruneError(f"model '{model.name}' is not built: call it on data or build it")
    return config


def to_graph(model: keras.Model) -> KerasGraph:
    """Describe a Sequential or functional Keras model as a core graph.

    Parameters
    ----------
    model
        A built ``keras.Sequential`` or functional ``keras.Model``; nested models are
        described layer by layer (their layers are named ``outer/inner``), and the operations
        of a functional graph (``x * 2.0``, ``keras.ops.relu(h)``) are nodes of their own.

    Returns
    -------
    KerasGraph
        The graph, with what :func:`from_graph` needs to build a model from it.

    Raises
    ------
    PruneError
        For a subclassed model or one that is not built.
    """
    config = _check_model(model)  # a deep copy already; only read here
    reader = _Reader()
    plan = reader.model("", model, config, None)
    walk = reader.walk
    walk.top = plan
    graph = Graph(layers=dict(walk.layers), nodes=tuple(walk.nodes), shapes=dict(walk.shapes),
                  inputs=tuple(t for _, t in plan.inputs),
                  outputs=tuple(keras.tree.flatten(plan.output_struct)))
    return KerasGraph(graph, model, walk)


# --------------------------------------------------------------------------------------------
# Building a model
# --------------------------------------------------------------------------------------------


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


def _settable(cls: type, attr: str) -> bool:
    """Whether ``attr`` can be set on instances of ``cls`` (not a read-only property, as an
    RNN's ``kernel_initializer``, which belongs to its cell)."""
    for klass in cls.__mro__:
        if attr in vars(klass):
            found = vars(klass)[attr]
            return not isinstance(found, property) or found.fset is not None
    return True


def _unaliased(value: Any) -> Any:
    """``value`` in a buffer of its own: a JAX variable would otherwise share the source's
    array, which jit-compiled predict/fit donate (delete) when they run on the new model, and
    a torch variable the source's storage (training one would change the other). TensorFlow
    copies on assignment."""
    backend = keras.backend.backend()
    if backend == "torch":
        return keras.ops.copy(value)
    if backend != "jax":
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


def _merged_shape(declared: tuple[Any, ...], new: Shape) -> list[Any]:
    """An input's declared batch shape with its known dimensions set to the new shape's:
    unknown dimensions stay unknown."""
    return [declared[0], *(None if d is None else int(n) for d, n in zip(
        declared[1:], new, strict=True))]


class _Builder:
    """Builds the Keras model of a changed graph by replaying the source model's calls."""

    def __init__(self, source: KerasGraph, graph: Graph) -> None:
        self.source = source
        self.graph = graph
        self.walk = source.walk
        self.objects: dict[str, Any] = {}
        self.fed: dict[str, dict[str, _Given]] = {}
        self.restore: set[str] = set()  # layers built with stand-in initializers

    # -- objects ---------------------------------------------------------------------------

    def config_of(self, path: str) -> dict[str, Any]:
        """The layer's config, with the attributes the deletion changed."""
        config: dict[str, Any] = copy.deepcopy(self.walk.entries[path].get("config") or {})
        old, new = self.walk.layers[path].attrs, self.graph.layers[path].attrs
        for key, value in new.items():
            if key in config and _differs(value, old.get(key)):
                config[key] = list(value) if isinstance(value, tuple) else value
        return config

    def object(self, step: _Step) -> Any:
        path = step.path
        if path in self.objects:
            return self.objects[path]
        if step.model is not None:
            made: Any = self.model(step.model)
        else:
            live = self.walk.live[path]
            config = self.config_of(path)
            try:
                if isinstance(live, keras.layers.Lambda):
                    made = _lambda(live, config)
                else:
                    self.fed[path] = self.given(path, config)
                    made = type(live).from_config(config)
            except Exception as err:  # any class's own failure, with its name
                raise PruneError(
                    f"cannot recreate layer '{path}' ({type(live).__name__}) from its config: "
                    f"{type(err).__name__}: {err}. kerasprune rebuilds every layer with "
                    "from_config(get_config()): its get_config must return every constructor "
                    "argument") from err
        self.objects[path] = made
        return made

    def given(self, path: str, config: dict[str, Any]) -> dict[str, _Given]:
        """Put a :class:`_Given` in ``config`` for each weight that its
        ``<weight name>_initializer`` builds, by the convention of Keras' own layers, and
        ``"zeros"`` for the layer's other initializers (its weights are assigned after the
        build): no random values are drawn. Kept to Keras' own layers whose initializers are
        plain attributes (to be put back after the build); the others build as they do."""
        live = self.walk.live[path]
        spec = self.graph.layers[path]
        cls = type(live)
        keys = [k for k, v in config.items() if k.endswith("_initializer") and v is not None]
        if (cls.__module__.split(".")[0] != "keras" or not isinstance(live, keras.layers.Layer)
                or any("#" in key for key in spec.weights) or not keys
                or not all(_settable(cls, k) for k in keys)):
            return {}
        fed: dict[str, _Given] = {}
        source = self.walk.layers[path].weights
        for key in keys:
            weight = key[: -len("_initializer")]
            if weight in spec.weights:
                value = spec.weights[weight]
                own = _unaliased(value) if value is source.get(weight) else value
                config[key] = fed[weight] = _Given(own)
            else:
                config[key] = "zeros"
        self.restore.add(path)
        return fed

    # -- calls -------------------------------------------------------------------------------

    def arguments(self, step: _Step, tensors: Mapping[int, Any]
                  ) -> tuple[list[Any], dict[str, Any]]:
        args = keras.tree.map_structure(
            lambda v: tensors[v.tensor] if isinstance(v, _Ref) else v, step.args)
        kwargs = keras.tree.map_structure(
            lambda v: tensors[v.tensor] if isinstance(v, _Ref) else v, step.kwargs)
        where = self.walk.constants.get(step.path, {})
        old = self.walk.layers.get(step.path)
        new = self.graph.layers.get(step.path)
        for name, ((part, key), shape) in where.items():
            if old is None or new is None or new.constants[name] is old.constants[name]:
                continue
            value = np.asarray(keras.ops.convert_to_numpy(new.constants[name]))
            # back from the aligned shape (see _constants) to the operand's own rank
            target = value.shape[value.ndim - len(shape):] if len(shape) <= value.ndim \
                else (1, *value.shape)
            value = value.reshape(target)
            if part == "args":
                args[key] = value
            else:
                kwargs[key] = value
        return list(args), dict(kwargs)

    def model(self, plan: _Plan) -> keras.Model:
        graph = self.graph
        if plan.sequential:
            layers: list[Any] = []
            entry, t = plan.inputs[0]
            if entry is not None:
                layers.append(self.input_layer(entry, t))
            layers += [self.object(step) for step in plan.steps]
            return keras.Sequential(layers, name=plan.config.get("name"),
                                    trainable=plan.config.get("trainable", True))
        tensors: dict[int, Any] = {}
        for entry, t in plan.inputs:
            assert entry is not None
            tensors[t] = self.input_layer(entry, t).output
        for step in plan.steps:
            obj = self.object(step)
            args, kwargs = self.arguments(step, tensors)
            try:
                outputs = obj(*args, **kwargs)
            except Exception as err:  # reported with the layer's name
                raise PruneError(f"cannot call the rebuilt '{step.path}' "
                                 f"({type(obj).__name__}) on its new inputs: "
                                 f"{type(err).__name__}: {err}") from err
            for t, out in zip(step.outputs, keras.tree.flatten(outputs), strict=False):
                tensors[t] = out
        del graph
        return keras.Model(
            inputs=keras.tree.map_structure(lambda t: tensors[t], plan.input_struct),
            outputs=keras.tree.map_structure(lambda t: tensors[t], plan.output_struct),
            name=plan.config.get("name"), trainable=plan.config.get("trainable", True))

    def input_layer(self, entry: Mapping[str, Any], t: int) -> Any:
        config = copy.deepcopy(dict(entry["config"]))
        key = "batch_shape" if "batch_shape" in config else "batch_input_shape"
        if self.graph.shapes[t] != self.source.graph.shapes[t]:
            config[key] = _merged_shape(tuple(config[key]), self.graph.shapes[t])
        return keras.layers.InputLayer.from_config(config)

    # -- weights -------------------------------------------------------------------------------

    def fill(self) -> None:
        """Give every rebuilt layer its weights (those its build did not take already)."""
        source_layers = self.source.graph.layers
        for path, spec in self.graph.layers.items():
            layer = self.objects.get(path)
            if layer is None or not isinstance(layer, keras.layers.Layer):
                continue
            variables = layer.weights
            if len(variables) != len(spec.weights):
                raise PruneError(f"rebuilt layer '{path}' has {len(variables)} weights, "
                                 f"expected {len(spec.weights)}")
            fed = self.fed.get(path, {})
            built = all(g.calls == 1 and g.fits for g in fed.values())
            for variable, (key, value) in zip(variables, spec.weights.items(), strict=True):
                if tuple(variable.shape) != tuple(value.shape):
                    raise PruneError(f"rebuilt weight '{variable.path}' has shape "
                                     f"{tuple(variable.shape)}, expected {tuple(value.shape)}")
                if not (built and key in fed):
                    variable.assign(_unaliased(value))
            if path in self.restore:  # the layer's own initializers, for its config
                for key, value in self.walk.entries[path].get("config", {}).items():
                    if key.endswith("_initializer") and value is not None:
                        setattr(layer, key, keras.initializers.get(copy.deepcopy(value)))
            for g in fed.values():
                g.value = None
            live = self.walk.live[path]
            if spec is source_layers[path]:
                _carry_state(live, layer)


def _carry_state(live: keras.layers.Layer, new: keras.layers.Layer) -> None:
    """Give an unchanged stateful preprocessing layer (``Normalization``, a lookup...) the
    state its variables do not hold, as a ``.keras`` file would: its own variables through
    ``load_own_variables`` (which recomputes what it derives from them), then its assets (a
    vocabulary)."""
    if callable(getattr(live, "finalize_state", None)):
        store: dict[str, Any] = {}
        live.save_own_variables(store)
        new.load_own_variables({k: np.array(keras.ops.convert_to_numpy(v))
                                if hasattr(v, "shape") else v for k, v in store.items()})
    if callable(getattr(live, "save_assets", None)):
        with tempfile.TemporaryDirectory() as tmp:
            live.save_assets(tmp)
            new.load_assets(tmp)


def _lambda(live: keras.layers.Lambda, config: dict[str, Any]) -> keras.layers.Lambda:
    """A new ``Lambda`` with the live one's Python function (Keras' safe mode refuses to load
    a lambda's code from a config, and the function is the user's own, in memory)."""
    output_shape = config.get("output_shape")
    if isinstance(output_shape, Mapping) and output_shape.get("class_name") == "__lambda__":
        # a lambda computing the shape: loaded from the user's own in-memory model, for this
        # one call only (Keras' safe mode stays on)
        output_shape = keras.layers.Lambda.from_config(
            {"function": output_shape}, safe_mode=False).function
    elif output_shape is not None:
        output_shape = keras.saving.deserialize_keras_object(output_shape)
        if isinstance(output_shape, list):
            output_shape = tuple(output_shape)
    base = {k: config[k] for k in ("name", "trainable", "dtype") if k in config}
    return keras.layers.Lambda(live.function, output_shape=output_shape, mask=live.mask,
                               arguments=dict(live.arguments), **base)


def from_graph(source: KerasGraph, graph: Graph) -> keras.Model:
    """Build a new Keras model for ``graph``, a changed copy of ``source.graph``.

    Parameters
    ----------
    source
        From :func:`to_graph`.
    graph
        The same layers and nodes as ``source.graph``, with changed attributes, weights,
        constants and shapes (as :func:`kerasprune.core.apply_deletion` returns).

    Returns
    -------
    keras.Model
        A new, uncompiled model of the same kind (Sequential or functional), with the same
        inputs (unknown dimensions included), that shares no variable with the source model.

    Raises
    ------
    PruneError
        If a layer cannot be recreated from its config or called on its new inputs.
    """
    walk = source.walk
    assert walk.top is not None
    builder = _Builder(source, graph)
    classes = {type(obj).__name__: type(obj) for obj in walk.live.values()
               if type(obj).__module__.split(".")[0] != "keras"}  # for configs naming them
    with keras.saving.custom_object_scope(classes):
        model = builder.model(walk.top)
    builder.fill()
    return model


# --------------------------------------------------------------------------------------------
# Requests
# --------------------------------------------------------------------------------------------


def _not_a_layer(kg: KerasGraph, ref: Any) -> str | None:
    """What a layer object that has no neurons of its own in the graph is, if known."""
    for path, plan in kg.walk.plans.items():
        if path and plan.live is ref:
            inner = [p for p in kg.graph.layers if p.startswith(f"{path}/")][:3]
            return (f"'{path}' is a nested model, not a layer: name one of its layers "
                    f"({', '.join(repr(p) for p in inner)}, ...)")
    if isinstance(ref, keras.layers.InputLayer) and any(
            entry is not None and entry["config"].get("name") == ref.name
            for plan in kg.walk.plans.values() for entry, _ in plan.inputs):
        return f"'{ref.name}' is an InputLayer (a model input): it has no neurons to delete"
    return None


def _layer_path(kg: KerasGraph, ref: LayerRef) -> str:
    """The graph path of a layer given by name, index or object."""
    model, layers = kg.model, kg.graph.layers
    if isinstance(ref, keras.layers.Layer):
        for path, live in kg.walk.live.items():
            if live is ref:
                return path
        what = _not_a_layer(kg, ref)
        if what is not None:
            raise PruneError(what)
        raise PruneError(f"layer '{ref.name}' ({type(ref).__name__}) is not in model "
                         f"'{model.name}'")
    if isinstance(ref, (int, np.integer)) and not isinstance(ref, (bool, np.bool_)):
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
    for path, plan in kg.walk.plans.items():
        if path and path == ref:
            raise PruneError(_not_a_layer(kg, plan.live) or f"'{ref}' is a nested model")
        for entry, _ in plan.inputs:
            if entry is not None and entry["config"].get("name") == ref:
                raise PruneError(f"'{ref}' is an InputLayer (a model input): it has no neurons "
                                 "to delete")
    return ref  # the core explains unknown names


def _indices(neurons: Any) -> Any:
    """Neuron indices as the core takes them: a backend tensor becomes a NumPy array."""
    if neurons is not None and not isinstance(neurons, (np.ndarray, list, tuple, range)) \
            and keras.ops.is_tensor(neurons):
        return keras.ops.convert_to_numpy(neurons)
    return neurons


def _request(kg: KerasGraph, layer: LayerRef | Mapping[LayerRef, Iterable[int]],
             neurons: Iterable[int] | None) -> dict[str, Iterable[int]]:
    if isinstance(layer, Mapping):
        if neurons is not None:
            raise PruneError("pass neuron indices either in the mapping or as `neurons`")
        out: dict[str, Iterable[int]] = {}
        given: dict[str, LayerRef] = {}
        for ref, idx in layer.items():
            path = _layer_path(kg, ref)
            if path in out:
                raise PruneError(
                    f"layer '{path}' is requested twice (as {_shown(given[path])} and as "
                    f"{_shown(ref)}): give each layer once, with all its neurons")
            out[path], given[path] = _indices(idx), ref
        return out
    if neurons is None:
        raise PruneError("which neurons? pass their indices as `neurons`")
    return {_layer_path(kg, layer): _indices(neurons)}


def _shown(ref: LayerRef) -> str:
    if isinstance(ref, keras.layers.Layer):
        return f"the layer object '{ref.name}'"
    if isinstance(ref, str):
        return f"the name {ref!r}"
    return f"the index {ref!r}"


# --------------------------------------------------------------------------------------------
# Public entry points
# --------------------------------------------------------------------------------------------


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
        rebuild (each layer once).
    neurons
        Indices of the neurons to delete: a sequence of ints, or an integer array or tensor
        of any backend. Negative indices count from the end, as in Python (``-1`` is the
        last). Repeated indices, out-of-range indices and non-integers are errors; deleting
        every neuron of a layer is refused.
    allow_output_change
        Deleting units of a model output changes what the model predicts, so it is refused
        unless this is True.

    Returns
    -------
    keras.Model
        A new, uncompiled model of the same kind, sharing no variable with ``model`` and
        accepting the same inputs. The layer loses those neurons; layers reading them lose
        the matching weights; layers coupled to them (through ``Add``, ``Concatenate``,
        depthwise convolutions, element-wise operations...) lose theirs. Every other layer
        and operation is carried over as it is, whatever its kind. Names, activations,
        initializers, regularizers, constraints, dtype policies and trainable flags are kept.

    Raises
    ------
    PruneError
        Before anything is built, naming the layer and index: unknown layer, a layer without
        neurons, bad indices, a deletion that passes a layer that cannot carry it (naming its
        class and what is supported) or reaches a model input or output.
    TypeError
        If ``allow_output_change`` is not a bool.

    Examples
    --------
    >>> pruned = kerasprune.delete_neurons(model, "conv2d_1", [0, 5, 7])  # doctest: +SKIP
    """
    kg = to_graph(model)
    deletion = surgery.dependency_group(kg.graph, _request(kg, layer, neurons),
                                        allow_output_change=allow_output_change)
    return from_graph(kg, surgery.apply_deletion(deletion, take=_take))


def _take(array: Any, indices: np.ndarray, axis: int) -> Any:
    if isinstance(array, np.ndarray):
        return np.take(array, indices, axis=axis)
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
        One entry per layer and operation, in graph order; ``kerasprune.core.cost.total``
        sums them and ``kerasprune.core.cost.compare`` tabulates two of them.

    Raises
    ------
    PruneError
        If the model's inputs have dimensions of unknown size (besides the batch), on which
        the FLOPs depend.
    """
    kg = to_graph(model)
    unknown = [kg.walk.specs[t][0] for t in kg.graph.inputs
               if any(d is None for d in kg.walk.specs[t][0][1:])]
    if unknown:
        raise PruneError(
            f"the FLOPs of model '{model.name}' depend on the size of its inputs, unknown in "
            f"its input shapes {', '.join(str(tuple(s)) for s in unknown)}: build it on inputs "
            "of a fixed shape to count them (model.count_params() counts its parameters)")
    return cost.count(kg.graph)


def prunable_layers(model: keras.Model) -> list[Prunability]:
    """Every layer with neurons of a model, whether they can be deleted, and why not.

    Parameters
    ----------
    model
        A built Sequential or functional model.

    Returns
    -------
    list of kerasprune.core.surgery.Prunability
        One entry per layer with neurons (Dense, convolutions...), in graph order: its name
        (``outer/inner`` inside a nested model), kind, neuron count, ``prunable``, the
        ``reason`` it is not (the error :func:`delete_neurons` would raise), the ``group`` of
        layers that lose neurons with it, and whether it makes a model ``output``.

    Examples
    --------
    >>> [p.layer for p in kerasprune.prunable_layers(model) if p.prunable]  # doctest: +SKIP
    """
    return surgery.prunability(to_graph(model).graph)


from kerasprune.adapters.keras_apoz import ApozReport, get_apoz, high_apoz  # noqa: E402
from kerasprune.adapters.keras_trim import (  # noqa: E402
    TrimConfig,
    TrimError,
    TrimResult,
    TrimRound,
    trim,
)
