"""The paper's layer shapes, parameter counts and encoder transplanting."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from csiloc_jax.core import config_utils
from csiloc_jax.csi import models

PAPER_INPUT = (56, 924, 1)


def _config(k):
  return config_utils.load_config(f'configs/ctw_model{k}.py')


def _abstract_params(module, shape):
  return jax.eval_shape(lambda: module.init(jax.random.key(0), jnp.zeros((1,) + shape)))['params']


def dense(n_in, n_out):
  return n_in * n_out + n_out


HEAD_FROM = lambda n: dense(n, 128) + dense(128, 64) + dense(64, 3)  # noqa: E731
FLAT = 56 * 924
POOLED = 14 * 231 * 64  # Two 2x2 poolings of 56 x 924, 64 channels.
CNN_ENCODER = (3 * 3 * 1 * 32 + 32) + (2 * 2 * 32 * 64 + 64)
MLP_ENCODER = dense(FLAT, 256) + dense(256, 128) + dense(128, 64) + dense(64, 32)


@pytest.mark.parametrize(
  'k, expected',
  [
    (1, HEAD_FROM(FLAT)),
    (2, CNN_ENCODER + HEAD_FROM(POOLED)),
    (3, MLP_ENCODER + HEAD_FROM(32)),
    (4, CNN_ENCODER + HEAD_FROM(POOLED)),
  ],
)
def test_position_model_parameter_counts_match_the_paper_layers(k, expected):
  params = _abstract_params(models.build_position_model(_config(k).model), PAPER_INPUT)
  assert models.count_params(params) == expected


def test_autoencoders_mirror_their_encoders_and_reconstruct_the_input_shape():
  mlp = models.build_autoencoder(_config(3).model, PAPER_INPUT)
  params = _abstract_params(mlp, PAPER_INPUT)
  decoder = dense(32, 64) + dense(64, 128) + dense(128, 256) + dense(256, FLAT)
  assert models.count_params(params) == MLP_ENCODER + decoder
  cnn = models.build_autoencoder(_config(4).model, PAPER_INPUT)
  params = _abstract_params(cnn, PAPER_INPUT)
  # Transposed convs: 64 -> 32 (k3), 32 -> 1 (k3).
  assert models.count_params(params) == CNN_ENCODER + (3 * 3 * 64 * 32 + 32) + (3 * 3 * 32 * 1 + 1)
  out = jax.eval_shape(
    lambda p, x: cnn.apply({'params': p}, x), params, jnp.zeros((2,) + PAPER_INPUT)
  )
  assert out.shape == (2,) + PAPER_INPUT


@pytest.mark.parametrize('shape', [(8, 12, 1), (7, 13, 2), (5, 3, 1)])
def test_cnn_autoencoder_handles_sizes_not_divisible_by_the_pooling(shape):
  ae = models.build_autoencoder(_config(4).model, shape)
  x = jax.random.normal(jax.random.key(1), (3,) + shape)
  params = ae.init(jax.random.key(0), x)['params']
  assert ae.apply({'params': params}, x).shape == x.shape


def test_pretrained_encoder_transplants_into_the_position_model():
  shape = (8, 12, 1)
  for k in (3, 4):
    cfg = _config(k).model
    ae = models.build_autoencoder(cfg, shape)
    pm = models.build_position_model(cfg)
    x = jax.random.normal(jax.random.key(2), (4,) + shape)
    ae_params = ae.init(jax.random.key(0), x)['params']
    pm_params = pm.init(jax.random.key(1), x)['params']
    merged = models.transplant_encoder(pm_params, ae_params)
    z_ae = ae.encoder.apply({'params': ae_params['encoder']}, x)
    z_pm = pm.encoder.apply({'params': merged['encoder']}, x)
    np.testing.assert_array_equal(z_ae, z_pm)
    np.testing.assert_array_equal(
      merged['head']['dense_0']['kernel'], pm_params['head']['dense_0']['kernel']
    )


def test_transplant_rejects_a_mismatched_encoder():
  x = jnp.zeros((1, 8, 12, 1))
  ae = models.build_autoencoder(_config(3).model, (8, 12, 1)).init(jax.random.key(0), x)
  pm = models.build_position_model(_config(3).model).init(
    jax.random.key(0), jnp.zeros((1, 8, 10, 1))
  )
  with pytest.raises(ValueError, match='does not match'):
    models.transplant_encoder(pm['params'], ae['params'])


def test_frozen_encoder_gets_no_gradient():
  cfg = _config(3).model
  cfg.freeze_encoder = True
  pm = models.build_position_model(cfg)
  x = jax.random.normal(jax.random.key(0), (4, 8, 12, 1))
  params = pm.init(jax.random.key(1), x)['params']
  grads = jax.grad(lambda p: jnp.sum((pm.apply({'params': p}, x) - 1.0) ** 2))(params)
  assert all(float(jnp.abs(g).max()) == 0 for g in jax.tree.leaves(grads['encoder']))
  assert any(float(jnp.abs(g).max()) > 0 for g in jax.tree.leaves(grads['head']))


def _ensemble_config(k, size):
  cfg = _config(k).model
  cfg.ensemble_size = size
  cfg.zero_init_output = False
  return cfg


def test_an_ensemble_is_k_independently_initialised_members_of_the_same_model():
  shape = (8, 12, 1)
  x = jax.random.normal(jax.random.key(2), (5,) + shape)
  single = models.build_position_model(_config(3).model)
  ensemble = models.build_position_model(_ensemble_config(3, 4))
  p1 = single.init(jax.random.key(0), x)['params']
  pk = ensemble.init(jax.random.key(0), x)['params']
  assert jax.tree.structure(p1) == jax.tree.structure(pk)
  for a, b in zip(jax.tree.leaves(p1), jax.tree.leaves(pk)):
    assert b.shape == (4,) + a.shape
  kernels = pk['encoder']['dense_0']['kernel']
  assert not np.allclose(kernels[0], kernels[1])
  out = ensemble.apply({'params': pk}, x)
  assert out.shape == (5, 4, 3)
  # Member k is the single model with member k's parameters.
  for k in range(4):
    member = jax.tree.map(lambda v, k=k: v[k], pk)
    np.testing.assert_allclose(out[:, k], single.apply({'params': member}, x), rtol=1e-5, atol=1e-6)


def test_ensemble_members_train_on_their_own_errors():
  from csiloc_jax.csi import steps

  shape = (8, 12, 1)
  x = jax.random.normal(jax.random.key(2), (6,) + shape)
  y = jax.random.normal(jax.random.key(3), (6, 3))
  single = models.build_position_model(_config(3).model)
  ensemble = models.build_position_model(_ensemble_config(3, 3))
  pk = ensemble.init(jax.random.key(0), x)['params']
  per_example = steps.position_error(ensemble.apply({'params': pk}, x), None, y)
  assert per_example.shape == (6,)
  member_losses = [
    steps.position_error(
      single.apply({'params': jax.tree.map(lambda v, k=k: v[k], pk)}, x), None, y
    )
    for k in range(3)
  ]
  np.testing.assert_allclose(per_example, np.mean(member_losses, axis=0), rtol=1e-5)
  # The gradient for member k is that of member k's own loss, over the member count.
  grads = jax.grad(
    lambda p: jnp.mean(steps.position_error(ensemble.apply({'params': p}, x), None, y))
  )(pk)
  for k in range(3):
    member = jax.tree.map(lambda v, k=k: v[k], pk)
    own = jax.grad(
      lambda p: jnp.mean(steps.position_error(single.apply({'params': p}, x), None, y))
    )(member)
    for g, o in zip(
      jax.tree.leaves(jax.tree.map(lambda v, k=k: v[k], grads)), jax.tree.leaves(own)
    ):
      np.testing.assert_allclose(g, o / 3, rtol=1e-4, atol=1e-7)


def test_a_pretrained_encoder_starts_every_member_and_the_heads_stay_their_own():
  shape = (8, 12, 1)
  cfg = _ensemble_config(3, 3)
  x = jax.random.normal(jax.random.key(2), (4,) + shape)
  ae_params = models.build_autoencoder(cfg, shape).init(jax.random.key(0), x)['params']
  pk = models.build_position_model(cfg).init(jax.random.key(1), x)['params']
  with pytest.raises(ValueError, match='does not match'):
    models.transplant_encoder(pk, ae_params)
  merged = models.transplant_encoder(pk, ae_params, members=3)
  for k in range(3):
    np.testing.assert_array_equal(
      merged['encoder']['dense_0']['kernel'][k], ae_params['encoder']['dense_0']['kernel']
    )
  assert merged['head'] is pk['head']


def test_the_ensemble_prediction_is_the_members_mean():
  members = np.arange(24.0).reshape(2, 4, 3)
  np.testing.assert_array_equal(models.ensemble_mean(members), members.mean(axis=1))
  np.testing.assert_array_equal(models.ensemble_mean(members[:, 0]), members[:, 0])


@pytest.mark.parametrize('bad', [0, -2, 1.5, True, '3'])
def test_ensemble_size_must_be_a_positive_integer(bad):
  cfg = _config(1).model
  cfg.ensemble_size = 1
  assert models.ensemble_size(cfg) == 1
  with cfg.ignore_type():
    cfg.ensemble_size = bad
  with pytest.raises(ValueError, match='ensemble_size must be an integer >= 1'):
    models.build_position_model(cfg)
