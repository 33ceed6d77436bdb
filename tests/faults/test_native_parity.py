"""Native vs pure-Python parity on damaged input (issue 8, item 14, second part).

A bit flip must never read differently depending on the build. Every kernel of
``mqstore.native`` has a reference in ``mqstore._purepy``; on any input both give the same
result or the same typed error (class and message). The decisions for malformed Kafka
records are pinned here case by case, on both backends (the ``impl`` fixture):

* varints of int32 fields (record length, offsetDelta, key/value/header lengths, header
  count) take at most 5 bytes and must fit in 32 bits; the varlong timestampDelta takes at
  most 10 bytes and must fit in 64 bits (Kafka's ``ByteUtils`` throws past 5/10 bytes and
  silently wraps the extra bits: we reject instead of guessing);
* a key or value length below -1, a negative header key length, a header value length below
  -1 and a negative header count are corrupt (Kafka rejects the last two, treats every
  negative key/value length as null: we reject instead of guessing);
* every field must fit in its record, a record must end exactly at its length prefix, and a
  batch's records must end exactly at the batch end (Kafka: "Incorrect declared batch size,
  records still remaining"), except for a batch of 0 records, whose body Kafka never reads;
* a negative record count is corrupt (Kafka: "Found invalid record count").

The segments engine decodes records itself when the helper is not built
(``engines/segments/record_batch.py``): ``test_engine_*`` compare its two paths (the native
kernel path and its inline Python loop, switched with ``record_batch._NATIVE_RECORDS``) and
must agree on every damaged input too. Then come
seeded mutation fuzzers (one-byte changes, insertions, deletions, truncations) over valid
inputs of several shapes, for the record decoder, the batch and CommitLog scans, the
dispatcher walk and the IndexFile kernels. CI runs a slice; the big loop runs with
``MQSTORE_PARITY_MUTATIONS=20000`` (mutations per fuzzer).
"""
from __future__ import annotations

import os
import random
import signal
import struct
import zlib

import numpy as np
import pytest

from mqstore import _purepy, native
from mqstore.engines.segments import record_batch as rb
from mqstore.errors import BufferRangeError, CorruptRecordError

SCAN_OK, SCAN_CORRUPT = _purepy.SCAN_OK, _purepy.SCAN_CORRUPT
BIG = int(os.environ.get("MQSTORE_PARITY_MUTATIONS", "0"))


@pytest.fixture(params=["native", "python"])
def impl(request):
    """The module under test: mqstore.native with the compiled helper, or the reference."""
    if request.param == "native":
        if native.backend != "native":
            pytest.skip("the compiled helper is not loaded (MQSTORE_NATIVE=off or not built)")
        return native
    return _purepy


# ----- an encoder written from the format, independent of both decoders -----
def uvarint(z: int) -> bytes:
    out = bytearray()
    while z >= 0x80:
        out.append((z & 0x7F) | 0x80)
        z >>= 7
    out.append(z)
    return bytes(out)


def varint(n: int) -> bytes:
    return uvarint(((n << 1) ^ (n >> 63)) & 0xFFFFFFFFFFFFFFFF)


def field(b: bytes | None) -> bytes:
    return varint(-1) if b is None else varint(len(b)) + b


def record(offset_delta: int = 0, value: bytes | None = b"v", key: bytes | None = None,
           headers=(), ts_delta: int = 0, *, raw_ts: bytes | None = None,
           raw_od: bytes | None = None, raw_tail: bytes | None = None) -> bytes:
    """One record; ``raw_*`` replace the encoding of a field (damage by hand)."""
    body = (b"\x00" + (raw_ts if raw_ts is not None else varint(ts_delta))
            + (raw_od if raw_od is not None else varint(offset_delta)))
    if raw_tail is not None:
        body += raw_tail
    else:
        body += (field(key) + field(value) + varint(len(headers))
                 + b"".join(field(k) + field(v) for k, v in headers))
    return varint(len(body)) + body


def outcome(mod, buf, pos=0, end=None, count=1):
    """Everything ``decode_records`` says, comparable across backends."""
    end = len(buf) if end is None else end
    try:
        rf = mod.decode_records(buf, pos, end, count)
    except Exception as exc:  # noqa: BLE001 - the class and message are what we compare
        return ("raised", type(exc).__name__, str(exc))
    return ("ok", rf.status, rf.next_pos, rf.records.tolist(), rf.headers.tolist())


