"""RecordBatch v2 codec: broker-captured golden batches, check values, our encoder."""
from __future__ import annotations

import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mqstore import native
from mqstore.engines.segments import format as fmt
from mqstore.engines.segments.record_batch import (
    batch_is_valid,
    batch_prefix,
    decode_varint,
    encode_batch,
    encode_messages,
    encode_one,
    encode_values,
    encode_record,
    encode_varint,
    iter_records,
    read_header,
)

from .conftest import FIXTURES

GOLDEN = FIXTURES / "kafka-broker-batches-v2.bin"


def _golden() -> bytes:
    if not GOLDEN.exists():
        pytest.skip(f"fixture {GOLDEN} is absent (shared/ must sit beside the repository)")
    return GOLDEN.read_bytes()


def _split(data: bytes) -> list[tuple[int, bytes]]:
    out, pos = [], 0
    while pos < len(data):
        size = struct.unpack_from(">i", data, pos + 8)[0] + 12
        out.append((pos, data[pos:pos + size]))
        pos += size
    return out


def test_crc32c_check_value():
    assert native.crc32c(b"123456789") == 0xE3069283


def test_header_is_61_bytes():
    assert fmt.BATCH_HEADER.size == fmt.RECORD_BATCH_OVERHEAD == 61
    assert fmt.BATCH_PREFIX.size + fmt.BATCH_CRC_HEADER.size == 61


def test_check_vector_record():
    assert encode_record(0, 0, b"k", b"v") == bytes.fromhex("10000000026b027600")


def test_golden_batches_decode_exactly():
    batches = _split(_golden())
    assert [p for p, _ in batches] == [0, 71, 147, 218]
    assert [len(b) for _, b in batches] == [71, 76, 71, 81]
    expected = [
        (0, [(0, None, b"123", {})]),
        (1, [(1, None, b"", {}), (2, None, b"", {})]),
        (3, [(3, None, b"123", {})]),
        (0, [(0, None, b"hdr", {"hkey": b"hval"})]),
    ]
    for (_pos, batch), (base, recs) in zip(batches, expected):
        assert batch_is_valid(batch)
        h = read_header(batch)
        assert h.magic == 2 and h.base_offset == base and h.records_count == len(recs)
        got = [(r.offset, r.key, r.value, r.headers) for r in iter_records(batch)]
        assert got == recs
        decoded = list(iter_records(batch))
        assert decoded[0].timestamp_ms == h.base_timestamp
        assert max(r.timestamp_ms for r in decoded) == h.max_timestamp
        assert all(r.tag is None for r in decoded)


def test_encoder_reproduces_golden_bytes():
    """Decode each broker batch and rebuild it with our encoder: byte-identical, CRC-covered
    region included (the leader epoch, outside the CRC, is carried over)."""
    for _pos, batch in _split(_golden()):
        h = read_header(batch)
        records = [(r.offset - h.base_offset, r.timestamp_ms, r.key, r.value,
                    [(k.encode(), v) for k, v in r.headers.items()])
                   for r in iter_records(batch)]
        ours = encode_batch(h.base_offset, records, base_timestamp=h.base_timestamp,
                            attributes=h.attributes, producer_id=h.producer_id,
                            producer_epoch=h.producer_epoch, base_sequence=h.base_sequence,
                            partition_leader_epoch=h.partition_leader_epoch)
        assert ours[fmt.CRC_START:] == batch[fmt.CRC_START:]
        assert ours == batch


def test_corrupt_byte_fails_crc():
    _pos, batch = _split(_golden())[0]
    bad = bytearray(batch)
    bad[-2] ^= 0x40
    assert not batch_is_valid(bytes(bad))
    bad = bytearray(batch)
    bad[12] ^= 0xFF  # partitionLeaderEpoch is outside the CRC
    assert batch_is_valid(bytes(bad))


