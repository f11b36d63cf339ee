"""The whole mmWave method as library functions: ``train_and_evaluate(config, workdir)``.

Data flow (the method and its choices: docs/mmwave.md; the files it reads and writes,
``metrics.json``: docs/schemas.md; the workdir layout: docs/data_flow.md)::

  survey.h5 ──read (no ground truth)──> regions ──> JADE (labels, anchors)
      └──> features ──> tiny nets (one per region, stacked) + one big NN  [checkpointed]
  trajectory.h5 ──> features ──> tracker (all nets per step, Kalman + NIS switching)
                              ├─> big NN, JADE alone (baselines)
  ground truth (evaluation only) ──> metrics.json, plots

:func:`fit_models` is the training half and reads the survey through
``read_measurements(..., ground_truth=False)``: ground-truth positions cannot reach the
nets. :func:`track_trajectory` is the online half. :func:`train_and_evaluate` adds data
generation, checkpoints, evaluation (:func:`evaluate_trajectory`), ``metrics.json`` and
the plots; ``launch/mmwave.py`` only parses flags and calls it. A notebook gets the same
settings from ``config_utils.load_config('configs/mmwave_tiny.py')``.

"Is this already done?" is answered by :class:`csiloc_jax.core.runs.Stage` records: a
generated scenario (``workdir/data/scenario.done.json``) is re-used while its settings
are unchanged, and the trained nets (``workdir/checkpoints/nets.done.json``, written
after the checkpoint is on disk) are restored while the survey file and the settings
they depend on are unchanged.

"JADE alone" on a trajectory is defined as: every step is localised on its own by an
ADoA least-squares fit (position + heading, Levenberg-Marquardt, vmapped over steps and
over starts at every net's label mean) against JADE's anchor map, where each anchor
takes the estimate of the region that saw it most. Steps with fewer than 3 paths to
mapped anchors have no JADE-alone estimate.
"""

from __future__ import annotations

import dataclasses
import os
import time

from absl import logging
import flax
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from csiloc_jax.core import checkpointing
from csiloc_jax.core import config_utils
from csiloc_jax.core import metric_writer
from csiloc_jax.core import plots as core_plots
from csiloc_jax.core import runs
from csiloc_jax.mmwave import features as features_lib
from csiloc_jax.mmwave import jade
from csiloc_jax.mmwave import metrics as metrics_lib
from csiloc_jax.mmwave import plots
from csiloc_jax.mmwave import reader
from csiloc_jax.mmwave import regions as regions_lib
from csiloc_jax.mmwave import simulator
from csiloc_jax.mmwave import tiny_nets
from csiloc_jax.mmwave import tracker as tracker_lib

# (name, scheme, gated) of the switching variants evaluated on every trajectory.
SWITCHING_VARIANTS = (
  ('switching_nis', 'nis', True),
  ('switching_mahalanobis_euclidean', 'mahalanobis_euclidean', True),
  ('switching_fit_first', 'fit_first', True),
  ('switching_nis_ungated', 'nis', False),
  ('switching_mahalanobis_euclidean_ungated', 'mahalanobis_euclidean', False),
  ('switching_fit_first_ungated', 'fit_first', False),
)


@dataclasses.dataclass
class SurveyFit:
  """Everything learned from the survey (no ground truth inside)."""

  survey: reader.Measurements
  region: np.ndarray
  region_source: str
  jade: jade.JadeResult
  model: tiny_nets.MLP
  bank: tiny_nets.NetBank
  big_model: tiny_nets.MLP
  big_bank: tiny_nets.NetBank
  feature_kwargs: dict
  timing_s: dict
  restored: bool = False


