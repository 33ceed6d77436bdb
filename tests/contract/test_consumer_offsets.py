"""Contract: committed consumer offsets per group, latest wins, durable across reopen."""
from __future__ import annotations

import pytest

import mqstore


def test_commit_and_read_back(store):
    store.create_topic("t", partitions=2)
    assert store.committed_offset("g", "t", 0) is None
    store.commit_offset("g", "t", 0, 5)
    store.commit_offset("g", "t", 0, 9)
    store.commit_offset("g", "t", 1, 2)
    store.commit_offset("other", "t", 0, 1)
    assert store.committed_offset("g", "t", 0) == 9
    assert store.committed_offset("g", "t", 1) == 2
    assert store.committed_offset("other", "t", 0) == 1
    assert store.committed_offset("other", "t", 1) is None


def test_committed_offsets_survive_reopen(open_store):
    s = open_store()
    s.create_topic("t")
    s.commit_offset("g", "t", 0, 3)
    s.commit_offset("g", "t", 0, 4)
    s.close()
    s2 = open_store()
    assert s2.committed_offset("g", "t", 0) == 4
    assert s2.topics() == ["t"]


def test_commit_unknown_topic_or_partition(store):
    store.create_topic("t")
    with pytest.raises(mqstore.TopicNotFoundError):
        store.commit_offset("g", "nope", 0, 1)
    with pytest.raises(mqstore.InvalidPartitionError):
        store.commit_offset("g", "t", 3, 1)
