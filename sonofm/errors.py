"""Errors that mean "the user gave us something wrong", as opposed to bugs.

The CLI prints a `UserError` as one clear line and exits non-zero; everything else is a bug and
shows a traceback with `--debug`.
"""

from __future__ import annotations


class UserError(Exception):
    """Bad input: a missing file, an invalid field, an impossible option combination."""


class DataError(UserError):
    """A dataset, manifest or file does not match what sonofm expects."""
