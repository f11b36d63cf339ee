"""``ctw_read`` and ``features_*`` rows: streaming CTW preprocessing, and its memory.

``ctw_read`` compares the library's cache build (the paper's real-part feature) with a
plain sequential read of the files. ``features_{covariance,angle_delay,magnitude_db}``
compare the cache build of the realistic-data features with what a user writes for the
same feature (``feature_reference.py``: h5py reads whole datasets, numpy averages and
computes the feature, all features kept in memory and saved once), on the same cold
files; the features of both are compared on the small set (``max_abs_diff``).

Ours: ``reader.build_cache`` on a CTW-layout folder written by
``simulator.generate_ctw_dataset`` — validate, read ``H_Re``/``H_Im`` chunk by chunk,
average the measurements, extract the paper's real-part feature and write the feature
cache — in MB/s of *source* bytes (the ``H_Re`` + ``H_Im`` bytes of the files).
Reference: a plain sequential read of the same files (``readinto`` 16 MB at a time),
the I/O ceiling any reader is bound by.

Cold cache on equal footing: before every measurement the source files are flushed and
evicted from the page cache with ``posix_fadvise(DONTNEED)`` (per file, no root needed,
other processes' cache untouched), and the fraction still resident is checked with
``mincore`` and reported. So the dataset does not have to exceed RAM for the read to
hit the disk; a warm-cache pass of each side is also reported (the CPU-bound ceiling
of the preprocessing itself).

Memory: each measurement runs in a fresh child process that reports its own peak
resident set (``getrusage``); ours is measured on two dataset sizes — the peak must not
grow with the dataset (streaming), only with ``chunk_size``.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import json
import mmap
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

from absl import logging
import numpy as np

from benchmarks import common
from csiloc_jax.core import config_utils
from csiloc_jax.core import runs
from csiloc_jax.csi import reader

TARGET = 0.5
FEATURES = ('covariance', 'angle_delay', 'magnitude_db')
FEATURE_TARGET = 1.0  # ahead of what a user writes
_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Child programs: each prints one JSON line. Run with the same interpreter and path.
# Peak memory is VmHWM (the high-water mark of this process image): ru_maxrss would
# carry over the parent's peak through fork + exec.
_PEAK = r"""
def peak_rss_mb():
  with open('/proc/self/status') as fh:
    for line in fh:
      if line.startswith('VmHWM:'):
        return int(line.split()[1]) / 1024
  import resource
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
"""

_CHILD_BUILD = (
  _PEAK
  + r"""
import json, sys, time
sys.path.insert(0, sys.argv[1])
from csiloc_jax.csi import reader
t0 = time.perf_counter()
arrays = reader.build_cache(sys.argv[2], sys.argv[3], feature=sys.argv[5], average='mean',
                              chunk_size=int(sys.argv[4]))
seconds = time.perf_counter() - t0
print(json.dumps({'seconds': seconds, 'source_bytes': arrays.meta['source_bytes'],
                  'num_samples': len(arrays),
                  'peak_rss_mb': peak_rss_mb()}))
"""
)

_CHILD_READ = (
  _PEAK
  + r"""
import json, os, sys, time
files = sys.argv[1:]
buf = bytearray(16 << 20)
view = memoryview(buf)
t0 = time.perf_counter()
total = 0
for path in files:
  with open(path, 'rb', buffering=0) as fh:
    while True:
      n = fh.readinto(view)
      if not n:
        break
      total += n
seconds = time.perf_counter() - t0
print(json.dumps({'seconds': seconds, 'bytes': total, 'peak_rss_mb': peak_rss_mb()}))
"""
)


def _files(folder: str) -> list[str]:
  return reader.list_files(folder)


def evict(paths: list[str]) -> None:
  """Drops the files' pages from the page cache (after writing back any dirty ones)."""
  for path in paths:
    fd = os.open(path, os.O_RDONLY)
    try:
      os.fsync(fd)
      os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
      os.close(fd)


def resident_fraction(paths: list[str]) -> float | None:
  """Fraction of the files' pages in the page cache (``mincore``), None if unsupported."""
  try:
    libc = ctypes.CDLL(ctypes.util.find_library('c'), use_errno=True)
    page = mmap.PAGESIZE
    resident = total = 0
    for path in paths:
      size = os.path.getsize(path)
      if size == 0:
        continue
      pages = (size + page - 1) // page
      vec = (ctypes.c_ubyte * pages)()
      with open(path, 'rb') as fh, mmap.mmap(fh.fileno(), size, access=mmap.ACCESS_COPY) as mm:
        first = ctypes.c_char.from_buffer(mm)  # Only to learn the mapping's address.
        rc = libc.mincore(ctypes.c_void_p(ctypes.addressof(first)), ctypes.c_size_t(size), vec)
        del first  # Release the export before unmapping.
      if rc != 0:
        return None
      resident += sum(v & 1 for v in vec)
      total += pages
    return resident / total if total else None
  except (OSError, AttributeError, TypeError, ValueError):
    return None


