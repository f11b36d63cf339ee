"""Channel charting: the chart-quality metrics on hand-computable cases and against the
definitions written as loops, the chart losses, the dissimilarities and geodesics, the
pair/triplet batches, the chart train step under data parallelism, and a `:quick`
charting run end to end whose chart beats the untrained network's."""

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from csiloc_jax.core import config_utils
from csiloc_jax.core import parallel
from csiloc_jax.csi import charting
from csiloc_jax.csi import features
from csiloc_jax.csi import input_pipeline
from csiloc_jax.csi import metrics
from csiloc_jax.csi import models
from csiloc_jax.csi import steps
from csiloc_jax.csi import train

# ------------------------------------------------------------------------------------
# Metrics.


def _tw_ct_loops(true, chart, k):
  """Venna and Kaski's definitions, one point and one neighbour at a time."""
  n = len(true)

  def ranks(p):
    out = np.zeros((n, n), int)
    for i in range(n):
      d = np.linalg.norm(p - p[i], axis=1)
      d[i] = -1.0
      for r, j in enumerate(np.argsort(d, kind='stable')):
        out[i, j] = r
    return out

  r, r_hat = ranks(true), ranks(chart)
  tw_sum = ct_sum = 0
  for i in range(n):
    for j in range(n):
      if j == i:
        continue
      if r_hat[i, j] <= k < r[i, j]:
        tw_sum += r[i, j] - k
      if r[i, j] <= k < r_hat[i, j]:
        ct_sum += r_hat[i, j] - k
  norm = 2.0 / (n * k * (2 * n - 3 * k - 1))
  return 1 - norm * tw_sum, 1 - norm * ct_sum


def test_identity_and_similar_charts_are_perfect():
  rng = np.random.default_rng(0)
  pos = rng.uniform(0, 100, (60, 2))
  tw, ct = metrics.trustworthiness_continuity(pos, pos, k=3)
  assert (tw, ct) == (1.0, 1.0)
  assert metrics.kruskal_stress(pos, pos) == 0.0
  # Rotated, scaled and shifted: the same neighbourhoods and zero stress (optimal scale).
  c, s = np.cos(0.7), np.sin(0.7)
  similar = 0.01 * pos @ np.array([[c, -s], [s, c]]) + 5.0
  tw, ct = metrics.trustworthiness_continuity(pos, similar, k=3)
  assert tw == pytest.approx(1.0) and ct == pytest.approx(1.0)
  assert metrics.kruskal_stress(pos, similar) == pytest.approx(0.0, abs=1e-9)


def test_random_chart_is_near_one_half():
  rng = np.random.default_rng(1)
  pos = rng.uniform(0, 100, (400, 2))
  chart = rng.normal(size=(400, 2))
  tw, ct = metrics.trustworthiness_continuity(pos, chart, k=20)
  # Expected (n - 1 - k)(n - k) / ((n - 1)(2n - 3k - 1)) = 0.50 for n = 400, k = 20.
  assert 0.45 < tw < 0.55 and 0.45 < ct < 0.55


def test_trustworthiness_continuity_match_the_definition():
  rng = np.random.default_rng(2)
  pos = rng.uniform(0, 10, (23, 3))
  chart = pos[:, :2] + rng.normal(scale=2.0, size=(23, 2))  # a noisy chart
  for k in (1, 4, 10):
    got = metrics.trustworthiness_continuity(pos, chart, k)
    want = _tw_ct_loops(pos, chart, k)
    assert got == pytest.approx(want, abs=1e-12)
    assert 0.5 < got[0] < 1.0 and 0.5 < got[1] < 1.0
  with pytest.raises(ValueError, match='k must satisfy'):
    metrics.trustworthiness_continuity(pos, chart, 12)


def test_kruskal_stress_by_hand():
  # A 3-4-5 triangle charted as an equilateral one: beta = (3 + 4 + 5) / 3 = 4 and
  # stress = sqrt(((3 - 4)^2 + 0 + (5 - 4)^2) / (9 + 16 + 25)) = 0.2.
  true = np.array([[0.0, 0.0], [3.0, 0.0], [0.0, 4.0]])
  chart = np.array([[0.0, 0.0], [1.0, 0.0], [0.5, np.sqrt(3) / 2]])
  # Pair order (0,1): 3, (0,2): 4, (1,2): 5; the chart's are all 1.
  assert metrics.kruskal_stress(true, chart) == pytest.approx(0.2)
  assert metrics.kruskal_stress(true, np.zeros((3, 2))) == pytest.approx(1.0)


