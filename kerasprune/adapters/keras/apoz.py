"""APoZ of a Keras model's neurons, counted inside the forward pass.

:func:`get_apoz` measures every layer in one pass over the data. Where each layer's zeros
happen is pure graph logic (:func:`kerasprune.core.apoz.measurement_sites`): a layer with a
linear activation (``Conv -> BatchNorm -> ReLU``) is counted after the ReLU its channels reach.
The counting runs in the model's backend: a measuring model, built from the model's inputs
to small count tensors hanging off those layers' outputs, reduces each activation to
``(batch, channels)`` int32 zero counts, so only counts leave the backend, never activation
tensors. It runs batch by batch with ``predict_on_batch`` (``model.predict`` would keep every
batch's outputs), and the host sums the counts in int64: memory is ``O(channels)``, however
many samples. A batch smaller than an earlier one (the last one, usually) is padded to that
size and the padding's count rows dropped, so the measuring model is compiled for one input
shape only. The user's model is only read.

Under a ``tf.distribute`` strategy or a Keras distribution the pass runs through
:mod:`~kerasprune.adapters.keras.distribute`: batches split between the replicas or laid out
over the devices, or, over several workers, each worker counting its share and the counts
all-reduced; the result equals the single-device one exactly.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from types import MappingProxyType
from typing import Any, Protocol, Union

import keras
import numpy as np
import numpy.typing as npt

from kerasprune.adapters.keras import convert, distribute
from kerasprune.adapters.keras import data as keras_data
from kerasprune.adapters.keras.placement import Placement
from kerasprune.adapters.keras.record import KerasGraph
from kerasprune.adapters.keras.refs import LayerRef, layer_names
from kerasprune.core import apoz as core_apoz
from kerasprune.core.apoz import ApozCounts, Site
from kerasprune.core.graph import Graph

__all__ = ["ApozReport", "get_apoz", "high_apoz"]

Verbose = Union[str, int]
"""``"auto"``, 0, 1 or 2, as in Keras."""

_AUTO_DELAY = 2.0
"""With ``verbose="auto"``, seconds before the progress bar appears (short runs are silent)."""


# --------------------------------------------------------------------------------------------
# The result
# --------------------------------------------------------------------------------------------


class ApozReport(Mapping[str, npt.NDArray[np.float64]]):
    """APoZ per neuron of each measured layer: a read-only mapping ``{layer name: APoZ}``.

    Each value is a read-only float64 array with one APoZ per neuron (output channel), in
    ``[0, 1]``. Layers are in graph order (or in the order they were asked for).

    Parameters
    ----------
    counts
        The exact zero counts of each layer.
    measured_at
        For each layer, the layer whose output was counted.

    Attributes
    ----------
    measured_at : Mapping[str, str]
        For each layer, the layer whose output was counted: the layer itself when its own
        activation makes zeros, else the first zero-producing layer its channels reach (the
        ``ReLU`` of ``Conv -> BatchNormalization -> ReLU``).
    counts : Mapping[str, kerasprune.core.apoz.ApozCounts]
        The exact counts behind each APoZ (zeros per neuron, values counted per neuron), to
        merge with counts from other data or workers.
    """

    __slots__ = ("_apoz", "_counts", "_measured_at")

    def __init__(self, counts: Mapping[str, ApozCounts], measured_at: Mapping[str, str]) -> None:
        if list(counts) != list(measured_at):
            raise ValueError("counts and measured_at must name the same layers in one order")
        values: dict[str, npt.NDArray[np.float64]] = {}
        for name, c in counts.items():
            result = c.result()
            result.flags.writeable = False
            values[name] = result
        self._apoz = MappingProxyType(values)
        self._counts: Mapping[str, ApozCounts] = MappingProxyType(dict(counts))
        self._measured_at: Mapping[str, str] = MappingProxyType(dict(measured_at))

    @property
    def measured_at(self) -> Mapping[str, str]:
        """For each layer, the layer whose output was counted."""
        return self._measured_at

    @property
    def counts(self) -> Mapping[str, ApozCounts]:
        """For each layer, the exact zero counts."""
        return self._counts

    def __getitem__(self, layer: str) -> npt.NDArray[np.float64]:
        return self._apoz[layer]

    def __iter__(self) -> Iterator[str]:
        return iter(self._apoz)

    def __len__(self) -> int:
        return len(self._apoz)

    def __repr__(self) -> str:
        parts = [
            f"{name!r}: {len(value)} neurons, mean APoZ {float(value.mean()):.3f}"
            + (f" (at {self._measured_at[name]!r})" if self._measured_at[name] != name else "")
            for name, value in self._apoz.items()
        ]
        return "ApozReport({" + ", ".join(parts) + "})"


# --------------------------------------------------------------------------------------------
# Counting in the graph
# --------------------------------------------------------------------------------------------


_NARROW = (("uint8", 255), ("uint16", 65535))
"""Unsigned types to count zeros along one axis in, with the longest axis each can count."""


def _count_along(zeros: Any, axis: int, length: int | None) -> Any:
    """int32 count of the True values of a boolean tensor along ``axis``.

    XLA (JAX) fuses the cast into the sum. TensorFlow does not: a full-size int32 copy of
    every activation would cost about twice the rest of the count, so there the axis is
    summed in the narrowest unsigned type that cannot overflow on it (``keras.ops.sum``
    would widen it first), and only the much smaller result is widened.
    """
    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        narrow = next((t for t, top in _NARROW if length is not None and length <= top),
                      "int32")
        return tf.cast(tf.reduce_sum(tf.cast(zeros, narrow), axis=axis), tf.int32)
    return keras.ops.sum(keras.ops.cast(zeros, "int32"), axis=axis)


class _ZeroCounts(keras.layers.Layer):  # type: ignore[misc]
    """``(batch, C + 2)`` int32 per sample: the zeros of each of the C channels, the number of
    values counted per channel, and 1 if the sample has a NaN (else 0)."""

    def __init__(self, axis: int, **kwargs: Any) -> None:
        super().__init__(trainable=False, autocast=False, **kwargs)
        self.axis = axis  # the channel axis, counting the batch axis

    def call(self, x: Any) -> Any:
        ops = keras.ops
        rank = len(x.shape)
        spatial = tuple(a for a in range(1, rank) if a != self.axis)
        zeros = ops.equal(x, 0)
        if spatial:
            zeros = _count_along(zeros, spatial[-1], x.shape[spatial[-1]])
            if len(spatial) > 1:  # (batch, channels): the other axes keep their order
                zeros = ops.sum(zeros, axis=spatial[:-1])
        else:
            zeros = ops.cast(zeros, "int32")
        shape = ops.shape(x)
        positions: Any = 1
        for a in spatial:
            positions = positions * shape[a]
        ones = ops.ones_like(zeros[:, :1])
        columns = [zeros, ones * ops.cast(positions, "int32")]
        if keras.backend.is_float_dtype(x.dtype):
            # A NaN makes its sample's sum NaN. The site is ReLU-like (values >= 0 or a
            # bounded threshold), so inf - inf cannot make one: one cheap reduction.
            total = ops.sum(x, axis=tuple(range(1, rank)))
            columns.append(ops.cast(ops.isnan(total), "int32")[:, None])
        else:
            columns.append(ones * 0)
        return ops.concatenate(columns, axis=1)

    def compute_output_shape(self, input_shape: Any) -> tuple[Any, ...]:
        channels = input_shape[self.axis]
        return (input_shape[0], None if channels is None else channels + 2)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "axis": self.axis}


def unreadable(kg: KerasGraph, layer: str) -> str | None:
    """Why the output of ``layer`` cannot be read through the model's public graph (a layer
    of a nested model, a shared layer), or ``None`` if it can."""
    live = kg.walk.live.get(layer)
    if live is None:
        return ("it is a sublayer of a layer that contains layers (a transformer block): "
                "APoZ is not counted inside one; the 'activation' and 'taylor' criteria are "
                "measured there")
    if not any(top is live for top in kg.model.layers):
        return ("it is a layer of a nested model, whose output cannot be read from the "
                "outer model's inputs; measure the nested model on its own inputs "
                "(pass model.get_layer(...) as the model)")
    calls = len(kg.graph.calls(layer))
    if calls > 1:
        return f"it is shared (called {calls} times), so its output is ambiguous"
    return None


def site_check(kg: KerasGraph) -> Callable[[Graph, Site], str | None]:
    """Why a site cannot be read through the model's public graph, if it cannot."""

    def check(graph: Graph, site: Site) -> str | None:
        return unreadable(kg, site.layer)

    return check


