"""Trains and evaluates one CSI localization model (pretraining first if configured).

  python launch/train.py --config=configs/ctw_model4.py --workdir=runs/model4 \\
      --config.data.root=/path/to/ctw2020

Appending ``:quick`` to the config path gives a one-minute smoke run. Any config field
can be overridden with ``--config.field=value``. Re-running with the same workdir
resumes from the last checkpoint.
"""

import _app  # launch/_app.py: the flags every launcher shares.

from csiloc_jax.csi import train

if __name__ == '__main__':
  _app.run(train.train_and_evaluate, workdir_help='Directory for checkpoints, metrics and plots.')
