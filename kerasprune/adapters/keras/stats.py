"""Activation and gradient statistics of a Keras model's neurons, in one streaming pass.

:func:`get_stats` measures what a data-driven importance criterion
(:mod:`kerasprune.core.criteria`) needs, for every layer at once, at the criterion's
measurement site (:meth:`~kerasprune.core.criteria.Criterion.site`: the end of the layer's
one-to-one channel chain, after its batch normalization and activation):

- ``"activation"``: :class:`~kerasprune.core.stats.ActivationStats`, the mean ``|a|`` of each
  channel;
- ``"taylor"``: :class:`~kerasprune.core.stats.TaylorStats`, per sample ``|mean over
  positions of a * dL/da|`` (Molchanov et al. 2017), with ``L`` the sum of the per-sample
  losses;
- ``"apoz"``: :class:`~kerasprune.core.apoz.ApozCounts`, counted by
  :mod:`kerasprune.adapters.keras.apoz`.

Memory is ``O(channels)`` however many samples: each batch is reduced on the backend to a
``(batch, channels)`` array per site, the host adds those rows up in float64 and counts
exactly in integers, and the result is a mergeable statistic
(:meth:`StatsReport.merge`). A short last batch is padded to the first batch's size (one
compilation) and its padding rows dropped.

How ``dL/da`` is obtained at an intermediate tensor without Keras internals: the
gradient model is a copy of the user's model (:func:`kerasprune.from_graph`, so the user's
layers never gain a call) replayed by ``keras.models.clone_model`` with a ``call_function``
that adds a zero *perturbation input* ``eps`` to every site's output, so that
``a' = a + eps`` feeds the rest of the network. At ``eps = 0`` the outputs are the model's
own, and ``dL/d eps = dL/da``: a gradient with respect to a model *input*, which every
backend's own autodiff takes directly (``tf.GradientTape`` on TensorFlow, ``jax.grad`` over
``model.stateless_call`` on JAX, ``torch.autograd.grad`` on torch), inside one compiled
step that also does the reductions. The alternative, a model that outputs the site
activations and re-applies the tail of the network from them, would need the graph cut at
every site, including the sites downstream of another site; the perturbation keeps the graph
whole and costs one element-wise add per site.

The model runs in inference mode (``training=False``: dropout off, batch normalization on
its moving statistics). Sample weights are not used.
"""

from __future__ import annotations

import gc
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from types import MappingProxyType
from typing import Any

import keras
import numpy as np
import numpy.typing as npt

from kerasprune.adapters.keras import apoz as keras_apoz
from kerasprune.adapters.keras import build, convert, distribute, refs
from kerasprune.adapters.keras import data as keras_data
from kerasprune.adapters.keras.apoz import BatchProgress, ProgressBar, Verbose
from kerasprune.adapters.keras.record import KerasGraph
from kerasprune.adapters.keras.refs import LayerRef
from kerasprune.core import apoz as core_apoz
from kerasprune.core.apoz import ApozCounts
from kerasprune.core.criteria import Criterion, criterion_for
from kerasprune.core.graph import PruneError
from kerasprune.core.groups import ChannelAnalysis, analyze_channels, split_part
from kerasprune.core.stats import ActivationStats, TaylorStats

__all__ = ["KINDS", "LossFunction", "StatsReport", "get_stats", "loss_function",
           "measure_stats", "readable_weights", "stats_kind"]

FloatArray = npt.NDArray[np.float64]

KINDS: dict[str, type] = {"apoz": ApozCounts, "activation": ActivationStats,
                          "taylor": TaylorStats}
"""The statistics kerasprune measures in Keras, by kind."""

_WHAT = {"apoz": "APoZ", "activation": "the mean activation",
         "taylor": "the Taylor importance"}


def stats_kind(criterion: Criterion) -> str | None:
    """Which statistics ``criterion`` reads (a key of :data:`KINDS`), ``None`` if none.

    Raises
    ------
    ValueError
        For a criterion whose statistics kerasprune cannot measure in Keras.
    """
    needed = criterion.stats_type
    if needed is None:
        return None
    for kind, cls in KINDS.items():
        if issubclass(needed, cls):
            return kind
    raise ValueError(f"criterion {criterion.name!r} reads {needed.__name__}, which kerasprune "
                     "cannot measure in Keras: measure it yourself and pass stats="
                     "{layer: statistics}")


