"""Interruptions anywhere: a CSI run and an mmWave run, each killed with SIGKILL at
several random points and restarted on the same workdir every time, end with the same
metrics as an uninterrupted run, and no killed run leaves a partial file that a later
run trusts.

Each test runs its launcher (``launch/train.py``, ``launch/mmwave.py``) as a child
process and kills it when a marker appears: a log line (an epoch's metrics, JADE or net
training starting, tracking done) plus a random delay, or a file (a cache build folder,
the generated survey, ``metrics.json`` or the first plot). Three of the stages below
are drawn per test, in pipeline order, with their epoch and delay; the seed is printed
and ``CSILOC_KILL_SEED=<seed>`` replays it.

  CSI:    cache build, pretraining, fine-tuning, evaluation, plot writing
  mmWave: data generation, JADE, net training, big-NN training, tracking/evaluation,
          plot writing

An uninterrupted run of the same config runs alongside. ``metrics.json`` must be equal
value for value (exactly, not within a tolerance) once timings, throughputs and the
"restored from checkpoint" flag are left out and the workdir's path is replaced.
"""

import dataclasses
import glob
import json
import os
import random
import re
import signal
import subprocess
import sys
import threading
import time

import ctw_files
import pytest
import run_metrics

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SEED = int(os.environ.get('CSILOC_KILL_SEED') or random.SystemRandom().randrange(2**31))


@dataclasses.dataclass
class KillPoint:
  """Kill when ``line`` (a regex) appears in the log, or when ``path`` (a glob under
  the workdir) is created or rewritten by this run, after ``delay_s``."""

  stage: str
  line: str | None = None
  path: str | None = None
  delay_s: float = 0.0


def _env(compile_cache: str) -> dict:
  env = dict(os.environ, JAX_PLATFORMS='cpu', PYTHONUNBUFFERED='1')
  # One CPU device and fewer optimisations: the runs compile quickly on 2 cores.
  env['XLA_FLAGS'] = re.sub(
    r'--xla_force_host_platform_device_count=\d+', '', env.get('XLA_FLAGS', '')
  ).strip()
  env['JAX_DISABLE_MOST_OPTIMIZATIONS'] = '1'
  # The runs of one test share compiled programs (the same executables, so the same
  # numbers): a restarted run does not compile again.
  env['JAX_COMPILATION_CACHE_DIR'] = compile_cache
  env['JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS'] = '0'
  env['JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES'] = '0'
  return env


def _start(args: list[str]) -> subprocess.Popen:
  # The compile cache sits next to the workdirs: tmp_path/<workdir>/ -> tmp_path/jax_cache.
  workdir = next(a.split('=', 1)[1] for a in args if a.startswith('--workdir='))
  return subprocess.Popen(
    [sys.executable, *args],
    cwd=REPO,
    env=_env(os.path.join(os.path.dirname(workdir), 'jax_cache')),
    stdout=subprocess.DEVNULL,
    stderr=subprocess.PIPE,
    text=True,
    bufsize=1,
  )


def _written_since(pattern: str, since_ns: int) -> bool:
  for path in glob.glob(pattern):
    try:
      if os.stat(path).st_mtime_ns >= since_ns:
        return True
    except FileNotFoundError:  # Renamed away while we looked.
      pass
  return False


def _run(args: list[str], workdir: str, point: KillPoint | None, timeout: float = 300) -> dict:
  """Runs the launcher until it ends, or until ``point`` fires and it is killed."""
  started_ns = time.time_ns()
  proc = _start(args)
  lines, fired = [], threading.Event()

  def read():
    for line in proc.stderr:
      lines.append(line)
      if point is not None and point.line and re.search(point.line, line):
        fired.set()

  reader = threading.Thread(target=read, daemon=True)
  reader.start()
  deadline = time.monotonic() + timeout
  killed = False
  while proc.poll() is None and time.monotonic() < deadline:
    if point is not None and (
      fired.is_set()
      or (point.path and _written_since(os.path.join(workdir, point.path), started_ns))
    ):
      time.sleep(point.delay_s)
      proc.send_signal(signal.SIGKILL)
      killed = True
      break
    time.sleep(0.002)
  if proc.poll() is None and not killed:
    proc.kill()
  proc.wait()
  reader.join(timeout=10)
  return {'returncode': proc.returncode, 'killed': killed, 'log': ''.join(lines)}


