"""Comparing two runs' ``metrics.json``: what differs between any two runs is left out."""

import json
import os

# Keys whose values differ between any two runs: wall-clock times and throughputs, and
# whether the mmWave nets were restored rather than trained.
VOLATILE = frozenset(
  {
    'timing_s',
    'wall_seconds',
    'train_seconds',
    'steps_per_sec',
    'examples_per_sec',
    'seconds',
    'restored_from_checkpoint',
  }
)


def comparable(value, workdir: str):
  """``value`` without volatile keys, with the workdir's path replaced."""
  if isinstance(value, dict):
    return {k: comparable(v, workdir) for k, v in value.items() if k not in VOLATILE}
  if isinstance(value, list):
    return [comparable(v, workdir) for v in value]
  if isinstance(value, str):
    return value.replace(workdir, 'WORKDIR')
  return value


def read(workdir) -> dict:
  """``workdir/metrics.json``, comparable."""
  with open(os.path.join(workdir, 'metrics.json')) as f:
    return comparable(json.load(f), str(workdir))
