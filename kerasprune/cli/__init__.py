"""The ``kerasprune`` command line: prune saved ``.keras`` models without writing Python.

Subcommands (one module each in :mod:`kerasprune.cli.commands`):

- ``summary MODEL.keras``: per layer its kind, width, params, FLOPs, whether its neurons can
  be deleted (and why not) and its dependency group.
- ``apoz MODEL.keras --data DATA``: APoZ per neuron, as JSON and histograms.
- ``stats MODEL.keras --criterion NAME``: any criterion's values and scores per neuron.
- ``prune MODEL.keras -o OUT.keras``: delete given neurons, those an APoZ file selects, or
  those :func:`kerasprune.prune` chooses to meet a target (``--flops 0.5``).
- ``sensitivity MODEL.keras --data DATA``: the metric after deleting shares of each layer,
  and per-layer limits for ``prune --limits``.
- ``trim MODEL.keras --train DATA --val DATA -o OUT.keras``: Network Trimming, with a
  Markdown report and pictures.

The command line sits on the public API (:mod:`kerasprune`, :mod:`kerasprune.core`) and
nothing below imports it.
"""

from kerasprune.cli.main import main, run

__all__ = ["main", "run"]
