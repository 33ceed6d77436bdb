"""Kafka record decoding (``decode_records``) on both backends."""
from __future__ import annotations

import struct
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from nativelogs import NATIVE_MISSING, guarded_view, kafka_record

from mqstore import _purepy, native
from mqstore.errors import BufferRangeError

SCAN_OK, SCAN_CORRUPT = 0, 2
FIXTURES = Path(__file__).parents[2] / ".." / "shared" / "fixtures"


def fields(buf, rf):
    """The decoded records as Python values, for readable assertions."""
    out = []
    hdrs = rf.headers.tolist()
    for od, td, kp, kl, vp, vl, h0, hn, _end in rf.records.tolist():
        out.append((od, td, None if kl < 0 else bytes(buf[kp:kp + kl]),
                    None if vl < 0 else bytes(buf[vp:vp + vl]),
                    [(bytes(buf[a:a + b]), None if d < 0 else bytes(buf[c:c + d]))
                     for a, b, c, d in hdrs[h0:h0 + hn]]))
    return out


def test_the_formats_check_record(impl):
    rec = bytes.fromhex("10000000026b027600")  # FORMATS.md: key b"k", value b"v", no headers
    rf = impl.decode_records(rec, 0, len(rec), 1)
    assert (rf.status, rf.next_pos) == (SCAN_OK, len(rec))
    assert fields(rec, rf) == [(0, 0, b"k", b"v", [])]


def test_keys_values_headers_nulls_and_deltas(impl):
    recs = [kafka_record(0, b"v0"),
            kafka_record(1, None, key=b"key", timestamp_delta=-5),
            kafka_record(7, b"x" * 300, headers=[(b"h1", b"a"), (b"h2", None), (b"", b"")],
                         timestamp_delta=1 << 40)]
    buf = b"\xee" * 5 + b"".join(recs)
    rf = impl.decode_records(buf, 5, len(buf), 3)
    assert rf.status == SCAN_OK and rf.next_pos == len(buf)
    assert fields(buf, rf) == [
        (0, 0, None, b"v0", []),
        (1, -5, b"key", None, []),
        (7, 1 << 40, None, b"x" * 300, [(b"h1", b"a"), (b"h2", None), (b"", b"")]),
    ]
    assert rf.records.dtype == rf.headers.dtype == "int64"
    assert rf.records.shape == (3, 9) and rf.headers.shape == (3, 4)


def test_records_of_a_real_broker_capture(impl):
    path = FIXTURES / "kafka-broker-batches-v2.bin"
    if not path.exists():
        pytest.skip(f"shared fixture {path} is absent")
    data = path.read_bytes()
    got = []
    for pos, size, count in ((0, 71, 1), (71, 76, 2), (147, 71, 1), (218, 81, 1)):
        assert struct.unpack_from(">i", data, pos + 57)[0] == count
        rf = impl.decode_records(data, pos + 61, pos + size, count)
        assert (rf.status, rf.next_pos) == (SCAN_OK, pos + size)
        got.append(fields(data, rf))
    assert [r[3] for batch in got for r in batch] == [b"123", b"", b"", b"123", b"hdr"]
    assert got[3][0][4] == [(b"hkey", b"hval")]


@pytest.mark.parametrize("damage", ["truncated", "extra byte", "negative key length",
                                    "negative header count", "null header key",
                                    "overlong varint", "length past end"])
def test_malformed_records_are_corrupt_and_keep_the_good_prefix(impl, damage):
    good = kafka_record(0, b"ok")
    bad = bytearray(kafka_record(1, b"value", key=b"k", headers=[(b"h", b"v")]))
    if damage == "truncated":
        bad = bad[:-1]
    elif damage == "extra byte":
        bad[0] += 2  # record length one more than its fields (zig-zag: +2 is +1)
        bad += b"\x00"
    elif damage == "negative key length":
        bad[4] = 0x05  # -3
    elif damage == "negative header count":
        bad[-5] = 0x03  # header count -2
    elif damage == "null header key":
        bad[-4] = 0x01  # header key length -1
    elif damage == "overlong varint":
        bad = bytes([bad[0] + 18, 0]) + b"\x80" * 10 + b"\x00" + bytes(bad[3:])
    elif damage == "length past end":
        bad[0] = 0x7E
    buf = good + bytes(bad)
    rf = impl.decode_records(buf, 0, len(buf), 2)
    assert (rf.status, rf.next_pos, len(rf.records), len(rf.headers)) == \
        (SCAN_CORRUPT, len(good), 1, 0)


