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
what was expected. Every HDF5 access goes through :class:`csiloc_jax.core.h5io.H5File`:
a probe process walks each file's metadata first (a damaged file that would make libhdf5
hang or crash is refused), any h5py error becomes a ``CTWFormatError``, and datasets
written with a Fletcher-32 checksum are verified on read.

Plausibility (docs/schemas.md, 'Robustness'): CSI magnitudes and positions beyond any
physical range are refused; samples with exact zeros where a failed estimate cannot put
them (one part of a complex value zero, the other not; a position at the base station)
are counted, logged as a warning and recorded in the cache's ``meta.json``
(``validation``), from where a run copies them to its ``metrics.json``.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import dataclasses
import os
import re
import shutil
import socket
import tempfile
import time

from absl import logging
import ml_collections
import numpy as np

from csiloc_jax.core import errors
from csiloc_jax.core import h5io
from csiloc_jax.core import metric_writer
from csiloc_jax.core import runs
from csiloc_jax.csi import features

LABELLED_DIR = 'CTW2020_labelled_data'
UNLABELLED_DIR = 'CTW2020_unlabelled_data'
FILE_PATTERN = re.compile(r'^file_(\d+)\.hdf5$')
# Bump when the cached representation changes so old caches are not reused.
# 2: meta.json records the plausibility checks ('validation').
CACHE_VERSION = 2
# |H_Re|, |H_Im| at or above this are no channel estimate in any unit (and would
# overflow float32 once squared by a normalisation): a damaged value, refused.
MAX_CSI_MAGNITUDE = 1e15
# Positions beyond this distance from the base station (metres, any axis) are no
# position in its cell: a damaged value, refused.
MAX_POSITION_M = 1e5
# A sample with at least this many entries where exactly one of H_Re and H_Im is an
# exact zero is suspect: a failed estimate is zero in both parts, while a zeroed block
# of the file hits one dataset only.
SUSPECT_HALF_ZEROS = 16


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
  # Both CSI datasets carry a Fletcher-32 checksum (verified on every read).
  checksummed: bool = False


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
  """The layout of one file from its metadata (no CSI is read)."""
  with h5io.H5File(path, CTWFormatError) as f:
    for key in ('H_Re', 'H_Im'):
      if key not in f:
        raise CTWFormatError(f'{path}: missing dataset {key!r} (found {f.keys()})')
      if f.kind(key) != 'dataset':
        raise CTWFormatError(f'{path}: {key!r} is not a dataset ({f.kind(key)}), expected one')
    csi = 'a float dataset (sample, antenna, subcarrier, measurement)'
    re_info, im_info = f.info('H_Re', csi), f.info('H_Im', csi)
    re_shape, im_shape = re_info.shape, im_info.shape
    if re_info.ndim != 4:
      raise CTWFormatError(
        f'{path}: dataset H_Re has shape {re_shape}, expected rank 4 '
        '(sample, antenna, subcarrier, measurement)'
      )
    if im_shape != re_shape:
      raise CTWFormatError(
        f'{path}: dataset H_Im has shape {im_shape}, expected the same shape as H_Re {re_shape}'
      )
    for info in (re_info, im_info):
      if info.dtype.kind != 'f':
        raise CTWFormatError(
          f'{path}: dataset {info.name!r} has dtype {info.dtype}, expected float32 or float64'
        )
    n, a, s, m = re_shape
    if min(re_shape) == 0:
      raise CTWFormatError(f'{path}: dataset H_Re has an empty axis: shape {re_shape}')
    if 'SNR' in f:
      snr = f.info('SNR', f'a dataset of shape {(n, a, m)}') if f.kind('SNR') == 'dataset' else None
      if snr is None or snr.shape != (n, a, m):
        raise CTWFormatError(
          f'{path}: dataset SNR has shape {snr.shape if snr else None}, expected '
          f'{(n, a, m)} (sample, antenna, measurement)'
        )
    has_pos = 'Pos' in f
    if require_positions and not has_pos:
      raise CTWFormatError(
        f"{path}: labelled file has no dataset 'Pos' (expected positions of shape ({n}, 3))"
      )
    if has_pos:
      pos = f.info('Pos', f'positions of shape ({n}, 3)') if f.kind('Pos') == 'dataset' else None
      if pos is None or pos.shape != (n, 3):
        raise CTWFormatError(
          f'{path}: dataset Pos has shape {pos.shape if pos else None}, expected ({n}, 3) = '
          '(sample, [x, y, z])'
        )
      if pos.dtype.kind not in 'fiu':
        raise CTWFormatError(f'{path}: dataset Pos has dtype {pos.dtype}, expected numbers')
    checksummed = re_info.checksummed and im_info.checksummed
  return SourceFile(path, n, a, s, m, has_pos, checksummed)


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


