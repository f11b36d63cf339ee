"""Reproduces the paper's comparison: Table I for all four models on the same data and
splits, and the label-efficiency sweep (test MAE vs labelled training samples).

  python launch/compare.py --workdir=runs/demo                      # built-in demo
  python launch/compare.py --config=configs/ctw_compare.py:paper \\
      --workdir=runs/ctw2020 --config.data.root=/path/to/ctw2020

Writes table1.md, label_efficiency.{md,png}, error_cdf.png and metrics.json into the
workdir, plus one run folder per model. Re-running resumes.
"""

import os

import _app  # launch/_app.py: the flags every launcher shares.

from csiloc_jax.csi import compare


def _print_tables(summary: dict, workdir: str) -> None:
  print(summary['table1_markdown'])
  with open(os.path.join(workdir, 'label_efficiency.md')) as f:
    print(f.read())


if __name__ == '__main__':
  _app.run(
    compare.run_comparison,
    workdir_help='Directory for the runs, tables and plots.',
    default_config=os.path.join(os.path.dirname(__file__), '..', 'configs', 'ctw_compare.py'),
    after=_print_tables,
  )
