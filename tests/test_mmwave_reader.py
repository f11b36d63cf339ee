"""Reading survey and trajectory files: errors name file + dataset, defined behaviours hold."""

import h5py
import numpy as np
import pytest

from csiloc_jax.mmwave import plots
from csiloc_jax.mmwave import reader
from csiloc_jax.mmwave import simulator
from csiloc_jax.mmwave.reader import MeasurementError


def _write(path, **overrides):
  t, m = 6, 4
  data = {
    'aoa': np.zeros((t, m), np.float32),
    'anchor_ap': np.array([0, 0, 1, 1], np.int32),
    'anchor_kind': np.array([0, 1, 0, 1], np.int8),
    'ap_position': np.array([[0.0, 0.0], [3.0, 0.0]], np.float32),
    'time_s': np.arange(t, dtype=np.float64),
    'position': np.zeros((t, 2), np.float32),
  }
  data.update(overrides)
  with h5py.File(path, 'w') as f:
    for k, v in data.items():
      if v is not None:
        f.create_dataset(k, data=v)
  return str(path)


def test_missing_required_dataset_names_file_and_dataset(tmp_path):
  path = _write(tmp_path / 's.h5', anchor_kind=None)
  with pytest.raises(MeasurementError, match=r"s\.h5.*'anchor_kind' is missing"):
    reader.read_measurements(path)


def test_trajectory_needs_increasing_time(tmp_path):
  no_time = _write(tmp_path / 'a.h5', time_s=None)
  with pytest.raises(MeasurementError, match=r'a\.h5.*"time_s" is missing'):
    reader.read_measurements(no_time, require_time=True)
  assert reader.read_measurements(no_time).time_s is None
  back = _write(tmp_path / 'b.h5', time_s=np.array([0, 1, 2, 2, 3, 4], np.float64))
  with pytest.raises(MeasurementError, match='strictly increasing'):
    reader.read_measurements(back)


def test_shape_and_index_errors(tmp_path):
  with pytest.raises(
    MeasurementError,
    match=r"'anchor_ap' has shape \(3,\), expected axis 0 of "
    'length 4',
  ):
    reader.read_measurements(_write(tmp_path / 'a.h5', anchor_ap=np.zeros(3, np.int32)))
  with pytest.raises(MeasurementError, match='must index the 2 rows of "ap_position"'):
    reader.read_measurements(_write(tmp_path / 'b.h5', anchor_ap=np.array([0, 0, 1, 2], np.int32)))
  with pytest.raises(MeasurementError, match='"anchor_kind" must be 0'):
    reader.read_measurements(_write(tmp_path / 'c.h5', anchor_kind=np.array([0, 1, 2, 1], np.int8)))
  with pytest.raises(MeasurementError, match='not a readable HDF5'):
    (tmp_path / 'd.h5').write_text('nope')
    reader.read_measurements(str(tmp_path / 'd.h5'))


def test_aoa_is_wrapped_and_degrees_are_rejected(tmp_path):
  aoa = np.full((6, 4), np.nan, np.float32)
  aoa[0, :3] = [-np.pi, np.float32(np.pi), 2 * np.pi + 0.5]
  m = reader.read_measurements(_write(tmp_path / 'a.h5', aoa=aoa))
  np.testing.assert_allclose(m.aoa[0, :3], [np.pi, np.pi, 0.5], atol=1e-6)
  assert np.isnan(m.aoa[0, 3]) and np.isnan(m.aoa[1:]).all()
  degrees = np.full((6, 4), 90.0, np.float32)
  with pytest.raises(MeasurementError, match='must be radians'):
    reader.read_measurements(_write(tmp_path / 'b.h5', aoa=degrees))
  inf = aoa.copy()
  inf[2, 2] = np.inf
  with pytest.raises(MeasurementError, match='missing paths must be NaN'):
    reader.read_measurements(_write(tmp_path / 'c.h5', aoa=inf))


def test_ground_truth_is_only_read_on_request(tmp_path):
  # A garbage "position" (wrong shape) does not disturb the method's reader...
  path = _write(tmp_path / 'a.h5', position=np.zeros((2, 7), np.float32))
  m = reader.read_measurements(path)
  assert not hasattr(m, 'position')
  # ...but evaluation, which asks for it, is told exactly what is wrong.
  with pytest.raises(MeasurementError, match=r"'position' has shape \(2, 7\)"):
    reader.read_ground_truth(path)
  assert reader.read_measurements(path).region is None  # region is optional.


def test_mismatched_anchors_between_survey_and_trajectory(tmp_path):
  survey = reader.read_measurements(_write(tmp_path / 's.h5'))
  five = reader.read_measurements(
    _write(
      tmp_path / 't.h5',
      aoa=np.zeros((6, 5), np.float32),
      anchor_ap=np.array([0, 0, 1, 1, 1], np.int32),
      anchor_kind=np.array([0, 1, 0, 1, 1], np.int8),
    )
  )
  with pytest.raises(MeasurementError, match='M=4 anchors in the survey but M=5'):
    reader.check_compatible(survey, five)
  kinds = reader.read_measurements(
    _write(tmp_path / 'u.h5', anchor_kind=np.array([0, 1, 1, 0], np.int8))
  )
  with pytest.raises(MeasurementError, match='"anchor_kind" differs'):
    reader.check_compatible(survey, kinds)


def test_foreign_floorplan_attribute_is_ignored_not_trusted(tmp_path):
  # Another simulator writes its own 'floorplan_json': plots must not crash on it.
  paths = simulator.write_scenario(str(tmp_path), seed=0, num_survey=5, num_trajectory_steps=5)
  ours = reader.read_measurements(paths['survey']).floorplan_dict()
  assert ours is not None and len(ours['walls']) > 0
  for foreign in ('{"rooms": [{"polygon": [[0, 0], [1, 0], [1, 1]]}]}', 'not json', '[1, 2]'):
    with h5py.File(paths['survey'], 'a') as f:
      f.attrs['floorplan_json'] = foreign
    assert reader.read_measurements(paths['survey']).floorplan_dict() is None


def test_floor_plot_follows_the_floor_not_the_outliers(tmp_path, monkeypatch):
  # JADE estimates kilometres away must not shrink the floor to a dot.
  saved = {}
  original = plots.core_plots.save

  def keep(fig, path):
    saved['limits'] = fig.axes[0].get_xlim(), fig.axes[0].get_ylim()
    saved['title'] = fig.axes[0].get_title()
    original(fig, path)

  monkeypatch.setattr(plots.core_plots, 'save', keep)
  plots.plot_floor(
    str(tmp_path / 'floor.png'),
    floorplan=None,
    ap_position=np.array([[0.0, 0.0], [10.0, 0.0], [5.0, 8.0]]),
    anchor_truth=None,
    anchor_kind=np.zeros(2, np.int8),
    region_anchors=[(0, np.arange(2), np.array([[1.0, 1.0], [15000.0, -3.0]]))],
  )
  (x0, x1), (y0, y1) = saved['limits']
  assert x1 - x0 < 100 and y1 - y0 < 100
  assert '1 estimates outside this view' in saved['title']
