"""Pure train/eval step functions, the two losses of the paper and the chart losses.

The step is written once, for any number of devices: ``compute_gradients`` sends every
reduction over the batch through ``lax.psum`` over the named axis, ``apply_gradients``
is the Adam update, ``train_step`` is the two composed, ``eval_step`` gives per-example
predictions and losses, and :mod:`csiloc_jax.core.parallel` is the only place that
transforms them (pmap or jit(shard_map); the trainer compiles the two halves of the
train step as separate programs, see ``DataParallel.compile_train_step``). The losses
are weighted by the batch ``mask`` so padded examples count for nothing, and the global
mean is formed as (sum over devices of masked sums) / (sum over devices of mask counts)
— equal to the single-device mean whatever the device count.

Channel charting (:mod:`csiloc_jax.csi.charting`) trains on tuples instead of single
samples: a batch ``x`` of ``[B, T, ...]`` (T = 2 for a Siamese pair, 3 for a triplet)
whose ``y`` holds the tuple's dissimilarities ``[B, T - 1]``. The network sees the
``B * T`` members as one batch and the loss comes back per tuple, so a tuple is an
example like any other for the mask, the psum and the data-parallel layout.

Every step takes the input ``normalizer`` (an ``input_pipeline.Normalizer``, a pytree
of ``mean`` and ``inv_std``) as an argument, next to the state and the batch: data is
never closed over, so a compiled step serves any normaliser of the same shape.
"""

from __future__ import annotations

import functools
from typing import Any, Callable

from flax.training import train_state
import jax
import jax.numpy as jnp
import optax

AXIS = 'batch'


class TrainState(train_state.TrainState):
  """Flax TrainState; the step counter doubles as the global training step."""


def reconstruction_error(pred: jnp.ndarray, x: jnp.ndarray, y: Any = None) -> jnp.ndarray:
  """Paper eq. 1 per example: squared error of the reconstruction (mean over entries)."""
  del y
  return jnp.mean(jnp.square(pred - x).reshape(pred.shape[0], -1), axis=1)


def position_error(pred: jnp.ndarray, x: Any, y: jnp.ndarray) -> jnp.ndarray:
  """Paper eq. 3 per example: squared Euclidean error of the (scaled) position.

  An ensemble's ``pred`` ``[B, K, 3]`` (``models.build_position_model``) gives the mean
  over its K members of each member's own error: every member's gradient is that of
  its own loss (scaled by 1/K, to which Adam is blind), so they train independently.
  """
  del x
  if pred.ndim == y.ndim + 1:
    return jnp.mean(jnp.sum(jnp.square(pred - y[:, None]), axis=-1), axis=1)
  return jnp.sum(jnp.square(pred - y), axis=-1)


def _norm(v: jnp.ndarray) -> jnp.ndarray:
  """Euclidean norm over the last axis with a zero (not NaN) gradient at 0, so that two
  members the chart puts on the same point do not break training."""
  sq = jnp.sum(v * v, axis=-1)
  positive = sq > 0
  return jnp.where(positive, jnp.sqrt(jnp.where(positive, sq, 1.0)), 0.0)


def chart_siamese(
  pred: jnp.ndarray,
  x: Any,
  y: jnp.ndarray,
  *,
  weighting: str = 'sammon',
  min_dissimilarity: float = 0.0,
) -> jnp.ndarray:
  """Pair stress per pair: ``w (||f(x_a) - f(x_b)|| - d_ab)^2``.

  ``pred`` is the chart of the ``2 B`` pair members ``[a_0, b_0, a_1, b_1, ...]``, ``y``
  the pairs' dissimilarities ``[B, 1]``. ``weighting='sammon'`` sets ``w = 1 / d_ab``
  (Sammon's mapping: a relative error, so near pairs, which carry the local geometry,
  count as much as far ones; ``d_ab`` floored at ``min_dissimilarity`` so duplicates do
  not dominate), ``'none'`` sets ``w = 1``.
  """
  del x
  d = y[:, 0]
  members = pred.reshape(y.shape[0], 2, -1)
  err = _norm(members[:, 0] - members[:, 1]) - d
  if weighting == 'sammon':
    return err * err / jnp.maximum(d, max(min_dissimilarity, 1e-12))
  if weighting == 'none':
    return err * err
  raise ValueError(f"config.chart.weighting must be 'sammon' or 'none', got {weighting!r}")


def chart_triplet(pred: jnp.ndarray, x: Any, y: jnp.ndarray, *, margin: float = 1.0) -> jnp.ndarray:
  """Triplet margin loss per triplet: ``max(0, ||f(a) - f(c)|| - ||f(a) - f(f)|| + margin)``.

  ``pred`` is the chart of the ``3 B`` members ``[a_0, c_0, f_0, a_1, ...]`` (anchor, the
  member closer to it in dissimilarity, the farther one); ``y`` the dissimilarities
  ``[B, 2]`` (anchor-close, anchor-far), used only for the tuple count. Zero once every
  far member is at least ``margin`` farther from its anchor in the chart than the close
  one; the margin sets the chart's scale.
  """
  del x
  members = pred.reshape(y.shape[0], 3, -1)
  close = _norm(members[:, 0] - members[:, 1])
  far = _norm(members[:, 0] - members[:, 2])
  return jnp.maximum(close - far + margin, 0.0)


