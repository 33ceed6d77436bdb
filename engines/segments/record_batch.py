"""RecordBatch v2 (magic 2): encoding, decoding, zig-zag varints, and the ``mqstore.tag`` header.

A batch is the unit Kafka stores, indexes, checksums and sends: a 61-byte header (see
``format.py``) followed by the records, each framed as::

    varint length | int8 attributes (0) | varlong timestampDelta | varint offsetDelta |
    varint keyLength (-1 = null) | key | varint valueLength (-1 = null) | value |
    varint headerCount | (varint keyLength | UTF-8 key | varint valueLength | value)*

Varints are zig-zag LEB128. The CRC-32C covers bytes [21, end), so a batch body can be built
and checksummed before its base offset is known; :func:`batch_prefix` adds the 21 leading bytes
once the partition assigns the offset (as the broker does in place).

mqstore's ``tag`` is stored as the last record header, named ``mqstore.tag``; readers strip it
from ``headers`` and report it as ``tag``. Decoding reads uncompressed batches and gzip ones
(zlib); lz4 and zstd when the ``lz4`` / ``zstandard`` packages are installed. The encoder
always writes uncompressed batches. Pure functions: thread-safe.
"""
from __future__ import annotations

import threading
import zlib
from collections.abc import Iterator, Mapping, Sequence
from typing import NamedTuple

from mqstore import _purepy_batches as ref
from mqstore import errors, native
from mqstore.engines.segments import format as fmt

# ----- zig-zag varints -----
_TABLE_MIN = -1
_TABLE_MAX = 1 << 14


def _encode_varint_slow(n: int) -> bytes:
    z = (n << 1) ^ (n >> 63)
    z &= 0xFFFFFFFFFFFFFFFF
    out = bytearray()
    while z >= 0x80:
        out.append((z & 0x7F) | 0x80)
        z >>= 7
    out.append(z)
    return bytes(out)


_VARINTS = [_encode_varint_slow(n) for n in range(_TABLE_MIN, _TABLE_MAX)]


def encode_varint(n: int) -> bytes:
    """Zig-zag LEB128 encoding of ``n`` (Kafka's ``ByteUtils.writeVarint/Varlong``)."""
    if _TABLE_MIN <= n < _TABLE_MAX:
        return _VARINTS[n + 1]
    return _encode_varint_slow(n)


def decode_varint(buf: bytes, pos: int) -> tuple[int, int]:
    """Decode a zig-zag varint at ``pos``; return ``(value, next position)``."""
    b = buf[pos]
    if b < 0x80:
        return (b >> 1) ^ -(b & 1), pos + 1
    result = b & 0x7F
    shift = 7
    pos += 1
    while True:
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if b < 0x80:
            return (result >> 1) ^ -(result & 1), pos
        shift += 7
        if shift > 63:
            raise ValueError("varint longer than 10 bytes")


# ----- encoding -----
_NULL = encode_varint(-1)
_ZERO = encode_varint(0)
_ATTR0 = b"\x00"
_TAG_NAME = fmt.TAG_HEADER
#: attributes 0, timestampDelta 0, offsetDelta 0, keyLength -1 (null key)
_SIMPLE_PREFIX = b"\x00\x00\x00\x01"
_TAG_HEADER_KEY = encode_varint(len(fmt.TAG_HEADER_BYTES)) + fmt.TAG_HEADER_BYTES
_pack_crc_header = fmt.BATCH_CRC_HEADER.pack
_pack_crc_header_into = fmt.BATCH_CRC_HEADER.pack_into
_pack_prefix = fmt.BATCH_PREFIX.pack
_crc32c = native.crc32c
_tuple_new = tuple.__new__


def encode_record(
    offset_delta: int,
    timestamp_delta: int,
    key: bytes | None,
    value: bytes | None,
    headers: Sequence[tuple[bytes, bytes | None]] = (),
) -> bytes:
    """One record in the v2 framing (headers as already-encoded ``(key, value)`` pairs)."""
    ev = encode_varint
    parts = [_ATTR0, ev(timestamp_delta), ev(offset_delta)]
    if key is None:
        parts.append(_NULL)
    else:
        parts.append(ev(len(key)))
        parts.append(key)
    if value is None:
        parts.append(_NULL)
    else:
        parts.append(ev(len(value)))
        parts.append(value)
    parts.append(ev(len(headers)))
    for hk, hv in headers:
        parts.append(ev(len(hk)))
        parts.append(hk)
        if hv is None:
            parts.append(_NULL)
        else:
            parts.append(ev(len(hv)))
            parts.append(hv)
    body = b"".join(parts)
    return ev(len(body)) + body


