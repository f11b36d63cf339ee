"""Localization metrics of the paper (eqs. 4–11) and the positioning community.

Computed in NumPy on host arrays of predictions ``p`` and ground truth ``y``, shape
``[n, 3]`` in metres. The normalising ranges are per axis over the *whole labelled set*
(``max − min``), as the paper's NMAE numbers confirm (646, 943, 41 m on CTW-2020). RMSE
uses the usual definition (square root of the mean); the paper's printed eq. 8 puts
``1/n`` outside the root, which Table I's values contradict (docs/csi.md, 'Metrics').
"""

from __future__ import annotations

import numpy as np

AXES = ('x', 'y', 'z')


def _per_axis(values: np.ndarray, average: float, axes: tuple[str, ...]) -> dict:
  out = {a: float(v) for a, v in zip(axes, values)}
  out['average'] = float(average)
  return out


def localization_metrics(pred: np.ndarray, true: np.ndarray, ranges: np.ndarray) -> dict:
  """The ``metrics.json`` ``test`` block: MAE, NMAE, RMSE, NRMSE and distance stats."""
  pred = np.asarray(pred, np.float64)
  true = np.asarray(true, np.float64)
  ranges = np.asarray(ranges, np.float64)
  if pred.shape != true.shape or pred.ndim != 2:
    raise ValueError(f'predictions {pred.shape} and targets {true.shape} must both be [n, d]')
  if len(pred) == 0:
    raise ValueError('cannot compute metrics on an empty split')
  axes = AXES[: pred.shape[1]]
  # A coordinate that never varies (range 0, e.g. a flat synthetic z) cannot be
  # normalised; its normalised errors are then left in metres instead of becoming inf.
  safe_ranges = np.where(ranges > 0, ranges, 1.0)
  err = pred - true
  mae = np.mean(np.abs(err), axis=0)
  rmse = np.sqrt(np.mean(err**2, axis=0))
  nmae = mae / safe_ranges
  nrmse = rmse / safe_ranges
  dist3 = np.linalg.norm(err, axis=1)
  dist2 = np.linalg.norm(err[:, :2], axis=1)

  def stats(d):
    return {
      'mean': float(d.mean()),
      'median': float(np.median(d)),
      'p90': float(np.percentile(d, 90)),
      'p95': float(np.percentile(d, 95)),
    }

  return {
    'num_samples': int(len(pred)),
    'mae': _per_axis(mae, mae.mean(), axes),
    'nmae': _per_axis(nmae, nmae.mean(), axes),
    'rmse': _per_axis(rmse, np.sqrt(np.mean(err**2)), axes),
    'nrmse': _per_axis(nrmse, nrmse.mean(), axes),
    'distance_m': stats(dist3),
    'distance_2d_m': stats(dist2),
    'ranges_m': _per_axis(ranges, ranges.mean(), axes),
  }
