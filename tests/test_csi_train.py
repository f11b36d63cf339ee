"""End to end: train_and_evaluate on a tiny CTW-layout set writes every artefact,
learns something, and resumes after an interruption to the same result."""

import json
import os

import ctw_files
import numpy as np
import pytest

from csiloc_jax.core import checkpointing
from csiloc_jax.core import config_utils
from csiloc_jax.core import metric_writer
from csiloc_jax.csi import train
from csiloc_jax.csi import trainer


def _config(k, root, **overrides):
  base = {
    'data.root': root,
    'pretrain.num_epochs': 3,
    'finetune.num_epochs': 4,
    'pretrain.batch_size': 16,
    'finetune.batch_size': 16,
    'pretrain.log_every_steps': 2,
    'finetune.log_every_steps': 2,
    'finetune.learning_rate': 3e-3,
    'pretrain.checkpoint_every_secs': 0.0,
    'finetune.checkpoint_every_secs': 0.0,
  }
  base.update(overrides)
  return config_utils.load_config(f'configs/ctw_model{k}.py', base)


@pytest.fixture(scope='module')
def root(tmp_path_factory):
  return ctw_files.write_dataset(
    tmp_path_factory.mktemp('ctw'),
    num_labelled=160,
    num_unlabelled=128,
    shape=(8, 12, 3),
    per_file=50,
  )


def _records(workdir):
  with open(os.path.join(workdir, 'metrics.jsonl')) as f:
    return [json.loads(line) for line in f]


def test_model4_end_to_end_writes_all_artefacts(root, tmp_path):
  workdir = str(tmp_path / 'run')
  metrics = train.train_and_evaluate(_config(4, root), workdir)
  for name in (
    'config.json',
    'metrics.json',
    'metrics.jsonl',
    'log.txt',
    'learning_curves.png',
    'error_cdf.png',
    'positions_xy.png',
    'test_predictions.npz',
  ):
    assert os.path.getsize(os.path.join(workdir, name)) > 0, name
  for sub in (
    'pretrain/checkpoints/latest',
    'pretrain/checkpoints/best',
    'finetune/checkpoints/latest',
    'finetune/checkpoints/best',
  ):
    assert checkpointing.Checkpointer(os.path.join(workdir, sub)).latest_step() >= 1
  with open(os.path.join(workdir, 'metrics.json')) as f:
    on_disk = json.load(f)
  test = on_disk['test']
  for metric in ('mae', 'nmae', 'rmse', 'nrmse'):
    assert set(test[metric]) == {'x', 'y', 'z', 'average'}
  assert set(test['distance_m']) == {'mean', 'median', 'p90', 'p95'}
  assert test['num_samples'] == 8  # 5 % of 160.
  assert on_disk['data']['num_train_labels'] == 144
  # Pretraining lowered the reconstruction loss; fine-tuning lowered the position loss.
  records = _records(workdir)
  # Epoch 0 is the untrained model's validation loss (the training mean, for the head).
  assert sorted(r['phase'] for r in records if r['epoch'] == 0) == ['finetune', 'pretrain']
  rec = [r for r in records if r['epoch'] >= 1]
  pre = [r['val_loss'] for r in rec if r['phase'] == 'pretrain']
  fine = [r['train_loss'] for r in rec if r['phase'] == 'finetune']
  assert len(pre) == 3 and pre[-1] < pre[0]
  assert len(fine) == 4 and fine[-1] < fine[0]
  assert all('steps_per_sec' in r and 'eta_s' in r for r in rec)
  # Better than predicting the mean training position.
  z = np.load(os.path.join(workdir, 'test_predictions.npz'))
  baseline = np.abs(z['true'] - z['true'].mean(0)).mean()
  assert metrics['test']['mae']['average'] < baseline
  with open(os.path.join(workdir, 'log.txt')) as f:
    log = f.read()
  assert 'steps/s' in log and 'ETA' in log


class _Interrupt(Exception):
  pass


