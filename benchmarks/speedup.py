"""Does a pruned model run as much faster as its FLOPs say? Measured speed-up beside FLOPs.

Run ``python benchmarks/speedup.py`` (``--quick`` for a smoke run; ``--backend tensorflow
--backend jax`` for several backends; ``--json PATH`` to keep every number). For each model,
the original and the pruned model are timed by :func:`kerasprune.speedup`: interleaved
(original, pruned, original, pruned... so load on the machine slows both alike), warm (the
first calls, which compile, are not timed), at batch 1 and batch 32, median of the timed
blocks, in ``model.predict``, ``model.predict_on_batch``, the backend's compiled call and
TFLite (TensorFlow's converter, LiteRT's interpreter; its outputs checked against Keras').
Each model runs in a fresh Python process.

Models (random weights: time does not depend on their values; batch-norm statistics are set
from one batch of random images, so that activations keep a realistic scale and no denormal
floats slow the CPU down):

* ``lenet``: the README's LeNet (conv1 20, conv2 50, ip1 500) against its trimmed widths
  (conv1 20, conv2 15, ip1 158), 28x28x1;
* ``vgg``: the VGG-style example (:func:`kerasprune.examples.vgg_mnist.build_vgg`, 28x28x1)
  with every layer but the output kept at the same fraction of its width, rounded to a
  multiple of 8, the fraction chosen to bring FLOPs closest to half;
* ``mobilenetv2``: ``keras.applications.MobileNetV2(weights=None)`` at 224x224 (160x160 with
  ``--quick``), pruned the same way (residual groups keep one width).

The target, from the issue: on ``vgg`` and ``mobilenetv2``, measured speed-up at least 0.8 of
the FLOP ratio (the ``/FLOPs`` column). Nothing here is a timed test.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import time
from collections.abc import Sequence
from typing import Any

TARGET = 0.8
"""Measured speed-up / FLOP ratio the issue asks for on vgg and mobilenetv2."""
TARGETED = ("vgg", "mobilenetv2")
MODELS = ("lenet", "vgg", "mobilenetv2")
ROUND_TO = 8
LENET_TRIMMED = {"conv1": 20, "conv2": 15, "ip1": 158}
"""The widths the README's Network Trimming run ends with (round 6)."""


# --------------------------------------------------------------------------------------------
# Worker: one model in this (fresh) process
# --------------------------------------------------------------------------------------------


def build(name: str, quick: bool) -> Any:
    """The original model, with random weights."""
    import keras

    keras.utils.set_random_seed(0)
    if name == "lenet":
        from kerasprune.examples.lenet_mnist import build_lenet

        return build_lenet()
    if name == "vgg":
        from kerasprune.examples.vgg_mnist import build_vgg

        return build_vgg()
    if name == "mobilenetv2":
        size = 160 if quick else 224
        return keras.applications.MobileNetV2(weights=None, input_shape=(size, size, 3))
    if name == "tiny":  # for the smoke test
        return keras.Sequential([
            keras.Input((12, 12, 3)),
            keras.layers.Conv2D(16, 3, name="conv1"),
            keras.layers.BatchNormalization(name="bn1"),
            keras.layers.ReLU(name="relu1"),
            keras.layers.Conv2D(16, 3, name="conv2"),
            keras.layers.GlobalAveragePooling2D(name="gap"),
            keras.layers.Dense(4, name="out"),
        ], name="tiny")
    raise ValueError(f"unknown model {name!r}")


def calibrate(model: Any, x: Any) -> None:
    """Set every BatchNormalization's moving statistics to those of the batch ``x``.

    One forward pass in training mode with momentum 0: each layer normalizes with its batch's
    statistics and keeps them, so downstream layers see the statistics of the calibrated
    network upstream. Random weights with default statistics would otherwise shrink the
    activations layer by layer (MobileNetV2's outputs end near 1e-11).
    """
    import keras

    norms = [layer for layer in _all_layers(model)
             if isinstance(layer, keras.layers.BatchNormalization)]
    momenta = [layer.momentum for layer in norms]
    for layer in norms:
        layer.momentum = 0.0
    model(x, training=True)
    for layer, momentum in zip(norms, momenta, strict=True):
        layer.momentum = momentum


def _all_layers(model: Any) -> list[Any]:
    out = []
    for layer in model.layers:
        out.append(layer)
        if hasattr(layer, "layers"):
            out.extend(_all_layers(layer))
    return out


