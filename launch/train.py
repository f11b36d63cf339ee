"""Trains and evaluates one CSI localization model (pretraining first if configured).

  python launch/train.py --config=configs/ctw_model4.py --workdir=runs/model4 \\
      --config.data.root=/path/to/ctw2020

Appending ``:quick`` to the config path gives a one-minute smoke run. Any config field
can be overridden with ``--config.field=value``. Re-running with the same workdir
resumes from the last checkpoint.

Several hosts (JAX's multi-controller runtime, one process per host, the same command
everywhere): add ``--coordinator_address=HOST0:PORT --num_processes=N --process_id=I``,
or nothing on a Cloud TPU pod slice or under SLURM, where JAX finds them itself. The
workdir and the data root must be on a file system every host sees. README.md,
'Several hosts', has the commands.
"""

import _app  # launch/_app.py: the flags every launcher shares.
from absl import flags

from csiloc_jax.core import distributed
from csiloc_jax.csi import train

flags.DEFINE_string(
  'coordinator_address', None, 'Multi-process runs: host:port of process 0, the same for all.'
)
flags.DEFINE_integer('num_processes', None, 'Multi-process runs: how many processes (hosts).')
flags.DEFINE_integer('process_id', None, "Multi-process runs: this process's index, 0..N-1.")
FLAGS = flags.FLAGS


def train_and_evaluate(config, workdir):
  distributed.initialize(FLAGS.coordinator_address, FLAGS.num_processes, FLAGS.process_id)
  return train.train_and_evaluate(config, workdir)


if __name__ == '__main__':
  _app.run(train_and_evaluate, workdir_help='Directory for checkpoints, metrics and plots.')
