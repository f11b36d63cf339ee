"""Ray-traced mmWave survey and trajectory files, from a floor plan, with Sionna RT.

Where this sits: a second propagation model for :func:`.simulator.simulate`. The floor
plan, the positions, headings, regions, time stamps, AoA noise, anchor order and the
file writer are the built-in simulator's; which paths arrive, from which anchor and at
which angle come from Sionna RT (:mod:`csiloc_jax.core.raytracer`)::

  floor plan ──> Mitsuba scene (every wall segment a concrete box) ──> per AP:
  line of sight + first-order specular reflections to every client position
  ──> each path mapped to its anchor (the AP, or the AP mirrored in the reflecting
  wall face) and checked against the geometry ──> relative detection threshold per
  AP ──> simulator.measure_aoa (traced azimuth - heading + noise) ──> survey.h5,
  trajectory.h5 (docs/schemas.md)

Walls are boxes ``wall_thickness_m`` thick and ``wall_height_m`` high, extended by half
the thickness at both ends so corners close; APs and clients are at ``device_height_m``
and there is no floor or ceiling, so every path stays in the horizontal plane, as the
2-D method assumes. Walls are opaque (no refraction) at 60 GHz.

Anchors: a reflection off a wall face is the AP mirrored across that face's plane. The
faces of collinear segments (a wall split by doorways) share one plane, so they are one
anchor, exactly like the built-in simulator's wall lines; the anchor's ground-truth
position is the mirror across the face (half a wall thickness from the line), not the
line. Every mapped path is checked: its traced azimuth of arrival must point at the
anchor (within ``association_tolerance_deg``) and its traced length must equal the
distance to it; paths that fail (a reflection off a wall's end face, say) are dropped
and counted, never kept under a wrong anchor.
"""

from __future__ import annotations

import json
import time

from absl import logging
import numpy as np

from csiloc_jax.core import raytracer
from csiloc_jax.mmwave import floorplan as floorplan_lib
from csiloc_jax.mmwave import geometry
from csiloc_jax.mmwave import simulator

SPEED_OF_LIGHT = 299_792_458.0


def scene_xml(
  fp: floorplan_lib.FloorPlan, wall_height_m: float, wall_thickness_m: float, material: str
) -> str:
  """Mitsuba XML of the floor plan's walls as ITU-material boxes (ids ``wall<k>``)."""
  shapes = []
  for k, (x0, y0, x1, y1) in enumerate(np.asarray(fp.walls, np.float64)):
    length = float(np.hypot(x1 - x0, y1 - y0))
    angle = float(np.degrees(np.arctan2(y1 - y0, x1 - x0)))
    shapes.append(
      f'<shape type="cube" id="wall{k}"><transform name="to_world">'
      f'<scale x="{(length + wall_thickness_m) / 2}" y="{wall_thickness_m / 2}" '
      f'z="{wall_height_m / 2}"/><rotate z="1" angle="{angle}"/>'
      f'<translate x="{(x0 + x1) / 2}" y="{(y0 + y1) / 2}" z="{wall_height_m / 2}"/>'
      '</transform><ref id="wall-material" name="bsdf"/></shape>'
    )
  return (
    '<scene version="2.1.0">'
    '<bsdf type="itu-radio-material" id="wall-material">'
    f'<string name="type" value="{material}"/>'
    f'<float name="thickness" value="{wall_thickness_m}"/></bsdf>' + ''.join(shapes) + '</scene>'
  )


