"""ADoA feature encoding: missing paths, heading invariance, wrap-around at +-pi."""

import jax
import numpy as np
import pytest

from csiloc_jax.mmwave import features
from csiloc_jax.mmwave import geometry


def _blocks(f, m):
  return f[..., :m], f[..., m : 2 * m], f[..., 2 * m :]


def test_missing_path_cannot_collide_with_a_real_angle():
  aoa = np.array([[0.3, np.nan, 0.3]], np.float32)
  cos, sin, vis = _blocks(np.asarray(features.encode(aoa)), 3)
  # Anchors 0 and 2 have ADoA 0 w.r.t. the reference: (1, 0, 1). Missing: (0, 0, 0).
  np.testing.assert_allclose(cos[0], [1, 0, 1], atol=1e-6)
  np.testing.assert_allclose(sin[0], [0, 0, 0], atol=1e-6)
  np.testing.assert_array_equal(vis[0], [1, 0, 1])
  # Any real angle lies on the unit circle, a missing one at its centre.
  rng = np.random.default_rng(0)
  aoa = rng.uniform(-np.pi, np.pi, (50, 8)).astype(np.float32)
  aoa[rng.random(aoa.shape) < 0.4] = np.nan
  cos, sin, vis = _blocks(np.asarray(features.encode(aoa)), 8)
  radius = np.hypot(cos, sin)
  np.testing.assert_allclose(radius[vis == 1], 1.0, atol=1e-5)
  np.testing.assert_array_equal(radius[vis == 0], 0.0)


def test_features_are_invariant_to_the_client_heading():
  rng = np.random.default_rng(1)
  aoa = rng.uniform(-np.pi, np.pi, (20, 6))
  aoa[rng.random(aoa.shape) < 0.3] = np.nan
  for reference in ('mean', 'anchor'):
    kw = {'reference': reference, 'priority': np.arange(6.0)}
    base = np.asarray(features.encode(aoa.astype(np.float32), **kw))
    for psi in (0.7, -2.9, 3.1):
      rotated = geometry.wrap(aoa - psi)  # Wrapped, NaN kept.
      np.testing.assert_allclose(features.encode(rotated.astype(np.float32), **kw), base, atol=2e-5)


def test_wrap_around_at_plus_minus_pi_is_continuous():
  eps = 1e-4
  a = np.array([[np.pi - eps, 0.2, -1.0]], np.float32)
  b = np.array([[-np.pi + eps, 0.2, -1.0]], np.float32)  # 2 eps apart across the cut.
  c = np.array([[np.pi, 0.2, -1.0]], np.float32)
  d = np.array([[-np.pi, 0.2, -1.0]], np.float32)
  fa, fb = np.asarray(features.encode(a)), np.asarray(features.encode(b))
  assert np.max(np.abs(fa - fb)) < 1e-3
  np.testing.assert_allclose(features.encode(c), features.encode(d), atol=1e-6)


def test_no_paths_gives_zeros_and_the_anchor_reference_is_exact():
  f = np.asarray(features.encode(np.full((2, 5), np.nan, np.float32)))
  assert f.shape == (2, 15) and np.all(f == 0)
  aoa = np.array([[0.5, 2.0, np.nan, -1.0]], np.float32)
  f = np.asarray(features.encode(aoa, reference='anchor', priority=np.array([0, 9, 5, 1.0])))
  cos, sin, vis = _blocks(f, 4)
  # Anchor 1 has the highest priority among the received paths: it is the reference.
  assert abs(cos[0, 1] - 1.0) < 1e-6 and abs(sin[0, 1]) < 1e-7
  np.testing.assert_allclose(sin[0, 0], np.sin(0.5 - 2.0), atol=1e-6)
  # The highest priority overall missing: the best received path (anchor 2) takes over.
  aoa = np.array([[0.5, np.nan, 2.0, -1.0]], np.float32)
  f = np.asarray(features.encode(aoa, reference='anchor', priority=np.array([0, 9, 5, 1.0])))
  cos, sin, vis = _blocks(f, 4)
  assert abs(cos[0, 2] - 1.0) < 1e-6 and abs(sin[0, 2]) < 1e-7
  np.testing.assert_allclose(sin[0, 3], np.sin(-1.0 - 2.0), atol=1e-6)


def test_encode_runs_under_jit_and_vmap():
  aoa = np.random.default_rng(2).uniform(-3, 3, (3, 4, 5)).astype(np.float32)
  aoa[0, 1, 2] = np.nan
  out = jax.jit(jax.vmap(features.encode))(aoa)
  np.testing.assert_allclose(out, features.encode(aoa), atol=1e-6)
  assert features.num_features(5) == out.shape[-1] == 15


def test_encode_units_defaults_to_the_mean_reference_and_a_bad_one_is_named():
  rng = np.random.default_rng(3)
  aoa = rng.uniform(-3, 3, (6, 5)).astype(np.float32)
  aoa[rng.random(aoa.shape) < 0.3] = np.nan
  np.testing.assert_array_equal(
    features.encode_units(*features.unit_vectors(aoa)), features.encode(aoa)
  )
  with pytest.raises(
    ValueError, match=r"feature reference must be one of \('mean', 'anchor'\), got 'median'"
  ):
    features.encode(aoa, reference='median')
  with pytest.raises(ValueError, match="reference='anchor' needs a priority per anchor"):
    features.encode(aoa, reference='anchor')


def test_a_balanced_set_of_paths_takes_the_reference_zero():
  # Opposite paths: their unit vectors sum to (nearly) zero, so no mean direction.
  aoa = np.array([[0.0, np.pi, np.nan]], np.float32)
  cos, sin, vis = _blocks(np.asarray(features.encode(aoa)), 3)
  np.testing.assert_allclose(cos[0], [1, -1, 0], atol=1e-6)
  np.testing.assert_allclose(sin[0], [0, 0, 0], atol=1e-6)
  np.testing.assert_array_equal(vis[0], [1, 1, 0])


def test_the_anchor_reference_on_one_step_and_on_a_batch_of_walks():
  rng = np.random.default_rng(4)
  aoa = rng.uniform(-3, 3, (2, 5, 6)).astype(np.float32)
  aoa[rng.random(aoa.shape) < 0.4] = np.nan
  aoa[1, 2] = np.nan  # a step without any path
  kw = {'reference': 'anchor', 'priority': np.array([3.0, 0, 5, 1, 4, 2])}
  full = np.asarray(features.encode(aoa, **kw))
  for i in range(2):
    np.testing.assert_allclose(features.encode(aoa[i], **kw), full[i], atol=1e-6)
    for t in range(5):
      np.testing.assert_allclose(features.encode(aoa[i, t], **kw), full[i, t], atol=1e-6)
  assert np.all(full[1, 2] == 0)
  assert full.dtype == np.float32


def test_survey_priority_is_how_often_each_anchor_was_seen():
  aoa = np.full((4, 3), np.nan)
  aoa[:, 0] = 0.1
  aoa[:2, 1] = 0.2
  aoa[3, 2] = 0.3
  priority = features.survey_priority(aoa)
  np.testing.assert_array_equal(priority, [1.0, 0.5, 0.25])
  assert priority.dtype == np.float32
  np.testing.assert_array_equal(features.path_counts(aoa), [2, 2, 1, 2])
