"""Pruning targets: what a plan must bring down, and to how much.

A :class:`Target` measures a graph (:meth:`Target.measure`) and says the most it may measure
after pruning (:meth:`Target.limit`), either as a fraction of the original (``keep=0.5``: half
the FLOPs) or as an absolute amount (``at_most=1_000_000`` parameters). Kinds are registered
in :data:`TARGETS`:

- :class:`Params`: parameters, every weight counted (:func:`kerasprune.core.cost.count`);
- :class:`Flops`: FLOPs of one sample's forward pass, a multiply-add counted as two;
- :class:`Cost`: any function of the graph, e.g. a latency the Keras side measures on a
  model built from it. The planner assumes it does not grow when neurons are deleted.

:func:`schedule` splits a target into the targets of the steps of iterative pruning.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import ClassVar, Literal

from kerasprune.core.checks import as_real
from kerasprune.core.cost import LayerCost, count, total
from kerasprune.core.graph import Graph

__all__ = ["TARGETS", "Cost", "Flops", "Params", "Target", "make_target", "schedule"]


@dataclass(frozen=True)
class Target:
    """The most a graph may measure after pruning: a fraction of the original or an amount.

    Parameters
    ----------
    keep
        Fraction of the original to keep, ``0 < keep <= 1`` (0.5: at most half).
    at_most
        Absolute limit, ``> 0``, in the target's unit.

    Exactly one of them is given.
    """

    keep: float | None = None
    at_most: float | None = None
    kind: ClassVar[str] = ""
    unit: ClassVar[str] = ""

    def __post_init__(self) -> None:
        if (self.keep is None) == (self.at_most is None):
            raise ValueError(f"a {self.kind or 'target'} target takes exactly one of keep (a "
                             "fraction of the original) and at_most (an absolute amount)")
        if self.keep is not None:
            keep = as_real("keep", self.keep)
            if keep > 1:
                raise ValueError(f"keep={self.keep!r} is above 100% of the original; a target "
                                 "keeps at most all of it (0 < keep <= 1)")
            if keep <= 0:
                raise ValueError(f"keep must be in (0, 1], got {self.keep!r}")
            object.__setattr__(self, "keep", keep)
        else:
            at_most = as_real("at_most", self.at_most)
            if at_most <= 0:
                raise ValueError(f"at_most must be positive, got {self.at_most!r}")
            object.__setattr__(self, "at_most", at_most)

    def measure(self, graph: Graph, costs: Sequence[LayerCost]) -> float:
        """What the target counts in ``graph`` (``costs`` is :func:`count` of it)."""
        raise NotImplementedError

    def limit(self, original: float) -> float:
        """The most the pruned graph may measure, given the original's measure."""
        return self.keep * original if self.keep is not None else float(self.at_most or 0)

    def describe(self, original: float) -> str:
        """``"flops <= 1.2M (50% of 2.4M)"``."""
        limit = self.limit(original)
        share = f"{limit / original:.1%} of {_human(original)}" if original else "of 0"
        return f"{self.kind} <= {_human(limit)} ({share})"

    def format(self, value: float) -> str:
        """A measure in short form: ``"1.2M"``."""
        return _human(value)


def _human(n: float) -> str:
    for unit, size in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(n) >= size:
            return f"{n / size:.3g}{unit}"
    return f"{n:.4g}"


@dataclass(frozen=True)
class _Counted(Target):
    """A total of :func:`~kerasprune.core.cost.count`: ``column`` 0 params, 1 FLOPs."""

    column: ClassVar[int] = 0

    def measure(self, graph: Graph, costs: Sequence[LayerCost]) -> float:
        return float(total(costs)[self.column])


@dataclass(frozen=True)
class Params(_Counted):
    """Parameters: every weight of every layer (non-trainable ones too, as Keras counts)."""

    kind: ClassVar[str] = "params"
    unit: ClassVar[str] = "parameters"
    column: ClassVar[int] = 0


