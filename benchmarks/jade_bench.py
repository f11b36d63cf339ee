"""``jade`` row: the vectorized JADE solver vs SciPy ``least_squares`` on the same cost.

Problem: the default survey (``mmwave.simulator`` on the default floor with the
``configs/mmwave_tiny.py`` scenario: 300 samples per room, 5 deg AoA noise), cut into
per-region problems by ``jade.build_problems`` with the config's JADE options.

Ours: ``jade.solve_problems`` — one jit-compiled Levenberg-Marquardt program vmapped
over regions and restarts (compilation excluded; it is reported separately).

Reference: what a SciPy user would write for the same model. Per region and per
restart, ``scipy.optimize.least_squares`` over (anchors, client positions, headings)
with the same residual (the chord ``2 sin(r/2)`` of the wrapped angle error), the same
robust loss (SciPy's ``loss='cauchy', f_scale=robust_scale`` is exactly the library's
``0.5 s^2 log(1 + (f/s)^2)``), an analytic Jacobian (dense with the exact solver for
small problems, sparse with LSMR for large ones: the fastest settings we found, see
``DENSE_MAX_UNKNOWNS``; the default finite-difference Jacobian would be far slower),
default tolerances, started from the *same* initial guesses (``jade._initial_guess`` with the
same PRNG keys as ``solve_problems``); the lowest-cost restart wins, as in ours.

"To the same final cost": both solutions are scored with one float64 cost function;
the row reports both per-region costs and their largest relative gap.
"""

from __future__ import annotations

import os
import statistics
import time

from absl import logging
import jax
import jax.numpy as jnp
import numpy as np

from benchmarks import common

TARGET = 20.0
_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def robust_cost(anchors, clients, heading, theta, mask, scale) -> float:
  """The library's JADE cost evaluated in float64 (scores both solutions alike)."""
  from csiloc_jax.mmwave import jade  # pylint: disable=g-import-not-at-top

  with jax.enable_x64(True):
    args = (np.asarray(x, np.float64) for x in (anchors, clients, heading, theta))
    return float(jade._cost(*args, np.asarray(mask), scale))  # pylint: disable=protected-access


class ScipyJade:
  """One region's problem for ``least_squares``: unknowns [anchors | clients | headings]."""

  def __init__(self, theta: np.ndarray, mask: np.ndarray):
    self.n_idx, self.k_idx = np.nonzero(mask)
    self.theta = theta[self.n_idx, self.k_idx].astype(np.float64)
    self.num_k = theta.shape[1]
    self.num_n = theta.shape[0]
    rows = np.arange(len(self.theta))
    a_col = 2 * self.k_idx
    p_col = 2 * self.num_k + 2 * self.n_idx
    h_col = 2 * self.num_k + 2 * self.num_n + self.n_idx
    self.rows = np.concatenate([rows, rows, rows, rows, rows])
    self.cols = np.concatenate([a_col, a_col + 1, p_col, p_col + 1, h_col])
    self.num_unknowns = 2 * self.num_k + 3 * self.num_n

  def pack(self, anchors, clients, heading) -> np.ndarray:
    return np.concatenate([anchors.ravel(), clients.ravel(), heading]).astype(np.float64)

  def unpack(self, z):
    k2, n2 = 2 * self.num_k, 2 * self.num_n
    return z[:k2].reshape(-1, 2), z[k2 : k2 + n2].reshape(-1, 2), z[k2 + n2 :]

  def _geometry(self, z):
    from csiloc_jax.mmwave import geometry  # pylint: disable=g-import-not-at-top

    a, p, psi = self.unpack(z)
    d = a[self.k_idx] - p[self.n_idx]
    q = np.maximum(np.sum(d * d, -1), 1e-12)
    r = geometry.wrap(self.theta + psi[self.n_idx] - np.arctan2(d[:, 1], d[:, 0]))
    return d, q, r

  def residuals(self, z):
    _, _, r = self._geometry(z)
    return 2.0 * np.sin(0.5 * r)

  def jacobian(self, z):
    import scipy.sparse  # pylint: disable=g-import-not-at-top

    d, q, r = self._geometry(z)
    c = np.cos(0.5 * r)
    gx, gy = -d[:, 1] / q, d[:, 0] / q  # d beta / d anchor
    vals = np.concatenate([-c * gx, -c * gy, c * gx, c * gy, c])
    return scipy.sparse.csr_matrix(
      (vals, (self.rows, self.cols)), shape=(len(self.theta), self.num_unknowns)
    )


