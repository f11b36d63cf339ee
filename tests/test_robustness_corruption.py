"""Property-based: random damage to a valid file of either schema ends in a clear error
naming the file, or in a read (and a run) whose inputs passed validation.

Hypothesis draws valid files (CTW-2020 layout: sizes, dtype; mmWave schema: sizes,
anchors, float32/float64, with or without Fletcher-32 checksums and string attributes)
and damage (tests/corruption.py: bit flips in the first 4 KB or anywhere, truncation, a
zeroed block, garbage). The contract checked on every example:

* refused: the reader's own error (``core.errors.InputError``), one line, naming the
  damaged file; never another exception, a hang or a crash;
* read: everything the schema promises holds (finite CSI and positions in range, AoAs
  in (-pi, pi] or NaN, anchors that index their APs, ...), and the plausibility counts
  are recorded;
* run (a few examples): a whole CSI or mmWave run on a damaged file is refused the same
  way or completes with finite metrics and the counts in ``metrics.json``.

Examples per test: ``CSILOC_HYPOTHESIS_PROFILE=ci`` (default: 25 per reader, 2 runs per
system) or ``local`` (400 per reader, 40 runs per system):

  CSILOC_HYPOTHESIS_PROFILE=local .venv/bin/pytest -s tests/test_robustness_corruption.py

With ``-s`` each test prints how many examples were refused and how many ran.
"""

import collections
import os
import shutil
import tempfile

import corruption
import ctw_files
from hypothesis import event
from hypothesis import example
from hypothesis import given
from hypothesis import strategies as st
import numpy as np
import pytest

from csiloc_jax.core import config_utils
from csiloc_jax.core import errors
from csiloc_jax.core import h5io
from csiloc_jax.csi import reader as ctw_reader
from csiloc_jax.csi import train as ctw_train
from csiloc_jax.mmwave import floorplan
from csiloc_jax.mmwave import reader as mm_reader
from csiloc_jax.mmwave import simulator
from csiloc_jax.mmwave import train as mm_train

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUTCOMES = collections.defaultdict(collections.Counter)


@pytest.fixture(scope='module', autouse=True)
def short_probe_timeout():
  # A damaged file that makes libhdf5 loop costs this long; healthy files take ms.
  saved = h5io.PROBE_TIMEOUT_S
  h5io.PROBE_TIMEOUT_S = 10.0
  yield
  h5io.PROBE_TIMEOUT_S = saved
  for test, counts in sorted(OUTCOMES.items()):
    print(f'\n{test}: {dict(counts)}')


def _refused(error: BaseException, path: str) -> str:
  """Checks a refusal is the reader's own one-line error naming ``path``."""
  assert isinstance(error, errors.InputError), repr(error)
  text = str(error)
  assert path in text, text
  assert '\n' not in text, text
  if 'did not finish reading the metadata' in text:
    return 'refused (libhdf5 looped: the probe timed out)'
  if 'crashed reading the metadata' in text:
    return 'refused (libhdf5 crashed in the probe)'
  return 'refused'


# --------------------------------------------------------------------------------------
# Readers.

ctw_files_spec = st.fixed_dictionaries(
  {
    'num_samples': st.integers(1, 24),
    'shape': st.tuples(st.integers(1, 6), st.integers(1, 10), st.integers(1, 3)),
    'float64': st.booleans(),
    'seed': st.integers(0, 2**16),
  }
)


