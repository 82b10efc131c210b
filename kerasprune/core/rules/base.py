"""The rule protocol and the registry: what every layer kind's rule answers, and where rules live.

A :class:`Rule` answers, for one kind of layer, how its output channels relate to its input
channels (:meth:`Rule.link`), which weight axes hold them (:meth:`Rule.weight_axes`), which
attributes change with their number (:meth:`Rule.attr_updates`), whether its own neurons can
be targeted (:meth:`Rule.why_not_targetable`) and what one call costs (:meth:`Rule.flops`).
A :class:`RuleSet` maps kind names to rules; :data:`kerasprune.core.rules.RULES` is the
default one, and every function that looks rules up takes ``rules=`` to use another (a
:meth:`RuleSet.copy` with a user's registrations).

Channel axes are counted without the batch axis.
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Iterator, Mapping, MutableMapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from kerasprune.core.graph import LayerSpec, PruneError, Shape

__all__ = [
    "CONTAINS",
    "COUPLING_ACTIVATIONS",
    "OUT",
    "ZEROING_ACTIVATIONS",
    "Link",
    "Rule",
    "RuleSet",
    "Tie",
    "Unsupported",
    "UnsupportedLayerError",
    "WeightAxis",
    "activation_name",
    "format_axis",
    "identity_sources",
    "out_shape_size",
    "own_coupling",
    "rank_axis",
    "spatial_positions",
    "zeroing_activation",
]

OUT = -1
"""The channel space of a layer's own output, in :class:`WeightAxis`."""

CONTAINS = "__contains__"
"""The attribute in which an adapter lists the sublayers of a layer that holds layers, so that
a deletion reaching one without a rule can say what to register."""


class UnsupportedLayerError(PruneError):
    """A deletion reaches a layer whose kind cannot pass or absorb it."""


@dataclass(frozen=True)
class Link:
    """How a pass-through layer's output channels come from its input channels.

    Parameters
    ----------
    out_axis
        The output axis that carries channels.
    sources
        One int array per input, as long as the output's channel axis: ``sources[i][j]`` is
        the channel of input ``i`` that output channel ``j`` is made from, or -1 if none.
        Channels linked this way are deleted together.
    """

    out_axis: int
    sources: tuple[np.ndarray, ...]


@dataclass(frozen=True)
class WeightAxis:
    """Axis ``axis`` of weight ``weight`` indexes the channels of input ``space`` (or ``OUT``).

    ``weight`` names a weight or a constant of the layer (:attr:`LayerSpec.constants`).
    ``repeat`` consecutive entries belong to one channel (a depthwise multiplier). With
    ``fold`` p > 0 the axis has p entries and entry ``i`` reads channels ``i, i+p, i+2p...``
    (a grouped convolution's kernel row reads one channel of every group): it goes when all
    of them go.
    ``blocks``: the axis is that many equal consecutive blocks, each indexed by the channels
    (an LSTM's kernel columns are its four gates ``[i, f, c, o]``, each one column per unit).
    ``span``: the axis indexes only channels ``span[0] .. span[1] - 1`` of the space,
    numbered from 0 (one direction of a ``Bidirectional`` layer's concatenated output).
    A string ``space`` names one of the layer's :meth:`Rule.parts` (an attention layer's
    ``"heads"``).
    """

    weight: str
    axis: int
    space: int | str
    repeat: int = 1
    fold: int = 0
    blocks: int = 1
    span: tuple[int, int] | None = None

    def entries(self, channels: np.ndarray, size: int) -> np.ndarray:
        """The entries of an axis of length ``size`` that belong to ``channels`` (indices
        in the space), in order: block by block, ``repeat`` entries per channel."""
        idx = np.asarray(channels, dtype=np.int64)
        if self.span is not None:
            start, stop = self.span
            idx = idx[(idx >= start) & (idx < stop)] - start
        if self.repeat > 1:
            idx = (idx[:, None] * self.repeat + np.arange(self.repeat)).reshape(-1)
        if self.fold:  # an entry stays while one of its channels does
            idx = np.unique(idx % self.fold)
        if self.blocks > 1:
            step = size // self.blocks
            idx = (np.arange(self.blocks)[:, None] * step + idx[None, :]).reshape(-1)
        return idx

    def owners(self, channels: int, size: int) -> np.ndarray:
        """For each entry of an axis of length ``size``, the channel (of ``channels``) it
        belongs to, or -1 if none (outside the ``span``). Not for a ``fold``, whose entries
        belong to several channels."""
        found = np.full(size, -1, dtype=np.int64)
        ch = np.arange(channels)
        if self.span is not None:
            ch = ch[(ch >= self.span[0]) & (ch < self.span[1])]
        found[self.entries(np.arange(channels), size)] = np.tile(np.repeat(ch, self.repeat),
                                                                  self.blocks)
        return found


