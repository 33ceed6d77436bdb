"""Define a workload in code and run it on every engine and a reference, side by side.

    python examples/custom_workload.py [--messages N]

A Workload uses OpenMessaging Benchmark field names (topics, partitionsPerTopic,
messageSize, producersPerTopic, ...) plus mqstore's own (messages, batch_records, flush).
The same thing from the command line: put the fields in a YAML/TOML file and run
`mqstore bench FILE`.
"""
from __future__ import annotations

import argparse

from rich.console import Console

import mqstore
from mqstore.bench import report
from mqstore.bench.runner import run_workload
from mqstore.bench.workload import Workload


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--messages", type=int, default=5000)
    args = ap.parse_args()
    wl = Workload(
        name="orders-8p-keys",
        topics=1, partitionsPerTopic=8, messageSize=512,
        keyDistributor="KEY_ROUND_ROBIN", producersPerTopic=2,
        subscriptionsPerTopic=1, consumerPerSubscription=2,
        messages=args.messages, batch_records=32, linger_ms=1.0, flush="os",
    )
    results = [run_workload(wl, target) for target in mqstore.engines() + ["raw-files"]]
    console = Console(width=150)
    console.print(report.run_table(results, f"{wl.name}: {wl.messages} messages"))
    for r in results:
        assert r.produced == wl.messages and r.consumed == wl.messages, r.notes
        print(f"{r.target}: {report.kafka_producer_line(r)}")


if __name__ == "__main__":
    main()
