"""The train step gives the same loss and parameters on many devices (pmap and
jit(shard_map), as one program or as the trainer's gradient + update programs) as one
program on 1 device, including a padded batch: on 4 fake CPU devices in this process,
and for every paper model in the trainer's form in a subprocess with 8 (the size of a
TPU v2/v3-8 host). The per-example evaluation step gives the same outputs, in batch
order."""

import functools
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from csiloc_jax.core import config_utils
from csiloc_jax.core import parallel
from csiloc_jax.csi import input_pipeline
from csiloc_jax.csi import models
from csiloc_jax.csi import steps

# The fake CPU devices this process was started with (tests/conftest.py: 4; the 8-device
# subprocess below sets 8).
EXPECTED_DEVICES = int(os.environ.get('CSILOC_TEST_DEVICES', '4'))
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


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


# Every model's step in the trainer's form (split: gradient + update programs) runs in the
# 8-device subprocess (test_eight_fake_devices_run_every_model_in_both_forms); here, on 4
# devices, the single-program form for one model of each kind and the trainer's form for
# Model 1.
_TRAINER_FORM = [
  (k, loss, True)
  for k, loss in [
    (1, 'position'),
    (2, 'position'),
    (3, 'position'),
    (3, 'reconstruction'),
    (4, 'position'),
    (4, 'reconstruction'),
  ]
]
_ONE_PROGRAM = [(2, 'position', False), (3, 'reconstruction', False), (4, 'reconstruction', False)]
_STEPS = _TRAINER_FORM if EXPECTED_DEVICES == 8 else _ONE_PROGRAM + _TRAINER_FORM[:1]


@functools.cache
def _one_device_reference(k, loss):
  """Model k's three steps as one program on 1 device: (model, initial params, batches,
  losses, final params), shared by both backends' tests of the model."""
  shape = (8, 12, 1)
  model, params = _model(k, loss, shape)
  batches = _batches(3, shape, loss == 'position', pad_last=True)
  losses, final = _run('pmap', jax.devices()[:1], model, params, batches, loss)
  return model, params, batches, losses, final


@pytest.mark.parametrize('k, loss, split', _STEPS)
@pytest.mark.parametrize('backend', ['pmap', 'shard_map'])
def test_all_devices_match_one_device(k, loss, split, backend):
  assert jax.device_count() == EXPECTED_DEVICES, f'expected {EXPECTED_DEVICES} fake CPU devices'
  model, params, batches, ref_losses, ref_params = _one_device_reference(k, loss)
  losses, new_params = _run(backend, jax.devices(), model, params, batches, loss, split)
  np.testing.assert_allclose(losses, ref_losses, rtol=2e-5)
  # Adam divides by the gradient's running RMS, so float re-association in the
  # cross-device sum moves near-zero-gradient entries by up to ~1e-6 on 4 devices and
  # ~6e-5 on 8 (seen in 2 of 32,768 weights of Model 3): each Adam step moves a weight by
  # up to the learning rate, 1e-2, so 1e-4 is 1 % of one step. A wrong reduction (a
  # missing psum, a mean over the wrong count) is off by whole steps.
  jax.tree.map(
    lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4), new_params, ref_params
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


@pytest.mark.skipif('CSILOC_TEST_DEVICES' in os.environ, reason='already the subprocess')
def test_eight_fake_devices_run_every_model_in_both_forms():
  # The trainer's form (gradient + update programs), every model and loss, both backends.
  env = dict(
    os.environ,
    XLA_FLAGS='--xla_force_host_platform_device_count=8',
    CSILOC_TEST_DEVICES='8',
  )
  proc = subprocess.run(
    [
      sys.executable,
      '-m',
      'pytest',
      '-q',
      '-p',
      'no:cacheprovider',
      os.path.join(REPO, 'tests', 'test_core_parallel.py'),
      '-k',
      'all_devices_match_one_device and True',
    ],
    env=env,
    cwd=REPO,
    capture_output=True,
    text=True,
    timeout=900,
  )
  assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
  assert '12 passed' in proc.stdout, proc.stdout[-500:]
