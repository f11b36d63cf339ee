"""Indoor 60 GHz simulator: floor plan -> survey and trajectory files.

Data flow: :mod:`floorplan` (walls, rooms, APs, route) -> this module (anchors, path
visibility, detection, noisy AoAs) -> ``survey.h5`` / ``trajectory.h5`` (the mmWave
measurement schema of docs/schemas.md) -> read back by :mod:`reader` for JADE, the
features, the nets and the tracker.

Propagation model (quasi-optical, 2-D):

* Every AP ``a`` has a line-of-sight anchor (``anchor_kind`` 0) and one virtual anchor per
  wall *line* (``anchor_kind`` 1), ``a' = a - 2((a - q).n) n`` for the line through ``q``
  with unit normal ``n``. Collinear segments (a wall interrupted by doorways) are one
  line: they share one mirror image, so they are one anchor.
* A reflected path exists when AP and client are on the same side of the line and the
  specular point (where client -> ``a'`` crosses the line) lies on one of the line's
  segments, not in a doorway gap. A path (either leg of a reflection) crossing any other
  wall is blocked: walls are opaque at 60 GHz. The four sides of every obstacle of the
  plan are walls like any other (``FloorPlan.segments``).
* Relative received power is free-space loss over the unfolded path length plus
  ``reflection_loss_db`` per bounce; a path is detected when it is at most
  ``detection_threshold_db`` below the strongest path of the same AP (each AP's channel
  is sounded separately, so the receiver's dynamic range applies per AP).
* The client's heading ``psi`` is unknown to the method, so a measured angle is
  ``theta_m = wrap(atan2(a_m - p) - psi + eps)``, ``eps ~ N(0, sigma^2)``.

Anchors that are never detected anywhere are dropped, and the remaining ones are written
in a seeded random order: consumers must rely on ``anchor_ap``/``anchor_kind`` only.

:func:`simulate` is also the skeleton of the ray-traced source (:mod:`.raytrace`):
positions, headings, time stamps, AoA noise, anchor pruning and order, and the files
are the same code; only the ``propagation`` model (which anchors' paths arrive, and at
which azimuth) is swapped.
"""

from __future__ import annotations

import dataclasses
import json
import os

import h5py
import numpy as np

from csiloc_jax.mmwave import floorplan as floorplan_lib
from csiloc_jax.mmwave import geometry

FREQUENCY_HZ = 60e9
# Scenario sizes when neither the caller nor ``config.data`` sets them (the config's
# ``num_survey`` / ``num_trajectory_steps`` are unset by default and mean these).
DEFAULT_SURVEY_PER_ROOM = 300
DEFAULT_TRAJECTORY_STEPS = 388
_EPS = 1e-9


def mirror(point: np.ndarray, q: np.ndarray, n: np.ndarray) -> np.ndarray:
  """Mirror image of ``point`` across the line through ``q`` with unit normal ``n``."""
  point = np.asarray(point, np.float64)
  return point - 2.0 * np.sum((point - q) * n, axis=-1, keepdims=True) * n


@dataclasses.dataclass(frozen=True)
class WallLines:
  """Wall segments grouped into reflecting lines."""

  normal: np.ndarray  # [L, 2] unit normals.
  offset: np.ndarray  # [L] n.x = offset on the line.
  segment_line: np.ndarray  # [W] line index of each wall segment.


def wall_lines(walls: np.ndarray, tol: float = 1e-6) -> WallLines:
  """Groups collinear wall segments into lines (doorway gaps split segments, not lines)."""
  d = walls[:, 2:] - walls[:, :2]
  n = np.stack([-d[:, 1], d[:, 0]], -1) / np.linalg.norm(d, axis=-1, keepdims=True)
  # Canonical sign so that the two orientations of a segment give the same line.
  flip = (n[:, 0] < -tol) | ((np.abs(n[:, 0]) <= tol) & (n[:, 1] < 0))
  n = np.where(flip[:, None], -n, n)
  c = np.sum(n * walls[:, :2], -1)
  normals, offsets, seg_line = [], [], np.zeros(len(walls), np.int32)
  for w in range(len(walls)):
    for li, (nl, cl) in enumerate(zip(normals, offsets)):
      if np.abs(nl @ n[w]) > 1 - tol and abs(cl - c[w]) < 1e-6 * max(1.0, abs(cl)):
        seg_line[w] = li
        break
    else:  # A new line (runs once per wall segment of the plan, not per sample).
      seg_line[w] = len(normals)
      normals.append(n[w])
      offsets.append(c[w])
  return WallLines(np.asarray(normals), np.asarray(offsets), seg_line)


