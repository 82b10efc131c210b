"""How fast is kerasprune's surgery, as ratios against limits measured in the same run?

Run ``python benchmarks/surgery.py [--quick] [--json PATH]`` (the backend comes from
``KERAS_BACKEND``). For each model and each repeat, these run one after another (so that a
busy machine slows them alike), with ``gc.collect()`` before each and a warm-up round first;
each is reported as the median over the repeats (on JAX, once the returned model's weights
are ready):

(a) ``keras.models.clone_model(model)`` + ``set_weights(model.get_weights())``: the obvious
    way to get a copy of a model that a pruner could then edit;
(b) ``[w.copy() for w in ws]`` with ``ws = model.get_weights()`` taken once before: copying
    every weight once, the memory-bandwidth floor of any copy;
(c) ``from_config`` of the model's config with every initializer set to ``"zeros"``: Keras
    building the same architecture with cheap initial values and no weight copied, the
    Python floor of any rebuild through Keras (a reference, not a target);
(s) ``kerasprune.delete_neurons(model, layer, half of its neurons)``.

The targets, from the issue (set for VGG16, reported for every row): ``s/a <= 0.35`` and
``s/b <= 5``. Nothing here is a timed test: speeds are only ever compared with limits measured
on the same machine at the same time. See ``benchmarks/README.md``.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import gc
import json
import os
import statistics
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import keras

import kerasprune
from kerasprune.adapters.keras import build, convert
from kerasprune.core import surgery

TARGET_S_OVER_A = 0.35
"""kerasprune must take at most this fraction of clone_model + set_weights."""
TARGET_S_OVER_B = 5.0
"""kerasprune must take at most this many times a plain copy of every weight."""

PHASES = ("to_graph", "dependency_group", "apply_deletion", "from_graph")
"""kerasprune's own steps, timed inside ``delete_neurons``; the rest is reported as other."""


@dataclass(frozen=True)
class Case:
    """A model to benchmark and the layer to prune in it (half of its neurons)."""

    name: str
    build: Callable[[], keras.Model]
    layer: str
    about: str


def _vgg16() -> keras.Model:
    return keras.applications.VGG16(weights=None)


def _vgg16_sequential() -> keras.Model:
    """VGG16's layers, rebuilt from their configs, in a real ``keras.Sequential``."""
    vgg = _vgg16()
    layers = [type(layer).from_config(layer.get_config()) for layer in vgg.layers[1:]]
    model = keras.Sequential([keras.Input(vgg.inputs[0].shape[1:]), *layers],
                             name="vgg16_sequential")
    model.set_weights(vgg.get_weights())
    return model


def _resnet50_stack() -> keras.Model:
    """ResNet50's convolutions, batch norms and ReLUs in one chain (no shortcuts): a
    ``keras.Sequential`` of ResNet50's size (about 23M parameters, 160 layers)."""
    relu = "relu"
    layers: list[Any] = [
        keras.Input((224, 224, 3)),
        keras.layers.Conv2D(64, 7, strides=2, padding="same", name="conv1_conv"),
        keras.layers.BatchNormalization(name="conv1_bn"),
        keras.layers.Activation(relu, name="conv1_relu"),
        keras.layers.MaxPooling2D(3, strides=2, padding="same", name="pool1_pool"),
    ]
    for stage, (width, blocks, stride) in enumerate(
            [(64, 3, 1), (128, 4, 2), (256, 6, 2), (512, 3, 2)], start=2):
        for block in range(1, blocks + 1):
            convs = [(1, width, stride if block == 1 else 1), (3, width, 1), (1, 4 * width, 1)]
            for i, (size, filters, strides) in enumerate(convs, start=1):
                name = f"conv{stage}_block{block}_{i}"
                layers += [
                    keras.layers.Conv2D(filters, size, strides=strides, padding="same",
                                        name=f"{name}_conv"),
                    keras.layers.BatchNormalization(name=f"{name}_bn"),
                    keras.layers.Activation(relu, name=f"{name}_relu"),
                ]
    layers += [keras.layers.GlobalAveragePooling2D(name="avg_pool"),
               keras.layers.Dense(1000, activation="softmax", name="predictions")]
    return keras.Sequential(layers, name="resnet50_stack")


def _resnet50() -> keras.Model:
    return keras.applications.ResNet50(weights=None)


def _mobilenetv2() -> keras.Model:
    return keras.applications.MobileNetV2(weights=None)


def _tiny() -> keras.Model:
    return keras.Sequential([
        keras.Input((8, 8, 3)),
        keras.layers.Conv2D(8, 3, name="conv1"),
        keras.layers.BatchNormalization(name="bn1"),
        keras.layers.ReLU(name="relu1"),
        keras.layers.Conv2D(4, 3, name="conv2"),
        keras.layers.GlobalAveragePooling2D(name="pool"),
        keras.layers.Dense(2, name="out"),
    ], name="tiny")


