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

__all__ = ["costs", "count", "delete_from", "delete_neurons", "dependency_group", "graph_costs",
           "prunable_layers", "pruned_graph"]


def dependency_group(model: keras.Model, layer: LayerRef | Mapping[LayerRef, Iterable[int]],
                     neurons: Iterable[int] | None = None, *,
                     allow_output_change: bool = False,
                     rules: core_rules.RuleSet | None = None) -> core_surgery.Deletion:
    """Everything that would go with ``neurons`` of ``layer``, without changing anything.

    Parameters
    ----------
    model
        A Sequential or functional Keras model.
    layer, neurons, allow_output_change, rules
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
                                         allow_output_change=allow_output_change, rules=rules)


def delete_neurons(model: keras.Model, layer: LayerRef | Mapping[LayerRef, Iterable[int]],
                   neurons: Iterable[int] | None = None, *,
                   allow_output_change: bool = False,
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
        rebuild (each layer once).
    neurons
        Indices of the neurons to delete: a sequence of ints, or an integer array or tensor
        of any backend. Negative indices count from the end, as in Python (``-1`` is the
        last). Repeated indices, out-of-range indices and non-integers are errors; deleting
        every neuron of a layer is refused.
    allow_output_change
        Deleting units of a model output changes what the model predicts, so it is refused
        unless this is True.
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
                       allow_output_change=allow_output_change, rules=rules)


def delete_from(kg: KerasGraph, layer: LayerRef | Mapping[LayerRef, Iterable[int]],
                neurons: Iterable[int] | None = None, *,
                allow_output_change: bool = False,
                rules: core_rules.RuleSet | None = None) -> keras.Model:
    """:func:`delete_neurons` on a model already read by :func:`~.convert.to_graph`."""
    return build.from_graph(kg, pruned_graph(kg, layer, neurons,
                                             allow_output_change=allow_output_change,
                                             rules=rules))


def pruned_graph(kg: KerasGraph, layer: LayerRef | Mapping[LayerRef, Iterable[int]],
                 neurons: Iterable[int] | None = None, *,
                 allow_output_change: bool = False,
                 rules: core_rules.RuleSet | None = None) -> Graph:
    """The core graph :func:`delete_from` builds its model from: ``kg.graph`` without the
    neurons (their weights taken out in the model's backend)."""
    deletion = core_surgery.dependency_group(kg.graph, refs.neuron_request(kg, layer, neurons),
                                             allow_output_change=allow_output_change,
                                             rules=rules)
    return core_surgery.apply_deletion(deletion, take=_take)


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


def costs(model: keras.Model) -> list[cost.LayerCost]:
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

    Examples
    --------
    >>> params, flops = kerasprune.core.cost.total(kerasprune.costs(model))  # doctest: +SKIP
    """
    return graph_costs(convert.to_graph(model))


def graph_costs(kg: KerasGraph, graph: Graph | None = None) -> list[cost.LayerCost]:
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
    return cost.count(kg.graph if graph is None else graph)


def count(model: keras.Model) -> list[cost.LayerCost]:
    """Deprecated name of :func:`costs` (it counts parameters and FLOPs, not zeros): it
    warns (``DeprecationWarning``) and is kept for one release."""
    warnings.warn("kerasprune.count is deprecated: it is now kerasprune.costs (parameters "
                  "and FLOPs per layer)", DeprecationWarning, stacklevel=2)
    return costs(model)


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
    return core_surgery.prunability(convert.to_graph(model).graph)