def readable_weights(analysis: ChannelAnalysis, criterion: Criterion) -> ChannelAnalysis:
    """``analysis`` with weights the NumPy core can read for ``criterion``.

    On torch a weight is a tensor that requires grad, which NumPy cannot read: for a criterion
    that reads weights its graph gets host views of them (``detach().cpu()``, no copy on the
    CPU). The structure, and so the analysis, is unchanged. Other backends read as they are.
    """
    if criterion.needs != "weights" or keras.backend.backend() != "torch":
        return analysis
    graph = analysis.graph
    layers = {name: replace(spec, weights={k: keras.ops.convert_to_numpy(w)
                                           for k, w in spec.weights.items()})
              for name, spec in graph.layers.items()}
    return replace(analysis, graph=replace(graph, layers=layers))


# --------------------------------------------------------------------------------------------
# The result
# --------------------------------------------------------------------------------------------


class StatsReport(Mapping[str, Any]):
    """Statistics per measured layer: a read-only mapping ``{layer name: statistics}``.

    The values are :class:`~kerasprune.core.stats.ActivationStats`,
    :class:`~kerasprune.core.stats.TaylorStats` or :class:`~kerasprune.core.apoz.ApozCounts`
    (one kind per report), which :func:`kerasprune.core.plan.plan_pruning` and
    :func:`kerasprune.prune` take as ``stats``.

    Parameters
    ----------
    kind
        A key of :data:`KINDS`.
    stats
        The statistics by layer, in graph order.
    measured_at
        For each layer, the layer whose output was measured (the end of its channel chain:
        the ``ReLU`` of ``Conv -> BatchNormalization -> ReLU``).
    skipped
        Layers that could not be measured, with the reason.
    """

    __slots__ = ("_measured_at", "_skipped", "_stats", "kind")

    def __init__(self, kind: str, stats: Mapping[str, Any], measured_at: Mapping[str, str],
                 skipped: Mapping[str, str] | None = None) -> None:
        if kind not in KINDS:
            raise ValueError(f"unknown kind {kind!r}; valid: {', '.join(map(repr, KINDS))}")
        if list(stats) != list(measured_at):
            raise ValueError("stats and measured_at must name the same layers in one order")
        for name, value in stats.items():
            if not isinstance(value, KINDS[kind]):
                raise TypeError(f"stats[{name!r}] is a {type(value).__name__}, not "
                                f"{KINDS[kind].__name__}")
        self.kind = kind
        self._stats: Mapping[str, Any] = MappingProxyType(dict(stats))
        self._measured_at: Mapping[str, str] = MappingProxyType(dict(measured_at))
        self._skipped: Mapping[str, str] = MappingProxyType(dict(skipped or {}))

    @property
    def measured_at(self) -> Mapping[str, str]:
        """For each layer, the layer whose output was measured."""
        return self._measured_at

    @property
    def skipped(self) -> Mapping[str, str]:
        """Layers left out, with why."""
        return self._skipped

    def results(self) -> dict[str, FloatArray]:
        """Each layer's per-neuron values: mean ``|a|``, the Taylor importance, or APoZ."""
        return {name: value.result() for name, value in self._stats.items()}

    def merge(self, other: StatsReport) -> StatsReport:
        """Combine with the same statistics of other data (another shard or replica).

        Raises
        ------
        ValueError
            If the kinds or the measured layers differ.
        """
        if not isinstance(other, StatsReport) or other.kind != self.kind:
            raise ValueError("can only merge statistics of the same kind")
        if list(other) != list(self):
            raise ValueError(f"the reports measure different layers: {list(self)} and "
                             f"{list(other)}")
        merged = {name: value.merge(other[name]) for name, value in self._stats.items()}
        return StatsReport(self.kind, merged, self._measured_at, self._skipped)

    def __getitem__(self, layer: str) -> Any:
        return self._stats[layer]

    def __iter__(self) -> Iterator[str]:
        return iter(self._stats)

    def __len__(self) -> int:
        return len(self._stats)

    def __repr__(self) -> str:
        parts = [f"{name!r}: {value.channels} neurons"
                 + (f" (at {self._measured_at[name]!r})" if self._measured_at[name] != name
                    else "") for name, value in self._stats.items()]
        return f"StatsReport({self.kind!r}, {{" + ", ".join(parts) + "})"


# --------------------------------------------------------------------------------------------
# The loss
# --------------------------------------------------------------------------------------------


LossFunction = Callable[[Any, Sequence[Any]], Any]
"""``fn(labels, predictions) -> scalar``: the sum of every sample's loss, summed over the
model's outputs (``predictions`` is a list, one per output)."""


