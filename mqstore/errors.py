"""The exception hierarchy of mqstore: one place, one line per error saying when it is raised.

Every error an engine raises for bad input or damaged files is a subclass of
:class:`MQStoreError`, so callers can catch the whole family at once. Several also derive
from the matching builtin (``ValueError``, ``KeyError``, ``IndexError``) so generic code
keeps working.
"""
from __future__ import annotations


class MQStoreError(Exception):
    """Base class of every error mqstore raises on purpose."""


class ConfigError(MQStoreError, ValueError):
    """An option is unknown, has a bad value, or conflicts with the files already on disk."""


class EngineMismatchError(ConfigError):
    """The directory holds a store written by another engine; it is left untouched."""


class TopicNotFoundError(MQStoreError, KeyError):
    """The topic does not exist (create it with ``create_topic`` first)."""

    def __str__(self) -> str:  # KeyError quotes its argument; keep the plain message
        return str(self.args[0]) if self.args else ""


class TopicExistsError(MQStoreError):
    """``create_topic`` was called for a topic that already exists."""


class InvalidTopicError(MQStoreError, ValueError):
    """A topic name is empty, longer than 249 characters, ``.``/``..``, or has a character
    outside ``[A-Za-z0-9._-]`` (this refuses path separators and traversal)."""


class InvalidPartitionError(MQStoreError, IndexError):
    """A partition number is negative or not below the topic's partition count, or a topic
    was created with fewer than one partition."""


class OffsetOutOfRangeError(MQStoreError, IndexError):
    """An offset is below the partition's start offset (deleted by retention) or above its
    end offset. Reading exactly at the end offset is allowed and returns nothing."""


class RecordTooLargeError(MQStoreError, ValueError):
    """A record or batch is larger than ``max_message_bytes`` (or than a file can hold);
    nothing of the call was written."""


class InvalidRecordError(MQStoreError, TypeError):
    """A value, key, header or tag has the wrong type (values, keys and header values are
    bytes-like, header names and tags are str)."""


class InvalidArgumentError(MQStoreError, ValueError):
    """An argument of a read or lookup (offset, max_records, max_bytes, tags, timestamp_ms,
    limit, time bounds) has the wrong type or is out of range; nothing was read."""


class CorruptRecordError(MQStoreError):
    """Stored bytes fail a check (size, magic, CRC) where damage is not a torn tail.

    ``path`` and ``position`` say where; the message repeats them.
    """

    def __init__(self, message: str, path: str | None = None, position: int | None = None):
        if path is not None:
            message = f"{message} (file {path}, position {position})"
        super().__init__(message)
        self.path = path
        self.position = position


class StoreFullError(MQStoreError, OSError):
    """The file system is full (ENOSPC) or the quota is used up (EDQUOT). Nothing of the
    failed call is acknowledged or kept after a restart; the store stays readable and takes
    appends again once space is freed. ``errno`` is the original error number."""


class BufferRangeError(MQStoreError, ValueError):
    """A native-helper call (``mqstore.native``) was given a position, length or entry count
    that reaches outside its buffer; nothing was read past the buffer."""


class StoreLockedError(MQStoreError):
    """Another writer holds the directory's exclusive lock (open with ``read_only=True``
    to read alongside it)."""


class StoreClosedError(MQStoreError):
    """A method was called on a store after ``close()``."""


class ReadOnlyStoreError(MQStoreError):
    """A write (append, create_topic, commit_offset, retention) on a store opened with
    ``read_only=True``."""


class UnsupportedOperation(MQStoreError, NotImplementedError):
    """The engine's design really lacks this feature; the message says which and why."""


__all__ = [name for name in dir() if name.endswith(("Error", "Operation"))]
