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

    def __init__(self, source: KerasGraph, graph: Graph, inside: Graph | None = None) -> None:
        self.source = source
        self.graph = graph
        self.walk = source.walk
        self.objects: dict[str, Any] = {}
        self.fed: dict[str, dict[str, _Given]] = {}
        self.restore: set[str] = set()  # layers built with stand-in initializers
        self.inside = inside  # to unroll containing layers: the expanded graph
        self.unrolled: dict[str, keras.layers.Layer] = {}  # sublayers, by graph name

    # -- objects ---------------------------------------------------------------------------

    def config_of(self, path: str) -> dict[str, Any]:
        """The layer's config, with the attributes the deletion changed."""
        config: dict[str, Any] = copy.deepcopy(self.walk.entries[path].get("config") or {})
        old, new = self.walk.layers[path].attrs, self.graph.layers[path].attrs
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
            live = self.walk.live[path]
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
        live = self.walk.live[path]
        old, new = self.walk.layers[path].attrs, self.graph.layers[path].attrs
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
        live = self.walk.live[path]
        spec = self.graph.layers[path]
        cls = type(live)
        keys = [k for k, v in config.items() if k.endswith("_initializer") and v is not None]
        if (cls.__module__.split(".")[0] != "keras" or not isinstance(live, keras.layers.Layer)
                or any("#" in key or "/" in key for key in spec.weights) or not keys
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

    def model(self, plan: ModelRecord) -> keras.Model:
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
            if self.inside is not None and self.source.expansion is not None \
                    and step.path in self.source.expansion.blocks:
                self.unroll(step, tensors)
                continue
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


def from_graph(source: KerasGraph, graph: Graph) -> keras.Model:
    """Build a new Keras model for ``graph``, a changed copy of ``source.graph``.

    Parameters
    ----------
    source
        From :func:`~kerasprune.adapters.keras.convert.to_graph`.
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
    top = source.walk.top
    assert top is not None
    if source.expansion is not None and source.expansion.blocks:
        # layers that contain layers: back to one node each, with their sublayers' changes
        graph = collapse_composites(source.expansion, graph)
        source = KerasGraph(source.source, source.model, source.walk)
    builder = _Builder(source, graph)
    with keras.saving.custom_object_scope(_user_classes(source.walk)):
        model = builder.model(top)  # 1. recreate and call every layer, nested models too
    builder.fill()  # 2. the weights the build did not take, initializers, preprocessing state
    return model


def _user_classes(walk: Walk) -> dict[str, type]:
    """The model's classes from outside Keras, by name: its configs name them."""
    return {type(obj).__name__: type(obj) for obj in walk.live.values()
            if type(obj).__module__.split(".")[0] != "keras"}

