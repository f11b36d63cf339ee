"""PyTorch references for the ``train_model*`` rows: the same layer shapes, step and optimizer.

What a PyTorch user would write instead of the library's train step: the paper's
networks built from the *same config fields* as ``csiloc_jax.csi.models`` (so a changed
config changes both sides), Adam with the config's learning rate and PyTorch's defaults
(betas, eps equal to optax's), float32, the same masked MSE losses and the same input
normalisation, CPU threads = available cores.

Layer correspondence (NCHW here, NHWC in the library; sizes and FLOPs are the same):
* flatten encoder (Model 1): ``Flatten``.
* MLP encoder (Model 3): ``Linear`` 256 -> 128 -> 64 -> 32, ReLU after each.
* CNN encoder (Models 2, 4): per layer ``Conv2d(k, padding='same')`` -> ReLU ->
  ``MaxPool2d(pool, ceil_mode=True)`` (= flax 'SAME' conv and 'SAME'-padded pooling).
* head: ``Linear`` 128 -> 64 -> 3 with ReLU between.
* MLP decoder: the encoder's widths mirrored, then ``Linear`` to the input size.
* CNN decoder: ``ConvTranspose2d(k, stride=pool, padding, output_padding)`` chosen so
  each layer exactly doubles H and W (= flax 'SAME' transposed conv), ReLU between,
  the last linear, cropped to the input size.

Importing this module requires torch; :mod:`train_throughput` checks first.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import torch
from torch import nn


def _act(name: str) -> nn.Module:
  return {'relu': nn.ReLU(), 'linear': nn.Identity(), 'tanh': nn.Tanh(), 'gelu': nn.GELU()}[name]


class _Crop(nn.Module):
  def __init__(self, height: int, width: int):
    super().__init__()
    self.height, self.width = height, width

  def forward(self, x):
    return x[:, :, : self.height, : self.width]


class _Unflatten(nn.Module):
  def __init__(self, shape: Sequence[int]):
    super().__init__()
    self.shape = tuple(shape)

  def forward(self, x):
    return x.reshape((x.shape[0],) + self.shape)


def _cnn_encoder(mc, channels: int, height: int, width: int):
  layers, c, h, w = [], channels, height, width
  for width_out, k in zip(mc.cnn_features, mc.cnn_kernel_sizes):
    layers += [
      nn.Conv2d(c, width_out, k, padding='same'),
      nn.ReLU(),
      nn.MaxPool2d(tuple(mc.pool_size), ceil_mode=True),
    ]
    c = width_out
    h, w = math.ceil(h / mc.pool_size[0]), math.ceil(w / mc.pool_size[1])
  return layers, c * h * w, (c, h, w)


def _mlp_encoder(mc, in_features: int):
  layers, d = [nn.Flatten()], in_features
  for i, width_out in enumerate(mc.mlp_encoder_features):
    last = i == len(mc.mlp_encoder_features) - 1
    layers += [nn.Linear(d, width_out), _act(mc.latent_activation) if last else nn.ReLU()]
    d = width_out
  return layers, d


def _head(mc, in_features: int, num_outputs: int = 3):
  layers, d = [nn.Flatten()], in_features
  for width_out in mc.head_features:
    layers += [nn.Linear(d, width_out), nn.ReLU()]
    d = width_out
  return layers + [nn.Linear(d, num_outputs)]


def position_model(mc, input_shape: Sequence[int]) -> nn.Module:
  """The library's ``build_position_model(mc)`` in PyTorch; input NCHW."""
  height, width, channels = input_shape
  flat = height * width * channels
  if mc.encoder == 'flatten':
    enc, d = [nn.Flatten()], flat
  elif mc.encoder == 'mlp':
    enc, d = _mlp_encoder(mc, flat)
  elif mc.encoder == 'cnn':
    enc, d, _ = _cnn_encoder(mc, channels, height, width)
  else:
    raise ValueError(f'unknown encoder {mc.encoder!r}')
  return nn.Sequential(*enc, *_head(mc, d))


