"""``launch/make_data.py --kind=ctw`` writes the CTW-2020 layout the reader accepts;
``--kind=mmwave`` writes a survey and a trajectory the mmWave reader accepts."""

import os
import subprocess
import sys

import h5py
import numpy as np

from csiloc_jax.csi import reader

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _make_data(*args: str) -> subprocess.CompletedProcess:
  return subprocess.run(
    [sys.executable, os.path.join(REPO, 'launch', 'make_data.py'), *args],
    capture_output=True,
    text=True,
    cwd=REPO,
    timeout=300,
  )


def test_make_data_ctw_cli_writes_a_readable_ctw_layout(tmp_path):
  proc = _make_data(
    '--kind=ctw',
    f'--out_dir={tmp_path}',
    '--num_labelled=30',
    '--num_unlabelled=20',
    '--num_antennas=12',
    '--num_subcarriers=10',
    '--num_measurements=4',
    '--samples_per_file=16',
    '--seed=3',
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


def test_make_data_mmwave_cli_writes_readable_survey_and_trajectory(tmp_path):
  from csiloc_jax.mmwave import floorplan
  from csiloc_jax.mmwave import reader as mm_reader

  proc = _make_data(
    '--kind=mmwave',
    f'--out_dir={tmp_path}',
    '--floorplan=two_rooms',
    '--num_survey=25',
    '--num_trajectory_steps=30',
    '--aoa_noise_deg=2',
    '--seed=4',
  )
  assert proc.returncode == 0, proc.stderr[-2000:]
  survey, truth = mm_reader.read_measurements(str(tmp_path / 'survey.h5'), ground_truth=True)
  walk = mm_reader.read_measurements(str(tmp_path / 'trajectory.h5'), require_time=True)
  mm_reader.check_compatible(survey, walk)
  rooms = len(floorplan.load_floorplan('two_rooms').room_names)
  assert survey.num_samples == 25 * rooms and walk.num_samples == 30
  assert np.all(np.diff(walk.time_s) > 0)
  assert sorted(set(survey.region.tolist())) == list(range(rooms))
  assert truth.position.shape == (survey.num_samples, 2)
  assert float(survey.attrs['aoa_noise_deg']) == 2.0
  # Some paths are received and some not, as on any floor with walls.
  assert np.isfinite(survey.aoa).any() and np.isnan(survey.aoa).any()
  # A flag of the other kind is refused.
  bad = _make_data(
    '--kind=mmwave',
    f'--out_dir={tmp_path}',
    '--scene=munich',
  )
  assert bad.returncode != 0 and 'applies to --kind=ctw --source=sionna only' in bad.stderr
