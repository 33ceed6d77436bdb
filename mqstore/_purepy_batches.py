"""Reference implementation of ``decode_batches`` (native/batch_decode.c): the segments read
path's whole-read decoder of Kafka RecordBatches (magic 2).

This module DEFINES the behaviour: ``mqstore.native.decode_batches`` runs the C version when
the helper is built and this one otherwise (``MQSTORE_NATIVE=off``); both give equal results
and the same typed errors (tests/native/test_native_batch_decode.py). Records are decoded by
``_purepy.decode_records`` (the one record decoder). Also the reference of
``mqstore._seg_write`` (native/seg_write_ext.c): ``value_batch``, ``values_batch_size`` and
``values_batch_into`` build whole batches of plain values for the segments append path.
Pure functions, thread-safe.
"""
from __future__ import annotations

import operator
import struct
from typing import NamedTuple

import numpy as np

from mqstore import _purepy
from mqstore._purepy import SCAN_OK, _bytes_view, _check_range, crc32c, decode_records

# statuses (native/mqstore_native.h, MQ_BATCHES_*)
BATCHES_END = 0  # the walk reached ``end`` exactly
BATCHES_TORN = 1  # the next batch runs past ``end`` (or < 61 bytes are left): read more
BATCHES_BAD_HEADER = 2  # size < 61, magic != 2, lastOffsetDelta < 0, last offset past int64
BATCHES_BAD_CRC = 3  # CRC-32C mismatch (check_crcs)
BATCHES_BAD_CHAIN = 4  # baseOffset is not the previous batch's last offset + 1
BATCHES_BAD_RECORDS = 6  # the records do not parse, or a header name / tag is not UTF-8
BATCHES_COMPRESSED = 7  # a compressed batch at ``next_pos``: checked, not decoded
BATCHES_LIMIT = 8  # stopped after max_records / max_bytes, or before end_offset

#: the columns of ``BatchRecords.records``
BATCH_RECORD_COLUMNS = ("offset", "timestamp", "key_pos", "key_len", "value_pos",
                        "value_len", "first_header", "header_count", "tag_header")

_INT64_MIN, _INT64_MAX = -(1 << 63), (1 << 63) - 1
_HEAD = struct.Struct(">qiibIhiqq")  # through maxTimestamp (43 bytes)
_COUNT = struct.Struct(">i")  # recordsCount at 57
_TAG = b"mqstore.tag"
_ATTR_CODEC, _ATTR_LOG_APPEND_TIME, _ATTR_CONTROL = 0x07, 0x08, 0x20


class BatchRecords(NamedTuple):
    """What ``decode_batches`` found in one byte range of a ``.log``."""

    status: int  # a BATCHES_* code
    next_pos: int  # where the walk stopped (the batch a problem or COMPRESSED names)
    next_expect: int  # the baseOffset the next batch must have (-1: unchecked)
    value_bytes: int  # summed value lengths of the rows (nulls count 0)
    records: np.ndarray  # int64, shape (n, 9): BATCH_RECORD_COLUMNS
    headers: np.ndarray  # int64, shape (m, 4): key pos, key len, value pos, value len


def _wrap(v: int) -> int:
    return ((v - _INT64_MIN) & 0xFFFFFFFFFFFFFFFF) + _INT64_MIN


