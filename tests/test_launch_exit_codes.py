"""Launchers exit with 2 and a one-line message for bad input, 1 with a traceback for an
internal error (docs/schemas.md, 'Exit codes')."""

import os
import subprocess
import sys

import ctw_files
import h5py
import numpy as np

from csiloc_jax.core import errors

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _run(*args):
  return subprocess.run(
    [sys.executable, *args], capture_output=True, text=True, cwd=REPO, timeout=300
  )


def test_bad_mmwave_file_exits_2_with_one_line(tmp_path):
  survey = tmp_path / 'survey.h5'
  with h5py.File(survey, 'w') as f:
    f['aoa'] = np.zeros((5, 3), np.float32)  # anchor_ap, anchor_kind, ap_position missing.
  proc = _run(
    'launch/mmwave.py',
    '--config=configs/mmwave_tiny.py:quick',
    f'--workdir={tmp_path / "w"}',
    f'--config.data.survey={survey}',
    f'--config.data.trajectory={survey}',
  )
  assert proc.returncode == errors.EXIT_BAD_INPUT, proc.stderr[-2000:]
  line = [x for x in proc.stderr.splitlines() if x.startswith('bad input:')]
  assert len(line) == 1 and str(survey) in line[0] and 'anchor_ap' in line[0]
  assert 'Traceback' not in proc.stderr


def test_bad_ctw_folder_exits_2(tmp_path):
  root = tmp_path / 'ctw'
  (root / 'CTW2020_labelled_data').mkdir(parents=True)
  (root / 'CTW2020_labelled_data' / 'file_1.hdf5').write_bytes(b'not hdf5')
  proc = _run(
    'launch/train.py',
    '--config=configs/ctw_model1.py:quick',
    f'--workdir={tmp_path / "w"}',
    f'--config.data.root={root}',
  )
  assert proc.returncode == errors.EXIT_BAD_INPUT, proc.stderr[-2000:]
  assert any(x.startswith('bad input: CTWFormatError') for x in proc.stderr.splitlines())
  assert 'Traceback' not in proc.stderr


def test_internal_error_exits_1_with_traceback(tmp_path):
  # A config value of the right type that the code cannot use is not a file problem:
  # an internal error with its traceback (raised once the data are read).
  root = ctw_files.write_dataset(
    tmp_path / 'ctw', num_labelled=40, num_unlabelled=0, shape=(4, 6, 2), per_file=40
  )
  proc = _run(
    'launch/train.py',
    '--config=configs/ctw_model1.py:quick',
    f'--workdir={tmp_path / "w"}',
    f'--config.data.root={root}',
    '--config.data.split_mode=diagonal',
  )
  assert proc.returncode == errors.EXIT_INTERNAL_ERROR, proc.stderr[-2000:]
  assert 'Traceback' in proc.stderr and 'bad input:' not in proc.stderr
