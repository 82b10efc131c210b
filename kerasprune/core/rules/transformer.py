"""The insides of transformer blocks: KerasHub's ``TransformerEncoder`` and
``TransformerDecoder`` as :class:`~kerasprune.core.rules.composite.Composite` rules.

Both are a residual stream: (layer norm,) attention, dropout, ``+`` the block's input, (layer
norm,) then the same around a feed-forward pair of ``Dense`` (``intermediate_dim`` units with
the block's activation, then back to the stream's width). ``normalize_first`` puts each layer
norm before its branch (GPT-2) instead of after the sum (BERT). The decoder adds a
cross-attention sub-block, reading the encoder's sequence, when it is called with one.

The sublayers are named as KerasHub names them (``feedforward_intermediate_dense``...), the
names of their weights' paths; a class of another library with the same structure and other
names is one :class:`TransformerBlock` with other ``names``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from kerasprune.core.graph import LayerSpec, PruneError, Shape
from kerasprune.core.rules.composite import Composite, Inner, Step, Wiring

__all__ = ["TransformerBlock"]

ENCODER_NAMES: Mapping[str, str] = {
    "self_attention": "self_attention_layer",
    "self_norm": "self_attention_layer_norm",
    "self_dropout": "self_attention_dropout",
    "cross_attention": "cross_attention",
    "cross_norm": "cross_attention_layer_norm",
    "cross_dropout": "cross_attention_dropout",
    "ffn_norm": "feedforward_layer_norm",
    "ffn_in": "feedforward_intermediate_dense",
    "ffn_out": "feedforward_output_dense",
    "ffn_dropout": "feedforward_dropout",
}
"""KerasHub's ``TransformerEncoder`` sublayer names, by role."""

DECODER_NAMES: Mapping[str, str] = {**ENCODER_NAMES, "self_attention": "self_attention"}
"""KerasHub's ``TransformerDecoder`` sublayer names, by role."""