def _measuring_model(model: keras.Model, kg: KerasGraph, site_layers: list[tuple[str, int]],
                     placement: Placement) -> keras.Model:
    """A model from ``model``'s inputs to a ``_ZeroCounts`` of each site layer's output."""
    taken = {layer.name for layer in model.layers}
    outputs = []
    for i, (name, axis) in enumerate(site_layers):
        tag = f"kerasprune_zero_counts_{i}"
        while tag in taken:
            tag += "_"
        outputs.append(_ZeroCounts(axis + 1, name=tag)(kg.walk.live[name].output))
    with placement.scope():
        measuring = keras.Model(keras_data.model_input(model), outputs,
                                name=f"{model.name}_apoz")
    measuring.jit_compile = model.jit_compile
    return measuring


# --------------------------------------------------------------------------------------------
# Batches
# --------------------------------------------------------------------------------------------


class ProgressBar:
    """A ``keras.utils.Progbar`` over batches; with ``"auto"`` it shows only on long runs."""

    def __init__(self, verbose: Verbose, target: int | None) -> None:
        self.verbose = verbose
        self.target = target
        self.start = time.monotonic()
        self.bar: Any = None
        if verbose in (1, 2):
            self.bar = self._new()

    def _new(self) -> Any:
        return keras.utils.Progbar(self.target, verbose=2 if self.verbose == 2 else 1,
                                   unit_name="batch")

    def update(self, step: int) -> None:
        if self.bar is None and self.verbose == "auto" and (
                time.monotonic() - self.start >= _AUTO_DELAY):
            self.bar = self._new()
        if self.bar is not None:
            self.bar.update(step)  # finalizes by itself on reaching a known target

    def finish(self, step: int) -> None:
        if self.bar is not None and (self.target is None or step < self.target):
            self.bar.update(step, finalize=True)


