"""csiloc_jax.csi.layers equals flax's Conv / ConvTranspose / max_pool in values and gradients."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from csiloc_jax.csi import layers


def _grads(module, params, x):
  def loss(params, x):
    y = module.apply({'params': params}, x)
    # A fixed random projection so every output element gets its own cotangent.
    w = jax.random.normal(jax.random.PRNGKey(7), y.shape)
    return jnp.sum(w * y)

  return jax.grad(loss, argnums=(0, 1))(params, x)


def _assert_close(a, b, rtol=2e-5, atol=2e-5):
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
    np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=rtol, atol=atol)


@pytest.mark.parametrize(
  'shape,features,k',
  [
    ((2, 9, 13, 8), 16, 3),  # Odd sizes, k3.
    ((3, 7, 10, 32), 8, 2),  # Even kernel: asymmetric 'SAME' padding (0, 1).
    ((1, 5, 6, 1), 4, 3),  # One input channel.
  ],
)
@pytest.mark.parametrize('kernel_grad', ['taps', 'xla'])
def test_conv_matches_flax(shape, features, k, kernel_grad):
  x = jax.random.normal(jax.random.PRNGKey(0), shape)
  ours = layers.Conv(features, (k, k), kernel_grad=kernel_grad, min_channels=1)
  ref = nn.Conv(features, (k, k), padding='SAME')
  params = ours.init(jax.random.PRNGKey(1), x)['params']
  ref_params = ref.init(jax.random.PRNGKey(1), x)['params']
  # Same names, shapes and initial values as flax's layer.
  _assert_close(params, ref_params, rtol=0, atol=0)
  _assert_close(ours.apply({'params': params}, x), ref.apply({'params': params}, x))
  _assert_close(_grads(ours, params, x), _grads(ref, params, x), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize(
  'shape,features,k,s',
  [
    ((2, 4, 7, 16), 8, 3, (2, 2)),
    ((2, 5, 3, 8), 1, 3, (2, 2)),  # To one channel, as the decoder's last layer.
    ((1, 3, 4, 8), 4, 2, (2, 3)),
    ((1, 3, 4, 8), 4, 5, (2, 2)),  # Kernel larger than the stride.
  ],
)
def test_conv_transpose_matches_flax(shape, features, k, s):
  x = jax.random.normal(jax.random.PRNGKey(2), shape)
  ours = layers.ConvTranspose(features, (k, k), s, kernel_grad='taps')
  ref = nn.ConvTranspose(features, (k, k), strides=s, padding='SAME')
  params = ours.init(jax.random.PRNGKey(3), x)['params']
  _assert_close(params, ref.init(jax.random.PRNGKey(3), x)['params'], rtol=0, atol=0)
  y = ours.apply({'params': params}, x)
  assert y.shape == ref.apply({'params': params}, x).shape
  _assert_close(y, ref.apply({'params': params}, x))
  _assert_close(_grads(ours, params, x), _grads(ref, params, x), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize('shape', [(2, 8, 10, 3), (2, 7, 9, 2)])  # Even and ceil-mode.
def test_max_pool_matches_flax_with_ties(shape):
  x = jax.random.normal(jax.random.PRNGKey(4), shape)
  # ReLU makes whole windows 0 and rounding makes duplicated maxima: the gradient must go
  # to the same (first) element as flax's select-and-scatter.
  x = nn.relu(x)
  x = x.at[:, 0, 0, :].set(x[:, 0, 1, :]).at[:, 2, 2, :].set(x[:, 3, 3, :])

  def ours(x):
    return layers.max_pool(x, (2, 2))

  def ref(x):
    return nn.max_pool(x, (2, 2), strides=(2, 2), padding='SAME')

  np.testing.assert_array_equal(ours(x), ref(x))
  w = jax.random.normal(jax.random.PRNGKey(5), ours(x).shape)
  g_ours = jax.grad(lambda x: jnp.sum(w * ours(x)))(x)
  g_ref = jax.grad(lambda x: jnp.sum(w * ref(x)))(x)
  np.testing.assert_array_equal(g_ours, g_ref)
  assert float(jnp.sum(g_ours != 0)) == w.size  # Exactly one element per window.


def test_unknown_kernel_grad_is_an_error():
  x = jnp.zeros((1, 4, 4, 8))
  with pytest.raises(ValueError, match='kernel_grad'):
    layers.Conv(4, (3, 3), kernel_grad='fast').init(jax.random.PRNGKey(0), x)