def _check_magnitude(h_re: np.ndarray, h_im: np.ndarray, path: str, start: int) -> None:
  """Refuses CSI values at or beyond :data:`MAX_CSI_MAGNITUDE`, naming the first and
  the number of samples of this slice that hold one."""
  for key, block in (('H_Re', h_re), ('H_Im', h_im)):
    bad = np.abs(block) >= MAX_CSI_MAGNITUDE
    if bad.any():
      index = np.argwhere(bad)[0]
      samples = int(np.any(bad.reshape(len(block), -1), axis=1).sum())
      raise CTWFormatError(
        f'{path}: dataset {key!r} holds {block[tuple(index)]:.3g} at index '
        f'{(start + int(index[0]),) + tuple(int(i) for i in index[1:])} ({samples} sample(s) '
        f'of samples {start}..{start + len(block) - 1} affected); expected channel '
        f'estimates below {MAX_CSI_MAGNITUDE:.0e} in magnitude (the values are damaged)'
      )


def _half_zero_samples(h_re: np.ndarray, h_im: np.ndarray) -> np.ndarray:
  """Per sample: whether :data:`SUSPECT_HALF_ZEROS` or more entries have exactly one
  part zero (a failed estimate is zero in both)."""
  half = (h_re == 0) != (h_im == 0)
  return np.count_nonzero(half.reshape(len(h_re), -1), axis=1) >= SUSPECT_HALF_ZEROS


def _check_positions(pos: np.ndarray, path: str) -> np.ndarray:
  """Refuses non-finite or out-of-range positions; returns, per sample, whether the
  position is suspect (two or more coordinates exactly 0.0, where a zeroed block puts
  them: at the base station's foot or on its axes)."""
  _check_finite(pos, path, 'Pos', 0)
  far = np.any(np.abs(pos) > MAX_POSITION_M, axis=1)
  if far.any():
    first = int(np.argmax(far))
    raise CTWFormatError(
      f'{path}: dataset Pos has {int(far.sum())} position(s) beyond {MAX_POSITION_M:.0e} m '
      f'of the base station (first: sample {first}, {pos[first].tolist()}); expected '
      'metres within a cell (the values are damaged)'
    )
  return np.sum(pos == 0, axis=1) >= 2


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
  if os.path.isdir(cache_dir):
    _remove_abandoned_builds(cache_dir)
  if os.path.exists(os.path.join(target, 'meta.json')):
    logging.info('Reusing feature cache %s', target)
    return _open_cache(target)

  os.makedirs(cache_dir, exist_ok=True)
  tmp = tempfile.mkdtemp(prefix=f'{_building_prefix()}{os.getpid()}-', dir=cache_dir)
  try:
    _write_cache(files, tmp, feature, average, chunk_size, folder, key)
    if os.path.exists(target):  # A stale, incomplete cache from a crash.
      shutil.rmtree(target)
    os.replace(tmp, target)
  except BaseException:
    shutil.rmtree(tmp, ignore_errors=True)
    raise
  return _open_cache(target)


def _building_prefix() -> str:
  """Temporary build folders are named ``.building-<host>-<pid>-*``: a build whose
  process is gone (killed) is recognisable, on this host, by its pid."""
  return f'.building-{socket.gethostname().replace("-", "_")}-'