def test_mqstore_batch_round_trip_with_tag_header():
    rows = [(1000, b"k1", b"v1", {"h": b"\x00\xff"}, "paid"), (990, None, b"", None, None),
            (1005, b"", b"x" * 300, {"a": b"", "b": b"2"}, "t\u00e9")]
    body = encode_messages(rows)
    batch = batch_prefix(40, body) + body.body
    assert batch_is_valid(batch) and len(batch) == body.size
    h = read_header(batch)
    assert (h.base_offset, h.last_offset, h.records_count) == (40, 42, 3)
    assert (h.base_timestamp, h.max_timestamp) == (1000, 1005)
    assert (h.producer_id, h.producer_epoch, h.base_sequence) == (-1, -1, -1)
    got = list(iter_records(batch))
    assert [(r.offset, r.timestamp_ms, r.key, r.value, r.headers, r.tag) for r in got] == [
        (40, 1000, b"k1", b"v1", {"h": b"\x00\xff"}, "paid"),
        (41, 990, None, b"", {}, None),
        (42, 1005, b"", b"x" * 300, {"a": b"", "b": b"2"}, "t\u00e9"),
    ]
    assert b"mqstore.tag" in batch  # the tag is a real Kafka record header


def test_encode_one_equals_general_encoder():
    one = encode_one(77, b"k", b"v", {"x": b"y"}, "tg")
    many = encode_messages([(77, b"k", b"v", {"x": b"y"}, "tg")])
    assert one == many
    assert encode_one(5, None, b"v" * 200, None, None) == \
        encode_messages([(5, None, b"v" * 200, None, None)])


def test_encode_values_equals_general_encoder():
    vals = [b"", b"a", b"b" * 70, b"c" * 20000] + [b"d"] * 200
    assert encode_values(vals, 99) == encode_messages([(99, None, v, None, None) for v in vals])


@settings(max_examples=200, deadline=None)
@given(st.integers(min_value=-(2**63), max_value=2**63 - 1))
def test_varint_round_trip(n):
    enc = encode_varint(n)
    assert decode_varint(enc, 0) == (n, len(enc))


def test_varint_zigzag_values():
    assert encode_varint(0) == b"\x00" and encode_varint(-1) == b"\x01"
    assert encode_varint(1) == b"\x02" and encode_varint(63) == b"\x7e"
    assert encode_varint(64) == b"\x80\x01" and encode_varint(-65) == b"\x81\x01"


def test_gzip_batch_from_kafka_python_decodes():
    kp = pytest.importorskip("kafka.record.default_records", reason="kafka-python not installed")
    b = kp.DefaultRecordBatchBuilder(magic=2, compression_type=1, is_transactional=False,
                                     producer_id=-1, producer_epoch=-1, base_sequence=-1,
                                     batch_size=1 << 20)
    for i in range(50):
        b.append(i, timestamp=1_600_000_000_000 + i, key=b"key", value=b"value-%d" % i * 20,
                 headers=[("h", b"%d" % i)])
    batch = bytes(b.build())
    h = read_header(batch)
    assert h.codec == 1 and batch_is_valid(batch)
    got = list(iter_records(batch))
    assert [r.value for r in got] == [b"value-%d" % i * 20 for i in range(50)]
    assert got[7].headers == {"h": b"7"} and got[7].timestamp_ms == 1_600_000_000_007


def test_kafka_python_reads_our_batches():
    kp = pytest.importorskip("kafka.record.default_records", reason="kafka-python not installed")
    body = encode_messages([(5, b"k", b"v%d" % i, {"h": b"x"}, "tg") for i in range(3)])
    batch = batch_prefix(10, body) + body.body
    theirs = kp.DefaultRecordBatch(batch)
    assert theirs.validate_crc()
    recs = list(theirs)
    assert [r.offset for r in recs] == [10, 11, 12]
    assert [r.value for r in recs] == [b"v0", b"v1", b"v2"]
    assert recs[0].headers == [("h", b"x"), ("mqstore.tag", b"tg")]
