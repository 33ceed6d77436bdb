"""Contract: key -> murmur2 partition (Kafka's default partitioner), round-robin otherwise."""
from __future__ import annotations

from collections import Counter

from mqstore.partitioner import partition_for_key


def test_kafka_partitioner_vectors():
    # murmur2 values from Kafka's UtilsTest; partition = toPositive(h) % n
    assert partition_for_key(b"21", 1000) == (-973932308 & 0x7FFFFFFF) % 1000
    assert partition_for_key(b"foobar", 7) == (-790332482 & 0x7FFFFFFF) % 7


def test_same_key_same_partition(store):
    store.create_topic("t", partitions=8)
    for k in (b"order-1", b"order-2", b"\x00\xff", b""):
        parts = {store.append("t", b"v", key=k).partition for _ in range(5)}
        assert parts == {partition_for_key(k, 8)}


def test_keys_spread_over_partitions(store):
    store.create_topic("t", partitions=4)
    parts = Counter(store.append("t", b"v", key=b"key-%d" % i).partition for i in range(200))
    assert set(parts) == {0, 1, 2, 3}


def test_unkeyed_appends_go_round_robin(store):
    store.create_topic("t", partitions=3)
    parts = [store.append("t", b"v").partition for _ in range(30)]
    assert Counter(parts) == {0: 10, 1: 10, 2: 10}
    assert all(parts[i] != parts[i + 1] for i in range(29))


def test_explicit_partition_wins_over_key(store):
    store.create_topic("t", partitions=4)
    k = b"order-1"
    other = (partition_for_key(k, 4) + 1) % 4
    assert store.append("t", b"v", key=k, partition=other).partition == other
