"""The segments read path's whole-read decoder (``decode_batches``) and the transfer's header
walk (``batch_span``): native (native/batch_decode.c) against the reference
(mqstore/_purepy_batches.py), on valid logs and on hostile bytes: same results, same typed
errors."""
from __future__ import annotations

import random
import struct

import numpy as np
import pytest
from nativelogs import NATIVE_MISSING, guarded_view, kafka_record

from mqstore import _purepy, _purepy_batches, native
from mqstore._purepy_batches import (
    BATCHES_BAD_CHAIN,
    BATCHES_BAD_CRC,
    BATCHES_BAD_HEADER,
    BATCHES_BAD_RECORDS,
    BATCHES_COMPRESSED,
    BATCHES_END,
    BATCHES_LIMIT,
    BATCHES_TORN,
)
from mqstore.errors import BufferRangeError

_AFTER_CRC = struct.Struct(">hiqqqhii")
_PREFIX = struct.Struct(">qiibI")
BIG = (1 << 63) - 1
TAG = b"mqstore.tag"


@pytest.fixture(params=["native", "python"])
def impl(request):
    if request.param == "native":
        if native.backend != "native":
            pytest.skip(NATIVE_MISSING)
        return native.decode_batches
    return _purepy_batches.decode_batches


def batch(base: int, records: list[bytes], *, attributes: int = 0, base_ts: int = 1000,
          max_ts: int = 2000, lod: int | None = None, count: int | None = None,
          magic: int = 2) -> bytes:
    body = _AFTER_CRC.pack(attributes, len(records) - 1 if lod is None else lod, base_ts,
                           max_ts, -1, -1, -1, len(records) if count is None else count)
    body += b"".join(records)
    return _PREFIX.pack(base, len(body) + 9, 0, magic, _purepy.crc32c(body)) + body


def log_of(*batches: bytes) -> bytes:
    return b"".join(batches)


def outcome(fn, buf, *args):
    """Everything a decode says, comparable across backends (or the error type)."""
    try:
        r = fn(buf, *args)
    except Exception as exc:  # noqa: BLE001 - the type is the result
        return ("raised", type(exc).__name__)
    return (r.status, r.next_pos, r.next_expect, r.value_bytes, r.records.tolist(),
            r.headers.tolist())


def both(buf, *args):
    got = outcome(_purepy_batches.decode_batches, buf, *args)
    if native.backend == "native":
        assert outcome(native.decode_batches, buf, *args) == got
        assert outcome(native.decode_batches, guarded_view(bytes(buf)), *args) == got
    return got


def test_offsets_timestamps_keys_values_and_the_tag_row(impl):
    b0 = batch(10, [kafka_record(0, b"v0"),
                    kafka_record(1, None, key=b"k", timestamp_delta=-5),
                    kafka_record(2, b"x", headers=[(b"h", b"1"), (TAG, b"t"), (b"h", None)])])
    b1 = batch(13, [kafka_record(0, b"yy")], attributes=0x08, max_ts=777)  # LogAppendTime
    log = log_of(b0, b1)
    r = impl(log, 0, len(log), 10, -BIG - 1, BIG, True, BIG, BIG)
    assert (r.status, r.next_pos, r.next_expect, r.value_bytes) == (BATCHES_END, len(log),
                                                                    14, 5)
    rows = r.records.tolist()
    assert [row[0] for row in rows] == [10, 11, 12, 13]
    assert [row[1] for row in rows] == [1000, 995, 1000, 777]
    assert rows[1][3] == 1 and log[rows[1][2]:rows[1][2] + 1] == b"k"
    assert rows[1][5] == -1  # null value
    assert rows[2][7] == 3 and rows[2][8] == rows[2][6] + 1  # the tag is header row 1
    assert rows[0][8] == rows[1][8] == rows[3][8] == -1


def test_min_offset_end_offset_and_the_limits(impl):
    log = log_of(*(batch(3 * i, [kafka_record(j, b"%d" % j) for j in range(3)])
                   for i in range(4)))
    r = impl(log, 0, len(log), 0, 4, BIG, True, BIG, BIG)
    assert [row[0] for row in r.records.tolist()] == list(range(4, 12))
    r = impl(log, 0, len(log), 0, 0, 6, True, BIG, BIG)  # stops before baseOffset 6
    assert r.status == BATCHES_LIMIT and [row[0] for row in r.records.tolist()] == [0, 1, 2,
                                                                                   3, 4, 5]
    r = impl(log, 0, len(log), 0, 0, BIG, True, 4, BIG)  # after the batch reaching 4 rows
    assert (r.status, len(r.records), r.next_expect) == (BATCHES_LIMIT, 6, 6)
    r = impl(log, 0, len(log), 0, 0, BIG, True, BIG, 2)  # value bytes > 2
    assert (r.status, len(r.records)) == (BATCHES_LIMIT, 3)