@dataclass(frozen=True)
class Flops(_Counted):
    """FLOPs of one sample's forward pass (a multiply-add is two)."""

    kind: ClassVar[str] = "flops"
    unit: ClassVar[str] = "FLOPs"
    column: ClassVar[int] = 1


@dataclass(frozen=True)
class Cost(Target):
    """Any cost of a graph, measured by a function (a latency, a memory size...).

    Parameters
    ----------
    fn
        ``fn(graph) -> float``. The planner calls it on shape-only copies (weights replaced
        by :class:`~kerasprune.core.plan.ShapeOnly` stand-ins) about ``log2(slots)`` times,
        and assumes deleting neurons never makes it larger.
    name
        What it measures, for messages.
    """

    fn: Callable[[Graph], float] | None = field(default=None, compare=False)
    name: str = "cost"
    kind: ClassVar[str] = "cost"
    unit: ClassVar[str] = ""

    def __post_init__(self) -> None:
        super().__post_init__()
        if not callable(self.fn):
            raise TypeError(f"a cost target needs fn, a function of the graph; got {self.fn!r}")

    def measure(self, graph: Graph, costs: Sequence[LayerCost]) -> float:
        assert self.fn is not None
        return as_real(f"the value of {self.name}", self.fn(graph))

    def describe(self, original: float) -> str:
        return super().describe(original).replace("cost", self.name, 1)


TARGETS: dict[str, type[Target]] = {"params": Params, "flops": Flops, "cost": Cost}
"""Target kinds by name."""


def make_target(kind: str, *, keep: float | None = None, at_most: float | None = None,
                fn: Callable[[Graph], float] | None = None, name: str = "cost") -> Target:
    """The target of ``kind`` (a key of :data:`TARGETS`).

    Raises
    ------
    ValueError
        An unknown kind (the valid ones listed), or bad ``keep``/``at_most``.
    """
    if not isinstance(kind, str) or kind not in TARGETS:
        raise ValueError(f"unknown target kind {kind!r}; the kinds are "
                         f"{', '.join(map(repr, TARGETS))}")
    if kind == "cost":
        return Cost(keep=keep, at_most=at_most, fn=fn, name=name)
    if fn is not None:
        raise ValueError(f"fn is only for cost targets, not {kind!r}")
    return TARGETS[kind](keep=keep, at_most=at_most)


def schedule(target: Target, steps: int, original: Graph | float,
             spacing: Literal["geometric", "linear"] = "geometric") -> list[Target]:
    """The targets of ``steps`` pruning steps that end at ``target``.

    Each step's target is absolute (``at_most``), computed from the original graph, so that
    step ``k`` can be planned on the graph that step ``k - 1`` left (after fine-tuning).

    Parameters
    ----------
    target
        The final target.
    steps
        How many steps, ``>= 1``.
    original
        The original graph, or its measure by ``target``.
    spacing
        ``"geometric"``: each step keeps the same fraction of the previous step's cost
        (``keep ** (k / steps)``); ``"linear"``: each step removes the same amount.

    Returns
    -------
    list of Target
        One per step, of the same kind; the last one's limit is ``target``'s.
    """
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps must be an int >= 1, got {steps!r}")
    if spacing not in ("geometric", "linear"):
        raise ValueError(f"unknown spacing {spacing!r}; valid: 'geometric', 'linear'")
    start = original if not isinstance(original, Graph) else target.measure(
        original, count(original))
    start = as_real("original", start)
    if start <= 0:
        raise ValueError(f"the original measures {start}; nothing to prune towards")
    keep = min(target.limit(start) / start, 1.0)
    fractions = [keep ** (k / steps) if spacing == "geometric" else 1 - (1 - keep) * k / steps
                 for k in range(1, steps + 1)]
    return [replace(target, keep=None, at_most=f * start) for f in fractions]