def _header_section(headers: Mapping[str, bytes] | None, tag: str | None) -> bytes:
    """A record's headers section: the count, the user headers, then the tag header last."""
    ev = encode_varint
    parts = [ev((len(headers) if headers else 0) + (tag is not None))]
    if headers:
        for name, hv in headers.items():
            hk = name.encode("utf-8")
            parts += (ev(len(hk)), hk, ev(len(hv)), hv)
    if tag is not None:
        tb = tag.encode("utf-8")
        parts += (_TAG_HEADER_KEY, ev(len(tb)), tb)
    return b"".join(parts)


def _mq_record(offset_delta: int, ts_delta: int, key: bytes | None, value: bytes,
               headers: Mapping[str, bytes] | None, tag: str | None) -> bytes:
    """Encode one mqstore record: user headers, then the tag header last."""
    ev = encode_varint
    parts = [_ATTR0, ev(ts_delta), ev(offset_delta)]
    if key is None:
        parts.append(_NULL)
    else:
        parts.append(ev(len(key)))
        parts.append(key)
    parts.append(ev(len(value)))
    parts.append(value)
    parts.append(_ZERO if not headers and tag is None else _header_section(headers, tag))
    body = b"".join(parts)
    return ev(len(body)) + body


class BatchBody(NamedTuple):
    """The CRC-covered part of a batch (bytes [21, end)) and what the log needs to know."""

    body: bytes  # or a memoryview (encode_values: see there)
    crc: int
    count: int
    max_timestamp: int
    size: int  # total size of the finished batch (header prefix included)


def encode_messages(
    messages: Sequence[tuple[int, bytes | None, bytes, Mapping[str, bytes] | None, str | None]],
) -> BatchBody:
    """Build the CRC-covered body of one uncompressed batch from mqstore messages, given as
    ``(timestamp_ms, key, value, headers, tag)`` tuples (already validated): the records
    section in one native call (``native.encode_records``, from columns; only headers and
    tags are encoded here, per message that has them)."""
    stamps = [m[0] for m in messages]
    base_ts = stamps[0]
    max_ts = max(stamps)
    extras = [b"" if not h and t is None else _header_section(h, t)
              for _ts, _k, _v, h, t in messages]
    encode = native.encode_records if _NATIVE_RECORDS else ref.encode_records
    records = encode([m[2] for m in messages], [m[1] for m in messages],
                     [ts - base_ts for ts in stamps], extras)
    n = len(messages)
    body = _pack_crc_header(0, n - 1, base_ts, max_ts, -1, -1, -1, n) + records
    return BatchBody(body, _crc32c(body), n, max_ts, len(body) + fmt.CRC_START)


def encode_values(values: Sequence[bytes], ts: int) -> BatchBody:
    """The body of a batch of plain values (no key, headers or tag) sharing one timestamp:
    the ``append_batch`` fast path. Same bytes as :func:`encode_messages` would write.

    The body is a view of this thread's scratch buffer (``native.encode_value_records_view``),
    valid until the thread encodes the next batch: append it before that (the store does, at
    once, under the partition lock)."""
    encode = native.encode_value_records_view if _NATIVE_RECORDS else \
        ref.encode_value_records_view
    body = encode(values, fmt.RECORD_BATCH_OVERHEAD - fmt.CRC_START)
    n = len(values)
    _pack_crc_header_into(body, 0, 0, n - 1, ts, ts, -1, -1, -1, n)
    return BatchBody(body, _crc32c(body), n, ts, len(body) + fmt.CRC_START)


def encode_one(ts: int, key: bytes | None, value: bytes, headers: Mapping[str, bytes] | None,
               tag: str | None) -> BatchBody:
    """The body of a one-record batch (the single-append fast path)."""
    if key is None and not headers and tag is None:  # value only: one join, one copy
        vl = len(value)
        vlen = _VARINTS[vl + 1] if vl < _TABLE_MAX - 1 else encode_varint(vl)
        body = b"".join((_pack_crc_header(0, 0, ts, ts, -1, -1, -1, 1),
                         encode_varint(len(vlen) + vl + 5), _SIMPLE_PREFIX, vlen, value,
                         _ZERO))
    else:
        body = _pack_crc_header(0, 0, ts, ts, -1, -1, -1, 1) + \
            _mq_record(0, 0, key, value, headers, tag)
    return _tuple_new(BatchBody, (body, _crc32c(body), 1, ts, len(body) + fmt.CRC_START))


