"""Per-kind pruning rules: how each kind of layer relates its input and output channels.

Every layer kind has one :class:`Rule`, registered under the kind's name in a
:class:`RuleSet`; :data:`RULES` is the default set. A rule answers a few questions, and
nothing else in the library knows about layer kinds:

- :meth:`Rule.link`: are my output channels made from my input channels, and which from which?
  ``None`` means the layer makes channels of its own (Dense units, Conv filters): deleting
  them stops there, and deleting its input channels only drops kernel rows.
- :meth:`Rule.why_not_targetable`: can a user delete my own neurons, and if not, why?
- :meth:`Rule.weight_axes`: which axis of which weight indexes which channels.
- :meth:`Rule.attr_updates`: which attributes change with the channel count (``units``...).
- :meth:`Rule.flops`: the cost of one call.
- For a layer whose channels are tied among themselves (a grouped convolution):
  :meth:`Rule.grow` (what else goes with a deletion), :meth:`Rule.why_not_deleted` (what it
  refuses), :meth:`Rule.input_ties` (the ties the channel analysis keeps as slots) and
  :meth:`Rule.neuron_blocks` (the blocks its neurons go evenly from).

The rules come in families, one module each: :mod:`~.base` (the protocol, the registry),
:mod:`~.producers` (layers with neurons), :mod:`~.grouped` (convolutions with ``groups``),
:mod:`~.elementwise`, :mod:`~.per_channel`, :mod:`~.reshaping`, :mod:`~.merging`,
:mod:`~.recurrent` (RNNs and their wrappers), :mod:`~.attention`, :mod:`~.normalization` and
:mod:`~.ops` (``keras.ops`` nodes). Supporting one
more layer kind is one subclass of an exported base class (or one instance of an existing
class) and one registration::

    from kerasprune.core.rules import RULES, Elementwise

    my_rules = RULES.copy()
    my_rules.register(Elementwise(), "MyActivation")

Kinds are Keras class names (``"Dense"``); the operations of a functional graph
(``x * 2.0``, ``keras.ops.relu(x)``) have kinds of their own, ``"op:"`` and the operation's
name in snake case (``"op:multiply"``, ``"op:relu"``).
"""

from __future__ import annotations

from kerasprune.core.rules.attention import MultiHeadAttention
from kerasprune.core.rules.base import (
    CONTAINS,
    OUT,
    Link,
    Rule,
    RuleSet,
    Tie,
    Unsupported,
    UnsupportedLayerError,
    WeightAxis,
)
from kerasprune.core.rules.composite import (
    Composite,
    Expansion,
    Inner,
    Step,
    Wiring,
    collapse_composites,
    expand_composites,
)
from kerasprune.core.rules.elementwise import (
    Activation,
    ChannelScale,
    Elementwise,
    NoiseShaped,
    PReLU,
    ReLU,
    Softmax,
)
from kerasprune.core.rules.embeddings import (
    KERAS_HUB_KINDS,
    PositionEmbedding,
    TokenAndPositionEmbedding,
)
from kerasprune.core.rules.grouped import Convolution
from kerasprune.core.rules.merging import Concatenate, Merge
from kerasprune.core.rules.normalization import Normalization
from kerasprune.core.rules.ops import BROADCAST_OPS, UNARY_OPS, Broadcast, op_kind
from kerasprune.core.rules.per_channel import (
    BatchNorm,
    Depthwise,
    GlobalPooling,
    PerChannel,
    Pooling,
)
from kerasprune.core.rules.producers import EinsumDense, Embedding, Producer, Separable, Transposed
from kerasprune.core.rules.recurrent import (
    Bidirectional,
    CellRNN,
    ConvRecurrent,
    Masking,
    Recurrent,
    TimeDistributed,
)
from kerasprune.core.rules.reshaping import Flatten, Reshape
from kerasprune.core.rules.transformer import DECODER_NAMES, ENCODER_NAMES, TransformerBlock