def _differences(a, b, where='') -> list[str]:
  if isinstance(a, dict) and isinstance(b, dict):
    out = [f'{where}/{k}: only in one' for k in set(a) ^ set(b)]
    for k in sorted(set(a) & set(b)):
      out += _differences(a[k], b[k], f'{where}/{k}')
    return out
  if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
    return [d for i, (x, y) in enumerate(zip(a, b)) for d in _differences(x, y, f'{where}[{i}]')]
  return [] if a == b else [f'{where}: {a!r} != {b!r}']


def _check_nothing_partial_is_trusted(workdir: str) -> None:
  """What a later run trusts after a kill: stage records and metrics.json parse, and a
  stage record's files are there; no temporary file or build folder survives a rerun."""
  for path in glob.glob(os.path.join(workdir, '**', '*.done.json'), recursive=True):
    with open(path) as f:
      record = json.load(f)
    assert set(record) == {'fingerprint', 'result'}, path
  metrics = os.path.join(workdir, 'metrics.json')
  if os.path.exists(metrics):
    with open(metrics) as f:
      json.load(f)
  for root, dirs, files in os.walk(os.path.join(workdir, 'cache')):
    for name in dirs:
      if not name.startswith('.building-'):
        assert os.path.exists(os.path.join(root, name, 'meta.json')), (root, name)


def _leftovers(workdir: str) -> list[str]:
  out = []
  for root, dirs, files in os.walk(workdir):
    for name in dirs + files:
      if name.endswith(('.tmp', '.partial')) or name.startswith('.building-'):
        out.append(os.path.relpath(os.path.join(root, name), workdir))
  return out


def _kill_chain(args_for, ref_dir, work_dir, points):
  """The uninterrupted run alongside a run killed at every point in turn and restarted
  each time; returns both metrics.json contents."""
  reference = _start(args_for(ref_dir))
  reference_log = []
  drain = threading.Thread(target=lambda: reference_log.extend(reference.stderr), daemon=True)
  drain.start()
  history = []
  for point in points:
    out = _run(args_for(work_dir), work_dir, point)
    history.append((point.stage, out['killed'], out['returncode']))
    assert out['killed'], (
      f'seed {SEED}: the run ended (rc {out["returncode"]}) before kill point {point}; '
      f'history {history}\n{out["log"][-3000:]}'
    )
    _check_nothing_partial_is_trusted(work_dir)
  final = _run(args_for(work_dir), work_dir, None)
  assert final['returncode'] == 0, f'seed {SEED}, history {history}\n{final["log"][-5000:]}'
  assert reference.wait(timeout=600) == 0, ''.join(reference_log)[-5000:]
  drain.join(timeout=10)
  assert _leftovers(work_dir) == [], f'seed {SEED}: {_leftovers(work_dir)}'
  with open(os.path.join(ref_dir, 'metrics.json')) as f:
    ref = run_metrics.comparable(json.load(f), ref_dir)
  with open(os.path.join(work_dir, 'metrics.json')) as f:
    resumed = run_metrics.comparable(json.load(f), work_dir)
  return ref, resumed, history


def _draw(rng: random.Random, stages: list[str], make, k: int = 3) -> list[KillPoint]:
  """``k`` distinct stages in pipeline order, each made into a kill point by ``rng``."""
  return [make(stages[i], rng) for i in sorted(rng.sample(range(len(stages)), k))]


# --------------------------------------------------------------------------------------
# CSI.


def _csi_point(stage: str, rng: random.Random) -> KillPoint:
  if stage == 'cache':
    return KillPoint('cache build', path='cache/.building-*')
  if stage in ('pretrain', 'finetune'):
    epoch = rng.randrange(3 if stage == 'pretrain' else 4)
    return KillPoint(
      f'{stage} epoch {epoch}',
      line=rf'phase={stage}, epoch={epoch}\b',
      delay_s=rng.uniform(0, 0.05),
    )
  if stage == 'evaluation':
    return KillPoint(stage, line=r'best validation loss', delay_s=rng.uniform(0, 0.2))
  return KillPoint('plots', path='metrics.json')


