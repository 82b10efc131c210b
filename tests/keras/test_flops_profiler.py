"""kerasprune's FLOPs of Dense and convolution layers against TensorFlow's own profiler.

The profiler (``tf.compat.v1.profiler`` with ``float_operation()``) counts the floating-point
operations of a concrete function's graph, a multiply-add as two and a bias add as one per
value: the convention of :mod:`kerasprune.core.cost`. Dense, Conv1D/2D/3D, depthwise and
separable convolutions must match it exactly. Transposed convolutions are counted differently
by the two, and each is checked against its own formula: kerasprune counts the multiply-adds
the layer does (every input position times the kernel, ``2 * in_positions * prod(kernel)``),
the profiler the convolution over the padded input that computes it, one kernel product per
output position over the strides (``2 * out_positions / prod(strides) * prod(kernel)``,
products with padding zeros included; the two agree when the strides equal the kernel size),
and it has no count for ``Conv3DTranspose`` at all (only its bias add).

TensorFlow backend only (the profiler reads TensorFlow graphs); the same FLOPs hold on every
backend since kerasprune computes them from shapes.
"""

from __future__ import annotations

import math
from typing import Any

import keras
import pytest
from backends import BACKEND

import kerasprune

pytestmark = pytest.mark.skipif(BACKEND != "tensorflow",
                                reason="TensorFlow's profiler reads TensorFlow graphs")
L = keras.layers


def profiled_flops(model: keras.Model) -> int:
    """TensorFlow's count of the float operations of one sample through ``model``."""
    import tensorflow as tf

    specs = [tf.TensorSpec([1, *t.shape[1:]], t.dtype) for t in model.inputs]
    graph = tf.function(lambda x: model(x, training=False)).get_concrete_function(*specs).graph
    options = tf.compat.v1.profiler.ProfileOptionBuilder.float_operation()
    options["output"] = "none"
    return int(tf.compat.v1.profiler.profile(graph=graph, cmd="op",
                                             options=options).total_float_ops)


def ours(model: keras.Model) -> int:
    (layer,) = [c for c in kerasprune.costs(model) if c.params]
    return int(layer.flops)


MATCHING: dict[str, tuple[tuple[int, ...], Any]] = {
    "dense": ((3,), lambda: L.Dense(4)),
    "dense_rank3_no_bias": ((5, 3), lambda: L.Dense(4, use_bias=False)),
    "conv1d": ((10, 4), lambda: L.Conv1D(6, 3)),
    "conv2d": ((8, 8, 2), lambda: L.Conv2D(5, 3)),
    "conv2d_strided_same": ((9, 9, 3), lambda: L.Conv2D(4, 3, strides=2, padding="same")),
    "conv3d": ((5, 5, 5, 3), lambda: L.Conv3D(4, 2)),
    "depthwise_conv1d": ((10, 3), lambda: L.DepthwiseConv1D(3, depth_multiplier=2)),
    "depthwise_conv2d": ((8, 8, 3), lambda: L.DepthwiseConv2D(3, depth_multiplier=2)),
    "separable_conv1d": ((10, 2), lambda: L.SeparableConv1D(5, 3, depth_multiplier=2)),
    "separable_conv2d": ((8, 8, 2), lambda: L.SeparableConv2D(5, 3, depth_multiplier=2)),
}


@pytest.mark.parametrize("name", list(MATCHING))
def test_flops_equal_tensorflows_profiler(name: str) -> None:
    shape, make = MATCHING[name]
    model = keras.Sequential([keras.Input(shape), make()])
    assert ours(model) == profiled_flops(model)


TRANSPOSED: dict[str, tuple[tuple[int, ...], Any]] = {
    "conv1d_transpose": ((4, 2), lambda: L.Conv1DTranspose(5, 3)),
    "conv2d_transpose": ((4, 4, 2), lambda: L.Conv2DTranspose(5, 3)),
    "conv2d_transpose_strided": ((4, 4, 2), lambda: L.Conv2DTranspose(3, 2, strides=2)),
}


@pytest.mark.parametrize("name", list(TRANSPOSED))
def test_transposed_flops_by_each_convention(name: str) -> None:
    shape, make = TRANSPOSED[name]
    model = keras.Sequential([keras.Input(shape), make()])
    layer = model.layers[-1]
    kernel = math.prod(layer.kernel.shape)
    out_shape = tuple(model.outputs[0].shape[1:])
    bias = math.prod(out_shape)
    in_positions = math.prod(shape[:-1])
    out_positions = math.prod(out_shape[:-1])
    assert ours(model) == 2 * kernel * in_positions + bias
    strides = math.prod(layer.strides)
    assert profiled_flops(model) == 2 * kernel * out_positions // strides + bias


def test_conv3d_transpose_is_counted_by_hand() -> None:
    model = keras.Sequential([keras.Input((3, 3, 3, 2)), L.Conv3DTranspose(4, 2)])
    out_values = 4 * 4 * 4 * 4
    assert ours(model) == 2 * (2 * 2 * 2 * 4 * 2) * 27 + out_values
    assert profiled_flops(model) == out_values  # the profiler counts only the bias add
