"""Sionna RT behind a small numpy interface: scenes in, traced paths out.

Where this sits: the ray-traced data sources of both systems
(:mod:`csiloc_jax.csi.raytrace`, :mod:`csiloc_jax.mmwave.raytrace`) describe *what* to
trace -- a scene, one source with its antenna array, many targets -- and get numpy
arrays back. This is the only module that imports Sionna RT, Mitsuba or Dr.Jit, and
only inside its functions, so ``import csiloc_jax`` and everything else work without
the ``raytrace`` extra.

Sionna RT runs on the CPU through Dr.Jit's LLVM backend, which loads an LLVM shared
library at run time (Debian/Ubuntu: ``apt-get install libllvm19``; elsewhere set
``DRJIT_LIBLLVM_PATH`` to a ``libLLVM.so``). :func:`require` turns a missing package or
library into one error that says what to install.

Settings that fit a 24 GB machine (docs/raytrace.md has the measurements): targets are
traced in batches (``batch_size``; each batch's path buffers are
``targets x paths x source antennas`` complex coefficients plus per-path angles and
vertices), and receivers are created afresh for every batch instead of being moved
between solves, so no solver state of the previous batch carries over.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import os
from typing import Any, Iterator

import numpy as np

INSTALL_HINT = (
  "install the ray-tracing extra (pip install -e '.[raytrace]') and an LLVM shared "
  "library for Dr.Jit's CPU backend (Debian/Ubuntu: apt-get install libllvm19; "
  'elsewhere set DRJIT_LIBLLVM_PATH to libLLVM.so)'
)

# Interaction types of Sionna RT's ``InteractionType`` (bit flags), as stored in paths.
NONE, SPECULAR, DIFFUSE, REFRACTION, DIFFRACTION = 0, 1, 2, 4, 8
# ``paths.objects`` value where a path has no interaction at that depth.
NO_OBJECT = 2**32 - 1


# The oldest LLVM that Dr.Jit's CPU backend may load here. With LLVM 15 (Debian 12's
# libllvm15, which Dr.Jit picks when no newer one is installed) Sionna RT 2.2's path
# solver aborts the whole process (in ``extract_hashes_from_u64``); LLVM 19 is the one
# tested.
MIN_LLVM = (16, 0, 0)


class RaytracerUnavailable(ImportError):
  """Sionna RT or the LLVM library that its CPU backend needs is missing or unusable."""


def require() -> Any:
  """Imports and returns ``sionna.rt``, or raises :class:`RaytracerUnavailable`."""
  if importlib.util.find_spec('sionna') is None:
    raise RaytracerUnavailable(f'Sionna RT is not installed: {INSTALL_HINT}')
  try:
    import sionna.rt as rt  # pylint: disable=g-import-not-at-top
  except Exception as e:  # A missing LLVM surfaces as ImportError or RuntimeError.
    raise RaytracerUnavailable(
      f'Sionna RT could not start its CPU backend ({type(e).__name__}: {e}): {INSTALL_HINT}'
    ) from e
  llvm = _llvm_version()
  if llvm is not None and llvm < MIN_LLVM:
    raise RaytracerUnavailable(
      f'Dr.Jit loaded LLVM {".".join(map(str, llvm))}, older than the '
      f'{".".join(map(str, MIN_LLVM))} that Sionna RT needs here (with LLVM 15 its path '
      f'solver aborts the process): {INSTALL_HINT}'
    )
  return rt


def _llvm_version() -> tuple[int, ...] | None:
  """The LLVM version Dr.Jit's CPU backend loaded, or None when the ray tracer runs on
  another backend (CUDA) or Dr.Jit does not say."""
  import drjit as dr  # pylint: disable=g-import-not-at-top
  import mitsuba as mi  # pylint: disable=g-import-not-at-top

  if not str(mi.variant() or '').startswith('llvm'):
    return None
  try:
    return tuple(int(v) for v in dr.detail.llvm_version())
  except Exception:  # pylint: disable=broad-except
    return None


def builtin_scenes() -> list[str]:
  """Names of the scenes that ship with Sionna RT (``munich``, ``etoile``, ...)."""
  rt = require()
  names = []
  for name in dir(rt.scene):
    value = getattr(rt.scene, name)
    if isinstance(value, str) and value.endswith('.xml') and not name.startswith('_'):
      names.append(name)
  return sorted(names)


def load_scene(scene: str, frequency_hz: float) -> Any:
  """A Sionna scene from a built-in name or a Mitsuba XML file, at ``frequency_hz``."""
  rt = require()
  if os.path.exists(scene):
    path = scene
  else:
    path = getattr(rt.scene, scene, None)
    if not (isinstance(path, str) and path.endswith('.xml')):
      raise ValueError(
        f'scene {scene!r} is neither a Mitsuba XML file nor a Sionna RT built-in scene '
        f'(built-in: {", ".join(builtin_scenes())})'
      )
  try:
    loaded = rt.load_scene(path, merge_shapes=True)
  except Exception as e:
    raise ValueError(f'{path}: not a scene Sionna RT can load ({type(e).__name__}: {e})') from e
  loaded.frequency = float(frequency_hz)
  return loaded


def load_scene_xml(xml: str, frequency_hz: float) -> Any:
  """A Sionna scene from a Mitsuba XML string; shapes keep their ids (not merged)."""
  rt = require()
  loaded = rt.load_scene_from_string(xml, merge_shapes=False)
  loaded.frequency = float(frequency_hz)
  return loaded


def set_scattering(scene: Any, coefficient: float) -> None:
  """Gives every radio material of ``scene`` this diffuse scattering coefficient (the
  fraction of reflected energy scattered diffusely, Lambertian pattern)."""
  if not 0.0 <= coefficient <= 1.0:
    raise ValueError(f'scattering coefficient must be in [0, 1], got {coefficient}')
  for material in scene.radio_materials.values():
    material.scattering_coefficient = float(coefficient)


def object_ids(scene: Any) -> dict[str, int]:
  """Scene object name -> the id that :attr:`Paths.objects` reports for it."""
  return {name: int(obj.object_id) for name, obj in scene.objects.items()}


def scene_bounds(scene: Any) -> tuple[np.ndarray, np.ndarray]:
  """Lower and upper corners [3] of the scene's bounding box (metres)."""
  box = scene.mi_scene.bbox()
  return np.array(box.min, np.float64).ravel(), np.array(box.max, np.float64).ravel()


