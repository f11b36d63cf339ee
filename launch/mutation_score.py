"""Mutation score per guarded module, from mutmut's results (launch/mutation.sh).

The groups below are the code where a silent error corrupts results (docs/testing.md,
'Mutation testing'). A mutant is *killed* when a test fails (or times out: the mutant
made the code loop) and *survives* otherwise, including "no tests" (no selected test
reaches the mutated function). Survivors judged equivalent -- no input can tell them
from the original -- are listed with the reason in ``tests/mutation_equivalent.txt``
and left out of the score; they are still printed, so the judgement stays reviewable.

  python launch/mutation_score.py [--survivors]   # in the folder holding mutants/
"""

import argparse
import collections
import fnmatch
import os
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


def main() -> int:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--survivors', action='store_true', help='list every surviving mutant')
  args = parser.parse_args()
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
  judged = equivalent()
  counts = collections.defaultdict(collections.Counter)
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
    f'{"group":26s} {"mutants":>8s} {"killed":>7s} {"equiv.":>7s} {"survived":>9s} {"score":>7s}'
  )
  total = collections.Counter()
  for group in GROUPS:
    c = counts[group]
    total.update(c)
    scored = c['killed'] + c['survived']
    score = f'{100 * c["killed"] / scored:.1f}%' if scored else '-'
    print(
      f'{group:26s} {sum(c.values()):8d} {c["killed"]:7d} {c["equivalent"]:7d} '
      f'{c["survived"]:9d} {score:>7s}'
    )
  scored = total['killed'] + total['survived']
  if scored:
    print(
      f'{"all":26s} {sum(total.values()):8d} {total["killed"]:7d} {total["equivalent"]:7d} '
      f'{total["survived"]:9d} {100 * total["killed"] / scored:6.1f}%'
    )
  if args.survivors:
    for group in GROUPS:
      for name in survivors[group]:
        print(f'survived  {name}')
  return 0


if __name__ == '__main__':
  sys.exit(main())
