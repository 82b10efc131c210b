"""Recurrent layers through the zeroing oracle, on random sequences: SimpleRNN, GRU (both
``reset_after``), LSTM, ``RNN`` around a cell, returned and initial states, stacks, Masking,
Bidirectional (every merge mode), TimeDistributed, ConvLSTM1D/2D; random recurrent stacks
(hypothesis); and the refusals.

The oracle (``oracle.zeroed_reference``): the pruned model equals the original with the
deleted units' outgoing weights zeroed, their consumers' rows and their own rows of the
recurrent kernel. Models are called directly (not through ``predict``) to keep the runtime
down.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

import keras
import numpy as np
import pytest
from backends import BACKEND, DATA_FORMATS, as_numpy
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from oracle import ATOL, randomize, zeroed_reference

import kerasprune
from kerasprune.core.graph import PruneError

L = keras.layers
RNNS = {"SimpleRNN": L.SimpleRNN, "GRU": L.GRU, "LSTM": L.LSTM}


_ON_TENSORFLOW = pytest.mark.skipif(
    BACKEND != "tensorflow", reason="a case run on TensorFlow only; other backends "
    "(slower to compile each recurrent call) run one case of each family and the "
    "channels_first ones")


def tf_only(*values: Any) -> Any:
    """A parameter set run on TensorFlow only."""
    return pytest.param(*values, marks=_ON_TENSORFLOW, id="-".join(map(str, values)))


def rand(*shape: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(shape).astype("float32")


def outputs(model: keras.Model, x: Any) -> list[np.ndarray]:
    return [as_numpy(y, dtype="float32") for y in keras.tree.flatten(model(x, training=False))]


def check(model: keras.Model, layer: Any, neurons: Any, x: Any, *,
          atol: float = ATOL, **kwargs: Any) -> keras.Model:
    """Delete and compare with the zeroed reference on ``x``; the reference must differ from
    the original where no output lost channels (the deletion is not vacuous)."""
    pruned = kerasprune.delete_neurons(model, layer, neurons, **kwargs)
    reference = zeroed_reference(model, layer, neurons, **kwargs)
    deletion = kerasprune.dependency_group(model, layer, neurons, **kwargs)
    got, want, original = outputs(pruned, x), outputs(reference, x), outputs(model, x)
    changed = False
    for t, g, r, o in zip(deletion.graph.outputs, got, want, original, strict=True):
        if t in deletion.tensors:
            axis, gone = deletion.tensors[t]
            r, o = np.delete(r, gone, axis=axis + 1), np.delete(o, gone, axis=axis + 1)
        assert g.shape == r.shape, (g.shape, r.shape)
        np.testing.assert_allclose(g, r, atol=atol, rtol=1e-4)
        changed = changed or not np.allclose(r, o, atol=atol)
    assert changed, "zeroing the deleted units' outgoing weights changed nothing"
    return pruned


@keras.saving.register_keras_serializable(package="kerasprune_tests")
class RecurrentTestZeros(keras.initializers.Initializer):
    """Zeros made by NumPy: JAX compiles every initializer anew for each weight shape (an
    orthogonal one takes seconds); ``randomize`` gives the weights their values."""

    def __call__(self, shape: Any, dtype: Any = None) -> Any:
        return np.zeros(shape, dtype=keras.backend.standardize_dtype(dtype or "float32"))

    def get_config(self) -> dict[str, Any]:
        return {}


def cheap(layer: Any) -> Any:
    """Make an unbuilt layer, and the layers and cells it holds, build with zeros."""
    for held in ("cell", "layer", "forward_layer", "backward_layer"):
        inner = getattr(layer, held, None)
        if isinstance(inner, (L.Layer, list)):
            for one in inner if isinstance(inner, list) else [inner]:
                cheap(one)
    for name in ("kernel", "recurrent", "bias"):
        if hasattr(layer, f"{name}_initializer"):
            with contextlib.suppress(AttributeError):  # an RNN's own: its cell's, read-only
                setattr(layer, f"{name}_initializer", RecurrentTestZeros())
    return layer


def model_of(inputs: Any, outputs: Any, seed: int = 0) -> keras.Model:
    return randomize(keras.Model(inputs, outputs), seed=seed)


def sequential(shape: tuple[int, ...], *layers: L.Layer, seed: int = 0) -> keras.Model:
    return randomize(keras.Sequential([keras.Input(shape), *map(cheap, layers)]), seed=seed)


def rnn(kind: str, units: int, **kwargs: Any) -> L.Layer:
    if kind == "GRU_before":
        return L.GRU(units, reset_after=False, **kwargs)
    return RNNS[kind](units, **kwargs)


KINDS = ["SimpleRNN", "GRU", "GRU_before", "LSTM"]


# --- one recurrent layer --------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["LSTM", "GRU_before", tf_only("GRU"), tf_only("SimpleRNN")])
def test_units_and_input_features(kind: str) -> None:
    model = sequential((5, 3), L.Dense(6, name="d"), rnn(kind, 4, return_sequences=True, name="r"),
                       rnn(kind, 3, name="last"), L.Dense(2, name="out"))
    x = rand(2, 5, 3)
    pruned = check(model, "r", [0, 2], x)  # returns sequences
    assert pruned.get_layer("r").units == 2
    assert pruned.get_layer("last").get_weights()[0].shape[0] == 2
    pruned = check(model, "last", [1], x)  # returns its last output
    assert pruned.get_layer("out").kernel.shape == (2, 2)
    pruned = check(model, "d", [1, 5], x)  # the recurrent layer's kernel loses rows
    assert pruned.get_layer("r").get_weights()[0].shape[0] == 4


def test_stacked_layers_masking_and_unroll() -> None:
    model = sequential((5, 3), L.Dense(6, name="d"), L.Masking(name="mask"),
                       L.LSTM(5, return_sequences=True, name="l1"),
                       L.GRU(4, return_sequences=True, unroll=True, name="l2"),
                       L.SimpleRNN(3, name="l3"), L.Dense(2, name="out"))
    x = rand(3, 5, 3)
    with pytest.raises(PruneError, match=r"masks the steps.*allow_inexact=True"):
        kerasprune.delete_neurons(model, "d", [0, 3])  # the mask would follow kept features
    # opted in: on random steps no kept features all equal mask_value, so the oracle holds
    check(model, "d", [0, 3], x, allow_inexact=True)  # through Masking into l1's kernel rows
    # the library's own oracle zeroes a unit's recurrent rows too: an exact deletion of
    # recurrent units deviates by rounding only, and one that feeds nothing would not
    assert kerasprune.deviation(model, {"l1": [1, 4], "l2": [0]}, data=x).max_abs < ATOL
    check(model, {"l1": [1, 4], "l2": [0], "l3": [2]}, None, x)


def test_rnn_around_a_keras_cell() -> None:
    model = sequential((5, 3), L.RNN(L.LSTMCell(4), return_sequences=True, name="r"),
                       L.RNN(L.GRUCell(3), name="r2"), L.Dense(2))
    pruned = check(model, {"r": [1], "r2": [0]}, None, rand(2, 5, 3))
    assert pruned.get_layer("r").cell.units == 3


# --- states -----------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", [tf_only("GRU"), "LSTM"])
def test_returned_and_initial_states(kind: str) -> None:
    """An encoder's states start a decoder: they lose the same units, whichever is named; a
    consumer of a returned state loses rows. Masking in front, with masked steps."""
    inp = keras.Input((6, 3))
    masked = L.Masking(name="mask")(inp)
    enc = cheap(RNNS[kind](5, return_sequences=True, return_state=True, name="enc"))(masked)
    seq, states = enc[0], enc[1:]
    dec = cheap(RNNS[kind](5, name="dec"))(seq, initial_state=states)
    out = L.Dense(2, name="out")(L.Concatenate()([dec, states[0]]))
    model = model_of(inp, out)
    x = rand(3, 6, 3)
    x[0, 4:] = 0.0  # masked steps
    for target in ("enc", "dec"):
        deletion = kerasprune.dependency_group(model, target, [1, 3])
        assert set(deletion.neurons()) == {"enc", "dec"}
        pruned = check(model, target, [1, 3], x)
    assert pruned.get_layer("out").kernel.shape == (6, 2)


def test_states_as_model_outputs() -> None:
    inp = keras.Input((4, 3))
    seq, h, c = cheap(L.LSTM(4, return_sequences=True, return_state=True, name="r"))(inp)
    model = model_of(inp, [L.Dense(2, name="out")(seq), h, c])
    with pytest.raises(PruneError, match="changes the model output"):
        kerasprune.delete_neurons(model, "r", [0])
    pruned = check(model, "r", [0], rand(2, 4, 3), allow_output_change=True)
    assert [tuple(o.shape) for o in pruned.outputs] == [(None, 4, 2), (None, 3), (None, 3)]


# --- Bidirectional -----------------------------------------------------------------------------


@pytest.mark.parametrize("kind, mode, neurons", [
    ("LSTM", "concat", [0, 5]), ("GRU", "sum", [1]), tf_only("LSTM", "mul", [2]),
    tf_only("GRU", "ave", [0, 3])])
def test_bidirectional(kind: str, mode: str, neurons: list[int]) -> None:
    model = sequential((5, 3), L.Dense(5, name="d"),
                       L.Bidirectional(RNNS[kind](4, return_sequences=True), merge_mode=mode,
                                       name="bi"),
                       L.GlobalAveragePooling1D(), L.Dense(2, name="out"))
    x = rand(2, 5, 3)
    pruned = check(model, "bi", neurons, x)
    bi = pruned.get_layer("bi")
    lost = len({n % 4 for n in neurons})  # concat: unit j of both directions
    assert bi.forward_layer.units == bi.backward_layer.units == 4 - lost
    if mode == "concat":
        check(model, "d", [2], x)


def test_bidirectional_with_states() -> None:
    inp = keras.Input((5, 3))
    seq, fh, _, _, bc = cheap(L.Bidirectional(
        L.LSTM(3, return_sequences=True, return_state=True), name="bi"))(inp)
    out = L.Dense(2, name="out")(L.Concatenate()([L.GlobalAveragePooling1D()(seq), fh, bc]))
    model = model_of(inp, out)
    pruned = check(model, "bi", [0, 4], rand(2, 5, 3))  # units 0 and 1 of both directions
    assert pruned.get_layer("out").kernel.shape == (4, 2)


# --- TimeDistributed, ConvLSTM -------------------------------------------------------------------


@pytest.mark.parametrize("data_format", [tf_only("channels_last"), DATA_FORMATS[1]])
def test_time_distributed_convolutions(data_format: str) -> None:
    shape = (4, 2, 6) if data_format == "channels_first" else (4, 6, 2)
    model = sequential(shape, L.TimeDistributed(L.Conv1D(5, 3, data_format=data_format),
                                                name="tc"),
                       L.TimeDistributed(L.Conv1D(3, 2, data_format=data_format), name="tc2"),
                       L.TimeDistributed(L.Flatten()), L.LSTM(3, name="r"), L.Dense(2))
    x = rand(2, *shape)
    pruned = check(model, "tc", [0, 4], x)
    assert pruned.get_layer("tc").layer.filters == 3
    check(model, "tc2", [1], x)


def test_time_distributed_dense() -> None:
    model = sequential((4, 3), L.TimeDistributed(L.Dense(5), name="td"),
                       L.GRU(3, name="r"), L.Dense(2))
    pruned = check(model, "td", [1, 2], rand(2, 4, 3))
    assert pruned.get_layer("td").layer.units == 3


@pytest.mark.parametrize("data_format", [tf_only("channels_last"), DATA_FORMATS[1]])
@pytest.mark.parametrize("rank", [1, 2])
def test_conv_lstm(rank: int, data_format: str) -> None:
    spatial = (6,) if rank == 1 else (4, 4)
    shape = (3, 2, *spatial) if data_format == "channels_first" else (3, *spatial, 2)
    conv_lstm = L.ConvLSTM1D if rank == 1 else L.ConvLSTM2D
    model = sequential(shape, conv_lstm(4, 3, padding="same", return_sequences=True,
                                        data_format=data_format, name="c1"),
                       conv_lstm(3, 2, data_format=data_format, name="c2"),
                       L.Flatten(), L.Dense(2))
    pruned = check(model, {"c1": [0, 2], "c2": [1]}, None, rand(2, *shape))
    assert pruned.get_layer("c1").filters == 2
    assert pruned.get_layer("c2").filters == 2


# --- random recurrent stacks ----------------------------------------------------------------------


@st.composite
def stacks(draw: Any) -> tuple[list[tuple[str, str, int, bool]], int]:
    """Layers as (kind, inner kind or merge mode, units, return_sequences), and the target."""
    n = draw(st.integers(1, 3))
    layers = []
    for i in range(n):
        last = i == n - 1
        kind = draw(st.sampled_from(["SimpleRNN", "GRU", "GRU_before", "LSTM", "Bidirectional",
                                     "TimeDistributed"]))
        if kind == "TimeDistributed" and last:
            kind = "Bidirectional"
        inner = draw(st.sampled_from(["GRU", "LSTM"])) + "-" + draw(
            st.sampled_from(["concat", "sum"]))
        layers.append((kind, inner, draw(st.integers(2, 4)), draw(st.booleans()) or not last))
    return layers, draw(st.integers(0, n - 1))


def stack_layer(i: int, kind: str, inner: str, units: int, sequences: bool) -> L.Layer:
    if kind == "TimeDistributed":
        return L.TimeDistributed(L.Dense(units + 1), name=f"l{i}")
    if kind == "Bidirectional":
        cell, mode = inner.split("-")
        return L.Bidirectional(RNNS[cell](units, return_sequences=sequences), merge_mode=mode,
                               name=f"l{i}")
    return rnn(kind, units, return_sequences=sequences, name=f"l{i}")


@settings(max_examples=5 if BACKEND == "tensorflow" else 3, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow])
@given(stacks(), st.integers(0, 2**16))
def test_random_recurrent_stacks(stack: tuple[list[tuple[str, str, int, bool]], int],
                                 seed: int) -> None:
    specs, target = stack
    layers = [stack_layer(i, *spec) for i, spec in enumerate(specs)]
    model = sequential((4, 3), *layers, L.Flatten(), L.Dense(2), seed=seed)
    name = layers[target].name
    n = int(model.get_layer(name).output.shape[-1])
    rng = np.random.default_rng(seed)
    neurons = [int(rng.integers(n))]
    check(model, name, neurons, rand(2, 4, 3, seed=seed))


# --- what stays refused, and the round trip ---------------------------------------------------


def test_refusals_name_the_layer_its_class_and_why() -> None:
    inp = keras.Input((5, 3))
    halves = L.Bidirectional(L.LSTM(3), merge_mode=None, name="bi")(L.Dense(4, name="d")(inp))
    model = model_of(inp, L.Dense(2)(L.Concatenate()(halves)))
    with pytest.raises(PruneError, match=r"'bi' \(Bidirectional\) has merge_mode=None"):
        kerasprune.delete_neurons(model, "bi", [0])
    with pytest.raises(PruneError, match=r"'bi' \(Bidirectional\) has merge_mode=None"):
        kerasprune.delete_neurons(model, "d", [0])
    model = sequential((5, 3), L.Dense(4, name="d"),
                       L.RNN([L.LSTMCell(3), L.LSTMCell(2)], name="stacked"), L.Dense(2))
    with pytest.raises(PruneError, match=r"'stacked' \(RNN\) holds a StackedRNNCells"):
        kerasprune.delete_neurons(model, "stacked", [0])


def test_pruned_wrappers_save_and_load(tmp_path: Path) -> None:
    model = sequential((4, 3), L.TimeDistributed(L.Dense(5), name="td"),
                       L.Bidirectional(L.GRU(4), name="bi"), L.Dense(2))
    pruned = kerasprune.delete_neurons(model, {"td": [0], "bi": [1]})
    path = tmp_path / "pruned.keras"
    pruned.save(path)
    loaded = keras.saving.load_model(path)
    x = rand(2, 4, 3)
    np.testing.assert_allclose(outputs(loaded, x)[0], outputs(pruned, x)[0], atol=ATOL)
    assert loaded.get_layer("bi").forward_layer.units == 3


def test_stateful_layers() -> None:
    """Stateful layers carry their states from one batch to the next: the pruned model's
    second call still equals the reference's."""
    model = randomize(keras.Sequential([
        keras.Input((4, 3), batch_size=2),
        cheap(L.LSTM(5, stateful=True, return_sequences=True, name="r")),
        cheap(L.GRU(3, stateful=True, name="g")), L.Dense(2)]))
    pruned = kerasprune.delete_neurons(model, "r", [1, 2])
    reference = zeroed_reference(model, "r", [1, 2])
    x = rand(2, 4, 3)
    first, second = outputs(pruned, x)[0], outputs(pruned, x)[0]
    assert not np.allclose(first, second)  # the states carried over
    np.testing.assert_allclose(first, outputs(reference, x)[0], atol=ATOL, rtol=1e-4)
    np.testing.assert_allclose(second, outputs(reference, x)[0], atol=ATOL, rtol=1e-4)