def decoded(impl, buf, count):
    rf = impl.decode_records(buf, 0, len(buf), count)
    return rf.status, rf.next_pos, len(rf.records)


GOOD = record(0, b"ok")


# ----- varint limits -----
def test_int32_varint_of_five_bytes_is_accepted(impl):
    buf = GOOD + record(raw_od=b"\x82\x80\x80\x80\x00")  # offsetDelta 1, not minimal
    assert decoded(impl, buf, 2) == (SCAN_OK, len(buf), 2)
    assert impl.decode_records(buf, 0, len(buf), 2).records[1, 0] == 1


def test_int32_varint_longer_than_five_bytes_is_corrupt(impl):
    buf = GOOD + record(raw_od=b"\x82\x80\x80\x80\x80\x00")
    assert decoded(impl, buf, 2) == (SCAN_CORRUPT, len(GOOD), 1)


@pytest.mark.parametrize("top", [0x10, 0x70])
def test_int32_varint_beyond_32_bits_is_corrupt(impl, top):
    buf = GOOD + record(raw_od=b"\x82\x80\x80\x80" + bytes([top]))
    assert decoded(impl, buf, 2) == (SCAN_CORRUPT, len(GOOD), 1)


def test_int32_extremes_are_accepted(impl):
    buf = GOOD + record((1 << 31) - 1) + record(-(1 << 31))
    rf = impl.decode_records(buf, 0, len(buf), 3)
    assert rf.status == SCAN_OK and rf.records[1:, 0].tolist() == [(1 << 31) - 1, -(1 << 31)]


def test_record_length_varint_beyond_32_bits_is_corrupt(impl):
    rec = record()
    buf = GOOD + bytes([rec[0] | 0x80]) + b"\x80\x80\x80\x10" + rec[1:]
    assert decoded(impl, buf, 2) == (SCAN_CORRUPT, len(GOOD), 1)


def test_varlong_of_ten_bytes_within_64_bits_is_accepted(impl):
    buf = GOOD + record(ts_delta=-(1 << 63))
    assert len(varint(-(1 << 63))) == 10
    rf = impl.decode_records(buf, 0, len(buf), 2)
    assert rf.status == SCAN_OK and rf.records[1, 1] == -(1 << 63)


def test_varlong_beyond_64_bits_is_corrupt(impl):
    buf = GOOD + record(raw_ts=b"\xff" * 9 + b"\x03")  # the 10th byte carries bit 65
    assert decoded(impl, buf, 2) == (SCAN_CORRUPT, len(GOOD), 1)


def test_varlong_longer_than_ten_bytes_is_corrupt(impl):
    buf = GOOD + record(raw_ts=b"\x80" * 10 + b"\x00")
    assert decoded(impl, buf, 2) == (SCAN_CORRUPT, len(GOOD), 1)


def test_truncated_varint_at_the_window_end_is_corrupt(impl):
    buf = GOOD + b"\x80"
    assert decoded(impl, buf, 2) == (SCAN_CORRUPT, len(GOOD), 1)


# ----- lengths and counts -----
@pytest.mark.parametrize("name, tail", [
    ("key length -2", varint(-2) + field(b"v") + varint(0)),
    ("value length -2", field(None) + varint(-2) + varint(0)),
    ("header count -1", field(None) + field(b"v") + varint(-1)),
    ("header key length -1", field(None) + field(b"v") + varint(1) + varint(-1) + field(b"")),
    ("header value length -2", field(None) + field(b"v") + varint(1) + field(b"h")
     + varint(-2)),
    ("key past the record end", varint(9) + b"k"),
    ("header count past the record", field(None) + field(b"v") + varint(3) + field(b"h")
     + field(b"")),
])
def test_malformed_field_is_corrupt(impl, name, tail):
    buf = GOOD + record(raw_tail=tail) + GOOD
    assert decoded(impl, buf, 3) == (SCAN_CORRUPT, len(GOOD), 1), name


def test_null_key_length_in_two_bytes_is_a_null_key(impl):
    """-1 written as a non-minimal 2-byte varint (0x81 0x00) is still -1: a null key."""
    buf = GOOD + record(raw_tail=b"\x81\x00" + field(b"v") + varint(0))
    rf = impl.decode_records(buf, 0, len(buf), 2)
    assert rf.status == SCAN_OK and rf.records[1, 3] == -1


