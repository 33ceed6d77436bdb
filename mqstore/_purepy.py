"""Pure-Python reference implementations of the native helper's functions.

``mqstore.native`` uses these when the compiled module is missing or ``MQSTORE_NATIVE=off``.
They define the behaviour: the C versions must return exactly the same results (the tests in
``tests/native/`` check it with hypothesis). Never import this module from an engine; go
through ``mqstore.native``.
"""
from __future__ import annotations

import struct
import zlib
from typing import NamedTuple

import numpy as np

from mqstore.errors import BufferRangeError

# ----- scan status codes (shared with the C helper) -----
SCAN_OK = 0  # the data ended exactly at ``end``
SCAN_TORN = 1  # the last entry is incomplete (declared length runs past ``end``): a torn tail
SCAN_CORRUPT = 2  # an entry fails a check (size, magic, CRC, length): damage, not a tail
SCAN_BLANK = 3  # commitlog: the end-of-file blank marker was reached (the file is full)
SCAN_ZERO = 4  # commitlog: zero fill reached (preallocated space never written)

# ----- argument checks shared with the C helper (mqstore.native does the same ones) -----
INT64_MIN, INT64_MAX = -(1 << 63), (1 << 63) - 1


def _bytes_view(buf) -> memoryview:
    """A flat unsigned-byte view of any C-contiguous buffer (positions are byte positions)."""
    mv = memoryview(buf)
    return mv if mv.format == "B" and mv.ndim == 1 else mv.cast("B")


def _check_range(mv: memoryview, pos: int, end: int) -> None:
    """Refuse a scan window that starts before the buffer or ends past it."""
    if pos < 0 or end > len(mv):
        n_bytes = len(mv)
        mv.release()  # a kept traceback must not pin the buffer (an mmap)
        raise BufferRangeError(
            f"scan window [{pos}, {end}) is outside a buffer of {n_bytes} bytes")


# ----- CRC-32C (Castagnoli), reflected polynomial 0x82F63B78 -----
def _make_table() -> list[int]:
    table = []
    for n in range(256):
        c = n
        for _ in range(8):
            c = (c >> 1) ^ 0x82F63B78 if c & 1 else c >> 1
        table.append(c)
    return table


_CRC_TABLE = _make_table()


def crc32c(data, crc: int = 0) -> int:
    """CRC-32C of ``data`` (any buffer), continuing from ``crc`` for chunked updates."""
    table = _CRC_TABLE
    c = (crc ^ 0xFFFFFFFF) & 0xFFFFFFFF
    for b in _bytes_view(data):
        c = table[(c ^ b) & 0xFF] ^ (c >> 8)
    return c ^ 0xFFFFFFFF


# ----- small hash kernels -----
def java_string_hash(s: str) -> int:
    """Java ``String.hashCode``: over UTF-16 code units, 32-bit wrap, signed result."""
    if not isinstance(s, str):
        raise TypeError(f"java_string_hash takes a str, not {type(s).__name__}")
    h = 0
    units = s.encode("utf-16-be", "surrogatepass")  # Java strings may hold lone surrogates
    for i in range(0, len(units), 2):
        h = (31 * h + ((units[i] << 8) | units[i + 1])) & 0xFFFFFFFF
    return h - (1 << 32) if h & 0x80000000 else h


def java_string_hashes(strings) -> np.ndarray:
    """``java_string_hash`` of each string, as an int64 array (for a run of keys)."""
    return np.array([java_string_hash(s) for s in strings], dtype=np.int64)


