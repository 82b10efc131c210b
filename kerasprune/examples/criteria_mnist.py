"""Importance criteria compared: the VGG-style CNN on MNIST pruned to 50%, 30% and 15% of its
FLOPs by each criterion, with the same fine-tuning budget for all.

Run ``python -m kerasprune.examples.criteria_mnist`` (``--help`` for the options). It trains
the VGG-style CNN of :mod:`kerasprune.examples.vgg_mnist` once on real MNIST (50 000 train /
10 000 validation / 10 000 test images), then for every FLOP target and every criterion
prunes that same trained model in one shot with :func:`kerasprune.prune` (global ranking,
the output layer protected), fine-tunes it for ``--ft-epochs`` epochs (SGD with momentum, a
fresh optimizer, the learning rate decayed along a cosine from ``--ft-lr`` to a tenth of it),
and measures test accuracy right after the cut and after the fine-tuning. The data-driven
criteria (``apoz``, ``activation``, ``taylor``) measure their statistics on the first
``--stats-samples`` validation images. ``random`` runs with ``--random-seeds`` seeds and is
reported as their mean and range.

Every run starts from the same random state (``--seed``), so the fine-tuning of every
criterion sees the same batches; on TensorFlow, op determinism is on. It prints one line per
run, a Markdown table (the one in the README), and which criteria beat random and by how
much; it saves a plot of test accuracy against FLOPs (``--plot``) and every number as JSON
(``--json``).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from kerasprune.examples import _common
from kerasprune.examples.vgg_mnist import build_vgg

CRITERIA = ("random", "l1", "l2", "bn_scale", "apoz", "activation", "taylor")
DATA_CRITERIA = ("apoz", "activation", "taylor")
TARGETS = (0.5, 0.3, 0.15)
TINY = {"epochs": 1, "ft_epochs": 1, "limit": 1000, "eval_limit": 500, "targets": [0.5],
        "random_seeds": 1, "stats_samples": 200}
"""``--tiny``: a smoke run for CI (seconds, meaningless accuracy)."""


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m kerasprune.examples.criteria_mnist",
        description="Importance criteria compared on the VGG-style CNN and real MNIST.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--epochs", type=int, default=3, help="epochs to train the model")
    p.add_argument("--lr", type=float, default=0.01,
                   help="learning rate of the training (SGD, momentum 0.9); the last quarter "
                        "of the epochs runs at a tenth of it")
    p.add_argument("--ft-epochs", type=int, default=1,
                   help="fine-tuning epochs after each pruning (the same for every criterion)")
    p.add_argument("--ft-lr", type=float, default=0.01,
                   help="peak learning rate of the fine-tuning (cosine decay to a tenth)")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--targets", type=float, nargs="+", default=list(TARGETS),
                   help="FLOPs to keep, as fractions of the original")
    p.add_argument("--criteria", nargs="+", default=list(CRITERIA), choices=CRITERIA)
    p.add_argument("--random-seeds", type=int, default=3,
                   help="seeds of the random criterion (reported as mean and range)")
    p.add_argument("--stats-samples", type=int, default=2000,
                   help="validation images the data-driven criteria measure on")
    p.add_argument("--round-to", type=int, default=1, help="round_to for prune")
    p.add_argument("--scope", choices=("global", "uniform"), default="global")
    p.add_argument("--limit", type=int, default=None, help="use only the first N train images")
    p.add_argument("--eval-limit", type=int, default=None,
                   help="use only the first N validation and test images")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--plot", default="criteria_mnist.png",
                   help="where to save the plot ('' for none)")
    p.add_argument("--json", default="", help="where to save every number as JSON")
    p.add_argument("--cache-dir", default=None, help="MNIST cache directory")
    p.add_argument("--tiny", action="store_true", help=f"a smoke test for CI: {TINY}")
    p.add_argument("--verbose", type=int, default=1, choices=(0, 1, 2))
    return p


def _parse(argv: Sequence[str] | None) -> argparse.Namespace:
    argv = sys.argv[1:] if argv is None else list(argv)
    p = parser()
    args = p.parse_args(argv)
    given = {a.split("=", 1)[0] for a in argv if a.startswith("--")}
    explicit = {a.dest for a in p._actions if set(a.option_strings) & given}
    if args.tiny:
        for key, value in TINY.items():
            if key not in explicit:
                setattr(args, key, value)
    return args


def _seed(seed: int) -> None:
    """The same random state for every run (weights, shuffling, dropout)."""
    import keras

    keras.utils.set_random_seed(seed)


def _deterministic() -> None:
    import keras

    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        tf.config.experimental.enable_op_determinism()


def _accuracy(model: Any, split: _common.Split) -> float:
    return float(model.evaluate(*split, batch_size=256, verbose=0,
                                return_dict=True)["accuracy"])


def _run(args: argparse.Namespace, base: Any, train: _common.Split, test: _common.Split,
         stats_data: _common.Split, target: float, criterion: str, seed: int
         ) -> dict[str, Any]:
    """Prune ``base`` to ``target`` of its FLOPs by ``criterion``, fine-tune, evaluate."""
    import keras

    import kerasprune

    steps = max(1, args.ft_epochs * -(-len(train[0]) // args.batch_size))
    schedule = keras.optimizers.schedules.CosineDecay(args.ft_lr, steps, alpha=0.1)
    _seed(args.seed)
    start = time.monotonic()
    # val_data is the test set: prune only reports on it (after the cut and after the
    # fine-tuning); nothing is chosen by it.
    result = kerasprune.prune(
        base, flops=target, criterion=criterion, seed=seed,
        data=stats_data if criterion in DATA_CRITERIA else None, train_data=train,
        epochs=args.ft_epochs, learning_rate=schedule, val_data=test, round_to=args.round_to,
        scope=args.scope, batch_size=args.batch_size, verbose=0)
    step = result.steps[0]
    return {"target": target, "criterion": criterion, "seed": seed,
            "flops": result.flops[1], "params": result.params[1],
            "flops_kept": result.flops[1] / result.flops[0],
            "widths": {c.name: c.width for c in result.costs_after if c.width is not None},
            "accuracy_pruned": step.metrics_pruned["accuracy"],
            "accuracy": step.metrics["accuracy"], "seconds": time.monotonic() - start}


def _summary(runs: Sequence[dict[str, Any]], criteria: Sequence[str],
             targets: Sequence[float]) -> dict[tuple[str, float], dict[str, float]]:
    """Per criterion and target: mean, min and max of both accuracies and FLOPs kept."""
    out: dict[tuple[str, float], dict[str, float]] = {}
    for c in criteria:
        for t in targets:
            rows = [r for r in runs if r["criterion"] == c and r["target"] == t]
            if not rows:
                continue
            entry: dict[str, float] = {"n": len(rows)}
            for key in ("accuracy", "accuracy_pruned", "flops_kept"):
                values = [float(r[key]) for r in rows]
                entry[key] = float(np.mean(values))
                entry[f"{key}_min"], entry[f"{key}_max"] = min(values), max(values)
            out[(c, t)] = entry
    return out


def _cell(e: dict[str, float], key: str) -> str:
    text = f"{100 * e[key]:.2f}"
    if e["n"] > 1:
        text += f" ({100 * e[key + '_min']:.2f}-{100 * e[key + '_max']:.2f})"
    return text


def markdown(summary: dict[tuple[str, float], dict[str, float]], criteria: Sequence[str],
             targets: Sequence[float]) -> str:
    """The README's table: test accuracy after fine-tuning, and right after the cut."""
    head = ["criterion", *(f"{t:.0%} FLOPs: fine-tuned" for t in targets),
            *(f"{t:.0%}: after the cut" for t in targets)]
    lines = ["| " + " | ".join(head) + " |", "| --- |" + " ---: |" * (len(head) - 1)]
    for c in criteria:
        cells = [c]
        for key in ("accuracy", "accuracy_pruned"):
            cells += [_cell(summary[(c, t)], key) if (c, t) in summary else "" for t in targets]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def against_random(summary: dict[tuple[str, float], dict[str, float]],
                   criteria: Sequence[str], targets: Sequence[float]) -> list[str]:
    """For each criterion and target: its accuracy minus random's mean, in points, and
    whether it lies above random's whole range."""
    lines = []
    for c in criteria:
        if c == "random":
            continue
        parts = []
        for t in targets:
            if (c, t) not in summary or ("random", t) not in summary:
                continue
            r, e = summary[("random", t)], summary[(c, t)]
            for key, label in (("accuracy", "fine-tuned"), ("accuracy_pruned", "cut")):
                diff = 100 * (e[key] - r[key])
                above = e[key] > r[f"{key}_max"]
                parts.append(f"{t:.0%} {label} {diff:+.2f}{' *' if above else ''}")
        lines.append(f"{c}: " + ", ".join(parts))
    return lines


