"""The method on every built-in floor x seeds x region variants -> one table and plots.

Data flow: for every (source, floor, seed) a scenario is generated once into
``workdir/data/<source>_<floor>_seed<s>`` (the built-in simulator, or Sionna RT with
``source='sionna'``), with a copy of its survey without the ``region`` dataset; every
variant then runs :func:`train.train_and_evaluate` on it in
``workdir/runs/<source>_<floor>_seed<s>_<variant>``:

* ``regions``: the survey's ``region`` is used (a coarse position label: which room);
* ``no_regions``: the survey has no ``region``; regions are found from the received
  paths (:mod:`csiloc_jax.mmwave.regions`), the truly label-free case.

Every run's ``metrics.json`` stays in its folder; ``suite.json`` collects them,
``suite.md`` holds the method table (sub-metre fraction, median and p90 per method as
mean and range over seeds) and the JADE label statistics, and ``suite.png`` draws the
sub-metre fraction of the main methods per floor. A finished run (a
:class:`csiloc_jax.core.runs.Stage` named ``suite_run`` in its folder, fingerprinted by
its config and data) is not run again, so an interrupted suite resumes.
"""

from __future__ import annotations

import copy
import inspect
import os
import time

from absl import logging
import h5py
import matplotlib

matplotlib.use('Agg')
import matplotlib.pyplot as plt  # noqa: E402
import ml_collections  # noqa: E402
import numpy as np  # noqa: E402

from csiloc_jax.core import config_utils  # noqa: E402
from csiloc_jax.core import plots as core_plots  # noqa: E402
from csiloc_jax.core import runs  # noqa: E402
from csiloc_jax.mmwave import simulator  # noqa: E402
from csiloc_jax.mmwave import train  # noqa: E402

SOURCES = ('geometric', 'sionna')
VARIANTS = ('regions', 'no_regions')
# The rows of the method table, in order: the online headline first, then what it is
# measured against (JADE alone and a Kalman filter over it are the floor to beat; the
# true-anchor fit knows what the method cannot), then the offline smoothers.
TABLE_METHODS = (
  ('switching_fit_first', 'switching tracker, JADE-map fit first (online, default headline)'),
  ('switching_nis', 'switching tracker, NIS rule (online, filter state)'),
  ('switching_nis/estimate', 'switching tracker, NIS rule, chosen estimate (online, as published)'),
  ('switching_mahalanobis_euclidean', 'switching tracker, Mahalanobis + Euclidean (online)'),
  ('oracle', 'oracle: true-region nets'),
  ('big_nn', 'one big NN'),
  ('jade_alone', 'JADE alone (per-step fit to JADE map)'),
  ('jade_kalman', 'Kalman over JADE alone (online)'),
  ('true_anchor_fit', 'per-step fit, true anchors (reference)'),
  ('switching_fit_first_smoothed', 'switching tracker (fit first) + RTS smoother (offline)'),
  ('jade_kalman_smoothed', 'Kalman + RTS over JADE alone (offline)'),
)
PLOT_METHODS = (
  'switching_fit_first',
  'switching_nis',
  'jade_alone',
  'jade_kalman',
  'big_nn',
  'true_anchor_fit',
)


def _generate(config: ml_collections.ConfigDict, source: str, out_dir: str) -> dict:
  """The scenario of ``config.data`` from ``source``; re-used while its settings hold."""
  args = simulator.scenario_kwargs(config.data)
  stage = runs.Stage(out_dir, 'scenario', runs.fingerprint(source, args))
  summary = stage.result()
  if summary and all(os.path.exists(summary[k]) for k in ('survey', 'trajectory', 'no_regions')):
    return summary
  stage.reset()
  if source == 'sionna':
    from csiloc_jax.mmwave import raytrace  # pylint: disable=g-import-not-at-top

    accepted = inspect.signature(raytrace.write_scenario).parameters
    defaults = inspect.signature(simulator.write_scenario).parameters
    unsupported = [k for k, v in args.items() if k not in accepted and v != defaults[k].default]
    if unsupported:
      raise ValueError(
        f'the ray-traced source does not model {unsupported}; leave them at their defaults'
      )
    summary = raytrace.write_scenario(out_dir, **{k: v for k, v in args.items() if k in accepted})
  else:
    summary = simulator.write_scenario(out_dir, **args)
  summary['no_regions'] = os.path.join(out_dir, 'survey_no_regions.h5')
  _copy_without_region(summary['survey'], summary['no_regions'])
  stage.finish(summary)
  return summary


