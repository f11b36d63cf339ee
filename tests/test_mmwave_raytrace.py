"""Ray-traced mmWave files (Sionna RT): schema, determinism, anchors against geometry."""

import json

import h5py
import numpy as np
import pytest

from csiloc_jax.mmwave import floorplan
from csiloc_jax.mmwave import geometry
from csiloc_jax.mmwave import raytrace
from csiloc_jax.mmwave import reader
from csiloc_jax.mmwave import simulator

# Two 6 x 5 m rooms joined by a 1 m door (y 2..3 in the wall x = 6), two APs in the west
# room, one in the east room under a 1 m x 0.8 m metal cabinet.
PLAN = dict(
  floorplan.TWO_ROOM_FLOORPLAN,
  name='two_rooms_cabinet',
  description='the two-room floor with three APs and a metal cabinet',
  aps=[[1.5, 1.2], [4.2, 3.9], [9.0, 1.0]],
  obstacles=[{'box': [8.5, 2.6, 9.5, 3.4], 'material': 'metal'}],
  walk=[[2.0, 2.5], [4.5, 2.5], [6.0, 2.5], [7.5, 2.0], [10.5, 2.0]],
)
# Small and fast: a few dozen positions, few rays (the faces here are large and near).
SIZES = dict(num_survey=15, num_trajectory_steps=12)
SOLVER = dict(samples_per_src=10_000, batch_size=32)


@pytest.fixture(scope='module')
def traced(tmp_path_factory):
  out = tmp_path_factory.mktemp('mmrt')
  summary = raytrace.write_scenario(
    str(out), seed=2, aoa_noise_deg=0.0, floorplan=PLAN, **SIZES, **SOLVER
  )
  return out, summary


def _read(path):
  with h5py.File(path, 'r') as f:
    return {k: f[k][()] for k in f}, dict(f.attrs)


def test_files_follow_the_schema_and_read_back(traced):
  out, summary = traced
  survey, truth = reader.read_measurements(str(out / 'survey.h5'), ground_truth=True)
  trajectory = reader.read_measurements(str(out / 'trajectory.h5'), require_time=True)
  reader.check_compatible(survey, trajectory)
  m = summary['num_anchors']
  assert survey.aoa.shape == (30, m) and trajectory.aoa.shape == (12, m)
  assert truth.position.shape == (30, 2) and truth.anchor_position.shape == (m, 2)
  data, attrs = _read(out / 'survey.h5')
  expected = {
    'aoa': (np.float32, (30, m)),
    'anchor_ap': (np.int32, (m,)),
    'anchor_kind': (np.int8, (m,)),
    'ap_position': (np.float32, (3, 2)),
    'region': (np.int32, (30,)),
    'position': (np.float32, (30, 2)),
    'heading': (np.float32, (30,)),
    'anchor_position': (np.float32, (m, 2)),
  }
  for name, (dtype, shape) in expected.items():
    assert data[name].dtype == dtype and data[name].shape == shape, name
  tdata, _ = _read(out / 'trajectory.h5')
  assert tdata['time_s'].dtype == np.float64 and np.all(np.diff(tdata['time_s']) > 0)
  assert attrs['aoa_noise_deg'] == 0.0 and attrs['frequency_hz'] == 60e9
  assert attrs['seed'] == 2 and attrs['detection_threshold_db'] == 20.0
  assert attrs['detection_reference'] == 'ap' and attrs['aoa_outlier_fraction'] == 0.0
  assert attrs['misassociation_rate'] == 0.0 and attrs['spurious_rate'] == 0.0
  assert 'Sionna RT' in attrs['description'] and attrs['source'] == 'sionna'
  plan = json.loads(attrs['floorplan_json'])
  assert plan['obstacles'] == [{'box': [8.5, 2.6, 9.5, 3.4], 'material': 'metal'}]
  # Direct paths and reflections, every AP heard somewhere; finite where not NaN.
  assert set(np.unique(data['anchor_kind'])) == {0, 1}
  assert set(np.unique(data['anchor_ap'])) == {0, 1, 2}
  for d in (data, tdata):
    aoa = d['aoa'][np.isfinite(d['aoa'])]
    assert aoa.size and np.all(aoa > -np.pi) and np.all(aoa <= np.float32(np.pi))
    assert not np.isinf(d['aoa']).any()
    for k in ('position', 'heading', 'anchor_position', 'ap_position'):
      assert np.all(np.isfinite(d[k])), k
  st = summary['raytrace']
  assert st['samples'] == 42 and st['paths_per_sample'] > 3
  assert st['mismatched'] == 0 and st['unassociated'] == 0
  # Every sample but those hidden behind the cabinet sees an AP directly.
  assert 0 < st['los_path_fraction'] < 1 and 0.8 < st['los_fraction'] <= 1.0


