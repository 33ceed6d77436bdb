"""Group commit (goal P5): ``flush="sync"`` appends from many threads vs ``write`` + ``fdatasync``.

For an engine, ``threads`` threads call ``Store.append`` (one 100 B record each call, no key)
for ``seconds`` on a store opened with ``flush="sync"``; thread ``i`` appends to partition
``i % partitions``. The reference, in the same process and interleaved with it (engine,
reference, engine, ...), is ``threads`` threads each doing ``os.write`` + ``os.fdatasync`` of
the same payload to a file of its own: what every appender would pay without group commit.

The ratio is engine messages/s over reference writes/s, per round; ``measure`` returns the best
and median of ``rounds`` rounds, and the engine's fsyncs per message from ``stats()``
(``fsyncs`` counts every fsync/fdatasync the store issued, ``group_syncs`` the group-commit
syncs). Not a test (speed is never asserted); run it by hand::

    python benchmarks/group_commit.py                      # both engines, 1 and 8 partitions
    python benchmarks/group_commit.py --engine segments --partitions 8 --seconds 2
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import threading
import time

import mqstore

PAYLOAD = bytes(range(100))


def _run_threads(threads: int, seconds: float, work) -> tuple[int, float]:
    """Start ``threads`` threads running ``work(i, stop) -> count`` until ``seconds`` pass;
    return the total count and the elapsed wall time."""
    stop = threading.Event()
    counts = [0] * threads
    errors: list[BaseException] = []
    go = threading.Barrier(threads + 1)

    def body(i: int) -> None:
        go.wait()
        try:
            counts[i] = work(i, stop)
        except BaseException as exc:  # reported by the caller
            errors.append(exc)
            stop.set()

    ts = [threading.Thread(target=body, args=(i,), daemon=True) for i in range(threads)]
    for t in ts:
        t.start()
    go.wait()
    t0 = time.perf_counter()
    stop.wait(seconds)
    stop.set()
    for t in ts:
        t.join()
    elapsed = time.perf_counter() - t0
    if errors:
        raise errors[0]
    return sum(counts), elapsed


def engine_round(engine: str, root: str, threads: int, seconds: float,
                 partitions: int) -> dict:
    """One timed run of ``threads`` appenders on a fresh ``flush="sync"`` store."""
    path = tempfile.mkdtemp(prefix=f"gc-{engine}-", dir=root)
    store = mqstore.open(path, engine, flush="sync")
    try:
        store.create_topic("t", partitions=partitions)
        for p in range(partitions):  # first writes (file creation, preallocation) untimed
            store.append("t", PAYLOAD, partition=p)
        before = store.stats()

        def work(i: int, stop: threading.Event) -> int:
            append, p, n = store.append, i % partitions, 0
            while not stop.is_set():
                append("t", PAYLOAD, partition=p)
                n += 1
            return n

        n, elapsed = _run_threads(threads, seconds, work)
        after = store.stats()
    finally:
        store.close()
        shutil.rmtree(path, ignore_errors=True)
    return {"messages": n, "seconds": elapsed, "rate": n / elapsed,
            "fsyncs": after["fsyncs"] - before["fsyncs"],
            "group_syncs": after["group_syncs"] - before["group_syncs"]}


def reference_round(root: str, threads: int, seconds: float) -> dict:
    """One timed run of ``threads`` threads each doing write + fdatasync to its own file."""
    path = tempfile.mkdtemp(prefix="gc-ref-", dir=root)
    fds = [os.open(os.path.join(path, f"{i}.log"), os.O_WRONLY | os.O_CREAT | os.O_APPEND,
                   0o644) for i in range(threads)]
    try:
        for fd in fds:
            os.write(fd, PAYLOAD)
            os.fdatasync(fd)

        def work(i: int, stop: threading.Event) -> int:
            fd, write, sync, n = fds[i], os.write, os.fdatasync, 0
            while not stop.is_set():
                write(fd, PAYLOAD)
                sync(fd)
                n += 1
            return n

        n, elapsed = _run_threads(threads, seconds, work)
    finally:
        for fd in fds:
            os.close(fd)
        shutil.rmtree(path, ignore_errors=True)
    return {"messages": n, "seconds": elapsed, "rate": n / elapsed}


def measure(engine: str, threads: int = 8, seconds: float = 1.0, *, partitions: int = 1,
            rounds: int = 5, root: str | None = None) -> dict:
    """Interleave ``rounds`` engine and reference runs; return the ratios and fsyncs.

    Keys: ``engine``, ``partitions``, ``threads``, ``best`` and ``median`` (engine rate over
    the reference rate of the same round), ``fsyncs_per_message`` and
    ``group_syncs_per_message`` (over all engine rounds), ``engine_rates`` and
    ``reference_rates`` (messages/s per round)."""
    root = root or tempfile.gettempdir()
    ratios, eng, ref = [], [], []
    msgs = fsyncs = gsyncs = 0
    for _ in range(rounds):
        e = engine_round(engine, root, threads, seconds, partitions)
        r = reference_round(root, threads, seconds)
        eng.append(e["rate"])
        ref.append(r["rate"])
        ratios.append(e["rate"] / r["rate"])
        msgs += e["messages"]
        fsyncs += e["fsyncs"]
        gsyncs += e["group_syncs"]
    return {"engine": engine, "partitions": partitions, "threads": threads,
            "best": max(ratios), "median": statistics.median(ratios),
            "fsyncs_per_message": fsyncs / max(msgs, 1),
            "group_syncs_per_message": gsyncs / max(msgs, 1),
            "engine_rates": eng, "reference_rates": ref}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--engine", action="append", help="default: segments and commitlog")
    ap.add_argument("--partitions", type=int, action="append",
                    help="default: 1, and 8 for segments")
    ap.add_argument("--threads", type=int, default=8)
    ap.add_argument("--seconds", type=float, default=1.0)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--json", help="also write the results to this file")
    a = ap.parse_args(argv)
    cases = []
    for eng in a.engine or ["segments", "commitlog"]:
        for p in a.partitions or ([1, 8] if eng == "segments" else [1]):
            cases.append((eng, p))
    results = []
    print(f"{'engine':10} {'parts':>5} {'best':>6} {'median':>6} {'fsync/msg':>9} "
          f"{'engine msg/s':>12} {'ref msg/s':>10}")
    for eng, p in cases:
        r = measure(eng, a.threads, a.seconds, partitions=p, rounds=a.rounds)
        results.append(r)
        print(f"{eng:10} {p:5} {r['best']:5.2f}x {r['median']:5.2f}x "
              f"{r['fsyncs_per_message']:9.3f} {statistics.median(r['engine_rates']):12.0f} "
              f"{statistics.median(r['reference_rates']):10.0f}", flush=True)
    if a.json:
        with open(a.json, "w") as f:
            json.dump(results, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
