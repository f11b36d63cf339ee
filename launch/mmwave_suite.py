"""The mmWave method on every built-in floor x seeds x {regions, no regions}.

  python launch/mmwave_suite.py --config=configs/mmwave_suite.py --workdir=runs/suite
  python launch/mmwave_suite.py --config=configs/mmwave_suite.py:quick --workdir=/tmp/s
  python launch/mmwave_suite.py --config=configs/mmwave_suite.py --workdir=runs/suite_rt \\
      --config.suite.sources="('sionna',)"

Writes WORKDIR/suite.md (method table and label statistics), suite.json and suite.png;
every run's metrics.json and plots stay in WORKDIR/runs/<source>_<floor>_seed<s>_<variant>.
Running it again skips the finished runs.
"""

import _app  # launch/_app.py: the flags every launcher shares.

from csiloc_jax.mmwave import suite

if __name__ == '__main__':
  _app.run(suite.run_suite, workdir_help='Directory for the generated data and the results.')
