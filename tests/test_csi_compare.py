"""The comparison launcher: Table I for four models plus the label sweep, on one set."""

import os
import subprocess
import sys

import ctw_files

from csiloc_jax.core import config_utils
from csiloc_jax.csi import compare

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


METRICS = ('mae', 'nmae', 'rmse', 'nrmse')


def test_comparison_writes_table_one_and_label_sweep(tmp_path):
  root = ctw_files.write_dataset(
    tmp_path / 'data', num_labelled=120, num_unlabelled=64, shape=(6, 8, 2), per_file=40
  )
  cfg = config_utils.load_config(
    'configs/ctw_compare.py:quick',
    {
      'data.root': root,
      'compare.label_budgets': (30,),
      'compare.sweep_models': 'model1,model4',
      'compare.seeds': (0, 1),
      'pretrain.batch_size': 16,
      'finetune.batch_size': 16,
    },
  )
  summary = compare.run_comparison(cfg, str(tmp_path / 'cmp'))
  table = open(tmp_path / 'cmp' / 'table1.md').read()
  for k in (1, 2, 3, 4):
    assert f'| model{k} |' in table
  assert '| model4 | CNN | MLP |' in table and '| model1 |  | MLP |' in table
  assert 'MAE average' in table and 'NRMSE average' in table
  # The classic baselines are rows of Table I and curves of the label sweep.
  for name in ('train_mean', 'knn_magnitude', 'knn_covariance'):
    assert f'| {name} | baseline |' in table
  eff = summary['label_efficiency']
  assert set(eff) == {'model1', 'model4', 'train_mean', 'knn_magnitude', 'knn_covariance'}
  assert set(eff['model4']) == {'30', '108'}  # 90 % of 120 labelled samples.
  assert set(eff['knn_covariance']) == {'30', '108'}
  # Every budget once per seed; seed 0 at the full budget is Table I's run itself.
  for name in eff:
    for n, cell in eff[name].items():
      assert len(cell['values']) == 2 and cell['seeds'] == [0, 1], (name, n)
      assert cell['min'] <= cell['mean'] <= cell['max'] and cell['std'] >= 0
  assert eff['model4']['108']['values'][0] == summary['models']['model4']['test']['mae']['average']
  # Another seed is another split and initialisation: other numbers.
  assert eff['model1']['30']['values'][0] != eff['model1']['30']['values'][1]
  assert eff['train_mean']['30']['values'][0] != eff['train_mean']['30']['values'][1]
  assert os.path.isdir(tmp_path / 'cmp' / 'sweep' / 'model1' / 'n30_seed1')
  eff_md = open(tmp_path / 'cmp' / 'label_efficiency.md').read()
  m = eff['model1']['30']
  assert f'| 30 | {m["mean"]:.2f} ± {m["std"]:.2f} (2) |' in eff_md
  for name in ('label_efficiency.md', 'label_efficiency.png', 'error_cdf.png', 'metrics.json'):
    assert os.path.getsize(tmp_path / 'cmp' / name) > 0
  # Sweep runs reuse the pretraining of the main runs instead of pretraining again.
  assert not os.path.exists(tmp_path / 'cmp' / 'sweep' / 'model4' / 'n30' / 'pretrain')
  assert os.path.exists(tmp_path / 'cmp' / 'model4' / 'pretrain')
  # A second call finds every run finished and returns the same numbers.
  again = compare.run_comparison(cfg, str(tmp_path / 'cmp'))
  assert again['label_efficiency'] == eff


def test_launcher_rejects_unknown_config_field(tmp_path):
  proc = subprocess.run(
    [
      sys.executable,
      os.path.join(REPO, 'launch', 'train.py'),
      '--config=' + os.path.join(REPO, 'configs', 'ctw_model1.py'),
      f'--workdir={tmp_path}',
      '--config.data.rooot=/x',
    ],
    capture_output=True,
    text=True,
    cwd=REPO,
    timeout=120,
  )
  assert proc.returncode != 0
  assert 'rooot' in proc.stderr and 'root' in proc.stderr
  assert not os.path.exists(tmp_path / 'config.json')


def _metric_block(base: float) -> dict:
  return {a: base + i for i, a in enumerate(('x', 'y', 'z'))} | {'average': base + 3}


def test_table_one_puts_each_metric_in_its_column():
  # Distinct numbers everywhere: a metric in the wrong column, axis or row shows.
  results = {
    name: {
      'test': {m: _metric_block(100 * k + 10 * j) for j, m in enumerate(METRICS)},
      'baselines': {
        'knn_covariance': {m: _metric_block(1000 + 10 * j) for j, m in enumerate(METRICS)}
      },
    }
    for k, name in ((1, 'model1'), (4, 'model4'))
  }
  settings = {
    'model1': {'encoder': 'mlp', 'pretrain': 'none'},
    'model4': {'encoder': 'cnn', 'pretrain': 'autoencoder'},
  }
  tables = compare.table_one(results, settings).strip().split('\n\n')
  assert len(tables) == 2
  for table, metrics in zip(tables, (('mae', 'nmae'), ('rmse', 'nrmse'))):
    header, _, *rows = [
      [c.strip() for c in line.strip('|').split('|')] for line in table.splitlines()
    ]
    cells = {row[0]: dict(zip(header, row)) for row in rows}
    assert list(cells) == ['model1', 'model4', 'knn_covariance']
    for name, row in cells.items():
      res = (
        results['model1']['baselines'][name] if name == 'knn_covariance' else results[name]['test']
      )
      for m in metrics:
        digits = 2 if m in ('mae', 'rmse') else 4
        for axis in ('x', 'y', 'z', 'average'):
          assert row[f'{m.upper()} {axis}'] == f'{res[m][axis]:.{digits}f}', (name, m, axis)
    assert cells['model4']['Pretraining'] == 'CNN' and cells['model4']['Finetuning'] == 'MLP'
    assert cells['model1']['Pretraining'] == '' and cells['model1']['Finetuning'] == 'MLP'
    assert cells['knn_covariance']['Pretraining'] == 'baseline'
