"""Tests of kerasprune.core.criteria and kerasprune.core.stats against NumPy references.

Pure NumPy. Each criterion is checked value by value against a reference written out here
with plain loops, and on a planted unimportant neuron, which must score lowest.
"""

from __future__ import annotations

import numpy as np
import pytest
from core_graphs import bn, conv, dense, depthwise, plain, values

from kerasprune.core.apoz import ApozCounts
from kerasprune.core.criteria import (
    CRITERIA,
    Criterion,
    LayerScores,
    Random,
    WeightNorm,
    criterion_for,
    layer_scores,
    register_criterion,
)
from kerasprune.core.graph import Graph, LayerSpec, PruneError
from kerasprune.core.groups import ChainStep, ChannelAnalysis, analyze_channels
from kerasprune.core.stats import ActivationStats, TaylorStats

RNG = np.random.default_rng(7)


def scores_of(graph: Graph, criterion: str | Criterion, layer: str,
              stats: dict[str, object] | None = None) -> np.ndarray:
    result = layer_scores(analyze_channels(graph), criterion, stats, [layer])
    assert layer in result.scores, result.skipped
    return np.asarray(result.scores[layer])


def lowest(scores: np.ndarray) -> int:
    return int(np.argmin(scores))


# --------------------------------------------------------------------------------------------
# Weight norms (Li et al. 2017)
# --------------------------------------------------------------------------------------------


def head(graph_layers: list[LayerSpec], shapes: list[tuple[int, ...]]) -> Graph:
    return Graph.chain((4, 4, 3), graph_layers, shapes)


def planted_conv() -> tuple[Graph, np.ndarray]:
    c = conv("c", 3, 5, k=3)
    kernel = np.array(c.weights["kernel"])
    kernel[..., 3] *= 1e-3
    c = c.with_changes({}, {"kernel": kernel})
    g = head([c, plain("gap", "GlobalAveragePooling2D"), dense("out", 5, 2)],
             [(4, 4, 5), (5,), (2,)])
    return g, kernel


def test_l1_and_l2_of_a_conv_are_the_filters_kernel_norms() -> None:
    g, kernel = planted_conv()
    l1 = scores_of(g, "l1", "c")
    l2 = scores_of(g, "l2", "c")
    for f in range(5):
        assert l1[f] == pytest.approx(np.abs(kernel[..., f]).sum())  # bias not included
        assert l2[f] == pytest.approx(np.sqrt((kernel[..., f] ** 2).sum()))
    assert lowest(l1) == lowest(l2) == 3


def test_l1_of_dense_units_reads_kernel_columns() -> None:
    d1 = dense("d1", 5, 6)
    kernel = np.array(d1.weights["kernel"])
    kernel[:, 2] = 0.0
    g = Graph.chain((5,), [d1.with_changes({}, {"kernel": kernel}), dense("out", 6, 2)],
                    [(6,), (2,)])
    l1 = scores_of(g, "l1", "d1")
    np.testing.assert_allclose(l1, np.abs(kernel).sum(axis=0))
    assert l1[2] == 0.0 and lowest(l1) == 2


def test_weight_norms_of_transposed_separable_and_embedding_layers() -> None:
    t = LayerSpec("t", "Conv2DTranspose", {"filters": 4, "data_format": "channels_last"},
                  {"kernel": values((3, 3, 4, 3)), "bias": values((4,))})
    sep = LayerSpec("s", "SeparableConv2D", {"filters": 5, "depth_multiplier": 2,
                                             "data_format": "channels_last"},
                    {"depthwise_kernel": values((3, 3, 4, 2)),
                     "pointwise_kernel": values((1, 1, 8, 5)), "bias": values((5,))})
    g = head([t, sep, plain("gap", "GlobalAveragePooling2D"), dense("out", 5, 2)],
             [(4, 4, 4), (4, 4, 5), (5,), (2,)])
    kt = np.asarray(t.weights["kernel"])
    np.testing.assert_allclose(scores_of(g, "l1", "t"),
                               [np.abs(kt[:, :, f, :]).sum() for f in range(4)])
    pw = np.asarray(sep.weights["pointwise_kernel"])
    np.testing.assert_allclose(scores_of(g, "l2", "s"),
                               [np.sqrt((pw[..., f] ** 2).sum()) for f in range(5)])
    emb = LayerSpec("e", "Embedding", {"output_dim": 3}, {"embeddings": values((10, 3))})
    ge = Graph.chain((7,), [emb, plain("flat", "Flatten"), dense("out", 21, 2)],
                     [(7, 3), (21,), (2,)])
    table = np.asarray(emb.weights["embeddings"])
    np.testing.assert_allclose(scores_of(ge, "l1", "e"), np.abs(table).sum(axis=0))


