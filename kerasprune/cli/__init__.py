"""The ``kerasprune`` command line: prune saved ``.keras`` models without writing Python.

Subcommands (one module each in :mod:`kerasprune.cli.commands`):

- ``summary MODEL.keras``: per layer its kind, width, params, FLOPs, whether its neurons can
  be deleted (and why not) and its dependency group.
- ``apoz MODEL.keras --data DATA``: APoZ per neuron, as JSON and histograms.
- ``prune MODEL.keras -o OUT.keras``: delete given neurons, or those an APoZ file selects.
- ``trim MODEL.keras --train DATA --val DATA -o OUT.keras``: Network Trimming, with a
  Markdown report and pictures.

The command line sits on the public API (:mod:`kerasprune`, :mod:`kerasprune.core`) and
nothing below imports it.
"""

from kerasprune.cli.main import main, run

__all__ = ["main", "run"]
