"""Streaming reader for the IEEE CTW-2020 HDF5 layout, with an on-disk feature cache.

Data flow: ``CTW2020_{labelled,unlabelled}_data/file_<k>.hdf5`` (raw CSI, ~2 MB a sample)
→ :func:`scan_folder` validates every file's layout without reading the CSI →
:func:`build_cache` reads chunk by chunk, averages over the measurement axis, extracts
the feature map and writes it to a ``.npy`` memmap under the cache directory →
:class:`CTWArrays` exposes ``features`` ``[N, antennas, subcarriers, channels]`` (a
read-only memmap) and ``positions`` ``[N, 3]`` → :mod:`csiloc_jax.input_pipeline` cuts
splits and batches.

Nothing here ever holds a whole dataset in memory: the real unlabelled set is ~37 GB of
float32. The cache is keyed on the source files (names, sizes, modification times) and
on every preprocessing option, so changing either rebuilds it; it is written to a
temporary folder and renamed into place, so an interrupted build is never reused.

Every layout problem raises :class:`CTWFormatError` naming the file, the dataset and
what was expected.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
import shutil
import tempfile
import time

from absl import logging
import h5py
import ml_collections
import numpy as np

LABELLED_DIR = 'CTW2020_labelled_data'
UNLABELLED_DIR = 'CTW2020_unlabelled_data'
FILE_PATTERN = re.compile(r'^file_(\d+)\.hdf5$')
FEATURES = ('real', 'real_imag', 'magnitude')
AVERAGES = ('mean', 'valid_mean')
# Bump when the cached representation changes so old caches are not reused.
CACHE_VERSION = 1


class CTWFormatError(ValueError):
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

def _list_files(folder: str) -> list[str]:
  if not os.path.isdir(folder):
    raise CTWFormatError(f'{folder}: folder does not exist (expected a CTW-2020 folder '
                         f'holding file_<k>.hdf5 files)')
  names = [n for n in os.listdir(folder) if FILE_PATTERN.match(n)]
  if not names:
    raise CTWFormatError(f'{folder}: no file_<k>.hdf5 files found')
  names.sort(key=lambda n: int(FILE_PATTERN.match(n).group(1)))
  return [os.path.join(folder, n) for n in names]


def _check_file(path: str, require_positions: bool) -> SourceFile:
  try:
    f = h5py.File(path, 'r')
  except OSError as e:
    raise CTWFormatError(f'{path}: not a readable HDF5 file (truncated, corrupt or another '
                         f'format): {e}') from e
  with f:
    for key in ('H_Re', 'H_Im'):
      if key not in f:
        raise CTWFormatError(f'{path}: missing dataset {key!r} (found {sorted(f.keys())})')
      if not isinstance(f[key], h5py.Dataset):
        raise CTWFormatError(f'{path}: {key!r} is a group, expected a dataset')
    re_shape, im_shape = f['H_Re'].shape, f['H_Im'].shape
    if len(re_shape) != 4:
      raise CTWFormatError(f'{path}: dataset H_Re has shape {re_shape}, expected rank 4 '
                           '(sample, antenna, subcarrier, measurement)')
    if im_shape != re_shape:
      raise CTWFormatError(f'{path}: dataset H_Im has shape {im_shape}, expected the same '
                           f'shape as H_Re {re_shape}')
    for key in ('H_Re', 'H_Im'):
      if f[key].dtype.kind != 'f':
        raise CTWFormatError(f'{path}: dataset {key!r} has dtype {f[key].dtype}, expected '
                             'float32 or float64')
    n, a, s, m = re_shape
    if min(re_shape) == 0:
      raise CTWFormatError(f'{path}: dataset H_Re has an empty axis: shape {re_shape}')
    if 'SNR' in f and f['SNR'].shape != (n, a, m):
      raise CTWFormatError(f'{path}: dataset SNR has shape {f["SNR"].shape}, expected '
                           f'{(n, a, m)} (sample, antenna, measurement)')
    has_pos = 'Pos' in f
    if require_positions and not has_pos:
      raise CTWFormatError(f'{path}: labelled file has no dataset \'Pos\' (expected '
                           f'positions of shape ({n}, 3))')
    if has_pos and f['Pos'].shape != (n, 3):
      raise CTWFormatError(f'{path}: dataset Pos has shape {f["Pos"].shape}, expected '
                           f'({n}, 3) = (sample, [x, y, z])')
  return SourceFile(path, n, a, s, m, has_pos)


def scan_folder(folder: str, require_positions: bool) -> list[SourceFile]:
  """Validates every ``file_<k>.hdf5`` in ``folder`` (layout only; values come later)."""
  files = [_check_file(p, require_positions) for p in _list_files(folder)]
  first = files[0]
  for sf in files[1:]:
    for field in ('num_antennas', 'num_subcarriers', 'num_measurements'):
      if getattr(sf, field) != getattr(first, field):
        raise CTWFormatError(
            f'{sf.path}: dataset H_Re has {field.replace("num_", "")} = '
            f'{getattr(sf, field)}, but {first.path} has {getattr(first, field)}; all '
            'files of a set must share antenna, subcarrier and measurement counts')
  return files


# --------------------------------------------------------------------------------------
# Feature extraction (one chunk at a time).

def average_measurements(h_re: np.ndarray, h_im: np.ndarray, average: str) -> np.ndarray:
  """Complex CSI averaged over the last (measurement) axis → ``[n, a, s]`` complex64.

  ``mean`` is the paper's plain average. ``valid_mean`` skips failed estimates (stored as
  exact zeros in both parts) and leaves 0 where every measurement failed.
  """
  h = h_re.astype(np.float32) + 1j * h_im.astype(np.float32)
  if average == 'mean':
    return h.mean(axis=-1).astype(np.complex64)
  if average == 'valid_mean':
    valid = (h_re != 0) | (h_im != 0)
    count = valid.sum(axis=-1)
    return (h.sum(axis=-1) / np.maximum(count, 1)).astype(np.complex64)
  raise ValueError(f'config.data.average must be one of {AVERAGES}, got {average!r}')


def extract_features(h_avg: np.ndarray, feature: str) -> np.ndarray:
  """Averaged complex CSI ``[n, a, s]`` → float32 feature map ``[n, a, s, channels]``."""
  if feature == 'real':
    out = h_avg.real[..., None]
  elif feature == 'real_imag':
    out = np.stack([h_avg.real, h_avg.imag], axis=-1)
  elif feature == 'magnitude':
    out = np.abs(h_avg)[..., None]
  else:
    raise ValueError(f'config.data.feature must be one of {FEATURES}, got {feature!r}')
  return out.astype(np.float32)


def num_channels(feature: str) -> int:
  return 2 if feature == 'real_imag' else 1


def _check_finite(block: np.ndarray, path: str, key: str, start: int) -> None:
  bad = ~np.isfinite(block)
  if bad.any():
    index = np.argwhere(bad)[0]
    raise CTWFormatError(
        f'{path}: dataset {key!r} holds a non-finite value ({block[tuple(index)]}) at '
        f'index {(start + int(index[0]),) + tuple(int(i) for i in index[1:])}; expected '
        'finite numbers (failed estimates are stored as exact zeros)')


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
  entries = []
  for sf in files:
    st = os.stat(sf.path)
    entries.append([os.path.basename(sf.path), st.st_size, st.st_mtime_ns])
  blob = json.dumps({'files': entries, 'feature': feature, 'average': average,
                     'version': CACHE_VERSION}, sort_keys=True)
  return hashlib.sha1(blob.encode()).hexdigest()[:16]


def build_cache(folder: str, cache_dir: str, *, feature: str = 'real',
                average: str = 'mean', require_positions: bool = False,
                chunk_size: int = 256) -> CTWArrays:
  """Preprocesses ``folder`` into ``cache_dir`` (or reuses a matching cache)."""
  if feature not in FEATURES:
    raise ValueError(f'config.data.feature must be one of {FEATURES}, got {feature!r}')
  if average not in AVERAGES:
    raise ValueError(f'config.data.average must be one of {AVERAGES}, got {average!r}')
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


def _write_cache(files: list[SourceFile], out: str, feature: str, average: str,
                 chunk_size: int, folder: str, key: str) -> None:
  total = sum(sf.num_samples for sf in files)
  a, s = files[0].num_antennas, files[0].num_subcarriers
  shape = (total, a, s, num_channels(feature))
  features = np.lib.format.open_memmap(os.path.join(out, 'features.npy'), mode='w+',
                                       dtype=np.float32, shape=shape)
  has_pos = all(sf.has_positions for sf in files)
  positions = np.zeros((total, 3), np.float64) if has_pos else None
  logging.info('Preprocessing %d samples from %d files in %s (feature=%s, average=%s)',
               total, len(files), folder, feature, average)
  t0, done, source_bytes = time.perf_counter(), 0, 0
  for sf in files:
    with h5py.File(sf.path, 'r') as f:
      for start in range(0, sf.num_samples, chunk_size):
        stop = min(start + chunk_size, sf.num_samples)
        h_re = f['H_Re'][start:stop]
        h_im = f['H_Im'][start:stop]
        _check_finite(h_re, sf.path, 'H_Re', start)
        _check_finite(h_im, sf.path, 'H_Im', start)
        features[done:done + stop - start] = extract_features(
            average_measurements(h_re, h_im, average), feature)
        source_bytes += h_re.nbytes + h_im.nbytes
        done += stop - start
      if has_pos:
        pos = f['Pos'][:]
        _check_finite(pos, sf.path, 'Pos', 0)
        positions[done - sf.num_samples:done] = pos
    elapsed = time.perf_counter() - t0
    logging.info('  %s: %d/%d samples, %.1f MB/s, ETA %.0f s', os.path.basename(sf.path),
                 done, total, source_bytes / 1e6 / max(elapsed, 1e-9),
                 elapsed / done * (total - done))
  features.flush()
  del features
  if has_pos:
    np.save(os.path.join(out, 'positions.npy'), positions)
  meta = {'source': os.path.abspath(folder), 'key': key, 'feature': feature,
          'average': average, 'num_samples': total, 'feature_shape': list(shape[1:]),
          'num_measurements': files[0].num_measurements,
          'files': [os.path.basename(sf.path) for sf in files],
          'source_bytes': source_bytes, 'seconds': time.perf_counter() - t0}
  # meta.json last: its presence marks a complete cache.
  with open(os.path.join(out, 'meta.json'), 'w') as fh:
    json.dump(meta, fh, indent=2)


def _open_cache(path: str) -> CTWArrays:
  with open(os.path.join(path, 'meta.json')) as fh:
    meta = json.load(fh)
  features = np.load(os.path.join(path, 'features.npy'), mmap_mode='r')
  pos_path = os.path.join(path, 'positions.npy')
  positions = np.load(pos_path) if os.path.exists(pos_path) else None
  return CTWArrays(features=features, positions=positions, source=meta['source'], meta=meta)


# --------------------------------------------------------------------------------------
# Entry point used by training.

def load_ctw(data_config: ml_collections.ConfigDict, root: str,
             need_unlabelled: bool) -> dict[str, CTWArrays | None]:
  """Validates and preprocesses the labelled (and, if needed, unlabelled) sets."""
  cache_dir = data_config.cache_dir or os.path.join(root, '.csiloc_cache')
  kwargs = dict(feature=data_config.feature, average=data_config.average,
                chunk_size=data_config.chunk_size)
  labelled = build_cache(os.path.join(root, LABELLED_DIR), cache_dir,
                         require_positions=True, **kwargs)
  unlabelled = None
  if need_unlabelled:
    unlabelled = build_cache(os.path.join(root, UNLABELLED_DIR), cache_dir,
                             require_positions=False, **kwargs)
    if unlabelled.feature_shape != labelled.feature_shape:
      raise CTWFormatError(
          f'{os.path.join(root, UNLABELLED_DIR)}: H_Re has (antenna, subcarrier) shape '
          f'{unlabelled.feature_shape[:2]} but the labelled set has '
          f'{labelled.feature_shape[:2]}; both sets must match')
  return {'labelled': labelled, 'unlabelled': unlabelled}
