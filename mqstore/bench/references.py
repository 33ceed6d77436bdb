"""The two references every run measures beside the engines, on the same bytes.

- :class:`RawFileTarget` (``raw-files`` and ``raw-shared``): plain ``os.write`` of each value,
  framed by a 4-byte length, to one new file per partition or to one shared file. Positions of
  each partition's messages are kept in memory, so reads are ``os.pread`` of known ranges.
  It is the floor any log can reach from Python: no CRC, no index, no record format.
- :class:`SqliteTarget` (``sqlite-wal``): the stdlib sqlite3 in WAL mode, one table per topic
  (``id INTEGER PRIMARY KEY, part, ts, key, tag, value``), one ``executemany`` and commit per
  producer batch, reads in id order per partition, ``synchronous`` matching the flush policy
  (``sync`` -> FULL, ``async`` -> NORMAL, the WAL being synced at checkpoints,
  ``os`` -> OFF). A familiar embedded peer, not a log design.

Both follow the same partition choice as the engines (the key's murmur2, else one
round-robin partition per batch) and the same flush policy, with ``sync`` using
:class:`~mqstore.durability.GroupCommit` for the raw files so concurrent producers share
fsyncs exactly as the engines do.
"""
from __future__ import annotations

import os
import sqlite3
import struct
import threading
from collections.abc import Sequence
from typing import Any

from mqstore.api import Message, now_ms
from mqstore.bench.targets import Target
from mqstore.durability import GroupCommit, PeriodicFlusher
from mqstore.partitioner import partition_for_key

FRAME = struct.Struct("<I")
REFERENCES = ("raw-files", "raw-shared", "sqlite-wal")
SQLITE_SYNCHRONOUS = {"sync": "FULL", "async": "NORMAL", "os": "OFF"}


