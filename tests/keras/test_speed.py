"""measure_latency and speedup: well-formed results, what ran, TFLite's agreement with Keras,
interleaving, and bad input. No time is asserted: only what ran and how it is reported."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from typing import Any

import keras
import numpy as np
import pytest
from backends import BACKEND

import kerasprune
from kerasprune.adapters.keras import speed as keras_speed
from kerasprune.adapters.keras.speed import Prepared, Runner, TfliteError
from kerasprune.core import cost

L = keras.layers
FAST = {"repeats": 2, "warmup": 1, "min_time": 0.0}
"""The fewest calls that still time something: for tests, which assert no speed."""


def small_cnn(name: str = "cnn") -> keras.Sequential:
    keras.utils.set_random_seed(0)
    return keras.Sequential([
        keras.Input((8, 8, 3)),
        L.Conv2D(8, 3, padding="same", activation="relu", name="conv1"),
        L.MaxPooling2D(name="pool"),
        L.Conv2D(8, 3, padding="same", activation="relu", name="conv2"),
        L.GlobalAveragePooling2D(name="gap"),
        L.Dense(4, name="out"),
    ], name=name)


@pytest.fixture(scope="module")
def pair() -> tuple[keras.Model, keras.Model]:
    model = small_cnn()
    return model, kerasprune.delete_neurons(model, {"conv1": [0, 1, 2, 3], "conv2": [1, 5]})


class Log(Runner):
    """A runner that records which model ran at which batch size, in order, and returns the
    model's true outputs (computed once), so that the output check passes."""

    name = "log"

    def __init__(self) -> None:
        self.calls: list[tuple[str, int]] = []
        self.labels: dict[int, str] = {}

    def prepare(self, model: keras.Model, inputs: Mapping[int, list[np.ndarray]]) -> Prepared:
        label = self.labels[id(model)]

        def call(b: int, xs: list[np.ndarray]) -> Any:
            out = keras.ops.convert_to_numpy(model(xs[0], training=False))

            def run() -> Any:
                self.calls.append((label, int(xs[0].shape[0])))
                return out
            return run

        return Prepared({b: call(b, xs) for b, xs in inputs.items()}, "a log")


def test_speedup_report_is_well_formed(pair: tuple[keras.Model, keras.Model]) -> None:
    model, pruned = pair
    runners = ("predict_on_batch", "compiled")  # predict: see the next test (it is slow)
    report = kerasprune.speedup(model, pruned, batch_sizes=(1, 3), runners=runners,
                                tflite=False, **FAST)
    assert [(r.runner, r.batch_size) for r in report.rows] == [
        (name, b) for name in runners for b in (1, 3)]
    (p0, f0), (p1, f1) = (cost.total(kerasprune.costs(m)) for m in pair)
    assert f0 > f1 and p0 > p1  # the premise: the pruned model is smaller
    assert report.flop_ratio == pytest.approx(f0 / f1)
    assert report.params_ratio == pytest.approx(model.count_params() / pruned.count_params())
    for row in report.rows:
        for t in (row.original, row.pruned):
            assert (t.runner, t.batch_size) == (row.runner, row.batch_size)
            assert len(t.samples) == 2 and all(s > 0 for s in t.samples)
            assert t.q1 <= t.median <= t.q3
            assert t.per_sample == pytest.approx(t.median / t.batch_size)
            assert t.output_shapes == ((row.batch_size, 4),)
            assert t.max_abs_diff <= 1e-5  # every runner computed the model's outputs
        assert row.speedup == pytest.approx(row.original.median / row.pruned.median)
        assert row.efficiency == pytest.approx(row.speedup / report.flop_ratio)
    assert report.row("compiled", 3) is report.rows[-1]
    with pytest.raises(KeyError, match="timed"):
        report.row("compiled", 2)
    assert set(report.original.paths) == set(runners)
    assert report.skipped == {}
    table = str(report)
    for name in runners:
        assert name in table
    assert f"{report.flop_ratio:.2f}x fewer" in table
    with pytest.raises(dataclasses.FrozenInstanceError):
        report.rows = ()  # type: ignore[misc]
    as_json = json.loads(json.dumps(dataclasses.asdict(report)))  # plain data all through
    assert as_json["rows"][0]["original"]["samples"] == list(report.rows[0].original.samples)