@dataclass(frozen=True, eq=False)
class Tie:
    """A tensor of a call that holds the layer's own channels: a recurrent layer's returned
    states (``output=True``) and the initial states it is given (``output=False``), by
    position among the call's outputs or inputs. Channel ``j`` of it is channel
    ``channels[j]`` of the first output; all are deleted together. The first output tied to
    itself couples its own channels (a Bidirectional layer's unit ``j`` of each direction)."""

    output: bool
    position: int
    channels: np.ndarray


def rank_axis(axis: int, ndim: int) -> int:
    """Keras axis (counting the batch axis, negatives allowed) -> axis without batch."""
    full = axis + ndim + 1 if axis < 0 else axis
    if not 1 <= full <= ndim:
        raise PruneError(f"axis {axis} is not a feature axis of a rank-{ndim + 1} tensor")
    return full - 1


def format_axis(spec: LayerSpec, ndim: int) -> int:
    """The channel axis of an input of rank ``ndim`` for the layer's ``data_format``."""
    return 0 if spec.attrs.get("data_format") == "channels_first" else ndim - 1


def identity_sources(size: int, n_inputs: int = 1) -> tuple[np.ndarray, ...]:
    return (np.arange(size),) * n_inputs


class Rule:
    """Base rule: a layer that cannot carry a channel deletion.

    Subclasses override what their kind supports. ``targetable`` layers have neurons a user
    can delete (their own output channels).
    """

    targetable: ClassVar[bool] = False
    reason: str | None = None
    slices: ClassVar[frozenset[str] | None] = None
    """The weights a layer of this kind may hold, if the rule knows them all: a layer with any
    other (a quantized layer's scales) is refused when a deletion reaches it, since they
    would keep their old shape."""

    def describe(self, spec: LayerSpec) -> str:
        """How error messages name the layer: ``layer 'name' (Kind)``."""
        return f"layer '{spec.name}' ({spec.kind})"

    def link(self, spec: LayerSpec, in_shapes: Sequence[Shape], out_shape: Shape,
             axis: int) -> Link | None:
        """Channel links when input channels lie on ``axis``; ``None`` if the layer makes its
        own channels. Raise :class:`UnsupportedLayerError` if it cannot pass them."""
        why = f": {self.reason}" if self.reason else ""
        raise UnsupportedLayerError(f"{self.describe(spec)} cannot pass a channel deletion{why}")

    def in_axis(self, spec: LayerSpec, in_shape: Shape) -> int:
        """For a layer that makes its own channels: the input axis its weights read."""
        raise UnsupportedLayerError(f"{self.describe(spec)} reads no channels")

    def own_neuron_axis(self, spec: LayerSpec, out_shape: Shape) -> int | None:
        """The output axis of the neurons the layer makes itself (its :meth:`out_axis`), or
        ``None`` if it makes none: it passes its input's channels on (a depthwise
        convolution's, whose count follows its input) or its neurons cannot be targeted."""
        return None

    def why_not_read_at(self, spec: LayerSpec, position: int) -> str | None:
        """Why input ``position`` of the layer cannot lose channels (an attention mask), or
        ``None`` if its weights read them as :meth:`in_axis` says."""
        return None

    def parts(self, spec: LayerSpec) -> dict[str, int]:
        """The groups of units inside the layer that a request can delete by name
        (``"layer:part"``), and how many each has: an attention layer's ``heads``,
        ``key_dim`` and ``value_dim``. They live in its weights only, so deleting them changes
        no tensor of the graph. Empty for most layers."""
        return {}

    def why_not_part(self, spec: LayerSpec, part: str,
                     out_shapes: Sequence[Shape]) -> str | None:
        """Why units of ``part`` cannot be deleted from a call with outputs of ``out_shapes``
        (an attention layer returning its scores, one row per head), or ``None``."""
        return None

    def part_updates(self, spec: LayerSpec, kept: Mapping[str, int]
                     ) -> tuple[dict[str, Any], dict[str, float]]:
        """Attributes to change once the parts have ``kept`` units (every part, changed or
        not), and factors to multiply weights by after slicing (``{weight: factor}``)."""
        return {}, {}

    def why_not_read(self, spec: LayerSpec) -> str | None:
        """For a layer that makes its own channels: why its weights cannot lose input
        channels (an ``Embedding`` reads integer ids), or ``None`` if :meth:`in_axis` says
        where they read them."""
        return None

    def out_axis(self, spec: LayerSpec, out_shape: Shape) -> int:
        """For a layer that makes its own channels: the output axis that holds them."""
        raise UnsupportedLayerError(f"{self.describe(spec)} has no neurons to delete")

    def why_not_targetable(self, spec: LayerSpec) -> str | None:
        """Why a user cannot delete this layer's own neurons, or ``None`` if they can.

        A rule that is not :attr:`targetable` says the layer has none; a targetable rule may
        still refuse one layer (a grouped convolution, an unsupported einsum equation). When
        this returns ``None``, :meth:`out_axis` gives the axis of the neurons.
        """
        if not self.targetable:
            return f"{self.describe(spec)} has no neurons to delete"
        return None

    def inexact(self, spec: LayerSpec, in_shapes: Sequence[Shape], axis: int) -> str | None:
        """For a layer that passes channels on: why deleting some changes the values of the
        others (a normalization over them), so that the deletion is not exact; ``None`` if it
        is. Such a deletion needs ``allow_inexact=True``."""
        return None

    def output_coupling(self, spec: LayerSpec) -> str | None:
        """Why deleting some outputs would change the others (a softmax), if it would."""
        return None

    def feedback_axes(self, spec: LayerSpec) -> list[WeightAxis]:
        """For a layer that makes its own channels: the weight axes that read its own earlier
        output (a recurrent kernel's rows), indexed by ``OUT``. With its consumers' rows they
        are a neuron's outgoing weights, which the zeroing oracle
        (:func:`kerasprune.core.surgery.zeroed_graph`) sets to zero. None by default."""
        return []

    def ties(self, spec: LayerSpec, in_shapes: Sequence[Shape],
             out_shapes: Sequence[Shape]) -> list[Tie]:
        """For a layer that makes its own channels: the other tensors of one call that hold
        them too (a recurrent layer's states), deleted with them. None by default."""
        return []

    def makes_zeros(self, spec: LayerSpec) -> bool:
        """Whether the layer's output is a zero-producing non-linearity (ReLU-like), the
        place where APoZ is measured."""
        return zeroing_activation(spec.attrs.get("activation"))

    def weight_axes(self, spec: LayerSpec, axes: Sequence[int | None]) -> list[WeightAxis]:
        """Weight axes indexed by channels; ``axes[i]`` is input ``i``'s channel axis."""
        return []

    def attr_updates(self, spec: LayerSpec, in_shapes: Sequence[Shape], out_shape: Shape,
                     axes: Sequence[int | None]) -> dict[str, Any]:
        """Attributes to change once the tensors have the given (new) shapes; ``axes[i]`` is
        the axis on which input ``i`` lost channels (``None`` if it lost none). ``spec``
        holds the sliced weights and the old attributes."""
        return {}

    def grow(self, spec: LayerSpec, inputs: Sequence[np.ndarray | None],
             output: np.ndarray | None) -> tuple[list[np.ndarray | None], np.ndarray | None]:
        """For a layer that makes its own channels: the deleted channels grown to a set it
        can lose.

        ``inputs[i]`` is a boolean mask of input ``i``'s deleted channels and ``output`` one
        of the layer's own (``None``: none deleted). The result holds at least the same
        channels; ``None`` stays ``None`` unless channels are added. Most layers lose any of
        them independently; a grouped convolution loses a kernel row's channel in every
        group at once, and a whole group with its input channels.
        """
        return list(inputs), output

    def why_not_deleted(self, spec: LayerSpec, inputs: Sequence[np.ndarray | None],
                        output: np.ndarray | None) -> str | None:
        """Why the layer cannot lose these channels (masks as in :meth:`grow`, once every
        coupled deletion is in), or ``None`` if it can."""
        return None

    def input_ties(self, spec: LayerSpec, in_shapes: Sequence[Shape]) -> list[np.ndarray | None]:
        """For a layer that makes its own channels: per input, a label for each channel;
        channels with one label are always deleted together (``None``: each alone). The
        part of :meth:`grow` that the channel analysis (:mod:`kerasprune.core.groups`)
        can express as slots."""
        return [None] * len(in_shapes)

    def neuron_blocks(self, spec: LayerSpec) -> int:
        """How many equal, contiguous blocks the layer's neurons form (a grouped
        convolution's groups): a deletion takes as many from every block, or whole blocks.
        1 for a layer whose neurons go one by one."""
        return 1

    def flops(self, spec: LayerSpec, in_shapes: Sequence[Shape], out_shape: Shape) -> int:
        """Floating-point operations of one call on one sample (a multiply-add is 2)."""
        return 0


