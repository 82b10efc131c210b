"""Runnable examples of pruning on real MNIST.

- :mod:`kerasprune.examples.lenet_mnist`: the paper's LeNet (``python -m
  kerasprune.examples.lenet_mnist``), the README's main job.
- :mod:`kerasprune.examples.vgg_mnist`: a small VGG-style CNN with batch norm.
- :mod:`kerasprune.examples.criteria_mnist`: the VGG-style CNN pruned to 50%, 30% and 15% of
  its FLOPs by every importance criterion, random included (the README's comparison).

Each has a ``main(argv, data=None)`` function (``data`` replaces the MNIST download, for
tests) and ``--help``.
"""
