"""Pictures of the command line, drawn with matplotlib (the optional extra ``plot``).

Each function draws one figure, writes it atomically and returns a :class:`Picture`: the
file, its number of panels and where each panel lies in the image (what tests and
``--json`` report). Figures are made with ``matplotlib.figure.Figure``, never ``pyplot``:
no global state, no window, no backend to choose.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from kerasprune.cli.errors import CliError
from kerasprune.cli.io import atomic_write, check_output
from kerasprune.cli.selection import Rule

__all__ = ["KEPT", "SELECTED", "THRESHOLD", "Picture", "accuracy_vs_cost",
           "apoz_histograms", "check_format", "check_picture", "histograms", "require",
           "sensitivity",
           "widths_per_round"]

KEPT = "#4c72b0"
"""Colour of the neurons a rule keeps (histogram bars)."""
SELECTED = "#dd8452"
"""Colour of the neurons a rule selects for deletion."""
THRESHOLD = "#c44e52"
"""Colour of the threshold line and of rejected rounds."""
_DPI = 100
_FORMATS = (".png", ".svg", ".pdf")


@dataclass(frozen=True)
class Picture:
    """A written figure.

    Attributes
    ----------
    path : str
        The file.
    panels : int
        How many panels (axes) it has.
    size : tuple of int
        Width and height in pixels (of a PNG).
    boxes : list of tuple of int
        Each panel's ``(left, top, right, bottom)`` in pixels, from the top-left corner.
    """

    path: str
    panels: int
    size: tuple[int, int]
    boxes: list[tuple[int, int, int, int]] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        """As JSON data."""
        return {"path": self.path, "panels": self.panels, "size": list(self.size),
                "boxes": [list(b) for b in self.boxes]}


def require(option: str) -> None:
    """Raise a clear :class:`CliError` if matplotlib cannot be imported.

    Parameters
    ----------
    option
        The option that asked for a picture, for the message.
    """
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise CliError(f"{option} draws with matplotlib, which is not installed: "
                       "pip install 'kerasprune[plot]'") from None


def check_format(path: str | os.PathLike[str], option: str) -> None:
    """Raise :class:`CliError` unless ``path`` ends in a format the pictures support."""
    if Path(path).suffix.lower() not in _FORMATS:
        raise CliError(f"{option} {path}: the file name must end in "
                       f"{', '.join(_FORMATS)}")


def check_picture(path: str | os.PathLike[str], option: str, *, force: bool,
                  inputs: Sequence[str | os.PathLike[str]]) -> None:
    """Check, before any work, that a picture can be drawn (matplotlib) and written there.

    Raises
    ------
    CliError
        An unsupported format, no matplotlib, or a file that may not be written.
    """
    check_format(path, option)
    require(option)
    check_output(path, force=force, inputs=inputs, what=option)


def _tick(value: float) -> str:
    """A short axis label: ``12k``, ``1.5M``."""
    for unit, size in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(value) >= size:
            return f"{value / size:.3g}{unit}"
    return f"{value:.3g}"


def _figure(panels: int, width: float, height: float, columns: int,
            layout: Literal["constrained"] | None = "constrained") -> tuple[Any, list[Any]]:
    from matplotlib.figure import Figure

    columns = max(1, min(columns, panels))
    rows = math.ceil(panels / columns)
    fig = Figure(figsize=(width * columns, height * rows + 0.6), dpi=_DPI, layout=layout)
    grid = fig.subplots(rows, columns, squeeze=False)
    axes = list(grid.flat)
    for ax in axes[panels:]:
        ax.remove()
    return fig, axes[:panels]


def _save(fig: Any, path: str | os.PathLike[str]) -> Picture:
    target = Path(path)
    atomic_write(target, lambda tmp: fig.savefig(tmp, dpi=_DPI,
                                                 format=target.suffix.lstrip(".").lower()))
    width, height = (round(float(v) * _DPI) for v in fig.get_size_inches())
    boxes = []
    for ax in fig.axes:
        box = ax.get_window_extent()
        boxes.append((math.floor(box.x0), math.floor(height - box.y1), math.ceil(box.x1),
                      math.ceil(height - box.y0)))
    return Picture(str(target), len(fig.axes), (width, height), boxes)


def apoz_histograms(apoz: Mapping[str, npt.ArrayLike], rule: Rule,
                    path: str | os.PathLike[str], title: str,
                    measured_at: Mapping[str, str] | None = None) -> Picture:
    """One histogram of APoZ per layer, the rule's selection coloured, its threshold drawn.

    Parameters
    ----------
    apoz
        ``{layer: APoZ per neuron}``.
    rule
        The selection rule: neurons it selects are drawn in :data:`SELECTED`, its threshold
        as a dashed line in :data:`THRESHOLD`.
    path
        The file to write (``.png``, ``.svg`` or ``.pdf``).
    title
        The figure's title.
    measured_at
        For each layer, the layer whose output was counted (shown when it differs).

    Returns
    -------
    Picture
        One panel per layer.
    """
    values = {name: np.asarray(v, dtype=np.float64) for name, v in apoz.items()}
    return histograms(values, path, title, xlabel="APoZ", xlim=(0.0, 1.0),
                      selected={n: rule.select(v) for n, v in values.items()},
                      thresholds={n: rule.threshold(v) for n, v in values.items()},
                      threshold_label=f"threshold: {rule.describe()}",
                      measured_at=measured_at)


def histograms(values: Mapping[str, npt.NDArray[np.float64]], path: str | os.PathLike[str],
               title: str, *, xlabel: str, xlim: tuple[float, float] | None = None,
               selected: Mapping[str, npt.ArrayLike] | None = None,
               thresholds: Mapping[str, float | None] | None = None,
               threshold_label: str = "threshold",
               measured_at: Mapping[str, str] | None = None) -> Picture:
    """One histogram of a per-neuron value per layer, selected neurons coloured, a threshold
    drawn.

    Parameters
    ----------
    values
        ``{layer: value per neuron}``.
    path
        The file to write (``.png``, ``.svg`` or ``.pdf``).
    title
        The figure's title.
    xlabel
        What the values are.
    xlim
        The x range of every panel (``None``: each layer's own range, from 0 if the values
        are not negative).
    selected
        ``{layer: indices}`` drawn in :data:`SELECTED` (the others in :data:`KEPT`).
    thresholds
        ``{layer: value}`` drawn as a dashed line in :data:`THRESHOLD` (``None``: none).
    threshold_label
        The line's legend entry.
    measured_at
        For each layer, the layer whose output was measured (shown when it differs).

    Returns
    -------
    Picture
        One panel per layer.
    """
    from matplotlib.ticker import MaxNLocator

    layers = list(values)
    fig, axes = _figure(len(layers), 4.0, 2.9, 4 if len(layers) > 9 else 3)
    for ax, name in zip(axes, layers, strict=True):
        v = np.asarray(values[name], dtype=np.float64)
        chosen = np.zeros(len(v), dtype=bool)
        if selected is not None:
            chosen[np.asarray(selected[name], dtype=np.int64)] = True
        threshold = thresholds.get(name) if thresholds is not None else None
        low, high = xlim if xlim is not None else (min(0.0, float(v.min())), float(v.max()))
        if high <= low:
            high = low + 1.0
        # 40 bins, one edge at the threshold: no bar mixes both sides of it.
        edges = np.linspace(low, high, 41)
        if threshold is not None and low < threshold < high:
            edges = np.union1d(edges, [threshold])
        ax.hist([v[~chosen], v[chosen]], bins=edges, stacked=True, color=[KEPT, SELECTED],
                label=["kept", "selected"])
        where = f" at {measured_at[name]}" if measured_at and measured_at[name] != name else ""
        note = ""
        if threshold is not None and threshold <= high:
            ax.axvline(threshold, color=THRESHOLD, linestyle="--", linewidth=1.6,
                       label=threshold_label)
        elif threshold is not None:
            note = f"; threshold {threshold:.2f} > {high:g}"
        ax.set_title(f"{name}{where}\n{len(v)} neurons, {int(chosen.sum())} selected, "
                     f"mean {v.mean():.3g}{note}", fontsize=9)
        ax.set_xlim(low, high)
        ax.yaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlabel(xlabel, fontsize=8)
        ax.set_ylabel("neurons", fontsize=8)
        ax.tick_params(labelsize=7)
    handles: dict[str, Any] = {}
    for ax in axes:
        for handle, label in zip(*ax.get_legend_handles_labels(), strict=True):
            handles.setdefault(label, handle)
    fig.legend(list(handles.values()), list(handles), loc="outside lower center",
               ncols=len(handles), fontsize=8, frameon=False)
    fig.suptitle(title, fontsize=11)
    return _save(fig, path)


def sensitivity(report: Any, path: str | os.PathLike[str], title: str) -> Picture:
    """A :class:`kerasprune.SensitivityReport` as its own plot draws it: the metric against
    the share deleted, a line per group, the baseline dashed.

    Returns
    -------
    Picture
        One panel.
    """
    fig, (ax,) = _figure(1, 7.0, 4.5, 1, layout=None)  # the report's plot lays it out
    report.plot(ax=ax)
    ax.set_title(f"{ax.get_title()}: {title}", fontsize=10)
    fig.tight_layout()
    return _save(fig, path)


def widths_per_round(rounds: Sequence[int], widths: Mapping[str, Sequence[int | None]],
                     accepted: Sequence[bool], best: int,
                     path: str | os.PathLike[str], title: str) -> Picture:
    """Width of each trimmed layer per round, as a share of its starting width.

    Parameters
    ----------
    rounds
        The round numbers (0 first).
    widths
        ``{layer: width after each round}``.
    accepted
        Whether each round was accepted (rejected rounds are drawn hollow).
    best
        The round whose model was kept (a vertical line).
    path, title
        The file and the figure's title.

    Returns
    -------
    Picture
        One panel.
    """
    fig, (ax,) = _figure(1, 7.0, 4.2, 1)
    x = np.asarray(rounds)
    ok = np.asarray(accepted, dtype=bool)
    for i, (name, values) in enumerate(widths.items()):
        w = np.asarray([np.nan if v is None else v for v in values], dtype=np.float64)
        share = 100.0 * w / w[0]
        colour = f"C{i % 10}"
        ax.plot(x, share, marker="o", color=colour,
                label=f"{name}: {int(w[0])} -> {int(w[best])}")
        ax.plot(x[~ok], share[~ok], marker="o", linestyle="none", markerfacecolor="white",
                markeredgecolor=colour)
    ax.axvline(best, color="0.5", linestyle=":", linewidth=1.2, label=f"kept: round {best}")
    if (~ok).any():
        ax.plot([], [], marker="o", linestyle="none", markerfacecolor="white",
                markeredgecolor="0.3", label="rejected round")
    ax.set_xticks(x)
    ax.set_ylim(0, 105)
    ax.set_xlabel("round")
    ax.set_ylabel("width, % of round 0")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.suptitle(title, fontsize=11)
    return _save(fig, path)


def accuracy_vs_cost(rounds: Sequence[int], params: Sequence[int], flops: Sequence[int],
                     scores: Sequence[float], accepted: Sequence[bool], best: int,
                     metric: str, floor: float, path: str | os.PathLike[str],
                     title: str) -> Picture:
    """The tracked metric of each round against its params and against its FLOPs.

    Parameters
    ----------
    rounds, params, flops, scores, accepted
        Per round: its number, total params and FLOPs, metric value, and whether accepted.
    best
        The round whose model was kept (a star).
    metric
        The metric's name (the y label).
    floor
        The lowest accepted value (a dashed line).
    path, title
        The file and the figure's title.

    Returns
    -------
    Picture
        Two panels: metric vs params, metric vs FLOPs.
    """
    from matplotlib.ticker import FuncFormatter

    fig, axes = _figure(2, 4.6, 3.8, 2)
    ok = np.asarray(accepted, dtype=bool)
    y = np.asarray(scores, dtype=np.float64)
    for ax, cost, label in zip(axes, (params, flops), ("params", "FLOPs"), strict=True):
        x = np.asarray(cost, dtype=np.float64)
        ax.plot(x, y, color=KEPT, linewidth=1.2, alpha=0.7)
        ax.scatter(x[ok], y[ok], color=KEPT, zorder=3, label="accepted round")
        if (~ok).any():
            ax.scatter(x[~ok], y[~ok], color=THRESHOLD, marker="x", zorder=3,
                       label="rejected round")
        ax.scatter([x[best]], [y[best]], s=180, marker="*", color=SELECTED, zorder=4,
                   label=f"kept: round {best}")
        for r, xi, yi in zip(rounds, x, y, strict=True):
            ax.annotate(str(r), (xi, yi), textcoords="offset points", xytext=(4, 4),
                        fontsize=7)
        ax.axhline(floor, color=THRESHOLD, linestyle="--", linewidth=1.0,
                   label="lowest accepted")
        ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: _tick(v)))
        ax.set_xlabel(f"{label} (rounds numbered)")
        ax.set_ylabel(metric)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7)
    fig.suptitle(title, fontsize=11)
    return _save(fig, path)
