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

import inspect
import math
import os
import statistics
import time

from absl import logging
import jax
import jax.numpy as jnp
import numpy as np

from benchmarks import common

TARGET = 20.0  # warm: compiled once, timed again
TARGET_COLD = 5.0  # cold: tracing and compilation included
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


# SciPy settings a user would try, each a function of one region's problem -> the
# ``least_squares`` keyword arguments. 'hybrid' uses the exact (dense SVD) trust-region
# solver up to ``DENSE_MAX_UNKNOWNS`` unknowns and LSMR with Jacobian scaling above: the
# fastest single-process choice when it was first measured (one 300-sample region and
# start: exact 24 s, lsmr 12 s, lsmr + x_scale='jac' 6 s, dogbox + lsmr 86 s; a 40-sample
# region: exact 0.3 s, lsmr 3.3 s). Every run tries them all again (``sweep``).
DENSE_MAX_UNKNOWNS = 400


def _dense(problem):
  return dict(method='trf', jac=lambda z: problem.jacobian(z).toarray(), tr_solver='exact')


def _lsmr(problem, **extra):
  return dict(method='trf', jac=problem.jacobian, tr_solver='lsmr', **extra)


SETTINGS = {
  'hybrid': lambda pr: (
    _dense(pr) if pr.num_unknowns <= DENSE_MAX_UNKNOWNS else _lsmr(pr, x_scale='jac')
  ),
  'trf_lsmr_xscale_jac': lambda pr: _lsmr(pr, x_scale='jac'),
  'trf_lsmr': _lsmr,
  'trf_exact': _dense,
  'dogbox_lsmr': lambda pr: dict(_lsmr(pr), method='dogbox'),
}
# 'hybrid' again, with the (region, start) solves spread over one worker process per core
# (a pool started and warmed before timing): the reference's use of both cores, as ours
# uses them through XLA's threads.
POOLED = 'hybrid_pool'


def _least_squares_has_callback() -> bool:
  try:
    from scipy.optimize import least_squares  # pylint: disable=g-import-not-at-top
  except ImportError:
    return False
  return 'callback' in inspect.signature(least_squares).parameters


_HAS_CALLBACK = _least_squares_has_callback()


def _solve_one(
  problem: ScipyJade, start: tuple, scale: float, setting: str, deadline: float = math.inf
):
  """One start of one region: (cost, x, nfev) of ``least_squares``; cost None when the
  solve was stopped at ``deadline`` (a ``time.monotonic()`` instant, the same clock in
  the pool's worker processes)."""
  from scipy.optimize import least_squares  # pylint: disable=g-import-not-at-top

  def stop_at_deadline(intermediate_result):
    del intermediate_result
    if time.monotonic() > deadline:
      raise StopIteration  # least_squares returns with status -2.

  res = least_squares(
    problem.residuals,
    problem.pack(*start),
    loss='cauchy' if scale > 0 else 'linear',
    f_scale=scale or 1.0,
    # SciPy < 1.16 has no callback: there the deadline is checked between solves only.
    **({} if math.isinf(deadline) or not _HAS_CALLBACK else {'callback': stop_at_deadline}),
    **SETTINGS[setting](problem),
  )
  return (None if res.status == -2 else float(res.cost)), res.x, int(res.nfev)


def _warm_up_job(job):
  (theta, mask, start), scale = job
  _solve_one(ScipyJade(theta, mask), start, scale, 'hybrid')
  time.sleep(1.0)


def _solve_job(job):
  """Process-pool entry: (theta, mask, start, scale, setting, deadline) -> (cost, x, nfev)."""
  theta, mask, start, scale, setting, deadline = job
  return _solve_one(ScipyJade(theta, mask), start, scale, setting, deadline)


