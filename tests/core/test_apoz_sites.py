"""Tests of kerasprune.core.apoz.measurement_sites: where each layer's zeros are counted.

Pure NumPy: graphs are built by hand, nothing here imports keras or tensorflow.
"""

from __future__ import annotations

import warnings
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kerasprune.core.apoz import (
    ApozWarning,
    Site,
    measurement_site,
    measurement_sites,
)
from kerasprune.core.graph import Graph, LayerSpec, Node, PruneError

FAST = settings(max_examples=60, deadline=None)

IMG = (8, 8, 4)  # channels_last feature map of a 4-filter convolution


def spec(name: str, kind: str, **attrs: Any) -> LayerSpec:
    return LayerSpec(name, kind, attrs)


def conv(name: str = "conv", activation: str = "linear", **attrs: Any) -> LayerSpec:
    return spec(name, "Conv2D", filters=4, activation=activation,
                data_format=attrs.pop("data_format", "channels_last"), **attrs)


def chain(input_shape: tuple[int, ...], *layers: tuple[LayerSpec, tuple[int, ...]]) -> Graph:
    return Graph.chain(input_shape, [s for s, _ in layers], [shape for _, shape in layers])


def head(*layers: tuple[LayerSpec, tuple[int, ...]]) -> Graph:
    """``input -> conv (linear) -> layers... -> dense (softmax)``: the conv's chain is tested."""
    return chain((8, 8, 3), (conv(), IMG), *layers,
                 (spec("out", "Dense", units=3, activation="softmax"), (3,)))


# --------------------------------------------------------------------------------------------
# Where the zeros are
# --------------------------------------------------------------------------------------------


def test_own_relu_is_measured_at_the_layer_itself() -> None:
    graph = chain((5,), (spec("fc", "Dense", units=6, activation="relu"), (6,)),
                  (spec("drop", "Dropout"), (6,)),
                  (spec("out", "Dense", units=2, activation="softmax"), (2,)))
    assert measurement_site(graph, "fc") == Site("fc", 1, 0, ("fc",))


def test_conv_bn_relu_is_measured_after_the_relu() -> None:
    graph = head((spec("bn", "BatchNormalization", axis=-1), IMG), (spec("relu", "ReLU"), IMG))
    site = measurement_site(graph, "conv")
    assert site == Site("relu", 3, 2, ("conv", "bn", "relu"))


def test_dense_then_activation_relu() -> None:
    graph = chain((5,), (spec("fc", "Dense", units=6, activation="linear"), (6,)),
                  (spec("act", "Activation", activation="relu"), (6,)),
                  (spec("out", "Dense", units=2), (2,)))
    assert measurement_site(graph, "fc").layer == "act"


@pytest.mark.parametrize("activation", ["relu", "relu6"])
def test_activation_layers_that_make_zeros(activation: str) -> None:
    graph = head((spec("act", "Activation", activation=activation), IMG))
    assert measurement_site(graph, "conv").layer == "act"


def test_relu_with_max_value_makes_zeros_but_leaky_does_not() -> None:
    graph = head((spec("leaky", "ReLU", negative_slope=0.1), IMG),
                 (spec("capped", "ReLU", max_value=6.0, negative_slope=0.0), IMG))
    assert measurement_site(graph, "conv").chain == ("conv", "leaky", "capped")


def test_follows_identity_pass_through_layers() -> None:
    graph = head(
        (spec("bn", "BatchNormalization", axis=-1), IMG),
        (spec("drop", "Dropout"), IMG),
        (spec("pad", "ZeroPadding2D", data_format="channels_last"), (10, 10, 4)),
        (spec("pool", "MaxPooling2D", data_format="channels_last", pool_size=2), (5, 5, 4)),
        (spec("tanh", "Activation", activation="tanh"), (5, 5, 4)),
        (spec("gap", "GlobalAveragePooling2D", data_format="channels_last"), (4,)),
        (spec("relu", "ReLU"), (4,)),
    )
    site = measurement_site(graph, "conv")
    assert site.layer == "relu"
    assert site.axis == 0  # global pooling moved the channels to axis 0
    assert site.chain == ("conv", "bn", "drop", "pad", "pool", "tanh", "gap", "relu")


def test_channels_first() -> None:
    shape = (4, 8, 8)
    graph = chain((3, 8, 8), (conv(data_format="channels_first"), shape),
                  (spec("bn", "BatchNormalization", axis=1), shape),
                  (spec("relu", "ReLU"), shape),
                  (spec("out", "Dense", units=2), (4, 8, 2)))
    site = measurement_site(graph, "conv")
    assert (site.layer, site.axis) == ("relu", 0)


