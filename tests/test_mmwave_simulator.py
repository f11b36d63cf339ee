"""The indoor simulator: mirror formula, path visibility, detection, and the written files."""

import json

import h5py
import numpy as np
import pytest

from csiloc_jax.core import config_utils
from csiloc_jax.mmwave import floorplan
from csiloc_jax.mmwave import geometry
from csiloc_jax.mmwave import simulator


def test_mirror_formula_matches_hand_computed_images():
  # Across x = 3 (normal (1, 0)): (1, 2) -> (5, 2); across y = 0: (1, 2) -> (1, -2).
  np.testing.assert_allclose(
    simulator.mirror([1.0, 2.0], np.array([3.0, 0.0]), np.array([1.0, 0.0])), [5.0, 2.0]
  )
  np.testing.assert_allclose(
    simulator.mirror([1.0, 2.0], np.array([0.0, 0.0]), np.array([0.0, 1.0])), [1.0, -2.0]
  )
  # Oblique line x = y: (2, 0) -> (0, 2); the midpoint lies on the line and the segment
  # joining point and image is along the normal.
  n = np.array([1.0, -1.0]) / np.sqrt(2)
  img = simulator.mirror([2.0, 0.0], np.zeros(2), n)
  np.testing.assert_allclose(img, [0.0, 2.0], atol=1e-12)


def test_collinear_segments_form_one_reflecting_line():
  fp = floorplan.load_floorplan()
  lines = simulator.wall_lines(fp.walls)
  # 13 segments (doorways split walls) but 7 distinct lines: y=0, 6, 12 and x=0, 8, 16, 24.
  assert len(fp.walls) == 13
  assert len(lines.normal) == 7
  table = simulator.anchor_table(fp, lines)
  assert np.sum(table.kind == 0) == len(fp.aps) == 18
  assert np.sum(table.kind == 1) == 18 * 7


def _one_room_with_pillar():
  # One 10 x 10 room, an interior wall segment from (5, 2) to (5, 6), a door-like gap in
  # the top wall between x = 4 and x = 6.
  return floorplan.floorplan_from_dict(
    {
      'walls': [
        [0, 0, 10, 0],
        [0, 10, 4, 10],
        [6, 10, 10, 10],
        [0, 0, 0, 10],
        [10, 0, 10, 10],
        [5, 2, 5, 6],
      ],
      'rooms': [{'box': [0, 0, 10, 10]}],
      'aps': [[2.0, 4.0]],
      'walk': [[1, 1], [2, 2]],
    }
  )


def test_visibility_blocked_legs_and_specular_point_off_segment():
  fp = _one_room_with_pillar()
  lines = simulator.wall_lines(fp.walls)
  table = simulator.anchor_table(fp, lines)

  def anchor(kind, line_y=None, line_x=None):
    for i in range(len(table.kind)):
      if table.kind[i] != kind:
        continue
      if kind == 0:
        return i
      n, c = lines.normal[table.line[i]], lines.offset[table.line[i]]
      if line_y is not None and abs(n[1]) > 0.99 and abs(c * n[1] - line_y) < 1e-9:
        return i
      if line_x is not None and abs(n[0]) > 0.99 and abs(c * n[0] - line_x) < 1e-9:
        return i
    raise AssertionError('anchor not found')

  los, top, bottom = anchor(0), anchor(1, line_y=10.0), anchor(1, line_y=0.0)
  pillar = anchor(1, line_x=5.0)
  positions = np.array(
    [
      [8.0, 4.0],  # Behind the pillar: LoS blocked.
      [2.0, 8.0],  # Top reflection of AP (2, 4) off y = 10 hits x = 2: on the wall.
      [6.0, 8.0],  # Top reflection point inside the 4..6 gap: no path.
      [8.0, 9.0],  # Client right of the pillar line; AP left: no pillar reflection.
    ]
  )
  det, power = simulator.trace_paths(
    fp, table, lines, positions, reflection_loss_db=6.0, detection_threshold_db=100.0
  )
  assert not det[0, los]
  assert det[1, los] and det[1, top]
  # Specular point for client (6, 8): image (2, 16); the segment crosses y = 10 at x = 4.5.
  assert not det[2, top]
  # Bottom reflection for (2, 8): straight down x = 2, clear. For (6, 8) the leg to the
  # specular point (3.33, 0) crosses the pillar at (5, 5): blocked.
  assert det[1, bottom]
  assert not det[2, bottom]
  assert not det[3, pillar]
  # Power: free-space over the unfolded length plus the reflection loss.
  length = np.linalg.norm(table.position[top] - positions[1])
  assert power[1, top] == pytest.approx(-20 * np.log10(length) - 6.0)


