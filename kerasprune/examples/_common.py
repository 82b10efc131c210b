"""What the MNIST examples share: options, data, training, trimming and the report."""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

Split = tuple[npt.NDArray[np.float32], npt.NDArray[np.int64]]
Splits = tuple[Split, Split, Split]
"""``((x_train, y_train), (x_val, y_val), (x_test, y_test))``, as :func:`load_mnist` gives."""


@dataclass(frozen=True)
class Defaults:
    """An example's default settings (what ``--help`` shows)."""

    name: str
    epochs: int
    rounds: int
    ft_epochs: int
    lr: float
    ft_lr: float
    batch_size: int
    k: float
    tolerance: float
    layers: tuple[str, ...] | None
    recover_epochs: int = 0
    limit: int | None = None


TINY = {"epochs": 1, "rounds": 1, "ft_epochs": 1, "recover_epochs": 0, "limit": 1000,
        "eval_limit": 500}
"""``--tiny``: a smoke run for CI (seconds, meaningless accuracy)."""
QUICK = {"epochs": 2, "rounds": 2, "ft_epochs": 1, "limit": 10_000, "eval_limit": None}
"""``--quick``: a short demonstration (a minute or two on a laptop)."""


def parser(description: str, defaults: Defaults) -> argparse.ArgumentParser:
    """The command-line options every example takes."""
    d = defaults
    p = argparse.ArgumentParser(prog=f"python -m kerasprune.examples.{d.name}",
                                description=description,
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--epochs", type=int, default=d.epochs,
                   help="epochs to train the model before trimming")
    p.add_argument("--rounds", type=int, default=d.rounds,
                   help="at most this many trimming rounds")
    p.add_argument("--ft-epochs", type=int, default=d.ft_epochs,
                   help="fine-tuning epochs per trimming round")
    p.add_argument("--recover-epochs", type=int, default=d.recover_epochs,
                   help="extra fine-tuning epochs (one at a time) for a round whose validation "
                        "accuracy fell below the tolerance, before giving up")
    p.add_argument("--lr", type=float, default=d.lr,
                   help="learning rate of the initial training (SGD, momentum 0.9); the last "
                        "quarter of the epochs runs at a tenth of it")
    p.add_argument("--ft-lr", type=float, default=d.ft_lr,
                   help="learning rate of the fine-tuning after each round (with "
                        "--ft-schedule cosine, its peak)")
    p.add_argument("--ft-schedule", choices=("cosine", "constant"), default="cosine",
                   help="cosine: each round's fine-tuning decays the learning rate from "
                        "--ft-lr to a tenth of it along a cosine (a warm restart per round)")
    p.add_argument("--batch-size", type=int, default=d.batch_size)
    p.add_argument("--k", type=float, default=d.k,
                   help="delete neurons whose APoZ is above their layer's mean + k std")
    p.add_argument("--tolerance", type=float, default=d.tolerance,
                   help="accepted drop of validation accuracy (0.001 = 0.1 points)")
    p.add_argument("--layers", nargs="+", default=list(d.layers) if d.layers else ["all"],
                   help="layers to trim; 'all': every layer with neurons but the output")
    p.add_argument("--limit", type=int, default=d.limit,
                   help="use only the first N training images")
    p.add_argument("--eval-limit", type=int, default=None,
                   help="use only the first N validation and test images")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--save", default=f"{d.name}_trimmed.keras",
                   help="where to save the trimmed model ('' for a temporary file)")
    p.add_argument("--cache-dir", default=None, help="MNIST cache directory")
    p.add_argument("--checkpoint-dir", default=None,
                   help="keep the run in this directory: the trained model (base.keras) and "
                        "every trimming round (trim/); run the same command again to resume "
                        "after an interrupt or a crash")
    p.add_argument("--control", action="store_true",
                   help="also fine-tune the untrimmed model exactly as the kept rounds "
                        "fine-tuned the trimmed one, to separate trimming from extra training")
    p.add_argument("--quick", action="store_true",
                   help=f"a short demonstration: {QUICK}")
    p.add_argument("--tiny", action="store_true", help=f"a smoke test for CI: {TINY}")
    p.add_argument("--verbose", type=int, default=1, choices=(0, 1, 2))
    return p


