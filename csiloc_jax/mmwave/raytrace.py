"""Ray-traced mmWave survey and trajectory files, from a floor plan, with Sionna RT.

Where this sits: a second propagation model for :func:`.simulator.simulate`, next to the
built-in geometric one. The floor plan (:mod:`.floorplan`), the positions, headings,
regions, time stamps, AoA noise, anchor pruning and order and the file writer are the
built-in simulator's code; which paths arrive, from which anchor and at which azimuth
come from Sionna RT through :mod:`csiloc_jax.core.raytracer` (the only module that
imports it)::

  floor plan ──> boxes (walls, obstacles) ──> Mitsuba scene of ITU materials
  ──> per AP: line of sight + first-order specular reflections to every client
  ──> each path mapped to its anchor through the face it reflected off, checked
  against the mirrored AP ──> simulator.detect (relative threshold, per AP or per
  sample) ──> simulator.measure_aoa (traced azimuth - heading + noise; outliers and
  association errors as the built-in simulator adds them) ──> survey.h5,
  trajectory.h5 (docs/schemas.md) ──> reader, JADE, nets, tracker

Scene. Every wall segment becomes a box ``wall_thickness_m`` thick (centred on the
segment) and ``wall_height_m`` high of the plan's ``wall_material``; every obstacle a
box of its own footprint and material, as high as the walls. An end of a wall that
meets another wall is extended by half the thickness so that corners are closed; a
free end (a doorway jamb) stays where the plan puts it, so doorways keep their width.
There is no floor or ceiling, and APs and clients are all at ``device_height_m``: every
path stays in the horizontal plane, as the 2-D method assumes. Walls are opaque at
60 GHz (no refraction); no diffraction.

Anchors. The AP itself (``anchor_kind`` 0), and the AP mirrored across the plane of
each vertical box face (kind 1). Coplanar faces -- the same side of collinear wall
segments split by doorways, or an obstacle flush with a wall -- are one plane, so one
anchor, like the built-in simulator's wall lines (:func:`.simulator.wall_lines` groups
both). A face is half a wall thickness from the plan's wall line, so a virtual anchor
sits one thickness further than the built-in simulator's. Faces the built-in model has
no counterpart for, such as doorway jambs, are anchors like any other.

Association. A reflected path names the object it hit (``Paths.objects``) and its
specular point (``Paths.vertices``): the object gives the box, the point the face of
that box, the face its plane and so the anchor. Every path is then checked against
the geometry: its azimuth of arrival must point at its anchor within
``association_tolerance_deg`` and its length (delay x c) must equal the distance to it.
A path that fails is dropped and counted (``mismatched`` in the statistics, with a
warning), never kept under a wrong anchor.

Received power is ``|a|^2`` of the traced path (free-space loss and the ITU
reflection coefficient of the material at the angle of incidence included);
detection is the built-in simulator's rule (:func:`.simulator.detect`):
``detection_threshold_db`` below the strongest path of the same AP
(``detection_reference='ap'``) or of any AP (``'sample'``).
"""

from __future__ import annotations

import dataclasses
import json
import time

from absl import logging
import numpy as np

from csiloc_jax.core import raytracer
from csiloc_jax.mmwave import floorplan as floorplan_lib
from csiloc_jax.mmwave import geometry
from csiloc_jax.mmwave import simulator

SPEED_OF_LIGHT = 299_792_458.0
# A Mitsuba cube is two triangles per face, 12 in all.
_TRIANGLES_PER_BOX = 12
# How far a traced specular point may lie from the face plane it is assigned to
# (vertices are float32; a centimetre is far above their rounding and far below the
# distance between distinct faces).
_FACE_TOLERANCE_M = 0.01
# Traced path length vs. distance to the anchor (float32 delays): a looser check than
# the angle, catching a path that is not horizontal or not first-order.
_LENGTH_TOLERANCE_M = 0.05