#: a whole one-record batch of a plain value (no key, headers or tag) at a known base offset:
#: ``value_batch(base_offset, timestamp, value) -> bytes`` (the single-append path; the
#: bytes of :func:`encode_one` with its :func:`batch_prefix`, built in one C call)
value_batch = native.value_batch
#: the size of the whole batch :func:`values_batch` builds (TypeError if a value is not
#: exactly ``bytes``: the caller then takes the general path)
values_batch_size = native.values_batch_size
_scratch = threading.local()
_SCRATCH_KEPT = 16 * 1024 * 1024  # the largest scratch buffer a thread keeps between calls


def values_batch(base_offset: int, timestamp: int, values: list[bytes], size: int) -> memoryview:
    """The whole batch of plain ``values`` sharing one timestamp (the bytes of
    :func:`encode_values` with its :func:`batch_prefix`), ``size`` bytes as
    :func:`values_batch_size` gave, built in one pass from the values where they lie
    (``native.values_batch_into``). It is a view of this thread's scratch buffer, valid until
    the thread builds the next batch: write it out first (the segment does, at once, under
    the partition lock). A fresh buffer per call would cost its page faults (1-3 ms a
    megabyte), more than the encoding."""
    buf = getattr(_scratch, "buf", None)
    if buf is None or len(buf) < size:
        buf = bytearray(max(size, 64 * 1024))
        if len(buf) <= _SCRATCH_KEPT:
            _scratch.buf = buf
    native.values_batch_into(buf, base_offset, timestamp, values, size)
    return memoryview(buf)[:size]


def batch_prefix(base_offset: int, body: BatchBody,
                 partition_leader_epoch: int = fmt.NO_PARTITION_LEADER_EPOCH) -> bytes:
    """The 21 bytes before the CRC-covered body: baseOffset, batchLength, epoch, magic, crc."""
    return _pack_prefix(base_offset, len(body.body) + 9, partition_leader_epoch, fmt.MAGIC,
                        body.crc)


def encode_batch(
    base_offset: int,
    records: Sequence[tuple[int, int, bytes | None, bytes | None,
                            Sequence[tuple[bytes, bytes | None]]]],
    *,
    base_timestamp: int | None = None,
    attributes: int = 0,
    producer_id: int = fmt.NO_PRODUCER_ID,
    producer_epoch: int = fmt.NO_PRODUCER_EPOCH,
    base_sequence: int = fmt.NO_SEQUENCE,
    partition_leader_epoch: int = fmt.NO_PARTITION_LEADER_EPOCH,
    last_offset_delta: int | None = None,
) -> bytes:
    """A whole uncompressed batch from ``(offset_delta, timestamp, key, value, headers)``
    records (general form: any header fields, null keys/values, raw header pairs)."""
    if attributes & fmt.COMPRESSION_CODEC_MASK:
        raise errors.UnsupportedOperation("encode_batch writes uncompressed batches only")
    if base_timestamp is None:
        base_timestamp = records[0][1] if records else fmt.NO_TIMESTAMP
    max_ts = max((r[1] for r in records), default=fmt.NO_TIMESTAMP)
    if last_offset_delta is None:
        last_offset_delta = records[-1][0] if records else 0
    recs = b"".join(encode_record(od, ts - base_timestamp, k, v, h) for od, ts, k, v, h in records)
    body = _pack_crc_header(attributes, last_offset_delta, base_timestamp, max_ts, producer_id,
                            producer_epoch, base_sequence, len(records)) + recs
    return _pack_prefix(base_offset, len(body) + 9, partition_leader_epoch, fmt.MAGIC,
                        _crc32c(body)) + body


def empty_batch(base_offset: int, last_offset: int, timestamp: int,
                size: int = fmt.RECORD_BATCH_OVERHEAD) -> bytes:
    """A batch holding no records that covers offsets ``[base_offset, last_offset]``: what
    ``on_corruption="skip"`` writes where damaged batches were, so the offset chain stays
    exact and the lost offsets read as a gap (Kafka's log cleaner keeps empty batches the
    same way). ``size`` > 61 pads it with zeros inside the CRC so it fills a damaged range
    exactly; readers decode ``recordsCount`` (0) records and ignore the rest."""
    body = _pack_crc_header(0, last_offset - base_offset, timestamp, timestamp,
                            fmt.NO_PRODUCER_ID, fmt.NO_PRODUCER_EPOCH, fmt.NO_SEQUENCE, 0)
    body += bytes(size - fmt.RECORD_BATCH_OVERHEAD)
    return _pack_prefix(base_offset, len(body) + 9, fmt.NO_PARTITION_LEADER_EPOCH, fmt.MAGIC,
                        _crc32c(body)) + body


