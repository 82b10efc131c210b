"""Building a Keras 3 model from a changed core graph.

:func:`from_graph` replays the calls a model's :class:`~.record.KerasGraph` recorded, through
Keras' public API, in two steps:

1. Recreate and call (:meth:`_Builder.model`): each layer is recreated from its config, with
   the attributes the change made (units, filters...), by its own class; each operation from
   its config; and called on the new symbolic tensors with the original call's arguments
   (keyword tensors, ``training``, masks, constants; a shared layer is called again, a nested
   model is rebuilt and called); a ``Lambda`` keeps its live Python function. A new layer of
   one of Keras' own kinds is built with its final weights as initializers, so its build draws
   no random values and (on TensorFlow) copies nothing twice.
2. Fill (:meth:`_Builder.fill`): every weight the build did not take already is assigned, the
   layer's own initializers are put back in its config, and an unchanged preprocessing layer
   gets the state its variables do not hold.

The user's model is only read: the new model shares no variable with it.
"""

from __future__ import annotations

import copy
import tempfile
from collections.abc import Mapping
from typing import Any

import keras
import numpy as np

from kerasprune.adapters.keras import placement
from kerasprune.adapters.keras.record import Call, KerasGraph, ModelRecord, TensorRef, Walk
from kerasprune.core.graph import Graph, PruneError, Shape
from kerasprune.core.rules import collapse_composites

__all__ = ["from_graph", "unrolled"]


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


_WEIGHT_OF = {"recurrent_initializer": "recurrent_kernel"}
"""Initializers not named ``<weight>_initializer``: a recurrent layer's recurrent kernel."""


def _owner(layer: Any, attr: str) -> Any | None:
    """The object an initializer attribute of ``layer`` can be set on: the layer, or the cell
    of a recurrent layer (whose ``kernel_initializer``... are read-only properties giving the
    cell's); ``None`` if neither."""
    if _settable(type(layer), attr):
        return layer
    cell = getattr(layer, "cell", None)
    return cell if cell is not None and hasattr(cell, attr) and _settable(
        type(cell), attr) else None


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


def _scope(path: str) -> str:
    """The path of the (nested) model a layer path is in (``""``: the model itself)."""
    return path.rsplit("/", 1)[0] if "/" in path else ""