def test_detection_threshold_is_relative_to_the_strongest_path_of_the_ap():
  fp = _one_room_with_pillar()
  lines = simulator.wall_lines(fp.walls)
  table = simulator.anchor_table(fp, lines)
  pos = np.array([[2.5, 4.5]])
  det0, power = simulator.trace_paths(
    fp, table, lines, pos, reflection_loss_db=6.0, detection_threshold_db=0.0
  )
  assert det0.sum() == 1 and det0[0, np.argmax(power[0])]
  det_all, _ = simulator.trace_paths(
    fp, table, lines, pos, reflection_loss_db=6.0, detection_threshold_db=200.0
  )
  assert det_all.sum() > 3


@pytest.fixture(scope='module')
def scenario(tmp_path_factory):
  out = tmp_path_factory.mktemp('scene')
  summary = simulator.write_scenario(
    str(out),
    seed=3,
    aoa_noise_deg=0.0,
    num_survey=40,
    num_trajectory_steps=50,
    floorplan=floorplan.TWO_ROOM_FLOORPLAN,
  )
  return summary


def test_files_follow_the_b2_schema(scenario):
  with h5py.File(scenario['survey'], 'r') as f:
    t, m = f['aoa'].shape
    assert (t, m) == (80, scenario['num_anchors'])
    expected = {
      'aoa': (np.float32, (t, m)),
      'anchor_ap': (np.int32, (m,)),
      'anchor_kind': (np.int8, (m,)),
      'ap_position': (np.float32, (6, 2)),
      'region': (np.int32, (t,)),
      'position': (np.float32, (t, 2)),
      'heading': (np.float32, (t,)),
      'anchor_position': (np.float32, (m, 2)),
    }
    for name, (dtype, shape) in expected.items():
      assert f[name].dtype == dtype and f[name].shape == shape, name
    assert f.attrs['aoa_noise_deg'] == 0.0 and f.attrs['frequency_hz'] == 60e9
    assert 'survey' in f.attrs['description']
    aoa = f['aoa'][()]
    finite = np.isfinite(aoa)
    assert 0 < finite.mean() < 1  # Some paths missing, as NaN.
    assert np.all(aoa[finite] > -np.pi) and np.all(aoa[finite] <= np.float32(np.pi))
    assert set(np.unique(f['region'][()])) == {0, 1}
  with h5py.File(scenario['trajectory'], 'r') as f:
    assert f['time_s'].dtype == np.float64 and f['time_s'].shape == (50,)
    assert np.all(np.diff(f['time_s'][()]) > 0)
    assert json.loads(f.attrs['floorplan_json'])['name'] == 'two_rooms'


def test_noiseless_aoa_is_anchor_bearing_minus_heading(scenario):
  with h5py.File(scenario['survey'], 'r') as f:
    aoa, pos, head = f['aoa'][()], f['position'][()], f['heading'][()]
    anchors, kind, ap = f['anchor_position'][()], f['anchor_kind'][()], f['anchor_ap'][()]
    ap_pos = f['ap_position'][()]
  d = anchors[None] - pos[:, None]
  expected = geometry.wrap(np.arctan2(d[..., 1], d[..., 0]) - head[:, None])
  finite = np.isfinite(aoa)
  diff = geometry.wrap(aoa[finite] - expected[finite])
  assert np.max(np.abs(diff)) < 1e-5
  # Direct-path anchors sit on their APs.
  np.testing.assert_allclose(anchors[kind == 0], ap_pos[ap[kind == 0]], atol=1e-6)
  # Anchor order is shuffled: the file does not list all direct paths first.
  assert not np.all(np.diff(kind.astype(int)) >= 0)


