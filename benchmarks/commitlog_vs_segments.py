"""The commitlog and segments engines on the same small workload, at 1 and 100 partitions.

For each message size (100 B and 1 KiB), partition count (1 and 100) and append mode
(``append``: one call per message; ``batch``: ``append_batch`` of ``--batch`` messages to one
partition per call), both engines get the same payloads, in a fresh temporary directory each,
with ``flush="os"`` and their default file sizes. Messages go to partitions in turn (message
i -> partition i % P; batch j -> partition j % P). Then every partition is read back from
offset 0 with ``read``. Rates count payload bytes; the last column is the commitlog rate over
the segments rate measured in the same run. Not a test: run it by hand::

    python benchmarks/commitlog_vs_segments.py --count 20000 [--write-modes] [--costs] \\
        [--json out.json]

The commitlog engine's dispatcher may still be building ConsumeQueues and the IndexFile when
the appends return; the script waits until ``stats()["dispatch_lag"]`` is 0 and reports that
catch-up time in its own column, so the read rates measure reading only.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import sys
import tempfile
import time

import mqstore

ENGINES = ("segments", "commitlog")


def _payloads(count: int, size: int, seed: int) -> list[bytes]:
    rnd = random.Random(seed)
    block = rnd.randbytes(size * 64)
    return [block[(i % 64) * size:(i % 64 + 1) * size] for i in range(count)]


def run_one(engine: str, root: str, payloads: list[bytes], partitions: int,
            batch: int, **options) -> tuple[float, float, dict]:
    """(append seconds, read seconds, stats) for one engine, partition count and mode."""
    with mqstore.open(root, engine, flush="os", **options) as store:
        store.create_topic("bench", partitions=partitions)
        t0 = time.perf_counter()
        if batch <= 1:
            append = store.append
            for i, p in enumerate(payloads):
                append("bench", p, partition=i % partitions)
        else:
            for j, i in enumerate(range(0, len(payloads), batch)):
                store.append_batch("bench", payloads[i:i + batch], partition=j % partitions)
        t_append = time.perf_counter() - t0
        # the commitlog engine's dispatcher may still be building ConsumeQueues / IndexFile:
        # time that separately, so "read" is reading only
        t0 = time.perf_counter()
        while store.stats().get("dispatch_lag", 0) > 0:
            time.sleep(0.0005)
        t_settle = time.perf_counter() - t0
        t0 = time.perf_counter()
        got = 0
        for part in range(partitions):
            off, end = 0, store.end_offset("bench", part)
            while off < end:
                page = store.read("bench", part, off)
                got += len(page)
                off = page[-1].offset + 1
        t_read = time.perf_counter() - t0
        assert got == len(payloads), (engine, got, len(payloads))
        stats = store.stats()
    stats["settle_s"] = t_settle
    return t_append, t_read, stats


def measure(sizes: list[int], partitions: list[int], count: int, batch: int,
            seed: int) -> list[dict]:
    rows = []
    for size in sizes:
        payloads = _payloads(count, size, seed)
        for parts in partitions:
            for mode, b in (("append", 1), (f"batch{batch}", batch)):
                row = {"size": size, "partitions": parts, "mode": mode, "count": count}
                for engine in ENGINES:
                    tmp = tempfile.mkdtemp(prefix="mqstore-cmp-")
                    try:
                        t_app, t_read, st = run_one(engine, os.path.join(tmp, "s"), payloads,
                                                    parts, b)
                    finally:
                        shutil.rmtree(tmp, ignore_errors=True)
                    row[engine] = {"append_msgs_s": count / t_app,
                                   "append_mb_s": count * size / t_app / 1e6,
                                   "read_msgs_s": count / t_read,
                                   "read_mb_s": count * size / t_read / 1e6,
                                   "dispatch_settle_s": st["settle_s"],
                                   "files": st["files"]}
                row["append_ratio"] = (row["commitlog"]["append_msgs_s"]
                                       / row["segments"]["append_msgs_s"])
                row["read_ratio"] = (row["commitlog"]["read_msgs_s"]
                                     / row["segments"]["read_msgs_s"])
                rows.append(row)
                _print_row(row)
    return rows


def measure_write_modes(sizes: list[int], count: int, batch: int, seed: int) -> list[dict]:
    """The commitlog engine's two write paths (mmap copy vs pwrite), 1 partition."""
    rows = []
    print(f"\ncommitlog write_mode, 1 partition\n{'size':>5} {'mode':<9} | "
          f"{'mmap msg/s':>10} {'write msg/s':>11} {'write/mmap':>10}")
    for size in sizes:
        payloads = _payloads(count, size, seed)
        for mode, b in (("append", 1), (f"batch{batch}", batch)):
            row = {"size": size, "mode": mode, "count": count}
            for wm in ("mmap", "write"):
                tmp = tempfile.mkdtemp(prefix="mqstore-wm-")
                try:
                    t_app, _t_read, _st = run_one("commitlog", os.path.join(tmp, "s"), payloads,
                                                  1, b, write_mode=wm)
                finally:
                    shutil.rmtree(tmp, ignore_errors=True)
                row[wm] = count / t_app
            row["ratio"] = row["write"] / row["mmap"]
            rows.append(row)
            print(f"{size:>5} {mode:<9} | {row['mmap']:>10,.0f} {row['write']:>11,.0f} "
                  f"{row['ratio']:>10.2f}", flush=True)
    return rows


