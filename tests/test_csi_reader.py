"""The streaming CTW-2020 reader: layout checks with clear errors, chunk-independent
preprocessing, the feature cache, and exact zeros."""

import os
import threading
import time

import ctw_files
import h5py
import numpy as np
import pytest

from csiloc_jax.csi import features
from csiloc_jax.csi import input_pipeline
from csiloc_jax.csi import reader
from csiloc_jax.csi.simulator import environment

LAB = reader.LABELLED_DIR


def _folder(tmp_path, name=LAB):
  path = tmp_path / name
  path.mkdir(parents=True, exist_ok=True)
  return path


def _build(folder, tmp_path, **kw):
  return reader.build_cache(
    str(folder), str(tmp_path / 'cache'), require_positions=kw.pop('require_positions', True), **kw
  )


def _reader_threads():
  return [t for t in threading.enumerate() if t.name.startswith('ctw-reader')]


def test_reads_files_in_numeric_order_and_averages_measurements(tmp_path):
  folder = _folder(tmp_path)
  parts = [
    ctw_files.write_file(folder / f'file_{k}.hdf5', n, seed=k) for k, n in ((1, 5), (2, 7), (10, 4))
  ]
  arrays = _build(folder, tmp_path, chunk_size=3)
  expected = np.concatenate([p['H_Re'].mean(-1) for p in parts])[..., None]
  np.testing.assert_allclose(arrays.features, expected, rtol=1e-6, atol=1e-7)
  np.testing.assert_allclose(arrays.positions, np.concatenate([p['Pos'] for p in parts]), rtol=1e-6)
  assert arrays.meta['files'] == ['file_1.hdf5', 'file_2.hdf5', 'file_10.hdf5']


@pytest.mark.parametrize('feature, channels', [('real', 1), ('real_imag', 2), ('magnitude', 1)])
def test_feature_variants_and_chunk_independence(tmp_path, feature, channels):
  folder = _folder(tmp_path)
  data = ctw_files.write_file(folder / 'file_1.hdf5', 11, dtype=np.float64)
  a = _build(folder, tmp_path / 'a', feature=feature, chunk_size=2)
  b = _build(folder, tmp_path / 'b', feature=feature, chunk_size=256)
  assert a.features.shape == (11, 8, 12, channels)
  np.testing.assert_array_equal(a.features, b.features)
  h = (data['H_Re'] + 1j * data['H_Im']).mean(-1)
  ref = {
    'real': h.real[..., None],
    'magnitude': np.abs(h)[..., None],
    'real_imag': np.stack([h.real, h.imag], -1),
  }[feature]
  np.testing.assert_allclose(a.features, ref, rtol=1e-5, atol=1e-6)


def test_exact_zeros_never_produce_nan(tmp_path):
  folder = _folder(tmp_path)
  data = ctw_files.write_file(folder / 'file_1.hdf5', 6)
  h_re, h_im = data['H_Re'].copy(), data['H_Im'].copy()
  h_re[:, 3] = 0.0  # Antenna 3 failed in every measurement.
  h_im[:, 3] = 0.0
  h_re[0, 1, 2, :2] = 0.0  # Two failed measurements of one entry.
  h_im[0, 1, 2, :2] = 0.0
  ctw_files.write_file(folder / 'file_1.hdf5', 6, extra={'H_Re': h_re, 'H_Im': h_im})
  for average in ('mean', 'valid_mean'):
    arrays = _build(folder, tmp_path / average, average=average, feature='magnitude')
    assert np.all(np.isfinite(arrays.features))
    assert np.all(arrays.features[:, 3] == 0)
    norm = input_pipeline.feature_statistics(arrays.features, np.arange(6), 'per_feature')
    assert np.all(np.isfinite(norm(np.asarray(arrays.features))))
  valid = _build(folder, tmp_path / 'v2', average='valid_mean')
  expected = h_re[0, 1, 2, 2:].mean()
  assert valid.features[0, 1, 2, 0] == pytest.approx(expected, rel=1e-5)


