"""Pure-Python reference of the commitlog write kernels (``native/cl_encode.c``).

These functions DEFINE what ``mqstore.native.cl_encode`` and friends return; the C code must
give the same bytes and raise the same typed errors (``tests/native/test_native_cl_encode.py``).
The encoder is the one the commitlog engine used before its write path became batch-native
(RocketMQ's ``MessageExtEncoder`` in two steps: :func:`encode` outside the append lock,
:func:`patch` once the position is known), kept here only as the reference.

Message layout: ``engines/commitlog/format.py`` (V1, IPv4 hosts). Thread-safety: pure
functions over caller-owned memory.
"""
from __future__ import annotations

import operator
import struct
import zlib

import numpy as np

from mqstore import _purepy

# the layout constants (kept here so the reference does not import the engine)
_HEADER = struct.Struct(">iIIiiqqiq8sq8siq")
_MAGIC_V1 = 0xDAA320A7
_MASK = 0x7FFFFFFF
_FIXED = 91
_BORNHOST = bytes([127, 0, 0, 1, 0, 0, 0, 0])
_STOREHOST = bytes([127, 0, 0, 1]) + struct.pack(">i", 10911)
_CRC_PLACEHOLDER = b"__CRC32#\x01" + b"0" * 10 + b"\x02"
_CRC_LEN = 20
_UNIQ_NAME = b"UNIQ_KEY\x01"
_TOPIC_MAX = 255
_PROPS_MAX = 32767
_INT32 = (-(1 << 31), (1 << 31) - 1)


def plain_props_len(uniq_prefix_len: int) -> int:
    """Length of the PROPERTIES of a plain value (UNIQ_KEY only), the record CRC excluded."""
    return len(_UNIQ_NAME) + uniq_prefix_len + 16 + 1


def encoded_size(topic_len: int, body_len: int, props_len: int, uniq_prefix_len: int) -> int:
    """Bytes of one encoded message (see ``mq_cl_encoded_size``): ValueError if the topic is
    over 255 bytes, the body length negative or the properties over 32767 bytes."""
    if not 0 <= topic_len <= _TOPIC_MAX or body_len < 0:
        raise ValueError(f"topic length {topic_len} or body length {body_len} out of range")
    plen = (plain_props_len(uniq_prefix_len) if props_len < 0 else props_len) + _CRC_LEN
    if plen > _PROPS_MAX:
        raise ValueError(f"properties of {plen} bytes exceed {_PROPS_MAX}")
    return _FIXED + body_len + topic_len + plen


def encoded_sizes(topic_len: int, body_lengths, props_lengths, uniq_prefix_len: int) -> np.ndarray:
    """:func:`encoded_size` of every message, as int64 (numpy; shared by both backends). The
    caller checks the limits (``> 32767`` properties) itself, per message, to name it."""
    body = np.asarray(body_lengths, dtype=np.int64)
    if props_lengths is None:
        plen = plain_props_len(uniq_prefix_len)
    else:
        plen = np.asarray(props_lengths, dtype=np.int64)
        plen = np.where(plen < 0, plain_props_len(uniq_prefix_len), plen)
    return _FIXED + topic_len + _CRC_LEN + body + plen


def encode(topic: bytes, queue_id: int, born_timestamp: int, body: bytes,
           properties: bytes) -> bytes:
    """One V1 message with QUEUEOFFSET, PHYSICALOFFSET, STORETIMESTAMP zero and the
    ``__CRC32#`` placeholder appended (the old engine encoder)."""
    properties += _CRC_PLACEHOLDER
    total = _FIXED + len(body) + len(topic) + len(properties)
    return b"".join((
        _HEADER.pack(total, _MAGIC_V1, zlib.crc32(body) & _MASK, queue_id, 0, 0, 0, 0,
                     born_timestamp, _BORNHOST, 0, _STOREHOST, 0, 0),
        struct.pack(">i", len(body)), body, struct.pack(">B", len(topic)), topic,
        struct.pack(">h", len(properties)), properties))


