"""Contract: ``create_topics`` creates many topics in one call; every check happens before
anything is created, so a refused call creates none of them."""
from __future__ import annotations

import pytest

import mqstore


def test_create_topics_pairs_and_names(store, open_store, store_path):
    store.create_topics([("a", 3), "b", ("c.d_e-9", 1)])
    assert store.topics() == ["a", "b", "c.d_e-9"]
    assert [store.partitions(t) for t in ("a", "b", "c.d_e-9")] == [3, 1, 1]
    store.append("a", b"v", partition=2)
    store.close()
    s = open_store(store_path)
    assert s.topics() == ["a", "b", "c.d_e-9"] and s.partitions("a") == 3
    assert s.read("a", 2, 0)[0].value == b"v"


def test_create_topics_empty_is_a_no_op(store):
    store.create_topics([])
    assert store.topics() == []


def test_create_topics_many_survive_reopen(store, open_store, store_path):
    names = [f"t{i:04d}" for i in range(500)]
    store.create_topics((n, 1 + i % 3) for i, n in enumerate(names))
    store.create_topic("single")
    store.close()
    s = open_store(store_path)
    assert s.topics() == sorted(names + ["single"])
    assert s.partitions("t0499") == 1 + 499 % 3
    s.append("t0002", b"x", partition=2)
    assert s.end_offset("t0002", 2) == 1


@pytest.mark.parametrize("bad, error", [
    ([("ok", 1), ("bad/name", 1)], mqstore.InvalidTopicError),
    ([("ok", 1), ("", 1)], mqstore.InvalidTopicError),
    ([("ok", 1), (5, 1)], mqstore.InvalidTopicError),
    ([("ok", 1), ("n", 0)], mqstore.InvalidPartitionError),
    ([("ok", 1), ("n", True)], mqstore.InvalidPartitionError),
    ([("ok", 1), ("n", "2")], mqstore.InvalidPartitionError),
    ([("ok", 1), ("n", 1, 2)], mqstore.InvalidTopicError),
    ([("ok", 1), ("ok", 2)], mqstore.TopicExistsError),
    ([("ok", 1), "ok"], mqstore.TopicExistsError),
    ([("ok", 1), ("exists", 1)], mqstore.TopicExistsError),
])
def test_a_refused_create_topics_creates_none(store, open_store, store_path, bad, error):
    store.create_topic("exists", 2)
    with pytest.raises(error):
        store.create_topics(bad)
    assert store.topics() == ["exists"]
    with pytest.raises(mqstore.TopicNotFoundError):
        store.partitions("ok")
    store.create_topics(["ok"])  # the name is still free
    store.close()
    s = open_store(store_path)
    assert s.topics() == ["exists", "ok"] and s.partitions("exists") == 2


def test_create_topics_on_a_read_only_store_is_refused(store, open_store, store_path):
    store.create_topic("t")
    store.close()
    ro = open_store(store_path, read_only=True)
    with pytest.raises(mqstore.ReadOnlyStoreError):
        ro.create_topics(["u"])
    assert ro.topics() == ["t"]


def test_a_follower_sees_topics_created_after_it_opened(store, open_store, store_path):
    store.create_topic("first")
    store.flush()
    ro = open_store(store_path, read_only=True)
    store.create_topics([("second", 2), "third"])
    assert ro.topics() == ["first", "second", "third"]
    assert ro.partitions("second") == 2


def test_a_partition_count_over_the_engines_maximum_is_refused(store, open_store, store_path):
    """New-user finding: commitlog accepted 70,000 queues, which its own topic table refuses
    (RocketMQ's queue ids fit 16 bits), so the next open fell back to topics.json.bak and
    lost every topic of the session. Each engine declares ``max_partitions``."""
    top = type(store).max_partitions
    store.create_topic("keep")
    with pytest.raises(mqstore.InvalidPartitionError, match=str(top)):
        store.create_topic("big", top + 1)
    with pytest.raises(mqstore.InvalidPartitionError, match=str(top)):
        store.create_topics(["ok1", ("big", top + 1)])
    assert store.topics() == ["keep"]
    store.create_topics(["ok1"])
    store.close()
    s = open_store(store_path)
    assert s.topics() == ["keep", "ok1"]


def test_create_topics_refuses_a_bare_string(store):
    """``create_topics("abc")`` used to create topics a, b and c."""
    with pytest.raises(mqstore.InvalidTopicError, match="str"):
        store.create_topics("abc")
    assert store.topics() == []
