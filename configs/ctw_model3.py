"""Model 3: MLP autoencoder (256-128-64-32) pretrained on unlabelled CSI, then fine-tuned.

Usage: `python launch/train.py --config=configs/ctw_model3.py --workdir=W`; append
`:quick` for a smoke run. Every other field is the paper's protocol (configs/ctw_base.py).
"""

import os
import runpy

_BASE = runpy.run_path(os.path.join(os.path.dirname(os.path.abspath(__file__)), 'ctw_base.py'))
get_config = _BASE['paper_model']('model3')
