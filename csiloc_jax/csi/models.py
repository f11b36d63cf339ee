"""The paper's four CSI localization models (Table I) as flax.linen modules.

Inputs are CSI feature maps ``[batch, antennas, subcarriers, channels]`` (channels = 1
for the paper's real-part feature; see :mod:`csiloc_jax.csi.features`). Every position model is an
``encoder`` followed by an MLP ``head``; every autoencoder is the same ``encoder``
followed by a ``decoder``. Because the encoder submodule has the same name and class in
both, a pretrained autoencoder's ``params['encoder']`` drops straight into the position
model (Models 3 and 4) — see :func:`transplant_encoder`.

| model | encoder (pretrained?) | head |
|---|---|---|
| 1 | flatten (none) | MLP 128 → 64 → 3 |
| 2 | CNN: conv 32 k3, conv 64 k2, ReLU + max pool (no) | MLP 128 → 64 → 3 |
| 3 | MLP 256 → 128 → 64 → 32 (yes, MLP autoencoder) | MLP 128 → 64 → 3 |
| 4 | CNN as Model 2 (yes, CNN autoencoder) | MLP 128 → 64 → 3 |

Channel charting (``config.model.pretrain = 'chart'``) pretrains the same ``encoder``
followed by a small ``chart_head`` to 2-D (:class:`ChartModel`) on pairs or triplets of
unlabelled CSI; its encoder is transplanted the same way.

Layer sizes come from the config (``config.model``, whose defaults in
``configs/ctw_base.py`` are exactly the paper's) so they can be varied; the modules
carry no defaults of their own. Which settings make Models 1-4 is also the configs'
business (``configs/ctw_base.py``, ``PAPER_MODELS``).
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from csiloc_jax.csi import layers

ACTIVATIONS: dict[str, Callable] = {
  'relu': nn.relu,
  'linear': lambda x: x,
  'tanh': jnp.tanh,
  'gelu': nn.gelu,
}


def _activation(name: str) -> Callable:
  if name not in ACTIVATIONS:
    raise ValueError(f'unknown activation {name!r}; choose from {sorted(ACTIVATIONS)}')
  return ACTIVATIONS[name]


class FlattenEncoder(nn.Module):
  """Model 1's 'encoder': the raw features, flattened."""

  @nn.compact
  def __call__(self, x):
    return x.reshape((x.shape[0], -1))


class MLPEncoder(nn.Module):
  """Model 3's encoder: linear layers with ReLU (paper: 256 → 128 → 64 → 32)."""

  features: Sequence[int]
  latent_activation: str

  @nn.compact
  def __call__(self, x):
    x = x.reshape((x.shape[0], -1))
    for i, width in enumerate(self.features):
      x = nn.Dense(width, name=f'dense_{i}')(x)
      last = i == len(self.features) - 1
      x = _activation(self.latent_activation)(x) if last else nn.relu(x)
    return x


class MLPDecoder(nn.Module):
  """Mirror of :class:`MLPEncoder`, ending in a linear layer to the input size."""

  features: Sequence[int]
  output_shape: Sequence[int]
  output_activation: str

  @nn.compact
  def __call__(self, z):
    for i, width in enumerate(self.features):
      z = nn.relu(nn.Dense(width, name=f'dense_{i}')(z))
    z = nn.Dense(int(np.prod(self.output_shape)), name='dense_out')(z)
    z = _activation(self.output_activation)(z)
    return z.reshape((z.shape[0],) + tuple(self.output_shape))


class CNNEncoder(nn.Module):
  """Models 2/4's encoder: (conv → ReLU → max pool) per entry of ``features``.

  Output is the feature map ``[batch, H/4, W/4, 64]`` for the paper's layers; 'SAME'
  padding and ceil-mode pooling keep every input size valid (the decoder crops back).
  The layers are :mod:`csiloc_jax.csi.layers`' (flax's values and parameters, faster
  gradients on CPU).
  """

  features: Sequence[int]
  kernel_sizes: Sequence[int]
  pool_size: Sequence[int]
  kernel_grad: str

  @nn.compact
  def __call__(self, x):
    for i, (width, k) in enumerate(zip(self.features, self.kernel_sizes)):
      x = layers.Conv(width, (k, k), kernel_grad=self.kernel_grad, name=f'conv_{i}')(x)
      x = nn.relu(x)
      x = layers.max_pool(x, tuple(self.pool_size))
    return x


