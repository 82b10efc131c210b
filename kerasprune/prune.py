"""The original Keras-Prune spelling: ``kerasprune.prune.delete_neurons``.

The same functions as :func:`kerasprune.delete_neurons` and :func:`kerasprune.dependency_group`.
"""

from kerasprune.adapters.keras import delete_neurons, dependency_group

__all__ = ["delete_neurons", "dependency_group"]
