"""The correctness oracle for surgery, shared by the Keras tests.

Deleting neurons S must give a model whose outputs equal the original model's outputs with the
weights that *read* S (the consuming layers' input slices) set to zero. The reference model is
built with ``keras.models.clone_model`` + ``set_weights`` (independent of kerasprune's rebuild),
and the zeroing below uses only NumPy on the original weights.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import keras
import numpy as np
from backends import as_numpy

import kerasprune
from kerasprune.core import rules
from kerasprune.core.rules import rule_for

ATOL = 1e-5


def _set_zero(w: np.ndarray, wa: rules.WeightAxis, channels: np.ndarray,
              size: int = 0) -> None:
    if wa.fold:  # entry i reads channels i, i+fold, ...: zero it where all of them go
        idx = channels
        if wa.repeat > 1:
            idx = (idx[:, None] * wa.repeat + np.arange(wa.repeat)).reshape(-1)
        gone = np.zeros(size, dtype=bool)
        gone[idx] = True
        idx = np.flatnonzero(gone.reshape(-1, wa.fold).all(axis=0))
    else:
        idx = wa.entries(channels, w.shape[wa.axis])
    index: list[Any] = [slice(None)] * w.ndim
    index[wa.axis] = idx
    w[tuple(index)] = 0


def _live(model: keras.Model, path: str) -> keras.layers.Layer:
    layer: Any = model
    for part in path.split("/"):
        layer = layer.get_layer(part)
    return layer


def _clone_layer(layer: keras.layers.Layer) -> keras.layers.Layer:
    """``clone_model``'s default, except for a ``Lambda``, which Keras' safe mode will not
    rebuild from its config: a new one with the same function."""
    if isinstance(layer, keras.layers.Lambda):
        return keras.layers.Lambda(layer.function, mask=layer.mask, arguments=layer.arguments,
                                   name=layer.name)
    return type(layer).from_config(layer.get_config())


def zeroed_reference(model: keras.Model, layer: Any, neurons: Iterable[int] | None = None,
                     **kwargs: Any) -> keras.Model:
    """A copy of ``model`` whose consumers of the deleted channels read zeros instead."""
    deletion = kerasprune.dependency_group(model, layer, neurons, **kwargs)
    graph = deletion.graph
    ref = keras.models.clone_model(model, clone_function=_clone_layer)
    ref.set_weights(model.get_weights())
    finalize(ref)
    for name, change in deletion.layers().items():
        spec = graph.layers[name]
        node = graph.calls(name)[0]
        rule = rule_for(spec.kind, kwargs.get("rules"))
        in_shapes = [graph.shapes[t] for t in node.inputs]
        axes = [deletion.tensors[t][0] if t in deletion.tensors else None for t in node.inputs]
        link_axis = next((a for a in axes if a is not None), 0)
        if rule.link(spec, in_shapes, graph.shapes[node.outputs[0]], link_axis) is not None:
            continue  # pass-through layers are not consumers
        live = _live(ref, name)
        names = list(spec.weights)  # in the layer's order, as the graph names them
        values = [np.array(w) for w in live.get_weights()]
        gone = {**change.inputs, **change.parts}  # parts: the weights of deleted heads/dims
        for wa in rule.weight_axes(spec, axes):
            if wa.space == rules.OUT or wa.space not in gone or wa.weight not in names:
                continue
            size = in_shapes[wa.space][axes[wa.space] or 0] if isinstance(wa.space, int) else 0
            _set_zero(values[names.index(wa.weight)], wa, gone[wa.space], size)
        if change.outputs is not None:  # a recurrent layer's own rows of its recurrent kernel
            for wa in rule.feedback_axes(spec):
                if wa.weight in names:
                    _set_zero(values[names.index(wa.weight)], wa, change.outputs)
        live.set_weights(values)
    return ref


def assert_equivalent(model: keras.Model, layer: Any, neurons: Iterable[int] | None = None,
                      x: Any = None, *, atol: float = ATOL, seed: int = 0,
                      **kwargs: Any) -> keras.Model:
    """Delete ``neurons`` of ``layer`` and check the oracle on ``x`` (random if None).

    Returns the pruned model. With ``allow_output_change``, only the kept output channels are
    compared.
    """
    pruned = kerasprune.delete_neurons(model, layer, neurons, **kwargs)
    reference = zeroed_reference(model, layer, neurons, **kwargs)
    if x is None:
        x = random_inputs(model, seed=seed)
    got = _as_list(pruned.predict(x, verbose=0))
    want = _as_list(reference.predict(x, verbose=0))
    deletion = kerasprune.dependency_group(model, layer, neurons, **kwargs)
    for t, g, w in zip(deletion.graph.outputs, got, want, strict=True):
        if t in deletion.tensors:
            axis, gone = deletion.tensors[t]
            w = np.delete(w, gone, axis=axis + 1)
        assert g.shape == w.shape, (g.shape, w.shape)
        np.testing.assert_allclose(g, w, atol=atol, rtol=1e-4)
    return pruned


def random_inputs(model: keras.Model, n: int = 3, seed: int = 0) -> Any:
    rng = np.random.default_rng(seed)
    xs = [rng.standard_normal((n, *(4 if d is None else d for d in t.shape[1:])))
          .astype("float32") for t in model.inputs]
    return xs[0] if len(xs) == 1 else xs


def randomize(model: keras.Model, seed: int = 0) -> keras.Model:
    """Give every weight (BN statistics included) random, non-trivial values, in place."""
    rng = np.random.default_rng(seed)
    for w in model.weights:
        shape = tuple(w.shape)
        if "variance" in w.name:
            value = rng.uniform(0.5, 1.5, shape)
        else:
            value = rng.standard_normal(shape) * 0.5
        w.assign(value.astype(w.dtype))
    return finalize(model)


def finalize(model: keras.Model) -> keras.Model:
    """Let layers that derive state from their variables (``Normalization``) recompute it,
    as they do after ``adapt`` or loading: assigning variables alone does not."""
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            finalize(layer)
        elif callable(getattr(layer, "finalize_state", None)):
            layer.finalize_state()
    return model


def _as_list(y: Any) -> list[np.ndarray]:
    if isinstance(y, Mapping):
        return [as_numpy(v) for v in y.values()]
    if isinstance(y, (list, tuple)):
        return [as_numpy(v) for v in y]
    return [as_numpy(y)]