def uniform_request(model: Any, target: float) -> tuple[dict[str, list[int]], float, float]:
    """Neurons to delete so that every prunable layer but the outputs keeps the same fraction
    of its width, rounded to a multiple of 8 (at least 8; layers of 8 or fewer are kept whole),
    with the fraction chosen (by bisection) to bring FLOPs closest to ``target`` of the
    original's. Counted on the core graph, nothing built.

    Returns
    -------
    dict, float, float
        ``{layer: indices to delete}``, the fraction kept, the FLOP fraction it gives.
    """
    import keras
    import numpy as np

    import kerasprune
    from kerasprune.core import (
        PruneError,
        apply_deletion,
        cost,
        dependency_group,
        neuron_count,
        prunable_layers,
    )

    graph = kerasprune.to_graph(model).graph
    outputs = {node.layer for node in graph.nodes if set(node.outputs) & set(graph.outputs)}
    widths = {name: neuron_count(graph, name) for name in prunable_layers(graph)
              if name not in outputs}
    full = cost.total(cost.count(graph))[1]

    def request(keep: float) -> dict[str, list[int]]:
        out = {}
        for name, width in widths.items():
            kept = max(ROUND_TO, ROUND_TO * round(keep * width / ROUND_TO))
            if kept < width:
                out[name] = list(range(kept, width))  # the same indices in coupled layers
        return out

    def flops(keep: float) -> float:
        req = request(keep)
        if not req:
            return 1.0
        try:
            deletion = dependency_group(graph, req)
        except PruneError:
            return math.nan
        # weights as NumPy: only shapes matter here (np.take would dispatch to jax.numpy)
        def take(w: Any, idx: Any, axis: int) -> Any:
            return np.take(keras.ops.convert_to_numpy(w), idx, axis=axis)

        return cost.total(cost.count(apply_deletion(deletion, take=take)))[1] / full

    low, high = 0.05, 1.0
    for _ in range(14):  # FLOPs grow with the fraction kept (to 1/16384)
        mid = (low + high) / 2
        if flops(mid) > target:
            high = mid
        else:
            low = mid
    best = min((low, high), key=lambda k: abs(flops(k) - target))
    return request(best), best, flops(best)


def prune(name: str, model: Any) -> tuple[Any, str]:
    """The pruned model and how it was pruned."""
    import kerasprune

    if name == "lenet":
        request = {layer: list(range(width, model.get_layer(layer).output.shape[-1]))
                   for layer, width in LENET_TRIMMED.items()}
        request = {k: v for k, v in request.items() if v}
        how = "README's trimmed widths: " + ", ".join(f"{k} {v}" for k, v in
                                                      LENET_TRIMMED.items())
        return kerasprune.delete_neurons(model, request), how
    request, keep, flops = uniform_request(model, 0.5)
    pruned = kerasprune.delete_neurons(model, request)
    before, after = ({c.name: c.width for c in kerasprune.costs(m) if c.name in request}
                     for m in (model, pruned))
    widths = (", ".join(f"{k} {before[k]}->{after[k]}" for k in request)
              if len(request) <= 6 else f"{len(request)} layers cut")
    how = (f"every layer but the output kept at one fraction (about {keep:.2f}) of its width, "
           f"rounded to a multiple of {ROUND_TO}: {widths}; FLOPs {flops:.3f} of the original")
    return pruned, how


def worker(name: str, quick: bool, repeats: int, xla: bool,
           tflite: bool | str = "auto") -> dict[str, Any]:
    import dataclasses

    import keras
    import numpy as np

    import kerasprune

    start = time.perf_counter()
    model = build(name, quick)
    shape = tuple(int(d) for d in model.inputs[0].shape[1:])
    x = np.random.default_rng(0).random((32, *shape), dtype=np.float32)
    calibrate(model, x)
    pruned, how = prune(name, model)
    runners = ["predict", "predict_on_batch", "compiled"]
    if xla and keras.backend.backend() == "tensorflow":
        runners.append("xla")
    report = kerasprune.speedup(model, pruned, x, batch_sizes=(1, 32), runners=runners,
                                tflite=tflite, repeats=repeats, warmup=2,
                                min_time=0.05 if not quick else 0.01)
    return {
        "model": name,
        "backend": keras.backend.backend(),
        "input": list(shape),
        "pruning": how,
        "table": report.table(),
        "flop_ratio": report.flop_ratio,
        "params_ratio": report.params_ratio,
        "rows": [dataclasses.asdict(r) for r in report.rows],
        "paths": dict(report.original.paths),
        "skipped": dict(report.skipped),
        "seconds": time.perf_counter() - start,
    }


