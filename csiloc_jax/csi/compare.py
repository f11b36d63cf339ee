"""The paper's comparison: all four models on the same data and splits (Table I), and a
label-efficiency sweep (test MAE vs number of labelled training samples).

``run_comparison(config, workdir)`` is what ``launch/compare.py`` calls. Layout:

    workdir/data/                 generated CTW-layout set (unless config.data.root)
    workdir/model{1..4}/          one full train_and_evaluate run per model
    workdir/sweep/<model>/n<N>/   fine-tuning runs with N labels (pretraining reused)
    workdir/table1.md             Table I-shaped markdown (MAE, NMAE, RMSE, NRMSE)
    workdir/label_efficiency.md   MAE average per model and label budget
    workdir/label_efficiency.png, error_cdf.png
    workdir/metrics.json          everything above as JSON (docs/schemas.md)

The sweep answers the paper's central claim: pretraining on unlabelled CSI helps when
labels are scarce. Pretraining does not depend on labels, so each autoencoder is trained
once (in ``model3``/``model4``) and every sweep point only fine-tunes from it. Label
budgets are nested prefixes of one random training split; validation and test splits
are the same for every run, and every sweep run gets at least the full-label run's
optimiser steps per epoch (``finetune.min_steps_per_epoch``). Every run resumes from its
checkpoints, and a run that finished with the same config is not repeated
(``train_and_evaluate`` reuses it).

Which encoder each model has and whether it is pretrained comes from the config
(``config.compare.paper_models``, filled from ``configs/ctw_base.py``'s table).
"""

from __future__ import annotations

import copy
import os
from typing import Any

from absl import logging
import ml_collections
import numpy as np

from csiloc_jax.core import config_utils
from csiloc_jax.core import metric_writer
from csiloc_jax.core import plots as core_plots
from csiloc_jax.core import runs
from csiloc_jax.csi import input_pipeline
from csiloc_jax.csi import models
from csiloc_jax.csi import plots
from csiloc_jax.csi import train

AXES = ('x', 'y', 'z', 'average')


def _paper_model(config: ml_collections.ConfigDict, name: str) -> dict:
  """``config.compare.paper_models[name]``: the model's encoder and whether it is
  pretrained."""
  known = config.compare.paper_models
  if name not in known:
    raise ValueError(
      f'unknown model {name!r}; config.compare.paper_models has {sorted(known.keys())}'
    )
  return dict(known[name])


def model_config(
  config: ml_collections.ConfigDict, name: str, root: str, **data_overrides: Any
) -> ml_collections.ConfigDict:
  """The comparison's base config turned into one paper model on the shared data."""
  cfg = copy.deepcopy(config)
  settings = _paper_model(config, name)
  with cfg.unlocked():
    del cfg['compare']
  cfg.model.name = name
  cfg.model.update(settings)
  if config.protocol != 'paper':
    cfg.update(config.compare.model_overrides.get(name, {}))
  cfg.data.root = root
  for key, value in data_overrides.items():
    cfg.data[key] = value
  return cfg


def table_one(results: dict[str, dict], paper_models: dict[str, dict]) -> str:
  """Markdown shaped like the paper's Table I (test split, metres); ``paper_models``
  maps each model to its ``encoder`` and ``pretrain`` settings."""
  lines = []
  for metrics in (('mae', 'nmae'), ('rmse', 'nrmse')):
    head = ['Model', 'Pretraining', 'Finetuning']
    for m in metrics:
      head += [f'{m.upper()} {a}' for a in AXES]
    lines.append('| ' + ' | '.join(head) + ' |')
    lines.append('|' + '---|' * len(head))
    for name, res in results.items():
      settings = paper_models[name]
      kind = 'CNN' if settings['encoder'] == 'cnn' else 'MLP'
      mode = models.pretrain_mode(settings['pretrain'])
      pretrained = {'none': '', 'autoencoder': kind, 'chart': f'{kind} chart'}[mode]
      row = [name, pretrained, 'MLP' if pretrained else kind]
      for m in metrics:
        digits = 2 if m in ('mae', 'rmse') else 4
        row += [f'{res["test"][m][a]:.{digits}f}' for a in AXES]
      lines.append('| ' + ' | '.join(row) + ' |')
    # The classic baselines on the same split (every run computes them on its own
    # split; the models of Table I share one).
    first = next(iter(results.values()), {})
    for name, res in first.get('baselines', {}).items():
      row = [name, 'baseline', '']
      for m in metrics:
        digits = 2 if m in ('mae', 'rmse') else 4
        row += [f'{res[m][a]:.{digits}f}' for a in AXES]
      lines.append('| ' + ' | '.join(row) + ' |')
    lines.append('')
  return '\n'.join(lines)


def _spread(values: list[float]) -> dict:
  """Mean, standard deviation (ddof=1 when there are 2+), min and max of one budget's
  values over seeds."""
  v = np.asarray(values, np.float64)
  return {
    'mean': float(v.mean()),
    'std': float(v.std(ddof=1)) if len(v) > 1 else 0.0,
    'min': float(v.min()),
    'max': float(v.max()),
    'values': [float(x) for x in v],
  }


