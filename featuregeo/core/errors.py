"""Exceptions raised for bad input.

Every user-facing failure is an :class:`InputError` whose message is a single line naming the
file or argument at fault and what was expected.  The CLI turns these into exit code 2 with no
traceback (unless ``--debug``).
"""

from __future__ import annotations


class FeaturegeoError(Exception):
    """Base class for featuregeo errors."""


class InputError(FeaturegeoError, ValueError):
    """Bad user input: a file, source string or argument that cannot be used.

    The message is one line: ``<what>: <problem>; expected <what was expected>``.
    """

    def __init__(self, message: str):
        super().__init__(" ".join(str(message).split()))


class NotFittedError(FeaturegeoError, AttributeError):
    """An estimator's results were requested before ``fit``."""
