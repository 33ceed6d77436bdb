"""MappedFile: one fixed-size memory-mapped file (RocketMQ's MappedFile), whose disk space is
reserved in chunks ahead of the write position.

The CommitLog and every ConsumeQueue are sequences of these. A file is named by the offset of
its first byte in the whole sequence, 20 digits zero-padded (``00000000001073741824``), is
created at its full size with ``ftruncate`` (sparse, as RocketMQ creates it) and mapped whole.

Space is reserved with ``posix_fallocate`` (``mqstore.damage.preallocate``) in chunks ahead
of the write position: ``reserved_end`` is the end of the prefix known to be allocated, and
every write (through the mapping or ``pwrite``) whose end plus ``read_margin`` passes it
first reserves from ``reserved_end`` to the end of the ``reserve_chunk``-aligned chunk that
holds that point (cut at the file size). So no write through the mapping ever lands in a hole
(which SIGBUSes on a full disk), a full disk is a ``StoreFullError`` from the write that
needs the space, before anything was written, and a store costs on disk what it holds plus
about one chunk per file being written, not its files' sizes. ``read_margin`` is what
readers look at past the data (on tmpfs even a read of a hole through a shared mapping
allocates a page, and SIGBUSes when the file system is full): 8 bytes for the CommitLog
(TOTALSIZE and MAGIC); for a ConsumeQueue the 1,024 units recovery's scan peeks at, with
chunks of the 4,096 units it reads at a time (``consume_queue.RESERVE_CHUNK``), so the block
it reads at the end is always reserved. Chunks: :data:`RESERVE_CHUNK` (4 MiB) for CommitLog
files, 80 KiB for ConsumeQueue files (the whole file when it is smaller); a new file
reserves its first chunk when it is created (a full disk then fails the creation and leaves
no file).

A file that existed before this process opened it (an older store, any store after a
restart) has an unknown allocation: ``st_blocks`` says how many blocks, not which. Its first
write at or past ``wrote_position`` (the recovered end of its data: what was written there
has its blocks, and nothing below it is written again except by the rewrites below) takes
the data up to that position, rounded down to a file-system block, as allocated and reserves
from there. A rewrite below ``wrote_position`` (recovery: skip markers, ConsumeQueue units
corrected in place) preallocates exactly the pages it writes. Zeroing (:meth:`zero_range`,
:meth:`zero_from`) only writes pages that hold a non-zero byte, which therefore have their
blocks, and looks only at reserved pages (``zero_range``) or data (``zero_from``, by
``SEEK_DATA``), so an undo never needs space.

A full disk in the commitlog engine, as a whole (``tests/faults/test_commitlog_full_disk.py``,
``tests/faults/test_commitlog_reservation.py``):

- an append that needs a new CommitLog or ConsumeQueue file or chunk (the append path
  reserves the ConsumeQueue space its units go to before writing, so the dispatcher never
  has to) raises ``StoreFullError`` and leaves nothing: in ``write`` mode the part of the
  batch that reached the file is zeroed and synced, new files are deleted, the offsets are
  reused;
- a new IndexFile, or the next chunk of an IndexFile's entries, that cannot be reserved
  stalls the key index until the next open, which re-indexes (lookups miss the keys stored
  meanwhile); appends and reads go on;
- the store stays readable, takes appends again once space is freed, and reopens while the
  disk is still full; only a recovery that must reserve space (a lost ConsumeQueue, a
  re-dispatch into a new ConsumeQueue file or chunk) fails the open with ``StoreFullError``,
  and the next open after space is freed does it.
"""
from __future__ import annotations

import errno
import mmap
import os
import sys
import threading
from collections.abc import Iterator

from mqstore import errors
from mqstore.damage import full_error, is_full, preallocate

from . import format as fmt

PAGE_SIZE = mmap.PAGESIZE
#: mmap-mode writes fault their pages in ahead by this much at a time (:meth:`prepare_write`)
POPULATE_CHUNK = 1 << 20
#: madvise(MADV_POPULATE_WRITE) (Linux 5.14); None where it does not exist
_MADV_POPULATE_WRITE = getattr(mmap, "MADV_POPULATE_WRITE",
                               23 if sys.platform.startswith("linux") else None)
