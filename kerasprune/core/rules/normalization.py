"""Normalizations over the channels: ``LayerNormalization``, ``RMSNormalization``,
``UnitNormalization``.

They keep every channel where it is, but each output channel is divided by statistics of all
of them (a mean and variance, a root mean square, a norm): deleting channels on an axis they
normalise over changes the values of the kept ones. kerasprune never does that silently:
such a deletion is refused unless the caller passes ``allow_inexact=True``, and then their
per-channel weights (``gamma`` and ``beta``, ``scale``) are sliced to the kept channels, and
:func:`kerasprune.deviation` measures on data what the deletion changed. Channels on an axis
they do not normalise over are deleted exactly (their weights are not indexed by them).
"""

from __future__ import annotations

from collections.abc import Sequence

from kerasprune.core.graph import LayerSpec, Shape
from kerasprune.core.rules.base import (
    Link,
    Rule,
    WeightAxis,
    identity_sources,
    out_shape_size,
    rank_axis,
)

__all__ = ["Normalization"]


class Normalization(Rule):
    """A normalization over ``axis`` whose ``weights`` are shaped by the normalised axes, in
    the sorted order of ``axis`` (as Keras builds them). ``attrs["input_rank"]`` (the rank of
    its input without the batch axis, which the adapter records) places negative axes; without
    it, the deleted axis is taken as the input's last.

    Parameters
    ----------
    weights
        The names of its per-channel weights.
    flops_per_value
        Its cost per value of its output.
    """

    slices = frozenset({"gamma", "beta", "scale"})

    def __init__(self, weights: tuple[str, ...], flops_per_value: int = 5) -> None:
        self.weights = weights
        self.flops_per_value = flops_per_value

    def _axes(self, spec: LayerSpec, ndim: int) -> list[int]:
        """The normalised axes (without the batch axis), in the order of the weights' axes."""
        axis = spec.attrs.get("axis", -1)
        given = [int(axis)] if isinstance(axis, int) else sorted(int(a) for a in axis)
        return [rank_axis(a, ndim) for a in given]

    def link(self, spec: LayerSpec, in_shapes: Sequence[Shape], out_shape: Shape,
             axis: int) -> Link | None:
        return Link(axis, identity_sources(in_shapes[0][axis]))

    def inexact(self, spec: LayerSpec, in_shapes: Sequence[Shape], axis: int) -> str | None:
        if axis not in self._axes(spec, len(in_shapes[0])):
            return None
        return (f"{self.describe(spec)} normalises over the channels, so deleting some changes "
                "the others (they count in the statistics that scale them)")

    def weight_axes(self, spec: LayerSpec, axes: Sequence[int | None]) -> list[WeightAxis]:
        axis = axes[0] if axes else None
        if axis is None:
            return []
        normalised = self._axes(spec, int(spec.attrs.get("input_rank", axis + 1)))
        if axis not in normalised:
            return []
        return [WeightAxis(name, normalised.index(axis), 0) for name in self.weights]

    def flops(self, spec: LayerSpec, in_shapes: Sequence[Shape], out_shape: Shape) -> int:
        return self.flops_per_value * out_shape_size(out_shape)