CASES: dict[str, Case] = {case.name: case for case in [
    Case("vgg16", _vgg16, "block3_conv1",
         "keras.applications.VGG16: a chain, as a functional model"),
    Case("vgg16_sequential", _vgg16_sequential, "block3_conv1",
         "the same VGG16 layers in a keras.Sequential"),
    Case("resnet50_stack", _resnet50_stack, "conv3_block1_1_conv",
         "a plain Sequential of conv/BN/ReLU of ResNet50's size"),
    Case("resnet50", _resnet50, "conv3_block1_1_conv",
         "keras.applications.ResNet50, a layer inside a bottleneck"),
    Case("resnet50_group", _resnet50, "conv3_block1_0_conv",
         "ResNet50, a shortcut conv: the whole conv3 residual group goes"),
    Case("mobilenetv2", _mobilenetv2, "block_2_project",
         "keras.applications.MobileNetV2, a projection inside a residual group"),
    Case("tiny", _tiny, "conv1", "a six-layer Sequential, for the smoke test"),
]}

DEFAULT = ["vgg16", "vgg16_sequential", "resnet50_stack", "resnet50", "resnet50_group",
           "mobilenetv2"]
QUICK = ["mobilenetv2", "resnet50"]


def half_of(model: keras.Model, layer: str) -> list[int]:
    """Every other neuron of ``layer``: half of them, spread over the layer."""
    graph = kerasprune.to_graph(model).graph
    return list(range(0, surgery.neuron_count(graph, layer), 2))


def _zeros_config(model: keras.Model) -> dict[str, Any]:
    config = copy.deepcopy(model.get_config())

    def zero(entries: list[dict[str, Any]]) -> None:
        for entry in entries:
            inner = entry.get("config", {})
            if "layers" in inner:
                zero(inner["layers"])
            for key, value in inner.items():
                if key.endswith("_initializer") and value is not None:
                    inner[key] = "zeros"

    zero(config["layers"])
    return config


