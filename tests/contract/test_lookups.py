"""Contract: offset_for_time, lookup_key and tag filtering.

Timestamps here are the append-time defaults: the commitlog engine indexes time by store
timestamp (RocketMQ's design), the segments engine by record timestamp (Kafka's CreateTime),
and the two agree when producers leave ``timestamp_ms`` unset.
"""
from __future__ import annotations

import time

import mqstore

from .conftest import read_all


def _appended_in_phases(store, topic, phases, per_phase, partition=0, gap_s=0.02):
    """Append ``per_phase`` records per phase with a gap between phases; return the
    (first timestamp, first offset) of each phase."""
    marks = []
    for p in range(phases):
        first = None
        for i in range(per_phase):
            md = store.append(topic, b"p%d-%d" % (p, i), partition=partition)
            if first is None:
                first = md
        marks.append((first.timestamp_ms, first.offset))
        time.sleep(gap_s)
    return marks


def test_offset_for_time(store):
    store.create_topic("t")
    marks = _appended_in_phases(store, "t", phases=4, per_phase=30)
    for ts, off in marks:
        assert store.offset_for_time("t", 0, ts) == off
    assert store.offset_for_time("t", 0, 0) == 0
    last_ts = store.read("t", 0, store.end_offset("t", 0) - 1)[0].timestamp_ms
    assert store.offset_for_time("t", 0, last_ts + 10_000) is None


def test_offset_for_time_between_phases(store):
    store.create_topic("t")
    marks = _appended_in_phases(store, "t", phases=2, per_phase=10)
    (_, off1) = marks[1]
    last_of_phase0 = store.read("t", 0, off1 - 1)[0].timestamp_ms
    # a time after the last record of phase 0 finds the first record of phase 1
    assert store.offset_for_time("t", 0, last_of_phase0 + 1) == off1


def test_offset_for_time_on_empty_partition(store):
    store.create_topic("t")
    assert store.offset_for_time("t", 0, 0) is None


def test_offset_for_time_matches_record_timestamps(store):
    store.create_topic("t")
    _appended_in_phases(store, "t", phases=5, per_phase=20, gap_s=0.005)
    recs = read_all(store, "t", 0)
    for target in sorted({r.timestamp_ms for r in recs})[::3]:
        want = next(r.offset for r in recs if r.timestamp_ms >= target)
        assert store.offset_for_time("t", 0, target) == want


def test_lookup_key_finds_every_record_with_the_key(store):
    store.create_topic("t", partitions=3)
    for i in range(60):
        store.append("t", b"v%d" % i, key=b"k%d" % (i % 6))
    found = store.lookup_key("t", b"k4")
    assert sorted(r.value for r in found) == sorted(b"v%d" % i for i in range(4, 60, 6))
    assert all(r.key == b"k4" and r.topic == "t" for r in found)
    assert store.lookup_key("t", b"missing") == []


def test_lookup_key_limit(store):
    store.create_topic("t")
    for i in range(20):
        store.append("t", b"v%d" % i, key=b"same")
    assert len(store.lookup_key("t", b"same", limit=5)) == 5
    assert len(store.lookup_key("t", b"same", limit=1)) == 1
    assert store.lookup_key("t", b"same", limit=0) == []


def test_lookup_key_is_per_topic(store):
    store.create_topic("a")
    store.create_topic("b")
    store.append("a", b"in-a", key=b"k")
    store.append("b", b"in-b", key=b"k")
    assert [r.value for r in store.lookup_key("a", b"k")] == [b"in-a"]
    assert [r.value for r in store.lookup_key("b", b"k")] == [b"in-b"]


def test_lookup_key_within_time_range(store):
    store.create_topic("t")
    store.append("t", b"early", key=b"k")
    time.sleep(0.05)
    mid = mqstore.api.now_ms()
    time.sleep(0.05)
    late = store.append("t", b"late", key=b"k")
    assert [r.value for r in store.lookup_key("t", b"k", start_ms=mid)] == [b"late"]
    assert [r.value for r in store.lookup_key("t", b"k", end_ms=mid)] == [b"early"]
    both = store.lookup_key("t", b"k", start_ms=0, end_ms=late.timestamp_ms + 1000)
    assert sorted(r.value for r in both) == [b"early", b"late"]


def test_lookup_key_binary_key(store):
    store.create_topic("t")
    key = b"\x00\x01\x02 space\xff"
    store.append("t", b"bin", key=key)
    assert [r.value for r in store.lookup_key("t", key)] == [b"bin"]


def test_read_with_tags_filters(store):
    store.create_topic("t")
    tags = ["a", "b", "c", None]
    for i in range(40):
        store.append("t", b"v%d" % i, partition=0, tag=tags[i % 4])
    got = store.read("t", 0, 0, tags={"a", "c"}, max_records=500)
    assert [r.offset for r in got] == [i for i in range(40) if i % 4 in (0, 2)]
    assert all(r.tag in ("a", "c") for r in got)
    assert store.read("t", 0, 0, tags={"zzz"}) == []


def test_read_with_tags_respects_max_records_and_offset(store):
    store.create_topic("t")
    for i in range(30):
        store.append("t", b"v%d" % i, partition=0, tag="x" if i % 3 == 0 else "y")
    got = store.read("t", 0, 10, tags=["x"], max_records=3)
    assert [r.offset for r in got] == [12, 15, 18]
