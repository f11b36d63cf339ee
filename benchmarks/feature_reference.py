"""What a user writes to turn CTW files into one CSI feature: the ``features_*`` rows'
reference (ctw_read.py).

Plain h5py and numpy, a file at a time: read ``H_Re`` and ``H_Im`` whole, average the
complex CSI over the measurements, compute the feature with the textbook formula (the
covariance as a batched matmul, the angle-delay profile with ``np.fft``), keep every
file's features in memory and save them once at the end. No validation. Imports only
numpy and h5py, so its child process measures the pipeline, not the library's imports.

  python benchmarks/feature_reference.py FEATURE OUT.npy GRID_JSON FILE...

``GRID_JSON`` is ``{"index": [...], "side": n}``: where each antenna sits on the square
array grid (the CTW array's 8 x 8 with dead elements), which the user knows.
"""

from __future__ import annotations

import json
import sys
import time

import numpy as np

ANGLE_DELAY_TAPS = 32  # the library's csi.features.ANGLE_DELAY_TAPS
MAGNITUDE_DB_FLOOR = -60.0  # the library's csi.features.MAGNITUDE_DB_FLOOR


def feature_of(h: np.ndarray, feature: str, grid: dict) -> np.ndarray:
  """Complex averaged CSI ``[n, a, s]`` -> float32 features (the library's layout)."""
  n, a, s = h.shape
  if feature == 'covariance':
    r = h @ h.conj().transpose(0, 2, 1)
    trace = np.trace(r, axis1=1, axis2=2).real
    r = r / np.where(trace > 0, trace, 1.0)[:, None, None]
    return np.stack([r.real, r.imag], -1).astype(np.float32)
  if feature == 'angle_delay':
    side = grid['side']
    full = np.zeros((n, side * side, s), h.dtype)
    full[:, grid['index']] = h
    beams = np.fft.fft2(full.reshape(n, side, side, s), axes=(1, 2))
    taps = np.fft.ifft(beams.reshape(n, side * side, s), axis=-1)[..., :ANGLE_DELAY_TAPS]
    power = np.abs(taps) ** 2
    total = power.sum((1, 2), keepdims=True)
    return (power / np.where(total > 0, total, 1.0))[..., None].astype(np.float32)
  if feature == 'magnitude_db':
    mag = np.abs(h)
    peak = mag.max((1, 2), keepdims=True)
    with np.errstate(divide='ignore'):
      db = 20 * np.log10(mag / np.where(peak > 0, peak, 1.0))
    return np.maximum(db, MAGNITUDE_DB_FLOOR)[..., None].astype(np.float32)
  raise ValueError(feature)


def run(feature: str, out: str, grid: dict, files: list[str]) -> int:
  import h5py  # pylint: disable=g-import-not-at-top

  feats = []
  source_bytes = 0
  for path in files:
    with h5py.File(path, 'r') as f:
      re, im = f['H_Re'][()], f['H_Im'][()]
    source_bytes += re.nbytes + im.nbytes
    feats.append(feature_of((re + 1j * im).mean(-1), feature, grid))
  np.save(out, np.concatenate(feats))
  return source_bytes


if __name__ == '__main__':
  t0 = time.perf_counter()
  nbytes = run(sys.argv[1], sys.argv[2], json.loads(sys.argv[3]), sys.argv[4:])
  seconds = time.perf_counter() - t0
  peak = None
  with open('/proc/self/status') as fh:
    for line in fh:
      if line.startswith('VmHWM:'):
        peak = int(line.split()[1]) / 1024
  print(json.dumps({'seconds': seconds, 'source_bytes': nbytes, 'peak_rss_mb': peak}))
