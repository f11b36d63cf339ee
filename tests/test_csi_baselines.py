"""Classic baselines: the covariance feature, kNN, the training mean, on real splits."""

import numpy as np
import pytest

from csiloc_jax.core import config_utils
from csiloc_jax.csi import baselines
from csiloc_jax.csi import features
from csiloc_jax.csi import simulator
from csiloc_jax.csi import train


def test_covariance_is_normalised_and_phase_and_power_free():
  rng = np.random.default_rng(0)
  h = (rng.standard_normal((3, 6, 10)) + 1j * rng.standard_normal((3, 6, 10))).astype(np.complex64)
  h[2] = 0  # a sample whose every estimate failed
  r = features.spatial_covariance(h)
  assert r.shape == (3, 6, 6)
  np.testing.assert_allclose(r[:2], np.conj(np.swapaxes(r[:2], 1, 2)), atol=1e-6)
  np.testing.assert_allclose(np.trace(r[:2], axis1=1, axis2=2), [1, 1], atol=1e-5)
  assert not r[2].any()
  # A common complex gain (power and phase) of a sample does not change it.
  scaled = features.spatial_covariance(h * np.complex64(3e-4 * np.exp(1.3j)))
  np.testing.assert_allclose(scaled[:2], r[:2], atol=1e-5)
  fmap = features.extract_features(h, 'covariance')
  assert fmap.shape == (3, 6, 6, 2) and fmap.dtype == np.float32
  assert features.feature_shape('covariance', 6, 10) == (6, 6, 2)
  assert features.feature_shape('real_imag', 6, 10) == (6, 10, 2)


def test_knn_and_its_validation_choice():
  rng = np.random.default_rng(1)
  y = rng.uniform(0, 100, (300, 3))
  x = np.concatenate([y, y**2 / 100], 1) + rng.normal(0, 0.5, (300, 6))
  splits = {'train': np.arange(200), 'val': np.arange(200, 250), 'test': np.arange(250, 300)}
  out = baselines.knn_baseline(x, y, splits, y.max(0) - y.min(0))
  assert out['k'] in baselines.NEIGHBOURS and out['weighting'] in baselines.WEIGHTINGS
  assert out['val_mean_distance_m'] == min(out['val_grid'].values())
  mean = baselines.mean_predictor(y[:200], 50)
  mean_err = np.linalg.norm(mean - y[250:], axis=-1).mean()
  assert out['distance_m']['mean'] < 0.5 * mean_err
  # 1-NN of a training point is itself.
  index, dist = baselines.knn_candidates(x[:200], x[:5], 3)
  np.testing.assert_array_equal(index[:, 0], np.arange(5))
  assert np.allclose(dist[:, 0], 0, atol=1e-6) and (np.diff(dist, axis=1) >= 0).all()
  pred = baselines.knn_predict(y[:200], index, dist, 1, 'uniform')
  np.testing.assert_allclose(pred, y[:5])
  with pytest.raises(ValueError, match='weighting'):
    baselines.knn_predict(y[:200], index, dist, 1, 'gaussian')


def test_run_baselines_on_a_generated_set(tmp_path):
  simulator.generate_ctw_dataset(
    str(tmp_path),
    num_labelled=400,
    num_unlabelled=0,
    num_antennas=16,
    num_subcarriers=32,
    num_measurements=2,
    seed=0,
  )
  config = config_utils.load_config('configs/ctw_model1.py', {'data.root': str(tmp_path)})
  splits = train.labelled_splits(400, config.data)
  results = baselines.run_baselines(config.data, str(tmp_path), splits)
  assert set(results) == {'train_mean', 'knn_magnitude', 'knn_covariance'}
  mean = results['train_mean']['mae']['average']
  for name in ('knn_magnitude', 'knn_covariance'):
    assert results[name]['mae']['average'] < mean, (name, results[name]['mae'], mean)
