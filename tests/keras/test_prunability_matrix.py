"""The prunability matrix: every ``keras.applications`` family, built offline at a small input.

For each model: the README's row of the matrix is what ``benchmarks/prunability.py`` computes
(layers with neurons, how many can be pruned and why not, what ``get_apoz`` measures), and
one deletion that takes neurons of the first and the last prunable layer and of a layer in a
residual or concatenation group passes the zeroing oracle and changes the output.

The biggest models are marked ``slow`` and run on TensorFlow only (CI time).
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import keras
import numpy as np
import pytest
from backends import BACKEND
from oracle import zeroed_reference

import kerasprune
from kerasprune.core import rules

ROOT = Path(__file__).resolve().parents[2]


def _load() -> ModuleType:
    spec = importlib.util.spec_from_file_location("kerasprune_bench_prunability",
                                                  ROOT / "benchmarks" / "prunability.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


pytestmark = pytest.mark.heavy  # big models: TensorFlow and JAX in CI, not again on torch

bench = _load()
README = bench.parse_markdown((ROOT / "README.md").read_text(encoding="utf-8"))

_ONE_BACKEND = pytest.mark.skipif(BACKEND != "tensorflow", reason="a big model: checked on "
                                  "TensorFlow only, to keep CI time down")
PARAMS = [pytest.param(name, marks=[pytest.mark.slow, _ONE_BACKEND] if app.slow else [])
          for name, app in bench.APPS.items()]

_MERGES = (rules.Merge, rules.Concatenate, rules.Broadcast)


def _merging(deletion: Any) -> bool:
    """Whether a deletion goes through a merge (Add, Concatenate, a multiply...)."""
    graph = deletion.graph
    return any(isinstance(rules.rule_for(graph.layers[name].kind), _MERGES)
               and len(graph.calls(name)[0].inputs) > 1 for name in deletion.layers())


def _request(model: keras.Model, prunable: list[Any]) -> dict[str, list[int]]:
    """Neurons of the first and last prunable layers and of one in a merge's group, if the
    model has merges."""
    grouped = next((p for p in prunable if len(p.group) > 1), None) or next(
        (p for p in prunable[1:-1]
         if _merging(kerasprune.dependency_group(model, p.layer, [0]))), None)
    picks = [(prunable[0], [0, 1]), (prunable[-1], [0, 2])]
    if grouped is not None:
        picks.insert(1, (grouped, [1]))
    request: dict[str, list[int]] = {}
    for p, neurons in picks:
        request.setdefault(p.layer, [i for i in neurons if i < p.neurons - 1])
    return request


def _has_merges(model: keras.Model) -> bool:
    graph = kerasprune.to_graph(model).graph
    return any(isinstance(rules.rule_for(graph.layers[node.layer].kind), _MERGES)
               and len(node.inputs) > 1 for node in graph.nodes)


def _call(model: keras.Model, x: np.ndarray) -> np.ndarray:
    """The model called directly (``predict`` would compile each model anew on JAX)."""
    return np.asarray(keras.ops.convert_to_numpy(model(x, training=False)))


@pytest.mark.parametrize("name", PARAMS)
def test_application(name: str) -> None:
    app = bench.APPS[name]
    model = bench.build(app)
    # get_apoz's column runs a measuring model: on TensorFlow only (its own tests run on both)
    apoz = BACKEND == "tensorflow"
    measured = bench.row(name, model, apoz=apoz).cells()
    assert name in README, f"README's prunability matrix has no row for {name}"
    expected = README[name] if apoz else [*README[name][:-1], "-"]
    assert measured == expected, (
        f"README row {README[name]} but kerasprune gives {measured}: update the matrix with "
        "python benchmarks/prunability.py")

    prunable = [p for p in kerasprune.prunable_layers(model) if p.prunable]
    request = _request(model, prunable)
    deletion = kerasprune.dependency_group(model, request)
    if _has_merges(model) and any(len(p.group) > 1 for p in prunable):
        assert _merging(deletion)  # a residual or concatenation group is in the deletion
    x = bench.images(model, 2)
    y = _call(model, x)
    scale = float(np.abs(y).max())
    pruned = kerasprune.delete_neurons(model, request)
    with bench.cheap_initializers():  # clone_model's weights are all set afterwards
        reference = zeroed_reference(model, request)
    got, want = _call(pruned, x), _call(reference, x)
    assert got.shape == want.shape == y.shape
    # float32 rounding, amplified by up to 100 random layers (EfficientNetV2B0 differs by
    # 7e-5 of the output's scale in float32, by 2e-14 of it in float64: the deletion is exact)
    np.testing.assert_allclose(got, want, atol=1e-4 * scale, rtol=1e-4)
    assert np.abs(got - y).max() > 1e-3 * scale  # the deleted neurons mattered
    assert pruned.count_params() < model.count_params()
