"""IndexFile and IndexService: the key index over the CommitLog (RocketMQ's index/).

An IndexFile is ``40 + hash_slots * 4 + index_entries * 20`` bytes, created at full size
(sparse) and memory-mapped; its space is reserved with ``posix_fallocate`` before anything is
written there, so no write through the map can die of SIGBUS on a full disk (a full disk is a
``StoreFullError``, which stalls the index: see :class:`IndexService`). The header and the
slots, written anywhere, are reserved whole when the file is created (20 MB with the default
5M slots; for an existing file, before its first write); the entries, appended in order, in
chunks of :data:`RESERVE_CHUNK` ahead of ``indexCount`` (``mapped_file.py`` explains the
scheme)::

    header (40)   int64 beginTimestamp, endTimestamp, beginPhyOffset, endPhyOffset,
                  int32 hashSlotCount (slots ever used), int32 indexCount (next entry, from 1)
    slots         int32 per slot: number of the newest entry whose key hashes there, 0 = none
    entries (20)  int32 keyHash, int64 commitlog offset, int32 timeDiff (seconds since
                  beginTimestamp), int32 previous entry in the same slot (0 = end of chain)

Keys are ``topic#KEYS`` and ``topic#UNIQ_KEY``; keyHash = ``abs(java_string_hash(key))``
(Integer.MIN_VALUE -> 0), slot = keyHash % hash_slots. Entry 0 is never used, so a file holds
``index_entries - 1`` keys; then a new file is created, named by its creation time
``yyyyMMddHHmmssSSS``. Hashes collide: a lookup returns candidate offsets and the store
re-checks topic and key on the messages.
"""
from __future__ import annotations

import datetime
import logging
import mmap
import os
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import numpy as np

from mqstore import errors, native
from mqstore.damage import RecoveryLog, preallocate, translate_full
from mqstore.errors import StoreFullError
from mqstore.storedir import fsync_dir

from . import format as fmt
from . import index_check
from .mapped_file import PAGE_SIZE, close_mapping

_INT_MAX = 0x7FFFFFFF
#: bytes of the entry area reserved at a time ahead of indexCount (209,715 entries)
RESERVE_CHUNK = 4 << 20
#: one IndexFile entry as numpy sees it (format.INDEX_ENTRY)
logger = logging.getLogger("mqstore")


def key_hash(key: str) -> int:
    """RocketMQ ``indexKeyHashMethod``: abs of Java's String.hashCode, MIN_VALUE -> 0."""
    h = native.java_string_hash(key)
    return 0 if h == -0x80000000 else abs(h)