def _elementwise(spec: Any, where: str) -> Callable[[Any, Any], Any]:
    """A loss as a function of ``(y_true, y_pred)`` giving unreduced (per-sample) values."""
    if isinstance(spec, keras.losses.Loss):
        return spec.call  # type: ignore[no-any-return]
    if isinstance(spec, (str, dict)):
        try:
            found = keras.losses.get(spec)
        except (ValueError, TypeError) as err:
            raise ValueError(f"{where}: unknown loss {spec!r}: {err}") from None
        return _elementwise(found, where)
    if callable(spec):
        return spec  # type: ignore[no-any-return]
    raise TypeError(f"{where} must be a loss: a name, a keras.losses.Loss or a function "
                    f"(y_true, y_pred), got {spec!r}")


def loss_function(model: keras.Model, loss: Any = None, argument: str = "loss") -> LossFunction:
    """The summed loss the Taylor criterion differentiates.

    Parameters
    ----------
    model
        The model; its compiled loss is used when ``loss`` is ``None``.
    loss
        A loss for every output (a name, a ``keras.losses.Loss``, a function ``(y_true,
        y_pred)``), or a list (one per output, ``None`` for none) or a dict by output name.
    argument
        The argument's name, for messages.

    Returns
    -------
    LossFunction
        The sum over samples (and outputs) of the unreduced loss: its gradient with respect
        to one sample's activations is that sample's own loss gradient.

    Raises
    ------
    ValueError, TypeError
        Naming ``argument``: no loss (the model is not compiled), an unknown loss, a list of
        the wrong length or a dict naming no output.
    """
    spec = loss if loss is not None else getattr(model, "loss", None)
    if spec is None:
        raise ValueError(
            f"criterion 'taylor' differentiates a loss: model '{model.name}' is not compiled; "
            f"compile it or pass {argument}= (e.g. 'sparse_categorical_crossentropy')")
    names = list(getattr(model, "output_names", None) or
                 [f"output_{i}" for i in range(len(model.outputs))])
    n = len(model.outputs)
    per_output: list[Callable[[Any, Any], Any] | None]
    if isinstance(spec, Mapping) and not ("class_name" in spec and "config" in spec):
        unknown = [k for k in spec if k not in names]
        if unknown:
            raise ValueError(f"{argument} names outputs {unknown}; the model's outputs are "
                             f"{names}")
        per_output = [None if spec.get(name) is None else
                      _elementwise(spec[name], f"{argument}[{name!r}]") for name in names]
    elif isinstance(spec, (list, tuple)):
        if len(spec) != n:
            raise ValueError(f"{argument} has {len(spec)} losses for a model with {n} "
                             f"outputs {names}")
        per_output = [None if s is None else _elementwise(s, f"{argument}[{i}]")
                      for i, s in enumerate(spec)]
    else:
        one = _elementwise(spec, argument)
        per_output = [one] * n
    if all(fn is None for fn in per_output):
        raise ValueError(f"{argument} gives no loss for any output")

    def total(y: Any, predictions: Sequence[Any]) -> Any:
        labels = _labels(y, names)
        out: Any = 0.0
        for fn, label, pred in zip(per_output, labels, predictions, strict=True):
            if fn is not None:
                out = out + keras.ops.sum(keras.ops.cast(fn(label, pred), "float32"))
        return out

    return total


def _labels(y: Any, names: Sequence[str]) -> list[Any]:
    """The labels of each output, in output order."""
    if len(names) == 1:
        return [y]
    if isinstance(y, Mapping):
        return [y.get(name) for name in names]
    if isinstance(y, (list, tuple)) and len(y) == len(names):
        return list(y)
    raise ValueError(f"the labels of a model with {len(names)} outputs {list(names)} must be a "
                     "list with one array per output or a dict by output name")


# --------------------------------------------------------------------------------------------
# Sites
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Site:
    layer: str  # whose output is read
    axis: int  # channel axis, without the batch axis
    channels: int


def _candidates(analysis: ChannelAnalysis) -> list[str]:
    """Every member of every group with a deletable slot."""
    return [m.layer for g in analysis.groups if g.prunable for m in g.members]


