"""The one guarded way both readers touch HDF5 files.

Data flow: ``csi.reader`` (CTW-2020 files) and ``mmwave.reader`` (survey and trajectory
files) open every file as an :class:`H5File` and read through it: listing, dataset
metadata, attribute reads, whole-dataset reads and slice (chunk) reads. Nothing else
in the package reads an HDF5 file it did not write itself.

Two ways a damaged file can hurt, and what this module does about each:

* **Exceptions.** h5py raises ``OSError``, ``RuntimeError``, ``KeyError``, ``ValueError``
  ... for a damaged file, with messages that name neither the file nor what was being
  read. Every h5py call here runs under :func:`guard`, which turns any exception into
  the reader's own error (a :class:`~csiloc_jax.core.errors.InputError` subclass)
  naming the file, the dataset and what was expected.
* **Hangs and crashes.** libhdf5 can loop forever or crash on damaged metadata (a
  zeroed block over the global heap makes reading a string attribute spin inside the
  library with the GIL held: no thread or signal handler of this process can stop it).
  So the first time a process opens a file (identified by path, size, times, inode and
  a hash of both ends, so a file rewritten in place is probed again), :func:`describe`
  has a separate probe process (:mod:`csiloc_jax.core.h5probe`) walk the file's
  metadata under a timeout (:data:`PROBE_TIMEOUT_S`); a file whose walk hangs, crashes
  or fails is refused before this process touches it. Listings and
  dataset metadata then come from the probe's answer; this process reads only
  attributes the probe has read and data whose extent lies inside the file.

Checksums: a dataset written with HDF5's Fletcher-32 filter is verified by the library
on every read; a mismatch is an error that names the dataset as damaged.
"""

from __future__ import annotations

import atexit
import contextlib
import dataclasses
import hashlib
import json
import os
import select
import signal
import subprocess
import sys
import threading
import time
from typing import Any, Iterator

import h5py
import numpy as np

from csiloc_jax.core import errors

# Seconds the probe may spend on one file's metadata. A healthy file takes milliseconds
# (a real CTW-2020 file: well under one second); the environment variable lets tests
# and slow file systems change it.
PROBE_TIMEOUT_S = float(os.environ.get('CSILOC_H5_PROBE_TIMEOUT_S', '60'))
# Seconds the probe process may take to start (an interpreter and h5py), apart.
PROBE_START_S = 60.0
FLETCHER32 = 3  # HDF5's filter id of the Fletcher-32 checksum (h5z.FILTER_FLETCHER32).
# A whole-dataset read may expand a compressed dataset by at most this factor over the
# file's size (deflate's limit is about 1032:1) plus this many bytes: a damaged shape
# that claims more is refused before anything is allocated.
_MAX_EXPANSION = 1100
_MAX_EXTRA_BYTES = 64 << 20
_PROBE_SCRIPT = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'h5probe.py')


def _text(error: BaseException) -> str:
  return ' '.join(str(error).split()) or type(error).__name__


@contextlib.contextmanager
def guard(error: type[errors.InputError], path: str, what: str, expected: str) -> Iterator[None]:
  """Runs an h5py call; any exception becomes ``error`` naming ``path``, ``what`` was
  being read and what was ``expected``. The reader's own errors pass through."""
  try:
    yield
  except errors.InputError:
    raise
  except Exception as e:  # noqa: BLE001  Only h5py calls run inside; all mean a bad file.
    raise error(
      f'{path}: {what} failed ({type(e).__name__}: {_text(e)}); expected {expected}'
    ) from e


# --------------------------------------------------------------------------------------
# The probe process.


class _ProbeFailed(Exception):
  """The probe hung, crashed or could not be started."""