def resolve_data(config: ml_collections.ConfigDict, workdir: str) -> tuple[str, str, dict]:
  """The survey and trajectory paths, generating the configured scenario if needed."""
  data = config.data
  if bool(data.survey) != bool(data.trajectory):
    raise ValueError(
      'set both config.data.survey and config.data.trajectory, or neither '
      f'(got survey={data.survey!r}, trajectory={data.trajectory!r})'
    )
  if data.survey:
    return data.survey, data.trajectory, {'generated': False}
  out_dir = os.path.join(workdir, 'data')
  args = simulator.scenario_kwargs(data)
  plan = args['floorplan']
  plan_file = runs.file_signature(plan) if plan and os.path.isfile(plan) else None
  stage = runs.Stage(out_dir, 'scenario', runs.fingerprint(args, plan_file))
  summary = stage.result()
  if summary and all(os.path.exists(summary[k]) for k in ('survey', 'trajectory')):
    # The files of an earlier run with the same scenario settings: a resumed run finds
    # the survey its checkpoint was trained on.
    logging.info('re-using the scenario generated earlier in %s', out_dir)
  else:
    stage.reset()
    summary = simulator.write_scenario(out_dir, **args)
    stage.finish(summary)
    logging.info('generated scenario in %s: %s', out_dir, summary)
  return summary['survey'], summary['trajectory'], dict(summary, generated=True)


def _feature_kwargs(config, survey: reader.Measurements) -> dict:
  reference = config.features.reference
  if reference not in features_lib.REFERENCES:
    raise ValueError(
      f'config.features.reference must be one of {features_lib.REFERENCES}, got {reference!r}'
    )
  priority = features_lib.survey_priority(survey.aoa) if reference == 'anchor' else None
  return {'reference': reference, 'priority': priority}


def _bank_state(bank: tiny_nets.NetBank) -> dict:
  return flax.serialization.to_state_dict(jax.tree.map(np.asarray, bank))


def _nets_fingerprint(config, survey_path: str) -> str:
  """What the trained nets depend on: the survey file and the method's settings."""
  settings = {
    name: config_utils.config_to_dict(config[name])
    for name in ('features', 'jade', 'nets', 'big_nn')
  }
  return runs.fingerprint(
    os.path.abspath(survey_path),
    runs.file_signature(survey_path),
    config.seed,
    config.data.num_regions_if_missing,
    settings,
  )