# --------------------------------------------------------------------------------------------
# Public functions
# --------------------------------------------------------------------------------------------


class BatchProgress(Protocol):
    """What :func:`measure` reports its progress to: the batches done so far."""

    def update(self, step: int) -> None: ...

    def finish(self, step: int) -> None: ...


def check_args(batch_size: int, verbose: Verbose, steps: int | None) -> None:
    """Check the arguments every measurement takes (positive ints, a Keras verbose)."""
    def positive(name: str, value: Any) -> None:
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value!r}")

    positive("batch_size", batch_size)
    if steps is not None:
        positive("steps", steps)
    if verbose not in ("auto", 0, 1, 2) or isinstance(verbose, bool):
        raise ValueError(f"verbose must be 'auto', 0, 1 or 2, got {verbose!r}")


def check_weights(model: keras.Model, statistic: str = "APoZ") -> None:
    """Raise if a weight of ``model`` holds NaN: every activation it reaches would be NaN
    (``statistic`` names what is undefined then).

    Checked on the weights themselves, once, because a backend may hide a NaN in the
    forward pass: TensorFlow's graph mode fuses ``Conv2D``/``Dense`` + bias + ReLU into one
    kernel (oneDNN), whose ReLU turns NaN into 0, a zero that would be counted.
    """
    for w in model.weights:
        if not keras.backend.is_float_dtype(keras.backend.standardize_dtype(w.dtype)):
            continue
        # On the host: backend ops would be compiled anew for every weight shape (JAX).
        bad = int(np.count_nonzero(np.isnan(keras.ops.convert_to_numpy(w.value))))
        if bad:
            size = int(np.prod(w.shape))
            raise ValueError(
                f"the weights of model '{model.name}' hold NaN: '{w.path}' has {bad} NaN of "
                f"its {size} values; {statistic} is undefined for NaN activations: restore "
                "the weights from before they diverged (a lower learning rate may help)")


