"""PNG figures of an mmWave run (matplotlib, Agg backend; nothing is shown on screen).

Data flow: :mod:`~csiloc_jax.mmwave.train`'s results + ground truth -> ``floor.png``
(walls, APs, true and JADE-estimated anchors), ``trajectory.png`` (true walk and the
stitched estimate coloured by the chosen net) and the sweep's ``sweep.png``;
``error_cdf.png`` (every method) is drawn by :func:`csiloc_jax.core.plots.error_cdf`.
"""

from __future__ import annotations

import matplotlib

matplotlib.use('Agg')
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from csiloc_jax.core import plots as core_plots  # noqa: E402


def _walls(ax, floorplan: dict | None) -> None:
  if not floorplan:
    return
  for x0, y0, x1, y1 in floorplan['walls']:
    ax.plot([x0, x1], [y0, y1], color='0.2', lw=2, solid_capstyle='butt', zorder=1)
  for obstacle in floorplan.get('obstacles', []):  # pillars, furniture: filled boxes
    x0, y0, x1, y1 = obstacle['box']
    ax.add_patch(plt.Rectangle((x0, y0), x1 - x0, y1 - y0, color='0.45', zorder=1))


def _extent(floorplan: dict | None, points: np.ndarray) -> np.ndarray:
  """(x_min, y_min, x_max, y_max) of the walls, or of ``points`` (the APs, the true
  walk) without a floor plan."""
  if floorplan:
    w = np.asarray(floorplan['walls'], np.float64)
    xs, ys = np.concatenate([w[:, 0], w[:, 2]]), np.concatenate([w[:, 1], w[:, 3]])
  else:
    xs, ys = points[:, 0], points[:, 1]
  return np.array([xs.min(), ys.min(), xs.max(), ys.max()], np.float64)


def _limits(ax, extent: np.ndarray, pad: float) -> None:
  ax.set_xlim(extent[0] - pad, extent[2] + pad)
  ax.set_ylim(extent[1] - pad, extent[3] + pad)


def plot_floor(
  path: str,
  *,
  floorplan: dict | None,
  ap_position: np.ndarray,
  anchor_truth: np.ndarray | None,
  anchor_kind: np.ndarray,
  region_anchors: list[tuple[int, np.ndarray, np.ndarray]],
  labels: np.ndarray | None = None,
  label_region: np.ndarray | None = None,
  zoom: bool = False,
) -> None:
  """Floor plan with true anchors and each region's JADE anchor estimates.

  ``region_anchors``: ``(region id, anchor columns, estimates [K, 2])`` per region.
  """
  fig, ax = plt.subplots(figsize=(12, 7))
  cmap = plt.get_cmap('tab10')
  if labels is not None:
    ok = np.all(np.isfinite(labels), -1)
    ax.scatter(
      labels[ok, 0],
      labels[ok, 1],
      s=3,
      c=[cmap(r % 10) for r in label_region[ok]],
      alpha=0.25,
      zorder=0,
      label='JADE survey labels',
    )
  _walls(ax, floorplan)
  if anchor_truth is not None:
    virt = anchor_kind == 1
    ax.scatter(
      anchor_truth[virt, 0],
      anchor_truth[virt, 1],
      marker='o',
      s=40,
      facecolors='none',
      edgecolors='0.4',
      label='true virtual anchors',
      zorder=2,
    )
  ax.scatter(
    ap_position[:, 0],
    ap_position[:, 1],
    marker='^',
    s=80,
    c='k',
    label='APs (ap_position)',
    zorder=3,
  )
  for r, cols, est in region_anchors:
    phys = anchor_kind[cols] == 0
    ax.scatter(
      est[~phys, 0],
      est[~phys, 1],
      marker='x',
      s=25,
      color=cmap(r % 10),
      zorder=4,
      label=f'region {r} JADE anchors',
    )
    ax.scatter(est[phys, 0], est[phys, 1], marker='+', s=60, color=cmap(r % 10), zorder=4)
    if anchor_truth is not None:
      for (x0, y0), (x1, y1) in zip(est, anchor_truth[cols]):
        ax.plot([x0, x1], [y0, y1], color=cmap(r % 10), lw=0.6, alpha=0.7, zorder=2)
  ax.set_aspect('equal')
  # The view follows the floor (or the APs), never the outliers: a few JADE estimates
  # kilometres away would otherwise shrink the floor to a dot. What falls outside is
  # counted in the title.
  extent = _extent(floorplan, ap_position)
  size = max(extent[2] - extent[0], extent[3] - extent[1], 1.0)
  pad = 1.0 if zoom else 0.5 * size
  _limits(ax, extent, pad)
  shown = [e for _, _, e in region_anchors] + ([labels] if labels is not None else [])
  points = np.concatenate(
    [np.asarray(p, np.float64).reshape(-1, 2) for p in shown] or [np.zeros((0, 2))]
  )
  points = points[np.all(np.isfinite(points), -1)]
  outside = int(
    np.sum(
      (points[:, 0] < extent[0] - pad)
      | (points[:, 0] > extent[2] + pad)
      | (points[:, 1] < extent[1] - pad)
      | (points[:, 1] > extent[3] + pad)
    )
  )
  ax.set_xlabel('x (m)')
  ax.set_ylabel('y (m)')
  title = 'JADE: estimated anchors (x virtual, + physical) vs truth (lines join them)'
  if outside:
    title += f'\n{outside} estimates outside this view'
  ax.set_title(title)
  ax.legend(loc='upper left', bbox_to_anchor=(1.01, 1.0), fontsize=8)
  core_plots.save(fig, path)