def test_same_seed_same_files(traced, tmp_path):
  out, _ = traced
  raytrace.write_scenario(
    str(tmp_path), seed=2, aoa_noise_deg=0.0, floorplan=PLAN, **SIZES, **SOLVER
  )
  for name in ('survey', 'trajectory'):
    (a, a_attrs), (b, b_attrs) = _read(out / f'{name}.h5'), _read(tmp_path / f'{name}.h5')
    assert a.keys() == b.keys() and a_attrs == b_attrs
    for key in a:
      np.testing.assert_array_equal(a[key], b[key], err_msg=key)


def test_positions_and_walk_are_the_builtin_simulators(traced, tmp_path):
  # Same plan and seed: the same survey, headings and walk; only the paths differ.
  out, _ = traced
  ref = simulator.write_scenario(str(tmp_path), seed=2, aoa_noise_deg=0.0, floorplan=PLAN, **SIZES)
  for name in ('survey', 'trajectory'):
    a, _ = _read(out / f'{name}.h5')
    b, _ = _read(ref[name])
    for key in ('position', 'heading', 'region', 'ap_position') + (
      ('time_s',) if name == 'trajectory' else ()
    ):
      np.testing.assert_array_equal(a[key], b[key], err_msg=key)


def _faces(fp):
  boxes = raytrace.scene_boxes(fp, 0.2)
  return np.concatenate([np.concatenate([b.corners, np.roll(b.corners, -1, 0)], 1) for b in boxes])


def test_every_received_path_points_at_its_anchor(traced):
  out, _ = traced
  fp = floorplan.load_floorplan(PLAN)
  faces = _faces(fp)
  for name in ('survey', 'trajectory'):
    d, _ = _read(out / f'{name}.h5')
    anchors, kind, ap = d['anchor_position'], d['anchor_kind'], d['anchor_ap']
    # Zero noise: AoA = bearing from the client to the anchor minus the heading.
    diff = anchors[None].astype(np.float64) - d['position'][:, None]
    expected = geometry.wrap(np.arctan2(diff[..., 1], diff[..., 0]) - d['heading'][:, None])
    seen = np.isfinite(d['aoa'])
    err = np.abs(geometry.wrap(d['aoa'][seen] - expected[seen]))
    assert np.degrees(err.max()) < 0.5, np.degrees(err.max())
    # Direct anchors are the APs; a virtual anchor is its AP mirrored across the plane
    # of a box face: the midpoint lies on that plane, the offset is along its normal.
    np.testing.assert_allclose(anchors[kind == 0], d['ap_position'][ap[kind == 0]], atol=1e-5)
    for m in np.flatnonzero(kind == 1):
      a = fp.aps[ap[m]]
      mid, normal = (a + anchors[m]) / 2, (anchors[m] - a) / np.linalg.norm(anchors[m] - a)
      t = faces[:, 2:] - faces[:, :2]
      t /= np.linalg.norm(t, axis=-1, keepdims=True)
      r = mid - faces[:, :2]
      on_plane = np.abs(t[:, 0] * r[:, 1] - t[:, 1] * r[:, 0]) < 1e-4
      along_normal = np.abs(np.sum(t * normal, -1)) < 1e-5
      assert np.any(on_plane & along_normal), (m, anchors[m])


def _penetration(p0, p1, boxes):
  """Deepest penetration (metres) of the segment p0 -> p1 into any box (negative: the
  segment stays that far outside)."""
  s = np.linspace(0.0, 1.0, 4000)[:, None]
  pts = p0 + s * (p1 - p0)
  depth = -np.inf
  for b in boxes:
    lo, hi = b.corners.min(0), b.corners.max(0)
    depth = max(depth, np.max(np.min(np.concatenate([pts - lo, hi - pts], -1), -1)))
  return depth


def test_line_of_sight_follows_walls_doors_and_the_cabinet(traced):
  out, _ = traced
  boxes = raytrace.scene_boxes(floorplan.load_floorplan(PLAN), 0.2)
  d, _ = _read(out / 'survey.h5')
  checked = {'clear': 0, 'blocked': 0}
  for m in np.flatnonzero(d['anchor_kind'] == 0):
    ap = d['ap_position'][d['anchor_ap'][m]]
    for t, p in enumerate(d['position']):
      depth = _penetration(p.astype(np.float64), ap.astype(np.float64), boxes)
      if depth < -0.01:
        assert np.isfinite(d['aoa'][t, m]), (t, m)
        checked['clear'] += 1
      elif depth > 0.01:
        assert np.isnan(d['aoa'][t, m]), (t, m)
        checked['blocked'] += 1
  assert checked['clear'] > 20 and checked['blocked'] > 20, checked


