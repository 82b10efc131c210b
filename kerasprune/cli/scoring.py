"""``--criterion``: any criterion of the registry (:data:`kerasprune.core.criteria.CRITERIA`),
and what it needs, checked before any work.

A criterion reads nothing, the weights, or statistics measured on data (activations, or
gradients of the loss, which need labels); :attr:`~kerasprune.core.criteria.Criterion.needs`
says which, so a criterion added to the registry works here without a change.
"""

from __future__ import annotations

import argparse
from typing import Any

from kerasprune.cli.errors import EXIT_USAGE, CliError
from kerasprune.core.criteria import CRITERIA

__all__ = ["DATA_NEEDS", "add_criterion", "check_criterion", "known_criterion", "needs_data",
           "needs_labels"]

DATA_NEEDS = ("activations", "gradients")
"""What a criterion measured on data reads."""


def add_criterion(group: Any, default: str | None, what: str) -> None:
    """``--criterion NAME`` (and ``--seed``, for ``random``) in ``group``."""
    measured = ", ".join(n for n, c in CRITERIA.items() if c.needs in DATA_NEEDS)
    group.add_argument(
        "--criterion", default=default, metavar="NAME",
        help=f"{what}: {', '.join(CRITERIA)} (measured on --data: {measured})"
             + (" (default: %(default)s)" if default else ""))
    group.add_argument("--seed", type=int, default=0,
                       help="seed of the random criterion (default: %(default)s)")


def _unknown(name: str) -> CliError:
    return CliError(f"--criterion {name}: unknown criterion; the criteria are "
                    f"{', '.join(CRITERIA)}", EXIT_USAGE)


def known_criterion(name: str) -> None:
    """Raise :class:`CliError` unless ``name`` is registered (after ``--custom-objects``
    modules, which may register criteria, are imported)."""
    if name not in CRITERIA:
        raise _unknown(name)


def needs_data(name: str) -> bool:
    """Whether the criterion ``name`` is measured on data (``False`` for an unknown one)."""
    return name in CRITERIA and CRITERIA[name].needs in DATA_NEEDS


def needs_labels(name: str) -> bool:
    """Whether the criterion ``name`` differentiates the loss (its data needs labels)."""
    return CRITERIA[name].needs == "gradients"


def check_criterion(args: argparse.Namespace, data: str | None, option: str = "--data",
                    ) -> None:
    """Check ``--criterion`` against the data given for it, before any work.

    Parameters
    ----------
    args
        The parsed options (``criterion``, ``custom_objects``).
    data
        The data given to measure the criterion on (``None``: none).
    option
        That data's option, for messages.

    Raises
    ------
    CliError
        An unknown criterion (unless ``--custom-objects`` may register it), a criterion
        measured on data without it, or data given to a criterion that reads none.
    """
    name = args.criterion
    if name not in CRITERIA:
        if args.custom_objects:  # a module may register it: checked once it is imported
            return
        raise _unknown(name)
    needs = CRITERIA[name].needs
    if needs in DATA_NEEDS and data is None:
        what = ("gradients of the loss, on data with labels" if needs == "gradients"
                else "activations, on data")
        raise CliError(f"--criterion {name} is measured from {what}: give {option} DATA, or "
                       "choose a criterion that reads the weights (l1, l2, bn_scale)",
                       EXIT_USAGE)
    if needs not in DATA_NEEDS and data is not None:
        raise CliError(f"--criterion {name} reads {needs}, not data: leave {option} out, or "
                       f"choose a criterion measured on data "
                       f"({', '.join(n for n, c in CRITERIA.items() if c.needs in DATA_NEEDS)})",
                       EXIT_USAGE)
