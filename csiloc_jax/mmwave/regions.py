"""Survey regions: the file's ``region`` labels, or a defined fallback when it has none.

Data flow: survey :class:`~csiloc_jax.mmwave.reader.Measurements` ->
:func:`assign_regions` -> one JADE problem and one tiny net per region.

When ``region`` is missing:

* ``num_regions=None`` (default): the whole survey is one region — one JADE problem and
  one net. This is only sound when every part of the survey shares anchors with the
  rest; on a multi-room floor prefer clustering.
* ``num_regions=k``: samples are clustered by *which paths they received* (k-means on
  the 0/1 visibility vectors, k-means++ seeding). At 60 GHz, walls block paths, so the
  set of received anchors identifies a room well, and it needs no positions.

Clustered region ids have no relation to any ``region`` a trajectory file may carry,
so the oracle and the "on the true region's net" figures are then not reported.
"""

from __future__ import annotations

from absl import logging
import numpy as np


def kmeans_visibility(
  visible: np.ndarray, k: int, seed: int = 0, num_iters: int = 50
) -> np.ndarray:
  """k-means++ / Lloyd on 0/1 visibility vectors ``[T, M]``; returns labels ``[T]``."""
  x = visible.astype(np.float64)
  n = len(x)
  if k < 1 or k > n:
    raise ValueError(f'cannot cluster {n} survey samples into {k} regions')
  rng = np.random.default_rng(seed)
  centres = [x[rng.integers(n)]]
  for _ in range(1, k):  # Seeding: one pass per centre, vectorised over samples.
    d2 = np.min(((x[:, None] - np.asarray(centres)[None]) ** 2).sum(-1), 1)
    probs = d2 / d2.sum() if d2.sum() > 0 else np.full(n, 1.0 / n)
    centres.append(x[rng.choice(n, p=probs)])
  centres = np.asarray(centres)
  labels = np.zeros(n, np.int64)
  for iteration in range(num_iters):  # Lloyd iterations, vectorised over samples.
    d2 = ((x[:, None] - centres[None]) ** 2).sum(-1)
    new = d2.argmin(1)
    if iteration > 0 and np.array_equal(new, labels):
      break
    labels = new
    counts = np.bincount(labels, minlength=k)
    sums = np.zeros_like(centres)
    np.add.at(sums, labels, x)
    # An emptied cluster keeps its old centre rather than becoming NaN.
    centres = np.where(counts[:, None] > 0, sums / np.maximum(counts, 1)[:, None], centres)
  # Relabel 0..k'-1 in order of first appearance so ids are stable and dense.
  _, dense = np.unique(labels, return_inverse=True)
  return dense.astype(np.int32)


def assign_regions(
  region: np.ndarray | None, visible: np.ndarray, num_regions: int | None, seed: int = 0
) -> tuple[np.ndarray, str]:
  """``(region labels [T], source)`` with source in {'file', 'single', 'clustered'}."""
  if region is not None:
    return np.asarray(region, np.int32), 'file'
  if not num_regions:
    logging.warning('survey has no "region" dataset: treating it as a single region')
    return np.zeros(len(visible), np.int32), 'single'
  logging.warning(
    'survey has no "region" dataset: clustering it into %d regions by received paths', num_regions
  )
  return kmeans_visibility(visible, int(num_regions), seed), 'clustered'


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
