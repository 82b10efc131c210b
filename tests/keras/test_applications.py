"""Real architectures from ``keras.applications`` (random weights), checked with the oracle.

Each application is built once per module. Weights are He-initialised (depthwise kernels by
their own fan-in) and batch-norm statistics are near the identity, so activations keep their
scale through 50+ layers; every test also checks that the deletion changed the model's output
noticeably, so that the oracle's comparison is not vacuous.

While this module runs, Keras's initializers return NumPy zeros/ones: every weight is
overwritten anyway (by ``he_init``, by the oracle's ``set_weights``, by kerasprune's own
assignments), and on JAX the real ones compile one small program per weight shape, which
made building these models the slowest part of the tests.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import keras
import numpy as np
import pytest
from oracle import assert_equivalent

import kerasprune

pytestmark = [pytest.mark.slow, pytest.mark.heavy]  # heavy: not again on torch (CI time)

BATCH = 2


@pytest.fixture(scope="module", autouse=True)
def cheap_initializers() -> Iterator[None]:
    def zeros(self: Any, shape: Any, dtype: Any = None) -> np.ndarray:
        return np.zeros(shape, dtype=dtype or "float32")

    def ones(self: Any, shape: Any, dtype: Any = None) -> np.ndarray:
        return np.ones(shape, dtype=dtype or "float32")

    init = keras.initializers
    with pytest.MonkeyPatch.context() as patch:
        for cls in (init.VarianceScaling, init.RandomNormal, init.RandomUniform,
                    init.TruncatedNormal, init.Zeros):
            patch.setattr(cls, "__call__", zeros)
        patch.setattr(init.Ones, "__call__", ones)
        yield


@dataclass
class App:
    model: keras.Model
    x: np.ndarray
    y: np.ndarray  # the original model's output on x

    @property
    def scale(self) -> float:
        """The largest magnitude of the original model's output."""
        return float(np.abs(self.y).max())

    @property
    def atol(self) -> float:
        """Float32 rounding through 50+ layers, relative to the output's scale (ResNet50's
        features reach ~1e4 with these weights, and differ by ~1e-2 after reordered sums:
        float64 shows that this is rounding, see the test below)."""
        return 1e-5 * self.scale


def he_init(model: keras.Model, seed: int = 0) -> keras.Model:
    """Weights that keep activations at a sensible scale, with random BN statistics."""
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        for var in layer.weights:
            shape = tuple(var.shape)
            name = var.name
            if name in ("kernel", "depthwise_kernel", "pointwise_kernel"):
                depthwise = isinstance(layer, keras.layers.DepthwiseConv2D) or (
                    name == "depthwise_kernel")
                fan_in = int(np.prod(shape[:-2] if depthwise else shape[:-1]))
                value = rng.standard_normal(shape, dtype=np.float32) * np.sqrt(2.0 / fan_in)
            elif name in ("gamma", "moving_variance"):
                value = rng.uniform(0.5, 1.5, shape)
            else:  # biases, beta, moving_mean
                value = rng.standard_normal(shape) * 0.1
            var.assign(value.astype(var.dtype))
    assert all(keras.ops.convert_to_numpy(v).any() for v in model.weights)
    return model


def make_app(model: keras.Model, seed: int = 0) -> App:
    he_init(model, seed)
    rng = np.random.default_rng(seed)
    x = rng.uniform(-1.0, 1.0, (BATCH, *model.inputs[0].shape[1:])).astype("float32")
    return App(model, x, np.asarray(model.predict(x, verbose=0)))


def assert_changed(app: App, pruned: keras.Model) -> None:
    """The deleted neurons mattered: the pruned output differs from the original's."""
    got = np.asarray(pruned.predict(app.x, verbose=0))
    assert got.shape == app.y.shape
    assert np.abs(got - app.y).max() > 1e-3 * app.scale


def own_neurons(deletion: Any) -> dict[str, list[int]]:
    return {k: v.tolist() for k, v in deletion.neurons().items()}


# --------------------------------------------------------------------------------------------
# VGG16, with its 138M-parameter top
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def vgg16() -> App:
    return make_app(keras.applications.VGG16(weights=None, include_top=True))


