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

The checkpoint is a hint. mqstore ends the 4 KiB file with an 8-byte trailer, ``MQCK`` and
the CRC-32 of the bytes before it (RocketMQ leaves that area zero and ignores it). A file
whose trailer does not match, that is short, unreadable, or whose timestamps are negative or
in the future, is *garbled*: its timestamps are taken as 0, so an abnormal recovery scans
the CommitLog from its first file (as after a crash with no checkpoint), and the repair is
logged and counted as ``derived_rebuilt``. A file without the trailer (RocketMQ's, or an
older mqstore's) is only checked for plausible timestamps.

``durable_offset`` (int64 at byte 40, mqstore's own slot) is the CommitLog offset below
which the CommitLog, every ConsumeQueue unit and every IndexFile entry were synced before
the file was written: after a crash the ConsumeQueues and IndexFiles are checked and
re-dispatched from there instead of from the start of the CommitLog file the scan starts at. ``flushed_offset`` (int64 at byte 48) is the CommitLog's own flushed
offset at that time (>= ``durable_offset``): damage found before it is below the sync
point whatever the timestamps say, and a log that now ends before it lost durable
data. Both are trusted only in a file whose trailer magic is ``MQC2`` (written by
mqstore since issue 9) and whose CRC matches; ``-1`` there means "no offset". A file with
the older ``MQCK`` trailer, or without one (RocketMQ's), has no offset (None): the derived
files are rebuilt from the file boundary the timestamps give, as before. An older mqstore reads an
``MQC2`` file as one without the trailer (timestamps only) and rewrites it with ``MQCK``,
so a stale offset it kept is never trusted again. RocketMQ 5's own offsets at bytes 24
(``masterFlushedOffset``) and 32 (``confirmPhyOffset``) are kept as found: their meanings
(replication) are not this one, and RocketMQ in controller mode would act on them.
"""
from __future__ import annotations

import logging
import os
import struct
import time
import zlib

from mqstore.damage import DERIVED_REBUILT, RecoveryLog, preallocate, translate_full
from mqstore.errors import StoreFullError

from . import format as fmt

#: the trailer at the end of the file: magic, CRC-32 (zlib) of every byte before it
TRAILER = struct.Struct(">4sI")
TRAILER_MAGIC = b"MQCK"
#: the trailer magic of a file whose ``durable_offset`` (byte 40) is mqstore's
TRAILER_MAGIC_OFFSET = b"MQC2"
#: where ``durable_offset`` and ``flushed_offset`` are kept (after RocketMQ 5's two offsets at 24 and 32)
DURABLE_OFFSET = struct.Struct(">qq")
DURABLE_OFFSET_POS = 40
TRAILER_POS = fmt.CHECKPOINT_FILE_SIZE - TRAILER.size
#: a timestamp later than now by more than this is garbage, not clock skew
FUTURE_SLACK_MS = 24 * 3600 * 1000


class StoreCheckpoint:
    """The checkpoint file. Thread-safety: callers serialise :meth:`flush` (the store's
    checkpoint lock); reading the attributes is safe anywhere."""

    def __init__(self, path: str, *, read_only: bool = False, log: RecoveryLog | None = None):
        self.path = path
        self.read_only = read_only
        self.physic_msg_timestamp = 0
        self.logics_msg_timestamp = 0
        self.index_msg_timestamp = 0
        #: CommitLog offset below which the log, the ConsumeQueues and the IndexFiles were
        #: synced (None: not known; see the module docstring)
        self.durable_offset: int | None = None
        #: the CommitLog's flushed offset when it was written (None: not known)
        self.flushed_offset: int | None = None
        #: why the file was not trusted (None: it was, or there was none)
        self.garbled: str | None = None
        #: bytes 24.. before the trailer, kept as found (RocketMQ 5 stores offsets there)
        self._rest = bytes(TRAILER_POS - fmt.CHECKPOINT.size)
        self._fd = -1
        self._reserved = True
        if read_only:
            try:
                with open(path, "rb") as f:
                    data = f.read(fmt.CHECKPOINT_FILE_SIZE)
            except FileNotFoundError:
                return
            except OSError as exc:
                data = b""
                self.garbled = f"unreadable ({exc})"
            self._decode(data, existed=True)
            return
        existed = os.path.exists(path)
        with translate_full(f"creating {path}"):
            self._fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        size = os.fstat(self._fd).st_size
        data = os.pread(self._fd, fmt.CHECKPOINT_FILE_SIZE, 0)
        if size < fmt.CHECKPOINT_FILE_SIZE:
            os.ftruncate(self._fd, fmt.CHECKPOINT_FILE_SIZE)
        # its one page allocated now, so that rewriting it never needs space (a store full
        # since before its first checkpoint still closes); an older store's sparse file on
        # a full disk is retried by flush()
        self._reserved = False
        self._reserve()
        self._decode(data, existed=existed and size > 0)
        if self.garbled is not None:
            detail = (f"checkpoint {self.garbled}: ignored, recovery after a crash scans the "
                      "commitlog from its first file")
            if log is not None:
                log.record(DERIVED_REBUILT, path, 0, detail)
            else:
                logging.getLogger("mqstore").warning("recovery: %s: %s", path, detail)

    def _decode(self, data: bytes, *, existed: bool) -> None:
        """Take the timestamps from ``data`` (the file's bytes) unless it is garbled."""
        if not existed:
            return
        if len(data) < fmt.CHECKPOINT_FILE_SIZE:
            if self.garbled is None:
                self.garbled = f"is {len(data)} bytes, not {fmt.CHECKPOINT_FILE_SIZE}"
            return
        magic, crc = TRAILER.unpack_from(data, TRAILER_POS)
        if magic in (TRAILER_MAGIC, TRAILER_MAGIC_OFFSET) and \
                zlib.crc32(data[:TRAILER_POS]) != crc:
            self.garbled = "CRC mismatch"
            return
        offset = flushed = None
        if magic == TRAILER_MAGIC_OFFSET:
            offset, flushed = DURABLE_OFFSET.unpack_from(data, DURABLE_OFFSET_POS)
            if offset < -1 or flushed < -1 or (offset >= 0 and flushed < offset):
                self.garbled = f"holds impossible offsets {offset}, {flushed}"
                return
            if offset == -1:
                offset = flushed = None
        stamps = fmt.CHECKPOINT.unpack_from(data, 0)
        future = time.time_ns() // 1_000_000 + FUTURE_SLACK_MS
        if any(ts < 0 or ts > future for ts in stamps):
            self.garbled = f"holds impossible timestamps {stamps}"
            return
        (self.physic_msg_timestamp, self.logics_msg_timestamp,
         self.index_msg_timestamp) = stamps
        self._rest = bytes(data[fmt.CHECKPOINT.size:TRAILER_POS])
        self.durable_offset = offset
        self.flushed_offset = flushed

    def min_timestamp(self) -> int:
        """Where an abnormal recovery may start: every message stored at or before this time
        is durable in the CommitLog, the ConsumeQueues and the IndexFiles (RocketMQ
        ``getMinTimestampIndex``: the minimum, less 3 s of slack, floored at 0)."""
        ts = min(self.physic_msg_timestamp, self.logics_msg_timestamp, self.index_msg_timestamp)
        return max(0, ts - fmt.CHECKPOINT_SLACK_MS)

    def covered_timestamp(self) -> int:
        """Every message stored before this time has its CommitLog bytes, ConsumeQueue units
        and IndexFile keys durable (the minimum of the three timestamps, no slack): a store
        timestamp never decreases along the log, and each timestamp is taken before the
        syncs it vouches for. Recovery re-dispatches only from the first message stored at
        or after it."""
        return min(self.physic_msg_timestamp, self.logics_msg_timestamp,
                   self.index_msg_timestamp)

    def flush(self) -> None:
        """Write the three timestamps, the two offsets and the ``MQC2`` trailer (the
        whole 4 KiB in one pwrite: the CRC covers it, so a flipped byte anywhere is seen)
        and fsync the file. Callers set the fields only from syncs that completed."""
        data = bytearray(fmt.CHECKPOINT_FILE_SIZE)
        fmt.CHECKPOINT.pack_into(data, 0, self.physic_msg_timestamp, self.logics_msg_timestamp,
                                 self.index_msg_timestamp)
        data[fmt.CHECKPOINT.size:TRAILER_POS] = self._rest
        if self.durable_offset is None:
            DURABLE_OFFSET.pack_into(data, DURABLE_OFFSET_POS, -1, -1)
        else:
            DURABLE_OFFSET.pack_into(data, DURABLE_OFFSET_POS, self.durable_offset,
                                     max(self.durable_offset, self.flushed_offset or 0))
        TRAILER.pack_into(data, TRAILER_POS, TRAILER_MAGIC_OFFSET,
                          zlib.crc32(data[:TRAILER_POS]))
        with translate_full(f"writing {self.path}"):
            if not self._reserved:
                self._reserve(raise_full=True)
            os.pwrite(self._fd, data, 0)
            os.fsync(self._fd)
        self.garbled = None

    def _reserve(self, raise_full: bool = False) -> None:
        if os.fstat(self._fd).st_blocks * 512 >= fmt.CHECKPOINT_FILE_SIZE:
            self._reserved = True
            return
        try:
            preallocate(self._fd, 0, fmt.CHECKPOINT_FILE_SIZE, f"preallocating {self.path}")
            self._reserved = True
        except StoreFullError:
            if raise_full:
                raise

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
