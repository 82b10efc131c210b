"""Grouped convolutions (``Conv1D/2D/3D`` with ``1 < groups < channels``), checked with the
zeroing oracle: the same number of filters from every group, whole groups (their input
channels go from the producer), input channels of a producer (the same kernel row of every
group), and the refusals. channels_first runs on JAX only (see ``backends.DATA_FORMATS``)."""

from __future__ import annotations

from typing import Any

import keras
import numpy as np
import pytest
from backends import DATA_FORMATS
from oracle import assert_equivalent, randomize

import kerasprune
from kerasprune.core.graph import PruneError

L = keras.layers
CONV = {1: L.Conv1D, 2: L.Conv2D, 3: L.Conv3D}
POOL = {1: L.GlobalAveragePooling1D, 2: L.GlobalAveragePooling2D, 3: L.GlobalAveragePooling3D}
SIDE = {1: 7, 2: 5, 3: 4}


def grouped_model(d: int, groups: int, df: str = "channels_last", rows: int = 2,
                  per: int = 2) -> keras.Model:
    """``prod`` (groups*rows filters) -> ``grouped`` (groups, per filters each, ReLU) ->
    ``cons`` -> global pooling -> ``out``."""
    channels = groups * rows
    spatial = (SIDE[d],) * d
    inp = keras.Input((*spatial, 3) if df == "channels_last" else (3, *spatial))
    x = CONV[d](channels, 1, data_format=df, name="prod")(inp)
    x = CONV[d](groups * per, 3, padding="same", groups=groups, activation="relu",
                data_format=df, name="grouped")(x)
    x = CONV[d](3, 1, data_format=df, name="cons")(x)
    x = POOL[d](data_format=df)(x)
    return randomize(keras.Model(inp, L.Dense(2, name="out")(x)))


def one_from_each(groups: int, per: int, k: int = 1) -> list[int]:
    return [g * per + i for g in range(groups) for i in range(k)]


@pytest.mark.parametrize(("d", "groups"), [(1, 4), (2, 2), (2, 4), (3, 2)])
def test_same_number_of_filters_from_every_group(d: int, groups: int) -> None:
    model = grouped_model(d, groups, per=3)
    neurons = one_from_each(groups, 3, k=2 if groups == 2 else 1)
    pruned = assert_equivalent(model, "grouped", neurons)
    layer = pruned.get_layer("grouped")
    assert (layer.groups, layer.filters) == (groups, groups * 3 - len(neurons))
    assert tuple(layer.kernel.shape) == (*(3,) * d, 2, groups * 3 - len(neurons))
    assert tuple(pruned.get_layer("prod").kernel.shape)[-1] == groups * 2  # producer untouched
    assert pruned.get_layer("cons").kernel.shape[-2] == groups * 3 - len(neurons)


@pytest.mark.parametrize(("d", "groups"), [(1, 2), (2, 4), (3, 4)])
def test_input_channel_goes_from_every_group(d: int, groups: int) -> None:
    """Deleting the producer's channel 1 deletes kernel row 1: channel 1 of every group."""
    model = grouped_model(d, groups, rows=3)
    deletion = kerasprune.dependency_group(model, "prod", [1])
    assert deletion.neurons()["prod"].tolist() == [g * 3 + 1 for g in range(groups)]
    assert "grouped" not in deletion.neurons()
    pruned = assert_equivalent(model, "prod", [1])
    layer = pruned.get_layer("grouped")
    assert (layer.groups, layer.filters) == (groups, groups * 2)
    assert tuple(layer.kernel.shape) == (*(3,) * d, 2, groups * 2)


@pytest.mark.parametrize(("d", "groups"), [(1, 4), (2, 2), (3, 4)])
def test_whole_group_takes_its_input_channels(d: int, groups: int) -> None:
    model = grouped_model(d, groups, rows=2, per=2)
    deletion = kerasprune.dependency_group(model, "grouped", [2, 3])  # group 1
    assert {k: v.tolist() for k, v in deletion.neurons().items()} == {
        "prod": [2, 3], "grouped": [2, 3]}
    pruned = assert_equivalent(model, "grouped", [2, 3])
    layer = pruned.get_layer("grouped")
    assert (layer.groups, layer.filters) == (groups - 1, 2 * (groups - 1))
    assert tuple(layer.kernel.shape) == (*(3,) * d, 2, 2 * (groups - 1))
    assert pruned.get_layer("prod").filters == 2 * (groups - 1)


def test_whole_input_block_takes_its_group() -> None:
    model = grouped_model(2, 4, rows=2, per=3)
    deletion = kerasprune.dependency_group(model, "prod", [4, 5])  # group 2's input block
    assert deletion.neurons()["grouped"].tolist() == [6, 7, 8]
    pruned = assert_equivalent(model, "prod", [4, 5])
    assert (pruned.get_layer("grouped").groups, pruned.get_layer("grouped").filters) == (3, 9)


