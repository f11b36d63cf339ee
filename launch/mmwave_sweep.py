"""Robustness sweep of the mmWave method: AoA noise x switching threshold.

  python launch/mmwave_sweep.py --config=configs/mmwave_sweep.py --workdir=runs/sweep
  python launch/mmwave_sweep.py --config=configs/mmwave_sweep.py:quick --workdir=/tmp/s \\
      --config.sweep.noise_deg='(1.0, 5.0)'

Writes WORKDIR/sweep.md (tables), sweep.json and sweep*.png.
"""

import _app  # launch/_app.py: the flags every launcher shares.

from csiloc_jax.mmwave import sweep

if __name__ == '__main__':
  _app.run(sweep.run_sweep, workdir_help='Directory for the generated data and the results.')
