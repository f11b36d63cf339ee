"""Full-size streaming: a CTW-layout set of ~2 GB and of ~20 GB, through every stage.

  python benchmarks/streaming.py --workdir=/data/stream --sizes_gb=2,20 --out=stream.json

Per size, at the real shape (56 antennas x 924 subcarriers x 5 measurements, float32,
~2.07 MB per sample; 10 % labelled, 90 % unlabelled):

1. **generate** — ``simulator.generate_ctw_dataset`` (skipped when the set is already
   there: the writer's stage record says it is complete);
2. **cache** — ``reader.build_cache`` of both folders with the paper's real-part
   feature, each in a fresh child process that reports its peak resident memory
   (VmHWM), after evicting the source files from the page cache (cold read; the
   resident fraction left is reported); the peak must stay flat from 2 to 20 GB;
3. **train** — ``launch/train.py`` with ``configs/ctw_model3.py`` for one pretraining
   epoch and one fine-tuning epoch on the cached features, in a child process (peak
   memory, wall time). The classic baselines are off here (they would build a second,
   covariance cache): this measures the model's path.

Prints a table of seconds, MB/s of source bytes, peak memory and disk use per stage
and size, and the 20 GB / 2 GB ratios, and writes them as JSON. A benchmark, not a
test: it takes tens of minutes and tens of GB of disk.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if _ROOT not in sys.path:
  sys.path.insert(0, _ROOT)

from benchmarks import ctw_read  # noqa: E402
from csiloc_jax.csi import reader  # noqa: E402
from csiloc_jax.csi import simulator  # noqa: E402

SHAPE = (56, 924, 5)
BYTES_PER_SAMPLE = 2 * 4 * SHAPE[0] * SHAPE[1] * SHAPE[2]  # H_Re + H_Im, float32.


def _du(path: str) -> int:
  total = 0
  for folder, _, files in os.walk(path):
    total += sum(os.path.getsize(os.path.join(folder, f)) for f in files)
  return total


def _generate(root: str, size_gb: float) -> dict:
  total = max(int(round(size_gb * 1e9 / BYTES_PER_SAMPLE)), 128)
  labelled = max(total // 10, 64)
  if simulator.writer.is_interrupted(root) or not os.path.isdir(root):
    shutil.rmtree(root, ignore_errors=True)
  t0 = time.perf_counter()
  done = os.path.isdir(os.path.join(root, reader.LABELLED_DIR))
  if not done:
    simulator.generate_ctw_dataset(
      root,
      num_labelled=labelled,
      num_unlabelled=total - labelled,
      num_antennas=SHAPE[0],
      num_subcarriers=SHAPE[1],
      num_measurements=SHAPE[2],
      seed=0,
      progress=True,
    )
  return {
    'num_labelled': labelled,
    'num_unlabelled': total - labelled,
    'seconds': None if done else time.perf_counter() - t0,
    'disk_bytes': _du(root),
  }


def _cache(root: str, cache_dir: str) -> dict:
  out = {'seconds': 0.0, 'source_bytes': 0, 'peak_rss_mb': 0.0}
  # Cold: the source files leave the page cache first (a just-generated set is in it).
  files = [
    f
    for d in (reader.LABELLED_DIR, reader.UNLABELLED_DIR)
    for f in ctw_read._files(os.path.join(root, d))
  ]
  ctw_read.evict(files)
  out['resident_before'] = ctw_read.resident_fraction(files)
  for folder in (reader.LABELLED_DIR, reader.UNLABELLED_DIR):
    r = ctw_read._child(ctw_read._CHILD_BUILD, [_ROOT, os.path.join(root, folder), cache_dir, '64'])
    out['seconds'] += r['seconds']
    out['source_bytes'] += r['source_bytes']
    out['peak_rss_mb'] = max(out['peak_rss_mb'], r['peak_rss_mb'])
  out['disk_bytes'] = _du(cache_dir)
  out['mb_per_s'] = out['source_bytes'] / 1e6 / out['seconds']
  return out


def _train(root: str, cache_dir: str, workdir: str) -> dict:
  code = (
    ctw_read._PEAK
    + r"""
