"""The recovery half of a ConsumeQueue: what an open reads, checks and repairs.

:class:`ConsumeQueueRecovery` is a mixin of :class:`~.consume_queue.ConsumeQueue` (the file
and write side lives there). At open, recovery finds where a queue's units end (RocketMQ
``ConsumeQueue#recover``: the first empty unit), checks the queue's invariants on the way,
cuts what follows, and, after a crash, compares the units the dispatcher derives again from
the CommitLog with the ones present (``verify_put`` / ``finish_verify``).

Every read here goes through ``pread``, never through the queue's mapping: an open touches
every queue, and a read through the mapping would leave pages of each idle queue resident
(the kernel's fault-around makes one touched unit 64 KiB). Only bytes that change are
written, and only a file that changed is synced.
"""
from __future__ import annotations

import os
from collections.abc import Iterator

import numpy as np

from mqstore import native
from mqstore.damage import DERIVED_REBUILT, RecoveryLog

from . import format as fmt
from .mapped_file import MappedFile, file_name

CQ_DTYPE = native.CQ_UNIT
#: a filler unit (offset 0, size 0x7FFFFFFF, tag 0): RocketMQ ``fillPreBlank``
FILLER_UNIT = fmt.CQ_UNIT.pack(0, fmt.CQ_FILLER_SIZE, 0)


def _zero_tail(mf: MappedFile, pos: int) -> bool:
    """``MappedFile.zero_from`` for a ConsumeQueue tail: every byte from ``pos`` on becomes
    zero, looking only at data regions (``SEEK_DATA``), read with ``pread`` (not through
    the mapping, which would leave the pages resident) and compared with zeros in C; only
    chunks holding a non-zero byte (so their blocks exist) are written, through the
    mapping. Returns True if a byte changed (the caller then syncs the file). The positions
    move back to ``pos`` as with ``zero_from``."""
    changed = False
    fd = mf._fd
    if fd >= 0:
        for q, hole in mf.data_ranges(pos):
            while q < hole:
                n = min(len(_ZEROS), hole - q)
                chunk = os.pread(fd, n, q)
                if chunk != _ZEROS[:len(chunk)]:
                    mf.mm[q:q + len(chunk)] = _ZEROS[:len(chunk)]
                    changed = True
                q += n
    if mf.wrote_position > pos:
        mf.wrote_position = pos
    if mf.flushed_position > pos:
        mf.flushed_position = pos
    return changed


_ZEROS = bytes(1 << 16)


#: the first step of a scan of a queue's last file, in units (doubling up to SCAN_CHUNK)
FIRST_SCAN_STEP = 256


def _scan_steps(units: int, chunk: int) -> Iterator[tuple[int, int]]:
    """(start, length) steps over ``units``: FIRST_SCAN_STEP, doubling up to ``chunk``."""
    lo, step = 0, min(FIRST_SCAN_STEP, chunk)
    while lo < units:
        yield lo, min(step, units - lo)
        lo += step
        step = min(step * 2, chunk)


