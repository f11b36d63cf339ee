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


# --------------------------------------------------------------------------------------
# Channel-chart quality (docs/csi.md, 'Channel charting'): how well a 2-D chart of the
# CSI keeps the geometry of the true positions. Points are [n, d] arrays; every pairwise
# quantity is an [n, n] array, so callers keep n to a few thousand.


def pairwise_distances(points: np.ndarray) -> np.ndarray:
  """Euclidean distances ``[n, n]`` (float64), from coordinate differences, so the
  diagonal is exactly 0 and equal inputs give bit-equal outputs."""
  p = np.asarray(points, np.float64)
  if p.ndim != 2:
    raise ValueError(f'points must be [n, d], got shape {p.shape}')
  sq = np.zeros((len(p), len(p)))
  for axis in range(p.shape[1]):  # d is 2 or 3: one [n, n] temporary at a time
    diff = p[:, axis, None] - p[None, :, axis]
    sq += diff * diff
  return np.sqrt(sq)


def neighbour_ranks(points: np.ndarray) -> np.ndarray:
  """``ranks[i, j]``: the rank of j among all points ordered by distance from i (0 is i
  itself, 1 its nearest neighbour); ties in the order of the index (stable sort)."""
  d = pairwise_distances(points)
  n = len(d)
  # The point itself first even when another point sits exactly on it.
  np.fill_diagonal(d, -1.0)
  order = np.argsort(d, axis=1, kind='stable')
  ranks = np.empty((n, n), np.int32)
  np.put_along_axis(ranks, order, np.broadcast_to(np.arange(n, dtype=np.int32), (n, n)), axis=1)
  return ranks


def trustworthiness_continuity(true: np.ndarray, chart: np.ndarray, k: int) -> tuple[float, float]:
  """Trustworthiness and continuity of ``chart`` against ``true`` positions (Venna and
  Kaski, 2001; as used in the channel-charting papers).

  With ``r(i, j)`` the rank of j from i in the true positions, ``r^(i, j)`` its rank in
  the chart, ``U_k(i)`` the points among i's k nearest in the chart but not in the true
  positions, and ``V_k(i)`` the converse::

    TW(k) = 1 - 2 / (n k (2n - 3k - 1)) sum_i sum_{j in U_k(i)} (r(i, j) - k)
    CT(k) = 1 - 2 / (n k (2n - 3k - 1)) sum_i sum_{j in V_k(i)} (r^(i, j) - k)

  Both are 1 for a chart with the true neighbourhoods and about 0.5 for a random one;
  TW penalises false neighbours in the chart, CT true neighbours the chart tore apart.
  The normalisation needs ``1 <= k < n / 2``.
  """
  true = np.asarray(true, np.float64)
  chart = np.asarray(chart, np.float64)
  n = len(true)
  if len(chart) != n:
    raise ValueError(f'{n} positions but {len(chart)} chart points')
  if not 1 <= k < n / 2:
    raise ValueError(f'k must satisfy 1 <= k < n / 2 (n = {n}), got {k}')
  r_true = neighbour_ranks(true)
  r_chart = neighbour_ranks(chart)
  in_true = (r_true >= 1) & (r_true <= k)
  in_chart = (r_chart >= 1) & (r_chart <= k)
  scale = 2.0 / (n * k * (2.0 * n - 3.0 * k - 1.0))
  tw = 1.0 - scale * float(np.sum(r_true - k, where=in_chart & ~in_true, dtype=np.float64))
  ct = 1.0 - scale * float(np.sum(r_chart - k, where=in_true & ~in_chart, dtype=np.float64))
  return tw, ct


def kruskal_stress(true: np.ndarray, chart: np.ndarray) -> float:
  """Kruskal's stress with the optimal scale of the chart (Studer et al., 'Channel
  Charting')::

    KS = sqrt( sum_{i<j} (d_ij - beta d^_ij)^2 / sum_{i<j} d_ij^2 ),
    beta = sum d_ij d^_ij / sum d^_ij^2,

  ``d`` the true and ``d^`` the chart distances: 0 for a chart equal to the positions up
  to scale, rotation and translation; 1 for a chart collapsed to a point."""
  d = pairwise_distances(true)
  d_hat = pairwise_distances(chart)
  upper = np.triu_indices(len(d), 1)
  d, d_hat = d[upper], d_hat[upper]
  denom = float(np.sum(d_hat * d_hat))
  beta = float(np.sum(d * d_hat)) / denom if denom > 0 else 0.0
  total = float(np.sum(d * d))
  if total == 0:
    raise ValueError('the true positions are all equal: stress is undefined')
  return float(np.sqrt(np.sum((d - beta * d_hat) ** 2) / total))


def fit_affine(chart: np.ndarray, positions: np.ndarray) -> np.ndarray:
  """Least-squares affine map from chart points ``[n, c]`` to positions ``[n, d]``:
  ``[c + 1, d]``, the linear part then the offset (:func:`apply_affine`)."""
  chart = np.asarray(chart, np.float64)
  positions = np.asarray(positions, np.float64)
  if len(chart) != len(positions) or len(chart) <= chart.shape[1]:
    raise ValueError(
      f'an affine map from {chart.shape[1]}-D needs more than {chart.shape[1]} point pairs; '
      f'got {len(chart)} chart points and {len(positions)} positions'
    )
  design = np.concatenate([chart, np.ones((len(chart), 1))], axis=1)
  coef, *_ = np.linalg.lstsq(design, positions, rcond=None)
  return coef


def apply_affine(coef: np.ndarray, chart: np.ndarray) -> np.ndarray:
  chart = np.asarray(chart, np.float64)
  return chart @ coef[:-1] + coef[-1]
