"""Recurrent layers and the wrappers around them: SimpleRNN, GRU, LSTM, ConvLSTM1D/2D/3D,
``RNN`` around one of Keras' cells, Bidirectional, TimeDistributed, Masking.

A recurrent layer makes its own channels (units, filters) like a Dense layer, and reads them
back at the next step: deleting unit ``j`` drops its column in every gate block of the kernel,
the recurrent kernel and the bias, and its row of the recurrent kernel. Its returned states
(``return_state=True``) and the initial states it is given (``initial_state=``) hold the same
units (:class:`~kerasprune.core.rules.base.Tie`): they are deleted together, so an encoder and
the decoder it initialises lose the same units. Deleting input features drops kernel rows.

The zeroing oracle of a deletion: the deleted units' outgoing weights are their consumers'
rows and their own rows of the recurrent kernel (:meth:`Recurrent.feedback_axes`); a unit
whose outgoing weights are zero still computes, but no kept unit reads it.

FLOPs of a recurrent layer are counted per time step and multiplied by the steps of its input
(an unknown length counts as 1): every multiply-add of the kernel and the recurrent kernel is
two, each bias entry one; the gates' element-wise arithmetic and activations are not counted
(as a Dense layer's activation is not).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any

import numpy as np

from kerasprune.core.graph import Array, LayerSpec, Shape
from kerasprune.core.rules.base import (
    OUT,
    Link,
    Rule,
    Tie,
    UnsupportedLayerError,
    WeightAxis,
    out_shape_size,
)
from kerasprune.core.rules.elementwise import Elementwise

__all__ = ["Bidirectional", "CellRNN", "ConvRecurrent", "Masking", "Recurrent",
           "TimeDistributed"]

INITIAL_STATE = "initial_state"
"""The argument name of a recurrent layer's initial states, in the ``input_args`` attribute
(the argument each input of the layer's call was given as, which the adapter records)."""


def _size(array: Array) -> int:
    return math.prod(int(d) for d in array.shape)



def own_name(key: str) -> str:
    """A wrapped layer's weight by its own name: the graph keys a name the wrapper's two
    layers share by its path below the wrapper (``forward_lstm/lstm_cell/kernel``), or with
    its position (``kernel#3``)."""
    return key.split("#")[0].rsplit("/", 1)[-1]

class Recurrent(Rule):
    """SimpleRNN (``gates=1``), GRU (3, either ``reset_after``) and LSTM (4): a kernel
    ``(in, gates*units)``, a recurrent kernel ``(units, gates*units)`` and a bias
    ``(gates*units,)`` (a GRU with ``reset_after=True``: ``(2, 3*units)``), each gate a
    block of ``units`` columns."""

    targetable = True
    slices = frozenset({"kernel", "recurrent_kernel", "bias"})
    count_attr = "units"

    def __init__(self, gates: int) -> None:
        self.gates = gates

    def link(self, spec: LayerSpec, in_shapes: Sequence[Shape], out_shape: Shape,
             axis: int) -> Link | None:
        return None

    def in_axis(self, spec: LayerSpec, in_shape: Shape) -> int:
        return len(in_shape) - 1

    def out_axis(self, spec: LayerSpec, out_shape: Shape) -> int:
        return len(out_shape) - 1

    def own_neuron_axis(self, spec: LayerSpec, out_shape: Shape) -> int | None:
        return self.out_axis(spec, out_shape)

    def makes_zeros(self, spec: LayerSpec) -> bool:
        return False  # its output goes through tanh (or its activation) after the gates

    def weight_axes(self, spec: LayerSpec, axes: Sequence[int | None]) -> list[WeightAxis]:
        g = self.gates
        return [WeightAxis("kernel", -2, 0), WeightAxis("kernel", -1, OUT, blocks=g),
                *self.feedback_axes(spec),
                WeightAxis("recurrent_kernel", -1, OUT, blocks=g),
                WeightAxis("bias", -1, OUT, blocks=g)]

    def feedback_axes(self, spec: LayerSpec) -> list[WeightAxis]:
        """The weight axes that read the layer's own previous output (the recurrent kernel's
        rows): with its consumers' rows, the outgoing weights of a unit."""
        return [WeightAxis("recurrent_kernel", -2, OUT)]

    def ties(self, spec: LayerSpec, in_shapes: Sequence[Shape],
             out_shapes: Sequence[Shape]) -> list[Tie]:
        units = np.arange(out_shapes[0][self.out_axis(spec, out_shapes[0])])
        found = [Tie(True, p, units) for p in range(1, len(out_shapes))]
        found += [Tie(False, p, units) for p in self.state_inputs(spec, in_shapes, out_shapes)]
        return found

    def state_inputs(self, spec: LayerSpec, in_shapes: Sequence[Shape],
                     out_shapes: Sequence[Shape]) -> list[int]:
        """Positions of the call's inputs that are initial states: by the ``input_args``
        the adapter records, or else every input after the first with a state's shape."""
        roles = spec.attrs.get("input_args")
        if roles is not None:
            return [p for p, role in enumerate(roles) if role == INITIAL_STATE]
        out = out_shapes[0]
        state = tuple(out[1:]) if spec.attrs.get("return_sequences") else tuple(out)
        return [p for p in range(1, len(in_shapes)) if tuple(in_shapes[p]) == state]

    def attr_updates(self, spec: LayerSpec, in_shapes: Sequence[Shape], out_shape: Shape,
                     axes: Sequence[int | None]) -> dict[str, Any]:
        return {self.count_attr: out_shape[self.out_axis(spec, out_shape)]}

    def steps(self, in_shapes: Sequence[Shape]) -> int:
        """The time steps of a call (the input's first axis without the batch)."""
        return int(in_shapes[0][0]) if in_shapes and in_shapes[0] else 1

    def flops(self, spec: LayerSpec, in_shapes: Sequence[Shape], out_shape: Shape) -> int:
        w = spec.weights
        macs = sum(_size(w[k]) for k in ("kernel", "recurrent_kernel") if k in w)
        bias = _size(w["bias"]) if "bias" in w else 0
        return (2 * macs + bias) * self.steps(in_shapes)


class ConvRecurrent(Recurrent):
    """ConvLSTM1D/2D/3D: kernels ``(*k, in, 4*filters)`` and ``(*k, filters, 4*filters)``,
    bias ``(4*filters,)``; the filters lie on the axis the ``data_format`` names."""

    count_attr = "filters"

    def __init__(self, rank: int) -> None:
        super().__init__(4)
        self.rank = rank

    def in_axis(self, spec: LayerSpec, in_shape: Shape) -> int:
        return self.out_axis(spec, in_shape)

    def out_axis(self, spec: LayerSpec, out_shape: Shape) -> int:
        if spec.attrs.get("data_format") == "channels_first":
            return len(out_shape) - self.rank - 1
        return len(out_shape) - 1

    def flops(self, spec: LayerSpec, in_shapes: Sequence[Shape], out_shape: Shape) -> int:
        axis = self.out_axis(spec, out_shape)
        seq = len(out_shape) == self.rank + 2
        positions = out_shape_size(out_shape[1:] if seq else out_shape) // out_shape[axis]
        w = spec.weights
        macs = sum(_size(w[k]) for k in ("kernel", "recurrent_kernel") if k in w)
        bias = _size(w["bias"]) if "bias" in w else 0
        return (2 * macs + bias) * positions * self.steps(in_shapes)


class _Wrapper(Rule):
    """A layer that holds others in its config (``{"class_name": ..., "config": ...}``):
    their rules, from ``inner`` by class name, on a spec of their own."""

    def __init__(self, inner: Mapping[str, Rule]) -> None:
        self.inner = dict(inner)

    def _inner(self, spec: LayerSpec, key: str, weights: Mapping[str, Array]
               ) -> tuple[Rule, LayerSpec]:
        held = spec.attrs.get(key)
        kind = str(held.get("class_name")) if isinstance(held, Mapping) else None
        if kind is None or kind not in self.inner:
            kinds = ", ".join(sorted(self.inner))
            raise UnsupportedLayerError(
                f"{self.describe(spec)} holds a {kind or 'layer kerasprune cannot read'}; "
                f"kerasprune prunes a {spec.kind} around {kinds}")
        assert isinstance(held, Mapping)
        config = dict(held.get("config") or {})
        inner = LayerSpec(f"{spec.name}/{config.get('name', kind)}", kind, config,
                          {own_name(k): v for k, v in weights.items()})
        return self.inner[kind], inner

    @staticmethod
    def _with_config(spec: LayerSpec, key: str, updates: Mapping[str, Any]) -> dict[str, Any]:
        """The held layer's config with ``updates``, without the input shape it was built
        for (it may have changed: the wrapper builds it again)."""
        held = {k: v for k, v in spec.attrs[key].items() if k != "build_config"}
        held["config"] = {**held.get("config", {}), **updates}
        return {key: held}


class CellRNN(_Wrapper):
    """``keras.layers.RNN`` around one of Keras' cells (``LSTMCell``, ``GRUCell``,
    ``SimpleRNNCell``): the cell's rule (``inner``, by cell class name), on the layer's call."""

    targetable = True
    slices = frozenset({"kernel", "recurrent_kernel", "bias"})

    def _cell(self, spec: LayerSpec) -> tuple[Rule, LayerSpec]:
        rule, cell = self._inner(spec, "cell", spec.weights)
        attrs = {k: v for k, v in spec.attrs.items() if k != "cell"}
        return rule, replace(cell, attrs={**cell.attrs, **attrs})

    def why_not_targetable(self, spec: LayerSpec) -> str | None:
        try:
            self._cell(spec)
        except UnsupportedLayerError as err:
            return f"{err}: a cell of another kind has weights kerasprune cannot slice"
        return None

    def link(self, spec: LayerSpec, in_shapes: Sequence[Shape], out_shape: Shape,
             axis: int) -> Link | None:
        reason = self.why_not_targetable(spec)
        if reason is not None:
            raise UnsupportedLayerError(reason)
        return None

    def _delegate(self, name: str, spec: LayerSpec, *args: Any) -> Any:
        rule, cell = self._cell(spec)
        return getattr(rule, name)(cell, *args)

    def in_axis(self, spec: LayerSpec, in_shape: Shape) -> int:
        return int(self._delegate("in_axis", spec, in_shape))

    def out_axis(self, spec: LayerSpec, out_shape: Shape) -> int:
        return int(self._delegate("out_axis", spec, out_shape))

    def own_neuron_axis(self, spec: LayerSpec, out_shape: Shape) -> int | None:
        return None if self.why_not_targetable(spec) else self.out_axis(spec, out_shape)

    def weight_axes(self, spec: LayerSpec, axes: Sequence[int | None]) -> list[WeightAxis]:
        return list(self._delegate("weight_axes", spec, axes))

    def feedback_axes(self, spec: LayerSpec) -> list[WeightAxis]:
        return list(self._delegate("feedback_axes", spec))

    def ties(self, spec: LayerSpec, in_shapes: Sequence[Shape],
             out_shapes: Sequence[Shape]) -> list[Tie]:
        return list(self._delegate("ties", spec, in_shapes, out_shapes))

    def attr_updates(self, spec: LayerSpec, in_shapes: Sequence[Shape], out_shape: Shape,
                     axes: Sequence[int | None]) -> dict[str, Any]:
        updates = self._delegate("attr_updates", spec, in_shapes, out_shape, axes)
        return self._with_config(spec, "cell", updates)

    def flops(self, spec: LayerSpec, in_shapes: Sequence[Shape], out_shape: Shape) -> int:
        if self.why_not_targetable(spec):
            return 0
        return int(self._delegate("flops", spec, in_shapes, out_shape))


class Bidirectional(_Wrapper):
    """Bidirectional around a recurrent layer: a forward and a backward layer, each with its
    own units, weights in that order (the forward layer's first).

    With ``merge_mode="concat"`` the output's first ``units`` channels are the forward
    layer's and the rest the backward's: a request names channels of the concatenated output,
    each direction's slices and states follow its own half. Keras infers a Bidirectional
    layer's output shape from its forward layer alone, so both directions must keep as many
    units: unit ``j`` of one direction goes with unit ``j`` of the other (the output is tied
    to itself, channel ``j`` to ``units + j``), so that any request (a pruning plan's too)
    can be built. With ``"sum"``, ``"mul"`` or ``"ave"`` the two directions are combined
    channel by channel: they lose the same units. ``merge_mode=None`` (two outputs) is
    refused.
    """

    targetable = True
    slices = None

    def _directions(self, spec: LayerSpec) -> list[tuple[Rule, LayerSpec, list[str]]]:
        """For the forward and the backward layer: its rule, its spec (weights by their own
        names) and the keys of its weights in ``spec.weights``."""
        mode = spec.attrs.get("merge_mode", "concat")
        if mode not in ("concat", "sum", "mul", "ave"):
            raise UnsupportedLayerError(
                f"{self.describe(spec)} has merge_mode={mode!r}: it returns the two directions "
                "as separate outputs; kerasprune prunes merge_mode 'concat', 'sum', 'mul' or "
                "'ave'")
        keys = list(spec.weights)
        forward = spec.attrs.get("layer")
        fwd_config = forward.get("config", {}) if isinstance(forward, Mapping) else {}
        n = 3 if fwd_config.get("use_bias", True) else 2
        out = []
        for key, names in (("layer", keys[:n]), ("backward_layer", keys[n:])):
            if key == "backward_layer" and not spec.attrs.get(key):
                key = "layer"
            rule, inner = self._inner(spec, key, {k: spec.weights[k] for k in names})
            out.append((rule, inner, names))
        return out

    def why_not_targetable(self, spec: LayerSpec) -> str | None:
        try:
            self._directions(spec)
        except UnsupportedLayerError as err:
            return str(err)
        return None

    def link(self, spec: LayerSpec, in_shapes: Sequence[Shape], out_shape: Shape,
             axis: int) -> Link | None:
        reason = self.why_not_targetable(spec)
        if reason is not None:
            raise UnsupportedLayerError(reason)
        return None

    def in_axis(self, spec: LayerSpec, in_shape: Shape) -> int:
        return len(in_shape) - 1

    def out_axis(self, spec: LayerSpec, out_shape: Shape) -> int:
        return len(out_shape) - 1

    def own_neuron_axis(self, spec: LayerSpec, out_shape: Shape) -> int | None:
        return None if self.why_not_targetable(spec) else self.out_axis(spec, out_shape)

    def makes_zeros(self, spec: LayerSpec) -> bool:
        return False

    def _spans(self, spec: LayerSpec) -> list[tuple[int, int] | None]:
        """Which channels of the output each direction makes (``None``: all of them)."""
        if spec.attrs.get("merge_mode", "concat") != "concat":
            return [None, None]
        units = [int(inner.weights["recurrent_kernel"].shape[0])
                 for _, inner, _ in self._directions(spec)]
        return [(0, units[0]), (units[0], units[0] + units[1])]

    def _renamed(self, spec: LayerSpec, found: str) -> list[WeightAxis]:
        out = []
        for (rule, inner, names), span in zip(self._directions(spec), self._spans(spec),
                                              strict=True):
            by_name = {own_name(k): k for k in names}
            for wa in getattr(rule, found)(inner, *([[0]] if found == "weight_axes" else [])):
                if wa.weight in by_name:
                    out.append(replace(wa, weight=by_name[wa.weight],
                                       span=span if wa.space == OUT else None))
        return out

    def weight_axes(self, spec: LayerSpec, axes: Sequence[int | None]) -> list[WeightAxis]:
        return self._renamed(spec, "weight_axes")

    def feedback_axes(self, spec: LayerSpec) -> list[WeightAxis]:
        return self._renamed(spec, "feedback_axes")

    def ties(self, spec: LayerSpec, in_shapes: Sequence[Shape],
             out_shapes: Sequence[Shape]) -> list[Tie]:
        spans = self._spans(spec)
        size = out_shapes[0][-1]
        maps = [np.arange(size) if span is None else np.arange(*span) for span in spans]
        states = (len(out_shapes) - 1) // 2
        found = [Tie(True, 1 + p, maps[p // states]) for p in range(2 * states)]
        if spans[0] is not None and len(maps[0]) == len(maps[1]):  # unit j of both directions
            found.append(Tie(True, 0, np.concatenate([maps[1], maps[0]])))
        roles = spec.attrs.get("input_args") or ()
        given = [p for p, role in enumerate(roles) if role == "initial_state"]
        half = len(given) // 2
        found += [Tie(False, p, maps[i // half]) for i, p in enumerate(given)] if half else []
        return found

    def attr_updates(self, spec: LayerSpec, in_shapes: Sequence[Shape], out_shape: Shape,
                     axes: Sequence[int | None]) -> dict[str, Any]:
        counts = [int(inner.weights["recurrent_kernel"].shape[0])  # the sliced weights
                  for _, inner, _ in self._directions(spec)]
        if counts[0] != counts[1]:
            first = (self._spans(spec)[0] or (0, 0))[1]
            raise UnsupportedLayerError(
                f"{self.describe(spec)} would keep {counts[0]} forward and {counts[1]} backward "
                "units: Keras infers a Bidirectional layer's output shape from its forward "
                "layer alone, so both directions must keep as many; delete as many channels "
                f"from each half of its output (channels 0..{first - 1} are the forward "
                f"layer's, {first}.. the backward layer's)")
        out: dict[str, Any] = {}
        for key in ("layer", "backward_layer"):
            if spec.attrs.get(key):
                out.update(self._with_config(spec, key, {"units": counts[0]}))
        return out

    def flops(self, spec: LayerSpec, in_shapes: Sequence[Shape], out_shape: Shape) -> int:
        if self.why_not_targetable(spec):
            return 0
        total = 0
        for rule, inner, _ in self._directions(spec):
            total += rule.flops(inner, in_shapes, out_shape)
        merge = 0 if spec.attrs.get("merge_mode", "concat") == "concat" else 1
        return total + merge * out_shape_size(out_shape)


class TimeDistributed(_Wrapper):
    """TimeDistributed around a layer with neurons (Dense, a convolution) or one that passes
    channels on (pooling, Flatten, an activation): the inner layer's rule, with an extra
    leading (time) axis on every tensor. Its neurons are the inner layer's, if it has any."""

    targetable = True
    slices = None

    def _rule(self, spec: LayerSpec) -> tuple[Rule, LayerSpec]:
        return self._inner(spec, "layer", spec.weights)

    def why_not_targetable(self, spec: LayerSpec) -> str | None:
        try:
            rule, inner = self._rule(spec)
        except UnsupportedLayerError as err:
            return str(err)
        if not rule.targetable:
            return f"{self.describe(spec)} holds a {inner.kind}, which has no neurons to delete"
        return rule.why_not_targetable(inner)

    def link(self, spec: LayerSpec, in_shapes: Sequence[Shape], out_shape: Shape,
             axis: int) -> Link | None:
        rule, inner = self._rule(spec)
        found = rule.link(inner, [s[1:] for s in in_shapes], out_shape[1:], max(axis - 1, 0))
        if found is None:
            return None
        if axis == 0:
            raise UnsupportedLayerError(f"{self.describe(spec)} applies its layer at each step "
                                        "of axis 1: it cannot pass channels on that axis")
        return Link(found.out_axis + 1, found.sources)

    def in_axis(self, spec: LayerSpec, in_shape: Shape) -> int:
        rule, inner = self._rule(spec)
        return rule.in_axis(inner, in_shape[1:]) + 1

    def out_axis(self, spec: LayerSpec, out_shape: Shape) -> int:
        rule, inner = self._rule(spec)
        return rule.out_axis(inner, out_shape[1:]) + 1

    def own_neuron_axis(self, spec: LayerSpec, out_shape: Shape) -> int | None:
        try:
            rule, inner = self._rule(spec)
        except UnsupportedLayerError:
            return None
        found = rule.own_neuron_axis(inner, out_shape[1:])
        return None if found is None else found + 1

    def output_coupling(self, spec: LayerSpec) -> str | None:
        rule, inner = self._rule(spec)
        return rule.output_coupling(inner)

    def makes_zeros(self, spec: LayerSpec) -> bool:
        rule, inner = self._rule(spec)
        return rule.makes_zeros(inner)

    def weight_axes(self, spec: LayerSpec, axes: Sequence[int | None]) -> list[WeightAxis]:
        rule, inner = self._rule(spec)
        return rule.weight_axes(inner, [None if a is None else a - 1 for a in axes])

    def attr_updates(self, spec: LayerSpec, in_shapes: Sequence[Shape], out_shape: Shape,
                     axes: Sequence[int | None]) -> dict[str, Any]:
        rule, inner = self._rule(spec)
        updates = rule.attr_updates(inner, [s[1:] for s in in_shapes], out_shape[1:],
                                    [None if a is None else a - 1 for a in axes])
        return self._with_config(spec, "layer", updates)

    def flops(self, spec: LayerSpec, in_shapes: Sequence[Shape], out_shape: Shape) -> int:
        try:
            rule, inner = self._rule(spec)
        except UnsupportedLayerError:
            return 0
        steps = int(out_shape[0]) if out_shape else 1
        return steps * rule.flops(inner, [s[1:] for s in in_shapes], out_shape[1:])


class Masking(Elementwise):
    """Masking: passes each feature on alone. It also masks the steps whose features all
    equal ``mask_value``, from every feature: after a deletion a step is masked by the kept
    features only, which differs from the original at a step where every kept feature
    equals ``mask_value`` and a deleted one does not. So a deletion through it is inexact
    (``allow_inexact=True``, its deviation measured by ``kerasprune.deviation``); placed
    after the model input, as it usually is, no deletion reaches it."""

    def inexact(self, spec: LayerSpec, in_shapes: Sequence[Shape], axis: int) -> str | None:
        return (f"{self.describe(spec)} masks the steps whose features all equal its "
                "mask_value, so a step where only deleted features differ from it would be "
                "masked after the deletion")
