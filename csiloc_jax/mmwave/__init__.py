"""mmWave indoor localization with self-supervised tiny networks.

The data flow, one module per step (``docs/mmwave.md`` has the method and its choices)::

  floorplan ─> simulator (or raytrace: Sionna RT) ─> survey.h5 / trajectory.h5
  (schema: docs/schemas.md)
  reader (read + validate) ─> regions ─> jade (labels + anchors, gauge from
  ap_position) ─> features (ADoA encoding) ─> tiny_nets (stacked per-region MLPs)
  ─> tracker (Kalman + NIS switching in one lax.scan) ─> metrics / plots
  train.train_and_evaluate(config, workdir) ties them together; sweep.run_sweep varies
  the AoA noise and the switching threshold.

Every step is importable on its own, e.g. from a notebook; settings come from the
config file, the one place that holds their defaults::

  from csiloc_jax.core import config_utils
  from csiloc_jax.mmwave import simulator, reader, jade
  config = config_utils.load_config('configs/mmwave_tiny.py')
  paths = simulator.write_scenario('/tmp/scene', **simulator.scenario_kwargs(config.data))
  survey = reader.read_measurements(paths['survey'])
  options = config_utils.options_from_config(jade.JadeOptions, config.jade, 'config.jade',
                                             seed=config.seed)
  result = jade.run_jade(survey.aoa, survey.region, survey.anchor_ap,
                         survey.anchor_kind, survey.ap_position, options)
"""

from csiloc_jax.mmwave import features
from csiloc_jax.mmwave import floorplan
from csiloc_jax.mmwave import geometry
from csiloc_jax.mmwave import jade
from csiloc_jax.mmwave import metrics
from csiloc_jax.mmwave import reader
from csiloc_jax.mmwave import regions
from csiloc_jax.mmwave import simulator
from csiloc_jax.mmwave import tiny_nets
from csiloc_jax.mmwave import tracker

# train, sweep and plots import matplotlib and the checkpointing stack; import them
# explicitly (``from csiloc_jax.mmwave import train``) when needed.

__all__ = [
  'features',
  'floorplan',
  'geometry',
  'jade',
  'metrics',
  'reader',
  'regions',
  'simulator',
  'tiny_nets',
  'tracker',
]
