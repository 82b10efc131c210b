"""Whole-branch removal: deleting every channel of one Concatenate input removes that input
and the layers that only serve it; oracle: the original with the branch's channels zeroed."""

from __future__ import annotations

from typing import Any

import keras
import numpy as np
import pytest
from backends import DATA_FORMATS, as_numpy
from oracle import assert_equivalent, random_inputs, randomize

import kerasprune
from kerasprune import PruneError

L = keras.layers


def inception(df: str, second_input: bool = False) -> keras.Model:
    """Three branches (a 1x1 conv; conv-conv-BN-ReLU; pool-conv) concatenated, then a head."""
    axis = 1 if df == "channels_first" else -1
    shape = (3, 6, 6) if df == "channels_first" else (6, 6, 3)
    x = keras.Input(shape, name="x")
    a = L.Conv2D(4, 1, data_format=df, name="a")(x)
    b = L.Conv2D(5, 3, padding="same", data_format=df, name="b0")(x)
    b = L.Conv2D(3, 1, data_format=df, name="b")(b)
    b = L.BatchNormalization(axis=axis, name="bn")(b)
    b = L.ReLU(name="relu")(b)
    src = keras.Input(shape, name="y") if second_input else x
    c = L.MaxPooling2D(3, 1, padding="same", data_format=df, name="pool")(src)
    c = L.Conv2D(2, 1, data_format=df, name="c")(c)
    cat = L.Concatenate(axis=axis, name="cat")([a, b, c])
    h = L.Conv2D(3, 1, data_format=df, name="head")(cat)
    h = L.GlobalAveragePooling2D(data_format=df, name="gap")(h)
    inputs: Any = [x, src] if second_input else x
    return randomize(keras.Model(inputs, L.Dense(2, name="out")(h)))


def names(model: keras.Model) -> list[str]:
    return sorted(layer.name for layer in model.layers)


@pytest.mark.parametrize("df", DATA_FORMATS)
def test_one_branch_goes_whole(df: str) -> None:
    model = inception(df)
    deletion = kerasprune.dependency_group(model, "b", [0, 1, 2])
    assert deletion.removed_layers() == ["b0", "b", "bn", "relu"]
    assert "b0 (Conv2D): removed" in str(deletion)
    pruned = assert_equivalent(model, "b", [0, 1, 2])
    assert names(pruned) == sorted(["x", "a", "pool", "c", "cat", "head", "gap", "out"])
    assert pruned.get_layer("head").kernel.shape[2] == 6
    assert names(model) == sorted(["x", "a", "b0", "pool", "b", "c", "bn", "relu", "cat",
                                   "head", "gap", "out"])  # the input model is untouched


@pytest.mark.parametrize("df", DATA_FORMATS)
def test_a_concatenate_left_with_one_input_goes_too(df: str) -> None:
    model = inception(df)
    pruned = assert_equivalent(model, {"b": [0, 1, 2], "c": [0, 1]})
    assert names(pruned) == sorted(["x", "a", "head", "gap", "out"])
    assert pruned.get_layer("head").kernel.shape[2] == 4


def test_part_of_a_branch_and_a_whole_one_together() -> None:
    model = inception("channels_last")
    pruned = assert_equivalent(model, {"b": [0, 1, 2], "a": [1, 3]})
    assert names(pruned) == sorted(["x", "a", "pool", "c", "cat", "head", "gap", "out"])
    assert pruned.get_layer("head").kernel.shape[2] == 4


def test_a_branch_of_ops_concatenate() -> None:
    x = keras.Input((4, 4, 3))
    a, b = L.Conv2D(2, 1, name="a")(x), L.Conv2D(3, 1, name="b")(L.ReLU(name="r")(x))
    joined = keras.ops.concatenate([a, b], axis=-1)
    model = randomize(keras.Model(x, L.Conv2D(2, 1, name="head")(joined)))
    pruned = assert_equivalent(model, "b", [0, 1, 2])
    assert "r" not in names(pruned) and pruned.get_layer("head").kernel.shape[2] == 2


def test_refusals_name_the_reason() -> None:
    model = inception("channels_last", second_input=True)
    with pytest.raises(PruneError, match="reads model input 1, which cannot disappear"):
        kerasprune.dependency_group(model, "c", [0, 1])
    x = keras.Input((4,))
    a, b = L.Dense(3, name="a")(x), L.Dense(2, name="b")(x)
    out = L.Dense(2, name="out")(L.Concatenate(name="cat")([a, b]))
    side = L.Dense(2, name="side")(b)
    model = keras.Model(x, [out, side])
    with pytest.raises(PruneError, match=r"cannot delete all 2 neurons of 'b'.*read by layer "
                                         r"'side' \(Dense\)"):
        kerasprune.delete_neurons(model, "b", [0, 1])
    model = keras.Model(x, [out, b])
    with pytest.raises(PruneError, match="a model output, which cannot disappear"):
        kerasprune.delete_neurons(model, "b", [0, 1], allow_output_change=True)


def test_the_branch_is_gone_from_a_saved_model(tmp_path: Any) -> None:
    model = inception("channels_last")
    pruned = kerasprune.delete_neurons(model, "c", [0, 1])
    path = tmp_path / "pruned.keras"
    pruned.save(path)
    loaded = keras.models.load_model(path)
    x = random_inputs(model)
    np.testing.assert_allclose(as_numpy(loaded(x)), as_numpy(pruned(x)), atol=1e-6)
    assert "pool" not in names(loaded)