def test_measure_latency_runs_predict_at_each_batch_size(monkeypatch: pytest.MonkeyPatch,
                                                         ) -> None:
    model = small_cnn()
    seen: list[int] = []
    predict = model.predict

    def counting(x: Any, **kwargs: Any) -> Any:
        seen.append(int(x.shape[0]))
        assert kwargs["batch_size"] == x.shape[0]  # one step per call
        return predict(x, **kwargs)

    monkeypatch.setattr(model, "predict", counting)
    x = np.random.default_rng(1).random((2, 8, 8, 3), dtype=np.float32)
    report = kerasprune.measure_latency(model, x, batch_sizes=(5, 2), runners=("predict",),
                                        tflite=False, repeats=3, warmup=2, min_time=0.0)
    assert [report.timing("predict", b).number for b in (5, 2)] == [1, 1]  # min_time=0
    # per batch size: the checked call, one more warm-up, the calibration call; then the
    # timed blocks, a repeat at a time
    assert seen == [5, 5, 5, 2, 2, 2] + [5, 2] * 3
    assert report.timing("predict", 5).max_abs_diff <= 1e-5  # rows of x repeated, as called
    assert report.flops == cost.total(kerasprune.costs(model))[1]
    assert "predict" in str(report) and report.runners == ("predict",)


def test_comparison_interleaves(monkeypatch: pytest.MonkeyPatch,
                                pair: tuple[keras.Model, keras.Model]) -> None:
    model, pruned = pair
    log = Log()
    log.labels = {id(model): "A", id(pruned): "B"}
    monkeypatch.setitem(keras_speed.RUNNERS, "log", log)
    report = kerasprune.speedup(model, pruned, batch_sizes=(1, 2), runners=("log",),
                                tflite=False, repeats=3, warmup=1, min_time=0.0)
    assert all(t.number == 1 for t in report.original.timings + report.pruned.timings)
    timed = log.calls[-12:]  # 3 repeats x 2 batch sizes x 2 models, one call per block
    assert timed == [("A", 1), ("B", 1), ("A", 2), ("B", 2)] * 3
    warm = log.calls[:-12]
    assert sorted(set(warm)) == [("A", 1), ("A", 2), ("B", 1), ("B", 2)]


def test_blocks_repeat_fast_calls_to_fill_min_time(monkeypatch: pytest.MonkeyPatch,
                                                    pair: tuple[keras.Model, keras.Model],
                                                    ) -> None:
    model, pruned = pair
    log = Log()
    log.labels = {id(model): "A", id(pruned): "B"}
    monkeypatch.setitem(keras_speed.RUNNERS, "log", log)
    report = kerasprune.speedup(model, pruned, batch_sizes=(1,), runners=("log",),
                                tflite=False, repeats=2, warmup=1, min_time=0.005)
    a, b = report.original.timings[0], report.pruned.timings[0]
    assert a.number > 1 and b.number > 1  # a list append takes far less than 5 ms
    assert log.calls.count(("A", 1)) == 2 + 2 * a.number
    assert log.calls.count(("B", 1)) == 2 + 2 * b.number


@pytest.mark.heavy  # off TensorFlow, a TensorFlow process converts: JAX covers that path
def test_tflite_matches_keras() -> None:
    a = keras.Input((4,), name="a")
    b = keras.Input((4,), name="b")
    h = L.Dense(6, activation="relu", name="h")(a)
    out1 = L.Subtract(name="diff")([L.Dense(4, name="p")(h), b])  # input order matters
    out2 = L.Dense(3, name="q")(h)
    model = keras.Model([a, b], [out1, out2], name="two_in_two_out")
    report = kerasprune.measure_latency(model, batch_sizes=(1, 3), runners=(), tflite=True,
                                        **FAST)
    assert report.runners == ("tflite",) and "LiteRT" in report.paths["tflite"]
    for size in (1, 3):
        t = report.timing("tflite", size)
        assert t.output_shapes == ((size, 4), (size, 3))
        assert t.max_abs_diff <= keras_speed.TFLITE_ATOL + keras_speed.TFLITE_RTOL * 10
    if BACKEND != "tensorflow":
        return  # off TensorFlow each conversion starts a TensorFlow process: one is enough
    # and independently of measure_latency's own check:
    from ai_edge_litert.interpreter import Interpreter

    content = keras_speed.to_tflite(model)
    runner = Interpreter(model_content=content).get_signature_runner()
    rng = np.random.default_rng(2)
    xa, xb = (rng.normal(size=(5, 4)).astype(np.float32) for _ in range(2))
    got = runner(input_0=xa, input_1=xb)
    want = [keras.ops.convert_to_numpy(t) for t in model([xa, xb], training=False)]
    np.testing.assert_allclose(got["output_0"], want[0], atol=1e-5)
    np.testing.assert_allclose(got["output_1"], want[1], atol=1e-5)