def _sites(kg: KerasGraph, analysis: ChannelAnalysis, criterion: Criterion,
           names: Sequence[str], strict: bool) -> tuple[dict[str, _Site], dict[str, str]]:
    """Where each layer is measured, and why the others cannot be (``strict``: raise)."""
    sites: dict[str, _Site] = {}
    skipped: dict[str, str] = {}
    for name in dict.fromkeys(names):
        layer, part = split_part(name)
        if part is not None:  # heads: measured on their outputs, inside an unrolled block
            if _inside_block(kg, layer):
                sites[name] = _Site(name, 1, analysis.group_of(name).width)
                continue
            refusal = (f"cannot measure the {part} of layer '{layer}': they are measured "
                       "inside a transformer block (a layer with a Composite rule) only; use a "
                       "weight criterion ('l1', 'l2') for them")
            if strict:
                raise PruneError(refusal)
            skipped[name] = refusal
            continue
        try:
            step = criterion.site(analysis, name)
            assert step is not None
            why = None if _inside_block(kg, step.layer) else keras_apoz.unreadable(
                kg, step.layer)
            if why is not None:
                raise PruneError(f"cannot measure layer '{name}' at '{step.layer}': {why}")
        except PruneError as err:
            if strict:
                raise
            skipped[name] = str(err)
            continue
        sites[name] = _Site(step.layer, step.axis,
                            int(kg.graph.shapes[step.tensor][step.axis]))
    return sites, skipped


def _inside_block(kg: KerasGraph, layer: str) -> bool:
    """Whether ``layer`` (or the layer of a part, ``layer:heads``) is a sublayer of a
    containing layer (a transformer block)."""
    layer = split_part(layer)[0]
    return layer not in kg.walk.live and kg.expansion is not None and any(
        layer in members.values() for members in kg.expansion.blocks.values())


def _unrolled(model: keras.Model, kg: KerasGraph, sites: dict[str, _Site],
              skipped: dict[str, str], strict: bool
              ) -> tuple[keras.Model, KerasGraph, dict[str, _Site]]:
    """Sites inside containing layers are read on the model with the blocks unrolled
    (:func:`~.build.unrolled`): the same function, its sublayers as layers of their own."""
    if not any(_inside_block(kg, s.layer) for s in sites.values()):
        return model, kg, sites
    try:
        flat, names = build.unrolled(kg)
    except PruneError as err:
        if strict:
            raise
        inside = [n for n, s in sites.items() if _inside_block(kg, s.layer)]
        skipped.update({n: str(err) for n in inside})
        return model, kg, {n: s for n, s in sites.items() if n not in inside}
    flat_kg = convert.to_graph(flat)
    return flat, flat_kg, {n: replace(s, layer=names.get(s.layer, s.layer))
                           for n, s in sites.items()}


def _apoz_names(kg: KerasGraph, names: Sequence[str],
                strict: bool) -> tuple[list[str], dict[str, str]]:
    """The layers whose APoZ can be counted, and why not for the others."""
    check = keras_apoz.site_check(kg)
    ok: list[str] = []
    skipped: dict[str, str] = {}
    for name in dict.fromkeys(names):
        try:
            site = core_apoz.measurement_site(kg.graph, name)
            why = check(kg.graph, site)
            if why is not None:
                raise PruneError(f"cannot measure the APoZ of layer '{name}' at "
                                 f"'{site.layer}': {why}")
        except PruneError as err:
            if strict:
                raise
            skipped[name] = str(err)
            continue
        ok.append(name)
    return ok, skipped


def _unique(taken: set[str], base: str) -> str:
    name = base
    while name in taken:
        name += "_"
    taken.add(name)
    return name


# --------------------------------------------------------------------------------------------
# Activations: reduced inside the forward pass
# --------------------------------------------------------------------------------------------


class _AbsSums(keras.layers.Layer):  # type: ignore[misc]
    """``(batch, C + 1)`` float32 per sample: the sum of ``|a|`` of each of the C channels
    over the positions, then the number of positions."""

    def __init__(self, axis: int, **kwargs: Any) -> None:
        super().__init__(trainable=False, autocast=False, **kwargs)
        self.axis = axis  # the channel axis, counting the batch axis

    def call(self, x: Any) -> Any:
        ops = keras.ops
        x = ops.cast(x, "float32")
        spatial = tuple(a for a in range(1, len(x.shape)) if a != self.axis)
        sums = ops.sum(ops.abs(x), axis=spatial) if spatial else ops.abs(x)
        shape = ops.shape(x)
        positions: Any = 1
        for a in spatial:
            positions = positions * shape[a]
        return ops.concatenate([sums, ops.ones_like(sums[:, :1]) * ops.cast(positions,
                                                                              "float32")],
                               axis=1)

    def compute_output_shape(self, input_shape: Any) -> tuple[Any, ...]:
        channels = input_shape[self.axis]
        return (input_shape[0], None if channels is None else channels + 1)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "axis": self.axis}