def test_trajectory_walks_through_every_room_at_walking_speed(tmp_path):
  summary = simulator.write_scenario(str(tmp_path), seed=1, num_survey=5)
  assert summary['num_trajectory_steps'] == 388
  with h5py.File(summary['trajectory'], 'r') as f:
    pos, t, region = f['position'][()], f['time_s'][()], f['region'][()]
  speed = np.linalg.norm(np.diff(pos, axis=0), axis=-1) / np.diff(t)
  assert 0.6 < speed.mean() < 1.4 and speed.max() < 2.0
  assert set(region.tolist()) == set(range(6))


def test_scenario_is_deterministic_in_the_seed(tmp_path):
  a = simulator.write_scenario(
    str(tmp_path / 'a'),
    seed=5,
    num_survey=10,
    num_trajectory_steps=20,
    floorplan=floorplan.TWO_ROOM_FLOORPLAN,
  )
  b = simulator.write_scenario(
    str(tmp_path / 'b'),
    seed=5,
    num_survey=10,
    num_trajectory_steps=20,
    floorplan=floorplan.TWO_ROOM_FLOORPLAN,
  )
  with h5py.File(a['survey'], 'r') as fa, h5py.File(b['survey'], 'r') as fb:
    np.testing.assert_array_equal(fa['aoa'][()], fb['aoa'][()])


def test_floorplan_from_json_file_and_bad_plans(tmp_path):
  path = tmp_path / 'plan.json'
  path.write_text(json.dumps(floorplan.TWO_ROOM_FLOORPLAN))
  fp = floorplan.load_floorplan(str(path))
  assert fp.num_rooms == 2 and fp.room_of(np.array([[7.0, 1.0]]))[0] == 1
  bad = dict(floorplan.TWO_ROOM_FLOORPLAN, aps=[[50.0, 50.0]])
  with pytest.raises(ValueError, match='outside every room'):
    floorplan.floorplan_from_dict(bad)
  with pytest.raises(ValueError, match="missing key 'walls'"):
    floorplan.floorplan_from_dict(
      {k: v for k, v in floorplan.TWO_ROOM_FLOORPLAN.items() if k != 'walls'}
    )


def _room_with_cabinet(**extra):
  # One 10 x 10 room, one AP at (5, 2), a 2 m x 1 m cabinet centred at (5, 5).
  return dict(
    {
      'name': 'cabinet',
      'walls': [[0, 0, 10, 0], [0, 10, 10, 10], [0, 0, 0, 10], [10, 0, 10, 10]],
      'rooms': [{'box': [0, 0, 10, 10]}],
      'aps': [[5.0, 2.0]],
      'walk': [[1, 1], [9, 1], [9, 9]],
      'obstacles': [{'box': [4.0, 4.5, 6.0, 5.5]}],
    },
    **extra,
  )


def test_obstacle_fields_validate_and_round_trip(tmp_path):
  fp = floorplan.floorplan_from_dict(_room_with_cabinet(wall_material='plasterboard'))
  assert fp.obstacle_materials == ('metal',) and fp.wall_material == 'plasterboard'
  # Four sides per obstacle join the walls as opaque, reflecting segments.
  assert fp.segments.shape == (8, 4)
  np.testing.assert_array_equal(fp.segments[4], [4.0, 4.5, 6.0, 4.5])
  again = floorplan.floorplan_from_dict(json.loads(json.dumps(fp.to_dict())))
  np.testing.assert_array_equal(again.obstacles, fp.obstacles)
  assert again.obstacle_materials == fp.obstacle_materials and again.wall_material == 'plasterboard'
  # Without obstacles nothing changes: the plan's JSON keeps its keys, segments = walls.
  plain = floorplan.load_floorplan()
  assert plain.segments is plain.walls
  assert set(plain.to_dict()) == {'name', 'description', 'walls', 'aps', 'walk', 'rooms'}
  # Plans by name.
  assert floorplan.load_floorplan('two_rooms').name == 'two_rooms'
  with pytest.raises(ValueError, match='neither a built-in plan'):
    floorplan.load_floorplan(str(tmp_path / 'missing.json'))
  bad = {
    'x_max > x_min': _room_with_cabinet(obstacles=[{'box': [6.0, 4.5, 4.0, 5.5]}]),
    'must be a list': _room_with_cabinet(obstacles={'box': [4.0, 4.5, 6.0, 5.5]}),
    r'obstacle 0 must be \{"box"': _room_with_cabinet(obstacles=[[4.0, 4.5, 6.0, 5.5]]),
    'obstacle 0 material must be one of the ITU materials': _room_with_cabinet(
      obstacles=[{'box': [4.0, 4.5, 6.0, 5.5], 'material': 'brick'}]
    ),
    'wall_material must be one of': _room_with_cabinet(wall_material='adamantium'),
    'inside an obstacle': _room_with_cabinet(aps=[[5.0, 5.0]]),
    'runs through obstacle 0': _room_with_cabinet(walk=[[1, 5], [9, 5]]),
  }
  for message, plan in bad.items():
    with pytest.raises(ValueError, match=message):
      floorplan.floorplan_from_dict(plan)


