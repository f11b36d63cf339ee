"""mmWave localization with self-supervised tiny networks (docs/mmwave.md).

JADE labels the survey from its ADoAs, one tiny MLP per region learns those labels, and a
Kalman filter with NIS-based switching tracks the trajectory. Usage:

  python launch/mmwave.py --config=configs/mmwave_tiny.py --workdir=/tmp/mmwave
  python launch/mmwave.py --config=configs/mmwave_tiny.py:quick --workdir=/tmp/q
  python launch/mmwave.py --config=configs/mmwave_tiny.py --workdir=W \
      --config.data.survey=S.h5 --config.data.trajectory=T.h5

``quick`` shrinks the generated scenario and the optimisation (for tests and smoke
checks, not for the reported numbers).

This file is the one place that holds the method's defaults: the library's option
types (``JadeOptions``, ``TrainOptions``, ``TrackerOptions``) have none and are built
from these sections, also in a notebook:
``config_utils.load_config('configs/mmwave_tiny.py')``.
"""

import ml_collections
from ml_collections import config_dict


def _nets(hidden_sizes: tuple, learning_rate: float, batch_size: int) -> ml_collections.ConfigDict:
  """One section of net-training settings (``config.nets`` and ``config.big_nn``)."""
  nets = ml_collections.ConfigDict()
  # Hidden layer widths of every net (the output is 2-D).
  nets.hidden_sizes = hidden_sizes
  # Hidden activation: 'relu', 'tanh', 'gelu' or 'silu'.
  nets.activation = 'relu'
  # Peak AdamW learning rate (warm-up then cosine decay).
  nets.learning_rate = learning_rate
  # AdamW weight decay.
  nets.weight_decay = 1e-4
  # Minibatch size per net.
  nets.batch_size = batch_size
  # Optimisation steps (all nets of a section step together).
  nets.num_train_steps = 3000
  # Steps between validation checks (the best-on-validation parameters are kept).
  nets.eval_every = 250
  # Fraction of each region's labelled samples held out for validation.
  nets.validation_fraction = 0.1
  # Probability of dropping each received path in a training input (augmentation).
  nets.path_dropout = 0.05
  # Loss of the 2-D label error: 'mse', 'huber' (linear beyond loss_scale_m) or 'cauchy'
  # (logarithmic beyond it), so that a wrong label pulls a net less.
  nets.loss = 'huber'
  # Scale of the robust loss, metres: errors under it count as with 'mse'.
  nets.loss_scale_m = 0.5
  # Train only on the labels JADE trusts (JadeResult.trusted, docs/mmwave.md 'Label
  # trust'); False = every JADE label.
  nets.trusted_only = True
  # Per-label loss weights: 'none' or 'inverse_variance' (1 / label_std_m^2, rescaled to
  # mean 1 per net).
  nets.label_weighting = 'none'
  # Inverse-variance weighting: label std floor, metres (caps a label's weight).
  nets.label_std_floor_m = 0.1
  return nets


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  config = ml_collections.ConfigDict()
  # Seed of everything random in the method: JADE restarts, net init, minibatches.
  config.seed = 0
  # Re-use trained nets saved in workdir/checkpoints when their inputs are unchanged.
  config.resume = True
  # Write floor / trajectory / error-CDF PNGs into the workdir.
  config.plots = True

  # Where the survey and trajectory come from.
  config.data = ml_collections.ConfigDict()
  # Survey HDF5 file in the mmWave schema of docs/schemas.md; '' = generate the default
  # scenario into workdir/data (with the scenario fields below).
  config.data.survey = ''
  # Trajectory HDF5 file in the same schema (needs time_s); '' = generated with the survey.
  config.data.trajectory = ''
  # Generated scenario: seed of the simulator (positions, headings, noise, anchor order).
  config.data.scenario_seed = 0
  # Generated scenario: AoA noise standard deviation, degrees.
  config.data.aoa_noise_deg = 5.0
  # Generated scenario: survey samples per room (region); unset = the simulator's
  # DEFAULT_SURVEY_PER_ROOM (csiloc_jax/mmwave/simulator.py).
  config.data.num_survey = config_dict.placeholder(int)
  # Generated scenario: steps of the walk through every room; unset = the simulator's
  # DEFAULT_TRAJECTORY_STEPS.
  config.data.num_trajectory_steps = config_dict.placeholder(int)
  # Generated scenario: a built-in floor plan by name (csiloc_jax/mmwave/floorplan.py:
  # 'open_hall', 'corridor_l', 'six_rooms', 'two_rooms') or a floor plan JSON file. The
  # default is the hardest built-in floor, so that the headline numbers mean something
  # (on six_rooms every method is near 100 %).
  config.data.floorplan = 'open_hall'
  # Generated scenario: a path is lost when more than this many dB below the strongest
  # path of ...
  config.data.detection_threshold_db = 20.0
  # ... its own AP ('ap', each AP sounded separately) or of any AP ('sample', one
  # receiver dynamic range).
  config.data.detection_reference = 'ap'
  # Generated scenario: heavier-tailed AoA noise, a Gaussian mixture: this fraction of
  # paths gets an error of standard deviation aoa_outlier_deg instead of aoa_noise_deg.
  config.data.aoa_outlier_fraction = 0.0
  config.data.aoa_outlier_deg = 30.0
  # Generated scenario: imperfect association: probability that a detected path is
  # attributed to another (undetected) anchor, and the mean number of spurious paths
  # (random anchor, random angle) per sample.
  config.data.misassociation_rate = 0.0
  config.data.spurious_rate = 0.0
  # Survey without a "region" dataset: cluster it into this many regions by received
  # paths (1 = the whole survey is one region); unset = choose the count automatically
  # (csiloc_jax/mmwave/regions.py).
  config.data.num_regions_if_missing = config_dict.placeholder(int)

  # The ADoA input features shared by every net.
  config.features = ml_collections.ConfigDict()
  # Reference direction of the ADoA features: 'mean' (circular mean of the received
  # AoAs) or 'anchor' (the received anchor the survey saw most often).
  config.features.reference = 'mean'

  # JADE: labels and anchors from the survey's ADoAs (csiloc_jax/mmwave/jade.py).
  config.jade = ml_collections.ConfigDict()
  # Random starts per region (vmapped; the lowest-cost one wins).
  config.jade.num_restarts = 8
  # Levenberg-Marquardt iterations (fixed count inside one lax.scan).
  config.jade.num_iters = 60
  # Cauchy scale of the chord residual 2 sin(r/2), radians; 0.0 = plain least squares.
  config.jade.robust_scale = 0.3
  # An anchor joins a region's problem when seen in at least this fraction of the
  # region's samples (rarely seen anchors, e.g. through a doorway, are poorly placed and
  # distort the whole layout)...
  config.jade.min_anchor_fraction = 0.4
  # ... and in at least this many samples.
  config.jade.min_anchor_samples = 8
  # Samples seeing fewer of their region's anchors get no label (4 = the minimum that
  # over-determines position + heading).
  config.jade.min_paths = 4
  # Regions with fewer usable samples are left out.
  config.jade.min_samples = 10
  # 'never': AoAs are counter-clockwise as in the schema, so the gauge is a proper
  # similarity; 'auto': also try a mirrored alignment (unknown angle convention).
  config.jade.gauge_reflection = 'never'
  # After the gauge fix, re-solve each region with its physical anchors held at their
  # APs' ap_position: with 3+ APs the known positions then constrain the layout's shape,
  # not only its gauge (docs/mmwave.md, 'Pinned APs'). A region keeps its free solution
  # when pinning raises its cost more than the noise explains (chi-square p-value under
  # gauge_check_p_value: the mounting positions disagree with the angles).
  config.jade.pin_aps = True
  # Label trust (docs/mmwave.md, 'Label trust'; jade.trust_labels). A solved region whose
  # gauge-free conditioning is under this is reported 'ill_conditioned': its anchor
  # layout has a nearly flat direction (measured: the range of a far virtual anchor).
  # A coarse flag: built-in floors go down to 1.5e-6 (the quick survey) with good
  # labels, corridors with collinear anchors span 3e-9 to 1.5e-5; every label is judged
  # on its own either way.
  config.jade.min_conditioning = 1e-6
  # Each label's covariance is inflated by the AP alignment's variance factor (residual
  # over the one the covariance predicts) when its chi-square p-value is under this: the
  # layout disagrees with the known AP positions more than the noise explains.
  config.jade.gauge_check_p_value = 0.01
  # A label is trusted only when its predicted RMS error (label_std_m) is under this,
  # metres (loose on purpose: nets learn more from many labels of a few metres' error
  # than from a precise few; the labels it must stop have stds of 100s of metres)...
  config.jade.max_label_std_m = 3.0
  # ... and its cost per path is at most this many robust standard deviations (MAD)
  # above its region's median.
  config.jade.max_cost_z = 8.0
  # ... and it lies within this many interquartile ranges of its region's label
  # quartiles (per axis; 3 = Tukey's far-out fence)...
  config.jade.plausible_fence = 3.0
  # ... plus this margin, metres.
  config.jade.plausible_margin_m = 1.0
  # "JADE alone" baseline: Levenberg-Marquardt iterations of each trajectory step's fit
  # against JADE's anchor map (csiloc_jax/mmwave/jade.py, localize).
  config.jade.localize_iters = 30

  # The tiny per-region nets, trained all at once (hidden sizes as in Shastri et al.).
  config.nets = _nets(hidden_sizes=(48, 48, 24), learning_rate=3e-3, batch_size=64)
  # The one-big-NN baseline over the whole floor, trained on every region's JADE labels.
  config.big_nn = _nets(hidden_sizes=(256, 256, 128), learning_rate=2e-3, batch_size=128)

  # Online tracking and net switching (csiloc_jax/mmwave/tracker.py).
  config.tracker = ml_collections.ConfigDict()
  # Candidate selection (docs/mmwave.md, 'Tracking'): 'nis' (Shastri et al.: keep the
  # current net while its NIS is under the threshold, else the smallest NIS),
  # 'mahalanobis_euclidean' (their second scheme) or 'fit_first' (the per-step JADE-map
  # fit whenever it passes the gates, else the 'nis' rule among the nets; equal to 'nis'
  # without jade_candidate). Every scheme is run and reported; this one is the headline.
  # 'fit_first' was chosen on the suite's hard floors, seeds 0-2, and checked on 3-5.
  config.tracker.scheme = 'fit_first'
  # Keep the current net while its NIS is at or under this.
  config.tracker.threshold = 2.0
  # Only nets whose training inputs make this step's received-path pattern at most this
  # many nats less likely than the best net's may be kept or chosen; 0.0 = off (the
  # published rule as written, which can lock onto a wrong net).
  config.tracker.visibility_gate_nats = 10.0
  # Constant-velocity model: white-acceleration spectral density, m^2/s^3.
  config.tracker.process_noise = 0.5
  # Standard deviation of a net's position estimate, metres (R = r^2 I). The nets'
  # errors on the hard floors' walks are 0.4-0.5 m median and 1.2-1.7 m p90; 0.6 was
  # chosen over 0.3 and 1.0 with fit_first (docs/mmwave.md, 'The suite').
  config.tracker.measurement_noise_m = 0.6
  # Velocity standard deviation of the initial state, m/s.
  config.tracker.initial_speed_mps = 1.0
  # Steps with fewer received paths are predict-only (3 = two ADoAs).
  config.tracker.min_paths = 3
  # Mahalanobis + Euclidean scheme: weight of the distance from the previous estimate,
  # per metre.
  config.tracker.euclidean_weight = 1.0
  # Innovation gate: a candidate may be kept or chosen only when its NIS is at most this
  # (chi-square, 2 degrees of freedom: 13.8 = 99.9 %); a step where no candidate passes
  # is predict-only. 0.0 = off (every eligible candidate may be chosen).
  config.tracker.nis_gate = 13.8
  # After this many usable steps in a row without a plausible candidate the track is
  # taken to be lost and restarts with the start rule; 0 = never.
  config.tracker.reacquire_steps = 8
  # Standard deviation of the per-step JADE-map fit as a candidate, metres.
  config.tracker.fit_noise_m = 0.3
  # Add the per-step ADoA fit against JADE's anchor map (the "JADE alone" estimate) as
  # one more candidate next to the nets.
  config.tracker.jade_candidate = True
  # What a switching variant reports at each step: 'filtered' (the Kalman filter's
  # position after its update: online, it uses the trajectory) or 'estimate' (the chosen
  # candidate's own estimate, as published). Over the suite's hard floors and 3 seeds the
  # filter state was better on every floor and variant (docs/mmwave.md, 'The suite').
  config.tracker.headline = 'filtered'

  # quick: a smaller survey and shorter optimisation.
  if arg == 'quick':
    config.data.num_survey = 100
    config.jade.num_restarts = 2
    config.jade.num_iters = 30
    config.nets.num_train_steps = 600
    config.nets.eval_every = 200
    config.big_nn.hidden_sizes = (64, 64, 32)
    config.big_nn.num_train_steps = 400
    config.big_nn.eval_every = 200
  elif arg:
    raise ValueError(f'unknown config argument {arg!r} (expected "quick" or nothing)')
  return config
