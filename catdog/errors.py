"""Errors a user can cause. The CLI prints their message as one sentence and exits non-zero."""


class CatdogError(Exception):
    """A problem with the user's input or environment, worded as one actionable sentence."""

    exit_code = 2
