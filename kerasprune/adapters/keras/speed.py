"""Measured latency of Keras models, and the measured speed-up of a pruned model.

A pruned model's gain is its measured time beside its FLOPs. :func:`measure_latency` times one
model the ways it will run, and :func:`speedup` times an original and a pruned model
interleaved (original, pruned, original, pruned...: load on a shared machine slows both alike)
and reports the measured speed-up beside the FLOP and parameter ratios.

What is timed (a *runner* each; :data:`RUNNERS` is the registry):

``predict``
    ``model.predict(x, batch_size=len(x), verbose=0)``: Keras' own inference loop, with its
    per-call overhead (a data pipeline made per call: on TensorFlow a ``tf.data`` dataset and
    iterator, milliseconds to tens of milliseconds, which dwarfs a small model's compute).
``predict_on_batch``
    ``model.predict_on_batch(x)``: the same compiled predict step, without the pipeline.
``compiled``
    A direct compiled call, the backend's fast path for inference:
    TensorFlow: ``tf.function`` of ``model(x, training=False)`` (a graph, Grappler and oneDNN,
    no XLA; on CPU it is faster than XLA, much faster for depthwise convolutions, see
    ``xla``); JAX: ``jax.jit`` of ``model.stateless_call`` with the variables as arguments;
    torch: ``model(x, training=False)`` eagerly under ``torch.inference_mode()`` (torch's
    usual inference path; ``torch_compile`` compiles it).
``xla``
    TensorFlow only: the same ``tf.function`` with ``jit_compile=True`` (on JAX, ``compiled``
    is XLA already).
``torch_compile``
    torch only: ``torch.compile`` of the same call (compiling takes minutes on a CPU).
``tflite``
    The model converted by TensorFlow's converter (``tf.lite.TFLiteConverter`` from a
    SavedModel written by ``keras.export.ExportArchive``; float32, no quantization) and run by
    LiteRT's interpreter (``ai_edge_litert.interpreter.Interpreter``, XNNPACK, one interpreter
    per batch size, every CPU the process may use). On a backend other than TensorFlow the
    model is saved as ``.keras`` and converted in a fresh Python process with the TensorFlow
    backend (Keras' backend is fixed per process). Its outputs are checked against Keras'
    before it is timed.

Every call ends with its outputs as NumPy arrays on the host (so asynchronous backends have
finished). Method: a first call per runner and batch size, outside any timing, compiles and
checks the outputs against a direct ``model(x, training=False)`` call; ``warmup - 1`` more
untimed calls follow, and one that sets ``number``; then ``repeats`` timed blocks of
``number`` back-to-back calls each (``number`` chosen so that a block lasts at least
``min_time``; garbage collection off inside a block, as :mod:`timeit` does), reported as the
median and quartiles of the per-call time.
"""

from __future__ import annotations

import gc
import importlib.util
import math
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeVar, Union

import keras
import numpy as np
import numpy.typing as npt

from kerasprune.adapters.keras import surgery
from kerasprune.core import cost
from kerasprune.core.graph import PruneError

__all__ = [
    "RUNNERS",
    "LatencyReport",
    "Prepared",
    "Runner",
    "SpeedupReport",
    "SpeedupRow",
    "TfliteError",
    "Timing",
    "measure_latency",
    "register_runner",
    "speedup",
    "to_tflite",
]

Array = npt.NDArray[Any]
Inputs = list[Array]
"""A model's inputs, one array per model input, in ``model.inputs`` order."""
TfliteMode = Union[bool, Literal["auto"]]

DEFAULT_BATCH_SIZES = (1, 32)
DEFAULT_RUNNERS = ("predict", "predict_on_batch", "compiled")
TFLITE_RTOL = 1e-4
"""TFLite's outputs must match Keras' within ``TFLITE_ATOL + TFLITE_RTOL * max|Keras output|``
(float32 results of a differently ordered computation, XNNPACK's fused kernels)."""
TFLITE_ATOL = 1e-5
_CONVERT_TIMEOUT = 1800.0
"""Seconds a TensorFlow process may take to convert a model (large models take minutes)."""


class TfliteError(RuntimeError):
    """The model could not be converted to TFLite, or TFLite's outputs differ from Keras'."""


# --------------------------------------------------------------------------------------------
# Results
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Timing:
    """The time of one runner at one batch size.

    Attributes
    ----------
    runner : str
        The runner's name (``"predict"``, ``"compiled"``, ``"xla"``, ``"tflite"``...).
    batch_size : int
        Samples per call.
    number : int
        Calls per timed block.
    samples : tuple of float
        Seconds per call of each timed block (one per repeat), in the order they ran.
    median, q1, q3 : float
        Median, first and third quartile of ``samples``, seconds per call.
    max_abs_diff : float
        Largest absolute difference between this runner's outputs and a direct
        ``model(x, training=False)`` call on the same inputs (the first call's).
    output_shapes : tuple of tuple of int
        Shape of each output of that first call (the batch size comes first).
    """

    runner: str
    batch_size: int
    number: int
    samples: tuple[float, ...]
    median: float
    q1: float
    q3: float
    max_abs_diff: float
    output_shapes: tuple[tuple[int, ...], ...]

    @classmethod
    def of(cls, runner: str, batch_size: int, number: int, samples: Sequence[float],
           max_abs_diff: float, output_shapes: Sequence[tuple[int, ...]]) -> Timing:
        """A timing from its per-call samples (quartiles by :func:`statistics.quantiles`)."""
        s = tuple(float(v) for v in samples)
        q1, _, q3 = statistics.quantiles(s, n=4, method="inclusive") if len(s) > 1 else s * 3
        return cls(runner, batch_size, number, s, float(statistics.median(s)), float(q1),
                   float(q3), max_abs_diff, tuple(output_shapes))

    @property
    def per_sample(self) -> float:
        """Median seconds per sample (``median / batch_size``)."""
        return self.median / self.batch_size

    @property
    def spread(self) -> float:
        """Interquartile range of the per-call seconds, relative to the median."""
        return (self.q3 - self.q1) / self.median if self.median > 0 else 0.0


