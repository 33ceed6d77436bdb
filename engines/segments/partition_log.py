"""One topic-partition (Kafka's ``UnifiedLog`` / ``LocalLog``): a directory
``<topic>-<partition>/`` of segments, the log start and end offsets, the recovery point.

Writes (append, roll, retention, recovery) hold ``lock``; reads take a snapshot of the segment
list (replaced, never mutated in place) and the segment sizes, so they run concurrently with
appends and never see a batch that is still being written. A read-only follower (another
process) calls :meth:`refresh` before each read: it re-checks the active file's size and looks
for the segment the writer rolled to next, so it follows a live writer.
"""
from __future__ import annotations

import bisect
import os
import select
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from mqstore import errors, native
from mqstore.damage import RecoveryLog, translate_full
from mqstore.engines.segments import format as fmt
from mqstore.engines.segments.log_loader import LogLoader
from mqstore.engines.segments.record_batch import (
    BatchBody,
    batch_prefix,
    iter_records,
    read_header,
    value_batch,
    values_batch,
)
from mqstore.engines.segments.log_read import read_records
from mqstore.engines.segments.segment import BatchWalk, LogSegment, filename_prefix
from mqstore.records import Records
from mqstore.storedir import fsync_dir

_unpack_max_ts = fmt.MAX_TIMESTAMP.unpack_from


@dataclass(frozen=True)
class LogConfig:
    """The per-log options (Kafka's topic config names, snake_cased)."""

    segment_bytes: int
    segment_ms: int
    index_interval_bytes: int
    segment_index_bytes: int
    retention_ms: int
    retention_bytes: int
    #: the store's common options that recovery and reads follow (``StoreConfig``)
    on_corruption: str = "raise"
    check_crcs: bool = True

    @classmethod
    def from_options(cls, o) -> "LogConfig":
        """Check the engine options' ranges (ConfigError naming the option)."""
        checks = [
            ("segment_bytes", fmt.RECORD_BATCH_OVERHEAD, fmt.MAX_SEGMENT_POSITION),
            ("segment_ms", 1, None),
            ("index_interval_bytes", 0, None),
            ("segment_index_bytes", 2 * fmt.TIME_INDEX_ENTRY_SIZE, 2**31 - 1),
            ("retention_ms", -1, None),
            ("retention_bytes", -1, None),
        ]
        for name, lo, hi in checks:
            v = o[name]
            if v < lo or (hi is not None and v > hi):
                raise errors.ConfigError(
                    f"{name}={v} is out of range (minimum {lo}" + (f", maximum {hi})" if hi else ")"))
        return cls(o["segment_bytes"], o["segment_ms"], o["index_interval_bytes"],
                   o["segment_index_bytes"], o["retention_ms"], o["retention_bytes"])


def parse_log_dir_name(name: str) -> tuple[str, int] | None:
    """``"orders-3"`` -> ``("orders", 3)``: the partition follows the **last** ``-``."""
    topic, sep, part = name.rpartition("-")
    if not sep or not topic or not part.isdigit() or (part != "0" and part.startswith("0")):
        return None
    return topic, int(part)