def first_hit(scene: Any, origins: np.ndarray, direction: Any) -> np.ndarray:
  """Distance from each origin [N, 3] along ``direction`` ([3] or [N, 3], unit length)
  to the first surface; inf if none."""
  require()
  import mitsuba as mi  # pylint: disable=g-import-not-at-top

  origins = np.asarray(origins, np.float32)
  if len(origins) == 0:
    return np.zeros(0, np.float64)
  d = np.broadcast_to(np.asarray(direction, np.float32), origins.shape)
  ray = mi.Ray3f(
    o=mi.Point3f(*(mi.Float(np.ascontiguousarray(origins[:, k])) for k in range(3))),
    d=mi.Vector3f(*(mi.Float(np.ascontiguousarray(d[:, k])) for k in range(3))),
  )
  hit = scene.mi_scene.ray_intersect(ray)
  valid = np.array(hit.is_valid(), bool)
  t = np.array(hit.t, np.float64)
  return np.where(valid, t, np.inf)


@dataclasses.dataclass(frozen=True)
class Array:
  """A planar antenna array in Sionna's convention (elements in the local y-z plane,
  boresight along local +x), ``spacing`` in wavelengths."""

  rows: int = 1
  cols: int = 1
  spacing: float = 0.5
  pattern: str = 'iso'
  polarization: str = 'V'

  def build(self, rt: Any) -> Any:
    return rt.PlanarArray(
      num_rows=self.rows,
      num_cols=self.cols,
      vertical_spacing=self.spacing,
      horizontal_spacing=self.spacing,
      pattern=self.pattern,
      polarization=self.polarization,
    )


def element_positions(array: Array) -> np.ndarray:
  """Element positions [K, 3] of ``array`` in wavelengths, local frame, in the order of
  the source-antenna axis of :attr:`Paths.a`."""
  rt = require()
  return np.array(array.build(rt).normalized_positions, np.float64).reshape(3, -1).T


@dataclasses.dataclass(frozen=True)
class TraceOptions:
  """What the path solver looks for. Sionna's defaults are not used implicitly."""

  max_depth: int  # interactions per path (0 = line of sight only)
  reflection: bool  # specular reflections
  diffuse: bool  # diffuse reflections (needs materials with a scattering coefficient)
  refraction: bool  # transmission through objects (walls, buildings)
  diffraction: bool  # edge diffraction (wedges)
  samples_per_src: int  # rays shot from the source
  max_paths_per_src: int  # path buffer size per source
  batch_size: int  # targets per solve
  seed: int


