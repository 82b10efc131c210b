"""Tests of kerasprune.core.apoz: APoZ, streaming counts, and selecting high-APoZ neurons.

Pure NumPy: nothing here imports keras or tensorflow.
"""

from __future__ import annotations

import ast
import dataclasses
import math
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from kerasprune.core import apoz as apoz_module
from kerasprune.core.apoz import METHODS, ApozCounts, apoz, high_apoz, select_high_apoz

FAST = settings(max_examples=40, deadline=None)

# --------------------------------------------------------------------------------------------
# Hand-computed examples
# --------------------------------------------------------------------------------------------

# channels_last, shape (N=2, H=2, W=2, C=3): 8 values per channel.
#   channel 0: every value is 0                      -> 8/8 = 1.0
#   channel 1: 1..8, never 0                         -> 0/8 = 0.0
#   channel 2: 0, 5, 0, 1, 2, 0, 3, 4 (three zeros)  -> 3/8 = 0.375
CHANNELS_LAST = np.array(
    [
        [[[0, 1, 0], [0, 2, 5]], [[0, 3, 0], [0, 4, 1]]],
        [[[0, 5, 2], [0, 6, 0]], [[0, 7, 3], [0, 8, 4]]],
    ],
    dtype=np.float32,
)

# channels_first, shape (N=3, C=2, H=1, W=2): 6 values per channel.
#   channel 0: 0, 0 | 0.5, 0 | -0.0, 7  -> zeros 0, 0, 0, -0.0 = 4/6 = 2/3 (-0.0 is zero)
#   channel 1: 1, 0 | 2, 3   | 0, 0     -> zeros 0, 0, 0       = 3/6 = 0.5
CHANNELS_FIRST = np.array(
    [
        [[[0.0, 0.0]], [[1.0, 0.0]]],
        [[[0.5, 0.0]], [[2.0, 3.0]]],
        [[[-0.0, 7.0]], [[0.0, 0.0]]],
    ]
)


def test_apoz_channels_last_by_hand() -> None:
    out = apoz(CHANNELS_LAST)
    assert out.dtype == np.float64
    np.testing.assert_array_equal(out, [1.0, 0.0, 0.375])
    # The explicit positive axis gives the same.
    np.testing.assert_array_equal(apoz(CHANNELS_LAST, channel_axis=3), [1.0, 0.0, 0.375])


def test_apoz_channels_first_by_hand() -> None:
    out = apoz(CHANNELS_FIRST, channel_axis=1)
    np.testing.assert_allclose(out, [2 / 3, 0.5], rtol=0, atol=1e-15)
    # The same data laid out channels_last gives the same APoZ.
    np.testing.assert_array_equal(apoz(np.moveaxis(CHANNELS_FIRST, 1, -1)), out)
    # Counting along the wrong axis gives something else (the test can tell axes apart).
    assert apoz(CHANNELS_FIRST, channel_axis=-1).shape == (2,)
    assert not np.allclose(apoz(CHANNELS_FIRST, channel_axis=-1), out)


def test_apoz_dense_2d_and_negative_values() -> None:
    # Dense output (N=4, units=3). Negative values are not zeros (no ReLU here).
    #   unit 0: 0, 0, 0, 0       -> 1.0
    #   unit 1: -1, 0, 2, -3     -> 0.25
    #   unit 2: 1e-30, 5, 6, 7   -> 0.0 (tiny is not zero)
    x = np.array([[0, -1, 1e-30], [0, 0, 5], [0, 2, 6], [0, -3, 7]])
    np.testing.assert_array_equal(apoz(x), [1.0, 0.25, 0.0])


def test_apoz_integer_and_bool_activations() -> None:
    np.testing.assert_array_equal(apoz(np.array([[0, 3], [0, 0]], dtype=np.int8)), [1.0, 0.5])
    np.testing.assert_array_equal(apoz([[True, False], [False, False]]), [0.5, 1.0])


def test_apoz_one_dimensional_is_one_sample_per_channel() -> None:
    np.testing.assert_array_equal(apoz([0.0, 2.0, 0.0]), [1.0, 0.0, 1.0])