#: On Linux, fdatasync writes back every dirty page of the file, including pages dirtied
#: through a shared mapping, so it can stand in for msync. It matters for group commit:
#: CPython's ``mmap.flush`` (msync) holds the GIL for the whole sync, so no other producer
#: can append meanwhile and every append ends up with its own sync; ``os.fdatasync`` releases
#: the GIL and lets concurrent appenders share one. Elsewhere the portable msync is kept.
_FDATASYNC_COVERS_MAPPINGS = sys.platform.startswith("linux")


def close_mapping(mm: mmap.mmap, fd: int) -> None:
    """Unmap ``mm`` and close ``fd``. A mapping still exported to a reader (a live
    memoryview) cannot be closed; it is left to the garbage collector instead of failing."""
    try:
        mm.close()
    except BufferError:
        pass
    os.close(fd)
_ZERO_CHUNK = bytes(1 << 16)
#: bytes a CommitLog file reserves at a time ahead of its write position (internal: one
#: ``posix_fallocate`` per 4 MiB appended; a store's overhead on disk is one chunk)
RESERVE_CHUNK = 4 << 20
#: bytes past the end of the data that readers look at (a CommitLog scan reads TOTALSIZE and
#: MAGIC there): reserved too, because on tmpfs even a *read* through a shared mapping
#: allocates a page for a hole, and SIGBUSes when the file system is full
READ_MARGIN = 8


