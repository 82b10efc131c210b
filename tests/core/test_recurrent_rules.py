"""Recurrent layers and their wrappers on hand-built graphs (NumPy only): which weights a
deletion slices, gate by gate, how states tie layers together, Bidirectional halves,
TimeDistributed, and the refusals."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import numpy as np
import pytest

from kerasprune.core.cost import count, total
from kerasprune.core.criteria import WeightNorm
from kerasprune.core.graph import Graph, LayerSpec, Node, PruneError
from kerasprune.core.groups import analyze_channels
from kerasprune.core.rules import OUT, UnsupportedLayerError, WeightAxis, rule_for
from kerasprune.core.surgery import apply_deletion, delete_neurons, dependency_group

RNG = np.random.default_rng(7)
GATES = {"SimpleRNN": 1, "GRU": 3, "LSTM": 4}


def w(*shape: int) -> np.ndarray:
    return RNG.standard_normal(shape)


def rnn(name: str, kind: str, n_in: int, units: int, *, bias: tuple[int, ...] | None = None,
        **attrs: Any) -> LayerSpec:
    g = GATES[kind]
    weights = {"kernel": w(n_in, g * units), "recurrent_kernel": w(units, g * units),
               "bias": w(*(bias or (g * units,)))}
    return LayerSpec(name, kind, {"units": units, **attrs}, weights)


def dense(name: str, n_in: int, units: int) -> LayerSpec:
    return LayerSpec(name, "Dense", {"units": units}, {"kernel": w(n_in, units),
                                                       "bias": w(units)})


def graph(layers: list[LayerSpec], nodes: list[tuple[str, tuple[int, ...], tuple[int, ...]]],
          shapes: dict[int, tuple[int, ...]], outputs: tuple[int, ...],
          inputs: tuple[int, ...] = (0,)) -> Graph:
    return Graph({s.name: s for s in layers}, tuple(Node(n, i, o) for n, i, o in nodes),
                 shapes, inputs, outputs)


def columns(units: int, gates: int, kept: list[int]) -> np.ndarray:
    """The kernel columns of the kept units, gate block by gate block."""
    return np.concatenate([g * units + np.array(kept) for g in range(gates)])


# --- WeightAxis -------------------------------------------------------------------------------


def test_entries_of_blocks_repeats_and_spans() -> None:
    kept = np.array([0, 2])
    assert WeightAxis("k", 1, OUT, blocks=3).entries(kept, 12).tolist() == [0, 2, 4, 6, 8, 10]
    assert WeightAxis("k", 1, OUT, repeat=2).entries(kept, 6).tolist() == [0, 1, 4, 5]
    assert WeightAxis("k", 1, OUT, repeat=2, blocks=2).entries(kept, 12).tolist() == [
        0, 1, 4, 5, 6, 7, 10, 11]
    # a span takes its part of the space, numbered from 0
    assert WeightAxis("k", 1, OUT, span=(2, 5)).entries(np.array([0, 3, 4]), 3).tolist() == [
        1, 2]
    assert WeightAxis("k", 1, OUT, span=(2, 5), blocks=2).entries(
        np.array([1, 3]), 6).tolist() == [1, 4]


# --- one recurrent layer ---------------------------------------------------------------------


@pytest.mark.parametrize("kind, bias", [("SimpleRNN", None), ("GRU", None), ("GRU", (2, 9)),
                                        ("LSTM", None)])
def test_units_go_gate_by_gate_and_consumers_lose_rows(kind: str,
                                                       bias: tuple[int, ...] | None) -> None:
    g = GATES[kind]
    units = 3 if kind == "GRU" else 4
    if bias is not None:
        bias = (2, g * units)
    layers = [dense("d", 2, 5), rnn("r", kind, 5, units, bias=bias), dense("out", units, 2)]
    nodes = [("d", (0,), (1,)), ("r", (1,), (2,)), ("out", (2,), (3,))]
    g0 = graph(layers, nodes, {0: (6, 2), 1: (6, 5), 2: (units,), 3: (2,)}, (3,))
    new = delete_neurons(g0, "r", [1])
    kept = [u for u in range(units) if u != 1]
    old, r = g0.layers["r"].weights, new.layers["r"].weights
    cols = columns(units, g, kept)
    np.testing.assert_array_equal(r["kernel"], old["kernel"][:, cols])
    np.testing.assert_array_equal(r["recurrent_kernel"], old["recurrent_kernel"][kept][:, cols])
    np.testing.assert_array_equal(r["bias"], old["bias"][..., cols])
    np.testing.assert_array_equal(new.layers["out"].weights["kernel"],
                                  g0.layers["out"].weights["kernel"][kept])
    assert new.layers["r"].attrs["units"] == units - 1
    assert new.shapes[2] == (units - 1,)

    # its input features: kernel rows only
    fed = delete_neurons(g0, "d", [0, 3])
    np.testing.assert_array_equal(fed.layers["r"].weights["kernel"], old["kernel"][[1, 2, 4]])
    assert fed.layers["r"].weights["recurrent_kernel"] is old["recurrent_kernel"]


def test_flops_count_every_step() -> None:
    layers = [rnn("r", "LSTM", 3, 4, return_sequences=True), dense("out", 4, 2)]
    g0 = graph(layers, [("r", (0,), (1,)), ("out", (1,), (2,))], {0: (7, 3), 1: (7, 4),
                                                                  2: (7, 2)}, (2,))
    costs = {c.name: c for c in count(g0)}
    assert costs["r"].flops == 7 * (2 * (3 * 16 + 4 * 16) + 16)
    assert costs["r"].width == 4
    smaller = {c.name: c for c in count(delete_neurons(g0, "r", [0, 1]))}
    assert smaller["r"].flops == 7 * (2 * (3 * 8 + 2 * 8) + 8)
    assert smaller["r"].params == 3 * 8 + 2 * 8 + 8
    assert total(count(g0))[1] > total(smaller.values())[1]


# --- states ----------------------------------------------------------------------------------


def encoder_decoder(with_roles: bool = True) -> Graph:
    """x -> enc (LSTM, sequences + h + c) -> dec(seq, initial_state=[h, c]); out reads dec's
    output and enc's h."""
    roles = {"input_args": ("", "initial_state", "initial_state")} if with_roles else {}
    layers = [rnn("enc", "LSTM", 3, 4, return_sequences=True, return_state=True),
              rnn("dec", "LSTM", 4, 4, **roles), dense("head", 4, 2), dense("hh", 4, 2)]
    nodes = [("enc", (0,), (1, 2, 3)), ("dec", (1, 2, 3), (4,)), ("head", (4,), (5,)),
             ("hh", (2,), (6,))]
    shapes = {0: (5, 3), 1: (5, 4), 2: (4,), 3: (4,), 4: (4,), 5: (2,), 6: (2,)}
    return graph(layers, nodes, shapes, (5, 6))


