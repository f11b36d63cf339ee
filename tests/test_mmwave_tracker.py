"""Tracker: predict-only steps, the NIS switching rule, scan == vmapped batch of one, and
the whole tracker against a plain numpy Kalman-filter loop."""

import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from csiloc_jax.core import config_utils
from csiloc_jax.mmwave import features as features_lib
from csiloc_jax.mmwave import tiny_nets
from csiloc_jax.mmwave import tracker

# A linear "net" (no hidden layer) reading features directly lets the tests dictate each
# candidate: features are [x, y, visible]; net k answers (x, y) + offset_k.
MODEL = tiny_nets.MLP(hidden_sizes=(), activation='relu')
CONFIG = config_utils.load_config(
  os.path.join(
    os.path.dirname(os.path.dirname(os.path.abspath(__file__))), 'configs', 'mmwave_tiny.py'
  )
)


def _options(**overrides):
  """The config's tracker options, with ``overrides``."""
  return config_utils.options_from_config(
    tracker.TrackerOptions, CONFIG.tracker, 'config.tracker', **overrides
  )


def _bank(offsets, visibility_rate=None):
  k = len(offsets)
  kernel = jnp.tile(jnp.array([[1.0, 0.0], [0.0, 1.0], [0.0, 0.0]]), (k, 1, 1))
  params = {'Dense_0': {'kernel': kernel, 'bias': jnp.asarray(offsets, jnp.float32)}}
  rate = jnp.full((k, 1), 0.9) if visibility_rate is None else jnp.asarray(visibility_rate)
  return tiny_nets.NetBank(
    params=params,
    label_mean=jnp.zeros((k, 2)),
    label_scale=jnp.ones(k),
    label_cov=jnp.tile(jnp.eye(2) * 4, (k, 1, 1)),
    visibility_rate=rate,
    region_ids=jnp.arange(k),
  )


def _walk(n=40, dt=0.5, speed=1.0):
  t = np.arange(n) * dt
  pos = np.stack([speed * t, np.zeros(n)], -1)
  feats = np.concatenate([pos, np.ones((n, 1))], -1).astype(np.float32)
  return feats, t.astype(np.float32), pos


def test_selection_rule_on_hand_made_nis():
  nis = jnp.array([3.0, 0.5, 1.0])
  # Current net 0 is over the threshold: switch to the smallest NIS.
  assert int(tracker.select(0, nis, 2.0, 'nis')) == 1
  # At or under the threshold the current net is kept even if another is better.
  assert int(tracker.select(2, nis, 2.0, 'nis')) == 2
  assert int(tracker.select(0, jnp.array([2.0, 0.1, 0.1]), 2.0, 'nis')) == 0
  # Ineligible candidates are never chosen, and an ineligible current net is left.
  eligible = jnp.array([True, False, True])
  assert int(tracker.select(0, nis, 2.0, 'nis', eligible=eligible)) == 2
  assert int(tracker.select(1, jnp.array([1.5, 0.1, 0.9]), 2.0, 'nis', eligible=eligible)) == 2
  # 'fit_first': an eligible preferred candidate (the JADE-map fit) wins even where the
  # current net would be kept; without one, the 'nis' rule. 'nis' ignores preferences.
  pref = jnp.array([False, False, True])
  assert int(tracker.select(1, nis, 2.0, 'fit_first', preferred=pref)) == 2
  assert int(tracker.select(1, nis, 2.0, 'nis', preferred=pref)) == 1
  no_fit = jnp.array([True, True, False])
  assert int(tracker.select(0, nis, 2.0, 'fit_first', eligible=no_fit, preferred=pref)) == 1
  assert int(tracker.select(2, nis, 2.0, 'fit_first', eligible=no_fit, preferred=pref)) == 1
  with pytest.raises(ValueError, match='scheme'):
    tracker.select(0, nis, 2.0, 'nearest')


def test_mahalanobis_alone_is_fooled_but_the_euclidean_term_is_not():
  # Net 0's estimate sits at the centre of its own training labels but 6 m from where the
  # client just was; net 1's estimate is at the edge of its labels, 0.2 m away.
  cand = jnp.array([[0.0, 0.0], [12.0, 0.0]])
  mean = jnp.array([[0.0, 0.0], [10.0, 0.0]])
  cov = jnp.tile(jnp.eye(2), (2, 1, 1))
  prev = jnp.array([11.8, 0.0])
  d_m = np.asarray(tracker.mahalanobis(cand, mean, cov))
  assert d_m[0] < d_m[1]
  nis = jnp.array([9.0, 9.0])  # Both over threshold: the score decides.
  chosen = tracker.select(
    0,
    nis,
    2.0,
    'mahalanobis_euclidean',
    candidates=cand,
    previous=prev,
    label_mean=mean,
    label_cov=cov,
  )
  assert int(chosen) == 1