class _Builder:
    """Builds the Keras model of a changed graph by replaying the source model's calls.

    The graph decides what is called on what: a recorded call is kept when its node still
    writes the same tensors (under its layer's name, or a replacing layer's), and reads what
    its node now reads (a ``Concatenate`` may read fewer inputs); a node the source did not
    have calls a layer of ``new_layers``, in the (nested) model its name's path says, as soon
    as its inputs exist. A removed tensor is read through its **stand-in**: the tensor a kept
    node reads in its place, else the one input of the node that wrote it (a deleted layer's
    input).
    """

    def __init__(self, source: KerasGraph, graph: Graph,
                 new_layers: Mapping[str, keras.layers.Layer] | None = None,
                 inside: Graph | None = None) -> None:
        self.source = source
        self.graph = graph
        self.walk = source.walk
        self.new_layers = dict(new_layers or {})
        self.objects: dict[str, Any] = {}
        self.fed: dict[str, dict[str, _Given]] = {}
        self.restore: set[str] = set()  # layers built with stand-in initializers
        self.old_node = {n.outputs[0]: n for n in source.graph.nodes if n.outputs}
        self.new_node = {n.outputs[0]: n for n in graph.nodes if n.outputs}
        self.added = [n for n in graph.nodes if n.outputs and n.outputs[0] not in self.old_node]
        self.alias = self._stand_ins()
        self.inside = inside  # to unroll containing layers: the expanded graph
        self.unrolled: dict[str, keras.layers.Layer] = {}  # sublayers, by graph name

    def _stand_ins(self) -> dict[int, int]:
        """What is read in place of each removed tensor."""
        gone = {t for t in self.source.graph.shapes if t not in self.graph.shapes}
        alias: dict[int, int] = {}
        for t, node in self.old_node.items():  # as a kept node reads it now
            new = self.new_node.get(t)
            if new is not None and len(new.inputs) == len(node.inputs):
                alias.update((a, b) for a, b in zip(node.inputs, new.inputs, strict=True)
                             if a in gone and a != b)
        for a, b in zip(self.source.graph.outputs, self.graph.outputs, strict=True):
            if a in gone:
                alias[a] = b
        for node in self.source.graph.nodes:  # else the one input of the node that wrote it
            live = [self.resolve(t, alias) for t in node.inputs]
            live = [t for t in live if t in self.graph.shapes]
            for t in node.outputs:
                if t in gone and t not in alias and len(set(live)) == 1:
                    alias[t] = live[0]
        return alias

    def resolve(self, t: int, alias: Mapping[int, int] | None = None) -> int:
        """The tensor read in place of ``t`` (``t`` itself if it is still there)."""
        alias = self.alias if alias is None else alias
        seen = set()
        while t not in self.graph.shapes and t in alias and t not in seen:
            seen.add(t)
            t = alias[t]
        return t

    def live(self, path: str) -> Any:
        """The layer a path's layer is made like: a new one, or the source model's."""
        return self.new_layers[path] if path in self.new_layers else self.walk.live[path]

    def recorded(self, path: str) -> Any:
        """The layer spec a path had in the source (a new layer's own)."""
        return self.graph.layers[path] if path in self.new_layers else self.walk.layers[path]

    def entry(self, path: str) -> dict[str, Any]:
        if path in self.new_layers:
            return {"config": self.new_layers[path].get_config()}
        return self.walk.entries[path]

    # -- objects ---------------------------------------------------------------------------

    def config_of(self, path: str) -> dict[str, Any]:
        """The layer's config, with the attributes the deletion changed."""
        config: dict[str, Any] = copy.deepcopy(self.entry(path).get("config") or {})
        old, new = self.recorded(path).attrs, self.graph.layers[path].attrs
        for key, value in new.items():
            if key in config and _differs(value, old.get(key)):
                config[key] = list(value) if isinstance(value, tuple) else value
        return config

    def object(self, step: Call) -> Any:
        path = step.path
        if path in self.objects:
            return self.objects[path]
        if step.model is not None:
            made: Any = self.model(step.model)
        else:
            live = self.live(path)
            config = self.config_of(path)
            try:
                if isinstance(live, keras.layers.Lambda):
                    made = _lambda(live, config)
                else:
                    self.fed[path] = self.given(path, config)
                    made = self.rebuilt_class(path, config).from_config(config)
            except Exception as err:  # any class's own failure, with its name
                raise PruneError(
                    f"cannot recreate layer '{path}' ({type(live).__name__}) from its config: "
                    f"{type(err).__name__}: {err}. kerasprune rebuilds every layer with "
                    "from_config(get_config()): its get_config must return every constructor "
                    "argument") from err
        self.objects[path] = made
        return made

    def rebuilt_class(self, path: str, config: dict[str, Any]) -> Any:
        """The layer's class; for a containing layer that gained attributes its class does
        not take (a KerasHub block whose heads no longer follow its width: ``head_dim``), the
        subclass that takes them (:func:`~.blocks.sized_class`), with them in ``config``."""
        live = self.live(path)
        old, new = self.recorded(path).attrs, self.graph.layers[path].attrs
        added = {k: v for k, v in new.items() if k not in old and k not in config}
        if not added:
            return type(live)
        sized = None
        if type(live).__module__.split(".")[0] in ("keras_hub", "kerasprune"):
            from kerasprune.adapters.keras import blocks  # imports KerasHub: only when needed

            sized = blocks.sized_class(type(live))
        if sized is None:
            raise PruneError(
                f"cannot rebuild layer '{path}' ({type(live).__name__}) after the deletion: "
                f"it would need {', '.join(f'{k}={v}' for k, v in added.items())}, which its "
                "class does not take (it derives them from its other arguments); delete "
                "other neurons, or register a class that takes them")
        config.update(added)
        return sized

    def given(self, path: str, config: dict[str, Any]) -> dict[str, _Given]:
        """Put a :class:`_Given` in ``config`` for each weight that its
        ``<weight name>_initializer`` builds, by the convention of Keras' own layers, and
        ``"zeros"`` for the layer's other initializers (its weights are assigned after the
        build): no random values are drawn. Kept to Keras' own layers whose initializers are
        plain attributes (to be put back after the build); the others build as they do."""
        live = self.live(path)
        spec = self.graph.layers[path]
        cls = type(live)
        keys = [k for k, v in config.items() if k.endswith("_initializer") and v is not None]
        if (cls.__module__.split(".")[0] != "keras" or not isinstance(live, keras.layers.Layer)
                or any("#" in key or "/" in key for key in spec.weights) or not keys
                or not all(_owner(live, k) is not None for k in keys)):
            return {}
        fed: dict[str, _Given] = {}
        source = self.recorded(path).weights
        for key in keys:
            weight = _WEIGHT_OF.get(key, key[: -len("_initializer")])
            if weight in spec.weights:
                value = spec.weights[weight]
                own = _unaliased(value) if value is source.get(weight) else value
                config[key] = fed[weight] = _Given(own)
            else:
                config[key] = "zeros"
        self.restore.add(path)
        return fed

    # -- calls -------------------------------------------------------------------------------

    def arguments(self, step: Call, tensors: Mapping[int, Any]
                  ) -> tuple[list[Any], dict[str, Any]]:
        args = keras.tree.map_structure(
            lambda v: tensors[v.tensor] if isinstance(v, TensorRef) else v, step.args)
        kwargs = keras.tree.map_structure(
            lambda v: tensors[v.tensor] if isinstance(v, TensorRef) else v, step.kwargs)
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

    def steps(self, plan: ModelRecord) -> list[Call]:
        """The calls of a (nested) model in the changed graph, in an order that runs."""
        ready = {self.resolve(t) for _, t in plan.inputs}
        pending = [n for n in self.added if _scope(n.layer) == plan.path]
        out: list[Call] = []

        def flush() -> None:
            while True:
                runnable = [n for n in pending if all(t in ready for t in n.inputs)]
                if not runnable:
                    return
                for node in runnable:
                    refs = [TensorRef(t) for t in node.inputs]
                    out.append(Call(node.layer, [refs[0] if len(refs) == 1 else refs], {},
                                    list(node.outputs)))
                    ready.update(node.outputs)
                    pending.remove(node)

        flush()
        for step in plan.steps:
            if step.model is not None:
                call = Call(step.path, *self.resolved(step.args, step.kwargs),
                            [self.resolve(t) for t in step.outputs], step.model)
            else:
                node = self.new_node.get(step.outputs[0]) if step.outputs else None
                if node is None:
                    continue  # removed
                call = Call(node.layer, *self.rewired(step, node), list(node.outputs))
            out.append(call)
            ready.update(call.outputs)
            flush()
        return out

    def resolved(self, args: Any, kwargs: Any) -> tuple[list[Any], dict[str, Any]]:
        def one(v: Any) -> Any:
            return TensorRef(self.resolve(v.tensor)) if isinstance(v, TensorRef) else v

        return (list(keras.tree.map_structure(one, list(args))),
                dict(keras.tree.map_structure(one, dict(kwargs))))

    def rewired(self, step: Call, node: Any) -> tuple[list[Any], dict[str, Any]]:
        """A kept call's arguments, reading what its node reads now."""
        old = self.old_node[step.outputs[0]].inputs
        new = node.inputs
        if old == new:
            return step.args, step.kwargs
        if len(old) == len(new):
            position = iter(new)
            return (list(keras.tree.map_structure(
                        lambda v: TensorRef(next(position)) if isinstance(v, TensorRef) else v,
                        list(step.args))),
                    dict(keras.tree.map_structure(
                        lambda v: TensorRef(next(position)) if isinstance(v, TensorRef) else v,
                        dict(step.kwargs))))
        args = list(step.args)
        if (args and isinstance(args[0], (list, tuple)) and len(args[0]) == len(old)
                and all(isinstance(v, TensorRef) for v in args[0])):
            return [[TensorRef(t) for t in new], *args[1:]], step.kwargs
        raise PruneError(f"cannot rebuild '{node.layer}' with {len(new)} of its {len(old)} "
                         "inputs: only a layer taking its inputs as one list (a "
                         "Concatenate) can lose some")

    def model(self, plan: ModelRecord) -> keras.Model:
        if plan.sequential:
            layers: list[Any] = []
            entry, t = plan.inputs[0]
            if entry is not None:
                layers.append(self.input_layer(entry, self.resolve(t)))
            layers += [self.object(step) for step in self.steps(plan)]
            return keras.Sequential(layers, name=plan.config.get("name"),
                                    trainable=plan.config.get("trainable", True))
        tensors: dict[int, Any] = {}
        for entry, t in plan.inputs:
            assert entry is not None
            tensors[self.resolve(t)] = self.input_layer(entry, self.resolve(t)).output
        outputs = keras.tree.map_structure(self.resolve, plan.output_struct)
        if plan is self.walk.top:
            given = iter(self.graph.outputs)
            outputs = keras.tree.map_structure(lambda _: next(given), plan.output_struct)
        for step in self.steps(plan):
            if self.inside is not None and self.source.expansion is not None \
                    and step.path in self.source.expansion.blocks:
                self.unroll(step, tensors)
                continue
            obj = self.object(step)
            args, kwargs = self.arguments(step, tensors)
            try:
                made = obj(*args, **kwargs)
            except Exception as err:  # reported with the layer's name
                raise PruneError(f"cannot call the rebuilt '{step.path}' "
                                 f"({type(obj).__name__}) on its new inputs: "
                                 f"{type(err).__name__}: {err}") from err
            for t, out in zip(step.outputs, keras.tree.flatten(made), strict=False):
                tensors[t] = out
        missing = [t for t in keras.tree.flatten(outputs) if t not in tensors]
        if missing:
            raise PruneError(f"the change would remove an output of the nested model "
                             f"'{plan.path}': kerasprune does not change what a nested model "
                             "outputs")
        return keras.Model(
            inputs=keras.tree.map_structure(lambda t: tensors[self.resolve(t)],
                                            plan.input_struct),
            outputs=keras.tree.map_structure(lambda t: tensors[t], outputs),
            name=plan.config.get("name"), trainable=plan.config.get("trainable", True))

    def unroll(self, step: Call, tensors: dict[int, Any]) -> None:
        """Call the sublayers of a containing layer, as layers of their own, in the order of
        the expanded graph (:func:`unrolled`)."""
        assert self.inside is not None
        graph = self.inside
        node = self.source.graph.calls(step.path)
        inner = [n for n in graph.nodes if n.layer.startswith(f"{step.path}/")]
        read = {t for n in inner for t in n.inputs}
        why = None
        if len(node) != 1:
            why = f"it is called {len(node)} times"
        elif any(t not in read for t in node[0].inputs):
            why = "it is called with a mask, which its sublayers would not get"
        elif any(k != "training" for k in step.kwargs):
            why = f"it is called with arguments ({', '.join(step.kwargs)}) its rule ignores"
        if why is not None:
            raise PruneError(f"cannot measure inside layer '{step.path}': {why}")
        for n in inner:
            spec = graph.layers[n.layer]
            if spec.kind == "MultiHeadAttention":
                tensors[n.outputs[0]] = self.attention(n.layer, spec,
                                                       [tensors[t] for t in n.inputs])
                continue
            layer = self.unrolled.get(n.layer)
            if layer is None:
                config = {k: v for k, v in spec.attrs.items() if k in _INNER_CONFIG}
                cls = getattr(keras.layers, spec.kind, None)
                if not isinstance(cls, type):
                    raise PruneError(f"cannot measure inside layer '{step.path}': its "
                                     f"sublayer '{n.layer}' is of kind {spec.kind}, not a "
                                     "Keras layer class")
                layer = cls(**config, name=n.layer.replace("/", "__"))
                self.unrolled[n.layer] = layer
            args = [tensors[t] for t in n.inputs]
            tensors[n.outputs[0]] = layer(args if spec.kind == "Add" else args[0])
        for n in inner:
            if n.layer in self.unrolled and graph.layers[n.layer].kind != "MultiHeadAttention":
                _assign(self.unrolled[n.layer], graph.layers[n.layer].weights)

    def attention(self, name: str, spec: Any, args: list[Any]) -> Any:
        """A self- or cross-attention sublayer as its projections and a layer that gives
        every head's output (``(batch, length, heads, value_dim)``, named in
        :attr:`unrolled` as ``name:heads``), so that heads can be measured."""
        if name in self.unrolled:
            raise PruneError(f"cannot measure inside '{name}': it is called more than once")
        weights = spec.weights
        base = name.replace("/", "__")
        _, heads, key_dim = (int(d) for d in weights["query/kernel"].shape)
        value_dim = int(weights["value/kernel"].shape[-1])
        width = int(weights["attention_output/kernel"].shape[-1])
        bias = "query/bias" in weights

        def project(part: str, dims: int, x: Any) -> Any:
            layer = keras.layers.EinsumDense("abc,cde->abde",
                                             output_shape=(x.shape[1], heads, dims),
                                             bias_axes="de" if bias else None,
                                             name=f"{base}__{part}")
            out = layer(x)
            _assign(layer, {k[len(part) + 1:]: v for k, v in weights.items()
                            if k.startswith(f"{part}/")})
            return out

        query, value = args[0], args[1]
        key = args[2] if len(args) > 2 else value
        attend = _HeadOutputs(key_dim, bool(spec.attrs.get("use_causal_mask", False)),
                              name=f"{base}__heads")
        per_head = attend([project("query", key_dim, query), project("key", key_dim, key),
                           project("value", value_dim, value)])
        output = keras.layers.EinsumDense(
            "abcd,cde->abe", output_shape=(query.shape[1], width),
            bias_axes="e" if "attention_output/bias" in weights else None,
            name=f"{base}__attention_output")
        out = output(per_head)
        _assign(output, {k[len("attention_output/"):]: v for k, v in weights.items()
                         if k.startswith("attention_output/")})
        self.unrolled[name] = output
        self.unrolled[f"{name}:heads"] = attend
        return out

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
                for key, value in self.entry(path).get("config", {}).items():
                    owner = _owner(layer, key)
                    if key.endswith("_initializer") and value is not None and owner is not None:
                        setattr(owner, key, keras.initializers.get(copy.deepcopy(value)))
            for g in fed.values():
                g.value = None
            if path in self.new_layers or spec is source_layers.get(path):
                _carry_state(self.live(path), layer)


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


