"""The guarded HDF5 layer (core.h5io) and the readers' plausibility checks, case by case:
a file that makes libhdf5 loop or crash is refused by name instead of hanging, any h5py
error becomes the reader's error, Fletcher-32 checksums catch damaged data, values out
of physical range are refused and suspect samples counted; the launchers exit 2 with
one line for all of it, and for a command line they cannot parse."""

import os
import subprocess
import sys
import time

import ctw_files
import h5py
import numpy as np
import pytest

from csiloc_jax.core import errors
from csiloc_jax.core import h5io
from csiloc_jax.csi import reader as ctw_reader
from csiloc_jax.mmwave import reader as mm_reader

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class _Error(errors.InputError):
  pass


def _survey(path, fletcher32=False, description=None, **overrides):
  """A small valid mmWave file (two APs, each with a direct path and a reflection)."""
  rng = np.random.default_rng(0)
  data = {
    'aoa': rng.uniform(-3, 3, (8, 4)).astype(np.float32),
    'anchor_ap': np.array([0, 0, 1, 1], np.int32),
    'anchor_kind': np.array([0, 1, 0, 1], np.int8),
    'ap_position': np.array([[0.0, 0.0], [6.0, 1.0]], np.float32),
    'time_s': np.arange(8, dtype=np.float64),
    'position': rng.uniform(0, 5, (8, 2)).astype(np.float32),
  }
  data.update(overrides)
  with h5py.File(path, 'w') as f:
    for key, value in data.items():
      f.create_dataset(key, data=value, fletcher32=fletcher32)
    if description is not None:
      f.attrs['description'] = description
  return str(path)


def _looping_file(path):
  """A file whose string attribute's global-heap object header is zeroed: libhdf5
  loops forever reading it (found by random damage; kept as a fixed case)."""
  _survey(path, description='a survey')
  data = bytearray(path.read_bytes())
  heap = data.find(b'GCOL')
  data[heap + 16 : heap + 32] = bytes(16)
  path.write_bytes(bytes(data))
  return str(path)


@pytest.fixture
def short_probe(monkeypatch):
  monkeypatch.setattr(h5io, 'PROBE_TIMEOUT_S', 3.0)


def test_a_file_that_makes_libhdf5_loop_is_refused_not_hung(tmp_path, short_probe):
  path = _looping_file(tmp_path / 'survey.h5')
  t0 = time.monotonic()
  with pytest.raises(mm_reader.MeasurementError, match='did not finish reading the metadata') as e:
    mm_reader.read_measurements(path)
  assert path in str(e.value) and time.monotonic() - t0 < 30
  # The answer is remembered: a second read fails at once, and healthy files still read.
  t0 = time.monotonic()
  with pytest.raises(mm_reader.MeasurementError):
    mm_reader.read_measurements(path)
  assert time.monotonic() - t0 < 1
  assert mm_reader.read_measurements(_survey(tmp_path / 'ok.h5')).num_anchors == 4


def test_a_crashing_probe_is_refused_by_name(tmp_path, monkeypatch):
  crash = tmp_path / 'crash.py'
  crash.write_text(
    'import os, signal, sys\n'
    'print(\'"ready"\', flush=True)\n'
    'sys.stdin.readline()\n'
    'os.kill(os.getpid(), signal.SIGSEGV)\n'
  )
  monkeypatch.setattr(h5io, '_PROBE_SCRIPT', str(crash))
  monkeypatch.setattr(h5io, '_PROBER', h5io._Prober())
  h5io.clear_cache()
  path = _survey(tmp_path / 's.h5')
  with pytest.raises(mm_reader.MeasurementError, match=r'crashed .*SIGSEGV') as e:
    mm_reader.read_measurements(path)
  assert path in str(e.value)
  h5io._PROBER.close()


def test_any_h5py_error_becomes_the_readers_error(tmp_path, monkeypatch):
  path = _survey(tmp_path / 's.h5')
  real = h5py.Dataset.__getitem__

  def failing(self, *args):
    if self.name == '/anchor_kind':
      raise RuntimeError('Unable to synchronously check link existence (simulated)')
    return real(self, *args)

  monkeypatch.setattr(h5py.Dataset, '__getitem__', failing)
  with pytest.raises(
    mm_reader.MeasurementError,
    match=r"s\.h5: reading dataset 'anchor_kind' failed \(RuntimeError: Unable to "
    r'synchronously check link existence \(simulated\)\); expected a 1-D integer dataset',
  ):
    mm_reader.read_measurements(path)


