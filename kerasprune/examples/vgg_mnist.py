"""Network Trimming of a small VGG-style CNN with batch norm on MNIST.

Run ``python -m kerasprune.examples.vgg_mnist`` (``--help`` for the options). Two blocks of
``Conv2D 3x3 -> BatchNormalization -> ReLU`` twice and a 2x2 max-pool, then
``Dense -> BatchNormalization -> ReLU -> Dropout -> Dense(10)``. The convolutions have no
activation of their own: their APoZ is counted after the ReLU their channels reach through
the batch norm, and deleting a filter also deletes its batch-norm channel and the next
layer's matching weights. Everything else is as in :mod:`kerasprune.examples.lenet_mnist`.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from typing import Any

from kerasprune.examples import _common

DEFAULTS = _common.Defaults(
    name="vgg_mnist", epochs=3, rounds=3, ft_epochs=1, lr=0.01, ft_lr=0.01, batch_size=64,
    k=1.0, tolerance=0.001, layers=None, limit=None)


def build_vgg(widths: Sequence[int] = (16, 32), dense: int = 128) -> Any:
    """A VGG-style CNN for 28x28x1 images.

    Parameters
    ----------
    widths
        Filters of each block's two convolutions (``block{i}_conv{1,2}``).
    dense
        Units of the hidden dense layer ``fc``.

    Returns
    -------
    keras.Sequential
        Named ``vgg``; the output ``logits`` is 10 logits.
    """
    import keras

    layers: list[Any] = [keras.Input((28, 28, 1))]
    for b, filters in enumerate(widths, 1):
        for c in (1, 2):
            layers += [
                keras.layers.Conv2D(filters, 3, padding="same", use_bias=False,
                                    name=f"block{b}_conv{c}"),
                keras.layers.BatchNormalization(name=f"block{b}_bn{c}"),
                keras.layers.ReLU(name=f"block{b}_relu{c}"),
            ]
        layers.append(keras.layers.MaxPooling2D(2, name=f"block{b}_pool"))
    layers += [
        keras.layers.Flatten(name="flatten"),
        keras.layers.Dense(dense, use_bias=False, name="fc"),
        keras.layers.BatchNormalization(name="fc_bn"),
        keras.layers.ReLU(name="fc_relu"),
        keras.layers.Dropout(0.3, name="dropout"),
        keras.layers.Dense(10, name="logits"),
    ]
    return keras.Sequential(layers, name="vgg")


def _build(args: argparse.Namespace) -> Any:
    return build_vgg(tuple(args.widths), args.dense)


def main(argv: Sequence[str] | None = None, *,
         data: _common.Splits | None = None) -> dict[str, Any]:
    """Train, trim and report the VGG-style CNN on MNIST.

    Parameters
    ----------
    argv
        Command-line arguments (``None``: ``sys.argv[1:]``); ``--help`` lists them.
    data
        ``((x_train, y_train), (x_val, y_val), (x_test, y_test))`` to use instead of MNIST,
        with ``x`` of shape ``(N, 28, 28)`` or ``(N, 28, 28, 1)`` in ``[0, 1]``.

    Returns
    -------
    dict
        As :func:`kerasprune.examples.lenet_mnist.main`.
    """
    p = _common.parser("Network Trimming of a small VGG-style CNN on MNIST.", DEFAULTS)
    p.add_argument("--widths", type=int, nargs=2, default=[16, 32],
                   help="filters of the two blocks' convolutions")
    p.add_argument("--dense", type=int, default=128, help="units of the hidden dense layer")
    return _common.run(_common.parse(p, argv), _build, data)


if __name__ == "__main__":
    main()
