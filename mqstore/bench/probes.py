"""The suites that call Store methods directly: delivery, catchup, lookup, tags, recovery.

Each fills a store (fresh directory, seeded payloads) through ``append_batch``, then measures
one operation of the contract: ``transfer_to`` against ``read`` + ``sendall`` over a loopback
socket to a receiver process, cold ``read`` after page eviction, ``lookup_key`` and
``offset_for_time``, ``read(tags=...)``, and ``mqstore.open`` after a crash. References take
part where they have an equivalent (a raw file's ``sendfile``, sqlite's indexed queries).
"""
from __future__ import annotations

import multiprocessing
import os
import random
import shutil
import socket
import struct
import time
from typing import Any

import mqstore
from mqstore.api import Message
from mqstore.bench.metrics import ResourceSnapshot
from mqstore.bench.payloads import PayloadSource
from mqstore.bench.references import RawFileTarget, SqliteTarget
from mqstore.bench.runner import evict_files
from mqstore.bench.targets import open_engine, parse_engine_spec
from mqstore.bench.suites import (Column, Row, SuiteContext, SuiteResult, Verdict,
                                  _engine_pair, ratio, register, SUITES)
from mqstore.bench.workload import Workload
from mqstore.errors import UnsupportedOperation

COUNT = struct.Struct("<q")
LOOPBACK = "127.0.0.1"
RECEIVER_TIMEOUT_S = 30.0


def _fill(store: Any, topic: str, parts: int, n: int, size: int, batch: int,
          seed: int, *, keys: bool = False, tags: list[str] | None = None,
          tag_ratio: float = 0.0) -> PayloadSource:
    """Append ``n`` seeded messages in batches (round-robin partitions unless keyed)."""
    wl = Workload(name="fill", partitionsPerTopic=parts, messageSize=size, seed=seed,
                  keyDistributor="KEY_ROUND_ROBIN" if keys else "NO_KEY",
                  tags=list(tags or []), tag_ratio=tag_ratio)
    src = PayloadSource(wl)
    if topic not in store_topics(store):
        store.create_topic(topic, parts)
    for start in range(0, n, batch):
        msgs = [Message(src.payload(i), key=src.key(i), tag=src.tag(i))
                for i in range(start, min(n, start + batch))]
        if isinstance(store, (RawFileTarget, SqliteTarget)):
            store.produce(topic, msgs)
        else:
            store.append_batch(topic, msgs)
    return src


def store_topics(store: Any) -> list[str]:
    if isinstance(store, (RawFileTarget, SqliteTarget)):
        return list(store._counts)
    return store.topics()


def _open(ctx: SuiteContext, engine: str, path: str, **options: Any):
    """Open an engine (or an engine variant ``name[option=value]``) at ``path``."""
    return open_engine(engine, path, **options)


# =========================================================================== delivery
def _receiver(port_queue, connections: int, timeout: float) -> None:
    """Receiver process: accept ``connections`` connections on 127.0.0.1, read each to EOF
    and answer with the byte count (8 bytes)."""
    srv = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    srv.bind((LOOPBACK, 0))
    srv.listen(1)
    srv.settimeout(timeout)
    port_queue.put(srv.getsockname()[1])
    buf = bytearray(1 << 20)
    try:
        for _ in range(connections):
            conn, _addr = srv.accept()
            conn.settimeout(timeout)
            total = 0
            with conn:
                while True:
                    n = conn.recv_into(buf)
                    if not n:
                        break
                    total += n
                conn.sendall(COUNT.pack(total))
    except OSError:
        pass
    finally:
        srv.close()


class Receiver:
    """A receiver process on 127.0.0.1 that counts bytes per connection (bounded in time)."""

    def __init__(self, connections: int, timeout: float = RECEIVER_TIMEOUT_S):
        mp = multiprocessing.get_context("spawn")
        q = mp.Queue()
        self.proc = mp.Process(target=_receiver, args=(q, connections, timeout), daemon=True)
        self.proc.start()
        self.port = q.get(timeout=timeout)

    def connect(self) -> socket.socket:
        """A blocking connection (``os.sendfile`` needs one: a socket with a timeout is
        non-blocking underneath). The receiver's own timeout bounds a stalled transfer."""
        s = socket.create_connection((LOOPBACK, self.port), timeout=RECEIVER_TIMEOUT_S)
        s.settimeout(None)
        return s

    @staticmethod
    def finish(sock: socket.socket) -> int:
        """Half-close, then read the receiver's byte count."""
        sock.shutdown(socket.SHUT_WR)
        data = b""
        while len(data) < COUNT.size:
            chunk = sock.recv(COUNT.size - len(data))
            if not chunk:
                break
            data += chunk
        sock.close()
        return COUNT.unpack(data)[0] if len(data) == COUNT.size else -1

    def close(self) -> None:
        self.proc.join(timeout=5)
        if self.proc.is_alive():
            self.proc.terminate()
            self.proc.join(timeout=5)