def _assign(layer: keras.layers.Layer, weights: Mapping[str, Any]) -> None:
    """Assign a new layer's variables from ``weights``, named by their path inside it."""
    for variable in layer.weights:
        parts = variable.path.split("/")
        key = "/".join(parts[parts.index(layer.name) + 1:])
        variable.assign(_unaliased(weights[key]))


class _HeadOutputs(keras.layers.Layer):  # type: ignore[misc]
    """Scaled dot-product attention of projected queries, keys and values ``(batch, length,
    heads, dims)``, as ``keras.layers.MultiHeadAttention`` computes it (without masks but a
    causal one), giving each head's output ``(batch, length, heads, value_dim)``."""

    def __init__(self, key_dim: int, causal: bool, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.key_dim = key_dim
        self.causal = causal

    def call(self, inputs: Any) -> Any:
        ops = keras.ops
        query, key, value = inputs
        query = ops.multiply(query, ops.cast(1.0 / np.sqrt(float(self.key_dim)), query.dtype))
        scores = ops.einsum("aecd,abcd->acbe", key, query)  # (batch, heads, query, key)
        if self.causal:
            rows, cols = ops.shape(scores)[-2], ops.shape(scores)[-1]
            allowed = ops.greater_equal(ops.expand_dims(ops.arange(rows), -1),
                                        ops.expand_dims(ops.arange(cols), 0))
            scores = ops.where(allowed, scores, ops.cast(-1e9, scores.dtype))
        weights = ops.softmax(scores, axis=-1)
        return ops.einsum("acbe,aecd->abcd", weights, value)

    def compute_output_shape(self, shapes: Any) -> Any:
        return (*shapes[0][:-1], shapes[2][-1])

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "key_dim": self.key_dim, "causal": self.causal}


