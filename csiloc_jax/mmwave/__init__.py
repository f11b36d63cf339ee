"""mmWave indoor localization with self-supervised tiny networks (PRODUCT.md Part B).

The data flow, one module per step::

  floorplan ─> simulator ─> survey.h5 / trajectory.h5 (B.2 schema)
  measurements (read + validate) ─> regions ─> jade (labels + anchors, gauge from
  ap_position) ─> features (ADoA encoding) ─> tiny_nets (stacked per-region MLPs)
  ─> tracker (Kalman + NIS switching in one lax.scan) ─> evaluation / plots
  pipeline.run_mmwave(config, workdir) ties them together; sweep.run_sweep varies the
  AoA noise and the switching threshold.

Every step is importable on its own, e.g. from a notebook::

  from csiloc_jax.mmwave import simulator, measurements, jade, pipeline
  paths = simulator.write_scenario('/tmp/scene', aoa_noise_deg=5.0)
  survey = measurements.read_measurements(paths['survey'])
  result = jade.run_jade(survey.aoa, survey.region, survey.anchor_ap,
                         survey.anchor_kind, survey.ap_position)
"""

from csiloc_jax.mmwave import evaluation
from csiloc_jax.mmwave import features
from csiloc_jax.mmwave import floorplan
from csiloc_jax.mmwave import geometry
from csiloc_jax.mmwave import jade
from csiloc_jax.mmwave import measurements
from csiloc_jax.mmwave import regions
from csiloc_jax.mmwave import simulator
from csiloc_jax.mmwave import tiny_nets
from csiloc_jax.mmwave import tracker

# pipeline, sweep and plots import matplotlib and the checkpointing stack; import them
# explicitly (``from csiloc_jax.mmwave import pipeline``) when needed.

__all__ = ['evaluation', 'features', 'floorplan', 'geometry', 'jade', 'measurements',
           'regions', 'simulator', 'tiny_nets', 'tracker']
