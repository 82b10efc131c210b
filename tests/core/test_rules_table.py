"""Every rule, by table: its link, weight axes, attribute updates, params and FLOPs, against
values worked out by hand (NumPy only).

Shapes are without the batch axis. FLOPs follow :mod:`kerasprune.core.cost`'s convention: one
sample's forward pass, a multiply-add counted as two, a bias add as one per output value.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pytest

from kerasprune.core import rules
from kerasprune.core.cost import count
from kerasprune.core.graph import Graph, LayerSpec, Node, PruneError, Shape
from kerasprune.core.plan import ShapeOnly
from kerasprune.core.rules import OUT, RULES, Link, WeightAxis, rule_for


def spec(kind: str, weights: dict[str, tuple[int, ...]] | None = None, **attrs: Any) -> LayerSpec:
    return LayerSpec("x", kind, attrs, {k: ShapeOnly(v) for k, v in (weights or {}).items()})


def ar(*values: int) -> np.ndarray:
    return np.array(values)


@dataclass(frozen=True)
class Row:
    """One layer and what its rule must say about it.

    ``link`` is the expected link (``None``: makes its own channels), or a string the refusal
    must contain. ``weight_axes`` and ``attrs`` are checked when not ``None``; ``attrs`` is
    the update for the tensors shrunk to ``new_in`` / ``new_out`` with channels lost on
    ``axis``. ``flops`` is worked out by hand for ``in_shapes`` -> ``out_shape``.
    """

    id: str
    layer: LayerSpec
    in_shapes: tuple[Shape, ...]
    out_shape: Shape
    axis: int
    link: Link | str | None
    weight_axes: list[WeightAxis] | None = None
    attrs: dict[str, Any] | None = None
    new_in: tuple[Shape, ...] = ()
    new_out: Shape = ()
    flops: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)


ROWS = [
    Row("dense", spec("Dense", {"kernel": (3, 4), "bias": (4,)}, units=4), ((3,),), (4,), 0,
        None,
        [WeightAxis("kernel", 0, 0), WeightAxis("kernel", 1, OUT), WeightAxis("bias", 0, OUT),
         WeightAxis("lora_kernel_a", 0, 0), WeightAxis("lora_kernel_b", -1, OUT)],
        {"units": 3}, ((3,),), (3,), flops=2 * 3 * 4 + 4),
    Row("conv2d", spec("Conv2D", {"kernel": (3, 3, 2, 5), "bias": (5,)}, filters=5,
                       data_format="channels_last"), ((8, 8, 2),), (6, 6, 5), 2, None,
        [WeightAxis("kernel", -2, 0), WeightAxis("kernel", -1, OUT), WeightAxis("bias", 0, OUT),
         WeightAxis("lora_kernel_a", -2, 0), WeightAxis("lora_kernel_b", -1, OUT)],
        {"filters": 4}, ((8, 8, 2),), (6, 6, 4), flops=2 * (3 * 3 * 2) * 5 * 36 + 6 * 6 * 5,
        extra={"in_axis": 2, "out_axis": 2}),
    Row("conv2d_channels_first", spec("Conv2D", {"kernel": (3, 3, 2, 5)}, filters=5,
                                      data_format="channels_first"),
        ((2, 8, 8),), (5, 6, 6), 0, None, flops=2 * (3 * 3 * 2) * 5 * 36,
        extra={"in_axis": 0, "out_axis": 0}),
    Row("conv1d_no_bias", spec("Conv1D", {"kernel": (3, 4, 6)}, filters=6,
                               data_format="channels_last"), ((10, 4),), (8, 6), 1, None,
        flops=2 * 3 * 4 * 6 * 8),
    Row("conv3d", spec("Conv3D", {"kernel": (2, 2, 2, 3, 4), "bias": (4,)}, filters=4,
                       data_format="channels_last"), ((5, 5, 5, 3),), (4, 4, 4, 4), 3, None,
        flops=2 * 8 * 3 * 4 * 64 + 256),
    Row("conv2d_depthwise_groups", spec("Conv2D", {"kernel": (3, 3, 1, 8), "bias": (8,)},
                                        filters=8, groups=4, data_format="channels_last"),
        ((8, 8, 4),), (6, 6, 8), 2, Link(2, (ar(0, 0, 1, 1, 2, 2, 3, 3),)),
        [WeightAxis("kernel", -1, 0, repeat=2), WeightAxis("bias", 0, 0, repeat=2),
         WeightAxis("lora_kernel_b", -1, 0, repeat=2)],
        {"filters": 6, "groups": 3}, ((8, 8, 3),), (6, 6, 6),
        flops=2 * (3 * 3 * 1 * 8) * 36 + 288),
    Row("conv2d_grouped", spec("Conv2D", {"kernel": (3, 3, 2, 4)}, filters=4, groups=2,
                               data_format="channels_last"), ((8, 8, 4),), (6, 6, 4), 2, None,
        [WeightAxis("kernel", -2, 0, fold=2), WeightAxis("kernel", -1, OUT),
         WeightAxis("bias", 0, OUT), WeightAxis("lora_kernel_a", -2, 0, fold=2),
         WeightAxis("lora_kernel_b", -1, OUT)],
        {"filters": 2, "groups": 2}, ((8, 8, 4),), (6, 6, 2), flops=2 * (3 * 3 * 2 * 4) * 36),
    Row("conv2d_transpose", spec("Conv2DTranspose", {"kernel": (3, 3, 5, 2), "bias": (5,)},
                                 filters=5, data_format="channels_last"),
        ((4, 4, 2),), (6, 6, 5), 2, None,
        [WeightAxis("kernel", -1, 0), WeightAxis("kernel", -2, OUT), WeightAxis("bias", 0, OUT),
         WeightAxis("lora_kernel_a", -1, 0), WeightAxis("lora_kernel_b", -1, OUT)],
        {"filters": 3}, ((4, 4, 2),), (6, 6, 3), flops=2 * (3 * 3 * 5 * 2) * 16 + 180),
    Row("separable_conv2d", spec("SeparableConv2D", {"depthwise_kernel": (3, 3, 2, 2),
                                                     "pointwise_kernel": (1, 1, 4, 5),
                                                     "bias": (5,)},
                                 filters=5, depth_multiplier=2, data_format="channels_last"),
        ((8, 8, 2),), (6, 6, 5), 2, None,
        [WeightAxis("depthwise_kernel", -2, 0), WeightAxis("pointwise_kernel", -2, 0, repeat=2),
         WeightAxis("pointwise_kernel", -1, OUT), WeightAxis("bias", 0, OUT)],
        {"filters": 4}, ((8, 8, 2),), (6, 6, 4), flops=2 * (36 + 20) * 36 + 180),
    Row("embedding", spec("Embedding", {"embeddings": (10, 4)}, output_dim=4), ((7,),), (7, 4),
        0, None, [WeightAxis("embeddings", 1, OUT), WeightAxis("lora_embeddings_b", 1, OUT)],
        {"output_dim": 3}, ((7,),), (7, 3), flops=0, extra={"out_axis": 1}),
    Row("einsum_dense", spec("EinsumDense", {"kernel": (3, 4), "bias": (4,)},
                             equation="abc,cd->abd", bias_axes="d", output_shape=(5, 4)),
        ((5, 3),), (5, 4), 1, None,
        [WeightAxis("kernel", 0, 0), WeightAxis("kernel", 1, OUT),
         WeightAxis("lora_kernel_a", 0, 0), WeightAxis("lora_kernel_b", 1, OUT),
         WeightAxis("bias", -1, OUT)],
        {"output_shape": (5, 3)}, ((5, 3),), (5, 3), flops=2 * 3 * 20 + 20),
    Row("einsum_dense_refused", spec("EinsumDense", {"kernel": (3, 4)}, equation="ab,bc->ca"),
        ((3,),), (4, 3), 0, "does not start with the batch axis"),
    Row("einsum_dense_no_neurons", spec("EinsumDense", {"kernel": (3,)}, equation="abc,c->ab"),
        ((5, 3),), (5,), 0, "makes no output axis from its kernel alone"),
    Row("einsum_dense_trace", spec("EinsumDense", {"kernel": (3, 4)}, equation="abb,bc->ac"),
        ((3, 3),), (4,), 0, "repeated subscript"),
    # heads: the kernel's d axis is kept whole, its e axis makes the neurons (output axis 2)
    Row("einsum_dense_heads", spec("EinsumDense", {"kernel": (3, 2, 4), "bias": (2, 4)},
                                   equation="abc,cde->abde", bias_axes="de",
                                   output_shape=(None, 2, 4)),
        ((5, 3),), (5, 2, 4), 1, None,
        [WeightAxis("kernel", 0, 0), WeightAxis("kernel", 2, OUT),
         WeightAxis("lora_kernel_a", 0, 0), WeightAxis("lora_kernel_b", 1, OUT),
         WeightAxis("bias", -1, OUT)],
        {"output_shape": (None, 2, 3)}, ((5, 3),), (5, 2, 3), flops=2 * 3 * 40 + 40,
        extra={"in_axis": 1, "out_axis": 2}),
    # an attention output: contracts heads and dims, reads channels on the dims (axis 2)
    Row("einsum_dense_merge_heads", spec("EinsumDense", {"kernel": (2, 4, 6)},
                                         equation="...cd,cde->...e", output_shape=6),
        ((5, 2, 4),), (5, 6), 2, None,
        [WeightAxis("kernel", 1, 0), WeightAxis("kernel", 2, OUT),
         WeightAxis("lora_kernel_a", 1, 0), WeightAxis("lora_kernel_b", 1, OUT)],
        {"output_shape": 5}, ((5, 2, 4),), (5, 5), flops=2 * 8 * 30,
        extra={"in_axis": 2, "out_axis": 1}),
    # neurons on a middle output axis: "abc,cd->adb" puts them before the sequence axis
    Row("einsum_dense_moved", spec("EinsumDense", {"kernel": (3, 4)}, equation="abc,cd->adb",
                                   output_shape=(4, 5)),
        ((5, 3),), (4, 5), 1, None, None, {"output_shape": (3, 5)}, ((5, 3),), (3, 5),
        extra={"in_axis": 1, "out_axis": 0}),
    Row("depthwise_conv2d", spec("DepthwiseConv2D", {"kernel": (3, 3, 3, 2), "bias": (6,)},
                                 depth_multiplier=2, data_format="channels_last"),
        ((8, 8, 3),), (6, 6, 6), 2, Link(2, (ar(0, 0, 1, 1, 2, 2),)),
        [WeightAxis("kernel", -2, 0), WeightAxis("bias", 0, 0, repeat=2)], {},
        ((8, 8, 2),), (6, 6, 4), flops=2 * 54 * 36 + 216),
    Row("dropout_noise_shape", spec("Dropout", noise_shape=(None, 1, 4)), ((5, 4),), (5, 4), 1,
        Link(1, (ar(0, 1, 2, 3),)), [], {"noise_shape": (None, 1, 3)}, ((5, 3),), (5, 3),
        flops=0),
    Row("dropout_broadcast", spec("Dropout", noise_shape=(None, 5, 1)), ((5, 4),), (5, 4), 1,
        Link(1, (ar(0, 1, 2, 3),)), [], {}, ((5, 3),), (5, 3)),
    Row("gaussian_noise", spec("GaussianNoise"), ((2, 3),), (2, 3), 0, Link(0, (ar(0, 1),)),
        [], {}, flops=0),
    Row("op_tanh", spec("op:tanh"), ((2, 3),), (2, 3), 1, Link(1, (ar(0, 1, 2),)), [], {},
        flops=6, extra={"makes_zeros": False}),
    Row("relu", spec("ReLU"), ((2, 3),), (2, 3), 1, Link(1, (ar(0, 1, 2),)), [], {},
        ((2, 2),), (2, 2), flops=6, extra={"makes_zeros": True}),
    Row("leaky_relu", spec("ReLU", negative_slope=0.1), ((2, 3),), (2, 3), 0,
        Link(0, (ar(0, 1),)), extra={"makes_zeros": False}),
    Row("activation_softmax_last", spec("Activation", activation="softmax"), ((2, 3),), (2, 3),
        1, "normalises over the channels"),
    Row("activation_softmax_other", spec("Activation", activation="softmax"), ((2, 3),), (2, 3),
        0, Link(0, (ar(0, 1),)), flops=6, extra={"makes_zeros": False}),
    Row("softmax_channel_axis", spec("Softmax", axis=-1), ((2, 3),), (2, 3), 1,
        "normalises over the channel axis"),
    Row("softmax_other_axis", spec("Softmax", axis=1), ((2, 3),), (2, 3), 1,
        Link(1, (ar(0, 1, 2),)), flops=18),
    Row("prelu_per_channel", spec("PReLU", {"alpha": (1, 1, 4)}), ((3, 3, 4),), (3, 3, 4), 2,
        Link(2, (ar(0, 1, 2, 3),)), [WeightAxis("alpha", 2, 0)], flops=36),
    Row("prelu_shared", spec("PReLU", {"alpha": (1, 1, 1)}), ((3, 3, 4),), (3, 3, 4), 2,
        Link(2, (ar(0, 1, 2, 3),)), []),
    Row("batch_norm", spec("BatchNormalization", {w: (3,) for w in
                                                  ("gamma", "beta", "moving_mean",
                                                   "moving_variance")}, axis=-1),
        ((4, 4, 3),), (4, 4, 3), 2, Link(2, (ar(0, 1, 2),)),
        [WeightAxis(w, 0, 0) for w in ("gamma", "beta", "moving_mean", "moving_variance")],
        {}, ((4, 4, 2),), (4, 4, 2), flops=2 * 48),
    Row("batch_norm_other_axis", spec("BatchNormalization", axis=1), ((3, 4, 4),), (3, 4, 4), 2,
        "keeps channels on axis 1"),
    Row("zero_padding", spec("ZeroPadding2D", data_format="channels_last"), ((4, 4, 3),),
        (6, 6, 3), 2, Link(2, (ar(0, 1, 2),)), [], {}, flops=0),
    Row("zero_padding_wrong_axis", spec("ZeroPadding2D", data_format="channels_last"),
        ((4, 4, 3),), (6, 6, 3), 0, "keeps channels on axis 3"),
    Row("max_pooling", spec("MaxPooling2D", pool_size=(2, 2), data_format="channels_last"),
        ((4, 4, 3),), (2, 2, 3), 2, Link(2, (ar(0, 1, 2),)), flops=4 * 12),
    Row("global_pooling", spec("GlobalAveragePooling2D", data_format="channels_last"),
        ((4, 4, 3),), (3,), 2, Link(0, (ar(0, 1, 2),)), flops=48),
    Row("global_pooling_keepdims", spec("GlobalMaxPooling2D", data_format="channels_last",
                                        keepdims=True), ((4, 4, 3),), (1, 1, 3), 2,
        Link(2, (ar(0, 1, 2),))),
    Row("flatten", spec("Flatten"), ((2, 2, 3),), (12,), 2,
        Link(0, (ar(0, 1, 2, 0, 1, 2, 0, 1, 2, 0, 1, 2),)), flops=0),
    Row("flatten_channels_first", spec("Flatten", data_format="channels_first"), ((3, 2, 2),),
        (12,), 0, Link(0, (ar(0, 1, 2, 0, 1, 2, 0, 1, 2, 0, 1, 2),))),
    Row("reshape", spec("Reshape", target_shape=(-1, 2, 3)), ((4, 3),), (2, 2, 3), 1,
        Link(2, (ar(0, 1, 2),)), [], {"target_shape": (-1, 2, 2)}, ((4, 2),), (2, 2, 2)),
    Row("reshape_mixing", spec("Reshape", target_shape=(3, 2)), ((2, 3),), (3, 2), 1,
        "mixing the channels"),
    Row("add", spec("Add"), ((4, 3), (4, 3)), (4, 3), 1, Link(1, (ar(0, 1, 2), ar(0, 1, 2))),
        [], {}, flops=12),
    Row("add_broadcast", spec("Add"), ((4, 3), (4, 1)), (4, 3), 1, "broadcasts inputs"),
    Row("concatenate", spec("Concatenate", axis=-1), ((4, 2), (4, 3)), (4, 5), 1,
        Link(1, (ar(0, 1, -1, -1, -1), ar(-1, -1, 0, 1, 2))), flops=0),
    Row("concatenate_other_axis", spec("Concatenate", axis=1), ((2, 3), (4, 3)), (6, 3), 1,
        Link(1, (ar(0, 1, 2), ar(0, 1, 2)))),
    Row("op_multiply_constant", LayerSpec("x", "op:multiply", {},
                                          constants={"c": ShapeOnly((1, 3))}),
        ((4, 3),), (4, 3), 1, Link(1, (ar(0, 1, 2),)), [WeightAxis("c", 1, OUT)], flops=12),
    Row("op_multiply_scalar_like", LayerSpec("x", "op:multiply", {},
                                             constants={"c": ShapeOnly((1, 1))}),
        ((4, 3),), (4, 3), 1, Link(1, (ar(0, 1, 2),)), []),
    Row("op_add_tensors", spec("op:add"), ((4, 3), (4, 1)), (4, 3), 1,
        Link(1, (ar(0, 1, 2), ar(-1, -1, -1))), flops=12),
    Row("op_unaligned", spec("op:multiply", unaligned_constants=True), ((4, 3),), (4, 3), 1,
        "channel axis moves"),
    Row("layer_scale", spec("LayerScale", {"gamma": (3,)}, projection_dim=3), ((4, 3),), (4, 3),
        1, Link(1, (ar(0, 1, 2),)), [WeightAxis("gamma", 0, 0)], {"projection_dim": 2},
        ((4, 2),), (4, 2), flops=12),
    Row("layer_scale_wrong_axis", spec("LayerScale", {"gamma": (3,)}), ((4, 3),), (4, 3), 0,
        "scales the last axis"),
    Row("layer_norm", spec("LayerNormalization", {"gamma": (3,), "beta": (3,)}, axis=[-1],
                            input_rank=2), ((4, 3),), (4, 3), 1,
        Link(1, (ar(0, 1, 2),)), [WeightAxis("gamma", 0, 0), WeightAxis("beta", 0, 0)], {},
        flops=60),
    Row("layer_norm_positions", spec("LayerNormalization", {"gamma": (4,), "beta": (4,)},
                                     axis=1, input_rank=2), ((4, 3),), (4, 3), 1,
        Link(1, (ar(0, 1, 2),)), []),
    Row("rms_norm", spec("RMSNormalization", {"scale": (3,)}, axis=-1, input_rank=2), ((4, 3),),
        (4, 3), 1, Link(1, (ar(0, 1, 2),)), [WeightAxis("scale", 0, 0)], flops=48),
    Row("position_embedding", spec(rules.KERAS_HUB_KINDS["PositionEmbedding"],
                                   {"embeddings": (6, 3)}, sequence_length=6), ((4, 3),),
        (4, 3), 1, Link(1, (ar(0, 1, 2),)), [WeightAxis("embeddings", 1, 0)], {}, flops=0),
    Row("position_embedding_wrong_axis", spec(rules.KERAS_HUB_KINDS["PositionEmbedding"]),
        ((4, 3),), (4, 3), 0, "its input's last axis"),
    Row("token_and_position_embedding", spec(
        rules.KERAS_HUB_KINDS["TokenAndPositionEmbedding"],
        {"token_embedding/embeddings": (10, 3), "position_embedding/embeddings": (4, 3)},
        embedding_dim=3), ((4,),), (4, 3), 0, None,
        [WeightAxis("token_embedding/embeddings", 1, OUT),
         WeightAxis("position_embedding/embeddings", 1, OUT),
         WeightAxis("reverse_embeddings", 0, OUT)],
        {"embedding_dim": 2}, ((4,),), (4, 2), flops=12, extra={"out_axis": 1}),
    Row("group_norm", spec("GroupNormalization", axis=-1), ((4, 3),), (4, 3), 1,
        "normalises over the channels"),
    # self-attention on 5 positions of 4 channels: 2 heads of 3 key and value dims; 4 outputs
    Row("mha", spec("MultiHeadAttention", {
        "query/kernel": (4, 2, 3), "query/bias": (2, 3), "key/kernel": (4, 2, 3),
        "key/bias": (2, 3), "value/kernel": (4, 2, 3), "value/bias": (2, 3),
        "attention_output/kernel": (2, 3, 4), "attention_output/bias": (4,)},
        num_heads=2, key_dim=3, value_dim=None, output_shape=None,
        call_inputs=("query", "value")), ((5, 4), (5, 4)), (5, 4), 1, None,
        [WeightAxis("query/kernel", 0, 0), WeightAxis("gate/kernel", 0, 0),
         WeightAxis("value/kernel", 0, 1), WeightAxis("key/kernel", 0, 1),
         WeightAxis("attention_output/kernel", -1, OUT),
         WeightAxis("attention_output/bias", -1, OUT),
         *(WeightAxis(f"{p}/{w}", axis, space) for p, dims in (
             ("query", "key_dim"), ("key", "key_dim"), ("value", "value_dim"),
             ("gate", "value_dim")) for w, axis, space in (
             ("kernel", -2, "heads"), ("bias", -2, "heads"), ("kernel", -1, dims),
             ("bias", -1, dims))),
         WeightAxis("attention_output/kernel", 0, "heads"),
         WeightAxis("attention_output/kernel", 1, "value_dim")],
        # the output loses a channel, the query keeps its 4: output_shape is set
        {"output_shape": 3}, ((5, 4), (5, 4)), (5, 3),
        # 2 * (3 projections 5*4*6 + scores and values 5*5*2*6 + output 5*6*4) + softmax
        # 3*5*5*2 + biases 5*(6+6+6+4)
        flops=2 * (3 * 120 + 300 + 120) + 150 + 110),
    Row("unknown", spec("NoSuchLayer"), ((4, 3),), (4, 3), 1, "no rule for NoSuchLayer"),
    # recurrent layers: FLOPs per step (2 per multiply-add, 1 per bias entry) x steps
    Row("lstm", spec("LSTM", {"kernel": (3, 16), "recurrent_kernel": (4, 16), "bias": (16,)},
                     units=4, return_sequences=True), ((5, 3),), (5, 4), 1, None,
        [WeightAxis("kernel", -2, 0), WeightAxis("kernel", -1, OUT, blocks=4),
         WeightAxis("recurrent_kernel", -2, OUT), WeightAxis("recurrent_kernel", -1, OUT, blocks=4),
         WeightAxis("bias", -1, OUT, blocks=4)], {"units": 2}, new_out=(5, 2),
        flops=(2 * (48 + 64) + 16) * 5, extra={"out_axis": 1, "makes_zeros": False}),
    Row("gru_reset_after", spec("GRU", {"kernel": (3, 6), "recurrent_kernel": (2, 6),
                                        "bias": (2, 6)}, units=2), ((4, 3),), (2,), 1, None,
        [WeightAxis("kernel", -2, 0), WeightAxis("kernel", -1, OUT, blocks=3),
         WeightAxis("recurrent_kernel", -2, OUT), WeightAxis("recurrent_kernel", -1, OUT, blocks=3),
         WeightAxis("bias", -1, OUT, blocks=3)], {"units": 1}, new_out=(1,),
        flops=(2 * (18 + 12) + 12) * 4, extra={"out_axis": 0}),
    Row("conv_lstm2d_channels_first", spec(
        "ConvLSTM2D", {"kernel": (3, 3, 2, 12), "recurrent_kernel": (3, 3, 3, 12), "bias": (12,)},
        filters=3, data_format="channels_first"), ((4, 2, 5, 5),), (4, 3, 5, 5), 1, None,
        [WeightAxis("kernel", -2, 0), WeightAxis("kernel", -1, OUT, blocks=4),
         WeightAxis("recurrent_kernel", -2, OUT), WeightAxis("recurrent_kernel", -1, OUT, blocks=4),
         WeightAxis("bias", -1, OUT, blocks=4)], {"filters": 2}, new_out=(4, 2, 5, 5),
        flops=(2 * (216 + 324) + 12) * 25 * 4, extra={"in_axis": 1, "out_axis": 1}),
    Row("rnn_simple_cell", spec("RNN", {"kernel": (2, 3), "recurrent_kernel": (3, 3),
                                        "bias": (3,)},
                                cell={"class_name": "SimpleRNNCell", "config": {"units": 3}}),
        ((4, 2),), (3,), 1, None, None,
        {"cell": {"class_name": "SimpleRNNCell", "config": {"units": 2}}}, new_out=(2,),
        flops=(2 * (6 + 9) + 3) * 4),
    Row("rnn_custom_cell", spec("RNN", cell={"class_name": "MyCell", "config": {}}), ((4, 2),),
        (3,), 1, "holds a MyCell"),
    Row("bidirectional_concat", spec(
        "Bidirectional", {"kernel": (3, 2), "recurrent_kernel": (2, 2), "bias": (2,),
                          "kernel#3": (3, 2), "recurrent_kernel#4": (2, 2), "bias#5": (2,)},
        merge_mode="concat", layer={"class_name": "SimpleRNN", "config": {"units": 2}},
        backward_layer={"class_name": "SimpleRNN", "config": {"units": 2}}),
        ((5, 3),), (5, 4), 1, None,
        [WeightAxis("kernel", -2, 0), WeightAxis("kernel", -1, OUT, span=(0, 2)),
         WeightAxis("recurrent_kernel", -2, OUT, span=(0, 2)),
         WeightAxis("recurrent_kernel", -1, OUT, span=(0, 2)),
         WeightAxis("bias", -1, OUT, span=(0, 2)),
         WeightAxis("kernel#3", -2, 0), WeightAxis("kernel#3", -1, OUT, span=(2, 4)),
         WeightAxis("recurrent_kernel#4", -2, OUT, span=(2, 4)),
         WeightAxis("recurrent_kernel#4", -1, OUT, span=(2, 4)),
         WeightAxis("bias#5", -1, OUT, span=(2, 4))], flops=2 * (2 * (6 + 4) + 2) * 5),
    Row("bidirectional_sum", spec(
        "Bidirectional", {"kernel": (3, 2), "recurrent_kernel": (2, 2), "kernel#2": (3, 2),
                          "recurrent_kernel#3": (2, 2)}, merge_mode="sum",
        layer={"class_name": "SimpleRNN", "config": {"units": 2, "use_bias": False}}),
        ((5, 3),), (2,), 1, None, flops=2 * (2 * (6 + 4)) * 5 + 2),
    Row("bidirectional_no_merge", spec("Bidirectional", merge_mode=None,
                                       layer={"class_name": "LSTM", "config": {"units": 2}}),
        ((5, 3),), (5, 2), 1, "merge_mode=None"),
    Row("time_distributed_dense", spec(
        "TimeDistributed", {"kernel": (3, 4), "bias": (4,)},
        layer={"class_name": "Dense", "config": {"units": 4}, "build_config": {}}),
        ((5, 3),), (5, 4), 1, None,
        [WeightAxis("kernel", 0, 0), WeightAxis("kernel", 1, OUT), WeightAxis("bias", 0, OUT),
         WeightAxis("lora_kernel_a", 0, 0), WeightAxis("lora_kernel_b", -1, OUT)],
        {"layer": {"class_name": "Dense", "config": {"units": 2}}}, new_out=(5, 2),
        flops=5 * (2 * 12 + 4), extra={"in_axis": 1, "out_axis": 1}),
    Row("time_distributed_lstm", spec("TimeDistributed", layer={"class_name": "LSTM"}),
        ((5, 3, 2),), (5, 4), 2, "holds a LSTM"),
    Row("masking", spec("Masking"), ((4, 3),), (4, 3), 1, Link(1, (ar(0, 1, 2),)), [], {},
        flops=0),
    # a layer that contains layers is expanded into them first (tests/core/test_composite_rules)
    Row("transformer_encoder", spec("TransformerEncoder", intermediate_dim=6, num_heads=2),
        ((5, 4),), (5, 4), 1, "contains other layers: read the graph through"),
]


def _same_link(got: Link | None, want: Link | None) -> bool:
    if got is None or want is None:
        return got is want
    return got.out_axis == want.out_axis and len(got.sources) == len(want.sources) and all(
        np.array_equal(g, w) for g, w in zip(got.sources, want.sources, strict=True))


@pytest.mark.parametrize("row", ROWS, ids=[r.id for r in ROWS])
def test_link(row: Row) -> None:
    rule = rule_for(row.layer.kind)
    if isinstance(row.link, str):
        with pytest.raises(PruneError, match=row.link):
            rule.link(row.layer, row.in_shapes, row.out_shape, row.axis)
        return
    got = rule.link(row.layer, row.in_shapes, row.out_shape, row.axis)
    assert _same_link(got, row.link), got
    if got is None:  # makes its own neurons: they can be targeted, on the output's axis
        assert rule.targetable and rule.why_not_targetable(row.layer) is None
        assert rule.own_neuron_axis(row.layer, row.out_shape) == rule.out_axis(
            row.layer, row.out_shape)
    for key in ("in_axis", "out_axis"):
        if key in row.extra:
            assert getattr(rule, key)(row.layer, row.in_shapes[0] if key == "in_axis"
                                      else row.out_shape) == row.extra[key]
    if "makes_zeros" in row.extra:
        assert rule.makes_zeros(row.layer) is row.extra["makes_zeros"]


@pytest.mark.parametrize("row", [r for r in ROWS if r.weight_axes is not None],
                         ids=[r.id for r in ROWS if r.weight_axes is not None])
def test_weight_axes(row: Row) -> None:
    axes = [row.axis] + [None] * (len(row.in_shapes) - 1)
    assert rule_for(row.layer.kind).weight_axes(row.layer, axes) == row.weight_axes


@pytest.mark.parametrize("row", [r for r in ROWS if r.attrs is not None],
                         ids=[r.id for r in ROWS if r.attrs is not None])
def test_attribute_updates(row: Row) -> None:
    new_in = row.new_in or row.in_shapes
    new_out = row.new_out or row.out_shape
    axes = [row.axis] + [None] * (len(new_in) - 1)
    assert rule_for(row.layer.kind).attr_updates(row.layer, new_in, new_out, axes) == row.attrs


@pytest.mark.parametrize("row", [r for r in ROWS if r.flops is not None],
                         ids=[r.id for r in ROWS if r.flops is not None])
def test_flops_and_params_through_cost(row: Row) -> None:
    n = len(row.in_shapes)
    node = Node("x", tuple(range(n)), (n,))
    shapes = {i: s for i, s in enumerate(row.in_shapes)} | {n: row.out_shape}
    graph = Graph({"x": row.layer}, (node,), shapes, tuple(range(n)), (n,))
    (layer_cost,) = count(graph)
    assert layer_cost.flops == row.flops
    assert layer_cost.params == sum(math.prod(w.shape) for w in row.layer.weights.values())


def test_refused_producers_say_why_and_have_no_width() -> None:
    for row in ROWS:
        rule = rule_for(row.layer.kind)
        if not rule.targetable or not isinstance(row.link, str):
            continue
        reason = rule.why_not_targetable(row.layer)
        assert reason is not None and row.link in reason
        assert rule.own_neuron_axis(row.layer, row.out_shape) is None
    assert rule_for("Embedding").why_not_read(spec("Embedding")) is not None
    assert rule_for("Dense").why_not_read(spec("Dense")) is None
    assert "has no neurons" in (rule_for("ReLU").why_not_targetable(spec("ReLU")) or "")


def test_every_rule_class_has_a_row() -> None:
    covered = {type(rule_for(r.layer.kind)) for r in ROWS}
    registered = {type(rule) for rule in RULES.values()}
    assert registered - covered == set()


_PER_VALUE = (rules.Elementwise, rules.ReLU, rules.NoiseShaped, rules.PReLU, rules.Activation,
              rules.Softmax, rules.ChannelScale)


def test_flops_of_every_per_value_kind() -> None:
    """Every kind whose rule counts a fixed number of operations per output value: its FLOPs
    are that number times the output's size (checked on a (4, 3) tensor)."""
    checked = 0
    for kind, rule in RULES.items():
        if type(rule) not in _PER_VALUE:
            continue
        layer = spec(kind, axis=0) if isinstance(rule, rules.Softmax) else spec(kind)
        per_value = rule.flops_per_value  # type: ignore[attr-defined]
        assert rule.flops(layer, [(4, 3)], (4, 3)) == per_value * 12, kind
        checked += 1
    assert checked >= 100  # the layers and the ~80 element-wise operations


def test_flops_of_every_broadcast_and_merge_kind() -> None:
    """Operations and merges of several operands: one operation per output value for each
    operand beyond the first."""
    for kind, rule in RULES.items():
        if isinstance(rule, rules.Broadcast):
            assert rule.flops(spec(kind), [(4, 3), (4, 3)], (4, 3)) == 12, kind
            assert rule.flops(spec(kind), [(4, 3)], (4, 3)) == 12, kind  # x op constant
        elif isinstance(rule, rules.Merge):
            assert rule.flops(spec(kind), [(4, 3)] * 3, (4, 3)) == 24, kind


def test_unsupported_kinds_refuse_with_their_reason() -> None:
    for kind, rule in RULES.items():
        if isinstance(rule, rules.Unsupported):
            assert rule.reason
            with pytest.raises(PruneError, match="cannot pass a channel deletion"):
                rule.link(spec(kind), [(4, 3)], (4, 3), 1)