def test_affine_map_is_recovered_exactly():
  rng = np.random.default_rng(3)
  chart = rng.normal(size=(30, 2))
  a = np.array([[2.0, -1.0, 0.1], [0.5, 3.0, -0.2]])
  b = np.array([10.0, -20.0, 1.5])
  positions = chart @ a + b
  coef = metrics.fit_affine(chart, positions)
  np.testing.assert_allclose(coef[:-1], a, atol=1e-10)
  np.testing.assert_allclose(coef[-1], b, atol=1e-10)
  new = rng.normal(size=(5, 2))
  np.testing.assert_allclose(metrics.apply_affine(coef, new), new @ a + b, atol=1e-10)


# ------------------------------------------------------------------------------------
# Losses and the data-parallel step.


def test_siamese_loss_zero_for_perfect_embedding_positive_otherwise():
  rng = np.random.default_rng(4)
  a = rng.normal(size=(6, 2))
  b = rng.normal(size=(6, 2))
  d = np.linalg.norm(a - b, axis=1)
  pred = jnp.asarray(np.stack([a, b], 1).reshape(12, 2), jnp.float32)
  y = jnp.asarray(d[:, None], jnp.float32)
  for weighting in ('sammon', 'none'):
    loss = steps.chart_siamese(pred, None, y, weighting=weighting)
    np.testing.assert_allclose(loss, 0.0, atol=1e-5)
    worse = steps.chart_siamese(pred, None, 1.5 * y, weighting=weighting)
    assert np.all(np.asarray(worse) > 1e-3)
  # Chart distance 2 against d = 1 and d = 4: Sammon weights 1 and 1/4 give 1 and 1.
  pred = jnp.array([[0.0, 0.0], [2.0, 0.0], [0.0, 0.0], [0.0, 2.0]])
  loss = steps.chart_siamese(pred, None, jnp.array([[1.0], [4.0]]), weighting='sammon')
  np.testing.assert_allclose(loss, [1.0, 1.0], rtol=1e-6)
  # Two members on the same point: a finite gradient.
  grad = jax.grad(lambda p: steps.chart_siamese(p, None, jnp.ones((1, 1))).sum())(jnp.zeros((2, 2)))
  assert np.all(np.isfinite(grad))


def test_triplet_loss_zero_beyond_the_margin():
  # Anchor at 0, close at 1, far at 3: zero with margin 2, 0.5 with margin 2.5.
  pred = jnp.array([[0.0, 0.0], [1.0, 0.0], [0.0, 3.0]])
  y = jnp.zeros((1, 2))
  assert float(steps.chart_triplet(pred, None, y, margin=2.0)[0]) == 0.0
  assert float(steps.chart_triplet(pred, None, y, margin=2.5)[0]) == pytest.approx(0.5)
  swapped = pred[jnp.array([0, 2, 1])]
  assert float(steps.chart_triplet(swapped, None, y, margin=1.0)[0]) == pytest.approx(3.0)


@pytest.mark.parametrize('loss', ['chart_siamese', 'chart_triplet'])
def test_chart_step_is_the_same_on_all_devices_and_one(loss):
  cfg = config_utils.load_config('configs/ctw_chart.py')
  cfg.model.mlp_encoder_features = (16, 8)
  model = models.build_chart_model(cfg.model, cfg.chart)
  shape = (6, 6, 2)
  t = steps.TUPLE_SIZE[loss]
  params = model.init(jax.random.key(0), jnp.zeros((1,) + shape))['params']
  rng = np.random.default_rng(5)
  batch = {
    'x': rng.normal(size=(8, t) + shape).astype(np.float32),
    'y': rng.uniform(0.2, 2.0, size=(8, t - 1)).astype(np.float32),
    'mask': np.array([1, 1, 1, 1, 1, 1, 0, 0], np.float32),
  }
  batch['x'][6:] = 1e3  # padding must not count
  normalizer = input_pipeline.Normalizer(
    np.zeros(shape, np.float32), np.ones(shape, np.float32), True
  )
  options = (('margin', 1.0),) if loss == 'chart_triplet' else (('weighting', 'sammon'),)
  out = []
  for devices in (jax.local_devices()[:1], jax.local_devices()):
    dp = parallel.DataParallel('pmap', devices=devices)
    # Gradients, not Adam's update: the chart is translation invariant, so the output
    # bias has a zero gradient that Adam would turn into a full step of its rounding.
    p_grad = dp.compile_step(
      steps.compute_gradients,
      donate_state=False,
      loss=loss,
      axis_name=dp.axis_name,
      loss_options=options,
    )
    state = dp.replicate(steps.create_train_state(model.apply, params, 1e-2))
    grads, m = p_grad(state, dp.shard(batch), dp.replicate(normalizer))
    out.append((float(dp.unreplicate(m)['loss']), dp.unreplicate(grads)))
  assert out[0][0] == pytest.approx(out[1][0], rel=1e-5) and out[0][0] > 0
  for g1, g4 in zip(jax.tree.leaves(out[0][1]), jax.tree.leaves(out[1][1])):
    np.testing.assert_allclose(g1, g4, rtol=1e-4, atol=1e-6)
  # The same per-tuple losses from the evaluation step.
  _, per_example = steps.eval_step(
    params, batch, normalizer, apply_fn=model.apply, loss=loss, loss_options=options
  )
  assert float(per_example.sum() / 6) == pytest.approx(out[0][0], rel=1e-5)


