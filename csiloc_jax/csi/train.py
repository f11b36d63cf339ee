"""``train_and_evaluate``: one CSI localization run, from CTW files to ``metrics.json``.

The library function behind ``launch/train.py`` (and notebooks, tests, ``compare``):

1. resolve the data root (generate the built-in synthetic CTW-layout set if asked);
2. stream-preprocess the labelled (and unlabelled) sets into the feature cache;
3. split labelled 90/5/5 and unlabelled 80/20 with a fixed seed;
4. with ``config.model.pretrain`` (Models 3/4: ``'autoencoder'``; ``'chart'``: channel
   charting, :mod:`csiloc_jax.csi.charting`): pretrain that network on unlabelled CSI
   (or load one already pretrained by another run), transplant its encoder into the
   position model; for a chart, score the chart of the labelled set (``chart``);
5. fine-tune / train the position model with early stopping on validation loss;
6. evaluate the best weights on the test split; write metrics, predictions and plots.

Every stage checkpoints, so running it again on the same workdir resumes; a finished
run records a :class:`csiloc_jax.core.runs.Stage` (``run.done.json``) with the
fingerprint of its config, and running the same config again returns its
``metrics.json`` without touching the workdir. Workdir layout: docs/data_flow.md;
``metrics.json``: docs/schemas.md.

Multi-process runs (``launch/train.py --num_processes``; :mod:`csiloc_jax.core.
distributed`): every process runs this function with the same config. Process 0 builds
the shared files first (generated data, feature caches, the chart's tables) and the
others then read them; every process reads its own block of each batch and takes part
in training and evaluation; process 0 alone writes metrics, predictions, plots and
records and runs the (host-only) classic baselines, and the others return the
``metrics.json`` it wrote.
"""

from __future__ import annotations

import os
import time
from typing import Any

from absl import logging
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from csiloc_jax.core import checkpointing
from csiloc_jax.core import config_utils
from csiloc_jax.core import distributed
from csiloc_jax.core import metric_writer
from csiloc_jax.core import plots as core_plots
from csiloc_jax.core import runs
from csiloc_jax.csi import baselines
from csiloc_jax.csi import charting
from csiloc_jax.csi import input_pipeline
from csiloc_jax.csi import metrics as metrics_lib
from csiloc_jax.csi import models
from csiloc_jax.csi import plots
from csiloc_jax.csi import reader
from csiloc_jax.csi import steps
from csiloc_jax.csi import trainer


def resolve_data_root(config: ml_collections.ConfigDict, workdir: str) -> str:
  """``config.data.root``, or ``workdir/data`` generated on first use if allowed."""
  data = config.data
  root = os.path.abspath(data.root or os.path.join(workdir, 'data'))
  labelled = os.path.join(root, reader.LABELLED_DIR)
  from csiloc_jax.csi import simulator  # pylint: disable=g-import-not-at-top

  missing = not os.path.isdir(labelled)
  if not missing and simulator.writer.is_interrupted(root):
    if not data.generate_if_missing:
      raise ValueError(
        f'{root} holds an interrupted generation of the synthetic set (no '
        f'{simulator.writer.DONE_STAGE}.done.json); delete it or set '
        'config.data.generate_if_missing=True to generate it again'
      )
    logging.warning('%s: interrupted generation of the synthetic set; generating again', root)
    missing = True
  if missing and data.generate_if_missing:
    g = data.synthetic
    logging.info(
      'No CTW data at %s: generating the synthetic set (%d labelled, %d unlabelled, %dx%dx%d)',
      root,
      g.num_labelled,
      g.num_unlabelled,
      g.num_antennas,
      g.num_subcarriers,
      g.num_measurements,
    )
    simulator.generate_ctw_dataset(
      root,
      num_labelled=g.num_labelled,
      num_unlabelled=g.num_unlabelled,
      num_antennas=g.num_antennas,
      num_subcarriers=g.num_subcarriers,
      num_measurements=g.num_measurements,
      seed=g.seed,
      progress=True,
      config=simulator.ChannelModelConfig(position_layout=g.position_layout),
    )
  return root