import json, os, runpy, sys, time
sys.argv = sys.argv[1:]
sys.path.insert(0, os.path.dirname(sys.argv[0]))
t0 = time.perf_counter()
try:
  runpy.run_path(sys.argv[0], run_name='__main__')
except SystemExit as e:
  if e.code:
    raise
print(json.dumps({'seconds': time.perf_counter() - t0, 'peak_rss_mb': peak_rss_mb()}))
"""
  )
  shutil.rmtree(workdir, ignore_errors=True)
  args = [
    os.path.join(_ROOT, 'launch', 'train.py'),
    f'--config={os.path.join(_ROOT, "configs", "ctw_model3.py")}',
    f'--workdir={workdir}',
    f'--config.data.root={root}',
    f'--config.data.cache_dir={cache_dir}',  # The cache built above.
    '--config.pretrain.num_epochs=1',
    '--config.finetune.num_epochs=1',
    '--config.eval.baselines=()',
  ]
  proc = subprocess.run(
    [sys.executable, '-c', code, *args], capture_output=True, text=True, check=False
  )
  if proc.returncode:
    raise RuntimeError(f'training failed:\n{proc.stderr[-3000:]}')
  out = json.loads(proc.stdout.strip().splitlines()[-1])
  out['cache_reused'] = 'Reusing feature cache' in proc.stderr
  with open(os.path.join(workdir, 'metrics.json')) as f:
    metrics = json.load(f)
  out['test_mae_average_m'] = metrics['test']['mae']['average']
  out['run_wall_seconds'] = metrics.get('wall_seconds')
  return out


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--workdir', required=True)
  parser.add_argument('--sizes_gb', default='2,20')
  parser.add_argument('--out', default='')
  args = parser.parse_args()
  results = {}
  for size in [float(s) for s in args.sizes_gb.split(',')]:
    tag = f'{size:g}gb'
    root = os.path.join(args.workdir, f'ctw_{tag}')
    cache_dir = os.path.join(args.workdir, f'cache_{tag}')
    shutil.rmtree(cache_dir, ignore_errors=True)
    r = {'generate': _generate(root, size)}
    print(f'[{tag}] generated: {r["generate"]}', flush=True)
    r['cache'] = _cache(root, cache_dir)
    print(f'[{tag}] cache: {r["cache"]}', flush=True)
    r['train'] = _train(root, cache_dir, os.path.join(args.workdir, f'run_{tag}'))
    print(f'[{tag}] train: {r["train"]}', flush=True)
    results[tag] = r
  lines = [
    '| set | samples | source GB | generate s | cache s | cache MB/s | cache peak MB | '
    'cache disk GB | train s (1+1 epochs) | train peak MB |',
    '|---|---|---|---|---|---|---|---|---|---|',
  ]
  for tag, r in results.items():
    g, c, t = r['generate'], r['cache'], r['train']
    gen = 'reused' if g['seconds'] is None else f'{g["seconds"]:.0f}'
    lines.append(
      f'| {tag} | {g["num_labelled"]} + {g["num_unlabelled"]} | {c["source_bytes"] / 1e9:.1f} | '
      f'{gen} | {c["seconds"]:.0f} | {c["mb_per_s"]:.0f} | {c["peak_rss_mb"]:.0f} | '
      f'{c["disk_bytes"] / 1e9:.2f} | {t["seconds"]:.0f} | {t["peak_rss_mb"]:.0f} |'
    )
  print('\n'.join(lines))
  if args.out:
    with open(args.out, 'w') as f:
      json.dump({'results': results, 'table': '\n'.join(lines)}, f, indent=1)


if __name__ == '__main__':
  main()
