"""Writes a synthetic dataset in a public layout.

  python launch/make_data.py --kind=ctw --out_dir=DIR [--num_labelled=600 ...]
      CTW-2020 layout: DIR/CTW2020_{labelled,unlabelled}_data/file_<k>.hdf5
  python launch/make_data.py --kind=mmwave --out_dir=DIR [--aoa_noise_deg=5 ...]
      mmWave survey + trajectory: DIR/survey.h5, DIR/trajectory.h5
"""

import json

from absl import app
from absl import flags

FLAGS = flags.FLAGS
flags.DEFINE_enum('kind', 'ctw', ['ctw', 'mmwave'], 'Which dataset to generate.')
flags.DEFINE_string('out_dir', None, 'Output folder.')
flags.DEFINE_integer('seed', 0, 'Random seed (environment and samples).')
# CTW-2020 layout.
flags.DEFINE_integer('num_labelled', 600, 'ctw: labelled samples (real set: 4,979).')
flags.DEFINE_integer('num_unlabelled', 2400, 'ctw: unlabelled samples (real set: 36,192).')
flags.DEFINE_integer('num_antennas', 56, 'ctw: working base-station antennas.')
flags.DEFINE_integer('num_subcarriers', 924, 'ctw: used subcarriers.')
flags.DEFINE_integer('num_measurements', 5, 'ctw: repeated measurements per position.')
flags.DEFINE_integer('samples_per_file', 512, 'ctw: samples per file_<k>.hdf5.')
flags.DEFINE_enum('dtype', 'float32', ['float32', 'float64'], 'ctw: dataset dtype.')
# mmWave.
flags.DEFINE_float('aoa_noise_deg', 5.0, 'mmwave: AoA noise standard deviation (degrees).')
flags.DEFINE_integer('num_survey', None, 'mmwave: survey samples per room (default: simulator\'s).')
flags.DEFINE_integer('num_trajectory_steps', 388, 'mmwave: trajectory length.')
flags.mark_flags_as_required(['out_dir'])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  if FLAGS.kind == 'ctw':
    from csiloc_jax.csi import simulator
    summary = simulator.generate_ctw_dataset(
        FLAGS.out_dir, num_labelled=FLAGS.num_labelled, num_unlabelled=FLAGS.num_unlabelled,
        num_antennas=FLAGS.num_antennas, num_subcarriers=FLAGS.num_subcarriers,
        num_measurements=FLAGS.num_measurements, samples_per_file=FLAGS.samples_per_file,
        seed=FLAGS.seed, dtype=FLAGS.dtype, progress=True)
  else:
    from csiloc_jax.mmwave import simulator
    kwargs = {} if FLAGS.num_survey is None else {'num_survey': FLAGS.num_survey}
    summary = simulator.write_scenario(
        FLAGS.out_dir, seed=FLAGS.seed, aoa_noise_deg=FLAGS.aoa_noise_deg,
        num_trajectory_steps=FLAGS.num_trajectory_steps, **kwargs)
  print(json.dumps(summary, indent=2, default=str))


if __name__ == '__main__':
  app.run(main)