def test_cache_is_reused_and_invalidated(tmp_path):
  folder = _folder(tmp_path)
  ctw_files.write_file(folder / 'file_1.hdf5', 5)
  first = _build(folder, tmp_path)
  path = os.path.dirname(first.features.filename)
  mtime = os.path.getmtime(os.path.join(path, 'features.npy'))
  again = _build(folder, tmp_path)
  assert os.path.dirname(again.features.filename) == path
  assert os.path.getmtime(os.path.join(path, 'features.npy')) == mtime
  other_feature = _build(folder, tmp_path, feature='magnitude')
  assert os.path.dirname(other_feature.features.filename) != path
  ctw_files.write_file(folder / 'file_1.hdf5', 5, seed=9)  # Source changed.
  os.utime(folder / 'file_1.hdf5', ns=(1, 10**18))
  changed = _build(folder, tmp_path)
  assert os.path.dirname(changed.features.filename) != path
  assert not np.allclose(changed.features, first.features)


def test_interrupted_cache_build_is_not_reused(tmp_path, monkeypatch):
  folder = _folder(tmp_path)
  ctw_files.write_file(folder / 'file_1.hdf5', 5)
  calls = []

  def boom(*args, **kwargs):
    calls.append(1)
    raise KeyboardInterrupt

  monkeypatch.setattr(features, 'extract_features', boom)
  with pytest.raises(KeyboardInterrupt):
    _build(folder, tmp_path)
  assert not _reader_threads()
  monkeypatch.undo()
  assert not any(n.startswith('.building') for n in os.listdir(tmp_path / 'cache'))
  arrays = _build(folder, tmp_path)
  assert arrays.features.shape[0] == 5


def _numpy_features(parts, feature, average):
  """The cached features computed directly from whole files, in complex64."""
  re = np.concatenate([p['H_Re'] for p in parts]).astype(np.float32)
  im = np.concatenate([p['H_Im'] for p in parts]).astype(np.float32)
  h = re + 1j * im
  if average == 'mean':
    avg = h.mean(-1)
  else:
    avg = h.sum(-1) / np.maximum(((re != 0) | (im != 0)).sum(-1), 1)
  avg = avg.astype(np.complex64)
  rel = np.abs(avg) / np.maximum(np.abs(avg).max((1, 2), keepdims=True), 1e-38)
  # Angle-delay power by explicit DFT matrices (antennas on their grid, then subcarriers).
  _, index, side = environment.array_geometry(avg.shape[1], 1.0)
  row, col = np.divmod(index, side)
  br, bc = np.divmod(np.arange(side * side), side)
  steer = np.exp(-2j * np.pi * (np.outer(br, row) + np.outer(bc, col)) / side)
  num_sub = avg.shape[2]
  taps = min(features.ANGLE_DELAY_TAPS, num_sub)
  idft = np.exp(2j * np.pi * np.outer(np.arange(num_sub), np.arange(taps)) / num_sub) / num_sub
  profile = np.abs(np.einsum('ba,nas,st->nbt', steer, avg.astype(np.complex128), idft)) ** 2
  profile /= np.maximum(profile.sum((1, 2), keepdims=True), 1e-300)
  cov = np.einsum('nas,nbs->nab', avg.astype(np.complex128), np.conj(avg))
  trace = np.einsum('naa->n', cov).real
  cov = cov / np.where(trace > 0, trace, np.inf)[:, None, None]
  return {
    'covariance': np.stack([cov.real, cov.imag], -1),
    'angle_delay': profile[..., None],
    'real': avg.real[..., None],
    'magnitude': np.abs(avg)[..., None],
    'magnitude_db': np.maximum(20 * np.log10(np.maximum(rel, 1e-30)), -60.0)[..., None],
    'real_imag': np.stack([avg.real, avg.imag], -1),
  }[feature]