def test_control_batches_yield_nothing_and_compressed_ones_stop_the_walk(impl):
    log = log_of(batch(0, [kafka_record(0, b"a")]),
                 batch(1, [kafka_record(0, b"\x00\x00\x00\x00")], attributes=0x20),
                 batch(2, [b"not really gzip"], attributes=0x01, count=1),
                 batch(3, [kafka_record(0, b"z")]))
    r = impl(log, 0, len(log), 0, 0, BIG, True, BIG, BIG)
    assert r.status == BATCHES_COMPRESSED and len(r.records) == 1
    assert r.next_expect == 3 and log[r.next_pos:r.next_pos + 8] == (2).to_bytes(8, "big")


@pytest.mark.parametrize("name, damage, status", [
    ("crc", lambda b: b[:-1] + bytes([b[-1] ^ 1]), BATCHES_BAD_CRC),
    ("magic", lambda b: b[:16] + b"\x03" + b[17:], BATCHES_BAD_HEADER),
    ("short length", lambda b: b[:8] + struct.pack(">i", 10) + b[12:], BATCHES_BAD_HEADER),
    ("long length", lambda b: b[:8] + struct.pack(">i", 1 << 20) + b[12:], BATCHES_TORN),
    ("base offset", lambda b: struct.pack(">q", 99) + b[8:], BATCHES_BAD_CHAIN),
    ("negative lastOffsetDelta", lambda b: b[:23] + struct.pack(">i", -1) + b[27:],
     BATCHES_BAD_HEADER),
])
def test_a_damaged_middle_batch_stops_the_walk_after_the_good_ones(name, damage, status):
    good = [batch(i, [kafka_record(0, b"v%d" % i)]) for i in range(3)]
    log = log_of(good[0], damage(good[1]), good[2])
    got = both(log, 0, len(log), 0, 0, BIG, True, BIG, BIG)
    assert got[0] == status and got[1] == len(good[0]) and len(got[4]) == 1


def test_records_that_do_not_parse_or_are_not_utf8(impl):
    bad_name = batch(0, [kafka_record(0, b"v", headers=[(b"\xff", b"v")])])
    bad_tag = batch(0, [kafka_record(0, b"v", headers=[(TAG, b"\xed\xa0\x80")])])  # surrogate
    short = batch(0, [kafka_record(0, b"v")], count=2)
    for log in (bad_name, bad_tag, short):
        assert both(log, 0, len(log), 0, 0, BIG, True, BIG, BIG)[0] == BATCHES_BAD_RECORDS
    fine = batch(0, [kafka_record(0, b"v", headers=[("é".encode(), b"\xff"), (TAG, b"")])])
    assert both(fine, 0, len(fine), 0, 0, BIG, True, BIG, BIG)[0] == BATCHES_END


def test_a_window_outside_the_buffer_is_a_range_error_on_both():
    log = batch(0, [kafka_record(0, b"v")])
    for args in ((-1, len(log)), (0, len(log) + 1)):
        assert both(log, *args, 0, 0, BIG, True, BIG, BIG) == ("raised", "BufferRangeError")
    with pytest.raises(BufferRangeError):
        _purepy_batches.batch_span(log, 0, len(log) + 1, BIG)


def test_many_small_records_grow_the_native_arrays():
    """More rows and header rows than the first guess of the wrapper: same result."""
    recs = [kafka_record(i, b"", headers=[(b"a", b""), (b"b", b"")]) for i in range(3000)]
    log = batch(0, recs)
    got = both(log, 0, len(log), 0, 0, BIG, True, BIG, BIG)
    assert got[0] == BATCHES_END and len(got[4]) == 3000 and len(got[5]) == 6000


