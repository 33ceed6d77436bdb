"""Damage met by the batch-native read (``log_read.read_records``): one native call checks
and decodes every batch of a read, so a damaged batch in the middle of a multi-batch read must
still raise CorruptRecordError naming the ``.log`` and the batch's position, while a read
that ends before it still works. Also batches Kafka writes and mqstore does not (gzip,
control, LogAppendTime) appended to a cleanly closed store, read in one multi-batch read.
"""
from __future__ import annotations

import gzip
import struct

import pytest

import mqstore
from mqstore import _purepy
from mqstore.errors import CorruptRecordError
from tests.segments.conftest import SMALL, segment_files

_AFTER_CRC = struct.Struct(">hiqqqhii")
_PREFIX = struct.Struct(">qiibI")
OPTS = {**SMALL, "segment_bytes": 1 << 20}


def _varint(n: int) -> bytes:
    z = ((n << 1) ^ (n >> 63)) & 0xFFFFFFFFFFFFFFFF
    out = bytearray()
    while z >= 0x80:
        out.append((z & 0x7F) | 0x80)
        z >>= 7
    out.append(z)
    return bytes(out)


def _record(offset_delta: int, value: bytes, headers=()) -> bytes:
    body = (b"\x00\x00" + _varint(offset_delta) + _varint(-1) + _varint(len(value)) + value
            + _varint(len(headers))
            + b"".join(_varint(len(k)) + k + _varint(len(v)) + v for k, v in headers))
    return _varint(len(body)) + body


def _batch(base: int, records: bytes, count: int, attributes: int = 0,
           ts: int = 5_000) -> bytes:
    body = _AFTER_CRC.pack(attributes, count - 1, ts, ts + 7, -1, -1, -1, count) + records
    return _PREFIX.pack(base, len(body) + 9, 0, 2, _purepy.crc32c(body)) + body


def _store(tmp_path, batches: int = 6, per: int = 50):
    """A closed store with ``batches`` batches of ``per`` records; returns (path, log,
    positions of the batches)."""
    path = str(tmp_path / "store")
    with mqstore.open(path, "segments", **OPTS) as s:
        s.create_topic("t")
        for i in range(batches):
            s.append_batch("t", [b"b%d-%03d" % (i, j) for j in range(per)])
    (log,) = segment_files(path)
    data = open(log, "rb").read()
    positions, pos = [], 0
    while pos < len(data):
        positions.append(pos)
        pos += struct.unpack_from(">i", data, pos + 8)[0] + 12
    return path, log, positions


def _rewrite(log: str, at: int, new: bytes) -> None:
    with open(log, "r+b") as f:
        f.seek(at)
        f.write(new)


@pytest.mark.parametrize("check_crcs", [True, False])
def test_malformed_records_with_a_good_crc_in_a_middle_batch(tmp_path, check_crcs):
    """Batch 3 rewritten, same size and offsets, with a valid CRC around records that do not
    parse: every read that needs it raises, naming the file and the batch."""
    path, log, positions = _store(tmp_path)
    at, end = positions[3], positions[4]
    recs = _record(0, b"x" * 3, headers=[(b"\xff", b"")])  # a header name that is not UTF-8
    recs += bytes(end - at - 61 - len(recs))  # (and zero bytes after it, to keep the size)
    body = _AFTER_CRC.pack(0, 49, 5_000, 5_000, -1, -1, -1, 1) + recs  # offsets 150..199
    bad = _PREFIX.pack(150, len(body) + 9, 0, 2, _purepy.crc32c(body)) + body
    assert len(bad) == end - at
    _rewrite(log, at, bad)
    with mqstore.open(path, "segments", check_crcs=check_crcs, **OPTS) as s:
        assert len(s.read("t", 0, 0, max_records=150)) == 150
        for start in (0, 120, 150, 170):
            with pytest.raises(CorruptRecordError) as info:
                s.read("t", 0, start, max_records=1000, max_bytes=1 << 30)
            assert (info.value.path, info.value.position) == (log, at)
        assert s.read("t", 0, 200, max_records=1)[0].value == b"b4-000"


