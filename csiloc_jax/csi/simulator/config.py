"""Every physical parameter of the synthetic CTW-2020 channel, and the simulator's ids.

The first module of the simulator: :mod:`.environment` realises a
:class:`ChannelModelConfig` for a seed, :mod:`.propagation` and :mod:`.measurement` read
its parameters, and :mod:`.writer` streams the result into the CTW-2020 layout.
"""

from __future__ import annotations

import dataclasses

import numpy as np

SPEED_OF_LIGHT = 299_792_458.0
POSITION_LAYOUTS = ('streets', 'uniform')
PHASE_REFERENCES = ('antenna', 'none')

# Set ids: part of the seed derivation of every sample (see .measurement), never change
# them.
LABELLED_SET, UNLABELLED_SET = 0, 1


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
      raise ValueError(
        f'num_used_subcarriers={self.num_used_subcarriers} must be in (0, fft_size={self.fft_size}]'
      )
    lo, hi = np.asarray(self.area_min), np.asarray(self.area_max)
    if lo.shape != (3,) or hi.shape != (3,) or np.any(hi <= lo):
      raise ValueError(f'area_min {self.area_min} must be below area_max {self.area_max}')
    if self.area_min[0] <= 0:
      raise ValueError('area_min[0] must be > 0: UEs lie in front of the array (+x)')
    if self.ue_height_jitter_m >= hi[2] - lo[2]:
      raise ValueError('ue_height_jitter_m must be smaller than the area z range')
    if self.position_layout not in POSITION_LAYOUTS:
      raise ValueError(
        f'position_layout must be one of {POSITION_LAYOUTS}, got {self.position_layout!r}'
      )
    if self.phase_reference not in PHASE_REFERENCES:
      raise ValueError(
        f'phase_reference must be one of {PHASE_REFERENCES}, got {self.phase_reference!r}'
      )
    if min(self.num_streets) < 1:
      raise ValueError(f'num_streets must be >= 1 per axis, got {self.num_streets}')

  @property
  def wavelength_m(self) -> float:
    return SPEED_OF_LIGHT / self.carrier_hz

  @property
  def subcarrier_spacing_hz(self) -> float:
    return self.bandwidth_hz / self.fft_size
