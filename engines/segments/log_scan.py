"""The one validating scan of a ``.log``, shared by recovery (``LogSegment.recover``) and the
offline check (``tools.verify_files``).

A scan reads the file in chunks and validates every batch (size >= 61, magic 2, CRC-32C,
last offset inside int64: ``native.scan_batches``) and the offset chain: each batch's
baseOffset must be exactly the offset after the previous batch's last one (the first batch's
must be the segment's base offset), and no relative offset may pass 2^31-1. mqstore never
writes a gap inside a segment; ``on_corruption="skip"`` fills the offsets it drops with an
empty batch (see :func:`record_batch.empty_batch`), so the chain stays exact.

Where validation stops the scan does not give up (LevelDB's reader resynchronises the same
way): it looks forward for the next position where a whole batch validates with its CRC and
has a plausible baseOffset (above the offset the chain expected, since the damage held at
least one, and not further above it than the bytes skipped), and goes on from there. The result lists every intact batch and every
damaged byte range, so the caller can classify each range (torn tail or corruption), count
the records after it, and truncate or skip. Pure reads: safe next to a live writer.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np

from mqstore import native
from mqstore.engines.segments import format as fmt

#: bytes validated per read (into one reused buffer: 1 MiB stays in the CPU cache between
#: the copy and the CRC, where 8 MiB chunks ran at a third of the speed)
SCAN_CHUNK = 1024 * 1024
#: bytes searched per read while resynchronising
RESYNC_CHUNK = 1024 * 1024


class Damaged(NamedTuple):
    """A byte range of a ``.log`` that holds no intact batch."""

    start: int  #: position of the first bad byte
    end: int  #: where the next intact batch starts (the file size if none does)
    first_offset: int  #: the first offset it lost (the one the chain expected)
    next_base: int | None  #: baseOffset of the intact batch at ``end`` (None: none follows)
    detail: str  #: what was wrong at ``start``

    @property
    def offsets_lost(self) -> int | None:
        """How many offsets the range held, when an intact batch follows it."""
        return None if self.next_base is None else self.next_base - self.first_offset


@dataclass
class LogScan:
    """What :func:`scan_log` found in one ``.log``."""

    file_size: int
    #: intact batches in file order: ``(position, size, base_offset, last_offset, max_ts)``
    rows: list[tuple[int, int, int, int, int]] = field(default_factory=list)
    damaged: list[Damaged] = field(default_factory=list)

    @property
    def valid_end(self) -> int:
        """End of the intact prefix (where the first damage starts)."""
        return self.damaged[0].start if self.damaged else self.file_size

    @property
    def records(self) -> int:
        """Offsets held by the intact batches."""
        return sum(last - base + 1 for _p, _s, base, last, _t in self.rows)

    @property
    def last_offset(self) -> int | None:
        """The last offset of the last intact batch (None when there is none)."""
        return self.rows[-1][3] if self.rows else None

    def records_after(self, position: int) -> int:
        """Offsets held by the intact batches that start at or after ``position``."""
        return sum(last - base + 1 for p, _s, base, last, _t in self.rows if p >= position)

    def rows_before(self, position: int) -> list[tuple[int, int, int, int, int]]:
        return [r for r in self.rows if r[0] < position]


def scan_log(fd: int, base_offset: int, *, file_size: int | None = None) -> LogScan:
    """Validate the whole ``.log`` open as ``fd`` (a segment with ``base_offset``)."""
    if file_size is None:
        file_size = os.fstat(fd).st_size
    scan = LogScan(file_size)
    pos, expect = 0, base_offset
    while pos < file_size:
        pos, expect, detail = _scan_run(fd, pos, file_size, expect, base_offset, scan.rows)
        if detail is None:
            break
        found = _resync(fd, pos, file_size, expect, base_offset)
        if found is None:
            scan.damaged.append(Damaged(pos, file_size, expect, None, detail))
            break
        nxt, nbase = found
        scan.damaged.append(Damaged(pos, nxt, expect, nbase, detail))
        pos, expect = nxt, nbase
    return scan


def _scan_run(fd: int, pos: int, file_size: int, expect: int, base_offset: int,
              rows: list) -> tuple[int, int, str | None]:
    """Append the intact batches from ``pos`` to ``rows`` until the file ends or a batch
    fails; return ``(stop position, next expected offset, why it stopped or None)``."""
    need = SCAN_CHUNK
    space = bytearray(SCAN_CHUNK)  # one buffer reused: a chunk that stays in the CPU cache
    while pos < file_size:
        if need > len(space):
            space = bytearray(need)
        n = os.preadv(fd, [memoryview(space)[:min(need, file_size - pos)]], pos)
        buf = memoryview(space)[:n]
        scan = native.scan_batches(buf, 0, n)
        for rpos, size, base, last, max_ts in zip(
                scan.positions.tolist(), scan.sizes.tolist(), scan.base_offsets.tolist(),
                scan.last_offsets.tolist(), scan.max_timestamps.tolist()):
            if base != expect:
                return pos + rpos, expect, f"batch has baseOffset {base} where {expect} was expected"
            if last - base_offset > fmt.MAX_RELATIVE_OFFSET:
                return pos + rpos, expect, f"batch last offset {last} does not fit the segment"
            rows.append((pos + rpos, size, base, last, max_ts))
            expect = last + 1
        chunk_start, pos = pos, pos + scan.valid_end
        if scan.status == native.SCAN_OK:
            need = SCAN_CHUNK
            continue
        if scan.status != native.SCAN_TORN:
            return pos, expect, "corrupt batch (size, magic or CRC-32C)"
        # SCAN_TORN: the end of the file, or only the end of this chunk
        if file_size - pos < fmt.RECORD_BATCH_OVERHEAD:
            return pos, expect, f"incomplete batch: {file_size - pos} bytes at the end of the file"
        if chunk_start + n >= file_size:
            return pos, expect, "batch runs past the end of the file"
        size = fmt.BASE_OFFSET_AND_LENGTH.unpack_from(os.pread(fd, 12, pos), 0)[1] + 12
        if pos + size > file_size:
            return pos, expect, "batch runs past the end of the file"
        need = max(size, SCAN_CHUNK)
    return pos, expect, None


def _resync(fd: int, stop: int, file_size: int, expect: int,
            base_offset: int) -> tuple[int, int] | None:
    """The next ``(position, baseOffset)`` after ``stop`` where a whole batch validates and
    its baseOffset is plausible, or None. Candidates start at least one header past ``stop``
    (the damaged batch had at least that much) and are filtered with numpy on their magic
    byte, length and baseOffset before any CRC is computed."""
    lo = stop + fmt.RECORD_BATCH_OVERHEAD
    hdr = fmt.RECORD_BATCH_OVERHEAD
    while lo + hdr <= file_size:
        buf = os.pread(fd, min(RESYNC_CHUNK + hdr, file_size - lo), lo)
        arr = np.frombuffer(buf, dtype=np.uint8)
        limit = len(buf) - hdr  # candidates whose header lies in this chunk
        if limit < 0:
            break
        cand = np.flatnonzero(arr[16:16 + limit + 1] == fmt.MAGIC)
        if cand.size:
            idx = cand[:, None] + np.arange(12)
            head = arr[idx]
            bases = head[:, :8].copy().view(">i8").ravel().astype(np.int64)
            sizes = head[:, 8:12].copy().view(">i4").ravel().astype(np.int64) + 12
            absolute = cand.astype(np.int64) + lo
            ok = ((sizes >= hdr) & (absolute + sizes <= file_size) & (bases > expect)
                  & (bases - expect <= absolute - stop)
                  & (bases - base_offset <= fmt.MAX_RELATIVE_OFFSET))
            for a, size, base in zip(absolute[ok].tolist(), sizes[ok].tolist(),
                                     bases[ok].tolist()):
                batch = os.pread(fd, size, a)
                got = native.scan_batches(batch, 0, len(batch))
                if got.status == native.SCAN_OK and got.positions.size == 1 and \
                        int(got.last_offsets[0]) - base_offset <= fmt.MAX_RELATIVE_OFFSET:
                    return a, base
        lo += max(limit + 1, 1)
    return None
