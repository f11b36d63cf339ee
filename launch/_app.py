"""What every launcher shares: the ``--config`` and ``--workdir`` flags and ``app.run``.

A launcher holds no training logic: it names its library function and its default
config, and this module parses the flags and calls ``fn(config, workdir)``.
"""

from typing import Any, Callable

from absl import app
from absl import flags
from ml_collections import config_flags


def run(
  fn: Callable[[Any, str], Any],
  *,
  workdir_help: str,
  default_config: str | None = None,
  after: Callable[[Any, str], None] | None = None,
) -> None:
  """Defines the flags, then runs ``fn(config, workdir)`` (and ``after`` with its result)."""
  flags.DEFINE_string('workdir', None, workdir_help)
  config_flags.DEFINE_config_file(
    'config', default_config, 'Path to a config file (path[:arg]).', lock_config=True
  )
  flags.mark_flags_as_required(['workdir'] if default_config else ['config', 'workdir'])

  def main(argv):
    if len(argv) > 1:
      raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
    result = fn(flags.FLAGS.config, flags.FLAGS.workdir)
    if after is not None:
      after(result, flags.FLAGS.workdir)

  app.run(main)
