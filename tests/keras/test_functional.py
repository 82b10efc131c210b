"""Functional (graph) models: residuals, merges, concatenations, shared and nested layers.

Every pruning is checked against the oracle (``oracle.assert_equivalent``): the pruned model
must compute what the original computes with the weights that read the deleted neurons set to
zero. Tests also check the dependency group (which layers are coupled) and the new shapes.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import keras
import numpy as np
import pytest
from backends import DATA_FORMATS
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from oracle import assert_equivalent, random_inputs, randomize

import kerasprune
from kerasprune import PruneError

L = keras.layers


def caxis(df: str) -> int:
    """The channel axis (counting batch) for a data format."""
    return -1 if df == "channels_last" else 1


def image(df: str, hw: int = 8, c: int = 3) -> tuple[int, int, int]:
    return (hw, hw, c) if df == "channels_last" else (c, hw, hw)


def conv(filters: int, k: int, df: str, name: str | None = None, **kw: Any) -> L.Conv2D:
    return L.Conv2D(filters, k, padding="same", data_format=df, name=name, **kw)


def bn(df: str, name: str | None = None) -> L.BatchNormalization:
    return L.BatchNormalization(axis=caxis(df), name=name)


def head(x: Any, df: str, units: int = 3) -> Any:
    x = L.GlobalAveragePooling2D(data_format=df, name="gap")(x)
    return L.Dense(units, name="logits")(x)


def channels(model: keras.Model, name: str, df: str = "channels_last") -> int:
    """Number of output channels of a layer (by its output shape)."""
    shape = model.get_layer(name).output.shape
    return int(shape[caxis(df)])


def group_layers(model: keras.Model, layer: Any, neurons: Any = None,
                 **kw: Any) -> dict[str, list[int]]:
    """{layer: deleted own neurons} of the dependency group."""
    deletion = kerasprune.dependency_group(model, layer, neurons, **kw)
    return {k: v.tolist() for k, v in deletion.neurons().items()}


def weights_of(model: keras.Model) -> list[np.ndarray]:
    return [np.array(w) for w in model.get_weights()]


# --------------------------------------------------------------------------------------------
# Residual blocks
# --------------------------------------------------------------------------------------------


def residual_block(df: str) -> keras.Model:
    """stem -> [conv1-bn1-relu-conv2-bn2] + shortcut conv -> Add -> relu -> head."""
    inp = keras.Input(image(df))
    x = conv(6, 3, df, "stem")(inp)
    y = conv(5, 3, df, "conv1")(x)
    y = bn(df, "bn1")(y)
    y = L.ReLU(name="relu1")(y)
    y = conv(8, 3, df, "conv2")(y)
    y = bn(df, "bn2")(y)
    s = conv(8, 1, df, "shortcut")(x)
    s = bn(df, "bn_s")(s)
    z = L.Add(name="add")([y, s])
    z = L.ReLU(name="relu_out")(z)
    return randomize(keras.Model(inp, head(z, df), name="resblock"))


@pytest.mark.parametrize("df", DATA_FORMATS)
def test_residual_block_conv2_and_shortcut(df: str) -> None:
    model = residual_block(df)
    before = weights_of(model)
    assert group_layers(model, "conv2", [1, 6]) == {"conv2": [1, 6], "shortcut": [1, 6]}
    text = str(kerasprune.dependency_group(model, "conv2", [1, 6]))
    for name in ("conv2", "bn2", "shortcut", "bn_s", "add", "relu_out", "gap", "logits"):
        assert f"{name} (" in text
    assert "conv1 (" not in text
    assert "stem (" not in text

    pruned = assert_equivalent(model, "conv2", [1, 6])
    for name in ("conv2", "shortcut", "add"):
        assert channels(pruned, name, df) == 6
    assert pruned.get_layer("bn2").gamma.shape == (6,)
    assert pruned.get_layer("logits").kernel.shape == (6, 3)
    assert channels(pruned, "conv1", df) == 5

    pruned = assert_equivalent(model, "shortcut", [0])
    assert channels(pruned, "conv2", df) == 7
    # The original is untouched.
    for a, b in zip(before, weights_of(model), strict=True):
        np.testing.assert_array_equal(a, b)
    assert channels(model, "conv2", df) == 8


@pytest.mark.parametrize("df", DATA_FORMATS)
def test_residual_block_inner_and_stem(df: str) -> None:
    model = residual_block(df)
    assert group_layers(model, "conv1", [0, 4]) == {"conv1": [0, 4]}
    pruned = assert_equivalent(model, "conv1", [0, 4])
    assert pruned.get_layer("conv2").kernel.shape == (3, 3, 3, 8)
    assert pruned.get_layer("bn1").moving_variance.shape == (3,)
    # stem feeds two convolutions: both lose kernel rows, nothing else is coupled.
    assert group_layers(model, "stem", [2]) == {"stem": [2]}
    pruned = assert_equivalent(model, "stem", [2])
    assert pruned.get_layer("conv1").kernel.shape == (3, 3, 5, 5)
    assert pruned.get_layer("shortcut").kernel.shape == (1, 1, 5, 8)


def test_identity_shortcut_on_the_model_input_is_refused() -> None:
    inp = keras.Input((8, 8, 4))
    y = conv(4, 3, "channels_last", "conv")(inp)
    y = L.Add(name="add")([inp, y])
    model = randomize(keras.Model(inp, head(y, "channels_last")))
    for call in (kerasprune.delete_neurons, kerasprune.dependency_group):
        with pytest.raises(PruneError, match="model input") as info:
            call(model, "conv", [1])
        assert "'conv'" in str(info.value)
    # The head can still be pruned: it does not reach the Add.
    assert group_layers(model, "logits", [0], allow_output_change=True) == {"logits": [0]}


@pytest.mark.parametrize("df", DATA_FORMATS)
def test_identity_shortcut_after_a_stem_couples_the_stem(df: str) -> None:
    inp = keras.Input(image(df))
    x = conv(6, 3, df, "stem")(inp)
    x = bn(df, "bn0")(x)
    x = L.ReLU()(x)
    y = conv(6, 3, df, "conv_a")(x)
    y = bn(df, "bn_a")(y)
    y = L.Add(name="add")([x, y])
    y = L.ReLU()(y)
    y = conv(6, 3, df, "conv_b")(y)
    y = L.Add(name="add2")([x, y])
    model = randomize(keras.Model(inp, head(y, df)))
    assert group_layers(model, "conv_a", [0, 3]) == {"stem": [0, 3], "conv_a": [0, 3],
                                                     "conv_b": [0, 3]}
    pruned = assert_equivalent(model, "conv_a", [0, 3])
    for name in ("stem", "bn0", "conv_a", "add", "conv_b", "add2"):
        assert channels(pruned, name, df) == 4
    assert group_layers(model, "stem", [5]) == {"stem": [5], "conv_a": [5], "conv_b": [5]}


# --------------------------------------------------------------------------------------------
# Concatenate
# --------------------------------------------------------------------------------------------


def inception(df: str) -> keras.Model:
    inp = keras.Input(image(df))
    x = conv(4, 3, df, "stem")(inp)
    b1 = conv(3, 1, df, "b1")(x)
    b2 = conv(2, 1, df, "b2_reduce")(x)
    b2 = conv(5, 3, df, "b2")(b2)
    b3 = L.MaxPooling2D(3, strides=1, padding="same", data_format=df, name="b3_pool")(x)
    b3 = conv(2, 1, df, "b3")(b3)
    cat = L.Concatenate(axis=caxis(df), name="cat")([b1, b2, b3, x])
    y = conv(4, 3, df, "after")(cat)
    y = bn(df, "bn_after")(y)
    return randomize(keras.Model(inp, head(y, df)))


@pytest.mark.parametrize("df", DATA_FORMATS)
def test_inception_branch_feeding_concatenate(df: str) -> None:
    model = inception(df)
    deletion = kerasprune.dependency_group(model, "b2", [0, 4])
    cat_change = deletion.layers()["after"]
    # b1 has 3 channels, so b2's channels 0 and 4 are the concatenation's 3 and 7.
    assert cat_change.inputs[0].tolist() == [3, 7]
    assert {k: v.tolist() for k, v in deletion.neurons().items()} == {"b2": [0, 4]}
    pruned = assert_equivalent(model, "b2", [0, 4])
    assert channels(pruned, "cat", df) == 12
    assert pruned.get_layer("after").kernel.shape == (3, 3, 12, 4)

    # b3 sits behind a pooling on stem's output; stem is also concatenated directly.
    assert kerasprune.dependency_group(model, "b3", [1]).layers()["after"].inputs[0].tolist() \
        == [9]
    deletion = kerasprune.dependency_group(model, "stem", [1])
    assert deletion.layers()["after"].inputs[0].tolist() == [11]
    assert {"b1", "b2_reduce", "b3", "b3_pool", "cat"} <= set(deletion.layers())
    assert_equivalent(model, "stem", [1])


@pytest.mark.parametrize("df", DATA_FORMATS)
def test_inception_consumer_after_concatenate(df: str) -> None:
    model = inception(df)
    assert group_layers(model, "after", [2]) == {"after": [2]}
    pruned = assert_equivalent(model, "after", [2])
    assert pruned.get_layer("bn_after").gamma.shape == (3,)
    assert pruned.get_layer("logits").kernel.shape == (3, 3)
    assert channels(pruned, "cat", df) == 14


def test_concatenate_on_a_spatial_axis_couples_branches() -> None:
    inp = keras.Input((6, 6, 3))
    a = conv(4, 3, "channels_last", "a")(inp)
    b = conv(4, 1, "channels_last", "b")(inp)
    cat = L.Concatenate(axis=1, name="cat")([a, b])  # stacks along height
    y = conv(3, 3, "channels_last", "after")(cat)
    model = randomize(keras.Model(inp, head(y, "channels_last")))
    assert group_layers(model, "a", [1]) == {"a": [1], "b": [1]}
    pruned = assert_equivalent(model, "b", [1])
    assert tuple(pruned.get_layer("cat").output.shape) == (None, 12, 6, 3)


# --------------------------------------------------------------------------------------------
# Element-wise merges
# --------------------------------------------------------------------------------------------

MERGES: list[Callable[..., L.Layer]] = [L.Add, L.Subtract, L.Multiply, L.Average, L.Maximum,
                                        L.Minimum]


@pytest.mark.parametrize("merge", MERGES, ids=lambda m: m.__name__)
def test_merges_couple_their_inputs(merge: Callable[..., L.Layer]) -> None:
    df = "channels_last"
    inp = keras.Input(image(df))
    a = conv(5, 3, df, "a")(inp)
    b = conv(5, 1, df, "b")(inp)
    b = L.ReLU(name="b_relu")(b)
    m = merge(name="merge")([a, b])
    y = conv(3, 3, df, "after")(m)
    model = randomize(keras.Model(inp, head(y, df)))
    assert group_layers(model, "a", [0, 2]) == {"a": [0, 2], "b": [0, 2]}
    pruned = assert_equivalent(model, "a", [0, 2])
    assert channels(pruned, "merge") == 3
    assert group_layers(model, "b", [4]) == {"a": [4], "b": [4]}


def test_three_way_add() -> None:
    df = "channels_last"
    inp = keras.Input(image(df))
    branches = [conv(4, 3, df, f"br{i}")(inp) for i in range(3)]
    y = L.Add(name="add")(branches)
    model = randomize(keras.Model(inp, head(y, df)))
    assert group_layers(model, "br1", [3]) == {"br0": [3], "br1": [3], "br2": [3]}
    assert_equivalent(model, "br1", [3])


# --------------------------------------------------------------------------------------------
# Squeeze-and-excite
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("df", DATA_FORMATS)
def test_squeeze_excite(df: str) -> None:
    inp = keras.Input(image(df))
    x = conv(8, 3, df, "conv")(inp)
    se = L.GlobalAveragePooling2D(data_format=df, name="squeeze")(x)
    se = L.Dense(3, activation="relu", name="se_reduce")(se)
    se = L.Dense(8, activation="sigmoid", name="se_expand")(se)
    se = L.Reshape((1, 1, 8) if df == "channels_last" else (8, 1, 1), name="se_reshape")(se)
    x = L.Multiply(name="excite")([x, se])
    y = conv(4, 3, df, "after")(x)
    model = randomize(keras.Model(inp, head(y, df)))

    assert group_layers(model, "conv", [1, 5]) == {"conv": [1, 5], "se_expand": [1, 5]}
    pruned = assert_equivalent(model, "conv", [1, 5])
    assert pruned.get_layer("se_reduce").kernel.shape == (6, 3)
    assert pruned.get_layer("se_expand").kernel.shape == (3, 6)
    target = pruned.get_layer("se_reshape").target_shape
    assert tuple(target) == ((1, 1, 6) if df == "channels_last" else (6, 1, 1))
    # The excitation's own units can be pruned from either end.
    assert group_layers(model, "se_expand", [0]) == {"conv": [0], "se_expand": [0]}
    pruned = assert_equivalent(model, "se_reduce", [2])
    assert pruned.get_layer("se_expand").kernel.shape == (2, 8)


# --------------------------------------------------------------------------------------------
# Several inputs and outputs
# --------------------------------------------------------------------------------------------


def two_in_two_out() -> keras.Model:
    img = keras.Input((8, 8, 3), name="img")
    vec = keras.Input((5,), name="vec")
    a = conv(4, 3, "channels_last", "img_conv")(img)
    a = L.GlobalMaxPooling2D(name="img_pool")(a)
    b = L.Dense(6, activation="relu", name="vec_dense")(vec)
    t = L.Concatenate(name="join")([a, b])
    t = L.Dense(7, activation="tanh", name="trunk")(t)
    out1 = L.Dense(3, name="out_a")(t)
    out2 = L.Dense(2, name="out_b")(L.Dense(4, name="pre_b")(t))
    return randomize(keras.Model([img, vec], [out1, out2]))


def test_two_inputs_two_outputs() -> None:
    model = two_in_two_out()
    x = random_inputs(model, n=4)
    pruned = assert_equivalent(model, "img_conv", [0, 3], x)
    assert pruned.get_layer("trunk").kernel.shape == (8, 7)
    pruned = kerasprune.delete_neurons(model, "trunk", [1, 2, 6])
    assert pruned.get_layer("out_a").kernel.shape == (4, 3)
    assert pruned.get_layer("pre_b").kernel.shape == (4, 4)
    pruned = assert_equivalent(model, {"img_conv": [1], "vec_dense": [0, 2], "pre_b": [3]}, x=x)
    assert pruned.get_layer("trunk").kernel.shape == (7, 7)
    assert pruned.get_layer("out_b").kernel.shape == (3, 2)
    assert [tuple(t.shape) for t in pruned.outputs] == [(None, 3), (None, 2)]


def test_one_of_two_outputs_with_allow_output_change() -> None:
    model = two_in_two_out()
    with pytest.raises(PruneError, match="allow_output_change"):
        kerasprune.delete_neurons(model, "out_b", [1])
    pruned = assert_equivalent(model, "out_b", [1], allow_output_change=True)
    assert [tuple(t.shape) for t in pruned.outputs] == [(None, 3), (None, 1)]


# --------------------------------------------------------------------------------------------
# Shared layers
# --------------------------------------------------------------------------------------------


def test_shared_conv_on_two_branches() -> None:
    df = "channels_last"
    inp = keras.Input(image(df))
    a = conv(4, 3, df, "a")(inp)
    b = conv(4, 1, df, "b")(inp)
    shared = conv(6, 3, df, "shared")
    y = L.Add(name="add")([shared(a), shared(b)])
    model = randomize(keras.Model(inp, head(y, df)))

    deletion = kerasprune.dependency_group(model, "shared", [0, 5])
    assert {k: v.tolist() for k, v in deletion.neurons().items()} == {"shared": [0, 5]}
    graph = deletion.graph
    calls = graph.calls("shared")
    assert len(calls) == 2
    for node in calls:  # both calls lose the channels
        assert deletion.tensors[node.outputs[0]][1].tolist() == [0, 5]
    pruned = assert_equivalent(model, "shared", [0, 5])
    assert pruned.get_layer("shared").kernel.shape == (3, 3, 4, 4)

    # Deleting a's filters drops rows of the shared kernel, so b must lose the same.
    assert group_layers(model, "a", [2]) == {"a": [2], "b": [2]}
    assert "b (Conv2D)" in str(kerasprune.dependency_group(model, "a", [2]))
    pruned = assert_equivalent(model, "a", [2])
    assert pruned.get_layer("shared").kernel.shape == (3, 3, 3, 6)
    assert pruned.get_layer("b").kernel.shape == (1, 1, 3, 3)


def test_shared_dense_on_two_inputs() -> None:
    x1, x2 = keras.Input((4,)), keras.Input((4,))
    shared = L.Dense(5, activation="relu", name="shared")
    y = L.Concatenate(name="cat")([shared(x1), shared(x2)])
    y = L.Dense(2, name="out")(y)
    model = randomize(keras.Model([x1, x2], y))
    deletion = kerasprune.dependency_group(model, "shared", [1])
    assert deletion.layers()["out"].inputs[0].tolist() == [1, 6]
    pruned = assert_equivalent(model, "shared", [1])
    assert pruned.get_layer("out").kernel.shape == (8, 2)
    # A shared layer on model inputs cannot lose input channels, only its own.
    with pytest.raises(PruneError):
        kerasprune.delete_neurons(model, "out", [0])


# --------------------------------------------------------------------------------------------
# Nested models
# --------------------------------------------------------------------------------------------


def nested(df: str = "channels_last") -> keras.Model:
    block = keras.Sequential([keras.Input(image(df, c=5)), conv(6, 3, df, "conv"), bn(df, "bn"),
                              L.ReLU(name="relu")], name="inner")
    f_in = keras.Input(image(df, c=6))
    f = conv(4, 3, df, "fconv")(f_in)
    f = L.Add(name="fadd")([f, conv(4, 1, df, "fshort")(f_in)])
    func = keras.Model(f_in, f, name="func")
    inp = keras.Input(image(df))
    x = conv(5, 3, df, "pre")(inp)
    x = block(x)
    x = func(x)
    return randomize(keras.Model(inp, head(x, df)))


@pytest.mark.parametrize("df", DATA_FORMATS)
def test_nested_models(df: str) -> None:
    model = nested(df)
    # A layer inside the nested Sequential, by path and by its unique name.
    pruned = assert_equivalent(model, "inner/conv", [0, 1])
    assert pruned.get_layer("inner").get_layer("conv").kernel.shape == (3, 3, 5, 4)
    assert pruned.get_layer("func").get_layer("fconv").kernel.shape == (3, 3, 4, 4)
    assert group_layers(model, "conv", [3]) == {"inner/conv": [3]}
    # Inside the nested functional model, through its Add.
    assert group_layers(model, "func/fshort", [2]) == {"func/fconv": [2], "func/fshort": [2]}
    pruned = assert_equivalent(model, "fconv", [2])
    assert pruned.get_layer("logits").kernel.shape == (3, 3)
    # An outer layer that feeds the nested model: its input shape changes.
    pruned = assert_equivalent(model, "pre", [4])
    inner = pruned.get_layer("inner")
    assert inner.get_layer("conv").kernel.shape == (3, 3, 4, 6)
    assert int(inner.inputs[0].shape[caxis(df)]) == 4
    # Several, across the nesting.
    assert_equivalent(model, {"pre": [0], "inner/conv": [5], "func/fconv": [1]})


def test_nested_sequential_without_an_input_layer() -> None:
    block = keras.Sequential([conv(6, 3, "channels_last", "c"), bn("channels_last", "b")],
                             name="blk")
    inp = keras.Input((8, 8, 3))
    x = block(conv(4, 3, "channels_last", "pre")(inp))
    model = randomize(keras.Model(inp, head(x, "channels_last")))
    pruned = assert_equivalent(model, "c", [1])
    assert pruned.get_layer("blk").get_layer("b").gamma.shape == (5,)
    pruned = assert_equivalent(model, "pre", [0])
    assert pruned.get_layer("blk").get_layer("c").kernel.shape == (3, 3, 3, 6)


def test_nested_model_called_twice_is_a_shared_layer() -> None:
    sub_in = keras.Input((8, 8, 4))
    sub = keras.Model(sub_in, conv(5, 3, "channels_last", "sc")(sub_in), name="sub")
    inp = keras.Input((8, 8, 3))
    a = conv(4, 3, "channels_last", "a")(inp)
    b = conv(4, 1, "channels_last", "b")(inp)
    y = L.Add(name="add")([sub(a), sub(b)])
    model = randomize(keras.Model(inp, head(y, "channels_last")))
    assert group_layers(model, "sc", [1]) == {"sub/sc": [1]}
    assert len(kerasprune.dependency_group(model, "sc", [1]).graph.calls("sub/sc")) == 2
    pruned = assert_equivalent(model, "sc", [1])
    assert pruned.get_layer("add").output.shape[-1] == 4
    # The nested convolution reads both a and b: they lose the same filters.
    assert group_layers(model, "a", [0]) == {"a": [0], "b": [0]}
    assert_equivalent(model, "a", [0])


def test_a_nested_model_output_is_the_model_output() -> None:
    """A nested model's output as the outer model's (once, and of both of two calls): the
    config numbers a functional model's calls from 1 there, a Sequential's from 0."""
    def sub(name: str) -> keras.Model:
        x = keras.Input((6,))
        return keras.Model(x, L.Dense(3, name="out")(L.Dense(5, name="mid")(x)), name=name)

    inp = keras.Input((4,))
    pre, pre2 = L.Dense(6, name="pre")(inp), L.Dense(6, name="pre2")(inp)
    once = randomize(keras.Model(inp, sub("sub")(pre)))
    assert_equivalent(once, "pre", [0, 2])
    twice_sub = sub("twice")
    twice = randomize(keras.Model(inp, [twice_sub(pre), twice_sub(pre2)]))
    assert_equivalent(twice, "pre2", [1])  # only the second call's input loses a channel
    assert_equivalent(twice, "twice/mid", [0])
    seq = keras.Sequential([keras.Input((6,)), L.Dense(3, name="s")], name="seq")
    assert_equivalent(randomize(keras.Model(inp, seq(pre))), "pre", [1])


def test_nested_layer_by_object_and_unknown_name() -> None:
    model = nested()
    layer = model.get_layer("inner").get_layer("conv")
    assert group_layers(model, layer, [1]) == {"inner/conv": [1]}
    with pytest.raises(PruneError, match="no layer named"):
        kerasprune.dependency_group(model, "inner/nope", [0])


# --------------------------------------------------------------------------------------------
# Depthwise, separable and transposed convolutions
# --------------------------------------------------------------------------------------------


def unet(df: str) -> keras.Model:
    """Encoder (conv, separable, depthwise) and decoder (transposed conv + skip)."""
    ax = caxis(df)
    inp = keras.Input(image(df, hw=16))
    e1 = conv(6, 3, df, "enc1")(inp)
    e1 = bn(df, "enc1_bn")(e1)
    e1 = L.ReLU(name="enc1_relu")(e1)
    d = L.MaxPooling2D(2, data_format=df, name="pool1")(e1)
    e2 = L.SeparableConv2D(8, 3, padding="same", depth_multiplier=2, data_format=df,
                           name="enc2")(d)
    e2 = L.DepthwiseConv2D(3, padding="same", depth_multiplier=2, data_format=df,
                           name="enc2_dw")(e2)
    e2 = L.ReLU(name="enc2_relu")(e2)
    up = L.Conv2DTranspose(5, 2, strides=2, data_format=df, name="up")(e2)
    cat = L.Concatenate(axis=ax, name="skip")([up, e1])
    y = conv(4, 3, df, "dec")(cat)
    out = conv(2, 1, df, "seg")(y)
    return randomize(keras.Model(inp, out))


@pytest.mark.parametrize("df", DATA_FORMATS)
def test_unet_encoder_decoder(df: str) -> None:
    model = unet(df)
    # enc1 feeds both the encoder and the skip concatenation.
    deletion = kerasprune.dependency_group(model, "enc1", [0, 5])
    assert deletion.layers()["dec"].inputs[0].tolist() == [5, 10]
    pruned = assert_equivalent(model, "enc1", [0, 5])
    assert pruned.get_layer("enc2").depthwise_kernel.shape == (3, 3, 4, 2)
    assert pruned.get_layer("enc2").pointwise_kernel.shape == (1, 1, 8, 8)
    assert pruned.get_layer("dec").kernel.shape == (3, 3, 9, 4)

    # The separable conv's filters pass through the depthwise (multiplier 2) to the
    # transposed conv, whose kernel is (k, k, out, in).
    deletion = kerasprune.dependency_group(model, "enc2", [1])
    assert deletion.layers()["up"].inputs[0].tolist() == [2, 3]
    pruned = assert_equivalent(model, "enc2", [1])
    assert pruned.get_layer("enc2_dw").kernel.shape == (3, 3, 7, 2)
    assert pruned.get_layer("up").kernel.shape == (2, 2, 5, 14)

    # Deleting one depthwise output deletes its whole multiplier group and the input.
    assert group_layers(model, "enc2_dw", [3]) == {"enc2": [1]}
    assert_equivalent(model, "enc2_dw", [3])

    pruned = assert_equivalent(model, "up", [0, 4])
    assert pruned.get_layer("up").kernel.shape == (2, 2, 3, 16)
    assert pruned.get_layer("dec").kernel.shape == (3, 3, 9, 4)
    pruned = assert_equivalent(model, "seg", [0], allow_output_change=True)
    assert pruned.output.shape[caxis(df)] == 1


# --------------------------------------------------------------------------------------------
# Several layers at once; outputs; the source model afterwards
# --------------------------------------------------------------------------------------------


def test_several_layers_in_one_call() -> None:
    model = residual_block("channels_last")
    request = {"conv1": [1], "stem": [0, 2], "shortcut": [7]}
    deletion = kerasprune.dependency_group(model, request)
    assert {k: v.tolist() for k, v in deletion.neurons().items()} == {
        "stem": [0, 2], "conv1": [1], "conv2": [7], "shortcut": [7]}
    pruned = assert_equivalent(model, request)
    assert pruned.get_layer("stem").kernel.shape == (3, 3, 3, 4)
    assert pruned.get_layer("conv1").kernel.shape == (3, 3, 4, 4)
    assert pruned.get_layer("conv2").kernel.shape == (3, 3, 4, 7)
    # Layers may also be given by index and object in the mapping.
    index = [layer.name for layer in model.layers].index("conv1")
    pruned = kerasprune.delete_neurons(model, {index: [1], model.get_layer("stem"): [0, 2]})
    assert pruned.get_layer("conv1").kernel.shape == (3, 3, 4, 4)


def test_output_layer_needs_allow_output_change() -> None:
    model = residual_block("channels_last")
    with pytest.raises(PruneError, match="allow_output_change"):
        kerasprune.delete_neurons(model, "logits", [0])
    pruned = assert_equivalent(model, "logits", [0, 2], allow_output_change=True)
    assert tuple(pruned.output.shape) == (None, 1)


def test_source_model_still_runs_after_the_pruned_one() -> None:
    """The pruned model shares no buffer with the source (JAX's jit donates its state)."""
    model = residual_block("channels_last")
    x = random_inputs(model)
    want = model.predict(x, verbose=0)
    before = weights_of(model)
    pruned = kerasprune.delete_neurons(model, "conv1", [0])
    pruned.predict(x, verbose=0)
    pruned.compile(optimizer="sgd", loss="mse")
    pruned.fit(x, np.zeros((len(x), 3)), epochs=1, verbose=0)
    np.testing.assert_allclose(model.predict(x, verbose=0), want, rtol=1e-6, atol=1e-6)
    for a, b in zip(before, weights_of(model), strict=True):
        np.testing.assert_array_equal(a, b)
    assert not any(a is b for a in model.weights for b in pruned.weights)
    source_values = {id(v.value) for v in model.weights}
    assert not any(id(v.value) in source_values for v in pruned.weights)


# --------------------------------------------------------------------------------------------
# Random DAGs
# --------------------------------------------------------------------------------------------


Op = tuple[str, int, int, int]
"""(kind, first input, second input or kernel size, filters), inputs by position."""


@st.composite
def dag_plans(draw: st.DrawFn) -> list[Op]:
    """A random small DAG of supported kinds, as a plan (no Keras inside strategies)."""
    shapes = [(8, draw(st.sampled_from([3, 4])))]  # (spatial size, channels) per tensor
    plan: list[Op] = [("conv", -1, 3, shapes[0][1])]
    for _ in range(draw(st.integers(2, 6))):
        kind = draw(st.sampled_from(["conv", "conv", "bn", "relu", "add", "res", "res", "cat",
                                     "pool"]))
        j = draw(st.integers(max(0, len(shapes) - 3), len(shapes) - 1))
        hw, c = shapes[j]
        if kind == "conv":
            filters = draw(st.sampled_from([3, 3, 4]))
            plan.append(("conv", j, draw(st.sampled_from([1, 3])), filters))
            shapes.append((hw, filters))
        elif kind == "res":  # x + conv(x): the conv is coupled to whatever made x
            plan.append(("res", j, draw(st.sampled_from([1, 3])), c))
            shapes.append((hw, c))
        elif kind in ("bn", "relu"):
            plan.append((kind, j, 0, 0))
            shapes.append((hw, c))
        elif kind == "pool" and hw > 2:
            plan.append(("pool", j, 0, 0))
            shapes.append((hw // 2, c))
        elif kind in ("add", "cat"):
            fits = [k for k, (h2, c2) in enumerate(shapes)
                    if k != j and h2 == hw and (kind == "cat" or c2 == c)]
            if fits:
                other = draw(st.sampled_from(fits))
                plan.append((kind, j, other, 0))
                shapes.append((hw, c + shapes[other][1] if kind == "cat" else c))
    return plan


def build_plan(plan: list[Op], seed: int) -> keras.Model:
    inp = keras.Input((8, 8, 3))
    made: list[Any] = []
    for i, (kind, j, arg, filters) in enumerate(plan):
        x = inp if j < 0 else made[j]
        if kind == "conv":
            y = conv(filters, arg, "channels_last", f"conv{i}")(x)
        elif kind == "res":
            y = L.Add(name=f"add{i}")([x, conv(filters, arg, "channels_last", f"conv{i}")(x)])
        elif kind == "bn":
            y = bn("channels_last", f"bn{i}")(x)
        elif kind == "relu":
            y = L.ReLU(name=f"relu{i}")(x)
        elif kind == "pool":
            y = L.MaxPooling2D(2, name=f"pool{i}")(x)
        elif kind == "add":
            y = L.Add(name=f"add{i}")([x, made[arg]])
        else:
            y = L.Concatenate(name=f"cat{i}")([x, made[arg]])
        made.append(y)
    # Every tensor nothing reads gets a head of its own: the model may have several outputs.
    used = {j for _, j, _, _ in plan} | {a for kind, _, a, _ in plan if kind in ("add", "cat")}
    outputs = []
    for i, x in enumerate(made):
        if i not in used:
            x = L.GlobalAveragePooling2D(name=f"gap{i}")(x)
            outputs.append(L.Dense(2, name=f"logits{i}")(x))
    return randomize(keras.Model(inp, outputs), seed=seed)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(plan=dag_plans(), data=st.data())
def test_random_dags_match_the_oracle(plan: list[Op], data: st.DataObject) -> None:
    model = build_plan(plan, seed=len(plan))
    convs = [f"conv{i}" for i, op in enumerate(plan) if op[0] in ("conv", "res")]
    # Half the time, pick a convolution coupled to another one (through an Add).
    coupled = [c for c in convs if len(group_layers(model, c, [0])) > 1]
    if coupled and data.draw(st.booleans(), label="coupled"):
        convs = coupled
    layer = data.draw(st.sampled_from(convs), label="layer")
    n = model.get_layer(layer).filters
    neurons = data.draw(st.lists(st.integers(0, n - 1), min_size=1, max_size=n - 1,
                                 unique=True), label="neurons")
    try:
        deletion = kerasprune.dependency_group(model, layer, neurons)
    except PruneError as err:
        # Coupling may empty a layer (an Add of two of its own channels' producers).
        assert "would delete all" in str(err), err
        event("refused: empties a tensor")
        return
    event(f"{len(deletion.neurons())} layers lose neurons")
    pruned = assert_equivalent(model, layer, neurons)
    assert pruned.count_params() < model.count_params()
    for name, gone in deletion.neurons().items():
        assert pruned.get_layer(name).filters == model.get_layer(name).filters - len(gone)
