"""JADE: joint estimation of client and anchor positions from ADoAs alone (vectorized).

Data flow: survey :class:`~csiloc_jax.mmwave.reader.Measurements` + region labels
-> :func:`build_problems` (one padded problem per region) -> :func:`solve_problems`
(one jit-compiled Levenberg-Marquardt program, vmapped over regions and random restarts)
-> :func:`run_jade` fixes the gauge from ``ap_position`` -> survey labels (each with its
uncertainty and whether it is trusted) for the tiny networks, anchor estimates for the
plots and for :func:`localize` (the "JADE alone" baseline on a trajectory).
docs/mmwave.md ('JADE and its gauge') explains the method and its choices; the
algorithm is Palacios, Casari, Widmer, "JADE: Zero-knowledge device localization and
environment mapping for millimeter wave systems", INFOCOM 2017.

The model. A measured AoA is ``theta_tm = wrap(atan2(a_m - p_t) - psi_t + eps)``. The
unknowns of a region are its anchors ``a_m`` (physical and virtual alike: a virtual
anchor is an unknown point like any other; nothing about walls is assumed), the client
positions ``p_t`` and the headings ``psi_t``. Including ``psi_t`` as an unknown is the
same as fitting all ADoAs ``theta_tm - theta_tn``: the heading is a per-sample offset
that absorbs the common rotation, so only angle differences carry information. The
residual is the chord ``2 sin(r / 2)`` of the wrapped angle error ``r`` (smooth, equal to
``r`` for small errors, bounded for wrap-around) with a Cauchy robust weight.

The solver is bundle adjustment: the normal equations have one 3x3 block per sample
(position + heading) and 2x2 blocks per anchor, so each LM step eliminates the samples
(Schur complement) and solves a dense ``2K x 2K`` system in the anchors. The damping,
acceptance and step loop is :func:`_levenberg_marquardt`, shared with :func:`localize`
(there the only unknowns are one sample's position and heading). Restarts begin
from an angles-only guess (anchor directions by circular synchronisation, random
ranges, clients near the origin) and the lowest-cost restart wins.

The gauge. ADoAs are unchanged by translating, rotating or scaling the whole layout, so
the solution is only defined up to a similarity: 4 degrees of freedom per region. They
are fixed by the only positions a deployment really knows, ``ap_position``: the
estimated physical anchors (``anchor_kind == 0``) of a region are aligned to their APs'
mounting positions by a least-squares similarity (Umeyama), which is then applied to
every client and anchor of that region. Reflection is *not* a gauge freedom: AoAs are
measured counter-clockwise in the client's frame (the model above), so a mirrored layout
negates every ADoA and does not fit; ``gauge_reflection='auto'`` allows a mirrored
alignment (chosen when it fits the APs better and the APs are not collinear) for data
whose angle convention might be clockwise.

What a region needs (otherwise it is reported with a status and gets no labels):
at least 4 anchors (``too_few_anchors``); at least 2 physical anchors of distinct APs
(``no_gauge``: scale cannot be fixed); enough observations to over-determine the
unknowns, ``sum_t (n_t - 3) >= 2K - 4`` over samples seeing ``n_t >= min_paths``
anchors (``too_few_observations``); and after solving, an anchor information matrix
that is regular once the 4 gauge directions are projected out (``under_determined``,
e.g. every survey sample taken at the same spot, so no anchor range is observable).
A survey walked along one straight line is *not* degenerate when the anchors are off
that line: each anchor is seen from changing directions (tested).

How far to trust each label (:func:`label_covariance`, :func:`trust_labels`): every
label gets a covariance (its own block plus the anchors' uncertainty, gauge fixed like
the labels, noise from the residuals, checked against the AP alignment) and is trusted
only when precise enough, explained by its angles as well as its region's samples are,
and inside its region's spread. A region whose anchor information is nearly flat off
the gauge is reported ``ill_conditioned``. docs/mmwave.md ('Label trust') has the
measurements behind the thresholds.

Which anchors a region uses: those seen in at least ``min_anchor_fraction`` of its
samples. Anchors glimpsed rarely (an AP seen through a doorway from a small part of the
room) are placed from a narrow bundle of rays; keeping them added nearly flat directions
that, with 5 deg noise, bent the whole layout (AP fit residuals of ~1 m instead of ~1 cm
on the default floor). Regions are solved independently, as in Shastri, Garcia-Saavedra,
Casari (IEEE Comm. Letters 2024): an anchor used by two regions is estimated once per
region, and ``anchor_map`` keeps the estimate of the region that saw it most.
"""

from __future__ import annotations

import dataclasses
import functools

from absl import logging
import jax
import jax.numpy as jnp
import numpy as np

from csiloc_jax.mmwave import geometry
from csiloc_jax.mmwave import regions

OK = 'ok'
# Solved, but the anchor information has a weak direction (gauge-free conditioning under
# min_conditioning). Reported; its labels are judged one by one like any region's, and
# its anchors give way to a well-conditioned region's in the anchor map.
ILL_CONDITIONED = 'ill_conditioned'


@dataclasses.dataclass(frozen=True)
class JadeOptions:
  """Solver settings: the fields of ``config.jade`` (their meaning and defaults are in
  ``configs/mmwave_tiny.py``) plus the run's seed. No field has a default here; build
  them from the config, e.g. in a notebook::

    config = config_utils.load_config('configs/mmwave_tiny.py')
    options = config_utils.options_from_config(JadeOptions, config.jade, 'config.jade',
                                               seed=config.seed)
  """

  num_restarts: int
  num_iters: int
  robust_scale: float
  min_anchor_fraction: float
  min_anchor_samples: int
  min_paths: int
  min_samples: int
  gauge_reflection: str
  min_conditioning: float
  gauge_check_p_value: float
  max_label_std_m: float
  max_cost_z: float
  plausible_fence: float
  plausible_margin_m: float
  pin_aps: bool
  seed: int


@dataclasses.dataclass
class JadeProblems:
  """Padded per-region problems, ready for the vmapped solver (numpy)."""

  region_ids: np.ndarray  # [R] region label of each problem.
  theta: np.ndarray  # [R, N, K] AoAs (0 where missing).
  mask: np.ndarray  # [R, N, K] path seen and used.
  sample_index: np.ndarray  # [R, N] survey row, -1 = padding / left out.
  anchor_index: np.ndarray  # [R, K] anchor column, -1 = padding.
  status: dict  # region id -> status string.


