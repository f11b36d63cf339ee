"""Survey regions: the file's ``region`` labels, or regions found from received paths.

Data flow: survey :class:`~csiloc_jax.mmwave.reader.Measurements` ->
:func:`assign_regions` -> one JADE problem and one tiny net per region.

A survey's ``region`` is read as a method input, but it is a coarse position label: it
says which room a sample was taken in. A survey without it is the truly label-free case:

* ``num_regions=None`` (default): regions are found by clustering samples on *which
  paths they received* (k-means on the 0/1 visibility vectors, k-means++ seeding, several
  seeds), with the count chosen automatically (:func:`choose_regions`): the count with
  the best mean silhouette among those whose every cluster is a solvable JADE problem
  (enough samples, >= 4 anchors seen by ``min_anchor_fraction`` of its samples, two of
  them physical APs). At 60 GHz walls block paths, so the set of received anchors
  separates rooms, and it needs no positions.
* ``num_regions=1``: the whole survey is one region — sound only when every part of the
  survey shares anchors with the rest.
* ``num_regions=k``: exactly k clusters.

Clustered region ids have no relation to any ``region`` a trajectory file may carry,
so the oracle and the "on the true region's net" figures are then not reported.
"""

from __future__ import annotations

from absl import logging
import numpy as np


def kmeans_visibility(
  visible: np.ndarray, k: int, seed: int = 0, num_iters: int = 50, num_init: int = 4
) -> np.ndarray:
  """k-means++ / Lloyd on 0/1 visibility vectors ``[T, M]``; returns labels ``[T]``.

  ``num_init`` seedings are run and the lowest within-cluster sum of squares wins (one
  seeding can merge two rooms and split a third).
  """
  x = visible.astype(np.float64)
  n = len(x)
  if k < 1 or k > n:
    raise ValueError(f'cannot cluster {n} survey samples into {k} regions')
  best, best_inertia = None, np.inf
  for init in range(num_init):
    labels, inertia = _lloyd(x, k, np.random.default_rng([seed, init]), num_iters)
    if inertia < best_inertia - 1e-9:
      best, best_inertia = labels, inertia
  # Relabel 0..k'-1 in order of first appearance so ids are stable and dense.
  _, first = np.unique(best, return_index=True)
  order = np.argsort(np.argsort(first))
  return order[np.unique(best, return_inverse=True)[1]].astype(np.int32)


def _lloyd(x: np.ndarray, k: int, rng: np.random.Generator, num_iters: int):
  n = len(x)
  centres = [x[rng.integers(n)]]
  for _ in range(1, k):  # Seeding: one pass per centre, vectorised over samples.
    d2 = np.min(_sq_dist(x, np.asarray(centres)), 1)
    probs = d2 / d2.sum() if d2.sum() > 0 else np.full(n, 1.0 / n)
    centres.append(x[rng.choice(n, p=probs)])
  centres = np.asarray(centres)
  labels = np.zeros(n, np.int64)
  for iteration in range(num_iters):  # Lloyd iterations, vectorised over samples.
    d2 = _sq_dist(x, centres)
    new = d2.argmin(1)
    if iteration > 0 and np.array_equal(new, labels):
      break
    labels = new
    counts = np.bincount(labels, minlength=k)
    sums = np.zeros_like(centres)
    np.add.at(sums, labels, x)
    # An emptied cluster keeps its old centre rather than becoming NaN.
    centres = np.where(counts[:, None] > 0, sums / np.maximum(counts, 1)[:, None], centres)
  inertia = float(np.take_along_axis(_sq_dist(x, centres), labels[:, None], 1).sum())
  return labels, inertia


def _sq_dist(x: np.ndarray, c: np.ndarray) -> np.ndarray:
  """Squared Euclidean distances ``[N, K]`` by the expansion (no [N, K, M] temporary)."""
  d2 = (x * x).sum(1)[:, None] + (c * c).sum(1)[None] - 2.0 * x @ c.T
  return np.maximum(d2, 0.0)


def silhouette(distances: np.ndarray, labels: np.ndarray) -> float:
  """Mean silhouette of a clustering, from the pairwise distances ``[N, N]`` of its points
  (computed once by the caller, who scores many clusterings of the same points; 0.0 for
  one cluster)."""
  ids = np.unique(labels)
  if len(ids) < 2:
    return 0.0
  onehot = (labels[:, None] == ids[None]).astype(np.float64)  # [N, K]
  sums = distances @ onehot
  counts = onehot.sum(0)
  own = np.searchsorted(ids, labels)
  n_own = counts[own]
  a = np.where(n_own > 1, sums[np.arange(len(distances)), own] / np.maximum(n_own - 1, 1), 0.0)
  mean_other = np.where(onehot > 0, np.inf, sums / counts[None])
  b = mean_other.min(1)
  s = np.where(n_own > 1, (b - a) / np.maximum(np.maximum(a, b), 1e-12), 0.0)
  return float(s.mean())