def _activation_pass(model: keras.Model, kg: KerasGraph, sites: Sequence[_Site],
                     source: keras_data.Source, progress: BatchProgress | None,
                     run: distribute.Runner) -> tuple[list[FloatArray], list[int]]:
    """Per site: the float64 sums of ``|a|`` per channel, and the values per channel."""
    taken = {layer.name for layer in model.layers}
    outputs = [_AbsSums(s.axis + 1, name=_unique(taken, f"kerasprune_abs_sums_{i}"))(
        kg.walk.live[s.layer].output) for i, s in enumerate(sites)]
    with run.placement.scope():
        measuring = keras.Model(keras_data.model_input(model), outputs,
                                name=f"{model.name}_activations")

    def add(share: keras_data.Source) -> distribute.Pass:
        sums = [np.zeros(s.channels) for s in sites]
        counts = np.zeros(len(sites), dtype=np.int64)
        samples = width = 0
        for step, x in _batches(share, progress, "the mean activation"):
            rows = keras_data.batch_rows(x)
            if rows == 0:
                continue
            if rows < width:
                x = keras_data.pad_batch(x, width)
            width = max(width, rows)
            for j, part in enumerate(run.predict(measuring, x)):
                values = np.asarray(part, dtype=np.float64)[:rows]
                c = sites[j].channels
                _finite(values[:, :c], sites[j].layer, step, share)
                sums[j] += values[:, :c].sum(axis=0)
                counts[j] += int(values[:, c].sum())
            samples += rows
        return [*sums, counts], samples

    merged, _ = run.gather(source, add)
    return merged[:-1], [int(c) for c in merged[-1]]


def _batches(source: keras_data.Source, progress: BatchProgress | None,
             statistic: str, labels: bool = False) -> Iterator[tuple[int, Any]]:
    """``(step, batch)`` from 1, inputs checked for NaN (an empty pass is the caller's to
    refuse: on several workers, one worker's share may be empty)."""
    step = 0
    batches: Iterable[Any] = source.labelled_batches() if labels else source.input_batches()
    for step, batch in enumerate(batches, 1):
        keras_apoz.check_nan_inputs(batch[0] if labels else batch, source, step, statistic)
        yield step, batch
        if progress is not None:
            progress.update(step)
    if progress is not None and step:
        progress.finish(step)


def _finite(values: FloatArray, layer: str, step: int, source: keras_data.Source) -> None:
    bad = int(np.count_nonzero(~np.isfinite(values).all(axis=tuple(range(1, values.ndim)))))
    if bad:
        raise ValueError(
            f"the statistics of layer '{layer}' are NaN or infinite for {bad} of the "
            f"{len(values)} samples of batch {step} of {source.name}, with finite data and "
            "weights: the network makes them (an overflow?)")


# --------------------------------------------------------------------------------------------
# Gradients: a perturbation input at every site
# --------------------------------------------------------------------------------------------


def _taylor(sites: Sequence[Any], grads: Sequence[Any], axes: Sequence[int]) -> list[Any]:
    """Per site, ``(batch, C)`` float32: ``|mean over positions of a * dL/da|``."""
    ops = keras.ops
    out = []
    for a, g, axis in zip(sites, grads, axes, strict=True):
        a = ops.cast(a, "float32")
        g = ops.zeros_like(a) if g is None else ops.cast(g, "float32")
        spatial = tuple(i for i in range(1, len(a.shape)) if i != axis)
        out.append(ops.abs(ops.mean(a * g, axis=spatial) if spatial else a * g))
    return out


