"""The HDF5 probe: a walk over one file's structure, run in a process of its own.

Data flow: :mod:`csiloc_jax.core.h5io` starts this file as a separate Python process
(``python -I h5probe.py``) the first time a process reads an HDF5 file, sends it one
file path per line (JSON) on stdin, and gets one JSON line back per path on stdout: the
file's root objects (for a dataset: shape, dtype, storage layout, filters and the
extent of its chunk index), its root attributes, or the first HDF5 error met on the way.

Why a separate process: libhdf5 can loop forever or crash on damaged metadata (a
zeroed block over the global heap makes reading a string attribute spin inside the
library while it holds Python's GIL, so no thread or signal handler of the reading
process can interrupt it). Here the parent times the walk out, or sees the crash, and
refuses the file instead of hanging. The walk touches every piece of metadata the
readers later use, so the reading process only reads data the probe has vouched for.

Imports nothing from the package: it runs by path, isolated (``-I``).
"""

import json
import sys

import h5py
from h5py import h5d
import numpy as np

# Chunk index entries walked per dataset (a real CTW file has one chunk per sample at
# most, about 512); beyond that the extent of the first ones stands for all.
MAX_CHUNKS = 1_000_000

_LAYOUTS = {
  h5d.COMPACT: 'compact',
  h5d.CONTIGUOUS: 'contiguous',
  h5d.CHUNKED: 'chunked',
  getattr(h5d, 'VIRTUAL', -1): 'virtual',
}


def _dataset(ds: h5py.Dataset) -> dict:
  """Shape, dtype and storage of one dataset; every call reads metadata only."""
  dcpl = ds.id.get_create_plist()
  layout = _LAYOUTS.get(dcpl.get_layout(), 'other')
  dtype = ds.dtype
  info = {
    'kind': 'dataset',
    'shape': None if ds.shape is None else [int(n) for n in ds.shape],
    'dtype': dtype.str,
    'dtype_kind': dtype.kind,
    'itemsize': int(dtype.itemsize),
    'layout': layout,
    'filters': [int(dcpl.get_filter(i)[0]) for i in range(dcpl.get_nfilters())],
    'external': int(dcpl.get_external_count()) > 0,
    'storage_size': int(ds.id.get_storage_size()),
  }
  if layout == 'contiguous':
    offset = ds.id.get_offset()
    info['offset'] = None if offset is None else int(offset)
  elif layout == 'chunked':
    num_chunks = int(ds.id.get_num_chunks())
    extent = 0
    for i in range(min(num_chunks, MAX_CHUNKS)):
      chunk = ds.id.get_chunk_info(i)
      if chunk.byte_offset is not None:
        extent = max(extent, int(chunk.byte_offset) + int(chunk.size))
    info.update(num_chunks=num_chunks, chunk_extent=extent, chunks=list(ds.chunks))
  return info


def describe(path: str) -> dict:
  """``{'objects': {name: info}, 'attrs': {name: {'dtype', 'shape'}}}`` of the root
  group, or ``{'error': {'step', 'object', 'type', 'message'}}`` at the first failure."""
  step, name = 'opening the file', None
  try:
    with h5py.File(path, 'r') as f:
      step = 'listing the root group'
      names = list(f.keys())
      out = {'objects': {}, 'attrs': {}}
      for name in names:
        if isinstance(name, bytes):
          # A name that is not UTF-8 (damaged, or another tool's encoding): listed under
          # an escaped spelling, never opened; no schema asks for it.
          out['objects'][name.decode('utf-8', 'backslashreplace')] = {'kind': 'other'}
          continue
        step = 'opening the object'
        # An external link would open another file: never followed. A soft link to
        # nothing is the file's own business; any other failure to open an object is
        # damage, reported with the library's message.
        link = f.get(name, getlink=True)
        item = None
        if not isinstance(link, h5py.ExternalLink):
          try:
            item = f[name]
          except Exception:
            if not isinstance(link, h5py.SoftLink):
              raise
        if isinstance(item, h5py.Dataset):
          step = 'reading the dataset metadata'
          out['objects'][name] = _dataset(item)
        else:
          out['objects'][name] = {'kind': 'group' if isinstance(item, h5py.Group) else 'other'}
      step, name = 'listing the root attributes', None
      # Attribute names that are not UTF-8 are left out: no schema asks for them.
      attr_names = [a for a in f.attrs.keys() if isinstance(a, str)]
      for name in attr_names:
        step = 'reading the attribute'
        # Reads the value: a string attribute's text lives in the global heap.
        value = np.asarray(f.attrs[name])
        out['attrs'][name] = {'dtype': value.dtype.str, 'shape': list(value.shape)}
  except Exception as e:  # Anything the library raises is the answer, not a crash.
    if isinstance(name, bytes):  # A damaged name that is not UTF-8.
      name = name.decode('utf-8', 'backslashreplace')
    return {
      'error': {
        'step': step,
        'object': name,
        'type': type(e).__name__,
        'message': ' '.join(str(e).split()),
      }
    }
  return out


def main() -> None:
  sys.stdout.write('"ready"\n')
  sys.stdout.flush()
  for line in sys.stdin:
    answer = describe(json.loads(line))
    try:
      text = json.dumps(answer)
    except (TypeError, ValueError) as e:  # Names or values JSON cannot hold: damage too.
      text = json.dumps(
        {
          'error': {
            'step': 'describing the file',
            'object': None,
            'type': type(e).__name__,
            'message': str(e),
          }
        }
      )
    sys.stdout.write(text + '\n')
    sys.stdout.flush()


if __name__ == '__main__':
  main()