class ScipyReference:
  """Every region's problem as SciPy sees it, solvable under each setting.

  ``solve(setting)`` runs every (region, start), keeps the lowest-cost start per region,
  and returns ``(seconds, [(anchors, clients, heading)] per region, nfev)``; ``deadline_s``
  stops a setting early once it is clearly slower than one already timed.
  """

  def __init__(self, subproblems: list[tuple[np.ndarray, np.ndarray, list]], scale: float):
    self.subproblems = subproblems  # [(theta, mask, starts)] with the padding removed
    self.problems = [ScipyJade(t, m) for t, m, _ in subproblems]
    self.scale = scale
    self.pool = None

  def start_pool(self, workers: int):
    import concurrent.futures  # pylint: disable=g-import-not-at-top
    import multiprocessing  # pylint: disable=g-import-not-at-top

    # spawn: the parent has started JAX's threads, which fork does not copy safely.
    self.pool = concurrent.futures.ProcessPoolExecutor(
      workers, mp_context=multiprocessing.get_context('spawn')
    )
    # Warm every worker (imports, SciPy's first call): each warm-up job waits long enough
    # that no worker takes two.
    list(self.pool.map(_warm_up_job, [(self.smallest(), self.scale)] * workers))

  def smallest(self):
    """(theta, mask, first start) of the region with the fewest unknowns."""
    small = min(range(len(self.problems)), key=lambda r: self.problems[r].num_unknowns)
    theta, mask, starts = self.subproblems[small]
    return theta, mask, starts[0]

  def warm_up(self):
    """SciPy's first call in this process (imports, caches), left out of every timing."""
    theta, mask, start = self.smallest()
    _solve_one(ScipyJade(theta, mask), start, self.scale, 'hybrid')

  def close(self):
    if self.pool is not None:
      self.pool.shutdown()
      self.pool = None

  def solve(self, setting: str, deadline_s: float = math.inf):
    # XLA's worker threads spin for a while after a JAX call and would take a core from
    # SciPy: let them go idle first (not timed).
    time.sleep(0.5)
    t0 = time.perf_counter()
    # Each solve checks the deadline at every iteration, so a setting that cannot win is
    # stopped within one iteration of it, not at the end of a long solve.
    deadline = time.monotonic() + deadline_s
    jobs = [
      (r, (theta, mask, start, self.scale, 'hybrid' if setting == POOLED else setting, deadline))
      for r, (theta, mask, starts) in enumerate(self.subproblems)
      for start in starts
    ]
    best = [(math.inf, None)] * len(self.problems)
    nfev = 0
    if setting == POOLED:
      results = zip((r for r, _ in jobs), self.pool.map(_solve_job, [j for _, j in jobs]))
    else:
      results = (
        (r, _solve_one(self.problems[r], j[2], self.scale, setting, deadline)) for r, j in jobs
      )
    for r, (cost, x, n) in results:
      nfev += n
      if cost is None or time.perf_counter() - t0 > deadline_s:
        return None, None, nfev
      if cost < best[r][0]:
        best[r] = (cost, x)
    seconds = time.perf_counter() - t0
    return seconds, [p.unpack(x) for p, (_, x) in zip(self.problems, best)], nfev

  def costs(self, solution) -> list[float]:
    """Each region's float64 cost of a ``solve`` result."""
    return [
      robust_cost(a, p, h, theta.astype(np.float64), mask, self.scale)
      for (theta, mask, _), (a, p, h) in zip(self.subproblems, solution)
    ]


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


def _sweep(reference: ScipyReference, settings: list[str]) -> tuple[str, dict]:
  """Times every setting once; the fastest that reaches the lowest cost wins.

  A setting still running at twice the fastest finished time is stopped (recorded as
  such): it cannot win. "Reaches the lowest cost": its summed final cost is within
  ``1e-3`` (relative) of the lowest any setting reached -- a faster setting that stops in
  a worse minimum is not solving the same problem.
  """
  tried: dict[str, dict] = {}
  fastest = math.inf
  for setting in settings:
    seconds, solution, nfev = reference.solve(setting, deadline_s=2.0 * fastest)
    if seconds is None:
      tried[setting] = {'s': None, 'stopped_after_s': 2.0 * fastest, 'nfev': nfev}
      logging.info('jade: scipy %s stopped after %.1f s', setting, 2.0 * fastest)
      continue
    cost = float(sum(reference.costs(solution)))
    tried[setting] = {'s': seconds, 'cost': cost, 'nfev': nfev}
    fastest = min(fastest, seconds)
    logging.info('jade: scipy %s %.2f s, cost %.6g, %d evaluations', setting, seconds, cost, nfev)
  lowest = min(t['cost'] for t in tried.values() if t['s'] is not None)
  good = [n for n, t in tried.items() if t['s'] is not None and t['cost'] <= lowest * (1 + 1e-3)]
  return min(good, key=lambda n: tried[n]['s']), tried