class _GradientPass:
    """The perturbed measuring model of a copy of the model, and one compiled step."""

    def __init__(self, kg: KerasGraph, sites: Sequence[_Site], loss: LossFunction) -> None:
        copy = build.from_graph(kg, kg.graph)
        taken = {layer.name for layer in copy.layers}
        n = len(sites)
        site_layers = [copy.get_layer(s.layer) for s in sites]
        outs = [layer.output for layer in site_layers]
        eps = [keras.Input(batch_shape=tuple(t.shape), dtype=t.dtype,
                           name=_unique(taken, f"kerasprune_eps_{i}"))
               for i, t in enumerate(outs)]
        keep = [keras.layers.Identity(name=_unique(taken, f"kerasprune_keep_{i}"))(e)
                for i, e in enumerate(eps)]
        inputs = list(copy.inputs)
        wrapper = keras.Model([*inputs, *eps], [*copy.outputs, *keep])
        x_new = [keras.Input(batch_shape=tuple(t.shape), dtype=t.dtype, name=t.name)
                 for t in inputs]
        e_new = [keras.Input(batch_shape=tuple(t.shape), dtype=t.dtype, name=t.name)
                 for t in eps]
        index = {id(layer): i for i, layer in enumerate(site_layers)}
        adds = [_unique(taken, f"kerasprune_perturb_{i}") for i in range(n)]
        recorded: dict[int, Any] = {}

        def call(layer: Any, *args: Any, **kwargs: Any) -> Any:
            out = layer(*args, **kwargs)
            i = index.get(id(layer))
            if i is not None:
                out = keras.layers.Add(name=adds[i])([out, e_new[i]])
                recorded[i] = out
            return out

        clone = keras.models.clone_model(wrapper, input_tensors=[*x_new, *e_new],
                                         clone_function=lambda layer: layer,
                                         call_function=call)
        n_out = len(copy.outputs)
        self.model = keras.Model([*x_new, *e_new],
                                 [recorded[i] for i in range(n)] + list(clone.outputs[:n_out]),
                                 name=f"{kg.model.name}_gradients")
        self.sites = list(sites)
        self.loss = loss
        self.axes = [s.axis + 1 for s in sites]
        self.specs = [(tuple(t.shape[1:]), str(t.dtype)) for t in eps]
        self.shape_model = keras.Model(inputs, outs)
        self._shapes: dict[tuple[Any, ...], tuple[tuple[int, ...], ...]] = {}
        self._step: Any = None

    def shapes(self, xs: Sequence[Any]) -> tuple[tuple[int, ...], ...]:
        """The shape of each site's activations for inputs ``xs``."""
        key = tuple(tuple(int(d) for d in x.shape) for x in xs)
        if key not in self._shapes:
            rows = key[0][0]
            if all(d is not None for shape, _ in self.specs for d in shape):
                found = tuple((rows, *(int(d) for d in shape)) for shape, _ in self.specs)
            else:
                spec = self.shape_model.compute_output_spec(
                    [keras.KerasTensor(k, dtype=str(x.dtype)) for k, x in zip(key, xs,
                                                                             strict=True)])
                spec = spec if isinstance(spec, (list, tuple)) else [spec]
                found = tuple(tuple(int(d) for d in s.shape) for s in spec)
            self._shapes[key] = found
        return self._shapes[key]

    def forward(self, xs: Sequence[Any], y: Any, eps: Sequence[Any]) -> tuple[Any, list[Any]]:
        outs = self.model([*xs, *eps], training=False)
        n = len(self.sites)
        return self.loss(y, outs[n:]), list(outs[:n])

    def __call__(self, xs: Sequence[Any], y: Any) -> tuple[float, list[Any]]:
        """The batch's summed loss, and per site the ``(batch, C)`` Taylor terms."""
        shapes = self.shapes(xs)
        backend = keras.backend.backend()
        if self._step is None:
            self._step = {"tensorflow": self._tensorflow, "jax": self._jax,
                          "torch": self._torch}.get(backend, self._unsupported)()
        loss, rows = self._step(xs, y, shapes)
        return float(keras.ops.convert_to_numpy(loss)), [
            np.asarray(keras.ops.convert_to_numpy(r)) for r in rows]

    def _zeros(self, shapes: Sequence[tuple[int, ...]]) -> list[Any]:
        return [keras.ops.zeros(s, dtype=d) for s, (_, d) in zip(shapes, self.specs,
                                                                  strict=True)]

    def _unsupported(self) -> Any:
        raise PruneError(f"gradients on the {keras.backend.backend()} backend are not "
                         "supported; use TensorFlow, JAX or torch")

    def _tensorflow(self) -> Any:
        import tensorflow as tf

        @tf.function  # type: ignore[untyped-decorator]
        def step(xs: Any, y: Any, shapes: Any) -> Any:
            eps = self._zeros(shapes)
            with tf.GradientTape() as tape:
                tape.watch(eps)
                loss, sites = self.forward(xs, y, eps)
            grads = tape.gradient(loss, eps)
            return loss, _taylor(sites, grads, self.axes)

        def run(xs: Any, y: Any, shapes: Any) -> Any:
            convert = keras.ops.convert_to_tensor
            return step([convert(x) for x in xs], keras_data.map_arrays(convert, y), shapes)

        return run

    def _jax(self) -> Any:
        import jax

        model = self.model
        n = len(self.sites)

        def step(trainable: Any, frozen: Any, xs: Any, y: Any, shapes: Any) -> Any:
            def loss_of(eps: Any) -> Any:
                outs, _ = model.stateless_call(trainable, frozen, [*xs, *eps], training=False)
                return self.loss(y, outs[n:]), outs[:n]

            (loss, sites), grads = jax.value_and_grad(loss_of, has_aux=True)(
                self._zeros(shapes))
            return loss, _taylor(sites, grads, self.axes)

        compiled = jax.jit(step, static_argnums=4)

        def run(xs: Any, y: Any, shapes: Any) -> Any:
            return compiled([v.value for v in model.trainable_variables],
                            [v.value for v in model.non_trainable_variables], list(xs), y,
                            shapes)

        return run

    def _torch(self) -> Any:
        import torch

        def run(xs: Any, y: Any, shapes: Any) -> Any:
            convert = keras.ops.convert_to_tensor
            eps = [e.requires_grad_(True) for e in self._zeros(shapes)]
            with torch.enable_grad():
                loss, sites = self.forward([convert(x) for x in xs],
                                           keras_data.map_arrays(convert, y), eps)
                grads = torch.autograd.grad(loss, eps, allow_unused=True)
            with torch.no_grad():
                out = loss.detach(), _taylor([s.detach() for s in sites], grads, self.axes)
            # Keras' torch backend leaves each call's tensors in reference cycles, here with
            # the autograd graph and every activation it saved: left to the collector, dozens
            # of batches' worth pile up (+93 MiB at 20,480 images, benchmarks/memory.py);
            # collecting the young generations frees them now, for ~0.03 ms a batch
            del loss, sites, grads, eps
            gc.collect(1)
            return out

        return run


