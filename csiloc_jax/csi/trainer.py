"""The epoch loop shared by pretraining and fine-tuning: early stopping, checkpoints,
progress and resumption.

:func:`fit` trains one model on one phase's data (an autoencoder on unlabelled CSI, or a
position model on labelled CSI) and returns the parameters with the lowest validation
loss — the paper's protocol. It writes under ``workdir/<phase>/``:

* ``checkpoints/latest`` — state + loop bookkeeping at the end of an epoch, at most every
  ``checkpoint_every_secs`` and after the last epoch (resume point);
* ``checkpoints/best`` — the best-on-validation state;
* lines in the run's ``metrics.jsonl`` (train loss, validation loss, steps/s, ETA).

Resuming: a run restarted on the same workdir restores ``latest`` and continues with
the epoch after it. Batch order depends only on ``(seed, epoch)``, so a resumed run ends
with exactly the parameters of an uninterrupted one. A run whose phase already
finished returns the best parameters without training.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import os
import time
from typing import Any, Callable

from absl import logging
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from csiloc_jax.core import checkpointing
from csiloc_jax.csi import input_pipeline
from csiloc_jax.core import metric_writer
from csiloc_jax.core import parallel
from csiloc_jax.csi import steps


class NonFiniteLossError(FloatingPointError):
  """Training produced a NaN/Inf loss."""


@dataclasses.dataclass
class PhaseData:
  """What one training phase sees: features, optional targets and its splits."""
  features: np.ndarray
  targets: np.ndarray | None
  train_idx: np.ndarray
  val_idx: np.ndarray
  normalizer: input_pipeline.Normalizer


@dataclasses.dataclass
class PhaseResult:
  params: Any
  best_val_loss: float
  best_epoch: int
  epochs_run: int
  stopped_early: bool
  train_seconds: float
  steps_per_sec: float


def _normalize_fn(normalizer: input_pipeline.Normalizer) -> Callable:
  mean = jnp.asarray(normalizer.mean)
  inv_std = jnp.asarray(normalizer.inv_std)
  return lambda x: (x - mean) * inv_std


def predict(params: Any, apply_fn: Callable, loss: str, data: PhaseData,
             indices: np.ndarray, batch_size: int) -> tuple[float, np.ndarray]:
  """Mean loss and predictions over ``np.sort(indices)`` (in that order)."""
  indices = np.sort(np.asarray(indices))
  step = _eval_step(apply_fn, loss, data.normalizer)
  preds, total = [], 0.0
  for batch in input_pipeline.prefetch(input_pipeline.batches(
      data.features, data.targets, indices, batch_size)):
    pred, per_example = step(params, batch)
    real = int(batch['mask'].sum())
    preds.append(np.asarray(pred)[:real])
    total += float(per_example.sum())
  return total / max(len(indices), 1), np.concatenate(preds) if preds else np.zeros((0,))


# Compiled eval steps are cached per (model, loss, normaliser) so repeated validation
# passes do not retrace.
_EVAL_CACHE: dict = {}


def _eval_step(apply_fn, loss, normalizer):
  key = (apply_fn, loss, id(normalizer))
  if key not in _EVAL_CACHE:
    _EVAL_CACHE[key] = (jax.jit(functools.partial(
        steps.eval_step, apply_fn=apply_fn, loss=loss,
        normalize=_normalize_fn(normalizer))), normalizer)
  return _EVAL_CACHE[key][0]


def fit(*, phase: str, model: Any, init_params: Any, loss: str, data: PhaseData,
        train_config: ml_collections.ConfigDict, parallel_config: ml_collections.ConfigDict,
        workdir: str, writer: metric_writer.MetricWriter) -> PhaseResult:
  """Trains ``model`` from ``init_params`` with early stopping; returns the best params."""
  tc = train_config
  dp = parallel.DataParallel(parallel_config.backend)
  if tc.batch_size % dp.num_devices:
    raise ValueError(f'{phase}: batch_size {tc.batch_size} must be divisible by the '
                     f'{dp.num_devices} devices')
  if len(data.train_idx) == 0 or len(data.val_idx) == 0:
    raise ValueError(f'{phase}: empty training or validation split '
                     f'({len(data.train_idx)} / {len(data.val_idx)} samples)')
  phase_dir = os.path.join(workdir, phase)
  latest = checkpointing.Checkpointer(os.path.join(phase_dir, 'checkpoints', 'latest'))
  best = checkpointing.Checkpointer(os.path.join(phase_dir, 'checkpoints', 'best'))

  state = steps.create_train_state(model.apply, init_params, tc.learning_rate)
  abstract = jax.eval_shape(lambda: state)
  meta = {'epoch': 0, 'best_val_loss': math.inf, 'best_epoch': -1, 'bad_epochs': 0,
          'done': False, 'train_seconds': 0.0}
  if latest.latest_step() is not None:
    state, meta = latest.restore(abstract)
    logging.info('%s: resuming after epoch %d (best validation loss %.5g at epoch %d)',
                 phase, meta['epoch'], meta['best_val_loss'], meta['best_epoch'])
  if meta['done']:
    best_state, best_meta = best.restore(abstract)
    latest.close()
    best.close()
    logging.info('%s: already finished; using best epoch %d', phase, best_meta['epoch'])
    return PhaseResult(best_state.params, best_meta['best_val_loss'], best_meta['epoch'],
                     meta['epoch'], meta['bad_epochs'] >= tc.patience,
                     meta['train_seconds'], float('nan'))

  steps_per_epoch = input_pipeline.epoch_steps(len(data.train_idx), tc.batch_size,
                                               tc.min_steps_per_epoch)
  progress = metric_writer.Progress(steps_per_epoch * tc.num_epochs,
                                    batch_size=tc.batch_size,
                                    done=steps_per_epoch * meta['epoch'])
  p_step = dp.compile_train_step(functools.partial(
      steps.compute_gradients, loss=loss, normalize=_normalize_fn(data.normalizer),
      axis_name=dp.axis_name), steps.apply_gradients)
  p_state = dp.replicate(state)
  pending_best = None
  last_save = time.perf_counter()
  logging.info('%s: %d train / %d validation samples, %d steps per epoch, %d device(s) '
               '(%s); initial compilation...', phase, len(data.train_idx),
               len(data.val_idx), steps_per_epoch, dp.num_devices, dp.backend)

  for epoch in range(meta['epoch'] + 1, tc.num_epochs + 1):
    epoch_losses = []
    progress.start()
    t_epoch = time.perf_counter()
    for i, batch in enumerate(input_pipeline.prefetch(input_pipeline.batches(
        data.features, data.targets, data.train_idx, tc.batch_size,
        shuffle_seed=(tc.seed, epoch), min_steps=tc.min_steps_per_epoch))):
      p_state, metrics = p_step(p_state, dp.shard(batch))
      epoch_losses.append(metrics['loss'])
      if (i + 1) % tc.log_every_steps == 0:
        loss_now = float(dp.unreplicate(metrics)['loss'])
        progress.stop(tc.log_every_steps)
        s = progress.summary()
        logging.info('%s epoch %d step %d/%d: loss %.5g, %.1f steps/s, %.0f examples/s, '
                     'ETA %s', phase, epoch, i + 1, steps_per_epoch, loss_now,
                     s['steps_per_sec'], s['examples_per_sec'],
                     progress.format_eta(s['eta_s']))
        progress.start()
    train_loss = float(np.mean(dp.unreplicate(epoch_losses)))
    progress.stop(steps_per_epoch % tc.log_every_steps)
    meta['train_seconds'] += time.perf_counter() - t_epoch
    if not math.isfinite(train_loss):
      raise NonFiniteLossError(f'{phase}: non-finite training loss {train_loss} in epoch '
                               f'{epoch}; check the input data and learning rate')

    state = dp.unreplicate(p_state)
    val_loss, _ = predict(state.params, model.apply, loss, data, data.val_idx,
                           tc.batch_size)
    improved = val_loss < meta['best_val_loss'] - tc.min_delta
    meta.update(epoch=epoch, bad_epochs=0 if improved else meta['bad_epochs'] + 1)
    if improved:
      meta.update(best_val_loss=val_loss, best_epoch=epoch)
    s = progress.summary()
    writer.write(progress.step, {'train_loss': train_loss, 'val_loss': val_loss,
                                 'steps_per_sec': s['steps_per_sec'],
                                 'examples_per_sec': s['examples_per_sec'],
                                 'eta_s': s['eta_s']}, phase=phase, epoch=epoch)
    stop = meta['bad_epochs'] >= tc.patience
    meta['done'] = stop or epoch == tc.num_epochs
    if improved:
      pending_best = (epoch, state, dict(meta))
    # Checkpoints cost far more than a short epoch, so 'latest' is written at most every
    # checkpoint_every_secs (and at the end). A pending 'best' is always flushed first,
    # so the best-on-validation weights on disk are never older than 'latest' says.
    now = time.perf_counter()
    if meta['done'] or now - last_save >= tc.checkpoint_every_secs:
      if pending_best is not None:
        best.save(*pending_best)
        pending_best = None
      latest.save(epoch, state, dict(meta))
      last_save = now
    if stop:
      logging.info('%s: early stop after epoch %d (no improvement for %d epochs)', phase,
                   epoch, tc.patience)
      break

  latest.wait()
  best.wait()
  best_state, _ = best.restore(abstract)
  latest.close()
  best.close()
  return PhaseResult(best_state.params, meta['best_val_loss'], meta['best_epoch'],
                   meta['epoch'], meta['bad_epochs'] >= tc.patience,
                   meta['train_seconds'], progress.steps_per_sec)
