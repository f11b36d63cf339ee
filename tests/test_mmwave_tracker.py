"""Tracker: predict-only steps, the NIS switching rule, scan == vmapped batch of one."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from csiloc_jax.mmwave import tiny_nets
from csiloc_jax.mmwave import tracker

# A linear "net" (no hidden layer) reading features directly lets the tests dictate each
# candidate: features are [x, y, visible]; net k answers (x, y) + offset_k.
MODEL = tiny_nets.MLP(hidden_sizes=())


def _bank(offsets, visibility_rate=None):
  k = len(offsets)
  kernel = jnp.tile(jnp.array([[1.0, 0.0], [0.0, 1.0], [0.0, 0.0]]), (k, 1, 1))
  params = {'Dense_0': {'kernel': kernel, 'bias': jnp.asarray(offsets, jnp.float32)}}
  rate = jnp.full((k, 1), 0.9) if visibility_rate is None else jnp.asarray(visibility_rate)
  return tiny_nets.NetBank(params=params, label_mean=jnp.zeros((k, 2)),
                           label_scale=jnp.ones(k), label_cov=jnp.tile(jnp.eye(2) * 4, (k, 1, 1)),
                           visibility_rate=rate, region_ids=jnp.arange(k))


def _walk(n=40, dt=0.5, speed=1.0):
  t = np.arange(n) * dt
  pos = np.stack([speed * t, np.zeros(n)], -1)
  feats = np.concatenate([pos, np.ones((n, 1))], -1).astype(np.float32)
  return feats, t.astype(np.float32), pos


def test_selection_rule_on_hand_made_nis():
  nis = jnp.array([3.0, 0.5, 1.0])
  # Current net 0 is over the threshold: switch to the smallest NIS.
  assert int(tracker.select(0, nis, 2.0, 'nis')) == 1
  # At or under the threshold the current net is kept even if another is better.
  assert int(tracker.select(2, nis, 2.0, 'nis')) == 2
  assert int(tracker.select(0, jnp.array([2.0, 0.1, 0.1]), 2.0, 'nis')) == 0
  # Ineligible candidates are never chosen, and an ineligible current net is left.
  eligible = jnp.array([True, False, True])
  assert int(tracker.select(0, nis, 2.0, 'nis', eligible=eligible)) == 2
  assert int(tracker.select(1, jnp.array([1.5, 0.1, 0.9]), 2.0, 'nis', eligible=eligible)) == 2
  with pytest.raises(ValueError, match='scheme'):
    tracker.select(0, nis, 2.0, 'nearest')


def test_mahalanobis_alone_is_fooled_but_the_euclidean_term_is_not():
  # Net 0's estimate sits at the centre of its own training labels but 6 m from where the
  # client just was; net 1's estimate is at the edge of its labels, 0.2 m away.
  cand = jnp.array([[0.0, 0.0], [12.0, 0.0]])
  mean = jnp.array([[0.0, 0.0], [10.0, 0.0]])
  cov = jnp.tile(jnp.eye(2), (2, 1, 1))
  prev = jnp.array([11.8, 0.0])
  d_m = np.asarray(tracker.mahalanobis(cand, mean, cov))
  assert d_m[0] < d_m[1]
  nis = jnp.array([9.0, 9.0])        # Both over threshold: the score decides.
  chosen = tracker.select(0, nis, 2.0, 'mahalanobis_euclidean', candidates=cand,
                          previous=prev, label_mean=mean, label_cov=cov)
  assert int(chosen) == 1


def test_correct_net_is_kept_and_a_jump_triggers_a_switch():
  feats, t, pos = _walk()
  # Net 0 is right for the first half; afterwards its answers jump 5 m away while net 1
  # (which was 5 m off) becomes right: emulate with per-step features.
  feats = feats.copy()
  bank = _bank([[0.0, 0.0], [0.0, 5.0]])
  feats[20:, 1] -= 5.0       # From step 20 net 0 says y - 5, net 1 says y.
  track = jax.jit(tracker.make_tracker(MODEL, tracker.TrackerOptions(threshold=2.0)))
  out = jax.tree.map(np.asarray, track(bank, feats, np.full(40, 5), t))
  assert np.all(out['net'][:20] == 0)
  assert np.all(out['net'][21:] == 1)
  err = np.linalg.norm(out['position'] - pos, axis=-1)
  assert err[:20].max() < 1e-4 and err[21:].max() < 1e-4


def test_steps_with_too_few_paths_are_predict_only():
  feats, t, pos = _walk()
  num_paths = np.full(40, 5)
  num_paths[[10, 11, 12]] = 2          # Fewer than min_paths = 3.
  feats = feats.copy()
  feats[[10, 11, 12], :2] = 1e3        # Garbage the tracker must not use.
  bank = _bank([[0.0, 0.0], [0.0, 30.0]])
  track = jax.jit(tracker.make_tracker(MODEL, tracker.TrackerOptions()))
  out = jax.tree.map(np.asarray, track(bank, feats, num_paths, t))
  assert not out['updated'][10:13].any() and out['updated'][:10].all()
  assert np.all(out['net'][10:13] == out['net'][9])
  # Constant velocity: the prediction continues the walk (1 m/s, 0.5 s steps).
  np.testing.assert_allclose(out['position'][10:13], pos[10:13], atol=0.15)
  assert np.all(np.isfinite(out['position']))


def test_start_waits_for_a_usable_step_and_picks_by_received_paths():
  feats, t, _ = _walk(10)
  num_paths = np.array([0, 1] + [5] * 8)
  # Net 1 has always seen the single path, net 0 rarely: net 1 starts.
  bank = _bank([[0.0, 0.0], [0.0, 0.0]], visibility_rate=[[0.05], [0.95]])
  out = jax.tree.map(np.asarray, tracker.make_tracker(MODEL, tracker.TrackerOptions())(
      bank, feats, num_paths, t))
  assert np.isnan(out['position'][:2]).all() and list(out['net'][:2]) == [-1, -1]
  assert out['net'][2] == 1


def test_scan_over_a_trajectory_equals_a_vmapped_batch_of_one():
  feats, t, _ = _walk()
  rng = np.random.default_rng(0)
  feats = feats + np.concatenate([rng.normal(0, 0.3, (40, 2)), np.zeros((40, 1))], -1)
  bank = _bank([[0.0, 0.0], [0.0, 3.0], [2.0, 0.0]])
  num_paths = np.full(40, 4)
  num_paths[7] = 1
  track = tracker.make_tracker(MODEL, tracker.TrackerOptions(scheme='mahalanobis_euclidean'))
  single = jax.jit(track)(bank, feats, num_paths, t)
  batched = jax.jit(jax.vmap(track, in_axes=(None, 0, 0, 0)))(
      bank, feats[None], num_paths[None], t[None])
  for key in single:
    np.testing.assert_allclose(np.asarray(batched[key][0]), np.asarray(single[key]),
                               rtol=1e-5, atol=1e-5, err_msg=key)
  # Thresholds and schemes are traced, so one compiled tracker sweeps them.
  many = jax.jit(jax.vmap(track, in_axes=(None, None, None, None, 0, 0)))(
      bank, feats, num_paths, t, jnp.array([2.0, 2.0]), jnp.array([0, 1]))
  np.testing.assert_allclose(np.asarray(many['position'][1]), np.asarray(single['position']),
                             atol=1e-5)
