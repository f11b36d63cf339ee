"""Writers of small CTW-layout HDF5 folders for reader and training tests.

Unlike ``csiloc_jax.csi.simulator`` (the physical generator), these write simple structured
data fast and let a test break the layout on purpose.
"""

import os

import h5py
import numpy as np

from csiloc_jax.csi import reader


def write_file(
  path, n, shape=(8, 12, 3), with_pos=True, dtype=np.float32, seed=0, extra=None, drop=()
):
  """One file_<k>.hdf5 whose CSI is a smooth function of its positions."""
  a, s, m = shape
  rng = np.random.default_rng(seed)
  pos = rng.uniform([-300, 50, -40], [300, 900, 0], size=(n, 3))
  ant = np.arange(a)[None, :, None, None]
  sc = np.arange(s)[None, None, :, None]
  phase = (
    pos[:, 0, None, None, None] / 300 * ant * 0.7
    + pos[:, 1, None, None, None] / 900 * sc * 0.5
    + pos[:, 2, None, None, None] / 40
  )
  h = np.exp(1j * phase) * np.ones((1, 1, 1, m)) + 0.05 * (
    rng.normal(size=(n, a, s, m)) + 1j * rng.normal(size=(n, a, s, m))
  )
  data = {
    'H_Re': h.real.astype(dtype),
    'H_Im': h.imag.astype(dtype),
    'SNR': rng.uniform(0, 30, (n, a, m)).astype(dtype),
  }
  if with_pos:
    data['Pos'] = pos.astype(dtype)
  data.update(extra or {})
  with h5py.File(path, 'w') as f:
    for key, value in data.items():
      if key not in drop:
        f.create_dataset(key, data=value)
  return data


def write_dataset(
  root, num_labelled=96, num_unlabelled=160, shape=(8, 12, 3), per_file=64, dtype=np.float32, seed=0
):
  """Both CTW folders under ``root``; returns ``root``."""
  for folder, total, with_pos in (
    (reader.LABELLED_DIR, num_labelled, True),
    (reader.UNLABELLED_DIR, num_unlabelled, False),
  ):
    os.makedirs(os.path.join(root, folder), exist_ok=True)
    for k, start in enumerate(range(0, total, per_file)):
      n = min(per_file, total - start)
      write_file(
        os.path.join(root, folder, reader.file_name(k + 1)),
        n,
        shape,
        with_pos,
        dtype,
        seed=seed * 1000 + k + (500 if with_pos else 0),
      )
  return str(root)
