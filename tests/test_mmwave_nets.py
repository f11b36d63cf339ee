"""Tiny nets: stacked parameters, vmapped evaluation == per-net apply, training works,
robust losses, trusted labels only, per-label weights."""

import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from csiloc_jax.core import config_utils
from csiloc_jax.mmwave import features
from csiloc_jax.mmwave import tiny_nets

CONFIG = config_utils.load_config(
  os.path.join(
    os.path.dirname(os.path.dirname(os.path.abspath(__file__))), 'configs', 'mmwave_tiny.py'
  )
)


def _bank(model, k, m, seed=0):
  params = tiny_nets.init_bank(model, jax.random.PRNGKey(seed), k, m)
  rng = np.random.default_rng(seed)
  return tiny_nets.NetBank(
    params=params,
    label_mean=jnp.asarray(rng.normal(size=(k, 2)), jnp.float32),
    label_scale=jnp.asarray(rng.uniform(1, 3, k), jnp.float32),
    label_cov=jnp.tile(jnp.eye(2), (k, 1, 1)),
    visibility_rate=jnp.full((k, m), 0.5),
    region_ids=jnp.arange(k),
  )


def test_parameter_count_of_the_papers_net():
  model = tiny_nets.MLP((48, 48, 24), 'relu')
  bank = _bank(model, 3, 17)  # 17 anchors -> 51 features.
  leaves = jax.tree.leaves(bank.params)
  assert all(x.shape[0] == 3 for x in leaves)
  per_net = sum(int(np.prod(x.shape[1:])) for x in leaves)
  assert per_net == 51 * 48 + 48 + 48 * 48 + 48 + 48 * 24 + 24 + 24 * 2 + 2


def test_vmapped_evaluation_equals_per_net_apply():
  model = tiny_nets.MLP((16, 8), 'relu')
  k, m = 4, 6
  bank = _bank(model, k, m)
  aoa = np.random.default_rng(1).uniform(-3, 3, (10, m)).astype(np.float32)
  aoa[2, :3] = np.nan
  feats = features.encode(aoa)
  all_at_once = np.asarray(jax.jit(tiny_nets.predict_all, static_argnums=0)(model, bank, feats))
  assert all_at_once.shape == (k, 10, 2)
  for i in range(k):  # The reference: one net at a time.
    p_i = jax.tree.map(lambda x, i=i: x[i], bank.params)
    ref = bank.label_mean[i] + bank.label_scale[i] * model.apply({'params': p_i}, feats)
    np.testing.assert_allclose(all_at_once[i], ref, rtol=1e-5, atol=1e-5)
  # One step's features (no batch axis) give one candidate per net.
  one = np.asarray(tiny_nets.predict_all(model, bank, feats[3]))
  np.testing.assert_allclose(one, all_at_once[:, 3], rtol=1e-5, atol=1e-5)


