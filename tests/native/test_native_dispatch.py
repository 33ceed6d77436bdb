"""RocketMQ dispatch fields (``dispatch_fields``) on both backends."""
from __future__ import annotations

import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from nativelogs import NATIVE_MISSING, guarded_view, rocketmq_log, rocketmq_message

from mqstore import _purepy, native
from mqstore.errors import BufferRangeError

SCAN_OK, SCAN_TORN, SCAN_CORRUPT, SCAN_BLANK, SCAN_ZERO = 0, 1, 2, 3, 4


def named(buf, scan):
    """Rows as dicts with the property values sliced out."""
    out = []
    for row in scan.fields.tolist():
        d = dict(zip(_purepy.DISPATCH_COLUMNS, row))
        for name in ("topic", "tags", "keys", "uniq_key"):
            p, n = d.pop(f"{name}_pos"), d.pop(f"{name}_len")
            d[name] = None if p < 0 else bytes(buf[p:p + n])
        out.append(d)
    return out


def test_dispatch_fields_of_a_log(impl):
    log = rocketmq_log(4, queues=2, blank_to=3000)
    scan = impl.dispatch_fields(log, 0, len(log))
    assert scan.status == SCAN_BLANK and scan.fields.shape == (4, 14)
    rows = named(log, scan)
    assert [r["queue_id"] for r in rows] == [0, 1, 0, 1]
    assert [r["queue_offset"] for r in rows] == [0, 0, 1, 1]
    assert [r["physical_offset"] for r in rows] == [r["position"] for r in rows]
    assert {r["topic"] for r in rows} == {b"t"} and {r["tags"] for r in rows} == {b"a"}
    assert {r["keys"] for r in rows} == {None}


@pytest.mark.parametrize(("props", "tags", "keys", "uniq"), [
    (b"", None, None, None),
    (b"TAGS\x01x\x02", b"x", None, None),
    (b"KEYS\x01k1 k2\x02UNIQ_KEY\x01ABC\x02TAGS\x01\x02", b"", b"k1 k2", b"ABC"),
    (b"UNIQ_KEY\x01U", None, None, b"U"),  # no trailing separator
    (b"XTAGS\x01no\x02\x03TAGS\x01esc\x02MYKEYS\x01no\x02", None, None, None),
    (b"a\x01b\x02TAGS\x01first\x02TAGS\x01second\x02", b"first", None, None),
])
def test_property_values_are_found_only_at_a_pair_start(impl, props, tags, keys, uniq):
    msg = rocketmq_message(3, 9, 1234, b"body", topic=b"topic-x", properties=props)
    row = named(msg, impl.dispatch_fields(msg, 0, len(msg)))[0]
    assert (row["tags"], row["keys"], row["uniq_key"], row["topic"]) == \
        (tags, keys, uniq, b"topic-x")


def test_bad_body_crc_is_still_dispatched_but_bad_lengths_stop_it(impl):
    msg = bytearray(rocketmq_message(0, 0, 0, b"hello"))
    msg[88] ^= 1  # body byte: scan_commitlog would call this corrupt
    assert impl.scan_commitlog(bytes(msg), 0, len(msg)).status == SCAN_CORRUPT
    scan = impl.dispatch_fields(bytes(msg), 0, len(msg))
    assert (scan.status, len(scan.fields)) == (SCAN_OK, 1)
    struct.pack_into(">i", msg, 84, 6)
    assert impl.dispatch_fields(bytes(msg), 0, len(msg)).status == SCAN_CORRUPT


def test_statuses_and_range_match_scan_commitlog(impl):
    log = rocketmq_log(3) + bytes(100)
    for end in (len(log), len(log) - 100 - 5, 0):
        a = impl.dispatch_fields(log, 0, end)
        b = impl.scan_commitlog(log, 0, end)
        assert (a.valid_end, a.status, len(a.fields)) == (b.valid_end, b.status, len(b.positions))
    with pytest.raises(BufferRangeError):
        impl.dispatch_fields(log, 0, len(log) + 1)


def test_many_messages_fill_more_than_one_output_chunk(impl):
    log = rocketmq_log(5000, queues=7, body_size=0)
    scan = impl.dispatch_fields(log, 0, len(log))
    assert (scan.valid_end, scan.status, len(scan.fields)) == (len(log), SCAN_OK, 5000)


def _same(buf, pos, end):
    try:
        expected = _purepy.dispatch_fields(buf, pos, end)
    except BufferRangeError:
        with pytest.raises(BufferRangeError):
            native.dispatch_fields(guarded_view(buf), pos, end)
        return
    got = native.dispatch_fields(guarded_view(buf), pos, end)
    assert (got.valid_end, got.status) == (expected.valid_end, expected.status)
    assert got.fields.tolist() == expected.fields.tolist()


prop_bytes = st.lists(st.sampled_from([b"TAGS", b"KEYS", b"UNIQ_KEY", b"\x01", b"\x02", b"x",
                                       b"\x03", b"TAGS\x01", b"\x02KEYS\x01"]),
                      max_size=12).map(b"".join)


@pytest.mark.skipif(native.backend != "native", reason=NATIVE_MISSING)
@settings(max_examples=80, deadline=None)
@given(props=st.lists(prop_bytes, min_size=1, max_size=4), data=st.data())
def test_native_equals_python_on_valid_and_damaged_logs(props, data):
    log = bytearray(b"".join(rocketmq_message(i, i, 0, b"b" * i, properties=p)
                             for i, p in enumerate(props)))
    _same(bytes(log), 0, len(log))
    for _ in range(data.draw(st.integers(0, 3))):
        log[data.draw(st.integers(0, len(log) - 1))] ^= 1 << data.draw(st.integers(0, 7))
    cut = data.draw(st.integers(0, len(log)))
    _same(bytes(log), 0, cut)
    _same(bytes(log), data.draw(st.integers(0, len(log))), len(log))


@pytest.mark.skipif(native.backend != "native", reason=NATIVE_MISSING)
@settings(max_examples=50, deadline=None)
@given(buf=st.binary(max_size=400), pos=st.integers(-2, 400), end=st.integers(-2, 402))
def test_native_equals_python_on_random_bytes(buf, pos, end):
    _same(buf, pos, end)
