"""Model 4: CNN autoencoder pretrained on unlabelled CSI, encoder + MLP head fine-tuned.

Usage: `python launch/train.py --config=configs/ctw_model4.py --workdir=W`; append
`:quick` for a smoke run. Every other field is the paper's protocol (configs/ctw_base.py).
"""

import os

from csiloc_jax.core import config_utils
from csiloc_jax.csi import models


def get_config(arg: str = ''):
  base = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'ctw_base.py')
  config = config_utils.load_config(base + (':' + arg if arg else ''))
  return models.apply_paper_model(config, 'model4')
