"""Random damage to files, and valid files to damage, for the robustness tests.

Hypothesis strategies for the kinds of damage a file meets on disks and in transfers
(bit flips in the first 4 KB, where HDF5 keeps its superblock and root group, or
anywhere; truncation; a zeroed block; a block of garbage), offsets drawn as fractions
of the file's size so that one example fits files of any size; a writer of valid mmWave
measurement files of random sizes; and the test-wide Hypothesis profiles.

Profiles (environment variable ``CSILOC_HYPOTHESIS_PROFILE``): ``ci`` (the default, a
bounded number of examples per test) and ``local`` (many more, for a long run on a
workstation). Neither keeps an example database in the checkout.
"""

import os

import h5py
from hypothesis import HealthCheck
from hypothesis import settings
from hypothesis import strategies as st
import numpy as np

settings.register_profile(
  'ci',
  max_examples=25,
  deadline=None,
  database=None,
  print_blob=True,
  suppress_health_check=[HealthCheck.too_slow],
)
settings.register_profile(
  'local',
  max_examples=400,
  deadline=None,
  database=None,
  print_blob=True,
  suppress_health_check=[HealthCheck.too_slow],
)
PROFILE = os.environ.get('CSILOC_HYPOTHESIS_PROFILE', 'ci')
# Examples of a test that runs a whole training per example, per profile.
RUN_EXAMPLES = {'ci': 2, 'local': 40}[PROFILE]


def profile(**overrides) -> settings:
  """The selected profile, with ``overrides`` (e.g. fewer examples for slow tests)."""
  return settings(settings.get_profile(PROFILE), **overrides)


_fraction = st.floats(0.0, 1.0, exclude_max=True, allow_nan=False)
_flips = st.lists(st.tuples(_fraction, st.integers(0, 7)), min_size=1, max_size=8)

# One piece of damage: (kind, arguments).
damage = st.one_of(
  st.tuples(st.just('flip_head'), _flips),
  st.tuples(st.just('flip_any'), _flips),
  st.tuples(st.just('truncate'), _fraction),
  st.tuples(st.just('zero'), _fraction, st.integers(1, 4096)),
  st.tuples(st.just('garbage'), _fraction, st.binary(min_size=1, max_size=512)),
)
damages = st.lists(damage, min_size=1, max_size=3)


def apply(data: bytes, ops) -> bytes:
  """``data`` with every piece of damage of ``ops`` applied in turn."""
  out = bytearray(data)
  for op in ops:
    kind = op[0]
    if not out:
      break
    if kind in ('flip_head', 'flip_any'):
      span = min(4096, len(out)) if kind == 'flip_head' else len(out)
      for where, bit in op[1]:
        out[int(where * span)] ^= 1 << bit
    elif kind == 'truncate':
      del out[int(op[1] * len(out)) :]
    elif kind == 'zero':
      start = int(op[1] * len(out))
      out[start : start + op[2]] = bytes(len(out[start : start + op[2]]))
    elif kind == 'garbage':
      start = int(op[1] * len(out))
      block = op[2][: len(out) - start]
      out[start : start + len(block)] = block
    else:
      raise ValueError(kind)
  return bytes(out)


def damage_file(src: str, dst: str, ops) -> None:
  with open(src, 'rb') as f:
    data = f.read()
  with open(dst, 'wb') as f:
    f.write(apply(data, ops))


# Valid mmWave measurement files (docs/schemas.md, 'mmWave measurement files').
measurement_files = st.fixed_dictionaries(
  {
    'num_samples': st.integers(1, 40),
    'num_aps': st.integers(1, 4),
    'reflections': st.integers(0, 2),
    'seed': st.integers(0, 2**16),
    'checksum': st.booleans(),
    'attributes': st.booleans(),
    'float64': st.booleans(),
    'region': st.booleans(),
  }
)


def write_measurements(path: str, spec: dict) -> dict:
  """A valid survey/trajectory file after ``spec`` (a ``measurement_files`` draw);
  returns the datasets written."""
  rng = np.random.default_rng(spec['seed'])
  t, num_aps = spec['num_samples'], spec['num_aps']
  anchor_ap = np.repeat(np.arange(num_aps), 1 + spec['reflections'])
  anchor_kind = np.tile(np.r_[0, np.ones(spec['reflections'])], num_aps)
  order = rng.permutation(len(anchor_ap))
  m = len(anchor_ap)
  aoa = rng.uniform(-np.pi, np.pi, (t, m))
  aoa[rng.random((t, m)) < 0.3] = np.nan
  fdt = np.float64 if spec['float64'] else np.float32
  data = {
    'aoa': aoa.astype(fdt),
    'anchor_ap': anchor_ap[order].astype(np.int32),
    'anchor_kind': anchor_kind[order].astype(np.int8),
    'ap_position': rng.uniform(0, 20, (num_aps, 2)).astype(fdt),
    'time_s': np.cumsum(rng.uniform(0.1, 1.0, t)),
    'position': rng.uniform(0, 20, (t, 2)).astype(fdt),
    'heading': rng.uniform(-np.pi, np.pi, t).astype(fdt),
    'anchor_position': rng.uniform(-20, 40, (m, 2)).astype(fdt),
  }
  if spec['region']:
    data['region'] = rng.integers(0, 3, t).astype(np.int32)
  with h5py.File(path, 'w') as f:
    for key, value in data.items():
      f.create_dataset(key, data=value, fletcher32=spec['checksum'])
    if spec['attributes']:
      # String attributes live in the global heap: damage there makes libhdf5 loop.
      f.attrs['description'] = 'a generated measurement file'
      f.attrs['floorplan_json'] = '{"walls": []}'
      f.attrs['seed'] = spec['seed']
      f.attrs['aoa_noise_deg'] = 2.0
  return data