def _utf8(raw) -> bool:
    try:
        bytes(raw).decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def decode_batches(buf, pos: int, end: int, expect: int, min_offset: int, end_offset: int,
                   check_crcs: bool, max_records: int, max_bytes: int) -> BatchRecords:
    """Walk the batches of ``buf[pos:end)`` and decode their records (see the
    ``mq_decode_batches`` comment in native/mqstore_native.h for the full contract).

    Each batch is checked in this order: a whole header (else TORN), size >= 61, magic 2,
    lastOffsetDelta >= 0 and an int64 last offset (else BAD_HEADER), the whole batch inside
    ``end`` (else TORN), ``baseOffset < end_offset`` (else LIMIT), the CRC-32C when
    ``check_crcs`` (BAD_CRC), ``baseOffset == expect`` unless ``expect`` is -1 (BAD_CHAIN);
    then a control batch is skipped, a compressed one stops the walk (COMPRESSED), and an
    uncompressed one has its records decoded (BAD_RECORDS if they do not parse or a header
    name or tag value is not UTF-8). Rows of records with offset < ``min_offset`` are left
    out. After a batch, the walk stops (LIMIT) once the rows reach ``max_records`` or their
    value bytes exceed ``max_bytes``. Rows of the batches before a stop are kept.
    ``BufferRangeError`` if ``pos < 0`` or ``end > len(buf)``.
    """
    mv = _bytes_view(buf)
    _check_range(mv, pos, max(end, 0))
    data = buf if type(buf) is bytes else mv
    rows: list[tuple] = []
    headers: list[tuple] = []
    value_bytes = 0
    status = BATCHES_END
    while pos < end:
        if end - pos < 61:
            status = BATCHES_TORN
            break
        base, length, _epoch, magic, crc, attributes, lod, base_ts, max_ts = \
            _HEAD.unpack_from(mv, pos)
        size = length + 12
        if size < 61 or magic != 2 or lod < 0 or base + lod + 1 > _INT64_MAX:  # next offset fits
            status = BATCHES_BAD_HEADER
            break
        if size > end - pos:
            status = BATCHES_TORN
            break
        if base >= end_offset:
            status = BATCHES_LIMIT
            break
        if check_crcs and crc32c(mv[pos + 21:pos + size]) != crc:
            status = BATCHES_BAD_CRC
            break
        if expect >= 0 and base != expect:
            status = BATCHES_BAD_CHAIN
            break
        if attributes & _ATTR_CONTROL:
            expect = base + lod + 1
            pos += size
            continue
        if attributes & _ATTR_CODEC:
            expect = base + lod + 1
            status = BATCHES_COMPRESSED
            break
        count = _COUNT.unpack_from(mv, pos + 57)[0]
        rf = decode_records(buf, pos + 61, pos + size, count)
        if rf.status != SCAN_OK:
            status = BATCHES_BAD_RECORDS
            break
        h0 = len(headers)
        hdrs = [tuple(r) for r in rf.headers.tolist()]
        mine, bad, batch_bytes = [], False, 0
        for od, td, kp, kl, vp, vl, first, hn, _rec_end in rf.records.tolist():
            tag_row = -1
            for j in range(first, first + hn):
                hkp, hkl, hvp, hvl = hdrs[j]
                name = data[hkp:hkp + hkl]
                if not _utf8(name):
                    bad = True
                    break
                if name == _TAG:
                    if hvl > 0 and not _utf8(data[hvp:hvp + hvl]):
                        bad = True
                        break
                    tag_row = h0 + j
            if bad:
                break
            offset = _wrap(base + od)
            if offset < min_offset:
                continue
            ts = max_ts if attributes & _ATTR_LOG_APPEND_TIME else _wrap(base_ts + td)
            mine.append((offset, ts, kp, kl, vp, vl, h0 + first, hn, tag_row))
            batch_bytes += max(vl, 0)
        if bad:
            status = BATCHES_BAD_RECORDS
            break
        rows += mine
        headers += hdrs
        value_bytes += batch_bytes
        expect = base + lod + 1
        pos += size
        if len(rows) >= max_records or value_bytes > max_bytes:
            status = BATCHES_LIMIT
            break
    return BatchRecords(status, pos, expect, value_bytes,
                        np.array(rows, dtype=np.int64).reshape(-1, 9),
                        np.array(headers, dtype=np.int64).reshape(-1, 4))


def batch_span(buf, pos: int, end: int, end_offset: int) -> tuple[int, int, int]:
    """The whole batches of ``buf[pos:end)`` a transfer sends: ``(count, stop, next_offset)``
    walking batch headers (no CRC) while a batch is whole inside ``end``, its header sound
    (size >= 61, magic 2, lastOffsetDelta >= 0, an int64 last offset) and its baseOffset <
    ``end_offset``; ``stop`` is the end of the last such batch (``pos`` if none) and
    ``next_offset`` its last offset + 1 (-1 if none). ``BufferRangeError`` if ``pos < 0`` or
    ``end > len(buf)``."""
    mv = _bytes_view(buf)
    _check_range(mv, pos, max(end, 0))
    n, next_offset = 0, -1
    while end - pos >= 61:
        base, length, _epoch, magic, _crc, _attributes, lod, _bts, _mts = \
            _HEAD.unpack_from(mv, pos)
        size = length + 12
        if size < 61 or magic != 2 or lod < 0 or base + lod + 1 > _INT64_MAX or \
                size > end - pos or base >= end_offset:
            break
        pos += size
        n += 1
        next_offset = base + lod + 1
    return n, pos, next_offset


_zigzag = _purepy._zigzag_varint  # one varint encoder for the references


def encode_records(values, keys, timestamp_deltas, extras) -> bytes:
    """The records section of a magic-2 batch of mqstore messages (the ``append_batch``
    path of ``Message`` lists): record ``i`` has offsetDelta ``i``, timestampDelta
    ``timestamp_deltas[i]``, key ``keys[i]`` (None: null), value ``values[i]`` and, when
    ``extras[i]`` is not empty, those bytes as its headers section (header count and
    headers, already encoded), else a header count of 0. ``ValueError`` if the lists differ
    in length."""
    if not len(values) == len(keys) == len(timestamp_deltas) == len(extras):
        raise ValueError("encode_records: the columns differ in length")
    parts = []
    for i, (value, key, td, extra) in enumerate(zip(values, keys, timestamp_deltas, extras)):
        value = bytes(value)
        body = (b"\x00" + _zigzag(td) + _zigzag(i)
                + (b"\x01" if key is None else _zigzag(len(key)) + bytes(key))
                + _zigzag(len(value)) + value + (bytes(extra) if len(extra) else b"\x00"))
        parts.append(_zigzag(len(body)))
        parts.append(body)
    return b"".join(parts)