def test_negative_header_count_with_header_bytes_is_corrupt(impl):
    """A header count whose sign bit flipped (2 -> -2) must not read as "no headers"."""
    tail = field(None) + field(b"v") + varint(-2)
    buf = GOOD + record(raw_tail=tail)
    assert decoded(impl, buf, 2) == (SCAN_CORRUPT, len(GOOD), 1)


@pytest.mark.parametrize("delta", [+1, -1])
def test_record_length_not_matching_its_fields_is_corrupt(impl, delta):
    rec = bytearray(record(0, b"value", key=b"k", headers=[(b"h", b"x")]))
    rec[0] += 2 * delta  # zig-zag: +-2 is +-1 byte
    buf = GOOD + bytes(rec) + b"\x00" * 4
    assert decoded(impl, buf, 2) == (SCAN_CORRUPT, len(GOOD), 1)


def test_trailing_bytes_after_the_last_record_are_corrupt(impl):
    buf = GOOD + record(1) + b"\x00"
    rf = impl.decode_records(buf, 0, len(buf), 2)
    assert (rf.status, rf.next_pos, len(rf.records)) == (SCAN_CORRUPT, len(buf) - 1, 2)


def test_fewer_records_than_the_count_is_corrupt(impl):
    buf = GOOD + record(1)
    assert decoded(impl, buf, 3) == (SCAN_CORRUPT, len(buf), 2)


def test_negative_record_count_is_corrupt(impl):
    assert decoded(impl, GOOD, -1) == (SCAN_CORRUPT, 0, 0)
    assert decoded(impl, b"", -(1 << 31)) == (SCAN_CORRUPT, 0, 0)


def test_zero_records_never_read_the_body(impl):
    """Kafka never reads the body of a batch of 0 records (the segments engine pads the empty
    batches of ``on_corruption="skip"`` with zeros)."""
    assert decoded(impl, b"\x00" * 40, 0) == (SCAN_OK, 0, 0)
    assert decoded(impl, b"\xff\x80", 0) == (SCAN_OK, 0, 0)


def test_header_names_are_returned_as_bytes_positions(impl):
    """UTF-8 is the caller's check (the engine decodes names); the kernel reports spans."""
    buf = record(headers=[(b"\xff\xfe", b"x")])
    rf = impl.decode_records(buf, 0, len(buf), 1)
    assert rf.status == SCAN_OK and rf.headers.tolist()[0][1] == 2


# ----- typed errors: same class and same message on both backends -----
@pytest.mark.parametrize("call", [
    lambda m: m.decode_records(GOOD, -1, len(GOOD), 1),
    lambda m: m.decode_records(GOOD, 0, len(GOOD) + 1, 1),
    lambda m: m.scan_batches(b"\x00" * 10, 0, 11),
    lambda m: m.find_batch(b"\x00" * 10, -3, 10, 0),
    lambda m: m.scan_commitlog(b"\x00" * 10, 0, 99),
    lambda m: m.dispatch_fields(b"\x00" * 10, -1, 10),
    lambda m: m.offset_index_floor(b"\x00" * 15, 2, 0),
    lambda m: m.time_index_floor(b"\x00" * 23, 2, 0),
    lambda m: m.cq_tag_scan(b"\x00" * 30, 0, 2, [0]),
    lambda m: m.index_put_keys(bytearray(99), 2, 4, (1, 0, 0, 0), [1], [2], [3]),
    lambda m: m.index_truncate_from(bytearray(99), 2, 4, (3, 1), 0),
], ids=["decode-pos", "decode-end", "scan_batches", "find_batch", "scan_commitlog",
        "dispatch", "offset_floor", "time_floor", "cq_tag_scan", "index_put", "index_truncate"])
def test_range_errors_are_the_same_on_both_backends(call):
    if native.backend != "native":
        pytest.skip("the compiled helper is not loaded")
    with pytest.raises(BufferRangeError) as want:
        call(_purepy)
    with pytest.raises(BufferRangeError) as got:
        call(native)
    assert str(got.value) == str(want.value)


