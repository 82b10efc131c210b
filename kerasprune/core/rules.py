"""Per-kind pruning rules: how each kind of layer relates its input and output channels.

Every layer kind has one :class:`Rule`, registered under the kind's name in :data:`RULES`.
A rule answers four questions, and nothing else in the library knows about layer kinds:

- :meth:`Rule.link`: are my output channels made from my input channels, and which from which?
  ``None`` means the layer makes channels of its own (Dense units, Conv filters): deleting
  them stops there, and deleting its input channels only drops kernel rows.
- :meth:`Rule.weight_axes`: which axis of which weight indexes which channels.
- :meth:`Rule.attr_updates`: which attributes change with the channel count (``units``...).
- :meth:`Rule.flops`: the cost of one call.

Channel axes are counted without the batch axis. Supporting one more layer kind is one
subclass (or one instance of an existing class) and one line in :data:`RULES`.

Kinds are Keras class names (``"Dense"``); the operations of a functional graph
(``x * 2.0``, ``keras.ops.relu(x)``) have kinds of their own, ``"op:"`` and the operation's
name in snake case (``"op:multiply"``, ``"op:relu"``), since ``keras.ops`` and
``keras.layers`` share class names (``Add``, ``Multiply``).
"""

from __future__ import annotations

import difflib
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from kerasprune.core.graph import LayerSpec, PruneError, Shape

__all__ = [
    "OUT",
    "RULES",
    "Link",
    "Rule",
    "UnsupportedLayerError",
    "WeightAxis",
    "op_kind",
    "register",
    "rule_for",
    "supported_kinds",
]

OUT = -1
"""The channel space of a layer's own output, in :class:`WeightAxis`."""


class UnsupportedLayerError(PruneError):
    """A deletion reaches a layer whose kind cannot pass or absorb it."""


@dataclass(frozen=True)
class Link:
    """How a pass-through layer's output channels come from its input channels.

    Parameters
    ----------
    out_axis
        The output axis that carries channels.
    sources
        One int array per input, as long as the output's channel axis: ``sources[i][j]`` is
        the channel of input ``i`` that output channel ``j`` is made from, or -1 if none.
        Channels linked this way are deleted together.
    """

    out_axis: int
    sources: tuple[np.ndarray, ...]


@dataclass(frozen=True)
class WeightAxis:
    """Axis ``axis`` of weight ``weight`` indexes the channels of input ``space`` (or ``OUT``).

    ``weight`` names a weight or a constant of the layer (:attr:`LayerSpec.constants`).
    ``repeat`` consecutive entries belong to one channel (a depthwise multiplier).
    """

    weight: str
    axis: int
    space: int
    repeat: int = 1


def _rank_axis(axis: int, ndim: int) -> int:
    """Keras axis (counting the batch axis, negatives allowed) -> axis without batch."""
    full = axis + ndim + 1 if axis < 0 else axis
    if not 1 <= full <= ndim:
        raise PruneError(f"axis {axis} is not a feature axis of a rank-{ndim + 1} tensor")
    return full - 1


def _format_axis(spec: LayerSpec, ndim: int) -> int:
    """The channel axis of an input of rank ``ndim`` for the layer's ``data_format``."""
    return 0 if spec.attrs.get("data_format") == "channels_first" else ndim - 1


def _identity(size: int, n_inputs: int = 1) -> tuple[np.ndarray, ...]:
    return (np.arange(size),) * n_inputs


