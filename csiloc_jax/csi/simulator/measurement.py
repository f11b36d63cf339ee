"""Measurements of the noise-free channel, and the deterministic random streams.

Where this sits in the simulator: :func:`sample_positions` places the UEs of a set on the
:class:`~.environment.ChannelModel`'s streets, :func:`~.propagation.clean_channel` gives
their noise-free CSI, and :func:`_measure` makes the repeated noisy measurements the
CTW-2020 files hold: a small common phase jitter per measurement (coherent, so
averaging keeps the signal), the phase referenced to the first antenna at the centre
subcarrier (which removes the carrier phase that turns over every 24 cm and keeps the
smooth direction and delay structure), a per-antenna SNR from the received power and
the noise floor, and exact zeros for estimates whose SNR falls under a threshold, like
the failed estimates of the real set. :func:`generate_samples` is that whole chain for
a range of sample indices; :mod:`.writer` streams it into files.

Determinism: every random number of sample ``i`` of a set comes from counter-based
streams keyed on ``(seed, set, stream)`` and advanced to ``i`` (PCG64 ``advance``), so
the output does not depend on how the indices are cut into chunks, files or worker
pieces, and a chunk is still generated with a few vectorised calls. Positions depend
only on the seed, the set and the index, not on the array or OFDM shape.
"""

from __future__ import annotations

import concurrent.futures
from typing import Iterator

import numpy as np

from csiloc_jax.csi.simulator import environment
from csiloc_jax.csi.simulator import propagation
from csiloc_jax.csi.simulator.environment import ChannelModel

# Random-stream ids: part of the seed derivation, never change them.
_POSITION_STREAM, _MEASUREMENT_STREAM, _NOISE_STREAM = 0, 1, 2


