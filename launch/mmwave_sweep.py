"""Robustness sweep of the mmWave method: AoA noise x switching threshold.

  python launch/mmwave_sweep.py --config=configs/mmwave_sweep.py --workdir=runs/sweep
  python launch/mmwave_sweep.py --config=configs/mmwave_sweep.py:quick --workdir=/tmp/s \\
      --config.sweep.noise_deg='(1.0, 5.0)'

Writes WORKDIR/sweep.md (tables), sweep.json and sweep*.png.
"""

from absl import app
from absl import flags
from ml_collections import config_flags

from csiloc_jax.mmwave import sweep

FLAGS = flags.FLAGS
flags.DEFINE_string('workdir', None, 'Directory for the generated data and the results.')
config_flags.DEFINE_config_file('config', None, 'Path to a config file (path[:arg]).',
                                lock_config=True)
flags.mark_flags_as_required(['config', 'workdir'])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  sweep.run_sweep(FLAGS.config, FLAGS.workdir)


if __name__ == '__main__':
  app.run(main)
