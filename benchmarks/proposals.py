"""Candidate library changes, measured by the benchmarks but not used by the library.

The ``train_model*`` rows time the library exactly as training runs it. This module
holds *proposed* replacements for the parts that profiling showed slow on XLA:CPU, so
``run.py --proposals`` can time them side by side with the library in the same process
and the numbers behind each recommendation are reproducible. Nothing here changes how
the library behaves; a change is adopted by moving the code into ``csiloc_jax``.

1. :func:`max_pool` — non-overlapping max pooling (window == stride, the only kind the
   CNN models use) as ``reshape`` + ``max`` with a custom VJP that routes each window's
   gradient to its first maximum (exactly what ``select-and-scatter`` computes).
   ``nn.max_pool``'s gradient lowers to XLA's ``select-and-scatter``, which XLA:CPU runs
   as a slow scalar loop: on the Model 2 encoder it is one of the largest costs.
2. :func:`conv2d` — ``lax.conv_general_dilated`` (stride 1, optional input dilation,
   i.e. also a transposed convolution) with a custom VJP whose *kernel* gradient is one
   ``[N, C_in]^T @ [N, C_out]`` matmul per kernel tap instead of XLA:CPU's
   backprop-filter convolution, which runs at a few GFLOP/s for these small-kernel,
   large-image layers. Forward and input gradient stay XLA's own convolutions.
   :class:`Conv` / :class:`ConvTranspose` use it with the parameter names, shapes and
   initialisers of ``nn.Conv`` / ``nn.ConvTranspose`` ('SAME' padding), so checkpoints
   and initial values do not change.
3. :func:`train_step` — ``steps.train_step`` whose cross-device sums are skipped when
   the batch axis has a single device: XLA:CPU still runs a one-participant
   ``all-reduce`` over the whole gradient (a copy through its collective runtime).

The proposed CTW cache writer is in :mod:`benchmarks.ctw_proposal` (kept free of JAX
imports so its memory is measured on its own).
"""

from __future__ import annotations

import functools
from typing import Any, Callable, Sequence

import flax.linen as nn
import jax
from jax import lax
import jax.numpy as jnp
import optax

from csiloc_jax import models
from csiloc_jax import steps

_DN = ('NHWC', 'HWIO', 'NHWC')


# --------------------------------------------------------------------------------------
# 1. Pooling.

def max_pool(x: jnp.ndarray, window: Sequence[int]) -> jnp.ndarray:
  """``nn.max_pool(x, window, strides=window, padding='SAME')`` for NHWC ``x``.

  'SAME' with stride == window is ceil-mode pooling: the edge is padded with -inf up to
  a multiple of the window (at the end, as XLA's 'SAME' does for these sizes).
  """
  wh, ww = window
  _, h, w, _ = x.shape
  ph, pw = (-h) % wh, (-w) % ww
  if ph or pw:
    x = jnp.pad(x, ((0, 0), (0, ph), (0, pw), (0, 0)), constant_values=-jnp.inf)
  return _pool(x, (wh, ww))