def labelled_splits(
  num: int, data: ml_collections.ConfigDict, positions: np.ndarray | None = None
) -> dict[str, np.ndarray]:
  """train/val/test indices; ``num_train_labels`` keeps a prefix of the random train
  split, so smaller label budgets are nested subsets of larger ones."""
  if data.split_mode == 'spatial':
    if positions is None:
      raise ValueError("config.data.split_mode='spatial' needs the labelled positions")
    train, val, test = input_pipeline.spatial_split_indices(
      positions, data.labelled_split, data.split_seed
    )
  elif data.split_mode == 'random':
    train, val, test = input_pipeline.split_indices(num, data.labelled_split, data.split_seed)
  else:
    raise ValueError(
      f"config.data.split_mode must be 'random' or 'spatial', got {data.split_mode!r}"
    )
  if data.num_train_labels > 0:
    if data.num_train_labels > len(train):
      raise ValueError(
        f'config.data.num_train_labels={data.num_train_labels} exceeds the '
        f'{len(train)} samples of the labelled training split'
      )
    train = train[: data.num_train_labels]
  return {'train': train, 'val': val, 'test': test}


def _sample_rms(data: ml_collections.ConfigDict) -> bool:
  if data.sample_normalization not in ('rms', 'none'):
    raise ValueError(
      f"config.data.sample_normalization must be 'rms' or 'none', got {data.sample_normalization!r}"
    )
  return data.sample_normalization == 'rms'


def _save_normalizer(path: str, normalizer: input_pipeline.Normalizer) -> None:
  # Through a temporary file and a rename: a run killed while writing never leaves a
  # partial file that a run loading this pretraining would trust.
  with open(path + '.tmp', 'wb') as f:
    np.savez(f, mean=normalizer.mean, inv_std=normalizer.inv_std, sample_rms=normalizer.sample_rms)
  os.replace(path + '.tmp', path)


def _load_normalizer(path: str) -> input_pipeline.Normalizer:
  with np.load(path) as z:
    sample_rms = bool(z['sample_rms']) if 'sample_rms' in z else False
    return input_pipeline.Normalizer(z['mean'], z['inv_std'], sample_rms)


def _load_pretrained(run_dir: str, autoencoder, input_shape):
  """Best params of ``autoencoder`` (the pretraining network: an autoencoder or a chart
  network) + normaliser of another run's finished pretraining."""
  ckpt_dir = os.path.join(run_dir, 'pretrain', 'checkpoints', 'best')
  norm_path = os.path.join(run_dir, 'pretrain', 'normalizer.npz')
  if not os.path.isdir(ckpt_dir) or not os.path.exists(norm_path):
    raise FileNotFoundError(
      f'config.model.pretrained_dir={run_dir!r} holds no finished '
      f'pretraining (expected {ckpt_dir} and {norm_path})'
    )
  params = autoencoder.init(jax.random.key(0), jnp.zeros((1,) + input_shape))['params']
  state = steps.create_train_state(autoencoder.apply, params, 1e-3)
  ckpt = checkpointing.Checkpointer(ckpt_dir)
  restored, _ = ckpt.restore(jax.eval_shape(lambda: state))
  ckpt.close()
  return restored.params, _load_normalizer(norm_path)


# The pretraining loss named on the learning-curve plot.
PRETRAIN_YLABEL = {
  'autoencoder': 'reconstruction MSE',
  'chart': 'chart loss (per pair or triplet)',
}


def _dissimilarity_features(
  config: ml_collections.ConfigDict, root: str, unlabelled: reader.CTWArrays
) -> np.ndarray:
  """The unlabelled set's raw ``config.chart.dissimilarity`` feature (its own cache,
  like the kNN baselines'), or the model's input when they are the same feature."""
  if config.chart.dissimilarity == config.data.feature:
    return unlabelled.features
  cfg = ml_collections.ConfigDict(config.data.to_dict())
  cfg.feature = config.chart.dissimilarity
  return reader.load_ctw(cfg, root, need_unlabelled=True)['unlabelled'].features


