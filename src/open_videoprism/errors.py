"""Errors that carry a message meant for the user.

Library code raises a :class:`VideoPrismError` subclass when the cause is the
user's input (a missing file, a wrong checkpoint format, a bad config key, a
video in the wrong layout). The CLI prints such an error as one line,
``error: <message>``, and exits 2; any other exception is a bug and keeps its
traceback. Messages say which file/key, what is wrong and what to do.
"""

from __future__ import annotations


class VideoPrismError(Exception):
    """An error whose message tells the user what is wrong and what to do."""


# The historical name; every user error is a VideoPrismError.
UserError = VideoPrismError


class CheckpointError(VideoPrismError):
    """A checkpoint file is missing, of an unknown format, or inconsistent."""


class ConfigError(VideoPrismError):
    """A config key or value is invalid."""


class DataError(VideoPrismError):
    """Input data (a video, a manifest, a shard) cannot be used."""


class InputError(VideoPrismError, ValueError):
    """A tensor handed to the model breaks its contract (layout, dtype, value range).

    Also a ``ValueError``, so callers that caught the old ``ValueError`` still do.
    """


class RunLockedError(VideoPrismError):
    """Another live process is writing into the same run/output folder."""


class TrainingDiverged(VideoPrismError):
    """The training loss became NaN or infinite."""