class Rule:
    """Base rule: a layer that cannot carry a channel deletion.

    Subclasses override what their kind supports. ``targetable`` layers have neurons a user
    can delete (their own output channels).
    """

    targetable: ClassVar[bool] = False
    reason: str | None = None
    slices: ClassVar[frozenset[str] | None] = None
    """The weights a layer of this kind may hold, if the rule knows them all: a layer with any
    other (a quantized layer's scales) is refused when a deletion reaches it, since they
    would keep their old shape."""

    def describe(self, spec: LayerSpec) -> str:
        return f"layer '{spec.name}' ({spec.kind})"

    def link(self, spec: LayerSpec, in_shapes: Sequence[Shape], out_shape: Shape,
             axis: int) -> Link | None:
        """Channel links when input channels lie on ``axis``; ``None`` if the layer makes its
        own channels. Raise :class:`UnsupportedLayerError` if it cannot pass them."""
        why = f": {self.reason}" if self.reason else ""
        raise UnsupportedLayerError(f"{self.describe(spec)} cannot pass a channel deletion{why}")

    def in_axis(self, spec: LayerSpec, in_shape: Shape) -> int:
        """For a layer that makes its own channels: the input axis its weights read."""
        raise UnsupportedLayerError(f"{self.describe(spec)} reads no channels")

    def out_axis(self, spec: LayerSpec, out_shape: Shape) -> int:
        """For a layer that makes its own channels: the output axis that holds them."""
        raise UnsupportedLayerError(f"{self.describe(spec)} has no neurons to delete")

    def output_coupling(self, spec: LayerSpec) -> str | None:
        """Why deleting some outputs would change the others (a softmax), if it would."""
        return None

    def makes_zeros(self, spec: LayerSpec) -> bool:
        """Whether the layer's output is a zero-producing non-linearity (ReLU-like), the
        place where APoZ is measured."""
        return _zeroing(spec.attrs.get("activation"))

    def weight_axes(self, spec: LayerSpec, axes: Sequence[int | None]) -> list[WeightAxis]:
        """Weight axes indexed by channels; ``axes[i]`` is input ``i``'s channel axis."""
        return []

    def attr_updates(self, spec: LayerSpec, in_shapes: Sequence[Shape], out_shape: Shape,
                     axes: Sequence[int | None]) -> dict[str, Any]:
        """Attributes to change once the tensors have the given (new) shapes; ``axes[i]`` is
        the axis on which input ``i`` lost channels (``None`` if it lost none)."""
        return {}

    def flops(self, spec: LayerSpec, in_shapes: Sequence[Shape], out_shape: Shape) -> int:
        """Floating-point operations of one call on one sample (a multiply-add is 2)."""
        return 0


class Unsupported(Rule):
    """A kind that deliberately refuses channel deletions, with the reason."""

    def __init__(self, reason: str) -> None:
        self.reason = reason


# --- layers that make their own channels ------------------------------------------------

_COUPLING_ACTIVATIONS = ("softmax", "log_softmax")


def _activation_name(value: Any) -> str:
    if isinstance(value, Mapping):
        value = value.get("config", {}).get("name", value.get("class_name", ""))
    return str(value)


_ZEROING_ACTIVATIONS = ("relu", "relu6")


def _zeroing(activation: Any) -> bool:
    return activation is not None and _activation_name(activation) in _ZEROING_ACTIVATIONS


def _own_coupling(spec: LayerSpec) -> str | None:
    """Why a layer's own activation couples its units (a softmax), if it does."""
    name = _activation_name(spec.attrs.get("activation", "linear"))
    if name in _COUPLING_ACTIVATIONS:
        return f"its activation '{name}' normalises over its units"
    return None