def efficiency_table(sweep: dict[str, dict[int, list]], budgets: list[int]) -> str:
  """'mean ± std (n)' of the test MAE average per method and label budget."""
  head = ['labelled train samples'] + list(sweep)
  lines = ['| ' + ' | '.join(head) + ' |', '|' + '---|' * len(head)]

  def cell(values) -> str:
    if not values:
      return ''
    s = _spread(values)
    return (
      f'{s["mean"]:.2f}'
      if len(values) == 1
      else f'{s["mean"]:.2f} ± {s["std"]:.2f} ({len(values)})'
    )

  for n in budgets:
    lines.append('| ' + ' | '.join([str(n)] + [cell(sweep[m].get(n)) for m in sweep]) + ' |')
  return '\n'.join(lines) + '\n'


def _sweep_run(
  config: ml_collections.ConfigDict,
  workdir: str,
  root: str,
  name: str,
  n: int,
  seed: int,
  num_train_all: int,
) -> dict:
  """One fine-tuning run of the sweep: ``name`` with ``n`` labels, seed ``seed`` (model
  initialisation and the labelled split), pretraining reused from Table I's run."""
  pretrains = models.pretrain_mode(_paper_model(config, name)['pretrain']) != 'none'
  pretrained = os.path.join(workdir, name) if pretrains else ''
  cfg = model_config(config, name, root, num_train_labels=n if n < num_train_all else -1)
  cfg.model.pretrained_dir = pretrained
  if seed != int(config.seed):
    cfg.seed = seed
    cfg.data.split_seed = seed
  # Same optimiser budget as the full-label run: fewer labels must not also mean fewer
  # steps (with 50 labels an epoch is a single step).
  cfg.finetune.min_steps_per_epoch = max(
    cfg.finetune.min_steps_per_epoch,
    input_pipeline.num_batches(num_train_all, cfg.finetune.batch_size),
  )
  tag = f'n{n}' if seed == int(config.seed) else f'n{n}_seed{seed}'
  return train.train_and_evaluate(cfg, os.path.join(workdir, 'sweep', name, tag))


def run_comparison(config: ml_collections.ConfigDict, workdir: str) -> dict:
  """Trains the configured models, then the label sweep; returns the summary."""
  workdir = os.path.abspath(workdir)
  os.makedirs(workdir, exist_ok=True)
  config_utils.write_config(config, workdir)
  metric_writer.log_to_file(workdir)
  root = train.resolve_data_root(config, workdir)
  names = [n.strip() for n in config.compare.models.split(',') if n.strip()]

  results: dict[str, dict] = {}
  for name in names:
    logging.info('=== %s ===', name)
    results[name] = train.train_and_evaluate(
      model_config(config, name, root), os.path.join(workdir, name)
    )
  table = table_one(results, {name: _paper_model(config, name) for name in results})
  with open(os.path.join(workdir, 'table1.md'), 'w') as f:
    f.write(table)
  logging.info('Table I (test split):\n%s', table)

  # Every method's test MAE average per label budget, one value per seed.
  sweep: dict[str, dict[int, list]] = {}
  sweep_names = [n.strip() for n in config.compare.sweep_models.split(',') if n.strip()]
  num_train_all = next(iter(results.values()))['data']['num_train_labels'] if results else 0
  budgets = sorted({int(n) for n in config.compare.label_budgets if 0 < n < num_train_all})
  seeds = [int(s) for s in config.compare.seeds] or [int(config.seed)]
  # Baselines at every budget and seed, from the runs there (same splits).
  baseline_curve: dict[str, dict[int, list]] = {}

  def add(curve: dict, name: str, n: int, value: float) -> None:
    curve.setdefault(name, {}).setdefault(n, []).append(value)

  def add_baselines(res: dict, n: int) -> None:
    for b_name, b_res in res.get('baselines', {}).items():
      add(baseline_curve, b_name, n, b_res['mae']['average'])

  main_seed = int(config.seed)
  for seed in seeds:
    for name in sweep_names:
      for n in budgets + ([num_train_all] if num_train_all else []):
        if n == num_train_all and seed == main_seed and name in results:
          res = results[name]  # Table I's run.
        else:
          res = _sweep_run(config, workdir, root, name, n, seed, num_train_all)
        add(sweep, name, n, res['test']['mae']['average'])
        if name == sweep_names[0]:
          add_baselines(res, n)
  sweep.update(baseline_curve)
  all_budgets = budgets + ([num_train_all] if num_train_all else [])
  eff = efficiency_table(sweep, all_budgets)
  with open(os.path.join(workdir, 'label_efficiency.md'), 'w') as f:
    f.write(eff)
  logging.info('Label efficiency (test MAE average, m):\n%s', eff)
  if sweep:
    plots.label_efficiency(sweep, os.path.join(workdir, 'label_efficiency.png'))
  errors = {}
  for name in results:
    with np.load(os.path.join(workdir, name, 'test_predictions.npz')) as z:
      errors[name] = np.linalg.norm(z['pred'] - z['true'], axis=1)
  if errors:
    core_plots.error_cdf(
      os.path.join(workdir, 'error_cdf.png'),
      errors,
      xlabel='3-D position error (m)',
      ylabel='fraction of test samples',
    )
  summary = {
    'models': {n: {k: r[k] for k in ('test', 'model', 'data')} for n, r in results.items()},
    'label_efficiency': {
      m: {str(n): dict(_spread(v), seeds=seeds) for n, v in d.items()} for m, d in sweep.items()
    },
    'table1_markdown': table,
  }
  runs.write_json(os.path.join(workdir, 'metrics.json'), summary)
  return summary
