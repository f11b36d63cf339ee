"""The CSI feature maths: measurement averaging and the feature maps fed to the models.

Data flow: :mod:`csiloc_jax.csi.reader` reads raw ``H_Re``/``H_Im`` slices
``[n, antennas, subcarriers, measurements]`` from the CTW-2020 files →
:func:`average_measurements` → complex ``[n, antennas, subcarriers]`` →
:func:`extract_features` → the float32 map ``[n, antennas, subcarriers, channels]`` the
reader caches and the models take (``channels`` = :func:`num_channels`). Pure numpy, a
slice at a time; nothing here touches files.
"""

from __future__ import annotations

import math

import numpy as np

FEATURES = ('real', 'real_imag', 'magnitude', 'magnitude_db', 'covariance', 'angle_delay')
# Delay taps kept by the angle-delay profile (from the first): at the CTW spacing over
# 924 subcarriers a tap is 55 ns (16 m of path), so 32 taps span 1.8 us.
ANGLE_DELAY_TAPS = 32
# Floor of the dB magnitude relative to each sample's strongest entry: failed (zero)
# estimates and deep fades land here instead of at -inf.
MAGNITUDE_DB_FLOOR = -60.0
AVERAGES = ('mean', 'valid_mean')


def _pairwise_sum(x: np.ndarray) -> np.ndarray:
  """Sum of float32 ``x`` over its last axis, in the order numpy sums a complex64 axis.

  numpy (``pairwise_sum`` for complex types) adds fewer than 4 terms one by one; up to
  64 terms as four running sums over blocks of four, combined as (0 + 1) + (2 + 3), and
  the left-over terms added one by one; longer axes are split in two at a multiple of 4
  first. Following that order per part gives bit for bit the parts of
  ``(re + 1j * im).sum(-1)`` without building the complex array (three times the slice's
  memory traffic), so the cache stays byte-identical to that definition.
  """
  m = x.shape[-1]
  if m > 64:
    total = _pairwise_sum(x[..., : 4 * (m // 8)])
    total += _pairwise_sum(x[..., 4 * (m // 8) :])
    return total
  if m < 4:
    total = x[..., 0].copy()
    for k in range(1, m):
      total += x[..., k]
    return total
  body = m - m % 4
  r = [x[..., j] for j in range(4)]
  if body > 4:
    r = [x[..., j] + x[..., 4 + j] for j in range(4)]
    for k in range(8, body, 4):
      for j in range(4):
        r[j] += x[..., k + j]
  total = r[0] + r[1]
  total += r[2] + r[3]
  for k in range(body, m):
    total += x[..., k]
  return total


# Rows (antenna-subcarrier entries) averaged at a time: a block's inputs and temporaries
# stay in the CPU's cache between the few passes of the pairwise sum.
_AVERAGE_BLOCK = 1 << 14


def average_measurements(h_re: np.ndarray, h_im: np.ndarray, average: str) -> np.ndarray:
  """Complex CSI averaged over the last (measurement) axis → ``[n, a, s]`` complex64.

  ``mean`` is the paper's plain average. ``valid_mean`` skips failed estimates (stored as
  exact zeros in both parts) and leaves 0 where every measurement failed.

  Values are those of ``h = re + 1j * im`` in complex64 (after casting each part to
  float32), then ``h.mean(-1)`` or ``h.sum(-1) / max(count, 1)``, bit for bit; the sums
  run per part (:func:`_pairwise_sum`), a block of rows at a time. One exception: where
  a part's sum is not finite, numpy's complex division also makes the other part NaN;
  here each part keeps its own value.
  """
  if average not in AVERAGES:
    raise ValueError(f'config.data.average must be one of {AVERAGES}, got {average!r}')
  m = h_re.shape[-1]
  re_rows, im_rows = h_re.reshape(-1, m), h_im.reshape(-1, m)
  out = np.empty(h_re.shape[:-1], np.complex64)
  out_rows = out.reshape(-1)
  for lo in range(0, len(out_rows), _AVERAGE_BLOCK):
    rows = slice(lo, lo + _AVERAGE_BLOCK)
    if average == 'mean':
      count = m
    else:
      # numpy divides in complex128, then rounds to complex64: for float32 operands that
      # double rounding gives the correctly rounded float32 quotient, as this does.
      valid = (re_rows[rows] != 0) | (im_rows[rows] != 0)
      count = np.maximum(valid.sum(-1), 1).astype(np.float32)
    for part, rows_in in ((out_rows.real, re_rows), (out_rows.imag, im_rows)):
      total = _pairwise_sum(rows_in[rows].astype(np.float32, copy=False))
      # numpy adds the pairwise sum to 0.0, which turns a -0.0 sum into +0.0.
      total += np.float32(0)
      np.divide(total, count, out=part[rows])
  return out


def spatial_covariance(h_avg: np.ndarray) -> np.ndarray:
  """Trace-normalised spatial covariance ``R / tr(R)``, ``R = sum_s h_s h_s^H``: complex
  ``[n, a, a]`` from averaged CSI ``[n, a, s]``; all zeros where the CSI is.

  Summing over subcarriers averages out small-scale fading (which decorrelates within a
  wavelength) while keeping the directions of arrival; dividing by the trace removes
  the received power, which varies with shadowing more than with position.
  """
  h = h_avg.astype(np.complex64, copy=False)
  r = np.matmul(h, np.conj(np.swapaxes(h, 1, 2)))  # [n, a, a]
  trace = np.real(np.trace(r, axis1=1, axis2=2)).astype(np.float32)
  scale = np.where(trace > 0, 1.0 / np.where(trace > 0, trace, 1.0), 0.0).astype(np.float32)
  return r * scale[:, None, None]


def magnitude_db(h_avg: np.ndarray) -> np.ndarray:
  """20 log10 |h| relative to each sample's strongest entry, floored at
  :data:`MAGNITUDE_DB_FLOOR` (all-zero samples are the floor everywhere)."""
  mag = np.abs(h_avg).astype(np.float32)
  peak = mag.reshape(len(mag), -1).max(1).reshape((-1,) + (1,) * (mag.ndim - 1))
  ratio = mag / np.where(peak > 0, peak, 1.0)
  db = 20 * np.log10(np.maximum(ratio, np.float32(1e-30)))
  return np.maximum(db, np.float32(MAGNITUDE_DB_FLOOR)).astype(np.float32)


def angle_delay_profile(h_avg: np.ndarray) -> np.ndarray:
  """Beamspace power ``[n, side * side, taps]``, normalised to sum 1 per sample.

  The antennas go back onto their square grid (the CTW array's 8 x 8, dead elements as
  zeros; the numbering of :func:`.simulator.environment.array_geometry`), a 2-D DFT over
  the grid turns them into beams (directions), an inverse DFT over the subcarriers into
  delay taps, of which the first :data:`ANGLE_DELAY_TAPS` are kept. Power per
  (beam, tap) keeps where energy arrives from and when, and drops the phases that small-
  scale fading scrambles.
  """
  from csiloc_jax.csi.simulator import environment  # pylint: disable=g-import-not-at-top

  n, a, s = h_avg.shape
  _, index, side = environment.array_geometry(a, 1.0)
  grid = np.zeros((n, side * side, s), np.complex64)
  grid[:, index] = h_avg
  beams = np.fft.fft2(grid.reshape(n, side, side, s), axes=(1, 2)).reshape(n, side * side, s)
  taps = np.fft.ifft(beams, axis=-1)[..., : min(ANGLE_DELAY_TAPS, s)]
  power = (taps.real**2 + taps.imag**2).astype(np.float32)
  total = power.reshape(n, -1).sum(1)
  return power / np.where(total > 0, total, 1.0)[:, None, None]


def feature_shape(feature: str, num_antennas: int, num_subcarriers: int) -> tuple[int, int, int]:
  """Shape of one sample's feature map: ``(a, s, channels)``, or ``(a, a, 2)`` for the
  covariance."""
  if feature == 'covariance':
    return (num_antennas, num_antennas, 2)
  if feature == 'angle_delay':
    side = math.isqrt(num_antennas - 1) + 1
    return (side * side, min(ANGLE_DELAY_TAPS, num_subcarriers), 1)
  return (num_antennas, num_subcarriers, num_channels(feature))


def extract_features(h_avg: np.ndarray, feature: str) -> np.ndarray:
  """Averaged complex CSI ``[n, a, s]`` → float32 feature map ``[n, *feature_shape]``:
  the real part, real and imaginary parts, the magnitude, or the trace-normalised
  spatial covariance (real and imaginary parts, ``[n, a, a, 2]``)."""
  if feature == 'covariance':
    r = spatial_covariance(h_avg)
    out = np.stack([r.real, r.imag], axis=-1)
  elif feature == 'real':
    out = h_avg.real[..., None]
  elif feature == 'real_imag':
    out = np.stack([h_avg.real, h_avg.imag], axis=-1)
  elif feature == 'magnitude':
    out = np.abs(h_avg)[..., None]
  elif feature == 'angle_delay':
    out = angle_delay_profile(h_avg)[..., None]
  elif feature == 'magnitude_db':
    out = magnitude_db(h_avg)[..., None]
  else:
    raise ValueError(f'config.data.feature must be one of {FEATURES}, got {feature!r}')
  return out.astype(np.float32)


def num_channels(feature: str) -> int:
  """Channels of the feature map ``feature`` (its last axis)."""
  return 2 if feature in ('real_imag', 'covariance') else 1