def test_apoz_nan_is_an_error_naming_the_count() -> None:
    x = CHANNELS_LAST.copy()
    x[0, 0, 0, 1] = np.nan
    x[1, 1, 1, 2] = np.nan
    with pytest.raises(ValueError, match=r"2 NaN values"):
        apoz(x)
    with pytest.raises(ValueError, match=r"1 NaN value\b"):
        apoz([[0.0, np.nan]])


def test_apoz_infinity_is_not_zero() -> None:
    np.testing.assert_array_equal(apoz([[np.inf, 0.0], [-np.inf, 0.0]]), [0.0, 1.0])


@pytest.mark.parametrize(
    "shape", [(0,), (0, 3), (5, 0), (2, 0, 4), (0, 2, 2, 3)], ids=lambda s: str(s)
)
def test_apoz_empty_is_an_error(shape: tuple[int, ...]) -> None:
    with pytest.raises(ValueError, match="empty"):
        apoz(np.zeros(shape))


@pytest.mark.parametrize("axis", [4, -5, 100])
def test_apoz_axis_out_of_range(axis: int) -> None:
    with pytest.raises(ValueError, match="out of range"):
        apoz(CHANNELS_LAST, channel_axis=axis)


def test_apoz_bad_inputs() -> None:
    with pytest.raises(ValueError, match="scalar"):
        apoz(np.float64(0.0))
    with pytest.raises(TypeError, match="channel_axis"):
        apoz(CHANNELS_LAST, channel_axis=True)
    with pytest.raises(TypeError, match="channel_axis"):
        apoz(CHANNELS_LAST, channel_axis=1.0)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="numeric"):
        apoz(np.array([["a", "b"]]))


# --------------------------------------------------------------------------------------------
# ApozCounts
# --------------------------------------------------------------------------------------------


def test_counts_update_matches_apoz_by_hand() -> None:
    counts = ApozCounts.empty(3).update(CHANNELS_LAST)
    assert counts.zeros.tolist() == [8, 0, 3]
    assert counts.total == 8
    assert counts.channels == 3
    np.testing.assert_array_equal(counts.result(), [1.0, 0.0, 0.375])

    first = ApozCounts.empty(2).update(CHANNELS_FIRST, channel_axis=1)
    assert first.zeros.tolist() == [4, 3]
    assert first.total == 6


def test_counts_batches_add_up() -> None:
    # Batch 1 (channels_last slice n=0): ch0 4/4, ch1 0/4, ch2 2/4 (0, 5, 0, 1).
    # Batch 2 (n=1):                     ch0 4/4, ch1 0/4, ch2 1/4 (2, 0, 3, 4).
    counts = ApozCounts.empty(3)
    one = counts.update(CHANNELS_LAST[:1])
    two = one.update(CHANNELS_LAST[1:])
    assert one.zeros.tolist() == [4, 0, 2] and one.total == 4
    assert two.zeros.tolist() == [8, 0, 3] and two.total == 8


def test_counts_are_immutable() -> None:
    start = ApozCounts.empty(3)
    after = start.update(CHANNELS_LAST)
    assert after is not start
    assert start.total == 0 and start.zeros.tolist() == [0, 0, 0]
    with pytest.raises(dataclasses.FrozenInstanceError):
        after.total = 0  # type: ignore[misc]
    with pytest.raises(ValueError, match="read-only"):
        after.zeros[0] = 0
    # The constructor copies: changing the caller's array changes nothing.
    source = np.array([1, 2], dtype=np.int64)
    counts = ApozCounts(source, 5)
    source[0] = 4
    assert counts.zeros.tolist() == [1, 2]
    # merge and update_counts return new objects too.
    merged = after.merge(after)
    assert merged.total == 16 and after.total == 8
    added = after.update_counts([1, 1, 1], 1)
    assert added.total == 9 and after.total == 8