def batch_crc_problem(batch) -> str | None:
    """Why one whole batch read back from a ``.log`` fails its CRC-32C, or None (the read
    path's check, ``check_crcs``)."""
    stored = fmt.CRC.unpack_from(batch, fmt.CRC_POS)[0]
    actual = _crc32c(memoryview(batch)[fmt.CRC_START:])
    if actual != stored:
        return f"batch CRC-32C mismatch (stored {stored:#010x}, computed {actual:#010x})"
    return None


# ----- decoding -----
class BatchHeader(NamedTuple):
    """The 61-byte header of a batch, field by field (Kafka's names, snake_cased)."""

    base_offset: int
    batch_length: int
    partition_leader_epoch: int
    magic: int
    crc: int
    attributes: int
    last_offset_delta: int
    base_timestamp: int
    max_timestamp: int
    producer_id: int
    producer_epoch: int
    base_sequence: int
    records_count: int

    @property
    def size(self) -> int:
        return self.batch_length + fmt.LOG_OVERHEAD

    @property
    def last_offset(self) -> int:
        return self.base_offset + self.last_offset_delta

    @property
    def codec(self) -> int:
        return self.attributes & fmt.COMPRESSION_CODEC_MASK

    @property
    def is_control(self) -> bool:
        return bool(self.attributes & fmt.CONTROL_FLAG_MASK)


def read_header(buf, pos: int = 0) -> BatchHeader:
    """Unpack the batch header at ``pos`` (no checks)."""
    return BatchHeader._make(fmt.BATCH_HEADER.unpack_from(buf, pos))


def batch_is_valid(batch) -> bool:
    """True if ``batch`` (one whole batch) has size >= 61, magic 2 and a matching CRC-32C."""
    if len(batch) < fmt.RECORD_BATCH_OVERHEAD:
        return False
    _, length, _, magic, crc = fmt.BATCH_PREFIX.unpack_from(batch, 0)
    if magic != fmt.MAGIC or length + fmt.LOG_OVERHEAD != len(batch):
        return False
    return _crc32c(memoryview(batch)[fmt.CRC_START:]) == crc


def _decompress(codec: int, data: bytes) -> bytes:
    """The records section of a compressed batch; a damaged stream is CorruptRecordError
    (whatever exception type the codec module raises)."""
    try:
        return _decompress_raw(codec, data)
    except errors.MQStoreError:
        raise
    except Exception as exc:  # zlib.error, lz4/zstd errors, EOFError of a cut stream
        raise errors.CorruptRecordError(
            f"damaged {fmt.CODEC_NAMES.get(codec, codec)} batch: {type(exc).__name__}: {exc}"
        ) from None


def _decompress_raw(codec: int, data: bytes) -> bytes:
    if codec == 1:
        return zlib.decompress(data, 16 + zlib.MAX_WBITS)
    if codec == 3:
        try:
            import lz4.frame  # type: ignore[import-not-found]
        except ImportError:
            raise errors.UnsupportedOperation(
                "this batch is lz4-compressed; install the 'lz4' package to read it") from None
        return lz4.frame.decompress(data)
    if codec == 4:
        try:
            import zstandard  # type: ignore[import-not-found]
        except ImportError:
            raise errors.UnsupportedOperation(
                "this batch is zstd-compressed; install 'zstandard' to read it") from None
        return zstandard.ZstdDecompressor().decompressobj().decompress(data)
    raise errors.UnsupportedOperation(
        f"batch compression {fmt.CODEC_NAMES.get(codec, codec)!r} is not supported by "
        "mqstore's reader (none, gzip, lz4 and zstd are)")


class DecodedRecord(NamedTuple):
    """One record of a batch, with the tag header split off."""

    offset: int
    timestamp_ms: int
    key: bytes | None
    value: bytes
    headers: dict[str, bytes]
    tag: str | None