def patch(buf: bytearray, pos: int, queue_offset: int, physical_offset: int,
          store_timestamp: int, born_timestamp: int | None) -> None:
    """Fill QUEUEOFFSET, PHYSICALOFFSET, STORETIMESTAMP (and BORNTIMESTAMP when given), then
    the ``__CRC32#`` digits: CRC-32 of everything before that property, least-significant
    digit first, padded with '0' (RocketMQ ``MessageDecoder#createCrc32``)."""
    struct.pack_into(">qq", buf, pos + 20, queue_offset, physical_offset)
    struct.pack_into(">q", buf, pos + 56, store_timestamp)
    if born_timestamp is not None:
        struct.pack_into(">q", buf, pos + 40, born_timestamp)
    end = pos + struct.unpack_from(">i", buf, pos)[0]
    crc = zlib.crc32(buf[pos:end - _CRC_LEN]) & _MASK
    buf[end - 11:end - 1] = (b"%d" % crc)[::-1].ljust(10, b"0")


def _span(blob, offsets, lengths, i: int, what: str) -> bytes:
    off, n = int(offsets[i]), int(lengths[i])
    if off < 0 or n < 0 or off + n > len(blob):
        raise ValueError(f"{what} {i}: span [{off}, +{n}) outside the {len(blob)}-byte blob")
    return bytes(blob[off:off + n])


def cl_encode(topic: bytes, bodies, body_offsets, body_lengths, props, props_offsets,
              props_lengths, uniq_prefix: bytes, uniq_first: int, queue_ids, queue_offsets,
              born_timestamps, phys_offset: int, store_timestamp: int, out=None,
              out_pos: int = 0):
    """The messages of one append_batch run, encoded back to back from commitlog offset
    ``phys_offset`` (see ``mq_cl_encode`` in native/mqstore_native.h for every field).
    ``props_lengths`` None, or a negative length: the plain properties (UNIQ_KEY from
    ``uniq_prefix`` + ``%016X`` of ``uniq_first + i``). ``born_timestamps`` None, or a
    negative one: the store timestamp. ValueError for a bad length, span or queue id, or
    when the messages do not fit ``out``. Returns the bytes, or with ``out`` (a writable
    buffer) writes them at ``out[out_pos:]`` and returns their count."""
    if out is not None:
        data = cl_encode(topic, bodies, body_offsets, body_lengths, props, props_offsets,
                         props_lengths, uniq_prefix, uniq_first, queue_ids, queue_offsets,
                         born_timestamps, phys_offset, store_timestamp)
        mv = memoryview(out)
        if not 0 <= out_pos <= len(mv) or len(data) > len(mv) - out_pos:
            raise ValueError(f"{len(data)} bytes of messages do not fit the {len(mv)}-byte "
                             f"buffer at {out_pos}")
        mv[out_pos:out_pos + len(data)] = data
        return len(data)
    n = len(body_lengths)
    if len(topic) > _TOPIC_MAX or uniq_first < 0 or phys_offset < 0:
        raise ValueError("topic over 255 bytes, or a negative uniq_first / phys_offset")
    if props_lengths is not None and props_offsets is None:
        raise ValueError("props_lengths needs props_offsets")
    if len(uniq_prefix) > _PROPS_MAX:
        raise ValueError("uniq_prefix too long")
    out = bytearray()
    for i in range(n):
        body = _span(bodies, body_offsets, body_lengths, i, "body")
        plen = -1 if props_lengths is None else int(props_lengths[i])
        if plen < 0:
            p = _UNIQ_NAME + uniq_prefix + b"%016X\x02" % (uniq_first + i)
        else:
            p = _span(props, props_offsets, props_lengths, i, "properties")
        qid = int(queue_ids[i])
        if not _INT32[0] <= qid <= _INT32[1]:
            raise ValueError(f"queue id {qid} outside int32")
        size = encoded_size(len(topic), len(body), plen, len(uniq_prefix))
        if size > _INT32[1]:
            raise ValueError(f"message {i} of {size} bytes exceeds int32")
        born = -1 if born_timestamps is None else int(born_timestamps[i])
        pos = len(out)
        out += encode(topic, qid, 0, body, p)
        patch(out, pos, int(queue_offsets[i]), phys_offset + pos, store_timestamp,
              store_timestamp if born < 0 else born)
    return out