def test_correct_net_is_kept_and_a_jump_triggers_a_switch():
  feats, t, pos = _walk()
  # Net 0 is right for the first half; afterwards its answers jump 5 m away while net 1
  # (which was 5 m off) becomes right: emulate with per-step features.
  feats = feats.copy()
  bank = _bank([[0.0, 0.0], [0.0, 5.0]])
  feats[20:, 1] -= 5.0  # From step 20 net 0 says y - 5, net 1 says y.
  track = jax.jit(tracker.make_tracker(MODEL, _options(threshold=2.0)))
  out = jax.tree.map(np.asarray, track(bank, feats, np.full(40, 5), t))
  assert np.all(out['net'][:20] == 0)
  assert np.all(out['net'][21:] == 1)
  err = np.linalg.norm(out['position'] - pos, axis=-1)
  assert err[:20].max() < 1e-4 and err[21:].max() < 1e-4


def test_steps_with_too_few_paths_are_predict_only():
  feats, t, pos = _walk()
  num_paths = np.full(40, 5)
  num_paths[[10, 11, 12]] = 2  # Fewer than min_paths = 3.
  feats = feats.copy()
  feats[[10, 11, 12], :2] = 1e3  # Garbage the tracker must not use.
  bank = _bank([[0.0, 0.0], [0.0, 30.0]])
  track = jax.jit(tracker.make_tracker(MODEL, _options()))
  out = jax.tree.map(np.asarray, track(bank, feats, num_paths, t))
  assert not out['updated'][10:13].any() and out['updated'][:10].all()
  assert np.all(out['net'][10:13] == out['net'][9])
  # Constant velocity: the prediction continues the walk (1 m/s, 0.5 s steps).
  np.testing.assert_allclose(out['position'][10:13], pos[10:13], atol=0.15)
  assert np.all(np.isfinite(out['position']))


def test_start_waits_for_a_usable_step_and_picks_by_received_paths():
  feats, t, _ = _walk(10)
  num_paths = np.array([0, 1] + [5] * 8)
  # Net 1 has always seen the single path, net 0 rarely: net 1 starts.
  bank = _bank([[0.0, 0.0], [0.0, 0.0]], visibility_rate=[[0.05], [0.95]])
  out = jax.tree.map(np.asarray, tracker.make_tracker(MODEL, _options())(bank, feats, num_paths, t))
  assert np.isnan(out['position'][:2]).all() and list(out['net'][:2]) == [-1, -1]
  assert out['net'][2] == 1


def test_scan_over_a_trajectory_equals_a_vmapped_batch_of_one():
  feats, t, _ = _walk()
  rng = np.random.default_rng(0)
  feats = feats + np.concatenate([rng.normal(0, 0.3, (40, 2)), np.zeros((40, 1))], -1)
  bank = _bank([[0.0, 0.0], [0.0, 3.0], [2.0, 0.0]])
  num_paths = np.full(40, 4)
  num_paths[7] = 1
  track = tracker.make_tracker(MODEL, _options(scheme='mahalanobis_euclidean'))
  single = jax.jit(track)(bank, feats, num_paths, t)
  batched = jax.jit(jax.vmap(track, in_axes=(None, 0, 0, 0)))(
    bank, feats[None], num_paths[None], t[None]
  )
  for key in single:
    np.testing.assert_allclose(
      np.asarray(batched[key][0]), np.asarray(single[key]), rtol=1e-5, atol=1e-5, err_msg=key
    )
  # Thresholds and schemes are traced, so one compiled tracker sweeps them.
  many = jax.jit(jax.vmap(track, in_axes=(None, None, None, None, 0, 0)))(
    bank, feats, num_paths, t, jnp.array([2.0, 2.0]), jnp.array([0, 1])
  )
  np.testing.assert_allclose(
    np.asarray(many['position'][1]), np.asarray(single['position']), atol=1e-5
  )