def plot_trajectory(
  path: str,
  *,
  floorplan: dict | None,
  truth: np.ndarray | None,
  estimate: np.ndarray,
  net: np.ndarray,
  net_regions: np.ndarray,
  title: str,
) -> None:
  """The true walk and the stitched estimates coloured by the chosen candidate (net
  ``k`` of ``net_regions``; an index past the nets is the fit to JADE's anchor map)."""
  fig, ax = plt.subplots(figsize=(12, 6.5))
  _walls(ax, floorplan)
  if truth is not None:
    ax.plot(truth[:, 0], truth[:, 1], color='k', lw=1.2, label='true trajectory', zorder=2)
  cmap = plt.get_cmap('tab10')
  ok = np.all(np.isfinite(estimate), -1) & (net >= 0)
  for k in np.unique(net[ok]):
    sel = ok & (net == k)
    # Candidates after the nets are not nets (the per-step fit against JADE's map).
    is_net = k < len(net_regions)
    ax.scatter(
      estimate[sel, 0],
      estimate[sel, 1],
      s=10,
      color=cmap(int(net_regions[k]) % 10) if is_net else 'k',
      marker='o' if is_net else 'x',
      label=f'net of region {int(net_regions[k])}' if is_net else 'fit to JADE anchor map',
      zorder=3,
    )
  ax.set_aspect('equal')
  if floorplan or truth is not None or ok.any():
    reference = truth if truth is not None else estimate[ok]
    _limits(ax, _extent(floorplan, reference), 1.0)
  ax.set_xlabel('x (m)')
  ax.set_ylabel('y (m)')
  ax.set_title(title)
  ax.legend(loc='upper left', bbox_to_anchor=(1.01, 1.0), fontsize=8)
  core_plots.save(fig, path)


def plot_sweep(
  path: str,
  noise_deg: list,
  thresholds: list,
  submeter: np.ndarray,
  median: np.ndarray,
  title: str = '',
) -> None:
  """Sub-metre fraction and median error vs AoA noise, one line per threshold.

  ``submeter``/``median``: ``[len(noise_deg), len(thresholds)]``.
  """
  fig, axes = plt.subplots(1, 2, figsize=(11, 4.5))
  markers, styles = 'osD^v<>', ('-', '--', ':', '-.')
  for j, thr in enumerate(thresholds):
    # Distinct markers and dashes: curves of different thresholds often coincide.
    style = dict(
      marker=markers[j % len(markers)],
      ls=styles[j % len(styles)],
      alpha=0.8,
      markersize=9 - j,
      label=f'threshold {thr:g}',
    )
    axes[0].plot(noise_deg, 100 * submeter[:, j], **style)
    axes[1].plot(noise_deg, median[:, j], **style)
  axes[0].set_ylabel('steps under 1 m (%)')
  axes[0].axhline(92, color='0.5', ls='--', lw=1)
  axes[1].set_ylabel('median error (m)')
  for ax in axes:
    ax.set_xlabel('AoA noise sigma (deg)')
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
  fig.suptitle(title or 'Robustness sweep')
  core_plots.save(fig, path)
