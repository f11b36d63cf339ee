"""Floor plans as data: wall segments, rooms (the regions), AP mounting points, a walk.

This is the first stop of the mmWave data flow: :mod:`csiloc_jax.mmwave.simulator` (and
its ray-traced counterpart :mod:`csiloc_jax.mmwave.raytrace`) reads a :class:`FloorPlan`
to find line-of-sight and first-order reflected paths and to draw the survey and the
trajectory. Nothing downstream of the simulators ever sees a floor plan —
JADE, the features, the nets and the tracker work from measurement files alone — except
the plots, which draw the walls for orientation.

A plan is a plain dict (``DEFAULT_FLOORPLAN`` below, or a JSON file with the same keys):

* ``walls``: ``[[x0, y0, x1, y1], ...]`` segments in metres; doorways are gaps between
  collinear segments. Walls are opaque and reflect specularly.
* ``rooms``: ``[{"name": str, "box": [x_min, y_min, x_max, y_max]}, ...]``; room i is
  region i of the survey (rooms are axis-aligned boxes so that uniform sampling and
  region labels are exact).
* ``aps``: ``[[x, y], ...]`` AP mounting positions (the deployment knowledge that later
  fixes JADE's gauge).
* ``walk``: ``[[x, y], ...]`` waypoints of the trajectory's route (through doorways).
* ``obstacles`` (optional): ``[{"box": [x_min, y_min, x_max, y_max], "material": str},
  ...]`` axis-aligned floor-to-ceiling blocks (pillars, cabinets, racks). Both
  simulators treat the four sides of an obstacle as walls: opaque and reflecting. No
  survey position is drawn inside one (or within the survey's wall margin of it); APs
  and the walk must stay outside. ``material`` defaults to ``'metal'``.
* ``wall_material`` (optional, default ``'concrete'``): what the walls are made of.

Materials are ITU-R P.2040 materials with parameters at 60 GHz (:data:`MATERIALS`).
Only the ray-traced source (:mod:`csiloc_jax.mmwave.raytrace`) uses them; the built-in
simulator's reflection loss is one number for every surface.

Plans ship by name (:data:`NAMED_PLANS`): ``load_floorplan('two_rooms')``.
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any, Mapping

import numpy as np

# ITU-R P.2040 materials (Sionna RT's ``itu-radio-material`` types) that have
# parameters at 60 GHz; others (brick, plywood, the grounds, ...) stop at 40 GHz or
# below.
MATERIALS = (
  'concrete',
  'plasterboard',
  'wood',
  'glass',
  'ceiling_board',
  'chipboard',
  'marble',
  'floorboard',
  'metal',
)
DEFAULT_WALL_MATERIAL = 'concrete'
# Indoor obstacles at 60 GHz are typically metal furniture (cabinets, racks, shelving).
DEFAULT_OBSTACLE_MATERIAL = 'metal'


def _default_plan() -> dict:
  """Six 8 m x 6 m rooms in a 3 x 2 grid (24 m x 12 m), three APs per room."""
  width, height = 8.0, 6.0
  rooms, aps = [], []
  # Three APs per room on a non-collinear triangle, 1.2-1.8 m from the walls: far enough
  # that a wall's virtual anchor is not a near-duplicate of the AP itself.
  ap_offsets = [(1.6, 1.3), (6.5, 1.8), (3.6, 4.7)]
  for row in range(2):
    for col in range(3):
      x0, y0 = col * width, row * height
      rooms.append({'name': f'room_{row * 3 + col}', 'box': [x0, y0, x0 + width, y0 + height]})
      aps.extend([[x0 + dx, y0 + dy] for dx, dy in ap_offsets])
  walls = [
    # Outer walls.
    [0.0, 0.0, 24.0, 0.0],
    [0.0, 12.0, 24.0, 12.0],
    [0.0, 0.0, 0.0, 12.0],
    [24.0, 0.0, 24.0, 12.0],
    # x = 8 and x = 16, with a 1 m door in each row.
    [8.0, 0.0, 8.0, 2.5],
    [8.0, 3.5, 8.0, 8.5],
    [8.0, 9.5, 8.0, 12.0],
    [16.0, 0.0, 16.0, 2.5],
    [16.0, 3.5, 16.0, 8.5],
    [16.0, 9.5, 16.0, 12.0],
    # y = 6 between the rows: doors into rooms 3 (x 3.5-4.5) and 5 (x 19.5-20.5).
    [0.0, 6.0, 3.5, 6.0],
    [4.5, 6.0, 19.5, 6.0],
    [20.5, 6.0, 24.0, 6.0],
  ]
  # Room 0 -> 1 -> 2 -> 5 -> 4 -> 3 -> back down into room 0, loops inside each room.
  walk = [
    [2.0, 4.0],
    [5.5, 4.5],
    [6.5, 2.0],
    [3.0, 1.5],
    [6.0, 3.0],
    [8.0, 3.0],
    [10.0, 3.0],
    [12.0, 4.8],
    [14.5, 4.0],
    [13.5, 1.2],
    [11.0, 2.0],
    [15.0, 3.0],
    [16.0, 3.0],
    [18.0, 3.0],
    [22.5, 1.5],
    [22.0, 4.5],
    [20.0, 5.0],
    [20.0, 6.0],
    [20.0, 7.0],
    [22.5, 8.5],
    [21.0, 10.8],
    [17.5, 9.5],
    [16.0, 9.0],
    [14.5, 9.0],
    [12.5, 10.8],
    [10.0, 10.0],
    [11.5, 7.0],
    [9.0, 9.0],
    [8.0, 9.0],
    [6.5, 9.0],
    [2.0, 10.5],
    [1.5, 8.0],
    [4.0, 7.0],
    [4.0, 6.0],
    [4.0, 5.0],
    [2.0, 2.5],
  ]
  return {
    'name': 'six_rooms',
    'walls': walls,
    'rooms': rooms,
    'aps': aps,
    'walk': walk,
    'description': 'six 8 m x 6 m rooms in a 3 x 2 grid joined by 1 m doorways, three APs per room',
  }


# The default scenario's floor, as data (the simulator never hard-codes geometry).
DEFAULT_FLOORPLAN: dict = _default_plan()

# A small floor for tests and quick demos: two 6 m x 5 m rooms and a 1 m doorway.
TWO_ROOM_FLOORPLAN: dict = {
  'name': 'two_rooms',
  'description': 'two 6 m x 5 m rooms joined by a 1 m doorway, three APs per room',
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
  'aps': [[1.3, 1.1], [4.8, 1.5], [2.7, 3.9], [7.2, 1.2], [10.7, 1.6], [8.9, 3.8]],
  'walk': [
    [1.5, 2.5],
    [3.0, 1.2],
    [4.8, 3.5],
    [6.0, 2.5],
    [8.0, 2.5],
    [10.5, 3.8],
    [10.0, 1.0],
    [7.5, 1.5],
  ],
}

# An L-shaped corridor served only by APs at the ends of its legs, and two side rooms
# with two APs each. Along a straight leg with APs at both ends, every anchor (the APs
# and their mirror images in the two long walls) lies near the corridor's axis: the
# leg's JADE problem is nearly collinear, the case a realistic floor exposed.
CORRIDOR_L_FLOORPLAN: dict = {
  'name': 'corridor_l',
  'description': (
    'an L-shaped 2.4 m wide corridor (legs of 24 m and 14 m) with APs only at the ends of '
    'its legs, and two 6 m x 5 m side rooms with two APs each, opening on it by 1 m doors'
  ),
  'walls': [
    # Corridor: south wall, west end, north wall with the two doors, the outer corner.
    [0.0, 0.0, 24.0, 0.0],
    [0.0, 0.0, 0.0, 2.4],
    [0.0, 2.4, 4.5, 2.4],
    [5.5, 2.4, 12.5, 2.4],
    [13.5, 2.4, 21.6, 2.4],
    [24.0, 0.0, 24.0, 16.4],
    [21.6, 2.4, 21.6, 16.4],
    [21.6, 16.4, 24.0, 16.4],
    # Side rooms north of the horizontal leg: x 2-8 and x 10-16, y 2.4-7.4.
    [2.0, 2.4, 2.0, 7.4],
    [2.0, 7.4, 8.0, 7.4],
    [8.0, 2.4, 8.0, 7.4],
    [10.0, 2.4, 10.0, 7.4],
    [10.0, 7.4, 16.0, 7.4],
    [16.0, 2.4, 16.0, 7.4],
  ],
  'rooms': [
    {'name': 'corridor_east_west', 'box': [0.0, 0.0, 24.0, 2.4]},
    {'name': 'corridor_north_south', 'box': [21.6, 2.4, 24.0, 16.4]},
    {'name': 'room_west', 'box': [2.0, 2.4, 8.0, 7.4]},
    {'name': 'room_east', 'box': [10.0, 2.4, 16.0, 7.4]},
  ],
  'aps': [
    [0.6, 1.3],  # West end of the long leg.
    [22.9, 1.1],  # The corner: the east end of one leg, the south end of the other.
    [22.7, 15.8],  # North end of the short leg.
    [3.4, 6.3],  # West room: two APs.
    [6.9, 4.0],
    [11.3, 4.1],  # East room: two APs.
    [14.6, 6.4],
  ],
  'walk': [
    [1.5, 1.2],
    [5.0, 1.2],
    [5.0, 2.4],
    [5.0, 4.0],
    [3.2, 4.8],
    [5.5, 6.5],
    [7.0, 5.5],
    [5.0, 3.2],
    [5.0, 1.2],
    [13.0, 1.2],
    [13.0, 3.2],
    [11.5, 5.5],
    [13.5, 6.6],
    [15.0, 4.5],
    [13.0, 3.2],
    [13.0, 1.2],
    [21.0, 1.2],
    [22.8, 3.5],
    [22.8, 12.0],
    [22.8, 15.5],
  ],
}

# Two large open halls with pillars and metal cabinets that block paths, joined by a 4 m
# opening (paths of one hall's APs reach into the other); the east hall has two APs.
OPEN_HALL_FLOORPLAN: dict = {
  'name': 'open_hall',
  'description': (
    'a 16 m x 10 m and a 14 m x 10 m hall joined by a 4 m opening, with 0.6 m concrete '
    'pillars and metal cabinets that block paths; three APs in the west hall, two in the '
    'east hall'
  ),
  'walls': [
    [0.0, 0.0, 30.0, 0.0],
    [0.0, 10.0, 30.0, 10.0],
    [0.0, 0.0, 0.0, 10.0],
    [30.0, 0.0, 30.0, 10.0],
    [16.0, 0.0, 16.0, 3.0],
    [16.0, 7.0, 16.0, 10.0],
  ],
  'rooms': [
    {'name': 'hall_west', 'box': [0.0, 0.0, 16.0, 10.0]},
    {'name': 'hall_east', 'box': [16.0, 0.0, 30.0, 10.0]},
  ],
  'obstacles': [
    {'box': [4.7, 3.2, 5.3, 3.8], 'material': 'concrete'},
    {'box': [4.7, 6.2, 5.3, 6.8], 'material': 'concrete'},
    {'box': [10.7, 3.2, 11.3, 3.8], 'material': 'concrete'},
    {'box': [10.7, 6.2, 11.3, 6.8], 'material': 'concrete'},
    {'box': [7.0, 9.2, 9.5, 9.8]},  # Cabinet against the north wall.
    {'box': [21.7, 4.7, 22.3, 5.3], 'material': 'concrete'},
    {'box': [25.7, 4.7, 26.3, 5.3], 'material': 'concrete'},
    {'box': [19.0, 0.2, 21.0, 0.8]},  # Cabinet against the south wall.
    {'box': [27.5, 7.0, 28.1, 9.0]},  # Rack.
  ],
  'aps': [
    [1.5, 1.5],
    [14.0, 2.0],
    [8.0, 8.3],
    [18.5, 8.5],
    [28.5, 1.5],
  ],
  'walk': [
    [2.0, 5.0],
    [3.0, 8.3],
    [8.0, 7.6],
    [13.5, 8.3],
    [14.0, 5.0],
    [13.5, 1.5],
    [8.0, 2.0],
    [8.0, 5.0],
    [14.0, 5.0],
    [18.0, 5.0],
    [20.0, 2.5],
    [24.0, 2.5],
    [28.5, 4.0],
    [25.0, 8.0],
    [20.0, 7.0],
    [18.0, 5.0],
    [8.0, 5.0],
    [3.0, 5.0],
    [2.5, 2.5],
  ],
}

# Plans that ``load_floorplan`` knows by name ('default' is the six-room plan too).
NAMED_PLANS: dict = {
  plan['name']: plan
  for plan in (
    DEFAULT_FLOORPLAN,
    TWO_ROOM_FLOORPLAN,
    CORRIDOR_L_FLOORPLAN,
    OPEN_HALL_FLOORPLAN,
  )
}


@dataclasses.dataclass(frozen=True)
class FloorPlan:
  """Validated arrays built from a plan dict."""

  name: str
  walls: np.ndarray  # [W, 4] segments (x0, y0, x1, y1), metres.
  room_boxes: np.ndarray  # [R, 4] (x_min, y_min, x_max, y_max).
  room_names: tuple
  aps: np.ndarray  # [A, 2].
  walk: np.ndarray  # [P, 2] route waypoints.
  description: str = ''
  # [O, 4] obstacle boxes (x_min, y_min, x_max, y_max) and their materials.
  obstacles: np.ndarray = dataclasses.field(default_factory=lambda: np.zeros((0, 4)))
  obstacle_materials: tuple = ()
  wall_material: str = DEFAULT_WALL_MATERIAL

  @property
  def num_rooms(self) -> int:
    return len(self.room_boxes)

  @property
  def extent(self) -> np.ndarray:
    """(x_min, y_min, x_max, y_max) of all walls."""
    w = self.walls
    return np.array(
      [
        min(w[:, 0].min(), w[:, 2].min()),
        min(w[:, 1].min(), w[:, 3].min()),
        max(w[:, 0].max(), w[:, 2].max()),
        max(w[:, 1].max(), w[:, 3].max()),
      ]
    )

  @property
  def segments(self) -> np.ndarray:
    """[S, 4] every opaque, reflecting segment: the walls, then the four sides of each
    obstacle (counter-clockwise). Without obstacles, ``walls`` itself."""
    if not len(self.obstacles):
      return self.walls
    x0, y0, x1, y1 = self.obstacles.T
    sides = np.stack(
      [
        np.stack([x0, y0, x1, y0], -1),
        np.stack([x1, y0, x1, y1], -1),
        np.stack([x1, y1, x0, y1], -1),
        np.stack([x0, y1, x0, y0], -1),
      ],
      1,
    ).reshape(-1, 4)
    return np.concatenate([self.walls, sides])

  def in_obstacle(self, points: np.ndarray, margin: float = 0.0) -> np.ndarray:
    """Whether each point ([..., 2]) lies inside an obstacle grown by ``margin``."""
    points = np.asarray(points, np.float64)
    x, y = points[..., 0:1], points[..., 1:2]
    b = self.obstacles
    inside = (
      (x > b[:, 0] - margin)
      & (x < b[:, 2] + margin)
      & (y > b[:, 1] - margin)
      & (y < b[:, 3] + margin)
    )
    return inside.any(-1)

  def room_of(self, points: np.ndarray) -> np.ndarray:
    """Room index of each point ([..., 2]); -1 outside every room."""
    points = np.asarray(points, np.float64)
    x, y = points[..., 0:1], points[..., 1:2]
    b = self.room_boxes
    inside = (x >= b[:, 0]) & (x <= b[:, 2]) & (y >= b[:, 1]) & (y <= b[:, 3])
    return np.where(inside.any(-1), inside.argmax(-1), -1).astype(np.int32)

  def to_dict(self) -> dict:
    """The plan as data; optional keys at their defaults are left out, so a plan that
    does not use them is written with the basic keys only."""
    plan = {
      'name': self.name,
      'description': self.description,
      'walls': self.walls.tolist(),
      'aps': self.aps.tolist(),
      'walk': self.walk.tolist(),
      'rooms': [{'name': n, 'box': b.tolist()} for n, b in zip(self.room_names, self.room_boxes)],
    }
    if self.wall_material != DEFAULT_WALL_MATERIAL:
      plan['wall_material'] = self.wall_material
    if len(self.obstacles):
      plan['obstacles'] = [
        {'box': b.tolist(), 'material': m} for b, m in zip(self.obstacles, self.obstacle_materials)
      ]
    return plan


def _array(plan: Mapping[str, Any], key: str, width: int, source: str) -> np.ndarray:
  if key not in plan:
    raise ValueError(f'floor plan {source}: missing key {key!r}')
  arr = np.asarray(plan[key], np.float64)
  if arr.ndim != 2 or arr.shape[1] != width or len(arr) == 0:
    raise ValueError(
      f'floor plan {source}: {key!r} must be a non-empty list of '
      f'{width}-number rows, got shape {arr.shape}'
    )
  return arr


def _material(value: Any, what: str, source: str) -> str:
  if value not in MATERIALS:
    raise ValueError(
      f'floor plan {source}: {what} must be one of the ITU materials with parameters at '
      f'60 GHz ({", ".join(MATERIALS)}), got {value!r}'
    )
  return str(value)


def _obstacles(plan: Mapping[str, Any], source: str) -> tuple[np.ndarray, tuple]:
  items = plan.get('obstacles') or []
  if not isinstance(items, (list, tuple)):
    raise ValueError(f'floor plan {source}: "obstacles" must be a list, got {type(items).__name__}')
  boxes, materials = [], []
  for i, item in enumerate(items):
    box = np.asarray(item.get('box') if isinstance(item, Mapping) else None, np.float64)
    if box.shape != (4,) or not np.all(np.isfinite(box)) or box[2] <= box[0] or box[3] <= box[1]:
      raise ValueError(
        f'floor plan {source}: obstacle {i} must be {{"box": [x_min, y_min, x_max, y_max], '
        f'"material": ...}} with x_max > x_min and y_max > y_min, got {item!r}'
      )
    boxes.append(box)
    materials.append(
      _material(item.get('material', DEFAULT_OBSTACLE_MATERIAL), f'obstacle {i} material', source)
    )
  return np.asarray(boxes, np.float64).reshape(-1, 4), tuple(materials)


def _segment_enters_box(p0: np.ndarray, p1: np.ndarray, box: np.ndarray) -> bool:
  """Whether the segment p0 -> p1 passes through the open box (Liang-Barsky clipping)."""
  d = p1 - p0
  lo, hi = 0.0, 1.0
  for k in range(2):
    if abs(d[k]) < 1e-12:
      if not box[k] < p0[k] < box[k + 2]:
        return False
      continue
    t0, t1 = sorted(((box[k] - p0[k]) / d[k], (box[k + 2] - p0[k]) / d[k]))
    lo, hi = max(lo, t0), min(hi, t1)
  return hi - lo > 1e-9


def floorplan_from_dict(plan: Mapping[str, Any], source: str = '<dict>') -> FloorPlan:
  """Builds and checks a :class:`FloorPlan` from its data description."""
  walls = _array(plan, 'walls', 4, source)
  aps = _array(plan, 'aps', 2, source)
  walk = _array(plan, 'walk', 2, source)
  rooms = plan.get('rooms')
  if not rooms:
    raise ValueError(f'floor plan {source}: missing or empty key "rooms"')
  boxes = np.asarray([r['box'] for r in rooms], np.float64)
  if (
    boxes.ndim != 2
    or boxes.shape[1] != 4
    or np.any(boxes[:, 2] <= boxes[:, 0])
    or np.any(boxes[:, 3] <= boxes[:, 1])
  ):
    raise ValueError(
      f'floor plan {source}: every room needs a box [x_min, y_min, x_max, '
      f'y_max] with positive width and height'
    )
  lengths = np.hypot(walls[:, 2] - walls[:, 0], walls[:, 3] - walls[:, 1])
  if np.any(lengths <= 0):
    raise ValueError(
      f'floor plan {source}: zero-length wall segment(s) at rows '
      f'{np.flatnonzero(lengths <= 0).tolist()}'
    )
  names = tuple(r.get('name', f'room_{i}') for i, r in enumerate(rooms))
  obstacles, obstacle_materials = _obstacles(plan, source)
  fp = FloorPlan(
    name=str(plan.get('name', 'floorplan')),
    walls=walls,
    room_boxes=boxes,
    room_names=names,
    aps=aps,
    walk=walk,
    description=str(plan.get('description', '')),
    obstacles=obstacles,
    obstacle_materials=obstacle_materials,
    wall_material=_material(
      plan.get('wall_material', DEFAULT_WALL_MATERIAL), 'wall_material', source
    ),
  )
  outside = np.flatnonzero(fp.room_of(aps) < 0)
  if outside.size:
    raise ValueError(f'floor plan {source}: APs {outside.tolist()} lie outside every room')
  blocked = np.flatnonzero(fp.in_obstacle(aps))
  if blocked.size:
    raise ValueError(f'floor plan {source}: APs {blocked.tolist()} lie inside an obstacle')
  # The walk is smoothed later (corner cutting stays between the waypoints' legs), so
  # checking the waypoint polyline catches a route drawn through an obstacle.
  for i in range(len(walk) - 1):
    for j, box in enumerate(obstacles):
      if _segment_enters_box(walk[i], walk[i + 1], box):
        raise ValueError(
          f'floor plan {source}: the walk from waypoint {i} {walk[i].tolist()} to '
          f'{i + 1} {walk[i + 1].tolist()} runs through obstacle {j} {box.tolist()}'
        )
  return fp


def load_floorplan(source: str | Mapping[str, Any] | FloorPlan | None = None) -> FloorPlan:
  """The default plan (``None``, ``''`` or ``'default'``), a plan of :data:`NAMED_PLANS`
  by name, a plan dict, or a JSON file path."""
  if isinstance(source, FloorPlan):
    return source
  if source is None or source == '' or source == 'default':
    return floorplan_from_dict(DEFAULT_FLOORPLAN, 'default')
  if isinstance(source, Mapping):
    return floorplan_from_dict(source)
  if not isinstance(source, str):
    raise ValueError(
      f'floor plan: expected None, a plan name, a dict or a JSON file path, got '
      f'{type(source).__name__}'
    )
  if source in NAMED_PLANS and not os.path.exists(source):
    return floorplan_from_dict(NAMED_PLANS[source], source)
  if not os.path.isfile(source):
    raise ValueError(
      f'floor plan {source!r} is neither a built-in plan ({", ".join(NAMED_PLANS)}) nor a JSON file'
    )
  with open(source) as f:
    return floorplan_from_dict(json.load(f), source)
