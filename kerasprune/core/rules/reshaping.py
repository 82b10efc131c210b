"""Layers that move channels to other axes: ``Flatten`` and ``Reshape``."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from kerasprune.core.graph import LayerSpec, Shape
from kerasprune.core.rules.base import (
    Link,
    UnsupportedLayerError,
)
from kerasprune.core.rules.elementwise import Elementwise

__all__ = ["Flatten", "Reshape"]


def _channel_ids(shape: Shape, axis: int) -> np.ndarray:
    """An array of ``shape`` holding, at each position, the index along ``axis``."""
    view = [1] * len(shape)
    view[axis] = shape[axis]
    return np.broadcast_to(np.arange(shape[axis]).reshape(view), shape)


def _channel_map(ids: np.ndarray) -> tuple[int, np.ndarray] | None:
    """The axis of ``ids`` along which each index holds a single channel, and which one."""
    for axis in reversed(range(ids.ndim)):
        rows = np.moveaxis(ids, axis, 0).reshape(ids.shape[axis], -1)
        if (ids.shape[axis] > 1 or ids.ndim == 1) and (rows == rows[:, :1]).all():
            return axis, rows[:, 0].copy()
    return None


class Flatten(Elementwise):
    """Flatten: channel ``c`` becomes every flat position of ``c``, in either data format."""

    def link(self, spec: LayerSpec, in_shapes: Sequence[Shape], out_shape: Shape,
             axis: int) -> Link | None:
        ids = _channel_ids(in_shapes[0], axis)
        if spec.attrs.get("data_format") == "channels_first" and ids.ndim > 1:
            ids = np.moveaxis(ids, 0, -1)
        return Link(0, (ids.reshape(-1),))


class Reshape(Elementwise):
    """Reshape: passes when some output axis holds one channel per index. A ``-1`` in the
    target shape stays ``-1`` (it stands for a size only known at run time)."""

    def link(self, spec: LayerSpec, in_shapes: Sequence[Shape], out_shape: Shape,
             axis: int) -> Link | None:
        ids = _channel_ids(in_shapes[0], axis)
        shape = self._resolved(spec, ids.size, out_shape)
        if shape is None:
            raise UnsupportedLayerError(
                f"{self.describe(spec)} reshapes {in_shapes[0]} to {out_shape}, sizes known "
                "only at run time, so kerasprune cannot tell where the channels go")
        found = _channel_map(ids.reshape(shape))
        if found is not None and shape[found[0]] != out_shape[found[0]]:
            raise UnsupportedLayerError(
                f"{self.describe(spec)} reshapes {in_shapes[0]} to {out_shape}: the channels "
                "land on an axis whose size is known only at run time")
        if found is None:
            raise UnsupportedLayerError(
                f"{self.describe(spec)} reshapes {in_shapes[0]} to {out_shape}, mixing the "
                f"channels of axis {axis + 1} with other axes")
        return Link(found[0], (found[1],))

    @staticmethod
    def _resolved(spec: LayerSpec, size: int, out_shape: Shape) -> Shape | None:
        """The output shape for an input of ``size`` values: ``out_shape`` itself, or with
        its ``-1`` axis recomputed (an unknown input size counts as 1 in the graph, so the
        axis that absorbs it may be off)."""
        if size == math.prod(out_shape):
            return out_shape
        target = spec.attrs.get("target_shape")
        if target is None or len(target) != len(out_shape):
            return None
        free = [i for i, t in enumerate(target) if t is not None and int(t) == -1]
        known = math.prod(d for i, d in enumerate(out_shape) if i not in free)
        if len(free) != 1 or known == 0 or size % known:
            return None
        shape = list(out_shape)
        shape[free[0]] = size // known
        return tuple(shape)

    def attr_updates(self, spec: LayerSpec, in_shapes: Sequence[Shape], out_shape: Shape,
                     axes: Sequence[int | None]) -> dict[str, Any]:
        target = spec.attrs.get("target_shape")
        if target is None or len(target) != len(out_shape):
            return {"target_shape": tuple(out_shape)}
        return {"target_shape": tuple(-1 if t is not None and int(t) == -1 else out_shape[i]
                                      for i, t in enumerate(target))}
