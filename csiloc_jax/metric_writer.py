"""Metric logging and progress reporting shared by every training and evaluation loop.

A deliberately small writer (no TensorFlow, no clu): each call logs one absl line and
appends one JSON object to ``workdir/metrics.jsonl``. :class:`Progress` turns step
counts into steps/s, examples/s and an ETA, measuring only the time the caller says was
spent training so evaluation and checkpointing do not distort throughput.
"""

from __future__ import annotations

import json
import math
import os
import time
from typing import Any, Mapping

from absl import logging
import numpy as np


def _to_python(value: Any) -> Any:
  if isinstance(value, (np.generic, np.ndarray)) or hasattr(value, '__array__'):
    arr = np.asarray(value)
    return arr.item() if arr.ndim == 0 else arr.tolist()
  return value


def write_json(path: str, payload: Any) -> None:
  """Atomic JSON write: a crash never leaves a half-written metrics file."""
  tmp = path + '.tmp'
  with open(tmp, 'w') as f:
    json.dump(payload, f, indent=2, sort_keys=True)
  os.replace(tmp, path)


class _DropOrbaxInfo:
  """Orbax logs several INFO lines per checkpoint; keep its warnings, drop the chatter."""

  def filter(self, record) -> bool:
    return record.levelno >= 30 or 'orbax' not in record.pathname


def quiet_orbax() -> None:
  logger = logging.get_absl_logger()
  if not any(isinstance(f, _DropOrbaxInfo) for f in logger.filters):
    logger.addFilter(_DropOrbaxInfo())


def log_to_file(workdir: str, filename: str = 'log.txt') -> str:
  """Also sends absl log lines to ``workdir/filename`` (once per path), so a run's
  progress is kept next to its metrics whether it was started from a shell or a
  notebook."""
  import logging as std_logging
  os.makedirs(workdir, exist_ok=True)
  path = os.path.abspath(os.path.join(workdir, filename))
  logger = logging.get_absl_logger()
  if not any(getattr(h, 'baseFilename', None) == path for h in logger.handlers):
    handler = std_logging.FileHandler(path)
    handler.setFormatter(std_logging.Formatter(
        '%(asctime)s %(levelname)s %(message)s', '%Y-%m-%d %H:%M:%S'))
    logger.addHandler(handler)
  quiet_orbax()
  if logging.get_verbosity() < logging.INFO:
    logging.set_verbosity(logging.INFO)
  return path


class MetricWriter:
  """Writes scalars to the absl log and to a JSONL file in ``workdir``."""

  def __init__(self, workdir: str, filename: str = 'metrics.jsonl'):
    os.makedirs(workdir, exist_ok=True)
    self.path = os.path.join(workdir, filename)

  def write(self, step: int, scalars: Mapping[str, Any], **tags: Any) -> None:
    record = {'step': int(step), **{k: _to_python(v) for k, v in tags.items()}}
    record.update({k: _to_python(v) for k, v in scalars.items()})
    shown = ', '.join(
        f'{k}={v:.5g}' if isinstance(v, float) else f'{k}={v}'
        for k, v in record.items() if k != 'step')
    logging.info('[%d] %s', step, shown)
    with open(self.path, 'a') as f:
      f.write(json.dumps(record) + '\n')

  def read(self) -> list[dict]:
    """All records written so far (e.g. to draw learning curves)."""
    if not os.path.exists(self.path):
      return []
    with open(self.path) as f:
      return [json.loads(line) for line in f if line.strip()]


class Progress:
  """Steps/s, examples/s and ETA over the time spent inside ``timed()`` blocks."""

  def __init__(self, total_steps: int, batch_size: int, start_step: int = 0):
    self.total_steps = total_steps
    self.batch_size = batch_size
    self.step = start_step
    self._busy_s = 0.0
    self._steps_timed = 0
    self._t0 = None

  def start(self) -> None:
    self._t0 = time.perf_counter()

  def stop(self, steps_done: int) -> None:
    """Ends a timed span in which ``steps_done`` steps ran (call after blocking on them)."""
    self._busy_s += time.perf_counter() - self._t0
    self._steps_timed += steps_done
    self.step += steps_done

  @property
  def steps_per_sec(self) -> float:
    return self._steps_timed / self._busy_s if self._busy_s > 0 else float('nan')

  def summary(self) -> dict:
    rate = self.steps_per_sec
    remaining = max(self.total_steps - self.step, 0)
    eta = remaining / rate if rate and math.isfinite(rate) and rate > 0 else float('nan')
    return {'steps_per_sec': rate, 'examples_per_sec': rate * self.batch_size,
            'eta_s': eta}

  @staticmethod
  def format_eta(seconds: float) -> str:
    if not math.isfinite(seconds):
      return '?'
    seconds = int(seconds)
    return f'{seconds // 3600:d}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}'