@pytest.mark.parametrize("call", [
    lambda m: m.index_put_keys(bytearray(200), 0, 4, (1, 0, 0, 0), [1], [2], [3]),
    lambda m: m.index_put_keys(bytearray(200), 2, 4, (1, 0, 0, 0), [1 << 31], [2], [3]),
    lambda m: m.index_put_keys(bytearray(200), 2, 4, (1, 0, 0, 0), [1, 2], [2], [3]),
    lambda m: m.index_truncate_from(bytearray(200), 0, 4, (3, 1), 0),
], ids=["no slots", "hash beyond int32", "lengths differ", "truncate no slots"])
def test_argument_errors_are_the_same_on_both_backends(call):
    if native.backend != "native":
        pytest.skip("the compiled helper is not loaded")
    with pytest.raises(ValueError) as want:
        call(_purepy)
    with pytest.raises(ValueError) as got:
        call(native)
    assert (type(got.value), str(got.value)) == (type(want.value), str(want.value))


# ----- the segments engine's two record decoders (native kernel vs its inline Python) -----
_BATCH_CRC_HEADER = struct.Struct(">hiqqqhii")  # attributes .. recordsCount
_BATCH_PREFIX = struct.Struct(">qiibI")  # baseOffset, batchLength, epoch, magic, crc


def batch_of(records: bytes, count: int, base_offset: int = 100) -> bytes:
    """A whole magic-2 batch (valid CRC) around a records section, with ``count`` in its
    header."""
    ts = 1_700_000_000_000
    body = _BATCH_CRC_HEADER.pack(0, max(count - 1, 0), ts, ts, -1, -1, -1, count) + records
    return _BATCH_PREFIX.pack(base_offset, len(body) + 9, 0, 2, _purepy.crc32c(body)) + body


def _too_slow(*_):
    raise TimeoutError("the decoder did not finish within 2 s")


def engine_outcome(batch: bytes, native_path: bool):
    """What the segments read path makes of one batch on one build: records, or the typed
    error with the part of its message both paths share (a decoder that spins is stopped
    after 2 s and reads as a TimeoutError)."""
    saved = rb._NATIVE_RECORDS
    rb._NATIVE_RECORDS = native_path
    old = signal.signal(signal.SIGALRM, _too_slow)
    signal.setitimer(signal.ITIMER_REAL, 2.0)
    try:
        return ("ok", rb.decode_records(batch, rb.read_header(batch)))
    except CorruptRecordError as exc:
        return ("corrupt", str(exc).split(":")[0])
    except Exception as exc:  # noqa: BLE001 - untyped errors are the finding
        return ("raised", type(exc).__name__)
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)
        rb._NATIVE_RECORDS = saved


def assert_engine_paths_agree(batch: bytes, want: str | None = None):
    on, off = engine_outcome(batch, True), engine_outcome(batch, False)
    assert on == off, f"native path {on!r} != pure-Python path {off!r}"
    if want is not None:
        assert on[0] == want


def test_engine_paths_agree_on_valid_batches():
    recs = (record(0, b"a") + record(1, None, key=b"k", headers=[("é".encode(), None)])
            + record(2, b"x" * 300, headers=[(b"mqstore.tag", b"t"), (b"", b"")]))
    assert_engine_paths_agree(batch_of(recs, 3), "ok")
    assert_engine_paths_agree(batch_of(b"\x00" * 30, 0), "ok")  # a padded empty batch


def test_engine_paths_agree_on_a_non_utf8_header_name():
    assert_engine_paths_agree(batch_of(record(headers=[(b"\xff", b"v")]), 1), "corrupt")


def test_engine_paths_agree_on_fewer_records_than_the_count():
    assert_engine_paths_agree(batch_of(GOOD, 2), "corrupt")


@pytest.mark.parametrize("name, tail", [
    ("negative header count", field(None) + field(b"v") + varint(-1)),
    ("value length -2", field(None) + varint(-2) + varint(0)),
    ("header value length -2", field(None) + field(b"v") + varint(1) + field(b"h")
     + varint(-2)),
])
def test_engine_paths_agree_on_malformed_fields(name, tail):
    assert_engine_paths_agree(batch_of(GOOD + record(1, raw_tail=tail), 2), "corrupt")


