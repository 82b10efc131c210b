"""Layer references: the layers a user names (by name, index or object) as graph paths.

Every public function that takes layers resolves them here, against the model's
:class:`~kerasprune.adapters.keras.record.KerasGraph`, so all of them accept the same
references and explain a wrong one the same way (a nested model, an ``InputLayer``, an
ambiguous name, an index out of range).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, Union

import keras
import numpy as np

from kerasprune.adapters.keras.record import KerasGraph
from kerasprune.core.graph import PruneError

__all__ = ["LayerRef", "layer_names", "layer_path", "neuron_request"]

LayerRef = Union[str, int, keras.layers.Layer]
"""A layer given by name, by index in ``model.layers``, or as the layer object."""


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


def layer_path(kg: KerasGraph, ref: LayerRef) -> str:
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
        return layer_path(kg, model.layers[int(ref)])
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


def _target(kg: KerasGraph, ref: LayerRef) -> str:
    """The graph key of a request's target: a layer's path, or ``"path:part"`` for units
    inside a layer (``"mha:heads"``, the layer given by name as :func:`layer_path` takes it)."""
    if isinstance(ref, str) and ":" in ref and ref not in kg.graph.layers:
        layer, part = ref.rsplit(":", 1)
        path = layer_path(kg, layer)
        if path in kg.graph.layers:
            return f"{path}:{part}"
    return layer_path(kg, ref)


def _indices(neurons: Any) -> Any:
    """Neuron indices as the core takes them: a backend tensor becomes a NumPy array."""
    if neurons is not None and not isinstance(neurons, (np.ndarray, list, tuple, range)) \
            and keras.ops.is_tensor(neurons):
        return keras.ops.convert_to_numpy(neurons)
    return neurons


def neuron_request(kg: KerasGraph, layer: LayerRef | Mapping[LayerRef, Iterable[int]],
             neurons: Iterable[int] | None) -> dict[str, Iterable[int]]:
    """A deletion request as the core takes it, ``{graph path: neuron indices}``, from a
    layer and its neurons or from a mapping ``{layer: neurons}`` (each layer once)."""
    if isinstance(layer, Mapping):
        if neurons is not None:
            raise PruneError("pass neuron indices either in the mapping or as `neurons`")
        out: dict[str, Iterable[int]] = {}
        given: dict[str, LayerRef] = {}
        for ref, idx in layer.items():
            path = _target(kg, ref)
            if path in out:
                raise PruneError(
                    f"layer '{path}' is requested twice (as {_shown(given[path])} and as "
                    f"{_shown(ref)}): give each layer once, with all its neurons")
            out[path], given[path] = _indices(idx), ref
        return out
    if neurons is None:
        raise PruneError("which neurons? pass their indices as `neurons`")
    return {_target(kg, layer): _indices(neurons)}


def _shown(ref: LayerRef) -> str:
    if isinstance(ref, keras.layers.Layer):
        return f"the layer object '{ref.name}'"
    if isinstance(ref, str):
        return f"the name {ref!r}"
    return f"the index {ref!r}"


def layer_names(kg: KerasGraph, layers: Any, what: str = "measure") -> list[str] | None:
    """The graph names of ``layers`` (names, indices or objects; one or several)."""
    if layers is None:
        return None
    single = (str, int, np.integer, keras.layers.Layer)
    refs = [layers] if isinstance(layers, single) else list(layers)
    if not refs:
        raise ValueError(f"layers is empty: name the layers to {what}, or pass None for all")
    return [layer_path(kg, ref) for ref in refs]
