"""User-facing errors.

Anything the user can fix (a missing path, a bad config value, a corpus too small) raises
`LmforgeError` with one line naming the thing and what to do. The CLI prints that line and
exits with code 2; everything else is a bug and keeps its traceback.
"""


class LmforgeError(Exception):
    """An error caused by the user's input, reported as one line, exit code 2."""


class TrainingDiverged(LmforgeError):
    """Training produced a non-finite loss: the run cannot go on as configured."""
