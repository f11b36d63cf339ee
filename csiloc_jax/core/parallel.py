"""Data parallelism: the one place where a pure step is transformed for devices.

A step is written once, for any number of devices, as ``step(state, batch, *replicated,
**options)``: ``state`` (e.g. a TrainState, or parameters) and the ``replicated``
arguments (e.g. an input normaliser) are the same on every device, ``batch`` is split
along its first axis, and reductions over the batch go through ``lax.psum``/``pmean``
over the named axis. :class:`DataParallel` compiles it either with ``jax.pmap`` (the
default, as the design asks) or as ``jax.jit(jax.shard_map(...))`` over a 1-D device
mesh, and owns the matching data layout: how to replicate a pytree, shard a host batch
and bring results back.

Layouts differ between the two forms: under pmap a replicated pytree carries a leading
device axis and a batch is reshaped to ``[num_devices, per_device, ...]``; under
shard_map a replicated pytree is one global array and a batch keeps its global shape,
sharded along its first axis. Callers never see the difference.

Multi-process runs (:mod:`csiloc_jax.core.distributed`) use the same code: the devices
are then every process's, a step's collectives span them all, and each process passes
only its own block of every global batch (``distributed.process_shard``); global arrays
are built from those local blocks (``jax.make_array_from_process_local_data``), never
gathered on one host, and only outputs that a host needs whole (predictions) are.

Data (parameters, normalisers) always travels as arguments and ``options`` (the loss
name, the model's ``apply``) are hashable static arguments of module-level functions, so
compiling the same step twice reuses jax's own compilation cache: nothing here keeps a
cache, or data, alive.
"""

from __future__ import annotations

import functools
from typing import Any, Callable

import jax
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P
import numpy as np

from csiloc_jax.core import distributed

BACKENDS = ('pmap', 'shard_map')


def _call(step_fn: Callable, options: tuple, *args: Any) -> Any:
  """``step_fn(*args, **options)``: the one function that pmap compiles, so that jax's
  cache, keyed on the function and its static arguments, finds an earlier compilation."""
  return step_fn(*args, **dict(options))


def _identity(tree: Any) -> Any:
  return tree


def _shard_mapped(
  step_fn: Callable,
  options: tuple,
  mesh: jax.sharding.Mesh,
  axis_name: str,
  out_specs: Any,
  state: Any,
  batch: Any,
  *replicated: Any,
) -> Any:
  # check_vma=False keeps pmap's semantics: with it on, shard_map already sums the
  # gradient of a replicated parameter over the axis, and the step's explicit psum
  # would then count it once per device.
  in_specs = (P(), P(axis_name)) + (P(),) * len(replicated)
  return jax.shard_map(
    functools.partial(step_fn, **dict(options)),
    mesh=mesh,
    in_specs=in_specs,
    out_specs=out_specs,
    check_vma=False,
  )(state, batch, *replicated)


# Module-level, so jax's compilation cache is shared by every DataParallel instance.
_STATIC = (0, 1, 2, 3, 4)
_SHARD_MAPPED = jax.jit(_shard_mapped, static_argnums=_STATIC)
_SHARD_MAPPED_DONATING = jax.jit(
  _shard_mapped, static_argnums=_STATIC, donate_argnums=(len(_STATIC),)
)


