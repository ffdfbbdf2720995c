"""Errors that carry a message meant for the user.

Library code raises :class:`UserError` (or a subclass) when the cause is the
user's input (a missing file, a wrong checkpoint format, a bad config key).
The CLI prints such an error as one line, ``error: <message>``, and exits 2;
any other exception is a bug and keeps its traceback.
"""

from __future__ import annotations


class UserError(Exception):
    """An error whose message tells the user what is wrong and what to do."""


class CheckpointError(UserError):
    """A checkpoint file is missing, of an unknown format, or inconsistent."""


class ConfigError(UserError):
    """A config key or value is invalid."""


class DataError(UserError):
    """Input data (a video, a manifest, a shard) cannot be used."""


class TrainingDiverged(UserError):
    """The training loss became NaN or infinite."""