def _child(code: str, args: list[str]) -> dict:
  out = subprocess.run(
    [sys.executable, '-c', code] + args, capture_output=True, text=True, check=False
  )
  if out.returncode:
    raise RuntimeError(f'benchmark child failed ({out.returncode}):\n{out.stderr[-3000:]}')
  return json.loads(out.stdout.strip().splitlines()[-1])


def _generate(root: str, num_samples: int, samples_per_file: int) -> dict:
  from csiloc_jax.csi import simulator  # pylint: disable=g-import-not-at-top

  marker = os.path.join(root, 'bench_dataset.json')
  if os.path.exists(marker):
    summary = runs.read_json(marker)
    if summary.get('num_unlabelled') == num_samples:
      return summary
  # The real set's shape and the default seed, from the one place that holds them.
  synthetic = config_utils.load_config(os.path.join(_ROOT, 'configs', 'ctw_base.py')).data.synthetic
  t0 = time.perf_counter()
  summary = simulator.generate_ctw_dataset(
    root,
    num_labelled=0,
    num_unlabelled=num_samples,
    num_antennas=synthetic.num_antennas,
    num_subcarriers=synthetic.num_subcarriers,
    num_measurements=synthetic.num_measurements,
    samples_per_file=samples_per_file,
    seed=synthetic.seed,
  )
  summary = {
    'num_unlabelled': num_samples,
    'folder': summary['unlabelled']['folder'],
    'bytes': summary['unlabelled']['bytes'],
    'seconds': time.perf_counter() - t0,
  }
  runs.write_json(marker, summary)
  return summary


def run(
  quick: bool, workdir: str | None = None, wanted: set[str] | None = None
) -> list[common.Row]:
  # Two sizes: the row's throughput comes from the larger; peak memory from both.
  sizes = (16, 48) if quick else (1024, 4096)
  samples_per_file = 16 if quick else 512
  chunk_size = 8 if quick else 256
  rounds = 2 if quick else 3  # Two in --quick: the interleaving and the median still run.
  own_dir = workdir is None
  base = tempfile.mkdtemp(prefix='csiloc_bench_ctw_') if own_dir else workdir
  try:
    datasets = {}
    for n in sizes:
      root = os.path.join(base, f'ctw_{n}')
      logging.info('ctw_read: generating %d samples under %s ...', n, root)
      datasets[n] = _generate(root, n, samples_per_file)
      logging.info(
        'ctw_read: %d samples, %.2f GB (%.0f s)',
        n,
        datasets[n]['bytes'] / 1e9,
        datasets[n]['seconds'],
      )

    def build(n: int, cold: bool = True, feature: str = 'real') -> dict:
      folder = datasets[n]['folder']
      files = _files(folder)
      cache = tempfile.mkdtemp(prefix='cache_', dir=base)
      try:
        if cold:
          evict(files)
        res = _child(_CHILD_BUILD, [_ROOT, folder, cache, str(chunk_size), feature])
      finally:
        shutil.rmtree(cache, ignore_errors=True)
      res['mb_per_s'] = res['source_bytes'] / 1e6 / res['seconds']
      return res

    def read(n: int, cold: bool = True) -> dict:
      files = _files(datasets[n]['folder'])
      if cold:
        evict(files)
      res = _child(_CHILD_READ, files)
      res['mb_per_s'] = res['bytes'] / 1e6 / res['seconds']
      return res

    rows = []
    if wanted is None or 'ctw_read' in wanted:
      rows.append(_read_row(datasets, sizes, rounds, chunk_size, build, read, quick))
    for feature in FEATURES:
      if wanted is None or f'features_{feature}' in wanted:
        rows.append(_feature_row(feature, datasets, sizes, rounds, build, base, quick))
    return rows
  finally:
    if own_dir:
      shutil.rmtree(base, ignore_errors=True)


def _grid(num_antennas: int) -> dict:
  from csiloc_jax.csi.simulator import environment  # pylint: disable=g-import-not-at-top

  _, index, side = environment.array_geometry(num_antennas, 1.0)
  return {'index': index.tolist(), 'side': int(side)}