class DataParallel:
  """Compiles a psum-style step for all devices and lays out data for it.

  ``devices`` defaults to every device of every process (this process's alone in a
  single-process run); ``num_devices`` counts them all and ``num_local_devices`` this
  process's, which receive its block of each batch.
  """

  def __init__(self, backend: str, axis_name: str = 'batch', devices: list | None = None):
    if backend not in BACKENDS:
      raise ValueError(f'parallel backend must be one of {BACKENDS}, got {backend!r}')
    self.backend = backend
    self.axis_name = axis_name
    if devices is None:
      devices = jax.devices() if jax.process_count() > 1 else jax.local_devices()
    self.devices = list(devices)
    self.num_devices = len(self.devices)
    me = jax.process_index()
    self.local_devices = [d for d in self.devices if d.process_index == me]
    self.num_local_devices = len(self.local_devices)
    self.mesh = jax.sharding.Mesh(np.asarray(self.devices), (axis_name,))

  # -- compilation ---------------------------------------------------------------------
  def _compile(
    self, step_fn: Callable, options: dict, out_specs: Any, donate_state: bool
  ) -> Callable:
    opts = tuple(sorted(options.items()))  # Hashable, and equal for equal options.
    if self.backend == 'pmap':
      p_fn = jax.pmap(
        _call,
        axis_name=self.axis_name,
        devices=self.devices,
        static_broadcasted_argnums=(0, 1),
        donate_argnums=(2,) if donate_state else (),
      )
      return functools.partial(p_fn, step_fn, opts)
    jitted = _SHARD_MAPPED_DONATING if donate_state else _SHARD_MAPPED
    return functools.partial(jitted, step_fn, opts, self.mesh, self.axis_name, out_specs)

  def compile_step(self, step_fn: Callable, donate_state: bool = True, **options: Any) -> Callable:
    """``p_step(state, batch, *replicated) -> (out, metrics)`` as one program.

    ``step_fn(state, batch, *replicated, **options)``; ``options`` must be hashable.
    ``out`` (e.g. the new state, or the gradients) and ``metrics`` are replicated. The
    result is a ``functools.partial`` of a pmapped or jitted function over its static
    arguments, so ``p_step.func.lower(*p_step.args, state, batch, *replicated)`` gives
    XLA's lowering (e.g. for its cost analysis).
    """
    return self._compile(step_fn, options, (P(), P()), donate_state)

  def compile_train_step(
    self, gradient_fn: Callable, update_fn: Callable, **options: Any
  ) -> Callable:
    """``p_step(state, batch, *replicated) -> (state, metrics)`` as two programs.

    ``gradient_fn(state, batch, *replicated, **options) -> (grads, metrics)`` (e.g. the
    CSI system's ``steps.compute_gradients``) runs on the sharded batch;
    ``update_fn(state, grads) -> state`` (e.g. ``steps.apply_gradients``) then updates
    the donated state in place. The result equals the two composed as one program, but
    on CPU it is much faster for the large dense models: XLA:CPU maps a program's
    temporaries afresh on every execution (page faults and kernel time on every step),
    and in one program the gradient and Adam's intermediates are such temporaries,
    whereas as a program's output and in-place updates of donated buffers they are
    ordinary, reused memory.
    """
    p_grad = self.compile_step(gradient_fn, donate_state=False, **options)
    if self.backend == 'pmap':
      p_apply = jax.pmap(update_fn, devices=self.devices, donate_argnums=(0,))
    else:
      p_apply = jax.jit(update_fn, donate_argnums=(0,))

    def p_step(state, batch, *replicated):
      grads, metrics = p_grad(state, batch, *replicated)
      return p_apply(state, grads), metrics

    return p_step

  def compile_eval_step(self, eval_fn: Callable, **options: Any) -> Callable:
    """``p_eval(state, batch, *replicated) -> outputs`` with per-example outputs.

    ``eval_fn(state, batch, *replicated, **options)`` returns a pytree of arrays whose
    first axis is the (device-local) batch axis. They stay on the devices, sharded like
    the batch; :meth:`gather` brings them back as host arrays in batch order. Nothing is
    reduced across devices, so the values are those of a one-device evaluation.
    """
    return self._compile(eval_fn, options, P(self.axis_name), donate_state=False)

  # -- data layout ---------------------------------------------------------------------
  def replicate(self, tree: Any) -> Any:
    """Puts a host pytree (e.g. a TrainState, a normaliser) on every device."""
    if self.backend == 'pmap':
      # pmap wants one copy per device stacked on a leading axis. Placed by a pmapped
      # identity, the copies are laid out exactly like a pmapped step's outputs, so the
      # step's first call (and an evaluation of fresh parameters) does not compile a
      # second program for another input layout.
      # (Under pmap a step's outputs are this process's devices' alone, in every run.)
      stacked = jax.tree.map(
        lambda x: np.broadcast_to(np.asarray(x), (self.num_local_devices,) + np.shape(x)), tree
      )
      return jax.pmap(_identity, devices=self.devices)(stacked)
    # From a host copy, never an alias: the compiled step donates its state argument,
    # which must not invalidate the caller's arrays. Every process holds the whole
    # value and fills its own devices' copies.
    sharding = NamedSharding(self.mesh, P())
    return jax.tree.map(
      lambda x: jax.make_array_from_callback(x.shape, sharding, lambda i: x[i]),
      jax.tree.map(_host_value, jax.device_get(tree)),
    )

  def unreplicate(self, tree: Any) -> Any:
    """One host copy of a replicated pytree (state or metrics)."""
    if self.backend == 'pmap':
      return jax.device_get(jax.tree.map(lambda x: x[0], tree))
    # This process's copy: in a multi-process run the global array spans devices that
    # it cannot read.
    return jax.tree.map(lambda x: np.asarray(x.addressable_data(0)), tree)

  def shard(self, batch: Any) -> Any:
    """Splits this process's block of a batch (``distributed.process_shard``; the whole
    batch in a single-process run) across its devices, as one global batch."""

    def check(x):
      if x.shape[0] % self.num_local_devices:
        raise ValueError(
          f'batch axis {x.shape[0]} is not divisible by the {self.num_local_devices} devices'
          + (' of this process' if jax.process_count() > 1 else '')
        )
      return x

    batch = jax.tree.map(check, batch)
    if self.backend == 'pmap':
      return jax.tree.map(lambda x: x.reshape((self.num_local_devices, -1) + x.shape[1:]), batch)
    sharding = NamedSharding(self.mesh, P(self.axis_name))
    return jax.tree.map(lambda x: jax.make_array_from_process_local_data(sharding, x), batch)

  def gather(self, tree: Any) -> Any:
    """Host arrays of the whole global batch, in batch order, on every process, from
    :meth:`compile_eval_step`'s sharded outputs."""
    if self.backend == 'pmap':
      local = jax.tree.map(lambda x: np.asarray(x).reshape((-1,) + x.shape[2:]), tree)
    elif jax.process_count() == 1:
      local = jax.device_get(tree)
    else:
      local = jax.tree.map(_local_rows, tree)
    return distributed.allgather_rows(local)


def _host_value(x: Any) -> np.ndarray:
  """A host array of the dtype jax would give it (a Python float becomes float32)."""
  x = np.asarray(x)
  return x.astype(jax.dtypes.canonicalize_dtype(x.dtype), copy=False)


def _local_rows(x: jax.Array) -> np.ndarray:
  """This process's rows of an array sharded along its first axis, in order."""
  shards = sorted(x.addressable_shards, key=lambda s: s.index[0].start or 0)
  return np.concatenate([np.asarray(s.data) for s in shards])