class Unsupported(Rule):
    """A kind that deliberately refuses channel deletions, with the reason."""

    def __init__(self, reason: str) -> None:
        self.reason = reason


COUPLING_ACTIVATIONS = ("softmax", "log_softmax")


def activation_name(value: Any) -> str:
    """The name of an ``activation`` attribute, given as a string or a serialized config: an
    activation layer's (``{"class_name": "ReLU", "config": {"name": ...}}``) or a function's
    (``{"class_name": "function", "config": "gelu_approximate", ...}``)."""
    if isinstance(value, Mapping):
        config = value.get("config")
        if isinstance(config, str):
            return config
        named = config.get("name") if isinstance(config, Mapping) else None
        value = named or value.get("class_name", "")
    return str(value)


ZEROING_ACTIVATIONS = ("relu", "relu6")


def zeroing_activation(activation: Any) -> bool:
    """Whether an ``activation`` attribute names a zero-producing non-linearity (ReLU)."""
    return activation is not None and activation_name(activation) in ZEROING_ACTIVATIONS


def own_coupling(spec: LayerSpec) -> str | None:
    """Why a layer's own activation couples its units (a softmax), if it does."""
    name = activation_name(spec.attrs.get("activation", "linear"))
    if name in COUPLING_ACTIVATIONS:
        return f"its activation '{name}' normalises over its units"
    return None


