"""Run bookkeeping shared by both systems: atomic files, fingerprints, finished stages.

Every long stage of a run (a feature cache, a generated data set, a training phase, a
whole run inside a comparison, the mmWave nets) must answer one question when a run is
started again on the same workdir: *is this already done, with these inputs?* Both
systems answer it the same way:

* :func:`fingerprint` hashes what a stage depends on (config sections, file signatures,
  sizes) as canonical JSON;
* :class:`Stage` records a finished stage as ``DIR/NAME.done.json`` holding that
  fingerprint and a small JSON result. The record is written atomically and last, after
  everything the stage produced, so a stage interrupted at any point is simply redone,
  and a stage whose inputs changed is redone rather than trusted.

In a multi-process run (:mod:`csiloc_jax.core.distributed`) every process reads the
records, and only process 0 writes or removes them.

Resuming *inside* a stage (the trainer's epoch checkpoints) is orbax's job
(:mod:`csiloc_jax.core.checkpointing`), not this module's.
"""

from __future__ import annotations

import hashlib
import json
import os
from typing import Any

import numpy as np

from csiloc_jax.core import distributed


def to_json_value(value: Any) -> Any:
  """numpy scalars and arrays as plain Python values (for JSON)."""
  if isinstance(value, (np.generic, np.ndarray)) or hasattr(value, '__array__'):
    arr = np.asarray(value)
    return arr.item() if arr.ndim == 0 else arr.tolist()
  return value


def write_json(path: str, payload: Any) -> None:
  """Writes ``payload`` as JSON through a temporary file and a rename, so a crash never
  leaves a half-written file that a later run would trust."""
  tmp = path + '.tmp'
  with open(tmp, 'w') as f:
    json.dump(payload, f, indent=2, sort_keys=True, default=to_json_value)
  os.replace(tmp, path)


def read_json(path: str) -> Any:
  with open(path) as f:
    return json.load(f)


def file_signature(path: str) -> dict:
  """What identifies a file's contents cheaply: its name, size and modification time."""
  st = os.stat(path)
  return {'name': os.path.basename(path), 'size': st.st_size, 'mtime_ns': st.st_mtime_ns}


def fingerprint(*parts: Any) -> str:
  """A stable hex digest of JSON-able ``parts`` (dict key order does not matter)."""
  blob = json.dumps(parts, sort_keys=True, default=str)
  return hashlib.sha256(blob.encode()).hexdigest()


class Stage:
  """A unit of work whose completion is recorded as ``directory/name.done.json``."""

  def __init__(self, directory: str, name: str, fingerprint_: str):
    self.directory = directory
    self.name = name
    self.fingerprint = fingerprint_
    self.path = os.path.join(directory, f'{name}.done.json')

  def result(self) -> dict | None:
    """The recorded result if the stage finished with the same fingerprint, else None."""
    if not os.path.exists(self.path):
      return None
    try:
      record = read_json(self.path)
    except (OSError, ValueError):
      return None  # An unreadable record is no record: the stage is redone.
    if not isinstance(record, dict) or record.get('fingerprint') != self.fingerprint:
      return None
    return record.get('result', {})

  def finish(self, result: dict | None = None) -> None:
    """Records the stage as done (call after everything it produced is on disk)."""
    if not distributed.is_primary():
      return
    os.makedirs(self.directory, exist_ok=True)
    write_json(self.path, {'fingerprint': self.fingerprint, 'result': result or {}})

  def reset(self) -> None:
    """Forgets a finished stage (before redoing it)."""
    if distributed.is_primary() and os.path.exists(self.path):
      os.remove(self.path)
