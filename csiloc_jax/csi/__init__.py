"""Self-supervised CSI localization on massive-MIMO channel state information.

The data flow, one module per step (``docs/csi.md`` has the method and its choices)::

  simulator (built-in CTW-layout generator) ─> CTW2020_{labelled,unlabelled}_data/*.hdf5
  reader (validate, stream, average, features, cache) ─> input_pipeline (splits, normaliser,
  batches) ─> models (the paper's four) ─> steps (pure train/eval steps) ─> trainer
  (epoch loop, early stopping, checkpoints) ─> train.train_and_evaluate (one run)
  ─> metrics, plots;  compare (Table I and the label-efficiency sweep over many runs)

Every step is importable on its own, e.g. from a notebook::

  from csiloc_jax.core import config_utils
  from csiloc_jax.csi import train
  config = config_utils.load_config('configs/ctw_model4.py:quick')
  metrics = train.train_and_evaluate(config, '/tmp/model4')
"""
