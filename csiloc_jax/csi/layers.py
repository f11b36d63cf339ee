"""Convolution and pooling layers of the CNN models, with gradients XLA:CPU runs fast.

Sits under :mod:`csiloc_jax.csi.models`: ``CNNEncoder`` / ``CNNDecoder`` are built from
:class:`Conv`, :class:`ConvTranspose` and :func:`max_pool`. Forward values, parameter
names, shapes and initialisers are those of ``nn.Conv`` / ``nn.ConvTranspose`` (padding
'SAME') and ``nn.max_pool`` (window = stride, padding 'SAME'), so checkpoints and initial
values are the same as with the flax layers; only how the *gradients* are computed
differs, and they are equal to float rounding (``tests/test_csi_layers.py``).

Why: profiling the Model 2 / Model 4 train steps on XLA:CPU showed two operations
dominating, both in the backward pass:

* ``nn.max_pool``'s gradient lowers to ``select-and-scatter``, which XLA:CPU runs as a
  scalar loop. Non-overlapping pooling is a reshape + max, and its gradient is a few
  elementwise passes (:func:`max_pool`).
* the kernel gradient of a convolution (a "backprop-filter" convolution) runs far below
  matmul speed on XLA:CPU for these small-kernel, large-image layers. It is exactly one
  ``[N·H·W, C_in]ᵀ @ [N·H·W, C_out]`` matmul per kernel tap (:func:`_kernel_grad`), which
  runs at matmul speed.

``kernel_grad='auto'`` uses the per-tap matmuls on CPU only; on GPU/TPU the vendor
convolution libraries compute the kernel gradient well and XLA's own is kept.
"""

from __future__ import annotations

import functools
from typing import Sequence

import flax.linen as nn
import jax
from jax import lax
import jax.numpy as jnp

_DIMENSIONS = ('NHWC', 'HWIO', 'NHWC')
KERNEL_GRADS = ('auto', 'taps', 'xla')


# --------------------------------------------------------------------------------------
# Max pooling (window == stride).


def max_pool(x: jnp.ndarray, window: Sequence[int]) -> jnp.ndarray:
  """``nn.max_pool(x, window, strides=window, padding='SAME')`` for NHWC ``x``.

  'SAME' with stride == window is ceil-mode pooling: XLA pads the end of each spatial
  axis up to a multiple of the window, with -inf for max.
  """
  wh, ww = window
  _, h, w, _ = x.shape
  ph, pw = (-h) % wh, (-w) % ww
  if ph or pw:
    x = jnp.pad(x, ((0, 0), (0, ph), (0, pw), (0, 0)), constant_values=-jnp.inf)
  return _pool(x, (wh, ww))


def _windows(x: jnp.ndarray, window: tuple[int, int]) -> jnp.ndarray:
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
  # The gradient goes to the *first* maximum of each window in row-major order — what
  # select-and-scatter (nn.max_pool's gradient) does, ties included (after a ReLU whole
  # windows are often 0).
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
  b, ho, wo, c = y.shape
  g = jnp.stack(parts, axis=3).reshape(b, ho, wo, wh, ww, c)
  return (g.transpose(0, 1, 3, 2, 4, 5).reshape(x.shape),)


_pool.defvjp(_pool_fwd, _pool_bwd)


# --------------------------------------------------------------------------------------
# Stride-1 convolution (optionally input-dilated = transposed) with a matmul kernel grad.


def _conv(x, kernel, padding, lhs_dilation):
  return lax.conv_general_dilated(
    x, kernel, (1, 1), padding, lhs_dilation=lhs_dilation, dimension_numbers=_DIMENSIONS
  )