@pytest.mark.parametrize("with_roles", [True, False])
def test_states_tie_an_encoder_to_its_decoder(with_roles: bool) -> None:
    g0 = encoder_decoder(with_roles)
    for target in ("enc", "dec"):  # either way, both lose the unit
        deletion = dependency_group(g0, target, [2])
        assert set(deletion.neurons()) == {"enc", "dec"}
        assert all(deletion.tensors[t][1].tolist() == [2] for t in (1, 2, 3, 4))
    new = delete_neurons(g0, "dec", [2])
    assert new.shapes[2] == new.shapes[3] == (3,)
    assert new.layers["hh"].weights["kernel"].shape == (3, 2)  # reads enc's state h
    # dec reads enc's sequence: its kernel loses the row, and its own unit gate by gate
    old = g0.layers["dec"].weights["kernel"]
    np.testing.assert_array_equal(new.layers["dec"].weights["kernel"],
                                  old[[0, 1, 3]][:, columns(4, 4, [0, 1, 3])])


def test_an_initial_state_from_a_model_input_cannot_change() -> None:
    layers = [rnn("r", "GRU", 3, 4, input_args=("", "initial_state")), dense("out", 4, 2)]
    g0 = graph(layers, [("r", (0, 1), (2,)), ("out", (2,), (3,))],
               {0: (5, 3), 1: (4,), 2: (4,), 3: (2,)}, (3,), inputs=(0, 1))
    with pytest.raises(PruneError, match="model input"):
        dependency_group(g0, "r", [0])


def test_a_mask_is_not_a_state() -> None:
    """The mask (5,) of a 5-unit layer has a state's shape: the recorded argument names say
    it is not one."""
    layers = [rnn("r", "SimpleRNN", 3, 5, input_args=("", "mask")), dense("out", 5, 2),
              LayerSpec("m", "op:any", {})]
    g0 = graph(layers, [("m", (0,), (1,)), ("r", (0, 1), (2,)), ("out", (2,), (3,))],
               {0: (5, 3), 1: (5,), 2: (5,), 3: (2,)}, (3,))
    new = delete_neurons(g0, "r", [4])
    assert new.shapes[1] == (5,) and new.shapes[2] == (4,)


# --- wrappers ----------------------------------------------------------------------------------