@dataclass(frozen=True)
class LatencyReport:
    """What :func:`measure_latency` returns: the time of every runner at every batch size.

    Attributes
    ----------
    model : str
        The model's name.
    backend : str
        Keras' backend.
    batch_sizes : tuple of int
        The batch sizes timed.
    repeats : int
        Timed blocks per runner and batch size.
    timings : tuple of Timing
        One per runner and batch size, runner by runner.
    paths : Mapping[str, str]
        For each runner timed, what exactly was called.
    skipped : Mapping[str, str]
        Runners not timed (TFLite with ``tflite="auto"``), with the reason.
    params, flops : int or None
        Parameters and FLOPs of one sample's forward pass (:func:`kerasprune.count`); None if
        kerasprune cannot count the model (the reason is in ``skipped["count"]``).
    """

    model: str
    backend: str
    batch_sizes: tuple[int, ...]
    repeats: int
    timings: tuple[Timing, ...]
    paths: Mapping[str, str] = field(default_factory=dict)
    skipped: Mapping[str, str] = field(default_factory=dict)
    params: int | None = None
    flops: int | None = None

    @property
    def runners(self) -> tuple[str, ...]:
        """The runners timed, in order."""
        return tuple(dict.fromkeys(t.runner for t in self.timings))

    def timing(self, runner: str, batch_size: int) -> Timing:
        """The timing of ``runner`` at ``batch_size``.

        Raises
        ------
        KeyError
            If that runner or batch size was not timed (naming what was).
        """
        return _find(self.timings, runner, batch_size, self)

    def table(self) -> str:
        """A plain-text table: per runner and batch size, ms per call and per sample."""
        head = (f"latency of '{self.model}' (backend {self.backend}; median of {self.repeats} "
                "timed blocks, quartiles in brackets)")
        if self.flops is not None:
            head += f"\nFLOPs {_human(self.flops)}, params {_human(self.params or 0)}"
        rows = [("runner", "batch", "ms/call", "ms/sample", "max |diff|")]
        rows += [(t.runner, str(t.batch_size), _ms(t), f"{1e3 * t.per_sample:.4g}",
                  f"{t.max_abs_diff:.1e}") for t in self.timings]
        return "\n".join([head, "", _grid(rows), *_notes(self.paths, self.skipped)])

    def __str__(self) -> str:
        return self.table()


@dataclass(frozen=True)
class SpeedupRow:
    """The pruned model against the original for one runner at one batch size.

    Attributes
    ----------
    runner : str
    batch_size : int
    original, pruned : Timing
    speedup : float
        ``original.median / pruned.median``: how many times faster the pruned model runs.
    efficiency : float or None
        ``speedup / flop_ratio``: the share of the FLOP reduction that became speed
        (1.0: time fell as much as FLOPs did). None when FLOPs could not be counted.
    """

    runner: str
    batch_size: int
    original: Timing
    pruned: Timing
    speedup: float
    efficiency: float | None


@dataclass(frozen=True)
class SpeedupReport:
    """What :func:`speedup` returns: the measured speed-up beside the FLOP and params ratios.

    Attributes
    ----------
    original, pruned : LatencyReport
        Each model's timings (taken interleaved).
    flop_ratio, params_ratio : float or None
        ``original / pruned`` FLOPs and parameters (2.0: half the FLOPs); None when
        kerasprune cannot count one of the models.
    rows : tuple of SpeedupRow
        One per runner and batch size.
    skipped : Mapping[str, str]
        Runners not timed, with the reason.
    """

    original: LatencyReport
    pruned: LatencyReport
    flop_ratio: float | None
    params_ratio: float | None
    rows: tuple[SpeedupRow, ...]
    skipped: Mapping[str, str] = field(default_factory=dict)

    def row(self, runner: str, batch_size: int) -> SpeedupRow:
        """The row of ``runner`` at ``batch_size``.

        Raises
        ------
        KeyError
            If that runner or batch size was not timed.
        """
        return _find(self.rows, runner, batch_size, self.original)

    def table(self) -> str:
        """A plain-text table of both models' times, the speed-up and its FLOP share."""
        o, p = self.original, self.pruned
        head = [f"speed-up of pruned '{p.model}' over original '{o.model}' (backend "
                f"{o.backend}; interleaved, median of {o.repeats} timed blocks, quartiles in "
                "brackets)"]
        if self.flop_ratio is not None and self.params_ratio is not None:
            head.append(f"FLOPs {_human(o.flops or 0)} -> {_human(p.flops or 0)} "
                        f"({self.flop_ratio:.2f}x fewer); params {_human(o.params or 0)} -> "
                        f"{_human(p.params or 0)} ({self.params_ratio:.2f}x fewer)")
        rows = [("runner", "batch", "original ms/call", "pruned ms/call", "speed-up",
                 "/ FLOP ratio")]
        rows += [(r.runner, str(r.batch_size), _ms(r.original), _ms(r.pruned),
                  f"{r.speedup:.2f}x", "n/a" if r.efficiency is None else f"{r.efficiency:.2f}")
                 for r in self.rows]
        return "\n".join([*head, "", _grid(rows), *_notes(o.paths, self.skipped)])

    def __str__(self) -> str:
        return self.table()