def test_vgg16_half_of_block3_conv1(vgg16: App) -> None:
    model = vgg16.model
    assert model.count_params() > 138_000_000
    half = list(range(0, 256, 2))
    deletion = kerasprune.dependency_group(model, "block3_conv1", half)
    assert own_neurons(deletion) == {"block3_conv1": half}
    assert set(deletion.layers()) == {"block3_conv1", "block3_conv2"}
    # The outputs are softmax probabilities (about 1e-3 each): compare them relatively,
    # which compares the logits absolutely.
    pruned = assert_equivalent(model, "block3_conv1", half, vgg16.x, atol=1e-7)
    assert pruned.get_layer("block3_conv1").kernel.shape == (3, 3, 128, 128)
    assert pruned.get_layer("block3_conv1").bias.shape == (128,)
    assert pruned.get_layer("block3_conv2").kernel.shape == (3, 3, 128, 256)
    removed = 128 * (3 * 3 * 128 + 1) + 128 * 3 * 3 * 256
    assert model.count_params() - pruned.count_params() == removed
    assert_changed(vgg16, pruned)


# --------------------------------------------------------------------------------------------
# ResNet50: a convolution inside a residual group
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def resnet50() -> App:
    return make_app(keras.applications.ResNet50(weights=None, include_top=False,
                                                input_shape=(64, 64, 3), pooling="avg"))


def test_resnet50_shortcut_conv_group(resnet50: App) -> None:
    model = resnet50.model
    neurons = [0, 5, 17, 100, 255]
    # The projection shortcut is added to block 1's output, which is added (identity
    # shortcuts) to blocks 2 and 3: all four convolutions lose the same filters.
    deletion = kerasprune.dependency_group(model, "conv2_block1_0_conv", neurons)
    assert own_neurons(deletion) == {
        name: neurons for name in ("conv2_block1_0_conv", "conv2_block1_3_conv",
                                   "conv2_block2_3_conv", "conv2_block3_3_conv")}
    layers = deletion.layers()
    for reader in ("conv2_block2_1_conv", "conv2_block3_1_conv", "conv3_block1_0_conv",
                   "conv3_block1_1_conv"):
        assert layers[reader].inputs[0].tolist() == neurons
        assert layers[reader].outputs is None
    assert "conv3_block1_3_conv" not in layers

    pruned = assert_equivalent(model, "conv2_block1_0_conv", neurons, resnet50.x,
                               atol=resnet50.atol)
    for name in ("conv2_block1_0_conv", "conv2_block3_3_conv"):
        assert pruned.get_layer(name).kernel.shape[-1] == 251
    assert pruned.get_layer("conv2_block2_3_bn").gamma.shape == (251,)
    assert pruned.get_layer("conv3_block1_0_conv").kernel.shape == (1, 1, 251, 512)
    assert_changed(resnet50, pruned)


@pytest.mark.tensorflow  # float64 on JAX needs jax_enable_x64, a process-wide switch
def test_resnet50_shortcut_conv_group_is_exact_in_float64() -> None:
    """The float32 tolerance above is rounding through 16 residual blocks, not an inexact
    deletion: in float64 the same deletion matches the oracle to 1e-10 of the output's scale
    (about 1e-15 is seen; in float32 the difference is about 6e-7 of it)."""
    floatx, policy = keras.config.floatx(), keras.config.dtype_policy()
    keras.config.set_floatx("float64")
    keras.config.set_dtype_policy("float64")  # once a global policy was set, floatx is unused
    try:
        app = make_app(keras.applications.ResNet50(weights=None, include_top=False,
                                                   input_shape=(32, 32, 3), pooling="avg"))
        assert app.y.dtype == np.float64
        x = app.x.astype("float64")
        pruned = assert_equivalent(app.model, "conv2_block1_0_conv", [0, 5, 17, 100, 255], x,
                                   atol=1e-10 * app.scale)
        assert pruned.get_layer("conv2_block1_0_conv").kernel.dtype == "float64"
        assert pruned.get_layer("conv2_block1_0_conv").kernel.shape[-1] == 251
    finally:
        keras.config.set_floatx(floatx)
        keras.config.set_dtype_policy(policy)


# --------------------------------------------------------------------------------------------
# MobileNetV2: a linear bottleneck inside a residual group; .keras round trip
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def mobilenet() -> App:
    return make_app(keras.applications.MobileNetV2(weights=None, include_top=False,
                                                   input_shape=(64, 64, 3), pooling="avg"))


