"""The Sionna RT adapter: paths against the geometry, ids, clear errors."""

import os
import subprocess
import sys

import numpy as np
import pytest

from csiloc_jax.core import raytracer

C = 299_792_458.0

# Two concrete walls 0.2 m thick, centred on y = +3 and y = -3, 10 m long.
WALLS = """<scene version="2.1.0">
<bsdf type="itu-radio-material" id="concrete">
  <string name="type" value="concrete"/><float name="thickness" value="0.2"/>
</bsdf>
<shape type="cube" id="north"><transform name="to_world">
  <scale x="5" y="0.1" z="1.5"/><translate x="0" y="3" z="1.5"/></transform>
  <ref id="concrete" name="bsdf"/></shape>
<shape type="cube" id="south"><transform name="to_world">
  <scale x="5" y="0.1" z="1.5"/><translate x="0" y="-3" z="1.5"/></transform>
  <ref id="concrete" name="bsdf"/></shape>
</scene>"""

OPTIONS = raytracer.TraceOptions(
  max_depth=1,
  reflection=True,
  diffuse=False,
  refraction=False,
  diffraction=False,
  samples_per_src=20_000,
  max_paths_per_src=20_000,
  batch_size=2,
  seed=3,
)


def _trace(scene, source, targets, **kw):
  out = list(raytracer.trace(scene, np.asarray(source), np.asarray(targets), OPTIONS, **kw))
  return out


def test_paths_match_the_geometry():
  scene = raytracer.load_scene_xml(WALLS, 60e9)
  ids = raytracer.object_ids(scene)
  source = np.array([-2.0, 0.0, 1.5])
  targets = np.array([[1.0, 0.5, 1.5], [2.0, -0.5, 1.5], [3.0, 1.0, 1.5]])
  batches = _trace(scene, source, targets, source_array=raytracer.Array())
  assert [lo for lo, _ in batches] == [0, 2]  # batch_size targets per solve
  for lo, paths in batches:
    for i in range(len(paths.valid)):
      target = targets[lo + i]
      valid = np.flatnonzero(paths.valid[i])
      assert len(valid) == 3  # line of sight and one reflection off each wall
      for p in valid:
        obj = paths.objects[0, i, p]
        if obj == raytracer.NO_OBJECT:
          image = source  # line of sight
        else:
          # The reflecting face is the wall side facing the room (y = +-2.9); the path
          # comes from the source mirrored across it.
          face = 2.9 if obj == ids['north'] else -2.9
          assert obj in (ids['north'], ids['south'])
          assert paths.vertices[0, i, p, 1] == pytest.approx(face, abs=1e-3)
          image = source * np.array([1, -1, 1]) + np.array([0, 2 * face, 0])
        d = image - target
        assert paths.tau[i, p] * C == pytest.approx(np.linalg.norm(d), abs=1e-3)
        assert paths.phi_r[i, p] == pytest.approx(np.arctan2(d[1], d[0]), abs=1e-3)
        assert np.isfinite(paths.a[i, :, p]).all() and abs(paths.a[i, 0, p]) > 0


def test_a_path_through_a_wall_is_blocked():
  scene = raytracer.load_scene_xml(WALLS, 60e9)
  ((_, paths),) = _trace(scene, [0.0, 0.0, 1.5], [[0.0, 6.0, 1.5]], source_array=raytracer.Array())
  los = paths.valid[0] & (paths.objects[0, 0] == raytracer.NO_OBJECT)
  assert not los.any()


def test_array_axis_and_element_positions():
  array = raytracer.Array(rows=2, cols=3, spacing=0.5, pattern='tr38901')
  pos = raytracer.element_positions(array)
  assert pos.shape == (6, 3)
  assert np.allclose(pos[:, 0], 0) and set(np.round(pos[:, 1], 3)) == {-0.5, 0.0, 0.5}
  scene = raytracer.load_scene_xml(WALLS, 1.27e9)
  ((_, paths),) = _trace(scene, [-2.0, 0.0, 1.5], [[1.0, 0.5, 1.5]], source_array=array)
  assert paths.a.shape[:2] == (1, 6)


def test_scene_errors_and_ray_casts(tmp_path):
  with pytest.raises(ValueError, match='built-in'):
    raytracer.load_scene('no_such_scene', 1e9)
  bad = tmp_path / 'bad.xml'
  bad.write_text('<scene version="2.1.0"><shape type="nonsense"/></scene>')
  with pytest.raises(ValueError, match='bad.xml'):
    raytracer.load_scene(str(bad), 1e9)
  assert 'munich' in raytracer.builtin_scenes()
  scene = raytracer.load_scene_xml(WALLS, 60e9)
  t = raytracer.first_hit(scene, np.array([[0.0, 0.0, 1.5], [0.0, 0.0, 9.0]]), (0.0, 1.0, 0.0))
  assert t[0] == pytest.approx(2.9, abs=1e-4) and np.isinf(t[1])


def test_missing_llvm_names_what_to_install():
  code = (
    'from csiloc_jax.core import raytracer\n'
    'try:\n  raytracer.require()\n'
    'except raytracer.RaytracerUnavailable as e:\n  print("ERROR:", e)\n'
  )
  env = dict(os.environ, DRJIT_LIBLLVM_PATH='/nonexistent/libLLVM.so')
  out = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, env=env)
  assert 'ERROR:' in out.stdout, out.stdout + out.stderr
  assert 'apt-get install libllvm19' in out.stdout and 'DRJIT_LIBLLVM_PATH' in out.stdout


def test_an_llvm_too_old_is_refused_before_tracing(monkeypatch):
  # Dr.Jit picks an old system LLVM (Debian 12's 15) when no newer one is installed;
  # Sionna RT's path solver then aborts the process, so require() must refuse it.
  monkeypatch.setattr(raytracer, '_llvm_version', lambda: (15, 0, 6))
  with pytest.raises(raytracer.RaytracerUnavailable, match=r'LLVM 15\.0\.6, older than'):
    raytracer.require()
  monkeypatch.setattr(raytracer, '_llvm_version', lambda: raytracer.MIN_LLVM)
  assert raytracer.require() is not None


def test_the_loaded_llvm_version_is_read():
  raytracer.require()
  import mitsuba as mi

  version = raytracer._llvm_version()
  if mi.variant().startswith('llvm'):
    assert len(version) == 3 and version >= raytracer.MIN_LLVM
  else:
    assert version is None
