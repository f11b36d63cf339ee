"""Shared pieces of the benchmarks: result rows, interleaved timing, machine description.

Every row compares the library ("ours") with a reference measured in the same process
run. On a shared, noisy machine the two sides are timed in *interleaved rounds* (ours,
reference, reference, ours, ...), so a slow spell hits both; each side's figure is the
median over rounds, and the spread (max/min - 1 over rounds) is kept in the JSON so the
noise is visible next to every number.
"""

from __future__ import annotations

import dataclasses
import importlib
import math
import os
import platform
import statistics
import subprocess
import time
from typing import Any, Callable


@dataclasses.dataclass
class Row:
  """One line of the table: ours vs the reference, ratio > 1 = ours better."""

  name: str
  ours: float | None
  reference: float | None
  unit: str
  # 'throughput' (higher is better) or 'time' (lower is better): sets the ratio's sense.
  sense: str = 'throughput'
  target: float | None = None
  details: dict = dataclasses.field(default_factory=dict)

  @property
  def ratio(self) -> float | None:
    if self.ours is None or self.reference is None or not self.ours or not self.reference:
      return None
    return self.ours / self.reference if self.sense == 'throughput' else self.reference / self.ours

  def to_json(self) -> dict:
    return {
      'name': self.name,
      'ours': self.ours,
      'reference': self.reference,
      'unit': self.unit,
      'ratio': self.ratio,
      'target': self.target,
      'meets_target': (
        None if self.target is None or self.ratio is None else bool(self.ratio >= self.target)
      ),
      **self.details,
    }


def unavailable(
  name: str,
  unit: str,
  why: str,
  ours: float | None = None,
  target: float | None = None,
  sense: str = 'throughput',
  **details,
) -> Row:
  """A row whose reference (or both sides) could not be measured, with the reason."""
  return Row(
    name,
    ours,
    None,
    unit,
    sense=sense,
    target=target,
    details={'reference_unavailable': why, **details},
  )


def spread(values: list[float]) -> float:
  """max/min - 1: the relative spread of repeated measurements."""
  return max(values) / min(values) - 1.0 if values and min(values) > 0 else math.nan


def interleaved(blocks: dict[str, Callable[[], float]], rounds: int) -> dict[str, list[float]]:
  """Runs each ``block() -> seconds`` once per round, alternating the order by round."""
  names = list(blocks)
  times: dict[str, list[float]] = {n: [] for n in names}
  for r in range(rounds):
    for name in names if r % 2 == 0 else names[::-1]:
      times[name].append(blocks[name]())
  return times


def summarize(per_unit_seconds: list[float]) -> dict:
  return {
    'median_s': statistics.median(per_unit_seconds),
    'min_s': min(per_unit_seconds),
    'max_s': max(per_unit_seconds),
    'spread': spread(per_unit_seconds),
    'rounds': len(per_unit_seconds),
  }


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
  t0 = time.perf_counter()
  out = fn()
  return time.perf_counter() - t0, out


def optional_import(name: str):
  """The module, or ``None`` if it is not installed (reference libraries are optional)."""
  try:
    return importlib.import_module(name)
  except ImportError:
    return None


def _cpu_model() -> dict:
  info: dict[str, Any] = {'processor': platform.processor() or platform.machine()}
  try:
    with open('/proc/cpuinfo') as fh:
      text = fh.read()
    first = text.split('\n\n')[0]
    fields = dict(line.split(':', 1) for line in first.splitlines() if ':' in line)
    fields = {k.strip(): v.strip() for k, v in fields.items()}
    info.update(
      model_name=fields.get('model name'),
      vendor=fields.get('vendor_id'),
      family=fields.get('cpu family'),
      model=fields.get('model'),
      mhz=fields.get('cpu MHz'),
      simd=[
        f
        for f in ('avx2', 'fma', 'avx512f', 'avx512_bf16', 'amx_tile')
        if f in fields.get('flags', '').split()
      ],
    )
  except OSError:
    pass
  return info


def _mem_total_gb() -> float | None:
  try:
    with open('/proc/meminfo') as fh:
      for line in fh:
        if line.startswith('MemTotal:'):
          return int(line.split()[1]) / 1e6
  except OSError:
    pass
  return None


def versions() -> dict:
  out = {'python': platform.python_version()}
  for name in (
    'jax',
    'jaxlib',
    'flax',
    'optax',
    'numpy',
    'h5py',
    'ml_collections',
    'torch',
    'scipy',
    'psutil',
  ):
    mod = optional_import(name)
    out[name] = getattr(mod, '__version__', 'installed') if mod is not None else None
  try:
    out['csiloc_jax_commit'] = (
      subprocess.run(
        ['git', 'rev-parse', '--short', 'HEAD'],
        capture_output=True,
        text=True,
        cwd=os.path.dirname(os.path.abspath(__file__)),
        timeout=10,
      ).stdout.strip()
      or None
    )
  except (OSError, subprocess.SubprocessError):
    out['csiloc_jax_commit'] = None
  return out


def machine() -> dict:
  import jax  # pylint: disable=g-import-not-at-top

  devices = jax.devices()
  return {
    'cpu': _cpu_model(),
    'cores': os.cpu_count(),
    'cores_available': len(os.sched_getaffinity(0))
    if hasattr(os, 'sched_getaffinity')
    else os.cpu_count(),
    'memory_gb': _mem_total_gb(),
    'platform': platform.platform(),
    'jax_backend': jax.default_backend(),
    'device_kind': devices[0].device_kind,
    'num_devices': len(devices),
    'xla_flags': os.environ.get('XLA_FLAGS', ''),
    'glibc_tunables': os.environ.get('GLIBC_TUNABLES', ''),
    'transparent_hugepage': _read('/sys/kernel/mm/transparent_hugepage/enabled'),
    'load_average': os.getloadavg(),
  }


def _read(path: str) -> str | None:
  try:
    with open(path) as fh:
      return fh.read().strip()
  except OSError:
    return None


def num_threads() -> int:
  return len(os.sched_getaffinity(0)) if hasattr(os, 'sched_getaffinity') else os.cpu_count()
