"""CommitLog: the one log every topic and queue appends to (RocketMQ's CommitLog).

A sequence of :class:`MappedFile` of ``mapped_file_size`` bytes each, named by the offset of
their first byte, with no holes between them. Messages are V1 entries (``format.py``); a
message never spans files: when ``size + 8`` does not fit in what is left of the last file,
an 8-byte blank (TOTALSIZE = bytes left, BLANK_MAGIC) ends it and the message goes to the
start of the next file. ``max_offset`` is the end of the data; ``flushed_offset`` the end of
what was made durable.
"""
from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable

import numpy as np

from mqstore import errors, native
from mqstore.damage import TORN_TAIL, RecoveryLog
from mqstore.storedir import fsync_dir

from . import format as fmt
from . import message as msgcodec
from . import recovery
from .mapped_file import MappedFile, file_name, parse_file_name
from .recovery import RecoveryResult

__all__ = ["CommitLog", "RecoveryResult"]

#: a run of messages this large or larger is encoded into the transient store pool's
#: buffer and committed with one pwrite, instead of being encoded into the mapping (see
#: CommitLog._put); a run larger than POOL_MAX_BYTES goes into the mapping (mmap mode) or
#: a buffer of its own (write mode)
POOL_MIN_BYTES = 16 << 10
POOL_MAX_BYTES = 16 << 20
POOL_GROW = 1 << 20


def _check_run(written: int, nbytes: int) -> None:
    """An encoder must write exactly the bytes its run's sizes add up to (else what follows
    in the pool buffer, or stale bytes of the mapping, would be taken for messages)."""
    if written != nbytes:
        raise errors.MQStoreError(f"encoded {written} bytes for a run of {nbytes}: the "
                                  f"message sizes and the encoder disagree (nothing kept)")


