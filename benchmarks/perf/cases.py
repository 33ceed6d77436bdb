"""Each goal of issue 9 as rows: an engine run and a reference run, through the public API.

Conventions shared by every row:

- values are seeded random bytes (a pool of 64 values, cycled), 100 B unless the row says;
- write rows open a fresh store (``flush="os"`` unless the row says, default options) and a
  fresh reference for every run; the first batch of each partition is appended untimed on
  both sides (first-file costs land outside the timing), the rest is timed; the commitlog's
  timing ends when its dispatcher has caught up (``stats()["dispatch_lag"] == 0``), so a
  rate counts the ConsumeQueue and IndexFile work each message needs;
- read rows share one filled store per engine (and one sqlite / LMDB file) and read from
  offset 0 to the end with the default ``max_records`` / ``max_bytes``;
- each run checks what it did (records appended, records and bytes read), so a fast wrong
  path cannot pass.

:func:`build_rows` returns the rows for the chosen engines and goals; :class:`Fixtures`
owns the temporary directories and filled stores, closed by :meth:`Fixtures.close`.
"""
from __future__ import annotations

import glob
import os
import random
import shutil
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import mqstore
from perf import crash, refs
from perf.model import Row, Sample, interleave

TOPIC = "t"
BATCH = 1000
CHUNK = 1 << 20


@dataclass(frozen=True)
class Sizes:
    """How much work each row does (``--quick`` shrinks every figure)."""

    p1_messages: int = 100_000
    p2_batches: int = 32            # of 1,000 x 1 KiB
    p3_messages: int = 20_000
    p4_messages: int = 200_000
    p5_seconds: float = 1.0
    p6_partitions: int = 1000
    p6_messages: int = 300_000      # 3,000 batches: 2 timed per partition after warm-up
    p6_batch: int = 100
    p7_messages: int = 100_000
    p9_mib: float = 64.0


QUICK = Sizes(p1_messages=12_000, p2_batches=2, p3_messages=300, p4_messages=3000,
              p5_seconds=0.1, p6_partitions=20, p6_messages=3000, p6_batch=50,
              p7_messages=2000, p9_mib=0.5)


def values(count: int, size: int, seed: int = 9) -> list[bytes]:
    rnd = random.Random(seed * 1_000_003 + size)
    pool = [rnd.randbytes(size) for _ in range(64)]
    return [pool[i % 64] for i in range(count)]


def batches_of(vals: list[bytes], n: int) -> list[list[bytes]]:
    return [vals[i:i + n] for i in range(0, len(vals), n)]


def warm_batches(partitions: int, batches: list) -> int:
    """How many leading batches are appended untimed: one per partition (at least one
    batch stays timed)."""
    return min(partitions, len(batches) - 1)


SETTLE_TIMEOUT_S = 120.0


def settle(store: Any, timeout: float = SETTLE_TIMEOUT_S) -> None:
    """Wait until the commitlog dispatcher has built every ConsumeQueue / IndexFile entry
    (segments has no dispatcher: returns at once); TimeoutError if it never catches up."""
    deadline = time.monotonic() + timeout
    while store.stats().get("dispatch_lag", 0) > 0:
        if time.monotonic() > deadline:
            raise TimeoutError(f"dispatch_lag still {store.stats()['dispatch_lag']} after "
                               f"{timeout:.0f} s")
        time.sleep(0.0002)


class Fixtures:
    """Temporary directories and filled stores shared by rows; :meth:`close` removes them."""

    def __init__(self, base: str | None):
        self.root = tempfile.mkdtemp(prefix="mqstore-perf-", dir=base)
        self._made: dict[str, Any] = {}
        self._closers: list[Callable[[], None]] = []
        self._n = 0

    def path(self, name: str) -> str:
        self._n += 1
        return os.path.join(self.root, f"{self._n:03d}-{name}")

    def get(self, key: str, make: Callable[[], Any], close: Callable[[Any], None] | None = None
            ) -> Any:
        if key not in self._made:
            obj = self._made[key] = make()
            if close is not None:
                self._closers.append(lambda: close(obj))
        return self._made[key]

    def close(self) -> None:
        for fn in reversed(self._closers):
            try:
                fn()
            except Exception:
                pass
        shutil.rmtree(self.root, ignore_errors=True)


