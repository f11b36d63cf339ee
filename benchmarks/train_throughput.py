"""``train_model*`` rows: train-step throughput of the paper's models vs PyTorch.

Ours is the library exactly as ``trainer.fit`` runs it: the model from
``models.build_position_model`` / ``build_autoencoder`` for ``configs/ctw_model{N}.py``,
``steps.create_train_state`` (Adam, the config's learning rate), ``steps.compute_gradients``
+ ``apply_gradients`` compiled by ``parallel.DataParallel.compile_train_step`` with the
config's backend (pmap), the state and the input normaliser replicated (the state
donated), and a host numpy batch sharded onto the device every step (as the input
pipeline delivers it). The reference
is :mod:`torch_reference` on the same numpy batches in the same process, with the
fastest of the settings a competent PyTorch user would try (:func:`fastest_reference`:
Adam's default, foreach and fused implementations, ``zero_grad(set_to_none)`` both ways,
channels-last for the CNNs, ``torch.compile``); every setting's step time and the winner
are in the row's ``reference_settings``.

Which step each row times (batch 64, ``[56, 924, 1]`` inputs, float32):
* ``train_model1`` / ``train_model2``: the supervised position-model step.
* ``train_model3`` / ``train_model4``: the *autoencoder pretraining* step, the cost that
  sets Models 3 and 4 apart (the paper pretrains on the 36k-sample unlabelled set).
* ``train_model3_finetune``: Model 3's fine-tuning step (MLP encoder + head). Model 4's
  fine-tuning network is the same CNN encoder + head as Model 2, so ``train_model2``
  already times it.
* ``train_chart``: the channel-charting pretraining step of ``configs/ctw_chart.py``
  (Model 3's MLP encoder + a linear head to 2-D on the ``[56, 56, 2]`` covariance
  feature), Sammon-weighted Siamese loss; an example is a pair, so a batch of 64 runs
  128 samples through the network and the row counts pairs/s.

Method: compile (excluded), warm up both sides, then ``rounds`` interleaved blocks of
``n`` steps each (``n`` chosen so a block lasts ~``block_s``); samples/s from the median
block. FLOPs per step come from PyTorch's FlopCounterMode (matmuls and convolutions,
forward + backward; the same network so the same count for both sides) and, for ours,
from XLA's cost analysis; achieved GFLOP/s = FLOPs / median step time.
"""

from __future__ import annotations

import functools
import gc
import os
import resource
import time
from typing import Any

from absl import logging
import jax
import jax.numpy as jnp
import numpy as np

from benchmarks import common
from csiloc_jax.core import config_utils
from csiloc_jax.core import parallel
from csiloc_jax.csi import features
from csiloc_jax.csi import input_pipeline
from csiloc_jax.csi import models
from csiloc_jax.csi import steps

CONFIG_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), 'configs')

# row name -> (config, loss): 'position' = supervised / fine-tuning step,
# 'reconstruction' = autoencoder pretraining step, 'chart_siamese' = chart pretraining.
SPECS: dict[str, tuple[str, str]] = {
  'train_model1': ('model1', 'position'),
  'train_model2': ('model2', 'position'),
  'train_model3': ('model3', 'reconstruction'),
  'train_model4': ('model4', 'reconstruction'),
  'train_model3_finetune': ('model3', 'position'),
  'train_chart': ('chart', 'chart_siamese'),
}
STEP_NAMES = {
  'position': 'position model',
  'reconstruction': 'autoencoder pretraining',
  'chart_siamese': 'chart pretraining (Siamese pairs)',
}
# Against the strongest reference (issue target): 1.5x.
TARGET = 1.5


def _config(model_name: str):
  return config_utils.load_config(os.path.join(CONFIG_DIR, f'ctw_{model_name}.py'))


def _input_shape(config, quick: bool) -> tuple[int, int, int]:
  syn = config.data.synthetic
  subcarriers = 64 if quick else syn.num_subcarriers
  return features.feature_shape(config.data.feature, syn.num_antennas, subcarriers)