def test_count_larger_than_the_bytes_allow_is_corrupt(impl):
    buf = kafka_record(0, b"a") * 3
    rf = impl.decode_records(buf, 0, len(buf), 1 << 31)
    assert (rf.status, len(rf.records)) == (SCAN_CORRUPT, 3)
    assert impl.decode_records(buf, 0, len(buf), 0).status == SCAN_OK


def test_window_outside_the_buffer_is_a_range_error(impl):
    buf = kafka_record(0, b"a")
    with pytest.raises(BufferRangeError):
        impl.decode_records(buf, -1, len(buf), 1)
    with pytest.raises(BufferRangeError):
        impl.decode_records(buf, 0, len(buf) + 1, 1)


def test_many_headers_grow_the_output(impl):
    rec = kafka_record(0, b"v", headers=[(b"k%d" % i, b"") for i in range(200)])
    rf = impl.decode_records(rec, 0, len(rec), 1)
    assert rf.status == SCAN_OK and len(rf.headers) == 200


def _same(buf, pos, end, count):
    expected = _purepy.decode_records(buf, pos, end, count)
    got = native.decode_records(guarded_view(bytes(buf)), pos, end, count)
    assert (got.status, got.next_pos) == (expected.status, expected.next_pos)
    assert got.records.tolist() == expected.records.tolist()
    assert got.headers.tolist() == expected.headers.tolist()


record_strategy = st.builds(
    kafka_record, st.integers(-(1 << 31), (1 << 31) - 1), st.none() | st.binary(max_size=40),
    st.none() | st.binary(max_size=10),
    st.lists(st.tuples(st.binary(max_size=6), st.none() | st.binary(max_size=6)), max_size=4),
    st.integers(-(1 << 63), (1 << 63) - 1))


@pytest.mark.skipif(native.backend != "native", reason=NATIVE_MISSING)
@settings(max_examples=80, deadline=None)
@given(recs=st.lists(record_strategy, max_size=6), data=st.data())
def test_native_equals_python_on_valid_and_damaged_records(recs, data):
    buf = bytearray(b"".join(recs))
    _same(bytes(buf), 0, len(buf), len(recs))
    for _ in range(data.draw(st.integers(0, 3))):
        if buf:
            buf[data.draw(st.integers(0, len(buf) - 1))] ^= 1 << data.draw(st.integers(0, 7))
    cut = data.draw(st.integers(0, len(buf)))
    _same(bytes(buf), 0, cut, len(recs))
    _same(bytes(buf), 0, len(buf), data.draw(st.integers(-1, 9)))


@pytest.mark.skipif(native.backend != "native", reason=NATIVE_MISSING)
@settings(max_examples=60, deadline=None)
@given(buf=st.binary(max_size=300), pos=st.integers(0, 300), count=st.integers(-1, 50))
def test_native_equals_python_on_random_bytes(buf, pos, count):
    pos = min(pos, len(buf))
    _same(buf, pos, len(buf), count)


# ----- encode_value_records -----
def test_encode_value_records_matches_an_independent_encoder(impl):
    values = [b"", b"a", b"x" * 63, b"y" * 64, b"z" * 300, bytearray(b"ba"),
              memoryview(b"__mv__")[2:4]]
    expected = b"".join(kafka_record(i, bytes(v)) for i, v in enumerate(values))
    assert impl.encode_value_records(values) == expected
    assert impl.encode_value_records(iter(values)) == expected
    assert impl.encode_value_records([]) == b""


def test_encoded_values_decode_back(impl):
    values = [bytes([i]) * (i * 37 % 500) for i in range(200)]  # offset deltas past 63
    recs = impl.encode_value_records(values)
    rf = impl.decode_records(recs, 0, len(recs), len(values))
    assert rf.status == SCAN_OK and rf.next_pos == len(recs)
    assert [r[3] for r in fields(recs, rf)] == values
    assert [r[0] for r in fields(recs, rf)] == list(range(200))
    assert {r[2] for r in fields(recs, rf)} == {None}


def test_encode_value_records_rejects_what_is_not_bytes(impl):
    with pytest.raises(TypeError):
        impl.encode_value_records([b"ok", "text"])
    with pytest.raises(TypeError):
        impl.encode_value_records([b"ok", None])


@pytest.mark.skipif(native.backend != "native", reason=NATIVE_MISSING)
@settings(max_examples=60, deadline=None)
@given(values=st.lists(st.binary(max_size=200), max_size=40))
def test_encode_native_equals_python(values):
    assert native.encode_value_records(values) == _purepy.encode_value_records(values)


@pytest.mark.skipif(native.backend != "native", reason=NATIVE_MISSING)
def test_encode_buffers_whose_len_is_not_their_byte_length():
    import numpy as np

    values = [np.arange(3, dtype=np.int32), b"abc"]
    assert native.encode_value_records(values) == _purepy.encode_value_records(values)
