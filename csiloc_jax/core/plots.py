"""Plot helpers shared by both systems: headless saving and the error CDF.

Each system draws its own figures (:mod:`csiloc_jax.csi.plots`,
:mod:`csiloc_jax.mmwave.plots`); both save through :func:`save` and draw their error
CDFs with :func:`error_cdf`. matplotlib's Agg backend works on headless machines and CI.
"""

from __future__ import annotations

from typing import Mapping

import matplotlib

matplotlib.use('Agg')
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


def save(fig, path: str) -> None:
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)


def error_cdf(
  path: str,
  errors: Mapping[str, np.ndarray],
  *,
  xlabel: str = 'position error (m)',
  ylabel: str = 'fraction of samples',
  title: str = '',
  log_x: bool = False,
  mark_m: float | None = None,
  xlim: tuple[float, float] | None = None,
) -> None:
  """Empirical CDF of Euclidean errors, one step line per method.

  A missing estimate (NaN or inf) counts as an error beyond the axis: it never raises
  the curve, so a method that skips hard samples does not look better than it is.
  With ``mark_m`` the legend gives each method's fraction under that error.
  """
  fig, ax = plt.subplots(figsize=(10.5, 5) if mark_m is not None else (6, 4))
  for name, err in errors.items():
    err = np.sort(np.asarray(err, np.float64))
    if len(err) == 0:
      continue
    finite = np.isfinite(err)
    y = np.arange(1, len(err) + 1) / len(err)
    label = name if mark_m is None else f'{name} ({np.mean(err < mark_m):.1%} < {mark_m:g} m)'
    ax.step(np.where(finite, err, 1e12), y, where='post', label=label)
  if mark_m is not None:
    ax.axvline(mark_m, color='0.5', ls='--', lw=1)
  if log_x:
    ax.set_xscale('log')
  if xlim is not None:
    ax.set_xlim(*xlim)
  else:
    finite_all = np.concatenate(
      [np.asarray(e, np.float64)[np.isfinite(e)] for e in errors.values()] or [np.zeros(0)]
    )
    if finite_all.size:
      lo, hi = float(finite_all.min()), float(finite_all.max())
      lo = max(lo, 1e-3) * 0.9 if log_x else 0.0
      ax.set_xlim(lo, max(hi * 1.05, lo * 10 if log_x else 1.0))
  ax.set_ylim(0, 1)
  ax.set_xlabel(xlabel)
  ax.set_ylabel(ylabel)
  if title:
    ax.set_title(title)
  ax.grid(alpha=0.3, which='both')
  if mark_m is not None:
    ax.legend(fontsize=8, loc='upper left', bbox_to_anchor=(1.01, 1.0))
  else:
    ax.legend()
  save(fig, path)