@keras.saving.register_keras_serializable("kerasprune_tests")
class Erfinv(L.Layer):
    """A layer whose op TFLite's builtin ops lack."""

    def call(self, x: Any) -> Any:
        return keras.ops.erfinv(keras.ops.tanh(x) * 0.5)


@pytest.mark.heavy  # as above
def test_tflite_auto_skips_what_cannot_convert_and_says_why() -> None:
    model = keras.Sequential([keras.Input((4,)), L.Dense(4, name="d"), Erfinv(name="erfinv")],
                             name="with_erfinv")
    pruned = keras.Sequential([keras.Input((4,)), L.Dense(2, name="d"), Erfinv(name="erfinv")],
                              name="with_erfinv_pruned")  # no rule for Erfinv: by hand
    report = kerasprune.speedup(model, pruned, batch_sizes=(2,), runners=("compiled",),
                                tflite="auto", **FAST)
    why = report.skipped["tflite"]
    # TensorFlow's converter names the op; elsewhere the re-creation in a TensorFlow process
    # fails first (this test module is not importable there)
    assert "tf.Erfinv" in why if BACKEND == "tensorflow" else "TensorFlow" in why
    assert report.original.runners == ("compiled",)
    assert "skipped tflite" in str(report)
    if BACKEND != "tensorflow":
        return  # the same error, raised: see below (one more TensorFlow process here)
    with pytest.raises(TfliteError, match="with_erfinv"):
        kerasprune.measure_latency(model, batch_sizes=(2,), runners=(), tflite=True, **FAST)


TF_ONLY = pytest.mark.skipif(
    BACKEND != "tensorflow", reason="the same check on every backend; off TensorFlow each "
    "conversion starts a TensorFlow process (slow): test_tflite_matches_keras covers that")


@TF_ONLY
def test_tflite_disagreeing_with_keras_is_skipped_or_an_error(
        monkeypatch: pytest.MonkeyPatch) -> None:
    model = small_cnn()
    monkeypatch.setattr(keras_speed, "TFLITE_ATOL", -1.0)  # nothing can match now
    report = kerasprune.measure_latency(model, batch_sizes=(1,), runners=("compiled",),
                                        tflite="auto", **FAST)
    assert "differ from Keras'" in report.skipped["tflite"]
    assert report.runners == ("compiled",)
    with pytest.raises(TfliteError, match="batch size 1 differ from Keras'"):
        kerasprune.measure_latency(model, batch_sizes=(1,), runners=(), tflite=True, **FAST)


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"batch_sizes": ()}, "batch_sizes is empty"),
    ({"batch_sizes": (0, 4)}, "positive integers, got 0"),
    ({"batch_sizes": (2.0,)}, "positive integers, got 2.0"),
    ({"batch_sizes": (True,)}, "positive integers, got True"),
    ({"batch_sizes": (4, 4)}, "repeated values"),
    ({"repeats": 0}, "repeats must be an integer >= 1"),
    ({"warmup": 0}, "warmup must be an integer >= 1"),
    ({"min_time": -1.0}, "min_time"),
    ({"runners": ("nope",)}, "unknown runner 'nope'"),
    ({"runners": ("tflite",)}, "tflite=True or tflite='auto'"),
    ({"runners": ("compiled", "compiled")}, "repeated names"),
    ({"runners": (), "tflite": False}, "nothing to time"),
    ({"tflite": "yes"}, "tflite must be True, False or 'auto'"),
    ({"tflite_threads": 0}, "tflite_threads"),
    ({"x": np.zeros((2, 9, 9, 3), np.float32)}, "takes (None, 8, 8, 3)"),
    ({"x": [np.zeros((2, 8, 8, 3), np.float32)] * 2}, "2 array(s)"),
])
def test_bad_arguments_are_refused_before_anything_runs(
        monkeypatch: pytest.MonkeyPatch, pair: tuple[keras.Model, keras.Model],
        kwargs: dict[str, Any], message: str) -> None:
    model, pruned = pair
    log = Log()
    monkeypatch.setitem(keras_speed.RUNNERS, "log", log)
    kwargs = {"runners": ("log",), **kwargs}
    with pytest.raises(ValueError) as info:
        kerasprune.speedup(model, pruned, **kwargs)
    assert message in str(info.value)
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        kerasprune.measure_latency(model, **kwargs)
    assert log.calls == []