_Cell = TypeVar("_Cell", Timing, SpeedupRow)


def _find(cells: Sequence[_Cell], runner: str, batch_size: int,
          report: LatencyReport) -> _Cell:
    for cell in cells:
        if cell.runner == runner and cell.batch_size == batch_size:
            return cell
    raise KeyError(f"nothing for runner {runner!r} at batch size {batch_size}: timed "
                   f"{list(report.runners)} at {list(report.batch_sizes)}")


def _ms(t: Timing) -> str:
    return f"{1e3 * t.median:.4g} ({1e3 * t.q1:.4g}-{1e3 * t.q3:.4g})"


def _human(n: float) -> str:
    for unit, size in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(n) >= size:
            return f"{n / size:.2f}{unit}"
    return f"{n:.0f}"


def _grid(rows: Sequence[Sequence[str]]) -> str:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(c.rjust(w) if i > 1 else c.ljust(w)
                       for i, (c, w) in enumerate(zip(row, widths, strict=True))).rstrip()
             for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _notes(paths: Mapping[str, str], skipped: Mapping[str, str]) -> list[str]:
    lines = [""] + [f"{name}: {path}" for name, path in paths.items()]
    lines += [f"skipped {name}: {why}" for name, why in skipped.items()]
    return lines


# --------------------------------------------------------------------------------------------
# Runners: one small object per way of running a model
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Prepared:
    """A runner made ready for one model: a zero-argument call per batch size.

    Attributes
    ----------
    calls : Mapping[int, Callable[[], Any]]
        For each batch size, one inference on the prepared inputs; it returns the outputs
        (anything :func:`keras.ops.convert_to_numpy` and :func:`keras.tree.flatten` take) once
        they are computed.
    path : str
        What exactly is called, for the report.
    """

    calls: Mapping[int, Callable[[], Any]]
    path: str


class Runner(ABC):
    """One way of running a model for inference (register new ones with
    :func:`register_runner`)."""

    name: str = ""

    def unavailable(self) -> str | None:
        """Why this runner cannot run on the current backend, or None if it can."""
        return None

    @abstractmethod
    def prepare(self, model: keras.Model, inputs: Mapping[int, Inputs]) -> Prepared:
        """Make a call per batch size; ``inputs[b]`` are the inputs of batch size ``b``."""

    def prepare_many(self, models: Sequence[keras.Model],
                     inputs: Mapping[int, Inputs]) -> list[Prepared]:
        """:meth:`prepare` each model (a runner may share work between them)."""
        return [self.prepare(model, inputs) for model in models]


RUNNERS: dict[str, Runner] = {}
"""The registry of runners, by name."""


def register_runner(runner: Runner) -> Runner:
    """Add ``runner`` to :data:`RUNNERS` under ``runner.name`` (replacing one of that name).

    Returns
    -------
    Runner
        ``runner``, so that it can decorate an instance's creation.
    """
    if not runner.name:
        raise ValueError(f"runner {type(runner).__name__} has no name")
    RUNNERS[runner.name] = runner
    return runner


def _model_arg(xs: Sequence[Any]) -> Any:
    return xs[0] if len(xs) == 1 else list(xs)


class Predict(Runner):
    """``model.predict`` on the whole batch, Keras' inference loop."""

    name = "predict"

    def prepare(self, model: keras.Model, inputs: Mapping[int, Inputs]) -> Prepared:
        def call(x: Any, b: int) -> Callable[[], Any]:
            return lambda: model.predict(x, batch_size=b, verbose=0)

        return Prepared({b: call(_model_arg(xs), b) for b, xs in inputs.items()},
                        "model.predict(x, batch_size=len(x), verbose=0)")


class PredictOnBatch(Runner):
    """``model.predict_on_batch``: Keras' compiled predict step on one batch, no data
    pipeline."""

    name = "predict_on_batch"

    def prepare(self, model: keras.Model, inputs: Mapping[int, Inputs]) -> Prepared:
        def call(x: Any) -> Callable[[], Any]:
            return lambda: model.predict_on_batch(x)

        return Prepared({b: call(_model_arg(xs)) for b, xs in inputs.items()},
                        "model.predict_on_batch(x)")


class Compiled(Runner):
    """A direct compiled call: the backend's fast inference path (see the module docs)."""

    name = "compiled"

    def prepare(self, model: keras.Model, inputs: Mapping[int, Inputs]) -> Prepared:
        backend = keras.backend.backend()
        if backend == "tensorflow":
            return _tf_function(model, inputs, jit_compile=False)
        if backend == "jax":
            return _jax_jit(model, inputs)
        if backend == "torch":
            return _torch_eager(model, inputs)
        return _eager(model, inputs)


class Xla(Runner):
    """TensorFlow's ``tf.function(jit_compile=True)``."""

    name = "xla"

    def unavailable(self) -> str | None:
        backend = keras.backend.backend()
        if backend == "tensorflow":
            return None
        extra = "; on jax, 'compiled' is XLA already" if backend == "jax" else ""
        return f"'xla' is TensorFlow's XLA path and the backend is {backend}{extra}"

    def prepare(self, model: keras.Model, inputs: Mapping[int, Inputs]) -> Prepared:
        return _tf_function(model, inputs, jit_compile=True)


