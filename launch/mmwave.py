"""Runs the mmWave method end to end: JADE labels, tiny nets, NIS switching, metrics.

  python launch/mmwave.py --config=configs/mmwave_tiny.py --workdir=runs/mmwave
  python launch/mmwave.py --config=configs/mmwave_tiny.py:quick --workdir=/tmp/q
  python launch/mmwave.py --config=configs/mmwave_tiny.py --workdir=W \\
      --config.data.survey=S.h5 --config.data.trajectory=T.h5

Without data files the default scenario is generated into WORKDIR/data. Results:
WORKDIR/metrics.json, config.json, metrics.jsonl, *.png, checkpoints/.
"""

from absl import app
from absl import flags
from ml_collections import config_flags

from csiloc_jax.mmwave import pipeline

FLAGS = flags.FLAGS
flags.DEFINE_string('workdir', None, 'Directory for data, checkpoints, metrics and plots.')
config_flags.DEFINE_config_file('config', None, 'Path to a config file (path[:arg]).',
                                lock_config=True)
flags.mark_flags_as_required(['config', 'workdir'])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  pipeline.run_mmwave(FLAGS.config, FLAGS.workdir)


if __name__ == '__main__':
  app.run(main)
