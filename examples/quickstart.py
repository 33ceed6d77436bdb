"""Quickstart: open a store, create a topic, append, read, look up, commit a consumer offset.

    python examples/quickstart.py [DATA_DIR] [--engine segments|commitlog]

Without DATA_DIR the store goes to a temporary directory that is removed at the end.
"""
from __future__ import annotations

import argparse
import tempfile

import mqstore


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("data_dir", nargs="?")
    ap.add_argument("--engine", default=None, help="segments (Kafka) or commitlog (RocketMQ)")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        path = args.data_dir or f"{tmp}/data"
        with mqstore.open(path, engine=args.engine, flush="sync") as store:
            if "orders" not in store.topics():
                store.create_topic("orders", partitions=4)
            # a key picks the partition (Kafka's murmur2), so one order's events stay in order
            md = store.append("orders", b'{"id": 1, "state": "created"}', key=b"order-1",
                              tag="created")
            store.append("orders", b'{"id": 1, "state": "paid"}', key=b"order-1", tag="paid")
            store.append_batch("orders", [mqstore.Message(b"bulk-%d" % i) for i in range(10)])
            print(f"engine={store.engine_name} appended to partition {md.partition} "
                  f"offset {md.offset}")

            for rec in store.read("orders", md.partition, md.offset):
                print(f"  offset {rec.offset} key={rec.key!r} tag={rec.tag} {rec.value!r}")
            paid = store.read("orders", md.partition, 0, tags={"paid"})
            print(f"tag filter 'paid': {len(paid)} record(s)")
            found = store.lookup_key("orders", b"order-1")
            print(f"lookup_key order-1: {len(found)} record(s)")
            when = store.offset_for_time("orders", md.partition, md.timestamp_ms)
            print(f"first offset at {md.timestamp_ms} ms: {when}")

            store.commit_offset("billing", "orders", md.partition, md.offset + 2)
            print(f"committed offset of group billing: "
                  f"{store.committed_offset('billing', 'orders', md.partition)}")
            print(f"stats: files={store.stats()['files']} fsyncs={store.stats()['fsyncs']}")


if __name__ == "__main__":
    main()