def murmur2(data: bytes) -> int:
    """Kafka's ``Utils.murmur2`` (seed 0x9747b28c), as a signed 32-bit int."""
    data = bytes(data)
    length = len(data)
    m, r = 0x5BD1E995, 24
    h = (0x9747B28C ^ length) & 0xFFFFFFFF
    n4 = length // 4
    for i in range(n4):
        k = int.from_bytes(data[4 * i:4 * i + 4], "little")
        k = (k * m) & 0xFFFFFFFF
        k ^= k >> r
        k = (k * m) & 0xFFFFFFFF
        h = (h * m) & 0xFFFFFFFF
        h ^= k
    rem = length % 4
    tail = 4 * n4
    if rem == 3:
        h ^= data[tail + 2] << 16
    if rem >= 2:
        h ^= data[tail + 1] << 8
    if rem >= 1:
        h ^= data[tail]
        h = (h * m) & 0xFFFFFFFF
    h ^= h >> 13
    h = (h * m) & 0xFFFFFFFF
    h ^= h >> 15
    return h - (1 << 32) if h & 0x80000000 else h


# ----- Kafka index floor searches -----
# Kafka's AbstractIndex keeps the last 8192 bytes of entries "warm": a lookup near the tail
# (what consumers and appends do) only touches those pages.
_WARM_BYTES = 8192


_OFFSET_KEY = struct.Struct(">i")  # relative offset, first field of an .index entry
_TIME_KEY = struct.Struct(">q")  # timestamp, first field of a .timeindex entry


def _upper_bound(mv: memoryview, key: struct.Struct, entry: int, lo: int, hi: int,
                 target: int) -> int:
    """First slot in [lo, hi) whose key > target: numpy's searchsorted(side="right")
    bisection, step for step (same midpoints), reading only the entries it visits."""
    unpack = key.unpack_from
    while lo < hi:
        mid = lo + ((hi - lo) >> 1)
        if unpack(mv, mid * entry)[0] <= target:
            lo = mid + 1
        else:
            hi = mid
    return lo