def _deliver(receiver: Receiver, send) -> dict[str, float]:
    sock = receiver.connect()
    snap = ResourceSnapshot.take()
    sent, payload = send(sock)
    received = Receiver.finish(sock)
    d = ResourceSnapshot.take().delta(snap)
    wall = d["wall_s"] or 1e-9
    cpu = d["cpu_user_s"] + d["cpu_sys_s"]
    return {"mb_s": payload / 2**20 / wall, "wire_mb_s": sent / 2**20 / wall,
            "cpu_s_per_gb": cpu / max(1, payload) * 2**30, "sent": sent,
            "received": received, "ok": "yes" if received == sent else "NO"}


@register(
    "delivery",
    "Kafka delivers with sendfile of the file region (zero-copy); RocketMQ copies mmap slices "
    "message by message. transfer_to beats read()+sendall, and sendfile beats mmap slices.",
    lambda ctx: len(ctx.engines) + (1 if "raw-files" in ctx.references else 0),
)
def delivery_suite(ctx: SuiteContext) -> SuiteResult:
    res = SuiteResult("delivery", SUITES["delivery"].claim, [
        Column("mb_s", "payload MiB/s", "{:,.1f}", ratio=True),
        Column("wire_mb_s", "wire MiB/s", "{:,.1f}"),
        Column("cpu_s_per_gb", "CPU s/GiB", "{:.2f}"), Column("ok", "bytes ok", "{}"),
    ])
    n = ctx.n(8192, 32768, 131072)  # 1 KiB messages: 8, 32, 128 MiB
    size, chunk = 1024, 1 << 20
    targets = list(ctx.engines) + (["raw-files"] if "raw-files" in ctx.references else [])
    receiver = Receiver(connections=2 * len(targets))
    try:
        for target in targets:
            ctx.step(f"delivery {target}")
            with ctx.tempdir("delivery") as d:
                if target == "raw-files":
                    store = RawFileTarget(d, "os", 1000, shared=False)
                else:
                    store = _open(ctx, target, d)
                try:
                    _fill(store, "t", 1, n, size, 256, ctx.seed)
                    store.flush()
                    if target == "raw-files":
                        path = os.path.join(d, "t-0.raw")

                        def zero(sock, path=path):
                            fd = os.open(path, os.O_RDONLY)
                            try:
                                total, end = 0, os.fstat(fd).st_size
                                while total < end:
                                    total += os.sendfile(sock.fileno(), fd, total,
                                                         min(chunk, end - total))
                            finally:
                                os.close(fd)
                            return total, n * size

                        def copy(sock, store=store):
                            total = pos = 0
                            while True:
                                vals, pos = store.poll("t", 0, pos, 1024)
                                if not vals:
                                    return total, total
                                data = b"".join(vals)
                                sock.sendall(data)
                                total += len(data)
                    else:
                        def zero(sock, store=store):
                            total = off = 0
                            while off < n:
                                sent, off = store.transfer_to(sock, "t", 0, off, chunk)
                                total += sent
                            return total, n * size

                        def copy(sock, store=store):
                            total = off = 0
                            while off < n:
                                recs = store.read("t", 0, off, max_records=1024,
                                                  max_bytes=chunk)
                                data = b"".join(recs.values())
                                sock.sendall(data)
                                total += len(data)
                                off = int(recs.offsets[-1]) + 1
                            return total, total

                    label = "sendfile" if target == "raw-files" else "transfer_to"
                    for case, fn in ((label, zero), ("read+sendall", copy)):
                        vals = _deliver(receiver, fn)
                        res.rows.append(Row(case, target, "reference" if target == "raw-files"
                                            else "engine", vals))
                finally:
                    store.close()
    finally:
        receiver.close()
    parts = []
    for t in ctx.engines:
        z, c = res.value("transfer_to", t, "mb_s"), res.value("read+sendall", t, "mb_s")
        if z and c:
            parts.append(f"{t}: transfer_to/read+sendall x{z / c:.2f}")
    pair = _engine_pair(ctx)
    if pair:
        zs, zc = res.value("transfer_to", pair[0], "mb_s"), res.value("transfer_to", pair[1],
                                                                       "mb_s")
        cs, cc = (res.value("transfer_to", pair[0], "cpu_s_per_gb"),
                  res.value("transfer_to", pair[1], "cpu_s_per_gb"))
        if zs and zc:
            parts.append(f"segments/commitlog transfer_to x{zs / zc:.2f} "
                         f"(CPU s/GiB {cs:.2f} vs {cc:.2f})")
            res.verdict = Verdict(zs > zc, "; ".join(parts))
            return res
    res.verdict = Verdict(None, "; ".join(parts) or "needs both engines")
    return res


