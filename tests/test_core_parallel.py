"""The train step gives the same loss and parameters on 4 devices (pmap and
jit(shard_map), as one program or as the trainer's gradient + update programs) as one
program on 1 device, including a padded batch; the per-example evaluation step gives
the same outputs, in batch order."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from csiloc_jax.core import config_utils
from csiloc_jax.core import parallel
from csiloc_jax.csi import input_pipeline
from csiloc_jax.csi import models
from csiloc_jax.csi import steps


def _normalizer(shape):
  """``x * 0.5``, as a normaliser passed to the steps."""
  return input_pipeline.Normalizer(np.zeros(shape, np.float32), np.full(shape, 0.5, np.float32))


def _run(backend, devices, model, params, batches, loss, split=False):
  dp = parallel.DataParallel(backend, devices=devices)
  state = steps.create_train_state(model.apply, params, 1e-2)
  if split:
    p_step = dp.compile_train_step(
      steps.compute_gradients, steps.apply_gradients, loss=loss, axis_name=dp.axis_name
    )
  else:
    p_step = dp.compile_step(steps.train_step, loss=loss, axis_name=dp.axis_name)
  p_state = dp.replicate(state)
  p_normalizer = dp.replicate(_normalizer(batches[0]['x'].shape[1:]))
  losses = []
  for batch in batches:
    p_state, metrics = p_step(p_state, dp.shard(batch), p_normalizer)
    losses.append(float(dp.unreplicate(metrics)['loss']))
  return losses, dp.unreplicate(p_state).params


def _model(k, loss, shape):
  """Paper model ``k``'s position model or autoencoder, and its initial parameters."""
  cfg = config_utils.load_config(f'configs/ctw_model{k}.py').model
  model = (
    models.build_position_model(cfg) if loss == 'position' else models.build_autoencoder(cfg, shape)
  )
  return model, model.init(jax.random.key(0), jnp.zeros((1,) + shape))['params']


def _batches(num, shape, with_y, pad_last):
  rng = np.random.default_rng(0)
  out = []
  for i in range(num):
    b = {'x': rng.normal(size=(8,) + shape).astype(np.float32), 'mask': np.ones(8, np.float32)}
    if with_y:
      b['y'] = rng.normal(size=(8, 3)).astype(np.float32)
    if pad_last and i == num - 1:
      b['mask'][5:] = 0.0
      b['x'][5:] = 1e3  # Padding must not matter, however large.
    out.append(b)
  return out


@pytest.mark.parametrize('k, loss', [(2, 'position'), (3, 'reconstruction'), (4, 'reconstruction')])
@pytest.mark.parametrize('backend', ['pmap', 'shard_map'])
@pytest.mark.parametrize('split', [False, True])
def test_four_devices_match_one_device(k, loss, backend, split):
  assert jax.device_count() == 4, 'conftest should provide 4 fake CPU devices'
  shape = (8, 12, 1)
  model, params = _model(k, loss, shape)
  batches = _batches(3, shape, loss == 'position', pad_last=True)
  ref_losses, ref_params = _run('pmap', jax.devices()[:1], model, params, batches, loss)
  losses, new_params = _run(backend, jax.devices(), model, params, batches, loss, split)
  np.testing.assert_allclose(losses, ref_losses, rtol=2e-5)
  # Adam divides by the gradient's running RMS, so float re-association in the
  # cross-device sum shows up at ~1e-6 in near-zero-gradient entries; updates are 1e-2.
  jax.tree.map(
    lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=2e-5), new_params, ref_params
  )
  # The step really trained: parameters moved.
  moved = jax.tree.map(
    lambda a, b: float(np.abs(np.asarray(a) - np.asarray(b)).max()), new_params, params
  )
  assert max(jax.tree.leaves(moved)) > 1e-4


def _evaluate(backend, devices, model, params, batches, loss):
  dp = parallel.DataParallel(backend, devices=devices)
  p_eval = dp.compile_eval_step(steps.eval_step, apply_fn=model.apply, loss=loss)
  p_params = dp.replicate(params)
  p_normalizer = dp.replicate(_normalizer(batches[0]['x'].shape[1:]))
  outputs = [dp.gather(p_eval(p_params, dp.shard(b), p_normalizer)) for b in batches]
  return jax.tree.map(lambda *xs: np.concatenate(xs), *outputs)


@pytest.mark.parametrize('k, loss', [(2, 'position'), (4, 'reconstruction')])
@pytest.mark.parametrize('backend', ['pmap', 'shard_map'])
def test_four_device_evaluation_matches_one_device(k, loss, backend):
  shape = (8, 12, 1)
  model, params = _model(k, loss, shape)
  batches = _batches(2, shape, loss == 'position', pad_last=True)
  # The reference: the step jitted on one device, batch by batch.
  single = jax.jit(functools.partial(steps.eval_step, apply_fn=model.apply, loss=loss))
  ref = [jax.device_get(single(params, b, _normalizer(shape))) for b in batches]
  ref_pred, ref_loss = (np.concatenate(xs) for xs in zip(*ref))
  pred, per_example = _evaluate(backend, jax.devices(), model, params, batches, loss)
  assert pred.shape == ref_pred.shape and per_example.shape == (16,)
  np.testing.assert_allclose(pred, ref_pred, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(per_example, ref_loss, rtol=1e-5, atol=1e-7)
  # The padded end of the last batch contributes no loss.
  assert np.all(per_example[13:] == 0.0) and np.all(per_example[:13] > 0.0)


def test_padding_is_ignored_by_the_loss():
  shape = (8, 12, 1)
  cfg = config_utils.load_config('configs/ctw_model1.py').model
  model = models.build_position_model(cfg)
  params = model.init(jax.random.key(0), jnp.zeros((1,) + shape))['params']
  full = _batches(1, shape, True, pad_last=False)[0]
  padded = {k: v.copy() for k, v in full.items()}
  padded['mask'][5:] = 0.0
  padded['x'][5:] = 7.0
  trimmed = {k: v[:5] for k, v in full.items()}
  dev = jax.devices()[:1]
  loss_padded, params_padded = _run('pmap', dev, model, params, [padded], 'position')
  dp1 = parallel.DataParallel('pmap', devices=dev)
  del dp1
  # The same 5 real examples as an unpadded batch (one device takes any batch size).
  loss_trim, params_trim = _run('pmap', dev, model, params, [trimmed], 'position')
  np.testing.assert_allclose(loss_padded, loss_trim, rtol=1e-5)
  jax.tree.map(
    lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6), params_padded, params_trim
  )


def test_batch_not_divisible_by_devices_is_a_clear_error():
  dp = parallel.DataParallel('pmap')
  with pytest.raises(ValueError, match='not divisible'):
    dp.shard({'x': np.zeros((6, 2))})


def test_unknown_backend_is_rejected():
  with pytest.raises(ValueError, match='backend'):
    parallel.DataParallel('vmap')