def test_counts_empty_and_result_errors() -> None:
    empty = ApozCounts.empty(4)
    assert empty.zeros.dtype == np.int64
    assert empty.zeros.tolist() == [0, 0, 0, 0]
    assert empty.total == 0
    assert isinstance(empty.total, int)
    with pytest.raises(ValueError, match="total is 0"):
        empty.result()
    for bad in (0, -1):
        with pytest.raises(ValueError, match="positive"):
            ApozCounts.empty(bad)
    with pytest.raises(TypeError):
        ApozCounts.empty(True)
    with pytest.raises(TypeError):
        ApozCounts.empty(2.0)  # type: ignore[arg-type]
    assert ApozCounts.empty(np.int32(2)).channels == 2


def test_counts_infer_channels() -> None:
    unknown = ApozCounts.empty()
    assert unknown == ApozCounts.empty(None)
    assert unknown.channels is None
    assert unknown.zeros.shape == (0,)
    with pytest.raises(ValueError, match="total is 0"):
        unknown.result()
    # The first batch fixes the channel count; later batches must match it.
    counts = unknown.update(CHANNELS_FIRST, channel_axis=1)
    assert counts.channels == 2 and counts.zeros.tolist() == [4, 3]
    with pytest.raises(ValueError, match="mismatch"):
        counts.update(CHANNELS_LAST)
    # update_counts and merge fix it too, from either side.
    assert unknown.update_counts([1, 2, 3], 4) == ApozCounts(np.array([1, 2, 3]), 4)
    assert unknown.merge(counts) == counts
    assert counts.merge(unknown) == counts
    assert unknown.merge(unknown) == unknown


def test_counts_update_errors() -> None:
    counts = ApozCounts.empty(3)
    with pytest.raises(ValueError, match=r"mismatch.*3 channels.*2"):
        counts.update(np.zeros((4, 2)))
    with pytest.raises(ValueError, match="mismatch"):
        counts.update(CHANNELS_LAST, channel_axis=0)  # 2 "channels" along axis 0
    bad = CHANNELS_LAST.copy()
    bad[..., 2] = np.nan  # 8 NaNs
    with pytest.raises(ValueError, match=r"\b8 NaN values"):
        counts.update(bad)
    with pytest.raises(ValueError, match="out of range"):
        counts.update(CHANNELS_LAST, channel_axis=7)
    with pytest.raises(ValueError, match="no channels"):
        ApozCounts.empty().update(np.zeros((3, 0)))
    # A failed update leaves the counts as they were (they cannot change anyway).
    assert counts == ApozCounts.empty(3)


def test_counts_update_with_no_samples_adds_nothing() -> None:
    counts = ApozCounts.empty(3).update(CHANNELS_LAST)
    same = counts.update(np.zeros((0, 2, 2, 3)))
    assert same == counts and same is not counts
    with pytest.raises(ValueError, match="mismatch"):
        counts.update(np.zeros((0, 2, 2, 5)))


def test_counts_memory_does_not_grow_with_samples() -> None:
    counts = ApozCounts.empty(5)
    rng = np.random.default_rng(0)
    for n in (1, 10, 100, 1000):
        counts = counts.update(np.maximum(rng.normal(size=(n, 2, 5)), 0.0))
    assert counts.zeros.shape == (5,)
    assert counts.total == 2 * (1 + 10 + 100 + 1000)
    # ReLU of a standard normal is zero about half the time.
    assert np.all(np.abs(counts.result() - 0.5) < 0.1)


def test_constructor_validation() -> None:
    assert ApozCounts(np.array([0, 2]), 2).result().tolist() == [0.0, 1.0]
    with pytest.raises(ValueError, match="exceed"):
        ApozCounts(np.array([3]), 2)
    with pytest.raises(ValueError, match=">= 0"):
        ApozCounts(np.array([-1]), 2)
    with pytest.raises(ValueError, match="no channels"):
        ApozCounts(np.zeros(0, dtype=np.int64), 5)
    with pytest.raises(ValueError, match="total must be >= 0"):
        ApozCounts(np.array([0]), -1)
    with pytest.raises(TypeError, match="integers"):
        ApozCounts(np.array([0.0]), 1)
    with pytest.raises(ValueError, match="1-D"):
        ApozCounts(np.zeros((2, 2), dtype=np.int64), 1)
    # A NumPy integer total is stored as a Python int.
    counts = ApozCounts(np.array([1], dtype=np.int32), np.int64(3))
    assert type(counts.total) is int and counts.zeros.dtype == np.int64


