"""User-facing errors.

A :class:`UserError` is a problem with the user's input (a flag, a file, a
folder), not a bug. Command-line entry points catch it and print its message
as one line, without a traceback, and exit with status 2.
"""


class UserError(Exception):
    """An actionable, one-line error caused by user input (flag, file, data)."""

    def __init__(self, message: str):
        # Keep it to one line: the CLI prints str(err) verbatim.
        super().__init__(" ".join(str(message).split()))


class DataError(UserError):
    """A data file or folder is missing, corrupt or in an unexpected layout."""
