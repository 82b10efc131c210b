"""Sensitivity analysis: how much a model loses when part of one layer goes, layer by layer.

:func:`sensitivity` deletes 10%, 20%... 90% of one coupled group at a time (the lowest scores
by a criterion, as :func:`kerasprune.prune` would take them; :func:`kerasprune.core.plan.
cut_group`), evaluates the smaller model without any fine-tuning, and tabulates the tracked
metric per group and fraction. Layers whose metric falls fast are sensitive: prune them less
(:meth:`SensitivityReport.limits` turns the table into ``max_fraction`` and ``protect`` for
:func:`kerasprune.prune`), as Li et al. 2017 ("Pruning Filters for Efficient ConvNets") do.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import keras
import numpy as np
import numpy.typing as npt

from kerasprune.adapters.keras import apoz as keras_apoz
from kerasprune.adapters.keras import build, convert, finetune, refs, surgery
from kerasprune.adapters.keras import data as keras_data
from kerasprune.adapters.keras.refs import LayerRef
from kerasprune.adapters.keras.stats import (
    loss_function,
    measure_stats,
    readable_weights,
    stats_kind,
)
from kerasprune.core.criteria import Criterion, Random, criterion_for, layer_scores
from kerasprune.core.groups import analyze_channels
from kerasprune.core.plan import cut_group
from kerasprune.core.scores import score_groups

__all__ = ["DEFAULT_FRACTIONS", "SensitivityReport", "new_axes", "new_figure", "sensitivity"]

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]

DEFAULT_FRACTIONS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)


@dataclass(frozen=True, eq=False)
class SensitivityReport:
    """The metric of a model after deleting a share of one group, for every group and share.

    Attributes
    ----------
    metric : str
        The tracked metric (a name ``model.evaluate`` returns).
    mode : str
        ``"max"`` if higher is better, ``"min"`` if lower is.
    baseline : float
        The metric of the model as given.
    fractions : tuple of float
        The shares asked for, in ``(0, 1]``.
    groups : tuple of tuple of str
        Each analysed group's layers (its first layer names it).
    widths : tuple of int
        Each group's width (slots).
    deleted : numpy.ndarray
        ``(groups, fractions)`` int: slots actually deleted (fewer than asked when slots are
        blocked or ``round_to`` rounds down; the same count is evaluated once).
    values : numpy.ndarray
        ``(groups, fractions)`` float: the metric after the deletion, without fine-tuning;
        NaN where nothing could be deleted.
    criterion : str
        The criterion that chose the neurons.
    protected : tuple of str
        Layers writing a model output (protected by :func:`kerasprune.prune` by default).
    skipped : Mapping[str, str]
        Groups (by first layer) that were not analysed, with why.
    seconds : float
        Wall time.
    """

    metric: str
    mode: str
    baseline: float
    fractions: tuple[float, ...]
    groups: tuple[tuple[str, ...], ...]
    widths: tuple[int, ...]
    deleted: IntArray
    values: FloatArray
    criterion: str
    protected: tuple[str, ...] = ()
    skipped: Mapping[str, str] = field(default_factory=dict)
    seconds: float = 0.0

    def loss(self) -> FloatArray:
        """``(groups, fractions)``: how much worse than the baseline, in the metric's units
        (positive: worse; NaN where nothing was deleted)."""
        change = self.values - self.baseline
        out: FloatArray = -change if self.mode == "max" else change
        return out

    def max_fractions(self, tolerance: float) -> dict[str, float]:
        """Per layer, the largest share of its group that could go while the metric stayed
        within ``tolerance`` of the baseline at that share and every smaller one.

        Layers whose group cannot lose even the smallest share are left out (see
        :meth:`limits`, which protects them).
        """
        tol = _tolerance(tolerance)
        out: dict[str, float] = {}
        worse = self.loss()
        for g, layers in enumerate(self.groups):
            best = 0.0
            for j in range(len(self.fractions)):
                if math.isnan(worse[g, j]):
                    continue
                if worse[g, j] > tol + 1e-12:
                    break
                best = self.deleted[g, j] / self.widths[g]
            if best > 0:
                for layer in layers:
                    out[layer] = float(best)
        return out

    def limits(self, tolerance: float) -> dict[str, Any]:
        """``max_fraction`` and ``protect`` for :func:`kerasprune.prune`: each analysed layer
        may lose the share :meth:`max_fractions` allows; layers that cannot lose any (and the
        output layers) are protected.

        Examples
        --------
        >>> report = kerasprune.sensitivity(model, (x_val, y_val))  # doctest: +SKIP
        >>> kerasprune.prune(model, flops=0.5, **report.limits(0.01))  # doctest: +SKIP
        """
        allowed = self.max_fractions(tolerance)
        protect = [layer for layers in self.groups for layer in layers if layer not in allowed]
        return {"max_fraction": allowed,
                "protect": list(dict.fromkeys([*self.protected, *protect]))}

    def table(self) -> str:
        """The metric per group (rows) and share deleted (columns), the baseline on top."""
        head = ["group", "width", *(f"{f:.0%}" for f in self.fractions)]
        rows = [head]
        for g, layers in enumerate(self.groups):
            name = layers[0] + (f" (+{len(layers) - 1})" if len(layers) > 1 else "")
            cells = [name, str(self.widths[g])]
            for j in range(len(self.fractions)):
                v = self.values[g, j]
                cells.append("-" if math.isnan(v) else f"{v:.4f}")
            rows.append(cells)
        widths = [max(len(r[i]) for r in rows) for i in range(len(head))]
        lines = [f"sensitivity of {self.metric} to deleting a share of each group by "
                 f"{self.criterion!r}, without fine-tuning (baseline {self.baseline:.4f})", ""]
        for k, r in enumerate(rows):
            lines.append("  ".join(c.ljust(w) if i == 0 else c.rjust(w)
                                   for i, (c, w) in enumerate(zip(r, widths, strict=True))))
            if k == 0:
                lines.append("  ".join("-" * w for w in widths))
        if self.skipped:
            lines += ["", "not analysed:"]
            lines += [f"  {name}: {why}" for name, why in self.skipped.items()]
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.table()

    def plot(self, path: str | None = None, ax: Any = None) -> Any:
        """A line per group: the metric against the share deleted (matplotlib).

        Parameters
        ----------
        path
            Save the figure there (PNG, SVG, PDF... by the extension).
        ax
            A matplotlib ``Axes`` to draw on; ``None``: a new figure.

        Returns
        -------
        matplotlib.figure.Figure

        Raises
        ------
        ImportError
            Without matplotlib (``pip install "kerasprune[plot]"``).
        """
        fig, ax = new_axes(ax, "SensitivityReport.plot")
        for g, layers in enumerate(self.groups):
            share = self.deleted[g] / self.widths[g]
            seen = ~np.isnan(self.values[g])
            label = layers[0] + (f" (+{len(layers) - 1})" if len(layers) > 1 else "")
            ax.plot(100 * share[seen], self.values[g][seen], marker="o", label=label)
        ax.axhline(self.baseline, color="grey", linestyle="--", linewidth=1, label="baseline")
        ax.set_xlabel("neurons deleted from the group (%)")
        ax.set_ylabel(f"{self.metric} (no fine-tuning)")
        ax.set_title(f"Sensitivity by {self.criterion!r}")
        ax.grid(True, alpha=0.3)
        if len(self.groups) <= _LEGEND_INSIDE:
            ax.legend(fontsize="small")
        else:  # a long legend would cover the lines: beside the axes
            ax.legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.01, 1.0))
        if path is not None:
            fig.savefig(path, dpi=120)
        return fig


_LEGEND_INSIDE = 8
"""Up to this many groups, the plot's legend is inside the axes."""