def _chart_of_labelled(
  config: ml_collections.ConfigDict,
  chart_model,
  params,
  init_params,
  normalizer: input_pipeline.Normalizer,
  labelled: reader.CTWArrays,
  splits: dict[str, np.ndarray],
) -> tuple[np.ndarray, dict]:
  """The chart of every labelled sample (pretrained and untrained network) and its
  quality (``charting.evaluate_chart``)."""
  every = np.arange(len(labelled))
  kwargs = dict(
    features=labelled.features,
    indices=every,
    normalizer=normalizer,
    batch_size=config.pretrain.batch_size,
    parallel_config=config.parallel,
  )
  points = trainer.embed(params, chart_model.apply, **kwargs)
  untrained = trainer.embed(init_params, chart_model.apply, **kwargs)
  quality = charting.evaluate_chart(
    points, untrained, labelled.positions, splits, config.chart, config.data.split_seed
  )
  logging.info(
    'chart of the labelled set: trustworthiness %.3f, continuity %.3f, Kruskal stress %.3f '
    '(untrained network: %.3f, %.3f, %.3f); affine map on %d labels: test MAE avg %.2f m',
    quality['trustworthiness'],
    quality['continuity'],
    quality['kruskal_stress'],
    quality['untrained']['trustworthiness'],
    quality['untrained']['continuity'],
    quality['untrained']['kruskal_stress'],
    quality['affine']['num_fit'],
    quality['affine']['mae']['average'],
  )
  return points, quality


