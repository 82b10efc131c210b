"""The Keras entry points of structured surgery: delete neurons, see what goes with them,
list what can be pruned, count parameters and FLOPs.

Each reads the model (:mod:`.convert`), resolves the layers named (:mod:`.refs`) and leaves
the work to the pure core (:mod:`kerasprune.core.surgery`, :mod:`kerasprune.core.cost`);
:func:`delete_neurons` then builds the new model (:mod:`.build`). The steps are looked up as
attributes of their modules (``convert.to_graph``...), so a profiler can wrap each.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import keras
import numpy as np

from kerasprune.adapters.keras import build, convert, refs
from kerasprune.adapters.keras.record import KerasGraph
from kerasprune.adapters.keras.refs import LayerRef
from kerasprune.core import cost
from kerasprune.core import rules as core_rules
from kerasprune.core import surgery as core_surgery
from kerasprune.core.graph import Graph, PruneError
from kerasprune.core.surgery import Prunability

__all__ = ["Deviation", "costs", "count", "delete_from", "delete_neurons", "dependency_group",
           "deviation", "graph_costs", "prunable_layers", "pruned_graph"]


def dependency_group(model: keras.Model, layer: LayerRef | Mapping[LayerRef, Iterable[int]],
                     neurons: Iterable[int] | None = None, *,
                     allow_output_change: bool = False, allow_inexact: bool = False,
                     rules: core_rules.RuleSet | None = None) -> core_surgery.Deletion:
    """Everything that would go with ``neurons`` of ``layer``, without changing anything.

    Parameters
    ----------
    model
        A Sequential or functional Keras model.
    layer, neurons, allow_output_change, allow_inexact, rules
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
    kg = convert.to_graph(model, rules)
    return core_surgery.dependency_group(kg.graph, refs.neuron_request(kg, layer, neurons),
                                         allow_output_change=allow_output_change,
                                         allow_inexact=allow_inexact, rules=rules)