def _reference_track(bank, feats, num_paths, time_s, opts, scheme, gate, extra=None):
  """The tracker as a plain per-step loop in float64: numpy forward pass of every net,
  the 4x4 Kalman filter with matrix products and solves, the rule of the module
  docstring (visibility gate, NIS gate, re-acquisition), then a textbook 4x4
  Rauch-Tung-Striebel pass. Independent of the library's implementation (shared:
  nothing but inputs)."""
  layers = [
    jax.tree.map(lambda w: np.asarray(w, np.float64), bank.params[name])
    for name in sorted(bank.params, key=lambda n: int(n.split('_')[1]))
  ]
  mean, scale = np.asarray(bank.label_mean, np.float64), np.asarray(bank.label_scale, np.float64)
  cov = np.asarray(bank.label_cov, np.float64)
  rate = np.asarray(bank.visibility_rate, np.float64)
  k, m = len(mean), feats.shape[-1] // 3
  r2, q, v2 = opts.measurement_noise_m**2, opts.process_noise, opts.initial_speed_mps**2
  nis_gate = opts.nis_gate if opts.nis_gate > 0 else np.inf
  reacquire = opts.reacquire_steps if opts.reacquire_steps > 0 else np.inf
  h = np.eye(2, 4)
  x, p, net, prev, started, coast = np.zeros(4), np.eye(4), -1, np.zeros(2), False, 0
  n = len(feats)
  num_cand = k + (0 if extra is None else extra.shape[1])
  out = {
    'position': np.full((n, 2), np.nan),
    'net': np.full(n, -1),
    'nis': np.full((n, num_cand), np.nan),
  }
  filt = [None] * n  # (x, P, x^-, P^-, F, reset) per step, for the smoother.
  for t in range(n):
    dt = float(time_s[t] - time_s[max(t - 1, 0)])
    f = np.eye(4)
    f[0, 2] = f[1, 3] = dt
    qm = q * np.block(
      [[dt**3 / 3 * np.eye(2), dt**2 / 2 * np.eye(2)], [dt**2 / 2 * np.eye(2), dt * np.eye(2)]]
    )
    x_pred, p_pred = f @ x, f @ p @ f.T + qm
    cand = np.zeros((k, 2))
    for j in range(k):
      a = feats[t].astype(np.float64)
      for i, layer in enumerate(layers):
        a = a @ layer['kernel'][j] + layer['bias'][j]
        a = np.maximum(a, 0.0) if i < len(layers) - 1 else a
      cand[j] = mean[j] + scale[j] * a
    vis = feats[t, 2 * m :] > 0
    loglik = np.sum(np.where(vis, np.log(rate), np.log1p(-rate)), -1)
    eligible = loglik >= loglik.max() - gate if gate > 0 else np.ones(k, bool)
    maha = np.array(
      [np.sqrt((cand[j] - mean[j]) @ np.linalg.solve(cov[j], cand[j] - mean[j])) for j in range(k)]
    )
    noise = np.full(k, r2)  # Each candidate's measurement variance.
    if extra is not None:
      present = np.isfinite(extra[t]).all(-1)
      cand = np.concatenate([cand, np.where(present[:, None], extra[t], 0.0)])
      eligible = np.concatenate([eligible, present])
      maha = np.concatenate([maha, np.zeros(len(present))])
      noise = np.concatenate([noise, np.full(len(present), opts.fit_noise_m**2)])
    s_all = [h @ p_pred @ h.T + r * np.eye(2) for r in noise]
    nis = np.array([nu @ np.linalg.solve(s, nu) for nu, s in zip(cand - x_pred[:2], s_all)])
    out['nis'][t] = nis
    plausible = eligible & (nis <= nis_gate)
    is_fit = np.arange(len(cand)) >= k  # The JADE-map fit's column(s).
    fits = plausible & is_fit  # Plausible JADE-map fits.
    if scheme in ('nis', 'fit_first'):
      score = nis
    else:
      score = maha + opts.euclidean_weight * np.linalg.norm(cand - prev, axis=-1)
    restart = not started or coast >= reacquire
    if restart and scheme == 'fit_first' and (eligible & is_fit).any():
      chosen = int(np.argmax(eligible & is_fit))
    elif restart:
      chosen = int(np.argmax(loglik))
    elif scheme == 'fit_first' and fits.any():
      chosen = int(np.argmin(np.where(fits, nis, np.inf)))
    elif nis[net] <= opts.threshold and plausible[net]:
      chosen = net
    else:
      chosen = int(np.argmin(np.where(plausible, score, np.inf)))
    reset = False
    if num_paths[t] >= opts.min_paths and (restart or plausible.any()):
      z = cand[chosen]
      if not restart:
        gain = p_pred @ h.T @ np.linalg.inv(s_all[chosen])
        x, p = x_pred + gain @ (z - x_pred[:2]), (np.eye(4) - gain @ h) @ p_pred
      else:
        r = noise[chosen]
        x, p, reset = np.concatenate([z, np.zeros(2)]), np.diag([r, r, v2, v2]), True
      net, prev, started, coast = chosen, z, True, 0
      out['position'][t] = z
    elif started:
      x, p = x_pred, p_pred
      out['position'][t] = x_pred[:2]
      coast += int(num_paths[t] >= opts.min_paths)
    out['net'][t] = net
    filt[t] = (x.copy(), p.copy(), x_pred, p_pred, f, reset, started)
  smoothed = np.full((n, 2), np.nan)
  xs, ps = filt[-1][0], filt[-1][1]
  smoothed[-1] = xs[:2] if filt[-1][6] else np.nan
  for t in range(n - 2, -1, -1):
    x, p, _, _, _, _, started = filt[t]
    _, _, x_pn, p_pn, f_n, reset_n, _ = filt[t + 1]
    if reset_n:
      xs, ps = x, p
    else:
      c = p @ f_n.T @ np.linalg.inv(p_pn)
      xs, ps = x + c @ (xs - x_pn), p + c @ (ps - p_pn) @ c.T
    smoothed[t] = xs[:2] if started else np.nan
  out['smoothed'] = smoothed
  return out