def test_depthwise_neurons_score_their_input_channels_kernel() -> None:
    dw = depthwise("dw", 3, multiplier=2, k=3)
    kernel = np.asarray(dw.weights["kernel"])
    g = head([conv("c", 3, 3), dw, plain("gap", "GlobalAveragePooling2D"), dense("out", 6, 2)],
             [(4, 4, 3), (4, 4, 6), (6,), (2,)])
    l1 = scores_of(g, "l1", "dw")
    # Output o = c * 2 + i comes from input channel c; both outputs of c go together.
    np.testing.assert_allclose(l1, [np.abs(kernel[:, :, o // 2, :]).sum() for o in range(6)])


# --------------------------------------------------------------------------------------------
# Batch-norm scale (Network Slimming)
# --------------------------------------------------------------------------------------------


def test_bn_scale_reads_the_batch_norm_the_channels_reach() -> None:
    norm = bn("bn", 4)
    gamma = np.array([0.5, -2.0, 0.01, 1.0])
    norm = norm.with_changes({}, {"gamma": gamma})
    g = head([conv("c", 3, 4), plain("relu", "ReLU"), norm,
              plain("gap", "GlobalAveragePooling2D"), dense("out", 4, 2)],
             [(4, 4, 4), (4, 4, 4), (4, 4, 4), (4,), (2,)])
    scale = scores_of(g, "bn_scale", "c")
    np.testing.assert_allclose(scale, np.abs(gamma))
    assert lowest(scale) == 2


def test_bn_scale_skips_layers_without_a_batch_norm_on_their_chain() -> None:
    g = head([conv("c", 3, 4), plain("pool", "MaxPooling2D", pool_size=2), bn("bn", 4),
              plain("gap", "GlobalAveragePooling2D"), dense("d", 4, 3), dense("out", 3, 2)],
             [(4, 4, 4), (2, 2, 4), (2, 2, 4), (4,), (3,), (2,)])
    result = layer_scores(analyze_channels(g), "bn_scale")
    assert set(result.scores) == set()
    assert "BatchNormalization" in result.skipped["c"] and "c" in result.skipped["c"]
    assert set(result.skipped) == {"c", "d"}  # out is blocked (a model output): not scored


# --------------------------------------------------------------------------------------------
# Data-driven criteria
# --------------------------------------------------------------------------------------------


def conv_relu() -> Graph:
    return head([conv("c", 3, 4), bn("bn", 4), plain("relu", "ReLU"),
                 plain("gap", "GlobalAveragePooling2D"), dense("out", 4, 2)],
                [(4, 4, 4), (4, 4, 4), (4, 4, 4), (4,), (2,)])


def activations(samples: int = 6) -> np.ndarray:
    a = np.maximum(RNG.standard_normal((samples, 4, 4, 4)), 0)
    a[..., 1] = 0.0  # planted: channel 1 never fires
    return a


def test_apoz_criterion_is_one_minus_apoz() -> None:
    a = activations()
    counts = ApozCounts.empty().update(a[:3]).update(a[3:])
    scores = scores_of(conv_relu(), "apoz", "c", {"c": counts})
    reference = [1 - np.mean(a[..., c] == 0) for c in range(4)]
    np.testing.assert_allclose(scores, reference)
    assert scores[1] == 0.0 and lowest(scores) == 1


def test_mean_activation_is_the_mean_magnitude() -> None:
    a = activations() - 0.25
    stats = ActivationStats.empty().update(a[:2]).update(a[2:])
    scores = scores_of(conv_relu(), "activation", "c", {"c": stats})
    np.testing.assert_allclose(scores, [np.abs(a[..., c]).mean() for c in range(4)])
    assert lowest(scores) == 1


def taylor_reference(a: np.ndarray, g: np.ndarray) -> np.ndarray:
    out = np.zeros(a.shape[-1])
    for s in range(a.shape[0]):
        for c in range(a.shape[-1]):
            out[c] += abs(np.mean(a[s, ..., c] * g[s, ..., c]))
    return out / a.shape[0]


def test_taylor_is_the_mean_over_samples_of_the_abs_mean_product() -> None:
    a = activations()
    grads = RNG.standard_normal(a.shape)
    stats = TaylorStats.empty(4).update(a[:4], grads[:4]).update(a[4:], grads[4:])
    scores = scores_of(conv_relu(), "taylor", "c", {"c": stats})
    np.testing.assert_allclose(scores, taylor_reference(a, grads))
    assert scores[1] == 0.0 and lowest(scores) == 1


def test_data_criteria_are_measured_at_the_end_of_the_chain() -> None:
    analysis = analyze_channels(conv_relu())
    assert CRITERIA["taylor"].site(analysis, "c") == ChainStep("relu", 3, 2)
    assert CRITERIA["activation"].site(analysis, "c") == ChainStep("relu", 3, 2)
    assert CRITERIA["apoz"].site(analysis, "c") is None  # kerasprune.core.apoz decides
    assert CRITERIA["l1"].site(analysis, "c") is None


@pytest.mark.parametrize("name", ["apoz", "activation", "taylor"])
def test_criteria_that_need_data_say_so_without_it(name: str) -> None:
    with pytest.raises(ValueError, match=r"needs .*statistics: pass stats="):
        layer_scores(analyze_channels(conv_relu()), name)


def test_statistics_are_checked_before_scoring() -> None:
    analysis = analyze_channels(conv_relu())
    good = ActivationStats.empty().update(activations())
    with pytest.raises(TypeError, match=r"stats\['c'\] must be TaylorStats"):
        layer_scores(analysis, "taylor", {"c": good})
    with pytest.raises(ValueError, match="3 channels but layer 'c' has 4 neurons"):
        layer_scores(analysis, "activation", {"c": ActivationStats.empty().update(np.ones(3))})
    with pytest.raises(ValueError, match=r"stats\['c'\] holds no measurement"):
        layer_scores(analysis, "activation", {"c": ActivationStats.empty(4)})
    with pytest.raises(ValueError, match="'relu', which is not a layer"):
        layer_scores(analysis, "activation", {"relu": good})
    # A layer without statistics is skipped, with the reason.
    result = layer_scores(analysis, "activation", {})
    assert result.scores == {} and "no ActivationStats" in result.skipped["c"]


# --------------------------------------------------------------------------------------------
# Random and the registry
# --------------------------------------------------------------------------------------------


def test_random_is_seeded_per_layer() -> None:
    g = conv_relu()
    first = scores_of(g, "random", "c")
    assert first.shape == (4,) and ((first >= 0) & (first < 1)).all()
    np.testing.assert_array_equal(first, scores_of(g, Random(seed=0), "c"))
    assert not np.array_equal(first, scores_of(g, Random(seed=1), "c"))
    with pytest.raises(ValueError, match="seed"):
        Random(seed=-1)


def test_unknown_criterion_lists_the_valid_ones() -> None:
    with pytest.raises(ValueError, match=r"unknown criterion 'l3'.*'apoz'.*'l1'.*'taylor'"):
        criterion_for("l3")
    assert criterion_for("l2") is CRITERIA["l2"]
    with pytest.raises(ValueError, match="order"):
        WeightNorm("l3", 3)  # type: ignore[arg-type]


def test_a_registered_criterion_is_used_by_name() -> None:
    class Index(Criterion):
        """Scores neuron i by i: the first neuron is the least important."""

        name = "index"
        needs = "nothing"

        def scores(self, analysis: ChannelAnalysis, layer: str,
                   stats: object) -> np.ndarray:
            return np.arange(analysis.group_of(layer).member(layer).width, dtype=float)

    register_criterion(Index())
    try:
        result = layer_scores(analyze_channels(conv_relu()), "index")
        assert isinstance(result, LayerScores) and result.criterion == "index"
        np.testing.assert_array_equal(result.scores["c"], [0, 1, 2, 3])
    finally:
        del CRITERIA["index"]
    with pytest.raises(TypeError):
        register_criterion("l1")  # type: ignore[arg-type]


def test_scores_of_the_wrong_length_are_refused() -> None:
    class Broken(Criterion):
        name = "broken"

        def scores(self, analysis: ChannelAnalysis, layer: str,
                   stats: object) -> np.ndarray:
            return np.ones(2)

    with pytest.raises(PruneError, match="'broken' gave"):
        layer_scores(analyze_channels(conv_relu()), Broken())


# --------------------------------------------------------------------------------------------
# Streaming statistics
# --------------------------------------------------------------------------------------------


def test_activation_stats_stream_and_merge_exactly_like_one_pass() -> None:
    a = RNG.standard_normal((9, 3, 5))
    one = ActivationStats.empty().update(a)
    parts = [ActivationStats.empty().update(a[i:i + 3]) for i in (0, 3, 6)]
    merged = parts[2].merge(parts[0]).merge(parts[1])
    assert merged.count == one.count == 27
    np.testing.assert_allclose(merged.result(), one.result(), rtol=1e-14)
    np.testing.assert_allclose(one.result(), np.abs(a).mean(axis=(0, 1)))
    first = ActivationStats.empty().update(np.moveaxis(a, -1, 1), channel_axis=1)
    assert first == one  # channels_first, same sums exactly
    assert hash(first) == hash(one)
    assert ActivationStats.empty().merge(one) == one and one.merge(ActivationStats.empty()) == one
    with pytest.raises(ValueError, match="read-only"):
        one.sums[0] = 1.0


def test_taylor_stats_merge_and_check_their_input() -> None:
    a, g = RNG.standard_normal((6, 2, 3)), RNG.standard_normal((6, 2, 3))
    whole = TaylorStats.empty().update(a, g)
    halves = TaylorStats.empty().update(a[:2], g[:2]).merge(TaylorStats.empty().update(a[2:],
                                                                                      g[2:]))
    np.testing.assert_allclose(halves.result(), whole.result(), rtol=1e-14)
    assert whole.count == 6
    np.testing.assert_allclose(whole.result(), taylor_reference(a, g))
    with pytest.raises(ValueError, match="differ in shape"):
        whole.update(a, g[:, :1])
    with pytest.raises(ValueError, match="sample axis"):
        whole.update(a, g, channel_axis=0)
    with pytest.raises(ValueError, match="channel count mismatch"):
        whole.update(a[..., :2], g[..., :2])
    with pytest.raises(TypeError, match="merge TaylorStats"):
        whole.merge(ActivationStats.empty().update(a))  # type: ignore[arg-type]


def test_statistics_refuse_bad_values() -> None:
    with pytest.raises(ValueError, match="1 NaN or infinite value"):
        ActivationStats.empty().update([[1.0, np.nan]])
    with pytest.raises(ValueError, match="NaN or infinite"):
        TaylorStats.empty().update([[1.0, 2.0]], [[np.inf, 0.0]])
    with pytest.raises(ValueError, match="out of range"):
        ActivationStats.empty().update(np.ones((2, 3)), channel_axis=2)
    with pytest.raises(TypeError, match="channel_axis"):
        ActivationStats.empty().update(np.ones((2, 3)), channel_axis=1.0)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="real numbers"):
        ActivationStats.empty().update(np.array(["a", "b"]))
    with pytest.raises(ValueError, match="no data measured"):
        ActivationStats.empty(3).result()
    with pytest.raises(ValueError, match="channels must be >= 1"):
        ActivationStats.empty(0)
    with pytest.raises(ValueError, match="count is 2 but there are no channels"):
        ActivationStats(np.zeros(0), 2)
    with pytest.raises(ValueError, match=">= 0"):
        ActivationStats(np.zeros(2), -1)