@dataclasses.dataclass(frozen=True)
class AnchorTable:
  """Every candidate anchor of a floor plan (before visibility pruning)."""

  position: np.ndarray  # [M, 2] physical or virtual anchor position.
  ap: np.ndarray  # [M] physical AP index.
  kind: np.ndarray  # [M] 0 = direct path, 1 = first-order reflection.
  line: np.ndarray  # [M] reflecting wall line, -1 for direct paths.


def anchor_table(fp: floorplan_lib.FloorPlan, lines: WallLines) -> AnchorTable:
  """The LoS anchor and one virtual anchor per wall line for every AP."""
  pos, ap, kind, line = [], [], [], []
  for a, ap_pos in enumerate(fp.aps):
    pos.append(ap_pos)
    ap.append(a)
    kind.append(0)
    line.append(-1)
    for li, (n, c) in enumerate(zip(lines.normal, lines.offset)):
      if abs(n @ ap_pos - c) < 1e-6:  # An AP on the wall has no distinct mirror image.
        continue
      pos.append(mirror(ap_pos, n * c, n))
      ap.append(a)
      kind.append(1)
      line.append(li)
  return AnchorTable(
    np.asarray(pos), np.asarray(ap, np.int32), np.asarray(kind, np.int8), np.asarray(line, np.int32)
  )


def _crosses(p0: np.ndarray, p1: np.ndarray, walls: np.ndarray) -> np.ndarray:
  """Whether segments p0->p1 ([..., 2]) properly cross each wall: [..., W]."""
  w0, w1 = walls[:, :2], walls[:, 2:]

  def orient(a, b, c):
    return (b[..., 0] - a[..., 0]) * (c[..., 1] - a[..., 1]) - (b[..., 1] - a[..., 1]) * (
      c[..., 0] - a[..., 0]
    )

  p0e, p1e = p0[..., None, :], p1[..., None, :]
  o1 = orient(p0e, p1e, w0)
  o2 = orient(p0e, p1e, w1)
  o3 = orient(w0, w1, p0e)
  o4 = orient(w0, w1, p1e)
  return (o1 * o2 < -_EPS) & (o3 * o4 < -_EPS)


def trace_paths(
  fp: floorplan_lib.FloorPlan,
  anchors: AnchorTable,
  lines: WallLines,
  positions: np.ndarray,
  *,
  reflection_loss_db: float,
  detection_threshold_db: float,
  detection_reference: str = 'ap',
) -> tuple[np.ndarray, np.ndarray]:
  """Geometric visibility and detection of every anchor's path at every position.

  Returns ``(detected [T, M] bool, power_db [T, M])``.
  """
  p = np.asarray(positions, np.float64)[:, None, :]  # [T, 1, 2]
  a_virtual = anchors.position[None]  # [1, M, 2]
  a_phys = fp.aps[anchors.ap][None]  # [1, M, 2]
  is_refl = anchors.kind[None] == 1
  line = np.maximum(anchors.line, 0)
  n, c = lines.normal[line][None], lines.offset[line][None]  # [1, M, 2], [1, M]

  # Specular point: where the straight segment client -> virtual anchor meets the line.
  side_p = np.sum(n * p, -1) - c
  side_a = np.sum(n * a_phys, -1) - c
  same_side = side_p * side_a > _EPS
  denom = np.sum(n * (a_virtual - p), -1)
  t = np.where(np.abs(denom) > _EPS, -side_p / np.where(np.abs(denom) > _EPS, denom, 1.0), -1)
  s = p + t[..., None] * (a_virtual - p)  # [T, M, 2]
  # On a segment of that line (not in a doorway gap), with a 1 cm margin at the ends.
  seg_of_line = lines.segment_line[None, None, :] == line[None, :, None]  # [1, M, W]
  segments = fp.segments  # Walls, then obstacle sides: the order of ``wall_lines``.
  w0, w1 = segments[:, :2], segments[:, 2:]
  seg_d = w1 - w0
  seg_len = np.linalg.norm(seg_d, axis=-1)
  u = np.sum((s[..., None, :] - w0) * seg_d, -1) / seg_len  # [T, M, W] metres along.
  on_segment = np.any(seg_of_line & (u > 0.01) & (u < seg_len - 0.01), -1)
  refl_geom_ok = same_side & (t > 0) & (t < 1) & on_segment

  # Blocking: the reflecting line's own segments are exempt (the legs touch it at s).
  exempt = np.where(is_refl[..., None], seg_of_line, False)  # [1, M, W]
  leg_end = np.where(is_refl[..., None], s, np.broadcast_to(a_phys, s.shape))
  blocked = np.any(_crosses(np.broadcast_to(p, s.shape), leg_end, segments) & ~exempt, -1)
  blocked |= is_refl & np.any(_crosses(s, np.broadcast_to(a_phys, s.shape), segments) & ~exempt, -1)
  visible = ~blocked & np.where(is_refl, refl_geom_ok, True)

  length = np.linalg.norm(a_virtual - p, axis=-1)  # Unfolded path length.
  power = -20.0 * np.log10(np.maximum(length, 0.1)) - reflection_loss_db * is_refl
  power = np.where(visible, power, -np.inf)
  return detect(power, anchors.ap, detection_threshold_db, detection_reference), power