def _windows(x, window):
  b, h, w, c = x.shape
  wh, ww = window
  return x.reshape(b, h // wh, wh, w // ww, ww, c)


@functools.partial(jax.custom_vjp, nondiff_argnums=(1,))
def _pool(x, window):
  return _windows(x, window).max(axis=(2, 4))


def _pool_fwd(x, window):
  y = _pool(x, window)
  return y, (x, y)


def _pool_bwd(window, residuals, dy):
  # The gradient goes to the *first* maximum of each window in row-major order, which
  # is what XLA's select-and-scatter (nn.max_pool's gradient) does: identical results,
  # as a few elementwise passes instead of a scalar scatter loop.
  x, y = residuals
  wh, ww = window
  xw = _windows(x, window)
  taken = jnp.zeros(y.shape, bool)
  parts = []
  for i in range(wh):
    for j in range(ww):
      hit = (xw[:, :, i, :, j, :] == y) & ~taken
      taken = taken | hit
      parts.append(jnp.where(hit, dy, jnp.zeros_like(dy)))
  b, hh, wo, c = y.shape
  g = jnp.stack(parts, axis=3).reshape(b, hh, wo, wh, ww, c)
  return (g.transpose(0, 1, 3, 2, 4, 5).reshape(x.shape),)


_pool.defvjp(_pool_fwd, _pool_bwd)


# --------------------------------------------------------------------------------------
# 2. Convolutions with a matmul kernel gradient.

def _conv(x, kernel, padding, lhs_dilation):
  return lax.conv_general_dilated(x, kernel, (1, 1), padding, lhs_dilation=lhs_dilation,
                                  dimension_numbers=_DN)


def _kernel_grad(x, dy, kernel_shape, padding, lhs_dilation):
  """d loss / d kernel of :func:`_conv`, one matmul per kernel tap.

  With ``x`` dilated by ``s`` and padded by ``lo`` (per spatial axis), output ``o`` reads
  input ``i`` through tap ``k`` when ``s*i = o + k - lo``; so the gradient of tap ``k`` is
  ``sum_i x[i] (x) dy[s*i - k + lo]`` with ``dy`` taken as zero outside the output. That
  is a strided slice of (zero-padded) ``dy`` contracted with ``x`` over batch and space.
  """
  kh, kw, cin, cout = kernel_shape
  b, h, w, _ = x.shape
  _, oh, ow, _ = dy.shape
  (lo_h, _), (lo_w, _) = padding
  sh, sw = lhs_dilation
  pad_h = (max(0, kh - 1 - lo_h), max(0, sh * (h - 1) + lo_h - (oh - 1)))
  pad_w = (max(0, kw - 1 - lo_w), max(0, sw * (w - 1) + lo_w - (ow - 1)))
  dy_p = jnp.pad(dy, ((0, 0), pad_h, pad_w, (0, 0)))
  x2 = x.reshape(-1, cin)
  taps = []
  for i in range(kh):
    for j in range(kw):
      start_h = lo_h - i + pad_h[0]
      start_w = lo_w - j + pad_w[0]
      window = lax.slice(dy_p, (0, start_h, start_w, 0),
                         (b, start_h + sh * (h - 1) + 1, start_w + sw * (w - 1) + 1, cout),
                         (1, sh, sw, 1))
      taps.append(lax.dot_general(x2, window.reshape(-1, cout), (((0,), (0,)), ((), ()))))
  return jnp.stack(taps).reshape(kh, kw, cin, cout)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def conv2d(x, kernel, padding, lhs_dilation=(1, 1)):
  """NHWC/HWIO stride-1 convolution; ``lhs_dilation`` > 1 makes it a transposed conv."""
  return _conv(x, kernel, padding, lhs_dilation)


def _conv2d_fwd(x, kernel, padding, lhs_dilation):
  return _conv(x, kernel, padding, lhs_dilation), (x, kernel)


def _conv2d_bwd(padding, lhs_dilation, residuals, dy):
  x, kernel = residuals
  _, vjp_x = jax.vjp(lambda x: _conv(x, kernel, padding, lhs_dilation), x)
  (dx,) = vjp_x(dy)
  return dx, _kernel_grad(x, dy, kernel.shape, padding, lhs_dilation)


conv2d.defvjp(_conv2d_fwd, _conv2d_bwd)


def _same_padding(k: int) -> tuple[int, int]:
  return ((k - 1) // 2, k - 1 - (k - 1) // 2)


def _transpose_same_padding(k: int, s: int) -> tuple[int, int]:
  # lax.conv_transpose's 'SAME' rule (jax._src.lax.convolution._conv_transpose_padding).
  pad_len = k + s - 2
  pad_a = k - 1 if s > k - 1 else -(-pad_len // 2)
  return pad_a, pad_len - pad_a


class Conv(nn.Module):
  """``nn.Conv(features, kernel_size, padding='SAME')`` (stride 1) via :func:`conv2d`.

  With fewer than ``min_channels`` input channels (the first layer on 1-channel CSI)
  XLA's own kernel gradient is kept: it is fast there, while the per-tap matmuls would
  be memory-bound vector products over a full-resolution gradient.
  """
  features: int
  kernel_size: Sequence[int]
  min_channels: int = 8

  @nn.compact
  def __call__(self, x):
    kh, kw = self.kernel_size
    kernel = self.param('kernel', nn.initializers.lecun_normal(),
                        (kh, kw, x.shape[-1], self.features), jnp.float32)
    bias = self.param('bias', nn.initializers.zeros_init(), (self.features,), jnp.float32)
    padding = (_same_padding(kh), _same_padding(kw))
    if x.shape[-1] < self.min_channels:
      y = _conv(x, kernel, padding, (1, 1))
    else:
      y = conv2d(x, kernel, padding, (1, 1))
    return y + bias


class ConvTranspose(nn.Module):
  """``nn.ConvTranspose(features, kernel_size, strides, padding='SAME')`` via :func:`conv2d`."""
  features: int
  kernel_size: Sequence[int]
  strides: Sequence[int]

  @nn.compact
  def __call__(self, x):
    kh, kw = self.kernel_size
    sh, sw = self.strides
    kernel = self.param('kernel', nn.initializers.lecun_normal(),
                        (kh, kw, x.shape[-1], self.features), jnp.float32)
    bias = self.param('bias', nn.initializers.zeros_init(), (self.features,), jnp.float32)
    padding = (_transpose_same_padding(kh, sh), _transpose_same_padding(kw, sw))
    y = conv2d(x, kernel, padding, (sh, sw))
    return y + bias


class CNNEncoder(nn.Module):
  """``models.CNNEncoder`` with :class:`Conv` and :func:`max_pool` (same parameters)."""
  features: Sequence[int] = (32, 64)
  kernel_sizes: Sequence[int] = (3, 2)
  pool_size: Sequence[int] = (2, 2)
  fast_conv: bool = True
  fast_pool: bool = True

  @nn.compact
  def __call__(self, x):
    for i, (width, k) in enumerate(zip(self.features, self.kernel_sizes)):
      if self.fast_conv:
        x = Conv(width, (k, k), name=f'conv_{i}')(x)
      else:
        x = nn.Conv(width, (k, k), padding='SAME', name=f'conv_{i}')(x)
      x = nn.relu(x)
      if self.fast_pool:
        x = max_pool(x, tuple(self.pool_size))
      else:
        x = nn.max_pool(x, tuple(self.pool_size), strides=tuple(self.pool_size),
                        padding='SAME')
    return x


class CNNDecoder(nn.Module):
  """``models.CNNDecoder`` with :class:`ConvTranspose` (same parameters)."""
  features: Sequence[int] = (32,)
  kernel_size: int = 3
  pool_size: Sequence[int] = (2, 2)
  output_shape: Sequence[int] = ()
  output_activation: str = 'linear'

  @nn.compact
  def __call__(self, z):
    height, width, channels = self.output_shape
    widths = tuple(self.features) + (channels,)
    for i, w in enumerate(widths):
      z = ConvTranspose(w, (self.kernel_size, self.kernel_size), tuple(self.pool_size),
                        name=f'deconv_{i}')(z)
      last = i == len(widths) - 1
      z = models.ACTIVATIONS[self.output_activation](z) if last else nn.relu(z)
    return z[:, :height, :width, :]


def _cnn_encoder(mc, **kwargs) -> CNNEncoder:
  return CNNEncoder(features=tuple(mc.cnn_features), kernel_sizes=tuple(mc.cnn_kernel_sizes),
                    pool_size=tuple(mc.pool_size), **kwargs)


def build_position_model(model_config, num_outputs: int = 3, **kwargs) -> nn.Module:
  """``models.build_position_model`` with the proposed CNN encoder (CNN models only)."""
  if model_config.encoder != 'cnn':
    return models.build_position_model(model_config, num_outputs)
  head = models.MLPHead(features=tuple(model_config.head_features), num_outputs=num_outputs)
  return models.PositionModel(encoder=_cnn_encoder(model_config, **kwargs), head=head,
                              stop_encoder_gradient=bool(model_config.freeze_encoder))


def build_autoencoder(model_config, input_shape: Sequence[int], **kwargs) -> nn.Module:
  """``models.build_autoencoder`` with the proposed CNN encoder and decoder."""
  if model_config.encoder != 'cnn':
    return models.build_autoencoder(model_config, input_shape)
  decoder = CNNDecoder(features=tuple(model_config.cnn_decoder_features),
                       kernel_size=model_config.cnn_decoder_kernel_size,
                       pool_size=tuple(model_config.pool_size),
                       output_shape=tuple(input_shape),
                       output_activation=model_config.decoder_output_activation)
  return models.AutoEncoder(encoder=_cnn_encoder(model_config, **kwargs), decoder=decoder)


# --------------------------------------------------------------------------------------
# 3. The train step without one-device collectives.

def _psum(x: Any, axis_name: str) -> Any:
  # A psum over a one-device axis is the identity, but XLA:CPU still executes it.
  return x if lax.axis_size(axis_name) == 1 else lax.psum(x, axis_name)


def train_step(state: steps.TrainState, batch: dict, *, loss: str, normalize: Callable,
               axis_name: str = steps.AXIS) -> tuple[steps.TrainState, dict]:
  """``steps.train_step`` with :func:`_psum` in place of ``lax.psum`` (else identical)."""
  per_example = steps.LOSSES[loss]
  x = normalize(batch['x'])
  mask = batch['mask']
  count = _psum(jnp.sum(mask), axis_name)

  def loss_fn(params):
    pred = state.apply_fn({'params': params}, x)
    return jnp.sum(mask * per_example(pred, x, batch.get('y'))) / count

  local_loss, grads = jax.value_and_grad(loss_fn)(state.params)
  grads = _psum(grads, axis_name)
  loss_value = _psum(local_loss, axis_name)
  new_state = state.apply_gradients(grads=grads)
  return new_state, {'loss': loss_value, 'grad_norm': optax.tree.norm(grads)}

