"""StoreCheckpoint: how far each part of the store is known durable (RocketMQ's checkpoint).

A 4 KiB file holding three big-endian int64 store timestamps (``format.CHECKPOINT``):

- ``physic_msg_timestamp``: store time of the last CommitLog message made durable;
- ``logics_msg_timestamp``: store time of the last message whose ConsumeQueue unit was made
  durable;
- ``index_msg_timestamp``: store time of the last message whose IndexFile entries were made
  durable.

Unlike RocketMQ (where the index timestamp only moves when a full IndexFile is flushed and
index entries may be lost after a crash unless ``messageIndexSafe``), mqstore moves it on
every index flush and always includes it in the recovery start point, so the IndexFile is
rebuilt as completely as the ConsumeQueue.
"""
from __future__ import annotations

import os

from . import format as fmt


class StoreCheckpoint:
    """The checkpoint file. Thread-safety: callers serialise :meth:`flush` (the store's
    checkpoint lock); reading the attributes is safe anywhere."""

    def __init__(self, path: str, *, read_only: bool = False):
        self.path = path
        self.read_only = read_only
        self.physic_msg_timestamp = 0
        self.logics_msg_timestamp = 0
        self.index_msg_timestamp = 0
        self._fd = -1
        if read_only:
            if os.path.exists(path):
                with open(path, "rb") as f:
                    self._decode(f.read(fmt.CHECKPOINT.size))
            return
        self._fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        if os.fstat(self._fd).st_size < fmt.CHECKPOINT_FILE_SIZE:
            os.ftruncate(self._fd, fmt.CHECKPOINT_FILE_SIZE)
        self._decode(os.pread(self._fd, fmt.CHECKPOINT.size, 0))

    def _decode(self, data: bytes) -> None:
        if len(data) >= fmt.CHECKPOINT.size:
            (self.physic_msg_timestamp, self.logics_msg_timestamp,
             self.index_msg_timestamp) = fmt.CHECKPOINT.unpack_from(data, 0)

    def min_timestamp(self) -> int:
        """Where an abnormal recovery may start: every message stored at or before this time
        is durable in the CommitLog, the ConsumeQueues and the IndexFiles (RocketMQ
        ``getMinTimestampIndex``: the minimum, less 3 s of slack, floored at 0)."""
        ts = min(self.physic_msg_timestamp, self.logics_msg_timestamp, self.index_msg_timestamp)
        return max(0, ts - fmt.CHECKPOINT_SLACK_MS)

    def flush(self) -> None:
        """Write the three timestamps and fsync the file."""
        os.pwrite(self._fd, fmt.CHECKPOINT.pack(self.physic_msg_timestamp,
                                                self.logics_msg_timestamp,
                                                self.index_msg_timestamp), 0)
        os.fsync(self._fd)

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
