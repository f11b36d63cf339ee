"""The method on every built-in floor x 3 seeds x {regions, no regions} (launch/mmwave_suite.py).

Every field of configs/mmwave_tiny.py is here too (same meaning); ``suite`` adds what to
run. Each (floor, seed) scenario is generated once, with scenario seed = method seed;
``quick`` uses the quick method settings on the two-room floor and one seed (a smoke
check, not the reported numbers).
"""

import os
import runpy

import ml_collections

# The method's config (configs/mmwave_tiny.py), run as a file: configs import no library.
_BASE = runpy.run_path(os.path.join(os.path.dirname(os.path.abspath(__file__)), 'mmwave_tiny.py'))


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  config = _BASE['get_config'](arg)
  config.suite = ml_collections.ConfigDict()
  # Built-in floor plans by name (csiloc_jax/mmwave/floorplan.py, NAMED_PLANS).
  config.suite.floors = ('corridor_l', 'open_hall', 'six_rooms', 'two_rooms')
  # Scenario and method seeds.
  config.suite.seeds = (0, 1, 2)
  # 'regions' (the survey's region dataset is used) and/or 'no_regions' (found from the
  # received paths).
  config.suite.variants = ('regions', 'no_regions')
  # 'geometric' (the built-in simulator) and/or 'sionna' (ray-traced; needs the
  # raytrace extra and takes minutes per floor).
  config.suite.sources = ('geometric',)
  if arg == 'quick':
    config.suite.floors = ('two_rooms',)
    config.suite.seeds = (0,)
  return config
