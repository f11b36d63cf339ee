"""Pure train/eval step functions and the two losses of the paper.

The step is written once, for any number of devices: ``compute_gradients`` sends every
reduction over the batch through ``lax.psum`` over the named axis, ``apply_gradients``
is the Adam update, ``train_step`` is the two composed, ``eval_step`` gives per-example
predictions and losses, and :mod:`csiloc_jax.core.parallel` is the only place that
transforms them (pmap or jit(shard_map); the trainer compiles the two halves of the
train step as separate programs, see ``DataParallel.compile_train_step``). The losses
are weighted by the batch ``mask`` so padded examples count for nothing, and the global
mean is formed as (sum over devices of masked sums) / (sum over devices of mask counts)
— equal to the single-device mean whatever the device count.

Every step takes the input ``normalizer`` (an ``input_pipeline.Normalizer``, a pytree
of ``mean`` and ``inv_std``) as an argument, next to the state and the batch: data is
never closed over, so a compiled step serves any normaliser of the same shape.
"""

from __future__ import annotations

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
  """Paper eq. 3 per example: squared Euclidean error of the (scaled) position."""
  del x
  return jnp.sum(jnp.square(pred - y), axis=-1)


LOSSES: dict[str, Callable] = {'reconstruction': reconstruction_error, 'position': position_error}


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
  state: TrainState, batch: dict, normalizer: Any, *, loss: str, axis_name: str = AXIS
) -> tuple[Any, dict]:
  """Gradient of the global mean loss on a (device-local shard of a) batch, and metrics."""
  per_example = LOSSES[loss]
  x = normalizer(batch['x'])
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
  state: TrainState, batch: dict, normalizer: Any, *, loss: str, axis_name: str = AXIS
) -> tuple[TrainState, dict]:
  """One optimiser step: :func:`compute_gradients` then :func:`apply_gradients`.

  ``parallel.DataParallel.compile_train_step`` runs the two halves as two compiled
  programs (see there why); this composition is the same step as one function.
  """
  grads, metrics = compute_gradients(state, batch, normalizer, loss=loss, axis_name=axis_name)
  return apply_gradients(state, grads), metrics


def eval_step(
  params: Any, batch: dict, normalizer: Any, *, apply_fn: Callable, loss: str
) -> tuple[jnp.ndarray, jnp.ndarray]:
  """Predictions and masked per-example loss for one (device-local shard of a) batch.

  Nothing is reduced over the batch, so ``DataParallel.compile_eval_step`` runs it on
  any number of devices with the values of a one-device evaluation.
  """
  x = normalizer(batch['x'])
  pred = apply_fn({'params': params}, x)
  per_example = LOSSES[loss](pred, x, batch.get('y')) * batch['mask']
  return pred, per_example
