"""Runnable examples of Network Trimming on real MNIST.

- :mod:`kerasprune.examples.lenet_mnist`: the paper's LeNet (``python -m
  kerasprune.examples.lenet_mnist``), the README's main job.
- :mod:`kerasprune.examples.vgg_mnist`: a small VGG-style CNN with batch norm.

Each has a ``main(argv, data=None)`` function (``data`` replaces the MNIST download, for
tests) and ``--help``.
"""