def encode_value_records_view(values, lead: int) -> memoryview:
    """A writable buffer of ``lead`` free bytes (for the caller's batch header) followed by
    ``_purepy.encode_value_records(values)``. The native version returns a view of a
    per-thread scratch buffer that the thread's next call overwrites: use it (write it out)
    before calling again; this one returns a fresh buffer."""
    return memoryview(bytearray(lead) + _purepy.encode_value_records(values))


# ----- whole batches of plain values (native/seg_write_ext.c, mqstore._seg_write) -----
_PREFIX = struct.Struct(">qiibI")  # baseOffset, batchLength, partitionLeaderEpoch, magic, crc
_CRC_HEADER = struct.Struct(">hiqqqhii")  # attributes .. recordsCount
_BATCH_OVERHEAD, _CRC_START = 61, 21
_MAX_BATCH = (1 << 31) - 1


def _value_record(i: int, value: bytes) -> bytes:
    body = b"\x00\x00" + _zigzag(i) + b"\x01" + _zigzag(len(value)) + value + b"\x00"
    return _zigzag(len(body)) + body


def _int64s(*numbers) -> list[int]:
    """The numbers as ints, in order: TypeError for what is not an integer, OverflowError
    outside int64 (what the C module's argument parsing raises, one argument at a time)."""
    out = []
    for v in numbers:
        v = operator.index(v)
        if not _INT64_MIN <= v <= _INT64_MAX:
            raise OverflowError(f"{v} does not fit an int64")
        out.append(v)
    return out


def _finish(records: bytes, base_offset: int, timestamp: int, count: int) -> bytes:
    base_offset, timestamp = _int64s(base_offset, timestamp)
    size = _BATCH_OVERHEAD + len(records)
    if size > _MAX_BATCH:
        raise OverflowError(f"a batch of {size} bytes does not fit a RecordBatch "
                            f"(at most {_MAX_BATCH})")
    body = _CRC_HEADER.pack(0, count - 1, timestamp, timestamp, -1, -1, -1, count) + records
    return _PREFIX.pack(base_offset, size - 12, 0, 2, crc32c(body)) + body


def value_batch(base_offset: int, timestamp: int, value: bytes) -> bytes:
    """A whole one-record batch at ``base_offset``: ``value`` with no key and no headers,
    offsetDelta and timestampDelta 0, partitionLeaderEpoch 0, no producer id / epoch /
    sequence (the single ``append`` path; the bytes of ``record_batch.encode_one`` with its
    ``batch_prefix``). The errors, in the C module's order: the numbers, then ``value``."""
    base_offset, timestamp = _int64s(base_offset, timestamp)
    if not isinstance(value, bytes):
        raise TypeError(f"value must be bytes, not {type(value).__name__}")
    return _finish(_value_record(0, value), base_offset, timestamp, 1)


def _held(values) -> tuple:
    """The values as the C module takes them: a list or tuple (TypeError otherwise), a
    subclass as it iterates."""
    if not isinstance(values, (list, tuple)):
        raise TypeError(f"values must be a list or tuple of bytes, not {type(values).__name__}")
    return tuple(values)


def _batch_size(values: tuple) -> int:
    """The batch size of ``values`` (:func:`_held`), checking each value in order as the C
    module does."""
    if not values:
        raise ValueError("a batch of values holds at least one value")
    size = _BATCH_OVERHEAD
    for i, v in enumerate(values):
        if type(v) is not bytes:
            raise TypeError(f"values[{i}] must be bytes, not {type(v).__name__}")
        size += len(_value_record(i, v))
        if size > _MAX_BATCH:
            raise OverflowError(f"a batch of {size} bytes does not fit a RecordBatch "
                                f"(at most {_MAX_BATCH})")
    return size


def values_batch_size(values) -> int:
    """The size of the batch :func:`values_batch_into` writes for ``values``."""
    return _batch_size(_held(values))


def values_batch_into(buffer, base_offset: int, timestamp: int, values, size: int) -> int:
    """Write the whole batch of ``values`` (a list or tuple of bytes; record ``i`` has
    offsetDelta ``i``, no key, no headers, timestampDelta 0, every record ``timestamp``) at
    ``base_offset`` into ``buffer[:size]`` and return ``size``, which must be
    :func:`values_batch_size` of them (ValueError otherwise, or if ``buffer`` is shorter).
    The errors in the C module's order: the numbers, the values, the size, then the buffer
    (BufferError unless writable and contiguous)."""
    base_offset, timestamp, size = _int64s(base_offset, timestamp, size)
    values = _held(values)
    got = _batch_size(values)
    if got != size:
        raise ValueError(f"the batch of these values has {got} bytes, not {size} "
                         "(the list changed?)")
    batch = _finish(b"".join(_value_record(i, v) for i, v in enumerate(values)),
                    base_offset, timestamp, len(values))
    with memoryview(buffer) as mv:
        if mv.readonly:
            raise BufferError("Object is not writable.")
        if not mv.c_contiguous:
            raise BufferError("the buffer is not C-contiguous")
        with mv.cast("B") as view:
            if len(view) < size:
                raise ValueError(f"buffer of {len(view)} bytes is smaller than the "
                                 f"{size}-byte batch")
            view[:size] = batch
    return size
