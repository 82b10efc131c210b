"""The base of a subcommand: its options, checks made before any work, and its run."""

from __future__ import annotations

import abc
import argparse
from typing import ClassVar

from kerasprune.cli.console import Console

__all__ = ["Command"]


class Command(abc.ABC):
    """One subcommand of ``kerasprune``.

    A subclass names itself, adds its options (the shared groups of
    :mod:`kerasprune.cli.options` and its own), and runs. Keras is imported only inside
    :meth:`run`, so ``--help`` and the checks of :meth:`check` are fast.
    """

    name: ClassVar[str]
    help: ClassVar[str]
    description: ClassVar[str]
    epilog: ClassVar[str] = ""

    @abc.abstractmethod
    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        """Add this command's options to its parser."""

    def check(self, args: argparse.Namespace) -> None:  # noqa: B027 (optional to override)
        """Check what can be checked before any work (output files, plot support), raising
        :class:`~kerasprune.cli.errors.CliError`. Runs before Keras is imported."""

    @abc.abstractmethod
    def run(self, args: argparse.Namespace, console: Console) -> None:
        """Do the work; results go to ``console.result``, failures raise errors."""