def test_counts_equality_and_hash() -> None:
    a = ApozCounts(np.array([1, 2]), 3)
    b = ApozCounts(np.array([1, 2], dtype=np.int32), 3)
    assert a == b and hash(a) == hash(b)
    assert a != ApozCounts(np.array([1, 2]), 4)
    assert a != ApozCounts(np.array([1, 3]), 3)
    assert a != ApozCounts(np.array([1, 2, 0]), 3)
    assert a != "not counts"
    assert len({a, b}) == 1


# -- merging -----------------------------------------------------------------------------------

# Activations with many exact zeros (like a ReLU's output), and some negative zeros.
_values = st.sampled_from([0.0, 0.0, 0.0, -0.0, 0.5, 1.0, 3.25, -2.0])


@st.composite
def _batch_and_splits(draw: st.DrawFn) -> tuple[np.ndarray, int, list[int]]:
    ndim = draw(st.integers(2, 4))
    shape = draw(hnp.array_shapes(min_dims=ndim, max_dims=ndim, min_side=1, max_side=5))
    x = draw(hnp.arrays(np.float64, shape, elements=_values))
    channel_axis = draw(st.integers(1, ndim - 1) | st.just(-1))
    cuts = draw(st.lists(st.integers(0, shape[0]), max_size=4))
    return x, channel_axis, sorted(cuts)


@FAST
@given(_batch_and_splits())
def test_merging_shards_equals_one_pass(case: tuple[np.ndarray, int, list[int]]) -> None:
    x, channel_axis, cuts = case
    channels = x.shape[channel_axis]
    one_pass = ApozCounts.empty(channels).update(x, channel_axis)
    shards = np.split(x, cuts, axis=0)  # may include empty shards
    partial = [ApozCounts.empty(channels).update(s, channel_axis) for s in shards]

    # Merged left to right, in reverse, and as a tree: all exactly equal to one pass.
    merged = ApozCounts.empty(channels)
    for p in partial:
        merged = merged.merge(p)
    reverse = ApozCounts.empty(None)
    for p in reversed(partial):
        reverse = reverse.merge(p)
    tree = partial
    while len(tree) > 1:
        tree = [
            tree[i].merge(tree[i + 1]) if i + 1 < len(tree) else tree[i]
            for i in range(0, len(tree), 2)
        ]
    assert merged == one_pass
    assert reverse == one_pass
    assert tree[0] == one_pass

    # Sequential updates over the same shards agree too, and so does apoz() on everything.
    sequential = ApozCounts.empty(None)
    for s in shards:
        sequential = sequential.update(s, channel_axis)
    assert sequential == one_pass
    assert one_pass.total == x.size // channels
    np.testing.assert_array_equal(one_pass.result(), apoz(x, channel_axis))
    assert int(one_pass.zeros.sum()) == np.count_nonzero(x == 0)


def test_merge_errors() -> None:
    three = ApozCounts.empty(3).update(CHANNELS_LAST)
    with pytest.raises(ValueError, match="mismatch"):
        three.merge(ApozCounts.empty(2))
    with pytest.raises(TypeError, match="ApozCounts"):
        three.merge([8, 0, 3])  # type: ignore[arg-type]


# -- update_counts -----------------------------------------------------------------------------


@FAST
@given(_batch_and_splits(), st.sampled_from([np.int32, np.int64, np.uint16, np.uint64]))
def test_update_counts_equals_update(
    case: tuple[np.ndarray, int, list[int]], dtype: type[np.integer]
) -> None:
    x, channel_axis, _ = case
    channels = x.shape[channel_axis]
    # Counted "elsewhere": a different way of counting, in a different integer type.
    flat = np.moveaxis(x, channel_axis, -1).reshape(-1, channels)
    zeros = np.array([np.sum(flat[:, c] == 0) for c in range(channels)], dtype=dtype)
    total = flat.shape[0]
    start = ApozCounts.empty(channels).update(np.ones((1, channels)))  # some prior counts
    assert start.update_counts(zeros, total) == start.update(x, channel_axis)
    assert ApozCounts.empty(None).update_counts(zeros, total) == ApozCounts.empty(None).update(
        x, channel_axis
    )