def _index_floor(buf, n_entries: int, target: int, key: struct.Struct, entry: int) -> int:
    """Slot of the last key <= target, searching the warm tail section first.

    Kafka's ``indexSlotRangeFor``: the last 8192 bytes of entries are "warm"; if the first
    warm entry is <= target the answer is in the warm section, otherwise in the cold part
    before it. For non-decreasing keys this is exactly the floor entry (the last one <=
    target); for damaged (unsorted) keys it is a deterministic bisection of the two
    sections, which the C helper repeats step for step.
    """
    if n_entries <= 0:
        return -1
    mv = _bytes_view(buf)
    if n_entries * entry > len(mv):
        n_bytes = len(mv)
        mv.release()  # a kept traceback must not pin the buffer (an mmap)
        raise BufferRangeError(
            f"{n_entries} index entries of {entry} bytes do not fit in {n_bytes} bytes")
    first_hot = max(0, n_entries - 1 - _WARM_BYTES // entry)
    if key.unpack_from(mv, first_hot * entry)[0] <= target:
        return _upper_bound(mv, key, entry, first_hot, n_entries, target) - 1
    return _upper_bound(mv, key, entry, 0, first_hot, target) - 1


def offset_index_floor(buf, n_entries: int, target: int) -> int:
    """Slot of the largest ``.index`` entry whose relative offset <= ``target``, or -1."""
    return _index_floor(buf, n_entries, target, _OFFSET_KEY, 8)


def time_index_floor(buf, n_entries: int, target: int) -> int:
    """Slot of the largest ``.timeindex`` entry whose timestamp <= ``target``, or -1."""
    return _index_floor(buf, n_entries, target, _TIME_KEY, 12)


# ----- Kafka batch scans -----
_BATCH_HEAD = struct.Struct(">qiiBI")  # baseOffset, batchLength, leaderEpoch, magic, crc
_BATCH_LOD = struct.Struct(">i")  # lastOffsetDelta at 23
_BATCH_MAXTS = struct.Struct(">q")  # maxTimestamp at 35
BATCH_OVERHEAD = 61


def find_batch(buf, pos: int, end: int, target_offset: int) -> int:
    """Position of the first batch at or after ``pos`` whose last offset >= target, or -1.

    Reads headers only (like Kafka's ``FileRecords.searchForOffsetWithSize``); stops at a
    torn or malformed header. ``BufferRangeError`` if ``pos < 0`` or ``end > len(buf)``.
    """
    mv = _bytes_view(buf)
    _check_range(mv, pos, end)
    while pos + BATCH_OVERHEAD <= end:
        base, length = struct.unpack_from(">qi", mv, pos)
        size = length + 12
        if length < 49 or pos + size > end:
            return -1
        last = base + _BATCH_LOD.unpack_from(mv, pos + 23)[0]
        if last >= target_offset:
            return pos
        pos += size
    return -1


class BatchScan(NamedTuple):
    """What ``scan_batches`` found: the valid prefix and one row per valid batch."""

    valid_end: int
    status: int
    positions: np.ndarray  # int64
    sizes: np.ndarray  # int64
    base_offsets: np.ndarray  # int64
    last_offsets: np.ndarray  # int64
    max_timestamps: np.ndarray  # int64


def scan_batches(buf, pos: int, end: int) -> BatchScan:
    """Validate Kafka batches from ``pos`` (size >= 61, magic 2, CRC-32C) up to ``end``.

    A batch whose last offset (baseOffset + lastOffsetDelta) falls outside int64 is corrupt.
    ``BufferRangeError`` if ``pos < 0`` or ``end > len(buf)``.
    """
    mv = _bytes_view(buf)
    _check_range(mv, pos, end)
    rows: list[tuple[int, int, int, int, int]] = []
    status = SCAN_OK
    while pos < end:
        if end - pos < BATCH_OVERHEAD:
            status = SCAN_TORN
            break
        base, length, _epoch, magic, crc = _BATCH_HEAD.unpack_from(mv, pos)
        size = length + 12
        if size < BATCH_OVERHEAD or magic != 2:
            status = SCAN_CORRUPT
            break
        if pos + size > end:
            status = SCAN_TORN
            break
        if crc32c(mv[pos + 21:pos + size]) != crc:
            status = SCAN_CORRUPT
            break
        last = base + _BATCH_LOD.unpack_from(mv, pos + 23)[0]
        if not INT64_MIN <= last <= INT64_MAX:
            status = SCAN_CORRUPT
            break
        rows.append((pos, size, base, last, _BATCH_MAXTS.unpack_from(mv, pos + 35)[0]))
        pos += size
    cols = np.array(rows, dtype=np.int64).reshape(-1, 5)
    return BatchScan(pos, status, cols[:, 0], cols[:, 1], cols[:, 2], cols[:, 3], cols[:, 4])


# ----- RocketMQ CommitLog scans -----
MESSAGE_MAGIC_V1 = 0xDAA320A7
BLANK_MAGIC = 0xCBD43194
MSG_FIXED_OVERHEAD = 91


class RecordScan(NamedTuple):
    """What ``scan_commitlog`` found: the valid prefix and one row per valid message."""

    valid_end: int
    status: int
    positions: np.ndarray  # int64, file-relative
    sizes: np.ndarray  # int64
    queue_ids: np.ndarray  # int64
    queue_offsets: np.ndarray  # int64
    store_timestamps: np.ndarray  # int64


_RECORD_CRC_PREFIX = b"__CRC32#\x01"


def _crcs_ok(mv: memoryview, pos: int, size: int, body_crc: int, body_pos: int,
             body_len: int, props_pos: int) -> bool:
    """The CRC check of one message (engines/commitlog/message.py ``crc_problem``): the
    ``__CRC32#`` record CRC when the message ends with that property (CRC-32 of everything
    before it, 10 digits least significant first; the body CRC is then not recomputed), else
    the body CRC."""
    end = pos + size
    if end - 20 >= props_pos and mv[end - 1] == 2 and mv[end - 20:end - 11] == _RECORD_CRC_PREFIX:
        digits = bytes(mv[end - 11:end - 1])
        if not all(48 <= c <= 57 for c in digits):
            return False
        return int(digits[::-1]) == zlib.crc32(mv[pos:end - 20]) & 0x7FFFFFFF
    return (zlib.crc32(mv[body_pos:body_pos + body_len]) & 0x7FFFFFFF) == body_crc


_MSG_FIXED_HEAD = struct.Struct(">iIIiiqqiq")  # TOTALSIZE .. BORNTIMESTAMP (44 bytes)
MESSAGE_MAGIC_V2 = 0xDAA320AB  # RocketMQ 5: 2-byte topic length
_SYSFLAG_BORNHOST_V6, _SYSFLAG_STOREHOST_V6 = 0x10, 0x20


def _walk_commitlog(mv: memoryview, pos: int, end: int, check_crc: bool, emit) -> tuple[int, int]:
    """Walk V1 and V2 messages (IPv4 or IPv6 hosts, by SYSFLAG) from ``pos``; call
    ``emit(pos, size, head, body_pos, body_len, topic_pos, topic_len, props_pos,
    props_len)`` for each sound one (``head[0:9]`` TOTALSIZE .. BORNTIMESTAMP, ``head[10]``
    STORETIMESTAMP). Every length is checked as engines/commitlog/message.py ``layout``
    does. Returns ``(end of the sound messages, status)``."""
    status = SCAN_OK
    while pos < end:
        if end - pos < 8:
            status = SCAN_TORN if any(mv[pos:end]) else SCAN_ZERO
            break
        size, magic = struct.unpack_from(">iI", mv, pos)
        if size == 0 and magic == 0:
            status = SCAN_ZERO
            break
        if magic == BLANK_MAGIC:
            status = SCAN_BLANK
            break
        if magic not in (MESSAGE_MAGIC_V1, MESSAGE_MAGIC_V2) or size < MSG_FIXED_OVERHEAD:
            status = SCAN_CORRUPT
            break
        if pos + size > end:
            status = SCAN_TORN
            break
        fixed = _MSG_FIXED_HEAD.unpack_from(mv, pos)
        sys_flag = fixed[7]
        born_len = 20 if sys_flag & _SYSFLAG_BORNHOST_V6 else 8
        store_len = 20 if sys_flag & _SYSFLAG_STOREHOST_V6 else 8
        ts_pos = pos + 48 + born_len
        p = ts_pos + 8 + store_len + 12  # STOREHOST, RECONSUMETIMES, PREPARED TX OFFSET
        msg_end = pos + size
        topic_len_size = 1 if magic == MESSAGE_MAGIC_V1 else 2
        if p + 4 > msg_end:
            status = SCAN_CORRUPT
            break
        body_len = struct.unpack_from(">i", mv, p)[0]
        if body_len < 0 or p + 4 + body_len + topic_len_size > msg_end:
            status = SCAN_CORRUPT
            break
        body_pos = p + 4
        p += 4 + body_len
        topic_len = mv[p] if topic_len_size == 1 else struct.unpack_from(">h", mv, p)[0]
        topic_pos = p + topic_len_size
        p = topic_pos + topic_len
        if topic_len < 0 or p + 2 > msg_end:
            status = SCAN_CORRUPT
            break
        props_len = struct.unpack_from(">h", mv, p)[0]
        if props_len < 0 or p + 2 + props_len != msg_end:
            status = SCAN_CORRUPT
            break
        if check_crc and not _crcs_ok(mv, pos, size, fixed[2], body_pos, body_len, p + 2):
            status = SCAN_CORRUPT
            break
        head = fixed + (None, struct.unpack_from(">q", mv, ts_pos)[0])
        emit(pos, size, head, body_pos, body_len, topic_pos, topic_len, p + 2, props_len)
        pos += size
    return pos, status


def scan_commitlog(buf, pos: int, end: int) -> RecordScan:
    """Validate RocketMQ V1 / V2 messages from ``pos``: size, magic, recomputed length and CRC
    (the ``__CRC32#`` record CRC when present, else the body CRC; see :func:`_crcs_ok`).

    Stops at the blank marker (SCAN_BLANK), at a zero TOTALSIZE (SCAN_ZERO: unwritten,
    preallocated space), at ``end`` (SCAN_OK), at an incomplete message (SCAN_TORN) or at a
    bad one (SCAN_CORRUPT). ``BufferRangeError`` if ``pos < 0`` or ``end > len(buf)``.
    """
    mv = _bytes_view(buf)
    _check_range(mv, pos, end)
    rows: list[tuple[int, int, int, int, int]] = []

    def emit(pos, size, head, *_layout):
        rows.append((pos, size, head[3], head[5], head[10]))

    pos, status = _walk_commitlog(mv, pos, end, True, emit)
    cols = np.array(rows, dtype=np.int64).reshape(-1, 5)
    return RecordScan(pos, status, cols[:, 0], cols[:, 1], cols[:, 2], cols[:, 3], cols[:, 4])


class DispatchScan(NamedTuple):
    """What ``dispatch_fields`` found: one int64 row per message of ``fields`` (columns in
    ``DISPATCH_COLUMNS``); positions are absolute in the buffer, -1 / -1 for an absent
    property."""

    valid_end: int
    status: int
    fields: np.ndarray  # int64, shape (n, 14)


DISPATCH_COLUMNS = ("position", "size", "queue_id", "queue_offset", "physical_offset",
                    "store_timestamp", "topic_pos", "topic_len", "tags_pos", "tags_len",
                    "keys_pos", "keys_len", "uniq_key_pos", "uniq_key_len")
_DISPATCH_PROPERTIES = (b"TAGS\x01", b"KEYS\x01", b"UNIQ_KEY\x01")


def _property_span(raw: bytes, name: bytes) -> tuple[int, int]:
    """(start, length) of a property's value in PROPERTIES bytes, or (-1, -1). A pair starts
    at 0 or right after ``\x02``; the value runs to the next ``\x02`` or the end."""
    if raw.startswith(name):
        i = len(name)
    else:
        i = raw.find(b"\x02" + name)
        if i < 0:
            return -1, -1
        i += 1 + len(name)
    j = raw.find(b"\x02", i)
    return i, (j if j >= 0 else len(raw)) - i


def dispatch_fields(buf, pos: int, end: int) -> DispatchScan:
    """What RocketMQ's dispatcher (ReputMessageService) needs from each message from
    ``pos``: the ConsumeQueue unit fields, and where the topic and the TAGS, KEYS and
    UNIQ_KEY properties are. Same walk and statuses as ``scan_commitlog`` without the body
    CRC (the dispatcher reads data that recovery or the writer already checked).
    ``BufferRangeError`` if ``pos < 0`` or ``end > len(buf)``."""
    mv = _bytes_view(buf)
    _check_range(mv, pos, end)
    rows: list[tuple[int, ...]] = []

    def emit(pos, size, head, _bp, _bl, topic_pos, topic_len, props_pos, props_len):
        raw = bytes(mv[props_pos:props_pos + props_len])
        row = [pos, size, head[3], head[5], head[6], head[10], topic_pos, topic_len]
        for name in _DISPATCH_PROPERTIES:
            start, length = _property_span(raw, name)
            row += (-1, -1) if start < 0 else (props_pos + start, length)
        rows.append(tuple(row))

    pos, status = _walk_commitlog(mv, pos, end, False, emit)
    return DispatchScan(pos, status, np.array(rows, dtype=np.int64).reshape(-1, 14))


# ----- ConsumeQueue tag scans -----
CQ_UNIT = np.dtype([("offset", ">i8"), ("size", ">i4"), ("tag_hash", ">i8")])


def cq_tag_scan(buf, start_unit: int, n_units: int, tag_hashes) -> np.ndarray:
    """Indexes (relative to ``start_unit``) of the ConsumeQueue units among ``n_units`` whose
    tag hash is one of ``tag_hashes``, as an int64 array.

    ``n_units <= 0`` scans nothing; ``BufferRangeError`` if ``start_unit < 0`` or the units
    run past the buffer.
    """
    wanted = np.asarray(list(tag_hashes), dtype=np.int64)
    mv = _bytes_view(buf)
    if n_units <= 0:
        return np.empty(0, dtype=np.int64)
    if start_unit < 0 or (start_unit + n_units) * CQ_UNIT.itemsize > len(mv):
        n_bytes = len(mv)
        mv.release()  # a kept traceback must not pin the buffer (an mmap)
        raise BufferRangeError(
            f"ConsumeQueue units [{start_unit}, {start_unit + n_units}) run past a buffer of "
            f"{n_bytes} bytes")
    units = np.frombuffer(mv, dtype=CQ_UNIT, count=n_units, offset=start_unit * CQ_UNIT.itemsize)
    return np.flatnonzero(np.isin(units["tag_hash"], wanted)).astype(np.int64)


# ----- Kafka record decoding -----
class RecordFields(NamedTuple):
    """What ``decode_records`` found in the records section of one batch.

    ``records`` has one int64 row per record: offsetDelta, timestampDelta, key position,
    key length (-1 = null), value position, value length (-1 = null), index of its first row
    in ``headers``, header count, record end. ``headers`` rows: key position, key length,
    value position, value length (-1 = null). Positions are absolute in the buffer.
    """

    status: int  # SCAN_OK, or SCAN_CORRUPT (see decode_records for what is malformed)
    next_pos: int  # the end of the last record parsed
    records: np.ndarray  # int64, shape (n, 9)
    headers: np.ndarray  # int64, shape (m, 4)


class _Malformed(Exception):
    pass


def _varint(mv: memoryview, pos: int, end: int, max_bytes: int = 5) -> tuple[int, int]:
    """Zig-zag LEB128 within [pos, end): an int32 varint (``max_bytes=5``, at most 32 bits)
    or a varlong (``max_bytes=10``, at most 64 bits). Longer encodings and bits past the
    width are malformed (Kafka's ``ByteUtils`` throws on the first and wraps the second)."""
    z = shift = 0
    for _ in range(max_bytes):
        if pos >= end:
            raise _Malformed
        b = mv[pos]
        pos += 1
        z |= (b & 0x7F) << shift
        if b < 0x80:
            if z >> (32 if max_bytes == 5 else 64):
                raise _Malformed
            return (z >> 1) ^ -(z & 1), pos
        shift += 7
    raise _Malformed


def decode_records(buf, pos: int, end: int, count: int) -> RecordFields:
    """Parse ``count`` magic-2 records from ``buf[pos:end)`` (an uncompressed batch's records
    section, Kafka's ``DefaultRecord``): varint length, attributes, varlong timestampDelta,
    offsetDelta, key, value, headers.

    Malformed means SCAN_CORRUPT at the first record that does not parse (the records before
    it are returned): an int32 varint longer than 5 bytes or past 32 bits, a varlong longer
    than 10 bytes or past 64 bits, a key or value length below -1, a header count or header
    key length below 0, a header value length below -1, a field that does not fit in its
    record, a record that does not end exactly at its length. With ``count > 0`` the records
    must also end exactly at ``end`` (trailing bytes: SCAN_CORRUPT with ``next_pos`` at the
    end of the last record); ``count == 0`` reads nothing (as Kafka, which never reads the
    body of an empty batch); ``count < 0`` is SCAN_CORRUPT. ``BufferRangeError`` if
    ``pos < 0`` or ``end > len(buf)``.
    """
    mv = _bytes_view(buf)
    _check_range(mv, pos, end)
    end = max(end, pos)
    data = buf if type(buf) is bytes else mv  # indexing bytes is the cheaper of the two
    records: list[tuple[int, ...]] = []
    headers: list[tuple[int, int, int, int]] = []
    status = SCAN_CORRUPT if count < 0 else SCAN_OK
    varint = _varint
    # Single-byte varints (the common case) are decoded inline: a byte b < 0x80 at p < limit
    # is the whole varint, (b >> 1) ^ -(b & 1); anything else goes through _varint. Each
    # length is then checked against its minimum (-1 allows null, 0 for header names) and
    # against what is left of the record.
    for _ in range(count):
        try:
            if pos < end and data[pos] < 0x80:
                b = data[pos]
                length, p = (b >> 1) ^ -(b & 1), pos + 1
            else:
                length, p = varint(data, pos, end)
            if length <= 0 or length > end - p:  # 0: no room for the attributes
                raise _Malformed
            rec_end = p + length
            p += 1  # attributes
            if p < rec_end and data[p] < 0x80:
                b = data[p]
                ts_delta, p = (b >> 1) ^ -(b & 1), p + 1
            else:
                ts_delta, p = varint(data, p, rec_end, 10)
            if p < rec_end and data[p] < 0x80:
                b = data[p]
                offset_delta, p = (b >> 1) ^ -(b & 1), p + 1
            else:
                offset_delta, p = varint(data, p, rec_end)
            if p < rec_end and data[p] < 0x80:
                b = data[p]
                kl, p = (b >> 1) ^ -(b & 1), p + 1
            else:
                kl, p = varint(data, p, rec_end)
            if kl < -1 or kl > rec_end - p:
                raise _Malformed
            kp = p
            if kl > 0:
                p += kl
            if p < rec_end and data[p] < 0x80:
                b = data[p]
                vl, p = (b >> 1) ^ -(b & 1), p + 1
            else:
                vl, p = varint(data, p, rec_end)
            if vl < -1 or vl > rec_end - p:
                raise _Malformed
            vp = p
            if vl > 0:
                p += vl
            if p < rec_end and data[p] == 0:  # no headers
                nh, p = 0, p + 1
                mine = ()
            else:
                nh, p = varint(data, p, rec_end)
                if nh < 0:
                    raise _Malformed
                mine = []
                for _h in range(nh):
                    if p < rec_end and data[p] < 0x80:
                        b = data[p]
                        hkl, p = (b >> 1) ^ -(b & 1), p + 1
                    else:
                        hkl, p = varint(data, p, rec_end)
                    if hkl < 0 or hkl > rec_end - p:
                        raise _Malformed
                    hkp = p
                    p += hkl
                    if p < rec_end and data[p] < 0x80:
                        b = data[p]
                        hvl, p = (b >> 1) ^ -(b & 1), p + 1
                    else:
                        hvl, p = varint(data, p, rec_end)
                    if hvl < -1 or hvl > rec_end - p:
                        raise _Malformed
                    mine.append((hkp, hkl, p, hvl))
                    if hvl > 0:
                        p += hvl
            if p != rec_end:
                raise _Malformed
        except _Malformed:
            status = SCAN_CORRUPT
            break
        records.append((offset_delta, ts_delta, kp, kl, vp, vl, len(headers), nh, rec_end))
        if nh:
            headers.extend(mine)
        pos = rec_end
    else:
        if count > 0 and pos != end:
            status = SCAN_CORRUPT  # trailing bytes after the last record
    return RecordFields(status, pos,
                        np.array(records, dtype=np.int64).reshape(-1, 9),
                        np.array(headers, dtype=np.int64).reshape(-1, 4))


def _zigzag_varint(n: int) -> bytes:
    z = ((n << 1) ^ (n >> 63)) & 0xFFFFFFFFFFFFFFFF
    out = bytearray()
    while z >= 0x80:
        out.append((z & 0x7F) | 0x80)
        z >>= 7
    out.append(z)
    return bytes(out)


def encode_value_records(values) -> bytes:
    """The records section of a magic-2 batch holding ``values`` (bytes-like), each with no
    key, no headers, timestampDelta 0 and offsetDelta = its index: the bytes a Kafka
    producer writes for plain values (the ``append_batch`` fast path)."""
    parts = []
    for i, value in enumerate(values):
        value = bytes(_bytes_view(value))
        body = (b"\x00\x00" + _zigzag_varint(i) + b"\x01" + _zigzag_varint(len(value))
                + value + b"\x00")
        parts.append(_zigzag_varint(len(body)))
        parts.append(body)
    return b"".join(parts)


# ----- RocketMQ IndexFile kernels: in their own module, re-exported here -----
from mqstore._purepy_indexfile import (  # noqa: F401  (re-exported)
    IndexPut,
    IndexTruncate,
    index_put_keys,
    index_truncate_from,
)
