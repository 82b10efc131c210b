"""The subcommands, one module each, in the order ``kerasprune --help`` lists them.

A new subcommand is one module with a :class:`~kerasprune.cli.command.
Command` subclass, added to :data:`COMMANDS`.
"""

from __future__ import annotations

from kerasprune.cli.command import Command
from kerasprune.cli.commands import apoz, prune, sensitivity, stats, summary, trim

__all__ = ["COMMANDS"]

COMMANDS: dict[str, Command] = {
    command.name: command
    for command in (summary.Summary(), apoz.Apoz(), stats.Stats(), prune.Prune(),
                    sensitivity.Sensitivity(), trim.Trim())
}
"""Each subcommand by name."""
