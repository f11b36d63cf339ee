"""Tiny nets: stacked parameters, vmapped evaluation == per-net apply, training works."""

import os

import jax
import jax.numpy as jnp
import numpy as np

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
  n, m = 120, 4
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
  pred = np.asarray(tiny_nets.predict_each(model, bank, features.encode(ts.aoa)))
  n_all = ts.num_train + ts.val_mask.sum(1)
  for i in range(2):
    rmse = np.sqrt(np.mean(np.sum((pred[i, : n_all[i]] - ts.labels[i, : n_all[i]]) ** 2, -1)))
    assert rmse < 0.25, (i, rmse)
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
