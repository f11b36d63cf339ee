"""Tests of the synthetic CTW-2020 generator: layout, determinism, zeros, physics."""

import dataclasses
import os

import h5py
import numpy as np
import pytest

from csiloc_jax.core import config_utils
from csiloc_jax.csi import reader
from csiloc_jax.csi import simulator
from csiloc_jax.csi import train
from csiloc_jax.csi.simulator import measurement

C = simulator.SPEED_OF_LIGHT

# A channel with nothing but the line of sight: no buildings, scatterers, ground
# reflection, shadowing or element gain errors.
PURE_LOS = simulator.ChannelModelConfig(
  building_probability=0.0,
  num_scatterers=0,
  ground_reflection=0.0,
  shadowing_std_db=0.0,
  element_gain_std_db=0.0,
)


def _read_set(folder):
  """Concatenates a CTW folder's files in file-number order -> dict of arrays."""
  out = {}
  for path in reader.list_files(folder):
    with h5py.File(path, 'r') as f:
      for key in f.keys():
        out.setdefault(key, []).append(f[key][...])
  return {k: np.concatenate(v) for k, v in out.items()}


@pytest.fixture(scope='module')
def small_set(tmp_path_factory):
  out = str(tmp_path_factory.mktemp('ctw'))
  summary = simulator.generate_ctw_dataset(
    out,
    num_labelled=20,
    num_unlabelled=30,
    num_antennas=56,
    num_subcarriers=16,
    num_measurements=5,
    samples_per_file=8,
    seed=3,
    chunk_size=5,
  )
  return out, summary


def test_layout_names_shapes_dtypes(small_set):
  out, summary = small_set
  # The two CTW folders, plus the record of a finished set (docs/schemas.md).
  assert sorted(os.listdir(out)) == [
    'CTW2020_labelled_data',
    'CTW2020_unlabelled_data',
    'generated.done.json',
  ]
  lab = os.path.join(out, 'CTW2020_labelled_data')
  unl = os.path.join(out, 'CTW2020_unlabelled_data')
  assert sorted(os.listdir(lab)) == ['file_1.hdf5', 'file_2.hdf5', 'file_3.hdf5']
  assert sorted(os.listdir(unl)) == [f'file_{k}.hdf5' for k in (1, 2, 3, 4)]
  sizes = {'labelled': [8, 8, 4], 'unlabelled': [8, 8, 8, 6]}
  for folder, name in ((lab, 'labelled'), (unl, 'unlabelled')):
    for k, n in enumerate(sizes[name]):
      with h5py.File(os.path.join(folder, f'file_{k + 1}.hdf5'), 'r') as f:
        expected = {'H_Re', 'H_Im', 'SNR'} | ({'Pos'} if name == 'labelled' else set())
        assert set(f.keys()) == expected
        assert f['H_Re'].shape == f['H_Im'].shape == (n, 56, 16, 5)
        assert f['SNR'].shape == (n, 56, 5)
        if name == 'labelled':
          assert f['Pos'].shape == (n, 3)
        assert all(f[key].dtype == np.float32 for key in f.keys())
  assert summary['labelled']['files'] == [
    os.path.join(os.path.abspath(lab), f'file_{k}.hdf5') for k in (1, 2, 3)
  ]
  assert summary['labelled']['num_samples'] == 20
  assert summary['unlabelled']['num_samples'] == 30
  assert summary['shape'] == (56, 16, 5)
  on_disk = sum(os.path.getsize(p) for s in ('labelled', 'unlabelled') for p in summary[s]['files'])
  assert summary['bytes_written'] == on_disk
  # The raw data alone is 2 * 50 * 56 * 16 * 5 * 4 bytes; HDF5 adds little.
  assert 2 * 50 * 56 * 16 * 5 * 4 < on_disk < 2 * 50 * 56 * 16 * 5 * 4 * 1.2
  assert not any(n.endswith('.partial') for d in (lab, unl) for n in os.listdir(d))