class PartitionLog:
    """The segments of one partition (see the module docstring for thread-safety)."""

    def __init__(self, root: str, topic: str, partition: int, config: LogConfig, *,
                 writable: bool, recovery: RecoveryLog | None = None):
        self.topic = topic
        self.partition = partition
        self.dir = os.path.join(root, f"{topic}-{partition}")
        self.config = config
        self.writable = writable
        self.lock = threading.Lock()
        self._flush_lock = threading.Lock()
        self.segments: list[LogSegment] = []
        self.bases: list[int] = []
        self.next_offset = 0
        self.log_start_offset = 0
        self.recovery_point = 0
        self.appended_records = 0
        self.appended_bytes = 0
        self.fsyncs = 0
        self.recovered_bytes = 0
        self.recovery = recovery if recovery is not None else RecoveryLog()
        self._unflushed: list[LogSegment] = []
        self._graveyard: list[LogSegment] = []
        self.orphan_index_files: list[str] = []  # index files whose .log is gone (load)

    # ----- opening -----
    def _open_segment(self, base: int) -> LogSegment:
        c = self.config
        return LogSegment(self.dir, base, index_interval_bytes=c.index_interval_bytes,
                          max_index_size=c.segment_index_bytes, writable=self.writable)

    def _list_bases(self) -> list[int]:
        bases = []
        try:
            names = os.listdir(self.dir)
        except FileNotFoundError:
            return []
        for name in names:
            stem, dot, suffix = name.partition(".")
            if not stem.isdigit():
                if self.writable and name.endswith(".tmp"):
                    os.unlink(os.path.join(self.dir, name))
                continue
            if "." + suffix == fmt.LOG_SUFFIX:
                bases.append(int(stem))
            elif self.writable and ("." + suffix).endswith((fmt.DELETED_SUFFIX, fmt.CLEANED_SUFFIX)):
                os.unlink(os.path.join(self.dir, name))
        # index files without a .log: evidence of a lost segment for the loader, deleted
        # once the load has succeeded (a refused open changes nothing)
        have = set(bases)
        orphans = []
        for name in names:
            stem, _, suffix = name.partition(".")
            if stem.isdigit() and int(stem) not in have and "." + suffix in (
                    fmt.INDEX_SUFFIX, fmt.TIME_INDEX_SUFFIX, fmt.TXN_INDEX_SUFFIX):
                orphans.append(name)
        self.orphan_index_files = sorted(orphans)
        return sorted(bases)

    def _delete_orphan_index_files(self) -> None:
        if self.writable:
            for name in self.orphan_index_files:
                os.unlink(os.path.join(self.dir, name))
        self.orphan_index_files = []

    def create(self) -> None:
        """Make the directory and an empty first segment (a new partition)."""
        os.makedirs(self.dir, exist_ok=True)
        self.load(clean=True, new=True)
        fsync_dir(self.dir)

    def load(self, *, clean: bool, recovery_point: int = 0, log_start_offset: int | None = 0,
             scan_all: bool = False, new: bool = False) -> None:
        """Open the segments and recover them (``log_loader.LogLoader``); ``scan_all``
        validates every segment (the recovery-point checkpoint was unreadable). A
        ``log_start_offset`` from the checkpoint (None: no entry) below the first segment
        means segments are missing at the head."""
        self.recovery_point = recovery_point
        log_start_offset = log_start_offset or 0
        loader = LogLoader(self, clean, recovery_point, log_start_offset, scan_all)
        bases = self._list_bases()
        if not bases:
            if not self.writable:
                self._set_segments([])
                return
            if not new:
                loader.on_no_segments(log_start_offset)
            os.makedirs(self.dir, exist_ok=True)
            bases = [log_start_offset]
        segs = []
        try:
            for b in bases:
                segs.append(self._open_segment(b))
            self._load_segments(segs, loader, log_start_offset)
        except BaseException:
            for seg in segs:
                seg.close_handles()
            raise
        self._delete_orphan_index_files()

    def _load_segments(self, segs: list[LogSegment], loader: LogLoader,
                       log_start_offset: int) -> None:
        if self.writable:
            segs, log_start_offset = loader.recover(segs, log_start_offset)
            self.recovered_bytes += loader.recovered_bytes
            for s in segs[:-1]:
                s.on_become_inactive()
            segs[-1].offset_index.resize_to_max()
            segs[-1].time_index.resize_to_max()
        else:
            for s in segs:
                s.load_read_only()
            for s in segs[:-1]:
                s.offset_index.seal()
                s.time_index.seal()
        self._set_segments(segs)
        self.next_offset = segs[-1].next_offset
        self.log_start_offset = min(max(log_start_offset, segs[0].base_offset), self.next_offset)
        if self.recovery_point > self.next_offset:
            self.recovery_point = self.next_offset

    def _set_segments(self, segs: list[LogSegment]) -> None:
        # readers hold snapshots: always replace the lists, never mutate them
        self.segments = list(segs)
        self.bases = [s.base_offset for s in segs]

    # ----- follower -----
    def refresh(self) -> None:
        """Read-only follower: catch up with the writer (new bytes, new segments, segments
        deleted by retention, a log truncated by the writer's recovery)."""
        if self.writable:
            return
        segs = self.segments
        if not segs:
            if self._list_bases():
                self.load(clean=True)
            return
        if not os.path.exists(segs[0].log_path):
            return self._reload()
        active = segs[-1]
        while True:
            fsize = os.fstat(active.fd).st_size
            if fsize < active.size:
                return self._reload()
            if fsize > active.size:
                active.advance(fsize)
            self.next_offset = active.next_offset
            if active.size == 0:
                return
            nxt = os.path.join(self.dir, filename_prefix(active.next_offset) + fmt.LOG_SUFFIX)
            if not os.path.exists(nxt):
                return
            active.advance(os.fstat(active.fd).st_size)
            if active.next_offset != int(os.path.basename(nxt)[:fmt.FILENAME_DIGITS]):
                continue
            new = self._open_segment(active.next_offset)
            new.load_read_only()
            active.offset_index.seal()
            active.time_index.seal()
            self._set_segments(self.segments + [new])
            active = new
            self.next_offset = new.next_offset

    def _reload(self) -> None:
        old = self.segments
        self.load(clean=True)
        for s in old:
            s.close_handles()

    # ----- writes -----
    def append(self, body: BatchBody) -> int:
        """Write one batch; return its base offset. Caller holds :attr:`lock`."""
        base = self.next_offset
        last = base + body.count - 1
        size = body.size
        seg = self.segments[-1]
        c = self.config
        if seg.should_roll(size, body.max_timestamp, last, c.segment_bytes, c.segment_ms):
            seg = self.roll(base)
        seg.append([batch_prefix(base, body), body.body], size, last, body.max_timestamp)
        self._appended(seg, last, body.count, size)
        return base

    def append_value(self, value: bytes, timestamp: int) -> int:
        """Write a one-record batch of a plain value (the single ``append`` path), built
        whole by ``value_batch``; return its offset. Caller holds :attr:`lock`."""
        base = self.next_offset
        data = value_batch(base, timestamp, value)
        seg = self.segments[-1]
        c = self.config
        if not seg.append_unless_roll(data, base, timestamp, c.segment_bytes, c.segment_ms):
            seg = self.roll(base)
            seg.append_buffer(data, base, timestamp)
        self.next_offset = base + 1  # (_appended, inlined: the single-append hot path)
        self.appended_records += 1
        self.appended_bytes += len(data)
        unflushed = self._unflushed
        if not unflushed or unflushed[-1] is not seg:
            unflushed.append(seg)
        return base

    def append_values(self, values: list[bytes], size: int, timestamp: int) -> int:
        """Write one ``size``-byte batch of plain values sharing ``timestamp``, built whole
        by ``values_batch``; return its base offset. Caller holds :attr:`lock`."""
        base = self.next_offset
        last = base + len(values) - 1
        seg = self.segments[-1]
        c = self.config
        if seg.should_roll(size, timestamp, last, c.segment_bytes, c.segment_ms):
            seg = self.roll(base)
        seg.append_buffer(values_batch(base, timestamp, values, size), last, timestamp)
        self._appended(seg, last, len(values), size)
        return base

    def _appended(self, seg: LogSegment, last: int, count: int, size: int) -> None:
        self.next_offset = last + 1
        self.appended_records += count
        self.appended_bytes += size
        unflushed = self._unflushed
        if not unflushed or unflushed[-1] is not seg:
            unflushed.append(seg)

    def roll(self, new_base: int) -> LogSegment:
        """Close the active segment to writes (final time entry, trimmed indexes) and start a
        new one at ``new_base`` (Kafka's ``roll``). Caller holds :attr:`lock`."""
        old = self.segments[-1]
        if old.size == 0 and old.base_offset == new_base:
            return old
        try:  # the new segment first: if the disk is full, the old one stays active
            with translate_full(f"rolling {self.dir} to offset {new_base}"):
                seg = self._open_segment(new_base)
                try:
                    fsync_dir(self.dir)
                except BaseException:
                    seg.close_handles()
                    raise
        except BaseException:
            for suffix in (fmt.LOG_SUFFIX, fmt.INDEX_SUFFIX, fmt.TIME_INDEX_SUFFIX):
                try:
                    os.unlink(os.path.join(self.dir, filename_prefix(new_base) + suffix))
                except OSError:
                    pass
            raise
        old.on_become_inactive()
        self._set_segments(self.segments + [seg])
        return seg

    def flush(self) -> int:
        """fsync every segment written since the last flush; advance the recovery point.
        Returns the fsyncs made. Flushes are serialised (``_flush_lock``): a second caller
        waits for an fsync already running instead of returning before it completes."""
        with self._flush_lock:
            with self.lock:
                segs, self._unflushed = self._unflushed, []
                end = self.next_offset
            n = 0
            try:
                for s in segs:
                    if not s.closed:
                        n += s.flush()
            except BaseException:  # not synced: keep them for the next flush
                with self.lock:
                    self._unflushed = segs + [s for s in self._unflushed if s not in segs]
                raise
            self.fsyncs += n
            if end > self.recovery_point:
                self.recovery_point = end
            return n

    @staticmethod
    def flush_together(logs: list[PartitionLog], sync: Callable[[], None]) -> int:
        """Flush several logs with one ``sync`` that makes all their files durable at once
        (one ``syncfs``, :class:`~mqstore.durability.FilesystemSync`), instead of one fsync
        per segment. Takes the logs' flush locks in the order given (callers sort them, so
        two of these never deadlock), takes each log's segments written since its last
        flush, runs ``sync``, and only then advances the recovery points; if ``sync``
        raises, every log keeps its segments for the next flush. A segment whose failed
        append left a tail to cut first (``dirty_tail``) is flushed on its own (cut, then
        fsync). Returns the segment fsyncs made (``sync`` itself is the caller's to
        count)."""
        locked: list[PartitionLog] = []
        taken: list[tuple[PartitionLog, list[LogSegment], int]] = []
        n = 0
        try:
            try:
                for log in logs:
                    log._flush_lock.acquire()
                    locked.append(log)
                    with log.lock:
                        segs, log._unflushed = log._unflushed, []
                        end = log.next_offset
                    taken.append((log, segs, end))
                for log, segs, _end in taken:
                    for s in segs:
                        if s.dirty_tail and not s.closed:
                            done = s.flush()
                            log.fsyncs += done
                            n += done
                sync()
            except BaseException:  # not synced: keep them for the next flush
                for log, segs, _end in taken:
                    with log.lock:
                        log._unflushed = segs + [s for s in log._unflushed if s not in segs]
                raise
            for log, _segs, end in taken:
                if end > log.recovery_point:
                    log.recovery_point = end
        finally:
            for log in locked:
                log._flush_lock.release()
        return n

    @property
    def has_unflushed(self) -> bool:
        return bool(self._unflushed)

    # ----- reads -----
    def check_offset(self, offset: int) -> None:
        if not isinstance(offset, int) or isinstance(offset, bool):
            raise errors.OffsetOutOfRangeError(f"offset must be an int: {offset!r}")
        if offset < self.log_start_offset or offset > self.next_offset:
            raise errors.OffsetOutOfRangeError(
                f"offset {offset} is out of range for {self.topic}-{self.partition} "
                f"[{self.log_start_offset}, {self.next_offset}]")

    def locate(self, offset: int) -> tuple[LogSegment, tuple[int, int, int, int]] | None:
        """The segment and batch ``(position, size, base, last)`` holding ``offset``."""
        segs, bases = self.segments, self.bases
        i = max(bisect.bisect_right(bases, offset) - 1, 0)
        for seg in segs[i:]:
            found = seg.translate_offset(offset)
            if found is not None:
                return seg, found
        return None

    def batches_from(self, offset: int, stop_offset: int | None = None
                     ) -> Iterator[tuple[LogSegment, int, int, int, int, bytes, int]]:
        """Whole batches from the one holding ``offset`` onwards (across segments), as
        ``(segment, position, size, base, last, chunk, offset_in_chunk)``."""
        loc = self.locate(offset)
        if loc is None:
            return
        seg, (pos, _size, _base, _last) = loc
        segs = self.segments
        start = segs.index(seg) if seg in segs else len(segs)
        check = self.config.check_crcs
        scan = native.scan_batches
        for s in segs[start:]:
            p = pos if s is seg else 0
            walk = BatchWalk(s.fd, p, s.size)
            checked, valid_end = None, 0
            expect = s.base_offset if p == 0 else None  # the offset chain (not CRC-covered)
            for bpos, size, base, last, chunk, off in walk:
                if stop_offset is not None and base >= stop_offset:
                    return
                if expect is not None and base != expect:
                    raise errors.CorruptRecordError(
                        f"batch has baseOffset {base} where {expect} was expected",
                        s.log_path, bpos)
                expect = last + 1
                if check:  # CRC-32C of every batch of a chunk in one native call
                    if chunk is not checked:
                        checked, valid_end = chunk, scan(chunk, off, len(chunk)).valid_end
                    if off + size > valid_end:
                        s.check_batch(memoryview(chunk)[off:off + size], bpos)  # raises
                        valid_end = scan(chunk, off + size, len(chunk)).valid_end
                yield s, bpos, size, base, last, chunk, off
            if walk.stop_reason is not None and walk.stop_position < s.size:
                raise errors.CorruptRecordError(
                    f"malformed batch header in {self.topic}-{self.partition} inside the "
                    "validated part of the segment", s.log_path, walk.stop_position)

    def read(self, offset: int, max_records: int, max_bytes: int, tags) -> Records:
        """Records from ``offset`` (see ``Store.read`` for the limits; ``tags`` is a set or
        None), decoded batch-natively (``log_read.read_records``)."""
        return read_records(self, offset, max_records, max_bytes, tags)

    def offset_for_time(self, timestamp: int) -> int | None:
        """The first offset whose record timestamp >= ``timestamp`` (time index first)."""
        for seg in self.segments:
            if seg.largest_timestamp() >= timestamp:
                found = seg.find_offset_by_timestamp(timestamp, self.log_start_offset,
                                                     check_crcs=self.config.check_crcs)
                if found is not None:
                    return found
        return None

    def scan_key(self, key: bytes, start_ms: int | None, end_ms: int | None, limit: int) -> list:
        """Records with this key: a scan of whole batches (Kafka has no key index), bounded by
        the time index when ``start_ms`` / ``end_ms`` are given. Batches whose bytes do not
        contain the key are skipped without decoding (uncompressed batches)."""
        start = self.log_start_offset
        if start_ms is not None:
            found = self.offset_for_time(start_ms)
            if found is None:
                return []
            start = found
        stop = self.next_offset  # never past what was acknowledged
        if end_ms is not None:
            bound = self.offset_for_time(end_ms + 1)
            if bound is not None:
                stop = min(stop, bound)
        if start >= stop:
            return []
        out: list = []
        for _seg, _pos, size, _base, last, chunk, off in self.batches_from(start, stop):
            if last < start:
                continue
            batch = chunk[off:off + size]
            header = read_header(batch)
            if not header.codec and key not in batch:
                continue
            for rec in iter_records(batch, header):
                if rec.key != key or rec.offset < start:
                    continue
                if start_ms is not None and rec.timestamp_ms < start_ms:
                    continue
                if end_ms is not None and rec.timestamp_ms > end_ms:
                    continue
                out.append(rec)
                if len(out) >= limit:
                    return out
        return out

    def transfer_to(self, out_fd: int, offset: int, max_bytes: int) -> tuple[int, int]:
        """``os.sendfile`` whole batches from the one holding ``offset``, within one segment
        (the first batch always, then as many as fit ``max_bytes``)."""
        self.check_offset(offset)
        end = self.next_offset  # bytes past it may be in the file, not yet acknowledged
        if offset >= end:
            return 0, offset
        loc = self.locate(offset)
        if loc is None:
            return 0, offset
        seg, (pos, size, base, last) = loc
        if base >= end:
            return 0, offset
        total, next_offset = seg.transfer_span(pos, size, last, max_bytes, end)
        sent = 0
        while sent < total:
            try:
                n = os.sendfile(out_fd, seg.fd, pos + sent, total - sent)
            except BlockingIOError:  # a non-blocking socket: wait until it can take more
                select.select([], [out_fd], [])
                continue
            if n == 0:
                raise BrokenPipeError("socket closed during transfer_to")
            sent += n
        return sent, next_offset

    # ----- retention -----
    def delete_old_segments(self, now_ms: int) -> int:
        """Kafka's ``deleteOldSegments``: :meth:`detach_old_segments`, then
        :meth:`delete_detached` (the store writes the log-start checkpoint in between, so a
        crash never leaves segments missing below a checkpointed log start). Returns the
        bytes deleted."""
        return self.delete_detached(self.detach_old_segments(now_ms))

    def detach_old_segments(self, now_ms: int) -> list[LogSegment]:
        """Choose whole segments to delete, oldest first, never the active one, by largest
        record timestamp (``retention_ms``) and by total size (``retention_bytes``); take
        them out of the log and advance the log start offset. Files are not touched yet."""
        c = self.config
        if c.retention_ms < 0 and c.retention_bytes < 0:
            return []
        with self.lock:
            for s in self._graveyard:  # handles of segments deleted by the previous pass
                s.close_handles()
            self._graveyard = []
            segs = self.segments
            total = sum(s.size for s in segs)
            doomed: list[LogSegment] = []
            for seg in segs[:-1]:
                by_time = False
                if c.retention_ms >= 0:
                    ts = seg.largest_timestamp()
                    if ts < 0:
                        ts = int(os.stat(seg.log_path).st_mtime * 1000)
                    by_time = now_ms - ts > c.retention_ms
                by_size = c.retention_bytes >= 0 and total - seg.size >= c.retention_bytes
                if not (by_time or by_size):
                    break
                doomed.append(seg)
                total -= seg.size
            if not doomed:
                return []
            keep = segs[len(doomed):]
            self.log_start_offset = max(self.log_start_offset, keep[0].base_offset)
            self._set_segments(keep)
            return doomed

    def delete_detached(self, doomed: list[LogSegment]) -> int:
        """Unlink the files of segments :meth:`detach_old_segments` took out (their handles
        close at the next pass, so readers in flight finish); returns the bytes freed."""
        if not doomed:
            return 0
        with self.lock:
            freed = 0
            for seg in doomed:
                freed += seg.delete_files()
            self._graveyard = doomed
            fsync_dir(self.dir)
            return freed

    # ----- lifecycle -----
    def close(self) -> None:
        """Finish the indexes (final time entry, trim), fsync, close every segment."""
        try:
            if self.writable:
                with self.lock:
                    self.segments[-1].on_become_inactive()
                self.flush()
        finally:
            with self.lock:
                for s in self._graveyard:
                    s.close_handles()
                self._graveyard = []
                for s in self.segments:
                    s.close()

    @property
    def size_bytes(self) -> int:
        return sum(s.size for s in self.segments)