def test_a_relu_conv_is_measured_even_if_its_output_branches() -> None:
    nodes = (Node("conv", (0,), (1,)), Node("a", (1,), (2,)), Node("b", (1,), (3,)))
    graph = Graph(
        layers={"conv": conv(activation="relu"),
                "a": spec("a", "Conv2D", filters=2, data_format="channels_last"),
                "b": spec("b", "Conv2D", filters=2, data_format="channels_last")},
        nodes=nodes, shapes={0: (8, 8, 3), 1: IMG, 2: (8, 8, 2), 3: (8, 8, 2)},
        inputs=(0,), outputs=(2, 3))
    assert measurement_site(graph, "conv") == Site("conv", 1, 2, ("conv",))


# --------------------------------------------------------------------------------------------
# Where the chain stops
# --------------------------------------------------------------------------------------------


def test_model_output_without_relu() -> None:
    graph = head((spec("relu", "ReLU"), IMG))
    with pytest.raises(PruneError, match=r"'out' \(Dense\).*model output"):
        measurement_site(graph, "out")


def test_flatten_is_not_one_to_one() -> None:
    graph = head((spec("flat", "Flatten"), (256,)), (spec("relu", "ReLU"), (256,)))
    with pytest.raises(PruneError, match=r"'flat' \(Flatten\), which does not map channels"):
        measurement_site(graph, "conv")


def test_stops_at_a_layer_with_neurons() -> None:
    graph = head((spec("bn", "BatchNormalization", axis=-1), IMG),
                 (spec("conv2", "Conv2D", filters=4, activation="relu",
                       data_format="channels_last"), IMG))
    with pytest.raises(PruneError, match=r"'conv2' \(Conv2D\), which makes channels"):
        measurement_site(graph, "conv")
    assert measurement_site(graph, "conv2").layer == "conv2"


def test_stops_at_a_channel_mixing_activation() -> None:
    graph = head((spec("soft", "Activation", activation="softmax"), IMG),
                 (spec("relu", "ReLU"), IMG))
    with pytest.raises(PruneError, match=r"'soft' \(Activation\), which does not keep"):
        measurement_site(graph, "conv")


def residual() -> Graph:
    """``x -> c1 -> relu1 -> c2 -> bn -> add(bn, relu1) -> relu2 -> out``, and ``c3 -> bn3``
    whose output feeds both ``relu3`` and ``out2``."""
    layers = [conv("c1", "linear"), spec("relu1", "ReLU"), conv("c2"),
              spec("bn", "BatchNormalization", axis=-1), spec("add", "Add"),
              spec("relu2", "ReLU"), spec("out", "Dense", units=2),
              conv("c3"), spec("bn3", "BatchNormalization", axis=-1), spec("relu3", "ReLU"),
              spec("out2", "Dense", units=2), spec("out3", "Dense", units=2)]
    nodes = (Node("c1", (0,), (1,)), Node("relu1", (1,), (2,)), Node("c2", (2,), (3,)),
             Node("bn", (3,), (4,)), Node("add", (4, 2), (5,)), Node("relu2", (5,), (6,)),
             Node("out", (6,), (7,)), Node("c3", (0,), (8,)), Node("bn3", (8,), (9,)),
             Node("relu3", (9,), (10,)), Node("out2", (10,), (11,)), Node("out3", (9,), (12,)))
    shapes = {t: IMG for t in range(13)}
    shapes.update({0: (8, 8, 3), 7: (8, 8, 2), 11: (8, 8, 2), 12: (8, 8, 2)})
    return Graph({s.name: s for s in layers}, nodes, shapes, (0,), (7, 11, 12))


def test_stops_at_a_merge() -> None:
    graph = residual()
    assert measurement_site(graph, "c1").layer == "relu1"
    with pytest.raises(PruneError, match=r"'add' \(Add\), which has several inputs"):
        measurement_site(graph, "c2")


def test_stops_where_the_chain_branches() -> None:
    with pytest.raises(PruneError, match=r"'bn3' .* goes to 2 layers .*'relu3'.*'out3'"):
        measurement_site(residual(), "c3")


def test_unused_output() -> None:
    graph = Graph({"conv": conv()}, (Node("conv", (0,), (1,)),), {0: (8, 8, 3), 1: IMG},
                  (0,), ())
    with pytest.raises(PruneError, match=r"not used by any layer"):
        measurement_site(graph, "conv")


def test_layers_without_neurons_unknown_and_shared_layers() -> None:
    graph = head((spec("bn", "BatchNormalization", axis=-1), IMG), (spec("relu", "ReLU"), IMG))
    with pytest.raises(PruneError, match=r"'bn' \(BatchNormalization\) has no neurons"):
        measurement_site(graph, "bn")
    with pytest.raises(PruneError, match=r"no layer named 'cnov'.*'conv'"):
        measurement_site(graph, "cnov")
    shared = Graph({"fc": spec("fc", "Dense", units=3, activation="relu")},
                   (Node("fc", (0,), (1,)), Node("fc", (1,), (2,))),
                   {0: (3,), 1: (3,), 2: (3,)}, (0,), (2,))
    with pytest.raises(PruneError, match=r"shared .called 2 times"):
        measurement_site(shared, "fc")


