"""Error statistics of position estimates against ground truth (evaluation only).

Data flow: estimates from the tracker and the baselines + ``position`` ground truth
(read by :func:`~csiloc_jax.mmwave.reader.read_ground_truth`, never by training) ->
:func:`error_summary` -> ``metrics.json`` (its keys: docs/schemas.md). A step without an
estimate (NaN) counts as an infinite error: it is never sub-metre, and it is not
silently dropped.
"""

from __future__ import annotations

import numpy as np


def errors(estimate: np.ndarray, truth: np.ndarray) -> np.ndarray:
  """Euclidean errors ``[T]``; ``inf`` where the estimate is missing."""
  e = np.linalg.norm(np.asarray(estimate, np.float64) - np.asarray(truth, np.float64), axis=-1)
  return np.where(np.isfinite(e), e, np.inf)


def error_summary(err: np.ndarray) -> dict:
  """``submeter_fraction``, ``median_m``, ``p90_m``, ``p95_m``, ``mean_m`` (finite only),
  ``num_steps`` and ``missing_steps``."""
  err = np.asarray(err, np.float64)
  finite = np.isfinite(err)

  def pct(q):
    v = float(np.percentile(err, q)) if len(err) else float('nan')
    return v if np.isfinite(v) else None  # JSON has no inf: null = "no estimate".

  return {
    'submeter_fraction': float(np.mean(err < 1.0)) if len(err) else float('nan'),
    'median_m': pct(50),
    'p90_m': pct(90),
    'p95_m': pct(95),
    'mean_m': float(err[finite].mean()) if finite.any() else None,
    'num_steps': int(len(err)),
    'missing_steps': int((~finite).sum()),
  }
