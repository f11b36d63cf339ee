"""Channel charting as a pretraining mode: CSI dissimilarities and the pairs and triplets
the chart network trains on, and the chart's quality on labelled data.

Where this sits (docs/csi.md, 'Channel charting')::

  unlabelled set ──> reader cache of config.chart.dissimilarity (covariance or
    angle-delay, raw) ──> dissimilarity vectors ──> nearest neighbours per split
    (and, with config.chart.geodesic, shortest paths over the kNN graph: an [n, n]
    float32 file computed once in chunks, cached in workdir/pretrain/chart)
  ──> TupleData: each anchor of a batch with a partner (Siamese) or two (triplet) and
    their dissimilarities ──> trainer.fit(loss='chart_siamese' | 'chart_triplet') on
    models.ChartModel ──> its encoder into the position model (like an autoencoder's)
  labelled set ──> the chart of every labelled sample ──> evaluate_chart: trustworthiness,
    continuity, Kruskal stress against the true positions, affine map fit on the
    labelled training split and scored on the test split ──> metrics.json['chart']

Nothing here uses a position while training: positions enter only in
:func:`evaluate_chart`.
"""

from __future__ import annotations

import dataclasses
import os
import time
from typing import Any, Iterator

from absl import logging
import ml_collections
import numpy as np

from csiloc_jax.core import distributed
from csiloc_jax.core import runs
from csiloc_jax.csi import input_pipeline
from csiloc_jax.csi import metrics
from csiloc_jax.csi import trainer

DISSIMILARITIES = ('covariance', 'angle_delay')
DISTANCES = ('cmd', 'euclidean')
LOSSES = {'siamese': 'chart_siamese', 'triplet': 'chart_triplet'}
# Random pairs whose mean dissimilarity is the unit of every dissimilarity.
_SCALE_PAIRS = 8192
# Rows of distances computed at a time (nearest neighbours, shortest paths).
_CHUNK = 512


def check_config(chart: ml_collections.ConfigDict) -> None:
  """Refuses an unknown choice of ``config.chart`` before any work is done."""
  for field, allowed in (
    ('dissimilarity', DISSIMILARITIES),
    ('distance', DISTANCES),
    ('loss', tuple(LOSSES)),
    ('weighting', ('sammon', 'none')),
  ):
    if chart[field] not in allowed:
      raise ValueError(f'config.chart.{field} must be one of {allowed}, got {chart[field]!r}')
  if chart.close_neighbours < 1 or chart.geodesic_neighbours < 1:
    raise ValueError('config.chart.close_neighbours and geodesic_neighbours must be >= 1')
  if not 0.0 <= chart.near_fraction <= 1.0:
    raise ValueError(f'config.chart.near_fraction must be in [0, 1], got {chart.near_fraction}')


def loss_name(chart: ml_collections.ConfigDict) -> str:
  """The ``steps.LOSSES`` entry of ``config.chart.loss``."""
  return LOSSES[chart.loss]


def loss_options(chart: ml_collections.ConfigDict) -> tuple:
  """The loss's keyword options, as the hashable pairs the compiled step takes."""
  if chart.loss == 'triplet':
    return (('margin', float(chart.margin)),)
  return (
    ('min_dissimilarity', float(chart.min_dissimilarity)),
    ('weighting', str(chart.weighting)),
  )


# --------------------------------------------------------------------------------------
# Dissimilarities.


def dissimilarity_vectors(features: np.ndarray, distance: str, chunk: int = 4096) -> np.ndarray:
  """Flattened float32 vectors ``[n, D]`` whose distances are the dissimilarities.

  ``'euclidean'``: the feature as it is; for the covariance feature (real and imaginary
  parts of ``R / tr(R)``) this is the Frobenius distance of the normalised covariances,
  for the angle-delay feature the Euclidean distance of the power profiles.
  ``'cmd'``: each vector scaled to unit norm, so that ``1 - <u, v>`` is the correlation-
  matrix distance ``1 - tr(R_1 R_2) / (||R_1||_F ||R_2||_F)`` of two covariances (for
  Hermitian R, ``tr(R_1 R_2)`` is the real inner product of their real and imaginary
  parts) and the cosine distance of two power profiles. An all-zero sample (every
  estimate failed) stays zero: at CMD 1 from everything.
  """
  if distance not in DISTANCES:
    raise ValueError(f'config.chart.distance must be one of {DISTANCES}, got {distance!r}')
  n = len(features)
  out = np.empty((n, int(np.prod(features.shape[1:]))), np.float32)
  for lo in range(0, n, chunk):
    block = np.asarray(features[lo : lo + chunk], np.float32).reshape(min(chunk, n - lo), -1)
    if distance == 'cmd':
      norm = np.linalg.norm(block.astype(np.float64), axis=1, keepdims=True)
      block = block / np.where(norm > 0, norm, 1.0)
    out[lo : lo + chunk] = block
  return out