@corruption.profile()
@given(spec=ctw_files_spec, ops=corruption.damages)
def test_ctw_file_damage_is_refused_or_read_valid(spec, ops):
  with tempfile.TemporaryDirectory() as tmp:
    clean = os.path.join(tmp, 'clean.hdf5')
    ctw_files.write_file(
      clean,
      spec['num_samples'],
      spec['shape'],
      dtype=np.float64 if spec['float64'] else np.float32,
      seed=spec['seed'],
    )
    folder = os.path.join(tmp, ctw_reader.LABELLED_DIR)
    os.makedirs(folder)
    damaged = os.path.join(folder, 'file_1.hdf5')
    corruption.damage_file(clean, damaged, ops)
    try:
      arrays = ctw_reader.build_cache(folder, os.path.join(tmp, 'cache'), require_positions=True)
    except Exception as e:  # noqa: BLE001  The contract: only the reader's error.
      outcome = _refused(e, damaged)
    else:
      n = len(arrays)
      assert arrays.features.shape[1:] == spec['shape'][:2] + (1,)
      assert np.isfinite(arrays.features).all()
      assert arrays.positions.shape == (n, 3) and np.isfinite(arrays.positions).all()
      assert np.abs(arrays.positions).max() <= ctw_reader.MAX_POSITION_M
      found = arrays.meta['validation']
      assert found['num_samples'] == n and 0 <= found['suspect_samples'] <= 2 * n
      outcome = 'ran, suspect samples flagged' if found['suspect_samples'] else 'ran'
  event(outcome)
  OUTCOMES['ctw reader'][outcome] += 1


@corruption.profile()
@given(spec=corruption.measurement_files, ops=corruption.damages, trajectory=st.booleans())
def test_mmwave_file_damage_is_refused_or_read_valid(spec, ops, trajectory):
  with tempfile.TemporaryDirectory() as tmp:
    clean, damaged = os.path.join(tmp, 'clean.h5'), os.path.join(tmp, 'survey.h5')
    written = corruption.write_measurements(clean, spec)
    corruption.damage_file(clean, damaged, ops)
    try:
      meas, truth = mm_reader.read_measurements(damaged, ground_truth=True, require_time=trajectory)
    except Exception as e:  # noqa: BLE001  The contract: only the reader's error.
      outcome = _refused(e, damaged)
    else:
      t, m = meas.aoa.shape
      assert m >= 1 and meas.aoa.dtype == np.float32
      finite = np.isfinite(meas.aoa)
      assert np.all(np.abs(meas.aoa[finite]) <= np.pi + 1e-6)
      assert meas.anchor_ap.shape == (m,) and meas.anchor_kind.shape == (m,)
      assert np.all((meas.anchor_ap >= 0) & (meas.anchor_ap < len(meas.ap_position)))
      assert set(np.unique(meas.anchor_kind)) <= {0, 1}
      direct = meas.anchor_ap[meas.anchor_kind == 0]
      assert len(direct) == len(set(direct.tolist()))
      assert np.isfinite(meas.ap_position).all()
      assert np.abs(meas.ap_position).max() <= mm_reader.MAX_COORDINATE_M
      assert meas.region is None or (meas.region.shape == (t,) and (meas.region >= 0).all())
      if trajectory:
        assert meas.time_s is not None and np.all(np.diff(meas.time_s) > 0)
      for name in ('position', 'anchor_position'):
        value = getattr(truth, name)
        if value is not None:
          assert not np.isinf(value).any()
          assert np.nanmax(np.abs(value), initial=0) <= mm_reader.MAX_COORDINATE_M
      assert meas.validation['num_samples'] == t
      same = (
        meas.aoa.shape == written['aoa'].shape
        and np.array_equal(np.isnan(meas.aoa), np.isnan(written['aoa']))
        and np.array_equal(meas.anchor_ap, written['anchor_ap'])
      )
      outcome = 'ran' + (', data as written' if same else ', data differs')
      if meas.validation['suspect_samples']:
        outcome += ', suspect samples flagged'
      if spec['checksum']:
        outcome += ' (checksummed)'
  event(outcome)
  OUTCOMES['mmwave reader'][outcome] += 1


# --------------------------------------------------------------------------------------
# Whole runs.


@pytest.fixture(scope='module')
def ctw_root(tmp_path_factory):
  return ctw_files.write_dataset(
    tmp_path_factory.mktemp('ctw'), num_labelled=120, num_unlabelled=0, shape=(6, 8, 2), per_file=40
  )


