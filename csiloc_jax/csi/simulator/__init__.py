"""Synthetic CSI in the exact IEEE CTW-2020 HDF5 layout, from a physical channel model.

Where this sits: the real CTW-2020 files cannot be downloaded here, so everything that
reads CTW data -- the streaming reader ``csiloc_jax.csi.reader``, the training loop, the
tests and the benchmarks -- is exercised on files this package writes. They follow the
real layout exactly (folder, file and dataset names, axis order, float32 or float64;
see docs/schemas.md, 'CTW-2020 layout'):

  out_dir/CTW2020_labelled_data/file_1.hdf5, file_2.hdf5, ...   (H_Re, H_Im, SNR, Pos)
  out_dir/CTW2020_unlabelled_data/file_1.hdf5, ...              (H_Re, H_Im, SNR)

  H_Re, H_Im  (N, A, S, M)  sample, antenna, subcarrier, measurement
  SNR         (N, A, M)     per-antenna SNR of each measurement, dB
  Pos         (N, 3)        [x, y, z] metres, base station at the origin (labelled only)

One module per concern, in data-flow order (docs/csi.md describes the generator):

* :mod:`.config` -- :class:`ChannelModelConfig`, every physical parameter.
* :mod:`.environment` -- the realised world of a seed (:func:`make_channel_model`):
  an 8 x 8 half-wavelength patch grid in the y-z plane at the origin, boresight +x,
  8 dead elements -> 56 working antennas (other counts use the smallest square grid
  that holds them); 924 used subcarriers of a 1.27 GHz, 20 MHz, 1024-point OFDM grid
  (other counts spread over the same band); smooth terrain, a street grid with a
  rectangular building in most blocks (paths crossing a building lose power smoothly
  with the length inside it), the facades as specular reflectors, point scatterers and
  a smooth log-normal shadowing field -- shared by the labelled and unlabelled sets.
* :mod:`.propagation` -- the paths (line of sight, ground reflection, facade
  reflections, scatterers) and the noise-free channel, with the exact spherical
  per-element phase plus the first-order wideband (beam-squint) term.
* :mod:`.measurement` -- UE positions (uniform along the streets over a
  646 x 943 x 41 m area in front of the array, or uniform over it), 5 repeated noisy
  measurements per position, the per-antenna SNR, exact zeros for failed estimates (a
  few % of entries with the defaults), and the per-index random streams that make the
  output independent of chunking.
* :mod:`.writer` -- :func:`generate_ctw_dataset`, the streaming file writer.

Learnability: with the defaults, the CSI of positions a metre apart is strongly
correlated and that of positions 100+ m apart is not, and a nearest-neighbour lookup
on the standardised real part of the measurement-averaged CSI already locates most
UEs to within metres -- while blocked areas, multipath and zeros keep a heavy error
tail, so the map is learnable but not trivial.
"""

from csiloc_jax.csi.simulator.config import LABELLED_SET
from csiloc_jax.csi.simulator.config import PHASE_REFERENCES
from csiloc_jax.csi.simulator.config import POSITION_LAYOUTS
from csiloc_jax.csi.simulator.config import SPEED_OF_LIGHT
from csiloc_jax.csi.simulator.config import UNLABELLED_SET
from csiloc_jax.csi.simulator.config import ChannelModelConfig
from csiloc_jax.csi.simulator.environment import ChannelModel
from csiloc_jax.csi.simulator.environment import array_geometry
from csiloc_jax.csi.simulator.environment import blockage_loss_db
from csiloc_jax.csi.simulator.environment import ground_height
from csiloc_jax.csi.simulator.environment import make_channel_model
from csiloc_jax.csi.simulator.environment import shadowing_db
from csiloc_jax.csi.simulator.environment import subcarrier_offsets
from csiloc_jax.csi.simulator.measurement import channel_response
from csiloc_jax.csi.simulator.measurement import generate_samples
from csiloc_jax.csi.simulator.measurement import sample_positions
from csiloc_jax.csi.simulator.propagation import clean_channel
from csiloc_jax.csi.simulator.propagation import element_pattern
from csiloc_jax.csi.simulator.propagation import propagation_paths
from csiloc_jax.csi.simulator.writer import GENERATOR_TAG
from csiloc_jax.csi.simulator.writer import PARTIAL_SUFFIX
from csiloc_jax.csi.simulator.writer import generate_ctw_dataset

__all__ = [
  'LABELLED_SET',
  'PHASE_REFERENCES',
  'POSITION_LAYOUTS',
  'SPEED_OF_LIGHT',
  'UNLABELLED_SET',
  'ChannelModelConfig',
  'ChannelModel',
  'array_geometry',
  'blockage_loss_db',
  'ground_height',
  'make_channel_model',
  'shadowing_db',
  'subcarrier_offsets',
  'channel_response',
  'generate_samples',
  'sample_positions',
  'clean_channel',
  'element_pattern',
  'propagation_paths',
  'GENERATOR_TAG',
  'PARTIAL_SUFFIX',
  'generate_ctw_dataset',
]