def test_interrupted_run_resumes_to_the_same_result(root, tmp_path, monkeypatch):
  reference = train.train_and_evaluate(_config(3, root), str(tmp_path / 'ref'))

  workdir = str(tmp_path / 'resumed')
  original = checkpointing.Checkpointer.save

  def crash_after(phase, epoch):
    def save(self, step, state, meta):
      original(self, step, state, meta)
      if f'{phase}/checkpoints/latest' in self.directory and step == epoch:
        self.wait()
        raise _Interrupt(f'{phase} {epoch}')

    return save

  monkeypatch.setattr(checkpointing.Checkpointer, 'save', crash_after('pretrain', 2))
  with pytest.raises(_Interrupt):
    train.train_and_evaluate(_config(3, root), workdir)
  monkeypatch.setattr(checkpointing.Checkpointer, 'save', crash_after('finetune', 2))
  with pytest.raises(_Interrupt):
    train.train_and_evaluate(_config(3, root), workdir)
  assert not os.path.exists(os.path.join(workdir, 'metrics.json'))
  monkeypatch.setattr(checkpointing.Checkpointer, 'save', original)
  resumed = train.train_and_evaluate(_config(3, root), workdir)

  # Each epoch was trained exactly once across the three invocations.
  seen = [(r['phase'], r['epoch']) for r in _records(workdir)]
  assert sorted(seen) == sorted(set(seen))
  assert len(seen) == 3 + 4 + 2  # epochs, plus each phase's epoch-0 validation
  for metric in ('mae', 'rmse'):
    assert resumed['test'][metric]['average'] == pytest.approx(
      reference['test'][metric]['average'], rel=1e-6
    )
  ref_pred = np.load(tmp_path / 'ref' / 'test_predictions.npz')['pred']
  res_pred = np.load(os.path.join(workdir, 'test_predictions.npz'))['pred']
  np.testing.assert_allclose(res_pred, ref_pred, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize(
  'change, named',
  [
    ({'model.ensemble_size': 2}, 'parameter_shapes'),
    ({'seed': 7}, 'initial_parameters'),
    ({'finetune.learning_rate': 1e-2}, 'train_config.learning_rate'),
  ],
)
def test_checkpoints_of_another_configuration_are_refused(
  root, tmp_path, monkeypatch, change, named
):
  # A workdir interrupted in fine-tuning, restarted with another configuration: its
  # checkpoints must not be resumed (other shapes crashed inside flax; same shapes
  # silently continued the other run). Only the resumable fields may change.
  workdir = str(tmp_path / 'w')
  original = checkpointing.Checkpointer.save

  def save(self, step, state, meta):
    original(self, step, state, meta)
    if 'finetune/checkpoints/latest' in self.directory and step == 2:
      self.wait()
      raise _Interrupt('finetune 2')

  monkeypatch.setattr(checkpointing.Checkpointer, 'save', save)
  with pytest.raises(_Interrupt):
    train.train_and_evaluate(_config(1, root), workdir)
  monkeypatch.setattr(checkpointing.Checkpointer, 'save', original)
  conflict = rf'finetune: holds checkpoints of another configuration \(differs in [^;]*{named}[,;]'
  with pytest.raises(trainer.WorkdirConflict, match=conflict):
    train.train_and_evaluate(_config(1, root, **change), workdir)
  # More epochs, more patience, another log interval: the same run, continued.
  resumed = train.train_and_evaluate(
    _config(
      1, root, **{'finetune.num_epochs': 5, 'finetune.patience': 20, 'finetune.log_every_steps': 3}
    ),
    workdir,
  )
  assert resumed['finetune']['epochs_run'] == 5
  seen = [r['epoch'] for r in _records(workdir) if r.get('phase') == 'finetune']
  assert sorted(seen) == sorted(set(seen)) == list(range(6))


@pytest.mark.parametrize('interval', [0.0, 30.0])
def test_epochs_redone_after_a_crash_are_logged_once(root, tmp_path, monkeypatch, interval):
  # A crash right after fine-tuning logged epoch 3, before that epoch's checkpoint: with
  # checkpoints every epoch the run resumes after epoch 2, at the default 30 s interval
  # (no checkpoint yet in so short a phase) from the start of fine-tuning. Either way,
  # epochs are redone, logged once, and end where an uninterrupted run ends.
  overrides = {'finetune.checkpoint_every_secs': interval}
  reference = train.train_and_evaluate(_config(1, root, **overrides), str(tmp_path / 'ref'))
  workdir = str(tmp_path / 'crashed')
  original = metric_writer.MetricWriter.write

  def write(self, step, scalars, **tags):
    original(self, step, scalars, **tags)
    if tags == {'phase': 'finetune', 'epoch': 3}:
      raise _Interrupt('after logging finetune epoch 3')

  monkeypatch.setattr(metric_writer.MetricWriter, 'write', write)
  with pytest.raises(_Interrupt):
    train.train_and_evaluate(_config(1, root, **overrides), workdir)
  assert [r['epoch'] for r in _records(workdir)] == [0, 1, 2, 3]
  monkeypatch.setattr(metric_writer.MetricWriter, 'write', original)
  resumed = train.train_and_evaluate(_config(1, root, **overrides), workdir)
  assert [r['epoch'] for r in _records(workdir)] == [0, 1, 2, 3, 4]
  assert resumed['test']['mae'] == reference['test']['mae']


def test_label_budget_and_reused_pretraining(root, tmp_path):
  first = str(tmp_path / 'm4')
  train.train_and_evaluate(_config(4, root, **{'finetune.num_epochs': 1}), first)
  cfg = _config(
    4,
    root,
    **{'data.num_train_labels': 20, 'model.pretrained_dir': first, 'finetune.num_epochs': 2},
  )
  out = train.train_and_evaluate(cfg, str(tmp_path / 'n20'))
  assert out['data']['num_train_labels'] == 20
  assert out['pretrain'] == {'loaded_from': first}
  assert not os.path.exists(tmp_path / 'n20' / 'pretrain')
  with pytest.raises(ValueError, match='num_train_labels=500 exceeds'):
    train.train_and_evaluate(
      _config(1, root, **{'data.num_train_labels': 500}), str(tmp_path / 'too_many')
    )


def test_unknown_config_field_is_an_error(root):
  with pytest.raises(KeyError, match="no field 'data.rooot'"):
    _config(1, root, **{'data.rooot': 'x'})
  with pytest.raises(KeyError, match="no field 'modle'"):
    _config(1, root, **{'modle.encoder': 'cnn'})


@pytest.mark.parametrize('k', [1, 2, 3, 4])
def test_every_model_beats_the_training_mean_on_iid_positions(tmp_path_factory, k):
  # Built-in generator, i.i.d. positions over the whole area: every model ends with a
  # validation loss under the training-mean predictor's, and metrics.json says so.
  data = tmp_path_factory.getbasetemp() / 'iid_data'
  overrides = {
    'data.root': str(data),
    'data.synthetic.num_labelled': 400,
    'data.synthetic.num_unlabelled': 400,
    'data.synthetic.num_antennas': 16,
    'data.synthetic.num_subcarriers': 16,
    'data.synthetic.num_measurements': 2,
    'data.synthetic.position_layout': 'uniform',
    'pretrain.num_epochs': 10,
    'finetune.num_epochs': 30,
    'pretrain.checkpoint_every_secs': 60.0,
    'finetune.checkpoint_every_secs': 60.0,
  }
  config = config_utils.load_config(f'configs/ctw_model{k}.py', overrides)
  summary = train.train_and_evaluate(config, str(tmp_path_factory.mktemp(f'iid{k}')))
  ratio = summary['finetune']['val_loss_vs_mean']
  assert ratio < 1.0, (k, ratio)
  assert summary['finetune']['mean_predictor_val_loss'] > summary['finetune']['best_val_loss']
  assert not any('training-mean' in w for w in summary['warnings'])
  assert set(summary['baselines']) == {'train_mean', 'knn_magnitude', 'knn_covariance'}


def test_best_config_beats_the_raw_csi_fingerprint_on_iid_positions(tmp_path_factory):
  # i.i.d. positions: raw-CSI kNN is no better than the mean here; configs/ctw_best.py
  # (spatial covariance) must beat both.
  overrides = {
    'data.root': str(tmp_path_factory.getbasetemp() / 'iid_data'),
    'data.synthetic.num_labelled': 400,
    'data.synthetic.num_unlabelled': 400,
    'data.synthetic.num_antennas': 16,
    'data.synthetic.num_subcarriers': 16,
    'data.synthetic.num_measurements': 2,
    'data.synthetic.position_layout': 'uniform',
    'finetune.num_epochs': 60,
    'finetune.checkpoint_every_secs': 60.0,
  }
  config = config_utils.load_config('configs/ctw_best.py', overrides)
  summary_dir = str(tmp_path_factory.mktemp('best'))
  summary = train.train_and_evaluate(config, summary_dir)
  mae = summary['test']['mae']['average']
  assert mae < summary['baselines']['train_mean']['mae']['average']
  assert mae < summary['baselines']['knn_magnitude']['mae']['average']
  assert summary['data']['feature'] == 'covariance'
  # A deep ensemble: the prediction is the members' mean, each member's own error is
  # reported, and the members differ.
  members = summary['test']['member_mae_average']
  assert len(members) == config.model.ensemble_size == 5
  assert len(set(members)) == 5
  # Per axis and sample |mean of members - truth| <= mean of |member - truth|.
  assert mae <= np.mean(members) + 1e-9
  saved = np.load(os.path.join(summary_dir, 'test_predictions.npz'))
  assert saved['member_pred'].shape == (len(saved['pred']), 5, 3)
  np.testing.assert_allclose(saved['pred'], saved['member_pred'].mean(1))
