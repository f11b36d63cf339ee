"""Eqs. 4-11 of the paper (with the usual RMSE) on hand-computed cases."""

import numpy as np
import pytest

from csiloc_jax.csi import metrics


def test_metrics_match_hand_computation():
  true = np.array([[0.0, 0.0, 0.0], [10.0, 20.0, 1.0]])
  pred = np.array([[3.0, -4.0, 0.0], [10.0, 20.0, 3.0]])
  ranges = np.array([100.0, 200.0, 4.0])
  m = metrics.localization_metrics(pred, true, ranges)
  assert m['mae']['x'] == pytest.approx(1.5)
  assert m['mae']['y'] == pytest.approx(2.0)
  assert m['mae']['z'] == pytest.approx(1.0)
  assert m['mae']['average'] == pytest.approx(1.5)
  assert m['nmae']['x'] == pytest.approx(0.015)
  assert m['nmae']['z'] == pytest.approx(0.25)
  assert m['nmae']['average'] == pytest.approx((0.015 + 0.01 + 0.25) / 3)
  assert m['rmse']['x'] == pytest.approx(np.sqrt(4.5))
  assert m['rmse']['y'] == pytest.approx(np.sqrt(8.0))
  assert m['rmse']['z'] == pytest.approx(np.sqrt(2.0))
  # RMSE average: root of the mean over axes and samples of squared error.
  assert m['rmse']['average'] == pytest.approx(np.sqrt((9 + 16 + 0 + 0 + 0 + 4) / 6))
  assert m['nrmse']['x'] == pytest.approx(np.sqrt(4.5) / 100)
  assert m['nrmse']['y'] == pytest.approx(np.sqrt(8.0) / 200)
  assert m['nrmse']['z'] == pytest.approx(np.sqrt(2.0) / 4)
  # NRMSE average: the mean of the per-axis NRMSEs (docs/csi.md), not the pooled RMSE
  # over the mean range (0.0285 here) nor the RMSE average over a range.
  assert m['nrmse']['average'] == pytest.approx(
    (np.sqrt(4.5) / 100 + np.sqrt(8.0) / 200 + np.sqrt(2.0) / 4) / 3
  )
  assert m['num_samples'] == 2 and m['ranges_m']['z'] == 4.0
  assert m['distance_m']['mean'] == pytest.approx((5.0 + 2.0) / 2)
  assert m['distance_m']['median'] == pytest.approx(3.5)
  assert m['distance_m']['p90'] == pytest.approx(2.0 + 0.9 * 3.0)
  assert m['distance_2d_m']['mean'] == pytest.approx(2.5)


def test_zero_range_axis_stays_finite():
  true = np.zeros((3, 3))
  pred = np.ones((3, 3))
  m = metrics.localization_metrics(pred, true, np.array([10.0, 10.0, 0.0]))
  assert np.isfinite(m['nmae']['z']) and m['nmae']['z'] == pytest.approx(1.0)


def test_shape_mismatch_is_an_error():
  with pytest.raises(ValueError, match='must both be'):
    metrics.localization_metrics(np.zeros((3, 3)), np.zeros((2, 3)), np.ones(3))


def test_a_single_sample_a_small_range_and_the_tail_percentiles():
  # One sample is a split like any other; a range under 1 m still normalises.
  m = metrics.localization_metrics(
    np.array([[1.0, 2.0, 0.3]]), np.zeros((1, 3)), np.array([4.0, 8.0, 0.5])
  )
  assert m['num_samples'] == 1
  assert m['nmae']['z'] == pytest.approx(0.6) and m['nrmse']['z'] == pytest.approx(0.6)
  distances = np.arange(1.0, 101.0)  # Errors of 1..100 m along x.
  pred = np.stack([distances, np.zeros(100), np.zeros(100)], 1)
  m = metrics.localization_metrics(pred, np.zeros((100, 3)), np.ones(3))
  assert m['distance_m']['p95'] == pytest.approx(np.percentile(distances, 95))
  assert m['distance_m']['p90'] == pytest.approx(np.percentile(distances, 90))
  assert m['distance_m']['p95'] > m['distance_m']['p90']


