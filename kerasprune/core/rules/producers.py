"""Layers that make channels of their own: Dense, convolutions, transposed and separable
convolutions, Embedding, EinsumDense. Their neurons are what a user deletes; deleting their
input channels drops rows of their kernels."""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from typing import Any

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

    def own_neuron_axis(self, spec: LayerSpec, out_shape: Shape) -> int | None:
        return None if self.why_not_targetable(spec) else self.out_axis(spec, out_shape)

    def link(self, spec: LayerSpec, in_shapes: Sequence[Shape], out_shape: Shape,
             axis: int) -> Link | None:
        return None

    def in_axis(self, spec: LayerSpec, in_shape: Shape) -> int:
        return format_axis(spec, len(in_shape)) if self.channels_first_capable else len(
            in_shape) - 1

    def out_axis(self, spec: LayerSpec, out_shape: Shape) -> int:
        return self.in_axis(spec, out_shape)

    def output_coupling(self, spec: LayerSpec) -> str | None:
        return own_coupling(spec)

    def weight_axes(self, spec: LayerSpec, axes: Sequence[int | None]) -> list[WeightAxis]:
        return [WeightAxis("kernel", self.kernel_in, 0), WeightAxis("kernel", self.kernel_out, OUT),
                WeightAxis("bias", 0, OUT), WeightAxis("lora_kernel_a", self.kernel_in, 0),
                WeightAxis("lora_kernel_b", -1, OUT)]

    def attr_updates(self, spec: LayerSpec, in_shapes: Sequence[Shape], out_shape: Shape,
                     axes: Sequence[int | None]) -> dict[str, Any]:
        return {self.count_attr: out_shape[self.out_axis(spec, out_shape)]}

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


def _einsum_parts(spec: LayerSpec) -> tuple[str, str, str] | str:
    """``(input, kernel, output)`` subscripts of an EinsumDense equation, without ``...``;
    or why the equation is not supported."""
    equation = str(spec.attrs.get("equation", "")).replace(" ", "")
    match = re.fullmatch(r"(\.\.\.)?([a-zA-Z]+),([a-zA-Z]+)->(\.\.\.)?([a-zA-Z]+)", equation)
    if match is None or bool(match.group(1)) != bool(match.group(4)):
        return (f"layer '{spec.name}' ({spec.kind}) has the equation {equation!r}; kerasprune "
                "supports equations like 'ab,bc->ac' or '...b,bc->...c'")
    return match.group(2), match.group(3), match.group(5)


class EinsumDense(Rule):
    """EinsumDense whose input's last axis is contracted with the kernel and whose output's
    last axis comes from the kernel (``"abc,cd->abd"``, ``"...b,bc->...c"``): a Dense on the
    last axis, whatever the kernel's other axes. Its ``output_shape`` follows the units."""

    targetable = True
    slices = frozenset({"kernel", "bias", "lora_kernel_a", "lora_kernel_b"})

    def _parsed(self, spec: LayerSpec) -> tuple[str, str, str, str, str] | str:
        """The equation's input, kernel and output subscripts, the input axis read and the
        output axis made; or why the layer is not supported."""
        parts = _einsum_parts(spec)
        if isinstance(parts, str):
            return parts
        inp, kernel, out = parts
        read, made = inp[-1], out[-1]
        if read in out or read not in kernel or inp.count(read) != 1:
            return (f"{self.describe(spec)} does not contract its input's last axis with the "
                    f"kernel ({spec.attrs.get('equation')!r})")
        if made in inp or made not in kernel:
            return (f"{self.describe(spec)} does not take its output's last axis from the "
                    f"kernel ({spec.attrs.get('equation')!r})")
        return inp, kernel, out, read, made

    def _chars(self, spec: LayerSpec) -> tuple[str, str, str, str, str]:
        """:meth:`_parsed`, raising :class:`UnsupportedLayerError` for a refused layer."""
        found = self._parsed(spec)
        if isinstance(found, str):
            raise UnsupportedLayerError(found)
        return found

    def why_not_targetable(self, spec: LayerSpec) -> str | None:
        found = self._parsed(spec)
        return found if isinstance(found, str) else None

    def own_neuron_axis(self, spec: LayerSpec, out_shape: Shape) -> int | None:
        return None if self.why_not_targetable(spec) else len(out_shape) - 1

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
        return own_coupling(spec)

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
        found = self._parsed(spec)
        if isinstance(found, str):
            return 0
        _, kernel, out, _, _ = found
        contracted = math.prod(d for c, d in zip(kernel, kernel_shape, strict=False)
                               if c not in out)
        bias = out_shape_size(out_shape) if "bias" in spec.weights else 0
        return 2 * contracted * out_shape_size(out_shape) + bias