def _batches(batch_size: int, shape: tuple[int, ...], loss: str, count: int = 2) -> list[dict]:
  rng = np.random.default_rng(0)
  tuple_size = steps.TUPLE_SIZE.get(loss)
  if tuple_size:  # pairs / triplets and their (positive) dissimilarities
    return [
      {
        'x': rng.standard_normal((batch_size, tuple_size) + shape, dtype=np.float32),
        'y': rng.uniform(0.05, 2.0, (batch_size, tuple_size - 1)).astype(np.float32),
        'mask': np.ones((batch_size,), np.float32),
      }
      for _ in range(count)
    ]
  return [
    {
      'x': rng.standard_normal((batch_size,) + shape, dtype=np.float32),
      'y': rng.standard_normal((batch_size, 3), dtype=np.float32),
      'mask': np.ones((batch_size,), np.float32),
    }
    for _ in range(count)
  ]


def _torch_chart_trainer(torch_ref, config, shape, learning_rate: float, normalizer, settings):
  """The chart step in PyTorch: ``torch_reference``'s network for the same config fields
  with the head of ``config.chart`` (its last layer to 2-D), and the same Sammon-
  weighted pair loss as ``steps.chart_siamese``."""
  import copy  # pylint: disable=g-import-not-at-top

  import torch  # pylint: disable=g-import-not-at-top

  mc = copy.deepcopy(config.model)
  mc.head_features = tuple(config.chart.head_features)
  model = torch_ref.position_model(mc, shape)
  model[-1] = torch.nn.Linear(model[-1].in_features, int(config.chart.dimensions))
  floor = max(float(config.chart.min_dissimilarity), 1e-12)

  class ChartTrainer(torch_ref.TorchTrainer):
    def step(self, batch: dict):
      b, t = batch['x'].shape[:2]
      x = self.inputs(batch['x'].reshape((b * t,) + batch['x'].shape[2:]))
      x = (x - self.mean) * self.inv_std
      d = torch.from_numpy(batch['y'])[:, 0]
      mask = torch.from_numpy(batch['mask'])
      self.opt.zero_grad(set_to_none=self.set_to_none)
      pred = self.forward(x).reshape(b, t, -1)
      dist = torch.linalg.vector_norm(pred[:, 0] - pred[:, 1], dim=-1)
      per_example = torch.square(dist - d) / torch.clamp(d, min=floor)
      loss = torch.sum(per_example * mask) / torch.sum(mask)
      loss.backward()
      self.opt.step()
      return loss

  return ChartTrainer(
    model, 'chart_siamese', learning_rate, normalizer.mean, normalizer.inv_std, False, settings
  )


class JaxRunner:
  """A compiled library train step with its replicated state, timed in blocks."""

  def __init__(
    self,
    model,
    loss: str,
    learning_rate: float,
    backend: str,
    normalizer: input_pipeline.Normalizer,
    batches: list[dict],
    loss_options: tuple = (),
  ):
    self.dp = parallel.DataParallel(backend)
    self.batches = batches
    shape = normalizer.mean.shape  # one sample's (a batch of tuples has a tuple axis)
    params = model.init(jax.random.PRNGKey(0), jnp.zeros((1,) + shape, jnp.float32))['params']
    self.num_params = models.count_params(params)
    state = steps.create_train_state(model.apply, params, learning_rate)
    options = dict(loss=loss, axis_name=self.dp.axis_name, loss_options=loss_options)
    # As trainer.fit runs it: gradient and update as two programs.
    self.p_step = self.dp.compile_train_step(
      steps.compute_gradients, steps.apply_gradients, **options
    )
    self.p_state = self.dp.replicate(state)
    self.p_normalizer = self.dp.replicate(normalizer)
    self.xla_flops = None
    try:  # FLOPs of the same step as one program (XLA's cost analysis).
      one_program = self.dp.compile_step(steps.train_step, **options)
      cost = one_program.func.lower(
        *one_program.args, self.p_state, self.dp.shard(batches[0]), self.p_normalizer
      ).cost_analysis()
      cost = cost[0] if isinstance(cost, (list, tuple)) else cost
      self.xla_flops = float(cost['flops'])
    except Exception as e:  # pylint: disable=broad-except
      logging.info('no XLA cost analysis: %s', e)
    self.compile_s, _ = common.timed(lambda: self.block(1))
    self.last_loss = None

  def block(self, n: int) -> float:
    t0 = time.perf_counter()
    metrics = None
    for i in range(n):
      self.p_state, metrics = self.p_step(
        self.p_state, self.dp.shard(self.batches[i % 2]), self.p_normalizer
      )
    jax.block_until_ready(metrics)
    elapsed = time.perf_counter() - t0
    self.last_loss = float(self.dp.unreplicate(metrics)['loss'])
    return elapsed