def bidirectional(mode: str, units: int = 3, state: bool = False) -> Graph:
    inner = {"class_name": "GRU", "config": {"units": units, "return_sequences": True,
                                             "return_state": state}}
    weights: dict[str, np.ndarray] = {}
    for i, key in enumerate(["kernel", "recurrent_kernel", "bias"] * 2):
        shape = {"kernel": (4, 3 * units), "recurrent_kernel": (units, 3 * units),
                 "bias": (2, 3 * units)}[key]
        weights[key if i < 3 else f"{key}#{i}"] = w(*shape)
    spec = LayerSpec("bi", "Bidirectional", {"merge_mode": mode, "layer": inner,
                                              "backward_layer": inner}, weights)
    width = 2 * units if mode == "concat" else units
    outs = (1, 3, 4) if state else (1,)
    layers = [spec, dense("out", width, 2)]
    nodes = [("bi", (0,), outs), ("out", (1,), (2,))]
    shapes = {0: (5, 4), 1: (width,), 2: (2,), 3: (units,), 4: (units,)}
    if state:
        layers.append(dense("hs", units, 2))
        nodes.append(("hs", (4,), (5,)))
        shapes[5] = (2,)
    return graph(layers, nodes, shapes, (2, 5) if state else (2,))


def test_bidirectional_concat_directions_lose_the_same_units() -> None:
    """Channels 0..2 are the forward layer's, 3..5 the backward's; Keras needs as many units
    in both, so unit j of one direction goes with unit j of the other."""
    g0 = bidirectional("concat")
    deletion = dependency_group(g0, "bi", [0, 4])
    assert deletion.tensors[1][1].tolist() == [0, 1, 3, 4]
    new = apply_deletion(deletion)
    old, bi = g0.layers["bi"].weights, new.layers["bi"].weights
    for key in ("kernel", "kernel#3"):
        np.testing.assert_array_equal(bi[key], old[key][:, columns(3, 3, [2])])
    np.testing.assert_array_equal(bi["recurrent_kernel#4"],
                                  old["recurrent_kernel#4"][[2]][:, columns(3, 3, [2])])
    np.testing.assert_array_equal(new.layers["out"].weights["kernel"],
                                  g0.layers["out"].weights["kernel"][[2, 5]])
    assert new.layers["bi"].attrs["layer"]["config"]["units"] == 1
    assert new.layers["bi"].attrs["backward_layer"]["config"]["units"] == 1
    # a rule set that let the halves differ would build a layer Keras cannot: refused
    weights = dict(old, kernel=old["kernel"][:, :6], recurrent_kernel=old[
        "recurrent_kernel"][:2, :6], bias=old["bias"][:, :6])
    with pytest.raises(UnsupportedLayerError, match="2 forward and 3 backward units"):
        rule_for("Bidirectional").attr_updates(replace(g0.layers["bi"], weights=weights),
                                               [(5, 4)], (5, 5), [None])


def test_bidirectional_states_follow_their_half() -> None:
    g0 = bidirectional("concat", state=True)  # outputs: merged, forward h, backward h
    deletion = dependency_group(g0, "hs", [1], allow_output_change=True)
    assert 1 not in deletion.tensors  # hs makes its own outputs; nothing reaches bi
    deletion = dependency_group(g0, "bi", [1], allow_output_change=True)
    assert deletion.tensors[1][1].tolist() == [1, 4]
    assert deletion.tensors[3][1].tolist() == [1]  # forward state, forward unit 1
    assert deletion.tensors[4][1].tolist() == [1]  # backward state, backward unit 1
    new = apply_deletion(deletion)
    assert new.layers["hs"].weights["kernel"].shape == (2, 2)


@pytest.mark.parametrize("mode", ["sum", "mul", "ave"])
def test_bidirectional_merged_directions_lose_the_same_units(mode: str) -> None:
    g0 = bidirectional(mode)
    new = delete_neurons(g0, "bi", [2])
    for key in ("recurrent_kernel", "recurrent_kernel#4"):
        old = g0.layers["bi"].weights[key]
        np.testing.assert_array_equal(new.layers["bi"].weights[key],
                                      old[[0, 1]][:, columns(3, 3, [0, 1])])


def test_time_distributed_dense_is_a_dense_on_each_step() -> None:
    td = LayerSpec("td", "TimeDistributed", {"layer": {"class_name": "Dense",
                                                       "config": {"units": 4}}},
                   {"kernel": w(3, 4), "bias": w(4)})
    layers = [td, rnn("r", "SimpleRNN", 4, 2)]
    g0 = graph(layers, [("td", (0,), (1,)), ("r", (1,), (2,))], {0: (6, 3), 1: (6, 4),
                                                                   2: (2,)}, (2,))
    new = delete_neurons(g0, "td", [3])
    np.testing.assert_array_equal(new.layers["td"].weights["kernel"],
                                  g0.layers["td"].weights["kernel"][:, :3])
    assert new.layers["td"].attrs["layer"]["config"]["units"] == 3
    assert new.layers["r"].weights["kernel"].shape == (3, 2)
    assert {c.name: c.flops for c in count(g0)}["td"] == 6 * (2 * 12 + 4)