def build_problems(
  aoa: np.ndarray,
  region: np.ndarray,
  anchor_ap: np.ndarray,
  anchor_kind: np.ndarray,
  ap_position: np.ndarray,
  options: JadeOptions,
) -> JadeProblems:
  """Chooses each region's anchors and samples and pads them into one batch.

  Vectorised over regions, samples and anchors (one-hot region matrices, ranks within
  groups); the only per-region Python is the status dict for reporting.
  """
  visible = np.isfinite(aoa)
  ids, ridx = np.unique(np.asarray(region), return_inverse=True)
  onehot = ridx[None, :] == np.arange(len(ids))[:, None]  # [R, T]
  n_region = onehot.sum(1)
  counts = onehot.astype(np.int64) @ visible.astype(np.int64)  # [R, M]
  need = np.maximum(options.min_anchor_samples, options.min_anchor_fraction * n_region)
  include = counts >= need[:, None]  # [R, M]
  n_seen = np.sum(visible & include[ridx], 1)  # [T]
  usable = n_seen >= options.min_paths
  num_anchors = include.sum(1)
  num_samples = (onehot & usable[None]).sum(1)
  observations = onehot.astype(np.int64) @ np.where(usable, n_seen - 3, 0)
  # Physical APs a region can anchor its gauge on (APs sharing a position count once).
  _, ap_group = np.unique(np.round(ap_position, 6), axis=0, return_inverse=True)
  group_of_anchor = np.eye(ap_group.max() + 1, dtype=np.int64)[ap_group.ravel()[anchor_ap]]
  distinct_aps = ((include & (anchor_kind == 0)[None]).astype(np.int64) @ group_of_anchor > 0).sum(
    1
  )
  codes = np.select(
    [
      num_anchors < 4,
      distinct_aps < 2,
      num_samples < options.min_samples,
      observations < 2 * num_anchors - 4,
    ],
    ['too_few_anchors', 'no_gauge', 'too_few_samples', 'too_few_observations'],
    OK,
  )
  status = dict(zip(ids.astype(int).tolist(), codes.tolist()))
  for r, code, k, a, n in zip(ids, codes, num_anchors, distinct_aps, num_samples):
    if code != OK:  # Logging only.
      logging.warning(
        'JADE: region %d left out (%s): %d anchors, %d physical APs, %d usable samples',
        r,
        code,
        k,
        a,
        n,
      )

  ok = codes == OK
  ok_pos = np.cumsum(ok) - 1  # region -> slot
  k_max = max(int(num_anchors[ok].max(initial=0)), 1)
  n_max = max(int(num_samples[ok].max(initial=0)), 1)
  # Anchors of a region in (AP, kind) order: only for readable output; nothing depends
  # on the file's anchor order.
  order = np.lexsort((anchor_kind, anchor_ap))
  slot_r, slot_j = np.nonzero(include[ok][:, order])
  anchor_index = -np.ones((int(ok.sum()), k_max), np.int64)
  anchor_index[slot_r, regions.group_ranks(slot_r, slot_j)] = order[slot_j]
  rows = np.flatnonzero(usable & ok[ridx])
  slots = ok_pos[ridx[rows]]
  sample_index = -np.ones((int(ok.sum()), n_max), np.int64)
  sample_index[slots, regions.group_ranks(slots, rows)] = rows
  valid = (sample_index[:, :, None] >= 0) & (anchor_index[:, None, :] >= 0)
  block = aoa[np.maximum(sample_index, 0)[:, :, None], np.maximum(anchor_index, 0)[:, None, :]]
  mask = valid & np.isfinite(block)
  theta = np.where(mask, block, 0.0).astype(np.float32)
  return JadeProblems(ids[ok].astype(np.int32), theta, mask, sample_index, anchor_index, status)


# ----------------------------------------------------------------------------------------
# The solver (pure JAX).


def _parts(anchors, clients, heading, theta, mask, min_sq_dist=1e-12):
  """Chord residuals and their Jacobians for one region: f [N,K], J_a [N,K,2], J_x [N,K,3].

  ``min_sq_dist`` floors the squared client-anchor distance in the Jacobians (a client
  placed on top of an anchor would make 1/distance explode).
  """
  d = anchors[None, :, :] - clients[:, None, :]
  q = jnp.maximum(jnp.sum(d * d, -1), min_sq_dist)
  beta = jnp.arctan2(d[..., 1], d[..., 0])
  r = geometry.wrap(theta + heading[:, None] - beta)
  f = jnp.where(mask, 2.0 * jnp.sin(0.5 * r), 0.0)
  c = jnp.cos(0.5 * r)
  g = jnp.stack([-d[..., 1], d[..., 0]], -1) / q[..., None]  # d beta / d anchor.
  j_a = -c[..., None] * g
  j_x = jnp.concatenate([c[..., None] * g, c[..., None]], -1)
  return f, j_a, j_x


def _robust(f, scale: float):
  """(cost, IRLS weight) of chord residuals under a Cauchy loss (plain LS if scale 0)."""
  if scale > 0:
    z = (f / scale) ** 2
    return 0.5 * scale**2 * jnp.log1p(z), 1.0 / (1.0 + z)
  return 0.5 * f**2, jnp.ones_like(f)


def _sample_costs(anchors, clients, heading, theta, mask, scale):
  """``[N]``: each sample's robust cost, summed over the paths in ``mask``."""
  f, _, _ = _parts(anchors, clients, heading, theta, mask)
  rho, _ = _robust(f, scale)
  return jnp.sum(jnp.where(mask, rho, 0.0), -1)


def _cost(anchors, clients, heading, theta, mask, scale):
  return jnp.sum(_sample_costs(anchors, clients, heading, theta, mask, scale))


def _normal_equations(anchors, clients, heading, theta, mask, scale, min_sq_dist=1e-12):
  """IRLS-weighted Gauss-Newton blocks of one region: per-sample ``u [N,3,3]``,
  ``b_x [N,3]``, per-anchor ``v [K,2,2]``, ``b_a [K,2]`` and ``cross [N,3,2K]``."""
  f, j_a, j_x = _parts(anchors, clients, heading, theta, mask, min_sq_dist)
  _, w = _robust(f, scale)
  w = jnp.where(mask, w, 0.0)
  u = jnp.einsum('nki,nkj,nk->nij', j_x, j_x, w)
  b_x = jnp.einsum('nki,nk->ni', j_x, w * f)
  v = jnp.einsum('nka,nkb,nk->kab', j_a, j_a, w)
  b_a = jnp.einsum('nka,nk->ka', j_a, w * f)
  cross = jnp.einsum('nki,nka,nk->nika', j_x, j_a, w)
  n, k = f.shape
  return u, b_x, v, b_a, cross.reshape(n, 3, 2 * k)


def _block_diag(v):
  k = v.shape[0]
  eye = jnp.eye(k, dtype=v.dtype)
  return jnp.einsum('kab,kl->kalb', v, eye).reshape(2 * k, 2 * k)


def _centre_spread(anchors, anchor_ok):
  """Centre and RMS spread of a region's real (not padding) anchors."""
  wa = anchor_ok[:, None]
  centre = jnp.sum(anchors * wa, 0) / jnp.maximum(wa.sum(), 1)
  spread = jnp.sqrt(jnp.sum(((anchors - centre) ** 2) * wa) / jnp.maximum(wa.sum(), 1))
  return centre, spread


def _damp(m, lam):
  """Marquardt damping of (a batch of) normal matrices: ``M + lam diag(diag(M) + 1e-6)``."""
  diag = jnp.diagonal(m, axis1=-2, axis2=-1) + 1e-6
  return m + lam * (diag[..., None] * jnp.eye(m.shape[-1], dtype=m.dtype))


def _levenberg_marquardt(state, propose, cost, num_iters: int):
  """The LM loop of both solvers: ``num_iters`` steps in one ``lax.scan``.

  ``propose(state, lam)`` returns the damped Gauss-Newton step from ``state`` and
  ``cost(state)`` scores a state. A step is accepted only if it lowers the (finite) cost;
  the damping ``lam`` then shrinks 3x, otherwise it grows 4x. Returns
  ``(best state, its cost)``.
  """

  def body(carry, _):
    state, lam, current = carry
    new = propose(state, lam)
    new_cost = cost(new)
    accept = jnp.isfinite(new_cost) & (new_cost < current)
    state = jax.tree.map(lambda n, o: jnp.where(accept, n, o), new, state)
    lam = jnp.clip(jnp.where(accept, lam / 3.0, lam * 4.0), 1e-9, 1e9)
    return (state, lam, jnp.where(accept, new_cost, current)), None

  (state, _, final), _ = jax.lax.scan(
    body, (state, jnp.asarray(1e-2), cost(state)), None, length=num_iters
  )
  return state, final


def _lm_step(a, p, psi, lam, theta, mask, sample_ok, free, scale: float):
  """One damped Gauss-Newton step of a region, the samples eliminated (Schur complement).

  Only the anchors in ``free [K]`` move: the others (padding, or physical anchors pinned
  at their APs) get identity blocks and no cross terms, so their step is zero.
  """
  u, b_x, v, b_a, cross = _normal_equations(a, p, psi, theta, mask, scale)
  u = jnp.where(sample_ok[:, None, None], u, jnp.eye(3))
  v = jnp.where(free[:, None, None], v, jnp.eye(2))
  b_a = jnp.where(free[:, None], b_a, 0.0)
  cross = jnp.where(jnp.repeat(free, 2)[None, None, :], cross, 0.0)
  u_d = _damp(u, lam)
  v_d = _damp(v, lam)
  u_inv = jnp.linalg.inv(u_d)
  z = u_inv @ cross  # [N, 3, 2K]
  s = _block_diag(v_d) - jnp.einsum('nia,nib->ab', cross, z)
  rhs = -b_a.reshape(-1) + jnp.einsum('nia,ni->a', cross, jnp.einsum('nij,nj->ni', u_inv, b_x))
  da = jnp.linalg.solve(s, rhs)
  dx = -jnp.einsum('nij,nj->ni', u_inv, b_x + cross @ da)
  a_new = a + jnp.where(free[:, None], da.reshape(-1, 2), 0.0)
  dx = jnp.where(sample_ok[:, None], dx, 0.0)
  return a_new, p + dx[:, :2], geometry.wrap(psi + dx[:, 2])