class TorchRunner:
  def __init__(self, trainer, batches: list[dict], flops: int | None = None):
    self.trainer = trainer
    self.batches = batches
    self.num_params = sum(p.numel() for p in trainer.model.parameters())
    # Counted eagerly (PyTorch's counter does not see inside a compiled graph); also the
    # first (warm-up) step.
    self.flops = flops if flops is not None else trainer.flops_per_step(batches[0])
    self.last_loss = None

  def block(self, n: int) -> float:
    t0 = time.perf_counter()
    loss = None
    for i in range(n):
      loss = self.trainer.step(self.batches[i % 2])
    self.last_loss = float(loss.item())
    return time.perf_counter() - t0


def setting_name(settings: dict) -> str:
  """``adam=fused, set_to_none=False, channels_last, compile``."""
  parts = [f'adam={settings.get("adam", "default")}']
  parts.append(f'set_to_none={bool(settings.get("set_to_none", True))}')
  parts += [k for k in ('channels_last', 'compile') if settings.get(k)]
  return ', '.join(parts)


def fastest_reference(
  make_trainer, batches: list[dict], *, cnn: bool, try_compile: bool, block_s: float
) -> tuple[dict, dict, int]:
  """The fastest PyTorch settings a competent user would try, greedily: Adam's three
  implementations with set_to_none, then zeroing in place with the best; for the CNNs,
  channels-last with the best so far; then torch.compile of the model with the best so
  far. Each setting is warmed up (compilation included), then timed over two blocks of
  about ``block_s / 2``; its best block counts. Returns the winner, every setting's
  milliseconds per step, and the step's FLOPs (counted on the eager default)."""
  tried: dict[str, float] = {}
  flops = None

  def time_setting(settings: dict) -> float:
    nonlocal flops
    name = setting_name(settings)
    if name in tried:  # The incumbent of an earlier stage: timed already.
      return tried[name] / 1e3
    trainer = make_trainer(settings)
    if flops is None:
      flops = trainer.flops_per_step(batches[0])
    t = min(common.timed(lambda: trainer.step(batches[i % 2]))[0] for i in range(3))
    n = max(1, int(round(block_s / 2 / max(t, 1e-6))))
    per_step = min(
      common.timed(lambda: [trainer.step(batches[i % 2]) for i in range(n)])[0] / n
      for _ in range(2)
    )
    tried[name] = 1e3 * per_step
    return per_step

  def best_of(candidates: list[dict]) -> dict:
    return min(candidates, key=time_setting)

  best = best_of([{'adam': a, 'set_to_none': True} for a in ('default', 'foreach', 'fused')])
  best = best_of([best, dict(best, set_to_none=False)])
  if cnn:
    best = best_of([best, dict(best, channels_last=True)])
  if try_compile:
    best = best_of([best, dict(best, compile=True)])
  gc.collect()
  return best, tried, flops


