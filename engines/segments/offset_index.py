"""Kafka's ``.index``: sparse map from offsets to byte positions in the segment's ``.log``.

Each 8-byte entry is ``int32 relativeOffset, int32 position``: the batch whose **last** offset
is ``base_offset + relativeOffset`` starts at ``position``. Entries strictly increase in both
fields. A lookup takes the floor entry (``native.offset_index_floor``: binary search) and the
segment then walks batch headers forward from its position. Not checksummed: rebuilt from the
log after a crash. Thread-safety: see :class:`AbstractIndex`.
"""
from __future__ import annotations

import numpy as np

from mqstore import native
from mqstore.engines.segments import format as fmt
from mqstore.engines.segments.abstract_index import AbstractIndex


class OffsetIndex(AbstractIndex):
    """The ``.index`` file of one segment (entries of ``format.OFFSET_INDEX_ENTRY``)."""

    entry = fmt.OFFSET_INDEX_ENTRY
    entry_size = fmt.OFFSET_INDEX_ENTRY_SIZE
    dtype = np.dtype([("relative_offset", ">i4"), ("position", ">i4")])

    def append(self, offset: int, position: int) -> None:
        """Add an entry for the batch ending at ``offset`` that starts at ``position``."""
        rel = offset - self.base_offset
        if self.entries:
            last_rel, last_pos = self.entry_at(self.entries - 1)
            if rel <= last_rel or position <= last_pos:
                raise ValueError(
                    f"offset index {self.path}: entry ({offset}, {position}) does not follow "
                    f"({self.base_offset + last_rel}, {last_pos})")
        self._write_entry(rel, position)

    def lookup(self, target_offset: int) -> tuple[int, int]:
        """``(offset, position)`` of the largest entry with offset <= target, or
        ``(base_offset, 0)`` when there is none (Kafka's ``OffsetIndex.lookup``)."""
        self.refresh()
        for attempt in range(3):
            try:
                slot = native.offset_index_floor(self.buffer(), self.entries,
                                                 target_offset - self.base_offset)
                if slot < 0:
                    return self.base_offset, 0
                rel, pos = self.entry_at(slot)
                return self.base_offset + rel, pos
            except (ValueError, BufferError):  # the map was swapped by a roll: retry
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")

    def furthest_position(self, from_offset: int, position_limit: int, end_offset: int,
                          spacing: int) -> int | None:
        """The position of the last entry at or after the floor of ``from_offset`` whose
        position <= ``position_limit`` and whose offset < ``end_offset``, or None (a
        transfer's jump over whole batches). ``spacing`` is the least distance between two
        entries' positions (the index interval), which bounds the slots searched."""
        self.refresh()
        buf, n = self.buffer(), self.entries
        if not n:
            return None
        lo = max(native.offset_index_floor(buf, n, from_offset - self.base_offset), 0)
        hi = min(n, lo + (position_limit - self.entry_at(lo)[1]) // max(spacing, 1) + 2)
        rel_end = end_offset - self.base_offset
        unpack = self.entry.unpack_from
        while lo < hi:  # first slot past the limits
            mid = (lo + hi) // 2
            rel, pos = unpack(buf, mid * self.entry_size)
            if pos <= position_limit and rel < rel_end:
                lo = mid + 1
            else:
                hi = mid
        if lo == 0:
            return None
        rel, pos = unpack(buf, (lo - 1) * self.entry_size)
        return pos if pos <= position_limit and rel < rel_end else None

    def last_offset(self) -> int:
        """The offset of the last entry (``base_offset`` when empty)."""
        e = self.last_entry()
        return self.base_offset if e is None else self.base_offset + e[0]

    def last_position(self) -> int:
        """The position of the last entry (0 when empty)."""
        e = self.last_entry()
        return 0 if e is None else e[1]

    def sanity_problem(self, log_size: int) -> str | None:
        """Why this index cannot be trusted against a ``.log`` of ``log_size`` bytes, or None."""
        if not self.entries:
            return None
        arr = self.array()
        rel = arr["relative_offset"].astype(np.int64)
        pos = arr["position"].astype(np.int64)
        if rel[0] <= 0 or (rel.size > 1 and (np.any(np.diff(rel) <= 0) or np.any(np.diff(pos) <= 0))):
            return "offset index entries are not strictly increasing"
        if pos[0] < 0 or int(pos[-1]) >= log_size:
            return f"offset index entry at position {int(pos[-1])} is past the end of the log ({log_size})"
        return None
