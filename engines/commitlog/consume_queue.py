"""ConsumeQueue: the per-(topic, queue) index of CommitLog positions (RocketMQ's ConsumeQueue).

Files ``consumequeue/<topic>/<queueId>/<20-digit byte offset>`` of ``cq_units_per_file`` units
of 20 bytes (``format.CQ_UNIT``): int64 commitlog offset, int32 TOTALSIZE, int64 tag hash
(Java ``String.hashCode`` of the tag, sign-extended; 0 for no tag). Unit q sits at byte
``q * 20`` of the queue's logical space, so finding an offset is arithmetic. Each file is
memory-mapped whole and viewed as a numpy structured array (``native.CQ_UNIT``) that serves
reads and tag filtering without copying.

A queue first written at a non-zero offset (its head was deleted, or the ConsumeQueue was
rebuilt after retention) starts with filler units (offset 0, size 0x7FFFFFFF, tag 0) up to
that offset, as RocketMQ's ``fillPreBlank`` does. The ConsumeQueue is derived data: the
dispatcher can rebuild it from the CommitLog at any time.
"""
from __future__ import annotations

import os
import threading

import numpy as np

from mqstore import errors, native
from mqstore.damage import translate_full
from mqstore.storedir import fsync_dir

from . import format as fmt
from .mapped_file import MappedFile, file_name, parse_file_name

CQ_DTYPE = native.CQ_UNIT
_FILLER = fmt.CQ_UNIT.pack(0, fmt.CQ_FILLER_SIZE, 0)


