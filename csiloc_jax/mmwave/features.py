"""ADoA input features of the tiny networks, with a defined encoding for missing paths.

Data flow: ``aoa [T, M]`` (any file) -> :func:`encode` -> ``[T, 3M]`` features shared by
every net (training in :mod:`tiny_nets`, candidates in :mod:`tracker`).

Encoding. For each step, the visible AoAs are turned into ADoAs against a reference
direction ``phi_t`` and each anchor m contributes three numbers::

    [cos(theta_m - phi_t), sin(theta_m - phi_t), 1]   if path m was received,
    [0,                    0,                    0]   if it was not (NaN in ``aoa``).

Why this encoding:

* Heading: the unknown client heading adds the same offset to every AoA and to
  ``phi_t``, so the features depend on ADoAs only.
* Wrap-around: an angle enters only through cos/sin, so -pi, pi and pi + 2k pi are the
  same input; nothing ever subtracts raw angles across the cut.
* Missing paths: (0, 0) is not on the unit circle, so "no path" can never be mistaken
  for any real angle (zero-filling the *angle* would collide with an ADoA of 0), and
  the explicit visibility bit tells the net which case it is in.
* Reference: ``'mean'`` (default) uses the circular mean of the visible AoAs, which
  every visible path supports, so losing one path moves the reference a little instead
  of redefining every feature (a single reference anchor, ``'anchor'``, makes every
  feature jump when that anchor is lost). ``'anchor'`` is kept as an option: the
  reference is the visible anchor with the highest ``priority`` (e.g. how often the
  survey saw it).

Steps with no received path give an all-zero vector; the tracker treats steps with
fewer than ``min_paths`` paths as predict-only anyway.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

REFERENCES = ('mean', 'anchor')


def num_features(num_anchors: int) -> int:
  return 3 * num_anchors


def unit_vectors(aoa: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
  """``(cos theta, sin theta, visible)`` per path, zeros where missing: ``[..., M]`` each.

  The only transcendental part of the encoding; training computes it once and re-runs
  only the cheap :func:`encode_units` when it drops paths for augmentation.
  """
  aoa = jnp.asarray(aoa)
  visible = jnp.isfinite(aoa)
  vis = visible.astype(jnp.float32)
  theta = jnp.where(visible, aoa, 0.0)
  return jnp.cos(theta) * vis, jnp.sin(theta) * vis, vis


def encode_units(
  cos_t: jax.Array,
  sin_t: jax.Array,
  vis: jax.Array,
  *,
  reference: str = 'mean',
  priority: jax.Array | None = None,
) -> jax.Array:
  """:func:`encode` from :func:`unit_vectors` (``vis`` may have had paths dropped)."""
  cos_t, sin_t = cos_t * vis, sin_t * vis
  if reference == 'mean':
    c, s = jnp.sum(cos_t, -1, keepdims=True), jnp.sum(sin_t, -1, keepdims=True)
    norm = jnp.sqrt(c * c + s * s)
    # With no path (or a perfectly balanced set) any reference will do: take phi = 0.
    degenerate = norm < 1e-6
    cos_p = jnp.where(degenerate, 1.0, c / jnp.where(degenerate, 1.0, norm))
    sin_p = jnp.where(degenerate, 0.0, s / jnp.where(degenerate, 1.0, norm))
  elif reference == 'anchor':
    if priority is None:
      raise ValueError("reference='anchor' needs a priority per anchor")
    score = jnp.where(vis > 0, jnp.asarray(priority, jnp.float32), -jnp.inf)
    ref = jnp.argmax(score, -1)[..., None]
    any_vis = (vis > 0).any(-1, keepdims=True)
    cos_p = jnp.where(any_vis, jnp.take_along_axis(cos_t, ref, -1), 1.0)
    sin_p = jnp.where(any_vis, jnp.take_along_axis(sin_t, ref, -1), 0.0)
  else:
    raise ValueError(f'feature reference must be one of {REFERENCES}, got {reference!r}')
  # cos/sin of theta - phi by the angle-difference identities.
  cos_a = cos_t * cos_p + sin_t * sin_p
  sin_a = sin_t * cos_p - cos_t * sin_p
  return jnp.concatenate([cos_a, sin_a, vis], -1).astype(jnp.float32)


def encode(
  aoa: jax.Array, *, reference: str = 'mean', priority: jax.Array | None = None
) -> jax.Array:
  """Features ``[..., 3M]`` from AoAs ``[..., M]`` (NaN = path not received).

  Works on numpy or JAX arrays and inside ``jit``/``vmap``. The layout is
  ``[cos block (M) | sin block (M) | visibility block (M)]``.
  """
  return encode_units(*unit_vectors(aoa), reference=reference, priority=priority)


def path_counts(aoa) -> np.ndarray:
  """Number of received paths per step."""
  return np.isfinite(np.asarray(aoa)).sum(-1)


def survey_priority(aoa: np.ndarray) -> np.ndarray:
  """How often the survey saw each anchor (the ``'anchor'`` reference's priority)."""
  return np.isfinite(np.asarray(aoa)).mean(0).astype(np.float32)
