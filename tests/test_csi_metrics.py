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
