"""Reading and validating mmWave measurement files (the HDF5 schema of docs/schemas.md).

Data flow: ``survey.h5`` / ``trajectory.h5`` (from :mod:`simulator` or any other source)
-> :func:`read_measurements` -> :class:`Measurements` -> features, JADE, nets, tracker.

The method and the evaluation read files through different switches on purpose:
``read_measurements(path, ground_truth=False)`` never opens the ``position``, ``heading``
or ``anchor_position`` datasets, and that is the only way the training path reads a
survey; :func:`read_ground_truth` is called by the evaluation code alone.

Every problem with a file raises :class:`MeasurementError` naming the file, the dataset
and what was expected. Every HDF5 access goes through :class:`csiloc_jax.core.h5io.H5File`
(a probe process walks the metadata first, so a damaged file that would make libhdf5
hang or crash is refused; any h5py error becomes a ``MeasurementError``; datasets
written with a Fletcher-32 checksum are verified on read). Defined behaviours for
imperfect but valid input:

* AoAs are wrapped to (-pi, pi] on read (a value of exactly ``-pi``, or a float32 value
  just past ``pi``, is the same angle); finite values beyond ``4 pi`` in magnitude are
  rejected as not being radians.
* ``region`` is optional; ``time_s`` is required for trajectories only and must increase.
* ``aoa`` may contain any pattern of NaN (paths not received), including all-NaN rows.

Plausibility (docs/schemas.md, 'Robustness'): values outside physical ranges and an
anchor list that contradicts itself (two direct-path anchors of one AP) are refused;
samples whose AoAs hold exact zeros where a damaged (zeroed) block would put them are
counted, logged as a warning and recorded in :attr:`Measurements.validation`.
"""

from __future__ import annotations

import dataclasses
import json
import os

from absl import logging
import numpy as np

from csiloc_jax.core import errors
from csiloc_jax.core import h5io
from csiloc_jax.mmwave import floorplan
from csiloc_jax.mmwave import geometry

REQUIRED = ('aoa', 'anchor_ap', 'anchor_kind', 'ap_position')
GROUND_TRUTH = ('position', 'heading', 'anchor_position')
# Positions (APs, clients, anchors, metres) beyond this distance from the floor's origin
# are not an indoor mmWave deployment: a damaged value, refused.
MAX_COORDINATE_M = 1e4
# A sample (row of ``aoa``) with at least this many AoAs of exactly 0.0 is suspect: a
# measured or simulated angle is never exactly zero twice in one sample, while a zeroed
# block of the file turns a run of values (NaN included) into zeros.
SUSPECT_ZEROS_PER_SAMPLE = 2


class MeasurementError(errors.InputError):
  """A measurement file does not follow the schema (docs/schemas.md)."""


@dataclasses.dataclass(frozen=True)
class Measurements:
  """One survey or trajectory; ground-truth fields stay ``None`` unless asked for."""

  path: str
  aoa: np.ndarray  # [T, M] float32, NaN = path not received.
  anchor_ap: np.ndarray  # [M] int32.
  anchor_kind: np.ndarray  # [M] int8, 0 direct, 1 reflection.
  ap_position: np.ndarray  # [A, 2] float64.
  region: np.ndarray | None = None  # [T] int32.
  time_s: np.ndarray | None = None  # [T] float64.
  attrs: dict = dataclasses.field(default_factory=dict)
  # What the plausibility checks found: ``checksummed`` (every dataset read carried a
  # Fletcher-32 checksum, verified on read) and ``suspect_samples`` (rows of ``aoa``
  # with exact zeros where damage puts them); written to metrics.json.
  validation: dict = dataclasses.field(default_factory=dict)

  @property
  def num_samples(self) -> int:
    return self.aoa.shape[0]

  @property
  def num_anchors(self) -> int:
    return self.aoa.shape[1]

  @property
  def visible(self) -> np.ndarray:
    return np.isfinite(self.aoa)

  def floorplan_dict(self) -> dict | None:
    """The floor plan of a ``floorplan_json`` attribute in this project's format, for
    plots only; ``None`` (with a warning) when it is absent or is not one -- other
    tools write attributes of that name in formats of their own."""
    raw = self.attrs.get('floorplan_json')
    if raw is None:
      return None
    source = f'{self.path}: attribute floorplan_json'
    try:
      if isinstance(raw, bytes):
        raw = raw.decode()
      return floorplan.floorplan_from_dict(json.loads(raw), source=source).to_dict()
    except (ValueError, TypeError, KeyError, AttributeError) as e:
      logging.warning('%s is not a floor plan of this project (%s); plots omit walls', source, e)
      return None


