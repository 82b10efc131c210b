"""Layers that join several inputs: element-wise merges (``Add``, ``Multiply``...), whose inputs
lose the same channels together, and ``Concatenate``, which offsets them."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from kerasprune.core.graph import LayerSpec, Shape
from kerasprune.core.rules.base import (
    Link,
    Rule,
    UnsupportedLayerError,
    identity_sources,
    out_shape_size,
    rank_axis,
)

__all__ = ["Concatenate", "Merge"]


class Merge(Rule):
    """Add, Multiply, Maximum...: channel ``j`` of every input makes output channel ``j``."""

    def link(self, spec: LayerSpec, in_shapes: Sequence[Shape], out_shape: Shape,
             axis: int) -> Link | None:
        sizes = {shape[axis] for shape in in_shapes}
        if len(sizes) != 1:
            raise UnsupportedLayerError(
                f"{self.describe(spec)} broadcasts inputs of {sorted(sizes)} channels")
        return Link(axis, identity_sources(out_shape[axis], len(in_shapes)))

    def flops(self, spec: LayerSpec, in_shapes: Sequence[Shape], out_shape: Shape) -> int:
        return (len(in_shapes) - 1) * out_shape_size(out_shape)


class Concatenate(Rule):
    """Concatenate along the channel axis offsets indices; along another axis it merges."""

    def link(self, spec: LayerSpec, in_shapes: Sequence[Shape], out_shape: Shape,
             axis: int) -> Link | None:
        if rank_axis(int(spec.attrs.get("axis", -1)), len(out_shape)) != axis:
            return Merge().link(spec, in_shapes, out_shape, axis)
        sources = []
        start = 0
        for shape in in_shapes:
            src = np.full(out_shape[axis], -1)
            src[start:start + shape[axis]] = np.arange(shape[axis])
            sources.append(src)
            start += shape[axis]
        return Link(axis, tuple(sources))
