"""Robustness sweep: AoA noise x switching threshold -> markdown tables, JSON and PNGs.

Data flow: for every noise level, :func:`train.resolve_data` generates the scenario
(same seed and floor, only the noise changes) and :func:`train.fit_models` runs JADE
and trains the nets once; then one compiled tracker, vmapped over every (threshold,
switching variant) pair, runs the trajectory; the baselines (oracle, big NN, JADE
alone) do not depend on the threshold and are reported once per noise level.
"""

from __future__ import annotations

import copy
import os
import time

from absl import logging
import jax.numpy as jnp
import ml_collections
import numpy as np

from csiloc_jax.core import config_utils
from csiloc_jax.core import runs
from csiloc_jax.mmwave import features as features_lib
from csiloc_jax.mmwave import metrics as metrics_lib
from csiloc_jax.mmwave import plots
from csiloc_jax.mmwave import reader
from csiloc_jax.mmwave import tracker as tracker_lib
from csiloc_jax.mmwave import train

# (name, scheme, gated) of the variants swept over thresholds.
VARIANTS = (
  ('nis', 'nis', True),
  ('mahalanobis_euclidean', 'mahalanobis_euclidean', True),
  ('nis_ungated', 'nis', False),
)


def _sweep_point(config: ml_collections.ConfigDict, workdir: str, thresholds: list[float]) -> dict:
  """Fits once at this config's noise and tracks with every threshold and variant."""
  survey_path, trajectory_path, _ = train.resolve_data(config, workdir)
  trajectory = reader.read_measurements(trajectory_path, require_time=True)
  fit = train.fit_models(config, survey_path)
  base = train.track_trajectory(config, fit, trajectory)  # Baselines (and checks).
  opts = config_utils.options_from_config(
    tracker_lib.TrackerOptions, config.tracker, 'config.tracker'
  )
  combos = [
    (t, tracker_lib.SCHEMES.index(s), opts.visibility_gate_nats if g else 0.0)
    for t in thresholds
    for _, s, g in VARIANTS
  ]
  thr, sch, gate = (
    jnp.asarray(c, dtype) for c, dtype in zip(zip(*combos), (jnp.float32, jnp.int32, jnp.float32))
  )
  feats = features_lib.encode(trajectory.aoa, **fit.feature_kwargs)
  num_paths = jnp.asarray(features_lib.path_counts(trajectory.aoa))
  time_s = jnp.asarray(trajectory.time_s - trajectory.time_s[0], jnp.float32)
  extra = (
    jnp.asarray(base['jade_alone']['position'][:, None], jnp.float32)
    if config.tracker.jade_candidate
    else None
  )
  outs = tracker_lib.track_variants(
    fit.bank, feats, num_paths, time_s, thr, sch, gate, extra, model=fit.model, opts=opts
  )
  positions = np.asarray(outs[train.headline_key(config)])
  truth = reader.read_ground_truth(trajectory_path).position
  survey_truth = reader.read_ground_truth(survey_path).position
  cells = {}
  for i, (t, s, g) in enumerate(combos):
    name = VARIANTS[i % len(VARIANTS)][0]
    cells.setdefault(name, []).append(
      metrics_lib.error_summary(metrics_lib.errors(positions[i], truth))
    )
  metrics, _ = train.evaluate_trajectory(fit, trajectory, base, config)
  point = {
    'variants': cells,
    'baselines': {
      k: metrics['methods'][k]
      for k in ('oracle', 'big_nn', 'jade_alone', 'jade_kalman')
      if k in metrics['methods']
    },
  }
  if survey_truth is not None:
    point['jade_survey'] = metrics['jade'].get('survey')
    point['jade_anchors'] = metrics['jade'].get('anchors')
  return point


def _fmt(m: dict | None) -> str:
  if not m:
    return 'n/a'
  med = m['median_m']
  return (
    f'{100 * m["submeter_fraction"]:.1f} % / {med:.2f} m'
    if med is not None
    else f'{100 * m["submeter_fraction"]:.1f} % / n/a'
  )


def markdown_tables(noise: list, thresholds: list, points: list[dict]) -> str:
  """Tables of 'sub-metre fraction / median error' per noise level and threshold."""
  lines = []
  for name, _, gated in VARIANTS:
    title = name + ('' if not gated else ' (with visibility gate)')
    lines += [
      f'### {title}: steps under 1 m / median error',
      '',
      '| AoA noise | ' + ' | '.join(f'threshold {t:g}' for t in thresholds) + ' |',
      '|---|' + '---|' * len(thresholds),
    ]
    for n, p in zip(noise, points):
      lines.append(f'| {n:g} deg | ' + ' | '.join(_fmt(c) for c in p['variants'][name]) + ' |')
    lines.append('')
  lines += [
    '### Baselines (independent of the threshold)',
    '',
    '| AoA noise | oracle net | big NN | JADE alone | JADE survey labels | JADE anchors (median) |',
    '|---|---|---|---|---|---|',
  ]
  for n, p in zip(noise, points):
    b = p['baselines']
    anchors = p.get('jade_anchors') or {}
    lines.append(
      f'| {n:g} deg | {_fmt(b.get("oracle"))} | {_fmt(b.get("big_nn"))} | '
      f'{_fmt(b.get("jade_alone"))} | {_fmt(p.get("jade_survey"))} | '
      f'{anchors.get("median_m", float("nan")):.2f} m |'
    )
  return '\n'.join(lines) + '\n'


def run_sweep(config: ml_collections.ConfigDict, workdir: str) -> dict:
  """Runs the grid of ``config.sweep`` and writes sweep.md, sweep.json and PNGs."""
  if config.data.survey or config.data.trajectory:
    raise ValueError(
      'the sweep generates its own scenarios (one per noise level); leave '
      'config.data.survey and config.data.trajectory empty'
    )
  workdir = os.path.abspath(workdir)
  os.makedirs(workdir, exist_ok=True)
  config_utils.write_config(config, workdir)
  noise = [float(n) for n in config.sweep.noise_deg]
  thresholds = [float(t) for t in config.sweep.thresholds]
  points = []
  t0 = time.perf_counter()
  for i, n in enumerate(noise):  # One scenario and one fit per noise level.
    point_config = copy.deepcopy(config)
    with point_config.unlocked():
      point_config.data.aoa_noise_deg = n
    logging.info('sweep point %d/%d: AoA noise %g deg', i + 1, len(noise), n)
    points.append(_sweep_point(point_config, os.path.join(workdir, f'noise_{n:g}deg'), thresholds))
  result = {
    'noise_deg': noise,
    'thresholds': thresholds,
    'points': points,
    'variants': [v[0] for v in VARIANTS],
    'elapsed_s': time.perf_counter() - t0,
  }
  runs.write_json(os.path.join(workdir, 'sweep.json'), result)
  table = markdown_tables(noise, thresholds, points)
  with open(os.path.join(workdir, 'sweep.md'), 'w') as f:
    f.write(table)
  logging.info('sweep results:\n%s', table)
  for name, _, _ in VARIANTS:
    sub = np.asarray([[c['submeter_fraction'] for c in p['variants'][name]] for p in points])
    med = np.asarray(
      [
        [np.nan if c['median_m'] is None else c['median_m'] for c in p['variants'][name]]
        for p in points
      ]
    )
    suffix = '' if name == 'nis' else f'_{name}'
    plots.plot_sweep(
      os.path.join(workdir, f'sweep{suffix}.png'),
      noise,
      thresholds,
      sub,
      med,
      title=f'Switching scheme {name}: robustness to AoA noise',
    )
  return result