class ConsumeQueueRecovery:
    """The recovery methods of :class:`~.consume_queue.ConsumeQueue` (its attributes:
    ``files``, ``arrays``, ``units_per_file``, ``first_unit``, ``max_units``, ``_lock`` ...).
    Thread-safety: as ConsumeQueue; recovery runs before the dispatcher starts."""

    def _scan_once(self) -> tuple[int, str | None]:
        """:meth:`_scan`, or the result of the last one if no unit was written since (open
        asks twice: ``units_past``, then ``recover``)."""
        memo = self._scan_memo
        if memo is None:
            memo = self._scan_memo = self._scan()
        return memo

    def scan_end(self) -> int:
        """The queue offset where the units end: the first unit with offset < 0 or size <= 0
        (RocketMQ ``ConsumeQueue#recover``), looked for in every file, the last one read in
        steps of :attr:`SCAN_CHUNK` units so the cost follows the data, not the file size."""
        return self._scan()[0]

    def _scan(self, trusted_below: int | None = None) -> tuple[int, str | None]:
        """(end unit, problem): the first empty unit, or the first unit that breaks the
        queue's invariants, with what is wrong (None for a clean end). Invariants: a real
        unit (not a filler) covers at least a message header, and the commitlog offsets of
        real units increase by at least the previous one's size. When two units are out of
        order either may be the wrong one, so the cut is before both. With
        ``trusted_below`` (recovery after a crash: the checkpoint's durable offset) the
        leading files whose last unit's message ends at or before it are not read: their
        units were synced before the checkpoint was written."""
        upf = self.units_per_file
        prev_end = -1  # end of the last real unit's message
        prev_q = -1  # its queue offset
        for i in range(len(self.files)):
            base = self.first_unit + i * upf
            last = i == len(self.files) - 1
            if trusted_below is not None and not last:
                u = self._read_units(i, upf - 1, 1)
                u_off, u_size = int(u["offset"][0]), int(u["size"][0])
                if u_size != fmt.CQ_FILLER_SIZE and u_size >= fmt.MSG_FIXED_OVERHEAD \
                        and prev_end <= u_off and u_off + u_size <= trusted_below:
                    prev_end, prev_q = u_off + u_size, base + upf - 1
                    continue
                trusted_below = None  # this file and every later one are read
            # the last file in growing steps (a queue of a few units reads a few KiB)
            steps = _scan_steps(upf, self.SCAN_CHUNK) if last else [(0, upf)]
            for lo, step in steps:
                a = self._read_units(i, lo, step)
                off = a["offset"].astype(np.int64)
                size = a["size"].astype(np.int64)
                empty = np.flatnonzero((off < 0) | (size <= 0))
                n = int(empty[0]) if empty.size else len(a)
                real = np.flatnonzero(size[:n] != fmt.CQ_FILLER_SIZE)
                cut = None
                if real.size:
                    r_off = off[real]
                    r_end = r_off + size[real]
                    small = np.flatnonzero(size[real] < fmt.MSG_FIXED_OVERHEAD)
                    if small.size:
                        cut = base + lo + int(real[small[0]])
                    lows = np.concatenate(([prev_end], r_end[:-1]))
                    mono = np.flatnonzero(r_off < lows)
                    if mono.size:
                        m = int(mono[0])
                        before = base + lo + int(real[m - 1]) if m > 0 else prev_q
                        if before < 0:
                            before = base + lo + int(real[m])
                        cut = before if cut is None else min(cut, before)
                    if cut is not None:
                        return cut, "a unit out of order or too small for a message"
                    prev_end = int(r_end[-1])
                    prev_q = base + lo + int(real[-1])
                if n < len(a):
                    if not last or self._written_after(i, lo + n):
                        return base + lo + n, "an empty unit with written units after it"
                    return base + lo + n, None
        return self.first_unit + len(self.files) * upf, None

    def _unit_read(self, q: int) -> tuple[int, int, int]:
        """:meth:`unit` read with ``pread`` (recovery's checks at open)."""
        upf = self.units_per_file
        u = self._read_units((q - self.first_unit) // upf, q % upf, 1)
        return int(u["offset"][0]), int(u["size"][0]), int(u["tag_hash"][0])

    def read_units(self, i: int, lo: int, n: int) -> np.ndarray:
        """Units ``lo`` to ``lo + n`` of file ``i`` as a (copied) numpy array, read with
        ``pread``: for checks at open, which should leave an idle queue's mapping alone."""
        return self._read_units(i, lo, n)

    def _read_units(self, i: int, lo: int, n: int) -> np.ndarray:
        """Units ``lo`` to ``lo + n`` of file ``i`` (cut at its end) read with ``pread``,
        not through the mapping: recovery's scans leave no page of an idle queue mapped
        (resident), and reading a hole allocates nothing, even on tmpfs."""
        n = max(0, min(n, self.units_per_file - lo))
        mf = self.files[i]
        want = n * fmt.CQ_UNIT_SIZE
        raw = os.pread(mf._fd, want, lo * fmt.CQ_UNIT_SIZE) if mf._fd >= 0 else \
            bytes(mf.mm[lo * fmt.CQ_UNIT_SIZE:lo * fmt.CQ_UNIT_SIZE + want])
        if len(raw) < want:  # (a file shorter than its size: load() resized it)
            raw += bytes(want - len(raw))
        return np.frombuffer(raw, dtype=CQ_DTYPE)

    def _written_after(self, i: int, rel: int) -> bool:
        """True if any of the next :attr:`PEEK_UNITS` units after ``rel`` in file ``i``, or
        the first units of the next file, is not empty."""
        if np.any(self._read_units(i, rel + 1, self.PEEK_UNITS)["size"] != 0):
            return True
        return i + 1 < len(self.files) and bool(
            np.any(self._read_units(i + 1, 0, self.PEEK_UNITS)["size"] != 0))

    def recover(self, log: RecoveryLog | None = None, min_phys: int = 0,
                trusted_below: int | None = None) -> int | None:
        """Find the end of the units (:meth:`scan_end`), zero what follows, delete later
        files. Returns None if the queue simply ends there, or, when a unit before the end
        was empty, torn or out of order (it is cut there) or load() had to resize or delete
        files, the commitlog offset from which the dispatcher must rebuild this queue: the
        last good unit's message (``min_phys`` if there is none). ``trusted_below``: see
        :meth:`_scan`."""
        if not self.files:
            self.max_units = 0
            self._reserved_through = -1
            return min_phys if self._rebuild_needed else None
        end, problem = self._scan_once() if trusted_below is None else \
            self._scan(trusted_below)
        self.truncate_units(end)
        if problem is None and self._rebuild_needed:
            problem = "files were resized or deleted at load"
        self._rebuild_needed = False
        if problem is None:
            return None
        path = self.files[0].path if self.files else self.dir
        # from the last good unit's message itself (its unit is verified again: a unit
        # cut mid-way keeps a plausible offset but a wrong size)
        rebuild = min_phys
        q = self.max_units - 1
        while q >= self.first_unit and self.files:
            phys, size, _tag = self.unit(q)
            if size != fmt.CQ_FILLER_SIZE:
                rebuild = max(phys, min_phys)
                break
            q -= 1
        if log is not None:
            log.record(DERIVED_REBUILT, path, end * fmt.CQ_UNIT_SIZE,
                       f"ConsumeQueue {self.topic}/{self.queue_id} unit {end}: {problem}; cut "
                       f"there and rebuilt from commitlog offset {rebuild}")
        return rebuild

    def units_past(self, phys_end: int) -> int:
        """How many units at the tail (up to the first empty unit) point at or past
        commitlog offset ``phys_end``."""
        n = 0
        if not self.files:
            return 0
        q = self._scan_once()[0] - 1
        while q >= self.first_unit and self.files:
            phys, size, _tag = self._unit_read(q)
            if size != fmt.CQ_FILLER_SIZE:
                if phys + size <= phys_end:
                    break
                n += 1
            q -= 1
        return n

    def verify_put(self, units: list[tuple[int, int, int, int]]) -> int:
        """Recovery's :meth:`put_many`: units already present are compared with the ones
        the dispatcher derived from the CommitLog (numpy, per file) and rewritten when
        different (a torn or flipped unit); queue offsets that no message produced between
        two that did (their message was skipped as damaged) become fillers. Returns the
        units rewritten."""
        fixed = 0
        with self._lock:
            arr = np.array(units, dtype=np.int64).reshape(-1, 4)
            q = arr[:, 0]
            if self.files and int(q[0]) < self.first_unit:
                fixed += self._restore_head(int(q[0]))
            last = self._verify_last
            prev = np.concatenate(([last if last is not None else q[0] - 1], q[:-1]))
            for j in np.flatnonzero(q > prev + 1).tolist():  # gaps: skipped messages
                for g in range(int(prev[j]) + 1, min(int(q[j]), self.max_units)):
                    if g >= self.first_unit and self.unit(g)[1] != fmt.CQ_FILLER_SIZE:
                        self._write_unit(g, FILLER_UNIT)
                        fixed += 1
            present = np.flatnonzero((q >= self.first_unit) & (q < self.max_units))
            upf = self.units_per_file
            if present.size:
                fidx = (q[present] - self.first_unit) // upf
                for i in np.unique(fidx).tolist():
                    sel = present[fidx == i]
                    rel = q[sel] % upf
                    lo = int(rel.min())  # pread: a clean open re-verifies every queue's tail
                    have = self._read_units(i, lo, int(rel.max()) - lo + 1)[rel - lo]
                    wrong = sel[(have["offset"] != arr[sel, 1]) | (have["size"] != arr[sel, 2])
                                | (have["tag_hash"] != arr[sel, 3])]
                    for qq, phys, size, tag in arr[wrong].tolist():
                        self._write_unit(qq, fmt.CQ_UNIT.pack(phys, size, tag))
                        fixed += 1
            top = int(q.max())
            self._verify_last = top if last is None else max(last, top)
            self._verify_fixed += fixed
        rest = arr[arr[:, 0] >= self.max_units]
        if len(rest):
            self.put_array(rest[:, 0], rest[:, 1], rest[:, 2], rest[:, 3])
        return fixed

    def _restore_head(self, q: int) -> int:
        """The dispatcher produced unit ``q`` below the first file: head files were lost
        (retention never deletes a file whose messages are still in the log). Create the
        files from ``q``'s one up to the first, fillers before ``q`` (RocketMQ
        ``fillPreBlank``); the units themselves follow. Returns the fillers written."""
        upf = self.units_per_file
        first = self.first_unit
        for base in range(first - upf, (q // upf) * upf - 1, -upf):
            path = os.path.join(self.dir, file_name(base * fmt.CQ_UNIT_SIZE))
            self._map(path, create=True)  # appended: move it to the front
            self.files.insert(0, self.files.pop())
            self._reserved_through = -1
            self.arrays.insert(0, self.arrays.pop())
            self._dir_dirty = True
        for g in range(self.first_unit, q):
            self._write_unit(g, FILLER_UNIT)
        for mf in self.files[:(first - self.first_unit) // upf]:
            mf.wrote_position = self.file_size
        self.min_logic_offset = min(self.min_logic_offset, q)
        return first - q

    def finish_verify(self, start_phys: int, end_phys: int) -> int:
        """End of recovery's verifying dispatch over commitlog [start_phys, end_phys): units
        after the last one the dispatch produced that still point into that range have no
        message there (it was skipped as damaged, or the unit is garbage): they become
        fillers. Returns the units rewritten during the whole verification."""
        with self._lock:
            q = self.max_units - 1
            lo = self._verify_last + 1 if self._verify_last is not None else self.first_unit
            while q >= lo:
                phys, size, _tag = self._unit_read(q)  # (pread: every queue, at open)
                if size == fmt.CQ_FILLER_SIZE:
                    q -= 1
                    continue
                if phys < start_phys:
                    break
                if phys < end_phys:
                    self._write_unit(q, FILLER_UNIT)
                    self._verify_fixed += 1
                q -= 1
            fixed = self._verify_fixed
            self._verify_last = None
            self._verify_fixed = 0
            self.max_phys_end = self._last_phys_end()
        return fixed

    def truncate_units(self, end_unit: int) -> None:
        """Keep units below ``end_unit`` only: zero the rest, delete files left empty."""
        with self._lock:
            self._scan_memo = None
            keep_files, keep_arrays = [], []
            for mf, arr in zip(self.files, self.arrays):
                base = mf.file_from_offset // fmt.CQ_UNIT_SIZE
                if base >= end_unit and not (base == end_unit == self.first_unit):
                    del arr
                    mf.destroy()
                    self._dir_dirty = True
                    continue
                if base + self.units_per_file > end_unit:
                    if _zero_tail(mf, (end_unit - base) * fmt.CQ_UNIT_SIZE):
                        mf.force()  # only a file that changed is synced
                else:
                    mf.wrote_position = mf.flushed_position = self.file_size
                keep_files.append(mf)
                keep_arrays.append(arr)
            self.files, self.arrays = keep_files, keep_arrays
            self._reserved_through = -1
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
            arr = self._read_units(i, 0, n)
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
        upf = self.units_per_file
        u = self._read_units((q - self.first_unit) // upf, q % upf, 1)  # (not the map)
        size = int(u["size"][0])
        return 0 if size == fmt.CQ_FILLER_SIZE else int(u["offset"][0]) + size