def test_obstacle_blocks_and_reflects_in_the_geometric_model():
  fp = floorplan.floorplan_from_dict(_room_with_cabinet())
  lines = simulator.wall_lines(fp.segments)
  table = simulator.anchor_table(fp, lines)
  los = np.flatnonzero(table.kind == 0)[0]
  # The cabinet's south side y = 4.5 mirrors the AP (5, 2) to (5, 7).
  south = [m for m in range(len(table.ap)) if np.allclose(table.position[m], [5.0, 7.0])]
  assert len(south) == 1
  clients = np.array([[5.0, 8.0], [8.0, 3.0], [5.5, 3.5]])
  det, _ = simulator.trace_paths(
    fp, table, lines, clients, reflection_loss_db=6.0, detection_threshold_db=100.0
  )
  assert not det[0, los]  # Straight behind the cabinet.
  assert det[1, los] and det[2, los]
  assert det[2, south[0]]  # Specular point (5.17, 4.5) lies on the cabinet's side.
  assert not det[1, south[0]]  # Specular point (6.5, 4.5) is past its end.
  # The same client without the cabinet sees the AP.
  open_room = floorplan.floorplan_from_dict(_room_with_cabinet(obstacles=[]))
  lines0 = simulator.wall_lines(open_room.segments)
  table0 = simulator.anchor_table(open_room, lines0)
  det0, _ = simulator.trace_paths(
    open_room, table0, lines0, clients[:1], reflection_loss_db=6.0, detection_threshold_db=100.0
  )
  assert det0[0, np.flatnonzero(table0.kind == 0)[0]]


def test_survey_and_walk_stay_out_of_obstacles(tmp_path):
  fp = floorplan.floorplan_from_dict(_room_with_cabinet())
  pos, _, _ = simulator.sample_survey(fp, 500, np.random.default_rng(0))
  assert not fp.in_obstacle(pos, 0.3).any()
  summary = simulator.write_scenario(
    str(tmp_path), seed=0, num_survey=50, num_trajectory_steps=30, floorplan=fp
  )
  with h5py.File(summary['trajectory'], 'r') as f:
    assert not fp.in_obstacle(f['position'][()]).any()
  # A room the obstacle fills leaves no place for the survey.
  full = floorplan.floorplan_from_dict(
    _room_with_cabinet(
      obstacles=[{'box': [0.1, 0.1, 9.9, 1.9]}, {'box': [0.1, 2.1, 9.9, 9.9]}],
      aps=[[5.0, 2.0]],
      walk=[[1, 2], [9, 2]],
    )
  )
  with pytest.raises(ValueError, match='no free survey position'):
    simulator.sample_survey(full, 20, np.random.default_rng(0))


@pytest.mark.parametrize('name', sorted(floorplan.NAMED_PLANS))
def test_every_built_in_floor_simulates_with_paths_in_every_room(name):
  fp = floorplan.load_floorplan(name)
  sim = simulator.simulate(fp, seed=0, num_survey=60, num_trajectory_steps=200)
  survey, traj = sim['survey'], sim['trajectory']
  paths = np.isfinite(survey['aoa']).sum(1)
  for r in range(fp.num_rooms):
    sel = survey['region'] == r
    assert sel.sum() == 60 and paths[sel].mean() >= 4, (fp.room_names[r], paths[sel].mean())
  # The walk visits every room and never enters an obstacle; no survey point does.
  assert set(np.unique(traj['region'])) == set(range(fp.num_rooms))
  assert not fp.in_obstacle(traj['position']).any()
  assert not fp.in_obstacle(survey['position']).any()
  assert fp.description