def test_tracker_matches_a_plain_numpy_kalman_loop():
  # A small random bank of two-hidden-layer nets on a random walk of 6 anchors' AoAs with
  # paths coming and going, uneven time steps and predict-only steps (before the start
  # too): every variant must make the reference's choices at every step.
  k, num_anchors, steps = 5, 6, 80
  rng = np.random.default_rng(3)
  model = tiny_nets.MLP(hidden_sizes=(16, 8), activation='relu')
  params = tiny_nets.init_bank(model, jax.random.PRNGKey(3), k, num_anchors)
  a = rng.normal(0, 1, (k, 2, 2))
  bank = tiny_nets.NetBank(
    params=params,
    label_mean=jnp.asarray(rng.uniform(0, 10, (k, 2)), jnp.float32),
    label_scale=jnp.asarray(rng.uniform(5, 12, k), jnp.float32),
    label_cov=jnp.asarray(a @ a.transpose(0, 2, 1) + 0.5 * np.eye(2), jnp.float32),
    visibility_rate=jnp.asarray(rng.uniform(0.1, 0.9, (k, num_anchors)), jnp.float32),
    region_ids=jnp.arange(k),
  )
  aoa = np.cumsum(rng.normal(0, 0.3, (steps, num_anchors)), 0) + rng.uniform(-3, 3, num_anchors)
  visible = rng.random((steps, num_anchors)) < 0.7
  visible[[0, 1, 30, 31, 32]] = False  # Predict-only steps (< min_paths).
  visible[[0, 30], :2] = True
  aoa = np.where(visible, aoa, np.nan).astype(np.float32)
  feats = np.asarray(features_lib.encode(aoa))
  num_paths = features_lib.path_counts(aoa)
  time_s = np.cumsum(rng.uniform(0.2, 0.8, steps)).astype(np.float32)
  # Without the innovation gate (the published rule), and with a tight gate, a short
  # re-acquisition and one extra candidate that is sometimes missing.
  extra = np.asarray(bank.label_mean)[None, :1] + rng.normal(0, 3, (steps, 1, 2))
  extra[rng.random(steps) < 0.3] = np.nan
  settings = [
    (_options(threshold=3.0, visibility_gate_nats=2.0, nis_gate=0.0, reacquire_steps=0), None),
    (
      _options(
        threshold=3.0, visibility_gate_nats=2.0, nis_gate=6.0, reacquire_steps=3, fit_noise_m=0.6
      ),
      extra,
    ),
  ]
  variants = [(s, g) for s in tracker.SCHEMES for g in (2.0, 0.0)]
  gated_steps = 0
  for opts, ext in settings:
    track = tracker.make_tracker(model, opts)
    ext_j = None if ext is None else jnp.asarray(ext, jnp.float32)
    # Traced scheme and gate, vmapped as the pipeline runs them ...
    traced = jax.jit(jax.vmap(track, in_axes=(None, None, None, None, None, 0, 0, None)))(
      bank,
      feats,
      num_paths,
      time_s,
      None,
      jnp.asarray([tracker.SCHEMES.index(s) for s, _ in variants]),
      jnp.asarray([g for _, g in variants], jnp.float32),
      ext_j,
    )
    # ... and the static defaults (the config's scheme, gate 2).
    static = jax.jit(track)(bank, feats, num_paths, time_s, extra=ext_j)
    default = variants.index((opts.scheme, 2.0))
    for i, (scheme, gate) in enumerate(variants):
      ref = _reference_track(bank, feats, num_paths, time_s, opts, scheme, gate, ext)
      switches = np.sum(np.diff(ref['net'][2:]) != 0)
      assert 3 <= switches <= steps // 2, (scheme, gate, switches)  # Keeps and switches.
      outs = [jax.tree.map(lambda x, i=i: np.asarray(x[i]), traced)]
      if i == default:
        outs.append(jax.tree.map(np.asarray, static))
      for out in outs:
        msg = f'{scheme}, gate {gate}, nis_gate {opts.nis_gate}'
        np.testing.assert_array_equal(out['net'], ref['net'], err_msg=msg)
        np.testing.assert_allclose(out['position'], ref['position'], atol=1e-4, err_msg=msg)
        np.testing.assert_allclose(out['smoothed'], ref['smoothed'], atol=2e-3, err_msg=msg)
        # Every candidate's NIS, the extra one's column included (where it is missing, the
        # NIS of its placeholder at the origin, as both sides compute it).
        np.testing.assert_allclose(out['nis'], ref['nis'], rtol=1e-3, atol=1e-3, err_msg=msg)
        gated_steps += int(np.sum(out['usable'] & ~out['updated']))
      if ext is not None:
        assert np.any(ref['net'] == k), 'the extra candidate is never chosen'
  assert gated_steps > 0, 'the innovation gate never rejected a step'


