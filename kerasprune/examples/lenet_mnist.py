"""Network Trimming of LeNet on MNIST (Hu et al. 2016, arXiv:1607.03250).

Run ``python -m kerasprune.examples.lenet_mnist`` (``--help`` for the options). It trains
Caffe's LeNet on real MNIST (50 000 train / 10 000 validation / 10 000 test images, from
:func:`kerasprune.load_mnist`), trims it with :func:`kerasprune.trim` (APoZ measured on the
validation images, neurons above their layer's mean + 1 std deleted, the network fine-tuned,
repeated while validation accuracy holds), then prints a before/after table of widths,
params, FLOPs and validation and test accuracy, and saves the trimmed model as ``.keras``,
checking that it reloads with identical predictions.

The network is Caffe's ``lenet_train_test.prototxt``: ``conv1`` (20 5x5) -> max-pool 2 ->
``conv2`` (50 5x5) -> max-pool 2 -> ``ip1`` (500, ReLU) -> ``ip2`` (10), trained with SGD
(momentum 0.9, weight decay 5e-4, batch 64) as Caffe's solver does, with one change: Caffe's
convolutions have no ReLU, and APoZ counts zeros, so a convolution without a zero-producing
non-linearity has no APoZ to measure. The paper trims ``conv2`` and ``ip1``; to measure
``conv2`` this example puts a ReLU after each convolution (``--no-conv-relu`` gives Caffe's
network exactly; then only ``ip1`` can be trimmed). ``ip2``, the output, is never trimmed.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from typing import Any

from kerasprune.examples import _common

DEFAULTS = _common.Defaults(
    name="lenet_mnist", epochs=8, rounds=6, ft_epochs=2, lr=0.01, ft_lr=0.01, batch_size=64,
    k=1.0, tolerance=0.001, layers=("conv2", "ip1"))


def build_lenet(conv_relu: bool = True) -> Any:
    """Caffe's LeNet for 28x28x1 images, with a ReLU after each convolution if ``conv_relu``.

    Returns
    -------
    keras.Sequential
        Named ``lenet``; layers ``conv1``, ``pool1``, ``conv2``, ``pool2``, ``flatten``,
        ``ip1``, ``ip2``. The output is logits (no softmax).
    """
    import keras

    act = "relu" if conv_relu else None
    return keras.Sequential([
        keras.Input((28, 28, 1)),
        keras.layers.Conv2D(20, 5, activation=act, name="conv1"),
        keras.layers.MaxPooling2D(2, name="pool1"),
        keras.layers.Conv2D(50, 5, activation=act, name="conv2"),
        keras.layers.MaxPooling2D(2, name="pool2"),
        keras.layers.Flatten(name="flatten"),
        keras.layers.Dense(500, activation="relu", name="ip1"),
        keras.layers.Dense(10, name="ip2"),
    ], name="lenet")


def _build(args: argparse.Namespace) -> Any:
    return build_lenet(conv_relu=args.conv_relu)


def main(argv: Sequence[str] | None = None, *,
         data: _common.Splits | None = None) -> dict[str, Any]:
    """Train, trim and report LeNet on MNIST.

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
        ``result`` (the :class:`kerasprune.TrimResult`), ``test_before``, ``test_after``
        (test accuracy), ``path`` (the saved model), ``reload_max_abs_diff``, timings.
    """
    p = _common.parser("Network Trimming of Caffe's LeNet on MNIST.", DEFAULTS)
    p.add_argument("--conv-relu", action=argparse.BooleanOptionalAction, default=True,
                   help="a ReLU after each convolution; --no-conv-relu is Caffe's LeNet "
                        "exactly (then only ip1 can be trimmed)")
    args = _common.parse(p, argv)
    if not args.conv_relu and "layers" not in args.explicit:
        args.layers = ["ip1"]  # without a ReLU, the convolutions have no APoZ
    return _common.run(args, _build, data)


if __name__ == "__main__":
    main()