# --------------------------------------------------------------------------- engine runs
def engine_append(engine: str, root: str, batches: list[list[bytes]], partitions: int,
                  *, unit: str = "messages", **options: Any) -> Sample:
    """``append_batch`` of every batch (batch j to partition j % partitions) into a fresh
    store; the first ``partitions`` batches untimed. Messages/s (or bytes/s)."""
    shutil.rmtree(root, ignore_errors=True)
    store = mqstore.open(root, engine, flush="os", **options)
    try:
        store.create_topic(TOPIC, partitions)
        warm = warm_batches(partitions, batches)
        for j in range(warm):
            store.append_batch(TOPIC, batches[j], partition=j % partitions)
        settle(store)
        append_batch = store.append_batch
        n = nbytes = 0
        t0 = time.perf_counter()
        for j in range(warm, len(batches)):
            append_batch(TOPIC, batches[j], partition=j % partitions)
            n += len(batches[j])
        settle(store)
        el = time.perf_counter() - t0
        total = sum(store.end_offset(TOPIC, p) for p in range(partitions))
        if total != sum(map(len, batches)):
            raise AssertionError(f"{engine} holds {total} records, appended "
                                 f"{sum(map(len, batches))}")
        nbytes = sum(len(v) for b in batches[warm:] for v in b)
    finally:
        store.close()
        shutil.rmtree(root, ignore_errors=True)
    rate = (nbytes if unit == "bytes" else n) / el
    return Sample(rate, {"messages": n, "bytes": nbytes, "seconds": el})


def engine_single(engine: str, root: str, vals: list[bytes]) -> Sample:
    """One ``append(topic, value)`` per message into a fresh one-partition store."""
    shutil.rmtree(root, ignore_errors=True)
    store = mqstore.open(root, engine, flush="os")
    try:
        store.create_topic(TOPIC, 1)
        store.append(TOPIC, vals[0])
        settle(store)
        append = store.append
        t0 = time.perf_counter()
        for v in vals[1:]:
            append(TOPIC, v)
        settle(store)
        el = time.perf_counter() - t0
        if store.end_offset(TOPIC, 0) != len(vals):
            raise AssertionError(f"{engine}: end offset {store.end_offset(TOPIC, 0)}, "
                                 f"appended {len(vals)}")
    finally:
        store.close()
        shutil.rmtree(root, ignore_errors=True)
    return Sample((len(vals) - 1) / el, {"messages": len(vals) - 1, "seconds": el})


def filled_store(engine: str, root: str, vals: list[bytes]) -> Any:
    store = mqstore.open(root, engine, flush="os")
    store.create_topic(TOPIC, 1)
    for b in batches_of(vals, BATCH):
        store.append_batch(TOPIC, b, partition=0)
    store.flush()
    settle(store)
    return store


def read_columnar(store: Any, expect: int, expect_bytes: int) -> Sample:
    """Sequential ``read`` using the columns only: ``offsets`` and ``value_buffer`` (and
    ``value_sizes`` for the byte count). Records/s."""
    read = store.read
    n = nbytes = off = 0
    t0 = time.perf_counter()
    while True:
        recs = read(TOPIC, 0, off)
        offsets = recs.offsets
        if not len(offsets):
            break
        buf = recs.value_buffer
        if not len(buf):
            raise AssertionError("empty value_buffer")
        n += len(offsets)
        nbytes += int(recs.value_sizes.sum())
        off = int(offsets[-1]) + 1
    el = time.perf_counter() - t0
    if n != expect or nbytes != expect_bytes:
        raise AssertionError(f"columnar read got {n} records / {nbytes} B, expected "
                             f"{expect} / {expect_bytes}")
    return Sample(n / el, {"messages": n, "bytes": nbytes, "seconds": el})


