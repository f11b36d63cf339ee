"""Shared defaults for the CTW-2020 experiments (the paper's protocol, Section IV).

Not a model on its own: ``ctw_model{1..4}.py`` take ``paper_model(name)`` from here (the
base config with one of the paper's models in ``config.model``) and ``ctw_compare.py``
starts from ``get_config``; both load this file with ``runpy``, so no config file imports
the library. ``get_config('quick')`` shrinks data and epochs for a smoke run.
"""

import ml_collections

# The paper's four models (Table I) as settings of ``config.model``: the encoder before
# the MLP position head, and whether it is pretrained as an autoencoder first.
PAPER_MODELS = {
  'model1': {'encoder': 'flatten', 'pretrain': 'none'},
  'model2': {'encoder': 'cnn', 'pretrain': 'none'},
  'model3': {'encoder': 'mlp', 'pretrain': 'autoencoder'},
  'model4': {'encoder': 'cnn', 'pretrain': 'autoencoder'},
}


# Where this project departs from the paper per model (nested config fields); a config
# built with the 'paper' argument keeps the paper's values. Model 1 feeds all 51,744
# inputs into one dense layer: Adam moves every weight by about the learning rate per
# step, so at the paper's 1e-3 a first-layer pre-activation moves by ~1e-3 x sum|x|
# (tens) per step and training diverges -- on ray-traced Munich data its validation
# loss ended 7x the training-mean predictor's; at 1e-4 it ends at 0.14x.
MODEL_OVERRIDES = {
  'model1': {'finetune': {'learning_rate': 1e-4}},
}


def apply_paper_model(config: ml_collections.ConfigDict, name: str) -> ml_collections.ConfigDict:
  """Sets ``config.model`` to one of the paper's models (in place; returns config), with
  this project's per-model overrides unless ``config.protocol`` is 'paper'."""
  if name not in PAPER_MODELS:
    raise ValueError(f'unknown model {name!r}; the paper has {sorted(PAPER_MODELS)}')
  config.model.name = name
  config.model.update(PAPER_MODELS[name])
  if config.protocol != 'paper':
    config.update(MODEL_OVERRIDES.get(name, {}))
  return config


def paper_model(name: str):
  """The ``get_config`` of one of the paper's models (what ``ctw_model{1..4}.py`` use)."""

  def model_config(arg: str = '') -> ml_collections.ConfigDict:
    return apply_paper_model(get_config(arg), name)

  return model_config