def test_values_finite_positions_in_area(small_set):
  out, summary = small_set
  config = simulator.ChannelModelConfig()
  lo, hi = np.array(config.area_min), np.array(config.area_max)
  lab = _read_set(os.path.join(out, 'CTW2020_labelled_data'))
  unl = _read_set(os.path.join(out, 'CTW2020_unlabelled_data'))
  for data in (lab, unl):
    for key, value in data.items():
      assert np.isfinite(value).all(), key
    assert np.abs(data['H_Re']).max() > 0
  pos = lab['Pos']
  assert np.all(pos >= lo) and np.all(pos <= hi)
  # Spread over hundreds of metres, as the real set.
  assert np.ptp(pos[:, 0]) > 150 and np.ptp(pos[:, 1]) > 250
  # The summary's ranges cover both sets (unlabelled positions are not in the files).
  assert np.all(np.array(summary['position_min']) <= pos.min(0) + 1e-3)
  assert np.all(np.array(summary['position_min']) >= lo)
  assert np.all(np.array(summary['position_max']) >= pos.max(0) - 1e-3)
  assert np.all(np.array(summary['position_max']) <= hi)


def test_float64_holds_the_float32_values(small_set, tmp_path):
  out, _ = small_set
  simulator.generate_ctw_dataset(
    str(tmp_path),
    num_labelled=20,
    num_unlabelled=30,
    num_antennas=56,
    num_subcarriers=16,
    num_measurements=5,
    samples_per_file=8,
    seed=3,
    dtype='float64',
  )
  for folder in ('CTW2020_labelled_data', 'CTW2020_unlabelled_data'):
    d32 = _read_set(os.path.join(out, folder))
    d64 = _read_set(os.path.join(str(tmp_path), folder))
    assert d32.keys() == d64.keys()
    for key in d32:
      assert d64[key].dtype == np.float64
      if key == 'Pos':  # positions are float64 inside: float32 file is the rounding
        np.testing.assert_allclose(d64[key], d32[key], rtol=1e-6)
      else:
        np.testing.assert_array_equal(d64[key], d32[key].astype(np.float64))


def test_same_seed_same_bytes_other_seed_differs(tmp_path):
  kwargs = dict(
    num_labelled=6,
    num_unlabelled=9,
    num_antennas=8,
    num_subcarriers=12,
    num_measurements=3,
    samples_per_file=4,
  )
  paths = []
  for name, seed in (('a', 1), ('b', 1), ('c', 2)):
    summary = simulator.generate_ctw_dataset(str(tmp_path / name), seed=seed, **kwargs)
    paths.append(summary['labelled']['files'] + summary['unlabelled']['files'])
  for pa, pb in zip(paths[0], paths[1]):
    with open(pa, 'rb') as fa, open(pb, 'rb') as fb:
      assert fa.read() == fb.read()
  with h5py.File(paths[0][0], 'r') as fa, h5py.File(paths[2][0], 'r') as fc:
    assert not np.array_equal(fa['H_Re'][...], fc['H_Re'][...])
    assert not np.array_equal(fa['Pos'][...], fc['Pos'][...])


def test_output_independent_of_chunk_size_and_file_size(tmp_path):
  # 37 samples in one chunk are also split across the worker threads (8+ per piece).
  kwargs = dict(
    num_labelled=37,
    num_unlabelled=11,
    num_antennas=8,
    num_subcarriers=12,
    num_measurements=3,
    seed=5,
  )
  simulator.generate_ctw_dataset(str(tmp_path / 'a'), chunk_size=3, samples_per_file=5, **kwargs)
  simulator.generate_ctw_dataset(str(tmp_path / 'b'), chunk_size=64, samples_per_file=512, **kwargs)
  assert len(os.listdir(tmp_path / 'a' / 'CTW2020_labelled_data')) == 8
  assert len(os.listdir(tmp_path / 'b' / 'CTW2020_labelled_data')) == 1
  for folder in ('CTW2020_labelled_data', 'CTW2020_unlabelled_data'):
    a = _read_set(str(tmp_path / 'a' / folder))
    b = _read_set(str(tmp_path / 'b' / folder))
    assert a.keys() == b.keys()
    for key in a:
      np.testing.assert_array_equal(a[key], b[key])
  # The in-memory path gives the same samples, from any start index.
  model = simulator.make_channel_model(5, 8, 12)
  re, im, snr, pos = simulator.generate_samples(model, simulator.LABELLED_SET, 4, 9, 3)
  lab = _read_set(str(tmp_path / 'a' / 'CTW2020_labelled_data'))
  np.testing.assert_array_equal(re, lab['H_Re'][4:9])
  np.testing.assert_array_equal(im, lab['H_Im'][4:9])
  np.testing.assert_array_equal(snr, lab['SNR'][4:9])
  np.testing.assert_array_equal(pos.astype(np.float32), lab['Pos'][4:9])