@pytest.mark.parametrize('feature', features.FEATURES)
@pytest.mark.parametrize('average', features.AVERAGES)
def test_slices_across_files_and_chunks_match_numpy(tmp_path, monkeypatch, feature, average):
  # Files of unequal sizes, float32 and float64, exact zeros; chunks of 4 that divide no
  # file, cut into slices of 3 and 1 samples: many slices, so both buffer sets are
  # reused many times, with short last slices of a chunk and of a file.
  folder = _folder(tmp_path)
  parts = []
  for k, (n, dtype) in enumerate(
    ((7, np.float32), (3, np.float64), (11, np.float32), (6, np.float64)), start=1
  ):
    data = ctw_files.write_file(folder / f'file_{k}.hdf5', n, shape=(4, 6, 5), dtype=dtype, seed=k)
    data['H_Re'][:, 1, :, :2] = 0
    data['H_Im'][:, 1, :, :2] = 0
    data['H_Re'][0, 2] = data['H_Im'][0, 2] = 0  # Every measurement failed.
    ctw_files.write_file(
      folder / f'file_{k}.hdf5',
      n,
      shape=(4, 6, 5),
      dtype=dtype,
      seed=k,
      extra={'H_Re': data['H_Re'], 'H_Im': data['H_Im']},
    )
    parts.append(data)
  monkeypatch.setattr(reader, '_SLICE_BYTES', 3 * 2 * 4 * 6 * 5 * 4)
  real_average = features.average_measurements

  def slow_average(*args):
    time.sleep(0.005)  # The reader runs ahead now: a buffer it shares with us would change.
    return real_average(*args)

  monkeypatch.setattr(features, 'average_measurements', slow_average)
  arrays = _build(folder, tmp_path, feature=feature, average=average, chunk_size=4)
  np.testing.assert_allclose(
    arrays.features, _numpy_features(parts, feature, average), rtol=1e-6, atol=1e-6
  )
  np.testing.assert_array_equal(arrays.positions, np.concatenate([p['Pos'] for p in parts]))
  whole = _build(folder, tmp_path / 'whole', feature=feature, average=average, chunk_size=1000)
  with open(arrays.features.filename, 'rb') as a, open(whole.features.filename, 'rb') as b:
    assert a.read() == b.read()


def test_non_finite_value_mid_stream_names_it_and_leaves_no_cache(tmp_path, monkeypatch):
  folder = _folder(tmp_path)
  ctw_files.write_file(folder / 'file_1.hdf5', 6, seed=1)
  data = ctw_files.write_file(folder / 'file_2.hdf5', 10, seed=2)
  ctw_files.write_file(folder / 'file_3.hdf5', 5, seed=3)
  h_re, h_im = data['H_Re'].copy(), data['H_Im'].copy()
  h_im[8, 0, 0, 0] = np.inf  # Chunk [8, 10) of file 2 holds a bad H_Im value first,
  h_re[9, 1, 2, 1] = np.nan  # and a bad H_Re value in its next slice: H_Re is named.
  ctw_files.write_file(folder / 'file_2.hdf5', 10, seed=2, extra={'H_Re': h_re, 'H_Im': h_im})
  monkeypatch.setattr(reader, '_SLICE_BYTES', 1)  # One sample per slice.
  with pytest.raises(
    reader.CTWFormatError,
    match=r"file_2\.hdf5: dataset 'H_Re' holds a non-finite value \(nan\) "
    r'at index \(9, 1, 2, 1\)',
  ):
    _build(folder, tmp_path, chunk_size=4)
  assert os.listdir(tmp_path / 'cache') == []
  assert not _reader_threads()


def test_read_error_in_reader_thread_propagates_and_stops_it(tmp_path, monkeypatch):
  folder = _folder(tmp_path)
  for k in (1, 2):
    ctw_files.write_file(folder / f'file_{k}.hdf5', 9, seed=k)
  calls = []
  real_read = h5py.Dataset.read_direct

  def failing_read(self, *args, **kwargs):
    calls.append(1)
    if len(calls) == 7:
      raise OSError("Can't read data (simulated)")
    return real_read(self, *args, **kwargs)

  monkeypatch.setattr(h5py.Dataset, 'read_direct', failing_read)
  # The guarded HDF5 layer turns the library's error into the reader's, naming the file
  # and the dataset.
  with pytest.raises(
    reader.CTWFormatError,
    match=r"file_\d\.hdf5: reading dataset 'H_(Re|Im)' \[\d+:\d+\] failed "
    r"\(OSError: Can't read data \(simulated\)\)",
  ):
    _build(folder, tmp_path, chunk_size=2)
  assert os.listdir(tmp_path / 'cache') == []
  assert not _reader_threads()


# ---------------------------------------------------------------------------------------
# Bad input: one clear error per case, naming the file, the dataset and the expectation.


def test_missing_folder(tmp_path):
  with pytest.raises(reader.CTWFormatError, match='does not exist'):
    _build(tmp_path / 'nowhere', tmp_path)


def test_folder_without_files(tmp_path):
  folder = _folder(tmp_path)
  (folder / 'readme.txt').write_text('x')
  with pytest.raises(reader.CTWFormatError, match=r'no file_<k>\.hdf5'):
    _build(folder, tmp_path)


