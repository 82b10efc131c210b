"""KerasHub's transformer blocks with heads of a given size, for blocks that lost heads.

KerasHub's ``TransformerEncoder`` and ``TransformerDecoder`` take no head size: they build
their attention with ``key_dim = width // num_heads``. A block that lost heads (or dimensions
of every head) keeps heads of the old size on the same width, which its own class cannot make
again from its config. :func:`sized_class` gives the subclass that can:
``kerasprune>SizedTransformerEncoder`` / ``...Decoder`` take ``head_dim`` (and
``value_dim``) and build the same sublayers, under the same names and in the same order, with
those sizes; they inherit everything else (``call``, masks, caches) from KerasHub's class.

They are registered as Keras serializables of the package ``kerasprune`` when this module is
imported (it imports KerasHub; kerasprune imports it only to rebuild such a block): a
``.keras`` file of a pruned model that holds one loads after ``import
kerasprune.adapters.keras.blocks``.
"""

from __future__ import annotations

from typing import Any

import keras
import keras_hub

__all__ = ["SizedTransformerDecoder", "SizedTransformerEncoder", "sized_class"]


def _attention(cls: Any, block: Any, name: str, key_dim: int, value_dim: int | None,
               query_shape: Any, value_shape: Any, heads: int | None = None) -> Any:
    layer = cls(num_heads=block.num_heads if heads is None else heads, key_dim=key_dim,
                value_dim=value_dim,
                dropout=block.dropout, kernel_initializer=_clone(block.kernel_initializer),
                bias_initializer=_clone(block.bias_initializer), dtype=block.dtype_policy,
                name=name)
    layer.build(query_shape=query_shape, value_shape=value_shape)
    return layer


def _clone(initializer: Any) -> Any:
    return initializer.__class__.from_config(initializer.get_config())


def _norm(block: Any, name: str, shape: Any) -> Any:
    layer = keras.layers.LayerNormalization(epsilon=block.layer_norm_epsilon,
                                            dtype=block.dtype_policy, name=name)
    layer.build(shape)
    return layer


def _dropout(block: Any, name: str) -> Any:
    return keras.layers.Dropout(rate=block.dropout, dtype=block.dtype_policy, name=name)


def _feedforward(block: Any, shape: Any) -> tuple[Any, Any]:
    inner = keras.layers.Dense(block.intermediate_dim, activation=block.activation,
                               kernel_initializer=_clone(block.kernel_initializer),
                               bias_initializer=_clone(block.bias_initializer),
                               dtype=block.dtype_policy, name="feedforward_intermediate_dense")
    inner.build(shape)
    outer = keras.layers.Dense(shape[-1], kernel_initializer=_clone(block.kernel_initializer),
                               bias_initializer=_clone(block.bias_initializer),
                               dtype=block.dtype_policy, name="feedforward_output_dense")
    outer.build((*tuple(shape)[:-1], block.intermediate_dim))
    return inner, outer


@keras.saving.register_keras_serializable(package="kerasprune")
class SizedTransformerEncoder(keras_hub.layers.TransformerEncoder):  # type: ignore[misc]
    """KerasHub's ``TransformerEncoder`` with heads of ``head_dim`` (and ``value_dim``)."""

    def __init__(self, *args: Any, head_dim: int | None = None,
                 value_dim: int | None = None, **kwargs: Any) -> None:
        self.head_dim = head_dim  # first, as the decoder's (KerasHub's may build in __init__)
        self.value_dim = value_dim
        super().__init__(*args, **kwargs)

    def build(self, inputs_shape: Any) -> None:
        if self.head_dim is None:
            super().build(inputs_shape)
            return
        self._self_attention_layer = _attention(
            keras.layers.MultiHeadAttention, self, "self_attention_layer", self.head_dim,
            self.value_dim, inputs_shape, inputs_shape)
        self._self_attention_layer_norm = _norm(self, "self_attention_layer_norm",
                                                inputs_shape)
        self._self_attention_dropout = _dropout(self, "self_attention_dropout")
        self._feedforward_layer_norm = _norm(self, "feedforward_layer_norm", inputs_shape)
        (self._feedforward_intermediate_dense,
         self._feedforward_output_dense) = _feedforward(self, inputs_shape)
        self._feedforward_dropout = _dropout(self, "feedforward_dropout")
        self.built = True

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "head_dim": self.head_dim,
                "value_dim": self.value_dim}

@keras.saving.register_keras_serializable(package="kerasprune")
class SizedTransformerDecoder(keras_hub.layers.TransformerDecoder):  # type: ignore[misc]
    """KerasHub's ``TransformerDecoder`` with heads of ``head_dim`` (and ``value_dim``); its
    cross-attention may have heads of its own (``cross_num_heads``, ``cross_head_dim``,
    ``cross_value_dim``; by default as the self-attention's)."""

    def __init__(self, *args: Any, head_dim: int | None = None,
                 value_dim: int | None = None, cross_num_heads: int | None = None,
                 cross_head_dim: int | None = None, cross_value_dim: int | None = None,
                 **kwargs: Any) -> None:
        self.head_dim = head_dim  # first: KerasHub's __init__ builds from a config
        self.value_dim = value_dim
        self.cross_num_heads = cross_num_heads
        self.cross_head_dim = cross_head_dim
        self.cross_value_dim = cross_value_dim
        super().__init__(*args, **kwargs)

    def build(self, decoder_sequence_shape: Any, encoder_sequence_shape: Any = None) -> None:
        if self.head_dim is None:
            super().build(decoder_sequence_shape, encoder_sequence_shape)
            return
        shape = decoder_sequence_shape
        self._decoder_sequence_shape = shape
        self._encoder_sequence_shape = encoder_sequence_shape
        cached = keras_hub.layers.CachedMultiHeadAttention
        self._self_attention_layer = _attention(cached, self, "self_attention",
                                                self.head_dim, self.value_dim, shape, shape)
        self._self_attention_layer_norm = _norm(self, "self_attention_layer_norm", shape)
        self._self_attention_dropout = _dropout(self, "self_attention_dropout")
        self._cross_attention_layer = None
        if encoder_sequence_shape:
            key_dim = self.cross_head_dim or self.head_dim
            value_dim = self.cross_value_dim or self.value_dim or key_dim
            self._cross_attention_layer = _attention(
                cached, self, "cross_attention", key_dim, value_dim, shape,
                encoder_sequence_shape, self.cross_num_heads)
            self._cross_attention_layer_norm = _norm(self, "cross_attention_layer_norm",
                                                     shape)
            self._cross_attention_dropout = _dropout(self, "cross_attention_dropout")
        (self._feedforward_intermediate_dense,
         self._feedforward_output_dense) = _feedforward(self, shape)
        self._feedforward_layer_norm = _norm(self, "feedforward_layer_norm", shape)
        self._feedforward_dropout = _dropout(self, "feedforward_dropout")
        self.built = True

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "head_dim": self.head_dim,
                "value_dim": self.value_dim, "cross_num_heads": self.cross_num_heads,
                "cross_head_dim": self.cross_head_dim, "cross_value_dim": self.cross_value_dim}


def sized_class(cls: type) -> type | None:
    """The class to rebuild a block of KerasHub's class ``cls`` with heads of another size
    (its ``head_dim`` and ``value_dim`` arguments); ``None`` for other classes."""
    for sized in (SizedTransformerEncoder, SizedTransformerDecoder):
        if cls is sized or (cls in sized.__mro__[1:] and cls.__module__.startswith("keras_hub")):
            return sized
    return None