def read_iterate(store: Any, expect: int, expect_bytes: int) -> Sample:
    """Sequential ``read`` iterating ``Record`` objects and touching ``.value``."""
    read = store.read
    n = nbytes = off = 0
    t0 = time.perf_counter()
    while True:
        recs = read(TOPIC, 0, off)
        if not recs:
            break
        r = None
        for r in recs:
            nbytes += len(r.value)
        n += len(recs)
        off = r.offset + 1
    el = time.perf_counter() - t0
    if n != expect or nbytes != expect_bytes:
        raise AssertionError(f"record read got {n} records / {nbytes} B, expected "
                             f"{expect} / {expect_bytes}")
    return Sample(n / el, {"messages": n, "bytes": nbytes, "seconds": el})


def engine_sync_threads(engine: str, root: str, value: bytes, threads: int,
                        seconds: float) -> Sample:
    """``threads`` threads doing single ``append``s with ``flush="sync"`` to one partition
    for ``seconds``; messages/s, with fsyncs per message from ``stats()``."""
    shutil.rmtree(root, ignore_errors=True)
    store = mqstore.open(root, engine, flush="sync")
    try:
        store.create_topic(TOPIC, 1)
        store.append(TOPIC, value, partition=0)
        counts = [0] * threads
        start = threading.Barrier(threads + 1)
        deadline = [0.0]
        errors: list[BaseException] = []

        def body(i: int) -> None:
            append = store.append
            start.wait()
            n = 0
            try:
                while time.perf_counter() < deadline[0]:
                    append(TOPIC, value, partition=0)
                    n += 1
            except BaseException as exc:  # reported below
                errors.append(exc)
            counts[i] = n

        ths = [threading.Thread(target=body, args=(i,)) for i in range(threads)]
        for t in ths:
            t.start()
        f0 = store.stats()["fsyncs"]
        t0 = time.perf_counter()
        deadline[0] = t0 + seconds
        start.wait()
        for t in ths:
            t.join()
        el = time.perf_counter() - t0
        fsyncs = store.stats()["fsyncs"] - f0
        if errors:
            raise errors[0]
    finally:
        store.close()
        shutil.rmtree(root, ignore_errors=True)
    n = sum(counts)
    return Sample(n / el, {"messages": n, "fsyncs": fsyncs,
                           "fsyncs_per_msg": fsyncs / max(1, n), "seconds": el})


def transfer(store: Any, receiver: Any, end: int) -> Sample:
    """``transfer_to`` from offset 0 to ``end`` in 1 MiB calls over loopback; bytes/s."""
    sock = receiver.connect()
    total = off = 0
    t0 = time.perf_counter()
    while off < end:
        sent, off = store.transfer_to(sock, TOPIC, 0, off, CHUNK)
        total += sent
    received = receiver.finish(sock)
    el = time.perf_counter() - t0
    if received != total:
        raise AssertionError(f"receiver got {received} B, transfer_to sent {total}")
    return Sample(total / el, {"bytes": total, "seconds": el})


def send_reference(receiver: Any, paths: list[str], nbytes: int, use_mmap: bool) -> Sample:
    sock = receiver.connect()
    t0 = time.perf_counter()
    sent = refs.send_files(sock, paths, nbytes, use_mmap=use_mmap)
    received = receiver.finish(sock)
    el = time.perf_counter() - t0
    if received != sent or sent != nbytes:
        raise AssertionError(f"reference sent {sent} B of {nbytes}, receiver got {received}")
    return Sample(sent / el, {"bytes": sent, "seconds": el})


def log_files(engine: str, root: str) -> list[str]:
    """The data files ``transfer_to`` sends from, in log order (partition 0 of ``t``)."""
    if engine == "segments":
        return sorted(glob.glob(os.path.join(root, f"{TOPIC}-0", "*.log")))
    return sorted(glob.glob(os.path.join(root, "commitlog", "*")))


def p5_run(engine: str, fx: Fixtures, value: bytes, seconds: float):
    """P5 through ``benchmarks/group_commit.py`` (the group-commit work's own measurement,
    interleaved there) when it is importable, else through :func:`engine_sync_threads` and
    :func:`refs.fdatasync_threads` (the same definition: 100 B appends, one partition)."""
    def run(repeat: int) -> tuple[list[Sample], list[Sample]]:
        try:
            from group_commit import measure
        except ImportError:
            measure = None
        if measure is None:
            return interleave(
                repeat,
                lambda: engine_sync_threads(engine, fx.path(engine), value, 8, seconds),
                lambda: refs.fdatasync_threads(fx.path("fdatasync"), value, 8, seconds))
        got = measure(engine, threads=8, seconds=seconds, partitions=1, rounds=repeat,
                      root=fx.root)
        per = got["fsyncs_per_message"]
        es = [Sample(r, {"fsyncs_per_msg": per, "via": "group_commit.measure"})
              for r in got["engine_rates"]]
        return es, [Sample(r) for r in got["reference_rates"]]
    return run