@pytest.mark.parametrize(("runner", "backend"), [("xla", "tensorflow"),
                                                  ("torch_compile", "torch")])
def test_backend_specific_runners_say_where_they_run(runner: str, backend: str) -> None:
    if backend == BACKEND:
        assert keras_speed.RUNNERS[runner].unavailable() is None
    else:
        with pytest.raises(ValueError, match=f"runner '{runner}' cannot run here: .*the "
                                             f"backend is {BACKEND}"):
            kerasprune.measure_latency(small_cnn(), runners=(runner,))


def test_models_must_take_the_same_inputs(pair: tuple[keras.Model, keras.Model]) -> None:
    model, _ = pair
    other = keras.Sequential([keras.Input((8, 8, 1)), L.Flatten(), L.Dense(4)], name="gray")
    with pytest.raises(ValueError, match=r"original 'cnn' takes \(None, 8, 8, 3\) float32, "
                                         r"pruned 'gray' takes \(None, 8, 8, 1\) float32"):
        kerasprune.speedup(model, other)
    with pytest.raises(ValueError, match="same model object"):
        kerasprune.speedup(model, model)
    with pytest.raises(TypeError, match=r"pruned must be a keras\.Model, got str"):
        kerasprune.speedup(model, "pruned.keras")  # type: ignore[arg-type]


def test_unknown_input_dimension_needs_x() -> None:
    model = keras.Sequential([keras.Input((None, 3)), L.Conv1D(4, 3), L.GlobalMaxPooling1D()],
                             name="variable_length")
    with pytest.raises(ValueError, match=r"unknown dimension .* pass x"):
        kerasprune.measure_latency(model)
    x = np.ones((1, 10, 3), np.float32)
    report = kerasprune.measure_latency(model, x, batch_sizes=(2,), runners=("compiled",),
                                        tflite=False, **FAST)
    assert report.timing("compiled", 2).output_shapes == ((2, 4),)
    assert report.flops is None and "cannot count" in report.skipped["count"]


def test_speedup_benchmark_runs() -> None:
    """benchmarks/speedup.py's worker on a tiny model, one repeat, no TFLite (tested above)."""
    import importlib.util
    import sys
    from pathlib import Path

    path = Path(__file__).resolve().parents[2] / "benchmarks" / "speedup.py"
    spec = importlib.util.spec_from_file_location("kerasprune_bench_speedup", path)
    assert spec is not None and spec.loader is not None
    bench = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = bench
    spec.loader.exec_module(bench)

    model = bench.build("tiny", quick=True)
    request, keep, flops = bench.uniform_request(model, 0.5)
    assert set(request) == {"conv1", "conv2"}  # not the output
    assert all(len(v) == 8 for v in request.values())  # 16 -> 8: multiples of 8
    assert 0 < flops < 1 and 0 < keep < 1
    result = bench.worker("tiny", quick=True, repeats=1, xla=False, tflite=False)
    assert result["flop_ratio"] == pytest.approx(1 / flops)
    assert [(r["runner"], r["batch_size"]) for r in result["rows"]] == [
        (name, b) for name in ("predict", "predict_on_batch", "compiled") for b in (1, 32)]
    assert "tiny" in bench.summary([result]) and "speed-up" in result["table"]