def _lm_region(
  anchors, clients, heading, theta, mask, sample_ok, anchor_ok, *, num_iters: int, scale: float
):
  """Levenberg-Marquardt with Schur elimination of the samples, for one region."""

  def normalise(a, p):
    # Angles are blind to translation and scale; keeping the layout centred with unit
    # spread keeps the damping meaningful and float32 well conditioned.
    centre, spread = _centre_spread(a, anchor_ok)
    spread = jnp.maximum(spread, 1e-6)
    return (a - centre) / spread, (p - centre) / spread

  def propose(state, lam):
    a_new, p_new, psi_new = _lm_step(*state, lam, theta, mask, sample_ok, anchor_ok, scale)
    a_new, p_new = normalise(a_new, p_new)
    return a_new, p_new, psi_new

  anchors, clients = normalise(anchors, clients)
  (a, p, psi), cost = _levenberg_marquardt(
    (anchors, clients, heading), propose, lambda state: _cost(*state, theta, mask, scale), num_iters
  )
  return a, p, psi, cost


@functools.partial(jax.jit, static_argnames=('num_iters', 'scale'))
def _refine_pinned(anchors, clients, theta, mask, free, *, num_iters: int, scale: float):
  """Re-solves every region in the ``ap_position`` frame with only ``free [R, K]`` anchors
  moving (the physical ones stay at their APs), from a gauge-fixed solution.

  No normalisation: the pinned anchors fix translation, rotation and scale. Returns
  ``(anchors, clients, heading, cost)``, batched over regions.
  """

  def one(a, p, theta, mask, free):
    sample_ok = mask.any(-1)
    psi = geometry.best_heading(theta, mask, geometry.bearing(a[None], p[:, None]))

    def propose(state, lam):
      return _lm_step(*state, lam, theta, mask, sample_ok, free, scale)

    (a, p, psi), cost = _levenberg_marquardt(
      (a, p, psi), propose, lambda state: _cost(*state, theta, mask, scale), num_iters
    )
    return a, p, psi, cost

  return jax.vmap(one)(anchors, clients, theta, mask, free)


def _initial_guess(key, theta, mask, anchor_ok):
  """Angles-only start: anchor directions by circular synchronisation, random ranges.

  Pretending every client stands at one point, each anchor has one direction phi_m and
  each sample one heading psi_t with theta_tm ~ phi_m - psi_t; alternating circular
  means recover them. Ranges and client spread are random: they differ per restart.
  """
  counts = mask.sum(0)
  ref = jnp.argmax(counts)
  has_ref = mask[:, ref]
  psi = jnp.where(has_ref, -theta[:, ref], 0.0)

  def sync(carry, i):
    psi = carry
    weight = jnp.where(i == 0, mask & has_ref[:, None], mask)
    sum_t = theta + psi[:, None]
    phi = jnp.arctan2(
      jnp.sum(jnp.where(weight, jnp.sin(sum_t), 0.0), 0),
      jnp.sum(jnp.where(weight, jnp.cos(sum_t), 0.0), 0),
    )
    psi = geometry.best_heading(theta, mask, phi[None])
    return psi, phi

  psi, phis = jax.lax.scan(sync, psi, jnp.arange(20))
  phi = phis[-1]
  k_r, k_p, k_phi = jax.random.split(key, 3)
  n, k = theta.shape
  radius = jax.random.uniform(k_r, (k,), minval=0.5, maxval=2.0)
  phi = phi + 0.1 * jax.random.normal(k_phi, (k,))
  anchors = radius[:, None] * jnp.stack([jnp.cos(phi), jnp.sin(phi)], -1)
  anchors = jnp.where(anchor_ok[:, None], anchors, 0.0)
  clients = 0.2 * jax.random.normal(k_p, (n, 2))
  beta = geometry.bearing(anchors[None], clients[:, None])
  heading = geometry.best_heading(theta, mask, beta)
  return anchors, clients, heading


def solve_problems(
  key: jax.Array,
  theta: jax.Array,
  mask: jax.Array,
  *,
  num_restarts: int,
  num_iters: int,
  scale: float,
) -> dict:
  """Solves every padded region problem with ``num_restarts`` random starts, all at once.

  One jit-compiled program (vmapped over regions and restarts).

  Args:
    key: PRNG key.
    theta: ``[R, N, K]`` AoAs, mask: ``[R, N, K]`` which ones are used.

  Returns:
    dict of the best restart per region (``anchors [R,K,2]``, ``clients [R,N,2]``,
    ``heading [R,N]``, ``cost [R]``) in the solver's own (un-gauged) frame, plus
    ``restart_costs [R, S]``.
  """
  solve = _solve_cpu if jax.default_backend() == 'cpu' else _solve
  return solve(key, theta, mask, num_restarts=num_restarts, num_iters=num_iters, scale=scale)


def _solve_problems(key, theta, mask, *, num_restarts: int, num_iters: int, scale: float):
  sample_ok = mask.any(-1)
  anchor_ok = mask.any(-2)

  def one_start(key, theta, mask, sample_ok, anchor_ok):
    init = _initial_guess(key, theta, mask, anchor_ok)
    return _lm_region(*init, theta, mask, sample_ok, anchor_ok, num_iters=num_iters, scale=scale)

  def one_region(key, theta, mask, sample_ok, anchor_ok):
    keys = jax.random.split(key, num_restarts)
    a, p, psi, cost = jax.vmap(one_start, (0, None, None, None, None))(
      keys, theta, mask, sample_ok, anchor_ok
    )
    cost = jnp.where(jnp.isfinite(cost), cost, jnp.inf)
    best = jnp.argmin(cost)
    return {
      'anchors': a[best],
      'clients': p[best],
      'heading': psi[best],
      'cost': cost[best],
      'restart_costs': cost,
    }

  keys = jax.random.split(key, theta.shape[0])
  return jax.vmap(one_region)(keys, theta, mask, sample_ok, anchor_ok)


_STATIC = ('num_restarts', 'num_iters', 'scale')
_solve = jax.jit(_solve_problems, static_argnames=_STATIC)
# A run compiles the solver once and runs it once, so compilation is most of the wait.
# On CPU, XLA's backend optimisation level 1 compiles it in about 30 % less time and runs
# it as fast (benchmarks/README.md, the 'jade_cold' row); other backends keep their
# default.
_solve_cpu = jax.jit(
  _solve_problems, static_argnames=_STATIC, compiler_options={'xla_backend_optimization_level': 1}
)


def anchor_information(
  anchors: np.ndarray,
  clients: np.ndarray,
  heading: np.ndarray,
  theta: np.ndarray,
  mask: np.ndarray,
  scale: float,
) -> np.ndarray:
  """Schur-reduced ``2K x 2K`` Gauss-Newton information of the anchors, per region.

  Shapes ``[R, K, 2]``, ``[R, N, 2]``, ``[R, N]``, ``[R, N, K]`` x2. The same normal
  equations as the solver (:func:`_normal_equations`), evaluated in float64: the reduced
  matrix is a difference of large, nearly cancelling sums along the gauge directions,
  which float32 cannot resolve; it is computed once, after the solve. Anchors with no
  observation get zero rows.
  """
  with jax.enable_x64(True):
    args = (np.asarray(x, np.float64) for x in (anchors, clients, heading, theta))
    return np.asarray(_anchor_information(*args, np.asarray(mask), scale=float(scale)))