def measure_costs(size: int, count: int, seed: int) -> dict:
    """CPU per message of the commitlog engine's three stages, one after the other: append
    (dispatcher parked), dispatch (one bulk pass), read (every message once)."""
    payloads = _payloads(count, size, seed)
    tmp = tempfile.mkdtemp(prefix="mqstore-cost-")
    try:
        with mqstore.open(os.path.join(tmp, "s"), "commitlog", flush="os", dispatch="sync",
                          mapped_file_size=64 << 20) as store:
            store.create_topic("bench")
            wake = store.dispatcher.wakeup
            store.dispatcher.wakeup = lambda: None
            c = time.process_time()
            for p in payloads:
                store.append("bench", p, partition=0)
            t_append = time.process_time() - c
            c = time.process_time()
            store.dispatcher.dispatch()
            t_dispatch = time.process_time() - c
            store.dispatcher.wakeup = wake
            c = time.process_time()
            off = 0
            while off < count:
                off = store.read("bench", 0, off)[-1].offset + 1
            t_read = time.process_time() - c
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    row = {"size": size, "count": count, "append_us": t_append / count * 1e6,
           "dispatch_us": t_dispatch / count * 1e6, "read_us": t_read / count * 1e6}
    print(f"\ncommitlog CPU per message, {size} B: append {row['append_us']:.1f} us, "
          f"dispatch {row['dispatch_us']:.1f} us, read {row['read_us']:.1f} us", flush=True)
    return row


def _print_header() -> None:
    print(f"{'size':>5} {'parts':>5} {'mode':<9} | {'append msg/s seg':>16} {'commitlog':>10} "
          f"{'cl/seg':>7} | {'read msg/s seg':>14} {'commitlog':>10} {'cl/seg':>7} | "
          f"{'files seg/cl':>12} | {'cl dispatch catch-up s':>22}")


def _print_row(r: dict) -> None:
    s, c = r["segments"], r["commitlog"]
    print(f"{r['size']:>5} {r['partitions']:>5} {r['mode']:<9} | {s['append_msgs_s']:>16,.0f} "
          f"{c['append_msgs_s']:>10,.0f} {r['append_ratio']:>7.2f} | {s['read_msgs_s']:>14,.0f} "
          f"{c['read_msgs_s']:>10,.0f} {r['read_ratio']:>7.2f} | "
          f"{s['files']:>5}/{c['files']:<6} | {c['dispatch_settle_s']:>22.3f}", flush=True)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", default="100,1024")
    ap.add_argument("--partitions", default="1,100")
    ap.add_argument("--count", type=int, default=20_000)
    ap.add_argument("--batch", type=int, default=100)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--json", help="also write the rows to this JSON file")
    ap.add_argument("--write-modes", action="store_true",
                    help="also compare the commitlog engine's write_mode mmap vs write")
    ap.add_argument("--costs", action="store_true",
                    help="also measure the commitlog engine's CPU per message per stage")
    args = ap.parse_args(argv)
    from mqstore import native

    print(f"mqstore {mqstore.__version__}, native backend: {native.backend}, python "
          f"{sys.version.split()[0]}, count {args.count}, flush=os, default file sizes")
    _print_header()
    sizes = [int(x) for x in args.sizes.split(",")]
    rows = measure(sizes, [int(x) for x in args.partitions.split(",")], args.count,
                   args.batch, args.seed)
    wm_rows = measure_write_modes(sizes, args.count, args.batch, args.seed) \
        if args.write_modes else []
    cost_rows = [measure_costs(size, args.count, args.seed) for size in sizes] \
        if args.costs else []
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"engines": rows, "write_modes": wm_rows, "costs": cost_rows}, f,
                      indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