def p5_fsyncs(samples: list[Sample]) -> tuple[bool, str]:
    """P5's second condition: at most 0.2 fsyncs per message over the engine runs."""
    if samples and "fsyncs" in samples[0].extra:
        per = sum(s.extra["fsyncs"] for s in samples) / max(
            1, sum(s.extra["messages"] for s in samples))
    else:
        per = samples[0].extra["fsyncs_per_msg"] if samples else float("nan")
    return per <= 0.2, f"{per:.3f} fsyncs/msg (goal <= 0.2)"


# --------------------------------------------------------------------------- rows
def build_rows(engines: list[str], fx: Fixtures, sz: Sizes, p9_mib: float) -> list[Row]:
    rows: list[Row] = []
    v100 = values(sz.p1_messages, 100)
    b100 = batches_of(v100, BATCH)
    v1k = values(sz.p2_batches * BATCH, 1024)
    b1k = batches_of(v1k, BATCH)
    reads = values(sz.p4_messages, 100)
    reads_bytes = sum(map(len, reads))
    lmdb_missing = None if refs.lmdb is not None else (
        "py-lmdb is not installed (pip install 'mqstore[bench]' or pip install lmdb)")

    def sqlite_db() -> str:
        def make():
            p = fx.path("sqlite-read.db")
            refs.sqlite_fill(p, reads)
            return p
        return fx.get("sqlite-read", make)

    def lmdb_db() -> str:
        def make():
            p = fx.path("lmdb-read")
            refs.lmdb_append(p, batches_of(reads, BATCH))
            return p
        return fx.get("lmdb-read", make)

    for engine in engines:
        def store_for_reads(engine=engine):
            return fx.get(f"read-{engine}", lambda: filled_store(
                engine, fx.path(f"{engine}-read"), reads), lambda s: s.close())

        def p1(parts, engine=engine):
            def run(repeat):
                return interleave(
                    repeat,
                    lambda: engine_append(engine, fx.path(engine), b100, parts),
                    lambda: refs.sqlite_append(fx.path("sqlite.db"), b100, parts,
                                               warm_batches(parts, b100)))
            return run

        for parts in (1, 10):
            rows.append(Row(f"P1 {parts}p", engine,
                            f"append_batch of 1,000 x 100 B, flush=os, {parts} partition"
                            f"{'s' if parts > 1 else ''}",
                            "sqlite3 WAL executemany, synchronous=OFF", "msg/s", 3.0,
                            p1(parts)))

        def p2(repeat, engine=engine):
            return interleave(
                repeat,
                lambda: engine_append(engine, fx.path(engine), b1k, 1, unit="bytes"),
                lambda: refs.raw_write(fx.path("raw"), b1k, 1, warm_batches(1, b1k)))
        rows.append(Row("P2", engine, "append_batch of 1,000 x 1 KiB, flush=os",
                        "os.write of the same bytes to a new file", "B/s", 0.8, p2))

        def p3(repeat, engine=engine):
            vals = v100[:sz.p3_messages]
            return interleave(
                repeat,
                lambda: engine_single(engine, fx.path(engine), vals),
                lambda: refs.sqlite_append(fx.path("sqlite.db"), batches_of(vals, BATCH), 1,
                                           warm_batches(1, batches_of(vals, BATCH))))
        rows.append(Row("P3", engine, "single append(topic, value) of 100 B",
                        "sqlite3 WAL executemany of 1,000 rows, synchronous=OFF",
                        "msg/s", 0.6, p3))

        def p4(reader, reference):
            def run(repeat, engine=engine):
                store = store_for_reads(engine)
                return interleave(repeat, lambda: reader(store, len(reads), reads_bytes),
                                  reference)
            return run

        def sqlite_scan():
            return refs.sqlite_scan(sqlite_db(), len(reads))

        rows.append(Row("P4a", engine, "sequential read(), columnar (offsets + value_buffer)",
                        "sqlite3 full scan in id order", "rec/s", 3.0,
                        p4(read_columnar, sqlite_scan)))
        rows.append(Row("P4b", engine, "sequential read(), iterating Records, touching .value",
                        "sqlite3 full scan in id order", "rec/s", 1.0,
                        p4(read_iterate, sqlite_scan)))

        rows.append(Row("P5", engine, "flush=sync, 8 threads, single append(), 1 partition",
                        "8 threads doing write + fdatasync each (own file)", "msg/s", 1.5,
                        p5_run(engine, fx, v100[0], sz.p5_seconds), extra_check=p5_fsyncs))

        if engine == "commitlog":
            b6 = batches_of(values(sz.p6_messages, 100), sz.p6_batch)
            hi = sz.p6_partitions

            def p6(repeat, engine=engine):
                return interleave(
                    repeat,
                    lambda: engine_append(engine, fx.path(engine), b6, hi),
                    lambda: engine_append(engine, fx.path(engine), b6, 1))
            rows.append(Row("P6", engine,
                            f"append_batch of {sz.p6_batch} x 100 B over {hi} partitions",
                            "the same engine at 1 partition", "msg/s", 0.8, p6))

        def p7(repeat, engine=engine):
            from mqstore.bench.probes import Receiver

            def make():
                path = fx.path(f"{engine}-transfer")
                return path, filled_store(engine, path, values(sz.p7_messages, 100))
            path, store = fx.get(f"transfer-{engine}", make, lambda ps: ps[1].close())
            end = store.end_offset(TOPIC, 0)
            receiver = Receiver(connections=2 * repeat)
            try:
                sent = []

                def eng():
                    s = transfer(store, receiver, end)
                    sent.append(s.extra["bytes"])
                    return s
                return interleave(repeat, eng, lambda: send_reference(
                    receiver, log_files(engine, path), sent[-1], engine == "commitlog"))
            finally:
                receiver.close()
        rows.append(Row("P7", engine, "transfer_to over loopback, 1 MiB calls, 100 B records",
                        "os.sendfile of the same bytes" if engine == "segments"
                        else "send of 1 MiB slices of the mapped CommitLog", "B/s", 0.8, p7))

        def p9(repeat, engine=engine):
            def make():
                path = fx.path(f"{engine}-crashed")
                return path, crash.crash_image(path, engine, p9_mib)
            image, records = fx.get(f"crash-{engine}", make)
            work = fx.path(f"{engine}-reopen")

            def eng():
                crash.copy_image(image, work)
                return crash.reopen(work, engine, records)
            return interleave(repeat, eng, lambda: refs.read_directory(image))
        rows.append(Row("P9", engine, f"reopen after SIGKILL of a {p9_mib:g} MiB store "
                        "(100 B records, flushed, 1,000 unflushed)",
                        "one sequential read of its files (data regions)", "s", 2.0, p9,
                        lower=True))

        def l1(repeat, engine=engine):
            return interleave(repeat, lambda: engine_append(engine, fx.path(engine), b100, 1),
                              lambda: refs.lmdb_append(fx.path("lmdb"), b100,
                                                             warm_batches(1, b100)))
        rows.append(Row("L1", engine, "append_batch of 1,000 x 100 B, flush=os, 1 partition",
                        "LMDB putmulti(append) of 1,000 per txn, sync=False", "msg/s", 1.0,
                        l1, enforced=False, skipped=lmdb_missing))

        def lmdb_scan():
            return refs.lmdb_scan(lmdb_db(), len(reads))
        rows.append(Row("L2", engine, "sequential read(), columnar (offsets + value_buffer)",
                        "LMDB cursor scan touching each value", "rec/s", 1.0,
                        p4(read_columnar, lmdb_scan), enforced=False, skipped=lmdb_missing))
        rows.append(Row("L3", engine, "sequential read(), iterating Records, touching .value",
                        "LMDB cursor scan touching each value", "rec/s", 1.0,
                        p4(read_iterate, lmdb_scan), enforced=False, skipped=lmdb_missing))
    return rows
