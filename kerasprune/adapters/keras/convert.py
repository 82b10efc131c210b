"""Reading a Keras 3 model as a core graph.

A Sequential or functional model is read through its public serialization format
(``get_config``, the format of ``.keras`` files, which Keras keeps stable): every call of a
layer or of an operation (``x * 2.0``, ``keras.ops.relu(h)``) in the functional graph becomes a
core :class:`~kerasprune.core.graph.Node`, with the shapes of the model's own symbolic tensors
(``None`` dimensions count as 1 in the core; the adapter keeps them in the record). Nested
models are read layer by layer (``outer/inner``). What :mod:`.build` needs to make a model
again is kept beside the graph (:class:`~kerasprune.adapters.keras.record.KerasGraph`). The
user's model is only read.

The only per-kind knowledge of the adapter is here, in :func:`layer_kind`: which core kind a
Keras class has.
"""

from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Callable, Mapping
from typing import Any

import keras
import numpy as np

from kerasprune.adapters.keras.record import Call, KerasGraph, ModelRecord, Spec, TensorRef, Walk
from kerasprune.core import rules as core_rules
from kerasprune.core.graph import Graph, LayerSpec, Node, PruneError

__all__ = ["layer_kind", "to_graph", "with_current_weights"]

_LAYER_KINDS: dict[str, str] = {}
"""Deprecated (``LAYER_KINDS``): core kinds of classes whose class name is not their kind.
A layer of your own needs no entry: register a rule under its class name in a copy of
:data:`kerasprune.core.rules.RULES` and pass it as ``rules=`` (README, "Custom layers")."""


def __getattr__(name: str) -> Any:
    if name == "LAYER_KINDS":
        import warnings

        warnings.warn("kerasprune.adapters.keras.LAYER_KINDS is deprecated: register a rule "
                      "under your layer's class name in RULES.copy() and pass it as rules= "
                      "(README, 'Custom layers')", DeprecationWarning, stacklevel=2)
        return _LAYER_KINDS
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


_BUILTIN_KINDS = frozenset(kind for kind, rule in core_rules.RULES.items()
                           if not isinstance(rule, core_rules.Composite))
"""The kinds kerasprune gives rules for Keras' own classes: a class of another package with
one of these names is not taken for Keras' (its kind is its qualified name). The containing
layers' kinds are other packages' class names (KerasHub's ``TransformerEncoder``)."""

_TENSOR = "__keras_tensor__"


def layer_kind(obj: Any) -> str:
    """The core kind of a Keras layer or operation (the key of its rule).

    Parameters
    ----------
    obj
        A layer, or an operation of a functional graph.

    Returns
    -------
    str
        ``LAYER_KINDS``' entry for its class if there is one (deprecated); its qualified
        name if kerasprune has a rule under it (KerasHub's layers); else the class
        name for a layer and ``"op:<snake_case name>"`` for an operation. A class outside
        Keras that bears the name of a Keras kind gets its qualified name, so it never
        borrows Keras' rule.
    """
    cls = type(obj)
    qualified = f"{cls.__module__}.{cls.__qualname__}"
    if qualified in _LAYER_KINDS:
        return _LAYER_KINDS[qualified]
    if cls.__name__ in _LAYER_KINDS:
        return _LAYER_KINDS[cls.__name__]
    if qualified in _BUILTIN_KINDS:  # a class of another package kerasprune has a rule for
        return qualified
    kind = cls.__name__ if isinstance(obj, keras.layers.Layer) else core_rules.op_kind(
        cls.__name__)
    if kind in _BUILTIN_KINDS and cls.__module__.split(".")[0] != "keras":
        return f"op:{qualified}" if kind.startswith("op:") else qualified
    return kind


# --------------------------------------------------------------------------------------------
# Reading a model
# --------------------------------------------------------------------------------------------


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
    """A call argument from its config: symbolic tensors become :class:`TensorRef`, serialized
    objects (NumPy arrays, tensors, dtypes...) are deserialized."""
    if isinstance(value, Mapping):
        if value.get("class_name") == _TENSOR:
            name, node, index = _history(value)
            return TensorRef(made[(name, node)][index])
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


def _refs(value: Any) -> list[TensorRef]:
    return [leaf for leaf in keras.tree.flatten(value) if isinstance(leaf, TensorRef)]


def _input_args(args: list[Any], kwargs: dict[str, Any]) -> tuple[str, ...]:
    """For each input tensor of a call, in the order of :func:`_refs`, the keyword argument
    it is given as (``""`` for a positional one)."""
    return tuple(str(path[1]) if path[0] == 1 else "" for path, leaf in
                 keras.tree.flatten_with_path((args, kwargs)) if isinstance(leaf, TensorRef))


def _symbolic(value: Any, specs: Mapping[int, Spec]) -> Any:
    return keras.tree.map_structure(
        lambda v: keras.KerasTensor(specs[v.tensor][0], dtype=specs[v.tensor][1])
        if isinstance(v, TensorRef) else v, value)


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