def test_checksummed_data_damaged_after_writing_is_refused(tmp_path):
  path = _survey(tmp_path / 's.h5', fletcher32=True)
  assert mm_reader.read_measurements(path).validation['checksummed']
  with h5py.File(path, 'r') as f:
    offset = f['aoa'].id.get_chunk_info(0).byte_offset
  data = bytearray((tmp_path / 's.h5').read_bytes())
  data[offset + 5] ^= 0x10  # One bit of one AoA: a plausible angle all the same.
  (tmp_path / 's.h5').write_bytes(bytes(data))
  with pytest.raises(
    mm_reader.MeasurementError,
    match=r"reading dataset 'aoa' \(Fletcher-32 checksummed: a failure means damaged "
    r'data\) failed',
  ):
    mm_reader.read_measurements(path)
  unchecked = _survey(tmp_path / 'u.h5')
  assert not mm_reader.read_measurements(unchecked).validation['checksummed']


def test_a_name_damaged_into_invalid_utf8_is_listed_not_fatal(tmp_path):
  # A bit flip in a dataset's name ('H_Im' -> b'\xc8_Im', found by random damage) once
  # ended the probe with a JSON error: now the name is listed, escaped, and the reader
  # says which dataset is missing.
  folder = tmp_path / ctw_reader.LABELLED_DIR
  folder.mkdir()
  with h5py.File(folder / 'file_1.hdf5', 'w') as f:
    f['H_Re'] = np.ones((2, 2, 2, 2), np.float32)
    f[b'\xc8_Im'] = np.ones((2, 2, 2, 2), np.float32)
    f.attrs[b'\xff'] = 1
  with pytest.raises(
    ctw_reader.CTWFormatError, match=r"missing dataset 'H_Im' \(found \['H_Re', '\\\\xc8_Im'\]\)"
  ):
    ctw_reader.build_cache(str(folder), str(tmp_path / 'cache'))


def test_data_claimed_past_the_end_of_the_file_is_refused_before_reading(tmp_path, monkeypatch):
  path = _survey(tmp_path / 's.h5')
  layout = h5io.describe(path, _Error)
  aoa = dict(layout['objects']['aoa'], offset=os.path.getsize(path) - 8)
  fake = dict(layout, objects=dict(layout['objects'], aoa=aoa))
  monkeypatch.setattr(h5io, 'describe', lambda p, e: fake)
  with pytest.raises(mm_reader.MeasurementError, match=r"'aoa': its data .* ends past the end"):
    mm_reader.read_measurements(path)


def test_mmwave_values_out_of_range_and_contradicting_anchors_are_refused(tmp_path):
  with pytest.raises(mm_reader.MeasurementError, match=r"'ap_position' has 1 row\(s\) beyond"):
    mm_reader.read_measurements(
      _survey(tmp_path / 'a.h5', ap_position=np.array([[0.0, 0.0], [3e7, 1.0]], np.float32))
    )
  with pytest.raises(mm_reader.MeasurementError, match=r'more than one direct-path anchor'):
    mm_reader.read_measurements(
      _survey(tmp_path / 'b.h5', anchor_kind=np.zeros(4, np.int8))  # Two per AP.
    )
  far = np.full((8, 2), 2e4, np.float32)
  path = _survey(tmp_path / 'c.h5', position=far)
  mm_reader.read_measurements(path)  # Ground truth is not read for training.
  with pytest.raises(mm_reader.MeasurementError, match=r"'position' has 8 row\(s\) beyond"):
    mm_reader.read_ground_truth(path)
  with pytest.raises(mm_reader.MeasurementError, match='must be radians'):
    # float64 beyond float32's range is a wrong value, not an infinity.
    mm_reader.read_measurements(_survey(tmp_path / 'd.h5', aoa=np.full((8, 4), 1e300)))


def test_zeroed_aoas_are_counted(tmp_path):
  aoa = np.random.default_rng(1).uniform(-3, 3, (8, 4)).astype(np.float32)
  aoa[2:5] = 0.0  # What a zeroed block leaves: three samples of exact zeros.
  aoa[6, 0] = 0.0  # One exact zero is an angle like any other.
  meas = mm_reader.read_measurements(_survey(tmp_path / 's.h5', aoa=aoa))
  assert meas.validation == {'checksummed': False, 'num_samples': 8, 'suspect_samples': 3}


