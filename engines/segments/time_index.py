"""Kafka's ``.timeindex``: sparse map from timestamps to offsets.

Each 12-byte entry is ``int64 timestamp, int32 relativeOffset``: the largest record timestamp
up to offset ``base_offset + relativeOffset`` is ``timestamp``, so every record with a larger
timestamp lies after that offset. Entries are added with the offset index, but only when the
timestamp grows; the last slot is kept free so that :meth:`maybe_append` with ``final=True``
can always record the segment's largest timestamp when it rolls or closes. Not checksummed:
rebuilt from the log after a crash. Thread-safety: see :class:`AbstractIndex`.
"""
from __future__ import annotations

import numpy as np

from mqstore import native
from mqstore.engines.segments import format as fmt
from mqstore.engines.segments.abstract_index import AbstractIndex


class TimeIndex(AbstractIndex):
    """The ``.timeindex`` file of one segment (entries of ``format.TIME_INDEX_ENTRY``)."""

    entry = fmt.TIME_INDEX_ENTRY
    entry_size = fmt.TIME_INDEX_ENTRY_SIZE
    dtype = np.dtype([("timestamp", ">i8"), ("relative_offset", ">i4")])

    @property
    def is_full(self) -> bool:
        # the last slot is reserved for the final entry written on roll / close
        return self.entries >= self.max_entries - 1

    def last_timestamp(self) -> int:
        e = self.last_entry()
        return fmt.NO_TIMESTAMP if e is None else e[0]

    def maybe_append(self, timestamp: int, offset: int, final: bool = False) -> None:
        """Add ``(timestamp, offset)`` if the timestamp is larger than the last entry's."""
        if timestamp < 0 or timestamp <= self.last_timestamp():
            return
        if self.is_full and not final:
            return
        if self.entries and offset - self.base_offset < self.entry_at(self.entries - 1)[1]:
            raise ValueError(f"time index {self.path}: offset {offset} goes backwards")
        if self.entries >= self.file_entries_capacity:
            self.resize_to_max()
        self._write_entry(timestamp, offset - self.base_offset, through_file=final)

    def lookup_below(self, timestamp: int) -> tuple[int, int] | None:
        """``(timestamp, offset)`` of the largest entry with timestamp < ``timestamp``: every
        record at or before that offset is older than ``timestamp``. None if there is none."""
        self.refresh()
        for attempt in range(3):
            try:
                slot = native.time_index_floor(self.buffer(), self.entries, timestamp - 1)
                if slot < 0:
                    return None
                ts, rel = self.entry_at(slot)
                return ts, self.base_offset + rel
            except (ValueError, BufferError):  # the map was swapped by a roll: retry
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")

    def sanity_problem(self, last_offset: int) -> str | None:
        """Why this index cannot be trusted for a segment ending at ``last_offset``, or None."""
        if not self.entries:
            return None
        arr = self.array()
        ts = arr["timestamp"].astype(np.int64)
        rel = arr["relative_offset"].astype(np.int64)
        if ts.size > 1 and (np.any(np.diff(ts) <= 0) or np.any(np.diff(rel) < 0)):
            return "time index entries are not increasing"
        if rel[0] < 0 or self.base_offset + int(rel[-1]) > last_offset:
            return (f"time index entry for offset {self.base_offset + int(rel[-1])} is past the "
                    f"end of the log (last offset {last_offset})")
        return None
