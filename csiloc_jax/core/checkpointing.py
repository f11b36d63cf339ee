"""All orbax calls, behind one small class.

A run directory keeps two managers: ``latest`` (for resuming after an interruption) and
``best`` (the weights with the lowest validation loss, which are what gets evaluated).
Each checkpoint holds the train state (restored against an abstract target so arrays
come back with the right types) and a JSON ``meta`` dict with the loop's bookkeeping
(epoch, early-stopping counters) so a resumed run continues exactly where it stopped.

Multi-process runs: every process calls the same methods with the same values; orbax
synchronises them and process 0 writes the files, so a checkpoint does not depend on
the number of processes that wrote it, and any number can restore it.
"""

from __future__ import annotations

import os
from typing import Any

import jax
import orbax.checkpoint as ocp


class Checkpointer:
  """Saves and restores ``(state, meta)`` pairs under one absolute directory."""

  def __init__(self, directory: str, max_to_keep: int = 1):
    self.directory = os.path.abspath(directory)
    # In a multi-process run orbax's processes meet at barriers named after the step;
    # two managers saving the same step at once ('best' and 'latest' after an improving
    # epoch), or the same step of another phase, would share a barrier and wait forever.
    # The key's prefix names this manager: its last three path parts.
    prefix = '_'.join(self.directory.split(os.sep)[-3:])
    self._manager = ocp.CheckpointManager(
      self.directory,
      options=ocp.CheckpointManagerOptions(
        max_to_keep=max_to_keep,
        create=True,
        multiprocessing_options=ocp.options.MultiprocessingOptions(barrier_sync_key_prefix=prefix),
      ),
    )

  def latest_step(self) -> int | None:
    return self._manager.latest_step()

  def save(self, step: int, state: Any, meta: dict) -> None:
    # A run interrupted between saving 'best' and 'latest' redoes that epoch and saves
    # the same step again; orbax refuses an existing step even with force=True.
    if step in self._manager.all_steps():
      self._manager.delete(step)
    # Host arrays: in a multi-process run every process holds the same state, and orbax
    # writes a numpy array once (from process 0), where a device array of one process
    # is refused.
    state = jax.device_get(state)
    self._manager.save(
      step,
      args=ocp.args.Composite(state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta)),
      force=True,
    )

  def restore(self, abstract_state: Any, step: int | None = None) -> tuple[Any, dict]:
    """Restores ``(state, meta)`` at ``step`` (default: the latest)."""
    step = self._manager.latest_step() if step is None else step
    if step is None:
      raise FileNotFoundError(f'no checkpoint in {self.directory}')
    restored = self._manager.restore(
      step,
      args=ocp.args.Composite(
        state=ocp.args.StandardRestore(abstract_state), meta=ocp.args.JsonRestore()
      ),
    )
    return restored['state'], dict(restored['meta'])

  def wait(self) -> None:
    self._manager.wait_until_finished()

  def close(self) -> None:
    self._manager.wait_until_finished()
    self._manager.close()


def abstract_like(tree: Any) -> Any:
  """The shape/dtype skeleton of a host pytree, used as an orbax restore target."""
  return jax.tree.map(ocp.utils.to_shape_dtype_struct, tree)
