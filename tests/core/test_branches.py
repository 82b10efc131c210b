"""Whole-branch removal in the core: a Concatenate input whose every channel goes takes the
layers that only served it along, and the Concatenate keeps the rest (or goes itself)."""

from __future__ import annotations

import numpy as np
import pytest
from core_graphs import bn, build, conv, plain, random_graphs
from hypothesis import assume, event, given, settings
from hypothesis import strategies as st

from kerasprune.core.graph import Graph, PruneError
from kerasprune.core.groups import analyze_channels
from kerasprune.core.surgery import (
    apply_deletion,
    delete_neurons,
    dependency_group,
    neuron_count,
    prunable_layers,
)


def inception(n_inputs: int = 1) -> Graph:
    """``x -> a``, ``x -> b0 -> b -> bnb``, ``x -> c``; ``cat(a, bnb, c) -> head``."""
    layers = [conv("a", 3, 4), conv("b0", 3, 5), conv("b", 5, 2), bn("bnb", 2), conv("c", 3, 3),
              plain("cat", "Concatenate", axis=-1), conv("head", 9, 2)]
    c_input = 7 if n_inputs == 2 else 0
    nodes = [("a", (0,), 1), ("b0", (0,), 2), ("b", (2,), 3), ("bnb", (3,), 4),
             ("c", (c_input,), 5), ("cat", (1, 4, 5), 6), ("head", (6,), 8)]
    shapes = {0: (6, 6, 3), 1: (6, 6, 4), 2: (6, 6, 5), 3: (6, 6, 2), 4: (6, 6, 2),
              5: (6, 6, 3), 6: (6, 6, 9), 8: (6, 6, 2)}
    if n_inputs == 2:
        shapes[7] = (6, 6, 3)
    return build(layers, nodes, shapes, (0, 7) if n_inputs == 2 else (0,), (8,))


def test_a_whole_branch_goes_with_the_layers_that_only_serve_it() -> None:
    g = inception()
    deletion = dependency_group(g, "b", [0, 1])
    assert deletion.removed_layers() == ["b0", "b", "bnb"]
    assert set(deletion.layers()) == {"cat", "head"}  # head loses the rows of cat's 4, 5
    assert {k: v.tolist() for k, v in deletion.neurons().items()} == {"b": [0, 1]}
    assert deletion.tensors[6][1].tolist() == [4, 5]
    assert "b0 (Conv2D): removed" in str(deletion)
    new = apply_deletion(deletion)
    assert list(new.layers) == ["a", "c", "cat", "head"]
    assert [n.layer for n in new.nodes] == ["a", "c", "cat", "head"]
    assert new.calls("cat")[0].inputs == (1, 5)
    assert new.shapes[6] == (6, 6, 7) and 2 not in new.shapes and 4 not in new.shapes
    kept = [0, 1, 2, 3, 6, 7, 8]
    np.testing.assert_array_equal(new.layers["head"].weights["kernel"],
                                  g.layers["head"].weights["kernel"][:, :, kept])
    assert list(g.layers) == ["a", "b0", "b", "bnb", "c", "cat", "head"]  # input untouched


def test_a_concatenate_left_with_one_input_is_replaced_by_it() -> None:
    g = inception()
    deletion = dependency_group(g, {"b": [0, 1], "c": [0, 1, 2]})
    assert deletion.removed_layers() == ["b0", "b", "bnb", "c", "cat"]
    assert deletion.stand_ins == {6: 1}
    new = apply_deletion(deletion)
    assert [(n.layer, n.inputs) for n in new.nodes] == [("a", (0,)), ("head", (1,))]
    assert new.layers["head"].weights["kernel"].shape == (1, 1, 4, 2)


def test_chained_concatenates_collapse() -> None:
    layers = [conv("a", 3, 2), conv("b", 3, 2), conv("c", 3, 2),
              plain("cat1", "Concatenate", axis=-1), plain("cat2", "Concatenate", axis=-1),
              conv("head", 6, 2)]
    g = build(layers, [("a", (0,), 1), ("b", (0,), 2), ("c", (0,), 3), ("cat1", (1, 2), 4),
                       ("cat2", (4, 3), 5), ("head", (5,), 6)],
              {0: (4, 4, 3), 1: (4, 4, 2), 2: (4, 4, 2), 3: (4, 4, 2), 4: (4, 4, 4),
               5: (4, 4, 6), 6: (4, 4, 2)})
    new = delete_neurons(g, {"b": [0, 1], "c": [0, 1]})
    assert [(n.layer, n.inputs) for n in new.nodes] == [("a", (0,)), ("head", (1,))]
    assert new.layers["head"].weights["kernel"].shape == (1, 1, 2, 2)


def test_a_branch_also_read_elsewhere_is_refused() -> None:
    layers = [conv("a", 3, 2), conv("b", 3, 2), plain("cat", "Concatenate", axis=-1),
              conv("head", 4, 2), conv("side", 2, 2), plain("add", "Add")]
    g = build(layers, [("a", (0,), 1), ("b", (0,), 2), ("cat", (1, 2), 3), ("head", (3,), 4),
                       ("side", (2,), 5), ("add", (4, 5), 6)],
              {0: (4, 4, 3), 1: (4, 4, 2), 2: (4, 4, 2), 3: (4, 4, 4), 4: (4, 4, 2),
               5: (4, 4, 2), 6: (4, 4, 2)})
    with pytest.raises(PruneError, match=r"cannot delete all 2 neurons of 'b'.*read by layer "
                                         r"'side' \(Conv2D\), which would keep its output"):
        dependency_group(g, "b", [0, 1])


