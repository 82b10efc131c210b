"""Convolutions with ``groups``: Conv1D/2D/3D, grouped or not.

A grouped convolution (``groups`` = G) has the kernel ``(*k, in/G, filters)``: filter ``f``
belongs to group ``g = f // (filters/G)``, which reads input channels ``g*n .. g*n + n - 1``
(``n = in/G``), kernel row ``i`` reading channel ``g*n + i``. Every group must keep the same
size, which couples channels in three ways (:class:`Convolution`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from kerasprune.core.graph import LayerSpec, Shape
from kerasprune.core.rules.base import OUT, Link, UnsupportedLayerError, WeightAxis
from kerasprune.core.rules.producers import Producer

__all__ = ["Convolution"]


@dataclass(frozen=True)
class _Groups:
    """A convolution's groups: how many, input channels (kernel rows) and filters in each."""

    groups: int
    rows: int
    filters: int

    @property
    def depthwise(self) -> bool:
        """One input channel per group: the layer passes its input's channels on."""
        return self.rows == 1


def _groups(spec: LayerSpec) -> _Groups | None:
    """The layer's groups, ``None`` for an ordinary convolution."""
    groups = int(spec.attrs.get("groups", 1) or 1)
    kernel = spec.weights.get("kernel")
    if groups == 1 or kernel is None:
        return None
    return _Groups(groups, int(kernel.shape[-2]), max(int(kernel.shape[-1]) // groups, 1))


def _mask(mask: np.ndarray | None, size: int) -> np.ndarray:
    return np.zeros(size, dtype=bool) if mask is None else np.asarray(mask, dtype=bool).copy()


class Convolution(Producer):
    """Conv1D/2D/3D, whatever their ``groups``.

    - ``groups=1``: a :class:`~kerasprune.core.rules.producers.Producer`.
    - One input channel per group (a depthwise convolution written ``Conv2D(groups=C)``, as
      in ConvNeXt): it passes its input's channels on, channel ``c`` owning outputs
      ``c*m .. c*m+m-1``, like a ``DepthwiseConv2D``.
    - Otherwise a grouped convolution, whose groups keep one size:

      - its filters go the same number from every group, or by whole groups
        (:meth:`why_not_deleted` says what would be accepted when a deletion does neither);
      - a whole group takes the input channels it reads along (their producer loses them),
        and a group whose input channels all go loses its filters;
      - a deleted input channel of a group that stays takes its kernel row, so the channel
        at the same position of every group that stays goes too (coupled, like the inputs
        of an ``Add``): :meth:`input_ties`.

      Whether a group goes whole is judged on the channels that reach the layer; in a graph
      where they reach it in several steps (around a residual loop) the order can choose
      between two deletions, both valid.
    """

    def __init__(self) -> None:
        super().__init__("filters", -2, -1)

    def describe(self, spec: LayerSpec) -> str:
        found = _groups(spec)
        grouped = "" if found is None else f", a grouped convolution (groups={found.groups})"
        return f"layer '{spec.name}' ({spec.kind}){grouped}"

    # -- depthwise (one input channel per group): channels pass through --------------------

    def link(self, spec: LayerSpec, in_shapes: Sequence[Shape], out_shape: Shape,
             axis: int) -> Link | None:
        found = _groups(spec)
        if found is None or not found.depthwise:
            return None
        expected = self.in_axis(spec, in_shapes[0])
        if axis != expected:
            raise UnsupportedLayerError(
                f"{self.describe(spec)} keeps channels on axis {expected + 1} but the deleted "
                f"channels lie on axis {axis + 1} (counting the batch axis as 0), which it mixes")
        m = found.filters
        return Link(axis, (np.arange(in_shapes[0][axis] * m) // m,))

    def weight_axes(self, spec: LayerSpec, axes: Sequence[int | None]) -> list[WeightAxis]:
        found = _groups(spec)
        if found is None:
            return super().weight_axes(spec, axes)
        if found.depthwise:  # input channel c owns kernel columns c*m .. c*m+m-1
            m = found.filters
            return [WeightAxis("kernel", -1, 0, repeat=m), WeightAxis("bias", 0, 0, repeat=m),
                    WeightAxis("lora_kernel_b", -1, 0, repeat=m)]
        n = found.rows  # kernel row i reads channel i of every group
        return [WeightAxis("kernel", -2, 0, fold=n), WeightAxis("kernel", -1, OUT),
                WeightAxis("bias", 0, OUT), WeightAxis("lora_kernel_a", -2, 0, fold=n),
                WeightAxis("lora_kernel_b", -1, OUT)]

    def attr_updates(self, spec: LayerSpec, in_shapes: Sequence[Shape], out_shape: Shape,
                     axes: Sequence[int | None]) -> dict[str, Any]:
        updates = super().attr_updates(spec, in_shapes, out_shape, axes)
        found = _groups(spec)  # ``spec`` holds the sliced kernel: its rows per group
        if found is not None:
            channels = in_shapes[0][self.in_axis(spec, in_shapes[0])]
            updates["groups"] = channels // found.rows
        return updates

    # -- grouped (several input channels per group): groups keep one size ------------------

    def _grouped(self, spec: LayerSpec) -> _Groups | None:
        found = _groups(spec)
        return None if found is None or found.depthwise else found

    def neuron_blocks(self, spec: LayerSpec) -> int:
        found = self._grouped(spec)
        return 1 if found is None else found.groups

    def input_ties(self, spec: LayerSpec, in_shapes: Sequence[Shape]) -> list[np.ndarray | None]:
        found = self._grouped(spec)
        ties: list[np.ndarray | None] = [None] * len(in_shapes)
        if found is not None and in_shapes:
            channels = in_shapes[0][self.in_axis(spec, in_shapes[0])]
            if channels == found.groups * found.rows:
                ties[0] = np.arange(channels) % found.rows
        return ties

    def grow(self, spec: LayerSpec, inputs: Sequence[np.ndarray | None],
             output: np.ndarray | None) -> tuple[list[np.ndarray | None], np.ndarray | None]:
        found = self._grouped(spec)
        if found is None or not inputs:
            return list(inputs), output
        g = found.groups
        rows = _mask(inputs[0], g * found.rows).reshape(g, found.rows)
        cols = _mask(output, g * found.filters).reshape(g, found.filters)
        while True:
            whole = rows.all(axis=1) | cols.all(axis=1)
            rows[whole] = True
            cols[whole] = True
            kept = ~whole
            rows[kept] |= rows[kept].any(axis=0)  # a row goes from every group that stays
            if not (rows.all(axis=1) & kept).any():
                break
        grown: list[np.ndarray | None] = list(inputs)
        if rows.any():
            grown[0] = rows.reshape(-1)
        return grown, cols.reshape(-1) if cols.any() else output

    def why_not_deleted(self, spec: LayerSpec, inputs: Sequence[np.ndarray | None],
                        output: np.ndarray | None) -> str | None:
        found = self._grouped(spec)
        if found is None or output is None:
            return None
        per = found.filters
        cols = _mask(output, found.groups * per).reshape(found.groups, per)
        counts = cols.sum(axis=1)
        partial = counts[counts < per]
        if partial.size < 2 or (partial == partial[0]).all():
            return None
        asked = ", ".join(f"group {g}: {'all ' if c == per else ''}{c}"
                          for g, c in enumerate(counts.tolist()))
        most = int(partial.max())
        short = [(g, most - int(c)) for g, c in enumerate(counts.tolist()) if c < most]
        more = ", ".join(f"{k} more from group {g}" for g, k in short)
        return (f"{self.describe(spec)}, has {per} filters per group and must lose the same "
                f"number from every group, or whole groups; the deletion takes {asked} "
                f"(filters {np.flatnonzero(cols).tolist()}). Accepted: k filters from every "
                f"group (1 <= k < {per}; here {most} from each: {more}), or all {per} "
                "filters of a group (its input channels go with them)")
