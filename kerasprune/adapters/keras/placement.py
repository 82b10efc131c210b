"""Where a Keras model's variables live: the ``tf.distribute`` strategy or the Keras
distribution it was built under.

A model built under ``strategy.scope()`` (TensorFlow) or under a
``keras.distribution.Distribution`` (JAX: ``DataParallel``...) has its variables mirrored or
laid out over several devices. Everything kerasprune builds from such a model (the pruned
model, its optimizer, the measuring models) must be built under the same strategy or
distribution, and its data must be split the same way. :func:`of` finds it from the model's
own variables, through public API only, and checks it against the strategy or distribution in
effect at the call:

- TensorFlow: a variable of a model built under a strategy is a
  ``tf.distribute.DistributedValues``, and ``strategy.extended.variable_created_in_scope``
  says which strategy made it (Keras's ``model.distribute_strategy`` names the candidate);
- JAX: each variable's ``value.sharding.device_set`` against the devices of
  ``keras.distribution.distribution()``;
- torch: no distribution is read (every model is local).

A strategy or distribution in effect that is not the model's is an error (the variables
cannot be used by it): :class:`PlacementError`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import keras

__all__ = ["LOCAL", "Placement", "PlacementError", "of"]


class PlacementError(ValueError):
    """A model is used under a strategy or distribution it was not built under."""


@dataclass(frozen=True)
class Placement:
    """The strategy or distribution a model lives in.

    Attributes
    ----------
    engine : str
        ``"local"``, ``"tf.distribute"`` or ``"keras.distribution"``.
    strategy : Any
        The ``tf.distribute.Strategy`` or ``keras.distribution.Distribution``; ``None`` when
        local.
    """

    engine: str
    strategy: Any = None

    @property
    def name(self) -> str:
        """How messages name it (``MirroredStrategy``, ``DataParallel``, ``local``)."""
        return "local" if self.strategy is None else type(self.strategy).__name__

    @contextlib.contextmanager
    def scope(self) -> Iterator[None]:
        """Build or train under the model's strategy or distribution (no-op when local)."""
        if self.strategy is None:
            yield
            return
        with self.strategy.scope():
            yield


LOCAL = Placement("local")


def _weights(model: keras.Model) -> list[Any]:
    return list(model.weights)


def _tf(model: keras.Model) -> Placement:
    import tensorflow as tf

    current = tf.distribute.get_strategy() if tf.distribute.has_strategy() else None
    distributed = [w for w in _weights(model)
                   if isinstance(w.value, tf.distribute.DistributedValues)]
    if not distributed:
        if current is not None and _weights(model):
            raise PlacementError(
                f"model '{model.name}' was built outside any tf.distribute strategy, but is "
                f"used under a {type(current).__name__}'s scope: its variables are not "
                "mirrored; build the model under strategy.scope() (or call outside the scope)")
        return LOCAL
    owner = model.distribute_strategy  # Keras: the strategy the model was built under
    if not owner.extended.variable_created_in_scope(distributed[0].value):
        raise PlacementError(
            f"model '{model.name}': its variables were created under another "
            f"tf.distribute strategy than {type(owner).__name__} (the model's): build the "
            "model and its layers under one strategy.scope()")
    if current is not None and current is not owner:
        raise PlacementError(
            f"model '{model.name}' was built under a {type(owner).__name__}, but is used "
            f"under another strategy's scope ({type(current).__name__}): its variables "
            "belong to the first; call outside the other scope (the model's own strategy is "
            "used) or rebuild the model under the new strategy")
    return Placement("tf.distribute", owner)


def _devices(value: Any) -> frozenset[Any]:
    sharding = getattr(value, "sharding", None)
    return frozenset(sharding.device_set) if sharding is not None else frozenset()


def _jax(model: keras.Model) -> Placement:
    current = keras.distribution.distribution()
    spread = {w.path: _devices(w.value) for w in _weights(model)}
    widest = max((len(d) for d in spread.values()), default=0)
    if current is None:
        if widest > 1:
            raise PlacementError(
                f"model '{model.name}' was built under a keras.distribution (its variables "
                f"are laid out over {widest} devices), but no distribution is in effect: "
                "call under it (`with distribution.scope():` or "
                "keras.distribution.set_distribution(distribution))")
        return LOCAL
    mesh = frozenset(current.device_mesh.devices.flat)
    for path, devices in spread.items():
        if devices != mesh:
            raise PlacementError(
                f"model '{model.name}' is used under a {type(current).__name__} over "
                f"{len(mesh)} devices, but its variable '{path}' lives on {len(devices)} "
                "other device(s): the model was built outside this distribution; build it "
                "under `with distribution.scope():`")
    return Placement("keras.distribution", current)


def of(model: keras.Model) -> Placement:
    """The strategy or distribution ``model``'s variables live in, checked against the one in
    effect.

    Raises
    ------
    PlacementError
        If the strategy or distribution in effect is not the model's (or the model was built
        under one and none is in effect, on JAX, where training would not split the data).
    """
    backend = keras.backend.backend()
    if backend == "tensorflow":
        return _tf(model)
    if backend == "jax":
        return _jax(model)
    return LOCAL
