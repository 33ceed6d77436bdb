"""Contract: what ``read`` and ``append_batch`` return.

``read`` returns a lazy :class:`mqstore.Records`: a ``Sequence[Record]`` equal to the list
of the same records, with columns (``offsets``, ``timestamps_ms``, ``value_sizes``,
``value_offsets`` as int64 arrays, ``value_buffer``, ``values()``, ``keys()``) that agree
with the records. ``append_batch`` returns a lazy :class:`mqstore.BatchMetadata`.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pytest

from mqstore import BatchMetadata, Message, Record, RecordMetadata, Records


def _fill(store, n=40, partitions=1):
    store.create_topic("t", partitions=partitions)
    msgs = [Message(b"value-%03d" % i, key=None if i % 3 else b"k%d" % i,
                    timestamp_ms=1_000 + i, headers={"h": b"%d" % i} if i % 5 == 0 else None,
                    tag="even" if i % 2 == 0 else "odd")
            for i in range(n)]
    store.append_batch("t", msgs, partition=0)
    return msgs


def _expected(msgs, start=0):
    return [Record("t", 0, i, m.timestamp_ms, m.key, m.value, m.headers or {}, m.tag)
            for i, m in enumerate(msgs) if i >= start]


def test_read_is_a_sequence_equal_to_the_list_of_records(store):
    msgs = _fill(store)
    got = store.read("t", 0, 0)
    assert isinstance(got, Records) and isinstance(got, Sequence)
    assert len(got) == len(msgs)
    expected = _expected(msgs)
    assert got == expected
    assert list(got) == expected
    assert got[0] == expected[0] and got[-1] == expected[-1]
    assert got[7].value == b"value-007" and got[6].key == b"k6" and got[5].headers == {"h": b"5"}
    assert got[4].tag == "even" and got[3].tag == "odd"
    with pytest.raises(IndexError):
        got[len(msgs)]
    with pytest.raises(TypeError):
        got["1"]


def test_read_slices_are_records_too(store):
    msgs = _fill(store)
    got = store.read("t", 0, 0)
    expected = _expected(msgs)
    for sl in (slice(3, 9), slice(None, None, 2), slice(-5, None), slice(10, 3)):
        part = got[sl]
        assert isinstance(part, Records)
        assert part == expected[sl]
        assert part.offsets.tolist() == [r.offset for r in expected[sl]]
        assert part.values() == [r.value for r in expected[sl]]
        assert part.keys() == [r.key for r in expected[sl]]


def test_read_columns_agree_with_the_records(store):
    msgs = _fill(store)
    got = store.read("t", 0, 10, max_records=20)
    expected = _expected(msgs, 10)[:20]
    assert got.offsets.dtype == np.int64 and got.timestamps_ms.dtype == np.int64
    assert got.offsets.tolist() == list(range(10, 30))
    assert got.timestamps_ms.tolist() == [r.timestamp_ms for r in expected]
    assert got.value_sizes.tolist() == [len(r.value) for r in expected]
    assert got.values() == [r.value for r in expected]
    assert got.keys() == [r.key for r in expected]
    buf = got.value_buffer
    assert [bytes(buf[o:o + s]) for o, s in zip(got.value_offsets.tolist(),
                                                got.value_sizes.tolist())] == got.values()
    assert got.total_value_bytes == sum(len(r.value) for r in expected)


def test_read_columns_are_read_only(store):
    _fill(store, 5)
    got = store.read("t", 0, 0)
    with pytest.raises(ValueError):
        got.offsets[0] = 99
    with pytest.raises(TypeError):
        got.value_buffer[0] = 1
    with pytest.raises(TypeError):
        got[1].headers["x"] = b"y"  # the shared "no headers" mapping cannot be changed


def test_an_empty_read_is_an_empty_sequence(store):
    _fill(store, 3)
    got = store.read("t", 0, 3)
    assert isinstance(got, Records)
    assert len(got) == 0 and got == [] and list(got) == []
    assert got.offsets.tolist() == [] and got.values() == [] and got.keys() == []
    assert store.read("t", 0, 0, max_records=0) == []


def test_read_limits_apply_to_the_sequence(store):
    store.create_topic("t")
    store.append_batch("t", [b"x" * 100] * 30, partition=0)
    got = store.read("t", 0, 0, max_bytes=350)
    assert len(got) == 3 and got.value_sizes.tolist() == [100, 100, 100]
    one = store.read("t", 0, 0, max_bytes=10)  # the first record always comes back
    assert len(one) == 1 and one[0].value == b"x" * 100


def test_tag_filtered_read_keeps_columns_consistent(store):
    msgs = _fill(store)
    got = store.read("t", 0, 0, tags={"even"})
    expected = [r for r in _expected(msgs) if r.tag == "even"]
    assert got == expected
    assert got.offsets.tolist() == [r.offset for r in expected]
    assert got.values() == [r.value for r in expected]


def test_append_batch_returns_lazy_metadata_in_call_order(store):
    store.create_topic("t", partitions=3)
    md = store.append_batch("t", [b"a", b"b", b"c"], partition=2)
    assert isinstance(md, BatchMetadata) and isinstance(md, Sequence)
    assert len(md) == 3
    assert [m.offset for m in md] == [0, 1, 2] and md[1].partition == 2
    assert md.ranges == {2: (0, 3)}
    assert md.offsets.tolist() == [0, 1, 2] and md.partitions.tolist() == [2, 2, 2]
    assert md == [RecordMetadata("t", 2, i, md[i].timestamp_ms) for i in range(3)]
    assert md[-1] == md[2] and md[1:] == [md[1], md[2]]
    with pytest.raises(IndexError):
        md[3]


def test_append_batch_metadata_across_partitions(store):
    store.create_topic("t", partitions=4)
    store.append_batch("t", [b"pre"], partition=1)
    msgs = [Message(b"v%d" % i, partition=i % 2 + 1, timestamp_ms=5_000 + i)
            for i in range(6)]
    md = store.append_batch("t", msgs)
    assert [(m.partition, m.offset, m.timestamp_ms) for m in md] == [
        (1, 1, 5000), (2, 0, 5001), (1, 2, 5002), (2, 1, 5003), (1, 3, 5004), (2, 2, 5005)]
    assert md.ranges == {1: (1, 3), 2: (0, 3)}
    for m in md:
        assert store.read("t", m.partition, m.offset, max_records=1)[0].timestamp_ms \
            == m.timestamp_ms


def test_single_append_returns_record_metadata(store):
    store.create_topic("t")
    md = store.append("t", b"x", partition=0, timestamp_ms=42)
    assert isinstance(md, RecordMetadata)
    assert md == RecordMetadata("t", 0, 0, 42)
    assert (md.topic, md.partition, md.offset, md.timestamp_ms) == ("t", 0, 0, 42)


def test_records_compare_by_their_fields():
    a = Record("t", 0, 1, 2, None, b"v")
    assert a == Record("t", 0, 1, 2, None, b"v", {}, None)
    assert a != Record("t", 0, 1, 2, None, b"w")
    assert a.headers == {} and a.tag is None
    with pytest.raises(AttributeError):
        a.value = b"x"  # type: ignore[misc]
