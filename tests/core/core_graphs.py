"""Graph builders and a random-graph strategy shared by the core's tests (NumPy only).

Every builder gives layers real (random, distinct) weights, so costs, weight-based criteria
and surgery all work on the graphs. :func:`random_graphs` draws small functional graphs mixing
every coupling the channel analysis must get right: residual ``Add`` s, ``Concatenate`` s (into
depthwise convolutions too), shared layers, model inputs merged into the stream, layers that
cannot carry a deletion, softmax outputs and several model outputs.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
from hypothesis import strategies as st

from kerasprune.core.graph import Graph, LayerSpec, Node

_RNG = np.random.default_rng(1234)


def values(shape: tuple[int, ...]) -> np.ndarray:
    """Distinct random values (a wrong slice can never look right)."""
    return _RNG.standard_normal(shape)


def dense(name: str, n_in: int, units: int, **attrs: Any) -> LayerSpec:
    return LayerSpec(name, "Dense", {"units": units, **attrs},
                     {"kernel": values((n_in, units)), "bias": values((units,))})


def conv(name: str, c_in: int, filters: int, k: int = 1, **attrs: Any) -> LayerSpec:
    attrs.setdefault("data_format", "channels_last")
    return LayerSpec(name, "Conv2D", {"filters": filters, **attrs},
                     {"kernel": values((k, k, c_in, filters)), "bias": values((filters,))})


def depthwise(name: str, c_in: int, multiplier: int = 1, k: int = 1) -> LayerSpec:
    return LayerSpec(name, "DepthwiseConv2D",
                     {"depth_multiplier": multiplier, "data_format": "channels_last"},
                     {"kernel": values((k, k, c_in, multiplier)),
                      "bias": values((c_in * multiplier,))})


def bn(name: str, channels: int, axis: int = -1) -> LayerSpec:
    weights = {w: values((channels,)) for w in ("gamma", "beta", "moving_mean")}
    weights["moving_variance"] = np.abs(values((channels,))) + 0.5
    return LayerSpec(name, "BatchNormalization", {"axis": axis}, weights)


def layer_norm(name: str, channels: int) -> LayerSpec:
    return LayerSpec(name, "LayerNormalization", {"axis": -1},
                     {"gamma": values((channels,)), "beta": values((channels,))})


def plain(name: str, kind: str, **attrs: Any) -> LayerSpec:
    return LayerSpec(name, kind, attrs)


def build(layers: list[LayerSpec], nodes: list[tuple[str, tuple[int, ...], int]],
          shapes: Mapping[int, tuple[int, ...]], inputs: tuple[int, ...] = (0,),
          outputs: tuple[int, ...] | None = None) -> Graph:
    """A graph from (layer, input tensor ids, output tensor id) triples; a layer listed once
    may be called by several nodes. The default output is the last node's."""
    specs = {spec.name: spec for spec in layers}
    return Graph(layers=specs,
                 nodes=tuple(Node(name, ins, (out,)) for name, ins, out in nodes),
                 shapes=dict(shapes), inputs=inputs,
                 outputs=outputs if outputs is not None else (nodes[-1][2],))


def residual() -> Graph:
    """``x -> c1 -> c2 -> add(c1, c2) -> bn -> relu -> c3 -> gap -> out``; c1 and c2 share
    their four slots."""
    layers = [conv("c1", 3, 4), conv("c2", 4, 4), plain("add", "Add"), bn("bn", 4),
              plain("relu", "ReLU"), conv("c3", 4, 6), plain("gap", "GlobalAveragePooling2D"),
              dense("out", 6, 3)]
    nodes = [("c1", (0,), 1), ("c2", (1,), 2), ("add", (1, 2), 3), ("bn", (3,), 4),
             ("relu", (4,), 5), ("c3", (5,), 6), ("gap", (6,), 7), ("out", (7,), 8)]
    shapes = {0: (4, 4, 3), 1: (4, 4, 4), 2: (4, 4, 4), 3: (4, 4, 4), 4: (4, 4, 4),
              5: (4, 4, 4), 6: (4, 4, 6), 7: (6,), 8: (3,)}
    return build(layers, nodes, shapes)


def concat_depthwise() -> Graph:
    """``a (2) and b (3) concatenated -> depthwise (m=2) -> c -> gap -> out``: a, b and the
    depthwise layer form one group of five slots."""
    layers = [conv("a", 3, 2), conv("b", 3, 3), plain("cat", "Concatenate", axis=-1),
              depthwise("dw", 5, 2), conv("c", 10, 4), plain("gap", "GlobalAveragePooling2D"),
              dense("out", 4, 2)]
    nodes = [("a", (0,), 1), ("b", (0,), 2), ("cat", (1, 2), 3), ("dw", (3,), 4),
             ("c", (4,), 5), ("gap", (5,), 6), ("out", (6,), 7)]
    shapes = {0: (4, 4, 3), 1: (4, 4, 2), 2: (4, 4, 3), 3: (4, 4, 5), 4: (4, 4, 10),
              5: (4, 4, 4), 6: (4,), 7: (2,)}
    return build(layers, nodes, shapes)


# --------------------------------------------------------------------------------------------
# Random graphs
# --------------------------------------------------------------------------------------------

_SPATIAL = (3, 3)


