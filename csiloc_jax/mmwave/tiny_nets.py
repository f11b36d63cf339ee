"""Tiny per-region MLPs, stacked into one pytree and trained all at once with vmap.

Data flow: survey AoAs + JADE labels (never ground truth) -> :func:`make_training_set`
(one padded slot per region) -> :func:`train_bank` -> :class:`NetBank` (stacked params +
label statistics) -> :func:`predict_all` evaluates every net on the same features in one
vmapped call (the tracker's candidates). The one-big-NN baseline is the same trainer
with a single, wider net over all regions' labels.

Labels are normalised per net (mean and one scale) so that every net learns an O(1)
target; the statistics travel with the parameters. Training draws a minibatch per net
from that net's own region, optionally drops received paths at random (so nets stay
sensible when a path disappears on the trajectory), and keeps per net the parameters
with the lowest validation loss. docs/mmwave.md ('Tiny nets and features') gives the
reasons for the architecture and the encoding.

Labels are JADE's estimates, not measurements: some are poor. :func:`make_training_set`
keeps only the trusted ones (``JadeResult.trusted``) and can weight each by its inverse
predicted variance (:func:`label_weights`); the loss (:class:`TrainOptions` ``loss``)
can be robust (Huber, Cauchy on the 2-D error, with a scale in metres) so that the
labels the checks let through wrongly pull a net less (docs/mmwave.md, 'Label trust').

Every compiled program here is a module-level ``jax.jit`` whose data arrive as
arguments and whose settings (the model, :class:`TrainOptions`) are static arguments,
so ``jax.jit``'s own cache serves repeated trainings with the same settings and shapes.
"""

from __future__ import annotations

import dataclasses
import functools
import time
from typing import Any, Sequence

from absl import logging
import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from csiloc_jax.core import metric_writer
from csiloc_jax.mmwave import features as features_lib
from csiloc_jax.mmwave import regions

ACTIVATIONS = {'relu': nn.relu, 'tanh': jnp.tanh, 'gelu': nn.gelu, 'silu': nn.silu}
LOSSES = ('mse', 'huber', 'cauchy')
LABEL_WEIGHTINGS = ('none', 'inverse_variance')


class MLP(nn.Module):
  """The tiny net of Shastri et al.: Dense layers of ``hidden_sizes`` then a 2-D output.

  ``hidden_sizes`` and ``activation`` come from ``config.nets`` (or ``config.big_nn``).
  """

  hidden_sizes: Sequence[int]
  activation: str
  output_size: int = 2

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    act = ACTIVATIONS[self.activation]
    for width in self.hidden_sizes:
      x = act(nn.Dense(width)(x))
    return nn.Dense(self.output_size)(x)


@flax.struct.dataclass
class NetBank:
  """K nets with one architecture: params have a leading axis K, as do the statistics."""

  params: Any
  label_mean: jax.Array  # [K, 2] mean of each net's training labels (metres).
  label_scale: jax.Array  # [K] label normalisation scale (metres).
  label_cov: jax.Array  # [K, 2, 2] label covariance (the Mahalanobis score).
  visibility_rate: jax.Array  # [K, M] how often each path was seen in net k's inputs.
  region_ids: jax.Array  # [K] survey region each net was trained on.

  @property
  def num_nets(self) -> int:
    return int(self.label_mean.shape[0])


@dataclasses.dataclass(frozen=True)
class TrainOptions:
  """The fields of ``config.nets`` (or ``config.big_nn``) plus a seed; meaning and
  defaults are in ``configs/mmwave_tiny.py``. No field has a default here; build them
  from the config, e.g. in a notebook::

    config = config_utils.load_config('configs/mmwave_tiny.py')
    options = config_utils.options_from_config(TrainOptions, config.nets, 'config.nets',
                                               seed=config.seed)

  The options are a static argument of the compiled training program, so they must
  stay hashable (``hidden_sizes`` is kept a tuple of ints).
  """

  hidden_sizes: tuple
  activation: str
  learning_rate: float
  weight_decay: float
  batch_size: int
  num_train_steps: int
  eval_every: int
  validation_fraction: float
  path_dropout: float
  loss: str
  loss_scale_m: float
  trusted_only: bool
  label_weighting: str
  label_std_floor_m: float
  seed: int

  def __post_init__(self):
    object.__setattr__(self, 'hidden_sizes', tuple(int(h) for h in self.hidden_sizes))
    if self.loss not in LOSSES:
      raise ValueError(f'loss must be one of {LOSSES}, got {self.loss!r}')
    if self.label_weighting not in LABEL_WEIGHTINGS:
      raise ValueError(
        f'label_weighting must be one of {LABEL_WEIGHTINGS}, got {self.label_weighting!r}'
      )
    if self.loss != 'mse' and not self.loss_scale_m > 0:
      raise ValueError(f'loss {self.loss!r} needs loss_scale_m > 0, got {self.loss_scale_m}')