class CNNDecoder(nn.Module):
  """Model 4's decoder: transposed convolutions (paper: 32 ch then C ch, kernel 3).

  Each transposed conv upsamples by the encoder's pool stride, undoing one pooling; the
  result is cropped to the input's spatial size (pooling rounded up).
  """

  features: Sequence[int]
  kernel_size: int
  pool_size: Sequence[int]
  output_shape: Sequence[int]
  output_activation: str
  kernel_grad: str

  @nn.compact
  def __call__(self, z):
    height, width, channels = self.output_shape
    widths = tuple(self.features) + (channels,)
    for i, w in enumerate(widths):
      z = layers.ConvTranspose(
        w,
        (self.kernel_size, self.kernel_size),
        strides=tuple(self.pool_size),
        kernel_grad=self.kernel_grad,
        name=f'deconv_{i}',
      )(z)
      last = i == len(widths) - 1
      z = _activation(self.output_activation)(z) if last else nn.relu(z)
    return z[:, :height, :width, :]


class MLPHead(nn.Module):
  """Position estimation head: linear layers with ReLU between (paper: 128 → 64 → 3).

  ``zero_output`` starts the output layer at zero: with centred targets the untrained
  model *is* the training-mean predictor, and training only moves away from it where
  the validation loss improves.
  """

  features: Sequence[int]
  num_outputs: int
  zero_output: bool

  @nn.compact
  def __call__(self, z):
    z = z.reshape((z.shape[0], -1))
    for i, width in enumerate(self.features):
      z = nn.relu(nn.Dense(width, name=f'dense_{i}')(z))
    init = nn.initializers.zeros if self.zero_output else nn.linear.default_kernel_init
    return nn.Dense(self.num_outputs, name='dense_out', kernel_init=init)(z)


class PositionModel(nn.Module):
  """encoder → head. ``stop_encoder_gradient`` freezes a pretrained encoder."""

  encoder: nn.Module
  head: nn.Module
  stop_encoder_gradient: bool = False

  def __call__(self, x):
    z = self.encoder(x)
    if self.stop_encoder_gradient:
      z = jax.lax.stop_gradient(z)
    return self.head(z)


class ChartModel(nn.Module):
  """encoder → chart head: the 2-D channel chart of each sample (docs/csi.md, 'Channel
  charting')."""

  encoder: nn.Module
  chart_head: nn.Module

  def __call__(self, x):
    return self.chart_head(self.encoder(x))


class AutoEncoder(nn.Module):
  """encoder → decoder, trained on the reconstruction MSE (paper eq. 1)."""

  encoder: nn.Module
  decoder: nn.Module

  def __call__(self, x):
    return self.decoder(self.encoder(x))


# --------------------------------------------------------------------------------------
# Construction from a config.

PRETRAIN_MODES = ('none', 'autoencoder', 'chart')


def pretrain_mode(value: Any) -> str:
  """``config.model.pretrain`` as one of :data:`PRETRAIN_MODES`. ``True`` and ``False``
  (the field was a bool before charting existed: configs and ``config.json`` files
  written then) mean ``'autoencoder'`` and ``'none'``."""
  if value is True:
    return 'autoencoder'
  if value is False or value is None or value == '':
    return 'none'
  if value not in PRETRAIN_MODES:
    raise ValueError(f'config.model.pretrain must be one of {PRETRAIN_MODES}, got {value!r}')
  return value


def _encoder(model_config: ml_collections.ConfigDict) -> nn.Module:
  kind = model_config.encoder
  if kind == 'flatten':
    return FlattenEncoder()
  if kind == 'mlp':
    return MLPEncoder(
      features=tuple(model_config.mlp_encoder_features),
      latent_activation=model_config.latent_activation,
    )
  if kind == 'cnn':
    return CNNEncoder(
      features=tuple(model_config.cnn_features),
      kernel_sizes=tuple(model_config.cnn_kernel_sizes),
      pool_size=tuple(model_config.pool_size),
      kernel_grad=model_config.conv_kernel_grad,
    )
  raise ValueError(f'config.model.encoder must be flatten, mlp or cnn; got {kind!r}')


def ensemble_size(model_config: ml_collections.ConfigDict) -> int:
  """``config.model.ensemble_size`` (1 when absent: configs written before ensembles)."""
  size = model_config.get('ensemble_size', 1)
  if not isinstance(size, int) or isinstance(size, bool) or size < 1:
    raise ValueError(f'config.model.ensemble_size must be an integer >= 1, got {size!r}')
  return size