__all__ = [
    "CONTAINS",
    "KERAS_HUB_KINDS",
    "OUT",
    "RULES",
    "Activation",
    "BatchNorm",
    "Bidirectional",
    "Broadcast",
    "CellRNN",
    "ChannelScale",
    "Composite",
    "Concatenate",
    "ConvRecurrent",
    "Convolution",
    "Depthwise",
    "EinsumDense",
    "Elementwise",
    "Embedding",
    "Expansion",
    "Flatten",
    "GlobalPooling",
    "Inner",
    "Link",
    "Masking",
    "Merge",
    "MultiHeadAttention",
    "NoiseShaped",
    "Normalization",
    "PReLU",
    "PerChannel",
    "Pooling",
    "PositionEmbedding",
    "Producer",
    "ReLU",
    "Recurrent",
    "Reshape",
    "Rule",
    "RuleSet",
    "Separable",
    "Softmax",
    "Step",
    "Tie",
    "TimeDistributed",
    "TokenAndPositionEmbedding",
    "TransformerBlock",
    "Transposed",
    "Unsupported",
    "UnsupportedLayerError",
    "WeightAxis",
    "Wiring",
    "collapse_composites",
    "default_rules",
    "expand_composites",
    "op_kind",
    "register",
    "related_kinds",
    "rule_for",
    "supported_kinds",
]