class TorchCompile(Runner):
    """torch only: ``torch.compile`` of ``model(x, training=False)`` (TorchInductor), run
    under ``torch.inference_mode()``. Not a default: compiling takes minutes on a CPU."""

    name = "torch_compile"

    def unavailable(self) -> str | None:
        backend = keras.backend.backend()
        return None if backend == "torch" else f"'torch_compile' needs the torch backend, " \
            f"and the backend is {backend}"

    def prepare(self, model: keras.Model, inputs: Mapping[int, Inputs]) -> Prepared:
        import torch

        fn = torch.compile(lambda x: model(x, training=False))

        def call(x: Any) -> Callable[[], Any]:
            def run() -> Any:
                with torch.inference_mode():
                    return keras.tree.map_structure(keras.ops.convert_to_numpy, fn(x))
            return run

        calls = {b: call(_model_arg([keras.ops.convert_to_tensor(a) for a in xs]))
                 for b, xs in inputs.items()}
        return Prepared(calls, "torch.compile(model(x, training=False)) under "
                               "torch.inference_mode()")


def _tf_function(model: keras.Model, inputs: Mapping[int, Inputs], *,
                 jit_compile: bool) -> Prepared:
    import tensorflow as tf

    fn = tf.function(lambda x: model(x, training=False), jit_compile=jit_compile)

    def call(x: Any) -> Callable[[], Any]:
        return lambda: keras.tree.map_structure(lambda t: t.numpy(), fn(x))

    calls = {b: call(_model_arg([tf.constant(a) for a in xs])) for b, xs in inputs.items()}
    what = "with XLA, jit_compile=True" if jit_compile else "a graph, jit_compile=False"
    return Prepared(calls, f"tf.function(model(x, training=False)), {what}")


def _jax_jit(model: keras.Model, inputs: Mapping[int, Inputs]) -> Prepared:
    import jax

    # Copies: Keras' compiled predict donates (frees) the variables' buffers when it runs.
    trainable = [jax.device_put(v.value, may_alias=False) for v in model.trainable_variables]
    frozen = [jax.device_put(v.value, may_alias=False) for v in model.non_trainable_variables]

    def step(trainable: Any, frozen: Any, x: Any) -> Any:
        return model.stateless_call(trainable, frozen, x, training=False)[0]

    fn: Callable[..., Any] = jax.jit(step)

    def call(x: Any) -> Callable[[], Any]:
        return lambda: keras.tree.map_structure(np.asarray, fn(trainable, frozen, x))

    calls = {b: call(_model_arg([jax.device_put(a) for a in xs])) for b, xs in inputs.items()}
    return Prepared(calls, "jax.jit(model.stateless_call(variables, x, training=False))")


def _torch_eager(model: keras.Model, inputs: Mapping[int, Inputs]) -> Prepared:
    import torch

    def call(x: Any) -> Callable[[], Any]:
        def run() -> Any:
            with torch.inference_mode():
                return keras.tree.map_structure(keras.ops.convert_to_numpy,
                                                model(x, training=False))
        return run

    calls = {b: call(_model_arg([keras.ops.convert_to_tensor(a) for a in xs]))
             for b, xs in inputs.items()}
    return Prepared(calls, "model(x, training=False) eagerly under torch.inference_mode()")


def _eager(model: keras.Model, inputs: Mapping[int, Inputs]) -> Prepared:
    def call(x: Any) -> Callable[[], Any]:
        return lambda: keras.tree.map_structure(keras.ops.convert_to_numpy,
                                                model(x, training=False))

    calls = {b: call(_model_arg([keras.ops.convert_to_tensor(a) for a in xs]))
             for b, xs in inputs.items()}
    return Prepared(calls, "model(x, training=False), eagerly")


class Tflite(Runner):
    """TensorFlow's converter, LiteRT's interpreter (see the module docs).

    Parameters
    ----------
    threads
        Interpreter threads; None: every CPU this process may use.
    """

    name = "tflite"

    def __init__(self, threads: int | None = None) -> None:
        self.threads = threads

    def unavailable(self) -> str | None:
        for module, package in (("tensorflow", "tensorflow"),
                                ("ai_edge_litert", "ai-edge-litert")):
            if importlib.util.find_spec(module) is None:  # not imported: off TensorFlow, a
                return f"TFLite needs {package} (pip install {package})"  # process converts
        return None

    def prepare(self, model: keras.Model, inputs: Mapping[int, Inputs]) -> Prepared:
        return self.prepare_many([model], inputs)[0]

    def prepare_many(self, models: Sequence[keras.Model],
                     inputs: Mapping[int, Inputs]) -> list[Prepared]:
        """Convert every model (in one TensorFlow process, off TensorFlow), then prepare."""
        from ai_edge_litert.interpreter import Interpreter

        threads = self.threads or _cpus()
        where = ("in this process" if keras.backend.backend() == "tensorflow" else
                 "in a TensorFlow-backend process from its .keras file")

        def call(content: bytes, xs: Inputs) -> Callable[[], Any]:
            interpreter = Interpreter(model_content=content, num_threads=threads)
            runner = interpreter.get_signature_runner()
            feed = {f"input_{i}": a for i, a in enumerate(xs)}

            def run() -> Any:
                out = runner(**feed)
                return [out[f"output_{i}"] for i in range(len(out))]
            return run

        prepared = []
        for content in _to_tflite_many(models):
            if isinstance(content, TfliteError):
                raise content
            prepared.append(Prepared(
                {b: call(content, xs) for b, xs in inputs.items()},
                f"LiteRT Interpreter, {threads} thread(s), of a float32 "
                f"{len(content) / 2**20:.2f} MiB flatbuffer converted {where}"))
        return prepared


def _cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


for _runner in (Predict(), PredictOnBatch(), Compiled(), Xla(), TorchCompile()):
    register_runner(_runner)


# --------------------------------------------------------------------------------------------
# TFLite conversion
# --------------------------------------------------------------------------------------------