class _Prober:
  """One long-lived probe process per reading process, restarted after a hang."""

  def __init__(self):
    self._lock = threading.Lock()
    self._proc: subprocess.Popen | None = None
    self._pid = None  # The process that started the probe (a fork must start its own).
    self._buffer = b''

  def _start(self) -> None:
    self._proc = subprocess.Popen(
      [sys.executable, '-I', _PROBE_SCRIPT],
      stdin=subprocess.PIPE,
      stdout=subprocess.PIPE,
      stderr=subprocess.DEVNULL,
      close_fds=True,
    )
    self._pid = os.getpid()
    self._buffer = b''
    # The probe says 'ready' once h5py is imported: its start is not the file's time.
    try:
      ready = self._read_line(PROBE_START_S)
    except EOFError:
      ready = None
    if ready != b'"ready"':
      self._stop()
      raise OSError(f'no answer within {PROBE_START_S:.0f} s')

  def _stop(self) -> None:
    if self._proc is not None:
      with contextlib.suppress(OSError):
        self._proc.kill()
      with contextlib.suppress(OSError, subprocess.TimeoutExpired):
        self._proc.wait(timeout=10)
      for stream in (self._proc.stdin, self._proc.stdout):
        with contextlib.suppress(OSError):
          stream.close()
    self._proc = None

  def close(self) -> None:
    with self._lock:
      if self._proc is not None and self._pid == os.getpid():
        with contextlib.suppress(OSError):
          self._proc.stdin.close()
        with contextlib.suppress(subprocess.TimeoutExpired):
          self._proc.wait(timeout=2)
        self._stop()

  def ask(self, path: str, timeout: float) -> dict:
    with self._lock:
      if self._proc is None or self._pid != os.getpid() or self._proc.poll() is not None:
        if self._pid == os.getpid():
          self._stop()
        try:
          self._start()
        except OSError as e:
          raise _ProbeFailed(f'the HDF5 probe process could not start ({_text(e)})') from e
      try:
        self._proc.stdin.write(json.dumps(path).encode() + b'\n')
        self._proc.stdin.flush()
        line = self._read_line(timeout)
      except EOFError:  # The probe ended without an answer: it crashed on this file.
        try:
          code = self._proc.wait(timeout=10)
          how = f'signal {signal.Signals(-code).name}' if code < 0 else f'exit status {code}'
        except (subprocess.TimeoutExpired, ValueError):
          how = 'its output closed'
        self._stop()
        raise _ProbeFailed(f'the HDF5 library crashed reading the metadata ({how})') from None
      except OSError as e:  # A broken pipe: the probe died before it read the path.
        self._stop()
        raise _ProbeFailed(f'the HDF5 probe process failed ({_text(e)})') from e
      if line is None:
        self._stop()
        raise _ProbeFailed(
          f'the HDF5 library did not finish reading the metadata within {timeout:.0f} s '
          '(it loops on some kinds of damage)'
        )
      return json.loads(line)

  def _read_line(self, timeout: float) -> bytes | None:
    """One line from the probe, None on a timeout; EOFError when its output ends."""
    fd = self._proc.stdout.fileno()
    deadline = time.monotonic() + timeout
    while b'\n' not in self._buffer:
      left = deadline - time.monotonic()
      if left <= 0 or not select.select([fd], [], [], left)[0]:
        return None
      chunk = os.read(fd, 1 << 16)
      if not chunk:
        raise EOFError('the probe process ended')
      self._buffer += chunk
    line, self._buffer = self._buffer.split(b'\n', 1)
    return line


_PROBER = _Prober()
_DESCRIBED: dict[tuple, dict] = {}
_DESCRIBED_LOCK = threading.Lock()


# Bytes hashed from each end of a file for its signature (HDF5 keeps most metadata near
# the start, and a file rewritten in place within one timestamp tick keeps its size).
_SIGNATURE_BYTES = 256 << 10


def _signature(path: str) -> tuple:
  """What identifies a file's current contents cheaply: name, size, times, inode and a
  hash of both ends."""
  st = os.stat(path)
  digest = hashlib.sha1()
  with open(path, 'rb') as fh:
    digest.update(fh.read(_SIGNATURE_BYTES))
    if st.st_size > 2 * _SIGNATURE_BYTES:
      fh.seek(-_SIGNATURE_BYTES, os.SEEK_END)
    digest.update(fh.read(_SIGNATURE_BYTES))
  return (
    os.path.realpath(path),
    st.st_size,
    st.st_mtime_ns,
    st.st_ctime_ns,
    st.st_ino,
    digest.hexdigest(),
  )