def _gradient_pass(kg: KerasGraph, sites: Sequence[_Site], source: keras_data.Source,
                   loss: LossFunction, progress: BatchProgress | None, run: distribute.Runner,
                   ) -> tuple[list[FloatArray], int]:
    """Per site, the float64 sums of the per-sample Taylor terms; and the number of
    samples."""
    with run.placement.scope():
        measuring = _GradientPass(kg, sites, loss)

    def add(share: keras_data.Source) -> distribute.Pass:
        taylor = [np.zeros(s.channels) for s in sites]
        samples = width = 0
        for step, (x, y) in _batches(share, progress, "the Taylor importance", labels=True):
            rows = keras_data.batch_rows(x)
            if rows == 0:
                continue
            if rows < width:
                x, y = keras_data.pad_batch(x, width), keras_data.pad_batch(y, width)
            width = max(width, rows)
            try:
                value, out = measuring(keras_data.leaves(x), y)
            except PruneError:
                raise
            except Exception as err:
                if step > 1:
                    raise
                raise ValueError(f"{share.name}: computing the loss and its gradients on the "
                                 f"first batch failed (do the labels fit the loss?): "
                                 f"{type(err).__name__}: {err}") from err
            if not np.isfinite(value):
                raise ValueError(f"the loss is {value} on batch {step} of {share.name}: the "
                                 "Taylor importance is undefined")
            for j, (site, values) in enumerate(zip(sites, out, strict=True)):
                values = np.asarray(values, dtype=np.float64)[:rows]
                _finite(values, site.layer, step, share)
                taylor[j] += values.sum(axis=0)
            samples += rows
        return taylor, samples

    return run.gather(source, add)


# --------------------------------------------------------------------------------------------
# Public functions
# --------------------------------------------------------------------------------------------


def measure_stats(model: keras.Model, source: keras_data.Source, criterion: Criterion,
                  layers: Sequence[str] | None = None, *, kg: KerasGraph | None = None,
                  analysis: ChannelAnalysis | None = None, loss: LossFunction | None = None,
                  progress: BatchProgress | None = None, strict: bool = True) -> StatsReport:
    """The statistics ``criterion`` reads, for ``layers`` (graph names; ``None``: every
    layer that can lose neurons), over a checked data source: :func:`get_stats`'s pass.

    With ``strict=False`` (and always for ``layers=None``) layers that cannot be measured
    are left out, with the reason in :attr:`StatsReport.skipped`.
    """
    kind = stats_kind(criterion)
    if kind is None:
        raise ValueError(f"criterion {criterion.name!r} reads no data (it needs "
                         f"{criterion.needs}); measure statistics for 'apoz', 'activation' "
                         "or 'taylor'")
    kg = kg if kg is not None else convert.to_graph(model)
    analysis = analysis if analysis is not None else analyze_channels(kg.graph)
    strict = strict and layers is not None
    names = list(layers) if layers is not None else _candidates(analysis)
    keras_apoz.check_weights(model, _WHAT[kind])
    run = distribute.runner(model)
    if kind == "apoz":
        ok, skipped = _apoz_names(kg, names, strict)
        if not ok:
            raise PruneError(_none_measurable(skipped))
        report = keras_apoz.measure(model, source, ok, progress)
        return StatsReport("apoz", report.counts, report.measured_at, skipped)
    sites, skipped = _sites(kg, analysis, criterion, names, strict)
    measured_at = {name: s.layer for name, s in sites.items()}
    model, kg, sites = _unrolled(model, kg, sites, skipped, strict)
    if not sites:
        raise PruneError(_none_measurable(skipped))
    unique = list({s.layer: s for s in sites.values()}.values())
    where = {s.layer: i for i, s in enumerate(unique)}
    stats: dict[str, Any] = {}
    if kind == "activation":
        sums, counts = _activation_pass(model, kg, unique, source, progress, run)
        _refuse_empty(source, sum(counts))
        for name, s in sites.items():
            j = where[s.layer]
            stats[name] = ActivationStats(sums[j], counts[j])
    else:
        if loss is None:
            loss = loss_function(model)
        taylor, samples = _gradient_pass(kg, unique, source, loss, progress, run)
        _refuse_empty(source, samples)
        for name, s in sites.items():
            stats[name] = TaylorStats(taylor[where[s.layer]], samples)
    return StatsReport(kind, stats, {name: measured_at[name] for name in sites}, skipped)