DETECTION_REFERENCES = ('ap', 'sample')


def detect(
  power_db: np.ndarray, anchor_ap: np.ndarray, threshold_db: float, reference: str = 'ap'
) -> np.ndarray:
  """Which paths the receiver resolves: ``power_db`` [T, M] (-inf where no path) ->
  detected [T, M].

  ``reference='ap'``: each AP's channel is sounded separately (its own beacons / beam
  training), so the dynamic range applies per AP: a path is lost when it is more than
  ``threshold_db`` below the strongest path *of the same AP* at that position.
  ``reference='sample'``: one receiver dynamic range for everything it hears: a path is
  lost when it is more than ``threshold_db`` below the strongest path of *any* AP there
  (far APs drop out next to a near one).
  """
  if reference not in DETECTION_REFERENCES:
    raise ValueError(
      f'detection reference must be one of {DETECTION_REFERENCES}, got {reference!r}'
    )
  if reference == 'sample':
    strongest = np.max(power_db, -1, keepdims=True)
  else:
    strongest = np.full(power_db.shape, -np.inf)
    for a in np.unique(anchor_ap):
      cols = anchor_ap == a
      strongest[:, cols] = power_db[:, cols].max(-1, keepdims=True)
  return np.isfinite(power_db) & (power_db >= strongest - threshold_db)


def corrupt_association(
  aoa: np.ndarray, rng: np.random.Generator, misassociation_rate: float, spurious_rate: float
) -> np.ndarray:
  """Imperfect association on measured AoAs ``[T, M]`` (NaN = not detected).

  Each detected path is, with probability ``misassociation_rate``, reported in the
  column of another anchor that was not detected at that sample (the angle stays the
  path's true arrival: the path is attributed to the wrong anchor). Then each sample
  gains Poisson(``spurious_rate``) spurious paths, each in a random undetected column at
  a uniformly random angle. Ground truth is not touched.
  """
  if misassociation_rate <= 0 and spurious_rate <= 0:
    return aoa
  out = aoa.copy()
  for t in range(len(out)):  # Per sample: a handful of paths, a short loop.
    row = out[t]
    if misassociation_rate > 0:
      undetected = np.isnan(aoa[t])
      seen = np.flatnonzero(~undetected)
      moved = seen[rng.random(len(seen)) < misassociation_rate]
      for j in moved:
        # Only anchors undetected at this sample take a path: a column another moved
        # path left empty still belongs to an anchor the receiver did see.
        free = np.flatnonzero(undetected & np.isnan(row))
        if len(free):
          row[rng.choice(free)], row[j] = row[j], np.nan
    if spurious_rate > 0:
      free = np.flatnonzero(np.isnan(row))
      count = min(rng.poisson(spurious_rate), len(free))
      row[rng.choice(free, count, replace=False)] = rng.uniform(-np.pi, np.pi, count)
  return out