def solvable(
  visible: np.ndarray,
  labels: np.ndarray,
  anchor_kind: np.ndarray,
  anchor_ap: np.ndarray,
  *,
  min_anchor_fraction: float,
  min_samples: int,
) -> bool:
  """Whether every cluster could be a JADE problem: at least ``min_samples`` samples and
  4 anchors seen by ``min_anchor_fraction`` of them, of which physical APs of 2 distinct
  APs (what :func:`csiloc_jax.mmwave.jade.build_problems` needs)."""
  for r in np.unique(labels):
    v = visible[labels == r]
    if len(v) < min_samples:
      return False
    used = v.mean(0) >= min_anchor_fraction
    aps = np.unique(anchor_ap[used & (anchor_kind == 0)])
    if used.sum() < 4 or len(aps) < 2:
      return False
  return True


def choose_regions(
  visible: np.ndarray,
  anchor_kind: np.ndarray,
  anchor_ap: np.ndarray,
  *,
  min_anchor_fraction: float,
  min_samples: int,
  seed: int = 0,
  max_regions: int = 16,
) -> tuple[np.ndarray, dict]:
  """Clusters by received paths with the count chosen automatically.

  Tries ``k = 2 .. max_regions`` (and at most one cluster per ``min_samples``
  samples), keeps the counts whose every cluster is :func:`solvable`, and returns the one
  with the best mean silhouette (ties: fewer regions); one region if no count is
  solvable. Returns ``(labels [T], {k: silhouette or None if unsolvable})``.
  """
  x = visible.astype(np.float64)
  distances = np.sqrt(_sq_dist(x, x))  # Shared by every count's silhouette.
  top = int(min(max_regions, max(1, len(x) // max(min_samples, 1))))
  scores, best, best_score = {}, np.zeros(len(x), np.int32), -np.inf
  for k in range(2, top + 1):
    labels = kmeans_visibility(visible, k, seed)
    ok = solvable(
      visible,
      labels,
      anchor_kind,
      anchor_ap,
      min_anchor_fraction=min_anchor_fraction,
      min_samples=min_samples,
    )
    scores[k] = silhouette(distances, labels) if ok else None
    if ok and scores[k] > best_score + 1e-6:
      best, best_score = labels, scores[k]
  return best, scores


def assign_regions(
  region: np.ndarray | None,
  visible: np.ndarray,
  num_regions: int | None,
  seed: int = 0,
  *,
  anchor_kind: np.ndarray | None = None,
  anchor_ap: np.ndarray | None = None,
  min_anchor_fraction: float = 0.4,
  min_samples: int = 10,
) -> tuple[np.ndarray, str]:
  """``(region labels [T], source)`` with source in {'file', 'single', 'clustered',
  'auto'}; ``anchor_kind`` / ``anchor_ap`` are needed for the automatic count."""
  if region is not None:
    return np.asarray(region, np.int32), 'file'
  if num_regions == 1:
    logging.warning('survey has no "region" dataset: treating it as a single region')
    return np.zeros(len(visible), np.int32), 'single'
  if num_regions:
    logging.warning(
      'survey has no "region" dataset: clustering it into %d regions by received paths',
      num_regions,
    )
    return kmeans_visibility(visible, int(num_regions), seed), 'clustered'
  if anchor_kind is None or anchor_ap is None:
    raise ValueError('choosing the number of regions needs anchor_kind and anchor_ap')
  labels, scores = choose_regions(
    visible,
    anchor_kind,
    anchor_ap,
    min_anchor_fraction=min_anchor_fraction,
    min_samples=min_samples,
    seed=seed,
  )
  logging.warning(
    'survey has no "region" dataset: found %d regions by received paths '
    '(silhouette per count, None = some cluster not solvable: %s)',
    len(np.unique(labels)),
    {k: None if s is None else round(s, 3) for k, s in scores.items()},
  )
  return labels, 'auto'


def group_ranks(group: np.ndarray, key: np.ndarray) -> np.ndarray:
  """Rank of each element within its group, ordered by ``key`` (vectorised).

  Used to pack ragged per-region sets (samples, anchors) into padded [R, K] arrays.
  """
  order = np.lexsort((key, group))
  sorted_group = group[order]
  first = np.searchsorted(sorted_group, sorted_group, side='left')
  ranks = np.empty(len(group), np.int64)
  ranks[order] = np.arange(len(group)) - first
  return ranks