def test_ctw_values_out_of_range_are_refused_and_half_zeros_counted(tmp_path):
  def build(name, **extra):
    folder = tmp_path / name / ctw_reader.LABELLED_DIR
    folder.mkdir(parents=True)
    data = ctw_files.write_file(folder / 'file_1.hdf5', 6, (4, 40, 2), seed=3)
    if extra:
      data.update({k: v(data[k].copy()) for k, v in extra.items()})
      ctw_files.write_file(folder / 'file_1.hdf5', 6, (4, 40, 2), seed=3, extra=data)
    return ctw_reader.build_cache(str(folder), str(tmp_path / name / 'c'), require_positions=True)

  def spike(h):
    h[4, 1, 2, 1] = 3e20  # An exponent bit flipped: finite, but no channel estimate.
    return h

  with pytest.raises(
    ctw_reader.CTWFormatError,
    match=r"file_1\.hdf5: dataset 'H_Re' holds 3e\+20 at index \(4, 1, 2, 1\) \(1 sample",
  ):
    build('spike', H_Re=spike)

  def far(pos):
    pos[1, 0] = 2e6
    return pos

  with pytest.raises(ctw_reader.CTWFormatError, match=r'Pos has 1 position\(s\) beyond'):
    build('far', Pos=far)

  def zero_block(h):
    h[2:4, :, 10:30] = 0.0  # H_Re only: two samples with half-zero values.
    return h

  def failed(h):
    h[5, :, :, 0] = 0.0  # A failed estimate: zero in both parts, valid.
    return h

  arrays = build('zeros', H_Re=lambda h: failed(zero_block(h)), H_Im=failed)
  found = arrays.meta['validation']
  assert found['suspect_samples'] == found['half_zero_csi_samples'] == 2
  assert found['suspect_by_file'] == {'file_1.hdf5': 2}
  assert found['checksummed_files'] == 0 and found['num_files'] == 1


def test_an_abandoned_cache_build_is_removed(tmp_path):
  folder = tmp_path / ctw_reader.LABELLED_DIR
  folder.mkdir()
  ctw_files.write_file(folder / 'file_1.hdf5', 4)
  cache = tmp_path / 'cache'
  dead = subprocess.Popen([sys.executable, '-c', 'pass'])
  dead.wait()
  abandoned = cache / f'{ctw_reader._building_prefix()}{dead.pid}-x'
  alive = cache / f'{ctw_reader._building_prefix()}{os.getppid()}-y'
  for d in (abandoned, alive):
    d.mkdir(parents=True)
    (d / 'features.npy').write_bytes(b'partial')
  ctw_reader.build_cache(str(folder), str(cache), require_positions=True)
  assert not abandoned.exists() and alive.exists()


# --------------------------------------------------------------------------------------
# Launchers.


def _launch(*args, **env):
  return subprocess.run(
    [sys.executable, *args],
    capture_output=True,
    text=True,
    cwd=REPO,
    timeout=300,
    env=dict(os.environ, JAX_PLATFORMS='cpu', **env),
  )


def _one_bad_input_line(proc, *needles):
  assert proc.returncode == errors.EXIT_BAD_INPUT, proc.stderr[-3000:]
  lines = [x for x in proc.stderr.splitlines() if x.startswith('bad input:')]
  assert len(lines) == 1, proc.stderr[-3000:]
  assert 'Traceback' not in proc.stderr, proc.stderr[-3000:]
  for needle in needles:
    assert needle in lines[0], lines[0]


def test_launcher_refuses_a_looping_survey_with_one_line(tmp_path):
  survey = _looping_file(tmp_path / 'survey.h5')
  proc = _launch(
    'launch/mmwave.py',
    '--config=configs/mmwave_tiny.py:quick',
    f'--workdir={tmp_path / "w"}',
    f'--config.data.survey={survey}',
    f'--config.data.trajectory={_survey(tmp_path / "t.h5")}',
    CSILOC_H5_PROBE_TIMEOUT_S='3',
  )
  _one_bad_input_line(proc, 'MeasurementError', survey, 'did not finish')


@pytest.mark.parametrize(
  'before, after, needle',
  [
    ([], ['--config.finetune.num_epohs=3'], 'num_epohs'),
    ([], ['--config.finetune.num_epochs=three'], 'three'),
    # An override before the config it overrides (absl's flag errors, all of them).
    (['--config.finetune.num_epochs=3'], [], 'before a value for --config'),
  ],
)
def test_launcher_command_line_errors_exit_2_with_one_line(tmp_path, before, after, needle):
  proc = _launch(
    'launch/train.py',
    *before,
    '--config=configs/ctw_model1.py:quick',
    f'--workdir={tmp_path}',
    *after,
  )
  _one_bad_input_line(proc, 'command line', needle)
  assert not (tmp_path / 'config.json').exists()
