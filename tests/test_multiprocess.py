"""Multi-process data parallelism on JAX's own runtime: 2 processes on localhost.

``launch/train.py`` runs as 2 processes (``--coordinator_address``, ``--num_processes``,
``--process_id``; one CPU device each, gloo collectives) and as 1 process with 2 CPU
devices, with the same global batch. A run trained by 1 process and resumed by 2 from
its checkpoints (through ``jit(shard_map)``) ends with the same ``metrics.json`` and the
same best checkpoints as a run of 2 processes all along (through ``pmap``), within
float tolerance: the summed gradients are the same numbers, reduced by another runtime.
Only process 0 writes the run's files.

Where no test reaches: a real pod slice or several GPU hosts (README.md, 'Several
hosts', has the commands).
"""

import json
import os
import socket
import subprocess
import sys

import ctw_files
import numpy as np
import orbax.checkpoint as ocp
import run_metrics

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _env(tmp_path, num_devices: int) -> dict:
  env = dict(os.environ, JAX_PLATFORMS='cpu', PYTHONUNBUFFERED='1')
  env['XLA_FLAGS'] = f'--xla_force_host_platform_device_count={num_devices}'
  env['JAX_DISABLE_MOST_OPTIMIZATIONS'] = '1'
  # The runs share compiled programs: each process compiles less.
  env['JAX_COMPILATION_CACHE_DIR'] = str(tmp_path / 'jax_cache')
  env['JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS'] = '0'
  return env


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(('localhost', 0))
    return s.getsockname()[1]


def _launch(tmp_path, args: list[str], num_processes: int) -> list[str]:
  """Runs ``launch/train.py`` as ``num_processes`` processes of 1 device each (1 process:
  2 devices, the same global device count); returns their logs."""
  if num_processes == 1:
    commands = [[sys.executable, 'launch/train.py', *args]]
    env = _env(tmp_path, 2)
  else:
    address = f'localhost:{_free_port()}'
    commands = [
      [
        sys.executable,
        'launch/train.py',
        *args,
        f'--coordinator_address={address}',
        f'--num_processes={num_processes}',
        f'--process_id={i}',
      ]
      for i in range(num_processes)
    ]
    env = _env(tmp_path, 1)
  procs = [
    subprocess.Popen(
      c, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    for c in commands
  ]
  logs = []
  try:
    for p in procs:
      logs.append(p.communicate(timeout=600)[0])
  finally:
    for p in procs:
      if p.poll() is None:
        p.kill()
  for p, log in zip(procs, logs):
    assert p.returncode == 0, log[-4000:]
  return logs


def _assert_close(a, b, where=''):
  if isinstance(a, dict):
    assert set(a) == set(b), (where, set(a) ^ set(b))
    for k in a:
      _assert_close(a[k], b[k], f'{where}/{k}')
  elif isinstance(a, list):
    assert len(a) == len(b), where
    for i, (x, y) in enumerate(zip(a, b)):
      _assert_close(x, y, f'{where}[{i}]')
  elif isinstance(a, float) and isinstance(b, float):
    assert np.isclose(a, b, rtol=1e-5, atol=1e-7, equal_nan=True), (where, a, b)
  else:
    assert a == b, (where, a, b)


def _best_params(workdir, phase: str):
  directory = os.path.join(workdir, phase, 'checkpoints', 'best')
  step = max(int(x) for x in os.listdir(directory) if x.isdigit())
  restored = ocp.PyTreeCheckpointer().restore(os.path.join(directory, str(step), 'state'))
  return step, restored['params']


def test_two_processes_equal_one_and_resume_with_another_count(tmp_path):
  root = ctw_files.write_dataset(
    tmp_path / 'ctw', num_labelled=120, num_unlabelled=96, shape=(8, 12, 3), per_file=40
  )

  def args(workdir, finetune_epochs=3, backend='pmap'):
    return [
      '--config=configs/ctw_model3.py:quick',
      f'--config.parallel.backend={backend}',
      # Checkpoints every few epochs by the clock: each process's clock would decide
      # differently, and orbax's save is collective (process 0 decides for all).
      '--config.pretrain.checkpoint_every_secs=0.3',
      '--config.finetune.checkpoint_every_secs=0.3',
      f'--workdir={workdir}',
      f'--config.data.root={root}',
      '--config.pretrain.num_epochs=2',
      f'--config.finetune.num_epochs={finetune_epochs}',
      '--config.pretrain.batch_size=16',
      '--config.finetune.batch_size=16',
      "--config.eval.baselines=('train_mean',)",
    ]

  # 'mixed': 1 process trains, stopping fine-tuning after 2 epochs; 2 processes then
  # resume it for the third, both through jit(shard_map). 'two': 2 processes all along,
  # through pmap.
  mixed, two = tmp_path / 'mixed', tmp_path / 'two'
  _launch(tmp_path, args(mixed, finetune_epochs=2, backend='shard_map'), num_processes=1)
  resumed_logs = _launch(tmp_path, args(mixed, backend='shard_map'), num_processes=2)
  logs = _launch(tmp_path, args(two), num_processes=2)
  for log in logs + resumed_logs:
    assert '2 device(s)' in log
  for log in resumed_logs:
    assert 'pretrain: already finished' in log
    assert 'finetune: resuming after epoch 2' in log

  # The same numbers, and every process returns them.
  reference = run_metrics.read(two)
  _assert_close(run_metrics.read(mixed), reference)
  assert reference['test']['mae']['average'] > 0
  # The same best checkpoints: pretraining's written by 1 process against 2.
  for phase in ('pretrain', 'finetune'):
    step_1, params_1 = _best_params(mixed, phase)
    step_2, params_2 = _best_params(two, phase)
    assert step_1 == step_2
    flat_1, flat_2 = (ocp.tree.to_flat_dict(p) for p in (params_1, params_2))
    assert flat_1.keys() == flat_2.keys()
    for key in flat_1:
      np.testing.assert_allclose(flat_1[key], flat_2[key], rtol=1e-5, atol=1e-6, err_msg=str(key))

  # Process 0 alone wrote the run's files (each epoch once, not once per process);
  # process 1 logged to its own file.
  names = set(os.listdir(two))
  assert {'metrics.json', 'metrics.jsonl', 'log.txt', 'log.process1.txt'} <= names
  assert not [n for n in names if n.endswith('.tmp')]
  with open(two / 'metrics.jsonl') as f:
    epochs = [json.loads(line) for line in f]
  assert [(r['phase'], r['epoch']) for r in epochs] == [('pretrain', e) for e in range(3)] + [
    ('finetune', e) for e in range(4)
  ]
