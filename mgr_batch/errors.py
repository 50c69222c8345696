"""The exception tree of mgr-batch: one root, leaves for what users and audio can get wrong."""

from __future__ import annotations


class MgrBatchError(Exception):
    """Root of every error mgr-batch raises on purpose."""


class ConfigError(MgrBatchError, ValueError):
    """A bad argument, option or config value (shown to the user as one line)."""


class InputNotFoundError(MgrBatchError, FileNotFoundError):
    """The input path, glob, manifest or URL names nothing."""


class CheckpointError(MgrBatchError):
    """A model checkpoint is missing, unreadable or not self-describing."""


class LabelError(MgrBatchError, ValueError):
    """Labels in the data that the model or the genre list does not know."""


class LeakageError(MgrBatchError, ValueError):
    """A song (or artist, or split group) appears on both sides of a split."""


class OutputError(MgrBatchError, OSError):
    """Writing the output failed (a full disk, object storage that went away): the run stops, every part
    written so far is whole, and a rerun completes it."""


class AudioError(MgrBatchError):
    """One file's audio could not be turned into clips; becomes an error row, never a crash."""

    stage = "decode"


class AudioReadError(AudioError):
    """The file's bytes could not be read (missing, permission denied, a directory)."""

    stage = "read"


class AudioDecodeError(AudioError):
    """The bytes are not audio any decoder understands (empty, truncated, wrong format)."""


class EmptyAudioError(AudioError):
    """The file decodes to zero samples."""


class InvalidAudioError(AudioError):
    """The samples hold NaN or infinite values."""


class SilentAudioError(AudioError):
    """The file holds only silence (or a constant DC offset), so it has no genre."""


def error_type(exc: BaseException) -> str:
    """The ``error_type`` column value for an exception: its class name."""
    return type(exc).__name__
