"""Contract: topics, typed errors for bad input, and nothing lost when input is refused."""
from __future__ import annotations

import pytest

import mqstore
from mqstore import Message

BAD_NAMES = ["", ".", "..", "a/b", "../escape", "..\\x", "a b", "tab\t", "é", "x" * 250,
             "a\x00b", "/abs"]


def test_create_and_list_topics(store):
    store.create_topic("orders", partitions=4)
    store.create_topic("a.b_c-D9")
    assert store.topics() == ["a.b_c-D9", "orders"]
    assert store.partitions("orders") == 4
    assert store.partitions("a.b_c-D9") == 1


def test_create_existing_topic_raises(store):
    store.create_topic("t")
    with pytest.raises(mqstore.TopicExistsError):
        store.create_topic("t", partitions=3)
    assert store.partitions("t") == 1


def test_longest_valid_name(store):
    store.create_topic("x" * 249)
    store.append("x" * 249, b"v")
    assert store.end_offset("x" * 249, 0) == 1


@pytest.mark.parametrize("name", BAD_NAMES)
def test_invalid_topic_names_are_refused(store, store_path, name):
    import os

    before = sorted(os.listdir(store_path))
    with pytest.raises(mqstore.InvalidTopicError):
        store.create_topic(name)
    assert sorted(os.listdir(store_path)) == before
    assert not os.path.exists(os.path.join(os.path.dirname(store_path), "escape"))


def test_non_str_topic_name_is_refused(store):
    with pytest.raises(mqstore.InvalidTopicError):
        store.create_topic(b"bytes")  # type: ignore[arg-type]


def test_zero_partitions_is_refused(store):
    with pytest.raises(mqstore.InvalidPartitionError):
        store.create_topic("t", partitions=0)
    assert store.topics() == []


def test_unknown_topic_raises(store):
    with pytest.raises(mqstore.TopicNotFoundError):
        store.append("nope", b"v")
    with pytest.raises(mqstore.TopicNotFoundError):
        store.read("nope", 0, 0)
    with pytest.raises(mqstore.TopicNotFoundError):
        store.partitions("nope")
    with pytest.raises(mqstore.TopicNotFoundError):
        store.end_offset("nope", 0)


def test_partition_out_of_range_raises(store):
    store.create_topic("t", partitions=2)
    with pytest.raises(mqstore.InvalidPartitionError):
        store.append("t", b"v", partition=2)
    with pytest.raises(mqstore.InvalidPartitionError):
        store.read("t", -1, 0)
    with pytest.raises(mqstore.InvalidPartitionError):
        store.end_offset("t", 5)


def test_wrong_types_are_refused(store):
    store.create_topic("t")
    with pytest.raises(mqstore.InvalidRecordError):
        store.append("t", "text is not bytes")  # type: ignore[arg-type]
    with pytest.raises(mqstore.InvalidRecordError):
        store.append("t", b"v", key="str key")  # type: ignore[arg-type]
    with pytest.raises(mqstore.InvalidRecordError):
        store.append("t", b"v", headers={"h": "str"})  # type: ignore[dict-item]
    with pytest.raises(mqstore.InvalidRecordError):
        store.append("t", b"v", tag=5)  # type: ignore[arg-type]
    with pytest.raises(mqstore.InvalidRecordError):
        store.append("t", b"v", headers={"mqstore.tag": b"spoof"})
    assert store.end_offset("t", 0) == 0


def test_oversize_message_is_refused_and_nothing_written(open_store):
    s = open_store(max_message_bytes=4000)
    s.create_topic("t")
    s.append("t", b"ok", partition=0)
    with pytest.raises(mqstore.RecordTooLargeError):
        s.append("t", b"x" * 5000, partition=0)
    assert s.end_offset("t", 0) == 1
    assert s.append("t", b"after", partition=0).offset == 1
    assert [r.value for r in s.read("t", 0, 0)] == [b"ok", b"after"]


def test_batch_with_one_oversize_message_is_refused_whole(open_store):
    s = open_store(max_message_bytes=4000)
    s.create_topic("t")
    with pytest.raises(mqstore.RecordTooLargeError):
        s.append_batch("t", [b"a", b"b", b"x" * 5000], partition=0)
    assert s.end_offset("t", 0) == 0


def test_batch_with_bad_message_is_refused_whole(store):
    store.create_topic("t", partitions=2)
    with pytest.raises((mqstore.InvalidRecordError, mqstore.InvalidPartitionError)):
        store.append_batch("t", [Message(b"a", partition=0), Message(b"b", partition=9)])
    with pytest.raises(mqstore.InvalidRecordError):
        store.append_batch("t", [b"a", 42])  # type: ignore[list-item]
    assert store.end_offset("t", 0) == 0 and store.end_offset("t", 1) == 0


def test_oversize_refusal_survives_reopen(open_store, store_path):
    s = open_store(max_message_bytes=4000)
    s.create_topic("t")
    s.append("t", b"one", partition=0)
    with pytest.raises(mqstore.RecordTooLargeError):
        s.append("t", b"y" * 9000, partition=0)
    s.close()
    s2 = open_store(max_message_bytes=4000)
    assert [r.value for r in s2.read("t", 0, 0)] == [b"one"]


def test_closed_store_raises_and_close_is_idempotent(store):
    store.create_topic("t")
    store.close()
    store.close()
    assert store.closed
    with pytest.raises(mqstore.StoreClosedError):
        store.append("t", b"v")
    with pytest.raises(mqstore.StoreClosedError):
        store.read("t", 0, 0)


def test_context_manager_closes(engine, store_path):
    from .conftest import small_options

    with mqstore.open(store_path, engine, **small_options(engine)) as s:
        s.create_topic("t")
    assert s.closed


def test_stats_has_the_common_counters(store):
    store.create_topic("t")
    store.append_batch("t", [b"x" * 100] * 5, partition=0)
    st = store.stats()
    for key in ("engine", "bytes_on_disk", "files", "fsyncs", "appended_records",
                "appended_bytes"):
        assert key in st, key
    assert st["engine"] == store.engine_name
    assert st["appended_records"] == 5
    assert st["appended_bytes"] >= 500
    assert st["files"] > 0 and st["bytes_on_disk"] > 0