LOSSES: dict[str, Callable] = {
  'reconstruction': reconstruction_error,
  'position': position_error,
  'chart_siamese': chart_siamese,
  'chart_triplet': chart_triplet,
}
# Members per example of the tuple losses (absent: one sample per example).
TUPLE_SIZE: dict[str, int] = {'chart_siamese': 2, 'chart_triplet': 3}


def model_input(batch: dict, normalizer: Any, loss: str) -> jnp.ndarray:
  """The normalised network input of a batch: ``[B, ...]``, or ``[B * T, ...]`` for a
  tuple loss (each member normalised on its own, like a single sample)."""
  x = batch['x']
  if loss in TUPLE_SIZE:
    x = x.reshape((-1,) + x.shape[2:])
  return normalizer(x)


def create_train_state(apply_fn: Callable, params: Any, learning_rate: float) -> TrainState:
  """Adam, as in the paper (learning rate from the config)."""
  return TrainState.create(apply_fn=apply_fn, params=params, tx=optax.adam(learning_rate))


def _sum_over_devices(x: Any, axis_name: str) -> Any:
  """``lax.psum`` over the batch axis; skipped when the axis has one device.

  A one-device psum is the identity, but XLA:CPU still runs it as an all-reduce that
  copies the whole gradient through its collective runtime on every step.
  """
  return x if jax.lax.axis_size(axis_name) == 1 else jax.lax.psum(x, axis_name)


def compute_gradients(
  state: TrainState,
  batch: dict,
  normalizer: Any,
  *,
  loss: str,
  axis_name: str = AXIS,
  loss_options: tuple = (),
) -> tuple[Any, dict]:
  """Gradient of the global mean loss on a (device-local shard of a) batch, and metrics.

  ``loss_options``: ``(name, value)`` pairs passed to the loss as keywords (a tuple, so
  the compiled step stays hashable), e.g. the triplet margin.
  """
  per_example = functools.partial(LOSSES[loss], **dict(loss_options))
  x = model_input(batch, normalizer, loss)
  target_x = x
  mask = batch['mask']
  count = _sum_over_devices(jnp.sum(mask), axis_name)

  def loss_fn(params):
    pred = state.apply_fn({'params': params}, x)
    return jnp.sum(mask * per_example(pred, target_x, batch.get('y'))) / count

  local_loss, grads = jax.value_and_grad(loss_fn)(state.params)
  # Each device's loss is its share of the global mean, so the sum is the mean.
  grads = _sum_over_devices(grads, axis_name)
  loss_value = _sum_over_devices(local_loss, axis_name)
  return grads, {'loss': loss_value, 'grad_norm': optax.tree.norm(grads)}


def apply_gradients(state: TrainState, grads: Any) -> TrainState:
  """One Adam update."""
  return state.apply_gradients(grads=grads)


def train_step(
  state: TrainState,
  batch: dict,
  normalizer: Any,
  *,
  loss: str,
  axis_name: str = AXIS,
  loss_options: tuple = (),
) -> tuple[TrainState, dict]:
  """One optimiser step: :func:`compute_gradients` then :func:`apply_gradients`.

  ``parallel.DataParallel.compile_train_step`` runs the two halves as two compiled
  programs (see there why); this composition is the same step as one function.
  """
  grads, metrics = compute_gradients(
    state, batch, normalizer, loss=loss, axis_name=axis_name, loss_options=loss_options
  )
  return apply_gradients(state, grads), metrics


def eval_step(
  params: Any,
  batch: dict,
  normalizer: Any,
  *,
  apply_fn: Callable,
  loss: str,
  loss_options: tuple = (),
) -> tuple[jnp.ndarray, jnp.ndarray]:
  """Predictions and masked per-example loss for one (device-local shard of a) batch.

  Nothing is reduced over the batch, so ``DataParallel.compile_eval_step`` runs it on
  any number of devices with the values of a one-device evaluation.
  """
  x = model_input(batch, normalizer, loss)
  pred = apply_fn({'params': params}, x)
  per_example = LOSSES[loss](pred, x, batch.get('y'), **dict(loss_options)) * batch['mask']
  return pred, per_example


def embed_step(params: Any, batch: dict, normalizer: Any, *, apply_fn: Callable) -> jnp.ndarray:
  """The network's output per sample of a (device-local shard of a) batch, no loss: the
  chart points of a chart network."""
  return apply_fn({'params': params}, normalizer(batch['x']))
