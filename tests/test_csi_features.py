"""The feature maths: measurement averaging (numpy's complex definition, exact zeros)
and the feature maps."""

import numpy as np
import pytest

from csiloc_jax.csi import features


@pytest.mark.parametrize('m', [1, 2, 3, 4, 5, 7, 8, 9, 17, 64, 65, 130])
def test_average_matches_the_complex_numpy_definition(m):
  rng = np.random.default_rng(m)
  re = rng.normal(size=(3, 4, 50, m)).astype(np.float32)
  im = rng.normal(size=(3, 4, 50, m)).astype(np.float32)
  re[rng.random(re.shape) < 0.3] = 0.0
  im[rng.random(im.shape) < 0.3] = -0.0
  re[0, 0] = -0.0  # Whole entries of negative zeros: numpy's sum is +0.0 there.
  im[0, 0] = -0.0
  re[1, 1] *= 1e6  # A wide range, so that the summation order shows in the roundings.
  h = re + 1j * im
  count = ((re != 0) | (im != 0)).sum(-1)
  expected = {'mean': h.mean(-1), 'valid_mean': h.sum(-1) / np.maximum(count, 1)}
  # Float rounding only: a few float32 ulps of the entry's magnitude sum (the library
  # follows numpy's summation order, so it is normally bit-identical, but the test does
  # not depend on numpy's internals).
  for average, ref in expected.items():
    got = features.average_measurements(re, im, average)
    assert got.dtype == np.complex64
    for part, a, b in (('re', got.real, ref.real), ('im', got.imag, ref.imag)):
      scale = np.abs(re if part == 're' else im).sum(-1) / np.maximum(count, 1)
      bound = 4 * np.finfo(np.float32).eps * np.maximum(scale, np.finfo(np.float32).tiny)
      assert np.all(np.abs(a - b) <= bound), (average, part)
      np.testing.assert_array_equal(a == 0, b == 0)  # Exact zeros stay exact,
      np.testing.assert_array_equal(np.signbit(a[a == 0]), np.signbit(b[b == 0]))  # signed.


def test_average_covers_every_block_of_rows():
  # More antenna-subcarrier entries than two blocks of rows (2 x 2**14): every block is
  # averaged, each into its own place.
  rng = np.random.default_rng(0)
  re = rng.normal(size=(2, 64, 300, 2)).astype(np.float32)
  im = rng.normal(size=(2, 64, 300, 2)).astype(np.float32)
  assert re[..., 0].size > 2 * 2**14
  got = features.average_measurements(re, im, 'mean')
  np.testing.assert_allclose(got, (re + 1j * im).mean(-1), rtol=1e-6, atol=1e-7)


def test_feature_maps_and_channel_counts():
  h = np.array([[[3 + 4j, -1 - 2j]]], np.complex64)  # [1, 1, 2]
  for feature in features.FEATURES:
    out = features.extract_features(h, feature)
    assert out.dtype == np.float32
    assert out.shape == (1, *features.feature_shape(feature, 1, 2))
  np.testing.assert_array_equal(features.extract_features(h, 'real')[..., 0], [[[3, -1]]])
  np.testing.assert_array_equal(features.extract_features(h, 'real_imag')[0, 0], [[3, 4], [-1, -2]])
  np.testing.assert_allclose(
    features.extract_features(h, 'magnitude')[..., 0], [[[5, np.sqrt(5)]]], rtol=1e-6
  )
  with pytest.raises(ValueError, match='config.data.feature'):
    features.extract_features(h, 'phase')
  with pytest.raises(ValueError, match='config.data.average'):
    features.average_measurements(np.zeros((1, 1, 1, 2)), np.zeros((1, 1, 1, 2)), 'median')


def test_magnitude_db_is_relative_floored_and_zero_safe():
  h = np.array([[[10 + 0j, 1 + 0j, 0j]], [[0j, 0j, 0j]]], np.complex64)  # [2, 1, 3]
  db = features.extract_features(h, 'magnitude_db')[..., 0]
  np.testing.assert_allclose(db[0, 0], [0.0, -20.0, features.MAGNITUDE_DB_FLOOR], atol=1e-4)
  assert np.all(db[1] == features.MAGNITUDE_DB_FLOOR) and np.isfinite(db).all()
  # Independent of the received power.
  np.testing.assert_allclose(
    features.extract_features(h * 1e-5, 'magnitude_db'),
    db[..., None] if False else features.extract_features(h, 'magnitude_db'),
    atol=1e-3,
  )


def test_angle_delay_profile_puts_a_path_in_its_beam_and_tap():
  from csiloc_jax.csi.simulator import environment

  _, index, side = environment.array_geometry(56, 1.0)
  row, col = np.divmod(index, side)
  s = np.arange(64)
  # One plane wave: beam (2, 5) on the 8 x 8 grid, arriving at delay tap 3.
  h = np.exp(2j * np.pi * (2 * row + 5 * col) / side)[:, None] * np.exp(-2j * np.pi * 3 * s / 64)
  profile = features.extract_features(h[None].astype(np.complex64), 'angle_delay')[0, ..., 0]
  assert profile.shape == features.feature_shape('angle_delay', 56, 64)[:2] == (64, 32)
  beam, tap = np.unravel_index(np.argmax(profile), profile.shape)
  assert (beam, tap) == (2 * side + 5, 3)
  assert profile.sum() == pytest.approx(1.0, abs=1e-5)
  assert np.all(features.extract_features(np.zeros((1, 56, 64), np.complex64), 'angle_delay') == 0)


def test_pairwise_sum_is_bit_identical_to_numpys_complex_sum():
  # The cache promises the bytes of numpy's complex sum (csi.features._pairwise_sum):
  # every length through the one-by-one, blocked and split branches, over a wide range of
  # magnitudes so that any other summation order shows in the roundings, on 3-D input.
  for m in range(1, 140):
    rng = np.random.default_rng(m)
    x = rng.standard_normal((2, 50, m)) * 10.0 ** rng.uniform(-3, 3, (2, 50, m))
    x = x.astype(np.float32)
    expected = (x + 1j * np.zeros_like(x)).sum(-1).real
    np.testing.assert_array_equal(features._pairwise_sum(x), expected, err_msg=f'm = {m}')