def test_a_crc_mismatch_deep_in_a_multi_batch_read(tmp_path):
    path, log, positions = _store(tmp_path, batches=20, per=30)
    _rewrite(log, positions[13] + 70, b"?")
    with mqstore.open(path, "segments", **OPTS) as s:
        with pytest.raises(CorruptRecordError) as info:
            s.read("t", 0, 0, max_records=10_000, max_bytes=1 << 30)
        assert (info.value.path, info.value.position) == (log, positions[13])
        assert "CRC-32C" in str(info.value)
        got = s.read("t", 0, 0, max_records=13 * 30, max_bytes=1 << 30)
        assert got.offsets.tolist() == list(range(13 * 30))
        room = sum(len(b"b%d-%03d" % (i, j)) for i in range(13) for j in range(30)) - 1
        by_bytes = s.read("t", 0, 0, max_records=10_000, max_bytes=room)
        assert len(by_bytes) == 13 * 30 - 1  # stops before the damage: nothing raised


def test_kafka_written_batches_in_one_read(tmp_path):
    """gzip, a control batch and LogAppendTime appended to a closed store: one read
    returns the records of every batch, the control batch's none."""
    path, log, _positions = _store(tmp_path, batches=2, per=5)  # offsets 0..9
    plain = _record(0, b"p0") + _record(1, b"p1", headers=[(b"mqstore.tag", b"T"),
                                                           (b"h", b"1")])
    with open(log, "ab") as f:
        f.write(_batch(10, gzip.compress(plain), 2, attributes=0x01))
        f.write(_batch(12, _record(0, b"\x00\x00\x00\x00\x00\x00"), 1, attributes=0x20))
        f.write(_batch(13, _record(0, b"lat"), 1, attributes=0x08))
        f.write(_batch(14, _record(0, b"last"), 1))
    with mqstore.open(path, "segments", **OPTS) as s:
        got = s.read("t", 0, 3, max_records=100)
        assert got.offsets.tolist() == [3, 4, 5, 6, 7, 8, 9, 10, 11, 13, 14]
        assert got.values()[7:] == [b"p0", b"p1", b"lat", b"last"]
        assert got.tags()[8] == "T" and got.headers()[8] == {"h": b"1"}
        assert got[9].timestamp_ms == 5_007  # LogAppendTime: the batch's maxTimestamp
        assert [r.value for r in s.read("t", 0, 11, tags=["T"])] == [b"p1"]
        assert s.read("t", 0, 12)[0].offset == 13


def test_batch_whose_next_offset_overflows_int64_is_a_bad_header_on_both_backends():
    """Sanitizer-driver finding: a sound batch ending at offset 2**63 - 1 has no next
    offset in int64; the C walk wrapped it to -2**63 while the reference said 2**63. Both
    now refuse that header (BAD_HEADER in the read walk, not sent by transfer_to)."""
    import struct

    from mqstore import _purepy, _purepy_batches, native

    after_crc = struct.Struct(">hiqqqhii")
    prefix = struct.Struct(">qiibI")

    def record(delta: int) -> bytes:
        body = bytes([0, 0, delta * 2, 1, 2]) + b"v" + b"\x00"  # attrs, ts, off, key -1, value
        return bytes([len(body) * 2]) + body

    def batch(base: int, lod: int) -> bytes:
        body = after_crc.pack(0, lod, 1000, 1000, -1, -1, -1, lod + 1)
        body += b"".join(record(i) for i in range(lod + 1))
        return prefix.pack(base, len(body) + 9, 0, 2, _purepy.crc32c(body)) + body

    big = (1 << 63) - 1
    log = batch(big - 1, 1)  # offsets 2**63 - 2 and 2**63 - 1
    ok = batch(big - 2, 1)   # ends at 2**63 - 2: the next offset fits
    impls = [_purepy_batches]
    if native.backend == "native":
        impls.append(native)
    for impl in impls:
        assert impl.batch_span(log, 0, len(log), big) == (0, 0, -1)
        assert impl.batch_span(ok, 0, len(ok), big) == (1, len(ok), big)
        got = impl.decode_batches(log, 0, len(log), -1, -(1 << 63), big, True, 10, 10_000)
        assert got.status == _purepy_batches.BATCHES_BAD_HEADER
        good = impl.decode_batches(ok, 0, len(ok), -1, -(1 << 63), big, True, 10, 10_000)
        assert good.next_expect == big and len(good.records) == 2