def plot(summary: dict[tuple[str, float], dict[str, float]], criteria: Sequence[str],
         targets: Sequence[float], base: float, path: str) -> None:
    """Test accuracy against FLOPs kept, after the cut and after fine-tuning."""
    from kerasprune.adapters.keras.sensitivity import new_figure

    fig = new_figure("the plot", size=(11.0, 4.5))
    panels = fig.subplots(1, 2)
    markers = "osD^v<>p"
    for ax, key, title in zip(panels, ("accuracy_pruned", "accuracy"),
                              ("right after the cut (no fine-tuning)",
                               "after the same fine-tuning"), strict=True):
        for i, c in enumerate(criteria):
            found = [(summary[(c, t)]) for t in targets if (c, t) in summary]
            if not found:
                continue
            x = [100 * e["flops_kept"] for e in found]
            y = [100 * e[key] for e in found]
            lo = [100 * (e[key] - e[f"{key}_min"]) for e in found]
            hi = [100 * (e[f"{key}_max"] - e[key]) for e in found]
            style = {"linestyle": "--", "color": "black"} if c == "random" else {}
            ax.errorbar(x, y, yerr=[lo, hi] if c == "random" else None,
                        marker=markers[i % len(markers)], capsize=3, label=c, **style)
        ax.axhline(100 * base, color="grey", linewidth=1, linestyle=":",
                   label="trained model")
        ax.set_xlabel("FLOPs kept (% of the trained model's)")
        ax.set_ylabel("test accuracy (%)")
        ax.set_title(title)
        ax.grid(True, alpha=0.3)
        ax.invert_xaxis()
    panels[0].legend(fontsize="small")
    fig.suptitle("VGG-style CNN on MNIST, pruned in one shot by each criterion")
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)


