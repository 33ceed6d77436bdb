"""Pure-Python reference of the RocketMQ IndexFile kernels of the native helper.

Split out of ``mqstore._purepy`` (which re-exports these names) to keep modules small; the
same rules apply: this code defines the behaviour, the C versions in ``native/index_file.c``
must match it byte for byte (tests/native/test_native_index_file.py).

IndexFile layout (RocketMQ ``IndexFile``): a 40-byte header, ``hash_slots`` int32 slots each
holding the number of the newest entry of its chain (0 = empty), then ``index_entries``
20-byte entries (int32 key hash, int64 commitlog offset, int32 seconds since
beginTimestamp, int32 previous entry of the chain); entry 0 is never used.
"""
from __future__ import annotations

import struct
from typing import NamedTuple

from mqstore.errors import BufferRangeError


def _bytes_view(buf) -> memoryview:
    """A flat unsigned-byte view of any C-contiguous buffer (as in ``mqstore._purepy``;
    repeated here so this module never imports ``_purepy``, which imports it)."""
    mv = memoryview(buf)
    return mv if mv.format == "B" and mv.ndim == 1 else mv.cast("B")


class IndexPut(NamedTuple):
    """What ``index_put_keys`` did: keys put, and the header fields after it."""

    put: int  # fewer than asked when the file filled up
    index_count: int
    hash_slot_count: int
    begin_timestamp: int
    begin_phy_offset: int


_INDEX_HEADER_SIZE = 40
_INDEX_SLOT = struct.Struct(">i")
_INDEX_ENTRY = struct.Struct(">iqii")  # key hash, commitlog offset, time diff (s), prev entry


def index_put_keys(buf, hash_slots: int, index_entries: int, state, key_hashes, phy_offsets,
                   store_timestamps) -> IndexPut:
    """RocketMQ ``IndexFile.putKey`` for a run of keys, in place in a writable IndexFile
    buffer (40-byte header, ``hash_slots`` int32 slots, ``index_entries`` 20-byte entries).

    ``state`` is ``(indexCount, hashSlotCount, beginTimestamp, beginPhyOffset)``. Entry
    ``indexCount`` gets (hash, offset, seconds since beginTimestamp clamped to
    [0, 2^31-1] or 0 when beginTimestamp <= 0, the slot's previous entry or 0 when it is not
    a valid entry number), then the slot points at it; the first entry of a file sets the
    begin fields. Stops when the file is full. The header is left to the caller.
    ``BufferRangeError`` if the buffer is smaller than the layout; ``ValueError`` for
    ``hash_slots < 1``, a hash outside int32 or sequences of different lengths.
    """
    hashes, phys, stamps = list(key_hashes), list(phy_offsets), list(store_timestamps)
    if not len(hashes) == len(phys) == len(stamps):
        raise ValueError("key_hashes, phy_offsets and store_timestamps differ in length")
    if hash_slots < 1 or index_entries < 0:
        raise ValueError(f"hash_slots={hash_slots}, index_entries={index_entries}")
    if any(not -(1 << 31) <= h < (1 << 31) for h in hashes):
        raise ValueError("a key hash is outside int32")
    mv = _bytes_view(buf)
    entries_pos = _INDEX_HEADER_SIZE + hash_slots * 4
    if entries_pos + index_entries * 20 > len(mv):
        n_bytes = len(mv)
        mv.release()  # a kept traceback must not pin the buffer (an mmap)
        raise BufferRangeError(f"an IndexFile of {hash_slots} slots and {index_entries} entries "
                               f"does not fit in {n_bytes} bytes")
    count, slots_used, begin_ts, begin_phy = state
    count = max(count, 1)
    put = 0
    for h, phy, ts in zip(hashes, phys, stamps):
        if count >= index_entries:
            break
        slot_pos = _INDEX_HEADER_SIZE + (h % hash_slots) * 4
        prev = _INDEX_SLOT.unpack_from(mv, slot_pos)[0]
        if prev <= 0 or prev > count:
            prev = 0
            slots_used += 1
        diff = 0 if begin_ts <= 0 else min(max((ts - begin_ts) // 1000, 0), 0x7FFFFFFF)
        _INDEX_ENTRY.pack_into(mv, entries_pos + count * 20, h, phy, diff, prev)
        _INDEX_SLOT.pack_into(mv, slot_pos, count)
        if count <= 1:
            begin_ts, begin_phy = ts, phy
        count += 1
        put += 1
    return IndexPut(put, count, slots_used, begin_ts, begin_phy)


class IndexTruncate(NamedTuple):
    """What ``index_truncate_from`` did."""

    removed: int
    index_count: int
    hash_slot_count: int
    last_phy_offset: int  # commitlog offset of the newest entry kept, -1 if none


def index_truncate_from(buf, hash_slots: int, index_entries: int, state,
                        phy_offset: int) -> IndexTruncate:
    """Undo, newest first, every IndexFile entry whose commitlog offset >= ``phy_offset``
    (recovery truncation): the slot goes back to the entry it replaced (0 if that is not a
    valid entry number) and the entry is zeroed. ``state`` is ``(indexCount,
    hashSlotCount)``; the walk starts at ``min(indexCount, index_entries) - 1``. Errors as
    ``index_put_keys``."""
    if hash_slots < 1 or index_entries < 0:
        raise ValueError(f"hash_slots={hash_slots}, index_entries={index_entries}")
    mv = _bytes_view(buf)
    entries_pos = _INDEX_HEADER_SIZE + hash_slots * 4
    if entries_pos + index_entries * 20 > len(mv):
        n_bytes = len(mv)
        mv.release()  # a kept traceback must not pin the buffer (an mmap)
        raise BufferRangeError(f"an IndexFile of {hash_slots} slots and {index_entries} entries "
                               f"does not fit in {n_bytes} bytes")
    index_count, slots_used = state
    removed = 0
    n = min(index_count, index_entries) - 1
    while n >= 1:
        eh, phy, _diff, prev = _INDEX_ENTRY.unpack_from(mv, entries_pos + n * 20)
        if phy < phy_offset:
            break
        chained = 0 < prev < n
        _INDEX_SLOT.pack_into(mv, _INDEX_HEADER_SIZE + (eh % hash_slots) * 4,
                              prev if chained else 0)
        if not chained:
            slots_used = max(0, slots_used - 1)
        mv[entries_pos + n * 20:entries_pos + (n + 1) * 20] = bytes(20)
        removed += 1
        n -= 1
    last = _INDEX_ENTRY.unpack_from(mv, entries_pos + n * 20)[1] if n >= 1 else -1
    if removed:
        index_count = n + 1
    return IndexTruncate(removed, index_count, slots_used, last)
