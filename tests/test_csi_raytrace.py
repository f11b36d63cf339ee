"""Ray-traced CTW-layout sets (Sionna RT): layout, determinism, physics, the reader."""

import dataclasses
import os
import subprocess
import sys

import h5py
import numpy as np
import pytest

from csiloc_jax.core import config_utils
from csiloc_jax.csi import raytrace
from csiloc_jax.csi import reader

# A small street scene, few rays and subcarriers: seconds on 2 cores.
CONFIG = raytrace.RaytraceConfig(
  scene='simple_street_canyon',
  area_radius_m=150.0,
  max_depth=2,
  samples_per_src=20_000,
  max_paths_per_src=100_000,
  batch_size=32,
)
SIZES = dict(num_labelled=24, num_unlabelled=12, num_antennas=56, num_subcarriers=8)


def _generate(out, config=CONFIG, **kw):
  args = dict(SIZES, num_measurements=5, seed=4, config=config, samples_per_file=10)
  args.update(kw)
  return raytrace.generate_raytraced_dataset(str(out), **args)


@pytest.fixture(scope='module')
def traced(tmp_path_factory):
  out = tmp_path_factory.mktemp('sionna')
  return out, _generate(out)


def _read(folder):
  files = reader.list_files(str(folder))
  data = {}
  for path in files:
    with h5py.File(path, 'r') as f:
      for k in f.keys():
        data.setdefault(k, []).append(f[k][()])
  return files, {k: np.concatenate(v) for k, v in data.items()}


def test_ctw_layout(traced):
  out, summary = traced
  files, lab = _read(out / reader.LABELLED_DIR)
  assert [os.path.basename(f) for f in files] == ['file_1.hdf5', 'file_2.hdf5', 'file_3.hdf5']
  assert lab['H_Re'].shape == lab['H_Im'].shape == (24, 56, 8, 5)
  assert lab['SNR'].shape == (24, 56, 5) and lab['Pos'].shape == (24, 3)
  assert lab['H_Re'].dtype == np.float32
  _, unl = _read(out / reader.UNLABELLED_DIR)
  assert unl['H_Re'].shape == (12, 56, 8, 5) and 'Pos' not in unl
  with h5py.File(files[0], 'r') as f:
    assert f.attrs['source'] == 'sionna' and f.attrs['scene'] == 'simple_street_canyon'
  # The reader takes the set unchanged: validation, then the streaming feature cache.
  assert len(reader.scan_folder(str(out / reader.LABELLED_DIR), require_positions=True)) == 3
  data = config_utils.load_config('configs/ctw_model1.py').data
  sets = reader.load_ctw(data, str(out), need_unlabelled=True)
  assert sets['labelled'].positions.shape == (24, 3)
  assert sets['unlabelled'].features.shape[0] == 12
  stats = summary['raytrace']
  assert stats['traced'] >= 36 and 0 <= stats['los_fraction'] <= 1
  assert stats['paths_per_sample'] >= 1
  assert set(stats['snr_db_percentiles']) == {'p5', 'p25', 'p50', 'p75', 'p95'}


def test_values_zeros_and_positions(traced):
  out, _ = traced
  _, lab = _read(out / reader.LABELLED_DIR)
  h = lab['H_Re'] + 1j * lab['H_Im']
  assert np.isfinite(h).all() and np.isfinite(lab['SNR']).all()
  # Exact zeros exactly where the per-antenna, per-measurement SNR is under the floor.
  failed = lab['SNR'] < CONFIG.radio.zero_snr_threshold_db
  zero = np.all(h == 0, axis=2)
  assert np.array_equal(zero, failed)
  assert (np.abs(h[~np.broadcast_to(failed[:, :, None], h.shape)]) > 0).all()
  # Each measurement has its own noise: repeated measurements differ.
  ok = ~failed[:, :, 0] & ~failed[:, :, 1]
  assert np.all(h[..., 0][ok] != h[..., 1][ok])
  # Base-station frame: the array at the origin looking along +x, UEs in front and below.
  pos = lab['Pos']
  assert (pos[:, 0] > 0).all() and (pos[:, 2] < 0).all()
  dist = np.linalg.norm(pos[:, :2], axis=-1)
  assert (dist <= CONFIG.area_radius_m + 1e-6).all() and (dist >= CONFIG.min_distance_m).all()
  bearing = np.degrees(np.abs(np.arctan2(pos[:, 1], pos[:, 0])))
  assert (bearing <= CONFIG.sector_half_angle_deg + 1e-6).all()


def test_deterministic_and_chunk_independent(traced, tmp_path):
  out, _ = traced
  _generate(tmp_path, chunk_size=5, samples_per_file=7)
  for folder in (reader.LABELLED_DIR, reader.UNLABELLED_DIR):
    _, a = _read(out / folder)
    _, b = _read(tmp_path / folder)
    assert a.keys() == b.keys()
    for k in a:
      if k == 'Pos':
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)
        continue
      # The solver's paths are fixed, but Dr.Jit's threads may sum their float32 terms
      # in another order under load (seen once: 8e-5 relative, 1e-11 absolute). A chunk-
      # dependent noise stream or ray batch would differ by the noise's size.
      scale = float(np.abs(a[k]).max())
      np.testing.assert_allclose(a[k], b[k], rtol=1e-3, atol=1e-6 * scale, err_msg=k)


def test_tracks_are_centimetres_apart(tmp_path):
  config = dataclasses.replace(CONFIG, position_layout='tracks', track_length=16)
  _generate(tmp_path, config=config, num_labelled=20, num_unlabelled=0)
  _, lab = _read(tmp_path / reader.LABELLED_DIR)
  step = np.linalg.norm(np.diff(lab['Pos'][:, :2], axis=0), axis=-1)
  # Most consecutive samples are neighbours on a track (a track ends where the next
  # begins; positions without a path leave a gap of a few steps).
  assert np.median(step) == pytest.approx(config.track_step_m, rel=1e-3)


def test_bad_settings_are_refused(tmp_path):
  with pytest.raises(ValueError, match='position_layout'):
    raytrace.RaytraceConfig(position_layout='grid')
  with pytest.raises(ValueError, match='no_such_scene'):
    _generate(tmp_path, config=dataclasses.replace(CONFIG, scene='no_such_scene'))
  with pytest.raises(ValueError, match='num_labelled'):
    _generate(tmp_path, num_labelled=-1)


def test_make_data_launcher(tmp_path):
  # The user's command, at a toy size: the flags reach the ray-traced source.
  out = tmp_path / 'rt'
  cmd = [
    sys.executable,
    'launch/make_data.py',
    '--kind=ctw',
    '--source=sionna',
    '--scene=simple_street_canyon',
    '--positions=tracks',
    f'--out_dir={out}',
    '--num_labelled=3',
    '--num_unlabelled=2',
    '--num_subcarriers=4',
    '--num_measurements=2',
  ]
  repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  result = subprocess.run(cmd, capture_output=True, text=True, cwd=repo)
  assert result.returncode == 0, result.stderr[-2000:]
  assert '"position_layout": "tracks"' in result.stdout
  with h5py.File(out / reader.LABELLED_DIR / 'file_1.hdf5', 'r') as f:
    assert f['H_Re'].shape == (3, 56, 4, 2) and f.attrs['source'] == 'sionna'
  bad = subprocess.run(
    [sys.executable, 'launch/make_data.py', '--kind=mmwave', '--scene=munich', f'--out_dir={out}'],
    capture_output=True,
    text=True,
    cwd=repo,
  )
  assert bad.returncode != 0 and '--scene applies to --kind=ctw --source=sionna' in bad.stderr