def out_shape_size(shape: Shape) -> int:
    """Number of values of a tensor of ``shape`` (one sample)."""
    return math.prod(shape)


def spatial_positions(shape: Shape, axis: int) -> int:
    """Number of positions of a tensor (all axes but the channel axis)."""
    return math.prod(shape) // max(shape[axis], 1)



class _UnknownKind(Rule):
    """The rule of kinds a :class:`RuleSet` has none for: they cannot carry a deletion, and
    the error names a few kinds that can and where to find them all."""

    def __init__(self, rules: RuleSet) -> None:
        self.rules = rules

    def link(self, spec: LayerSpec, in_shapes: Sequence[Shape], out_shape: Shape,
             axis: int) -> Link | None:
        what = "operations" if spec.kind.startswith("op:") else "layers"
        inside = spec.attrs.get(CONTAINS)
        if inside:
            raise UnsupportedLayerError(
                f"{self.describe(spec)} contains other layers ({', '.join(inside[:6])}) and "
                f"kerasprune has no rule for {spec.kind} saying how they are wired: register "
                "a kerasprune.core.rules.Composite for it in a copy of RULES and pass it as "
                "rules= (README, 'Layers that contain layers')")
        raise UnsupportedLayerError(
            f"{self.describe(spec)} cannot pass a channel deletion: kerasprune has no rule for "
            f"{spec.kind} {what}. The kinds it supports are, e.g., "
            f"{', '.join(self.rules.related_kinds(spec.kind))} "
            f"({len(self.rules.supported_kinds())} in all: kerasprune.core.supported_kinds(); "
            "register a rule for it in a copy of kerasprune.core.rules.RULES and pass it as "
            "rules=, see the README's 'Custom layers')")