@dataclasses.dataclass
class TrainingSet:
  """Per-net padded training data."""

  aoa: np.ndarray  # [K, N, M] AoAs (NaN = missing path).
  labels: np.ndarray  # [K, N, 2] JADE labels.
  train_index: np.ndarray  # [K, N_tr] rows of the padded axis used for training.
  num_train: np.ndarray  # [K].
  val_mask: np.ndarray  # [K, N] rows held out for validation.
  region_ids: np.ndarray  # [K].
  # [K, N] per-sample loss weights, mean 1 over each net's samples (0 = padding).
  weights: np.ndarray | None = None


def label_weights(label_std_m: np.ndarray, floor_m: float) -> np.ndarray:
  """Inverse-variance weights ``1 / max(std, floor)^2`` of labels ``[T]`` (0 where the
  std is not finite). The floor caps the weight: a handful of labels predicted to be
  near-exact must not drown the rest of their region."""
  std = np.asarray(label_std_m, np.float64)
  ok = np.isfinite(std)
  return np.where(ok, 1.0 / np.maximum(np.where(ok, std, 1.0), floor_m) ** 2, 0.0)


def make_training_set(
  aoa: np.ndarray,
  labels: np.ndarray,
  groups: np.ndarray,
  group_ids: Sequence[int],
  validation_fraction: float,
  seed: int,
  *,
  trusted: np.ndarray | None = None,
  weights: np.ndarray | None = None,
) -> TrainingSet:
  """Splits labelled samples by group (region) into padded per-net slots.

  Samples with NaN labels (JADE left them out) are not used, nor, with ``trusted [T]``,
  samples whose label is not trusted. ``weights [T]`` (non-negative; e.g.
  :func:`label_weights`) weight each sample's loss; they are rescaled to mean 1 per
  net. Each group with at least 10 samples holds out ``validation_fraction`` of them,
  drawn at random.
  """
  rng = np.random.default_rng(seed)
  ids = np.asarray(group_ids)
  match = np.asarray(groups)[:, None] == ids[None, :]
  labelled = np.all(np.isfinite(labels), -1)
  if trusted is not None:
    labelled &= np.asarray(trusted, bool)
  if weights is not None:
    weights = np.asarray(weights, np.float64)
    labelled &= np.isfinite(weights) & (weights > 0)
  rows = np.flatnonzero(labelled & match.any(1))
  net = match[rows].argmax(1)
  counts = np.bincount(net, minlength=len(ids))
  if np.any(counts < 2):
    raise ValueError(
      'every net needs at least 2 labelled (and trusted) samples; counts per group: '
      f'{dict(zip(ids.tolist(), counts.tolist()))}'
    )
  k, m = len(ids), aoa.shape[1]
  slot = regions.group_ranks(net, rows)  # Position in the padding.
  x = np.full((k, counts.max(), m), np.nan, np.float32)
  y = np.zeros((k, counts.max(), 2), np.float32)
  x[net, slot] = aoa[rows]
  y[net, slot] = labels[rows]
  w = np.zeros((k, counts.max()), np.float32)
  w_rows = np.ones(len(rows)) if weights is None else weights[rows]
  w_mean = np.bincount(net, weights=w_rows, minlength=k) / counts
  w[net, slot] = w_rows / w_mean[net]
  n_val = np.where(counts >= 10, np.round(validation_fraction * counts), 0).astype(np.int64)
  # A random subset per group.
  is_val = regions.group_ranks(net, rng.random(len(rows))) < n_val[net]
  val = np.zeros((k, counts.max()), bool)
  val[net[is_val], slot[is_val]] = True
  tr_net, tr_slot = net[~is_val], slot[~is_val]
  num_train = counts - n_val
  train_index = np.zeros((k, num_train.max()), np.int32)
  train_index[tr_net, regions.group_ranks(tr_net, tr_slot)] = tr_slot
  return TrainingSet(x, y, train_index, num_train, val, ids.astype(np.int32), w)


