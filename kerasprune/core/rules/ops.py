"""The operations of functional graphs (``keras.ops`` on symbolic tensors), as kinds of their own.

Their kind is ``"op:"`` and the operation's class name in snake case (:func:`op_kind`):
``x * 2.0`` is ``"op:multiply"``, ``keras.ops.relu(x)`` is ``"op:relu"``, since ``keras.ops``
and ``keras.layers`` share class names (``Add``, ``Multiply``). Most are element-wise; those
of several operands broadcast them (:class:`Broadcast`)."""

from __future__ import annotations

import re
from collections.abc import Sequence

import numpy as np

from kerasprune.core.graph import LayerSpec, Shape
from kerasprune.core.rules.base import (
    OUT,
    Link,
    Rule,
    UnsupportedLayerError,
    WeightAxis,
    out_shape_size,
)

__all__ = ["BROADCAST_OPS", "UNARY_OPS", "Broadcast", "op_kind"]


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



def op_kind(class_name: str) -> str:
    """The kind of an operation of a functional graph: ``"op:"`` and its class name in snake
    case (``NotEqual`` -> ``"op:not_equal"``, ``Relu6`` -> ``"op:relu6"``)."""
    snake = re.sub(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])", "_", class_name)
    return f"op:{snake.lower()}"


UNARY_OPS = (
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
"""Element-wise operations of one tensor."""

BROADCAST_OPS = (
    "add", "subtract", "multiply", "divide", "true_divide", "divide_no_nan", "floor_divide",
    "mod", "fmod", "power", "maximum", "minimum", "fmax", "fmin", "arctan2", "hypot",
    "logaddexp", "logaddexp2", "heaviside", "copysign", "nextafter", "equal", "not_equal",
    "greater", "greater_equal", "less", "less_equal", "logical_and", "logical_or",
    "logical_xor", "bitwise_and", "bitwise_or", "bitwise_xor", "where")
"""Element-wise operations of several operands that broadcast."""
