"""Streaming reader for the IEEE CTW-2020 HDF5 layout, with an on-disk feature cache.

Data flow: ``CTW2020_{labelled,unlabelled}_data/file_<k>.hdf5`` (raw CSI, ~2 MB a sample)
→ :func:`scan_folder` validates every file's layout without reading the CSI →
:func:`build_cache` reads a few samples at a time (the next slice is read while this one
is processed), averages over the measurement axis and extracts the feature map
(:mod:`csiloc_jax.csi.features`), and appends it to a ``.npy`` file under the cache
directory →
:class:`CTWArrays` exposes ``features`` ``[N, antennas, subcarriers, channels]`` (a
read-only memmap) and ``positions`` ``[N, 3]`` → :mod:`csiloc_jax.csi.input_pipeline` cuts
splits and batches.

Nothing here ever holds a whole dataset in memory: the real unlabelled set is ~37 GB of
float32. The cache is keyed on the source files (names, sizes, modification times) and
on every preprocessing option, so changing either rebuilds it; it is written to a
temporary folder and renamed into place with ``meta.json`` written last, so a cache
folder holding ``meta.json`` is complete and an interrupted build is never reused.
The layout itself is described in docs/schemas.md, 'CTW-2020 layout'.

Every layout problem raises :class:`CTWFormatError` naming the file, the dataset and
what was expected.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import dataclasses
import os
import re
import shutil
import tempfile
import time

from absl import logging
import h5py
import ml_collections
import numpy as np

from csiloc_jax.core import errors
from csiloc_jax.core import metric_writer
from csiloc_jax.core import runs
from csiloc_jax.csi import features

LABELLED_DIR = 'CTW2020_labelled_data'
UNLABELLED_DIR = 'CTW2020_unlabelled_data'
FILE_PATTERN = re.compile(r'^file_(\d+)\.hdf5$')
# Bump when the cached representation changes so old caches are not reused.
CACHE_VERSION = 1


def file_name(k: int) -> str:
  """Name of the ``k``-th file of a set (from 1), matching :data:`FILE_PATTERN`."""
  return f'file_{k}.hdf5'


class CTWFormatError(errors.InputError):
  """A file or folder does not follow the CTW-2020 layout."""


@dataclasses.dataclass(frozen=True)
class SourceFile:
  path: str
  num_samples: int
  num_antennas: int
  num_subcarriers: int
  num_measurements: int
  has_positions: bool


# --------------------------------------------------------------------------------------
# Layout validation.


def list_files(folder: str) -> list[str]:
  """Paths of the ``file_<k>.hdf5`` files in ``folder``, in numeric order of ``k``."""
  if not os.path.isdir(folder):
    raise CTWFormatError(
      f'{folder}: folder does not exist (expected a CTW-2020 folder holding file_<k>.hdf5 files)'
    )
  names = [n for n in os.listdir(folder) if FILE_PATTERN.match(n)]
  if not names:
    raise CTWFormatError(f'{folder}: no file_<k>.hdf5 files found')
  names.sort(key=lambda n: int(FILE_PATTERN.match(n).group(1)))
  return [os.path.join(folder, n) for n in names]


def _check_file(path: str, require_positions: bool) -> SourceFile:
  try:
    f = h5py.File(path, 'r')
  except OSError as e:
    raise CTWFormatError(
      f'{path}: not a readable HDF5 file (truncated, corrupt or another format): {e}'
    ) from e
  with f:
    for key in ('H_Re', 'H_Im'):
      if key not in f:
        raise CTWFormatError(f'{path}: missing dataset {key!r} (found {sorted(f.keys())})')
      if not isinstance(f[key], h5py.Dataset):
        raise CTWFormatError(f'{path}: {key!r} is a group, expected a dataset')
    re_shape, im_shape = f['H_Re'].shape, f['H_Im'].shape
    if len(re_shape) != 4:
      raise CTWFormatError(
        f'{path}: dataset H_Re has shape {re_shape}, expected rank 4 '
        '(sample, antenna, subcarrier, measurement)'
      )
    if im_shape != re_shape:
      raise CTWFormatError(
        f'{path}: dataset H_Im has shape {im_shape}, expected the same shape as H_Re {re_shape}'
      )
    for key in ('H_Re', 'H_Im'):
      if f[key].dtype.kind != 'f':
        raise CTWFormatError(
          f'{path}: dataset {key!r} has dtype {f[key].dtype}, expected float32 or float64'
        )
    n, a, s, m = re_shape
    if min(re_shape) == 0:
      raise CTWFormatError(f'{path}: dataset H_Re has an empty axis: shape {re_shape}')
    if 'SNR' in f and f['SNR'].shape != (n, a, m):
      raise CTWFormatError(
        f'{path}: dataset SNR has shape {f["SNR"].shape}, expected '
        f'{(n, a, m)} (sample, antenna, measurement)'
      )
    has_pos = 'Pos' in f
    if require_positions and not has_pos:
      raise CTWFormatError(
        f"{path}: labelled file has no dataset 'Pos' (expected positions of shape ({n}, 3))"
      )
    if has_pos and f['Pos'].shape != (n, 3):
      raise CTWFormatError(
        f'{path}: dataset Pos has shape {f["Pos"].shape}, expected ({n}, 3) = (sample, [x, y, z])'
      )
  return SourceFile(path, n, a, s, m, has_pos)


def scan_folder(folder: str, require_positions: bool) -> list[SourceFile]:
  """Validates every ``file_<k>.hdf5`` in ``folder`` (layout only; values come later)."""
  files = [_check_file(p, require_positions) for p in list_files(folder)]
  first = files[0]
  for sf in files[1:]:
    for field in ('num_antennas', 'num_subcarriers', 'num_measurements'):
      if getattr(sf, field) != getattr(first, field):
        raise CTWFormatError(
          f'{sf.path}: dataset H_Re has {field.replace("num_", "")} = '
          f'{getattr(sf, field)}, but {first.path} has {getattr(first, field)}; all '
          'files of a set must share antenna, subcarrier and measurement counts'
        )
  return files


# --------------------------------------------------------------------------------------
# Value checks.


def _check_finite(block: np.ndarray, path: str, key: str, start: int) -> None:
  bad = ~np.isfinite(block)
  if bad.any():
    index = np.argwhere(bad)[0]
    raise CTWFormatError(
      f'{path}: dataset {key!r} holds a non-finite value ({block[tuple(index)]}) at '
      f'index {(start + int(index[0]),) + tuple(int(i) for i in index[1:])}; expected '
      'finite numbers (failed estimates are stored as exact zeros)'
    )


# --------------------------------------------------------------------------------------
# The cache.


@dataclasses.dataclass
class CTWArrays:
  """One preprocessed set: features (read-only memmap) and positions (or None)."""

  features: np.ndarray
  positions: np.ndarray | None
  source: str
  meta: dict

  def __len__(self) -> int:
    return self.features.shape[0]

  @property
  def feature_shape(self) -> tuple[int, ...]:
    return tuple(self.features.shape[1:])


def _cache_key(files: list[SourceFile], feature: str, average: str) -> str:
  """Fingerprint of the source files and the options (16 hex digits: a folder name)."""
  return runs.fingerprint(
    {
      'files': [runs.file_signature(sf.path) for sf in files],
      'feature': feature,
      'average': average,
      'version': CACHE_VERSION,
    }
  )[:16]


def build_cache(
  folder: str,
  cache_dir: str,
  *,
  feature: str = 'real',
  average: str = 'mean',
  require_positions: bool = False,
  chunk_size: int = 256,
) -> CTWArrays:
  """Preprocesses ``folder`` into ``cache_dir`` (or reuses a matching cache)."""
  if feature not in features.FEATURES:
    raise ValueError(f'config.data.feature must be one of {features.FEATURES}, got {feature!r}')
  if average not in features.AVERAGES:
    raise ValueError(f'config.data.average must be one of {features.AVERAGES}, got {average!r}')
  files = scan_folder(folder, require_positions)
  key = _cache_key(files, feature, average)
  target = os.path.join(cache_dir, f'{os.path.basename(os.path.normpath(folder))}-{key}')
  if os.path.exists(os.path.join(target, 'meta.json')):
    logging.info('Reusing feature cache %s', target)
    return _open_cache(target)

  os.makedirs(cache_dir, exist_ok=True)
  tmp = tempfile.mkdtemp(prefix='.building-', dir=cache_dir)
  try:
    _write_cache(files, tmp, feature, average, chunk_size, folder, key)
    if os.path.exists(target):  # A stale, incomplete cache from a crash.
      shutil.rmtree(target)
    os.replace(tmp, target)
  except BaseException:
    shutil.rmtree(tmp, ignore_errors=True)
    raise
  return _open_cache(target)


# Source bytes (H_Re + H_Im, as float32) read per HDF5 slice: small enough that a slice
# the reader thread has just read is still in the CPU's cache when it is averaged (whole
# 256-sample chunks would go out to memory and back, which is markedly slower end to
# end), large enough that per-slice overheads stay small.
_SLICE_BYTES = 8 << 20


def _read_slices(files: list[SourceFile], chunk_size: int, read_positions: bool):
  """Yields ``(file, start, h_re, h_im, positions)`` slice by slice over ``files``.

  Slices hold at most ``chunk_size`` samples and never straddle a multiple of
  ``chunk_size`` within a file. A reader thread reads the next slice while the caller
  works on this one (HDF5 reads and numpy's loops release the GIL, so disk and CPU work
  overlap). Slices are read with ``read_direct`` into two buffer sets allocated once, so
  a yielded slice's arrays are overwritten once the caller asks for the following one.
  ``positions`` is the file's ``Pos`` with its last slice (if ``read_positions``), else
  None. Close the generator (``contextlib.closing``) so that the thread is stopped and
  the file closed on errors too.
  """
  a, s, m = files[0].num_antennas, files[0].num_subcarriers, files[0].num_measurements
  step = max(1, min(chunk_size, _SLICE_BYTES // (2 * a * s * m * 4)))
  tasks = []
  for sf in files:
    for chunk_start in range(0, sf.num_samples, chunk_size):
      chunk_stop = min(chunk_start + chunk_size, sf.num_samples)
      tasks += [(sf, lo, min(lo + step, chunk_stop)) for lo in range(chunk_start, chunk_stop, step)]
  rows = max(stop - start for _, start, stop in tasks)
  # Per set, one buffer per (dataset, dtype): files of a set may be float32 or float64.
  buffers: list[dict] = [{}, {}]
  opened: dict = {}  # The reader's open file; touched by the reader thread only.

  def read(t: int):
    sf, start, stop = tasks[t]
    if opened.get('path') != sf.path:
      if 'file' in opened:
        opened.pop('file').close()
      opened['file'] = h5py.File(sf.path, 'r')
      opened['path'] = sf.path
    f = opened['file']
    parts = []
    for name in ('H_Re', 'H_Im'):
      ds = f[name]
      buf = buffers[t % 2].get((name, ds.dtype))
      if buf is None:
        buf = buffers[t % 2][(name, ds.dtype)] = np.empty((rows, a, s, m), ds.dtype)
      ds.read_direct(buf[: stop - start], np.s_[start:stop])
      parts.append(buf[: stop - start])
    pos = f['Pos'][:] if read_positions and stop == sf.num_samples else None
    return sf, start, parts[0], parts[1], pos

  executor = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix='ctw-reader')
  try:
    pending = executor.submit(read, 0)
    for t in range(len(tasks)):
      piece = pending.result()
      if t + 1 < len(tasks):
        # Slice t - 1's buffer set is free again: the caller asked for slice t.
        pending = executor.submit(read, t + 1)
      yield piece
  finally:
    # A read in flight still fills a buffer and uses the file: wait for it to end.
    executor.shutdown(wait=True, cancel_futures=True)
    if 'file' in opened:
      opened.pop('file').close()


def _check_rest_of_chunk(sf: SourceFile, start: int, chunk_size: int) -> None:
  """Raises for the first non-finite H_Re value, else H_Im value, from ``start`` on to
  the end of its ``chunk_size`` chunk: the value a check of whole chunks, H_Re first,
  names (the chunk's earlier slices were finite), whatever the slice size.
  """
  stop = min(start - start % chunk_size + chunk_size, sf.num_samples)
  with h5py.File(sf.path, 'r') as f:
    for key in ('H_Re', 'H_Im'):
      _check_finite(f[key][start:stop], sf.path, key, start)


def _write_cache(
  files: list[SourceFile],
  out: str,
  feature: str,
  average: str,
  chunk_size: int,
  folder: str,
  key: str,
) -> None:
  total = sum(sf.num_samples for sf in files)
  a, s = files[0].num_antennas, files[0].num_subcarriers
  shape = (total, *features.feature_shape(feature, a, s))
  has_pos = all(sf.has_positions for sf in files)
  positions = np.zeros((total, 3), np.float64) if has_pos else None
  logging.info(
    'Preprocessing %d samples from %d files in %s (feature=%s, average=%s)',
    total,
    len(files),
    folder,
    feature,
    average,
  )
  t0 = time.perf_counter()
  # Counts samples done and source bytes read (meta's ``source_bytes``).
  progress = metric_writer.Progress(total, unit='samples')
  # Features are appended after the .npy header with plain writes: the dirty pages of a
  # writable memmap count as the process's resident memory, which would then grow with
  # the dataset.
  with (
    open(os.path.join(out, 'features.npy'), 'wb') as fh,
    contextlib.closing(_read_slices(files, chunk_size, has_pos)) as slices,
  ):
    np.lib.format.write_array_header_1_0(
      fh,
      {
        'descr': np.lib.format.dtype_to_descr(np.dtype(np.float32)),
        'fortran_order': False,
        'shape': shape,
      },
    )
    for sf, start, h_re, h_im, pos in slices:
      with np.errstate(invalid='ignore'):  # inf - inf: such inputs are reported below.
        h_avg = features.average_measurements(h_re, h_im, average)
      # Any non-finite input makes its average non-finite, so the element-wise check,
      # which names the first offending value, only has to run then.
      if not np.isfinite(h_avg).all():
        _check_rest_of_chunk(sf, start, chunk_size)
      fh.write(np.ascontiguousarray(features.extract_features(h_avg, feature)).data)
      progress.update(len(h_re), nbytes=h_re.nbytes + h_im.nbytes)
      if pos is not None:
        _check_finite(pos, sf.path, 'Pos', 0)
        positions[progress.step - sf.num_samples : progress.step] = pos
      if start + len(h_re) == sf.num_samples:
        logging.info('  %s: %s', os.path.basename(sf.path), progress.line())
  if has_pos:
    np.save(os.path.join(out, 'positions.npy'), positions)
  meta = {
    'source': os.path.abspath(folder),
    'key': key,
    'feature': feature,
    'average': average,
    'num_samples': total,
    'feature_shape': list(shape[1:]),
    'num_measurements': files[0].num_measurements,
    'files': [os.path.basename(sf.path) for sf in files],
    'source_bytes': progress.nbytes,
    'seconds': time.perf_counter() - t0,
  }
  # meta.json last: its presence marks a complete cache.
  runs.write_json(os.path.join(out, 'meta.json'), meta)


def _open_cache(path: str) -> CTWArrays:
  meta = runs.read_json(os.path.join(path, 'meta.json'))
  feature_map = np.load(os.path.join(path, 'features.npy'), mmap_mode='r')
  pos_path = os.path.join(path, 'positions.npy')
  positions = np.load(pos_path) if os.path.exists(pos_path) else None
  return CTWArrays(features=feature_map, positions=positions, source=meta['source'], meta=meta)


# --------------------------------------------------------------------------------------
# Entry point used by training.


def load_ctw(
  data_config: ml_collections.ConfigDict, root: str, need_unlabelled: bool
) -> dict[str, CTWArrays | None]:
  """Validates and preprocesses the labelled (and, if needed, unlabelled) sets."""
  cache_dir = data_config.cache_dir or os.path.join(root, '.csiloc_cache')
  kwargs = dict(
    feature=data_config.feature, average=data_config.average, chunk_size=data_config.chunk_size
  )
  labelled = build_cache(
    os.path.join(root, LABELLED_DIR), cache_dir, require_positions=True, **kwargs
  )
  unlabelled = None
  if need_unlabelled:
    unlabelled = build_cache(
      os.path.join(root, UNLABELLED_DIR), cache_dir, require_positions=False, **kwargs
    )
    if unlabelled.feature_shape != labelled.feature_shape:
      raise CTWFormatError(
        f'{os.path.join(root, UNLABELLED_DIR)}: H_Re has (antenna, subcarrier) shape '
        f'{unlabelled.feature_shape[:2]} but the labelled set has '
        f'{labelled.feature_shape[:2]}; both sets must match'
      )
  return {'labelled': labelled, 'unlabelled': unlabelled}
