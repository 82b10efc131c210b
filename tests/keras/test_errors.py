"""Refused requests: each raises a ``PruneError`` that names what is wrong, before anything is
built, and leaves the model as it was."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import keras
import numpy as np
import pytest
from backends import as_numpy
from test_layer_kinds import equivalent, sequential

import kerasprune
from kerasprune.core.graph import PruneError
from kerasprune.core.rules import supported_kinds

L = keras.layers


def snapshot(model: keras.Model) -> tuple[list[np.ndarray], dict[str, Any]]:
    config = model.get_config()
    for entry in config["layers"]:
        # a Lambda's marshalled code varies with reference counts: not a change to the model
        entry["config"].get("function", {}).get("config", {}).pop("code", None)
    return [np.array(w) for w in model.get_weights()], config


def assert_unchanged(model: keras.Model, before: tuple[list[np.ndarray], dict[str, Any]]) -> None:
    weights, config = snapshot(model)
    assert config == before[1]
    assert len(weights) == len(before[0])
    for got, want in zip(weights, before[0], strict=True):
        np.testing.assert_array_equal(got, want)


def refused(model: keras.Model, layer: Any, neurons: Any, *fragments: str,
            **kwargs: Any) -> PruneError:
    """Assert the request is refused with every fragment in the message; nothing changes."""
    before = snapshot(model)
    with pytest.raises(PruneError) as info:
        kerasprune.delete_neurons(model, layer, neurons, **kwargs)
    with pytest.raises(PruneError) as again:
        kerasprune.dependency_group(model, layer, neurons, **kwargs)
    message = str(info.value)
    assert str(again.value) == message
    for fragment in fragments:
        assert fragment in message, f"{fragment!r} not in {message!r}"
    assert_unchanged(model, before)
    return info.value


@pytest.fixture(scope="module")
def mlp() -> keras.Sequential:
    return sequential((6,), L.Dense(10, activation="relu", name="dense_a"),
                      L.BatchNormalization(name="bn"), L.Dense(4, name="dense_b"),
                      L.Dense(3, name="out"))


# --- which layer -------------------------------------------------------------------------


def test_unknown_layer_name_suggests_close_matches(mlp: keras.Sequential) -> None:
    refused(mlp, "dense_c", [0], "no layer named 'dense_c'", "did you mean", "'dense_a'")


def test_unknown_layer_name_without_close_match(mlp: keras.Sequential) -> None:
    err = refused(mlp, "zzzz", [0], "no layer named 'zzzz'")
    assert "did you mean" not in str(err)


@pytest.mark.parametrize("index", [4, 17, -5])
def test_layer_index_out_of_range(mlp: keras.Sequential, index: int) -> None:
    refused(mlp, index, [0], f"layer index {index} is out of range", "has 4 layers")


def test_layer_by_index_and_object() -> None:
    model = sequential((6,), L.Dense(5, name="dense_a"), L.Dense(3, name="out"))
    by_name = kerasprune.delete_neurons(model, "dense_a", [1])
    by_index = kerasprune.delete_neurons(model, 0, [1])
    by_negative_index = kerasprune.delete_neurons(model, -2, [1])
    by_object = kerasprune.delete_neurons(model, model.get_layer("dense_a"), [1])
    x = np.random.default_rng(0).standard_normal((3, 6)).astype("float32")
    want = as_numpy(by_name(x))
    for other in (by_index, by_negative_index, by_object):
        assert other.get_layer("dense_a").units == 4
        np.testing.assert_array_equal(as_numpy(other(x)), want)


def test_layer_object_not_in_model(mlp: keras.Sequential) -> None:
    stranger = L.Dense(3, name="stranger")
    refused(mlp, stranger, [0], "'stranger'", "(Dense)", "is not in model", mlp.name)


def test_layer_from_another_model_with_the_same_name(mlp: keras.Sequential) -> None:
    twin = sequential((6,), L.Dense(10, name="dense_a"), L.Dense(3))
    refused(mlp, twin.get_layer("dense_a"), [0], "'dense_a'", "is not in model")


@pytest.mark.parametrize("ref", [1.5, None, ["dense_a"]])
def test_layer_given_as_something_else(mlp: keras.Sequential, ref: Any) -> None:
    refused(mlp, ref, [0], "a layer is given by name, index or object")


def test_layer_without_neurons(mlp: keras.Sequential) -> None:
    refused(mlp, "bn", [0], "layer 'bn' (BatchNormalization) has no neurons to delete",
            "Dense", "Conv2D")


@pytest.mark.parametrize("layer", [L.Dropout(0.5, name="between"), L.Flatten(name="between"),
                                   L.ReLU(name="between")])
def test_pass_through_layers_have_no_neurons(layer: L.Layer) -> None:
    model = sequential((6,), L.Dense(5, name="dense_a"), layer, L.Dense(3))
    refused(model, "between", [0], "'between'", f"({type(layer).__name__})",
            "has no neurons to delete")


# --- which neurons -------------------------------------------------------------------------


@pytest.mark.parametrize("index", [10, 11, -11, 1000])
def test_neuron_index_out_of_range(mlp: keras.Sequential, index: int) -> None:
    refused(mlp, "dense_a", [1, index], f"neuron index {index} is out of range",
            "'dense_a'", "10 neurons", "-10 to 9")


def test_negative_index_counts_from_the_end(mlp: keras.Sequential) -> None:
    last = kerasprune.delete_neurons(mlp, "dense_a", [-1])
    nine = kerasprune.delete_neurons(mlp, "dense_a", [9])
    assert last.get_layer("dense_a").units == 9
    for a, b in zip(last.get_weights(), nine.get_weights(), strict=True):
        np.testing.assert_array_equal(as_numpy(a), as_numpy(b))
    kernel = as_numpy(mlp.get_layer("dense_a").kernel)
    np.testing.assert_array_equal(as_numpy(last.get_layer("dense_a").kernel), kernel[:, :9])
    deletion = kerasprune.dependency_group(mlp, "dense_a", [-1, -3])
    assert deletion.neurons()["dense_a"].tolist() == [7, 9]


@pytest.mark.parametrize(("neurons", "repeated"), [([2, 2], 2), ([-1, 9], 9), ([0, 5, -10], 0),
                                                  ([3, 1, 3, 1], "1, 3")])
def test_duplicate_indices_are_rejected(mlp: keras.Sequential, neurons: list[int],
                                        repeated: Any) -> None:
    refused(mlp, "dense_a", neurons, "neuron indices of 'dense_a' repeat", f"[{repeated}]")


def test_deleting_every_neuron_is_refused(mlp: keras.Sequential) -> None:
    refused(mlp, "dense_a", list(range(10)), "cannot delete all 10 neurons of 'dense_a'")
    refused(mlp, "dense_a", [*range(9), -1], "cannot delete all 10 neurons")


def test_deleting_every_channel_through_a_depthwise_group_is_refused() -> None:
    model = sequential((6, 6, 2), L.Conv2D(2, 3, name="conv"),
                       L.DepthwiseConv2D(3, depth_multiplier=2, name="dw"), L.Conv2D(3, 1))
    # outputs 0 and 3 belong to input channels 0 and 1: every channel of 'conv' would go
    refused(model, "dw", [0, 3], "would delete all", "channels of the output of", "'dw'")


@pytest.mark.parametrize(("value", "type_name"), [(1.0, "float"), (2.5, "float"), ("1", "str"),
                                                  (True, "bool"), (np.float32(1), "float32"),
                                                  (None, "NoneType")])
def test_non_integer_indices_are_rejected(mlp: keras.Sequential, value: Any,
                                          type_name: str) -> None:
    refused(mlp, "dense_a", [0, value], "must be integers", repr(value), type_name)


@pytest.mark.parametrize("neurons", [3, "12", 1.0])
def test_neurons_must_be_a_sequence(mlp: keras.Sequential, neurons: Any) -> None:
    refused(mlp, "dense_a", neurons, "sequence of integer indices", type(neurons).__name__)


def test_numpy_integers_are_accepted(mlp: keras.Sequential) -> None:
    pruned = kerasprune.delete_neurons(mlp, "dense_a", np.array([1, 4], dtype=np.int64))
    assert pruned.get_layer("dense_a").units == 8
    pruned = kerasprune.delete_neurons(mlp, "dense_a", [np.int32(0), np.int64(-1)])
    assert pruned.get_layer("dense_a").units == 8


def test_no_neurons_given(mlp: keras.Sequential) -> None:
    with pytest.raises(PruneError, match="which neurons"):
        kerasprune.delete_neurons(mlp, "dense_a")


# --- layers on the path that cannot carry the deletion --------------------------------------


def _mlp_with(between: L.Layer, **target: Any) -> keras.Sequential:
    return sequential((6,), L.Dense(5, name="target", **target), between,
                      L.Dense(3, name="consumer"))


def test_softmax_layer_on_the_path() -> None:
    model = _mlp_with(L.Softmax(name="probs"))
    refused(model, "target", [0], "'target'", "layer 'probs' (Softmax)", "normalises")


def test_softmax_activation_layer_on_the_path() -> None:
    model = _mlp_with(L.Activation("softmax", name="probs"))
    refused(model, "target", [0], "layer 'probs' (Activation)", "'softmax'", "normalises")


def test_softmax_activation_of_the_target_itself() -> None:
    model = _mlp_with(L.Dropout(0.1), activation="softmax")
    refused(model, "target", [1], "layer 'target' (Dense)", "'softmax'", "normalises")


def test_softmax_over_another_axis_passes_channels() -> None:
    model = sequential((4, 3), L.Dense(5, name="target"), L.Softmax(axis=1, name="probs"),
                       L.Dense(3, name="consumer"))
    pruned = equivalent(model, "target", [0, 2])
    assert pruned.get_layer("consumer").kernel.shape == (3, 3)


def test_layer_normalization_on_the_path() -> None:
    model = _mlp_with(L.LayerNormalization(name="ln"))
    refused(model, "target", [0], "layer 'ln' (LayerNormalization)",
            "normalises over the channels", "changes the others")


def test_lambda_layer_on_the_path() -> None:
    model = _mlp_with(L.Lambda(lambda x: x * 2.0, name="double"))
    err = refused(model, "target", [0], "layer 'double' (Lambda)", "no rule for Lambda",
                  f"{len(supported_kinds())} in all", "kerasprune.core.supported_kinds()")
    # a handful of supported kinds, not all of them (issue 9): each one really supported
    named = re.search(r"supports are, e\.g\., (.*?) \(\d+ in all", str(err))
    assert named is not None
    kinds = named.group(1).split(", ")
    assert 3 <= len(kinds) <= 10
    assert set(kinds) <= set(supported_kinds())
    assert len(str(err)) < 500
    assert isinstance(err, kerasprune.UnsupportedLayerError)


@keras.saving.register_keras_serializable(package="kerasprune_tests")
class Doubler(L.Layer):
    """A custom layer (and without ``compute_output_shape``)."""

    def call(self, x: Any) -> Any:
        return x * 2.0


def test_custom_layer_on_the_path() -> None:
    model = _mlp_with(Doubler(name="doubler"))
    refused(model, "target", [0], "layer 'doubler' (Doubler)", "no rule for Doubler",
            "Dense", "BatchNormalization")


def test_custom_layer_off_the_path_does_not_matter() -> None:
    model = sequential((6,), Doubler(name="doubler"), L.Dense(5, name="target"),
                       L.Dense(3, name="consumer"))
    pruned = kerasprune.delete_neurons(model, "target", [1])
    assert pruned.get_layer("consumer").kernel.shape == (4, 3)


def test_permute_on_the_path() -> None:
    model = sequential((6, 6, 2), L.Conv2D(4, 3, name="conv"), L.Permute((3, 1, 2), name="perm"),
                       L.Dense(3))
    refused(model, "conv", [0], "layer 'perm' (Permute)", "supports are")


def test_reshape_that_mixes_channels() -> None:
    model = sequential((4, 4, 2), L.Conv2D(4, 3, padding="same", name="conv"),
                       L.Reshape((32, 2), name="rs"), L.Dense(3))
    refused(model, "conv", [0], "layer 'rs' (Reshape)", "mixing the channels")


def test_consumer_reading_another_axis() -> None:
    # Dense reads the last axis; a channels_first convolution's channels are on axis 1
    model = sequential((2, 4, 4), L.Conv2D(4, 1, data_format="channels_first", name="conv"),
                       L.Dense(3, name="dense"))
    refused(model, "conv", [0], "layer 'dense' (Dense)", "reads channels on axis 3",
            "axis 1")


def test_pooling_with_another_data_format() -> None:
    model = sequential((6, 6, 2), L.Conv2D(4, 1, name="conv"),
                       L.MaxPooling2D(data_format="channels_first", name="pool"), L.Flatten(),
                       L.Dense(3))
    refused(model, "conv", [0], "layer 'pool' (MaxPooling2D)", "keeps channels on axis 1")


def test_grouped_convolution_unbalanced() -> None:
    model = sequential((6, 6, 2), L.Conv2D(4, 3, name="conv"),
                       L.Conv2D(4, 1, groups=2, name="grouped"), L.Conv2D(2, 1))
    refused(model, "grouped", [0], "layer 'grouped' (Conv2D), a grouped convolution (groups=2)",
            "group 0: 1, group 1: 0", "1 more from group 1")


def test_grouped_convolution_whole_group_on_the_model_input() -> None:
    model = sequential((6, 6, 2), L.Conv2D(4, 3, groups=2, name="grouped"), L.Conv2D(3, 1))
    refused(model, "grouped", [0, 1], "layer 'grouped' (Conv2D)", "model input")


def test_depthwise_on_the_model_input() -> None:
    model = sequential((6, 6, 2), L.DepthwiseConv2D(3, name="dw"), L.Conv2D(3, 1))
    refused(model, "dw", [0], "'dw'", "model input")


# --- the model output ------------------------------------------------------------------------


def test_output_layer_needs_allow_output_change(mlp: keras.Sequential) -> None:
    refused(mlp, "out", [1], "changes the model output", "layer 'out' (Dense)",
            "allow_output_change=True")
    pruned = equivalent(mlp, "out", [1], allow_output_change=True)
    assert pruned.output_shape == (None, 2)
    assert pruned.get_layer("out").units == 2


def test_output_reached_through_pass_through_layers() -> None:
    model = sequential((6, 6, 2), L.Conv2D(4, 3, name="conv"), L.ReLU(),
                       L.GlobalAveragePooling2D())
    refused(model, "conv", [0, 2], "changes the model output", "'conv'")
    pruned = equivalent(model, "conv", [0, 2], allow_output_change=True)
    assert pruned.output_shape == (None, 2)


def test_softmax_output_layer_needs_allow_output_change() -> None:
    model = sequential((6,), L.Dense(5), L.Dense(4, activation="softmax", name="probs"))
    refused(model, "probs", [0], "layer 'probs' (Dense)", "'softmax'", "normalises")
    # allowed explicitly: the kept probabilities are renormalised, so they are not the oracle's
    pruned = kerasprune.delete_neurons(model, "probs", [0], allow_output_change=True)
    assert pruned.output_shape == (None, 3)
    x = np.random.default_rng(0).standard_normal((3, 6)).astype("float32")
    np.testing.assert_allclose(as_numpy(pruned(x)).sum(axis=1), 1.0, rtol=1e-5)


# --- failed calls change nothing --------------------------------------------------------------


def _failures(mlp: keras.Sequential) -> Iterator[tuple[Any, Any]]:
    yield "nope", [0]
    yield "dense_a", [10]
    yield "dense_a", [0, 0]
    yield "out", [0]


def test_failed_calls_leave_the_model_usable(mlp: keras.Sequential) -> None:
    x = np.random.default_rng(2).standard_normal((4, 6)).astype("float32")
    before = as_numpy(mlp(x))
    weights, config = snapshot(mlp)
    for layer, neurons in _failures(mlp):
        with pytest.raises(PruneError):
            kerasprune.delete_neurons(mlp, layer, neurons)
    assert_unchanged(mlp, (weights, config))
    np.testing.assert_array_equal(as_numpy(mlp(x)), before)
    # and it can still be pruned afterwards
    assert kerasprune.delete_neurons(mlp, "dense_a", [0]).get_layer("dense_a").units == 9


def test_nothing_is_built_before_the_error(monkeypatch: pytest.MonkeyPatch) -> None:
    model = _mlp_with(L.LayerNormalization(name="ln"))
    built: list[str] = []
    init = keras.layers.Layer.__init__

    def spy(self: Any, *args: Any, **kwargs: Any) -> None:  # every layer and model made
        built.append(type(self).__name__)
        init(self, *args, **kwargs)

    monkeypatch.setattr(keras.layers.Layer, "__init__", spy)
    with pytest.raises(PruneError):
        kerasprune.delete_neurons(model, "target", [0])
    assert built == []
    kerasprune.delete_neurons(model, "consumer", [0], allow_output_change=True)
    assert "Sequential" in built and "Dense" in built  # the spy works
