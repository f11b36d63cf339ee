"""PNG plots of CSI localization runs: learning curves, error CDFs, positions on the XY
plane (like the paper's Fig. 1), the channel chart and the label-efficiency curve.

Called at the end of ``train.train_and_evaluate`` and ``compare``; uses matplotlib's
Agg backend so it works on headless machines and in CI.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import matplotlib

matplotlib.use('Agg')
import matplotlib.pyplot as plt  # noqa: E402
import matplotlib.ticker  # noqa: E402
import numpy as np  # noqa: E402

from csiloc_jax.core import plots as core_plots  # noqa: E402


def learning_curves(
  records: Sequence[dict], path: str, title: str = '', pretrain_ylabel: str = ''
) -> None:
  """Train and validation loss per epoch, one panel per phase (pretrain, finetune);
  ``pretrain_ylabel`` names the pretraining loss (default: the autoencoder's)."""
  phases = [p for p in ('pretrain', 'finetune') if any(r.get('phase') == p for r in records)]
  fig, axes = plt.subplots(
    1, max(len(phases), 1), figsize=(5.5 * max(len(phases), 1), 4), squeeze=False
  )
  for ax, phase in zip(axes[0], phases):
    rows = sorted((r for r in records if r.get('phase') == phase), key=lambda r: r['epoch'])
    # A resumed run may have logged an epoch twice; keep the last record per epoch.
    by_epoch = {r['epoch']: r for r in rows}
    epochs = sorted(by_epoch)
    trained = [e for e in epochs if 'train_loss' in by_epoch[e]]  # epoch 0: validation only
    ax.plot(trained, [by_epoch[e]['train_loss'] for e in trained], label='train')
    ax.plot(epochs, [by_epoch[e]['val_loss'] for e in epochs], label='validation')
    best = min(epochs, key=lambda e: by_epoch[e]['val_loss'])
    ax.axvline(best, color='grey', ls=':', label=f'best (epoch {best})')
    ax.set_yscale('log')
    ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
    ax.set_xlabel('epoch')
    ax.set_ylabel(
      (pretrain_ylabel or 'reconstruction MSE') if phase == 'pretrain' else 'position MSE (scaled)'
    )
    ax.set_title(f'{title} {phase}'.strip())
    ax.legend()
  core_plots.save(fig, path)


def positions_xy(true: np.ndarray, pred: np.ndarray, path: str, title: str = '') -> None:
  """True vs predicted positions on the XY plane, base station at the origin."""
  fig, ax = plt.subplots(figsize=(6, 6))
  for t, p in zip(true, pred):
    ax.plot([t[0], p[0]], [t[1], p[1]], color='grey', lw=0.5, alpha=0.6)
  ax.scatter(true[:, 0], true[:, 1], s=10, label='true', color='tab:blue')
  ax.scatter(pred[:, 0], pred[:, 1], s=10, label='predicted', color='tab:orange')
  ax.scatter([0], [0], marker='^', s=80, color='k', label='base station')
  ax.set_xlabel('x (m)')
  ax.set_ylabel('y (m)')
  ax.set_aspect('equal', adjustable='datalim')
  ax.set_title(title)
  ax.legend()
  core_plots.save(fig, path)


def chart(points: np.ndarray, positions: np.ndarray, path: str, title: str = '') -> None:
  """A 2-D channel chart twice, its points coloured by the true x and by the true y: a
  good chart shows both as smooth gradients across it (positions for colour only)."""
  fig, axes = plt.subplots(1, 2, figsize=(11, 4.8))
  for ax, axis, name in zip(axes, (0, 1), ('x', 'y')):
    sc = ax.scatter(points[:, 0], points[:, 1], c=positions[:, axis], s=6, cmap='viridis')
    fig.colorbar(sc, ax=ax, label=f'true {name} (m)')
    ax.set_xlabel('chart coordinate 1')
    ax.set_ylabel('chart coordinate 2')
    ax.set_title(f'coloured by true {name}')
  if title:
    fig.suptitle(title)
  core_plots.save(fig, path)


def label_efficiency(
  results: Mapping[str, Mapping[int, float | Sequence[float]]],
  path: str,
  ylabel: str = 'test MAE average (m)',
) -> None:
  """Metric vs number of labelled training samples, one line per model; the classic
  baselines (``train_mean``, ``knn_*``) dashed. A budget with several values (seeds) is
  drawn at their mean with a band from their min to their max."""
  fig, ax = plt.subplots(figsize=(6.5, 4.2))
  for name, by_n in results.items():
    ns = sorted(by_n)
    values = [np.atleast_1d(np.asarray(by_n[n], np.float64)) for n in ns]
    mean = [v.mean() for v in values]
    style = '--' if name == 'train_mean' or name.startswith('knn_') else '-'
    (line,) = ax.plot(ns, mean, marker='o', ls=style, label=name)
    if any(len(v) > 1 for v in values):
      ax.fill_between(
        ns, [v.min() for v in values], [v.max() for v in values], color=line.get_color(), alpha=0.15
      )
  ax.set_xscale('log')
  ax.set_xlabel('labelled training samples')
  ax.set_ylabel(ylabel)
  seeds = max(
    (len(np.atleast_1d(v)) for by_n in results.values() for v in by_n.values()), default=1
  )
  if seeds > 1:
    ax.set_title(f'mean over {seeds} seeds; bands: min to max', fontsize=9)
  ax.grid(alpha=0.3, which='both')
  ax.legend(fontsize=8)
  core_plots.save(fig, path)
