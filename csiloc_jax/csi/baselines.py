"""Classic baselines on the same splits as the learned models: the training mean and kNN.

Where this sits: beside :mod:`.train`. It reads the labelled set through the same
reader and feature cache (:func:`.reader.load_ctw`, one cache per feature), splits it
with :func:`.train.labelled_splits` (so train / validation / test are the models'), and
scores test predictions with :func:`.metrics.localization_metrics`::

  labelled set ──> feature cache (magnitude, covariance) ──> kNN fit on train,
  k and weighting chosen on validation ──> test metrics
  training positions ──> their mean ──> test metrics (the floor every model must beat)

kNN on the per-antenna, per-subcarrier amplitude is the classic fingerprint; kNN on the
trace-normalised spatial covariance R/tr(R) (:func:`.features.spatial_covariance`)
keeps the directions of arrival and averages out small-scale fading.
"""

from __future__ import annotations

import time

from absl import logging
import ml_collections
import numpy as np

from csiloc_jax.csi import metrics
from csiloc_jax.csi import reader

KNN_FEATURES = {'knn_magnitude': 'magnitude', 'knn_covariance': 'covariance'}
NEIGHBOURS = (1, 2, 3, 5, 8, 13, 21, 34)
WEIGHTINGS = ('uniform', 'inverse_distance')


def mean_predictor(train_positions: np.ndarray, num: int) -> np.ndarray:
  """The training positions' mean, ``num`` times: [num, 3]."""
  return np.broadcast_to(np.asarray(train_positions, np.float64).mean(0), (num, 3)).copy()


def _sq_distances(query: np.ndarray, train: np.ndarray) -> np.ndarray:
  """Squared Euclidean distances [q, n] (float64)."""
  q2 = np.einsum('ij,ij->i', query, query)[:, None]
  t2 = np.einsum('ij,ij->i', train, train)[None, :]
  return np.maximum(q2 + t2 - 2.0 * query @ train.T, 0.0)


def knn_candidates(
  train_x: np.ndarray, query_x: np.ndarray, max_k: int
) -> tuple[np.ndarray, np.ndarray]:
  """The ``max_k`` nearest training samples of every query: (indices, distances) [q, k],
  nearest first."""
  train_x = np.asarray(train_x, np.float64).reshape(len(train_x), -1)
  query_x = np.asarray(query_x, np.float64).reshape(len(query_x), -1)
  k = min(max_k, len(train_x))
  index, dist = [], []
  for lo in range(0, len(query_x), 512):  # bounded [512, n] distance blocks
    d2 = _sq_distances(query_x[lo : lo + 512], train_x)
    part = np.argpartition(d2, k - 1, axis=1)[:, :k]
    d_part = np.take_along_axis(d2, part, 1)
    order = np.argsort(d_part, axis=1, kind='stable')
    index.append(np.take_along_axis(part, order, 1))
    dist.append(np.sqrt(np.take_along_axis(d_part, order, 1)))
  return np.concatenate(index), np.concatenate(dist)


def knn_predict(
  train_y: np.ndarray, index: np.ndarray, dist: np.ndarray, k: int, weighting: str
) -> np.ndarray:
  """Positions from the ``k`` nearest candidates: plain or inverse-distance mean."""
  if weighting not in WEIGHTINGS:
    raise ValueError(f'weighting must be one of {WEIGHTINGS}, got {weighting!r}')
  neighbours = np.asarray(train_y, np.float64)[index[:, :k]]  # [q, k, 3]
  if weighting == 'uniform':
    return neighbours.mean(1)
  w = 1.0 / np.maximum(dist[:, :k], 1e-12)
  return np.einsum('qk,qkd->qd', w, neighbours) / w.sum(1, keepdims=True)


def _mean_distance(pred: np.ndarray, true: np.ndarray) -> float:
  return float(np.linalg.norm(pred - true, axis=-1).mean())


def knn_baseline(
  x: np.ndarray, y: np.ndarray, splits: dict[str, np.ndarray], ranges: np.ndarray
) -> dict:
  """kNN with k and weighting chosen by the validation split's mean distance error;
  returns the test metrics plus ``k``, ``weighting``, ``val_mean_distance_m`` and the
  whole validation grid."""
  train, val, test = splits['train'], splits['val'], splits['test']
  flat = np.asarray(x).reshape(len(x), -1)
  max_k = max(NEIGHBOURS)
  v_index, v_dist = knn_candidates(flat[train], flat[val], max_k)
  grid = {}
  for k in NEIGHBOURS:
    if k > len(train):
      continue
    for weighting in WEIGHTINGS:
      pred = knn_predict(y[train], v_index, v_dist, k, weighting)
      grid[f'{k}/{weighting}'] = _mean_distance(pred, y[val])
  best = min(grid, key=grid.get)
  k, weighting = int(best.split('/')[0]), best.split('/')[1]
  t_index, t_dist = knn_candidates(flat[train], flat[test], k)
  pred = knn_predict(y[train], t_index, t_dist, k, weighting)
  out = metrics.localization_metrics(pred, y[test], ranges)
  out.update(k=k, weighting=weighting, val_mean_distance_m=grid[best], val_grid=grid)
  return out


BASELINES = ('train_mean', *KNN_FEATURES)


def run_baselines(
  data: ml_collections.ConfigDict,
  root: str,
  splits: dict[str, np.ndarray],
  names: tuple[str, ...] = BASELINES,
) -> dict[str, dict]:
  """Test metrics of the ``names`` baselines (default: all of :data:`BASELINES`) on
  ``splits`` of the labelled set under ``root`` (``data`` is ``config.data``: cache
  folder, averaging, chunk size)."""
  unknown = set(names) - set(BASELINES)
  if unknown:
    raise ValueError(f'config.eval.baselines: unknown {sorted(unknown)}; known: {BASELINES}')
  results = {}
  positions = None
  for name, feature in KNN_FEATURES.items():
    if name not in names:
      continue
    start = time.perf_counter()
    cfg = ml_collections.ConfigDict(data.to_dict())
    cfg.feature = feature
    labelled = reader.load_ctw(cfg, root, need_unlabelled=False)['labelled']
    y = np.asarray(labelled.positions, np.float64)
    positions = y
    ranges = y.max(0) - y.min(0)
    results[name] = knn_baseline(np.asarray(labelled.features), y, splits, ranges)
    logging.info(
      'baseline %s: k=%d (%s), test MAE avg %.2f m, median distance %.2f m (%.1f s)',
      name,
      results[name]['k'],
      results[name]['weighting'],
      results[name]['mae']['average'],
      results[name]['distance_m']['median'],
      time.perf_counter() - start,
    )
  if 'train_mean' in names:
    if positions is None:
      cfg = ml_collections.ConfigDict(data.to_dict())
      labelled = reader.load_ctw(cfg, root, need_unlabelled=False)['labelled']
      positions = np.asarray(labelled.positions, np.float64)
    ranges = positions.max(0) - positions.min(0)
    mean = mean_predictor(positions[splits['train']], len(splits['test']))
    results['train_mean'] = metrics.localization_metrics(mean, positions[splits['test']], ranges)
    logging.info(
      'baseline train_mean: test MAE avg %.2f m', results['train_mean']['mae']['average']
    )
  return {name: results[name] for name in names}