# =========================================================================== catchup
@register(
    "catchup",
    "A consumer catching up on one partition reads only that partition's files in Kafka; in "
    "RocketMQ the CommitLog interleaves every partition, so a cold catch-up reads pages of all "
    "of them (read amplification), and cold reads are slower than tailing reads.",
    lambda ctx: len(ctx.engines) + len([r for r in ctx.references if r.startswith("raw")]),
)
def catchup_suite(ctx: SuiteContext) -> SuiteResult:
    res = SuiteResult("catchup", SUITES["catchup"].claim, [
        Column("mb_s", "MiB/s", "{:,.1f}", ratio=True),
        Column("disk_read_mb", "disk read MiB", "{:,.2f}"),
        Column("read_amp", "disk read/consumed", "{:.2f}"),
    ])
    parts, n, size = 16, ctx.n(8192, 32768, 131072), 1024
    targets = list(ctx.engines) + [r for r in ctx.references if r.startswith("raw")]
    for target in targets:
        ctx.step(f"catchup {target}")
        with ctx.tempdir("catchup") as d:
            store = _catchup_store(ctx, target, d)
            try:
                _fill(store, "t", parts, n, size, 1, ctx.seed)
                store.flush()
                if isinstance(store, RawFileTarget):
                    evict_files(store.files())
                else:
                    # close, evict, and reopen as a read-only follower (no recovery scan); evict
                    # again what opening touched: pages an engine keeps mapped and touched
                    # cannot be evicted (the verdict reports when no disk reads show up)
                    store.close()
                    evict_files(_walk(d))
                    store = _open(ctx, target, d, read_only=True)
                    evict_files(_walk(d))
                for case in ("cold (evicted)", "hot (cached)"):
                    snap = ResourceSnapshot.take()
                    consumed = _read_partition(store, "t", 0)
                    dd = ResourceSnapshot.take().delta(snap)
                    rb = dd["disk_read_bytes"]
                    res.rows.append(Row(case, target, "reference" if target.startswith("raw")
                                        else "engine", {
                        "mb_s": consumed / 2**20 / max(dd["wall_s"], 1e-9),
                        "disk_read_mb": None if rb is None else rb / 2**20,
                        "read_amp": ratio(rb, consumed),
                    }))
            finally:
                store.close()
    amps = {t: res.value("cold (evicted)", t, "read_amp") for t in targets}
    detail = ", ".join(f"{t} {a:.2f}" for t, a in amps.items() if a is not None)
    pair = _engine_pair(ctx)
    if pair and amps.get(pair[0]) is not None and amps.get(pair[1]) is not None:
        if not any(amps.values()):
            res.verdict = Verdict(None, "no disk reads seen: eviction had no effect here "
                                        f"(read amplification {detail})")
        else:
            res.verdict = Verdict(amps[pair[1]] > amps[pair[0]] * 1.5,
                                  f"cold read of 1 of {parts} partitions, disk bytes read per "
                                  f"byte consumed: {detail}")
    else:
        res.verdict = Verdict(None, f"needs both engines; {detail}")
    return res


