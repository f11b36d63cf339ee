"""Multipath propagation from a UE to the base-station array: the noise-free channel.

Where this sits in the simulator: given a :class:`~.environment.ChannelModel` and UE
positions, :func:`propagation_paths` lists the paths (line of sight, ground reflection,
one specular reflection per visible facade by the image method, one bistatic path per
scatterer) with their delays, complex gains and arrival points, and
:func:`clean_channel` turns them into the noise-free CSI ``[B, A, S]`` that
:mod:`.measurement` measures. The antenna response is the exact spherical per-element
phase at the carrier plus the first-order wideband (beam-squint) term.
"""

from __future__ import annotations

import math

import numpy as np

from csiloc_jax.csi.simulator import environment
from csiloc_jax.csi.simulator.config import SPEED_OF_LIGHT
from csiloc_jax.csi.simulator.environment import ChannelModel


def _sigmoid(x: np.ndarray) -> np.ndarray:
  return 0.5 * (1 + np.tanh(0.5 * x))


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
  shadow = 10 ** (-environment.shadowing_db(model, p[:, :2]) / 20)
  origin = np.zeros(3)
  los_block = 10 ** (-environment.blockage_loss_db(model, origin, p) / 20)

  # Line of sight.
  sources, lengths = [p[:, None]], [dist[:, None]]
  gains = [(los_block * environment.free_space_amplitude(config, dist))[:, None]]

  # Ground reflection off the locally flat ground under the UE; blocked like the LoS.
  image = p.copy()
  image[:, 2] = 2 * environment.ground_height(model, p[:, :2]) - p[:, 2]
  ground_length = np.linalg.norm(image, axis=-1)
  sources.append(image[:, None])
  lengths.append(ground_length[:, None])
  gains.append(
    (
      config.ground_reflection * los_block * environment.free_space_amplitude(config, ground_length)
    )[:, None]
  )

  # Facade reflections by the image method: mirror the UE across the facade plane; the
  # path exists if the specular point lies on the finite facade (soft edges) and both
  # ends are in front of it. Each leg can still be blocked by other buildings.
  if len(model.facade_reflection):
    a, n = model.facade_start, model.facade_normal
    along = model.facade_end - a
    width = np.linalg.norm(along, axis=-1)
    along = along / width[:, None]
    taper = config.facade_edge_taper_m
    s0 = -(a * n).sum(-1)  # BS distance to plane [F]
    s1 = ((p[:, None, :2] - a) * n).sum(-1)  # UE distance [B, F]
    s1c = np.maximum(s1, 1e-3)
    img = np.broadcast_to(p[:, None], s1.shape + (3,)).copy()
    img[..., :2] -= 2 * s1c[..., None] * n
    t = s0 / (s0 + s1c)
    spec = t[..., None] * img  # specular point [B, F, 3]
    xi = ((spec[..., :2] - a) * along).sum(-1)
    weight = (
      _sigmoid(s1 / taper)
      * _sigmoid(xi / taper)
      * _sigmoid((width - xi) / taper)
      * _sigmoid((model.facade_top - spec[..., 2]) / taper)
      * _sigmoid((spec[..., 2] - model.facade_bottom) / taper)
    )
    # Blockage of both legs, only for (UE, facade) pairs that reflect at all: most
    # facades are out of reach of a given UE, and the test is per pair, so the result
    # of a sample never depends on the rest of its batch. The specular point is pulled
    # off the facade so that its own building does not count.
    legs_db = np.zeros_like(weight)
    bi, fi = np.nonzero(weight > 1e-6)
    off = spec[bi, fi] + 0.05 * np.concatenate([n[fi], np.zeros((len(fi), 1))], -1)
    legs_db[bi, fi] = environment.blockage_loss_db(
      model, origin, off
    ) + environment.blockage_loss_db(model, off, p[bi])
    img_length = np.linalg.norm(img, axis=-1)
    sources.append(img)
    lengths.append(img_length)
    gains.append(
      model.facade_reflection
      * weight
      * 10 ** (-legs_db / 20)
      * environment.free_space_amplitude(config, img_length)
    )

  # Scatterers: UE -> scatterer -> BS, bistatic radar equation with path loss per leg.
  if len(model.scatterer_coefficient):
    s = model.scatterer_position
    d1 = np.linalg.norm(p[:, None] - s, axis=-1)  # [B, Ns]
    d2 = np.linalg.norm(s, axis=-1)
    ue_leg = 10 ** (-environment.blockage_loss_db(model, p[:, None], s) / 20)
    amp = (
      config.wavelength_m
      / (4 * np.pi)
      * (np.maximum(d1, 1.0) * np.maximum(d2, 1.0)) ** (-config.path_loss_exponent / 2)
    )
    sources.append(np.broadcast_to(s, d1.shape + (3,)))
    lengths.append(d1 + d2)
    gains.append(model.scatterer_coefficient * ue_leg * amp)

  gain = np.concatenate(gains, -1) * shadow[:, None]
  return dict(
    delay_s=np.concatenate(lengths, -1) / SPEED_OF_LIGHT,
    gain=gain.astype(np.complex128),
    source=np.concatenate(sources, 1),
  )


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
  coarse = np.mod(tau * (f0 + k * df * np.arange(heads)), 1.0)  # [..., H]
  fine = np.mod(tau * (df * np.arange(k)), 1.0)  # [..., K]

  def phasor(cycles):
    angle = (2 * np.pi * cycles).astype(np.float32)
    out = np.empty(angle.shape, np.complex64)
    out.real, out.imag = np.cos(angle), -np.sin(angle)
    return out

  f = phasor(coarse)[..., :, None] * phasor(fine)[..., None, :]  # [..., H, K]
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
  dsrc = np.linalg.norm(src, axis=-1)  # [B, P]
  # |s - r| - |s| = (|r|^2 - 2 s.r) / (|s - r| + |s|): no cancellation of the 100 m
  # distances, and a matmul instead of a norm over a [B, A, P, 3] array.
  sr = src @ r.T  # [B, P, A]
  r2 = (r * r).sum(-1)
  num = r2 - 2 * sr
  delta = num / (np.sqrt(np.maximum(dsrc[..., None] ** 2 + num, 0.0)) + dsrc[..., None])
  delta = np.ascontiguousarray(delta.transpose(0, 2, 1))  # [B, A, P]
  # Element phases are small (|delta| < aperture), so float32 is exact enough here.
  angle = (-2 * np.pi / model.wavelength_m * delta).astype(np.float32)
  g = np.empty((len(src), 2 * a, src.shape[1]), np.complex64)  # [B, 2A, P]
  g.real[:, :a], g.imag[:, :a] = np.cos(angle), np.sin(angle)
  g[:, :a] *= (gain * element_pattern(model, src)).astype(np.complex64)[:, None, :]
  g[:, :a] *= model.element_gain.astype(np.float32)[:, None]
  g[:, a:] = g[:, :a] * (-2j * np.pi / SPEED_OF_LIGHT * delta).astype(np.complex64)
  both = g @ _delay_phasors(model, tau)  # [B, 2A, S]
  h = both[:, :a]
  h += both[:, a:] * model.subcarrier_offsets_hz.astype(np.float32)
  return h