class Producer(Rule):
    """Dense and convolutions: own output channels, and input channels read by the kernel.

    A LoRA adapter (``lora_rank``) is sliced with the kernel: ``lora_kernel_a`` holds the
    kernel's input axes, ``lora_kernel_b`` its output units.
    """

    targetable = True
    slices = frozenset({"kernel", "bias", "lora_kernel_a", "lora_kernel_b"})

    def __init__(self, count_attr: str, kernel_in: int, kernel_out: int,
                 channels_first_capable: bool = True) -> None:
        self.count_attr = count_attr
        self.kernel_in = kernel_in
        self.kernel_out = kernel_out
        self.channels_first_capable = channels_first_capable

    def describe(self, spec: LayerSpec) -> str:
        groups = int(spec.attrs.get("groups", 1) or 1)
        grouped = f", a grouped convolution (groups={groups})" if groups > 1 else ""
        return f"layer '{spec.name}' ({spec.kind}){grouped}"

    def _multiplier(self, spec: LayerSpec) -> int | None:
        """For a grouped convolution with one input channel per group (a depthwise
        convolution written ``Conv2D(groups=C)``, as in ConvNeXt): how many outputs each
        group makes. ``None`` for an ordinary layer; other grouped convolutions are refused."""
        groups = int(spec.attrs.get("groups", 1) or 1)
        if groups == 1:
            return None
        kernel = spec.weights.get("kernel")
        if kernel is not None and int(kernel.shape[-2]) == 1:
            return max(int(kernel.shape[-1]) // groups, 1)
        raise UnsupportedLayerError(
            f"layer '{spec.name}' ({spec.kind}) is a grouped convolution (groups={groups}) with "
            "several input channels per group: deleting channels would unbalance its groups")

    def link(self, spec: LayerSpec, in_shapes: Sequence[Shape], out_shape: Shape,
             axis: int) -> Link | None:
        m = self._multiplier(spec)
        if m is None:
            return None
        expected = self.in_axis(spec, in_shapes[0])
        if axis != expected:
            raise UnsupportedLayerError(
                f"{self.describe(spec)} keeps channels on axis {expected + 1} but the deleted "
                f"channels lie on axis {axis + 1} (counting the batch axis as 0), which it mixes")
        return Link(axis, (np.arange(in_shapes[0][axis] * m) // m,))

    def in_axis(self, spec: LayerSpec, in_shape: Shape) -> int:
        return _format_axis(spec, len(in_shape)) if self.channels_first_capable else len(
            in_shape) - 1

    def out_axis(self, spec: LayerSpec, out_shape: Shape) -> int:
        self._multiplier(spec)
        return self.in_axis(spec, out_shape)

    def output_coupling(self, spec: LayerSpec) -> str | None:
        return _own_coupling(spec)

    def weight_axes(self, spec: LayerSpec, axes: Sequence[int | None]) -> list[WeightAxis]:
        m = self._multiplier(spec)
        if m is not None:  # input channel c owns kernel columns c*m .. c*m+m-1
            return [WeightAxis("kernel", -1, 0, repeat=m), WeightAxis("bias", 0, 0, repeat=m),
                    WeightAxis("lora_kernel_b", -1, 0, repeat=m)]
        return [WeightAxis("kernel", self.kernel_in, 0), WeightAxis("kernel", self.kernel_out, OUT),
                WeightAxis("bias", 0, OUT), WeightAxis("lora_kernel_a", self.kernel_in, 0),
                WeightAxis("lora_kernel_b", -1, OUT)]

    def attr_updates(self, spec: LayerSpec, in_shapes: Sequence[Shape], out_shape: Shape,
                     axes: Sequence[int | None]) -> dict[str, Any]:
        count = out_shape[self.out_axis(spec, out_shape)]
        m = self._multiplier(spec)
        if m is not None:
            return {self.count_attr: count, "groups": count // m}
        return {self.count_attr: count}

    def flops(self, spec: LayerSpec, in_shapes: Sequence[Shape], out_shape: Shape) -> int:
        kernel = spec.weights["kernel"].shape
        positions = _positions(out_shape, self.out_axis(spec, out_shape))
        macs = math.prod(int(d) for d in kernel) * positions
        bias = out_shape_size(out_shape) if "bias" in spec.weights else 0
        return 2 * macs + bias


def out_shape_size(shape: Shape) -> int:
    return math.prod(shape)


def _positions(shape: Shape, axis: int) -> int:
    """Number of positions of a tensor (all axes but the channel axis)."""
    return math.prod(shape) // max(shape[axis], 1)


class Transposed(Producer):
    """ConvNDTranspose: the kernel is ``(*k, out, in)`` and each input position scatters."""

    slices = frozenset({"kernel", "bias"})

    def __init__(self) -> None:
        super().__init__("filters", -1, -2)

    def flops(self, spec: LayerSpec, in_shapes: Sequence[Shape], out_shape: Shape) -> int:
        kernel = spec.weights["kernel"].shape
        in_positions = _positions(in_shapes[0], self.in_axis(spec, in_shapes[0]))
        bias = out_shape_size(out_shape) if "bias" in spec.weights else 0
        return 2 * math.prod(int(d) for d in kernel) * in_positions + bias


class Separable(Producer):
    """SeparableConvND: depthwise ``(*k, in, m)`` then pointwise ``(*1, in*m, out)``."""

    slices = frozenset({"depthwise_kernel", "pointwise_kernel", "bias"})

    def __init__(self) -> None:
        super().__init__("filters", -2, -1)

    def weight_axes(self, spec: LayerSpec, axes: Sequence[int | None]) -> list[WeightAxis]:
        m = int(spec.attrs.get("depth_multiplier", 1))
        return [WeightAxis("depthwise_kernel", -2, 0),
                WeightAxis("pointwise_kernel", -2, 0, repeat=m),
                WeightAxis("pointwise_kernel", -1, OUT), WeightAxis("bias", 0, OUT)]

    def flops(self, spec: LayerSpec, in_shapes: Sequence[Shape], out_shape: Shape) -> int:
        positions = _positions(out_shape, self.out_axis(spec, out_shape))
        dw = math.prod(int(d) for d in spec.weights["depthwise_kernel"].shape)
        pw = math.prod(int(d) for d in spec.weights["pointwise_kernel"].shape)
        bias = out_shape_size(out_shape) if "bias" in spec.weights else 0
        return 2 * (dw + pw) * positions + bias


class Embedding(Producer):
    """Embedding: the output dimension is prunable; its input holds ids, not channels."""

    slices = frozenset({"embeddings", "lora_embeddings_a", "lora_embeddings_b"})

    def __init__(self) -> None:
        super().__init__("output_dim", 0, 1, channels_first_capable=False)

    def in_axis(self, spec: LayerSpec, in_shape: Shape) -> int:
        raise UnsupportedLayerError(f"{self.describe(spec)} reads integer ids, not channels")

    def out_axis(self, spec: LayerSpec, out_shape: Shape) -> int:
        return len(out_shape) - 1

    def weight_axes(self, spec: LayerSpec, axes: Sequence[int | None]) -> list[WeightAxis]:
        return [WeightAxis("embeddings", 1, OUT), WeightAxis("lora_embeddings_b", 1, OUT)]

    def flops(self, spec: LayerSpec, in_shapes: Sequence[Shape], out_shape: Shape) -> int:
        return 0


# --- layers whose channels are their input's ----------------------------------------------

class Elementwise(Rule):
    """Acts on each value alone (ReLU, Dropout...): channels pass on whatever axis."""

    slices: ClassVar[frozenset[str] | None] = frozenset()

    def __init__(self, flops_per_value: int = 0) -> None:
        self.flops_per_value = flops_per_value

    def link(self, spec: LayerSpec, in_shapes: Sequence[Shape], out_shape: Shape,
             axis: int) -> Link | None:
        return Link(axis, _identity(in_shapes[0][axis]))

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
        name = _activation_name(spec.attrs.get("activation", "linear"))
        if name in _COUPLING_ACTIVATIONS and axis == len(in_shapes[0]) - 1:
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
        if axis in [_rank_axis(a, ndim) for a in axes]:
            raise UnsupportedLayerError(
                f"{self.describe(spec)} normalises over the channel axis: deleting a channel "
                "changes the others")
        return super().link(spec, in_shapes, out_shape, axis)


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
        return Link(self.out_axis_for(spec, axis, out_shape), _identity(in_shapes[0][axis]))

    def channel_axis(self, spec: LayerSpec, ndim: int) -> int:
        return _format_axis(spec, ndim)

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
        return _rank_axis(int(axis), ndim)

    def weight_axes(self, spec: LayerSpec, axes: Sequence[int | None]) -> list[WeightAxis]:
        names = ("gamma", "beta", "moving_mean", "moving_variance")
        return [WeightAxis(name, 0, 0) for name in names]

    def flops(self, spec: LayerSpec, in_shapes: Sequence[Shape], out_shape: Shape) -> int:
        return 2 * out_shape_size(out_shape)


class PReLU(Elementwise):
    """PReLU: its alpha has the input's shape with shared axes of size 1."""

    slices = frozenset({"alpha"})

    def weight_axes(self, spec: LayerSpec, axes: Sequence[int | None]) -> list[WeightAxis]:
        axis = axes[0]
        alpha = spec.weights.get("alpha")
        if axis is None or alpha is None or int(alpha.shape[axis]) == 1:
            return []
        return [WeightAxis("alpha", axis, 0)]


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
        positions = _positions(out_shape, _format_axis(spec, len(out_shape)))
        bias = out_shape_size(out_shape) if "bias" in spec.weights else 0
        return 2 * math.prod(int(d) for d in spec.weights["kernel"].shape) * positions + bias


class ChannelScale(Elementwise):
    """``x * gamma`` with one ``gamma`` per channel of the last axis (ConvNeXt's LayerScale,
    whose weight has no name of its own), its size held in ``count_attr``."""

    slices = None

    def __init__(self, count_attr: str) -> None:
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
        return {self.count_attr: in_shapes[0][-1]}


def _channel_ids(shape: Shape, axis: int) -> np.ndarray:
    """An array of ``shape`` holding, at each position, the index along ``axis``."""
    view = [1] * len(shape)
    view[axis] = shape[axis]
    return np.broadcast_to(np.arange(shape[axis]).reshape(view), shape)


def _channel_map(ids: np.ndarray) -> tuple[int, np.ndarray] | None:
    """The axis of ``ids`` along which each index holds a single channel, and which one."""
    for axis in reversed(range(ids.ndim)):
        rows = np.moveaxis(ids, axis, 0).reshape(ids.shape[axis], -1)
        if (ids.shape[axis] > 1 or ids.ndim == 1) and (rows == rows[:, :1]).all():
            return axis, rows[:, 0].copy()
    return None


class Flatten(Elementwise):
    """Flatten: channel ``c`` becomes every flat position of ``c``, in either data format."""

    def link(self, spec: LayerSpec, in_shapes: Sequence[Shape], out_shape: Shape,
             axis: int) -> Link | None:
        ids = _channel_ids(in_shapes[0], axis)
        if spec.attrs.get("data_format") == "channels_first" and ids.ndim > 1:
            ids = np.moveaxis(ids, 0, -1)
        return Link(0, (ids.reshape(-1),))


class Reshape(Elementwise):
    """Reshape: passes when some output axis holds one channel per index. A ``-1`` in the
    target shape stays ``-1`` (it stands for a size only known at run time)."""

    def link(self, spec: LayerSpec, in_shapes: Sequence[Shape], out_shape: Shape,
             axis: int) -> Link | None:
        ids = _channel_ids(in_shapes[0], axis)
        shape = self._resolved(spec, ids.size, out_shape)
        if shape is None:
            raise UnsupportedLayerError(
                f"{self.describe(spec)} reshapes {in_shapes[0]} to {out_shape}, sizes known "
                "only at run time, so kerasprune cannot tell where the channels go")
        found = _channel_map(ids.reshape(shape))
        if found is not None and shape[found[0]] != out_shape[found[0]]:
            raise UnsupportedLayerError(
                f"{self.describe(spec)} reshapes {in_shapes[0]} to {out_shape}: the channels "
                "land on an axis whose size is known only at run time")
        if found is None:
            raise UnsupportedLayerError(
                f"{self.describe(spec)} reshapes {in_shapes[0]} to {out_shape}, mixing the "
                f"channels of axis {axis + 1} with other axes")
        return Link(found[0], (found[1],))

    @staticmethod
    def _resolved(spec: LayerSpec, size: int, out_shape: Shape) -> Shape | None:
        """The output shape for an input of ``size`` values: ``out_shape`` itself, or with
        its ``-1`` axis recomputed (an unknown input size counts as 1 in the graph, so the
        axis that absorbs it may be off)."""
        if size == math.prod(out_shape):
            return out_shape
        target = spec.attrs.get("target_shape")
        if target is None or len(target) != len(out_shape):
            return None
        free = [i for i, t in enumerate(target) if t is not None and int(t) == -1]
        known = math.prod(d for i, d in enumerate(out_shape) if i not in free)
        if len(free) != 1 or known == 0 or size % known:
            return None
        shape = list(out_shape)
        shape[free[0]] = size // known
        return tuple(shape)

    def attr_updates(self, spec: LayerSpec, in_shapes: Sequence[Shape], out_shape: Shape,
                     axes: Sequence[int | None]) -> dict[str, Any]:
        target = spec.attrs.get("target_shape")
        if target is None or len(target) != len(out_shape):
            return {"target_shape": tuple(out_shape)}
        return {"target_shape": tuple(-1 if t is not None and int(t) == -1 else out_shape[i]
                                      for i, t in enumerate(target))}


class Merge(Rule):
    """Add, Multiply, Maximum...: channel ``j`` of every input makes output channel ``j``."""

    def link(self, spec: LayerSpec, in_shapes: Sequence[Shape], out_shape: Shape,
             axis: int) -> Link | None:
        sizes = {shape[axis] for shape in in_shapes}
        if len(sizes) != 1:
            raise UnsupportedLayerError(
                f"{self.describe(spec)} broadcasts inputs of {sorted(sizes)} channels")
        return Link(axis, _identity(out_shape[axis], len(in_shapes)))

    def flops(self, spec: LayerSpec, in_shapes: Sequence[Shape], out_shape: Shape) -> int:
        return (len(in_shapes) - 1) * out_shape_size(out_shape)


class Concatenate(Rule):
    """Concatenate along the channel axis offsets indices; along another axis it merges."""

    def link(self, spec: LayerSpec, in_shapes: Sequence[Shape], out_shape: Shape,
             axis: int) -> Link | None:
        if _rank_axis(int(spec.attrs.get("axis", -1)), len(out_shape)) != axis:
            return Merge().link(spec, in_shapes, out_shape, axis)
        sources = []
        start = 0
        for shape in in_shapes:
            src = np.full(out_shape[axis], -1)
            src[start:start + shape[axis]] = np.arange(shape[axis])
            sources.append(src)
            start += shape[axis]
        return Link(axis, tuple(sources))


class Broadcast(Rule):
    """An element-wise operation of several operands that broadcast (``x * 2.0``,
    ``keras.ops.add(x, bias)``, ``where(mask, x, 0)``).

    Tensor operands as big as the output on the channel axis are coupled like the inputs of
    ``Add``; those of size 1 there broadcast and take no part. A constant operand
    (:attr:`LayerSpec.constants`, given aligned to the output: the output's rank without the
    batch axis, size-1 axes where it broadcasts) that spans the channel axis loses the
    deleted entries; a scalar, or one of size 1 there, stays as it is. An adapter that cannot
    align a constant sets the attribute ``unaligned_constants``.
    """

    def __init__(self, flops_per_value: int = 1) -> None:
        self.flops_per_value = flops_per_value

    def link(self, spec: LayerSpec, in_shapes: Sequence[Shape], out_shape: Shape,
             axis: int) -> Link | None:
        if spec.attrs.get("unaligned_constants"):
            raise UnsupportedLayerError(
                f"{self.describe(spec)} broadcasts its input against a constant of a higher "
                "rank, so the channel axis moves")
        sources = []
        for shape in in_shapes:
            if len(shape) != len(out_shape):
                raise UnsupportedLayerError(
                    f"{self.describe(spec)} broadcasts an operand of rank {len(shape) + 1} "
                    f"to rank {len(out_shape) + 1}, so its channel axis moves")
            sources.append(self._source(spec, shape[axis], out_shape[axis]))
        for name, value in spec.constants.items():
            if len(value.shape) != len(out_shape):
                raise UnsupportedLayerError(
                    f"{self.describe(spec)} has a constant '{name}' of shape "
                    f"{tuple(value.shape)}, not aligned to its output {out_shape}")
            self._source(spec, int(value.shape[axis]), out_shape[axis], f"constant '{name}' of")
        return Link(axis, tuple(sources))

    def _source(self, spec: LayerSpec, size: int, channels: int, what: str = "") -> np.ndarray:
        if size == channels:
            return np.arange(channels)
        if size == 1:
            return np.full(channels, -1)
        raise UnsupportedLayerError(
            f"{self.describe(spec)} broadcasts a {what}{size} channels to {channels}")

    def weight_axes(self, spec: LayerSpec, axes: Sequence[int | None]) -> list[WeightAxis]:
        axis = next((a for a in axes if a is not None), None)
        if axis is None:
            return []
        return [WeightAxis(name, axis, OUT) for name, value in spec.constants.items()
                if int(value.shape[axis]) > 1]

    def flops(self, spec: LayerSpec, in_shapes: Sequence[Shape], out_shape: Shape) -> int:
        operands = len(in_shapes) + len(spec.constants)
        return self.flops_per_value * max(operands - 1, 1) * out_shape_size(out_shape)


def _einsum_parts(spec: LayerSpec) -> tuple[str, str, str]:
    """``(input, kernel, output)`` subscripts of an EinsumDense equation, without ``...``."""
    equation = str(spec.attrs.get("equation", "")).replace(" ", "")
    match = re.fullmatch(r"(\.\.\.)?([a-zA-Z]+),([a-zA-Z]+)->(\.\.\.)?([a-zA-Z]+)", equation)
    if match is None or bool(match.group(1)) != bool(match.group(4)):
        raise UnsupportedLayerError(
            f"layer '{spec.name}' ({spec.kind}) has the equation {equation!r}; kerasprune "
            "supports equations like 'ab,bc->ac' or '...b,bc->...c'")
    return match.group(2), match.group(3), match.group(5)


class EinsumDense(Rule):
    """EinsumDense whose input's last axis is contracted with the kernel and whose output's
    last axis comes from the kernel (``"abc,cd->abd"``, ``"...b,bc->...c"``): a Dense on the
    last axis, whatever the kernel's other axes. Its ``output_shape`` follows the units."""

    targetable = True
    slices = frozenset({"kernel", "bias", "lora_kernel_a", "lora_kernel_b"})

    def _chars(self, spec: LayerSpec) -> tuple[str, str, str, str, str]:
        inp, kernel, out = _einsum_parts(spec)
        read, made = inp[-1], out[-1]
        if read in out or read not in kernel or inp.count(read) != 1:
            raise UnsupportedLayerError(
                f"{self.describe(spec)} does not contract its input's last axis with the "
                f"kernel ({spec.attrs.get('equation')!r})")
        if made in inp or made not in kernel:
            raise UnsupportedLayerError(
                f"{self.describe(spec)} does not take its output's last axis from the kernel "
                f"({spec.attrs.get('equation')!r})")
        return inp, kernel, out, read, made

    def link(self, spec: LayerSpec, in_shapes: Sequence[Shape], out_shape: Shape,
             axis: int) -> Link | None:
        self._chars(spec)
        return None

    def in_axis(self, spec: LayerSpec, in_shape: Shape) -> int:
        return len(in_shape) - 1

    def out_axis(self, spec: LayerSpec, out_shape: Shape) -> int:
        self._chars(spec)
        return len(out_shape) - 1

    def output_coupling(self, spec: LayerSpec) -> str | None:
        return _own_coupling(spec)

    def weight_axes(self, spec: LayerSpec, axes: Sequence[int | None]) -> list[WeightAxis]:
        _, kernel, _, read, made = self._chars(spec)
        last = len(kernel) - 1
        found = [WeightAxis("kernel", kernel.index(read), 0),
                 WeightAxis("kernel", kernel.index(made), OUT)]
        for char, space in ((read, 0), (made, OUT)):
            k = kernel.index(char)  # LoRA: a holds the kernel's axes but the last, b the last
            found.append(WeightAxis("lora_kernel_b", 1, space) if k == last
                         else WeightAxis("lora_kernel_a", k, space))
        bias_axes = str(spec.attrs.get("bias_axes") or "")
        if made in bias_axes:
            found.append(WeightAxis("bias", -1, OUT))
        return found

    def attr_updates(self, spec: LayerSpec, in_shapes: Sequence[Shape], out_shape: Shape,
                     axes: Sequence[int | None]) -> dict[str, Any]:
        shape = spec.attrs.get("output_shape")
        if isinstance(shape, int):
            return {"output_shape": out_shape[-1]}
        new = list(shape or [])
        if new:
            new[-1] = out_shape[-1]
        return {"output_shape": tuple(new)}

    def flops(self, spec: LayerSpec, in_shapes: Sequence[Shape], out_shape: Shape) -> int:
        kernel_shape = [int(d) for d in spec.weights["kernel"].shape]
        try:
            _, kernel, out, _, _ = self._chars(spec)
        except PruneError:
            return 0
        contracted = math.prod(d for c, d in zip(kernel, kernel_shape, strict=False)
                               if c not in out)
        bias = out_shape_size(out_shape) if "bias" in spec.weights else 0
        return 2 * contracted * out_shape_size(out_shape) + bias


RULES: dict[str, Rule] = {}
"""Rule for each layer kind, by kind name (Keras class names)."""


def register(rule: Rule, *kinds: str) -> None:
    """Register ``rule`` for the given kinds (replacing any earlier rule)."""
    for kind in kinds:
        RULES[kind] = rule


def rule_for(kind: str) -> Rule:
    """The rule for ``kind``; kinds without one cannot carry deletions."""
    return RULES.get(kind) or _UNKNOWN


def op_kind(class_name: str) -> str:
    """The kind of an operation of a functional graph: ``"op:"`` and its class name in snake
    case (``NotEqual`` -> ``"op:not_equal"``, ``Relu6`` -> ``"op:relu6"``)."""
    snake = re.sub(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])", "_", class_name)
    return f"op:{snake.lower()}"


_COMMON_KINDS = ("Dense", "Conv2D", "DepthwiseConv2D", "BatchNormalization", "ReLU", "Add",
                 "Concatenate", "Flatten", "MaxPooling2D", "op:multiply")


def related_kinds(kind: str, most: int = 8) -> list[str]:
    """A few supported kinds to name when ``kind`` has no rule: close spellings of it first,
    then common ones."""
    supported = supported_kinds()
    close = difflib.get_close_matches(kind, supported, n=4, cutoff=0.6)
    family = [k for k in supported if k.startswith("op:")] if kind.startswith("op:") else []
    close += difflib.get_close_matches(kind, family, n=3, cutoff=0.3)
    return list(dict.fromkeys([*close, *_COMMON_KINDS]))[:most]


class _Unknown(Rule):
    """The rule of kinds that have none: they cannot carry a deletion, and the error names a
    few kinds that can and where to find them all."""

    def link(self, spec: LayerSpec, in_shapes: Sequence[Shape], out_shape: Shape,
             axis: int) -> Link | None:
        what = "operations" if spec.kind.startswith("op:") else "layers"
        raise UnsupportedLayerError(
            f"{self.describe(spec)} cannot pass a channel deletion: kerasprune has no rule for "
            f"{spec.kind} {what}. The kinds it supports are, e.g., "
            f"{', '.join(related_kinds(spec.kind))} ({len(supported_kinds())} in all: "
            "kerasprune.core.supported_kinds(); kerasprune.core.register adds one)")


_UNKNOWN = _Unknown()

# --- layers --------------------------------------------------------------------------------
register(Producer("units", 0, 1, channels_first_capable=False), "Dense")
register(EinsumDense(), "EinsumDense")
register(Producer("filters", -2, -1), "Conv1D", "Conv2D", "Conv3D")
register(Transposed(), "Conv1DTranspose", "Conv2DTranspose", "Conv3DTranspose")
register(Separable(), "SeparableConv1D", "SeparableConv2D")
register(Embedding(), "Embedding")
register(Depthwise(), "DepthwiseConv1D", "DepthwiseConv2D")
register(NoiseShaped(), "Dropout", "AlphaDropout")
register(Elementwise(), "GaussianNoise", "GaussianDropout", "ActivityRegularization",
         "Identity")
register(ReLU(flops_per_value=1), "ReLU")
register(Elementwise(flops_per_value=1), "LeakyReLU", "ELU")
register(Activation(flops_per_value=1), "Activation")
register(PReLU(flops_per_value=1), "PReLU")
register(Softmax(flops_per_value=3), "Softmax")
register(BatchNorm(), "BatchNormalization")
register(PerChannel(), "SpatialDropout1D", "SpatialDropout2D", "SpatialDropout3D",
         "ZeroPadding1D", "ZeroPadding2D", "ZeroPadding3D", "Cropping1D", "Cropping2D",
         "Cropping3D", "UpSampling1D", "UpSampling2D", "UpSampling3D")
register(Pooling(), "MaxPooling1D", "MaxPooling2D", "MaxPooling3D", "AveragePooling1D",
         "AveragePooling2D", "AveragePooling3D")
register(GlobalPooling(), *(f"Global{op}Pooling{d}D" for op in ("Max", "Average")
                            for d in (1, 2, 3)))
register(Flatten(), "Flatten")
register(Reshape(), "Reshape")
register(Merge(), "Add", "Subtract", "Multiply", "Average", "Maximum", "Minimum")
register(Concatenate(), "Concatenate")
# keras.applications' own layers: InceptionResNetV2's ``a + scale * b``, ConvNeXt's
# ``x * gamma``. The adapter gives these kinds only to the classes of keras.applications.
register(Merge(), "CustomScaleLayer")
register(ChannelScale("projection_dim"), "LayerScale")
_STATS = "it normalises over the channels, so deleting one changes the others"
register(Unsupported(_STATS), "LayerNormalization", "GroupNormalization",
         "UnitNormalization", "RMSNormalization")
register(Unsupported("attention mixes its channels across heads and positions"),
         "Attention", "AdditiveAttention", "MultiHeadAttention", "GroupedQueryAttention")
register(Unsupported("a recurrent layer mixes its input channels into every unit at every "
                     "step; kerasprune does not prune recurrent layers yet"),
         "LSTM", "GRU", "SimpleRNN", "RNN", "Bidirectional", "ConvLSTM1D", "ConvLSTM2D",
         "ConvLSTM3D", "TimeDistributed")
register(Unsupported("its mask is computed from every channel, so deleting one changes it"),
         "Masking")

# --- operations of functional graphs (keras.ops on symbolic tensors) -------------------------
_UNARY_OPS = (
    "abs", "absolute", "arccos", "arccosh", "arcsin", "arcsinh", "arctan", "arctanh", "cbrt",
    "ceil", "conj", "conjugate", "copy", "cos", "cosh", "deg2rad", "exp", "exp2", "expm1",
    "fabs", "floor", "isfinite", "isinf", "isnan", "isneginf", "isposinf", "log", "log10",
    "log1p", "log2", "logical_not", "nan_to_num", "negative", "rad2deg", "reciprocal",
    "round", "sign", "signbit", "sin", "sinc", "sinh", "sqrt", "square", "tan", "tanh",
    "trunc", "bitwise_invert", "bitwise_not", "zeros_like", "ones_like", "full_like",
    "empty_like", "clip", "cast", "saturate_cast", "stop_gradient", "convert_to_tensor",
    "sigmoid", "softplus", "softsign", "soft_shrink", "sparse_plus", "silu", "swish",
    "squareplus", "log_sigmoid", "leaky_relu", "hard_sigmoid", "hard_silu", "hard_swish",
    "elu", "selu", "gelu", "celu", "hard_tanh", "hard_shrink", "threshold", "tanh_shrink",
    "sparse_sigmoid", "erf", "erfc", "erfinv", "rsqrt")
_BROADCAST_OPS = (
    "add", "subtract", "multiply", "divide", "true_divide", "divide_no_nan", "floor_divide",
    "mod", "fmod", "power", "maximum", "minimum", "fmax", "fmin", "arctan2", "hypot",
    "logaddexp", "logaddexp2", "heaviside", "copysign", "nextafter", "equal", "not_equal",
    "greater", "greater_equal", "less", "less_equal", "logical_and", "logical_or",
    "logical_xor", "bitwise_and", "bitwise_or", "bitwise_xor", "where")
register(ReLU(flops_per_value=1), "op:relu", "op:relu6")
register(Elementwise(flops_per_value=1), *(f"op:{name}" for name in _UNARY_OPS))
register(Broadcast(), *(f"op:{name}" for name in _BROADCAST_OPS))
register(Softmax(flops_per_value=3), "op:softmax", "op:log_softmax")
register(Concatenate(), "op:concatenate")


def supported_kinds() -> list[str]:
    """Kinds that can carry a deletion, sorted."""
    return sorted(k for k, r in RULES.items() if not isinstance(r, Unsupported))
