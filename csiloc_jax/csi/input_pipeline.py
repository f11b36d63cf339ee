"""Splits, normalisation statistics and batches over the cached CTW feature memmaps.

Sits between :mod:`csiloc_jax.csi.reader` (which produces read-only feature memmaps) and
the training loop. Everything is deterministic from seeds: a split is a fixed random
permutation, an epoch's batch order depends only on ``(seed, epoch)`` — which is what
lets an interrupted run resume and end bit-for-bit where an uninterrupted one would.

Batches always have the configured size: the last, partial one is padded and carries a
``mask`` (1 = real example, 0 = padding) that the losses weight by, so no example is
dropped and no recompilation happens for a ragged batch. In a multi-process run each
process gets, and reads from disk, only its block of every batch
(``distributed.process_shard``); the global batch is the same for any process count.
"""

from __future__ import annotations

import dataclasses
import queue
import threading
from typing import Iterator, Sequence

import jax
import numpy as np

from csiloc_jax.core import distributed


def split_indices(num: int, fractions: Sequence[float], seed: int) -> list[np.ndarray]:
  """Random split of ``range(num)`` by ``fractions`` (which must sum to 1)."""
  fractions = np.asarray(fractions, np.float64)
  if np.any(fractions < 0) or not np.isclose(fractions.sum(), 1.0):
    raise ValueError(f'split fractions {tuple(fractions)} must be >= 0 and sum to 1')
  perm = np.random.default_rng(seed).permutation(num)
  bounds = np.round(np.cumsum(fractions) * num).astype(int)
  parts = np.split(perm, bounds[:-1])
  for frac, part in zip(fractions, parts):
    if frac > 0 and len(part) == 0:
      raise ValueError(
        f'a split of {num} samples by {tuple(fractions)} leaves an empty '
        'part; more samples are needed'
      )
  return parts


def spatial_split_indices(
  positions: np.ndarray, fractions: Sequence[float], seed: int
) -> list[np.ndarray]:
  """Train / validation / test split by area: each held-out part is a contiguous disk.

  The test part is the ``fractions[2]`` of samples nearest (in x-y) to a random centre,
  the validation part the ``fractions[1]`` nearest to a second centre drawn among the
  rest, as far from the first as the median remaining sample or farther; the rest is
  the training part, in random order. No held-out position has a labelled neighbour
  inside its disk -- the way CTW-2020's official test held out whole streets.
  """
  fractions = np.asarray(fractions, np.float64)
  if fractions.shape != (3,) or np.any(fractions < 0) or not np.isclose(fractions.sum(), 1.0):
    raise ValueError(f'split fractions {tuple(fractions)} must be 3 values >= 0 summing to 1')
  xy = np.asarray(positions, np.float64)[:, :2]
  num = len(xy)
  rng = np.random.default_rng(seed)
  counts = np.round(fractions * num).astype(int)
  n_val, n_test = int(counts[1]), int(counts[2])
  if (
    n_val + n_test >= num or (fractions[1] > 0 and n_val == 0) or (fractions[2] > 0 and n_test == 0)
  ):
    raise ValueError(f'a spatial split of {num} samples by {tuple(fractions)} leaves an empty part')
  centre = xy[rng.integers(num)]
  order = np.argsort(np.linalg.norm(xy - centre, axis=1), kind='stable')
  test, rest = order[:n_test], order[n_test:]
  d_first = np.linalg.norm(xy[rest] - centre, axis=1)
  far = rest[d_first >= np.median(d_first)]
  centre = xy[far[rng.integers(len(far))]]
  order = rest[np.argsort(np.linalg.norm(xy[rest] - centre, axis=1), kind='stable')]
  val, train = order[:n_val], order[n_val:]
  return [rng.permutation(train), np.sort(val), np.sort(test)]