def fit_models(
  config: ml_collections.ConfigDict,
  survey_path: str,
  *,
  writer: metric_writer.MetricWriter | None = None,
  checkpoint_dir: str | None = None,
) -> SurveyFit:
  """JADE on the survey, then the tiny nets and the big NN on JADE's labels.

  Reads the survey without its ground-truth datasets. With ``checkpoint_dir`` the
  trained nets are saved there, and restored instead of retrained when
  ``config.resume`` is set and the survey and settings are unchanged (a
  :class:`~csiloc_jax.core.runs.Stage` named ``nets`` in ``checkpoint_dir`` records
  which inputs the saved nets were trained on).
  """
  survey = reader.read_measurements(survey_path, ground_truth=False)
  region, source = regions_lib.assign_regions(
    survey.region,
    survey.visible,
    config.data.num_regions_if_missing,
    config.seed,
    anchor_kind=survey.anchor_kind,
    anchor_ap=survey.anchor_ap,
    min_anchor_fraction=config.jade.min_anchor_fraction,
    min_samples=max(config.jade.min_samples, 30),
  )
  timing = {}
  t0 = time.perf_counter()
  jade_opts = config_utils.options_from_config(
    jade.JadeOptions, config.jade, 'config.jade', seed=config.seed
  )
  jade_result = jade.run_jade(
    survey.aoa, region, survey.anchor_ap, survey.anchor_kind, survey.ap_position, jade_opts
  )
  timing['jade'] = time.perf_counter() - t0
  if len(jade_result.region_ids) == 0:
    # The survey's content (not the code) rules the method out: bad input (exit 2).
    raise reader.MeasurementError(
      f'{survey_path}: JADE could not solve any region ({jade_result.status}); '
      'every region needs >= 4 anchors seen by >= '
      f'{jade_opts.min_anchor_fraction:.0%} of its samples, including >= 2 '
      'physical APs (anchor_kind 0) with known ap_position'
    )
  feature_kwargs = _feature_kwargs(config, survey)

  net_opts = config_utils.options_from_config(
    tiny_nets.TrainOptions, config.nets, 'config.nets', seed=config.seed
  )
  big_opts = config_utils.options_from_config(
    tiny_nets.TrainOptions, config.big_nn, 'config.big_nn', seed=config.seed + 1
  )
  model = tiny_nets.MLP(net_opts.hidden_sizes, activation=net_opts.activation)
  big_model = tiny_nets.MLP(big_opts.hidden_sizes, activation=big_opts.activation)

  def training_set(opts, groups, group_ids):
    # The labels a section trains on: JADE's trusted ones (or all), optionally weighted
    # by their predicted precision (docs/mmwave.md, 'Label trust').
    weights = None
    if opts.label_weighting == 'inverse_variance':
      weights = tiny_nets.label_weights(jade_result.label_std_m, opts.label_std_floor_m)
    return tiny_nets.make_training_set(
      survey.aoa,
      jade_result.labels,
      groups,
      group_ids,
      opts.validation_fraction,
      config.seed,
      trusted=jade_result.trusted if opts.trusted_only else None,
      weights=weights,
    )

  labelled = jade_result.label_region >= 0
  usable = jade_result.trusted if net_opts.trusted_only else labelled
  # A region gets a net only with min_samples usable labels: an ill-conditioned region
  # may keep few (or none) of its labels, and a net on a handful of them would be a
  # confident wrong candidate for the tracker.
  per_region = np.sum(
    usable[None] & (jade_result.label_region[None] == jade_result.region_ids[:, None]), 1
  )
  net_regions = jade_result.region_ids[per_region >= config.jade.min_samples]
  for r, n in zip(jade_result.region_ids, per_region):
    if n < config.jade.min_samples:  # Logging only.
      logging.warning(
        'region %d: only %d usable labels (< config.jade.min_samples = %d): no net',
        r,
        n,
        config.jade.min_samples,
      )
  if len(net_regions) == 0:
    raise reader.MeasurementError(
      f'{survey_path}: no region has {config.jade.min_samples} trusted JADE labels '
      f'(regions: {jade_result.status}, usable labels per region: '
      f'{dict(zip(jade_result.region_ids.tolist(), per_region.tolist()))})'
    )
  ts = training_set(net_opts, jade_result.label_region, net_regions)
  big_ts = training_set(big_opts, np.where(labelled, 0, -1), [0])

  ckpt = checkpointing.Checkpointer(checkpoint_dir) if checkpoint_dir else None
  stage = (
    runs.Stage(checkpoint_dir, 'nets', _nets_fingerprint(config, survey_path))
    if ckpt is not None
    else None
  )
  restored = None
  if ckpt is not None and config.resume and ckpt.latest_step() is not None:
    record = stage.result()
    if record is None:
      logging.info('checkpoint in %s is for another survey or settings: retraining', checkpoint_dir)
    else:
      restored = _try_restore(ckpt, record['step'], model, big_model, ts, big_ts)
  if restored is not None:
    bank, big_bank = restored
    logging.info('restored trained nets from %s (survey and settings unchanged)', checkpoint_dir)
  else:
    if stage is not None:
      stage.reset()  # The checkpoint is about to stop matching any record.
    t0 = time.perf_counter()
    bank = tiny_nets.train_bank(model, ts, net_opts, writer=writer, name='nets', **feature_kwargs)
    timing['nets'] = time.perf_counter() - t0
    t0 = time.perf_counter()
    big_bank = tiny_nets.train_bank(
      big_model, big_ts, big_opts, writer=writer, name='big_nn', **feature_kwargs
    )
    timing['big_nn'] = time.perf_counter() - t0
    if ckpt is not None:
      # Step = generation of trained nets: orbax refuses to overwrite an existing step
      # (even with force=True), and max_to_keep=1 drops the stale one.
      ckpt.save(
        (ckpt.latest_step() or 0) + 1,
        {'nets': _bank_state(bank), 'big_nn': _bank_state(big_bank)},
        {'region_ids': ts.region_ids.tolist()},
      )
      ckpt.wait()
      stage.finish({'step': ckpt.latest_step(), 'region_ids': ts.region_ids.tolist()})
  if ckpt is not None:
    ckpt.close()
  return SurveyFit(
    survey,
    region,
    source,
    jade_result,
    model,
    bank,
    big_model,
    big_bank,
    feature_kwargs,
    timing,
    restored=restored is not None,
  )