def _refuse_empty(source: keras_data.Source, samples: int) -> None:
    if samples == 0:
        raise ValueError(f"{source.name} is empty: there are no samples to measure")


def _none_measurable(skipped: Mapping[str, str]) -> str:
    return "no layer of the model can be measured:\n" + "\n".join(
        f"- {why}" for why in skipped.values())


def get_stats(model: keras.Model, data: Any, criterion: str | Criterion = "activation",
              layers: LayerRef | Iterable[LayerRef] | None = None, *, loss: Any = None,
              batch_size: int = 32, steps: int | None = None,
              verbose: Verbose = "auto") -> StatsReport:
    """Measure the statistics a data-driven criterion needs, for every layer in one pass.

    Parameters
    ----------
    model
        A built Sequential or functional Keras model. It is only read: the gradient pass
        runs on a copy.
    data
        As :func:`kerasprune.get_apoz` takes it: arrays, ``(x, y)``, a ``tf.data.Dataset``,
        a ``keras.utils.PyDataset``, a generator... ``"taylor"`` needs labels (``(x, y)``);
        the others ignore them. Checked against the model before anything runs.
    criterion
        ``"activation"`` (mean ``|a|``), ``"taylor"`` (``|a dL/da|``), ``"apoz"``, or a
        :class:`~kerasprune.core.criteria.Criterion` that reads one of them.
    layers
        Layers to measure (names, indices or objects); ``None``: every layer whose neurons
        can be deleted, leaving out those that cannot be measured (see
        :attr:`StatsReport.skipped`).
    loss
        For ``"taylor"``: the loss to differentiate (a name, a ``keras.losses.Loss``, a
        function, or a list/dict per output); ``None``: the model's compiled loss. Each
        sample's loss counts in full (the sum over the batch, not the mean).
    batch_size
        Samples per batch for in-memory arrays.
    steps
        Measure at most this many batches (required for data that repeats forever).
    verbose
        0, 1, 2 or ``"auto"``, as :func:`kerasprune.get_apoz`.

    Returns
    -------
    StatsReport
        ``{layer: statistics}``, to pass to :func:`kerasprune.prune` or
        :func:`kerasprune.core.plan.plan_pruning` as ``stats``.

    Raises
    ------
    ValueError, TypeError
        An unknown criterion or one that reads no data, data that does not fit the model
        or has no labels for ``"taylor"``, no loss for ``"taylor"``, NaN in the data, the
        weights or the statistics; each naming the argument.
    PruneError
        A named layer that cannot be measured (why), or no layer at all.

    Examples
    --------
    >>> stats = kerasprune.get_stats(model, (x_val, y_val), "taylor")  # doctest: +SKIP
    >>> plan = kerasprune.prune(model, flops=0.5, criterion="taylor", stats=stats,
    ...                         dry_run=True)  # doctest: +SKIP
    """
    keras_apoz.check_args(batch_size, verbose, steps)
    chosen = criterion_for(criterion)
    kind = stats_kind(chosen)
    if kind is None:
        raise ValueError(f"criterion {chosen.name!r} reads no data (it needs {chosen.needs}); "
                         "get_stats measures 'apoz', 'activation' or 'taylor'")
    kg = convert.to_graph(model)
    names = refs.layer_names(kg, layers)
    fn = loss_function(model, loss) if kind == "taylor" else None
    # on several workers, data refused on one of them stops every one
    source = distribute.runner(model).together(lambda: keras_data.read(
        data, model, name="data", labels=kind == "taylor", reiterable=False,
        batch_size=batch_size, steps=steps))
    return measure_stats(model, source, chosen, names, kg=kg, loss=fn,
                         progress=ProgressBar(verbose, source.batches))
