"""Contract: dense offsets, append order, read-your-writes, read limits, round trips."""
from __future__ import annotations

import pytest

import mqstore
from mqstore import Message

from .conftest import read_all, values


def test_offsets_are_dense_from_zero(store):
    store.create_topic("t")
    offsets = [store.append("t", b"v%d" % i, partition=0).offset for i in range(25)]
    assert offsets == list(range(25))
    assert store.start_offset("t", 0) == 0
    assert store.end_offset("t", 0) == 25


def test_read_your_writes_after_each_append(store):
    store.create_topic("t")
    for i in range(20):
        md = store.append("t", b"x%d" % i, partition=0)
        got = store.read("t", 0, md.offset)
        assert [r.value for r in got] == [b"x%d" % i]


def test_read_returns_records_in_append_order_from_offset(store):
    store.create_topic("t")
    for i in range(30):
        store.append("t", b"%03d" % i, partition=0)
    got = store.read("t", 0, 7, max_records=10)
    assert [r.offset for r in got] == list(range(7, 17))
    assert values(got) == [b"%03d" % i for i in range(7, 17)]


def test_empty_partition_offsets(store):
    store.create_topic("t", partitions=2)
    assert store.start_offset("t", 1) == 0
    assert store.end_offset("t", 1) == 0
    assert store.read("t", 1, 0) == []


def test_read_at_end_offset_is_empty(store):
    store.create_topic("t")
    store.append("t", b"a", partition=0)
    assert store.read("t", 0, 1) == []


def test_read_past_end_raises(store):
    store.create_topic("t")
    store.append("t", b"a", partition=0)
    with pytest.raises(mqstore.OffsetOutOfRangeError):
        store.read("t", 0, 2)
    with pytest.raises(mqstore.OffsetOutOfRangeError):
        store.read("t", 0, -1)


def test_max_records_bounds_the_result(store):
    store.create_topic("t")
    store.append_batch("t", [b"v%d" % i for i in range(50)], partition=0)
    assert len(store.read("t", 0, 0, max_records=7)) == 7
    assert len(store.read("t", 0, 45, max_records=7)) == 5


def test_max_bytes_bounds_value_bytes_but_returns_at_least_one(store):
    store.create_topic("t")
    for i in range(10):
        store.append("t", bytes([65 + i]) * 100, partition=0)
    got = store.read("t", 0, 0, max_bytes=250)
    assert [r.offset for r in got] == [0, 1]
    got = store.read("t", 0, 3, max_bytes=10)
    assert [r.offset for r in got] == [3]


def test_record_fields_round_trip(store):
    store.create_topic("t", partitions=3)
    headers = {"h1": b"\x00\x01\x02 bin\xff", "TAGS": b"not a tag", "KEYS": b"a b",
               "UNIQ_KEY": b"u", "empty": b"", "name with space": b"x"}
    md = store.append("t", b"\x00payload\x01\x02\xff", key=b"k\x00\x01 \x02y",
                      partition=2, timestamp_ms=1_700_000_000_123, headers=headers, tag="paid")
    assert (md.topic, md.partition, md.offset, md.timestamp_ms) == ("t", 2, 0, 1_700_000_000_123)
    (rec,) = store.read("t", 2, 0)
    assert rec.topic == "t" and rec.partition == 2 and rec.offset == 0
    assert rec.timestamp_ms == 1_700_000_000_123
    assert rec.key == b"k\x00\x01 \x02y"
    assert rec.value == b"\x00payload\x01\x02\xff"
    assert rec.headers == headers
    assert rec.tag == "paid"


def test_none_and_empty_keys_and_values_are_distinct(store):
    store.create_topic("t")
    store.append("t", b"", key=None, partition=0)
    store.append("t", b"", key=b"", partition=0)
    store.append("t", b"v", partition=0, headers={}, tag=None)
    a, b, c = store.read("t", 0, 0)
    assert a.key is None and a.value == b""
    assert b.key == b"" and b.value == b""
    assert c.headers == {} and c.tag is None


def test_unicode_tag_and_header_names_round_trip(store):
    store.create_topic("t")
    store.append("t", b"v", partition=0, tag="标签-é", headers={"naïve": b"\xe2\x82\xac"})
    (rec,) = store.read("t", 0, 0)
    assert rec.tag == "标签-é"
    assert rec.headers == {"naïve": b"\xe2\x82\xac"}


def test_bytes_like_values_are_accepted(store):
    store.create_topic("t")
    store.append("t", bytearray(b"ba"), key=memoryview(b"mk"), partition=0)
    (rec,) = store.read("t", 0, 0)
    assert rec.value == b"ba" and rec.key == b"mk"


def test_default_timestamp_is_now(store):
    store.create_topic("t")
    before = mqstore.api.now_ms()
    md = store.append("t", b"v", partition=0)
    after = mqstore.api.now_ms()
    assert before <= md.timestamp_ms <= after
    assert store.read("t", 0, 0)[0].timestamp_ms == md.timestamp_ms


def test_append_batch_returns_metadata_in_call_order(store):
    store.create_topic("t", partitions=3)
    msgs = [Message(b"a", partition=1), Message(b"b", partition=0), Message(b"c", partition=1),
            b"d"]
    mds = store.append_batch("t", msgs, partition=None)
    assert [m.partition for m in mds[:3]] == [1, 0, 1]
    assert [m.offset for m in mds[:3]] == [0, 0, 1]
    for md, want in zip(mds, [b"a", b"b", b"c", b"d"]):
        assert store.read("t", md.partition, md.offset, max_records=1)[0].value == want


def test_append_batch_with_explicit_partition(store):
    store.create_topic("t", partitions=2)
    mds = store.append_batch("t", [b"x", Message(b"y", key=b"k")], partition=1)
    assert [m.partition for m in mds] == [1, 1]
    assert [m.offset for m in mds] == [0, 1]


def test_many_records_across_files_read_back(store):
    """Enough data to roll files (the fixture sizes them small)."""
    store.create_topic("t")
    payloads = [(b"%05d" % i) * 40 for i in range(600)]
    for i in range(0, 600, 50):
        store.append_batch("t", payloads[i:i + 50], partition=0)
    assert values(read_all(store, "t", 0)) == payloads
    assert values(read_all(store, "t", 0, 333)) == payloads[333:]


def test_data_survives_close_and_reopen(open_store, store_path, engine):
    s = open_store()
    s.create_topic("a", partitions=2)
    s.create_topic("b")
    for i in range(40):
        s.append("a", b"a%d" % i, partition=i % 2, key=b"k", headers={"i": b"%d" % i})
    s.append_batch("b", [b"b%d" % i for i in range(15)])
    s.close()
    s2 = open_store()
    assert s2.topics() == ["a", "b"]
    assert s2.partitions("a") == 2
    assert s2.end_offset("a", 0) == 20 and s2.end_offset("a", 1) == 20
    assert values(read_all(s2, "a", 1)) == [b"a%d" % i for i in range(1, 40, 2)]
    assert read_all(s2, "a", 0)[3].headers == {"i": b"6"}
    assert values(read_all(s2, "b", 0)) == [b"b%d" % i for i in range(15)]
    # appends continue the offsets
    assert s2.append("b", b"more", partition=0).offset == 15