def label_statistics(ts: TrainingSet) -> tuple[np.ndarray, ...]:
  """Per net, over all its samples: label mean [K, 2], scale [K], covariance [K, 2, 2]
  and the rate at which each path was received in its inputs [K, M] (Laplace-smoothed)."""
  n = ts.num_train + ts.val_mask.sum(1)  # [K]
  present = np.arange(ts.labels.shape[1])[None] < n[:, None]  # [K, N]
  w = present / n[:, None]
  y = ts.labels.astype(np.float64)
  mean = np.einsum('kn,kni->ki', w, y)
  centred = (y - mean[:, None]) * present[..., None]
  cov = np.einsum('kni,knj->kij', centred, centred) / np.maximum(n - 1, 1)[:, None, None]
  cov = np.where((n > 2)[:, None, None], cov, np.eye(2)) + 1e-6 * np.eye(2)
  scale = np.maximum(np.sqrt(np.trace(cov, axis1=1, axis2=2) / 2), 1e-3)
  seen = np.sum(np.isfinite(ts.aoa) & present[..., None], 1)
  rate = (seen + 1.0) / (n[:, None] + 2.0)
  return (
    mean.astype(np.float32),
    scale.astype(np.float32),
    cov.astype(np.float32),
    rate.astype(np.float32),
  )


def init_bank(model: MLP, key: jax.Array, num_nets: int, num_anchors: int) -> Any:
  """Stacked parameters of ``num_nets`` independently initialised nets."""
  return _init_params(key, model=model, num_nets=num_nets, num_anchors=num_anchors)


@functools.partial(jax.jit, static_argnames=('model', 'num_nets', 'num_anchors'))
def _init_params(key, *, model: MLP, num_nets: int, num_anchors: int):
  # Jitted: run eagerly, vmap(init) would compile every primitive on its own.
  dummy = jnp.zeros((1, features_lib.num_features(num_anchors)), jnp.float32)
  return jax.vmap(lambda k: model.init(k, dummy)['params'])(jax.random.split(key, num_nets))


def predict_all(model: MLP, bank: NetBank, feats: jax.Array) -> jax.Array:
  """Every net on the same features: ``[..., F] -> [K, ..., 2]`` metres, one vmapped call."""

  def one(params, mean, scale):
    return mean + scale * model.apply({'params': params}, feats)

  extra = feats.ndim - 1
  mean = bank.label_mean.reshape((-1,) + (1,) * extra + (2,))
  scale = bank.label_scale.reshape((-1,) + (1,) * (extra + 1))
  return jax.vmap(one)(bank.params, mean, scale)


def predict_each(model: MLP, bank: NetBank, feats: jax.Array) -> jax.Array:
  """Net k on its own inputs: ``[K, ..., F] -> [K, ..., 2]`` (training / evaluation)."""

  def one(params, mean, scale, x):
    return mean + scale * model.apply({'params': params}, x)

  return jax.vmap(one)(bank.params, bank.label_mean, bank.label_scale, feats)


def visibility_loglik(bank: NetBank, visible: jax.Array) -> jax.Array:
  """Log-likelihood ``[K, ...]`` of a visibility pattern ``[..., M]`` under each net's
  training inputs (independent Bernoulli paths): which net has seen inputs like this."""
  rate = bank.visibility_rate.reshape(
    bank.visibility_rate.shape[:1] + (1,) * (visible.ndim - 1) + bank.visibility_rate.shape[1:]
  )
  v = visible.astype(jnp.float32)
  return jnp.sum(v * jnp.log(rate) + (1.0 - v) * jnp.log1p(-rate), -1)


