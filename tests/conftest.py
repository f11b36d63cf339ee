"""Test-wide JAX setup. Must run before anything imports jax: 4 fake CPU devices so the
pmap/shard_map paths are exercised on any machine, and fewer XLA optimisations so the
end-to-end tests compile quickly on 2 cores."""

import os

os.environ['JAX_PLATFORMS'] = 'cpu'
_flags = os.environ.get('XLA_FLAGS', '')
if 'xla_force_host_platform_device_count' not in _flags:
  os.environ['XLA_FLAGS'] = (_flags + ' --xla_force_host_platform_device_count=4').strip()

import jax  # noqa: E402  (after the environment is set)

jax.config.update('jax_disable_most_optimizations', True)

import matplotlib  # noqa: E402

matplotlib.use('Agg')