def iter_records(batch: bytes, header: BatchHeader | None = None) -> Iterator[DecodedRecord]:
    """Decode every record of one whole batch (``batch`` starts at its baseOffset).

    Null values and null header values read as ``b""``; a repeated header name keeps its last
    value. Control batches (transaction markers) yield nothing, as a consumer skips them.
    Raises CorruptRecordError if the records do not parse.
    """
    if not isinstance(batch, bytes):
        batch = bytes(batch)
    h = header or read_header(batch)
    for t in decode_records(batch, h):
        yield DecodedRecord._make(t)


#: with the compiled helper, C decodes the batches and encodes plain values; the reference
#: (``mqstore._purepy_batches``, ``_purepy.encode_value_records``) runs under
#: MQSTORE_NATIVE=off, or when a test sets this to False
_NATIVE_RECORDS = native.backend == "native"
_INT64_MIN, _INT64_MAX = -(1 << 63), (1 << 63) - 1


def uncompressed_copy(batch, position: int = 0) -> bytes:
    """The compressed batch at ``batch[position:]`` rewritten as an uncompressed one (codec
    bits cleared, batchLength fitted, CRC not recomputed), so that the one batch decoder
    reads its records: the read path's way through gzip / lz4 / zstd batches (read-only,
    written by Kafka). A stream that does not decompress is CorruptRecordError."""
    head = bytearray(batch[position:position + fmt.RECORD_BATCH_OVERHEAD])
    h = read_header(head)
    records = _decompress(h.codec, bytes(batch[position + fmt.RECORD_BATCH_OVERHEAD:
                                               position + h.size]))
    struct_len = fmt.RECORD_BATCH_OVERHEAD - fmt.LOG_OVERHEAD + len(records)
    head[8:12] = struct_len.to_bytes(4, "big", signed=True)
    head[21:23] = (h.attributes & ~fmt.COMPRESSION_CODEC_MASK).to_bytes(2, "big", signed=True)
    return bytes(head) + records


def header_rows(data: bytes, first: int, count: int, hdrs: list) -> dict[str, bytes]:
    """The headers of one decoded record (rows ``hdrs[first:first + count]`` of
    ``native.decode_batches``), without the tag header; the last of a repeated name wins."""
    headers: dict[str, bytes] = {}
    for hkp, hkl, hvp, hvl in hdrs[first:first + count]:
        name = data[hkp:hkp + hkl].decode("utf-8")  # checked by the decoder
        if name != _TAG_NAME:
            headers[name] = b"" if hvl < 0 else data[hvp:hvp + hvl]
    return headers


def tag_of(data: bytes, row: int, hdrs: list) -> str | None:
    """The tag of a decoded record whose tag header is row ``row`` (-1: none)."""
    if row < 0:
        return None
    _hkp, _hkl, hvp, hvl = hdrs[row]
    return data[hvp:hvp + hvl].decode("utf-8") if hvl > 0 else ""


def decode_records(batch: bytes, h: tuple) -> list[tuple]:
    """``(offset, timestamp_ms, key, value, headers, tag)`` tuples of one whole batch given
    as ``bytes`` and its unpacked header (``format.BATCH_HEADER`` field order), through the
    read path's batch decoder (``native.decode_batches``; no CRC check here: callers check
    it). Raises CorruptRecordError if the batch or its records do not parse."""
    decode = native.decode_batches if _NATIVE_RECORDS else ref.decode_batches
    data = batch if isinstance(batch, bytes) else bytes(batch)
    r = decode(data, 0, len(data), -1, _INT64_MIN, _INT64_MAX, False, _INT64_MAX, _INT64_MAX)
    if r.status == ref.BATCHES_COMPRESSED:
        data = uncompressed_copy(data)
        r = decode(data, 0, len(data), -1, _INT64_MIN, _INT64_MAX, False, _INT64_MAX,
                   _INT64_MAX)
    if r.status != ref.BATCHES_END:
        why = {ref.BATCHES_TORN: f"batch cut at {len(data)}",
               ref.BATCHES_BAD_HEADER: "malformed batch header"}.get(
                   r.status, "a record does not parse")
        raise errors.CorruptRecordError(
            f"batch at offset {h[0]} has malformed records: {why}")
    hdrs = r.headers.tolist()
    out = []
    for off, ts, kp, kl, vp, vl, first, hn, tag_row in r.records.tolist():
        out.append((off, ts, None if kl < 0 else data[kp:kp + kl],
                    b"" if vl < 0 else data[vp:vp + vl],
                    header_rows(data, first, hn, hdrs) if hn else {},
                    tag_of(data, tag_row, hdrs)))
    return out