def _measure(
  model: ChannelModel,
  clean: np.ndarray,
  snr_normal: np.ndarray,
  phase_normal: np.ndarray,
  noise_re: np.ndarray,
  noise_im: np.ndarray,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """Repeated noisy measurements from standard normals; works in place on the noise.

  clean [B, A, S] complex; snr_normal [B, A, M]; phase_normal [B, M];
  noise_re/noise_im [B, A, S, M] float32 N(0, 1). Returns (H_Re, H_Im, SNR) float32.
  """
  config = model.config
  magnitude = np.abs(clean)
  magnitude *= magnitude
  power = magnitude.mean(-1, dtype=np.float64)  # [B, A]
  snr = (10 * np.log10(np.maximum(power, 1e-300) / model.noise_power))[..., None]
  snr = (snr + config.snr_fluctuation_db * snr_normal).astype(np.float32)  # [B, A, M]
  # Noise std per real dimension from the reported SNR, so SNR and noise agree.
  sigma = np.sqrt(power[..., None] / 10 ** (snr.astype(np.float64) / 10) / 2)
  sigma = sigma.astype(np.float32)[:, :, None, :]
  phase = config.phase_jitter_rad * phase_normal  # [B, M]
  if config.phase_reference == 'antenna':
    ref = clean[:, 0, clean.shape[2] // 2].astype(np.complex128)
    phase = phase - np.angle(ref)[:, None]
  rot = np.exp(1j * phase).astype(np.complex64)[:, None, None, :]  # [B,1,1,M]
  signal = clean[..., None] * rot  # [B,A,S,M]
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


def channel_response(
  positions: np.ndarray, model: ChannelModel, rng: np.random.Generator, num_measurements: int
) -> tuple[np.ndarray, np.ndarray]:
  """Noisy measured CSI for UE ``positions`` [B, 3], without files.

  Returns (H [B, A, S, M] complex64 with exact zeros for failed estimates, SNR
  [B, A, M] float32 dB). Uses ``rng`` for the measurement randomness; the files written
  by :func:`.writer.generate_ctw_dataset` use per-index streams instead (same distribution).
  """
  clean = propagation.clean_channel(model, positions)
  b, a, s = clean.shape
  m = int(num_measurements)
  re, im, snr = _measure(
    model,
    clean,
    rng.standard_normal((b, a, m)),
    rng.standard_normal((b, m)),
    rng.standard_normal((b, a, s, m), dtype=np.float32),
    rng.standard_normal((b, a, s, m), dtype=np.float32),
  )
  h = np.empty(re.shape, np.complex64)
  h.real, h.imag = re, im
  return h, snr


def _raw_stream(
  seed: int, set_id: int, stream: int, start: int, count: int, per_sample: int
) -> np.ndarray:
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
  words = raw.view(np.uint32)  # [n, 2k], little-endian word order
  words >>= np.uint32(9)
  words |= np.uint32(0x3F800000)
  u = words.view(np.float32)  # [1, 2)
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
  u = (raw >> np.uint64(11)).astype(np.float64) * 2.0**-53  # [0, 1), 53 bits
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
    xy = (
      model.street_start[k]
      + along[:, None] * seg[k]
      + ((2 * u[:, 1] - 1) * config.street_half_width_m)[:, None] * normal[k]
    )
    xy = np.clip(xy, lo[:2], hi[:2])
  z = (
    environment.ground_height(model, xy) + config.ue_height_m + config.ue_height_jitter_m * u[:, 2]
  )
  return np.concatenate([xy, np.clip(z, lo[2], hi[2])[:, None]], -1)


def measure_indices(
  model: ChannelModel, set_id: int, start: int, clean: np.ndarray, num_measurements: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """Measurements of samples start..start+len(clean) from their per-index streams.

  ``model`` needs only ``seed``, ``noise_power`` (per subcarrier, in |H|^2 units) and
  the receiver fields of ``config`` (``snr_fluctuation_db``, ``phase_jitter_rad``,
  ``phase_reference``, ``zero_snr_threshold_db``): the ray-traced source
  (:mod:`csiloc_jax.csi.raytrace`) measures its traced channels through this same stage.
  """
  n, a, s = clean.shape
  m = num_measurements
  per_sample = (a * m + m + 1) // 2
  raw = _raw_stream(model.seed, set_id, _MEASUREMENT_STREAM, start, n, per_sample)
  z1, z2 = _normals_from_bits(raw)
  z = np.concatenate([z1, z2], axis=-1)  # [n, 2 * per_sample]
  raw = _raw_stream(model.seed, set_id, _NOISE_STREAM, start, n, a * s * m)
  noise_re, noise_im = _normals_from_bits(raw)
  return _measure(
    model,
    clean,
    z[:, : a * m].reshape(n, a, m),
    z[:, a * m : a * m + m],
    noise_re.reshape(n, a, s, m),
    noise_im.reshape(n, a, s, m),
  )


def generate_pieces(
  model: ChannelModel,
  set_id: int,
  start: int,
  stop: int,
  num_measurements: int,
  executor: concurrent.futures.Executor | None = None,
  workers: int = 1,
) -> Iterator[tuple[int, np.ndarray, np.ndarray, np.ndarray, np.ndarray]]:
  """Samples start..stop in consecutive pieces: (offset, H_Re, H_Im, SNR, Pos) each.

  The noise-free channel of the whole range is one batched matmul in this thread
  (BLAS threads it by itself); the measurement stage -- random streams, Box-Muller,
  noise, zeros, most of the work -- is pure numpy ufuncs, which release the GIL,
  so it runs as one piece per worker thread. Keeping BLAS out of the workers avoids
  oversubscribing the cores (workers x BLAS threads).
  """
  pos = sample_positions(model, set_id, start, stop)
  clean = propagation.clean_channel(model, pos)
  n = stop - start
  pieces = 1 if executor is None else max(1, min(workers, n // 8))
  cuts = np.linspace(0, n, pieces + 1).astype(int).tolist()
  bounds = list(zip(cuts[:-1], cuts[1:]))

  def one(bound):
    lo, hi = bound
    return measure_indices(model, set_id, start + lo, clean[lo:hi], num_measurements)

  results = map(one, bounds) if executor is None else executor.map(one, bounds)
  for (lo, hi), (re, im, snr) in zip(bounds, results):
    yield lo, re, im, snr, pos[lo:hi]


def generate_samples(
  model: ChannelModel, set_id: int, start: int, stop: int, num_measurements: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
  """Samples start..stop of a set (LABELLED_SET or UNLABELLED_SET), as in the files.

  Returns (H_Re, H_Im [n, A, S, M] float32, SNR [n, A, M] float32, Pos [n, 3] float64).
  """
  if not 0 <= start <= stop:
    raise ValueError(f'need 0 <= start <= stop, got {start}, {stop}')
  ((_, re, im, snr, pos),) = generate_pieces(model, set_id, start, stop, num_measurements)
  return re, im, snr, pos
