"""Streams the simulator's samples into the CTW-2020 folder and file layout.

The last module of the simulator: :func:`generate_ctw_dataset` realises the
:class:`~.environment.ChannelModel` for a seed and writes both sets, file by file and
chunk by chunk, in the layout :mod:`csiloc_jax.csi.reader` reads (folder, file and
dataset names, axis order, float32 or float64; see docs/schemas.md, 'CTW-2020
layout'). Each sample comes from :func:`.measurement.generate_pieces`, so the files
do not depend on the chunk or file size.
"""

from __future__ import annotations

import concurrent.futures
import glob
import math
import os
import time
from typing import Any, Iterator, Protocol

from absl import logging
import h5py
import numpy as np

from csiloc_jax.core import metric_writer
from csiloc_jax.core import runs
from csiloc_jax.csi import reader
from csiloc_jax.csi.simulator import environment
from csiloc_jax.csi.simulator import measurement
from csiloc_jax.csi.simulator.config import LABELLED_SET
from csiloc_jax.csi.simulator.config import UNLABELLED_SET
from csiloc_jax.csi.simulator.config import ChannelModelConfig

# Root attribute marking files written here, so a rerun may replace its own files but
# never silently overwrite (or mix with) real CTW data in the same folder.
GENERATOR_TAG = 'csiloc_jax.csi.simulator'
PARTIAL_SUFFIX = '.partial'
# A finished set is recorded as ``out_dir/generated.done.json`` (a core Stage record,
# written last): a folder with this generator's files but no record is an interrupted
# generation, never a data set.
DONE_STAGE = 'generated'


def _written_here(path: str) -> bool:
  try:
    with h5py.File(path, 'r') as f:
      return f.attrs.get('generator') == GENERATOR_TAG
  except OSError:
    return False


def is_interrupted(out_dir: str) -> bool:
  """True if ``out_dir`` holds this generator's files but no record of a finished set."""
  if os.path.exists(os.path.join(out_dir, f'{DONE_STAGE}.done.json')):
    return False
  for folder in (reader.LABELLED_DIR, reader.UNLABELLED_DIR):
    for path in glob.glob(os.path.join(out_dir, folder, 'file_*.hdf5*')):
      if path.endswith(PARTIAL_SUFFIX) or _written_here(path):
        return True
  return False


def _prepare_folder(folder: str) -> None:
  """Creates ``folder``; removes this generator's old files, refuses anyone else's."""
  os.makedirs(folder, exist_ok=True)
  for path in sorted(glob.glob(os.path.join(folder, 'file_*.hdf5*'))):
    name = os.path.basename(path)
    if name.endswith(PARTIAL_SUFFIX):
      os.remove(path)  # leftover of an interrupted run of ours
      continue
    if not reader.FILE_PATTERN.match(name):
      continue
    if not _written_here(path):
      raise FileExistsError(
        f'{path} exists and was not written by {GENERATOR_TAG}; refusing to overwrite '
        'or mix with it. Choose an empty out_dir.'
      )
    # Stale files of an earlier, larger run would otherwise be read as part of this set.
    os.remove(path)


class SampleSource(Protocol):
  """What the writer streams from: the built-in channel model or a ray tracer.

  ``pieces(set_id, start, stop, num_measurements, executor, workers)`` yields
  ``(offset, H_Re, H_Im, SNR, Pos)`` for samples start..stop of a set, in order;
  ``attrs`` are written as root attributes of every file.
  """

  num_antennas: int
  num_subcarriers: int
  attrs: dict

  def pieces(
    self,
    set_id: int,
    start: int,
    stop: int,
    num_measurements: int,
    executor: concurrent.futures.Executor,
    workers: int,
  ) -> Iterator[tuple[int, np.ndarray, np.ndarray, np.ndarray, np.ndarray]]: ...


class _BuiltinSource:
  """The built-in channel model as a :class:`SampleSource`."""

  def __init__(self, model: environment.ChannelModel):
    self.model = model
    self.num_antennas = model.num_antennas
    self.num_subcarriers = model.num_subcarriers
    self.attrs = {'seed': model.seed, 'source': 'builtin'}

  def pieces(self, set_id, start, stop, num_measurements, executor, workers):
    return measurement.generate_pieces(
      self.model, set_id, start, stop, num_measurements, executor, workers
    )


