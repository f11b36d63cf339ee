"""The paper's comparison (Table I) plus a label-efficiency sweep, on one dataset.

Default: the built-in demo — a small synthetic CTW-layout set generated into
WORKDIR/data (1,000 labelled + 3,000 unlabelled samples of 56 antennas x 16 subcarriers
x 5 measurements, so a 2-core CPU finishes in minutes), all four models, then Models
1-4 fine-tuned with 100, 300 and all 900 training labels.
For the real CTW-2020 data:

  python launch/compare.py --config=configs/ctw_compare.py:paper --workdir=W \\
      --config.data.root=/path/to/ctw2020

``:paper`` restores the paper's full protocol (100 epochs, patience 10) and sweeps
100 → all labels; ``:quick`` is a smoke test.
"""

import os
import runpy

import ml_collections

_BASE = runpy.run_path(os.path.join(os.path.dirname(os.path.abspath(__file__)), 'ctw_base.py'))


def get_config(arg: str = ''):
  if arg not in ('', 'paper', 'quick'):
    raise ValueError(f'unknown config argument {arg!r}; use "", "paper" or "quick"')
  config = _BASE['get_config']('quick' if arg == 'quick' else '')
  compare = ml_collections.ConfigDict()
  # The settings of config.model that make each paper model (name -> encoder, pretrain),
  # from ctw_base.py's table: the models named below are built from these.
  compare.paper_models = ml_collections.ConfigDict(_BASE['PAPER_MODELS'])
  # Per-model departures from the paper (nested config fields), unless protocol='paper'.
  compare.model_overrides = ml_collections.ConfigDict(_BASE['MODEL_OVERRIDES'])
  # Models of Table I to train, comma-separated (model1 ... model4).
  compare.models = 'model1,model2,model3,model4'
  # Models of the label-efficiency sweep, comma-separated.
  compare.sweep_models = 'model1,model2,model3,model4'
  # Labelled training-set sizes of the sweep (sizes >= the full split are skipped; the
  # full split's result comes from the main run).
  compare.label_budgets = (50, 100, 200, 400)
  # Seeds of the label-efficiency sweep (model initialisation and the random split,
  # config.seed and config.data.split_seed): every budget is run once per seed and
  # reported as mean, spread and band. Pretraining does not use labels and is shared.
  compare.seeds = (0, 1, 2)
  config.compare = compare

  if arg == 'paper':
    config.compare.label_budgets = (100, 200, 500, 1000, 2000)
  elif arg == '':
    # The demo: shapes and epochs sized for a 2-core CPU. The protocol is the paper's
    # otherwise (Adam 1e-3, batch 64, early stopping, 90/5/5 and 80/20 splits).
    config.data.synthetic.num_labelled = 1000
    config.data.synthetic.num_unlabelled = 3000
    config.data.synthetic.num_subcarriers = 16
    config.compare.label_budgets = (100, 300)
    config.pretrain.num_epochs = 20
    config.pretrain.patience = 4
    config.finetune.num_epochs = 30
    config.finetune.patience = 6
  elif arg == 'quick':
    config.compare.label_budgets = (40,)
    config.compare.seeds = (0,)
    config.data.synthetic.num_labelled = 200
    config.data.synthetic.num_unlabelled = 200
    config.data.synthetic.num_subcarriers = 16
    config.pretrain.num_epochs = 2
    config.finetune.num_epochs = 2
  return config
