"""Runs the mmWave method end to end: JADE labels, tiny nets, NIS switching, metrics.

  python launch/mmwave.py --config=configs/mmwave_tiny.py --workdir=runs/mmwave
  python launch/mmwave.py --config=configs/mmwave_tiny.py:quick --workdir=/tmp/q
  python launch/mmwave.py --config=configs/mmwave_tiny.py --workdir=W \\
      --config.data.survey=S.h5 --config.data.trajectory=T.h5

Without data files the default scenario is generated into WORKDIR/data. Results:
WORKDIR/metrics.json, config.json, metrics.jsonl, *.png, checkpoints/.
"""

import _app  # launch/_app.py: the flags every launcher shares.

from csiloc_jax.mmwave import train

if __name__ == '__main__':
  _app.run(
    train.train_and_evaluate, workdir_help='Directory for data, checkpoints, metrics and plots.'
  )