def _remove_abandoned_builds(cache_dir: str) -> None:
  """Deletes temporary build folders of processes of this host that no longer run (a
  killed build leaves one, as large as the cache it was writing)."""
  prefix = _building_prefix()
  for name in os.listdir(cache_dir):
    if not name.startswith(prefix):
      continue
    pid = name[len(prefix) :].split('-', 1)[0]
    if not pid.isdigit() or int(pid) == os.getpid():
      continue
    try:
      os.kill(int(pid), 0)
    except ProcessLookupError:
      logging.info('Removing the abandoned cache build %s', os.path.join(cache_dir, name))
      shutil.rmtree(os.path.join(cache_dir, name), ignore_errors=True)
    except OSError:
      pass  # Alive (or not ours to signal): left alone.


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
  csi = 'readable float CSI (sample, antenna, subcarrier, measurement)'

  def read(t: int):
    sf, start, stop = tasks[t]
    if opened.get('path') != sf.path:
      if 'file' in opened:
        opened.pop('file').close()
      opened['file'] = h5io.H5File(sf.path, CTWFormatError)
      opened['path'] = sf.path
    f = opened['file']
    parts = []
    for name in ('H_Re', 'H_Im'):
      dtype = f.info(name, csi).dtype
      buf = buffers[t % 2].get((name, dtype))
      if buf is None:
        buf = buffers[t % 2][(name, dtype)] = np.empty((rows, a, s, m), dtype)
      f.read_direct(name, buf[: stop - start], np.s_[start:stop], csi)
      parts.append(buf[: stop - start])
    pos = None
    if read_positions and stop == sf.num_samples:
      pos = f.read('Pos', 'readable positions (sample, [x, y, z])')
      with np.errstate(invalid='ignore', over='ignore'):  # Reported by _check_positions.
        pos = pos.astype(np.float64)
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
  with h5io.H5File(sf.path, CTWFormatError) as f:
    for key in ('H_Re', 'H_Im'):
      block = f.read(key, 'readable float CSI', selection=np.s_[start:stop])
      _check_finite(block, sf.path, key, start)


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
  # Per file: samples with half-zero CSI, with suspect positions.
  suspect = {os.path.basename(sf.path): [0, 0] for sf in files}
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
      with np.errstate(invalid='ignore', over='ignore'):  # Such inputs are reported below.
        h_avg = features.average_measurements(h_re, h_im, average)
      # Any non-finite or out-of-range input makes its average's peak so (an average of
      # values under the limit stays under it; NaN propagates through the max), so the
      # element-wise checks, which name the first offending value, only run then.
      peak = np.max(np.abs(h_avg.view(np.float32))) if h_avg.size else 0.0
      if not peak < MAX_CSI_MAGNITUDE:
        _check_rest_of_chunk(sf, start, chunk_size)
        _check_magnitude(h_re, h_im, sf.path, start)
      name = os.path.basename(sf.path)
      suspect[name][0] += int(_half_zero_samples(h_re, h_im).sum())
      fh.write(np.ascontiguousarray(features.extract_features(h_avg, feature)).data)
      progress.update(len(h_re), nbytes=h_re.nbytes + h_im.nbytes)
      if pos is not None:
        suspect[name][1] += int(_check_positions(pos, sf.path).sum())
        positions[progress.step - sf.num_samples : progress.step] = pos
      if start + len(h_re) == sf.num_samples:
        logging.info('  %s: %s', os.path.basename(sf.path), progress.line())
  if has_pos:
    np.save(os.path.join(out, 'positions.npy'), positions)
  validation = _validation_summary(files, suspect, folder)
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
    'validation': validation,
  }
  # meta.json last: its presence marks a complete cache.
  runs.write_json(os.path.join(out, 'meta.json'), meta)


def _validation_summary(files: list[SourceFile], suspect: dict, folder: str) -> dict:
  """meta.json's ``validation``: suspect sample counts (logged as a warning) and how
  many files carry checksums."""
  half_zero = sum(v[0] for v in suspect.values())
  zero_pos = sum(v[1] for v in suspect.values())
  out = {
    'num_samples': sum(sf.num_samples for sf in files),
    'suspect_samples': half_zero + zero_pos,
    'half_zero_csi_samples': half_zero,
    'zero_position_samples': zero_pos,
    'suspect_by_file': {k: sum(v) for k, v in suspect.items() if sum(v)},
    'checksummed_files': sum(sf.checksummed for sf in files),
    'num_files': len(files),
  }
  if out['suspect_samples']:
    logging.warning(
      '%s: %d suspect sample(s) of %d (CSI with one part of a value exactly zero: %d; '
      'position with two or more coordinates exactly zero: %d), as damaged (zeroed) '
      'blocks of a file leave them; used as read. Per file: %s',
      folder,
      out['suspect_samples'],
      out['num_samples'],
      half_zero,
      zero_pos,
      out['suspect_by_file'],
    )
  return out


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
