"""Multi-process (multi-host) runs on JAX's own multi-controller runtime.

One Python process runs per host (a TPU VM of a pod slice, a GPU machine), all with the
same command and config; ``jax.distributed.initialize`` connects them, after which
``jax.devices()`` lists every device of every process and a compiled step's collectives
(``psum``/``pmean``) span them all. This module is the one place that starts the
runtime and answers the questions the rest of the library asks about it:

* :func:`initialize` -- from explicit ``coordinator_address`` / ``num_processes`` /
  ``process_id`` (``launch/train.py``'s flags), or from the environment where JAX
  detects the cluster itself (a Cloud TPU pod slice, SLURM, Open MPI, or
  ``JAX_COORDINATOR_ADDRESS``);
* :func:`is_primary` -- process 0 alone writes metrics, plots, stage records and data
  caches; orbax's own multi-process protocol decides who writes checkpoint files;
* :func:`primary_first` -- a step that may build a shared file (the generated data set,
  a feature cache) runs on process 0 first, then on the others, who find it built;
* :func:`barrier`, :func:`agree` and :func:`allgather_rows` -- synchronisation, one
  decision for all (process 0's), and the gathering of per-process rows (predictions)
  into the global order.

The data layout is fixed by :func:`process_shard`: a global batch of ``B`` examples is
split into ``process_count`` contiguous blocks, block ``p`` being process ``p``'s, so
each process reads only its rows (:func:`csiloc_jax.csi.input_pipeline.batches`) and the
global batch, and the results, do not depend on the number of processes. With one
process every function here is a no-op, so single-machine code pays nothing.
"""

from __future__ import annotations

import os
from typing import Any, Callable, TypeVar

from absl import logging
import jax
import numpy as np

from csiloc_jax.core import errors

T = TypeVar('T')

# Environment variables by which JAX's cluster detection recognises a multi-process job
# it can join without explicit arguments.
_CLUSTER_ENV = (
  'JAX_COORDINATOR_ADDRESS',  # Any cluster: the coordinator's host:port.
  'SLURM_JOB_ID',
  'OMPI_COMM_WORLD_SIZE',
)


def _tpu_pod_slice() -> bool:
  """A multi-host Cloud TPU slice: its VMs list each other in TPU_WORKER_HOSTNAMES."""
  hosts = os.environ.get('TPU_WORKER_HOSTNAMES', '')
  return len([h for h in hosts.split(',') if h.strip()]) > 1


def initialize(
  coordinator_address: str | None = None,
  num_processes: int | None = None,
  process_id: int | None = None,
) -> bool:
  """Starts JAX's multi-controller runtime if this is a multi-process job.

  With ``coordinator_address`` (``host:port`` of process 0), ``num_processes`` and
  ``process_id`` must be given too. Without them the job is recognised from the
  environment (a TPU pod slice, SLURM, Open MPI, ``JAX_COORDINATOR_ADDRESS``) and JAX
  finds the values itself; otherwise this is a single-process run and nothing happens.
  Must run before anything touches a device. Returns whether the runtime was started.
  """
  explicit = (coordinator_address, num_processes, process_id)
  if any(x is not None for x in explicit):
    if any(x is None for x in explicit):
      raise errors.InputError(
        'a multi-process run needs all of --coordinator_address, --num_processes and '
        f'--process_id; got {coordinator_address!r}, {num_processes!r}, {process_id!r}'
      )
    if not 0 <= process_id < num_processes:
      raise errors.InputError(f'--process_id={process_id} must be in [0, {num_processes})')
    if num_processes == 1:
      return False
  elif not (_tpu_pod_slice() or any(os.environ.get(k) for k in _CLUSTER_ENV)):
    return False
  # (CPU processes exchange data through gloo, jax's default CPU collectives.)
  jax.distributed.initialize(
    coordinator_address=coordinator_address, num_processes=num_processes, process_id=process_id
  )
  logging.info(
    'process %d of %d: %d local / %d global devices',
    jax.process_index(),
    jax.process_count(),
    jax.local_device_count(),
    jax.device_count(),
  )
  return True


def process_count() -> int:
  # Without the multi-controller runtime there is one process: answered without starting
  # JAX's backends (file bookkeeping asks this long before any device is used).
  return jax.process_count() if jax.distributed.is_initialized() else 1


def process_index() -> int:
  return jax.process_index() if jax.distributed.is_initialized() else 0


def is_primary() -> bool:
  """Whether this process writes the run's files (process 0)."""
  return process_index() == 0


def process_shard(num_rows: int) -> slice:
  """This process's contiguous block of a global batch of ``num_rows`` rows."""
  count, index = process_count(), process_index()
  if num_rows % count:
    raise ValueError(f'a batch of {num_rows} rows cannot be split over {count} processes')
  per = num_rows // count
  return slice(index * per, (index + 1) * per)


def barrier(name: str) -> None:
  """Waits until every process reaches the barrier of this ``name``."""
  if process_count() > 1:
    from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top

    multihost_utils.sync_global_devices(name)


def primary_first(name: str, fn: Callable[[], T]) -> T:
  """``fn()`` on process 0, then (after a barrier) on every other process.

  For a step that builds shared files the first time and reads them afterwards (the
  synthetic data set, a feature cache): process 0 builds them alone, and the others
  then read what it built instead of racing it. A failure on process 0 is raised there;
  the others then stop at the barrier's timeout, which JAX's runtime reports.
  """
  if process_count() == 1:
    return fn()
  result = fn() if is_primary() else None
  barrier(f'{name}: built by process 0')
  return result if is_primary() else fn()


def agree(flag: bool) -> bool:
  """Process 0's ``flag`` on every process: for decisions taken from a local clock (when
  to write a checkpoint), which must be the same everywhere because orbax's save is a
  collective: a process that saves while another does not waits forever."""
  if process_count() == 1:
    return bool(flag)
  from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top

  return bool(multihost_utils.broadcast_one_to_all(np.asarray(flag, np.bool_)))


def allgather_rows(tree: Any) -> Any:
  """Each process's host rows (first axis), concatenated in process order, everywhere."""
  if process_count() == 1:
    return tree
  from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top

  return jax.tree.map(
    np.asarray, multihost_utils.process_allgather(jax.tree.map(np.asarray, tree), tiled=True)
  )
