"""The shared core: finished-stage records, fingerprints, option types built from a
config, the progress reporter and the error-CDF plot."""

import dataclasses
import json
import os

import ml_collections
import numpy as np
import pytest

from csiloc_jax.core import config_utils
from csiloc_jax.core import metric_writer
from csiloc_jax.core import plots
from csiloc_jax.core import runs


def test_fingerprint_ignores_key_order_and_sees_every_value():
  a = runs.fingerprint({'x': 1, 'y': [1, 2]}, 'tag')
  assert a == runs.fingerprint({'y': [1, 2], 'x': 1}, 'tag')
  assert a != runs.fingerprint({'x': 1, 'y': [1, 3]}, 'tag')
  assert a != runs.fingerprint({'x': 1, 'y': [1, 2]}, 'other')


def test_file_signature_changes_with_the_contents(tmp_path):
  path = tmp_path / 'f.bin'
  path.write_bytes(b'abc')
  before = runs.file_signature(str(path))
  path.write_bytes(b'abcd')
  assert runs.file_signature(str(path)) != before


def test_stage_is_done_only_for_the_same_fingerprint(tmp_path):
  stage = runs.Stage(str(tmp_path / 'phase'), 'fit', runs.fingerprint('a'))
  assert stage.result() is None
  stage.finish({'best_epoch': 3})
  assert stage.result() == {'best_epoch': 3}
  assert runs.Stage(str(tmp_path / 'phase'), 'fit', runs.fingerprint('b')).result() is None
  stage.reset()
  assert stage.result() is None


def test_a_damaged_stage_record_means_not_done(tmp_path):
  stage = runs.Stage(str(tmp_path), 'fit', runs.fingerprint('a'))
  stage.finish({'x': 1})
  with open(stage.path, 'w') as f:
    f.write('{"fingerprint": ')  # A write cut short.
  assert stage.result() is None


def test_write_json_is_atomic_and_converts_numpy(tmp_path):
  path = str(tmp_path / 'm.json')
  runs.write_json(path, {'a': np.float32(1.5), 'b': np.arange(3)})
  with open(path) as f:
    assert json.load(f) == {'a': 1.5, 'b': [0, 1, 2]}
  assert not os.path.exists(path + '.tmp')


@dataclasses.dataclass(frozen=True)
class _Options:
  hidden_sizes: tuple
  learning_rate: float
  seed: int


def test_options_come_from_the_config_alone():
  section = ml_collections.ConfigDict(
    {'hidden_sizes': [8, 4], 'learning_rate': 1e-3, 'unrelated': 'ignored'}
  )
  opts = config_utils.options_from_config(_Options, section, 'config.nets', seed=7)
  assert opts == _Options(hidden_sizes=(8, 4), learning_rate=1e-3, seed=7)
  del section['learning_rate']
  with pytest.raises(KeyError, match=r"config.nets has no field 'learning_rate'"):
    config_utils.options_from_config(_Options, section, 'config.nets', seed=7)


def test_progress_counts_only_timed_work_and_estimates_what_is_left():
  progress = metric_writer.Progress(100, done=20, unit='samples', name='gen')
  progress._busy_s, progress._units_timed, progress.step = 2.0, 40, 60
  progress.nbytes = 8_000_000
  s = progress.summary()
  assert s['samples_per_sec'] == pytest.approx(20.0)
  assert s['eta_s'] == pytest.approx(2.0)  # 40 samples left at 20 per second.
  assert s['mb_per_sec'] == pytest.approx(4.0)
  assert progress.line() == 'gen: 60/100 samples, 20.0 samples/s, 4.0 MB/s, ETA 0:00:02'


def test_progress_of_a_training_loop_reports_examples_per_second():
  progress = metric_writer.Progress(10, batch_size=64)
  progress.start()
  progress.stop(5)
  s = progress.summary()
  assert s['examples_per_sec'] == pytest.approx(64 * s['steps_per_sec'])
  assert progress.step == 5


def test_error_cdf_draws_methods_with_missing_estimates(tmp_path):
  path = str(tmp_path / 'cdf.png')
  plots.error_cdf(
    path, {'a': np.array([0.1, 0.5, 2.0]), 'b': np.array([np.inf, 0.3])}, log_x=True, mark_m=1.0
  )
  assert os.path.getsize(path) > 1000


def test_distributed_initialize_checks_its_arguments_and_is_off_for_one_process(monkeypatch):
  from csiloc_jax.core import distributed
  from csiloc_jax.core import errors

  for name in ('JAX_COORDINATOR_ADDRESS', 'SLURM_JOB_ID', 'OMPI_COMM_WORLD_SIZE'):
    monkeypatch.delenv(name, raising=False)
  monkeypatch.setenv('TPU_WORKER_HOSTNAMES', 'localhost')  # A single-host TPU VM.
  assert distributed.initialize() is False
  assert distributed.initialize('localhost:1234', 1, 0) is False
  with pytest.raises(errors.InputError, match='needs all of'):
    distributed.initialize('localhost:1234', 2, None)
  with pytest.raises(errors.InputError, match='--process_id=2 must be in'):
    distributed.initialize('localhost:1234', 2, 2)
  # One process: the helpers are no-ops.
  assert distributed.is_primary() and distributed.process_shard(8) == slice(0, 8)
  assert distributed.primary_first('x', lambda: 5) == 5
  rows = {'a': np.arange(3)}
  assert distributed.allgather_rows(rows) is rows