def test_whole_groups_and_rows_together() -> None:
    """Group 0 goes whole, and row 1 of the groups that stay: groups 3, one row each."""
    model = grouped_model(2, 4, rows=2, per=2)
    pruned = assert_equivalent(model, {"grouped": [0, 1], "prod": [3]})
    layer = pruned.get_layer("grouped")
    assert (layer.groups, layer.filters, layer.kernel.shape[-2]) == (3, 6, 1)
    assert pruned.get_layer("prod").filters == 3


@pytest.mark.parametrize("df", DATA_FORMATS)
@pytest.mark.parametrize("d", [1, 2, 3])
def test_data_formats(df: str, d: int) -> None:
    """Filters from every group and a kernel row at once; then a whole group."""
    model = grouped_model(d, 2, df, rows=3, per=3)
    pruned = assert_equivalent(model, {"grouped": [0, 4], "prod": [0]})
    assert pruned.get_layer("grouped").kernel.shape[-2:] == (2, 4)
    if d == 2:
        assert assert_equivalent(model, "grouped", [3, 4, 5]).get_layer("grouped").groups == 1


def test_residual_couples_a_grouped_convolution_with_its_partner() -> None:
    """A grouped convolution added to a plain one: a balanced deletion of the plain one goes;
    an unbalanced one is refused with the grouped layer's counts."""
    inp = keras.Input((5, 5, 3))
    x = L.Conv2D(4, 1, name="prod")(inp)
    a = L.Conv2D(4, 3, padding="same", groups=2, name="grouped")(x)
    b = L.Conv2D(4, 1, name="plain")(inp)
    y = L.Add(name="add")([a, b])
    y = L.GlobalAveragePooling2D()(L.Conv2D(2, 1, name="cons")(y))
    model = randomize(keras.Model(inp, L.Dense(2, name="out")(y)))
    assert_equivalent(model, "plain", [0, 3])
    with pytest.raises(PruneError, match=r"group 0: 1, group 1: 0.*1 more from group 1"):
        kerasprune.delete_neurons(model, "plain", [1])


def test_unbalanced_request_is_refused_before_anything_is_built() -> None:
    model = grouped_model(2, 2, per=4)
    before = [np.array(w) for w in model.get_weights()]
    with pytest.raises(PruneError) as info:
        kerasprune.delete_neurons(model, "grouped", [0, 1, 4])
    message = str(info.value)
    for fragment in ("layer 'grouped' (Conv2D), a grouped convolution (groups=2)",
                     "group 0: 2, group 1: 1", "filters [0, 1, 4]", "2 from each",
                     "1 more from group 1", "all 4 filters of a group"):
        assert fragment in message, (fragment, message)
    for got, want in zip(model.get_weights(), before, strict=True):
        np.testing.assert_array_equal(got, want)


def test_whole_group_on_a_model_input_is_refused() -> None:
    inp = keras.Input((5, 5, 4))
    x = L.Conv2D(4, 3, groups=2, name="grouped")(inp)
    model = keras.Model(inp, L.Conv2D(2, 1, name="cons")(x))
    assert_equivalent(model, "grouped", [1, 3])  # balanced: the input stays
    with pytest.raises(PruneError, match="model input"):
        kerasprune.delete_neurons(model, "grouped", [0, 1])


def test_prune_to_a_flops_budget_keeps_groups_balanced() -> None:
    model = grouped_model(2, 4, rows=2, per=4)
    result = kerasprune.prune(model, flops=0.6)
    request = {k: v for step in result.steps for k, v in step.plan.request.items()}
    gone = request["grouped"]
    per_group = np.bincount(gone // 4, minlength=4)
    assert per_group.min() == per_group.max() > 0, gone
    layer = result.model.get_layer("grouped")
    assert (layer.groups, layer.filters) == (4, 16 - gone.size)
    assert len(result.steps) == 1
    assert_equivalent(model, request)


def test_every_layer_reports_prunable() -> None:
    model = grouped_model(2, 2)
    found: dict[str, Any] = {p.layer: p for p in kerasprune.prunable_layers(model)}
    assert found["grouped"].prunable and found["prod"].prunable


def test_trim_deletes_as_many_from_every_group() -> None:
    """APoZ trimming evens its selection out over the groups (as many from each as the group
    that qualifies fewest: its highest-APoZ filters)."""
    model = grouped_model(2, 2, per=4)
    model.compile(optimizer="sgd", loss=keras.losses.SparseCategoricalCrossentropy(
        from_logits=True))
    rng = np.random.default_rng(0)
    x = rng.standard_normal((16, 5, 5, 3)).astype("float32")
    data = (x, rng.integers(0, 2, 16))
    result = kerasprune.trim(model, data, data, layers=["grouped"], method="top",
                             fraction=0.4, epochs=0, max_rounds=1, tolerance=1.0, verbose=0,
                             metric="loss")
    gone = np.asarray(result.history[1].deleted["grouped"])
    assert gone.size and np.bincount(gone // 4, minlength=2).tolist() == [gone.size // 2] * 2
    assert result.model.get_layer("grouped").groups == 2
