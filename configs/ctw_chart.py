"""Channel charting as pretraining: a chart of the unlabelled CSI, then fine-tuning.

Usage: `python launch/train.py --config=configs/ctw_chart.py --workdir=W
--config.data.root=DATA` (or `:quick` for a smoke run on the built-in generator). It
writes the same metrics.json as the paper's models plus `chart` (trustworthiness,
continuity, Kruskal stress and the affine-map error of the chart) and chart.png.

Choices (docs/csi.md, 'Channel charting'):
* Input: the trace-normalised spatial covariance (56 x 56 x 2), as `configs/ctw_best.py`.
* Network: Model 3's MLP encoder (256 -> 128 -> 64 -> 32) then the position head; Model
  1's flatten encoder has no parameters, so a chart could not pretrain anything of it.
* Pretraining: the encoder plus a linear head to 2-D, trained on the unlabelled set with
  the Sammon-weighted Siamese loss on geodesic correlation-matrix distances (20-nearest-
  neighbour graph); then its encoder is fine-tuned with the head on the labels, exactly
  like Model 3's autoencoder encoder.
"""

import os
import runpy

_BASE = runpy.run_path(os.path.join(os.path.dirname(os.path.abspath(__file__)), 'ctw_base.py'))


def get_config(arg: str = ''):
  config = _BASE['paper_model']('model3')(arg)
  config.model.name = 'chart'
  config.model.pretrain = 'chart'
  config.data.feature = 'covariance'
  return config