@dataclasses.dataclass(frozen=True)
class GroundTruth:
  """Evaluation-only datasets; any of them may be missing (``None``)."""

  position: np.ndarray | None = None  # [T, 2].
  heading: np.ndarray | None = None  # [T].
  anchor_position: np.ndarray | None = None  # [M, 2].
  region: np.ndarray | None = None  # [T].


def _read(
  f: h5io.H5File, name: str, ndim: int, kind: str, shape: tuple | None = None
) -> np.ndarray:
  """Reads dataset ``name`` checking rank, number kind and (partial) shape; all but the
  number check come from the file's metadata, before any data is read."""
  path = f.path
  want = tuple('?' if s is None else s for s in shape) if shape is not None else None
  expected = f'a {ndim}-D {"integer" if kind == "int" else "numeric"} dataset' + (
    f' of shape {want}' if want is not None else ''
  )
  if name not in f:
    raise MeasurementError(f'{path}: required dataset {name!r} is missing (present: {f.keys()})')
  if f.kind(name) != 'dataset':
    raise MeasurementError(f'{path}: {name!r} must be a dataset, found: {f.kind(name)}')
  info = f.info(name, expected)
  if info.ndim != ndim:
    raise MeasurementError(
      f'{path}: dataset {name!r} must have {ndim} dimension(s), got shape {info.shape}'
    )
  if not np.issubdtype(info.dtype, np.number):
    what = 'integer' if kind == 'int' else 'numeric'
    raise MeasurementError(f'{path}: dataset {name!r} must be {what}, got {info.dtype}')
  if shape is not None:
    for axis, (want_n, got) in enumerate(zip(shape, info.shape)):
      if want_n is not None and want_n != got:
        raise MeasurementError(
          f'{path}: dataset {name!r} has shape {info.shape}, expected axis {axis} of '
          f'length {want_n} (shape {want})'
        )
  arr = f.read(name, expected)
  if kind == 'int':
    if not np.issubdtype(arr.dtype, np.integer):
      if not np.all(np.isfinite(arr)) or np.any(arr != np.round(arr)):
        raise MeasurementError(f'{path}: dataset {name!r} must hold integers')
    if arr.size and np.max(np.abs(arr.astype(np.float64))) >= 2**31:
      raise MeasurementError(f'{path}: dataset {name!r} must hold int32 values')
    arr = arr.astype(np.int64)
  return arr


def _check_coordinates(path: str, name: str, arr: np.ndarray) -> None:
  """Positions in metres: no +-inf, nothing beyond :data:`MAX_COORDINATE_M`."""
  finite = np.isfinite(arr)
  if np.any(np.isinf(arr)):
    raise MeasurementError(f'{path}: dataset {name!r} holds +-inf; expected positions in metres')
  far = finite & (np.abs(np.where(finite, arr, 0.0)) > MAX_COORDINATE_M)
  if far.any():
    rows = np.any(far.reshape(len(arr), -1), axis=1)
    raise MeasurementError(
      f'{path}: dataset {name!r} has {int(rows.sum())} row(s) beyond '
      f'{MAX_COORDINATE_M:.0f} m (first: row {int(np.argmax(rows))}, '
      f'{arr[int(np.argmax(rows))].tolist()}); expected positions in metres on one floor '
      '(the values are damaged)'
    )