def test_corridor_is_served_only_by_aps_at_the_ends_of_its_legs():
  fp = floorplan.load_floorplan('corridor_l')
  rooms = fp.room_of(fp.aps)
  for r, name in enumerate(fp.room_names):
    if not name.startswith('corridor'):
      assert (rooms == r).sum() == 2, name  # The side rooms have two APs each.
      continue
    x0, y0, x1, y1 = fp.room_boxes[r]
    aps = fp.aps[rooms == r]
    along = 0 if x1 - x0 > y1 - y0 else 1
    lo, hi = fp.room_boxes[r][along], fp.room_boxes[r][along + 2]
    # Every AP of the leg (the corner AP counts for both) is within 1.5 m of one end.
    corner = fp.aps[np.all(np.abs(fp.aps - [22.9, 1.1]) < 1e-6, -1)]
    for ap in np.concatenate([aps, corner]):
      assert min(ap[along] - lo, hi - ap[along]) < 1.5, (name, ap)
    assert hi - lo > 13.9  # Long legs (14 m and 24 m).


def test_open_hall_has_large_rooms_with_blocking_obstacles():
  fp = floorplan.load_floorplan('open_hall')
  sizes = fp.room_boxes[:, 2:] - fp.room_boxes[:, :2]
  assert np.all(sizes[:, 0] >= 14.0) and np.all(sizes[:, 1] >= 10.0)
  rooms = fp.room_of(fp.aps)
  assert sorted(np.bincount(rooms).tolist()) == [2, 3]
  assert len(fp.obstacles) >= 4 and 'metal' in fp.obstacle_materials
  # The obstacles block paths: fewer anchors are seen than with the obstacles removed.
  bare = floorplan.floorplan_from_dict(
    {k: v for k, v in floorplan.OPEN_HALL_FLOORPLAN.items() if k != 'obstacles'}
  )
  rng = np.random.default_rng(0)
  pos, _, _ = simulator.sample_survey(fp, 40, rng)
  kw = {'reflection_loss_db': 6.0, 'detection_threshold_db': 20.0}
  with_obstacles = simulator.GeometricPropagation(fp, **kw)
  without = simulator.GeometricPropagation(bare, **kw)
  seen = lambda prop: [  # noqa: E731
    set(map(tuple, prop.table.position[prop(pos)[0][i]].round(3).tolist())) for i in range(len(pos))
  ]
  blocked = sum(len(b - a) > 0 for a, b in zip(seen(with_obstacles), seen(without)))
  assert blocked > 0.2 * len(pos)


def test_sample_detection_drops_a_far_aps_paths_that_per_ap_detection_keeps():
  # AP 0's path at -10 dB, AP 1's only path at -35 dB: on its own AP's scale AP 1's
  # path is the strongest (kept); against the sample's strongest it is 25 dB down.
  power = np.array([[-10.0, -25.0, -35.0]])
  anchor_ap = np.array([0, 0, 1])
  np.testing.assert_array_equal(simulator.detect(power, anchor_ap, 20.0, 'ap'), [[1, 1, 1]])
  np.testing.assert_array_equal(simulator.detect(power, anchor_ap, 20.0, 'sample'), [[1, 1, 0]])
  with pytest.raises(ValueError, match='detection reference'):
    simulator.detect(power, anchor_ap, 20.0, 'room')


def test_outlier_mixture_gives_the_stated_fraction_of_large_errors():
  rng = np.random.default_rng(0)
  n = 20000
  anchors = np.array([[10.0, 0.0]])
  pos = np.zeros((n, 2))
  detected = np.ones((n, 1), bool)
  err = lambda aoa: np.abs(geometry.wrap(aoa[:, 0]))  # noqa: E731  True bearing 0.
  plain = simulator.measure_aoa(anchors, pos, np.zeros(n), detected, np.deg2rad(5), rng)
  mixed = simulator.measure_aoa(
    anchors,
    pos,
    np.zeros(n),
    detected,
    np.deg2rad(5),
    rng,
    outlier_fraction=0.1,
    outlier_rad=np.deg2rad(30),
  )
  # Beyond 20 deg (4 sigma of the 5 deg part): ~0 without outliers; with them, 10 % of
  # paths from N(0, 30 deg), of which P(|e| > 20) = 0.505, i.e. ~5.0 %.
  big = np.deg2rad(20)
  assert np.mean(err(plain) > big) < 0.001
  expected = 0.1 * 0.505
  assert abs(np.mean(err(mixed) > big) - expected) < 4 * np.sqrt(expected * (1 - expected) / n)


