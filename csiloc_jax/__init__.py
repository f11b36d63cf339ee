"""csiloc_jax: radio localization with self-supervision, in JAX/Flax.

Two systems over one small core:

* ``csiloc_jax.csi``: self-supervised CSI localization on massive-MIMO data in the
  IEEE CTW-2020 layout. ``csi.train.train_and_evaluate(config, workdir)`` runs one of
  the paper's four models; ``csi.compare.run_comparison`` reproduces Table I and a
  label-efficiency sweep.
* ``csiloc_jax.mmwave``: mmWave localization with self-supervised tiny networks.
  ``mmwave.train.train_and_evaluate(config, workdir)`` runs JADE, the per-region nets
  and the NIS-switching tracker.
* ``csiloc_jax.core``: configs, checkpoints, metric writing and progress, the
  data-parallel wrapper, run bookkeeping and shared plots; it imports neither system.

Subpackages load on first use, so ``import csiloc_jax`` stays cheap.
"""

import importlib

__version__ = '0.1.0'

_SUBPACKAGES = ('core', 'csi', 'mmwave')


def __getattr__(name: str):
  if name in _SUBPACKAGES:
    return importlib.import_module(f'{__name__}.{name}')
  raise AttributeError(f'module {__name__!r} has no attribute {name!r}')


def __dir__():
  return sorted(list(globals()) + list(_SUBPACKAGES))