CSI_STAGES = ['cache', 'pretrain', 'finetune', 'evaluation', 'plots']


def test_csi_run_killed_three_times_resumes_to_the_same_metrics(tmp_path):
  rng = random.Random(SEED)
  points = _draw(rng, CSI_STAGES, _csi_point)
  print(f'CSI kill points (CSILOC_KILL_SEED={SEED}): {points}')
  root = ctw_files.write_dataset(
    tmp_path / 'ctw', num_labelled=160, num_unlabelled=128, shape=(8, 12, 3), per_file=50
  )

  def args_for(workdir):
    return [
      'launch/train.py',
      '--config=configs/ctw_model3.py:quick',
      f'--workdir={workdir}',
      f'--config.data.root={root}',
      f'--config.data.cache_dir={os.path.join(workdir, "cache")}',
      '--config.pretrain.num_epochs=3',
      '--config.finetune.num_epochs=4',
      '--config.pretrain.batch_size=16',
      '--config.finetune.batch_size=16',
      '--config.pretrain.checkpoint_every_secs=0',
      '--config.finetune.checkpoint_every_secs=0',
      "--config.eval.baselines=('train_mean',)",
    ]

  ref_dir, work_dir = str(tmp_path / 'reference'), str(tmp_path / 'killed')
  ref, resumed, history = _kill_chain(args_for, ref_dir, work_dir, points)
  ref['data']['root'] = resumed['data']['root']  # Both read the same root.
  assert _differences(ref, resumed) == [], (SEED, history, _differences(ref, resumed))


# --------------------------------------------------------------------------------------
# mmWave.


def _mmwave_point(stage: str, rng: random.Random) -> KillPoint:
  if stage == 'data':
    return KillPoint(stage, path='data/survey.h5*')
  if stage == 'plots':
    return KillPoint(stage, path='floor.png')
  line, delay = {
    'jade': (r'JADE: solving', 1.0),
    'nets': (r'nets: training', 1.0),
    'big_nn': (r'big_nn: training', 0.5),
    'tracking': (r'tracked \d+ steps', 0.3),
  }[stage]
  return KillPoint(stage, line=line, delay_s=rng.uniform(0, delay))


MMWAVE_STAGES = ['data', 'jade', 'nets', 'big_nn', 'tracking', 'plots']


def test_mmwave_run_killed_three_times_resumes_to_the_same_metrics(tmp_path):
  rng = random.Random(SEED + 1)
  points = _draw(rng, MMWAVE_STAGES, _mmwave_point)
  print(f'mmWave kill points (CSILOC_KILL_SEED={SEED}): {points}')

  def args_for(workdir):
    return [
      'launch/mmwave.py',
      '--config=configs/mmwave_tiny.py:quick',
      f'--workdir={workdir}',
      '--config.data.floorplan=two_rooms',
      '--config.data.num_survey=60',
      '--config.data.num_trajectory_steps=40',
      '--config.nets.num_train_steps=100',
      '--config.nets.eval_every=50',
      '--config.big_nn.num_train_steps=50',
      '--config.big_nn.eval_every=50',
    ]

  ref_dir, work_dir = str(tmp_path / 'reference'), str(tmp_path / 'killed')
  ref, resumed, history = _kill_chain(args_for, ref_dir, work_dir, points)
  assert _differences(ref, resumed) == [], (SEED, history, _differences(ref, resumed))


@pytest.mark.parametrize('stages, make', [(CSI_STAGES, _csi_point), (MMWAVE_STAGES, _mmwave_point)])
def test_kill_points_are_three_stages_in_pipeline_order(stages, make):
  for seed in range(20):
    points = _draw(random.Random(seed), stages, make)
    index = [stages.index(p.stage.split(' ')[0]) for p in points]
    assert len(set(index)) == 3 and index == sorted(index)