def measure_aoa(
  anchor_pos: np.ndarray,
  positions: np.ndarray,
  headings: np.ndarray,
  detected: np.ndarray,
  noise_rad: float,
  rng: np.random.Generator,
  arrival: np.ndarray | None = None,
  outlier_fraction: float = 0.0,
  outlier_rad: float = 0.0,
) -> np.ndarray:
  """Noisy AoAs in the client frame, NaN where a path is not detected: [T, M].

  ``arrival`` [T, M]: the paths' azimuths of arrival in the floor's frame where a ray
  tracer gives them; by default the bearing from the client to the anchor.
  """
  if arrival is None:
    d = anchor_pos[None] - positions[:, None]
    arrival = np.arctan2(d[..., 1], d[..., 0])
  theta = arrival - headings[:, None]
  # A Gaussian mixture: with probability outlier_fraction the error is drawn with the
  # wider outlier_rad (heavier tails than one Gaussian).
  # No extra draw without outliers: the scenarios of a seed stay what they were.
  scale = (
    np.where(rng.random(theta.shape) < outlier_fraction, outlier_rad, noise_rad)
    if outlier_fraction > 0
    else noise_rad
  )
  theta = theta + scale * rng.standard_normal(theta.shape)
  return np.where(detected, geometry.wrap(theta), np.nan)


