"""Pruning a small transformer (KerasHub blocks) on MNIST: heads and feed-forward units.

Run ``python -m kerasprune.examples.transformer_mnist`` (``--help`` for the options). Each
MNIST image is a sequence of its 28 rows of 28 pixels (a ViT whose patches are rows): a
``Dense`` embeds each row, KerasHub's ``PositionEmbedding`` adds positions, two KerasHub
``TransformerEncoder`` blocks (pre-norm) follow, then an average over the rows and a
``Dense`` classifier. Weights are random at the start and the model is trained here (nothing
is downloaded but MNIST, from :func:`kerasprune.load_mnist`).

It trains the model, prunes it with :func:`kerasprune.prune` to a share of its FLOPs
(``--flops``, by the Taylor criterion measured on validation images; the deletions reach
inside the blocks through their :class:`~kerasprune.core.rules.Composite` rules: attention
heads, each scored as one group, and feed-forward units), fine-tunes it, and prints
accuracy, parameters, FLOPs and the measured speed-up (:func:`kerasprune.speedup`) before and
after; then saves the pruned model as ``.keras`` and checks that it reloads with the same
predictions (a block that lost heads is KerasHub's class's subclass from
:mod:`kerasprune.adapters.keras.blocks`, registered when that module is imported).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

QUICK = {"epochs": 1, "ft_epochs": 1, "limit": 2000, "eval_limit": 500, "repeats": 3}
"""``--quick``: a smoke run (seconds; the accuracy means little)."""


def build_transformer(width: int = 64, heads: int = 4, intermediate: int = 128,
                      blocks: int = 2) -> Any:
    """The row-sequence transformer for 28x28 images.

    Returns
    -------
    keras.Model
        Functional, named ``row_transformer``: ``embed`` (Dense), ``positions``
        (KerasHub ``PositionEmbedding``), ``encoder0``... (KerasHub ``TransformerEncoder``,
        ``normalize_first=True``), ``pool``, ``classifier`` (10 logits).
    """
    import keras
    import keras_hub

    x = keras.Input((28, 28), name="rows")
    h = keras.layers.Dense(width, name="embed")(x)
    h = keras.layers.Add(name="add_positions")(
        [h, keras_hub.layers.PositionEmbedding(28, name="positions")(h)])
    for i in range(blocks):
        h = keras_hub.layers.TransformerEncoder(intermediate, heads, normalize_first=True,
                                                activation="gelu", name=f"encoder{i}")(h)
    h = keras.layers.LayerNormalization(name="final_norm")(h)
    y = keras.layers.Dense(10, name="classifier")(keras.layers.GlobalAveragePooling1D(
        name="pool")(h))
    return keras.Model(x, y, name="row_transformer")


def _compile(model: Any, lr: float) -> None:
    import keras

    model.compile(optimizer=keras.optimizers.AdamW(lr, weight_decay=1e-4),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  metrics=["accuracy"])


def _accuracy(model: Any, x: npt.NDArray[Any], y: npt.NDArray[Any]) -> float:
    return float(model.evaluate(x, y, batch_size=256, verbose=0,
                                return_dict=True)["accuracy"])


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m kerasprune.examples.transformer_mnist",
                                description="Prune a small KerasHub transformer on MNIST.",
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--epochs", type=int, default=4, help="training epochs before pruning")
    p.add_argument("--ft-epochs", type=int, default=1, help="fine-tuning epochs after")
    p.add_argument("--lr", type=float, default=1e-3, help="AdamW learning rate")
    p.add_argument("--flops", type=float, default=0.5, help="share of the FLOPs to keep")
    p.add_argument("--criterion", default="taylor",
                   help="importance criterion: taylor, l1, l2, activation, random")
    p.add_argument("--width", type=int, default=64)
    p.add_argument("--heads", type=int, default=4)
    p.add_argument("--intermediate", type=int, default=128)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--limit", type=int, default=None, help="first N training images only")
    p.add_argument("--eval-limit", type=int, default=None,
                   help="first N validation and test images only")
    p.add_argument("--speed", action=argparse.BooleanOptionalAction, default=True,
                   help="measure the speed-up (kerasprune.speedup, compiled runner)")
    p.add_argument("--repeats", type=int, default=10, help="timed blocks per measurement")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--save", default="transformer_mnist_pruned.keras",
                   help="where to save the pruned model ('' for a temporary file)")
    p.add_argument("--cache-dir", default=None, help="MNIST cache directory")
    p.add_argument("--quick", action="store_true", help=f"a smoke run: {QUICK}")
    return p


def main(argv: Sequence[str] | None = None, *,
         data: Any = None) -> dict[str, Any]:
    """Train, prune and report the row transformer on MNIST.

    Parameters
    ----------
    argv
        Command-line arguments (``None``: ``sys.argv[1:]``).
    data
        ``((x_train, y_train), (x_val, y_val), (x_test, y_test))`` to use instead of MNIST,
        ``x`` of shape ``(N, 28, 28)`` in ``[0, 1]``.

    Returns
    -------
    dict
        ``result`` (the :class:`kerasprune.PruneResult`), ``test_before``, ``test_after``,
        ``params``, ``flops`` (before, after), ``speedup`` (the report or ``None``),
        ``heads`` and ``intermediate`` (per block, after), ``path``, ``reload_max_abs_diff``.
    """
    import keras

    import kerasprune

    p = _parser()
    args_list = sys.argv[1:] if argv is None else list(argv)
    args = p.parse_args(args_list)
    given = {a.split("=", 1)[0] for a in args_list if a.startswith("--")}
    if args.quick:
        for key, value in QUICK.items():
            if f"--{key.replace('_', '-')}" not in given:
                setattr(args, key, value)
    keras.utils.set_random_seed(args.seed)
    if data is None:
        from kerasprune.datasets import load_mnist

        data = load_mnist(args.cache_dir)
    (xt, yt), (xv, yv), (xs, ys) = (
        (np.asarray(x, np.float32).reshape(-1, 28, 28)[:k], np.asarray(y, np.int64)[:k])
        for (x, y), k in zip(data, (args.limit, args.eval_limit, args.eval_limit),
                             strict=True))
    print(f"data: {len(xt)} train, {len(xv)} val, {len(xs)} test images as 28 rows of 28 "
          f"pixels; backend {keras.backend.backend()}", flush=True)

    model = build_transformer(args.width, args.heads, args.intermediate)
    _compile(model, args.lr)
    t = time.monotonic()
    model.fit(xt, yt, batch_size=args.batch_size, epochs=args.epochs, verbose=2)
    train_seconds = time.monotonic() - t
    test_before = _accuracy(model, xs, ys)
    print(f"trained {args.epochs} epochs in {train_seconds:.0f}s: test accuracy "
          f"{100 * test_before:.2f}%", flush=True)

    result = kerasprune.prune(model, flops=args.flops, criterion=args.criterion,
                              data=(xv, yv), train_data=(xt, yt), epochs=args.ft_epochs,
                              val_data=(xv, yv), batch_size=args.batch_size, verbose=1)
    assert isinstance(result, kerasprune.PruneResult)
    pruned = result.model
    test_after = _accuracy(pruned, xs, ys)
    import keras_hub

    blocks = [layer for layer in pruned.layers
              if isinstance(layer, keras_hub.layers.TransformerEncoder)]
    out: dict[str, Any] = {
        "result": result, "test_before": test_before, "test_after": test_after,
        "params": result.params, "flops": result.flops, "speedup": None,
        "heads": [b.num_heads for b in blocks],
        "intermediate": [b.intermediate_dim for b in blocks]}
    print()
    print(result.table())
    print(f"\ntest accuracy {100 * test_before:.2f}% -> {100 * test_after:.2f}%; heads per "
          f"block {args.heads} -> {out['heads']}; feed-forward units per block "
          f"{args.intermediate} -> {out['intermediate']}")
    if args.speed:
        report = kerasprune.speedup(model, pruned, xs[:32], runners=("compiled",),
                                    batch_sizes=(1, 32), repeats=args.repeats, tflite=False)
        out["speedup"] = report
        print(f"\n{report.table()}")
    path = args.save or os.path.join(tempfile.mkdtemp(prefix="kerasprune-"), "pruned.keras")
    pruned.save(path)
    loaded = keras.saving.load_model(path)
    sample = xs[:64]
    diff = float(np.max(np.abs(keras.ops.convert_to_numpy(loaded(sample))
                               - keras.ops.convert_to_numpy(pruned(sample)))))
    out.update(path=path, reload_max_abs_diff=diff)
    print(f"saved {path}; reloaded: max abs diff of predictions {diff:.1e}", flush=True)
    return out


if __name__ == "__main__":
    main()