def parse(p: argparse.ArgumentParser, argv: Sequence[str] | None) -> argparse.Namespace:
    """Parse ``argv``; ``--tiny``/``--quick`` change the options not given explicitly.

    ``args.explicit`` is the set of options given on the command line (as ``dest`` names).
    """
    argv = sys.argv[1:] if argv is None else list(argv)
    args = p.parse_args(argv)
    flags = {a.split("=", 1)[0] for a in argv if a.startswith("--")}
    args.explicit = {a.dest for a in p._actions if set(a.option_strings) & flags}
    preset = TINY if args.tiny else QUICK if args.quick else {}
    for key, value in preset.items():
        if key not in args.explicit:
            setattr(args, key, value)
    if args.layers == ["all"]:
        args.layers = None
    return args


def load(args: argparse.Namespace, data: Splits | None) -> Splits:
    """MNIST (or ``data``), with a channel axis and cut to ``--limit``/``--eval-limit``."""
    if data is None:
        from kerasprune.datasets import load_mnist

        data = load_mnist(args.cache_dir)
    (xt, yt), (xv, yv), (xs, ys) = data
    n, m = args.limit, args.eval_limit

    def cut(x: npt.NDArray[Any], y: npt.NDArray[Any], k: int | None) -> Split:
        x = np.asarray(x, dtype=np.float32)[:k]
        return (x[..., None] if x.ndim == 3 else x), np.asarray(y, dtype=np.int64)[:k]

    return cut(xt, yt, n), cut(xv, yv, m), cut(xs, ys, m)


