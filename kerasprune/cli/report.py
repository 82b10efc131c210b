"""The Markdown report of ``kerasprune trim --report DIR``.

:class:`TrimRecord` holds what a trimming run did, in plain data (it is also written as
``history.json``); :func:`markdown` turns it into ``report.md``, which shows the pictures
written beside it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from kerasprune.cli.format import human, ratio

__all__ = ["RoundRecord", "TrimRecord", "markdown"]


@dataclass(frozen=True)
class RoundRecord:
    """One round of a trimming run (round 0: the starting model).

    Attributes
    ----------
    round : int
        The round's number.
    widths : dict
        Width of each trimmed layer after the round.
    deleted : dict
        Neurons deleted from each trimmed layer in the round.
    params, flops : int
        Totals after the round.
    score : float
        The tracked metric on the validation data.
    metrics : dict
        Everything ``model.evaluate`` returned.
    accepted : bool
        Whether the score stayed within the tolerance.
    epochs : int
        Fine-tuning epochs run.
    seconds : float
        Wall time of the round.
    apoz_mean : dict
        Mean APoZ of each trimmed layer of the round's model (empty if not measured).
    """

    round: int
    widths: dict[str, int | None]
    deleted: dict[str, int]
    params: int
    flops: int
    score: float
    metrics: dict[str, float]
    accepted: bool
    epochs: int
    seconds: float
    apoz_mean: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class TrimRecord:
    """What a trimming run did, for the report and ``history.json``.

    Attributes
    ----------
    model, output : str
        The input and output model files.
    command : str
        The command line.
    date, version, backend : str
        When, with which kerasprune, on which Keras backend.
    data : dict
        Description of each data source (``train``, ``val``, ``apoz``).
    settings : dict
        The trimming settings (rule, epochs, tolerance...).
    metric : str
        The tracked metric.
    floor : float
        The lowest accepted value of the metric.
    best : int
        The round whose model was kept.
    stopped : str
        Why the run stopped.
    layers : list of str
        The trimmed layers.
    rounds : list of RoundRecord
        Every round, 0 first.
    before, after : list of dict
        Each layer's kind, width, params and FLOPs, at the start and in the kept model.
    pictures : dict
        Each picture's file name, caption and panel count, by key.
    """

    model: str
    output: str
    command: str
    date: str
    version: str
    backend: str
    data: dict[str, str]
    settings: dict[str, Any]
    metric: str
    floor: float
    best: int
    stopped: str
    layers: list[str]
    rounds: list[RoundRecord]
    before: list[dict[str, Any]]
    after: list[dict[str, Any]]
    pictures: dict[str, dict[str, Any]] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        """As JSON data."""
        return asdict(self)


def _cell(text: Any) -> str:
    return str(text).replace("|", "\\|")


def _md_table(rows: Sequence[Sequence[Any]], right: Sequence[int] = ()) -> list[str]:
    head, *body = rows
    rule = ["---:" if i in right else "---" for i in range(len(head))]
    return ["| " + " | ".join(_cell(c) for c in row) + " |"
            for row in (head, rule, *body)]


def _width(before: Mapping[str, Any], after: Mapping[str, Any] | None) -> str:
    if before["width"] is None:
        return ""
    new = after["width"] if after is not None else before["width"]
    return f"{before['width']}" if new == before["width"] else f"{before['width']} → {new}"


def _arrow(old: int, new: int) -> str:
    return f"{old:,}" if old == new else f"{old:,} → {new:,}"


def markdown(record: TrimRecord) -> str:
    """The report as Markdown.

    Parameters
    ----------
    record
        The run.

    Returns
    -------
    str
        ``report.md``'s text; pictures are linked by file name (they sit beside it).
    """
    first, kept = record.rounds[0], record.rounds[record.best]
    ran = len(record.rounds) - 1
    lines = [f"# Network Trimming of `{record.model}`", "",
             f"`{record.command}`", "",
             f"{record.date}; kerasprune {record.version}, Keras backend {record.backend}.", "",
             "## Result", "",
             f"- **params {first.params:,} → {kept.params:,}** "
             f"({ratio(first.params, kept.params)}), "
             f"FLOPs {human(first.flops)} → {human(kept.flops)} "
             f"({ratio(first.flops, kept.flops).replace('smaller', 'fewer')})",
             f"- validation {record.metric} {first.score:.4f} → {kept.score:.4f} "
             f"(lowest accepted: {record.floor:.4f})",
             f"- kept round {record.best} of {ran} run; stopped: {record.stopped}",
             f"- saved as `{record.output}`", ""]
    after = {c["name"]: c for c in record.after}
    rows: list[list[Any]] = [["layer", "kind", "width", "params", "FLOPs"]]
    for c in record.before:
        if not c["params"]:
            continue
        a = after.get(c["name"], c)
        rows.append([f"`{c['name']}`", c["kind"], _width(c, a), _arrow(c["params"], a["params"]),
                     f"{human(c['flops'])} → {human(a['flops'])}"])
    rows.append(["**total**", "", "", f"**{_arrow(first.params, kept.params)}**",
                 f"**{human(first.flops)} → {human(kept.flops)}**"])
    lines += ["## Layers, start → kept model", "", *_md_table(rows, right=(2, 3, 4)), ""]
    head = ["round", *(f"`{n}`" for n in record.layers), "params", "FLOPs", record.metric,
            "verdict", "epochs", "time"]
    rows = [head]
    for r in record.rounds:
        widths = [f"{r.widths.get(n)}" + (f" (-{r.deleted[n]})" if r.deleted.get(n) else "")
                  for n in record.layers]
        verdict = "start" if r.round == 0 else "accepted" if r.accepted else "rejected"
        if r.round == record.best:
            verdict += ", **kept**"
        rows.append([str(r.round), *widths, f"{r.params:,}", human(r.flops),
                     f"{r.score:.4f}", verdict, str(r.epochs), f"{r.seconds:.1f} s"])
    numbers = [i for i, h in enumerate(head) if h != "verdict"]
    lines += ["## Rounds", "", *_md_table(rows, right=numbers), ""]
    if any(r.apoz_mean for r in record.rounds):
        rows = [["round", *(f"`{n}`" for n in record.layers)]]
        rows += [[str(r.round), *(f"{r.apoz_mean[n]:.3f}" if n in r.apoz_mean else ""
                                  for n in record.layers)] for r in record.rounds]
        lines += ["Mean APoZ of each trimmed layer of each round's model:", "",
                  *_md_table(rows, right=tuple(range(1, len(record.layers) + 1))), ""]
    if record.pictures:
        lines += ["## Pictures", ""]
        for picture in record.pictures.values():
            lines += [f"![{picture['caption']}]({picture['file']})", "",
                      f"*{picture['caption']}*", ""]
    lines += ["## Settings", ""]
    lines += [f"- {key}: `{value}`" for key, value in record.data.items()]
    lines += [f"- {key}: `{value}`" for key, value in record.settings.items()]
    return "\n".join(lines) + "\n"