def test_engine_paths_agree_on_a_negative_header_key_length_with_a_huge_header_count():
    """The inline loop steps backwards over a negative header key length: here key length
    -3 lands on the last two bytes of the header count, which read as a null header value,
    and the loop is back where it started, 136,314,879 times (found by the fuzzer)."""
    count_bytes = b"\xfe\xff\xff\x81\x01"  # 136,314,879; its last 2 bytes read as -65
    tail = field(None) + field(b"v") + count_bytes + varint(-3) + b"\x00"
    assert_engine_paths_agree(batch_of(GOOD + record(1, raw_tail=tail), 2), "corrupt")


@pytest.mark.parametrize("name, rec", [
    ("int32 varint of 6 bytes", record(raw_od=b"\x82\x80\x80\x80\x80\x00")),
    ("int32 varint beyond 32 bits", record(raw_od=b"\x82\x80\x80\x80\x10")),
    ("varlong beyond 64 bits", record(raw_ts=b"\xff" * 9 + b"\x03")),
])
def test_engine_paths_agree_on_varint_overflow(name, rec):
    assert_engine_paths_agree(batch_of(GOOD + rec, 2), "corrupt")


def test_engine_paths_agree_on_a_null_key_length_in_two_bytes():
    rec = record(1, raw_tail=b"\x81\x00" + field(b"v") + varint(0))
    assert_engine_paths_agree(batch_of(GOOD + rec, 2), "ok")


def test_engine_paths_agree_on_trailing_bytes_after_the_last_record():
    assert_engine_paths_agree(batch_of(GOOD + b"\x00\x00", 1), "corrupt")


def test_engine_paths_agree_on_a_negative_record_count():
    assert_engine_paths_agree(batch_of(GOOD, -1), "corrupt")


def test_engine_paths_agree_on_a_batch_shorter_than_its_length():
    """``iter_records`` of a cut batch: BufferRangeError on the native path,
    CorruptRecordError on the other; a cut batch is corrupt."""
    assert_engine_paths_agree(batch_of(GOOD + record(1, b"x" * 20), 2)[:-5], "corrupt")