@dataclasses.dataclass(frozen=True)
class Box:
  """A vertical box of the scene: footprint corners [4, 2] counter-clockwise (face k
  runs from corner k to corner k + 1), its ITU material and that material's slab
  thickness (the reflection coefficient of a finite slab depends on it)."""

  name: str
  corners: np.ndarray
  material: str
  thickness: float


def _touches_other_wall(point: np.ndarray, walls: np.ndarray, k: int) -> bool:
  """Whether ``point`` lies on a wall segment other than ``walls[k]``."""
  for j, (x0, y0, x1, y1) in enumerate(walls):
    if j == k:
      continue
    a, d = np.array([x0, y0]), np.array([x1 - x0, y1 - y0])
    t = np.clip(np.dot(point - a, d) / np.dot(d, d), 0.0, 1.0)
    if np.linalg.norm(a + t * d - point) < 1e-6:
      return True
  return False


def scene_boxes(fp: floorplan_lib.FloorPlan, wall_thickness_m: float) -> list[Box]:
  """The plan's walls (``wall<k>``) and obstacles (``obstacle<j>``) as boxes."""
  boxes = []
  h = 0.5 * wall_thickness_m
  for k, (x0, y0, x1, y1) in enumerate(np.asarray(fp.walls, np.float64)):
    p0, p1 = np.array([x0, y0]), np.array([x1, y1])
    d = (p1 - p0) / np.linalg.norm(p1 - p0)
    n = np.array([-d[1], d[0]])
    # Close corners and T-junctions; leave free ends (doorway jambs) at the plan's
    # coordinates.
    p0 = p0 - h * d * _touches_other_wall(p0, fp.walls, k)
    p1 = p1 + h * d * _touches_other_wall(p1, fp.walls, k)
    corners = np.stack([p0 - h * n, p1 - h * n, p1 + h * n, p0 + h * n])
    boxes.append(Box(f'wall{k}', corners, fp.wall_material, float(wall_thickness_m)))
  for j, ((x0, y0, x1, y1), material) in enumerate(zip(fp.obstacles, fp.obstacle_materials)):
    corners = np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1]], np.float64)
    boxes.append(Box(f'obstacle{j}', corners, material, float(min(x1 - x0, y1 - y0))))
  return boxes


def inside_box(boxes: list[Box], points: np.ndarray) -> np.ndarray:
  """Index of the box each point ([N, 2]) lies inside (-1: none)."""
  points = np.asarray(points, np.float64).reshape(-1, 2)
  out = np.full(len(points), -1)
  for k, box in enumerate(boxes):
    c, e = box.corners, np.roll(box.corners, -1, 0) - box.corners
    # Counter-clockwise corners: inside means left of every edge.
    r = points[:, None] - c[None]
    left = e[None, :, 0] * r[..., 1] - e[None, :, 1] * r[..., 0]
    out[(out < 0) & np.all(left > 0, -1)] = k
  return out


def _num(x: float) -> str:
  # repr of a Python float round-trips exactly: the scene is the plan, not a rounding.
  return repr(float(x))


def scene_xml(boxes: list[Box], height_m: float) -> str:
  """Mitsuba XML of the boxes, standing on z = 0, ``height_m`` high; shape ids are the
  box names."""
  bsdfs, shapes = [], []
  for box in boxes:
    c = box.corners
    centre = c.mean(0)
    length, depth = np.linalg.norm(c[1] - c[0]), np.linalg.norm(c[3] - c[0])
    angle = np.degrees(np.arctan2(c[1, 1] - c[0, 1], c[1, 0] - c[0, 0]))
    bsdfs.append(
      f'<bsdf type="itu-radio-material" id="material-{box.name}">'
      f'<string name="type" value="{box.material}"/>'
      f'<float name="thickness" value="{_num(box.thickness)}"/></bsdf>'
    )
    # The cube is [-1, 1]^3: scale by the half extents, turn, then move into place.
    shapes.append(
      f'<shape type="cube" id="{box.name}"><transform name="to_world">'
      f'<scale x="{_num(length / 2)}" y="{_num(depth / 2)}" z="{_num(height_m / 2)}"/>'
      f'<rotate z="1" angle="{_num(angle)}"/>'
      f'<translate x="{_num(centre[0])}" y="{_num(centre[1])}" z="{_num(height_m / 2)}"/>'
      f'</transform><ref id="material-{box.name}" name="bsdf"/></shape>'
    )
  return '<scene version="2.1.0">' + ''.join(bsdfs) + ''.join(shapes) + '</scene>'