def delete_neurons(model: keras.Model, layer: LayerRef | Mapping[LayerRef, Iterable[int]],
                   neurons: Iterable[int] | None = None, *,
                   allow_output_change: bool = False, allow_inexact: bool = False,
                   rules: core_rules.RuleSet | None = None) -> keras.Model:
    """Delete neurons (units, filters) of a layer and every weight connected to them.

    Parameters
    ----------
    model
        A built Sequential or functional Keras 3 model. It is not modified.
    layer
        The layer: its name (``"conv2d_1"``; a layer inside a nested model as
        ``"inner/conv"`` or by its own name if unique), its index in ``model.layers``, or the
        layer object. Or a mapping ``{layer: neurons}`` to delete from several layers in one
        rebuild (each layer once). ``"name:part"`` names units inside a layer instead of its
        output channels: a ``MultiHeadAttention``'s ``"mha:heads"``, ``"mha:key_dim"`` or
        ``"mha:value_dim"`` (README, "Attention and normalization").
    neurons
        Indices of the neurons to delete: a sequence of ints, or an integer array or tensor
        of any backend. Negative indices count from the end, as in Python (``-1`` is the
        last). Repeated indices, out-of-range indices and non-integers are errors; deleting
        every neuron of a layer is refused.
    allow_output_change
        Deleting units of a model output changes what the model predicts, so it is refused
        unless this is True.
    allow_inexact
        A deletion that passes a normalization over the deleted channels
        (``LayerNormalization``, ``RMSNormalization``, ``UnitNormalization``: the deleted
        channels count in the statistics of the kept ones) cannot be exact, so it is refused
        unless this is True; then the normalization's weights are sliced to the kept channels.
        :func:`deviation` measures what such a deletion changes on data.
    rules
        The rules of the layer kinds: :data:`kerasprune.core.rules.RULES` by default; a
        copy with rules for your own layer classes (README, "Custom layers").

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
    return delete_from(convert.to_graph(model, rules), layer, neurons,
                       allow_output_change=allow_output_change, allow_inexact=allow_inexact,
                       rules=rules)


def delete_from(kg: KerasGraph, layer: LayerRef | Mapping[LayerRef, Iterable[int]],
                neurons: Iterable[int] | None = None, *,
                allow_output_change: bool = False, allow_inexact: bool = False,
                rules: core_rules.RuleSet | None = None) -> keras.Model:
    """:func:`delete_neurons` on a model already read by :func:`~.convert.to_graph`."""
    return build.from_graph(kg, pruned_graph(kg, layer, neurons,
                                             allow_output_change=allow_output_change,
                                             allow_inexact=allow_inexact, rules=rules))


def pruned_graph(kg: KerasGraph, layer: LayerRef | Mapping[LayerRef, Iterable[int]],
                 neurons: Iterable[int] | None = None, *,
                 allow_output_change: bool = False, allow_inexact: bool = False,
                 rules: core_rules.RuleSet | None = None) -> Graph:
    """The core graph :func:`delete_from` builds its model from: ``kg.graph`` without the
    neurons (their weights taken out in the model's backend)."""
    deletion = core_surgery.dependency_group(kg.graph, refs.neuron_request(kg, layer, neurons),
                                             allow_output_change=allow_output_change,
                                             allow_inexact=allow_inexact, rules=rules)
    graph = core_surgery.apply_deletion(deletion, take=_take)
    _check_backend_limits(kg.graph, graph, deletion)
    return graph


def _check_backend_limits(old: Graph, new: Graph, deletion: core_surgery.Deletion) -> None:
    """Refuse what the current backend cannot run: on JAX, Keras' ``MultiHeadAttention``
    calls ``jax.nn.dot_product_attention``, which needs ``value_dim == key_dim``."""
    if keras.backend.backend() != "jax":
        return
    for name in deletion.parts:
        before, after = old.layers[name].attrs, new.layers[name].attrs
        if old.layers[name].kind != "MultiHeadAttention":
            continue
        was = (before.get("key_dim"), before.get("value_dim") or before.get("key_dim"))
        now = (after.get("key_dim"), after.get("value_dim") or after.get("key_dim"))
        if was[0] == was[1] and now[0] != now[1]:
            raise PruneError(
                f"deleting {dict((k, len(v)) for k, v in deletion.parts[name].items())} units "
                f"of layer '{name}' (MultiHeadAttention) would leave key_dim={now[0]} and "
                f"value_dim={now[1]}, which Keras' MultiHeadAttention cannot run on the JAX "
                "backend (jax.nn.dot_product_attention needs them equal): delete as many "
                f"'{name}:key_dim' as '{name}:value_dim' units")


@dataclass(frozen=True)
class Deviation:
    """What a deletion changed on some data: the pruned model against its zeroing oracle
    (the original model with the weights that read the deleted channels set to zero, which
    an exact deletion matches), on the kept output channels.

    Parameters
    ----------
    max_abs, mean_abs
        The largest and the mean absolute difference, over every output.
    outputs
        ``(max_abs, mean_abs)`` of each model output, in the order of ``model.outputs``.
    inexact
        The layers that made the deletion inexact (``Deletion.inexact``); empty for an exact
        deletion, whose deviation is rounding only.
    """

    max_abs: float
    mean_abs: float
    outputs: tuple[tuple[float, float], ...]
    inexact: tuple[str, ...]


def deviation(model: keras.Model, layer: LayerRef | Mapping[LayerRef, Iterable[int]],
              neurons: Iterable[int] | None = None, data: Any = None, *,
              pruned: keras.Model | None = None, allow_output_change: bool = False,
              allow_inexact: bool = True, rules: core_rules.RuleSet | None = None,
              batch_size: int | None = None) -> Deviation:
    """How far a deletion moves a model's outputs on ``data``, against its zeroing oracle.

    An exact deletion gives a model whose outputs equal the original's with the weights that
    read the deleted channels set to zero (the oracle); one that passes a normalization over
    the deleted channels (``allow_inexact=True``) does not, and this measures by how much.

    Parameters
    ----------
    model
        The original model (not modified).
    layer, neurons, allow_output_change, rules
        The deletion, as in :func:`delete_neurons`.
    data
        Inputs as ``model.predict`` takes them (arrays, a ``tf.data.Dataset``...).
    pruned
        The model :func:`delete_neurons` made for this deletion; built here if not given.
    allow_inexact
        As in :func:`delete_neurons`; True by default, since measuring an inexact deletion
        is what this is for.
    batch_size
        For ``predict``.

    Returns
    -------
    Deviation
        The largest and mean absolute differences, overall and per output.

    Raises
    ------
    PruneError
        As :func:`delete_neurons`.
    ValueError
        If ``data`` is missing.

    Examples
    --------
    >>> d = kerasprune.deviation(model, "embedding", [3, 7], x_val)  # doctest: +SKIP
    >>> d.max_abs, d.inexact  # doctest: +SKIP
    """
    if data is None:
        raise ValueError("deviation needs data: the inputs to compare the two models on")
    kg = convert.to_graph(model)
    deletion = core_surgery.dependency_group(
        kg.graph, refs.neuron_request(kg, layer, neurons),
        allow_output_change=allow_output_change, allow_inexact=allow_inexact, rules=rules)
    if pruned is None:
        graph = core_surgery.apply_deletion(deletion, take=_take)
        _check_backend_limits(kg.graph, graph, deletion)
        pruned = build.from_graph(kg, graph)
    oracle = build.from_graph(kg, core_surgery.zeroed_graph(deletion, keras.ops.convert_to_numpy))
    got = keras.tree.flatten(pruned.predict(data, verbose=0, batch_size=batch_size))
    want = keras.tree.flatten(oracle.predict(data, verbose=0, batch_size=batch_size))
    per_output: list[tuple[float, float]] = []
    total, count, worst = 0.0, 0, 0.0
    for t, g, w in zip(kg.graph.outputs, got, want, strict=True):
        g = np.asarray(keras.ops.convert_to_numpy(g), dtype="float64")
        w = np.asarray(keras.ops.convert_to_numpy(w), dtype="float64")
        if t in deletion.tensors:
            axis, gone = deletion.tensors[t]
            w = np.delete(w, gone, axis=axis + 1)
        diff = np.abs(g - w)
        per_output.append((float(diff.max(initial=0.0)), float(diff.mean()) if diff.size else 0.0))
        total, count = total + float(diff.sum()), count + diff.size
        worst = max(worst, per_output[-1][0])
    return Deviation(worst, total / max(count, 1), tuple(per_output), deletion.inexact)


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


def costs(model: keras.Model, *,
          rules: core_rules.RuleSet | None = None) -> list[cost.LayerCost]:
    """Params and FLOPs per layer of a Keras model (see :func:`kerasprune.core.cost.count`).

    Parameters
    ----------
    model
        A built Sequential or functional model.
    rules
        The rules of the layer kinds: :data:`kerasprune.core.rules.RULES` by default; a
        copy with rules for your own layer classes (README, "Custom layers").

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

    Examples
    --------
    >>> params, flops = kerasprune.core.cost.total(kerasprune.costs(model))  # doctest: +SKIP
    """
    return graph_costs(convert.to_graph(model, rules), rules=rules)


def graph_costs(kg: KerasGraph, graph: Graph | None = None, *,
                rules: core_rules.RuleSet | None = None) -> list[cost.LayerCost]:
    """:func:`costs` of a model already read by :func:`~.convert.to_graph`; or of ``graph``,
    a changed copy of its graph (as :func:`pruned_graph` returns), without building it."""
    unknown = [kg.walk.specs[t][0] for t in kg.graph.inputs
               if any(d is None for d in kg.walk.specs[t][0][1:])]
    if unknown:
        raise PruneError(
            f"the FLOPs of model '{kg.model.name}' depend on the size of its inputs, unknown "
            f"in its input shapes {', '.join(str(tuple(s)) for s in unknown)}: build it on "
            "inputs of a fixed shape to count them (model.count_params() counts its "
            "parameters)")
    return cost.count(kg.graph if graph is None else graph, rules=rules)


def count(model: keras.Model) -> list[cost.LayerCost]:
    """Deprecated name of :func:`costs` (it counts parameters and FLOPs, not zeros): it
    warns (``DeprecationWarning``) and is kept for one release."""
    warnings.warn("kerasprune.count is deprecated: it is now kerasprune.costs (parameters "
                  "and FLOPs per layer)", DeprecationWarning, stacklevel=2)
    return costs(model)


def prunable_layers(model: keras.Model, *,
                    rules: core_rules.RuleSet | None = None) -> list[Prunability]:
    """Every layer with neurons of a model, whether they can be deleted, and why not.

    Parameters
    ----------
    model
        A built Sequential or functional model.
    rules
        The rules of the layer kinds: :data:`kerasprune.core.rules.RULES` by default; a
        copy with rules for your own layer classes (README, "Custom layers").

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
    return core_surgery.prunability(convert.to_graph(model, rules).graph, rules=rules)

