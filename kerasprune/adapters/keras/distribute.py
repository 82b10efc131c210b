"""Measuring passes under the strategy or distribution a model lives in.

A statistics pass (APoZ counts, activation sums, Taylor sums) is a loop over batches that
adds per-sample rows into host sums. :func:`runner` picks, from the model's
:mod:`~kerasprune.adapters.keras.placement`, the :class:`Runner` that runs it:

- local (no strategy, ``OneDeviceStrategy``, torch): ``predict_on_batch`` as it is;
- ``tf.distribute.MirroredStrategy`` (one machine, several devices): each batch is split
  between the replicas (Keras's ``predict_on_batch`` would run the whole batch on every one),
  and their rows concatenated;
- ``keras.distribution`` on JAX (``DataParallel`` over several devices): each batch is laid
  out along the distribution's batch axis (padded to a multiple of the devices);
- ``tf.distribute.MultiWorkerMirroredStrategy`` with several workers: each worker measures
  its own share of the data (batches ``i``, ``i + W``, ``i + 2W``... of ``W`` workers; a
  ``tf.data.Dataset`` through ``dataset.shard``, unless its auto-shard policy is ``OFF``,
  which says it is sharded already), on its own, with no collective per batch; at the end one
  all-reduce (a sum, in int64 for counts and float64 for sums) merges the workers' sums.

:meth:`Runner.gather` wraps the pass: on several workers, a worker whose pass fails still
joins the final all-reduce, flagged, so that every worker raises (nobody waits forever and
nobody returns statistics from part of the data); the merged sample count is checked against
the data's size when it is known (arrays), and every worker must have been given the same
data.
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import keras
import numpy as np
import numpy.typing as npt

from kerasprune.adapters.keras import data as keras_data
from kerasprune.adapters.keras import placement
from kerasprune.adapters.keras.placement import Placement, PlacementError

__all__ = ["Pass", "Runner", "WorkerError", "runner"]

T = TypeVar("T")

Pass = tuple[list[npt.NDArray[Any]], int]
"""What a measuring pass returns: its host sums (int64 or float64 arrays) and the number of
samples it measured."""


class WorkerError(RuntimeError):
    """Another worker's pass failed: no statistics (its own error is in its own log)."""


def _outputs(out: Any) -> list[npt.NDArray[Any]]:
    return [np.asarray(o) for o in (out if isinstance(out, (list, tuple)) else [out])]


class Runner:
    """Runs a measuring pass on this process's share of the data, and merges the shares.

    The local runner: the whole data, ``predict_on_batch``, nothing to merge.
    """

    workers = 1
    """Processes that share the data."""

    def __init__(self, where: Placement) -> None:
        self.placement = where

    def share(self, source: keras_data.Source) -> keras_data.Source:
        """The part of ``source`` this process measures."""
        return source

    def predict(self, measuring: keras.Model, x: Any) -> list[npt.NDArray[Any]]:
        """``measuring``'s outputs on batch ``x`` (one row per sample), on the host."""
        return _outputs(measuring.predict_on_batch(x))

    def together(self, fn: Callable[[], T]) -> T:
        """``fn()``, on every process: if it fails on one, it fails on all (here, the local
        runner, it just runs). For a step before the pass (reading the data), so that a
        worker whose data is refused does not leave the others waiting for it."""
        return fn()

    def gather(self, source: keras_data.Source, run: Callable[[keras_data.Source], Pass]
               ) -> Pass:
        """``run`` on this process's share of ``source``, merged over the processes.

        Raises
        ------
        ValueError
            If fewer samples were measured than the data holds (when known).
        """
        sums, samples = run(self.share(source))
        _check_count(source.name, samples, _expected(source))
        return sums, samples


def _expected(source: keras_data.Source) -> int | None:
    """The samples a pass over ``source`` must measure, when known (in-memory arrays)."""
    if source.kind != keras_data.ARRAYS or source.samples is None:
        return None
    if source.steps is None:
        return source.samples
    return min(source.samples, source.steps * source.batch_size)


def _check_count(name: str, samples: int, expected: int | None) -> None:
    if expected is not None and samples != expected:
        raise ValueError(f"{name}: the statistics count {samples} samples of the {expected} "
                         "given: a pass lost or repeated batches; nothing is returned")