class CommitLog:
    """The shared log: put, flush, read slices, recover, delete old files.

    Thread-safety: appends run under ``put_lock`` (RocketMQ's putMessageLock), which the
    store holds while it assigns queue offsets; :meth:`flush` may run concurrently with
    appends (group commit leader, periodic flusher); reads of bytes below ``max_offset`` are
    safe from any thread. Retention and recovery run under ``put_lock``.
    """

    def __init__(self, directory: str, file_size: int, *, write_mode: str = "mmap",
                 read_only: bool = False):
        self.dir = directory
        self.file_size = file_size
        self.write_mode = write_mode
        self.read_only = read_only
        self.files: list[MappedFile] = []
        self.put_lock = threading.Lock()
        self._files_lock = threading.Lock()
        self.max_offset = 0
        self.flushed_offset = 0
        self.last_store_timestamp = 0
        self.flushed_store_timestamp = 0
        self.fsyncs = 0
        self._dir_dirty = False
        #: [start, end) ranges recovery kept in place under on_corruption="skip": never
        #: dispatched, their queue offsets read as gaps (recovery.py)
        self.skipped: list[tuple[int, int]] = []
        #: every message from this offset carries the __CRC32# record CRC (set by
        #: recovery.py; a follower, which runs no recovery, never requires it)
        self.crc_required_from = 1 << 62
        #: (file, start, end) a failed put could not zero yet (see _undo_put)
        self._pending_undo: tuple[MappedFile, int, int] | None = None
        #: serialises flush(): its dir-dirty check, syncs and flushed_offset move together
        self._flush_lock = threading.Lock()
        #: the transient store pool's buffer (see _put, _pool)
        self._pool_buf = bytearray()

    # ----- loading and recovery -----
    def load(self, log: RecoveryLog | None = None) -> None:
        """Map every existing file (RocketMQ ``MappedFileQueue#doLoad``): names must be
        20-digit offsets without holes. A trailing zero-length file (a crash during
        creation) is deleted; a file shorter than the configured size (its creation or
        growth did not reach the disk) is extended with zeros, which recovery then reads as
        the end of the data or as damage. A longer one is refused (not a store of this
        shape)."""
        if not self.read_only:
            os.makedirs(self.dir, exist_ok=True)
        elif not os.path.isdir(self.dir):
            return
        names = sorted(n for n in os.listdir(self.dir) if parse_file_name(n) is not None)
        files: list[MappedFile] = []
        for i, name in enumerate(names):
            path = os.path.join(self.dir, name)
            size = os.path.getsize(path)
            if size != self.file_size and i == len(names) - 1 and size == 0:
                if not self.read_only:
                    os.unlink(path)
                    self._dir_dirty = True
                    if log is not None:
                        log.record(TORN_TAIL, path, 0, "empty commitlog file (created after "
                                   "the last sync point) deleted")
                continue
            if files and parse_file_name(name) != files[-1].file_end_offset:
                raise errors.CorruptRecordError(
                    f"commitlog files are not contiguous: {name} does not follow "
                    f"{os.path.basename(files[-1].path)}", path, 0)
            if size < self.file_size and not self.read_only:
                with open(path, "r+b") as f:
                    os.ftruncate(f.fileno(), self.file_size)
                    os.fsync(f.fileno())
                if log is not None:
                    log.record(TORN_TAIL, path, size, f"commitlog file is {size} bytes, "
                               f"{self.file_size} expected: extended with zeros")
            mf = MappedFile(path, self.file_size, write_mode=self.write_mode,
                            read_only=self.read_only)
            mf.wrote_position = mf.flushed_position = self.file_size
            files.append(mf)
        self.files = files
        if files:
            self.max_offset = self.flushed_offset = files[-1].file_end_offset

    def recovery_start_normal(self) -> int:
        """Index of the file a normal recovery scans from: the third-last (RocketMQ 4.x)."""
        return max(0, len(self.files) - 3)

    def recovery_start_abnormal(self, min_timestamp: int) -> int:
        """Index of the file an abnormal recovery scans from: the newest whose first message
        is valid and was stored at or before ``min_timestamp`` (else the first file)."""
        for i in range(len(self.files) - 1, -1, -1):
            ts = msgcodec.store_timestamp(self.files[i].mm, 0, self.file_size)
            if 0 < ts <= min_timestamp:
                return i
        return 0

    def recover(self, start_index: int, *, policy: str = "raise", clean: bool = True,
                sync_timestamp: int = 0, log: RecoveryLog | None = None,
                covered_timestamp: int = 0) -> RecoveryResult:
        """Validate the log from file ``start_index``, classify and handle the first bad
        message (torn tail / corruption, ``on_corruption`` = ``policy``), truncate at the
        new end and drop every later file: see ``recovery.py``."""
        return recovery.recover(self, start_index, policy=policy, clean=clean,
                                sync_timestamp=sync_timestamp,
                                log=log if log is not None else RecoveryLog(),
                                covered_timestamp=covered_timestamp)

    def truncate_to(self, offset: int) -> None:
        """Make ``offset`` the end of the log: zero what follows in its file, delete later
        files (RocketMQ ``truncateDirtyFiles``)."""
        keep: list[MappedFile] = []
        for mf in self.files:
            if mf.file_from_offset > offset:
                mf.destroy()
                self._dir_dirty = True
                continue
            if mf.file_end_offset > offset:
                mf.zero_from(offset - mf.file_from_offset)
                mf.force()
            keep.append(mf)
        with self._files_lock:
            self.files = keep
        self.max_offset = self.flushed_offset = offset

    # ----- appends -----
    def put_locked(self, sizes, encode: Callable[..., object]) -> int:
        """Append the messages of one call (caller holds ``put_lock``); return the store
        timestamp given to them.

        ``sizes[i]`` is the encoded size of message i (a sequence of int or an int64 array);
        ``encode(physical_offset, first, count, store_timestamp, out, out_pos)`` encodes
        messages ``first .. first+count-1`` back to back from ``physical_offset``
        (``native.cl_encode``: one call per file touched, no per-message Python) into
        ``out[out_pos:]``: the mapped file, or the transient store pool's buffer that one
        ``pwrite`` then commits (see :meth:`put_runs_locked`). A message
        that does not fit with 8 bytes to spare ends the file with a blank and goes to the
        start of the next one (RocketMQ ``END_OF_FILE``).

        All or nothing: if a write fails (a full disk raises ``StoreFullError``), the bytes
        this call wrote are zeroed and synced, the files it created are deleted and the
        positions are put back, so neither this process nor a recovery after a restart can
        find any message of the failed call; the next call appends at the same offset.
        """
        n = len(sizes)
        if n == 1:  # the single message: no cumulative sums
            s0 = int(sizes[0])

            def fit(_i: int, room: int) -> tuple[int, int]:
                return (1, s0) if s0 <= room else (0, 0)
            return self.put_runs_locked(1, s0, fit, encode)
        ends = np.cumsum(sizes)

        def fit(i: int, room: int) -> tuple[int, int]:
            base = int(ends[i - 1]) if i else 0
            k = int(np.searchsorted(ends, base + room, side="right")) - i
            return k, (int(ends[i + k - 1]) - base if k > 0 else 0)
        return self.put_runs_locked(n, int(ends[-1]), fit, encode)

    def put_runs_locked(self, n: int, total: int, fit: Callable[[int, int], tuple[int, int]],
                        encode: Callable[..., object]) -> int:
        """:meth:`put_locked` of ``n`` messages of ``total`` bytes whose sizes the caller
        knows: ``fit(first, room)`` is ``(count, nbytes)``, the longest run from message
        ``first`` that fits in ``room`` bytes, and its size (``native.cl_values_fit`` for
        plain values). A run of ``POOL_MIN_BYTES`` or more (any run in ``write`` mode) is
        encoded into the transient store pool's buffer and committed with one ``pwrite``
        (RocketMQ's ``TransientStorePool``: a copy into fresh mapped pages costs their page
        faults, 1.0-1.4 GB/s here, against 2.3-4 GB/s for a ``pwrite`` from a warm buffer);
        a shorter one goes straight into the mapping."""
        if self._pending_undo is not None:  # a failed put could not clean up: finish first
            self._zero_failed_put(*self._pending_undo)
        files_before = len(self.files)
        first = self._file_for_append()
        first_start = first.wrote_position
        try:
            return self._put(first, n, fit, encode)
        except BaseException:
            written = total + fmt.END_FILE_MIN_BLANK_LENGTH
            self._undo_put(files_before, first, first_start, first_start + written)
            raise

    def _put(self, mf: MappedFile, n: int, fit, encode) -> int:
        size = self.file_size
        store_ts = max(time.time_ns() // 1_000_000, self.last_store_timestamp)
        pos = mf.wrote_position
        i = 0
        while i < n:
            # how many of the next messages fit before the blank room
            k, nbytes = fit(i, size - pos - fmt.END_FILE_MIN_BLANK_LENGTH)
            if k > 0:
                if (nbytes >= POOL_MIN_BYTES or mf.write_mode == "write") \
                        and nbytes <= POOL_MAX_BYTES:
                    # TransientStorePool: encode into the pooled buffer, commit with pwrite
                    buf = self._pool(nbytes)
                    _check_run(encode(mf.file_from_offset + pos, i, k, store_ts, buf, 0),
                               nbytes)
                    with memoryview(buf) as mv:
                        mf.pwrite_at(pos, mv[:nbytes])
                elif mf.write_mode == "mmap":  # straight into the mapping, no copy
                    mf.prepare_write(pos, nbytes)
                    _check_run(encode(mf.file_from_offset + pos, i, k, store_ts, mf.mm, pos),
                               nbytes)
                    if pos + nbytes > mf.wrote_position:
                        mf.wrote_position = pos + nbytes
                else:  # write mode, a run larger than the pool: a buffer of its own
                    buf = bytearray(nbytes)
                    _check_run(encode(mf.file_from_offset + pos, i, k, store_ts, buf, 0),
                               nbytes)
                    mf.pwrite_at(pos, buf)
                pos += nbytes
                i += k
                if i == n:
                    break
            elif pos == 0:  # the caller checked every size against the file size
                raise errors.RecordTooLargeError(
                    f"message {i} does not fit an empty CommitLog file of {size} bytes")
            # message i does not fit: the blank ends this file, the rest goes to the next
            mf.write_at(pos, fmt.BLANK.pack(size - pos, fmt.BLANK_MAGIC))
            mf.wrote_position = size
            mf = self._roll()
            pos = 0
        self.last_store_timestamp = store_ts
        self.max_offset = mf.file_from_offset + mf.wrote_position
        return store_ts

    def put_one_locked(self, size: int, topic: bytes, body: bytes, uniq_prefix: bytes,
                       uniq_number: int, queue_id: int, queue_offset: int) -> int:
        """The single ``append()`` of a plain value (caller holds ``put_lock``): when it fits
        the current file's reserved and faulted-in pages, one ``native.cl_encode_one_into``
        straight into the mapping and the positions moved, nothing else; otherwise (a new
        file or chunk, write mode, a failed put to clean up) :meth:`put_locked`. The same
        bytes either way; returns the store timestamp."""
        files = self.files
        if files and self._pending_undo is None:
            mf = files[-1]
            pos = mf.wrote_position
            end = pos + size
            reserved = mf.reserved_end
            if end + fmt.END_FILE_MIN_BLANK_LENGTH <= self.file_size and end <= mf._populated \
                    and reserved is not None and end + mf.read_margin <= reserved \
                    and mf.write_mode == "mmap":
                ts = time.time_ns() // 1_000_000
                if ts < self.last_store_timestamp:
                    ts = self.last_store_timestamp
                try:
                    native.cl_encode_one_into(mf.mm, pos, topic, body, uniq_prefix,
                                              uniq_number, queue_id, queue_offset,
                                              mf.file_from_offset + pos, ts)
                except BaseException:
                    mf.zero_range(pos, end)  # reserved pages: needs no space
                    raise
                mf.wrote_position = end
                self.last_store_timestamp = ts
                self.max_offset = mf.file_from_offset + end
                return ts
        return self.put_locked((size,), lambda phys, _i, _n, ts, out, at: (
            native.cl_encode_one_into(out, at, topic, body, uniq_prefix, uniq_number,
                                      queue_id, queue_offset, phys, ts)))

    def _pool(self, nbytes: int) -> bytearray:
        """The transient store buffer, at least ``nbytes`` long (caller holds ``put_lock``).
        One buffer, kept and reused: its pages are faulted in once (bytearray zeroes them),
        not on every append as a fresh buffer's would be."""
        buf = self._pool_buf
        if len(buf) < nbytes:
            buf = self._pool_buf = bytearray(-(-nbytes // POOL_GROW) * POOL_GROW)
        return buf

    def _undo_put(self, files_before: int, first: MappedFile, first_start: int,
                  first_end: int) -> None:
        """Roll back a failed :meth:`put_locked` (see there). An error while zeroing is
        kept for the next put (which retries before writing anything) so that the caller
        sees the original error."""
        with self._files_lock:
            created = self.files[files_before:]
            self.files = self.files[:files_before]
        for mf in created:  # nothing reads them: max_offset never moved into them
            self._dir_dirty = True
            try:
                mf.destroy(unmap=False)
            except OSError:
                pass
        if first in created:
            return
        first.wrote_position = min(first.wrote_position, first_start)
        try:
            self._zero_failed_put(first, first_start, first_end)
        except Exception:  # noqa: BLE001 - keep the error that made the put fail
            self._pending_undo = (first, first_start, first_end)

    def _zero_failed_put(self, mf: MappedFile, start: int, end: int) -> None:
        """Zero what a failed put left in ``mf`` and sync it: the zeros must reach the disk
        before anything written after them."""
        mf.zero_range(start, end)
        mf.force()
        self._pending_undo = None

    def _file_for_append(self) -> MappedFile:
        if not self.files:
            return self._roll()
        mf = self.files[-1]
        if mf.wrote_position + fmt.END_FILE_MIN_BLANK_LENGTH > self.file_size:
            return self._roll()
        return mf

    def _roll(self) -> MappedFile:
        """Create the next file. The previous new file's directory entry is made durable
        first if no flush did it yet: a power loss may lose the newest file, never one
        before a file that survives (a hole recovery could only refuse)."""
        start = self.files[-1].file_end_offset if self.files else self.max_offset
        if self._dir_dirty:
            with self._flush_lock:  # a flush may be syncing it right now: wait for it
                if self._dir_dirty:
                    self._dir_dirty = False
                    fsync_dir(self.dir)
                    self.fsyncs += 1
        mf = MappedFile(os.path.join(self.dir, file_name(start)), self.file_size,
                        write_mode=self.write_mode, create=True)
        with self._files_lock:
            self.files.append(mf)
        self._dir_dirty = True
        return mf

    # ----- flush -----
    def flush(self) -> int:
        """Make everything appended so far durable; return the number of syncs issued.

        Serialised (``_flush_lock``): the group-commit leader, the periodic flusher and an
        explicit ``flush()`` may call it at once, and none may move ``flushed_offset`` past
        a new file whose directory entry another one is still syncing."""
        with self._flush_lock:
            ts = self.last_store_timestamp
            target = self.max_offset
            syncs = 0
            with self._files_lock:
                files = [mf for mf in self.files if mf.file_end_offset > self.flushed_offset]
            for mf in files:
                if mf.flush():
                    syncs += 1
            if self._dir_dirty:
                self._dir_dirty = False
                fsync_dir(self.dir)
                syncs += 1
            if target > self.flushed_offset:
                self.flushed_offset = target
                self.flushed_store_timestamp = ts
            self.fsyncs += syncs
            return syncs

    def dirty(self) -> bool:
        """True if bytes were appended since the last flush."""
        return self.max_offset > self.flushed_offset or self._dir_dirty

    # ----- reads -----
    @property
    def min_offset(self) -> int:
        """The first offset still stored (the first file's start)."""
        files = self.files
        return files[0].file_from_offset if files else self.max_offset

    def find_file(self, offset: int) -> MappedFile | None:
        """The file holding ``offset``, or None (deleted by retention, or not yet created)."""
        files = self.files
        if files:
            idx = (offset - files[0].file_from_offset) // self.file_size
            if 0 <= idx < len(files):
                return files[idx]
        if self.read_only and (not files or idx >= len(files)):
            self.refresh()
            files = self.files
            if files:
                idx = (offset - files[0].file_from_offset) // self.file_size
                if 0 <= idx < len(files):
                    return files[idx]
        return None

    def refresh(self) -> None:
        """Read-only follower: map files the writer created, forget the ones it deleted."""
        if not os.path.isdir(self.dir):
            return
        names = sorted(n for n in os.listdir(self.dir) if parse_file_name(n) is not None)
        known = {os.path.basename(mf.path): mf for mf in self.files}
        files: list[MappedFile] = []
        for name in names:
            mf = known.pop(name, None)
            if mf is None:
                path = os.path.join(self.dir, name)
                try:
                    if os.path.getsize(path) != self.file_size:
                        break  # being created right now
                    mf = MappedFile(path, self.file_size, read_only=True)
                except FileNotFoundError:
                    continue
            if files and mf.file_from_offset != files[-1].file_end_offset:
                break
            files.append(mf)
        for gone in known.values():
            gone.release()  # a reader may still be using its mapping
        with self._files_lock:
            self.files = files

    # ----- retention -----
    def sealed_timestamp(self, index: int) -> int:
        """When file ``index`` was sealed: the store timestamp of the next file's first
        message (>= this file's last one), or the file's mtime if there is none."""
        if index + 1 < len(self.files):
            ts = self._first_store_timestamp(self.files[index + 1])
            if ts > 0:
                return ts
        return int(os.stat(self.files[index].path).st_mtime * 1000)

    @staticmethod
    def _first_store_timestamp(mf: MappedFile) -> int:
        size, magic = fmt.TOTALSIZE_AND_MAGIC.unpack_from(mf.mm, 0)
        if magic != fmt.MESSAGE_MAGIC_V1 or size < fmt.MSG_FIXED_OVERHEAD:
            return 0
        return fmt.STORETIMESTAMP.unpack_from(mf.mm, fmt.POS_STORETIMESTAMP)[0]

    def delete_expired_files(self, now_ms: int, reserved_ms: int, retention_bytes: int,
                             limit_offset: int) -> int:
        """Delete files oldest first while they are older than ``reserved_ms`` (when > 0) or
        the log is larger than ``retention_bytes`` (when > 0). Never the last file, never a
        file not fully dispatched (end > ``limit_offset``), and stop at the first file that
        is kept, so no hole appears. Returns the bytes deleted. Caller holds ``put_lock``."""
        deleted = 0
        total = len(self.files) * self.file_size
        while len(self.files) > 1:
            mf = self.files[0]
            if mf.file_end_offset > limit_offset:
                break
            expired = reserved_ms > 0 and self.sealed_timestamp(0) + reserved_ms <= now_ms
            too_big = retention_bytes > 0 and total > retention_bytes
            if not (expired or too_big):
                break
            with self._files_lock:
                self.files = self.files[1:]
            deleted += mf.destroy(unmap=False)
            total -= self.file_size
            self._dir_dirty = True
        return deleted

    # ----- accounting -----
    def allocated_bytes(self) -> int:
        """Bytes on disk (the files are sparse)."""
        return sum(mf.allocated_bytes() for mf in list(self.files))

    def close(self) -> None:
        """Unmap every file (after zeroing what a failed put left, if that failed too)."""
        if self._pending_undo is not None:
            try:
                self._zero_failed_put(*self._pending_undo)
            except Exception:  # noqa: BLE001 - recovery cuts it (no sync point covers it)
                pass
        for mf in self.files:
            mf.close()
