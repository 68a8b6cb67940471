"""User-facing errors.

Every problem a user can fix (bad input, missing data, corrupt files) raises :class:`MiascaleError`
with a one-paragraph message that says what is wrong and how to fix it. The CLI prints the message
and exits non-zero; it never shows a traceback for these.
"""


class MiascaleError(Exception):
    """An error caused by the user's input or environment, with an actionable message."""