def _catchup_store(ctx: SuiteContext, target: str, d: str):
    if target == "raw-files":
        return RawFileTarget(d, "os", 1000, shared=False)
    if target == "raw-shared":
        return RawFileTarget(d, "os", 1000, shared=True)
    return _open(ctx, target, d)


def _walk(d: str) -> list[str]:
    return [os.path.join(r, f) for r, _ds, fs in os.walk(d) for f in fs]


def _read_partition(store: Any, topic: str, partition: int) -> int:
    consumed = pos = 0
    if isinstance(store, RawFileTarget):
        while True:
            vals, pos = store.poll(topic, partition, pos, 500)
            if not vals:
                return consumed
            consumed += sum(len(v) for v in vals)
    while True:
        recs = store.read(topic, partition, pos, max_records=500)
        if not len(recs):
            return consumed
        consumed += recs.total_value_bytes  # the columns: no Record made
        pos = int(recs.offsets[-1]) + 1


# =========================================================================== lookup
@register(
    "lookup",
    "RocketMQ's IndexFile answers key lookups through hash slots; Kafka has no key index (a "
    "scan, or unsupported). Both answer time lookups from an index.",
    lambda ctx: len(ctx.engines) + (1 if "sqlite-wal" in ctx.references else 0),
)
def lookup_suite(ctx: SuiteContext) -> SuiteResult:
    res = SuiteResult("lookup", SUITES["lookup"].claim, [
        Column("per_s", "lookups/s", "{:,.0f}", ratio=True),
        Column("us", "µs/lookup", "{:,.1f}"), Column("found", "found", "{}"),
    ])
    n, q, parts = ctx.n(4000, 20000, 100000), ctx.n(100, 300, 1000, 8), 4
    targets = list(ctx.engines) + (["sqlite-wal"] if "sqlite-wal" in ctx.references else [])
    for target in targets:
        ctx.step(f"lookup {target}")
        with ctx.tempdir("lookup") as d:
            store = (SqliteTarget(d, "os", 1000, index_keys=True) if target == "sqlite-wal"
                     else _open(ctx, target, d))
            kind = "reference" if target == "sqlite-wal" else "engine"
            try:
                t_before = mqstore.api.now_ms()
                src = _fill(store, "t", parts, n, 256, 64, ctx.seed, keys=True)
                t_after = mqstore.api.now_ms()
                rng = random.Random(ctx.seed)
                keys = [src.key(rng.randrange(n)) for _ in range(q)]
                found, err = 0, None
                try:  # one untimed lookup of each kind pays lazy set-up (index maps)
                    store.lookup_key("t", keys[0], limit=1)
                except UnsupportedOperation:
                    pass
                store.offset_for_time("t", 0, t_before)
                t0 = time.perf_counter()
                try:
                    for k in keys:
                        found += bool(store.lookup_key("t", k, limit=4))
                    el = time.perf_counter() - t0
                    res.rows.append(Row("key", target, kind, {
                        "per_s": q / el, "us": el / q * 1e6, "found": f"{found}/{q}"}))
                except UnsupportedOperation as exc:
                    err = str(exc)
                    res.rows.append(Row("key", target, kind, {
                        "per_s": None, "us": None, "found": "unsupported"}))
                    res.notes.append(f"{target} lookup_key: {err}")
                stamps = [rng.randint(t_before, t_after) for _ in range(q)]
                found = 0
                t0 = time.perf_counter()
                for i, ts in enumerate(stamps):
                    found += store.offset_for_time("t", i % parts, ts) is not None
                el = time.perf_counter() - t0
                res.rows.append(Row("time", target, kind, {
                    "per_s": q / el, "us": el / q * 1e6, "found": f"{found}/{q}"}))
            finally:
                store.close()
    pair = _engine_pair(ctx)
    if pair:
        ks, kc = res.value("key", pair[0], "per_s"), res.value("key", pair[1], "per_s")
        if kc and not ks:
            res.verdict = Verdict(True, f"commitlog {kc:,.0f} key lookups/s; segments has no "
                                  "key index (unsupported)")
        elif kc and ks:
            res.verdict = Verdict(kc > ks * 2, f"key lookups/s: commitlog {kc:,.0f}, segments "
                                  f"{ks:,.0f} (x{kc / ks:.1f})")
        else:
            res.verdict = Verdict(None, "no key lookup figures")
    else:
        res.verdict = Verdict(None, "needs both engines")
    return res


