"""The suite launcher's library half: every (floor, seed, variant) runs, the table holds
every method with its value, and a second call re-uses the finished runs."""

import json
import os

import h5py
import numpy as np
import pytest

from csiloc_jax.core import config_utils
from csiloc_jax.mmwave import suite

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG = os.path.join(REPO, 'configs', 'mmwave_suite.py')


def test_suite_runs_every_variant_writes_the_table_and_resumes(tmp_path, monkeypatch):
  config = config_utils.load_config(
    CONFIG + ':quick',
    {
      'data.num_survey': 60,
      'data.num_trajectory_steps': 40,
      'nets.num_train_steps': 200,
      'nets.eval_every': 100,
      'big_nn.num_train_steps': 100,
      'big_nn.eval_every': 100,
      'plots': False,
    },
  )
  out = suite.run_suite(config, str(tmp_path))
  groups = ['geometric / two_rooms / regions', 'geometric / two_rooms / no_regions']
  assert list(out['results']) == groups
  with_regions, without = (out['results'][g][0] for g in groups)
  # The label-free variant found the two rooms by itself; only with regions is there an
  # oracle (the trajectory's region ids mean nothing to clustered regions).
  assert with_regions['jade']['region_source'] == 'file'
  assert without['jade']['region_source'] == 'auto' and without['nets']['num_nets'] == 2
  assert 'oracle' in with_regions['methods'] and 'oracle' not in without['methods']
  table = (tmp_path / 'suite.md').read_text()
  head = with_regions['methods']['switching_fit_first']
  row = next(line for line in table.splitlines() if line.startswith('| switching tracker, JADE'))
  assert f'{100 * head["submeter_fraction"]:.1f} %' in row and f'{head["median_m"]:.3g}' in row
  for _, label in suite.TABLE_METHODS:
    assert f'| {label} |' in table, label
  assert json.loads((tmp_path / 'suite.json').read_text())['seeds'] == [0]
  # The no-regions survey is the survey without its region dataset, nothing else.
  data = tmp_path / 'data' / 'geometric_two_rooms_seed0'
  with h5py.File(data / 'survey.h5') as a, h5py.File(data / 'survey_no_regions.h5') as b:
    assert set(a) - set(b) == {'region'}
    np.testing.assert_array_equal(a['aoa'][()], b['aoa'][()])
  # A second call runs nothing again.
  monkeypatch.setattr(
    suite.train, 'train_and_evaluate', lambda *a, **k: pytest.fail('ran a finished run')
  )
  again = suite.run_suite(config, str(tmp_path))
  assert again['results'] == out['results']


def test_suite_rejects_unknown_variants_and_given_data(tmp_path):
  config = config_utils.load_config(CONFIG + ':quick', {'suite.variants': ('regionz',)})
  with pytest.raises(ValueError, match='config.suite.variants'):
    suite.run_suite(config, str(tmp_path))
  config = config_utils.load_config(CONFIG + ':quick', {'data.survey': 'x.h5'})
  with pytest.raises(ValueError, match='generates its own scenarios'):
    suite.run_suite(config, str(tmp_path))