class _Statistics:
  """What the summary reports about the written values: exact zeros, position range."""

  def __init__(self):
    self.zeros = self.entries = 0
    self.pos_min, self.pos_max = np.full(3, np.inf), np.full(3, -np.inf)

  def add(self, re: np.ndarray, pos: np.ndarray) -> None:
    self.zeros += int(np.count_nonzero(re == 0))
    self.entries += re.size
    self.pos_min = np.minimum(self.pos_min, pos.min(0))
    self.pos_max = np.maximum(self.pos_max, pos.max(0))


def _write_file(
  path: str,
  source: SampleSource,
  set_id: int,
  first: int,
  count: int,
  num_measurements: int,
  dtype: np.dtype,
  chunk_size: int,
  executor: concurrent.futures.Executor,
  workers: int,
  statistics: _Statistics,
  progress: metric_writer.Progress | None,
) -> None:
  """Writes samples first..first+count of a set to ``path`` via a ``.partial`` file."""
  a, s, m = source.num_antennas, source.num_subcarriers, num_measurements
  bytes_per_sample = 2 * a * s * m * dtype.itemsize
  partial = path + PARTIAL_SUFFIX
  try:
    with h5py.File(partial, 'w') as f:
      f.attrs['generator'] = GENERATOR_TAG
      for key, value in source.attrs.items():
        f.attrs[key] = value
      f.attrs['first_index'] = first
      # Contiguous (unchunked, uncompressed) datasets at their final shape: the fastest
      # to fill slab by slab and to read back by sample ranges.
      ds_re = f.create_dataset('H_Re', (count, a, s, m), dtype=dtype, track_times=False)
      ds_im = f.create_dataset('H_Im', (count, a, s, m), dtype=dtype, track_times=False)
      ds_snr = f.create_dataset('SNR', (count, a, m), dtype=dtype, track_times=False)
      ds_pos = (
        f.create_dataset('Pos', (count, 3), dtype=dtype, track_times=False)
        if set_id == LABELLED_SET
        else None
      )
      for lo in range(0, count, chunk_size):
        hi = min(lo + chunk_size, count)
        for offset, re, im, snr, pos in source.pieces(
          set_id, first + lo, first + hi, num_measurements, executor, workers
        ):
          p0, p1 = lo + offset, lo + offset + len(re)
          ds_re[p0:p1] = re
          ds_im[p0:p1] = im
          ds_snr[p0:p1] = snr
          if ds_pos is not None:
            ds_pos[p0:p1] = pos
          statistics.add(re, pos)
          if progress is not None:
            progress.update(len(re), nbytes=len(re) * bytes_per_sample)
            progress.log()
          del re, im
    os.replace(partial, path)  # atomic: a file_k.hdf5 that exists is complete
  except BaseException:
    if os.path.exists(partial):
      os.remove(partial)
    raise


def check_arguments(*, dtype: str, **integers: int) -> None:
  """The sizes, seed and dtype of a CTW-layout set, checked before any expensive setup
  (both sources call it: the built-in model here, the ray tracer in ``csi.raytrace``)."""
  if dtype not in ('float32', 'float64'):
    raise ValueError(f"dtype must be 'float32' or 'float64', got {dtype!r}")
  for name, value in integers.items():
    minimum = 0 if name in ('num_labelled', 'num_unlabelled', 'seed') else 1
    if isinstance(value, bool) or int(value) != value or value < minimum:
      raise ValueError(f'{name} must be an integer >= {minimum}, got {value!r}')