@pytest.fixture(scope="module")
def mobilenet_pruned(mobilenet: App) -> keras.Model:
    return assert_equivalent(mobilenet.model, "block_1_project", [1, 2, 3, 20], mobilenet.x,
                             atol=mobilenet.atol)


def test_mobilenetv2_block_project(mobilenet: App, mobilenet_pruned: keras.Model) -> None:
    model = mobilenet.model
    neurons = [1, 2, 3, 20]
    deletion = kerasprune.dependency_group(model, "block_1_project", neurons)
    assert own_neurons(deletion) == {"block_1_project": neurons, "block_2_project": neurons}
    layers = deletion.layers()
    assert layers["block_2_expand"].inputs[0].tolist() == neurons
    assert layers["block_3_expand"].inputs[0].tolist() == neurons
    pruned = mobilenet_pruned
    assert pruned.get_layer("block_1_project").kernel.shape == (1, 1, 96, 20)
    assert pruned.get_layer("block_2_project_BN").moving_mean.shape == (20,)
    assert pruned.get_layer("block_3_expand").kernel.shape == (1, 1, 20, 144)
    # The depthwise convolutions are untouched: their channels are not in the group.
    assert pruned.get_layer("block_2_depthwise").kernel.shape == (3, 3, 144, 1)
    assert_changed(mobilenet, pruned)


def test_pruned_application_keras_round_trip(mobilenet: App, mobilenet_pruned: keras.Model,
                                             tmp_path: Path) -> None:
    path = tmp_path / "pruned_mobilenetv2.keras"
    mobilenet_pruned.save(path)
    loaded = keras.models.load_model(path)
    assert loaded.count_params() == mobilenet_pruned.count_params()
    assert [layer.name for layer in loaded.layers] == [
        layer.name for layer in mobilenet_pruned.layers]
    assert loaded.get_layer("block_1_project").kernel.shape == (1, 1, 96, 20)
    for a, b in zip(mobilenet_pruned.get_weights(), loaded.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_allclose(loaded.predict(mobilenet.x, verbose=0),
                               mobilenet_pruned.predict(mobilenet.x, verbose=0),
                               rtol=1e-6, atol=1e-6)
    # The loaded model can be pruned again.
    again = kerasprune.delete_neurons(loaded, "block_1_project", [0])
    assert again.get_layer("block_2_project").kernel.shape == (1, 1, 144, 19)


# --------------------------------------------------------------------------------------------
# DenseNet121: a convolution feeding a chain of concatenations
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def densenet121() -> App:
    return make_app(keras.applications.DenseNet121(weights=None, include_top=False,
                                                   input_shape=(64, 64, 3), pooling="avg"))


def test_densenet121_conv_feeding_concatenate(densenet121: App) -> None:
    model = densenet121.model
    neurons = [0, 7, 31]
    # Nothing is coupled: concatenation only offsets the channels.
    deletion = kerasprune.dependency_group(model, "conv2_block1_2_conv", neurons)
    assert own_neurons(deletion) == {"conv2_block1_2_conv": neurons}
    layers = deletion.layers()
    # Block 1's 32 channels follow the stem's 64 in every later concatenation of the dense
    # block, up to the transition convolution.
    offset = [64 + i for i in neurons]
    for reader in ("conv2_block2_1_conv", "conv2_block4_1_conv", "pool2_conv"):
        assert layers[reader].inputs[0].tolist() == offset
        assert layers[reader].outputs is None
    assert layers["conv2_block6_concat"].outputs is not None
    assert layers["conv2_block6_concat"].outputs.tolist() == offset
    assert "conv3_block1_1_conv" not in layers

    pruned = assert_equivalent(model, "conv2_block1_2_conv", neurons, densenet121.x,
                               atol=densenet121.atol)
    assert pruned.get_layer("conv2_block1_2_conv").kernel.shape == (3, 3, 128, 29)
    assert pruned.get_layer("conv2_block3_0_bn").gamma.shape == (125,)
    assert pruned.get_layer("pool2_conv").kernel.shape == (1, 1, 253, 128)
    assert_changed(densenet121, pruned)