def default_rules() -> RuleSet:
    """A new :class:`RuleSet` with kerasprune's rules for Keras' layers and operations."""
    rules = RuleSet()
    add = rules.register
    # --- layers ----------------------------------------------------------------------------
    add(Producer("units", 0, 1, channels_first_capable=False), "Dense")
    add(EinsumDense(), "EinsumDense")
    add(Convolution(), "Conv1D", "Conv2D", "Conv3D")
    add(Transposed(), "Conv1DTranspose", "Conv2DTranspose", "Conv3DTranspose")
    add(Separable(), "SeparableConv1D", "SeparableConv2D")
    add(Embedding(), "Embedding")
    add(Depthwise(), "DepthwiseConv1D", "DepthwiseConv2D")
    add(NoiseShaped(), "Dropout", "AlphaDropout")
    add(Elementwise(), "GaussianNoise", "GaussianDropout", "ActivityRegularization", "Identity")
    add(ReLU(flops_per_value=1), "ReLU")
    add(Elementwise(flops_per_value=1), "LeakyReLU", "ELU")
    add(Activation(flops_per_value=1), "Activation")
    add(PReLU(flops_per_value=1), "PReLU")
    add(Softmax(flops_per_value=3), "Softmax")
    add(BatchNorm(), "BatchNormalization")
    add(PerChannel(), "SpatialDropout1D", "SpatialDropout2D", "SpatialDropout3D",
        "ZeroPadding1D", "ZeroPadding2D", "ZeroPadding3D", "Cropping1D", "Cropping2D",
        "Cropping3D", "UpSampling1D", "UpSampling2D", "UpSampling3D")
    add(Pooling(), "MaxPooling1D", "MaxPooling2D", "MaxPooling3D", "AveragePooling1D",
        "AveragePooling2D", "AveragePooling3D")
    add(GlobalPooling(), *(f"Global{op}Pooling{d}D" for op in ("Max", "Average")
                           for d in (1, 2, 3)))
    add(Flatten(), "Flatten")
    add(Reshape(), "Reshape")
    add(Merge(), "Add", "Subtract", "Multiply", "Average", "Maximum", "Minimum")
    add(Concatenate(), "Concatenate")
    # keras.applications' own layers: InceptionResNetV2's ``a + scale * b``, ConvNeXt's
    # ``x * gamma``. The adapter gives these kinds only to the classes of keras.applications.
    add(Merge(), "CustomScaleLayer")
    add(ChannelScale("projection_dim"), "LayerScale")
    stats = "it normalises over the channels, so deleting one changes the others"
    add(Unsupported(stats), "GroupNormalization")
    add(Normalization(("gamma", "beta")), "LayerNormalization")
    add(Normalization(("scale",), flops_per_value=4), "RMSNormalization")
    add(Normalization((), flops_per_value=3), "UnitNormalization")
    add(MultiHeadAttention(), "MultiHeadAttention")
    add(PositionEmbedding(), KERAS_HUB_KINDS["PositionEmbedding"])
    add(TokenAndPositionEmbedding(), KERAS_HUB_KINDS["TokenAndPositionEmbedding"])
    add(Unsupported("attention mixes its channels across heads and positions"),
        "Attention", "AdditiveAttention", "GroupedQueryAttention")
    # recurrent layers and their wrappers (recurrent.py)
    cells = {"SimpleRNN": Recurrent(1), "GRU": Recurrent(3), "LSTM": Recurrent(4)}
    for kind, rule in cells.items():
        add(rule, kind)
    add(CellRNN({f"{kind}Cell": rule for kind, rule in cells.items()}), "RNN")
    for rank in (1, 2, 3):
        add(ConvRecurrent(rank), f"ConvLSTM{rank}D")
    add(Bidirectional(cells), "Bidirectional")
    steps = ["Dense", "EinsumDense", "Flatten", "Reshape", "Dropout", "Activation", "ReLU",
             "LeakyReLU", "ELU", "BatchNormalization", "DepthwiseConv1D", "DepthwiseConv2D",
             "SeparableConv1D", "SeparableConv2D"]
    for d in (1, 2, 3):
        steps += [f"Conv{d}D", f"Conv{d}DTranspose", f"MaxPooling{d}D", f"AveragePooling{d}D",
                  f"GlobalMaxPooling{d}D", f"GlobalAveragePooling{d}D", f"ZeroPadding{d}D",
                  f"Cropping{d}D", f"UpSampling{d}D", f"SpatialDropout{d}D"]
    add(TimeDistributed({kind: rules[kind] for kind in steps}), "TimeDistributed")
    add(Masking(), "Masking")
    # --- operations of functional graphs (keras.ops on symbolic tensors) -------------------
    add(ReLU(flops_per_value=1), "op:relu", "op:relu6")
    add(Elementwise(flops_per_value=1), *(f"op:{name}" for name in UNARY_OPS))
    add(Broadcast(), *(f"op:{name}" for name in BROADCAST_OPS))
    add(Softmax(flops_per_value=3), "op:softmax", "op:log_softmax")
    add(Concatenate(), "op:concatenate")
    # --- layers that contain layers (KerasHub's transformer blocks) -----------------------
    # (Sized...: kerasprune's subclasses for blocks whose heads no longer follow the width)
    add(TransformerBlock(ENCODER_NAMES), "TransformerEncoder", "SizedTransformerEncoder")
    add(TransformerBlock(DECODER_NAMES, causal=True), "TransformerDecoder",
        "SizedTransformerDecoder")
    return rules


RULES: RuleSet = default_rules()
"""The default rules, by kind name (Keras class names). Registering here changes every call
in the process; prefer a :meth:`RuleSet.copy` passed as ``rules=``."""


def register(rule: Rule, *kinds: str) -> None:
    """Register ``rule`` for the given kinds in :data:`RULES` (replacing any earlier rule)."""
    RULES.register(rule, *kinds)


def rule_for(kind: str, rules: RuleSet | None = None) -> Rule:
    """The rule for ``kind`` in ``rules`` (:data:`RULES` by default); kinds without one
    cannot carry deletions."""
    return (RULES if rules is None else rules).rule_for(kind)


def supported_kinds(rules: RuleSet | None = None) -> list[str]:
    """Kinds that can carry a deletion, sorted."""
    return (RULES if rules is None else rules).supported_kinds()


def related_kinds(kind: str, most: int = 8, rules: RuleSet | None = None) -> list[str]:
    """A few supported kinds to name when ``kind`` has no rule: close spellings first."""
    return (RULES if rules is None else rules).related_kinds(kind, most)
