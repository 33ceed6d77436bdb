"""A consumer group that commits its offsets and resumes after a restart.

    python examples/consumer_group.py [--engine segments|commitlog]

The producer writes 30 orders to 3 partitions. The consumer of group "billing" processes
part of them, commits, and "crashes" (the store is closed). After reopening, it resumes from
the committed offsets and every order is processed exactly once.
"""
from __future__ import annotations

import argparse
import tempfile

import mqstore

GROUP, TOPIC = "billing", "orders"


def consume(store, limit: int | None, seen: list[bytes]) -> None:
    """Poll every partition from the committed offset; commit after each poll."""
    for p in range(store.partitions(TOPIC)):
        pos = store.committed_offset(GROUP, TOPIC, p) or 0
        while limit is None or len(seen) < limit:
            batch = store.read(TOPIC, p, pos, max_records=4)
            if not batch:
                break
            seen.extend(r.value for r in batch)  # "process" the records
            pos = batch[-1].offset + 1
            store.commit_offset(GROUP, TOPIC, p, pos)  # at-least-once: commit after work


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--engine", default=None)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        path = f"{tmp}/data"
        seen: list[bytes] = []
        with mqstore.open(path, engine=args.engine) as store:
            store.create_topic(TOPIC, partitions=3)
            store.append_batch(TOPIC, [mqstore.Message(b"order-%02d" % i, key=b"%d" % i)
                                       for i in range(30)])
            consume(store, limit=10, seen=seen)
            print(f"first run processed {len(seen)} orders, then stopped")
        with mqstore.open(path, engine=args.engine) as store:  # the restart
            offsets = [store.committed_offset(GROUP, TOPIC, p) for p in range(3)]
            print(f"resuming from committed offsets {offsets}")
            consume(store, limit=None, seen=seen)
        assert sorted(seen) == sorted(b"order-%02d" % i for i in range(30)), "lost or repeated"
        print(f"processed {len(seen)} orders in total, each exactly once "
              f"(engine {store.engine_name})")


if __name__ == "__main__":
    main()