_COMMON_KINDS = ("Dense", "Conv2D", "DepthwiseConv2D", "BatchNormalization", "ReLU", "Add",
                 "Concatenate", "Flatten", "MaxPooling2D", "op:multiply")


class RuleSet(MutableMapping[str, Rule]):
    """A registry of rules: the rule of each layer kind, by kind name.

    :data:`kerasprune.core.rules.RULES` is the default set. To teach kerasprune a layer of
    your own, register a rule for its kind (its class name) in a copy and pass the copy as
    ``rules=`` to the functions that look rules up; or register it in ``RULES`` itself, for
    every call in the process::

        my_rules = RULES.copy()
        my_rules.register(PerChannelScale(), "MyScale")
        delete_neurons(graph, "dense", [0], rules=my_rules)

    A set behaves as a mutable mapping ``{kind: rule}``; each change bumps :attr:`version`,
    so analyses cached for a graph (:func:`kerasprune.core.channels.channel_axes`) are
    recomputed after a registration.

    Parameters
    ----------
    rules
        The initial rules, by kind.
    """

    def __init__(self, rules: Mapping[str, Rule] | None = None) -> None:
        self._rules: dict[str, Rule] = {}
        self._version = 0
        self._unknown = _UnknownKind(self)
        for kind, rule in (rules or {}).items():
            self[kind] = rule

    @property
    def version(self) -> int:
        """A counter bumped by every change."""
        return self._version

    def __getitem__(self, kind: str) -> Rule:
        return self._rules[kind]

    def __setitem__(self, kind: str, rule: Rule) -> None:
        if not isinstance(kind, str):
            raise TypeError(f"a layer kind is a string (a class name), not {kind!r}")
        if not isinstance(rule, Rule):
            raise TypeError(f"the rule for {kind!r} must be a kerasprune.core.rules.Rule, not "
                            f"{type(rule).__name__}")
        self._rules[kind] = rule
        self._version += 1

    def __delitem__(self, kind: str) -> None:
        del self._rules[kind]
        self._version += 1

    def __iter__(self) -> Iterator[str]:
        return iter(self._rules)

    def __len__(self) -> int:
        return len(self._rules)

    def __repr__(self) -> str:
        return f"RuleSet({len(self)} kinds)"

    def register(self, rule: Rule, *kinds: str) -> None:
        """Register ``rule`` for the given kinds, replacing any earlier rule."""
        for kind in kinds:
            self[kind] = rule

    def copy(self) -> RuleSet:
        """An independent set with the same rules (the rule objects are shared: they hold no
        state)."""
        return RuleSet(self._rules)

    def rule_for(self, kind: str) -> Rule:
        """The rule for ``kind``; a kind without one gets a rule that refuses every deletion
        and names kinds that are supported."""
        return self._rules.get(kind) or self._unknown

    def supported_kinds(self) -> list[str]:
        """Kinds that can carry a deletion, sorted."""
        return sorted(k for k, r in self._rules.items() if not isinstance(r, Unsupported))

    def targetable_kinds(self) -> list[str]:
        """Kinds whose layers have neurons a user can delete, sorted."""
        return sorted(k for k, r in self._rules.items() if r.targetable)

    def related_kinds(self, kind: str, most: int = 8) -> list[str]:
        """A few supported kinds to name when ``kind`` has no rule: close spellings of it
        first, then common ones."""
        supported = self.supported_kinds()
        close = difflib.get_close_matches(kind, supported, n=4, cutoff=0.6)
        family = [k for k in supported if k.startswith("op:")] if kind.startswith("op:") else []
        close += difflib.get_close_matches(kind, family, n=3, cutoff=0.3)
        return list(dict.fromkeys([*close, *_COMMON_KINDS]))[:most]