def _copy_without_region(src: str, dst: str) -> None:
  """``src`` without its ``region`` dataset (written beside, then renamed into place)."""
  tmp = dst + '.tmp'
  with h5py.File(src, 'r') as fi, h5py.File(tmp, 'w') as fo:
    for key in fi.keys():
      if key != 'region':
        fi.copy(key, fo)
    fo.attrs.update(dict(fi.attrs))
  os.replace(tmp, dst)


def _run(config: ml_collections.ConfigDict, run_dir: str) -> dict:
  """One ``train_and_evaluate``, skipped when its finished record matches."""
  key = runs.fingerprint(
    config_utils.config_to_dict(config),
    runs.file_signature(config.data.survey),
    runs.file_signature(config.data.trajectory),
  )
  stage = runs.Stage(run_dir, 'suite_run', key)
  done = stage.result()
  if done is not None:
    return done
  stage.reset()
  metrics = train.train_and_evaluate(config, run_dir)
  stage.finish(metrics)
  return metrics


def _cell(values: list) -> str:
  """'mean [min, max]' over seeds (one value: just the value)."""
  v = np.asarray([np.nan if x is None else x for x in values], np.float64)
  if not np.isfinite(v).any():
    return 'n/a'
  if len(v) == 1:
    return f'{v[0]:.3g}'
  return f'{np.nanmean(v):.3g} [{np.nanmin(v):.3g}, {np.nanmax(v):.3g}]'


def _pct(values: list) -> str:
  v = np.asarray(values, np.float64) * 100
  if len(v) == 1:
    return f'{v[0]:.1f} %'
  return f'{v.mean():.1f} % [{v.min():.1f}, {v.max():.1f}]'


def _method(metrics: dict, name: str) -> dict | None:
  """``metrics['methods'][name]``; ``'a/b'`` reads the nested summary ``b`` of ``a``."""
  parts = name.split('/')
  m = metrics['methods'].get(parts[0])
  for p in parts[1:]:
    m = None if m is None else m.get(p)
  return m


def markdown_tables(results: dict, seeds: list) -> str:
  """The method table and the label statistics per (source, floor, variant)."""
  lines = [
    f'Cells: mean [min, max] over seeds {list(seeds)}. Sub-metre = fraction of '
    'trajectory steps under 1 m.',
    '',
  ]
  for group, per_seed in results.items():
    lines += [
      f'### {group}',
      '',
      '| method | sub-metre | median (m) | p90 (m) |',
      '|---|---|---|---|',
    ]
    for name, label in TABLE_METHODS:
      rows = [_method(m, name) for m in per_seed]
      rows = [r for r in rows if r is not None]
      if len(rows) != len(per_seed):
        continue
      lines.append(
        f'| {label} | {_pct([r["submeter_fraction"] for r in rows])} | '
        f'{_cell([r["median_m"] for r in rows])} | {_cell([r["p90_m"] for r in rows])} |'
      )
    lines.append('')
    surveys = [m['jade'].get('survey') for m in per_seed]
    if all(surveys):
      stats = [
        ('labelled fraction', [s.get('labelled_fraction') for s in surveys]),
        ('trusted fraction', [s.get('trusted_fraction') for s in surveys]),
        ('label error median, all labelled (m)', [s.get('median_m') for s in surveys]),
        ('label error mean, all labelled (m)', [s.get('mean_m') for s in surveys]),
      ]
      for kind in ('trusted', 'rejected'):
        for stat in ('median_m', 'mean_m', 'p90_m'):
          stats.append(
            (
              f'label error {stat[:-2]}, {kind} (m)',
              [(s.get(kind) or {}).get(stat) for s in surveys],
            )
          )
      stats = [(n, v) for n, v in stats if any(x is not None for x in v)]
      lines += ['| JADE survey labels | value |', '|---|---|']
      lines += [f'| {n} | {_cell(v)} |' for n, v in stats]
      statuses = sorted({r['status'] for m in per_seed for r in m['jade']['regions'].values()})
      nets = [m['nets']['num_nets'] for m in per_seed]
      lines += [
        f'| nets (regions solved) | {_cell(nets)} |',
        f'| region statuses seen | {", ".join(statuses)} |',
        '',
      ]
  return '\n'.join(lines) + '\n'


