"""One realised environment and radio front end: everything but the UE position.

Where this sits in the simulator: :func:`make_channel_model` turns a
:class:`~.config.ChannelModelConfig` and a seed into a :class:`ChannelModel` -- the
base-station array, the subcarrier grid, the terrain, the street grid with its
buildings and their facades, the point scatterers, the shadowing field and the noise
floor. :mod:`.propagation` traces paths through it, :mod:`.measurement` places UEs on
its streets. The geometric helpers that both need (ground height, building blockage,
free-space amplitude, shadowing) live here too, and take only the pieces they read, so
that construction can use them on the pieces it has already built.

Each component draws from its own generator, keyed on ``(seed, component)``, so that,
e.g., changing the number of antennas does not move the buildings.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from csiloc_jax.csi.simulator.config import ChannelModelConfig

# Environment generator ids: part of the seed derivation, never change them.
_ENV_TAG = 7_000
_ENV_TERRAIN, _ENV_BUILDINGS, _ENV_SCATTERERS, _ENV_SHADOWING, _ENV_ELEMENTS = range(5)


@dataclasses.dataclass(frozen=True, eq=False)
class Terrain:
  """Smooth ground: a tilt [2], bump wave vectors [K, 2] and their phases [K]."""

  tilt: np.ndarray
  wavevectors: np.ndarray
  phases: np.ndarray


@dataclasses.dataclass(frozen=True, eq=False)
class Buildings:
  """Rectangular blocks: centre [Nb, 2], half sizes [Nb, 2], local axes [Nb, 2, 2] (rows
  u, v), ground height [Nb] and roof height [Nb] (absolute z)."""

  centre: np.ndarray
  half_size: np.ndarray
  axes: np.ndarray
  ground: np.ndarray
  roof: np.ndarray


@dataclasses.dataclass(frozen=True, eq=False)
class ChannelModel:
  """One realised environment and radio front end: everything but the UE position.

  Built by :func:`make_channel_model`; deterministic from ``seed``. Arrays are float64
  numpy arrays (geometry) unless noted.
  """

  config: ChannelModelConfig
  seed: int
  num_antennas: int
  num_subcarriers: int
  # [A, 3] element positions (x = 0 plane), [A] index in the full grid, grid side.
  element_positions: np.ndarray
  element_index: np.ndarray
  grid_side: int
  # [A] fixed linear amplitude gain per element.
  element_gain: np.ndarray
  # [S] subcarrier frequency offsets from the carrier, Hz.
  subcarrier_offsets_hz: np.ndarray
  terrain: Terrain
  # Streets (segments of the grid): start/end [K, 2]; UEs walk/drive on them.
  street_start: np.ndarray
  street_end: np.ndarray
  buildings: Buildings
  # Facades facing the base station: start/end corners [F, 2], outward normal [F, 2],
  # bottom/top z [F], signed reflection coefficient [F].
  facade_start: np.ndarray
  facade_end: np.ndarray
  facade_normal: np.ndarray
  facade_bottom: np.ndarray
  facade_top: np.ndarray
  facade_reflection: np.ndarray
  # Scatterers: positions [Ns, 3]; complex coefficient [Ns] that folds in
  # sqrt(rcs / 4 pi), a fixed phase and the loss of the scatterer -> BS leg.
  scatterer_position: np.ndarray
  scatterer_coefficient: np.ndarray
  # Shadowing random Fourier features: wave vectors [K, 2], phases [K].
  shadowing_wavevectors: np.ndarray
  shadowing_phases: np.ndarray
  # Noise power per subcarrier (linear, same units as |H|^2).
  noise_power: float

  @property
  def num_paths(self) -> int:
    return 2 + len(self.facade_reflection) + len(self.scatterer_coefficient)

  @property
  def wavelength_m(self) -> float:
    return self.config.wavelength_m

  @property
  def subcarrier_frequencies_hz(self) -> np.ndarray:
    return self.config.carrier_hz + self.subcarrier_offsets_hz


# ---------------------------------------------------------------------------------------
# Radio front end.


def array_geometry(num_antennas: int, spacing_m: float) -> tuple[np.ndarray, np.ndarray, int]:
  """Working-element positions of a square patch grid in the y-z plane at the origin.

  The grid side is ceil(sqrt(num_antennas)); the n*n - num_antennas surplus elements
  are dead, spread evenly over the grid (interior indices of a linspace), which for 56
  antennas is the 8 x 8 grid with 8 dead elements of the CTW testbed. Elements are
  numbered row-major (row = z from top, column = y from left) and the dead ones are
  skipped. Returns (positions [A, 3], grid indices [A], grid side).
  """
  if num_antennas < 1:
    raise ValueError(f'num_antennas must be >= 1, got {num_antennas}')
  side = math.isqrt(num_antennas - 1) + 1
  num_dead = side * side - num_antennas
  dead = np.round(np.linspace(0, side * side - 1, num_dead + 2)[1:-1]).astype(int)
  index = np.setdiff1d(np.arange(side * side), dead)
  row, col = np.divmod(index, side)
  centre = (side - 1) / 2
  positions = np.stack(
    [np.zeros(len(index)), (col - centre) * spacing_m, (centre - row) * spacing_m], axis=-1
  )
  return positions, index, side


def subcarrier_offsets(num_subcarriers: int, config: ChannelModelConfig) -> np.ndarray:
  """Offsets from the carrier (Hz) of ``num_subcarriers`` spread over the used band."""
  if num_subcarriers < 1:
    raise ValueError(f'num_subcarriers must be >= 1, got {num_subcarriers}')
  occupied = config.num_used_subcarriers * config.subcarrier_spacing_hz
  spacing = occupied / num_subcarriers
  return (np.arange(num_subcarriers) - (num_subcarriers - 1) / 2) * spacing


# ---------------------------------------------------------------------------------------
# The environment.


def _env_rng(seed: int, component: int) -> np.random.Generator:
  return np.random.default_rng([seed, _ENV_TAG, component])


def make_channel_model(
  seed: int, num_antennas: int, num_subcarriers: int, config: ChannelModelConfig | None = None
) -> ChannelModel:
  """Realises the environment (terrain, buildings, scatterers, ...) for ``seed``."""
  config = config or ChannelModelConfig()
  if int(seed) < 0:
    raise ValueError(f'seed must be a non-negative integer, got {seed}')
  seed = int(seed)
  positions, index, side = array_geometry(
    num_antennas, config.element_spacing_wavelengths * config.wavelength_m
  )
  rng = _env_rng(seed, _ENV_ELEMENTS)
  element_gain = 10 ** (rng.normal(0, config.element_gain_std_db, num_antennas) / 20)

  rng = _env_rng(seed, _ENV_TERRAIN)
  terrain = Terrain(
    tilt=rng.normal(size=2),
    wavevectors=rng.normal(size=(8, 2)) / config.terrain_length_scale_m,
    phases=rng.uniform(0, 2 * np.pi, 8),
  )

  rng = _env_rng(seed, _ENV_SHADOWING)
  num_features = 64
  shadow_k = rng.normal(size=(num_features, 2)) / config.shadowing_correlation_m
  shadow_phi = rng.uniform(0, 2 * np.pi, num_features)

  # Buildings stand on the terrain; scatterers stand on it too, and the buildings block
  # their path to the base station.
  street_start, street_end, buildings, facades = _buildings(
    config, terrain, _env_rng(seed, _ENV_BUILDINGS)
  )
  scatterer_position, scatterer_coefficient = _scatterers(
    config, terrain, buildings, _env_rng(seed, _ENV_SCATTERERS)
  )

  # Noise floor from the reference link budget (boresight, unobstructed LoS).
  ref_amp = free_space_amplitude(config, np.asarray(config.snr_reference_distance_m))
  noise_power = float(ref_amp**2 / 10 ** (config.snr_reference_db / 10))

  return ChannelModel(
    config=config,
    seed=seed,
    num_antennas=num_antennas,
    num_subcarriers=num_subcarriers,
    element_positions=positions,
    element_index=index,
    grid_side=side,
    element_gain=element_gain,
    subcarrier_offsets_hz=subcarrier_offsets(num_subcarriers, config),
    terrain=terrain,
    street_start=street_start,
    street_end=street_end,
    buildings=buildings,
    **facades,
    scatterer_position=scatterer_position,
    scatterer_coefficient=scatterer_coefficient,
    shadowing_wavevectors=shadow_k,
    shadowing_phases=shadow_phi,
    noise_power=noise_power,
  )


def _buildings(
  config: ChannelModelConfig, terrain: Terrain, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray, Buildings, dict[str, np.ndarray]]:
  """Streets, buildings on the terrain and the facades that face the base station.

  Returns street start/end [K, 2], the buildings and the ``facade_*`` fields of
  :class:`ChannelModel`.
  """
  street_start, street_end, centre, half, angle = _street_grid(config, rng)
  nb = len(centre)
  axes = np.stack(
    [np.stack([np.cos(angle), np.sin(angle)], -1), np.stack([-np.sin(angle), np.cos(angle)], -1)],
    axis=1,
  )  # [Nb, 2, 2]
  ground = _terrain_height(config, terrain, centre)
  roof = ground + rng.uniform(*config.building_height_m, nb)
  facade_mag = rng.uniform(*config.facade_reflection, size=(nb, 4))

  # Four facades per building, corners counter-clockwise in the local frame so that the
  # outward normal of the edge (c_k -> c_k+1) is its direction rotated by -90 degrees.
  signs = np.array([[-1, -1], [1, -1], [1, 1], [-1, 1]], float)
  corners = centre[:, None] + np.einsum('bk,ck,bkd->bcd', half, signs, axes)  # [Nb,4,2]
  start = corners.reshape(-1, 2)
  end = np.roll(corners, -1, axis=1).reshape(-1, 2)
  direction = end - start
  normal = np.stack([direction[:, 1], -direction[:, 0]], -1)
  normal /= np.linalg.norm(normal, axis=-1, keepdims=True)
  # A facade can only reflect towards the base station if the BS is in front of it.
  faces_bs = (-start * normal).sum(-1) > 1.0
  building_of = np.repeat(np.arange(nb), 4)
  facades = dict(
    facade_start=start[faces_bs],
    facade_end=end[faces_bs],
    facade_normal=normal[faces_bs],
    facade_bottom=ground[building_of][faces_bs],
    facade_top=roof[building_of][faces_bs],
    facade_reflection=-facade_mag.reshape(-1)[faces_bs],
  )
  buildings = Buildings(centre=centre, half_size=half, axes=axes, ground=ground, roof=roof)
  return street_start, street_end, buildings, facades


def _scatterers(
  config: ChannelModelConfig, terrain: Terrain, buildings: Buildings, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
  """Scatterer positions [Ns, 3] over the area and a margin, and their coefficients."""
  lo, hi = np.asarray(config.area_min, float), np.asarray(config.area_max, float)
  ns = config.num_scatterers
  margin = config.scatterer_margin_m
  sxy = np.stack(
    [
      rng.uniform(max(lo[0] - margin, 1.0), hi[0] + margin, ns),
      rng.uniform(lo[1] - margin, hi[1] + margin, ns),
    ],
    -1,
  )
  sz = _terrain_height(config, terrain, sxy) + rng.uniform(*config.scatterer_height_m, ns)
  spos = np.concatenate([sxy, sz[:, None]], -1)
  rcs = config.scatterer_rcs_median_m2 * 10 ** (rng.normal(0, config.scatterer_rcs_std_db, ns) / 10)
  sphase = rng.uniform(0, 2 * np.pi, ns)
  bs_leg_db = _building_loss_db(config, buildings, np.zeros(3), spos)
  coefficient = np.sqrt(rcs / (4 * np.pi)) * np.exp(1j * sphase) * 10 ** (-bs_leg_db / 20)
  return spos, coefficient


def _street_grid(config: ChannelModelConfig, rng: np.random.Generator) -> tuple[np.ndarray, ...]:
  """Street segments and one optional building per block between them.

  Returns street start/end [K, 2] and building centre [Nb, 2], half sizes [Nb, 2] and
  rotation [Nb] (radians).
  """
  lo, hi = np.asarray(config.area_min[:2]), np.asarray(config.area_max[:2])
  lines = []
  for axis in range(2):
    n = config.num_streets[axis]
    jitter = rng.uniform(-config.street_jitter, config.street_jitter, n)
    lines.append(lo[axis] + (np.arange(n) + 0.5 + jitter) * (hi[axis] - lo[axis]) / n)
  sx, sy = lines
  start = np.concatenate(
    [np.stack([sx, np.full_like(sx, lo[1])], -1), np.stack([np.full_like(sy, lo[0]), sy], -1)]
  )
  end = np.concatenate(
    [np.stack([sx, np.full_like(sx, hi[1])], -1), np.stack([np.full_like(sy, hi[0]), sy], -1)]
  )

  # Blocks between consecutive street lines (and the area border); every draw is made
  # for every block so the layout of one block never shifts another's.
  margin = config.street_half_width_m + config.building_setback_m
  ex = np.concatenate([[lo[0] - margin], sx, [hi[0] + margin]])
  ey = np.concatenate([[lo[1] - margin], sy, [hi[1] + margin]])
  bx_lo, by_lo = np.meshgrid(ex[:-1] + margin, ey[:-1] + margin, indexing='ij')
  bx_hi, by_hi = np.meshgrid(ex[1:] - margin, ey[1:] - margin, indexing='ij')
  block_lo = np.stack([bx_lo.ravel(), by_lo.ravel()], -1)
  block_hi = np.stack([bx_hi.ravel(), by_hi.ravel()], -1)
  extent = block_hi - block_lo
  nblocks = len(block_lo)
  present = rng.uniform(size=nblocks) < config.building_probability
  half = rng.uniform(*config.building_coverage, size=(nblocks, 2)) * extent / 2
  centre = (block_lo + block_hi) / 2 + rng.uniform(-1, 1, (nblocks, 2)) * (extent / 2 - half)
  angle = rng.uniform(-1, 1, nblocks) * config.building_max_rotation_rad
  clear = (
    np.linalg.norm(centre, axis=-1) - np.linalg.norm(half, axis=-1) > config.building_min_distance_m
  )
  keep = present & clear & np.all(extent > 10.0, axis=-1)
  return start, end, centre[keep], half[keep], angle[keep]


# ---------------------------------------------------------------------------------------
# Geometry helpers used by construction and by the propagation model.


def _terrain_height(config: ChannelModelConfig, terrain: Terrain, xy: np.ndarray) -> np.ndarray:
  """Terrain height (absolute z of the ground) at horizontal positions [..., 2].

  A tilt plus smooth bumps, squashed into [0, 1] and scaled so that UEs standing on it
  (plus height and jitter) span exactly the area's z range.
  """
  lo, hi = np.asarray(config.area_min), np.asarray(config.area_max)
  unit = 2 * (xy - lo[:2]) / (hi[:2] - lo[:2]) - 1  # ~[-1, 1] over the area
  plane = unit @ terrain.tilt / np.abs(terrain.tilt).sum()
  bumps = np.cos(xy @ terrain.wavevectors.T + terrain.phases).mean(-1)
  s = 0.5 + 0.5 * np.tanh(1.2 * plane + 1.5 * bumps)  # in (0, 1)
  span = hi[2] - lo[2] - config.ue_height_jitter_m
  return lo[2] - config.ue_height_m + span * s


def ground_height(model: ChannelModel, xy: np.ndarray) -> np.ndarray:
  """Absolute ground z under horizontal positions ``xy`` [..., 2], metres."""
  return _terrain_height(model.config, model.terrain, np.asarray(xy, float))


def shadowing_db(model: ChannelModel, xy: np.ndarray) -> np.ndarray:
  """Log-normal shadowing (dB, zero mean) at horizontal positions [..., 2]."""
  k, phi = model.shadowing_wavevectors, model.shadowing_phases
  field = np.sqrt(2 / len(phi)) * np.cos(np.asarray(xy, float) @ k.T + phi).sum(-1)
  return model.config.shadowing_std_db * field


def free_space_amplitude(config: ChannelModelConfig, distance: np.ndarray) -> np.ndarray:
  """Path amplitude lambda / (4 pi) * d^(-exponent / 2), d floored at 1 m."""
  return (config.wavelength_m / (4 * np.pi)) * np.maximum(distance, 1.0) ** (
    -config.path_loss_exponent / 2
  )


def _slab(q0: np.ndarray, dq: np.ndarray, lower: np.ndarray, upper: np.ndarray):
  """Parameter interval t where lower <= q0 + t * dq <= upper (empty if lo > hi)."""
  dq = np.where(np.abs(dq) < 1e-9, 1e-9, dq)
  t1, t2 = (lower - q0) / dq, (upper - q0) / dq
  return np.minimum(t1, t2), np.maximum(t1, t2)


def _building_loss_db(
  config: ChannelModelConfig, buildings: Buildings, p0: np.ndarray, p1: np.ndarray
) -> np.ndarray:
  """Building loss (dB) of the straight segments p0 -> p1 (broadcast [..., 3]) -> [...].

  A segment is blocked where it crosses a building footprint below its roof; the loss
  grows smoothly with the length inside the building and saturates.
  """
  centre, axes, half = buildings.centre, buildings.axes, buildings.half_size
  if len(centre) == 0:
    return np.zeros(np.broadcast_shapes(np.shape(p0), np.shape(p1))[:-1])
  p0, p1 = np.asarray(p0, float), np.asarray(p1, float)
  d = p1 - p0
  length = np.linalg.norm(d, axis=-1)
  rel = p0[..., None, :2] - centre  # [..., Nb, 2]
  q0 = np.einsum('...bd,bkd->...bk', rel, axes)  # local (u, v)
  dq = np.einsum('...d,bkd->...bk', d[..., :2], axes)
  t_lo, t_hi = np.zeros_like(q0[..., 0]), np.ones_like(q0[..., 0])
  for k in range(2):
    a, b = _slab(q0[..., k], dq[..., k], -half[:, k], half[:, k])
    t_lo, t_hi = np.maximum(t_lo, a), np.minimum(t_hi, b)
  a, b = _slab(p0[..., None, 2], d[..., None, 2], -1e9, buildings.roof)
  t_lo, t_hi = np.maximum(t_lo, a), np.minimum(t_hi, b)
  inside = np.maximum(t_hi - t_lo, 0.0) * length[..., None]
  loss = config.penetration_loss_db * -np.expm1(-inside / config.penetration_length_scale_m)
  return np.minimum(loss.sum(-1), config.max_blockage_loss_db)


def blockage_loss_db(model: ChannelModel, p0: np.ndarray, p1: np.ndarray) -> np.ndarray:
  """Loss (dB) of the model's buildings on the segments p0 -> p1 ([..., 3]) -> [...]."""
  return _building_loss_db(model.config, model.buildings, p0, p1)
