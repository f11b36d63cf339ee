"""Mutation score per guarded module, from mutmut's results (launch/mutation.sh).

The groups below are the code where a silent error corrupts results (docs/testing.md,
'Mutation testing'). A mutant is *killed* when a test fails (or times out: the mutant
made the code loop) and *survives* otherwise, including "no tests" (no selected test
reaches the mutated function). Survivors judged equivalent -- no input can tell them
from the original -- are listed with the reason in ``tests/mutation_equivalent.txt``
and left out of the score; they are still printed, so the judgement stays reviewable.

  python launch/mutation_score.py [--survivors]   # in the folder holding mutants/
  python launch/mutation_score.py --sample 60      # a seeded random sample of names

A run may cover every mutant or a uniform random sample of each group's mutants
(``--sample N`` prints one, ``MUTATION_SAMPLE=N bash launch/mutation.sh`` runs it): the
JAX-heavy groups take seconds per mutant, so a sample is how a 2-core machine gets a
score in an hour. The table then gives, per group, the mutants generated and run, and a
95 % Wilson interval for the score over the whole group.
"""

import argparse
import collections
import fnmatch
import math
import os
import random
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EQUIVALENT_FILE = os.path.join(REPO, 'tests', 'mutation_equivalent.txt')

# Mutant names are 'package.module.x_function__mutmut_N' (methods: 'xǁClassǁmethod').
GROUPS = {
  'csi.metrics': ['csiloc_jax.csi.metrics.*'],
  'csi.reader validation': [
    f'csiloc_jax.csi.reader.x_{f}__mutmut_*'
    for f in (
      'list_files',
      '_check_file',
      'scan_folder',
      '_check_finite',
      '_check_magnitude',
      '_half_zero_samples',
      '_check_positions',
      '_check_rest_of_chunk',
      '_validation_summary',
    )
  ],
  'csi.features averaging': [
    'csiloc_jax.csi.features.x_average_measurements__mutmut_*',
    'csiloc_jax.csi.features.x__pairwise_sum__mutmut_*',
  ],
  'mmwave.features': ['csiloc_jax.mmwave.features.*'],
  'mmwave.tracker': ['csiloc_jax.mmwave.tracker.*'],
  'mmwave.jade residual': [
    f'csiloc_jax.mmwave.jade.x_{f}__mutmut_*'
    for f in ('_parts', '_robust', '_cost', '_normal_equations')
  ],
  'mmwave.jade gauge': [
    f'csiloc_jax.mmwave.jade.x_{f}__mutmut_*'
    for f in ('fix_gauge', 'gauge_free_conditioning', '_collinear')
  ],
}
KILLED = {'killed', 'timeout'}
NOT_RUN = {'not checked', 'skipped'}


def patterns() -> list[str]:
  """Every group's mutant-name patterns (``mutmut run``'s arguments)."""
  return [p for group in GROUPS.values() for p in group]


def group_of(name: str) -> str | None:
  for group, pats in GROUPS.items():
    if any(fnmatch.fnmatchcase(name, p) for p in pats):
      return group
  return None


def equivalent() -> dict[str, str]:
  """``{mutant name: why it is equivalent}`` from tests/mutation_equivalent.txt."""
  out = {}
  if os.path.exists(EQUIVALENT_FILE):
    with open(EQUIVALENT_FILE) as f:
      for line in f:
        line = line.strip()
        if line and not line.startswith('#'):
          name, _, why = line.partition(' ')
          out[name] = why.strip()
  return out


def results() -> dict[str, str]:
  """``{mutant name: state}`` of every generated mutant (``mutmut results --all true``)."""
  proc = subprocess.run(
    [os.path.join(os.path.dirname(sys.executable), 'mutmut'), 'results', '--all', 'true'],
    capture_output=True,
    text=True,
    check=True,
  )
  status = {}
  for line in proc.stdout.splitlines():
    name, sep, state = line.strip().rpartition(': ')
    if sep:
      status[name] = state
  return status


def sample(names, size: int, seed: int) -> list[str]:
  """Up to ``size`` mutant names drawn uniformly per group, reproducibly (sorted input)."""
  by_group = collections.defaultdict(list)
  for name in sorted(names):
    group = group_of(name)
    if group is not None:
      by_group[group].append(name)
  rng = random.Random(seed)
  picked = []
  for group in GROUPS:
    pool = by_group[group]
    picked += sorted(rng.sample(pool, min(size, len(pool))))
  return picked


def wilson(killed: int, n: int, z: float = 1.96) -> tuple[float, float]:
  """95 % Wilson score interval of a proportion ``killed / n``."""
  if n == 0:
    return math.nan, math.nan
  p = killed / n
  centre = (p + z * z / (2 * n)) / (1 + z * z / n)
  half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
  return centre - half, centre + half


def main() -> int:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--survivors', action='store_true', help='list every surviving mutant')
  parser.add_argument('--sample', type=int, help='print a random sample of N names per group')
  parser.add_argument('--seed', type=int, default=0, help='seed of --sample')
  args = parser.parse_args()
  status = results()
  if args.sample is not None:
    print('\n'.join(sample(status, args.sample, args.seed)))
    return 0
  judged = equivalent()
  counts = collections.defaultdict(collections.Counter)
  generated = collections.Counter(g for g in map(group_of, status) if g is not None)
  survivors = collections.defaultdict(list)
  for name, state in status.items():
    group = group_of(name)
    if group is None or state in NOT_RUN:
      continue
    if state in KILLED:
      counts[group]['killed'] += 1
    elif name in judged:
      counts[group]['equivalent'] += 1
    else:
      counts[group]['survived'] += 1
      survivors[group].append(f'{name} ({state})')
  print(
    f'{"group":26s} {"generated":>9s} {"run":>5s} {"killed":>7s} {"equiv.":>7s} '
    f'{"survived":>9s} {"score":>7s}  95 % interval (sampled groups)'
  )
  total = collections.Counter()
  for group in GROUPS:
    c = counts[group]
    total.update(c)
    run = sum(c.values())
    scored = c['killed'] + c['survived']
    score = f'{100 * c["killed"] / scored:.1f}%' if scored else '-'
    interval = ''
    if scored and run < generated[group]:
      low, high = wilson(c['killed'], scored)
      interval = f'  {100 * low:.1f}-{100 * high:.1f}%'
    print(
      f'{group:26s} {generated[group]:9d} {run:5d} {c["killed"]:7d} {c["equivalent"]:7d} '
      f'{c["survived"]:9d} {score:>7s}{interval}'
    )
  scored = total['killed'] + total['survived']
  if scored:
    print(
      f'{"all":26s} {sum(generated.values()):9d} {sum(total.values()):5d} '
      f'{total["killed"]:7d} {total["equivalent"]:7d} {total["survived"]:9d} '
      f'{100 * total["killed"] / scored:6.1f}%'
    )
  if args.survivors:
    for group in GROUPS:
      for name in survivors[group]:
        print(f'survived  {name}')
  return 0


if __name__ == '__main__':
  sys.exit(main())
