"""One segment of a partition log (Kafka's ``LogSegment``): ``<base>.log`` plus its
``.index`` and ``.timeindex``.

``.log`` holds RecordBatch v2 batches back to back, exactly as appended; the segment is named
by its base offset (20 digits), a lower bound on the offsets it holds. ``size`` is the number
of bytes that hold whole, valid batches: readers never look past it, so a batch being written
(or torn by a crash) is invisible. Index entries follow Kafka's cadence: before a batch is
indexed, more than ``index_interval_bytes`` must have been written since the last indexed
batch (the first batch is never indexed); time entries are added with them only when the
largest timestamp grew.

A full disk: a failed append is cut back off the log (``ftruncate`` to the size before it) and
raises ``StoreFullError``; if even the cut fails, ``dirty_tail`` is set, the next append cuts
first, and the store does not mark its shutdown clean, so the next open drops the partial
batch as a torn tail (it lies past the acknowledged end). Index writes that meet a full disk
drop the indexes (see ``AbstractIndex``) instead of failing the append.

Not thread-safe for writers (the partition holds a lock around ``append``, ``roll`` and
``rebuild``); reads use ``pread`` on the file and only need a consistent ``size``. Header
walks are ``batch_walk.BatchWalk`` (re-exported here).
"""
from __future__ import annotations

import errno
import logging
import os
import zlib

from mqstore import errors, native
from mqstore.damage import full_error, is_full, translate_full
from mqstore.engines.segments import format as fmt
from mqstore.engines.segments.batch_walk import HEADER_READ, WALK_CHUNK, BatchWalk
from mqstore.engines.segments.log_scan import LogScan, scan_log
from mqstore.engines.segments.offset_index import OffsetIndex
from mqstore.engines.segments.record_batch import (
    batch_crc_problem,
    empty_batch,
    iter_records,
    read_header,
)
from mqstore.engines.segments.time_index import TimeIndex

logger = logging.getLogger("mqstore")

RECOVER_CHUNK = 8 * 1024 * 1024

_unpack_offsets = fmt.BATCH_OFFSETS.unpack_from
_unpack_max_ts = fmt.MAX_TIMESTAMP.unpack_from


def filename_prefix(base_offset: int) -> str:
    """Kafka's file name for a base offset: 20 digits, zero-padded."""
    return f"{base_offset:0{fmt.FILENAME_DIGITS}d}"