def build_position_model(
  model_config: ml_collections.ConfigDict, num_outputs: int = 3
) -> nn.Module:
  """The position model; with ``config.model.ensemble_size = K > 1`` a deep ensemble of K.

  The ensemble is the same :class:`PositionModel` under ``nn.vmap``: every parameter gets
  a leading member axis ``K``, each member its own initialisation (the ``params`` RNG is
  split), all members see the same input, and the output is ``[batch, K, num_outputs]``.
  The position loss averages the members' own errors (:func:`steps.position_error`), so
  each member is trained as if alone (Adam is per parameter), while one compiled step
  trains them all; the prediction is the members' mean (:func:`ensemble_mean`).
  """
  head = MLPHead(
    features=tuple(model_config.head_features),
    num_outputs=num_outputs,
    zero_output=bool(model_config.zero_init_output),
  )
  size = ensemble_size(model_config)
  cls = PositionModel
  if size > 1:
    cls = nn.vmap(
      PositionModel,
      variable_axes={'params': 0},
      split_rngs={'params': True},
      in_axes=None,
      out_axes=1,
      axis_size=size,
    )
  return cls(
    encoder=_encoder(model_config),
    head=head,
    stop_encoder_gradient=bool(model_config.freeze_encoder),
  )


def ensemble_mean(pred: np.ndarray) -> np.ndarray:
  """A position model's prediction ``[N, out]``: an ensemble's ``[N, K, out]`` averaged
  over its members, a single model's returned as is."""
  return pred.mean(axis=1) if pred.ndim == 3 else pred


def build_autoencoder(
  model_config: ml_collections.ConfigDict, input_shape: Sequence[int]
) -> AutoEncoder:
  """The autoencoder whose encoder matches :func:`build_position_model`'s."""
  kind = model_config.encoder
  if kind == 'mlp':
    decoder = MLPDecoder(
      features=tuple(reversed(model_config.mlp_encoder_features[:-1])),
      output_shape=tuple(input_shape),
      output_activation=model_config.decoder_output_activation,
    )
  elif kind == 'cnn':
    decoder = CNNDecoder(
      features=tuple(model_config.cnn_decoder_features),
      kernel_size=model_config.cnn_decoder_kernel_size,
      pool_size=tuple(model_config.pool_size),
      output_shape=tuple(input_shape),
      output_activation=model_config.decoder_output_activation,
      kernel_grad=model_config.conv_kernel_grad,
    )
  else:
    raise ValueError(f'only the mlp and cnn encoders can be pretrained, got {kind!r}')
  return AutoEncoder(encoder=_encoder(model_config), decoder=decoder)


def build_chart_model(
  model_config: ml_collections.ConfigDict, chart_config: ml_collections.ConfigDict
) -> ChartModel:
  """The chart network whose encoder matches :func:`build_position_model`'s: the encoder,
  then ``chart_config.head_features`` (ReLU) and a linear layer to
  ``chart_config.dimensions``."""
  if model_config.encoder == 'flatten':
    # The flatten encoder has no parameters: a pretrained chart would leave nothing
    # behind for the position model.
    raise ValueError("only the mlp and cnn encoders can be pretrained, got 'flatten'")
  head = MLPHead(
    features=tuple(chart_config.head_features),
    num_outputs=int(chart_config.dimensions),
    zero_output=False,
  )
  return ChartModel(encoder=_encoder(model_config), chart_head=head)


def build_pretraining_model(
  model_config: ml_collections.ConfigDict,
  chart_config: ml_collections.ConfigDict,
  input_shape: Sequence[int],
) -> nn.Module:
  """The network ``config.model.pretrain`` trains on unlabelled CSI: the autoencoder or
  the chart network."""
  mode = pretrain_mode(model_config.pretrain)
  if mode == 'autoencoder':
    return build_autoencoder(model_config, input_shape)
  if mode == 'chart':
    return build_chart_model(model_config, chart_config)
  raise ValueError('config.model.pretrain is none: there is no pretraining model')


def transplant_encoder(position_params: Any, autoencoder_params: Any, members: int = 1) -> Any:
  """Position-model params with the encoder replaced by a pretrained one (of an
  autoencoder or a chart network). The ``members`` of an ensemble all start from that
  encoder; their heads keep their own initialisations."""
  enc_new = autoencoder_params['encoder']
  if members > 1:
    enc_new = jax.tree.map(lambda v: jnp.broadcast_to(v, (members,) + np.shape(v)), enc_new)
  enc_old = position_params['encoder']
  shapes_new = jax.tree.map(np.shape, enc_new)
  shapes_old = jax.tree.map(np.shape, enc_old)
  if shapes_new != shapes_old:
    raise ValueError(
      f'pretrained encoder does not match the position model: {shapes_new} vs {shapes_old}'
    )
  return {**position_params, 'encoder': enc_new}


def count_params(params: Any) -> int:
  return int(sum(np.prod(np.shape(x)) for x in jax.tree.leaves(params)))