# ------------------------------------------------------------------------------------
# Dissimilarities, geodesics and tuples.


def test_cmd_is_the_correlation_matrix_distance():
  rng = np.random.default_rng(6)
  h = (rng.normal(size=(3, 4, 10)) + 1j * rng.normal(size=(3, 4, 10))).astype(np.complex64)
  feat = features.extract_features(h, 'covariance')
  vec = charting.dissimilarity_vectors(feat, 'cmd')
  r = features.spatial_covariance(h).astype(np.complex128)
  for i, j in ((0, 1), (1, 2)):
    want = 1 - np.trace(r[i] @ r[j]).real / (np.linalg.norm(r[i]) * np.linalg.norm(r[j]))
    got = charting.pair_dissimilarity(vec, np.array([i]), np.array([j]), 'cmd')[0]
    assert got == pytest.approx(want, abs=1e-6)
  assert charting.pair_dissimilarity(vec, np.array([2]), np.array([2]), 'cmd')[0] == (
    pytest.approx(0.0, abs=1e-6)
  )


def test_neighbours_and_geodesics_on_a_line(tmp_path):
  # Points on a line: the nearest neighbours are the adjacent points and, over the
  # 2-nearest-neighbour graph, the geodesic is the distance along the line.
  x = np.arange(12, dtype=np.float32)[:, None] ** 1.1
  members = np.arange(2, 12)
  index, dist = charting.nearest_neighbours(x, members, 2, 'euclidean')
  brute = np.abs(x[members] - x[members].T)
  np.fill_diagonal(brute, np.inf)
  np.testing.assert_allclose(dist, np.sort(brute, 1)[:, :2], rtol=1e-5)
  assert set(index[3]) == {members[2], members[4]}
  index, dist = charting.nearest_neighbours(x, np.arange(12), 2, 'euclidean')
  geo, info = charting.geodesic_matrix(index, dist, str(tmp_path / 'g.npy'))
  np.testing.assert_allclose(geo, np.abs(x - x.T), rtol=1e-5, atol=1e-4)
  assert info['components'] == 1
  # Two far clusters: unreachable pairs get the longest path.
  y = np.concatenate([np.arange(4.0), 100 + np.arange(4.0)])[:, None].astype(np.float32)
  index, dist = charting.nearest_neighbours(y, np.arange(8), 1, 'euclidean')
  geo, info = charting.geodesic_matrix(index, dist, str(tmp_path / 'g2.npy'))
  assert info['components'] == 2 and geo[0, 7] == pytest.approx(3.0)


def _tuple_data(loss, tmp_path, n=60):
  rng = np.random.default_rng(7)
  feats = rng.normal(size=(n, 3, 3, 2)).astype(np.float32)
  train_idx, val_idx = input_pipeline.split_indices(n, (0.75, 0.25), 0)
  cfg = config_utils.load_config('configs/ctw_chart.py').chart
  cfg.loss = loss
  cfg.close_neighbours = 4
  cfg.geodesic_neighbours = 5
  normalizer = input_pipeline.feature_statistics(feats, train_idx, 'none')
  return charting.build_tuple_data(
    feats, feats, train_idx, val_idx, normalizer, cfg, 0, str(tmp_path)
  )