def _inside(layer: Any, var: Any) -> str:
    """A variable's path inside ``layer`` (``sublayer/kernel``), from its public ``path``."""
    path = str(getattr(var, "path", var.name))
    prefix = f"{getattr(layer, 'path', None) or layer.name}/"
    if path.startswith(prefix):
        return path[len(prefix):]
    parts = path.split("/")
    name = getattr(layer, "name", None)
    return "/".join(parts[parts.index(name) + 1:]) if name in parts[:-1] else var.name


def _weights(layer: Any, nested: bool = False) -> dict[str, Any]:
    """A layer's weights by name. Those of a layer that holds layers are named by their path
    inside it, ``sublayer/weight``: all of them if ``nested`` (a layer with a
    :class:`~kerasprune.core.rules.Composite` rule, as the rule names them), else those whose
    name its sublayers share (the ``kernel`` of a ``MultiHeadAttention``'s query, key, value
    and output projections: ``query/kernel``)."""
    variables = list(getattr(layer, "weights", []))
    names = [var.name for var in variables]
    out: dict[str, Any] = {}
    for i, var in enumerate(variables):
        key = _inside(layer, var) if nested or names.count(var.name) > 1 else var.name
        out[key if key not in out else f"{key}#{i}"] = var.value
    return out


def _composite(live: Any, rules: core_rules.RuleSet) -> bool:
    """Whether ``live`` is a layer whose rule describes its sublayers."""
    return isinstance(live, keras.layers.Layer) and isinstance(
        rules.rule_for(layer_kind(live)), core_rules.Composite)


def _sublayers(weights: Mapping[str, Any]) -> tuple[str, ...]:
    """The sublayers a layer's weights belong to (see :func:`_weights`), in order."""
    return tuple(dict.fromkeys(k.rsplit("/", 1)[0] for k in weights if "/" in k))


