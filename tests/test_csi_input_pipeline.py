"""Batches: padding masks, deterministic shuffles, and cycling to a minimum step count."""

import numpy as np
import pytest

from csiloc_jax.csi import input_pipeline


def _data(n):
  features = np.arange(n, dtype=np.float32)[:, None, None, None] * np.ones((1, 2, 3, 1), np.float32)
  return features, np.arange(n, dtype=np.float32)[:, None] * np.ones((1, 3), np.float32)


def test_last_batch_is_padded_and_masked():
  features, targets = _data(10)
  out = list(input_pipeline.batches(features, targets, np.arange(10), 4))
  assert [b['x'].shape[0] for b in out] == [4, 4, 4]
  np.testing.assert_array_equal(out[-1]['mask'], [1, 1, 0, 0])
  seen = np.concatenate([b['x'][b['mask'] > 0, 0, 0, 0] for b in out])
  np.testing.assert_array_equal(np.sort(seen), np.arange(10))
  # Targets stay aligned with their features.
  for b in out:
    np.testing.assert_array_equal(b['x'][:, 0, 0, 0], b['y'][:, 0])


def test_shuffle_depends_only_on_the_seed():
  features, targets = _data(20)
  a = [
    b['x'][:, 0, 0, 0]
    for b in input_pipeline.batches(features, targets, np.arange(20), 5, shuffle_seed=(0, 3))
  ]
  b = [
    b['x'][:, 0, 0, 0]
    for b in input_pipeline.batches(features, targets, np.arange(20), 5, shuffle_seed=(0, 3))
  ]
  c = [
    b['x'][:, 0, 0, 0]
    for b in input_pipeline.batches(features, targets, np.arange(20), 5, shuffle_seed=(0, 4))
  ]
  np.testing.assert_array_equal(np.stack(a), np.stack(b))
  assert not np.array_equal(np.stack(a), np.stack(c))


def test_min_steps_cycles_a_small_set_into_full_batches():
  features, targets = _data(6)
  out = list(
    input_pipeline.batches(features, targets, np.arange(6), 4, shuffle_seed=(1, 1), min_steps=5)
  )
  assert len(out) == 5 == input_pipeline.epoch_steps(6, 4, 5)
  assert all(b['mask'].sum() == 4 for b in out)
  counts = np.bincount(np.concatenate([b['x'][:, 0, 0, 0] for b in out]).astype(int), minlength=6)
  # 20 draws from 6 examples, whole passes first: every example 3 or 4 times.
  assert counts.min() >= 3 and counts.max() <= 4
  # Without shuffling (evaluation) min_steps does not apply.
  assert len(list(input_pipeline.batches(features, targets, np.arange(6), 4))) == 2


def test_feature_statistics_per_feature_and_global():
  rng = np.random.default_rng(0)
  x = rng.normal(3.0, 2.0, size=(50, 2, 3, 1)).astype(np.float32)
  x[:, 1, 2] = 5.0  # A constant entry.
  norm = input_pipeline.feature_statistics(x, np.arange(50), 'per_feature', chunk_size=7)
  z = norm(x)
  assert np.allclose(z.mean(0)[0], 0, atol=1e-5) and np.allclose(z.std(0)[0], 1, atol=1e-4)
  assert np.all(z[:, 1, 2] == 0)
  g = input_pipeline.feature_statistics(x, np.arange(50), 'global')
  assert np.unique(g.mean).size == 1 and abs(g(x).mean()) < 1e-5


def test_label_scaler_round_trips():
  pos = np.random.default_rng(1).uniform(-300, 900, size=(40, 3))
  scaler = input_pipeline.LabelScaler.fit(pos, 'standardize')
  np.testing.assert_allclose(scaler.inverse(scaler.transform(pos)), pos, rtol=1e-5)
  assert np.allclose(scaler.transform(pos).mean(0), 0, atol=1e-5)