def to_tflite(model: keras.Model) -> bytes:
    """Convert ``model`` to a float32 TFLite flatbuffer with TensorFlow's converter.

    The model is exported with ``keras.export.ExportArchive`` (one endpoint, inputs named
    ``input_0``..., outputs ``output_0``..., the batch dimension dynamic) to a SavedModel,
    which ``tf.lite.TFLiteConverter.from_saved_model`` converts (TFLite builtin ops only). On
    a backend other than TensorFlow this runs in a fresh Python process with the TensorFlow
    backend, on the model saved as ``.keras`` (Keras' backend is fixed per process).

    Parameters
    ----------
    model
        A built Keras model. It is only read.

    Returns
    -------
    bytes
        The flatbuffer, for ``ai_edge_litert.interpreter.Interpreter(model_content=...)``.

    Raises
    ------
    TfliteError
        Saying why the conversion failed (an op TFLite lacks, a custom layer that cannot be
        re-created...).
    """
    content = _to_tflite_many([model])[0]
    if isinstance(content, TfliteError):
        raise content
    return content


def _to_tflite_many(models: Sequence[keras.Model]) -> list[bytes | TfliteError]:
    """Each model's flatbuffer, or the error saying why it could not be converted."""
    if keras.backend.backend() == "tensorflow":
        out: list[bytes | TfliteError] = []
        for model in models:
            try:
                out.append(_convert(model))
            except Exception as e:  # the converter raises many kinds; report any
                out.append(TfliteError(f"TensorFlow's converter failed on model "
                                       f"'{model.name}': {_last_line(str(e))}"))
        return out
    backend = keras.backend.backend()
    with tempfile.TemporaryDirectory(prefix="kerasprune-tflite-") as tmp:
        files = [(os.path.join(tmp, f"{i}.keras"), os.path.join(tmp, f"{i}.tflite"))
                 for i in range(len(models))]
        for model, (src, _) in zip(models, files, strict=True):
            try:
                model.save(src)
            except Exception as e:
                return [TfliteError(
                    f"TFLite conversion on the {backend} backend goes through a .keras file, "
                    f"and saving model '{model.name}' failed: {_last_line(str(e))}")] * len(
                        models)
        root = str(Path(__file__).resolve().parents[3])  # the directory holding kerasprune/
        code = (f"import sys; sys.path.insert(0, {root!r}); import {__name__} as m; "
                "m._convert_files(sys.argv[1:])")
        env = {**os.environ, "KERAS_BACKEND": "tensorflow", "TF_CPP_MIN_LOG_LEVEL": "3",
               # the same modules as here (a custom layer's, registered with Keras)
               "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
        try:
            proc = subprocess.run([sys.executable, "-c", code, *[f for p in files for f in p]],
                                  env=env, capture_output=True, text=True,
                                  timeout=_CONVERT_TIMEOUT, check=False)
            stderr = proc.stderr
        except subprocess.TimeoutExpired:
            stderr = f"it took more than {_CONVERT_TIMEOUT:.0f} s"
        out = []
        for model, (_, dst) in zip(models, files, strict=True):
            if os.path.exists(dst):
                out.append(Path(dst).read_bytes())
                continue
            why = (Path(f"{dst}.error").read_text(encoding="utf-8")
                   if os.path.exists(f"{dst}.error") else stderr)
            out.append(TfliteError(
                f"TFLite conversion needs the TensorFlow backend; model '{model.name}' was "
                f"saved as .keras and re-created in a TensorFlow process, which failed: "
                f"{_last_line(why)}"))
        return out


def _convert(model: keras.Model) -> bytes:
    import tensorflow as tf

    specs = [tf.TensorSpec((None, *tuple(t.shape)[1:]), t.dtype, name=f"input_{i}")
             for i, t in enumerate(model.inputs)]

    def serve(*xs: Any) -> dict[str, Any]:
        outputs = keras.tree.flatten(model(_model_arg(xs), training=False))
        return {f"output_{i}": t for i, t in enumerate(outputs)}

    archive = keras.export.ExportArchive()
    archive.track(model)
    archive.add_endpoint("serve", serve, input_signature=specs)
    with tempfile.TemporaryDirectory(prefix="kerasprune-savedmodel-") as tmp:
        archive.write_out(tmp, verbose=False)
        content: bytes = tf.lite.TFLiteConverter.from_saved_model(tmp).convert()
    return content


def _convert_files(paths: Sequence[str]) -> None:
    """In a TensorFlow-backend process: convert each ``.keras`` file of ``src, dst, src,
    dst...`` to its ``dst``, or write why not to ``dst + ".error"``."""
    for src, dst in zip(paths[::2], paths[1::2], strict=True):
        try:
            content = _convert(keras.saving.load_model(src, compile=False))
        except Exception as e:
            Path(f"{dst}.error").write_text(f"{type(e).__name__}: {e}", encoding="utf-8")
            continue
        Path(f"{dst}.part").write_bytes(content)
        os.replace(f"{dst}.part", dst)


def _last_line(text: str) -> str:
    """The informative part of a converter's or a process's error text."""
    ops = sorted(set(re.findall(r"'(tf\.\w+)' op is neither a custom op nor a flex op", text)))
    if ops:
        return (f"TFLite's builtin ops do not include {', '.join(ops)} (the model would need "
                "custom or Select TF ops)")
    missing = sorted(set(re.findall(r"Could not locate (?:class|function) '([^']+)'", text)))
    if missing:
        return (f"Keras could not find {', '.join(missing)} there (a custom object: define it "
                "in an importable module, registered with "
                "keras.saving.register_keras_serializable)")
    lines = [ln.strip() for ln in text.strip().splitlines() if ln.strip()]
    errors = [ln for ln in lines if ("Error" in ln or "error:" in ln)
              and "failed while converting" not in ln]
    return (errors or lines or ["(no message)"])[-1][:500]


# --------------------------------------------------------------------------------------------
# Measuring
# --------------------------------------------------------------------------------------------


def _check_args(batch_sizes: Sequence[int], runners: Sequence[str], tflite: Any,
                repeats: int, warmup: int, min_time: float,
                tflite_threads: int | None) -> tuple[tuple[int, ...], tuple[str, ...]]:
    if isinstance(batch_sizes, (int, np.integer)):
        batch_sizes = (int(batch_sizes),)
    sizes = tuple(batch_sizes)
    if not sizes:
        raise ValueError("batch_sizes is empty: give at least one batch size, e.g. (1, 32)")
    for b in sizes:
        if isinstance(b, bool) or not isinstance(b, (int, np.integer)) or b < 1:
            raise ValueError(f"batch_sizes must be positive integers, got {b!r} in {sizes!r}")
    if len(set(sizes)) != len(sizes):
        raise ValueError(f"batch_sizes has repeated values: {sizes!r}")
    if isinstance(runners, str):
        runners = (runners,)
    names = tuple(runners)
    for name in names:
        if name == "tflite":
            raise ValueError("TFLite is asked for with tflite=True or tflite='auto', not in "
                             "runners")
        if name not in RUNNERS:
            raise ValueError(f"unknown runner {name!r}; known: {sorted(RUNNERS)} (and "
                             "tflite=True)")
        why = RUNNERS[name].unavailable()
        if why:
            raise ValueError(f"runner {name!r} cannot run here: {why}")
    if len(set(names)) != len(names):
        raise ValueError(f"runners has repeated names: {names!r}")
    if tflite not in (True, False, "auto") or not isinstance(tflite, (bool, str)):
        raise ValueError(f"tflite must be True, False or 'auto', got {tflite!r}")
    if not names and tflite is False:
        raise ValueError("nothing to time: runners is empty and tflite=False")
    for arg, value, low in (("repeats", repeats, 1), ("warmup", warmup, 1)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
            raise ValueError(f"{arg} must be an integer >= {low}, got {value!r}")
    if not (isinstance(min_time, (int, float)) and math.isfinite(min_time) and min_time >= 0):
        raise ValueError(f"min_time must be a number of seconds >= 0, got {min_time!r}")
    if tflite_threads is not None and (isinstance(tflite_threads, bool)
                                       or not isinstance(tflite_threads, int)
                                       or tflite_threads < 1):
        raise ValueError(f"tflite_threads must be None or an integer >= 1, got "
                         f"{tflite_threads!r}")
    return tuple(int(b) for b in sizes), names


def _input_specs(model: Any, arg: str) -> list[tuple[tuple[int | None, ...], str]]:
    if not isinstance(model, keras.Model):
        raise TypeError(f"{arg} must be a keras.Model, got {type(model).__name__}")
    if not model.built or not model.inputs:
        raise ValueError(f"{arg} (model '{model.name}') has no known inputs: build it or "
                         "call it on data first (a subclassed model needs keras.Input-defined "
                         "inputs to be timed)")
    return [(tuple(None if d is None else int(d) for d in tuple(t.shape)[1:]),
             keras.backend.standardize_dtype(t.dtype)) for t in model.inputs]


def _make_inputs(specs: Sequence[tuple[tuple[int | None, ...], str]], x: Any,
                 sizes: Sequence[int], seed: int, name: str) -> dict[int, Inputs]:
    """The inputs of each batch size: rows of ``x`` (repeated if too few), or random."""
    if x is None:
        for i, (shape, _) in enumerate(specs):
            if None in shape:
                raise ValueError(f"input {i} of model '{name}' has an unknown dimension "
                                 f"{(None, *shape)}: pass x, data of the shape to time")
        rng = np.random.default_rng(seed)
        known = [((max(sizes), *(int(d or 0) for d in shape)), dtype) for shape, dtype in specs]
        data = [rng.random(full).astype(dtype) if np.dtype(dtype).kind == "f"
                else np.zeros(full, dtype) for full, dtype in known]
    else:
        data = [np.asarray(keras.ops.convert_to_numpy(a)) for a in
                (x if isinstance(x, (list, tuple)) else [x])]
        if len(data) != len(specs):
            raise ValueError(f"x has {len(data)} array(s), model '{name}' has {len(specs)} "
                             "input(s)")
        for i, (a, (shape, dtype)) in enumerate(zip(data, specs, strict=True)):
            if a.ndim != len(shape) + 1 or any(
                    d is not None and d != s for d, s in zip(shape, a.shape[1:], strict=True)):
                raise ValueError(f"x[{i}] has shape {a.shape}; model '{name}' takes "
                                 f"{(None, *shape)}")
            if len(a) == 0:
                raise ValueError(f"x[{i}] has no samples")
            data[i] = a.astype(dtype, copy=False)
    return {b: [np.ascontiguousarray(np.resize(a, (b, *a.shape[1:]))) for a in data]
            for b in sizes}


def _flat(outputs: Any) -> list[Array]:
    return [np.asarray(keras.ops.convert_to_numpy(t)) for t in keras.tree.flatten(outputs)]


def _max_diff(got: Sequence[Array], want: Sequence[Array]) -> float:
    if len(got) != len(want) or any(g.shape != w.shape for g, w in zip(got, want,
                                                                        strict=False)):
        return math.inf
    return max((float(np.max(np.abs(g.astype(np.float64) - w))) if g.size else 0.0
                for g, w in zip(got, want, strict=True)), default=0.0)


def _block(call: Callable[[], Any], number: int) -> float:
    """Seconds per call of ``number`` back-to-back calls, garbage collection off."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        start = time.perf_counter()
        for _ in range(number):
            call()
        return (time.perf_counter() - start) / number
    finally:
        if enabled:
            gc.enable()


@dataclass
class _Slot:
    """One model, one runner, one batch size: its call and what was seen of it."""

    call: Callable[[], Any]
    number: int = 1
    diff: float = 0.0
    shapes: tuple[tuple[int, ...], ...] = ()
    samples: list[float] = field(default_factory=list)


def _params_and_flops(model: keras.Model) -> tuple[int | None, int | None, str | None]:
    try:
        params, flops = cost.total(surgery.costs(model))
    except (PruneError, ValueError, TypeError, NotImplementedError) as e:
        # a layer kind without a rule, or shapes unknown until run (FLOPs depend on them)
        return None, None, f"kerasprune cannot count model '{model.name}': {e}"
    return params, flops, None


def _measure(models: Sequence[keras.Model], inputs: Mapping[int, Inputs],
             names: Sequence[str], tflite: TfliteMode, tflite_threads: int | None,
             repeats: int, warmup: int, min_time: float,
             ) -> tuple[list[dict[str, Prepared]], list[dict[tuple[str, int], _Slot]],
                        dict[str, str]]:
    """Prepare every runner for every model, warm up and check, then time interleaved."""
    skipped: dict[str, str] = {}
    runners: list[Runner] = [RUNNERS[n] for n in names]
    if tflite is not False:
        lite = Tflite(tflite_threads)
        why = lite.unavailable()
        if why and tflite is True:
            raise TfliteError(why)
        if why:
            skipped["tflite"] = why
        else:
            runners.append(lite)
    references = [{b: _flat(model(_model_arg([keras.ops.convert_to_tensor(a) for a in xs]),
                                  training=False)) for b, xs in inputs.items()}
                  for model in models]
    prepared: list[dict[str, Prepared]] = [{} for _ in models]
    slots: list[dict[tuple[str, int], _Slot]] = [{} for _ in models]
    for runner in runners:
        try:
            ready = runner.prepare_many(models, inputs)
            checked = [_warm(p, ref, warmup, min_time) for p, ref in zip(ready, references,
                                                                          strict=True)]
            if runner.name == "tflite":
                _check_tflite(models, checked, references)
        except TfliteError as e:
            if tflite is True:
                raise
            skipped["tflite"] = str(e)
            continue
        for i in range(len(models)):
            prepared[i][runner.name] = ready[i]
            slots[i].update({(runner.name, b): s for b, s in checked[i].items()})
    gc.collect()
    for _ in range(repeats):
        for key in slots[0]:
            for model_slots in slots:  # original, pruned, original, pruned...
                slot = model_slots[key]
                slot.samples.append(_block(slot.call, slot.number))
    return prepared, slots, skipped


def _warm(prepared: Prepared, reference: Mapping[int, list[Array]], warmup: int,
          min_time: float) -> dict[int, _Slot]:
    out: dict[int, _Slot] = {}
    for b, call in prepared.calls.items():
        got = _flat(call())  # the first call: compiles, and is checked
        slot = _Slot(call, diff=_max_diff(got, reference[b]),
                     shapes=tuple(tuple(int(d) for d in g.shape) for g in got))
        for _ in range(warmup - 1):
            call()
        once = _block(call, 1)
        slot.number = max(1, min(10_000, math.ceil(min_time / max(once, 1e-9))))
        out[b] = slot
    return out


def _check_tflite(models: Sequence[keras.Model], checked: Sequence[Mapping[int, _Slot]],
                  references: Sequence[Mapping[int, list[Array]]]) -> None:
    for model, slots, ref in zip(models, checked, references, strict=True):
        for b, slot in slots.items():
            scale = max((float(np.max(np.abs(r))) for r in ref[b] if r.size), default=0.0)
            limit = TFLITE_ATOL + TFLITE_RTOL * scale
            if not slot.diff <= limit:
                raise TfliteError(
                    f"TFLite's outputs of model '{model.name}' at batch size {b} differ from "
                    f"Keras' by up to {slot.diff:.3g} (allowed {limit:.3g}: {TFLITE_ATOL} + "
                    f"{TFLITE_RTOL} x max |output| {scale:.3g})")


def _report(model: keras.Model, sizes: tuple[int, ...], repeats: int,
            prepared: Mapping[str, Prepared], slots: Mapping[tuple[str, int], _Slot],
            skipped: Mapping[str, str]) -> LatencyReport:
    params, flops, why = _params_and_flops(model)
    skipped = dict(skipped) | ({"count": why} if why else {})
    timings = tuple(Timing.of(r, b, s.number, s.samples, s.diff, s.shapes)
                    for (r, b), s in slots.items())
    return LatencyReport(model.name, keras.backend.backend(), sizes, repeats, timings,
                         {n: p.path for n, p in prepared.items()}, skipped, params, flops)


def measure_latency(model: keras.Model, x: Any = None, *,
                    batch_sizes: Sequence[int] = DEFAULT_BATCH_SIZES,
                    runners: Sequence[str] = DEFAULT_RUNNERS, tflite: TfliteMode = "auto",
                    repeats: int = 10, warmup: int = 2, min_time: float = 0.02,
                    tflite_threads: int | None = None, seed: int = 0) -> LatencyReport:
    """Time a model the ways it will run: ``predict``, a compiled call, TFLite.

    Parameters
    ----------
    model
        A built Keras model with known inputs. It is only called, never changed.
    x
        Inputs to time on (an array, or a list with one per model input); rows are repeated
        to fill a batch. None: random values in ``[0, 1)`` of the model's input shapes
        (zeros for integer inputs). Time does not depend on the values, but denormal floats
        slow CPUs down: give real data if the model's activations may vanish.
    batch_sizes
        Samples per call; each is timed separately.
    runners
        Names from :data:`RUNNERS`: ``"predict"``, ``"predict_on_batch"``, ``"compiled"``
        (the backend's compiled call, see the module docs), on TensorFlow ``"xla"``, on torch
        ``"torch_compile"``.
    tflite
        Also convert the model to TFLite and time it with LiteRT: True (an error if it cannot
        be converted or its outputs differ from Keras'), ``"auto"`` (skip it then, saying why
        in ``skipped``), False (not at all).
    repeats
        Timed blocks per runner and batch size; the report gives their median and quartiles.
    warmup
        Untimed calls of each runner at each batch size before timing (the first compiles
        and is checked); one more, which sets how many calls a timed block makes, follows.
    min_time
        Seconds a timed block lasts at least: fast calls are repeated back to back in a block.
    tflite_threads
        LiteRT interpreter threads; None: every CPU this process may use.
    seed
        Seed of the random inputs.

    Returns
    -------
    LatencyReport
        Per runner and batch size, seconds per call and per sample; ``str()`` is a table.

    Raises
    ------
    ValueError, TypeError
        For a bad argument, naming it, before anything runs.
    TfliteError
        With ``tflite=True``, if the model cannot be converted or TFLite disagrees.
    """
    sizes, names = _check_args(batch_sizes, runners, tflite, repeats, warmup, min_time,
                               tflite_threads)
    specs = _input_specs(model, "model")
    inputs = _make_inputs(specs, x, sizes, seed, model.name)
    prepared, slots, skipped = _measure([model], inputs, names, tflite, tflite_threads,
                                        int(repeats), int(warmup), float(min_time))
    return _report(model, sizes, int(repeats), prepared[0], slots[0], skipped)


def speedup(original: keras.Model, pruned: keras.Model, x: Any = None, *,
            batch_sizes: Sequence[int] = DEFAULT_BATCH_SIZES,
            runners: Sequence[str] = DEFAULT_RUNNERS, tflite: TfliteMode = "auto",
            repeats: int = 10, warmup: int = 2, min_time: float = 0.02,
            tflite_threads: int | None = None, seed: int = 0) -> SpeedupReport:
    """Measure how much faster ``pruned`` runs than ``original``, beside its FLOP ratio.

    Both models are timed on the same inputs, interleaved: for every runner and batch size,
    each repeat times a block of the original, then one of the pruned model, so that load on
    the machine slows both alike. See :func:`measure_latency` for the method and the
    arguments, which are the same.

    Parameters
    ----------
    original, pruned
        Two built Keras models with the same inputs (number, shapes and dtypes), typically a
        model and the result of :func:`kerasprune.delete_neurons` on it.
    x, batch_sizes, runners, tflite, repeats, warmup, min_time, tflite_threads, seed
        As in :func:`measure_latency`. With ``tflite="auto"``, TFLite is skipped for both if
        either cannot be converted.

    Returns
    -------
    SpeedupReport
        Per runner and batch size, both times, the speed-up ``original / pruned`` and its
        ratio to the FLOP reduction; ``str()`` is a table.

    Raises
    ------
    ValueError, TypeError
        For a bad argument or models whose inputs differ, before anything runs.
    TfliteError
        With ``tflite=True``, if a model cannot be converted or TFLite disagrees.

    Examples
    --------
    >>> pruned = kerasprune.delete_neurons(model, "conv2", range(0, 50, 2))  # doctest: +SKIP
    >>> print(kerasprune.speedup(model, pruned))  # doctest: +SKIP
    """
    sizes, names = _check_args(batch_sizes, runners, tflite, repeats, warmup, min_time,
                               tflite_threads)
    specs = _input_specs(original, "original")
    other = _input_specs(pruned, "pruned")
    if specs != other:
        raise ValueError(
            f"the models take different inputs: original '{original.name}' takes "
            f"{_specs_text(specs)}, pruned '{pruned.name}' takes {_specs_text(other)}; a speed-up "
            "compares two models on the same inputs")
    if original is pruned:
        raise ValueError("original and pruned are the same model object")
    inputs = _make_inputs(specs, x, sizes, seed, original.name)
    prepared, slots, skipped = _measure([original, pruned], inputs, names, tflite,
                                        tflite_threads, int(repeats), int(warmup),
                                        float(min_time))
    before, after = (_report(m, sizes, int(repeats), p, s, skipped)
                     for m, p, s in zip((original, pruned), prepared, slots, strict=True))
    flop_ratio = _ratio(before.flops, after.flops)
    rows = []
    for a, b in zip(before.timings, after.timings, strict=True):
        fast = a.median / b.median if b.median > 0 else math.inf
        rows.append(SpeedupRow(a.runner, a.batch_size, a, b, fast,
                               None if flop_ratio is None else fast / flop_ratio))
    skipped = dict(before.skipped)
    for key, why in after.skipped.items():
        skipped[key] = why if skipped.get(key, why) == why else f"{skipped[key]}; {why}"
    return SpeedupReport(before, after, flop_ratio, _ratio(before.params, after.params),
                         tuple(rows), skipped)


def _ratio(a: int | None, b: int | None) -> float | None:
    return None if a is None or b is None or b == 0 else a / b


def _specs_text(specs: Sequence[tuple[tuple[int | None, ...], str]]) -> str:
    return ", ".join(f"{(None, *shape)} {dtype}" for shape, dtype in specs)
