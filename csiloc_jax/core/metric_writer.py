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

from csiloc_jax.core import config_utils
from csiloc_jax.core import distributed
from csiloc_jax.core import runs


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
    handler.setFormatter(
      std_logging.Formatter('%(asctime)s %(levelname)s %(message)s', '%Y-%m-%d %H:%M:%S')
    )
    logger.addHandler(handler)
  quiet_orbax()
  if logging.get_verbosity() < logging.INFO:
    logging.set_verbosity(logging.INFO)
  return path


def start_run(config, workdir: str) -> tuple[str, 'MetricWriter']:
  """What every run does first: an absolute workdir with ``config.json``, absl lines
  also in ``log.txt``, the config logged; returns ``(workdir, writer)``. In a
  multi-process run process 0 writes these, and process N logs to ``log.processN.txt``."""
  workdir = os.path.abspath(workdir)
  os.makedirs(workdir, exist_ok=True)
  if distributed.is_primary():
    config_utils.write_config(config, workdir)
    log_to_file(workdir)
  else:
    log_to_file(workdir, f'log.process{distributed.process_index()}.txt')
  logging.info('config:\n%s', config)
  return workdir, MetricWriter(workdir)


class MetricWriter:
  """Writes scalars to the absl log and to a JSONL file in ``workdir`` (the file on
  process 0 alone in a multi-process run)."""

  def __init__(self, workdir: str, filename: str = 'metrics.jsonl'):
    os.makedirs(workdir, exist_ok=True)
    self.path = os.path.join(workdir, filename)

  def write(self, step: int, scalars: Mapping[str, Any], **tags: Any) -> None:
    record = {'step': int(step), **{k: runs.to_json_value(v) for k, v in tags.items()}}
    record.update({k: runs.to_json_value(v) for k, v in scalars.items()})
    shown = ', '.join(
      f'{k}={v:.5g}' if isinstance(v, float) else f'{k}={v}'
      for k, v in record.items()
      if k != 'step'
    )
    logging.info('[%d] %s', step, shown)
    if not distributed.is_primary():
      return
    with open(self.path, 'a') as f:
      f.write(json.dumps(record) + '\n')

  def forget_after(self, phase: str, epoch: int) -> int:
    """Drops the records of ``phase`` with an epoch after ``epoch``; returns how many.

    A resumed phase continues after its last checkpoint and logs the epochs that
    followed it again (a run killed between logging an epoch and checkpointing it, or
    before the first checkpoint of a ``checkpoint_every_secs`` interval): their first
    records go, so every epoch is logged once. The file is rewritten atomically.
    """
    records = self.read()
    keep = [r for r in records if not (r.get('phase') == phase and r.get('epoch', -1) > epoch)]
    if len(keep) < len(records) and distributed.is_primary():
      with open(self.path + '.tmp', 'w') as f:
        f.writelines(json.dumps(r) + '\n' for r in keep)
      os.replace(self.path + '.tmp', self.path)
    return len(records) - len(keep)

  def read(self) -> list[dict]:
    """All records written so far (e.g. to draw learning curves)."""
    if not os.path.exists(self.path):
      return []
    with open(self.path) as f:
      return [json.loads(line) for line in f if line.strip()]


class Progress:
  """Rate, throughput and ETA of a long loop over ``total`` units, for every loop of the
  package: training steps, generated samples, preprocessed samples.

  Only the time the caller says was spent on the work counts: a training loop brackets
  its steps with :meth:`start` / :meth:`stop` so evaluation and checkpointing do not
  distort the throughput; a loop that is all work calls :meth:`update` after each piece.
  """

  def __init__(
    self,
    total: int,
    *,
    done: int = 0,
    unit: str = 'steps',
    batch_size: int | None = None,
    name: str = '',
    log_every_s: float = 10.0,
  ):
    self.total = total
    self.unit = unit
    self.batch_size = batch_size
    self.name = name
    self.log_every_s = log_every_s
    self.step = done
    self.nbytes = 0
    self._busy_s = 0.0
    self._units_timed = 0
    self._t0 = None
    self._last = time.perf_counter()
    self._last_log = self._last

  def start(self) -> None:
    self._t0 = time.perf_counter()

  def stop(self, units_done: int, nbytes: int = 0) -> None:
    """Ends a timed span in which ``units_done`` units ran (call after blocking on them)."""
    now = time.perf_counter()
    self._busy_s += now - self._t0
    self._units_timed += units_done
    self.step += units_done
    self.nbytes += nbytes
    self._last = now

  def update(self, units_done: int, nbytes: int = 0) -> None:
    """Counts ``units_done`` more units, timed since the previous update (or creation)."""
    self._t0 = self._last
    self.stop(units_done, nbytes)

  @property
  def elapsed_s(self) -> float:
    return self._busy_s

  @property
  def rate(self) -> float:
    """Units per second over the timed spans."""
    return self._units_timed / self._busy_s if self._busy_s > 0 else float('nan')

  @property
  def steps_per_sec(self) -> float:
    return self.rate

  def summary(self) -> dict:
    """``{unit}_per_sec``, ``eta_s``, plus ``examples_per_sec`` when a batch size was
    given and ``mb_per_sec`` when bytes were counted."""
    rate = self.rate
    remaining = max(self.total - self.step, 0)
    ok = math.isfinite(rate) and rate > 0
    out = {f'{self.unit}_per_sec': rate, 'eta_s': remaining / rate if ok else float('nan')}
    if self.batch_size is not None:
      out['examples_per_sec'] = rate * self.batch_size
    if self.nbytes:
      out['mb_per_sec'] = self.nbytes / 1e6 / self._busy_s if self._busy_s > 0 else float('nan')
    return out

  def line(self) -> str:
    """``name: 12/100 samples, 3.1 samples/s, 4.0 MB/s, ETA 0:00:28``."""
    s = self.summary()
    parts = [f'{self.step}/{self.total} {self.unit}', f'{self.rate:.1f} {self.unit}/s']
    if 'examples_per_sec' in s:
      parts.append(f'{s["examples_per_sec"]:.0f} examples/s')
    if 'mb_per_sec' in s:
      parts.append(f'{s["mb_per_sec"]:.1f} MB/s')
    parts.append(f'ETA {self.format_eta(s["eta_s"])}')
    return (f'{self.name}: ' if self.name else '') + ', '.join(parts)

  def log(self, force: bool = False) -> None:
    """Logs :meth:`line` if ``log_every_s`` passed since the last one (or ``force``)."""
    now = time.perf_counter()
    if force or self.step >= self.total or now - self._last_log >= self.log_every_s:
      logging.info('%s', self.line())
      self._last_log = now

  @staticmethod
  def format_eta(seconds: float) -> str:
    if not math.isfinite(seconds):
      return '?'
    seconds = int(seconds)
    return f'{seconds // 3600:d}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}'