def test_hand_placed_clients():
  fp = floorplan.load_floorplan(PLAN)
  prop = raytrace.RaytracedPropagation(
    fp,
    detection_threshold_db=20.0,
    wall_height_m=3.0,
    wall_thickness_m=0.2,
    device_height_m=1.5,
    seed=0,
    association_tolerance_deg=0.1,
    **SOLVER,
  )
  clients = np.array(
    [
      [3.0, 2.0],  # West room: both west APs in sight.
      [10.0, 0.6],  # East room: AP 0 (west) is behind the wall x = 6, not the door.
      [9.0, 4.5],  # Behind the cabinet as seen from AP 2.
      [9.6, 1.6],  # AP 2's path off the cabinet's south face (y = 2.6) arrives.
    ]
  )
  detected, arrival = prop(clients)
  table = prop.table

  def anchor(ap, mirror_y=None):
    for m in range(len(table.ap)):
      if table.ap[m] != ap:
        continue
      if mirror_y is None and table.kind[m] == 0:
        return m
      if mirror_y is not None and table.kind[m] == 1:
        if np.allclose(table.position[m], [fp.aps[ap][0], 2 * mirror_y - fp.aps[ap][1]]):
          return m
    raise AssertionError((ap, mirror_y))

  assert detected[0, anchor(0)] and detected[0, anchor(1)]
  assert not detected[1, anchor(0)] and np.isnan(arrival[1, anchor(0)])
  assert detected[1, anchor(2)]
  assert not detected[2, anchor(2)]
  cabinet = anchor(2, mirror_y=2.6)
  assert detected[3, cabinet]
  bearing = np.arctan2(*(table.position[cabinet] - clients[3])[::-1])
  assert abs(geometry.wrap(arrival[3, cabinet] - bearing)) < 1e-3
  # The wall face behind the cabinet is not reached through it.
  assert not detected[2, anchor(2, mirror_y=4.9)]
  assert prop.statistics()['mismatched'] == 0


def test_sample_detection_keeps_only_paths_near_the_strongest_of_any_ap():
  fp = floorplan.load_floorplan(PLAN)
  kw = dict(
    detection_threshold_db=10.0,
    wall_height_m=3.0,
    wall_thickness_m=0.2,
    device_height_m=1.5,
    seed=0,
    association_tolerance_deg=0.1,
    **SOLVER,
  )
  # Close to one AP and far from the others, in both rooms.
  clients = np.array([[2.0, 2.0], [5.0, 3.5], [9.8, 1.8], [10.5, 4.0]])
  per_ap, arrival = raytrace.RaytracedPropagation(fp, **kw)(clients)
  per_sample, arrival_s = raytrace.RaytracedPropagation(fp, detection_reference='sample', **kw)(
    clients
  )
  # The same paths arrive; one dynamic range for all APs loses some of them.
  np.testing.assert_array_equal(arrival, arrival_s)
  assert not np.any(per_sample & ~per_ap)
  assert per_sample.sum() < per_ap.sum()
  assert per_sample.any(1).all()


def test_scene_keeps_doorways_and_closes_corners():
  boxes = raytrace.scene_boxes(floorplan.load_floorplan(PLAN), 0.2)
  extent = {b.name: (b.corners.min(0), b.corners.max(0)) for b in boxes}
  # Outer wall y = 0 meets x = 0 and x = 12: extended by half the thickness at both ends.
  np.testing.assert_allclose(extent['wall0'][0], [-0.1, -0.1])
  np.testing.assert_allclose(extent['wall0'][1], [12.1, 0.1])
  # Door jambs stay at y = 2 and y = 3: the doorway is 1 m wide as planned.
  assert extent['wall4'][1][1] == pytest.approx(2.0) and extent['wall5'][0][1] == pytest.approx(3.0)
  assert [b.material for b in boxes] == ['concrete'] * 6 + ['metal']
  xml = raytrace.scene_xml(boxes, 3.0)
  assert xml.count('<shape type="cube"') == 7 and 'value="metal"' in xml


def test_bad_arguments_say_what_was_expected(tmp_path):
  kw = dict(floorplan=PLAN, **SIZES, **SOLVER)
  with pytest.raises(ValueError, match='device_height_m'):
    raytrace.write_scenario(str(tmp_path), device_height_m=5.0, **kw)
  with pytest.raises(ValueError, match='wall_thickness_m'):
    raytrace.write_scenario(str(tmp_path), wall_thickness_m=0.0, **kw)
  with pytest.raises(ValueError, match='num_survey'):
    raytrace.write_scenario(str(tmp_path), **dict(kw, num_survey=0))
  with pytest.raises(ValueError, match='neither a built-in plan'):
    raytrace.write_scenario(str(tmp_path), **dict(kw, floorplan='three_rooms'))
  near_wall = dict(PLAN, aps=[[1.5, 0.05], [4.2, 3.9], [9.0, 1.0]])
  with pytest.raises(ValueError, match=r'AP\(s\) lie inside a wall .* inside wall0'):
    raytrace.write_scenario(str(tmp_path), **dict(kw, floorplan=near_wall))
  with pytest.raises(ValueError, match='60 GHz'):
    raytrace.write_scenario(str(tmp_path), **dict(kw, floorplan=dict(PLAN, wall_material='brick')))
  with pytest.raises(ValueError, match='detection_reference'):
    raytrace.write_scenario(str(tmp_path), detection_reference='room', **kw)