def test_seeded_mutations_agree():
    rng = random.Random(9)
    base = log_of(batch(0, [kafka_record(0, b"a" * 5, key=b"k"),
                            kafka_record(1, b"b", headers=[(b"h", b"x"), (TAG, b"t")])]),
                  batch(2, [kafka_record(0, b"c" * 200)]),
                  batch(3, [kafka_record(j, b"%d" % j) for j in range(20)]))
    for _ in range(1500):
        buf = bytearray(base)
        for _k in range(rng.randrange(1, 4)):
            buf[rng.randrange(len(buf))] = rng.randrange(256)
        if rng.random() < 0.2:
            del buf[rng.randrange(len(buf)):]
        buf = bytes(buf)
        check = rng.random() < 0.5  # without the CRC, damage reaches the record decoder
        both(buf, 0, len(buf), rng.choice([-1, 0]), rng.randrange(-1, 30), BIG, check,
             rng.choice([BIG, 3]), rng.choice([BIG, 10]))
        end_offset = rng.choice([BIG, 3])
        if native.backend == "native":
            assert native.batch_span(buf, 0, len(buf), end_offset) == \
                _purepy_batches.batch_span(buf, 0, len(buf), end_offset)


def test_batch_span_stops_at_the_end_offset_a_cut_or_a_bad_header():
    log = log_of(*(batch(i, [kafka_record(0, b"v")]) for i in range(4)))
    size = len(log) // 4
    ref = _purepy_batches.batch_span
    impls = [ref] + ([native.batch_span] if native.backend == "native" else [])
    for fn in impls:
        assert fn(log, 0, len(log), BIG) == (4, len(log), 4)
        assert fn(log, 0, len(log), 2) == (2, 2 * size, 2)
        assert fn(log, 0, len(log) - 1, BIG) == (3, 3 * size, 3)
        assert fn(log, size, len(log), BIG) == (3, len(log), 4)
        bad = log[:size + 16] + b"\x07" + log[size + 17:]
        assert fn(bad, 0, len(bad), BIG) == (1, size, 1)
        assert fn(log, 0, 0, BIG) == (0, 0, -1)


def test_decoded_columns_are_int64():
    log = batch(0, [kafka_record(0, b"v")])
    r = native.decode_batches(log, 0, len(log), 0, 0, BIG, True, BIG, BIG)
    assert r.records.dtype == np.int64 and r.records.shape == (1, 9)
    assert r.headers.shape == (0, 4)


def test_encode_records_native_reference_and_the_record_encoder_agree(monkeypatch):
    """``append_batch`` of Messages: the columns encoder on both backends writes the bytes
    ``record_batch._mq_record`` writes one record at a time."""
    from mqstore.engines.segments import record_batch as rb

    rng = random.Random(3)
    msgs = []
    for i in range(300):
        headers = {"h%d" % j: bytes(rng.randrange(3)) for j in range(rng.randrange(3))} \
            if rng.random() < 0.4 else None
        tag = rng.choice([None, "", "tag-é"])
        key = rng.choice([None, b"", b"k%d" % i * rng.randrange(1, 50)])
        msgs.append((1_700_000_000_000 + rng.randrange(-(1 << 40), 1 << 40), key,
                     bytes(rng.randrange(300)), headers, tag))
    base = msgs[0][0]
    want = b"".join(rb._mq_record(i, ts - base, k, v, h, t)
                    for i, (ts, k, v, h, t) in enumerate(msgs))
    bodies = []
    for flag in (True, False):
        monkeypatch.setattr(rb, "_NATIVE_RECORDS", flag and native.backend == "native")
        bodies.append(rb.encode_messages(msgs))
    assert bodies[0] == bodies[1]
    assert bodies[0].body[40:] == want
    assert _purepy_batches.encode_records([b"v"], [None], [0], [b""]) == \
        native.encode_records([b"v"], [None], [0], [b""])
    with pytest.raises(ValueError):
        _purepy_batches.encode_records([b"v"], [], [0], [b""])


def test_encode_value_records_view_matches_the_reference():
    """The append_batch fast path's encoder writes into a per-thread scratch buffer (grown
    when a batch needs more): the bytes are the reference's, after ``lead`` free bytes (their
    content is the caller's to write)."""
    for n, size in ((1, 0), (3, 5), (1000, 1024), (10, 200_000), (2, 7)):
        values = [bytes([i % 256]) * size for i in range(n)]
        want = bytes(_purepy_batches.encode_value_records_view(values, 40))
        got = native.encode_value_records_view(values, 40)
        assert len(got) == len(want) and bytes(got[40:]) == want[40:]
        assert want[40:] == _purepy.encode_value_records(values)
        got[:40] = b"h" * 40  # writable: the caller puts its header there
