"""Small builders of valid Kafka and RocketMQ logs for the native-helper tests and benchmarks.

Written from FORMATS.md, independent of the engines, so the scans are checked against a
second encoder. Checksums come from ``mqstore.native`` (whichever backend is active) and
from zlib; both are pinned by check values in test_native_crc32c.py.
"""
from __future__ import annotations

import ctypes
import mmap
import os
import struct
import sys
import zlib

from mqstore import native

NATIVE_MISSING = (
    "the compiled helper is not loaded "
    f"(mqstore.native.backend == {native.backend!r}; MQSTORE_NATIVE="
    f"{os.environ.get('MQSTORE_NATIVE', 'auto')}); build it with `pip install -e .`"
)

_BATCH_AFTER_CRC = struct.Struct(">hiqqqhii")  # attributes .. recordsCount (40 bytes)
_BATCH_HEAD = struct.Struct(">qiiBI")  # baseOffset, batchLength, leaderEpoch, magic, crc


def _varint(n: int) -> bytes:
    z = (n << 1) ^ (n >> 63)
    out = bytearray()
    while z >= 0x80:
        out.append((z & 0x7F) | 0x80)
        z >>= 7
    out.append(z)
    return bytes(out)


def kafka_record(offset_delta: int, value: bytes | None, key: bytes | None = None,
                 headers: list[tuple[bytes, bytes | None]] = (), timestamp_delta: int = 0) -> bytes:
    """One magic-2 record."""
    def field(b):
        return _varint(-1) if b is None else _varint(len(b)) + b

    body = (b"\x00" + _varint(timestamp_delta) + _varint(offset_delta) + field(key)
            + field(value) + _varint(len(headers))
            + b"".join(field(k) + field(v) for k, v in headers))
    return _varint(len(body)) + body


def kafka_batch(base_offset: int, values: list[bytes], timestamp: int = 1_700_000_000_000,
                last_offset_delta: int | None = None) -> bytes:
    """A valid RecordBatch (magic 2, uncompressed) holding ``values``."""
    records = b"".join(kafka_record(i, v) for i, v in enumerate(values))
    lod = len(values) - 1 if last_offset_delta is None else last_offset_delta
    after = _BATCH_AFTER_CRC.pack(0, lod, timestamp, timestamp + lod, -1, -1, -1,
                                  len(values)) + records
    crc = native.crc32c(after)
    base_offset = ((base_offset + (1 << 63)) % (1 << 64)) - (1 << 63)  # int64 wrap
    return _BATCH_HEAD.pack(base_offset, 4 + 1 + 4 + len(after), 0, 2, crc) + after


def kafka_log(n_batches: int, records_per_batch: int = 3, value_size: int = 20,
              base_offset: int = 0) -> bytes:
    """``n_batches`` consecutive batches with dense offsets from ``base_offset``."""
    out, offset = [], base_offset
    for b in range(n_batches):
        values = [bytes([(b + i) & 0xFF]) * value_size for i in range(records_per_batch)]
        out.append(kafka_batch(offset, values, timestamp=1_700_000_000_000 + b))
        offset += records_per_batch
    return b"".join(out)


_MSG_HEAD = struct.Struct(">iIIiiqqiq8sq8siq")  # TOTALSIZE .. PREPARED TX OFFSET (84 bytes)
MAGIC_V1 = 0xDAA320A7
BLANK_MAGIC = 0xCBD43194


def rocketmq_message(queue_id: int, queue_offset: int, physical_offset: int, body: bytes,
                     topic: bytes = b"t", properties: bytes = b"TAGS\x01a\x02",
                     store_timestamp: int = 1_700_000_000_000) -> bytes:
    """One RocketMQ V1 message (IPv4 hosts)."""
    size = 91 + len(body) + len(topic) + len(properties)
    head = _MSG_HEAD.pack(size, MAGIC_V1, zlib.crc32(body) & 0x7FFFFFFF, queue_id, 0,
                          queue_offset, physical_offset, 0, store_timestamp - 1,
                          bytes([127, 0, 0, 1, 0, 0, 0, 0]), store_timestamp,
                          bytes([127, 0, 0, 1, 0, 0, 0x2A, 0x9F]), 0, 0)
    return (head + struct.pack(">i", len(body)) + body + bytes([len(topic)]) + topic
            + struct.pack(">h", len(properties)) + properties)


def rocketmq_log(n_messages: int, queues: int = 3, body_size: int = 30,
                 blank_to: int | None = None) -> bytes:
    """Consecutive messages round-robin over ``queues``; with ``blank_to`` the file is padded
    to that size with the end-of-file blank marker and zeros, as RocketMQ ends a full file."""
    out = bytearray()
    next_offset = [0] * queues
    for i in range(n_messages):
        q = i % queues
        out += rocketmq_message(q, next_offset[q], len(out), bytes([i & 0xFF]) * body_size,
                                store_timestamp=1_700_000_000_000 + i)
        next_offset[q] += 1
    if blank_to is not None:
        left = blank_to - len(out)
        out += struct.pack(">iI", left, BLANK_MAGIC) + bytes(left - 8)
    return bytes(out)


def offset_index(relative_offsets: list[int], positions: list[int] | None = None) -> bytes:
    """A Kafka ``.index`` body (8-byte big-endian entries)."""
    positions = positions or [i * 4096 for i in range(len(relative_offsets))]
    return b"".join(struct.pack(">ii", o, p) for o, p in zip(relative_offsets, positions))


def time_index(timestamps: list[int], relative_offsets: list[int] | None = None) -> bytes:
    """A Kafka ``.timeindex`` body (12-byte big-endian entries)."""
    relative_offsets = relative_offsets or list(range(len(timestamps)))
    return b"".join(struct.pack(">qi", t, o) for t, o in zip(timestamps, relative_offsets))


def consume_queue(tag_hashes: list[int]) -> bytes:
    """ConsumeQueue units (int64 offset, int32 size, int64 tag hash) with these tag hashes."""
    return b"".join(struct.pack(">qiq", i * 100, 100, h) for i, h in enumerate(tag_hashes))


_PROT_NONE = 0
_libc = ctypes.CDLL(None, use_errno=True) if sys.platform.startswith("linux") else None


def guarded_view(data: bytes) -> memoryview:
    """``data`` in anonymous memory that ends exactly at an inaccessible page."""
    page = mmap.PAGESIZE
    pages = len(data) // page + 2
    mm = mmap.mmap(-1, pages * page)
    guard = (pages - 1) * page
    start = guard - len(data)
    mm[start:guard] = data
    if _libc is not None:
        anchor = ctypes.c_char.from_buffer(mm)
        addr = ctypes.addressof(anchor)
        del anchor
        if _libc.mprotect(ctypes.c_void_p(addr + guard), page, _PROT_NONE) != 0:
            raise OSError(ctypes.get_errno(), "mprotect failed")
    return memoryview(mm)[start:guard]