def describe(path: str, error: type[errors.InputError]) -> dict:
  """The probe's account of ``path`` (cached per path, size and modification time);
  raises ``error`` when the file is missing or the probe failed, hung or crashed."""
  try:
    key = _signature(path)
  except OSError as e:
    raise error(f'{path}: cannot open the file ({_text(e)}); expected an HDF5 file') from e
  with _DESCRIBED_LOCK:
    answer = _DESCRIBED.get(key)
  if answer is None:
    try:
      answer = _PROBER.ask(os.path.abspath(path), PROBE_TIMEOUT_S)
    except _ProbeFailed as e:
      answer = {'failed': str(e)}
    with _DESCRIBED_LOCK:
      _DESCRIBED[key] = answer
  if 'failed' in answer:
    raise error(f'{path}: not a readable HDF5 file: {answer["failed"]}; the file is damaged')
  if 'error' in answer:
    e = answer['error']
    where = f' {e["object"]!r}' if e['object'] is not None else ''
    if e['step'] == 'opening the file':
      raise error(
        f'{path}: not a readable HDF5 file (truncated, damaged or another format): '
        f'{e["type"]}: {e["message"]}'
      )
    raise error(
      f'{path}: {e["step"]}{where} failed ({e["type"]}: {e["message"]}); expected an '
      'intact HDF5 file (its metadata is damaged)'
    )
  return answer


def clear_cache() -> None:
  """Forgets every probe answer (a test rewrites a file within one mtime tick)."""
  with _DESCRIBED_LOCK:
    _DESCRIBED.clear()


# The probe also ends by itself when this process ends (its stdin closes).
atexit.register(_PROBER.close)


# --------------------------------------------------------------------------------------
# The guarded file.


_KINDS = {'group': 'a group', 'other': 'a link to nothing or to another file'}


@dataclasses.dataclass(frozen=True)
class DatasetInfo:
  """What the probe saw of one dataset."""

  name: str
  shape: tuple[int, ...] | None  # None: a null dataspace (no data at all).
  dtype: np.dtype
  layout: str  # 'contiguous', 'chunked', 'compact', 'virtual' or 'other'.
  filters: tuple[int, ...]
  raw: dict

  @property
  def ndim(self) -> int:
    return -1 if self.shape is None else len(self.shape)

  @property
  def nbytes(self) -> int:
    return (
      0 if self.shape is None else int(np.prod(self.shape, dtype=np.int64)) * self.dtype.itemsize
    )

  @property
  def checksummed(self) -> bool:
    """True when the dataset carries a Fletcher-32 checksum (verified on every read)."""
    return FLETCHER32 in self.filters


