"""What every launcher shares: the ``--config`` and ``--workdir`` flags and ``app.run``.

A launcher holds no training logic: it names its library function and its default
config, and this module parses the flags and calls ``fn(config, workdir)``. Exit codes:
0 done; 2 (``errors.EXIT_BAD_INPUT``) bad input, with a one-line message naming the
file and the field; 1 (``errors.EXIT_INTERNAL_ERROR``) anything else, with its traceback.
"""

import sys
from typing import Any, Callable

from absl import app
from absl import flags
from ml_collections import config_flags

from csiloc_jax.core import errors


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
    try:
      result = fn(flags.FLAGS.config, flags.FLAGS.workdir)
    except errors.InputError as e:
      # Bad input: the message names the file and the field; no traceback.
      print(f'bad input: {errors.one_line(e)}', file=sys.stderr)
      sys.exit(errors.EXIT_BAD_INPUT)
    if after is not None:
      after(result, flags.FLAGS.workdir)

  app.run(main)