def pair_dissimilarity(vectors: np.ndarray, a: np.ndarray, b: np.ndarray, distance: str):
  """Dissimilarity of the samples ``a[i]`` and ``b[i]`` (float64 ``[len(a)]``)."""
  va = np.asarray(vectors[a], np.float64)
  vb = np.asarray(vectors[b], np.float64)
  if distance == 'cmd':
    return np.clip(1.0 - np.einsum('ij,ij->i', va, vb), 0.0, 2.0)
  return np.linalg.norm(va - vb, axis=1)


def nearest_neighbours(
  vectors: np.ndarray, members: np.ndarray, k: int, distance: str
) -> tuple[np.ndarray, np.ndarray]:
  """The ``k`` nearest of ``members`` (global indices into ``vectors``) to each member,
  itself excluded: (global indices, dissimilarities), both ``[len(members), k]``, nearest
  first."""
  members = np.asarray(members)
  k = min(k, len(members) - 1)
  if k < 1:
    raise ValueError(f'nearest neighbours need at least 2 samples, got {len(members)}')
  v = np.asarray(vectors[members], np.float32)
  sq = np.einsum('ij,ij->i', v, v)
  index, dist = [], []
  for lo in range(0, len(v), _CHUNK):
    hi = min(lo + _CHUNK, len(v))
    d2 = np.maximum(sq[lo:hi, None] + sq[None, :] - 2.0 * (v[lo:hi] @ v.T), 0.0)
    d2[np.arange(hi - lo), np.arange(lo, hi)] = np.inf
    part = np.argpartition(d2, k - 1, axis=1)[:, :k]
    d_part = np.take_along_axis(d2, part, 1)
    order = np.argsort(d_part, axis=1, kind='stable')
    index.append(np.take_along_axis(part, order, 1))
    # Unit vectors: ||u - v||^2 = 2 - 2 <u, v> = 2 CMD.
    d_sorted = np.take_along_axis(d_part, order, 1).astype(np.float64)
    dist.append(d_sorted / 2.0 if distance == 'cmd' else np.sqrt(d_sorted))
  return members[np.concatenate(index)], np.concatenate(dist)


def geodesic_matrix(
  neighbour_index: np.ndarray, neighbour_dist: np.ndarray, path: str
) -> tuple[np.ndarray, dict]:
  """Shortest-path dissimilarities over the symmetric kNN graph: an ``[n, n]`` float32
  array in the ``.npy`` file ``path`` (memory-mapped, rows computed ``_CHUNK`` sources
  at a time, so memory stays at a few rows of float64 whatever n).

  The graph joins every sample to its ``k`` nearest (``neighbour_index``, global
  indices ``[n, k]``) in both directions, with the direct dissimilarity as the edge
  length. A pair in different connected components has no path; it gets the largest
  finite shortest path, so that such pairs count as far apart rather than infinitely so.
  """
  from scipy.sparse import csgraph  # pylint: disable=g-import-not-at-top
  from scipy.sparse import csr_matrix  # pylint: disable=g-import-not-at-top

  n, k = neighbour_index.shape
  rows = np.repeat(np.arange(n), k)
  # csgraph drops explicit zeros as missing edges: duplicates stay joined.
  weights = np.maximum(neighbour_dist.reshape(-1), 1e-12)
  graph = csr_matrix((weights, (rows, neighbour_index.reshape(-1))), shape=(n, n))
  graph = graph.maximum(graph.T)
  num_components, _ = csgraph.connected_components(graph, directed=False)
  partial = path + '.partial'
  out = np.lib.format.open_memmap(partial, mode='w+', dtype=np.float32, shape=(n, n))
  largest = 0.0
  for lo in range(0, n, _CHUNK):
    d = csgraph.dijkstra(graph, directed=False, indices=np.arange(lo, min(lo + _CHUNK, n)))
    finite = np.isfinite(d)
    largest = max(largest, float(d[finite].max()) if finite.any() else 0.0)
    out[lo : lo + len(d)] = d
  unreachable = 0
  if num_components > 1:
    for lo in range(0, n, _CHUNK):
      block = out[lo : lo + _CHUNK]
      bad = ~np.isfinite(block)
      unreachable += int(bad.sum())
      block[bad] = largest
  out.flush()
  del out
  os.replace(partial, path)
  info = {
    'components': int(num_components),
    'unreachable_pair_fraction': unreachable / float(n * n),
  }
  return np.load(path, mmap_mode='r'), info