class LogSegment:
    """A ``.log`` with its offset and time indexes (see the module docstring)."""

    def __init__(self, directory: str, base_offset: int, *, index_interval_bytes: int,
                 max_index_size: int, writable: bool):
        self.directory = directory
        self.base_offset = base_offset
        prefix = os.path.join(directory, filename_prefix(base_offset))
        self.log_path = prefix + fmt.LOG_SUFFIX
        self.index_path = prefix + fmt.INDEX_SUFFIX
        self.time_index_path = prefix + fmt.TIME_INDEX_SUFFIX
        self.writable = writable
        self.index_interval_bytes = index_interval_bytes
        self.indexes_were_missing = not (os.path.exists(self.index_path)
                                         and os.path.exists(self.time_index_path))
        flags = os.O_RDWR | os.O_CREAT if writable else os.O_RDONLY
        self.fd = os.open(self.log_path, flags, 0o644)
        self.file_size = os.fstat(self.fd).st_size
        self.size = self.file_size
        self.offset_index = OffsetIndex(self.index_path, base_offset, max_index_size,
                                        writable=writable)
        self.time_index = TimeIndex(self.time_index_path, base_offset, max_index_size,
                                    writable=writable)
        if not writable:  # a live writer adds index entries after their batch: size them now
            self.file_size = self.size = os.fstat(self.fd).st_size
        self.max_timestamp_so_far = fmt.NO_TIMESTAMP
        self.offset_of_max_timestamp = -1
        self.rolling_based_timestamp: int | None = None
        self.next_offset = base_offset
        self._last_indexed_pos = 0
        self.closed = False
        self.inactive = False
        self.tail_incomplete = False
        self.dirty_tail = False  # a failed append could not be cut back off the file

    # ----- loading -----
    def load(self) -> str | None:
        """Trust the indexes, find the end: walk batch headers from the last offset-index
        entry to the end of the file. Returns why the segment needs a full :meth:`scan`
        (missing or inconsistent index, a first batch that does not start at the segment's
        base offset, a tail that is not a whole batch), or None."""
        self.tail_incomplete = False
        if self.indexes_were_missing and self.file_size and self.writable:
            return "index files missing"  # (a follower reads them as empty: they are hints)
        if self.writable and self.file_size >= fmt.RECORD_BATCH_OVERHEAD:
            first = fmt.BASE_OFFSET_AND_LENGTH.unpack_from(os.pread(self.fd, 12, 0), 0)[0]
            if first != self.base_offset:  # baseOffset is not covered by the CRC
                self.tail_incomplete = True  # log damage, not an index problem
                return f"first batch has baseOffset {first}, not the segment's {self.base_offset}"
        problem = (self.offset_index.length_problem() or self.time_index.length_problem()
                   or self.offset_index.sanity_problem(self.file_size))
        if problem:
            return problem
        last = self.time_index.last_entry()
        if last is not None:
            self.max_timestamp_so_far = last[0]
            self.offset_of_max_timestamp = self.base_offset + last[1]
        self._last_indexed_pos = self.offset_index.last_position()
        start = self._last_indexed_pos
        if start and self.file_size >= fmt.RECORD_BATCH_OVERHEAD:  # roll by age needs batch 0
            self.rolling_based_timestamp = _unpack_max_ts(
                os.pread(self.fd, 8, fmt.MAX_TIMESTAMP_POS), 0)[0]
        self.size = start
        self.next_offset = self.offset_index.last_offset() + 1 if self.offset_index.entries \
            else self.base_offset
        walk = self.advance(self.file_size)
        if self.offset_index.entries and self.next_offset <= self.offset_index.last_offset():
            return "offset index entry past the end of the log"
        problem = self.time_index.sanity_problem(self.next_offset - 1)
        if problem:
            return problem
        if walk.stop_reason is not None or self.size != self.file_size:
            self.tail_incomplete = True  # a crash, or (for a follower) a batch being written
            return f"log ends with a partial or bad batch at position {walk.stop_position}"
        return None

    def load_read_only(self) -> None:
        """Follower: :meth:`load`, and if the indexes cannot be trusted, ignore them (walk
        batch headers from the start; lookups then scan from position 0)."""
        if self.load() is None or self.tail_incomplete:
            return
        for index in (self.offset_index, self.time_index):
            index.entries = 0
            index.sealed = True
        self.size, self.next_offset, self._last_indexed_pos = 0, self.base_offset, 0
        self.max_timestamp_so_far, self.offset_of_max_timestamp = fmt.NO_TIMESTAMP, -1
        self.advance(self.file_size)

    def advance(self, file_size: int) -> BatchWalk:
        """Extend ``size`` over the whole batches between ``size`` and ``file_size`` (loading,
        and a read-only follower catching up with the writer)."""
        walk = BatchWalk(self.fd, self.size, file_size, headers_only=True)
        for pos, size, _base, last, chunk, off in walk:
            ts = _unpack_max_ts(chunk, off + fmt.MAX_TIMESTAMP_POS)[0]
            if ts > self.max_timestamp_so_far:
                self.max_timestamp_so_far, self.offset_of_max_timestamp = ts, last
            if self.rolling_based_timestamp is None and pos == 0:
                self.rolling_based_timestamp = ts
            self.size = pos + size
            self.next_offset = last + 1
        return walk

    def scan(self) -> LogScan:
        """Validate every batch of the ``.log`` (size, magic, CRC-32C, the offset chain) and
        find every damaged range (``log_scan.scan_log``, shared with ``verify_files``). Only
        reads. A log in the pre-0.11 formats is refused (UnsupportedOperation), untouched."""
        if self._is_legacy_message_set():
            head = os.pread(self.fd, 17, 0)
            raise errors.UnsupportedOperation(
                f"{self.log_path} holds Kafka message format v{head[16]} (magic {head[16]}); "
                "mqstore reads RecordBatch v2 only (as Kafka 4.0 does); the file was left untouched")
        return scan_log(self.fd, self.base_offset)

    def rebuild(self, rows: list[tuple[int, int, int, int, int]], cut: int) -> int:
        """Keep the batches ``rows`` (``(position, size, base, last, max_ts)``, back to back
        from position 0 up to ``cut``), cut the ``.log`` at ``cut`` and rebuild both indexes
        from them (Kafka's ``LogSegment.recover``). Returns the bytes truncated."""
        self.offset_index.reset()
        self.time_index.reset()
        self.max_timestamp_so_far, self.offset_of_max_timestamp = fmt.NO_TIMESTAMP, -1
        self.rolling_based_timestamp = None
        self._last_indexed_pos = 0
        next_offset = self.base_offset
        for pos, _size, _base, last, max_ts in rows:
            self._index_batch(pos, last, max_ts)
            next_offset = last + 1
        file_size = os.fstat(self.fd).st_size
        if cut < file_size:
            os.ftruncate(self.fd, cut)
        self.file_size = self.size = cut
        self.next_offset = next_offset
        self.tail_incomplete = self.dirty_tail = False
        return max(file_size - cut, 0)

    def fill_with_empty_batch(self, start: int, end: int, first_offset: int, last_offset: int,
                              timestamp: int) -> tuple[int, int, int, int, int]:
        """Overwrite the damaged bytes ``[start, end)`` with one empty batch covering offsets
        ``[first_offset, last_offset]`` (``on_corruption="skip"``); returns its row."""
        data = empty_batch(first_offset, last_offset, timestamp, end - start)
        with translate_full(f"repairing {self.log_path}"):
            os.pwrite(self.fd, data, start)
            os.fsync(self.fd)  # a repair below the sync point must stay repaired
        return start, end - start, first_offset, last_offset, timestamp

    def append_empty_batch(self, first_offset: int, last_offset: int) -> None:
        """Append an empty batch covering ``[first_offset, last_offset]`` (offsets a skipped
        damage lost at the end of this segment, before the next one starts)."""
        ts = max(self.max_timestamp_so_far, fmt.NO_TIMESTAMP)
        data = empty_batch(first_offset, last_offset, ts)
        self.append([data], len(data), last_offset, ts)
        self.flush()

    def _is_legacy_message_set(self) -> bool:
        """True if the log starts with a valid magic 0/1 message (CRC-32 checked, so zero
        fill or garbage left by a crash is not mistaken for one)."""
        head = os.pread(self.fd, 17, 0)
        if len(head) < 17 or head[16] not in (0, 1):
            return False
        size = int.from_bytes(head[8:12], "big", signed=True)
        if size < 14:
            return False
        msg = os.pread(self.fd, size, 12)
        return len(msg) == size and zlib.crc32(msg[4:]) == int.from_bytes(msg[:4], "big")

    # ----- writes (under the partition lock) -----
    def _index_batch(self, position: int, last_offset: int, max_timestamp: int) -> None:
        if max_timestamp > self.max_timestamp_so_far:
            self.max_timestamp_so_far = max_timestamp
            self.offset_of_max_timestamp = last_offset
        if self.rolling_based_timestamp is None:
            self.rolling_based_timestamp = max_timestamp
        if position - self._last_indexed_pos > self.index_interval_bytes:
            try:
                self.offset_index.append(last_offset, position)
                self.time_index.maybe_append(self.max_timestamp_so_far,
                                             self.offset_of_max_timestamp)
            except OSError as exc:
                self._drop_indexes(exc)
            self._last_indexed_pos = position

    def _drop_indexes(self, exc: OSError) -> None:
        """An index write met a full disk: give both indexes up (they are hints; the next
        open rebuilds them from the log) rather than fail the append or the open."""
        if not is_full(exc):
            raise exc
        if not self.offset_index.dropped:
            logger.warning("%s: %s; dropping the indexes of this segment (rebuilt from the "
                           "log at the next open)", self.log_path, exc)
        self.offset_index.drop()
        self.time_index.drop()

    def append(self, parts: list[bytes], size: int, last_offset: int, max_timestamp: int) -> None:
        """Write one batch (given as byte strings to concatenate) at the end of the log and
        index it. On a failed or short write the log is cut back: nothing half-written."""
        pos = self.size
        if self.dirty_tail:  # a failed append left bytes behind: cut them first
            self._cut_dirty_tail()
        try:  # (no context manager here: this is the hot path)
            n = os.pwritev(self.fd, parts, pos)
            if n < size:  # short write: finish it
                self._finish_write(pos, b"".join(parts), n)
        except BaseException as failed:
            self._failed_append(pos, failed)
        self._appended(pos, size, last_offset, max_timestamp)

    def append_buffer(self, data, last_offset: int, max_timestamp: int) -> None:
        """Write one whole batch ``data`` (bytes or a byte view, baseOffset and CRC filled
        in) at the end of the log and index it: one ``pwrite`` (the append paths of plain
        values). Failures as :meth:`append`: nothing half-written."""
        pos = self.size
        if self.dirty_tail:
            self._cut_dirty_tail()
        try:
            n = os.pwrite(self.fd, data, pos)
            if n < len(data):
                self._finish_write(pos, data, n)
        except BaseException as failed:
            self._failed_append(pos, failed)
        self._appended(pos, len(data), last_offset, max_timestamp)

    def append_unless_roll(self, data, last_offset: int, max_timestamp: int,
                           segment_bytes: int, segment_ms: int) -> bool:
        """:meth:`should_roll` for the whole batch ``data``, then, if this segment keeps it,
        :meth:`append_buffer`; returns False (nothing written) when the log must roll first.
        One call for the single-append hot path."""
        pos = self.size
        size = len(data)
        if pos:  # should_roll, inlined
            oi, ti, rbt = self.offset_index, self.time_index, self.rolling_based_timestamp
            if (pos + size > segment_bytes
                    or (rbt is not None and max_timestamp - rbt > segment_ms)
                    or oi.entries >= oi.max_entries
                    or ti.entries >= ti.max_entries - 1
                    or last_offset - self.base_offset > fmt.MAX_RELATIVE_OFFSET):
                return False
        if self.dirty_tail:
            self._cut_dirty_tail()
        try:
            n = os.pwrite(self.fd, data, pos)
            if n < size:
                self._finish_write(pos, data, n)
        except BaseException as failed:
            self._failed_append(pos, failed)
        self._appended(pos, size, last_offset, max_timestamp)
        return True

    def _finish_write(self, pos: int, data, n: int) -> None:
        """A ``pwrite`` of the batch ``data`` at ``pos`` wrote only ``n`` bytes: write the
        rest (the caller cuts the log back if this raises)."""
        size = len(data)
        while n < size:
            k = os.pwrite(self.fd, data[n:], pos + n)
            if k <= 0:
                raise OSError(errno.EIO, f"write of {size - n} bytes returned {k}")
            n += k

    def _appended(self, pos: int, size: int, last_offset: int, max_timestamp: int) -> None:
        """The batch of ``size`` bytes at ``pos`` is written: extend the log over it and index
        it on Kafka's cadence."""
        self.size = self.file_size = pos + size
        self.next_offset = last_offset + 1
        if max_timestamp > self.max_timestamp_so_far:
            self.max_timestamp_so_far = max_timestamp
            self.offset_of_max_timestamp = last_offset
        if pos - self._last_indexed_pos > self.index_interval_bytes or \
                self.rolling_based_timestamp is None:
            self._index_batch(pos, last_offset, max_timestamp)

    def _cut_dirty_tail(self) -> None:
        with translate_full(f"appending to {self.log_path}"):
            os.ftruncate(self.fd, self.size)
        self.dirty_tail = False

    def _failed_append(self, pos: int, failed: BaseException) -> None:
        """A write of the batch at ``pos`` failed (or was cut short): cut the log back to
        ``pos`` and raise (StoreFullError for a full disk). If even the cut fails,
        ``dirty_tail`` is set (the next append cuts first; the next open drops the tail)."""
        try:
            os.ftruncate(self.fd, pos)
        except OSError as exc:
            self.dirty_tail = True
            logger.warning("%s: could not cut a failed append back off at %d (%s); it is "
                           "past the acknowledged end and dropped at the next open",
                           self.log_path, pos, exc)
        if is_full(failed):
            raise full_error(failed, f"appending to {self.log_path}") from failed
        raise failed

    def should_roll(self, batch_size: int, max_timestamp: int, last_offset: int,
                    segment_bytes: int, segment_ms: int) -> bool:
        """Kafka's ``shouldRoll``: full by size, too old, an index full, or an offset that no
        longer fits a relative int32."""
        if self.size == 0:
            return False
        oi, ti = self.offset_index, self.time_index
        return (
            self.size + batch_size > segment_bytes
            or (self.rolling_based_timestamp is not None
                and max_timestamp - self.rolling_based_timestamp > segment_ms)
            or oi.entries >= oi.max_entries
            or ti.entries >= ti.max_entries - 1  # the time index keeps a slot for the final entry
            or last_offset - self.base_offset > fmt.MAX_RELATIVE_OFFSET
        )  # (append_unless_roll inlines the same test)

    def on_become_inactive(self) -> None:
        """On roll: write the final time-index entry and trim both indexes."""
        if self.writable and not self.inactive:
            self.inactive = True
            try:
                self.time_index.maybe_append(self.max_timestamp_so_far,
                                             self.offset_of_max_timestamp, final=True)
            except OSError as exc:
                self._drop_indexes(exc)
            try:
                self.offset_index.trim()
                self.time_index.trim()
            except OSError as exc:  # a hint: the next open checks and rebuilds it
                logger.warning("%s: could not trim the indexes (%s)", self.log_path, exc)

    def flush(self) -> int:
        """fsync the log; returns the number of fsyncs made.

        The indexes are not synced (Kafka msyncs them): they carry nothing the log does not,
        and every open checks each segment's indexes against its log (entries increasing,
        positions inside the log, a zero-filled or torn tail) and rebuilds the ones that do not
        match, so index pages lost in a crash cost a rebuild, never data.
        """
        with translate_full(f"syncing {self.log_path}"):
            if self.dirty_tail:
                os.ftruncate(self.fd, self.size)
                self.dirty_tail = False
            os.fsync(self.fd)
        return 1

    def check_batch(self, batch, position: int) -> None:
        """Raise CorruptRecordError (this file, ``position``) if one whole batch read back
        fails its CRC-32C (the read path's ``check_crcs``)."""
        problem = batch_crc_problem(batch)
        if problem:
            raise errors.CorruptRecordError(f"{problem} in the batch at position {position}",
                                            self.log_path, position)

    # ----- reads -----
    def translate_offset(self, target: int) -> tuple[int, int, int, int] | None:
        """``(position, size, base_offset, last_offset)`` of the first batch whose last offset
        >= ``target``, or None if this segment has none (index floor, then header walk).

        The offsets of a segment chain exactly (a skipped range is an empty batch), so that
        batch must hold ``target``: one that starts past it has a damaged baseOffset (not
        covered by the CRC), or its predecessor has, and is CorruptRecordError."""
        found = self._first_batch_ending_at_or_after(target)
        if found is not None and found[2] > target >= self.base_offset:
            raise errors.CorruptRecordError(
                f"the batch holding offset {target} starts at baseOffset {found[2]}: the "
                "offset chain is broken (a damaged baseOffset)", self.log_path, found[0])
        return found

    def _first_batch_ending_at_or_after(self, target: int) -> tuple[int, int, int, int] | None:
        idx_offset, pos = self.offset_index.lookup(target)
        end = self.size
        if pos >= end:
            pos = 0
        # fast path: one pread from the index floor (the target is within one index
        # interval and a batch of it) and the native header scan
        first = min(WALK_CHUNK, self.index_interval_bytes + 2 * HEADER_READ)
        chunk = os.pread(self.fd, min(first, end - pos), pos)
        found = native.find_batch(chunk, 0, len(chunk), target)
        if found >= 0:
            base, length, _e, magic, _c, _a, lod = _unpack_offsets(chunk, found)
            if magic == fmt.MAGIC:
                return pos + found, length + fmt.LOG_OVERHEAD, base, base + lod
        elif len(chunk) >= fmt.RECORD_BATCH_OVERHEAD:  # a large batch at the floor holds it?
            base, length, _e, magic, _c, _a, lod = _unpack_offsets(chunk, 0)
            size = length + fmt.LOG_OVERHEAD
            if (magic == fmt.MAGIC and lod >= 0 and base + lod >= target
                    and len(chunk) < size <= end - pos):
                return pos, size, base, base + lod
        # the target lies beyond this chunk (or the chunk cut a batch): walk on
        walk = BatchWalk(self.fd, pos, end, HEADER_READ, headers_only=True)
        for bpos, size, base, last, _chunk, _off in walk:
            if last >= target:
                return bpos, size, base, last
        if walk.stop_reason == "corrupt" and pos:  # a stale entry (follower race): start over
            walk = BatchWalk(self.fd, 0, self.size, headers_only=True)
            for bpos, size, base, last, _chunk, _off in walk:
                if last >= target:
                    return bpos, size, base, last
        if target < self.next_offset:
            # the segment holds the offset, yet no batch does: a damaged header (a
            # batchLength sending the walk into a batch, or past the end) stopped the walk
            raise errors.CorruptRecordError(
                f"no batch holds offset {target} below the segment's end offset "
                f"{self.next_offset}: the header walk stopped ({walk.stop_reason or 'end'})",
                self.log_path, walk.stop_position)
        return None

    def transfer_span(self, pos: int, size: int, last: int, max_bytes: int,
                      end_offset: int) -> tuple[int, int]:
        """``(bytes, next_offset)`` of the whole batches one transfer sends from ``pos``,
        where the batch of ``size`` bytes ending at offset ``last`` starts: that batch
        always, then as many as fit ``max_bytes``, none with baseOffset >= ``end_offset``.

        Only batch headers are read (no CRC: a transfer sends the bytes on disk, as
        Kafka's ``FileRecords.slice``): the sparse index jumps to the furthest indexed batch
        that starts inside the limit, and the few batches after it are found with one
        pread and the native header walk (``native.batch_span``; a header-only walk when
        they are large)."""
        limit = min(pos + max_bytes, self.size)
        stop, next_offset = pos + size, last + 1
        if stop >= limit:
            return size, next_offset
        start = stop
        jump = self.offset_index.furthest_position(
            last, limit, end_offset, max(self.index_interval_bytes + 1,
                                         fmt.RECORD_BATCH_OVERHEAD))
        jumped = jump is not None and jump > start
        if jumped:
            start = stop = jump  # every batch before the indexed one is whole and acked
        if limit - start <= WALK_CHUNK:
            chunk = os.pread(self.fd, limit - start, start)
            n, end_pos, after = native.batch_span(chunk, 0, len(chunk), end_offset)
            if n:
                stop, next_offset = start + end_pos, after
            elif jumped:  # the indexed batch itself does not fit: send up to it
                head = chunk[:8] if len(chunk) >= 8 else os.pread(self.fd, 8, jump)
                if len(head) < 8:
                    return size, last + 1
                next_offset = int.from_bytes(head, "big", signed=True)
        else:
            if jumped:
                head = os.pread(self.fd, 8, jump)
                if len(head) < 8:
                    return size, last + 1
                next_offset = int.from_bytes(head, "big", signed=True)
            for bpos, bsize, base, blast, _c, _o in BatchWalk(self.fd, start, limit,
                                                               HEADER_READ,
                                                               headers_only=True):
                if base >= end_offset:
                    break
                stop, next_offset = bpos + bsize, blast + 1
        return stop - pos, next_offset

    def largest_timestamp(self) -> int:
        """The largest record timestamp in the segment (-1 if it holds none)."""
        if self.max_timestamp_so_far < 0 and self.size:  # e.g. loaded without a time index
            for _pos, _size, _base, last, chunk, off in BatchWalk(self.fd, 0, self.size,
                                                                  headers_only=True):
                ts = _unpack_max_ts(chunk, off + fmt.MAX_TIMESTAMP_POS)[0]
                if ts > self.max_timestamp_so_far:
                    self.max_timestamp_so_far, self.offset_of_max_timestamp = ts, last
        return self.max_timestamp_so_far

    def find_offset_by_timestamp(self, timestamp: int, start_offset: int, *,
                                 check_crcs: bool = True) -> int | None:
        """The first offset >= ``start_offset`` whose record timestamp >= ``timestamp``
        (time index floor, offset index floor, then batches)."""
        below = self.time_index.lookup_below(timestamp)
        first = max(start_offset, below[1] + 1 if below else self.base_offset)
        found = self.translate_offset(first)
        if found is None:
            return None
        expect = found[2]  # the offset chain (baseOffset is not covered by the CRC)
        for pos, size, base, last, chunk, off in BatchWalk(self.fd, found[0], self.size):
            if base != expect:
                raise errors.CorruptRecordError(
                    f"batch has baseOffset {base} where {expect} was expected",
                    self.log_path, pos)
            expect = last + 1
            if _unpack_max_ts(chunk, off + fmt.MAX_TIMESTAMP_POS)[0] < timestamp:
                continue
            batch = chunk[off:off + size]
            if check_crcs:
                self.check_batch(batch, pos)
            for rec in iter_records(batch, read_header(batch)):
                if rec.offset >= first and rec.timestamp_ms >= timestamp:
                    return rec.offset
        return None

    # ----- lifecycle -----
    def close(self) -> None:
        """Trim the indexes (writable) and close every file. Idempotent."""
        if self.closed:
            return
        self.closed = True
        self.on_become_inactive()
        self.offset_index.close()
        self.time_index.close()
        os.close(self.fd)

    def close_handles(self) -> None:
        """Close without trimming (files already deleted)."""
        if self.closed:
            return
        self.closed = True
        self.offset_index.close()
        self.time_index.close()
        os.close(self.fd)

    def delete_files(self) -> int:
        """Unlink the segment's files (handles stay open until :meth:`close_handles`, so
        concurrent readers finish safely); returns the bytes freed (apparent sizes)."""
        freed = 0
        prefix = self.log_path[: -len(fmt.LOG_SUFFIX)]
        for suffix in (fmt.LOG_SUFFIX, fmt.INDEX_SUFFIX, fmt.TIME_INDEX_SUFFIX,
                       fmt.TXN_INDEX_SUFFIX):
            try:
                freed += os.stat(prefix + suffix).st_size if suffix == fmt.LOG_SUFFIX else 0
                os.unlink(prefix + suffix)
            except FileNotFoundError:
                pass
        return freed

    def __repr__(self) -> str:
        return f"<LogSegment {self.log_path} size={self.size} next={self.next_offset}>"

