"""Angle and similarity-transform helpers shared by JADE, the features and evaluation.

Sits under every other mmWave module: wrapping angles to (-pi, pi] (the one angle wrap
of the package: the simulator, the reader and JADE all call :func:`wrap`), bearings, the
closed-form heading that best explains a set of AoAs, and the Umeyama similarity fit
that moves JADE's solution into the frame fixed by ``ap_position`` (see docs/mmwave.md,
'JADE and its gauge').
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np


def wrap(x):
  """Wraps radians to (-pi, pi] (``pi`` stays ``pi``, ``-pi`` becomes ``pi``).

  A JAX array (or tracer) gives a JAX array; anything else is computed in numpy and
  keeps its precision (the simulator and the reader wrap float64 host arrays).
  """
  xp = jnp if isinstance(x, jax.Array) else np
  return xp.pi - xp.mod(xp.pi - xp.asarray(x), 2 * xp.pi)


def bearing(anchor: jax.Array, client: jax.Array) -> jax.Array:
  """Direction from ``client`` to ``anchor`` (``[..., 2]`` each), radians."""
  d = anchor - client
  return jnp.arctan2(d[..., 1], d[..., 0])


def best_heading(theta: jax.Array, mask: jax.Array, beta: jax.Array) -> jax.Array:
  """Heading psi minimising sum_m (1 - cos(theta_m + psi - beta_m)) over visible m.

  For the ``1 - cos`` loss the optimal heading is the circular mean of ``beta - theta``,
  so the heading never has to be a free unknown of its own. Arrays are ``[..., M]``.
  """
  diff = beta - jnp.where(mask, theta, 0.0)
  c = jnp.sum(jnp.where(mask, jnp.cos(diff), 0.0), -1)
  s = jnp.sum(jnp.where(mask, jnp.sin(diff), 0.0), -1)
  return jnp.arctan2(s, c)


def umeyama(
  src: np.ndarray,
  dst: np.ndarray,
  weights: np.ndarray | None = None,
  *,
  allow_reflection: bool = False,
) -> tuple:
  """Weighted least-squares similarity ``dst ~ scale * R @ src + t`` (Umeyama 1991).

  Works on one point set (``[K, 2]``) or a batch (``[..., K, 2]``, weights ``[..., K]``;
  zero weights drop points, e.g. padding). Returns ``(scale, R, t)`` with shapes
  ``[...]``, ``[..., 2, 2]``, ``[..., 2]``. With ``allow_reflection`` R may have
  determinant -1.
  """
  src, dst = np.asarray(src, np.float64), np.asarray(dst, np.float64)
  w = np.ones(src.shape[:-1]) if weights is None else np.asarray(weights, np.float64)
  w = w / np.maximum(w.sum(-1, keepdims=True), 1e-300)
  mu_s = np.einsum('...k,...ki->...i', w, src)
  mu_d = np.einsum('...k,...ki->...i', w, dst)
  xs, xd = src - mu_s[..., None, :], dst - mu_d[..., None, :]
  cov = np.einsum('...k,...ki,...kj->...ij', w, xd, xs)
  u, sig, vt = np.linalg.svd(cov)
  flip = np.linalg.det(u) * np.linalg.det(vt) < 0
  d = np.ones(sig.shape)
  if not allow_reflection:
    d[..., -1] = np.where(flip, -1.0, 1.0)
  rot = np.einsum('...ij,...j,...jk->...ik', u, d, vt)
  var_s = np.einsum('...k,...ki,...ki->...', w, xs, xs)
  scale = np.where(var_s > 0, np.sum(sig * d, -1) / np.maximum(var_s, 1e-300), 1.0)
  t = mu_d - scale[..., None] * np.einsum('...ij,...j->...i', rot, mu_s)
  if scale.ndim == 0:
    scale = float(scale)
  return scale, rot, t


def apply_similarity(points: np.ndarray, scale, rot: np.ndarray, t: np.ndarray) -> np.ndarray:
  """``scale * R @ p + t`` for points ``[..., N, 2]`` (batched like :func:`umeyama`)."""
  scale = np.asarray(scale, np.float64)
  return (
    scale[..., None, None] * np.einsum('...ij,...nj->...ni', rot, np.asarray(points))
    + np.asarray(t)[..., None, :]
  )