def test_a_model_input_that_only_the_branch_reads_is_refused() -> None:
    g = inception(n_inputs=2)
    with pytest.raises(PruneError, match="model input 1, which cannot disappear"):
        dependency_group(g, "c", [0, 1, 2])
    assert dependency_group(g, "b", [0, 1]).removed_layers() == ["b0", "b", "bnb"]


def test_a_model_output_cannot_disappear() -> None:
    layers = [conv("a", 3, 2), conv("b", 3, 2), plain("cat", "Concatenate", axis=-1)]
    g = build(layers, [("a", (0,), 1), ("b", (0,), 2), ("cat", (1, 2), 3)],
              {0: (4, 4, 3), 1: (4, 4, 2), 2: (4, 4, 2), 3: (4, 4, 4)}, (0,), (3, 2))
    with pytest.raises(PruneError, match="a model output, which cannot disappear"):
        dependency_group(g, "b", [0, 1], allow_output_change=True)
    # the concatenation itself may lose a branch when its output may change
    g2 = build(layers, [("a", (0,), 1), ("b", (0,), 2), ("cat", (1, 2), 3)],
               {0: (4, 4, 3), 1: (4, 4, 2), 2: (4, 4, 2), 3: (4, 4, 4)}, (0,), (3,))
    with pytest.raises(PruneError, match="changes the model output"):
        dependency_group(g2, "b", [0, 1])
    new = delete_neurons(g2, "b", [0, 1], allow_output_change=True)
    assert new.outputs == (1,) and [n.layer for n in new.nodes] == ["a"]


def test_a_concatenate_on_another_axis_cannot_drop_an_input() -> None:
    layers = [conv("a", 3, 2), conv("b", 3, 2), plain("cat", "Concatenate", axis=1),
              conv("head", 2, 2)]
    g = build(layers, [("a", (0,), 1), ("b", (0,), 2), ("cat", (1, 2), 3), ("head", (3,), 4)],
              {0: (4, 4, 3), 1: (4, 4, 2), 2: (4, 4, 2), 3: (8, 4, 2), 4: (8, 4, 2)})
    with pytest.raises(PruneError, match=r"no path through it \(all 2 channels of the output "
                                         r"of layer 'cat'"):
        dependency_group(g, "b", [0, 1])


def test_a_concatenation_nothing_reads_leaves_no_stand_in() -> None:
    """``cat(a, bn(x))`` read by nothing (a dead end): emptying ``a`` removes the
    concatenation, and with it ``bn``, which only served it; no stand-in may point at ``bn``'s
    removed output (hypothesis found this)."""
    layers = [conv("a", 3, 2), bn("bnx", 3), plain("cat", "Concatenate", axis=-1),
              conv("c", 3, 2), conv("head", 2, 2)]
    nodes = [("a", (0,), 1), ("bnx", (0,), 2), ("cat", (1, 2), 3), ("c", (0,), 4),
             ("head", (4,), 5)]
    shapes = {0: (4, 4, 3), 1: (4, 4, 2), 2: (4, 4, 3), 3: (4, 4, 5), 4: (4, 4, 2),
              5: (4, 4, 2)}
    g = build(layers, nodes, shapes, (0,), (5,))
    deletion = dependency_group(g, "a", [0, 1])
    assert deletion.removed_layers() == ["a", "bnx", "cat"] and not deletion.stand_ins
    assert [n.layer for n in apply_deletion(deletion).nodes] == ["c", "head"]


@settings(max_examples=60, deadline=None)
@given(graph=random_graphs(), data=st.data())
def test_every_neuron_of_a_layer_random_graphs(graph: Graph, data: st.DataObject) -> None:
    """Deleting every neuron of a layer is either refused or removes whole branches and gives
    a well-formed graph: every tensor read is written, the removed layers are gone, the
    concatenations that keep inputs concatenate the rest."""
    names = [n for n in prunable_layers(graph) if n not in analyze_channels(graph).unprunable]
    assume(names)
    name = data.draw(st.sampled_from(names))
    try:
        deletion = dependency_group(graph, name, range(neuron_count(graph, name)),
                                    allow_output_change=True)
    except PruneError:
        event("refused")
        return
    event("a branch goes")
    gone = deletion.removed_layers()
    assert name in gone
    new = apply_deletion(deletion)
    assert not set(gone) & set(new.layers)
    written = set(new.inputs) | {t for node in new.nodes for t in node.outputs}
    assert all(t in written for node in new.nodes for t in node.inputs)
    assert all(t in written for t in new.outputs) and len(new.outputs) == len(graph.outputs)
    assert set(new.shapes) == written
    for node in new.nodes:
        if new.layers[node.layer].kind == "Concatenate" and node.outputs[0] in new.shapes:
            axis = len(new.shapes[node.outputs[0]]) - 1
            assert sum(new.shapes[t][axis] for t in node.inputs) \
                == new.shapes[node.outputs[0]][axis]