@jax.tree_util.register_dataclass
@dataclasses.dataclass
class Normalizer:
  """``(scale(x) - mean) * inv_std`` with statistics from the training split.

  ``scale`` divides each sample by its own RMS value when ``sample_rms`` is set, and is
  the identity otherwise. Received power spans orders of magnitude across positions (a
  UE near the mast against one far behind buildings); without it, a per-feature z-score
  fit on the training split leaves validation and test samples hundreds of standard
  deviations out, and the first layers saturate or explode. Directions and delays live
  in the ratios between entries, which the division keeps.

  A pytree of its two arrays (``sample_rms`` is static), so the compiled steps take it
  as an argument (replicated like the parameters) rather than holding it as a
  compile-time constant.
  """

  mean: np.ndarray
  inv_std: np.ndarray
  sample_rms: bool = dataclasses.field(default=False, metadata=dict(static=True))

  def __call__(self, x):
    if self.sample_rms:
      x = scale_samples(x)
    return (x - self.mean) * self.inv_std


def scale_samples(x):
  """Each sample (first axis) divided by its RMS value; all-zero samples stay zero."""
  axes = tuple(range(1, x.ndim))
  mean_square = (x * x).mean(axis=axes, keepdims=True)
  return x * (mean_square + 1e-30) ** -0.5


def feature_statistics(
  features: np.ndarray,
  indices: np.ndarray,
  mode: str,
  chunk_size: int = 512,
  sample_rms: bool = False,
) -> Normalizer:
  """Mean/std over ``features[indices]``, accumulated chunk by chunk in float64.

  ``mode``: ``per_feature`` (one statistic per antenna × subcarrier × channel entry),
  ``global`` (one scalar pair), or ``none``. A constant entry (e.g. an antenna whose
  estimates all failed) gets ``inv_std = 1`` rather than a division by zero. With
  ``sample_rms`` the statistics are those of the RMS-scaled samples
  (:func:`scale_samples`), which the returned normaliser then applies first.
  """
  shape = features.shape[1:]
  if mode == 'none':
    return Normalizer(np.zeros(shape, np.float32), np.ones(shape, np.float32), sample_rms)
  if mode not in ('per_feature', 'global'):
    raise ValueError(f'config.data.normalization must be per_feature, global or none; got {mode!r}')
  indices = np.sort(np.asarray(indices))
  total = np.zeros(shape, np.float64)
  total_sq = np.zeros(shape, np.float64)
  for start in range(0, len(indices), chunk_size):
    block = np.asarray(features[indices[start : start + chunk_size]], np.float64)
    if sample_rms:
      block = scale_samples(block)
    total += block.sum(0)
    total_sq += (block**2).sum(0)
  n = max(len(indices), 1)
  if mode == 'global':
    count = n * np.prod(shape)
    mean = np.full(shape, total.sum() / count)
    var = np.full(shape, total_sq.sum() / count) - mean**2
  else:
    mean = total / n
    var = total_sq / n - mean**2
  std = np.sqrt(np.maximum(var, 0.0))
  tiny = 1e-12 * max(float(np.abs(mean).max()), float(std.max()), 1e-30)
  inv_std = np.where(std > tiny, 1.0 / np.maximum(std, tiny), 1.0)
  return Normalizer(mean.astype(np.float32), inv_std.astype(np.float32), sample_rms)