class H5File:
  """An HDF5 file opened for reading; every failure raises ``error`` naming the file.

  Use as a context manager. Metadata (:meth:`keys`, :meth:`kind`, :meth:`info`) comes
  from the probe; :meth:`read`, :meth:`read_direct` and :meth:`attrs` read the file in
  this process, each under :func:`guard`.
  """

  def __init__(self, path: str, error: type[errors.InputError]):
    self.path = path
    self.error = error
    self._layout = describe(path, error)
    self._file_size = os.path.getsize(path)
    self._checked: set[str] = set()
    with guard(error, path, 'opening the file', 'an HDF5 file'):
      self._f = h5py.File(path, 'r')

  def __enter__(self) -> 'H5File':
    return self

  def __exit__(self, *exc) -> None:
    self.close()

  def close(self) -> None:
    with guard(self.error, self.path, 'closing the file', 'an HDF5 file'):
      self._f.close()

  def keys(self) -> list[str]:
    """Names in the root group, sorted (h5py's order)."""
    return sorted(self._layout['objects'])

  def __contains__(self, name: str) -> bool:
    return name in self._layout['objects']

  def kind(self, name: str) -> str | None:
    """'dataset', 'group', 'other' (a soft link to nothing, an external link) or None."""
    obj = self._layout['objects'].get(name)
    return None if obj is None else obj['kind']

  def info(self, name: str, expected: str = 'a dataset') -> DatasetInfo:
    """Metadata of dataset ``name``; raises unless it is a dataset whose data lies
    inside the file (a shape or address damaged into nonsense is refused here, before
    anything is allocated)."""
    obj = self._layout['objects'].get(name)
    if obj is None:
      raise self.error(f'{self.path}: dataset {name!r} is missing; expected {expected}')
    if obj['kind'] != 'dataset':
      raise self.error(
        f'{self.path}: {name!r} is {_KINDS[obj["kind"]]}, not a dataset; expected {expected}'
      )
    with guard(self.error, self.path, f'dataset {name!r}: reading its dtype', expected):
      dtype = np.dtype(obj['dtype'])
    info = DatasetInfo(
      name=name,
      shape=None if obj['shape'] is None else tuple(obj['shape']),
      dtype=dtype,
      layout=obj['layout'],
      filters=tuple(obj['filters']),
      raw=obj,
    )
    if name not in self._checked:
      self._check_extent(info, expected)
      self._checked.add(name)
    return info

  def _check_extent(self, info: DatasetInfo, expected: str) -> None:
    raw, size = info.raw, self._file_size
    where = f'{self.path}: dataset {info.name!r}'
    if raw['external'] or info.layout not in ('contiguous', 'chunked', 'compact'):
      raise self.error(
        f'{where} is stored as {"external" if raw["external"] else info.layout} data; '
        f'expected {expected} stored in the file itself'
      )
    if info.layout == 'contiguous' and raw.get('offset') is not None:
      end = raw['offset'] + info.nbytes
      if end > size:
        raise self.error(
          f'{where}: its data ({info.nbytes} bytes at offset {raw["offset"]}, shape '
          f'{info.shape}, {info.dtype}) ends past the end of the file ({size} bytes); '
          f'expected {expected} (the file is truncated or its metadata damaged)'
        )
    if info.layout == 'chunked' and raw['chunk_extent'] > size:
      raise self.error(
        f'{where}: a chunk ends at byte {raw["chunk_extent"]}, past the end of the file '
        f'({size} bytes); expected {expected} (the file is truncated or its index damaged)'
      )

  def _check_allocation(self, info: DatasetInfo, nbytes: int, expected: str) -> None:
    limit = _MAX_EXPANSION * self._file_size + _MAX_EXTRA_BYTES
    if nbytes > limit:
      raise self.error(
        f'{self.path}: dataset {info.name!r} claims shape {info.shape} ({nbytes} bytes '
        f'as {info.dtype}) in a file of {self._file_size} bytes; expected {expected} '
        '(its shape is damaged)'
      )

  def _what(self, info: DatasetInfo, selection: Any) -> str:
    part = '' if selection is None else f' [{_describe_selection(selection)}]'
    check = ' (Fletcher-32 checksummed: a failure means damaged data)' if info.checksummed else ''
    return f'reading dataset {info.name!r}{part}{check}'

  def read(self, name: str, expected: str = 'a dataset', selection: Any = None) -> np.ndarray:
    """Dataset ``name`` (or ``selection`` of it) as a numpy array."""
    info = self.info(name, expected)
    if selection is None:
      self._check_allocation(info, info.nbytes, expected)
    with guard(self.error, self.path, self._what(info, selection), expected):
      ds = self._f[name]
      return np.asarray(ds[()] if selection is None else ds[selection])

  def read_direct(self, name: str, out: np.ndarray, selection: Any, expected: str) -> None:
    """Reads ``selection`` of dataset ``name`` into ``out`` (no new allocation)."""
    info = self.info(name, expected)
    with guard(self.error, self.path, self._what(info, selection), expected):
      self._f[name].read_direct(out, selection)

  def attrs(self) -> dict:
    """The root attributes (the probe has read each of them without harm)."""
    out = {}
    for key in self._layout['attrs']:
      with guard(self.error, self.path, f'reading attribute {key!r}', 'a readable attribute'):
        out[key] = self._f.attrs[key]
    return out


def _describe_selection(selection: Any) -> str:
  parts = selection if isinstance(selection, tuple) else (selection,)
  text = []
  for p in parts:
    if isinstance(p, slice):
      text.append(f'{"" if p.start is None else p.start}:{"" if p.stop is None else p.stop}')
    else:
      text.append(str(p))
  return ', '.join(text)