class Dissimilarity:
  """``d(a, b)`` for index arrays over the unlabelled set, in units of the mean over
  random pairs of the training split (so the chart has unit scale whatever the
  measure): the direct dissimilarity of the vectors, or the geodesic one."""

  def __init__(self, vectors: np.ndarray, distance: str, geodesic: np.ndarray | None):
    self.vectors = vectors
    self.distance = distance
    self.geodesic = geodesic
    self.scale = 1.0

  def raw(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a, b = np.asarray(a), np.asarray(b)
    if self.geodesic is None:
      return pair_dissimilarity(self.vectors, a, b, self.distance)
    # Row-sorted reads of the memory-mapped matrix.
    order = np.argsort(a, kind='stable')
    out = np.empty(len(a))
    out[order] = np.asarray(self.geodesic[a[order], b[order]], np.float64)
    return out

  def fit_scale(self, members: np.ndarray, seed: int) -> float:
    rng = np.random.default_rng(seed)
    a = rng.choice(members, _SCALE_PAIRS)
    b = rng.choice(members, _SCALE_PAIRS)
    mean = float(self.raw(a, b).mean())
    self.scale = mean if mean > 0 else 1.0
    return self.scale

  def __call__(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return self.raw(a, b) / self.scale


# --------------------------------------------------------------------------------------
# Tuples: the examples of the chart losses.


@dataclasses.dataclass
class TupleData(trainer.PhaseData):
  """The chart phase's data: every example is an anchor sample of the split with its
  partners, ``x`` ``[B, T, ...]`` and ``y`` the dissimilarities ``[B, T - 1]``.

  * Siamese (T = 2): the partner is, with probability ``near_fraction``, one of the
    anchor's ``close_neighbours`` nearest in its split (by the direct dissimilarity),
    else any sample of the split; ``y`` is their dissimilarity (direct or geodesic).
    Uniform pairs alone would be almost all far apart, and the local geometry that the
    chart must keep lives in the near ones.
  * Triplet (T = 3): one partner among the anchor's nearest, one uniform over the split,
    ordered by dissimilarity from the anchor: close first, far second.

  An epoch has one example per anchor of the training split (like the autoencoder's
  epoch over samples), in an order and with partners drawn from ``(seed, epoch)``; the
  validation examples are drawn once from ``val_seed`` and are the same every epoch.
  """

  dissimilarity: Dissimilarity | None = None
  neighbours: dict[str, np.ndarray] = dataclasses.field(default_factory=dict)
  tuple_size: int = 2
  near_fraction: float = 0.5
  val_seed: int = 0
  description: tuple = ()

  def _tuples(self, anchors: np.ndarray, split: str, rng: np.random.Generator) -> np.ndarray:
    members = self.train_idx if split == 'train' else self.val_idx
    table = self.neighbours[split]
    position = self._position[split]
    rows = table[position[anchors]]  # [B, K] global indices of each anchor's nearest
    near = rows[np.arange(len(anchors)), rng.integers(0, rows.shape[1], len(anchors))]
    uniform = members[rng.integers(0, len(members), len(anchors))]
    if self.tuple_size == 2:
      use_near = rng.random(len(anchors)) < self.near_fraction
      return np.stack([anchors, np.where(use_near, near, uniform)], axis=1)
    d_near = self.dissimilarity(anchors, near)
    d_uniform = self.dissimilarity(anchors, uniform)
    swap = d_uniform < d_near
    close = np.where(swap, uniform, near)
    far = np.where(swap, near, uniform)
    return np.stack([anchors, close, far], axis=1)

  def __post_init__(self):
    # Row of each global index in its split's neighbour table.
    self._position = {}
    for split, members in (('train', self.train_idx), ('val', self.val_idx)):
      position = np.full(len(self.features), -1, np.int64)
      position[members] = np.arange(len(members))
      self._position[split] = position

  def _batches(self, tuples: np.ndarray, batch_size: int) -> Iterator[dict]:
    # This process's block of each batch (all of it in a single-process run).
    block = distributed.process_shard(batch_size)
    for lo in range(0, len(tuples), batch_size):
      chunk = tuples[lo : lo + batch_size]
      real = len(chunk)
      if real < batch_size:
        chunk = np.concatenate([chunk, np.repeat(chunk[:1], batch_size - real, axis=0)])
      mask = np.concatenate([np.ones(real, np.float32), np.zeros(batch_size - real, np.float32)])
      chunk, mask = chunk[block], mask[block]
      flat = chunk.reshape(-1)
      # Sorted, de-duplicated reads of the memory-mapped features.
      unique, inverse = np.unique(flat, return_inverse=True)
      x = np.asarray(self.features[unique], np.float32)[inverse]
      y = np.stack(
        [self.dissimilarity(chunk[:, 0], chunk[:, j]) for j in range(1, self.tuple_size)],
        axis=1,
      )
      yield {
        'x': x.reshape(chunk.shape + x.shape[1:]),
        'y': y.astype(np.float32),
        'mask': mask,
      }

  def train_batches(self, batch_size: int, shuffle_seed: tuple, min_steps: int) -> Iterator[dict]:
    # The anchors' order as input_pipeline.batches orders samples: one permutation, or
    # several cut at min_steps full batches.
    rng = np.random.default_rng(shuffle_seed)
    anchors = self.train_idx
    steps = input_pipeline.epoch_steps(len(anchors), batch_size, min_steps)
    if steps > input_pipeline.num_batches(len(anchors), batch_size):
      reps = -(-steps * batch_size // len(anchors))
      order = np.concatenate([anchors[rng.permutation(len(anchors))] for _ in range(reps)])
      order = order[: steps * batch_size]
    else:
      order = anchors[rng.permutation(len(anchors))]
    return self._batches(self._tuples(order, 'train', rng), batch_size)

  def eval_batches(self, indices: np.ndarray, batch_size: int) -> Iterator[dict]:
    anchors = np.asarray(indices)
    split = 'val' if np.isin(anchors, self.val_idx).all() else 'train'
    rng = np.random.default_rng(self.val_seed)
    return self._batches(self._tuples(anchors, split, rng), batch_size)

  def fingerprint(self) -> tuple:
    return self.description


def _stage_dir(workdir: str) -> str:
  return os.path.join(workdir, 'pretrain', 'chart')


def build_tuple_data(
  features: np.ndarray,
  dissimilarity_features: np.ndarray,
  train_idx: np.ndarray,
  val_idx: np.ndarray,
  normalizer: Any,
  chart: ml_collections.ConfigDict,
  seed: int,
  workdir: str,
) -> tuple[TupleData, dict]:
  """The chart phase's :class:`TupleData` over the unlabelled set and a summary of the
  dissimilarities for ``metrics.json``. The nearest-neighbour tables and the geodesic
  matrix are computed once and cached under ``workdir/pretrain/chart`` (a
  :class:`csiloc_jax.core.runs.Stage` with the inputs' fingerprint)."""
  check_config(chart)
  start = time.perf_counter()
  vectors = dissimilarity_vectors(dissimilarity_features, chart.distance)
  n = len(vectors)
  directory = _stage_dir(workdir)
  os.makedirs(directory, exist_ok=True)
  key = (
    n,
    list(vectors.shape),
    chart.dissimilarity,
    chart.distance,
    bool(chart.geodesic),
    int(chart.geodesic_neighbours),
    int(chart.close_neighbours),
    [int(i) for i in train_idx[:64]],
    len(train_idx),
    len(val_idx),
    float(np.asarray(vectors[:: max(1, n // 64)], np.float64).sum()),
  )
  stage = runs.Stage(directory, 'graph', runs.fingerprint(*key))
  tables_path = os.path.join(directory, 'neighbours.npz')
  geodesic_path = os.path.join(directory, 'geodesic.npy')
  recorded = stage.result()
  if recorded is not None:
    with np.load(tables_path) as z:
      neighbours = {'train': z['train'], 'val': z['val']}
    geodesic = np.load(geodesic_path, mmap_mode='r') if chart.geodesic else None
    info = recorded
  else:
    stage.reset()
    neighbours = {
      split: nearest_neighbours(vectors, members, chart.close_neighbours, chart.distance)[0]
      for split, members in (('train', train_idx), ('val', val_idx))
    }
    np.savez(tables_path, **neighbours)
    info = {}
    geodesic = None
    if chart.geodesic:
      every = np.arange(n)
      g_index, g_dist = nearest_neighbours(
        vectors, every, chart.geodesic_neighbours, chart.distance
      )
      geodesic, info = geodesic_matrix(g_index, g_dist, geodesic_path)
      if info['components'] > 1:
        logging.warning(
          'chart: the %d-nearest-neighbour graph has %d components (%.2f %% of pairs '
          'unreachable, set to the longest path)',
          chart.geodesic_neighbours,
          info['components'],
          100 * info['unreachable_pair_fraction'],
        )
    stage.finish(info)
  dissimilarity = Dissimilarity(vectors, chart.distance, geodesic)
  scale = dissimilarity.fit_scale(train_idx, seed)
  data = TupleData(
    features,
    None,
    np.asarray(train_idx),
    np.asarray(val_idx),
    normalizer,
    dissimilarity=dissimilarity,
    neighbours=neighbours,
    tuple_size=3 if chart.loss == 'triplet' else 2,
    near_fraction=float(chart.near_fraction),
    val_seed=seed,
    description=tuple(str(x) for x in key) + (chart.loss, str(chart.near_fraction)),
  )
  summary = {
    'feature': chart.dissimilarity,
    'distance': chart.distance,
    'geodesic': bool(chart.geodesic),
    'mean_random_pair': scale,
    'seconds': time.perf_counter() - start,
    **info,
  }
  logging.info(
    'chart: %s dissimilarities (%s%s) of %d unlabelled samples in %.1f s; mean over random '
    'pairs %.4g',
    chart.dissimilarity,
    chart.distance,
    ', geodesic' if chart.geodesic else '',
    n,
    summary['seconds'],
    scale,
  )
  return data, summary


# --------------------------------------------------------------------------------------
# Chart quality.


def chart_quality(true: np.ndarray, chart: np.ndarray, k_fraction: float) -> dict:
  """Trustworthiness, continuity (k = ``k_fraction`` of the points, at least 1) and
  Kruskal stress of ``chart`` against the x-y ``true`` positions."""
  n = len(true)
  k = int(min(max(1, round(k_fraction * n)), (n - 1) // 2))
  tw, ct = metrics.trustworthiness_continuity(true, chart, k)
  return {
    'num_points': int(n),
    'k': k,
    'trustworthiness': tw,
    'continuity': ct,
    'kruskal_stress': metrics.kruskal_stress(true, chart),
  }


def evaluate_chart(
  chart_points: np.ndarray,
  untrained_points: np.ndarray | None,
  positions: np.ndarray,
  splits: dict[str, np.ndarray],
  chart: ml_collections.ConfigDict,
  seed: int,
) -> dict:
  """``metrics.json['chart']``: the chart of the labelled set against its positions.

  The chart network never saw a labelled sample, so every labelled sample is held out
  from it: trustworthiness, continuity and stress are computed on all of them (a random
  ``eval_max_points`` of them when there are more), against the x-y positions (the chart
  is 2-D; the UEs move on the ground). The affine map from the chart to the 3-D
  positions is fit by least squares on the labelled training split (the run's label
  budget) and scored on the test split with the models' metrics.
  """
  chart_points = np.asarray(chart_points, np.float64)
  positions = np.asarray(positions, np.float64)
  n = len(positions)
  subset = np.arange(n)
  if n > chart.eval_max_points:
    subset = np.sort(np.random.default_rng(seed).choice(n, chart.eval_max_points, replace=False))
  xy = positions[subset, :2]
  out = {'points': 'labelled set, all splits (never seen by the chart network)'}
  out.update(chart_quality(xy, chart_points[subset], chart.eval_k_fraction))
  if untrained_points is not None:
    out['untrained'] = chart_quality(
      xy, np.asarray(untrained_points, np.float64)[subset], chart.eval_k_fraction
    )
  train, test = np.sort(splits['train']), np.sort(splits['test'])
  coef = metrics.fit_affine(chart_points[train], positions[train])
  ranges = positions.max(0) - positions.min(0)
  affine = metrics.localization_metrics(
    metrics.apply_affine(coef, chart_points[test]), positions[test], ranges
  )
  affine['num_fit'] = int(len(train))
  out['affine'] = affine
  return out
