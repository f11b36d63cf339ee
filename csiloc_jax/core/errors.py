"""The project's own error for bad input, shared by both systems.

Every reader raises a subclass of :class:`InputError` (``csi.reader.CTWFormatError``,
``mmwave.reader.MeasurementError``) with a message that names the file, the field and
what was expected. The launchers (``launch/_app.py``) tell it apart from a bug: bad
input exits with :data:`EXIT_BAD_INPUT` and the message on one line; anything else
exits with :data:`EXIT_INTERNAL_ERROR` and its traceback.
"""

EXIT_INTERNAL_ERROR = 1
EXIT_BAD_INPUT = 2


class InputError(ValueError):
  """Input (a data file, a folder, a setting) that does not follow what is expected."""


def one_line(error: BaseException) -> str:
  """The error's message on one line (a user reads it; the log has the rest)."""
  text = ' '.join(str(error).split())
  return f'{type(error).__name__}: {text}'