def test_gate_rejects_an_outlier_and_the_smoother_beats_the_filter():
  # A straight walk with 0.3 m noise and two gross outliers (the only candidate jumps
  # 20 m): the gated filter predicts through them; the smoother (offline) is closer to
  # the truth than the filter on average.
  feats, t, pos = _walk(60)
  rng = np.random.default_rng(1)
  feats = feats.copy()
  feats[:, :2] += rng.normal(0, 0.3, (60, 2))
  feats[[20, 40], 1] += 20.0
  bank = _bank([[0.0, 0.0]])
  out = jax.tree.map(
    np.asarray, jax.jit(tracker.make_tracker(MODEL, _options()))(bank, feats, np.full(60, 5), t)
  )
  assert not out['updated'][[20, 40]].any() and out['updated'].sum() == 58
  err = lambda x: np.linalg.norm(x - pos, axis=-1)  # noqa: E731
  assert err(out['position'])[[20, 40]].max() < 1.0
  assert err(out['smoothed'])[5:].mean() < err(out['filtered'])[5:].mean()
  # Without the gate the outliers are accepted.
  ungated = jax.jit(tracker.make_tracker(MODEL, _options(nis_gate=0.0)))(
    bank, feats, np.full(60, 5), t
  )
  assert np.asarray(ungated['updated']).all()


def test_a_lost_track_is_reacquired():
  # From step 20 the only candidate is 30 m away from the predicted walk: the gate
  # rejects it, and after reacquire_steps rejections the track restarts on it.
  feats, t, _ = _walk(40)
  feats = feats.copy()
  feats[20:, 1] += 30.0
  bank = _bank([[0.0, 0.0]])
  opts = _options(reacquire_steps=4)
  out = jax.tree.map(
    np.asarray, jax.jit(tracker.make_tracker(MODEL, opts))(bank, feats, np.full(40, 5), t)
  )
  assert not out['updated'][20:24].any() and out['updated'][24:].all()
  np.testing.assert_allclose(out['position'][24:, 1], 30.0, atol=1e-4)


def test_the_smoother_runs_only_when_asked_and_a_gate_under_one_still_gates():
  feats, t, _ = _walk(30)
  feats = feats.copy()
  feats[10, 1] += 3.0  # NIS well over 1, under the default gate
  bank = _bank([[0.0, 0.0]])
  args = (bank, feats, np.full(30, 5), t)
  assert 'smoothed' in tracker.make_tracker(MODEL, _options())(*args)
  assert 'smoothed' not in tracker.make_tracker(MODEL, _options(), smooth=False)(*args)
  # filter_candidates smooths by default (the baselines' Kalman filters call it so).
  cand = jnp.asarray(feats[:, None, :2])
  ones = jnp.ones((30, 1), bool)
  first = jnp.zeros(30, jnp.int32)
  usable = jnp.ones(30, bool)
  assert 'smoothed' in tracker.filter_candidates(cand, ones, first, usable, t, _options())
  # Any positive gate gates, also one under 1: the jump is rejected, and much more.
  tight = tracker.filter_candidates(cand, ones, first, usable, t, _options(nis_gate=0.5))
  loose = tracker.filter_candidates(cand, ones, first, usable, t, _options(nis_gate=0.0))
  assert np.asarray(loose['updated']).all()
  assert not np.asarray(tight['updated'])[10]