def test_wrappers_name_what_they_hold_when_they_refuse() -> None:
    cell = LayerSpec("r", "RNN", {"cell": {"class_name": "StackedRNNCells", "config": {}}})
    g0 = graph([dense("d", 3, 4), cell], [("d", (0,), (1,)), ("r", (1,), (2,))],
               {0: (5, 3), 1: (5, 4), 2: (2,)}, (2,))
    with pytest.raises(PruneError, match=r"'r' \(RNN\) holds a StackedRNNCells"):
        dependency_group(g0, "r", [0])
    with pytest.raises(PruneError, match="StackedRNNCells"):
        dependency_group(g0, "d", [0])


def test_owners_invert_entries() -> None:
    for wa, size in ((WeightAxis("k", 1, OUT, blocks=3), 12), (WeightAxis("k", 1, OUT, repeat=2,
                                                                           blocks=2), 16),
                     (WeightAxis("k", 1, OUT, span=(2, 5), blocks=2), 6)):
        owners = wa.owners(5 if wa.span else 4, size)
        for c in range(5 if wa.span else 4):
            assert np.flatnonzero(owners == c).tolist() == sorted(
                wa.entries(np.array([c]), size).tolist())


def test_weight_norms_of_a_unit_cover_its_gates_and_rows() -> None:
    layers = [rnn("r", "LSTM", 3, 4), dense("out", 4, 2)]
    g0 = graph(layers, [("r", (0,), (1,)), ("out", (1,), (2,))], {0: (5, 3), 1: (4,), 2: (2,)},
               (2,))
    scores = WeightNorm("l1", 1).scores(analyze_channels(g0), "r", None)
    wts = g0.layers["r"].weights
    for u in range(4):
        cols = columns(4, 4, [u])
        rk = wts["recurrent_kernel"]
        want = (np.abs(wts["kernel"][:, cols]).sum() + np.abs(rk[:, cols]).sum()
                + np.abs(rk[u]).sum())
        assert scores[u] == pytest.approx(want)


def test_time_distributed_around_a_layer_without_neurons_passes_channels() -> None:
    conv = LayerSpec("tc", "TimeDistributed", {"layer": {"class_name": "Conv1D", "config": {
        "filters": 4, "data_format": "channels_last"}}}, {"kernel": w(2, 3, 4), "bias": w(4)})
    flat = LayerSpec("tf", "TimeDistributed", {"layer": {"class_name": "Flatten",
                                                         "config": {}}})
    layers = [conv, flat, rnn("r", "GRU", 20, 2)]
    g0 = graph(layers, [("tc", (0,), (1,)), ("tf", (1,), (2,)), ("r", (2,), (3,))],
               {0: (6, 5, 3), 1: (6, 5, 4), 2: (6, 20), 3: (2,)}, (3,))
    new = delete_neurons(g0, "tc", [1])
    assert new.shapes[2] == (6, 15)
    kept = [i for i in range(20) if i % 4 != 1]  # channels_last: position-major
    np.testing.assert_array_equal(new.layers["r"].weights["kernel"],
                                  g0.layers["r"].weights["kernel"][kept])
    with pytest.raises(PruneError, match=r"'tf' \(TimeDistributed\) holds a Flatten, which has "
                                          "no neurons"):
        dependency_group(g0, "tf", [0])


def test_channel_groups_follow_states_and_bidirectional_units() -> None:
    """The groups pruning plans use tie states and a Bidirectional layer's two directions as
    the closure does."""
    analysis = analyze_channels(encoder_decoder())
    group = analysis.group_of("enc")
    assert set(group.layers) == {"enc", "dec"} and group.prunable
    assert analysis.deletion({analysis.group_index["enc"]: [1]}).tensors.keys() == \
        dependency_group(encoder_decoder(), "enc", [1]).tensors.keys()
    bi = analyze_channels(bidirectional("concat", state=True), allow_output_change=True)
    assert bi.group_of("bi").width == 3  # unit j of both directions is one slot
    layers = [rnn("r", "GRU", 3, 4, input_args=("", "initial_state")), dense("out", 4, 2)]
    fed = graph(layers, [("r", (0, 1), (2,)), ("out", (2,), (3,))],
                {0: (5, 3), 1: (4,), 2: (4,), 3: (2,)}, (3,), inputs=(0, 1))
    assert "model input" in (analyze_channels(fed).group_of("r").why_not or "")