def test_misassociation_and_spurious_paths_at_the_stated_rates():
  rng = np.random.default_rng(1)
  t, m = 4000, 40
  aoa = np.full((t, m), np.nan, np.float32)
  aoa[:, :8] = rng.uniform(-3, 3, (t, 8))  # 8 detected paths per sample, 32 free columns.
  moved = simulator.corrupt_association(aoa, np.random.default_rng(2), 0.1, 0.0)
  # Path counts are kept; ~10 % of the paths now sit in a column that had none.
  np.testing.assert_array_equal(np.isfinite(moved).sum(1), 8)
  frac = np.isfinite(moved[:, 8:]).sum() / (8 * t)
  assert abs(frac - 0.1) < 4 * np.sqrt(0.1 * 0.9 / (8 * t))
  # The moved values are the original angles (the path, not the angle, is wrong).
  assert np.isin(moved[np.isfinite(moved)], aoa[np.isfinite(aoa)]).all()
  spurious = simulator.corrupt_association(aoa, np.random.default_rng(3), 0.0, 0.5)
  extra = np.isfinite(spurious).sum(1) - 8
  assert abs(extra.mean() - 0.5) < 4 * np.sqrt(0.5 / t)
  np.testing.assert_array_equal(spurious[:, :8], aoa[:, :8])
  # Off by default: the array is returned untouched.
  assert simulator.corrupt_association(aoa, rng, 0.0, 0.0) is aoa


def test_misassociated_paths_go_only_to_anchors_undetected_at_that_sample():
  # Two paths in three columns, every path drawn for moving: one lands in the column
  # that was empty; the other has nowhere to go (the column the first one left belongs
  # to an anchor the receiver did see) and stays.
  aoa = np.array([[0.5, -0.7, np.nan]] * 200, np.float32)
  moved = simulator.corrupt_association(aoa, np.random.default_rng(0), 1.0, 0.0)
  assert np.isfinite(moved[:, 2]).all()
  np.testing.assert_array_equal(np.isfinite(moved).sum(1), 2)
  for j in (0, 1):  # A detected anchor's column holds its own path or nothing.
    assert np.all(np.isnan(moved[:, j]) | (moved[:, j] == aoa[:, j]))


def test_imperfection_options_reach_the_files_and_the_scenario_arguments(tmp_path):
  options = dict(
    detection_threshold_db=15.0,
    detection_reference='sample',
    aoa_outlier_fraction=0.05,
    aoa_outlier_deg=25.0,
    misassociation_rate=0.02,
    spurious_rate=0.3,
  )
  summary = simulator.write_scenario(
    str(tmp_path),
    seed=0,
    num_survey=10,
    num_trajectory_steps=20,
    floorplan='corridor_l',
    **options,
  )
  for name in ('survey', 'trajectory'):
    with h5py.File(summary[name], 'r') as f:
      assert {k: f.attrs[k] for k in options} == options, name
      assert json.loads(f.attrs['floorplan_json'])['name'] == 'corridor_l'
  # config.data -> scenario_kwargs: every option is passed on (so it is part of the
  # scenario stage's fingerprint), a floor plan by name included.
  data = config_utils.load_config('configs/mmwave_tiny.py').data
  defaults = simulator.scenario_kwargs(data)
  assert {k: defaults[k] for k in options} == {
    'detection_threshold_db': 20.0,
    'detection_reference': 'ap',
    'aoa_outlier_fraction': 0.0,
    'aoa_outlier_deg': 30.0,
    'misassociation_rate': 0.0,
    'spurious_rate': 0.0,
  }
  overrides = {f'data.{k}': v for k, v in dict(options, floorplan='corridor_l').items()}
  args = simulator.scenario_kwargs(
    config_utils.load_config('configs/mmwave_tiny.py', overrides).data
  )
  assert {k: args[k] for k in options} == options and args['floorplan'] == 'corridor_l'
  assert floorplan.load_floorplan(args['floorplan']).name == 'corridor_l'