def new_figure(who: str, size: tuple[float, float] = (7.0, 4.5)) -> Any:
    """A new matplotlib ``Figure`` (no pyplot: no global state, no GUI backend touched), laid
    out by matplotlib's constrained layout (legends outside the axes fit).

    Raises
    ------
    ImportError
        Without matplotlib, naming ``who`` and the extra that installs it.
    """
    try:
        from matplotlib.figure import Figure
    except ImportError as err:
        raise ImportError(f'{who} needs matplotlib: pip install "kerasprune[plot]"') from err
    return Figure(figsize=size, layout="constrained")


def new_axes(ax: Any, who: str) -> tuple[Any, Any]:
    """``(figure, axes)``: ``ax`` and its figure, or a new figure's only axes."""
    if ax is not None:
        return ax.figure, ax
    fig = new_figure(who)
    return fig, fig.subplots()


def _tolerance(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.number)):
        raise TypeError(f"tolerance must be a number, got {value!r}")
    out = float(value)
    if not (math.isfinite(out) and out >= 0):
        raise ValueError(f"tolerance must be a finite number >= 0, got {value!r}")
    return out


def _fractions(value: Any) -> tuple[float, ...]:
    try:
        out = tuple(float(f) for f in value)
    except TypeError:
        raise TypeError(f"fractions must be a list of shares in (0, 1], got {value!r}") from None
    if not out or any(not 0 < f <= 1 for f in out) or list(out) != sorted(set(out)):
        raise ValueError(f"fractions must be increasing shares in (0, 1], got {value!r}")
    return out