class _Partitioner:
    """Key -> murmur2 partition, else one round-robin partition per batch (as the engines)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._rr: dict[str, int] = {}

    def group(self, topic: str, messages: Sequence[Message], count: int) -> dict[int, list]:
        groups: dict[int, list[Message]] = {}
        rr = None
        for m in messages:
            if m.partition is not None:
                p = m.partition
            elif m.key is not None:
                p = partition_for_key(m.key, count)
            else:
                if rr is None:
                    with self._lock:
                        n = self._rr.get(topic, 0)
                        self._rr[topic] = n + 1
                    rr = n % count
                p = rr
            groups.setdefault(p, []).append(m)
        return groups


class RawFileTarget(Target):
    """``os.write`` of length-framed values: one file per partition, or one shared file.

    File format: repeated ``[u32 little-endian length][value]``, nothing else.
    Thread-safety: one lock serialises writes (as an append-only file needs); reads use
    ``os.pread`` of ranges recorded at write time.
    """

    kind = "reference"

    def __init__(self, directory: str, flush: str, flush_interval_ms: int, *, shared: bool):
        super().__init__(directory, flush, flush_interval_ms)
        os.makedirs(directory, exist_ok=True)
        self.shared = shared
        self.name = "raw-shared" if shared else "raw-files"
        self._lock = threading.Lock()
        self._fds: dict[str, int] = {}  # file name -> fd
        self._pos: dict[str, int] = {}  # file name -> end position
        self._dirty: set[str] = set()
        self._index: dict[tuple[str, int], list[tuple[str, int, int]]] = {}
        self._counts: dict[str, int] = {}
        self._readers: dict[str, int] = {}  # file name -> read-only fd (pread is thread-safe)
        self._parts = _Partitioner()
        self._fsyncs = 0
        self._gc = GroupCommit(self._sync_dirty) if flush == "sync" else None
        self._flusher = (PeriodicFlusher(self._sync_dirty, flush_interval_ms,
                                         lambda: bool(self._dirty), name="raw-flusher")
                         if flush == "async" else None)

    def _file(self, name: str) -> int:
        fd = self._fds.get(name)
        if fd is None:
            fd = os.open(os.path.join(self.directory, name),
                         os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
            self._fds[name] = fd
            self._pos[name] = 0
        return fd

    def create_topic(self, topic: str, partitions: int) -> None:
        with self._lock:
            self._counts[topic] = partitions
            for p in range(partitions):
                self._index[(topic, p)] = []
                if not self.shared:
                    self._file(f"{topic}-{p}.raw")
            if self.shared:
                self._file("shared.raw")

    def produce(self, topic: str, messages: Sequence[Message]) -> None:
        groups = self._parts.group(topic, messages, self._counts[topic])
        with self._lock:
            for p, msgs in groups.items():
                name = "shared.raw" if self.shared else f"{topic}-{p}.raw"
                fd = self._file(name)
                buf = bytearray()
                start = self._pos[name]
                idx = self._index[(topic, p)]
                for m in msgs:
                    idx.append((name, start + len(buf) + FRAME.size, len(m.value)))
                    buf += FRAME.pack(len(m.value))
                    buf += m.value
                os.write(fd, buf)
                self._pos[name] = start + len(buf)
                self._dirty.add(name)
            ticket = self._gc.written() if self._gc else 0
        if self._gc:
            self._gc.wait_durable(ticket)

    def _sync_dirty(self) -> None:
        with self._lock:
            names = list(self._dirty)
            self._dirty.clear()
            fds = [self._fds[n] for n in names]
        for fd in fds:
            os.fsync(fd)
        with self._lock:
            self._fsyncs += len(fds)

    def poll(self, topic: str, partition: int, position: int,
             max_records: int = 500) -> tuple[list[bytes], int]:
        with self._lock:
            entries = self._index[(topic, partition)][position:position + max_records]
        if not entries:
            return [], position
        out = []
        for name, pos, size in entries:
            fd = self._readers.get(name)
            if fd is None:
                with self._lock:
                    fd = self._readers.get(name)
                    if fd is None:
                        fd = os.open(os.path.join(self.directory, name), os.O_RDONLY)
                        self._readers[name] = fd
            out.append(os.pread(fd, size, pos))
        return out, position + len(entries)

    def end_position(self, topic: str, partition: int) -> int:
        with self._lock:
            return len(self._index[(topic, partition)])

    def flush(self) -> None:
        upto = self._gc.position() if self._gc else 0
        self._sync_dirty()
        if self._gc:
            self._gc.mark_durable(upto)

    def fsyncs(self) -> int | None:
        return self._fsyncs

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "layout": "one shared file" if self.shared
                else "one file per partition", "framing": "u32 length + value"}

    def close(self) -> None:
        if self._flusher:
            self._flusher.stop()
        with self._lock:
            fds = list(self._fds.values())
            readers = list(self._readers.values())
            self._fds.clear()
            self._readers.clear()
        for fd in fds:
            os.fsync(fd)
            self._fsyncs += 1
            os.close(fd)
        for fd in readers:
            os.close(fd)


class SqliteTarget(Target):
    """sqlite3 in WAL mode: a table per topic, ``executemany`` per batch, reads by id.

    Thread-safety: one connection guarded by a lock (sqlite serialises writers anyway).
    """

    kind = "reference"
    name = "sqlite-wal"

    def __init__(self, directory: str, flush: str, flush_interval_ms: int, *,
                 index_keys: bool = False):
        super().__init__(directory, flush, flush_interval_ms)
        os.makedirs(directory, exist_ok=True)
        self.index_keys = index_keys
        self.db_path = os.path.join(directory, "peer.db")
        self._lock = threading.Lock()
        self._counts: dict[str, int] = {}
        self._parts = _Partitioner()
        self._conn = self._connect()
        self._flusher = (PeriodicFlusher(self._checkpoint, flush_interval_ms, lambda: True,
                                         name="sqlite-flusher") if flush == "async" else None)

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.db_path, check_same_thread=False, isolation_level=None)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute(f"PRAGMA synchronous={SQLITE_SYNCHRONOUS[self.flush_mode]}")
        for (name,) in conn.execute("SELECT name FROM sqlite_master WHERE type='table'"):
            if name.startswith("t_"):
                self._counts.setdefault(name[2:], 1)
        return conn

    @staticmethod
    def _table(topic: str) -> str:
        return '"t_' + topic.replace('"', "") + '"'

    def create_topic(self, topic: str, partitions: int) -> None:
        t = self._table(topic)
        with self._lock:
            self._conn.execute(
                f"CREATE TABLE {t} (id INTEGER PRIMARY KEY, part INTEGER NOT NULL, "
                "ts INTEGER NOT NULL, key BLOB, tag TEXT, value BLOB NOT NULL)"
            )
            self._conn.execute(f'CREATE INDEX "i_{topic}_part" ON {t}(part, id)')
            if self.index_keys:  # only where keys are looked up (the lookup suite)
                self._conn.execute(f'CREATE INDEX "i_{topic}_key" ON {t}(key)')
                self._conn.execute(f'CREATE INDEX "i_{topic}_ts" ON {t}(part, ts)')
            self._counts[topic] = partitions

    def produce(self, topic: str, messages: Sequence[Message]) -> None:
        groups = self._parts.group(topic, messages, self._counts[topic])
        ts = now_ms()
        rows = [(p, m.timestamp_ms if m.timestamp_ms is not None else ts, m.key, m.tag, m.value)
                for p, msgs in groups.items() for m in msgs]
        with self._lock:
            self._conn.execute("BEGIN")
            self._conn.executemany(
                f"INSERT INTO {self._table(topic)} (part, ts, key, tag, value) "
                "VALUES (?, ?, ?, ?, ?)", rows)
            self._conn.execute("COMMIT")

    def poll(self, topic: str, partition: int, position: int,
             max_records: int = 500) -> tuple[list[bytes], int]:
        with self._lock:
            rows = self._conn.execute(
                f"SELECT id, value FROM {self._table(topic)} WHERE part = ? AND id > ? "
                "ORDER BY id LIMIT ?", (partition, position, max_records)).fetchall()
        if not rows:
            return [], position
        return [r[1] for r in rows], rows[-1][0]

    def end_position(self, topic: str, partition: int) -> int:
        with self._lock:
            row = self._conn.execute(
                f"SELECT max(id) FROM {self._table(topic)} WHERE part = ?", (partition,)
            ).fetchone()
        return row[0] or 0

    def lookup_key(self, topic: str, key: bytes, limit: int = 64) -> list[bytes]:
        with self._lock:
            rows = self._conn.execute(
                f"SELECT value FROM {self._table(topic)} WHERE key = ? LIMIT ?", (key, limit)
            ).fetchall()
        return [r[0] for r in rows]

    def offset_for_time(self, topic: str, partition: int, timestamp_ms: int) -> int | None:
        """The first row id of ``partition`` with ``ts >= timestamp_ms`` (None if none)."""
        with self._lock:
            row = self._conn.execute(
                f"SELECT min(id) FROM {self._table(topic)} WHERE part = ? AND ts >= ?",
                (partition, timestamp_ms)).fetchone()
        return row[0]

    def read_tagged(self, topic: str, partition: int, tags: set[str]) -> int:
        """Count rows of one partition carrying one of ``tags`` (reads their values)."""
        marks = ",".join("?" * len(tags))
        with self._lock:
            rows = self._conn.execute(
                f"SELECT value FROM {self._table(topic)} WHERE part = ? AND tag IN ({marks}) "
                "ORDER BY id", (partition, *sorted(tags))).fetchall()
        return len(rows)

    def _checkpoint(self) -> None:
        with self._lock:
            self._conn.execute("PRAGMA wal_checkpoint(PASSIVE)")

    def flush(self) -> None:
        with self._lock:
            self._conn.execute("PRAGMA wal_checkpoint(FULL)")

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "journal_mode": "wal",
                "synchronous": SQLITE_SYNCHRONOUS[self.flush_mode],
                "sqlite_version": sqlite3.sqlite_version}

    def reopen(self) -> None:
        with self._lock:
            self._conn.close()
            self._conn = self._connect()

    def close(self) -> None:
        if self._flusher:
            self._flusher.stop()
        with self._lock:
            self._conn.close()


def make_reference(name: str, directory: str, flush: str, flush_interval_ms: int,
                   **kwargs: Any) -> Target:
    """Build a reference target by name (``raw-files``, ``raw-shared``, ``sqlite-wal``);
    ``kwargs`` go to the sqlite peer (``index_keys``)."""
    if name == "raw-files":
        return RawFileTarget(directory, flush, flush_interval_ms, shared=False)
    if name == "raw-shared":
        return RawFileTarget(directory, flush, flush_interval_ms, shared=True)
    if name == "sqlite-wal":
        return SqliteTarget(directory, flush, flush_interval_ms, **kwargs)
    raise ValueError(f"unknown reference {name!r}; known: {REFERENCES}")