def index_key_hashes(buf, positions, lengths, prefix_hashes) -> np.ndarray:
    """IndexFile hashes of keys ``prefix + buf[positions[i]:+lengths[i]]`` (see
    ``mq_index_key_hashes``): ``abs(java hash)``, MIN_VALUE -> 0, -1 for a key holding a
    byte >= 0x80 or a space. BufferRangeError (``_purepy``) for a span outside ``buf``,
    ValueError for a prefix hash outside int32."""
    mv = _purepy._bytes_view(buf)
    n = len(positions)
    out = np.empty(n, dtype=np.int64)
    for i in range(n):
        pos, ln = int(positions[i]), int(lengths[i])
        if ln < 0:
            mv.release()
            raise _purepy.BufferRangeError(f"key {i}: negative length {ln}")
        _purepy._check_range(mv, pos, pos + ln)
    for i in range(n):
        ph = int(prefix_hashes[i])
        if not _INT32[0] <= ph <= _INT32[1]:
            raise ValueError(f"prefix hash {ph} outside int32")
    for i in range(n):
        pos, ln = int(positions[i]), int(lengths[i])
        key = bytes(mv[pos:pos + ln])
        if any(b >= 0x80 or b == 0x20 for b in key):
            out[i] = -1
            continue
        h = int(prefix_hashes[i]) & 0xFFFFFFFF
        for b in key:
            h = (31 * h + b) & 0xFFFFFFFF
        s = h - (1 << 32) if h & 0x80000000 else h
        out[i] = 0 if s == -(1 << 31) else abs(s)
    return out


# ----- plain values from the Python objects (native/cl_write_ext.c: mqstore._cl_write) -----
# The errors come in the C module's order: every number (TypeError unless an integer,
# OverflowError outside int64), then topic / prefix (any bytes) and the values list, the
# ranges (ValueError), the values' types (TypeError: exactly bytes), the destination
# (TypeError unless a writable contiguous buffer), then what does not fit (ValueError).
def _dest(buf) -> memoryview:
    """``buf`` as a writable byte view (TypeError otherwise, as the C module)."""
    try:
        mv = memoryview(buf)
    except TypeError:
        raise TypeError("the destination must be a writable buffer") from None
    if mv.readonly or not mv.c_contiguous:
        mv.release()
        raise TypeError("the destination must be a writable buffer")
    return mv.cast("B")


def _values_items(values):
    if type(values) not in (list, tuple):
        raise TypeError("values must be a list or tuple of bytes")
    return values


def _bytes_args(*objs) -> None:
    for o in objs:
        if not isinstance(o, bytes):
            raise TypeError(f"expected bytes, {type(o).__name__} found")


_I64 = (-(1 << 63), (1 << 63) - 1)


def _int64(*numbers) -> list[int]:
    """The numbers as ints, in order: TypeError for a non-integer, OverflowError outside
    int64 (what the C module's argument parsing raises)."""
    out = []
    for x in numbers:
        x = operator.index(x)
        if not _I64[0] <= x <= _I64[1]:
            raise OverflowError(f"{x} does not fit an int64")
        out.append(x)
    return out


def values_scan(values, overhead: int, limit: int) -> tuple[int, int]:
    """(total, bad): the sum of ``overhead + len(v)`` over ``values`` (all exactly bytes,
    TypeError otherwise) and the first index whose size exceeds ``limit`` (-1 if none);
    ValueError for an overhead outside [0, 2^31)."""
    overhead, limit = _int64(overhead, limit)
    values = _values_items(values)
    if not 0 <= overhead <= _INT32[1]:
        raise ValueError("overhead outside [0, 2^31)")
    if any(type(v) is not bytes for v in values):
        raise TypeError("values must all be bytes")
    total, bad = 0, -1
    for i, v in enumerate(values):
        size = overhead + len(v)
        if bad < 0 and size > limit:
            bad = i
        total += size
    return total, bad