class IndexFile:
    """One IndexFile: 40-byte header, ``hash_slots`` int32 slots, ``index_entries`` 20-byte
    entries (see the module docstring), mapped whole; entry 0 is never used.

    Thread-safety: one writer (the dispatcher) under the service lock; readers may run
    concurrently and see a consistent chain because an entry is written before the slot that
    points at it, and the header (which bounds what readers walk) last."""

    def __init__(self, path: str, hash_slots: int, index_entries: int, *, create: bool = False,
                 read_only: bool = False, end_phy_offset: int = 0, end_timestamp: int = 0):
        self.path = path
        self.hash_slots = hash_slots
        self.index_entries = index_entries
        self.file_size = fmt.INDEX_HEADER_SIZE + hash_slots * 4 + index_entries * 20
        self.entries_pos = fmt.INDEX_HEADER_SIZE + hash_slots * 4
        #: [0, reserved_end) is allocated: the header, the slots and the entries reserved so
        #: far (None: an existing file not written yet, see :meth:`reserve`)
        self.reserved_end: int | None = self.file_size if read_only else None
        #: posix_fallocate calls made
        self.reservations = 0
        self.dirty = False
        flags = os.O_RDONLY if read_only else os.O_RDWR | (os.O_CREAT if create else 0)
        with translate_full(f"creating {path}"):
            self._fd = os.open(path, flags, 0o644)
        try:
            if create:
                os.ftruncate(self._fd, self.file_size)
                try:  # no write through the mapping may ever SIGBUS on a full disk
                    self.index_count = 1
                    self.reserved_end = 0
                    self.reserve(0)
                except BaseException:
                    os.close(self._fd)
                    self._fd = -1
                    try:
                        os.unlink(path)
                    except OSError:
                        pass
                    raise
                os.fdatasync(self._fd)  # the full size is durable before any entry is
            st = os.fstat(self._fd)
            self._block = max(PAGE_SIZE, st.st_blksize or 0)
            if st.st_size != self.file_size:
                raise errors.CorruptRecordError(
                    f"index file is {os.fstat(self._fd).st_size} bytes, expected "
                    f"{self.file_size} (hash_slots={hash_slots}, index_entries={index_entries})",
                    path, 0)
            access = mmap.ACCESS_READ if read_only else mmap.ACCESS_WRITE
            self.mm = mmap.mmap(self._fd, self.file_size, access=access)
        except BaseException:
            if self._fd >= 0:
                os.close(self._fd)
            raise
        if create:
            self.begin_timestamp = end_timestamp
            self.end_timestamp = end_timestamp
            self.begin_phy_offset = end_phy_offset
            self.end_phy_offset = end_phy_offset
            self.hash_slot_count = 0
            self.index_count = 1
            self._write_header()
        else:
            self.read_header()
        self.dirty = create

    def reserve(self, keys: int = 1) -> None:
        """Make sure ``keys`` more entries (as many as fit) can be written without new
        space: the next chunk of the entry area is reserved once they would pass
        ``reserved_end`` (and, in an existing file, the header and slots first). Raises
        ``StoreFullError`` before anything is written; the entries written so far are then
        published (header), so the file stays consistent."""
        end = min(self.file_size, self.entries_pos + (self.index_count + keys) * 20)
        reserved = self.reserved_end
        if reserved is not None and end <= reserved:
            return
        try:
            if reserved is None:
                reserved = self._reserve_table()
            new_end = min(self.file_size,
                          max(end, max(reserved, self.entries_pos) + RESERVE_CHUNK))
            if new_end > reserved:
                self._fallocate(reserved, new_end - reserved)
                self.reserved_end = new_end
        except StoreFullError:
            if self.reserved_end is not None and self.dirty:
                self._write_header()
            raise

    def _reserve_table(self) -> int:
        """An existing file, before its first write: the header and the slots are
        preallocated whole (they are written anywhere); the entries below indexCount were
        written, so their blocks exist, and the entries' reservation continues from there
        (rounded down to a block). Returns ``reserved_end``."""
        if self.reserved_end is None:
            self._fallocate(0, self.entries_pos)
            written = min(self.file_size, self.entries_pos + max(self.index_count, 1) * 20)
            self.reserved_end = max(self.entries_pos, written // self._block * self._block)
        return self.reserved_end

    def _fallocate(self, offset: int, length: int) -> None:
        self.reservations += 1
        preallocate(self._fd, offset, length, f"reserving {length} bytes of {self.path}")

    def read_header(self) -> None:
        """Load the header fields from the file."""
        (self.begin_timestamp, self.end_timestamp, self.begin_phy_offset, self.end_phy_offset,
         self.hash_slot_count, self.index_count) = fmt.INDEX_HEADER.unpack_from(self.mm, 0)
        if self.index_count < 1:
            self.index_count = 1

    def _write_header(self) -> None:
        fmt.INDEX_HEADER.pack_into(self.mm, 0, self.begin_timestamp, self.end_timestamp,
                                   self.begin_phy_offset, self.end_phy_offset,
                                   self.hash_slot_count, self.index_count)

    @property
    def is_full(self) -> bool:
        return self.index_count >= self.index_entries

    @property
    def entry_count(self) -> int:
        """Keys stored (indexCount - 1)."""
        return self.index_count - 1

    def put_key(self, key: str, phy_offset: int, store_timestamp: int, *,
                header: bool = True) -> bool:
        """Add ``key`` for the message at ``phy_offset``; False if the file is full. With
        ``header=False`` the caller writes the header (:meth:`write_header`) afterwards;
        until then readers do not see the entry."""
        if self.is_full:
            return False
        reserved = self.reserved_end
        if reserved is None or self.entries_pos + (self.index_count + 1) * 20 > reserved:
            self.reserve(1)
        h = key_hash(key)
        slot_pos = fmt.INDEX_HEADER_SIZE + (h % self.hash_slots) * 4
        prev = fmt.INDEX_SLOT.unpack_from(self.mm, slot_pos)[0]
        if prev <= fmt.INDEX_INVALID or prev > self.index_count:
            prev = fmt.INDEX_INVALID
        if self.begin_timestamp <= 0:
            diff = 0
        else:
            diff = min(max((store_timestamp - self.begin_timestamp) // 1000, 0), _INT_MAX)
        n = self.index_count
        fmt.INDEX_ENTRY.pack_into(self.mm, self.entries_pos + n * 20, h, phy_offset, diff, prev)
        fmt.INDEX_SLOT.pack_into(self.mm, slot_pos, n)
        if n <= 1:
            self.begin_phy_offset = phy_offset
            self.begin_timestamp = store_timestamp
        if prev == fmt.INDEX_INVALID:
            self.hash_slot_count += 1
        self.index_count = n + 1
        self.end_phy_offset = phy_offset
        self.end_timestamp = store_timestamp
        if header:
            self._write_header()
        self.dirty = True
        return True

    def write_header(self) -> None:
        """Publish the header fields (after ``put_key(..., header=False)``)."""
        self._write_header()

    def time_matched(self, begin: int, end: int) -> bool:
        """True if this file's [beginTimestamp, endTimestamp] overlaps [begin, end]."""
        return self.begin_timestamp <= end and self.end_timestamp + 1000 > begin

    def select(self, key: str, begin: int, end: int, limit: int) -> list[int]:
        """Commitlog offsets of entries whose hash equals ``key``'s and whose time (second
        precision) may lie in [begin, end], newest first (RocketMQ ``selectPhyOffset``)."""
        h = key_hash(key)
        slot_pos = fmt.INDEX_HEADER_SIZE + (h % self.hash_slots) * 4
        count = fmt.INDEX_HEADER.unpack_from(self.mm, 0)[5]
        n = fmt.INDEX_SLOT.unpack_from(self.mm, slot_pos)[0]
        out: list[int] = []
        seen = 0
        begin_ts = self.begin_timestamp
        while fmt.INDEX_INVALID < n < count and len(out) < limit and seen < count:
            seen += 1
            eh, phy, diff, prev = fmt.INDEX_ENTRY.unpack_from(self.mm, self.entries_pos + n * 20)
            t = begin_ts + diff * 1000
            if eh == h and t <= end and t + 1000 > begin:
                out.append(phy)
            if t + 1000 <= begin:  # the chain only gets older
                break
            if prev >= n:
                break
            n = prev
        return out

    def truncate_from(self, phy_offset: int, store_timestamp_at: Callable[[int], int]) -> int:
        """Undo, newest first, every entry for a message at or after ``phy_offset``; slots go
        back to the entry each one replaced. Returns the entries removed."""
        n = self.index_count - 1
        if n < 1 or (n < self.index_entries and fmt.INDEX_ENTRY.unpack_from(
                self.mm, self.entries_pos + n * 20)[1] < phy_offset):
            return 0  # nothing to remove
        self._reserve_table()  # the slots it rewrites may be anywhere
        if native.backend == "native":
            return self._truncate_from_native(phy_offset, store_timestamp_at)
        removed = 0
        n = self.index_count - 1
        while n >= 1:
            eh, phy, _diff, prev = fmt.INDEX_ENTRY.unpack_from(self.mm, self.entries_pos + n * 20)
            if phy < phy_offset:
                break
            slot_pos = fmt.INDEX_HEADER_SIZE + (eh % self.hash_slots) * 4
            fmt.INDEX_SLOT.pack_into(self.mm, slot_pos, prev if 0 < prev < n else 0)
            if not (0 < prev < n):
                self.hash_slot_count = max(0, self.hash_slot_count - 1)
            self.mm[self.entries_pos + n * 20:self.entries_pos + (n + 1) * 20] = bytes(20)
            removed += 1
            n -= 1
        if removed:
            self.index_count = n + 1
            if n >= 1:
                self.end_phy_offset = fmt.INDEX_ENTRY.unpack_from(
                    self.mm, self.entries_pos + n * 20)[1]
                self.end_timestamp = store_timestamp_at(self.end_phy_offset) or self.end_timestamp
            else:
                self.end_phy_offset = self.begin_phy_offset
                self.end_timestamp = self.begin_timestamp
            self._write_header()
            self.dirty = True
        return removed

    def _truncate_from_native(self, phy_offset: int,
                              store_timestamp_at: Callable[[int], int]) -> int:
        """:meth:`truncate_from` through ``native.index_truncate_from`` (the same walk)."""
        got = native.index_truncate_from(self.mm, self.hash_slots, self.index_entries,
                                         (self.index_count, self.hash_slot_count), phy_offset)
        if got.removed:
            self.index_count, self.hash_slot_count = got.index_count, got.hash_slot_count
            if got.index_count >= 2:
                self.end_phy_offset = got.last_phy_offset
                self.end_timestamp = store_timestamp_at(self.end_phy_offset) or self.end_timestamp
            else:
                self.end_phy_offset = self.begin_phy_offset
                self.end_timestamp = self.begin_timestamp
            self._write_header()
            self.dirty = True
        return got.removed

    def validate(self, repair: bool = False) -> tuple[str, str | None]:
        """Check the file against its own invariants (``index_check.validate``)."""
        return index_check.validate(self, repair)

    def flush(self) -> bool:
        """msync the file if it changed; True if a sync was issued."""
        if not self.dirty:
            return False
        self.dirty = False
        self.mm.flush()
        return True

    def allocated_bytes(self) -> int:
        return os.fstat(self._fd).st_blocks * 512 if self._fd >= 0 else 0

    def close(self) -> None:
        """Unmap and close (idempotent)."""
        if self._fd < 0:
            return
        close_mapping(self.mm, self._fd)
        self._fd = -1

    def destroy(self, *, unmap: bool = True) -> int:
        """Delete the file; with ``unmap=False`` the mapping stays valid for readers still
        holding this object (retention)."""
        if unmap:
            self.close()
        elif self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass
        return self.file_size


def _index_file_name(ms: int) -> str:
    dt = datetime.datetime.fromtimestamp(ms / 1000)
    return dt.strftime(fmt.INDEX_FILE_NAME_FORMAT) + "%03d" % (ms % 1000)


class IndexService:
    """The IndexFiles of a store: build, query, truncate after a crash, delete old files.

    Thread-safety: every method takes the service lock, so the dispatcher (writer), readers
    (``query``) and retention can run in different threads.
    """

    def __init__(self, directory: str, hash_slots: int, index_entries: int, *,
                 read_only: bool = False):
        self.dir = directory
        self.hash_slots = hash_slots
        self.index_entries = index_entries
        self.read_only = read_only
        self.files: list[IndexFile] = []
        self._lock = threading.RLock()
        self._dir_dirty = False
        #: commitlog offset of the newest message indexed (-1: none); re-dispatch skips
        #: messages at or below it (idempotence)
        self.indexed_end = -1
        #: True once a new IndexFile could not be created (full disk): from then on nothing
        #: is indexed until the store reopens, whose recovery re-indexes from
        #: ``indexed_end`` (the dispatcher must not stop, the ConsumeQueues still fill)
        self.stalled = False
        self.last_flushed_timestamp = 0

    def load(self, log: RecoveryLog | None = None) -> None:
        """Map the existing index files, oldest first (names sort by creation time). The
        IndexFile is derived: a writer deletes a file of the wrong size, and every later one
        (each continues the previous), and recovery rebuilds them from the CommitLog."""
        if not os.path.isdir(self.dir):
            if not self.read_only:
                os.makedirs(self.dir, exist_ok=True)
            return
        names = [n for n in sorted(os.listdir(self.dir)) if len(n) == 17 and n.isdigit()]
        for i, name in enumerate(names):
            path = os.path.join(self.dir, name)
            size = os.path.getsize(path)
            if size == 0:  # a crash between create and ftruncate
                if not self.read_only:
                    os.unlink(path)
                continue
            expected = fmt.INDEX_HEADER_SIZE + self.hash_slots * 4 + self.index_entries * 20
            if size != expected:
                if self.read_only:
                    break
                self._drop(names[i:], log, f"IndexFile is {size} bytes, {expected} expected")
                break
            self.files.append(IndexFile(path, self.hash_slots, self.index_entries,
                                        read_only=self.read_only))
        self._update_indexed_end()

    def _drop(self, names: list[str], log: RecoveryLog | None, why: str) -> None:
        index_check.drop_files(self, names, log, why)

    def recover(self, log: RecoveryLog | None, window_start: int, min_phys: int) -> int | None:
        """Validate and repair the IndexFiles (``index_check.recover``); the commitlog
        offset to re-index from, or None."""
        return index_check.recover(self, log, window_start, min_phys)

    def _update_indexed_end(self) -> None:
        self.indexed_end = -1
        for f in reversed(self.files):
            if f.entry_count > 0:
                self.indexed_end = f.end_phy_offset
                break

    def build_index(self, topic: str, phy_offset: int, store_timestamp: int,
                    keys: list[str]) -> None:
        """Index ``topic#k`` for each of ``keys`` of the message at ``phy_offset``."""
        if phy_offset <= self.indexed_end or self.stalled:
            return
        with self._lock, self._stall_when_full():
            f = self._writable_file(store_timestamp, len(keys))
            for k in keys:
                full = topic + fmt.INDEX_KEY_SEPARATOR + k
                if not f.put_key(full, phy_offset, store_timestamp, header=False):
                    f.write_header()
                    f = self._roll(store_timestamp)
                    f.put_key(full, phy_offset, store_timestamp, header=False)
            f.write_header()
            self.indexed_end = phy_offset

    def build_many(self, entries: list[tuple[str, int, int, list[str]]]) -> None:
        """:meth:`build_index` for a run of messages (topic, commitlog offset, store
        timestamp, keys) in log order, under one lock and one header write per file."""
        if self.stalled:
            return
        with self._lock, self._stall_when_full():
            if native.backend == "native":
                self._build_many_native(entries)
                return
            f = None
            for topic, phy_offset, store_timestamp, keys in entries:
                if phy_offset <= self.indexed_end:
                    continue
                if f is None:
                    f = self._writable_file(store_timestamp, len(keys))
                else:  # all of a message's keys or none (put_key reserves one at a time)
                    f.reserve(len(keys))
                for k in keys:
                    full = topic + fmt.INDEX_KEY_SEPARATOR + k
                    if not f.put_key(full, phy_offset, store_timestamp, header=False):
                        f.write_header()
                        f = self._roll(store_timestamp)
                        f.put_key(full, phy_offset, store_timestamp, header=False)
                self.indexed_end = phy_offset
            if f is not None:
                f.write_header()

    def _build_many_native(self, entries: list[tuple[str, int, int, list[str]]]) -> None:
        """:meth:`build_many` through ``native.index_put_keys`` (same bytes as put_key)."""
        keys: list[str] = []
        phys: list[int] = []
        stamps: list[int] = []
        indexed_end = self.indexed_end
        for topic, phy_offset, store_timestamp, message_keys in entries:
            if phy_offset <= indexed_end:
                continue
            for k in message_keys:
                keys.append(topic + fmt.INDEX_KEY_SEPARATOR + k)
                phys.append(phy_offset)
                stamps.append(store_timestamp)
            indexed_end = phy_offset
        if keys:
            hashes = np.abs(native.java_string_hashes(keys))
            hashes[hashes == 1 << 31] = 0  # indexKeyHashMethod: abs, MIN_VALUE -> 0
            self._put_hashes_locked(hashes, phys, stamps)
        self.indexed_end = indexed_end

    def put_hashes(self, hashes: np.ndarray, phy_offsets: np.ndarray,
                   store_timestamps: np.ndarray) -> None:
        """:meth:`build_many` for keys already hashed (``native.index_key_hashes``: the
        dispatcher's pass), in log order, a message's keys adjacent; keys of messages at or
        below ``indexed_end`` (already indexed) are skipped."""
        if self.stalled or not len(hashes):
            return
        with self._lock, self._stall_when_full():
            new = phy_offsets > self.indexed_end
            if not new.all():
                hashes, phy_offsets = hashes[new], phy_offsets[new]
                store_timestamps = store_timestamps[new]
                if not len(hashes):
                    return
            self._put_hashes_locked(hashes, phy_offsets, store_timestamps)
            self.indexed_end = int(phy_offsets[-1])

    def _put_hashes_locked(self, hashes, phys, stamps) -> None:
        """Put hashed keys (int64 arrays or lists) through ``native.index_put_keys``, rolling
        to a new IndexFile when one fills up (caller holds ``_lock``)."""
        f = self._writable_file(int(stamps[0]))
        i = 0
        n = len(hashes)
        while True:
            f.reserve(n - i)  # the native loop writes into the map unchecked
            got = native.index_put_keys(
                f.mm, f.hash_slots, f.index_entries,
                (f.index_count, f.hash_slot_count, f.begin_timestamp, f.begin_phy_offset),
                hashes[i:], phys[i:], stamps[i:])
            if got.put:
                (f.index_count, f.hash_slot_count, f.begin_timestamp,
                 f.begin_phy_offset) = got[1:]
                i += got.put
                f.end_phy_offset, f.end_timestamp = int(phys[i - 1]), int(stamps[i - 1])
                f.dirty = True
            if i == n:
                break
            f.write_header()
            f = self._roll(int(stamps[i]))
            if f.is_full:  # holds no key at all: put_key's failure is ignored there too
                i += 1
                if i == n:
                    break
        f.write_header()

    @contextmanager
    def _stall_when_full(self) -> Iterator[None]:
        """A full disk while indexing stalls the index (see ``stalled``) instead of
        stopping the dispatcher."""
        try:
            yield
        except StoreFullError as exc:
            self.stalled = True
            self._update_indexed_end()
            logger.warning("index: %s; key lookups miss messages stored from now on until "
                           "the store is reopened (recovery re-indexes them)", exc)

    def _writable_file(self, now: int, keys: int = 1) -> IndexFile:
        if not self.files or self.files[-1].is_full:
            return self._roll(now)
        f = self.files[-1]
        f.reserve(keys)
        return f

    def _roll(self, now: int) -> IndexFile:
        last = self.files[-1] if self.files else None
        ms = max(now, 0)
        name = _index_file_name(ms)
        while (last is not None and name <= os.path.basename(last.path)) or os.path.exists(
                os.path.join(self.dir, name)):
            ms += 1
            name = _index_file_name(ms)
        with translate_full(f"creating {self.dir}"):
            os.makedirs(self.dir, exist_ok=True)
        f = IndexFile(os.path.join(self.dir, name), self.hash_slots, self.index_entries,
                      create=True,
                      end_phy_offset=last.end_phy_offset if last else 0,
                      end_timestamp=last.end_timestamp if last else 0)
        self.files.append(f)
        self._dir_dirty = True
        return f

    def query(self, topic: str, key: str, begin: int, end: int, limit: int) -> list[int]:
        """Candidate commitlog offsets for ``topic#key`` in [begin, end], newest file first,
        newest entry first within a file."""
        full = topic + fmt.INDEX_KEY_SEPARATOR + key
        out: list[int] = []
        with self._lock:
            files = list(self.files)
        for f in reversed(files):
            if self.read_only:
                f.read_header()
            if f.entry_count <= 0 or not f.time_matched(begin, end):
                if f.begin_timestamp and f.begin_timestamp < begin:
                    break
                continue
            out.extend(f.select(full, begin, end, limit - len(out)))
            if len(out) >= limit or f.begin_timestamp < begin:
                break
        return out

    def truncate_from(self, phy_offset: int, store_timestamp_at: Callable[[int], int]) -> int:
        """Remove every entry for messages at or after ``phy_offset`` (newest files first);
        delete files left empty. Returns entries removed."""
        removed = 0
        with self._lock:
            while self.files:
                f = self.files[-1]
                removed += f.truncate_from(phy_offset, store_timestamp_at)
                if f.entry_count > 0:
                    break
                self.files.pop()
                f.destroy()
                self._dir_dirty = True
            self._update_indexed_end()
        return removed

    def flush(self) -> tuple[int, int]:
        """msync changed files; return (syncs, store time of the newest entry flushed)."""
        syncs = 0
        with self._lock:
            ts = self.files[-1].end_timestamp if self.files else 0
            for f in reversed(self.files):  # filled in order: stop at a clean file
                if not f.dirty:
                    break
                if f.flush():
                    syncs += 1
            if self._dir_dirty:
                self._dir_dirty = False
                fsync_dir(self.dir)
                syncs += 1
        if ts:
            self.last_flushed_timestamp = ts
        return syncs, ts

    def delete_expired(self, min_phy: int) -> int:
        """Delete files (never the last) whose endPhyOffset is below ``min_phy``."""
        deleted = 0
        with self._lock:
            while len(self.files) > 1 and self.files[0].end_phy_offset < min_phy:
                deleted += self.files.pop(0).destroy(unmap=False)
                self._dir_dirty = True
        return deleted

    def refresh(self) -> None:
        """Read-only follower: map index files the writer created since."""
        if not os.path.isdir(self.dir):
            return
        with self._lock:
            known = {os.path.basename(f.path) for f in self.files}
            for name in sorted(os.listdir(self.dir)):
                if len(name) == 17 and name.isdigit() and name not in known:
                    try:
                        self.files.append(IndexFile(os.path.join(self.dir, name),
                                                    self.hash_slots, self.index_entries,
                                                    read_only=True))
                    except Exception:  # being created right now; next time
                        break
            self.files.sort(key=lambda f: os.path.basename(f.path))

    def allocated_bytes(self) -> int:
        return sum(f.allocated_bytes() for f in list(self.files))

    def close(self) -> None:
        for f in self.files:
            f.close()