# --------------------------------------------------------------------------------------------
# Several layers: explicit names raise, the default skips with one warning
# --------------------------------------------------------------------------------------------


def test_all_layers_skips_unmeasurable_ones_with_one_warning() -> None:
    graph = residual()
    with pytest.warns(ApozWarning) as record:
        sites = measurement_sites(graph)
    assert list(sites) == ["c1"]
    assert len(record) == 1
    message = str(record[0].message)
    for name in ("c2", "c3", "out", "out2", "out3"):
        assert f"'{name}'" in message
    assert "model output" in message and "Add" in message


def test_left_out_layers_are_neither_measured_nor_warned_about() -> None:
    graph = chain((5,), (spec("a", "Dense", units=4, activation="relu"), (4,)),
                  (spec("b", "Dense", units=4, activation="linear"), (4,)),
                  (spec("c", "Dense", units=2, activation="softmax"), (2,)))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        sites = measurement_sites(graph, leave_out=["b", "c"])
    assert list(sites) == ["a"]
    with pytest.warns(ApozWarning, match="'b'") as record:
        assert list(measurement_sites(graph, leave_out=["c"])) == ["a"]
    assert "'c'" not in str(record[0].message)


def test_named_layers_raise_and_keep_their_order() -> None:
    graph = chain((5,), (spec("a", "Dense", units=4, activation="relu"), (4,)),
                  (spec("b", "Dense", units=4, activation="relu"), (4,)),
                  (spec("c", "Dense", units=2, activation="softmax"), (2,)))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        sites = measurement_sites(graph, ["b", "a", "b"])
    assert list(sites) == ["b", "a"]
    with pytest.raises(PruneError, match=r"'c' \(Dense\).*model output"):
        measurement_sites(graph, ["a", "c"])


def test_nothing_measurable_is_an_error() -> None:
    graph = chain((5,), (spec("c", "Dense", units=2, activation="softmax"), (2,)))
    with pytest.raises(PruneError, match=r"(?s)no layer of the model can be measured.*'c'"):
        measurement_sites(graph)


def test_adapter_check_refuses_sites() -> None:
    graph = head((spec("bn", "BatchNormalization", axis=-1), IMG), (spec("relu", "ReLU"), IMG))

    def check(g: Graph, site: Site) -> str | None:
        assert g is graph
        return "it is nested" if site.layer == "relu" else None

    with pytest.raises(PruneError, match=r"'conv' .* at 'relu' \(ReLU\): it is nested"):
        measurement_sites(graph, ["conv"], check=check)
    with pytest.raises(PruneError, match=r"it is nested"):
        measurement_sites(graph, check=check)  # out has no ReLU either: nothing left


# --------------------------------------------------------------------------------------------
# Property: the site is the first zero-producing layer, if only identity layers precede it
# --------------------------------------------------------------------------------------------

# (kind, attrs, passes channels one to one, makes zeros)
PIECES: list[tuple[str, dict[str, Any], bool, bool]] = [
    ("BatchNormalization", {"axis": -1}, True, False),
    ("Dropout", {}, True, False),
    ("ZeroPadding2D", {"data_format": "channels_last"}, True, False),
    ("Activation", {"activation": "tanh"}, True, False),
    ("LeakyReLU", {"negative_slope": 0.2}, True, False),
    ("ReLU", {"negative_slope": 0.3}, True, False),
    ("ReLU", {}, True, True),
    ("Activation", {"activation": "relu"}, True, True),
    ("Conv2D", {"filters": 4, "data_format": "channels_last", "activation": "relu"}, False, True),
    ("Conv2D", {"filters": 4, "data_format": "channels_last"}, False, False),
    ("Activation", {"activation": "softmax"}, False, False),
]


@FAST
@given(st.lists(st.integers(0, len(PIECES) - 1), min_size=1, max_size=6),
       st.sampled_from(["linear", "relu"]))
def test_site_is_first_zeroing_layer_after_identities(picks: list[int], activation: str) -> None:
    layers = [(conv("conv", activation), IMG)]
    for i, pick in enumerate(picks):
        kind, attrs, _, _ = PIECES[pick]
        layers.append((spec(f"l{i}", kind, **attrs), IMG))
    graph = chain((8, 8, 3), *layers, (spec("out", "Dense", units=2), (8, 8, 2)))
    expected: str | None = None
    if activation == "relu":
        expected = "conv"
    else:
        for i, pick in enumerate(picks):
            _, _, identity, zeros = PIECES[pick]
            if identity and zeros:
                expected = f"l{i}"
            if zeros or not identity:
                break
    if expected is None:
        with pytest.raises(PruneError, match=r"no zero-producing non-linearity"):
            measurement_site(graph, "conv")
    else:
        site = measurement_site(graph, "conv")
        assert site.layer == expected
        assert site.chain[0] == "conv" and site.chain[-1] == expected
        assert site.tensor == graph.calls(expected)[0].outputs[0]