_INNER_CONFIG = frozenset({"units", "activation", "use_bias", "axis", "epsilon", "center",
                           "scale", "rate", "noise_shape", "num_heads", "key_dim", "value_dim",
                           "output_shape", "dropout", "attention_axes"})
"""The attributes of a containing layer's sublayers (as its rule gives them) that are
arguments of the Keras class of their kind."""


def unrolled(source: KerasGraph) -> tuple[keras.Model, dict[str, str]]:
    """The model of ``source`` with every containing layer (a transformer block) replaced by
    its sublayers, called as layers of their own: the same function, whose sublayers'
    outputs can be read (to measure statistics inside a block).

    Parameters
    ----------
    source
        A model read with containing layers (``source.expansion``).

    Returns
    -------
    keras.Model, dict
        A new functional model (sharing no variable with the source), and the name of each
        sublayer (``block/sublayer`` in the graph) in it.

    Raises
    ------
    PruneError
        If a containing layer is called in a way its rule does not describe (with a mask, or
        more than once), or the model is not functional at its top.
    """
    expansion = source.expansion
    top = source.walk.top
    assert top is not None
    if expansion is None or not expansion.blocks:
        return from_graph(source, source.graph), {}
    if top.sequential:
        raise PruneError("cannot measure inside the containing layers of a Sequential model")
    plain = KerasGraph(expansion.source, source.model, source.walk, expansion)
    builder = _Builder(plain, expansion.source, inside=expansion.graph)
    with keras.saving.custom_object_scope(_user_classes(source.walk)):
        model = builder.model(top)
    builder.fill()
    return model, {name: layer.name for name, layer in builder.unrolled.items()}
    # (a sublayer ``block/mha`` is its output projection; ``block/mha:heads`` its heads)


