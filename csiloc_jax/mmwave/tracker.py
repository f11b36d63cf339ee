"""Online tracking: all candidate nets per step, a Kalman filter, NIS-based switching.

Data flow: trajectory AoAs -> :func:`features.encode` -> :func:`make_tracker`'s
``track`` -> stitched trajectory (the chosen net's estimate at every step) + filtered
states + which net was chosen. One ``lax.scan`` runs the whole trajectory; inside each
step every net is evaluated in a single vmapped call (``tiny_nets.predict_all``). The
returned function is pure, so it can be ``vmap``-ed over many trajectories (same length)
and over thresholds.

Per step ``t`` (B.6 of PRODUCT.md):

1. Kalman predict with a constant-velocity state ``[x, y, vx, vy]``, white-acceleration
   process noise of spectral density ``q`` (m^2/s^3) and ``dt`` from ``time_s``.
2. If fewer than ``min_paths`` paths were received the step is *predict-only*: no net is
   trusted (two ADoAs, i.e. three paths, are the minimum for a 2-D fix), the current net
   is kept and the output is the predicted position.
3. Otherwise each candidate k gives ``y_k``; ``nu_k = y_k - H x^-``,
   ``S = H P^- H^T + R`` (``R = r^2 I``) and ``NIS_k = nu_k^T S^-1 nu_k``.
4. Selection: keep the current net while ``NIS_current <= threshold``; otherwise switch.
   Scheme ``'nis'`` switches to ``argmin_k NIS_k``. Scheme ``'mahalanobis_euclidean'``
   switches to ``argmin_k d_M(y_k; mu_k, Sigma_k) + w_e * |y_k - y_prev|`` where
   ``mu_k, Sigma_k`` are the mean and covariance of net k's training labels (a net's
   estimate far from the area it was trained on is suspect) and ``y_prev`` is the last
   stitched estimate (a wrong net can still answer *inside* its own region, which only
   the distance from the previous estimate exposes).
   Both schemes only consider *eligible* nets: those under whose training inputs the
   step's pattern of received paths is at most ``visibility_gate_nats`` less likely
   than under the best net's (independent Bernoulli paths per net). Without the gate
   (``visibility_gate_nats <= 0``, the letter's rule as written) a wrong net that
   answers smoothly keeps a small NIS, because the filter follows it, and the tracker
   never leaves it; the gate removes nets that have never seen inputs like this step's.
5. Kalman update with the chosen estimate.

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
from typing import Callable

import jax
import jax.numpy as jnp

from csiloc_jax.mmwave import tiny_nets

SCHEMES = ('nis', 'mahalanobis_euclidean')


@dataclasses.dataclass(frozen=True)
class TrackerOptions:
  """Mirrors ``config.tracker``."""
  scheme: str = 'nis'
  threshold: float = 2.0
  process_noise: float = 0.5
  measurement_noise_m: float = 0.3
  initial_speed_mps: float = 1.0
  min_paths: int = 3
  euclidean_weight: float = 1.0
  visibility_gate_nats: float = 10.0

  @classmethod
  def from_config(cls, config) -> 'TrackerOptions':
    return cls(**{f.name: config[f.name] for f in dataclasses.fields(cls) if f.name in config})


def _transition(dt):
  f = jnp.eye(4).at[0, 2].set(dt).at[1, 3].set(dt)
  return f


def _process_noise(dt, q):
  i2 = jnp.eye(2)
  return q * jnp.block([[dt ** 3 / 3 * i2, dt ** 2 / 2 * i2], [dt ** 2 / 2 * i2, dt * i2]])


def mahalanobis(points: jax.Array, mean: jax.Array, cov: jax.Array) -> jax.Array:
  """Distance of ``points [K, 2]`` to per-net Gaussians ``mean [K, 2]``, ``cov [K, 2, 2]``."""
  d = points - mean
  sol = jnp.linalg.solve(cov, d[..., None])[..., 0]
  return jnp.sqrt(jnp.maximum(jnp.sum(d * sol, -1), 0.0))


def scheme_index(scheme: str | int | jax.Array) -> int | jax.Array:
  """Index of a scheme in ``SCHEMES`` (a traced index passes through, so that one
  compiled tracker can be vmapped over schemes)."""
  if isinstance(scheme, str):
    if scheme not in SCHEMES:
      raise ValueError(f'tracker scheme must be one of {SCHEMES}, got {scheme!r}')
    return SCHEMES.index(scheme)
  return scheme


def select(current: jax.Array, nis: jax.Array, threshold: jax.Array,
           scheme: str | int | jax.Array, *,
           eligible: jax.Array | None = None, candidates: jax.Array | None = None,
           previous: jax.Array | None = None, label_mean: jax.Array | None = None,
           label_cov: jax.Array | None = None, euclidean_weight: float = 1.0) -> jax.Array:
  """The switching rule: keep ``current`` while its NIS <= threshold, else switch.

  ``eligible [K]`` (default: all) restricts both keeping and switching to candidates
  whose inputs are plausible for them (see ``visibility_gate_nats``).
  """
  if eligible is None:
    eligible = jnp.ones(nis.shape, bool)
  scheme_id = scheme_index(scheme)
  if isinstance(scheme_id, int) and scheme_id == 0:
    score = nis
  else:
    me_score = (mahalanobis(candidates, label_mean, label_cov) +
                euclidean_weight * jnp.linalg.norm(candidates - previous, axis=-1))
    score = jnp.where(scheme_id == 0, nis, me_score)
  best = jnp.argmin(jnp.where(eligible, score, jnp.inf))
  keep = (nis[current] <= threshold) & eligible[current]
  return jnp.where(keep, current, best).astype(jnp.int32)


def make_tracker(model: tiny_nets.MLP, opts: TrackerOptions) -> Callable:
  """Builds ``track(bank, feats [T, F], num_paths [T], time_s [T], threshold=None,
  scheme=None, gate=None) -> dict``.

  ``threshold``, ``scheme`` (name or index into ``SCHEMES``) and ``gate`` (the
  visibility gate in nats, <= 0 = off) default to ``opts`` and may be traced arrays, so
  one compiled tracker can be vmapped over trajectories, thresholds and schemes.

  The result holds ``position [T, 2]`` (stitched estimates; the prediction at
  predict-only steps), ``filtered [T, 2]``, ``net [T]`` (chosen net, -1 before the
  start), ``nis [T, K]``, ``updated [T]`` and ``candidates [T, K, 2]``.
  """
  scheme_index(opts.scheme)  # Fail early on a bad name.
  r2 = opts.measurement_noise_m ** 2
  h = jnp.eye(2, 4)

  def track(bank: tiny_nets.NetBank, feats: jax.Array, num_paths: jax.Array,
            time_s: jax.Array, threshold=None, scheme=None, gate=None) -> dict:
    threshold = jnp.asarray(opts.threshold if threshold is None else threshold, jnp.float32)
    scheme = scheme_index(opts.scheme if scheme is None else scheme)
    gate = jnp.asarray(opts.visibility_gate_nats if gate is None else gate, jnp.float32)
    m = feats.shape[-1] // 3
    dts = jnp.diff(time_s, prepend=time_s[:1]).astype(jnp.float32)

    def step(carry, inputs):
      x, p, net, prev, started = carry
      feat, n_paths, dt = inputs
      # 1. Predict (a no-op before the filter has started).
      f = _transition(dt)
      x_pred = f @ x
      p_pred = f @ p @ f.T + _process_noise(dt, opts.process_noise)
      # 3. All candidates in one vmapped call.
      cand = tiny_nets.predict_all(model, bank, feat)                 # [K, 2]
      s = h @ p_pred @ h.T + r2 * jnp.eye(2)
      nu = cand - x_pred[:2]
      nis = jnp.sum(nu * jnp.linalg.solve(s, nu.T).T, -1)
      # 4. Selection (or the start rule on the first usable step).
      loglik = tiny_nets.visibility_loglik(bank, feat[2 * m:] > 0)
      eligible = (gate <= 0) | (loglik >= jnp.max(loglik) - gate)
      chosen = select(jnp.maximum(net, 0), nis, threshold, scheme, eligible=eligible,
                      candidates=cand,
                      previous=prev, label_mean=bank.label_mean, label_cov=bank.label_cov,
                      euclidean_weight=opts.euclidean_weight)
      first = jnp.argmax(loglik).astype(jnp.int32)
      usable = n_paths >= opts.min_paths
      chosen = jnp.where(started, chosen, first)
      z = cand[chosen]
      # 5. Update.
      gain = p_pred @ h.T @ jnp.linalg.inv(s)
      x_upd = x_pred + gain @ (z - x_pred[:2])
      p_upd = (jnp.eye(4) - gain @ h) @ p_pred
      x_init = jnp.concatenate([z, jnp.zeros(2)])
      p_init = jnp.diag(jnp.array([r2, r2, opts.initial_speed_mps ** 2,
                                   opts.initial_speed_mps ** 2]))
      x_new = jnp.where(usable, jnp.where(started, x_upd, x_init), jnp.where(started, x_pred, x))
      p_new = jnp.where(usable, jnp.where(started, p_upd, p_init), jnp.where(started, p_pred, p))
      net_new = jnp.where(usable, chosen, net)
      out_pos = jnp.where(usable, z, jnp.where(started, x_pred[:2], jnp.nan))
      started_new = started | usable
      prev_new = jnp.where(usable, z, prev)
      out = {'position': out_pos, 'filtered': jnp.where(started_new, x_new[:2], jnp.nan),
             'net': net_new, 'nis': nis, 'updated': usable, 'candidates': cand}
      return (x_new, p_new, net_new, prev_new, started_new), out

    init = (jnp.zeros(4), jnp.eye(4), jnp.asarray(-1, jnp.int32), jnp.zeros(2),
            jnp.asarray(False))
    _, outs = jax.lax.scan(step, init, (feats, num_paths, dts))
    return outs

  return track