# --------------------------------------------------------------------------------------------
# Driver
# --------------------------------------------------------------------------------------------


def run(backend: str, name: str, quick: bool, repeats: int, xla: bool) -> dict[str, Any]:
    """One model on one backend, in a fresh process."""
    env = {**os.environ, "KERAS_BACKEND": backend, "TF_CPP_MIN_LOG_LEVEL": "3"}
    argv = [sys.executable, os.path.abspath(__file__), "--worker", name, "--repeats",
            str(repeats), *(["--quick"] if quick else []), *(["--xla"] if xla else [])]
    proc = subprocess.run(argv, capture_output=True, text=True, env=env, check=False)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
    if proc.returncode != 0 or not lines:
        raise RuntimeError(f"{backend} {name} failed:\n{proc.stderr[-4000:]}")
    result: dict[str, Any] = json.loads(lines[-1][len("RESULT "):])
    return result


def summary(results: Sequence[dict[str, Any]]) -> str:
    """One line per backend, model, runner and batch size."""
    head = (f"{'backend':<11}{'model':<12}{'FLOPs':>7}{'params':>8}  {'runner':<17}"
            f"{'batch':>5}{'orig ms':>10}{'pruned ms':>11}{'speed-up':>10}{'/FLOPs':>8}  target")
    lines = [head, "-" * len(head)]
    for r in results:
        for row in r["rows"]:
            eff = row["efficiency"]
            target = ""
            if r["model"] in TARGETED and eff is not None:
                target = "pass" if eff >= TARGET else "FAIL"
            lines.append(
                f"{r['backend']:<11}{r['model']:<12}{r['flop_ratio']:>6.2f}x"
                f"{r['params_ratio']:>7.2f}x  {row['runner']:<17}{row['batch_size']:>5}"
                f"{1e3 * row['original']['median']:>10.3f}{1e3 * row['pruned']['median']:>11.3f}"
                f"{row['speedup']:>9.2f}x{'n/a' if eff is None else f'{eff:.2f}':>8}  {target}")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true",
                        help="smoke run: 3 repeats, MobileNetV2 at 160x160")
    parser.add_argument("--backend", action="append", choices=["tensorflow", "jax", "torch"],
                        help="backend(s) (repeatable; default: $KERAS_BACKEND or tensorflow)")
    parser.add_argument("--models", nargs="+", choices=[*MODELS, "tiny"], default=None,
                        help="which models (default: all three)")
    parser.add_argument("--repeats", type=int, default=None,
                        help="timed blocks per runner and batch size (default 10; 3 quick)")
    parser.add_argument("--xla", action="store_true",
                        help="also time tf.function(jit_compile=True) on TensorFlow")
    parser.add_argument("--json", metavar="PATH", help="also write every number as JSON")
    parser.add_argument("--worker", metavar="MODEL", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    repeats = args.repeats or (3 if args.quick else 10)
    if args.worker:
        result = worker(args.worker, args.quick, repeats, args.xla)
        print("RESULT " + json.dumps(result), flush=True)
        return 0
    backends = args.backend or [os.environ.get("KERAS_BACKEND", "tensorflow")]
    names = args.models or list(MODELS)
    print(f"kerasprune speed-up benchmark: {repeats} timed blocks per cell, backends "
          f"{', '.join(backends)}\n", flush=True)
    results = []
    for backend in backends:
        for name in names:
            r = run(backend, name, args.quick, repeats, args.xla)
            results.append(r)
            print(f"== {backend} / {name} (input {r['input']}; {r['pruning']}; "
                  f"{r['seconds']:.0f} s)\n{r['table']}\n", flush=True)
    print(summary(results))
    print(f"\n/FLOPs: measured speed-up divided by the FLOP ratio; target >= {TARGET} on "
          f"{' and '.join(TARGETED)}.")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump({"repeats": repeats, "target": TARGET, "results": results}, f, indent=2)
        print(f"wrote {os.path.abspath(args.json)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
