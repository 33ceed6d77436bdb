"""What every torture loop shares: the seeded workload, the self-checking record format, and
the checker that compares a reopened store with what was acknowledged.

A record is fully determined by ``(seed, seq)``: :func:`make_message` draws its topic,
partition, key, headers, tag, timestamp and body from ``random.Random(f"{seed}:{seq}")``.
The value starts with ``MQTV`` + ``seed`` + ``seq`` + a CRC-32 of the record's whole identity
(topic, partition, key, headers, tag, timestamp, body), so a record read back is checked
twice: against its own CRC, and against the record regenerated from its seed and seq. A
record that was never written, or was written elsewhere, or came back with a torn key,
header or tag, is therefore always detected (``wrong``), whatever the engine returns.

Only the public API is used (``mqstore.open``, ``Store``, ``mqstore.errors``), so every loop
runs unchanged against any registered engine.
"""
from __future__ import annotations

import hashlib
import os
import random
import struct
import sys
import zlib
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import mqstore
from mqstore.api import Message

#: small file sizes so that files roll (the same sizes as tests/contract/conftest.py SMALL)
SMALL: dict[str, dict[str, Any]] = {
    "segments": {"segment_bytes": 16 * 1024, "index_interval_bytes": 512,
                 "segment_index_bytes": 4096},
    "commitlog": {"mapped_file_size": 16 * 1024, "cq_units_per_file": 100,
                  "hash_slots": 64, "index_entries": 256},
}
ENGINES = ("segments", "commitlog")
FLUSH_MODES = ("sync", "async", "os")
#: the workload's topics and their partition counts
TOPICS = {"t0": 3, "t1": 2, "t2": 1}
BASE_TS = 1_700_000_000_000
MAGIC = b"MQTV"
HEAD = struct.Struct(">4sqqI")  # magic, seed, seq, crc32 of the identity
#: the largest body; below the small commitlog file size, so any record fits one file
MAX_BODY = 5000


def small_options(engine: str) -> dict[str, Any]:
    return dict(SMALL.get(engine, {}))


def sub_seed(*parts: object) -> int:
    """A 63-bit seed derived from ``parts`` (stable across runs and Python versions)."""
    h = hashlib.sha256(":".join(map(str, parts)).encode()).digest()
    return int.from_bytes(h[:8], "big") >> 1


@dataclass(frozen=True)
class Expected:
    """One record as the workload generated it (and as it must read back)."""

    seed: int
    seq: int
    topic: str
    partition: int
    key: bytes | None
    headers: dict[str, bytes]
    tag: str | None
    timestamp_ms: int
    value: bytes

    def message(self) -> Message:
        return Message(self.value, key=self.key, timestamp_ms=self.timestamp_ms,
                       headers=self.headers or None, tag=self.tag, partition=self.partition)


def _identity_crc(topic: str, partition: int, key: bytes | None, headers: dict[str, bytes],
                  tag: str | None, ts: int, body: bytes) -> int:
    ident = repr((topic, partition, key, sorted(headers.items()), tag, ts)).encode()
    return zlib.crc32(body, zlib.crc32(ident))


def make_message(seed: int, seq: int) -> Expected:
    """The record number ``seq`` of the workload ``seed``."""
    rng = random.Random(f"{seed}:{seq}")
    topic = rng.choice(sorted(TOPICS))
    partition = rng.randrange(TOPICS[topic])
    r = rng.random()
    if r < 0.2:
        key = None
    else:
        key = b"hot-%d" % rng.randrange(8) if r < 0.35 else b"k-%d-%d" % (seed, seq)
    headers: dict[str, bytes] = {}
    for i in range(rng.choice((0, 0, 1, 2, 3))):
        headers[f"h{i}"] = rng.randbytes(rng.randrange(0, 24))
    tag = None if rng.random() < 0.3 else f"tag{rng.randrange(5)}"
    size = rng.randrange(0, 300) if rng.random() < 0.9 else rng.randrange(300, MAX_BODY)
    body = rng.randbytes(size)
    ts = BASE_TS + seq * 10
    crc = _identity_crc(topic, partition, key, headers, tag, ts, body)
    value = HEAD.pack(MAGIC, seed, seq, crc) + body
    return Expected(seed, seq, topic, partition, key, headers, tag, ts, value)