def plot_suite(path: str, results: dict) -> None:
  """Sub-metre fraction per (floor, variant) for the main methods: bars at the mean,
  whiskers over seeds."""
  groups = list(results)
  width = 0.8 / len(PLOT_METHODS)
  fig, ax = plt.subplots(figsize=(max(8, 1.6 * len(groups)), 5))
  x = np.arange(len(groups))
  for i, name in enumerate(PLOT_METHODS):
    vals = [
      [m['methods'][name]['submeter_fraction'] for m in results[g] if name in m['methods']]
      for g in groups
    ]
    mean = np.asarray([np.mean(v) if v else np.nan for v in vals])
    lo = mean - np.asarray([np.min(v) if v else np.nan for v in vals])
    hi = np.asarray([np.max(v) if v else np.nan for v in vals]) - mean
    ax.bar(x + (i - len(PLOT_METHODS) / 2 + 0.5) * width, mean, width, label=name)
    ax.errorbar(
      x + (i - len(PLOT_METHODS) / 2 + 0.5) * width,
      mean,
      yerr=[lo, hi],
      fmt='none',
      ecolor='k',
      capsize=2,
      lw=0.8,
    )
  ax.axhline(0.95, color='grey', ls='--', lw=0.8)
  ax.set_xticks(x, [g.replace(' / ', '\n') for g in groups], fontsize=8)
  ax.set_ylabel('fraction of trajectory steps under 1 m')
  ax.set_ylim(0, 1.02)
  ax.set_title('mmWave suite: mean over seeds, whiskers = min / max')
  ax.legend(fontsize=8, loc='lower left')
  core_plots.save(fig, path)


def run_suite(config: ml_collections.ConfigDict, workdir: str) -> dict:
  """Runs ``config.suite`` and writes suite.md, suite.json and suite.png."""
  if config.data.survey or config.data.trajectory:
    raise ValueError(
      'the suite generates its own scenarios (one per floor and seed); leave '
      'config.data.survey and config.data.trajectory empty'
    )
  suite = config.suite
  for name, allowed, values in (
    ('sources', SOURCES, suite.sources),
    ('variants', VARIANTS, suite.variants),
  ):
    bad = [v for v in values if v not in allowed]
    if bad or not values:
      raise ValueError(f'config.suite.{name} must be a non-empty subset of {allowed}, got {values}')
  workdir = os.path.abspath(workdir)
  os.makedirs(workdir, exist_ok=True)
  config_utils.write_config(config, workdir)
  t0 = time.perf_counter()
  results, count = {}, 0
  total = len(suite.sources) * len(suite.floors) * len(suite.seeds) * len(suite.variants)
  for source in suite.sources:
    for floor in suite.floors:
      for seed in suite.seeds:
        cfg = copy.deepcopy(config)
        with cfg.unlocked():
          cfg.data.floorplan = floor
          cfg.data.scenario_seed = int(seed)
          cfg.seed = int(seed)
        tag = f'{source}_{floor}_seed{seed}'
        data = _generate(cfg, source, os.path.join(workdir, 'data', tag))
        for variant in suite.variants:
          count += 1
          logging.info('suite run %d/%d: %s, %s', count, total, tag, variant)
          run_cfg = copy.deepcopy(cfg)
          with run_cfg.unlocked():
            run_cfg.data.survey = data['survey' if variant == 'regions' else 'no_regions']
            run_cfg.data.trajectory = data['trajectory']
          metrics = _run(run_cfg, os.path.join(workdir, 'runs', f'{tag}_{variant}'))
          results.setdefault(f'{source} / {floor} / {variant}', []).append(metrics)
  table = markdown_tables(results, list(suite.seeds))
  with open(os.path.join(workdir, 'suite.md'), 'w') as f:
    f.write(table)
  out = {
    'seeds': list(suite.seeds),
    'results': {
      group: [{k: m[k] for k in ('methods', 'jade', 'nets', 'data')} for m in per_seed]
      for group, per_seed in results.items()
    },
    'elapsed_s': time.perf_counter() - t0,
  }
  runs.write_json(os.path.join(workdir, 'suite.json'), out)
  if config.plots:
    plot_suite(os.path.join(workdir, 'suite.png'), results)
  logging.info('suite results:\n%s', table)
  return out