def _call_inputs(live: Any, args: list[Any], kwargs: dict[str, Any]) -> tuple[str, ...]:
    """The argument each tensor input of a call is given as (``query``, ``value``,
    ``attention_mask``...), in the order of the node's inputs; ``args[i]`` where the call's
    signature cannot name it."""
    try:
        params = [p for p in inspect.signature(live.call).parameters.values()
                  if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    except (TypeError, ValueError):
        params = []
    names = []
    for path, leaf in keras.tree.flatten_with_path((args, kwargs)):
        if not isinstance(leaf, TensorRef):
            continue
        if path[0] == 1:
            names.append(str(path[1]))
        else:
            i = int(path[1])
            names.append(params[i].name if i < len(params) else f"args[{i}]")
    return tuple(names)


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
        if isinstance(value, TensorRef) or not (hasattr(value, "shape")
                                                and hasattr(value, "dtype")):
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
    """Reads a model (and the models nested in it) into a :class:`Walk`."""

    def __init__(self, rules: core_rules.RuleSet) -> None:
        self.walk = Walk()
        self.rules = rules

    def model(self, path: str, model: keras.Model, config: dict[str, Any],
              inputs: list[int] | None) -> ModelRecord:
        if isinstance(model, keras.Sequential):
            plan = self.sequential(path, model, config, inputs)
        else:
            plan = self.functional(path, model, config, inputs)
        self.walk.plans.setdefault(path, plan)
        return plan

    def call(self, path: str, entry: dict[str, Any], live: Any, args: list[Any],
             kwargs: dict[str, Any], declared: Callable[[int], Spec | None],
             count: int, trace: bool = False) -> Call:
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
            return Call(path, args, kwargs, outs, first or sub)
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
            roles = _input_args(args, kwargs)
            if any(roles):  # which argument each input is (an RNN's initial_state, its mask)
                attrs["input_args"] = roles
            constants: dict[str, Any] = {}
            if not isinstance(live, keras.layers.Layer):
                rank = len(walk.shapes[out_ids[0]]) if out_ids else 0
                constants, where, unaligned = _constants(args, kwargs, rank)
                walk.constants[path] = where
                if unaligned:
                    attrs["unaligned_constants"] = True
            if "axis" in attrs and in_ids:  # places a negative axis without a shape
                attrs["input_rank"] = len(walk.shapes[in_ids[0]])
            if isinstance(live, keras.layers.Layer) and (len(in_ids) > 1 or _refs(kwargs)):
                attrs["call_inputs"] = _call_inputs(live, args, kwargs)
            weights = _weights(live, _composite(live, self.rules))
            if _sublayers(weights):
                attrs[core_rules.CONTAINS] = _sublayers(weights)
            walk.layers[path] = LayerSpec(path, layer_kind(live), attrs, weights, constants)
            walk.live[path] = live
            walk.entries[path] = entry
        elif "call_inputs" in walk.layers[path].attrs and walk.layers[path].attrs[
                "call_inputs"] != _call_inputs(live, args, kwargs):
            spec = walk.layers[path]  # a shared layer called with other arguments
            walk.layers[path] = dataclasses.replace(
                spec, attrs={**spec.attrs, "call_inputs": None})
        walk.nodes.append(Node(path, tuple(in_ids), tuple(out_ids)))
        return Call(path, args, kwargs, out_ids)

    def sequential(self, path: str, model: keras.Sequential, config: dict[str, Any],
                   inputs: list[int] | None) -> ModelRecord:
        walk = self.walk
        prefix = f"{path}/" if path else ""
        entries = list(config["layers"])
        first = entries[0] if entries and entries[0]["class_name"] == "InputLayer" else None
        body = entries[1:] if first is not None else entries
        t = walk.tensor(_spec_of(model.inputs[0])) if inputs is None else inputs[0]
        declared = inputs is None or (first is not None and _same(
            walk.specs[t], _input_spec(first)))
        plan = ModelRecord(path, model, config, True, [(first, t)], t)
        current = t
        for entry, live in zip(body, model.layers, strict=True):
            def spec(i: int, live: Any = live) -> Spec | None:
                try:
                    return None if i else _spec_of(live.output)
                except (AttributeError, ValueError):  # called in several models
                    return None

            step = self.call(prefix + entry["config"].get("name", entry.get("name", "")),
                             entry, live, [TensorRef(current)], {}, spec, 1, trace=not declared)
            plan.steps.append(step)
            current = step.outputs[0]
        plan.output_struct = current
        return plan

    def functional(self, path: str, model: keras.Model, config: dict[str, Any],
                   inputs: list[int] | None) -> ModelRecord:
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
        plan = ModelRecord(path, model, config, False, plan_inputs,
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
            name, node = _output_key(leaf, live_ops)
            declared[(name, node, leaf.index)] = _spec_of(tensor)
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
            lambda leaf: made[_output_key(leaf, live_ops)][leaf.index],
            _ref_struct(config["output_layers"]))
        return plan


def _output_key(leaf: _Leaf, live_ops: Mapping[str, Any]) -> tuple[str, int]:
    """The call (layer name, node index) a config's ``output_layers`` leaf names. A nested
    functional model starts out with a node of its own that its ``inbound_nodes`` do not list,
    so its index there is one more than the call's (Keras' ``functional_from_config`` reads
    it the same way)."""
    name, node = leaf.key
    live = live_ops.get(name)
    if isinstance(live, keras.Model) and not isinstance(live, keras.Sequential):
        node -= 1
    return name, node


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


def to_graph(model: keras.Model, rules: core_rules.RuleSet | None = None) -> KerasGraph:
    """Describe a Sequential or functional Keras model as a core graph.

    Parameters
    ----------
    model
        A built ``keras.Sequential`` or functional ``keras.Model``; nested models are
        described layer by layer (their layers are named ``outer/inner``), and the operations
        of a functional graph (``x * 2.0``, ``keras.ops.relu(h)``) are nodes of their own.

    rules
        The rules (:data:`kerasprune.core.rules.RULES` by default): a layer that contains
        layers and has a :class:`~kerasprune.core.rules.Composite` rule (KerasHub's
        ``TransformerEncoder``) is described by its sublayers (``block/sublayer``).

    Returns
    -------
    KerasGraph
        The graph, with what :func:`from_graph` needs to build a model from it.

    Raises
    ------
    PruneError
        For a subclassed model or one that is not built, or a containing layer built in a way
        its rule does not describe.
    """
    config = _check_model(model)  # a deep copy already; only read here
    reader = _Reader(core_rules.RULES if rules is None else rules)
    plan = reader.model("", model, config, None)
    walk = reader.walk
    walk.top = plan
    graph = Graph(layers=dict(walk.layers), nodes=tuple(walk.nodes), shapes=dict(walk.shapes),
                  inputs=tuple(t for _, t in plan.inputs),
                  outputs=tuple(keras.tree.flatten(plan.output_struct)))
    expansion = core_rules.expand_composites(graph, rules)
    return KerasGraph(expansion.graph, model, walk, expansion)


def with_current_weights(kg: KerasGraph) -> KerasGraph:
    """``kg`` with the values its model's weights hold now, its structure not read again.

    A :class:`~kerasprune.adapters.keras.record.KerasGraph` holds the weights' values at
    the time it was read. After the model has run (fit, or any call on JAX, whose compiled
    functions donate the weight arrays they are given and leave new ones in the variables),
    this gives a graph to delete neurons from at the cost of a look at each layer's
    variables.
    """
    rules = kg.expansion.rules if kg.expansion is not None else core_rules.RULES
    layers = {path: dataclasses.replace(spec, weights=_weights(
        kg.walk.live[path], _composite(kg.walk.live[path], rules)))
              if spec.weights else spec for path, spec in kg.walk.layers.items()}
    expansion = core_rules.expand_composites(dataclasses.replace(kg.source, layers=layers),
                                             rules)
    return KerasGraph(expansion.graph, kg.model, dataclasses.replace(kg.walk, layers=layers),
                      expansion)
