"""Which neurons a command selects from per-neuron scores: the APoZ rule of the options.

The selection itself is :func:`kerasprune.core.apoz.select_high_apoz`; this module carries the
``--rule/--k/--cutoff/--fraction`` options to it, checks them before any work, and gives the
threshold a picture draws. The criteria of the budget issue (L1 norm, Taylor...) belong
here as further rules.
"""

from __future__ import annotations

import argparse
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from kerasprune.cli.errors import EXIT_USAGE, CliError
from kerasprune.core import apoz as core_apoz

__all__ = ["Rule", "add_rule_options"]


def add_rule_options(parser: argparse.ArgumentParser, title: str = "selection rule") -> None:
    """``--rule``, ``--k``, ``--cutoff``, ``--fraction``: which neurons have a high APoZ."""
    group = parser.add_argument_group(
        title, "which neurons to delete by APoZ (Hu et al. 2016): std: APoZ above the "
        "layer's mean + k standard deviations (the paper's rule); absolute: above --cutoff; "
        "both: both of these; top: the --fraction of each layer with the highest APoZ")
    group.add_argument("--rule", choices=core_apoz.METHODS, default="std",
                       help="the selection rule (default: %(default)s)")
    group.add_argument("--k", type=float, default=1.0, metavar="K",
                       help="standard deviations above the mean, for std and both "
                            "(default: %(default)s)")
    group.add_argument("--cutoff", type=float, default=None, metavar="APOZ",
                       help="APoZ threshold in [0, 1], for absolute and both")
    group.add_argument("--fraction", type=float, default=None, metavar="F",
                       help="share of each layer's neurons to delete, 0 < F < 1, for top")


@dataclass(frozen=True)
class Rule:
    """An APoZ selection rule, as :func:`kerasprune.core.apoz.select_high_apoz` takes it."""

    method: str = "std"
    k: float = 1.0
    cutoff: float | None = None
    fraction: float | None = None

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> Rule:
        """The rule of the parsed options, checked.

        Raises
        ------
        CliError
            If the options do not make a valid rule (a missing ``--cutoff``...).
        """
        rule = cls(args.rule, args.k, args.cutoff, args.fraction)
        rule.check()
        return rule

    def check(self) -> None:
        """Raise :class:`CliError` if the rule is invalid (before any slow work)."""
        try:
            self.select(np.array([0.0, 1.0]))
        except (ValueError, TypeError) as err:
            raise CliError(f"--rule {self.method}: {err} (options --k, --cutoff, --fraction)",
                           EXIT_USAGE) from None

    def kwargs(self) -> dict[str, Any]:
        """Keyword arguments for :func:`kerasprune.high_apoz` and :func:`kerasprune.trim`."""
        return {"method": self.method, "k": self.k, "cutoff": self.cutoff,
                "fraction": self.fraction}

    def select(self, apoz: npt.ArrayLike) -> npt.NDArray[np.int64]:
        """Indices of the neurons the rule deletes from one layer."""
        return core_apoz.select_high_apoz(apoz, self.method, k=self.k, cutoff=self.cutoff,
                                   fraction=self.fraction)

    def threshold(self, apoz: npt.ArrayLike) -> float | None:
        """The APoZ above which a neuron is selected, for pictures (``top``: the lowest
        selected APoZ; ``None`` when it selects none)."""
        values = np.asarray(apoz, dtype=np.float64)
        statistical = float(values.mean() + self.k * values.std())
        if self.method == "std":
            return statistical
        if self.method == "absolute":
            return self.cutoff
        if self.method == "both":
            return max(statistical, float(self.cutoff or 0.0))
        selected = self.select(values)
        return float(values[selected].min()) if len(selected) else None

    def describe(self) -> str:
        """The rule in words, such as ``APoZ > mean + 1 std``."""
        std = f"APoZ > mean + {self.k:g} std"
        return {"std": std, "absolute": f"APoZ > {self.cutoff:g}" if self.cutoff is not None
                else "APoZ > cutoff",
                "both": f"{std} and APoZ > {self.cutoff}",
                "top": f"the {self.fraction:g} of each layer with the highest APoZ"
                if self.fraction is not None else "top fraction"}[self.method]

    def as_dict(self) -> dict[str, Any]:
        """The rule as JSON data."""
        return asdict(self)