def _reduced_system(anchors, clients, heading, theta, mask, scale: float):
  """One region's normal equations at a solution with the samples eliminated:
  ``(info [2K, 2K], u_inv [N, 3, 3], cross [N, 3, 2K])`` (see :func:`anchor_information`)."""
  _, spread = _centre_spread(anchors, mask.any(-2))
  # A client the solver placed on top of an anchor would make 1/distance explode; floor
  # distances at 1 % of the layout's spread (the bearing there is meaningless anyway).
  u, _, v, _, cross = _normal_equations(
    anchors, clients, heading, theta, mask, scale, min_sq_dist=(0.01 * spread) ** 2
  )
  # Left-out samples have u = 0: the pseudo-inverse drops them.
  u_inv = jnp.linalg.pinv(u, rtol=1e-15, hermitian=True)
  info = _block_diag(v) - jnp.einsum('nia,nib->ab', cross, u_inv @ cross)
  return 0.5 * (info + info.T), u_inv, cross


@functools.partial(jax.jit, static_argnames=('scale',))
def _anchor_information(anchors, clients, heading, theta, mask, *, scale: float):
  def one(*args):
    return _reduced_system(*args, scale)[0]

  return jax.vmap(one)(anchors, clients, heading, theta, mask)


def _generators(points, centre):
  """``[..., 2, 4]`` the similarity gauge at each point: d point / d (translation x,
  translation y, rotation, log scale) about ``centre``."""
  c = points - centre
  one, zero = jnp.ones_like(c[..., 0]), jnp.zeros_like(c[..., 0])
  return jnp.stack(
    [
      jnp.stack([one, zero, -c[..., 1], c[..., 0]], -1),
      jnp.stack([zero, one, c[..., 0], c[..., 1]], -1),
    ],
    -2,
  )