def autoencoder(mc, input_shape: Sequence[int]) -> nn.Module:
  """The library's ``build_autoencoder(mc, input_shape)`` in PyTorch; input NCHW."""
  height, width, channels = input_shape
  flat = height * width * channels
  if mc.encoder == 'mlp':
    enc, d = _mlp_encoder(mc, flat)
    dec = []
    for width_out in reversed(mc.mlp_encoder_features[:-1]):
      dec += [nn.Linear(d, width_out), nn.ReLU()]
      d = width_out
    dec += [
      nn.Linear(d, flat),
      _act(mc.decoder_output_activation),
      _Unflatten((height, width, channels)),
    ]
    # The library reconstructs NHWC: compare in that layout (a view for 1 channel).
    return nn.Sequential(*enc, *dec)
  if mc.encoder == 'cnn':
    enc, _, (c, _, _) = _cnn_encoder(mc, channels, height, width)
    widths = tuple(mc.cnn_decoder_features) + (channels,)
    k = mc.cnn_decoder_kernel_size
    dec = []
    for i, width_out in enumerate(widths):
      s = tuple(mc.pool_size)
      pad = tuple((k - si + 1) // 2 for si in s)  # ceil((k - s) / 2)
      out_pad = tuple(si - k + 2 * p for si, p in zip(s, pad))  # output = s * input
      dec += [nn.ConvTranspose2d(c, width_out, k, stride=s, padding=pad, output_padding=out_pad)]
      dec += [nn.ReLU()] if i < len(widths) - 1 else [_act(mc.decoder_output_activation)]
      c = width_out
    return nn.Sequential(*enc, *dec, _Crop(height, width))
  raise ValueError(f'only the mlp and cnn encoders can be pretrained, got {mc.encoder!r}')


# The settings a competent PyTorch user would try for speed (benchmarks/README.md,
# 'References'): Adam's implementation ('default': the per-parameter loop PyTorch uses on
# CPU; 'foreach'; 'fused'), whether zero_grad frees the gradients (set_to_none) or zeroes
# them in place, channels-last memory for the CNNs, and torch.compile of the model.
ADAM_IMPLEMENTATIONS = ('default', 'foreach', 'fused')


def adam(params, learning_rate: float, implementation: str) -> torch.optim.Optimizer:
  if implementation not in ADAM_IMPLEMENTATIONS:
    raise ValueError(f'Adam implementation must be one of {ADAM_IMPLEMENTATIONS}')
  kwargs = {} if implementation == 'default' else {implementation: True}
  return torch.optim.Adam(params, lr=learning_rate, **kwargs)


class TorchTrainer:
  """One model, its Adam optimizer and the masked-MSE train step on numpy batches, with
  the speed settings of ``settings`` (keys: ``adam``, ``set_to_none``, ``channels_last``,
  ``compile``; missing keys take PyTorch's defaults)."""

  def __init__(
    self,
    model: nn.Module,
    loss: str,
    learning_rate: float,
    mean: np.ndarray,
    inv_std: np.ndarray,
    nhwc_target: bool,
    settings: dict | None = None,
  ):
    self.settings = dict(settings or {})
    self.channels_last = bool(self.settings.get('channels_last', False))
    self.set_to_none = bool(self.settings.get('set_to_none', True))
    if self.channels_last:
      model = model.to(memory_format=torch.channels_last)
    self.model = model
    self.forward = torch.compile(model) if self.settings.get('compile') else model
    self.loss = loss
    self.nhwc_target = nhwc_target
    self.opt = adam(model.parameters(), learning_rate, self.settings.get('adam', 'default'))
    self.mean = torch.from_numpy(np.ascontiguousarray(mean.transpose(2, 0, 1)))
    self.inv_std = torch.from_numpy(np.ascontiguousarray(inv_std.transpose(2, 0, 1)))

  def inputs(self, x: np.ndarray) -> torch.Tensor:
    """NHWC numpy -> NCHW tensor, laid out channels-last or contiguous as set."""
    x = torch.from_numpy(x).permute(0, 3, 1, 2)
    fmt = torch.channels_last if self.channels_last else torch.contiguous_format
    return x.contiguous(memory_format=fmt)

  def step(self, batch: dict) -> torch.Tensor:
    x = self.inputs(batch['x'])
    x = (x - self.mean) * self.inv_std
    mask = torch.from_numpy(batch['mask'])
    self.opt.zero_grad(set_to_none=self.set_to_none)
    pred = self.forward(x)
    if self.loss == 'position':
      per_example = torch.sum(torch.square(pred - torch.from_numpy(batch['y'])), dim=-1)
    else:
      target = x.permute(0, 2, 3, 1) if self.nhwc_target else x
      per_example = torch.mean(torch.square(pred - target).flatten(1), dim=1)
    loss = torch.sum(per_example * mask) / torch.sum(mask)
    loss.backward()
    self.opt.step()
    return loss

  def flops_per_step(self, batch: dict) -> int:
    """FLOPs of forward + backward counted by PyTorch (matmuls and convolutions)."""
    from torch.utils.flop_counter import FlopCounterMode  # pylint: disable=g-import-not-at-top

    with FlopCounterMode(display=False) as counter:
      self.step(batch)
    return int(counter.get_total_flops())


def set_threads(n: int) -> None:
  torch.set_num_threads(n)


def version() -> str:
  return torch.__version__