def test_isotropic_label_scaling_keeps_a_flat_axis_flat():
  rng = np.random.default_rng(2)
  pos = np.stack(
    [rng.uniform(0, 300, 60), rng.uniform(-200, 200, 60), 1.5 + 1e-5 * rng.standard_normal(60)], 1
  )
  iso = input_pipeline.LabelScaler.fit(pos, 'isotropic')
  t = iso.transform(pos)
  np.testing.assert_allclose(iso.inverse(t), pos, rtol=1e-5, atol=1e-4)
  assert np.allclose(t.mean(0), 0, atol=1e-5)
  assert np.mean(np.sum(t**2, 1)) == pytest.approx(1.0, rel=1e-4)
  assert np.abs(t[:, 2]).max() < 1e-5  # millimetre noise stays negligible
  # Per-axis standardisation turns that noise into a unit-variance target.
  assert input_pipeline.LabelScaler.fit(pos, 'standardize').transform(pos)[:, 2].std() > 0.9
  with pytest.raises(ValueError, match='isotropic'):
    input_pipeline.LabelScaler.fit(pos, 'minmax')


def test_spatial_split_holds_out_contiguous_areas():
  rng = np.random.default_rng(3)
  pos = np.stack([rng.uniform(0, 400, 1000), rng.uniform(0, 600, 1000), np.zeros(1000)], 1)
  train, val, test = input_pipeline.spatial_split_indices(pos, (0.9, 0.05, 0.05), seed=1)
  assert (len(train), len(val), len(test)) == (900, 50, 50)
  assert len(np.unique(np.concatenate([train, val, test]))) == 1000
  again = input_pipeline.spatial_split_indices(pos, (0.9, 0.05, 0.05), seed=1)
  assert all(np.array_equal(a, b) for a, b in zip(again, (train, val, test)))

  def nearest_train(held):
    d = np.linalg.norm(pos[held, None, :2] - pos[None, train, :2], axis=-1)
    return d.min(1).mean()

  # A held-out disk: its samples are far from any labelled one, unlike a random split.
  r_train, _, r_test = input_pipeline.split_indices(1000, (0.9, 0.05, 0.05), 1)
  d_random = np.linalg.norm(pos[r_test, None, :2] - pos[None, r_train, :2], axis=-1).min(1).mean()
  assert nearest_train(test) > 2 * d_random and nearest_train(val) > 2 * d_random
  with pytest.raises(ValueError, match='empty part'):
    input_pipeline.spatial_split_indices(pos[:10], (0.9, 0.05, 0.05), seed=0)


class _RecordingFeatures:
  """A feature array that records which rows were read."""

  def __init__(self, array):
    self.array = array
    self.rows_read = []

  def __getitem__(self, rows):
    self.rows_read.extend(np.atleast_1d(rows).tolist())
    return self.array[rows]


@pytest.mark.parametrize('count', [2, 4])
def test_each_process_reads_only_its_block_of_the_global_batch(monkeypatch, count):
  from csiloc_jax.core import distributed

  features = np.arange(37 * 3, dtype=np.float32).reshape(37, 3)
  targets = np.arange(37, dtype=np.float32)[:, None]
  indices = np.arange(37)
  kwargs = dict(batch_size=8, shuffle_seed=(3, 1))
  global_batches = list(input_pipeline.batches(features, targets, indices, **kwargs))
  monkeypatch.setattr(distributed, 'process_count', lambda: count)
  blocks, reads = [], []
  for index in range(count):
    monkeypatch.setattr(distributed, 'process_index', lambda index=index: index)
    recording = _RecordingFeatures(features)
    blocks.append(list(input_pipeline.batches(recording, targets, indices, **kwargs)))
    reads.append(recording.rows_read)
  # Stacked in process order, the blocks are the global batches, padding and mask too.
  for step, whole in enumerate(global_batches):
    for key in whole:
      joined = np.concatenate([blocks[p][step][key] for p in range(count)])
      np.testing.assert_array_equal(joined, whole[key])
    assert all(len(blocks[p][step]['x']) == 8 // count for p in range(count))
  # Each process read its own rows only: together each row once (padding aside).
  per_process = [len(r) for r in reads]
  assert per_process == [len(global_batches) * 8 // count] * count
  assert sorted(set().union(*map(set, reads))) == list(range(37))
  monkeypatch.setattr(distributed, 'process_count', lambda: 3)
  with pytest.raises(ValueError, match='cannot be split over 3 processes'):
    next(input_pipeline.batches(features, targets, indices, **kwargs))
