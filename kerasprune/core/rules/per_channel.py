"""Layers that keep channels on the axis their ``data_format`` (or ``axis``) names and work on
each channel alone: pooling, padding, cropping, upsampling, spatial dropout, batch
normalization, depthwise convolutions."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from kerasprune.core.graph import LayerSpec, Shape
from kerasprune.core.rules.base import (
    Link,
    UnsupportedLayerError,
    WeightAxis,
    format_axis,
    identity_sources,
    out_shape_size,
    rank_axis,
    spatial_positions,
)
from kerasprune.core.rules.elementwise import Elementwise

__all__ = ["BatchNorm", "Depthwise", "GlobalPooling", "PerChannel", "Pooling"]


class PerChannel(Elementwise):
    """Pooling, padding, cropping, upsampling, spatial dropout: channels stay on the axis the
    layer's ``data_format`` names; deletions on any other axis would be mixed."""

    def link(self, spec: LayerSpec, in_shapes: Sequence[Shape], out_shape: Shape,
             axis: int) -> Link | None:
        expected = self.channel_axis(spec, len(in_shapes[0]))
        if axis != expected:
            raise UnsupportedLayerError(
                f"{self.describe(spec)} keeps channels on axis {expected + 1} but the deleted "
                f"channels lie on axis {axis + 1} (counting the batch axis as 0), which it mixes")
        return Link(self.out_axis_for(spec, axis, out_shape), identity_sources(in_shapes[0][axis]))

    def channel_axis(self, spec: LayerSpec, ndim: int) -> int:
        return format_axis(spec, ndim)

    def out_axis_for(self, spec: LayerSpec, axis: int, out_shape: Shape) -> int:
        return axis


class Pooling(PerChannel):
    def flops(self, spec: LayerSpec, in_shapes: Sequence[Shape], out_shape: Shape) -> int:
        pool = spec.attrs.get("pool_size", 1)
        window = pool if isinstance(pool, int) else math.prod(pool)
        return int(window) * out_shape_size(out_shape)


class GlobalPooling(PerChannel):
    def out_axis_for(self, spec: LayerSpec, axis: int, out_shape: Shape) -> int:
        return axis if spec.attrs.get("keepdims") else 0

    def flops(self, spec: LayerSpec, in_shapes: Sequence[Shape], out_shape: Shape) -> int:
        return math.prod(in_shapes[0])


class BatchNorm(PerChannel):
    """BatchNormalization: gamma, beta, moving mean and variance are sliced with channels."""

    slices = frozenset({"gamma", "beta", "moving_mean", "moving_variance"})

    def channel_axis(self, spec: LayerSpec, ndim: int) -> int:
        axis = spec.attrs.get("axis", -1)
        if not isinstance(axis, int):
            axis = list(axis)
            if len(axis) != 1:
                raise UnsupportedLayerError(f"{self.describe(spec)} normalises over several axes")
            axis = axis[0]
        return rank_axis(int(axis), ndim)

    def weight_axes(self, spec: LayerSpec, axes: Sequence[int | None]) -> list[WeightAxis]:
        names = ("gamma", "beta", "moving_mean", "moving_variance")
        return [WeightAxis(name, 0, 0) for name in names]

    def flops(self, spec: LayerSpec, in_shapes: Sequence[Shape], out_shape: Shape) -> int:
        return 2 * out_shape_size(out_shape)



class Depthwise(PerChannel):
    """DepthwiseConvND: input channel ``c`` owns outputs ``c*m .. c*m+m-1``."""

    targetable = True
    slices = frozenset({"kernel", "bias"})

    def link(self, spec: LayerSpec, in_shapes: Sequence[Shape], out_shape: Shape,
             axis: int) -> Link | None:
        base = super().link(spec, in_shapes, out_shape, axis)
        assert base is not None
        m = int(spec.attrs.get("depth_multiplier", 1))
        return Link(base.out_axis, (np.arange(in_shapes[0][axis] * m) // m,))

    def weight_axes(self, spec: LayerSpec, axes: Sequence[int | None]) -> list[WeightAxis]:
        m = int(spec.attrs.get("depth_multiplier", 1))
        return [WeightAxis("kernel", -2, 0), WeightAxis("bias", 0, 0, repeat=m)]

    def flops(self, spec: LayerSpec, in_shapes: Sequence[Shape], out_shape: Shape) -> int:
        positions = spatial_positions(out_shape, format_axis(spec, len(out_shape)))
        bias = out_shape_size(out_shape) if "bias" in spec.weights else 0
        return 2 * math.prod(int(d) for d in spec.weights["kernel"].shape) * positions + bias
