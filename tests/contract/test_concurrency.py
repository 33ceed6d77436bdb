"""Contract: appends are thread-safe; per-partition order and dense offsets hold."""
from __future__ import annotations

import threading

from .conftest import read_all


def test_concurrent_appenders_keep_dense_offsets_and_order(store):
    store.create_topic("t", partitions=2)
    n_threads, per_thread = 6, 150
    metas: dict[int, list] = {}

    def work(t):
        out = []
        for i in range(per_thread):
            if i % 10 == 0:
                out += store.append_batch("t", [b"T%d-%d-b%d" % (t, i, j) for j in range(3)],
                                          partition=t % 2)
            else:
                out.append(store.append("t", b"T%d-%d" % (t, i), partition=t % 2))
        metas[t] = out

    threads = [threading.Thread(target=work, args=(t,)) for t in range(n_threads)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for p in (0, 1):
        recs = read_all(store, "t", p)
        assert [r.offset for r in recs] == list(range(len(recs)))
        by_offset = {r.offset: r.value for r in recs}
        for t in range(p, n_threads, 2):
            offs = [m.offset for m in metas[t]]
            assert offs == sorted(offs), "a thread's appends must keep their order"
            assert all(by_offset[m.offset].startswith(b"T%d-" % t) for m in metas[t])
        assert len(recs) == sum(len(metas[t]) for t in range(p, n_threads, 2))


def test_reads_while_appending(store):
    store.create_topic("t")
    stop = threading.Event()
    errors = []

    def reader():
        offset = 0
        while not stop.is_set() or offset < store.end_offset("t", 0):
            try:
                for r in store.read("t", 0, offset):
                    assert r.offset == offset and r.value == b"v%d" % offset
                    offset += 1
            except Exception as exc:  # surfaced below
                errors.append(exc)
                return

    t = threading.Thread(target=reader)
    t.start()
    for i in range(500):
        store.append("t", b"v%d" % i, partition=0)
    stop.set()
    t.join(30)
    assert not errors, errors


def test_reads_never_run_ahead_of_acknowledged_appends(store):
    """A read may only return offsets below the end offset: bytes in the file past it belong
    to an append that has not returned yet (a reader that gets them would fail its next read
    with OffsetOutOfRangeError)."""
    store.create_topic("t")
    stop = threading.Event()
    problems = []

    def reader():
        offset = 0
        while not stop.is_set():
            try:
                recs = store.read("t", 0, offset)
            except Exception as exc:  # surfaced below
                problems.append(exc)
                return
            if recs:
                end = store.end_offset("t", 0)
                if recs[-1].offset >= end:
                    problems.append(f"read returned offset {recs[-1].offset}, end is {end}")
                    return
                offset = recs[-1].offset + 1

    threads = [threading.Thread(target=reader) for _ in range(2)]
    for t in threads:
        t.start()
    for i in range(3000):
        store.append("t", b"x%d" % i, partition=0)
    stop.set()
    for t in threads:
        t.join(30)
    assert not problems, problems[:3]
