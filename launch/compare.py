"""Reproduces the paper's comparison: Table I for all four models on the same data and
splits, and the label-efficiency sweep (test MAE vs labelled training samples).

  python launch/compare.py --workdir=runs/demo                      # built-in demo
  python launch/compare.py --config=configs/ctw_compare.py:paper \\
      --workdir=runs/ctw2020 --config.data.root=/path/to/ctw2020

Writes table1.md, label_efficiency.{md,png}, error_cdf.png and metrics.json into the
workdir, plus one run folder per model. Re-running resumes.
"""

import os

from absl import app
from absl import flags
from ml_collections import config_flags

from csiloc_jax import compare

FLAGS = flags.FLAGS
flags.DEFINE_string('workdir', None, 'Directory for the runs, tables and plots.')
config_flags.DEFINE_config_file(
    'config', os.path.join(os.path.dirname(__file__), '..', 'configs', 'ctw_compare.py'),
    'Path to a comparison config (path[:arg]).', lock_config=True)
flags.mark_flags_as_required(['workdir'])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  summary = compare.run_comparison(FLAGS.config, FLAGS.workdir)
  print(summary['table1_markdown'])
  with open(os.path.join(FLAGS.workdir, 'label_efficiency.md')) as f:
    print(f.read())


if __name__ == '__main__':
  app.run(main)