def _kernel_grad(x, dy, kernel_shape, padding, lhs_dilation):
  """d loss / d kernel of :func:`_conv`, one matmul per kernel tap.

  With ``x`` dilated by ``s`` and padded by ``lo`` (per spatial axis), output ``o`` reads
  input ``i`` through tap ``k`` when ``s·i = o + k − lo``; so the gradient of tap ``k`` is
  ``Σ_i x[i] ⊗ dy[s·i − k + lo]``, ``dy`` taken as zero outside the output: a strided
  slice of zero-padded ``dy`` contracted with ``x`` over batch and space.
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
      window = lax.slice(
        dy_p,
        (0, start_h, start_w, 0),
        (b, start_h + sh * (h - 1) + 1, start_w + sw * (w - 1) + 1, cout),
        (1, sh, sw, 1),
      )
      taps.append(lax.dot_general(x2, window.reshape(-1, cout), (((0,), (0,)), ((), ()))))
  return jnp.stack(taps).reshape(kh, kw, cin, cout)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def conv2d_taps(x, kernel, padding, lhs_dilation=(1, 1)):
  """NHWC/HWIO stride-1 convolution whose kernel gradient is per-tap matmuls.

  ``padding`` is explicit ``((lo, hi), (lo, hi))``; ``lhs_dilation`` > 1 makes it a
  transposed convolution. Forward and input gradient are XLA's own convolutions.
  """
  return _conv(x, kernel, padding, lhs_dilation)


def _conv2d_fwd(x, kernel, padding, lhs_dilation):
  return _conv(x, kernel, padding, lhs_dilation), (x, kernel)


def _conv2d_bwd(padding, lhs_dilation, residuals, dy):
  x, kernel = residuals
  _, vjp_x = jax.vjp(lambda x: _conv(x, kernel, padding, lhs_dilation), x)
  (dx,) = vjp_x(dy)
  return dx, _kernel_grad(x, dy, kernel.shape, padding, lhs_dilation)


conv2d_taps.defvjp(_conv2d_fwd, _conv2d_bwd)


def _use_taps(kernel_grad: str, in_channels: int, min_channels: int) -> bool:
  if kernel_grad not in KERNEL_GRADS:
    raise ValueError(f'kernel_grad must be one of {KERNEL_GRADS}, got {kernel_grad!r}')
  if kernel_grad == 'auto':
    # With a handful of input channels (the first layer on 1-channel CSI) each tap's
    # matmul is a memory-bound vector product over a full-resolution gradient, and
    # XLA:CPU's own kernel gradient is the faster one.
    return jax.default_backend() == 'cpu' and in_channels >= min_channels
  return kernel_grad == 'taps'


def _same_padding(k: int) -> tuple[int, int]:
  return (k - 1) // 2, k - 1 - (k - 1) // 2


def _transpose_same_padding(k: int, s: int) -> tuple[int, int]:
  # lax.conv_transpose's 'SAME' rule (what nn.ConvTranspose(padding='SAME') uses).
  pad_len = k + s - 2
  pad_a = k - 1 if s > k - 1 else -(-pad_len // 2)
  return pad_a, pad_len - pad_a


def _conv_layer(module: nn.Module, x, padding, lhs_dilation):
  """Kernel and bias named and initialised as flax's, then the convolution plus bias."""
  kh, kw = module.kernel_size
  kernel = module.param(
    'kernel', nn.initializers.lecun_normal(), (kh, kw, x.shape[-1], module.features), jnp.float32
  )
  bias = module.param('bias', nn.initializers.zeros_init(), (module.features,), jnp.float32)
  if _use_taps(module.kernel_grad, x.shape[-1], module.min_channels):
    return conv2d_taps(x, kernel, padding, lhs_dilation) + bias
  return _conv(x, kernel, padding, lhs_dilation) + bias


class Conv(nn.Module):
  """``nn.Conv(features, kernel_size, padding='SAME')`` (stride 1, same parameters)."""

  features: int
  kernel_size: Sequence[int]
  kernel_grad: str
  min_channels: int = 8

  @nn.compact
  def __call__(self, x):
    kh, kw = self.kernel_size
    return _conv_layer(self, x, (_same_padding(kh), _same_padding(kw)), (1, 1))


class ConvTranspose(nn.Module):
  """``nn.ConvTranspose(features, kernel_size, strides, padding='SAME')`` (same parameters)."""

  features: int
  kernel_size: Sequence[int]
  strides: Sequence[int]
  kernel_grad: str
  min_channels: int = 8

  @nn.compact
  def __call__(self, x):
    (kh, kw), (sh, sw) = self.kernel_size, self.strides
    padding = (_transpose_same_padding(kh, sh), _transpose_same_padding(kw, sw))
    return _conv_layer(self, x, padding, (sh, sw))
