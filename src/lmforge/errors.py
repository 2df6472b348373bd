"""User-facing errors.

Anything the user can fix (a missing path, a bad config value, a corpus too small) raises
`LmforgeError` with one line naming the thing and what to do. The CLI prints that line and
exits with code 2; a command the user stopped exits with 130 (`Interrupted`, or Ctrl-C's
KeyboardInterrupt); everything else is a bug, keeps its traceback and exits with 1.
"""

import reprlib


class LmforgeError(Exception):
    """An error caused by the user's input, reported as one line, exit code 2."""


class TrainingDiverged(LmforgeError):
    """Training produced a non-finite loss: the run cannot go on as configured."""


class Interrupted(Exception):
    """The user stopped the command (Ctrl-C, SIGTERM) and its work so far is saved: the CLI prints
    the message, which says how to go on, and exits with 130, as a shell reports Ctrl-C."""



_BRIEF = reprlib.Repr()
_BRIEF.maxlevel = 3
_BRIEF.maxlist = _BRIEF.maxtuple = _BRIEF.maxdict = _BRIEF.maxset = 8
_BRIEF.maxstring = _BRIEF.maxother = 80


def shown(value: object, limit: int = 80) -> str:
    """`value` as an error message quotes it: at most `limit` characters, with the whole length
    said, so that a long value (a pasted file, a list built from YAML aliases) cannot flood the
    terminal or a log with the very input that was wrong. A container is abbreviated as it is
    written out (reprlib): its full repr alone could take gigabytes."""
    if isinstance(value, (list, tuple, dict, set)):
        text = _BRIEF.repr(value)
        return text if len(text) <= limit else f"{text[:limit]}…"
    text = repr(value)
    return text if len(text) <= limit else f"{text[:limit]}…({len(text):,} chars)"