class ConsumeQueue:
    """One queue's units across its files.

    ``max_units`` is the next queue offset to be written (units present, fillers included);
    ``min_logic_offset`` the first unit whose message is still in the CommitLog.

    Thread-safety: one writer (the dispatcher, or recovery) calls :meth:`put` and the
    truncate/delete methods; readers in any thread use :meth:`unit` / :meth:`unit_block` on
    units below ``max_units``, which never change once written (they are only removed whole
    by retention, under the queue's lock, or replaced by recovery before the store opens).
    """

    def __init__(self, root: str, topic: str, queue_id: int, units_per_file: int, *,
                 read_only: bool = False):
        self.topic = topic
        self.queue_id = queue_id
        self.dir = os.path.join(root, topic, str(queue_id))
        self.units_per_file = units_per_file
        self.file_size = units_per_file * fmt.CQ_UNIT_SIZE
        self.read_only = read_only
        self.files: list[MappedFile] = []
        self.arrays: list[np.ndarray] = []
        self.max_units = 0
        self.min_logic_offset = 0
        self.max_phys_end = 0
        self._lock = threading.RLock()
        self._flush_lock = threading.Lock()
        self._dir_dirty = False
        self._parents_dirty = False

    # ----- files -----
    @property
    def first_unit(self) -> int:
        """The queue offset of the first unit of the first file (0 if there is no file)."""
        return self.files[0].file_from_offset // fmt.CQ_UNIT_SIZE if self.files else 0

    def load(self) -> None:
        """Map the queue's existing files (20-digit names, contiguous, full size)."""
        if not os.path.isdir(self.dir):
            return
        names = sorted(n for n in os.listdir(self.dir) if parse_file_name(n) is not None)
        for name in names:
            path = os.path.join(self.dir, name)
            if self.files and parse_file_name(name) != self.files[-1].file_end_offset:
                if self.read_only:
                    break
                raise errors.CorruptRecordError(
                    f"consume queue files are not contiguous at {name}", path, 0)
            if os.path.getsize(path) != self.file_size:
                if self.read_only:
                    break  # being created by the writer
                if os.path.getsize(path) == 0 and name == names[-1]:
                    os.unlink(path)
                    continue
            self._map(path, create=False)
        if self.files:
            self.max_units = self.first_unit + len(self.files) * self.units_per_file

    def load_new_files(self) -> bool:
        """Read-only follower: map files the writer created since; True if any."""
        if not os.path.isdir(self.dir):
            return False
        start = self.files[-1].file_end_offset if self.files else -1
        added = False
        for name in sorted(os.listdir(self.dir)):
            off = parse_file_name(name)
            if off is None or off < start or (start >= 0 and off != start):
                continue
            path = os.path.join(self.dir, name)
            try:
                if os.path.getsize(path) != self.file_size:
                    break
                self._map(path, create=False)
            except FileNotFoundError:
                break
            start = self.files[-1].file_end_offset
            added = True
        return added

    def _map(self, path: str, create: bool) -> None:
        mf = MappedFile(path, self.file_size, create=create, read_only=self.read_only)
        mf.wrote_position = mf.flushed_position = 0 if create else self.file_size
        self.files.append(mf)
        self.arrays.append(np.frombuffer(mf.mm, dtype=CQ_DTYPE))

    def _new_file(self, first_unit: int) -> None:
        """Create (preallocated: a full disk raises ``StoreFullError`` and leaves no file)
        and map the file starting at ``first_unit``."""
        if not self.files and not os.path.isdir(self.dir):
            with translate_full(f"creating {self.dir}"):
                os.makedirs(self.dir, exist_ok=True)
            self._parents_dirty = True
        self._map(os.path.join(self.dir, file_name(first_unit * fmt.CQ_UNIT_SIZE)), create=True)
        self._dir_dirty = True

    # ----- recovery -----
    def scan_end(self) -> int:
        """The queue offset where the units end (RocketMQ ``ConsumeQueue#recover``): from the
        third-last file, the first unit with offset < 0 or size <= 0 ends the queue."""
        if not self.files:
            return 0
        start = max(0, len(self.files) - 3)
        end_unit = self.first_unit + start * self.units_per_file
        for i in range(start, len(self.files)):
            arr = self.arrays[i]
            bad = np.flatnonzero((arr["offset"] < 0) | (arr["size"] <= 0))
            if bad.size:
                return end_unit + int(bad[0])
            end_unit += self.units_per_file
        return end_unit

    def recover(self) -> None:
        """Find the end of the units (:meth:`scan_end`), zero what follows, delete later
        files."""
        if not self.files:
            self.max_units = 0
            return
        self.truncate_units(self.scan_end())

    def truncate_units(self, end_unit: int) -> None:
        """Keep units below ``end_unit`` only: zero the rest, delete files left empty."""
        with self._lock:
            keep_files, keep_arrays = [], []
            for mf, arr in zip(self.files, self.arrays):
                base = mf.file_from_offset // fmt.CQ_UNIT_SIZE
                if base >= end_unit and not (base == end_unit == self.first_unit):
                    del arr
                    mf.destroy()
                    self._dir_dirty = True
                    continue
                if base + self.units_per_file > end_unit:
                    mf.zero_from((end_unit - base) * fmt.CQ_UNIT_SIZE)
                    mf.force()
                else:
                    mf.wrote_position = mf.flushed_position = self.file_size
                keep_files.append(mf)
                keep_arrays.append(arr)
            self.files, self.arrays = keep_files, keep_arrays
            self.max_units = end_unit if self.files else 0
            self.max_phys_end = self._last_phys_end()

    def truncate_dirty(self, phys_end: int) -> None:
        """Drop the tail units that point at or past ``phys_end`` (the CommitLog was cut
        there: RocketMQ ``truncateDirtyLogicFiles``)."""
        if self.max_units == 0 or self.max_phys_end <= phys_end:
            return
        end = self.max_units
        for i in range(len(self.files) - 1, -1, -1):
            base = self.files[i].file_from_offset // fmt.CQ_UNIT_SIZE
            n = min(self.units_per_file, end - base)
            if n <= 0:
                continue
            arr = self.arrays[i][:n]
            ends = arr["offset"].astype(np.int64) + arr["size"]
            bad = np.flatnonzero((ends > phys_end) & (arr["size"] != fmt.CQ_FILLER_SIZE))
            if not bad.size:
                break
            end = base + int(bad[0])
            if bad[0] > 0:
                break
        self.truncate_units(end)

    def _last_phys_end(self) -> int:
        q = self.max_units - 1
        if q < self.first_unit or not self.files:
            return 0
        off, size, _ = self.unit(q)
        return 0 if size == fmt.CQ_FILLER_SIZE else off + size

    # ----- writes (the dispatcher) -----
    def put(self, queue_offset: int, phys_offset: int, size: int, tag_hash: int) -> bool:
        """Write the unit for ``queue_offset`` unless it is already there (idempotent
        re-dispatch); a gap before it is filled with filler units. True if written."""
        if queue_offset < self.max_units:
            return False
        with self._lock:
            upf = self.units_per_file
            if not self.files:
                self._new_file((queue_offset // upf) * upf)
                self.max_units = self.first_unit
                self.min_logic_offset = queue_offset
            while self.max_units < queue_offset:  # RocketMQ fillPreBlank
                self._write_unit(self.max_units, _FILLER)
                self.max_units += 1
            self._write_unit(queue_offset, fmt.CQ_UNIT.pack(phys_offset, size, tag_hash))
            self.max_units = queue_offset + 1
            self.max_phys_end = phys_offset + size
        return True

    def put_many(self, units: list[tuple[int, int, int, int]]) -> None:
        """:meth:`put` for a run of (queue offset, commitlog offset, size, tag hash) in
        queue order, written with one copy per file when they continue the queue."""
        i = 0
        while i < len(units) and units[i][0] < self.max_units:
            i += 1
        if i == len(units):
            return
        if not self.files or units[i][0] != self.max_units:
            self.put(*units[i])  # creates the first file / fills a gap
            i += 1
            if i == len(units):
                return
        q0 = units[i][0]
        if q0 != self.max_units or units[-1][0] != q0 + len(units) - i - 1:
            for u in units[i:]:
                self.put(*u)
            return
        pack = fmt.CQ_UNIT.pack
        data = b"".join([pack(phys, size, tag) for _q, phys, size, tag in units[i:]])
        with self._lock:
            upf = self.units_per_file
            q = q0
            off = 0
            while off < len(data):
                rel = q % upf
                k = min(upf - rel, (len(data) - off) // fmt.CQ_UNIT_SIZE)
                idx = (q - self.first_unit) // upf
                while idx >= len(self.files):
                    self._new_file(self.first_unit + len(self.files) * upf)
                self.files[idx].write_at(rel * fmt.CQ_UNIT_SIZE,
                                         data[off:off + k * fmt.CQ_UNIT_SIZE])
                q += k
                off += k * fmt.CQ_UNIT_SIZE
            last = units[-1]
            self.max_units = q
            self.max_phys_end = last[1] + last[2]

    def reserve_units(self, first: int, last: int) -> None:
        """Create now the files that units ``first``..``last`` will be written to. The
        append path calls it (under the CommitLog put lock, before it writes anything), so
        that a full disk fails the append with ``StoreFullError`` instead of the dispatcher,
        which then never has to create a file for a message that was acknowledged."""
        with self._lock:
            upf = self.units_per_file
            if not self.files:
                self._new_file((first // upf) * upf)
                self.max_units = self.first_unit
                self.min_logic_offset = first
            while (last - self.first_unit) // upf >= len(self.files):
                self._new_file(self.first_unit + len(self.files) * upf)

    def _write_unit(self, q: int, unit: bytes) -> None:
        idx = (q - self.first_unit) // self.units_per_file
        while idx >= len(self.files):
            self._new_file(self.first_unit + len(self.files) * self.units_per_file)
        self.files[idx].write_at((q % self.units_per_file) * fmt.CQ_UNIT_SIZE, unit)

    # ----- reads -----
    def unit(self, q: int) -> tuple[int, int, int]:
        """(commitlog offset, size, tag hash) of unit ``q`` (must exist)."""
        with self._lock:  # retention may drop the head file concurrently
            idx = (q - self.first_unit) // self.units_per_file
            mm = self.files[idx].mm
        return fmt.CQ_UNIT.unpack_from(mm, (q % self.units_per_file) * fmt.CQ_UNIT_SIZE)

    def unit_block(self, q: int, end: int) -> tuple[np.ndarray, MappedFile] | None:
        """The units from ``q`` to the end of its file (at most up to ``end``) as a numpy
        view, with the file (for ``native.cq_tag_scan``); None if ``q`` has no file."""
        with self._lock:  # retention may drop the head file concurrently
            first = self.first_unit
            idx = (q - first) // self.units_per_file
            if q < first or idx >= len(self.files):
                return None
            arr, mf = self.arrays[idx], self.files[idx]
        rel = q % self.units_per_file
        n = min(self.units_per_file - rel, end - q)
        return arr[rel:rel + n], mf

    # ----- flush, retention -----
    def flush(self) -> int:
        """msync the files written since the last flush; return the syncs issued.

        Serialised by ``_flush_lock`` (not the writer's lock, so the dispatcher is never
        blocked behind an fsync): a second flush waits until the first one's directory
        syncs are done instead of seeing the dirty flags already cleared and returning
        while the new files' directory entries are not yet durable. The flags are cleared
        *before* the sync, so a file created meanwhile is covered by this sync or the next.
        """
        with self._flush_lock:
            syncs = 0
            for mf in reversed(list(self.files)):  # written in order: stop at a clean file
                if mf.wrote_position == 0:
                    continue  # created ahead by reserve_units, nothing in it yet
                if mf.wrote_position <= mf.flushed_position:
                    break
                if mf.flush():
                    syncs += 1
            if self._dir_dirty:
                self._dir_dirty = False
                fsync_dir(self.dir)
                syncs += 1
            if self._parents_dirty:  # a new queue: its directory entries must be durable too
                self._parents_dirty = False
                topic_dir = os.path.dirname(self.dir)
                for d in (topic_dir, os.path.dirname(topic_dir)):
                    fsync_dir(d)
                    syncs += 1
            return syncs

    def correct_min_offset(self, min_phys: int) -> None:
        """Move ``min_logic_offset`` to the first unit whose message is at or after
        ``min_phys`` (RocketMQ ``correctMinOffset``)."""
        for mf, arr in zip(self.files, self.arrays):
            base = mf.file_from_offset // fmt.CQ_UNIT_SIZE
            n = min(self.units_per_file, self.max_units - base)
            if n <= 0:
                break
            a = arr[:n]
            # commitlog offsets grow along a queue (fillers, offset 0, only at its head)
            i = int(np.searchsorted(a["offset"], min_phys, side="left"))
            while i < n and a["size"][i] in (fmt.CQ_FILLER_SIZE, 0):
                i += 1
            if i < n:
                self.min_logic_offset = max(self.min_logic_offset, base + i)
                return
        self.min_logic_offset = max(self.min_logic_offset, self.max_units)

    def delete_expired(self, min_phys: int) -> int:
        """Delete files (never the last) whose every unit points below ``min_phys``; return
        the bytes deleted."""
        deleted = 0
        with self._lock:
            while len(self.files) > 1:
                last_off, last_size, _ = fmt.CQ_UNIT.unpack_from(
                    self.files[0].mm, self.file_size - fmt.CQ_UNIT_SIZE)
                if last_size != fmt.CQ_FILLER_SIZE and last_off + last_size > min_phys:
                    break
                mf = self.files.pop(0)
                self.arrays.pop(0)
                deleted += mf.destroy(unmap=False)
                self._dir_dirty = True
        self.correct_min_offset(min_phys)
        return deleted

    def allocated_bytes(self) -> int:
        """Bytes on disk."""
        return sum(mf.allocated_bytes() for mf in list(self.files))

    def close(self) -> None:
        """Unmap every file."""
        self.arrays = []
        for mf in self.files:
            mf.close()