def test_update_counts_validation() -> None:
    counts = ApozCounts.empty(3)
    assert counts.update_counts([0, 5, 5], 5).zeros.tolist() == [0, 5, 5]
    assert counts.update_counts([0, 0, 0], 0).total == 0
    with pytest.raises(ValueError, match=">= 0"):
        counts.update_counts([0, -1, 0], 5)
    with pytest.raises(ValueError, match=r"exceed.*channel 2 has 6 zeros out of 5"):
        counts.update_counts([0, 1, 6], 5)
    with pytest.raises(ValueError, match="mismatch"):
        counts.update_counts([0, 1], 5)
    with pytest.raises(ValueError, match="1-D"):
        counts.update_counts([[0, 1, 2]], 5)
    with pytest.raises(ValueError, match="empty"):
        ApozCounts.empty().update_counts(np.zeros(0, dtype=np.int64), 0)
    with pytest.raises(ValueError, match="total must be >= 0"):
        counts.update_counts([0, 0, 0], -1)
    with pytest.raises(TypeError, match="integers"):
        counts.update_counts([0.0, 1.0, 2.0], 5)
    with pytest.raises(TypeError, match="total"):
        counts.update_counts([0, 1, 2], 5.0)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="total"):
        counts.update_counts([0, 1, 1], True)


# -- huge counts -------------------------------------------------------------------------------


def test_huge_counts_stay_exact() -> None:
    tera = 10**12
    counts = ApozCounts.empty(3)
    for _ in range(3):
        counts = counts.update_counts(np.array([tera - 1, 0, tera]), tera)
    assert counts.total == 3 * tera
    assert type(counts.total) is int
    assert counts.zeros.tolist() == [3 * tera - 3, 0, 3 * tera]
    assert counts.zeros.dtype == np.int64
    result = counts.result()
    assert result[2] == 1.0 and result[1] == 0.0
    assert result[0] == pytest.approx(1 - 1e-12, rel=1e-15)
    assert result[0] < 1.0

    # Beyond float64's 2**53, counts are still exact: 2**53 + 1 would round to 2**53.
    big = ApozCounts.empty(1).update_counts([2**53], 2**53 + 10)
    bigger = big.update_counts([1], 1).merge(ApozCounts(np.array([0]), 1))
    assert int(bigger.zeros[0]) == 2**53 + 1
    assert bigger.total == 2**53 + 12
    assert float(2**53 + 1) == float(2**53)  # why the check above matters


def test_counts_past_int64_overflow_error() -> None:
    near = ApozCounts(np.array([0]), 2**63 - 1)
    with pytest.raises(OverflowError):
        near.update_counts([0], 1)
    with pytest.raises(OverflowError):
        near.merge(near)
    with pytest.raises(OverflowError):
        ApozCounts(np.array([0]), 2**63)


# --------------------------------------------------------------------------------------------
# high_apoz
# --------------------------------------------------------------------------------------------

# Six neurons 0.0, 0.2, ..., 1.0: mean 0.5, population variance
# (0.25 + 0.09 + 0.01 + 0.01 + 0.09 + 0.25) / 6 = 0.7 / 6, std = 0.34157...
RAMP = [0.0, 0.2, 0.4, 0.6, 0.8, 1.0]


def test_std_by_hand() -> None:
    # k=1: threshold 0.5 + 0.3416 = 0.8416 -> only 1.0
    assert select_high_apoz(RAMP).tolist() == [5]
    assert select_high_apoz(RAMP, "std", k=1.0).tolist() == [5]
    # k=0.5: threshold 0.5 + 0.1708 = 0.6708 -> 0.8 and 1.0
    assert select_high_apoz(RAMP, k=0.5).tolist() == [4, 5]
    # k=0: threshold = the mean 0.5, strictly above -> 0.6, 0.8, 1.0
    assert select_high_apoz(RAMP, k=0).tolist() == [3, 4, 5]
    # k=2: threshold 1.183 -> nothing
    assert select_high_apoz(RAMP, k=2).tolist() == []
    # The paper's setting: mean 0.325, std 0.3345 -> threshold 0.6595 -> only 0.9.
    assert select_high_apoz([0.1, 0.2, 0.1, 0.9]).tolist() == [3]


