"""Ray-traced mmWave files (Sionna RT): schema, determinism, anchors against geometry."""

import h5py
import numpy as np
import pytest

from csiloc_jax.mmwave import geometry
from csiloc_jax.mmwave import raytrace
from csiloc_jax.mmwave import reader

# Two 6 x 5 m rooms joined by a 1 m door, two APs each.
PLAN = {
  'name': 'two_rooms',
  'walls': [
    [0.0, 0.0, 12.0, 0.0],
    [0.0, 5.0, 12.0, 5.0],
    [0.0, 0.0, 0.0, 5.0],
    [12.0, 0.0, 12.0, 5.0],
    [6.0, 0.0, 6.0, 2.0],
    [6.0, 3.0, 6.0, 5.0],
  ],
  'rooms': [
    {'name': 'west', 'box': [0.0, 0.0, 6.0, 5.0]},
    {'name': 'east', 'box': [6.0, 0.0, 12.0, 5.0]},
  ],
  'aps': [[1.5, 1.2], [4.2, 3.9], [7.4, 1.4], [10.6, 3.6]],
  'walk': [[2.0, 2.5], [4.5, 2.5], [6.0, 2.5], [8.0, 2.5], [10.0, 2.0]],
}
KW = dict(
  floorplan=PLAN,
  num_survey=12,
  num_trajectory_steps=10,
  samples_per_src=20_000,
  batch_size=64,
)


@pytest.fixture(scope='module')
def traced(tmp_path_factory):
  out = tmp_path_factory.mktemp('mmrt')
  return out, raytrace.write_scenario(str(out), seed=2, aoa_noise_deg=0.0, **KW)


def test_schema_and_reader(traced):
  out, summary = traced
  survey, truth = reader.read_measurements(str(out / 'survey.h5'), ground_truth=True)
  trajectory = reader.read_measurements(str(out / 'trajectory.h5'), require_time=True)
  assert survey.aoa.shape == (24, summary['num_anchors'])
  assert trajectory.aoa.shape[0] == 10
  with h5py.File(out / 'survey.h5', 'r') as f:
    assert f['aoa'].dtype == np.float32 and f['anchor_kind'].dtype == np.int8
    assert f.attrs['source'] == 'sionna' and 'Sionna RT' in f.attrs['description']
    aoa = f['aoa'][()]
    kind = f['anchor_kind'][()]
  finite = aoa[np.isfinite(aoa)]
  assert finite.size > 0 and np.all(np.abs(finite) <= np.pi)
  assert set(np.unique(kind)) == {0, 1}  # direct paths and reflections
  st = summary['raytrace']
  assert st['paths_per_position'] > 2 and st['los'] > 0
  assert truth.position.shape == (24, 2)


def test_every_path_points_at_its_anchor(traced):
  # Zero noise: the traced angle of arrival minus the heading is the bearing to the
  # anchor (the AP, or its mirror across the reflecting wall face).
  out, _ = traced
  for name in ('survey', 'trajectory'):
    with h5py.File(out / f'{name}.h5', 'r') as f:
      aoa, pos, head = f['aoa'][()], f['position'][()], f['heading'][()]
      anchors = f['anchor_position'][()]
    d = anchors[None] - pos[:, None].astype(np.float64)
    expected = geometry.wrap(np.arctan2(d[..., 1], d[..., 0]) - head[:, None])
    seen = np.isfinite(aoa)
    err = np.abs(geometry.wrap(aoa[seen] - expected[seen]))
    assert np.degrees(err.max()) < 0.5, np.degrees(err.max())


def test_walls_block_and_line_of_sight_arrives(traced):
  out, _ = traced
  with h5py.File(out / 'survey.h5', 'r') as f:
    aoa, pos = f['aoa'][()], f['position'][()]
    anchor_ap, kind = f['anchor_ap'][()], f['anchor_kind'][()]
  aps = np.asarray(PLAN['aps'])
  for t, p in enumerate(pos):
    for m in np.flatnonzero(kind == 0):
      ap = aps[anchor_ap[m]]
      same_room = (p[0] < 6) == (ap[0] < 6)
      # Different rooms: the wall x = 6 blocks the direct path unless it runs through
      # the door (y in 2..3 where it crosses x = 6).
      y_at_wall = p[1] + (ap[1] - p[1]) * (6 - p[0]) / (ap[0] - p[0])
      through_door = 2.0 < y_at_wall < 3.0
      if same_room:
        assert np.isfinite(aoa[t, m]), (t, m)
      elif not through_door:
        assert np.isnan(aoa[t, m]), (t, m)


def test_deterministic(traced, tmp_path):
  out, _ = traced
  raytrace.write_scenario(str(tmp_path), seed=2, aoa_noise_deg=0.0, **KW)
  for name in ('survey', 'trajectory'):
    with h5py.File(out / f'{name}.h5', 'r') as a, h5py.File(tmp_path / f'{name}.h5', 'r') as b:
      for key in a:
        np.testing.assert_array_equal(a[key][()], b[key][()], err_msg=key)


def test_bad_arguments(tmp_path):
  with pytest.raises(ValueError, match='device_height_m'):
    raytrace.write_scenario(str(tmp_path), device_height_m=5.0, **KW)
  with pytest.raises(ValueError, match='num_survey'):
    raytrace.write_scenario(str(tmp_path), **dict(KW, num_survey=0))
