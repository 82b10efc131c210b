"""The embeddings of transformers: KerasHub's ``PositionEmbedding`` and
``TokenAndPositionEmbedding``.

Their output channels are the model width, the channels of the residual stream: deleting one
of them deletes it in every ``Add`` of the stream and in every projection that writes to it
or reads from it (see :mod:`~.attention`). Keras' own ``Embedding`` is in :mod:`~.producers`.

KerasHub's classes are not Keras' own, so their kinds are their qualified class names
(:func:`kerasprune.adapters.keras.layer_kind`); :data:`KERAS_HUB_KINDS` lists them.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from kerasprune.core.graph import LayerSpec, Shape
from kerasprune.core.rules.base import (
    OUT,
    Link,
    Rule,
    UnsupportedLayerError,
    WeightAxis,
    identity_sources,
)
from kerasprune.core.rules.producers import Embedding

__all__ = ["KERAS_HUB_KINDS", "PositionEmbedding", "TokenAndPositionEmbedding"]

_HUB = "keras_hub.src.layers.modeling"
KERAS_HUB_KINDS = {
    "PositionEmbedding": f"{_HUB}.position_embedding.PositionEmbedding",
    "TokenAndPositionEmbedding": f"{_HUB}.token_and_position_embedding.TokenAndPositionEmbedding",
}
"""The kinds of KerasHub's embedding layers, by class name."""


class PositionEmbedding(Rule):
    """``keras_hub.layers.PositionEmbedding``: a learned ``(sequence_length, width)`` table
    broadcast to its input's shape. Its output has its input's channels (their count, not
    their values), so channel ``c`` of the input and of the output go together, with row
    ``c`` of the table."""

    slices = frozenset({"embeddings"})

    def link(self, spec: LayerSpec, in_shapes: Sequence[Shape], out_shape: Shape,
             axis: int) -> Link | None:
        if axis != len(in_shapes[0]) - 1:
            raise UnsupportedLayerError(
                f"{self.describe(spec)} holds one embedding per channel of its input's last "
                f"axis, but the deleted channels lie on axis {axis + 1}")
        return Link(axis, identity_sources(in_shapes[0][axis]))

    def weight_axes(self, spec: LayerSpec, axes: Sequence[int | None]) -> list[WeightAxis]:
        return [WeightAxis("embeddings", 1, 0)]


class TokenAndPositionEmbedding(Embedding):
    """``keras_hub.layers.TokenAndPositionEmbedding``: token and position tables summed; its
    ``embedding_dim`` channels are its neurons (the token table's columns, the position
    table's and, untied, the reverse projection's rows)."""

    slices = frozenset({"token_embedding/embeddings", "position_embedding/embeddings",
                        "reverse_embeddings"})

    def weight_axes(self, spec: LayerSpec, axes: Sequence[int | None]) -> list[WeightAxis]:
        return [WeightAxis("token_embedding/embeddings", 1, OUT),
                WeightAxis("position_embedding/embeddings", 1, OUT),
                WeightAxis("reverse_embeddings", 0, OUT)]

    def attr_updates(self, spec: LayerSpec, in_shapes: Sequence[Shape], out_shape: Shape,
                     axes: Sequence[int | None]) -> dict[str, Any]:
        return {"embedding_dim": out_shape[-1]}

    def flops(self, spec: LayerSpec, in_shapes: Sequence[Shape], out_shape: Shape) -> int:
        return math.prod(out_shape)  # the sum of the two tables