class _Mirrored(Runner):
    """``tf.distribute`` on one machine: each batch split between the local replicas."""

    def predict(self, measuring: keras.Model, x: Any) -> list[npt.NDArray[Any]]:
        import tensorflow as tf

        strategy = self.placement.strategy
        n = int(strategy.num_replicas_in_sync)
        size = keras_data.batch_rows(x)
        bounds = [size * i // n for i in range(n + 1)]

        def shard(ctx: Any) -> Any:
            i = ctx.replica_id_in_sync_group
            return keras_data.map_arrays(
                lambda a: tf.convert_to_tensor(a[bounds[i]:bounds[i + 1]]), x)

        return _outputs(measuring.predict_on_batch(
            strategy.experimental_distribute_values_from_function(shard)))


class _Laid(Runner):
    """A Keras distribution (JAX): each batch laid out along the batch axis of the mesh."""

    def predict(self, measuring: keras.Model, x: Any) -> list[npt.NDArray[Any]]:
        distribution = self.placement.strategy
        rows = keras_data.batch_rows(x)
        mesh = distribution.device_mesh
        name = distribution.batch_dim_name
        split = int(mesh.shape[mesh.axis_names.index(name)]) if name in mesh.axis_names else 1
        width = -(-rows // split) * split
        if width != rows:
            x = keras_data.pad_batch(x, width)

        def lay(a: Any) -> Any:
            return keras.distribution.distribute_tensor(
                a, distribution.get_data_layout(tuple(a.shape)))

        out = measuring.predict_on_batch(keras_data.map_arrays(lay, x))
        return [o[:rows] for o in _outputs(out)]


def _cut(value: Any, part: slice) -> Any:
    """The rows ``part`` of every array of ``value`` (views of NumPy arrays)."""
    return keras_data.map_arrays(lambda a: a[part], value)


class _Shard:
    """Batches ``index``, ``index + count``... of a source's first ``steps`` batches: what
    one worker of ``count`` measures. Re-iterable; only those batches are read from a
    ``PyDataset``, only those rows cut from arrays."""

    def __init__(self, source: keras_data.Source, index: int, count: int) -> None:
        self.source, self.index, self.count = source, index, count

    def __iter__(self) -> Iterator[Any]:
        s = self.source
        if s.kind == keras_data.ARRAYS:
            n = _expected(s) or 0
            for start in range(self.index * s.batch_size, n, self.count * s.batch_size):
                part = slice(start, min(start + s.batch_size, n))
                x = _cut(s.x, part)
                yield x if s.y is None else (x, _cut(s.y, part))
            return
        if s.kind == keras_data.PYDATASET:  # batches is known: a length, or steps
            for i in range(self.index, int(s.batches or 0), self.count):
                yield s.data[i]
            return
        yield from itertools.islice(s.data, self.index, s.steps, self.count)


class _Workers(Runner):
    """``tf.distribute.MultiWorkerMirroredStrategy`` over several workers: each measures its
    share on its own; one all-reduce merges."""

    def __init__(self, where: Placement, index: int, count: int) -> None:
        super().__init__(where)
        self.index, self.workers = index, count
        self._call: Any = None

    def share(self, source: keras_data.Source) -> keras_data.Source:
        s = source
        if s.kind == keras_data.DATASET:
            import tensorflow as tf

            data = s.data if s.steps is None else s.data.take(s.steps)
            policy = data.options().experimental_distribute.auto_shard_policy
            if policy != tf.data.experimental.AutoShardPolicy.OFF:
                data = data.shard(self.workers, self.index)
            return dataclasses.replace(s, data=data, steps=None, batches=None, samples=None)
        shard = _Shard(s, self.index, self.workers)
        return dataclasses.replace(s, kind=keras_data.BATCHES, data=shard, steps=None,
                                   batches=None, samples=None, x=None, y=None)

    def predict(self, measuring: keras.Model, x: Any) -> list[npt.NDArray[Any]]:
        # A local call: Keras's predict_on_batch would gather every worker's rows at each
        # batch, in lockstep, which a worker with fewer batches would never join.
        import tensorflow as tf

        if self._call is None or self._call[0] is not measuring:
            fn = tf.function(lambda v: measuring(v, training=False), reduce_retracing=True)
            self._call = (measuring, fn)
        out = self._call[1](keras_data.map_arrays(tf.convert_to_tensor, x))
        return [np.asarray(o) for o in (out if isinstance(out, (list, tuple)) else [out])]

    def _all_reduce(self, vector: npt.NDArray[Any]) -> npt.NDArray[Any]:
        """The sum of ``vector`` over the workers (each worker's first replica gives it)."""
        import tensorflow as tf

        strategy = self.placement.strategy
        given = iter([vector])

        def value(ctx: Any) -> Any:
            return tf.constant(next(given, np.zeros_like(vector)))

        per_replica = strategy.experimental_distribute_values_from_function(value)
        return np.asarray(strategy.reduce(tf.distribute.ReduceOp.SUM, per_replica,
                                          axis=None))

    def together(self, fn: Callable[[], T]) -> T:
        failure: Exception | None = None
        result: Any = None
        try:
            result = fn()
        except Exception as err:  # joins the all-reduce below, flagged, then re-raised
            failure = err
        flags = np.zeros(self.workers, dtype=np.int64)
        flags[self.index] = failure is not None
        self._stop_on_failure(failure, self._all_reduce(flags))
        return result  # type: ignore[no-any-return]

    def _stop_on_failure(self, failure: Exception | None, flags: npt.NDArray[Any]) -> None:
        if failure is not None:
            raise failure
        failed = [i for i, flag in enumerate(flags) if flag]
        if failed:
            raise WorkerError(
                f"worker(s) {failed} of {self.workers} failed (see their errors); this worker "
                f"({self.index}) stops too: no statistics from part of the data")

    def gather(self, source: keras_data.Source, run: Callable[[keras_data.Source], Pass]
               ) -> Pass:
        failure: Exception | None = None
        sums: list[npt.NDArray[Any]] = []
        samples = 0
        try:
            sums, samples = run(self.share(source))
        except Exception as err:  # joins the all-reduce below, flagged, then re-raised
            failure = err
        given = _expected(source)
        header = np.zeros(4 + self.workers, dtype=np.int64)
        header[:4] = (samples, given or 0, (given or 0) ** 2, given is not None)
        header[4 + self.index] = failure is not None
        total = self._all_reduce(header)  # one collective: the failures and the counts
        self._stop_on_failure(failure, total[4:])
        if given is not None and (total[3] != self.workers or total[1] != self.workers * given
                                  or total[2] != self.workers * given ** 2):
            raise ValueError(
                f"{source.name}: the workers were given different data (this worker has "
                f"{given} samples): give every worker the same data; each measures its own "
                "share of it")
        _check_count(source.name, int(total[0]), given)
        return self._merge(sums), int(total[0])

    def _merge(self, sums: list[npt.NDArray[Any]]) -> list[npt.NDArray[Any]]:
        """The sums over the workers: one all-reduce of all the int64 sums, one of all the
        float64 sums."""
        merged: list[npt.NDArray[Any]] = [np.empty(0)] * len(sums)
        for kind in (np.int64, np.float64):
            which = [i for i, a in enumerate(sums)
                     if np.issubdtype(a.dtype, np.integer) == (kind is np.int64)]
            if not which:
                continue
            flat = self._all_reduce(np.concatenate(
                [np.asarray(sums[i], dtype=kind).ravel() for i in which])).astype(kind)
            start = 0
            for i in which:
                size = sums[i].size
                merged[i] = flat[start:start + size].reshape(sums[i].shape)
                start += size
        return merged


def _tf_runner(where: Placement) -> Runner:
    import tensorflow as tf

    strategy = where.strategy
    if isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        resolver = strategy.cluster_resolver
        spec = resolver.cluster_spec()
        tasks = [(job, i) for job in ("chief", "worker") if job in spec.jobs
                 for i in range(spec.num_tasks(job))]
        if len(tasks) > 1:
            return _Workers(where, tasks.index((resolver.task_type, resolver.task_id)),
                            len(tasks))
    if isinstance(strategy, (tf.distribute.MirroredStrategy,
                             tf.distribute.MultiWorkerMirroredStrategy)):
        return _Mirrored(where) if int(strategy.num_replicas_in_sync) > 1 else Runner(where)
    if isinstance(strategy, tf.distribute.OneDeviceStrategy):
        return Runner(where)
    raise PlacementError(f"statistics under a {type(strategy).__name__} are not supported: "
                         "use MirroredStrategy or MultiWorkerMirroredStrategy")


def runner(model: keras.Model) -> Runner:
    """The runner for ``model``'s strategy or distribution (see the module's docstring).

    Raises
    ------
    PlacementError
        If the strategy or distribution in effect is not the model's, or is not supported.
    """
    where = placement.of(model)
    if where.engine == "tf.distribute":
        return _tf_runner(where)
    if where.engine == "keras.distribution":
        import jax

        if jax.process_count() > 1:
            raise PlacementError(
                f"statistics under a Keras distribution over {jax.process_count()} JAX "
                "processes are not supported (only over the devices of one process): "
                "measure in one process, or use TensorFlow's MultiWorkerMirroredStrategy")
        return _Laid(where)
    return Runner(where)
