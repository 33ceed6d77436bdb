"""TEST DOUBLE: an in-memory Store used only by the harness tests.

It implements the ``Store`` contract just well enough for the runner and the suites to be
tested while (or without) the real engines: nothing is persisted, ``flush`` only counts an
fsync, ``transfer_to`` sends the raw values. Never use it outside ``tests/``.
"""
from __future__ import annotations

import threading
from contextlib import contextmanager

from mqstore import errors, registry
from mqstore.api import Record, RecordMetadata, Store
from mqstore.records import BatchMetadata, Records

FAKE_ENGINE = "fake-memory"


class MemoryStore(Store):
    """TEST DOUBLE. Format: Python lists in memory. Thread-safe through one lock."""

    engine_name = FAKE_ENGINE
    OPTIONS = {"note": ""}

    def __init__(self, path, config):
        super().__init__(path, config)
        self._lock = threading.Lock()
        self._topics: dict[str, list[list[Record]]] = {}
        self._offsets: dict[tuple, int] = {}
        self._fsyncs = 0

    def create_topic(self, name, partitions=1):
        with self._lock:
            if name in self._topics:
                raise errors.TopicExistsError(name)
            self._topics[name] = [[] for _ in range(partitions)]

    def topics(self):
        return sorted(self._topics)

    def partitions(self, topic):
        return len(self._parts(topic))

    def _parts(self, topic):
        try:
            return self._topics[topic]
        except KeyError:
            raise errors.TopicNotFoundError(topic) from None

    def append_batch(self, topic, messages, *, partition=None):
        self._check_writable()
        parts = self._parts(topic)
        groups = self._group_by_partition(topic, messages, partition, len(parts))
        out = {}
        with self._lock:
            for p, items in groups.items():
                log = parts[p]
                for i, m in items:
                    rec = Record(topic, p, len(log), m.timestamp_ms, m.key, m.value,
                                 dict(m.headers or {}), m.tag)
                    log.append(rec)
                    out[i] = RecordMetadata(topic, p, rec.offset, rec.timestamp_ms)
            if self.config.flush.mode == "sync":
                self._fsyncs += 1
        return BatchMetadata.from_metadata(topic, [out[i] for i in sorted(out)])

    def read(self, topic, partition, offset, *, max_records=500, max_bytes=1 << 20, tags=None):
        log = self._parts(topic)[partition]
        if offset > len(log):
            raise errors.OffsetOutOfRangeError(offset)
        out = []
        for rec in log[offset:offset + max_records]:
            if tags is None or rec.tag in tags:
                out.append(rec)
        return Records.from_records(topic, partition, out)

    def start_offset(self, topic, partition):
        return 0

    def end_offset(self, topic, partition):
        return len(self._parts(topic)[partition])

    def offset_for_time(self, topic, partition, timestamp_ms):
        for rec in self._parts(topic)[partition]:
            if rec.timestamp_ms >= timestamp_ms:
                return rec.offset
        return None

    def lookup_key(self, topic, key, *, start_ms=None, end_ms=None, limit=64):
        out = []
        for log in self._parts(topic):
            out.extend(r for r in log if r.key == key)
        return out[:limit]

    def transfer_to(self, sock, topic, partition, offset, max_bytes):
        log = self._parts(topic)[partition]
        sent = 0
        nxt = offset
        for rec in log[offset:]:
            if sent and sent + len(rec.value) > max_bytes:
                break
            sock.sendall(rec.value)
            sent += len(rec.value)
            nxt = rec.offset + 1
        return sent, nxt

    def commit_offset(self, group, topic, partition, offset):
        self._offsets[(group, topic, partition)] = offset

    def committed_offset(self, group, topic, partition):
        return self._offsets.get((group, topic, partition))

    def flush(self):
        self._fsyncs += 1

    def apply_retention(self, now_ms=None):
        return 0

    def stats(self):
        n = sum(len(log) for parts in self._topics.values() for log in parts)
        return {"engine": FAKE_ENGINE, "bytes_on_disk": 0, "files": 0, "fsyncs": self._fsyncs,
                "appended_records": n, "appended_bytes": 0}

    def close(self):
        self._closed = True


@contextmanager
def fake_engine_registered():
    """Register the test double as an engine for the duration of a test, then remove it."""
    registry.register(FAKE_ENGINE, MemoryStore)
    try:
        yield FAKE_ENGINE
    finally:
        known = registry._known()
        with registry._lock:
            known.pop(FAKE_ENGINE, None)
            registry._loaded.pop(FAKE_ENGINE, None)


def engine_loads(name: str) -> bool:
    """True if the engine ``name`` can be loaded (the real engines may still be missing)."""
    try:
        registry.load(name)
        return True
    except errors.ConfigError:
        return False