def test_training_all_nets_at_once_fits_each_regions_labels():
  # Two "regions" whose positions are a smooth function of the AoAs of their anchors.
  rng = np.random.default_rng(0)
  m = 4

  def draw(n):
    aoa = rng.uniform(-np.pi, np.pi, (2 * n, m)).astype(np.float32)
    aoa[:n, 2:] = np.nan  # Region 0 sees anchors 0, 1; region 1 sees 2, 3.
    aoa[n:, :2] = np.nan
    rel0 = aoa[:n, 0] - aoa[:n, 1]
    rel1 = aoa[n:, 2] - aoa[n:, 3]
    labels = np.concatenate(
      [
        np.stack([np.cos(rel0), np.sin(rel0)], -1) * 2,
        np.stack([np.cos(rel1), -np.sin(rel1)], -1) + 10.0,
      ]
    )
    return aoa, labels

  n = 120
  aoa, labels = draw(n)
  region = np.repeat([0, 1], n)
  ts = tiny_nets.make_training_set(aoa, labels, region, [0, 1], 0.1, 0)
  model = tiny_nets.MLP((32, 32), 'relu')
  opts = config_utils.options_from_config(
    tiny_nets.TrainOptions,
    CONFIG.nets,
    'config.nets',
    seed=0,
    hidden_sizes=(32, 32),
    num_train_steps=800,
    eval_every=200,
    path_dropout=0.0,
    learning_rate=3e-3,
  )
  bank = tiny_nets.train_bank(model, ts, opts)
  # Scored on fresh samples that no net saw in training or validation.
  n_test = 100
  test_aoa, test_labels = draw(n_test)
  pred = np.asarray(tiny_nets.predict_all(model, bank, features.encode(test_aoa)))
  for i in range(2):
    rows = slice(i * n_test, (i + 1) * n_test)
    rmse = np.sqrt(np.mean(np.sum((pred[i, rows] - test_labels[rows]) ** 2, -1)))
    # Each net against the other region's truth: far off (the labels are 10 m apart).
    other = slice((1 - i) * n_test, (2 - i) * n_test)
    wrong = np.sqrt(np.mean(np.sum((pred[i, other] - test_labels[other]) ** 2, -1)))
    assert rmse < 0.1 and wrong > 5.0, (i, rmse, wrong)
  np.testing.assert_allclose(bank.label_mean[1], labels[n:].mean(0), atol=1e-4)
  # Visibility statistics: region 0 always saw anchors 0, 1 and never 2, 3.
  rate = np.asarray(bank.visibility_rate)
  assert rate[0, 0] > 0.95 and rate[0, 2] < 0.05 and rate[1, 2] > 0.95


def test_samples_without_a_jade_label_are_not_trained_on():
  aoa = np.zeros((30, 3), np.float32)
  labels = np.ones((30, 2))
  labels[:10] = np.nan
  ts = tiny_nets.make_training_set(aoa, labels, np.zeros(30, int), [0], 0.1, 0)
  assert ts.num_train[0] + ts.val_mask[0].sum() == 20
  assert np.all(np.isfinite(ts.labels))


def test_visibility_loglik_prefers_the_net_that_saw_such_inputs():
  model = tiny_nets.MLP((4,), 'relu')
  bank = _bank(model, 2, 3)
  bank = bank.replace(visibility_rate=jnp.array([[0.9, 0.9, 0.1], [0.1, 0.1, 0.9]]))
  ll = np.asarray(tiny_nets.visibility_loglik(bank, jnp.array([True, True, False])))
  np.testing.assert_allclose(ll[0], 3 * np.log(0.9), rtol=1e-5)
  assert ll[0] > ll[1]


def _options(**overrides):
  return config_utils.options_from_config(
    tiny_nets.TrainOptions, CONFIG.nets, 'config.nets', **{'seed': 0, **overrides}
  )


def test_every_training_option_comes_from_both_config_sections():
  for section in ('nets', 'big_nn'):
    opts = config_utils.options_from_config(
      tiny_nets.TrainOptions, CONFIG[section], f'config.{section}', seed=0
    )
    assert opts.loss in tiny_nets.LOSSES
    assert opts.label_weighting in tiny_nets.LABEL_WEIGHTINGS
  with pytest.raises(ValueError, match='loss must be one of'):
    _options(loss='l1')
  with pytest.raises(ValueError, match='loss_scale_m'):
    _options(loss='huber', loss_scale_m=0.0)


def test_robust_losses_are_the_squared_error_for_small_errors():
  sq = jnp.asarray([0.0, 1e-4, 0.04, 1.0, 100.0])
  mse = np.asarray(tiny_nets.robust_loss(sq, 'mse', 0.5))
  huber = np.asarray(tiny_nets.robust_loss(sq, 'huber', 0.5))
  cauchy = np.asarray(tiny_nets.robust_loss(sq, 'cauchy', 0.5))
  np.testing.assert_allclose(huber[:3], mse[:3], rtol=1e-6)
  np.testing.assert_allclose(cauchy[:2], mse[:2], rtol=1e-3)
  # Beyond the scale: linear (Huber: 2 s r - s^2) and logarithmic (Cauchy).
  np.testing.assert_allclose(huber[3:], [2 * 0.5 * 1 - 0.25, 2 * 0.5 * 10 - 0.25], rtol=1e-6)
  assert cauchy[4] < 0.25 * np.log1p(400) + 1e-5
  grad = jax.grad(lambda x: tiny_nets.robust_loss(x, 'huber', 0.5))(jnp.asarray(0.0))
  assert np.isfinite(grad)