def _check_anchor_pattern(path: str, anchor_ap: np.ndarray, anchor_kind: np.ndarray) -> None:
  """An AP has one line-of-sight path: two direct-path anchors of one AP mean the
  anchor list is damaged (or the file does not follow the schema)."""
  aps, counts = np.unique(anchor_ap[anchor_kind == 0], return_counts=True)
  if np.any(counts > 1):
    bad = {int(a): int(c) for a, c in zip(aps, counts) if c > 1}
    raise MeasurementError(
      f'{path}: datasets "anchor_ap"/"anchor_kind" give {len(bad)} AP(s) more than one '
      f'direct-path anchor (AP: count {bad}); expected at most one anchor_kind 0 per AP'
    )


def _suspect_zero_samples(aoa: np.ndarray) -> int:
  """Rows of ``aoa`` with :data:`SUSPECT_ZEROS_PER_SAMPLE` or more exact zeros."""
  return int(np.sum(np.sum(aoa == 0.0, axis=1) >= SUSPECT_ZEROS_PER_SAMPLE))


def read_measurements(
  path: str, *, ground_truth: bool = False, require_time: bool = False
) -> Measurements | tuple[Measurements, GroundTruth]:
  """Reads and validates one survey or trajectory file.

  Args:
    path: the HDF5 file.
    ground_truth: also return a :class:`GroundTruth` (evaluation code only).
    require_time: demand a ``time_s`` dataset (trajectories).

  Returns:
    ``Measurements``, or ``(Measurements, GroundTruth)`` when ``ground_truth``.
  """
  if not os.path.isfile(path):
    raise MeasurementError(f'{path}: no such measurement file')
  with h5io.H5File(path, MeasurementError) as f:
    raw_aoa = _read(f, 'aoa', 2, 'float')
    t, m = raw_aoa.shape
    if m == 0:
      raise MeasurementError(f'{path}: dataset "aoa" has no anchors (shape {raw_aoa.shape})')
    anchor_ap = _read(f, 'anchor_ap', 1, 'int', (m,))
    anchor_kind = _read(f, 'anchor_kind', 1, 'int', (m,))
    ap_position = _read(f, 'ap_position', 2, 'float', (None, 2)).astype(np.float64)
    num_aps = len(ap_position)
    if np.any(anchor_ap < 0) or np.any(anchor_ap >= num_aps):
      raise MeasurementError(
        f'{path}: dataset "anchor_ap" must index the {num_aps} rows of '
        f'"ap_position"; got values in [{anchor_ap.min()}, '
        f'{anchor_ap.max()}]'
      )
    if not np.all(np.isin(anchor_kind, (0, 1))):
      raise MeasurementError(
        f'{path}: dataset "anchor_kind" must be 0 (direct) or 1 '
        f'(reflection), got {sorted(set(anchor_kind.tolist()))}'
      )
    _check_anchor_pattern(path, anchor_ap, anchor_kind)
    if not np.all(np.isfinite(ap_position)):
      raise MeasurementError(f'{path}: dataset "ap_position" must be finite')
    _check_coordinates(path, 'ap_position', ap_position)
    # Range checks on the values as stored: a float64 value beyond float32's range is
    # a wrong value, not an infinity.
    finite = np.isfinite(raw_aoa)
    if np.any(np.isinf(raw_aoa)):
      raise MeasurementError(f'{path}: dataset "aoa" holds +-inf; missing paths must be NaN')
    if finite.any() and np.max(np.abs(raw_aoa[finite])) > 4 * np.pi:
      raise MeasurementError(
        f'{path}: dataset "aoa" must be radians in (-pi, pi]; found '
        f'|value| up to {np.max(np.abs(raw_aoa[finite])):.4g}'
      )
    x = raw_aoa.astype(np.float32).astype(np.float64)
    # float32(pi) is a hair above pi; it means pi, not -pi + 1e-7.
    x = np.where((x > np.pi) & (x <= np.pi + 1e-6), np.pi, x)
    aoa = np.where(finite, geometry.wrap(x), np.nan).astype(np.float32)

    region = None
    if 'region' in f:
      region = _read(f, 'region', 1, 'int', (t,)).astype(np.int32)
      if np.any(region < 0):
        raise MeasurementError(f'{path}: dataset "region" must be >= 0')
    time_s = None
    if 'time_s' in f:
      time_s = _read(f, 'time_s', 1, 'float', (t,)).astype(np.float64)
      if not np.all(np.isfinite(time_s)) or np.any(np.diff(time_s) <= 0):
        raise MeasurementError(f'{path}: dataset "time_s" must be finite and strictly increasing')
    elif require_time:
      raise MeasurementError(
        f'{path}: required dataset "time_s" is missing (a trajectory '
        f'needs timestamps; present: {f.keys()})'
      )
    attrs = {k: (v.decode() if isinstance(v, bytes) else v) for k, v in f.attrs().items()}
    read = [n for n in (*REQUIRED, 'region', 'time_s') if n in f]
    suspect = _suspect_zero_samples(raw_aoa)
    if suspect:
      logging.warning(
        '%s: %d of %d samples have %d or more AoAs of exactly 0.0 in dataset "aoa", as a '
        'zeroed (damaged) block leaves them; they are used as read',
        path,
        suspect,
        t,
        SUSPECT_ZEROS_PER_SAMPLE,
      )
    meas = Measurements(
      path=path,
      aoa=aoa,
      anchor_ap=anchor_ap.astype(np.int32),
      anchor_kind=anchor_kind.astype(np.int8),
      ap_position=ap_position,
      region=region,
      time_s=time_s,
      attrs=attrs,
      validation={
        'checksummed': all(f.info(n).checksummed for n in read),
        'num_samples': t,
        'suspect_samples': suspect,
      },
    )
    if not ground_truth:
      return meas
    truth = {}
    for name, ndim, shape in (
      ('position', 2, (t, 2)),
      ('heading', 1, (t,)),
      ('anchor_position', 2, (m, 2)),
    ):
      if name in f:
        truth[name] = _read(f, name, ndim, 'float', shape).astype(np.float64)
        if name == 'heading':
          if np.any(np.isinf(truth[name])):
            raise MeasurementError(f'{path}: dataset "heading" holds +-inf; expected radians')
        else:
          _check_coordinates(path, name, truth[name])
    return meas, GroundTruth(region=region, **truth)