@pytest.mark.parametrize('key', ['H_Re', 'H_Im'])
def test_missing_dataset(tmp_path, key):
  folder = _folder(tmp_path)
  ctw_files.write_file(folder / 'file_1.hdf5', 4, drop=(key,))
  with pytest.raises(reader.CTWFormatError, match=rf"file_1\.hdf5: missing dataset '{key}'"):
    _build(folder, tmp_path)


def test_wrong_rank(tmp_path):
  folder = _folder(tmp_path)
  bad = np.zeros((4, 8, 12), np.float32)
  ctw_files.write_file(folder / 'file_1.hdf5', 4, extra={'H_Re': bad, 'H_Im': bad})
  with pytest.raises(reader.CTWFormatError, match=r'H_Re has shape \(4, 8, 12\), expected rank 4'):
    _build(folder, tmp_path)


def test_mismatched_re_im_shapes(tmp_path):
  folder = _folder(tmp_path)
  ctw_files.write_file(folder / 'file_1.hdf5', 4, extra={'H_Im': np.zeros((4, 8, 11, 3))})
  with pytest.raises(reader.CTWFormatError, match='H_Im has shape'):
    _build(folder, tmp_path)


def test_antenna_count_differs_between_files(tmp_path):
  folder = _folder(tmp_path)
  ctw_files.write_file(folder / 'file_1.hdf5', 4, shape=(8, 12, 3))
  ctw_files.write_file(folder / 'file_2.hdf5', 4, shape=(7, 12, 3))
  with pytest.raises(
    reader.CTWFormatError,
    match=r'file_2\.hdf5: dataset H_Re has antennas = 7, but \S*file_1\.hdf5 has 8; all files',
  ):
    _build(folder, tmp_path)


def test_subcarrier_count_differs_between_files(tmp_path):
  folder = _folder(tmp_path)
  ctw_files.write_file(folder / 'file_1.hdf5', 4, shape=(8, 12, 3))
  ctw_files.write_file(folder / 'file_2.hdf5', 4, shape=(8, 10, 3))
  with pytest.raises(reader.CTWFormatError, match='subcarriers = 10'):
    _build(folder, tmp_path)


