"""Benchmarks of csiloc_jax against what a user would write instead, in one process run.

  python benchmarks/run.py --out=bench.json            # full run (~20-30 min on 2 cores)
  python benchmarks/run.py --quick --out=/tmp/b.json   # small shapes, proves it works
  python benchmarks/run.py --only=train_model1,ctw_read
  python benchmarks/run.py --hugepages --only=train    # malloc with transparent huge pages

Prints a table (name, ours, reference, unit, ratio = ours/reference for throughputs,
reference/ours for times, so higher is better for ours) and writes the same rows to
``--out`` with the machine (CPU model, cores, device kind) and package versions.
Row groups (one module each): ``train`` (train_throughput.py, vs PyTorch),
``csi_data`` (ctw_read.py: ``ctw_read`` vs a plain sequential read, ``features_*`` vs a
user's h5py + numpy pipeline), ``jade`` (jade_bench.py: ``jade`` and ``jade_cold`` vs
SciPy least_squares) and ``tracker`` (tracker_bench.py, vs Python loops). A missing
reference library (torch, scipy) gives a row whose reference is marked unavailable,
never a crash. Timings are never asserted anywhere: CI may run ``--quick`` only to prove
that this still works.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import sys
import time
import traceback

# Runnable as a script from anywhere: make the repository root importable.
_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if _ROOT not in sys.path:
  sys.path.insert(0, _ROOT)

from absl import logging  # noqa: E402

from benchmarks import common  # noqa: E402

GROUPS = {
  'train': (
    'train_model1',
    'train_model2',
    'train_model3',
    'train_model4',
    'train_model3_finetune',
    'train_chart',
  ),
  # The CSI data rows: the cache build of the paper's feature and of the realistic ones.
  'csi_data': (
    'ctw_read',
    'features_covariance',
    'features_angle_delay',
    'features_magnitude_db',
  ),
  'jade': ('jade', 'jade_cold'),
  'tracker': ('tracker_k1', 'tracker_k4', 'tracker_k16', 'tracker_k64', 'tracker_batch'),
}


def _parse_only(spec: str | None) -> dict[str, set[str] | None] | None:
  """``--only`` names (rows or groups) -> {group: rows or None for all}."""
  if not spec:
    return None
  selected: dict[str, set[str] | None] = {}
  for item in (s.strip() for s in spec.split(',') if s.strip()):
    if item in GROUPS:
      selected[item] = None
      continue
    group = next((g for g, rows in GROUPS.items() if item in rows), None)
    if group is None:
      known = sorted(set(GROUPS) | {r for rows in GROUPS.values() for r in rows})
      raise SystemExit(f'--only: unknown row or group {item!r}; known: {", ".join(known)}')
    if selected.get(group, set()) is not None:
      selected.setdefault(group, set()).add(item)
  return selected


def _run_group(group: str, rows_wanted: set[str] | None, args) -> list[common.Row]:
  if group == 'train':
    from benchmarks import train_throughput  # pylint: disable=g-import-not-at-top

    compile_ = {'auto': None, 'on': True, 'off': False}[args.reference_compile]
    return train_throughput.run(
      args.quick, rows_wanted, backend=args.backend, reference_compile=compile_
    )
  if group == 'csi_data':
    from benchmarks import ctw_read  # pylint: disable=g-import-not-at-top

    return ctw_read.run(args.quick, workdir=args.workdir, wanted=rows_wanted)
  if group == 'jade':
    from benchmarks import jade_bench  # pylint: disable=g-import-not-at-top

    return jade_bench.run(args.quick)
  if group == 'tracker':
    from benchmarks import tracker_bench  # pylint: disable=g-import-not-at-top

    return tracker_bench.run(args.quick, rows_wanted)
  raise ValueError(group)


def _fmt(x) -> str:
  if x is None or (isinstance(x, float) and math.isnan(x)):
    return 'n/a'
  if isinstance(x, float):
    if abs(x) >= 100:
      return f'{x:,.0f}'
    if abs(x) >= 1:
      return f'{x:.2f}'
    return f'{x:.3g}'
  return str(x)


def format_table(rows: list[common.Row]) -> str:
  header = ('name', 'ours', 'reference', 'unit', 'ratio', 'target', 'note')
  lines = []
  for r in rows:
    note = ''
    if 'reference_unavailable' in r.details:
      note = 'reference unavailable: ' + r.details['reference_unavailable']
    elif 'error' in r.details:
      trace = r.details['error'].strip().splitlines()
      errors = [t for t in trace if re.match(r'^[\w.]*(Error|Exception)\b', t)]
      note = 'error: ' + (errors[-1] if errors else trace[-1])[:100]
    elif r.target is not None and r.ratio is not None:
      note = 'meets target' if r.ratio >= r.target else 'below target'
    if 'shape_note' in r.details:
      note = (note + '; ' if note else '') + r.details['shape_note']
    lines.append(
      (
        r.name,
        _fmt(r.ours),
        _fmt(r.reference),
        r.unit,
        _fmt(r.ratio) + ('x' if r.ratio is not None else ''),
        (f'>= {r.target:g}x' if r.target is not None else ''),
        note,
      )
    )
  widths = [
    max(len(h), *(len(cells[i]) for cells in lines)) if lines else len(h)
    for i, h in enumerate(header)
  ]
  out = ['  '.join(h.ljust(w) for h, w in zip(header, widths)), '  '.join('-' * w for w in widths)]
  out += ['  '.join(c.ljust(w) for c, w in zip(cells, widths)) for cells in lines]
  return '\n'.join(out)


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(
    description=__doc__.split('\n\n')[0], formatter_class=argparse.RawDescriptionHelpFormatter
  )
  parser.add_argument('--out', help='write the rows, machine and versions to this JSON')
  parser.add_argument(
    '--quick', action='store_true', help='small shapes and few repeats: proves the benchmarks run'
  )
  parser.add_argument('--only', help='comma-separated rows or groups (' + ', '.join(GROUPS) + ')')
  parser.add_argument(
    '--backend',
    choices=('pmap', 'shard_map'),
    default=None,
    help="parallel backend for the train rows (default: the config's)",
  )
  parser.add_argument(
    '--reference_compile',
    choices=('auto', 'on', 'off'),
    default='auto',
    help='train rows: also try torch.compile for the PyTorch reference (auto: in a full '
    'run, not with --quick)',
  )
  parser.add_argument(
    '--workdir', default=None, help='folder for generated datasets (default: a temporary folder)'
  )
  parser.add_argument(
    '--hugepages',
    action='store_true',
    help='re-run under GLIBC_TUNABLES=glibc.malloc.hugetlb=1 (transparent '
    'huge pages for large allocations, both sides alike; see README)',
  )
  parser.add_argument('-v', '--verbose', action='store_true', help='log progress')
  args = parser.parse_args(argv)
  tunables = os.environ.get('GLIBC_TUNABLES', '')
  if args.hugepages and 'glibc.malloc.hugetlb' not in tunables:
    # glibc reads its tunables at process start, so apply them by re-executing.
    env = dict(
      os.environ, GLIBC_TUNABLES=':'.join(t for t in (tunables, 'glibc.malloc.hugetlb=1') if t)
    )
    os.execve(sys.executable, [sys.executable] + sys.argv, env)
  logging.set_verbosity(logging.INFO if args.verbose else logging.WARNING)
  logging.use_absl_handler()

  selected = _parse_only(args.only)
  t0 = time.perf_counter()
  machine = common.machine()
  rows: list[common.Row] = []
  group_seconds = {}
  for group, names in GROUPS.items():
    if selected is not None and group not in selected:
      continue
    wanted = None if selected is None else selected[group]
    print(f'[{time.perf_counter() - t0:6.0f} s] running {group} ...', flush=True)
    tg = time.perf_counter()
    try:
      new_rows = _run_group(group, wanted, args)
    except Exception:  # pylint: disable=broad-except
      # One broken group must not hide the others' results.
      tb = traceback.format_exc()
      print(tb, file=sys.stderr)
      new_rows = [
        common.Row(n, None, None, '', details={'error': tb})
        for n in (sorted(wanted) if wanted else names)
      ]
    group_seconds[group] = time.perf_counter() - tg
    for r in new_rows:
      print(
        f'    {r.name}: ours {_fmt(r.ours)} {r.unit}, reference {_fmt(r.reference)}, '
        f'ratio {_fmt(r.ratio)}',
        flush=True,
      )
    rows += new_rows

  wall = time.perf_counter() - t0
  print()
  print(format_table(rows))
  print(
    f'\n{len(rows)} rows in {wall:.0f} s ({"quick" if args.quick else "full"} run); '
    f'load average {os.getloadavg()[0]:.2f} now, '
    f'{machine["load_average"][0]:.2f} at start'
  )
  if args.out:
    machine['load_average_end'] = os.getloadavg()
    result = {
      'rows': [r.to_json() for r in rows],
      'machine': machine,
      'versions': common.versions(),
      'quick': args.quick,
      'command': ' '.join([os.path.basename(sys.executable)] + sys.argv),
      'wall_s': wall,
      'group_wall_s': group_seconds,
    }
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, 'w') as fh:
      json.dump(result, fh, indent=2, default=_json_default)
    print(f'wrote {args.out}')
  return 0


def _json_default(x):
  try:
    import numpy as np  # pylint: disable=g-import-not-at-top

    if isinstance(x, np.generic):
      return x.item()
    if isinstance(x, np.ndarray):
      return x.tolist()
  except ImportError:
    pass
  if isinstance(x, (set, tuple)):
    return list(x)
  return str(x)


if __name__ == '__main__':
  sys.exit(main())
