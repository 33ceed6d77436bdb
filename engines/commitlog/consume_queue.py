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
dispatcher can rebuild it from the CommitLog at any time. What an open reads, checks and
repairs is in ``cq_recovery.py`` (a mixin of :class:`ConsumeQueue`).
"""
from __future__ import annotations

import os
import threading

import numpy as np

from mqstore.damage import DERIVED_REBUILT, RecoveryLog, translate_full
from mqstore.storedir import fsync_dir

from . import format as fmt
from .cq_recovery import CQ_DTYPE, FILLER_UNIT, ConsumeQueueRecovery
from .mapped_file import MappedFile, file_name, parse_file_name

#: bytes of a ConsumeQueue file reserved at a time ahead of its units (``mapped_file.py``);
#: None: :attr:`ConsumeQueue.SCAN_CHUNK` units (80 KiB; the whole file when it is smaller),
#: so that the block recovery's scan reads at the end of the units is always reserved (on
#: tmpfs reading a hole through the mapping needs space too). A default 6 MB file costs
#: 80 KiB until it fills: a thousand queues take 80 MB, not 6 GB
RESERVE_CHUNK: int | None = None


def put_runs(queue_offsets: np.ndarray, phys_offsets: np.ndarray, sizes: np.ndarray,
             tag_hashes: np.ndarray, order: np.ndarray | None, starts: list[int],
             queue_at) -> None:
    """The dispatcher's writes for one pass: the units of many queues, each queue's a run
    of ``order`` (the rows grouped by queue, in CommitLog order within a group; None: the
    rows are one group) from ``starts[j]`` to ``starts[j + 1]``. They are packed as 20-byte
    units in one numpy pass for all queues and each run is one copy into its file, so a
    pass over a thousand queues of a few units each costs one small copy per queue
    (``put_array`` per run took ~40 us of numpy). ``queue_at(row)`` is the ConsumeQueue of
    the queue of row ``row`` (an index before ``order``). A run whose queue offsets do not
    follow each other, or that does not continue its queue, goes through ``put_array``."""
    if order is not None:
        queue_offsets, phys_offsets = queue_offsets[order], phys_offsets[order]
        sizes, tag_hashes = sizes[order], tag_hashes[order]
    n = len(queue_offsets)
    units = np.empty(n, dtype=CQ_DTYPE)
    units["offset"] = phys_offsets
    units["size"] = sizes
    units["tag_hash"] = tag_hashes
    raw = units.view(np.uint8)
    st = np.array(starts, dtype=np.int64)
    en = np.append(st[1:], n)
    step_ok = np.empty(n, dtype=bool)
    step_ok[1:] = queue_offsets[1:] - queue_offsets[:-1] == 1
    step_ok[st] = True  # a run's first unit has no predecessor in it
    bad = np.cumsum(~step_ok)
    good = ((bad[en - 1] - bad[st]) == 0).tolist()
    q0s = queue_offsets[st].tolist()
    phys_end = (phys_offsets[en - 1] + sizes[en - 1]).tolist()
    firsts = (order[st] if order is not None else st).tolist()
    size = fmt.CQ_UNIT_SIZE
    for a, b, first, q0, pe, ok in zip(starts, en.tolist(), firsts, q0s, phys_end, good):
        cols = (queue_offsets[a:b], phys_offsets[a:b], sizes[a:b], tag_hashes[a:b])
        if ok:
            queue_at(first).put_packed(q0, raw[a * size:b * size], pe, cols)
        else:
            queue_at(first).put_array(*cols)


def sync_dirs(dirs) -> int:
    """fsync each directory of ``dirs`` once, deepest first (a queue's directory before its
    topic's, that before ``consumequeue/``); returns the syncs."""
    done = 0
    for d in sorted(set(dirs), key=lambda d: (-d.count(os.sep), d)):
        fsync_dir(d)
        done += 1
    return done

class ConsumeQueue(ConsumeQueueRecovery):
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
        self._root_dirty = False
        self._verify_last: int | None = None  # recovery's verifying dispatch (verify_put)
        #: the last unit a reserve_units call covered (-1: none, or files changed since)
        self._reserved_through = -1
        #: load() had to resize or delete files (or found none): recover() says to rebuild
        self._rebuild_needed = False
        self._verify_fixed = 0
        #: the last _scan() result while no unit was written or cut since (_scan_once)
        self._scan_memo: tuple[int, str | None] | None = None

    # ----- files -----
    @property
    def first_unit(self) -> int:
        """The queue offset of the first unit of the first file (0 if there is no file)."""
        return self.files[0].file_from_offset // fmt.CQ_UNIT_SIZE if self.files else 0

    def load(self, log: RecoveryLog | None = None) -> None:
        """Map the queue's existing files (20-digit names). The ConsumeQueue is derived, so
        a writer repairs what does not fit instead of refusing: a file shorter than the
        configured size is extended with zeros and a longer one cut to it (recovery then
        rebuilds the missing units from the CommitLog); files after a hole in the names are
        deleted. A read-only follower stops at the first such file."""
        if not os.path.isdir(self.dir):
            return
        names = sorted(n for n in os.listdir(self.dir) if parse_file_name(n) is not None)
        for i, name in enumerate(names):
            path = os.path.join(self.dir, name)
            if self.files and parse_file_name(name) != self.files[-1].file_end_offset:
                if self.read_only:
                    break
                for gone in names[i:]:
                    os.unlink(os.path.join(self.dir, gone))
                self._dir_dirty = True
                self._rebuild_needed = True
                if log is not None:
                    log.record(DERIVED_REBUILT, path, 0, "ConsumeQueue files are not "
                               f"contiguous: {len(names) - i} files from here deleted, to be "
                               "rebuilt from the CommitLog")
                break
            size = os.path.getsize(path)
            if size != self.file_size:
                if self.read_only:
                    break  # being created by the writer
                self._rebuild_needed = True
                if size == 0 and name == names[-1]:
                    os.unlink(path)
                    continue
                with open(path, "r+b") as f:
                    os.ftruncate(f.fileno(), self.file_size)
                if log is not None:
                    log.record(DERIVED_REBUILT, path, min(size, self.file_size),
                               f"ConsumeQueue file is {size} bytes, {self.file_size} expected: "
                               "resized; the units it lacks are rebuilt from the CommitLog")
            self._map(path, create=False)
        if self.files:
            self.max_units = self.first_unit + len(self.files) * self.units_per_file
        elif not self.read_only:
            # the directory is made with the first unit and its last file is never
            # deleted (retention keeps it): no file at all means its units were lost
            self._rebuild_needed = True
            if log is not None and not names:
                log.record(DERIVED_REBUILT, self.dir, 0, "ConsumeQueue directory without "
                           "files: rebuilt from the CommitLog")

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
        mf = MappedFile(path, self.file_size, create=create, read_only=self.read_only,
                        reserve_chunk=RESERVE_CHUNK or self.SCAN_CHUNK * fmt.CQ_UNIT_SIZE,
                        read_margin=(self.PEEK_UNITS + 1) * fmt.CQ_UNIT_SIZE, sync_size=False)
        mf.wrote_position = mf.flushed_position = 0 if create else self.file_size
        self.files.append(mf)
        self.arrays.append(np.frombuffer(mf.mm, dtype=CQ_DTYPE))

    def _new_file(self, first_unit: int) -> None:
        """Create (preallocated: a full disk raises ``StoreFullError`` and leaves no file)
        and map the file starting at ``first_unit``."""
        if not self.files and not os.path.isdir(self.dir):
            with translate_full(f"creating {self.dir}"):
                try:
                    os.mkdir(self.dir)  # the topic's directory exists after its first queue
                except FileNotFoundError:  # the topic's first queue (or the store's)
                    os.makedirs(self.dir, exist_ok=True)
                    self._root_dirty = True
                except FileExistsError:
                    pass
            self._parents_dirty = True
        self._map(os.path.join(self.dir, file_name(first_unit * fmt.CQ_UNIT_SIZE)), create=True)
        self._dir_dirty = True

    # ----- recovery -----
    #: units read per step while looking for the end of the last file
    SCAN_CHUNK = 4096
    #: units looked at after the first empty one: a unit torn in the middle of the queue
    #: (a lost sector or page) has written units after it
    PEEK_UNITS = 1024

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
                self._write_unit(self.max_units, FILLER_UNIT)
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
        last = units[-1]
        self._write_run(q0, data, last[1] + last[2])

    def put_array(self, queue_offsets: np.ndarray, phys_offsets: np.ndarray,
                  sizes: np.ndarray, tag_hashes: np.ndarray) -> None:
        """:meth:`put_many` for int64 columns (the dispatcher's pass): a run that continues
        the queue is written as 20-byte units with one copy per file; anything else (a gap
        to fill, units already present) goes through :meth:`put_many`."""
        k = len(queue_offsets)
        q0 = int(queue_offsets[0])
        if not self.files or q0 != self.max_units or \
                int(queue_offsets[-1]) != q0 + k - 1 or \
                (k > 2 and (np.diff(queue_offsets) != 1).any()):
            self.put_many(list(zip(queue_offsets.tolist(), phys_offsets.tolist(),
                                   sizes.tolist(), tag_hashes.tolist())))
            return
        units = np.empty(k, dtype=CQ_DTYPE)
        units["offset"] = phys_offsets
        units["size"] = sizes
        units["tag_hash"] = tag_hashes
        self._write_run(q0, units.tobytes(), int(phys_offsets[-1]) + int(sizes[-1]))

    def put_packed(self, q0: int, data, phys_end: int, columns: tuple) -> None:
        """:meth:`put_array` for a run whose queue offsets are ``q0`` and the next ones
        (the caller checked) already packed as units (``data``, uint8); ``columns`` are
        its four int64 columns, used when the run does not continue the queue."""
        if self.files and q0 == self.max_units:
            self._write_run(q0, data, phys_end)
        else:
            self.put_array(*columns)

    def _write_run(self, q0: int, data: bytes, phys_end: int) -> None:
        """Write the packed units ``data`` from queue offset ``q0`` on (one copy per
        ConsumeQueue file, new files made as needed); the run ends the queue at
        ``phys_end`` in the CommitLog."""
        with self._lock:
            self._scan_memo = None
            upf = self.units_per_file
            q = q0
            off = 0
            while off < len(data):
                rel = q % upf
                n = min(upf - rel, (len(data) - off) // fmt.CQ_UNIT_SIZE)
                idx = (q - self.first_unit) // upf
                while idx >= len(self.files):
                    self._new_file(self.first_unit + len(self.files) * upf)
                self.files[idx].write_at(rel * fmt.CQ_UNIT_SIZE,
                                         data[off:off + n * fmt.CQ_UNIT_SIZE])
                q += n
                off += n * fmt.CQ_UNIT_SIZE
            self.max_units = q
            self.max_phys_end = phys_end

    def reserve_units(self, first: int, last: int) -> None:
        """Create now the files that units ``first``..``last`` will be written to and
        reserve their space (``MappedFile.reserve``: the chunks that hold them, and the
        fillers before them). The append path calls it (under the CommitLog put lock,
        before it writes anything), so that a full disk fails the append with
        ``StoreFullError`` instead of the dispatcher, which then never has to allocate for
        a message that was acknowledged."""
        if first <= last <= self._reserved_through:  # the append path's common case
            return
        with self._lock:
            upf = self.units_per_file
            if not self.files:
                self._new_file((first // upf) * upf)
                self.max_units = self.first_unit
                self.min_logic_offset = first
            while (last - self.first_unit) // upf >= len(self.files):
                self._new_file(self.first_unit + len(self.files) * upf)
            q = max(min(first, self.max_units), self.first_unit)
            while q <= last:  # per file, from the first unit not written yet
                idx = (q - self.first_unit) // upf
                base = self.first_unit + idx * upf
                stop = min(last + 1, base + upf)
                self.files[idx].reserve((q - base) * fmt.CQ_UNIT_SIZE,
                                        (stop - base) * fmt.CQ_UNIT_SIZE)
                q = stop
            mf = self.files[-1]  # what the last file's reservation covers already
            covered = mf.file_from_offset // fmt.CQ_UNIT_SIZE + (
                (mf.reserved_end or 0) - mf.read_margin) // fmt.CQ_UNIT_SIZE - 1
            self._reserved_through = max(last, covered) if first >= self.first_unit else -1

    def _write_unit(self, q: int, unit: bytes) -> None:
        self._scan_memo = None
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
    def flush(self, dirs: set[str] | None = None) -> int:
        """msync the files written since the last flush; return the syncs issued.

        The directories whose entries changed (this queue's, and for a new queue its topic's
        and ``consumequeue/``) are synced here, or, when ``dirs`` is given, added to it for
        the caller to sync once for every queue (:func:`sync_dirs`: a thousand new queues
        of one topic cost three directory syncs, not three thousand); the caller must sync
        them before it records anything as durable.

        Serialised by ``_flush_lock`` (not the writer's lock, so the dispatcher is never
        blocked behind an fsync): a second flush waits until the first one's directory
        syncs are done instead of seeing the dirty flags already cleared and returning
        while the new files' directory entries are not yet durable (with ``dirs``, the
        caller's own lock gives that). The flags are cleared *before* the sync, so a file
        created meanwhile is covered by this sync or the next.
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
            todo = []
            if self._dir_dirty:
                self._dir_dirty = False
                todo.append(self.dir)
            if self._parents_dirty:  # a new queue: its directory entries must be durable too
                self._parents_dirty = False
                topic_dir = os.path.dirname(self.dir)
                todo += [topic_dir, os.path.dirname(topic_dir)]
            if self._root_dirty:  # consumequeue/ itself may be new: the store root's entry
                self._root_dirty = False
                todo.append(os.path.dirname(os.path.dirname(os.path.dirname(self.dir))))
            if dirs is not None:
                dirs.update(todo)
                return syncs
            return syncs + sync_dirs(todo)

    def correct_min_offset(self, min_phys: int) -> None:
        """Move ``min_logic_offset`` to the first unit whose message is at or after
        ``min_phys`` (RocketMQ ``correctMinOffset``). The units are read with ``pread``
        (an open calls it for every queue: the mapping of an idle one stays untouched)."""
        for i, mf in enumerate(list(self.files)):
            base = mf.file_from_offset // fmt.CQ_UNIT_SIZE
            n = min(self.units_per_file, self.max_units - base)
            if n <= 0:
                break
            a = self._read_units(i, 0, n)
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
                self._reserved_through = -1
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
