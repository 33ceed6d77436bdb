"""What Kafka's two sparse indexes share (``AbstractIndex``): a file of fixed-size entries,
preallocated, memory-mapped while writable, trimmed to its entries when the segment rolls.

Two modes:

- **writable** (the store's own writer): the file is created at ``max_index_size`` rounded down
  to a whole number of entries (sparse: zeros cost no disk), mapped with ``mmap``, and entries
  are written into the map. :meth:`trim` cuts the file to ``entries x entry_size``;
  :meth:`resize_to_max` grows it back when a loaded segment becomes the active one.
- **read-only** (a follower in another process): nothing is mapped, since the writer may shrink
  the file under a map (SIGBUS). The entries are read with ``pread`` into a private buffer and
  :meth:`refresh` picks up entries the writer added since.

The entry count of a file that was never trimmed (a crash, or a live writer) is the length of
its prefix of non-zero entries: a valid offset entry always has a relative offset > 0 (the
first batch of a segment is never indexed) and a zero time entry would mean timestamp 0.
Finding that prefix reads the file in chunks and stops at the first chunk holding an empty slot,
so its cost follows the entries, not the preallocated size.
Indexes carry no checksum; the segment checks them against the log and rebuilds them from it.

A full disk: a store into a page of a sparse file that has no block behind it raises SIGBUS
when the disk is full. So every write into the map first reserves the blocks under it
(``mqstore.damage.preallocate``, ``ALLOCATE_AHEAD`` bytes at a time). When that fails the
segment calls :meth:`drop`: the index files are unlinked (the next open rebuilds them from the
log) and this index stops taking entries; lookups then walk the log from its start. An index
is a hint, so a full disk never fails an append or an open because of one.
Not thread-safe: the partition's lock guards writes; lookups read a consistent prefix.
"""
from __future__ import annotations

import mmap
import os
import struct

import numpy as np

from mqstore.damage import preallocate

#: bytes of an index file reserved at a time before entries are stored into its map
ALLOCATE_AHEAD = 64 * 1024
#: bytes examined at a time when looking for the first empty slot
PREFIX_CHUNK = 64 * 1024
_PAGE = mmap.PAGESIZE