def test_truncated_file(tmp_path):
  folder = _folder(tmp_path)
  ctw_files.write_file(folder / 'file_1.hdf5', 4)
  raw = (folder / 'file_1.hdf5').read_bytes()
  (folder / 'file_1.hdf5').write_bytes(raw[: len(raw) // 3])
  with pytest.raises(reader.CTWFormatError, match=r'file_1\.hdf5: not a readable HDF5'):
    _build(folder, tmp_path)


def test_non_hdf5_file(tmp_path):
  folder = _folder(tmp_path)
  (folder / 'file_1.hdf5').write_text('this is a CSV, not HDF5\n1,2,3\n')
  with pytest.raises(reader.CTWFormatError, match='not a readable HDF5'):
    _build(folder, tmp_path)


@pytest.mark.parametrize('value', [np.nan, np.inf])
def test_non_finite_values(tmp_path, value):
  folder = _folder(tmp_path)
  data = ctw_files.write_file(folder / 'file_1.hdf5', 6)
  h_im = data['H_Im'].copy()
  h_im[4, 2, 5, 1] = value
  ctw_files.write_file(folder / 'file_1.hdf5', 6, extra={'H_Im': h_im})
  with pytest.raises(
    reader.CTWFormatError,
    match=r"file_1\.hdf5: dataset 'H_Im' holds a non-finite value .* at index \(4, 2, 5, 1\); "
    r'expected finite numbers \(failed estimates are stored as exact zeros\)$',
  ):
    _build(folder, tmp_path, chunk_size=3)


def test_non_finite_position(tmp_path):
  folder = _folder(tmp_path)
  data = ctw_files.write_file(folder / 'file_1.hdf5', 6)
  pos = data['Pos'].copy()
  pos[2, 1] = np.nan
  ctw_files.write_file(folder / 'file_1.hdf5', 6, extra={'Pos': pos})
  with pytest.raises(reader.CTWFormatError, match="dataset 'Pos' holds a non-finite"):
    _build(folder, tmp_path)


def test_labelled_file_without_positions(tmp_path):
  folder = _folder(tmp_path)
  ctw_files.write_file(folder / 'file_1.hdf5', 4, with_pos=False)
  with pytest.raises(
    reader.CTWFormatError, match=r"file_1\.hdf5: labelled file has no dataset 'Pos'"
  ):
    _build(folder, tmp_path)


def test_positions_of_wrong_shape(tmp_path):
  folder = _folder(tmp_path)
  ctw_files.write_file(folder / 'file_1.hdf5', 4, extra={'Pos': np.zeros((4, 2))})
  with pytest.raises(reader.CTWFormatError, match=r'Pos has shape \(4, 2\), expected \(4, 3\)'):
    _build(folder, tmp_path)


def test_snr_of_wrong_shape(tmp_path):
  folder = _folder(tmp_path)
  ctw_files.write_file(folder / 'file_1.hdf5', 4, extra={'SNR': np.zeros((4, 8))})
  with pytest.raises(reader.CTWFormatError, match='SNR has shape'):
    _build(folder, tmp_path)


@pytest.mark.parametrize(
  'key, expected',
  [('SNR', r'dataset SNR has shape None, expected \(4, 8, 3\)'), ('Pos', r'Pos has shape None')],
)
def test_snr_or_pos_stored_as_a_group_is_named_as_such(tmp_path, key, expected):
  # An optional dataset that is a group (another tool's layout): the error says what
  # the reader found under that name, in its own words, not h5py's or a generic one.
  folder = _folder(tmp_path)
  ctw_files.write_file(folder / 'file_1.hdf5', 4, drop=(key,))
  with h5py.File(folder / 'file_1.hdf5', 'a') as f:
    f.create_group(key)
  with pytest.raises(reader.CTWFormatError, match=expected):
    _build(folder, tmp_path)


def test_unlabelled_and_labelled_shapes_must_match(tmp_path):
  root = tmp_path / 'root'
  _folder(root, LAB)
  _folder(root, reader.UNLABELLED_DIR)
  ctw_files.write_file(root / LAB / 'file_1.hdf5', 4, shape=(8, 12, 3))
  ctw_files.write_file(
    root / reader.UNLABELLED_DIR / 'file_1.hdf5', 4, shape=(8, 10, 3), with_pos=False
  )
  from csiloc_jax.core import config_utils

  cfg = config_utils.load_config('configs/ctw_model4.py').data
  with pytest.raises(reader.CTWFormatError, match='both sets must match'):
    reader.load_ctw(cfg, str(root), need_unlabelled=True)


def test_splits_are_deterministic_disjoint_and_complete():
  a = input_pipeline.split_indices(101, (0.9, 0.05, 0.05), seed=3)
  b = input_pipeline.split_indices(101, (0.9, 0.05, 0.05), seed=3)
  for x, y in zip(a, b):
    np.testing.assert_array_equal(x, y)
  assert sorted(np.concatenate(a).tolist()) == list(range(101))
  assert [len(p) for p in a] == [91, 5, 5]
  with pytest.raises(ValueError, match='sum to 1'):
    input_pipeline.split_indices(10, (0.5, 0.2), seed=0)


def test_positions_with_two_zero_coordinates_are_suspect_and_far_ones_refused():
  pos = np.array([[1, 2, 3], [0, 0, 5], [0, 4, 0], [0, 1, 2], [0, 0, 0]], np.float64)
  np.testing.assert_array_equal(
    reader._check_positions(pos, 'f.hdf5'), [False, True, True, False, True]
  )
  far = np.ones((5, 3))
  far[3] = [2e5, 0, 0]
  with pytest.raises(
    reader.CTWFormatError,
    match=r'f\.hdf5: dataset Pos has 1 position\(s\) beyond 1e\+05 m of the base station '
    r'\(first: sample 3, \[200000\.0, 0\.0, 0\.0\]\)',
  ):
    reader._check_positions(far, 'f.hdf5')


def test_validation_summary_counts_and_warns_about_suspect_samples(caplog):
  files = [
    reader.SourceFile('a.hdf5', 10, 4, 3, 2, True, True),
    reader.SourceFile('b.hdf5', 6, 4, 3, 2, True, False),
  ]
  with caplog.at_level('WARNING'):
    out = reader._validation_summary(files, {'a.hdf5': (2, 1), 'b.hdf5': (0, 0)}, 'DIR')
  assert out == {
    'num_samples': 16,
    'suspect_samples': 3,
    'half_zero_csi_samples': 2,
    'zero_position_samples': 1,
    'suspect_by_file': {'a.hdf5': 3},
    'checksummed_files': 1,
    'num_files': 2,
  }
  assert (
    'DIR: 3 suspect sample(s) of 16 (CSI with one part of a value exactly zero: 2; '
    'position with two or more coordinates exactly zero: 1), as damaged (zeroed) blocks of '
    "a file leave them; used as read. Per file: {'a.hdf5': 3}"
  ) in caplog.text


def test_magnitude_errors_name_the_part_the_index_and_the_samples_affected():
  # A slice of 4 samples starting at sample 10 of its file; two samples of H_Im hold a
  # damaged value (the real part is fine).
  h_re = np.zeros((4, 2, 3, 2), np.float32)
  h_im = h_re.copy()
  h_im[1, 0, 2, 1] = 3e20
  h_im[3, 1, 0, 0] = -5e21
  reader._check_magnitude(h_re, h_re, 'f.hdf5', 10)  # Nothing damaged: no error.
  with pytest.raises(
    reader.CTWFormatError,
    match=r"f\.hdf5: dataset 'H_Im' holds 3e\+20 at index \(11, 0, 2, 1\) \(2 sample\(s\) "
    r'of samples 10\.\.13 affected\); expected channel estimates below 1e\+1\d in magnitude',
  ):
    reader._check_magnitude(h_re, h_im, 'f.hdf5', 10)


def test_a_sample_is_suspect_from_exactly_the_threshold_of_half_zero_entries():
  n = reader.SUSPECT_HALF_ZEROS
  h_re = np.ones((3, 4, 2 * n, 1), np.float32)
  h_im = h_re.copy()
  h_re[0, 0, : n - 1] = 0.0  # One under the threshold.
  h_re[1, 0, :n] = 0.0  # Exactly at it.
  h_re[2, 0, :n] = h_im[2, 0, :n] = 0.0  # Failed estimates: zero in both parts.
  np.testing.assert_array_equal(reader._half_zero_samples(h_re, h_im), [False, True, False])


def test_the_rest_of_a_chunk_names_what_it_expected_to_read(tmp_path):
  path = tmp_path / 'file_1.hdf5'
  with h5py.File(path, 'w') as f:
    f.create_group('H_Re')
  sf = reader.SourceFile(str(path), 4, 2, 3, 2, False, False)
  with pytest.raises(
    reader.CTWFormatError, match=r"'H_Re' is a group, not a dataset; expected readable float CSI$"
  ):
    reader._check_rest_of_chunk(sf, 0, 4)


def test_layout_errors_name_the_dataset_and_what_was_expected(tmp_path):
  shape = (2, 4, 3, 2)
  group = tmp_path / 'group.hdf5'
  with h5py.File(group, 'w') as f:
    f.create_group('H_Re')
    f['H_Im'] = np.zeros(shape, np.float32)
  with pytest.raises(
    reader.CTWFormatError, match=r"group\.hdf5: 'H_Re' is not a dataset \(group\), expected one"
  ):
    reader._check_file(str(group), require_positions=False)
  # Data stored outside the file is refused with what the dataset should be.
  nbytes = int(np.prod(shape)) * 4
  (tmp_path / 'raw.bin').write_bytes(bytes(nbytes))
  external = tmp_path / 'external.hdf5'
  with h5py.File(external, 'w') as f:
    f.create_dataset('H_Re', shape, np.float32, external=[(str(tmp_path / 'raw.bin'), 0, nbytes)])
    f['H_Im'] = np.zeros(shape, np.float32)
  with pytest.raises(
    reader.CTWFormatError,
    match=r"external\.hdf5: dataset 'H_Re' is stored as external data; expected a float "
    r'dataset \(sample, antenna, subcarrier, measurement\) stored in the file itself',
  ):
    reader._check_file(str(external), require_positions=False)
  (tmp_path / 'pos.bin').write_bytes(bytes(2 * 3 * 8))
  positions = tmp_path / 'positions.hdf5'
  with h5py.File(positions, 'w') as f:
    f['H_Re'] = np.zeros(shape, np.float32)
    f['H_Im'] = np.zeros(shape, np.float32)
    f.create_dataset('Pos', (2, 3), np.float64, external=[(str(tmp_path / 'pos.bin'), 0, 48)])
  with pytest.raises(
    reader.CTWFormatError,
    match=r"dataset 'Pos' is stored as external data; expected positions of shape \(2, 3\)",
  ):
    reader._check_file(str(positions), require_positions=True)