@contextlib.contextmanager
def _phase_timer(into: dict[str, float]) -> Iterator[None]:
    """Time the steps ``delete_neurons`` calls, by wrapping them where it looks them up."""
    targets = [(convert, "to_graph"), (surgery, "dependency_group"),
               (surgery, "apply_deletion"), (build, "from_graph")]
    saved = [(module, name, getattr(module, name)) for module, name in targets]

    def timed(name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            start = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                into[name] = into.get(name, 0.0) + time.perf_counter() - start
        return wrapper

    try:
        for module, name, fn in saved:
            setattr(module, name, timed(name, fn))
        yield
    finally:
        for module, name, fn in saved:
            setattr(module, name, fn)


def _settled(result: Any) -> Any:
    """``result`` once every weight of it exists: JAX dispatches copies asynchronously, and a
    time taken before they finish would leave their cost to whatever runs next."""
    if keras.backend.backend() == "jax" and isinstance(result, keras.Model):
        import jax

        jax.block_until_ready([v.value for v in result.weights])
    return result


def run_case(model: keras.Model, layer: str, *, repeats: int = 5, warmup: int = 1,
             name: str | None = None) -> dict[str, Any]:
    """Measure (a), (b), (c) and (s) on one model; return the medians, ratios and breakdown.

    The four run in turn within each round, ``warmup`` rounds first (not counted).
    """
    neurons = half_of(model, layer)
    weights = model.get_weights()
    config = _zeros_config(model)
    rebuild = keras.Sequential if isinstance(model, keras.Sequential) else keras.Model
    phases: dict[str, list[float]] = {p: [] for p in PHASES}
    pruned_params: list[int] = []

    def clone() -> Any:
        new = keras.models.clone_model(model)
        new.set_weights(model.get_weights())
        return new

    def prune() -> Any:
        spent: dict[str, float] = {}
        with _phase_timer(spent):
            pruned = kerasprune.delete_neurons(model, layer, neurons)
        for p in PHASES:
            phases[p].append(spent.get(p, 0.0))
        pruned_params.append(pruned.count_params())
        return pruned

    steps: dict[str, Callable[[], Any]] = {
        "a": clone,
        "b": lambda: [w.copy() for w in weights],
        "c": lambda: rebuild.from_config(copy.deepcopy(config)),
        "s": prune,
    }
    times: dict[str, list[float]] = {k: [] for k in steps}
    cpu: dict[str, list[float]] = {k: [] for k in steps}
    first: dict[str, float] = {}  # the first round's, warm-up or not
    for round_ in range(warmup + repeats):
        for key, step in steps.items():
            gc.collect()
            start, start_cpu = time.perf_counter(), time.process_time()
            result = _settled(step())
            spent, spent_cpu = time.perf_counter() - start, time.process_time() - start_cpu
            del result
            if round_ == 0:
                first[key] = spent
            if round_ >= warmup:
                times[key].append(spent)
                cpu[key].append(spent_cpu)
        if round_ < warmup:
            for p in PHASES:
                phases[p].clear()
    med = {k: statistics.median(v) for k, v in times.items()}
    med_cpu = {k: statistics.median(v) for k, v in cpu.items()}
    breakdown = {p: statistics.median(phases[p]) for p in PHASES}
    breakdown["other"] = max(med["s"] - sum(breakdown.values()), 0.0)
    s_over_a, s_over_b = med["s"] / med["a"], med["s"] / med["b"]
    return {
        "model": name or model.name,
        "layer": layer,
        "deleted": len(neurons),
        "params": int(model.count_params()),
        "pruned_params": pruned_params[-1],
        "repeats": repeats,
        "seconds": med,
        "s_over_a": s_over_a,
        "s_over_b": s_over_b,
        "s_over_c": med["s"] / med["c"],
        "cpu_seconds": med_cpu,
        "cpu_s_over_a": med_cpu["s"] / med_cpu["a"],
        "cpu_s_over_b": med_cpu["s"] / max(med_cpu["b"], 1e-9),
        "first_seconds": first,
        "first_s_over_a": first["s"] / first["a"],
        "pass_a": s_over_a <= TARGET_S_OVER_A,
        "pass_b": s_over_b <= TARGET_S_OVER_B,
        "breakdown": breakdown,
    }


def _ok(passed: bool) -> str:
    return "pass" if passed else "FAIL"


def format_table(rows: Sequence[dict[str, Any]]) -> str:
    """The results table and kerasprune's time breakdown, as text."""
    head = (f"{'model':<17}{'layer':<21}{'params':>12}{'s (s)':>9}{'s/a':>7}{'s/b':>8}"
            f"{'s/c':>7}  {'s/a<=' + str(TARGET_S_OVER_A):<10}{'s/b<=' + str(TARGET_S_OVER_B)}")
    lines = [head, "-" * len(head)]
    for r in rows:
        lines.append(
            f"{r['model']:<17}{r['layer']:<21}{r['params']:>12,}{r['seconds']['s']:>9.3f}"
            f"{r['s_over_a']:>7.2f}{r['s_over_b']:>8.1f}{r['s_over_c']:>7.2f}  "
            f"{_ok(r['pass_a']):<10}{_ok(r['pass_b'])}")
    lines += ["", "limits (median seconds): a = clone_model + set_weights, b = copy of every "
              "weight, c = Keras from_config with zeros"]
    for r in rows:
        sec = r["seconds"]
        lines.append(f"  {r['model']:<17}a {sec['a']:.3f}  b {sec['b']:.4f}  c {sec['c']:.3f}")
    lines += ["", "cross-checks: the same medians in process CPU time (time.process_time, less "
              "sensitive to other load on the machine), and the first (cold) call's s/a",
              f"  {'model':<17}{'cpu s/a':>9}{'cpu s/b':>9}{'1st s/a':>9}"]
    for r in rows:
        lines.append(f"  {r['model']:<17}{r['cpu_s_over_a']:>9.2f}{r['cpu_s_over_b']:>9.1f}"
                     f"{r['first_s_over_a']:>9.2f}")
    cols = [*PHASES, "other"]
    lines += ["", "kerasprune's time, median seconds (share of s)",
              f"  {'model':<17}" + "".join(f"{c:>24}" for c in cols)]
    for r in rows:
        total = r["seconds"]["s"]
        cells = [f"{r['breakdown'][c]:.3f} ({100 * r['breakdown'][c] / total:3.0f}%)"
                 for c in cols]
        lines.append(f"  {r['model']:<17}" + "".join(f"{c:>24}" for c in cells))
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true",
                        help=f"smoke run: 1 repeat, models {', '.join(QUICK)}")
    parser.add_argument("--repeats", type=int, default=None,
                        help="timed rounds per model (default 5, 1 with --quick)")
    parser.add_argument("--models", nargs="+", choices=sorted(CASES), default=None,
                        help="which models (default: all but tiny)")
    parser.add_argument("--warmup", type=int, default=1,
                        help="untimed rounds first (default 1)")
    parser.add_argument("--json", metavar="PATH", help="also write the results as JSON")
    args = parser.parse_args(argv)
    names = args.models or (QUICK if args.quick else DEFAULT)
    repeats = args.repeats or (1 if args.quick else 5)
    backend = keras.backend.backend()
    print(f"kerasprune surgery benchmark: backend {backend}, keras {keras.__version__}, "
          f"{repeats} repeat(s) after {args.warmup} warm-up", flush=True)
    rows = []
    for name in names:
        case = CASES[name]
        model = case.build()
        print(f"  {name}: {case.about}; pruning {case.layer}...", flush=True)
        rows.append(run_case(model, case.layer, repeats=repeats, warmup=args.warmup,
                             name=name))
        del model
        gc.collect()
    print()
    print(format_table(rows))
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump({"backend": backend, "keras": keras.__version__, "repeats": repeats,
                       "targets": {"s_over_a": TARGET_S_OVER_A, "s_over_b": TARGET_S_OVER_B},
                       "rows": rows}, f, indent=2)
        print(f"\nwrote {os.path.abspath(args.json)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
