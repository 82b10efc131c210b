"""Layers that make channels of their own: Dense, convolutions, transposed and separable
convolutions, Embedding, EinsumDense. Their neurons are what a user deletes; deleting their
input channels drops rows of their kernels."""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from kerasprune.core.graph import LayerSpec, Shape
from kerasprune.core.rules.base import (
    OUT,
    Link,
    Rule,
    UnsupportedLayerError,
    WeightAxis,
    format_axis,
    out_shape_size,
    own_coupling,
    spatial_positions,
)

__all__ = ["EinsumDense", "Embedding", "Producer", "Separable", "Transposed"]


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

    def _grouping(self, spec: LayerSpec) -> int | str | None:
        """For a grouped convolution with one input channel per group (a depthwise
        convolution written ``Conv2D(groups=C)``, as in ConvNeXt): how many outputs each
        group makes. ``None`` for an ordinary layer; for other grouped convolutions, why they
        are refused."""
        groups = int(spec.attrs.get("groups", 1) or 1)
        if groups == 1:
            return None
        kernel = spec.weights.get("kernel")
        if kernel is not None and int(kernel.shape[-2]) == 1:
            return max(int(kernel.shape[-1]) // groups, 1)
        return (f"layer '{spec.name}' ({spec.kind}) is a grouped convolution (groups={groups}) "
                "with several input channels per group: deleting channels would unbalance its "
                "groups")

    def _multiplier(self, spec: LayerSpec) -> int | None:
        """:meth:`_grouping`, raising :class:`UnsupportedLayerError` for a refused layer."""
        found = self._grouping(spec)
        if isinstance(found, str):
            raise UnsupportedLayerError(found)
        return found

    def why_not_targetable(self, spec: LayerSpec) -> str | None:
        found = self._grouping(spec)
        return found if isinstance(found, str) else None

    def own_neuron_axis(self, spec: LayerSpec, out_shape: Shape) -> int | None:
        return None if self.why_not_targetable(spec) else self.out_axis(spec, out_shape)

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
        return format_axis(spec, len(in_shape)) if self.channels_first_capable else len(
            in_shape) - 1

    def out_axis(self, spec: LayerSpec, out_shape: Shape) -> int:
        self._multiplier(spec)
        return self.in_axis(spec, out_shape)

    def output_coupling(self, spec: LayerSpec) -> str | None:
        return own_coupling(spec)

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
        positions = spatial_positions(out_shape, self.out_axis(spec, out_shape))
        macs = math.prod(int(d) for d in kernel) * positions
        bias = out_shape_size(out_shape) if "bias" in spec.weights else 0
        return 2 * macs + bias



class Transposed(Producer):
    """ConvNDTranspose: the kernel is ``(*k, out, in)`` and each input position scatters."""

    slices = frozenset({"kernel", "bias"})

    def __init__(self) -> None:
        super().__init__("filters", -1, -2)

    def flops(self, spec: LayerSpec, in_shapes: Sequence[Shape], out_shape: Shape) -> int:
        kernel = spec.weights["kernel"].shape
        in_positions = spatial_positions(in_shapes[0], self.in_axis(spec, in_shapes[0]))
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
        positions = spatial_positions(out_shape, self.out_axis(spec, out_shape))
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
        raise UnsupportedLayerError(self._reads_ids(spec))

    def why_not_read(self, spec: LayerSpec) -> str | None:
        return self._reads_ids(spec)

    def _reads_ids(self, spec: LayerSpec) -> str:
        return f"{self.describe(spec)} reads integer ids, not channels"

    def out_axis(self, spec: LayerSpec, out_shape: Shape) -> int:
        return len(out_shape) - 1

    def weight_axes(self, spec: LayerSpec, axes: Sequence[int | None]) -> list[WeightAxis]:
        return [WeightAxis("embeddings", 1, OUT), WeightAxis("lora_embeddings_b", 1, OUT)]

    def flops(self, spec: LayerSpec, in_shapes: Sequence[Shape], out_shape: Shape) -> int:
        return 0


@dataclass(frozen=True)
class _Equation:
    """An EinsumDense equation read for channels: the input, kernel and output subscripts
    (batch included, a leading ``...`` left out), the input axis the kernel reads
    channels on (``read``: the last input axis it contracts) and the output axis it makes its
    neurons on (``made``: the last output axis that comes from the kernel alone)."""

    inp: str
    kernel: str
    out: str
    read: str | None
    made: str | None

    def axis(self, spec: str, char: str, rank: int) -> int:
        """The axis (without batch) of ``char`` of ``spec`` in a tensor of ``rank`` axes."""
        return rank - (len(spec) - spec.index(char))


_FORMS = "'abc,cd->abd', 'abc,cde->abde' or '...b,bc->...c' ('...' on the left)"


def _equation(spec: LayerSpec) -> _Equation | str:
    """The layer's equation, read; or why kerasprune cannot read channels through it."""
    equation = str(spec.attrs.get("equation", "")).replace(" ", "")
    where = f"layer '{spec.name}' ({spec.kind}) has the equation {equation!r}"
    match = re.fullmatch(r"(\.\.\.)?([a-zA-Z]+),([a-zA-Z]+)->(\.\.\.)?([a-zA-Z]+)", equation)
    if match is None:
        return f"{where}; kerasprune reads equations like {_FORMS}"
    left_in, inp, kernel, left_out, out = match.groups()
    if bool(left_in) != bool(left_out):
        return f"{where}: '...' on one side only; kerasprune reads equations like {_FORMS}"
    if not left_in and inp[0] != out[0]:
        return f"{where}: its output does not start with the batch axis '{inp[0]}'"
    if any(inp.count(c) > 1 or kernel.count(c) > 1 or out.count(c) > 1 for c in inp + kernel):
        return f"{where}: a repeated subscript (a trace or a diagonal)"
    contracted = [c for c in inp if c in kernel and c not in out]
    made = [c for c in out if c in kernel and c not in inp]
    return _Equation(inp, kernel, out, contracted[-1] if contracted else None,
                     made[-1] if made else None)


class EinsumDense(Rule):
    """EinsumDense, read from its equation: its neurons lie on the last output axis that comes
    from the kernel alone (``d`` in ``"abc,cd->abd"``, ``e`` in ``"abc,cde->abde"``, whose
    ``d`` axis is kept whole), and it reads channels on the last input axis it contracts
    (``c``; ``d`` in ``"abcd,cde->abe"``). Those subscripts name the kernel's axes to slice,
    and the bias's last axis if ``bias_axes`` names the neurons' subscript. Its
    ``output_shape`` follows the neurons. Equations that move the batch axis, use a subscript
    twice or put ``...`` on one side only or on the right are refused, with the reason."""

    targetable = True
    slices = frozenset({"kernel", "bias", "lora_kernel_a", "lora_kernel_b"})

    def _read(self, spec: LayerSpec) -> _Equation:
        found = _equation(spec)
        if isinstance(found, str):
            raise UnsupportedLayerError(found)
        return found

    def why_not_targetable(self, spec: LayerSpec) -> str | None:
        found = _equation(spec)
        if isinstance(found, str):
            return found
        if found.made is None:
            return (f"{self.describe(spec)} makes no output axis from its kernel alone "
                    f"({spec.attrs.get('equation')!r}): it has no neurons of its own")
        return None

    def why_not_read(self, spec: LayerSpec) -> str | None:
        found = _equation(spec)
        if isinstance(found, str):
            return found
        if found.read is None:
            return (f"{self.describe(spec)} contracts no input axis with its kernel "
                    f"({spec.attrs.get('equation')!r}): it reads no channels")
        return None

    def own_neuron_axis(self, spec: LayerSpec, out_shape: Shape) -> int | None:
        return None if self.why_not_targetable(spec) else self.out_axis(spec, out_shape)

    def link(self, spec: LayerSpec, in_shapes: Sequence[Shape], out_shape: Shape,
             axis: int) -> Link | None:
        reason = self.why_not_targetable(spec)
        if reason is not None:
            raise UnsupportedLayerError(reason)
        return None

    def in_axis(self, spec: LayerSpec, in_shape: Shape) -> int:
        reason = self.why_not_read(spec)
        if reason is not None:
            raise UnsupportedLayerError(reason)
        eq = self._read(spec)
        assert eq.read is not None
        return eq.axis(eq.inp, eq.read, len(in_shape))

    def out_axis(self, spec: LayerSpec, out_shape: Shape) -> int:
        reason = self.why_not_targetable(spec)
        if reason is not None:
            raise UnsupportedLayerError(reason)
        eq = self._read(spec)
        assert eq.made is not None
        return eq.axis(eq.out, eq.made, len(out_shape))

    def output_coupling(self, spec: LayerSpec) -> str | None:
        return own_coupling(spec)

    def weight_axes(self, spec: LayerSpec, axes: Sequence[int | None]) -> list[WeightAxis]:
        eq = self._read(spec)
        kernel, last = eq.kernel, len(eq.kernel) - 1
        chars = [(c, space) for c, space in ((eq.read, 0), (eq.made, OUT)) if c is not None]
        found = [WeightAxis("kernel", kernel.index(c), space) for c, space in chars]
        for c, space in chars:  # LoRA: a holds the kernel's axes but the last, b the last
            k = kernel.index(c)
            found.append(WeightAxis("lora_kernel_b", 1, space) if k == last
                         else WeightAxis("lora_kernel_a", k, space))
        bias_axes = str(spec.attrs.get("bias_axes") or "")
        if eq.made is not None and eq.made in bias_axes:  # the bias spans the output's axes
            found.append(WeightAxis("bias", eq.out.index(eq.made) - len(eq.out), OUT))
        return found

    def attr_updates(self, spec: LayerSpec, in_shapes: Sequence[Shape], out_shape: Shape,
                     axes: Sequence[int | None]) -> dict[str, Any]:
        shape = spec.attrs.get("output_shape")
        axis = self.out_axis(spec, out_shape)
        if isinstance(shape, int):
            return {"output_shape": out_shape[axis]}
        new = list(shape or [])
        if new:  # output_shape lists the output's axes but the batch (or the trailing ones)
            new[axis - len(out_shape)] = out_shape[axis]
        return {"output_shape": tuple(new)}

    def flops(self, spec: LayerSpec, in_shapes: Sequence[Shape], out_shape: Shape) -> int:
        kernel_shape = [int(d) for d in spec.weights["kernel"].shape]
        found = _equation(spec)
        if isinstance(found, str):
            return 0
        contracted = math.prod(d for c, d in zip(found.kernel, kernel_shape, strict=False)
                               if c not in found.out)
        bias = out_shape_size(out_shape) if "bias" in spec.weights else 0
        return 2 * contracted * out_shape_size(out_shape) + bias