@dataclasses.dataclass
class LabelScaler:
  """Centring and scaling of positions (fit on training labels, undone before metrics).

  ``isotropic``: minus the mean, divided by one scale for every axis (the RMS distance
  from the mean), so the squared loss stays the squared Euclidean error up to a
  constant. ``standardize``: a z-score per axis -- an axis that barely varies (height
  on flat streets: millimetres) is blown up to unit variance and its noise then
  dominates the loss. ``none``: raw metres.
  """

  mean: np.ndarray
  std: np.ndarray

  @classmethod
  def fit(cls, positions: np.ndarray, mode: str) -> 'LabelScaler':
    positions = np.asarray(positions, np.float64)
    if mode == 'none':
      return cls(np.zeros(positions.shape[1]), np.ones(positions.shape[1]))
    if mode == 'isotropic':
      mean = positions.mean(0)
      scale = float(np.sqrt(np.mean(np.sum((positions - mean) ** 2, axis=1))))
      return cls(mean, np.full(positions.shape[1], scale if scale > 0 else 1.0))
    if mode != 'standardize':
      raise ValueError(
        f'config.data.label_scaling must be isotropic, standardize or none; got {mode!r}'
      )
    std = positions.std(0)
    return cls(positions.mean(0), np.where(std > 0, std, 1.0))

  def transform(self, positions: np.ndarray) -> np.ndarray:
    return ((positions - self.mean) / self.std).astype(np.float32)

  def inverse(self, scaled: np.ndarray) -> np.ndarray:
    return np.asarray(scaled, np.float64) * self.std + self.mean


def num_batches(num_examples: int, batch_size: int) -> int:
  return -(-num_examples // batch_size)


def epoch_steps(num_examples: int, batch_size: int, min_steps: int = 1) -> int:
  """Steps in one epoch: one pass over the data, or ``min_steps`` if that is more."""
  return max(num_batches(num_examples, batch_size), min_steps)


def batches(
  features: np.ndarray,
  targets: np.ndarray | None,
  indices: np.ndarray,
  batch_size: int,
  *,
  shuffle_seed: tuple[int, ...] | None = None,
  min_steps: int = 1,
) -> Iterator[dict[str, np.ndarray]]:
  """Yields ``{'x', 'y', 'mask'}`` batches over ``indices`` (this process's block of
  each, ``batch_size / process_count`` rows).

  With ``shuffle_seed`` the order is a permutation drawn from that seed (e.g.
  ``(seed, epoch)``); without, the order is ``indices``' own (evaluation). For an
  autoencoder ``targets`` is None and ``y`` is omitted (the target is ``x``).
  ``min_steps`` (training only) cycles through further permutations until the epoch has
  that many full batches, so a small labelled set still gets a fixed optimiser budget.
  """
  indices = np.asarray(indices)
  if shuffle_seed is not None:
    rng = np.random.default_rng(shuffle_seed)
    steps = epoch_steps(len(indices), batch_size, min_steps)
    if steps > num_batches(len(indices), batch_size):
      reps = -(-steps * batch_size // len(indices))
      indices = np.concatenate([indices[rng.permutation(len(indices))] for _ in range(reps)])[
        : steps * batch_size
      ]
    else:
      indices = indices[rng.permutation(len(indices))]
  block = distributed.process_shard(batch_size)
  for start in range(0, len(indices), batch_size):
    chunk = indices[start : start + batch_size]
    real = len(chunk)
    # Sorted reads are sequential on the memmap; order inside a batch is irrelevant.
    order = np.argsort(chunk)
    chunk = chunk[order]
    pad = batch_size - real
    if pad:
      chunk = np.concatenate([chunk, np.full(pad, chunk[0])])
    mask = np.concatenate([np.ones(real, np.float32), np.zeros(pad, np.float32)])
    chunk, mask = chunk[block], mask[block]
    batch = {'x': np.asarray(features[chunk], np.float32), 'mask': mask}
    if targets is not None:
      batch['y'] = np.asarray(targets[chunk], np.float32)
    yield batch


def prefetch(iterator: Iterator, depth: int = 2) -> Iterator:
  """Runs ``iterator`` in a background thread, ``depth`` items ahead (disk reads overlap
  with compute)."""
  if depth <= 0:
    yield from iterator
    return
  q: queue.Queue = queue.Queue(maxsize=depth)
  sentinel = object()

  def worker():
    try:
      for item in iterator:
        q.put(item)
    except BaseException as e:  # Re-raised in the consumer.
      q.put(e)
    finally:
      q.put(sentinel)

  threading.Thread(target=worker, daemon=True).start()
  while True:
    item = q.get()
    if item is sentinel:
      return
    if isinstance(item, BaseException):
      raise item
    yield item
