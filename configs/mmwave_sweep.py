"""Robustness sweep: AoA noise x NIS switching threshold (launch/mmwave_sweep.py).

Every field of configs/mmwave_tiny.py is here too (same meaning); ``sweep`` adds the
grid. For each noise level a scenario is generated (same seed, same floor) and the method
is fitted once; all thresholds and switching variants then run as one vmapped tracker.
``quick`` uses the quick method settings and a 2 x 3 grid.
"""

import os
import runpy

import ml_collections

# The method's config (configs/mmwave_tiny.py), run as a file: configs import no library.
_BASE = runpy.run_path(os.path.join(os.path.dirname(os.path.abspath(__file__)), 'mmwave_tiny.py'))


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  config = _BASE['get_config'](arg)
  # The checkpoints of a sweep point would be overwritten by the next one: always train.
  config.resume = False
  # The sweep draws its own summary plots; per-point floor/trajectory plots are skipped.
  config.plots = False
  # The grid of the sweep.
  config.sweep = ml_collections.ConfigDict()
  # AoA noise standard deviations to generate scenarios at, degrees.
  config.sweep.noise_deg = (1.0, 2.0, 5.0, 10.0)
  # Switching thresholds on the current net's NIS.
  config.sweep.thresholds = (0.5, 1.0, 2.0, 4.0, 8.0)
  if arg == 'quick':
    config.sweep.noise_deg = (2.0, 10.0)
    config.sweep.thresholds = (1.0, 2.0, 8.0)
  return config
