"""Errors that mean "the user's input is wrong", as opposed to a bug.

The CLI prints these as one line naming the bad value and exits with 2.
"""


class T5mtlError(ValueError):
    """Bad input: an unknown name, a malformed file, a mismatched checkpoint."""
