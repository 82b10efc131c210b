"""``kerasprune.prune``: pruning to a target, and the original Keras-Prune spelling.

Calling it prunes a model to a target, as :func:`kerasprune.adapters.keras.pruning.prune`::

    result = kerasprune.prune(model, flops=0.5)

and its attributes are the original Keras-Prune functions, the same as
:func:`kerasprune.delete_neurons` and :func:`kerasprune.dependency_group`::

    smaller = kerasprune.prune.delete_neurons(model, "conv2d_1", [0, 5, 7])

(The module is callable: ``import kerasprune.prune`` and ``from kerasprune import prune`` give
the same object either way.)
"""

from __future__ import annotations

import inspect
import sys
import types
from typing import Any

from kerasprune.adapters.keras import pruning
from kerasprune.adapters.keras.surgery import delete_neurons, dependency_group

__all__ = ["delete_neurons", "dependency_group"]


class _CallableModule(types.ModuleType):
    """This module, callable as :func:`kerasprune.adapters.keras.pruning.prune`."""

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return pruning.prune(*args, **kwargs)


__signature__ = inspect.signature(pruning.prune)
sys.modules[__name__].__class__ = _CallableModule