def check_nan_inputs(x: Any, source: keras_data.Source, step: int,
                     statistic: str = "APoZ") -> None:
    """Raise if an input batch holds NaN (checked on the host, before the forward pass):
    ``statistic`` is undefined for NaN."""
    arrays = keras_data.leaves(x)
    for i, array in enumerate(arrays):
        bad = keras_data.nan_rows(array)
        if bad:
            what = "" if len(arrays) == 1 else f" (input {i})"
            raise ValueError(
                f"{source.name} holds NaN: {bad} of the {keras_data.batch_rows(x)} samples of "
                f"batch {step}{what} have a NaN value; {statistic} is undefined for NaN: clean "
                "the data (e.g. np.nan_to_num) or leave those samples out")


def measure(model: keras.Model, source: keras_data.Source,
            layers: LayerRef | Iterable[LayerRef] | None,
            progress: BatchProgress | None = None, stacklevel: int = 3,
            kg: KerasGraph | None = None) -> ApozReport:
    """APoZ of ``layers`` over a checked data source: :func:`get_apoz`'s pass.

    ``stacklevel`` points the :class:`~kerasprune.core.apoz.ApozWarning` about left-out
    layers at the user's call (2 is the caller of this function). ``kg`` is ``model`` read
    already (``convert.to_graph(model)``), if the caller has it.
    """
    kg = convert.to_graph(model) if kg is None else kg
    sites = core_apoz.measurement_sites(kg.graph, layer_names(kg, layers),
                                        check=site_check(kg), stacklevel=stacklevel + 1)
    check_weights(model)
    site_index: dict[str, int] = {}
    for site in sites.values():
        site_index.setdefault(site.layer, len(site_index))
    by_site = {site.layer: site for site in sites.values()}
    site_layers = [(name, by_site[name].axis) for name in site_index]
    channels = [int(kg.graph.shapes[by_site[name].tensor][axis]) for name, axis in site_layers]
    run = distribute.runner(model)
    measuring = _measuring_model(model, kg, site_layers, run.placement)

    def count(share: keras_data.Source) -> distribute.Pass:
        zeros = [np.zeros(c, dtype=np.int64) for c in channels]
        totals = np.zeros(len(channels), dtype=np.int64)
        step = samples = width = 0
        for step, x in enumerate(share.input_batches(), 1):
            check_nan_inputs(x, share, step)
            rows = keras_data.batch_rows(x)
            if rows == 0:
                continue
            if rows < width:
                x = keras_data.pad_batch(x, width)
            width = max(width, rows)
            for j, counts in enumerate(run.predict(measuring, x)):
                counts = counts[:rows]
                c = channels[j]
                nan = int(np.count_nonzero(counts[:, c + 1]))
                if nan:
                    name = site_layers[j][0]
                    targets = ", ".join(repr(t) for t, s in sites.items() if s.layer == name)
                    raise ValueError(
                        f"the activations of layer '{name}' (measuring {targets}) contain NaN "
                        f"in {nan} of the {len(counts)} samples of batch {step} of "
                        f"{share.name}, with no NaN in the data or the weights: the network "
                        "makes it (an overflow to inf, then inf - inf?); APoZ is undefined "
                        "for NaN")
                zeros[j] += counts[:, :c].sum(axis=0, dtype=np.int64)
                totals[j] += counts[:, c].sum(dtype=np.int64)
            samples += rows
            if progress is not None:
                progress.update(step)
        if progress is not None and step:
            progress.finish(step)
        return [*zeros, totals], samples

    sums, samples = run.gather(source, count)
    if samples == 0:
        raise ValueError(f"{source.name} is empty: there are no samples to measure")
    zeros, totals = sums[:-1], [int(t) for t in sums[-1]]
    counted = {name: ApozCounts.empty(channels[site_index[site.layer]]).update_counts(
        zeros[site_index[site.layer]], totals[site_index[site.layer]])
        for name, site in sites.items()}
    return ApozReport(counted, {name: site.layer for name, site in sites.items()})