# Problems up to this many unknowns use SciPy's exact (dense SVD) trust-region solver,
# larger ones LSMR on the sparse Jacobian with Jacobian scaling: on this problem the
# fastest of the settings tried (exact, lsmr, lsmr + x_scale='jac', dogbox + lsmr;
# the timings are in benchmarks/README.md).
DENSE_MAX_UNKNOWNS = 400


def _scipy_solve(problem: ScipyJade, starts: list, scale: float) -> tuple[float, tuple, int]:
  from scipy.optimize import least_squares  # pylint: disable=g-import-not-at-top

  best, best_z, nfev = np.inf, None, 0
  if problem.num_unknowns <= DENSE_MAX_UNKNOWNS:
    kwargs = dict(jac=lambda z: problem.jacobian(z).toarray(), tr_solver='exact')
  else:
    kwargs = dict(jac=problem.jacobian, tr_solver='lsmr', x_scale='jac')
  for anchors, clients, heading in starts:
    res = least_squares(
      problem.residuals,
      problem.pack(anchors, clients, heading),
      method='trf',
      loss='cauchy' if scale > 0 else 'linear',
      f_scale=scale or 1.0,
      **kwargs,
    )
    nfev += res.nfev
    if res.cost < best:
      best, best_z = res.cost, res.x
  return best, problem.unpack(best_z), nfev


def _survey(quick: bool):
  from csiloc_jax.core import config_utils  # pylint: disable=g-import-not-at-top
  from csiloc_jax.mmwave import floorplan as floorplan_lib  # pylint: disable=g-import-not-at-top
  from csiloc_jax.mmwave import simulator  # pylint: disable=g-import-not-at-top

  config = config_utils.load_config(os.path.join(_ROOT, 'configs', 'mmwave_tiny.py'))
  scenario = simulator.scenario_kwargs(config.data)
  if quick:
    scenario['num_survey'] = 40
  sim = simulator.simulate(
    floorplan_lib.load_floorplan(scenario.pop('floorplan')),
    **dict(scenario, num_trajectory_steps=16),
  )
  return config, sim['survey']