class RaytracedPropagation:
  """The ``propagation`` hook of :func:`.simulator.simulate`, traced with Sionna RT."""

  def __init__(
    self,
    fp: floorplan_lib.FloorPlan,
    *,
    detection_threshold_db: float,
    wall_height_m: float,
    wall_thickness_m: float,
    wall_material: str,
    device_height_m: float,
    samples_per_src: int,
    batch_size: int,
    seed: int,
    association_tolerance_deg: float,
  ):
    if not 0 < device_height_m < wall_height_m:
      raise ValueError(
        f'device_height_m={device_height_m} must be between 0 and wall_height_m={wall_height_m}'
      )
    self.fp = fp
    self.threshold = float(detection_threshold_db)
    self.height = float(device_height_m)
    self.half_thickness = 0.5 * float(wall_thickness_m)
    self.tolerance = np.deg2rad(association_tolerance_deg)
    self.scene = raytracer.load_scene_xml(
      scene_xml(fp, wall_height_m, wall_thickness_m, wall_material), simulator.FREQUENCY_HZ
    )
    ids = raytracer.object_ids(self.scene)
    self.wall_of_object = {ids[f'wall{k}']: k for k in range(len(fp.walls))}
    self.options = raytracer.TraceOptions(
      max_depth=1,
      reflection=True,
      diffuse=False,
      refraction=False,
      diffraction=False,
      samples_per_src=samples_per_src,
      max_paths_per_src=samples_per_src,
      batch_size=batch_size,
      seed=seed,
    )
    self.stats = dict(targets=0, paths=0, los=0, mismatched=0, unmapped=0, seconds=0.0)

  def anchor_positions(self, table: simulator.AnchorTable, lines: simulator.WallLines):
    """Ground truth of every anchor: the AP, or its mirror across the wall face that
    faces it (the line moved half a thickness towards the AP)."""
    out = np.array(table.position, np.float64)
    for m in np.flatnonzero(table.kind == 1):
      n, c = lines.normal[table.line[m]], lines.offset[table.line[m]]
      ap = self.fp.aps[table.ap[m]]
      face = c + np.sign(n @ ap - c) * self.half_thickness
      out[m] = simulator.mirror(ap, n * face, n)
    return out

  def __call__(self, fp, table, lines, positions):
    start = time.perf_counter()
    anchors = self.anchor_positions(table, lines)
    index = {(int(a), int(li)): m for m, (a, li) in enumerate(zip(table.ap, table.line))}
    t, m_total = len(positions), len(table.ap)
    power = np.full((t, m_total), -np.inf)
    arrival = np.full((t, m_total), np.nan)
    targets = np.concatenate([positions, np.full((t, 1), self.height)], -1)
    for ap_index, ap in enumerate(fp.aps):
      source = np.array([ap[0], ap[1], self.height])
      for lo, paths in raytracer.trace(
        self.scene, source, targets, self.options, raytracer.Array()
      ):
        self._assign(paths, lo, ap_index, index, lines, anchors, positions, power, arrival)
    self.stats['targets'] += t
    # Each AP is sounded separately: the receiver's dynamic range applies per AP, as in
    # the built-in simulator.
    strongest = np.full_like(power, -np.inf)
    for a in range(len(fp.aps)):
      cols = table.ap == a
      strongest[:, cols] = power[:, cols].max(1, keepdims=True)
    detected = np.isfinite(power) & (power >= strongest - self.threshold)
    self.stats['seconds'] += time.perf_counter() - start
    return detected, arrival, anchors

  def _assign(self, paths, lo, ap_index, index, lines, anchors, positions, power, arrival):
    for i in range(len(paths.valid)):
      row = lo + i
      client = positions[row]
      for p in np.flatnonzero(paths.valid[i]):
        self.stats['paths'] += 1
        obj = int(paths.objects[0, i, p])
        if obj == raytracer.NO_OBJECT:
          m = index[(ap_index, -1)]
          self.stats['los'] += 1
        else:
          wall = self.wall_of_object.get(obj)
          m = None if wall is None else index.get((ap_index, int(lines.segment_line[wall])))
          if m is None:
            self.stats['unmapped'] += 1
            continue
        d = anchors[m] - client
        bearing = np.arctan2(d[1], d[0])
        length = float(paths.tau[i, p]) * SPEED_OF_LIGHT
        off = abs(geometry.wrap(np.asarray(paths.phi_r[i, p] - bearing)))
        if off > self.tolerance or abs(length - np.hypot(*d)) > 0.05:
          self.stats['mismatched'] += 1  # e.g. a wall's end face: no anchor of the plan
          continue
        gain_db = 10 * np.log10(max(float(np.abs(paths.a[i, 0, p]) ** 2), 1e-300))
        if gain_db > power[row, m]:
          power[row, m] = gain_db
          arrival[row, m] = float(paths.phi_r[i, p])

  def statistics(self) -> dict:
    s = dict(self.stats)
    s['paths_per_position'] = s['paths'] / max(s['targets'], 1)
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
  wall_height_m: float = 3.0,
  wall_thickness_m: float = 0.2,
  wall_material: str = 'concrete',
  device_height_m: float = 1.5,
  samples_per_src: int = 200_000,
  batch_size: int = 512,
  association_tolerance_deg: float = 0.5,
  progress: bool = False,
) -> dict:
  """Writes ray-traced ``out_dir/survey.h5`` and ``out_dir/trajectory.h5``.

  Arguments shared with :func:`.simulator.write_scenario` mean the same; the rest set
  the scene (walls, material, device height) and the solver (rays per AP, clients per
  solve, the association tolerance). Returns the simulator's summary plus ``raytrace``:
  paths per position, line-of-sight paths, paths dropped because no anchor of the plan
  explains them (``mismatched``, ``unmapped``), seconds.
  """
  fp = floorplan_lib.load_floorplan(floorplan)
  if num_survey < 1 or num_trajectory_steps < 2:
    raise ValueError(
      'num_survey must be >= 1 and num_trajectory_steps >= 2, got '
      f'{num_survey} and {num_trajectory_steps}'
    )
  propagation = RaytracedPropagation(
    fp,
    detection_threshold_db=detection_threshold_db,
    wall_height_m=wall_height_m,
    wall_thickness_m=wall_thickness_m,
    wall_material=wall_material,
    device_height_m=device_height_m,
    samples_per_src=samples_per_src,
    batch_size=batch_size,
    seed=seed,
    association_tolerance_deg=association_tolerance_deg,
  )
  sim = simulator.simulate(
    fp,
    seed=seed,
    aoa_noise_deg=aoa_noise_deg,
    num_survey=num_survey,
    num_trajectory_steps=num_trajectory_steps,
    detection_threshold_db=detection_threshold_db,
    propagation=propagation,
  )
  attrs = {
    'aoa_noise_deg': float(aoa_noise_deg),
    'frequency_hz': simulator.FREQUENCY_HZ,
    'seed': int(seed),
    'floorplan_json': json.dumps(fp.to_dict()),
    'detection_threshold_db': float(detection_threshold_db),
    'source': 'sionna',
    'wall_material': wall_material,
    'wall_thickness_m': float(wall_thickness_m),
  }
  summary = simulator.write_simulation(
    out_dir, fp, sim, attrs, 'ray-traced with Sionna RT (csiloc_jax.mmwave.raytrace)'
  )
  summary['raytrace'] = propagation.statistics()
  if progress:
    st = summary['raytrace']
    logging.info(
      'sionna: %d positions x %d APs traced in %.1f s; %.1f paths per position, %d line '
      'of sight; %d paths dropped (no anchor of the plan explains them)',
      st['targets'],
      len(fp.aps),
      st['seconds'],
      st['paths_per_position'],
      st['los'],
      st['mismatched'] + st['unmapped'],
    )
  return summary
