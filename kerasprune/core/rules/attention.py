"""Attention layers: Keras' ``MultiHeadAttention``.

A multi-head attention layer is a producer of the channels of its output: its output
projection makes them (the model-width channels of a transformer's residual stream), and its
query, key and value projections read the channels of its inputs. Inside it live units that no
tensor of the graph shows, its :meth:`~kerasprune.core.rules.Rule.parts`:

- ``heads``: a head is a slice of the query, key and value projections (and of the gate's, if
  ``use_gate``) and the matching rows of the output projection. Deleting it is exact: the
  result equals the original with those rows of the output projection set to zero.
- ``key_dim``: dimensions of every head's queries and keys (deleted in every head alike).
  The scores are scaled by ``1/sqrt(key_dim)``, so the pruned layer, which scales by
  ``1/sqrt(new key_dim)``, gets its query projection multiplied by ``sqrt(new/old)``: its
  scores are then those of the original with the deleted dimensions set to zero, exactly.
- ``value_dim``: dimensions of every head's values, and the matching rows of the output
  projection (and of the gate).

A request names them as ``"layer:heads"``, ``"layer:key_dim"``, ``"layer:value_dim"``; the
layer's name alone names its output channels.

Which input of a call is the query, the value or the key is read from
``attrs["call_inputs"]`` (the argument names the adapter records, in the order of the node's
inputs); without it, the inputs are taken as ``(query, value, key)``. A missing key is the
value. Masks are inputs whose channels are not read through weights.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from kerasprune.core.graph import LayerSpec, Shape
from kerasprune.core.rules.base import (
    OUT,
    Link,
    Rule,
    UnsupportedLayerError,
    WeightAxis,
)

__all__ = ["MultiHeadAttention"]

_PROJECTIONS = ("query", "key", "value", "gate", "attention_output")
_HEAD_SPACES = {"query": "key_dim", "key": "key_dim", "value": "value_dim", "gate": "value_dim"}
"""Each input projection's kernel ``(features, heads, dims)`` and bias ``(heads, dims)``: which
part its per-head dimensions belong to (the gate multiplies the values)."""

_READ_BY = {"query": ("query", "gate"), "key": ("key",), "value": ("value",)}
"""The projections whose kernel rows read each input."""


def _roles(spec: LayerSpec, n_inputs: int) -> tuple[str, ...]:
    given = spec.attrs.get("call_inputs")
    if given is None:
        return ("query", "value", "key", *(f"args[{i}]" for i in range(3, n_inputs)))[:n_inputs]
    return tuple(given)


class MultiHeadAttention(Rule):
    """``keras.layers.MultiHeadAttention``: output channels, input reads, and the parts
    ``heads``, ``key_dim`` and ``value_dim`` (see the module)."""

    targetable = True
    slices = frozenset(f"{p}/{w}" for p in _PROJECTIONS for w in ("kernel", "bias"))

    # -- sizes --------------------------------------------------------------------------------

    def _sizes(self, spec: LayerSpec) -> tuple[int, int, int]:
        heads = int(spec.attrs.get("num_heads", 1))
        key_dim = int(spec.attrs.get("key_dim", 1))
        value_dim = spec.attrs.get("value_dim")
        return heads, key_dim, int(key_dim if value_dim is None else value_dim)

    def parts(self, spec: LayerSpec) -> dict[str, int]:
        heads, key_dim, value_dim = self._sizes(spec)
        return {"heads": heads, "key_dim": key_dim, "value_dim": value_dim}

    def why_not_part(self, spec: LayerSpec, part: str,
                     out_shapes: Sequence[Shape]) -> str | None:
        if part == "heads" and len(out_shapes) > 1:
            return (f"{self.describe(spec)} also returns its attention scores "
                    "(return_attention_scores=True), which have one row per head")
        return None

    def part_updates(self, spec: LayerSpec, kept: Mapping[str, int]
                     ) -> tuple[dict[str, Any], dict[str, float]]:
        _, key_dim, _ = self._sizes(spec)
        attrs = {"num_heads": kept["heads"], "key_dim": kept["key_dim"],
                 "value_dim": kept["value_dim"]}
        if kept["key_dim"] == key_dim:
            return attrs, {}
        factor = math.sqrt(kept["key_dim"] / key_dim)  # keeps q.k / sqrt(key_dim) as it was
        return attrs, {"query/kernel": factor, "query/bias": factor}

    # -- channels -----------------------------------------------------------------------------

    def _checked_roles(self, spec: LayerSpec, n_inputs: int) -> tuple[str, ...]:
        if "call_inputs" in spec.attrs and spec.attrs["call_inputs"] is None:
            raise UnsupportedLayerError(
                f"{self.describe(spec)} is shared by calls that pass their query, value and "
                "key differently: kerasprune cannot tell which weights read which input")
        return _roles(spec, n_inputs)

    def link(self, spec: LayerSpec, in_shapes: Sequence[Shape], out_shape: Shape,
             axis: int) -> Link | None:
        return None

    def in_axis(self, spec: LayerSpec, in_shape: Shape) -> int:
        return len(in_shape) - 1

    def why_not_read_at(self, spec: LayerSpec, position: int) -> str | None:
        roles = self._checked_roles(spec, position + 1)
        role = roles[position] if position < len(roles) else f"args[{position}]"
        if role in _READ_BY:
            return None
        return (f"the deletion reaches the '{role}' input of {self.describe(spec)}, which no "
                "weight reads channel by channel: its channels cannot be deleted")

    def out_axis(self, spec: LayerSpec, out_shape: Shape) -> int:
        return len(out_shape) - 1

    def own_neuron_axis(self, spec: LayerSpec, out_shape: Shape) -> int | None:
        return len(out_shape) - 1

    def makes_zeros(self, spec: LayerSpec) -> bool:
        return False

    def weight_axes(self, spec: LayerSpec, axes: Sequence[int | None]) -> list[WeightAxis]:
        roles = self._checked_roles(spec, len(axes))
        found: list[WeightAxis] = []
        for pos, role in enumerate(roles):
            readers = _READ_BY.get(role, ())
            if role == "value" and "key" not in roles:
                readers = (*readers, "key")
            found += [WeightAxis(f"{p}/kernel", 0, pos) for p in readers]
        found += [WeightAxis("attention_output/kernel", -1, OUT),
                  WeightAxis("attention_output/bias", -1, OUT)]
        for p, dims in _HEAD_SPACES.items():
            found += [WeightAxis(f"{p}/kernel", -2, "heads"), WeightAxis(f"{p}/bias", -2, "heads"),
                      WeightAxis(f"{p}/kernel", -1, dims), WeightAxis(f"{p}/bias", -1, dims)]
        found += [WeightAxis("attention_output/kernel", 0, "heads"),
                  WeightAxis("attention_output/kernel", 1, "value_dim")]
        return found

    def attr_updates(self, spec: LayerSpec, in_shapes: Sequence[Shape], out_shape: Shape,
                     axes: Sequence[int | None]) -> dict[str, Any]:
        roles = self._checked_roles(spec, len(in_shapes))
        given = spec.attrs.get("output_shape")
        units = out_shape[-1]
        if isinstance(given, int):
            return {"output_shape": units}
        if given:
            return {"output_shape": (*tuple(given)[:-1], units)}
        query = in_shapes[roles.index("query")] if "query" in roles else in_shapes[0]
        # without output_shape the output has the query's width: set it where they differ
        return {} if query[-1] == units else {"output_shape": units}

    def flops(self, spec: LayerSpec, in_shapes: Sequence[Shape], out_shape: Shape) -> int:
        roles = _roles(spec, len(in_shapes))
        shapes = dict(zip(roles, in_shapes, strict=False))
        query = shapes.get("query", in_shapes[0])
        value = shapes.get("value", query)
        key = shapes.get("key", value)
        weights = spec.weights
        if "query/kernel" not in weights or "value/kernel" not in weights:
            return 0
        _, heads, key_dim = (int(d) for d in weights["query/kernel"].shape)
        value_dim = int(weights["value/kernel"].shape[-1])
        q_pos, kv_pos = math.prod(query[:-1]), math.prod(value[:-1])
        attended = self._attended(spec, value)
        macs = q_pos * query[-1] * heads * key_dim + kv_pos * key[-1] * heads * key_dim
        macs += kv_pos * value[-1] * heads * value_dim
        macs += q_pos * attended * heads * (key_dim + value_dim)  # scores, weighted values
        macs += q_pos * heads * value_dim * out_shape[-1]
        if "gate/kernel" in weights:
            macs += q_pos * query[-1] * heads * value_dim
        softmax = 3 * q_pos * attended * heads
        gate = q_pos * heads * value_dim if "gate/kernel" in weights else 0  # the product

        def bias(name: str) -> int:
            found = weights.get(f"{name}/bias")
            return 0 if found is None else math.prod(int(d) for d in found.shape)

        biases = q_pos * (bias("query") + bias("gate") + bias("attention_output"))
        biases += kv_pos * (bias("key") + bias("value"))
        return 2 * macs + softmax + gate + biases

    def _attended(self, spec: LayerSpec, value: Shape) -> int:
        """How many value positions each query position attends to."""
        axes = spec.attrs.get("attention_axes")
        if axes is None:
            return math.prod(value[:-1])
        axes = [axes] if isinstance(axes, int) else list(axes)
        rank = len(value) + 1
        return math.prod(value[(a + rank if a < 0 else a) - 1] for a in axes)
