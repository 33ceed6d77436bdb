"""Key to partition, as Kafka's default partitioner does it.

``partition_for_key(key, n) = toPositive(murmur2(key)) % n`` where ``toPositive`` clears the
sign bit (``x & 0x7fffffff``), so the same key always lands in the same partition, and in the
same one a Kafka producer would pick. Unkeyed messages go round-robin (``Store`` keeps the
counter).
"""
from __future__ import annotations

from mqstore import native


def partition_for_key(key: bytes, num_partitions: int) -> int:
    """The partition Kafka's default partitioner picks for ``key``."""
    return (native.murmur2(key) & 0x7FFFFFFF) % num_partitions