def compile_model(model: Any, lr: Any) -> None:
    """SGD with momentum 0.9 and weight decay 5e-4, as Caffe's LeNet solver; logits loss.

    ``lr`` is a number or a ``keras.optimizers.schedules.LearningRateSchedule``.
    """
    import keras

    model.compile(
        optimizer=keras.optimizers.SGD(learning_rate=lr, momentum=0.9, weight_decay=5e-4),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"])


def _accuracy(model: Any, split: Split, batch_size: int) -> float:
    return float(model.evaluate(*split, batch_size=batch_size, verbose=0,
                                return_dict=True)["accuracy"])


def _pct(value: float) -> str:
    return f"{100 * value:.2f}%"


def run(args: argparse.Namespace, build: Callable[[argparse.Namespace], Any],
        data: Splits | None) -> dict[str, Any]:
    """Train the model ``build`` makes, trim it, report, save and reload it."""
    import keras

    import kerasprune
    from kerasprune.adapters.keras import checkpoint
    from kerasprune.core import cost

    wall = time.monotonic()
    keras.utils.set_random_seed(args.seed)
    train, val, test = load(args, data)
    print(f"data: {len(train[0])} train, {len(val[0])} val, {len(test[0])} test images; "
          f"backend {keras.backend.backend()}", flush=True)

    base = None if args.checkpoint_dir is None else Path(args.checkpoint_dir) / "base.keras"
    t = time.monotonic()
    if base is not None and base.exists():
        model = keras.saving.load_model(base)
        train_seconds = 0.0
        how = f"loaded the trained model from {base}"
    else:
        model = train_model(args, build, train)
        train_seconds = time.monotonic() - t
        how = f"trained {args.epochs} epochs in {train_seconds:.0f}s"
        if base is not None:  # trim on the saved model, as a resumed run will
            base.parent.mkdir(parents=True, exist_ok=True)
            checkpoint.save_atomically(model, base)
            model = keras.saving.load_model(base)
    test_before = _accuracy(model, test, 256)
    print(f"{how}: test accuracy {_pct(test_before)}", flush=True)

    steps = max(1, args.ft_epochs * -(-len(train[0]) // args.batch_size))
    ft_lr = (keras.optimizers.schedules.CosineDecay(args.ft_lr, steps, alpha=0.1)
             if args.ft_schedule == "cosine" else args.ft_lr)
    t = time.monotonic()
    result = kerasprune.trim(model, train, val, args.layers, k=args.k,
                             epochs=args.ft_epochs, recover_epochs=args.recover_epochs,
                             max_rounds=args.rounds,
                             tolerance=args.tolerance, batch_size=args.batch_size,
                             learning_rate=ft_lr, verbose=args.verbose,
                             checkpoint_dir=None if base is None else base.parent / "trim")
    trim_seconds = time.monotonic() - t
    trimmed = result.model
    test_after = _accuracy(trimmed, test, 256)
    extra = {"val accuracy": (_pct(result.before.accuracy), _pct(result.after.accuracy)),
             "test accuracy": (_pct(test_before), _pct(test_after))}
    out: dict[str, Any] = {"result": result, "test_before": test_before,
                           "test_after": test_after, "train_seconds": train_seconds,
                           "trim_seconds": trim_seconds}

    if args.control:
        # The same fine-tuning as the returned model got, round by round, without trimming.
        control = keras.models.clone_model(model)
        control.set_weights(model.get_weights())
        for r in result.history[1:result.best + 1]:
            compile_model(control, ft_lr)
            control.fit(*train, batch_size=args.batch_size, epochs=r.epochs, verbose=0)
        out["test_control"] = _accuracy(control, test, 256)
        extra["test acc., untrimmed + same fine-tuning"] = (
            _pct(test_before), _pct(out["test_control"]))

    path, reload_diff = _save_and_reload(trimmed, args.save, test[0][:1000])
    out.update(path=path, reload_max_abs_diff=reload_diff)
    out["wall_seconds"] = time.monotonic() - wall

    print()
    print(cost.compare(result.before.costs, result.after.costs, extra))
    print(f"\nrounds ({result.stopped}; kept round {result.best}):\n{result.rounds()}")
    print(f"\ntrimmed layers: {', '.join(result.layers)}")
    print(f"time: train {train_seconds:.0f}s, trim {trim_seconds:.0f}s, wall "
          f"{out['wall_seconds']:.0f}s")
    print(f"saved {path}; reloaded: identical predictions (max abs diff {reload_diff:.1e})",
          flush=True)
    return out


def train_model(args: argparse.Namespace, build: Callable[[argparse.Namespace], Any],
                train: Split) -> Any:
    """Build and train the model (SGD with momentum; the last quarter at a tenth the rate)."""
    import keras

    model = build(args)
    compile_model(model, args.lr)
    decay_at = max(1, round(0.75 * args.epochs))
    schedule = keras.callbacks.LearningRateScheduler(
        lambda epoch: args.lr if epoch < decay_at else args.lr / 10)
    model.fit(*train, batch_size=args.batch_size, epochs=args.epochs, shuffle=True,
              verbose=2 if args.verbose else 0, callbacks=[schedule])
    return model


def _save_and_reload(model: Any, path: str, x: npt.NDArray[np.float32]) -> tuple[str, float]:
    """Save as ``.keras``, load it back, check it predicts the same; the path and max diff."""
    import keras

    if not path:
        path = os.path.join(tempfile.mkdtemp(prefix="kerasprune-"), "trimmed.keras")
    model.save(path)
    loaded = keras.saving.load_model(path)
    expected, got = _outputs(model, x), _outputs(loaded, x)
    diff = float(np.max(np.abs(expected - got))) if x.size else 0.0
    if not diff <= 1e-6:
        raise AssertionError(f"the reloaded model predicts differently (max diff {diff})")
    return path, diff


def _outputs(model: Any, x: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
    """The model's outputs, by direct calls (``predict`` would compile a function first)."""
    import keras

    parts = [keras.ops.convert_to_numpy(model(x[i:i + 250], training=False))
             for i in range(0, len(x), 250)]
    return np.concatenate(parts) if parts else np.zeros((0,), np.float32)