# Damage that undoes itself (the same bit flipped twice): the completed-run branch runs
# in every profile.
UNDONE = [('flip_any', [(0.5, 3), (0.5, 3)])]


@corruption.profile(max_examples=corruption.RUN_EXAMPLES)
@given(ops=corruption.damages, which=st.integers(1, 3))
@example(ops=UNDONE, which=2)
def test_ctw_run_on_a_damaged_file_is_refused_or_completes(ctw_root, ops, which):
  with tempfile.TemporaryDirectory() as tmp:
    root = os.path.join(tmp, 'ctw')
    shutil.copytree(ctw_root, root, ignore=shutil.ignore_patterns('.csiloc_cache'))
    damaged = os.path.join(root, ctw_reader.LABELLED_DIR, f'file_{which}.hdf5')
    corruption.damage_file(
      os.path.join(ctw_root, ctw_reader.LABELLED_DIR, f'file_{which}.hdf5'), damaged, ops
    )
    config = config_utils.load_config(
      os.path.join(REPO, 'configs', 'ctw_model1.py'),
      {
        'data.root': root,
        'finetune.num_epochs': 1,
        'finetune.batch_size': 16,
        'eval.baselines': ('train_mean',),
      },
    )
    try:
      summary = ctw_train.train_and_evaluate(config, os.path.join(tmp, 'run'))
    except Exception as e:  # noqa: BLE001  The contract: only the reader's error.
      outcome = _refused(e, damaged)
    else:
      assert np.isfinite(summary['test']['mae']['average'])
      found = summary['data']['validation']['labelled']
      assert found['num_samples'] == summary['data']['num_labelled']
      outcome = 'ran' + (', suspect samples flagged' if found['suspect_samples'] else '')
  event(outcome)
  OUTCOMES['ctw run'][outcome] += 1


@pytest.fixture(scope='module')
def small_scene(tmp_path_factory):
  return simulator.write_scenario(
    str(tmp_path_factory.mktemp('scene')),
    seed=2,
    aoa_noise_deg=3.0,
    num_survey=60,
    num_trajectory_steps=40,
    floorplan=floorplan.TWO_ROOM_FLOORPLAN,
  )


@corruption.profile(max_examples=corruption.RUN_EXAMPLES)
@given(ops=corruption.damages, which=st.sampled_from(['survey', 'trajectory']))
@example(ops=UNDONE, which='survey')
def test_mmwave_run_on_a_damaged_file_is_refused_or_completes(small_scene, ops, which):
  with tempfile.TemporaryDirectory() as tmp:
    paths = {k: os.path.join(tmp, f'{k}.h5') for k in ('survey', 'trajectory')}
    for key, path in paths.items():
      shutil.copy(small_scene[key], path)
    corruption.damage_file(small_scene[which], paths[which], ops)
    config = config_utils.load_config(
      os.path.join(REPO, 'configs', 'mmwave_tiny.py') + ':quick',
      {
        'data.survey': paths['survey'],
        'data.trajectory': paths['trajectory'],
        'nets.num_train_steps': 100,
        'nets.eval_every': 50,
        'big_nn.num_train_steps': 50,
        'big_nn.eval_every': 50,
        'plots': False,
      },
    )
    try:
      metrics = mm_train.train_and_evaluate(config, os.path.join(tmp, 'run'))
    except Exception as e:  # noqa: BLE001  The contract: only the reader's error.
      outcome = _refused(e, paths[which])
    else:
      assert 0 <= metrics['trajectory']['submeter_fraction'] <= 1
      found = metrics['data']['validation'][which]
      outcome = 'ran' + (', suspect samples flagged' if found['suspect_samples'] else '')
      # The simulator writes checksums: data that passed them is the data written.
      outcome += ' (checksummed)' if found['checksummed'] else ' (checksum lost)'
  event(outcome)
  OUTCOMES['mmwave run'][outcome] += 1
