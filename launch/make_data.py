"""Writes a dataset in a public layout, from the built-in generators or Sionna RT.

python launch/make_data.py --kind=ctw --out_dir=DIR [--num_labelled=600 ...]
    CTW-2020 layout: DIR/CTW2020_{labelled,unlabelled}_data/file_<k>.hdf5
python launch/make_data.py --kind=ctw --source=sionna --scene=munich --out_dir=DIR
    the same layout, ray-traced in a Sionna RT scene (built-in name or Mitsuba XML file);
    --positions=tracks for cart tracks instead of i.i.d. positions
python launch/make_data.py --kind=mmwave --out_dir=DIR [--aoa_noise_deg=5 ...]
    mmWave survey + trajectory: DIR/survey.h5, DIR/trajectory.h5
python launch/make_data.py --kind=mmwave --source=sionna [--floorplan=FILE_OR_NAME] --out_dir=DIR
    the same files, ray-traced through the floor plan's walls and obstacles

--source=sionna needs the ray-tracing extra: pip install -e '.[raytrace]' and an LLVM
library (Debian/Ubuntu: apt-get install libllvm19); docs/raytrace.md has the details.
"""

import json
import os

from absl import app
from absl import flags

_CTW_BASE_CONFIG = os.path.join(
  os.path.dirname(os.path.dirname(os.path.abspath(__file__))), 'configs', 'ctw_base.py'
)

FLAGS = flags.FLAGS
flags.DEFINE_enum('kind', 'ctw', ['ctw', 'mmwave'], 'Which dataset to generate.')
flags.DEFINE_string('out_dir', None, 'Output folder.')
flags.DEFINE_integer('seed', 0, 'Random seed (environment and samples).')
flags.DEFINE_enum(
  'source', 'builtin', ['builtin', 'sionna'], 'Built-in generator, or ray tracing (Sionna RT).'
)
flags.DEFINE_string(
  'scene', None, 'ctw + sionna: a Sionna RT built-in scene name or a Mitsuba XML file.'
)
flags.DEFINE_enum(
  'positions', None, ['iid', 'tracks'], 'ctw + sionna: i.i.d. UE positions or cart tracks.'
)
flags.DEFINE_string(
  'floorplan', None, 'mmwave: a floor plan JSON file or built-in name (default: six rooms).'
)
# CTW-2020 layout. Unset sizes and shape come from config.data.synthetic of
# configs/ctw_base.py, the one place that holds their defaults.
flags.DEFINE_integer('num_labelled', None, 'ctw: labelled samples (real set: 4,979).')
flags.DEFINE_integer('num_unlabelled', None, 'ctw: unlabelled samples (real set: 36,192).')
flags.DEFINE_integer('num_antennas', None, 'ctw: working base-station antennas.')
flags.DEFINE_integer('num_subcarriers', None, 'ctw: used subcarriers.')
flags.DEFINE_integer('num_measurements', None, 'ctw: repeated measurements per position.')
flags.DEFINE_integer(
  'samples_per_file', None, "ctw: samples per file_<k>.hdf5 (default: the generator's)."
)
flags.DEFINE_enum('dtype', 'float32', ['float32', 'float64'], 'ctw: dataset dtype.')
# mmWave.
flags.DEFINE_float('aoa_noise_deg', 5.0, 'mmwave: AoA noise standard deviation (degrees).')
# Unset mmWave sizes take the simulator's DEFAULT_SURVEY_PER_ROOM / DEFAULT_TRAJECTORY_STEPS.
flags.DEFINE_integer('num_survey', None, "mmwave: survey samples per room (default: simulator's).")
flags.DEFINE_integer(
  'num_trajectory_steps', None, "mmwave: trajectory length (default: simulator's)."
)
flags.mark_flags_as_required(['out_dir'])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  for name in ('scene', 'positions'):
    if FLAGS[name].value is not None and (FLAGS.kind, FLAGS.source) != ('ctw', 'sionna'):
      raise app.UsageError(f'--{name} applies to --kind=ctw --source=sionna only')
  if FLAGS.floorplan is not None and FLAGS.kind != 'mmwave':
    raise app.UsageError('--floorplan applies to --kind=mmwave only')
  if FLAGS.kind == 'ctw':
    from csiloc_jax.core import config_utils
    from csiloc_jax.csi import simulator

    synthetic = config_utils.load_config(_CTW_BASE_CONFIG).data.synthetic
    names = (
      'num_labelled',
      'num_unlabelled',
      'num_antennas',
      'num_subcarriers',
      'num_measurements',
    )
    kwargs = {
      name: synthetic[name] if FLAGS[name].value is None else FLAGS[name].value for name in names
    }
    if FLAGS.samples_per_file is not None:
      kwargs['samples_per_file'] = FLAGS.samples_per_file
    kwargs.update(seed=FLAGS.seed, dtype=FLAGS.dtype, progress=True)
    if FLAGS.source == 'sionna':
      from csiloc_jax.csi import raytrace

      options = {}
      if FLAGS.scene is not None:
        options['scene'] = FLAGS.scene
      if FLAGS.positions is not None:
        options['position_layout'] = FLAGS.positions
      config = raytrace.RaytraceConfig(**options)
      summary = raytrace.generate_raytraced_dataset(FLAGS.out_dir, config=config, **kwargs)
    else:
      summary = simulator.generate_ctw_dataset(FLAGS.out_dir, **kwargs)
  else:
    kwargs = {
      name: FLAGS[name].value
      for name in ('num_survey', 'num_trajectory_steps', 'floorplan')
      if FLAGS[name].value is not None
    }
    kwargs.update(seed=FLAGS.seed, aoa_noise_deg=FLAGS.aoa_noise_deg)
    if FLAGS.source == 'sionna':
      from csiloc_jax.mmwave import raytrace

      summary = raytrace.write_scenario(FLAGS.out_dir, progress=True, **kwargs)
    else:
      from csiloc_jax.mmwave import simulator

      summary = simulator.write_scenario(FLAGS.out_dir, **kwargs)
  print(json.dumps(summary, indent=2, default=str))


if __name__ == '__main__':
  app.run(main)