def read_ground_truth(path: str) -> GroundTruth:
  """Evaluation-only datasets of a file (``None`` for those it lacks)."""
  return read_measurements(path, ground_truth=True)[1]


def check_compatible(survey: Measurements, trajectory: Measurements) -> None:
  """Survey and trajectory must describe the same anchors: same M, APs and kinds."""
  where = f'survey {survey.path} vs trajectory {trajectory.path}'
  if survey.num_anchors != trajectory.num_anchors:
    raise MeasurementError(
      f'{where}: dataset "aoa" has M={survey.num_anchors} anchors in the survey but '
      f'M={trajectory.num_anchors} in the trajectory; both files must list the same '
      'anchors in the same order'
    )
  if not np.array_equal(survey.anchor_ap, trajectory.anchor_ap):
    raise MeasurementError(f'{where}: dataset "anchor_ap" differs between the files')
  if not np.array_equal(survey.anchor_kind, trajectory.anchor_kind):
    raise MeasurementError(f'{where}: dataset "anchor_kind" differs between the files')
  if survey.ap_position.shape != trajectory.ap_position.shape or not np.allclose(
    survey.ap_position, trajectory.ap_position, atol=1e-4
  ):
    raise MeasurementError(f'{where}: dataset "ap_position" differs between the files')