def run(quick: bool) -> list[common.Row]:
  from csiloc_jax.core import config_utils  # pylint: disable=g-import-not-at-top
  from csiloc_jax.mmwave import jade  # pylint: disable=g-import-not-at-top

  config, survey = _survey(quick)
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

  def ours_solve():
    return jax.block_until_ready(jade.solve_problems(key, theta, mask, **kwargs))

  def ours_cold() -> float:
    jax.clear_caches()  # Trace and compile again, as the first call of a fresh process.
    return common.timed(ours_solve)[0]

  first_call_s, sol = common.timed(ours_solve)
  sol = jax.tree.map(lambda x: np.asarray(x, np.float64), sol)

  # SciPy gets the same starts as solve_problems: split per region, then per restart.
  region_keys = jax.random.split(key, theta.shape[0])
  subproblems, ours_cost = [], []
  for r in range(theta.shape[0]):
    sample_ok, anchor_ok = mask[r].any(1), mask[r].any(0)
    keys = jax.random.split(region_keys[r], opts.num_restarts)
    starts = []
    for s in range(opts.num_restarts):
      a, p, h = (
        np.asarray(v, np.float64)
        for v in jade._initial_guess(  # pylint: disable=protected-access
          keys[s], jnp.asarray(theta[r]), jnp.asarray(mask[r]), jnp.asarray(anchor_ok)
        )
      )
      starts.append((a[anchor_ok], p[sample_ok], h[sample_ok]))
    sub_theta = theta[r][np.ix_(sample_ok, anchor_ok)]
    sub_mask = mask[r][np.ix_(sample_ok, anchor_ok)]
    subproblems.append((sub_theta, sub_mask, starts))
    ours_cost.append(
      robust_cost(
        sol['anchors'][r][anchor_ok],
        sol['clients'][r][sample_ok],
        sol['heading'][r][sample_ok],
        sub_theta.astype(np.float64),
        sub_mask,
        scale,
      )
    )

  rounds = 2 if quick else 3
  details = {
    'num_regions': int(theta.shape[0]),
    'padded_problem': list(theta.shape),
    'num_paths': int(mask.sum()),
    'num_restarts': opts.num_restarts,
    'num_iters': opts.num_iters,
    'first_call_s': first_call_s,
    'ours_cost_per_region': ours_cost,
    'rounds': rounds,
  }
  if quick:
    details['shape_note'] = (
      f'quick: {theta.shape[1]} samples/region, {opts.num_restarts} restarts x {opts.num_iters} it'
    )
  if common.optional_import('scipy') is None:
    times = common.interleaved(
      {'cold': ours_cold, 'warm': lambda: common.timed(ours_solve)[0]}, rounds
    )
    why = 'scipy is not installed (pip install -e .[bench])'
    return [
      common.unavailable(
        name,
        's',
        why,
        ours=statistics.median(times[side]),
        target=target,
        sense='time',
        ours_all_s=times[side],
        **details,
      )
      for name, side, target in (('jade', 'warm', TARGET), ('jade_cold', 'cold', TARGET_COLD))
    ]

  reference = ScipyReference(subproblems, scale)
  workers = len(os.sched_getaffinity(0)) if hasattr(os, 'sched_getaffinity') else os.cpu_count()
  settings = list(SETTINGS)
  reference.warm_up()
  if workers and workers > 1:
    reference.start_pool(workers)
    settings.insert(1, POOLED)
  try:
    winner, tried = _sweep(reference, settings)
    solution = {}

    def reference_solve() -> float:
      seconds, solution['x'], _ = reference.solve(winner)
      return seconds

    times = common.interleaved(
      {
        'cold': ours_cold,
        'warm': lambda: common.timed(ours_solve)[0],
        'reference': reference_solve,
      },
      rounds,
    )
  finally:
    reference.close()
  ref_cost = reference.costs(solution['x'])
  gaps = [(o - s) / max(abs(s), 1e-12) for o, s in zip(ours_cost, ref_cost)]
  details.update(
    reference_settings={'tried': tried, 'fastest': winner, 'workers': workers},
    reference_cost_per_region=ref_cost,
    cost_relative_gap_max=max(gaps),
    same_final_cost=bool(max(gaps) <= 1e-3),
    note='cost gap > 0: ours ended higher than SciPy; < 0: lower',
    reference_all_s=times['reference'],
    reference_spread=common.spread(times['reference']),
  )
  ref = statistics.median(times['reference'])
  rows = []
  for name, side, target in (('jade', 'warm', TARGET), ('jade_cold', 'cold', TARGET_COLD)):
    logging.info('jade: %s %s', side, ', '.join(f'{t:.3g}' for t in times[side]))
    rows.append(
      common.Row(
        name,
        statistics.median(times[side]),
        ref,
        's',
        sense='time',
        target=target,
        details=dict(details, ours_all_s=times[side], ours_spread=common.spread(times[side])),
      )
    )
  return rows