def main(argv: Sequence[str] | None = None, *,
         data: _common.Splits | None = None) -> dict[str, Any]:
    """Run the comparison.

    Parameters
    ----------
    argv
        Command-line arguments (``None``: ``sys.argv[1:]``); ``--help`` lists them.
    data
        ``((x_train, y_train), (x_val, y_val), (x_test, y_test))`` to use instead of MNIST.

    Returns
    -------
    dict
        ``runs`` (one dict per pruning run), ``summary`` (per criterion and target),
        ``base_test`` (the trained model's test accuracy), ``table`` (Markdown),
        ``against_random`` (lines), ``seconds`` (train, runs, wall).
    """
    args = _parse(argv)
    wall = time.monotonic()
    import keras

    _deterministic()
    _seed(args.seed)
    train, val, test = _common.load(args, data)
    print(f"data: {len(train[0])} train, {len(val[0])} val, {len(test[0])} test images; "
          f"backend {keras.backend.backend()}", flush=True)
    t = time.monotonic()
    base = _common.train_model(args, lambda _: build_vgg(), train)
    train_seconds = time.monotonic() - t
    base_test = _accuracy(base, test)
    print(f"trained {args.epochs} epochs in {train_seconds:.0f}s: test accuracy "
          f"{100 * base_test:.2f}%", flush=True)
    n = args.stats_samples
    stats_data = (val[0][:n], val[1][:n])
    runs = []
    t = time.monotonic()
    for target in args.targets:
        for criterion in args.criteria:
            seeds = range(args.random_seeds) if criterion == "random" else [args.seed]
            for seed in seeds:
                run = _run(args, base, train, test, stats_data, target, criterion, seed)
                runs.append(run)
                if args.verbose:
                    print(f"{target:.0%} FLOPs, {criterion}"
                          + (f" (seed {seed})" if criterion == "random" else "")
                          + f": kept {100 * run['flops_kept']:.1f}% of FLOPs, test accuracy "
                          f"{100 * run['accuracy_pruned']:.2f}% after the cut, "
                          f"{100 * run['accuracy']:.2f}% fine-tuned ({run['seconds']:.0f}s)",
                          flush=True)
    runs_seconds = time.monotonic() - t
    summary = _summary(runs, args.criteria, args.targets)
    table = markdown(summary, args.criteria, args.targets)
    versus = against_random(summary, args.criteria, args.targets)
    if args.plot:
        plot(summary, args.criteria, args.targets, base_test, args.plot)
    seconds = {"train": train_seconds, "runs": runs_seconds, "wall": time.monotonic() - wall}
    print(f"\ntrained model: test accuracy {100 * base_test:.2f}%\n\n{table}\n")
    print("against random (test accuracy points vs random's mean; * above its whole range):")
    print("\n".join(versus))
    print(f"\ntime: train {seconds['train']:.0f}s, pruning and fine-tuning "
          f"{seconds['runs']:.0f}s, wall {seconds['wall']:.0f}s"
          + (f"; plot saved to {args.plot}" if args.plot else ""), flush=True)
    out = {"runs": runs, "summary": {f"{c}@{t}": v for (c, t), v in summary.items()},
           "base_test": base_test, "table": table, "against_random": versus,
           "seconds": seconds, "settings": {k: v for k, v in vars(args).items()
                                            if not isinstance(v, float) or math.isfinite(v)}}
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1, default=str))
    return out


if __name__ == "__main__":
    main()
