"""Ray-traced CSI in the CTW-2020 layout, from Sionna RT scenes.

Where this sits: a second data source next to the built-in generator
(:mod:`csiloc_jax.csi.simulator`). It writes the same folders, files and datasets
(docs/schemas.md, 'CTW-2020 layout'), so the reader, the training and every comparison
run on it unchanged::

  scene (Sionna built-in or Mitsuba XML) ──> site: ground, base station on a mast,
  outdoor UE area ──> UE positions (i.i.d. or cart tracks) ──> core.raytracer (LoS,
  reflections, diffraction; BS array 8x8 minus 8) ──> noise-free CSI per antenna and
  subcarrier ──> simulator.measurement (5 noisy measurements, per-antenna SNR from a
  link budget, exact zeros under the SNR floor) ──> simulator.writer (streamed files)

The setup follows the real campaign: an 8 x 8 half-wavelength patch array with 8 dead
elements (56 antennas, the same dead elements as the built-in generator) on a mast, a
single-antenna UE at street level transmitting uplink, 924 of 1,024 subcarriers over
20 MHz at 1.27 GHz. The solver traces from the base station to all UEs of a batch at
once (one source, many targets); by reciprocity that is the uplink channel.

``Pos`` is written in the base station's frame, as in the real files: the array at the
origin, x along its boresight, z up.

Positions a UE cannot occupy are redrawn: points under a roof or on a building (the
first surface below the point is higher than street level plus ``max_ground_rise_m``),
outside the scene, and positions that receive no path at all.

Determinism: positions come from a seeded stream per set, the solver runs in
deterministic mode with a fixed seed and batch size, and the measurement noise of
sample ``i`` comes from its own counter-based stream (:mod:`.simulator.measurement`),
so the files depend on ``seed`` and the config, not on chunk or file sizes.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

from absl import logging
import numpy as np

from csiloc_jax.core import raytracer
from csiloc_jax.csi.simulator import environment
from csiloc_jax.csi.simulator import measurement
from csiloc_jax.csi.simulator import writer
from csiloc_jax.csi.simulator.config import ChannelModelConfig

POSITION_LAYOUTS = ('iid', 'tracks')
DELAY_REFERENCES = ('first_path', 'absolute')
BOLTZMANN = 1.380649e-23


@dataclasses.dataclass(frozen=True)
class RaytraceConfig:
  """Scene, site, link budget and solver settings of a ray-traced CTW set (SI units)."""

  # A Sionna RT built-in scene name (``munich``, ``etoile``, ``florence``,
  # ``san_francisco``, ``simple_street_canyon``, ...) or a Mitsuba XML file.
  scene: str = 'munich'
  # 'iid': UE positions uniform over the outdoor area; 'tracks': cart tracks of
  # ``track_length`` positions ``track_step_m`` apart, like the real campaign.
  position_layout: str = 'iid'

  # Base station: scene-frame position of the array centre, or None for the rooftop
  # near the scene centre (plus ``mast_height_m``) that sees the most street in line of
  # sight; boresight azimuth (degrees from the scene's +x axis), or None for the one
  # that sees the most street.
  bs_position: tuple[float, float, float] | None = None
  bs_yaw_deg: float | None = None
  mast_height_m: float = 6.0

  # UE area: street-level points within this distance of the mast and this angle of
  # the boresight, at least ``min_distance_m`` away; UE antenna height above ground.
  area_radius_m: float = 400.0
  sector_half_angle_deg: float = 60.0
  min_distance_m: float = 15.0
  ue_height_m: float = 1.5
  max_ground_rise_m: float = 2.0

  # Cart tracks.
  track_step_m: float = 0.05
  track_length: int = 128
  track_turn_std_deg: float = 2.0  # heading change per step

  # Link budget: UE transmit power spread over the used subcarriers, receiver noise
  # kT * subcarrier spacing * noise figure per antenna. Each measurement's per-antenna
  # SNR then fluctuates by ``radio.snr_fluctuation_db`` (its own receiver noise), and
  # estimates under ``radio.zero_snr_threshold_db`` are stored as exact zeros.
  tx_power_dbm: float = 23.0
  noise_figure_db: float = 7.0
  temperature_k: float = 290.0
  # A UE whose link is too weak is never recorded (a sounder that cannot decode the
  # uplink stores nothing): positions whose noise-free SNR, averaged over antennas and
  # subcarriers, is under this are redrawn like positions with no path. Individual
  # antennas and measurements under ``radio.zero_snr_threshold_db`` still store zeros.
  min_link_snr_db: float = 0.0
  # 'first_path': delays relative to the first arriving path (a receiver that
  # synchronises on the signal); 'absolute': propagation delays as traced.
  delay_reference: str = 'first_path'

  # Path solver: interactions per path, diffraction, transmission through objects,
  # rays per solve, path buffer per solve, UEs per solve. In its deterministic mode
  # the solver's memory grows with rays x UEs per solve (about 3 GB at 1e5 x 256 and
  # 8.5 GB at 3e5 x 256 in Munich): 3e5 rays x 128 UEs stays near 4-5 GB
  # (docs/raytrace.md has the measurements).
  max_depth: int = 3
  diffraction: bool = True
  # Diffuse scattering off every surface (fraction of reflected energy, Lambertian);
  # 0 traces specular reflections only.
  scattering_coefficient: float = 0.0
  refraction: bool = False
  samples_per_src: int = 300_000
  max_paths_per_src: int = 1_000_000
  batch_size: int = 128

  # Carrier, band, subcarriers, element spacing and the receiver's measurement model
  # (SNR fluctuation, zero threshold, phase jitter and reference): the same fields as
  # the built-in generator's; its geometry fields are not used here.
  radio: ChannelModelConfig = ChannelModelConfig()

  def __post_init__(self):
    if self.position_layout not in POSITION_LAYOUTS:
      raise ValueError(
        f'position_layout must be one of {POSITION_LAYOUTS}, got {self.position_layout!r}'
      )
    if self.delay_reference not in DELAY_REFERENCES:
      raise ValueError(
        f'delay_reference must be one of {DELAY_REFERENCES}, got {self.delay_reference!r}'
      )
    for name in ('area_radius_m', 'track_step_m', 'batch_size', 'samples_per_src'):
      if getattr(self, name) <= 0:
        raise ValueError(f'{name} must be positive, got {getattr(self, name)!r}')
    if self.track_length < 2:
      raise ValueError(f'track_length must be >= 2, got {self.track_length}')
    if self.max_depth < 0:
      raise ValueError(f'max_depth must be >= 0, got {self.max_depth}')


@dataclasses.dataclass(frozen=True)
class _Receiver:
  """What the shared measurement stage needs: seed, receiver fields, noise power."""

  seed: int
  config: ChannelModelConfig
  noise_power: float  # per subcarrier, in |H|^2 units (path gain x transmit power)


def noise_power(config: RaytraceConfig) -> float:
  """Receiver noise per subcarrier relative to the per-subcarrier transmit power."""
  radio = config.radio
  tx_per_subcarrier_w = 10 ** ((config.tx_power_dbm - 30) / 10) / radio.num_used_subcarriers
  noise_w = (
    BOLTZMANN
    * config.temperature_k
    * radio.subcarrier_spacing_hz
    * 10 ** (config.noise_figure_db / 10)
  )
  return noise_w / tx_per_subcarrier_w


class Site:
  """A scene with its street level, base station and outdoor UE area."""

  def __init__(self, config: RaytraceConfig):
    self.config = config
    self.scene = raytracer.load_scene(config.scene, config.radio.carrier_hz)
    lo, hi = raytracer.scene_bounds(self.scene)
    self.lower, self.upper = lo, hi
    self.top = float(hi[2]) + 10.0
    # A coarse survey of surface heights: street level is the low end of it.
    gx = np.linspace(lo[0], hi[0], 96)
    gy = np.linspace(lo[1], hi[1], 96)
    grid = np.stack(np.meshgrid(gx, gy, indexing='ij'), -1).reshape(-1, 2)
    height = self.surface_height(grid)
    if not np.isfinite(height).any():
      raise ValueError(f'scene {config.scene!r}: no surface found under the scene')
    self.street_level = float(np.nanpercentile(height, 10))
    outdoor = height <= self.street_level + config.max_ground_rise_m
    # Site planning as a network planner would do it: among rooftops near the scene
    # centre, the mast and boresight that see the most street in line of sight.
    street = grid[outdoor]
    street = np.concatenate([street, height[outdoor, None] + config.ue_height_m], -1)
    if config.bs_position is None:
      centre = 0.5 * (lo[:2] + hi[:2])
      near = np.linalg.norm(grid - centre, axis=-1) <= 0.2 * np.linalg.norm(hi[:2] - lo[:2])
      roof = np.flatnonzero(near & np.isfinite(height) & ~outdoor)
      if len(roof) == 0:
        roof = np.flatnonzero(near & np.isfinite(height))
      roof = roof[np.linspace(0, len(roof) - 1, min(len(roof), 32)).astype(int)]
      sites = np.concatenate([grid[roof], height[roof, None] + config.mast_height_m], -1)
    else:
      sites = np.asarray(config.bs_position, np.float64)[None]
      if sites.shape != (1, 3):
        raise ValueError(f'bs_position must be (x, y, z), got {config.bs_position!r}')
    yaws = (
      np.deg2rad(np.arange(0, 360, 15))
      if config.bs_yaw_deg is None
      else np.deg2rad([config.bs_yaw_deg])
    )
    best = (-1, sites[0], yaws[0])
    for site in sites:
      covered = self._line_of_sight(site, street)
      d = street[:, :2] - site[:2]
      azimuth = np.arctan2(d[:, 1], d[:, 0])
      for yaw in yaws:
        off = np.abs(np.angle(np.exp(1j * (azimuth - yaw))))
        count = int(np.sum(covered & (off <= np.deg2rad(config.sector_half_angle_deg))))
        if count > best[0]:
          best = (count, site, float(yaw))
    _, self.bs, self.yaw = best
    self.bs = np.asarray(self.bs, np.float64)

  def _line_of_sight(self, site: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Which points [N, 3] are in line of sight of ``site`` and inside the UE area."""
    c = self.config
    d = points - site
    dist = np.linalg.norm(d, axis=-1)
    flat = np.linalg.norm(d[:, :2], axis=-1)
    inside = (flat <= c.area_radius_m) & (flat >= c.min_distance_m)
    t = raytracer.first_hit(self.scene, np.broadcast_to(site, d.shape), d / dist[:, None])
    return inside & (t >= dist - 0.5)

  def surface_height(self, xy: np.ndarray) -> np.ndarray:
    """Height of the first surface below each x-y point; NaN outside the scene."""
    xy = np.asarray(xy, np.float64).reshape(-1, 2)
    origins = np.concatenate([xy, np.full((len(xy), 1), self.top)], -1)
    t = raytracer.first_hit(self.scene, origins, (0.0, 0.0, -1.0))
    return np.where(np.isfinite(t), self.top - t, np.nan)

  def ue_positions(self, xy: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(scene-frame UE positions [N, 3], usable [N]) for x-y points."""
    c = self.config
    height = self.surface_height(xy)
    d = xy - self.bs[:2]
    dist = np.linalg.norm(d, axis=-1)
    off = np.abs(np.angle(np.exp(1j * (np.arctan2(d[:, 1], d[:, 0]) - self.yaw))))
    usable = (
      np.isfinite(height)
      & (height <= self.street_level + c.max_ground_rise_m)
      & (dist <= c.area_radius_m)
      & (dist >= c.min_distance_m)
      & (off <= np.deg2rad(c.sector_half_angle_deg))
    )
    z = np.where(usable, height, self.street_level) + c.ue_height_m
    return np.concatenate([xy, z[:, None]], -1), usable

  def to_bs_frame(self, points: np.ndarray) -> np.ndarray:
    """Scene-frame points [N, 3] -> base-station frame (origin at the array, x along
    the boresight, z up)."""
    d = np.asarray(points, np.float64) - self.bs
    c, s = math.cos(self.yaw), math.sin(self.yaw)
    return np.stack([c * d[:, 0] + s * d[:, 1], -s * d[:, 0] + c * d[:, 1], d[:, 2]], -1)

  def candidates(self, rng: np.random.Generator, n: int) -> np.ndarray:
    """``n`` x-y points uniform over the UE sector (before the outdoor test)."""
    c = self.config
    r = np.sqrt(rng.uniform(c.min_distance_m**2, c.area_radius_m**2, n))
    half = np.deg2rad(c.sector_half_angle_deg)
    a = self.yaw + rng.uniform(-half, half, n)
    return self.bs[:2] + r[:, None] * np.stack([np.cos(a), np.sin(a)], -1)


class _SetStream:
  """The accepted samples of one set, traced batch by batch in a fixed order."""

  def __init__(self, source: RaytracedSource, set_id: int):
    self.source = source
    self.rng = np.random.default_rng([source.seed, set_id, 0x5107])
    self.next_index = 0
    self.pos = np.zeros((0, 3))
    self.clean = np.zeros((0, source.num_antennas, source.num_subcarriers), np.complex64)

  def _proposals(self) -> np.ndarray:
    """The next batch of usable scene-frame positions."""
    site, c = self.source.site, self.source.config
    out = []
    count = 0
    while count < c.batch_size:
      if c.position_layout == 'iid':
        pos, usable = site.ue_positions(site.candidates(self.rng, c.batch_size))
        self.source.stats['candidates'] += len(pos)
        pos = pos[usable]
      else:
        pos = self._track()
      out.append(pos)
      count += len(pos)
    return np.concatenate(out)[: c.batch_size]

  def _track(self) -> np.ndarray:
    """One cart track: a smooth walk from a usable start, cut where it leaves the area."""
    site, c = self.source.site, self.source.config
    pos, usable = site.ue_positions(site.candidates(self.rng, 16))
    self.source.stats['candidates'] += len(pos)
    if not usable.any():
      return np.zeros((0, 3))
    start = pos[np.argmax(usable), :2]
    heading = self.rng.uniform(-np.pi, np.pi) + np.cumsum(
      np.deg2rad(c.track_turn_std_deg) * self.rng.standard_normal(c.track_length - 1)
    )
    steps = c.track_step_m * np.stack([np.cos(heading), np.sin(heading)], -1)
    xy = start + np.concatenate([np.zeros((1, 2)), np.cumsum(steps, 0)])
    pos, usable = site.ue_positions(xy)
    end = len(pos) if usable.all() else int(np.argmin(usable))
    self.source.stats['tracks'] += 1
    return pos[:end]

  def take(self, n: int) -> tuple[np.ndarray, np.ndarray]:
    while len(self.pos) < n:
      pos, clean = self.source.trace(self._proposals())
      self.pos = np.concatenate([self.pos, pos])
      self.clean = np.concatenate([self.clean, clean])
    pos, clean = self.pos[:n], self.clean[:n]
    self.pos, self.clean = self.pos[n:], self.clean[n:]
    self.next_index += n
    return pos, clean


class RaytracedSource:
  """A :class:`~.simulator.writer.SampleSource` that ray-traces its samples."""

  def __init__(self, config: RaytraceConfig, seed: int, num_antennas: int, num_subcarriers: int):
    self.config, self.seed = config, int(seed)
    self.num_antennas, self.num_subcarriers = num_antennas, num_subcarriers
    self.site = Site(config)
    raytracer.set_scattering(self.site.scene, config.scattering_coefficient)
    radio = config.radio
    _, index, side = environment.array_geometry(num_antennas, 1.0)
    self.array = raytracer.Array(
      rows=side,
      cols=side,
      spacing=radio.element_spacing_wavelengths,
      pattern='tr38901',
      polarization='V',
    )
    # Sionna numbers elements column by column; the built-in generator (and this
    # module's antenna axis) row by row from the top left, dead elements skipped.
    local = raytracer.element_positions(self.array) / radio.element_spacing_wavelengths
    centre = (side - 1) / 2
    grid_index = np.round(centre - local[:, 2]).astype(int) * side + np.round(
      local[:, 1] + centre
    ).astype(int)
    order = {g: k for k, g in enumerate(grid_index)}
    self.elements = np.array([order[g] for g in index])
    self.offsets_hz = environment.subcarrier_offsets(num_subcarriers, radio)
    self.receiver = _Receiver(self.seed, radio, noise_power(config))
    self.options = raytracer.TraceOptions(
      max_depth=config.max_depth,
      reflection=config.max_depth > 0,
      diffuse=config.scattering_coefficient > 0,
      refraction=config.refraction,
      diffraction=config.diffraction,
      samples_per_src=config.samples_per_src,
      max_paths_per_src=config.max_paths_per_src,
      batch_size=config.batch_size,
      seed=self.seed,
    )
    self.attrs = {
      'seed': self.seed,
      'source': 'sionna',
      'scene': config.scene,
      'position_layout': config.position_layout,
      'bs_position_scene': self.site.bs.tolist(),
      'bs_yaw_deg': float(np.rad2deg(self.site.yaw)),
    }
    self.stats = dict(candidates=0, traced=0, no_path=0, no_link=0, tracks=0, los=0, paths=0)
    self.snr = []
    self._streams: dict[int, _SetStream] = {}

  def trace(self, pos: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Traces scene-frame positions; returns those with a path and their clean CSI."""
    keep_pos, keep_h = [], []
    for lo, paths in raytracer.trace(
      self.site.scene, self.site.bs, pos, self.options, self.array, (self.site.yaw, 0.0, 0.0)
    ):
      found = paths.valid.any(-1)
      self.stats['traced'] += len(found)
      self.stats['no_path'] += int(np.sum(~found))
      los = paths.valid & np.all(paths.interactions == raytracer.NONE, axis=0)
      self.stats['los'] += int(np.sum(los.any(-1)))
      self.stats['paths'] += int(np.sum(paths.valid))
      h = self._channel(paths, found)
      power = np.mean(np.abs(h) ** 2, axis=(1, 2))
      link = 10 * np.log10(np.maximum(power, 1e-300) / self.receiver.noise_power)
      linked = link >= self.config.min_link_snr_db
      self.stats['no_link'] += int(np.sum(~linked))
      keep_pos.append(pos[lo : lo + len(found)][found][linked])
      keep_h.append(h[linked])
    return np.concatenate(keep_pos), np.concatenate(keep_h)

  def _channel(self, paths: raytracer.Paths, found: np.ndarray) -> np.ndarray:
    """Noise-free CSI [N, A, S] of the targets with a path."""
    valid = paths.valid[found]
    a = paths.a[found][:, self.elements] * valid[:, None, :]  # [N, A, P]
    tau = np.where(valid, paths.tau[found], 0.0).astype(np.float64)
    if self.config.delay_reference == 'first_path':
      tau = tau - np.min(np.where(valid, tau, np.inf), axis=-1, keepdims=True)
      tau = np.where(valid, tau, 0.0)
    out = np.empty((len(a), self.num_antennas, self.num_subcarriers), np.complex64)
    for lo in range(0, len(a), 32):  # bounded temporaries: [32, P, S] phasors
      phasor = np.exp(-2j * np.pi * tau[lo : lo + 32, :, None] * self.offsets_hz)
      out[lo : lo + 32] = np.matmul(a[lo : lo + 32], phasor.astype(np.complex64))
    return out

  def pieces(self, set_id, start, stop, num_measurements, executor=None, workers=1):
    stream = self._streams.setdefault(set_id, _SetStream(self, set_id))
    if start != stream.next_index:
      raise ValueError(
        f'the ray-traced source streams samples in order: asked for {start}, next is '
        f'{stream.next_index}'
      )
    pos, clean = stream.take(stop - start)
    re, im, snr = measurement.measure_indices(self.receiver, set_id, start, clean, num_measurements)
    self.snr.append(snr[:, :, 0].ravel()[:: max(1, self.num_antennas // 8)])
    yield 0, re, im, snr, self.site.to_bs_frame(pos)

  def statistics(self) -> dict[str, Any]:
    s = self.stats
    with_path = max(s['traced'] - s['no_path'], 1)
    snr = np.concatenate(self.snr) if self.snr else np.zeros(1)
    return {
      'scene': self.config.scene,
      'position_layout': self.config.position_layout,
      'bs_position_scene': self.site.bs.tolist(),
      'bs_yaw_deg': float(np.rad2deg(self.site.yaw)),
      'street_level_m': self.site.street_level,
      'candidates_drawn': s['candidates'],
      'traced': s['traced'],
      'redrawn_no_path': s['no_path'],
      'redrawn_weak_link': s['no_link'],
      'tracks': s['tracks'],
      # Over the traced positions that received a path (before the link test).
      'los_fraction': s['los'] / with_path,
      'paths_per_sample': s['paths'] / with_path,
      'snr_db_percentiles': dict(
        zip(('p5', 'p25', 'p50', 'p75', 'p95'), np.percentile(snr, [5, 25, 50, 75, 95]).tolist())
      ),
    }


def generate_raytraced_dataset(
  out_dir: str,
  *,
  num_labelled: int,
  num_unlabelled: int,
  num_antennas: int,
  num_subcarriers: int,
  num_measurements: int,
  seed: int,
  config: RaytraceConfig,
  samples_per_file: int = 512,
  dtype: str = 'float32',
  chunk_size: int = 64,
  progress: bool = False,
) -> dict:
  """Writes a ray-traced CTW-2020-layout set under ``out_dir`` and returns a summary.

  The files, their streaming and the summary are those of
  :func:`~csiloc_jax.csi.simulator.generate_ctw_dataset`, plus ``raytrace``: the path
  statistics (line-of-sight fraction, paths per sample, SNR percentiles of the first
  measurement, redrawn positions) and the site (base station position and boresight).
  """
  writer.check_arguments(
    num_labelled=num_labelled,
    num_unlabelled=num_unlabelled,
    num_antennas=num_antennas,
    num_subcarriers=num_subcarriers,
    num_measurements=num_measurements,
    samples_per_file=samples_per_file,
    chunk_size=chunk_size,
    seed=seed,
    dtype=dtype,
  )
  source = RaytracedSource(config, seed, num_antennas, num_subcarriers)
  if progress:
    logging.info(
      'sionna: scene %s, base station at %s (scene frame), boresight %.0f deg, street '
      'level %.1f m; %s positions',
      config.scene,
      np.round(source.site.bs, 1).tolist(),
      np.rad2deg(source.site.yaw),
      source.site.street_level,
      config.position_layout,
    )
  summary = writer.write_ctw_set(
    out_dir,
    source,
    num_labelled=num_labelled,
    num_unlabelled=num_unlabelled,
    num_measurements=num_measurements,
    samples_per_file=samples_per_file,
    dtype=dtype,
    chunk_size=chunk_size,
    progress=progress,
    name='sionna',
  )
  summary['raytrace'] = source.statistics()
  if progress:
    st = summary['raytrace']
    logging.info(
      'sionna: %.0f%% line of sight, %.1f paths per sample, SNR p5/p50/p95 %.1f/%.1f/%.1f '
      'dB, %d positions redrawn for no path, %d for a link under %.0f dB',
      100 * st['los_fraction'],
      st['paths_per_sample'],
      st['snr_db_percentiles']['p5'],
      st['snr_db_percentiles']['p50'],
      st['snr_db_percentiles']['p95'],
      st['redrawn_no_path'],
      st['redrawn_weak_link'],
      config.min_link_snr_db,
    )
  return summary