@dataclasses.dataclass
class Paths:
  """Traced paths from one source to N targets, P path slots (``valid`` marks used ones).

  ``a`` [N, K, P] complex64: coefficient per target, source antenna k and path (unitless;
  includes antenna patterns and the path gain); ``tau`` [N, P] seconds; ``phi_r`` /
  ``theta_r`` [N, P] azimuth / zenith of arrival at the target, ``phi_t`` / ``theta_t``
  of departure at the source (radians, scene frame); ``interactions`` / ``objects``
  [D, N, P] per interaction depth (``objects`` is :data:`NO_OBJECT` where none);
  ``vertices`` [D, N, P, 3] interaction points.
  """

  a: np.ndarray
  tau: np.ndarray
  phi_r: np.ndarray
  theta_r: np.ndarray
  phi_t: np.ndarray
  theta_t: np.ndarray
  valid: np.ndarray
  interactions: np.ndarray
  objects: np.ndarray
  vertices: np.ndarray


def _numpy_paths(paths: Any, num_targets: int) -> Paths:
  a = np.array(paths.a[0], np.float32) + 1j * np.array(paths.a[1], np.float32)
  # Synthetic arrays: a [N, 1 (target antennas), 1 (source), K, P]; delays and angles
  # [N, 1, P] per target/source pair.
  n, _, _, k, p = a.shape
  assert n == num_targets, (n, num_targets)

  def per_pair(x: Any) -> np.ndarray:
    return np.array(x, np.float32).reshape(n, p)

  def per_depth(x: Any, dtype: Any, *tail: int) -> np.ndarray:
    v = np.array(x, dtype)
    return v.reshape(v.shape[0], n, p, *tail)

  return Paths(
    a=a.reshape(n, k, p).astype(np.complex64),
    tau=per_pair(paths.tau),
    phi_r=per_pair(paths.phi_r),
    theta_r=per_pair(paths.theta_r),
    phi_t=per_pair(paths.phi_t),
    theta_t=per_pair(paths.theta_t),
    valid=np.array(paths.valid, bool).reshape(n, p),
    interactions=per_depth(paths.interactions, np.uint32),
    objects=per_depth(paths.objects, np.uint32),
    vertices=per_depth(paths.vertices, np.float32, 3),
  )


def trace(
  scene: Any,
  source: np.ndarray,
  targets: np.ndarray,
  options: TraceOptions,
  source_array: Array,
  source_orientation: tuple[float, float, float] = (0.0, 0.0, 0.0),
  target_array: Array = Array(),
) -> Iterator[tuple[int, Paths]]:
  """Traces paths from ``source`` [3] to ``targets`` [N, 3], ``batch_size`` at a time.

  Yields ``(offset, Paths)`` for targets offset..offset+len. The source is the
  transmitter of the solve; for a reciprocal channel the uplink from a target to the
  source is the same coefficient (antenna patterns act the same in both directions).
  ``source_orientation`` is (yaw, pitch, roll) in radians. Deterministic for a given
  ``options.seed`` and batch size.
  """
  rt = require()
  targets = np.asarray(targets, np.float64).reshape(-1, 3)
  scene.tx_array = source_array.build(rt)
  scene.rx_array = target_array.build(rt)
  for name in list(scene.transmitters) + list(scene.receivers):
    scene.remove(name)
  scene.add(
    rt.Transmitter(
      'source',
      position=[float(v) for v in source],
      orientation=[float(v) for v in source_orientation],
    )
  )
  solver = rt.PathSolver(deterministic=True)
  try:
    for lo in range(0, len(targets), options.batch_size):
      batch = targets[lo : lo + options.batch_size]
      names = [f'target{i}' for i in range(len(batch))]
      for name, p in zip(names, batch):
        scene.add(rt.Receiver(name, position=[float(v) for v in p]))
      paths = solver(
        scene,
        max_depth=options.max_depth,
        max_num_paths_per_src=options.max_paths_per_src,
        samples_per_src=options.samples_per_src,
        synthetic_array=True,
        los=True,
        specular_reflection=options.reflection,
        diffuse_reflection=options.diffuse,
        refraction=options.refraction,
        diffraction=options.diffraction,
        seed=options.seed,
      )
      out = _numpy_paths(paths, len(batch))
      del paths
      for name in names:
        scene.remove(name)
      yield lo, out
  finally:
    for name in list(scene.receivers) + list(scene.transmitters):
      scene.remove(name)