class TransformerBlock(Composite):
    """A post- or pre-norm transformer block: self-attention, optional cross-attention (when
    the layer holds its weights), feed-forward, each in a residual branch.

    Parameters
    ----------
    names
        The sublayers' names by role: ``self_attention``, ``self_norm``, ``self_dropout``,
        ``cross_attention``, ``cross_norm``, ``cross_dropout``, ``ffn_norm``, ``ffn_in``,
        ``ffn_out``, ``ffn_dropout``.
    heads_from_width
        Whether the class computes its heads' size as ``hidden_dim // num_heads`` (KerasHub's
        do): then a block whose heads no longer have that size gets the attributes
        ``head_dim`` and ``value_dim`` (and a cross-attention with other heads than the
        self-attention's ``cross_num_heads``, ``cross_head_dim``, ``cross_value_dim``),
        which its adapter builds with a class that takes them (or refuses, naming the
        class).
    causal
        Whether its self-attention is causal (a decoder's; the ``use_causal_mask`` attribute
        of the self-attention sublayer).

    The block's node reads the sequence first, then (with cross-attention) the encoder's
    sequence; further inputs are masks, which carry no channels.
    """

    _CROSS = ("cross_num_heads", "cross_head_dim", "cross_value_dim")

    def __init__(self, names: Mapping[str, str], heads_from_width: bool = True,
                 causal: bool = False) -> None:
        self.names = dict(names)
        self.heads_from_width = heads_from_width
        self.causal = causal

    def _has_cross(self, spec: LayerSpec) -> bool:
        return f"{self.names['cross_attention']}/query/kernel" in spec.weights

    def _attention(self, spec: LayerSpec, role: str) -> Inner:
        name = self.names[role]
        kernel = spec.weights.get(f"{name}/query/kernel")
        value = spec.weights.get(f"{name}/value/kernel")
        if kernel is None or value is None or len(kernel.shape) != 3:
            raise PruneError(f"{self.describe(spec)} has no weights '{name}/query/kernel' of "
                             "shape (width, heads, key_dim): it is not built as kerasprune's "
                             "rule for it expects")
        heads, key_dim = int(kernel.shape[1]), int(kernel.shape[2])
        attrs = {"num_heads": heads, "key_dim": key_dim, "value_dim": int(value.shape[2]),
                 "output_shape": None, "use_bias": f"{name}/query/bias" in spec.weights,
                 "dropout": spec.attrs.get("dropout", 0.0), "attention_axes": None,
                 "use_causal_mask": self.causal and role == "self_attention",
                 "call_inputs": ("query", "value")}
        return Inner(name, "MultiHeadAttention", attrs)

    def wiring(self, spec: LayerSpec, in_shapes: Sequence[Shape],
               out_shapes: Sequence[Shape]) -> Wiring:
        n = self.names
        cross = self._has_cross(spec)
        seq = tuple(in_shapes[0]) if in_shapes else ()
        if len(seq) != 2 or (cross and (len(in_shapes) < 2 or len(in_shapes[1]) != 2)):
            raise PruneError(
                f"{self.describe(spec)} is called on inputs of shapes {list(in_shapes)}: "
                "kerasprune's rule expects a sequence (batch, length, width) as its first "
                "argument" + (" and the encoder's sequence as its second" if cross else ""))
        dense = spec.weights.get(f"{n['ffn_in']}/kernel")
        units = int(dense.shape[-1]) if dense is not None else int(
            spec.attrs.get("intermediate_dim", 0))
        norm = {"axis": -1, "epsilon": spec.attrs.get("layer_norm_epsilon", 1e-5),
                "center": True, "scale": True}
        drop = {"rate": spec.attrs.get("dropout", 0.0), "noise_shape": None}
        layers = [self._attention(spec, "self_attention"),
                  Inner(n["self_norm"], "LayerNormalization", norm),
                  Inner(n["self_dropout"], "Dropout", drop)]
        if cross:
            layers += [self._attention(spec, "cross_attention"),
                       Inner(n["cross_norm"], "LayerNormalization", norm),
                       Inner(n["cross_dropout"], "Dropout", drop)]
        layers += [Inner(n["ffn_norm"], "LayerNormalization", norm),
                   Inner(n["ffn_in"], "Dense", {"units": units, "use_bias": True,
                                                "activation": spec.attrs.get("activation")}),
                   Inner(n["ffn_out"], "Dense", {"units": seq[-1], "use_bias": True,
                                                 "activation": "linear"}),
                   Inner(n["ffn_dropout"], "Dropout", drop)]
        for residual in ("self", "cross", "ffn"):
            layers.append(Inner(f"{residual}_residual", "Add", {}))
        inputs: list[str | None] = ["x", "context" if cross else None]
        inputs = (inputs + [None] * len(in_shapes))[:len(in_shapes)]
        steps: list[Step] = []
        first = bool(spec.attrs.get("normalize_first", False))
        x = "x"
        branches = [("self", "self_attention", "self_norm", "self_dropout")]
        if cross:
            branches.append(("cross", "cross_attention", "cross_norm", "cross_dropout"))
        for tag, attention, norm_role, drop_role in branches:
            h = x
            if first:
                steps.append(Step(n[norm_role], (x,), f"{tag}_normed"))
                h = f"{tag}_normed"
            value = "context" if tag == "cross" else h
            steps.append(Step(n[attention], (h, value), f"{tag}_attended"))
            steps.append(Step(n[drop_role], (f"{tag}_attended",), f"{tag}_dropped"))
            steps.append(Step(f"{tag}_residual", (f"{tag}_dropped", x), f"{tag}_sum"))
            x = f"{tag}_sum"
            if not first:
                steps.append(Step(n[norm_role], (x,), f"{tag}_out"))
                x = f"{tag}_out"
        h = x
        if first:
            steps.append(Step(n["ffn_norm"], (x,), "ffn_normed"))
            h = "ffn_normed"
        steps += [Step(n["ffn_in"], (h,), "ffn_hidden"),
                  Step(n["ffn_out"], ("ffn_hidden",), "ffn_projected"),
                  Step(n["ffn_dropout"], ("ffn_projected",), "ffn_dropped"),
                  Step("ffn_residual", ("ffn_dropped", x), "ffn_sum")]
        if not first:
            steps.append(Step(n["ffn_norm"], ("ffn_sum",), "ffn_out"))
        if not cross:
            layers = [inner for inner in layers if inner.name != "cross_residual"]
        shapes = {step.output: seq for step in steps}
        shapes["ffn_hidden"] = (*seq[:-1], units)
        return Wiring(tuple(layers), tuple(steps), tuple(inputs), (steps[-1].output,), shapes)

    def block_updates(self, spec: LayerSpec, inner: Mapping[str, LayerSpec],
                      before: Mapping[str, LayerSpec]) -> dict[str, Any]:
        n = self.names
        updates: dict[str, Any] = {}
        ffn = inner[n["ffn_in"]]
        if ffn is not before[n["ffn_in"]]:
            updates["intermediate_dim"] = int(ffn.weights["kernel"].shape[-1])
        roles = ["self_attention"] + (["cross_attention"] if self._has_cross(spec) else [])
        sizes = {}
        for role in roles:
            weights = inner[n[role]].weights
            width, heads, key_dim = (int(d) for d in weights["query/kernel"].shape)
            sizes[role] = (heads, key_dim, int(weights["value/kernel"].shape[-1]), width)
        heads, key_dim, value_dim, width = sizes["self_attention"]
        if heads != int(spec.attrs.get("num_heads", 0)):
            updates["num_heads"] = heads
        derived = width // heads if self.heads_from_width else None
        if spec.attrs.get("head_dim") is not None or key_dim != derived or value_dim != key_dim:
            # heads whose size does not follow the width: a class that takes it
            updates.update(head_dim=key_dim, value_dim=value_dim)
        cross = sizes.get("cross_attention")
        if cross is not None and (cross[:3] != (heads, key_dim, value_dim) or any(
                spec.attrs.get(k) is not None for k in self._CROSS)):
            # cross-attention heads other than the self-attention's: a class that takes them
            updates.update(dict(zip(self._CROSS, cross[:3], strict=True)),
                           head_dim=key_dim, value_dim=value_dim)
        return updates