def _matmul_gflops(torch_mod, size: int, reps: int = 5) -> dict:
  """2-framework dense-matmul rate: the ceiling both sides' matrix kernels share."""
  a = np.random.default_rng(0).standard_normal((size, size), dtype=np.float32)
  flops = 2.0 * size**3
  out = {}
  ja = jnp.asarray(a)
  mm = jax.jit(lambda x: x @ x)
  mm(ja).block_until_ready()
  best = min(common.timed(lambda: mm(ja).block_until_ready())[0] for _ in range(reps))
  out['jax'] = flops / best / 1e9
  if torch_mod is not None:
    ta = torch_mod.from_numpy(a)
    _ = ta @ ta
    best = min(common.timed(lambda: ta @ ta)[0] for _ in range(reps))
    out['torch'] = flops / best / 1e9
  return out


def run(
  quick: bool,
  only: set[str] | None = None,
  backend: str | None = None,
  reference_compile: bool | None = None,
) -> list[common.Row]:
  """The ``train_*`` rows. ``reference_compile``: also try torch.compile for the
  reference (default: in a full run, not in ``quick``, where compiling dominates)."""
  if reference_compile is None:
    reference_compile = not quick
  torch_mod = common.optional_import('torch')
  torch_ref = None
  why_no_torch = 'torch is not installed (pip install -e .[bench])'
  if torch_mod is not None:
    from benchmarks import torch_reference as torch_ref  # pylint: disable=g-import-not-at-top

    torch_ref.set_threads(common.num_threads())
  rounds = 2 if quick else 5
  block_s = 0.3 if quick else 2.0
  peak = _matmul_gflops(torch_mod, 512 if quick else 2048)
  logging.info('dense matmul GFLOP/s: %s', peak)

  rows = []
  for name, (model_name, loss) in SPECS.items():
    if only is not None and name not in only:
      continue
    config = _config(model_name)
    phase = config.finetune if loss == 'position' else config.pretrain
    shape = _input_shape(config, quick)
    batch_size = phase.batch_size
    batches = _batches(batch_size, shape, loss)
    rng = np.random.default_rng(1)
    normalizer = input_pipeline.Normalizer(
      (0.01 * rng.standard_normal(shape)).astype(np.float32),
      (1.0 + 0.01 * rng.standard_normal(shape)).astype(np.float32),
    )
    use_backend = backend or config.parallel.backend

    loss_options = ()
    if loss == 'reconstruction':
      model = models.build_autoencoder(config.model, shape)
    elif loss == 'chart_siamese':
      model = models.build_chart_model(config.model, config.chart)
      # As the chart phase runs it, but for the loss only: a benchmark has no data.
      loss_options = (
        ('min_dissimilarity', float(config.chart.min_dissimilarity)),
        ('weighting', 'sammon'),
      )
    else:
      model = models.build_position_model(config.model)
    logging.info(
      '%s: compiling (%s, batch %d, input %s, %s)...',
      name,
      model_name,
      batch_size,
      shape,
      use_backend,
    )
    runners: dict[str, Any] = {
      'ours': JaxRunner(
        model, loss, phase.learning_rate, use_backend, normalizer, batches, loss_options
      )
    }
    reference_settings = None
    if torch_ref is not None:

      def make_trainer(settings, config=config, shape=shape, phase=phase, loss=loss):
        if loss == 'chart_siamese':
          return _torch_chart_trainer(
            torch_ref, config, shape, phase.learning_rate, normalizer, settings
          )
        tmodel = (
          torch_ref.autoencoder(config.model, shape)
          if loss == 'reconstruction'
          else torch_ref.position_model(config.model, shape)
        )
        return torch_ref.TorchTrainer(
          tmodel,
          loss,
          phase.learning_rate,
          normalizer.mean,
          normalizer.inv_std,
          nhwc_target=loss == 'reconstruction' and config.model.encoder == 'mlp',
          settings=settings,
        )

      settings, tried, ref_flops = fastest_reference(
        make_trainer,
        batches,
        cnn=config.model.encoder == 'cnn',
        try_compile=reference_compile,
        block_s=block_s,
      )
      reference_settings = {'tried_ms_per_step': tried, 'fastest': setting_name(settings)}
      logging.info('%s: PyTorch settings (ms/step): %s', name, tried)
      runners['reference'] = TorchRunner(make_trainer(settings), batches, flops=ref_flops)

    # Warm-up (one more step each after compilation / the FLOP-counting step), then
    # size the blocks from it.
    warm = {k: r.block(1) for k, r in runners.items()}
    steps_per_block = {k: max(1, int(round(block_s / max(t, 1e-6)))) for k, t in warm.items()}
    usage: dict[str, list] = {k: [] for k in runners}

    def timed_block(k: str) -> float:
      # Process CPU time and page faults per step: on a VM, first-touch page faults
      # of freshly mapped temporaries are a large part of both sides' step time.
      n = steps_per_block[k]
      before = resource.getrusage(resource.RUSAGE_SELF)
      seconds = runners[k].block(n) / n
      after = resource.getrusage(resource.RUSAGE_SELF)
      usage[k].append(
        (
          (after.ru_utime - before.ru_utime) / n,
          (after.ru_stime - before.ru_stime) / n,
          (after.ru_minflt - before.ru_minflt) / n,
        )
      )
      return seconds

    times = common.interleaved({k: functools.partial(timed_block, k) for k in runners}, rounds)
    stats = {k: common.summarize(v) for k, v in times.items()}
    for k, rows_k in usage.items():
      stats[k].update(
        user_cpu_s_per_step=float(np.median([u[0] for u in rows_k])),
        sys_cpu_s_per_step=float(np.median([u[1] for u in rows_k])),
        minor_faults_per_step=float(np.median([u[2] for u in rows_k])),
      )
    ours_sps = batch_size / stats['ours']['median_s']
    ref_sps = batch_size / stats['reference']['median_s'] if 'reference' in stats else None

    model_flops = runners['reference'].flops if 'reference' in runners else None
    flops = model_flops or runners['ours'].xla_flops
    details = {
      'step': STEP_NAMES[loss],
      'model': model_name,
      'batch_size': batch_size,
      'input_shape': list(shape),
      'backend': use_backend,
      'num_params': runners['ours'].num_params,
      'compile_s': runners['ours'].compile_s,
      'steps_per_round': steps_per_block,
      'timing': stats,
      'ours_best': batch_size / stats['ours']['min_s'],
      'model_gflop_per_step': (model_flops / 1e9) if model_flops else None,
      'xla_gflop_per_step': (
        runners['ours'].xla_flops / 1e9 if runners['ours'].xla_flops else None
      ),
      'ours_gflops': flops / stats['ours']['median_s'] / 1e9 if flops else None,
      'matmul_peak_gflops': peak,
      'final_loss': {k: r.last_loss for k, r in runners.items()},
    }
    if quick:
      details['shape_note'] = f'quick: input {list(shape)}'

    if reference_settings is not None:
      details['reference_settings'] = reference_settings
    if 'reference' in stats:
      details.update(
        reference_best=batch_size / stats['reference']['min_s'],
        reference_gflops=(flops / stats['reference']['median_s'] / 1e9 if flops else None),
        reference_num_params=runners['reference'].num_params,
      )
    if ref_sps is None:
      rows.append(
        common.unavailable(name, 'samples/s', why_no_torch, ours=ours_sps, target=TARGET, **details)
      )
    else:
      rows.append(common.Row(name, ours_sps, ref_sps, 'samples/s', target=TARGET, details=details))
    logging.info(
      '%s: ours %.1f samples/s, reference %s samples/s (%s)',
      name,
      ours_sps,
      f'{ref_sps:.1f}' if ref_sps else 'n/a',
      {k: f'{v["median_s"] * 1e3:.0f} ms/step ±{100 * v["spread"]:.0f}%' for k, v in stats.items()},
    )
    runners.clear()  # free both models before the next shape
    gc.collect()
  return rows