def _get_apoz(model: keras.Model, data: Any, layers: Any, batch_size: int, verbose: Verbose,
              steps: int | None) -> ApozReport:
    check_args(batch_size, verbose, steps)
    # on several workers, data refused on one of them stops every one
    source = distribute.runner(model).together(lambda: keras_data.read(
        data, model, name="data", labels=False, reiterable=False, batch_size=batch_size,
        steps=steps))
    # stacklevel 4: measure <- _get_apoz <- get_apoz / high_apoz <- the caller
    return measure(model, source, layers, ProgressBar(verbose, source.batches), stacklevel=4)


def get_apoz(model: keras.Model, data: Any, layers: LayerRef | Iterable[LayerRef] | None = None,
             *, batch_size: int = 32, verbose: Verbose = "auto",
             steps: int | None = None) -> ApozReport:
    """APoZ (Average Percentage of Zeros) of the neurons of a model's layers, in one pass.

    For each neuron (output channel) ``c``, the share of its activations that are exactly
    zero, over every sample and spatial position, measured after its ReLU (Hu et al. 2016,
    "Network Trimming"). A layer with a linear activation is measured where its zeros
    happen: its channels are followed through single-input layers that map them one to one
    (``BatchNormalization``, ``Dropout``, pooling, padding...) to the first ReLU-like layer,
    as in ``Conv2D -> BatchNormalization -> ReLU`` (see :attr:`ApozReport.measured_at`).

    All layers are measured in one forward pass. Only per-batch zero counts leave the
    backend, so memory does not grow with the number of samples.

    Parameters
    ----------
    model
        A built Sequential or functional Keras model. It is not modified.
    data
        Inputs to run the model on: a NumPy array (or a list or dict of them for a model
        with several inputs) or a tuple ``(x, y)`` (labels are ignored), split into batches
        of ``batch_size``; or batches from a ``tf.data.Dataset``, a
        ``keras.utils.PyDataset``, a generator or any iterable, each batch ``x`` or
        ``(x, y)``. It is checked against the model's inputs (structure, dict keys, shapes)
        before anything runs; batches that cannot be seen in advance are checked as they
        come.
    layers
        The layers to measure, by name, index in ``model.layers`` or object (one or a list),
        as :func:`kerasprune.delete_neurons` takes them. ``None`` measures every layer with
        neurons that has a ReLU-like activation on its channel path, and leaves out the others
        (such as the output layer) with one :class:`kerasprune.core.apoz.ApozWarning`.
    batch_size
        Samples per batch for in-memory arrays (batches from other sources are used as
        they come).
    verbose
        0 for silence, 1 for a progress bar, 2 for one line at the end; ``"auto"`` shows the
        progress bar only when the measurement takes more than a couple of seconds.
    steps
        Measure at most this many batches (required for data that repeats forever).

    Returns
    -------
    ApozReport
        A read-only mapping ``{layer name: APoZ per neuron}`` with ``measured_at`` (the layer
        whose output was counted) and ``counts`` (the exact zero counts).

    Raises
    ------
    PruneError
        If a named layer has no neurons, is shared, or has no ReLU-like activation on its
        channel path, or if its zeros happen inside a nested model or at a shared layer
        (whose outputs cannot be read through the model's public graph).
    ValueError
        If the data do not fit the model, are empty or hold NaN, if a weight holds NaN, if
        the network makes a NaN, or if an argument is invalid. Each message names the
        argument, the batch or the weight.
    TypeError
        If ``data`` is not data (a string, a number, a nested Python list of numbers...).

    Notes
    -----
    Under the ``tf.distribute`` strategy or the Keras distribution the model was built under,
    each batch is split between the replicas (``MirroredStrategy``) or laid out over the
    devices (``keras.distribution.DataParallel`` on JAX); under
    ``MultiWorkerMirroredStrategy`` every worker counts its share of the data (the same data
    given to each) and the counts are all-reduced. The result equals the single-device one
    exactly, on every worker; if the pass fails on one worker it fails on all (a
    :class:`~kerasprune.adapters.keras.distribute.WorkerError` on the others). Used under
    another strategy or distribution than its own, the model is refused (a
    :class:`~kerasprune.adapters.keras.placement.PlacementError`, a ``ValueError``).

    APoZ is undefined for NaN, so NaN is looked for three ways: in every float input batch
    and in every weight, on the host, before they run; and in each measured activation,
    inside the pass. The first two are needed because a backend may hide a NaN: TensorFlow's
    graph mode fuses ``Conv``/``Dense`` + bias + ReLU into one oneDNN kernel whose ReLU maps
    NaN to 0. For the same reason, a NaN that the network itself makes (an overflow to inf,
    then inf - inf) inside such a fused layer is counted as a zero on TensorFlow; it is
    found where the ReLU is a separate operation, and on JAX.

    Examples
    --------
    >>> report = kerasprune.get_apoz(model, x_val)  # doctest: +SKIP
    >>> report["conv2d"]  # doctest: +SKIP
    array([0.12, 0.98, ...])
    """
    return _get_apoz(model, data, layers, batch_size, verbose, steps)