class _Drawing:
    """A graph under construction: layers, nodes, shapes."""

    def __init__(self, draw: st.DrawFn) -> None:
        self.draw = draw
        self.layers: dict[str, LayerSpec] = {}
        self.nodes: list[tuple[str, tuple[int, ...], int]] = []
        self.shapes: dict[int, tuple[int, ...]] = {}
        self.inputs: list[int] = []

    def tensor(self, shape: tuple[int, ...]) -> int:
        t = len(self.shapes)
        self.shapes[t] = shape
        return t

    def call(self, spec: LayerSpec, ins: tuple[int, ...], shape: tuple[int, ...]) -> int:
        self.layers.setdefault(spec.name, spec)
        t = self.tensor(shape)
        self.nodes.append((spec.name, ins, t))
        return t

    def pick(self, pool: list[int]) -> int:
        # Mostly the newest tensors, so that chains get deep and merges join layers.
        return pool[self.draw(st.integers(max(0, len(pool) - 3), len(pool) - 1)
                              | st.integers(0, len(pool) - 1))]


@st.composite
def random_graphs(draw: st.DrawFn, max_ops: int = 9) -> Graph:
    """Random functional graphs on ``(3, 3, C)`` feature maps, then vectors."""
    g = _Drawing(draw)
    x = g.tensor((*_SPATIAL, draw(st.integers(1, 3))))
    g.inputs.append(x)
    maps = [x]
    vectors: list[int] = []
    if draw(st.booleans()):
        v = g.tensor((draw(st.integers(1, 3)),))
        g.inputs.append(v)
        vectors.append(v)
    width = st.integers(1, 4)
    for i in range(draw(st.integers(1, max_ops))):
        on_maps = not vectors or (bool(maps) and draw(st.booleans()))
        pool = maps if on_maps else vectors
        src = g.pick(pool)
        shape = g.shapes[src]
        c = shape[-1]
        same = [t for t in pool if t != src and g.shapes[t] == shape]
        op = draw(st.sampled_from(["make", "make", "make", "bn", "relu", "add", "cat", "dw",
                                   "ln", "reduce", "shared", "softmax", "sep", "prelu",
                                   "bn_axis", "cf"]))
        if op == "bn":
            t = g.call(bn(f"bn{i}", c), (src,), shape)
        elif op == "relu":
            t = g.call(plain(f"relu{i}", "ReLU"), (src,), shape)
        elif op == "add" and same:
            t = g.call(plain(f"add{i}", "Add"), (src, draw(st.sampled_from(same))), shape)
        elif op == "cat":
            other = g.pick(pool)
            t = g.call(plain(f"cat{i}", "Concatenate", axis=-1), (src, other),
                       (*shape[:-1], c + g.shapes[other][-1]))
        elif op == "dw" and on_maps:
            m = draw(st.integers(1, 2))
            t = g.call(depthwise(f"dw{i}", c, m), (src,), (*_SPATIAL, c * m))
        elif op == "sep" and on_maps:
            f, m = draw(width), draw(st.integers(1, 2))
            spec = LayerSpec(f"sep{i}", "SeparableConv2D",
                             {"filters": f, "depth_multiplier": m, "data_format": "channels_last"},
                             {"depthwise_kernel": values((1, 1, c, m)),
                              "pointwise_kernel": values((1, 1, c * m, f)), "bias": values((f,))})
            t = g.call(spec, (src,), (*_SPATIAL, f))
        elif op == "prelu":
            alpha = (1,) * (len(shape) - 1) + (c,) if draw(st.booleans()) else shape
            t = g.call(LayerSpec(f"prelu{i}", "PReLU", {}, {"alpha": values(alpha)}), (src,),
                       shape)
        elif op == "bn_axis" and on_maps:  # normalises the first spatial axis: refuses channels
            t = g.call(bn(f"bna{i}", shape[0], axis=1), (src,), shape)
        elif op == "cf" and on_maps:  # a channels_first conv reading channels_last: a dead end
            f = draw(width)
            g.call(conv(f"cf{i}", shape[0], f, data_format="channels_first"), (src,),
                   (f, *shape[1:]))
            continue
        elif op == "ln":
            t = g.call(layer_norm(f"ln{i}", c), (src,), shape)
        elif op == "softmax":
            t = g.call(plain(f"sm{i}", "Activation", activation="softmax"), (src,), shape)
        elif op == "reduce" and on_maps:
            kind = draw(st.sampled_from(["GlobalAveragePooling2D", "Flatten"]))
            size = c if kind.startswith("Global") else c * _SPATIAL[0] * _SPATIAL[1]
            t = g.call(plain(f"red{i}", kind, data_format="channels_last"), (src,), (size,))
            vectors.append(t)
            continue
        elif op == "shared" and not on_maps:
            reusable = [s for s in g.layers.values()
                        if s.kind == "Dense" and s.weights["kernel"].shape[0] == c]
            if not reusable:
                continue
            spec = draw(st.sampled_from(reusable))
            t = g.call(spec, (src,), (int(spec.attrs["units"]),))
        else:
            units = draw(width)
            spec = conv(f"conv{i}", c, units) if on_maps else dense(
                f"dense{i}", c, units, activation=draw(st.sampled_from(["linear", "relu"])))
            t = g.call(spec, (src,), (*shape[:-1], units))
        pool.append(t)
    # A head on the newest tensor (and sometimes a second output elsewhere).
    last = g.nodes[-1][2] if g.nodes else x
    if len(g.shapes[last]) > 1:
        last = g.call(plain("head_gap", "GlobalAveragePooling2D",
                            data_format="channels_last"), (last,), (g.shapes[last][-1],))
    out = g.call(dense("head", g.shapes[last][0], 2,
                       activation=draw(st.sampled_from(["linear", "softmax"]))), (last,), (2,))
    outputs = [out]
    produced = [n[2] for n in g.nodes[:-1]]
    if produced and draw(st.booleans()):
        outputs.append(draw(st.sampled_from(produced)))
    return build(list(g.layers.values()), g.nodes, g.shapes, tuple(g.inputs),
                 tuple(dict.fromkeys(outputs)))