# =========================================================================== tags
TAG_RATIOS = (0.01, 0.10, 0.50)


@register(
    "tags",
    "RocketMQ filters by the tag hash kept in the ConsumeQueue and never reads CommitLog "
    "bodies for misses, so a selective subscription is cheap; Kafka decodes every record.",
    lambda ctx: (len(ctx.engines) + (1 if "sqlite-wal" in ctx.references else 0))
    * len(TAG_RATIOS),
)
def tags_suite(ctx: SuiteContext) -> SuiteResult:
    res = SuiteResult("tags", SUITES["tags"].claim, [
        Column("scan_s", "scanned msg/s", "{:,.0f}", ratio=True),
        Column("ms", "ms to filter", "{:,.1f}"), Column("matched", "matched", "{}"),
    ], plot_x="selectivity")
    n, size = ctx.n(6000, 30000, 120000, 200), 512
    targets = list(ctx.engines) + (["sqlite-wal"] if "sqlite-wal" in ctx.references else [])
    for sel in TAG_RATIOS:
        for target in targets:
            ctx.step(f"tags {sel:.0%} {target}")
            with ctx.tempdir("tags") as d:
                store = (SqliteTarget(d, "os", 1000) if target == "sqlite-wal"
                         else _open(ctx, target, d))
                kind = "reference" if target == "sqlite-wal" else "engine"
                try:
                    src = _fill(store, "t", 1, n, size, 64, ctx.seed, tags=["A", "B"],
                                tag_ratio=sel)
                    expected = sum(1 for i in range(n) if src.tag(i) == "A")
                    el = float("inf")
                    for _attempt in range(2):  # best of two: the first pays lazy set-up
                        t0 = time.perf_counter()
                        matched = _filter_tag(store, "A")
                        el = min(el, time.perf_counter() - t0)
                    res.rows.append(Row(f"{sel:.0%} tagged", target, kind, {
                        "scan_s": n / el, "ms": el * 1e3,
                        "matched": f"{matched}/{expected}" + ("" if matched == expected
                                                              else " WRONG")},
                        params={"selectivity": sel * 100}))
                finally:
                    store.close()
    pair = _engine_pair(ctx)
    if pair:
        s, c = res.value("1% tagged", pair[0], "ms"), res.value("1% tagged", pair[1], "ms")
        if s and c:
            res.verdict = Verdict(c < s, f"filtering 1% of {n}: commitlog {c:.1f} ms, "
                                  f"segments {s:.1f} ms (x{s / c:.1f})")
            return res
    res.verdict = Verdict(None, "needs both engines")
    return res


def _filter_tag(store: Any, tag: str) -> int:
    """Read partition 0 of topic ``t`` keeping only ``tag``; return the matches."""
    if isinstance(store, SqliteTarget):
        return store.read_tagged("t", 0, {tag})
    matched = pos = 0
    while True:
        recs = store.read("t", 0, pos, max_records=500, tags={tag})
        if not len(recs):
            return matched
        matched += len(recs)
        pos = int(recs.offsets[-1]) + 1


# =========================================================================== recovery
RECOVERY_OPTIONS = {"segments": {"segment_bytes": 1 << 20},
                    "commitlog": {"mapped_file_size": 1 << 20}}


#: RocketMQ rescans from the newest CommitLog file older than the checkpoint minus 3 s; the
#: writer lets the bulk of the log age past that margin, as it would in a long-lived broker
CHECKPOINT_MARGIN_S = 3.0
RECENT_MESSAGES = 256
TAIL_MESSAGES = 64


def _crash_writer(engine: str, path: str, options: dict, n: int, size: int, seed: int,
                  clean: bool) -> None:
    """Child process: write ``n`` messages (the log), then, after the checkpoint margin, a
    recent flushed part and an unflushed tail, and die without closing (or close cleanly)."""
    store = mqstore.open(path, engine=engine, **options)
    _fill(store, "t", 4, n, size, 64, seed)
    store.flush()
    if clean:
        store.close()
        os._exit(0)
    time.sleep(CHECKPOINT_MARGIN_S + 0.5)
    _fill(store, "t", 4, RECENT_MESSAGES, size, 64, seed + 1)
    store.flush()
    time.sleep(1.5)  # background checkpoint / recovery-point writers catch up
    _fill(store, "t", 4, TAIL_MESSAGES, size, 64, seed + 2)  # an unflushed tail
    os._exit(0)  # a crash: no close, no clean-shutdown marker


