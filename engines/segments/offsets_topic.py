"""Committed consumer offsets as records of the internal topic ``__consumer_offsets``.

Kafka's group coordinator keeps commits in ``__consumer_offsets`` (50 partitions, a binary
schema, compacted). mqstore keeps the idea and simplifies the bytes: one partition, one
single-record batch per commit, key ``group/topic/partition`` (UTF-8), value the offset as
decimal ASCII. Replaying the partition from the start rebuilds the table; the latest record for
a key wins. Topic names cannot contain ``/`` and partitions are digits, so splitting the key
from the right is unambiguous even when the group name contains ``/``. Pure functions.
"""
from __future__ import annotations

from mqstore.api import now_ms
from mqstore.engines.segments.record_batch import BatchBody, encode_one

#: records read per step while replaying
REPLAY_PAGE = 10_000


def encode_commit(group: str, topic: str, partition: int, offset: int) -> BatchBody:
    """The batch body recording one commit."""
    return encode_one(now_ms(), f"{group}/{topic}/{partition}".encode("utf-8"),
                      str(offset).encode("ascii"), None, None)


def replay_commits(log, start: int, committed: dict[tuple[str, str, int], int]) -> int:
    """Apply the commits in ``log`` (a PartitionLog) from offset ``start`` to ``committed``;
    return the offset to continue from next time. Records that do not parse are ignored."""
    pos = max(start, log.log_start_offset)
    while pos < log.next_offset:
        recs = log.read(pos, REPLAY_PAGE, 1 << 30, None)
        if not recs:
            break
        for key, value in zip(recs.keys(), recs.values()):
            try:
                group, topic, part = key.decode("utf-8").rsplit("/", 2)
                committed[(group, topic, int(part))] = int(value)
            except (AttributeError, ValueError):
                continue
        pos = int(recs.offsets[-1]) + 1
    return pos
