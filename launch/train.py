"""Trains and evaluates one CSI localization model (pretraining first if configured).

  python launch/train.py --config=configs/ctw_model4.py --workdir=runs/model4 \\
      --config.data.root=/path/to/ctw2020

Appending ``:quick`` to the config path gives a one-minute smoke run. Any config field
can be overridden with ``--config.field=value``. Re-running with the same workdir
resumes from the last checkpoint.
"""

from absl import app
from absl import flags
from ml_collections import config_flags

from csiloc_jax import train

FLAGS = flags.FLAGS
flags.DEFINE_string('workdir', None, 'Directory for checkpoints, metrics and plots.')
config_flags.DEFINE_config_file('config', None, 'Path to a config file (path[:arg]).',
                                lock_config=True)
flags.mark_flags_as_required(['config', 'workdir'])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  train.train_and_evaluate(FLAGS.config, FLAGS.workdir)


if __name__ == '__main__':
  app.run(main)