def _try_restore(ckpt, step, model, big_model, ts, big_ts):
  """The saved banks (the caller has checked they match the survey and settings)."""

  def abstract(m, t):
    k, _, num_anchors = t.aoa.shape
    params = jax.eval_shape(lambda: tiny_nets.init_bank(m, jax.random.PRNGKey(0), k, num_anchors))
    f32 = lambda *s: jax.ShapeDtypeStruct(s, jnp.float32)  # noqa: E731
    return flax.serialization.to_state_dict(
      tiny_nets.NetBank(
        params=params,
        label_mean=f32(k, 2),
        label_scale=f32(k),
        label_cov=f32(k, 2, 2),
        visibility_rate=f32(k, num_anchors),
        region_ids=jax.ShapeDtypeStruct((k,), jnp.int32),
      )
    )

  target = {'nets': abstract(model, ts), 'big_nn': abstract(big_model, big_ts)}
  try:
    state, _ = ckpt.restore(target, step=step)
  except Exception as e:  # A checkpoint of another shape: retrain rather than fail.
    logging.warning('ignoring checkpoint in %s: %s', ckpt.directory, e)
    return None
  banks = []
  for key in ('nets', 'big_nn'):
    s = state[key]
    banks.append(
      tiny_nets.NetBank(
        params=s['params'],
        label_mean=jnp.asarray(s['label_mean']),
        label_scale=jnp.asarray(s['label_scale']),
        label_cov=jnp.asarray(s['label_cov']),
        visibility_rate=jnp.asarray(s['visibility_rate']),
        region_ids=jnp.asarray(s['region_ids']),
      )
    )
  return tuple(banks)


def track_trajectory(
  config: ml_collections.ConfigDict, fit: SurveyFit, trajectory: reader.Measurements
) -> dict:
  """Runs every switching variant and the baselines on one trajectory (no ground truth).

  Returns ``{name: {'position': [T, 2], ...}}`` for the variants in
  ``SWITCHING_VARIANTS`` (plus their chosen ``net``, ``filtered`` and offline
  ``smoothed`` states, ``nis``), ``big_nn``, ``jade_alone`` (each step's own fit against
  JADE's anchor map), ``jade_kalman`` (a constant-velocity Kalman filter over those fixes,
  gated like the tracker), plus ``candidates [T, K, 2]`` of every net.
  """
  reader.check_compatible(fit.survey, trajectory)
  if trajectory.time_s is None:
    raise reader.MeasurementError(
      f'{trajectory.path}: required dataset "time_s" is missing (a trajectory needs timestamps)'
    )
  feats = features_lib.encode(trajectory.aoa, **fit.feature_kwargs)
  num_paths = jnp.asarray(features_lib.path_counts(trajectory.aoa))
  time_s = jnp.asarray(trajectory.time_s - trajectory.time_s[0], jnp.float32)
  opts = config_utils.options_from_config(
    tracker_lib.TrackerOptions, config.tracker, 'config.tracker'
  )
  result = {}
  jade_fix, cost = jade_alone(config, fit, trajectory.aoa, trajectory.visible)
  result['jade_alone'] = {'position': jade_fix, 'cost_per_path': cost}

  names = [v[0] for v in SWITCHING_VARIANTS]
  schemes = jnp.asarray([tracker_lib.SCHEMES.index(v[1]) for v in SWITCHING_VARIANTS])
  gates = jnp.asarray(
    [opts.visibility_gate_nats if v[2] else 0.0 for v in SWITCHING_VARIANTS], jnp.float32
  )
  thresholds = jnp.full((len(names),), opts.threshold, jnp.float32)
  extra = jnp.asarray(jade_fix[:, None], jnp.float32) if config.tracker.jade_candidate else None
  t0 = time.perf_counter()
  outs = jax.tree.map(
    np.asarray,
    tracker_lib.track_variants(
      fit.bank,
      feats,
      num_paths,
      time_s,
      thresholds,
      schemes,
      gates,
      extra,
      model=fit.model,
      opts=opts,
    ),
  )
  elapsed = time.perf_counter() - t0
  logging.info(
    'tracked %d steps x %d variants x %d candidate nets%s in %.2f s (incl. compilation)',
    len(num_paths),
    len(names),
    fit.bank.num_nets,
    ' + the JADE-map fit' if extra is not None else '',
    elapsed,
  )
  result.update({name: jax.tree.map(lambda x, i=i: x[i], outs) for i, name in enumerate(names)})
  for name in names:  # The headline output ('position'); both stay available.
    result[name]['estimate'] = result[name]['position']
    result[name]['position'] = result[name][headline_key(config)]
  result['candidates'] = outs['candidates'][0]
  result['big_nn'] = {
    'position': np.asarray(tiny_nets.predict_all(fit.big_model, fit.big_bank, feats)[0])
  }
  present = np.all(np.isfinite(jade_fix), -1)
  result['jade_kalman'] = jax.tree.map(
    np.asarray,
    tracker_lib.filter_candidates(
      jnp.asarray(np.where(present[:, None], jade_fix, 0.0)[:, None], jnp.float32),
      jnp.asarray(present[:, None]),
      jnp.zeros(len(present), jnp.int32),
      jnp.asarray(present) & (num_paths >= opts.min_paths),
      time_s,
      opts,
      noise_var=jnp.full((len(present), 1), opts.fit_noise_m**2, jnp.float32),
    ),
  )
  # A Kalman filter's output is its state (the tracker's headline is discussed in
  # docs/mmwave.md, 'Tracking').
  result['jade_kalman']['position'] = result['jade_kalman']['filtered']
  return result


