"""benchmarks/run.py --quick still runs and writes the documented JSON (timings not asserted).

Only the cheap rows are run; a reference library that is not installed (torch, scipy are
in the ``bench`` extra, not the ``test`` one) must give a row marked unavailable with our
own figure still measured, never a crash.
"""

import json
import math
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ROWS = ('train_model1', 'ctw_read', 'jade', 'tracker_k1', 'tracker_batch')


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
      assert r['reference'] > 0
      expected = (
        r['ours'] / r['reference'] if r['unit'].endswith('/s') else r['reference'] / r['ours']
      )
      assert math.isclose(r['ratio'], expected, rel_tol=1e-9), name
  # Results of the library agree with the reference's where both ran.
  assert rows['tracker_k1']['net_agreement'] == 1.0
  assert rows['tracker_batch']['vmapped_equals_single']
  assert rows['ctw_read']['memory_flat'] in (True, False)

  machine = result['machine']
  assert machine['cores'] >= 1 and machine['cpu']['processor']
  assert machine['device_kind'] and machine['jax_backend'] == 'cpu'
  assert result['versions']['jax'] and result['versions']['flax']
  # The printed table carries every row.
  for name in ROWS:
    assert name in proc.stdout