def test_engine_paths_agree_that_a_damaged_gzip_batch_is_corrupt():
    import gzip

    comp = bytearray(gzip.compress(record(0, b"hello") + record(1, b"world")))
    comp[len(comp) // 2] ^= 0xFF
    ts = 1_700_000_000_000
    body = _BATCH_CRC_HEADER.pack(1, 1, ts, ts, -1, -1, -1, 2) + bytes(comp)  # codec 1: gzip
    batch = _BATCH_PREFIX.pack(0, len(body) + 9, 0, 2, _purepy.crc32c(body)) + body
    assert_engine_paths_agree(batch, "corrupt")


def test_engine_paths_encode_plain_values_to_the_same_bytes(monkeypatch):
    values = [b"", b"a", b"x" * 63, b"y" * 64, b"z" * 8192, bytes(range(256))]
    monkeypatch.setattr(rb, "_NATIVE_RECORDS", True)
    on = rb.encode_values(values, 1_700_000_000_000)
    monkeypatch.setattr(rb, "_NATIVE_RECORDS", False)
    assert rb.encode_values(values, 1_700_000_000_000) == on


# ----- seeded mutation fuzzers -----
def rbytes(rng: random.Random, n: int) -> bytes:
    return rng.getrandbits(8 * n).to_bytes(n, "little") if n else b""


def records_of_shape(rng: random.Random) -> list[bytes]:
    """Valid records of one of several shapes: plain values, keys and null values, headers
    (null values, empty and non-ASCII names, the tag header), many records, varint edges."""
    shape = rng.randrange(5)
    n = (rng.randrange(1, 6), rng.randrange(1, 6), rng.randrange(1, 5), rng.randrange(30, 120),
         rng.randrange(1, 4))[shape]
    out = []
    for i in range(n):
        key = value = None
        headers = []
        od, td = i, 0
        if shape == 0:
            value = rbytes(rng, rng.choice([0, 1, 10, 40]))
        elif shape == 1:
            key = None if rng.random() < 0.3 else rbytes(rng, rng.choice([0, 1, 8]))
            value = None if rng.random() < 0.3 else rbytes(rng, rng.choice([0, 5, 63]))
        elif shape == 2:
            value = rbytes(rng, rng.choice([0, 3]))
            headers = [(rng.choice([b"h", b"", "é".encode(), b"mqstore.tag"]),
                        None if rng.random() < 0.3 else rbytes(rng, rng.choice([0, 2, 9])))
                       for _ in range(rng.choice([0, 1, 3]))]
        elif shape == 3:
            value = rbytes(rng, rng.randrange(3))
        else:
            value = rbytes(rng, rng.choice([63, 64, 127, 128, 8191, 8192]))
            od = rng.choice([63, 64, (1 << 31) - 1, -(1 << 31), 8191, 8192])
            td = rng.choice([-1, 1 << 40, -(1 << 63), (1 << 63) - 1])
        out.append(record(od, value, key=key, headers=headers, ts_delta=td))
    return out


def mutate(rng: random.Random, data: bytes, lo: int = 0) -> bytes:
    """One change at or after ``lo``: a byte replaced (random, bit flip or a varint-special
    value), a byte inserted, a byte deleted, or a truncation."""
    buf = bytearray(data)
    op = rng.randrange(4)
    span = len(buf) - lo
    if op == 0 and span > 0:
        i = rng.randrange(lo, len(buf))
        buf[i] = rng.choice([rng.randrange(256), buf[i] ^ (1 << rng.randrange(8)),
                             0x00, 0x01, 0x7F, 0x80, 0xFF])
    elif op == 1:
        buf.insert(rng.randrange(lo, len(buf) + 1), rng.randrange(256))
    elif op == 2 and span > 0:
        del buf[rng.randrange(lo, len(buf))]
    else:
        del buf[rng.randrange(lo, len(buf) + 1):]
    return bytes(buf)


def _differences(n: int, seed: int, case):
    """Run ``case(rng)`` (which returns ``(native outcome, reference outcome, repro)``)
    ``n`` times; the disagreements, at most five."""
    rng = random.Random(seed)
    bad = []
    for _ in range(n):
        got, want, repro = case(rng)
        if got != want:
            bad.append((repro, got, want))
            if len(bad) == 5:
                break
    return bad


def _records_case(rng):
    recs = records_of_shape(rng)
    buf = mutate(rng, b"".join(recs))
    count = len(recs) if rng.random() < 0.8 else rng.choice([0, -1, len(recs) + 1,
                                                             len(recs) - 1])
    pos = 0 if rng.random() < 0.9 else rng.randrange(len(buf) + 1)
    end = len(buf) if rng.random() < 0.9 else rng.randrange(pos, len(buf) + 2)
    return (outcome(native, buf, pos, end, count), outcome(_purepy, buf, pos, end, count),
            (buf.hex(), pos, end, count))


def _as_lists(result):
    return tuple(x.tolist() if isinstance(x, np.ndarray) else x for x in result)


def _call(fn, *args):
    try:
        result = fn(*args)
    except Exception as exc:  # noqa: BLE001 - the class and message are compared
        return ("raised", type(exc).__name__, str(exc))
    return ("ok",) + (_as_lists(result) if isinstance(result, tuple) else (result,))


def kafka_log(rng: random.Random) -> bytes:
    out, base = [], rng.randrange(1 << 40)
    for _ in range(rng.randrange(1, 4)):
        recs = records_of_shape(rng)[:6]
        out.append(batch_of(b"".join(recs), len(recs), base))
        base += len(recs)
    return b"".join(out)


def rocketmq_message(queue_id: int, queue_offset: int, physical_offset: int, body: bytes,
                     topic: bytes, properties: bytes) -> bytes:
    """One V1 message (IPv4 hosts), from FORMATS.md."""
    size = 91 + len(body) + len(topic) + len(properties)
    head = struct.pack(">iIIiiqqiq8sq8siq", size, 0xDAA320A7, zlib.crc32(body) & 0x7FFFFFFF,
                       queue_id, 0, queue_offset, physical_offset, 0, 1_700_000_000_000,
                       bytes([127, 0, 0, 1, 0, 0, 0, 0]), 1_700_000_000_001,
                       bytes([127, 0, 0, 1, 0, 0, 0x2A, 0x9F]), 0, 0)
    return (head + struct.pack(">i", len(body)) + body + bytes([len(topic)]) + topic
            + struct.pack(">h", len(properties)) + properties)


def commitlog(rng: random.Random) -> bytes:
    out = bytearray()
    for i in range(rng.randrange(1, 6)):
        props = rng.choice([b"", b"TAGS\x01a", b"TAGS\x01a\x02KEYS\x01k1 k2\x02UNIQ_KEY\x01U",
                            b"KEYS\x01\x02TAGS\x01", b"xTAGS\x01b\x02"])
        out += rocketmq_message(i % 3, i, len(out), rbytes(rng, rng.choice([0, 5, 40])),
                                rng.choice([b"t", b"", b"topic"]), props)
    tail = rng.randrange(3)
    if tail == 0:
        out += struct.pack(">iI", 100, 0xCBD43194) + bytes(92)  # the end-of-file blank
    elif tail == 1:
        out += bytes(rng.randrange(20))  # preallocated zeros
    return bytes(out)


def _scan_case(rng):
    kind = rng.randrange(4)
    buf = mutate(rng, kafka_log(rng) if kind < 2 else commitlog(rng))
    pos = 0 if rng.random() < 0.8 else rng.randrange(len(buf) + 1)
    end = len(buf) if rng.random() < 0.8 else rng.randrange(len(buf) + 2)
    if kind == 0:
        args, name = (buf, pos, end), "scan_batches"
    elif kind == 1:
        args, name = (buf, pos, end, rng.choice([0, 1, 3, -1, 1 << 62, 1 << 40])), "find_batch"
    else:
        args, name = (buf, pos, end), ("scan_commitlog", "dispatch_fields")[kind - 2]
    return (_call(getattr(native, name), *args), _call(getattr(_purepy, name), *args),
            (name, buf.hex(), *args[1:]))


def _index_case(rng):
    """A valid IndexFile (built by the reference), damaged, then a put or a truncate with
    state fields that may be off too."""
    slots, entries = rng.choice([1, 2, 3, 7, 16]), rng.choice([0, 1, 2, 5, 10, 30])
    start = bytearray(40 + 4 * slots + 20 * entries)
    n = rng.randrange(entries + 2)
    phys = sorted(rng.randrange(1 << 40) for _ in range(n))
    put = _purepy.index_put_keys(start, slots, entries, (1, 0, 0, 0),
                                 [rng.randrange(-(1 << 31), 1 << 31) for _ in range(n)], phys,
                                 [1_700_000_000_000 + rng.randrange(10 ** 7) for _ in range(n)])
    state = [put.index_count, put.hash_slot_count, put.begin_timestamp, put.begin_phy_offset]
    for _ in range(rng.randrange(4)):
        start = bytearray(mutate(rng, bytes(start))) if rng.random() < 0.2 else start
        if start:
            start[rng.randrange(len(start))] = rng.choice([rng.randrange(256), 0xFF, 0x80, 0])
    if rng.random() < 0.3:
        state[rng.randrange(4)] = rng.choice([-1, 0, 1, entries, entries + 5, 1 << 40])
    slots_arg = rng.choice([slots, slots, slots, 1, 0])
    a, b = bytearray(start), bytearray(start)
    if rng.random() < 0.5:
        k = rng.randrange(1, 5)
        args = (slots_arg, entries, tuple(state),
                [rng.choice([rng.randrange(-(1 << 31), 1 << 31), 0, -1]) for _ in range(k)],
                [rng.randrange(1 << 41) for _ in range(k)],
                [rng.choice([0, -5, state[2] + 5000, 1 << 62]) for _ in range(k)])
        name = "index_put_keys"
    else:
        args = (slots_arg, entries, tuple(state[:2]), rng.choice(phys + [0, 1 << 41, -1]))
        name = "index_truncate_from"
    got = _call(getattr(native, name), a, *args) + (bytes(a),)
    want = _call(getattr(_purepy, name), b, *args) + (bytes(b),)
    return got, want, (name, bytes(start).hex(), args)


def _engine_case(rng):
    recs = records_of_shape(rng)[:20]
    batch = batch_of(b"".join(recs), len(recs))
    batch = batch[:61] + mutate(rng, batch[61:])
    batch = batch[:8] + struct.pack(">i", len(batch) - 12) + batch[12:]  # the read slice
    return engine_outcome(batch, True), engine_outcome(batch, False), batch.hex()


needs_native = pytest.mark.skipif(native.backend != "native",
                                  reason="the compiled helper is not loaded")
FUZZERS = {"records": _records_case, "scans": _scan_case, "indexfile": _index_case}


@needs_native
@pytest.mark.parametrize("name, n", [("records", 3000), ("scans", 3000), ("indexfile", 2000)])
def test_seeded_fuzz_slice_native_equals_python(name, n):
    assert _differences(n, 8014, FUZZERS[name]) == []


def test_seeded_fuzz_slice_engine_paths_agree():
    assert _differences(2000, 8014, _engine_case) == []


@pytest.mark.skipif(not BIG, reason="the big loop: MQSTORE_PARITY_MUTATIONS=20000")
def test_big_fuzz_engine_paths_agree():
    assert _differences(BIG, 1 + BIG, _engine_case) == []


@needs_native
@pytest.mark.skipif(not BIG, reason="the big loop: MQSTORE_PARITY_MUTATIONS=20000")
@pytest.mark.parametrize("name", sorted(FUZZERS))
def test_big_fuzz_native_equals_python(name):
    assert _differences(BIG, 1 + BIG, FUZZERS[name]) == []


# ----- mqstore._cl_write: Python code run by the argument parsing (sanitizer driver) -----
class _HookedInt:
    """An integer argument whose ``__index__`` (which PyLong_AsLongLong calls) runs
    ``hook`` first."""

    def __init__(self, value: int, hook) -> None:
        self.value, self.hook = value, hook

    def __index__(self) -> int:
        self.hook()
        return self.value


def _hooked_args(name: str, lst: list, hook):
    def h(v):
        return _HookedInt(v, hook)
    return {"values_scan": (lst, h(10), 1000),
            "values_fit": (lst, h(0), h(10), 1 << 20),
            "encode_values_into": (bytearray(1 << 16), h(0), b"t", lst, 0, h(3), b"P", 0, 0,
                                   0, 0, 0)}[name]


def _hooked_outcome(fn, name: str):
    lst = [b"a" * 10] * 3

    def hook():  # a new, longer item array: the list's old one (and b"a" * 10) are freed
        lst[:] = [b"b" * 100] * 50
    args = _hooked_args(name, lst, hook)
    result = fn(*args)
    return result, bytes(args[0]) if name == "encode_values_into" else None


@pytest.mark.skipif(native._cl_write is None, reason="mqstore._cl_write is not built")
@pytest.mark.parametrize("name", ["values_scan", "values_fit", "encode_values_into"])
def test_cl_write_parses_the_numbers_before_taking_the_values(name):
    """native/cl_write_ext.c took the list's item array, then parsed the numbers: an
    ``__index__`` replacing the list's items left it reading the freed array (ASan:
    heap-use-after-free; found by tests/native/sanitizer_write_rounds.py). The numbers are
    parsed first now, and the C sees the list the reference sees."""
    from mqstore import _purepy_cl_write

    want = _hooked_outcome(getattr(_purepy_cl_write, name), name)
    assert _hooked_outcome(getattr(native._cl_write, name), name) == want
    if name == "values_scan":
        assert want[0] == (50 * 110, -1)


# ----- mqstore._seg_write: a list subclass iterating other items (append_batch takes it) -----
class _IteratesOther(list):
    """A list whose iteration yields other values than it holds (``append_batch`` passes
    any list subclass on as it is)."""

    def __iter__(self):
        return iter([b"x" * 5000] * 3)


@pytest.mark.skipif(native._seg_write is None, reason="mqstore._seg_write is not built")
def test_seg_write_takes_a_list_subclass_as_its_iteration():
    """native/seg_write_ext.c sized the batch from the list's storage ([b"a"]) but built it
    from PySequence_Tuple, which iterates a subclass (3 x 5,000 bytes): the records were
    written past the size it had checked the buffer against (a heap overflow when the
    buffer is that size; a cut batch when the scratch buffer is larger). The reference
    iterates; the C now sizes and builds from one tuple of the values."""
    from mqstore import _purepy_batches

    values = _IteratesOther([b"a"])
    want = _purepy_batches.values_batch_size(values)
    assert native._seg_write.values_batch_size(values) == want
    ref = bytearray(want)
    _purepy_batches.values_batch_into(ref, 7, 9, values, want)
    got = bytearray(want)
    assert native._seg_write.values_batch_into(got, 7, 9, values, want) == want
    assert got == ref