def test_labelled_and_unlabelled_share_environment_not_positions():
  model = simulator.make_channel_model(0, 8, 12)
  p_lab = simulator.sample_positions(model, simulator.LABELLED_SET, 0, 50)
  p_unl = simulator.sample_positions(model, simulator.UNLABELLED_SET, 0, 50)
  assert not np.allclose(p_lab, p_unl)
  # One environment: each set's samples are the measurement of the shared model's
  # noise-free channel at that set's own positions (a set with its own scatterers, or
  # channels drawn from the other set's positions, would differ here).
  for set_id, positions in ((simulator.LABELLED_SET, p_lab), (simulator.UNLABELLED_SET, p_unl)):
    re, im, snr, pos = simulator.generate_samples(model, set_id, 0, 4, 3)
    np.testing.assert_array_equal(pos, positions[:4])
    clean = simulator.clean_channel(model, positions[:4])
    want = measurement.measure_indices(model, set_id, 0, clean, 3)
    for got, expected in zip((re, im, snr), want):
      np.testing.assert_array_equal(got, expected)
  # The noise-free channel at a position does not depend on the set it came from, nor
  # on the other positions computed with it.
  mixed = np.concatenate([p_lab[:3], p_unl[:3]])
  np.testing.assert_allclose(
    simulator.clean_channel(model, mixed),
    np.concatenate(
      [simulator.clean_channel(model, p_lab[:3]), simulator.clean_channel(model, p_unl[:3])]
    ),
    rtol=1e-6,
    atol=1e-12,
  )
  # Positions depend on (seed, set, index) only, not on the array/OFDM shape.
  other = simulator.make_channel_model(0, 30, 7)
  np.testing.assert_array_equal(
    p_lab, simulator.sample_positions(other, simulator.LABELLED_SET, 0, 50)
  )


def test_exact_zeros_in_pairs_where_snr_below_threshold():
  # A high threshold makes failures common enough to see in a few samples.
  config = simulator.ChannelModelConfig(zero_snr_threshold_db=22.0)
  model = simulator.make_channel_model(1, 8, 12, config)
  re, im, snr, _ = simulator.generate_samples(model, simulator.UNLABELLED_SET, 0, 60, 4)
  zero_re, zero_im = re == 0, im == 0
  np.testing.assert_array_equal(zero_re, zero_im)
  failed = np.broadcast_to((snr < 22.0)[:, :, None, :], re.shape)
  np.testing.assert_array_equal(zero_re, failed)
  assert 0.05 < failed.mean() < 0.95
  # Zeros are +0.0, like a real writer's, not -0.0.
  assert not np.signbit(re[zero_re]).any() and not np.signbit(im[zero_im]).any()


def test_default_zero_fraction_is_a_few_percent():
  model = simulator.make_channel_model(0, 8, 4)
  re, _, snr, _ = simulator.generate_samples(model, simulator.UNLABELLED_SET, 0, 600, 5)
  fraction = np.mean(re == 0)
  assert 0.005 < fraction < 0.10
  assert np.isclose(fraction, np.mean(snr < model.config.zero_snr_threshold_db))
  # Realistic spread of per-antenna SNRs, in dB.
  assert 15 < np.median(snr) < 35 and np.ptp(snr) > 30


@pytest.mark.parametrize(
  'num_antennas, num_subcarriers, num_measurements',
  [(1, 1, 1), (8, 12, 3), (30, 7, 2), (64, 5, 1), (56, 3, 7)],
)
def test_any_shape_works(tmp_path, num_antennas, num_subcarriers, num_measurements):
  summary = simulator.generate_ctw_dataset(
    str(tmp_path),
    num_labelled=3,
    num_unlabelled=2,
    num_antennas=num_antennas,
    num_subcarriers=num_subcarriers,
    num_measurements=num_measurements,
    seed=0,
  )
  shape = (num_antennas, num_subcarriers, num_measurements)
  assert summary['shape'] == shape
  with h5py.File(summary['labelled']['files'][0], 'r') as f:
    assert f['H_Re'].shape == (3,) + shape
    assert f['SNR'].shape == (3, num_antennas, num_measurements)
    assert np.isfinite(f['H_Re'][...]).all() and np.isfinite(f['H_Im'][...]).all()