def from_graph(source: KerasGraph, graph: Graph,
               new_layers: Mapping[str, keras.layers.Layer] | None = None) -> keras.Model:
    """Build a new Keras model for ``graph``, a changed copy of ``source.graph``.

    Parameters
    ----------
    source
        From :func:`~kerasprune.adapters.keras.convert.to_graph`.
    graph
        ``source.graph`` with changed attributes, weights, constants and shapes (as
        :func:`kerasprune.core.apply_deletion` returns), and possibly changed structure
        (:mod:`kerasprune.core.edit`): nodes removed (a removed tensor's readers read its
        stand-in, or a ``Concatenate`` fewer inputs), layers replaced (a node keeps its
        tensors), nodes added.
    new_layers
        The layer each new or replacing layer of ``graph`` is made like, by graph path
        (``outer/name`` in a nested model): its class and config, and, as for any layer,
        the weights of its spec in ``graph``. It is not itself put in the model.

    Returns
    -------
    keras.Model
        A new, uncompiled model of the same kind (Sequential or functional), with the same
        inputs (unknown dimensions included), that shares no variable with the source model.
        Built under the source model's ``tf.distribute`` strategy or Keras distribution, if
        it has one: its variables are mirrored or laid out as the source's.

    Raises
    ------
    PruneError
        If a layer cannot be recreated from its config or called on its new inputs.
    PlacementError
        If a strategy or distribution is in effect that is not the source model's.
    """
    top = source.walk.top
    assert top is not None
    if source.expansion is not None and source.expansion.blocks:
        # layers that contain layers: back to one node each, with their sublayers' changes
        graph = collapse_composites(source.expansion, graph)
        source = KerasGraph(source.source, source.model, source.walk)
    builder = _Builder(source, graph, new_layers)
    classes = {**_user_classes(source.walk), **{
        type(obj).__name__: type(obj) for obj in (new_layers or {}).values()
        if type(obj).__module__.split(".")[0] != "keras"}}
    # under the source's tf.distribute strategy or Keras distribution: the new variables are
    # mirrored or laid out as the source's
    with placement.of(source.model).scope():
        with keras.saving.custom_object_scope(classes):
            model = builder.model(top)  # 1. recreate and call every layer, nested models too
        builder.fill()  # 2. the weights the build did not take, initializers, preprocessing
    return model


def _user_classes(walk: Walk) -> dict[str, type]:
    """The model's classes from outside Keras, by name: its configs name them."""
    return {type(obj).__name__: type(obj) for obj in walk.live.values()
            if type(obj).__module__.split(".")[0] != "keras"}