def test_std_constant_vector_selects_none() -> None:
    for value in (0.0, 0.1, 0.3, 0.7, 1.0):
        for size in (1, 2, 3, 7, 1000):
            constant = np.full(size, value)
            assert select_high_apoz(constant).tolist() == []
            assert select_high_apoz(constant, k=0).tolist() == []
            assert select_high_apoz(constant, "both", k=0, cutoff=0.0).tolist() == []


def test_absolute_by_hand() -> None:
    # Strictly above the cutoff: 0.5 itself stays.
    assert select_high_apoz([0.3, 0.7, 0.5, 0.71], "absolute", cutoff=0.5).tolist() == [1, 3]
    assert select_high_apoz([0.0, 0.1, 0.2], "absolute", cutoff=0.0).tolist() == [1, 2]
    assert select_high_apoz([0.9, 1.0, 0.99], "absolute", cutoff=1.0).tolist() == []
    assert select_high_apoz(RAMP, "absolute", cutoff=0.7).tolist() == [4, 5]


def test_absolute_all_above_cutoff_keeps_the_lowest() -> None:
    # All four are above 0.5: the lowest, 0.6, is kept; it is tied between neurons 1 and 3,
    # and the lower index (1) is kept.
    assert select_high_apoz([0.9, 0.6, 0.8, 0.6], "absolute", cutoff=0.5).tolist() == [0, 2, 3]
    # A single neuron is never deleted.
    assert select_high_apoz([1.0], "absolute", cutoff=0.0).tolist() == []
    # A constant vector above the cutoff keeps neuron 0.
    assert select_high_apoz([0.8, 0.8, 0.8], "absolute", cutoff=0.1).tolist() == [1, 2]


def test_both_by_hand() -> None:
    # std with k=0 selects [3, 4, 5] (> 0.5); absolute 0.7 selects [4, 5]; both -> [4, 5].
    assert select_high_apoz(RAMP, "both", k=0, cutoff=0.7).tolist() == [4, 5]
    # std with k=1 selects [5]; absolute 0.3 selects [2, 3, 4, 5]; both -> [5].
    assert select_high_apoz(RAMP, "both", cutoff=0.3).tolist() == [5]
    # absolute 1.0 selects nothing, so both selects nothing.
    assert select_high_apoz(RAMP, "both", k=0, cutoff=1.0).tolist() == []


def test_top_by_hand() -> None:
    values = [0.5, 0.9, 0.1, 0.9, 0.3]
    # floor(0.5 * 5) = 2: the two 0.9s.
    assert select_high_apoz(values, "top", fraction=0.5).tolist() == [1, 3]
    # floor(0.2 * 5) = 1: a tie between neurons 1 and 3; the higher index goes first.
    assert select_high_apoz(values, "top", fraction=0.2).tolist() == [3]
    # floor(0.6 * 5) = 3: 0.9, 0.9, 0.5.
    assert select_high_apoz(values, "top", fraction=0.6).tolist() == [0, 1, 3]
    # floor(0.1 * 5) = 0: nothing (rounded down).
    assert select_high_apoz(values, "top", fraction=0.1).tolist() == []
    # floor(0.99 * 3) = 2, never all three.
    assert select_high_apoz([0.1, 0.2, 0.3], "top", fraction=0.99).tolist() == [1, 2]
    # A constant vector: ties everywhere; the highest indices go first.
    assert select_high_apoz([0.4] * 4, "top", fraction=0.5).tolist() == [2, 3]


def test_top_rounds_the_decimal_fraction() -> None:
    # 0.29 * 100 is 28.999999999999996 in floats; the decimal 0.29 of 100 neurons is 29.
    assert 0.29 * 100 < 29
    values = np.linspace(0.0, 1.0, 100)
    assert len(select_high_apoz(values, "top", fraction=0.29)) == 29
    assert select_high_apoz(values, "top", fraction=0.29).tolist() == list(range(71, 100))