def test_array_geometry():
  lam = simulator.SPEED_OF_LIGHT / 1.27e9
  pos, index, side = simulator.array_geometry(56, lam / 2)
  assert side == 8 and pos.shape == (56, 3) and len(np.unique(index)) == 56
  assert 64 - len(index) == 8
  np.testing.assert_array_equal(pos[:, 0], 0.0)
  # Half-wavelength grid centred on the origin.
  np.testing.assert_allclose(np.unique(np.round(pos[:, 1] / (lam / 2) * 2)), np.arange(-7, 8, 2))
  np.testing.assert_allclose(pos[:, 1:].mean(0), 0.0, atol=lam / 4)
  for n, expected_side in ((1, 1), (8, 3), (64, 8), (65, 9), (100, 10)):
    p, idx, s = simulator.array_geometry(n, 1.0)
    assert s == expected_side and len(p) == n and len(np.unique(idx)) == n
  # Subcarriers: 924 at the real 19.53 kHz spacing, others spread over the same band.
  config = simulator.ChannelModelConfig()
  off = simulator.subcarrier_offsets(924, config)
  np.testing.assert_allclose(np.diff(off), 20e6 / 1024)
  np.testing.assert_allclose(off.mean(), 0.0, atol=1e-6)
  off16 = simulator.subcarrier_offsets(16, config)
  np.testing.assert_allclose(np.ptp(off16) + np.diff(off16)[0], 924 * 20e6 / 1024)


def test_line_of_sight_phase_slope_and_amplitude():
  model = simulator.make_channel_model(0, 56, 924, PURE_LOS)
  positions = np.array([[300.0, 40.0, -20.0], [120.0, -250.0, -35.0]])
  h = simulator.clean_channel(model, positions)
  freqs = model.subcarrier_frequencies_hz
  lam = model.wavelength_m
  for b, p in enumerate(positions):
    distance = np.linalg.norm(p - model.element_positions, axis=-1)  # per antenna
    phase = np.unwrap(np.angle(h[b]), axis=-1)  # [A, S]
    slope = np.polyfit(freqs - freqs.mean(), phase.T, 1)[0]  # rad / Hz
    # -2 pi tau with tau = distance / c, per antenna (to 1e-5 relative: ~cm).
    np.testing.assert_allclose(slope, -2 * np.pi * distance / C, rtol=1e-5)
    # Across antennas at the carrier: exp(-2j pi d_a / lambda) relative to antenna 0.
    centre = np.argmin(np.abs(freqs - 1.27e9))
    rel = h[b, :, centre] * np.conj(h[b, 0, centre])
    expected = np.exp(-2j * np.pi * (distance - distance[0]) * freqs[centre] / C)
    np.testing.assert_allclose(np.angle(rel * np.conj(expected)), 0.0, atol=1e-2)
    # Amplitude: lambda / (4 pi) d^(-n / 2) times the patch pattern, flat over S up to
    # the second-order term of the first-order wideband correction (< 1 %).
    d = np.linalg.norm(p)
    cos = p[0] / d
    expected_amp = (
      lam
      / (4 * np.pi)
      * d ** (-PURE_LOS.path_loss_exponent / 2)
      * cos ** (PURE_LOS.element_pattern_exponent / 2)
    )
    np.testing.assert_allclose(np.abs(h[b]), expected_amp, rtol=1e-2)


def test_noise_power_matches_reported_snr_and_measurements_are_coherent():
  config = dataclasses.replace(
    PURE_LOS, phase_jitter_rad=0.0, phase_reference='none', snr_fluctuation_db=0.0
  )
  model = simulator.make_channel_model(0, 8, 400, config)
  positions = np.array([[200.0, 10.0, -20.0], [500.0, -300.0, -30.0]])
  h, snr = simulator.channel_response(positions, model, np.random.default_rng(0), 6)
  clean = simulator.clean_channel(model, positions)
  assert h.shape == (2, 8, 400, 6) and snr.shape == (2, 8, 6)
  noise = h - clean[..., None]
  ratio_db = 10 * np.log10(
    np.mean(np.abs(clean) ** 2, axis=-1)[..., None] / np.mean(np.abs(noise) ** 2, axis=2)
  )
  np.testing.assert_allclose(ratio_db, snr, atol=0.6)  # 400 subcarriers of noise
  # The farther UE has a lower SNR (path loss), by ~22 log10(d2 / d1) dB.
  d1, d2 = np.linalg.norm(positions, axis=-1)
  drop = snr[0].mean() - snr[1].mean()
  assert drop > 0.5 * 22 * np.log10(d2 / d1)