def _feature_row(feature, datasets, sizes, rounds, build, base, quick) -> common.Row:
  """``features_<feature>``: the cache build vs the user's pipeline, cold, interleaved."""
  from benchmarks import feature_reference  # pylint: disable=g-import-not-at-top

  big = sizes[-1]
  files = _files(datasets[big]['folder'])
  num_antennas = reader.scan_folder(datasets[big]['folder'], False)[0].num_antennas
  grid = json.dumps(_grid(num_antennas))
  script = os.path.join(_ROOT, 'benchmarks', 'feature_reference.py')

  def user(n: int) -> dict:
    paths = _files(datasets[n]['folder'])
    out = os.path.join(tempfile.mkdtemp(prefix='user_', dir=base), 'features.npy')
    try:
      evict(paths)
      proc = subprocess.run(
        [sys.executable, script, feature, out, grid, *paths],
        capture_output=True,
        text=True,
        check=False,
      )
      if proc.returncode:
        raise RuntimeError(f'feature reference failed:\n{proc.stderr[-3000:]}')
      res = json.loads(proc.stdout.strip().splitlines()[-1])
    finally:
      shutil.rmtree(os.path.dirname(out), ignore_errors=True)
    res['mb_per_s'] = res['source_bytes'] / 1e6 / res['seconds']
    return res

  results = common.interleaved(
    {'ours': lambda: build(big, feature=feature), 'reference': lambda: user(big)}, rounds
  )
  # Both compute the same feature: compared on the small set, in this process.
  small_folder = datasets[sizes[0]]['folder']
  cache = tempfile.mkdtemp(prefix='cache_', dir=base)
  try:
    ours_feats = np.array(reader.build_cache(small_folder, cache, feature=feature).features)
  finally:
    shutil.rmtree(cache, ignore_errors=True)
  out = os.path.join(tempfile.mkdtemp(prefix='user_', dir=base), 'f.npy')
  try:
    feature_reference.run(feature, out, json.loads(grid), _files(small_folder))
    user_feats = np.load(out)
  finally:
    shutil.rmtree(os.path.dirname(out), ignore_errors=True)
  scale = float(np.abs(user_feats).max()) or 1.0
  ours_rates = [r['mb_per_s'] for r in results['ours']]
  ref_rates = [r['mb_per_s'] for r in results['reference']]
  details = {
    'feature': feature,
    'feature_shape': list(ours_feats.shape[1:]),
    'dataset_samples': big,
    'dataset_bytes': datasets[big]['bytes'],
    'rounds': rounds,
    'ours_all_mb_per_s': ours_rates,
    'reference_all_mb_per_s': ref_rates,
    'ours_spread': common.spread(ours_rates),
    'reference_spread': common.spread(ref_rates),
    'ours_peak_rss_mb': statistics.median(r['peak_rss_mb'] for r in results['ours']),
    'reference_peak_rss_mb': statistics.median(r['peak_rss_mb'] for r in results['reference']),
    'max_abs_diff': float(np.abs(ours_feats - user_feats).max()),
    'max_abs_diff_relative': float(np.abs(ours_feats - user_feats).max()) / scale,
    'source_files': len(files),
  }
  if quick:
    details['shape_note'] = f'quick: {big} samples'
  logging.info('features_%s: ours %s MB/s, user %s MB/s', feature, ours_rates, ref_rates)
  return common.Row(
    f'features_{feature}',
    statistics.median(ours_rates),
    statistics.median(ref_rates),
    'MB/s',
    target=FEATURE_TARGET,
    details=details,
  )


def _read_row(datasets, sizes, rounds, chunk_size, build, read, quick) -> common.Row:
  """``ctw_read``: the cache build (real part) vs a plain sequential read, cold."""
  big = sizes[-1]
  files_big = _files(datasets[big]['folder'])
  evict(files_big)
  resident_after_evict = resident_fraction(files_big)
  results = {'ours': [], 'reference': []}
  order = [('ours', build), ('reference', read)]
  for r in range(rounds):
    for name, fn in order if r % 2 == 0 else order[::-1]:
      res = fn(big)
      results[name].append(res)
      logging.info(
        'ctw_read round %d %s: %.0f MB/s, peak RSS %.0f MB',
        r,
        name,
        res['mb_per_s'],
        res['peak_rss_mb'],
      )
  small = build(sizes[0])
  # Warm cache: the files were just read; read them once more so they are resident
  # where memory allows, then time the preprocessing alone.
  read(big, cold=False)
  warm_read = read(big, cold=False)
  warm_build = build(big, cold=False)
  resident_warm = resident_fraction(files_big)

  ours = statistics.median(x['mb_per_s'] for x in results['ours'])
  ref = statistics.median(x['mb_per_s'] for x in results['reference'])
  rss_small = small['peak_rss_mb']
  rss_big = statistics.median(x['peak_rss_mb'] for x in results['ours'])
  details = {
    'dataset_samples': list(sizes),
    'dataset_bytes': [datasets[n]['bytes'] for n in sizes],
    'chunk_size': chunk_size,
    'rounds': rounds,
    'ours_all_mb_per_s': [x['mb_per_s'] for x in results['ours']],
    'reference_all_mb_per_s': [x['mb_per_s'] for x in results['reference']],
    'ours_spread': common.spread([x['mb_per_s'] for x in results['ours']]),
    'reference_spread': common.spread([x['mb_per_s'] for x in results['reference']]),
    'peak_rss_mb': {str(sizes[0]): rss_small, str(big): rss_big},
    'peak_rss_growth': rss_big / rss_small - 1.0,
    'reference_peak_rss_mb': statistics.median(x['peak_rss_mb'] for x in results['reference']),
    'page_cache_resident_after_evict': resident_after_evict,
    'warm_cache': {
      'ours_mb_per_s': warm_build['mb_per_s'],
      'reference_mb_per_s': warm_read['mb_per_s'],
      'resident_fraction': resident_warm,
    },
    'memory_flat': bool(rss_big <= 1.1 * rss_small + 50),
  }
  if quick:
    details['shape_note'] = f'quick: {big} samples'
  return common.Row('ctw_read', ours, ref, 'MB/s', target=TARGET, details=details)