def run(quick: bool) -> list[common.Row]:
  from csiloc_jax.mmwave import jade  # pylint: disable=g-import-not-at-top

  config, survey = _survey(quick)
  from csiloc_jax.core import config_utils  # pylint: disable=g-import-not-at-top

  quick_iters = {'num_restarts': 2, 'num_iters': 20} if quick else {}
  opts = config_utils.options_from_config(
    jade.JadeOptions, config.jade, 'config.jade', seed=config.seed, **quick_iters
  )
  problems = jade.build_problems(
    survey['aoa'],
    survey['region'],
    survey['anchor_ap'],
    survey['anchor_kind'],
    survey['ap_position'].astype(np.float64),
    opts,
  )
  theta, mask = problems.theta, problems.mask
  scale = float(opts.robust_scale)
  key = jax.random.PRNGKey(opts.seed)
  kwargs = dict(num_restarts=opts.num_restarts, num_iters=opts.num_iters, scale=scale)
  logging.info(
    'jade: %d regions, padded %s, %d restarts x %d iterations',
    len(problems.region_ids),
    theta.shape,
    opts.num_restarts,
    opts.num_iters,
  )

  compile_s, sol = common.timed(
    lambda: jax.block_until_ready(jade.solve_problems(key, theta, mask, **kwargs))
  )
  repeats = 2 if quick else 5
  ours_times = []
  for _ in range(repeats):
    t, sol = common.timed(
      lambda: jax.block_until_ready(jade.solve_problems(key, theta, mask, **kwargs))
    )
    ours_times.append(t)
  sol = jax.tree.map(lambda x: np.asarray(x, np.float64), sol)

  # The same starts as solve_problems: split per region, then per restart.
  region_keys = jax.random.split(key, theta.shape[0])
  starts = []
  for r in range(theta.shape[0]):
    anchor_ok = jnp.asarray(mask[r].any(0))
    keys = jax.random.split(region_keys[r], opts.num_restarts)
    starts.append(
      [
        tuple(
          np.asarray(v, np.float64)
          for v in jade._initial_guess(  # pylint: disable=protected-access
            keys[s], jnp.asarray(theta[r]), jnp.asarray(mask[r]), anchor_ok
          )
        )
        for s in range(opts.num_restarts)
      ]
    )

  ours_cost = []
  for r in range(theta.shape[0]):
    sample_ok, anchor_ok = mask[r].any(1), mask[r].any(0)
    ours_cost.append(
      robust_cost(
        sol['anchors'][r][anchor_ok],
        sol['clients'][r][sample_ok],
        sol['heading'][r][sample_ok],
        theta[r][np.ix_(sample_ok, anchor_ok)].astype(np.float64),
        mask[r][np.ix_(sample_ok, anchor_ok)],
        scale,
      )
    )

  details = {
    'num_regions': int(theta.shape[0]),
    'padded_problem': list(theta.shape),
    'num_paths': int(mask.sum()),
    'num_restarts': opts.num_restarts,
    'num_iters': opts.num_iters,
    'compile_s': compile_s,
    'ours_all_s': ours_times,
    'ours_spread': common.spread(ours_times),
    'ours_cost_per_region': ours_cost,
  }
  if quick:
    details['shape_note'] = (
      f'quick: {theta.shape[1]} samples/region, {opts.num_restarts} restarts x {opts.num_iters} it'
    )
  ours = statistics.median(ours_times)
  if common.optional_import('scipy') is None:
    return [
      common.unavailable(
        'jade',
        's',
        'scipy is not installed (pip install -e .[bench])',
        ours=ours,
        target=TARGET,
        sense='time',
        **details,
      )
    ]

  ref_cost, ref_times, nfev = [], [], 0
  scipy_rounds = 1
  for rnd in range(scipy_rounds):
    t0 = time.perf_counter()
    costs = []
    for r in range(theta.shape[0]):
      sample_ok, anchor_ok = mask[r].any(1), mask[r].any(0)
      sub_theta = theta[r][np.ix_(sample_ok, anchor_ok)]
      sub_mask = mask[r][np.ix_(sample_ok, anchor_ok)]
      problem = ScipyJade(sub_theta, sub_mask)
      sub_starts = [(a[anchor_ok], p[sample_ok], h[sample_ok]) for a, p, h in starts[r]]
      _, (a, p, h), n = _scipy_solve(problem, sub_starts, scale)
      nfev += n if rnd == 0 else 0
      costs.append(robust_cost(a, p, h, sub_theta.astype(np.float64), sub_mask, scale))
    ref_times.append(time.perf_counter() - t0)
    ref_cost = costs
    logging.info('jade: scipy round %d: %.1f s', rnd, ref_times[-1])
  gaps = [(o - s) / max(abs(s), 1e-12) for o, s in zip(ours_cost, ref_cost)]
  details.update(
    reference_all_s=ref_times,
    reference_spread=common.spread(ref_times),
    reference_cost_per_region=ref_cost,
    reference_nfev=nfev,
    cost_relative_gap_max=max(gaps),
    same_final_cost=bool(max(gaps) <= 1e-3),
    note='cost gap > 0: ours ended higher than SciPy; < 0: lower',
  )
  return [
    common.Row(
      'jade', ours, statistics.median(ref_times), 's', sense='time', target=TARGET, details=details
    )
  ]