def test_phase_reference_and_averaging_keep_the_signal():
  model = simulator.make_channel_model(0, 56, 32)
  positions = simulator.sample_positions(model, 1, 0, 40)
  h, snr = simulator.channel_response(positions, model, np.random.default_rng(1), 5)
  clean = simulator.clean_channel(model, positions)
  # Antenna 0 at the centre subcarrier is the phase reference.
  ref = clean * np.exp(-1j * np.angle(clean[:, :1, 16:17]))
  avg = h.mean(-1)
  good = np.all(snr > 15, axis=(1, 2))
  assert good.sum() >= 10
  corr = np.abs(np.sum(avg * np.conj(ref), axis=(1, 2))) / (
    np.linalg.norm(avg.reshape(40, -1), axis=1) * np.linalg.norm(ref.reshape(40, -1), axis=1)
  )
  assert np.all(corr[good] > 0.97)
  # The real part (the paper's input) keeps the signal too: measurements are
  # phase-coherent, so averaging does not wash it out.
  real_corr = np.sum(avg.real * ref.real, axis=(1, 2)) / (
    np.linalg.norm(avg.real.reshape(40, -1), axis=1)
    * np.linalg.norm(ref.real.reshape(40, -1), axis=1)
  )
  assert np.all(real_corr[good] > 0.95)


def test_channel_is_smooth_at_metres_and_varies_at_hundreds_of_metres():
  model = simulator.make_channel_model(0, 56, 64)
  base = simulator.sample_positions(model, 1, 0, 40)

  def referenced(p):
    h = simulator.clean_channel(model, p)
    return (h * np.exp(-1j * np.angle(h[:, :1, 32:33]))).reshape(len(p), -1)

  def similarity(shift):
    a, b = referenced(base), referenced(base + shift)
    return np.median(
      np.abs(np.sum(a * np.conj(b), 1)) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)
    )

  near, far = similarity([0.5, 0.5, 0.0]), similarity([150.0, -150.0, 0.0])
  assert near > 0.8 and far < 0.3


def test_buildings_block_the_line_of_sight():
  model = simulator.make_channel_model(0, 8, 4)
  assert len(model.buildings.centre) > 5
  # For every building: a UE just in front of it (seen from the BS) and one just
  # behind it, both on the ground.
  c = model.buildings.centre
  u = c / np.linalg.norm(c, axis=1, keepdims=True)
  reach = (np.linalg.norm(model.buildings.half_size, axis=1) + 10.0)[:, None]
  xy = np.concatenate([c - reach * u, c + reach * u])
  ue = np.concatenate([xy, simulator.ground_height(model, xy)[:, None] + 1.5], -1)
  loss = simulator.blockage_loss_db(model, np.zeros(3), ue)
  front, behind = np.split(loss, 2)
  k = np.argmax(behind - front)
  assert behind[k] > 15.0 and front[k] < 1.0
  # The loss shows in the channel: the LoS path gain drops by that much.
  gain = np.abs(simulator.propagation_paths(model, ue[[k, k + len(c)]])['gain'][:, 0])
  d = np.linalg.norm(ue[[k, k + len(c)]], axis=1)
  spreading_db = 10 * model.config.path_loss_exponent * np.log10(d[1] / d[0])
  shadow = simulator.shadowing_db(model, ue[[k, k + len(c)], :2])
  np.testing.assert_allclose(
    20 * np.log10(gain[0] / gain[1]),
    behind[k] - front[k] + spreading_db + shadow[1] - shadow[0],
    atol=1e-6,
  )


def test_interrupted_write_leaves_no_valid_looking_file(tmp_path, monkeypatch):
  calls = {'n': 0}
  real = measurement.measure_indices

  def failing(*args, **kwargs):
    calls['n'] += 1
    if calls['n'] > 1:
      raise KeyboardInterrupt
    return real(*args, **kwargs)

  monkeypatch.setattr(measurement, 'measure_indices', failing)
  with pytest.raises(KeyboardInterrupt):
    simulator.generate_ctw_dataset(
      str(tmp_path),
      num_labelled=12,
      num_unlabelled=0,
      num_antennas=8,
      num_subcarriers=4,
      num_measurements=5,
      seed=0,
      chunk_size=4,
    )
  assert os.listdir(tmp_path / 'CTW2020_labelled_data') == []