def high_apoz(model: keras.Model, data: Any,
              layers: LayerRef | Iterable[LayerRef] | None = None, *, method: str = "std",
              k: float = 1.0, cutoff: float | None = None, fraction: float | None = None,
              batch_size: int = 32, verbose: Verbose = "auto",
              steps: int | None = None) -> dict[str, npt.NDArray[np.int64]]:
    """Neurons to delete by APoZ: measure with :func:`get_apoz`, select per layer.

    Parameters
    ----------
    model, data, layers, batch_size, verbose, steps
        As in :func:`get_apoz`.
    method, k, cutoff, fraction
        The selection rule, as in :func:`kerasprune.core.apoz.select_high_apoz`: ``"std"`` (the
        paper's rule, APoZ above the layer's mean + ``k`` standard deviations),
        ``"absolute"`` (above ``cutoff``), ``"both"``, or ``"top"`` (the ``fraction`` with the
        highest APoZ). They are checked before the data is read.

    Returns
    -------
    dict of str to numpy.ndarray
        ``{layer name: sorted int64 indices of the neurons to delete}`` for every measured
        layer (possibly empty; never every neuron of a layer). Pass it, without the empty
        entries, to :func:`kerasprune.delete_neurons`.

    Raises
    ------
    PruneError, ValueError
        As :func:`get_apoz`, and for invalid selection parameters.

    Examples
    --------
    >>> dead = kerasprune.high_apoz(model, x_val)  # doctest: +SKIP
    >>> smaller = kerasprune.delete_neurons(model, {n: i for n, i in dead.items() if len(i)})
    ... # doctest: +SKIP
    """
    # Check the selection parameters on a dummy layer before the (long) measurement.
    core_apoz.select_high_apoz(np.array([0.0, 1.0]), method, k=k, cutoff=cutoff, fraction=fraction)
    report = _get_apoz(model, data, layers, batch_size, verbose, steps)
    return {name: core_apoz.select_high_apoz(values, method, k=k, cutoff=cutoff, fraction=fraction)
            for name, values in report.items()}