def _check(condition: bool, message: str) -> None:
  if not condition:
    raise ValueError(message)


class RaytracedPropagation:
  """:func:`.simulator.simulate`'s ``propagation``, traced with Sionna RT (see
  :class:`.simulator.GeometricPropagation` for the interface)."""

  def __init__(
    self,
    fp: floorplan_lib.FloorPlan,
    *,
    detection_threshold_db: float,
    detection_reference: str = 'ap',
    wall_height_m: float,
    wall_thickness_m: float,
    device_height_m: float,
    samples_per_src: int,
    batch_size: int,
    seed: int,
    association_tolerance_deg: float,
    progress: bool = False,
  ):
    _check(wall_thickness_m > 0, f'wall_thickness_m must be > 0, got {wall_thickness_m}')
    _check(
      0 < device_height_m < wall_height_m,
      f'device_height_m={device_height_m} must be between 0 and wall_height_m={wall_height_m} '
      '(walls lower than the antennas would let paths pass over them)',
    )
    _check(samples_per_src >= 1, f'samples_per_src must be >= 1, got {samples_per_src}')
    _check(batch_size >= 1, f'batch_size must be >= 1, got {batch_size}')
    _check(
      association_tolerance_deg > 0,
      f'association_tolerance_deg must be > 0, got {association_tolerance_deg}',
    )
    _check(
      detection_threshold_db >= 0,
      f'detection_threshold_db must be >= 0, got {detection_threshold_db}',
    )
    _check(
      detection_reference in simulator.DETECTION_REFERENCES,
      f'detection_reference must be one of {simulator.DETECTION_REFERENCES}, '
      f'got {detection_reference!r}',
    )
    self.fp = fp
    self.threshold_db = float(detection_threshold_db)
    self.reference = detection_reference
    self.height = float(device_height_m)
    self.tolerance = np.deg2rad(association_tolerance_deg)
    self.progress = progress

    # Reflecting planes: every vertical face of every box, coplanar faces merged.
    boxes = self.boxes = scene_boxes(fp, wall_thickness_m)
    self._check_outside(fp.aps, 'AP')
    faces = np.concatenate(
      [np.concatenate([b.corners, np.roll(b.corners, -1, 0)], 1) for b in boxes]
    )
    self.lines = simulator.wall_lines(faces)
    self.face_line = self.lines.segment_line.reshape(len(boxes), 4)
    self.table = simulator.anchor_table(fp, self.lines)
    num_aps, num_lines = len(fp.aps), len(self.lines.normal)
    # (AP, plane) -> anchor; column ``num_lines`` is the AP's line-of-sight anchor.
    self.anchor_of = np.full((num_aps, num_lines + 1), -1, np.int64)
    self.anchor_of[self.table.ap, np.where(self.table.kind == 0, num_lines, self.table.line)] = (
      np.arange(len(self.table.ap))
    )

    self.scene = raytracer.load_scene_xml(scene_xml(boxes, wall_height_m), simulator.FREQUENCY_HZ)
    ids = raytracer.object_ids(self.scene)
    # Object ids change between loads, so they are only ever looked up through names.
    self.box_of_object = np.full(max(ids.values()) + 1, -1, np.int64)
    for k, box in enumerate(boxes):
      self.box_of_object[ids[box.name]] = k
    self.options = raytracer.TraceOptions(
      max_depth=1,
      reflection=True,
      diffuse=False,
      refraction=False,
      diffraction=False,
      samples_per_src=int(samples_per_src),
      # Candidates are (triangle hit, target) pairs plus one line of sight per target;
      # a buffer that holds them all can never drop a path.
      max_paths_per_src=(_TRIANGLES_PER_BOX * len(boxes) + 1) * int(batch_size),
      batch_size=int(batch_size),
      seed=int(seed),
    )
    self.stats = dict(
      samples=0, paths=0, los_paths=0, los_samples=0, unassociated=0, mismatched=0, duplicates=0
    )
    self.seconds = 0.0

  def __call__(self, positions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Traces every AP to ``positions`` [T, 2]: (detected [T, M], azimuth of arrival
    [T, M] in the floor's frame, NaN where no path)."""
    start = time.perf_counter()
    positions = np.asarray(positions, np.float64)
    self._check_outside(positions, 'client position')
    t, m = len(positions), len(self.table.ap)
    power = np.full((t, m), -np.inf)
    arrival = np.full((t, m), np.nan)
    targets = np.concatenate([positions, np.full((t, 1), self.height)], -1)
    los = np.zeros(t, bool)
    for a, ap in enumerate(self.fp.aps):
      source = np.array([ap[0], ap[1], self.height])
      for lo, paths in raytracer.trace(
        self.scene, source, targets, self.options, raytracer.Array()
      ):
        rows, anchors, gain_db, phi = self._associate(paths, lo, a, positions)
        power[rows, anchors] = gain_db
        arrival[rows, anchors] = phi
        los[rows[self.table.kind[anchors] == 0]] = True
      if self.progress:
        logging.info(
          'sionna: AP %d/%d traced to %d positions (%.1f s so far)',
          a + 1,
          len(self.fp.aps),
          t,
          self.seconds + time.perf_counter() - start,
        )
    self.stats['samples'] += t
    self.stats['los_samples'] += int(los.sum())
    self.seconds += time.perf_counter() - start
    return simulator.detect(power, self.table.ap, self.threshold_db, self.reference), arrival

  def _check_outside(self, points: np.ndarray, what: str) -> None:
    # An antenna inside a wall box sees nothing or sees out of the wall's far side: the
    # plan put it closer to a wall than half the wall thickness.
    box = inside_box(self.boxes, points)
    bad = np.flatnonzero(box >= 0)
    if bad.size:
      k = bad[0]
      raise ValueError(
        f'{len(bad)} {what}(s) lie inside a wall or obstacle of the scene, e.g. '
        f'{np.round(points[k], 3).tolist()} inside {self.boxes[box[k]].name} (walls are '
        "wall_thickness_m thick, centred on the plan's segments): move them away or use "
        'thinner walls'
      )

  def _associate(self, paths: raytracer.Paths, lo: int, ap: int, positions: np.ndarray):
    """The anchor of every valid path of one batch; returns (rows, anchors, power_db,
    phi_r) of the paths that pass the geometric check, one per (row, anchor)."""
    i, p = np.nonzero(paths.valid)
    rows = lo + i
    obj = paths.objects[0, i, p].astype(np.int64)
    interaction = paths.interactions[0, i, p]
    is_los = (obj == raytracer.NO_OBJECT) & (interaction == raytracer.NONE)
    box = np.where(
      (obj >= 0) & (obj < len(self.box_of_object)) & (interaction == raytracer.SPECULAR),
      self.box_of_object[np.clip(obj, 0, len(self.box_of_object) - 1)],
      -1,
    )
    # The face of the box the specular point lies on: the closest of its four planes.
    line = self.face_line[np.maximum(box, 0)]  # [N, 4]
    vertex = paths.vertices[0, i, p, :2].astype(np.float64)
    off_plane = np.abs(
      np.sum(self.lines.normal[line] * vertex[:, None], -1) - self.lines.offset[line]
    )
    nearest = np.argmin(off_plane, -1)
    on_face = (box >= 0) & (off_plane[np.arange(len(i)), nearest] < _FACE_TOLERANCE_M)
    column = np.where(is_los, self.anchor_of.shape[1] - 1, line[np.arange(len(i)), nearest])
    anchor = np.where(is_los | on_face, self.anchor_of[ap, column], -1)
    associated = anchor >= 0

    # The check: the traced path must come from where the anchor is.
    d = self.table.position[np.maximum(anchor, 0)] - positions[rows]
    phi = paths.phi_r[i, p].astype(np.float64)
    angle_error = np.abs(geometry.wrap(phi - np.arctan2(d[:, 1], d[:, 0])))
    length = paths.tau[i, p].astype(np.float64) * SPEED_OF_LIGHT
    length_error = np.abs(length - np.linalg.norm(d, axis=-1))
    consistent = (angle_error <= self.tolerance) & (length_error <= _LENGTH_TOLERANCE_M)
    keep = associated & consistent
    gain = np.sum(np.abs(paths.a[i, :, p]) ** 2, -1)
    gain_db = 10.0 * np.log10(np.maximum(gain, 1e-30))

    # One path per (position, anchor): should the solver report a path twice, the
    # strongest copy stands for it.
    idx = np.flatnonzero(keep)
    key = rows[idx] * self.anchor_of.size + anchor[idx]
    order = np.lexsort((-gain_db[idx], key))
    _, first = np.unique(key[order], return_index=True)
    chosen = idx[order[first]]

    self.stats['paths'] += len(i)
    self.stats['los_paths'] += int(np.sum(is_los))
    self.stats['unassociated'] += int(np.sum(~associated))
    self.stats['mismatched'] += int(np.sum(associated & ~consistent))
    self.stats['duplicates'] += len(idx) - len(chosen)
    return rows[chosen], anchor[chosen], gain_db[chosen], phi[chosen]

  def statistics(self) -> dict:
    """Totals over every call: samples (positions) traced, paths before detection, ..."""
    s = dict(self.stats)
    n = max(s['samples'], 1)
    s['paths_per_sample'] = s['paths'] / n
    s['los_path_fraction'] = s['los_paths'] / max(s['paths'], 1)
    s['los_fraction'] = s['los_samples'] / n
    s['seconds'] = self.seconds
    s['samples_per_s'] = s['samples'] / max(self.seconds, 1e-9)
    return s


def write_scenario(
  out_dir: str,
  *,
  seed: int = 0,
  aoa_noise_deg: float = 5.0,
  num_survey: int = simulator.DEFAULT_SURVEY_PER_ROOM,
  num_trajectory_steps: int = simulator.DEFAULT_TRAJECTORY_STEPS,
  floorplan=None,
  detection_threshold_db: float = 20.0,
  detection_reference: str = 'ap',
  aoa_outlier_fraction: float = 0.0,
  aoa_outlier_deg: float = 30.0,
  misassociation_rate: float = 0.0,
  spurious_rate: float = 0.0,
  wall_height_m: float = 3.0,
  wall_thickness_m: float = 0.2,
  device_height_m: float = 1.5,
  samples_per_src: int = 50_000,
  batch_size: int = 256,
  association_tolerance_deg: float = 0.1,
  progress: bool = False,
) -> dict:
  """Writes ray-traced ``out_dir/survey.h5`` and ``out_dir/trajectory.h5``.

  Arguments shared with :func:`.simulator.write_scenario` mean the same (the same seed
  and plan give the same positions, headings and walk as the built-in simulator).

  Args:
    out_dir: destination folder (created).
    seed: seeds positions, headings, noise, anchor order and the ray tracer.
    aoa_noise_deg: standard deviation of the AoA noise, degrees.
    num_survey: survey samples *per room* (region).
    num_trajectory_steps: length of the walk through all rooms.
    floorplan: ``None`` for the default six-room plan, a plan name, a plan dict, a JSON
      path or a :class:`~csiloc_jax.mmwave.floorplan.FloorPlan` (walls, obstacles and
      their materials).
    detection_threshold_db: paths weaker than the strongest path of their AP (or of
      the sample) by more than this are lost.
    detection_reference: ``'ap'`` or ``'sample'``, see :func:`.simulator.detect`.
    aoa_outlier_fraction, aoa_outlier_deg: heavier-tailed AoA noise, as in
      :func:`.simulator.write_scenario`.
    misassociation_rate, spurious_rate: imperfect association, as in
      :func:`.simulator.write_scenario`.
    wall_height_m: height of walls and obstacles.
    wall_thickness_m: wall thickness (boxes centred on the plan's segments).
    device_height_m: height of every AP and client antenna.
    samples_per_src: rays shot from each AP to find the faces it reaches.
    batch_size: client positions per solve (memory grows with rays x batch).
    association_tolerance_deg: how far a path's azimuth may be from its anchor's bearing.
    progress: log each AP as it is traced.

  Returns:
    :func:`.simulator.write_scenario`'s summary plus ``raytrace``: ``samples`` traced,
    ``paths_per_sample`` before detection, ``los_path_fraction`` (of those paths),
    ``los_fraction`` (of samples with a line-of-sight path from at least one AP), paths
    dropped as ``unassociated`` (no anchor of the scene) or ``mismatched`` (failed the
    geometric check), ``duplicates``, ``seconds`` and ``samples_per_s``.
  """
  fp = floorplan_lib.load_floorplan(floorplan)
  simulator.check_sizes(num_survey, num_trajectory_steps)
  propagation = RaytracedPropagation(
    fp,
    detection_threshold_db=detection_threshold_db,
    detection_reference=detection_reference,
    wall_height_m=wall_height_m,
    wall_thickness_m=wall_thickness_m,
    device_height_m=device_height_m,
    samples_per_src=samples_per_src,
    batch_size=batch_size,
    seed=seed,
    association_tolerance_deg=association_tolerance_deg,
    progress=progress,
  )
  sim = simulator.simulate(
    fp,
    seed=seed,
    aoa_noise_deg=aoa_noise_deg,
    num_survey=num_survey,
    num_trajectory_steps=num_trajectory_steps,
    aoa_outlier_fraction=aoa_outlier_fraction,
    aoa_outlier_deg=aoa_outlier_deg,
    misassociation_rate=misassociation_rate,
    spurious_rate=spurious_rate,
    propagation=propagation,
  )
  stats = propagation.statistics()
  if stats['mismatched']:
    logging.warning(
      'sionna: %d of %d traced paths did not point at the anchor of the face they '
      'reflected off and were dropped',
      stats['mismatched'],
      stats['paths'],
    )
  attrs = {
    'aoa_noise_deg': float(aoa_noise_deg),
    'frequency_hz': simulator.FREQUENCY_HZ,
    'seed': int(seed),
    'floorplan_json': json.dumps(fp.to_dict()),
    'detection_threshold_db': float(detection_threshold_db),
    'detection_reference': detection_reference,
    'aoa_outlier_fraction': float(aoa_outlier_fraction),
    'aoa_outlier_deg': float(aoa_outlier_deg),
    'misassociation_rate': float(misassociation_rate),
    'spurious_rate': float(spurious_rate),
    'source': 'sionna',
    'wall_height_m': float(wall_height_m),
    'wall_thickness_m': float(wall_thickness_m),
    'device_height_m': float(device_height_m),
    'samples_per_src': int(samples_per_src),
  }
  summary = simulator.write_simulation(
    out_dir, fp, sim, attrs, 'ray-traced with Sionna RT (csiloc_jax.mmwave.raytrace)'
  )
  summary['raytrace'] = stats
  if progress:
    logging.info(
      'sionna: %d positions x %d APs in %.1f s (%.1f positions/s); %.2f paths per '
      'position, %.0f %% of paths line of sight; %d unassociated, %d mismatched',
      stats['samples'],
      len(fp.aps),
      stats['seconds'],
      stats['samples_per_s'],
      stats['paths_per_sample'],
      100 * stats['los_path_fraction'],
      stats['unassociated'],
      stats['mismatched'],
    )
  return summary