def generate_ctw_dataset(
  out_dir: str,
  *,
  num_labelled: int,
  num_unlabelled: int,
  num_antennas: int,
  num_subcarriers: int,
  num_measurements: int,
  seed: int,
  samples_per_file: int = 512,
  dtype: str = 'float32',
  chunk_size: int = 64,
  progress: bool = False,
  config: ChannelModelConfig | None = None,
) -> dict:
  """Writes a synthetic CTW-2020 dataset under ``out_dir`` and returns a summary.

  The set sizes, the shape and the seed have no defaults here: ``config.data.synthetic``
  of ``configs/ctw_base.py`` holds them.

  Streams: each file is created at its final shape and filled ``chunk_size`` samples
  at a time, so memory stays at about one chunk (~2 MB per sample at 56 x 924 x 5,
  plus working copies) and the full 36,192 + 4,979 set can be written. Each file is
  written under a ``.partial`` name and renamed when complete. The output is
  independent of ``chunk_size`` and ``samples_per_file``; values are computed in
  float32, so a float64 file holds exactly the float32 file's values. ``config``
  (optional, not part of the CTW layout) overrides the physics. ``progress`` logs
  samples/s, MB/s and an ETA.

  Returns a dict: ``labelled``/``unlabelled`` (folder, files, num_samples, bytes),
  ``shape`` (A, S, M), ``dtype``, ``bytes_written``, ``zero_fraction`` (exact-zero
  entries of H_Re), ``position_min``/``position_max`` (over both sets), ``seconds``,
  ``samples_per_second``, ``megabytes_per_second``.
  """
  check_arguments(
    num_labelled=num_labelled,
    num_unlabelled=num_unlabelled,
    num_antennas=num_antennas,
    num_subcarriers=num_subcarriers,
    num_measurements=num_measurements,
    samples_per_file=samples_per_file,
    chunk_size=chunk_size,
    seed=seed,
    dtype=dtype,
  )
  model = environment.make_channel_model(seed, num_antennas, num_subcarriers, config)
  return write_ctw_set(
    out_dir,
    _BuiltinSource(model),
    num_labelled=num_labelled,
    num_unlabelled=num_unlabelled,
    num_measurements=num_measurements,
    samples_per_file=samples_per_file,
    dtype=dtype,
    chunk_size=chunk_size,
    progress=progress,
    name='simulator',
  )


def write_ctw_set(
  out_dir: str,
  source: SampleSource,
  *,
  num_labelled: int,
  num_unlabelled: int,
  num_measurements: int,
  samples_per_file: int,
  dtype: str,
  chunk_size: int,
  progress: bool,
  name: str,
) -> dict:
  """Streams ``source`` into the CTW-2020 layout under ``out_dir`` (see
  :func:`generate_ctw_dataset` for the files and the summary); ``name`` labels the
  progress lines."""
  num_antennas, num_subcarriers = source.num_antennas, source.num_subcarriers
  start = time.perf_counter()
  out_dtype = np.dtype(dtype)
  shape = (num_antennas, num_subcarriers, num_measurements)
  bytes_per_sample = 2 * math.prod(shape) * out_dtype.itemsize
  total = num_labelled + num_unlabelled
  statistics = _Statistics()
  tracker = metric_writer.Progress(total, unit='samples', name=name) if progress else None
  workers = max(1, min(os.cpu_count() or 1, 8))
  summary: dict[str, Any] = dict(
    out_dir=os.path.abspath(out_dir), **source.attrs, dtype=dtype, shape=shape
  )
  done = runs.Stage(out_dir, DONE_STAGE, runs.fingerprint(summary, num_labelled, num_unlabelled))
  done.reset()
  with concurrent.futures.ThreadPoolExecutor(workers) as executor:
    for set_name, folder_name, set_id, count in (
      ('labelled', reader.LABELLED_DIR, LABELLED_SET, num_labelled),
      ('unlabelled', reader.UNLABELLED_DIR, UNLABELLED_SET, num_unlabelled),
    ):
      folder = os.path.join(out_dir, folder_name)
      _prepare_folder(folder)
      files = []
      for k, first in enumerate(range(0, count, samples_per_file)):
        path = os.path.join(folder, reader.file_name(k + 1))
        _write_file(
          path,
          source,
          set_id,
          first,
          min(samples_per_file, count - first),
          num_measurements,
          out_dtype,
          chunk_size,
          executor,
          workers,
          statistics,
          tracker,
        )
        files.append(os.path.abspath(path))
      summary[set_name] = dict(
        folder=os.path.abspath(folder),
        files=files,
        num_samples=count,
        bytes=int(sum(os.path.getsize(p) for p in files)),
      )

  seconds = time.perf_counter() - start
  summary.update(
    num_labelled=num_labelled,
    num_unlabelled=num_unlabelled,
    bytes_written=summary['labelled']['bytes'] + summary['unlabelled']['bytes'],
    zero_fraction=statistics.zeros / max(statistics.entries, 1),
    position_min=statistics.pos_min.tolist() if total else None,
    position_max=statistics.pos_max.tolist() if total else None,
    seconds=seconds,
    samples_per_second=total / max(seconds, 1e-9),
    megabytes_per_second=total * bytes_per_sample / 1e6 / max(seconds, 1e-9),
  )
  done.finish(summary)
  if progress:
    logging.info(
      '%s: wrote %d samples (%.2f GB) under %s in %.1f s, %.2f%% zeros',
      name,
      total,
      summary['bytes_written'] / 1e9,
      out_dir,
      seconds,
      100 * summary['zero_fraction'],
    )
  return summary