def _align_up(n: int, to: int) -> int:
    return -(-n // to) * to


def file_name(offset: int) -> str:
    """The 20-digit name of a file that starts at ``offset`` (RocketMQ offset2FileName)."""
    return "%020d" % offset


def parse_file_name(name: str) -> int | None:
    """The start offset a file name stands for, or None if it is not a 20-digit name."""
    if len(name) == fmt.FILE_NAME_DIGITS and name.isdigit():
        return int(name)
    return None


class MappedFile:
    """A file of exactly ``file_size`` bytes, mapped whole.

    Writes go through the mapping (``write_mode="mmap"``, RocketMQ's default) or through
    ``os.pwrite`` on the descriptor (``write_mode="write"``, like RocketMQ's
    ``writeWithoutMmap``); reads always use the mapping (the page cache is shared, so both
    paths see the same bytes). ``wrote_position`` is the end of the data written by this
    process; ``flushed_position`` the end of what was last made durable.

    ``reserved_end``: every block of ``[0, reserved_end)`` is allocated (see the module
    docstring); None for a file this process did not create until its first write past its
    data. :meth:`reserve` extends it ``reserve_chunk`` bytes (0 = the whole file) at a
    time, keeping ``read_margin`` bytes past every write reserved; ``reservations``
    counts the ``posix_fallocate`` calls this object made.

    Thread-safety: callers serialise writes (the CommitLog's put lock, the dispatcher's lock);
    :meth:`flush` may run concurrently with a write, and reads of already written bytes may
    run anywhere. :meth:`close` / :meth:`release` wait for a flush in progress.
    """

    __slots__ = ("path", "file_from_offset", "file_size", "write_mode", "read_only", "_fd",
                 "mm", "wrote_position", "flushed_position", "_flush_lock", "reserved_end",
                 "reserve_chunk", "read_margin", "reservations", "_block", "_populated",
                 "_pwritten")

    def __init__(self, path: str, file_size: int, *, write_mode: str = "mmap",
                 create: bool = False, read_only: bool = False, reserve_chunk: int | None = None,
                 read_margin: int = READ_MARGIN, sync_size: bool = True):
        self.path = path
        start = parse_file_name(os.path.basename(path))
        if start is None:
            raise errors.CorruptRecordError(f"not a mapped-file name: {path}")
        self.file_from_offset = start
        self.file_size = file_size
        self.write_mode = write_mode
        self.read_only = read_only
        chunk = RESERVE_CHUNK if reserve_chunk is None else reserve_chunk
        self.reserve_chunk = min(file_size, chunk) if chunk > 0 else file_size
        self.read_margin = read_margin
        self.reservations = 0
        self.reserved_end: int | None = file_size if read_only else None
        flags = os.O_RDONLY if read_only else os.O_RDWR | (os.O_CREAT if create else 0)
        existed = create and os.path.exists(path)
        try:
            self._fd = os.open(path, flags, 0o644)
        except OSError as exc:
            if is_full(exc):
                raise full_error(exc, f"creating {path}") from exc
            raise
        try:
            st = os.fstat(self._fd)
            #: reservations of an existing file start on a block boundary (a block is never
            #: smaller than a page here)
            self._block = max(PAGE_SIZE, st.st_blksize or 0)
            if create:
                os.ftruncate(self._fd, file_size)
                try:
                    self.reserved_end = 0
                    self.reserve(0, 0)  # the first chunk
                except BaseException:
                    os.close(self._fd)
                    self._fd = -1
                    if not existed:  # never leave a sparse file a write could SIGBUS on
                        try:
                            os.unlink(path)
                        except OSError:
                            pass
                    raise
                # the full size must be durable before anything in the file can be: a
                # crash then never leaves it shorter than the store's files. A derived file
                # (ConsumeQueue) skips it: recovery resizes a short one, and the fdatasync of
                # its first units makes the size durable with them (5 ms a queue here)
                if sync_size:
                    os.fdatasync(self._fd)
            st = os.fstat(self._fd)
            actual = st.st_size
            if actual != file_size:
                raise errors.CorruptRecordError(
                    f"mapped file is {actual} bytes, the store's files are {file_size} bytes",
                    path, 0)
            access = mmap.ACCESS_READ if read_only else mmap.ACCESS_WRITE
            self.mm = mmap.mmap(self._fd, file_size, access=access)
        except BaseException:
            if self._fd >= 0:
                os.close(self._fd)
            raise
        self.wrote_position = 0
        self.flushed_position = 0
        self._flush_lock = threading.Lock()
        #: pages below this were faulted in writable ahead of the writes (:meth:`prepare_write`)
        self._populated = 0 if _MADV_POPULATE_WRITE is not None and write_mode == "mmap" \
            and not read_only else file_size
        #: True once :meth:`pwrite_at` wrote to a file of ``mmap`` mode (its flush must
        #: then sync the descriptor, not only the mapping, where msync does not cover both)
        self._pwritten = False

    @property
    def file_end_offset(self) -> int:
        """The offset just past this file in the whole sequence."""
        return self.file_from_offset + self.file_size

    def reserve(self, pos: int, end: int) -> None:
        """Make sure every block of ``[pos, end)`` and ``read_margin`` bytes after it is
        allocated before ``[pos, end)`` is written (see the module docstring): reserves
        from ``reserved_end`` to the end of the ``reserve_chunk``-aligned chunk that holds
        them; a rewrite below the data of a file this process did not create preallocates
        exactly its pages. Raises ``StoreFullError`` on a full disk, before anything was
        written (the next write tries again)."""
        reserved = self.reserved_end
        want = min(self.file_size, end + self.read_margin)
        if reserved is not None and want <= reserved:
            return
        if reserved is None:
            if pos < self.wrote_position:  # a rewrite of old data: only its own pages
                lo = pos // PAGE_SIZE * PAGE_SIZE
                self._fallocate(lo, min(self.file_size, _align_up(end, PAGE_SIZE)) - lo)
                return
            # the first write past the data: that data was written, so its blocks exist
            reserved = self.wrote_position // self._block * self._block
        new_end = min(self.file_size, _align_up(want, self.reserve_chunk))
        self._fallocate(reserved, new_end - reserved)
        self.reserved_end = new_end

    def _fallocate(self, offset: int, length: int) -> None:
        self.reservations += 1
        preallocate(self._fd, offset, length, f"reserving {length} bytes of {self.path}")

    def prepare_write(self, pos: int, n: int) -> None:
        """Get ``[pos, pos + n)`` ready to be written: reserved (:meth:`reserve`, may raise
        ``StoreFullError``) and, in ``mmap`` mode, its pages faulted in writable ahead, up
        to the next POPULATE_CHUNK boundary inside the reservation, with one
        ``madvise(MADV_POPULATE_WRITE)`` (what RocketMQ's ``warmMappedFile`` does by writing
        a zero per page: one page fault per 4 KiB costs more than the copy itself). The
        populate never changes a byte and is skipped where the kernel lacks it."""
        reserved = self.reserved_end
        if reserved is None or pos + n + self.read_margin > reserved:
            self.reserve(pos, pos + n)
        if pos + n > self._populated:
            self._populate(pos + n)

    def _populate(self, end: int) -> None:
        start = max(self._populated, 0)
        stop = min(self.file_size, _align_up(end, POPULATE_CHUNK),
                   self.reserved_end if self.reserved_end is not None else 0)
        if stop <= start:
            return
        try:
            self.mm.madvise(_MADV_POPULATE_WRITE, start, stop - start)
        except (OSError, ValueError):  # an older kernel: fault page by page as before
            self._populated = self.file_size
            return
        self._populated = stop

    def write_at(self, pos: int, data) -> None:
        """Write ``data`` at ``pos`` and move ``wrote_position`` past it if needed. A full
        disk raises ``StoreFullError`` (in ``write`` mode part of ``data`` may have been
        written: the caller rolls it back, see :meth:`zero_range`)."""
        if self.write_mode == "write":
            self.pwrite_at(pos, data)
            return
        n = len(data)
        self.prepare_write(pos, n)
        self.mm[pos:pos + n] = data
        if pos + n > self.wrote_position:
            self.wrote_position = pos + n

    def pwrite_at(self, pos: int, data) -> None:
        """Write ``data`` at ``pos`` with ``os.pwrite`` on the descriptor, whatever the write
        mode (the commit of RocketMQ's ``TransientStorePool`` buffer to the file channel; the
        page cache is shared with the mapping, so readers of the mapping see the bytes), after
        reserving its space (:meth:`reserve`, may raise ``StoreFullError``: nothing written
        then); no pages of the mapping are faulted in. A full disk during the write raises
        ``StoreFullError`` with part of ``data`` possibly written (the caller rolls it back,
        see :meth:`zero_range`)."""
        n = len(data)
        reserved = self.reserved_end
        if reserved is None or pos + n + self.read_margin > reserved:
            self.reserve(pos, pos + n)
        view = memoryview(data)
        done = 0
        try:
            while done < n:
                done += os.pwrite(self._fd, view[done:], pos + done)
        except OSError as exc:
            if is_full(exc):
                raise full_error(exc, f"writing {self.path}") from exc
            raise
        finally:
            view.release()
        if self.write_mode == "mmap":
            self._pwritten = True
            # the pages written are in the page cache: a later write through the mapping
            # populates from the page that holds the end (never past the reservation)
            end_page = (pos + n) // PAGE_SIZE * PAGE_SIZE
            if end_page > self._populated:
                self._populated = end_page
        if pos + n > self.wrote_position:
            self.wrote_position = pos + n

    def append(self, data) -> int:
        """Write ``data`` at ``wrote_position``; return the position it went to."""
        pos = self.wrote_position
        self.write_at(pos, data)
        return pos

    def flush(self) -> bool:
        """Make the bytes up to ``wrote_position`` durable; True if a sync was issued."""
        with self._flush_lock:
            target = self.wrote_position
            if target <= self.flushed_position:
                return False
            if self._fd < 0:  # deleted by retention meanwhile: nothing left to make durable
                self.flushed_position = target
                return False
            if self.write_mode == "write" or _FDATASYNC_COVERS_MAPPINGS:
                os.fdatasync(self._fd)
            else:
                start = (self.flushed_position // PAGE_SIZE) * PAGE_SIZE
                self.mm.flush(start, target - start)
                if self._pwritten:
                    os.fdatasync(self._fd)
            self.flushed_position = target
            return True

    def force(self) -> None:
        """Sync the whole file whatever the positions say (used after recovery writes)."""
        with self._flush_lock:
            if self._fd < 0:
                return
            if self.write_mode == "write" or _FDATASYNC_COVERS_MAPPINGS:
                os.fdatasync(self._fd)
            else:
                self.mm.flush()
                if self._pwritten:
                    os.fdatasync(self._fd)
            self.flushed_position = self.wrote_position

    def zero_range(self, start: int, end: int) -> None:
        """Zero the bytes in [start, end) that are not zero already, page by page, and move
        ``wrote_position`` / ``flushed_position`` back to ``start`` if they were past it: the
        undo of a failed write. A page holding a non-zero byte has its block allocated, so
        this needs no new space, and a page never written (a hole) is left alone. The zeros
        go through the mapping in both write modes (the page cache is shared), so this
        cannot fail like a ``pwrite``; :meth:`force` makes them durable. Nothing past
        ``reserved_end`` is looked at: this process wrote nothing there, and on tmpfs even
        reading a hole through the mapping needs space."""
        end = min(end, self.file_size,
                  self.reserved_end if self.reserved_end is not None else start)
        p = start
        while p < end:
            q = min((p // PAGE_SIZE + 1) * PAGE_SIZE, end)
            if any(self.mm[p:q]):
                self.mm[p:q] = _ZERO_CHUNK[:q - p]
            p = q
        if self.wrote_position > start:
            self.wrote_position = start
        if self.flushed_position > start:
            self.flushed_position = start

    def view(self, pos: int, size: int) -> memoryview:
        """A zero-copy view of ``size`` bytes at ``pos`` (release it before closing)."""
        return memoryview(self.mm)[pos:pos + size]

    def data_ranges(self, pos: int) -> Iterator[tuple[int, int]]:
        """(start, end) ranges of the file from ``pos`` on that may hold data: holes (never
        written, ``SEEK_DATA`` / ``SEEK_HOLE``) are skipped; where the filesystem cannot
        tell, or the file has no descriptor, everything from ``pos`` is one range."""
        end = self.file_size
        p = pos
        while p < end:
            try:
                data = os.lseek(self._fd, p, os.SEEK_DATA)
                hole = min(os.lseek(self._fd, data, os.SEEK_HOLE), end)
            except OSError as exc:
                if exc.errno == errno.ENXIO:  # no data after p
                    return
                data, hole = p, end  # SEEK_DATA unsupported: look at everything
            if data >= end:
                return
            yield max(data, pos), hole
            p = hole

    def zero_from(self, pos: int) -> None:
        """Overwrite every written byte from ``pos`` to the end with zeros, so a later scan
        cannot mistake stale bytes for messages. Holes (never written) are skipped."""
        for q, hole in self.data_ranges(pos):
            while q < hole:
                n = min(len(_ZERO_CHUNK), hole - q)
                if any(self.mm[q:q + n]):
                    self.mm[q:q + n] = _ZERO_CHUNK[:n]
                q += n
        if self.wrote_position > pos:
            self.wrote_position = pos
        if self.flushed_position > pos:
            self.flushed_position = pos

    def has_data_after(self, pos: int) -> bool:
        """True if any non-zero byte follows ``pos`` (holes are skipped)."""
        for q, hole in self.data_ranges(pos):
            while q < hole:
                n = min(len(_ZERO_CHUNK), hole - q)
                if any(self.mm[q:q + n]):
                    return True
                q += n
        return False

    def allocated_bytes(self) -> int:
        """Bytes the file really occupies on disk (all of it once preallocated)."""
        return os.fstat(self._fd).st_blocks * 512 if self._fd >= 0 else 0

    def close(self) -> None:
        """Unmap and close (idempotent). A mapping still exported to a reader is left to the
        garbage collector instead of failing."""
        with self._flush_lock:  # never close a descriptor a flush is syncing
            if self._fd < 0:
                return
            close_mapping(self.mm, self._fd)
            self._fd = -1

    def release(self) -> None:
        """Close the descriptor but keep the mapping for readers still holding this object
        (it is unmapped when the last reference goes)."""
        with self._flush_lock:
            if self._fd >= 0:
                os.close(self._fd)
                self._fd = -1

    def destroy(self, *, unmap: bool = True) -> int:
        """Delete the file; return its size. With ``unmap=False`` (retention, while readers
        may still hold this object) only the descriptor is closed: the mapping stays valid
        until the last reference goes, like RocketMQ's reference-counted MappedFile."""
        if unmap:
            self.close()
        else:
            self.release()
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass
        return self.file_size

    def __repr__(self) -> str:
        return f"<MappedFile {self.path} wrote={self.wrote_position}>"
