"""Layers that act on each value alone, so channels pass on whatever axis they lie: activations,
dropout and noise, PReLU, a per-channel scale (``x * gamma``).

:class:`Elementwise` is the base class for a layer of your own that keeps every channel where
it is; :class:`ChannelScale` for one that multiplies the last axis by a weight of its own."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

from kerasprune.core.graph import LayerSpec, Shape
from kerasprune.core.rules.base import (
    COUPLING_ACTIVATIONS,
    Link,
    Rule,
    UnsupportedLayerError,
    WeightAxis,
    activation_name,
    identity_sources,
    out_shape_size,
    rank_axis,
)

__all__ = ["Activation", "ChannelScale", "Elementwise", "NoiseShaped", "PReLU", "ReLU", "Softmax"]


class Elementwise(Rule):
    """Acts on each value alone (ReLU, Dropout...): channels pass on whatever axis."""

    slices: ClassVar[frozenset[str] | None] = frozenset()

    def __init__(self, flops_per_value: int = 0) -> None:
        self.flops_per_value = flops_per_value

    def link(self, spec: LayerSpec, in_shapes: Sequence[Shape], out_shape: Shape,
             axis: int) -> Link | None:
        return Link(axis, identity_sources(in_shapes[0][axis]))

    def flops(self, spec: LayerSpec, in_shapes: Sequence[Shape], out_shape: Shape) -> int:
        return self.flops_per_value * out_shape_size(out_shape)


class NoiseShaped(Elementwise):
    """Dropout and AlphaDropout: a ``noise_shape`` that spans the channel axis follows it."""

    def attr_updates(self, spec: LayerSpec, in_shapes: Sequence[Shape], out_shape: Shape,
                     axes: Sequence[int | None]) -> dict[str, Any]:
        noise = spec.attrs.get("noise_shape")
        axis = axes[0] if axes else None
        if noise is None or axis is None or axis + 1 >= len(noise):
            return {}
        if noise[axis + 1] is None or int(noise[axis + 1]) == 1:
            return {}  # broadcast over the channels: nothing to change
        new = list(noise)
        new[axis + 1] = in_shapes[0][axis]
        return {"noise_shape": tuple(new)}


class ReLU(Elementwise):
    """The ReLU layer: makes zeros unless it has a negative slope."""

    def makes_zeros(self, spec: LayerSpec) -> bool:
        return not spec.attrs.get("negative_slope")


class Activation(Elementwise):
    """The Activation layer: element-wise unless it normalises over the last axis."""

    def link(self, spec: LayerSpec, in_shapes: Sequence[Shape], out_shape: Shape,
             axis: int) -> Link | None:
        name = activation_name(spec.attrs.get("activation", "linear"))
        if name in COUPLING_ACTIVATIONS and axis == len(in_shapes[0]) - 1:
            raise UnsupportedLayerError(
                f"{self.describe(spec)} applies '{name}', which normalises over the channels: "
                "deleting one changes the others")
        return super().link(spec, in_shapes, out_shape, axis)


class Softmax(Elementwise):
    """Softmax passes channels only when it normalises over another axis."""

    def link(self, spec: LayerSpec, in_shapes: Sequence[Shape], out_shape: Shape,
             axis: int) -> Link | None:
        axes = spec.attrs.get("axis", -1)
        ndim = len(in_shapes[0])
        axes = [axes] if isinstance(axes, int) else list(axes)
        if axis in [rank_axis(a, ndim) for a in axes]:
            raise UnsupportedLayerError(
                f"{self.describe(spec)} normalises over the channel axis: deleting a channel "
                "changes the others")
        return super().link(spec, in_shapes, out_shape, axis)



class PReLU(Elementwise):
    """PReLU: its alpha has the input's shape with shared axes of size 1."""

    slices = frozenset({"alpha"})

    def weight_axes(self, spec: LayerSpec, axes: Sequence[int | None]) -> list[WeightAxis]:
        axis = axes[0]
        alpha = spec.weights.get("alpha")
        if axis is None or alpha is None or int(alpha.shape[axis]) == 1:
            return []
        return [WeightAxis("alpha", axis, 0)]


class ChannelScale(Elementwise):
    """``x * gamma`` with one ``gamma`` per channel of the last axis (ConvNeXt's LayerScale,
    whose weight has no name of its own; or a layer of your own that scales channels), its
    size held in the attribute ``count_attr`` if it has one."""

    slices = None

    def __init__(self, count_attr: str | None = None) -> None:
        super().__init__(flops_per_value=1)
        self.count_attr = count_attr

    def link(self, spec: LayerSpec, in_shapes: Sequence[Shape], out_shape: Shape,
             axis: int) -> Link | None:
        if axis != len(in_shapes[0]) - 1:
            raise UnsupportedLayerError(
                f"{self.describe(spec)} scales the last axis, but the deleted channels lie on "
                f"axis {axis + 1} (counting the batch axis as 0)")
        return super().link(spec, in_shapes, out_shape, axis)

    def weight_axes(self, spec: LayerSpec, axes: Sequence[int | None]) -> list[WeightAxis]:
        return [WeightAxis(name, 0, 0) for name in spec.weights]  # its one weight, however named

    def attr_updates(self, spec: LayerSpec, in_shapes: Sequence[Shape], out_shape: Shape,
                     axes: Sequence[int | None]) -> dict[str, Any]:
        return {} if self.count_attr is None else {self.count_attr: in_shapes[0][-1]}