def get_config(arg: str = '') -> ml_collections.ConfigDict:
  config = ml_collections.ConfigDict()

  # Seed of model initialisation (data splits have their own seed below).
  config.seed = 0

  config.data = ml_collections.ConfigDict()
  # Folder holding CTW2020_labelled_data/ and CTW2020_unlabelled_data/. Empty: use
  # WORKDIR/data (generated there if generate_if_missing).
  config.data.root = ''
  # Generate the built-in synthetic CTW-layout set when the root has no labelled folder.
  config.data.generate_if_missing = True
  # Feature map fed to the models: 'real' (the paper: real part of the measurement-
  # averaged CSI, 1 channel), 'real_imag' (2 channels), 'magnitude' (1 channel),
  # 'magnitude_db' (dB below the sample's strongest entry, floored at -60 dB) or
  # 'covariance' (trace-normalised spatial covariance, antennas x antennas x 2) or
  # 'angle_delay' (beamspace power: 8 x 8 grid DFT x first 32 delay taps, 64 x 32 x 1).
  config.data.feature = 'real'
  # Averaging over the 5 measurements: 'mean' (the paper) or 'valid_mean' (skips failed
  # estimates, stored as exact zeros; 0 where all failed).
  config.data.average = 'mean'
  # Input normalisation, fit on the training split: 'per_feature' (z-score per antenna x
  # subcarrier x channel), 'global' (one mean/std) or 'none'. The paper is silent.
  config.data.normalization = 'per_feature'
  # Before that, each sample divided by its own RMS value ('rms') or not ('none', the
  # paper). Received power spans orders of magnitude across positions and says little
  # about where a UE is; on ray-traced Munich data Model 1 (lr 1e-4) ended at 16 m test
  # MAE average with it and 25 m without.
  config.data.sample_normalization = 'rms'
  # Position targets, undone before metrics: 'isotropic' (centred, one scale for all
  # axes: the loss stays the Euclidean error), 'standardize' (per-axis z-score, which
  # blows up an axis that barely varies, e.g. height on flat streets) or 'none' (raw
  # metres of O(100), slow for Adam at lr 1e-3). The paper is silent.
  config.data.label_scaling = 'isotropic'
  # Labelled split fractions train/validation/test (paper: 90/5/5).
  config.data.labelled_split = (0.9, 0.05, 0.05)
  # Unlabelled split fractions train/validation for pretraining (paper: 80/20).
  config.data.unlabelled_split = (0.8, 0.2)
  # Seed of the random splits (fixed, so every model sees the same splits).
  config.data.split_seed = 0
  # 'random' (the paper's split) or 'spatial': validation and test are two contiguous
  # areas (disks) that are never labelled, like CTW-2020's held-out streets.
  config.data.split_mode = 'random'
  # Labelled training samples to use (a prefix of the random train split; -1 = all).
  # The label-efficiency sweep varies this; validation and test splits stay fixed.
  config.data.num_train_labels = -1
  # Feature cache folder. Empty: ROOT/.csiloc_cache.
  config.data.cache_dir = ''
  # Preprocessing reads ~8 MB slices (4 samples at 56 x 924 x 5), never more than this
  # many samples. Non-finite values are reported per chunk of this many samples: the
  # chunk's first bad H_Re value, else its first bad H_Im value.
  config.data.chunk_size = 256
  # The synthetic set generated when the root is missing (see csiloc_jax.csi.simulator).
  config.data.synthetic = ml_collections.ConfigDict()
  # Labelled / unlabelled sample counts (the real set: 4,979 / 36,192).
  config.data.synthetic.num_labelled = 600
  config.data.synthetic.num_unlabelled = 2400
  # Working antennas (56 of an 8x8 array), used subcarriers (924), measurements (5).
  config.data.synthetic.num_antennas = 56
  config.data.synthetic.num_subcarriers = 924
  config.data.synthetic.num_measurements = 5
  # Seed of the synthetic environment and samples.
  config.data.synthetic.seed = 0
  # Where the synthetic UEs are: 'streets' (along a street grid, dense like cart tracks)
  # or 'uniform' (i.i.d. over the area, indoors included).
  config.data.synthetic.position_layout = 'streets'

  config.model = ml_collections.ConfigDict()
  # Display name of the model (set by ctw_model{1..4}.py).
  config.model.name = 'model'
  # Encoder before the position head: 'flatten' (Model 1), 'cnn' (Models 2, 4) or 'mlp'
  # (Model 3).
  config.model.encoder = 'flatten'
  # Pretraining of the encoder on unlabelled CSI before fine-tuning: 'none', 'autoencoder'
  # (Models 3, 4: reconstruction) or 'chart' (channel charting: the encoder plus a small
  # head to a 2-D chart, trained to keep CSI dissimilarities; config.chart). A string
  # so that a flag can set it; True / False in older configs mean autoencoder / none.
  config.model.pretrain = 'none'
  # Reuse the finished pretraining of another run's workdir instead of pretraining here
  # (the label-efficiency sweep pretrains once per autoencoder). Empty: pretrain here.
  config.model.pretrained_dir = ''
  # Freeze the pretrained encoder during fine-tuning. The paper fine-tunes the model
  # parameters, so it stays trainable by default.
  config.model.freeze_encoder = False
  # Position head widths before the 3-D output (paper: 128 -> 64 -> 3, ReLU).
  config.model.head_features = (128, 64)
  # Start the head's output layer at zero, so the untrained model is the training-mean
  # predictor (validation also runs before the first epoch, and early stopping keeps
  # the best): a run never ends worse than the mean on validation. The paper is silent.
  config.model.zero_init_output = True
  # Members of a deep ensemble of the position model (1: a single network). Members
  # differ only in their initialisation, train in one vmapped step on the same batches,
  # and the prediction is their mean (csiloc_jax.csi.models.build_position_model).
  config.model.ensemble_size = 1
  # MLP encoder widths (paper Model 3: 256 -> 128 -> 64 -> 32, ReLU); the decoder mirrors
  # them back to the input size.
  config.model.mlp_encoder_features = (256, 128, 64, 32)
  # Activation of the MLP encoder's last (latent) layer; the paper applies ReLU.
  config.model.latent_activation = 'relu'
  # CNN encoder channels and square kernel sizes (paper: 32 ch k3, 64 ch k2).
  config.model.cnn_features = (32, 64)
  config.model.cnn_kernel_sizes = (3, 2)
  # Max-pooling window = stride after each conv (paper: unspecified). 'SAME' padding.
  config.model.pool_size = (2, 2)
  # CNN decoder: transposed convs of these widths, then one to the input channels, each
  # with stride = pool size (paper: 32 ch then 1 ch, kernel 3).
  config.model.cnn_decoder_features = (32,)
  config.model.cnn_decoder_kernel_size = 3
  # Activation of the decoder output. The paper writes ReLU after the transposed convs,
  # but the normalised CSI it reconstructs is signed, so the last one is linear here.
  config.model.decoder_output_activation = 'linear'
  # How convolution kernel gradients are computed (values are the same either way, see
  # csiloc_jax/csi/layers.py): 'auto' = per-tap matmuls on CPU, XLA's own elsewhere; 'taps';
  # 'xla'.
  config.model.conv_kernel_grad = 'auto'

  def phase(num_epochs):
    pc = ml_collections.ConfigDict()
    # Global batch size (paper: 64); split across devices.
    pc.batch_size = 64
    # Adam learning rate (paper: 1e-3).
    pc.learning_rate = 1e-3
    # Maximum epochs (paper: 100) with early stopping on validation loss.
    pc.num_epochs = num_epochs
    # Early stopping: epochs without a validation improvement before stopping (paper:
    # unspecified).
    pc.patience = 10
    # Minimum decrease of the validation loss that counts as an improvement.
    pc.min_delta = 0.0
    # Minimum optimiser steps per epoch: smaller training sets are cycled (reshuffled)
    # until an epoch has this many batches. 1 = one pass, the paper's epoch. The label
    # sweep raises it so every label budget gets the full-label run's step budget.
    pc.min_steps_per_epoch = 1
    # Seed of the per-epoch shuffling (order depends only on (seed, epoch)).
    pc.seed = 0
    # Minimum seconds between 'latest' checkpoints (always written after the last epoch;
    # 0.0 = every epoch). An interrupted run resumes from the last one written.
    pc.checkpoint_every_secs = 30.0
    # Log loss, steps/s and ETA every this many steps.
    pc.log_every_steps = 50
    return pc

  # Pretraining on unlabelled data (Models 3, 4: the autoencoder; or the chart network).
  config.pretrain = phase(100)
  # Position-model training / fine-tuning on labelled data.
  config.finetune = phase(100)

  # Channel charting (config.model.pretrain='chart'; docs/csi.md, 'Channel charting').
  config.chart = ml_collections.ConfigDict()
  # CSI feature the dissimilarities are computed on (its own cache, raw): 'covariance'
  # (R/tr(R): directions of arrival, fading averaged out) or 'angle_delay' (beamspace
  # power profile: directions and delays).
  config.chart.dissimilarity = 'covariance'
  # 'cmd': correlation-matrix distance 1 - <R1, R2> / (|R1| |R2|) (cosine distance of
  # the feature vectors; scale-free), or 'euclidean' on the feature vectors.
  config.chart.distance = 'cmd'
  # Replace the direct dissimilarity by the shortest path over the unlabelled set's
  # k-nearest-neighbour graph (geodesic_neighbours): a direct dissimilarity saturates
  # beyond a short range, a sum of small steps keeps growing with distance. Computed
  # once (an [n, n] float32 file in WORKDIR/pretrain/chart; 5 GB for the real 36k set).
  # k = 20: on the ray-traced Munich set the chart's trustworthiness / continuity were
  # 0.907 / 0.908 with k = 10, 0.922 / 0.926 with 20 and 0.901 / 0.901 with 40
  # (docs/csi.md, 'Channel charting').
  config.chart.geodesic = True
  config.chart.geodesic_neighbours = 20
  # 'siamese': pair stress (|f(a) - f(b)| - d_ab)^2, weighted; 'triplet': anchor, the
  # closer and the farther partner by dissimilarity, margin loss.
  config.chart.loss = 'siamese'
  # Siamese pair weights: 'sammon' (1 / d_ab, relative errors, so the many far pairs do
  # not drown the near ones that carry local geometry) or 'none'.
  config.chart.weighting = 'sammon'
  # Floor of d_ab in the Sammon weight, in units of the mean dissimilarity of random
  # pairs (dissimilarities are divided by that mean): duplicates do not dominate.
  config.chart.min_dissimilarity = 0.05
  # Triplet margin, in chart units (it fixes the chart's scale).
  config.chart.margin = 1.0
  # Siamese: fraction of pairs whose partner is one of the anchor's close_neighbours
  # nearest (the rest: any sample). Triplet: the close candidate is one of them.
  config.chart.near_fraction = 0.5
  config.chart.close_neighbours = 20
  # Widths of the chart head's hidden layers between the encoder and the 2-D chart
  # (ReLU); () = a linear map of the encoder's output, so the chart coordinates are
  # linear in the features the position head will read.
  config.chart.head_features = ()
  config.chart.dimensions = 2
  # Chart quality (metrics.json 'chart'): k of trustworthiness / continuity as a fraction
  # of the points, and at most this many labelled points (a random subset beyond).
  config.chart.eval_k_fraction = 0.05
  config.chart.eval_max_points = 2000

  config.eval = ml_collections.ConfigDict()
  # Classic baselines computed on the run's own splits and written to metrics.json
  # ('baselines'): the training mean, kNN on magnitude, kNN on the spatial covariance
  # (csiloc_jax/csi/baselines.py). Every run warns when one of them beats it.
  # A tuple, so that a flag can set it: --config.eval.baselines='("train_mean",)'.
  config.eval.baselines = ('train_mean', 'knn_magnitude', 'knn_covariance')

  config.parallel = ml_collections.ConfigDict()
  # How the train step is spread over devices: 'pmap' or 'shard_map' (jit(shard_map)).
  config.parallel.backend = 'pmap'

  # 'project': the defaults above and MODEL_OVERRIDES; 'paper': the paper's protocol
  # where this project departs from it (no per-sample scaling, per-axis label z-scores,
  # learning rate 1e-3 for every model).
  config.protocol = 'project'

  parts = set(arg.split(',')) - {''}
  unknown = parts - {'quick', 'paper'}
  if unknown:
    raise ValueError(f'unknown config argument {arg!r}; use "", "quick", "paper" or "paper,quick"')
  if 'paper' in parts:
    config.protocol = 'paper'
    config.data.sample_normalization = 'none'
    config.data.label_scaling = 'standardize'
    config.model.zero_init_output = False
  if 'quick' in parts:
    # Smoke run: a small synthetic set at a reduced shape and a few epochs.
    config.data.synthetic.num_labelled = 400
    config.data.synthetic.num_unlabelled = 800
    config.data.synthetic.num_subcarriers = 64
    config.pretrain.num_epochs = 3
    config.finetune.num_epochs = 5
    config.pretrain.log_every_steps = 10
    config.finetune.log_every_steps = 10
  return config
