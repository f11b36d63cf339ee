"""What every launcher shares: the ``--config`` and ``--workdir`` flags and ``app.run``.

A launcher holds no training logic: it names its library function and its default
config, and this module parses the flags and calls ``fn(config, workdir)``. Exit codes:
0 done; 2 (``errors.EXIT_BAD_INPUT``) bad input, with a one-line message on stderr and
no traceback: a data file or folder that does not follow its schema (the readers'
``core.errors.InputError``) or a command line that cannot be parsed (an unknown or
misspelt config field, a value of the wrong type, a config file that does not load);
1 (``errors.EXIT_INTERNAL_ERROR``) anything else, with its traceback.
"""

import sys
from typing import Any, Callable

from absl import app
from absl import flags
from ml_collections import config_flags

from csiloc_jax.core import errors


def _bad_input(text: str) -> None:
  """Prints the one line a user reads for bad input and exits with 2."""
  print(f'bad input: {" ".join(text.split())}', file=sys.stderr)
  sys.exit(errors.EXIT_BAD_INPUT)


def _command_line_error(error: BaseException) -> str:
  """A command-line error as one readable message: a flag error that embeds a
  traceback (a config file that raised while loading) shortened to its first and last
  lines, what failed and why; ml_collections' unknown-field error (an AttributeError
  wrapping a KeyError) unwrapped to its text and "did you mean"."""
  while error.args and isinstance(error.args[0], BaseException):
    error = error.args[0]
  text = error.args[0] if isinstance(error, KeyError) and error.args else str(error)
  lines = [x.strip() for x in str(text).splitlines() if x.strip()]
  lines = [x for x in lines if not x.startswith('Pass --help')]
  if any(x.startswith('Traceback') for x in lines):
    lines = [lines[0], lines[-1]]
  return f'command line: {type(error).__name__}: {" ".join(lines)}'


def _parse_flags(argv: list[str]) -> list[str]:
  """absl's flag parsing, with every command-line error as bad input (exit 2)."""
  try:
    rest = flags.FLAGS(argv)
    # A config file that failed to load is only reported when the config is used.
    getattr(flags.FLAGS.config, 'keys')
  except _COMMAND_LINE_ERRORS as e:
    _bad_input(_command_line_error(e))
  return rest


# absl's flag errors, and what ml_collections raises for an unknown field (with "did you
# mean"), a value of the wrong type, or a config file that cannot be read.
_COMMAND_LINE_ERRORS = (
  flags.Error,  # Every absl flag error, and ml_collections' (e.g. an override before --config).
  AttributeError,
  KeyError,
  TypeError,
  ValueError,
  OSError,
)


def run(
  fn: Callable[[Any, str], Any],
  *,
  workdir_help: str,
  default_config: str | None = None,
  after: Callable[[Any, str], None] | None = None,
) -> None:
  """Defines the flags, then runs ``fn(config, workdir)`` (and ``after`` with its result)."""
  flags.DEFINE_string('workdir', None, workdir_help)
  try:
    # With a default config, ml_collections applies --config.* overrides right here.
    config_flags.DEFINE_config_file(
      'config', default_config, 'Path to a config file (path[:arg]).', lock_config=True
    )
  except _COMMAND_LINE_ERRORS as e:
    _bad_input(_command_line_error(e))
  flags.mark_flags_as_required(['workdir'] if default_config else ['config', 'workdir'])

  def main(argv):
    if len(argv) > 1:
      _bad_input(f'command line: unexpected arguments {argv[1:]}')
    try:
      result = fn(flags.FLAGS.config, flags.FLAGS.workdir)
      if after is not None:
        after(result, flags.FLAGS.workdir)
    except errors.InputError as e:
      # Bad input: the message names the file and the field; no traceback.
      _bad_input(errors.one_line(e))

  app.run(main, flags_parser=_parse_flags)
