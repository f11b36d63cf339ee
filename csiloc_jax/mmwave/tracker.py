"""Online tracking: all candidate nets per step, a Kalman filter, NIS-based switching.

Data flow: trajectory AoAs -> :func:`features.encode` -> :func:`make_tracker`'s
``track`` -> stitched trajectory (the chosen net's estimate at every step) + filtered
states + which net was chosen (``train.track_trajectory`` and ``sweep`` call it).
The candidates of every net at every step come first, in one vmapped call over the whole
trajectory (``tiny_nets.predict_all``: a net's estimate never depends on the filter), then
one ``lax.scan`` runs the filter and the switching rule (:func:`select`, the function
the tests check, is the one the scan calls). The returned function is pure, so it can
be ``vmap``-ed over many trajectories (same length) and over thresholds;
:func:`track_variants` is that vmap over (threshold, scheme, gate), compiled once per
model and options.

The method and why each rule is there: docs/mmwave.md ('Tracking'). Per step ``t``:

1. Kalman predict with a constant-velocity state ``[x, y, vx, vy]``, white-acceleration
   process noise of spectral density ``q`` (m^2/s^3) and ``dt`` from ``time_s``.
2. If fewer than ``min_paths`` paths were received the step is *predict-only*: no net is
   trusted (two ADoAs, i.e. three paths, are the minimum for a 2-D fix), the current net
   is kept and the output is the predicted position.
3. Otherwise each candidate k gives ``y_k``; ``nu_k = y_k - H x^-``,
   ``S_k = H P^- H^T + R_k`` and ``NIS_k = nu_k^T S_k^-1 nu_k``, with ``R_k = r_k^2 I``:
   ``measurement_noise_m`` for a net, ``fit_noise_m`` for the JADE-map fit.
4. Selection: keep the current net while ``NIS_current <= threshold``; otherwise switch.
   Scheme ``'nis'`` switches to ``argmin_k NIS_k``. Scheme ``'mahalanobis_euclidean'``
   switches to ``argmin_k d_M(y_k; mu_k, Sigma_k) + w_e * |y_k - y_prev|`` where
   ``mu_k, Sigma_k`` are the mean and covariance of net k's training labels (a net's
   estimate far from the area it was trained on is suspect) and ``y_prev`` is the last
   stitched estimate (a wrong net can still answer *inside* its own region, which only
   the distance from the previous estimate exposes).
   Scheme ``'fit_first'`` takes the per-step JADE-map fit (an extra candidate) whenever
   it is eligible and passes the innovation gate, and the ``'nis'`` rule otherwise.
   Every scheme only considers *eligible* nets: those under whose training inputs the
   step's pattern of received paths is at most ``visibility_gate_nats`` less likely
   than under the best net's (independent Bernoulli paths per net). Without the gate
   (``visibility_gate_nats <= 0``, the rule of Shastri et al. as written) a wrong net that
   answers smoothly keeps a small NIS, because the filter follows it, and the tracker
   never leaves it; the gate removes nets that have never seen inputs like this step's.
5. Kalman update with the chosen estimate and its own ``R_k``.

Start: the first step with enough paths picks the net whose *inputs* looked most like
this step's: the highest likelihood of the step's pattern of received paths under each
net's training data (paths as independent Bernoulli variables; every room sees its own
APs). The state starts at that net's estimate with zero velocity. (Starting from the
smallest Mahalanobis distance of the *estimates* does not work: a wrong net answers
from inside its own region, and once the filter follows a wrong net NIS keeps it
there.) Steps before the start output NaN (counted as failures by the metrics).
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Callable

import jax
import jax.numpy as jnp

from csiloc_jax.mmwave import tiny_nets

SCHEMES = ('nis', 'mahalanobis_euclidean', 'fit_first')
NIS, MAHALANOBIS_EUCLIDEAN, FIT_FIRST = range(len(SCHEMES))


@dataclasses.dataclass(frozen=True)
class TrackerOptions:
  """The fields of ``config.tracker`` (meaning and defaults: ``configs/mmwave_tiny.py``).

  No field has a default here; build them from the config, e.g. in a notebook::

    config = config_utils.load_config('configs/mmwave_tiny.py')
    options = config_utils.options_from_config(TrackerOptions, config.tracker,
                                               'config.tracker')
  """

  scheme: str
  threshold: float
  process_noise: float
  measurement_noise_m: float
  initial_speed_mps: float
  min_paths: int
  euclidean_weight: float
  visibility_gate_nats: float
  nis_gate: float
  reacquire_steps: int
  fit_noise_m: float


def mahalanobis(points: jax.Array, mean: jax.Array, cov: jax.Array) -> jax.Array:
  """Distance of ``points [..., K, 2]`` to per-net Gaussians ``mean [K, 2]``, ``cov [K, 2, 2]``.

  ``sqrt(d^T cov^-1 d)`` with the 2x2 inverse written out (adjugate over determinant):
  elementwise arithmetic that XLA fuses, rather than one LAPACK solve per matrix.
  """
  d0, d1 = jnp.moveaxis(points - mean, -1, 0)
  s00, s01, s10, s11 = cov[..., 0, 0], cov[..., 0, 1], cov[..., 1, 0], cov[..., 1, 1]
  quad = (d0 * (s11 * d0 - s01 * d1) + d1 * (s00 * d1 - s10 * d0)) / (s00 * s11 - s01 * s10)
  return jnp.sqrt(jnp.maximum(quad, 0.0))


def scheme_index(scheme: str | int | jax.Array) -> int | jax.Array:
  """Index of a scheme in ``SCHEMES`` (a traced index passes through, so that one
  compiled tracker can be vmapped over schemes)."""
  if isinstance(scheme, str):
    if scheme not in SCHEMES:
      raise ValueError(f'tracker scheme must be one of {SCHEMES}, got {scheme!r}')
    return SCHEMES.index(scheme)
  return scheme


def _is_nis(scheme_id: int | jax.Array) -> bool:
  """Whether the scheme statically scores by NIS alone ('nis' or 'fit_first'; then the
  Mahalanobis score is never computed)."""
  return isinstance(scheme_id, int) and scheme_id in (NIS, FIT_FIRST)


def select(
  current: jax.Array,
  nis: jax.Array,
  threshold: jax.Array,
  scheme: str | int | jax.Array,
  *,
  eligible: jax.Array | None = None,
  candidates: jax.Array | None = None,
  previous: jax.Array | None = None,
  label_mean: jax.Array | None = None,
  label_cov: jax.Array | None = None,
  euclidean_weight: float = 1.0,
  distance: jax.Array | None = None,
  preferred: jax.Array | None = None,
) -> jax.Array:
  """The switching rule: keep ``current`` while its NIS <= threshold, else switch.

  ``eligible [K]`` (default: all) restricts both keeping and switching to candidates
  whose inputs are plausible for them (see ``visibility_gate_nats``). The
  ``'mahalanobis_euclidean'`` score needs ``candidates``, ``previous`` and either
  ``label_mean`` and ``label_cov`` or their ``distance`` = :func:`mahalanobis`
  precomputed (the tracker computes it for every step before its scan). Scheme
  ``'fit_first'`` takes an eligible ``preferred [K]`` candidate (the per-step JADE-map fit)
  whenever there is one, and otherwise the ``'nis'`` rule among the rest.
  """
  if eligible is None:
    eligible = jnp.ones(nis.shape, bool)
  scheme_id = scheme_index(scheme)
  if _is_nis(scheme_id):
    score = nis
  else:
    if distance is None:
      distance = mahalanobis(candidates, label_mean, label_cov)
    me_score = distance + euclidean_weight * jnp.sqrt(jnp.sum((candidates - previous) ** 2, -1))
    score = jnp.where(scheme_id == MAHALANOBIS_EUCLIDEAN, me_score, nis)
  # Keep ``current`` while its NIS <= threshold (and it is eligible), else the eligible
  # candidate with the lowest score.
  best = jnp.argmin(jnp.where(eligible, score, jnp.inf))
  keep = (nis[current] <= threshold) & eligible[current]
  chosen = jnp.where(keep, current, best)
  if preferred is not None:
    first = eligible & preferred
    chosen = jnp.where(
      (scheme_id == FIT_FIRST) & first.any(), jnp.argmin(jnp.where(first, nis, jnp.inf)), chosen
    )
  return chosen.astype(jnp.int32)


def make_tracker(model: tiny_nets.MLP, opts: TrackerOptions, *, smooth: bool = True) -> Callable:
  """Builds ``track(bank, feats [T, F], num_paths [T], time_s [T], threshold=None,
  scheme=None, gate=None, extra=None) -> dict``.

  ``smooth=False`` leaves out the offline smoother (an online user has no use for it).
  ``threshold``, ``scheme`` (name or index into ``SCHEMES``) and ``gate`` (the
  visibility gate in nats, <= 0 = off) default to ``opts`` and may be traced arrays, so
  one compiled tracker can be vmapped over trajectories, thresholds and schemes.
  ``extra [T, E, 2]`` are more candidates that are not nets (the per-step ADoA fit
  against JADE's anchor map, ``train.track_trajectory``); NaN = none at that step. They
  follow the nets (candidate index K + e), are eligible whenever present, are never the
  start rule's pick, and score 0 on the Mahalanobis term (they have no training labels).

  The result holds ``position [T, 2]`` (stitched estimates; the prediction at
  predict-only steps), ``filtered [T, 2]``, ``smoothed [T, 2]`` (fixed-interval
  Rauch-Tung-Striebel over the whole trajectory: offline only, it uses future steps),
  ``net [T]`` (chosen candidate, -1 before the start), ``nis [T, C]``, ``updated [T]``
  (a candidate was accepted), ``usable [T]`` (enough paths) and ``candidates [T, K, 2]``
  (the nets' estimates).

  Two things keep the per-step work small (on XLA:CPU each operation left in a scan body
  costs a fixed dispatch on every step, so a small body matters more than its FLOPs):

  * Everything that depends only on the inputs is computed for all T steps before the
    scan: the nets' candidates (they never see the filter state, so this is one batched
    matmul per layer over the whole trajectory instead of T matrix-vector products),
    the visibility log-likelihoods, the gate, the start net and the Mahalanobis term.
  * With ``H = [I 0]``, ``R = r^2 I`` and a process noise and initial covariance that
    treat x and y alike, the 4x4 covariance stays ``[[a I, b I], [b I, c I]]`` at every
    step, so the filter carries the three scalars ``(a, b, c)``, ``S = (a + r^2) I`` and
    ``NIS_k = |nu_k|^2 / (a + r^2)``: a handful of fused scalar operations instead of
    small ``dot``s and a LAPACK inverse per step. (Equal to the 4x4 filter up to float
    rounding; ``tests/test_mmwave_tracker.py`` checks it against one.)
  """
  scheme_index(opts.scheme)  # Fail early on a bad name.

  def track(
    bank: tiny_nets.NetBank,
    feats: jax.Array,
    num_paths: jax.Array,
    time_s: jax.Array,
    threshold=None,
    scheme=None,
    gate=None,
    extra=None,
  ) -> dict:
    threshold = jnp.asarray(opts.threshold if threshold is None else threshold, jnp.float32)
    scheme_id = scheme_index(opts.scheme if scheme is None else scheme)
    gate = jnp.asarray(opts.visibility_gate_nats if gate is None else gate, jnp.float32)
    m = feats.shape[-1] // 3

    # Input-only quantities, all steps at once.
    nets = jnp.swapaxes(tiny_nets.predict_all(model, bank, feats), 0, 1)  # [T, K, 2]
    loglik = jnp.swapaxes(
      tiny_nets.visibility_loglik(bank, feats[..., 2 * m :] > 0), 0, 1
    )  # [T, K]
    eligible = (gate <= 0) | (loglik >= jnp.max(loglik, -1, keepdims=True) - gate)
    first = jnp.argmax(loglik, -1).astype(jnp.int32)  # The start rule's net.
    maha = (
      None if _is_nis(scheme_id) else mahalanobis(nets, bank.label_mean, bank.label_cov)
    )  # [T, K]
    cand = nets
    noise_var = jnp.full(eligible.shape, opts.measurement_noise_m**2, jnp.float32)
    preferred = None
    if extra is not None:
      present = jnp.all(jnp.isfinite(extra), -1)
      cand = jnp.concatenate([nets, jnp.where(present[..., None], extra, 0.0)], 1)
      eligible = jnp.concatenate([eligible, present], 1)
      noise_var = jnp.concatenate(
        [noise_var, jnp.full(present.shape, opts.fit_noise_m**2, jnp.float32)], 1
      )
      preferred = jnp.arange(cand.shape[1]) >= nets.shape[1]
      if maha is not None:
        maha = jnp.concatenate([maha, jnp.zeros(present.shape, maha.dtype)], 1)
    out = filter_candidates(
      cand,
      eligible,
      first,
      num_paths >= opts.min_paths,
      time_s,
      opts,
      threshold=threshold,
      scheme=scheme_id,
      distance=maha,
      noise_var=noise_var,
      preferred=preferred,
      smooth=smooth,
    )
    return {**out, 'candidates': nets}

  return track


def filter_candidates(
  cand: jax.Array,
  eligible: jax.Array,
  first: jax.Array,
  usable: jax.Array,
  time_s: jax.Array,
  opts: TrackerOptions,
  *,
  threshold: jax.Array | float | None = None,
  scheme: str | int | jax.Array | None = None,
  distance: jax.Array | None = None,
  noise_var: jax.Array | None = None,
  preferred: jax.Array | None = None,
  smooth: bool = True,
) -> dict:
  """The filter and the switching rule over any candidates: ``cand [T, C, 2]``,
  ``eligible [T, C]``, the start rule's pick ``first [T]``, ``usable [T]`` (enough paths)
  and ``time_s [T]``; ``distance [T, C]`` is the Mahalanobis term of the
  ``'mahalanobis_euclidean'`` scheme. :func:`make_tracker` calls it with the nets (and
  any extra candidates); with a single candidate it is a plain constant-velocity Kalman
  filter over those fixes (``train.track_trajectory``'s ``jade_kalman`` baseline).

  Gating (``opts.nis_gate`` > 0): only candidates with ``NIS <= nis_gate`` may be kept or
  chosen; a step where none is plausible is predict-only (the position output is the
  prediction). After ``opts.reacquire_steps`` such steps in a row the track is taken to
  be lost and restarts with the start rule, as at the first step. ``smooth=False`` skips
  the offline smoother (no ``smoothed`` output).
  """
  threshold = jnp.asarray(opts.threshold if threshold is None else threshold, jnp.float32)
  scheme_id = scheme_index(opts.scheme if scheme is None else scheme)
  r2 = opts.measurement_noise_m**2
  q = opts.process_noise
  v2 = opts.initial_speed_mps**2
  nis_gate = jnp.float32(opts.nis_gate if opts.nis_gate > 0 else jnp.inf)
  reacquire = opts.reacquire_steps if opts.reacquire_steps > 0 else jnp.iinfo(jnp.int32).max
  dts = jnp.diff(time_s, prepend=time_s[:1]).astype(jnp.float32)
  if distance is None:
    distance = jnp.zeros(eligible.shape, jnp.float32)
  if noise_var is None:
    noise_var = jnp.full(eligible.shape, r2, jnp.float32)

  def step(carry, inputs):
    x, (a, b, c), net, prev, started, coast = carry
    cand_t, maha_t, eligible_t, first_t, usable_t, dt, r2_t = inputs
    # 1. Predict: x^- = F x, P^- = F P F^T + Q blockwise (F = [[I, dt I], [0, I]],
    # Q = q [[dt^3/3 I, dt^2/2 I], [dt^2/2 I, dt I]]). Unused before the start.
    pos_pred = x[:2] + dt * x[2:]
    a_pred = a + dt * (2 * b + dt * c) + q * dt**3 / 3
    b_pred = b + dt * c + q * dt**2 / 2
    c_pred = c + q * dt
    # 3. NIS of every candidate; S = s I.
    s_all = a_pred + r2_t
    nu = cand_t - pos_pred
    nis = jnp.sum(nu * nu, -1) / s_all
    plausible = eligible_t & (nis <= nis_gate)
    # 4. Selection (or the start rule on the first usable step, or after losing track).
    chosen = select(
      jnp.maximum(net, 0),
      nis,
      threshold,
      scheme_id,
      eligible=plausible,
      candidates=cand_t,
      previous=prev,
      distance=maha_t,
      euclidean_weight=opts.euclidean_weight,
      preferred=preferred,
    )
    restart = ~started | (coast >= reacquire)
    if preferred is not None:
      # 'fit_first' also (re)starts on the JADE-map fit where there is one.
      fit_t = eligible_t & preferred
      first_t = jnp.where((scheme_id == FIT_FIRST) & fit_t.any(), jnp.argmax(fit_t), first_t)
    chosen = jnp.where(restart, first_t, chosen)
    accept = usable_t & (restart | plausible.any())
    z = cand_t[chosen]
    s = s_all[chosen]
    # 5. Update: K = P^- H^T S^-1 = [g_a I; g_b I], x = x^- + K (z - H x^-),
    # P = P^- - K H P^-.
    g_a, g_b = a_pred / s, b_pred / s
    innov = z - pos_pred
    x_upd = jnp.concatenate([pos_pred + g_a * innov, x[2:] + g_b * innov])
    cov_upd = (a_pred - g_a * a_pred, b_pred - g_a * b_pred, c_pred - g_b * b_pred)
    x_init = jnp.concatenate([z, jnp.zeros(2)])
    cov_init = (r2_t[chosen], jnp.float32(0.0), jnp.float32(v2))
    x_pred = jnp.concatenate([pos_pred, x[2:]])
    reset = accept & restart
    x_new = jnp.where(accept, jnp.where(restart, x_init, x_upd), jnp.where(started, x_pred, x))
    cov_new = tuple(
      jnp.where(accept, jnp.where(restart, init, upd), jnp.where(started, pred, old))
      for upd, init, pred, old in zip(cov_upd, cov_init, (a_pred, b_pred, c_pred), (a, b, c))
    )
    net_new = jnp.where(accept, chosen, net)
    out_pos = jnp.where(accept, z, jnp.where(started, pos_pred, jnp.nan))
    started_new = started | accept
    prev_new = jnp.where(accept, z, prev)
    coast_new = jnp.where(accept, 0, coast + (usable_t & started).astype(jnp.int32))
    out = {
      'position': out_pos,
      'filtered': jnp.where(started_new, x_new[:2], jnp.nan),
      'net': net_new,
      'nis': nis,
      'updated': accept,
      # For the smoother: the filtered and predicted moments, and where the track began.
      'state': x_new,
      'cov': jnp.stack(cov_new),
      'pred_state': x_pred,
      'pred_cov': jnp.stack([a_pred, b_pred, c_pred]),
      'reset': reset,
      'started': started_new,
    }
    return (x_new, cov_new, net_new, prev_new, started_new, coast_new), out

  # Before the start P = I (a = c = 1, b = 0): only the ``nis`` output sees it.
  one, zero = jnp.ones((), jnp.float32), jnp.zeros((), jnp.float32)
  init = (
    jnp.zeros(4),
    (one, zero, one),
    jnp.asarray(-1, jnp.int32),
    jnp.zeros(2),
    jnp.asarray(False),
    jnp.asarray(0, jnp.int32),
  )
  _, outs = jax.lax.scan(step, init, (cand, distance, eligible, first, usable, dts, noise_var))
  moments = [outs.pop(k) for k in ('state', 'cov', 'pred_state', 'pred_cov')]
  reset, started = outs.pop('reset'), outs.pop('started')
  outs['usable'] = usable
  if smooth:
    smoothed = rts_smooth(*moments, dts, reset)
    outs['smoothed'] = jnp.where(started[:, None], smoothed, jnp.nan)
  return outs


def rts_smooth(state, cov, pred_state, pred_cov, dts, reset) -> jax.Array:
  """Fixed-interval Rauch-Tung-Striebel smoother over the filter's moments: ``[T, 2]``.

  ``state [T, 4]`` / ``cov [T, 3]`` are the filtered moments, ``pred_state`` /
  ``pred_cov`` the predicted ones and ``dts [T]`` the step before each step; ``reset [T]``
  marks steps where the track (re)started, across which nothing is smoothed. The
  covariance structure of the filter (``[[a I, b I], [b I, c I]]``) makes every gain
  a 2x2 matrix shared by x and y.
  """

  # The smoothed means need only the filtered and predicted covariances (the gains), not
  # the smoothed covariance, which no output uses: the backward pass carries the mean.
  def back(xs_next, inputs):
    x, p, xp_next, pp_next, dt_next, reset_next = inputs
    a, b, c = p[0], p[1], p[2]
    a2, b2, c2 = pp_next[0], pp_next[1], pp_next[2]
    det = a2 * c2 - b2 * b2
    # Gain C = P F^T (P^-_{t+1})^-1 on each axis, F = [[1, dt], [0, 1]].
    f00, f01 = a + dt_next * b, b
    f10, f11 = b + dt_next * c, c
    g00 = (f00 * c2 - f01 * b2) / det
    g01 = (f01 * a2 - f00 * b2) / det
    g10 = (f10 * c2 - f11 * b2) / det
    g11 = (f11 * a2 - f10 * b2) / det
    dpos = xs_next[:2] - xp_next[:2]
    dvel = xs_next[2:] - xp_next[2:]
    xs = x + jnp.concatenate([g00 * dpos + g01 * dvel, g10 * dpos + g11 * dvel])
    # No smoothing into a step whose successor restarts the track (another track).
    xs = jnp.where(reset_next, x, xs)
    return xs, xs

  inputs = (
    state[:-1],
    cov[:-1],
    pred_state[1:],
    pred_cov[1:],
    dts[1:],
    reset[1:],
  )
  _, xs = jax.lax.scan(back, state[-1], inputs, reverse=True)
  return jnp.concatenate([xs, state[-1:]], 0)[:, :2]


@functools.partial(jax.jit, static_argnames=('model', 'opts'))
def track_variants(
  bank: tiny_nets.NetBank,
  feats: jax.Array,
  num_paths: jax.Array,
  time_s: jax.Array,
  thresholds: jax.Array,
  schemes: jax.Array,
  gates: jax.Array,
  extra: jax.Array | None = None,
  *,
  model: tiny_nets.MLP,
  opts: TrackerOptions,
) -> dict:
  """One trajectory tracked under V variants at once: ``thresholds``, ``schemes``
  (indices into ``SCHEMES``) and ``gates`` are ``[V]``; every output gains a leading V.
  ``extra [T, E, 2]``: candidates that are not nets, as in :func:`make_tracker`.

  One compiled scan, vmapped over the variants; ``jax.jit`` caches it per model,
  options and shapes, so a sweep or a resumed run does not recompile.
  """
  track = make_tracker(model, opts)
  return jax.vmap(track, in_axes=(None, None, None, None, 0, 0, 0, None))(
    bank, feats, num_paths, time_s, thresholds, schemes, gates, extra
  )