def label_covariance(
  anchors: np.ndarray,
  clients: np.ndarray,
  heading: np.ndarray,
  theta: np.ndarray,
  mask: np.ndarray,
  gauge_weights: np.ndarray,
  scale: float,
  pinned: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
  """Each sample's position covariance at a solution, in the gauge of the AP alignment.

  Shapes as :func:`anchor_information`, plus ``gauge_weights [R, K]`` (the weights of
  :func:`fix_gauge`: positive on the physical anchors that fix the gauge). In the
  solver's frame; multiply by the gauge scale squared for metres.

  The covariance is the marginal one: the sample's own 3x3 block (position + heading)
  plus the anchors' uncertainty propagated through the Schur complement,
  ``U^-1 + U^-1 C S^- C^T U^-1``. A sample seeing few or badly spread anchors has a
  nearly singular ``U``; a layout whose anchors are nearly collinear (a corridor) has a
  weak direction in ``S`` that every sample inherits. The anchor covariance ``S^-`` is
  only defined up to the 4 gauge directions; the labels are in the frame of the
  least-squares similarity onto the APs, so the gauge is fixed the same way
  (linearised, an S-transformation): the similarity that best explains the physical
  anchors' perturbation is removed from the sample's. The result does not depend on
  which generalised inverse ``S^-`` is. The noise variance is estimated from the
  region's IRLS-weighted residuals over its degrees of freedom,
  ``sum w f^2 / (paths - 2K - 3N + 4)``.

  With ``pinned [R, K]`` (a solution of :func:`_refine_pinned`, in metres): the pinned
  anchors are known exactly, so they leave the anchor system (identity rows, no cross
  terms). Where a region has any pinned anchor they fix the gauge, so nothing is
  projected out, the noise has ``paths - 2 K_free - 3N`` degrees of freedom and the
  expected AP residual is 0.

  Returns:
    ``(cov [R, N, 2, 2], cost_per_path [R, N], noise_var [R], ap_residual [R])``:
    zeros and a NaN cost for padding samples; ``ap_residual`` is the expected weighted
    mean square residual of the AP alignment itself (the same transformation applied
    to the physical anchors), for checking the covariance against ``ap_position``.
    Evaluated in float64 (the Schur complement cancels, see
    :func:`anchor_information`).
  """
  with jax.enable_x64(True):
    args = (np.asarray(x, np.float64) for x in (anchors, clients, heading, theta, gauge_weights))
    a, p, h, t, w = args
    pinned = np.zeros(np.shape(mask)[:1] + np.shape(mask)[2:], bool) if pinned is None else pinned
    out = _label_covariance(a, p, h, t, np.asarray(mask), w, np.asarray(pinned), scale=float(scale))
    return tuple(np.asarray(x) for x in out)


@functools.partial(jax.jit, static_argnames=('scale',))
def _label_covariance(
  anchors, clients, heading, theta, mask, gauge_weights, pinned, *, scale: float
):
  def one(anchors, clients, heading, theta, mask, gauge_weights, pinned):
    info, u_inv, cross = _reduced_system(anchors, clients, heading, theta, mask, scale)
    k2 = info.shape[0]
    anchor_ok = mask.any(-2) & ~pinned
    sample_ok = mask.any(-1)
    pins = pinned.any()
    # Pinned anchors leave the system: no cross terms, and their rows and columns of the
    # reduced information are zero (then padded with identity like padding anchors).
    keep = jnp.repeat(~pinned, 2)
    cross = cross * keep
    info = info * keep[:, None] * keep[None, :]
    # Gauge directions of the anchors, orthonormalised; padding anchors get identity
    # rows (they have no cross terms, so they change nothing else). Pinned anchors fix
    # the gauge, so then there is none to project out.
    w = jnp.where(pins, 0.0, gauge_weights / jnp.maximum(gauge_weights.sum(), 1e-300))
    centre = jnp.sum(w[:, None] * anchors, 0)
    g_a = _generators(anchors, centre) * anchor_ok[:, None, None]  # [K, 2, 4]
    q, _ = jnp.linalg.qr(g_a.reshape(k2, 4))
    level = jnp.trace(info) / jnp.maximum(2 * anchor_ok.sum(), 1)
    level = jnp.where(level > 0, level, 1.0)  # Every anchor pinned: S is all padding.
    pad = jnp.repeat(~anchor_ok, 2).astype(info.dtype)
    # (S + c G G^T)^-1 is a generalised inverse of S, whose null space is the gauge.
    gauge = jnp.where(pins, 0.0, q @ q.T)
    s_inv = jnp.linalg.inv(info + level * (gauge + jnp.diag(pad)))
    # The linearised gauge fix: the similarity best explaining the physical anchors'
    # perturbation (weighted least squares, as fix_gauge), as a map of it, [4, 2K].
    wa = g_a * w[:, None, None]
    normal = jnp.einsum('kai,kaj->ij', wa, g_a)
    fit = jnp.linalg.solve(normal + 1e-12 * jnp.eye(4), wa.reshape(k2, 4).T)
    z = u_inv @ cross  # [N, 3, 2K]
    zs = z @ s_inv
    cov_x = u_inv + zs @ jnp.swapaxes(z, -1, -2)  # [N, 3, 3]
    g_p = _generators(clients, centre) @ fit  # [N, 2, 2K]: gauge removed from a sample.
    cross_pa = -zs[:, :2]  # Cov(position, anchors) [N, 2, 2K].
    gsg = g_p @ s_inv @ jnp.swapaxes(g_p, -1, -2)
    mixed = cross_pa @ jnp.swapaxes(g_p, -1, -2)
    cov = cov_x[:, :2, :2] - mixed - jnp.swapaxes(mixed, -1, -2) + gsg
    cov = 0.5 * (cov + jnp.swapaxes(cov, -1, -2))
    f, _, _ = _parts(anchors, clients, heading, theta, mask)
    rho, weight = _robust(f, scale)
    n_paths = mask.sum(-1)
    cost = jnp.where(
      sample_ok, jnp.sum(jnp.where(mask, rho, 0.0), -1) / jnp.maximum(n_paths, 1), jnp.nan
    )
    dof = mask.sum() - 2 * anchor_ok.sum() - 3 * sample_ok.sum() + jnp.where(pins, 0, 4)
    noise = jnp.sum(jnp.where(mask, weight * f * f, 0.0)) / jnp.maximum(dof, 1)
    cov = jnp.where(sample_ok[:, None, None], noise * cov, 0.0)
    # The expected weighted mean square of the AP alignment's residual, the same
    # transformation applied to the physical anchors themselves.
    t_a = jnp.eye(k2).reshape(-1, 2, k2) - _generators(anchors, centre) @ fit  # [K, 2, 2K]
    cov_a = jnp.einsum('kia,ab,kib->k', t_a, s_inv, t_a)
    expected = noise * jnp.sum(w * cov_a)
    return cov, cost, noise, expected

  return jax.vmap(one)(anchors, clients, heading, theta, mask, gauge_weights, pinned)


def gauge_free_conditioning(
  info: np.ndarray, anchors: np.ndarray, used: np.ndarray | None = None
) -> np.ndarray:
  """Smallest over largest eigenvalue of the anchor information off the gauge (batched).

  The similarity gauge (2 translations, rotation, scale) is always flat; projecting its
  4 generators out leaves a matrix that is singular only when the data truly cannot
  place the anchors (all samples at one spot, an anchor seen from a single point).
  ``used [..., K]`` marks real (not padding) anchors; padding is excluded.
  """
  used = np.ones(anchors.shape[:-1], bool) if used is None else used
  k = anchors.shape[-2]
  centre = (
    np.sum(anchors * used[..., None], -2, keepdims=True)
    / np.maximum(used.sum(-1), 1)[..., None, None]
  )
  c = (anchors - centre) * used[..., None]
  flat = anchors.shape[:-2] + (2 * k,)
  u = used[..., None].astype(np.float64)
  gens = np.stack(
    [
      (u * np.array([1.0, 0.0])).reshape(flat),  # Translation x.
      (u * np.array([0.0, 1.0])).reshape(flat),  # Translation y.
      np.stack([-c[..., 1], c[..., 0]], -1).reshape(flat),  # Rotation.
      c.reshape(flat),
    ],
    -1,
  )  # Scale. [..., 2K, 4]
  # Padding anchors: identity blocks scaled like the data, so they never look flat.
  pad = np.repeat(~used, 2, -1)
  scale = np.trace(info, axis1=-2, axis2=-1) / np.maximum(2 * used.sum(-1), 1)
  info = info + pad[..., None, :] * np.eye(2 * k) * scale[..., None, None]
  q, _ = np.linalg.qr(gens, mode='complete')
  basis = q[..., 4:]  # Orthonormal complement of the gauge.
  eig = np.linalg.eigvalsh(np.swapaxes(basis, -1, -2) @ info @ basis)
  return np.maximum(eig[..., 0], 0.0) / np.maximum(eig[..., -1], 1e-300)


# ----------------------------------------------------------------------------------------
# Gauge fixing and the result.


@dataclasses.dataclass
class JadeResult:
  """JADE's output, in the ``ap_position`` frame."""

  labels: np.ndarray  # [T, 2] estimated survey positions, NaN = no label.
  label_region: np.ndarray  # [T] region whose problem labelled the sample, -1 = none.
  region_ids: np.ndarray  # [R] solved regions.
  anchor_index: list  # per solved region: anchor columns.
  anchor_estimates: list  # per solved region: [K_r, 2] estimates.
  anchor_map: np.ndarray  # [M, 2] one estimate per anchor (NaN if never estimated).
  status: dict  # region id -> status.
  diagnostics: dict  # per region: cost per path, gauge residual, scale, ...
  # [T, 2, 2] each label's covariance (m^2, ap_position frame; NaN = no label) and
  # [T] its RMS error sqrt(trace), metres (label_covariance).
  label_cov: np.ndarray | None = None
  label_std_m: np.ndarray | None = None
  # [T] labelled and passing every check of trust_labels: what the nets train on.
  trusted: np.ndarray | None = None


def _collinear(points: np.ndarray, weights: np.ndarray) -> np.ndarray:
  """Whether the weighted points of each set lie (nearly) on one line: ``[...]``."""
  w = weights / np.maximum(weights.sum(-1, keepdims=True), 1e-300)
  centred = points - np.einsum('...k,...ki->...i', w, points)[..., None, :]
  cov = np.einsum('...k,...ki,...kj->...ij', w, centred, centred)
  ev = np.linalg.eigvalsh(cov)
  return (np.sum(weights > 0, -1) < 3) | (ev[..., 0] < 0.0025 * ev[..., 1])


def fix_gauge(
  anchors: np.ndarray, weights: np.ndarray, ap_xy: np.ndarray, gauge_reflection: str = 'never'
) -> tuple[tuple, np.ndarray, np.ndarray]:
  """Similarity taking estimated physical anchors onto their APs' positions (batched).

  Args:
    anchors: ``[..., K, 2]`` estimates in the solver's frame.
    weights: ``[..., K]``; zero for anchors that are not physical APs (and padding),
      positive for APs, larger for better-placed ones.
    ap_xy: ``[..., K, 2]`` the mounting position of each anchor's AP.
    gauge_reflection: ``'never'`` or ``'auto'`` (see the module docstring).

  Returns:
    ``((scale, R, t), weighted rms residual in metres, reflected)``, batched.
  """
  if gauge_reflection not in ('never', 'auto'):
    raise ValueError(f"gauge_reflection must be 'never' or 'auto', got {gauge_reflection!r}")
  w = weights / np.maximum(weights.sum(-1, keepdims=True), 1e-300)

  def rms(sim):
    err = np.sum((geometry.apply_similarity(anchors, *sim) - ap_xy) ** 2, -1)
    return np.sqrt(np.sum(w * err, -1))

  proper = geometry.umeyama(anchors, ap_xy, weights)
  res = rms(proper)
  reflected = np.zeros(res.shape, bool)
  if gauge_reflection == 'auto':
    mirrored = geometry.umeyama(anchors, ap_xy, weights, allow_reflection=True)
    res_m = rms(mirrored)
    reflected = (np.linalg.det(mirrored[1]) < 0) & (res_m < res) & ~_collinear(ap_xy, weights)
    pick = lambda m, p: np.where(  # noqa: E731
      reflected.reshape(reflected.shape + (1,) * (np.ndim(p) - reflected.ndim)), m, p
    )
    proper = tuple(pick(m, p) for m, p in zip(mirrored, proper))
    res = np.where(reflected, res_m, res)
  return proper, res, reflected


def _robust_z(x: np.ndarray, valid: np.ndarray, floor: float) -> np.ndarray:
  """Per row, ``(x - median) / (1.4826 MAD)`` over the valid entries (MAD floored)."""
  # Rows without a valid entry get zeros (their result is NaN anyway).
  v = np.where(valid, x, np.where(valid.any(-1, keepdims=True), np.nan, 0.0))
  med = np.nanmedian(v, -1, keepdims=True)
  mad = np.nanmedian(np.abs(v - med), -1, keepdims=True)
  return np.where(valid, (x - med) / np.maximum(1.4826 * mad, floor), np.nan)


def trust_labels(
  labels: np.ndarray,
  std: np.ndarray,
  cost: np.ndarray,
  labelled: np.ndarray,
  options: JadeOptions,
) -> np.ndarray:
  """Which labels the nets may learn from, per region: ``[R, N]`` bool.

  Args are per region and sample: ``labels [R, N, 2]`` (metres), ``std [R, N]``
  (:func:`label_covariance`, metres), ``cost [R, N]`` (cost per path of the sample) and
  ``labelled [R, N]``. A label is trusted when

  * its predicted RMS error is under ``max_label_std_m``. The labels the other checks
    miss sit on nearly singular blocks (a sample almost in line with its anchors) and
    have a std of hundreds of metres or more; the cap is loose on purpose, because a
    net learns more from many labels of a few metres' error than from a precise few
    (measured on a corridor, docs/mmwave.md 'Label trust');
  * its cost per path is not an outlier of its region: robust z-score (median, MAD)
    under ``max_cost_z``. A sample whose angles the layout does not explain (a wrong
    association, a multipath the model lacks) is placed by them anyway;
  * it lies inside its region's far-out fences (Tukey): per axis, within
    ``plausible_fence`` interquartile ranges of the quartiles of the region's labels,
    plus ``plausible_margin_m``. Chosen over the AP or anchor extent because it needs
    no assumption on where a region's APs are (a hall lit from one side, a corridor
    whose APs sit at its ends) and the quartiles are untouched by a few far labels; the
    margin keeps a survey walked along one line (zero spread across it) labelled.
  """
  precise = std < options.max_label_std_m
  # The MAD is floored at a chord cost of 1e-6 (0.1 deg of residual) so that noiseless
  # data, whose costs are all ~0, do not turn rounding into outliers.
  z = _robust_z(cost, labelled & np.isfinite(cost), 1e-6)
  fits = np.where(labelled, z < options.max_cost_z, False)
  # Regions without any label get zeros (nanpercentile of an empty row warns).
  empty = ~labelled.any(-1)[:, None, None]
  xy = np.where(labelled[..., None], labels, np.where(empty, 0.0, np.nan))
  q1, q3 = np.nanpercentile(xy, [25, 75], 1)
  reach = options.plausible_fence * (q3 - q1) + options.plausible_margin_m
  inside = np.all((labels >= (q1 - reach)[:, None]) & (labels <= (q3 + reach)[:, None]), -1)
  return labelled & precise & fits & inside


def run_jade(
  aoa: np.ndarray,
  region: np.ndarray,
  anchor_ap: np.ndarray,
  anchor_kind: np.ndarray,
  ap_position: np.ndarray,
  options: JadeOptions,
) -> JadeResult:
  """Runs JADE on a survey and returns labels and anchors in the ``ap_position`` frame."""
  aoa = np.asarray(aoa, np.float32)
  num_samples, num_anchors = aoa.shape
  problems = build_problems(aoa, np.asarray(region), anchor_ap, anchor_kind, ap_position, options)
  status = dict(problems.status)
  result = JadeResult(
    np.full((num_samples, 2), np.nan),
    -np.ones(num_samples, np.int32),
    np.zeros(0, np.int32),
    [],
    [],
    np.full((num_anchors, 2), np.nan),
    status,
    {},
    np.full((num_samples, 2, 2), np.nan),
    np.full(num_samples, np.nan),
    np.zeros(num_samples, bool),
  )
  if len(problems.region_ids) == 0:
    return result
  logging.info(
    'JADE: solving %d region(s) at once (%d restarts, %d LM iterations, '
    'padded to %d samples x %d anchors)',
    len(problems.region_ids),
    options.num_restarts,
    options.num_iters,
    problems.theta.shape[1],
    problems.theta.shape[2],
  )
  sol = solve_problems(
    jax.random.PRNGKey(options.seed),
    problems.theta,
    problems.mask,
    num_restarts=options.num_restarts,
    num_iters=options.num_iters,
    scale=float(options.robust_scale),
  )
  sol = jax.tree.map(lambda x: np.asarray(x, np.float64), sol)
  a, p = sol['anchors'], sol['clients']  # [R, K|N, 2]
  anchor_ok = problems.anchor_index >= 0
  sample_ok = problems.sample_index >= 0
  counts = problems.mask.sum(1)  # [R, K]
  info = anchor_information(
    a, p, sol['heading'], problems.theta, problems.mask, options.robust_scale
  )
  conditioning = gauge_free_conditioning(info, a, anchor_ok)
  finite = np.all(np.isfinite(a) | ~anchor_ok[..., None], (-1, -2)) & np.all(
    np.isfinite(p) | ~sample_ok[..., None], (-1, -2)
  )
  solved = finite & (conditioning >= 1e-9)
  # Weight each AP by how often it was seen: a rarely seen AP is less well placed.
  kind = np.where(anchor_ok, anchor_kind[np.maximum(problems.anchor_index, 0)], -1)
  ap_xy = ap_position[anchor_ap[np.maximum(problems.anchor_index, 0)]]
  weights = np.where(kind == 0, counts, 0).astype(np.float64)
  (scale, rot, t), residual, reflected = fix_gauge(
    np.where(np.isfinite(a), a, 0.0), weights, ap_xy, options.gauge_reflection
  )
  a_g = geometry.apply_similarity(a, scale, rot, t)
  p_g = geometry.apply_similarity(p, scale, rot, t)
  cov, sample_cost, noise_var, expected_res = label_covariance(
    a, p, sol['heading'], problems.theta, problems.mask, weights, options.robust_scale
  )
  # The AP alignment is the one check of the layout against known positions: its
  # residual should match the one the covariance predicts for the physical anchors. A
  # layout bent along a weak direction fits its own angles well (the noise estimate
  # does not see it) but not the APs. The ratio is a variance factor with
  # 2 * APs - 4 degrees of freedom (none with 2 APs); with so few it is noisy (in 40
  # noise draws of one room, identical label quality, it ranged 0.1-4.7), so it inflates
  # the region's covariance only when significant (chi-square p-value under
  # gauge_check_p_value). Measured on two_rooms seed 3, region 0: AP fit 0.66 m for
  # 0.27 m predicted (ratio 6), labels 0.65 m off for 0.29 m predicted (30 % within
  # 2 std); inflated, 100 %.
  same = np.linalg.norm(ap_xy[:, :, None] - ap_xy[:, None, :], axis=-1) < 1e-6
  earlier = np.tril(np.ones(same.shape[1:], bool), -1)
  gauge_aps = np.sum((weights > 0) & ~np.any(same & earlier & (weights > 0)[:, None, :], -1), -1)
  dof = np.maximum(2 * gauge_aps - 4, 1)
  expected_m = np.sqrt(np.maximum(expected_res, 0.0)) * scale
  ratio = (residual / np.maximum(expected_m, 1e-300)) ** 2
  p_value = np.asarray(jax.scipy.stats.chi2.sf(ratio * dof, dof), np.float64)
  inflation = np.where(
    (gauge_aps >= 3) & (p_value < options.gauge_check_p_value), np.maximum(ratio, 1.0), 1.0
  )
  # Into the ap_position frame: cov' = s^2 R cov R^T.
  cov = (inflation * scale**2)[:, None, None, None] * np.einsum('rij,rnjk,rlk->rnil', rot, cov, rot)
  pinned = np.zeros(len(solved), bool)
  pin_p_value = np.full(len(solved), np.nan)
  pin_start = np.full(len(solved), None)
  if options.pin_aps:
    layout = {'anchors': a_g, 'clients': p_g, 'cov': cov, 'cost': sample_cost}
    checks = {'noise_var': noise_var, 'gauge_aps': gauge_aps, 'solved': solved}
    layout, pinned, pin_p_value, pin_start = _pin_aps(
      problems, sol, layout, checks, reflected, kind == 0, ap_xy, weights, options
    )
    a_g, p_g, cov, sample_cost = (layout[k] for k in ('anchors', 'clients', 'cov', 'cost'))
    inflation = np.where(pinned, 1.0, inflation)
  std = np.sqrt(np.maximum(np.trace(cov, axis1=-2, axis2=-1), 0.0))
  ill = solved & (conditioning < options.min_conditioning)
  trusted = trust_labels(p_g, std, sample_cost, sample_ok & solved[:, None], options)

  take = sample_ok & solved[:, None]
  rows = problems.sample_index[take]
  result.labels[rows] = p_g[take]
  result.label_cov[rows] = cov[take]
  result.label_std_m[rows] = std[take]
  result.trusted[rows] = trusted[take]
  result.label_region[rows] = np.broadcast_to(problems.region_ids[:, None], take.shape)[take]
  # One map entry per anchor: the estimate of the (solved) region that saw it most,
  # preferring well-conditioned regions (an ill-conditioned layout's anchors can be far
  # off along its weak direction).
  seen = np.zeros((len(solved), num_anchors))
  hit = anchor_ok & solved[:, None]
  slot_r, slot_k = np.nonzero(hit)
  seen[slot_r, problems.anchor_index[slot_r, slot_k]] = (
    counts[slot_r, slot_k] + 1 + np.where(ill[slot_r], 0, counts.max() + 1)
  )
  estimate = np.full((len(solved), num_anchors, 2), np.nan)
  estimate[slot_r, problems.anchor_index[slot_r, slot_k]] = a_g[slot_r, slot_k]
  best = np.argmax(seen, 0)
  mapped = seen.max(0) > 0
  result.anchor_map[mapped] = estimate[best[mapped], np.flatnonzero(mapped)]

  n_paths = problems.mask.sum((1, 2))
  restarts_near = np.sum(sol['restart_costs'] <= sol['cost'][:, None] * 1.01 + 1e-9, 1)
  for i, r in enumerate(problems.region_ids.tolist()):  # Packing results for reporting.
    diag = {
      'num_samples': int(sample_ok[i].sum()),
      'num_anchors': int(anchor_ok[i].sum()),
      'num_paths': int(n_paths[i]),
      'cost_per_path': float(sol['cost'][i] / max(n_paths[i], 1)),
      'restarts_near_best': int(restarts_near[i]),
      'conditioning': float(conditioning[i]),
    }
    if not solved[i]:
      status[r] = 'solver_failed' if not finite[i] else 'under_determined'
      logging.warning('JADE: region %d: %s (%s)', r, status[r], diag)
    else:
      diag.update(
        gauge_residual_m=float(residual[i]),
        gauge_residual_expected_m=float(expected_m[i]),
        gauge_check_p_value=float(p_value[i]) if gauge_aps[i] >= 3 else None,
        variance_inflation=float(inflation[i]),
        pinned_aps=bool(pinned[i]),
        pin_p_value=None if np.isnan(pin_p_value[i]) else float(pin_p_value[i]),
        pin_start=None if pin_start[i] is None else str(pin_start[i]),
        noise_std_deg=float(np.degrees(np.sqrt(noise_var[i]))),
        gauge_scale=float(scale[i]),
        reflected=bool(reflected[i]),
        label_std_median_m=float(np.median(std[i][sample_ok[i]])),
        num_trusted=int(trusted[i].sum()),
      )
      if ill[i]:
        status[r] = ILL_CONDITIONED
        logging.warning(
          'JADE: region %d is ill-conditioned (%.2g < %.2g): %d of %d labels trusted, '
          'median label std %.2f m',
          r,
          conditioning[i],
          options.min_conditioning,
          diag['num_trusted'],
          diag['num_samples'],
          diag['label_std_median_m'],
        )
      result.anchor_index.append(problems.anchor_index[i][anchor_ok[i]])
      result.anchor_estimates.append(a_g[i][anchor_ok[i]])
      logging.info(
        'JADE: region %d: %d samples (%d trusted), %d anchors, cost/path %.4g, AP fit %.3f m',
        r,
        diag['num_samples'],
        diag['num_trusted'],
        diag['num_anchors'],
        diag['cost_per_path'],
        diag['gauge_residual_m'],
      )
    result.diagnostics[r] = diag
  result.region_ids = problems.region_ids[solved]
  return result


# The pinned solve's starts, in the order _pin_aps batches them (metrics.json 'pin_start').
PIN_STARTS = ('free_layout', 'aps')


def _pin_aps(problems, sol, layout, checks, reflected, physical, ap_xy, weights, options):
  """The regions re-solved with their physical anchors held at ``ap_position``.

  The free solution uses the APs' positions only for its gauge; when a region sees
  three or more APs they also constrain its shape (measured on open_hall seed 0: the
  free layout's anchors were 1.7 m off (median), pinned 0.18 m, labels 0.88 -> 0.37 m).
  Two starts, the lower final cost kept (``PIN_STARTS``): the gauge-fixed free
  solution, and one built from the APs alone (:func:`_start_from_aps`); a mirrored
  alignment re-solves with negated angles. Clients a start leaves outside the APs' box
  are re-fitted against its solved anchors (:func:`_refit_far_clients`) before the
  starts' costs are compared. The pinned solution replaces the free one
  where it is finite and its cost is not significantly above the free one's:
  ``2 (cost_pinned - cost_free) / noise_var`` is chi-square with ``2 * APs - 4``
  degrees of freedom if the mounting positions are right, so a p-value under
  ``gauge_check_p_value`` means they disagree with the angles (a wrong ``ap_position``)
  and the free solution is kept. With 2 APs pinning is the gauge itself and always
  taken.

  Args:
    layout: the gauge-fixed free solution per region, ``anchors [R, K, 2]``,
      ``clients [R, N, 2]``, the labels' ``cov [R, N, 2, 2]`` and ``cost [R, N]`` (per
      path).
    checks: ``noise_var [R]`` of the free fit, ``gauge_aps [R]`` (distinct APs) and
      ``solved [R]``.

  Returns ``(layout, pinned [R], p_value [R], start [R])``: the layout replaced where
  pinned, and which of ``PIN_STARTS`` the pinned solve kept.
  """
  noise_var, gauge_aps, solved = checks['noise_var'], checks['gauge_aps'], checks['solved']
  anchor_ok = problems.anchor_index >= 0
  sample_ok = problems.sample_index >= 0
  pins = anchor_ok & physical
  theta = np.where(reflected[:, None, None], -problems.theta, problems.theta)
  a0 = np.where(pins[..., None], ap_xy, np.where(anchor_ok[..., None], layout['anchors'], 0.0))
  p0 = np.where(sample_ok[..., None], layout['clients'], 0.0)
  a0, p0 = np.nan_to_num(a0), np.nan_to_num(p0)
  # Two starts per region, solved in one batch, the lower final cost kept: the free
  # layout's clients, and every client localised on its own against the pinned APs.
  # The second does not inherit the free layout's shape: where heavy-tailed angles bend
  # the free layout, the solve from it alone ends in a local minimum far above the
  # free cost, and the test below would reject the APs (open_hall, 10 % of angles off
  # by up to 30 deg: p = 5e-27).
  a0_aps, p0_aps = _start_from_aps(theta, problems.mask, pins, ap_xy, a0, p0, options)

  def two(x):
    return np.concatenate([x] * len(PIN_STARTS))

  # The solve's own costs are replaced by those after the far clients' re-fit.
  a1, p1, psi1, _ = jax.tree.map(
    lambda x: np.asarray(x, np.float64).reshape((len(PIN_STARTS), -1) + x.shape[1:]),
    _refine_pinned(
      jnp.asarray(np.concatenate([a0, a0_aps]), jnp.float32),
      jnp.asarray(np.concatenate([p0, p0_aps]), jnp.float32),
      jnp.asarray(two(theta), jnp.float32),
      jnp.asarray(two(problems.mask)),
      jnp.asarray(two(anchor_ok & ~pins)),
      num_iters=options.num_iters,
      scale=float(options.robust_scale),
    ),
  )
  p1, psi1, cost1 = (
    np.stack(x)
    for x in zip(
      *(
        _refit_far_clients(theta, problems.mask, pins, ap_xy, a1[i], p1[i], psi1[i], options)
        for i in range(len(PIN_STARTS))
      )
    )
  )
  start = np.argmin(np.where(np.isfinite(cost1), cost1, np.inf), 0)  # [R]
  a1, p1, psi1, cost1 = (
    np.take_along_axis(x, start.reshape((1, -1) + (1,) * (x.ndim - 2)), 0)[0]
    for x in (a1, p1, psi1, cost1)
  )
  increase = 2.0 * (cost1 - sol['cost']) / np.maximum(noise_var, 1e-300)
  dof = 2 * gauge_aps - 4
  p_value = np.where(
    dof > 0,
    np.asarray(jax.scipy.stats.chi2.sf(np.maximum(increase, 0.0), np.maximum(dof, 1))),
    1.0,
  )
  finite = (
    np.isfinite(cost1) & np.all(np.isfinite(a1), (-1, -2)) & np.all(np.isfinite(p1), (-1, -2))
  )
  take = solved & finite & (p_value >= options.gauge_check_p_value)
  cov1, cost1_n, _, _ = label_covariance(
    a1, p1, psi1, theta, problems.mask, weights, options.robust_scale, pinned=pins & take[:, None]
  )
  new = {'anchors': a1, 'clients': p1, 'cov': cov1, 'cost': cost1_n}
  layout = {
    k: np.where(take.reshape((-1,) + (1,) * (v.ndim - 1)), new[k], v) for k, v in layout.items()
  }
  return layout, take, np.where(solved, p_value, np.nan), np.array(PIN_STARTS)[start]


def _ap_box(aps: np.ndarray):
  """``inside(points [..., 2]) -> [...]``: finite and within the APs' bounding box grown
  by half its diagonal on every side, where a region's clients can plausibly be.

  A fix from exactly 3 paths has no redundancy, so an outlier among them can put it
  anywhere (once 32 m off), and a solution can hold a client kilometres away (from a far
  point every bearing is nearly the same, so it costs little, and the solve then sends
  it further); such clients are started or re-fitted elsewhere.
  """
  low, high = aps.min(0), aps.max(0)
  margin = 0.5 * np.linalg.norm(high - low)
  return lambda x: np.all(np.isfinite(x) & (x >= low - margin) & (x <= high + margin), -1)


def _headings(theta, mask, anchors, clients) -> np.ndarray:
  """``[N]``: each client's best heading for the anchors ``[K, 2]`` it sees in ``mask``."""
  beta = geometry.bearing(jnp.asarray(anchors)[None], jnp.asarray(clients)[:, None])
  return np.asarray(geometry.best_heading(jnp.asarray(theta), jnp.asarray(mask), beta), np.float64)


def _fix_each(theta, mask, anchors, aps, options) -> np.ndarray:
  """:func:`localize` of every sample ``[N, K]`` against ``anchors [K, 2]`` (those in
  ``mask``), started from the APs' centroid and from each AP half-way to it."""
  centre = aps.mean(0)
  pos, _ = localize(
    jnp.asarray(theta, jnp.float32),
    jnp.asarray(mask),
    jnp.asarray(np.nan_to_num(anchors), jnp.float32),
    jnp.asarray(np.concatenate([centre[None], 0.5 * (aps + centre)]), jnp.float32),
    num_iters=options.num_iters,
    scale=float(options.robust_scale),
  )
  return np.asarray(pos, np.float64)


def _start_from_aps(theta, mask, pins, ap_xy, anchors, clients, options):
  """A start for the pinned solve built from the APs alone: ``(anchors, clients)``.

  Each sample is localised on its own against its region's pinned APs
  (:func:`_fix_each`), its heading is the best one for those APs, and each other anchor
  is placed where the rays of its angles from those clients meet (iteratively
  reweighted least squares with the solver's Cauchy loss). ``anchors`` / ``clients``
  (the free layout) stay where this is not possible: regions with fewer than 3 pinned
  APs, anchors seen by fewer than 2 localised samples. A sample whose fix is missing
  (fewer than 3 paths from the APs) or implausible (:func:`_ap_box`) keeps its free
  position if that is plausible, else starts at the APs' centroid.
  """
  anchors, clients = np.array(anchors, np.float64), np.array(clients, np.float64)
  for r in range(len(theta)):
    if pins[r].sum() < 3:
      continue
    aps = ap_xy[r][pins[r]]
    inside = _ap_box(aps)
    ap_paths = mask[r] & pins[r][None]
    pos = _fix_each(theta[r], ap_paths, ap_xy[r], aps, options)
    found = inside(pos)
    free_ok = inside(clients[r])[:, None]
    clients[r] = np.where(found[:, None], pos, np.where(free_ok, clients[r], aps.mean(0)))
    heading = _headings(theta[r], ap_paths, ap_xy[r], clients[r])
    for k in np.flatnonzero(~pins[r] & mask[r].any(0)):
      rays = found & mask[r][:, k]
      if rays.sum() >= 2:
        anchors[r][k] = _ray_intersection(
          clients[r][rays], theta[r][rays, k] + heading[rays], anchors[r][k], options
        )
  return anchors, clients


def _ray_intersection(origins, angles, start, options) -> np.ndarray:
  """The point nearest in angle to every ray (``origins [T, 2]``, ``angles [T]``): least
  squares over the perpendicular misses weighted by 1 / distance^2, reweighted 5 times
  with the Cauchy loss of ``robust_scale``; ``start`` if the rays are near parallel."""
  normal = np.stack([-np.sin(angles), np.cos(angles)], -1)
  point, weight = start, np.ones(len(origins))
  for _ in range(5):
    nn = weight[:, None, None] * normal[:, :, None] * normal[:, None, :]
    m = nn.sum(0)
    if np.linalg.cond(m) > 1e8:
      break
    point = np.linalg.solve(m, np.einsum('tij,tj->i', nn, origins))
    dist = np.maximum(np.linalg.norm(point - origins, axis=-1), 1e-3)
    miss = np.einsum('ti,ti->t', normal, point - origins) / dist  # ~ the angle residual
    weight = 1.0 / dist**2 / (1.0 + (miss / max(options.robust_scale, 1e-6)) ** 2)
  return point


def _refit_far_clients(theta, mask, pins, ap_xy, anchors, clients, heading, options):
  """Clients of the pinned solution outside :func:`_ap_box`, localised again against the
  solved anchors (:func:`_fix_each`), kept where that lowers their cost. Returns
  ``(clients, heading, cost [R])`` with every region's cost recomputed."""
  clients, heading = clients.copy(), heading.copy()
  scale = float(options.robust_scale)

  def sample_costs(r, p, psi):
    args = (anchors[r], p, psi, theta[r], mask[r])
    return np.asarray(_sample_costs(*map(jnp.asarray, args), scale), np.float64)

  for r in range(len(theta)):
    if pins[r].sum() < 3:
      continue
    aps = ap_xy[r][pins[r]]
    inside = _ap_box(aps)
    far = mask[r].any(1) & ~inside(clients[r])
    if not far.any():
      continue
    fix = _fix_each(theta[r], mask[r], anchors[r], aps, options)
    psi = _headings(theta[r], mask[r], anchors[r], np.nan_to_num(fix))
    better = far & inside(fix)
    better &= sample_costs(r, np.nan_to_num(fix), psi) < sample_costs(r, clients[r], heading[r])
    clients[r][better], heading[r][better] = fix[better], psi[better]
  cost = np.array([sample_costs(r, clients[r], heading[r]).sum() for r in range(len(theta))])
  return clients, heading, cost


# ----------------------------------------------------------------------------------------
# Localising single samples against known anchors ("JADE alone" on a trajectory).


@functools.partial(jax.jit, static_argnames=('num_iters', 'scale'))
def localize(
  theta: jax.Array,
  mask: jax.Array,
  anchors: jax.Array,
  starts: jax.Array,
  *,
  num_iters: int,
  scale: float,
) -> tuple[jax.Array, jax.Array]:
  """Per-sample ADoA fit of the position against fixed anchors, vectorised over samples.

  Args:
    theta: ``[T, M]`` AoAs; mask: ``[T, M]`` usable paths (seen and anchor known).
    anchors: ``[M, 2]`` anchor positions (any finite value where unknown; masked out).
    starts: ``[S, 2]`` starting positions tried for every sample.
    num_iters: Levenberg-Marquardt iterations (``config.jade.localize_iters``).
    scale: Cauchy scale of the chord residual (``config.jade.robust_scale``).

  Returns:
    ``(position [T, 2], cost_per_path [T])`` of the best start; NaN position where fewer
    than 3 paths are usable (two ADoAs are needed for a 2-D fix).
  """
  anchors = jnp.where(jnp.isfinite(anchors), anchors, 0.0)

  def one(theta, mask, p0):
    # One sample is a region of one: its anchors are fixed, so only the per-sample
    # block of the normal equations (position + heading) is solved.
    psi0 = geometry.best_heading(theta, mask, geometry.bearing(anchors, p0))

    def propose(state, lam):
      p, psi = state
      u, b_x, _, _, _ = _normal_equations(
        anchors, p[None], psi[None], theta[None], mask[None], scale
      )
      dx = -jnp.linalg.solve(_damp(u[0], lam), b_x[0])
      return p + dx[:2], geometry.wrap(psi + dx[2])

    def cost(state):
      p, psi = state
      return _cost(anchors, p[None], psi[None], theta[None], mask[None], scale)

    (p, _), final = _levenberg_marquardt((p0, psi0), propose, cost, num_iters)
    return p, final

  def per_sample(theta, mask):
    p, cost = jax.vmap(one, (None, None, 0))(theta, mask, starts)
    best = jnp.argmin(jnp.where(jnp.isfinite(cost), cost, jnp.inf))
    n = mask.sum()
    ok = n >= 3
    return (jnp.where(ok, p[best], jnp.nan), jnp.where(ok, cost[best] / jnp.maximum(n, 1), jnp.nan))

  return jax.vmap(per_sample)(jnp.where(mask, theta, 0.0), mask)