def parse_value(value: bytes) -> tuple[int, int] | None:
    """``(seed, seq)`` of a workload value, or None if it is not one."""
    if len(value) < HEAD.size:
        return None
    magic, seed, seq, _ = HEAD.unpack_from(value)
    if magic != MAGIC:
        return None
    return seed, seq


def record_problem(rec: Any) -> str | None:
    """Why a record read back is not exactly a record the workload wrote, or None."""
    ids = parse_value(bytes(rec.value))
    if ids is None:
        return "value is not a workload value"
    exp = make_message(*ids)
    got = (rec.topic, rec.partition, rec.key, dict(rec.headers or {}), rec.tag,
           rec.timestamp_ms, bytes(rec.value))
    want = (exp.topic, exp.partition, exp.key, exp.headers, exp.tag, exp.timestamp_ms, exp.value)
    if got != want:
        names = ("topic", "partition", "key", "headers", "tag", "timestamp_ms", "value")
        bad = [n for n, a, b in zip(names, got, want) if a != b]
        return f"seq {ids[1]}: {', '.join(bad)} differ from what was written"
    return None


def read_partition(store: Any, topic: str, partition: int) -> tuple[int, int, list[Any]]:
    """``(start, end, records)``: every record of a partition, following ``read`` pages.

    A page that comes back empty below the end offset ends the walk (counted by the caller as
    missing offsets)."""
    start = store.start_offset(topic, partition)
    end = store.end_offset(topic, partition)
    out: list[Any] = []
    offset = start
    while offset < end:
        page = store.read(topic, partition, offset, max_records=200)
        if not page:
            break
        out.extend(page)
        nxt = page[-1].offset + 1
        if nxt <= offset:
            break
        offset = nxt
    return start, end, out


@dataclass
class CheckResult:
    """What one comparison of a store with the acknowledged records found."""

    checked: int = 0          # acknowledged durable records looked for
    lost: int = 0             # ... of which were missing
    wrong: int = 0            # records returned that differ from what was written there
    gaps: int = 0             # offsets between start and end that no read returned
    lost_unflushed: int = 0   # acknowledged but not yet durable records missing (not a failure)
    present: dict[tuple[str, int, int], int] = field(default_factory=dict)  # (t, p, off) -> seq
    problems: list[str] = field(default_factory=list)

    def note(self, text: str) -> None:
        if len(self.problems) < 8:
            self.problems.append(text)

    @property
    def failed(self) -> bool:
        return bool(self.lost or self.wrong or self.gaps)


def check_store(store: Any, durable: dict[tuple[str, int, int], int],
                acked: dict[tuple[str, int, int], int] | None = None,
                valid_seq: Any = None, lookups: int = 3, seed: int = 0,
                topics: dict[str, int] | None = None) -> CheckResult:
    """Compare ``store`` with the records acknowledged as durable.

    ``durable`` maps (topic, partition, offset) to the seq that must be there, exactly.
    ``acked`` (a superset) holds acknowledged but possibly not durable ones: missing ones are
    counted in ``lost_unflushed`` only. ``valid_seq(seed, seq)`` says whether a seq was ever
    attempted (a record with another seq was never written: wrong). Also checks that offsets
    are dense, ``lookup_key`` finds sampled keyed records and ``offset_for_time`` of a sampled
    record's timestamp gives its offset.
    """
    res = CheckResult()
    topics = topics or TOPICS
    seen_seq: dict[tuple[int, int], tuple[str, int, int]] = {}
    for topic, parts in topics.items():
        if topic not in store.topics():
            for (t, p, o) in durable:
                if t == topic:
                    res.lost += 1
            res.note(f"topic {topic} missing")
            continue
        nparts = store.partitions(topic)
        if nparts != parts:
            res.wrong += 1
            res.note(f"topic {topic} has {nparts} partitions, not {parts}")
        for p in range(min(parts, nparts)):
            start, end, recs = read_partition(store, topic, p)
            expect_off = start
            for rec in recs:
                if rec.offset != expect_off:
                    if rec.offset > expect_off:
                        res.gaps += rec.offset - expect_off
                        res.note(f"{topic}-{p}: offsets jump {expect_off - 1} -> {rec.offset}")
                    else:
                        res.wrong += 1
                        res.note(f"{topic}-{p}: offset {rec.offset} after {expect_off - 1}")
                expect_off = rec.offset + 1
                prob = record_problem(rec)
                if prob is None and (rec.topic, rec.partition) != (topic, p):
                    prob = f"read of {topic}-{p} returned a record of {rec.topic}-{rec.partition}"
                ids = parse_value(bytes(rec.value))
                if prob is None and valid_seq is not None and not valid_seq(*ids):
                    prob = f"seq {ids[1]} was never written"
                if prob is None and ids in seen_seq:
                    prob = f"seq {ids[1]} appears twice ({seen_seq[ids]} and {rec.offset})"
                if prob is not None:
                    res.wrong += 1
                    res.note(f"{topic}-{p}@{rec.offset}: {prob}")
                    continue
                seen_seq[ids] = (topic, p, rec.offset)
                res.present[(topic, p, rec.offset)] = ids[1]
            if expect_off < end:
                res.gaps += end - expect_off
                res.note(f"{topic}-{p}: reads stop at {expect_off}, end offset is {end}")
    for where, seq in durable.items():
        res.checked += 1
        got = res.present.get(where)
        if got != seq:
            res.lost += 1
            res.note(f"durable seq {seq} at {where[0]}-{where[1]}@{where[2]}: "
                     + ("missing" if got is None else f"seq {got} there instead"))
    for where, seq in (acked or {}).items():
        if where not in durable and res.present.get(where) != seq:
            res.lost_unflushed += 1
    _check_lookups(store, res, durable, lookups, seed)
    return res


