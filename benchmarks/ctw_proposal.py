"""Candidate replacement for ``ctw_data._write_cache``, measured by ``ctw_read.py``.

Not used by the library: ``run.py --only=ctw_read --proposals`` times
``ctw_data.build_cache`` with this writer patched in, in the same child-process set-up
as the library's, so the gain and the memory profile of the change are reproducible.
No JAX imports here: the child's peak memory must be the reader's own.
"""

from __future__ import annotations

import concurrent.futures
import json
import os
import time

import h5py
import numpy as np

from csiloc_jax import ctw_data


def write_cache(files, out: str, feature: str, average: str, chunk_size: int, folder: str,
                key: str) -> None:
  """``ctw_data._write_cache`` with the same files and values, faster and flat in memory.

  * Chunks are read with ``read_direct`` into buffers allocated once (two sets), not
    into fresh arrays per chunk (first-touch page faults of ~0.5 GB per chunk otherwise).
  * ``average='mean'`` is one BLAS matrix-vector product per part,
    ``h.reshape(-1, M) @ full(M, 1/M)``, instead of building complex temporaries.
  * Non-finite values are screened on the averages: any non-finite input makes its
    average non-finite, and only then does the exact element-wise check run (it names
    the file, dataset and index exactly as before).
  * A reader thread fills the next chunk's buffers while this one is averaged (HDF5
    reads and BLAS both release the GIL), so disk and CPU work overlap.
  * Features are appended with plain file writes after the ``.npy`` header instead of
    through a writable memmap, whose dirty pages count as the process's resident memory
    and so grow with the dataset.
  """
  total = sum(sf.num_samples for sf in files)
  a, s, m = files[0].num_antennas, files[0].num_subcarriers, files[0].num_measurements
  shape = (total, a, s, ctw_data.num_channels(feature))
  has_pos = all(sf.has_positions for sf in files)
  positions = np.zeros((total, 3), np.float64) if has_pos else None
  cap = max(1, min(chunk_size, max(sf.num_samples for sf in files)))
  weights = np.full(m, 1.0 / m, np.float32)
  tasks = [(i, start, min(start + chunk_size, sf.num_samples))
           for i, sf in enumerate(files) for start in range(0, sf.num_samples, chunk_size)]
  # Two buffer sets: a reader thread fills one while the other is being averaged.
  buffers = [{}, {}]
  open_files: dict = {}

  def read(task_index: int):
    i, start, stop = tasks[task_index]
    if i not in open_files:
      for old in list(open_files):
        open_files.pop(old).close()
      open_files[i] = h5py.File(files[i].path, 'r')
    f, n = open_files[i], stop - start
    bufs = buffers[task_index % 2]
    parts = []
    for name in ('H_Re', 'H_Im'):
      ds = f[name]
      if (name, ds.dtype.str) not in bufs:
        bufs[(name, ds.dtype.str)] = np.empty((cap, a, s, m), ds.dtype)
      buf = bufs[(name, ds.dtype.str)][:n]
      ds.read_direct(buf, np.s_[start:stop], np.s_[0:n])
      parts.append(buf)
    return parts

  t0, done, source_bytes = time.perf_counter(), 0, 0
  with open(os.path.join(out, 'features.npy'), 'wb') as fh, \
      concurrent.futures.ThreadPoolExecutor(1) as reader:
    np.lib.format.write_array_header_1_0(fh, {
        'descr': np.lib.format.dtype_to_descr(np.dtype(np.float32)),
        'fortran_order': False, 'shape': shape})
    pending = reader.submit(read, 0) if tasks else None
    try:
      for t, (i, start, stop) in enumerate(tasks):
        h_re, h_im = pending.result()
        # Buffer set t % 2 is ours until the next-but-one read, so read ahead now.
        pending = reader.submit(read, t + 1) if t + 1 < len(tasks) else None
        sf, n = files[i], stop - start
        if average == 'mean':
          re_avg = (h_re.reshape(-1, m) @ weights.astype(h_re.dtype)).reshape(n, a, s)
          im_avg = (h_im.reshape(-1, m) @ weights.astype(h_im.dtype)).reshape(n, a, s)
          if not (np.isfinite(re_avg).all() and np.isfinite(im_avg).all()):
            ctw_data._check_finite(h_re, sf.path, 'H_Re', start)  # pylint: disable=protected-access
            ctw_data._check_finite(h_im, sf.path, 'H_Im', start)  # pylint: disable=protected-access
          if feature == 'real':
            feats = re_avg.astype(np.float32)[..., None]
          else:
            feats = ctw_data.extract_features(
                (re_avg.astype(np.float32) + 1j * im_avg.astype(np.float32)
                 ).astype(np.complex64), feature)
        else:
          ctw_data._check_finite(h_re, sf.path, 'H_Re', start)  # pylint: disable=protected-access
          ctw_data._check_finite(h_im, sf.path, 'H_Im', start)  # pylint: disable=protected-access
          feats = ctw_data.extract_features(
              ctw_data.average_measurements(h_re, h_im, average), feature)
        fh.write(np.ascontiguousarray(feats, np.float32).tobytes())
        source_bytes += h_re.nbytes + h_im.nbytes
        done += n
    finally:
      if pending is not None:
        pending.cancel()
        try:
          pending.result()
        except BaseException:  # pylint: disable=broad-except
          pass
      for f in open_files.values():
        f.close()
  if has_pos:
    first = 0
    for sf in files:
      with h5py.File(sf.path, 'r') as f:
        pos = f['Pos'][:]
      ctw_data._check_finite(pos, sf.path, 'Pos', 0)  # pylint: disable=protected-access
      positions[first:first + sf.num_samples] = pos
      first += sf.num_samples
  if has_pos:
    np.save(os.path.join(out, 'positions.npy'), positions)
  meta = {'source': os.path.abspath(folder), 'key': key, 'feature': feature,
          'average': average, 'num_samples': total, 'feature_shape': list(shape[1:]),
          'num_measurements': m, 'files': [os.path.basename(sf.path) for sf in files],
          'source_bytes': source_bytes, 'seconds': time.perf_counter() - t0}
  with open(os.path.join(out, 'meta.json'), 'w') as fh:
    json.dump(meta, fh, indent=2)
