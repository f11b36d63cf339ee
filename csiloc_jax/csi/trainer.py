"""The epoch loop shared by pretraining and fine-tuning: early stopping, checkpoints,
progress and resumption.

:func:`fit` trains one model on one phase's data (an autoencoder on unlabelled CSI, or a
position model on labelled CSI) and returns the parameters with the lowest validation
loss — the paper's protocol. It writes under ``workdir/<phase>/``:

* ``checkpoints/latest`` — state + loop bookkeeping at the end of an epoch, at most every
  ``checkpoint_every_secs`` and after the last epoch (resume point);
* ``checkpoints/best`` — the best-on-validation state;
* lines in the run's ``metrics.jsonl`` (train loss, validation loss, steps/s, ETA);
* ``phase.done.json`` — a :class:`csiloc_jax.core.runs.Stage` record of the finished
  phase (written after both checkpoints), holding its :class:`PhaseResult` numbers;
* ``resume_identity.json`` — what the checkpoints belong to (parameter shapes, a digest
  of the starting parameters, loss, split sizes, the training config but for the fields
  in :data:`RESUMABLE_CHANGES`), written when the phase starts from scratch.

Resuming: a run restarted on the same workdir restores ``latest`` and continues with
the epoch after it. Batch order depends only on ``(seed, epoch)``, so a resumed run ends
with exactly the parameters of an uninterrupted one. A phase recorded as finished with
the same inputs returns the best parameters without training. Checkpoints that another
configuration wrote are refused (:class:`WorkdirConflict`, naming what differs) rather
than resumed.

Training and evaluation both run through :class:`csiloc_jax.core.parallel.DataParallel`
on the replicated state; a host copy of the state is made only when a checkpoint is
written. Layout and records: docs/data_flow.md, 'Checkpoints and stage records'.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import time
from typing import Any, Callable, Iterator

from absl import logging
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from csiloc_jax.core import checkpointing
from csiloc_jax.core import config_utils
from csiloc_jax.core import distributed
from csiloc_jax.core import errors
from csiloc_jax.core import metric_writer
from csiloc_jax.core import parallel
from csiloc_jax.core import runs
from csiloc_jax.csi import input_pipeline
from csiloc_jax.csi import steps


class NonFiniteLossError(FloatingPointError):
  """Training produced a NaN/Inf loss."""


@dataclasses.dataclass
class PhaseData:
  """What one training phase sees: features, optional targets and its splits.

  Its batches are single samples (:func:`input_pipeline.batches`); a subclass that
  overrides :meth:`train_batches` and :meth:`eval_batches` trains on other examples
  (the chart's pairs and triplets, :class:`csiloc_jax.csi.charting.TupleData`).
  """

  features: np.ndarray
  targets: np.ndarray | None
  train_idx: np.ndarray
  val_idx: np.ndarray
  normalizer: input_pipeline.Normalizer

  def train_batches(
    self, batch_size: int, shuffle_seed: tuple[int, ...], min_steps: int
  ) -> Iterator[dict]:
    """One epoch's training batches, in an order drawn from ``shuffle_seed``."""
    return input_pipeline.batches(
      self.features,
      self.targets,
      self.train_idx,
      batch_size,
      shuffle_seed=shuffle_seed,
      min_steps=min_steps,
    )

  def eval_batches(self, indices: np.ndarray, batch_size: int) -> Iterator[dict]:
    """Batches over ``indices`` in their order, the same every time."""
    return input_pipeline.batches(self.features, self.targets, indices, batch_size)

  def fingerprint(self) -> tuple:
    """What, besides the split sizes, decides the examples (part of the phase record)."""
    return ()


@dataclasses.dataclass
class PhaseResult:
  """What a finished phase gives the run: the best parameters and its summary numbers."""

  params: Any
  best_val_loss: float
  best_epoch: int
  epochs_run: int
  stopped_early: bool
  train_seconds: float
  steps_per_sec: float


def _evaluate(
  dp: parallel.DataParallel,
  p_eval: Callable,
  p_params: Any,
  p_normalizer: Any,
  data: PhaseData,
  indices: np.ndarray,
  batch_size: int,
  with_predictions: bool,
) -> tuple[float, np.ndarray | None]:
  """Mean loss (and predictions) over ``np.sort(indices)``, on replicated parameters."""
  indices = np.sort(np.asarray(indices))
  preds, total = [], 0.0
  for batch in input_pipeline.prefetch(data.eval_batches(indices, batch_size)):
    pred, per_example = p_eval(p_params, dp.shard(batch), p_normalizer)
    # The padded end of the last batch has mask 0: its loss is already zero and its
    # predictions are dropped below. Gathered, the outputs are the global batch's.
    total += float(dp.gather(per_example).sum())
    if with_predictions:
      preds.append(dp.gather(pred))
  mean = total / max(len(indices), 1)
  if not with_predictions:
    return mean, None
  return mean, np.concatenate(preds)[: len(indices)] if preds else np.zeros((0,))


def predict(
  params: Any,
  apply_fn: Callable,
  loss: str,
  data: PhaseData,
  indices: np.ndarray,
  batch_size: int,
  parallel_config: ml_collections.ConfigDict,
) -> tuple[float, np.ndarray]:
  """Mean loss and predictions over ``np.sort(indices)`` (in that order), data-parallel."""
  dp = parallel.DataParallel(parallel_config.backend)
  p_eval = dp.compile_eval_step(steps.eval_step, apply_fn=apply_fn, loss=loss)
  return _evaluate(
    dp,
    p_eval,
    dp.replicate(params),
    dp.replicate(data.normalizer),
    data,
    indices,
    batch_size,
    with_predictions=True,
  )


def embed(
  params: Any,
  apply_fn: Callable,
  features: np.ndarray,
  indices: np.ndarray,
  normalizer: input_pipeline.Normalizer,
  batch_size: int,
  parallel_config: ml_collections.ConfigDict,
) -> np.ndarray:
  """The network's outputs (e.g. chart points) for ``features[np.sort(indices)]``, in
  that order, data-parallel."""
  dp = parallel.DataParallel(parallel_config.backend)
  p_embed = dp.compile_eval_step(steps.embed_step, apply_fn=apply_fn)
  p_params, p_normalizer = dp.replicate(params), dp.replicate(normalizer)
  out = []
  indices = np.sort(np.asarray(indices))
  for batch in input_pipeline.prefetch(input_pipeline.batches(features, None, indices, batch_size)):
    out.append(dp.gather(p_embed(p_params, dp.shard(batch), p_normalizer)))
  # The last batch's padding is cut off here.
  return np.concatenate(out)[: len(indices)] if out else np.zeros((0,))


def _phase_stage(
  phase_dir: str,
  phase: str,
  loss: str,
  init_params: Any,
  data: PhaseData,
  train_config: ml_collections.ConfigDict,
  loss_options: tuple = (),
) -> runs.Stage:
  """The phase's record: finished with this training config, loss, split sizes and
  parameter shapes (and the loss options and the data's own fingerprint, where set)."""
  shapes = _param_shapes(init_params)
  # Appended only when present, so the records of phases without them stay valid.
  extra = tuple(x for x in (list(loss_options), list(data.fingerprint())) if x)
  return runs.Stage(
    phase_dir,
    'phase',
    runs.fingerprint(
      phase,
      loss,
      config_utils.config_to_dict(train_config),
      shapes,
      len(data.train_idx),
      len(data.val_idx),
      *extra,
    ),
  )


def _param_shapes(params: Any) -> Any:
  return jax.tree.map(lambda x: list(np.shape(x)), params)


class WorkdirConflict(errors.InputError):
  """A phase directory holds checkpoints that another configuration wrote."""


# Training-config fields that may change between an interrupted run and its resumption
# (train longer, stop later, log or checkpoint at another interval); every other field,
# like the parameters it starts from, must be the same for a checkpoint to be resumed.
RESUMABLE_CHANGES = (
  'num_epochs',
  'patience',
  'min_delta',
  'checkpoint_every_secs',
  'log_every_steps',
)


def _params_digest(params: Any) -> str:
  """A digest of the parameter values (shapes, dtypes and bytes) a phase starts from."""
  digest = hashlib.sha256()
  for leaf in jax.tree.leaves(params):
    value = np.asarray(leaf)
    digest.update(f'{value.shape}{value.dtype}'.encode())
    digest.update(np.ascontiguousarray(value).tobytes())
  return digest.hexdigest()


def _resume_identity(phase, loss, init_params, data, train_config, loss_options) -> dict:
  """What a checkpoint must share with this phase to be resumed by it, as the JSON values
  that ``resume_identity.json`` holds (so a record read back compares equal)."""
  config = config_utils.config_to_dict(train_config)
  identity = {
    'phase': phase,
    'loss': loss,
    'loss_options': [list(o) for o in loss_options],
    'parameter_shapes': _param_shapes(init_params),
    'initial_parameters': _params_digest(init_params),
    'num_train': len(data.train_idx),
    'num_val': len(data.val_idx),
    'data': list(data.fingerprint()),
    'train_config': {k: v for k, v in config.items() if k not in RESUMABLE_CHANGES},
  }
  return json.loads(json.dumps(identity, default=runs.to_json_value))


def _check_resumable(path: str, identity: dict) -> None:
  """Refuses to resume checkpoints that another configuration wrote (their record at
  ``path`` differs from ``identity``): they would crash on other shapes or, worse,
  silently continue another run. Checkpoints without a record (older workdirs) are
  resumed as before."""
  if not os.path.exists(path):
    return
  try:
    recorded = runs.read_json(path)
  except (OSError, ValueError):
    return
  if recorded == identity:
    return
  keys = sorted(set(recorded) | set(identity))
  differ = [k for k in keys if recorded.get(k) != identity.get(k)]
  if 'train_config' in differ:
    old, new = recorded.get('train_config', {}), identity['train_config']
    fields = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
    differ = [d for d in differ if d != 'train_config'] + [f'train_config.{k}' for k in fields]
  raise WorkdirConflict(
    f'{os.path.dirname(path)}: holds checkpoints of another configuration (differs in '
    f'{", ".join(differ)}; recorded in {path}). Use a new workdir, or delete that '
    'directory to train this phase from the start.'
  )


def fit(
  *,
  phase: str,
  model: Any,
  init_params: Any,
  loss: str,
  data: PhaseData,
  train_config: ml_collections.ConfigDict,
  parallel_config: ml_collections.ConfigDict,
  workdir: str,
  writer: metric_writer.MetricWriter,
  loss_options: tuple = (),
) -> PhaseResult:
  """Trains ``model`` from ``init_params`` with early stopping; returns the best params.

  ``loss_options``: keyword ``(name, value)`` pairs of the loss (``steps.LOSSES``)."""
  tc = train_config
  dp = parallel.DataParallel(parallel_config.backend)
  if tc.batch_size % dp.num_devices:
    raise ValueError(
      f'{phase}: batch_size {tc.batch_size} must be divisible by the {dp.num_devices} devices'
    )
  if len(data.train_idx) == 0 or len(data.val_idx) == 0:
    raise ValueError(
      f'{phase}: empty training or validation split '
      f'({len(data.train_idx)} / {len(data.val_idx)} samples)'
    )
  phase_dir = os.path.join(workdir, phase)
  stage = _phase_stage(phase_dir, phase, loss, init_params, data, tc, loss_options)
  latest = checkpointing.Checkpointer(os.path.join(phase_dir, 'checkpoints', 'latest'))
  best = checkpointing.Checkpointer(os.path.join(phase_dir, 'checkpoints', 'best'))

  state = steps.create_train_state(model.apply, init_params, tc.learning_rate)
  abstract = jax.eval_shape(lambda: state)

  def best_params() -> Any:
    # Waiting for both checkpoints first: a phase is recorded only once they are on disk.
    latest.wait()
    best.wait()
    best_state, _ = best.restore(abstract)
    latest.close()
    best.close()
    return best_state.params

  def finish(meta: dict, steps_per_sec: float) -> PhaseResult:
    params = best_params()
    result = {
      'best_val_loss': meta['best_val_loss'],
      'best_epoch': meta['best_epoch'],
      'epochs_run': meta['epoch'],
      'stopped_early': meta['bad_epochs'] >= tc.patience,
      'train_seconds': meta['train_seconds'],
      'steps_per_sec': steps_per_sec,
    }
    stage.finish(result)
    return PhaseResult(params, **result)

  recorded = stage.result()
  if recorded is not None:
    logging.info('%s: already finished; using best epoch %d', phase, recorded['best_epoch'])
    return PhaseResult(best_params(), **recorded)

  meta = {
    'epoch': 0,
    'best_val_loss': math.inf,
    'best_epoch': -1,
    'bad_epochs': 0,
    'train_seconds': 0.0,
  }
  identity_path = os.path.join(phase_dir, 'resume_identity.json')
  identity = _resume_identity(phase, loss, init_params, data, tc, loss_options)
  resumed = latest.latest_step() is not None
  if resumed:
    _check_resumable(identity_path, identity)
  elif distributed.is_primary():
    os.makedirs(phase_dir, exist_ok=True)
    runs.write_json(identity_path, identity)
  if resumed:
    state, meta = latest.restore(abstract)
    meta.pop('done', None)  # Written by earlier versions; completion is the Stage's.
    logging.info(
      '%s: resuming after epoch %d (best validation loss %.5g at epoch %d)',
      phase,
      meta['epoch'],
      meta['best_val_loss'],
      meta['best_epoch'],
    )
  # Epochs after the resume point (all of them, and epoch 0's validation, without a
  # checkpoint) run again and are logged again: their earlier records go.
  dropped = writer.forget_after(phase, meta['epoch'] if resumed else -1)
  if dropped:
    logging.info('%s: %d records of epochs after the resume point will be redone', phase, dropped)
  if meta['bad_epochs'] >= tc.patience or meta['epoch'] >= tc.num_epochs:
    # Interrupted after its last checkpoint but before its record: nothing to train.
    return finish(meta, float('nan'))

  steps_per_epoch = input_pipeline.epoch_steps(
    len(data.train_idx), tc.batch_size, tc.min_steps_per_epoch
  )
  progress = metric_writer.Progress(
    steps_per_epoch * tc.num_epochs, batch_size=tc.batch_size, done=steps_per_epoch * meta['epoch']
  )
  p_step = dp.compile_train_step(
    steps.compute_gradients,
    steps.apply_gradients,
    loss=loss,
    axis_name=dp.axis_name,
    loss_options=loss_options,
  )
  p_eval = dp.compile_eval_step(
    steps.eval_step, apply_fn=model.apply, loss=loss, loss_options=loss_options
  )
  p_state = dp.replicate(state)
  p_normalizer = dp.replicate(data.normalizer)
  pending_best = None
  last_save = time.perf_counter()
  logging.info(
    '%s: %d train / %d validation samples, %d steps per epoch, %d device(s) '
    '(%s); initial compilation...',
    phase,
    len(data.train_idx),
    len(data.val_idx),
    steps_per_epoch,
    dp.num_devices,
    dp.backend,
  )

  if meta['epoch'] == 0 and meta['best_epoch'] == -1:
    # Epoch 0: the initial parameters are a candidate too (for a zero-initialised head,
    # the training-mean predictor), so early stopping never returns anything worse.
    val_loss, _ = _evaluate(
      dp, p_eval, p_state.params, p_normalizer, data, data.val_idx, tc.batch_size, False
    )
    meta.update(best_val_loss=val_loss, best_epoch=0)
    best.save(0, state, dict(meta))
    writer.write(progress.step, {'val_loss': val_loss}, phase=phase, epoch=0)

  for epoch in range(meta['epoch'] + 1, tc.num_epochs + 1):
    epoch_losses = []
    progress.start()
    t_epoch = time.perf_counter()
    for i, batch in enumerate(
      input_pipeline.prefetch(
        data.train_batches(tc.batch_size, (tc.seed, epoch), tc.min_steps_per_epoch)
      )
    ):
      p_state, metrics = p_step(p_state, dp.shard(batch), p_normalizer)
      epoch_losses.append(metrics['loss'])
      if (i + 1) % tc.log_every_steps == 0:
        loss_now = float(dp.unreplicate(metrics)['loss'])
        progress.stop(tc.log_every_steps)
        s = progress.summary()
        logging.info(
          '%s epoch %d step %d/%d: loss %.5g, %.1f steps/s, %.0f examples/s, ETA %s',
          phase,
          epoch,
          i + 1,
          steps_per_epoch,
          loss_now,
          s['steps_per_sec'],
          s['examples_per_sec'],
          progress.format_eta(s['eta_s']),
        )
        progress.start()
    train_loss = float(np.mean(dp.unreplicate(epoch_losses)))
    progress.stop(steps_per_epoch % tc.log_every_steps)
    meta['train_seconds'] += time.perf_counter() - t_epoch
    if not math.isfinite(train_loss):
      raise NonFiniteLossError(
        f'{phase}: non-finite training loss {train_loss} in epoch '
        f'{epoch}; check the input data and learning rate'
      )

    val_loss, _ = _evaluate(
      dp,
      p_eval,
      p_state.params,
      p_normalizer,
      data,
      data.val_idx,
      tc.batch_size,
      with_predictions=False,
    )
    improved = val_loss < meta['best_val_loss'] - tc.min_delta
    meta.update(epoch=epoch, bad_epochs=0 if improved else meta['bad_epochs'] + 1)
    if improved:
      meta.update(best_val_loss=val_loss, best_epoch=epoch)
    s = progress.summary()
    writer.write(
      progress.step,
      {
        'train_loss': train_loss,
        'val_loss': val_loss,
        'steps_per_sec': s['steps_per_sec'],
        'examples_per_sec': s['examples_per_sec'],
        'eta_s': s['eta_s'],
      },
      phase=phase,
      epoch=epoch,
    )
    stop = meta['bad_epochs'] >= tc.patience
    done = stop or epoch == tc.num_epochs
    # Checkpoints cost far more than a short epoch, so 'latest' is written at most every
    # checkpoint_every_secs (and at the end). A pending 'best' is always flushed first,
    # so the best-on-validation weights on disk are never older than 'latest' says.
    now = time.perf_counter()
    # One decision for every process (process 0's clock): saving is collective.
    save_now = distributed.agree(done or now - last_save >= tc.checkpoint_every_secs)
    if improved:
      # The next step donates p_state's buffers: a best state kept for a later save
      # is a device copy.
      pending_best = (epoch, p_state if save_now else jax.tree.map(jnp.copy, p_state), dict(meta))
    if save_now:
      state = dp.unreplicate(p_state)
      if pending_best is not None:
        best_epoch, p_best, best_meta = pending_best
        best.save(best_epoch, state if best_epoch == epoch else dp.unreplicate(p_best), best_meta)
        pending_best = None
      latest.save(epoch, state, dict(meta))
      last_save = now
    if stop:
      logging.info(
        '%s: early stop after epoch %d (no improvement for %d epochs)', phase, epoch, tc.patience
      )
      break

  return finish(meta, progress.steps_per_sec)
