"""The store's JSON metadata: ``config/topics.json`` and ``config/consumerOffset.json``.

Both keep RocketMQ's shapes (``TopicConfigManager``, ``ConsumerOffsetManager``)::

    topics.json          {"topicConfigTable": {"<topic>": {"topicName": ..., "readQueueNums": n,
                           "writeQueueNums": n, "perm": 6, ...}}, "dataVersion": {...}}
    consumerOffset.json  {"offsetTable": {"<topic>@<group>": {"<queueId>": offset}},
                           "dataVersion": {...}}

RocketMQ copies the old file to ``<file>.bak`` and overwrites in place; mqstore writes a
temporary file, fsyncs it and renames it over the old one (``storedir.write_json_atomic``), so
a crash leaves the old or the new file, never a torn one. A read-only follower re-reads a file
when its modification time changes.
"""
from __future__ import annotations

import json
import os
import threading
import time

from mqstore import errors
from mqstore.storedir import write_json_atomic

PERM_READ_WRITE = 6


def _data_version(counter: int) -> dict:
    return {"counter": counter, "stateVersion": 0, "timestamp": int(time.time() * 1000)}


class _JsonFile:
    def __init__(self, path: str, read_only: bool):
        self.path = path
        self.read_only = read_only
        self.lock = threading.Lock()
        self.counter = 0
        self._mtime = -1

    def read(self) -> dict | None:
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            return None
        if st.st_mtime_ns == self._mtime:
            return None
        try:
            with open(self.path, encoding="utf-8") as f:
                doc = json.load(f)
        except (OSError, ValueError) as exc:
            raise errors.CorruptRecordError(f"unreadable JSON metadata: {exc}", self.path, 0) \
                from None
        self._mtime = st.st_mtime_ns
        self.counter = int(doc.get("dataVersion", {}).get("counter", 0))
        return doc

    def changed(self) -> bool:
        try:
            return os.stat(self.path).st_mtime_ns != self._mtime
        except FileNotFoundError:
            return False

    def write(self, doc: dict) -> None:
        self.counter += 1
        doc["dataVersion"] = _data_version(self.counter)
        os.makedirs(os.path.dirname(self.path), exist_ok=True)
        write_json_atomic(self.path, doc)
        self._mtime = os.stat(self.path).st_mtime_ns


class TopicConfigManager:
    """Topics and their queue counts. Thread-safety: writes under an internal lock."""

    def __init__(self, path: str, *, read_only: bool = False):
        self._file = _JsonFile(path, read_only)
        self.topics: dict[str, int] = {}
        self.reload()

    def reload(self) -> None:
        """(Re)read the file if it changed."""
        doc = self._file.read()
        if doc is None:
            return
        table = doc.get("topicConfigTable", {})
        self.topics = {name: int(cfg.get("writeQueueNums", cfg.get("readQueueNums", 1)))
                       for name, cfg in table.items()}

    def changed(self) -> bool:
        return self._file.changed()

    def add(self, name: str, queues: int) -> None:
        """Record a new topic and persist the table."""
        with self._file.lock:
            self.topics[name] = queues
            self._persist()

    def adopt(self, found: dict[str, int]) -> None:
        """Add topics found on disk (ConsumeQueue directories) but missing from the file."""
        new = {t: n for t, n in found.items() if self.topics.get(t, 0) < n}
        if new:
            with self._file.lock:
                self.topics.update(new)
                if not self._file.read_only:
                    self._persist()

    def _persist(self) -> None:
        table = {
            name: {"topicName": name, "readQueueNums": n, "writeQueueNums": n,
                   "perm": PERM_READ_WRITE, "topicFilterType": "SINGLE_TAG", "topicSysFlag": 0,
                   "order": False, "attributes": {}}
            for name, n in sorted(self.topics.items())
        }
        self._file.write({"topicConfigTable": table})


class ConsumerOffsetManager:
    """Committed offsets per (group, topic, queue). Thread-safety: internal lock."""

    def __init__(self, path: str, *, read_only: bool = False):
        self._file = _JsonFile(path, read_only)
        self.table: dict[str, dict[int, int]] = {}
        self.reload()

    def reload(self) -> None:
        doc = self._file.read()
        if doc is None:
            return
        self.table = {key: {int(q): int(o) for q, o in queues.items()}
                      for key, queues in doc.get("offsetTable", {}).items()}

    @staticmethod
    def _key(group: str, topic: str) -> str:
        return f"{topic}@{group}"

    def commit(self, group: str, topic: str, queue_id: int, offset: int) -> None:
        """Remember ``offset`` and persist the table (atomically) before returning."""
        with self._file.lock:
            self.table.setdefault(self._key(group, topic), {})[queue_id] = offset
            doc = {"offsetTable": {k: {str(q): o for q, o in sorted(v.items())}
                                   for k, v in sorted(self.table.items())}}
            self._file.write(doc)

    def get(self, group: str, topic: str, queue_id: int) -> int | None:
        if self._file.read_only and self._file.changed():
            self.reload()
        return self.table.get(self._key(group, topic), {}).get(queue_id)
