"""Structural graph edits in the core: remove nodes, delete, insert and replace a layer."""

from __future__ import annotations

import pytest
from core_graphs import build, dense, plain

from kerasprune.core import edit
from kerasprune.core.graph import Graph, LayerSpec, Node, PruneError


def chain() -> Graph:
    """``x -> d1 -> drop -> d2 -> out`` (widths 4, 4, 4, 2)."""
    layers = [dense("d1", 3, 4), plain("drop", "Dropout"), dense("d2", 4, 4), dense("out", 4, 2)]
    return build(layers, [("d1", (0,), 1), ("drop", (1,), 2), ("d2", (2,), 3), ("out", (3,), 4)],
                 {0: (3,), 1: (4,), 2: (4,), 3: (4,), 4: (2,)})


def shared() -> Graph:
    """``x -> a``; ``s`` called on ``x`` and on ``a``; ``add(s(x), s(a))`` is the output."""
    layers = [dense("a", 3, 3), dense("s", 3, 3), plain("add", "Add")]
    return build(layers, [("a", (0,), 1), ("s", (0,), 2), ("s", (1,), 3), ("add", (2, 3), 4)],
                 {0: (3,), 1: (3,), 2: (3,), 3: (3,), 4: (3,)})


def test_delete_layer_puts_its_input_in_its_place() -> None:
    g = chain()
    new = edit.delete_layer(g, "drop")
    assert [(n.layer, n.inputs, n.outputs) for n in new.nodes] == [
        ("d1", (0,), (1,)), ("d2", (1,), (3,)), ("out", (3,), (4,))]
    assert "drop" not in new.layers and 2 not in new.shapes
    assert [n.layer for n in g.nodes] == ["d1", "drop", "d2", "out"]  # input untouched


def test_delete_layer_of_a_model_output_and_of_a_shared_layer() -> None:
    g = chain()
    layers = dict(g.layers)
    layers["out"] = dense("out", 4, 4)
    g = Graph(layers, g.nodes, {**g.shapes, 4: (4,)}, g.inputs, g.outputs)
    assert edit.delete_layer(g, "out").outputs == (3,)
    new = edit.delete_layer(shared(), "s")
    assert [(n.layer, n.inputs) for n in new.nodes] == [("a", (0,)), ("add", (0, 1))]


def test_delete_layer_errors() -> None:
    with pytest.raises(PruneError, match=r"input has shape \(None, 4\) but its output "
                                         r"\(None, 2\)"):
        edit.delete_layer(chain(), "out")
    with pytest.raises(PruneError, match="'add' \\(Add\\): it has 2 inputs"):
        edit.delete_layer(shared(), "add")
    with pytest.raises(PruneError, match="no layer named 'nope'"):
        edit.delete_layer(chain(), "nope")
    one = build([plain("relu", "ReLU")], [("relu", (0,), 1)], {0: (3,), 1: (3,)})
    with pytest.raises(PruneError, match="a model output would be a model input"):
        edit.delete_layer(one, "relu")


def test_remove_nodes_refuses_to_lose_an_output_or_an_input() -> None:
    g = chain()
    with pytest.raises(PruneError, match="model output made by layer 'out'"):
        edit.remove_nodes(g, g.calls("out"))
    with pytest.raises(PruneError, match="would lose every input"):
        edit.remove_nodes(g, g.calls("drop"))
    with pytest.raises(PruneError, match="no removed node writes it"):
        edit.remove_nodes(g, g.calls("drop"), {3: 1})


def test_insert_after_rewires_every_reader_and_the_output() -> None:
    g = chain()
    spec = plain("act", "Activation", activation="linear")
    new = edit.insert_after(g, spec, "drop", [(4,)])
    assert [(n.layer, n.inputs, n.outputs) for n in new.nodes][1:4] == [
        ("drop", (1,), (2,)), ("act", (2,), (5,)), ("d2", (5,), (3,))]
    assert list(new.layers) == ["d1", "drop", "act", "d2", "out"]
    at_end = edit.insert_after(g, dense("head", 2, 5), "out", [(5,)])
    assert at_end.outputs == (5,) and at_end.shapes[5] == (5,)


def test_insert_after_a_shared_layer_shares_the_new_layer() -> None:
    new = edit.insert_after(shared(), plain("act", "ReLU"), "s", [(3,), (3,)])
    acts = new.calls("act")
    assert [n.inputs for n in acts] == [(2,), (3,)]
    assert new.calls("add")[0].inputs == (acts[0].outputs[0], acts[1].outputs[0])


def test_insert_before_rewires_only_that_call() -> None:
    g = shared()
    new = edit.insert_before(g, plain("act", "ReLU"), "a", [(3,)])
    act = new.calls("act")[0]
    assert act.inputs == (0,) and new.calls("a")[0].inputs == act.outputs
    assert new.calls("s")[0].inputs == (0,)  # the other reader of x is left alone
    assert list(new.layers) == ["act", "a", "s", "add"]
    with pytest.raises(PruneError, match=r"would give shape \(None, 5\) where layer 'a' "
                                         r"\(Dense\) reads \(None, 3\)"):
        edit.insert_before(g, dense("w", 3, 5), "a", [(5,)])
    with pytest.raises(PruneError, match="it has 2 inputs; insert after"):
        edit.insert_before(g, plain("act", "ReLU"), "add", [(3,)])


def test_insert_errors() -> None:
    with pytest.raises(PruneError, match="already has a layer named 'd2'"):
        edit.insert_after(chain(), dense("d2", 4, 4), "d1", [(4,)])
    with pytest.raises(PruneError, match="2 calls but 1 output shapes"):
        edit.insert_after(shared(), plain("act", "ReLU"), "s", [(3,)])
    two = Graph({"lstm": LayerSpec("lstm", "LSTM")}, (Node("lstm", (0,), (1, 2)),),
                {0: (3, 2), 1: (4,), 2: (4,)}, (0,), (1, 2))
    with pytest.raises(PruneError, match="it has 2 outputs"):
        edit.insert_after(two, plain("act", "ReLU"), "lstm", [(4,)])


def test_replace_layer_renames_its_nodes_and_checks_shapes() -> None:
    g = shared()
    new = edit.replace_layer(g, "s", dense("t", 3, 3), [[(3,)], [(3,)]])
    assert list(new.layers) == ["a", "t", "add"]
    assert [n.layer for n in new.nodes] == ["a", "t", "t", "add"]
    assert [n.outputs for n in new.nodes] == [n.outputs for n in g.nodes]
    same_name = edit.replace_layer(g, "s", dense("s", 3, 3), [[(3,)], [(3,)]])
    assert same_name.layers["s"] is not g.layers["s"]
    with pytest.raises(PruneError, match=r"gives output shape \(None, 2\) where layer 's' "
                                         r"\(Dense\) gives \(None, 3\)"):
        edit.replace_layer(g, "s", dense("t", 3, 2), [[(2,)], [(2,)]])
    with pytest.raises(PruneError, match="already has a layer named 'a'"):
        edit.replace_layer(g, "s", dense("a", 3, 3), [[(3,)], [(3,)]])