HEADLINES = ('filtered', 'estimate')


def headline_key(config: ml_collections.ConfigDict) -> str:
  """Which tracker output is a switching variant's ``position`` (``config.tracker.headline``)."""
  headline = config.tracker.headline
  if headline not in HEADLINES:
    raise ValueError(f'config.tracker.headline must be one of {HEADLINES}, got {headline!r}')
  return headline


def jade_alone(
  config: ml_collections.ConfigDict,
  fit: SurveyFit,
  aoa: np.ndarray,
  visible: np.ndarray,
  anchors: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
  """Each step localised on its own against an anchor map: ``(position [T, 2], cost
  per path [T])``, NaN where fewer than 3 paths reach mapped anchors.

  ``anchors [M, 2]`` defaults to JADE's anchor map (the "JADE alone" baseline); the
  evaluation passes the file's true ``anchor_position`` for the reference row that knows
  the anchors. Starts: every net's label mean.
  """
  anchors = fit.jade.anchor_map if anchors is None else anchors
  known = np.all(np.isfinite(anchors), -1)
  pos, cost = jade.localize(
    jnp.asarray(aoa),
    jnp.asarray(visible & known[None]),
    jnp.asarray(anchors, jnp.float32),
    fit.bank.label_mean,
    num_iters=config.jade.localize_iters,
    scale=float(config.jade.robust_scale),
  )
  return np.asarray(pos), np.asarray(cost)


def evaluate_trajectory(
  fit: SurveyFit, trajectory: reader.Measurements, tracked: dict, config: ml_collections.ConfigDict
) -> tuple[dict, dict]:
  """Metrics against ground truth; returns ``(metrics, errors per method)``."""
  survey_truth = reader.read_ground_truth(fit.survey.path)
  traj_truth = reader.read_ground_truth(trajectory.path)
  if traj_truth.position is None:
    raise reader.MeasurementError(
      f'{trajectory.path}: dataset "position" is missing; '
      'evaluation needs the trajectory ground truth'
    )
  truth = traj_truth.position
  region_ids = np.asarray(fit.bank.region_ids)
  errs, methods = {}, {}
  true_net = None
  if fit.region_source == 'file' and traj_truth.region is not None:
    lookup = {int(r): i for i, r in enumerate(region_ids)}
    true_net = np.asarray([lookup.get(int(r), -1) for r in traj_truth.region])
  for name, _, _ in SWITCHING_VARIANTS:
    out = tracked[name]
    errs[name] = metrics_lib.errors(out['position'], truth)
    m = metrics_lib.error_summary(errs[name])
    m['filtered'] = metrics_lib.error_summary(metrics_lib.errors(out['filtered'], truth))
    m['estimate'] = metrics_lib.error_summary(metrics_lib.errors(out['estimate'], truth))
    m['predict_only_steps'] = int(np.sum(~out['updated']))
    m['gated_steps'] = int(np.sum(out['usable'] & ~out['updated']))
    m['switches'] = int(np.sum(np.diff(out['net']) != 0))
    m['jade_candidate_steps'] = int(np.sum(out['net'] >= fit.bank.num_nets))
    # Among the steps where a net (not the JADE-map fit) was chosen.
    on_net = (out['net'] >= 0) & (out['net'] < fit.bank.num_nets)
    m['true_net_fraction'] = (
      float(np.mean(out['net'][on_net] == true_net[on_net]))
      if true_net is not None and on_net.any()
      else None
    )
    methods[name] = m
    # The offline smoother uses future steps: a separate row, never the headline.
    errs[f'{name}_smoothed'] = metrics_lib.errors(out['smoothed'], truth)
    methods[f'{name}_smoothed'] = metrics_lib.error_summary(errs[f'{name}_smoothed'])
  if true_net is not None:
    cand = tracked['candidates']
    oracle = np.where(
      (true_net >= 0)[:, None], cand[np.arange(len(cand)), np.maximum(true_net, 0)], np.nan
    )
    errs['oracle'] = metrics_lib.errors(oracle, truth)
    methods['oracle'] = metrics_lib.error_summary(errs['oracle'])
  for name in ('big_nn', 'jade_alone', 'jade_kalman'):
    errs[name] = metrics_lib.errors(tracked[name]['position'], truth)
    methods[name] = metrics_lib.error_summary(errs[name])
  errs['jade_kalman_smoothed'] = metrics_lib.errors(tracked['jade_kalman']['smoothed'], truth)
  methods['jade_kalman_smoothed'] = metrics_lib.error_summary(errs['jade_kalman_smoothed'])
  if traj_truth.anchor_position is not None:
    # Reference (evaluation only): the per-step fit when the anchors are known exactly.
    ref, _ = jade_alone(config, fit, trajectory.aoa, trajectory.visible, traj_truth.anchor_position)
    errs['true_anchor_fit'] = metrics_lib.errors(ref, truth)
    methods['true_anchor_fit'] = metrics_lib.error_summary(errs['true_anchor_fit'])

  main = f'switching_{config.tracker.scheme}'
  if config.tracker.visibility_gate_nats <= 0:
    main += '_ungated'
  metrics = {'trajectory': dict(methods[main], method=main), 'methods': methods}

  jr = fit.jade
  jade_metrics = {'regions': {}, 'region_source': fit.region_source}
  labelled = jr.label_region >= 0
  e = (
    metrics_lib.errors(jr.labels, survey_truth.position)
    if survey_truth.position is not None
    else None
  )

  def label_stats(rows):
    # Labelled and trusted fractions of the rows; with ground truth, the label error of
    # all labelled, trusted and rejected labels (docs/mmwave.md, 'Label trust').
    def summary(m):
      return metrics_lib.error_summary(e[m]) if e is not None and m.any() else None

    out = {
      'labelled_fraction': float(labelled[rows].mean()) if rows.any() else None,
      'trusted_fraction': float(jr.trusted[rows].mean()) if rows.any() else None,
      'trusted': summary(rows & jr.trusted),
      'rejected': summary(rows & labelled & ~jr.trusted),
    }
    return dict(summary(rows & labelled) or {}, **out)

  everywhere = np.ones(len(labelled), bool)
  jade_metrics['survey'] = label_stats(everywhere)
  survey_region = np.asarray(fit.region)
  if survey_truth.anchor_position is not None:
    per_region = [
      np.linalg.norm(est - survey_truth.anchor_position[cols], axis=-1)
      for cols, est in zip(jr.anchor_index, jr.anchor_estimates)
    ]
    ae = np.concatenate(per_region) if per_region else np.zeros(0)
    kinds = np.concatenate([fit.survey.anchor_kind[c] for c in jr.anchor_index])
    jade_metrics['anchors'] = {
      'median_m': float(np.median(ae)),
      'p90_m': float(np.percentile(ae, 90)),
      'physical_median_m': float(np.median(ae[kinds == 0])),
      'virtual_median_m': float(np.median(ae[kinds == 1])) if np.any(kinds == 1) else None,
      'num_estimates': int(len(ae)),
    }
  for r, status in jr.status.items():
    jade_metrics['regions'][str(r)] = dict(
      jr.diagnostics.get(r, {}), status=status, labels=label_stats(survey_region == r)
    )
  metrics['jade'] = jade_metrics
  metrics['nets'] = {
    'num_nets': fit.bank.num_nets,
    'region_ids': region_ids.tolist(),
    'hidden_sizes': list(fit.model.hidden_sizes),
    'params_per_net': int(sum(np.prod(x.shape[1:]) for x in jax.tree.leaves(fit.bank.params))),
    'big_nn_params': int(sum(np.prod(x.shape[1:]) for x in jax.tree.leaves(fit.big_bank.params))),
    'num_features': int(features_lib.num_features(fit.survey.num_anchors)),
    'restored_from_checkpoint': fit.restored,
  }
  return metrics, errs


def _plots(
  workdir: str, fit: SurveyFit, trajectory, tracked: dict, errs: dict, main: str
) -> list[str]:
  floorplan = fit.survey.floorplan_dict() or trajectory.floorplan_dict()
  s_truth = reader.read_ground_truth(fit.survey.path)
  t_truth = reader.read_ground_truth(trajectory.path)
  jr = fit.jade
  paths = [
    os.path.join(workdir, n)
    for n in ('floor.png', 'floor_zoom.png', 'trajectory.png', 'error_cdf.png')
  ]
  region_anchors = list(zip(jr.region_ids.tolist(), jr.anchor_index, jr.anchor_estimates))
  for path, zoom in ((paths[0], False), (paths[1], True)):
    plots.plot_floor(
      path,
      floorplan=floorplan,
      ap_position=fit.survey.ap_position,
      anchor_truth=s_truth.anchor_position,
      anchor_kind=fit.survey.anchor_kind,
      region_anchors=region_anchors,
      labels=jr.labels,
      label_region=jr.label_region,
      zoom=zoom,
    )
  out = tracked[main]
  e = errs[main]
  plots.plot_trajectory(
    paths[2],
    floorplan=floorplan,
    truth=t_truth.position,
    estimate=out['position'],
    net=out['net'],
    net_regions=np.asarray(fit.bank.region_ids),
    title=f'{main}: {np.mean(e < 1):.1%} of steps under 1 m, median {np.median(e):.2f} m',
  )
  core_plots.error_cdf(
    paths[3],
    errs,
    title='Trajectory error CDF, every method',
    ylabel='fraction of steps',
    log_x=True,
    mark_m=1.0,
    xlim=(0.01, 30),
  )
  return paths


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict:
  """Generates or reads the data, fits, tracks, evaluates; writes metrics.json and PNGs."""
  workdir, writer = metric_writer.start_run(config, workdir)
  t_start = time.perf_counter()
  survey_path, trajectory_path, scenario = resolve_data(config, workdir)
  trajectory = reader.read_measurements(trajectory_path, require_time=True)
  fit = fit_models(
    config, survey_path, writer=writer, checkpoint_dir=os.path.join(workdir, 'checkpoints')
  )
  t0 = time.perf_counter()
  tracked = track_trajectory(config, fit, trajectory)
  fit.timing_s['tracking'] = time.perf_counter() - t0
  metrics, errs = evaluate_trajectory(fit, trajectory, tracked, config)
  metrics['data'] = dict(scenario, survey=survey_path, trajectory=trajectory_path)
  # What the readers' plausibility checks found (docs/schemas.md, 'Robustness').
  metrics['data']['validation'] = {
    'survey': fit.survey.validation,
    'trajectory': trajectory.validation,
  }
  metrics['timing_s'] = dict(fit.timing_s, total=time.perf_counter() - t_start)
  np.savez(
    os.path.join(workdir, 'trajectory_estimates.npz'),
    **{f'{k}_position': v['position'] for k, v in tracked.items() if k != 'candidates'},
    **{f'{n}_net': tracked[n]['net'] for n, _, _ in SWITCHING_VARIANTS},
    candidates=tracked['candidates'],
    jade_survey_labels=fit.jade.labels,
  )
  if config.plots:
    metrics['plots'] = _plots(
      workdir, fit, trajectory, tracked, errs, metrics['trajectory']['method']
    )
  runs.write_json(os.path.join(workdir, 'metrics.json'), metrics)
  summary = {k: (m['submeter_fraction'], m['median_m']) for k, m in metrics['methods'].items()}
  writer.write(0, {f'{k}/submeter_fraction': v[0] for k, v in summary.items()})
  logging.info(
    'trajectory (%s): %.1f%% under 1 m, median %.3f m, p90 %s m',
    metrics['trajectory']['method'],
    100 * metrics['trajectory']['submeter_fraction'],
    metrics['trajectory']['median_m'],
    metrics['trajectory']['p90_m'],
  )
  return metrics