class AbstractIndex:
    """Fixed-size entries in a file, ``entry`` a ``struct.Struct`` (see the subclasses)."""

    entry: struct.Struct
    entry_size: int
    dtype: np.dtype

    def __init__(self, path: str, base_offset: int, max_index_size: int, *, writable: bool):
        self.path = path
        self.base_offset = base_offset
        self.writable = writable
        self.max_entries = max(max_index_size // self.entry_size, 2)
        self._mm: mmap.mmap | None = None
        self._cache = b""
        self.entries = 0
        self.sealed = False  # read-only mode: the writer no longer appends to this file
        self.dropped = False  # the files were unlinked after a full disk: no more entries
        self._allocated = 0  # bytes known to have blocks behind them
        if writable:
            # the map outlives the descriptor: no file descriptor stays open per index
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                size = os.fstat(fd).st_size
                if size == 0:
                    os.ftruncate(fd, self.max_entries * self.entry_size)
                self._map(fd)
                if size:  # read with pread: a first touch of a page of the map costs more
                    self.entries = self._valid_prefix(fd, size // self.entry_size)
                    self._allocated = self.entries * self.entry_size
            finally:
                os.close(fd)
        else:
            self.refresh()

    def _resize_file(self, length: int, zero_first: bool = False) -> None:
        """Set the file's length (zeroing it first if asked) and map it again."""
        fd = os.open(self.path, os.O_RDWR)
        try:
            if zero_first:
                os.ftruncate(fd, 0)
                self._allocated = 0
            os.ftruncate(fd, length)
            self._allocated = min(self._allocated, length)  # shrinking frees blocks
            self._map(fd)
        finally:
            os.close(fd)

    # ----- mapping -----
    def _unmap(self) -> None:
        mm, self._mm = self._mm, None
        if mm is not None:
            try:
                mm.close()
            except BufferError:  # a reader thread still holds a view; freed when it lets go
                pass

    def _map(self, fd: int) -> None:
        """Map the file as it is now and swap the new map in before dropping the old one, so
        a concurrent lookup always finds a buffer holding every valid entry."""
        size = os.fstat(fd).st_size
        old = self._mm
        self._mm = mmap.mmap(fd, size) if size else None
        if old is not None:
            try:
                old.close()
            except BufferError:  # a reader thread still holds a view; freed when it lets go
                pass

    def _valid_prefix(self, buf, n: int) -> int:
        """How many leading entries of ``buf`` (``n`` slots; or of the file open as ``buf``,
        an int, read with ``pread``) are not all zeros: chunk by chunk (one page, then
        doubling up to ``PREFIX_CHUNK``), stopping at the first empty slot, so the cost and
        the pages touched follow the entries, not ``n``."""
        if n <= 0:
            return 0
        fd = buf if isinstance(buf, int) else None  # a file descriptor: pread the chunks
        size = self.entry_size
        words = size // 4 if size % 4 == 0 else 0
        first, per = 0, max(_PAGE // size, 1)  # one page first: touch no page past the end
        while first < n:
            count = min(per, n - first)
            at = first * size
            if fd is not None:
                buf, at = os.pread(fd, count * size, at), 0
                count = len(buf) // size
                if not count:
                    return first
            if words:  # entries as 32-bit words, OR-ed column by column (vectorised; a
                # reduction over each 8- or 12-byte row cost ~0.5 us a row)
                raw = np.frombuffer(buf, dtype=np.uint32, count=count * words,
                                    offset=at).reshape(count, words)
                used = raw[:, 0] != 0
                for j in range(1, words):
                    used |= raw[:, j] != 0
                hits = np.flatnonzero(~used)
            else:
                raw = np.frombuffer(buf, dtype=np.uint8, count=count * size, offset=at)
                hits = np.flatnonzero(~raw.reshape(count, size).any(axis=1))
            if hits.size:
                return first + int(hits[0])
            first += count
            per = min(per * 2, max(PREFIX_CHUNK // size, 1))
        return n

    def length_problem(self) -> str | None:
        """Why the file's length cannot be right (not a whole number of entries), or None
        (Kafka's ``sanityCheck``)."""
        if self._mm is not None and len(self._mm) % self.entry_size:
            return (f"{os.path.basename(self.path)} is {len(self._mm)} bytes long, not a "
                    f"multiple of {self.entry_size}")
        return None

    @property
    def file_entries_capacity(self) -> int:
        """How many entries fit in the file as it is now."""
        if self._mm is None:
            return 0
        return len(self._mm) // self.entry_size

    def buffer(self):
        """The entries as a buffer for the native floor searches (first ``entries`` valid)."""
        return self._mm if self._mm is not None else self._cache

    def refresh(self) -> None:
        """Read-only mode: pick up entries appended by the writer since the last call."""
        if self.writable or self.sealed:
            return
        try:
            fd = os.open(self.path, os.O_RDONLY)
        except FileNotFoundError:
            return
        try:
            start = self.entries * self.entry_size
            chunk = os.pread(fd, 64 * 1024, start)
        finally:
            os.close(fd)
        n = len(chunk) // self.entry_size
        if not n:
            return
        good = self._valid_prefix(chunk, n)
        if good:
            self._cache = self._cache[: start] + chunk[: good * self.entry_size]
            self.entries += good
            if good == n and len(chunk) == 64 * 1024:
                self.refresh()

    def seal(self) -> None:
        """Read-only mode: the segment rolled; read its last entries once and stop polling."""
        self.refresh()
        self.sealed = True

    # ----- entries -----
    def entry_at(self, slot: int) -> tuple[int, int]:
        """The raw fields of entry ``slot``."""
        return self.entry.unpack_from(self.buffer(), slot * self.entry_size)

    def last_entry(self) -> tuple[int, int] | None:
        return self.entry_at(self.entries - 1) if self.entries else None

    def array(self) -> np.ndarray:
        """The valid entries as a numpy structured array (a view; do not keep it)."""
        return np.frombuffer(self.buffer(), dtype=self.dtype, count=self.entries)

    def _write_entry(self, *fields: int, through_file: bool = False) -> None:
        """Write the next entry into the map, or with ``pwrite`` when ``through_file`` (the
        map shares the page cache, so it sees the entry either way). A store into a page that
        is still a hole of the sparse file faults and allocates, which can stall for
        milliseconds (2-4 ms measured on ext4, against 10 us for a ``pwrite`` and then a
        minor fault): so the first entry of every page goes through the file, and so does
        the final entry written on roll / close (``through_file``)."""
        if self.dropped:
            return
        if self._mm is None or self.entries >= self.file_entries_capacity:
            raise IndexError(f"index {self.path} is full ({self.entries} entries)")
        where = self.entries * self.entry_size
        if where + self.entry_size > self._allocated:
            self._allocate(where)
        if (where + self.entry_size - 1) // _PAGE != (where - 1) // _PAGE:
            through_file = True  # the first store into a page: pwrite (see the docstring)
        if through_file:
            fd = os.open(self.path, os.O_RDWR)
            try:
                os.pwrite(fd, self.entry.pack(*fields), where)
            finally:
                os.close(fd)
        else:
            self.entry.pack_into(self._mm, where, *fields)
        self.entries += 1

    def _allocate(self, where: int) -> None:
        """Reserve blocks from ``where`` (up to ``ALLOCATE_AHEAD`` bytes, within the file) so
        a store into the map cannot SIGBUS; StoreFullError when the disk is full."""
        length = min(ALLOCATE_AHEAD, len(self._mm) - where) if self._mm is not None else 0
        fd = os.open(self.path, os.O_RDWR)
        try:
            preallocate(fd, where, max(length, self.entry_size), f"index {self.path}")
        finally:
            os.close(fd)
        self._allocated = where + max(length, self.entry_size)

    def drop(self) -> None:
        """Give the index up (the disk is full): unlink the file so the next open rebuilds
        it from the log, forget the entries (lookups walk from the segment's start) and take
        no more. Idempotent."""
        if self.dropped:
            return
        self.dropped = True
        self.entries = 0
        self._unmap()
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass

    def reset(self) -> None:
        """Drop every entry (before a rebuild). The file is zeroed so a crash during the
        rebuild cannot leave stale entries after the new ones."""
        self._unmap()
        if self.dropped:  # recreate the file unlinked after a full disk
            os.close(os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644))
            self.dropped = False
        self._resize_file(self.max_entries * self.entry_size, zero_first=True)
        self.entries = 0
        self._allocated = 0

    def trim(self) -> None:
        """Cut the file to exactly its entries (on roll and close)."""
        if not self.writable or self.dropped:
            return
        want = self.entries * self.entry_size
        if self._mm is not None and len(self._mm) == want:
            return
        try:
            self._resize_file(want)
        except FileNotFoundError:  # deleted under us (retention): nothing to trim
            self._unmap()

    def resize_to_max(self) -> None:
        """Grow the file back to the preallocated size (the active segment after a load)."""
        want = self.max_entries * self.entry_size
        if self.dropped or (self._mm is not None and len(self._mm) >= want):
            return
        self._resize_file(max(want, self.entries * self.entry_size))

    @property
    def is_full(self) -> bool:
        return self.entries >= self.max_entries

    @property
    def size_bytes(self) -> int:
        return self.entries * self.entry_size

    def close(self) -> None:
        """Unmap (does not trim; call :meth:`trim` first when the file is final)."""
        self._unmap()