def test_half_precision_inputs_are_computed_in_double():
  # Squared errors of 300 m overflow float16 (max 65504): the metrics must not.
  true = np.zeros((4, 3), np.float16)
  pred = np.full((4, 3), 300.0, np.float16)
  m = metrics.localization_metrics(pred, true, np.array([1000, 1001, 1003], np.float16))
  assert m['rmse']['average'] == pytest.approx(300.0)
  assert m['distance_m']['mean'] == pytest.approx(300.0 * np.sqrt(3))
  assert m['nrmse']['x'] == pytest.approx(0.3)
  # (1001.33 in double; float16 has no such number.)
  assert m['ranges_m']['average'] == pytest.approx(3004 / 3, rel=1e-9)


def test_an_empty_split_is_an_error():
  with pytest.raises(ValueError, match='^cannot compute metrics on an empty split$'):
    metrics.localization_metrics(np.zeros((0, 3)), np.zeros((0, 3)), np.ones(3))


# --------------------------------------------------------------------------------------
# Chart-quality helpers (their definitions: tests/test_csi_charting.py).


def test_neighbour_ranks_break_ties_by_index():
  # A 6 x 6 grid: every point has many neighbours at equal distances.
  grid = np.stack(np.meshgrid(np.arange(6.0), np.arange(6.0)), -1).reshape(-1, 2)
  ranks = metrics.neighbour_ranks(grid)
  n = len(grid)
  for i in range(n):
    d = np.linalg.norm(grid - grid[i], axis=1)
    d[i] = -np.inf
    order = np.lexsort((np.arange(n), d))  # By distance, then by index.
    np.testing.assert_array_equal(ranks[i, order], np.arange(n), err_msg=str(i))


def test_kruskal_stress_is_scale_free_and_defined_for_unit_distances():
  rng = np.random.default_rng(0)
  pos = rng.normal(size=(12, 2))
  # A chart a thousandth the size (its squared distances sum to far below 1).
  assert metrics.kruskal_stress(pos, 1e-3 * pos) == pytest.approx(0.0, abs=1e-9)
  # Two points 1 m apart: the squared distances sum to exactly 1.
  pair = np.array([[0.0, 0.0], [1.0, 0.0]])
  assert metrics.kruskal_stress(pair, pair) == 0.0
  with pytest.raises(ValueError, match='^the true positions are all equal: stress is undefined$'):
    metrics.kruskal_stress(np.ones((4, 2)), pos[:4])


def test_affine_fit_needs_more_pairs_than_dimensions_and_works_in_double():
  chart = np.array([[0.0, 0.0], [1.0, 0.0]])
  with pytest.raises(
    ValueError,
    match=r'^an affine map from 2-D needs more than 2 point pairs; got 2 chart points and 2 '
    r'positions$',
  ):
    metrics.fit_affine(chart, chart)
  with pytest.raises(ValueError, match='got 4 chart points and 3 positions'):
    metrics.fit_affine(np.eye(4)[:, :2], np.zeros((3, 2)))
  # Half-precision inputs: fitted and applied in double.
  square = np.array([[0, 0], [1, 0], [0, 1], [1, 1]], np.float16)
  coef = metrics.fit_affine(square, square * 2 + np.float16(1000))
  assert coef.dtype == np.float64
  np.testing.assert_allclose(coef, [[2, 0], [0, 2], [1000, 1000]], atol=1e-9)
  shift = np.array([[1, 0], [0, 1], [0.1, 0]], np.float16)
  out = metrics.apply_affine(shift, np.array([[1000.0, 1.0]], np.float16))
  # (As a Python float: numpy would compare in float16, where the two are equal.)
  assert float(out[0, 0]) == pytest.approx(1000.0 + float(np.float16(0.1)), abs=1e-9)


def test_pairwise_distances_in_double_and_their_shape_check():
  # 300 m squared overflows float16.
  d = metrics.pairwise_distances(np.array([[0.0, 0.0], [300.0, 0.0]], np.float16))
  assert d.dtype == np.float64 and d[0, 1] == 300.0
  with pytest.raises(ValueError, match=r'points must be \[n, d\], got shape \(4,\)'):
    metrics.pairwise_distances(np.zeros(4))


def test_trustworthiness_needs_k_below_half_the_points_and_equal_lengths():
  pos = np.random.default_rng(1).normal(size=(10, 2))
  metrics.trustworthiness_continuity(pos, pos, 4)  # k < n / 2
  with pytest.raises(ValueError, match=r'k must satisfy 1 <= k < n / 2 \(n = 10\), got 5'):
    metrics.trustworthiness_continuity(pos, pos, 5)
  with pytest.raises(ValueError, match='^10 positions but 9 chart points$'):
    metrics.trustworthiness_continuity(pos, pos[:9], 2)
