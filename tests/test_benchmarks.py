"""benchmarks/run.py --quick still runs and writes the documented JSON (timings not asserted).

Only the cheap rows are run; a reference library that is not installed (torch, scipy are
in the ``bench`` extra, not the ``test`` one) must give a row marked unavailable with our
own figure still measured, never a crash.
"""

import json
import math
import os
import statistics
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ROWS = (
  'train_model1',
  'ctw_read',
  'features_angle_delay',
  'jade',
  'jade_cold',
  'tracker_k16',
  'tracker_batch',
)


def test_quick_benchmark_writes_rows_machine_and_versions(tmp_path):
  out = tmp_path / 'bench.json'
  env = dict(os.environ, JAX_PLATFORMS='cpu')
  env.pop('XLA_FLAGS', None)  # No fake devices from conftest: one CPU, as users run it.
  proc = subprocess.run(
    [
      sys.executable,
      os.path.join(ROOT, 'benchmarks', 'run.py'),
      '--quick',
      '--only=' + ','.join(ROWS),
      f'--out={out}',
      f'--workdir={tmp_path / "data"}',
    ],
    cwd=tmp_path,
    env=env,
    capture_output=True,
    text=True,
    timeout=600,
  )
  assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
  result = json.loads(out.read_text())

  rows = {r['name']: r for r in result['rows']}
  assert set(rows) == set(ROWS)
  for name, r in rows.items():
    assert 'error' not in r, (name, r.get('error'))
    assert {'name', 'ours', 'reference', 'unit', 'ratio'} <= set(r), name
    assert r['unit'] and r['ours'] is not None and r['ours'] > 0 and math.isfinite(r['ours'])
    if r['reference'] is None:
      assert r['reference_unavailable'], name
      assert r['ratio'] is None
    else:
      assert r['reference'] > 0 and r['ratio'] > 0
  # The reported figures are the medians of the interleaved rounds.
  read = rows['ctw_read']
  assert read['ours'] == statistics.median(read['ours_all_mb_per_s'])
  assert read['reference'] == statistics.median(read['reference_all_mb_per_s'])
  assert len(read['ours_all_mb_per_s']) == read['rounds'] >= 2
  # Streaming the cache build keeps its peak memory flat from the small set to the big.
  assert read['memory_flat'] is True, read['peak_rss_mb']
  small, big = read['peak_rss_mb'].values()
  assert 0 < big <= 1.1 * small + 50
  # The feature row's user pipeline computes the same features as the cache build, and
  # both sides' figures are the medians of their interleaved rounds.
  feat = rows['features_angle_delay']
  assert feat['feature_shape'] == [64, 32, 1]
  assert feat['max_abs_diff_relative'] < 1e-5, feat['max_abs_diff_relative']
  assert feat['ours'] == statistics.median(feat['ours_all_mb_per_s'])
  assert feat['reference'] == statistics.median(feat['reference_all_mb_per_s'])
  assert len(feat['reference_all_mb_per_s']) == feat['rounds'] >= 2
  # Results of the library agree with the reference's where both ran: the same net at
  # every step, among several nets actually chosen.
  tracker = rows['tracker_k16']
  assert tracker['distinct_nets_chosen'] >= 2, tracker
  assert tracker['net_agreement'] == 1.0 and tracker['max_position_diff_m'] < 1e-3, tracker
  # Each side is reported in its faster state (cold or warm), and the figures are that
  # state's medians.
  chosen = tracker['protocol']
  assert set(chosen) == {'ours', 'batched', 'per_step'}
  for side, state in chosen.items():
    cold, warm = tracker['cold_us_per_step'][side], tracker['warm_us_per_step'][side]
    assert state == ('cold' if cold <= warm else 'warm'), (side, cold, warm)
  assert tracker['ours'] == pytest.approx(
    min(tracker['cold_us_per_step']['ours'], tracker['warm_us_per_step']['ours'])
  )
  fastest = tracker['reference_settings']['fastest']
  best_ref = min(tracker['cold_us_per_step'][fastest], tracker['warm_us_per_step'][fastest])
  assert tracker['reference'] == pytest.approx(best_ref)
  assert rows['tracker_batch']['vmapped_equals_single']
  # JADE: SciPy's settings were all tried, the winner is the fastest of those that reached
  # the lowest cost, and both rows (warm, cold) share its interleaved rounds.
  warm, cold = rows['jade'], rows['jade_cold']
  settings = warm['reference_settings']
  finished = {n: t for n, t in settings['tried'].items() if t['s'] is not None}
  assert {'hybrid', 'trf_exact', 'trf_lsmr'} <= set(settings['tried'])
  assert settings['fastest'] in finished
  lowest = min(t['cost'] for t in finished.values())
  assert finished[settings['fastest']]['cost'] <= lowest * (1 + 1e-3)
  assert all(
    t['s'] >= finished[settings['fastest']]['s']
    for t in finished.values()
    if t['cost'] <= lowest * (1 + 1e-3)
  )
  for t in settings['tried'].values():
    if t['s'] is None:  # stopped: it was already slower than twice a finished setting
      assert t['stopped_after_s'] >= 2 * min(f['s'] for f in finished.values()) - 1e-9
  assert warm['reference'] == cold['reference'] == statistics.median(warm['reference_all_s'])
  assert warm['ours'] == statistics.median(warm['ours_all_s'])
  assert cold['ours'] == statistics.median(cold['ours_all_s'])
  assert len(warm['reference_all_s']) == len(cold['ours_all_s']) == warm['rounds'] >= 2
  # Compilation is in the cold figure only.
  assert cold['ours'] > warm['ours']
  assert warm['same_final_cost'] is True, warm['cost_relative_gap_max']

  machine = result['machine']
  assert machine['cores'] >= 1 and machine['cpu']['processor']
  assert machine['device_kind'] and machine['jax_backend'] == 'cpu'
  assert result['versions']['jax'] and result['versions']['flax']
  # The printed table carries every row.
  for name in ROWS:
    assert name in proc.stdout


def test_ratio_is_the_speed_up_of_ours_in_either_sense():
  sys.path.insert(0, ROOT)
  from benchmarks import common

  # Throughput (higher is better): 300 MB/s against 100 MB/s is 3x.
  fast = common.Row('read', 300.0, 100.0, 'MB/s', target=2.0).to_json()
  assert fast['ratio'] == 3.0 and fast['meets_target'] is True
  # Time (lower is better): 2 ms against 10 ms per step is 5x; 10 against 2 is 0.2x.
  assert common.Row('step', 2.0, 10.0, 'ms/step', sense='time').ratio == 5.0
  slow = common.Row('step', 10.0, 2.0, 'ms/step', sense='time', target=1.5).to_json()
  assert slow['ratio'] == 0.2 and slow['meets_target'] is False
  assert common.Row('x', 1.0, None, 's', sense='time').ratio is None
  assert common.spread([2.0, 3.0, 2.5]) == 0.5
  # Rounds alternate their order, so a slow spell hits both sides.
  calls = []
  common.interleaved(
    {'a': lambda: calls.append('a') or 1.0, 'b': lambda: calls.append('b') or 2.0}, 3
  )
  assert calls == ['a', 'b', 'b', 'a', 'a', 'b']