@register(
    "recovery",
    "After a crash Kafka re-validates only segments past the recovery point and RocketMQ "
    "re-scans the CommitLog from its checkpoint (minus 3 s), so reopen time is bounded by "
    "the recent part of the log, not its size.",
    lambda ctx: len(ctx.engines) * len(ctx.pick((1, 4), (4, 16, 64), (4, 16, 64, 256))) * 2,
)
def recovery_suite(ctx: SuiteContext) -> SuiteResult:
    res = SuiteResult("recovery", SUITES["recovery"].claim, [
        Column("reopen_ms", "reopen ms", "{:,.1f}", ratio=True),
        Column("records", "records", "{:,}"), Column("lost", "acked lost", "{}"),
    ], plot_x="log_mb")
    sizes_mb = ctx.pick((1, 4), (4, 16, 64), (4, 16, 64, 256))
    size = 1024
    mp = multiprocessing.get_context("spawn")
    with ctx.tempdir("recovery") as d:
        # every writer runs at once (their sleeps overlap); reopens are timed one by one
        jobs = []
        for engine in ctx.engines:
            base, variant = parse_engine_spec(engine)
            options = {**RECOVERY_OPTIONS.get(base, {}), **variant}
            try:
                mqstore.load_config(d, base, **options)
            except mqstore.ConfigError:
                options = variant
            for mb in sizes_mb:
                n = max(64, int(mb * 2**20 // size * ctx.scale))
                for clean in (False, True):
                    case = f"{mb} MiB " + ("clean" if clean else "crash")
                    path = os.path.join(d, f"{engine}-{mb}-{int(clean)}")
                    proc = mp.Process(target=_crash_writer,
                                      args=(base, path, options, n, size, ctx.seed, clean))
                    proc.start()
                    jobs.append((engine, options, mb, n, clean, case, path, proc))
        for engine in ctx.engines:  # untimed: the first open pays imports and lazy set-up
            warm = os.path.join(d, f"warm-{engine}")
            with open_engine(engine, warm) as store:
                _fill(store, "t", 4, 64, size, 64, ctx.seed)
            with open_engine(engine, warm) as store:
                store.read("t", 0, 0, max_records=1)
            shutil.rmtree(warm, ignore_errors=True)
        for job in jobs:  # every writer has exited before any reopen is timed
            job[-1].join(timeout=600)
        for engine, options, mb, n, clean, case, path, proc in jobs:
            ctx.step(f"recovery {case} {engine}")
            if proc.exitcode != 0:
                res.notes.append(f"{engine} {case}: writer exit code {proc.exitcode}")
                continue
            acked = n if clean else n + RECENT_MESSAGES
            t0 = time.perf_counter()
            store = mqstore.open(path, engine=parse_engine_spec(engine)[0], **options)
            try:
                total = sum(store.end_offset("t", p) for p in range(4))
                for p in range(4):  # the log is usable: read its last record
                    end = store.end_offset("t", p)
                    if end:
                        store.read("t", p, end - 1, max_records=1)
                el = time.perf_counter() - t0
            finally:
                store.close()
            shutil.rmtree(path, ignore_errors=True)
            res.rows.append(Row(case, engine, "engine", {
                "reopen_ms": el * 1e3, "records": total,
                "lost": "yes" if total < acked else "no"}, params={"log_mb": mb}))
    parts, verdicts = [], []
    lo, hi = sizes_mb[0], sizes_mb[-1]
    for engine in ctx.engines:
        a = res.value(f"{lo} MiB crash", engine, "reopen_ms")
        b = res.value(f"{hi} MiB crash", engine, "reopen_ms")
        if a and b:
            growth = b / a
            verdicts.append(growth < (hi / lo) / 2)
            parts.append(f"{engine}: crash reopen {a:.1f} ms at {lo} MiB -> {b:.1f} ms at "
                         f"{hi} MiB (x{growth:.1f} for x{hi / lo:.0f} data)")
    res.verdict = Verdict(all(verdicts) if verdicts else None, "; ".join(parts) or "no data")
    return res