def test_output_is_sorted_int64() -> None:
    values = [0.9, 0.1, 0.95, 0.2, 0.99, 0.0, 0.97]
    for out in (
        select_high_apoz(values, k=0),
        select_high_apoz(values, "absolute", cutoff=0.5),
        select_high_apoz(values, "both", k=0, cutoff=0.5),
        select_high_apoz(values, "top", fraction=0.6),  # floor(4.2) = 4
    ):
        assert out.dtype == np.int64
        assert out.ndim == 1
        assert out.tolist() == sorted(out.tolist())
        assert out.tolist() == [0, 2, 4, 6]


def test_accepts_numpy_and_other_dtypes() -> None:
    assert select_high_apoz(np.array(RAMP, dtype=np.float32)).tolist() == [5]
    ints = np.array([0, 0, 1], dtype=np.int8)
    assert select_high_apoz(ints, "absolute", cutoff=0.5).tolist() == [2]
    assert select_high_apoz(RAMP, "absolute", cutoff=np.float32(0.7)).tolist() == [4, 5]


def test_unknown_method_lists_the_valid_ones() -> None:
    with pytest.raises(ValueError, match="unknown method 'mean'") as info:
        select_high_apoz(RAMP, "mean")
    for name in METHODS:
        assert repr(name) in str(info.value)
    assert set(METHODS) == {"std", "absolute", "both", "top"}


@pytest.mark.parametrize(
    ("method", "kwargs", "message"),
    [
        ("absolute", {}, "requires cutoff"),
        ("both", {}, "requires cutoff"),
        ("top", {}, "requires fraction"),
        ("std", {"cutoff": 0.5}, "does not use cutoff"),
        ("top", {"fraction": 0.5, "cutoff": 0.5}, "does not use cutoff"),
        ("std", {"fraction": 0.5}, "does not use fraction"),
        ("absolute", {"cutoff": 0.5, "fraction": 0.5}, "does not use fraction"),
        ("absolute", {"cutoff": 1.5}, r"cutoff must be in \[0.0, 1.0\]"),
        ("absolute", {"cutoff": -0.1}, "cutoff must be in"),
        ("both", {"cutoff": float("nan")}, "cutoff must be in"),
        ("top", {"fraction": 0.0}, "0 < fraction < 1"),
        ("top", {"fraction": 1.0}, "0 < fraction < 1"),
        ("top", {"fraction": 1.5}, "fraction must satisfy 0 < fraction < 1"),
        ("top", {"fraction": float("nan")}, "fraction must satisfy 0 < fraction < 1"),
        ("std", {"k": -0.5}, "k must be in"),
        ("std", {"k": float("inf")}, "k must be finite"),
        ("std", {"k": float("nan")}, "k must be in"),
    ],
)
def test_invalid_parameters(method: str, kwargs: dict[str, float], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        select_high_apoz(RAMP, method, **kwargs)


def test_invalid_parameter_types() -> None:
    with pytest.raises(TypeError, match="k must be a real number"):
        select_high_apoz(RAMP, k=True)
    with pytest.raises(TypeError, match="cutoff must be a real number"):
        select_high_apoz(RAMP, "absolute", cutoff="0.5")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("values", "error", "message"),
    [
        ([0.1, float("nan"), 0.3, float("nan")], ValueError, "2 NaN values"),
        ([], ValueError, "empty"),
        ([[0.1, 0.2]], ValueError, "1-D"),
        (0.5, ValueError, "1-D"),
        ([0.1, 1.5], ValueError, r"\[0, 1\]"),
        ([-0.1, 0.5], ValueError, r"\[0, 1\]"),
        ([0.1, float("inf")], ValueError, r"\[0, 1\]"),
        (["a", "b"], TypeError, "numeric"),
        ([0.1 + 0j, 0.2], TypeError, "real"),
    ],
)
def test_invalid_apoz_values(values: object, error: type[Exception], message: str) -> None:
    with pytest.raises(error, match=message):
        select_high_apoz(values)  # type: ignore[arg-type]