def test_interrupted_generation_is_never_read_as_a_data_set(tmp_path):
  # A run killed between files leaves complete file_k.hdf5 but no finished-set record;
  # resolve_data_root must not train on the partial set.
  cfg = config_utils.load_config(
    'configs/ctw_model1.py',
    {
      'data.root': str(tmp_path),
      'data.synthetic.num_labelled': 6,
      'data.synthetic.num_unlabelled': 4,
      'data.synthetic.num_antennas': 8,
      'data.synthetic.num_subcarriers': 4,
      'data.synthetic.num_measurements': 2,
    },
  )
  root = train.resolve_data_root(cfg, str(tmp_path / 'work'))
  record = tmp_path / 'generated.done.json'
  assert record.exists() and not simulator.writer.is_interrupted(root)
  record.unlink()
  assert simulator.writer.is_interrupted(root)
  cfg.data.generate_if_missing = False
  with pytest.raises(ValueError, match='interrupted generation'):
    train.resolve_data_root(cfg, str(tmp_path / 'work'))
  cfg.data.generate_if_missing = True
  train.resolve_data_root(cfg, str(tmp_path / 'work'))
  assert record.exists()
  # Real data (no generator tag, no record) is never taken for an interrupted run.
  foreign = tmp_path / 'real' / 'CTW2020_labelled_data'
  foreign.mkdir(parents=True)
  with h5py.File(foreign / 'file_1.hdf5', 'w') as f:
    f['H_Re'] = np.ones((1, 1, 1, 1))
  assert not simulator.writer.is_interrupted(str(tmp_path / 'real'))


def test_rerun_replaces_own_files_and_refuses_foreign_ones(tmp_path):
  kwargs = dict(num_antennas=8, num_subcarriers=4, num_measurements=2, samples_per_file=4, seed=0)
  simulator.generate_ctw_dataset(str(tmp_path), num_labelled=12, num_unlabelled=4, **kwargs)
  simulator.generate_ctw_dataset(str(tmp_path), num_labelled=5, num_unlabelled=4, **kwargs)
  # Stale file_3 of the larger run must not survive to be read as part of the set.
  assert sorted(os.listdir(tmp_path / 'CTW2020_labelled_data')) == ['file_1.hdf5', 'file_2.hdf5']
  foreign = tmp_path / 'real' / 'CTW2020_unlabelled_data'
  foreign.mkdir(parents=True)
  with h5py.File(foreign / 'file_1.hdf5', 'w') as f:
    f['H_Re'] = np.ones((1, 1, 1, 1))
  with pytest.raises(FileExistsError, match='file_1.hdf5'):
    simulator.generate_ctw_dataset(
      str(tmp_path / 'real'), num_labelled=1, num_unlabelled=1, **kwargs
    )
  with h5py.File(foreign / 'file_1.hdf5', 'r') as f:
    assert f['H_Re'][0, 0, 0, 0] == 1.0


def test_bad_arguments_are_rejected(tmp_path):
  sizes = dict(
    num_labelled=1, num_unlabelled=1, num_antennas=8, num_subcarriers=4, num_measurements=2, seed=0
  )
  with pytest.raises(ValueError, match='dtype'):
    simulator.generate_ctw_dataset(str(tmp_path), dtype='float16', **sizes)
  with pytest.raises(ValueError, match='chunk_size'):
    simulator.generate_ctw_dataset(str(tmp_path), chunk_size=0, **sizes)
  # Sizes, shape and seed come from the config (config.data.synthetic), never from a
  # second set of defaults in the library.
  with pytest.raises(TypeError, match='num_labelled'):
    simulator.generate_ctw_dataset(str(tmp_path))
  with pytest.raises(ValueError, match='area_min'):
    simulator.ChannelModelConfig(area_min=(10.0, 0.0, 0.0), area_max=(5.0, 1.0, 1.0))
  with pytest.raises(ValueError, match='position_layout'):
    simulator.ChannelModelConfig(position_layout='grid')
