"""A layer class of the user's own, pruned through with a rule registered for it: the README's
"Custom layers" example, checked by the oracle."""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any

import keras
import numpy as np
import pytest
from backends import as_numpy
from oracle import assert_equivalent, randomize

import kerasprune
from kerasprune.core.graph import LayerSpec, PruneError, Shape
from kerasprune.core.rules import (
    RULES,
    ChannelScale,
    Elementwise,
    Link,
    UnsupportedLayerError,
    WeightAxis,
)

# --- the README's example, as it is written there ---------------------------------------------


@keras.saving.register_keras_serializable(package="my_layers")
class ChannelwiseScale(keras.layers.Layer):
    """Multiplies each channel (the last axis) by a factor of its own."""

    def build(self, input_shape: Any) -> None:
        self.factor = self.add_weight(shape=(input_shape[-1],), initializer="ones",
                                      name="factor")

    def call(self, x: Any) -> Any:
        return x * self.factor


class ChannelwiseScaleRule(Elementwise):
    """ChannelwiseScale keeps every channel in place; ``factor[c]`` belongs to channel c."""

    slices = frozenset({"factor"})  # the weights this rule knows how to slice

    def link(self, spec: LayerSpec, in_shapes: Sequence[Shape], out_shape: Shape,
             axis: int) -> Link | None:
        if axis != len(in_shapes[0]) - 1:  # factor scales the last axis only
            raise UnsupportedLayerError(f"{self.describe(spec)} scales the last axis only")
        return super().link(spec, in_shapes, out_shape, axis)

    def weight_axes(self, spec: LayerSpec, axes: Sequence[int | None]) -> list[WeightAxis]:
        return [WeightAxis("factor", axis=0, space=0)]  # axis 0 of factor: input 0's channels


my_rules = RULES.copy()
my_rules.register(ChannelwiseScaleRule(), "ChannelwiseScale")  # the kind is the class name

# ------------------------------------------------------------------------------------------------


def _model(data_format: str = "channels_last") -> keras.Model:
    shape = (8, 8, 3) if data_format == "channels_last" else (3, 8, 8)
    model = keras.Sequential([
        keras.Input(shape),
        keras.layers.Conv2D(6, 3, data_format=data_format, name="conv"),
        ChannelwiseScale(name="scale"),
        keras.layers.ReLU(name="relu"),
        keras.layers.GlobalAveragePooling2D(data_format=data_format, name="gap"),
        keras.layers.Dense(2, name="out"),
    ])
    return randomize(model)


def test_a_custom_layer_is_pruned_through_with_a_registered_rule() -> None:
    model = _model()
    pruned = assert_equivalent(model, "conv", [1, 4], rules=my_rules)
    assert tuple(pruned.get_layer("scale").factor.shape) == (4,)
    np.testing.assert_array_equal(as_numpy(pruned.get_layer("scale").factor),
                                  np.delete(as_numpy(model.get_layer("scale").factor), [1, 4]))
    assert tuple(model.get_layer("scale").factor.shape) == (6,)  # the input is untouched
    group = kerasprune.dependency_group(model, "conv", [0], rules=my_rules)
    assert list(group.layers()) == ["conv", "scale", "relu", "gap", "out"]
    # the rules reach what reads a model too: which layers can lose neurons, and the costs
    conv = next(p for p in kerasprune.prunable_layers(model, rules=my_rules) if p.layer == "conv")
    assert conv.prunable and conv.group == ("conv",), conv
    assert "ChannelwiseScale" in next(p.reason for p in kerasprune.prunable_layers(model)
                                      if p.layer == "conv")
    scale = next(c for c in kerasprune.costs(model, rules=my_rules) if c.name == "scale")
    assert scale.params == 6


def test_without_the_rule_the_error_says_how_to_add_one() -> None:
    with pytest.raises(PruneError, match=r"no rule for ChannelwiseScale.*Custom layers"):
        kerasprune.delete_neurons(_model(), "conv", [1])
    assert "ChannelwiseScale" not in RULES  # the registration went into a copy only


def test_the_rule_refuses_channels_on_another_axis() -> None:
    if keras.backend.backend() == "tensorflow":
        pytest.skip("TensorFlow on the CPU cannot run channels_first convolutions")
    with pytest.raises(UnsupportedLayerError, match="scales the last axis only"):
        kerasprune.delete_neurons(_model("channels_first"), "conv", [1], rules=my_rules)


def test_the_exported_channel_scale_rule_does_the_same() -> None:
    shortcut = RULES.copy()
    shortcut.register(ChannelScale(), "ChannelwiseScale")
    model = _model()
    pruned = assert_equivalent(model, "conv", [0, 5], rules=shortcut)
    assert tuple(pruned.get_layer("scale").factor.shape) == (4,)


def test_layer_kinds_is_deprecated() -> None:
    from kerasprune.adapters import keras as adapter

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        kinds = adapter.LAYER_KINDS
    assert isinstance(kinds, dict)
    assert any(issubclass(w.category, DeprecationWarning) and "rules=" in str(w.message)
               for w in caught)