def _make_optimizer(opts: TrainOptions) -> optax.GradientTransformation:
  schedule = optax.warmup_cosine_decay_schedule(
    0.0,
    opts.learning_rate,
    min(200, opts.num_train_steps // 10 + 1),
    opts.num_train_steps,
    end_value=0.05 * opts.learning_rate,
  )
  return optax.adamw(schedule, weight_decay=opts.weight_decay)


def robust_loss(sq_err: jax.Array, kind: str, scale) -> jax.Array:
  """Loss of squared 2-D errors: ``'mse'`` the squared error; ``'huber'`` quadratic up
  to ``scale`` then linear (``2 s r - s^2``); ``'cauchy'`` ``s^2 log(1 + r^2 / s^2)``.
  All equal ``r^2`` for small errors, so the scale is where a label starts to count as
  an outlier; on the 2-D error norm (not per axis) so that no direction is preferred."""
  if kind == 'mse':
    return sq_err
  if kind == 'huber':
    # Floored so the gradient of sqrt stays finite at a zero error.
    r = jnp.sqrt(jnp.maximum(sq_err, 1e-12))
    return jnp.where(r <= scale, sq_err, 2.0 * scale * r - scale**2)
  if kind == 'cauchy':
    return scale**2 * jnp.log1p(sq_err / scale**2)
  raise ValueError(f'loss must be one of {LOSSES}, got {kind!r}')


def _loss(model: MLP, kind: str, params, x, y, w, scale):
  pred = model.apply({'params': params}, x)
  per_sample = robust_loss(jnp.sum((pred - y) ** 2, -1), kind, scale)
  return jnp.sum(w * per_sample) / jnp.maximum(jnp.sum(w), 1e-6)


@functools.partial(jax.jit, static_argnames=('model', 'opts', 'reference'))
def _train_chunk(
  params,
  opt_state,
  best_params,
  best_val,
  rng,
  data,
  *,
  model: MLP,
  opts: TrainOptions,
  reference: str,
):
  """``opts.eval_every`` steps of every net at once (one lax.scan), then validation.

  Pure: all data arrives in ``data``; ``model``/``opts``/``reference`` are static, so
  the compiled program is shared by every call with the same settings and shapes.
  """
  tx = _make_optimizer(opts)
  units, y_norm = data['units'], data['y_norm']
  k = units.shape[0]
  priority = data['priority'] if reference == 'anchor' else None
  encode_units = functools.partial(
    features_lib.encode_units, reference=reference, priority=priority
  )
  loss_fn = functools.partial(_loss, model, opts.loss)
  # The robust loss's scale in each net's normalised units.
  loss_scale = data['loss_scale']

  def train_step(carry, rng):
    params, opt_state = carry
    k_idx, k_drop = jax.random.split(rng)
    num_train = data['num_train']
    u = jax.random.uniform(k_idx, (k, opts.batch_size))
    pick = jnp.minimum((u * num_train[:, None]).astype(jnp.int32), num_train[:, None] - 1)
    rows = jnp.take_along_axis(data['train_index'], pick, 1)  # [K, B]
    batch = jnp.take_along_axis(units, rows[..., None, None], 1)  # [K, B, M, 3]
    vis = batch[..., 2]
    if opts.path_dropout > 0:
      vis = vis * (jax.random.uniform(k_drop, vis.shape) >= opts.path_dropout)
    batch_feats = encode_units(batch[..., 0], batch[..., 1], vis)
    batch_y = jnp.take_along_axis(y_norm, rows[..., None], 1)
    batch_w = jnp.take_along_axis(data['weights'], rows, 1)
    loss, grads = jax.vmap(jax.value_and_grad(loss_fn))(
      params, batch_feats, batch_y, batch_w, loss_scale
    )
    updates, opt_state = jax.vmap(tx.update)(grads, opt_state, params)
    return (optax.apply_updates(params, updates), opt_state), loss

  rngs = jax.random.split(rng, opts.eval_every)
  (params, opt_state), losses = jax.lax.scan(train_step, (params, opt_state), rngs)
  val_feats = encode_units(units[..., 0], units[..., 1], units[..., 2])
  val = jax.vmap(loss_fn)(params, val_feats, y_norm, data['val_mask'] * data['weights'], loss_scale)
  # Nets without a validation split keep their latest parameters.
  val = jnp.where(data['has_val'], val, -jnp.inf)
  better = val <= best_val
  best_params = jax.tree.map(
    lambda new, old: jnp.where(better.reshape((-1,) + (1,) * (new.ndim - 1)), new, old),
    params,
    best_params,
  )
  return params, opt_state, best_params, jnp.minimum(best_val, val), losses.mean(0), val


@functools.partial(jax.jit, static_argnames=('model', 'opts', 'num_nets', 'num_anchors'))
def _init_state(key, *, model: MLP, opts: TrainOptions, num_nets: int, num_anchors: int):
  params = _init_params(key, model=model, num_nets=num_nets, num_anchors=num_anchors)
  return params, jax.vmap(_make_optimizer(opts).init)(params)


@jax.jit
def _unit_stack(aoa):
  """``[..., M, 3]``: the encoding's transcendental part, computed once per training."""
  return jnp.stack(features_lib.unit_vectors(aoa), -1)


def train_bank(
  model: MLP,
  ts: TrainingSet,
  opts: TrainOptions,
  *,
  writer: metric_writer.MetricWriter | None = None,
  name: str = 'nets',
  reference: str = 'mean',
  priority: np.ndarray | None = None,
) -> NetBank:
  """Trains all nets of ``ts`` at once and returns the best-on-validation parameters."""
  k, _, m = ts.aoa.shape
  mean, scale, cov, rate = label_statistics(ts)
  params, opt_state = _init_state(
    jax.random.PRNGKey(opts.seed), model=model, opts=opts, num_nets=k, num_anchors=m
  )
  data = {
    'units': _unit_stack(ts.aoa),
    'y_norm': jnp.asarray((ts.labels - mean[:, None]) / scale[:, None, None], jnp.float32),
    'train_index': jnp.asarray(ts.train_index),
    'num_train': jnp.asarray(ts.num_train),
    'val_mask': jnp.asarray(ts.val_mask, jnp.float32),
    'weights': jnp.asarray(
      np.ones(ts.val_mask.shape) if ts.weights is None else ts.weights, jnp.float32
    ),
    'loss_scale': jnp.asarray(max(opts.loss_scale_m, 1e-6) / scale, jnp.float32),
    'has_val': jnp.asarray(ts.val_mask.any(1)),
    'priority': jnp.asarray(np.zeros(m) if priority is None else priority, jnp.float32),
  }
  num_chunks = max(1, -(-opts.num_train_steps // opts.eval_every))
  progress = metric_writer.Progress(num_chunks * opts.eval_every, batch_size=opts.batch_size * k)
  best_params, best_val = params, jnp.full((k,), jnp.inf)
  rng = jax.random.PRNGKey(opts.seed + 1)
  logging.info(
    '%s: training %d nets of %s at once (initial compilation...)', name, k, tuple(opts.hidden_sizes)
  )
  settings = {'model': model, 'opts': opts, 'reference': reference}
  # Compiled ahead so the throughput figures measure training only; ahead-of-time
  # compilation fills the same cache as a call, so the loop below finds the program
  # (and a later training with the same settings and shapes does not compile again).
  t0 = time.perf_counter()
  _train_chunk.lower(params, opt_state, best_params, best_val, rng, data, **settings).compile()
  logging.info('%s: compiled in %.1f s', name, time.perf_counter() - t0)
  for chunk in range(num_chunks):  # Steps run inside the compiled scan; this only logs.
    rng, sub = jax.random.split(rng)
    progress.start()
    params, opt_state, best_params, best_val, loss, val = _train_chunk(
      params, opt_state, best_params, best_val, sub, data, **settings
    )
    loss = np.asarray(loss)
    progress.stop(opts.eval_every)
    if not np.all(np.isfinite(loss)):
      raise FloatingPointError(f'{name}: non-finite training loss {loss} at step {progress.step}')
    # val_rmse_m is the RMS error in metres for the 'mse' loss; for a robust loss, the
    # square root of its value (equal for errors under the loss scale).
    if writer is not None and (chunk % 4 == 3 or chunk == num_chunks - 1):
      summary = progress.summary()
      val = np.asarray(val)
      writer.write(
        progress.step,
        {
          f'{name}/train_loss': float(loss.mean()),
          f'{name}/val_rmse_m': float(
            np.sqrt(np.mean(np.where(np.isfinite(val) & (val >= 0), val, 0.0) * scale**2))
          ),
          f'{name}/steps_per_sec': summary['steps_per_sec'],
          f'{name}/examples_per_sec': summary['examples_per_sec'],
        },
        eta=metric_writer.Progress.format_eta(summary['eta_s']),
      )
  return NetBank(
    params=best_params,
    label_mean=jnp.asarray(mean),
    label_scale=jnp.asarray(scale),
    label_cov=jnp.asarray(cov),
    visibility_rate=jnp.asarray(rate),
    region_ids=jnp.asarray(ts.region_ids),
  )