def _run_stage(config: ml_collections.ConfigDict, workdir: str) -> runs.Stage:
  """The record of a finished run of ``config`` in ``workdir``."""
  return runs.Stage(
    os.path.abspath(workdir), 'run', runs.fingerprint(config_utils.config_to_dict(config))
  )


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict:
  """Runs the configured model end to end and returns the ``metrics.json`` contents."""
  t_start = time.perf_counter()
  stage = _run_stage(config, workdir)
  if stage.result() is not None:
    logging.info('%s already finished this config; reusing its metrics', workdir)
    return runs.read_json(os.path.join(workdir, 'metrics.json'))
  stage.reset()
  workdir, writer = metric_writer.start_run(config, workdir)
  mc = config.model

  root = distributed.primary_first('data', lambda: resolve_data_root(config, workdir))
  mode = models.pretrain_mode(mc.pretrain)
  if mode == 'chart':
    charting.check_config(config.chart)
  need_unlabelled = mode != 'none' and not mc.pretrained_dir
  sets = distributed.primary_first(
    'feature cache', lambda: reader.load_ctw(config.data, root, need_unlabelled=need_unlabelled)
  )
  labelled = sets['labelled']
  input_shape = labelled.feature_shape
  positions = labelled.positions
  splits = labelled_splits(len(labelled), config.data, labelled.positions)
  scaler = input_pipeline.LabelScaler.fit(positions[splits['train']], config.data.label_scaling)
  targets = scaler.transform(positions)

  rng_pretrain, rng_model = jax.random.split(jax.random.key(config.seed))
  chart_points, chart_info = None, None
  position_model = models.build_position_model(mc)
  params = position_model.init(rng_model, jnp.zeros((1,) + input_shape))['params']
  summary: dict[str, Any] = {
    'model': {
      'name': mc.name,
      'input_shape': list(input_shape),
      'position_model_params': models.count_params(params),
    }
  }
  logging.info(
    '%s: position model has %d parameters on input %s',
    mc.name,
    summary['model']['position_model_params'],
    input_shape,
  )

  if mode != 'none':
    pre_model = models.build_pretraining_model(mc, config.chart, input_shape)
    pre_init = pre_model.init(rng_pretrain, jnp.zeros((1,) + input_shape))['params']
    if mc.pretrained_dir:
      pre_params, normalizer = _load_pretrained(mc.pretrained_dir, pre_model, input_shape)
      summary['pretrain'] = {'loaded_from': os.path.abspath(mc.pretrained_dir)}
    else:
      unlabelled = sets['unlabelled']
      u_train, u_val = input_pipeline.split_indices(
        len(unlabelled), config.data.unlabelled_split, config.data.split_seed
      )
      # The encoder sees unlabelled-statistics inputs while pretraining, and must keep
      # seeing the same input distribution when fine-tuned on labelled data.
      normalizer = input_pipeline.feature_statistics(
        unlabelled.features,
        u_train,
        config.data.normalization,
        sample_rms=_sample_rms(config.data),
      )
      if distributed.is_primary():
        os.makedirs(os.path.join(workdir, 'pretrain'), exist_ok=True)
        _save_normalizer(os.path.join(workdir, 'pretrain', 'normalizer.npz'), normalizer)
      if mode == 'autoencoder':
        logging.info('Autoencoder has %d parameters', models.count_params(pre_init))
        pre_data = trainer.PhaseData(unlabelled.features, None, u_train, u_val, normalizer)
        pre_loss, pre_options = 'reconstruction', ()
      else:
        logging.info('Chart network has %d parameters', models.count_params(pre_init))
        pre_data, chart_info = distributed.primary_first(
          'chart tables',
          lambda: charting.build_tuple_data(
            unlabelled.features,
            _dissimilarity_features(config, root, unlabelled),
            u_train,
            u_val,
            normalizer,
            config.chart,
            config.pretrain.seed,
            workdir,
          ),
        )
        pre_loss = charting.loss_name(config.chart)
        pre_options = charting.loss_options(config.chart)
      result = trainer.fit(
        phase='pretrain',
        model=pre_model,
        init_params=pre_init,
        loss=pre_loss,
        data=pre_data,
        train_config=config.pretrain,
        parallel_config=config.parallel,
        workdir=workdir,
        writer=writer,
        loss_options=pre_options,
      )
      pre_params = result.params
      summary['pretrain'] = _phase_summary(result, len(u_train), len(u_val))
      key = 'autoencoder_params' if mode == 'autoencoder' else 'chart_params'
      summary['model'][key] = models.count_params(pre_init)
    params = models.transplant_encoder(params, pre_params, models.ensemble_size(mc))
    if mode == 'chart':
      chart_points, summary['chart'] = _chart_of_labelled(
        config, pre_model, pre_params, pre_init, normalizer, labelled, splits
      )
      if chart_info is not None:
        summary['chart']['dissimilarity'] = chart_info
  else:
    normalizer = input_pipeline.feature_statistics(
      labelled.features,
      splits['train'],
      config.data.normalization,
      sample_rms=_sample_rms(config.data),
    )

  phase_data = trainer.PhaseData(
    labelled.features, targets, splits['train'], splits['val'], normalizer
  )
  result = trainer.fit(
    phase='finetune',
    model=position_model,
    init_params=params,
    loss='position',
    data=phase_data,
    train_config=config.finetune,
    parallel_config=config.parallel,
    workdir=workdir,
    writer=writer,
  )
  summary['finetune'] = _phase_summary(result, len(splits['train']), len(splits['val']))
  # The floor every model must beat: the training targets' mean, in the same loss.
  train_mean = targets[splits['train']].mean(0)
  mean_loss = float(np.mean(np.sum((targets[splits['val']] - train_mean) ** 2, axis=-1)))
  ratio = result.best_val_loss / mean_loss if mean_loss > 0 else float('inf')
  summary['finetune'].update(mean_predictor_val_loss=mean_loss, val_loss_vs_mean=ratio)
  summary['warnings'] = []
  if not ratio < 1.0:
    warning = (
      f'{mc.name}: best validation loss {result.best_val_loss:.4g} is not below the '
      f"training-mean predictor's {mean_loss:.4g} ({ratio:.2f}x): the model learned "
      'nothing usable'
    )
    summary['warnings'].append(warning)
    logging.warning('%s', warning)
  else:
    logging.info(
      '%s: best validation loss %.4g = %.2fx the training-mean predictor (%.4g)',
      mc.name,
      result.best_val_loss,
      ratio,
      mean_loss,
    )

  ranges = positions.max(0) - positions.min(0)
  for split in ('val', 'test'):
    _, pred_scaled = trainer.predict(
      result.params,
      position_model.apply,
      'position',
      phase_data,
      splits[split],
      config.finetune.batch_size,
      config.parallel,
    )
    member_pred = scaler.inverse(pred_scaled)
    pred = models.ensemble_mean(member_pred)
    true = positions[np.sort(splits[split])]
    split_metrics = metrics_lib.localization_metrics(pred, true, ranges)
    if member_pred.ndim == 3:
      # What the ensemble adds: each member's own MAE average beside the members' mean.
      split_metrics['member_mae_average'] = [
        metrics_lib.localization_metrics(member_pred[:, k], true, ranges)['mae']['average']
        for k in range(member_pred.shape[1])
      ]
    summary['test' if split == 'test' else 'validation'] = split_metrics
    if split == 'test' and distributed.is_primary():
      extra = {'member_pred': member_pred} if member_pred.ndim == 3 else {}
      np.savez(
        os.path.join(workdir, 'test_predictions.npz'),
        pred=pred,
        true=true,
        index=np.sort(splits[split]),
        **extra,
      )
    if split == 'test':
      test_pred, test_true = pred, true
  if not distributed.is_primary():
    # What remains (baselines, metrics, plots) is process 0's alone.
    distributed.barrier('metrics written')
    return runs.read_json(os.path.join(workdir, 'metrics.json'))
  # Classic baselines on the same splits (docs/csi.md, 'Baselines').
  summary['baselines'] = baselines.run_baselines(
    config.data, root, splits, names=tuple(config.eval.baselines)
  )
  for name, result_b in summary['baselines'].items():
    if result_b['mae']['average'] < summary['test']['mae']['average']:
      warning = (
        f'{mc.name}: test MAE average {summary["test"]["mae"]["average"]:.3g} m is worse '
        f'than the {name} baseline ({result_b["mae"]["average"]:.3g} m)'
      )
      summary['warnings'].append(warning)
      logging.warning('%s', warning)
  summary['data'] = {
    'root': root,
    'num_labelled': len(labelled),
    'num_train_labels': int(len(splits['train'])),
    'num_val': int(len(splits['val'])),
    'num_test': int(len(splits['test'])),
    'num_unlabelled': (len(sets['unlabelled']) if sets['unlabelled'] is not None else None),
    'feature': config.data.feature,
    'average': config.data.average,
    # What the reader's plausibility checks found (docs/schemas.md, 'Robustness').
    'validation': {k: v.meta.get('validation') for k, v in sets.items() if v is not None},
  }
  for name, found in summary['data']['validation'].items():
    if found and found['suspect_samples']:
      summary['warnings'].append(
        f'{name} set: {found["suspect_samples"]} of {found["num_samples"]} samples are '
        'suspect (exact zeros where damage leaves them); see data.validation'
      )
  summary['wall_seconds'] = time.perf_counter() - t_start
  runs.write_json(os.path.join(workdir, 'metrics.json'), summary)

  plots.learning_curves(
    writer.read(),
    os.path.join(workdir, 'learning_curves.png'),
    title=mc.name,
    pretrain_ylabel=PRETRAIN_YLABEL[mode] if mode != 'none' else '',
  )
  if chart_points is not None:
    plots.chart(
      chart_points,
      positions,
      os.path.join(workdir, 'chart.png'),
      title=f'{mc.name}: channel chart of the labelled set',
    )
  core_plots.error_cdf(
    os.path.join(workdir, 'error_cdf.png'),
    {mc.name: np.linalg.norm(test_pred - test_true, axis=1)},
    xlabel='3-D position error (m)',
    ylabel='fraction of test samples',
  )
  plots.positions_xy(
    test_true,
    test_pred,
    os.path.join(workdir, 'positions_xy.png'),
    title=f'{mc.name}: test positions (XY plane)',
  )
  stage.finish()
  distributed.barrier('metrics written')
  t = summary['test']
  logging.info(
    '%s test: MAE avg %.3f m, RMSE avg %.3f m, median distance %.3f m',
    mc.name,
    t['mae']['average'],
    t['rmse']['average'],
    t['distance_m']['median'],
  )
  return summary


def _phase_summary(result: trainer.PhaseResult, num_train: int, num_val: int) -> dict:
  return {
    'best_val_loss': result.best_val_loss,
    'best_epoch': result.best_epoch,
    'epochs_run': result.epochs_run,
    'stopped_early': result.stopped_early,
    'num_train': num_train,
    'num_val': num_val,
    'train_seconds': result.train_seconds,
    'steps_per_sec': result.steps_per_sec,
  }