def sensitivity(model: keras.Model, data: Any, *, criterion: str | Criterion = "l1",
                layers: LayerRef | Iterable[LayerRef] | None = None,
                fractions: Sequence[float] = DEFAULT_FRACTIONS, stats_data: Any = None,
                stats: Mapping[str, Any] | None = None, loss: Any = None,
                metric: str | None = None, mode: str = "auto", round_to: int = 1,
                batch_size: int = 32, steps: int | None = None, seed: int = 0,
                verbose: int = 1) -> SensitivityReport:
    """The metric after deleting 10..90% of each layer's group, without fine-tuning.

    Parameters
    ----------
    model
        A built, compiled Sequential or functional model (its compiled metrics are what is
        evaluated). It is not modified.
    data
        Evaluation data with labels: ``(x, y)``, a ``tf.data.Dataset``... (as
        ``model.evaluate`` takes it). Checked before anything runs.
    criterion
        Which neurons of a group go first: the lowest scores by this criterion (``"l1"``,
        ``"random"``, ``"taylor"``... as :func:`kerasprune.prune`).
    layers
        Analyse the groups of these layers; ``None``: every group that can lose neurons
        (except those of layers that write a model output).
    fractions
        Shares of each group to delete, increasing, in ``(0, 1]``; each is rounded down to
        whole slots (and to ``round_to``).
    stats_data
        Data to measure a data-driven criterion on; ``None``: ``data``.
    stats
        Statistics measured beforehand (:func:`kerasprune.get_stats`), instead.
    loss
        For ``"taylor"``: the loss; ``None``: the compiled one.
    metric, mode
        The metric to track and its direction, as in :func:`kerasprune.trim` (default:
        accuracy).
    round_to
        Delete in units that keep a multiple of this many neurons, as :func:`kerasprune.prune`.
    batch_size, steps
        Batch size for in-memory arrays; at most ``steps`` batches per evaluation (and per
        statistics pass).
    seed
        Seed of the ``"random"`` criterion.
    verbose
        0: silent; 1: a line per group.

    Returns
    -------
    SensitivityReport
        ``.table()``, ``.plot(path)``, ``.max_fractions(tolerance)`` and
        ``.limits(tolerance)`` (``max_fraction`` and ``protect`` for :func:`kerasprune.prune`).

    Raises
    ------
    ValueError, TypeError
        Before anything is built, naming the argument: the model is not compiled, an unknown
        criterion, bad fractions, data that does not fit, a criterion that needs data or a
        loss without it.
    PruneError
        A layer in ``layers`` that the model does not have or that cannot lose neurons.
    """
    start = time.monotonic()
    if verbose not in (0, 1, 2) or isinstance(verbose, bool):
        raise ValueError(f"verbose must be 0, 1 or 2, got {verbose!r}")
    chosen_fractions = _fractions(fractions)
    if isinstance(criterion, str) and criterion == "random":
        chosen: Criterion = Random(int(seed))
    else:
        chosen = criterion_for(criterion)
    kind = stats_kind(chosen)
    keras_apoz.check_args(batch_size, 0, steps)
    compiled = finetune.compile_config(model, None, who="sensitivity")
    kg = convert.to_graph(model)
    analysis = analyze_channels(kg.graph)
    names = refs.layer_names(kg, layers, "analyse")
    wanted = None if names is None else {analysis.group_of(n).index for n in names}
    outputs = set(kg.graph.outputs)
    protected = tuple(m.layer for g in analysis.groups if outputs.intersection(g.elements)
                      for m in g.members)
    source = keras_data.read(data, model, name="data", labels=True, reiterable=True,
                             batch_size=batch_size, steps=steps)
    measure_on = None
    fn = None
    if kind is not None and stats is None:
        fn = loss_function(model, loss) if kind == "taylor" else None
        measure_on = source if stats_data is None else keras_data.read(
            stats_data, model, name="stats_data", labels=kind == "taylor", reiterable=False,
            batch_size=batch_size, steps=steps)
    elif kind is None and (stats is not None or stats_data is not None):
        raise ValueError(f"criterion {chosen.name!r} reads no data: leave stats and "
                         "stats_data out")
    reference = build.from_graph(kg, kg.graph)
    finetune.compile_fresh(reference, compiled)
    results = finetune.evaluate(reference, source, steps)
    tracked, direction = finetune.pick_metric(metric, mode, results, reference)
    baseline = results[tracked]

    if measure_on is not None:
        stats = measure_stats(model, measure_on, chosen, kg=kg, analysis=analysis, loss=fn,
                              strict=False)
    scores = score_groups(analysis, layer_scores(readable_weights(analysis, chosen), chosen,
                                                 stats))
    groups, widths, rows_deleted, rows_values = [], [], [], []
    skipped: dict[str, str] = {}
    for group in analysis.groups:
        if wanted is not None and group.index not in wanted:
            continue
        first = group.layers[0]
        if wanted is None and set(group.layers) & set(protected):
            continue
        if not group.prunable:
            skipped[first] = f"blocked: {group.why_not}"
            continue
        if group.index not in scores.scores:
            skipped[first] = scores.unscored.get(group.index, "not scored")
            continue
        deleted = np.zeros(len(chosen_fractions), dtype=np.int64)
        values = np.full(len(chosen_fractions), np.nan)
        last: tuple[int, float] | None = None
        for j, f in enumerate(chosen_fractions):
            request = cut_group(analysis, group.index, f, scores, round_to=round_to)
            if not request:
                continue
            count = _slots(group, request)
            if last is not None and last[0] == count:
                deleted[j], values[j] = last
                continue
            pruned = surgery.delete_neurons(model, dict(request))
            finetune.compile_fresh(pruned, compiled)
            value = finetune.evaluate(pruned, source, steps)[tracked]
            deleted[j], values[j] = count, value
            last = (count, value)
        if not (deleted > 0).any():
            skipped[first] = "no share of it can be deleted (too narrow for the fractions)"
            continue
        groups.append(group.layers)
        widths.append(group.width)
        rows_deleted.append(deleted)
        rows_values.append(values)
        if verbose:
            shown = ", ".join(f"{100 * d / group.width:.0f}%: {values[j]:.4f}"
                              for d, j in zip(*np.unique(deleted, return_index=True),
                                              strict=True) if d)
            print(f"{first} ({group.width} wide): {shown}", flush=True)
    return SensitivityReport(
        tracked, direction, float(baseline), chosen_fractions, tuple(groups), tuple(widths),
        np.array(rows_deleted, dtype=np.int64).reshape(len(groups), len(chosen_fractions)),
        np.array(rows_values, dtype=np.float64).reshape(len(groups), len(chosen_fractions)),
        chosen.name, protected, skipped, time.monotonic() - start)


def _slots(group: Any, request: Mapping[str, Any]) -> int:
    """How many of the group's slots ``request`` deletes."""
    member = next(m for m in group.members if m.layer in request)
    return int(np.unique(member.slots[np.asarray(request[member.layer])]).size)