def sample_survey(
  fp: floorplan_lib.FloorPlan,
  num_per_room: int,
  rng: np.random.Generator,
  margin: float = 0.3,
  ap_clearance: float = 0.3,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """Uniform positions inside every room, random headings; returns (pos, heading, room).

  Positions keep ``margin`` from the walls and obstacles and ``ap_clearance`` from every
  AP (APs are mounted overhead; right under one, a 2-D angle of arrival means nothing).
  """
  boxes = fp.room_boxes
  room = np.repeat(np.arange(fp.num_rooms, dtype=np.int32), num_per_room)
  lo, hi = boxes[room, :2] + margin, boxes[room, 2:] - margin
  pos = lo + (hi - lo) * rng.random((len(room), 2))
  for _ in range(100):  # Rejection sampling; a handful of rounds suffice.
    near = np.any(np.linalg.norm(pos[:, None] - fp.aps[None], axis=-1) < ap_clearance, -1)
    near |= fp.in_obstacle(pos, margin)
    if not near.any():
      break
    pos[near] = lo[near] + (hi[near] - lo[near]) * rng.random((int(near.sum()), 2))
  stuck = fp.in_obstacle(pos, margin)
  if stuck.any():
    rooms = sorted({fp.room_names[r] for r in room[stuck]})
    raise ValueError(
      f'floor plan {fp.name!r}: no free survey position found in rooms {rooms}: '
      f'obstacles (grown by the {margin} m margin) cover (nearly) all of them'
    )
  heading = rng.uniform(-np.pi, np.pi, len(room))
  return pos, heading, room


def _chaikin(points: np.ndarray, iterations: int = 2) -> np.ndarray:
  """Corner cutting: a smooth route that stays close to the waypoint polyline."""
  for _ in range(iterations):
    q = 0.75 * points[:-1] + 0.25 * points[1:]
    r = 0.25 * points[:-1] + 0.75 * points[1:]
    points = np.concatenate([points[:1], np.stack([q, r], 1).reshape(-1, 2), points[-1:]])
  return points


def sample_walk(
  fp: floorplan_lib.FloorPlan, num_steps: int, rng: np.random.Generator, speed_mps: float = 1.0
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """A walk along the plan's route at walking speed: (positions, headings, time_s)."""
  route = _chaikin(fp.walk)
  seg = np.linalg.norm(np.diff(route, axis=0), axis=-1)
  arc = np.concatenate([[0.0], np.cumsum(seg)])
  total = arc[-1]
  # Speed varies smoothly around the nominal (0.75x-1.25x) so a constant-velocity model
  # is an approximation, as for a real pedestrian; time steps are uniform.
  phase = rng.uniform(0, 2 * np.pi)
  u = np.linspace(0.0, 1.0, num_steps)
  speed = 1.0 + 0.25 * np.sin(2 * np.pi * 3.0 * u + phase)
  s = np.concatenate([[0.0], np.cumsum(0.5 * (speed[1:] + speed[:-1]))])
  s = s / s[-1] * total
  pos = np.stack([np.interp(s, arc, route[:, 0]), np.interp(s, arc, route[:, 1])], -1)
  dt = total / max(num_steps - 1, 1) / speed_mps
  time_s = np.arange(num_steps) * dt
  step = np.diff(pos, axis=0, append=pos[-1:] + (pos[-1:] - pos[-2:-1]))
  walking_dir = np.arctan2(step[:, 1], step[:, 0])
  # The device is not held exactly along the walking direction, and wobbles.
  offset = rng.uniform(-np.pi, np.pi) + np.cumsum(np.deg2rad(3.0) * rng.standard_normal(num_steps))
  return pos, geometry.wrap(walking_dir + offset), time_s


def _write_file(path: str, data: dict, attrs: dict) -> None:
  tmp = path + '.tmp'
  with h5py.File(tmp, 'w') as f:
    for k, v in data.items():
      # A Fletcher-32 checksum per chunk: the reader refuses data damaged after writing.
      f.create_dataset(k, data=v, fletcher32=True)
    for k, v in attrs.items():
      f.attrs[k] = v
  os.replace(tmp, path)


class GeometricPropagation:
  """The quasi-optical model of this module as :func:`simulate`'s ``propagation``.

  A propagation model has a ``table`` (:class:`AnchorTable`: every candidate anchor and
  its true position), ``lines`` (:class:`WallLines`: the reflecting planes the table's
  ``line`` refers to), and is called with client positions [T, 2] to give
  ``(detected [T, M], arrival [T, M] or None)``: which anchors' paths the client
  resolves and their azimuths of arrival in the floor's frame (``None``: the bearing
  from the client to the anchor, as here).
  """

  def __init__(
    self,
    fp: floorplan_lib.FloorPlan,
    *,
    reflection_loss_db: float,
    detection_threshold_db: float,
    detection_reference: str = 'ap',
  ):
    self.fp = fp
    self.lines = wall_lines(fp.segments)
    self.table = anchor_table(fp, self.lines)
    self.trace = dict(
      reflection_loss_db=reflection_loss_db,
      detection_threshold_db=detection_threshold_db,
      detection_reference=detection_reference,
    )

  def __call__(self, positions: np.ndarray) -> tuple[np.ndarray, None]:
    return trace_paths(self.fp, self.table, self.lines, positions, **self.trace)[0], None


def _columns(x: np.ndarray | None, keep: np.ndarray) -> np.ndarray | None:
  return None if x is None else x[:, keep]


def simulate(
  fp: floorplan_lib.FloorPlan,
  *,
  seed: int = 0,
  aoa_noise_deg: float = 5.0,
  num_survey: int = DEFAULT_SURVEY_PER_ROOM,
  num_trajectory_steps: int = DEFAULT_TRAJECTORY_STEPS,
  reflection_loss_db: float = 6.0,
  detection_threshold_db: float = 20.0,
  detection_reference: str = 'ap',
  aoa_outlier_fraction: float = 0.0,
  aoa_outlier_deg: float = 30.0,
  misassociation_rate: float = 0.0,
  spurious_rate: float = 0.0,
  shuffle_anchors: bool = True,
  propagation=None,
) -> dict:
  """Simulates a survey and a trajectory in memory; returns the two files' datasets
  (docs/schemas.md) as dicts, ground truth included.

  ``propagation`` (see :class:`GeometricPropagation`) decides which paths arrive; by
  default the geometric model with ``reflection_loss_db``, ``detection_threshold_db`` and
  ``detection_reference`` (the ray-traced source, :mod:`.raytrace`, passes its own).
  ``aoa_outlier_fraction`` / ``aoa_outlier_deg``: heavier-tailed AoA noise (a Gaussian
  mixture, see :func:`measure_aoa`); ``misassociation_rate`` / ``spurious_rate``:
  imperfect association (:func:`corrupt_association`), applied to survey and trajectory.
  """
  rng = np.random.default_rng(seed)
  if propagation is None:
    propagation = GeometricPropagation(
      fp,
      reflection_loss_db=reflection_loss_db,
      detection_threshold_db=detection_threshold_db,
      detection_reference=detection_reference,
    )
  table = propagation.table
  noise = np.deg2rad(aoa_noise_deg)
  outliers = dict(outlier_fraction=aoa_outlier_fraction, outlier_rad=np.deg2rad(aoa_outlier_deg))

  def measured(anchor_pos, pos, head, det, arr):
    aoa = measure_aoa(anchor_pos, pos, head, det, noise, rng, arr, **outliers)
    return corrupt_association(aoa, rng, misassociation_rate, spurious_rate).astype(np.float32)

  s_pos, s_head, s_room = sample_survey(fp, num_survey, rng)
  s_det, s_arr = propagation(s_pos)
  t_pos, t_head, t_time = sample_walk(fp, num_trajectory_steps, rng)
  inside = np.flatnonzero(fp.in_obstacle(t_pos))
  if inside.size:  # The smoothed route cut a corner through an obstacle.
    raise ValueError(
      f'floor plan {fp.name!r}: the walk passes through an obstacle at steps '
      f'{inside.tolist()[:10]}: move its waypoints away from the obstacle'
    )
  t_det, t_arr = propagation(t_pos)

  keep = np.flatnonzero(s_det.any(0) | t_det.any(0))
  if shuffle_anchors:
    keep = rng.permutation(keep)
  anchor_pos = table.position[keep]
  common = {
    'anchor_ap': table.ap[keep].astype(np.int32),
    'anchor_kind': table.kind[keep].astype(np.int8),
    'ap_position': fp.aps.astype(np.float32),
    'anchor_position': anchor_pos.astype(np.float32),
  }
  survey = dict(
    common,
    aoa=measured(anchor_pos, s_pos, s_head, s_det[:, keep], _columns(s_arr, keep)),
    region=s_room.astype(np.int32),
    position=s_pos.astype(np.float32),
    heading=s_head.astype(np.float32),
  )
  trajectory = dict(
    common,
    aoa=measured(anchor_pos, t_pos, t_head, t_det[:, keep], _columns(t_arr, keep)),
    region=fp.room_of(t_pos).astype(np.int32),
    time_s=t_time,
    position=t_pos.astype(np.float32),
    heading=t_head.astype(np.float32),
  )
  return {
    'survey': survey,
    'trajectory': trajectory,
    'anchor_line': table.line[keep],
    'lines': propagation.lines,
  }


def write_scenario(
  out_dir: str,
  *,
  seed: int = 0,
  aoa_noise_deg: float = 5.0,
  num_survey: int = DEFAULT_SURVEY_PER_ROOM,
  num_trajectory_steps: int = DEFAULT_TRAJECTORY_STEPS,
  floorplan=None,
  reflection_loss_db: float = 6.0,
  detection_threshold_db: float = 20.0,
  detection_reference: str = 'ap',
  aoa_outlier_fraction: float = 0.0,
  aoa_outlier_deg: float = 30.0,
  misassociation_rate: float = 0.0,
  spurious_rate: float = 0.0,
) -> dict:
  """Writes ``out_dir/survey.h5`` and ``out_dir/trajectory.h5`` (schema: docs/schemas.md).

  Args:
    out_dir: destination folder (created).
    seed: seeds every random draw (positions, headings, noise, anchor order).
    aoa_noise_deg: standard deviation of the AoA noise, degrees.
    num_survey: survey samples *per room* (region).
    num_trajectory_steps: length of the walk through all rooms.
    floorplan: ``None`` for the default six-room plan, a plan dict, a JSON path or a
      :class:`~csiloc_jax.mmwave.floorplan.FloorPlan`.
    reflection_loss_db: extra loss of a first-order reflection.
    detection_threshold_db: paths weaker than the strongest path of their AP by more
      than this are lost.
    detection_reference: ``'ap'`` (the strongest path of the same AP) or ``'sample'``
      (the strongest path of any AP at that position), see :func:`detect`.
    aoa_outlier_fraction: fraction of paths whose AoA error is drawn with
      ``aoa_outlier_deg`` instead of ``aoa_noise_deg``.
    aoa_outlier_deg: standard deviation of the outlier component, degrees.
    misassociation_rate: probability that a detected path is attributed to another
      (undetected) anchor.
    spurious_rate: mean number of spurious paths per sample (random anchor, random
      angle).

  Returns:
    ``{'survey': path, 'trajectory': path, ...}`` with a summary of the scenario.
  """
  fp = floorplan_lib.load_floorplan(floorplan)
  check_sizes(num_survey, num_trajectory_steps)
  sim = simulate(
    fp,
    seed=seed,
    aoa_noise_deg=aoa_noise_deg,
    num_survey=num_survey,
    num_trajectory_steps=num_trajectory_steps,
    reflection_loss_db=reflection_loss_db,
    detection_threshold_db=detection_threshold_db,
    detection_reference=detection_reference,
    aoa_outlier_fraction=aoa_outlier_fraction,
    aoa_outlier_deg=aoa_outlier_deg,
    misassociation_rate=misassociation_rate,
    spurious_rate=spurious_rate,
  )
  attrs = {
    'aoa_noise_deg': float(aoa_noise_deg),
    'frequency_hz': FREQUENCY_HZ,
    'seed': int(seed),
    'floorplan_json': json.dumps(fp.to_dict()),
    'reflection_loss_db': float(reflection_loss_db),
    'detection_threshold_db': float(detection_threshold_db),
    'detection_reference': detection_reference,
    'aoa_outlier_fraction': float(aoa_outlier_fraction),
    'aoa_outlier_deg': float(aoa_outlier_deg),
    'misassociation_rate': float(misassociation_rate),
    'spurious_rate': float(spurious_rate),
  }
  return write_simulation(out_dir, fp, sim, attrs, 'csiloc_jax.mmwave.simulator')


def check_sizes(num_survey: int, num_trajectory_steps: int) -> None:
  """Rejects scenario sizes no survey or walk can have."""
  if num_survey < 1 or num_trajectory_steps < 2:
    raise ValueError(
      'num_survey must be >= 1 and num_trajectory_steps >= 2, got '
      f'{num_survey} and {num_trajectory_steps}'
    )


def write_simulation(out_dir: str, fp, sim: dict, attrs: dict, source: str) -> dict:
  """Writes :func:`simulate`'s result as ``survey.h5`` / ``trajectory.h5`` with ``attrs``
  and returns the scenario summary (``source`` names the simulator in descriptions)."""
  os.makedirs(out_dir, exist_ok=True)
  aoa_noise_deg = attrs['aoa_noise_deg']
  seed = attrs['seed']
  num_survey = len(sim['survey']['region']) // max(fp.num_rooms, 1)
  num_trajectory_steps = len(sim['trajectory']['time_s'])
  paths = {k: os.path.join(out_dir, f'{k}.h5') for k in ('survey', 'trajectory')}
  _write_file(
    paths['survey'],
    sim['survey'],
    dict(
      attrs,
      description=f'mmWave survey on floor {fp.name!r}: {num_survey} random '
      f'positions per room, random headings, {source}',
    ),
  )
  _write_file(
    paths['trajectory'],
    sim['trajectory'],
    dict(
      attrs,
      description=f'mmWave trajectory on floor {fp.name!r}: a '
      f'{num_trajectory_steps}-step walk through every room, {source}',
    ),
  )
  s_vis = np.isfinite(sim['survey']['aoa'])
  t_vis = np.isfinite(sim['trajectory']['aoa'])
  t_pos = sim['trajectory']['position']
  return dict(
    paths,
    num_anchors=int(s_vis.shape[1]),
    num_aps=int(len(fp.aps)),
    num_regions=int(fp.num_rooms),
    num_survey_samples=int(len(s_vis)),
    num_trajectory_steps=int(len(t_vis)),
    mean_paths_survey=float(s_vis.sum(1).mean()),
    mean_paths_trajectory=float(t_vis.sum(1).mean()),
    trajectory_length_m=float(np.linalg.norm(np.diff(t_pos, axis=0), axis=-1).sum()),
    trajectory_duration_s=float(sim['trajectory']['time_s'][-1]),
    aoa_noise_deg=float(aoa_noise_deg),
    seed=int(seed),
    floorplan=fp.name,
  )


def scenario_kwargs(data) -> dict:
  """:func:`write_scenario` / :func:`simulate` arguments asked for by a ``config.data``
  section (``configs/mmwave_tiny.py``); unset sizes take the defaults above."""
  return {
    'seed': data['scenario_seed'],
    'aoa_noise_deg': data['aoa_noise_deg'],
    'num_survey': data['num_survey'] or DEFAULT_SURVEY_PER_ROOM,
    'num_trajectory_steps': data['num_trajectory_steps'] or DEFAULT_TRAJECTORY_STEPS,
    'floorplan': data['floorplan'] or None,
    'detection_threshold_db': data['detection_threshold_db'],
    'detection_reference': data['detection_reference'],
    'aoa_outlier_fraction': data['aoa_outlier_fraction'],
    'aoa_outlier_deg': data['aoa_outlier_deg'],
    'misassociation_rate': data['misassociation_rate'],
    'spurious_rate': data['spurious_rate'],
  }
