"""The rules added for issue 9, on hand-built graphs (NumPy only): operations, constants,
EinsumDense, LoRA factors, noise shapes, Reshape's ``-1``, ConvNeXt's LayerScale,
InceptionResNetV2's CustomScaleLayer, refusals of weights a rule does not know, short
messages for kinds without a rule, and :func:`prunability`."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from kerasprune.core import rules
from kerasprune.core.graph import Graph, LayerSpec, Node, PruneError
from kerasprune.core.rules import UnsupportedLayerError, op_kind, supported_kinds
from kerasprune.core.surgery import (
    apply_deletion,
    delete_neurons,
    dependency_group,
    prunability,
)

RNG = np.random.default_rng(0)


def w(*shape: int) -> np.ndarray:
    return RNG.standard_normal(shape).astype("float32")


def dense(name: str, n_in: int, units: int, **attrs: Any) -> LayerSpec:
    return LayerSpec(name, "Dense", {"units": units, **attrs},
                     {"kernel": w(n_in, units), "bias": w(units)})


def graph(layers: list[LayerSpec], nodes: list[tuple[str, tuple[int, ...], int]],
          shapes: dict[int, tuple[int, ...]], outputs: tuple[int, ...]) -> Graph:
    return Graph({s.name: s for s in layers},
                 tuple(Node(n, ins, (out,)) for n, ins, out in nodes), shapes, (0,), outputs)


def chain(spec_between: LayerSpec, channels: int = 6, between_shape: Any = None) -> Graph:
    """in(4) -> Dense(channels) 'a' -> <between> -> Dense(3) 'b' -> Dense(2) 'out'."""
    return graph([dense("a", 4, channels), spec_between, dense("b", channels, 3),
                  dense("out", 3, 2)],
                 [("a", (0,), 1), (spec_between.name, (1,), 2), ("b", (2,), 3),
                  ("out", (3,), 4)],
                 {0: (4,), 1: (channels,), 2: between_shape or (channels,), 3: (3,), 4: (2,)},
                 (4,))


# --- operations ---------------------------------------------------------------------------


def test_op_kinds_are_snake_case_in_their_own_namespace() -> None:
    assert op_kind("NotEqual") == "op:not_equal"
    assert op_kind("Relu6") == "op:relu6"
    assert op_kind("Add") == "op:add" != "Add"
    assert op_kind("HSVToRGB") == "op:hsv_to_rgb"
    assert {"op:add", "op:multiply", "op:relu", "op:hard_sigmoid"} <= set(supported_kinds())


def test_broadcast_op_slices_a_per_channel_constant() -> None:
    scale = np.arange(1.0, 7.0, dtype="float32")  # aligned to the output: (C,)
    op = LayerSpec("mul", "op:multiply", {}, {}, {"args[1]": scale})
    g = graph([dense("a", 4, 6), op, dense("b", 6, 3)], [("a", (0,), 1), ("mul", (1,), 2),
              ("b", (2,), 3)], {0: (4,), 1: (6,), 2: (6,), 3: (3,)}, (3,))
    new = delete_neurons(g, "a", [1, 4])
    np.testing.assert_array_equal(new.layers["mul"].constants["args[1]"], [1.0, 3.0, 4.0, 6.0])
    assert new.layers["mul"].weights == {}
    assert new.layers["b"].weights["kernel"].shape == (4, 3)


def test_broadcast_op_leaves_a_broadcast_constant_alone() -> None:
    const = np.full((1,), 2.0, dtype="float32")
    op = LayerSpec("add", "op:add", {}, {}, {"args[1]": const})
    new = delete_neurons(chain(op), "a", [0])
    assert new.layers["add"].constants["args[1]"] is const


def test_broadcast_op_couples_tensors_and_skips_size_one_operands() -> None:
    layers = [dense("a", 4, 5), dense("b", 4, 5), dense("g", 4, 1),
              LayerSpec("mul", "op:multiply"), LayerSpec("gate", "op:multiply"),
              dense("out", 5, 2)]
    g = graph(layers, [("a", (0,), 1), ("b", (0,), 2), ("g", (0,), 3), ("mul", (1, 2), 4),
                       ("gate", (4, 3), 5), ("out", (5,), 6)],
              {0: (4,), 1: (5,), 2: (5,), 3: (1,), 4: (5,), 5: (5,), 6: (2,)}, (6,))
    deletion = dependency_group(g, "a", [2])
    assert {k: v.tolist() for k, v in deletion.neurons().items()} == {"a": [2], "b": [2]}
    assert "g" not in deletion.layers()


def test_broadcast_op_refuses_mismatched_channels_and_unaligned_constants() -> None:
    op = LayerSpec("mul", "op:multiply", {}, {}, {"args[1]": np.ones(4, "float32")})
    with pytest.raises(UnsupportedLayerError, match=r"'mul' \(op:multiply\).*4 channels to 6"):
        dependency_group(chain(op), "a", [0])
    op = LayerSpec("mul", "op:multiply", {"unaligned_constants": True})
    with pytest.raises(UnsupportedLayerError, match="higher rank"):
        dependency_group(chain(op), "a", [0])


def test_relu_operation_makes_zeros_and_unknown_operations_are_refused_briefly() -> None:
    assert rules.rule_for("op:relu").makes_zeros(LayerSpec("r", "op:relu"))
    assert not rules.rule_for("op:sigmoid").makes_zeros(LayerSpec("s", "op:sigmoid"))
    with pytest.raises(UnsupportedLayerError) as info:
        dependency_group(chain(LayerSpec("t", "op:transpose")), "a", [0])
    message = str(info.value)
    assert "no rule for op:transpose operations" in message
    assert "supported_kinds()" in message and len(message) < 500


def test_unknown_layer_kind_names_close_kinds() -> None:
    with pytest.raises(UnsupportedLayerError) as info:
        dependency_group(chain(LayerSpec("c", "Conv4D")), "a", [0])
    named = str(info.value).split("e.g., ")[1].split(" (")[0].split(", ")
    assert named[:3] == sorted(named[:3]) or "Conv3D" in named[:4]
    assert all(k in supported_kinds() for k in named)


# --- shapes held in attributes ----------------------------------------------------------------


def test_reshape_keeps_minus_one() -> None:
    # (2, 6) -> Reshape((-1, 6)) -> (2, 6); the -1 stays, the channel count changes
    rs = LayerSpec("rs", "Reshape", {"target_shape": (-1, 6)})
    g = graph([LayerSpec("a", "Dense", {"units": 6}, {"kernel": w(4, 6)}), rs,
               LayerSpec("b", "Dense", {"units": 3}, {"kernel": w(6, 3)})],
              [("a", (0,), 1), ("rs", (1,), 2), ("b", (2,), 3)],
              {0: (2, 4), 1: (2, 6), 2: (2, 6), 3: (2, 3)}, (3,))
    new = delete_neurons(g, "a", [0, 5])
    assert new.layers["rs"].attrs["target_shape"] == (-1, 4)


def test_reshape_of_unknown_sizes_is_refused_not_crashed() -> None:
    rs = LayerSpec("rs", "Reshape", {"target_shape": (-1,)})
    with pytest.raises(UnsupportedLayerError, match="known only at run time"):
        dependency_group(chain(rs, between_shape=(1,)), "a", [0])


@pytest.mark.parametrize(("noise", "expected"), [((None, 1, 6), (None, 1, 4)),
                                                 ((None, 2, 1), (None, 2, 1)), (None, None)])
def test_dropout_noise_shape_follows_the_channels(noise: Any, expected: Any) -> None:
    drop = LayerSpec("drop", "Dropout", {"rate": 0.5, "noise_shape": noise})
    g = graph([LayerSpec("a", "Dense", {"units": 6}, {"kernel": w(4, 6)}), drop,
               LayerSpec("b", "Dense", {"units": 3}, {"kernel": w(6, 3)})],
              [("a", (0,), 1), ("drop", (1,), 2), ("b", (2,), 3)],
              {0: (2, 4), 1: (2, 6), 2: (2, 6), 3: (2, 3)}, (3,))
    new = delete_neurons(g, "a", [0, 5])
    assert new.layers["drop"].attrs.get("noise_shape") == expected


def test_lora_factors_are_sliced_with_the_kernel() -> None:
    a = LayerSpec("a", "Dense", {"units": 6, "lora_rank": 2},
                  {"kernel": w(4, 6), "bias": w(6), "lora_kernel_a": w(4, 2),
                   "lora_kernel_b": w(2, 6)})
    b = LayerSpec("b", "Dense", {"units": 3, "lora_rank": 2},
                  {"kernel": w(6, 3), "lora_kernel_a": w(6, 2), "lora_kernel_b": w(2, 3)})
    g = graph([a, b], [("a", (0,), 1), ("b", (1,), 2)], {0: (4,), 1: (6,), 2: (3,)}, (2,))
    new = delete_neurons(g, "a", [1, 2])
    assert new.layers["a"].weights["lora_kernel_b"].shape == (2, 4)
    assert new.layers["a"].weights["lora_kernel_a"].shape == (4, 2)
    assert new.layers["b"].weights["lora_kernel_a"].shape == (4, 2)
    np.testing.assert_array_equal(new.layers["b"].weights["lora_kernel_a"],
                                  b.weights["lora_kernel_a"][[0, 3, 4, 5]])


def test_layers_with_weights_a_rule_does_not_know_are_refused() -> None:
    quantized = LayerSpec("b", "Dense", {"units": 3},
                          {"kernel": w(6, 3), "kernel_scale": w(3)})
    g = graph([dense("a", 4, 6), quantized], [("a", (0,), 1), ("b", (1,), 2)],
              {0: (4,), 1: (6,), 2: (3,)}, (2,))
    with pytest.raises(UnsupportedLayerError, match=r"kernel_scale.*quantiz"):
        dependency_group(g, "a", [0])


# --- EinsumDense ------------------------------------------------------------------------------


def einsum(name: str, equation: str, kernel: np.ndarray, output_shape: Any,
           bias_axes: str | None = None, bias: np.ndarray | None = None) -> LayerSpec:
    weights = {"kernel": kernel} if bias is None else {"kernel": kernel, "bias": bias}
    return LayerSpec(name, "EinsumDense", {"equation": equation, "output_shape": output_shape,
                                           "bias_axes": bias_axes}, weights)


def test_einsum_dense_as_producer_and_consumer() -> None:
    e1 = einsum("e1", "abc,cd->abd", w(4, 6), (None, 6), "d", w(6))
    e2 = einsum("e2", "...b,bc->...c", w(6, 3), 3)
    g = graph([e1, e2], [("e1", (0,), 1), ("e2", (1,), 2)],
              {0: (5, 4), 1: (5, 6), 2: (5, 3)}, (2,))
    new = delete_neurons(g, "e1", [0, 2])
    assert new.layers["e1"].weights["kernel"].shape == (4, 4)
    assert new.layers["e1"].weights["bias"].shape == (4,)
    assert tuple(new.layers["e1"].attrs["output_shape"]) == (None, 4)
    assert new.layers["e2"].weights["kernel"].shape == (4, 3)
    np.testing.assert_array_equal(new.layers["e2"].weights["kernel"],
                                  e2.weights["kernel"][[1, 3, 4, 5]])


def test_einsum_dense_with_a_multi_axis_kernel_and_unsupported_equations() -> None:
    heads = einsum("q", "abc,cde->abde", w(4, 2, 3), (None, 2, 3))
    g = graph([heads, dense("d", 3, 2)], [("q", (0,), 1), ("d", (1,), 2)],
              {0: (5, 4), 1: (5, 2, 3), 2: (5, 2, 2)}, (2,))
    new = delete_neurons(g, "q", [1])
    assert new.layers["q"].weights["kernel"].shape == (4, 2, 2)
    assert tuple(new.layers["q"].attrs["output_shape"]) == (None, 2, 2)
    odd = einsum("x", "ab,bc->ca", w(4, 6), 6)
    g = graph([odd], [("x", (0,), 1)], {0: (4,), 1: (6,)}, (1,))
    with pytest.raises(PruneError, match="does not start with the batch axis"):
        dependency_group(g, "x", [0], allow_output_change=True)


# --- keras.applications' own layers -------------------------------------------------------------


def test_custom_scale_layer_couples_like_add() -> None:
    layers = [dense("a", 4, 5), dense("b", 4, 5), LayerSpec("cs", "CustomScaleLayer",
                                                            {"scale": 0.2}),
              dense("out", 5, 2)]
    g = graph(layers, [("a", (0,), 1), ("b", (0,), 2), ("cs", (1, 2), 3), ("out", (3,), 4)],
              {0: (4,), 1: (5,), 2: (5,), 3: (5,), 4: (2,)}, (4,))
    deletion = dependency_group(g, "b", [4])
    assert {k: v.tolist() for k, v in deletion.neurons().items()} == {"a": [4], "b": [4]}


def test_layer_scale_slices_gamma_and_projection_dim() -> None:
    scale = LayerSpec("ls", "LayerScale", {"projection_dim": 6, "init_values": 0.1},
                      {"gamma": np.arange(6.0)})
    new = apply_deletion(dependency_group(chain(scale), "a", [1]))
    np.testing.assert_array_equal(new.layers["ls"].weights["gamma"], [0, 2, 3, 4, 5])
    assert new.layers["ls"].attrs["projection_dim"] == 5


# --- the type of allow_output_change, tensors as indices, the blocker of a request ---------------


def test_allow_output_change_must_be_a_bool() -> None:
    with pytest.raises(TypeError, match="allow_output_change must be True or False"):
        dependency_group(chain(LayerSpec("r", "ReLU")), "a", [0], allow_output_change="yes")


class FakeTensor:
    """A framework tensor: only ``__array__``."""

    def __init__(self, value: Any) -> None:
        self.value = np.asarray(value)

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        return self.value


def test_integer_tensors_are_indices_and_float_tensors_are_not() -> None:
    g = chain(LayerSpec("r", "ReLU"))
    assert dependency_group(g, "a", FakeTensor([1, 3])).neurons()["a"].tolist() == [1, 3]
    assert dependency_group(g, "a", [FakeTensor(2), 4]).neurons()["a"].tolist() == [2, 4]
    with pytest.raises(PruneError, match="integer indices"):
        dependency_group(g, "a", FakeTensor([1.0, 3.0]))


def test_a_failing_multi_layer_request_names_the_blocked_layer() -> None:
    layers = [dense("a", 4, 6), dense("b", 6, 5), LayerSpec("ln", "LayerNormalization"),
              dense("out", 5, 2)]
    g = graph(layers, [("a", (0,), 1), ("b", (1,), 2), ("ln", (2,), 3), ("out", (3,), 4)],
              {0: (4,), 1: (6,), 2: (5,), 3: (5,), 4: (2,)}, (4,))
    with pytest.raises(UnsupportedLayerError) as info:
        dependency_group(g, {"a": [0], "b": [1]})
    assert "of 'b' (of the 2 requested layers 'a', 'b')" in str(info.value)
    assert "'ln' (LayerNormalization)" in str(info.value)


# --- prunability -------------------------------------------------------------------------------


def test_prunability_says_why_not() -> None:
    layers = [dense("a", 4, 6), dense("b", 6, 5), LayerSpec("ln", "LayerNormalization"),
              dense("c", 5, 1), dense("out", 1, 2)]
    g = graph(layers, [("a", (0,), 1), ("b", (1,), 2), ("ln", (2,), 3), ("c", (3,), 4),
                       ("out", (4,), 5)],
              {0: (4,), 1: (6,), 2: (5,), 3: (5,), 4: (1,), 5: (2,)}, (5,))
    found = {p.layer: p for p in prunability(g)}
    assert list(found) == ["a", "b", "c", "out"]
    assert found["a"].prunable and found["a"].group == ("a",) and found["a"].neurons == 6
    assert not found["b"].prunable and "LayerNormalization" in (found["b"].reason or "")
    assert found["c"].reason == "layer 'c' has a single neuron"
    assert not found["out"].prunable and found["out"].output
    assert "allow_output_change" in (found["out"].reason or "")


def test_activation_names_from_every_serialized_form() -> None:
    """An activation attribute is a name, a layer's config or a function's (KerasHub's GELU
    is ``{"class_name": "function", "config": "gelu_approximate"}``)."""
    from kerasprune.core.rules.base import activation_name, own_coupling

    assert activation_name("relu") == "relu"
    assert activation_name({"class_name": "ReLU", "config": {"name": "relu_1"}}) == "relu_1"
    assert activation_name({"class_name": "function", "config": "gelu_approximate",
                            "module": "keras_hub.src.utils.keras_utils"}) == "gelu_approximate"
    assert activation_name({"class_name": "Softmax", "config": {}}) == "Softmax"
    spec = LayerSpec("d", "Dense", {"activation": {"class_name": "function",
                                                   "config": "softmax", "module": "x"}})
    assert own_coupling(spec) is not None
