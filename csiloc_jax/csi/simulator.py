"""Synthetic CSI in the exact IEEE CTW-2020 HDF5 layout, from a physical channel model.

Where this sits: the real CTW-2020 files cannot be downloaded here, so everything that
reads CTW data -- the streaming reader ``csiloc_jax.csi.reader``, the training loop, the
tests and the benchmarks -- is exercised on files this module writes. They follow the
real layout exactly (folder, file and dataset names, axis order, float32 or float64):

  out_dir/CTW2020_labelled_data/file_1.hdf5, file_2.hdf5, ...   (H_Re, H_Im, SNR, Pos)
  out_dir/CTW2020_unlabelled_data/file_1.hdf5, ...              (H_Re, H_Im, SNR)

  H_Re, H_Im  (N, A, S, M)  sample, antenna, subcarrier, measurement
  SNR         (N, A, M)     per-antenna SNR of each measurement, dB
  Pos         (N, 3)        [x, y, z] metres, base station at the origin (labelled only)

Channel model (all parameters in :class:`ChannelModelConfig`):

* Base station: an 8 x 8 grid of half-wavelength-spaced patches in the y-z plane at the
  origin, boresight +x, 8 dead elements -> 56 working antennas. Other antenna counts use
  the smallest square grid that holds them, with the surplus elements marked dead evenly
  over the grid (see :func:`array_geometry`).
* OFDM: 1.27 GHz carrier, 20 MHz sampled with a 1024-point FFT, 924 used subcarriers
  (19.53 kHz spacing); other subcarrier counts are spread over the same occupied band.
* Environment (fixed by the seed, shared by the labelled and unlabelled sets): smooth
  terrain, a street grid with a rectangular building in most blocks (paths crossing a
  building lose power smoothly with the length inside it), the buildings' facades as
  specular reflectors, point scatterers, and a smooth log-normal shadowing field.
* UE positions: uniform along the streets (dense tracks, like the real campaign's
  routes) over a 646 x 943 x 41 m area in front of the array, or uniform over it.
* Paths: line of sight, ground reflection, one specular reflection per visible facade
  (image method, finite facade extent) and one bistatic path per scatterer. Each path
  has a delay and a direction of arrival; the antenna response is the exact spherical
  per-element phase at the carrier plus the first-order wideband (beam-squint) term.
* Measurements: 5 repeated noisy measurements per position with a small common phase
  jitter (coherent, so averaging them keeps the signal); the CSI phase is referenced to
  the first antenna at the centre subcarrier, which removes the carrier phase that turns
  over every 24 cm and keeps the smooth direction and delay structure; per-antenna SNR
  from the received power and a noise floor; channel estimates whose SNR falls under a
  threshold are stored as exact zeros, like failed estimates in the real set (a few %
  of entries with the defaults).

Learnability: with the defaults, the CSI of positions a metre apart is strongly
correlated and that of positions 100+ m apart is not, and a nearest-neighbour lookup
on the standardised real part of the measurement-averaged CSI already locates most
UEs to within metres -- while blocked areas, multipath and zeros keep a heavy error
tail, so the map is learnable but not trivial.

Determinism: every random number of sample ``i`` of a set comes from counter-based
streams keyed on ``(seed, set, stream)`` and advanced to ``i`` (PCG64 ``advance``), so
the output does not depend on ``chunk_size`` or ``samples_per_file``, and a chunk is
still generated with a few vectorised calls. Positions depend only on the seed, the set
and the index, not on the array or OFDM shape.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import glob
import math
import os
import re
import time
from typing import Any, Iterator

from absl import logging
import h5py
import numpy as np

from csiloc_jax.csi import reader

SPEED_OF_LIGHT = 299_792_458.0
LABELLED_DIR = reader.LABELLED_DIR
UNLABELLED_DIR = reader.UNLABELLED_DIR
# Root attribute marking files written here, so a rerun may replace its own files but
# never silently overwrite (or mix with) real CTW data in the same folder.
GENERATOR_TAG = 'csiloc_jax.csi.simulator'
POSITION_LAYOUTS = ('streets', 'uniform')
PHASE_REFERENCES = ('antenna', 'none')
PARTIAL_SUFFIX = '.partial'

# Set ids and random-stream ids: part of the seed derivation, never change them.
LABELLED_SET, UNLABELLED_SET = 0, 1
_POSITION_STREAM, _MEASUREMENT_STREAM, _NOISE_STREAM = 0, 1, 2
# Environment components each get their own generator so that, e.g., changing the
# number of antennas does not move the buildings.
_ENV_TAG = 7_000
_ENV_TERRAIN, _ENV_BUILDINGS, _ENV_SCATTERERS, _ENV_SHADOWING, _ENV_ELEMENTS = range(5)


@dataclasses.dataclass(frozen=True)
class ChannelModelConfig:
  """Every physical parameter of the synthetic CTW channel (SI units unless noted)."""
  # Carrier frequency of the CTW-2020 testbed, Hz.
  carrier_hz: float = 1.27e9
  # Sampled bandwidth, Hz, and FFT size: subcarrier spacing = 20e6 / 1024 = 19.53 kHz.
  bandwidth_hz: float = 20e6
  fft_size: int = 1024
  # Subcarriers in use in the real set (924 of 1024). The occupied band is
  # num_used_subcarriers * spacing = 18.05 MHz; any other num_subcarriers is spread
  # uniformly over that same band.
  num_used_subcarriers: int = 924
  # Element spacing of the patch grid, in carrier wavelengths (half-wavelength array).
  element_spacing_wavelengths: float = 0.5
  # Patch power pattern ~ cos(angle off boresight)^exponent, boresight +x, floored at
  # the back-lobe level (dB) so no path is ever exactly zero.
  element_pattern_exponent: float = 1.5
  element_backlobe_db: float = -25.0
  # Fixed per-element gain error (uncalibrated hardware), std in dB.
  element_gain_std_db: float = 1.5

  # UE area [x, y, z] in metres, base station at the origin: 646 x 943 x 41 m like the
  # real set. x > 0 keeps every UE in front of the array.
  area_min: tuple[float, float, float] = (10.0, -471.5, -44.0)
  area_max: tuple[float, float, float] = (656.0, 471.5, -3.0)
  # UE antenna height above the local ground (used by the ground reflection), and a
  # uniform extra height (handheld vs. vehicle), metres.
  ue_height_m: float = 1.5
  ue_height_jitter_m: float = 1.0
  # Terrain: a tilt plus smooth bumps of this length scale, spanning the area's z range.
  terrain_length_scale_m: float = 250.0

  # Where UEs are: 'streets' (uniform along a street grid, within the street width,
  # like the routes of the real measurement campaign -- dense along tracks) or
  # 'uniform' (uniform over the x-y rectangle, indoors included).
  position_layout: str = 'streets'
  # Street grid: streets at fixed x (running along y) and at fixed y, evenly spread
  # over the area with each line moved by up to this fraction of the spacing.
  num_streets: tuple[int, int] = (5, 6)
  street_jitter: float = 0.2
  street_half_width_m: float = 5.0
  # Buildings: one per block between streets with this probability, set back from the
  # street, covering a uniform fraction of the block per axis, rotated a little, with
  # roofs this high above the local ground; none this close to the base station.
  building_probability: float = 0.75
  building_setback_m: float = 3.0
  building_coverage: tuple[float, float] = (0.35, 0.85)
  building_max_rotation_rad: float = 0.2
  building_height_m: tuple[float, float] = (8.0, 30.0)
  building_min_distance_m: float = 60.0
  # Loss of a path crossing a building: max_loss * (1 - exp(-length / length_scale))
  # per building, summed and capped. Continuous in the UE position (zero at the shadow
  # edge), so blocked regions are hard but still learnable.
  penetration_loss_db: float = 25.0
  penetration_length_scale_m: float = 8.0
  max_blockage_loss_db: float = 30.0

  # Specular facade reflections: |reflection coefficient| uniform in this range (sign
  # negative, grazing-incidence-like), softened over this distance at facade edges,
  # roof line and the facade plane (a smooth stand-in for edge diffraction).
  facade_reflection: tuple[float, float] = (0.3, 0.7)
  facade_edge_taper_m: float = 3.0
  # Ground reflection coefficient (local flat ground under the UE); 0 disables it.
  ground_reflection: float = -0.5

  # Point scatterers (lamp posts, corners, vehicles): bistatic radar cross-section
  # log-normal around the median, heights above ground, placed over the area and a
  # margin around it.
  num_scatterers: int = 24
  scatterer_rcs_median_m2: float = 3000.0
  scatterer_rcs_std_db: float = 6.0
  scatterer_height_m: tuple[float, float] = (2.0, 20.0)
  scatterer_margin_m: float = 60.0

  # Path loss: amplitude lambda / (4 pi) * d^(-exponent / 2), d in metres (reference
  # 1 m); exponent 2 is free space.
  path_loss_exponent: float = 2.2
  # Log-normal shadowing at the UE (clutter), smooth over the correlation length.
  shadowing_std_db: float = 4.0
  shadowing_correlation_m: float = 60.0

  # SNR model: the noise floor is set so that an unobstructed boresight LoS UE at
  # snr_reference_distance_m has snr_reference_db. Each measurement's per-antenna SNR
  # is 10 log10(received power / noise floor) plus a N(0, fluctuation) term
  # (interference, AGC), and sets that measurement's noise power.
  snr_reference_db: float = 47.0
  snr_reference_distance_m: float = 100.0
  snr_fluctuation_db: float = 3.0
  # Channel estimates of a measurement whose per-antenna SNR is under this threshold
  # failed: stored as exact zeros (H_Re = H_Im = 0.0) for all subcarriers.
  zero_snr_threshold_db: float = 0.0
  # Common phase jitter between repeated measurements (std, radians). Small on
  # purpose: the pipeline averages the complex measurements, and a uniform random
  # phase would average the signal away.
  phase_jitter_rad: float = 0.05
  # Common phase of the stored CSI. 'antenna': each sample is rotated so that the
  # noise-free channel of the first working antenna at the centre subcarrier is real
  # positive -- the phase sanitisation of a receiver whose oscillator is not locked to
  # the UE's, as CSI tools do. It removes the carrier phase exp(-2j pi fc tau), which
  # turns over every 24 cm of path length, and keeps what varies smoothly with the
  # position: phase differences across antennas (direction) and the phase slope across
  # subcarriers (delay). 'none': the coherent phase of a synchronised sounder.
  phase_reference: str = 'antenna'

  def __post_init__(self):
    if self.carrier_hz <= 0 or self.bandwidth_hz <= 0:
      raise ValueError('carrier_hz and bandwidth_hz must be positive')
    if not 0 < self.num_used_subcarriers <= self.fft_size:
      raise ValueError(f'num_used_subcarriers={self.num_used_subcarriers} must be in '
                       f'(0, fft_size={self.fft_size}]')
    lo, hi = np.asarray(self.area_min), np.asarray(self.area_max)
    if lo.shape != (3,) or hi.shape != (3,) or np.any(hi <= lo):
      raise ValueError(f'area_min {self.area_min} must be below area_max {self.area_max}')
    if self.area_min[0] <= 0:
      raise ValueError('area_min[0] must be > 0: UEs lie in front of the array (+x)')
    if self.ue_height_jitter_m >= hi[2] - lo[2]:
      raise ValueError('ue_height_jitter_m must be smaller than the area z range')
    if self.position_layout not in POSITION_LAYOUTS:
      raise ValueError(f'position_layout must be one of {POSITION_LAYOUTS}, got '
                       f'{self.position_layout!r}')
    if self.phase_reference not in PHASE_REFERENCES:
      raise ValueError(f'phase_reference must be one of {PHASE_REFERENCES}, got '
                       f'{self.phase_reference!r}')
    if min(self.num_streets) < 1:
      raise ValueError(f'num_streets must be >= 1 per axis, got {self.num_streets}')

  @property
  def wavelength_m(self) -> float:
    return SPEED_OF_LIGHT / self.carrier_hz

  @property
  def subcarrier_spacing_hz(self) -> float:
    return self.bandwidth_hz / self.fft_size


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
  # Terrain: tilt [2], bump wave vectors [K, 2], phases [K].
  terrain_tilt: np.ndarray
  terrain_wavevectors: np.ndarray
  terrain_phases: np.ndarray
  # Streets (segments of the grid): start/end [K, 2]; UEs walk/drive on them.
  street_start: np.ndarray
  street_end: np.ndarray
  # Buildings: centre [Nb, 2], half sizes [Nb, 2], local axes [Nb, 2, 2] (rows u, v),
  # ground height [Nb], roof height [Nb] (absolute z).
  building_centre: np.ndarray
  building_half_size: np.ndarray
  building_axes: np.ndarray
  building_ground: np.ndarray
  building_roof: np.ndarray
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
# Environment.


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
  positions = np.stack([np.zeros(len(index)), (col - centre) * spacing_m,
                        (centre - row) * spacing_m], axis=-1)
  return positions, index, side


def subcarrier_offsets(num_subcarriers: int, config: ChannelModelConfig) -> np.ndarray:
  """Offsets from the carrier (Hz) of ``num_subcarriers`` spread over the used band."""
  if num_subcarriers < 1:
    raise ValueError(f'num_subcarriers must be >= 1, got {num_subcarriers}')
  occupied = config.num_used_subcarriers * config.subcarrier_spacing_hz
  spacing = occupied / num_subcarriers
  return (np.arange(num_subcarriers) - (num_subcarriers - 1) / 2) * spacing


def _env_rng(seed: int, component: int) -> np.random.Generator:
  return np.random.default_rng([seed, _ENV_TAG, component])


def make_channel_model(seed: int = 0, num_antennas: int = 56, num_subcarriers: int = 924,
                       config: ChannelModelConfig | None = None) -> ChannelModel:
  """Realises the environment (terrain, buildings, scatterers, ...) for ``seed``."""
  config = config or ChannelModelConfig()
  if int(seed) < 0:
    raise ValueError(f'seed must be a non-negative integer, got {seed}')
  seed = int(seed)
  lam = config.wavelength_m
  lo, hi = np.asarray(config.area_min, float), np.asarray(config.area_max, float)

  positions, index, side = array_geometry(num_antennas,
                                          config.element_spacing_wavelengths * lam)
  rng = _env_rng(seed, _ENV_ELEMENTS)
  element_gain = 10 ** (rng.normal(0, config.element_gain_std_db, num_antennas) / 20)

  rng = _env_rng(seed, _ENV_TERRAIN)
  tilt = rng.normal(size=2)
  terrain_k = rng.normal(size=(8, 2)) / config.terrain_length_scale_m
  terrain_phi = rng.uniform(0, 2 * np.pi, 8)

  rng = _env_rng(seed, _ENV_SHADOWING)
  num_features = 64
  shadow_k = rng.normal(size=(num_features, 2)) / config.shadowing_correlation_m
  shadow_phi = rng.uniform(0, 2 * np.pi, num_features)

  # A partial model lets the terrain helpers place buildings and scatterers on the
  # ground; the finished model is built at the end.
  partial = dict(config=config, seed=seed, num_antennas=num_antennas,
                 num_subcarriers=num_subcarriers, element_positions=positions,
                 element_index=index, grid_side=side, element_gain=element_gain,
                 subcarrier_offsets_hz=subcarrier_offsets(num_subcarriers, config),
                 terrain_tilt=tilt, terrain_wavevectors=terrain_k,
                 terrain_phases=terrain_phi, shadowing_wavevectors=shadow_k,
                 shadowing_phases=shadow_phi)

  rng = _env_rng(seed, _ENV_BUILDINGS)
  street_start, street_end, centre, half, angle = _street_grid(config, rng)
  nb = len(centre)
  axes = np.stack([np.stack([np.cos(angle), np.sin(angle)], -1),
                   np.stack([-np.sin(angle), np.cos(angle)], -1)], axis=1)  # [Nb, 2, 2]
  ground = _ground_height_from(partial, centre)
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

  partial.update(street_start=street_start, street_end=street_end,
                 building_centre=centre, building_half_size=half, building_axes=axes,
                 building_ground=ground, building_roof=roof)

  rng = _env_rng(seed, _ENV_SCATTERERS)
  ns = config.num_scatterers
  margin = config.scatterer_margin_m
  sxy = np.stack([rng.uniform(max(lo[0] - margin, 1.0), hi[0] + margin, ns),
                  rng.uniform(lo[1] - margin, hi[1] + margin, ns)], -1)
  sz = _ground_height_from(partial, sxy) + rng.uniform(*config.scatterer_height_m, ns)
  spos = np.concatenate([sxy, sz[:, None]], -1)
  rcs = config.scatterer_rcs_median_m2 * 10 ** (
      rng.normal(0, config.scatterer_rcs_std_db, ns) / 10)
  sphase = rng.uniform(0, 2 * np.pi, ns)
  bs_leg_db = _blockage_loss_db(partial, np.zeros(3), spos)
  coefficient = (np.sqrt(rcs / (4 * np.pi)) * np.exp(1j * sphase)
                 * 10 ** (-bs_leg_db / 20))

  # Noise floor from the reference link budget (boresight, unobstructed LoS).
  ref_amp = _free_space_amplitude(config, np.asarray(config.snr_reference_distance_m))
  noise_power = float(ref_amp ** 2 / 10 ** (config.snr_reference_db / 10))

  return ChannelModel(
      **partial,
      facade_start=start[faces_bs], facade_end=end[faces_bs],
      facade_normal=normal[faces_bs],
      facade_bottom=ground[building_of][faces_bs],
      facade_top=roof[building_of][faces_bs],
      facade_reflection=-facade_mag.reshape(-1)[faces_bs],
      scatterer_position=spos, scatterer_coefficient=coefficient,
      noise_power=noise_power)


def _street_grid(config: ChannelModelConfig, rng: np.random.Generator
                 ) -> tuple[np.ndarray, ...]:
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
  start = np.concatenate([np.stack([sx, np.full_like(sx, lo[1])], -1),
                          np.stack([np.full_like(sy, lo[0]), sy], -1)])
  end = np.concatenate([np.stack([sx, np.full_like(sx, hi[1])], -1),
                        np.stack([np.full_like(sy, hi[0]), sy], -1)])

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
  clear = (np.linalg.norm(centre, axis=-1) - np.linalg.norm(half, axis=-1)
           > config.building_min_distance_m)
  keep = present & clear & np.all(extent > 10.0, axis=-1)
  return start, end, centre[keep], half[keep], angle[keep]


def _get(model: ChannelModel | dict, name: str) -> Any:
  return model[name] if isinstance(model, dict) else getattr(model, name)


def _ground_height_from(model: ChannelModel | dict, xy: np.ndarray) -> np.ndarray:
  """Terrain height (absolute z of the ground) at horizontal positions [..., 2].

  A tilt plus smooth bumps, squashed into [0, 1] and scaled so that UEs standing on it
  (plus height and jitter) span exactly the area's z range.
  """
  config = _get(model, 'config')
  lo, hi = np.asarray(config.area_min), np.asarray(config.area_max)
  unit = 2 * (xy - lo[:2]) / (hi[:2] - lo[:2]) - 1  # ~[-1, 1] over the area
  tilt = _get(model, 'terrain_tilt')
  plane = unit @ tilt / np.abs(tilt).sum()
  bumps = np.cos(xy @ _get(model, 'terrain_wavevectors').T
                 + _get(model, 'terrain_phases')).mean(-1)
  s = 0.5 + 0.5 * np.tanh(1.2 * plane + 1.5 * bumps)  # in (0, 1)
  span = hi[2] - lo[2] - config.ue_height_jitter_m
  return lo[2] - config.ue_height_m + span * s


def ground_height(model: ChannelModel, xy: np.ndarray) -> np.ndarray:
  """Absolute ground z under horizontal positions ``xy`` [..., 2], metres."""
  return _ground_height_from(model, np.asarray(xy, float))


def shadowing_db(model: ChannelModel, xy: np.ndarray) -> np.ndarray:
  """Log-normal shadowing (dB, zero mean) at horizontal positions [..., 2]."""
  k, phi = model.shadowing_wavevectors, model.shadowing_phases
  field = np.sqrt(2 / len(phi)) * np.cos(np.asarray(xy, float) @ k.T + phi).sum(-1)
  return model.config.shadowing_std_db * field


def _free_space_amplitude(config: ChannelModelConfig, distance: np.ndarray) -> np.ndarray:
  return (config.wavelength_m / (4 * np.pi)) * np.maximum(distance, 1.0) ** (
      -config.path_loss_exponent / 2)


def _slab(q0: np.ndarray, dq: np.ndarray, lower: np.ndarray, upper: np.ndarray):
  """Parameter interval t where lower <= q0 + t * dq <= upper (empty if lo > hi)."""
  dq = np.where(np.abs(dq) < 1e-9, 1e-9, dq)
  t1, t2 = (lower - q0) / dq, (upper - q0) / dq
  return np.minimum(t1, t2), np.maximum(t1, t2)


def _blockage_loss_db(model: ChannelModel | dict, p0: np.ndarray,
                      p1: np.ndarray) -> np.ndarray:
  """Building loss (dB) of the straight segments p0 -> p1 (broadcast [..., 3]) -> [...].

  A segment is blocked where it crosses a building footprint below its roof; the loss
  grows smoothly with the length inside the building and saturates.
  """
  config = _get(model, 'config')
  centre = _get(model, 'building_centre')
  if len(centre) == 0:
    return np.zeros(np.broadcast_shapes(np.shape(p0), np.shape(p1))[:-1])
  axes, half = _get(model, 'building_axes'), _get(model, 'building_half_size')
  roof = _get(model, 'building_roof')
  p0, p1 = np.asarray(p0, float), np.asarray(p1, float)
  d = p1 - p0
  length = np.linalg.norm(d, axis=-1)
  rel = p0[..., None, :2] - centre                       # [..., Nb, 2]
  q0 = np.einsum('...bd,bkd->...bk', rel, axes)          # local (u, v)
  dq = np.einsum('...d,bkd->...bk', d[..., :2], axes)
  t_lo, t_hi = np.zeros_like(q0[..., 0]), np.ones_like(q0[..., 0])
  for k in range(2):
    a, b = _slab(q0[..., k], dq[..., k], -half[:, k], half[:, k])
    t_lo, t_hi = np.maximum(t_lo, a), np.minimum(t_hi, b)
  a, b = _slab(p0[..., None, 2], d[..., None, 2], -1e9, roof)
  t_lo, t_hi = np.maximum(t_lo, a), np.minimum(t_hi, b)
  inside = np.maximum(t_hi - t_lo, 0.0) * length[..., None]
  loss = config.penetration_loss_db * -np.expm1(-inside / config.penetration_length_scale_m)
  return np.minimum(loss.sum(-1), config.max_blockage_loss_db)


def _sigmoid(x: np.ndarray) -> np.ndarray:
  return 0.5 * (1 + np.tanh(0.5 * x))


# ---------------------------------------------------------------------------------------
# Propagation.


def propagation_paths(model: ChannelModel, positions: np.ndarray) -> dict[str, np.ndarray]:
  """Multipath components seen by the BS array centre for UE ``positions`` [B, 3].

  Returns ``delay_s`` [B, P] (total path length / c), ``gain`` [B, P] complex (path loss,
  reflection, blockage, shadowing; no antenna pattern) and ``source`` [B, P, 3], the
  point the wave reaches the array from (UE, image UE or scatterer), which fixes the
  direction of arrival and the per-element phase. Path order: LoS, ground reflection,
  the model's facades, its scatterers.
  """
  config = model.config
  p = np.asarray(positions, float)
  if p.ndim != 2 or p.shape[-1] != 3:
    raise ValueError(f'positions must have shape [B, 3], got {p.shape}')
  dist = np.linalg.norm(p, axis=-1)
  shadow = 10 ** (-shadowing_db(model, p[:, :2]) / 20)
  origin = np.zeros(3)
  los_block = 10 ** (-_blockage_loss_db(model, origin, p) / 20)

  # Line of sight.
  sources, lengths = [p[:, None]], [dist[:, None]]
  gains = [(los_block * _free_space_amplitude(config, dist))[:, None]]

  # Ground reflection off the locally flat ground under the UE; blocked like the LoS.
  image = p.copy()
  image[:, 2] = 2 * ground_height(model, p[:, :2]) - p[:, 2]
  ground_length = np.linalg.norm(image, axis=-1)
  sources.append(image[:, None])
  lengths.append(ground_length[:, None])
  gains.append((config.ground_reflection * los_block
                * _free_space_amplitude(config, ground_length))[:, None])

  # Facade reflections by the image method: mirror the UE across the facade plane; the
  # path exists if the specular point lies on the finite facade (soft edges) and both
  # ends are in front of it. Each leg can still be blocked by other buildings.
  if len(model.facade_reflection):
    a, n = model.facade_start, model.facade_normal
    along = model.facade_end - a
    width = np.linalg.norm(along, axis=-1)
    along = along / width[:, None]
    taper = config.facade_edge_taper_m
    s0 = -(a * n).sum(-1)                                    # BS distance to plane [F]
    s1 = ((p[:, None, :2] - a) * n).sum(-1)                  # UE distance [B, F]
    s1c = np.maximum(s1, 1e-3)
    img = np.broadcast_to(p[:, None], s1.shape + (3,)).copy()
    img[..., :2] -= 2 * s1c[..., None] * n
    t = s0 / (s0 + s1c)
    spec = t[..., None] * img                                # specular point [B, F, 3]
    xi = ((spec[..., :2] - a) * along).sum(-1)
    weight = (_sigmoid(s1 / taper) * _sigmoid(xi / taper) * _sigmoid((width - xi) / taper)
              * _sigmoid((model.facade_top - spec[..., 2]) / taper)
              * _sigmoid((spec[..., 2] - model.facade_bottom) / taper))
    # Blockage of both legs, only for (UE, facade) pairs that reflect at all: most
    # facades are out of reach of a given UE, and the test is per pair, so the result
    # of a sample never depends on the rest of its batch. The specular point is pulled
    # off the facade so that its own building does not count.
    legs_db = np.zeros_like(weight)
    bi, fi = np.nonzero(weight > 1e-6)
    off = spec[bi, fi] + 0.05 * np.concatenate([n[fi], np.zeros((len(fi), 1))], -1)
    legs_db[bi, fi] = (_blockage_loss_db(model, origin, off)
                       + _blockage_loss_db(model, off, p[bi]))
    img_length = np.linalg.norm(img, axis=-1)
    sources.append(img)
    lengths.append(img_length)
    gains.append(model.facade_reflection * weight * 10 ** (-legs_db / 20)
                 * _free_space_amplitude(config, img_length))

  # Scatterers: UE -> scatterer -> BS, bistatic radar equation with path loss per leg.
  if len(model.scatterer_coefficient):
    s = model.scatterer_position
    d1 = np.linalg.norm(p[:, None] - s, axis=-1)             # [B, Ns]
    d2 = np.linalg.norm(s, axis=-1)
    ue_leg = 10 ** (-_blockage_loss_db(model, p[:, None], s) / 20)
    amp = (config.wavelength_m / (4 * np.pi)
           * (np.maximum(d1, 1.0) * np.maximum(d2, 1.0)) ** (-config.path_loss_exponent / 2))
    sources.append(np.broadcast_to(s, d1.shape + (3,)))
    lengths.append(d1 + d2)
    gains.append(model.scatterer_coefficient * ue_leg * amp)

  gain = np.concatenate(gains, -1) * shadow[:, None]
  return dict(delay_s=np.concatenate(lengths, -1) / SPEED_OF_LIGHT,
              gain=gain.astype(np.complex128),
              source=np.concatenate(sources, 1))


def element_pattern(model: ChannelModel, direction: np.ndarray) -> np.ndarray:
  """Patch amplitude pattern for arrival directions [..., 3] (need not be unit)."""
  config = model.config
  cos = direction[..., 0] / np.linalg.norm(direction, axis=-1)
  floor = 10 ** (config.element_backlobe_db / 20)
  return np.maximum(np.maximum(cos, 0.0) ** (config.element_pattern_exponent / 2), floor)


def _delay_phasors(model: ChannelModel, tau: np.ndarray) -> np.ndarray:
  """exp(-2j pi f_s tau) [..., S] complex64 for delays tau [...] (seconds).

  The subcarriers are a uniform grid f_s = f_0 + s df, so with s = K h + l the phasor
  factors into exp(-2j pi (f_0 + K h df) tau) * exp(-2j pi l df tau): two tables of
  about sqrt(S) entries whose outer product gives all S values. Each table's argument
  (thousands of carrier cycles) is reduced modulo 1 in float64 before going to
  float32, so the phase error stays ~1e-6 rad while B*P*S transcendentals become one
  complex multiply.
  """
  offsets = model.subcarrier_offsets_hz
  num = len(offsets)
  df = offsets[1] - offsets[0] if num > 1 else 0.0
  k = max(1, math.isqrt(num - 1) + 1)
  heads = -(-num // k)
  tau = np.asarray(tau, np.float64)[..., None]
  f0 = model.config.carrier_hz + offsets[0]
  coarse = np.mod(tau * (f0 + k * df * np.arange(heads)), 1.0)        # [..., H]
  fine = np.mod(tau * (df * np.arange(k)), 1.0)                       # [..., K]

  def phasor(cycles):
    angle = (2 * np.pi * cycles).astype(np.float32)
    out = np.empty(angle.shape, np.complex64)
    out.real, out.imag = np.cos(angle), -np.sin(angle)
    return out

  f = phasor(coarse)[..., :, None] * phasor(fine)[..., None, :]       # [..., H, K]
  return f.reshape(f.shape[:-2] + (heads * k,))[..., :num]


def clean_channel(model: ChannelModel, positions: np.ndarray) -> np.ndarray:
  """Noise-free channel [B, A, S] complex64 at UE ``positions`` [B, 3].

  H[b, a, s] = sum_p g_bp * pattern * gain_a * exp(-2j pi f_s (tau_bp + delta_bap / c)),
  delta_bap = |source - r_a| - |source| the exact spherical extra length to element a.
  The element term is applied at the carrier plus its first-order wideband correction
  (-2j pi df_s delta / c), which keeps H a sum of two batched matrix products
  [A, P] @ [P, S] instead of an A*S*P exponential; the neglected second-order term is
  below 1e-2 rad at the band edge for the 0.9 m aperture.
  """
  paths = propagation_paths(model, positions)
  src, tau, gain = paths['source'], paths['delay_s'], paths['gain']
  r = model.element_positions
  a = model.num_antennas
  dsrc = np.linalg.norm(src, axis=-1)                                  # [B, P]
  # |s - r| - |s| = (|r|^2 - 2 s.r) / (|s - r| + |s|): no cancellation of the 100 m
  # distances, and a matmul instead of a norm over a [B, A, P, 3] array.
  sr = src @ r.T                                                       # [B, P, A]
  r2 = (r * r).sum(-1)
  num = r2 - 2 * sr
  delta = num / (np.sqrt(np.maximum(dsrc[..., None] ** 2 + num, 0.0)) + dsrc[..., None])
  delta = np.ascontiguousarray(delta.transpose(0, 2, 1))               # [B, A, P]
  # Element phases are small (|delta| < aperture), so float32 is exact enough here.
  angle = (-2 * np.pi / model.wavelength_m * delta).astype(np.float32)
  g = np.empty((len(src), 2 * a, src.shape[1]), np.complex64)         # [B, 2A, P]
  g.real[:, :a], g.imag[:, :a] = np.cos(angle), np.sin(angle)
  g[:, :a] *= (gain * element_pattern(model, src)).astype(np.complex64)[:, None, :]
  g[:, :a] *= model.element_gain.astype(np.float32)[:, None]
  g[:, a:] = g[:, :a] * (-2j * np.pi / SPEED_OF_LIGHT * delta).astype(np.complex64)
  both = g @ _delay_phasors(model, tau)                                # [B, 2A, S]
  h = both[:, :a]
  h += both[:, a:] * model.subcarrier_offsets_hz.astype(np.float32)
  return h


# ---------------------------------------------------------------------------------------
# Measurements.


def _measure(model: ChannelModel, clean: np.ndarray, snr_normal: np.ndarray,
             phase_normal: np.ndarray, noise_re: np.ndarray,
             noise_im: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """Repeated noisy measurements from standard normals; works in place on the noise.

  clean [B, A, S] complex; snr_normal [B, A, M]; phase_normal [B, M];
  noise_re/noise_im [B, A, S, M] float32 N(0, 1). Returns (H_Re, H_Im, SNR) float32.
  """
  config = model.config
  magnitude = np.abs(clean)
  magnitude *= magnitude
  power = magnitude.mean(-1, dtype=np.float64)                                # [B, A]
  snr = (10 * np.log10(np.maximum(power, 1e-300) / model.noise_power))[..., None]
  snr = (snr + config.snr_fluctuation_db * snr_normal).astype(np.float32)     # [B, A, M]
  # Noise std per real dimension from the reported SNR, so SNR and noise agree.
  sigma = np.sqrt(power[..., None] / 10 ** (snr.astype(np.float64) / 10) / 2)
  sigma = sigma.astype(np.float32)[:, :, None, :]
  phase = config.phase_jitter_rad * phase_normal                              # [B, M]
  if config.phase_reference == 'antenna':
    ref = clean[:, 0, clean.shape[2] // 2].astype(np.complex128)
    phase = phase - np.angle(ref)[:, None]
  rot = np.exp(1j * phase).astype(np.complex64)[:, None, None, :]             # [B,1,1,M]
  signal = clean[..., None] * rot                                             # [B,A,S,M]
  noise_re *= sigma
  noise_re += signal.real
  noise_im *= sigma
  noise_im += signal.imag
  # Failed estimates: exact +0.0 in both parts for every subcarrier of that antenna
  # and measurement (copyto, not a multiply, which could leave -0.0).
  failed = (snr < np.float32(config.zero_snr_threshold_db))[:, :, None, :]
  np.copyto(noise_re, 0.0, where=failed)
  np.copyto(noise_im, 0.0, where=failed)
  return noise_re, noise_im, snr


def channel_response(positions: np.ndarray, model: ChannelModel,
                     rng: np.random.Generator, num_measurements: int = 5
                     ) -> tuple[np.ndarray, np.ndarray]:
  """Noisy measured CSI for UE ``positions`` [B, 3], without files.

  Returns (H [B, A, S, M] complex64 with exact zeros for failed estimates, SNR
  [B, A, M] float32 dB). Uses ``rng`` for the measurement randomness; the files written
  by :func:`generate_ctw_dataset` use per-index streams instead (same distribution).
  """
  clean = clean_channel(model, positions)
  b, a, s = clean.shape
  m = int(num_measurements)
  re, im, snr = _measure(
      model, clean, rng.standard_normal((b, a, m)), rng.standard_normal((b, m)),
      rng.standard_normal((b, a, s, m), dtype=np.float32),
      rng.standard_normal((b, a, s, m), dtype=np.float32))
  h = np.empty(re.shape, np.complex64)
  h.real, h.imag = re, im
  return h, snr


# ---------------------------------------------------------------------------------------
# Per-index random streams.


def _raw_stream(seed: int, set_id: int, stream: int, start: int, count: int,
                per_sample: int) -> np.ndarray:
  """uint64 draws [count, per_sample] of samples start..start+count of one stream.

  PCG64 jumps ahead in O(log n), so sample i always gets draws
  [i * per_sample, (i + 1) * per_sample) whatever the chunking.
  """
  bits = np.random.PCG64(np.random.SeedSequence([seed, set_id, stream]))
  bits.advance(start * per_sample)
  return bits.random_raw(count * per_sample).reshape(count, per_sample)


def _normals_from_bits(raw: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """Two independent float32 N(0, 1) arrays [n, k] from uint64 draws [n, k] (Box-Muller).

  Overwrites ``raw``. Each row (one sample) is read as 2k 32-bit words: the first k give
  the radii, the last k the angles, so a sample's values never depend on its chunk.
  The uniforms are made by placing 23 random bits in a float32 mantissa (exact, no
  integer-to-float conversion; the normals' tails end at 5.6 sigma, irrelevant for
  noise), and everything runs in place on contiguous rows: this is the generator's hot
  loop.
  """
  n, k = raw.shape
  words = raw.view(np.uint32)               # [n, 2k], little-endian word order
  words >>= np.uint32(9)
  words |= np.uint32(0x3F800000)
  u = words.view(np.float32)                # [1, 2)
  radius, angle = u[:, :k], u[:, k:]
  np.subtract(np.float32(2.0), radius, out=radius)  # (0, 1]: log never sees 0
  np.log(radius, out=radius)
  radius *= np.float32(-2.0)
  np.sqrt(radius, out=radius)
  angle -= np.float32(1.0)
  angle *= np.float32(2 * np.pi)
  first = np.cos(angle)
  np.sin(angle, out=angle)
  first *= radius
  angle *= radius
  return first, angle


def sample_positions(model: ChannelModel, set_id: int, start: int, stop: int) -> np.ndarray:
  """UE positions [stop - start, 3] of samples start..stop of a set (float64, metres).

  'streets' layout: uniform along the street grid (by length) and across the street
  width; 'uniform': uniform over the x-y rectangle. Either way the UE stands on the
  terrain plus a uniform extra height. Depends only on (seed, set_id, index), not on
  the array or OFDM shape.
  """
  config = model.config
  lo, hi = np.asarray(config.area_min), np.asarray(config.area_max)
  raw = _raw_stream(model.seed, set_id, _POSITION_STREAM, start, stop - start, 4)
  u = (raw >> np.uint64(11)).astype(np.float64) * 2.0 ** -53   # [0, 1), 53 bits
  if config.position_layout == 'uniform':
    xy = lo[:2] + u[:, :2] * (hi[:2] - lo[:2])
  else:
    seg = model.street_end - model.street_start
    length = np.linalg.norm(seg, axis=-1)
    cumulative = np.cumsum(length)
    where = u[:, 0] * cumulative[-1]
    k = np.minimum(np.searchsorted(cumulative, where, side='right'), len(length) - 1)
    along = (where - (cumulative[k] - length[k])) / length[k]
    normal = np.stack([-seg[:, 1], seg[:, 0]], -1) / length[:, None]
    xy = (model.street_start[k] + along[:, None] * seg[k]
          + ((2 * u[:, 1] - 1) * config.street_half_width_m)[:, None] * normal[k])
    xy = np.clip(xy, lo[:2], hi[:2])
  z = ground_height(model, xy) + config.ue_height_m + config.ue_height_jitter_m * u[:, 2]
  return np.concatenate([xy, np.clip(z, lo[2], hi[2])[:, None]], -1)


def _measure_indices(model: ChannelModel, set_id: int, start: int, clean: np.ndarray,
                     num_measurements: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """Measurements of samples start..start+len(clean) from their per-index streams."""
  n, a, s = clean.shape
  m = num_measurements
  per_sample = (a * m + m + 1) // 2
  raw = _raw_stream(model.seed, set_id, _MEASUREMENT_STREAM, start, n, per_sample)
  z1, z2 = _normals_from_bits(raw)
  z = np.concatenate([z1, z2], axis=-1)                    # [n, 2 * per_sample]
  raw = _raw_stream(model.seed, set_id, _NOISE_STREAM, start, n, a * s * m)
  noise_re, noise_im = _normals_from_bits(raw)
  return _measure(model, clean, z[:, :a * m].reshape(n, a, m), z[:, a * m:a * m + m],
                  noise_re.reshape(n, a, s, m), noise_im.reshape(n, a, s, m))


def _generate_pieces(model: ChannelModel, set_id: int, start: int, stop: int,
                     num_measurements: int,
                     executor: concurrent.futures.Executor | None = None, workers: int = 1
                     ) -> Iterator[tuple[int, np.ndarray, np.ndarray, np.ndarray, np.ndarray]]:
  """Samples start..stop in consecutive pieces: (offset, H_Re, H_Im, SNR, Pos) each.

  The noise-free channel of the whole range is one batched matmul in this thread
  (BLAS threads it by itself); the measurement stage -- random streams, Box-Muller,
  noise, zeros, about 3/4 of the work -- is pure numpy ufuncs, which release the GIL,
  so it runs as one piece per worker thread. Keeping BLAS out of the workers avoids
  oversubscribing the cores (workers x BLAS threads).
  """
  pos = sample_positions(model, set_id, start, stop)
  clean = clean_channel(model, pos)
  n = stop - start
  pieces = 1 if executor is None else max(1, min(workers, n // 8))
  cuts = np.linspace(0, n, pieces + 1).astype(int).tolist()
  bounds = list(zip(cuts[:-1], cuts[1:]))

  def one(bound):
    lo, hi = bound
    return _measure_indices(model, set_id, start + lo, clean[lo:hi], num_measurements)

  results = map(one, bounds) if executor is None else executor.map(one, bounds)
  for (lo, hi), (re, im, snr) in zip(bounds, results):
    yield lo, re, im, snr, pos[lo:hi]


def generate_samples(model: ChannelModel, set_id: int, start: int, stop: int,
                     num_measurements: int = 5
                     ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
  """Samples start..stop of a set (LABELLED_SET or UNLABELLED_SET), as in the files.

  Returns (H_Re, H_Im [n, A, S, M] float32, SNR [n, A, M] float32, Pos [n, 3] float64).
  """
  if not 0 <= start <= stop:
    raise ValueError(f'need 0 <= start <= stop, got {start}, {stop}')
  (_, re, im, snr, pos), = _generate_pieces(model, set_id, start, stop, num_measurements)
  return re, im, snr, pos


# ---------------------------------------------------------------------------------------
# Files.

_FILE_RE = re.compile(r'^file_(\d+)\.hdf5$')


def _prepare_folder(folder: str) -> None:
  """Creates ``folder``; removes this generator's old files, refuses anyone else's."""
  os.makedirs(folder, exist_ok=True)
  for path in sorted(glob.glob(os.path.join(folder, 'file_*.hdf5*'))):
    name = os.path.basename(path)
    if name.endswith(PARTIAL_SUFFIX):
      os.remove(path)  # leftover of an interrupted run of ours
      continue
    if not _FILE_RE.match(name):
      continue
    try:
      with h5py.File(path, 'r') as f:
        ours = f.attrs.get('generator') == GENERATOR_TAG
    except OSError:
      ours = False
    if not ours:
      raise FileExistsError(
          f'{path} exists and was not written by {GENERATOR_TAG}; refusing to overwrite '
          'or mix with it. Choose an empty out_dir.')
    # Stale files of an earlier, larger run would otherwise be read as part of this set.
    os.remove(path)


class _Progress:
  """Running totals of a generation and its absl progress lines."""

  def __init__(self, total: int, bytes_per_sample: int, enabled: bool):
    self.total, self.bytes_per_sample, self.enabled = total, bytes_per_sample, enabled
    self.done = self.zeros = self.entries = 0
    self.pos_min, self.pos_max = np.full(3, np.inf), np.full(3, -np.inf)
    self.start = self.last_log = time.perf_counter()

  def update(self, re: np.ndarray, pos: np.ndarray) -> None:
    self.done += len(re)
    self.zeros += int(np.count_nonzero(re == 0))
    self.entries += re.size
    self.pos_min = np.minimum(self.pos_min, pos.min(0))
    self.pos_max = np.maximum(self.pos_max, pos.max(0))
    now = time.perf_counter()
    if self.enabled and (now - self.last_log > 10 or self.done == self.total):
      rate = self.done / max(now - self.start, 1e-9)
      logging.info('ctw_synth: %d/%d samples, %.1f samples/s, %.1f MB/s, ETA %.0f s',
                   self.done, self.total, rate, rate * self.bytes_per_sample / 1e6,
                   (self.total - self.done) / rate)
      self.last_log = now


def _write_file(path: str, model: ChannelModel, set_id: int, first: int, count: int,
                num_measurements: int, dtype: np.dtype, chunk_size: int,
                executor: concurrent.futures.Executor, workers: int,
                progress: _Progress) -> None:
  """Writes samples first..first+count of a set to ``path`` via a ``.partial`` file."""
  a, s, m = model.num_antennas, model.num_subcarriers, num_measurements
  partial = path + PARTIAL_SUFFIX
  try:
    with h5py.File(partial, 'w') as f:
      f.attrs['generator'] = GENERATOR_TAG
      f.attrs['seed'] = model.seed
      f.attrs['first_index'] = first
      # Contiguous (unchunked, uncompressed) datasets at their final shape: the fastest
      # to fill slab by slab and to read back by sample ranges.
      ds_re = f.create_dataset('H_Re', (count, a, s, m), dtype=dtype, track_times=False)
      ds_im = f.create_dataset('H_Im', (count, a, s, m), dtype=dtype, track_times=False)
      ds_snr = f.create_dataset('SNR', (count, a, m), dtype=dtype, track_times=False)
      ds_pos = (f.create_dataset('Pos', (count, 3), dtype=dtype, track_times=False)
                if set_id == LABELLED_SET else None)
      for lo in range(0, count, chunk_size):
        hi = min(lo + chunk_size, count)
        for offset, re, im, snr, pos in _generate_pieces(
            model, set_id, first + lo, first + hi, num_measurements, executor, workers):
          p0, p1 = lo + offset, lo + offset + len(re)
          ds_re[p0:p1] = re
          ds_im[p0:p1] = im
          ds_snr[p0:p1] = snr
          if ds_pos is not None:
            ds_pos[p0:p1] = pos
          progress.update(re, pos)
          del re, im
    os.replace(partial, path)  # atomic: a file_k.hdf5 that exists is complete
  except BaseException:
    if os.path.exists(partial):
      os.remove(partial)
    raise


def generate_ctw_dataset(out_dir: str, *, num_labelled: int = 600, num_unlabelled: int = 2400,
                         num_antennas: int = 56, num_subcarriers: int = 924,
                         num_measurements: int = 5, samples_per_file: int = 512,
                         seed: int = 0, dtype: str = 'float32', chunk_size: int = 64,
                         progress: bool = False,
                         config: ChannelModelConfig | None = None) -> dict:
  """Writes a synthetic CTW-2020 dataset under ``out_dir`` and returns a summary.

  Streams: each file is created at its final shape and filled ``chunk_size`` samples
  at a time, so memory stays at about one chunk (~2 MB per sample at 56 x 924 x 5,
  plus working copies) and the full 36,192 + 4,979 set can be written. Each file is
  written under a ``.partial`` name and renamed when complete. The output is
  independent of ``chunk_size`` and ``samples_per_file``; values are computed in
  float32, so a float64 file holds exactly the float32 file's values. ``config``
  (optional, not part of the CTW layout) overrides the physics.

  Returns a dict: ``labelled``/``unlabelled`` (folder, files, num_samples, bytes),
  ``shape`` (A, S, M), ``dtype``, ``bytes_written``, ``zero_fraction`` (exact-zero
  entries of H_Re), ``position_min``/``position_max`` (over both sets), ``seconds``,
  ``samples_per_second``, ``megabytes_per_second``.
  """
  if dtype not in ('float32', 'float64'):
    raise ValueError(f"dtype must be 'float32' or 'float64', got {dtype!r}")
  for name, value, minimum in (('num_labelled', num_labelled, 0),
                               ('num_unlabelled', num_unlabelled, 0),
                               ('num_antennas', num_antennas, 1),
                               ('num_subcarriers', num_subcarriers, 1),
                               ('num_measurements', num_measurements, 1),
                               ('samples_per_file', samples_per_file, 1),
                               ('chunk_size', chunk_size, 1), ('seed', seed, 0)):
    if isinstance(value, bool) or int(value) != value or value < minimum:
      raise ValueError(f'{name} must be an integer >= {minimum}, got {value!r}')
  model = make_channel_model(seed, num_antennas, num_subcarriers, config)
  out_dtype = np.dtype(dtype)
  shape = (num_antennas, num_subcarriers, num_measurements)
  bytes_per_sample = 2 * math.prod(shape) * out_dtype.itemsize
  total = num_labelled + num_unlabelled
  tracker = _Progress(total, bytes_per_sample, progress)
  workers = max(1, min(os.cpu_count() or 1, 8))
  summary: dict[str, Any] = dict(out_dir=os.path.abspath(out_dir), seed=seed, dtype=dtype,
                                 shape=shape)
  with concurrent.futures.ThreadPoolExecutor(workers) as executor:
    for set_name, folder_name, set_id, count in (
        ('labelled', LABELLED_DIR, LABELLED_SET, num_labelled),
        ('unlabelled', UNLABELLED_DIR, UNLABELLED_SET, num_unlabelled)):
      folder = os.path.join(out_dir, folder_name)
      _prepare_folder(folder)
      files = []
      for k, first in enumerate(range(0, count, samples_per_file)):
        path = os.path.join(folder, f'file_{k + 1}.hdf5')
        _write_file(path, model, set_id, first, min(samples_per_file, count - first),
                    num_measurements, out_dtype, chunk_size, executor, workers, tracker)
        files.append(os.path.abspath(path))
      summary[set_name] = dict(folder=os.path.abspath(folder), files=files,
                               num_samples=count,
                               bytes=int(sum(os.path.getsize(p) for p in files)))

  seconds = time.perf_counter() - tracker.start
  summary.update(
      num_labelled=num_labelled, num_unlabelled=num_unlabelled,
      bytes_written=summary['labelled']['bytes'] + summary['unlabelled']['bytes'],
      zero_fraction=tracker.zeros / max(tracker.entries, 1),
      position_min=tracker.pos_min.tolist() if total else None,
      position_max=tracker.pos_max.tolist() if total else None,
      seconds=seconds, samples_per_second=total / max(seconds, 1e-9),
      megabytes_per_second=total * bytes_per_sample / 1e6 / max(seconds, 1e-9))
  if progress:
    logging.info('ctw_synth: wrote %d samples (%.2f GB) under %s in %.1f s, %.2f%% zeros',
                 total, summary['bytes_written'] / 1e9, out_dir, seconds,
                 100 * summary['zero_fraction'])
  return summary
