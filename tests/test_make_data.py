"""``launch/make_data.py --kind=ctw`` writes the CTW-2020 layout the reader accepts."""

import os
import subprocess
import sys

import h5py

from csiloc_jax.csi import reader

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_make_data_ctw_cli_writes_a_readable_ctw_layout(tmp_path):
  proc = subprocess.run(
    [
      sys.executable,
      os.path.join(REPO, 'launch', 'make_data.py'),
      '--kind=ctw',
      f'--out_dir={tmp_path}',
      '--num_labelled=30',
      '--num_unlabelled=20',
      '--num_antennas=12',
      '--num_subcarriers=10',
      '--num_measurements=4',
      '--samples_per_file=16',
      '--seed=3',
    ],
    capture_output=True,
    text=True,
    cwd=REPO,
    timeout=300,
  )
  assert proc.returncode == 0, proc.stderr[-2000:]
  lab = os.path.join(tmp_path, reader.LABELLED_DIR)
  assert sorted(os.listdir(lab)) == ['file_1.hdf5', 'file_2.hdf5']
  with h5py.File(os.path.join(lab, 'file_2.hdf5'), 'r') as f:
    assert f['H_Re'].shape == (14, 12, 10, 4)
    assert f['Pos'].shape == (14, 3)
    assert f['SNR'].shape == (14, 12, 4)
  files = reader.scan_folder(os.path.join(tmp_path, reader.UNLABELLED_DIR), require_positions=False)
  assert [sf.num_samples for sf in files] == [16, 4]
  assert not any(sf.has_positions for sf in files)