def test_training_set_keeps_only_trusted_labels_and_weights_them():
  n = 40
  aoa = np.zeros((n, 3), np.float32)
  labels = np.arange(2 * n, dtype=np.float64).reshape(n, 2)
  labels[:5] = np.nan
  trusted = np.ones(n, bool)
  trusted[5:15] = False
  std = np.linspace(0.05, 2.0, n)
  weights = tiny_nets.label_weights(std, 0.1)
  assert weights[0] == weights[1] == pytest.approx(100.0)  # Floored std: a capped weight.
  ts = tiny_nets.make_training_set(
    aoa, labels, np.zeros(n, int), [0], 0.1, 0, trusted=trusted, weights=weights
  )
  kept = ts.num_train[0] + ts.val_mask[0].sum()
  assert kept == n - 15
  # Only the trusted rows: labels 15..39 (each row's first coordinate is 2 * row).
  rows = np.sort(ts.labels[0, :kept, 0] / 2).astype(int)
  np.testing.assert_array_equal(rows, np.arange(15, n))
  w = ts.weights[0, :kept]
  assert w.mean() == pytest.approx(1.0)
  np.testing.assert_allclose(
    w, weights[ts.labels[0, :kept, 0].astype(int) // 2] / weights[15:].mean(), rtol=1e-5
  )
  # Without trust and weights: every labelled sample, unit weights.
  plain = tiny_nets.make_training_set(aoa, labels, np.zeros(n, int), [0], 0.1, 0)
  assert plain.num_train[0] + plain.val_mask[0].sum() == n - 5
  assert np.all(plain.weights[0, : n - 5] == 1.0)


def test_a_robust_loss_ignores_gross_outlier_labels():
  # One region whose position is a smooth function of two ADoAs; 10 % of its labels
  # are replaced by points 40-60 m away (what an untrusted JADE label looks like).
  rng = np.random.default_rng(0)
  n = 300
  aoa = rng.uniform(-np.pi, np.pi, (n, 3)).astype(np.float32)
  a, b = aoa[:, 0] - aoa[:, 1], aoa[:, 0] - aoa[:, 2]
  truth = np.stack([2 * np.cos(a) + np.sin(b), 2 * np.sin(a) - np.cos(b)], -1) + 5.0
  labels = truth.copy()
  bad = rng.permutation(n)[: n // 10]
  angle = rng.uniform(0, 2 * np.pi, len(bad))
  labels[bad] += rng.uniform(40, 60, (len(bad), 1)) * np.stack([np.cos(angle), np.sin(angle)], -1)
  model = tiny_nets.MLP((32, 32), 'relu')
  feats = features.encode(aoa)
  good = np.setdiff1d(np.arange(n), bad)
  rmse = {}
  for loss in ('mse', 'huber', 'cauchy'):
    opts = _options(
      hidden_sizes=(32, 32),
      num_train_steps=800,
      eval_every=200,
      path_dropout=0.0,
      validation_fraction=0.0,
      loss=loss,
      loss_scale_m=0.5,
    )
    ts = tiny_nets.make_training_set(aoa, labels, np.zeros(n, int), [0], 0.0, 0)
    bank = tiny_nets.train_bank(model, ts, opts)
    pred = np.asarray(tiny_nets.predict_all(model, bank, feats))[0]
    rmse[loss] = np.sqrt(np.mean(np.sum((pred[good] - truth[good]) ** 2, -1)))
  # Measured: mse 4.4 m, huber 0.12 m, cauchy 0.06 m.
  assert rmse['mse'] > 2.0, rmse
  assert rmse['huber'] < 0.1 * rmse['mse'] and rmse['huber'] < 0.4, rmse
  assert rmse['cauchy'] < 0.1 * rmse['mse'] and rmse['cauchy'] < 0.4, rmse