@pytest.mark.parametrize('loss', ['siamese', 'triplet'])
def test_tuple_batches(loss, tmp_path):
  data, summary = _tuple_data(loss, tmp_path)
  t = 2 if loss == 'siamese' else 3
  assert summary['geodesic'] and os.path.exists(tmp_path / 'pretrain' / 'chart' / 'geodesic.npy')
  train_set = set(data.train_idx.tolist())
  batches = list(data.train_batches(16, (0, 1), 1))
  assert len(batches) == 3  # 45 anchors
  assert batches[-1]['mask'].tolist() == [1.0] * 13 + [0.0] * 3
  for b in batches:
    assert b['x'].shape == (16, t, 3, 3, 2) and b['y'].shape == (16, t - 1)
    # Each member is a training sample; y are the members' dissimilarities to the anchor.
    rows = [
      [
        int(np.flatnonzero((data.features == b['x'][i, m]).all(axis=(1, 2, 3)))[0])
        for m in range(t)
      ]
      for i in range(16)
    ]
    assert all(j in train_set for row in rows for j in row)
    rows = np.asarray(rows)
    for m in range(1, t):
      np.testing.assert_allclose(b['y'][:, m - 1], data.dissimilarity(rows[:, 0], rows[:, m]), 1e-5)
    if t == 3:
      assert np.all(b['y'][:, 0] <= b['y'][:, 1])
  # Deterministic per (seed, epoch); another epoch differs; validation is fixed.
  again = list(data.train_batches(16, (0, 1), 1))
  assert all(np.array_equal(a['x'], b['x']) for a, b in zip(batches, again))
  other = list(data.train_batches(16, (0, 2), 1))
  assert not np.array_equal(batches[0]['x'], other[0]['x'])
  v1 = list(data.eval_batches(np.sort(data.val_idx), 8))
  v2 = list(data.eval_batches(np.sort(data.val_idx), 8))
  assert all(np.array_equal(a['x'], b['x']) for a, b in zip(v1, v2))
  # Cached: a second build reads the tables back.
  data2, _ = _tuple_data(loss, tmp_path)
  np.testing.assert_array_equal(data2.neighbours['train'], data.neighbours['train'])


def test_pretrain_mode_values():
  assert models.pretrain_mode(True) == 'autoencoder'
  assert models.pretrain_mode(False) == 'none'
  assert models.pretrain_mode('chart') == 'chart'
  with pytest.raises(ValueError, match='config.model.pretrain'):
    models.pretrain_mode('charts')
  cfg = config_utils.load_config('configs/ctw_model1.py')
  with pytest.raises(ValueError, match='only the mlp and cnn'):
    models.build_chart_model(cfg.model, cfg.chart)


# ------------------------------------------------------------------------------------
# End to end.


def test_quick_chart_run_end_to_end(tmp_path_factory):
  # ':quick' on a small built-in set with i.i.d. positions: the pretrained chart keeps
  # neighbourhoods better than the untrained network, metrics.json has a finite 'chart'
  # block, and a second run reusing the pretraining scores its own chart.
  overrides = {
    'data.root': str(tmp_path_factory.getbasetemp() / 'chart_iid'),
    'data.synthetic.num_labelled': 300,
    'data.synthetic.num_unlabelled': 800,
    'data.synthetic.num_antennas': 16,
    'data.synthetic.num_subcarriers': 16,
    'data.synthetic.num_measurements': 2,
    'data.synthetic.position_layout': 'uniform',
    'pretrain.num_epochs': 8,
    'finetune.num_epochs': 3,
    'eval.baselines': ('train_mean', 'knn_covariance'),
  }
  config = config_utils.load_config('configs/ctw_chart.py:quick', overrides)
  workdir = str(tmp_path_factory.mktemp('chart_run'))
  summary = train.train_and_evaluate(config, workdir)
  chart = summary['chart']
  assert chart['num_points'] == 300 and chart['k'] == 15
  for key in ('trustworthiness', 'continuity', 'kruskal_stress'):
    assert np.isfinite(chart[key]) and np.isfinite(chart['untrained'][key])
  assert chart['trustworthiness'] > chart['untrained']['trustworthiness'] + 0.1
  assert chart['continuity'] > chart['untrained']['continuity']
  assert np.isfinite(chart['affine']['mae']['average'])
  assert chart['affine']['num_fit'] == summary['data']['num_train_labels']
  assert summary['model']['chart_params'] > 0 and summary['pretrain']['epochs_run'] >= 1
  with open(os.path.join(workdir, 'metrics.json')) as f:
    assert json.load(f)['chart']['trustworthiness'] == chart['trustworthiness']
  for name in ('chart.png', 'learning_curves.png', 'pretrain/chart/neighbours.npz'):
    assert os.path.getsize(os.path.join(workdir, name)) > 0
  reused = config_utils.load_config(
    'configs/ctw_chart.py:quick',
    {
      **overrides,
      'model.pretrained_dir': workdir,
      'data.num_train_labels': 40,
      'finetune.num_epochs': 1,
    },
  )
  out = train.train_and_evaluate(reused, str(tmp_path_factory.mktemp('chart_reuse')))
  assert out['pretrain'] == {'loaded_from': workdir}
  assert out['chart']['trustworthiness'] == pytest.approx(chart['trustworthiness'])
  assert out['chart']['affine']['num_fit'] == 40