def _check_lookups(store: Any, res: CheckResult, durable: dict, lookups: int, seed: int) -> None:
    if not durable or lookups <= 0:
        return
    rng = random.Random(seed)
    items = sorted(durable.items())
    for _ in range(lookups):
        (topic, p, off), seq = rng.choice(items)
        if res.present.get((topic, p, off)) != seq:
            continue
        exp = _expected_at(store, res, topic, p, off)
        if exp is None:
            continue
        # engine-agnostic bound: the record at ``off`` has a timestamp >= its own (segments:
        # the producer's; commitlog: the store timestamp, which is later), so the first
        # offset at or after it is at most ``off``
        got = store.offset_for_time(topic, p, exp.timestamp_ms)
        if got is None or not store.start_offset(topic, p) <= got <= off:
            res.wrong += 1
            res.note(f"offset_for_time({topic}-{p}, {exp.timestamp_ms}) = {got}, "
                     f"expected an offset <= {off}")
        if exp.key is not None and not exp.key.startswith(b"hot-"):
            found = store.lookup_key(topic, exp.key, limit=64)
            if not any(r.offset == off and r.partition == p for r in found):
                res.lost += 1
                res.note(f"lookup_key({topic}, {exp.key!r}) misses {topic}-{p}@{off}")
            for r in found:
                prob = record_problem(r)
                if prob is not None or r.key != exp.key:
                    res.wrong += 1
                    res.note(f"lookup_key({exp.key!r}) returned "
                             f"{r.topic}-{r.partition}@{r.offset}: {prob or 'another key'}")


def _expected_at(store: Any, res: CheckResult, topic: str, p: int, off: int) -> Expected | None:
    page = store.read(topic, p, off, max_records=1)
    if not page or page[0].offset != off:
        return None
    ids = parse_value(bytes(page[0].value))
    return make_message(*ids) if ids else None


def open_store(path: str, engine: str, **options: Any) -> Any:
    """``mqstore.open`` with the engine's small file sizes."""
    return mqstore.open(path, engine, **{**small_options(engine), **options})


def ensure_topics(store: Any, topics: Iterable[tuple[str, int]] | None = None) -> None:
    """Create the workload's topics that do not exist yet."""
    have = set(store.topics())
    for name, parts in (topics or TOPICS.items()):
        if name not in have:
            store.create_topic(name, parts)


def python() -> str:
    return sys.executable


def child_env() -> dict[str, str]:
    """The environment for child processes: the same interpreter and import path."""
    env = dict(os.environ)
    here = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    env["PYTHONPATH"] = here + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    return env