# -- properties --------------------------------------------------------------------------------

# APoZ vectors with many ties (drawn from a few values) or spread out, including constants.
_apoz_vectors = st.one_of(
    st.lists(st.sampled_from([0.0, 0.25, 0.5, 0.75, 1.0]), min_size=1, max_size=30),
    st.lists(st.floats(0.0, 1.0), min_size=1, max_size=30),
    st.tuples(st.floats(0.0, 1.0), st.integers(1, 50)).map(lambda t: [t[0]] * t[1]),
)


@st.composite
def _method_and_params(draw: st.DrawFn) -> tuple[str, dict[str, float]]:
    method = draw(st.sampled_from(METHODS))
    params: dict[str, float] = {}
    if method in ("std", "both"):
        params["k"] = draw(st.floats(0.0, 5.0))
    if method in ("absolute", "both"):
        params["cutoff"] = draw(st.floats(0.0, 1.0))
    if method == "top":
        params["fraction"] = draw(
            st.floats(0.0, 1.0, exclude_min=True, exclude_max=True) | st.just(1 - 1e-16)
        )
    return method, params


@FAST
@given(_apoz_vectors, _method_and_params())
def test_never_selects_every_neuron(
    values: list[float], method_params: tuple[str, dict[str, float]]
) -> None:
    method, params = method_params
    out = select_high_apoz(values, method, **params)
    size = len(values)
    assert len(out) < size, "every neuron selected"
    assert out.dtype == np.int64
    chosen = out.tolist()
    assert chosen == sorted(set(chosen)), "indices must be sorted and unique"
    assert all(0 <= i < size for i in chosen)


@FAST
@given(_apoz_vectors, _method_and_params())
def test_selection_follows_its_rule(
    values: list[float], method_params: tuple[str, dict[str, float]]
) -> None:
    method, params = method_params
    arr = np.asarray(values)
    chosen = set(select_high_apoz(values, method, **params).tolist())
    kept = set(range(len(values))) - chosen
    if method == "top":
        # floor of the decimal fraction times the size, never all.
        share = Fraction(repr(params["fraction"])) * len(values)
        assert len(chosen) == min(math.floor(share), len(values) - 1)
        # Everything deleted has APoZ at least as high as everything kept.
        if chosen and kept:
            assert min(arr[list(chosen)]) >= max(arr[list(kept)])
        return
    mask = np.ones(len(values), dtype=bool)
    if method in ("std", "both"):
        if arr.min() == arr.max():
            mask[:] = False
        mask &= arr > arr.mean() + params["k"] * arr.std()
    if method in ("absolute", "both"):
        mask &= arr > params["cutoff"]
    rule = set(np.flatnonzero(mask).tolist())
    if len(rule) < len(values):
        assert chosen == rule
    else:
        # Everything passed the rule: exactly one neuron is kept, the lowest APoZ (then index).
        assert method == "absolute"
        lowest = int(np.argmin(arr))  # argmin returns the first of ties
        assert kept == {lowest}


def test_core_module_imports_no_framework() -> None:
    tree = ast.parse(Path(apoz_module.__file__).read_text())
    imported: set[str] = set()
    own: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            imported.add(node.module.split(".")[0])
            if node.module.startswith("kerasprune"):
                own.add(node.module)
    assert imported, "found no imports at all: the check is broken"
    assert imported <= {
        "__future__",
        "collections",
        "dataclasses",
        "fractions",
        "kerasprune",
        "math",
        "numpy",
        "operator",
        "typing",
        "warnings",
    }
    assert all(module.startswith("kerasprune.core.") for module in own), own
    assert not imported & {"keras", "tensorflow", "jax", "torch"}


def test_the_former_core_name_high_apoz_warns_and_selects_the_same() -> None:
    with pytest.warns(DeprecationWarning, match="select_high_apoz"):
        old = high_apoz(RAMP, "both", k=0, cutoff=0.7)
    assert old.tolist() == select_high_apoz(RAMP, "both", k=0, cutoff=0.7).tolist() == [4, 5]