def values_fit(values, first: int, overhead: int, room: int) -> tuple[int, int]:
    """(count, nbytes): the longest run ``values[first:first + count]`` whose sizes
    (``overhead + len``) add up to at most ``room``, and that sum."""
    first, overhead, room = _int64(first, overhead, room)
    values = _values_items(values)
    if not 0 <= first <= len(values) or not 0 <= overhead <= _INT32[1]:
        raise ValueError("first outside the values, or overhead outside [0, 2^31)")
    used = 0
    i = first
    while i < len(values):
        v = values[i]
        if type(v) is not bytes:
            raise TypeError("values must all be bytes")
        size = overhead + len(v)
        if size > room - used:
            break
        used += size
        i += 1
    return i - first, used


def encode_values_into(buf, pos: int, topic: bytes, values, first: int, count: int,
                       uniq_prefix: bytes, uniq_first: int, queue_id: int, queue_offset: int,
                       phys_offset: int, store_timestamp: int) -> int:
    """Messages ``values[first:first + count]`` (plain: UNIQ_KEY ``uniq_first + j``,
    QUEUEOFFSET ``queue_offset + j``) back to back into ``buf[pos:]`` from commitlog offset
    ``phys_offset``; the bytes written. ValueError when they do not fit or an argument is
    out of range: :func:`cl_encode` of the run."""
    pos, first, count, uniq_first, queue_id, queue_offset, phys_offset, store_timestamp = \
        _int64(pos, first, count, uniq_first, queue_id, queue_offset, phys_offset,
               store_timestamp)
    _bytes_args(topic, uniq_prefix)
    values = _values_items(values)
    if not (0 <= first <= len(values) and 0 <= count <= len(values) - first) \
            or not 0 <= uniq_first <= _I64[1] - count or phys_offset < 0 \
            or not 0 <= queue_offset <= _I64[1] - count or len(topic) > _TOPIC_MAX \
            or len(uniq_prefix) > _PROPS_MAX:
        raise ValueError("first / count outside the values, a uniq_first, queue_offset or "
                         "phys_offset out of range, or a topic / prefix too long")
    run = values[first:first + count]
    if any(type(v) is not bytes for v in run):
        raise TypeError("values must all be bytes")
    with _dest(buf) as mv:
        if not 0 <= pos <= len(mv):
            raise ValueError("position outside the buffer")
        if phys_offset > _I64[1] - (len(mv) - pos):
            raise ValueError("phys_offset out of range")
        lengths = [len(v) for v in run]
        # what does not fit is refused before any message is encoded, as the C does (which
        # never encodes a PHYSICALOFFSET past the buffer's room: no struct.error)
        if sum(encoded_size(len(topic), n, -1, len(uniq_prefix)) for n in lengths) \
                > len(mv) - pos:
            raise ValueError("the messages do not fit the buffer")
        offsets = [sum(lengths[:j]) for j in range(count)]
        return cl_encode(topic, b"".join(run), offsets, lengths, None, None, None,
                         uniq_prefix, uniq_first, [queue_id] * count,
                         range(queue_offset, queue_offset + count), None, phys_offset,
                         store_timestamp, mv, pos)


def encode_one_into(buf, pos: int, topic: bytes, body: bytes, uniq_prefix: bytes,
                    uniq_number: int, queue_id: int, queue_offset: int, phys_offset: int,
                    store_timestamp: int) -> int:
    """One plain message into ``buf[pos:]`` (the single ``append()`` path): the bytes
    written; the errors of :func:`encode_values_into`."""
    if type(body) is not bytes:
        raise TypeError("body must be bytes")
    pos, uniq_number, queue_id, queue_offset, phys_offset, store_timestamp = \
        _int64(pos, uniq_number, queue_id, queue_offset, phys_offset, store_timestamp)
    _bytes_args(topic, uniq_prefix)
    with _dest(buf) as mv:
        if not 0 <= pos <= len(mv):
            raise ValueError("position outside the buffer")
        return cl_encode(topic, body, [0], [len(body)], None, None, None, uniq_prefix,
                         uniq_number, [queue_id], [queue_offset], None, phys_offset,
                         store_timestamp, mv, pos)
