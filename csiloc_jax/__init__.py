"""csiloc_jax: radio localization with self-supervision, in JAX/Flax.

Two systems share one functional codebase:

* Self-supervised CSI localization (CTW-2020 massive-MIMO data): ``ctw_synth`` writes
  CTW-layout HDF5 files, ``ctw_data`` streams and preprocesses them, ``models`` holds the
  paper's four models, ``train.train_and_evaluate`` pretrains/fine-tunes one of them and
  ``compare`` reproduces the paper's Table I and a label-efficiency sweep.
* mmWave localization with self-supervised tiny networks (``csiloc_jax.mmwave``).

Shared plumbing: ``config_utils``, ``parallel``, ``checkpointing``, ``metric_writer``.
"""

__version__ = '0.1.0'
